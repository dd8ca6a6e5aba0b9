//! `SlotVisibility::sees_slot` on interned slots (and `Visibility::sees_scope` on a stored
//! record's scope fields) against `Visibility::sees` on whole records,
//! the model: for random records (some removed, so names are dropped and ids reused) and
//! random requests, including names no record carries, both decide alike.

use proptest::prelude::*;
use strata_types::{
    Collection, CollectionName, Confidence, Domain, MemoryScope, Metric, Record, RecordId,
    RequestScope, RunId, UserMatch, UserToken,
};

use strata_index::RoaringBitmap;

use crate::collection_index::CollectionIndex;
use crate::plan::{Candidates, scope_candidates, visible_slots};
use crate::scope_names::NO_TOKENS;
use crate::visibility::{Principals, Visibility};

/// A record's domain, run, memory scope, tokens and expiry, as indexes into small name pools
/// (so that records share names, and requests can name ones no record has).
type Shape = (u8, Option<u8>, Option<u8>, Vec<u8>, Option<i64>);

fn domain(i: u8) -> Domain {
    if i == 0 {
        Domain::default_domain()
    } else {
        Domain::parse(format!("d{i}")).unwrap()
    }
}

fn token(i: u8) -> UserToken {
    UserToken::parse(format!("u:{i}")).unwrap()
}

fn record(i: usize, (d, run, scope, tokens, expires): &Shape) -> Record {
    let mut user_tokens: Vec<UserToken> = tokens.iter().map(|t| token(*t)).collect();
    user_tokens.sort();
    user_tokens.dedup();
    Record {
        id: RecordId::parse(format!("r{i}")).unwrap(),
        modality: CollectionName::parse("vec").unwrap(),
        kind: None,
        content: None,
        vector: None,
        user_tokens,
        memory_domain: domain(*d),
        run_id: run.map(|r| RunId::parse(format!("run{r}")).unwrap()),
        memory_scope: scope.map(|s| MemoryScope::parse(format!("s{s}")).unwrap()),
        metadata: Default::default(),
        created_at: 0,
        updated_at: 0,
        expires_at: *expires,
        confidence: Confidence::initial(0.5),
    }
}

fn collection() -> Collection {
    Collection {
        name: CollectionName::parse("vec").unwrap(),
        dim: 2,
        metric: Metric::L2,
        created_at: 0,
        embedder: None,
        analyzer: Default::default(),
        memory: Default::default(),
    }
}

/// A request's domain, run, scope, principals (`None`: every principal), `all` matching and
/// the time it is decided at.
type Request = (u8, Option<u8>, Option<u8>, Option<Vec<u8>>, bool, i64);

fn visibility((d, run, scope, tokens, all, now): &Request) -> Visibility {
    let req = RequestScope {
        run_id: run.map(|r| RunId::parse(format!("run{r}")).unwrap()),
        memory_scope: scope.map(|s| MemoryScope::parse(format!("s{s}")).unwrap()),
        ..Default::default()
    };
    let mut vis = Visibility::shared_domain(domain(*d), &req, *now);
    let how = if *all { UserMatch::All } else { UserMatch::Any };
    vis.principals = match tokens {
        None => Principals::All,
        Some(t) => Principals::Set(t.iter().map(|t| token(*t)).collect(), how),
    };
    vis
}

// Records draw from pools of 3 (domains, runs, scopes) and 4 tokens; requests from pools one
// larger, so they also name what no record carries.
fn shape() -> impl Strategy<Value = Shape> {
    (
        0u8..3,
        proptest::option::of(0u8..3),
        proptest::option::of(0u8..3),
        proptest::collection::vec(0u8..4, 0..3),
        proptest::option::of(0i64..10),
    )
}

fn request() -> impl Strategy<Value = Request> {
    (
        0u8..4,
        proptest::option::of(0u8..4),
        proptest::option::of(0u8..4),
        proptest::option::of(proptest::collection::vec(0u8..5, 0..3)),
        any::<bool>(),
        0i64..10,
    )
}

proptest! {
    #[test]
    fn sees_slot_agrees_with_sees_on_the_record(
        shapes in proptest::collection::vec(shape(), 1..24),
        removed in proptest::collection::vec(0usize..24, 0..8),
        replaced in proptest::collection::vec((0usize..24, shape()), 0..4),
        requests in proptest::collection::vec(request(), 1..8),
    ) {
        let mut ci = CollectionIndex::new(&collection());
        let mut records: Vec<Option<Record>> = Vec::new();
        for (i, s) in shapes.iter().enumerate() {
            let r = record(i, s);
            ci.upsert(&r, false).unwrap();
            records.push(Some(r));
        }
        let n = records.len();
        for i in removed.iter().filter(|i| **i < n) {
            ci.remove(&RecordId::parse(format!("r{i}")).unwrap()).unwrap();
            records[*i] = None;
        }
        // Upserts over removed and live records reuse freed slots and names.
        for (i, s) in replaced.iter().filter(|(i, _)| *i < n) {
            let r = record(*i, s);
            ci.upsert(&r, false).unwrap();
            records[*i] = Some(r);
        }
        prop_assert_eq!(
            ci.names.check_references(ci.docs.iter().flatten().map(|d| &d.scope)),
            Vec::<String>::new()
        );
        for req in &requests {
            let vis = visibility(req);
            let slots = vis.for_slots(&ci.names);
            let mut seen = RoaringBitmap::new();
            for r in records.iter().flatten() {
                let slot = (0..ci.docs.len())
                    .find(|s| ci.docs[*s].as_ref().is_some_and(|d| d.id == r.id))
                    .expect("every live record has a slot");
                let doc = ci.docs[slot].as_ref().unwrap();
                prop_assert!(doc.describes(r, &ci.names));
                prop_assert_eq!(slots.sees_slot(doc), vis.sees(r), "{:?} {:?}", req, r);
                // The scope fields decoded from the stored bytes decide the same.
                let stored = strata_store::codec::encode_record(r).unwrap();
                let fields = strata_store::codec::decode_record_scope(&stored).unwrap();
                prop_assert_eq!(vis.sees_scope(&fields), vis.sees(r), "{:?} {:?}", req, r);
                if vis.sees(r) {
                    seen.insert(slot as u32);
                }
            }
            // The scope bitmaps, keyed by name id, give the same slots.
            let scope = match scope_candidates(&ci, &vis) {
                Candidates::All => ci.live.clone(),
                Candidates::Some(b) => b.into_owned(),
            };
            prop_assert_eq!(visible_slots(&ci, &vis, &scope, &ci.live), seen, "{:?}", req);
        }
    }
}

/// A slot whose token set the table does not hold (a broken invariant) is seen by no request,
/// not even one for every principal: fail closed, never "tenant-shared".
#[test]
fn a_slot_with_an_unknown_token_set_is_seen_by_nobody() {
    let mut ci = CollectionIndex::new(&collection());
    let r = record(0, &(0, None, None, vec![1], None));
    ci.upsert(&r, false).unwrap();
    let mut doc = ci.docs[0].clone().unwrap();
    doc.scope.tokens += 7;
    assert_ne!(doc.scope.tokens, NO_TOKENS);
    for principals in [None, Some(vec![1]), Some(vec![])] {
        for all in [false, true] {
            let vis = visibility(&(0, None, None, principals.clone(), all, 0));
            assert!(!vis.for_slots(&ci.names).sees_slot(&doc), "{principals:?}");
            assert!(
                vis.for_slots(&ci.names)
                    .sees_slot(ci.docs[0].as_ref().unwrap())
                    == vis.sees(&r)
            );
        }
    }
}

/// A write that resolved its scope on arrival judges the record at its commit: one that
/// expired in between is gone for it too (a patch or evidence cannot bring it back).
#[test]
fn a_visibility_judged_at_commit_no_longer_sees_what_expired_since_arrival() {
    let now = strata_types::now_millis();
    let arrival = visibility(&(0, None, None, None, false, now - 1_000));
    let expiring = record(0, &(0, None, None, Vec::new(), Some(now - 500)));
    assert!(
        arrival.sees(&expiring),
        "unexpired when the request arrived"
    );
    let commit = arrival.at_commit();
    assert!(!commit.sees(&expiring), "expired by the commit");
    assert!(commit.now >= now);
    // Never earlier than it was (a clock stepped back).
    let ahead = visibility(&(0, None, None, None, false, now + 60_000));
    assert_eq!(ahead.at_commit().now, now + 60_000);
}
