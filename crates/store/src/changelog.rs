//! A tenant's change log: an ordered list of the record changes it committed, each written by
//! [`Writer::put_record`] / [`Writer::delete_record`] in the transaction of the change itself,
//! so every write path (puts, batches, patches, deletes, expiry, imports, collection purges,
//! re-embeds) is logged and a crash can never separate a change from its entry.
//!
//! An entry names the record and its collection, not its bytes: replaying reads the record as
//! it is now, so replaying the same id twice, or out of date, still ends at storage's state.
//! Entries live in the tenant's own key range (so a dedicated tenant's log is in its own file,
//! and a migration copies it with the rest). The head row holds the next sequence and the
//! oldest one kept; sequences are never reused, even after trimming.
//!
//! Bounded two ways: the engine trims what every persisted search image already reflects
//! ([`Writer::trim_change_log`]), and appending beyond the cap drops the oldest entries (an
//! image older than the log's start is then rebuilt from the records instead of replayed).

use redb::ReadableTable;
use strata_types::{CollectionName, RecordId};

use crate::StoreError;
use crate::codec::{
    ChangeEntry, ChangeHead, ChangeMark, ChangeOp, decode_change, decode_change_head,
    decode_change_mark, encode_change, encode_change_head, encode_change_mark,
};
use crate::keys::{self, TenantKey};
use crate::tables::{Reads, Writer, bounded_range};

/// Entries kept per tenant unless configured otherwise (`Store::set_change_log_cap`): at
/// ~40 bytes each, about 4 MB of a tenant that is written and never loaded.
pub const DEFAULT_CHANGE_LOG_CAP: u64 = 100_000;

/// The head of a tenant that has logged nothing yet.
const EMPTY: ChangeHead = ChangeHead { next: 1, first: 1 };

/// Reads of the change log, for every transaction that reads.
pub trait ChangeLogReads: Reads {
    /// The tenant's log head: `next - 1` is the last sequence written (0 for none).
    fn change_head(&self, t: TenantKey) -> Result<ChangeHead, StoreError> {
        match self.data_table(t)?.get(keys::change_head(t).as_slice())? {
            Some(v) => decode_change_head(v.value()),
            None => Ok(EMPTY),
        }
    }

    /// Up to `limit` entries with sequences above `after`, oldest first.
    fn changes_after(
        &self,
        t: TenantKey,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ChangeEntry)>, StoreError> {
        let prefix = keys::change_log(t);
        let start = keys::change_entry(t, after.saturating_add(1));
        let mut out = Vec::new();
        for entry in bounded_range(self.data_table(t)?, &start, &prefix)?.take(limit) {
            let (k, v) = entry?;
            let seq = keys::change_seq(&k[prefix.len()..])
                .ok_or_else(|| StoreError::Corrupt("change log key".into()))?;
            out.push((seq, decode_change(&v)?));
        }
        Ok(out)
    }

    /// What collection `c`'s persisted search image reflects, if that was recorded.
    fn change_mark(
        &self,
        t: TenantKey,
        c: &CollectionName,
    ) -> Result<Option<ChangeMark>, StoreError> {
        self.data_table(t)?
            .get(keys::change_mark(t, c).as_slice())?
            .map(|v| decode_change_mark(v.value()))
            .transpose()
    }
}

impl<R: Reads> ChangeLogReads for R {}

impl Writer<'_> {
    /// Appends an entry and returns its sequence; beyond the cap, drops the oldest entries.
    pub(crate) fn log_change(
        &mut self,
        t: TenantKey,
        op: ChangeOp,
        collection: &CollectionName,
        id: &RecordId,
    ) -> Result<u64, StoreError> {
        let mut head = self.change_head(t)?;
        let seq = head.next;
        let entry = ChangeEntry {
            op,
            collection: collection.clone(),
            id: id.clone(),
        };
        self.table_mut(t)?.insert(
            keys::change_entry(t, seq).as_slice(),
            encode_change(&entry)?.as_slice(),
        )?;
        head.next += 1;
        let cap = self.log_cap.max(1);
        if head.next - head.first > cap {
            // Usually one entry; after the cap was lowered, the excess in one range removal.
            let first = head.next - cap;
            self.remove_entries(t, head.first, first)?;
            head.first = first;
        }
        self.put_change_head(t, head)?;
        Ok(seq)
    }

    /// Removes the entries with sequences in `from..to`.
    fn remove_entries(&mut self, t: TenantKey, from: u64, to: u64) -> Result<(), StoreError> {
        let (start, end) = (keys::change_entry(t, from), keys::change_entry(t, to));
        self.table_mut(t)?
            .retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
        Ok(())
    }

    fn put_change_head(&mut self, t: TenantKey, head: ChangeHead) -> Result<(), StoreError> {
        self.table_mut(t)?.insert(
            keys::change_head(t).as_slice(),
            encode_change_head(&head)?.as_slice(),
        )?;
        Ok(())
    }

    /// Drops every entry up to and including `through`; returns how many it dropped.
    pub fn trim_change_log(&mut self, t: TenantKey, through: u64) -> Result<u64, StoreError> {
        let mut head = self.change_head(t)?;
        // A head decodes only with `1 <= first <= next < u64::MAX`.
        let end = through.min(head.next - 1);
        if end < head.first {
            return Ok(0);
        }
        let dropped = end + 1 - head.first;
        self.remove_entries(t, head.first, end + 1)?;
        head.first = end + 1;
        self.put_change_head(t, head)?;
        Ok(dropped)
    }

    /// Records what collection `c`'s persisted search image, saved in this transaction,
    /// reflects.
    pub fn put_change_mark(
        &mut self,
        t: TenantKey,
        c: &CollectionName,
        mark: ChangeMark,
    ) -> Result<(), StoreError> {
        self.table_mut(t)?.insert(
            keys::change_mark(t, c).as_slice(),
            encode_change_mark(&mark)?.as_slice(),
        )?;
        Ok(())
    }

    pub fn delete_change_mark(
        &mut self,
        t: TenantKey,
        c: &CollectionName,
    ) -> Result<(), StoreError> {
        self.table_mut(t)?
            .remove(keys::change_mark(t, c).as_slice())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use strata_types::Record;

    use super::*;
    use crate::Store;

    fn record(id: &str, collection: &str) -> Record {
        serde_json::from_value(serde_json::json!({
            "id": id, "modality": collection, "kind": null, "content": "c", "vector": null,
            "user_tokens": [], "memory_domain": "default", "run_id": null,
            "memory_scope": null, "metadata": {}, "created_at": 1, "updated_at": 1,
            "expires_at": null,
            "confidence": {"value": 0.5, "evidence_count": 0, "corroborations": 0,
                           "contradictions": 0}
        }))
        .unwrap()
    }

    fn log(store: &Store, t: TenantKey) -> Vec<(u64, ChangeOp, String, String)> {
        let r = store.read().unwrap();
        r.changes_after(t, 0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(s, e)| (s, e.op, e.collection.to_string(), e.id.to_string()))
            .collect()
    }

    #[test]
    fn every_record_write_is_logged_in_order_and_trimmed_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (t, other) = (TenantKey::from_raw(1), TenantKey::from_raw(2));
        store
            .write(|w| {
                w.put_record(t, &record("a", "text"))?;
                w.put_record(t, &record("b", "text"))?;
                w.put_record(other, &record("x", "text"))?;
                // Moved to another collection: removed from the old one, written to the new.
                w.put_record(t, &record("a", "image"))?;
                w.delete_record(t, &RecordId::parse("b").unwrap())?;
                // Deleting nothing logs nothing.
                w.delete_record(t, &RecordId::parse("zz").unwrap())?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        use ChangeOp::*;
        let s = |x: &str| x.to_string();
        assert_eq!(
            log(&store, t),
            vec![
                (1, Upsert, s("text"), s("a")),
                (2, Upsert, s("text"), s("b")),
                (3, Delete, s("text"), s("a")),
                (4, Upsert, s("image"), s("a")),
                (5, Delete, s("text"), s("b")),
            ]
        );
        assert_eq!(log(&store, other), vec![(1, Upsert, s("text"), s("x"))]);
        assert_eq!(
            store.read().unwrap().change_head(t).unwrap(),
            ChangeHead { next: 6, first: 1 }
        );
        let dropped = store.write(|w| w.trim_change_log(t, 3)).unwrap();
        assert_eq!(dropped, 3);
        assert_eq!(log(&store, t).first().map(|e| e.0), Some(4));
        // Trimming beyond the end stops at the end; sequences are not reused afterwards.
        store.write(|w| w.trim_change_log(t, 99)).unwrap();
        assert!(log(&store, t).is_empty());
        store
            .write(|w| w.put_record(t, &record("c", "text")).map(drop))
            .unwrap();
        assert_eq!(log(&store, t), vec![(6, Upsert, s("text"), s("c"))]);
        assert_eq!(
            store.read().unwrap().change_head(t).unwrap(),
            ChangeHead { next: 7, first: 6 }
        );
    }

    #[test]
    fn the_cap_drops_the_oldest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.set_change_log_cap(3);
        let t = TenantKey::from_raw(1);
        for i in 0..5 {
            store
                .write(|w| w.put_record(t, &record(&format!("r{i}"), "text")).map(drop))
                .unwrap();
        }
        let seqs: Vec<u64> = log(&store, t).into_iter().map(|e| e.0).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(
            store.read().unwrap().change_head(t).unwrap(),
            ChangeHead { next: 6, first: 3 }
        );
    }

    #[test]
    fn a_dedicated_tenants_log_lives_in_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let b = store
            .write(|w| {
                w.create_tenant(
                    &strata_types::TenantId::parse("b").unwrap(),
                    0,
                    Default::default(),
                )
                .map(|m| m.key)
            })
            .unwrap();
        store.route_dedicated(store.create_dedicated(b).unwrap());
        let ((), pending) = store
            .write_pending_for(b, |w| w.put_record(b, &record("a", "text")).map(drop))
            .unwrap();
        pending.wait_durable().unwrap();
        assert_eq!(log(&store, b).len(), 1);
        // The record, its scope entries, the log entry and its head: all in the file.
        assert_eq!(store.main_keys(b).unwrap(), 0);
    }

    #[test]
    fn verify_checks_the_log_against_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let t = TenantKey::from_raw(1);
        store
            .write(|w| w.put_record(t, &record("a", "text")).map(drop))
            .unwrap();
        let check = |store: &Store| crate::check_tenant(&store.read().unwrap(), t).unwrap();
        // Collection `text` is missing (one problem); the log itself is fine.
        let clean = check(&store);
        assert!(
            clean.problems.iter().all(|p| !p.contains("change log")),
            "{clean:?}"
        );
        // An entry beyond the head, and one that does not decode.
        store
            .write(|w| {
                w.table_mut(t)?
                    .insert(keys::change_entry(t, 9).as_slice(), [1u8, 0, 0].as_slice())?;
                let e = encode_change(&ChangeEntry {
                    op: ChangeOp::Upsert,
                    collection: CollectionName::parse("text").unwrap(),
                    id: RecordId::parse("b").unwrap(),
                })?;
                w.table_mut(t)?
                    .insert(keys::change_entry(t, 7).as_slice(), e.as_slice())?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let found = check(&store).problems.join("\n");
        assert!(
            found.contains("change log entry 9: stored value is corrupt"),
            "{found}"
        );
        assert!(
            found.contains("change log entry 7: outside the head"),
            "{found}"
        );
    }

    #[test]
    fn marks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let t = TenantKey::from_raw(1);
        let c = CollectionName::parse("text").unwrap();
        assert_eq!(store.read().unwrap().change_mark(t, &c).unwrap(), None);
        let mark = ChangeMark {
            version: 3,
            seq: 42,
        };
        store.write(|w| w.put_change_mark(t, &c, mark)).unwrap();
        assert_eq!(
            store.read().unwrap().change_mark(t, &c).unwrap(),
            Some(mark)
        );
        store.write(|w| w.delete_change_mark(t, &c)).unwrap();
        assert_eq!(store.read().unwrap().change_mark(t, &c).unwrap(), None);
    }
}
