//! A log that cannot be written (its disk full) loses lines, never the server: with stderr on
//! `/dev/full`, where every write fails with `ENOSPC`, the server starts, answers requests that
//! log (a refused credential logs a warning) and stops cleanly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

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
