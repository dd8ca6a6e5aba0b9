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

/// Most entries remembered per window. Beyond it a read writes its row without being
/// remembered: the log may get more rows, never fewer.
const MAX_ENTRIES: usize = 65_536;

/// When each key last had its row written, in the current and the previous window.
pub(crate) struct ReadByMemo<K> {
    windows: Mutex<Windows<K>>,
    max: usize,
}

struct Windows<K> {
    /// Start of the current window.
    start: Millis,
    current: HashMap<K, Millis>,
    previous: HashMap<K, Millis>,
}

impl<K: Hash + Eq> Default for ReadByMemo<K> {
    fn default() -> Self {
        ReadByMemo::with_capacity(MAX_ENTRIES)
    }
}

impl<K: Hash + Eq> Windows<K> {
    /// Turns the windows so that `now` is in the current one; an entry written within
    /// [`READ_BY_EVERY_MS`] of `now` is then in one of the two maps.
    fn turn(&mut self, now: Millis) {
        if now < self.start {
            // The clock stepped back: forget, so that no key is silenced.
            self.start = now;
            self.current.clear();
            self.previous.clear();
        } else if now - self.start >= 2 * READ_BY_EVERY_MS {
            self.start = now;
            self.current.clear();
            self.previous.clear();
        } else if now - self.start >= READ_BY_EVERY_MS {
            self.start += READ_BY_EVERY_MS;
            self.previous = std::mem::take(&mut self.current);
        }
    }
}

impl<K: Hash + Eq> ReadByMemo<K> {
    fn with_capacity(max: usize) -> Self {
        ReadByMemo {
            windows: Mutex::new(Windows {
                start: 0,
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
            max,
        }
    }

    /// Whether a read at `now` should write its row: yes unless one was written for `key`
    /// within the last [`READ_BY_EVERY_MS`] (or later than `now`, by a clock stepped back).
    pub(crate) fn due(&self, key: &K, now: Millis) -> bool {
        let mut w = lock(&self.windows);
        w.turn(now);
        let recent = |t: &Millis| *t <= now && now - *t < READ_BY_EVERY_MS;
        !(w.current.get(key).is_some_and(recent) || w.previous.get(key).is_some_and(recent))
    }

    /// The row for `key` was committed at `now`.
    pub(crate) fn wrote(&self, key: K, now: Millis) {
        let mut w = lock(&self.windows);
        w.turn(now);
        if w.current.len() < self.max {
            w.current.insert(key, now);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let w = lock(&self.windows);
        w.current.len() + w.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `due` then, if due, `wrote`: what a read whose row commits does.
    fn read(
        memo: &ReadByMemo<(u64, &'static str, &'static str)>,
        key: (u64, &'static str, &'static str),
        now: Millis,
    ) -> bool {
        let due = memo.due(&key, now);
        if due {
            memo.wrote(key, now);
        }
        due
    }

    #[test]
    fn one_row_per_key_per_window() {
        let memo = ReadByMemo::default();
        let now = 10 * READ_BY_EVERY_MS;
        assert!(read(&memo, (1, "team-a", "sh-1"), now));
        assert!(!read(&memo, (1, "team-a", "sh-1"), now + 1));
        assert!(!read(
            &memo,
            (1, "team-a", "sh-1"),
            now + READ_BY_EVERY_MS - 1
        ));
        // Another grantee, share or owner incarnation has its own entry.
        assert!(read(&memo, (1, "team-b", "sh-1"), now + 1));
        assert!(read(&memo, (1, "team-a", "sh-2"), now + 1));
        assert!(read(&memo, (2, "team-a", "sh-1"), now + 1));
        // A full period later, the next read writes again.
        assert!(read(&memo, (1, "team-a", "sh-1"), now + READ_BY_EVERY_MS));
        assert!(!read(
            &memo,
            (1, "team-a", "sh-1"),
            now + READ_BY_EVERY_MS + 1
        ));
        // A clock stepped back does not silence a key.
        assert!(read(&memo, (1, "team-a", "sh-1"), 10));
    }

    #[test]
    fn a_read_whose_row_failed_does_not_silence_the_next() {
        let memo = ReadByMemo::default();
        let key = (1u64, "team-a", "sh-1");
        assert!(memo.due(&key, 1_000));
        // The write failed: nothing remembered, so the retry writes.
        assert!(memo.due(&key, 1_001));
        memo.wrote(key, 1_001);
        assert!(!memo.due(&key, 1_002));
    }

    #[test]
    fn entries_live_two_windows_at_most_and_a_full_window_errs_toward_writing() {
        let memo = ReadByMemo::with_capacity(2);
        for k in 1..=3u64 {
            assert!(read(&memo, (k, "g", "s"), 5));
        }
        // The third was not remembered: it writes again.
        assert!(read(&memo, (3, "g", "s"), 6));
        assert!(!read(&memo, (1, "g", "s"), 7));
        assert_eq!(memo.len(), 2);
        // Two windows later everything is forgotten at once.
        assert!(read(&memo, (9, "g", "s"), 5 + 2 * READ_BY_EVERY_MS));
        assert_eq!(memo.len(), 1);
    }
}
