//! Per-tenant index state: loaded lazily on a tenant's first search, kept in step with every
//! committed write, and never shared between tenants. The registry that holds the loaded
//! ones, in order and under the memory budget, is `crate::registry`.

use std::collections::HashMap;

use strata_index::{HnswIndex, HnswParams};
use strata_store::codec::RemovedRecord;
use strata_store::{Reads, Store, TenantKey};
use strata_types::{CollectionName, Record, RecordId};

use crate::EngineError;
use crate::collection_index::CollectionIndex;
use crate::image_beside_graph::{self, Beside};
use crate::snapshot::SavedGraph;
use crate::{graph_build, graph_file, replay, search_image, snapshot};

/// A change a committed write made, to be applied to loaded indexes.
pub(crate) enum Change {
    /// A record written. `metadata_len` is the length of its stored metadata text, which the
    /// byte quota charges: measured when the record was encoded, so that accounting does not
    /// serialise the metadata again inside the transaction (`lifecycle::record_bytes_with`).
    Upsert {
        record: Record,
        metadata_len: usize,
    },
    /// A record replaced or deleted, its metadata not parsed (`RemovedRecord`): nothing of a
    /// removed record needs it but the byte quota, which its length serves.
    Remove(RemovedRecord),
    DropCollection(CollectionName),
}

/// The committed definitions of the collections a write's changes need that were not loaded
/// ([`TenantIndex::created_collections`]); `None` for one storage no longer has.
#[derive(Default)]
pub(crate) struct Created(HashMap<CollectionName, Option<strata_types::Collection>>);

/// The indexes of one tenant: one [`CollectionIndex`] per collection.
#[derive(Default)]
pub(crate) struct TenantIndex {
    pub collections: HashMap<CollectionName, CollectionIndex>,
    /// Changed since loaded or last captured for a save: worth a snapshot. Atomic so that a
    /// save clears it under the read lock (`crate::index_save`), and a change made after that
    /// capture, under the write lock, sets it again.
    pub dirty: std::sync::atomic::AtomicBool,
    /// Graph parameters of the tenant's isolation level, given to every collection.
    pub params: HnswParams,
    /// A write of this tenant is between the start of its transaction and the apply of its
    /// changes here: storage may already hold a commit this index does not. Set and cleared
    /// by `IndexRegistry::write` in the tenant's write order; a search that sees it set
    /// (under the read lock) reads its hits from storage rather than from this index
    /// (`crate::hits`).
    pub write_pending: std::sync::atomic::AtomicBool,
    /// Record changes these indexes hold that no save has captured yet: what a crash would
    /// leave the next load to replay from the change log (`IndexRegistry::checkpoint`).
    pub unsaved_changes: std::sync::atomic::AtomicU64,
}

impl TenantIndex {
    /// Whether a write may have committed changes not applied here yet (`write_pending`).
    pub fn write_pending(&self) -> bool {
        self.write_pending.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Estimated bytes of every collection's indexes.
    pub fn resident_bytes(&self) -> u64 {
        self.collections.values().map(|c| c.resident_bytes()).sum()
    }

    /// Hands every collection new graph parameters (see `CollectionIndex::set_params`).
    pub fn set_params(&mut self, params: HnswParams) {
        self.params = params;
        for c in self.collections.values_mut() {
            c.set_params(params);
        }
    }

    /// The widest default search beam of the tenant's graphs (`HnswIndex::default_ef`);
    /// 0 without a graph.
    pub fn graph_ef_search(&self) -> u32 {
        let graphs = self.collections.values().filter_map(|c| c.graph.as_ref());
        let widest = graphs.map(|g| g.default_ef()).max().unwrap_or(0);
        u32::try_from(widest).unwrap_or(u32::MAX)
    }

    /// The tenant's graphs built with parameters other than its own (a migration changed
    /// them): each waits for its background rebuild, serving meanwhile.
    pub fn graphs_stale(&self) -> u32 {
        let stale = self
            .collections
            .values()
            .filter(|c| c.graph.is_some() && c.rebuild);
        u32::try_from(stale.count()).unwrap_or(u32::MAX)
    }

    /// Vectors held by the tenant's graphs.
    pub fn graph_vectors(&self) -> u64 {
        let graphs = self.collections.values().filter_map(|c| c.graph.as_ref());
        graphs.map(|g| g.len() as u64).sum()
    }

    /// The largest fraction of deleted vectors still held by one of the tenant's graphs.
    pub fn deleted_fraction(&self) -> f64 {
        self.collections
            .values()
            .filter_map(|c| {
                let g = c.graph.as_ref()?;
                let nodes = g.len() as u64 + c.graph_deleted;
                (nodes > 0).then(|| c.graph_deleted as f64 / nodes as f64)
            })
            .fold(0.0, f64::max)
    }

    /// Collections whose graph's default beam wants calibrating (see
    /// `CollectionIndex::wants_calibration`).
    pub fn calibrations_wanted(&self) -> Vec<CollectionName> {
        self.collections
            .iter()
            .filter(|(_, c)| c.wants_calibration())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether the background builder has work here: a graph to build or to calibrate.
    pub fn wants_builder(&self) -> bool {
        self.collections
            .values()
            .any(|c| c.wants_graph() || c.wants_calibration())
    }

    /// Collections that want a graph and have none yet.
    pub fn graphs_wanted(&self) -> Vec<CollectionName> {
        self.collections
            .iter()
            .filter(|(_, c)| c.wants_graph())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Loads the tenant's indexes from storage. Graphs come from a current snapshot; a
    /// collection without one is searched exactly until the background builder gives it a
    /// graph, so no request waits for a build.
    pub fn load(
        store: &Store,
        key: TenantKey,
        params: HnswParams,
    ) -> Result<TenantIndex, EngineError> {
        let r = store.read()?;
        let version = snapshot::data_version(&r, key)?;
        if let Some(index) = Self::load_images(store, &r, key, version, params)? {
            return Ok(index);
        }
        Self::rebuild(store, &r, key, version, params)
    }

    /// The cheap load: every collection from its search image and graph snapshot. An image
    /// at the stored data version is used as it is, without reading a record; one behind it
    /// is caught up from the change log (`crate::replay`), reading only the records changed
    /// since. `None` (rebuild from the records) unless every collection has an image that
    /// decodes and is current or replayable, and the counts add up to the tenant's usage
    /// counters (committed in every write transaction).
    fn load_images(
        store: &Store,
        r: &impl Reads,
        key: TenantKey,
        version: u64,
        params: HnswParams,
    ) -> Result<Option<TenantIndex>, EngineError> {
        let mut collections = HashMap::new();
        let (mut records, mut vectors) = (0, 0);
        let mut dropped_graph = false;
        // A graph restored from a snapshot of the old inline format: worth saving again.
        let mut inline = false;
        // Collections whose image is behind storage, with the log sequence each reflects.
        let mut behind = HashMap::new();
        // Records the change log's replay brought in: not in any saved image yet.
        let mut replayed = 0;
        for c in r.collections(key)? {
            let Some(saved) = search_image::load(r, key, &c.name)? else {
                return Ok(None);
            };
            let (decoded, beside) = image_beside_graph::decode(store, r, key, &c, &saved, params)?;
            let Ok((mut ci, loaded)) = decoded else {
                return Ok(None);
            };
            if loaded.version != version {
                // The log is derived data like the image: one that cannot be read is a reason
                // to rebuild from the records, never to refuse the tenant.
                match replay::replayable_mark(r, key, &c.name, loaded.version) {
                    Ok(Some(mark)) => behind.insert(c.name.clone(), mark),
                    Ok(None) | Err(_) => return Ok(None),
                };
            } else {
                records += loaded.records;
                vectors += loaded.vectors;
            }
            // An image carries the vectors only when it was saved without a graph
            // (`CollectionIndex::raw_vectors`), in the same transaction as the snapshot: then
            // there is no graph to restore and the snapshot is not even read, so a collection
            // under the graph threshold loads from its image alone. Otherwise the graph is
            // keyed by slot, so it fits only the slots it was saved with (this also catches a
            // snapshot from another save).
            let graph = if ci.has_vector_copy() {
                None
            } else {
                let (snapshot, read) = match beside {
                    Beside::NotRead => {
                        (snapshot::load(r, key, &c.name)?.and_then(Result::ok), None)
                    }
                    Beside::Read(read) => (read.snapshot, read.graph),
                };
                match snapshot {
                    Some(snap)
                        if snap.version == loaded.version
                            && snap.dim == c.dim
                            && same_slots(&snap.slots, &ci.slot_ids()) =>
                    {
                        snap.graph.map(|saved| (saved, read))
                    }
                    _ => None,
                }
            };
            // A graph that is missing or does not fit leaves the collection to exact scans
            // until the background builder gives it one.
            inline |= matches!(graph, Some((SavedGraph::Inline(_), _)));
            if !graph.is_some_and(|(saved, read)| restore(store, key, &mut ci, saved, read)) {
                if !ci.has_vector_copy() {
                    // Its vectors were saved only inside that graph.
                    return Ok(None);
                }
                ci.graph = None;
            }
            ci.from_image = true;
            collections.insert(c.name.clone(), ci);
        }
        // Counters that cannot be read are no reason to fail a load that can rebuild.
        let Ok(usage) = crate::lifecycle::usage(r, key) else {
            return Ok(None);
        };
        if !behind.is_empty() {
            // More changed records than the tenant holds: a rebuild reads no more.
            let Ok(Some(changed)) = replay::changed(r, key, &behind, usage.records) else {
                return Ok(None);
            };
            replayed = changed.len() as u64;
            // A graph that many changed vectors would have to go into is caught up by the
            // background builder instead, the collection searched exactly meanwhile.
            for (name, n) in replay::per_collection(&changed) {
                let Some(ci) = collections.get_mut(name) else {
                    continue;
                };
                let Some(len) = ci.graph.as_ref().map(|g| g.len()) else {
                    continue;
                };
                if graph_build::catch_up_later(n, len) {
                    if ci.set_graph_aside().is_err() {
                        return Ok(None);
                    }
                    tracing::info!(
                        tenant_key = ?key,
                        collection = %name,
                        changed = n,
                        graph_vectors = len,
                        "restored graph set aside to be caught up in the background; the \
                         collection is searched exactly meanwhile"
                    );
                }
            }
            if replay::apply(r, key, changed, &mut collections).is_err() {
                return Ok(None);
            }
            for name in behind.keys() {
                let ci = &collections[name];
                records += ci.slot_ids().iter().filter(|id| id.is_some()).count() as u64;
                vectors += ci.with_vector.len();
            }
        }
        if (usage.records, usage.vectors) != (records, vectors) {
            return Ok(None);
        }
        // Under the graph threshold once caught up (it shrank, or was saved before the
        // threshold followed the planner): a restored graph served only to carry the vectors,
        // and is let go; the next save stores the vectors in the image instead.
        for ci in collections.values_mut() {
            dropped_graph |= ci.shed_graph();
            ci.drop_unwanted_seed();
        }
        // Caught up or a graph shed: worth saving a current image at the next eviction or
        // persist.
        let dirty = dropped_graph
            || inline
            || !behind.is_empty()
            || collections.values().any(|c| c.wants_graph());
        Ok(Some(TenantIndex {
            collections,
            dirty: dirty.into(),
            params,
            write_pending: Default::default(),
            unsaved_changes: replayed.into(),
        }))
    }

    /// The full load: reads every record and indexes it, placing records back in the slots
    /// of a current graph snapshot so its graph can be restored.
    fn rebuild(
        store: &Store,
        r: &impl Reads,
        key: TenantKey,
        version: u64,
        params: HnswParams,
    ) -> Result<TenantIndex, EngineError> {
        let mut collections = HashMap::new();
        // Per collection: where each record was, by a current snapshot, and the graph bytes.
        let mut expected: HashMap<CollectionName, Restoring> = HashMap::new();
        for c in r.collections(key)? {
            let mut ci = CollectionIndex::new(&c);
            ci.params = params;
            // A snapshot that does not decode is treated like a stale one: rebuilt from the
            // records, which are the truth.
            if let Some(Ok(snap)) = snapshot::load(r, key, &c.name)?
                && snap.version == version
                && snap.dim == c.dim
            {
                ci.ensure_slots(snap.slots.len());
                let slots = snap
                    .slots
                    .into_iter()
                    .enumerate()
                    .filter_map(|(slot, id)| Some((RecordId::parse(id?).ok()?, slot as u32)))
                    .collect();
                expected.insert(c.name.clone(), (slots, snap.graph));
            }
            collections.insert(c.name.clone(), ci);
        }
        let mut stale = std::collections::HashSet::new();
        for record in r.records(key, None)? {
            let record = record?;
            let Some(ci) = collections.get_mut(&record.modality) else {
                continue;
            };
            match expected
                .get_mut(&record.modality)
                .and_then(|(slots, _)| slots.remove(&record.id))
            {
                Some(slot) => ci.place_at(&record, slot)?,
                None => {
                    stale.insert(record.modality.clone());
                    ci.upsert(&record, false)?;
                }
            }
        }
        // Rebuilt: worth saving a search image at the next eviction or persist.
        let dirty = true;
        for (name, ci) in collections.iter_mut() {
            ci.rebuild_free_list();
            let restored = match expected.remove(name) {
                // Below the graph threshold a saved graph is not restored (see `load_images`).
                Some((missing, Some(graph)))
                    if missing.is_empty() && !stale.contains(name) && ci.graph_pays() =>
                {
                    restore(store, key, ci, graph, None)
                }
                Some((missing, _)) if missing.is_empty() && !stale.contains(name) => {
                    !ci.graph_pays()
                }
                _ => false,
            };
            if !restored {
                ci.graph = None;
            }
        }
        Ok(TenantIndex {
            collections,
            dirty: dirty.into(),
            params,
            write_pending: Default::default(),
            unsaved_changes: Default::default(),
        })
    }

    pub fn apply(
        &mut self,
        store: &Store,
        key: TenantKey,
        changes: Vec<Change>,
    ) -> Result<(), EngineError> {
        let created = self.created_collections(store, key, &changes)?;
        self.apply_read(changes, created)
    }

    /// What applying `changes` needs from storage: the committed definition (or `None`) of
    /// each collection they write records into that is not loaded when its records come (one
    /// created after the load, or dropped earlier in `changes`). Read before
    /// [`TenantIndex::apply_read`], which then computes in memory alone.
    pub fn created_collections(
        &self,
        store: &Store,
        key: TenantKey,
        changes: &[Change],
    ) -> Result<Created, EngineError> {
        let mut dropped = Vec::new();
        let mut wanted = Vec::new();
        for change in changes {
            match change {
                Change::Upsert { record, .. }
                    if (!self.collections.contains_key(&record.modality)
                        || dropped.contains(&&record.modality))
                        && !wanted.contains(&&record.modality) =>
                {
                    wanted.push(&record.modality);
                }
                Change::DropCollection(name) => dropped.push(name),
                _ => {}
            }
        }
        if wanted.is_empty() {
            return Ok(Created::default());
        }
        let reads = store.read()?;
        let mut created = HashMap::with_capacity(wanted.len());
        for name in wanted {
            created.insert(name.clone(), reads.collection(key, name)?);
        }
        Ok(Created(created))
    }

    /// Applies `changes` once the definitions they need were read (`created`, from
    /// [`TenantIndex::created_collections`]): memory only, no lock taken and no storage read,
    /// so that a write of a tenant over its share can compute it at the background priority
    /// (`IndexRegistry::apply`).
    pub fn apply_read(
        &mut self,
        changes: Vec<Change>,
        created: Created,
    ) -> Result<(), EngineError> {
        self.mark_dirty();
        self.unsaved_changes
            .fetch_add(changes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for change in changes {
            match change {
                Change::Upsert { record, .. } => {
                    if !self.collections.contains_key(&record.modality) {
                        // A collection created after the load: its definition is committed.
                        let Some(Some(c)) = created.0.get(&record.modality) else {
                            continue;
                        };
                        self.collections.insert(c.name.clone(), {
                            let mut ci = CollectionIndex::new(c);
                            ci.params = self.params;
                            ci
                        });
                    }
                    if let Some(ci) = self.collections.get_mut(&record.modality) {
                        ci.upsert(&record, true)?;
                    }
                }
                Change::Remove(RemovedRecord { record, .. }) => {
                    if let Some(ci) = self.collections.get_mut(&record.modality) {
                        ci.remove(&record.id)?;
                    }
                }
                Change::DropCollection(name) => {
                    self.collections.remove(&name);
                }
            }
        }
        Ok(())
    }
}

/// Restores `ci`'s graph from a snapshot's: inline bytes, or its derived file (`read`: that
/// file's graph as [`graph_file::load`] already returned it). `false` (and the caller
/// rebuilds) when it is missing, damaged or does not fit the collection.
fn restore(
    store: &Store,
    key: TenantKey,
    ci: &mut CollectionIndex,
    saved: SavedGraph,
    read: Option<Result<HnswIndex, EngineError>>,
) -> bool {
    match saved {
        SavedGraph::Inline(bytes) => ci.restore_graph(&bytes),
        SavedGraph::File(f) => {
            let read = read
                .unwrap_or_else(|| graph_file::load(store, key, &f, ci.dim, ci.metric, ci.params));
            match read {
                Ok(g) => ci.restore_graph_index(g),
                Err(e) => {
                    // Never an error to the user (the graph is rebuilt), but an operator should
                    // hear of a damaged file, as `verify` reports it.
                    tracing::warn!(tenant = ?key, error = %e, "a graph file is unusable; the graph is rebuilt from the records");
                    false
                }
            }
        }
    }
}

fn same_slots(saved: &[Option<String>], loaded: &[Option<&RecordId>]) -> bool {
    saved.len() == loaded.len()
        && saved
            .iter()
            .zip(loaded)
            .all(|(a, b)| a.as_deref() == b.map(|id| id.as_str()))
}

/// A current snapshot being restored: each record's slot, and where the graph is.
type Restoring = (HashMap<RecordId, u32>, Option<SavedGraph>);

#[cfg(test)]
mod tests {
    use strata_auth::{OperatorScope, TenantScope};
    use strata_types::{Metric, TenantId};

    use crate::test_support::{answers, put_clustered, vec_name};
    use crate::{Engine, EngineConfig};
    use strata_store::Reads;

    fn scope(engine: &Engine) -> TenantScope {
        crate::test_support::admin_scope(engine, "acme")
    }

    const N: usize = 1_100;

    /// A fresh engine with tenant `acme` and its collection `vec`.
    fn tenant_with_collection() -> (tempfile::TempDir, Engine, TenantScope) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let id = TenantId::parse("acme").unwrap();
        engine
            .create_tenant(&OperatorScope::for_tests(), &id, None)
            .unwrap();
        let scope = scope(&engine);
        engine
            .create_collection(
                &scope,
                &vec_name(),
                crate::test_support::DIM,
                Metric::Cosine,
            )
            .unwrap();
        (dir, engine, scope)
    }

    fn restored(engine: &Engine, scope: &TenantScope) -> bool {
        engine
            .index_stats(scope)
            .unwrap()
            .into_iter()
            .any(|s| s.collection == vec_name() && s.graph && s.restored_from_snapshot)
    }

    #[test]
    fn a_corrupt_snapshot_is_rebuilt_from_the_records_not_served() {
        let (dir, engine, scope) = tenant_with_collection();
        put_clustered(&engine, &scope, N);
        engine.index_stats(&scope).unwrap();
        engine.wait_for_graph_builds();
        let before = answers(&engine, &scope);
        engine.persist_indexes().unwrap();
        drop(engine);

        // A clean reopen restores the snapshot.
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine);
        assert!(restored(&engine, &scope));
        assert_eq!(answers(&engine, &scope), before);
        drop(engine);

        // Bytes that do not decode, at the current version: rebuilt, same answers.
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine);
        engine
            .store
            .write(|w| w.put_blob(scope.key(), "index:vec", b"\x01garbage"))
            .unwrap();
        assert_eq!(answers(&engine, &scope), before);
        assert!(!restored(&engine, &scope));
        engine.wait_for_graph_builds();
        assert_eq!(answers(&engine, &scope), before);
    }

    fn from_image(engine: &Engine, scope: &TenantScope) -> bool {
        let stats = engine.index_stats(scope).unwrap();
        assert!(!stats.is_empty());
        stats.iter().all(|s| s.loaded_from_image)
    }

    fn verify_clean(engine: &Engine) {
        let report = engine
            .verify_tenant(
                &OperatorScope::for_tests(),
                &TenantId::parse("acme").unwrap(),
            )
            .unwrap();
        assert!(report.ok && report.indexes_loaded, "{report:?}");
    }

    /// The ids a text query finds in `vec`, best first.
    fn text_answers(engine: &Engine, scope: &TenantScope) -> Vec<Vec<String>> {
        ["topic 3", "memory 17", "about"]
            .iter()
            .map(|q| {
                let s = strata_types::SearchRequest {
                    query: Some((*q).into()),
                    k: 5,
                    modality: Some(vec_name()),
                    mode: Some(strata_types::SearchMode::Text),
                    ..Default::default()
                };
                let r = engine
                    .search(scope, &strata_types::RequestScope::default(), &s)
                    .unwrap();
                r.hits.into_iter().map(|h| h.id.to_string()).collect()
            })
            .collect()
    }

    /// The image its row holds (after the row's checksum).
    fn image(engine: &Engine, scope: &TenantScope) -> Vec<u8> {
        let row = engine
            .store
            .read()
            .unwrap()
            .blob(scope.key(), "image:vec")
            .unwrap()
            .expect("an image");
        crate::search_image::inline_image(row).unwrap()
    }

    /// An image of format 6, as the previous version saved it (the same layout, without the
    /// values inside arrays' objects): rebuilt from the records, answering the same, and saved
    /// again in the current format, byte for byte what this version saves.
    #[test]
    fn a_format_6_image_is_rebuilt_and_saved_again_in_the_current_format() {
        let (dir, engine, scope) = tenant_with_collection();
        crate::test_support::put_clustered_with(&engine, &scope, N, |i| {
            Some(format!("memory {i} about topic {} and {}", i % 7, i % 3))
        });
        engine.index_stats(&scope).unwrap();
        engine.wait_for_graph_builds();
        let (before, text_before) = (answers(&engine, &scope), text_answers(&engine, &scope));
        assert!(text_before.iter().all(|hits| hits.len() == 5));
        engine.persist_indexes().unwrap();
        let current = image(&engine, &scope);
        // Written bare, as rows were before they carried a checksum: still read.
        let mut older = current.clone();
        older[0] = 6;
        assert_eq!(current[0], 7);
        engine
            .store
            .write(|w| w.put_blob(scope.key(), "image:vec", &older))
            .unwrap();
        drop(engine);

        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine);
        // The records are read again; the graph, saved with the image, is restored.
        assert!(!from_image(&engine, &scope) && restored(&engine, &scope));
        assert_eq!(answers(&engine, &scope), before);
        assert_eq!(text_answers(&engine, &scope), text_before);
        verify_clean(&engine);
        engine.wait_for_graph_builds();
        engine.persist_indexes().unwrap();
        assert_eq!(image(&engine, &scope), current, "saved again in format 7");
    }

    #[test]
    fn a_current_image_loads_without_records_a_damaged_one_is_rebuilt_and_one_behind_replayed() {
        let (dir, engine, scope) = tenant_with_collection();
        put_clustered(&engine, &scope, N);
        engine.index_stats(&scope).unwrap();
        engine.wait_for_graph_builds();
        let before = answers(&engine, &scope);
        engine.persist_indexes().unwrap();
        drop(engine);

        // Current: loaded from the image, graph restored, same answers, verify agrees.
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine);
        assert!(from_image(&engine, &scope) && restored(&engine, &scope));
        assert_eq!(answers(&engine, &scope), before);
        verify_clean(&engine);
        drop(engine);

        // Damaged at the current version (a cut-off image): rebuilt from the records.
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine);
        let good = engine
            .store
            .read()
            .unwrap()
            .blob(scope.key(), "image:vec")
            .unwrap()
            .unwrap();
        engine
            .store
            .write(|w| w.put_blob(scope.key(), "image:vec", &good[..good.len() / 2]))
            .unwrap();
        assert!(!from_image(&engine, &scope));
        assert_eq!(answers(&engine, &scope), before);
        verify_clean(&engine);
        drop(engine);

        // Behind: a write after the image (the process dies before saving another) bumps the
        // data version; the load replays the change log over the image and finds the new
        // record.
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine);
        engine
            .store
            .write(|w| w.put_blob(scope.key(), "image:vec", &good))
            .unwrap();
        let q = strata_index::testdata::queries(5, crate::test_support::DIM as usize, 10, 1, 2)[0]
            .clone();
        engine
            .put(
                &scope,
                &strata_types::RequestScope::default(),
                vec![strata_types::NewRecord {
                    id: Some(strata_types::RecordId::parse("fresh").unwrap()),
                    modality: Some(vec_name()),
                    vector: Some(q),
                    ..Default::default()
                }],
            )
            .unwrap();
        drop(engine);
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine);
        assert!(from_image(&engine, &scope));
        assert_eq!(answers(&engine, &scope)[0][0], "fresh");
        verify_clean(&engine);
        // Saved again at eviction or shutdown: the next load is cheap again.
        engine.wait_for_graph_builds();
        engine.persist_indexes().unwrap();
        let after = answers(&engine, &scope);
        drop(engine);
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine);
        assert!(from_image(&engine, &scope));
        assert_eq!(answers(&engine, &scope), after);
        verify_clean(&engine);
    }

    fn vec_graph(engine: &Engine, scope: &TenantScope) -> (bool, bool) {
        let stats = engine.index_stats(scope).unwrap();
        let s = stats.iter().find(|s| s.collection == vec_name()).unwrap();
        (s.graph, s.loaded_from_image)
    }

    #[test]
    fn collections_under_the_graph_threshold_neither_build_nor_restore_a_graph() {
        let (dir, engine, scope) = tenant_with_collection();
        // 700 × 2,048 = 1.43M floats, under the threshold (1.5M): never a graph.
        put_clustered(&engine, &scope, 700);
        engine.index_stats(&scope).unwrap();
        engine.wait_for_graph_builds();
        assert_eq!(vec_graph(&engine, &scope), (false, false));
        let small = answers(&engine, &scope);
        engine.persist_indexes().unwrap();
        drop(engine);
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine);
        assert_eq!(vec_graph(&engine, &scope), (false, true));
        assert_eq!(answers(&engine, &scope), small);
        let residency = engine
            .residency(&OperatorScope::for_tests(), scope.tenant())
            .unwrap();
        assert_eq!(residency.graph_builds_pending, 0, "{residency:?}");

        // Grown past it: a graph in the background, restored at the next load.
        put_clustered(&engine, &scope, 1_100);
        engine.wait_for_graph_builds();
        assert!(vec_graph(&engine, &scope).0);
        engine.persist_indexes().unwrap();
        drop(engine);
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine);
        assert!(restored(&engine, &scope));

        // Shrunk below it: the graph serves while loaded; the next load lets it go (its
        // image carried the vectors inside the graph) and the save after that has none.
        for i in 700..1_100 {
            engine
                .delete(
                    &scope,
                    &strata_types::RequestScope::default(),
                    &strata_types::RecordId::parse(format!("r{i}")).unwrap(),
                )
                .unwrap();
        }
        assert!(vec_graph(&engine, &scope).0);
        let shrunk = answers(&engine, &scope);
        engine.persist_indexes().unwrap();
        drop(engine);
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine);
        assert_eq!(vec_graph(&engine, &scope), (false, true));
        assert_eq!(answers(&engine, &scope), shrunk);
        verify_clean(&engine);
        engine.wait_for_graph_builds();
        assert_eq!(
            engine.persist_indexes().unwrap(),
            1,
            "saved without the graph"
        );
        let snap = engine
            .store
            .read()
            .unwrap()
            .blob(scope.key(), "index:vec")
            .unwrap()
            .unwrap();
        let snap = crate::snapshot::decode(&snap).unwrap();
        assert!(snap.graph.is_none());
    }
}
