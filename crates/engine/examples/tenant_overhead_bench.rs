//! Multi-tenant overhead of `Engine::search`: warm search latency in an engine holding one
//! tenant of 1,000 vectors versus an engine holding many tenants of 1,000 vectors each, with
//! every search going to a randomly chosen tenant.
//!
//! Usage: `cargo run --release -p strata-engine --example tenant_overhead_bench -- [--tenants 1000]
//! [--per-tenant 1000] [--dim 128] [--searches 5000] [--rounds 10] [--include default|ids]
//! [--storage-cache-mib N]`.
//!
//! `--include default` (the default) searches as a client that names no `include` does: hits
//! carry content and metadata, so each hit's record is read from storage. `--include ids` asks
//! for ids and scores only (`include: []`). `--storage-cache-mib` sets both engines'
//! `storage_cache_bytes` (the engine's default when absent).
//!
//! Data: every tenant's vectors come from one clustered distribution
//! (`testdata::ClusterSpec::new(dim, 100, 42)`), tenant `t` sampling with seed `1000 + t`, so
//! every tenant's search does the same work in expectation; queries are sampled with seed 43.
//! Both engines live in temporary directories, written in batches of 1,000 durable puts. Every
//! tenant's indexes are warmed (one search each) before timing. Timing alternates between the
//! two engines in `rounds` rounds of `searches / rounds` searches each, so that load from
//! other processes on the machine hits both sides alike; k = 10, one thread.
//!
//! Two diagnostic series are timed in the same rounds: `many_engine_one_tenant` sends every
//! search of the many-tenant engine to the same tenant (what the engine's size costs when the
//! tenant's data is in cache), and `raw_scan_*` times `exact_top_k` alone over one copy of the
//! vectors versus a random one of `tenants` copies (what touching cold memory costs anyway).
//! Prints one JSON line per series and one with the ratios.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig};
use strata_index::testdata::ClusterSpec;
use strata_index::{Metric as IndexMetric, exact_top_k};
use strata_types::{
    CollectionName, Metric, NewRecord, RecordId, RequestScope, SearchRequest, TenantId,
};

const K: usize = 10;
const BATCH: usize = 1000;

struct Args {
    tenants: usize,
    per_tenant: usize,
    dim: usize,
    searches: usize,
    rounds: usize,
    /// `include: []` instead of the default include.
    ids_only: bool,
    storage_cache_bytes: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        tenants: 1000,
        per_tenant: 1000,
        dim: 128,
        searches: 5000,
        rounds: 10,
        ids_only: false,
        storage_cache_bytes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        if flag == "--include" {
            args.ids_only = match value.as_str() {
                "ids" => true,
                "default" => false,
                other => return Err(format!("--include: ids or default, not {other}")),
            };
            continue;
        }
        let v = value.parse::<usize>().map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--tenants" => args.tenants = v,
            "--per-tenant" => args.per_tenant = v,
            "--dim" => args.dim = v,
            "--searches" => args.searches = v,
            "--rounds" => args.rounds = v.max(1),
            "--storage-cache-mib" => args.storage_cache_bytes = Some(v as u64 * (1 << 20)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

struct Fleet {
    _dir: tempfile::TempDir,
    engine: Engine,
    scopes: Vec<TenantScope>,
    collection: CollectionName,
    ids_only: bool,
}

/// An engine in a temporary directory with `tenants` tenants of `per_tenant` vectors each.
fn fleet(
    args: &Args,
    tenants: usize,
    spec: &ClusterSpec,
) -> Result<Fleet, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = EngineConfig::default();
    if let Some(bytes) = args.storage_cache_bytes {
        config.storage_cache_bytes = bytes;
    }
    let engine = Engine::open(dir.path(), config)?;
    let collection = CollectionName::parse("vec")?;
    let req = RequestScope::default();
    let mut scopes = Vec::with_capacity(tenants);
    let t = Instant::now();
    for t_no in 0..tenants {
        let id = TenantId::parse(format!("t{t_no}"))?;
        engine.create_tenant(&OperatorScope::for_tests(), &id, None)?;
        let grant = Grant {
            permissions: Permissions::of(&[Permission::Read, Permission::Write, Permission::Admin]),
            user_tokens: None,
            domains: None,
        };
        let scope = TenantScope::for_tests(&engine.tenant_meta(&id)?, grant);
        engine.create_collection(&scope, &collection, args.dim as u32, Metric::L2)?;
        let data = spec.sample(args.per_tenant, 1000 + t_no as u64);
        for (b, chunk) in data.chunks(BATCH).enumerate() {
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
        scopes.push(scope);
        if (t_no + 1) % 100 == 0 {
            eprintln!(
                "  {} tenants written, {:.1} s",
                t_no + 1,
                t.elapsed().as_secs_f64()
            );
        }
    }
    let write_s = t.elapsed().as_secs_f64();
    let fleet = Fleet {
        _dir: dir,
        engine,
        scopes,
        collection,
        ids_only: args.ids_only,
    };
    let t = Instant::now();
    let warm_query = spec.sample(1, 7).remove(0);
    for scope in &fleet.scopes {
        fleet.search(scope, &warm_query);
    }
    eprintln!(
        "{tenants} tenant(s) x {} vectors: written in {write_s:.1} s, indexes warmed in {:.1} s",
        args.per_tenant,
        t.elapsed().as_secs_f64()
    );
    Ok(fleet)
}

impl Fleet {
    fn search(&self, scope: &TenantScope, q: &[f32]) -> usize {
        let s = SearchRequest {
            vector: Some(q.to_vec()),
            k: K,
            modality: Some(self.collection.clone()),
            include: self.ids_only.then(Vec::new),
            ..Default::default()
        };
        let r = self
            .engine
            .search(scope, &RequestScope::default(), &s)
            .expect("search");
        assert_eq!(r.hits.len(), K, "fewer than k hits");
        r.hits.len()
    }
}

struct Stats {
    p50_us: f64,
    mean_us: f64,
    p99_us: f64,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| us(samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]);
    Stats {
        p50_us: at(0.50),
        mean_us: samples.iter().copied().map(us).sum::<f64>() / samples.len() as f64,
        p99_us: at(0.99),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let spec = ClusterSpec::new(args.dim, 100, 42);
    let queries = spec.sample(args.searches, 43);

    let one = fleet(&args, 1, &spec)?;
    let many = fleet(&args, args.tenants, &spec)?;

    // The raw vectors again, one heap copy per tenant, for the kernel-only series.
    let raw: Vec<Vec<f32>> = (0..args.tenants)
        .map(|t| spec.sample(args.per_tenant, 1000 + t as u64).concat())
        .collect();
    let raw_scan = |data: &[f32], q: &[f32]| {
        let rows = data
            .chunks_exact(args.dim)
            .enumerate()
            .map(|(i, v)| (i as u32, v));
        exact_top_k(IndexMetric::L2, q, rows, K).len()
    };

    let mut rng = StdRng::seed_from_u64(44);
    let per_round = args.searches.div_ceil(args.rounds);
    let mut times: [Vec<Duration>; 5] = Default::default();
    for round in 0..args.rounds {
        let qs = queries.iter().skip(round * per_round).take(per_round);
        // Rotate which series goes first, so none always follows the same one.
        for i in 0..times.len() {
            let series = (i + round) % times.len();
            for q in qs.clone() {
                let t = Instant::now();
                match series {
                    0 => std::hint::black_box(one.search(&one.scopes[0], q)),
                    1 => {
                        let scope = &many.scopes[rng.random_range(0..many.scopes.len())];
                        std::hint::black_box(many.search(scope, q))
                    }
                    2 => std::hint::black_box(many.search(&many.scopes[0], q)),
                    3 => std::hint::black_box(raw_scan(&raw[0], q)),
                    _ => std::hint::black_box(raw_scan(&raw[rng.random_range(0..raw.len())], q)),
                };
                times[series].push(t.elapsed());
            }
        }
    }
    let n = times[0].len();
    let [a, b, c, d, e] = times.map(stats);
    let names = [
        ("one_tenant", &a),
        ("many_tenants_random", &b),
        ("many_engine_one_tenant", &c),
        ("raw_scan_one_copy", &d),
        ("raw_scan_random_copy", &e),
    ];
    for (series, s) in names {
        println!(
            "{{\"bench\":\"tenant_overhead\",\"series\":\"{series}\",\"tenants\":{},\"per_tenant\":{},\"dim\":{},\"searches\":{n},\"p50_us\":{:.1},\"mean_us\":{:.1},\"p99_us\":{:.1}}}",
            if series == "one_tenant" {
                1
            } else {
                args.tenants
            },
            args.per_tenant,
            args.dim,
            s.p50_us,
            s.mean_us,
            s.p99_us
        );
    }
    for (label, x, y) in [
        ("many_tenants_random/one_tenant", &b, &a),
        ("many_engine_one_tenant/one_tenant", &c, &a),
        ("raw_scan_random_copy/raw_scan_one_copy", &e, &d),
    ] {
        println!(
            "{{\"bench\":\"tenant_overhead\",\"ratio\":\"{label}\",\"p50\":{:.3},\"mean\":{:.3},\"p99\":{:.3}}}",
            x.p50_us / y.p50_us,
            x.mean_us / y.mean_us,
            x.p99_us / y.p99_us
        );
    }
    // The engine's own share: each engine series minus the bare scan over the same memory
    // (a random copy for the random tenant, one copy for the one tenant), so the cost of cold
    // vectors, which no engine change removes, is taken out of both sides.
    let own = |engine: &Stats, scan: &Stats| engine.p50_us - scan.p50_us;
    println!(
        "{{\"bench\":\"tenant_overhead\",\"engine_share_p50_us\":{{\"random\":{:.1},\"one\":{:.1}}},\"ratio\":{:.3}}}",
        own(&b, &e),
        own(&a, &d),
        own(&b, &e) / own(&a, &d)
    );
    Ok(())
}
