//! A large collection's load reads its two halves side by side: another thread decodes the
//! search image while this one reads the snapshot and maps and checks the graph file it names.
//!
//! Why: the two are independent until the end, and each is a large share of a large tenant's
//! load. At 200,000 × 384 the image (20 MB, mostly BM25 postings) took 130–230 ms to decode and
//! the graph file (350 MB) 40–75 ms to check from the OS page cache, 160–340 ms from the disk;
//! one after the other they were most of the load's 0.3–0.7 s. Below
//! [`SIDE_BY_SIDE_FROM_BYTES`] of image a second thread costs more than it saves, and such a
//! collection seldom has a graph (it is searched exactly), so the load stays on one thread.
//!
//! An image in a file of its own (`crate::search_image`, the large ones) is also read there,
//! so its file and the graph's come off the disk together.
//!
//! The graph is read before the image says whether it fits (its version, slots and dimension are
//! compared after both are done, as in a load on one thread): a snapshot and an image are saved in
//! one transaction, so they disagree only after damage, when the graph is dropped as before.
//! The helper's CPU time is charged to the job that asked for the load
//! (`strata_sched::adjust_job_cpu`), as if one thread had done it all.

use strata_index::{HnswIndex, HnswParams};
use strata_store::{Reads, Store, TenantKey};
use strata_types::Collection;

use crate::EngineError;
use crate::collection_index::{CollectionIndex, index_metric};
use crate::graph_file;
use crate::search_image::{self, Loaded, Saved};
use crate::snapshot::{self, SavedGraph, Snapshot};

/// Images at least this long are decoded beside the graph file's read.
pub(crate) const SIDE_BY_SIDE_FROM_BYTES: usize = 256 << 10;

/// What the load read besides the image.
pub(crate) enum Beside {
    /// Nothing: the image was decoded alone; the snapshot is still to be read.
    NotRead,
    Read(Box<Read>),
}

/// What [`Beside::Read`] holds.
pub(crate) struct Read {
    /// The snapshot; `None` when it is missing or does not decode.
    pub snapshot: Option<Snapshot>,
    /// When the snapshot names a graph file, that graph as [`graph_file::load`] returned it.
    pub graph: Option<Result<HnswIndex, EngineError>>,
}

/// An image decoded, as [`search_image::decode`] returns it.
pub(crate) type Decoded = Result<(CollectionIndex, Loaded), EngineError>;

/// Reads and decodes `saved`, the image of collection `c`, and, when the image is large, reads
/// the collection's snapshot and its graph file meanwhile (an image in a file of its own is
/// read on the helper thread too). An error is the store's, reading the snapshot; the image's
/// and the graph's own (a missing or damaged file among them) are in what is returned, for the
/// caller to treat as it treats them on one thread (a rebuild, an exact scan).
pub(crate) fn decode(
    store: &Store,
    r: &impl Reads,
    key: TenantKey,
    c: &Collection,
    saved: &Saved,
    params: HnswParams,
) -> Result<(Decoded, Beside), EngineError> {
    let alone = || {
        saved
            .read(store, key)
            .and_then(|bytes| search_image::decode(&bytes, c, params))
    };
    if saved.len() < SIDE_BY_SIDE_FROM_BYTES as u64 {
        return Ok((alone(), Beside::NotRead));
    }
    std::thread::scope(|s| {
        let helper = std::thread::Builder::new()
            .name("strata-image-load".into())
            .spawn_scoped(s, || {
                let cpu = strata_sched::thread_cpu_ns();
                let decoded = alone();
                let used = cpu.zip(strata_sched::thread_cpu_ns()).map(|(a, b)| b - a);
                (decoded, used)
            });
        // No thread to be had (a process at its limit): the load goes on in one.
        let Ok(helper) = helper else {
            return Ok((alone(), Beside::NotRead));
        };
        let beside = read_graph(store, r, key, c, params);
        let (decoded, used) = helper
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if let Some(ns) = used {
            strata_sched::adjust_job_cpu(i64::try_from(ns).unwrap_or(i64::MAX));
        }
        #[cfg(test)]
        tests::SIDE_BY_SIDE.set(tests::SIDE_BY_SIDE.get() + 1);
        Ok((decoded, beside?))
    })
}

/// The snapshot of collection `c` and the graph file it names, mapped and checked.
fn read_graph(
    store: &Store,
    r: &impl Reads,
    key: TenantKey,
    c: &Collection,
    params: HnswParams,
) -> Result<Beside, EngineError> {
    let snapshot = snapshot::load(r, key, &c.name)?.and_then(Result::ok);
    let graph = match &snapshot {
        Some(Snapshot {
            dim,
            graph: Some(SavedGraph::File(f)),
            ..
        }) if *dim == c.dim => {
            let metric = index_metric(c.metric);
            Some(graph_file::load(
                store,
                key,
                f,
                c.dim as usize,
                metric,
                params,
            ))
        }
        _ => None,
    };
    Ok(Beside::Read(Box::new(Read { snapshot, graph })))
}

#[cfg(test)]
pub(crate) mod tests {
    thread_local! {
        /// Loads this thread made on two threads, for the tests that must reach that path.
        pub(crate) static SIDE_BY_SIDE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
}
