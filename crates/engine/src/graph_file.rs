//! HNSW graphs saved as derived files beside the tenant's storage (see `strata_store`'s
//! `derived` module), so that loading a large tenant maps its graph file: the checksum and
//! the decoding read the OS page cache's pages in place and the graph's level-0 rows (most of
//! its bytes) stay in them, privately (`strata_index::GraphMap`); no redb blob, no copy. Where
//! a file cannot be mapped it is read, once, straight into the graph's own buffers.
//!
//! A mapped file must never change while mapped: each file is written once under a new name
//! (a temporary file, made read-only, renamed into place) and afterwards only deleted. A
//! deleted file's blocks stay allocated as long as a loaded graph maps it (until the tenant is
//! evicted, its graph rebuilt, or the server stopped), so a tenant that stays loaded and is
//! saved again holds its old graph's disk space beside the new one's.
//!
//! The graph snapshot (`crate::snapshot`) names the current file with its length and a
//! checksum of its bytes; the file is written and synced before the transaction that names it
//! commits, and files no snapshot or search-image row names (a large image is a file of its
//! own, `crate::search_image`) are deleted after it, always under the tenant's save order;
//! those a crash left between the commit and the deletion go at the tenant's next load. A file that is missing, of
//! another length, fails its checksum or does not decode closed is an error here, and the
//! caller rebuilds from the records: never an error to the user, never a wrong answer.

use std::io::{BufReader, Read};

use serde::{Deserialize, Serialize};
use strata_index::{GraphMap, HnswIndex, HnswParams, Metric};
use strata_store::{Store, TenantKey};
use strata_types::CollectionName;

use crate::EngineError;

/// Where a collection's graph is: the file's name in the tenant's derived directory, its
/// length and the [`Checksum`] of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GraphFile {
    pub name: String,
    pub len: u64,
    pub checksum: u64,
}

/// Suffix of graph files.
const SUFFIX: &str = ".hnsw";
/// Suffix of search image files (`crate::search_image`: a large collection's image is kept
/// in a derived file named the same way, and checked by the same [`GraphFile`] record).
const IMAGE_SUFFIX: &str = ".image";

fn corrupt(why: impl std::fmt::Display) -> EngineError {
    EngineError::Index(format!("graph file: {why}"))
}

/// The file name prefix of `collection`'s graphs: the name in hex, so any collection name
/// makes a plain file name.
fn prefix(collection: &CollectionName) -> String {
    let hex: String = collection
        .as_str()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{hex}-")
}

/// A new file name for `collection`'s graph (or image, by `suffix`) at data version
/// `version`: unique (64 bits of a fresh UUIDv7, almost all of them random; not the clock
/// alone, which two saves at one data version could read alike, or before 1970 as 0), so
/// a save never overwrites the file a committed row names.
fn file_name(collection: &CollectionName, version: u64, suffix: &str) -> String {
    let (_, nonce) = uuid::Uuid::now_v7().as_u64_pair();
    format!("{}{version}-{nonce:016x}{suffix}", prefix(collection))
}

/// What a derived file of a collection holds.
#[derive(Clone, Copy)]
pub(crate) enum Holds {
    /// Its graph (`HnswIndex::to_bytes`).
    Graph,
    /// Its search image (`crate::search_image`).
    Image,
}

/// Writes a graph's or an image's bytes (copied out under the tenant's index lock, or encoded
/// from what was) to a new derived file of tenant `key`, durably, with no lock held; returns
/// what the row naming it records of it.
pub(crate) fn save_bytes(
    store: &Store,
    key: TenantKey,
    collection: &CollectionName,
    version: u64,
    holds: Holds,
    bytes: &[u8],
) -> Result<GraphFile, EngineError> {
    let suffix = match holds {
        Holds::Graph => SUFFIX,
        Holds::Image => IMAGE_SUFFIX,
    };
    let name = file_name(collection, version, suffix);
    let mut checksum = Checksum::new();
    checksum.update(bytes);
    let len = store.write_derived(key, &name, |w| w.write_all(bytes))?;
    if len != bytes.len() as u64 {
        return Err(corrupt(format!("{name}: wrote {len} bytes")));
    }
    Ok(GraphFile {
        name,
        len,
        checksum: checksum.finish(),
    })
}

/// Reads the graph file `f` of tenant `key`, checked: it must exist, have the recorded
/// length and checksum, and decode closed for `dim` and `metric`.
pub(crate) fn load(
    store: &Store,
    key: TenantKey,
    f: &GraphFile,
    dim: usize,
    metric: Metric,
    params: HnswParams,
) -> Result<HnswIndex, EngineError> {
    let file = open_checked(store, key, f)?;
    // A mapping of the file: the checksum and the decoding read the page cache's pages in
    // place, and a large graph's rows stay in them (strata_index's `hnsw_map.rs`). Where
    // files cannot be mapped, a read.
    // SAFETY: graph files are never written after their rename into place, only deleted
    // (`strata_store`'s `derived` module: written once under a new name, read-only); see the
    // module documentation.
    match unsafe { GraphMap::new(&file, f.len) } {
        Ok(map) => {
            let mut sum = Checksum::new();
            sum.update(map.bytes());
            if sum.finish() != f.checksum {
                return Err(corrupt(format!("{}: checksum differs", f.name)));
            }
            HnswIndex::from_map(map, dim, metric, params)
                .map_err(|e| corrupt(format!("{}: {e}", f.name)))
        }
        Err(e) => {
            tracing::debug!(file = %f.name, error = %e, "graph file not mapped; reading it");
            read(file, f, dim, metric, params)
        }
    }
}

/// The whole of file `f` of tenant `key` (a search image's), checked: it must exist and have
/// the recorded length and checksum.
pub(crate) fn read_checked(
    store: &Store,
    key: TenantKey,
    f: &GraphFile,
) -> Result<Vec<u8>, EngineError> {
    let mut file = open_checked(store, key, f)?;
    let on_disk = f.len;
    // Sized by the file, never by the row alone: a damaged length is an error in
    // `open_checked`, not an allocation.
    let mut bytes = Vec::with_capacity(usize::try_from(on_disk).unwrap_or(0));
    // One byte past the recorded length tells a file that grew since.
    (&mut file)
        .take(f.len.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt(format!("{}: {e}", f.name)))?;
    if (bytes.len() as u64) < f.len {
        return Err(corrupt(format!(
            "{} has {} bytes, not {}",
            f.name,
            bytes.len(),
            f.len
        )));
    }
    if bytes.len() as u64 > f.len {
        return Err(corrupt(format!(
            "{} is longer than {} bytes",
            f.name, f.len
        )));
    }
    let mut sum = Checksum::new();
    sum.update(&bytes);
    if sum.finish() != f.checksum {
        return Err(corrupt(format!("{}: checksum differs", f.name)));
    }
    Ok(bytes)
}

/// File `f` of tenant `key`, open, if it exists and has the length the row records.
fn open_checked(
    store: &Store,
    key: TenantKey,
    f: &GraphFile,
) -> Result<std::fs::File, EngineError> {
    let file = store
        .open_derived(key, &f.name)?
        .ok_or_else(|| corrupt(format!("{} is missing", f.name)))?;
    let on_disk = file
        .metadata()
        .map_err(|e| corrupt(format!("{}: {e}", f.name)))?
        .len();
    if on_disk != f.len {
        return Err(corrupt(format!(
            "{} has {on_disk} bytes, not {}",
            f.name, f.len
        )));
    }
    Ok(file)
}

/// Reads the graph file `f`, open as `file`, checked as [`load`] does.
fn read(
    file: std::fs::File,
    f: &GraphFile,
    dim: usize,
    metric: Metric,
    params: HnswParams,
) -> Result<HnswIndex, EngineError> {
    // Small reads (headers, upper links) come from the buffer; the big arrays are larger than
    // it and go from the file straight into the graph.
    let mut sum = Checksum::new();
    let mut r = Summing {
        inner: BufReader::with_capacity(64 << 10, file),
        sum: &mut sum,
    };
    let graph = HnswIndex::read_from(&mut r, f.len, dim, metric, params)
        .map_err(|e| corrupt(format!("{}: {e}", f.name)))?;
    if sum.finish() != f.checksum {
        return Err(corrupt(format!("{}: checksum differs", f.name)));
    }
    Ok(graph)
}

/// Counts every byte that passes through into a [`Checksum`].
struct Summing<'a, T> {
    inner: T,
    sum: &'a mut Checksum,
}

impl<T: Read> Read for Summing<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;

/// xxHash64's accumulation round.
#[inline(always)]
fn round(acc: u64, word: u64) -> u64 {
    acc.wrapping_add(word.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

/// A 64-bit checksum of a byte stream, fed in pieces of any size: four lanes of xxHash64's
/// round over 32-byte blocks, then its avalanche. Why not a cryptographic hash: it guards
/// against damage (a torn or flipped file), not an adversary with write access to the data
/// directory, and it must keep up with reading hundreds of megabytes (a few GB/s).
/// The stored values are pinned by `checksum_golden_values`.
pub(crate) struct Checksum {
    lanes: [u64; 4],
    pending: [u8; 32],
    held: usize,
    len: u64,
}

impl Checksum {
    pub fn new() -> Self {
        Checksum {
            lanes: [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)],
            pending: [0; 32],
            held: 0,
            len: 0,
        }
    }

    fn block(&mut self, b: &[u8]) {
        for (lane, w) in self.lanes.iter_mut().zip(b.chunks_exact(8)) {
            let word = u64::from_le_bytes(w.try_into().expect("invariant: 8-byte chunk"));
            *lane = round(*lane, word);
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.held > 0 {
            let take = (32 - self.held).min(bytes.len());
            self.pending[self.held..self.held + take].copy_from_slice(&bytes[..take]);
            self.held += take;
            bytes = &bytes[take..];
            if self.held < 32 {
                return;
            }
            let block = self.pending;
            self.block(&block);
            self.held = 0;
        }
        let mut blocks = bytes.chunks_exact(32);
        for b in &mut blocks {
            self.block(b);
        }
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.held = rest.len();
    }

    pub fn finish(&self) -> u64 {
        let [a, b, c, d] = self.lanes;
        let mut h = a
            .rotate_left(1)
            .wrapping_add(b.rotate_left(7))
            .wrapping_add(c.rotate_left(12))
            .wrapping_add(d.rotate_left(18));
        for lane in self.lanes {
            h = (h ^ round(0, lane)).wrapping_mul(P1).wrapping_add(P3);
        }
        h = h.wrapping_add(self.len);
        for &byte in &self.pending[..self.held] {
            h = (h ^ u64::from(byte).wrapping_mul(P3))
                .rotate_left(11)
                .wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u64 {
        let mut c = Checksum::new();
        c.update(bytes);
        c.finish()
    }

    /// Pins the checksum: stored snapshots record it, so a change here is a format change.
    #[test]
    fn checksum_golden_values() {
        let long: Vec<u8> = (0..100u8).collect();
        assert_eq!(
            [sum(b""), sum(b"a"), sum(&long)],
            [GOLDEN_EMPTY, GOLDEN_A, GOLDEN_LONG]
        );
    }

    const GOLDEN_EMPTY: u64 = 14_417_840_522_228_255_723;
    const GOLDEN_A: u64 = 506_269_386_515_117_960;
    const GOLDEN_LONG: u64 = 15_802_300_965_883_765_340;

    #[test]
    fn pieces_of_any_size_give_the_same_checksum() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = sum(&bytes);
        for piece in [1, 3, 31, 32, 33, 100, 999] {
            let mut c = Checksum::new();
            for chunk in bytes.chunks(piece) {
                c.update(chunk);
            }
            assert_eq!(c.finish(), whole, "pieces of {piece}");
        }
        let mut flipped = bytes.clone();
        flipped[500] ^= 1;
        assert_ne!(sum(&flipped), whole);
        assert_ne!(sum(&bytes[..999]), whole);
        let mut zero_padded = bytes.clone();
        zero_padded.push(0);
        assert_ne!(sum(&zero_padded), whole);
    }
}

#[cfg(test)]
#[path = "graph_file_tests.rs"]
mod engine_tests;
