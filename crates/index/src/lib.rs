//! Strata's indexes: distance kernels, exact scan, HNSW graph, BM25 text index and bitmap candidate sets. This crate opens no file and does no network I/O.
//!
//! Every index here is keyed by a `u32` *slot*: the engine maps its record ids to dense slots
//! and owns one set of indexes per tenant, so statistics and graphs never mix tenants; BM25
//! statistics are further computed over the slots the caller may see ([`Bm25Index::query`]).
//!
//! Invariants:
//! - No file opened, no network I/O: persistence is to and from byte buffers
//!   (`HnswIndex::to_bytes`), streams the caller opened (`HnswIndex::write_to`,
//!   `HnswIndex::read_from`) and mappings of files the caller opened (`GraphMap`,
//!   `HnswIndex::from_map`).
//! - Scores are always *higher is better* (see [`Metric::score`]); results are sorted by score
//!   descending with ties broken by slot ascending, so every search is deterministic.
//! - Of the workspace crates, depends on `strata-types` alone: `Num` (the filters' exact JSON
//!   numbers) and `squared_norm` (the vectors' one norm rule).

pub mod analyzer;
pub mod bitmap;
pub mod bm25;
mod bm25_stored;
mod error;
pub mod exact;
mod field_column;
mod field_stored;
pub mod hnsw;
pub mod hnsw_calibrate;
mod hnsw_format;
mod hnsw_graph;
mod hnsw_map;
mod hnsw_parallel;
mod hnsw_rows;
mod hnsw_scratch;
pub mod id_table;
pub mod kernels;
pub mod metric;
pub mod packed;
mod slot_lists;
mod slot_set;
pub mod testdata;

pub use analyzer::Analyzer;
pub use bitmap::{FieldIndex, Num, RoaringBitmap};
pub use bm25::{Bm25Index, Bm25Query};
pub use error::IndexError;
pub use exact::{Hit, PreparedQuery, exact_top_k, exact_top_k_prepared};
pub use hnsw::{HnswIndex, HnswParams};
pub use hnsw_calibrate::{Calibrated, Calibration, CalibrationSettings};
pub use hnsw_map::GraphMap;
pub use id_table::IdTable;
pub use metric::Metric;
