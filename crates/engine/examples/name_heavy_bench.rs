//! Resident memory per record of a name-heavy tenant: every record has its own run id and its
//! own user token (a run per conversation, a token per end user), small vectors (`DIM`,
//! default 8) and a short text, so what a record costs beyond its vector is mostly its names.
//!
//! Two steps, each its own process so that the second measures a load into a fresh heap:
//! `name_heavy_bench write DIR` writes `RECORDS` (default 100000) records and saves the
//! indexes; `name_heavy_bench load DIR` opens the engine, loads the tenant and prints the
//! growth of the resident set (`VmRSS`) per record, and the engine's own estimate.
//!
//! Run: `cargo run --release -p strata-engine --example name_heavy_bench -- write DIR`, then
//! `... -- load DIR` (twice: the first load after a format change rebuilds from the records).

use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig};
use strata_types::{
    CollectionName, Metric, NewRecord, RecordId, RequestScope, RunId, TenantId, UserToken,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` of this process in bytes (Linux).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn scope(engine: &Engine) -> TenantScope {
    let grant = Grant {
        permissions: Permissions::of(&[
            Permission::Read,
            Permission::Write,
            Permission::Admin,
            Permission::AllPrincipals,
        ]),
        user_tokens: None,
        domains: None,
    };
    let id = TenantId::parse("names").expect("id");
    TenantScope::for_tests(&engine.tenant_meta(&id).expect("meta"), grant)
}

fn name() -> CollectionName {
    CollectionName::parse("notes").expect("name")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, dir) = match args.as_slice() {
        [m, d] if m == "write" || m == "load" => (m.as_str(), std::path::PathBuf::from(d)),
        _ => {
            eprintln!("usage: name_heavy_bench write|load DIR");
            std::process::exit(2);
        }
    };
    let records = env("RECORDS", 100_000);
    let dim = env("DIM", 8);
    let id = TenantId::parse("names").expect("id");
    if mode == "write" {
        let engine = Engine::open(&dir, EngineConfig::default()).expect("open");
        engine
            .create_tenant(&OperatorScope::for_tests(), &id, None)
            .expect("tenant");
        let scope = scope(&engine);
        engine
            .create_collection(&scope, &name(), dim as u32, Metric::Cosine)
            .expect("collection");
        for c in 0..records.div_ceil(1000) {
            let batch = (c * 1000..((c + 1) * 1000).min(records))
                .map(|i| NewRecord {
                    id: Some(RecordId::parse(format!("r{i}")).expect("id")),
                    modality: Some(name()),
                    vector: Some((0..dim).map(|d| ((i * 31 + d * 7) % 97) as f32).collect()),
                    content: Some(format!("note {i} about topic {}", i % 17)),
                    run_id: Some(RunId::parse(format!("conversation-{i:08}")).expect("run")),
                    user_tokens: Some(vec![
                        UserToken::parse(format!("user:end-user-{i:08}")).expect("token"),
                    ]),
                    ..Default::default()
                })
                .collect();
            engine
                .put(&scope, &RequestScope::default(), batch)
                .expect("put");
        }
        engine.index_stats(&scope).expect("load");
        engine.wait_for_graph_builds();
        engine.persist_indexes().expect("persist");
        println!("wrote {records} records of {dim} dims, each with its own run and token");
        return;
    }
    let engine = Engine::open(&dir, EngineConfig::default()).expect("open");
    let scope = scope(&engine);
    let before = rss();
    engine.index_stats(&scope).expect("load");
    let grown = rss().saturating_sub(before);
    let estimate = engine
        .residency(&OperatorScope::for_tests(), &id)
        .expect("residency")
        .resident_bytes;
    println!(
        "{records} records x {dim} dims: rss growth {:.1} MB = {:.0} B/record \
         (raw vectors {:.0} B/record); estimated resident {:.0} B/record",
        grown as f64 / 1e6,
        grown as f64 / records as f64,
        (dim * 4) as f64,
        estimate as f64 / records as f64
    );
}
