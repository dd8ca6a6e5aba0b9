//! `strata bench search` and `strata bench writes`: a closed-loop HTTP load generator for
//! tenant-scoped search and for durable single-record writes, so that over-the-wire figures
//! measure the server rather than a Python client.
//!
//! Each connection is one task with its own keep-alive HTTP/1.1 connection that sends a search,
//! waits for the whole answer, and sends the next. Request bodies are serialised once before
//! the run and answers are read as bytes (only the status is checked), so the client's own work
//! per request is small; it is measured anyway (`getrusage` of this process) and printed beside
//! the figures, so a run whose client saturated a core says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Method;
use serde_json::json;

use crate::bench::{prepare, vector};
use crate::client::Client;

/// Settings of one run.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchArgs {
    /// Connection counts to run, one phase each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub connections: Vec<usize>,
    /// Seconds per phase (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Records (384-dimensional vectors) in the tenant, written before the run if missing.
    #[arg(long, default_value_t = 2000)]
    pub records: usize,
    /// Hits per search.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// What hits carry (`include`), comma-separated, e.g. `content,metadata`; absent: the
    /// server's default. `--include ''` asks for ids and scores only.
    #[arg(long)]
    pub include: Option<String>,
    /// The tenant searched (created and filled on first use); with `--tenants N` above 1,
    /// tenants `<tenant>-000` … are filled and the searches cycle through them.
    #[arg(long, default_value = "bench-search")]
    pub tenant: String,
    /// How many tenants to fill and search, each with `--records` records.
    #[arg(long, default_value_t = 1)]
    pub tenants: usize,
}

impl SearchArgs {
    /// The tenants searched: `tenant` alone, or `tenant-000` … when there are several.
    pub(crate) fn tenant_names(&self) -> Vec<String> {
        tenant_names(&self.tenant, self.tenants)
    }

    /// The `include` list asked for, if any (`--include ''` is the empty list).
    fn include(&self) -> Option<Vec<&str>> {
        self.include
            .as_deref()
            .map(|s| s.split(',').filter(|x| !x.is_empty()).collect())
    }
}

/// Settings of a write run.
#[derive(Debug, Clone, clap::Args)]
pub struct WritesArgs {
    /// Connection counts to run, one phase each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub connections: Vec<usize>,
    /// Seconds per phase (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// The tenant written to (created on first use); with `--tenants N` above 1, tenants
    /// `<tenant>-000` … are created and the writes cycle through them.
    #[arg(long, default_value = "bench-writes")]
    pub tenant: String,
    /// How many tenants to write to.
    #[arg(long, default_value_t = 1)]
    pub tenants: usize,
}

/// `tenant` alone, or `tenant-000` … `tenant-<n-1>` when there are several.
fn tenant_names(tenant: &str, tenants: usize) -> Vec<String> {
    match tenants {
        0 | 1 => vec![tenant.to_owned()],
        n => (0..n).map(|i| format!("{tenant}-{i:03}")).collect(),
    }
}

/// Distinct queries cycled through by every connection.
pub(crate) const QUERIES: usize = 256;

/// How many requests (searches or writes) to prepare for `tenants` tenants: at least
/// [`QUERIES`], and a multiple of `tenants`, so that cycling through them loads every tenant
/// equally (256 over 100 tenants gave the first 56 three queries a cycle and the others two).
fn request_count(tenants: usize) -> usize {
    QUERIES.div_ceil(tenants.max(1)) * tenants.max(1)
}

/// Refuses settings that would measure nothing: no connections, no time, no hits.
fn check_run(connections: &[usize], seconds: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        !connections.is_empty() && connections.iter().all(|c| *c > 0),
        "--connections: each count at least 1"
    );
    anyhow::ensure!(seconds > 0, "--seconds: at least 1");
    Ok(())
}

pub async fn search(admin: Client, args: SearchArgs) -> anyhow::Result<()> {
    check_run(&args.connections, args.seconds)?;
    anyhow::ensure!(args.k > 0, "--k: at least 1");
    anyhow::ensure!(args.tenants > 0, "--tenants: at least 1");
    anyhow::ensure!(args.records > 0, "--records: at least 1");
    let include = args.include();
    let url = format!("{}/v1/search", admin.server());
    let names = args.tenant_names();
    let mut keys = Vec::with_capacity(names.len());
    for name in &names {
        keys.push(prepare(&admin, name, args.records).await?);
    }
    let requests: Arc<Vec<Prepared>> = Arc::new(
        (0..request_count(names.len()))
            .map(|i| {
                let mut body = json!({"vector": vector(5_000_000 + i as u64), "k": args.k});
                if let Some(include) = &include {
                    body["include"] = json!(include);
                }
                Ok(Prepared {
                    url: url.clone(),
                    bearer: Some(keys[i % keys.len()].clone()),
                    body: serde_json::to_vec(&body).context("query body")?,
                })
            })
            .collect::<anyhow::Result<_>>()?,
    );
    println!(
        "searches of {} ({} records each, k = {}, include = {}), {} s per phase",
        describe_tenants(&names),
        args.records,
        args.k,
        args.include
            .as_deref()
            .map_or("default".into(), |s| format!("[{s}]")),
        args.seconds
    );
    drive(requests, &args.connections, args.seconds, "searches").await
}

/// `tenant x` or `100 tenants x-000 … x-099`, for the run's headline.
pub(crate) fn describe_tenants(names: &[String]) -> String {
    match names {
        [one] => format!("tenant {one}"),
        [first, .., last] => format!("{} tenants {first} … {last}", names.len()),
        [] => "no tenant".into(),
    }
}

/// Single-record writes (a 384-dimensional vector and ~200 bytes of text each), every one
/// answered only once durable.
pub async fn writes(admin: Client, args: WritesArgs) -> anyhow::Result<()> {
    check_run(&args.connections, args.seconds)?;
    anyhow::ensure!(args.tenants > 0, "--tenants: at least 1");
    let names = tenant_names(&args.tenant, args.tenants);
    let mut keys = Vec::with_capacity(names.len());
    for name in &names {
        keys.push(prepare(&admin, name, 0).await?);
    }
    let url = format!("{}/v1/memories", admin.server());
    let requests: Arc<Vec<Prepared>> = Arc::new(
        (0..request_count(names.len()))
            .map(|i| {
                let body = json!({
                    "vector": vector(9_000_000 + i as u64),
                    "content": format!("memory {i}: the user mentioned that they prefer green tea in the morning, work remotely on Tuesdays and Thursdays, and would like summaries sent by email rather than chat."),
                });
                Ok(Prepared {
                    url: url.clone(),
                    bearer: Some(keys[i % keys.len()].clone()),
                    body: serde_json::to_vec(&body).context("write body")?,
                })
            })
            .collect::<anyhow::Result<_>>()?,
    );
    println!(
        "durable single-record writes to {}, {} s per phase",
        describe_tenants(&names),
        args.seconds
    );
    drive(requests, &args.connections, args.seconds, "writes").await
}

/// One request of a run, built before it: where it goes, its credential, its JSON body.
pub(crate) struct Prepared {
    pub url: String,
    pub bearer: Option<String>,
    pub body: Vec<u8>,
}

/// One phase per connection count, printed as a table row. Each connection cycles through
/// `requests` from its own starting point.
pub(crate) async fn drive(
    requests: Arc<Vec<Prepared>>,
    connections: &[usize],
    seconds: u64,
    what: &str,
) -> anyhow::Result<()> {
    probe(&requests).await?;
    println!(
        "| connections | {what} | per second | p50 ms | p99 ms | answer bytes | client CPU % of a core | client CPU µs/request | errors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &c in connections {
        let phase = Phase {
            requests: Arc::clone(&requests),
            connections: c,
        };
        // Warm-up: connections open, the tenant's index loads. A run whose every request is
        // refused (a bad setting, a revoked key) measures nothing: it stops with the reason.
        let warm = phase.run(Duration::from_secs(1)).await?;
        if warm.latencies.is_empty() {
            anyhow::bail!(
                "every request of the warm-up failed ({} of them), the first with: {}",
                warm.errors,
                warm.first_error.as_deref().unwrap_or("no answer")
            );
        }
        let cpu0 = process_cpu();
        let started = Instant::now();
        let result = phase.run(Duration::from_secs(seconds)).await?;
        let wall = started.elapsed().as_secs_f64();
        let cpu = process_cpu().saturating_sub(cpu0).as_secs_f64();
        let mut lat = result.latencies;
        lat.sort();
        let n = lat.len();
        let pct = |p: f64| {
            lat.get(((n.max(1) - 1) as f64 * p) as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "| {c} | {n} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.0} | {} |",
            n as f64 / wall,
            pct(0.5),
            pct(0.99),
            result.answer_bytes,
            100.0 * cpu / wall,
            if n == 0 { 0.0 } else { cpu * 1e6 / n as f64 },
            result.errors
        );
        if n == 0 {
            anyhow::bail!(
                "every request of the {c}-connection phase failed, the first with: {}",
                result.first_error.as_deref().unwrap_or("no answer")
            );
        }
    }
    Ok(())
}

/// Sends the first request once: one the server refuses as malformed (a `k` above its cap, an
/// unknown `include` field) would be refused every time, so the run stops at once with the
/// server's reason instead of sending thousands of them in its warm-up.
async fn probe(requests: &[Prepared]) -> anyhow::Result<()> {
    let Some(r) = requests.first() else {
        anyhow::bail!("no request to send");
    };
    let mut req = reqwest::Client::new()
        .request(Method::POST, &r.url)
        .header("content-type", "application/json")
        .body(r.body.clone());
    if let Some(key) = &r.bearer {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.context("sending the first request")?;
    let status = res.status();
    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
        let body: String = res
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        anyhow::bail!(
            "the server refused the run's first request, so it would refuse them all: HTTP \
             {status}: {body}"
        );
    }
    Ok(())
}

struct Phase {
    requests: Arc<Vec<Prepared>>,
    connections: usize,
}

struct PhaseResult {
    latencies: Vec<Duration>,
    errors: u64,
    /// What the first failed request got, for a run that fails as a whole.
    first_error: Option<String>,
    /// Size of the last successful answer's body.
    answer_bytes: usize,
}

impl Phase {
    /// Runs `connections` closed loops for `length`.
    async fn run(&self, length: Duration) -> anyhow::Result<PhaseResult> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::with_capacity(self.connections);
        for conn in 0..self.connections {
            // One client per connection: its own keep-alive socket, no pool contention.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .context("HTTP client")?;
            let (requests, stop) = (Arc::clone(&self.requests), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut out = PhaseResult {
                    latencies: Vec::new(),
                    errors: 0,
                    first_error: None,
                    answer_bytes: 0,
                };
                let mut i = conn * 7919;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 1) % requests.len();
                    let r = &requests[i];
                    let started = Instant::now();
                    let mut req = http
                        .request(Method::POST, &r.url)
                        .header("content-type", "application/json")
                        .body(r.body.clone());
                    if let Some(key) = &r.bearer {
                        req = req.bearer_auth(key);
                    }
                    let failed = match req.send().await {
                        Ok(res) => {
                            let status = res.status();
                            match res.bytes().await {
                                Ok(b) if status.is_success() => {
                                    out.answer_bytes = b.len();
                                    None
                                }
                                Ok(b) => Some(format!(
                                    "HTTP {status}: {}",
                                    String::from_utf8_lossy(&b[..b.len().min(300)])
                                )),
                                Err(e) => Some(format!("reading the answer: {e}")),
                            }
                        }
                        Err(e) => Some(format!("sending: {e}")),
                    };
                    match failed {
                        None => out.latencies.push(started.elapsed()),
                        Some(why) => {
                            out.errors += 1;
                            out.first_error.get_or_insert(why);
                        }
                    }
                }
                out
            }));
        }
        tokio::time::sleep(length).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = PhaseResult {
            latencies: Vec::new(),
            errors: 0,
            first_error: None,
            answer_bytes: 0,
        };
        for t in tasks {
            let r = t.await.context("load task")?;
            all.latencies.extend(r.latencies);
            all.errors += r.errors;
            if all.first_error.is_none() {
                all.first_error = r.first_error;
            }
            all.answer_bytes = all.answer_bytes.max(r.answer_bytes);
        }
        Ok(all)
    }
}

/// User plus system CPU time this process has used so far (all threads).
#[cfg(unix)]
pub(crate) fn process_cpu() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusive out-pointer for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Elsewhere the client's CPU is not reported (printed as 0).
#[cfg(not(unix))]
pub(crate) fn process_cpu() -> Duration {
    Duration::ZERO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenant_gets_the_same_number_of_search_requests() {
        for tenants in [1, 2, 3, 64, 100, 255, 256, 257, 1000] {
            let n = request_count(tenants);
            assert!(n >= QUERIES.max(tenants), "{tenants} tenants: {n}");
            assert_eq!(n % tenants, 0, "{tenants} tenants: {n}");
            assert!(
                n < QUERIES + tenants,
                "{tenants} tenants: {n} is more than needed"
            );
        }
    }
}
