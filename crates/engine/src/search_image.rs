//! The persisted search image of a collection: everything a search needs besides the graph,
//! so that loading an evicted or idle tenant decodes a few bulk structures instead of reading
//! every record and analysing its text and fields again (see `docs/residency.md`).
//!
//! An image holds, for one collection: the record in each slot without its vector (in the
//! store's own record encoding, `strata_store::codec`), the engine's vectors as one contiguous
//! run of little-endian `f32` (`dim` per slot) unless the collection's graph holds them (then
//! they are restored with the graph from its snapshot), which slots hold a vector (a roaring bitmap in
//! its portable serialisation), the BM25 index (postings, lengths, statistics) and the field
//! index. Scope bitmaps are recomputed from the records at load: a few hash inserts each.
//!
//! Like the graph snapshot (`crate::snapshot`) it is stamped with the tenant's data version
//! and written in the same transaction, and it is used only when that version is still the
//! stored one, its counts agree with the tenant's usage counters and it decodes closed;
//! anything else (a crash after a write, a write while the tenant was evicted, damaged bytes)
//! makes the load rebuild from the records. An image never overrides storage.

use serde::{Deserialize, Serialize};
use strata_index::{Bm25Index, FieldIndex, RoaringBitmap};
use strata_store::{Reads, StoreError, TenantKey, Writer};
use strata_types::{Collection, CollectionName, Record};

use crate::EngineError;
use crate::collection_index::CollectionIndex;

/// 2: the BM25 and field indexes by term and path id, with one id list per slot
/// (`strata_index`'s `bm25_stored` and `field_stored`). An image of format 1 is rebuilt from
/// the records.
const FORMAT: u8 = 2;

/// Blob names of search images start with this, then the collection's name.
pub(crate) const BLOB_PREFIX: &str = "image:";

fn blob_name(collection: &CollectionName) -> String {
    format!("{BLOB_PREFIX}{collection}")
}

/// The stored form. Byte runs go through [`bytes`] so that postcard writes them as one
/// length-prefixed run (a plain `Vec<u8>` would be decoded byte by byte).
#[derive(Serialize, Deserialize)]
struct Image {
    format: u8,
    version: u64,
    dim: u32,
    /// Each slot's record length in `docs`; 0 for a free slot (a stored record is never
    /// empty: it starts with its format byte).
    doc_lens: Vec<u32>,
    /// The slots' records, without vectors, one after the other.
    #[serde(with = "bytes")]
    docs: Vec<u8>,
    /// The graph holds the vectors (its snapshot, saved in the same transaction, carries
    /// them), so `vectors` is empty: the image is usable only with that graph.
    vectors_in_graph: bool,
    /// Otherwise `dim` little-endian `f32` per slot (zeros where there is no vector).
    #[serde(with = "bytes")]
    vectors: Vec<u8>,
    /// Slots holding a vector, in roaring's portable serialisation.
    #[serde(with = "bytes")]
    with_vector: Vec<u8>,
    fields: FieldIndex,
    bm25: Bm25Index,
}

/// What a decoded image tells the load besides the collection itself.
pub(crate) struct Loaded {
    pub version: u64,
    pub records: u64,
    pub vectors: u64,
}

/// Encodes `ci` as an image at `version`.
pub(crate) fn encode(ci: &CollectionIndex, version: u64) -> Result<Vec<u8>, EngineError> {
    let mut doc_lens = Vec::with_capacity(ci.docs.len());
    let mut docs = Vec::new();
    for doc in &ci.docs {
        match doc {
            Some(d) => {
                let bytes = strata_store::codec::encode_record(d)?;
                doc_lens.push(u32::try_from(bytes.len()).map_err(|_| {
                    EngineError::Index(format!("search image: record {} too large", d.id))
                })?);
                docs.extend_from_slice(&bytes);
            }
            None => doc_lens.push(0),
        }
    }
    let raw = ci.raw_vectors();
    let vectors: Vec<u8> = raw
        .unwrap_or_default()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut with_vector = Vec::with_capacity(ci.with_vector.serialized_size());
    ci.with_vector
        .serialize_into(&mut with_vector)
        .map_err(|e| EngineError::Index(format!("search image: {e}")))?;
    let image = Image {
        format: FORMAT,
        version,
        dim: ci.dim as u32,
        doc_lens,
        docs,
        vectors_in_graph: raw.is_none(),
        vectors,
        with_vector,
        fields: ci.fields.clone(),
        bm25: ci.bm25.clone(),
    };
    postcard::to_stdvec(&image).map_err(|e| EngineError::Index(format!("search image: {e}")))
}

fn corrupt(why: impl std::fmt::Display) -> EngineError {
    EngineError::Index(format!("search image: {why}"))
}

/// Decodes an image, closed: the format byte must be this build's and the bytes exactly one
/// image; anything else is an error, never a default.
fn decode_image(bytes: &[u8]) -> Result<Image, EngineError> {
    match bytes.first() {
        Some(&FORMAT) => {}
        Some(other) => return Err(corrupt(format!("unknown format byte {other}"))),
        None => return Err(corrupt("empty")),
    }
    let (image, rest) = postcard::take_from_bytes::<Image>(bytes).map_err(corrupt)?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(image)
}

/// Whether `bytes` decode as an image (for the operator's tenant check).
pub(crate) fn check(bytes: &[u8]) -> Result<(), EngineError> {
    decode_image(bytes).map(|_| ())
}

/// Rebuilds collection `c` from its image, if the image decodes and is whole; the caller
/// still compares [`Loaded::version`] with the stored version.
pub(crate) fn decode(
    bytes: &[u8],
    c: &Collection,
    params: strata_index::HnswParams,
) -> Result<(CollectionIndex, Loaded), EngineError> {
    let image = decode_image(bytes)?;
    if image.dim != c.dim {
        return Err(corrupt(format!("dimension {} not {}", image.dim, c.dim)));
    }
    let mut docs: Vec<Option<Record>> = Vec::with_capacity(image.doc_lens.len());
    let mut at = 0usize;
    for len in &image.doc_lens {
        if *len == 0 {
            docs.push(None);
            continue;
        }
        let end = at
            .checked_add(*len as usize)
            .filter(|end| *end <= image.docs.len())
            .ok_or_else(|| corrupt("record lengths overrun the records"))?;
        docs.push(Some(strata_store::codec::decode_record(
            &image.docs[at..end],
        )?));
        at = end;
    }
    if at != image.docs.len() {
        return Err(corrupt("bytes after the last record"));
    }
    let expected = if image.vectors_in_graph {
        0
    } else {
        docs.len() * c.dim as usize * 4
    };
    if image.vectors.len() != expected {
        return Err(corrupt("vector bytes do not match the slots"));
    }
    let vectors = (!image.vectors_in_graph).then(|| {
        image
            .vectors
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    });
    let with_vector = RoaringBitmap::deserialize_from(image.with_vector.as_slice())
        .map_err(|e| corrupt(format!("with_vector: {e}")))?;
    let records = docs.iter().flatten().count() as u64;
    let mut ci = CollectionIndex::from_image(c, params, docs, vectors, image.fields, image.bm25)?;
    ci.set_with_vector(with_vector)?;
    let loaded = Loaded {
        version: image.version,
        records,
        vectors: ci.with_vector.len(),
    };
    Ok((ci, loaded))
}

pub(crate) fn save(
    w: &mut Writer<'_>,
    key: TenantKey,
    collection: &CollectionName,
    bytes: &[u8],
) -> Result<(), StoreError> {
    w.put_blob(key, &blob_name(collection), bytes)
}

pub(crate) fn load(
    r: &impl Reads,
    key: TenantKey,
    collection: &CollectionName,
) -> Result<Option<Vec<u8>>, StoreError> {
    r.blob(key, &blob_name(collection))
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
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }

    /// The same for an `Option<Vec<u8>>`.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        #[derive(Deserialize)]
        struct Run(#[serde(with = "super")] Vec<u8>);

        /// Borrows the bytes: a graph can be hundreds of megabytes.
        struct RunRef<'a>(&'a [u8]);

        impl Serialize for RunRef<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }

        pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            v.as_deref().map(RunRef).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            Ok(Option::<Run>::deserialize(d)?.map(|r| r.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_types::{Metric, RecordId};

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
        // One field path, to keep the golden bytes short (their order is by id, not by hash).
        ci.fields = FieldIndex::new();
        ci.fields.insert(0, "b:kind", &serde_json::json!("note"));
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
    }

    /// Format 2: `02`, version 7, dim 2, one record of 0x29 bytes (the store's record encoding),
    /// vectors not in a graph (`00`), 8 vector bytes (0.5, -1.0), the portable bitmap {0}; the
    /// field index (path names by id `b:kind`, each path's values: the string `note` in {0},
    /// then each slot's (path id, value) list); the BM25 index (analyzer, terms by id `hi`,
    /// each posting's slots {0} and repeated frequencies (none), the documents {0}, lengths
    /// [1], each slot's term ids [[0]], total length 1).
    const GOLDEN: &str = "02070201292901016103766563000102686900000764656661756c740000027b7d020200000000000000e03f01000000080000003f000080bf123a30000001000000000000001000000000000106623a6b696e640101046e6f7465123a3000000100000000000000100000000000083a30000000000000083a300000000000000001010000046e6f7465000102686901123a300000010000000000000010000000000000123a3000000100000000000000100000000000010101010001";

    #[test]
    fn anything_else_is_an_error() {
        let good = encode(&sample(), 7).unwrap();
        let mut other_format = good.clone();
        // Format 1 (the postings and field index as hash maps) is no longer read: rebuilt.
        other_format[0] = 1;
        let mut trailing = good.clone();
        trailing.push(0);
        for bad in [
            &[][..],
            &other_format,
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
}
