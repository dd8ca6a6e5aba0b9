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

impl RecordLimits {
    /// Refuses a limit no write could meet, naming it as the configuration does
    /// (`limits.max_batch`): each is at least the smallest value of what it bounds.
    pub fn validate(&self) -> Result<(), String> {
        let least = [
            // 0 would refuse every write, even of one record.
            ("max_batch", self.max_batch, 1),
            // Every record's metadata is checked, an absent one as `{}`: 2 bytes, 1 level.
            ("max_metadata_bytes", self.max_metadata_bytes, 2),
            ("max_metadata_depth", self.max_metadata_depth, 1),
            ("max_dim", self.max_dim as usize, 1),
            // Not `max_content_bytes` nor `max_user_tokens`: 0 is a working server that takes
            // no text (vectors only) or no per-principal tokens, as records without them pass.
        ];
        for (name, value, min) in least {
            if value < min {
                return Err(format!("limits.{name}: at least {min}, not {value}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RecordLimits;

    #[test]
    fn a_limit_no_write_could_meet_is_refused_by_name() {
        RecordLimits::default().validate().unwrap();
        type Set = fn(&mut RecordLimits);
        let cases: [(Set, &str); 4] = [
            (|l| l.max_batch = 0, "limits.max_batch: at least 1, not 0"),
            (
                |l| l.max_metadata_bytes = 1,
                "limits.max_metadata_bytes: at least 2, not 1",
            ),
            (
                |l| l.max_metadata_depth = 0,
                "limits.max_metadata_depth: at least 1",
            ),
            (|l| l.max_dim = 0, "limits.max_dim: at least 1"),
        ];
        for (set, expected) in cases {
            let mut limits = RecordLimits::default();
            set(&mut limits);
            let err = limits.validate().unwrap_err();
            assert!(err.starts_with(expected), "{err}");
        }
        // A server of vectors only, or without per-principal tokens, works: both stand.
        let mut limits = RecordLimits::default();
        (limits.max_content_bytes, limits.max_user_tokens) = (0, 0);
        limits.validate().unwrap();
    }
}
