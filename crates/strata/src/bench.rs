//! `strata bench noisy`: the noisy-neighbour benchmark against a running server.
//!
//! Tenant B runs a steady stream of searches; tenant A floods with many concurrent clients far
//! above its share, with searches, vector writes or text writes the server embeds (`--flood`).
//! B's latency with A flooding is compared with B alone: with fair scheduling, B's p99 should
//! stay close (target ≤ 1.25×). Tenants `bench-a` and `bench-b` are created and filled on
//! first use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};

use crate::bench_probe;
use crate::client::Client;
use crate::loadgen::process_cpu;

/// Settings of one run.
#[derive(Debug, Clone, clap::Args)]
pub struct NoisyArgs {
    /// Concurrent flooding clients of tenant A.
    #[arg(long, default_value_t = 64)]
    pub flood_clients: usize,
    /// Requests per second A's clients send together, paced (open loop; a client that falls
    /// behind skips the requests it missed). Unset, each client sends its next request as soon
    /// as the previous one is answered, keeping the server as busy as it lets A make it. A
    /// "10× flood" is ten times `--steady-qps`.
    #[arg(long)]
    pub flood_rate: Option<f64>,
    /// Searches per second of tenant B.
    #[arg(long, default_value_t = 50.0)]
    pub steady_qps: f64,
    /// Seconds per phase (B alone, then B with A flooding).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Rounds of the two phases, alternated (B alone, B with A flooding, B alone, …); each
    /// phase's samples are pooled over the rounds. A p99 of one phase moves with what else the
    /// machine does in those seconds; alternating spreads that drift over both.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Records per tenant (384-dimensional vectors) written before the run.
    #[arg(long, default_value_t = 2000)]
    pub records: usize,
    /// Isolation level of tenant B (`shared`, `partition` or `dedicated`): at `dedicated` its
    /// searches run in the worker pool's reserved lane. B is migrated to it before the run.
    #[arg(long, default_value = "shared", value_parser = ["shared", "partition", "dedicated"])]
    pub victim_isolation: String,
    /// Also run A's flood alone for the same time (a third phase) and report its throughput:
    /// what protecting B costs a tenant that has the server to itself.
    #[arg(long)]
    pub flood_alone: bool,
    /// What A floods with: `searches`; `writes`, single records with a vector (each answered
    /// once durable, so A grows by every write); `text-writes`, single records of text alone,
    /// which the server embeds (needs its embedder).
    #[arg(long, value_enum, default_value_t = FloodKind::Searches)]
    pub flood: FloodKind,
}

/// What tenant A's flooding clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloodKind {
    Searches,
    Writes,
    TextWrites,
}

impl FloodKind {
    /// The path A's requests go to and their bodies, serialised before the run (see
    /// [`search_bodies`]), cycled.
    fn requests(self) -> (&'static str, Arc<[String]>) {
        match self {
            FloodKind::Searches => ("/v1/search", search_bodies(0, 4096)),
            FloodKind::Writes => (
                "/v1/memories",
                (0..4096u64)
                    .map(|i| {
                        json!({"content": flood_sentence(i), "vector": vector(5_000_000 + i)})
                            .to_string()
                    })
                    .collect(),
            ),
            FloodKind::TextWrites => (
                "/v1/memories",
                (0..4096u64)
                    .map(|i| json!({"content": flood_sentence(i)}).to_string())
                    .collect(),
            ),
        }
    }

    /// What one of A's requests is called in the report.
    fn noun(self) -> &'static str {
        match self {
            FloodKind::Searches => "searches",
            FloodKind::Writes => "writes",
            FloodKind::TextWrites => "text writes",
        }
    }
}

/// A sentence of about 30 words (~200 bytes) for A's write `i`, varied so that no two in a
/// cycle embed alike.
fn flood_sentence(i: u64) -> String {
    const WHO: [&str; 8] = [
        "the user",
        "their manager",
        "the support agent",
        "a colleague",
        "the customer",
        "my sister",
        "the landlord",
        "our accountant",
    ];
    const WHAT: [&str; 8] = [
        "prefers green tea in the morning",
        "works remotely on Tuesdays and Thursdays",
        "wants summaries sent by email rather than chat",
        "is allergic to peanuts and shellfish",
        "moved to a flat near the river last spring",
        "plays the cello in a local orchestra",
        "is saving for a trip to Japan in October",
        "asked to be reminded about the dentist",
    ];
    const WHY: [&str; 8] = [
        "because mornings are the quietest time of the day",
        "after a long conversation about the new project",
        "since the old arrangement kept causing missed messages",
        "which came up while planning next quarter's budget",
        "as mentioned during the onboarding call last week",
        "according to a note left in the shared calendar",
        "which matters for the team dinner on Friday evening",
        "so the reminders should arrive before nine o'clock",
    ];
    let pick = |n: u64| (n % 8) as usize;
    format!(
        "Memory {i}: {} {} {}, and {} {}.",
        WHO[pick(i)],
        WHAT[pick(i / 8)],
        WHY[pick(i / 64)],
        WHO[pick(i / 512 + 3)],
        WHAT[pick(i / 7 + 5)]
    )
}

const DIM: usize = 384;

pub(crate) fn vector(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Creates the tenant if needed, fills it, and returns a read/write key for it.
pub(crate) async fn prepare(
    admin: &Client,
    tenant: &str,
    records: usize,
) -> anyhow::Result<String> {
    let exists = admin
        .call(
            Method::GET,
            &format!("/v1/admin/tenants/{}", crate::client::segment(tenant)),
            None,
        )
        .await
        .is_ok();
    if !exists {
        admin
            .call(
                Method::POST,
                "/v1/admin/tenants",
                Some(json!({"id": tenant})),
            )
            .await?;
    }
    let key = admin
        .call(
            Method::POST,
            "/v1/admin/keys",
            Some(json!({"tenant": tenant, "permissions": ["read", "write"]})),
        )
        .await?;
    let secret = key["key"]
        .as_str()
        .context("key answer without a secret")?
        .to_owned();
    let tenant_client = Client::new(admin.server(), Some(secret.clone()))?;
    let have = tenant_client
        .call(Method::POST, "/v1/memories/count", Some(json!({})))
        .await?;
    let have = have["count"].as_u64().unwrap_or(0) as usize;
    for start in (have..records).step_by(500) {
        let batch: Vec<Value> = (start..(start + 500).min(records))
            .map(|i| json!({"content": format!("{tenant} memory {i}"), "vector": vector(i as u64)}))
            .collect();
        tenant_client
            .call(
                Method::POST,
                "/v1/memories",
                Some(json!({ "records": batch })),
            )
            .await?;
    }
    Ok(secret)
}

pub(crate) fn percentile<T: Clone + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].clone()
}

/// Search bodies serialised once before the run, so the load generator spends its CPU on
/// sending requests and not on building JSON: on a shared machine its CPU is taken from the
/// server it measures. Distinct vectors, cycled.
pub(crate) fn search_bodies(first_seed: u64, n: u64) -> Arc<[String]> {
    (0..n)
        .map(|i| json!({"vector": vector(first_seed + i), "k": 10}).to_string())
        .collect()
}

/// Sends one pre-serialised request to `path` and reads the answer's bytes (not parsed: the
/// time is the server's, and a failure is an error status).
async fn post_raw(client: &Client, path: &str, body: String) -> anyhow::Result<()> {
    let req = client
        .request(Method::POST, path)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    client.send(req).await?.bytes().await?;
    Ok(())
}

pub async fn noisy(admin: Client, args: NoisyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.steady_qps.is_finite() && args.steady_qps > 0.0,
        "--steady-qps: a positive number"
    );
    anyhow::ensure!(args.seconds > 0, "--seconds: at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds: at least 1");
    anyhow::ensure!(args.flood_clients > 0, "--flood-clients: at least 1");
    // Each client's interval, `clients / rate`, from a microsecond to a day.
    anyhow::ensure!(
        args.flood_rate.is_none_or(|r| {
            let every = args.flood_clients as f64 / r;
            r.is_finite() && r > 0.0 && (1e-6..=86_400.0).contains(&every)
        }),
        "--flood-rate: a positive number of requests a second, at most a million per client \
         and at least one a day per client"
    );
    anyhow::ensure!(args.records > 0, "--records: at least 1");
    eprintln!(
        "preparing tenants bench-a and bench-b ({} records each)…",
        args.records
    );
    let a_key = prepare(&admin, "bench-a", args.records).await?;
    let b_key = prepare(&admin, "bench-b", args.records).await?;
    let level = admin
        .call(Method::GET, "/v1/admin/tenants/bench-b", None)
        .await?["isolation"]
        .clone();
    if level != json!(args.victim_isolation) {
        eprintln!("migrating bench-b to {}…", args.victim_isolation);
        admin
            .call(
                Method::POST,
                "/v1/admin/tenants/bench-b/migrate",
                Some(json!({"target": args.victim_isolation})),
            )
            .await?;
    }
    // Load both tenants' indexes before timing anything.
    for key in [&a_key, &b_key] {
        Client::new(admin.server(), Some(key.clone()))?
            .call(
                Method::POST,
                "/v1/search",
                Some(json!({"vector": vector(7), "k": 10})),
            )
            .await?;
    }
    if args.flood == FloodKind::TextWrites {
        Client::new(admin.server(), Some(a_key.clone()))?
            .call(
                Method::POST,
                "/v1/memories",
                Some(json!({"content": flood_sentence(0)})),
            )
            .await
            .context("--flood text-writes: the server must embed text (is its embedder on?)")?;
    }
    // B's probe runs on a thread and runtime of its own (`bench_probe`), A's flood on
    // another: neither waits for the other's tasks inside this process.
    let probe = |server: String, key: String, qps: f64, secs: u64| {
        tokio::task::spawn_blocking(move || bench_probe::steady(&server, &key, qps, secs))
    };
    let server = admin.server().to_owned();
    let start_flood = || {
        Flood::start(
            server.clone(),
            a_key.clone(),
            args.flood_clients,
            args.flood_rate,
            args.flood,
        )
    };
    let (mut alone_samples, mut alone_failed) = (Vec::new(), 0);
    let (mut loaded_samples, mut loaded_failed) = (Vec::new(), 0);
    let (mut cpu_alone, mut cpu_flood) = (0.0, 0.0);
    let (mut a_done, mut a_refused) = (0, 0);
    for round in 1..=args.rounds {
        let of = if args.rounds > 1 {
            format!(" (round {round} of {})", args.rounds)
        } else {
            String::new()
        };
        eprintln!("phase 1: B alone for {} s{of}…", args.seconds);
        let cpu0 = process_cpu();
        let (alone, failed) =
            probe(server.clone(), b_key.clone(), args.steady_qps, args.seconds).await??;
        cpu_alone += process_cpu().saturating_sub(cpu0).as_secs_f64();
        alone_failed += failed;

        let paced = args
            .flood_rate
            .map_or_else(String::new, |r| format!(" at {r} requests/s"));
        eprintln!(
            "phase 2: B with A flooding ({} clients{paced}) for {} s{of}…",
            args.flood_clients, args.seconds
        );
        let cpu0 = process_cpu();
        // Fails here, before B is probed, if A's client cannot be made; stopped when dropped,
        // so a failing probe does not leave it flooding.
        let flood = start_flood()?;
        let probed = probe(server.clone(), b_key.clone(), args.steady_qps, args.seconds).await;
        let stopped = flood.stop().await;
        let (loaded, failed) = probed??;
        let (done, refused) = stopped?;
        cpu_flood += process_cpu().saturating_sub(cpu0).as_secs_f64();
        loaded_failed += failed;
        (a_done, a_refused) = (a_done + done, a_refused + refused);
        if args.rounds > 1 && !alone.is_empty() && !loaded.is_empty() {
            let p99 = |s: &[bench_probe::Sample]| percentile(&bench_probe::latencies(s), 0.99);
            eprintln!(
                "round {round}: B's p99 {:.2} ms alone, {:.2} ms flooded",
                p99(&alone).as_secs_f64() * 1000.0,
                p99(&loaded).as_secs_f64() * 1000.0
            );
        }
        alone_samples.extend(alone);
        loaded_samples.extend(loaded);
    }
    // Each round's samples come sorted by latency; the pooled ones must be again.
    alone_samples.sort_by_key(|s| s.latency);
    loaded_samples.sort_by_key(|s| s.latency);
    let alone_throughput = if args.flood_alone {
        eprintln!("phase 3: A flooding alone for {} s…", args.seconds);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let flood = start_flood()?;
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        Some(flood.stop().await?.0)
    } else {
        None
    };

    let (alone, loaded) = (
        bench_probe::latencies(&alone_samples),
        bench_probe::latencies(&loaded_samples),
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50a, p99a) = (percentile(&alone, 0.50), percentile(&alone, 0.99));
    let (p50l, p99l) = (percentile(&loaded, 0.50), percentile(&loaded, 0.99));
    println!("| B's searches | n | failed | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|---|---|");
    println!(
        "| B alone | {} | {alone_failed} | {:.2} | {:.2} |",
        alone.len(),
        ms(p50a),
        ms(p99a)
    );
    println!(
        "| B with A flooding | {} | {loaded_failed} | {:.2} | {:.2} |",
        loaded.len(),
        ms(p50l),
        ms(p99l)
    );
    println!();
    println!(
        "p99 ratio (flooded / alone): {:.2}; A completed {:.0} {}/s ({} refused)",
        ms(p99l) / ms(p99a).max(f64::EPSILON),
        a_done as f64 / (args.seconds as f64 * f64::from(args.rounds)),
        args.flood.noun(),
        a_refused
    );
    if let Some(done) = alone_throughput {
        println!(
            "A flooding alone: {:.0} {}/s",
            done as f64 / args.seconds as f64,
            args.flood.noun()
        );
    }
    // On one machine the load generator's CPU is taken from the server: report it.
    let secs = args.seconds as f64 * f64::from(args.rounds);
    println!(
        "load generator CPU: {:.0}% of a core with B alone, {:.0}% with A flooding",
        100.0 * cpu_alone / secs,
        100.0 * cpu_flood / secs
    );
    bench_probe::print_breakdown(&[
        ("B alone", &alone_samples),
        ("B with A flooding", &loaded_samples),
    ]);
    anyhow::ensure!(
        !alone_samples.is_empty() && !loaded_samples.is_empty(),
        "every search of B failed in a phase ({alone_failed} alone, {loaded_failed} with A \
         flooding): nothing was measured"
    );
    Ok(())
}

/// One of A's clients' share of `--flood-rate`: a tick every `clients / rate` seconds, the
/// clients' first ticks spread over one interval so that they do not send together.
struct Pace(tokio::time::Interval);

impl Pace {
    fn new(rate: f64, clients: usize, client: usize) -> Pace {
        let every = Duration::from_secs_f64(clients as f64 / rate);
        let first = tokio::time::Instant::now() + every.mul_f64(client as f64 / clients as f64);
        let mut interval = tokio::time::interval_at(first, every);
        // Behind (the server answered late), a client sends its next request at once and
        // drops the ones it missed, rather than sending them in a burst.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Pace(interval)
    }

    /// Waits for the next tick; `false` if `stop` was set meanwhile (checked every 20 ms, so
    /// that a slow pace does not hold the flood's end).
    async fn next(&mut self, stop: &AtomicBool) -> bool {
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            // `Interval::tick` is cancel-safe: a timeout loses no tick.
            if tokio::time::timeout(Duration::from_millis(20), self.0.tick())
                .await
                .is_ok()
            {
                return true;
            }
        }
    }
}

/// How long one of A's requests may take before the flood counts it as refused and goes on.
const FLOOD_TIMEOUT: Duration = Duration::from_secs(30);

/// Tenant A's flood: closed-loop clients on their own runtime and thread, so B's client never
/// waits in a task queue behind A's: what B measures is the server, not this load generator.
/// Dropping it stops the clients (on every path out of the benchmark, errors included).
struct Flood {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Flood {
    fn drop(&mut self) {
        // Each client checks it before its next request; a request in flight ends within the
        // client's timeout.
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Flood {
    /// Starts the clients once their HTTP client is made; an error if it cannot be.
    fn start(
        server: String,
        key: String,
        clients: usize,
        rate: Option<f64>,
        kind: FloodKind,
    ) -> anyhow::Result<Flood> {
        let stop = Arc::new(AtomicBool::new(false));
        let (done, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (path, bodies) = kind.requests();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let thread = {
            let (stop, done, refused) =
                (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&refused));
            std::thread::spawn(move || -> anyhow::Result<()> {
                let made = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|rt| {
                        // Made on this thread, so its connections are driven by this runtime
                        // alone.
                        let a = Client::with_timeout(&server, Some(key), FLOOD_TIMEOUT)?;
                        Ok((rt, Arc::new(a)))
                    });
                let (rt, a) = match made {
                    Ok(made) => {
                        let _ = ready_tx.send(Ok(()));
                        made
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                rt.block_on(async move {
                    let tasks: Vec<_> = (0..clients)
                        .map(|c| {
                            let (a, stop, done, refused, bodies) = (
                                Arc::clone(&a),
                                Arc::clone(&stop),
                                Arc::clone(&done),
                                Arc::clone(&refused),
                                Arc::clone(&bodies),
                            );
                            tokio::spawn(async move {
                                let mut pace = rate.map(|r| Pace::new(r, clients, c));
                                let mut i = c * 61;
                                while !stop.load(Ordering::Relaxed) {
                                    if let Some(pace) = pace.as_mut()
                                        && !pace.next(&stop).await
                                    {
                                        break;
                                    }
                                    i += 1;
                                    let body = bodies[i % bodies.len()].clone();
                                    match post_raw(&a, path, body).await {
                                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                                    };
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        let _ = t.await;
                    }
                    anyhow::Ok(())
                })
            })
        };
        let flood = Flood {
            stop,
            done,
            refused,
            thread: Some(thread),
        };
        ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the flood's thread ended before starting"))?
            .context("starting tenant A's flood")?;
        Ok(flood)
    }

    /// Stops the clients, waits for their last requests, and returns (completed, refused).
    async fn stop(mut self) -> anyhow::Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the flood's thread panicked"))??;
        }
        Ok((
            self.done.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paced clients send the rate asked for between them, not as fast as they can, and a
    /// slow pace ends as soon as the flood is stopped.
    #[tokio::test]
    async fn paced_clients_send_the_flood_rate_between_them_and_stop_when_told() {
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(AtomicU64::new(0));
        let began = tokio::time::Instant::now();
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (stop, ticks) = (Arc::clone(&stop), Arc::clone(&ticks));
                tokio::spawn(async move {
                    let mut pace = Pace::new(200.0, 4, c);
                    while pace.next(&stop).await {
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = ticks.load(Ordering::Relaxed);
        let most = (200.0 * began.elapsed().as_secs_f64()) as u64 + 4;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.expect("client");
        }
        // 200/s for 0.5 s: about 100, and never more than the rate over the time taken, each
        // client's first tick included (a loaded machine may wake the clients late, and a late
        // client skips what it missed: fewer, never a burst of more; each sent its first).
        assert!(
            (4..=most).contains(&sent),
            "{sent} requests, at most {most}"
        );

        let stop = AtomicBool::new(false);
        let mut slow = Pace::new(0.01, 1, 0);
        assert!(
            slow.next(&stop).await,
            "a client's first request is not held"
        );
        let asleep = tokio::time::Instant::now();
        let waiting = slow.next(&stop);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err(),
            "the next request waits for its tick (100 s away)"
        );
        stop.store(true, Ordering::Relaxed);
        assert!(!waiting.await, "stopped");
        assert!(
            asleep.elapsed() < Duration::from_secs(10),
            "ended when told"
        );
    }

    /// Each flood sends what it says, to its route, in bodies that differ (so writes are not
    /// answered from an idempotency memo, nor texts embedded alike).
    #[test]
    fn each_flood_kind_sends_distinct_bodies_of_its_kind() {
        for kind in [
            FloodKind::Searches,
            FloodKind::Writes,
            FloodKind::TextWrites,
        ] {
            let (path, bodies) = kind.requests();
            let distinct: std::collections::HashSet<_> = bodies.iter().collect();
            assert_eq!(distinct.len(), bodies.len(), "{kind:?}");
            let first: Value = serde_json::from_str(&bodies[0]).expect("JSON");
            let vector = first.get("vector").and_then(Value::as_array).map(Vec::len);
            let content = first.get("content").and_then(Value::as_str);
            match kind {
                FloodKind::Searches => {
                    assert_eq!(path, "/v1/search");
                    assert_eq!(vector, Some(DIM));
                }
                FloodKind::Writes => {
                    assert_eq!(path, "/v1/memories");
                    assert_eq!(vector, Some(DIM));
                    assert!(content.is_some());
                }
                FloodKind::TextWrites => {
                    assert_eq!(path, "/v1/memories");
                    assert_eq!(vector, None, "the server embeds it");
                    assert!(
                        content.is_some_and(|c| c.split(' ').count() >= 20),
                        "{content:?}"
                    );
                }
            }
        }
    }
}
