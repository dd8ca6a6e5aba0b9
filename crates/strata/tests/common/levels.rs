//! Shared by the isolation-level tests: a small vector collection whose answers are compared
//! before, during and after a migration.

use serde_json::{Value, json};

use super::Server;

pub const DIM: usize = 8;

/// For tests that need a graph: a collection gets one once vectors × dimensions reach three
/// quarters of the planner's exact-scan budget (1.5M floats), so 1,500 vectors of this many
/// dimensions (1.54M) have one, while searches stay exact scans up to 1,953 vectors (the
/// budget itself), so answers compare exactly whether or not the graph is in place.
pub const GRAPH_DIM: usize = 1024;

/// Vector `i` of `DIM` dimensions.
pub fn vector(i: usize) -> Vec<f32> {
    vector_of(i, DIM)
}

/// Positive components only: the writers' vectors (all negative) are never near a query.
pub fn vector_of(i: usize, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|d| 0.05 + ((i * 7919 + d * 104_729) % 1000) as f32 / 1000.0)
        .collect()
}

/// The ids of the top 5 hits of five fixed queries in collection `vec` of `DIM` dimensions.
pub fn answers(server: &Server, key: &str) -> Vec<Value> {
    answers_of(server, key, DIM)
}

/// The ids of the top 5 hits of five fixed queries in collection `vec` of `dim` dimensions.
pub fn answers_of(server: &Server, key: &str, dim: usize) -> Vec<Value> {
    (0..5)
        .map(|q| {
            let (s, v) = server.post(
                "/v1/search",
                key,
                json!({"vector": vector_of(q * 97 + 1, dim), "modality": "vec", "k": 5}),
            );
            assert_eq!(s, 200, "{v}");
            let ids: Vec<Value> = v["hits"]
                .as_array()
                .expect("hits")
                .iter()
                .map(|h| h["id"].clone())
                .collect();
            assert!(ids.len() == 5 && ids.iter().all(Value::is_string), "{v}");
            Value::Array(ids)
        })
        .collect()
}
