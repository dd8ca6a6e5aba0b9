//! Adaptive reranking figures: the cost of `rerank: "adaptive"` per search against the same
//! plain search on the same data, the latency of one feedback (a durable, audited write), and
//! the estimated memory of one (tenant, domain) namespace by its number of pheromones.
//!
//! Run: `cargo bench -p strata-engine --bench adaptive` (env `RECORDS`, `QUERIES`,
//! `FEEDBACK` scale it; defaults 20,000 records of 384 dimensions, 2,000 queries per variant,
//! 500 feedbacks of 5 used and 10 shown ids with a context vector).

use std::time::{Duration, Instant};

use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig};
use strata_types::{
    CollectionName, FeedbackRequest, NewRecord, RecordId, RequestScope, Rerank, SearchRequest,
    TenantId,
};

const DIM: usize = 384;
const CLUSTERS: usize = 50;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
    println!(
        "{what}: n = {}, mean = {:.3} ms, p50 = {:.3} ms, p99 = {:.3} ms",
        samples.len(),
        mean * 1000.0,
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
    );
    mean * 1000.0
}

fn id(i: usize) -> RecordId {
    RecordId::parse(format!("r{i}")).expect("id")
}

fn main() {
    let (records, queries, feedbacks) = (
        env("RECORDS", 20_000),
        env("QUERIES", 2000),
        env("FEEDBACK", 500),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), EngineConfig::default()).expect("open");
    let tenant = TenantId::parse("bench").expect("id");
    engine
        .create_tenant(&OperatorScope::for_tests(), &tenant, None)
        .expect("tenant");
    let grant = Grant {
        // `all_principals`: the index and adaptive figures count every principal's records.
        permissions: Permissions::of(&[
            Permission::Read,
            Permission::Write,
            Permission::AllPrincipals,
        ]),
        user_tokens: None,
        domains: None,
    };
    let scope = TenantScope::for_tests(&engine.tenant_meta(&tenant).expect("meta"), grant);
    let req = RequestScope::default();
    let text = CollectionName::parse("text").expect("name");
    let vectors = strata_index::testdata::clustered(records, DIM, CLUSTERS, 7);
    for (chunk_no, chunk) in vectors.chunks(1000).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                id: Some(id(chunk_no * 1000 + i)),
                modality: Some(text.clone()),
                vector: Some(v.clone()),
                ..Default::default()
            })
            .collect();
        engine.put(&scope, &req, batch).expect("put");
    }
    let qs = strata_index::testdata::queries(queries, DIM, CLUSTERS, 7, 11);
    let search = |q: &Vec<f32>, k: usize, rerank: Option<Rerank>| SearchRequest {
        vector: Some(q.clone()),
        k,
        modality: Some(text.clone()),
        rerank,
        include: Some(vec![]),
        ..Default::default()
    };
    // Load the tenant and build its graph before anything is timed.
    engine
        .search(&scope, &req, &search(&qs[0], 10, None))
        .expect("search");
    engine.wait_for_graph_builds();

    // Feedback as an agent gives it: the ids it used among those it was shown, in context.
    let mut fb = Vec::with_capacity(feedbacks);
    for n in 0..feedbacks {
        let q = &qs[n % qs.len()];
        let hits = engine
            .search(&scope, &req, &search(q, 10, None))
            .expect("search")
            .hits;
        let shown: Vec<RecordId> = hits.iter().map(|h| h.id.clone()).collect();
        let f = FeedbackRequest {
            ids: shown.iter().skip(n % 3).take(5).cloned().collect(),
            shown,
            vector: Some(q.clone()),
            modality: Some(text.clone()),
            ..Default::default()
        };
        let t = Instant::now();
        engine.feedback(&scope, &req, &f).expect("feedback");
        fb.push(t.elapsed());
    }
    report("feedback (durable, audited)", fb);

    for k in [10, 50] {
        let pool = (k * 4).max(50);
        let variants = [(k, None), (pool, None), (k, Some(Rerank::Adaptive))];
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
        // Interleaved, in an order that rotates per query, so drift in the shared machine's
        // load and cache warmth from the previous variant hit every variant alike.
        for (i, q) in qs.iter().enumerate() {
            for j in 0..variants.len() {
                let v = (i + j) % variants.len();
                let (kk, rerank) = variants[v];
                let t = Instant::now();
                engine
                    .search(&scope, &req, &search(q, kk, rerank))
                    .expect("search");
                samples[v].push(t.elapsed());
            }
        }
        let mut it = samples.into_iter();
        let p = report(&format!("plain search, k = {k}"), it.next().expect("plain"));
        let wide = report(
            &format!("plain search, k = {pool} (the pool)"),
            it.next().expect("pool"),
        );
        let a = report(
            &format!("adaptive search, k = {k} (pool {pool})"),
            it.next().expect("adaptive"),
        );
        println!(
            "  adaptive vs plain k = {k}: {:+.3} ms per search ({:+.0} %); of which reranking itself (vs plain k = {pool}): {:+.3} ms",
            a - p,
            (a / p - 1.0) * 100.0,
            a - wide
        );
    }

    // Memory of one namespace by its pheromones (plus one 384-dimension narrative).
    for n in [0usize, 1000, 10_000] {
        let domain = format!("mem{n}");
        let req =
            serde_json::from_value::<RequestScope>(serde_json::json!({"memory_domain": domain}))
                .expect("scope");
        let batch: Vec<NewRecord> = (0..n.max(1))
            .map(|i| NewRecord {
                id: Some(RecordId::parse(format!("{domain}-{i}")).expect("id")),
                modality: Some(text.clone()),
                vector: Some(vectors[i % vectors.len()].clone()),
                ..Default::default()
            })
            .collect();
        for chunk in batch.chunks(1000) {
            engine.put(&scope, &req, chunk.to_vec()).expect("put");
        }
        let ids: Vec<RecordId> = batch.iter().take(n).filter_map(|r| r.id.clone()).collect();
        for chunk in ids.chunks(1000) {
            let f = FeedbackRequest {
                ids: chunk.to_vec(),
                ..Default::default()
            };
            engine.feedback(&scope, &req, &f).expect("feedback");
        }
        let f = FeedbackRequest {
            vector: Some(qs[0].clone()),
            modality: Some(text.clone()),
            ..Default::default()
        };
        engine.feedback(&scope, &req, &f).expect("feedback");
        let stats = engine.adaptive_stats(&scope).expect("stats");
        let s = stats
            .iter()
            .find(|s| s.memory_domain.as_str() == domain)
            .expect("namespace");
        println!(
            "namespace with {} pheromones and {} narrative: {} bytes ({:.0} bytes per pheromone beyond the narrative)",
            s.pheromones,
            s.narratives,
            s.bytes,
            if n > 0 {
                (s.bytes as f64 - base_bytes(&stats)) / n as f64
            } else {
                0.0
            }
        );
    }
}

/// The bytes of the namespace with the narrative alone.
fn base_bytes(stats: &[strata_types::AdaptiveNamespaceStats]) -> f64 {
    stats
        .iter()
        .find(|s| s.memory_domain.as_str() == "mem0")
        .map_or(0.0, |s| s.bytes as f64)
}
