//! Size limits a record must respect, configured once per server.

use serde::{Deserialize, Serialize};

/// Limits checked by [`crate::NewRecord::validate`] and [`crate::RecordPatch::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordLimits {
    /// Largest `content` in bytes of UTF-8.
    pub max_content_bytes: usize,
    /// Largest `metadata` object, measured as compact JSON.
    pub max_metadata_bytes: usize,
    /// Deepest nesting of objects and arrays inside `metadata`.
    pub max_metadata_depth: usize,
    /// Most user tokens on one record or request.
    pub max_user_tokens: usize,
    /// Most records in one batch write.
    pub max_batch: usize,
    /// Largest vector dimension a collection may have.
    pub max_dim: u32,
}

impl Default for RecordLimits {
    fn default() -> Self {
        RecordLimits {
            max_content_bytes: 64 * 1024,
            max_metadata_bytes: 16 * 1024,
            max_metadata_depth: 16,
            max_user_tokens: 32,
            max_batch: 1000,
            max_dim: 4096,
        }
    }
}
