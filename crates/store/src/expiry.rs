//! The expiry index: one row per record with an `expires_at`, ordered by that time, so the
//! records due at `now` are the head of one key range and the expiry sweep never reads a
//! record that is not due (`crates/engine/src/expiry_sweep.rs`).
//!
//! [`Writer::put_record`] and [`Writer::delete_record`] keep it in step with the records, so
//! every write path (puts, patches, deletes, imports, collection deletes, re-embeds) maintains
//! it in the change's own transaction; it lives in the tenant's range, so a migration copies
//! it and a purge erases it. Records stored before the index existed have no entry: the
//! engine enters them once ([`Writer::enter_expiry`]), then marks the index complete
//! ([`Writer::mark_expiry_built`]). The mark is one byte, and any other value is corrupt.

use redb::ReadableTable;
use strata_types::{Millis, Record, RecordId};

use crate::StoreError;
use crate::keys::{self, TenantKey};
use crate::tables::{Reads, Writer};

/// The value of the complete-index row (its format).
const BUILT: &[u8] = &[1];

/// Reads of the expiry index, for every transaction that reads.
pub trait ExpiryReads: Reads {
    /// Up to `limit` entries due at `now` (expiring at or before it), earliest first: the
    /// time each entry holds, and its record's id.
    fn expired_entries(
        &self,
        t: TenantKey,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, RecordId)>, StoreError> {
        let list = keys::expiry_list(t);
        let end = keys::expiry_after(t, now);
        let mut out = Vec::new();
        for entry in self
            .data_table(t)?
            .range(list.as_slice()..end.as_slice())?
            .take(limit)
        {
            let (k, _) = entry?;
            out.push(parse_entry(&k.value()[list.len()..])?);
        }
        Ok(out)
    }

    /// Whether the expiry index holds an entry for every record with an `expires_at` (the
    /// one-time entry of older records is done).
    fn expiry_built(&self, t: TenantKey) -> Result<bool, StoreError> {
        match self.data_table(t)?.get(keys::expiry_built(t).as_slice())? {
            None => Ok(false),
            Some(v) => check_built(v.value()).map(|()| true),
        }
    }
}

impl<R: Reads> ExpiryReads for R {}

impl Writer<'_> {
    /// Enters record `id`, as stored now, in the expiry index: for records stored before the
    /// index existed. Nothing for a record gone or without an expiry; entering one twice
    /// writes the same row. Whether an entry was written.
    pub fn enter_expiry(&mut self, t: TenantKey, id: &RecordId) -> Result<bool, StoreError> {
        let Some(key) = self
            .stored_record(t, id)?
            .as_ref()
            .and_then(|r| entry(t, r))
        else {
            return Ok(false);
        };
        self.table_mut(t)?.insert(key.as_slice(), [].as_slice())?;
        Ok(true)
    }

    /// Marks tenant `t`'s expiry index complete.
    pub fn mark_expiry_built(&mut self, t: TenantKey) -> Result<(), StoreError> {
        self.table_mut(t)?
            .insert(keys::expiry_built(t).as_slice(), BUILT)?;
        Ok(())
    }

    /// Removes tenant `t`'s whole expiry index and its mark: the state of a tenant stored
    /// before the index existed, for tests of its one-time entry.
    #[cfg(feature = "test-support")]
    pub fn forget_expiry_index_for_tests(&mut self, t: TenantKey) -> Result<(), StoreError> {
        let list = keys::expiry_list(t);
        let mut doomed = Vec::new();
        for e in crate::tables::prefix_range(self.table(t)?, &list)? {
            doomed.push(e?.0);
        }
        for k in doomed {
            self.table_mut(t)?.remove(k.as_slice())?;
        }
        self.table_mut(t)?
            .remove(keys::expiry_built(t).as_slice())?;
        Ok(())
    }

    /// Writes an expiry entry as given, whatever the record, for tests of a damaged index.
    #[cfg(feature = "test-support")]
    pub fn put_expiry_entry_for_tests(
        &mut self,
        t: TenantKey,
        at: Millis,
        id: &RecordId,
    ) -> Result<(), StoreError> {
        let key = keys::expiry_entry(t, at, id);
        self.table_mut(t)?.insert(key.as_slice(), [].as_slice())?;
        Ok(())
    }

    /// Removes an entry whose record is gone or expires at another time (never written by
    /// this crate: for an index a damaged file left behind). Whether it was there.
    pub fn remove_expiry_entry(
        &mut self,
        t: TenantKey,
        at: Millis,
        id: &RecordId,
    ) -> Result<bool, StoreError> {
        let key = keys::expiry_entry(t, at, id);
        Ok(self.table_mut(t)?.remove(key.as_slice())?.is_some())
    }
}

/// The expiry index entry `record` needs, if it has an `expires_at`.
pub(crate) fn entry(t: TenantKey, record: &Record) -> Option<Vec<u8>> {
    record
        .expires_at
        .map(|at| keys::expiry_entry(t, at, &record.id))
}

/// An entry's time and record id from the rest of its key (after tenant and tag).
pub(crate) fn parse_entry(rest: &[u8]) -> Result<(Millis, RecordId), StoreError> {
    let corrupt = || StoreError::Corrupt(format!("expiry index entry {rest:02x?}"));
    let (at, id) = keys::parse_expiry(rest).ok_or_else(corrupt)?;
    let id = std::str::from_utf8(id).map_err(|_| corrupt())?;
    Ok((at, RecordId::parse(id).map_err(|_| corrupt())?))
}

/// The complete-index row's value, decoded closed.
pub(crate) fn check_built(value: &[u8]) -> Result<(), StoreError> {
    if value == BUILT {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "expiry index mark: unknown value {value:02x?}"
        )))
    }
}
