//! Index snapshots, so that a restart restores HNSW graphs instead of rebuilding them.
//!
//! Every write transaction of a tenant bumps the tenant's data version (stored with its data).
//! A snapshot of a collection's indexes records the version it reflects, the record id in each
//! slot and the graph's bytes. On load, a snapshot whose version equals the stored version is
//! current: records are placed back in their slots and the graph is restored from its bytes.
//! Any other snapshot is ignored and the graph is rebuilt; the records are always the truth.

use serde::{Deserialize, Serialize};
use strata_store::{Reads, StoreError, TenantKey, Writer};
use strata_types::CollectionName;

use crate::EngineError;

pub(crate) const VERSION_BLOB: &str = "version";
const FORMAT: u8 = 1;

/// Blob names of index snapshots start with this, then the collection's name.
pub(crate) const BLOB_PREFIX: &str = "index:";

fn blob_name(collection: &CollectionName) -> String {
    format!("{BLOB_PREFIX}{collection}")
}

/// The tenant's data version: how many write transactions it has committed.
pub(crate) fn data_version(r: &impl Reads, key: TenantKey) -> Result<u64, StoreError> {
    Ok(r.blob(key, VERSION_BLOB)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Called inside every write transaction of the tenant.
pub(crate) fn bump_version(w: &mut Writer<'_>, key: TenantKey) -> Result<(), StoreError> {
    let next = data_version(w, key)? + 1;
    w.put_blob(key, VERSION_BLOB, &next.to_be_bytes())
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Snapshot {
    format: u8,
    pub version: u64,
    pub dim: u32,
    /// The record id in each slot; `None` for a free slot.
    pub slots: Vec<Option<String>>,
    /// `HnswIndex::to_bytes`, when the collection has a graph (decoded as one byte run, not
    /// byte by byte: the same bytes on disk).
    #[serde(with = "crate::search_image::bytes::option")]
    pub graph: Option<Vec<u8>>,
}

impl Snapshot {
    pub fn new(version: u64, dim: u32, slots: Vec<Option<String>>, graph: Option<Vec<u8>>) -> Self {
        Snapshot {
            format: FORMAT,
            version,
            dim,
            slots,
            graph,
        }
    }
}

pub(crate) fn save(
    w: &mut Writer<'_>,
    key: TenantKey,
    collection: &CollectionName,
    s: &Snapshot,
) -> Result<(), EngineError> {
    let bytes =
        postcard::to_stdvec(s).map_err(|e| EngineError::Index(format!("snapshot encode: {e}")))?;
    Ok(w.put_blob(key, &blob_name(collection), &bytes)?)
}

/// Decodes a stored snapshot, closed: the format byte must be this build's and the bytes
/// must be exactly one snapshot; anything else is an error, never a default.
pub(crate) fn decode(bytes: &[u8]) -> Result<Snapshot, EngineError> {
    let corrupt = |why: String| EngineError::Index(format!("index snapshot: {why}"));
    match bytes.first() {
        Some(&FORMAT) => {}
        Some(other) => return Err(corrupt(format!("unknown format byte {other}"))),
        None => return Err(corrupt("empty".into())),
    }
    let (s, rest) =
        postcard::take_from_bytes::<Snapshot>(bytes).map_err(|e| corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(s)
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

    fn sample() -> Snapshot {
        Snapshot::new(7, 3, vec![Some("a".into()), None], Some(vec![1, 2]))
    }

    /// Pins the stored format: a change here is a format change and needs a new format byte.
    #[test]
    fn golden_bytes() {
        let bytes = postcard::to_stdvec(&sample()).unwrap();
        assert_eq!(bytes, [1, 7, 3, 2, 1, 1, b'a', 0, 1, 2, 1, 2]);
        let back = decode(&bytes).unwrap();
        assert_eq!(
            (back.version, back.dim, back.slots, back.graph),
            (7, 3, vec![Some("a".to_string()), None], Some(vec![1, 2]))
        );
    }

    #[test]
    fn anything_else_is_an_error() {
        let good = postcard::to_stdvec(&sample()).unwrap();
        let mut other_format = good.clone();
        other_format[0] = 2;
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
