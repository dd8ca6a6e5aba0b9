//! [`Embedder`]: load the pinned model from a directory, then turn texts into unit vectors.

use std::fmt;
use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::pinned::{
    MODEL_ID, TOKENIZER_FILE, TOKENIZER_SHA256, WEIGHTS_FILE, WEIGHTS_SHA256, read_verified,
};
use crate::weights::{Bert, HIDDEN, VOCAB};
use crate::{EmbedError, bert};

/// Longest input in word pieces, `[CLS]` and `[SEP]` included: sentence-transformers'
/// `max_seq_length` for this model. Longer texts are truncated to their first 254 word pieces.
pub const MAX_TOKENS: usize = 256;

/// Tokens per forward pass. A call with more is split into several passes, which bounds the
/// scratch memory of one call (about 10 KiB a token, so ~40 MiB) whatever the batch size.
const TOKENS_PER_PASS: usize = 4096;

/// The all-MiniLM-L6-v2 sentence embedder.
///
/// `Send + Sync` and without interior mutability: one instance, shared behind an `Arc`, serves
/// every worker thread at once. Each call runs on the calling thread (plus `threads - 1` helper
/// threads when configured with [`Embedder::with_threads`]).
pub struct Embedder {
    tokenizer: Tokenizer,
    bert: Bert,
    threads: usize,
}

impl fmt::Debug for Embedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &MODEL_ID)
            .field("threads", &self.threads)
            .finish()
    }
}

impl Embedder {
    /// Loads the model from `dir` (e.g. `models/all-MiniLM-L6-v2`), after checking each file
    /// against its pinned sha256. Takes about a second: it hashes and copies ~90 MB.
    ///
    /// # Errors
    /// [`EmbedError::ModelMissing`] or [`EmbedError::HashMismatch`] (both name the fetch
    /// command), [`EmbedError::Io`], or [`EmbedError::Tokenizer`] / [`EmbedError::Weights`] if
    /// a file that passed its hash check still fails to load.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, EmbedError> {
        let dir = dir.as_ref();
        let tokenizer_bytes = read_verified(dir, TOKENIZER_FILE, TOKENIZER_SHA256)?;
        let weights_bytes = read_verified(dir, WEIGHTS_FILE, WEIGHTS_SHA256)?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        // tokenizer.json ships with truncation at 128 and fixed padding; sentence-transformers
        // overrides both, and so do we: truncate at MAX_TOKENS, never pad (see `bert`).
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let bert = Bert::from_safetensors(&weights_bytes)?;
        Ok(Self {
            tokenizer,
            bert,
            threads: 1,
        })
    }

    /// Uses up to `threads` threads per call (the caller's included; at least 1). The default
    /// is 1: the server's worker pool already runs one request per core, and splitting a call
    /// across threads only pays when cores would otherwise sit idle (see docs/benchmarks.md).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The model's name, to store with every collection embedded by it.
    pub fn model_id(&self) -> &'static str {
        MODEL_ID
    }

    /// The pinned sha256 of the weights, to store with the model id: vectors are comparable
    /// only if both match.
    pub fn weights_hash(&self) -> &'static str {
        WEIGHTS_SHA256
    }

    /// Length of every vector: 384.
    pub fn dim(&self) -> usize {
        HIDDEN
    }

    /// Word pieces `text` is embedded from, after truncation (at most [`MAX_TOKENS`]): a
    /// cost estimate that costs a tokenisation, not a forward pass.
    ///
    /// # Errors
    /// [`EmbedError::Input`] if the tokenizer fails on the text.
    pub fn token_count(&self, text: &str) -> Result<usize, EmbedError> {
        Ok(self.tokenize(0, text)?.len())
    }

    /// Embeds each text into a unit-length vector of [`Embedder::dim`] floats, in order.
    ///
    /// Exactly sentence-transformers' pipeline for this model: BERT word pieces (lower-cased,
    /// accents stripped), truncated to the first [`MAX_TOKENS`] including `[CLS]` and `[SEP]`,
    /// mean pooling over all tokens, L2 normalisation. The empty string is embedded like
    /// sentence-transformers does, as `[CLS] [SEP]`. Batching changes nothing in the result
    /// beyond float rounding, only the cost: a batch is cheaper per text than single calls.
    ///
    /// # Errors
    /// [`EmbedError::Input`] if the tokenizer fails on a text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let tokenized = texts
            .iter()
            .enumerate()
            .map(|(i, t)| self.tokenize(i, t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(texts.len());
        let mut pass: Vec<&[u32]> = Vec::new();
        let mut pass_tokens = 0;
        for ids in &tokenized {
            if pass_tokens + ids.len() > TOKENS_PER_PASS && !pass.is_empty() {
                out.extend(bert::encode(&self.bert, &pass, self.threads));
                pass.clear();
                pass_tokens = 0;
            }
            pass.push(ids);
            pass_tokens += ids.len();
        }
        if !pass.is_empty() {
            out.extend(bert::encode(&self.bert, &pass, self.threads));
        }
        Ok(out)
    }

    /// Word-piece ids of one text, truncated, with `[CLS]` and `[SEP]`.
    fn tokenize(&self, index: usize, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| EmbedError::Input {
                index,
                message: e.to_string(),
            })?;
        let ids = encoding.get_ids();
        // The pinned tokenizer only produces ids inside the vocabulary; checking keeps a bad id
        // an error rather than a panic in the forward pass.
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= VOCAB) {
            return Err(EmbedError::Input {
                index,
                message: format!("token id {bad} outside the vocabulary"),
            });
        }
        Ok(ids.to_vec())
    }
}
