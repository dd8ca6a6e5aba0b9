//! A link write, and a record's link list, on a record many other principals link to.
//!
//! Usage: `cargo run --release -p strata-engine --example link_fanout_bench -- [--foreign 19000]
//! [--writes 50]`.
//!
//! One tenant; a tenant-shared record `hub`; `foreign` private records of other principals
//! (1,000 each, the most links one principal may see on a record; each record with ~300 bytes
//! of text, a 384-dim vector and a small metadata object, like a real memory), each linked to
//! `hub` by its owner. Then Bob (`u:bob`) links `writes` records of his
//! own to `hub`, one link per request, and reads `hub`'s links. Past
//! `MAX_LINKS_PER_RECORD` links on `hub`, each of Bob's link writes counts the links whose
//! other end he can see, which reads the other ends; this times that. Prints one JSON line.
//!
//! The source uses only the engine's public API, so the same file measures any version.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;
use strata_engine::{Engine, EngineConfig};
use strata_types::{NewLink, NewRecord, RecordId, RequestScope, TenantId};

type BoxError = Box<dyn std::error::Error>;

fn arg(name: &str, default: usize) -> Result<usize, BoxError> {
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == name {
            return Ok(it.next().ok_or(format!("{name} needs a value"))?.parse()?);
        }
    }
    Ok(default)
}

fn principal(token: &str) -> Result<RequestScope, BoxError> {
    Ok(serde_json::from_value(json!({ "user_tokens": [token] }))?)
}

fn record(id: String, token: &str, i: usize) -> Result<NewRecord, BoxError> {
    let vector: Vec<f32> = (0..384)
        .map(|d| ((i * 31 + d) % 97) as f32 / 97.0)
        .collect();
    Ok(serde_json::from_value(json!({
        "id": id,
        "content": format!("note {i}: {}", "the quick brown fox jumps over the lazy dog ".repeat(7)),
        "vector": vector,
        "user_tokens": [token],
        "metadata": {"source": "bench", "n": i, "tags": ["a", "b", "c"]},
    }))?)
}

fn link(source: &str, target: &str) -> Result<NewLink, BoxError> {
    Ok(serde_json::from_value(
        json!({"source": source, "target": target}),
    )?)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at].as_secs_f64() * 1e3
}

fn main() -> Result<(), BoxError> {
    let foreign = arg("--foreign", 19_000)?;
    let writes = arg("--writes", 50)?.max(1);
    let dir = tempfile::tempdir()?;
    let engine = Engine::open(dir.path(), EngineConfig::default())?;
    let scope = common::scope(&engine, &TenantId::parse("bench")?);
    let shared = RequestScope::default();
    engine.put(
        &scope,
        &shared,
        vec![serde_json::from_value(
            json!({"id": "hub", "content": "the policy"}),
        )?],
    )?;
    // Each principal may have `MAX_LINKS_PER_RECORD` (1,000) links on `hub` it can see: the
    // foreign links come from one principal per 1,000.
    for start in (0..foreign).step_by(500) {
        let end = (start + 500).min(foreign);
        let token = format!("u:p{}", start / 1000);
        let other = principal(&token)?;
        let records = (start..end)
            .map(|i| record(format!("a{i}"), &token, i))
            .collect::<Result<Vec<_>, _>>()?;
        engine.put(&scope, &other, records)?;
        let links = (start..end)
            .map(|i| link(&format!("a{i}"), "hub"))
            .collect::<Result<Vec<_>, _>>()?;
        engine.link_batch(&scope, &other, links)?;
    }
    let bob = principal("u:bob")?;
    let records = (0..writes)
        .map(|i| record(format!("b{i}"), "u:bob", i))
        .collect::<Result<Vec<_>, _>>()?;
    engine.put(&scope, &bob, records)?;
    let mut link_times = Vec::with_capacity(writes);
    for i in 0..writes {
        let t = Instant::now();
        engine.link(&scope, &bob, link(&format!("b{i}"), "hub")?)?;
        link_times.push(t.elapsed());
    }
    let mut list_times = Vec::new();
    let hub = RecordId::parse("hub")?;
    for _ in 0..10 {
        let t = Instant::now();
        let links = engine.record_links(&scope, &bob, &hub)?;
        list_times.push(t.elapsed());
        assert_eq!(links.incoming.len(), writes, "Bob sees his own links only");
    }
    link_times.sort();
    list_times.sort();
    println!(
        "{}",
        json!({
            "foreign_links": foreign,
            "bob_links": writes,
            "link_write_ms": {"p50": percentile(&link_times, 0.5), "p99": percentile(&link_times, 0.99)},
            "links_list_ms": {"p50": percentile(&list_times, 0.5), "max": percentile(&list_times, 1.0)},
        })
    );
    Ok(())
}
