//! `strata serve`: open the engine, make sure an operator can log in, serve HTTP until
//! SIGINT/SIGTERM, finish in-flight requests (bounded by a timeout), then close storage.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strata_api::{ApiConfig, AppState};
use strata_auth::Authenticator;
use strata_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;

/// Environment variable holding the operator key, when it is not created at first start.
pub const OPERATOR_KEY_ENV: &str = "STRATA_OPERATOR_KEY";

/// Connections the kernel queues for the listening socket before the server accepts them (it
/// caps this at `net.core.somaxconn`). The default, 128, overflowed under a few clients
/// churning connections: every other client's connection then waited out a SYN retransmission
/// (1 to 3 s).
const LISTEN_BACKLOG: u32 = 4096;

/// The listening socket on `address`, with [`LISTEN_BACKLOG`].
async fn listen(address: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As tokio's own `bind`: a restart rebinds at once, not after the old socket's wait.
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// Runs the server until a stop signal. `lane`: where the requests of tenants over their
/// share of the CPU run (`[scheduler] over_share_io_threads`; `None`: on this runtime).
pub async fn run(config: Config, lane: Option<strata_api::OverShareLane>) -> anyhow::Result<()> {
    // An address that cannot be listened on (a typo, a port in use) is reported at once, not
    // after opening the data directory and loading or fetching the embedding model. Only a
    // probe: the listening socket itself is made once the server can answer, so clients get
    // "connection refused" rather than an unanswered connection while it starts.
    drop(
        TcpListener::bind(&config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?,
    );
    // Refused at start rather than at the first backup, where the operator may not look; and
    // before the data directory is opened, whose start-up clean-up would delete a backup
    // inside it that looks like a tenant's leftover.
    strata_engine::check_backup_dir(&config.server.backup_dir, &config.server.data_dir)
        .context("server.backup_dir")?;
    let data_dir = config.server.data_dir.clone();
    let engine_config = strata_engine::EngineConfig {
        // The graph builds compute at the background workers' priority.
        background_priority: config.scheduler.background_priority.api(),
        // Tokens' `iat` may run this far ahead: a purged id waits it out before it returns.
        jwt_leeway_secs: if config.auth.verifies_jwts() {
            config.auth.jwt_leeway_secs
        } else {
            0
        },
        ..config.engine.clone()
    };
    let embedder_config = config.embedder.clone();
    let engine = tokio::task::spawn_blocking(move || {
        let mut engine = Engine::open(&data_dir, engine_config)?;
        if let Some(embedder) = crate::model::load(&embedder_config) {
            engine.set_embedder(embedder)?;
        }
        Ok::<_, strata_engine::EngineError>(engine)
    })
    .await?
    .with_context(|| {
        format!(
            "opening data directory {}",
            config.server.data_dir.display()
        )
    })?;
    let engine = Arc::new(engine);
    let env_key = std::env::var(OPERATOR_KEY_ENV)
        .ok()
        .filter(|k| !k.is_empty());
    let auth = Arc::new(
        Authenticator::new(&config.auth, env_key.as_deref())?
            .with_max_user_tokens(engine.config().limits.max_user_tokens),
    );
    let sweeper_op = auth.system_operator("retention");
    let expiry_op = auth.system_operator("expiry");
    let resume_op = auth.system_operator("resume");
    // An import is all or nothing: what one cut short by a crash or shutdown left goes before
    // anything is served.
    let discarder = (Arc::clone(&engine), auth.system_operator("import"));
    tokio::task::spawn_blocking(move || discarder.0.discard_interrupted_imports(&discarder.1))
        .await?
        .context("discarding imports cut short")?;
    // Bind before the first-start operator key is created and shown: a start that cannot
    // listen must not consume the one showing of that key.
    let listener = listen(&config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    if let Some(created) = auth.bootstrap_operator(engine.credentials())? {
        // Shown once: only its hash is stored. stdout, so it is not mixed into the log stream.
        // Unshown it is useless, so a stdout that cannot take it stops the start, saying how
        // to administer the server anyway.
        let mut out = std::io::stdout();
        writeln!(
            out,
            "operator key (shown once, keep it safe): {}",
            created.secret
        )
        .and_then(|()| out.flush())
        .context(
            "showing the first-start operator key on stdout; start with STRATA_OPERATOR_KEY \
             set to administer this server",
        )?;
    }

    let state = AppState::new(
        Arc::clone(&engine),
        auth,
        ApiConfig {
            max_body_bytes: config.server.max_body_bytes,
            max_body_bytes_per_tenant: config.server.max_body_bytes_per_tenant,
            max_import_bytes: config.server.max_import_bytes,
            retention_secs: config.server.retention_secs,
            pool: strata_api::PoolConfig {
                workers: config.server.workers,
                max_queue: config.server.max_queue,
                max_queue_per_tenant: config.server.max_queue_per_tenant,
                reserved_workers: config.scheduler.reserved_workers,
                background_workers: config.background_workers(),
                background_priority: config.scheduler.background_priority.api(),
                long_job_after: Duration::from_millis(config.scheduler.long_job_after_ms),
                idle_poll: config.scheduler.idle_poll(),
                idle_poll_always: config.scheduler.idle_poll_always,
                compute_aside: config.scheduler.lower_over_share_index_work,
            },
            body_read_timeout: Duration::from_secs(config.server.body_read_timeout_secs),
            body_min_bytes_per_sec: config.server.body_min_bytes_per_sec,
            max_uri_bytes: config.server.max_uri_bytes,
            metrics: config.metrics.api(),
            security_events: config.audit.api(),
            max_answer_bytes_per_tenant: config.server.max_answer_bytes_per_tenant,
            max_answer_bytes: config.server.max_answer_bytes,
            backup_dir: config.server.backup_dir.clone(),
        },
    )
    .context("starting the worker pool")?;
    let app = strata_api::router(state.clone());
    let addr = listener.local_addr()?;
    // A fixed, parseable line: scripts and tests read the bound port from it. A stdout that
    // cannot take it (a full disk) must not stop the server: the log says the same.
    let mut out = std::io::stdout();
    if let Err(e) = writeln!(out, "listening on http://{addr}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "stdout cannot be written; the address is in this log only");
    }
    tracing::info!(%addr, data_dir = %config.server.data_dir.display(), "serving");

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let signal_state = state.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
        signal_state.set_ready(false);
        // Background migrations stop now, so that a request waiting for one ends before the
        // drain's timeout; `close` waits for them.
        let stopper = Arc::clone(&signal_state.engine);
        tokio::task::spawn_blocking(move || stopper.stop_migrations(Duration::ZERO));
        let _ = stop_tx.send(true);
    });
    // Data moves a crash or shutdown cut short resume in the background, now that start-up
    // has removed their partial copies (`engine.isolation.resume_interrupted_migrations`).
    let resumer = {
        let (engine, op) = (Arc::clone(&engine), resume_op);
        tokio::task::spawn_blocking(move || match engine.resume_interrupted_migrations(&op) {
            Ok(ended) if ended.is_empty() => {}
            Ok(ended) => tracing::info!(?ended, "interrupted migrations resumed"),
            Err(e) => tracing::error!(error = %e, "resuming interrupted migrations failed"),
        })
    };
    let sweeper = (config.server.purge_interval_secs > 0).then(|| {
        tokio::spawn(purge_sweep(
            Arc::clone(&engine),
            sweeper_op,
            Duration::from_secs(config.server.purge_interval_secs),
            config.server.retention_secs,
            config.audit.retention_ms(),
            stop_rx.clone(),
        ))
    });
    let expirer = (config.server.expiry_sweep_interval_secs > 0).then(|| {
        tokio::spawn(expiry_sweep(
            Arc::clone(&engine),
            expiry_op,
            Duration::from_secs(config.server.expiry_sweep_interval_secs),
            stop_rx.clone(),
        ))
    });
    let checkpointer = (config.server.index_checkpoint_interval_secs > 0).then(|| {
        tokio::spawn(index_checkpoints(
            Arc::clone(&engine),
            Duration::from_secs(config.server.index_checkpoint_interval_secs),
            config.index_checkpoint_changes(),
            stop_rx.clone(),
        ))
    });
    let retirer = tokio::spawn(retire_idle_tenants(Arc::clone(&engine), stop_rx.clone()));
    // Suppressed security events whose summary no later event carried reach their log once
    // their bucket refills (`[audit]`), and the rest at shutdown below.
    let summaries = tokio::spawn(summary_flush(state.clone(), stop_rx.clone()));
    let limits = strata_api::ServerLimits {
        max_connections: connection_cap(config.server.max_connections, fd_limit()),
        max_connections_per_tenant: config.server.max_connections_per_tenant,
        header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(config.server.idle_timeout_secs),
        write_timeout: Duration::from_secs(config.server.write_timeout_secs),
        max_header_bytes: config.server.max_header_bytes,
        stage_timing: config.server.stage_timing,
    };
    tracing::info!(max_connections = limits.max_connections, "connection limit");
    if lane.is_some() {
        tracing::info!(
            threads = config.over_share_io_threads(),
            "async threads for tenants over their share of the CPU"
        );
    }
    let mut graceful_rx = stop_rx.clone();
    let server = strata_api::serve(listener, app, limits, lane, async move {
        let _ = graceful_rx.wait_for(|stop| *stop).await;
    });
    let timeout = Duration::from_secs(config.server.shutdown_timeout_secs);
    tokio::select! {
        () = server => {}
        () = async {
            let _ = stop_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(timeout).await;
        } => tracing::warn!("shutdown timeout reached; dropping remaining connections"),
    }
    // Stopped even if the server ended without the stop signal; a flush it was writing
    // completes on its blocking thread.
    summaries.abort();
    let _ = summaries.await;
    strata_api::flush_security_summaries(&state, true).await;
    // The pool takes no more work, and what it holds finishes (within the same timeout):
    // background drivers (a re-embed's steps) meet the shutdown at their next step instead
    // of writing on while the indexes are saved and the engine closes.
    let pool = state.clone();
    match tokio::task::spawn_blocking(move || pool.shutdown_pool(timeout)).await {
        Ok(true) => {}
        _ => tracing::warn!("the worker pool's jobs did not all end within the shutdown timeout"),
    }
    drop(state);
    if let Some(sweeper) = sweeper {
        // It holds the engine; it ends at the stop signal (or after a purge in progress).
        let _ = sweeper.await;
    }
    if let Some(expirer) = expirer {
        // Likewise, after the tenant its pass is sweeping (at most `SWEEP_PER_PASS` records).
        let _ = expirer.await;
    }
    if let Some(checkpointer) = checkpointer {
        // Likewise, after the checkpoint it is saving; `close` saves the rest.
        let _ = checkpointer.await;
    }
    // Stopped even if the server ended without the stop signal (it only ever waits for the
    // next tick); a pass under way completes on its blocking thread.
    retirer.abort();
    let _ = retirer.await;
    close(engine, resumer).await;
    tracing::info!("stopped");
    Ok(())
}

/// The default connection cap when `server.max_connections` is 0.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// `server.max_connections`, or when that is 0, a cap that fits the file descriptor limit:
/// each connection holds one descriptor, and the rest of the server needs some (storage,
/// logs, refusals of connections over the cap), so a quarter of the limit, at most 256, is
/// kept back. Past the cap clients get a clear 503 rather than the accept loop failing.
fn connection_cap(configured: usize, fd_limit: Option<u64>) -> usize {
    if configured > 0 {
        return configured;
    }
    let Some(limit) = fd_limit else {
        return DEFAULT_MAX_CONNECTIONS;
    };
    let reserve = (limit / 4).min(256);
    usize::try_from(limit - reserve)
        .unwrap_or(usize::MAX)
        .clamp(1, DEFAULT_MAX_CONNECTIONS)
}

/// The process's soft limit on open file descriptors.
#[cfg(unix)]
fn fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given, which outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    // `rlim_t` is `u64` on Linux but not on every unix.
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    (rc == 0).then_some(soft)
}

#[cfg(not(unix))]
fn fd_limit() -> Option<u64> {
    None
}

/// How often pending summaries of suppressed security events are looked at.
const SUMMARY_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Writes the summaries of suppressed security events whose bucket admits again, and drops the
/// rate buckets that have refilled, every [`SUMMARY_FLUSH_EVERY`], until stop.
async fn summary_flush(state: strata_api::AppState, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(SUMMARY_FLUSH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        strata_api::flush_security_summaries(&state, false).await;
        state.sweep_idle_rates();
    }
}

/// Purges soft-deleted tenants whose retention period is over, every `every`, until stop.
/// The first sweep runs at start, so a server that was down past a tenant's retention does not
/// keep its data another interval.
async fn purge_sweep(
    engine: Arc<Engine>,
    op: strata_auth::OperatorScope,
    every: Duration,
    retention_secs: u64,
    audit_retention_ms: Option<i64>,
    mut stop: watch::Receiver<bool>,
) {
    let retention_ms = i64::try_from(retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (purger, purge_op) = (Arc::clone(&engine), op.clone());
        match tokio::task::spawn_blocking(move || {
            purger.purge_deleted_tenants(&purge_op, retention_ms)
        })
        .await
        {
            Ok(Ok(purged)) if purged.is_empty() => {}
            Ok(Ok(purged)) => {
                tracing::info!(target: "audit", ?purged, "retention sweep purged tenants")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "retention sweep failed"),
            Err(e) => tracing::error!(error = %e, "retention sweep panicked"),
        }
        // A stop between the sweeps ends the pass there (each reads every tenant, seconds
        // with a million): what it skipped runs at the next start.
        if *stop.borrow() {
            return;
        }
        // So does the purge of decayed adaptive reranking state (`[engine.adaptive]`).
        let (sweeper, sweep_op) = (Arc::clone(&engine), op.clone());
        match tokio::task::spawn_blocking(move || sweeper.sweep_adaptive(&sweep_op)).await {
            Ok(Ok(swept)) if swept == strata_engine::AdaptiveSweep::default() => {}
            Ok(Ok(swept)) => tracing::info!(
                pheromones = swept.pheromones,
                narratives = swept.narratives,
                "retention sweep purged adaptive state"
            ),
            Ok(Err(e)) => tracing::error!(error = %e, "adaptive sweep failed"),
            Err(e) => tracing::error!(error = %e, "adaptive sweep panicked"),
        }
        if *stop.borrow() {
            return;
        }
        // Answers kept for Idempotency-Key headers expire after a day.
        let (sweeper, sweep_op) = (Arc::clone(&engine), op.clone());
        match tokio::task::spawn_blocking(move || sweeper.sweep_idempotency_keys(&sweep_op)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(swept = n, "expired idempotency keys swept"),
            Ok(Err(e)) => tracing::error!(error = %e, "idempotency sweep failed"),
            Err(e) => tracing::error!(error = %e, "idempotency sweep panicked"),
        }
        if *stop.borrow() {
            return;
        }
        // Audit rows past their retention (`[audit] retention_days`), when one is set.
        if let Some(retention_ms) = audit_retention_ms {
            let (sweeper, sweep_op) = (Arc::clone(&engine), op.clone());
            match tokio::task::spawn_blocking(move || sweeper.sweep_audit(&sweep_op, retention_ms))
                .await
            {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(swept = n, "audit rows past their retention swept"),
                Ok(Err(e)) => tracing::error!(error = %e, "audit retention sweep failed"),
                Err(e) => tracing::error!(error = %e, "audit retention sweep panicked"),
            }
        }
        if *stop.borrow() {
            return;
        }
        // Automatic promotion rides the same periodic sweep (`[engine.isolation]`).
        let (promoter, promote_op) = (Arc::clone(&engine), op.clone());
        match tokio::task::spawn_blocking(move || promoter.promote_tenants(&promote_op)).await {
            Ok(Ok(promoted)) if promoted.is_empty() => {}
            Ok(Ok(promoted)) => {
                tracing::info!(target: "audit", ?promoted, "promoted tenants to partition")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "promotion sweep failed"),
            Err(e) => tracing::error!(error = %e, "promotion sweep panicked"),
        }
    }
}

/// Saves the indexes of resident tenants with at least `min_changes` unsaved record changes
/// (`Engine::checkpoint_indexes`), every `every`, until stop.
async fn index_checkpoints(
    engine: Arc<Engine>,
    every: Duration,
    min_changes: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: nothing is due right after the start.
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let saver = Arc::clone(&engine);
        match tokio::task::spawn_blocking(move || saver.checkpoint_indexes(min_changes)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(saved)) => tracing::info!(tenants = saved, "index checkpoint saved"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "index checkpoint failed; tried again next time")
            }
            Err(e) => tracing::error!(error = %e, "index checkpoint panicked"),
        }
    }
}

/// Drops what the engine holds for tenants idle since the last pass (`Engine::retire_idle_tenants`),
/// every `Engine::RETIRE_IDLE_EVERY`, until stop.
async fn retire_idle_tenants(engine: Arc<Engine>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(Engine::RETIRE_IDLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let retirer = Arc::clone(&engine);
        match tokio::task::spawn_blocking(move || retirer.retire_idle_tenants()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(tenants = n, "idle tenants' slots dropped"),
            Err(e) => tracing::error!(error = %e, "dropping idle tenants' slots panicked"),
        }
    }
}

/// Removes the records past their `expires_at` (`Engine::sweep_expired`), every `every`,
/// until stop: a record is gone at most about one interval after it expired. A pass that
/// left a tenant with more records due is followed by another at once.
async fn expiry_sweep(
    engine: Arc<Engine>,
    op: strata_auth::OperatorScope,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        loop {
            let (sweeper, sweep_op, stopping) = (Arc::clone(&engine), op.clone(), stop.clone());
            let pass = move || sweeper.sweep_expired(&sweep_op, || *stopping.borrow());
            let more = match tokio::task::spawn_blocking(pass).await {
                Ok(Ok(swept)) => {
                    if swept.records > 0 || swept.failed > 0 {
                        tracing::info!(
                            records = swept.records,
                            tenants = swept.tenants,
                            failed = swept.failed,
                            "expiry sweep removed expired records"
                        );
                    }
                    swept.more
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "expiry sweep failed");
                    false
                }
                Err(e) => {
                    tracing::error!(error = %e, "expiry sweep panicked");
                    false
                }
            };
            if !more || *stop.borrow() {
                break;
            }
        }
    }
}

/// Saves index snapshots (so the next start restores graphs instead of rebuilding them), waits
/// for blocking tasks that still hold the engine, then drops it, which closes the database.
/// Every acknowledged write was already committed durably; this only makes the close orderly.
async fn close(mut engine: Arc<Engine>, resumer: tokio::task::JoinHandle<()>) {
    // A data migration running in the background stops at its next chunk, its tenant whole
    // where it was and its status `interrupted` (resumed at the next start); a flip under way
    // finishes first. Up to 10 s for that.
    let stopper = Arc::clone(&engine);
    if let Ok(false) =
        tokio::task::spawn_blocking(move || stopper.stop_migrations(Duration::from_secs(10))).await
    {
        tracing::warn!("a migration did not stop within 10 s");
    }
    // Then the resumption (it holds the engine): its waits for a move slot see the shutdown
    // within 50 ms and the moves it ran stopped above, but one sizing a large tenant before
    // its move finishes that read first. Up to 10 s more; after that the close goes on and
    // waits for the engine below (5 s), then closes anyway.
    if tokio::time::timeout(Duration::from_secs(10), resumer)
        .await
        .is_err()
    {
        tracing::warn!("the resumption of interrupted migrations did not end within 10 s");
    }
    let saver = Arc::clone(&engine);
    match tokio::task::spawn_blocking(move || saver.persist_indexes()).await {
        Ok(Ok(saved)) => tracing::info!(tenants = saved, "index snapshots saved"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "saving index snapshots failed; they will be rebuilt")
        }
        Err(e) => {
            tracing::warn!(error = %e, "saving index snapshots panicked; they will be rebuilt")
        }
    }
    for _ in 0..100 {
        match Arc::try_unwrap(engine) {
            Ok(e) => {
                drop(e);
                return;
            }
            Err(still_shared) => {
                engine = still_shared;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::warn!("engine still in use after 5 s; closing anyway");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_follows_the_descriptor_limit() {
        assert_eq!(connection_cap(10, Some(64)), 10, "a configured cap wins");
        assert_eq!(connection_cap(0, None), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(connection_cap(0, Some(256)), 192);
        assert_eq!(connection_cap(0, Some(1024)), 768);
        assert_eq!(connection_cap(0, Some(2048)), 1792);
        assert_eq!(connection_cap(0, Some(1 << 20)), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(connection_cap(0, Some(u64::MAX)), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(connection_cap(0, Some(1)), 1);
    }
}
