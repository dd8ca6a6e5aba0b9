//! Saving a tenant's indexes (graph snapshots, search images and their change marks) without
//! holding the tenant's locks while the files reach the disk.
//!
//! A save has three steps:
//! 1. [`TenantIndex::capture`], under the tenant's write order (`order`) and its index read
//!    lock: the data version and change-log sequence the indexes reflect, what every
//!    collection's search image needs (`search_image::Capture`: plain copies of the slots'
//!    resident parts and the text and field indexes encoded), and each graph's bytes, copied
//!    into memory (`to_bytes`: one `memcpy` of its arrays);
//! 2. with no lock held (`Captured::write_files`), the images are encoded from their captures,
//!    and each graph's bytes, and each large image (`search_image::IN_FILE_FROM_BYTES`), are
//!    written to a new derived file and synced;
//! 3. `commit_rows`: one short transaction writes the snapshot and image rows, tagged with the
//!    captured version, and the change marks with the captured sequence, and trims the log
//!    up to that sequence only.
//!
//! Why the copy: writing the bytes into a file under the locks and syncing it after was tried
//! first, and the write alone (into the page cache, 190 MB) held the locks 0.8–1.4 s on a busy
//! machine, most of the whole save; the copy is a transient second copy of the graph (the
//! size of its file) for the time of the save, which the residency budget does not count.
//!
//! Why: the tenant's write jobs wait for `order` inside the shared pool's workers, so a save
//! that held it while a large graph was written and synced (a second and more for a graph of
//! a few hundred megabytes) held every other tenant's jobs too. The tenant's writes during
//! steps 2 and 3 are in storage and in its change log after the captured sequence, so a load
//! from these snapshots replays them (`crate::replay`), and they leave the index `dirty`
//! (cleared at the capture), so the next save captures them.
//!
//! One save of a tenant runs at a time (`TenantSlot::saving`): a save deletes the derived
//! files no committed row names, which would otherwise include another save's files
//! between their write and their commit.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, TryLockError};

use strata_store::{ChangeLogReads, ChangeMark, Reads, Store, TenantKey};
use strata_types::{Collection, CollectionName, TenantId};

use crate::EngineError;
use crate::graph_file::{self, GraphFile, Holds};
use crate::registry::{TenantSlot, lock_slot};
use crate::tenant_index::TenantIndex;
use crate::{search_image, snapshot};

/// What a save took from the tenant's indexes under its locks, all as of one data version.
pub(crate) struct Captured {
    /// The record changes the capture covers that no save had (`TenantIndex::
    /// unsaved_changes`), given back if this save fails.
    unsaved: u64,
    version: u64,
    /// The last change-log entry the indexes reflect.
    seq: u64,
    collections: HashMap<CollectionName, CapturedCollection>,
    /// Time spent copying the graphs out and capturing the images (under the locks), and the
    /// graphs' bytes, for the save's log line.
    graphs_time: std::time::Duration,
    images_time: std::time::Duration,
    graph_bytes: u64,
}

/// One collection's part of a [`Captured`] save.
struct CapturedCollection {
    /// Which collection of that name it is (a collection deleted and created again meanwhile
    /// must not get the old one's image).
    incarnation: Incarnation,
    /// Encoded, with no lock held, into the image and the slots of the graph snapshot.
    image: search_image::Capture,
    /// The graph's bytes (`HnswIndex::to_bytes`), when it has one.
    graph: Option<Vec<u8>>,
}

/// What tells two collections of one name apart: created at another time, or changed in
/// dimension or metric (a re-embed), an image of one does not fit the other.
#[derive(PartialEq, Eq)]
struct Incarnation {
    created_at: strata_types::Millis,
    dim: u32,
    metric: strata_types::Metric,
}

impl Incarnation {
    fn of(c: &Collection) -> Self {
        Incarnation {
            created_at: c.created_at,
            dim: c.dim,
            metric: c.metric,
        }
    }
}

/// Where a save stands, for the test hook (`TenantSlot::save_hook`).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaveStage {
    /// Captured, the tenant's locks released, no file written yet.
    Captured,
    /// Every graph and image file written, synced and named, the transaction not begun.
    FilesDurable,
}

impl TenantIndex {
    /// Whether the indexes changed since loaded or last captured for a save.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    /// Whether a graph the last save named is being caught up (`CollectionIndex::
    /// catching_up`): the tenant is not saved meanwhile.
    pub fn catching_up(&self) -> bool {
        self.collections.values().any(|c| c.catching_up)
    }

    /// Marks the indexes changed: worth a snapshot.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// Step 1 of a save (see the module docs). The caller holds the tenant's write order, so
    /// storage holds exactly the commits these indexes reflect, and the index lock (read is
    /// enough: nothing here changes the indexes but the `dirty` flag, which a change made after
    /// this sets again).
    ///
    /// `buffers` are the graphs' destinations, made ready with no lock held
    /// ([`graph_buffers`]); a graph without one (or outgrown) still gets a buffer here.
    pub fn capture(
        &self,
        store: &Store,
        key: TenantKey,
        buffers: &mut GraphBuffers,
    ) -> Result<Captured, EngineError> {
        let r = store.read()?;
        let version = snapshot::data_version(&r, key)?;
        let seq = r.change_head(key)?.next - 1;
        let mut collections = HashMap::new();
        let (mut graphs_time, mut images_time, mut graph_bytes) = Default::default();
        for c in r.collections(key)? {
            let Some(ci) = self.collections.get(&c.name) else {
                continue;
            };
            let started = std::time::Instant::now();
            let graph = match &ci.graph {
                Some(g) => {
                    let mut out = buffers.remove(&c.name).unwrap_or_default();
                    out.clear();
                    out.reserve(g.encoded_len());
                    g.write_to(&mut out)
                        .map_err(|e| EngineError::Index(format!("encoding a graph: {e}")))?;
                    Some(out)
                }
                None => None,
            };
            graph_bytes += graph.as_ref().map_or(0, |g| g.len() as u64);
            graphs_time += started.elapsed();
            let started = std::time::Instant::now();
            let image = search_image::Capture::of(ci)?;
            images_time += started.elapsed();
            collections.insert(
                c.name.clone(),
                CapturedCollection {
                    incarnation: Incarnation::of(&c),
                    image,
                    graph,
                },
            );
        }
        self.dirty.store(false, Ordering::SeqCst);
        let unsaved = self.unsaved_changes.swap(0, Ordering::Relaxed);
        Ok(Captured {
            unsaved,
            version,
            seq,
            collections,
            graphs_time,
            images_time,
            graph_bytes,
        })
    }
}

/// Buffers for the graphs a save copies, by collection.
pub(crate) type GraphBuffers = HashMap<CollectionName, Vec<u8>>;

/// Room for each graph of the tenant's loaded index, a little more than its bytes now,
/// with every page already touched: made before the save takes the tenant's locks, so that
/// the copy under them is a `memcpy` and not also the page faults of a fresh allocation
/// (most of a 180 MB graph's copy, docs/benchmarks.md). Empty when the index is
/// not loaded, not changed, or being caught up (no save then), and for an eviction's save
/// ([`Wait::Try`]), which gives up on a busy tenant: it would make them for nothing, on the
/// request thread that enforces the budget.
fn graph_buffers(slot: &TenantSlot, wait: Wait) -> GraphBuffers {
    if wait == Wait::Try {
        return GraphBuffers::new();
    }
    let sizes: Vec<(CollectionName, usize)> = {
        let guard = slot.index.read().ok();
        match guard.as_ref().and_then(|g| g.as_ref()) {
            Some(index) if index.is_dirty() && !index.catching_up() => index
                .collections
                .iter()
                .filter_map(|(name, ci)| Some((name.clone(), ci.graph.as_ref()?.encoded_len())))
                .collect(),
            _ => return GraphBuffers::new(),
        }
    };
    sizes
        .into_iter()
        .map(|(name, len)| {
            // Writes between now and the capture grow the graph a little.
            let room = len + len / 16 + 4096;
            let mut buffer: Vec<u8> = Vec::with_capacity(room);
            // Written, not only allocated, so the page faults happen here: a fill with zeros
            // would be compiled into a zeroed allocation (`calloc`), whose pages the kernel
            // maps only when the copy writes them. The byte and the `black_box` keep it a
            // write.
            std::hint::black_box(&mut buffer)
                .spare_capacity_mut()
                .fill(std::mem::MaybeUninit::new(0xA5));
            (name, buffer)
        })
        .collect()
}

/// One collection's part of a save once its files are written (step 2).
struct WrittenCollection {
    incarnation: Incarnation,
    /// Each slot's record id, for the graph snapshot.
    slots: Vec<Option<String>>,
    image: search_image::Saved,
    graph: Option<GraphFile>,
}

impl Captured {
    /// Step 2: encodes each image from its capture, and writes each graph, and each image of
    /// at least `search_image::IN_FILE_FROM_BYTES`, to a new derived file, durably (synced
    /// and renamed into place).
    fn write_files(
        self,
        store: &Store,
        key: TenantKey,
    ) -> Result<HashMap<CollectionName, WrittenCollection>, EngineError> {
        let version = self.version;
        let mut written = HashMap::new();
        for (name, c) in self.collections {
            let slots = c.image.slot_ids()?;
            let image = c.image.encode(version)?;
            let image = if image.len() >= search_image::IN_FILE_FROM_BYTES {
                search_image::Saved::InFile(graph_file::save_bytes(
                    store,
                    key,
                    &name,
                    version,
                    Holds::Image,
                    &image,
                )?)
            } else {
                search_image::Saved::Inline(image)
            };
            let graph = match c.graph {
                Some(bytes) => Some(graph_file::save_bytes(
                    store,
                    key,
                    &name,
                    version,
                    Holds::Graph,
                    &bytes,
                )?),
                None => None,
            };
            written.insert(
                name,
                WrittenCollection {
                    incarnation: c.incarnation,
                    slots,
                    image,
                    graph,
                },
            );
        }
        Ok(written)
    }
}

/// Step 3: the rows naming the files and the images `written` at `version` (the log up to
/// `seq`), in one short transaction. `tenant` is checked in it, so that a save overtaken by a
/// purge writes nothing into the erased range.
fn commit_rows(
    store: &Store,
    key: TenantKey,
    tenant: &TenantId,
    (version, seq): (u64, u64),
    mut written: HashMap<CollectionName, WrittenCollection>,
) -> Result<(), EngineError> {
    // The files the committed rows name: all the tenant's derived files keep.
    let mut named = Vec::new();
    store.write(|w| {
        if w.tenant(tenant)?.map(|meta| meta.key) != Some(key) {
            return Err(EngineError::TenantNotFound(tenant.clone()));
        }
        for c in w.collections(key)? {
            match written.remove(&c.name) {
                Some(saved) if saved.incarnation == Incarnation::of(&c) => {
                    named.extend(saved.graph.as_ref().map(|f| f.name.clone()));
                    if let search_image::Saved::InFile(f) = &saved.image {
                        named.push(f.name.clone());
                    }
                    snapshot::save(
                        w,
                        key,
                        &c.name,
                        &snapshot::Snapshot::new(version, c.dim, saved.slots, saved.graph),
                    )?;
                    search_image::save(w, key, &c.name, &saved.image)?;
                    w.put_change_mark(key, &c.name, ChangeMark { version, seq })?;
                }
                // Created after the capture (or without records yet): no image, and the
                // next load rebuilds.
                _ => {
                    snapshot::delete(w, key, &c.name)?;
                    search_image::delete(w, key, &c.name)?;
                    w.delete_change_mark(key, &c.name)?;
                }
            }
        }
        // Every image of the tenant reflects the log up to `seq` now; the entries after it
        // (writes made since the capture) stay, for the load to replay.
        w.trim_change_log(key, seq)?;
        Ok::<_, EngineError>(())
    })?;
    // Best effort: a file left behind is deleted by the next save, or with the tenant.
    let _ = store.retain_derived(key, |name| named.iter().any(|n| n == name));
    Ok(())
}

/// Saves the slot's indexes if they are loaded and changed, holding the tenant's locks only
/// for the capture (see the module docs); whether it saved.
pub(crate) fn save_slot(
    store: &Store,
    key: TenantKey,
    slot: &TenantSlot,
) -> Result<bool, EngineError> {
    let saving = lock_slot(&slot.saving);
    save_holding(store, key, slot, saving, Wait::Block).map(|saved| saved.unwrap_or(false))
}

/// [`save_slot`] that waits for nothing: `None` when another save of the tenant, one of its
/// writes or a graph install holds a lock the save needs. For an eviction, which chooses
/// another victim rather than wait on a busy tenant.
pub(crate) fn try_save_slot(
    store: &Store,
    key: TenantKey,
    slot: &TenantSlot,
) -> Option<Result<bool, EngineError>> {
    let saving = try_lock(&slot.saving)?;
    save_holding(store, key, slot, saving, Wait::Try).transpose()
}

/// The index's read guard, tried for up to [`RETRY_READ_FOR`]: its write lock is held only
/// for short steps (a write's apply, a graph's install or catch-up round).
fn retry_read(slot: &TenantSlot) -> Option<std::sync::RwLockReadGuard<'_, Option<TenantIndex>>> {
    let until = std::time::Instant::now() + RETRY_READ_FOR;
    loop {
        match slot.index.try_read() {
            Ok(guard) => return Some(guard),
            Err(TryLockError::Poisoned(_)) => return None,
            Err(TryLockError::WouldBlock) if std::time::Instant::now() >= until => return None,
            Err(TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
        }
    }
}

/// How long a failed eviction's save tries to mark its victim changed again.
const RETRY_READ_FOR: std::time::Duration = std::time::Duration::from_millis(100);

/// A mutex's guard if it is free now (a poisoned one too: nothing these guard can be left
/// half-done), `None` if it is held.
pub(crate) fn try_lock(m: &Mutex<()>) -> Option<MutexGuard<'_, ()>> {
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Whether a save waits for the tenant's locks or gives up when one is held.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Block,
    Try,
}

/// The body of [`save_slot`], with the tenant's `saving` lock held; `Ok(None)` when `wait`
/// is [`Wait::Try`] and the write order or the index lock is held.
fn save_holding(
    store: &Store,
    key: TenantKey,
    slot: &TenantSlot,
    _saving: MutexGuard<'_, ()>,
    wait: Wait,
) -> Result<Option<bool>, EngineError> {
    let started = std::time::Instant::now();
    let mut buffers = graph_buffers(slot, wait);
    let (captured, locked) = {
        let (_order, index) = match wait {
            Wait::Block => (slot.order.exclusive(), slot.index.read()),
            Wait::Try => {
                let Some(order) = slot.order.try_exclusive() else {
                    return Ok(None);
                };
                match slot.index.try_read() {
                    Ok(guard) => (order, Ok(guard)),
                    Err(TryLockError::Poisoned(e)) => (order, Err(e)),
                    Err(TryLockError::WouldBlock) => return Ok(None),
                }
            }
        };
        // A poisoned index is left for the next reader to drop (`IndexRegistry::read_index`).
        let Ok(guard) = index else {
            return Ok(Some(false));
        };
        let held = std::time::Instant::now();
        match guard.as_ref() {
            // Not while a restored graph is caught up: its last save stays the one to load
            // from (`CollectionIndex::catching_up`); the install saves.
            Some(index) if index.is_dirty() && !index.catching_up() => {
                (index.capture(store, key, &mut buffers)?, held.elapsed())
            }
            _ => return Ok(Some(false)),
        }
    };
    // Any left over (a graph gone since they were made) are unmapped with no lock held.
    drop(buffers);
    let (graphs_time, images_time, graph_bytes, unsaved) = (
        captured.graphs_time,
        captured.images_time,
        captured.graph_bytes,
        captured.unsaved,
    );
    let saved = match finish(store, key, slot, captured) {
        // Purged meanwhile (its purge waits for this save, then deletes its files): there is
        // nothing left to save, which is not a failure.
        Err(EngineError::TenantNotFound(_)) => return Ok(Some(false)),
        saved => saved,
    };
    if saved.is_err() {
        // The capture cleared the flag; what it captured is not saved after all, so the flag is
        // set again. An eviction waits for no lock of its victim (its thread may hold the
        // victim's index already, read, for another tenant's search across a share, and a
        // blocking read behind a queued writer would never return), so it tries for a while:
        // not every holder of the write lock marks the index changed itself (the graph
        // builder's start and catch-up rounds do not), and a flag lost here would make every
        // later save skip the tenant.
        let guard = match wait {
            Wait::Block => slot.index.read().ok(),
            Wait::Try => retry_read(slot),
        };
        match guard.as_ref().and_then(|g| g.as_ref()) {
            Some(index) => {
                index.mark_dirty();
                index.unsaved_changes.fetch_add(unsaved, Ordering::Relaxed);
            }
            None if guard.is_none() => tracing::warn!(
                tenant = %slot.id,
                "a failed save could not mark the tenant's indexes changed again; its next \
                 load replays or rebuilds them from storage"
            ),
            None => {}
        }
    }
    saved?;
    let total = started.elapsed();
    if total.as_millis() >= 100 {
        tracing::info!(
            tenant = %slot.id,
            locked_ms = locked.as_millis() as u64,
            graphs_copied_ms = graphs_time.as_millis() as u64,
            images_captured_ms = images_time.as_millis() as u64,
            graph_bytes,
            total_ms = total.as_millis() as u64,
            "index snapshot saved"
        );
    }
    Ok(Some(true))
}

/// Steps 2 and 3 of `save_slot`, with no lock of the tenant held.
fn finish(
    store: &Store,
    key: TenantKey,
    slot: &TenantSlot,
    captured: Captured,
) -> Result<(), EngineError> {
    #[cfg(test)]
    slot.run_save_hook(SaveStage::Captured)?;
    // Files an earlier save wrote and then failed to name would otherwise pile up, one whole
    // graph per failed save. Only once there is something to save: an eviction tries every
    // candidate, and a clean one must cost no storage read.
    delete_unnamed_files(store, key)?;
    let at = (captured.version, captured.seq);
    let written = captured.write_files(store, key)?;
    #[cfg(test)]
    slot.run_save_hook(SaveStage::FilesDurable)?;
    commit_rows(store, key, &slot.id, at, written)
}

/// Deletes the tenant's derived files no committed row names (and temporary ones): the
/// caller holds the tenant's save order, so no other save is writing one.
pub(crate) fn delete_unnamed_files(store: &Store, key: TenantKey) -> Result<(), EngineError> {
    if let Some(named) = committed_files(store, key)? {
        let _ = store.retain_derived(key, |name| named.iter().any(|n| n == name));
    }
    Ok(())
}

/// The files the tenant's committed snapshots and image rows name; `None` when a snapshot or
/// an image row naming a file does not decode (then nothing may be deleted: it may name one).
fn committed_files(store: &Store, key: TenantKey) -> Result<Option<Vec<String>>, EngineError> {
    let r = store.read()?;
    let mut named = Vec::new();
    for c in r.collections(key)? {
        // The file's name only, not the snapshot's list of slot ids (a large tenant's
        // millions of strings): this runs at every save and at a tenant's load.
        let row = r.blob(key, &snapshot::blob_name(&c.name))?;
        match row.as_deref().map(snapshot::named_file) {
            None | Some(Ok(None)) => {}
            Some(Err(_)) => return Ok(None),
            Some(Ok(Some(f))) => named.push(f.name),
        }
        let row = r.blob(key, &search_image::blob_name(&c.name))?;
        match row.as_deref().and_then(search_image::named_file) {
            None => {}
            Some(Err(_)) => return Ok(None),
            Some(Ok(f)) => named.push(f.name),
        }
    }
    Ok(Some(named))
}

#[cfg(test)]
#[path = "index_save_tests.rs"]
mod tests;
