//! Text (BM25) search latency through `Engine::search` in a tenant shared by several principals
//! and domains: the cost of scope-exact statistics, for callers with wide and narrow scopes.
//!
//! Usage: `cargo run --release -p strata-engine --example text_scope_bench -- [--n 50000]
//! [--queries 200] [--rounds 5]`.
//!
//! Data (seeded, so identical between runs and builds): `n` text-only records in the default
//! `text` collection of one tenant, each 8–31 words drawn from a skewed vocabulary of 5 000
//! words (`w0` common … `w4999` rare). Domains: `default` 60 %, `support` 20 %, `dialog` and
//! `billing` 10 % each. Principals: 30 % tenant-shared, otherwise one of `u:0` … `u:7` (every
//! tenth of those also `u:8`). TTL: 5 % of records already expired, 5 % expiring in a day.
//! Queries: 1–3 words from the same vocabulary. k = 10, one thread, warm (one untimed pass per
//! caller). Each round times every caller over all queries, rotating which goes first, so load
//! from other processes hits them alike. Prints one JSON line per caller, with the number of
//! records it may see (`Engine::count`).
//!
//! The source uses only the engine's public API, so the same file measures any version.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig};
use strata_types::{
    Domain, NewRecord, RecordId, RequestScope, SearchRequest, TenantId, TokenSelector, UserMatch,
    UserToken, now_millis,
};

const VOCABULARY: usize = 5000;
const BATCH: usize = 1000;
const DOMAINS: [(&str, f64); 4] = [
    ("default", 0.6),
    ("support", 0.8),
    ("dialog", 0.9),
    ("billing", 1.0),
];

struct Args {
    n: usize,
    queries: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        n: 50_000,
        queries: 200,
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let v = value.parse::<usize>().map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--n" => args.n = v,
            "--queries" => args.queries = v.max(1),
            "--rounds" => args.rounds = v.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// A word, common ones far more likely (the cube of a uniform draw skews towards `w0`).
fn word(rng: &mut StdRng) -> String {
    let u: f64 = rng.random();
    format!("w{}", (u * u * u * VOCABULARY as f64) as usize)
}

fn words(rng: &mut StdRng, n: usize) -> String {
    (0..n).map(|_| word(rng)).collect::<Vec<_>>().join(" ")
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

type BoxError = Box<dyn std::error::Error>;

fn token(name: &str) -> Result<UserToken, BoxError> {
    Ok(UserToken::parse(name)?)
}

/// Writes the records, one durable batch of up to `BATCH` per domain at a time.
fn load(engine: &Engine, scope: &TenantScope, n: usize) -> Result<(), BoxError> {
    let mut rng = StdRng::seed_from_u64(42);
    let now = now_millis();
    let mut pending: Vec<Vec<NewRecord>> = vec![Vec::new(); DOMAINS.len()];
    // The records drawn to be expired are written a second ahead of their batch (a write
    // refuses a past expiry), and the load waits that out at its end.
    let last_expiry = std::cell::Cell::new(0);
    let flush = |d: usize, mut records: Vec<NewRecord>| -> Result<(), BoxError> {
        let soon = now_millis() + 1_000;
        for r in records.iter_mut().filter(|r| r.expires_at == Some(EXPIRED)) {
            r.expires_at = Some(soon);
            last_expiry.set(soon);
        }
        let req = RequestScope {
            memory_domain: Some(Domain::parse(DOMAINS[d].0)?),
            ..Default::default()
        };
        engine.put(scope, &req, records)?;
        Ok(())
    };
    for i in 0..n {
        let draw: f64 = rng.random();
        let d = DOMAINS
            .iter()
            .position(|(_, upto)| draw < *upto)
            .unwrap_or(0);
        let tokens = if rng.random_bool(0.3) {
            Vec::new()
        } else {
            let mut t = vec![token(&format!("u:{}", rng.random_range(0..8)))?];
            if rng.random_bool(0.1) {
                t.push(token("u:8")?);
            }
            t
        };
        let ttl: f64 = rng.random();
        let expires_at = match ttl {
            x if x < 0.05 => Some(EXPIRED),
            x if x < 0.10 => Some(now + 86_400_000),
            _ => None,
        };
        let len = rng.random_range(8..32);
        pending[d].push(NewRecord {
            id: Some(RecordId::parse(format!("r{i}"))?),
            content: Some(words(&mut rng, len)),
            user_tokens: Some(tokens),
            expires_at,
            ..Default::default()
        });
        if pending[d].len() == BATCH {
            flush(d, std::mem::take(&mut pending[d]))?;
        }
    }
    for (d, records) in pending.into_iter().enumerate() {
        if !records.is_empty() {
            flush(d, records)?;
        }
    }
    while now_millis() <= last_expiry.get() {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Marks a drawn record as one to be expired when measured (see `load`).
const EXPIRED: strata_types::Millis = 0;

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let engine = Engine::open(dir.path(), EngineConfig::default())?;
    let tenant = TenantId::parse("bench")?;
    engine.create_tenant(&OperatorScope::for_tests(), &tenant, None)?;
    let meta = engine.tenant_meta(&tenant)?;
    let full = TenantScope::for_tests(
        &meta,
        Grant {
            permissions: Permissions::of(&[
                Permission::Read,
                Permission::Write,
                Permission::AllPrincipals,
            ]),
            user_tokens: None,
            domains: None,
        },
    );
    let support_key = TenantScope::for_tests(
        &meta,
        Grant {
            permissions: Permissions::of(&[Permission::Read]),
            user_tokens: None,
            domains: Some(vec![Domain::parse("support")?]),
        },
    );
    let t = Instant::now();
    load(&engine, &full, args.n)?;
    let put_s = t.elapsed().as_secs_f64();

    let mut rng = StdRng::seed_from_u64(43);
    let queries: Vec<String> = (0..args.queries)
        .map(|_| {
            let n = rng.random_range(1..4);
            words(&mut rng, n)
        })
        .collect();
    let user = |m: UserMatch| -> Result<RequestScope, BoxError> {
        Ok(RequestScope {
            user_tokens: Some(TokenSelector::Tokens(vec![token("u:1")?, token("u:8")?])),
            user_match: m,
            ..Default::default()
        })
    };
    let callers: Vec<(&str, &TenantScope, RequestScope)> = vec![
        ("u:1+u:8 any, default domain", &full, user(UserMatch::Any)?),
        ("u:1+u:8 all, default domain", &full, user(UserMatch::All)?),
        (
            "all principals, default domain",
            &full,
            RequestScope {
                user_tokens: Some(TokenSelector::AllPrincipals),
                ..Default::default()
            },
        ),
        (
            "support-only key, shared records",
            &support_key,
            RequestScope::default(),
        ),
    ];
    let request = |q: &String| SearchRequest {
        query: Some(q.clone()),
        k: 10,
        ..Default::default()
    };
    // Warm-up: the first search loads the tenant's indexes.
    let t = Instant::now();
    let mut hits = vec![0usize; callers.len()];
    for (c, (_, scope, req)) in callers.iter().enumerate() {
        for q in &queries {
            hits[c] += engine.search(scope, req, &request(q))?.hits.len();
        }
    }
    eprintln!(
        "n = {}: puts {put_s:.1} s; warm-up incl. index load {:.1} s",
        args.n,
        t.elapsed().as_secs_f64()
    );
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); callers.len()];
    for round in 0..args.rounds {
        for offset in 0..callers.len() {
            let c = (round + offset) % callers.len();
            let (_, scope, req) = &callers[c];
            for q in &queries {
                let s = request(q);
                let t = Instant::now();
                let r = engine.search(scope, req, &s)?;
                lat[c].push(t.elapsed());
                std::hint::black_box(r);
            }
        }
    }
    for (c, (name, scope, req)) in callers.iter().enumerate() {
        let visible = engine.count(scope, req, None)?;
        let l = &mut lat[c];
        let total = l.len();
        let mean = l.iter().copied().map(us).sum::<f64>() / total as f64;
        l.sort();
        let at = |p: f64| us(l[((total as f64 * p) as usize).min(total - 1)]);
        println!(
            "{{\"bench\":\"text_scope\",\"n\":{},\"caller\":\"{name}\",\"visible\":{visible},\"searches\":{total},\"hits_per_query\":{:.2},\"p50_us\":{:.1},\"mean_us\":{mean:.1},\"p99_us\":{:.1}}}",
            args.n,
            hits[c] as f64 / queries.len() as f64,
            at(0.50),
            at(0.99),
        );
    }
    Ok(())
}
