//! Filtered vector search through `Engine::search`: latency, share of exact plans and recall@10
//! against the exact filtered top 10, at 1 %, 10 % and 50 % selectivity and unfiltered.
//!
//! Usage: `cargo run --release -p strata-engine --example filtered_bench -- [--n 100000]
//! [--dim 128] [--queries 1000] [--passes 3]`.
//!
//! Data: `testdata::clustered(n, dim, 100, 42)` (L2) in one tenant, record `i` with metadata
//! `bucket = i % 100`; queries `testdata::queries(.., 42, 43)`. Filters: `{"bucket": 7}` (1 %),
//! `{"bucket": {"$lt": 10}}` (10 %), `{"bucket": {"$lt": 50}}` (50 %). Default search settings
//! (no `ef`), k = 10, one thread, warm (one untimed pass per filter first); latency is per
//! `Engine::search` call over `passes` passes of all queries. Prints one JSON line per filter.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig};
use strata_index::{Metric as IndexMetric, exact_top_k, testdata};
use strata_types::{
    CollectionName, Filter, Metric, NewRecord, RecordId, RequestScope, SearchRequest, TenantId,
};

const K: usize = 10;
const SEED: u64 = 42;
const BATCH: usize = 1000;
const BUCKETS: usize = 100;

/// One row: its name, the filter in JSON (none: unfiltered) and which record numbers match.
type Case = (&'static str, Option<Value>, fn(usize) -> bool);

struct Args {
    n: usize,
    dim: usize,
    queries: usize,
    passes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        n: 100_000,
        dim: 128,
        queries: 1000,
        passes: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let v = value.parse::<usize>().map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--n" => args.n = v,
            "--dim" => args.dim = v,
            "--queries" => args.queries = v,
            "--passes" => args.passes = v.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// Runs `f` over `items` split across `threads` scoped threads; returns the outputs in order.
fn parallel<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let chunk = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let data = testdata::clustered(args.n, args.dim, 100, SEED);
    let queries = testdata::queries(args.queries, args.dim, 100, SEED, SEED + 1);

    let dir = tempfile::tempdir()?;
    let engine = Engine::open(dir.path(), EngineConfig::default())?;
    let tenant = TenantId::parse("bench")?;
    engine.create_tenant(&OperatorScope::for_tests(), &tenant, None)?;
    let grant = Grant {
        permissions: Permissions::of(&[Permission::Read, Permission::Write, Permission::Admin]),
        user_tokens: None,
        domains: None,
    };
    let scope = TenantScope::for_tests(&engine.tenant_meta(&tenant)?, grant);
    let collection = CollectionName::parse("vec")?;
    engine.create_collection(&scope, &collection, args.dim as u32, Metric::L2)?;
    let req = RequestScope::default();
    let t = Instant::now();
    for (b, chunk) in data.chunks(BATCH).enumerate() {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let i = b * BATCH + j;
                Ok(NewRecord {
                    id: Some(RecordId::parse(format!("r{i}"))?),
                    modality: Some(collection.clone()),
                    vector: Some(v.clone()),
                    metadata: json!({ "bucket": i % BUCKETS })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
        engine.put(&scope, &req, records)?;
    }
    let put_s = t.elapsed().as_secs_f64();

    let cases: [Case; 4] = [
        ("1%", Some(json!({"bucket": 7})), |i| i % BUCKETS == 7),
        ("10%", Some(json!({"bucket": {"$lt": 10}})), |i| {
            i % BUCKETS < 10
        }),
        ("50%", Some(json!({"bucket": {"$lt": 50}})), |i| {
            i % BUCKETS < 50
        }),
        ("none", None, |_| true),
    ];
    let mut first = true;
    for (name, filter, keep) in cases {
        let filter = filter.as_ref().map(Filter::parse).transpose()?;
        let request = |q: &Vec<f32>| SearchRequest {
            vector: Some(q.clone()),
            k: K,
            modality: Some(collection.clone()),
            filter: filter.clone(),
            ..Default::default()
        };
        let truth: Vec<Vec<u32>> = parallel(&queries, 2, |q| {
            let rows = data
                .iter()
                .enumerate()
                .filter(|(i, _)| keep(*i))
                .map(|(i, v)| (i as u32, v.as_slice()));
            exact_top_k(IndexMetric::L2, q, rows, K)
                .into_iter()
                .map(|h| h.slot)
                .collect()
        });
        let matching = (0..args.n).filter(|&i| keep(i)).count();

        // Warm-up pass (the very first also loads the tenant's indexes and builds the graph).
        let t = Instant::now();
        for q in &queries {
            engine.search(&scope, &req, &request(q))?;
        }
        if first {
            eprintln!(
                "puts {put_s:.1} s; first pass incl. index load {:.1} s",
                t.elapsed().as_secs_f64()
            );
            first = false;
        }
        let mut lat = Vec::with_capacity(queries.len() * args.passes);
        let (mut exact, mut found, mut short) = (0usize, 0usize, 0usize);
        for _ in 0..args.passes {
            for (q, gt) in queries.iter().zip(&truth) {
                let s = request(q);
                let t = Instant::now();
                let r = engine.search(&scope, &req, &s)?;
                lat.push(t.elapsed());
                exact += usize::from(r.exact);
                short += usize::from(r.hits.len() < K.min(matching));
                found += r
                    .hits
                    .iter()
                    .filter_map(|h| h.id.as_str().strip_prefix('r')?.parse::<u32>().ok())
                    .filter(|row| gt.contains(row))
                    .count();
            }
        }
        let total = lat.len();
        let mean = lat.iter().copied().map(us).sum::<f64>() / total as f64;
        lat.sort();
        let at = |p: f64| us(lat[((total as f64 * p) as usize).min(total - 1)]);
        println!(
            "{{\"bench\":\"filtered\",\"selectivity\":\"{name}\",\"matching\":{matching},\"searches\":{total},\"p50_us\":{:.1},\"mean_us\":{mean:.1},\"p99_us\":{:.1},\"exact_share\":{:.3},\"recall_at_10\":{:.4},\"fewer_than_k\":{short}}}",
            at(0.50),
            at(0.99),
            exact as f64 / total as f64,
            found as f64 / (K * total) as f64,
        );
    }
    Ok(())
}
