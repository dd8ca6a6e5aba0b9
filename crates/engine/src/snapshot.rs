//! Index snapshots, so that a restart restores HNSW graphs instead of rebuilding them.
//!
//! Every write transaction of a tenant bumps the tenant's data version (stored with its data).
//! A snapshot of a collection's indexes records the version it reflects, the record id in each
//! slot and where the graph is: a derived file beside the tenant's storage
//! (`crate::graph_file`), named here with its length and checksum. On load, a snapshot whose
//! version equals the stored version is current: records are placed back in their slots and
//! the graph is read from its file. Any other snapshot, or a file that is missing or does not
//! check out, is ignored and the graph is rebuilt; the records are always the truth.

use serde::{Deserialize, Serialize};
use strata_store::{Reads, StoreError, TenantKey, Writer};
use strata_types::CollectionName;

use crate::EngineError;
use crate::graph_file::GraphFile;

pub(crate) const VERSION_BLOB: &str = "version";
/// 2: the graph in a derived file, named by the snapshot. 1 held the graph's bytes inline;
/// still read (a load from one saves format 2 at the next save), never written.
const FORMAT: u8 = 2;
const FORMAT_INLINE: u8 = 1;

/// Blob names of index snapshots start with this, then the collection's name.
pub(crate) const BLOB_PREFIX: &str = "index:";

pub(crate) fn blob_name(collection: &CollectionName) -> String {
    format!("{BLOB_PREFIX}{collection}")
}

/// The tenant's data version: how many write transactions it has committed.
pub(crate) fn data_version(r: &impl Reads, key: TenantKey) -> Result<u64, StoreError> {
    // Closed: a damaged version must not read as 0, or counting would start again and an old
    // image could match a later version.
    match r.blob(key, VERSION_BLOB)? {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt(format!("data version of {} bytes", b.len()))),
    }
}

/// Called inside every write transaction of the tenant.
pub(crate) fn bump_version(w: &mut Writer<'_>, key: TenantKey) -> Result<(), StoreError> {
    let next = data_version(w, key)? + 1;
    w.put_blob(key, VERSION_BLOB, &next.to_be_bytes())
}

/// Where a snapshot's graph is.
#[derive(Debug, PartialEq)]
pub(crate) enum SavedGraph {
    /// `HnswIndex::to_bytes`, inside a format-1 snapshot.
    Inline(Vec<u8>),
    /// A derived file.
    File(GraphFile),
}

/// A decoded snapshot.
pub(crate) struct Snapshot {
    pub version: u64,
    pub dim: u32,
    /// The record id in each slot; `None` for a free slot.
    pub slots: Vec<Option<String>>,
    /// The graph, when the collection has one.
    pub graph: Option<SavedGraph>,
}

impl Snapshot {
    pub fn new(
        version: u64,
        dim: u32,
        slots: Vec<Option<String>>,
        graph: Option<GraphFile>,
    ) -> Self {
        Snapshot {
            version,
            dim,
            slots,
            graph: graph.map(SavedGraph::File),
        }
    }
}

/// The stored form (format 2).
#[derive(Serialize, Deserialize)]
struct Stored {
    format: u8,
    version: u64,
    dim: u32,
    slots: Vec<Option<String>>,
    graph: Option<GraphFile>,
}

/// The stored form of format 1: the graph's bytes inline (decoded as one byte run).
#[derive(Deserialize)]
struct StoredInline {
    #[allow(dead_code)]
    format: u8,
    version: u64,
    dim: u32,
    slots: Vec<Option<String>>,
    #[serde(deserialize_with = "crate::search_image::bytes::option::deserialize")]
    graph: Option<Vec<u8>>,
}

fn encode(s: &Snapshot) -> Result<Vec<u8>, EngineError> {
    let graph = match &s.graph {
        None => None,
        Some(SavedGraph::File(f)) => Some(f.clone()),
        Some(SavedGraph::Inline(_)) => {
            return Err(EngineError::Index(
                "snapshot encode: inline graphs are no longer written".into(),
            ));
        }
    };
    let stored = Stored {
        format: FORMAT,
        version: s.version,
        dim: s.dim,
        slots: s.slots.clone(),
        graph,
    };
    postcard::to_stdvec(&stored).map_err(|e| EngineError::Index(format!("snapshot encode: {e}")))
}

pub(crate) fn save(
    w: &mut Writer<'_>,
    key: TenantKey,
    collection: &CollectionName,
    s: &Snapshot,
) -> Result<(), EngineError> {
    Ok(w.put_blob(key, &blob_name(collection), &encode(s)?)?)
}

/// `T` from exactly `bytes`, or an error.
fn exactly<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, EngineError> {
    let corrupt = |why: String| EngineError::Index(format!("index snapshot: {why}"));
    let (s, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(s)
}

/// Decodes a stored snapshot, closed: the format byte must be one this build reads and the
/// bytes must be exactly one snapshot; anything else is an error, never a default.
pub(crate) fn decode(bytes: &[u8]) -> Result<Snapshot, EngineError> {
    let corrupt = |why: String| EngineError::Index(format!("index snapshot: {why}"));
    match bytes.first() {
        Some(&FORMAT) => {
            let s: Stored = exactly(bytes)?;
            Ok(Snapshot::new(s.version, s.dim, s.slots, s.graph))
        }
        Some(&FORMAT_INLINE) => {
            let s: StoredInline = exactly(bytes)?;
            Ok(Snapshot {
                version: s.version,
                dim: s.dim,
                slots: s.slots,
                graph: s.graph.map(SavedGraph::Inline),
            })
        }
        Some(other) => Err(corrupt(format!("unknown format byte {other}"))),
        None => Err(corrupt("empty".into())),
    }
}

/// The stored form with the slot list walked over, not kept: what [`named_file`] decodes.
#[derive(Deserialize)]
struct StoredFile {
    #[allow(dead_code)]
    format: u8,
    #[allow(dead_code)]
    version: u64,
    #[allow(dead_code)]
    dim: u32,
    #[allow(dead_code)]
    slots: SkippedSlots,
    graph: Option<GraphFile>,
}

/// A snapshot's slot list, each id borrowed from the bytes and dropped: no string is
/// allocated, so reading which file a snapshot names costs a walk over its bytes, not a
/// copy of a large tenant's ids.
struct SkippedSlots;

impl<'de> Deserialize<'de> for SkippedSlots {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Walk;
        impl<'de> serde::de::Visitor<'de> for Walk {
            type Value = SkippedSlots;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of slots")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SkippedSlots, A::Error> {
                while seq.next_element::<Option<&'de str>>()?.is_some() {}
                Ok(SkippedSlots)
            }
        }
        d.deserialize_seq(Walk)
    }
}

/// The derived file a stored snapshot names, if any, decoded closed as [`decode`] decodes
/// the whole snapshot (the same errors for the same bytes) without keeping its slot list: for
/// finding which files are named (`index_save::committed_files`). A format-1 snapshot holds
/// its graph inline and names none (decoded whole: old, and rare).
pub(crate) fn named_file(bytes: &[u8]) -> Result<Option<GraphFile>, EngineError> {
    match bytes.first() {
        Some(&FORMAT) => Ok(exactly::<StoredFile>(bytes)?.graph),
        // A format-1 snapshot (its graph inline, no file) or no snapshot at all: the whole
        // decode, for its verdict.
        _ => decode(bytes).map(|_| None),
    }
}

/// The collection's stored snapshot, if there is one: `Some(Err(_))` when it does not decode.
/// Snapshots are derived state, so the caller rebuilds from the records rather than trusting
/// one that does not decode or does not match storage.
pub(crate) fn load(
    r: &impl Reads,
    key: TenantKey,
    collection: &CollectionName,
) -> Result<Option<Result<Snapshot, EngineError>>, StoreError> {
    Ok(r.blob(key, &blob_name(collection))?
        .map(|bytes| decode(&bytes)))
}

pub(crate) fn delete(
    w: &mut Writer<'_>,
    key: TenantKey,
    collection: &CollectionName,
) -> Result<(), StoreError> {
    w.delete_blob(key, &blob_name(collection))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file a snapshot names is read without its slot list, with the same answer and the
    /// same refusals as the whole decode.
    #[test]
    fn the_named_file_is_read_as_the_whole_snapshot_reads_it() {
        let file = GraphFile {
            name: "766563-7-00000000000000aa.hnsw".into(),
            len: 4096,
            checksum: 42,
        };
        let slots = vec![Some("a".to_owned()), None, Some("b".repeat(64))];
        for graph in [None, Some(file)] {
            let bytes = encode(&Snapshot::new(7, 3, slots.clone(), graph.clone())).unwrap();
            assert_eq!(named_file(&bytes).unwrap(), graph);
            for cut in 0..bytes.len() {
                assert!(named_file(&bytes[..cut]).is_err(), "cut at {cut}");
                assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(named_file(&longer).is_err() && decode(&longer).is_err());
        }
        assert!(named_file(&[9, 1, 2]).is_err());
    }

    proptest::proptest! {
        /// For any damage to a stored snapshot (a byte changed, cut short or grown), reading
        /// only the file it names refuses exactly what the whole decode refuses, and names
        /// the same file; neither panics.
        #[test]
        fn the_named_file_agrees_with_the_whole_decode_on_damaged_bytes(
            at in 0usize..256,
            byte in proptest::prelude::any::<u8>(),
            how in 0u8..3,
        ) {
            let mut bytes = encode(&sample()).unwrap();
            let at = at % bytes.len();
            match how {
                0 => bytes[at] = byte,
                1 => bytes.truncate(at),
                _ => bytes.insert(at, byte),
            }
            match (named_file(&bytes), decode(&bytes)) {
                (Ok(named), Ok(whole)) => {
                    let file = match whole.graph {
                        Some(SavedGraph::File(f)) => Some(f),
                        _ => None,
                    };
                    proptest::prop_assert_eq!(named, file);
                }
                (Err(_), Err(_)) => {}
                (named, whole) => proptest::prop_assert!(
                    false,
                    "named {:?} but whole {:?}",
                    named,
                    whole.map(|s| s.graph)
                ),
            }
        }
    }

    /// A stored data version of the wrong length is an error, never version 0.
    #[test]
    fn a_damaged_data_version_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = strata_store::Store::open(&dir.path().join("db.redb")).unwrap();
        let id = strata_types::TenantId::parse("t").unwrap();
        let key = store
            .write(|w| w.create_tenant(&id, 0, Default::default()).map(|m| m.key))
            .unwrap();
        assert_eq!(data_version(&store.read().unwrap(), key).unwrap(), 0);
        store
            .write(|w| w.put_blob(key, VERSION_BLOB, &7u64.to_be_bytes()))
            .unwrap();
        assert_eq!(data_version(&store.read().unwrap(), key).unwrap(), 7);
        store
            .write(|w| w.put_blob(key, VERSION_BLOB, &[0, 7]))
            .unwrap();
        assert!(data_version(&store.read().unwrap(), key).is_err());
    }

    fn sample() -> Snapshot {
        let file = GraphFile {
            name: "g".into(),
            len: 3,
            checksum: 4,
        };
        Snapshot::new(7, 3, vec![Some("a".into()), None], Some(file))
    }

    /// Pins the stored format: a change here is a format change and needs a new format byte.
    #[test]
    fn golden_bytes() {
        let bytes = encode(&sample()).unwrap();
        // format 2, version 7, dim 3, 2 slots: "a", none; a graph file "g", 3 bytes, checksum 4.
        assert_eq!(bytes, [2, 7, 3, 2, 1, 1, b'a', 0, 1, 1, b'g', 3, 4]);
        let back = decode(&bytes).unwrap();
        assert_eq!(
            (back.version, back.dim, back.slots, back.graph),
            (7, 3, vec![Some("a".to_string()), None], sample().graph)
        );
    }

    /// Format 1 (the graph inline) is still read.
    #[test]
    fn inline_format_is_read() {
        let back = decode(&[1, 7, 3, 2, 1, 1, b'a', 0, 1, 2, 1, 2]).unwrap();
        assert_eq!(back.graph, Some(SavedGraph::Inline(vec![1, 2])));
        assert_eq!(back.slots, vec![Some("a".to_string()), None]);
    }

    #[test]
    fn anything_else_is_an_error() {
        let good = encode(&sample()).unwrap();
        let mut other_format = good.clone();
        other_format[0] = 3;
        let mut trailing = good.clone();
        trailing.push(0);
        for bad in [
            &[][..],
            &other_format,
            &trailing,
            &good[..good.len() - 1],
            b"garbage",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
