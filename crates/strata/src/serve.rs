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

pub async fn run(config: Config) -> anyhow::Result<()> {
    let data_dir = config.server.data_dir.clone();
    let engine_config = config.engine.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(&data_dir, engine_config))
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
    let auth = Arc::new(Authenticator::new(&config.auth, env_key.as_deref())?);
    if let Some(created) = auth.bootstrap_operator(engine.store())? {
        // Shown once: only its hash is stored. stdout, so it is not mixed into the log stream.
        println!(
            "operator key (shown once, keep it safe): {}",
            created.secret
        );
    }

    let state = AppState::new(
        Arc::clone(&engine),
        auth,
        ApiConfig {
            max_body_bytes: config.server.max_body_bytes,
        },
    );
    let app = strata_api::router(state.clone());
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    // A fixed, parseable line: scripts and tests read the bound port from it.
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, data_dir = %config.server.data_dir.display(), "serving");

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let signal_state = state.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
        signal_state.set_ready(false);
        let _ = stop_tx.send(true);
    });
    let mut graceful_rx = stop_rx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = graceful_rx.wait_for(|stop| *stop).await;
    });
    let timeout = Duration::from_secs(config.server.shutdown_timeout_secs);
    tokio::select! {
        result = server => result.context("serving HTTP")?,
        () = async {
            let _ = stop_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(timeout).await;
        } => tracing::warn!("shutdown timeout reached; dropping remaining connections"),
    }
    drop(state);
    close(engine).await;
    tracing::info!("stopped");
    Ok(())
}

/// Saves index snapshots (so the next start restores graphs instead of rebuilding them), waits
/// for blocking tasks that still hold the engine, then drops it, which closes the database.
/// Every acknowledged write was already committed durably; this only makes the close orderly.
async fn close(mut engine: Arc<Engine>) {
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
