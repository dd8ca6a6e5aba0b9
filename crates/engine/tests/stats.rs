//! The figures observability reads: every tenant's usage in one snapshot (what `/metrics`
//! scrapes), a tenant's own usage (what `GET /v1/stats` shows, `admin` only, live tenants only)
//! and the store's commit latencies.

mod common;

use serde_json::json;
use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{EngineError, TenantStatus};
use strata_types::*;

fn op() -> OperatorScope {
    OperatorScope::for_tests()
}

fn rec(v: serde_json::Value) -> NewRecord {
    serde_json::from_value(v).expect("record")
}

#[test]
fn usage_report_matches_each_tenants_own_figures() {
    let dir = tempfile::tempdir().expect("dir");
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let other = TenantId::parse("other").expect("id");
    engine.create_tenant(&op(), &other, None).expect("create");
    let commits_before = engine.commit_latency().count();
    let records: Vec<NewRecord> = (0..3)
        .map(|i| rec(json!({"content": format!("note {i}")})))
        .collect();
    engine
        .put(&acme, &RequestScope::default(), records)
        .expect("put");
    assert!(engine.commit_latency().count() > commits_before);
    // One collection more than the defaults: the report counts acme's own.
    let extra = strata_types::CollectionName::parse("extra").expect("name");
    engine
        .create_collection(&acme, &extra, 4, strata_types::Metric::L2)
        .expect("collection");

    let report = engine.usage_report(&op()).expect("report").tenants;
    assert_eq!(report.len(), 2);
    for f in &report {
        let info = &f.info;
        let one = engine.tenant(&op(), &info.id).expect("tenant");
        assert_eq!(info.usage, one.usage, "{}", info.id);
    }
    let acme_usage = report
        .iter()
        .find(|t| t.info.id.as_str() == "acme")
        .and_then(|t| t.info.usage)
        .expect("acme usage");
    assert_eq!(acme_usage.records, 3);
    let other_usage = report
        .iter()
        .find(|t| t.info.id.as_str() == "other")
        .and_then(|t| t.info.usage)
        .expect("other usage");
    assert_eq!(acme_usage.collections, other_usage.collections + 1);

    let own = engine.own_usage(&acme).expect("own usage");
    assert_eq!(own.info.id.as_str(), "acme");
    assert_eq!(own.key, acme.key());
    assert_eq!(own.info.usage, Some(acme_usage));
}

#[test]
fn own_usage_needs_admin_and_a_live_tenant() {
    let dir = tempfile::tempdir().expect("dir");
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let meta = engine
        .tenant_meta(&TenantId::parse("acme").expect("id"))
        .expect("meta");
    let reader = TenantScope::for_tests(
        &meta,
        Grant {
            permissions: Permissions::of(&[Permission::Read, Permission::Write]),
            user_tokens: None,
            domains: None,
        },
    );
    assert!(matches!(
        engine.own_usage(&reader),
        Err(EngineError::PermissionDenied(Permission::Admin))
    ));
    let status = engine
        .suspend_tenant(&op(), acme.tenant())
        .expect("suspend")
        .status;
    assert_eq!(status, TenantStatus::Suspended);
    assert!(engine.own_usage(&acme).is_err());
    let report = engine.usage_report(&op()).expect("report");
    assert_eq!(
        report.tenants[0].info.status,
        TenantStatus::Suspended,
        "listed with its status"
    );
}

/// Rewrites stored state behind a closed engine, as disk corruption or a bad tool would.
fn tamper(dir: &std::path::Path, f: impl FnOnce(&mut strata_store::Writer<'_>)) {
    let store = strata_store::Store::open(&dir.join(strata_engine::DB_FILE)).expect("store");
    store
        .write(|w| {
            f(w);
            Ok::<_, strata_store::StoreError>(())
        })
        .expect("tamper");
}

#[test]
fn a_tenant_whose_profile_does_not_decode_is_named_not_fatal_to_the_report() {
    use strata_store::Reads;
    let dir = tempfile::tempdir().expect("dir");
    let (engine, _acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let broken = TenantId::parse("broken").expect("id");
    engine.create_tenant(&op(), &broken, None).expect("create");
    drop(engine);
    tamper(dir.path(), |w| {
        let mut meta = w.tenant(&broken).expect("read").expect("meta");
        meta.profile = json!({"status": "on-holiday", "weight": 1, "limits": {}})
            .as_object()
            .cloned()
            .expect("object");
        w.put_tenant(&meta).expect("write");
    });
    let (engine, _) = common::open_with_tenant(dir.path(), "globex", common::full_grant());
    let report = engine
        .usage_report(&op())
        .expect("one bad profile fails no report");
    let mut ids: Vec<&str> = report.tenants.iter().map(|t| t.info.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["acme", "globex"]);
    assert_eq!(report.unreadable, vec!["broken".to_owned()]);
    assert_eq!(
        engine.integrity_counts(&op()).expect("counts").normal,
        3,
        "every registered tenant is counted, the unreadable one too"
    );
}

#[test]
fn usage_pages_cover_every_tenant_once_in_id_order() {
    let dir = tempfile::tempdir().expect("dir");
    let (engine, _) = common::open_with_tenant(dir.path(), "t00", common::full_grant());
    for i in 1..7 {
        let id = TenantId::parse(format!("t{i:02}")).expect("id");
        engine.create_tenant(&op(), &id, None).expect("create");
    }
    let mut seen = Vec::new();
    let mut after: Option<TenantId> = None;
    let mut pages = 0;
    loop {
        let page = engine.usage_page(&op(), after.as_ref(), 3).expect("page");
        assert!(page.tenants.len() <= 3);
        seen.extend(page.tenants.iter().map(|t| t.info.id.to_string()));
        pages += 1;
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3, "3 + 3 + 1");
    let want: Vec<String> = (0..7).map(|i| format!("t{i:02}")).collect();
    assert_eq!(seen, want);
    // A page that ends exactly at the last tenant says there is no next one.
    let page = engine
        .usage_page(&op(), Some(&TenantId::parse("t03").expect("id")), 3)
        .expect("page");
    assert_eq!(page.tenants.len(), 3);
    assert_eq!(page.next_after, None);
}
