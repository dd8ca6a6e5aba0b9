//! The Prometheus text exposition (format 0.0.4) of [`crate::metrics`] plus the engine's
//! figures, with the cap on tenant labels: the pinned tenants and the `cap` most active others
//! get their own `tenant` label; every other tenant is summed, exactly, under
//! `tenant="(other)"` — a value no tenant id can take, since ids never contain parentheses.
//!
//! Rendering is a pure function of snapshots, so the cap and the sums are unit-tested here
//! with thousands of tenants. Residency, loads/evictions and integrity state are added as
//! `strata_tenant_*` series in `tenant_block` once the engine reports them in
//! [`strata_engine::TenantInfo`]; isolation level likewise goes into `strata_tenant_info`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use strata_engine::{TenantInfo, TenantStatus};
use strata_store::stats::{BUCKETS_SECS, HistogramSnapshot};

use crate::metrics::{REFUSALS, RouteKey, ServerSnapshot, TenantSnapshot};

/// The label value of the tenants summed together.
pub const OTHER: &str = "(other)";

/// What one scrape renders.
pub struct Exposition<'a> {
    pub routes: &'a [(RouteKey, HistogramSnapshot)],
    /// Live figures of every tenant seen since start.
    pub live: &'a HashMap<String, TenantSnapshot>,
    /// Every registered tenant with its usage.
    pub registry: &'a [TenantInfo],
    pub cap: usize,
    pub pinned: &'a [String],
    pub server: ServerSnapshot,
    pub workers: usize,
    pub commits: HistogramSnapshot,
    pub resident_bytes: Option<u64>,
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
    /// Only for a labelled tenant: ratios and the info series do not sum.
    info: Option<TenantInfo>,
}

/// Which tenants get their own label: the pinned ones, then the `cap` most active others
/// (recent requests, then all-time requests, then id, so the choice is deterministic).
pub fn labelled(
    ids: &BTreeSet<&str>,
    live: &HashMap<String, TenantSnapshot>,
    cap: usize,
    pinned: &[String],
) -> BTreeSet<String> {
    let mut chosen: BTreeSet<String> = pinned
        .iter()
        .filter(|p| ids.contains(p.as_str()))
        .cloned()
        .collect();
    let mut rest: Vec<(&str, u64, u64)> = ids
        .iter()
        .filter(|id| !chosen.contains(**id))
        .map(|id| {
            let s = live.get(*id).copied().unwrap_or_default();
            (*id, s.recent, s.requests())
        })
        .collect();
    rest.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(b.0)));
    chosen.extend(rest.into_iter().take(cap).map(|(id, _, _)| id.to_owned()));
    chosen
}

pub fn render(x: &Exposition<'_>) -> String {
    let mut ids: BTreeSet<&str> = x.live.keys().map(String::as_str).collect();
    ids.extend(x.registry.iter().map(|t| t.id.as_str()));
    let chosen = labelled(&ids, x.live, x.cap, x.pinned);
    let by_id: HashMap<&str, &TenantInfo> = x.registry.iter().map(|t| (t.id.as_str(), t)).collect();

    let mut blocks: BTreeMap<&str, Block> = BTreeMap::new();
    let mut folded = 0u64;
    for id in &ids {
        let own = chosen.contains(*id);
        let label = if own { *id } else { OTHER };
        folded += u64::from(!own);
        let b = blocks.entry(label).or_default();
        if let Some(s) = x.live.get(*id) {
            b.live.add(s);
        }
        if let Some(info) = by_id.get(id) {
            if let Some(u) = info.usage {
                b.records += u.records;
                b.vectors += u.vectors;
                b.storage_bytes += u.storage_bytes;
                b.collections += u.collections;
            }
            if own {
                b.info = Some((*info).clone());
            }
        }
    }

    let mut out = String::with_capacity(64 * 1024);
    route_series(&mut out, x.routes);
    tenant_series(&mut out, &blocks);
    server_series(&mut out, x, folded);
    out
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
        "A tenant's requests refused by rate limit, in-flight cap, quota or a full pool.",
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
    let gauges: [(&str, &str, Amount); 4] = [
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
    ];
    for (name, text, get) in gauges {
        help(out, name, "gauge", text);
        for (id, b) in blocks {
            let _ = writeln!(out, "{name}{{{}}} {}", t(id), get(b));
        }
    }
    help(
        out,
        "strata_tenant_quota_usage_ratio",
        "gauge",
        "Usage over limit for each quota a labelled tenant has (not for the summed tenants).",
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
            if let Some(max) = max.filter(|m| *m > 0) {
                let _ = writeln!(
                    out,
                    "strata_tenant_quota_usage_ratio{{{},quota=\"{q}\"}} {}",
                    t(id),
                    used as f64 / max as f64
                );
            }
        }
    }
    help(
        out,
        "strata_tenant_info",
        "gauge",
        "1 per labelled tenant, with its status.",
    );
    for (id, b) in blocks {
        if let Some(info) = &b.info {
            let _ = writeln!(
                out,
                "strata_tenant_info{{{},status=\"{}\"}} 1",
                t(id),
                status(info.status)
            );
        }
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
        let n = x.registry.iter().filter(|t| t.status == s).count();
        let _ = writeln!(out, "strata_tenants{{status=\"{}\"}} {n}", status(s));
    }
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
        "Durable commits, fsync included.",
    );
    histogram(out, "strata_store_commit_duration_seconds", "", &x.commits);
    help(
        out,
        "strata_pool_workers",
        "gauge",
        "Worker threads of the fair-queueing pool.",
    );
    let _ = writeln!(out, "strata_pool_workers {}", x.workers);
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

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::{TenantLimits, TenantUsage};
    use strata_types::TenantId;

    fn info(id: &str, records: u64) -> TenantInfo {
        TenantInfo {
            id: TenantId::parse(id).expect("id"),
            display_name: None,
            created_at: 0,
            status: TenantStatus::Active,
            deleted_at: None,
            limits: TenantLimits {
                max_vectors: Some(100),
                ..TenantLimits::default()
            },
            weight: 1,
            isolation: Default::default(),
            index_params: None,
            usage: Some(TenantUsage {
                records,
                vectors: records,
                storage_bytes: records * 10,
                collections: 1,
            }),
        }
    }

    /// Values of `name{…tenant="X"…}` lines by tenant.
    fn by_tenant(text: &str, name: &str, extra: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&format!("{name}{{tenant=\"")) else {
                continue;
            };
            let (tenant, tail) = rest.split_once('"').expect("closing quote");
            if !tail.starts_with(&format!("{extra}}}")) {
                continue;
            }
            let value: f64 = tail
                .rsplit(' ')
                .next()
                .expect("value")
                .parse()
                .expect("number");
            out.insert(tenant.to_owned(), value);
        }
        out
    }

    #[test]
    fn five_thousand_tenants_under_a_cap_of_100_sum_exactly() {
        let n = 5_000u64;
        let mut live = HashMap::new();
        let mut registry = Vec::new();
        for i in 0..n {
            let id = format!("t{i:04}");
            let mut s = TenantSnapshot::default();
            // Activity rises with i, so the top 100 are t4900..t4999; t0007 is pinned.
            for _ in 0..=(i % 7) {
                s.latency.buckets[(i % 16) as usize] += 1;
            }
            s.classes[1] = s.latency.count();
            s.recent = i;
            s.refusals[0] = i % 3;
            s.cpu_nanos = i * 1000;
            live.insert(id.clone(), s);
            registry.push(info(&id, i));
        }
        let pinned = vec!["t0007".to_owned()];
        let text = render(&Exposition {
            routes: &[],
            live: &live,
            registry: &registry,
            cap: 100,
            pinned: &pinned,
            server: ServerSnapshot::default(),
            workers: 2,
            commits: HistogramSnapshot::default(),
            resident_bytes: Some(1),
        });
        let counts = by_tenant(&text, "strata_tenant_request_duration_seconds_count", "");
        assert_eq!(counts.len(), 102, "100 + pinned + (other)");
        assert!(counts.contains_key("t4999") && counts.contains_key("t4900"));
        assert!(counts.contains_key("t0007") && !counts.contains_key("t4899"));
        let total: u64 = live.values().map(TenantSnapshot::requests).sum();
        assert_eq!(counts.values().sum::<f64>() as u64, total);
        // Every label value's +Inf bucket equals its _count.
        let inf = by_tenant(
            &text,
            "strata_tenant_request_duration_seconds_bucket",
            ",le=\"+Inf\"",
        );
        assert_eq!(inf, counts);
        let records = by_tenant(&text, "strata_tenant_records", "");
        assert_eq!(records.values().sum::<f64>() as u64, (0..n).sum::<u64>());
        let rl = by_tenant(
            &text,
            "strata_tenant_refusals_total",
            ",code=\"RATE_LIMITED\"",
        );
        assert_eq!(
            rl.values().sum::<f64>() as u64,
            (0..n).map(|i| i % 3).sum::<u64>()
        );
        assert!(text.contains("strata_metrics_tenants_folded 4899\n"));
        // Ratios only for labelled tenants.
        let ratios = by_tenant(
            &text,
            "strata_tenant_quota_usage_ratio",
            ",quota=\"vectors\"",
        );
        assert_eq!(ratios.len(), 101);
        assert_eq!(ratios["t4999"], 49.99);
    }

    #[test]
    fn recorded_traffic_of_5000_tenants_under_cap_100_has_101_label_values() {
        use crate::metrics::Metrics;
        use std::time::Duration;
        let m = Metrics::default();
        let mut expected_requests = 0u64;
        let mut expected_429 = 0u64;
        for i in 0..5_000u64 {
            let id = format!("tenant-{i}");
            for j in 0..(1 + i % 5) {
                let limited = j == 1 && i % 2 == 0;
                let status = if limited { 429 } else { 200 };
                let code = limited.then_some("RATE_LIMITED");
                let key = ("POST".to_owned(), "/v1/search".to_owned(), status);
                m.record(key, Some(&id), Duration::from_micros(100 + i), code);
                expected_requests += 1;
                expected_429 += u64::from(limited);
            }
        }
        let live = m.tenants();
        let routes = m.routes();
        let text = render(&Exposition {
            routes: &routes,
            live: &live,
            registry: &[],
            cap: 100,
            pinned: &[],
            server: m.server(),
            workers: 2,
            commits: HistogramSnapshot::default(),
            resident_bytes: None,
        });
        let values: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split("tenant=\"").nth(1))
            .filter_map(|r| r.split('"').next())
            .collect();
        assert_eq!(values.len(), 101, "100 tenants and (other)");
        assert!(values.contains(OTHER));
        let counts = by_tenant(&text, "strata_tenant_request_duration_seconds_count", "");
        assert_eq!(counts.values().sum::<f64>() as u64, expected_requests);
        let inf = by_tenant(
            &text,
            "strata_tenant_request_duration_seconds_bucket",
            ",le=\"+Inf\"",
        );
        assert_eq!(inf, counts);
        let limited = by_tenant(
            &text,
            "strata_tenant_refusals_total",
            ",code=\"RATE_LIMITED\"",
        );
        assert_eq!(limited.values().sum::<f64>() as u64, expected_429);
        // The labelled ones are among the most active (5 requests each).
        assert!(
            counts.iter().all(|(t, n)| t == OTHER || *n == 5.0),
            "{counts:?}"
        );
        let route_total: u64 = routes.iter().map(|(_, h)| h.count()).sum();
        assert_eq!(route_total, expected_requests);
    }

    #[test]
    fn without_the_cap_binding_nothing_is_folded() {
        let live = HashMap::from([("a".to_owned(), TenantSnapshot::default())]);
        let registry = vec![info("a", 1), info("b", 2)];
        let text = render(&Exposition {
            routes: &[(
                ("GET".into(), "/v1/x".into(), 200),
                HistogramSnapshot::default(),
            )],
            live: &live,
            registry: &registry,
            cap: 5,
            pinned: &[],
            server: ServerSnapshot::default(),
            workers: 1,
            commits: HistogramSnapshot::default(),
            resident_bytes: None,
        });
        assert!(!text.contains(&format!("{{tenant=\"{OTHER}\"")));
        assert!(text.contains("strata_metrics_tenants_folded 0\n"));
        assert!(text.contains(
            "strata_http_requests_total{method=\"GET\",route=\"/v1/x\",status=\"200\"} 0\n"
        ));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().expect("value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
