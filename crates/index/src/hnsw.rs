//! Approximate nearest-neighbour search: an HNSW graph keyed by `u32` slot, wrapping usearch.
//!
//! Why usearch: it is a mature single-header C++ HNSW with deletes, predicate-filtered search
//! and (de)serialisation to memory buffers, and it builds in ~20 s when its default `numkong`
//! SIMD feature is off (that feature adds minutes to every clean build). Without it usearch
//! has only portable kernels (compiled `-O3 -ffast-math`, no AVX), so on CPUs with AVX2 + FMA
//! (or AVX-512) the index hands usearch this crate's kernels through `Index::change_metric`; on
//! the benchmark machine that raised search QPS by roughly 1.3-1.8x (see `docs/benchmarks.md`).
//! Debug builds keep usearch's kernels (see `install_kernels`).
//!
//! Conventions layered on top of usearch:
//! - Cosine indexes store *normalised* vectors under usearch's inner-product metric, so a
//!   distance evaluation is one dot product rather than a dot product and two norms.
//! - usearch distances are turned into scores where higher is better, exactly as
//!   [`Metric::score`] would compute them: `1 - d` for cosine and dot, `-sqrt(d)` for L2.
//! - The per-query `ef` is passed as the number of candidates requested: usearch explores with
//!   `max(expansion_search, wanted)`, so the index's own `expansion_search` is set to 1 and each
//!   query asks for `max(k, ef)` candidates, then keeps the best `k`. That makes `ef` a plain
//!   argument instead of shared mutable state, so concurrent searches with different `ef` are
//!   safe.
//!
//! Concurrency: `HnswIndex` is `Send + Sync`. `search` and `search_filtered` take `&self` and
//! may run on many threads at once. usearch keeps one scratch context per reserved thread and
//! fails a search when none is free, so searches pass a small gate that lets at most
//! `threads` (the machine's available parallelism) callers into usearch at a time; the rest
//! wait. `insert`, `insert_batch`, `remove` and `reserve` take `&mut self`, because growing the
//! capacity reallocates usearch's internals under any concurrent reader; the engine wraps the
//! index in an `RwLock`.
//!
//! Deletes are tombstones in usearch: the node stays in the graph (so it still routes
//! searches) and is never returned; a later insert reuses the node.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Condvar, Mutex};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::error::IndexError;
use crate::exact::{Hit, sort_hits};
use crate::metric::Metric;

/// Magic bytes and format version at the start of [`HnswIndex::to_bytes`].
const MAGIC: &[u8; 8] = b"STRHNSW1";
/// Header: magic, dimension (u32 LE), metric code (u8).
const HEADER_LEN: usize = MAGIC.len() + 4 + 1;
/// Capacity reserved by a new index.
const INITIAL_CAPACITY: usize = 64;

/// HNSW construction and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Connectivity: edges per node on upper layers (twice that on the base layer). Default 16.
    pub m: usize,
    /// Candidate list size while inserting. Default 128.
    pub ef_construction: usize,
    /// Default candidate list size while searching, when a query gives none. Default 64.
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 128,
            ef_search: 64,
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

/// A counting gate: at most `limit` holders at once, others wait.
struct Gate {
    in_use: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

struct Permit<'a>(&'a Gate);

impl Gate {
    fn new(limit: usize) -> Self {
        Gate {
            in_use: Mutex::new(0),
            freed: Condvar::new(),
            limit: limit.max(1),
        }
    }

    fn enter(&self) -> Permit<'_> {
        // A poisoned counter is still a valid count: the panicking holder's permit was dropped.
        let mut n = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= self.limit {
            n = self.freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut n = self.0.in_use.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        self.0.freed.notify_one();
    }
}

/// The distance usearch should compute, on this crate's SIMD kernels: see the module docs.
/// The kernel is a plain function pointer to the CPU's tier (AVX-512 or AVX2), chosen once
/// here, so each of the millions of distance calls skips the tier dispatch.
fn simd_distance(
    dim: usize,
    metric: Metric,
) -> Box<dyn Fn(*const f32, *const f32) -> f32 + Send + Sync> {
    match metric {
        Metric::Cosine | Metric::Dot => {
            let dot = crate::kernels::dot_kernel();
            Box::new(move |a, b| {
                // SAFETY: usearch passes pointers to two vectors of `dim` f32s.
                let (a, b) = unsafe {
                    (
                        std::slice::from_raw_parts(a, dim),
                        std::slice::from_raw_parts(b, dim),
                    )
                };
                1.0 - dot(a, b)
            })
        }
        Metric::L2 => {
            let l2 = crate::kernels::l2_squared_kernel();
            Box::new(move |a, b| {
                // SAFETY: usearch passes pointers to two vectors of `dim` f32s.
                let (a, b) = unsafe {
                    (
                        std::slice::from_raw_parts(a, dim),
                        std::slice::from_raw_parts(b, dim),
                    )
                };
                l2(a, b)
            })
        }
    }
}

/// An HNSW index of `f32` vectors keyed by `u32` slot. See the module docs for concurrency.
pub struct HnswIndex {
    inner: Index,
    dim: usize,
    metric: Metric,
    params: HnswParams,
    threads: usize,
    gate: Gate,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("params", &self.params)
            .field("len", &self.len())
            .finish()
    }
}

impl HnswIndex {
    /// An empty index for `dim`-dimensional vectors.
    pub fn new(dim: usize, metric: Metric, params: HnswParams) -> Result<Self, IndexError> {
        let mut index = Self::unreserved(dim, metric, params)?;
        index.install_kernels();
        index.reserve_exact(INITIAL_CAPACITY)?;
        Ok(index)
    }

    /// Builds the usearch index without reserving capacity.
    fn unreserved(dim: usize, metric: Metric, params: HnswParams) -> Result<Self, IndexError> {
        params.validate()?;
        if dim == 0 || dim > u32::MAX as usize {
            return Err(IndexError::InvalidParam {
                name: "dim",
                value: dim,
                reason: "must be in 1..=u32::MAX",
            });
        }
        let options = IndexOptions {
            dimensions: dim,
            metric: match metric {
                Metric::Cosine | Metric::Dot => MetricKind::IP,
                Metric::L2 => MetricKind::L2sq,
            },
            quantization: ScalarKind::F32,
            connectivity: params.m,
            expansion_add: params.ef_construction,
            // See the module docs: the per-query ef is passed as the number wanted.
            expansion_search: 1,
            multi: false,
        };
        let inner = Index::new(&options).map_err(|e| IndexError::usearch("new", e))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(HnswIndex {
            inner,
            dim,
            metric,
            params,
            threads,
            gate: Gate::new(threads),
        })
    }

    /// Makes usearch call this crate's SIMD kernels when the CPU has them. usearch keeps the
    /// closure until the index is dropped; call once per `Index` (loading resets usearch's
    /// metric to its built-in one, so `from_bytes` calls this after loading).
    ///
    /// Debug builds keep usearch's kernels: ours, unoptimised behind a closure, made the
    /// recall tests four times slower. `kernels_are_interchangeable` covers this path in tests.
    fn install_kernels(&mut self) {
        if !cfg!(debug_assertions) {
            self.force_install_kernels();
        }
    }

    /// Installs this crate's kernels whenever the CPU has a SIMD tier, whatever the build.
    pub(crate) fn force_install_kernels(&mut self) {
        if crate::kernels::simd_in_use() {
            self.inner
                .change_metric::<f32>(simd_distance(self.dim, self.metric));
        }
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The parameters given at construction. For a restored graph, `m` is the connectivity
    /// recorded in its bytes (it was built with it), the others are the ones given.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Changes the default search beam (`ef` of queries that give none); no rebuild needed.
    pub fn set_ef_search(&mut self, ef_search: usize) {
        self.params.ef_search = ef_search.max(1);
    }

    /// Number of live (not deleted) vectors.
    pub fn len(&self) -> usize {
        self.inner.size()
    }

    /// Bytes of memory the index touches: its graph links and its copy of the vectors (what
    /// [`Self::to_bytes`] writes) plus a per-slot table entry. usearch's allocators reserve
    /// arenas ahead (~16 MB of address space for a graph of a thousand nodes); pages of them
    /// not yet written are not resident, so they are left out.
    pub fn memory_bytes(&self) -> usize {
        const PER_SLOT_TABLE: usize = 16;
        self.inner.serialized_length() + self.inner.capacity() * PER_SLOT_TABLE
    }

    /// Whether the index holds no live vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `slot` holds a live vector.
    pub fn contains(&self, slot: u32) -> bool {
        self.inner.contains(u64::from(slot))
    }

    /// Makes room for `additional` more vectors without further reallocation.
    pub fn reserve(&mut self, additional: usize) -> Result<(), IndexError> {
        self.reserve_exact(self.len().saturating_add(additional))
    }

    fn reserve_exact(&self, capacity: usize) -> Result<(), IndexError> {
        self.inner
            .reserve_capacity_and_threads(capacity, self.threads)
            .map_err(|e| IndexError::usearch("reserve", e))
    }

    /// Grows capacity by doubling so that `needed` vectors fit.
    fn ensure_capacity(&mut self, needed: usize) -> Result<(), IndexError> {
        let capacity = self.inner.capacity();
        if needed > capacity {
            self.reserve_exact(needed.max(capacity.saturating_mul(2)).max(INITIAL_CAPACITY))?;
        }
        Ok(())
    }

    /// Checks the vector and returns the form stored in the graph (normalised for cosine).
    fn prepare<'v>(&self, vector: &'v [f32]) -> Result<std::borrow::Cow<'v, [f32]>, IndexError> {
        if vector.len() != self.dim {
            return Err(IndexError::DimensionMismatch {
                expected: self.dim,
                actual: vector.len(),
            });
        }
        if let Some(position) = vector.iter().position(|x| !x.is_finite()) {
            return Err(IndexError::NonFinite { position });
        }
        if self.metric.needs_normalization() {
            let mut v = vector.to_vec();
            self.metric.normalize_for_index(&mut v);
            Ok(std::borrow::Cow::Owned(v))
        } else {
            Ok(std::borrow::Cow::Borrowed(vector))
        }
    }

    /// Inserts `vector` under `slot`, replacing any vector the slot held (upsert).
    /// Capacity grows automatically, doubling each time.
    pub fn insert(&mut self, slot: u32, vector: &[f32]) -> Result<(), IndexError> {
        let v = self.prepare(vector)?;
        self.remove(slot)?;
        self.ensure_capacity(self.len() + 1)?;
        self.inner
            .add(u64::from(slot), &v)
            .map_err(|e| IndexError::usearch("add", e))
    }

    /// Inserts many vectors using up to `threads` threads (upsert semantics as [`Self::insert`];
    /// if a slot appears twice in `items`, the last occurrence wins). Either every vector is
    /// validated and the batch proceeds, or an error is returned before anything changes.
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
        let mut batch: Vec<(u32, &[f32])> = Vec::with_capacity(last.len());
        for (i, (slot, v)) in items.iter().enumerate() {
            if last.get(slot) == Some(&i) {
                self.remove(*slot)?;
                batch.push((*slot, v));
            }
        }
        self.ensure_capacity(self.len() + batch.len())?;
        let workers = threads.clamp(1, self.threads).min(batch.len().max(1));
        let chunk = batch.len().div_ceil(workers).max(1);
        let this = &*self;
        std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || -> Result<(), IndexError> {
                        for (slot, v) in part {
                            let v = this.prepare(v)?;
                            let _permit = this.gate.enter();
                            this.inner
                                .add(u64::from(*slot), &v)
                                .map_err(|e| IndexError::usearch("add", e))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().unwrap_or_else(|p| resume_unwind(p)))
        })
    }

    /// Removes `slot`; returns whether it was present.
    pub fn remove(&mut self, slot: u32) -> Result<bool, IndexError> {
        if !self.contains(slot) {
            return Ok(false);
        }
        let removed = self
            .inner
            .remove(u64::from(slot))
            .map_err(|e| IndexError::usearch("remove", e))?;
        Ok(removed > 0)
    }

    /// Copies the vector stored under `slot` into `out` (`dim` floats), exactly as it was
    /// inserted; returns whether the slot holds one. Lets the engine keep no copy of its own
    /// of the vectors a graph holds.
    pub fn get(&self, slot: u32, out: &mut [f32]) -> Result<bool, IndexError> {
        if out.len() != self.dim {
            return Err(IndexError::DimensionMismatch {
                expected: self.dim,
                actual: out.len(),
            });
        }
        if !self.contains(slot) {
            return Ok(false);
        }
        let found = self
            .inner
            .get(u64::from(slot), out)
            .map_err(|e| IndexError::usearch("get", e))?;
        Ok(found > 0)
    }

    /// Converts a usearch distance to this crate's higher-is-better score, in the metric's
    /// finite range: rounding can put a cosine of unit vectors a hair outside `[-1, 1]`.
    fn to_score(&self, distance: f32) -> f32 {
        let raw = match self.metric {
            Metric::Cosine | Metric::Dot => 1.0 - distance,
            // Not `distance.max(0.0)`: that maps NaN to 0, the best possible score.
            Metric::L2 => -(if distance < 0.0 { 0.0 } else { distance }).sqrt(),
        };
        self.metric.finite_score(raw)
    }

    fn collect(&self, matches: usearch::ffi::Matches, k: usize) -> Vec<Hit> {
        let mut hits: Vec<Hit> = matches
            .keys
            .iter()
            .zip(&matches.distances)
            .filter_map(|(&key, &d)| {
                let slot = u32::try_from(key).ok()?;
                Some(Hit {
                    slot,
                    score: self.to_score(d),
                })
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
        let q = self.prepare(query)?;
        if k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = k.max(ef.unwrap_or(self.params.ef_search));
        let matches = {
            let _permit = self.gate.enter();
            self.inner.search(&q, wanted)
        }
        .map_err(|e| IndexError::usearch("search", e))?;
        Ok(self.collect(matches, k))
    }

    /// Like [`Self::search`] but returns only slots for which `predicate` is true. The
    /// predicate is evaluated during graph traversal; with a very selective predicate fewer
    /// than `k` hits may come back, and the caller should prefer an exact scan of the
    /// matching slots. A panic in the predicate is re-raised after usearch returns.
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
        let wanted = k.max(ef.unwrap_or(self.params.ef_search));
        // A panic must not unwind through usearch's C++ frames, so it is caught here and
        // re-raised once usearch has returned.
        let panicked = RefCell::new(None);
        let filter = |key: u64| -> bool {
            if panicked.borrow().is_some() {
                return false;
            }
            let Ok(slot) = u32::try_from(key) else {
                return false;
            };
            match catch_unwind(AssertUnwindSafe(|| predicate(slot))) {
                Ok(keep) => keep,
                Err(payload) => {
                    *panicked.borrow_mut() = Some(payload);
                    false
                }
            }
        };
        let matches = {
            let _permit = self.gate.enter();
            self.inner.filtered_search(&q, wanted, filter)
        };
        if let Some(payload) = panicked.into_inner() {
            resume_unwind(payload);
        }
        let matches = matches.map_err(|e| IndexError::usearch("filtered_search", e))?;
        Ok(self.collect(matches, k))
    }

    /// Serialises the index (graph and vectors) into a byte buffer; see [`Self::from_bytes`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, IndexError> {
        let body_len = self.inner.serialized_length();
        let mut out = vec![0u8; HEADER_LEN + body_len];
        out[..MAGIC.len()].copy_from_slice(MAGIC);
        let dim = u32::try_from(self.dim).map_err(|_| IndexError::InvalidParam {
            name: "dim",
            value: self.dim,
            reason: "must fit in u32",
        })?;
        out[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&dim.to_le_bytes());
        out[MAGIC.len() + 4] = self.metric.code();
        self.inner
            .save_to_buffer(&mut out[HEADER_LEN..])
            .map_err(|e| IndexError::usearch("save", e))?;
        Ok(out)
    }

    /// Restores an index written by [`Self::to_bytes`]. `dim` and `metric` must match the ones
    /// recorded in the bytes; `params` supplies the search and future-insert settings.
    pub fn from_bytes(
        bytes: &[u8],
        dim: usize,
        metric: Metric,
        params: HnswParams,
    ) -> Result<Self, IndexError> {
        let corrupt = |reason: &str| IndexError::Corrupt {
            reason: reason.to_string(),
        };
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("missing STRHNSW1 header"));
        }
        let mut dim_bytes = [0u8; 4];
        dim_bytes.copy_from_slice(&bytes[MAGIC.len()..MAGIC.len() + 4]);
        let stored_dim = u32::from_le_bytes(dim_bytes) as usize;
        if stored_dim != dim {
            return Err(IndexError::DimensionMismatch {
                expected: dim,
                actual: stored_dim,
            });
        }
        let found = Metric::from_code(bytes[MAGIC.len() + 4])
            .ok_or_else(|| corrupt("unknown metric code"))?;
        if found != metric {
            return Err(IndexError::MetricMismatch {
                expected: metric,
                found,
            });
        }
        let body = &bytes[HEADER_LEN..];
        let meta = Index::metadata_from_buffer(body).map_err(|e| IndexError::Corrupt {
            reason: format!("usearch header: {e}"),
        })?;
        if meta.dimensions != dim as u64 || meta.quantization != ScalarKind::F32 || meta.multi {
            return Err(corrupt("usearch header disagrees with the Strata header"));
        }
        let mut index = Self::unreserved(dim, metric, params)?;
        index
            .inner
            .load_from_buffer(body)
            .map_err(|e| IndexError::Corrupt {
                reason: format!("usearch body: {e}"),
            })?;
        // Loading replaces the configuration, so restore ours: see the module docs.
        index.inner.change_expansion_add(params.ef_construction);
        index.inner.change_expansion_search(1);
        // The graph's links were laid out with the connectivity it was built with.
        index.params.m = index.inner.connectivity();
        index.install_kernels();
        let capacity = index
            .inner
            .capacity()
            .max(index.len())
            .max(INITIAL_CAPACITY);
        index.reserve_exact(capacity)?;
        Ok(index)
    }
}

#[cfg(test)]
#[path = "hnsw_tests.rs"]
mod tests;
