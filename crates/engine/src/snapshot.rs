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

const VERSION_BLOB: &str = "version";
const FORMAT: u8 = 1;

fn blob_name(collection: &CollectionName) -> String {
    format!("index:{collection}")
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
    /// `HnswIndex::to_bytes`, when the collection has a graph.
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

/// The collection's snapshot if there is one of the current format; corrupt or foreign
/// snapshots count as absent.
pub(crate) fn load(
    r: &impl Reads,
    key: TenantKey,
    collection: &CollectionName,
) -> Result<Option<Snapshot>, StoreError> {
    let Some(bytes) = r.blob(key, &blob_name(collection))? else {
        return Ok(None);
    };
    Ok(postcard::from_bytes::<Snapshot>(&bytes)
        .ok()
        .filter(|s| s.format == FORMAT))
}

pub(crate) fn delete(
    w: &mut Writer<'_>,
    key: TenantKey,
    collection: &CollectionName,
) -> Result<(), StoreError> {
    w.delete_blob(key, &blob_name(collection))
}
