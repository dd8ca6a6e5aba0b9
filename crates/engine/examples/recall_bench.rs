//! Recall with spreading activation against search alone, on the synthetic multi-hop set of
//! `tests/common/multihop.rs`: recall@10 by hop count, and the latency of `Engine::recall` at
//! depth 1, 2 and 3.
//!
//! Usage: `cargo run --release -p strata-engine --example recall_bench -- [--sessions 10000]
//! [--turns 10] [--noise 4] [--dim 32] [--questions 100]`. The defaults give 100,000 records
//! with ~5 outgoing links each (one `next`, four `related`). One thread, warm (an untimed pass
//! first). Prints JSON lines.

#[path = "../tests/common/multihop.rs"]
mod multihop;

use std::time::Instant;

use serde_json::json;
use strata_engine::{Engine, EngineConfig};
use strata_types::{RecallParams, Relation, RequestScope, SearchRequest};

struct Args {
    sessions: usize,
    turns: usize,
    noise: usize,
    dim: usize,
    questions: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sessions: 10_000,
        turns: 10,
        noise: 4,
        dim: 32,
        questions: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let v = value.parse::<usize>().map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--sessions" => args.sessions = v,
            "--turns" => args.turns = v.max(4),
            "--noise" => args.noise = v,
            "--dim" => args.dim = v,
            "--questions" => args.questions = v.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// One timed call on a question's vector.
type Query<'a> = dyn Fn(&[f32]) -> Result<(), Box<dyn std::error::Error>> + 'a;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let engine = Engine::open(dir.path(), EngineConfig::default())?;
    let t = Instant::now();
    let m = multihop::build(
        &engine,
        "bench",
        args.sessions,
        args.turns,
        args.noise,
        args.dim,
        args.questions,
        42,
    );
    // The first search loads the tenant's indexes and queues its HNSW graph; wait for it, so
    // searches are measured on the graph rather than on exact scans.
    let probe = SearchRequest {
        vector: Some(m.questions[0].0.clone()),
        k: 10,
        modality: Some(m.collection.clone()),
        ..Default::default()
    };
    engine.search(&m.scope, &RequestScope::default(), &probe)?;
    engine.wait_for_graph_builds();
    println!(
        "{}",
        json!({"records": args.sessions * args.turns, "links_per_record": 1 + args.noise,
            "dim": args.dim, "build_s": t.elapsed().as_secs_f64()})
    );
    let req = RequestScope::default();
    let search = |q: &[f32]| SearchRequest {
        vector: Some(q.to_vec()),
        k: 10,
        modality: Some(m.collection.clone()),
        include: Some(vec![]),
        ..Default::default()
    };
    let next = Relation::parse("next")?;
    let settings: Vec<(&str, RecallParams)> = vec![
        ("defaults", RecallParams::default()),
        (
            "seeds 1",
            RecallParams {
                seeds: Some(1),
                ..Default::default()
            },
        ),
        (
            "seeds 1, relations [next]",
            RecallParams {
                seeds: Some(1),
                relations: Some(vec![next]),
                ..Default::default()
            },
        ),
    ];
    // Quality: recall@10 by hops, search alone and each setting.
    let mut by_search = [0usize; 3];
    let mut per_hop = [0usize; 3];
    for (q, answer, hops) in &m.questions {
        let found = engine.search(&m.scope, &req, &search(q))?;
        per_hop[*hops as usize - 1] += 1;
        by_search[*hops as usize - 1] += found.hits.iter().any(|h| &h.id == answer) as usize;
    }
    let rate = |hits: [usize; 3]| -> Vec<f64> {
        hits.iter()
            .zip(per_hop)
            .map(|(h, n)| *h as f64 / n.max(1) as f64)
            .collect()
    };
    println!(
        "{}",
        json!({"recall@10": "search alone", "by_hops_1_2_3": rate(by_search)})
    );
    for (name, p) in &settings {
        let mut hits = [0usize; 3];
        for (q, answer, hops) in &m.questions {
            let r = engine.recall(&m.scope, &req, &search(q), p)?;
            hits[*hops as usize - 1] += r.hits.iter().any(|h| &h.record.id == answer) as usize;
        }
        println!(
            "{}",
            json!({"recall@10": format!("recall, {name}"), "by_hops_1_2_3": rate(hits)})
        );
    }
    // Latency: search, then recall at depth 1, 2, 3, with the defaults and with threshold 0
    // (every activation kept: the most work a depth can cost).
    let time = |f: &Query| -> Result<(f64, f64, f64), Box<dyn std::error::Error>> {
        for (q, _, _) in &m.questions {
            f(q)?;
        }
        let mut us = Vec::with_capacity(m.questions.len());
        for (q, _, _) in &m.questions {
            let t = Instant::now();
            f(q)?;
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        us.sort_by(f64::total_cmp);
        let mean = us.iter().sum::<f64>() / us.len() as f64;
        Ok((percentile(&us, 0.5), percentile(&us, 0.99), mean))
    };
    let (p50, p99, mean) = time(&|q| {
        engine.search(&m.scope, &req, &search(q))?;
        Ok(())
    })?;
    println!(
        "{}",
        json!({"latency": "search k=10", "p50_us": p50, "p99_us": p99, "mean_us": mean})
    );
    for (name, threshold) in [("defaults", 0.05f32), ("threshold 0", 0.0)] {
        for depth in 1..=3u32 {
            let p = RecallParams {
                depth: Some(depth),
                threshold,
                ..Default::default()
            };
            let (p50, p99, mean) = time(&|q| {
                engine.recall(&m.scope, &req, &search(q), &p)?;
                Ok(())
            })?;
            println!(
                "{}",
                json!({"latency": format!("recall k=10, {name}"), "depth": depth,
                    "p50_us": p50, "p99_us": p99, "mean_us": mean})
            );
        }
    }
    Ok(())
}
