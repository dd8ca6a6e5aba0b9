//! An import against a tenant purged and created again while it ran: it fails, the new
//! tenant is left intact, and nothing the import wrote stays under its own storage key (the
//! purge that replaced it erased only what had been written by then). An import past its own
//! quotas restores the tenant as it was; imported audit rows carry no foreign identity as their own.

use strata_auth::OperatorScope;
use strata_types::{NewRecord, RequestScope, TenantId};

use crate::test_support::admin_scope;
use crate::{
    AuditQuery, AuditRow, Engine, EngineConfig, EngineError, ExportLine, IsolationLevel,
    MigrateRequest, MigrationState, NewTenantSpec, TenantLimits,
};

#[test]
fn a_failed_import_leaves_no_key_under_its_own_storage_key() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let acme = TenantId::parse("acme").unwrap();
    let lines = exported_tenant_with_three_records(&engine, "acme");

    let copy = TenantId::parse("copy").unwrap();
    let mut old_key = None;
    let during = lines.into_iter().enumerate().map(|(n, line)| {
        if n == 1 {
            // The import has created its tenant; it is purged and its id given to a new one
            // before the import writes its collections, records and audit rows.
            old_key = Some(engine.tenant_meta(&copy).unwrap().key);
            engine.purge_tenant(&op, &copy).unwrap();
            let spec = NewTenantSpec {
                display_name: Some("the new one".into()),
                ..Default::default()
            };
            engine.create_tenant_with(&op, &copy, spec).unwrap();
        }
        Ok(line)
    });
    assert!(engine.import_tenant(&op, &copy, during).is_err());
    let old_key = old_key.expect("the import reached its second line");

    // Nothing of the import's incarnation is left, in either check of its range.
    assert_eq!(engine.store.main_keys(old_key).unwrap(), 0);
    let r = engine.store.read().unwrap();
    assert_eq!(strata_store::check_tenant(&r, old_key).unwrap().keys, 0);
    drop(r);

    // The new incarnation is whole and verifies clean.
    let new = engine.tenant_meta(&copy).unwrap();
    assert_ne!(new.key, old_key);
    let info = engine.tenant(&op, &copy).unwrap();
    assert_eq!(info.display_name.as_deref(), Some("the new one"));
    let report = engine.verify_tenant(&op, &copy).unwrap();
    assert!(report.ok && report.keys > 0, "{report:?}");
    assert!(engine.verify_tenant(&op, &acme).unwrap().ok);
}

fn purge_and_recreate(engine: &Engine, op: &OperatorScope, id: &TenantId) {
    engine.purge_tenant(op, id).unwrap();
    let spec = NewTenantSpec {
        display_name: Some("the new one".into()),
        ..Default::default()
    };
    engine.create_tenant_with(op, id, spec).unwrap();
}

/// Once the import's tenant is purged, the import writes nothing more under its key: the
/// write that follows the purge fails, so a crash after it could leave no byte behind (the
/// final erase is only a backstop).
#[test]
fn an_import_writes_nothing_after_its_tenant_is_purged() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let lines = exported_tenant_with_three_records(&engine, "acme");
    assert!(lines.len() > 3, "{lines:?}");

    let copy = TenantId::parse("copy").unwrap();
    let mut old_key = None;
    // What was under the import's key each time the import asked for a line after the purge.
    let mut left_after_purge = Vec::new();
    let during = lines.into_iter().enumerate().map(|(n, line)| {
        if n == 1 {
            old_key = Some(engine.tenant_meta(&copy).unwrap().key);
            purge_and_recreate(&engine, &op, &copy);
        } else if let Some(k) = old_key {
            left_after_purge.push(engine.store.main_keys(k).unwrap());
        }
        Ok(line)
    });
    let e = engine.import_tenant(&op, &copy, during).unwrap_err();
    assert!(matches!(e, EngineError::IdConflict(_)), "{e:?}");
    // The line after the purge (a collection) was the last one read: its write failed.
    assert_eq!(left_after_purge, Vec::<u64>::new());
    assert_eq!(engine.store.main_keys(old_key.unwrap()).unwrap(), 0);
    assert!(engine.verify_tenant(&op, &copy).unwrap().ok);
}

/// An export names `partition`; the import's tenant is purged and created again once every
/// line is read, before the import moves it to that level: the new tenant is left at
/// `shared`, never migrated.
#[test]
fn an_import_never_migrates_the_tenant_that_replaced_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let acme = TenantId::parse("acme").unwrap();
    engine.create_tenant(&op, &acme, None).unwrap();
    let to = |target| MigrateRequest {
        target,
        index_params: None,
        dry_run: false,
    };
    engine
        .migrate_tenant(&op, &acme, to(IsolationLevel::Partition))
        .unwrap();
    let mut lines: Vec<ExportLine> = Vec::new();
    engine
        .export_tenant(&op, &acme, |l| {
            lines.push(l.clone());
            Ok(())
        })
        .unwrap();
    assert!(matches!(
        &lines[0],
        ExportLine::Tenant {
            isolation: IsolationLevel::Partition,
            ..
        }
    ));

    let copy = TenantId::parse("copy").unwrap();
    let mut replaced = false;
    let during = lines.into_iter().map(Ok).chain(std::iter::from_fn(|| {
        purge_and_recreate(&engine, &op, &copy);
        replaced = true;
        None
    }));
    let e = engine.import_tenant(&op, &copy, during).unwrap_err();
    assert!(replaced);
    assert!(matches!(e, EngineError::IdConflict(_)), "{e:?}");
    let info = engine.tenant(&op, &copy).unwrap();
    assert_eq!(info.display_name.as_deref(), Some("the new one"));
    assert_eq!(info.isolation, IsolationLevel::Shared);
    let status = engine.migration(&op, &copy).unwrap();
    assert_eq!(status.state, MigrationState::None, "{status:?}");
    assert!(engine.verify_tenant(&op, &copy).unwrap().ok);

    // Directly: a migration tied to a storage key the id no longer names is refused, for a
    // data move too, and leaves the tenant as it is.
    let stale = engine.tenant_meta(&acme).unwrap().key;
    let profile = crate::lifecycle::TenantProfile {
        isolation: IsolationLevel::Dedicated,
        ..Default::default()
    };
    let e = engine.import_level(&op, &copy, stale, profile).unwrap_err();
    assert!(matches!(e, EngineError::IdConflict(_)), "{e:?}");
    assert_eq!(
        engine.tenant(&op, &copy).unwrap().isolation,
        IsolationLevel::Shared
    );
}

/// Creates the tenant `id` with three records and returns its export.
fn exported_tenant_with_three_records(engine: &Engine, id: &str) -> Vec<ExportLine> {
    let op = OperatorScope::for_tests();
    let tenant = TenantId::parse(id).unwrap();
    engine.create_tenant(&op, &tenant, None).unwrap();
    let scope = admin_scope(engine, id);
    let records = (0..3)
        .map(|i| NewRecord {
            content: Some(format!("kept {i}")),
            vector: Some(vec![0.1 * i as f32 + 0.1; 384]),
            ..Default::default()
        })
        .collect();
    engine
        .put(&scope, &RequestScope::default(), records)
        .unwrap();
    let mut lines: Vec<ExportLine> = Vec::new();
    engine
        .export_tenant(&op, &tenant, |l| {
            lines.push(l.clone());
            Ok(())
        })
        .unwrap();
    lines
}

/// `lines` with the tenant line's limits replaced by `limits`.
fn with_limits(mut lines: Vec<ExportLine>, limits: TenantLimits) -> Vec<ExportLine> {
    match &mut lines[0] {
        ExportLine::Tenant { limits: l, .. } => *l = limits,
        other => panic!("the first line is not the tenant: {other:?}"),
    }
    lines
}

/// An export whose tenant is past its own limits (an operator lowered them below its usage)
/// imports whole, usage counted as writes count it: a backup of a tenant the server runs must
/// restore. Its next writes are refused by the quota they break, as they were before.
#[test]
fn an_import_restores_a_tenant_past_its_own_limits() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let lines = exported_tenant_with_three_records(&engine, "acme");
    let collections = lines
        .iter()
        .filter(|l| matches!(l, ExportLine::Collection(_)))
        .count() as u64;
    assert!(collections > 1, "{lines:?}");
    let copy = TenantId::parse("copy").unwrap();
    let below = TenantLimits {
        max_vectors: Some(2),
        max_storage_bytes: Some(100),
        max_collections: Some(collections - 1),
        ..Default::default()
    };
    let info = engine
        .import_tenant(&op, &copy, with_limits(lines, below).into_iter().map(Ok))
        .unwrap();
    let usage = info.usage.unwrap();
    assert_eq!((usage.vectors, usage.collections), (3, collections));
    // Its records entered the expiry index as they were written: complete from the start.
    let key = engine.tenant_meta(&copy).unwrap().key;
    let r = engine.store.read().unwrap();
    assert!(strata_store::ExpiryReads::expiry_built(&r, key).unwrap());
    drop(r);
    assert!(usage.storage_bytes > 100, "{usage:?}");
    let scope = admin_scope(&engine, "copy");
    let one_more = NewRecord {
        content: Some("one more".into()),
        vector: Some(vec![0.5; 384]),
        ..Default::default()
    };
    let refused = engine.put(&scope, &RequestScope::default(), vec![one_more]);
    assert!(
        matches!(refused, Err(EngineError::QuotaExceeded { .. })),
        "{refused:?}"
    );
    let name = strata_types::CollectionName::parse("more").unwrap();
    let refused = engine.create_collection(&scope, &name, 2, strata_types::Metric::L2);
    assert!(
        matches!(
            refused,
            Err(EngineError::QuotaExceeded {
                resource: "max_collections",
                ..
            })
        ),
        "{refused:?}"
    );
}

/// Collection lines the API would refuse are refused by an import too, naming the line, and
/// leave no tenant: a name defined twice (its records would be checked against one
/// definition and stored under the other: vectors of two lengths in one index) and memory
/// defaults out of range.
#[test]
fn an_import_refuses_collections_the_api_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let lines = exported_tenant_with_three_records(&engine, "acme");
    let first = lines
        .iter()
        .position(|l| matches!(l, ExportLine::Collection(_)))
        .unwrap();
    let ExportLine::Collection(defined) = &lines[first] else {
        unreachable!()
    };
    let mut twice = lines.clone();
    let mut other_dim = defined.clone();
    other_dim.dim += 5;
    twice.insert(first + 1, ExportLine::Collection(other_dim));
    // Its end line counted so, as an edited file would.
    if let Some(ExportLine::End(counts)) = twice.last_mut() {
        counts.collections += 1;
    }
    let mut bad_defaults = lines.clone();
    if let ExportLine::Collection(c) = &mut bad_defaults[first] {
        c.memory.recency_half_life_secs = Some(-1.0);
    }
    let copy = TenantId::parse("copy").unwrap();
    for (lines, expected) in [
        (
            twice,
            format!(
                "import line {}: collection {}: defined twice",
                first + 2,
                defined.name
            ),
        ),
        (
            bad_defaults,
            format!("import line {}: collection {}: ", first + 1, defined.name),
        ),
    ] {
        let got = engine.import_tenant(&op, &copy, lines.into_iter().map(Ok));
        assert!(
            matches!(&got, Err(EngineError::BadRequest(m)) if m.starts_with(&expected)),
            "{expected}: {got:?}"
        );
        assert!(engine.tenant_meta(&copy).is_err(), "a tenant was left");
    }
}

/// Imported audit rows stay as history, but as the importing tenant's rows: marked imported,
/// the source's tenant and actor kept only in that mark, no client address or request id.
#[test]
fn imported_audit_rows_carry_no_foreign_identity() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let mut lines = exported_tenant_with_three_records(&engine, "acme");
    let mut source_actors = Vec::new();
    for line in &mut lines {
        if let ExportLine::Audit(row) = line {
            row.client = Some("203.0.113.7:5000".into());
            row.request_id = Some("req-at-the-source".into());
            source_actors.push((row.action.clone(), row.actor.clone()));
        }
    }
    assert!(
        source_actors.iter().any(|(a, _)| a == "memory.put"),
        "{source_actors:?}"
    );
    let copy = TenantId::parse("copy").unwrap();
    engine
        .import_tenant(&op, &copy, lines.into_iter().map(Ok))
        .unwrap();
    let rows = engine
        .own_audit_rows(&admin_scope(&engine, "copy"), &AuditQuery::default())
        .unwrap();
    let imported: Vec<&AuditRow> = rows.iter().filter(|r| r.imported.is_some()).collect();
    assert_eq!(imported.len(), source_actors.len(), "{rows:?}");
    let acme = TenantId::parse("acme").unwrap();
    for row in &imported {
        assert_eq!(row.tenant.as_ref(), Some(&copy), "{row:?}");
        assert_eq!(row.actor, "imported", "{row:?}");
        assert_eq!((&row.client, &row.request_id), (&None, &None), "{row:?}");
        let from = row.imported.as_ref().unwrap();
        assert_eq!(from.tenant.as_ref(), Some(&acme), "{row:?}");
        assert!(
            source_actors.contains(&(row.action.clone(), from.actor.clone())),
            "{row:?}"
        );
    }
    // The import's own row is this server's, unmarked.
    assert!(
        rows.iter()
            .any(|r| r.action == "tenant.import" && r.imported.is_none()),
        "{rows:?}"
    );

    // Imported again, a row keeps its first source.
    let mut again = Vec::new();
    engine
        .export_tenant(&op, &copy, |l| {
            again.push(l.clone());
            Ok(())
        })
        .unwrap();
    let third = TenantId::parse("third").unwrap();
    engine
        .import_tenant(&op, &third, again.into_iter().map(Ok))
        .unwrap();
    let rows = engine
        .own_audit_rows(&admin_scope(&engine, "third"), &AuditQuery::default())
        .unwrap();
    let put = rows
        .iter()
        .find(|r| r.action == "memory.put")
        .expect("the memory.put row");
    assert_eq!(put.tenant.as_ref(), Some(&third));
    assert_eq!(
        put.imported.as_ref().and_then(|f| f.tenant.as_ref()),
        Some(&acme)
    );
}

/// A tenant whose import is still running is not exported: its file would look whole (its end
/// line counts what it holds) while short of the lines still to come.
#[test]
fn a_tenant_being_imported_is_not_exported() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let lines = exported_tenant_with_three_records(&engine, "source");
    let copy = TenantId::parse("copy").unwrap();
    let mut during = None;
    let feed = lines.into_iter().map(|l| {
        if matches!(l, ExportLine::Record(_)) && during.is_none() {
            during = Some(engine.export_tenant(&op, &copy, |_| Ok(())));
        }
        Ok(l)
    });
    engine.import_tenant(&op, &copy, feed).unwrap();
    let e = during.expect("a record line was read").unwrap_err();
    assert!(matches!(e, EngineError::IdConflict(_)), "{e:?}");
    // Once imported, it exports.
    engine.export_tenant(&op, &copy, |_| Ok(())).unwrap();
}

/// Exports of versions that accepted a burst without `max_qps` still import: the limits are
/// kept as they were (the burst still without effect), though a create or `PATCH` refuses them.
#[test]
fn an_import_keeps_a_burst_without_a_rate() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let lines = exported_tenant_with_three_records(&engine, "acme");
    let old = TenantLimits {
        burst: Some(7),
        ..Default::default()
    };
    let copy = TenantId::parse("copy").unwrap();
    let info = engine
        .import_tenant(
            &op,
            &copy,
            with_limits(lines, old.clone()).into_iter().map(Ok),
        )
        .unwrap();
    assert_eq!(info.limits, old);
}

/// A second pheromone or narrative line for the same key is refused naming its line, as a
/// second record or link of one id is, instead of replacing the first without a word.
#[test]
fn an_import_refuses_a_second_pheromone_or_narrative_for_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let mut lines = exported_tenant_with_three_records(&engine, "acme");
    // The end line is put back last, counting the lines added.
    let Some(ExportLine::End(counts)) = lines.pop() else {
        panic!("an export ends with its end line")
    };
    let record = lines
        .iter()
        .find_map(|l| match l {
            ExportLine::Record(r) => Some(r.id.clone()),
            _ => None,
        })
        .unwrap();
    let pheromone = ExportLine::Pheromone {
        memory_domain: strata_types::Domain::default_domain(),
        id: record,
        strength: 1.0,
        updated_at: 1,
        reinforcements: 1,
        exposures: 1,
    };
    let narrative = ExportLine::Narrative {
        memory_domain: strata_types::Domain::default_domain(),
        user_tokens: None,
        collection: strata_types::CollectionName::parse("text").unwrap(),
        vector: vec![0.1; 384],
        updates: 1,
        updated_at: 1,
    };
    let ending = |added: u64, is_pheromone: bool| {
        let mut c = counts;
        match is_pheromone {
            true => c.pheromones += added,
            false => c.narratives += added,
        }
        ExportLine::End(c)
    };
    for (i, twice) in [pheromone, narrative].into_iter().enumerate() {
        let copy = TenantId::parse(format!("copy{i}")).unwrap();
        let mut once = lines.clone();
        once.extend([twice.clone(), ending(1, i == 0)]);
        engine
            .import_tenant(&op, &copy, once.into_iter().map(Ok))
            .unwrap();
        let copy = TenantId::parse(format!("again{i}")).unwrap();
        let mut again = lines.clone();
        again.extend([twice.clone(), twice]);
        let n = again.len();
        again.push(ending(2, i == 0));
        match engine.import_tenant(&op, &copy, again.into_iter().map(Ok)) {
            Err(EngineError::BadRequest(m)) => {
                assert!(m.starts_with(&format!("import line {n}: a second")), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(engine.tenant_meta(&copy).is_err(), "no tenant was left");
    }
}

/// A link between records of two domains is refused by an import, naming its line, as a
/// request's link would be: no request could see or delete it.
#[test]
fn an_import_refuses_a_link_between_domains() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let id = TenantId::parse("acme").unwrap();
    engine.create_tenant(&op, &id, None).unwrap();
    let scope = admin_scope(&engine, "acme");
    for domain in ["a", "b"] {
        let req = RequestScope {
            memory_domain: Some(strata_types::Domain::parse(domain).unwrap()),
            ..RequestScope::default()
        };
        let record = NewRecord {
            id: Some(strata_types::RecordId::parse(format!("in-{domain}")).unwrap()),
            content: Some(format!("kept in {domain}")),
            vector: Some(vec![0.1; 384]),
            ..Default::default()
        };
        engine.put(&scope, &req, vec![record]).unwrap();
    }
    let mut lines: Vec<ExportLine> = Vec::new();
    engine
        .export_tenant(&op, &id, |l| {
            lines.push(l.clone());
            Ok(())
        })
        .unwrap();
    let Some(ExportLine::End(mut counts)) = lines.pop() else {
        panic!("an export ends with its end line")
    };
    lines.push(ExportLine::Link(strata_types::Link {
        source: strata_types::RecordId::parse("in-a").unwrap(),
        target: strata_types::RecordId::parse("in-b").unwrap(),
        relation: strata_types::Relation::parse("next").unwrap(),
        weight: 0.5,
        created_at: 1,
    }));
    let n = lines.len();
    counts.links += 1;
    lines.push(ExportLine::End(counts));
    let copy = TenantId::parse("copy").unwrap();
    match engine.import_tenant(&op, &copy, lines.into_iter().map(Ok)) {
        Err(EngineError::BadRequest(m)) => {
            assert!(m.starts_with(&format!("import line {n}: link:")), "{m}");
            assert!(m.contains("different domains"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(engine.tenant_meta(&copy).is_err(), "no tenant was left");
}

/// A refused export (an unknown tenant) is not recorded as one taken; an export taken is, in
/// the file it writes too.
#[test]
fn only_an_export_taken_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let ghost = TenantId::parse("ghost").unwrap();
    let refused = engine.export_tenant(&op, &ghost, |_| Ok(()));
    assert!(
        matches!(refused, Err(EngineError::TenantNotFound(_))),
        "{refused:?}"
    );
    let exports = || {
        let q = AuditQuery {
            action: Some("tenant.export".into()),
            ..Default::default()
        };
        engine.audit_rows(&op, &q).unwrap()
    };
    assert!(exports().is_empty(), "{:?}", exports());
    let lines = exported_tenant_with_three_records(&engine, "acme");
    assert_eq!(exports().len(), 1);
    assert!(
        lines
            .iter()
            .any(|l| matches!(l, ExportLine::Audit(row) if row.action == "tenant.export"))
    );
}

/// The records of tenant `id` (60 of them, `r0` … `r59`, in domain `default`) exported, with
/// `links` link lines between them appended before the end line (whose counts follow).
fn export_with_links(engine: &Engine, id: &TenantId, links: usize) -> Vec<ExportLine> {
    let op = OperatorScope::for_tests();
    engine.create_tenant(&op, id, None).unwrap();
    let scope = admin_scope(engine, id.as_str());
    let records = (0..60)
        .map(|i| NewRecord {
            id: Some(strata_types::RecordId::parse(format!("r{i}")).unwrap()),
            content: Some(format!("kept {i}")),
            vector: Some(vec![0.1 + i as f32 * 0.01; 384]),
            ..Default::default()
        })
        .collect();
    engine
        .put(&scope, &RequestScope::default(), records)
        .unwrap();
    let mut lines: Vec<ExportLine> = Vec::new();
    engine
        .export_tenant(&op, id, |l| {
            lines.push(l.clone());
            Ok(())
        })
        .unwrap();
    let Some(ExportLine::End(mut counts)) = lines.pop() else {
        panic!("an export ends with its end line")
    };
    let pairs = (0..60).flat_map(|s| (0..60).filter(move |t| *t != s).map(move |t| (s, t)));
    for (s, t) in pairs.take(links) {
        lines.push(ExportLine::Link(strata_types::Link {
            source: strata_types::RecordId::parse(format!("r{s}")).unwrap(),
            target: strata_types::RecordId::parse(format!("r{t}")).unwrap(),
            relation: strata_types::Relation::parse("next").unwrap(),
            weight: 0.5,
            created_at: 1,
        }));
    }
    counts.links += links as u64;
    lines.push(ExportLine::End(counts));
    lines
}

/// An import stores links a batch at a time as they come (more than one batch here), not
/// all of them held to the end; a record line after the links is refused, naming its line.
#[test]
fn an_import_stores_links_as_they_come_and_refuses_a_record_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let lines = export_with_links(&engine, &TenantId::parse("acme").unwrap(), 1_500);
    let copy = TenantId::parse("copy").unwrap();
    engine
        .import_tenant(&op, &copy, lines.clone().into_iter().map(Ok))
        .unwrap();
    let mut links = 0;
    engine
        .export_tenant(&op, &copy, |l| {
            links += u64::from(matches!(l, ExportLine::Link(_)));
            Ok(())
        })
        .unwrap();
    assert_eq!(links, 1_500);

    // A record moved behind the first link.
    let mut shuffled = lines;
    let record_at = shuffled
        .iter()
        .rposition(|l| matches!(l, ExportLine::Record(_)))
        .unwrap();
    let record = shuffled.remove(record_at);
    let first_link = shuffled
        .iter()
        .position(|l| matches!(l, ExportLine::Link(_)))
        .unwrap();
    shuffled.insert(first_link + 1, record);
    let other = TenantId::parse("other").unwrap();
    match engine.import_tenant(&op, &other, shuffled.into_iter().map(Ok)) {
        Err(EngineError::BadRequest(m)) => {
            let expected = format!(
                "import line {}: a record after the links (line {})",
                first_link + 2,
                first_link + 1
            );
            assert!(m.starts_with(&expected), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(engine.tenant_meta(&other).is_err(), "no tenant was left");
}
