//! What a search across a grant (`include_shared`) costs over a search of the caller's own
//! tenant alone, through `Engine::search`.
//!
//! Usage: `cargo run --release -p strata-engine --example shared_search_bench -- [--n 20000]
//! [--queries 200] [--rounds 3]`.
//!
//! Data (seeded): tenants `org` and `team` (a child of `org`), each with `n` text-only records
//! of 8–31 words from a skewed vocabulary of 5 000 words; `org`'s are in domain `kb`, which it
//! publishes to its children. Queries: 1–3 words, k = 10, one thread, warm. Callers: `own`
//! (team's records only) and `shared` (`"include_shared": "all"`: team's records and org's
//! `kb`, which also writes the two audit rows of the read, one durable commit). Prints one JSON
//! line per caller with mean and p50/p99 in microseconds.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig, IsolationLevel, NewShare};
use strata_types::{Domain, NewRecord, RequestScope, SearchRequest, SharedSelector, TenantId};

const VOCABULARY: usize = 5000;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A word with a skewed (roughly Zipf) frequency.
fn word(rng: &mut StdRng) -> String {
    let u: f64 = rng.random();
    format!(
        "w{}",
        ((VOCABULARY as f64).powf(u) as usize).min(VOCABULARY - 1)
    )
}

fn text(rng: &mut StdRng, min: usize, max: usize) -> String {
    let n = rng.random_range(min..=max);
    (0..n).map(|_| word(rng)).collect::<Vec<_>>().join(" ")
}

fn scope(engine: &Engine, id: &TenantId) -> TenantScope {
    let grant = Grant {
        permissions: Permissions::of(&[Permission::Read, Permission::Write, Permission::Admin]),
        user_tokens: None,
        domains: None,
    };
    TenantScope::for_tests(&engine.tenant_meta(id).expect("tenant"), grant)
}

fn fill(engine: &Engine, s: &TenantScope, domain: &str, n: usize, rng: &mut StdRng) {
    let rs = RequestScope {
        memory_domain: Some(Domain::parse(domain).expect("domain")),
        ..Default::default()
    };
    for start in (0..n).step_by(1000) {
        let batch: Vec<NewRecord> = (start..n.min(start + 1000))
            .map(|_| NewRecord {
                content: Some(text(rng, 8, 31)),
                ..Default::default()
            })
            .collect();
        engine.put(s, &rs, batch).expect("put");
    }
}

fn main() {
    let (n, queries, rounds) = (
        arg("--n", 20_000),
        arg("--queries", 200),
        arg("--rounds", 3),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), EngineConfig::default()).expect("engine");
    let op = OperatorScope::for_tests();
    let (org, team) = (
        TenantId::parse("org").unwrap(),
        TenantId::parse("team").unwrap(),
    );
    engine.create_tenant(&op, &org, None).expect("org");
    engine
        .create_tenant_under(
            &op,
            &team,
            None,
            IsolationLevel::Shared,
            None,
            Some(org.clone()),
        )
        .expect("team");
    let (org_s, team_s) = (scope(&engine, &org), scope(&engine, &team));
    let mut rng = StdRng::seed_from_u64(7);
    fill(&engine, &org_s, "kb", n, &mut rng);
    fill(&engine, &team_s, "default", n, &mut rng);
    let new = NewShare {
        domain: Domain::parse("kb").unwrap(),
        tenants: Vec::new(),
        children: true,
    };
    engine.create_share(&org_s, &new).expect("share");
    let qs: Vec<String> = (0..queries).map(|_| text(&mut rng, 1, 3)).collect();
    let request = |q: &String, shared: bool| SearchRequest {
        query: Some(q.clone()),
        k: 10,
        include_shared: shared.then_some(SharedSelector::All),
        ..Default::default()
    };
    let rs = RequestScope::default();
    for shared in [false, true] {
        for q in &qs {
            engine
                .search(&team_s, &rs, &request(q, shared))
                .expect("warm");
        }
    }
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for i in 0..2 {
            let shared = (i + round) % 2 == 1;
            for q in &qs {
                let t = Instant::now();
                let r = engine
                    .search(&team_s, &rs, &request(q, shared))
                    .expect("search");
                times[shared as usize].push(t.elapsed());
                std::hint::black_box(r);
            }
        }
    }
    for (i, name) in ["own", "shared"].iter().enumerate() {
        let t = &mut times[i];
        t.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let mean = t.iter().map(|d| us(*d)).sum::<f64>() / t.len() as f64;
        println!(
            "{{\"caller\":\"{name}\",\"n_per_tenant\":{n},\"searches\":{},\"mean_us\":{mean:.0},\"p50_us\":{:.0},\"p99_us\":{:.0}}}",
            t.len(),
            us(t[t.len() / 2]),
            us(t[(t.len() * 99 / 100).min(t.len() - 1)]),
        );
    }
}
