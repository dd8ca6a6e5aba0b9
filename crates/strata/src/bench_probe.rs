//! The victim's probe in `strata bench noisy`: tenant B's steady searches, sent from an OS
//! thread and runtime of their own, each asking the server for its stage durations
//! (`X-Strata-Timing`, answered only by a server with `server.stage_timing` on), and the
//! breakdown of where B's slowest requests spent their time.
//!
//! Each request's latency counts from the moment it was sent. How late that was against its
//! schedule is reported beside it (`late`), so a probe that falls behind cannot hide a stall
//! (coordinated omission) without it showing; it is not added to the latency, because most
//! of it is the timer's own granularity (about a millisecond), which would inflate every
//! latency, alone and flooded, and flatter their ratio. After a missed tick the schedule is
//! delayed, not compressed.
//!
//! The probe owns its thread, runtime and HTTP connections so that what it times is the
//! server, not this process: the flood's clients run on another thread and runtime, and no
//! connection of the probe is driven by a task on any runtime but its own.

use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::time::MissedTickBehavior;

use crate::bench::{percentile, search_bodies};
use crate::client::Client;

/// The request header asking for stage durations, and the answer's header carrying them.
const TIMING_HEADER: &str = "x-strata-timing";
const SERVER_TIMING: &str = "server-timing";

/// The server's stages, in order, as the breakdown's columns; `total` follows them in a
/// sample.
const STAGES: [&str; 8] = [
    "parse", "admit", "body", "prepare", "queue", "job", "durable", "reply",
];
const TOTAL: usize = STAGES.len();

/// One of B's searches: its latency from its send, how late that send was, and the server's stage
/// durations in milliseconds (`STAGES`, then `total`; 0 for a stage it did not report), in a
/// fixed array: a long run keeps many thousands of samples.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub latency: Duration,
    /// How long after its scheduled time it was sent.
    late: Duration,
    stages: [f32; STAGES.len() + 1],
    /// Whether the server sent its timings at all.
    timed: bool,
}

impl Sample {
    fn stage(&self, i: usize) -> f64 {
        f64::from(self.stages[i])
    }

    /// Time the probe waited that the server's timeline does not cover: the request on the
    /// wire and in the socket until the server's async threads first read it, the answer's
    /// write and the way back, and the probe's own reading of the answer.
    fn outside_ms(&self) -> f64 {
        (self.latency.as_secs_f64() * 1000.0 - self.stage(TOTAL)).max(0.0)
    }
}

/// Parses a `Server-Timing` value (`name;dur=ms, …`) into `STAGES` and `total`; unknown
/// names and parts that are not durations are skipped. `None` when nothing was recognised.
fn parse_server_timing(value: &str) -> Option<[f32; STAGES.len() + 1]> {
    let mut stages = [0f32; STAGES.len() + 1];
    let mut any = false;
    for part in value.split(',') {
        let Some((name, rest)) = part.trim().split_once(";dur=") else {
            continue;
        };
        let Ok(ms) = rest.trim().parse::<f32>() else {
            continue;
        };
        let slot = match STAGES.iter().position(|s| *s == name) {
            Some(i) => i,
            None if name == "total" => TOTAL,
            None => continue,
        };
        stages[slot] = ms;
        any = true;
    }
    any.then_some(stages)
}

/// How long one of B's requests may take before it counts as failed.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
                let client =
                    std::sync::Arc::new(Client::with_timeout(&server, Some(key), REQUEST_TIMEOUT)?);
                let bodies = search_bodies(1_000_000, 1024);
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / qps));
                // After a stall, go on at the set rate from then on rather than sending the
                // missed requests in a burst; the stall itself is counted in the latency of the
                // request that was late (measured from its scheduled time).
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let end = Instant::now() + Duration::from_secs(seconds);
                let mut tasks = Vec::new();
                let mut n = 0usize;
                while Instant::now() < end {
                    let scheduled = tick.tick().await.into_std();
                    n += 1;
                    let (client, body) = (client.clone(), bodies[n % bodies.len()].clone());
                    // One task per request, so a slow answer does not delay the next send.
                    tasks.push(tokio::spawn(async move {
                        probe_once(&client, body, scheduled).await
                    }));
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

/// One search, its latency counted from its send, its lateness from `scheduled`.
async fn probe_once(client: &Client, body: String, scheduled: Instant) -> anyhow::Result<Sample> {
    let sent = Instant::now();
    let req = client
        .request(Method::POST, "/v1/search")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMING_HEADER, "1")
        .body(body);
    let res = client.send(req).await?;
    let stages = res
        .headers()
        .get(SERVER_TIMING)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_server_timing);
    res.bytes().await?;
    Ok(Sample {
        latency: sent.elapsed(),
        late: sent.saturating_duration_since(scheduled),
        stages: stages.unwrap_or_default(),
        timed: stages.is_some(),
    })
}

/// Prints, for each phase, the mean stage durations of all of B's requests and of its
/// slowest 1 % (at or above its p99), then each of the flooded phase's slowest requests. When
/// the server sent no timings, says how to turn them on instead.
pub(crate) fn print_breakdown(phases: &[(&str, &[Sample])]) {
    println!();
    if !phases
        .iter()
        .any(|(_, samples)| samples.iter().any(|s| s.timed))
    {
        println!(
            "No stage breakdown: the server sent no stage timings. They are off by default \
             (they are side channels between tenants); start the server with \
             `STRATA__SERVER__STAGE_TIMING=true` (or `stage_timing = true` under `[server]`) \
             to see where B's time went."
        );
        return;
    }
    println!(
        "Where B's time went (ms; server stages from its Server-Timing, `outside` = the \
         probe's latency minus the server's total: wire, socket wait until the server's async \
         threads read the request, the answer's write; `late` = how long after its scheduled \
         time the probe sent it, not part of the latency):"
    );
    println!();
    println!(
        "| B's searches | n | latency | {} | outside | late |",
        STAGES.join(" | ")
    );
    println!("|---|---|---|{}---|---|", "---|".repeat(STAGES.len()));
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
        println!("| latency | {} | outside | late |", STAGES.join(" | "));
        println!("|---|{}---|---|", "---|".repeat(STAGES.len()));
        for s in samples.iter().filter(|s| s.latency >= p99).take(12) {
            let cells: Vec<String> = (0..STAGES.len())
                .map(|i| format!("{:.2}", s.stage(i)))
                .collect();
            println!(
                "| {:.2} | {} | {:.2} | {:.2} |",
                s.latency.as_secs_f64() * 1000.0,
                cells.join(" | "),
                s.outside_ms(),
                s.late.as_secs_f64() * 1000.0
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
    let cells: Vec<String> = (0..STAGES.len())
        .map(|i| format!("{:.2}", mean(&|s| s.stage(i))))
        .collect();
    println!(
        "| {label} | {} | {:.2} | {} | {:.2} | {:.2} |",
        samples.len(),
        mean(&|s| s.latency.as_secs_f64() * 1000.0),
        cells.join(" | "),
        mean(&|s| s.outside_ms()),
        mean(&|s| s.late.as_secs_f64() * 1000.0)
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
    fn server_timing_values_parse_into_their_columns_and_skip_what_is_not_a_duration() {
        let parsed =
            parse_server_timing("parse;dur=0.100, admit;dur=0.05, junk, odd;dur=9, total;dur=1.5")
                .expect("recognised");
        let mut want = [0f32; STAGES.len() + 1];
        (want[0], want[1], want[TOTAL]) = (0.1, 0.05, 1.5);
        assert_eq!(parsed, want);
        let s = Sample {
            latency: Duration::from_millis(2),
            late: Duration::from_millis(1),
            stages: parsed,
            timed: true,
        };
        assert!((s.outside_ms() - 0.5).abs() < 1e-6);
        assert_eq!(s.stage(4), 0.0, "no queue reported");
        assert_eq!(parse_server_timing("junk, other;dur=x"), None);
    }
}
