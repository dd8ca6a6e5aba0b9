//! Binary encoding of stored values: postcard, with JSON text for free-form metadata (postcard
//! cannot carry self-describing values) and a leading version byte so the layout can evolve.

use serde::{Deserialize, Serialize};
use strata_types::{
    CollectionName, Confidence, Domain, Kind, MemoryScope, Millis, Record, RecordId, RunId,
    UserToken,
};

use crate::StoreError;

/// Records written before checksums: `1 | postcard`. Still read.
const RECORD_V1: u8 = 1;
/// `2 | postcard | crc32 (little-endian) of the postcard bytes`. The storage engine checks its
/// pages' checksums only when it repairs or checks a file, not when it reads one; a byte that
/// changed on disk inside a record would otherwise be served (or counted by `verify`) as if
/// it had been written so. With the checksum such a record is `StoreError::Corrupt` wherever
/// it is read.
const RECORD_V2: u8 = 2;
const CHECKSUM_BYTES: usize = 4;

/// A stored record; `V` is its vector as decoded: `Vec<f32>`, or [`SkippedVector`] for a
/// read that does not return it (the bytes are the same either way).
#[derive(Deserialize)]
struct StoredRecord<V = Vec<f32>> {
    id: RecordId,
    modality: CollectionName,
    kind: Option<Kind>,
    content: Option<String>,
    vector: Option<V>,
    user_tokens: Vec<UserToken>,
    memory_domain: Domain,
    run_id: Option<RunId>,
    memory_scope: Option<MemoryScope>,
    metadata: String,
    created_at: Millis,
    updated_at: Millis,
    expires_at: Option<Millis>,
    confidence: (f64, u32, u32, u32),
}

/// A record's metadata as the JSON text it is stored as. A write encodes it before its
/// transaction opens ([`crate::Writer::put_record_encoded`]): the storage write lock, which
/// every tenant's writes wait for, is then not held for work proportional to the request's
/// bytes (a batch of a thousand records with 15 KB of metadata each spent most of its
/// transaction encoding them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataJson(String);

thread_local! {
    static ENCODED_IN_WRITE_PATH: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many records' metadata this thread has encoded inside a write path
/// ([`crate::in_write_path`]): for tests that a write encodes its records before its
/// transaction.
pub fn metadata_encoded_in_write_path() -> u64 {
    ENCODED_IN_WRITE_PATH.get()
}

impl MetadataJson {
    pub fn of(metadata: &serde_json::Map<String, serde_json::Value>) -> Result<Self, StoreError> {
        if crate::in_write_path() {
            ENCODED_IN_WRITE_PATH.set(ENCODED_IN_WRITE_PATH.get() + 1);
        }
        serde_json::to_string(metadata)
            .map(MetadataJson)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The text's length in bytes: what the byte quota charges for the metadata.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The fields of [`StoredRecord`] borrowed from a [`Record`]: the same postcard bytes (serde
/// writes a struct's fields in order, whatever owns them), without copying the record's
/// text, vector and metadata to encode it.
#[derive(Serialize)]
struct StoredRecordRef<'a> {
    id: &'a RecordId,
    modality: &'a CollectionName,
    kind: &'a Option<Kind>,
    content: &'a Option<String>,
    vector: &'a Option<Vec<f32>>,
    user_tokens: &'a [UserToken],
    memory_domain: &'a Domain,
    run_id: &'a Option<RunId>,
    memory_scope: &'a Option<MemoryScope>,
    metadata: &'a str,
    created_at: Millis,
    updated_at: Millis,
    expires_at: Option<Millis>,
    confidence: (f64, u32, u32, u32),
}

/// A record's stored bytes (format byte first). Public so the engine's persisted search form
/// carries records in exactly the stored format, decoded by [`decode_record`].
pub fn encode_record(r: &Record) -> Result<Vec<u8>, StoreError> {
    encode_record_with(r, &MetadataJson::of(&r.metadata)?)
}

/// [`encode_record`] with the record's metadata already encoded (`metadata` must be
/// [`MetadataJson::of`] its metadata; debug builds check it).
pub fn encode_record_with(r: &Record, metadata: &MetadataJson) -> Result<Vec<u8>, StoreError> {
    debug_assert_eq!(
        serde_json::to_string(&r.metadata).ok().as_deref(),
        Some(metadata.0.as_str()),
        "a record's metadata encoded from another value"
    );
    let c = r.confidence;
    let stored = StoredRecordRef {
        id: &r.id,
        modality: &r.modality,
        kind: &r.kind,
        content: &r.content,
        vector: &r.vector,
        user_tokens: &r.user_tokens,
        memory_domain: &r.memory_domain,
        run_id: &r.run_id,
        memory_scope: &r.memory_scope,
        metadata: &metadata.0,
        created_at: r.created_at,
        updated_at: r.updated_at,
        expires_at: r.expires_at,
        confidence: (
            c.value,
            c.evidence_count,
            c.corroborations,
            c.contradictions,
        ),
    };
    let mut out = postcard::to_extend(&stored, vec![RECORD_V2])
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sum = crc32fast::hash(&out[1..]);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// Decodes [`encode_record`]'s bytes, closed: anything else is `StoreError::Corrupt`.
pub fn decode_record(bytes: &[u8]) -> Result<Record, StoreError> {
    decode_record_as::<Vec<f32>>(bytes, Some, Metadata::Parse).map(|(r, _)| r)
}

/// A record a write replaced or deleted, as the write needs it: every field but its metadata,
/// which is not parsed (`record.metadata` is empty), and the length of its stored metadata
/// text, which the byte quota gives back. Nothing of a removed record reads its metadata,
/// and parsing it (work proportional to its bytes) ran inside the write transaction, which
/// every tenant's writes wait for. Its bytes are still checked (the checksum covers them).
#[derive(Debug, Clone, PartialEq)]
pub struct RemovedRecord {
    pub record: Record,
    pub metadata_len: usize,
}

/// Decodes [`encode_record`]'s bytes as a [`RemovedRecord`], closed like [`decode_record`].
pub fn decode_removed_record(bytes: &[u8]) -> Result<RemovedRecord, StoreError> {
    let (record, metadata_len) = decode_record_as::<Vec<f32>>(bytes, Some, Metadata::Skip)?;
    Ok(RemovedRecord {
        record,
        metadata_len,
    })
}

/// Whether a decode parses the record's metadata text.
#[derive(Clone, Copy, PartialEq)]
enum Metadata {
    Parse,
    Skip,
}

/// [`decode_record`] without the vector (`vector: None`), for reads that do not return it (a
/// search hit answers with its vector only when asked): the vector's values are still read
/// and checked, but not copied into a new allocation. Closed like [`decode_record`].
pub fn decode_record_without_vector(bytes: &[u8]) -> Result<Record, StoreError> {
    decode_record_as::<SkippedVector>(bytes, |_| None, Metadata::Parse).map(|(r, _)| r)
}

/// A stored vector read past: its length and each of its values are decoded (so a truncated
/// value is still corrupt), nothing is kept.
struct SkippedVector;

impl<'de> Deserialize<'de> for SkippedVector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Values;
        impl<'de> serde::de::Visitor<'de> for Values {
            type Value = SkippedVector;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of f32")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SkippedVector, A::Error> {
                while seq.next_element::<f32>()?.is_some() {}
                Ok(SkippedVector)
            }
        }
        d.deserialize_seq(Values)
    }
}

/// The fields of a stored record that decide who may see it, and its collection: what a
/// visibility check needs, without the record's text, vector or metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordScope {
    pub modality: CollectionName,
    pub user_tokens: Vec<UserToken>,
    pub memory_domain: Domain,
    pub run_id: Option<RunId>,
    pub memory_scope: Option<MemoryScope>,
    pub expires_at: Option<Millis>,
}

/// [`StoredRecord`] as the scope probe reads it: the same layout, the text and metadata
/// borrowed from the stored bytes instead of copied, the vector read past.
#[derive(Deserialize)]
#[allow(dead_code)] // Fields read past, named to keep the layout.
struct StoredRecordScope<'a> {
    id: &'a str,
    modality: CollectionName,
    kind: Option<Kind>,
    content: Option<&'a str>,
    vector: Option<SkippedVector>,
    user_tokens: Vec<UserToken>,
    memory_domain: Domain,
    run_id: Option<RunId>,
    memory_scope: Option<MemoryScope>,
    metadata: &'a str,
    created_at: Millis,
    updated_at: Millis,
    expires_at: Option<Millis>,
    confidence: (f64, u32, u32, u32),
}

/// The scope fields of [`encode_record`]'s bytes, for a visibility check over many records
/// (the other ends of a heavily linked record's links): several times cheaper than
/// [`decode_record_without_vector`], which copies the text and parses the metadata's JSON.
/// Closed on the layout and, for every record written since checksums, on every byte (the
/// checksum covers the metadata this does not parse).
pub fn decode_record_scope(bytes: &[u8]) -> Result<RecordScope, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("record: {e}"));
    let body = record_body(bytes)?;
    let (s, rest): (StoredRecordScope<'_>, _) =
        postcard::take_from_bytes(body).map_err(|e| corrupt(&e))?;
    if !rest.is_empty() {
        return Err(corrupt(&"trailing bytes"));
    }
    Ok(RecordScope {
        modality: s.modality,
        user_tokens: s.user_tokens,
        memory_domain: s.memory_domain,
        run_id: s.run_id,
        memory_scope: s.memory_scope,
        expires_at: s.expires_at,
    })
}

/// A stored record's postcard bytes: its format byte checked and, from version 2 on, its
/// checksum.
fn record_body(bytes: &[u8]) -> Result<&[u8], StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("record: {e}"));
    let (version, body) = bytes.split_first().ok_or_else(|| corrupt(&"empty value"))?;
    let body = match *version {
        RECORD_V1 => body,
        RECORD_V2 => {
            let at = body
                .len()
                .checked_sub(CHECKSUM_BYTES)
                .ok_or_else(|| corrupt(&"shorter than its checksum"))?;
            let (body, sum) = body.split_at(at);
            let stored = u32::from_le_bytes(sum.try_into().expect("invariant: 4 bytes"));
            if crc32fast::hash(body) != stored {
                return Err(corrupt(
                    &"checksum mismatch: its bytes changed after it was written",
                ));
            }
            body
        }
        other => return Err(corrupt(&format!("unknown version {other}"))),
    };
    Ok(body)
}

/// The record and the length of its metadata text.
fn decode_record_as<V: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    vector: impl FnOnce(V) -> Option<Vec<f32>>,
    parse: Metadata,
) -> Result<(Record, usize), StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("record: {e}"));
    let body = record_body(bytes)?;
    // `from_bytes` would ignore bytes left after the record; a value longer than what it
    // decodes to is not a record this code wrote.
    let (s, rest): (StoredRecord<V>, _) =
        postcard::take_from_bytes(body).map_err(|e| corrupt(&e))?;
    if !rest.is_empty() {
        return Err(corrupt(&"trailing bytes"));
    }
    let metadata = match parse {
        Metadata::Parse => serde_json::from_str(&s.metadata).map_err(|e| corrupt(&e))?,
        Metadata::Skip => Default::default(),
    };
    let metadata_len = s.metadata.len();
    let (value, evidence_count, corroborations, contradictions) = s.confidence;
    let record = Record {
        id: s.id,
        modality: s.modality,
        kind: s.kind,
        content: s.content,
        vector: s.vector.and_then(vector),
        user_tokens: s.user_tokens,
        memory_domain: s.memory_domain,
        run_id: s.run_id,
        memory_scope: s.memory_scope,
        metadata,
        created_at: s.created_at,
        updated_at: s.updated_at,
        expires_at: s.expires_at,
        confidence: Confidence {
            value,
            evidence_count,
            corroborations,
            contradictions,
        },
    };
    Ok((record, metadata_len))
}

/// The format byte of every JSON-bodied value (registry entries, collections, usage and the
/// like): `1 | JSON`. Values written before format bytes existed are plain JSON objects, whose
/// first byte is `{`; they are still read, so old data directories keep working, and are
/// rewritten in the current format the next time they change. Anything else is corrupt.
const JSON_V1: u8 = 1;
const LEGACY_JSON: u8 = b'{';

/// Small, rarely written values: a format byte, then JSON, which keeps them readable.
pub fn encode_json<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![JSON_V1];
    serde_json::to_writer(&mut out, v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(out)
}

/// Decodes what [`encode_json`] wrote. Closed: an unknown format byte, bytes that are not
/// JSON, or JSON of another shape is [`StoreError::Corrupt`], never a default.
pub fn decode_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    let body = match bytes.first() {
        Some(&JSON_V1) => &bytes[1..],
        Some(&LEGACY_JSON) => bytes,
        Some(other) => {
            return Err(StoreError::Corrupt(format!("unknown value format {other}")));
        }
        None => return Err(StoreError::Corrupt("empty value".into())),
    };
    serde_json::from_slice(body).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A link's value (both its entry by source and its mirror by target): a format byte, the
/// weight as an `f32` and the creation time as an `i64`, both little-endian. The ends and the
/// relation are in the key.
const LINK_V1: u8 = 1;
const LINK_LEN: usize = 1 + 4 + 8;

pub(crate) fn encode_link(weight: f32, created_at: Millis) -> Vec<u8> {
    let mut out = Vec::with_capacity(LINK_LEN);
    out.push(LINK_V1);
    out.extend_from_slice(&weight.to_le_bytes());
    out.extend_from_slice(&created_at.to_le_bytes());
    out
}

/// `(weight, created_at)` of a stored link. Closed: another format byte, another length or a
/// weight outside (0, 1] is [`StoreError::Corrupt`].
pub(crate) fn decode_link(bytes: &[u8]) -> Result<(f32, Millis), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("link: {what}"));
    if bytes.len() != LINK_LEN {
        return Err(corrupt("wrong length"));
    }
    if bytes[0] != LINK_V1 {
        return Err(corrupt("unknown format"));
    }
    let weight = f32::from_le_bytes(bytes[1..5].try_into().map_err(|_| corrupt("weight"))?);
    let created_at = Millis::from_le_bytes(bytes[5..13].try_into().map_err(|_| corrupt("time"))?);
    if !(weight > 0.0 && weight <= 1.0) {
        return Err(corrupt("weight out of range"));
    }
    Ok((weight, created_at))
}

/// A stored credential: the storage key of the tenant incarnation it was issued for
/// ([`crate::TenantKey::SERVER`] for operator credentials), then the auth crate's own bytes.
/// The owner lives in the store's envelope so that erasing a tenant can find its credentials
/// without knowing how they are encoded.
const CREDENTIAL_V1: u8 = 1;

pub(crate) fn encode_credential(owner: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + body.len());
    out.push(CREDENTIAL_V1);
    out.extend_from_slice(&owner.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The owner and body of a stored credential. `Ok(None)` for a row written before credentials
/// had owners (a JSON object): it has no incarnation and must be upgraded before it is used.
pub(crate) fn decode_credential(bytes: &[u8]) -> Result<Option<(u64, &[u8])>, StoreError> {
    match bytes.split_first() {
        Some((&CREDENTIAL_V1, rest)) => match rest.split_first_chunk::<8>() {
            Some((owner, body)) => Ok(Some((u64::from_be_bytes(*owner), body))),
            None => Err(StoreError::Corrupt("credential: truncated".into())),
        },
        Some((&LEGACY_JSON, _)) => Ok(None),
        _ => Err(StoreError::Corrupt("credential: unknown format".into())),
    }
}

/// Adaptive reranking state (`crates/store/src/adaptive.rs`): a format byte, then postcard.
/// Decoding is closed: another format byte, a body of another shape or trailing bytes are
/// [`StoreError::Corrupt`].
const NARRATIVE_V1: u8 = 1;
const PHEROMONE_V1: u8 = 1;
/// A pheromone with its record's user tokens: the cap keeps pheromones per owner set, and a
/// namespace loads without reading each record for them. Format 1 values (without) still
/// decode; every write of a pheromone writes this one.
const PHEROMONE_V2: u8 = 2;

/// A collection's narrative vector in one (tenant, domain): the exponential moving average of
/// the context vectors its feedback carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredNarrative {
    pub vector: Vec<f32>,
    /// How many context vectors it has absorbed.
    pub updates: u64,
    pub updated_at: Millis,
}

/// A record's pheromone in one (tenant, domain): its strength as of `updated_at`, which then
/// decays with time (a half-life) and exposure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoredPheromone {
    pub strength: f64,
    pub updated_at: Millis,
    /// Times the record was reported used, and shown without being used.
    pub reinforcements: u64,
    pub exposures: u64,
}

fn encode_postcard<T: Serialize>(format: u8, v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(v, vec![format]).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_postcard<T: for<'de> Deserialize<'de>>(
    what: &str,
    format: u8,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    match bytes.split_first() {
        Some((f, body)) if *f == format => {
            let (v, rest) = postcard::take_from_bytes(body).map_err(|e| corrupt(&e))?;
            if rest.is_empty() {
                Ok(v)
            } else {
                Err(corrupt(&"trailing bytes"))
            }
        }
        Some((f, _)) => Err(corrupt(&format!("unknown format {f}"))),
        None => Err(corrupt(&"empty value")),
    }
}

pub fn encode_narrative(n: &StoredNarrative) -> Result<Vec<u8>, StoreError> {
    encode_postcard(NARRATIVE_V1, n)
}

pub fn decode_narrative(bytes: &[u8]) -> Result<StoredNarrative, StoreError> {
    decode_postcard("narrative", NARRATIVE_V1, bytes)
}

/// A stored pheromone and, from format 2 on, the user tokens of its record when it was
/// written (`None` for a format 1 value, written before they were kept).
#[derive(Debug, Clone, PartialEq)]
pub struct PheromoneValue {
    pub pheromone: StoredPheromone,
    pub owners: Option<Vec<UserToken>>,
}

pub fn encode_pheromone(p: &StoredPheromone, owners: &[UserToken]) -> Result<Vec<u8>, StoreError> {
    encode_postcard(PHEROMONE_V2, &(p, owners))
}

pub fn decode_pheromone(bytes: &[u8]) -> Result<PheromoneValue, StoreError> {
    if bytes.first() == Some(&PHEROMONE_V1) {
        let pheromone = decode_postcard("pheromone", PHEROMONE_V1, bytes)?;
        return Ok(PheromoneValue {
            pheromone,
            owners: None,
        });
    }
    let (pheromone, owners) = decode_postcard("pheromone", PHEROMONE_V2, bytes)?;
    Ok(PheromoneValue {
        pheromone,
        owners: Some(owners),
    })
}

const CHANGE_V1: u8 = 1;
const CHANGE_HEAD_V1: u8 = 1;
const CHANGE_MARK_V1: u8 = 1;

/// What a change log entry says happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeOp {
    /// Written (created or replaced) in `collection`.
    Upsert,
    /// Removed from `collection` (deleted, expired, purged, or moved to another collection).
    Delete,
}

/// One entry of a tenant's change log (`crate::changelog`): which record changed, where.
/// The record itself is read from storage when the entry is replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEntry {
    pub op: ChangeOp,
    pub collection: CollectionName,
    pub id: RecordId,
}

/// A tenant's change log head: entries `first..next` are kept (`first == next`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeHead {
    /// The sequence the next entry gets; sequences start at 1 and are never reused.
    pub next: u64,
    /// The oldest sequence still kept; older entries were trimmed.
    pub first: u64,
}

pub fn encode_change(e: &ChangeEntry) -> Result<Vec<u8>, StoreError> {
    encode_postcard(CHANGE_V1, e)
}

pub fn decode_change(bytes: &[u8]) -> Result<ChangeEntry, StoreError> {
    decode_postcard("change log entry", CHANGE_V1, bytes)
}

pub fn encode_change_head(h: &ChangeHead) -> Result<Vec<u8>, StoreError> {
    encode_postcard(CHANGE_HEAD_V1, h)
}

pub fn decode_change_head(bytes: &[u8]) -> Result<ChangeHead, StoreError> {
    let head: ChangeHead = decode_postcard("change log head", CHANGE_HEAD_V1, bytes)?;
    // Sequences start at 1 and the oldest kept is never past the next; the arithmetic on a
    // head relies on both.
    if head.first == 0 || head.first > head.next || head.next == u64::MAX {
        return Err(StoreError::Corrupt(format!(
            "change log head: first {} and next {} are not a range",
            head.first, head.next
        )));
    }
    Ok(head)
}

/// What a persisted search image reflects: the tenant's data version it was stamped with (so
/// the mark is used only with that image) and the last change log sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMark {
    pub version: u64,
    pub seq: u64,
}

pub fn encode_change_mark(m: &ChangeMark) -> Result<Vec<u8>, StoreError> {
    encode_postcard(CHANGE_MARK_V1, m)
}

pub fn decode_change_mark(bytes: &[u8]) -> Result<ChangeMark, StoreError> {
    let mark: ChangeMark = decode_postcard("change log mark", CHANGE_MARK_V1, bytes)?;
    if mark.seq == u64::MAX {
        return Err(StoreError::Corrupt(
            "change log mark: no such sequence".into(),
        ));
    }
    Ok(mark)
}

/// Format 1 rows (written before moves were resumed) have no `attempt`; format 2 adds it;
/// format 3 adds the graph parameters the move lands with (`index_params`).
const MIGRATION_V1: u8 = 1;
const MIGRATION_V2: u8 = 2;
const MIGRATION_V3: u8 = 3;

/// A tenant's own graph parameters as a migration row stores them (the engine owns their
/// meaning and bounds); `None` is the server default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredIndexParams {
    pub m: Option<u32>,
    pub ef_construction: Option<u32>,
    pub ef_search: Option<u32>,
}

/// An isolation level as a migration row stores it (the engine owns the levels' meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredLevel {
    Shared,
    Partition,
    Dedicated,
}

/// Where a tenant's last migration stood when its row was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredMigrationState {
    /// Started and not ended: read after a restart, the process running it died.
    Running,
    Done,
    Failed,
    /// Stopped by a server shutdown before it moved the tenant.
    Interrupted,
    /// Stopped by an operator before its flip (or, interrupted, never resumed): the tenant
    /// stayed where it was. Added after the first rows were written: it is the last variant,
    /// so older rows keep their bytes.
    Cancelled,
}

/// A tenant's last isolation-level migration (`crate::migration_row`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMigration {
    pub from: StoredLevel,
    pub to: StoredLevel,
    pub state: StoredMigrationState,
    pub started_at: Millis,
    /// Set exactly when the state is not `Running`.
    pub finished_at: Option<Millis>,
    /// Storage keys copied, of the total counted when the copy began (0 when no data moved).
    pub keys_copied: u64,
    pub keys_total: u64,
    pub error: Option<String>,
    /// Which run of the move this is: 1 for the one an operator asked for, one more for each
    /// resumption of it after a crash or shutdown. 0 in a format-1 row (written by a binary
    /// that did not resume moves, whose users were told to ask again): never resumed.
    pub attempt: u8,
    /// The graph parameters the tenant lands with (all `None`: the server's defaults), so
    /// that a resumed move keeps the ones it was asked for. `None`: the tenant's stored ones
    /// (a row of format 1 or 2, written for a move that changes none, or by a binary before
    /// they were kept); the engine checks their range before using them.
    pub index_params: Option<StoredIndexParams>,
}

/// A format-2 row: a `StoredMigration` without `index_params`.
#[derive(Deserialize)]
struct StoredMigrationV2 {
    from: StoredLevel,
    to: StoredLevel,
    state: StoredMigrationState,
    started_at: Millis,
    finished_at: Option<Millis>,
    keys_copied: u64,
    keys_total: u64,
    error: Option<String>,
    attempt: u8,
}

/// A format-1 row: a `StoredMigration` without `attempt`.
#[derive(Deserialize)]
struct StoredMigrationV1 {
    from: StoredLevel,
    to: StoredLevel,
    state: StoredMigrationState,
    started_at: Millis,
    finished_at: Option<Millis>,
    keys_copied: u64,
    keys_total: u64,
    error: Option<String>,
}

/// A row that keeps no graph parameters is written in format 2, which the binary before
/// format 3 reads (a downgrade keeps its migration status); one that keeps them in format 3.
pub fn encode_migration(m: &StoredMigration) -> Result<Vec<u8>, StoreError> {
    match m.index_params {
        None => {
            let mut v = encode_postcard(MIGRATION_V2, m)?;
            // `index_params`, the last field: `None`, one byte, not in format 2.
            v.pop();
            Ok(v)
        }
        Some(_) => encode_postcard(MIGRATION_V3, m),
    }
}

pub fn decode_migration(bytes: &[u8]) -> Result<StoredMigration, StoreError> {
    const WHAT: &str = "last migration";
    let m: StoredMigration = if bytes.first() == Some(&MIGRATION_V1) {
        let v1: StoredMigrationV1 = decode_postcard(WHAT, MIGRATION_V1, bytes)?;
        StoredMigration {
            from: v1.from,
            to: v1.to,
            state: v1.state,
            started_at: v1.started_at,
            finished_at: v1.finished_at,
            keys_copied: v1.keys_copied,
            keys_total: v1.keys_total,
            error: v1.error,
            attempt: 0,
            index_params: None,
        }
    } else if bytes.first() == Some(&MIGRATION_V2) {
        let v2: StoredMigrationV2 = decode_postcard(WHAT, MIGRATION_V2, bytes)?;
        StoredMigration {
            from: v2.from,
            to: v2.to,
            state: v2.state,
            started_at: v2.started_at,
            finished_at: v2.finished_at,
            keys_copied: v2.keys_copied,
            keys_total: v2.keys_total,
            error: v2.error,
            attempt: v2.attempt,
            index_params: None,
        }
    } else {
        decode_postcard(WHAT, MIGRATION_V3, bytes)?
    };
    if (m.state == StoredMigrationState::Running) != m.finished_at.is_none() {
        return Err(StoreError::Corrupt(format!(
            "last migration: state {:?} with finished_at {:?}",
            m.state, m.finished_at
        )));
    }
    Ok(m)
}

/// A tenant's operator metadata (`crate::tenant_metadata`): `1 | a JSON object`. JSON because
/// the operator's values are free-form (postcard cannot carry self-describing values).
const TENANT_METADATA_V1: u8 = 1;

pub fn encode_tenant_metadata(
    m: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![TENANT_METADATA_V1];
    serde_json::to_writer(&mut out, m).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(out)
}

/// Decodes what [`encode_tenant_metadata`] wrote. Closed: another format byte, or a body that
/// is not one JSON object, is [`StoreError::Corrupt`], never an empty map.
pub fn decode_tenant_metadata(
    bytes: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("tenant metadata: {e}"));
    // Longer than the engine ever writes: refused before parsing, so that a damaged row
    // cannot make a read parse (and hold) an unbounded value.
    let most = crate::tenant_metadata::MAX_BYTES + 1;
    if bytes.len() > most {
        return Err(corrupt(&format!("{} bytes, more than {most}", bytes.len())));
    }
    match bytes.split_first() {
        Some((&TENANT_METADATA_V1, body)) => serde_json::from_slice(body).map_err(|e| corrupt(&e)),
        Some((f, _)) => Err(corrupt(&format!("unknown format {f}"))),
        None => Err(corrupt(&"empty value")),
    }
}

#[cfg(test)]
mod change_log_tests {
    use super::*;

    fn entry() -> ChangeEntry {
        ChangeEntry {
            op: ChangeOp::Delete,
            collection: CollectionName::parse("text").unwrap(),
            id: RecordId::parse("r1").unwrap(),
        }
    }

    /// Heads and marks whose values the log's arithmetic cannot take are refused, not used.
    #[test]
    fn impossible_heads_and_marks_are_corrupt() {
        for (next, first) in [(5, 10), (1, 0), (u64::MAX, 1)] {
            let bytes = encode_change_head(&ChangeHead { next, first }).unwrap();
            assert!(decode_change_head(&bytes).is_err(), "{next} {first}");
        }
        let fine = encode_change_head(&ChangeHead { next: 7, first: 3 }).unwrap();
        assert!(decode_change_head(&fine).is_ok());
        let mark = encode_change_mark(&ChangeMark {
            version: 1,
            seq: u64::MAX,
        })
        .unwrap();
        assert!(decode_change_mark(&mark).is_err());
    }

    /// Pins the stored formats: a change here is a format change and needs a new format byte.
    #[test]
    fn golden_bytes() {
        let e = encode_change(&entry()).unwrap();
        assert_eq!(e, [1, 1, 4, b't', b'e', b'x', b't', 2, b'r', b'1']);
        assert_eq!(decode_change(&e).unwrap(), entry());
        let upsert = ChangeEntry {
            op: ChangeOp::Upsert,
            ..entry()
        };
        assert_eq!(encode_change(&upsert).unwrap()[..2], [1, 0]);
        let head = ChangeHead {
            next: 300,
            first: 2,
        };
        let h = encode_change_head(&head).unwrap();
        assert_eq!(h, [1, 0xac, 0x02, 2]);
        assert_eq!(decode_change_head(&h).unwrap(), head);
        let mark = ChangeMark {
            version: 5,
            seq: 129,
        };
        let m = encode_change_mark(&mark).unwrap();
        assert_eq!(m, [1, 5, 0x81, 0x01]);
        assert_eq!(decode_change_mark(&m).unwrap(), mark);
    }

    #[test]
    fn anything_else_is_corrupt_never_a_default() {
        let good = encode_change(&entry()).unwrap();
        let mut trailing = good.clone();
        trailing.push(0);
        let mut other_format = good.clone();
        other_format[0] = 2;
        let mut bad_op = good.clone();
        bad_op[1] = 7;
        let mut bad_id = good.clone();
        bad_id[8] = 0;
        for bad in [
            &b""[..],
            &trailing,
            &other_format,
            &bad_op,
            &good[..good.len() - 1],
        ] {
            assert!(
                matches!(decode_change(bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
        assert!(decode_change(&bad_id).is_err(), "a NUL in a record id");
        assert!(decode_change_head(&[1, 5]).is_err());
        assert!(decode_change_head(&[2, 5, 1]).is_err());
        assert!(decode_change_mark(&[]).is_err());
        assert!(decode_change_mark(&[1, 1]).is_err());
        assert!(decode_change_mark(&[1, 1, 2, 0]).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn record_round_trips() {
        let r = Record {
            id: RecordId::parse("0190-abc").unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: Some(Kind::parse("episodic").unwrap()),
            content: Some("hello".into()),
            vector: Some(vec![0.25, -1.5, 3.0]),
            user_tokens: vec![UserToken::parse("u:alice").unwrap()],
            memory_domain: Domain::parse("dialog").unwrap(),
            run_id: Some(RunId::parse("run-1").unwrap()),
            memory_scope: None,
            metadata: json!({"a": [1, {"b": null}]}).as_object().cloned().unwrap(),
            created_at: 1,
            updated_at: 2,
            expires_at: Some(3),
            confidence: Confidence {
                value: 0.7,
                evidence_count: 3,
                corroborations: 2,
                contradictions: 1,
            },
        };
        assert_eq!(decode_record(&encode_record(&r).unwrap()).unwrap(), r);
        assert!(decode_record(&[9, 1, 2]).is_err());
        assert!(decode_record(&[]).is_err());
    }

    /// A removed record: every field but its metadata, whose text's length is kept; its bytes
    /// are still read closed.
    #[test]
    fn a_removed_record_is_the_record_without_parsed_metadata() {
        let mut r = golden::record();
        r.metadata = json!({"topic": "tea", "n": [1, 2.5], "naïve": "✓"})
            .as_object()
            .cloned()
            .unwrap();
        let bytes = encode_record(&r).unwrap();
        let removed = decode_removed_record(&bytes).unwrap();
        assert_eq!(
            removed.metadata_len,
            serde_json::to_string(&r.metadata).unwrap().len()
        );
        assert!(removed.record.metadata.is_empty());
        r.metadata.clear();
        assert_eq!(removed.record, r);
        for len in 0..bytes.len() {
            assert!(decode_removed_record(&bytes[..len]).is_err(), "{len}");
        }
        let mut damaged = bytes.clone();
        let at = bytes.len() / 2;
        damaged[at] ^= 0x01;
        assert!(decode_removed_record(&damaged).is_err());
    }

    #[test]
    fn a_record_decoded_without_its_vector_is_the_record_minus_the_vector() {
        let mut r = golden::record();
        let bytes = encode_record(&r).unwrap();
        r.vector = None;
        assert_eq!(decode_record_without_vector(&bytes).unwrap(), r);
        // The same bytes as the full decode, read closed: every truncation is corrupt, as
        // is a record without its format byte.
        for len in 0..bytes.len() {
            assert!(
                decode_record_without_vector(&bytes[..len]).is_err(),
                "{len}"
            );
        }
        assert!(decode_record_without_vector(&bytes[1..]).is_err());
        let without = encode_record(&r).unwrap();
        assert_eq!(decode_record_without_vector(&without).unwrap(), r);
    }

    #[test]
    fn a_records_scope_is_its_scope_fields_read_closed() {
        let mut r = golden::record();
        r.memory_scope = Some(MemoryScope::parse("s").unwrap());
        r.expires_at = Some(1_800_000_000_000);
        let bytes = encode_record(&r).unwrap();
        let scope = decode_record_scope(&bytes).unwrap();
        assert_eq!(
            scope,
            RecordScope {
                modality: r.modality.clone(),
                user_tokens: r.user_tokens.clone(),
                memory_domain: r.memory_domain.clone(),
                run_id: r.run_id.clone(),
                memory_scope: r.memory_scope.clone(),
                expires_at: r.expires_at,
            }
        );
        for len in 0..bytes.len() {
            assert!(decode_record_scope(&bytes[..len]).is_err(), "{len}");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            assert!(decode_record_scope(&damaged).is_err(), "byte {at}");
        }
        assert!(decode_record_scope(&[&bytes[..], &[0]].concat()).is_err());
        // A record written before checksums reads the same.
        let v1 = golden::unhex(golden::RECORD_V1_GOLDEN);
        assert_eq!(
            decode_record_scope(&v1).unwrap().user_tokens,
            golden::record().user_tokens
        );
    }

    /// A byte changed anywhere in a stored record, content included, is refused by both
    /// decoders: never served as if it had been written so.
    #[test]
    fn a_record_with_any_byte_changed_is_corrupt_in_both_decoders() {
        let bytes = encode_record(&golden::record()).unwrap();
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                assert!(decode_record(&damaged).is_err(), "byte {at} ^ {flip:#x}");
                assert!(
                    decode_record_without_vector(&damaged).is_err(),
                    "byte {at} ^ {flip:#x}"
                );
            }
        }
    }

    #[test]
    fn a_record_with_bytes_after_it_is_corrupt_in_both_decoders() {
        for r in [golden::record(), {
            let mut r = golden::record();
            r.vector = None;
            r
        }] {
            let bytes = encode_record(&r).unwrap();
            for tail in [&[0u8][..], &[1, 2, 3][..]] {
                let longer = [&bytes[..], tail].concat();
                assert!(
                    matches!(decode_record(&longer), Err(StoreError::Corrupt(_))),
                    "{tail:?}"
                );
                assert!(
                    matches!(
                        decode_record_without_vector(&longer),
                        Err(StoreError::Corrupt(_))
                    ),
                    "{tail:?}"
                );
            }
        }
    }
}

/// Golden bytes: the on-disk format of every stored value, pinned. A change that breaks one of
/// these breaks every existing data directory; it needs a new format byte and a decoder for
/// the old one, not a new golden value.
#[cfg(test)]
mod golden {
    use super::*;
    use crate::registry::StoredMeta;
    use serde_json::json;
    use strata_types::{Collection, Metric};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(super) fn record() -> Record {
        Record {
            id: RecordId::parse("r1").unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: Some(Kind::parse("episodic").unwrap()),
            content: Some("hi".into()),
            vector: Some(vec![1.0, -0.5]),
            user_tokens: vec![UserToken::parse("u:a").unwrap()],
            memory_domain: Domain::parse("default").unwrap(),
            run_id: Some(RunId::parse("run").unwrap()),
            memory_scope: None,
            metadata: json!({"k": 1}).as_object().cloned().unwrap(),
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_001,
            expires_at: None,
            confidence: Confidence {
                value: 0.5,
                evidence_count: 1,
                corroborations: 0,
                contradictions: 0,
            },
        }
    }

    /// A record as written before checksums (`RECORD_V1`): still read.
    pub(super) const RECORD_V1_GOLDEN: &str = "0102723104746578740108657069736f6469630102686901020000803f000000bf0103753a610764656661756c74010372756e00077b226b223a317d80a0abfef96282a0abfef96200000000000000e03f010000";
    /// The same record as written today: format byte 2, the same body, its CRC-32 (IEEE, the
    /// one of zlib and crc32fast) in little-endian order.
    const RECORD_GOLDEN: &str = "0202723104746578740108657069736f6469630102686901020000803f000000bf0103753a610764656661756c74010372756e00077b226b223a317d80a0abfef96282a0abfef96200000000000000e03f010000119b0ec7";
    const COLLECTION_GOLDEN: &str = "017b226e616d65223a2274657874222c2264696d223a342c226d6574726963223a22636f73696e65222c22637265617465645f6174223a313730303030303030303030307d";
    const REGISTRY_GOLDEN: &str = "017b226b6579223a372c22637265617465645f6174223a313730303030303030303030302c2270726f66696c65223a7b22737461747573223a2273757370656e646564222c22776569676874223a327d7d";
    const CREDENTIAL_GOLDEN: &str = "0100000000000000077b226b223a317d";
    const LINK_GOLDEN: &str = "010000403f0068e5cf8b010000";
    const COLLECTION_MEMORY_GOLDEN: &str = "017b226e616d65223a2274657874222c2264696d223a342c226d6574726963223a22636f73696e65222c22637265617465645f6174223a313730303030303030303030302c22696e697469616c5f636f6e666964656e6365223a302e382c22726563656e63795f68616c665f6c6966655f73656373223a333630302e307d";

    fn collection_with_memory() -> Collection {
        Collection {
            memory: strata_types::MemoryDefaults {
                initial_confidence: Some(0.8),
                recency_half_life_secs: Some(3600.0),
                link_runs: None,
            },
            ..collection()
        }
    }

    #[test]
    fn links_and_memory_defaults_are_pinned() {
        assert_eq!(hex(&encode_link(0.75, 1_700_000_000_000)), LINK_GOLDEN);
        assert_eq!(
            decode_link(&unhex(LINK_GOLDEN)).unwrap(),
            (0.75, 1_700_000_000_000)
        );
        assert_eq!(
            hex(&encode_json(&collection_with_memory()).unwrap()),
            COLLECTION_MEMORY_GOLDEN
        );
        let c: Collection = decode_json(&unhex(COLLECTION_MEMORY_GOLDEN)).unwrap();
        assert_eq!(c, collection_with_memory());
        let mut bad_weight = unhex(LINK_GOLDEN);
        bad_weight[1..5].copy_from_slice(&2.0f32.to_le_bytes());
        for bytes in [
            &b""[..],
            &[2; 13][..],
            &unhex(LINK_GOLDEN)[..12],
            &bad_weight[..],
        ] {
            assert!(
                matches!(decode_link(bytes), Err(StoreError::Corrupt(_))),
                "{bytes:?}"
            );
        }
    }

    fn collection() -> Collection {
        Collection {
            name: CollectionName::parse("text").unwrap(),
            dim: 4,
            metric: Metric::Cosine,
            created_at: 1_700_000_000_000,
            embedder: None,
            analyzer: Default::default(),
            memory: Default::default(),
        }
    }

    fn meta() -> StoredMeta {
        StoredMeta {
            key: 7,
            created_at: 1_700_000_000_000,
            profile: json!({"status": "suspended", "weight": 2})
                .as_object()
                .cloned()
                .unwrap(),
        }
    }

    pub(super) fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn todays_encodings_are_pinned() {
        assert_eq!(hex(&encode_record(&record()).unwrap()), RECORD_GOLDEN);
        assert_eq!(hex(&encode_json(&collection()).unwrap()), COLLECTION_GOLDEN);
        assert_eq!(hex(&encode_json(&meta()).unwrap()), REGISTRY_GOLDEN);
        assert_eq!(hex(&encode_credential(7, b"{\"k\":1}")), CREDENTIAL_GOLDEN);
    }

    /// Names are written as the bare string, exactly as the `String`s they were before they
    /// held an `Arc<str>`: the golden record with a memory scope, pinned by hand from
    /// [`RECORD_GOLDEN`] (`None` = `00` becomes `Some("s1")` = `01 02 73 31`).
    #[test]
    fn a_record_with_a_memory_scope_is_pinned() {
        let mut r = record();
        r.memory_scope = Some(MemoryScope::parse("s1").unwrap());
        let golden = RECORD_V1_GOLDEN.replace("010372756e00077b", "010372756e01027331077b");
        assert_eq!(decode_record(&unhex(&golden)).unwrap(), r);
        assert_eq!(
            hex(&encode_record(&r).unwrap()),
            "0202723104746578740108657069736f6469630102686901020000803f000000bf0103753a610764656661756c74010372756e01027331077b226b223a317d80a0abfef96282a0abfef96200000000000000e03f0100008e41db0b"
        );
    }

    proptest::proptest! {
        /// Any valid name's stored bytes are its `String`'s, and read back as the same name.
        #[test]
        fn a_names_bytes_are_its_strings(s in "[a-zA-Z0-9_.:-]{1,64}") {
            let as_string = postcard::to_allocvec(&s).unwrap();
            if let Ok(token) = UserToken::parse(&s) {
                proptest::prop_assert_eq!(&postcard::to_allocvec(&token).unwrap(), &as_string);
                let back: UserToken = postcard::from_bytes(&as_string).unwrap();
                proptest::prop_assert_eq!(back, token);
            }
            let scope = MemoryScope::parse(&s);
            proptest::prop_assert_eq!(scope.is_ok(), !s.contains(':'));
            if let Ok(scope) = scope {
                let some = postcard::to_allocvec(&Some(scope.clone())).unwrap();
                proptest::prop_assert_eq!(&some, &postcard::to_allocvec(&Some(&s)).unwrap());
                let back: Option<MemoryScope> = postcard::from_bytes(&some).unwrap();
                proptest::prop_assert_eq!(back, Some(scope));
            } else {
                proptest::prop_assert!(postcard::from_bytes::<MemoryScope>(&as_string).is_err());
            }
        }
    }

    #[test]
    fn pinned_bytes_still_decode() {
        assert_eq!(decode_record(&unhex(RECORD_GOLDEN)).unwrap(), record());
        assert_eq!(decode_record(&unhex(RECORD_V1_GOLDEN)).unwrap(), record());
        let c: Collection = decode_json(&unhex(COLLECTION_GOLDEN)).unwrap();
        assert_eq!(c, collection());
        let m: StoredMeta = decode_json(&unhex(REGISTRY_GOLDEN)).unwrap();
        assert_eq!(
            (m.key, m.created_at, m.profile),
            (7, meta().created_at, meta().profile)
        );
        let bytes = unhex(CREDENTIAL_GOLDEN);
        assert_eq!(
            decode_credential(&bytes).unwrap(),
            Some((7, b"{\"k\":1}".as_slice()))
        );
    }

    #[test]
    fn values_from_before_format_bytes_still_decode() {
        // Registry entries, collections and usage were bare JSON objects.
        let legacy = &unhex(COLLECTION_GOLDEN)[1..];
        assert_eq!(decode_json::<Collection>(legacy).unwrap(), collection());
        // Credential rows were the auth crate's bare JSON, without an owner.
        assert_eq!(decode_credential(b"{\"info\":{}}").unwrap(), None);
    }

    #[test]
    fn adaptive_state_is_pinned_and_decodes_closed() {
        let n = StoredNarrative {
            vector: vec![0.5, -1.0],
            updates: 3,
            updated_at: 1_700_000_000_000,
        };
        let p = StoredPheromone {
            strength: 1.5,
            updated_at: 1_700_000_000_000,
            reinforcements: 2,
            exposures: 1,
        };
        let owners = vec![UserToken::parse("u:alice").unwrap()];
        let (nb, pb) = (
            encode_narrative(&n).unwrap(),
            encode_pheromone(&p, &owners).unwrap(),
        );
        assert_eq!(hex(&nb), NARRATIVE_GOLDEN);
        assert_eq!(hex(&pb), PHEROMONE_V2_GOLDEN);
        assert_eq!(decode_narrative(&unhex(NARRATIVE_GOLDEN)).unwrap(), n);
        // A value of format 1 (no owners) still decodes.
        assert_eq!(
            decode_pheromone(&unhex(PHEROMONE_GOLDEN)).unwrap(),
            PheromoneValue {
                pheromone: p,
                owners: None
            }
        );
        assert_eq!(
            decode_pheromone(&unhex(PHEROMONE_V2_GOLDEN)).unwrap(),
            PheromoneValue {
                pheromone: p,
                owners: Some(owners)
            }
        );
        let mut trailing = pb.clone();
        trailing.push(0);
        let mut other_format = pb.clone();
        other_format[0] = 3;
        // A token that is no valid name does not decode either.
        let mut bad_token = pb.clone();
        let last = bad_token.len() - 1;
        bad_token[last] = b',';
        for bad in [
            &b""[..],
            &trailing,
            &other_format,
            &pb[..pb.len() - 1],
            &bad_token,
        ] {
            assert!(
                matches!(decode_pheromone(bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
        assert!(decode_narrative(&[1]).is_err());
    }

    const MIGRATION_DONE_GOLDEN: &str = "0100020180a0abfef96201d0afabfef962b009cc0800";
    const MIGRATION_FAILED_GOLDEN: &str = "0102010208010a000001096469736b2066756c6c";
    const MIGRATION_CANCELLED_GOLDEN: &str = "0102010408010a0000010e627920616e206f70657261746f72";

    const MIGRATION_V2_INTERRUPTED_GOLDEN: &str = "0202000308010a0001010363757402";
    /// The same row in format 3, with its graph parameters (`m` 32, `ef_search` 100).
    const MIGRATION_V3_INTERRUPTED_GOLDEN: &str = "0302000308010a0001010363757402010120000164";

    /// Format-3 rows keep their bytes; format-2 rows still decode, without parameters (and
    /// format-1 rows, below, as attempt 0).
    #[test]
    fn migration_rows_with_parameters_keep_their_bytes() {
        let row = StoredMigration {
            from: StoredLevel::Dedicated,
            to: StoredLevel::Shared,
            state: StoredMigrationState::Interrupted,
            started_at: 4,
            finished_at: Some(5),
            keys_copied: 0,
            keys_total: 1,
            error: Some("cut".into()),
            attempt: 2,
            index_params: None,
        };
        assert_eq!(hex(&encode_v2(&row)), MIGRATION_V2_INTERRUPTED_GOLDEN);
        assert_eq!(
            decode_migration(&unhex(MIGRATION_V2_INTERRUPTED_GOLDEN)).unwrap(),
            row
        );
        let with_params = StoredMigration {
            index_params: Some(StoredIndexParams {
                m: Some(32),
                ef_construction: None,
                ef_search: Some(100),
            }),
            ..row.clone()
        };
        let bytes = encode_migration(&with_params).unwrap();
        assert_eq!(hex(&bytes), MIGRATION_V3_INTERRUPTED_GOLDEN);
        assert_eq!(decode_migration(&bytes).unwrap(), with_params);
        // Without parameters, a row is written in format 2, as the binary before format 3
        // wrote it (and reads it); format 3 bytes without them still decode.
        let unknown = encode_migration(&row).unwrap();
        assert_eq!(hex(&unknown), MIGRATION_V2_INTERRUPTED_GOLDEN);
        let v3_without = encode_postcard(MIGRATION_V3, &row).unwrap();
        assert_eq!(decode_migration(&v3_without).unwrap(), row);
        let mut other_format = bytes.clone();
        other_format[0] = 4;
        let mut trailing = bytes.clone();
        trailing.push(0);
        let mut v2_trailing = unhex(MIGRATION_V2_INTERRUPTED_GOLDEN);
        v2_trailing.push(0);
        for bad in [
            other_format,
            trailing,
            v2_trailing,
            bytes[..bytes.len() - 1].to_vec(),
        ] {
            assert!(
                matches!(decode_migration(&bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }

    /// Format-2 bytes of `m` (as the binaries before format 3 wrote them); `m` has no
    /// parameters.
    fn encode_v2(m: &StoredMigration) -> Vec<u8> {
        assert!(m.index_params.is_none());
        encode_migration(m).unwrap()
    }

    /// Format-1 bytes of `m` (as the binaries before format 2 wrote them).
    fn encode_v1(m: &StoredMigration) -> Vec<u8> {
        let mut v = encode_v2(m);
        v[0] = MIGRATION_V1;
        v.pop(); // `attempt`, the last field of format 2, one byte below 128.
        v
    }

    #[test]
    fn last_migration_rows_keep_their_bytes_and_decode_closed() {
        let done = StoredMigration {
            from: StoredLevel::Shared,
            to: StoredLevel::Dedicated,
            state: StoredMigrationState::Done,
            started_at: 1_700_000_000_000,
            finished_at: Some(1_700_000_001_000),
            keys_copied: 1_200,
            keys_total: 1_100,
            error: None,
            attempt: 0,
            index_params: None,
        };
        let bytes = encode_v1(&done);
        assert_eq!(hex(&bytes), MIGRATION_DONE_GOLDEN);
        assert_eq!(
            decode_migration(&unhex(MIGRATION_DONE_GOLDEN)).unwrap(),
            done
        );
        let failed = StoredMigration {
            from: StoredLevel::Dedicated,
            to: StoredLevel::Partition,
            state: StoredMigrationState::Failed,
            finished_at: Some(5),
            started_at: 4,
            keys_copied: 0,
            keys_total: 0,
            error: Some("disk full".into()),
            attempt: 0,
            index_params: None,
        };
        assert_eq!(hex(&encode_v1(&failed)), MIGRATION_FAILED_GOLDEN);
        assert_eq!(
            decode_migration(&unhex(MIGRATION_FAILED_GOLDEN)).unwrap(),
            failed
        );
        let cancelled = StoredMigration {
            state: StoredMigrationState::Cancelled,
            error: Some("by an operator".into()),
            ..failed.clone()
        };
        assert_eq!(hex(&encode_v1(&cancelled)), MIGRATION_CANCELLED_GOLDEN);
        assert_eq!(
            decode_migration(&unhex(MIGRATION_CANCELLED_GOLDEN)).unwrap(),
            cancelled
        );
        // Running rows have no end; ended ones have one.
        let running_with_end = StoredMigration {
            state: StoredMigrationState::Running,
            ..done.clone()
        };
        let ended_without = StoredMigration {
            finished_at: None,
            ..failed.clone()
        };
        let mut trailing = bytes.clone();
        trailing.push(0);
        let mut other_format = bytes.clone();
        other_format[0] = 4;
        let mut unknown_level = bytes.clone();
        unknown_level[1] = 3;
        let mut unknown_state = bytes.clone();
        unknown_state[3] = 5;
        for bad in [
            Vec::new(),
            trailing,
            other_format,
            unknown_level,
            unknown_state,
            bytes[..bytes.len() - 1].to_vec(),
            encode_migration(&running_with_end).unwrap(),
            encode_migration(&ended_without).unwrap(),
        ] {
            assert!(
                matches!(decode_migration(&bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }

    const NARRATIVE_GOLDEN: &str = "01020000003f000080bf0380a0abfef962";
    const PHEROMONE_GOLDEN: &str = "01000000000000f83f80a0abfef9620201";
    const PHEROMONE_V2_GOLDEN: &str = "02000000000000f83f80a0abfef96202010107753a616c696365";

    #[test]
    fn anything_else_is_corrupt_never_a_default() {
        let cases: [&[u8]; 5] = [b"", &[9, b'{', b'}'], &[1, b'x'], b"[]", &[0]];
        for bytes in cases {
            assert!(
                matches!(
                    decode_json::<Collection>(bytes),
                    Err(StoreError::Corrupt(_))
                ),
                "{bytes:?}"
            );
        }
        // Right format byte, wrong shape: a field missing.
        assert!(decode_json::<Collection>(&[&[1u8][..], br#"{"name":"text"}"#].concat()).is_err());
        for bytes in [&b""[..], &[1, 0, 0][..], &[2, 0, 0, 0, 0, 0, 0, 0, 0][..]] {
            assert!(decode_credential(bytes).is_err(), "{bytes:?}");
        }
    }
}

#[cfg(test)]
mod tenant_metadata_tests {
    use super::*;
    use serde_json::json;

    /// `{"team":"search","tier":2}` in format 1.
    const TENANT_METADATA_GOLDEN: &[u8] = b"\x01{\"team\":\"search\",\"tier\":2}";

    #[test]
    fn tenant_metadata_keeps_its_bytes_and_decodes_closed() {
        let m = json!({"team": "search", "tier": 2})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(encode_tenant_metadata(&m).unwrap(), TENANT_METADATA_GOLDEN);
        assert_eq!(decode_tenant_metadata(TENANT_METADATA_GOLDEN).unwrap(), m);
        let mut trailing = TENANT_METADATA_GOLDEN.to_vec();
        trailing.push(b'x');
        let bad: [&[u8]; 6] = [
            b"",
            b"\x02{}",
            // Plain JSON without the format byte: not a legacy form of this row.
            b"{}",
            b"\x01[1]",
            b"\x01{\"team\":",
            &trailing,
        ];
        for bytes in bad {
            assert!(
                matches!(decode_tenant_metadata(bytes), Err(StoreError::Corrupt(_))),
                "{bytes:?}"
            );
        }
    }

    /// Exactly the byte bound (plus the format byte) decodes; one byte more is refused
    /// before parsing.
    #[test]
    fn a_tenant_metadata_row_past_the_byte_bound_is_refused() {
        let max = crate::tenant_metadata::MAX_BYTES;
        // `{"blob":""}` is 11 bytes.
        let fits = json!({"blob": "x".repeat(max - 11)});
        let bytes = encode_tenant_metadata(fits.as_object().unwrap()).unwrap();
        assert_eq!(bytes.len(), max + 1);
        assert!(decode_tenant_metadata(&bytes).is_ok());
        let over = json!({"blob": "x".repeat(max - 10)});
        let bytes = encode_tenant_metadata(over.as_object().unwrap()).unwrap();
        let e = decode_tenant_metadata(&bytes).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
    }
}
