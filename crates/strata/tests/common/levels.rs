//! Shared by the isolation-level tests: a small vector collection whose answers are compared
//! before, during and after a migration.

use serde_json::{Value, json};

use super::Server;

pub const DIM: usize = 8;

/// Positive components only: the writers' vectors (all negative) are never near a query.
pub fn vector(i: usize) -> Vec<f32> {
    (0..DIM)
        .map(|d| 0.05 + ((i * 7919 + d * 104_729) % 1000) as f32 / 1000.0)
        .collect()
}

/// The ids of the top 5 hits of five fixed queries in collection `vec`.
pub fn answers(server: &Server, key: &str) -> Vec<Value> {
    (0..5)
        .map(|q| {
            let (s, v) = server.post(
                "/v1/search",
                key,
                json!({"vector": vector(q * 97 + 1), "modality": "vec", "k": 5}),
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
