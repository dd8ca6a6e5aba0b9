//! The pause a resident tenant's writes see while its indexes are saved (an index checkpoint,
//! an eviction, a graph install): the save holds the tenant's write order while it captures
//! its graphs and search images (`index_save.rs`), so a write that arrives meanwhile waits.
//!
//! One tenant of `SIZE` records (384 dimensions, ~60 bytes of text each) is written, loaded and
//! given its graph; then one thread writes single durable records as fast as it can while the
//! main thread saves the tenant's indexes (`Engine::checkpoint_indexes`) `SAVES` times, a
//! second apart. Reported: each save's wall time, and the writer's latency outside the saves
//! and during them (p50, p99, max).
//!
//! Run: `cargo run --release -p strata-engine --example save_pause_bench` (env `SIZE`, default
//! 100000; `SAVES`, default 5, 0 for the writer alone; `SLOW=1` also lists each write of 50 ms
//! or more with its start from the nearest save's start). It also prints the first write's
//! latency: the graph was just built in bulk, so that write is the first to grow it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_auth::OperatorScope;
use strata_engine::{Engine, EngineConfig};
use strata_types::{CollectionName, NewRecord, RecordId, RequestScope, TenantId};

const DIM: usize = 384;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(i: usize, v: Vec<f32>) -> NewRecord {
    NewRecord {
        id: Some(RecordId::parse(format!("r{i}")).expect("id")),
        modality: Some(CollectionName::parse("text").expect("name")),
        vector: Some(v),
        content: Some(format!(
            "memory {i}: a note about topic {} and project {}",
            i % 7,
            i % 31
        )),
        ..Default::default()
    }
}

/// p50, p99 and max of `xs` in milliseconds.
fn summary(xs: &mut [Duration]) -> String {
    if xs.is_empty() {
        return "none".into();
    }
    xs.sort();
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    format!(
        "{} writes, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        xs.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

fn main() {
    let (n, saves) = (env("SIZE", 100_000), env("SAVES", 5));
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(Engine::open(dir.path(), EngineConfig::default()).expect("open"));
    engine
        .create_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse("t").expect("id"),
            None,
        )
        .expect("tenant");
    let scope = common::scope(&engine, &TenantId::parse("t").expect("id"));
    let started = Instant::now();
    let data = strata_index::testdata::clustered(n, DIM, 50, 1);
    for (c, part) in data.chunks(1000).enumerate() {
        let batch = part
            .iter()
            .enumerate()
            .map(|(i, v)| record(c * 1000 + i, v.clone()))
            .collect();
        engine
            .put(&scope, &RequestScope::default(), batch)
            .expect("put");
    }
    engine.index_stats(&scope).expect("load");
    engine.wait_for_graph_builds();
    engine.persist_indexes().expect("persist");
    println!(
        "{n} records: populated, graph built and saved in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    // (start, latency) of every write.
    let writes: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
    let writer = {
        let (engine, stop, writes) = (engine.clone(), stop.clone(), writes.clone());
        let scope = scope.clone();
        std::thread::spawn(move || {
            let fresh = strata_index::testdata::queries(20_000, DIM, 50, 1, 7);
            for (i, v) in fresh.into_iter().cycle().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let at = Instant::now();
                engine
                    .put(
                        &scope,
                        &RequestScope::default(),
                        vec![record(n + i % 50_000, v)],
                    )
                    .expect("write");
                writes.lock().expect("lock").push((at, at.elapsed()));
            }
        })
    };
    let mut windows = Vec::new();
    if saves == 0 {
        // The baseline: the same writer for as long as five saves take, with no save.
        std::thread::sleep(Duration::from_secs(8));
    }
    for _ in 0..saves {
        std::thread::sleep(Duration::from_secs(1));
        let at = Instant::now();
        // Until it saves: a build before the checkpoint waited for the index lock passed a
        // tenant over when a write held it.
        while engine.checkpoint_indexes(1).expect("checkpoint") == 0 {}
        let took = at.elapsed();
        println!("  save: {:.1} ms", took.as_secs_f64() * 1000.0);
        windows.push((at, at + took));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let writes = writes.lock().expect("lock");
    // The graph was built in bulk, which sizes its arrays exactly: the first insert grows them.
    if let Some((_, first)) = writes.first() {
        println!(
            "  first write after the build: {:.2} ms",
            first.as_secs_f64() * 1000.0
        );
    }
    let (mut during, mut outside) = (Vec::new(), Vec::new());
    for &(at, took) in writes.iter() {
        let end = at + took;
        if windows.iter().any(|&(s, e)| at < e && end > s) {
            during.push(took);
        } else {
            outside.push(took);
        }
    }
    if std::env::var_os("SLOW").is_some() {
        for &(at, took) in writes.iter().filter(|(_, t)| t.as_millis() >= 50) {
            let near = windows
                .iter()
                .map(|&(s, e)| {
                    (
                        at.saturating_duration_since(s).as_millis() as i64
                            - s.saturating_duration_since(at).as_millis() as i64,
                        e.saturating_duration_since(s).as_millis(),
                    )
                })
                .min_by_key(|(d, _)| d.abs())
                .unwrap_or_default();
            println!(
                "  slow write {:.1} ms, started {} ms after a save's start (that save took {} ms)",
                took.as_secs_f64() * 1000.0,
                near.0,
                near.1
            );
        }
    }
    println!("  writes outside the saves: {}", summary(&mut outside));
    println!("  writes overlapping a save: {}", summary(&mut during));
    // The tail in counts, which a max alone hides: how many writes the saves held up, and how
    // long in all.
    let slow = |at_least_ms: u128| {
        let held: Vec<&Duration> = during
            .iter()
            .filter(|t| t.as_millis() >= at_least_ms)
            .collect();
        let total: Duration = held.iter().copied().sum();
        format!(
            "{} ({:.0} ms in all)",
            held.len(),
            total.as_secs_f64() * 1000.0
        )
    };
    println!(
        "  writes overlapping a save of 10 ms or more: {}, of 50 ms or more: {}",
        slow(10),
        slow(50)
    );
}
