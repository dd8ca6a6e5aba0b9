//! Approximate nearest-neighbour search: an HNSW graph keyed by `u32` slot.
//!
//! The graph is this crate's own (`hnsw_graph.rs`), laid out like hnswlib's: each node's
//! vector and level-0 neighbour list share one cache-line-aligned row, the walk prefetches the
//! rows it is about to read, the visited set is an epoch-tagged array reused per thread
//! (`hnsw_scratch.rs`), and distances go through this crate's SIMD kernels (AVX-512, AVX2 or
//! portable, picked once per process). It replaced a usearch wrapper that reached 0.5–0.75×
//! hnswlib's QPS at equal recall (see `docs/benchmarks.md`).
//!
//! Conventions:
//! - Cosine indexes store *normalised* vectors under the inner-product distance `1 - dot`,
//!   so a distance evaluation is one dot product rather than a dot product and two norms.
//! - Distances are turned into scores where higher is better, exactly as [`Metric::score`]
//!   would compute them: `1 - d` for cosine and dot, `-sqrt(d)` for L2.
//! - The per-query `ef` is a plain argument (the beam width, at least `k`), not shared
//!   state, so concurrent searches with different `ef` are safe.
//!
//! Concurrency: `HnswIndex` is `Send + Sync`. `search` and `search_filtered` take `&self` and
//! may run on many threads at once, each with its own scratch memory. `insert`,
//! `insert_batch`, `remove` and `reserve` take `&mut self`; the engine wraps the index in an
//! `RwLock`.
//!
//! Deletes are tombstones: the node stays in the graph (so it still routes searches) and is
//! never returned; re-inserting a slot appends a new node. The engine counts tombstones and
//! rebuilds a graph that holds too many.

use std::borrow::Cow;

use crate::error::IndexError;
use crate::exact::{Hit, sort_hits};
use crate::hnsw_graph::{Graph, Space};
use crate::hnsw_scratch::Near;
use crate::kernels::Kernel;
use crate::metric::Metric;

/// Magic bytes and format version at the start of [`HnswIndex::to_bytes`]. Version 1 was
/// usearch's serialisation; it is refused (and the engine rebuilds such a graph). Version 2
/// had no calibration; it still loads, uncalibrated (see `hnsw_calibrate.rs`). Version 3 had
/// the rows inside the body (layout 1 in `hnsw_format.rs`); it still loads, by a copy.
/// Version 4 did not record the construction beam; it loads as built with the one given.
const MAGIC: &[u8; 8] = b"STRHNSW5";
const MAGIC_V4: &[u8; 8] = b"STRHNSW4";
const MAGIC_V3: &[u8; 8] = b"STRHNSW3";
const MAGIC_V2: &[u8; 8] = b"STRHNSW2";
/// Version 2 header: magic, dimension (u32 LE), metric code (u8).
const HEADER_V2_LEN: usize = MAGIC.len() + 4 + 1;
/// Version 3 (and 4) add the calibration: its `ef` (u32 LE, 0 for none) and the live vectors the
/// graph held when it was measured (u32 LE).
const HEADER_V4_LEN: usize = HEADER_V2_LEN + 4 + 4;
/// Version 5 adds the construction beam the graph was built with (u32 LE, at least 1), so that
/// a graph saved before its tenant's `ef_construction` changed is known to need a rebuild.
const HEADER_LEN: usize = HEADER_V4_LEN + 4;
/// The widest construction beam a stored graph may record: a damaged header must not make
/// later inserts walk an unbounded beam.
const MAX_STORED_EF_CONSTRUCTION: u32 = 1 << 16;

/// Smallest batch [`HnswIndex::insert_batch`] spreads over threads: below it, starting the
/// threads costs more than they save.
pub const PARALLEL_MIN_BATCH: usize = 256;
/// Most threads one [`HnswIndex::insert_batch`] starts, whatever it is asked for.
const MAX_BUILD_THREADS: usize = 64;

/// HNSW construction and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Connectivity: edges per node on upper layers (twice that on the base layer). Default 16.
    pub m: usize,
    /// Candidate list size while inserting. Default 128.
    pub ef_construction: usize,
    /// Default candidate list size while searching, when a query gives none. Default 64.
    pub ef_search: usize,
    /// Whether a calibration ([`HnswIndex::calibrate`]) may raise the search default above
    /// `ef_search` (never lower it). `false` when an operator chose `ef_search`: it is then
    /// used exactly. Default `true`.
    pub auto_ef: bool,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 128,
            ef_search: 64,
            auto_ef: true,
        }
    }
}

impl HnswParams {
    fn validate(&self) -> Result<(), IndexError> {
        let check = |name, value: usize, ok: bool, reason| {
            if ok {
                Ok(())
            } else {
                Err(IndexError::InvalidParam {
                    name,
                    value,
                    reason,
                })
            }
        };
        check(
            "m",
            self.m,
            (2..=256).contains(&self.m),
            "must be in 2..=256",
        )?;
        check(
            "ef_construction",
            self.ef_construction,
            self.ef_construction >= 1,
            "must be at least 1",
        )?;
        check(
            "ef_search",
            self.ef_search,
            self.ef_search >= 1,
            "must be at least 1",
        )
    }
}

/// The kernel and distance form of `metric`, on this CPU's fastest kernel tier.
fn space_of(metric: Metric) -> (Space, Kernel) {
    match metric {
        Metric::Cosine | Metric::Dot => (Space::InnerProduct, crate::kernels::dot_kernel()),
        Metric::L2 => (Space::L2, crate::kernels::l2_squared_kernel()),
    }
}

/// An HNSW index of `f32` vectors keyed by `u32` slot. See the module docs for concurrency.
pub struct HnswIndex {
    pub(crate) graph: Graph,
    metric: Metric,
    params: HnswParams,
    /// The last calibration's result (persisted with the graph), if any.
    calibrated: Option<crate::hnsw_calibrate::Calibrated>,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("dim", &self.graph.dim)
            .field("metric", &self.metric)
            .field("params", &self.params)
            .field("calibrated", &self.calibrated)
            .field("len", &self.len())
            .finish()
    }
}

impl HnswIndex {
    /// An empty index for `dim`-dimensional vectors.
    pub fn new(dim: usize, metric: Metric, params: HnswParams) -> Result<Self, IndexError> {
        params.validate()?;
        if dim == 0 || dim > u32::MAX as usize {
            return Err(IndexError::InvalidParam {
                name: "dim",
                value: dim,
                reason: "must be in 1..=u32::MAX",
            });
        }
        let (space, kernel) = space_of(metric);
        Ok(HnswIndex {
            graph: Graph::new(dim, params.m, space, kernel),
            metric,
            params,
            calibrated: None,
        })
    }

    /// Scores with the portable kernels instead of the CPU's SIMD tier: lets tests check
    /// that both give the same graph answers.
    #[cfg(test)]
    pub(crate) fn use_portable_kernels(&mut self) {
        self.graph.kernel = match self.metric {
            Metric::Cosine | Metric::Dot => crate::kernels::scalar::dot,
            Metric::L2 => crate::kernels::scalar::l2_squared,
        };
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.graph.dim
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The parameters given at construction. For a restored graph, `m` is the connectivity
    /// recorded in its bytes (it was built with it), and so is `ef_construction` when its
    /// version records it (5 and later); the others are the ones given.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Changes the default search beam (`ef` of queries that give none) and whether a
    /// calibration may raise it (`auto_ef`); no rebuild needed. Switching `auto_ef` on forgets
    /// the calibration: none is measured while an operator's `ef_search` holds, so one kept
    /// from before may be stale, and the builder measures again (`calibrated` is `None`).
    pub fn set_ef_search(&mut self, ef_search: usize, auto_ef: bool) {
        if auto_ef && !self.params.auto_ef {
            self.calibrated = None;
        }
        self.params.ef_search = ef_search.max(1);
        self.params.auto_ef = auto_ef;
    }

    /// The beam of a query that gives no `ef`: `ef_search`, raised to the calibrated `ef`
    /// when `auto_ef` allows it (see `hnsw_calibrate.rs`).
    pub fn default_ef(&self) -> usize {
        match self.calibrated {
            Some(c) if self.params.auto_ef => self.params.ef_search.max(c.ef),
            _ => self.params.ef_search,
        }
    }

    /// The last calibration's result (kept with the graph's bytes), if any.
    pub fn calibrated(&self) -> Option<crate::hnsw_calibrate::Calibrated> {
        self.calibrated
    }

    pub(crate) fn set_calibrated(&mut self, c: Option<crate::hnsw_calibrate::Calibrated>) {
        self.calibrated = c;
    }

    /// Number of live (not deleted) vectors.
    pub fn len(&self) -> usize {
        self.graph.slot_node.len()
    }

    /// Deleted vectors still in the graph as tombstones (they route walks until a rebuild).
    pub fn tombstones(&self) -> usize {
        self.graph.nodes() - self.len()
    }

    /// Bytes of memory the index holds: its rows (vectors and level-0 links, as far as their
    /// pages are touched), upper-level links, per-node tables and the slot map (as allocated).
    pub fn memory_bytes(&self) -> usize {
        self.graph.memory_bytes()
    }

    /// Whether the index holds no live vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `slot` holds a live vector.
    pub fn contains(&self, slot: u32) -> bool {
        self.graph.slot_node.contains_key(&slot)
    }

    /// Makes room for `additional` more vectors without further reallocation.
    pub fn reserve(&mut self, additional: usize) -> Result<(), IndexError> {
        self.graph.reserve(additional);
        Ok(())
    }

    /// Checks the vector and returns the form stored in the graph (normalised for cosine).
    fn prepare<'v>(&self, vector: &'v [f32]) -> Result<Cow<'v, [f32]>, IndexError> {
        if vector.len() != self.graph.dim {
            return Err(IndexError::DimensionMismatch {
                expected: self.graph.dim,
                actual: vector.len(),
            });
        }
        if let Some(position) = vector.iter().position(|x| !x.is_finite()) {
            return Err(IndexError::NonFinite { position });
        }
        if self.metric.needs_normalization() {
            let mut v = vector.to_vec();
            self.metric.normalize_for_index(&mut v);
            Ok(Cow::Owned(v))
        } else {
            Ok(Cow::Borrowed(vector))
        }
    }

    /// Node ids are `u32`: refuses the insert that would need one more.
    fn check_room(&self, more: usize) -> Result<(), IndexError> {
        let nodes = self.graph.nodes().saturating_add(more);
        if nodes > u32::MAX as usize {
            return Err(IndexError::InvalidParam {
                name: "nodes",
                value: nodes,
                reason: "a graph holds at most u32::MAX nodes, tombstones included",
            });
        }
        Ok(())
    }

    /// Inserts `vector` under `slot`, replacing any vector the slot held (upsert).
    pub fn insert(&mut self, slot: u32, vector: &[f32]) -> Result<(), IndexError> {
        let v = self.prepare(vector)?;
        self.check_room(1)?;
        self.graph.remove(slot);
        self.graph.insert(slot, &v, self.params.ef_construction);
        Ok(())
    }

    /// Inserts many vectors (upsert semantics as [`Self::insert`]; if a slot appears twice
    /// in `items`, the last occurrence wins). Either every vector is validated and the batch
    /// proceeds, or an error is returned before anything changes.
    ///
    /// With `threads <= 1` (or a batch smaller than [`PARALLEL_MIN_BATCH`]) the graph is built
    /// on the calling thread, and the same inserts in the same order always give the same
    /// graph. With more, up to `threads` threads link the batch's nodes concurrently (see
    /// `hnsw_parallel.rs`): the same algorithm, but the graph depends on how the threads
    /// interleave, so it differs from run to run (at the same quality).
    pub fn insert_batch(
        &mut self,
        items: &[(u32, &[f32])],
        threads: usize,
    ) -> Result<(), IndexError> {
        let mut last = std::collections::HashMap::with_capacity(items.len());
        for (i, (slot, v)) in items.iter().enumerate() {
            self.prepare(v)?;
            last.insert(*slot, i);
        }
        self.check_room(last.len())?;
        self.graph.reserve(last.len());
        let threads = threads.clamp(1, MAX_BUILD_THREADS);
        if threads == 1 || last.len() < PARALLEL_MIN_BATCH {
            for (i, (slot, v)) in items.iter().enumerate() {
                if last.get(slot) == Some(&i) {
                    let v = self.prepare(v)?;
                    self.graph.remove(*slot);
                    self.graph.insert(*slot, &v, self.params.ef_construction);
                }
            }
            return Ok(());
        }
        // Append every node first (the arrays must not move while the threads link them).
        let first = u32::try_from(self.graph.nodes()).unwrap_or(u32::MAX);
        for (i, (slot, v)) in items.iter().enumerate() {
            if last.get(slot) == Some(&i) {
                let v = self.prepare(v)?;
                self.graph.remove(*slot);
                self.graph.append(*slot, &v);
            }
        }
        crate::hnsw_parallel::link_parallel(
            &mut self.graph,
            first,
            self.params.ef_construction,
            threads,
        );
        Ok(())
    }

    /// Removes `slot`; returns whether it was present.
    pub fn remove(&mut self, slot: u32) -> Result<bool, IndexError> {
        Ok(self.graph.remove(slot))
    }

    /// Copies the vector stored under `slot` into `out` (`dim` floats), exactly as it was
    /// inserted (normalised, for cosine); returns whether the slot holds one. Lets the engine
    /// keep no copy of its own of the vectors a graph holds.
    pub fn get(&self, slot: u32, out: &mut [f32]) -> Result<bool, IndexError> {
        if out.len() != self.graph.dim {
            return Err(IndexError::DimensionMismatch {
                expected: self.graph.dim,
                actual: out.len(),
            });
        }
        match self.graph.slot_node.get(&slot) {
            Some(&node) => {
                out.copy_from_slice(self.graph.vector(node));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Converts a graph distance to this crate's higher-is-better score, in the metric's
    /// finite range: rounding can put a cosine of unit vectors a hair outside `[-1, 1]`.
    fn to_score(&self, distance: f32) -> f32 {
        let raw = match self.metric {
            Metric::Cosine | Metric::Dot => 1.0 - distance,
            // Not `distance.max(0.0)`: that maps NaN to 0, the best possible score.
            Metric::L2 => -(if distance < 0.0 { 0.0 } else { distance }).sqrt(),
        };
        self.metric.finite_score(raw)
    }

    fn collect(&self, found: Vec<Near>, k: usize) -> Vec<Hit> {
        let mut hits: Vec<Hit> = found
            .into_iter()
            .map(|n| Hit {
                slot: self.graph.labels[n.node as usize],
                score: self.to_score(n.dist),
            })
            .collect();
        sort_hits(&mut hits);
        hits.truncate(k);
        hits
    }

    /// The approximately best `k` slots for `query`, best first (ties by slot ascending).
    /// `ef` overrides [`HnswParams::ef_search`] for this query; it is raised to `k` if lower.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<Hit>, IndexError> {
        self.search_filtered(query, k, ef, |_| true)
    }

    /// Like [`Self::search`] but returns only slots for which `predicate` is true. Filtered
    /// nodes still route the walk; the predicate is asked only about nodes close enough to
    /// enter the results. With a very selective predicate the walk may visit most of the
    /// graph, and the caller should prefer an exact scan of the matching slots. A panic in the
    /// predicate reaches the caller; the index is unchanged by it.
    pub fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        predicate: impl Fn(u32) -> bool,
    ) -> Result<Vec<Hit>, IndexError> {
        let q = self.prepare(query)?;
        if k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let ef = k.max(ef.unwrap_or_else(|| self.default_ef()));
        let g = &self.graph;
        let found = g.search(&q, ef, |node| {
            g.deleted[node as usize] == 0 && predicate(g.labels[node as usize])
        });
        Ok(self.collect(found, k))
    }

    /// [`Self::search`] as if `slot`'s vector were not in the graph: its node is never entered
    /// nor expanded, so a query by a stored vector finds its neighbours the way a fresh query
    /// would (a calibration's leave-one-out; see `Graph::search_without`). A slot that holds
    /// no vector is searched for as by [`Self::search`], and never returned.
    pub fn search_without(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        slot: u32,
    ) -> Result<Vec<Hit>, IndexError> {
        let Some(&node) = self.graph.slot_node.get(&slot) else {
            return self.search_filtered(query, k, ef, |s| s != slot);
        };
        let q = self.prepare(query)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let ef = k.max(ef.unwrap_or_else(|| self.default_ef()));
        let g = &self.graph;
        let found = g.search_without(&q, ef, node, |n| g.deleted[n as usize] == 0);
        Ok(self.collect(found, k))
    }

    /// Serialises the index (graph and vectors) into a byte buffer; see [`Self::from_bytes`]
    /// and `hnsw_format.rs` for the layout.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IndexError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out).map_err(|e| IndexError::Corrupt {
            reason: format!("encoding: {e}"),
        })?;
        Ok(out)
    }

    /// Bytes [`Self::write_to`] writes (and [`Self::to_bytes`] returns).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + crate::hnsw_format::encoded_len(&self.graph, HEADER_LEN)
    }

    /// Writes exactly the bytes of [`Self::to_bytes`] to `out`, without building them in
    /// memory first: the big arrays go out as they sit in memory, so saving a large graph to
    /// a file costs no second copy of it.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let dim = u32::try_from(self.graph.dim).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "dimension above u32")
        })?;
        out.write_all(MAGIC)?;
        out.write_all(&dim.to_le_bytes())?;
        out.write_all(&[self.metric.code()])?;
        let (ef, at) = self
            .calibrated
            .map_or((0, 0), |c| (c.ef as u32, c.at_len as u32));
        out.write_all(&ef.to_le_bytes())?;
        out.write_all(&at.to_le_bytes())?;
        let beam = u32::try_from(self.params.ef_construction.max(1))
            .unwrap_or(u32::MAX)
            .min(MAX_STORED_EF_CONSTRUCTION);
        out.write_all(&beam.to_le_bytes())?;
        crate::hnsw_format::write_to(&self.graph, HEADER_LEN, out)
    }

    /// The graph's body in layout 1 (versions 2 and 3), for tests that old files still load.
    #[cfg(test)]
    pub(crate) fn body_layout_1(&self) -> Vec<u8> {
        let mut out = Vec::new();
        crate::hnsw_format::write_layout_1(&self.graph, &mut out).expect("a Vec takes it");
        out
    }

    /// Restores an index written by [`Self::to_bytes`]. `dim` and `metric` must match the ones
    /// recorded in the bytes; `params` supplies the search and future-insert settings.
    pub fn from_bytes(
        bytes: &[u8],
        dim: usize,
        metric: Metric,
        params: HnswParams,
    ) -> Result<Self, IndexError> {
        let mut r = bytes;
        Self::read_from(&mut r, bytes.len() as u64, dim, metric, params)
    }

    /// Restores an index from a stream holding exactly the `len` bytes of
    /// [`Self::to_bytes`] (a file the caller opened, say): every array is read straight into
    /// its final buffer, so the graph is copied once, and decoding is as closed as
    /// [`Self::from_bytes`]'s. A stream that ends early, fails, or holds other bytes is
    /// [`IndexError::Corrupt`]. The caller checks that nothing follows the `len` bytes.
    pub fn read_from(
        r: &mut impl std::io::Read,
        len: u64,
        dim: usize,
        metric: Metric,
        params: HnswParams,
    ) -> Result<Self, IndexError> {
        let mut r = crate::hnsw_format::Stream(r);
        Self::read_body(&mut r, len, dim, metric, params)
    }

    /// Restores an index from a mapped file holding exactly the bytes of [`Self::to_bytes`],
    /// as closed as [`Self::from_bytes`]: a large graph's level-0 rows stay in the mapping,
    /// not copied (see `hnsw_map.rs`), and the rest is read from it. A graph of an older
    /// version is read by a copy.
    pub fn from_map(
        map: crate::GraphMap,
        dim: usize,
        metric: Metric,
        params: HnswParams,
    ) -> Result<Self, IndexError> {
        let len = map.bytes().len() as u64;
        let mut r = crate::hnsw_map::MapReader::new(map);
        Self::read_body(&mut r, len, dim, metric, params)
    }

    /// Whether the graph's level-0 rows are (partly) pages of the file it was loaded from
    /// ([`Self::from_map`]), rather than memory of its own.
    pub fn maps_a_file(&self) -> bool {
        self.graph.rows.maps_a_file()
    }

    fn read_body(
        r: &mut impl crate::hnsw_format::BodyRead,
        len: u64,
        dim: usize,
        metric: Metric,
        params: HnswParams,
    ) -> Result<Self, IndexError> {
        use crate::hnsw_format::Layout;
        let corrupt = |reason: &str| IndexError::Corrupt {
            reason: reason.to_string(),
        };
        let mut header = [0u8; HEADER_LEN];
        if len < HEADER_V2_LEN as u64 || r.read_exact(&mut header[..HEADER_V2_LEN]).is_err() {
            return Err(corrupt(
                "missing STRHNSW header (another format or version)",
            ));
        }
        let (header_len, layout) = match &header[..MAGIC.len()] {
            m if m == MAGIC => (HEADER_LEN, Layout::RowsLast),
            m if m == MAGIC_V4 => (HEADER_V4_LEN, Layout::RowsLast),
            m if m == MAGIC_V3 => (HEADER_V4_LEN, Layout::RowsInside),
            m if m == MAGIC_V2 => (HEADER_V2_LEN, Layout::RowsInside),
            _ => {
                return Err(corrupt(
                    "missing STRHNSW header (another format or version)",
                ));
            }
        };
        if len < header_len as u64
            || r.read_exact(&mut header[HEADER_V2_LEN..header_len])
                .is_err()
        {
            return Err(corrupt("truncated STRHNSW header"));
        }
        let calibrated = match header_len {
            HEADER_V2_LEN => None,
            _ => crate::hnsw_calibrate::Calibrated::decode(&header[HEADER_V2_LEN..HEADER_V4_LEN])
                .map_err(&corrupt)?,
        };
        let built_beam = match header_len {
            HEADER_LEN => {
                let mut beam = [0u8; 4];
                beam.copy_from_slice(&header[HEADER_V4_LEN..HEADER_LEN]);
                match u32::from_le_bytes(beam) {
                    b @ 1..=MAX_STORED_EF_CONSTRUCTION => Some(b as usize),
                    _ => return Err(corrupt("construction beam out of range")),
                }
            }
            _ => None,
        };
        let mut dim_bytes = [0u8; 4];
        dim_bytes.copy_from_slice(&header[MAGIC.len()..MAGIC.len() + 4]);
        let stored_dim = u32::from_le_bytes(dim_bytes) as usize;
        if stored_dim != dim {
            return Err(IndexError::DimensionMismatch {
                expected: dim,
                actual: stored_dim,
            });
        }
        let found = Metric::from_code(header[MAGIC.len() + 4])
            .ok_or_else(|| corrupt("unknown metric code"))?;
        if found != metric {
            return Err(IndexError::MetricMismatch {
                expected: metric,
                found,
            });
        }
        let mut index = Self::new(dim, metric, params)?;
        let body = crate::hnsw_format::Body {
            at: header_len,
            len: len - header_len as u64,
            layout,
        };
        crate::hnsw_format::read_from(r, body, &mut index.graph)?;
        // A calibration measured more live vectors than the graph has nodes: never written.
        if calibrated.is_some_and(|c| c.at_len > index.graph.nodes()) {
            return Err(corrupt(
                "calibration: more vectors measured than the graph holds",
            ));
        }
        index.calibrated = calibrated;
        // The graph's links were laid out with the connectivity it was built with, and (when
        // its header says) chosen with that beam; inserts go on with both until a rebuild.
        index.params.m = index.graph.m;
        if let Some(beam) = built_beam {
            index.params.ef_construction = beam;
        }
        Ok(index)
    }
}

#[cfg(test)]
#[path = "hnsw_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "hnsw_parallel_tests.rs"]
mod parallel_tests;
