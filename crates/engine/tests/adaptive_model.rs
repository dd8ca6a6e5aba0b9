//! Adaptive reranking (`docs/adaptive-reranking.md`): feedback in one (tenant, domain) never
//! changes rankings in another, pheromones only ever go to records the caller could see,
//! repeated feedback raises a record and time (or exposure) brings it back down, and the state
//! survives eviction from memory, a restart, deletions, export and import.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use serde_json::json;
use strata_auth::{OperatorScope, TenantScope};
use strata_engine::{AdaptiveConfig, Engine, EngineConfig, EngineError, ExportLine};
use strata_types::*;

const DIM: usize = 8;
const TENANTS: [&str; 2] = ["acme", "beta"];
const DOMAINS: [&str; 2] = ["d1", "d2"];
/// `None`: a request without tokens (sees only tenant-shared records).
const PRINCIPALS: [Option<&str>; 3] = [None, Some("u:alice"), Some("u:bob")];
const PER_DOMAIN: usize = 6;

fn collection() -> CollectionName {
    CollectionName::parse("small").unwrap()
}

fn open(dir: &Path, adaptive: AdaptiveConfig) -> Engine {
    let config = EngineConfig {
        adaptive,
        ..EngineConfig::default()
    };
    Engine::open(dir, config).unwrap()
}

/// The scope of `tenant`, creating it (with the `small` collection) on first use.
fn tenant(engine: &Engine, name: &str) -> TenantScope {
    let id = TenantId::parse(name).unwrap();
    let fresh = engine.tenant_meta(&id).is_err();
    if fresh {
        engine
            .create_tenant(&OperatorScope::for_tests(), &id, None)
            .unwrap();
    }
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), common::full_grant());
    if fresh {
        engine
            .create_collection(&scope, &collection(), DIM as u32, Metric::Cosine)
            .unwrap();
    }
    scope
}

fn req(domain: &str, principal: Option<&str>) -> RequestScope {
    let mut v = json!({"memory_domain": domain});
    if let Some(p) = principal {
        v["user_tokens"] = json!([p]);
    }
    serde_json::from_value(v).unwrap()
}

fn id(s: &str) -> RecordId {
    RecordId::parse(s).unwrap()
}

/// The same ids in both tenants and both domains' records named after their domain, so that a
/// leak across tenants would have a record of the same name to land on.
fn seed(engine: &Engine, scope: &TenantScope) {
    for (di, domain) in DOMAINS.iter().enumerate() {
        let records = (0..PER_DOMAIN)
            .map(|i| NewRecord {
                id: Some(id(&format!("{domain}-{i}"))),
                modality: Some(collection()),
                content: Some(format!("note {i}")),
                vector: Some(common::vector(DIM, (di * 100 + i) as u64)),
                user_tokens: match i % 3 {
                    0 => None,
                    1 => Some(vec![UserToken::parse("u:alice").unwrap()]),
                    _ => Some(vec![UserToken::parse("u:bob").unwrap()]),
                },
                ..Default::default()
            })
            .collect();
        let all =
            serde_json::from_value(json!({"memory_domain": domain, "user_tokens": ["*"]})).unwrap();
        engine.put(scope, &all, records).unwrap();
    }
}

fn adaptive_search(
    engine: &Engine,
    scope: &TenantScope,
    r: &RequestScope,
    vector: Vec<f32>,
    k: usize,
) -> Vec<SearchHit> {
    let s = SearchRequest {
        vector: Some(vector),
        k,
        modality: Some(collection()),
        rerank: Some(Rerank::Adaptive),
        explain: true,
        ..Default::default()
    };
    engine.search(scope, r, &s).unwrap().hits
}

/// A ranking as ids with scores rounded to 1e-5: pheromones decay continuously, so the last
/// bits of a score move with the clock even when nothing else does.
type Ranking = Vec<(String, i64)>;

fn ranking(hits: &[SearchHit]) -> Ranking {
    hits.iter()
        .map(|h| (h.id.to_string(), (f64::from(h.score) * 1e5).round() as i64))
        .collect()
}

/// Every (tenant, domain, principal)'s adaptive ranking for a fixed query, and the bits of each
/// hit's narrative contribution.
fn all_rankings(
    engine: &Engine,
    scopes: &[TenantScope],
) -> BTreeMap<(usize, usize, usize), (Ranking, Vec<u32>)> {
    let mut out = BTreeMap::new();
    for (t, scope) in scopes.iter().enumerate() {
        for (d, domain) in DOMAINS.iter().enumerate() {
            for (p, principal) in PRINCIPALS.iter().enumerate() {
                let hits = adaptive_search(
                    engine,
                    scope,
                    &req(domain, *principal),
                    common::vector(DIM, 999),
                    4,
                );
                let narratives = hits
                    .iter()
                    .map(|h| {
                        let e = h.explain.as_ref().and_then(|e| e.adaptive);
                        e.map_or(u32::MAX, |a| a.narrative.to_bits())
                    })
                    .collect();
                out.insert((t, d, p), (ranking(&hits), narratives));
            }
        }
    }
    out
}

fn pheromones(engine: &Engine, scope: &TenantScope) -> BTreeMap<String, u64> {
    engine
        .adaptive_stats(scope)
        .unwrap()
        .into_iter()
        .map(|s| (s.memory_domain.to_string(), s.pheromones))
        .collect()
}

#[derive(Debug, Clone)]
struct Op {
    tenant: usize,
    domain: usize,
    principal: usize,
    /// Ids by name: any domain's, so some are invisible to the caller.
    ids: Vec<String>,
    shown: Vec<String>,
    context: Option<u64>,
}

fn any_id() -> impl Strategy<Value = String> {
    (0..DOMAINS.len(), 0..PER_DOMAIN + 1).prop_map(|(d, i)| format!("{}-{i}", DOMAINS[d]))
}

fn op() -> impl Strategy<Value = Op> {
    (
        0..TENANTS.len(),
        0..DOMAINS.len(),
        0..PRINCIPALS.len(),
        prop::collection::vec(any_id(), 1..4),
        prop::collection::vec(any_id(), 0..4),
        prop::option::of(0u64..1000),
    )
        .prop_map(|(tenant, domain, principal, ids, shown, context)| Op {
            tenant,
            domain,
            principal,
            ids,
            shown,
            context,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random feedback across two tenants, two domains and three principals: after each, every
    /// other (tenant, domain)'s rankings are unchanged, for every principal, and so is every
    /// other principal's narrative contribution in its own (tenant, domain); and the records
    /// with pheromones are exactly those reinforced by a caller who could see them.
    #[test]
    fn feedback_stays_in_its_namespace_and_on_visible_records(ops in prop::collection::vec(op(), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        // A half-life of decades: scores do not drift while the test runs.
        let engine = open(dir.path(), AdaptiveConfig { half_life_secs: 1e9, ..AdaptiveConfig::default() });
        let scopes: Vec<TenantScope> = TENANTS.iter().map(|t| tenant(&engine, t)).collect();
        for s in &scopes {
            seed(&engine, s);
        }
        // The model: (tenant, domain) → ids that must hold a pheromone.
        let mut model: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
        let mut before = all_rankings(&engine, &scopes);
        for op in ops {
            let scope = &scopes[op.tenant];
            let r = req(DOMAINS[op.domain], PRINCIPALS[op.principal]);
            for name in &op.ids {
                if engine.get(scope, &r, &id(name)).is_ok() {
                    model.entry((op.tenant, op.domain)).or_default().insert(name.clone());
                }
            }
            let f = FeedbackRequest {
                ids: op.ids.iter().map(|s| id(s)).collect(),
                shown: op.shown.iter().map(|s| id(s)).collect(),
                vector: op.context.map(|c| common::vector(DIM, c)),
                modality: Some(collection()),
                ..Default::default()
            };
            let answer = engine.feedback(scope, &r, &f).unwrap();
            prop_assert_eq!(answer.narrative_updated, op.context.is_some());
            let after = all_rankings(&engine, &scopes);
            for (key, (ranking, narratives)) in &after {
                if (key.0, key.1) != (op.tenant, op.domain) {
                    prop_assert_eq!(ranking, &before[key].0, "{:?} moved by feedback in {:?}", key, op);
                } else if key.2 != op.principal {
                    // Pheromones may reorder hits: compare each id's narrative, not positions.
                    let by_id = |r: &Ranking, n: &[u32]| -> BTreeMap<String, u32> {
                        r.iter().map(|(id, _)| id.clone()).zip(n.iter().copied()).collect()
                    };
                    let (was_r, was_n) = &before[key];
                    prop_assert_eq!(
                        by_id(ranking, narratives),
                        by_id(was_r, was_n),
                        "{:?}'s narrative moved by another principal's feedback {:?}", key, op
                    );
                }
            }
            before = after;
            for (t, s) in scopes.iter().enumerate() {
                let held = pheromones(&engine, s);
                for (d, domain) in DOMAINS.iter().enumerate() {
                    let want = model.get(&(t, d)).map_or(0, |m| m.len() as u64);
                    prop_assert_eq!(held.get(*domain).copied().unwrap_or(0), want, "tenant {} domain {}", t, domain);
                }
            }
        }
        // A hit's pheromone contribution is non-zero only for a record the model reinforced.
        for (t, s) in scopes.iter().enumerate() {
            for (d, domain) in DOMAINS.iter().enumerate() {
                for principal in PRINCIPALS {
                    for hit in adaptive_search(&engine, s, &req(domain, principal), common::vector(DIM, 5), 10) {
                        let e = hit.explain.unwrap().adaptive.unwrap();
                        let reinforced = model.get(&(t, d)).is_some_and(|m| m.contains(hit.id.as_str()));
                        prop_assert_eq!(e.pheromone > 0.0, reinforced, "{}", hit.id);
                    }
                }
            }
        }
    }
}

/// Unit vectors: the query direction `e0`, and records at decreasing similarity to it.
fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i] = 1.0;
    v
}

fn mix(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + t * y).collect()
}

/// Six records close to the query (`near-0` closest), one related but further (`target`), and
/// unrelated ones; all tenant-shared in domain `d1`.
fn ranked_corpus(engine: &Engine, scope: &TenantScope) {
    let mut records: Vec<NewRecord> = (0..6)
        .map(|i| NewRecord {
            id: Some(id(&format!("near-{i}"))),
            modality: Some(collection()),
            vector: Some(mix(&axis(0), &axis(1), 0.1 * i as f32)),
            ..Default::default()
        })
        .collect();
    records.push(NewRecord {
        id: Some(id("target")),
        modality: Some(collection()),
        vector: Some(mix(&axis(0), &axis(2), 1.0)),
        ..Default::default()
    });
    for i in 0..8 {
        records.push(NewRecord {
            id: Some(id(&format!("far-{i}"))),
            modality: Some(collection()),
            vector: Some(common::vector(DIM, 50 + i)),
            ..Default::default()
        });
    }
    for domain in ["d1", "d2"] {
        let mut copy = records.clone();
        if domain == "d2" {
            for r in &mut copy {
                r.id = Some(id(&format!("{}-2", r.id.as_ref().unwrap())));
            }
        }
        engine.put(scope, &req(domain, None), copy).unwrap();
    }
}

fn rank_of(hits: &[SearchHit], name: &str) -> Option<usize> {
    hits.iter()
        .position(|h| h.id.as_str() == name)
        .map(|p| p + 1)
}

fn use_target(engine: &Engine, scope: &TenantScope, times: usize) {
    for _ in 0..times {
        let f = FeedbackRequest {
            ids: vec![id("target")],
            shown: vec![id("near-0"), id("target")],
            ..Default::default()
        };
        engine
            .feedback(
                scope,
                &req("d1", None),
                &FeedbackRequest {
                    modality: Some(collection()),
                    ..f
                },
            )
            .unwrap();
    }
}

#[test]
fn repeated_feedback_raises_a_record_and_time_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let half_life = 0.4;
    let engine = open(
        dir.path(),
        AdaptiveConfig {
            half_life_secs: half_life,
            ..AdaptiveConfig::default()
        },
    );
    let scope = tenant(&engine, "acme");
    ranked_corpus(&engine, &scope);
    let q = axis(0);
    let before = adaptive_search(&engine, &scope, &req("d1", None), q.clone(), 5);
    assert_eq!(
        rank_of(&before, "target"),
        None,
        "target starts outside the top 5"
    );

    use_target(&engine, &scope, 5);
    let raised = adaptive_search(&engine, &scope, &req("d1", None), q.clone(), 5);
    assert_eq!(
        rank_of(&raised, "target"),
        Some(1),
        "{:?}",
        ranking(&raised)
    );
    let e = raised[0].explain.as_ref().unwrap().adaptive.unwrap();
    assert!(e.pheromone > 0.2 && e.base_rank == 7, "{e:?}");
    // Other domains and plain search are untouched.
    let other = adaptive_search(&engine, &scope, &req("d2", None), q.clone(), 5);
    assert_eq!(rank_of(&other, "target-2"), None);
    let plain = engine
        .search(
            &scope,
            &req("d1", None),
            &SearchRequest {
                vector: Some(q.clone()),
                k: 5,
                modality: Some(collection()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(rank_of(&plain.hits, "target"), None);

    // Eight half-lives later the pheromone is a rounding error and the order is the base one.
    std::thread::sleep(std::time::Duration::from_secs_f64(half_life * 8.0));
    let decayed = adaptive_search(&engine, &scope, &req("d1", None), q.clone(), 5);
    assert_eq!(rank_of(&decayed, "target"), None, "{:?}", ranking(&decayed));
    let ids = |h: &[SearchHit]| h.iter().map(|h| h.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&decayed), ids(&plain.hits));
}

#[test]
fn exposure_without_use_wears_a_pheromone_down() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(
        dir.path(),
        AdaptiveConfig {
            half_life_secs: 1e9,
            exposure_decay: 0.5,
            ..AdaptiveConfig::default()
        },
    );
    let scope = tenant(&engine, "acme");
    ranked_corpus(&engine, &scope);
    use_target(&engine, &scope, 3);
    let strength = |engine: &Engine| {
        let hits = adaptive_search(engine, &scope, &req("d1", None), axis(0), 20);
        hits.iter()
            .find(|h| h.id.as_str() == "target")
            .and_then(|h| h.explain.as_ref()?.adaptive)
            .unwrap()
            .pheromone
    };
    let used = strength(&engine);
    for _ in 0..3 {
        let f = FeedbackRequest {
            shown: vec![id("target")],
            ..Default::default()
        };
        engine.feedback(&scope, &req("d1", None), &f).unwrap();
    }
    let shown = strength(&engine);
    assert!(shown < used * 0.5, "{shown} vs {used}");
}

/// Bits of every hit's explain, for exact comparisons across a reload.
fn fingerprint(engine: &Engine, scope: &TenantScope, domain: &str) -> Ranking {
    ranking(&adaptive_search(
        engine,
        scope,
        &req(domain, None),
        axis(0),
        8,
    ))
}

#[test]
fn eviction_restart_and_export_keep_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AdaptiveConfig {
        half_life_secs: 1e9,
        max_namespaces: 1,
        ..AdaptiveConfig::default()
    };
    let engine = open(dir.path(), cfg.clone());
    let scope = tenant(&engine, "acme");
    let domains = ["d1", "d2", "d3"];
    for d in domains {
        engine
            .put(
                &scope,
                &req(d, None),
                (0..10)
                    .map(|i| NewRecord {
                        id: Some(id(&format!("{d}-{i}"))),
                        modality: Some(collection()),
                        vector: Some(common::vector(DIM, i)),
                        ..Default::default()
                    })
                    .collect(),
            )
            .unwrap();
    }
    let mut prints = BTreeMap::new();
    for (n, d) in domains.iter().enumerate() {
        let f = FeedbackRequest {
            ids: vec![id(&format!("{d}-{}", 7 - n)), id(&format!("{d}-9"))],
            vector: Some(common::vector(DIM, 40 + n as u64)),
            modality: Some(collection()),
            ..Default::default()
        };
        engine.feedback(&scope, &req(d, None), &f).unwrap();
        prints.insert(*d, fingerprint(&engine, &scope, d));
    }
    // With room for one namespace besides `default`, d1 and d2 were evicted; they reload.
    let loaded: BTreeMap<String, bool> = engine
        .adaptive_stats(&scope)
        .unwrap()
        .into_iter()
        .map(|s| (s.memory_domain.to_string(), s.loaded))
        .collect();
    assert_eq!(
        loaded,
        BTreeMap::from([
            ("d1".into(), false),
            ("d2".into(), false),
            ("d3".into(), true)
        ])
    );
    for d in domains {
        assert_eq!(
            fingerprint(&engine, &scope, d),
            prints[&d],
            "{d} after eviction"
        );
    }
    // A restart reloads it from storage.
    drop(engine);
    let engine = open(dir.path(), cfg.clone());
    let scope = tenant(&engine, "acme");
    for d in domains {
        assert_eq!(
            fingerprint(&engine, &scope, d),
            prints[&d],
            "{d} after restart"
        );
    }
    // Export and import carry it to another tenant.
    let op = OperatorScope::for_tests();
    let mut lines = Vec::new();
    engine
        .export_tenant(&op, &TenantId::parse("acme").unwrap(), |l| {
            lines.push(l.clone());
            Ok(())
        })
        .unwrap();
    assert!(
        lines
            .iter()
            .any(|l| matches!(l, ExportLine::Pheromone { .. }))
    );
    assert!(
        lines
            .iter()
            .any(|l| matches!(l, ExportLine::Narrative { .. }))
    );
    let copy_id = TenantId::parse("copy").unwrap();
    engine
        .import_tenant(
            &op,
            &copy_id,
            lines.iter().cloned().map(Ok::<_, EngineError>),
        )
        .unwrap();
    let copy = TenantScope::for_tests(&engine.tenant_meta(&copy_id).unwrap(), common::full_grant());
    for d in domains {
        assert_eq!(
            fingerprint(&engine, &copy, d),
            prints[&d],
            "{d} after import"
        );
    }
    assert_eq!(pheromones(&engine, &copy), pheromones(&engine, &scope));
    // Deleting a record takes its pheromone; the other tenant's copy is untouched.
    engine
        .delete(&scope, &req("d1", None), &id("d1-9"))
        .unwrap();
    assert_eq!(pheromones(&engine, &scope)["d1"], 1);
    assert_eq!(pheromones(&engine, &copy)["d1"], 2);
    // A verified tenant has no stray keys.
    let report = engine
        .verify_tenant(&op, &TenantId::parse("acme").unwrap())
        .unwrap();
    assert!(report.ok, "{report:?}");
    // A hard delete takes it all; a tenant re-created under the id starts with nothing.
    engine.purge_tenant(&op, &copy_id).unwrap();
    let again = tenant(&engine, "copy");
    assert!(engine.adaptive_stats(&again).unwrap().is_empty());
    assert_eq!(fingerprint(&engine, &again, "d1"), Vec::new());
}

#[test]
fn the_sweep_purges_what_decayed_and_what_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(
        dir.path(),
        AdaptiveConfig {
            half_life_secs: 0.05,
            min_strength: 0.5,
            ..AdaptiveConfig::default()
        },
    );
    let scope = tenant(&engine, "acme");
    ranked_corpus(&engine, &scope);
    use_target(&engine, &scope, 1);
    assert_eq!(pheromones(&engine, &scope)["d1"], 1);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let swept = engine.sweep_adaptive(&OperatorScope::for_tests()).unwrap();
    assert_eq!(swept.pheromones, 1);
    assert!(pheromones(&engine, &scope).is_empty());
}

#[test]
fn feedback_refuses_bad_input_and_read_only_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), AdaptiveConfig::default());
    let scope = tenant(&engine, "acme");
    let bad = |f: FeedbackRequest| match engine.feedback(&scope, &req("d1", None), &f) {
        Err(EngineError::BadRequest(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(bad(FeedbackRequest::default()).starts_with("ids"));
    let wrong_dim = FeedbackRequest {
        vector: Some(vec![1.0; 3]),
        modality: Some(collection()),
        ..Default::default()
    };
    assert!(bad(wrong_dim).starts_with("vector"));
    let too_many = FeedbackRequest {
        ids: (0..1001).map(|i| id(&format!("r{i}"))).collect(),
        ..Default::default()
    };
    assert!(bad(too_many).starts_with("ids"));
    let weights = SearchRequest {
        vector: Some(axis(0)),
        modality: Some(collection()),
        rerank: Some(Rerank::Adaptive),
        rerank_weights: Some(RerankWeights {
            pheromone: f32::NAN,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(
        matches!(engine.search(&scope, &req("d1", None), &weights), Err(EngineError::BadRequest(m)) if m.starts_with("rerank_weights.pheromone"))
    );

    let meta = engine
        .tenant_meta(&TenantId::parse("acme").unwrap())
        .unwrap();
    let reader = TenantScope::for_tests(
        &meta,
        strata_auth::Grant {
            permissions: strata_auth::Permissions::of(&[strata_auth::Permission::Read]),
            user_tokens: None,
            domains: None,
        },
    );
    let f = FeedbackRequest {
        ids: vec![id("x")],
        ..Default::default()
    };
    assert!(matches!(
        engine.feedback(&reader, &req("d1", None), &f),
        Err(EngineError::PermissionDenied(_))
    ));
}

#[test]
fn updating_a_record_keeps_its_pheromone_and_dropping_its_collection_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), AdaptiveConfig::default());
    let scope = tenant(&engine, "acme");
    ranked_corpus(&engine, &scope);
    use_target(&engine, &scope, 2);
    assert_eq!(pheromones(&engine, &scope)["d1"], 1);
    // Evidence and an upsert rewrite the record in place: what feedback taught stays.
    engine
        .add_evidence(
            &scope,
            &req("d1", None),
            &id("target"),
            Evidence::Corroborate,
        )
        .unwrap();
    let again = NewRecord {
        id: Some(id("target")),
        modality: Some(collection()),
        vector: Some(mix(&axis(0), &axis(2), 1.0)),
        content: Some("the same record, written again".into()),
        ..Default::default()
    };
    engine.put(&scope, &req("d1", None), vec![again]).unwrap();
    assert_eq!(pheromones(&engine, &scope)["d1"], 1);
    // Dropping the collection drops its records without a delete each; their pheromones go
    // too, so a record re-created under the same id starts afresh.
    engine.delete_collection(&scope, &collection()).unwrap();
    assert!(pheromones(&engine, &scope).is_empty());
}
