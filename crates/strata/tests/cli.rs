//! The admin CLI against a running server: tenants and keys, with the operator key from
//! `STRATA_KEY` and the server from `--server`.

mod common;

use std::process::Command;

use common::{OPERATOR_KEY, Server};
use serde_json::Value;

fn strata(server: &Server, args: &[&str]) -> (bool, Value, String) {
    let (ok, stdout, stderr) = common::operator_cli(server, args);
    (
        ok,
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stderr,
    )
}

#[test]
fn tenant_and_key_commands_work() {
    let server = Server::start();
    let (ok, v, err) = strata(&server, &["tenant", "create", "acme", "--name", "Acme"]);
    assert!(ok, "{err}");
    assert_eq!(v["id"], "acme");
    let (ok, v, _) = strata(&server, &["tenant", "list"]);
    assert!(
        ok && v["tenants"].as_array().is_some_and(|t| t.len() == 1),
        "{v}"
    );
    let (ok, v, _) = strata(&server, &["tenant", "show", "acme"]);
    assert!(ok && v["display_name"] == "Acme", "{v}");
    let (ok, _, err) = strata(&server, &["tenant", "show", "ghost"]);
    assert!(!ok && err.contains("NOT_FOUND"), "{err}");
    // A limit is set, and removed with `none`; an update that names nothing is refused before
    // anything is sent.
    let (ok, v, err) = strata(
        &server,
        &[
            "tenant",
            "update",
            "acme",
            "--max-vectors",
            "1000",
            "--max-qps",
            "5",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        (&v["limits"]["max_vectors"], &v["limits"]["max_qps"]),
        (&serde_json::json!(1000), &serde_json::json!(5.0)),
        "{v}"
    );
    let (ok, v, err) = strata(
        &server,
        &["tenant", "update", "acme", "--max-vectors", "none"],
    );
    assert!(ok, "{err}");
    assert!(
        v["limits"].get("max_vectors").is_none_or(Value::is_null),
        "{v}"
    );
    assert_eq!(v["limits"]["max_qps"], 5.0, "{v}");
    let (ok, _, err) = strata(
        &server,
        &["tenant", "update", "acme", "--max-vectors", "lots"],
    );
    assert!(!ok && err.contains("none to remove the limit"), "{err}");
    let (ok, _, err) = strata(&server, &["tenant", "update", "acme"]);
    assert!(!ok && err.contains("nothing to update"), "{err}");
    // The hierarchy: a child at creation, the tree, and moving it out.
    let (ok, v, err) = strata(
        &server,
        &[
            "tenant",
            "create",
            "acme-team",
            "--parent",
            "acme",
            "--max-vectors",
            "500",
            "--weight",
            "2",
        ],
    );
    assert!(ok && v["parent"] == "acme", "{v} {err}");
    assert_eq!(
        (&v["limits"]["max_vectors"], &v["weight"]),
        (&serde_json::json!(500), &serde_json::json!(2))
    );
    let (ok, v, _) = strata(&server, &["tenant", "tree"]);
    assert!(ok, "{v}");
    assert_eq!(
        v["tenants"][0],
        serde_json::json!({"id": "acme", "children": ["acme-team"]})
    );
    let (ok, v, err) = strata(
        &server,
        &["tenant", "update", "acme", "--parent", "acme-team"],
    );
    assert!(!ok && err.contains("parent"), "a cycle: {v} {err}");
    let (ok, v, _) = strata(&server, &["tenant", "update", "acme-team", "--no-parent"]);
    assert!(ok && v.get("parent").is_none(), "{v}");
    let (ok, v, _) = strata(&server, &["tenant", "delete", "acme-team", "--hard"]);
    assert!(ok, "{v}");
    // Metadata: set at creation, merged by an update, refused before sending when not JSON.
    let (ok, v, err) = strata(
        &server,
        &[
            "tenant",
            "create",
            "meta",
            "--metadata",
            r#"{"team":"search","tier":1}"#,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        v["metadata"],
        serde_json::json!({"team": "search", "tier": 1})
    );
    let (ok, v, err) = strata(
        &server,
        &[
            "tenant",
            "update",
            "meta",
            "--metadata",
            r#"{"tier":null,"plan":"pro"}"#,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        v["metadata"],
        serde_json::json!({"team": "search", "plan": "pro"})
    );
    let (ok, _, err) = strata(
        &server,
        &["tenant", "create", "meta2", "--metadata", "{team"],
    );
    assert!(!ok && err.contains("metadata"), "{err}");
    let (ok, _, err) = strata(&server, &["tenant", "create", "meta2", "--metadata", "[1]"]);
    assert!(!ok && err.contains("metadata"), "{err}");
    // An integrity policy: set at creation, replaced by an update, cleared with null; the
    // server's refusal of one out of range names the field.
    let policy = r#"{"latency_contract_ms":50,"consecutive":2}"#;
    let (ok, v, err) = strata(
        &server,
        &["tenant", "create", "pol", "--integrity-policy", policy],
    );
    assert!(ok, "{err}");
    assert_eq!(
        (
            &v["integrity_policy"]["latency_contract_ms"],
            &v["integrity_policy"]["consecutive"]
        ),
        (&serde_json::json!(50.0), &serde_json::json!(2)),
        "{v}"
    );
    let (ok, v, err) = strata(
        &server,
        &["tenant", "update", "pol", "--integrity-policy", "null"],
    );
    assert!(ok && v.get("integrity_policy").is_none(), "{v} {err}");
    let (ok, _, err) = strata(
        &server,
        &[
            "tenant",
            "update",
            "pol",
            "--integrity-policy",
            r#"{"consecutive":0}"#,
        ],
    );
    assert!(!ok && err.contains("integrity_policy.consecutive"), "{err}");
    let (ok, _, err) = strata(
        &server,
        &["tenant", "update", "pol", "--integrity-policy", "7"],
    );
    assert!(!ok && err.contains("integrity policy"), "{err}");
    let (ok, _, err) = strata(
        &server,
        &["tenant", "create", "nul", "--integrity-policy", "null"],
    );
    assert!(!ok && err.contains("must be a JSON object"), "{err}");

    let (ok, v, err) = strata(
        &server,
        &[
            "key",
            "create",
            "--tenant",
            "acme",
            "--permissions",
            "read",
            "--domains",
            "support",
        ],
    );
    assert!(ok, "{err}");
    let secret = v["key"].as_str().expect("secret").to_owned();
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(server.get("/v1/memories/list", &secret).0, 200);

    let (ok, v, _) = strata(&server, &["key", "list", "--tenant", "acme"]);
    assert!(ok, "{v}");
    let listed = v["keys"].to_string();
    assert!(
        listed.contains(&id) && !listed.contains(&secret),
        "{listed}"
    );

    let (ok, v, err) = strata(&server, &["key", "revoke", &id]);
    assert!(ok && v["revoked_at"].is_number(), "{err} {v}");
    assert_eq!(server.get("/v1/memories/list", &secret).0, 401);
}

#[test]
fn a_bad_operator_key_is_reported() {
    let server = Server::start();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["tenant", "list", "--server", &server.url, "--key", "wrong"])
        .output()
        .expect("run strata");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNAUTHORIZED"));
}

/// A `--server` that is no URL is a usage error that says so, before any request; one that
/// parses but answers nothing is "cannot reach". And `tenant update --help` says what the
/// server does with a partial integrity policy: it merges it.
#[test]
fn a_server_that_is_no_url_is_told_apart_from_one_that_cannot_be_reached() {
    let run = |server: &str| {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["tenant", "list", "--server", server])
            .env("STRATA_KEY", OPERATOR_KEY)
            .output()
            .expect("run strata")
    };
    let out = run("notaurl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not a valid server URL") && !stderr.contains("cannot reach"),
        "{stderr}"
    );
    // Nothing listens on port 9 (discard) on a test machine.
    let out = run("http://127.0.0.1:9");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("cannot reach http://127.0.0.1:9"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["tenant", "update", "--help"])
        .output()
        .expect("run strata");
    // Wrapped to the terminal's width, which differs between machines: compared as words.
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("integrity policy (merged") && !help.contains("replaced"),
        "{help}"
    );
}

#[test]
fn lifecycle_and_audit_commands_work() {
    let server = Server::start();
    server.tenant("acme");
    let run = |args: &[&str]| {
        let (ok, v, err) = strata(&server, args);
        assert!(ok, "{args:?}: {err}");
        v
    };
    let v = run(&[
        "tenant",
        "update",
        "acme",
        "--max-vectors",
        "10",
        "--weight",
        "4",
    ]);
    assert_eq!(
        (v["limits"]["max_vectors"].as_u64(), v["weight"].as_u64()),
        (Some(10), Some(4)),
        "{v}"
    );
    // Flags not given keep their values.
    let v = run(&["tenant", "update", "acme", "--max-collections", "5"]);
    assert_eq!(
        (
            v["limits"]["max_vectors"].as_u64(),
            v["limits"]["max_collections"].as_u64()
        ),
        (Some(10), Some(5)),
        "{v}"
    );
    assert_eq!(run(&["tenant", "suspend", "acme"])["status"], "suspended");
    assert_eq!(run(&["tenant", "resume", "acme"])["status"], "active");
    assert_eq!(run(&["tenant", "delete", "acme"])["status"], "deleted");
    assert_eq!(run(&["tenant", "restore", "acme"])["status"], "active");
    let v = run(&["audit", "--tenant", "acme", "--action", "tenant.suspend"]);
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["actor"], "operator:env");
    let v = run(&["tenant", "delete", "acme", "--hard"]);
    assert_eq!(v["purged"], true, "{v}");
    let (ok, _, err) = strata(&server, &["tenant", "show", "acme"]);
    assert!(!ok && err.contains("NOT_FOUND"), "{err}");
}

/// `strata bench noisy` with short phases against `server`; its stdout.
fn bench_noisy(server: &Server) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "bench",
            "noisy",
            "--records",
            "60",
            "--seconds",
            "1",
            "--flood-clients",
            "4",
            "--steady-qps",
            "20",
        ])
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

#[test]
fn the_noisy_neighbour_benchmark_runs_end_to_end() {
    let server = Server::start_with(&[("STRATA__SERVER__STAGE_TIMING", "true")]);
    let stdout = bench_noisy(&server);
    assert!(
        stdout.contains("| B alone |") && stdout.contains("| B with A flooding |"),
        "{stdout}"
    );
    assert!(stdout.contains("p99 ratio"), "{stdout}");
    // The breakdown of B's requests by the server's stage timings: every search of B passed
    // through the pool, so its mean `job` is a real duration, not the 0 of a missing stage.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| B with A flooding, all (mean) |"))
        .unwrap_or_else(|| panic!("no breakdown: {stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | label | n | latency | parse | admit | body | prepare | queue | job | durable | reply
    // | outside | late |
    let job: f64 = cells[9].parse().expect("job ms");
    assert!(job > 0.0, "{row}");
    assert!(stdout.contains("each request at or above p99"), "{stdout}");
    // Both tenants were created and filled.
    let (status, v) = server.get("/v1/admin/tenants/bench-b", OPERATOR_KEY);
    assert_eq!(status, 200);
    assert_eq!(v["usage"]["records"], 60, "{v}");
}

/// Against a server with stage timings off (the default), the benchmark still measures, and
/// says how to get the breakdown instead of printing an empty one.
#[test]
fn the_noisy_neighbour_benchmark_says_how_to_get_the_breakdown() {
    let server = Server::start();
    let stdout = bench_noisy(&server);
    assert!(stdout.contains("p99 ratio"), "{stdout}");
    assert!(
        stdout.contains("STRATA__SERVER__STAGE_TIMING=true"),
        "{stdout}"
    );
    assert!(!stdout.contains("(mean) |"), "{stdout}");
}

#[test]
fn logs_written_to_a_file_have_no_colour_codes() {
    let server = Server::start();
    server.tenant("acme");
    assert_eq!(server.get("/v1/memories/list", "sk_wrong").0, 401);
    let log = server.log();
    assert!(log.contains("serving"), "the log is empty: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a log file: {log}"
    );
}

#[test]
fn the_operator_key_is_shown_only_by_a_start_that_listens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let start = |listen: &str| {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("serve")
            .env("STRATA__SERVER__LISTEN", listen)
            .env("STRATA__SERVER__DATA_DIR", dir.path().join("data"))
            .env("STRATA__EMBEDDER__ENABLED", "false")
            .env_remove("STRATA_OPERATOR_KEY")
            .env_remove("STRATA_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn strata")
    };
    // The port is taken: the start fails, and must not have used up the key's one showing.
    let failed = start(&taken.local_addr().unwrap().to_string())
        .wait_with_output()
        .expect("wait");
    assert!(!failed.status.success());
    let out = String::from_utf8_lossy(&failed.stdout);
    assert!(!out.contains("operator key"), "{out}");

    let mut child = start("127.0.0.1:0");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        child.stdout.take().expect("stdout"),
    ));
    let first = lines.next().expect("a line").expect("read");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.starts_with("operator key (shown once, keep it safe): sk_"),
        "{first}"
    );
}

/// An address that cannot be listened on is reported before the data directory is opened
/// (and before the embedding model is loaded or fetched, which comes after it): here a data
/// directory that is a file would fail the start too, and the port is what the start names.
#[test]
fn a_taken_port_is_reported_before_the_data_directory_is_opened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"not a directory").expect("write");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().unwrap().to_string();
    let err = common::serve_refused(&[
        ("STRATA__SERVER__LISTEN", listen.as_ref()),
        ("STRATA__SERVER__DATA_DIR", not_a_dir.as_ref()),
    ]);
    assert!(err.contains("binding"), "{err}");
    assert!(!err.contains("data directory"), "{err}");
}

/// `strata check` walks every page of the data files with the server stopped: a sound
/// directory checks out, one in use is refused, and damage, or a dedicated tenant's file gone
/// missing, is named with a failing exit.
#[test]
fn check_finds_damage_in_a_stopped_servers_files() {
    let mut server = Server::start();
    server.tenant("acme");
    server.tenant("solo");
    let key = server.key("acme", serde_json::json!({}));
    for i in 0..300 {
        let body = serde_json::json!({"content": format!("memory {i} {}", "x".repeat(300))});
        assert_eq!(server.post("/v1/memories", &key, body).0, 201);
    }
    // A dedicated tenant (an empty one moves at once).
    let (s, v) = server.call(
        "POST",
        "/v1/admin/tenants/solo/migrate",
        Some(OPERATOR_KEY),
        &[],
        Some(&serde_json::json!({"target": "dedicated"})),
    );
    assert!(s == 200 || s == 202, "{v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while server.get("/v1/admin/tenants/solo", OPERATOR_KEY).1["isolation"] != "dedicated" {
        assert!(std::time::Instant::now() < deadline, "never dedicated");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let data = server.dir.path().join("data");
    // Its exit status, stdout and stderr.
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("check")
            .env("STRATA__SERVER__DATA_DIR", &data)
            .env_remove("STRATA_CONFIG")
            .output()
            .expect("run strata check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Held by the running server: not checked, and said so, with its own exit status; not
    // reported as damage.
    let (code, stdout, stderr) = check();
    assert_eq!(code, Some(3), "{stdout}");
    assert!(
        stdout.starts_with("IN USE ") && !stdout.contains("DAMAGED"),
        "{stdout}"
    );
    assert!(stderr.contains("stop it first"), "{stderr}");
    server.stop();
    let (code, out, _) = check();
    assert!(
        code == Some(0) && out.starts_with("ok ") && out.lines().count() == 2,
        "{out}"
    );
    // The dedicated tenant's directory gone: only the registry knows it should be there.
    let tenants = data.join("tenants");
    let moved = tenants.with_file_name("tenants.away");
    std::fs::rename(&tenants, &moved).unwrap();
    let (code, out, _) = check();
    assert!(
        code != Some(0) && out.contains("tenant solo is dedicated"),
        "{out}"
    );
    std::fs::rename(&moved, &tenants).unwrap();
    let file = data.join("strata.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n / 4..3 * n / 4].fill(0xA5);
    std::fs::write(&file, bytes).unwrap();
    let (code, stdout, _) = check();
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("DAMAGED"), "{stdout}");
}

/// Tenant `acme` with an admin key (returned) and collection `vec` holding `n` 4-dimension
/// records `r0`, `r1`, ….
fn tenant_with_vectors(server: &Server, n: usize) -> String {
    server.tenant("acme");
    let key = server.key(
        "acme",
        serde_json::json!({"permissions": ["read", "write", "admin"]}),
    );
    let (s, v) = server.post(
        "/v1/collections",
        &key,
        serde_json::json!({"name": "vec", "dim": 4}),
    );
    assert_eq!(s, 201, "{v}");
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let x = i as f32;
            serde_json::json!({"id": format!("r{i}"), "modality": "vec",
                "vector": [1.0 + x, 2.0, 3.0 - x / n as f32, 0.5]})
        })
        .collect();
    for batch in records.chunks(1000) {
        let (s, v) = server.post(
            "/v1/memories",
            &key,
            serde_json::json!({ "records": batch }),
        );
        assert_eq!(s, 201, "{v}");
    }
    key
}

/// `tenant migrate` follows a data move to its end (the tenant's records and answers come
/// along), `migration`, `verify`, `integrity` and `residency` print the operator API's
/// answers, and a migration that cannot start fails the command.
#[test]
fn isolation_commands_migrate_and_report() {
    let server = Server::start();
    let key = tenant_with_vectors(&server, 300);
    let run = |args: &[&str]| {
        let (ok, v, err) = strata(&server, args);
        assert!(ok, "{args:?}: {err}");
        v
    };
    let v = run(&[
        "tenant",
        "migrate",
        "acme",
        "--to",
        "dedicated",
        "--dry-run",
    ]);
    assert_eq!(
        (v["dry_run"].as_bool(), v["records"].as_u64()),
        (Some(true), Some(300)),
        "{v}"
    );
    assert_eq!(run(&["tenant", "show", "acme"])["isolation"], "shared");
    // Followed to its end: the command answers the final status, the move done.
    let v = run(&["tenant", "migrate", "acme", "--to", "dedicated"]);
    assert_eq!(
        (v["state"].as_str(), v["level"].as_str()),
        (Some("done"), Some("dedicated")),
        "{v}"
    );
    assert_eq!(v["keys_copied"], v["keys_total"], "{v}");
    let v = run(&["tenant", "migration", "acme"]);
    assert_eq!(v["level"], "dedicated", "{v}");
    let v = run(&["tenant", "verify", "acme"]);
    assert_eq!(
        (v["ok"].as_bool(), v["records"].as_u64()),
        (Some(true), Some(300)),
        "{v}"
    );
    assert_eq!(v["dedicated_file"], true, "{v}");
    for id in ["r0", "r299"] {
        let (s, v) = server.get(&format!("/v1/memories/{id}"), &key);
        assert_eq!((s, v["id"].as_str()), (200, Some(id)), "{v}");
    }
    let v = run(&["tenant", "integrity", "acme"]);
    assert_eq!(v["state"], "normal", "{v}");
    assert!(run(&["tenant", "residency", "acme"]).is_object());
    assert!(run(&["tenant", "residency"]).is_object());
    // Back without data moving, and a bad request refused by the server or the parser.
    let v = run(&[
        "tenant",
        "migrate",
        "acme",
        "--to",
        "partition",
        "--index-params",
        r#"{"m":8}"#,
    ]);
    assert_eq!(v["to"], "partition", "{v}");
    let (ok, _, err) = strata(&server, &["tenant", "migrate", "ghost", "--to", "shared"]);
    assert!(!ok && err.contains("NOT_FOUND"), "{err}");
    let (ok, _, err) = strata(&server, &["tenant", "migrate", "acme", "--to", "nowhere"]);
    assert!(!ok && err.contains("nowhere"), "{err}");
    let (ok, _, err) = strata(&server, &["tenant", "verify", "a/b"]);
    assert!(
        !ok && err.contains("400"),
        "an id with a slash stays one segment: {err}"
    );
    let (ok, _, err) = strata(&server, &["tenant", "delete", "acme?hard=true"]);
    assert!(
        !ok,
        "an id with a query is not a hard delete of acme: {err}"
    );
    // Dot segments would be resolved as path steps by the HTTP client: refused before.
    for dots in [".", ".."] {
        let (ok, out, err) = strata(&server, &["tenant", "residency", dots]);
        assert!(
            !ok && out.is_null() && err.contains("cannot name a tenant or key"),
            "{dots}: {out} {err}"
        );
    }
    assert_eq!(run(&["tenant", "show", "acme"])["status"], "active");
}

/// `tenant migrate` follows a move through a restart of the server (which resumes it): the
/// server unreachable for a while is waited for, not taken for the move's failure.
#[test]
fn tenant_migrate_follows_a_move_through_a_restart() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    use std::time::Duration;

    let mut server = Server::start();
    // Enough that the move is still copying when the server is killed below.
    tenant_with_vectors(&server, 4000);
    let mut cli = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["tenant", "migrate", "acme", "--to", "dedicated"])
        .args(["--server", &server.url])
        .env("STRATA_KEY", OPERATOR_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata");
    // The move has started once the command says what it moves.
    let mut stderr = BufReader::new(cli.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("moving") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("stderr") > 0,
            "the command ended before the move started"
        );
    }
    server.kill();
    // Down for a few of the command's polls, then back at the same address.
    std::thread::sleep(Duration::from_secs(2));
    let address = server.url.trim_start_matches("http://").to_owned();
    server.set_env("STRATA__SERVER__LISTEN", &address);
    server.restart();
    let status = cli.wait().expect("wait");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("stderr");
    let mut out = String::new();
    cli.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("stdout");
    assert!(status.success(), "{rest}");
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    assert_eq!(
        (v["state"].as_str(), v["level"].as_str()),
        (Some("done"), Some("dedicated")),
        "{out} {rest}"
    );
}
