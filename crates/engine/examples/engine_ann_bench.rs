//! End-to-end ANN benchmark of `Engine::search`: the same seeded clustered vectors as
//! `strata-index`'s `ann_bench` are written into one tenant through `Engine::put`, and QPS and
//! recall@10 of `Engine::search` are measured at several `ef` with 1 and 2 threads. Prints JSON
//! lines in `ann_bench`'s format with `"lib":"strata-engine"`, for `bench/ann/compare.py`.
//!
//! Usage: `cargo run --release -p strata-engine --example engine_ann_bench -- [--n 100000]
//! [--dim 128] [--clusters 100] [--queries 1000] [--efs 16,32,64,128] [--data DIR]
//! [--include both|ids|records] [--kind clustered|uniform]`.
//! In `--efs`, `default` searches with no `ef`: the graph's default beam (its configured
//! `ef_search`, raised by its calibration where the data needs it); its line reports that beam.
//! `--kind uniform` generates uniformly random vectors in [-1, 1) instead (seeded, queries
//! from another seed), the data on which HNSW needs the widest beam.
//! With `--data DIR` holding `base.fvecs`, `query.fvecs` and `gt.ivecs` (as written by
//! `ann_bench --out DIR`) those exact files are used; otherwise the data set is generated with
//! `testdata::clustered(n, dim, clusters, 42)` / `testdata::queries(.., 42, 43)` and the ground
//! truth is an exact scan. L2 throughout.
//!
//! What is timed is the whole engine call: request checks, visibility resolution, the tenant
//! liveness read, candidate bitmaps, the planner, the graph search with its filter callback,
//! and cloning the hit records. The requests are built before the timed passes, as
//! `ann_bench` hands the bare index its queries. The "build" line is the first search of the tenant, which loads
//! the tenant's indexes from storage, plus the wait for the background builder's HNSW graph
//! (2 threads); `put_s` is the time the durable writes took. `exact_share` is the share of
//! responses that came from an exact scan (0 when every search used the graph).

use std::io::Read;
use std::time::Instant;

use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig};
use strata_index::{Metric as IndexMetric, exact_top_k, testdata};
use strata_types::{
    CollectionName, Include, Metric, NewRecord, RecordId, RequestScope, SearchRequest,
    SearchResponse, TenantId,
};

const K: usize = 10;
const SEED: u64 = 42;
const BATCH: usize = 1000;

struct Args {
    n: usize,
    dim: usize,
    clusters: usize,
    queries: usize,
    /// `None`: no `ef` in the request (the graph's default).
    efs: Vec<Option<usize>>,
    data: Option<String>,
    /// Generated data: `clustered` (default) or `uniform`.
    kind: String,
    /// Which requests are timed: `both` (default), `ids` (`include: []` alone, e.g. under a
    /// profiler) or `records`.
    include: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        n: 100_000,
        dim: 128,
        clusters: 100,
        queries: 1000,
        efs: vec![Some(16), Some(32), Some(64), Some(128)],
        data: None,
        kind: "clustered".into(),
        include: "both".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--n" => args.n = num()?,
            "--dim" => args.dim = num()?,
            "--clusters" => args.clusters = num()?,
            "--queries" => args.queries = num()?,
            "--efs" => {
                args.efs = value
                    .split(',')
                    .map(|s| match s {
                        "default" => Ok(None),
                        s => s.parse().map(Some).map_err(|e| format!("--efs: {e}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--kind" if ["clustered", "uniform"].contains(&value.as_str()) => args.kind = value,
            "--kind" => return Err("--kind: clustered or uniform".into()),
            "--data" => args.data = Some(value),
            "--include" if ["both", "ids", "records"].contains(&value.as_str()) => {
                args.include = value
            }
            "--include" => return Err("--include: both, ids or records".into()),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// Reads an `.fvecs` / `.ivecs` file: each row is a little-endian `u32` length, then that many
/// 4-byte values.
fn read_vecs<T>(path: &str, from: fn([u8; 4]) -> T) -> std::io::Result<Vec<Vec<T>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let word = |at: usize| -> [u8; 4] { [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]] };
    let mut rows = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(word(at)) as usize;
        at += 4;
        if at + 4 * len > bytes.len() {
            return Err(std::io::Error::other(format!("{path}: truncated row")));
        }
        rows.push((0..len).map(|j| from(word(at + 4 * j))).collect());
        at += 4 * len;
    }
    Ok(rows)
}

/// Runs `f` over `items` split across `threads` scoped threads; returns the outputs in order
/// and the CPU time the threads spent, in seconds (0 where the OS does not report it).
fn parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> (Vec<R>, f64) {
    let chunk = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                s.spawn(|| {
                    let start = thread_cpu_ns();
                    let out = part.iter().map(&f).collect::<Vec<R>>();
                    (out, thread_cpu_ns().saturating_sub(start))
                })
            })
            .collect();
        let mut cpu_ns = 0;
        let mut outputs = Vec::with_capacity(items.len());
        for h in handles {
            let (out, ns) = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            outputs.extend(out);
            cpu_ns += ns;
        }
        (outputs, cpu_ns as f64 / 1e9)
    })
}

/// Nanoseconds the calling thread has run on a CPU (Linux `schedstat`); 0 elsewhere. The
/// machine may be shared, so queries per CPU-second are reported beside wall-clock QPS.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Base vectors, queries and the exact top-`K` row numbers per query.
type DataSet = (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<u32>>);

fn data_set(args: &Args) -> Result<DataSet, Box<dyn std::error::Error>> {
    if let Some(dir) = &args.data {
        let base = read_vecs(&format!("{dir}/base.fvecs"), f32::from_le_bytes)?;
        let queries = read_vecs(&format!("{dir}/query.fvecs"), f32::from_le_bytes)?;
        let truth = read_vecs(&format!("{dir}/gt.ivecs"), u32::from_le_bytes)?;
        if base.len() != args.n || base.first().map(Vec::len) != Some(args.dim) {
            return Err(format!("{dir}/base.fvecs is not {} x {}", args.n, args.dim).into());
        }
        if truth.len() != queries.len() {
            return Err(format!(
                "{dir}: {} queries but {} truth rows",
                queries.len(),
                truth.len()
            )
            .into());
        }
        return Ok((base, queries, truth));
    }
    let (base, queries) = match args.kind.as_str() {
        "uniform" => (
            uniform(args.n, args.dim, SEED),
            uniform(args.queries, args.dim, SEED + 1),
        ),
        _ => (
            testdata::clustered(args.n, args.dim, args.clusters, SEED),
            testdata::queries(args.queries, args.dim, args.clusters, SEED, SEED + 1),
        ),
    };
    let (truth, _) = parallel(&queries, 2, |q| {
        let rows = base
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, v.as_slice()));
        exact_top_k(IndexMetric::L2, q, rows, K)
            .into_iter()
            .map(|h| h.slot)
            .collect()
    });
    Ok((base, queries, truth))
}

/// `n` vectors with components uniform in [-1, 1), fixed by `seed`.
fn uniform(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect()
}

/// The row number a record id `r<row>` stands for.
fn row_of(id: &RecordId) -> Option<u32> {
    id.as_str().strip_prefix('r')?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let t = Instant::now();
    let (base, queries, truth) = data_set(&args)?;
    eprintln!(
        "data + ground truth: {:.1} s ({} x {}, {} queries)",
        t.elapsed().as_secs_f64(),
        base.len(),
        args.dim,
        queries.len()
    );

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
    for (b, chunk) in base.chunks(BATCH).enumerate() {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                Ok(NewRecord {
                    id: Some(RecordId::parse(format!("r{}", b * BATCH + j))?),
                    modality: Some(collection.clone()),
                    vector: Some(v.clone()),
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
        engine.put(&scope, &req, records)?;
    }
    let put_s = t.elapsed().as_secs_f64();

    // `include: []` (ids and scores, what the bare index and hnswlib return) or the default
    // include (each hit's content and metadata, read from storage).
    let request = |q: &Vec<f32>, ef: Option<usize>, include: &Option<Vec<Include>>| SearchRequest {
        vector: Some(q.clone()),
        k: K,
        modality: Some(collection.clone()),
        ef,
        include: include.clone(),
        ..Default::default()
    };
    let search = |s: &SearchRequest| engine.search(&scope, &req, s).expect("search");
    // The first search loads the tenant's indexes and hands the graph to the background
    // builder; searches are exact scans until it is installed, so wait for it before timing.
    let t = Instant::now();
    search(&request(&queries[0], None, &None));
    engine.wait_for_graph_builds();
    let build_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"lib\":\"strata-engine\",\"event\":\"build\",\"n\":{},\"dim\":{},\"put_s\":{put_s:.3},\"build_s\":{build_s:.3}}}",
        base.len(),
        args.dim
    );
    // The beam a search without `ef` uses (the configured default or the calibrated one).
    // Index figures span every principal: read with a scope of their own, so the timed
    // searches keep the benchmark's grant.
    let figures = Grant {
        permissions: Permissions::of(&[Permission::Read, Permission::AllPrincipals]),
        user_tokens: None,
        domains: None,
    };
    let default_ef = engine
        .index_stats(&TenantScope::for_tests(
            &engine.tenant_meta(&tenant)?,
            figures,
        ))?
        .into_iter()
        .find(|s| s.collection == collection)
        .and_then(|s| s.ef_search)
        .unwrap_or(0);

    let variants: [(&str, Option<Vec<Include>>); 2] = [
        ("strata-engine", Some(Vec::new())),
        ("strata-engine-records", None),
    ];
    for &ef in &args.efs {
        for threads in [1usize, 2] {
            for (lib, include) in &variants {
                let wanted = match args.include.as_str() {
                    "ids" => include.is_some(),
                    "records" => include.is_none(),
                    _ => true,
                };
                if !wanted {
                    continue;
                }
                let label = match ef {
                    Some(ef) => ef.to_string(),
                    None => format!("\"default\",\"default_ef\":{default_ef}"),
                };
                // Built before the timed passes, as the bare index is handed its queries: what
                // is timed is the engine's call, not the caller's copy of each query vector.
                let requests: Vec<SearchRequest> =
                    queries.iter().map(|q| request(q, ef, include)).collect();
                measure(lib, &requests, &truth, &label, threads, search);
            }
        }
    }
    Ok(())
}

/// Times `search` over every query with `threads` threads at `ef` and prints its JSON line as
/// `lib`: a warm-up pass, then the best of three timed passes, as ann_bench does.
fn measure(
    lib: &str,
    requests: &[SearchRequest],
    truth: &[Vec<u32>],
    ef: &str,
    threads: usize,
    search: impl Fn(&SearchRequest) -> SearchResponse + Sync,
) {
    let (mut results, _) = parallel(requests, threads, &search);
    let (mut secs, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let t = Instant::now();
        let (pass, pass_cpu) = parallel(requests, threads, &search);
        secs = secs.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(pass_cpu);
        results = pass;
    }
    let mut found = 0usize;
    let mut exact = 0usize;
    for (r, gt) in results.iter().zip(truth) {
        exact += usize::from(r.exact);
        found += r
            .hits
            .iter()
            .filter_map(|h| row_of(&h.id))
            .filter(|row| gt.iter().take(K).any(|g| g == row))
            .count();
    }
    let recall = found as f64 / (K * requests.len()) as f64;
    let qps = requests.len() as f64 / secs;
    let cpu_qps = requests.len() as f64 / cpu;
    let exact_share = exact as f64 / requests.len() as f64;
    println!(
        "{{\"lib\":\"{lib}\",\"event\":\"search\",\"ef\":{ef},\"threads\":{threads},\"qps\":{qps:.1},\"cpu_qps\":{cpu_qps:.1},\"recall_at_10\":{recall:.4},\"exact_share\":{exact_share:.3}}}"
    );
}
