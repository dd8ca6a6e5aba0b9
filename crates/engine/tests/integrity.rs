//! Per-tenant integrity: a tenant pushed into `stress` sheds its expensive searches and one in
//! `critical` has its writes refused, while another tenant on the same engine stays `normal`
//! and is served in full.

mod common;

use std::collections::HashMap;

use strata_auth::{OperatorScope, TenantScope};
use strata_engine::{
    Answered, Engine, EngineConfig, EngineError, Idempotency, IntegrityConfig, IntegrityPolicy,
    IntegrityState, PutOutcome,
};
use strata_types::*;

fn scope(engine: &Engine, id: &str) -> TenantScope {
    let id = TenantId::parse(id).unwrap();
    if engine.tenant_meta(&id).is_err() {
        engine
            .create_tenant(&OperatorScope::for_tests(), &id, None)
            .unwrap();
    }
    TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), common::full_grant())
}

fn write(engine: &Engine, scope: &TenantScope, i: usize) -> Result<(), EngineError> {
    engine
        .put(
            scope,
            &RequestScope::default(),
            vec![NewRecord {
                content: Some(format!("note {i} about the weather")),
                ..Default::default()
            }],
        )
        .map(|_| ())
}

fn search(engine: &Engine, scope: &TenantScope, k: usize) -> Result<SearchResponse, EngineError> {
    engine.search(
        scope,
        &RequestScope::default(),
        &SearchRequest {
            query: Some("weather".into()),
            k,
            ..Default::default()
        },
    )
}

fn state(engine: &Engine, id: &str) -> IntegrityState {
    engine
        .integrity(&OperatorScope::for_tests(), &TenantId::parse(id).unwrap())
        .unwrap()
        .state
}

#[test]
fn a_tenant_under_pressure_is_gated_alone() {
    // `stressed` has a contract no search can meet, but a critical threshold none reaches;
    // `critical` has the same contract and the default thresholds; `calm` has the defaults.
    let impossible = |critical: bool| IntegrityPolicy {
        latency_contract_ms: 1e-6,
        critical_enter: if critical { 4.0 } else { 1e15 },
        critical_exit: if critical { 2.5 } else { 1e14 },
        consecutive: 2,
        cooldown_ms: 0,
        ..IntegrityPolicy::default()
    };
    let config = EngineConfig {
        integrity: IntegrityConfig {
            default: IntegrityPolicy::default(),
            tenants: HashMap::from([
                ("stressed".to_string(), impossible(false)),
                ("critical".to_string(), impossible(true)),
            ]),
        },
        ..EngineConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config).unwrap();
    let (stressed, critical, calm) = (
        scope(&engine, "stressed"),
        scope(&engine, "critical"),
        scope(&engine, "calm"),
    );
    for s in [&stressed, &critical, &calm] {
        for i in 0..60 {
            write(&engine, s, i).unwrap();
        }
    }
    // A keyed write before the state changes, whose answer a retry will ask for.
    let keyed = Idempotency::new("retry-1", "f1".into()).unwrap();
    let note = |text: &str| {
        vec![NewRecord {
            content: Some(text.into()),
            ..Default::default()
        }]
    };
    let shape = |o: &[PutOutcome]| (201, serde_json::json!({"id": o[0].id.to_string()}));
    let first = engine
        .put_idempotent(
            &critical,
            &RequestScope::default(),
            note("kept"),
            &keyed,
            shape,
        )
        .unwrap();
    let Answered::Fresh(first) = first else {
        panic!("a first write is fresh")
    };
    for _ in 0..3 {
        for s in [&stressed, &critical, &calm] {
            search(&engine, s, 10).unwrap();
        }
    }
    assert_eq!(state(&engine, "stressed"), IntegrityState::Stress);
    assert_eq!(state(&engine, "critical"), IntegrityState::Critical);
    assert_eq!(state(&engine, "calm"), IntegrityState::Normal);

    // Stress sheds the expensive search only, with its own error.
    assert!(matches!(
        search(&engine, &stressed, 100),
        Err(EngineError::TenantStressed(_))
    ));
    assert_eq!(search(&engine, &stressed, 10).unwrap().hits.len(), 10);
    write(&engine, &stressed, 100).unwrap();

    // Critical refuses writes; reads go on, and it sheds the expensive ones as stress does.
    assert!(matches!(
        write(&engine, &critical, 100),
        Err(EngineError::TenantCritical(_))
    ));
    assert_eq!(search(&engine, &critical, 10).unwrap().hits.len(), 10);
    // A retry of a write made before is answered from the kept answer (it writes nothing);
    // a new keyed write is refused like any other.
    let kept = engine.kept_answer(&critical, &keyed).unwrap();
    let id = first[0].id.to_string();
    assert_eq!(kept, Some((201, serde_json::json!({ "id": id }))));
    let other = Idempotency::new("retry-2", "f2".into()).unwrap();
    assert!(matches!(
        engine.put_idempotent(
            &critical,
            &RequestScope::default(),
            note("new"),
            &other,
            shape
        ),
        Err(EngineError::TenantCritical(_))
    ));
    assert!(matches!(
        search(&engine, &critical, 100),
        Err(EngineError::TenantStressed(_))
    ));

    // The calm tenant is served in full, and stays normal.
    assert_eq!(search(&engine, &calm, 100).unwrap().hits.len(), 60);
    write(&engine, &calm, 100).unwrap();
    assert_eq!(state(&engine, "calm"), IntegrityState::Normal);

    let report = engine
        .integrity(
            &OperatorScope::for_tests(),
            &TenantId::parse("critical").unwrap(),
        )
        .unwrap();
    assert_eq!(report.transitions.len(), 1, "{report:?}");
    assert_eq!(
        (report.transitions[0].from, report.transitions[0].to),
        (IntegrityState::Normal, IntegrityState::Critical)
    );
    assert!(
        report.pressure > 4.0 && report.latency_ms > 0.0,
        "{report:?}"
    );
}

#[test]
fn inconsistent_thresholds_are_refused_at_open() {
    let config = EngineConfig {
        integrity: IntegrityConfig {
            default: IntegrityPolicy {
                stress_exit: 2.0,
                ..IntegrityPolicy::default()
            },
            tenants: HashMap::new(),
        },
        ..EngineConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Engine::open(dir.path(), config),
        Err(EngineError::BadRequest(_))
    ));
}

/// A policy that moves on queue depth alone, deterministically (no cooldown).
fn queue_policy() -> IntegrityPolicy {
    IntegrityPolicy {
        queue_depth_limit: 10,
        consecutive: 3,
        cooldown_ms: 0,
        ..IntegrityPolicy::default()
    }
}

fn queue_engine(dir: &std::path::Path) -> Engine {
    let config = EngineConfig {
        integrity: IntegrityConfig {
            default: queue_policy(),
            tenants: HashMap::new(),
        },
        ..EngineConfig::default()
    };
    Engine::open(dir, config).unwrap()
}

/// A tenant's state and its moves, for comparing runs.
fn moves(engine: &Engine, id: &str) -> (IntegrityState, Vec<(IntegrityState, IntegrityState)>) {
    let r = engine
        .integrity(&OperatorScope::for_tests(), &TenantId::parse(id).unwrap())
        .unwrap();
    (
        r.state,
        r.transitions.iter().map(|t| (t.from, t.to)).collect(),
    )
}

#[test]
fn a_deep_queue_stresses_its_own_tenant_only() {
    let dir = tempfile::tempdir().unwrap();
    let engine = queue_engine(dir.path());
    let (flooding, quiet) = (scope(&engine, "flooding"), scope(&engine, "quiet"));
    for _ in 0..5 {
        // Twice the depth limit: pressure 2, stress (critical would need 4).
        engine.observe_queue(&flooding, 20, std::time::Duration::from_millis(30));
        engine.observe_queue(&quiet, 1, std::time::Duration::from_millis(1));
    }
    assert_eq!(state(&engine, "flooding"), IntegrityState::Stress);
    assert_eq!(moves(&engine, "quiet"), (IntegrityState::Normal, vec![]));
    let r = engine
        .integrity(
            &OperatorScope::for_tests(),
            &TenantId::parse("flooding").unwrap(),
        )
        .unwrap();
    assert_eq!(r.queue_depth, 20);
    assert!(
        r.queue_wait_ms > 20.0 && (r.pressure - 2.0).abs() < 1e-9,
        "{r:?}"
    );
    // The quiet tenant's searches are served in full meanwhile.
    for i in 0..60 {
        write(&engine, &quiet, i).unwrap();
    }
    assert_eq!(search(&engine, &quiet, 100).unwrap().hits.len(), 60);
    // Its queue drains: back to normal.
    for _ in 0..3 {
        engine.observe_queue(&flooding, 0, std::time::Duration::ZERO);
    }
    // Only the depth counts under this policy, so the wait's moving average holds nothing up.
    assert_eq!(state(&engine, "flooding"), IntegrityState::Normal);
}

#[test]
fn without_queue_thresholds_the_queue_moves_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let s = scope(&engine, "t");
    for _ in 0..20 {
        engine.observe_queue(&s, 10_000, std::time::Duration::from_secs(5));
    }
    assert_eq!(moves(&engine, "t"), (IntegrityState::Normal, vec![]));
    let r = engine
        .integrity(&OperatorScope::for_tests(), &TenantId::parse("t").unwrap())
        .unwrap();
    assert_eq!(r.queue_depth, 10_000);
}

/// Of the connectivity tests: 1,500 vectors × 1,024 dimensions (1.54M floats) pass the graph
/// threshold, three quarters of the planner's exact-scan budget.
const GRAPH_DIM: usize = 1024;

#[test]
fn an_intact_graph_is_fully_connected() {
    connected_graph_of(strata_index::testdata::clustered(1_500, GRAPH_DIM, 10, 1));
}

/// Identical texts embed identically: a graph of many copies of a few vectors is intact too,
/// although a node's own place among its ties is a matter of slot order.
#[test]
fn a_graph_of_duplicates_is_fully_connected() {
    let distinct = strata_index::testdata::clustered(3, GRAPH_DIM, 3, 2);
    connected_graph_of((0..1_500).map(|i| distinct[i % 3].clone()).collect());
}

fn connected_graph_of(data: Vec<Vec<f32>>) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let s = scope(&engine, "g");
    let name = CollectionName::parse("vec").unwrap();
    engine
        .create_collection(&s, &name, GRAPH_DIM as u32, Metric::L2)
        .unwrap();
    let records: Vec<NewRecord> = data
        .into_iter()
        .enumerate()
        .map(|(i, v)| NewRecord {
            id: Some(RecordId::parse(format!("r{i}")).unwrap()),
            modality: Some(name.clone()),
            vector: Some(v),
            ..Default::default()
        })
        .collect();
    for part in records.chunks(500) {
        engine
            .put(&s, &RequestScope::default(), part.to_vec())
            .unwrap();
    }
    let search_vec = |i: u64| SearchRequest {
        vector: Some(strata_index::testdata::queries(1, GRAPH_DIM, 10, 1, i)[0].clone()),
        k: 10,
        modality: Some(name.clone()),
        ..Default::default()
    };
    engine
        .search(&s, &RequestScope::default(), &search_vec(0))
        .unwrap();
    engine.wait_for_graph_builds();
    engine
        .search(&s, &RequestScope::default(), &search_vec(1))
        .unwrap();
    let r = engine
        .integrity(&OperatorScope::for_tests(), &TenantId::parse("g").unwrap())
        .unwrap();
    assert!(
        engine.index_stats(&s).unwrap().iter().any(|c| c.graph),
        "the graph was built"
    );
    assert!(r.connectivity >= 0.9 && r.connectivity <= 1.0, "{r:?}");
    assert_eq!(r.state, IntegrityState::Normal);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

    /// Each tenant's state and moves depend on its own signals only: interleaved with other
    /// tenants' queues on one engine, they are exactly what its own samples alone give on an
    /// engine of its own.
    #[test]
    fn one_tenants_pressure_changes_no_other_tenants_state(
        samples in proptest::collection::vec((0usize..3, 0usize..40, 0u64..50), 1..120)
    ) {
        let names = ["a", "b", "c"];
        let dir = tempfile::tempdir().unwrap();
        let shared = queue_engine(dir.path());
        let scopes: Vec<TenantScope> = names.iter().map(|n| scope(&shared, n)).collect();
        for &(t, depth, wait) in &samples {
            shared.observe_queue(&scopes[t], depth, std::time::Duration::from_millis(wait));
        }
        for (t, n) in names.iter().enumerate() {
            let own_dir = tempfile::tempdir().unwrap();
            let alone = queue_engine(own_dir.path());
            let own = scope(&alone, n);
            for &(_, depth, wait) in samples.iter().filter(|s| s.0 == t) {
                alone.observe_queue(&own, depth, std::time::Duration::from_millis(wait));
            }
            proptest::prop_assert_eq!(moves(&shared, n), moves(&alone, n));
        }
    }
}
