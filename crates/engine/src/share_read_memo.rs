//! When each grantee's reads of each share last wrote a `share.read_by` row into the owner's
//! audit log, so that a grantee searching a shared domain in a loop writes at most one row per
//! (grantee, share) per [`READ_BY_EVERY_MS`] there.
//!
//! The owner's log is the owner's storage, counted against no quota of the grantee's: one row
//! per search let a grantee write tens of megabytes a minute into it and bury the owner's own
//! rows. A row says that the grantee read the domain; a second one seconds later says nothing
//! new. Entries are keyed by the owner's storage key (so one tenant's entries never answer for
//! another's, nor for a later incarnation of the same id), the grantee and the share id. The
//! memo lives in memory: after a restart the next read writes its row again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use strata_types::Millis;

use crate::registry::lock;

/// At most one `share.read_by` row per (grantee, share) in this long.
pub(crate) const READ_BY_EVERY_MS: Millis = 60_000;

/// Most (owner, grantee, share) entries kept. Reaching it drops the entries older than
/// [`READ_BY_EVERY_MS`]; if every entry is recent, a read writes its row without being
/// remembered: the log may get more rows, never fewer.
const MAX_ENTRIES: usize = 65_536;

/// Last time a row was written, by (owner key, grantee, share).
pub(crate) struct ReadByMemo<K> {
    last: Mutex<HashMap<K, Millis>>,
    max: usize,
}

impl<K: Hash + Eq> Default for ReadByMemo<K> {
    fn default() -> Self {
        ReadByMemo::with_capacity(MAX_ENTRIES)
    }
}

impl<K: Hash + Eq> ReadByMemo<K> {
    fn with_capacity(max: usize) -> Self {
        ReadByMemo {
            last: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// Whether a read at `now` writes its row: yes when none was written for `key` in the
    /// last [`READ_BY_EVERY_MS`], and then `now` is remembered as the last.
    pub(crate) fn should_write(&self, key: K, now: Millis) -> bool {
        let mut last = lock(&self.last);
        let due = |t: Millis| now.saturating_sub(t) >= READ_BY_EVERY_MS || t > now;
        if let Some(t) = last.get(&key) {
            if !due(*t) {
                return false;
            }
        } else if last.len() >= self.max {
            last.retain(|_, t| !due(*t));
            if last.len() >= self.max {
                return true;
            }
        }
        last.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_key_per_window() {
        let memo = ReadByMemo::default();
        assert!(memo.should_write((1u64, "team-a", "sh-1"), 1_000));
        assert!(!memo.should_write((1, "team-a", "sh-1"), 1_001));
        assert!(!memo.should_write((1, "team-a", "sh-1"), 1_000 + READ_BY_EVERY_MS - 1));
        // Another grantee, share or owner incarnation has its own entry.
        assert!(memo.should_write((1, "team-b", "sh-1"), 1_001));
        assert!(memo.should_write((1, "team-a", "sh-2"), 1_001));
        assert!(memo.should_write((2, "team-a", "sh-1"), 1_001));
        // A window later, the next read writes again, and starts a new window.
        assert!(memo.should_write((1, "team-a", "sh-1"), 1_000 + READ_BY_EVERY_MS));
        assert!(!memo.should_write((1, "team-a", "sh-1"), 1_000 + READ_BY_EVERY_MS + 1));
        // A clock stepped back does not silence a key.
        assert!(memo.should_write((1, "team-a", "sh-1"), 10));
    }

    #[test]
    fn a_full_memo_stays_bounded_and_errs_toward_writing() {
        let memo = ReadByMemo::with_capacity(2);
        assert!(memo.should_write(1u64, 0));
        assert!(memo.should_write(2, 0));
        // Full of recent entries: a new key writes, unremembered.
        assert!(memo.should_write(3, 1));
        assert!(memo.should_write(3, 2));
        assert_eq!(lock(&memo.last).len(), 2);
        // Once the old entries are due they are dropped and the new key is remembered.
        assert!(memo.should_write(3, READ_BY_EVERY_MS));
        assert!(!memo.should_write(3, READ_BY_EVERY_MS + 1));
        assert_eq!(lock(&memo.last).len(), 1);
    }
}
