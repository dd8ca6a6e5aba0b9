//! The delete of a collection in steps (`crate::collection_delete`): what it leaves, what a
//! marked collection refuses and hides, and a delete resumed after it was cut short.

use std::time::Duration;

use strata_auth::{OperatorScope, TenantScope};
use strata_store::{DeletingReads, Reads};
use strata_types::{
    CollectionName, Metric, NewLink, NewRecord, RecordId, RequestScope, SearchRequest, TenantId,
    TokenSelector, UserToken, related,
};

use super::PendingCollectionDelete;
use crate::scan::{Page, Vectors};
use crate::scan_steps::{StepSize, Stepped};
use crate::test_support::admin_scope;
use crate::{Engine, EngineConfig, EngineError, ExportLine};

fn doomed() -> CollectionName {
    CollectionName::parse("doomed").unwrap()
}

fn kept() -> CollectionName {
    CollectionName::parse("kept").unwrap()
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// Every principal's records of the default domain.
fn everyone() -> RequestScope {
    RequestScope {
        user_tokens: Some(TokenSelector::AllPrincipals),
        ..Default::default()
    }
}

fn id(s: &str) -> RecordId {
    RecordId::parse(s).unwrap()
}

fn records(c: &CollectionName, prefix: &str, n: usize) -> Vec<NewRecord> {
    (0..n)
        .map(|i| NewRecord {
            id: Some(id(&format!("{prefix}{i:03}"))),
            modality: Some(c.clone()),
            vector: Some(vec![1.0, i as f32]),
            content: Some(format!("note {i} of {prefix}")),
            // Some records of a principal, some tenant-shared.
            user_tokens: Some(if i % 2 == 0 {
                vec![UserToken::parse("u:a").unwrap()]
            } else {
                Vec::new()
            }),
            ..Default::default()
        })
        .collect()
}

fn link(source: &str, target: &str) -> NewLink {
    NewLink {
        source: id(source),
        target: id(target),
        relation: related(),
        weight: 1.0,
    }
}

/// Tenant `acme` with collection `kept` (10 records, `k000`…, linked in a chain) and nothing
/// else; its admin scope.
fn tenant(dir: &std::path::Path) -> (Engine, TenantScope) {
    let engine = Engine::open(dir, EngineConfig::default()).unwrap();
    engine
        .create_tenant(&OperatorScope::for_tests(), &acme(), None)
        .unwrap();
    let scope = admin_scope(&engine, "acme");
    engine
        .create_collection(&scope, &kept(), 2, Metric::Cosine)
        .unwrap();
    engine
        .put(&scope, &everyone(), records(&kept(), "k", 10))
        .unwrap();
    let chain = (1..10).map(|i| link(&format!("k{:03}", i - 1), &format!("k{i:03}")));
    engine
        .link_batch(&scope, &everyone(), chain.collect())
        .unwrap();
    (engine, scope)
}

/// Adds collection `doomed` with `n` records (`d000`…), each linked to the next and the first
/// few to records of `kept`, so deleting it removes links in both collections' records.
fn add_doomed(engine: &Engine, scope: &TenantScope, n: usize) {
    engine
        .create_collection(scope, &doomed(), 2, Metric::Cosine)
        .unwrap();
    for part in records(&doomed(), "d", n).chunks(100) {
        engine.put(scope, &everyone(), part.to_vec()).unwrap();
    }
    let mut links: Vec<NewLink> = (1..n)
        .map(|i| link(&format!("d{:03}", i - 1), &format!("d{i:03}")))
        .collect();
    links.extend((0..3).map(|i| link(&format!("d{i:03}"), &format!("k{i:03}"))));
    links.push(link("k009", "d000"));
    engine.link_batch(scope, &everyone(), links).unwrap();
}

/// What a test compares of the tenant before and after: every visible record of every
/// collection, each record's links, the collections, and the stored usage.
#[derive(Debug, PartialEq)]
struct Seen {
    records: Vec<strata_types::Record>,
    links: Vec<(String, Vec<String>, Vec<String>)>,
    collections: Vec<CollectionName>,
    usage: crate::verify::UsageCounts,
}

fn seen(engine: &Engine, scope: &TenantScope) -> Seen {
    let page = Page {
        after: None,
        limit: 1000,
    };
    let records = engine
        .scan_with(scope, &everyone(), None, page, Vectors::Read)
        .unwrap()
        .records;
    let links = records
        .iter()
        .map(|r| {
            let l = engine.record_links(scope, &everyone(), &r.id).unwrap();
            let ends = |v: Vec<strata_types::Link>, out: bool| {
                v.into_iter()
                    .map(|l| if out { l.target } else { l.source }.to_string())
                    .collect()
            };
            (
                r.id.to_string(),
                ends(l.outgoing, true),
                ends(l.incoming, false),
            )
        })
        .collect();
    let collections = engine
        .collections(scope)
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    let report = assert_verified(engine);
    Seen {
        records,
        links,
        collections,
        usage: report.usage_stored,
    }
}

/// Verifies tenant `acme`: it must have no problem; the report.
fn assert_verified(engine: &Engine) -> crate::VerifyReport {
    let report = engine
        .verify_tenant(&OperatorScope::for_tests(), &acme())
        .unwrap();
    assert!(report.ok, "{:?}", report.problems);
    report
}

fn begin(
    engine: &Engine,
    scope: &TenantScope,
    reads: u64,
    chunk: usize,
) -> PendingCollectionDelete {
    let mut pending = engine.begin_delete_collection(scope, &doomed()).unwrap();
    pending.size = StepSize {
        reads,
        time: Duration::from_secs(3600),
    };
    pending.chunk = chunk;
    pending
}

/// Runs every step; the answer and how many steps wrote.
fn finish(engine: &Engine, mut pending: PendingCollectionDelete) -> (u64, usize) {
    let mut writes = 0;
    loop {
        writes += usize::from(pending.writes_next());
        match engine.delete_collection_step(pending).unwrap() {
            Stepped::Done(n) => return (n, writes),
            Stepped::More(p) => pending = *p,
        }
    }
}

fn stored_of_doomed(engine: &Engine, scope: &TenantScope) -> usize {
    let r = engine.store.read().unwrap();
    r.stored_records(scope.key(), None)
        .unwrap()
        .filter(|rec| rec.as_ref().unwrap().modality == doomed())
        .count()
}

/// Feedback with a context on record `on` of collection `c`: it writes a narrative of `c`.
fn feedback_on(engine: &Engine, scope: &TenantScope, c: &CollectionName, on: &str) {
    let f = strata_types::FeedbackRequest {
        ids: vec![id(on)],
        shown: Vec::new(),
        vector: Some(vec![1.0, 0.5]),
        query: None,
        modality: Some(c.clone()),
    };
    let answer = engine.feedback(scope, &everyone(), &f).unwrap();
    assert!(answer.narrative_updated);
}

/// How many narratives of collection `c` the tenant stores, of any namespace and principal.
fn narratives_of(engine: &Engine, scope: &TenantScope, c: &CollectionName) -> usize {
    use strata_store::{AdaptiveItem, AdaptiveReads};
    let r = engine.store.read().unwrap();
    let rows = r.adaptive_rows(scope.key(), None).unwrap();
    rows.iter()
        .filter(|row| matches!(&row.item, AdaptiveItem::Narrative(_, n, _) if n == c))
        .count()
}

fn search(engine: &Engine, scope: &TenantScope, c: CollectionName) -> Result<usize, EngineError> {
    let s = SearchRequest {
        vector: Some(vec![1.0, 0.5]),
        k: 5,
        modality: Some(c),
        ..Default::default()
    };
    engine.search(scope, &everyone(), &s).map(|r| r.hits.len())
}

#[test]
fn a_delete_of_many_chunks_leaves_nothing_of_it_and_every_other_collection_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    // The index is loaded, so the drop of the collection's index is seen too.
    assert_eq!(search(&engine, &scope, kept()).unwrap(), 5);
    let before = seen(&engine, &scope);
    add_doomed(&engine, &scope, 45);
    assert_eq!(search(&engine, &scope, doomed()).unwrap(), 5);
    // Scan steps of 7 reads over 55 records, chunks of 10 records.
    let (n, writes) = finish(&engine, begin(&engine, &scope, 7, 10));
    assert_eq!(n, 45);
    // Five chunks and the last transaction.
    assert_eq!(writes, 6);
    assert_eq!(stored_of_doomed(&engine, &scope), 0);
    let r = engine.store.read().unwrap();
    assert_eq!(r.collections_deleting(scope.key()).unwrap(), Vec::new());
    drop(r);
    // Records, links, usage, the verify of keys and indexes: as before the collection existed.
    assert_eq!(seen(&engine, &scope), before);
    assert_eq!(search(&engine, &scope, kept()).unwrap(), 5);
    assert!(matches!(
        search(&engine, &scope, doomed()),
        Err(EngineError::CollectionNotFound(_))
    ));
    // Its name is free again.
    engine
        .create_collection(&scope, &doomed(), 3, Metric::L2)
        .unwrap();
    assert_verified(&engine);
}

#[test]
fn a_marked_collection_refuses_writes_and_searches_and_hides_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    let before = seen(&engine, &scope);
    add_doomed(&engine, &scope, 30);
    let mut pending = begin(&engine, &scope, 7, 10);
    // Scanned, then one chunk deleted, then stopped: the collection stays marked.
    while !pending.writes_next() {
        let Stepped::More(p) = engine.delete_collection_step(pending).unwrap() else {
            panic!("done before deleting")
        };
        pending = *p;
    }
    let Stepped::More(_) = engine.delete_collection_step(pending).unwrap() else {
        panic!("done after one chunk")
    };
    assert_eq!(stored_of_doomed(&engine, &scope), 20);
    let req = everyone();
    // Reads: get, list, count, links, export.
    assert!(matches!(
        engine.get(&scope, &req, &id("d020")),
        Err(EngineError::NotFound)
    ));
    assert_eq!(engine.count(&scope, &req, None).unwrap(), 10);
    let seen_now = seen(&engine, &scope);
    assert_eq!(seen_now.records, before.records);
    assert_eq!(seen_now.links, before.links);
    assert_eq!(seen_now.collections, before.collections);
    let mut exported = Vec::new();
    engine
        .export_tenant(&OperatorScope::for_tests(), &acme(), |l| {
            exported.push(l.clone());
            Ok(())
        })
        .unwrap();
    let of_doomed = |l: &ExportLine| match l {
        ExportLine::Collection(c) => c.name == doomed(),
        ExportLine::Record(r) => r.modality == doomed(),
        ExportLine::Link(l) => {
            l.source.as_str().starts_with('d') || l.target.as_str().starts_with('d')
        }
        _ => false,
    };
    assert!(!exported.iter().any(of_doomed), "{exported:?}");
    assert!(exported.iter().any(|l| matches!(l, ExportLine::Record(_))));
    // Writes and searches naming it: as for a missing collection.
    let into_doomed = records(&doomed(), "x", 1);
    assert!(matches!(
        engine.put(&scope, &req, into_doomed),
        Err(EngineError::CollectionNotFound(_))
    ));
    assert!(matches!(
        search(&engine, &scope, doomed()),
        Err(EngineError::CollectionNotFound(_))
    ));
    // A hidden record can be neither patched nor deleted by id (a patch cannot move a record
    // to another collection).
    let patch = strata_types::RecordPatch {
        content: Some("changed".into()),
        ..Default::default()
    };
    assert!(matches!(
        engine.patch(&scope, &req, &id("d020"), patch),
        Err(EngineError::NotFound)
    ));
    assert!(matches!(
        engine.delete(&scope, &req, &id("d020")),
        Err(EngineError::NotFound)
    ));
    // Its name is taken, saying how to free it.
    match engine.create_collection(&scope, &doomed(), 2, Metric::Cosine) {
        Err(e @ EngineError::CollectionDeleteUnfinished(_)) => {
            assert!(e.to_string().contains("repeating the DELETE"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // A write into another collection with a hidden record's id takes the id: the hidden
    // record goes, with its links.
    let mut taken = records(&kept(), "k", 1);
    taken[0].id = Some(id("d025"));
    engine.put(&scope, &req, taken).unwrap();
    assert_eq!(
        engine.get(&scope, &req, &id("d025")).unwrap().modality,
        kept()
    );
    let links = engine.record_links(&scope, &req, &id("d025")).unwrap();
    assert!(links.outgoing.is_empty() && links.incoming.is_empty());
    // A verify while marked: no problem (the remaining records still count in the usage).
    let report = assert_verified(&engine);
    assert_eq!(report.usage_stored.records, 10 + 1 + 19);
}

#[test]
fn a_delete_cut_short_is_finished_by_the_next_one_which_counts_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    let before = seen(&engine, &scope);
    add_doomed(&engine, &scope, 30);
    // Stopped right after the mark, then after two chunks.
    drop(begin(&engine, &scope, 7, 10));
    assert_eq!(stored_of_doomed(&engine, &scope), 30);
    let mut pending = begin(&engine, &scope, 7, 10);
    let mut chunks = 0;
    while chunks < 2 {
        chunks += usize::from(pending.writes_next());
        let Stepped::More(p) = engine.delete_collection_step(pending).unwrap() else {
            panic!("done too soon")
        };
        pending = *p;
    }
    drop(pending);
    assert_eq!(stored_of_doomed(&engine, &scope), 10);
    // Reopened, as after a crash: still marked, still hidden, and the repeat finishes it.
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let scope = admin_scope(&engine, "acme");
    assert!(matches!(
        search(&engine, &scope, doomed()),
        Err(EngineError::CollectionNotFound(_))
    ));
    assert_eq!(engine.count(&scope, &everyone(), None).unwrap(), 10);
    assert_eq!(engine.delete_collection(&scope, &doomed()).unwrap(), 10);
    assert_eq!(stored_of_doomed(&engine, &scope), 0);
    assert_eq!(seen(&engine, &scope), before);
    // Once finished, a repeat is a missing collection.
    assert!(matches!(
        engine.delete_collection(&scope, &doomed()),
        Err(EngineError::CollectionNotFound(_))
    ));
}

/// Export and import, and moves between isolation levels, take a marked collection as they
/// find it: the import holds none of it, the moves carry the mark, and verify finds no problem
/// anywhere on the way.
#[test]
fn a_marked_collection_survives_export_import_and_moves_between_levels() {
    use crate::{IsolationLevel, MigrateRequest};
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    let before = seen(&engine, &scope);
    add_doomed(&engine, &scope, 30);
    // Narratives of both collections: the marked one's went with its mark, so the export,
    // which holds no collection of it, holds none of them either (the import would refuse one).
    feedback_on(&engine, &scope, &kept(), "k000");
    feedback_on(&engine, &scope, &doomed(), "d000");
    let mut pending = begin(&engine, &scope, 7, 10);
    while !pending.writes_next() {
        let Stepped::More(p) = engine.delete_collection_step(pending).unwrap() else {
            panic!("done before deleting")
        };
        pending = *p;
    }
    drop(pending);
    let op = OperatorScope::for_tests();
    let ok = |id: &TenantId| {
        let report = engine.verify_tenant(&op, id).unwrap();
        assert!(report.ok, "{id}: {:?}", report.problems);
    };
    ok(&acme());
    let mut lines = Vec::new();
    engine
        .export_tenant(&op, &acme(), |l| {
            lines.push(Ok(l.clone()));
            Ok(())
        })
        .unwrap();
    let copy = TenantId::parse("copy").unwrap();
    engine.import_tenant(&op, &copy, lines).unwrap();
    ok(&copy);
    let copied = admin_scope(&engine, "copy");
    assert_eq!(seen(&engine, &copied).records, before.records);
    assert_eq!(narratives_of(&engine, &copied, &kept()), 1);
    assert_eq!(narratives_of(&engine, &copied, &doomed()), 0);
    let migrate = |target| {
        let req = MigrateRequest {
            target,
            index_params: None,
            dry_run: false,
        };
        engine.migrate_tenant(&op, &acme(), req).unwrap();
    };
    migrate(IsolationLevel::Dedicated);
    ok(&acme());
    let scope = admin_scope(&engine, "acme");
    assert_eq!(engine.count(&scope, &everyone(), None).unwrap(), 10);
    assert_eq!(engine.delete_collection(&scope, &doomed()).unwrap(), 30);
    assert_eq!(narratives_of(&engine, &scope, &doomed()), 0);
    ok(&acme());
    migrate(IsolationLevel::Shared);
    ok(&acme());
    let scope = admin_scope(&engine, "acme");
    assert_eq!(seen(&engine, &scope), before);
}

/// Two overlapping deletes of one name: the second resumed the first's mark; the first
/// finished, and a client created the collection again with a record of an id the second had
/// found. The second then stops, writing nothing: the new record, the new collection and its
/// loaded index stay.
#[test]
fn a_delete_overtaken_by_another_of_the_same_name_leaves_the_collection_created_since() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    add_doomed(&engine, &scope, 30);
    let first = begin(&engine, &scope, 7, 10);
    let mut second = begin(&engine, &scope, 7, 10);
    // The second has found its records and is about to delete them.
    while !second.writes_next() {
        let Stepped::More(p) = engine.delete_collection_step(second).unwrap() else {
            panic!("done before deleting")
        };
        second = *p;
    }
    assert_eq!(finish(&engine, first).0, 30);
    // A collection's incarnation is told by its row, whose creation time is in milliseconds.
    std::thread::sleep(Duration::from_millis(2));
    engine
        .create_collection(&scope, &doomed(), 2, Metric::Cosine)
        .unwrap();
    engine
        .put(&scope, &everyone(), records(&doomed(), "d", 1))
        .unwrap();
    // The index of the new collection is loaded, so a drop of it would be seen.
    assert_eq!(search(&engine, &scope, doomed()).unwrap(), 1);
    let delete_rows = |e: &Engine| {
        e.own_audit_rows(&scope, &crate::audit::AuditQuery::default())
            .unwrap()
            .into_iter()
            .filter(|r| r.action == "collection.delete")
            .count()
    };
    let rows_before = delete_rows(&engine);
    let (n, _) = finish(&engine, second);
    assert_eq!(n, 0);
    assert_eq!(delete_rows(&engine), rows_before, "it wrote nothing");
    assert_eq!(
        engine
            .get(&scope, &everyone(), &id("d000"))
            .unwrap()
            .modality,
        doomed()
    );
    assert_eq!(search(&engine, &scope, doomed()).unwrap(), 1);
    assert_eq!(stored_of_doomed(&engine, &scope), 1);
    assert_verified(&engine);
}

/// A delete takes the collection's narratives with it (the mark's drop of the collection
/// removes them, `feedback::forget_removed`); the other collections keep theirs.
#[test]
fn a_finished_delete_leaves_no_narrative_of_its_collection() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    add_doomed(&engine, &scope, 5);
    feedback_on(&engine, &scope, &kept(), "k000");
    feedback_on(&engine, &scope, &doomed(), "d000");
    assert_eq!(narratives_of(&engine, &scope, &doomed()), 1);
    drop(begin(&engine, &scope, 7, 10));
    assert_eq!(
        narratives_of(&engine, &scope, &doomed()),
        0,
        "gone with the mark"
    );
    assert_eq!(engine.delete_collection(&scope, &doomed()).unwrap(), 5);
    assert_eq!(narratives_of(&engine, &scope, &doomed()), 0);
    assert_eq!(narratives_of(&engine, &scope, &kept()), 1);
    assert_verified(&engine);
}

/// What the collection's index kept beside its records (index snapshot, search image,
/// change-log mark) goes with the mark, so nothing names an index of a missing collection
/// while its delete is unfinished; the other collections' stay, and a load after the mark
/// serves them.
#[test]
fn the_mark_deletes_what_its_index_kept_beside_its_records() {
    use strata_store::ChangeLogReads;
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    add_doomed(&engine, &scope, 5);
    assert_eq!(search(&engine, &scope, doomed()).unwrap(), 5);
    assert_eq!(engine.persist_indexes().unwrap(), 1);
    let kept_beside = |e: &Engine, c: &CollectionName| {
        let r = e.store.read().unwrap();
        let key = scope.key();
        [
            r.blob(key, &format!("{}{c}", crate::snapshot::BLOB_PREFIX))
                .unwrap()
                .is_some(),
            r.blob(key, &format!("{}{c}", crate::search_image::BLOB_PREFIX))
                .unwrap()
                .is_some(),
            r.change_mark(key, c).unwrap().is_some(),
        ]
    };
    assert_eq!(kept_beside(&engine, &doomed()), [true; 3]);
    drop(begin(&engine, &scope, 7, 10));
    assert_eq!(kept_beside(&engine, &doomed()), [false; 3]);
    assert_eq!(kept_beside(&engine, &kept()), [true; 3]);
    // Loaded again while marked: the other collection is served; verify's one warning is the
    // delete cut short, with the records it still hides (and charges).
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let scope = admin_scope(&engine, "acme");
    assert_eq!(search(&engine, &scope, kept()).unwrap(), 5);
    let report = assert_verified(&engine);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].starts_with(&format!(
            "collection {} is being deleted: 5 of its records remain",
            doomed()
        )),
        "{:?}",
        report.warnings
    );
    assert_eq!(engine.delete_collection(&scope, &doomed()).unwrap(), 5);
    assert_eq!(kept_beside(&engine, &kept()), [true; 3]);
    // A mark written by an older build left the saved index: the last transaction takes it.
    add_doomed(&engine, &scope, 5);
    assert_eq!(search(&engine, &scope, doomed()).unwrap(), 5);
    engine.persist_indexes().unwrap();
    assert_eq!(kept_beside(&engine, &doomed()), [true; 3]);
    let key = scope.key();
    engine
        .store
        .write(|w| w.mark_collection_deleting(key, &doomed()))
        .unwrap();
    assert_eq!(engine.delete_collection(&scope, &doomed()).unwrap(), 5);
    assert_eq!(kept_beside(&engine, &doomed()), [false; 3]);
}

/// A collection whose memory defaults hold a float that does not survive a second encoding bit
/// for bit (serde_json's default parser may round such a value differently once re-encoded) is
/// deleted whole by its first delete: the steps compare with the marker as stored.
#[test]
fn a_collection_with_an_unstable_float_is_deleted_by_its_first_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    let memory = strata_types::MemoryDefaults {
        initial_confidence: Some(5.740227352895624e-09),
        ..Default::default()
    };
    engine
        .create_collection_full(
            &scope,
            &doomed(),
            crate::CollectionSpec {
                dim: 2,
                metric: Metric::Cosine,
                analyzer: strata_types::TextAnalyzer::Standard,
                memory,
                embed: false,
            },
        )
        .unwrap();
    engine
        .put(&scope, &everyone(), records(&doomed(), "d", 25))
        .unwrap();
    let (deleted, _) = finish(&engine, begin(&engine, &scope, 7, 10));
    assert_eq!(deleted, 25);
    assert_eq!(stored_of_doomed(&engine, &scope), 0);
    let r = engine.store.read().unwrap();
    assert!(
        r.collection_deleting(scope.key(), &doomed())
            .unwrap()
            .is_none()
    );
    assert!(r.collection(scope.key(), &doomed()).unwrap().is_none());
}
