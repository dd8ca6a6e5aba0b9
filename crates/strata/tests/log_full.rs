//! A log or stdout that cannot be written (its disk full) loses lines, never the server: with
//! stderr (and stdout) on `/dev/full`, where every write fails with `ENOSPC`, the server starts,
//! answers requests that log (a refused credential logs a warning) and stops cleanly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Stdout on `/dev/full` too: the address line cannot be printed, and the server serves anyway
/// (its port is then read from nowhere, so this one listens on a fixed free port).
#[test]
fn an_unwritable_stdout_does_not_stop_the_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full")
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .env("STRATA__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("STRATA__SERVER__DATA_DIR", dir.path().join("data"))
        .env("STRATA_OPERATOR_KEY", common::OPERATOR_KEY)
        .env("STRATA__EMBEDDER__ENABLED", "false")
        .env_remove("STRATA_CONFIG")
        .stdin(Stdio::null())
        .stdout(full())
        .stderr(full())
        .spawn()
        .expect("spawn strata");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/healthz")).send() {
            assert_eq!(r.status().as_u16(), 200);
            break;
        }
        assert!(child.try_wait().expect("poll").is_none(), "the server died");
        assert!(std::time::Instant::now() < deadline, "never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert!(child.wait().expect("wait").success());
}

#[test]
fn a_log_that_cannot_be_written_does_not_stop_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .env("STRATA__SERVER__LISTEN", "127.0.0.1:0")
        .env("STRATA__SERVER__DATA_DIR", dir.path().join("data"))
        .env("STRATA_OPERATOR_KEY", common::OPERATOR_KEY)
        .env("STRATA__EMBEDDER__ENABLED", "false")
        .env("RUST_LOG", "debug")
        .env_remove("STRATA_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(full)
        .spawn()
        .expect("spawn strata");
    let stdout = child.stdout.take().expect("stdout");
    let url = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
        .expect("the server printed its address");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    for _ in 0..50 {
        let refused = http
            .get(format!("{url}/v1/memories/list"))
            .bearer_auth("not-a-key")
            .send()
            .expect("answered");
        assert_eq!(refused.status().as_u16(), 401);
    }
    let health = http.get(format!("{url}/healthz")).send().expect("answered");
    assert_eq!(health.status().as_u16(), 200);
    assert!(child.try_wait().expect("poll").is_none(), "the server died");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "the server did not stop cleanly: {status}"
    );
}
