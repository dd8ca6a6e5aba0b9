//! Per-tenant index state: loaded lazily on a tenant's first search, kept in step with every
//! committed write, and never shared between tenants.
//!
//! Ordering: a write holds its tenant's `apply` lock from before its storage commit until its
//! changes are applied here, and loading holds the same lock, so the in-memory indexes see
//! committed writes in commit order and a load never misses one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use strata_store::{Reads, Store, TenantKey};
use strata_types::{CollectionName, Record, RecordId};

use crate::EngineError;
use crate::collection_index::{CollectionIndex, GRAPH_MIN_VECTORS};
use crate::snapshot;

/// A change a committed write made, to be applied to loaded indexes.
pub(crate) enum Change {
    Upsert(Record),
    Remove(Record),
    DropCollection(CollectionName),
}

/// The indexes of one tenant: one [`CollectionIndex`] per collection.
#[derive(Default)]
pub(crate) struct TenantIndex {
    pub collections: HashMap<CollectionName, CollectionIndex>,
    /// Changed since loaded or last saved: worth a snapshot.
    dirty: bool,
}

impl TenantIndex {
    fn load(store: &Store, key: TenantKey) -> Result<TenantIndex, EngineError> {
        let r = store.read()?;
        let version = snapshot::data_version(&r, key)?;
        let mut collections = HashMap::new();
        // Per collection: where each record was, by a current snapshot, and the graph bytes.
        let mut expected: HashMap<CollectionName, Restoring> = HashMap::new();
        for c in r.collections(key)? {
            let mut ci = CollectionIndex::new(&c);
            if let Some(snap) = snapshot::load(&r, key, &c.name)?
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
        let mut dirty = false;
        for (name, ci) in collections.iter_mut() {
            ci.rebuild_free_list();
            let restored = match expected.remove(name) {
                Some((missing, Some(graph))) if missing.is_empty() && !stale.contains(name) => {
                    ci.restore_graph(&graph)
                }
                Some((missing, None)) if missing.is_empty() && !stale.contains(name) => {
                    ci.with_vector.len() < GRAPH_MIN_VECTORS
                }
                _ => false,
            };
            if !restored {
                ci.build_graph()?;
                dirty = true;
            }
        }
        Ok(TenantIndex { collections, dirty })
    }

    fn apply(
        &mut self,
        store: &Store,
        key: TenantKey,
        changes: Vec<Change>,
    ) -> Result<(), EngineError> {
        self.dirty = true;
        for change in changes {
            match change {
                Change::Upsert(record) => {
                    if !self.collections.contains_key(&record.modality) {
                        // A collection created after the load: its definition is committed.
                        let Some(c) = store.read()?.collection(key, &record.modality)? else {
                            continue;
                        };
                        self.collections
                            .insert(c.name.clone(), CollectionIndex::new(&c));
                    }
                    if let Some(ci) = self.collections.get_mut(&record.modality) {
                        ci.upsert(&record, true)?;
                    }
                }
                Change::Remove(record) => {
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

    /// Writes a snapshot of every collection, tagged with the tenant's current data version.
    fn save(&mut self, store: &Store, key: TenantKey) -> Result<(), EngineError> {
        store.write(|w| {
            let version = snapshot::data_version(w, key)?;
            for c in w.collections(key)? {
                match self.collections.get(&c.name) {
                    Some(ci) => {
                        let slots = ci
                            .slot_ids()
                            .into_iter()
                            .map(|id| id.map(|id| id.to_string()))
                            .collect();
                        let graph = match &ci.graph {
                            Some(g) => Some(
                                g.to_bytes()
                                    .map_err(|e| EngineError::Index(e.to_string()))?,
                            ),
                            None => None,
                        };
                        snapshot::save(
                            w,
                            key,
                            &c.name,
                            &snapshot::Snapshot::new(version, c.dim, slots, graph),
                        )?;
                    }
                    None => snapshot::delete(w, key, &c.name)?,
                }
            }
            Ok::<_, EngineError>(())
        })?;
        self.dirty = false;
        Ok(())
    }
}

/// A current snapshot being restored: each record's slot, and the graph's bytes.
type Restoring = (HashMap<RecordId, u32>, Option<Vec<u8>>);

/// One tenant's slot in the registry.
#[derive(Default)]
struct TenantSlot {
    apply: Mutex<()>,
    index: RwLock<Option<TenantIndex>>,
}

/// Loaded tenant indexes, by storage key.
#[derive(Default)]
pub(crate) struct IndexRegistry {
    tenants: Mutex<HashMap<TenantKey, Arc<TenantSlot>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing guarded by these mutexes can be left half-done by a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl IndexRegistry {
    fn slot(&self, key: TenantKey) -> Arc<TenantSlot> {
        lock(&self.tenants).entry(key).or_default().clone()
    }

    /// Runs a write `f` (which commits to storage and returns the changes it made) in the
    /// tenant's write order, then applies the changes to the tenant's indexes if they are
    /// loaded. If applying fails, the indexes are dropped and rebuilt from storage on the next
    /// search: storage is the truth, indexes are derived.
    pub fn write<R>(
        &self,
        store: &Store,
        key: TenantKey,
        f: impl FnOnce() -> Result<(R, Vec<Change>), EngineError>,
    ) -> Result<R, EngineError> {
        let slot = self.slot(key);
        let _order = lock(&slot.apply);
        let (result, changes) = f()?;
        if !changes.is_empty() {
            let mut index = slot.index.write().unwrap_or_else(|e| e.into_inner());
            if let Some(loaded) = index.as_mut()
                && loaded.apply(store, key, changes).is_err()
            {
                *index = None;
            }
        }
        Ok(result)
    }

    /// Saves every loaded, changed tenant index; see `Engine::persist_indexes`.
    pub fn persist(&self, store: &Store) -> Result<usize, EngineError> {
        let loaded: Vec<(TenantKey, Arc<TenantSlot>)> = lock(&self.tenants)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut saved = 0;
        for (key, slot) in loaded {
            let _order = lock(&slot.apply);
            let mut guard = slot.index.write().unwrap_or_else(|e| e.into_inner());
            if let Some(index) = guard.as_mut()
                && index.dirty
            {
                index.save(store, key)?;
                saved += 1;
            }
        }
        Ok(saved)
    }

    /// Forgets a tenant's indexes, after its data was erased.
    pub fn forget(&self, key: TenantKey) {
        lock(&self.tenants).remove(&key);
    }

    /// Runs `f` with the tenant's indexes, loading them from storage first if needed.
    pub fn with_index<R>(
        &self,
        store: &Store,
        key: TenantKey,
        f: impl FnOnce(&TenantIndex) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        let slot = self.slot(key);
        {
            let guard = slot.index.read().unwrap_or_else(|e| e.into_inner());
            if let Some(index) = guard.as_ref() {
                return f(index);
            }
        }
        let _order = lock(&slot.apply);
        let mut guard = slot.index.write().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(TenantIndex::load(store, key)?);
        }
        drop(_order);
        match guard.as_ref() {
            Some(index) => f(index),
            None => Err(EngineError::Index("tenant index missing after load".into())),
        }
    }
}
