//! Narrative vectors are per principal (`Visibility::narrative_principal`,
//! docs/adaptive-reranking.md): one end user's feedback contexts never move another's scores,
//! an unbound caller's and a bound caller's narratives are apart, the cap drops the least
//! recently updated, and export and import carry each narrative's principal.

use std::collections::BTreeMap;

use strata_auth::{OperatorScope, TenantScope};
use strata_types::{
    CollectionName, FeedbackRequest, Metric, NewRecord, RecordId, RequestScope, Rerank,
    SearchRequest, TenantId, TokenSelector,
};

use crate::adaptive::AdaptiveConfig;
use crate::test_support::{scope_bound_to as scope, tokens};
use crate::transfer::ExportLine;
use crate::{Engine, EngineConfig, EngineError};

fn collection() -> CollectionName {
    CollectionName::parse("c").unwrap()
}

fn naming(list: Option<&[&str]>) -> RequestScope {
    RequestScope {
        user_tokens: list.map(|l| TokenSelector::Tokens(tokens(l))),
        ..Default::default()
    }
}

fn everyone() -> RequestScope {
    RequestScope {
        user_tokens: Some(TokenSelector::AllPrincipals),
        ..Default::default()
    }
}

/// Tenant `acme` with collection `c` (3 dimensions): Alice's records, one of them (`cousin`)
/// in the direction of Bob's context `[0, 0, 1]`, Bob's, and tenant-shared ones.
fn engine_with(dir: &std::path::Path, adaptive: AdaptiveConfig) -> Engine {
    let config = EngineConfig {
        adaptive,
        ..EngineConfig::default()
    };
    let engine = Engine::open(dir, config).unwrap();
    engine
        .create_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse("acme").unwrap(),
            None,
        )
        .unwrap();
    let unbound = scope(&engine, "acme", None);
    engine
        .create_collection(&unbound, &collection(), 3, Metric::Cosine)
        .unwrap();
    let record = |id: &str, v: [f32; 3], owners: &[&str]| NewRecord {
        id: Some(RecordId::parse(id).unwrap()),
        modality: Some(collection()),
        vector: Some(v.to_vec()),
        user_tokens: Some(tokens(owners)),
        ..Default::default()
    };
    let records = vec![
        record("cousin", [0.2, 0.1, 1.0], &["u:alice"]),
        record("recipes", [1.0, 0.3, 0.0], &["u:alice"]),
        record("garden", [1.0, 0.0, 0.1], &["u:alice"]),
        record("bob-notes", [1.0, 0.2, 0.2], &["u:bob"]),
        record("lawyers", [0.3, 0.0, 1.0], &[]),
        record("faq", [1.0, 1.0, 0.0], &[]),
    ];
    engine.put(&unbound, &everyone(), records).unwrap();
    engine
}

fn engine(dir: &std::path::Path) -> Engine {
    engine_with(
        dir,
        AdaptiveConfig {
            // No drift: pheromones do not decay while the test runs.
            half_life_secs: 1e9,
            ..AdaptiveConfig::default()
        },
    )
}

/// Each hit's narrative contribution, as bits, under an adaptive search by `scope` and `req`.
fn narratives(engine: &Engine, scope: &TenantScope, req: &RequestScope) -> BTreeMap<String, u32> {
    let s = SearchRequest {
        vector: Some(vec![1.0, 0.0, 0.0]),
        k: 10,
        modality: Some(collection()),
        rerank: Some(Rerank::Adaptive),
        explain: true,
        ..Default::default()
    };
    engine
        .search(scope, req, &s)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| {
            let e = h.explain.unwrap().adaptive.unwrap();
            (h.id.to_string(), e.narrative.to_bits())
        })
        .collect()
}

fn moved(n: &BTreeMap<String, u32>, id: &str) -> bool {
    f32::from_bits(n[id]) > 0.0
}

fn context(engine: &Engine, scope: &TenantScope, req: &RequestScope, v: [f32; 3]) {
    let f = FeedbackRequest {
        vector: Some(v.to_vec()),
        modality: Some(collection()),
        ..Default::default()
    };
    let answer = engine.feedback(scope, req, &f).unwrap();
    assert!(answer.narrative_updated);
}

#[test]
fn bobs_feedback_does_not_move_alices_narrative_scores_and_his_own_search_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let (alice, bob) = (
        scope(&engine, "acme", Some(&["u:alice"])),
        scope(&engine, "acme", Some(&["u:bob"])),
    );
    let plain = RequestScope::default();
    // Alice has a narrative of her own, far from Bob's context.
    context(&engine, &alice, &plain, [1.0, 0.0, 0.0]);
    let before = narratives(&engine, &alice, &plain);
    assert!(before.contains_key("cousin") && before.contains_key("lawyers"));
    for _ in 0..5 {
        context(&engine, &bob, &plain, [0.0, 0.0, 1.0]);
    }
    // Bit for bit: neither her private record nor the shared one moved.
    assert_eq!(narratives(&engine, &alice, &plain), before);
    // Bob reads his own: the shared record in his context's direction rises.
    let his = narratives(&engine, &bob, &plain);
    assert!(his["lawyers"] > before["lawyers"], "{his:?} vs {before:?}");
    // A bound credential naming no tokens (sees only shared records) still speaks for its
    // binding: it reads Bob's narrative, not the namespace-wide one.
    let narrowed = naming(Some(&[]));
    assert_eq!(
        narratives(&engine, &bob, &narrowed)["lawyers"],
        his["lawyers"]
    );
    // The same holds after the namespace is reloaded from storage.
    drop(engine);
    let engine = Engine::open(
        dir.path(),
        EngineConfig {
            adaptive: AdaptiveConfig {
                half_life_secs: 1e9,
                ..AdaptiveConfig::default()
            },
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let alice = scope(&engine, "acme", Some(&["u:alice"]));
    let bob = scope(&engine, "acme", Some(&["u:bob"]));
    assert_eq!(narratives(&engine, &alice, &plain), before);
    assert_eq!(narratives(&engine, &bob, &plain), his);
}

#[test]
fn unbound_callers_and_bound_users_do_not_read_each_others_narratives() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let unbound = scope(&engine, "acme", None);
    let alice = scope(&engine, "acme", Some(&["u:alice"]));
    let plain = RequestScope::default();
    let as_alice = naming(Some(&["u:alice"]));
    let readers = |engine: &Engine| {
        [
            narratives(engine, &unbound, &plain),
            narratives(engine, &alice, &plain),
            narratives(engine, &unbound, &everyone()),
            narratives(engine, &unbound, &naming(Some(&["u:alice", "u:bob"]))),
        ]
    };
    let start = readers(&engine);
    // An unbound caller without tokens moves the namespace-wide narrative only.
    context(&engine, &unbound, &plain, [0.0, 0.0, 1.0]);
    let after = readers(&engine);
    assert!(moved(&after[0], "lawyers"), "{:?}", after[0]);
    assert_eq!(after[1..], start[1..]);
    // Bound Alice moves hers only; an unbound caller naming `u:alice` speaks for her too.
    context(&engine, &alice, &plain, [0.0, 0.0, 1.0]);
    let third = readers(&engine);
    assert!(moved(&third[1], "cousin"));
    assert_eq!(narratives(&engine, &unbound, &as_alice), third[1]);
    assert_eq!(
        (&third[0], &third[2], &third[3]),
        (&after[0], &after[2], &after[3])
    );
    // `["*"]` and a set of two tokens are principals of their own.
    context(&engine, &unbound, &everyone(), [0.0, 0.0, 1.0]);
    let fourth = readers(&engine);
    assert!(moved(&fourth[2], "cousin"));
    assert_eq!(fourth[..2], third[..2]);
    assert_eq!(fourth[3], third[3]);
    assert_eq!(
        engine.adaptive_stats(&unbound).unwrap()[0].narratives,
        3,
        "shared, alice, all"
    );
}

#[test]
fn a_credential_bound_to_no_tokens_has_no_narrative() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let nobody = scope(&engine, "acme", Some(&[]));
    let unbound = scope(&engine, "acme", None);
    let plain = RequestScope::default();
    context(&engine, &unbound, &plain, [0.0, 0.0, 1.0]);
    // It reads none (not the namespace-wide one it would share with every such credential) …
    let seen = narratives(&engine, &nobody, &plain);
    assert!(
        !seen.is_empty() && seen.values().all(|n| *n == 0),
        "{seen:?}"
    );
    // … and a context from it is refused; ids alone are still feedback.
    let f = FeedbackRequest {
        vector: Some(vec![0.0, 0.0, 1.0]),
        modality: Some(collection()),
        ..Default::default()
    };
    assert!(matches!(
        engine.feedback(&nobody, &plain, &f),
        Err(EngineError::ScopeForbidden(_))
    ));
    let ids = FeedbackRequest {
        ids: vec![RecordId::parse("lawyers").unwrap()],
        ..Default::default()
    };
    assert!(
        !engine
            .feedback(&nobody, &plain, &ids)
            .unwrap()
            .narrative_updated
    );
    // A collection named must exist, context or not, as on every route that names one.
    let nowhere = FeedbackRequest {
        modality: Some(CollectionName::parse("nope").unwrap()),
        ..ids
    };
    assert!(matches!(
        engine.feedback(&nobody, &plain, &nowhere),
        Err(EngineError::CollectionNotFound(_))
    ));
}

#[test]
fn the_narrative_cap_drops_the_least_recently_updated_and_storage_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AdaptiveConfig {
        half_life_secs: 1e9,
        max_narratives: 2,
        ..AdaptiveConfig::default()
    };
    let engine = engine_with(dir.path(), cfg.clone());
    let plain = RequestScope::default();
    let users = ["u:alice", "u:bob", "u:carol"];
    for u in users {
        let s = scope(&engine, "acme", Some(&[u]));
        context(&engine, &s, &plain, [0.0, 0.0, 1.0]);
        // Distinct update times, so that "least recently updated" is one narrative.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let unbound = scope(&engine, "acme", None);
    assert_eq!(engine.adaptive_stats(&unbound).unwrap()[0].narratives, 2);
    let lawyers = |engine: &Engine, u: &str| {
        moved(
            &narratives(engine, &scope(engine, "acme", Some(&[u])), &plain),
            "lawyers",
        )
    };
    let held: Vec<bool> = users.iter().map(|u| lawyers(&engine, u)).collect();
    assert_eq!(held, [false, true, true], "Alice's, the stalest, went");
    drop(engine);
    let engine = Engine::open(
        dir.path(),
        EngineConfig {
            adaptive: cfg,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let reloaded: Vec<bool> = users.iter().map(|u| lawyers(&engine, u)).collect();
    assert_eq!(reloaded, held);
}

#[test]
fn export_and_import_carry_each_narratives_principal() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let unbound = scope(&engine, "acme", None);
    let plain = RequestScope::default();
    let pair = naming(Some(&["u:bob", "u:alice"]));
    context(&engine, &unbound, &plain, [0.0, 1.0, 0.0]);
    context(&engine, &unbound, &everyone(), [1.0, 1.0, 0.0]);
    context(&engine, &unbound, &pair, [1.0, 0.0, 1.0]);
    context(
        &engine,
        &scope(&engine, "acme", Some(&["u:bob"])),
        &plain,
        [0.0, 0.0, 1.0],
    );
    let readers = [
        plain.clone(),
        everyone(),
        pair.clone(),
        naming(Some(&["u:bob"])),
        naming(Some(&["u:alice"])),
    ];
    let prints = |engine: &Engine, s: &TenantScope| -> Vec<BTreeMap<String, u32>> {
        readers.iter().map(|r| narratives(engine, s, r)).collect()
    };
    let want = prints(&engine, &unbound);
    let op = OperatorScope::for_tests();
    let mut lines = Vec::new();
    engine
        .export_tenant(&op, &TenantId::parse("acme").unwrap(), |l| {
            lines.push(l.clone());
            Ok(())
        })
        .unwrap();
    let mut principals: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| matches!(l, ExportLine::Narrative { .. }))
        .map(|l| serde_json::to_value(l).unwrap()["user_tokens"].clone())
        .collect();
    principals.sort_by_key(|v| v.to_string());
    assert_eq!(
        principals,
        [
            serde_json::json!(["*"]),
            serde_json::json!(["u:alice", "u:bob"]),
            serde_json::json!(["u:bob"]),
            serde_json::Value::Null,
        ]
    );
    engine
        .import_tenant(
            &op,
            &TenantId::parse("copy").unwrap(),
            lines.iter().cloned().map(Ok::<_, EngineError>),
        )
        .unwrap();
    assert_eq!(prints(&engine, &scope(&engine, "copy", None)), want);

    // A line of an earlier version, without `user_tokens`, imports as the namespace-wide one
    // (in an export of that version: no end line, none announced).
    let old: Vec<ExportLine> = lines
        .iter()
        .filter(|l| !matches!(l, ExportLine::Narrative { .. } | ExportLine::End(_)))
        .cloned()
        .map(|mut l| {
            if let ExportLine::Tenant { end_line, .. } = &mut l {
                *end_line = false;
            }
            l
        })
        .chain(lines.iter().filter_map(|l| {
            let mut v = serde_json::to_value(l).unwrap();
            let bob = v["user_tokens"] == serde_json::json!(["u:bob"]);
            (v["type"] == "narrative" && bob).then(|| {
                v.as_object_mut().unwrap().remove("user_tokens");
                serde_json::from_value(v).unwrap()
            })
        }))
        .collect();
    engine
        .import_tenant(
            &op,
            &TenantId::parse("old").unwrap(),
            old.into_iter().map(Ok::<_, EngineError>),
        )
        .unwrap();
    let got = prints(&engine, &scope(&engine, "old", None));
    // A principal of more tokens than a credential may be bound to is refused.
    let many: Vec<String> = (0..33).map(|i| format!("u:{i}")).collect();
    let crowded: Vec<ExportLine> = lines
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(l).unwrap();
            if v["type"] == "narrative" {
                v["user_tokens"] = serde_json::json!(many);
            }
            serde_json::from_value(v).unwrap()
        })
        .collect();
    let refused = engine.import_tenant(
        &op,
        &TenantId::parse("crowded").unwrap(),
        crowded.into_iter().map(Ok::<_, EngineError>),
    );
    assert!(
        matches!(&refused, Err(EngineError::BadRequest(m)) if m.contains("user_tokens")),
        "{refused:?}"
    );
    for id in ["lawyers", "faq"] {
        assert_eq!(
            got[0][id], want[3][id],
            "{id}: Bob's context, now namespace-wide"
        );
    }
    assert!(got[1..].iter().all(|n| n.values().all(|b| *b == 0)));
}

/// Narratives of every principal, as the tenant's stats count them.
fn narrative_count(engine: &Engine, tenant: &str) -> u64 {
    let unbound = scope(engine, tenant, None);
    engine
        .adaptive_stats(&unbound)
        .unwrap()
        .iter()
        .map(|s| s.narratives)
        .sum()
}

/// Gives a narrative to the namespace-wide principal, `["*"]`, Alice and Bob.
fn every_principal_feeds(engine: &Engine) {
    let unbound = scope(engine, "acme", None);
    let plain = RequestScope::default();
    context(engine, &unbound, &plain, [0.0, 1.0, 0.0]);
    context(engine, &unbound, &everyone(), [0.0, 1.0, 0.0]);
    for u in ["u:alice", "u:bob"] {
        context(
            engine,
            &scope(engine, "acme", Some(&[u])),
            &plain,
            [0.0, 1.0, 0.0],
        );
    }
    assert_eq!(narrative_count(engine, "acme"), 4);
}

#[test]
fn the_sweep_and_a_collection_drop_erase_every_principals_narratives() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(
        dir.path(),
        AdaptiveConfig {
            narrative_retention_secs: 0,
            ..AdaptiveConfig::default()
        },
    );
    let op = OperatorScope::for_tests();
    every_principal_feeds(&engine);
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(engine.sweep_adaptive(&op).unwrap().narratives, 4);
    assert_eq!(narrative_count(&engine, "acme"), 0);
    let alice = scope(&engine, "acme", Some(&["u:alice"]));
    let left = narratives(&engine, &alice, &RequestScope::default());
    assert!(left.values().all(|n| *n == 0), "{left:?}");

    every_principal_feeds(&engine);
    let unbound = scope(&engine, "acme", None);
    engine.delete_collection(&unbound, &collection()).unwrap();
    assert_eq!(narrative_count(&engine, "acme"), 0);
    // A purge erases the tenant's whole key range, narratives of every principal with it: the
    // hard-delete tests scan the data files for what a purged tenant wrote.
}

/// A key bound to several tokens speaks for its whole binding whichever subset it names, so
/// it cannot mint a principal per subset and push another user's narrative past the cap.
#[test]
fn a_bound_key_naming_subsets_of_its_binding_feeds_one_narrative() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(
        dir.path(),
        AdaptiveConfig {
            max_narratives: 2,
            half_life_secs: 1e9,
            ..AdaptiveConfig::default()
        },
    );
    let alice = scope(&engine, "acme", Some(&["u:alice"]));
    let many = scope(&engine, "acme", Some(&["u:a", "u:b", "u:c", "u:d"]));
    let plain = RequestScope::default();
    context(&engine, &alice, &plain, [1.0, 0.0, 0.0]);
    let before = narratives(&engine, &alice, &plain);
    for subset in [
        &["u:a"][..],
        &["u:b"],
        &["u:a", "u:b"],
        &["u:c", "u:d"],
        &["u:a", "u:c"],
        &[],
    ] {
        context(&engine, &many, &naming(Some(subset)), [0.0, 0.0, 1.0]);
    }
    assert_eq!(
        narratives(&engine, &alice, &plain),
        before,
        "Alice's survived"
    );
    assert_eq!(
        engine
            .adaptive_stats(&scope(&engine, "acme", None))
            .unwrap()[0]
            .narratives,
        2,
        "alice and the binding {{a, b, c, d}}"
    );
}

/// An import keeps a namespace within `max_narratives` as feedback does: of more narratives
/// than the cap, the least recently updated are left out.
#[test]
fn an_import_keeps_the_narrative_cap_dropping_the_least_recently_updated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AdaptiveConfig {
        half_life_secs: 1e9,
        max_narratives: 2,
        ..AdaptiveConfig::default()
    };
    let engine = engine_with(dir.path(), cfg);
    let plain = RequestScope::default();
    for u in ["u:alice", "u:bob"] {
        context(
            &engine,
            &scope(&engine, "acme", Some(&[u])),
            &plain,
            [0.0, 0.0, 1.0],
        );
    }
    let op = OperatorScope::for_tests();
    let mut lines = Vec::new();
    engine
        .export_tenant(&op, &TenantId::parse("acme").unwrap(), |l| {
            lines.push(serde_json::to_value(l).unwrap());
            Ok(())
        })
        .unwrap();
    let is_narrative = |v: &serde_json::Value| v["type"] == "narrative";
    let times: Vec<i64> = lines
        .iter()
        .filter(|v| is_narrative(v))
        .map(|v| v["updated_at"].as_i64().unwrap())
        .collect();
    assert_eq!(times.len(), 2);
    let (oldest, newest) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    // Two more principals' narratives: one older than both, one newer than both.
    let template = lines.iter().find(|v| is_narrative(v)).unwrap().clone();
    for (who, at) in [("u:old", oldest - 1000), ("u:new", newest + 1000)] {
        let mut extra = template.clone();
        extra["user_tokens"] = serde_json::json!([who]);
        extra["updated_at"] = serde_json::json!(at);
        // Before the end line, which counts them.
        let end = lines.len() - 1;
        assert_eq!(lines[end]["type"], "end");
        lines[end]["narratives"] =
            serde_json::json!(lines[end]["narratives"].as_u64().unwrap() + 1);
        lines.insert(end, extra);
    }
    let lines: Vec<ExportLine> = lines
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    engine
        .import_tenant(
            &op,
            &TenantId::parse("copy").unwrap(),
            lines.into_iter().map(Ok::<_, EngineError>),
        )
        .unwrap();
    let copy = scope(&engine, "copy", None);
    assert_eq!(engine.adaptive_stats(&copy).unwrap()[0].narratives, 2);
    let mut kept = Vec::new();
    engine
        .export_tenant(&op, &TenantId::parse("copy").unwrap(), |l| {
            let v = serde_json::to_value(l).unwrap();
            if is_narrative(&v) {
                kept.push((v["updated_at"].as_i64().unwrap(), v["user_tokens"].clone()));
            }
            Ok(())
        })
        .unwrap();
    kept.sort_by_key(|(at, _)| *at);
    // The newest two: the later of Alice's and Bob's, and the new one.
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0].0, newest, "{kept:?}");
    assert_eq!(kept[1].1, serde_json::json!(["u:new"]), "{kept:?}");
}

/// Adaptive state dated ahead of this server's clock (an export from a server set ahead) is
/// imported as of now: a pheromone does not decay before its time, nor does a narrative leave
/// its cap, so years ahead would have meant years at full strength.
#[test]
fn imported_adaptive_state_dated_ahead_is_taken_as_of_now() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let bob = scope(&engine, "acme", Some(&["u:bob"]));
    context(&engine, &bob, &RequestScope::default(), [0.0, 0.0, 1.0]);
    let f = FeedbackRequest {
        ids: vec![RecordId::parse("lawyers").unwrap()],
        ..Default::default()
    };
    engine.feedback(&bob, &RequestScope::default(), &f).unwrap();
    let op = OperatorScope::for_tests();
    let export = |id: &str| {
        let mut lines = Vec::new();
        engine
            .export_tenant(&op, &TenantId::parse(id).unwrap(), |l| {
                lines.push(serde_json::to_value(l).unwrap());
                Ok(())
            })
            .unwrap();
        lines
    };
    let ahead = strata_types::now_millis() + 10 * 365 * 24 * 3_600_000;
    let adaptive =
        |v: &serde_json::Value| matches!(v["type"].as_str(), Some("pheromone" | "narrative"));
    let mut lines = export("acme");
    let mut dated = 0;
    for line in lines.iter_mut().filter(|l| adaptive(l)) {
        line["updated_at"] = serde_json::json!(ahead);
        dated += 1;
    }
    assert_eq!(dated, 2, "{lines:?}");
    let parsed = lines
        .into_iter()
        .map(|v| ExportLine::from_value_closed(v).map_err(EngineError::BadRequest));
    engine
        .import_tenant(&op, &TenantId::parse("copy").unwrap(), parsed)
        .unwrap();
    let now = strata_types::now_millis();
    for line in export("copy").iter().filter(|l| adaptive(l)) {
        assert!(line["updated_at"].as_i64().unwrap() <= now, "{line}");
    }
}
