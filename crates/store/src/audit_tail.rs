//! The next sequence of each audit log, kept in memory so that appending a row does not read
//! the log's last key first.
//!
//! Every tenant write appends an audit row, and finding its sequence by a range read of the
//! log's end was a B-tree descent per write under the storage write lock. The store remembers
//! the next sequence of each log it appended to ([`AuditTails`]), learned from storage once.
//! A write transaction keeps the sequences it assigns to itself ([`AuditTail`]) and they are
//! published only once it has committed, so an aborted transaction (a batch run again after a
//! failed job, say) leaves no gap in the numbering.
//!
//! The remembered sequence is a hint, never trusted blindly:
//! - a hint that is too low (another path wrote rows without publishing: a migration's flip,
//!   a server-wide write whose main commit failed after a file's had committed) names a row
//!   that exists; the append sees that its insert replaced a row, puts that row back, and
//!   finds the log's end by the range read as before;
//! - rows are removed from a log only by erasing them ([`Writer::erase_audit_rows`], a
//!   tenant's erasure), which forgets the log's hint, so a hint never points into a hole left
//!   below the log's end;
//! - a hint may be too high only after a concurrent erasure of the log's last rows (the
//!   server's log, rows about a purged tenant): the next row then skips those numbers, which
//!   are not given out again.
//!
//! Nothing here is stored: a restart learns each log's end from storage again.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::keys::TenantKey;

/// The most logs the store remembers at once: about 2 MB at the most. Past it the hints are
/// dropped together (always safe: each log's next append reads its end again), so a node with
/// many more written tenants than that keeps a bounded map rather than one entry per tenant.
const MAX_LOGS: usize = 1 << 16;

/// The store's hints: the next sequence of each audit log appended to since it opened.
#[derive(Debug, Default)]
pub(crate) struct AuditTails {
    next: Mutex<HashMap<TenantKey, u64>>,
}

impl AuditTails {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantKey, u64>> {
        // Each change is one map operation: a panic elsewhere cannot leave it half-changed.
        self.next.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hint(&self, t: TenantKey) -> Option<u64> {
        self.lock().get(&t).copied()
    }

    fn forget(&self, t: TenantKey) {
        self.lock().remove(&t);
    }

    /// Takes what a committed transaction assigned. Never lowers a hint: a later transaction
    /// may have committed and published first.
    pub(crate) fn publish(&self, committed: Assigned) {
        if committed.0.is_empty() {
            return;
        }
        let mut next = self.lock();
        if next.len() + committed.0.len() > MAX_LOGS {
            next.clear();
        }
        for (t, n) in committed.0 {
            let hint = next.entry(t).or_insert(n);
            *hint = (*hint).max(n);
        }
    }
}

/// The next sequences one transaction assigned, by log; published once it commits.
#[derive(Debug, Default)]
pub(crate) struct Assigned(Vec<(TenantKey, u64)>);

/// One write transaction's view of the hints.
#[derive(Debug)]
pub(crate) struct AuditTail<'a> {
    tails: &'a AuditTails,
    /// Few entries (one per tenant a batch wrote): a list beats a map.
    assigned: Assigned,
}

impl<'a> AuditTail<'a> {
    pub(crate) fn new(tails: &'a AuditTails) -> Self {
        AuditTail {
            tails,
            assigned: Assigned::default(),
        }
    }

    /// Where `t`'s next row probably goes: this transaction's own last row's successor, else
    /// the store's hint.
    pub(crate) fn hint(&self, t: TenantKey) -> Option<u64> {
        self.assigned
            .0
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, n)| *n)
            .or_else(|| self.tails.hint(t))
    }

    /// Records that this transaction wrote `t`'s row `next - 1`.
    pub(crate) fn assigned(&mut self, t: TenantKey, next: u64) {
        match self.assigned.0.iter_mut().find(|(k, _)| *k == t) {
            Some((_, n)) => *n = next,
            None => self.assigned.0.push((t, next)),
        }
    }

    /// Drops every hint of `t`'s log at once, the store's too: its rows are being removed, or
    /// the hint was wrong. Dropping a hint is always safe (the next append reads the log's
    /// end), even if this transaction then aborts.
    pub(crate) fn forget(&mut self, t: TenantKey) {
        self.assigned.0.retain(|(k, _)| *k != t);
        self.tails.forget(t);
    }

    /// What to publish once the transaction has committed.
    pub(crate) fn take_assigned(&mut self) -> Assigned {
        std::mem::take(&mut self.assigned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> TenantKey {
        TenantKey::from_raw(n)
    }

    #[test]
    fn a_transaction_sees_its_own_rows_and_publishes_only_when_told() {
        let tails = AuditTails::default();
        let mut tx = AuditTail::new(&tails);
        assert_eq!(tx.hint(t(1)), None);
        tx.assigned(t(1), 5);
        tx.assigned(t(1), 6);
        assert_eq!(tx.hint(t(1)), Some(6));
        // Not published yet: another transaction does not see it.
        assert_eq!(AuditTail::new(&tails).hint(t(1)), None);
        let assigned = tx.take_assigned();
        drop(tx);
        tails.publish(assigned);
        assert_eq!(AuditTail::new(&tails).hint(t(1)), Some(6));
    }

    #[test]
    fn publishing_never_lowers_a_hint_and_forgetting_drops_both_views() {
        let tails = AuditTails::default();
        let mut late = AuditTail::new(&tails);
        late.assigned(t(1), 4);
        let mut early = AuditTail::new(&tails);
        early.assigned(t(1), 9);
        tails.publish(early.take_assigned());
        tails.publish(late.take_assigned());
        let mut tx = AuditTail::new(&tails);
        assert_eq!(tx.hint(t(1)), Some(9));
        tx.assigned(t(2), 3);
        tx.forget(t(1));
        assert_eq!(tx.hint(t(1)), None);
        assert_eq!(AuditTail::new(&tails).hint(t(1)), None);
        assert_eq!(tx.hint(t(2)), Some(3));
    }

    #[test]
    fn the_store_remembers_a_bounded_number_of_logs() {
        let tails = AuditTails::default();
        for n in 0..=MAX_LOGS as u64 {
            let mut tx = AuditTail::new(&tails);
            tx.assigned(t(n), 2);
            tails.publish(tx.take_assigned());
        }
        let remembered = tails.lock().len();
        assert!((1..=MAX_LOGS).contains(&remembered), "{remembered}");
        assert_eq!(tails.hint(t(MAX_LOGS as u64)), Some(2));
    }

    /// The store-level behaviour: what an append numbers its row with the hints in play.
    mod appends {
        use crate::test_tenant::store_with_tenant;
        use crate::{Reads, StoreError, keys};

        fn rows(store: &crate::Store, t: crate::TenantKey) -> Vec<(u64, Vec<u8>)> {
            store.read().unwrap().audit_rows(t, 0, 100).unwrap()
        }

        #[test]
        fn rows_are_numbered_one_after_the_other_and_the_store_remembers_the_next() {
            let (_dir, store, t) = store_with_tenant("acme");
            for i in 0..3u8 {
                let (_, pending) = store
                    .write_batched_for(t, |w| w.append_audit(t, &[i]))
                    .unwrap();
                pending.wait_durable().unwrap();
            }
            let seq = store.write(|w| w.append_audit(t, b"plain")).unwrap();
            let seqs: Vec<u64> = rows(&store, t).iter().map(|(s, _)| *s).collect();
            assert_eq!(seqs, [1, 2, 3, 4]);
            assert_eq!(seq, 4);
            assert_eq!(store.audit_tails.hint(t), Some(5));
        }

        #[test]
        fn an_aborted_write_leaves_no_gap_batched_or_not() {
            let (_dir, store, t) = store_with_tenant("acme");
            store.write(|w| w.append_audit(t, b"one")).unwrap();
            let failed = store.write(|w| {
                w.append_audit(t, b"lost")?;
                Err::<(), _>(StoreError::Engine("refused".into()))
            });
            assert!(failed.is_err());
            let failed = store.write_batched_for(t, |w| {
                w.append_audit(t, b"lost too")?;
                Err::<(), _>(StoreError::Engine("refused after writing".into()))
            });
            assert!(failed.is_err());
            assert_eq!(store.write(|w| w.append_audit(t, b"two")).unwrap(), 2);
            assert_eq!(
                rows(&store, t),
                [(1, b"one".to_vec()), (2, b"two".to_vec())]
            );
        }

        #[test]
        fn a_hint_that_is_too_low_replaces_no_row() {
            let (_dir, store, t) = store_with_tenant("acme");
            store.write(|w| w.append_audit(t, b"one")).unwrap();
            // A row the hint does not know of (as a migration's copy writes them).
            store
                .write(|w| {
                    w.table_mut(t)?
                        .insert(keys::audit_row(t, 2).as_slice(), b"copied")?;
                    Ok::<_, StoreError>(())
                })
                .unwrap();
            assert_eq!(store.audit_tails.hint(t), Some(2));
            assert_eq!(store.write(|w| w.append_audit(t, b"three")).unwrap(), 3);
            assert_eq!(
                rows(&store, t),
                [
                    (1, b"one".to_vec()),
                    (2, b"copied".to_vec()),
                    (3, b"three".to_vec())
                ]
            );
            assert_eq!(store.audit_tails.hint(t), Some(4));
        }

        #[test]
        fn erased_rows_send_the_next_append_to_the_end_read_from_storage() {
            let (_dir, store, t) = store_with_tenant("acme");
            for row in [b"keep", b"gone", b"keep", b"gone"] {
                store.write(|w| w.append_audit(t, row)).unwrap();
            }
            // The second row (a hole) and the last (the end) go.
            store
                .write(|w| w.erase_audit_rows(t, |v| Ok(v == b"gone")))
                .unwrap();
            assert_eq!(store.audit_tails.hint(t), None);
            assert_eq!(store.write(|w| w.append_audit(t, b"new")).unwrap(), 4);
            let seqs: Vec<u64> = rows(&store, t).iter().map(|(s, _)| *s).collect();
            assert_eq!(seqs, [1, 3, 4]);
        }

        #[test]
        fn a_reopened_store_continues_the_log_it_finds() {
            let (dir, store, t) = store_with_tenant("acme");
            store.write(|w| w.append_audit(t, b"one")).unwrap();
            store.write(|w| w.append_audit(t, b"two")).unwrap();
            drop(store);
            let store = crate::Store::open(&dir.path().join("db")).unwrap();
            assert_eq!(store.audit_tails.hint(t), None);
            assert_eq!(store.write(|w| w.append_audit(t, b"three")).unwrap(), 3);
        }
    }
}
