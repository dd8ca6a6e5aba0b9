//! Reload time of a tenant written while evicted: its search image plus the change log
//! replayed (the default), against the rebuild from every record that a log too short to
//! cover the image falls back to (`change_log_cap = 1`, which is what every such reload did
//! before the change log).
//!
//! For each size, one tenant of `n` records (384 dimensions, ~60 bytes of text each) is
//! written, loaded, given its graph and persisted; then, on a fresh copy of that data per run,
//! `WRITES` records are written (half new, half replaced) while the tenant is not loaded, and
//! the first load (`index_stats`) and the first hybrid search after it are timed, then the
//! background graph work that follows (a build, or the catch-up of a graph set aside). A run
//! without writes (the image is current) shows what the replay itself adds.
//!
//! Run: `cargo run --release -p strata-engine --example replay_bench` (env `SIZES`, a comma
//! list, default `2000,20000`; `RUNS`, default 3; `WRITES`, the records written while the
//! tenant is not loaded, default 10).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use strata_auth::OperatorScope;
use strata_engine::{Engine, EngineConfig};
use strata_types::{CollectionName, NewRecord, RecordId, RequestScope, SearchRequest, TenantId};

const DIM: usize = 384;

fn open(dir: &Path, change_log_cap: u64) -> Engine {
    Engine::open(
        dir,
        EngineConfig {
            change_log_cap,
            ..EngineConfig::default()
        },
    )
    .expect("open")
}

fn text() -> CollectionName {
    CollectionName::parse("text").expect("name")
}

fn record(i: usize, v: Vec<f32>) -> NewRecord {
    NewRecord {
        id: Some(RecordId::parse(format!("r{i}")).expect("id")),
        modality: Some(text()),
        vector: Some(v),
        content: Some(format!(
            "memory {i}: a note about topic {} and project {}",
            i % 7,
            i % 31
        )),
        ..Default::default()
    }
}

/// A tenant of `n` records, loaded, with its graph built and everything persisted.
fn populate(dir: &Path, n: usize) {
    let engine = open(dir, strata_store::DEFAULT_CHANGE_LOG_CAP);
    engine
        .create_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse("t").expect("id"),
            None,
        )
        .expect("tenant");
    let scope = common::scope(&engine, &TenantId::parse("t").expect("id"));
    let data = strata_index::testdata::clustered(n, DIM, 50, 1);
    let records: Vec<NewRecord> = data
        .into_iter()
        .enumerate()
        .map(|(i, v)| record(i, v))
        .collect();
    for part in records.chunks(1000) {
        engine
            .put(&scope, &RequestScope::default(), part.to_vec())
            .expect("put");
    }
    engine.index_stats(&scope).expect("load");
    engine.wait_for_graph_builds();
    engine.persist_indexes().expect("persist");
}

/// One run on a copy of `base`: 10 writes while the tenant is not loaded, then the timed
/// first load and first search, and the background graph work after them. Returns (load,
/// search, background, whether the load used the image).
fn run(
    base: &Path,
    n: usize,
    change_log_cap: u64,
    writes: usize,
) -> (Duration, Duration, Duration, bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(base, dir.path());
    let engine = open(dir.path(), change_log_cap);
    let scope = common::scope(&engine, &TenantId::parse("t").expect("id"));
    let fresh = strata_index::testdata::queries(writes, DIM, 50, 1, 7);
    let writes: Vec<NewRecord> = fresh
        .into_iter()
        .enumerate()
        // Half new records, half replacing existing ones.
        .map(|(i, v)| record(if i % 2 == 0 { n + i } else { i * 97 % n }, v))
        .collect();
    for w in writes {
        engine
            .put(&scope, &RequestScope::default(), vec![w])
            .expect("write");
    }
    let start = Instant::now();
    let stats = engine.index_stats(&scope).expect("load");
    let load = start.elapsed();
    let query = SearchRequest {
        vector: strata_index::testdata::queries(1, DIM, 50, 1, 9).pop(),
        query: Some("topic 3".into()),
        k: 10,
        modality: Some(text()),
        ..Default::default()
    };
    let start = Instant::now();
    let r = engine
        .search(&scope, &RequestScope::default(), &query)
        .expect("search");
    let search = start.elapsed();
    assert_eq!(r.hits.len(), 10);
    let start = Instant::now();
    engine.wait_for_graph_builds();
    let background = start.elapsed();
    let from_image = stats.iter().all(|s| s.loaded_from_image);
    (load, search, background, from_image)
}

/// Copies the data directory `from` into `to`: the storage file and the derived files (graphs)
/// beside it.
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SIZES")
        .unwrap_or_else(|_| "2000,20000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("SIZES: numbers"))
        .collect();
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let writes: usize = std::env::var("WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for n in sizes {
        let base = tempfile::tempdir().expect("tempdir");
        let started = Instant::now();
        populate(base.path(), n);
        println!(
            "{n} records: populated in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let cap = strata_store::DEFAULT_CHANGE_LOG_CAP;
        for (label, cap, writes) in [
            ("no writes: current image", cap, 0),
            ("rebuild (log too short)", 1, writes),
            ("replay from the change log", cap, writes),
        ] {
            let (mut loads, mut searches, mut behind) = (Vec::new(), Vec::new(), Vec::new());
            let mut from_image = true;
            for _ in 0..runs {
                let (l, s, b, img) = run(base.path(), n, cap, writes);
                loads.push(ms(l));
                searches.push(ms(s));
                behind.push(ms(b));
                from_image &= img;
            }
            loads.sort_by(f64::total_cmp);
            searches.sort_by(f64::total_cmp);
            behind.sort_by(f64::total_cmp);
            let label = match writes {
                0 => label.to_string(),
                w => format!("{w} writes, {label}"),
            };
            println!(
                "  {label}: load median {:.1} ms (min {:.1}, max {:.1}), first hybrid search median {:.1} ms, background graph work after it median {:.1} ms, from image: {from_image}",
                loads[loads.len() / 2],
                loads[0],
                loads[loads.len() - 1],
                searches[searches.len() / 2],
                behind[behind.len() / 2],
            );
        }
    }
}
