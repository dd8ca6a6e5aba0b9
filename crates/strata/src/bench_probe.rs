//! The victim's probe in `strata bench noisy`: tenant B's steady searches, sent from an OS
//! thread and runtime of their own, each asking the server for its stage durations
//! (`X-Strata-Timing`), and the breakdown of where B's slowest requests spent their time.
//!
//! The probe owns its thread, runtime and HTTP connections so that what it times is the
//! server, not this process: the flood's clients run on another thread and runtime, and no
//! connection of the probe is driven by a task on any runtime but its own.

use std::time::{Duration, Instant};

use reqwest::Method;

use crate::bench::{percentile, search_bodies};
use crate::client::Client;

/// The request header asking for stage durations, and the answer's header carrying them.
const TIMING_HEADER: &str = "x-strata-timing";
const SERVER_TIMING: &str = "server-timing";

/// One of B's searches: its latency as the probe saw it, and the server's stage durations
/// (milliseconds, in the order the server reports them, `total` last).
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub latency: Duration,
    pub stages: Vec<(String, f64)>,
}

impl Sample {
    fn stage(&self, name: &str) -> f64 {
        self.stages
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, ms)| *ms)
    }

    /// Time the probe waited that the server's timeline does not cover: the request on the
    /// wire and in the socket until the server's async threads first read it, the answer's
    /// write and the way back, and the probe's own scheduling.
    fn outside_ms(&self) -> f64 {
        (self.latency.as_secs_f64() * 1000.0 - self.stage("total")).max(0.0)
    }
}

/// Parses a `Server-Timing` value (`name;dur=ms, …`); unknown parts are skipped.
fn parse_server_timing(value: &str) -> Vec<(String, f64)> {
    value
        .split(',')
        .filter_map(|part| {
            let (name, rest) = part.trim().split_once(";dur=")?;
            Some((name.to_owned(), rest.trim().parse().ok()?))
        })
        .collect()
}

/// B's steady searches for `seconds` at `qps`, on a thread and runtime of their own. Returns
/// the successful samples sorted by latency, and the count of failures.
pub(crate) fn steady(
    server: &str,
    key: &str,
    qps: f64,
    seconds: u64,
) -> anyhow::Result<(Vec<Sample>, u64)> {
    let (server, key) = (server.to_owned(), key.to_owned());
    let thread = std::thread::Builder::new().name("probe".into()).spawn(
        move || -> anyhow::Result<(Vec<Sample>, u64)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                // Made here, so its connections are driven by this runtime alone.
                let client = std::sync::Arc::new(Client::new(&server, Some(key))?);
                let bodies = search_bodies(1_000_000, 1024);
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / qps));
                let end = Instant::now() + Duration::from_secs(seconds);
                let mut tasks = Vec::new();
                let mut n = 0usize;
                while Instant::now() < end {
                    tick.tick().await;
                    n += 1;
                    let (client, body) = (client.clone(), bodies[n % bodies.len()].clone());
                    // One task per request, so a slow answer does not delay the next send.
                    tasks.push(tokio::spawn(async move { probe_once(&client, body).await }));
                }
                let (mut ok, mut failed) = (Vec::new(), 0u64);
                for t in tasks {
                    match t.await {
                        Ok(Ok(s)) => ok.push(s),
                        _ => failed += 1,
                    }
                }
                ok.sort_by_key(|s: &Sample| s.latency);
                Ok((ok, failed))
            })
        },
    )?;
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
}

async fn probe_once(client: &Client, body: String) -> anyhow::Result<Sample> {
    let req = client
        .request(Method::POST, "/v1/search")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMING_HEADER, "1")
        .body(body);
    let started = Instant::now();
    let res = client.send(req).await?;
    let stages = res
        .headers()
        .get(SERVER_TIMING)
        .and_then(|v| v.to_str().ok())
        .map(parse_server_timing)
        .unwrap_or_default();
    res.bytes().await?;
    Ok(Sample {
        latency: started.elapsed(),
        stages,
    })
}

/// The server's stages, in order, as the breakdown's columns.
const STAGES: [&str; 7] = ["parse", "admit", "body", "prepare", "queue", "job", "reply"];

/// Prints, for each phase, the mean stage durations of all of B's requests and of its
/// slowest 1 % (at or above its p99), then each of the flooded phase's slowest requests.
pub(crate) fn print_breakdown(phases: &[(&str, &[Sample])]) {
    println!();
    println!(
        "Where B's time went (ms; server stages from its Server-Timing, `outside` = the \
         probe's latency minus the server's total: wire, socket wait until the server's async \
         threads read the request, the answer's write):"
    );
    println!();
    println!(
        "| B's searches | n | latency | {} | outside |",
        STAGES.join(" | ")
    );
    println!("|---|---|---|{}---|", "---|".repeat(STAGES.len()));
    for (name, samples) in phases {
        let p99 = percentile(samples, 0.99).latency;
        let slow: Vec<&Sample> = samples.iter().filter(|s| s.latency >= p99).collect();
        let all: Vec<&Sample> = samples.iter().collect();
        print_mean_row(&format!("{name}, all (mean)"), &all);
        print_mean_row(&format!("{name}, slowest 1% (mean)"), &slow);
    }
    if let Some((name, samples)) = phases.last() {
        let p99 = percentile(samples, 0.99).latency;
        println!();
        println!("{name}: each request at or above p99");
        println!();
        println!("| latency | {} | outside |", STAGES.join(" | "));
        println!("|---|{}---|", "---|".repeat(STAGES.len()));
        for s in samples.iter().filter(|s| s.latency >= p99).take(12) {
            let cells: Vec<String> = STAGES
                .iter()
                .map(|n| format!("{:.2}", s.stage(n)))
                .collect();
            println!(
                "| {:.2} | {} | {:.2} |",
                s.latency.as_secs_f64() * 1000.0,
                cells.join(" | "),
                s.outside_ms()
            );
        }
    }
}

fn print_mean_row(label: &str, samples: &[&Sample]) {
    if samples.is_empty() {
        return;
    }
    let n = samples.len() as f64;
    let mean = |f: &dyn Fn(&Sample) -> f64| samples.iter().map(|s| f(s)).sum::<f64>() / n;
    let cells: Vec<String> = STAGES
        .iter()
        .map(|name| format!("{:.2}", mean(&|s| s.stage(name))))
        .collect();
    println!(
        "| {label} | {} | {:.2} | {} | {:.2} |",
        samples.len(),
        mean(&|s| s.latency.as_secs_f64() * 1000.0),
        cells.join(" | "),
        mean(&|s| s.outside_ms())
    );
}

/// The samples' latencies, for the percentile helpers.
pub(crate) fn latencies(samples: &[Sample]) -> Vec<Duration> {
    samples.iter().map(|s| s.latency).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_values_parse_in_order_and_skip_what_is_not_a_duration() {
        let parsed = parse_server_timing("parse;dur=0.100, admit;dur=0.05, junk, total;dur=1.5");
        assert_eq!(
            parsed,
            vec![
                ("parse".to_owned(), 0.1),
                ("admit".to_owned(), 0.05),
                ("total".to_owned(), 1.5)
            ]
        );
        let s = Sample {
            latency: Duration::from_millis(2),
            stages: parsed,
        };
        assert!((s.outside_ms() - 0.5).abs() < 1e-9);
        assert_eq!(s.stage("queue"), 0.0);
    }
}
