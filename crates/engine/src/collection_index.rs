//! The in-memory indexes of one tenant's collection: slots, scope bitmaps, field index, vectors
//! for exact scans, the HNSW graph and the BM25 text index.
//!
//! A record gets a dense `u32` slot here; every index is keyed by slot. Per slot only the
//! record's lean resident part is kept (`SlotDoc`: id, scope fields, expiry, what ranking
//! reads), so that visibility is decided by the same rules as everywhere else
//! (`SlotVisibility::sees_slot`, `crate::visibility`); whole records are read from storage
//! when a search needs them (`crate::hits`).

use serde_json::{Map, Value};
use strata_index::{Bm25Index, FieldIndex, HnswIndex, HnswParams, IdTable, RoaringBitmap};
use strata_types::{Collection, Metric, Record, RecordId};

use crate::EngineError;
use crate::name_bitmaps::NameBitmaps;
use crate::scope_names::ScopeNames;
use crate::slot_doc::SlotDoc;

/// A collection gets an HNSW graph once `vectors × dim` reaches this many floats: three
/// quarters of the planner's exact-scan budget (`plan::EXACT_BUDGET`). Below the budget the
/// planner scans exactly whatever the query, so a graph there would never be searched, yet it
/// would hold a second copy of every vector and be built, saved and restored at every load.
/// The quarter's margin (about 1,300 vectors at 384 dimensions, 3,900 at 128) is there so the
/// background builder has the graph ready before the collection's scans pass the budget
/// (until then they stay exact, so correct, only slower).
pub(crate) const GRAPH_MIN_FLOATS: u64 = crate::plan::EXACT_BUDGET / 4 * 3;

/// Whether a collection of `vectors` vectors of `dim` dimensions is large enough for a graph
/// (see [`GRAPH_MIN_FLOATS`]).
pub(crate) fn graph_pays(vectors: u64, dim: usize) -> bool {
    vectors.saturating_mul(dim as u64) >= GRAPH_MIN_FLOATS
}

/// A graph is rebuilt without its deleted vectors (online, by the background builder) once
/// they pass this fraction of its nodes: deleted nodes still cost memory and every search
/// still walks through them.
pub(crate) const COMPACT_DELETED_FRACTION: f64 = 0.2;

/// A graph whose live vectors have grown by this fraction since it was calibrated is calibrated
/// again (`strata_index::hnsw_calibrate`): the `ef` a target recall needs grows with the graph,
/// and a graph built at its first few thousand vectors then grows by inserts. Once per
/// doubling let recall drift well below the target in between (a black-box run: a graph of
/// random 2,048-d vectors calibrated at 1,600 vectors to 0.97 answered at 0.895 at 3,000); a
/// quarter keeps the drift small, for about five times the last measurement's cost over a
/// graph's growth (64 distances per vector each time, a few per cent of the inserts' cost).
pub(crate) const RECALIBRATE_GROWTH: (usize, usize) = (5, 4);

pub(crate) fn index_metric(m: Metric) -> strata_index::Metric {
    match m {
        Metric::Cosine => strata_index::Metric::Cosine,
        Metric::Dot => strata_index::Metric::Dot,
        Metric::L2 => strata_index::Metric::L2,
    }
}

fn index_analyzer(a: strata_types::TextAnalyzer) -> strata_index::Analyzer {
    match a {
        strata_types::TextAnalyzer::Standard => strata_index::Analyzer::Standard,
        strata_types::TextAnalyzer::English => strata_index::Analyzer::English,
        strata_types::TextAnalyzer::None => strata_index::Analyzer::None,
    }
}

fn index_error(e: strata_index::IndexError) -> EngineError {
    EngineError::Index(e.to_string())
}

pub(crate) struct CollectionIndex {
    pub dim: usize,
    pub metric: strata_index::Metric,
    /// Slot → the record's resident part (`SlotDoc`); the whole record stays in storage.
    pub docs: Vec<Option<SlotDoc>>,
    /// The scope names `docs` point into (`crate::scope_names`).
    pub names: ScopeNames,
    /// Record id → slot. The ids themselves are in `docs`, once (`IdTable`).
    slot_of: IdTable,
    free: Vec<u32>,
    /// The engine's copy of the vectors: `dim` floats per slot, meaningful where
    /// `with_vector` holds the slot. Empty while `vectors_in_graph`: the graph keeps every
    /// vector itself (the graph stores what it indexes), so a second copy would double the
    /// memory of every vector for nothing.
    vectors: Vec<f32>,
    /// The graph holds every vector of `with_vector` and `vectors` is empty. Set once a graph
    /// is installed or restored; a collection without a graph (small, or waiting for its
    /// first build) keeps its own copy for exact scans and the build.
    vectors_in_graph: bool,
    pub with_vector: RoaringBitmap,
    /// Slots whose record has a TTL: only these need their expiry checked at search time.
    pub with_expiry: RoaringBitmap,
    pub live: RoaringBitmap,
    /// Slots by the id of their domain, run, memory scope and user tokens in `names`.
    pub by_domain: NameBitmaps,
    pub by_token: NameBitmaps,
    pub shared: RoaringBitmap,
    pub by_run: NameBitmaps,
    pub by_scope: NameBitmaps,
    pub fields: FieldIndex,
    pub bm25: Bm25Index,
    pub graph: Option<HnswIndex>,
    /// Whether `graph` came from a snapshot at load.
    pub restored: bool,
    /// Whether the collection was loaded from its persisted search image (no record read).
    pub from_image: bool,
    /// While a background graph build runs: the slots changed since it began, which it
    /// replays before the graph is installed (see `graph_build`).
    pub building: Option<Vec<u32>>,
    /// A graph restored from a snapshot older than the records, set aside for the background
    /// builder to catch up (`crate::graph_build`) rather than inserting every vector changed
    /// since into it during the load, in the request that asked for the tenant: the
    /// collection is searched exactly meanwhile, from a copy of its vectors, and `building`
    /// logs the slots the catch-up replays, from the load's own replay on.
    pub seed: Option<HnswIndex>,
    /// The graph the collection's last save named is being caught up (in `seed`, or in the
    /// builder's hands): the tenant is not saved until it is installed, since a save now would
    /// name no graph and delete that one's file, and the next load could then only build a
    /// graph from nothing (`index_save`). Meanwhile the last save, and the change log after
    /// its mark, stay what a load catches up from.
    pub catching_up: bool,
    /// Vectors removed from `graph` since it was built or restored: the graph keeps them as
    /// tombstones in the graph until it is rebuilt.
    pub graph_deleted: u64,
    /// The parameters its graph is built and searched with: the tenant's isolation level's
    /// (see `isolation`). A graph whose connectivity or construction beam differs is rebuilt
    /// in the background (`rebuild`), the old one serving meanwhile.
    pub params: HnswParams,
    /// The graph was built with other parameters than `params`.
    pub rebuild: bool,
    /// Estimated heap bytes of the slots in `docs` and their index entries (see
    /// `SlotDoc::heap_bytes`), kept up to date by `place_scope` and `remove`.
    slot_bytes: u64,
    /// The collection's definition as committed when this index was made. A definition is
    /// never changed in place under a loaded index: deleting a collection drops its index
    /// (`Change::DropCollection`), a re-embed drops it too, and a collection created again
    /// (maybe with another dimension) gets a new index from its new definition. So an ids-only
    /// search reads its defaults from here rather than from storage (`crate::search`).
    pub definition: Collection,
}

impl CollectionIndex {
    pub fn new(c: &Collection) -> Self {
        CollectionIndex {
            dim: c.dim as usize,
            metric: index_metric(c.metric),
            docs: Vec::new(),
            names: ScopeNames::default(),
            slot_of: IdTable::default(),
            free: Vec::new(),
            vectors: Vec::new(),
            vectors_in_graph: false,
            with_vector: RoaringBitmap::new(),
            with_expiry: RoaringBitmap::new(),
            live: RoaringBitmap::new(),
            by_domain: NameBitmaps::default(),
            by_token: NameBitmaps::default(),
            shared: RoaringBitmap::new(),
            by_run: NameBitmaps::default(),
            by_scope: NameBitmaps::default(),
            fields: FieldIndex::with_columns(&BUILTIN_COLUMNS),
            bm25: Bm25Index::with_analyzer(index_analyzer(c.analyzer)),
            graph: None,
            restored: false,
            from_image: false,
            building: None,
            seed: None,
            catching_up: false,
            graph_deleted: 0,
            params: HnswParams::default(),
            rebuild: false,
            slot_bytes: 0,
            definition: c.clone(),
        }
    }

    /// Whether a background build is due: the collection is large enough for a graph but has
    /// none yet (searches scan exactly meanwhile), or its graph holds so many deleted vectors
    /// that it is worth rebuilding (searches use the old graph meanwhile).
    pub fn wants_graph(&self) -> bool {
        match &self.graph {
            None => self.graph_pays(),
            Some(g) => {
                let nodes = g.len() as u64 + self.graph_deleted;
                self.rebuild
                    || (nodes > 0
                        && self.graph_deleted as f64 / nodes as f64 > COMPACT_DELETED_FRACTION)
            }
        }
    }

    /// Whether the graph's default beam should be calibrated (again): never calibrated (a
    /// graph saved before calibrations were kept), or grown by [`RECALIBRATE_GROWTH`] since.
    /// Not while a build runs (it calibrates the graph it installs), nor where an operator
    /// chose `ef_search`.
    pub fn wants_calibration(&self) -> bool {
        let Some(g) = &self.graph else {
            return false;
        };
        if !g.params().auto_ef || self.building.is_some() {
            return false;
        }
        let s = strata_index::CalibrationSettings::default();
        match g.calibrated() {
            None => g.len() >= s.queries + s.k,
            Some(c) => {
                let (num, den) = RECALIBRATE_GROWTH;
                g.len().saturating_mul(den) >= c.at_len.saturating_mul(num)
            }
        }
    }

    /// Whether the collection is large enough for a graph (see [`GRAPH_MIN_FLOATS`]); one
    /// that shrank below keeps the graph it has while it stays loaded.
    pub fn graph_pays(&self) -> bool {
        graph_pays(self.with_vector.len(), self.dim)
    }

    /// Estimated bytes this collection holds in memory: vectors, the slots' resident parts
    /// and their index entries, the field index's columns (by capacity) and the graph (as it
    /// reports its arrays). An estimate, not an allocator count: it is what the residency
    /// budget is enforced against.
    pub fn resident_bytes(&self) -> u64 {
        let vectors = self.vectors.capacity() * std::mem::size_of::<f32>();
        let slots = self.docs.capacity() * std::mem::size_of::<Option<SlotDoc>>()
            + self.slot_of.capacity() * SLOT_MAP_ENTRY_BYTES;
        let graph = [&self.graph, &self.seed]
            .into_iter()
            .flatten()
            .map(HnswIndex::memory_bytes)
            .sum::<usize>();
        (vectors + slots + graph) as u64
            + self.fields.column_bytes()
            + self.names.heap_bytes()
            + [
                &self.by_domain,
                &self.by_run,
                &self.by_scope,
                &self.by_token,
            ]
            .iter()
            .map(|m| m.heap_bytes())
            .sum::<u64>()
            + self.slot_bytes
    }

    /// The vectors of `slots` that still hold one, copied (for a background graph build).
    pub fn vectors_of(&self, slots: &[u32]) -> Result<Vec<(u32, Vec<f32>)>, EngineError> {
        slots
            .iter()
            .filter(|s| self.with_vector.contains(**s))
            .map(|s| Ok((*s, self.vector(*s)?.into_owned())))
            .collect()
    }

    /// Copies of the vectors of `slots` (each must hold one), one after the other, `dim`
    /// floats each: for exact scans of collections whose vectors live only in the graph.
    pub fn gather_vectors(&self, slots: &[u32]) -> Result<Vec<f32>, EngineError> {
        let mut out = vec![0.0; slots.len() * self.dim];
        for (slot, dst) in slots.iter().zip(out.chunks_exact_mut(self.dim)) {
            self.copy_vector(*slot, dst)?;
        }
        Ok(out)
    }

    /// The engine's copy of the vector in `slot`, if it keeps one (see `vectors_in_graph`).
    pub fn vector_copy(&self, slot: u32) -> Option<&[f32]> {
        let start = slot as usize * self.dim;
        self.vectors.get(start..start + self.dim)
    }

    /// The engine's copy of the vectors, slot after slot, when every slot holds one (no free
    /// slot, no record without a vector): an exact scan of all of them can then read it
    /// straight through, slot `i` at `i * dim`, without asking which slots hold one.
    pub fn dense_vectors(&self) -> Option<&[f32]> {
        let slots = self.docs.len();
        let every_slot = self.with_vector.len() == slots as u64
            && self.with_vector.max().is_none_or(|m| (m as usize) < slots);
        (!self.vectors_in_graph && every_slot)
            .then(|| self.vectors.get(..slots * self.dim))
            .flatten()
    }

    /// Whether the engine keeps its own copy of the vectors (else the graph holds them).
    pub fn has_vector_copy(&self) -> bool {
        !self.vectors_in_graph
    }

    /// Drops the engine's copy of the vectors once a graph holds them all, if the collection
    /// is large enough that its searches go to the graph. A smaller one is searched by exact
    /// scans (`plan::EXACT_BUDGET`), which read the copy in place: copying every vector out of
    /// the graph for each search would cost more than the memory saved.
    fn drop_vector_copy(&mut self) {
        let large = self.with_vector.len() * self.dim as u64 > crate::plan::EXACT_BUDGET;
        if self.graph.is_some() && large {
            self.vectors = Vec::new();
            self.vectors_in_graph = true;
        }
    }

    /// Makes the engine's copy of the vectors from the graph, for a collection small enough
    /// to be searched by exact scans (see `drop_vector_copy`).
    fn copy_vectors_from_graph(&mut self) -> Result<(), EngineError> {
        let large = self.with_vector.len() * self.dim as u64 > crate::plan::EXACT_BUDGET;
        if !self.vectors_in_graph || large {
            return Ok(());
        }
        let mut copy = vec![0.0; self.docs.len() * self.dim];
        for slot in &self.with_vector {
            let start = slot as usize * self.dim;
            self.copy_vector(slot, &mut copy[start..start + self.dim])?;
        }
        self.vectors = copy;
        self.vectors_in_graph = false;
        Ok(())
    }

    fn copy_vector(&self, slot: u32, out: &mut [f32]) -> Result<(), EngineError> {
        if !self.vectors_in_graph {
            let start = slot as usize * self.dim;
            out.copy_from_slice(&self.vectors[start..start + self.dim]);
            return Ok(());
        }
        let found = match &self.graph {
            Some(g) => g.get(slot, out).map_err(index_error)?,
            None => false,
        };
        if found {
            Ok(())
        } else {
            Err(EngineError::Index(format!(
                "slot {slot} has no vector in the graph"
            )))
        }
    }

    fn touched(&mut self, slot: u32) {
        if let Some(log) = &mut self.building {
            log.push(slot);
        }
    }

    /// The vector in `slot` (which must hold one), as the indexes see it (normalised for the
    /// metric): borrowed from the engine's copy, or copied out of the graph.
    pub fn vector(&self, slot: u32) -> Result<std::borrow::Cow<'_, [f32]>, EngineError> {
        if self.vectors_in_graph {
            let mut out = vec![0.0; self.dim];
            self.copy_vector(slot, &mut out)?;
            return Ok(std::borrow::Cow::Owned(out));
        }
        let start = slot as usize * self.dim;
        Ok(std::borrow::Cow::Borrowed(
            &self.vectors[start..start + self.dim],
        ))
    }

    /// Adds or replaces a record. `graph` says whether to maintain the HNSW graph now (bulk
    /// loads build it once at the end instead).
    pub fn upsert(&mut self, record: &Record, graph: bool) -> Result<(), EngineError> {
        self.remove(&record.id)?;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = u32::try_from(self.docs.len()).map_err(|_| {
                    EngineError::BadRequest("collection is full (2^32 records)".into())
                })?;
                self.ensure_slots(self.docs.len() + 1);
                s
            }
        };
        self.place(record, slot, graph)
    }

    /// Grows the slot table to at least `n` slots (new slots are empty).
    pub fn ensure_slots(&mut self, n: usize) {
        if self.docs.len() < n {
            self.docs.resize(n, None);
            if !self.vectors_in_graph {
                self.vectors.resize(n * self.dim, 0.0);
            }
        }
    }

    /// Puts `record` in the empty slot `slot` (restoring a snapshot's slot assignment).
    pub fn place_at(&mut self, record: &Record, slot: u32) -> Result<(), EngineError> {
        self.ensure_slots(slot as usize + 1);
        if self.docs[slot as usize].is_some() {
            return Err(EngineError::Index(format!("slot {slot} restored twice")));
        }
        self.place(record, slot, false)
    }

    /// After a bulk load: every empty slot below the table's end is free.
    pub fn rebuild_free_list(&mut self) {
        self.free = (0..self.docs.len() as u32)
            .rev()
            .filter(|s| self.docs[*s as usize].is_none())
            .collect();
    }

    /// The record id in each slot (`None` for a free slot), for snapshots.
    pub fn slot_ids(&self) -> Vec<Option<&RecordId>> {
        self.docs
            .iter()
            .map(|d| d.as_ref().map(|d| &d.id))
            .collect()
    }

    fn place(&mut self, record: &Record, slot: u32, graph: bool) -> Result<(), EngineError> {
        let doc = match SlotDoc::of(record, &mut self.names) {
            Ok(doc) => doc,
            Err(e) => {
                // The slot stays empty: back to the free list (a restore rebuilds it anyway).
                self.free.push(slot);
                return Err(e);
            }
        };
        self.docs[slot as usize] = Some(doc);
        self.place_scope(slot);
        index_fields(&mut self.fields, slot, record);
        if let Some(text) = &record.content {
            self.bm25.insert(slot, text);
        }
        self.touched(slot);
        if let Some(v) = &record.vector {
            if self.vectors_in_graph {
                // No copy of our own: the graph is where the vector lives, whatever `graph`
                // says (only bulk loads pass `false`, before any graph exists).
                let mut v = v.clone();
                self.metric.normalize_for_index(&mut v);
                match &mut self.graph {
                    Some(g) => g.insert(slot, &v).map_err(index_error)?,
                    None => return Err(EngineError::Index("vectors in a missing graph".into())),
                }
            } else {
                let start = slot as usize * self.dim;
                self.vectors[start..start + self.dim].copy_from_slice(v);
                self.metric
                    .normalize_for_index(&mut self.vectors[start..start + self.dim]);
                if graph {
                    self.insert_into_graph(slot)?;
                }
            }
            self.with_vector.insert(slot);
        }
        Ok(())
    }

    /// The cheap part of placing the record in `docs[slot]`: its slot, the scope bitmaps and
    /// its byte estimate (a few hash inserts). Text and fields, the expensive part, are indexed
    /// by `place`, or come whole from a persisted search image (`from_image`).
    fn place_scope(&mut self, slot: u32) {
        let Some(record) = self.docs[slot as usize].as_ref() else {
            return;
        };
        let docs = &self.docs;
        self.slot_of.insert(slot, |s| id_in(docs, s));
        self.live.insert(slot);
        if record.expires_at().is_some() {
            self.with_expiry.insert(slot);
        }
        let ids = record.scope;
        self.by_domain.insert(ids.domain, slot);
        if let Some(r) = ids.run {
            self.by_run.insert(r, slot);
        }
        if let Some(s) = ids.scope {
            self.by_scope.insert(s, slot);
        }
        // A token set the table does not hold (never for one it gave out) puts the slot in
        // no principal's bitmap and not among the shared ones: no principal sees it.
        match self.names.token_set(ids.tokens) {
            Some([]) => {
                self.shared.insert(slot);
            }
            Some(tokens) => {
                for t in tokens {
                    self.by_token.insert(*t, slot);
                }
            }
            None => {}
        }
        self.slot_bytes += record.heap_bytes();
    }

    /// A collection rebuilt from its persisted search image (`crate::search_image`): the
    /// slots' resident parts, the vectors as the engine keeps them
    /// (`dim` per slot, already normalised for the metric), and the text and field indexes
    /// whole, once they are checked to fit the slots (`crate::image_check`). Only the scope
    /// bitmaps are recomputed, from the slots; no text is analysed and no record is read from
    /// storage. The graph is restored separately.
    /// `vectors` is `None` when the image was saved with the vectors in the graph: the caller
    /// must then restore the graph (`restore_graph`) or give up on the image.
    pub fn from_image(
        c: &Collection,
        params: HnswParams,
        docs: Vec<Option<SlotDoc>>,
        names: ScopeNames,
        vectors: Option<Vec<f32>>,
        fields: FieldIndex,
        bm25: Bm25Index,
    ) -> Result<Self, EngineError> {
        let mut ci = CollectionIndex::new(c);
        ci.params = params;
        ci.vectors_in_graph = vectors.is_none();
        let vectors = vectors.unwrap_or_default();
        if !ci.vectors_in_graph && vectors.len() != docs.len() * ci.dim {
            return Err(EngineError::Index(format!(
                "search image: {} floats for {} slots of {} dimensions",
                vectors.len(),
                docs.len(),
                ci.dim
            )));
        }
        if bm25.analyzer() != ci.bm25.analyzer() {
            return Err(EngineError::Index(
                "search image: analysed with another analyzer".into(),
            ));
        }
        ci.docs = docs;
        ci.names = names;
        ci.slot_of = IdTable::with_capacity(ci.docs.len());
        for slot in 0..ci.docs.len() as u32 {
            let Some(doc) = &ci.docs[slot as usize] else {
                continue;
            };
            if ci
                .slot_of
                .get(doc.id.as_str(), |s| id_in(&ci.docs, s))
                .is_some()
            {
                return Err(EngineError::Index(format!(
                    "search image: record {} in two slots",
                    doc.id
                )));
            }
            ci.place_scope(slot);
        }
        crate::image_check::check(&ci.live, &ci.docs, &fields, &bm25)?;
        ci.vectors = vectors;
        ci.fields = fields;
        ci.bm25 = bm25;
        ci.rebuild_free_list();
        Ok(ci)
    }

    /// Marks the slots that hold a vector (a search image's `with_vector`); every slot must
    /// hold a record.
    pub fn set_with_vector(&mut self, slots: RoaringBitmap) -> Result<(), EngineError> {
        if !slots.is_subset(&self.live) {
            return Err(EngineError::Index(
                "search image: a vector in an empty slot".into(),
            ));
        }
        self.with_vector = slots;
        Ok(())
    }

    /// The engine's copy of the vectors, `dim` per slot (for the search image); `None` when
    /// the collection has a graph, whose snapshot carries every vector already.
    pub fn raw_vectors(&self) -> Option<&[f32]> {
        (self.graph.is_none() && !self.vectors_in_graph)
            .then(|| &self.vectors[..self.docs.len() * self.dim])
    }

    /// Keeps an existing graph in step. A collection that just reached `GRAPH_MIN_FLOATS` gets
    /// its graph from the background builder, never from the write that crossed the line.
    fn insert_into_graph(&mut self, slot: u32) -> Result<(), EngineError> {
        if self.vectors_in_graph {
            return Ok(());
        }
        let start = slot as usize * self.dim;
        if let Some(g) = &mut self.graph {
            g.insert(slot, &self.vectors[start..start + self.dim])
                .map_err(index_error)?;
        }
        Ok(())
    }

    /// Takes new graph parameters: the search default applies at once; a graph built with
    /// another connectivity or construction beam is marked for a background rebuild.
    pub fn set_params(&mut self, params: HnswParams) {
        self.params = params;
        if let Some(seed) = self.seed.as_mut() {
            seed.set_ef_search(params.ef_search, params.auto_ef);
        }
        if let Some(g) = self.graph.as_mut() {
            g.set_ef_search(params.ef_search, params.auto_ef);
            let built = g.params();
            self.rebuild = built.m != params.m || built.ef_construction != params.ef_construction;
        }
    }

    /// Restores the graph from snapshot bytes; `false` (and no graph) if they do not fit.
    pub fn restore_graph(&mut self, bytes: &[u8]) -> bool {
        match HnswIndex::from_bytes(bytes, self.dim, self.metric, self.params) {
            Ok(g) => self.restore_graph_index(g),
            Err(_) => false,
        }
    }

    /// Restores a graph read from a snapshot; `false` (and no graph) if it does not fit.
    pub fn restore_graph_index(&mut self, g: HnswIndex) -> bool {
        if g.len() as u64 != self.with_vector.len() {
            return false;
        }
        // A snapshot from before a parameter change (a migration of the tenant while it
        // was not loaded, or a crash before the rebuild was saved) serves, and is rebuilt in
        // the background. A graph saved before graphs recorded their construction beam
        // reads as built with the current one.
        let built = g.params();
        self.rebuild =
            built.m != self.params.m || built.ef_construction != self.params.ef_construction;
        // The snapshot keeps its tombstones: count them, or compaction would never see
        // what a tenant evicted between deletes had piled up.
        self.graph_deleted = g.tombstones() as u64;
        self.graph = Some(g);
        self.restored = true;
        self.drop_vector_copy();
        // Loaded from an image without vectors, but small enough to be searched by
        // exact scans: take the copy those read from the graph.
        if self.copy_vectors_from_graph().is_err() {
            self.graph = None;
            self.restored = false;
            return false;
        }
        true
    }

    /// Sets the restored graph aside as the seed of a background catch-up (see `seed`): its
    /// vectors are copied out for exact scans, and every slot changed from now on is logged
    /// for the builder to replay into it.
    pub fn set_graph_aside(&mut self) -> Result<(), EngineError> {
        let Some(g) = self.graph.take() else {
            return Ok(());
        };
        if self.vectors_in_graph {
            let mut copy = vec![0.0; self.docs.len() * self.dim];
            for slot in &self.with_vector {
                let start = slot as usize * self.dim;
                if !g
                    .get(slot, &mut copy[start..start + self.dim])
                    .map_err(index_error)?
                {
                    return Err(EngineError::Index(format!(
                        "slot {slot} has no vector in the graph"
                    )));
                }
            }
            self.vectors = copy;
            self.vectors_in_graph = false;
        }
        self.restored = false;
        self.building = Some(Vec::new());
        self.seed = Some(g);
        self.catching_up = true;
        Ok(())
    }

    /// Lets go of a seed (see `seed`) the collection no longer wants: it shrank below the
    /// graph threshold while it was replayed. Its exact scans read the copy.
    pub fn drop_unwanted_seed(&mut self) {
        if self.seed.is_some() && !self.graph_pays() {
            self.seed = None;
            self.building = None;
            self.catching_up = false;
        }
    }

    /// Lets go of the graph of a collection below the graph threshold that keeps its own copy
    /// of the vectors (its searches are exact scans of that copy); `true` if it had one.
    pub fn shed_graph(&mut self) -> bool {
        if self.graph.is_none() || self.graph_pays() || !self.has_vector_copy() {
            return false;
        }
        self.graph = None;
        self.restored = false;
        self.graph_deleted = 0;
        self.rebuild = false;
        true
    }

    /// Installs a graph built in the background from the vectors the collection had when the
    /// build began, after replaying the slots changed since (`building`): each is taken out
    /// of the graph and put back if it still holds a vector, so the graph ends up holding
    /// exactly `with_vector`. `removed`: the tombstones the build's catch-up rounds already
    /// left in `g` (`crate::graph_build`).
    /// Returns how many logged slots it replayed.
    pub fn install_graph(&mut self, mut g: HnswIndex, removed: u64) -> Result<usize, EngineError> {
        let mut touched = self.building.take().unwrap_or_default();
        touched.sort_unstable();
        touched.dedup();
        let replayed = touched.len();
        let mut g_deleted = removed;
        let mut held = vec![0.0; self.dim];
        for slot in touched {
            let now = match self.with_vector.contains(slot) {
                true => Some(self.vector(slot)?),
                false => None,
            };
            g_deleted += u64::from(replay_slot(&mut g, slot, now.as_deref(), &mut held)?);
        }
        if g.len() as u64 != self.with_vector.len() {
            return Err(EngineError::Index(format!(
                "built graph holds {} vectors, the collection {}",
                g.len(),
                self.with_vector.len()
            )));
        }
        // The replayed removals above are tombstones in the new graph too.
        self.graph_deleted = g_deleted;
        // The search beam as the parameters say now: they may have changed during the build.
        g.set_ef_search(self.params.ef_search, self.params.auto_ef);
        self.catching_up = false;
        // Built with parameters that changed meanwhile: build again.
        let p = g.params();
        self.rebuild = p.m != self.params.m || p.ef_construction != self.params.ef_construction;
        self.graph = Some(g);
        self.restored = false;
        self.drop_vector_copy();
        Ok(replayed)
    }

    /// A new, empty graph with this collection's dimension and metric.
    pub fn new_graph(&self) -> Result<HnswIndex, EngineError> {
        HnswIndex::new(self.dim, self.metric, self.params).map_err(index_error)
    }

    pub fn remove(&mut self, id: &RecordId) -> Result<(), EngineError> {
        let docs = &self.docs;
        let Some(slot) = self.slot_of.remove(id.as_str(), |s| id_in(docs, s)) else {
            return Ok(());
        };
        let Some(doc) = self.docs[slot as usize].take() else {
            return Ok(());
        };
        self.slot_bytes = self.slot_bytes.saturating_sub(doc.heap_bytes());
        self.touched(slot);
        self.live.remove(slot);
        self.with_expiry.remove(slot);
        let ids = doc.scope;
        self.by_domain.remove(ids.domain, slot);
        if let Some(r) = ids.run {
            self.by_run.remove(r, slot);
        }
        if let Some(s) = ids.scope {
            self.by_scope.remove(s, slot);
        }
        self.shared.remove(slot);
        for t in self.names.token_set(ids.tokens).unwrap_or_default() {
            self.by_token.remove(*t, slot);
        }
        self.names.release(ids);
        self.fields.remove_slot(slot);
        self.bm25.remove(slot);
        if self.with_vector.remove(slot)
            && let Some(g) = &mut self.graph
            && g.remove(slot).map_err(index_error)?
        {
            self.graph_deleted += 1;
        }
        self.free.push(slot);
        Ok(())
    }
}

/// What one place in `slot_of` costs: a `u32` and a control byte (the id is the slot's).
const SLOT_MAP_ENTRY_BYTES: usize = 5;

/// The id of the record in `slot` (every slot `slot_of` names holds one; an empty slot, which
/// it never names, answers the empty string, which no id is).
fn id_in(docs: &[Option<SlotDoc>], slot: u32) -> &str {
    docs.get(slot as usize)
        .and_then(Option::as_ref)
        .map_or("", |d| d.id.as_str())
}

/// Built-in numeric fields kept as one value per slot in the field index (`FieldIndex::
/// with_columns`): nearly unique per record, so a map of values to bitmaps would cost ~200
/// bytes per record for them. `expires_at` stays in the map: only records with a TTL hold one,
/// and every search subtracts the expired ones, which a column would answer by a full scan.
pub(crate) const BUILTIN_COLUMNS: [&str; 3] = ["b:created_at", "b:updated_at", "b:confidence"];

/// Field-index paths: `b:<name>` for built-in fields, `m:<dotted path>` for metadata.
pub(crate) fn builtin_path(name: &str) -> String {
    format!("b:{name}")
}

pub(crate) fn metadata_path(path: &[String]) -> String {
    format!("m:{}", path.join("."))
}

fn index_fields(fields: &mut FieldIndex, slot: u32, r: &Record) {
    if let Some(k) = &r.kind {
        fields.insert(slot, &builtin_path("kind"), &Value::String(k.to_string()));
    }
    fields.insert(
        slot,
        &builtin_path("created_at"),
        &Value::from(r.created_at),
    );
    fields.insert(
        slot,
        &builtin_path("updated_at"),
        &Value::from(r.updated_at),
    );
    if let Some(t) = r.expires_at {
        fields.insert(slot, &builtin_path("expires_at"), &Value::from(t));
    }
    fields.insert(
        slot,
        &builtin_path("confidence"),
        &Value::from(r.confidence.value),
    );
    index_metadata(fields, slot, &mut Vec::new(), &r.metadata);
}

/// Indexes every value a filter's dotted path can reach (`strata_types::Filter::matches`):
/// nested objects' values under their paths, an array's scalars under the array's path, and
/// the values inside an array's objects under the array's path and theirs (`files.name` for
/// `{"files": [{"name": "a"}]}`).
fn index_metadata(
    fields: &mut FieldIndex,
    slot: u32,
    prefix: &mut Vec<String>,
    map: &Map<String, Value>,
) {
    for (k, v) in map {
        prefix.push(k.clone());
        index_value(fields, slot, prefix, v);
        prefix.pop();
    }
}

fn index_value(fields: &mut FieldIndex, slot: u32, path: &mut Vec<String>, value: &Value) {
    match value {
        Value::Object(inner) => index_metadata(fields, slot, path, inner),
        Value::Array(items) => {
            // Its scalars (the field index passes over the rest), then its objects' values.
            fields.insert(slot, &metadata_path(path), value);
            for item in items {
                if let Value::Object(inner) = item {
                    index_metadata(fields, slot, path, inner);
                }
            }
        }
        other => fields.insert(slot, &metadata_path(path), other),
    }
}

/// Replays one slot changed while a graph was built in the background into that graph `g`:
/// `now` is the vector the slot holds now, if any. A slot whose vector did not change (its
/// text or metadata was written) keeps its node, as no tombstone is needed for it: a write
/// flood replayed in rounds (`crate::graph_build`) would otherwise leave one per round, and
/// enough of them ask for a compaction right after the install. Returns whether a node
/// became a tombstone. `held` is scratch space of the graph's dimension.
pub(crate) fn replay_slot(
    g: &mut HnswIndex,
    slot: u32,
    now: Option<&[f32]>,
    held: &mut [f32],
) -> Result<bool, EngineError> {
    if let Some(v) = now
        && g.get(slot, held).map_err(index_error)?
        && held == v
    {
        return Ok(false);
    }
    let tombstone = g.remove(slot).map_err(index_error)?;
    if let Some(v) = now {
        g.insert(slot, v).map_err(index_error)?;
    }
    Ok(tombstone)
}

#[cfg(test)]
mod tests {
    use super::graph_pays;

    #[test]
    fn the_graph_threshold_is_three_quarters_of_the_exact_scan_budget() {
        // 1.5M floats: 3,907 vectors at 384 dimensions, where the planner goes to the graph
        // past 5,208.
        assert!(!graph_pays(3_906, 384));
        assert!(graph_pays(3_907, 384));
        assert!(
            !graph_pays(2_000, 384),
            "a 2,000-record tenant is scanned exactly"
        );
        assert!(graph_pays(1_100, 2048));
        assert!(!graph_pays(0, 4096));
        assert!(
            graph_pays(u64::MAX, 4096),
            "saturates instead of overflowing"
        );
    }
}
