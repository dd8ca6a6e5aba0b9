//! `Engine::verify_tenant`: the operator's isolation and integrity check of one tenant.
//!
//! Checks, on one consistent view (the tenant's writes held back meanwhile):
//! - every key in the tenant's range is one of its well-formed keys and decodes, and the
//!   scope-index and dedup entries agree with the records (`strata_store::check_tenant`);
//! - its registry row decodes, and so do its profile and its own integrity policy (which is
//!   decoded only where it is used, so that nothing else would notice its damage); a problem
//!   names the repair, and the rest is still checked where it can be;
//! - the tenant's storage key belongs to it alone in the registry;
//! - its data lives on exactly one side: in its own file, with no key left in the main file,
//!   when it is `dedicated`; in the main file, with no file of its own, otherwise;
//! - every blob decodes: usage, data version, index snapshots (a snapshot that does not decode
//!   is a warning: it is derived state, rebuilt from the records at the next load), and the
//!   graph file a snapshot names is read and checked as a load reads it (a warning too);
//! - the usage counters equal a recount of the records;
//! - when its indexes are loaded, they hold exactly the stored records (ids, fields, vectors:
//!   each indexed vector, read where searches read it, equals the stored one) and each graph
//!   holds exactly the collection's vectors.

use std::collections::HashMap;

use serde::Serialize;
use strata_auth::OperatorScope;
use strata_store::{DeletingReads, Reader, Reads, Store, StoreError, TenantKey};
use strata_types::{CollectionName, Record, TenantId};

use crate::lifecycle::{self, TenantProfile, USAGE_BLOB, Usage};
use crate::slot_doc::SlotDoc;
use crate::snapshot::{self, BLOB_PREFIX, VERSION_BLOB};
use crate::tenant_index::TenantIndex;
use crate::{Engine, EngineError};

/// Usage counters as stored and as recounted from the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsageCounts {
    pub records: u64,
    pub vectors: u64,
    pub storage_bytes: u64,
}

impl From<Usage> for UsageCounts {
    fn from(u: Usage) -> Self {
        UsageCounts {
            records: u.records,
            vectors: u.vectors,
            storage_bytes: u.storage_bytes,
        }
    }
}

/// The report of `POST /v1/admin/tenants/{id}/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub tenant: TenantId,
    /// No problems found (warnings do not count).
    pub ok: bool,
    /// Keys in the tenant's storage range, all checked.
    pub keys: u64,
    pub records: u64,
    pub collections: u64,
    pub usage_stored: UsageCounts,
    pub usage_recounted: UsageCounts,
    /// Whether the tenant's indexes were loaded (and so compared with storage).
    pub indexes_loaded: bool,
    /// Whether its data lives in its own file (the `dedicated` level).
    pub dedicated_file: bool,
    /// Up to 100 problems; `problem_count` counts them all.
    pub problems: Vec<String>,
    pub problem_count: u64,
    /// Things that are not wrong but worth knowing (e.g. a snapshot that will be rebuilt).
    pub warnings: Vec<String>,
}

impl VerifyReport {
    pub(crate) fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < 100 {
            self.problems.push(p);
        }
    }
}

impl Engine {
    /// Verifies one tenant's stored data, usage counters and loaded indexes; see the module
    /// docs. Problems are reported, not repaired.
    pub fn verify_tenant(
        &self,
        _op: &OperatorScope,
        id: &TenantId,
    ) -> Result<VerifyReport, EngineError> {
        // Read here rather than through `tenant_meta`, so that a `Corrupt` error can only be
        // the registry row's own decoding, not some other read's.
        let read = self.store.read()?.tenant(id);
        let meta = match read {
            Ok(Some(meta)) => meta,
            Ok(None) => return Err(EngineError::TenantNotFound(id.clone())),
            // A registry row that does not decode names no storage key: nothing else can be
            // checked, but that is the finding, not a failure of the verify.
            Err(StoreError::Corrupt(why)) => {
                let mut report = VerifyReport::empty(id);
                report.problem(damaged_registry_row(&why));
                return Ok(report);
            }
            Err(e) => return Err(e.into()),
        };
        let mut report = self
            .indexes
            .with_consistent(&self.store, meta.key, id, |r, index| {
                verify(&self.store, r, id, meta.key, index)
            })?;
        match TenantProfile::of(&meta) {
            Ok(profile) => {
                // Decoded only where it is used, so nothing else would notice it here.
                if let Err(e) = profile.own_integrity_policy(id) {
                    report.problem(e.to_string());
                }
                self.check_placement(&meta, &mut report)?;
            }
            Err(e) => report.problem(format!(
                "{e}: the tenant's requests fail and its placement was not checked; restore \
                 the registry row from a backup, or purge the tenant"
            )),
        }
        report.ok = report.problem_count == 0;
        Ok(report)
    }
}

/// The problem reported for a registry row that does not decode (`why`).
fn damaged_registry_row(why: &str) -> String {
    format!(
        "registry row does not decode ({why}): its storage key is unknown, so nothing else was \
         checked; the tenant's requests fail until the row is restored from a backup"
    )
}

impl VerifyReport {
    pub(crate) fn empty(id: &TenantId) -> VerifyReport {
        VerifyReport {
            tenant: id.clone(),
            ok: false,
            keys: 0,
            records: 0,
            collections: 0,
            usage_stored: Usage::default().into(),
            usage_recounted: Usage::default().into(),
            indexes_loaded: false,
            dedicated_file: false,
            problems: Vec::new(),
            problem_count: 0,
            warnings: Vec::new(),
        }
    }
}

fn verify(
    store: &Store,
    r: &Reader,
    id: &TenantId,
    key: TenantKey,
    index: Option<&TenantIndex>,
) -> Result<VerifyReport, EngineError> {
    let keys = strata_store::check_tenant(r, key)?;
    let mut report = VerifyReport {
        keys: keys.keys,
        records: keys.records,
        collections: keys.collections,
        indexes_loaded: index.is_some(),
        ..VerifyReport::empty(id)
    };
    report.problem_count = keys.problem_count - keys.problems.len() as u64;
    for p in keys.problems {
        report.problem(p);
    }
    // Each row decoded on its own: another tenant's damaged row must not fail this verify.
    for (raw, other) in r.tenants_page(None, usize::MAX)? {
        match other {
            Ok(other) if other.key == key && &other.id != id => {
                report.problem(format!("storage key shared with tenant {}", other.id));
            }
            Ok(_) => {}
            Err(e) if raw != id.as_str() => report.warnings.push(format!(
                "registry row {raw:?} does not decode ({e}): not checked for a shared storage key"
            )),
            // This tenant's own row, decoded before this view was taken: rewritten since.
            Err(_) => {}
        }
    }
    check_blobs(store, r, key, &keys.blobs, &mut report);

    // Records, by collection; the recount of usage. A collection being deleted keeps its
    // records charged until they go, but has no index to check them against.
    let deleting: Vec<CollectionName> = match r.collections_deleting(key) {
        Ok(d) => d.into_iter().map(|c| c.name).collect(),
        Err(_) => Vec::new(), // reported by the key check
    };
    let mut by_collection: HashMap<CollectionName, Vec<Record>> = HashMap::new();
    let mut hidden: HashMap<CollectionName, u64> = HashMap::new();
    let mut recount = Usage::default();
    for rec in r.stored_records(key, None)? {
        let Ok(rec) = rec else { continue }; // reported by the key check
        // Writes refuse such times now; a record stored before they did would make the
        // tenant's export refused by import.
        if let Err(e) = crate::transfer::check_record_times(&rec) {
            report.warnings.push(format!(
                "record {}: {e}; the tenant's export would not import until the record is \
                 patched or deleted",
                rec.id
            ));
        }
        recount.count_record(&rec);
        if deleting.contains(&rec.modality) {
            *hidden.entry(rec.modality.clone()).or_default() += 1;
            continue;
        }
        by_collection
            .entry(rec.modality.clone())
            .or_default()
            .push(rec);
    }
    // A delete of a collection cut short (by a restart, which does not resume it) leaves its
    // records hidden from every read and charged to the tenant until it is deleted again.
    for name in &deleting {
        report.warnings.push(format!(
            "collection {name} is being deleted: {} of its records remain, hidden from every \
             read and still counted in usage; unless its delete is still running, delete the \
             collection again to finish it",
            hidden.get(name).copied().unwrap_or(0)
        ));
    }
    for link in strata_store::LinkReads::all_links(r, key)? {
        let Ok(link) = link else { continue }; // reported by the key check
        recount.count_link(&link);
    }
    report.usage_recounted = recount.into();
    match lifecycle::usage(r, key) {
        Ok(stored) => {
            report.usage_stored = stored.into();
            if stored != recount {
                report.problem(format!(
                    "usage counters {stored:?} differ from the recount {recount:?}"
                ));
            }
        }
        Err(e) => report.problem(format!("usage: {e}")),
    }
    if let Some(index) = index {
        check_index(r, key, index, &by_collection, &mut report)?;
    }
    report.ok = report.problem_count == 0;
    Ok(report)
}

fn check_blobs(
    store: &Store,
    r: &Reader,
    key: TenantKey,
    blobs: &[String],
    report: &mut VerifyReport,
) {
    for name in blobs {
        let bytes = match r.blob(key, name) {
            Ok(Some(b)) => b,
            _ => continue,
        };
        if name == USAGE_BLOB {
            continue; // checked against the recount
        } else if name == VERSION_BLOB {
            if bytes.len() != 8 {
                report.problem(format!("data version: {} bytes, not 8", bytes.len()));
            }
        } else if let Some(collection) = name.strip_prefix(BLOB_PREFIX) {
            match snapshot::decode(&bytes) {
                Err(e) => report.warnings.push(format!(
                    "index snapshot of {collection} does not decode ({e}); it is rebuilt from \
                     the records at the next load"
                )),
                Ok(snap) => {
                    if let Some(snapshot::SavedGraph::File(f)) = &snap.graph
                        && let Err(e) = check_graph_file(store, r, key, collection, f)
                    {
                        report.warnings.push(format!(
                            "graph of {collection}: {e}; it is rebuilt at the next load"
                        ));
                    }
                }
            }
        } else if let Some(decoded) = crate::shares::check_blob(name, &bytes) {
            if let Err(e) = decoded {
                report.problem(format!("share row {name:?}: {e}"));
            }
        } else if let Some(collection) = name.strip_prefix(crate::reembed_record::BLOB_PREFIX) {
            if let Err(e) = crate::reembed_record::check(&bytes) {
                report.problem(format!(
                    "re-embed status of {collection}: {e} (only a report: a new re-embed of \
                     the collection replaces it)"
                ));
            }
        } else if let Some(collection) = name.strip_prefix(crate::search_image::BLOB_PREFIX) {
            // A large image is in a file the row names: that file is the image checked.
            // A small one is in its row, after the row's checksum.
            let image = match crate::search_image::named_file(&bytes) {
                None => crate::search_image::inline_image(bytes),
                Some(file) => file.and_then(|f| crate::graph_file::read_checked(store, key, &f)),
            };
            let bytes = match image {
                Ok(bytes) => bytes,
                Err(e) => {
                    report.warnings.push(format!(
                        "search image of {collection}: {e}; it is rebuilt from the records \
                         at the next load"
                    ));
                    continue;
                }
            };
            if let Some(format) = crate::search_image::older_format(&bytes) {
                report.warnings.push(format!(
                    "search image of {collection} was written by an older version (format \
                     {format}); it is rebuilt from the records at the next load"
                ));
            } else if let Err(e) = crate::search_image::check(&bytes) {
                report.warnings.push(format!(
                    "search image of {collection} does not decode ({e}); it is rebuilt from \
                     the records at the next load"
                ));
            }
        } else {
            report.problem(format!("unknown blob {name:?}"));
        }
    }
}

/// Reads the graph file a snapshot names as a load would (length, checksum, closed decode).
fn check_graph_file(
    store: &Store,
    r: &Reader,
    key: TenantKey,
    collection: &str,
    f: &crate::graph_file::GraphFile,
) -> Result<(), EngineError> {
    let name = CollectionName::parse(collection)
        .map_err(|e| EngineError::Index(format!("collection name: {e}")))?;
    let c = r
        .collection(key, &name)?
        .ok_or_else(|| EngineError::Index("no such collection".into()))?;
    let metric = crate::collection_index::index_metric(c.metric);
    crate::graph_file::load(store, key, f, c.dim as usize, metric, Default::default()).map(|_| ())
}

fn check_index(
    r: &Reader,
    key: TenantKey,
    index: &TenantIndex,
    by_collection: &HashMap<CollectionName, Vec<Record>>,
    report: &mut VerifyReport,
) -> Result<(), EngineError> {
    let stored: Vec<CollectionName> = r.collections(key)?.into_iter().map(|c| c.name).collect();
    for name in index.collections.keys() {
        if !stored.contains(name) {
            report.problem(format!("index: collection {name} is loaded but not stored"));
        }
    }
    let none = Vec::new();
    for name in &stored {
        let records = by_collection.get(name).unwrap_or(&none);
        let Some(ci) = index.collections.get(name) else {
            if !records.is_empty() {
                report.problem(format!("index: collection {name} is stored but not loaded"));
            }
            continue;
        };
        let loaded: HashMap<&strata_types::RecordId, (u32, &SlotDoc)> = ci
            .docs
            .iter()
            .enumerate()
            .filter_map(|(slot, d)| Some((&d.as_ref()?.id, (slot as u32, d.as_ref()?))))
            .collect();
        if loaded.len() != records.len() || ci.live.len() != records.len() as u64 {
            report.problem(format!(
                "index: {name} holds {} records, storage {}",
                loaded.len(),
                records.len()
            ));
        }
        for p in ci
            .names
            .check_references(ci.docs.iter().flatten().map(|d| &d.scope))
        {
            report.problem(format!("index: {name}: {p}"));
        }
        let mut vectors = 0u64;
        for rec in records {
            let Some(&(slot, doc)) = loaded.get(&rec.id) else {
                report.problem(format!(
                    "index: {name}/{} is stored but not indexed",
                    rec.id
                ));
                continue;
            };
            if !doc.describes(rec, &ci.names) {
                report.problem(format!("index: {name}/{} differs from storage", rec.id));
            }
            if rec.vector.is_some() {
                vectors += 1;
            }
            if let Some(why) = vector_mismatch(ci, slot, rec.vector.as_deref()) {
                report.problem(format!("index: {name}/{}: {why}", rec.id));
            }
        }
        if ci.with_vector.len() != vectors {
            report.problem(format!(
                "index: {name} holds {} vectors, storage {vectors}",
                ci.with_vector.len()
            ));
        }
        if let Some(g) = &ci.graph
            && ci.building.is_none()
            && g.len() as u64 != ci.with_vector.len()
        {
            report.problem(format!(
                "index: {name} graph holds {} vectors, the collection {}",
                g.len(),
                ci.with_vector.len()
            ));
        }
    }
    Ok(())
}

/// How the vectors searches use for `slot` differ from the record's stored `vector`,
/// normalised as the index stores it; `None` when they agree. Two copies may be read: the one
/// `CollectionIndex::vector` gives (the engine's copy, or the graph's once it holds them), and
/// the graph's own when the collection keeps both (a graph built while its vectors stayed
/// copied), which graph searches rank by. Searches rank by these, so one that drifted from
/// storage (a load or a save gone wrong, memory damaged in place) ranks the record by a
/// vector it does not have.
fn vector_mismatch(
    ci: &crate::collection_index::CollectionIndex,
    slot: u32,
    stored: Option<&[f32]>,
) -> Option<String> {
    let indexed = ci.with_vector.contains(slot);
    let stored = match (stored, indexed) {
        (None, false) => return None,
        (None, true) => return Some("indexed with a vector, stored without one".into()),
        (Some(_), false) => return Some("stored with a vector, indexed without one".into()),
        (Some(v), true) => v,
    };
    let mut want = stored.to_vec();
    ci.metric.normalize_for_index(&mut want);
    let got = match ci.vector(slot) {
        Ok(v) => v,
        Err(e) => return Some(format!("its indexed vector cannot be read: {e}")),
    };
    if let Some(why) = differs(&got, &want) {
        return Some(format!("its indexed vector {why}"));
    }
    // The graph's own copy, when `vector` read the engine's. Not while a build or a compaction
    // replaces the graph: the one installed may lag until the new one is.
    if let Some(g) = ci.graph.as_ref().filter(|_| ci.building.is_none())
        && ci.has_vector_copy()
    {
        let mut in_graph = vec![0.0; want.len()];
        return match g.get(slot, &mut in_graph) {
            Ok(true) => {
                differs(&in_graph, &want).map(|why| format!("its vector in the graph {why}"))
            }
            Ok(false) => Some("its vector is missing from the graph".into()),
            Err(e) => Some(format!("its vector in the graph cannot be read: {e}")),
        };
    }
    None
}

/// How `got` differs from `want`, if it does beyond rounding: both come from the same floats,
/// normalised once for the engine's copy and again by the graph on insert (and once more by a
/// compaction that rebuilds from the graph), which moves a unit vector's component by about
/// 1e-7 at most; the tolerance keeps that from being reported as damage.
fn differs(got: &[f32], want: &[f32]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!(
            "has {} dimensions, the stored one {}",
            got.len(),
            want.len()
        ));
    }
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| {
            let d = (a - b).abs();
            if d.is_nan() { f32::INFINITY } else { d }
        })
        .fold(0.0f32, f32::max);
    (worst > 1e-5).then(|| format!("differs from the stored one (by up to {worst})"))
}

#[cfg(test)]
mod tests {
    use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
    use strata_types::{NewRecord, RecordId, RequestScope, SearchRequest, TenantId};

    use crate::{Engine, EngineConfig};

    #[test]
    fn a_clean_tenant_verifies_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let op = OperatorScope::for_tests();
        let id = TenantId::parse("acme").unwrap();
        engine.create_tenant(&op, &id, None).unwrap();
        let grant = Grant {
            permissions: Permissions::of(&[Permission::Read, Permission::Write]),
            user_tokens: None,
            domains: None,
        };
        let scope = TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), grant);
        let records = (0..20)
            .map(|i| NewRecord {
                id: Some(RecordId::parse(format!("r{i}")).unwrap()),
                content: Some(format!("note {i}")),
                vector: Some(vec![0.1 * i as f32 + 0.1; 384]),
                run_id: (i % 2 == 0).then(|| strata_types::RunId::parse("run").unwrap()),
                ..Default::default()
            })
            .collect();
        engine
            .put(&scope, &RequestScope::default(), records)
            .unwrap();

        let report = engine.verify_tenant(&op, &id).unwrap();
        assert!(report.ok && !report.indexes_loaded, "{report:?}");
        assert_eq!((report.records, report.usage_recounted.vectors), (20, 20));
        let search = SearchRequest {
            query: Some("note".into()),
            k: 3,
            ..Default::default()
        };
        engine
            .search(&scope, &RequestScope::default(), &search)
            .unwrap();
        let report = engine.verify_tenant(&op, &id).unwrap();
        assert!(report.ok && report.indexes_loaded, "{report:?}");

        // Wrong usage counters, an unknown blob, and a snapshot that does not decode.
        engine
            .store
            .write(|w| {
                w.put_blob(
                    scope.key(),
                    "usage",
                    br#"{"records":1,"vectors":1,"storage_bytes":1}"#,
                )?;
                w.put_blob(scope.key(), "stray", b"x")?;
                w.put_blob(scope.key(), "index:text", b"\x09")
            })
            .unwrap();
        let report = engine.verify_tenant(&op, &id).unwrap();
        assert!(!report.ok, "{report:?}");
        assert_eq!(report.problem_count, 2, "{report:?}");
        assert!(report.problems.iter().any(|p| p.contains("usage counters")));
        assert!(report.problems.iter().any(|p| p.contains("stray")));
        assert_eq!(report.warnings.len(), 1, "{report:?}");
    }

    /// Overwrites record `id`'s stored vector (or removes it) without telling the indexes, as a
    /// load or save gone wrong would leave them.
    fn change_stored_vector(
        engine: &Engine,
        scope: &TenantScope,
        id: &str,
        vector: Option<Vec<f32>>,
    ) {
        let r = engine.store.read().unwrap();
        let mut rec = strata_store::Reads::record(&r, scope.key(), &RecordId::parse(id).unwrap())
            .unwrap()
            .unwrap();
        drop(r);
        rec.vector = vector;
        engine
            .store
            .write(|w| w.put_record(scope.key(), &rec).map(drop))
            .unwrap();
    }

    /// The engine's own copy of the vectors (a collection too small for a graph).
    #[test]
    fn an_indexed_vector_that_is_not_the_stored_one_is_reported() {
        let (_dir, engine, scope) = crate::test_support::engine_with_tenant("acme");
        let op = OperatorScope::for_tests();
        let id = TenantId::parse("acme").unwrap();
        let records = (0..20)
            .map(|i| NewRecord {
                id: Some(RecordId::parse(format!("r{i}")).unwrap()),
                content: Some(format!("note {i}")),
                vector: Some((0..384).map(|d| ((i * 7 + d) % 13) as f32 - 6.0).collect()),
                ..Default::default()
            })
            .collect();
        engine
            .put(&scope, &RequestScope::default(), records)
            .unwrap();
        engine.index_stats(&scope).unwrap();
        let report = engine.verify_tenant(&op, &id).unwrap();
        assert!(report.ok && report.indexes_loaded, "{report:?}");

        change_stored_vector(&engine, &scope, "r3", Some(vec![1.0; 384]));
        change_stored_vector(&engine, &scope, "r5", None);
        let report = engine.verify_tenant(&op, &id).unwrap();
        assert!(!report.ok, "{report:?}");
        let about = |id: &str, what: &str| {
            report
                .problems
                .iter()
                .any(|p| p.contains(&format!("text/{id}: ")) && p.contains(what))
        };
        assert!(about("r3", "differs from the stored one"), "{report:?}");
        assert!(about("r5", "stored without one"), "{report:?}");
    }

    /// Vectors read out of the graph: equal to the stored ones after a build (no false alarm
    /// from the graph's copy, normalised again on insert), and a drift is found there too. At
    /// 800 vectors of 2,048 dimensions the graph is built but the engine keeps its own copy as
    /// well (both are compared); at 1,100 the graph holds the only copy.
    #[test]
    fn the_graphs_vectors_are_compared_with_the_stored_ones() {
        for n in [800, 1_100] {
            let dir = tempfile::tempdir().unwrap();
            let (engine, scope) =
                crate::test_support::clustered_tenant(dir.path(), strata_types::Metric::Cosine, n);
            engine.index_stats(&scope).unwrap();
            engine.wait_for_graph_builds();
            let stats = engine.index_stats(&scope).unwrap();
            assert!(stats.iter().any(|s| s.graph), "{n}: {stats:?}");
            let op = OperatorScope::for_tests();
            let id = TenantId::parse("acme").unwrap();
            let report = engine.verify_tenant(&op, &id).unwrap();
            assert!(report.ok && report.indexes_loaded, "{n}: {report:?}");

            let dim = crate::test_support::DIM as usize;
            change_stored_vector(&engine, &scope, "r7", Some(vec![0.5; dim]));
            let report = engine.verify_tenant(&op, &id).unwrap();
            assert!(
                report
                    .problems
                    .iter()
                    .any(|p| p.contains("vec/r7: its indexed vector differs")),
                "{n}: {report:?}"
            );
            assert_eq!(report.problem_count, 1, "{n}: {report:?}");
        }
    }

    /// A record stored before writes refused an `expires_at` past 2^53 is pointed out: the
    /// tenant's export would be refused by import.
    #[test]
    fn a_record_whose_export_would_not_import_is_a_warning() {
        let (_dir, engine, scope) = crate::test_support::engine_with_tenant("acme");
        let op = OperatorScope::for_tests();
        let id = TenantId::parse("acme").unwrap();
        engine
            .put(
                &scope,
                &RequestScope::default(),
                vec![NewRecord {
                    id: Some(RecordId::parse("late").unwrap()),
                    content: Some("a note".into()),
                    ..Default::default()
                }],
            )
            .unwrap();
        assert!(engine.verify_tenant(&op, &id).unwrap().warnings.is_empty());
        let r = engine.store.read().unwrap();
        let mut rec =
            strata_store::Reads::record(&r, scope.key(), &RecordId::parse("late").unwrap())
                .unwrap()
                .unwrap();
        drop(r);
        rec.expires_at = Some(strata_types::MAX_RECORD_TIME + 1);
        engine
            .store
            .write(|w| w.put_record(scope.key(), &rec).map(drop))
            .unwrap();
        let report = engine.verify_tenant(&op, &id).unwrap();
        assert!(report.ok, "{report:?}");
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("record late: expires_at") && w.contains("would not import")),
            "{report:?}"
        );
    }
}
