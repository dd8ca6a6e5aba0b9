//! Strata's indexes: distance kernels, exact scan, HNSW graph, BM25 text index and bitmap candidate sets. This crate does no I/O.
