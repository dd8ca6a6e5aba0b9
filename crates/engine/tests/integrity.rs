//! Per-tenant integrity: a tenant pushed into `stress` sheds its expensive searches and one in
//! `critical` has its writes refused, while another tenant on the same engine stays `normal`
//! and is served in full.

mod common;

use std::collections::HashMap;

use strata_auth::{OperatorScope, TenantScope};
use strata_engine::{
    Engine, EngineConfig, EngineError, IntegrityConfig, IntegrityPolicy, IntegrityState,
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

    // Critical refuses writes; reads go on.
    assert!(matches!(
        write(&engine, &critical, 100),
        Err(EngineError::TenantCritical(_))
    ));
    assert_eq!(search(&engine, &critical, 10).unwrap().hits.len(), 10);

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
