//! `strata tenant migrate | migration | verify | integrity | residency`: the operator API for
//! isolation levels, integrity and residency from the command line.
//!
//! A data move (to or from `dedicated`) runs in the server's background and can take minutes;
//! `migrate` follows it on a progress line until it ends, so a script gets an exit status that
//! says how it ended instead of a `202` it must poll itself.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::{Client, segment};
use crate::progress::Progress;

/// How often a followed move's status is read: often enough for a live line, rarely enough
/// that following a long move costs the server nothing that matters.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// How long a followed move's status may stay out of reach (the server restarting, which
/// resumes the move; a start that opens large files takes a while) before the command gives up
/// following it.
const UNREACHABLE_FOR_AT_MOST: Duration = Duration::from_secs(120);

/// What `migrate` asks for.
pub struct MigrateArgs {
    pub target: String,
    pub index_params: Option<Value>,
    pub dry_run: bool,
    /// Answer as soon as the move has started (`202`), without following it.
    pub detach: bool,
}

/// `strata tenant migrate`: starts the migration, follows a data move to its end and prints
/// the final status (or the report, for one that moves no data or a dry run). Fails when the
/// move ends other than `done` or `rebuilding` (failed, cancelled, interrupted for good): the
/// tenant is then whole at its old level, as the status says. A move interrupted by a restart
/// that the server will resume is followed on.
pub async fn migrate(client: &Client, id: &str, args: MigrateArgs) -> anyhow::Result<Value> {
    let mut body = json!({ "target": args.target, "dry_run": args.dry_run });
    if let Some(p) = args.index_params {
        body["index_params"] = p;
    }
    let path = format!("/v1/admin/tenants/{}/migrate", segment(id));
    let res = client
        .send(client.request(Method::POST, &path).json(&body))
        .await?;
    let started = res.status() == StatusCode::ACCEPTED;
    let report: Value = res.json().await.context("reading the migration report")?;
    if !started || args.detach {
        return Ok(report);
    }
    let level = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    eprintln!(
        "moving {} records ({} bytes) of tenant {id} from {} to {}",
        report["records"],
        report["bytes"],
        level(&report["from"]),
        level(&report["to"])
    );
    follow(client, id).await
}

/// Reads the tenant's migration status until its data move has ended, drawing its progress.
async fn follow(client: &Client, id: &str) -> anyhow::Result<Value> {
    let path = migration_path(id);
    let mut progress = Progress::stderr();
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        // The move goes on whatever happens to this command, through a restart of the server
        // too: a status read that cannot reach it, or that a starting or busy server refuses
        // (5xx), is tried again for a while.
        let res = client.request(Method::GET, &path).send().await;
        let missed = match &res {
            Err(e) => Some(e.to_string()),
            Ok(r) if r.status().is_server_error() => Some(r.status().to_string()),
            Ok(_) => None,
        };
        if let Some(why) = missed {
            let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() < UNREACHABLE_FOR_AT_MOST {
                progress.show(&format!("waiting for the server ({why})    "));
                tokio::time::sleep(POLL_EVERY * 2).await;
                continue;
            }
            progress.finish();
            bail!(
                "lost track of the migration, which the server resumes when it runs ({why}); \
                 its outcome: strata tenant migration {id}"
            );
        }
        unreachable_since = None;
        let status = client.answer_json(res?).await?;
        if !moving(&status) {
            progress.finish();
            return ended(status);
        }
        progress.show(&progress_line(&status));
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Whether the data move is still under way: in one of its steps, or interrupted by a restart
/// of the server that will resume it (`will_resume`), so it has not ended.
fn moving(status: &Value) -> bool {
    match status["state"].as_str() {
        Some("copying" | "catching_up" | "cleaning_up") => true,
        Some("interrupted") => status["will_resume"].as_bool() == Some(true),
        _ => false,
    }
}

/// A move's end as the command's outcome: `done` (or `rebuilding`: flipped, graphs building in
/// the background) succeeds, anything else is an error carrying the status.
fn ended(status: Value) -> anyhow::Result<Value> {
    match status["state"].as_str() {
        Some("done" | "rebuilding") => Ok(status),
        Some(state) => {
            let why = status["error"].as_str().unwrap_or("see the status");
            bail!(
                "the migration ended {state} ({why}); the tenant stays at level {}:\n{}",
                status["level"],
                serde_json::to_string_pretty(&status).unwrap_or_default()
            )
        }
        None => bail!("the server answered a migration status without a state: {status}"),
    }
}

fn progress_line(status: &Value) -> String {
    let state = status["state"].as_str().unwrap_or("?");
    let copied = status["keys_copied"].as_u64().unwrap_or(0);
    let total = status["keys_total"].as_u64().unwrap_or(0);
    let percent = if total == 0 {
        0.0
    } else {
        100.0 * copied as f64 / total as f64
    };
    format!("{state:<11} {copied} of {total} keys ({percent:.1}%)    ")
}

/// `strata tenant migration`: the status, or with `cancel` the status after cancelling.
pub async fn migration(client: &Client, id: &str, cancel: bool) -> anyhow::Result<Value> {
    let method = if cancel { Method::DELETE } else { Method::GET };
    client.call(method, &migration_path(id), None).await
}

/// `strata tenant verify`: the report; an error (exit 1) when it found problems, so a script
/// or a cron job can act on the status alone.
pub async fn verify(client: &Client, id: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/admin/tenants/{}/verify", segment(id));
    let report = client.call(Method::POST, &path, None).await?;
    if report["ok"] != Value::Bool(true) {
        bail!(
            "tenant {id} failed verification ({} problems):\n{}",
            report["problem_count"],
            serde_json::to_string_pretty(&report)?
        );
    }
    Ok(report)
}

/// `strata tenant integrity`.
pub async fn integrity(client: &Client, id: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/admin/tenants/{}/integrity", segment(id));
    client.call(Method::GET, &path, None).await
}

/// `strata tenant residency`: one tenant's, or without an id the server's summary.
pub async fn residency(client: &Client, id: Option<&str>) -> anyhow::Result<Value> {
    let path = match id {
        Some(id) => format!("/v1/admin/tenants/{}/residency", segment(id)),
        None => "/v1/admin/residency".to_owned(),
    };
    client.call(Method::GET, &path, None).await
}

fn migration_path(id: &str) -> String {
    format!("/v1/admin/tenants/{}/migration", segment(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_succeeds_only_when_done() {
        assert!(ended(json!({"state": "done", "level": "dedicated"})).is_ok());
        assert!(ended(json!({"state": "rebuilding", "level": "partition"})).is_ok());
        let e = ended(json!({"state": "failed", "level": "shared", "error": "disk full"}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("failed (disk full)") && e.contains("\"shared\""),
            "{e}"
        );
        assert!(ended(json!({"state": "cancelled", "level": "shared"})).is_err());
        assert!(ended(json!({})).is_err());
    }

    #[test]
    fn a_move_the_server_will_resume_is_still_followed() {
        for state in ["copying", "catching_up", "cleaning_up"] {
            assert!(moving(&json!({ "state": state })), "{state}");
        }
        assert!(moving(
            &json!({"state": "interrupted", "will_resume": true})
        ));
        assert!(!moving(
            &json!({"state": "interrupted", "will_resume": false})
        ));
        for state in ["done", "rebuilding", "failed", "cancelled"] {
            assert!(!moving(&json!({ "state": state })), "{state}");
        }
    }

    #[test]
    fn progress_shows_keys_copied_of_the_total() {
        let line =
            progress_line(&json!({"state": "copying", "keys_copied": 250, "keys_total": 1000}));
        assert!(
            line.starts_with("copying     250 of 1000 keys (25.0%)"),
            "{line}"
        );
        let line =
            progress_line(&json!({"state": "catching_up", "keys_copied": 0, "keys_total": 0}));
        assert!(line.contains("0 of 0 keys (0.0%)"), "{line}");
    }
}
