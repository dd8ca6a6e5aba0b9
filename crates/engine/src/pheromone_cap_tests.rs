//! The pheromone cap is kept per owner set (`crate::pheromone_cap`): one principal's feedback
//! on its own records never drops another's pheromones, a record whose owners change counts
//! in its new set at once, and the sets are read again from the records after a restart.

use std::collections::{BTreeMap, BTreeSet};

use strata_auth::{OperatorScope, Permission, TenantScope};
use strata_store::{AdaptiveItem, AdaptiveReads};
use strata_types::{
    CollectionName, Domain, FeedbackRequest, Metric, NewRecord, RecordId, RecordPatch,
    RequestScope, TenantId, TokenSelector, UserToken,
};

use crate::adaptive::AdaptiveConfig;
use crate::test_support::{scope_bound_to, tokens};
use crate::{Engine, EngineConfig};

fn collection() -> CollectionName {
    CollectionName::parse("c").unwrap()
}

fn config() -> EngineConfig {
    EngineConfig {
        adaptive: AdaptiveConfig {
            max_pheromones: 3,
            half_life_secs: 1e9,
            ..AdaptiveConfig::default()
        },
        ..EngineConfig::default()
    }
}

/// A scope of `acme` bound to `bound` (unbound when `None`), with every permission.
fn scope(engine: &Engine, bound: Option<&[&str]>) -> TenantScope {
    scope_bound_to(engine, "acme", bound)
}

fn everyone() -> RequestScope {
    RequestScope {
        user_tokens: Some(TokenSelector::AllPrincipals),
        ..Default::default()
    }
}

fn used(engine: &Engine, who: Option<&[&str]>, ids: &[&str]) {
    let f = FeedbackRequest {
        ids: ids.iter().map(|i| RecordId::parse(*i).unwrap()).collect(),
        modality: Some(collection()),
        ..Default::default()
    };
    let req = if who.is_some() {
        RequestScope::default()
    } else {
        everyone()
    };
    engine.feedback(&scope(engine, who), &req, &f).unwrap();
}

/// The records holding a pheromone, with the owners stored beside it, as storage has them.
fn stored(engine: &Engine) -> BTreeMap<String, Vec<UserToken>> {
    let s = scope(engine, None);
    engine
        .read_tenant(&s, Permission::Read, |r| {
            Ok(r.adaptive_rows(s.key(), Some(&Domain::default()))?)
        })
        .unwrap()
        .into_iter()
        .filter_map(|row| match row.item {
            AdaptiveItem::Pheromone(id, _, owners) => {
                Some((id.to_string(), owners.expect("written with its owners")))
            }
            AdaptiveItem::Narrative(..) => None,
        })
        .collect()
}

/// The records holding a pheromone, as storage has them.
fn pheromones(engine: &Engine) -> BTreeSet<String> {
    stored(engine).into_keys().collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn one_principals_feedback_never_drops_anothers_pheromones() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config()).unwrap();
    let acme = TenantId::parse("acme").unwrap();
    engine
        .create_tenant(&OperatorScope::for_tests(), &acme, None)
        .unwrap();
    let unbound = scope(&engine, None);
    engine
        .create_collection(&unbound, &collection(), 3, Metric::Cosine)
        .unwrap();
    let record = |id: &str, owners: &[&str]| NewRecord {
        id: Some(RecordId::parse(id).unwrap()),
        modality: Some(collection()),
        vector: Some(vec![1.0, 0.5, 0.25]),
        user_tokens: Some(tokens(owners)),
        ..Default::default()
    };
    let mut records = vec![record("a1", &["u:alice"])];
    for i in 0..5 {
        records.push(record(&format!("b{i}"), &["u:bob"]));
    }
    for i in 0..4 {
        records.push(record(&format!("s{i}"), &[]));
    }
    engine.put(&unbound, &everyone(), records).unwrap();
    let alice = Some(&["u:alice"][..]);
    let bob = Some(&["u:bob"][..]);

    used(&engine, alice, &["a1"]);
    // Four pheromones in the namespace, over its cap of 3, but Bob's set holds 3: nothing goes.
    // (With one cap over the namespace, Alice's, the weakest by id, went here.)
    used(&engine, bob, &["b0", "b1", "b2"]);
    assert_eq!(pheromones(&engine), set(&["a1", "b0", "b1", "b2"]));
    // A fourth of Bob's drops the weakest of his own (ties by id), never Alice's.
    used(&engine, bob, &["b3"]);
    assert_eq!(pheromones(&engine), set(&["a1", "b1", "b2", "b3"]));
    // The tenant-shared records are a set of their own.
    used(&engine, None, &["s0", "s1", "s2"]);
    assert_eq!(
        pheromones(&engine),
        set(&["a1", "b1", "b2", "b3", "s0", "s1", "s2"])
    );

    // s2 becomes Bob's: it counts in his set at once, and leaves the shared one.
    let patch = RecordPatch {
        user_tokens: Some(tokens(&["u:bob"])),
        ..Default::default()
    };
    engine
        .patch(
            &unbound,
            &everyone(),
            &RecordId::parse("s2").unwrap(),
            patch,
        )
        .unwrap();
    // The owners stored beside its pheromone moved with it.
    assert_eq!(stored(&engine)["s2"], tokens(&["u:bob"]));
    assert_eq!(stored(&engine)["a1"], tokens(&["u:alice"]));
    assert_eq!(stored(&engine)["s0"], tokens(&[]));
    used(&engine, bob, &["b1"]); // Bob's set: b1 (now stronger), b2, b3, s2: b2 goes
    used(&engine, None, &["s3"]); // shared: s0, s1, s3: nothing goes
    let before_restart = set(&["a1", "b1", "b3", "s0", "s1", "s2", "s3"]);
    assert_eq!(pheromones(&engine), before_restart);

    // After a restart the sets are read again from the records.
    drop(engine);
    let engine = Engine::open(dir.path(), config()).unwrap();
    assert_eq!(pheromones(&engine), before_restart);
    used(&engine, bob, &["b4"]); // Bob's: b1 (2), b3 (1), s2 (1), b4: b3 goes
    assert_eq!(
        pheromones(&engine),
        set(&["a1", "b1", "b4", "s0", "s1", "s2", "s3"])
    );
}
