//! `strata backup`: an online backup of a running server's whole data directory, followed on
//! a progress line until it ends, so a script gets an exit status that says how it ended.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::{Client, segment};
use crate::progress::Progress;

/// How often a followed backup's status is read.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Status reads in a row that may fail before the command gives up following.
const MAX_MISSES: u32 = 10;

/// Starts a backup (named `name`, else by the server from the time), follows it to its end and
/// returns its final status; with `detach`, returns its status once started. Fails when the
/// backup failed, with the server's reason.
pub async fn backup(client: &Client, name: Option<String>, detach: bool) -> anyhow::Result<Value> {
    let mut body = json!({});
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    let res = client
        .send(
            client
                .request(Method::POST, "/v1/admin/backups")
                .json(&body),
        )
        .await?;
    let started = res.status() == StatusCode::ACCEPTED;
    let status: Value = res.json().await.context("reading the backup's status")?;
    if !started || detach {
        return ended(status);
    }
    let path = format!(
        "/v1/admin/backups/{}",
        segment(status["name"].as_str().unwrap_or_default())
    );
    eprintln!("backing up into {}", status["path"].as_str().unwrap_or("?"));
    let mut progress = Progress::stderr();
    let mut misses = 0;
    loop {
        // The backup goes on whatever happens to this command: a status read lost to the
        // network or refused by a busy server (5xx) is tried again before giving up on it.
        let res = client.request(Method::GET, &path).send().await;
        let retry = match &res {
            Err(_) => true,
            Ok(r) => r.status().is_server_error(),
        };
        if retry && misses < MAX_MISSES {
            misses += 1;
            tokio::time::sleep(POLL_EVERY * 2).await;
            continue;
        }
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                progress.finish();
                bail!(
                    "lost track of the backup, which goes on in the server ({e}); its outcome: GET {path}"
                );
            }
        };
        misses = 0;
        let code = res.status();
        let status: Value = res.json().await.unwrap_or(Value::Null);
        if code == StatusCode::NOT_FOUND {
            progress.finish();
            bail!(
                "the backup ended without an outcome (did the server restart?); nothing is left under its name"
            );
        }
        if !code.is_success() {
            progress.finish();
            bail!(
                "{code} {}: {}",
                status["error"]["code"].as_str().unwrap_or("?"),
                status["error"]["message"].as_str().unwrap_or("")
            );
        }
        if status["state"] != "running" {
            progress.finish();
            return ended(status);
        }
        progress.show(&progress_line(&status));
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A backup's status as the command's outcome: `failed` and `interrupted` fail.
fn ended(status: Value) -> anyhow::Result<Value> {
    let why = || {
        status["error"]
            .as_str()
            .unwrap_or("see the server's log")
            .to_owned()
    };
    match status["state"].as_str() {
        Some("failed") => bail!(
            "the backup failed ({}); nothing is left under its name",
            why()
        ),
        Some("interrupted") => bail!("the backup was cut short: {}", why()),
        _ => Ok(status),
    }
}

fn progress_line(status: &Value) -> String {
    let copied = status["rows_copied"].as_u64().unwrap_or(0);
    match (status["phase"].as_str(), status["rows_total"].as_u64()) {
        (Some("copying"), Some(total)) if total > 0 => {
            let percent = 100.0 * copied as f64 / total as f64;
            format!("copying {copied} of {total} rows ({percent:.1}%)    ")
        }
        (Some("index_files"), _) => "copying the index files    ".into(),
        (Some("compacting"), _) => format!("compacting ({copied} rows copied)    "),
        (Some("syncing"), _) => "syncing to disk    ".into(),
        _ => "taking the snapshot    ".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_says_how_far_the_copy_is() {
        let line =
            progress_line(&json!({"phase": "copying", "rows_copied": 25, "rows_total": 100}));
        assert_eq!(line.trim_end(), "copying 25 of 100 rows (25.0%)");
        assert_eq!(
            progress_line(&json!({"phase": "snapshot", "rows_copied": 0, "rows_total": null}))
                .trim_end(),
            "taking the snapshot"
        );
        assert_eq!(
            progress_line(&json!({"phase": "compacting", "rows_copied": 9, "rows_total": 9}))
                .trim_end(),
            "compacting (9 rows copied)"
        );
    }

    #[test]
    fn a_failed_backup_fails_the_command_with_its_reason() {
        let err = ended(json!({"state": "failed", "error": "disk full"})).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(ended(json!({"state": "done"})).is_ok());
    }
}
