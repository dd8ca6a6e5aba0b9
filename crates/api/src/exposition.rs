//! The Prometheus text exposition (format 0.0.4) of [`crate::metrics`] plus the engine's
//! figures, with the cap on tenant labels: the pinned tenants and `cap` others (those at the
//! `partition` or `dedicated` level first, then the most recently active) get their own
//! `tenant` label; every other registered tenant is summed,
//! exactly, under `tenant="(other)"` — a value no tenant id can take, since ids never contain
//! parentheses. Only tenants in the registry are rendered: a purged tenant's figures go with it.
//!
//! Rendering is a pure function of snapshots, so the cap and the sums are unit-tested here
//! with thousands of tenants. Tenants at the `partition` and `dedicated` isolation levels come
//! first among the `cap` (an operator who gave a tenant its own resources sees it), within it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use strata_engine::{IntegrityState, IsolationLevel, TenantInfo, TenantResidency, TenantStatus};
use strata_store::stats::{BUCKETS_SECS, HistogramSnapshot};

use crate::metrics::{REFUSALS, RouteKey, ServerSnapshot, TenantSnapshot};

mod folded;
pub use folded::FoldedCounters;

/// The label value of the tenants summed together.
pub const OTHER: &str = "(other)";

/// Integrity states in their label order.
pub const INTEGRITY_STATES: [IntegrityState; 3] = [
    IntegrityState::Normal,
    IntegrityState::Stress,
    IntegrityState::Critical,
];

/// One registered tenant with the live figures of its current incarnation.
#[derive(Debug, Clone)]
pub struct TenantRow {
    pub info: TenantInfo,
    pub live: TenantSnapshot,
    pub residency: TenantResidency,
    pub integrity: IntegrityState,
}

/// What one scrape renders.
pub struct Exposition<'a> {
    /// `(other)`'s counters across scrapes (the server's one, kept with its metrics).
    pub folded: &'a FoldedCounters,
    pub routes: &'a [(RouteKey, HistogramSnapshot)],
    /// Every registered tenant.
    pub tenants: &'a [TenantRow],
    /// Tenants left out because their stored profile does not decode.
    pub unreadable: usize,
    pub cap: usize,
    pub pinned: &'a [String],
    pub server: ServerSnapshot,
    pub workers: usize,
    /// Background (lower-priority) workers running: 0 when off or not possible here.
    pub background_workers: usize,
    /// Jobs that ran long and gave up their place to another tenant's job, by kind of worker.
    pub long_job_spares: strata_sched::LongJobSpares,
    /// Times a pool worker woke to find jobs queued and none it may run (they belonged to the
    /// other set of workers) since start.
    pub idle_looks: u64,
    /// Polls of the queue by an idle worker before it slept since start: (those that saw a
    /// job queued, those whose window passed).
    pub idle_polls: (u64, u64),
    /// Storage writes attempted on threads that must not write (background workers) since
    /// start: 0 unless a job that writes was sent to one (a bug).
    pub forbidden_writes: u64,
    /// Whether the main data file failed (a full disk, an I/O error) and refuses writes.
    pub storage_failed: bool,
    /// What opening the main data file took at start, and whether it was repaired in full.
    pub storage_open: strata_store::OpenReport,
    /// Hits searches' re-checks dropped on resident state since start: 0 unless the index
    /// disagrees with its own bitmaps (a bug).
    pub search_recheck_drops: u64,
    /// Security events counted but not written one by one, by action, since start.
    pub security_events_suppressed: &'a [(&'static str, u64)],
    pub commits: HistogramSnapshot,
    /// Shared storage transactions small writes were batched into since start, and the writes
    /// they held.
    pub write_batches: (u64, u64),
    /// Transactions the start applied from the main file's row log.
    pub log_replayed: u64,
    /// Vacuums of the main data file since start, and whether an erasure's one is owed.
    pub vacuums: strata_engine::VacuumFigures,
    pub resident_bytes: Option<u64>,
    /// `[engine.residency] memory_budget_bytes` (0: none) and the index bytes loaded now.
    pub residency_budget_bytes: u64,
    pub residency_resident_bytes: u64,
}

/// Reads one amount of a block, for the gauges rendered alike.
type Amount = fn(&Block) -> u64;

/// Figures of one label value: a tenant's own, or the sum of the folded ones.
#[derive(Default)]
struct Block {
    live: TenantSnapshot,
    records: u64,
    vectors: u64,
    storage_bytes: u64,
    collections: u64,
    resident_bytes: u64,
    loads: u64,
    evictions: u64,
    /// Pinned tenants among those summed (0 or 1 for a labelled tenant).
    pinned: u64,
    /// Resident tenants among those summed.
    resident: u64,
    /// Tenants in each of [`INTEGRITY_STATES`]: one 1 for a labelled tenant, counts for `(other)`.
    integrity: [u64; 3],
    /// Only for a labelled tenant: ratios and the info series do not sum.
    info: Option<TenantInfo>,
}

/// Which tenants get their own label: the configured pinned ones, then `cap` others: the
/// tenants at an isolation level other than `shared` first, then the most recently active
/// (requests in the last one to two activity windows, then id, so the choice is
/// deterministic). All-time counts play no part: an idle tenant gives its slot up. The cap
/// binds the tenants at `partition` or `dedicated` too (automatic promotion can make any
/// number of them), so the labels stay bounded by the configured list plus `cap`.
pub fn labelled(tenants: &[TenantRow], cap: usize, pinned: &[String]) -> BTreeSet<String> {
    let mut chosen: BTreeSet<String> = pinned
        .iter()
        .filter(|p| tenants.iter().any(|t| t.info.id.as_str() == p.as_str()))
        .cloned()
        .collect();
    let mut rest: Vec<(bool, u64, &str)> = tenants
        .iter()
        .map(|t| {
            (
                t.info.isolation.is_shared(),
                t.live.recent,
                t.info.id.as_str(),
            )
        })
        .filter(|(_, _, id)| !chosen.contains(*id))
        .collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    chosen.extend(rest.into_iter().take(cap).map(|(_, _, id)| id.to_owned()));
    chosen
}

pub fn render(x: &Exposition<'_>) -> String {
    let chosen = labelled(x.tenants, x.cap, x.pinned);
    let mut blocks: BTreeMap<&str, Block> = BTreeMap::new();
    let mut folded = 0u64;
    for t in x.tenants {
        let id = t.info.id.as_str();
        let own = chosen.contains(id);
        let label = if own { id } else { OTHER };
        folded += u64::from(!own);
        let b = blocks.entry(label).or_default();
        b.live.add(&t.live);
        if let Some(u) = t.info.usage {
            b.records += u.records;
            b.vectors += u.vectors;
            b.storage_bytes += u.storage_bytes;
            b.collections += u.collections;
        }
        let r = &t.residency;
        b.resident_bytes += r.resident_bytes;
        b.loads += r.loads;
        b.evictions += r.evictions;
        b.pinned += u64::from(r.pinned);
        b.resident += u64::from(r.resident);
        b.integrity[state_index(t.integrity)] += 1;
        if own {
            b.info = Some(t.info.clone());
        }
    }
    // `(other)`'s counters are its accumulator, which only grows (see `folded`); shown while
    // any tenant is folded or it holds anything.
    let other = x.folded.fold(x.tenants, &chosen);
    if folded > 0 || other != folded::Counters::default() {
        let b = blocks.entry(OTHER).or_default();
        let gauges = (b.live.queued, b.live.answer_bytes, b.live.recent);
        b.live = other.live;
        (b.live.queued, b.live.answer_bytes, b.live.recent) = gauges;
        b.loads = other.loads;
        b.evictions = other.evictions;
    }

    let mut out = String::with_capacity(64 * 1024);
    route_series(&mut out, x.routes);
    tenant_series(&mut out, &blocks);
    server_series(&mut out, x, folded);
    out
}

fn state_index(s: IntegrityState) -> usize {
    INTEGRITY_STATES.iter().position(|x| *x == s).unwrap_or(0)
}

/// The label value of an integrity state (as the JSON API spells it).
pub fn integrity_name(s: IntegrityState) -> &'static str {
    match s {
        IntegrityState::Normal => "normal",
        IntegrityState::Stress => "stress",
        IntegrityState::Critical => "critical",
    }
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

/// A label value, escaped as the text format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        let le = BUCKETS_SECS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
        );
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", secs(h.sum_nanos));
    let _ = writeln!(out, "{name}_count{braces} {}", h.count());
}

fn secs(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

fn route_series(out: &mut String, routes: &[(RouteKey, HistogramSnapshot)]) {
    help(
        out,
        "strata_http_requests_total",
        "counter",
        "Requests by method, route template and status.",
    );
    for ((m, r, s), h) in routes {
        let _ = writeln!(
            out,
            "strata_http_requests_total{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {}",
            esc(r),
            h.count()
        );
    }
    help(
        out,
        "strata_http_request_duration_seconds",
        "histogram",
        "Request latency by method, route template and status.",
    );
    for ((m, r, s), h) in routes {
        let labels = format!("method=\"{m}\",route=\"{}\",status=\"{s}\"", esc(r));
        histogram(out, "strata_http_request_duration_seconds", &labels, h);
    }
}

fn tenant_series(out: &mut String, blocks: &BTreeMap<&str, Block>) {
    let t = |id: &str| format!("tenant=\"{}\"", esc(id));
    help(
        out,
        "strata_tenant_requests_total",
        "counter",
        "A tenant's requests by status class.",
    );
    for (id, b) in blocks {
        for (i, n) in b.live.classes.iter().enumerate() {
            let _ = writeln!(
                out,
                "strata_tenant_requests_total{{{},class=\"{}xx\"}} {n}",
                t(id),
                i + 1
            );
        }
    }
    help(
        out,
        "strata_tenant_request_duration_seconds",
        "histogram",
        "A tenant's request latency; _count is its request count.",
    );
    for (id, b) in blocks {
        histogram(
            out,
            "strata_tenant_request_duration_seconds",
            &t(id),
            &b.live.latency,
        );
    }
    help(
        out,
        "strata_tenant_refusals_total",
        "counter",
        "A tenant's requests refused by rate limit, in-flight cap, quota, a full pool or its \
         unread answers' memory.",
    );
    for (id, b) in blocks {
        for (code, n) in REFUSALS.iter().zip(b.live.refusals) {
            let _ = writeln!(
                out,
                "strata_tenant_refusals_total{{{},code=\"{code}\"}} {n}",
                t(id)
            );
        }
    }
    help(
        out,
        "strata_tenant_queue_depth",
        "gauge",
        "A tenant's jobs waiting for a pool worker now.",
    );
    for (id, b) in blocks {
        let _ = writeln!(
            out,
            "strata_tenant_queue_depth{{{}}} {}",
            t(id),
            b.live.queued
        );
    }
    help(
        out,
        "strata_tenant_queue_wait_seconds",
        "histogram",
        "Time a tenant's jobs waited for a pool worker.",
    );
    for (id, b) in blocks {
        histogram(
            out,
            "strata_tenant_queue_wait_seconds",
            &t(id),
            &b.live.queue_wait,
        );
    }
    help(
        out,
        "strata_tenant_cpu_seconds_total",
        "counter",
        "CPU time pool workers spent on a tenant's jobs.",
    );
    for (id, b) in blocks {
        let _ = writeln!(
            out,
            "strata_tenant_cpu_seconds_total{{{}}} {}",
            t(id),
            secs(b.live.cpu_nanos)
        );
    }
    let gauges: [(&str, &str, Amount); 8] = [
        ("strata_tenant_records", "Records a tenant holds.", |b| {
            b.records
        }),
        ("strata_tenant_vectors", "Vectors a tenant holds.", |b| {
            b.vectors
        }),
        (
            "strata_tenant_storage_bytes",
            "Bytes a tenant is charged for.",
            |b| b.storage_bytes,
        ),
        (
            "strata_tenant_collections",
            "Collections a tenant has.",
            |b| b.collections,
        ),
        (
            "strata_tenant_resident_bytes",
            "Estimated bytes of a tenant's indexes loaded in memory now.",
            |b| b.resident_bytes,
        ),
        (
            "strata_tenant_answer_bytes_held",
            "Bytes a tenant's answers hold until its clients read them (capacity of the buffers).",
            |b| b.live.answer_bytes,
        ),
        (
            "strata_tenant_resident",
            "1 while a tenant's indexes are loaded; for (other), how many of its tenants are.",
            |b| b.resident,
        ),
        (
            "strata_tenant_pinned",
            "1 if a tenant is pinned in memory; for (other), how many of its tenants are.",
            |b| b.pinned,
        ),
    ];
    let counters: [(&str, &str, Amount); 2] = [
        (
            "strata_tenant_index_loads_total",
            "Times a tenant's indexes were loaded since the server started.",
            |b| b.loads,
        ),
        (
            "strata_tenant_index_evictions_total",
            "Times a tenant's indexes were evicted to keep within the memory budget.",
            |b| b.evictions,
        ),
    ];
    let typed = gauges
        .iter()
        .map(|g| (g, "gauge"))
        .chain(counters.iter().map(|c| (c, "counter")));
    for ((name, text, get), kind) in typed {
        help(out, name, kind, text);
        for (id, b) in blocks {
            let _ = writeln!(out, "{name}{{{}}} {}", t(id), get(b));
        }
    }
    help(
        out,
        "strata_tenant_integrity_state",
        "gauge",
        "1 for a labelled tenant's integrity state, 0 for the others; for (other), how many \
         of its tenants are in each state.",
    );
    for (id, b) in blocks {
        for (state, n) in INTEGRITY_STATES.iter().zip(b.integrity) {
            let _ = writeln!(
                out,
                "strata_tenant_integrity_state{{{},state=\"{}\"}} {n}",
                t(id),
                integrity_name(*state)
            );
        }
    }
    help(
        out,
        "strata_tenant_quota_usage_ratio",
        "gauge",
        "Usage over limit for each quota a labelled tenant has (not for the summed tenants); \
         a limit of 0 is full: 1 with nothing used, +Inf past it.",
    );
    for (id, b) in blocks {
        let Some(info) = &b.info else { continue };
        let l = &info.limits;
        let quotas = [
            ("vectors", b.vectors, l.max_vectors),
            ("storage_bytes", b.storage_bytes, l.max_storage_bytes),
            ("collections", b.collections, l.max_collections),
        ];
        for (q, used, max) in quotas {
            // A limit of 0 refuses every write it covers: the quota is full, never absent
            // (as a tenant without the limit is).
            let ratio = match max {
                None => continue,
                Some(0) if used == 0 => "1".to_owned(),
                Some(0) => "+Inf".to_owned(),
                Some(max) => (used as f64 / max as f64).to_string(),
            };
            let _ = writeln!(
                out,
                "strata_tenant_quota_usage_ratio{{{},quota=\"{q}\"}} {ratio}",
                t(id),
            );
        }
    }
    help(
        out,
        "strata_tenant_info",
        "gauge",
        "1 per labelled tenant, with its status and isolation level.",
    );
    for (id, b) in blocks {
        if let Some(info) = &b.info {
            let _ = writeln!(
                out,
                "strata_tenant_info{{{},status=\"{}\",isolation=\"{}\"}} 1",
                t(id),
                status(info.status),
                isolation(info.isolation)
            );
        }
    }
}

fn isolation(level: IsolationLevel) -> &'static str {
    match level {
        IsolationLevel::Shared => "shared",
        IsolationLevel::Partition => "partition",
        IsolationLevel::Dedicated => "dedicated",
    }
}

fn status(s: TenantStatus) -> &'static str {
    match s {
        TenantStatus::Active => "active",
        TenantStatus::Suspended => "suspended",
        TenantStatus::Deleted => "deleted",
    }
}

fn server_series(out: &mut String, x: &Exposition<'_>, folded: u64) {
    help(
        out,
        "strata_tenants",
        "gauge",
        "Registered tenants by status.",
    );
    for s in [
        TenantStatus::Active,
        TenantStatus::Suspended,
        TenantStatus::Deleted,
    ] {
        let n = x.tenants.iter().filter(|t| t.info.status == s).count();
        let _ = writeln!(out, "strata_tenants{{status=\"{}\"}} {n}", status(s));
    }
    help(
        out,
        "strata_tenants_by_integrity_state",
        "gauge",
        "Registered tenants by integrity state.",
    );
    for state in INTEGRITY_STATES {
        let n = x.tenants.iter().filter(|t| t.integrity == state).count();
        let _ = writeln!(
            out,
            "strata_tenants_by_integrity_state{{state=\"{}\"}} {n}",
            integrity_name(state)
        );
    }
    help(
        out,
        "strata_tenants_unreadable",
        "gauge",
        "Tenants left out of these figures because their stored profile does not decode.",
    );
    let _ = writeln!(out, "strata_tenants_unreadable {}", x.unreadable);
    help(
        out,
        "strata_residency_budget_bytes",
        "gauge",
        "The memory budget for loaded tenant indexes; 0: none.",
    );
    let _ = writeln!(
        out,
        "strata_residency_budget_bytes {}",
        x.residency_budget_bytes
    );
    help(
        out,
        "strata_residency_resident_bytes",
        "gauge",
        "Estimated bytes of every loaded tenant index.",
    );
    let _ = writeln!(
        out,
        "strata_residency_resident_bytes {}",
        x.residency_resident_bytes
    );
    help(
        out,
        "strata_metrics_tenant_label_cap",
        "gauge",
        "Most tenants with their own label, besides pinned ones.",
    );
    let _ = writeln!(out, "strata_metrics_tenant_label_cap {}", x.cap);
    help(
        out,
        "strata_metrics_tenants_folded",
        "gauge",
        "Tenants summed under tenant=\"(other)\".",
    );
    let _ = writeln!(out, "strata_metrics_tenants_folded {folded}");
    help(
        out,
        "strata_store_commit_duration_seconds",
        "histogram",
        "Syncs that made writes durable: row log syncs and durable commits, fsync included.",
    );
    histogram(out, "strata_store_commit_duration_seconds", "", &x.commits);
    let (batches, batched) = x.write_batches;
    help(
        out,
        "strata_store_write_batches_total",
        "counter",
        "Shared storage transactions that concurrent small writes, of any tenants, were batched into.",
    );
    let _ = writeln!(out, "strata_store_write_batches_total {batches}");
    help(
        out,
        "strata_store_batched_writes_total",
        "counter",
        "Writes those transactions held (divided by the batches: writes per transaction).",
    );
    let _ = writeln!(out, "strata_store_batched_writes_total {batched}");
    help(
        out,
        "strata_storage_row_log_replayed_transactions",
        "gauge",
        "Acknowledged transactions the start applied from the main file's row log (writes after \
         the last checkpoint that a crash or a kill left there).",
    );
    let _ = writeln!(
        out,
        "strata_storage_row_log_replayed_transactions {}",
        x.log_replayed
    );
    vacuums(out, &x.vacuums);
    help(
        out,
        "strata_pool_workers",
        "gauge",
        "Worker threads of the fair-queueing pool.",
    );
    let _ = writeln!(out, "strata_pool_workers {}", x.workers);
    help(
        out,
        "strata_pool_background_workers",
        "gauge",
        "Lower-priority pool workers for tenants over their CPU share (0: off).",
    );
    let _ = writeln!(
        out,
        "strata_pool_background_workers {}",
        x.background_workers
    );
    help(
        out,
        "strata_pool_long_job_spares_total",
        "counter",
        "Jobs that ran past [scheduler] long_job_after_ms while another tenant's job waited, \
         and gave their worker's place to a spare thread.",
    );
    let spares = &x.long_job_spares;
    for (kind, n) in [
        ("shared", spares.shared),
        ("background", spares.background),
        ("reserved", spares.reserved),
    ] {
        let _ = writeln!(
            out,
            "strata_pool_long_job_spares_total{{kind=\"{kind}\"}} {n}"
        );
    }
    help(
        out,
        "strata_pool_idle_looks_total",
        "counter",
        "Times a pool worker woke to find jobs queued and none it may run (they belonged to \
         the other set of workers: normal or lower-priority). A few per second at most; many \
         more would be futile wake-ups costing the tenants' jobs their CPU.",
    );
    let _ = writeln!(out, "strata_pool_idle_looks_total {}", x.idle_looks);
    help(
        out,
        "strata_pool_idle_polls_total",
        "counter",
        "Times a pool worker that finished a job watched the queue before sleeping \
         ([scheduler] idle_poll_us), by outcome: `job` when it started a job right after (queued \
         meanwhile, it needed no wake-up), `none` otherwise.",
    );
    let (found, expired) = x.idle_polls;
    let _ = writeln!(
        out,
        "strata_pool_idle_polls_total{{outcome=\"job\"}} {found}"
    );
    let _ = writeln!(
        out,
        "strata_pool_idle_polls_total{{outcome=\"none\"}} {expired}"
    );
    help(
        out,
        "strata_storage_writes_on_background_workers_total",
        "counter",
        "Storage writes attempted on lowest-priority workers, which must never write (a bug).",
    );
    let _ = writeln!(
        out,
        "strata_storage_writes_on_background_workers_total {}",
        x.forbidden_writes
    );
    help(
        out,
        "strata_storage_failed",
        "gauge",
        "1 once a write to the main data file failed (a full disk, an I/O error): writes are \
         refused until the server restarts.",
    );
    let _ = writeln!(out, "strata_storage_failed {}", u8::from(x.storage_failed));
    help(
        out,
        "strata_storage_open_seconds",
        "gauge",
        "How long opening the main data file took at start, its repair after a crash included.",
    );
    let _ = writeln!(
        out,
        "strata_storage_open_seconds {}",
        x.storage_open.took.as_secs_f64()
    );
    help(
        out,
        "strata_storage_open_full_repair",
        "gauge",
        "1 when the start found the main data file not closed cleanly and read all of it to \
         repair it (its last commit recorded no allocator state, see \
         [engine] fast_recovery_from_bytes).",
    );
    let _ = writeln!(
        out,
        "strata_storage_open_full_repair {}",
        u8::from(x.storage_open.full_repair)
    );
    help(
        out,
        "strata_search_recheck_drops_total",
        "counter",
        "Search hits the final re-check dropped after their channel passed them (an index bug).",
    );
    let _ = writeln!(
        out,
        "strata_search_recheck_drops_total {}",
        x.search_recheck_drops
    );
    help(
        out,
        "strata_security_events_suppressed_total",
        "counter",
        "Security events (by audit action) over their log's bound: counted and summarised, \
         not written one by one.",
    );
    for (action, n) in x.security_events_suppressed {
        let _ = writeln!(
            out,
            "strata_security_events_suppressed_total{{action=\"{action}\"}} {n}"
        );
    }
    help(
        out,
        "strata_pool_busy_workers",
        "gauge",
        "Pool workers running a job now.",
    );
    let _ = writeln!(out, "strata_pool_busy_workers {}", x.server.busy_workers);
    help(
        out,
        "strata_pool_busy_seconds_total",
        "counter",
        "Wall time pool workers spent on jobs; rate() over workers is utilisation.",
    );
    let _ = writeln!(
        out,
        "strata_pool_busy_seconds_total {}",
        secs(x.server.busy_nanos)
    );
    help(
        out,
        "strata_open_connections",
        "gauge",
        "HTTP connections open now.",
    );
    let _ = writeln!(out, "strata_open_connections {}", x.server.open_connections);
    help(
        out,
        "strata_over_share_lane_requests_total",
        "counter",
        "Requests run on the async threads kept for tenants over their share of the CPU.",
    );
    let _ = writeln!(
        out,
        "strata_over_share_lane_requests_total {}",
        x.server.over_share_lane_requests
    );
    if let Some(rss) = x.resident_bytes {
        help(
            out,
            "strata_process_resident_memory_bytes",
            "gauge",
            "Resident memory of the server process.",
        );
        let _ = writeln!(out, "strata_process_resident_memory_bytes {rss}");
    }
    help(
        out,
        "strata_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(out, "strata_uptime_seconds {}", x.server.uptime_secs);
}

/// The vacuums' series: how many ran and how long they took (a summary without quantiles,
/// so `rate(_sum) / rate(_count)` is their mean), the latest one's duration, and whether a
/// purged tenant's bytes are still in the data file (an owed vacuum).
fn vacuums(out: &mut String, v: &strata_engine::VacuumFigures) {
    help(
        out,
        "strata_vacuum_duration_seconds",
        "summary",
        "Rewrites of the main data file after erasures (purges), and their duration; reads and \
         writes of the main file go on while one copies and pause only for its final swap.",
    );
    let _ = writeln!(
        out,
        "strata_vacuum_duration_seconds_sum {}\nstrata_vacuum_duration_seconds_count {}",
        v.seconds_total, v.runs
    );
    help(
        out,
        "strata_vacuum_last_duration_seconds",
        "gauge",
        "Duration of the latest vacuum (0 before the first).",
    );
    let _ = writeln!(
        out,
        "strata_vacuum_last_duration_seconds {}",
        v.last_seconds
    );
    help(
        out,
        "strata_erasure_pending",
        "gauge",
        "1 while an erasure's vacuum is owed (its rewrite failed and is retried): erased bytes \
         are still in the data file; 0 once it ran.",
    );
    let _ = writeln!(
        out,
        "strata_erasure_pending {}",
        u8::from(v.erasure_pending)
    );
}

#[cfg(test)]
mod tests;
