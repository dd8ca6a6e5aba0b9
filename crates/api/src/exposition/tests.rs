use super::*;
use strata_engine::{TenantLimits, TenantUsage};
use strata_types::TenantId;

fn info(id: &str, records: u64) -> TenantInfo {
    TenantInfo {
        id: TenantId::parse(id).expect("id"),
        display_name: None,
        created_at: 0,
        updated_at: 0,
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
        parent: None,
        metadata: None,
        children: None,
        integrity_policy: None,
    }
}

fn residency(bytes: u64) -> TenantResidency {
    TenantResidency {
        resident: bytes > 0,
        resident_bytes: bytes,
        loads: 1,
        evictions: 2,
        pinned: false,
        graph_builds_pending: 0,
        graph_ef_search: 0,
        graph_ef_search_calibrated: 0,
    }
}

fn row(id: &str, records: u64, live: TenantSnapshot) -> TenantRow {
    TenantRow {
        info: info(id, records),
        live,
        residency: residency(records),
        integrity: IntegrityState::Normal,
    }
}

fn exposition<'a>(tenants: &'a [TenantRow], cap: usize, pinned: &'a [String]) -> Exposition<'a> {
    Exposition {
        // Each exposition its own: the folded counters start from nothing.
        folded: Box::leak(Box::default()),
        routes: &[],
        tenants,
        unreadable: 0,
        cap,
        pinned,
        server: ServerSnapshot::default(),
        workers: 2,
        background_workers: 0,
        long_job_spares: Default::default(),
        idle_looks: 0,
        idle_polls: (0, 0),
        forbidden_writes: 0,
        storage_failed: false,
        storage_open: strata_store::OpenReport {
            took: std::time::Duration::from_millis(3),
            full_repair: false,
        },
        search_recheck_drops: 0,
        security_events_suppressed: &[],
        commits: HistogramSnapshot::default(),
        write_batches: (0, 0),
        log_replayed: 0,
        vacuums: strata_engine::VacuumFigures::default(),
        resident_bytes: None,
        residency_budget_bytes: 0,
        residency_resident_bytes: 0,
    }
}

#[test]
fn vacuums_and_an_owed_erasure_are_exported() {
    let mut x = exposition(&[], 10, &[]);
    x.vacuums = strata_engine::VacuumFigures {
        runs: 3,
        seconds_total: 1.5,
        last_seconds: 0.25,
        erasure_pending: true,
    };
    let text = render(&x);
    for line in [
        "strata_vacuum_duration_seconds_sum 1.5\n",
        "strata_vacuum_duration_seconds_count 3\n",
        "strata_vacuum_last_duration_seconds 0.25\n",
        "strata_erasure_pending 1\n",
    ] {
        assert!(text.contains(line), "{line} missing in {text}");
    }
    x.vacuums.erasure_pending = false;
    assert!(render(&x).contains("strata_erasure_pending 0\n"));
}

#[test]
fn write_batches_and_the_row_log_replay_are_exported() {
    let mut x = exposition(&[], 10, &[]);
    x.write_batches = (40, 130);
    x.log_replayed = 7;
    let text = render(&x);
    for line in [
        "# TYPE strata_store_write_batches_total counter\n",
        "strata_store_write_batches_total 40\n",
        "strata_store_batched_writes_total 130\n",
        "# TYPE strata_storage_row_log_replayed_transactions gauge\n",
        "strata_storage_row_log_replayed_transactions 7\n",
    ] {
        assert!(text.contains(line), "{line} missing in {text}");
    }
}

#[test]
fn the_background_worker_count_is_exported() {
    let mut x = exposition(&[], 10, &[]);
    x.background_workers = 3;
    x.long_job_spares.shared = 5;
    x.idle_looks = 7;
    x.idle_polls = (11, 4);
    x.forbidden_writes = 2;
    x.storage_failed = true;
    x.storage_open = strata_store::OpenReport {
        took: std::time::Duration::from_millis(2500),
        full_repair: true,
    };
    x.search_recheck_drops = 4;
    x.security_events_suppressed = &[("auth.failure", 7), ("security.tenant_mismatch", 0)];
    let text = render(&x);
    assert!(
        text.contains("\nstrata_security_events_suppressed_total{action=\"auth.failure\"} 7\n"),
        "{text}"
    );
    assert!(
        text.contains("\nstrata_search_recheck_drops_total 4\n"),
        "{text}"
    );
    assert!(text.contains("\nstrata_storage_failed 1\n"), "{text}");
    assert!(
        text.contains("\nstrata_storage_open_seconds 2.5\n"),
        "{text}"
    );
    assert!(
        text.contains("\nstrata_storage_open_full_repair 1\n"),
        "{text}"
    );
    assert!(
        text.contains("\nstrata_pool_background_workers 3\n"),
        "{text}"
    );
    assert!(
        text.contains("\nstrata_pool_long_job_spares_total{kind=\"shared\"} 5\n"),
        "{text}"
    );
    assert!(
        text.contains("\nstrata_pool_long_job_spares_total{kind=\"reserved\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("\nstrata_pool_idle_looks_total 7\n"),
        "{text}"
    );
    assert!(
        text.contains("\nstrata_pool_idle_polls_total{outcome=\"job\"} 11\n")
            && text.contains("\nstrata_pool_idle_polls_total{outcome=\"none\"} 4\n"),
        "{text}"
    );
    assert!(
        text.contains("\nstrata_storage_writes_on_background_workers_total 2\n"),
        "{text}"
    );
}

#[test]
fn partition_tenants_keep_their_label_and_info_names_the_level() {
    let quiet = TenantSnapshot::default();
    let mut rows: Vec<TenantRow> = (0..10)
        .map(|i| row(&format!("t{i:02}"), 1, quiet))
        .collect();
    rows[7].info.isolation = IsolationLevel::Partition;
    // A cap of 1 and no traffic: only t00 (by id) would get a label, but the partition
    // tenant comes first.
    let chosen = labelled(&rows, 1, &[]);
    assert_eq!(chosen, BTreeSet::from(["t07".to_owned()]), "{chosen:?}");
    // The cap binds the tenants at other levels too: of 5 partition tenants, 3 labels.
    for r in &mut rows[..5] {
        r.info.isolation = IsolationLevel::Partition;
    }
    assert_eq!(labelled(&rows, 3, &[]).len(), 3);
    assert_eq!(labelled(&rows, 3, &["t09".to_owned()]).len(), 4);
    rows[..5]
        .iter_mut()
        .for_each(|r| r.info.isolation = IsolationLevel::Shared);
    let text = render(&exposition(&rows, 1, &[]));
    assert!(
        text.contains(
            "strata_tenant_info{tenant=\"t07\",status=\"active\",isolation=\"partition\"} 1"
        ),
        "{text}"
    );
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
    let mut rows = Vec::new();
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
        let mut r = row(&id, i, s);
        r.integrity = INTEGRITY_STATES[(i % 3) as usize];
        rows.push(r);
    }
    let pinned = vec!["t0007".to_owned()];
    let text = render(&exposition(&rows, 100, &pinned));
    let counts = by_tenant(&text, "strata_tenant_request_duration_seconds_count", "");
    assert_eq!(counts.len(), 102, "100 + pinned + (other)");
    assert!(counts.contains_key("t4999") && counts.contains_key("t4900"));
    assert!(counts.contains_key("t0007") && !counts.contains_key("t4899"));
    let total: u64 = rows.iter().map(|r| r.live.requests()).sum();
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
    let resident = by_tenant(&text, "strata_tenant_resident_bytes", "");
    assert_eq!(resident.values().sum::<f64>() as u64, (0..n).sum::<u64>());
    assert_eq!(resident["t4999"], 4999.0);
    let evictions = by_tenant(&text, "strata_tenant_index_evictions_total", "");
    assert_eq!(evictions.values().sum::<f64>() as u64, 2 * n);
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
    // A family named like a counter is typed as one (Prometheus' naming rule, which linters
    // such as promtool check), and every counter is named so.
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = line.split_once(' ').expect("name and type");
        assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
    }
    // Ratios only for labelled tenants.
    let ratios = by_tenant(
        &text,
        "strata_tenant_quota_usage_ratio",
        ",quota=\"vectors\"",
    );
    assert_eq!(ratios.len(), 101);
    assert_eq!(ratios["t4999"], 49.99);
    // A labelled tenant is 1 in its own state; (other) counts its tenants per state; the
    // sum over labels per state is the server-wide count.
    let stress = by_tenant(&text, "strata_tenant_integrity_state", ",state=\"stress\"");
    assert_eq!(stress["t4998"], 0.0, "4998 % 3 == 0");
    assert_eq!(stress["t4900"], 1.0, "4900 % 3 == 1");
    let total_stress = (0..n).filter(|i| i % 3 == 1).count();
    assert_eq!(stress.values().sum::<f64>() as usize, total_stress);
    assert!(text.contains(&format!(
        "strata_tenants_by_integrity_state{{state=\"stress\"}} {total_stress}\n"
    )));
}

#[test]
fn recorded_traffic_of_5000_tenants_under_cap_100_has_101_label_values() {
    use crate::metrics::Metrics;
    use std::time::Duration;
    use strata_store::TenantKey;
    let m = Metrics::default();
    let mut expected_requests = 0u64;
    let mut expected_429 = 0u64;
    let mut ids = Vec::new();
    for i in 0..5_000u64 {
        let id = TenantId::parse(format!("tenant-{i}")).expect("id");
        for j in 0..(1 + i % 5) {
            let limited = j == 1 && i % 2 == 0;
            let status = if limited { 429 } else { 200 };
            let code = limited.then_some("RATE_LIMITED");
            let key = ("POST", "/v1/search".to_owned(), status);
            m.record(
                key,
                Some((TenantKey::for_tests(i + 1), &id)),
                Duration::from_micros(100 + i),
                code,
            );
            expected_requests += 1;
            expected_429 += u64::from(limited);
        }
        ids.push(id);
    }
    let live = m.tenants();
    let rows: Vec<TenantRow> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let l = live[&TenantKey::for_tests(i as u64 + 1)];
            row(id.as_str(), 0, l)
        })
        .collect();
    let routes = m.routes();
    let mut x = exposition(&rows, 100, &[]);
    x.routes = &routes;
    let text = render(&x);
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
fn an_idle_tenant_gives_its_label_up_whatever_its_past_traffic() {
    let mut busy_once = TenantSnapshot::default();
    busy_once.latency.buckets[0] = 1_000_000;
    let mut active_now = TenantSnapshot::default();
    active_now.latency.buckets[0] = 1;
    active_now.recent = 1;
    let rows = [row("old", 0, busy_once), row("new", 0, active_now)];
    let chosen = labelled(&rows, 1, &[]);
    assert_eq!(chosen, BTreeSet::from(["new".to_owned()]));
}

#[test]
fn only_registered_tenants_are_rendered_and_nothing_is_folded_without_the_cap_binding() {
    let rows = vec![
        row("a", 1, TenantSnapshot::default()),
        row("b", 2, TenantSnapshot::default()),
    ];
    let routes = [(
        ("GET", "/v1/x".to_owned(), 200),
        HistogramSnapshot::default(),
    )];
    let mut x = exposition(&rows, 5, &[]);
    x.routes = &routes;
    x.unreadable = 1;
    x.residency_budget_bytes = 1000;
    x.residency_resident_bytes = 3;
    let text = render(&x);
    assert!(!text.contains(&format!("{{tenant=\"{OTHER}\"")));
    assert!(text.contains("strata_metrics_tenants_folded 0\n"));
    assert!(text.contains("strata_tenants_unreadable 1\n"));
    assert!(text.contains("strata_residency_budget_bytes 1000\n"));
    assert!(text.contains("strata_residency_resident_bytes 3\n"));
    assert!(
        text.contains(
            "strata_http_requests_total{method=\"GET\",route=\"/v1/x\",status=\"200\"} 0\n"
        )
    );
    let labels: BTreeSet<String> = by_tenant(&text, "strata_tenant_records", "")
        .into_keys()
        .collect();
    assert_eq!(labels, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
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

/// `(other)`'s counters only grow, scrape after scrape, while tenants move between their own
/// label and `(other)` and leave the registry: a tenant taking its own label takes its history
/// with it, `(other)` keeps what it had, and a folded tenant adds only its growth.
#[test]
fn other_counters_never_go_down_as_tenants_come_and_go() {
    let folded = FoldedCounters::default();
    let scrape = |rows: &[TenantRow]| {
        let mut x = exposition(rows, 1, &[]);
        x.folded = &folded;
        let text = render(&x);
        let count = |name: &str| {
            by_tenant(&text, name, "")
                .get(OTHER)
                .copied()
                .unwrap_or_default()
        };
        (
            count("strata_tenant_request_duration_seconds_count"),
            count("strata_tenant_index_loads_total"),
        )
    };
    let live = |requests: u64, recent: u64| {
        let mut s = TenantSnapshot::default();
        s.latency.buckets[0] = requests;
        s.classes[1] = requests;
        s.recent = recent;
        s
    };
    // A long history folded (b is more active now), c small.
    let mut rows = vec![
        row("a", 1, live(1_000, 1)),
        row("b", 1, live(10, 5)),
        row("c", 1, live(3, 0)),
    ];
    assert_eq!(
        scrape(&rows),
        (1_003.0, 2.0),
        "a and c folded, one load each"
    );
    // a becomes the most active: its own label. (other) keeps its 1,003, adds c's growth.
    rows[0].live = live(1_001, 9);
    rows[2].live = live(4, 0);
    assert_eq!(scrape(&rows), (1_004.0, 2.0));
    // b folded now: its growth since the last scrape only (it grew by 2).
    rows[1].live = live(12, 0);
    assert_eq!(scrape(&rows), (1_006.0, 2.0));
    // Two scrapes at once, the older snapshot folded second: c's growth counts once.
    let older = rows.clone();
    rows[2].live = live(10, 0);
    assert_eq!(scrape(&rows), (1_012.0, 2.0));
    assert_eq!(scrape(&older), (1_012.0, 2.0));
    assert_eq!(scrape(&rows), (1_012.0, 2.0));
    // a purged, c purged: nothing taken away.
    rows.retain(|r| r.info.id.as_str() == "b");
    assert_eq!(scrape(&rows), (1_012.0, 2.0));
    // A tenant created again under c's id starts from its own zero.
    let mut again = row("c", 1, live(2, 0));
    again.info.created_at = 5;
    again.residency.loads = 1;
    rows.push(again);
    assert_eq!(scrape(&rows), (1_014.0, 3.0));
}

/// Between scrapes only the tenants that have counted anything are remembered: the folded
/// counters of 10,000 idle tenants hold nothing.
#[test]
fn idle_tenants_are_not_remembered_between_scrapes() {
    let folded = FoldedCounters::default();
    let mut rows: Vec<TenantRow> = (0..10_000)
        .map(|i| {
            let mut r = row(&format!("t{i}"), 1, TenantSnapshot::default());
            (r.residency.loads, r.residency.evictions) = (0, 0);
            r
        })
        .collect();
    let mut busy = TenantSnapshot::default();
    busy.classes[1] = 7;
    rows[3].live = busy;
    let mut x = exposition(&rows, 1, &[]);
    x.folded = &folded;
    render(&x);
    assert_eq!(folded.kept(), 1);
    // The busy one goes idle again (its counters stay): still remembered, and counted once.
    render(&x);
    assert_eq!(folded.kept(), 1);
}

/// A limit of 0 refuses every write it covers: its quota is full (1, or +Inf once past it),
/// never left out as a tenant without the limit is.
#[test]
fn a_quota_of_zero_is_full_not_absent() {
    let mut empty = row("empty", 0, TenantSnapshot::default());
    let mut past = row("past", 5, TenantSnapshot::default());
    let mut unlimited = row("unlimited", 5, TenantSnapshot::default());
    for r in [&mut empty, &mut past] {
        r.info.limits.max_vectors = Some(0);
    }
    unlimited.info.limits.max_vectors = None;
    let tenants = [empty, past, unlimited];
    let text = render(&exposition(&tenants, 10, &[]));
    let ratios = by_tenant(
        &text,
        "strata_tenant_quota_usage_ratio",
        ",quota=\"vectors\"",
    );
    assert_eq!(ratios.get("empty"), Some(&1.0), "{text}");
    assert_eq!(ratios.get("past"), Some(&f64::INFINITY), "{text}");
    assert!(!ratios.contains_key("unlimited"), "{text}");
}
