//! `strata bench search` against a real server: it fills its tenant, runs one phase per
//! connection count, and prints QPS, latency percentiles and the client's own CPU.

mod common;

use std::process::Command;

use common::{OPERATOR_KEY, Server};

/// Runs `strata bench <args>` against `server` with the operator key; returns its stdout,
/// after checking that it succeeded.
fn bench(server: &Server, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("bench")
        .args(args)
        .args(["--server", &server.url])
        .env("STRATA_KEY", OPERATOR_KEY)
        .output()
        .expect("run strata bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cells of the table row of the `connections`-connection phase in `stdout`.
fn phase_row(stdout: &str, connections: usize) -> Vec<&str> {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {connections} |")))
        .unwrap_or_else(|| panic!("no {connections}-connection row: {stdout}"))
        .split('|')
        .map(str::trim)
        .collect()
}

#[test]
fn the_search_load_generator_runs_end_to_end() {
    let server = Server::start();
    let stdout = bench(
        &server,
        &[
            "search",
            "--records",
            "50",
            "--seconds",
            "1",
            "--connections",
            "1,4",
            "--include",
            "",
        ],
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 4 |"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        // | connections | searches | QPS | p50 | p99 | bytes | CPU % | CPU µs | errors |
        let searches: u64 = row[2].parse().expect("searches");
        assert!(searches > 0, "{stdout}");
        assert_eq!(row[9], "0", "errors: {stdout}");
        // Ids and scores only: ten hits in well under a kilobyte.
        let bytes: usize = row[6].parse().expect("bytes");
        assert!((100..1000).contains(&bytes), "{stdout}");
    }
    let (status, v) = server.get("/v1/admin/tenants/bench-search", OPERATOR_KEY);
    assert_eq!(status, 200);
    assert_eq!(v["usage"]["records"], 50, "{v}");
}

#[test]
fn the_write_load_generator_runs_end_to_end() {
    let server = Server::start();
    let stdout = bench(&server, &["writes", "--seconds", "1", "--connections", "2"]);
    let row = phase_row(&stdout, 2);
    let writes: u64 = row[2].parse().expect("writes");
    assert!(writes > 0 && row[9] == "0", "{stdout}");
    // Every write counted was acknowledged, so it is there (warm-up writes too).
    let (status, v) = server.get("/v1/admin/tenants/bench-writes", OPERATOR_KEY);
    assert_eq!(status, 200);
    assert!(v["usage"]["records"].as_u64().unwrap_or(0) >= writes, "{v}");
}

#[test]
fn the_write_load_generator_spreads_over_several_tenants() {
    let server = Server::start();
    let stdout = bench(
        &server,
        &[
            "writes",
            "--tenants",
            "3",
            "--tenant",
            "w",
            "--seconds",
            "1",
            "--connections",
            "2",
        ],
    );
    assert!(stdout.contains("3 tenants w-000 … w-002"), "{stdout}");
    let row = phase_row(&stdout, 2);
    let writes: u64 = row[2].parse().expect("writes");
    assert!(writes > 0 && row[9] == "0", "{stdout}");
    let mut total = 0;
    for name in ["w-000", "w-001", "w-002"] {
        let (status, v) = server.get(&format!("/v1/admin/tenants/{name}"), OPERATOR_KEY);
        assert_eq!(status, 200);
        let records = v["usage"]["records"].as_u64().unwrap_or(0);
        assert!(records > 0, "every tenant was written to: {name} {v}");
        total += records;
    }
    assert!(total >= writes, "{total} records for {writes} writes");
}

#[test]
fn the_search_load_generator_spreads_over_several_tenants() {
    let server = Server::start();
    let stdout = bench(
        &server,
        &[
            "search",
            "--tenants",
            "3",
            "--records",
            "20",
            "--seconds",
            "1",
            "--connections",
            "2",
            "--tenant",
            "spread",
        ],
    );
    assert!(
        stdout.contains("3 tenants spread-000 … spread-002"),
        "{stdout}"
    );
    let row = phase_row(&stdout, 2);
    assert_eq!(row[9], "0", "errors: {stdout}");
    for t in ["spread-000", "spread-001", "spread-002"] {
        let (status, v) = server.get(&format!("/v1/admin/tenants/{t}"), OPERATOR_KEY);
        assert_eq!(status, 200, "{t}");
        assert_eq!(v["usage"]["records"], 20, "{t}: {v}");
    }
}

/// A mixed run reports the records it started from; its writes stay in its tenants, so a
/// second run on the same tenants starts from more, and a run on tenants of a new name starts
/// from `--records` each.
#[test]
fn a_mixed_run_says_what_it_started_from() {
    let server = Server::start();
    let run = |tenant: &str| {
        bench(
            &server,
            &[
                "mixed",
                "--tenants",
                "3",
                "--records",
                "5",
                "--clients",
                "2",
                "--seconds",
                "1",
                "--write-ratio",
                "0.5",
                "--tenant",
                tenant,
            ],
        )
    };
    let started_from = |stdout: &str| -> (u64, u64) {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("started from "))
            .unwrap_or_else(|| panic!("{stdout}"));
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    };
    let first = run("round");
    assert_eq!(started_from(&first), (15, 5), "{first}");
    assert!(first.contains("(round-0000)"), "{first}");
    let second = run("round");
    let (all, hottest) = started_from(&second);
    assert!(all > 15 && hottest > 5, "the first run's writes: {second}");
    let (status, v) = server.get("/v1/admin/tenants/round-0000", OPERATOR_KEY);
    assert_eq!(status, 200);
    assert!(
        v["usage"]["records"].as_u64().unwrap_or(0) >= hottest,
        "{v}"
    );
    assert_eq!(started_from(&run("fresh")), (15, 5));
}

/// Settings that would measure nothing are refused before any load, and a run whose every
/// request fails says why and exits with failure instead of printing a table of errors.
#[test]
fn the_load_generators_refuse_runs_that_measure_nothing() {
    let server = Server::start();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("bench")
            .args(args)
            .args(["--server", &server.url])
            .env("STRATA_KEY", OPERATOR_KEY)
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run strata bench");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (args, says) in [
        (
            &["writes", "--connections", "0", "--seconds", "1"][..],
            "--connections",
        ),
        (&["search", "--k", "0", "--seconds", "1"][..], "--k"),
        (
            &["search", "--tenants", "0", "--seconds", "1"][..],
            "--tenants",
        ),
        (&["noisy", "--victim-isolation", "bogus"][..], "bogus"),
        (&["mixed", "--zipf", "nan"][..], "--zipf"),
        (
            &["search", "--records", "0", "--seconds", "1"][..],
            "--records",
        ),
        (&["mixed", "--records", "0"][..], "--records"),
    ] {
        let (ok, err) = run(args);
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
    // Refused before anything was written: no bench tenant exists.
    let (status, tenants) = server.get("/v1/admin/tenants", OPERATOR_KEY);
    assert_eq!(status, 200, "{tenants}");
    assert!(!tenants.to_string().contains("bench-"), "{tenants}");
    let (ok, err) = run(&[
        "search",
        "--include",
        "bogus",
        "--records",
        "10",
        "--connections",
        "1",
        "--seconds",
        "1",
    ]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("refused the run's first request") && err.contains("include"),
        "{err}"
    );
    // Stopped at the first refusal, not after a warm-up of them: the server counted one.
    let metrics = server.metrics();
    let refused: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("strata_http_requests_total")
                && l.contains("route=\"/v1/search\"")
                && l.contains("status=\"400\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 1.0, "{metrics}");
}
