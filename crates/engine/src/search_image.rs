//! The persisted search image of a collection: everything a search needs besides the graph,
//! so that loading an evicted or idle tenant decodes a few bulk structures instead of reading
//! every record and analysing its text and fields again (see `docs/residency.md`).
//!
//! An image holds, for one collection: each slot's resident part (`crate::slot_doc`: id, scope
//! fields, creation time, expiry, confidence, index byte estimate) as flat columns, with the
//! scope names (domains, runs, memory scopes, user tokens) once each in tables the columns
//! point into; the engine's vectors as one contiguous run of little-endian `f32` (`dim` per
//! slot) unless the collection's graph holds them (then they are restored with the graph from
//! its snapshot); which slots hold a vector (a roaring bitmap in its portable serialisation);
//! the BM25 index (postings, lengths, statistics) and the field index. No record is in it, so
//! a load reads no record; scope bitmaps are recomputed from the columns at load: a few hash
//! inserts each.
//!
//! A large image (from [`IN_FILE_FROM_BYTES`]) is kept in a derived file of the tenant, like
//! a graph (`crate::graph_file`: written, synced and renamed into place before the row naming
//! it commits), and its row holds only the file's name, length and checksum ([`IN_FILE`]).
//! Why: in the storage file, a save's tens of megabytes of image pages were flushed by the
//! next durable commit, which a writing tenant's next write waited for (50–80 ms at 100,000
//! records, docs/benchmarks.md); a file of its own is synced by the save alone. Small images
//! stay in the row: a file each would cost every small tenant's save a create, two syncs and
//! a rename.
//!
//! Like the graph snapshot (`crate::snapshot`) it is stamped with the tenant's data version
//! and written in the same transaction, and it is used only when that version is still the
//! stored one, its counts agree with the tenant's usage counters and it decodes closed;
//! anything else (a crash after a write, a write while the tenant was evicted, damaged bytes)
//! makes the load rebuild from the records. An image never overrides storage.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use strata_index::{Bm25Index, FieldIndex, RoaringBitmap};
use strata_store::{Reads, Store, StoreError, TenantKey, Writer};
use strata_types::{Collection, CollectionName, Domain, MemoryScope, RecordId, RunId, UserToken};

use crate::EngineError;
use crate::collection_index::CollectionIndex;
use crate::graph_file::{self, GraphFile};
use crate::scope_names::{ScopeIds, ScopeNames};
use crate::slot_doc::SlotDoc;

/// 7: the field index holds the values inside arrays' objects, under the array's path and
/// theirs (`files.name` for `{"files": [{"name": "a"}]}`), which a filter's dotted path now
/// reaches; the layout is 6's. An image of 6 lacks them, and would answer such a filter with
/// too few records: rebuilt from the records, like every older one.
/// 6: the BM25 index in its flat form (`strata_index::Bm25Index`'s: its arrays as byte runs,
/// no bitmap or list per term or per slot), which a load decodes several times faster.
/// 5: the field index's numbers exact (`strata_types::Num`: integers as integers, so ids past
/// 2^53 stay apart) instead of `f64` bits.
/// 4: the field index ends with its numeric columns (`FieldIndex::with_columns`: the
/// built-in timestamps and confidence, one value per slot).
/// 3: each slot's resident part as columns instead of whole records (`crate::slot_doc`).
/// 2: whole records, BM25 and field indexes by id. Images of 1 to 6 are rebuilt from the
/// records.
const FORMAT: u8 = 7;

/// The first byte of an image row that names a file holding the image (then the file's
/// `GraphFile` record, postcard) rather than holding it: outside the format bytes.
const IN_FILE: u8 = 0xF1;

/// The first byte of an image row that holds the image with its checksum (then the
/// checksum, `u64` little-endian, of the image's bytes, then the bytes): the storage engine
/// checks no checksum of its pages, so without one a value flipped on the disk (a user token's
/// index, a time, a vector) would load as another valid image and answer wrongly, and be saved
/// again. Rows written before it hold the bare image (its format byte first): still read.
const INLINE_CHECKED: u8 = 0xF2;

/// Images of at least this many bytes are kept in a file of their own (module docs): the
/// size from which a load also decodes an image beside its graph file's read.
pub(crate) const IN_FILE_FROM_BYTES: usize = crate::image_beside_graph::SIDE_BY_SIDE_FROM_BYTES;

/// Marks "none" in the `runs` and `scopes` columns.
const NONE: u32 = u32::MAX;

/// Blob names of search images start with this, then the collection's name.
pub(crate) const BLOB_PREFIX: &str = "image:";

pub(crate) fn blob_name(collection: &CollectionName) -> String {
    format!("{BLOB_PREFIX}{collection}")
}

/// The stored form. Byte runs go through [`bytes`] so that postcard writes them as one
/// length-prefixed run (a plain `Vec<u8>` would be decoded byte by byte).
///
/// postcard writes a struct as its fields one after the other, with nothing around them, so
/// an image's bytes are its head's, then its indexes': the two parts are split only so that a
/// save can encode the indexes under the tenant's locks and the head after them
/// ([`Capture`]). The golden bytes below pin that the split changes no stored byte.
#[derive(Serialize, Deserialize)]
struct Image<'a> {
    head: Head,
    indexes: Indexes<'a>,
}

/// Everything of an image but its two indexes.
#[derive(Serialize, Deserialize)]
struct Head {
    format: u8,
    version: u64,
    dim: u32,
    /// Each slot's record id length; 0 for a free slot (an id is never empty).
    id_lens: Vec<u32>,
    /// The ids of the records in their slots, one after the other.
    #[serde(with = "bytes")]
    ids: Vec<u8>,
    /// The names the columns below point into, each once.
    names: Names,
    /// One entry per record, in slot order (free slots have none).
    columns: Columns,
    /// The graph holds the vectors (its snapshot, saved in the same transaction, carries
    /// them), so `vectors` is empty: the image is usable only with that graph.
    vectors_in_graph: bool,
    /// Otherwise `dim` little-endian `f32` per slot (zeros where there is no vector).
    #[serde(with = "bytes")]
    vectors: Vec<u8>,
    /// Slots holding a vector, in roaring's portable serialisation.
    #[serde(with = "bytes")]
    with_vector: Vec<u8>,
}

/// The field and BM25 indexes, borrowed from the collection when an image is encoded (a clone
/// of them, under the tenant's locks, was a third of a large tenant's encode) and owned when
/// it is decoded.
#[derive(Serialize, Deserialize)]
struct Indexes<'a> {
    fields: Cow<'a, FieldIndex>,
    bm25: Cow<'a, Bm25Index>,
}

#[derive(Serialize, Deserialize, Default)]
struct Names {
    domains: Vec<String>,
    runs: Vec<String>,
    scopes: Vec<String>,
    tokens: Vec<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct Columns {
    /// Index into `Names::domains`.
    domain: Vec<u32>,
    /// Index into `Names::runs`, or [`NONE`].
    run: Vec<u32>,
    /// Index into `Names::scopes`, or [`NONE`].
    scope: Vec<u32>,
    /// How many of `tokens` belong to each record, in order.
    token_counts: Vec<u32>,
    /// Indexes into `Names::tokens`, each record's sorted by name.
    tokens: Vec<u32>,
    created_at: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    confidence: Vec<f64>,
    index_bytes: Vec<u32>,
}

/// What a decoded image tells the load besides the collection itself.
pub(crate) struct Loaded {
    pub version: u64,
    pub records: u64,
    pub vectors: u64,
}

/// Numbers names in the order they are first met.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn id(&mut self, name: &str) -> Result<u32, EngineError> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        let id = u32::try_from(self.names.len())
            .ok()
            .filter(|id| *id != NONE)
            .ok_or_else(|| corrupt("too many names"))?;
        self.ids.insert(name.to_owned(), id);
        self.names.push(name.to_owned());
        Ok(id)
    }
}

/// Encodes `ci` as an image at `version`, in one step.
#[cfg(test)]
pub(crate) fn encode(ci: &CollectionIndex, version: u64) -> Result<Vec<u8>, EngineError> {
    Capture::of(ci)?.encode(version)
}

/// A collection's image in two steps, so that a save holds the tenant's locks only for the
/// first (`crate::index_save`): [`Capture::of`] copies what the image needs of the
/// collection, and [`Capture::encode`] makes the image of it with no lock held.
///
/// Why: encoding the whole image under the locks (each slot's scope names looked up and
/// interned as strings, then every column written number by number) held a writing tenant's
/// writes 25–140 ms per save of a 100,000-record collection (docs/benchmarks.md). The copy
/// takes each slot's id bytes and resident fields as plain values (its scope as ids, with a
/// clone of the collection's name tables, which hold each name once) and the two indexes
/// already encoded: they are the image's last part, and a copy of them would cost what
/// encoding them does.
pub(crate) struct Capture {
    dim: u32,
    id_lens: Vec<u32>,
    ids: Vec<u8>,
    /// Each record's resident part but its id, in slot order (free slots have none).
    rows: Vec<Row>,
    /// The tables `rows`' scope ids point into, as they were at the capture.
    names: ScopeNames,
    /// The collection's vectors as little-endian bytes, unless its graph holds them.
    vectors: Option<Vec<u8>>,
    with_vector: Vec<u8>,
    /// [`Indexes`], encoded.
    indexes: Vec<u8>,
}

/// A [`SlotDoc`] without its id.
struct Row {
    scope: ScopeIds,
    created_at: i64,
    expires_at: Option<i64>,
    confidence: f64,
    index_bytes: u32,
}

impl Capture {
    /// Copies what the image of `ci` needs (see [`Capture`]).
    pub(crate) fn of(ci: &CollectionIndex) -> Result<Capture, EngineError> {
        let mut id_lens = Vec::with_capacity(ci.docs.len());
        let mut ids = Vec::new();
        let mut rows = Vec::with_capacity(ci.docs.len());
        for doc in &ci.docs {
            let Some(d) = doc else {
                id_lens.push(0);
                continue;
            };
            let id = d.id.as_str().as_bytes();
            id_lens.push(u32::try_from(id.len()).map_err(|_| corrupt("record id too long"))?);
            ids.extend_from_slice(id);
            rows.push(Row {
                scope: d.scope,
                created_at: d.created_at,
                expires_at: d.expires_at(),
                confidence: d.confidence,
                index_bytes: d.index_bytes,
            });
        }
        let vectors = ci
            .raw_vectors()
            .map(|raw| raw.iter().flat_map(|x| x.to_le_bytes()).collect());
        let mut with_vector = Vec::with_capacity(ci.with_vector.serialized_size());
        ci.with_vector
            .serialize_into(&mut with_vector)
            .map_err(|e| EngineError::Index(format!("search image: {e}")))?;
        let indexes = postcard::to_stdvec(&Indexes {
            fields: Cow::Borrowed(&ci.fields),
            bm25: Cow::Borrowed(&ci.bm25),
        })
        .map_err(|e| EngineError::Index(format!("search image: {e}")))?;
        Ok(Capture {
            dim: ci.dim as u32,
            id_lens,
            ids,
            rows,
            names: ci.names.clone(),
            vectors,
            with_vector,
            indexes,
        })
    }

    /// Each slot's record id as it was at the capture (`None` for a free slot), for the
    /// graph snapshot's row.
    pub(crate) fn slot_ids(&self) -> Result<Vec<Option<String>>, EngineError> {
        let mut at = 0;
        self.id_lens
            .iter()
            .map(|len| {
                if *len == 0 {
                    return Ok(None);
                }
                let id = self
                    .ids
                    .get(at..at + *len as usize)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .ok_or_else(|| corrupt("a captured id"))?;
                at += *len as usize;
                Ok(Some(id.to_owned()))
            })
            .collect()
    }

    /// The image at `version` of the collection as it was at the capture.
    pub(crate) fn encode(self, version: u64) -> Result<Vec<u8>, EngineError> {
        let (mut domains, mut runs, mut scopes, mut tokens) = (
            Interner::default(),
            Interner::default(),
            Interner::default(),
            Interner::default(),
        );
        let mut c = Columns::default();
        // Most records share a few scopes: each is looked up by name once. Names are numbered
        // in the order the slots first meet them, as they would be one slot at a time.
        let mut seen: HashMap<ScopeIds, (u32, u32, u32, Vec<u32>)> = HashMap::new();
        for row in &self.rows {
            let (domain, run, scope, row_tokens) = match seen.get(&row.scope) {
                Some(known) => known,
                None => {
                    let names = self
                        .names
                        .names(row.scope)
                        .ok_or_else(|| corrupt("a record's scope id without a name"))?;
                    let ids = (
                        domains.id(names.domain.as_str())?,
                        match &names.run_id {
                            Some(r) => runs.id(r.as_str())?,
                            None => NONE,
                        },
                        match &names.memory_scope {
                            Some(s) => scopes.id(s.as_str())?,
                            None => NONE,
                        },
                        names
                            .user_tokens
                            .iter()
                            .map(|t| tokens.id(t.as_str()))
                            .collect::<Result<Vec<u32>, _>>()?,
                    );
                    seen.entry(row.scope).or_insert(ids)
                }
            };
            c.domain.push(*domain);
            c.run.push(*run);
            c.scope.push(*scope);
            c.token_counts.push(row_tokens.len() as u32);
            c.tokens.extend_from_slice(row_tokens);
            c.created_at.push(row.created_at);
            c.expires_at.push(row.expires_at);
            c.confidence.push(row.confidence);
            c.index_bytes.push(row.index_bytes);
        }
        let head = Head {
            format: FORMAT,
            version,
            dim: self.dim,
            id_lens: self.id_lens,
            ids: self.ids,
            names: Names {
                domains: domains.names,
                runs: runs.names,
                scopes: scopes.names,
                tokens: tokens.names,
            },
            columns: c,
            vectors_in_graph: self.vectors.is_none(),
            vectors: self.vectors.unwrap_or_default(),
            with_vector: self.with_vector,
        };
        let mut image = postcard::to_stdvec(&head)
            .map_err(|e| EngineError::Index(format!("search image: {e}")))?;
        image.extend_from_slice(&self.indexes);
        Ok(image)
    }
}

fn corrupt(why: impl std::fmt::Display) -> EngineError {
    EngineError::Index(format!("search image: {why}"))
}

/// Decodes an image, closed: the format byte must be this build's and the bytes exactly one
/// image; anything else is an error, never a default.
fn decode_image(bytes: &[u8]) -> Result<Image<'static>, EngineError> {
    match bytes.first() {
        Some(&FORMAT) => exactly::<Image>(bytes),
        Some(other) => Err(corrupt(format!("unknown format byte {other}"))),
        None => Err(corrupt("empty")),
    }
}

/// `T` from exactly `bytes`, or an error.
fn exactly<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, EngineError> {
    let (image, rest) = postcard::take_from_bytes::<T>(bytes).map_err(corrupt)?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(image)
}

/// The format of an image an earlier version wrote (1 to `FORMAT - 1`), which a load
/// rebuilds from the records rather than reads: for the operator's check, which reports it as
/// such rather than as damage.
pub(crate) fn older_format(bytes: &[u8]) -> Option<u8> {
    bytes.first().copied().filter(|f| (1..FORMAT).contains(f))
}

/// Whether `bytes` decode as an image (for the operator's tenant check).
pub(crate) fn check(bytes: &[u8]) -> Result<(), EngineError> {
    // The columns too, as a load reads them, and the indexes against the slots: an image only
    // a load would refuse is no image.
    let image = decode_image(bytes)?;
    let (docs, _) = slot_docs(&image)?;
    let live: RoaringBitmap = (0u32..)
        .zip(&docs)
        .filter(|(_, d)| d.is_some())
        .map(|(slot, _)| slot)
        .collect();
    crate::image_check::check(&live, &docs, &image.indexes.fields, &image.indexes.bm25)
}

/// Parses a name table, closed: a name that does not parse is an error.
fn parse_all<T>(
    names: &[String],
    parse: impl Fn(&str) -> Result<T, strata_types::InvalidName>,
) -> Result<Vec<T>, EngineError> {
    names
        .iter()
        .map(|n| parse(n).map_err(|e| corrupt(format!("name {n:?}: {e}"))))
        .collect()
}

/// `table[i]`, or an error for an index outside it.
fn pick<T: Clone>(table: &[T], i: u32) -> Result<T, EngineError> {
    table
        .get(i as usize)
        .cloned()
        .ok_or_else(|| corrupt("a column points outside its name table"))
}

/// `&table[i]`, or an error for an index outside it.
fn pick_ref<T>(table: &[T], i: u32) -> Result<&T, EngineError> {
    table
        .get(i as usize)
        .ok_or_else(|| corrupt("a column points outside its name table"))
}

/// `&table[i]`, or `None` for [`NONE`].
fn optional<T>(table: &[T], i: u32) -> Result<Option<&T>, EngineError> {
    (i != NONE).then(|| pick_ref(table, i)).transpose()
}

/// The slots' resident parts from the image's ids and columns, checked: every column has one
/// entry per record, every index points into its table, token lists are sorted and distinct.
/// Their scope names are interned in the returned tables, as `SlotDoc::of` would.
fn slot_docs(image: &Image) -> Result<(Vec<Option<SlotDoc>>, ScopeNames), EngineError> {
    let domains = parse_all(&image.head.names.domains, |n| Domain::parse(n))?;
    let runs = parse_all(&image.head.names.runs, |n| RunId::parse(n))?;
    let scopes = parse_all(&image.head.names.scopes, |n| MemoryScope::parse(n))?;
    let tokens = parse_all(&image.head.names.tokens, |n| UserToken::parse(n))?;
    let c = &image.head.columns;
    let records = image.head.id_lens.iter().filter(|l| **l > 0).count();
    let lens = [
        c.domain.len(),
        c.run.len(),
        c.scope.len(),
        c.token_counts.len(),
        c.created_at.len(),
        c.expires_at.len(),
        c.confidence.len(),
        c.index_bytes.len(),
    ];
    if lens.iter().any(|l| *l != records) {
        return Err(corrupt("columns do not match the records"));
    }
    let mut docs = Vec::with_capacity(image.head.id_lens.len());
    let mut names = ScopeNames::default();
    let (mut at, mut row, mut token_at) = (0usize, 0usize, 0usize);
    for len in &image.head.id_lens {
        if *len == 0 {
            docs.push(None);
            continue;
        }
        let end = at
            .checked_add(*len as usize)
            .filter(|end| *end <= image.head.ids.len())
            .ok_or_else(|| corrupt("id lengths overrun the ids"))?;
        let id = std::str::from_utf8(&image.head.ids[at..end])
            .map_err(|_| corrupt("an id is not UTF-8"))
            .and_then(|s| RecordId::parse(s).map_err(|e| corrupt(format!("id {s:?}: {e}"))))?;
        at = end;
        let count = c.token_counts[row] as usize;
        let token_end = token_at
            .checked_add(count)
            .filter(|end| *end <= c.tokens.len())
            .ok_or_else(|| corrupt("token counts overrun the tokens"))?;
        let user_tokens: Vec<UserToken> = c.tokens[token_at..token_end]
            .iter()
            .map(|t| pick(&tokens, *t))
            .collect::<Result<Vec<UserToken>, _>>()?;
        token_at = token_end;
        if user_tokens.windows(2).any(|w| w[0] >= w[1]) {
            return Err(corrupt(format!("record {id}: user tokens out of order")));
        }
        let confidence = c.confidence[row];
        if !(0.0..=1.0).contains(&confidence) {
            return Err(corrupt(format!("record {id}: confidence {confidence}")));
        }
        if c.created_at[row] < 0 || c.expires_at[row].is_some_and(|t| t < 0) {
            return Err(corrupt(format!("record {id}: a time before 1970")));
        }
        let scope = names.acquire(
            pick_ref(&domains, c.domain[row])?,
            optional(&runs, c.run[row])?,
            optional(&scopes, c.scope[row])?,
            &user_tokens,
        )?;
        docs.push(Some(SlotDoc::new(
            id,
            scope,
            c.created_at[row],
            c.expires_at[row],
            confidence,
            c.index_bytes[row],
        )));
        row += 1;
    }
    if at != image.head.ids.len() || token_at != c.tokens.len() {
        return Err(corrupt("bytes after the last record"));
    }
    Ok((docs, names))
}

/// Rebuilds collection `c` from its image, if the image decodes and is whole; the caller
/// still compares [`Loaded::version`] with the stored version.
pub(crate) fn decode(
    bytes: &[u8],
    c: &Collection,
    params: strata_index::HnswParams,
) -> Result<(CollectionIndex, Loaded), EngineError> {
    let image = decode_image(bytes)?;
    if image.head.dim != c.dim {
        return Err(corrupt(format!(
            "dimension {} not {}",
            image.head.dim, c.dim
        )));
    }
    let (docs, names) = slot_docs(&image)?;
    let expected = if image.head.vectors_in_graph {
        0
    } else {
        docs.len() * c.dim as usize * 4
    };
    if image.head.vectors.len() != expected {
        return Err(corrupt("vector bytes do not match the slots"));
    }
    let vectors = (!image.head.vectors_in_graph).then(|| {
        image
            .head
            .vectors
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    });
    let with_vector = RoaringBitmap::deserialize_from(image.head.with_vector.as_slice())
        .map_err(|e| corrupt(format!("with_vector: {e}")))?;
    let records = docs.iter().flatten().count() as u64;
    let mut ci = CollectionIndex::from_image(
        c,
        params,
        docs,
        names,
        vectors,
        image.indexes.fields.into_owned(),
        image.indexes.bm25.into_owned(),
    )?;
    ci.set_with_vector(with_vector)?;
    let loaded = Loaded {
        version: image.head.version,
        records,
        vectors: ci.with_vector.len(),
    };
    Ok((ci, loaded))
}

/// Where a saved image is: in its row, or in a derived file the row names.
pub(crate) enum Saved {
    Inline(Vec<u8>),
    InFile(GraphFile),
}

pub(crate) fn save(
    w: &mut Writer<'_>,
    key: TenantKey,
    collection: &CollectionName,
    saved: &Saved,
) -> Result<(), StoreError> {
    match saved {
        Saved::Inline(bytes) => w.put_blob(key, &blob_name(collection), &inline_row(bytes)),
        Saved::InFile(f) => w.put_blob(key, &blob_name(collection), &file_row(f)?),
    }
}

/// The row of an image kept in the row: [`INLINE_CHECKED`], its checksum, its bytes.
fn inline_row(image: &[u8]) -> Vec<u8> {
    let mut sum = graph_file::Checksum::new();
    sum.update(image);
    let mut row = Vec::with_capacity(1 + 8 + image.len());
    row.push(INLINE_CHECKED);
    row.extend_from_slice(&sum.finish().to_le_bytes());
    row.extend_from_slice(image);
    row
}

/// The image an image row holds (one that names no file): checked against its checksum, or
/// as it is for a row written before images carried one.
pub(crate) fn inline_image(mut row: Vec<u8>) -> Result<Vec<u8>, EngineError> {
    if row.first() != Some(&INLINE_CHECKED) {
        return Ok(row);
    }
    let Some(stored) = row.get(1..9) else {
        return Err(corrupt("a checked row shorter than its checksum"));
    };
    let stored = u64::from_le_bytes(stored.try_into().expect("invariant: 8 bytes"));
    let mut sum = graph_file::Checksum::new();
    sum.update(&row[9..]);
    if sum.finish() != stored {
        return Err(corrupt("the image's bytes do not match their checksum"));
    }
    row.drain(..9);
    Ok(row)
}

/// The row of an image kept in file `f`: [`IN_FILE`], then `f`.
fn file_row(f: &GraphFile) -> Result<Vec<u8>, StoreError> {
    let mut row = vec![IN_FILE];
    row.extend(postcard::to_stdvec(f).map_err(|e| StoreError::Corrupt(format!("{e}")))?);
    Ok(row)
}

/// The file an image row names, if it names one: `Some(Err)` for a row that names one but
/// does not decode.
pub(crate) fn named_file(row: &[u8]) -> Option<Result<GraphFile, EngineError>> {
    let (&tag, rest) = row.split_first()?;
    (tag == IN_FILE).then(|| exactly::<GraphFile>(rest))
}

/// The saved image of `collection` as its row gives it: the image, or the file holding it
/// (read by [`Saved::read`], which a load may do on another thread). `None` when there is none,
/// or the row naming a file does not decode: a load then rebuilds from the records, as for an
/// image that does not decode.
pub(crate) fn load(
    r: &impl Reads,
    key: TenantKey,
    collection: &CollectionName,
) -> Result<Option<Saved>, EngineError> {
    let Some(row) = r.blob(key, &blob_name(collection))? else {
        return Ok(None);
    };
    let saved = match named_file(&row) {
        None => inline_image(row).map(Saved::Inline),
        Some(f) => f.map(Saved::InFile),
    };
    match saved {
        Ok(saved) => Ok(Some(saved)),
        Err(e) => {
            tracing::warn!(%collection, error = %e, "search image row unusable; rebuilding");
            Ok(None)
        }
    }
}

impl Saved {
    /// The image's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Saved::Inline(bytes) => bytes.len() as u64,
            Saved::InFile(f) => f.len,
        }
    }

    /// The image's bytes: the row's, or its file's, checked against the row's length and
    /// checksum (`graph_file::read_checked`); an error for a missing or damaged file, which a
    /// load treats as an image that does not decode.
    pub(crate) fn read(&self, store: &Store, key: TenantKey) -> Result<Cow<'_, [u8]>, EngineError> {
        match self {
            Saved::Inline(bytes) => Ok(Cow::Borrowed(bytes)),
            Saved::InFile(f) => graph_file::read_checked(store, key, f).map(Cow::Owned).inspect_err(|e| {
                tracing::warn!(file = %f.name, error = %e, "search image file unusable; rebuilding");
            }),
        }
    }
}

pub(crate) fn delete(
    w: &mut Writer<'_>,
    key: TenantKey,
    collection: &CollectionName,
) -> Result<(), StoreError> {
    w.delete_blob(key, &blob_name(collection))
}

/// serde `with` module writing a `Vec<u8>` as one byte run. postcard encodes a byte run
/// exactly like a sequence of `u8` (a length, then the bytes), so this changes no stored
/// format, only how fast it decodes.
pub(crate) mod bytes {
    pub use strata_index::packed::{
        deserialize_bytes as deserialize, serialize_bytes as serialize,
    };

    /// The same for an `Option<Vec<u8>>`, read only (graph snapshots of format 1, whose
    /// graph was inline; see `crate::snapshot`).
    pub mod option {
        use serde::{Deserialize, Deserializer};

        #[derive(Deserialize)]
        struct Run(#[serde(with = "super")] Vec<u8>);

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            Ok(Option::<Run>::deserialize(d)?.map(|r| r.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_types::{Metric, Record, RecordId};

    fn collection() -> Collection {
        Collection {
            name: CollectionName::parse("vec").unwrap(),
            dim: 2,
            metric: Metric::L2,
            created_at: 1,
            embedder: None,
            analyzer: Default::default(),
            memory: Default::default(),
        }
    }

    fn record() -> Record {
        Record {
            id: RecordId::parse("a").unwrap(),
            modality: CollectionName::parse("vec").unwrap(),
            kind: None,
            content: Some("hi".into()),
            vector: Some(vec![0.5, -1.0]),
            user_tokens: vec![],
            memory_domain: strata_types::Domain::parse("default").unwrap(),
            run_id: None,
            memory_scope: None,
            metadata: Default::default(),
            created_at: 1,
            updated_at: 1,
            expires_at: None,
            confidence: strata_types::Confidence {
                value: 0.5,
                evidence_count: 1,
                corroborations: 0,
                contradictions: 0,
            },
        }
    }

    fn sample() -> CollectionIndex {
        let mut ci = CollectionIndex::new(&collection());
        ci.upsert(&record(), false).unwrap();
        // One field path and the built-in columns, to keep the golden bytes short (their
        // order is by id, not by hash).
        ci.fields = FieldIndex::with_columns(&crate::collection_index::BUILTIN_COLUMNS);
        ci.fields.insert(0, "b:kind", &serde_json::json!("note"));
        ci.fields.insert(0, "b:created_at", &serde_json::json!(1));
        ci.fields.insert(0, "b:updated_at", &serde_json::json!(1));
        ci.fields.insert(0, "b:confidence", &serde_json::json!(0.5));
        // A metadata id past 2^53 and a fraction: the numbers' exact stored forms.
        ci.fields.insert(
            0,
            "m:msg",
            &serde_json::json!([9_007_199_254_740_993u64, 0.25]),
        );
        ci
    }

    /// Pins the stored format: a change here is a format change and needs a new format byte.
    #[test]
    fn golden_bytes() {
        let bytes = encode(&sample(), 7).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN);
        let (ci, loaded) = decode(&bytes, &collection(), Default::default()).unwrap();
        assert_eq!((loaded.version, loaded.records, loaded.vectors), (7, 1, 1));
        let id = RecordId::parse("a").unwrap();
        assert_eq!(ci.slot_ids(), vec![Some(&id)]);
        assert_eq!(&*ci.vector(0).unwrap(), &[0.5, -1.0]);
        assert_eq!(ci.bm25.doc_count(), 1);
        assert_eq!(encode(&ci, 7).unwrap(), bytes);
        // An image of a format no longer read is known as such (verify says so), and refused.
        let mut older = bytes.clone();
        older[0] = FORMAT - 1;
        assert_eq!(older_format(&older), Some(FORMAT - 1));
        assert!(decode_image(&older).is_err());
        assert_eq!(older_format(&bytes), None);
    }

    /// Images of format 6 and 5, as the previous versions wrote them, are older formats: they
    /// lack the values inside arrays' objects, so a load rebuilds them from the records
    /// rather than answer a filter on such a path with too few records.
    #[test]
    fn format_6_and_5_images_are_rebuilt() {
        let unhex = |hex: &str| -> Vec<u8> {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        };
        let six = unhex(&GOLDEN.replacen("07", "06", 1));
        for (format, bytes) in [(6, six), (5, unhex(GOLDEN_5))] {
            assert_eq!(older_format(&bytes), Some(format));
            assert!(decode(&bytes, &collection(), Default::default()).is_err());
        }
    }

    /// Format 7: `07`, then as format 6 (its field index may hold more paths, never others).
    ///
    /// Format 6: `06`, then as format 5 up to the BM25 index, which is flat: the analyzer
    /// (`00`), the term lengths as one byte run (`04`, [2]), the terms' bytes (`02`, `hi`), the
    /// postings' slot counts ([1]), the small postings' slots ([0]), no large postings (`00`),
    /// no repeated frequencies (`00`), the documents {0}, the lengths ([1]), each slot's term
    /// count ([1]) and ids ([0]), total length 1.
    ///
    /// Format 5: `05`, then as format 4, but the field index's numbers are exact (`Num`): the
    /// metadata path `m:msg` holds the integer 2^53 + 1 (`Int`, postcard's zigzag varint of an
    /// `i64`) and the fraction 0.25 (`Float`, an `f64`).
    ///
    /// Format 4: `04`, then as format 3 but for the index bytes, 2 (`02`: two bytes of text;
    /// the columns are counted whole, not per record — an estimate, so images saved with the
    /// earlier figure stay valid), and the field index, which ends with its columns: the three
    /// built-ins, `b:created_at`, `b:updated_at` and `b:confidence`, holding 1.0, 1.0 and 0.5
    /// for slot 0 (`03`, then per column its name `0c 623a...`, `01` value, the `f64`).
    ///
    /// Format 3: `03`, version 7, dim 2; id lengths [1] and the ids `a`; the name tables
    /// (domains [`default`], no runs, scopes or tokens); the columns, one entry each: domain 0,
    /// run and scope none (`ffffffff0f`), 0 tokens, no token ids, created at 1 (zigzag `02`),
    /// no expiry, confidence 0.5, index bytes 194 (`c201`); then as in format 2: vectors not in
    /// a graph (`00`), 8 vector bytes (0.5, -1.0), the portable bitmap {0}; the field index
    /// (path names by id `b:kind`, each path's values: the string `note` in {0}, then each
    /// slot's (path id, value) list); the BM25 index (analyzer, terms by id `hi`, each
    /// posting's slots {0} and repeated frequencies (none), the documents {0}, lengths [1],
    /// each slot's term ids [[0]], total length 1).
    const GOLDEN: &str = "07070201010161010764656661756c74000000010001ffffffff0f01ffffffff0f0100000102010001000000000000e03f010200080000003f000080bf123a30000001000000000000001000000000000206623a6b696e64056d3a6d73670201046e6f7465123a3000000100000000000000100000000000083a30000000000000083a300000000000000000083a30000000000000083a300000000000000202000000000000d03f123a3000000100000000000000100000000000008280808080808020123a300000010000000000000010000000000001030000046e6f74650102008280808080808020010202000000000000d03f030c623a637265617465645f617401000000000000f03f0c623a757064617465645f617401000000000000f03f0c623a636f6e666964656e636501000000000000e03f000402000000026869040100000004000000000000123a300000010000000000000010000000000004010000000401000000040000000001";

    /// Format 5's bytes of the same image, as `GOLDEN` held them before format 6 (and 7).
    const GOLDEN_5: &str = "05070201010161010764656661756c74000000010001ffffffff0f01ffffffff0f0100000102010001000000000000e03f010200080000003f000080bf123a30000001000000000000001000000000000206623a6b696e64056d3a6d73670201046e6f7465123a3000000100000000000000100000000000083a30000000000000083a300000000000000000083a30000000000000083a300000000000000202000000000000d03f123a3000000100000000000000100000000000008280808080808020123a300000010000000000000010000000000001030000046e6f74650102008280808080808020010202000000000000d03f030c623a637265617465645f617401000000000000f03f0c623a757064617465645f617401000000000000f03f0c623a636f6e666964656e636501000000000000e03f000102686901123a300000010000000000000010000000000000123a3000000100000000000000100000000000010101010001";

    #[test]
    fn anything_else_is_an_error() {
        let good = encode(&sample(), 7).unwrap();
        let mut other_format = good.clone();
        // Format 2 (whole records) is no longer read: rebuilt from the records.
        other_format[0] = 2;
        // Nor format 3 (no field columns): its field index would decode short.
        let mut format_3 = good.clone();
        format_3[0] = 3;
        let mut trailing = good.clone();
        trailing.push(0);
        for bad in [
            &[][..],
            &other_format,
            &format_3,
            &trailing,
            &good[..good.len() - 1],
            b"garbage",
        ] {
            assert!(
                decode(bad, &collection(), Default::default()).is_err(),
                "{bad:?}"
            );
        }
        let mut other_dim = collection();
        other_dim.dim = 3;
        assert!(decode(&good, &other_dim, Default::default()).is_err());
    }

    /// Images that decode as postcard but whose columns do not hold together are refused
    /// (then the load rebuilds from the records), never trusted.
    #[test]
    fn inconsistent_columns_are_errors() {
        let good = encode(&sample(), 7).unwrap();
        let damaged: Vec<fn(&mut Image)> = vec![
            |i| i.head.columns.domain[0] = 5,
            |i| i.head.columns.run[0] = 0,
            |i| i.head.columns.created_at.push(1),
            |i| i.head.columns.token_counts[0] = 1,
            |i| i.head.names.domains[0] = "bad domain!".into(),
            |i| i.head.id_lens[0] = 9,
            |i| i.head.ids = b"\xff".to_vec(),
            |i| i.head.id_lens.push(1),
        ];
        for (n, damage) in damaged.into_iter().enumerate() {
            let mut image = decode_image(&good).unwrap();
            damage(&mut image);
            let bytes = postcard::to_stdvec(&image).unwrap();
            assert!(
                decode(&bytes, &collection(), Default::default()).is_err(),
                "damage {n} was accepted"
            );
        }
    }

    /// An image kept in its row carries its checksum: any byte flipped in the row, even to a
    /// value that would decode (a user token's index, a time), is an error, which the load
    /// answers with a rebuild from the records; a row written before checksums still reads.
    #[test]
    fn an_image_in_its_row_is_checked_against_its_checksum() {
        let image = encode(&sample(), 7).unwrap();
        let row = inline_row(&image);
        assert_eq!(row[0], INLINE_CHECKED);
        assert!(named_file(&row).is_none());
        assert_eq!(inline_image(row.clone()).unwrap(), image);
        for at in [1, 5, 9, row.len() / 2, row.len() - 1] {
            let mut flipped = row.clone();
            flipped[at] ^= 0x04;
            assert!(
                inline_image(flipped).is_err(),
                "byte {at} flipped was accepted"
            );
        }
        assert!(
            inline_image(row[..8].to_vec()).is_err(),
            "cut inside the checksum"
        );
        assert_eq!(
            inline_image(image.clone()).unwrap(),
            image,
            "a bare row as written before"
        );
    }

    /// A row naming a file is told from an image (whose first byte is its format), and one
    /// that does not decode whole is an error, not an image.
    #[test]
    fn a_row_naming_a_file_is_told_from_an_image() {
        let image = encode(&sample(), 7).unwrap();
        assert!(named_file(&image).is_none());
        assert!(named_file(&[]).is_none());
        let f = GraphFile {
            name: "x.image".into(),
            len: 3,
            checksum: 9,
        };
        let row = file_row(&f).unwrap();
        assert_eq!(named_file(&row).unwrap().unwrap(), f);
        let mut trailing = row.clone();
        trailing.push(0);
        for bad in [&row[..row.len() - 1], &[IN_FILE][..], &trailing] {
            assert!(named_file(bad).unwrap().is_err(), "{bad:?}");
        }
        // Never a format byte, of this version or an older one.
        assert!(decode_image(&row).is_err());
        assert_eq!(older_format(&row), None);
    }

    /// Scope fields, tokens and expiry survive the image, and names are stored once.
    #[test]
    fn scope_columns_round_trip() {
        let mut ci = CollectionIndex::new(&collection());
        for (i, run) in [Some("r1"), None, Some("r1")].into_iter().enumerate() {
            let mut r = record();
            r.id = RecordId::parse(format!("id{i}")).unwrap();
            r.run_id = run.map(|x| strata_types::RunId::parse(x).unwrap());
            r.memory_scope = Some(strata_types::MemoryScope::parse("s").unwrap());
            r.user_tokens = vec![
                strata_types::UserToken::parse("u:a").unwrap(),
                strata_types::UserToken::parse("u:b").unwrap(),
            ];
            r.expires_at = (i == 1).then_some(99);
            ci.upsert(&r, false).unwrap();
        }
        let id = RecordId::parse("id1").unwrap();
        ci.remove(&id).unwrap();
        let bytes = encode(&ci, 3).unwrap();
        let image = decode_image(&bytes).unwrap();
        assert_eq!(image.head.names.runs, vec!["r1".to_string()]);
        assert_eq!(image.head.names.tokens.len(), 2);
        let (back, loaded) = decode(&bytes, &collection(), Default::default()).unwrap();
        assert_eq!(loaded.records, 2);
        let described = |ci: &CollectionIndex| -> Vec<_> {
            ci.docs
                .iter()
                .map(|d| {
                    d.as_ref()
                        .map(|d| (d.id.clone(), ci.names.names(d.scope).unwrap()))
                })
                .collect()
        };
        assert_eq!(described(&back), described(&ci));
        assert_eq!(encode(&back, 3).unwrap(), bytes);
    }

    /// An image of a few records with words, fields, scope names and an expiry: every part a
    /// load decodes.
    fn varied() -> Vec<u8> {
        let mut ci = CollectionIndex::new(&collection());
        for i in 0..12 {
            let mut r = record();
            r.id = RecordId::parse(format!("id{i}")).unwrap();
            r.content = Some(format!("word{} shared w{} note", i % 3, i));
            r.run_id = (i % 2 == 0).then(|| strata_types::RunId::parse("r").unwrap());
            r.user_tokens = vec![strata_types::UserToken::parse(format!("u:{}", i % 4)).unwrap()];
            r.expires_at = (i == 5).then_some(99);
            r.metadata.insert("n".into(), serde_json::json!(i));
            ci.upsert(&r, false).unwrap();
        }
        ci.remove(&RecordId::parse("id3").unwrap()).unwrap();
        encode(&ci, 4).unwrap()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        /// Stored state decodes closed: an image with a byte changed, cut short or grown
        /// decodes to an error or to an image, and never panics, for the load and for the
        /// operator's check alike.
        #[test]
        fn a_damaged_image_is_refused_or_read_never_a_panic(
            at in 0usize..4096,
            byte in proptest::prelude::any::<u8>(),
            how in 0u8..3,
        ) {
            let mut bytes = varied();
            let at = at % bytes.len();
            match how {
                0 => bytes[at] = byte,
                1 => bytes.truncate(at),
                _ => bytes.insert(at, byte),
            }
            let outcome = std::panic::catch_unwind(|| {
                let _ = decode(&bytes, &collection(), Default::default());
                let _ = check(&bytes);
            });
            proptest::prop_assert!(outcome.is_ok(), "panicked: {how} at {at} with {byte:#04x}");
        }
    }
}
