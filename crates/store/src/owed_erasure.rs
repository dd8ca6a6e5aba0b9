//! A purged tenant's range, erased in short transactions after its purge has committed.
//!
//! Erasing a large tenant's every key in the purge's own transaction held the main file's one
//! write lock for as long as the erasure, and every other tenant's writes waited for it. So
//! the purge's transaction (`Writer::unregister_tenant_owing_erasure`) removes what makes the
//! tenant reachable (its registry row and credentials) and records the erasure as owed, a
//! `meta` row per storage key; [`Store::erase_owed_ranges`] then erases the range in chunks,
//! each its own transaction, and removes the row in the last. Nothing reads the range once the
//! registry no longer names its key (every read and write checks the tenant's registry row in
//! its own snapshot, and storage keys are never reused), so a half-erased range is never seen.
//!
//! A crash between chunks leaves the row: the next vacuum (the start-up one, since the purge
//! also recorded a vacuum owed) finishes the erasure before it copies the file, so the new file
//! holds none of the range ([`Store::vacuum`] begins with [`Store::erase_owed_ranges`]).
//! Erasing a chunk is idempotent: two erasers of one range (a purge's vacuum and a retry's)
//! only share the work.

use redb::{ReadableDatabase, ReadableTable};

use crate::keys::{self, TenantKey};
use crate::tables::erase::tenant_naming;
use crate::tables::{
    DATA, META, MainTables, REGISTRY, RegistryRow, decode_registry_rows, next_tenant_key,
    prefix_range, refuse_after_failed_sync, registry_rows,
};
use crate::{Store, StoreError};

/// Keys erased per transaction: about what a batch of a thousand small records writes, so an
/// erasure holds the write lock about as long as a large write does.
pub(crate) const ERASE_CHUNK_KEYS: usize = 4_096;

/// Prefix of the `meta` rows that mark a storage key's range as owed an erasure:
/// `erasure.owed:<storage key, 16 hex digits>`, valued 1.
const OWED_PREFIX: &str = "erasure.owed:";

pub(crate) fn owed_row(t: TenantKey) -> String {
    format!("{OWED_PREFIX}{:016x}", t.raw())
}

/// The storage key an owed-erasure row names; a row that does not parse is corrupt.
fn owed_key(row: &str, value: u64) -> Result<TenantKey, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("meta {row}: {value} is not an owed erasure"));
    if value != 1 {
        return Err(corrupt());
    }
    let raw = row.strip_prefix(OWED_PREFIX).ok_or_else(corrupt)?;
    if raw.len() != 16
        || !raw
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(corrupt());
    }
    match u64::from_str_radix(raw, 16) {
        Ok(n) if n != TenantKey::SERVER.raw() => Ok(TenantKey::from_raw(n)),
        _ => Err(corrupt()),
    }
}

/// What the `erasure.owed:` rows hold: the ranges owed an erasure, and the rows that do not
/// decode. A malformed row names no range that can be trusted, so nothing is erased for it;
/// it is reported (and left for an operator) rather than stopping the erasure of the others,
/// or the server's start.
#[derive(Debug, Default, PartialEq)]
pub struct OwedErasures {
    /// Storage keys whose ranges are owed an erasure.
    pub keys: Vec<TenantKey>,
    /// Each malformed row, as the error that says why it does not decode.
    pub malformed: Vec<String>,
}

/// What one pass over the owed erasures did: how many keys it erased, and the owed rows it
/// left because they are malformed or name a key that cannot be a purged tenant's (as
/// [`OwedErasures::malformed`], read in the same pass, so a caller need not read the rows,
/// and the registry, again to report them).
#[derive(Debug, Default, PartialEq)]
pub struct ErasurePass {
    pub erased: u64,
    pub malformed: Vec<String>,
}

impl Store {
    /// The ranges owed an erasure, and the owed rows that do not decode or that name a key
    /// which cannot be a purged tenant's (see [`refuse_live_key`]). The registry is read in
    /// this snapshot, not under the write lock: storage keys are never reused, so a key no
    /// registry row names now is never named again.
    pub fn owed_erasures(&self) -> Result<OwedErasures, StoreError> {
        let main = self.db().clone();
        let txn = main.begin_read()?;
        let meta = txn.open_table(META)?;
        let mut owed = OwedErasures::default();
        let mut parsed = Vec::new();
        for entry in meta.range(OWED_PREFIX..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(OWED_PREFIX) {
                break;
            }
            match owed_key(k.value(), v.value()) {
                Ok(t) => parsed.push(t),
                Err(e) => owed.malformed.push(e.to_string()),
            }
        }
        if parsed.is_empty() {
            return Ok(owed);
        }
        let next = next_tenant_key(&meta)?;
        let registry = txn.open_table(REGISTRY)?;
        let rows = decode_registry_rows(registry_rows(&registry, None, usize::MAX)?);
        for t in parsed {
            match refuse_live_key(next, &rows, t) {
                Ok(()) => owed.keys.push(t),
                Err(e) => owed.malformed.push(e.to_string()),
            }
        }
        Ok(owed)
    }

    /// Erases every range owed an erasure, in transactions of at most [`ERASE_CHUNK_KEYS`]
    /// keys; returns how many keys were erased and the rows it skipped (see [`OwedErasures`]).
    /// Waits for a vacuum under way, and holds off the next one until done.
    pub fn erase_owed_ranges(&self) -> Result<ErasurePass, StoreError> {
        self.erase_owed_ranges_in(ERASE_CHUNK_KEYS)
    }

    /// [`Store::erase_owed_ranges`] with chunks of `chunk` keys (tests use small ones).
    pub fn erase_owed_ranges_in(&self, chunk: usize) -> Result<ErasurePass, StoreError> {
        self.erase_owed_ranges_hooked(chunk, &mut || {})
    }

    /// [`Store::erase_owed_ranges_in`], with `between` run after each chunk but a range's last.
    pub(crate) fn erase_owed_ranges_hooked(
        &self,
        chunk: usize,
        between: &mut dyn FnMut(),
    ) -> Result<ErasurePass, StoreError> {
        // The vacuums' guard: a vacuum's online copy records every key written meanwhile, up
        // to a cap, and a large range erased during it would overflow the recording and force
        // the whole copy under the write lock, which stops every tenant. Other writes still
        // run between chunks.
        let _one = self.vacuuming.lock().unwrap_or_else(|e| e.into_inner());
        self.erase_owed_ranges_holding_guard(chunk, between)
    }

    /// The erasure itself; the caller holds the vacuums' guard (`Store::vacuuming`).
    pub(crate) fn erase_owed_ranges_holding_guard(
        &self,
        chunk: usize,
        between: &mut dyn FnMut(),
    ) -> Result<ErasurePass, StoreError> {
        let owed = self.owed_erasures()?;
        let mut erased = 0;
        for t in owed.keys {
            erased += self.erase_owed_range_with(t, chunk.max(1), between)?;
        }
        Ok(ErasurePass {
            erased,
            malformed: owed.malformed,
        })
    }

    /// Erases storage key `t`'s range while it is owed an erasure, a chunk per transaction;
    /// the last chunk's transaction, which finds fewer than `chunk` keys, removes the row.
    /// `between` runs after each chunk but the last, holding nothing (tests write there).
    pub(crate) fn erase_owed_range_with(
        &self,
        t: TenantKey,
        chunk: usize,
        between: &mut dyn FnMut(),
    ) -> Result<u64, StoreError> {
        let _writing = crate::deferred_sync::write_path();
        // Readers trust their in-memory view of which tenants are live until the registry
        // epoch moves; the purge moved it after its commit, but this erasure may have started
        // before that bump (another eraser, a retry). Moved again before any chunk, so no
        // reader goes on trusting a view that names this range once part of it is gone.
        self.registry_committed();
        let prefix = keys::tenant_all(t);
        let row = owed_row(t);
        let mut erased = 0;
        loop {
            // As every write of the main file: after a failed sync nothing written since is
            // known to reach the disk, and a commit without durability would not notice.
            refuse_after_failed_sync(&self.db().sync)?;
            let db = self.db();
            let mut txn = db.begin_write()?;
            let doomed = {
                // Another eraser finished it (this one then has nothing left to do).
                if txn.open_table(META)?.get(row.as_str())?.is_none() {
                    return Ok(erased);
                }
                let table = txn.open_table(DATA)?;
                prefix_range(&table, &prefix)?
                    .take(chunk)
                    .map(|e| e.map(|(k, _)| k))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let last = doomed.len() < chunk;
            if !last {
                // The last chunk's durable commit syncs the earlier ones; a crash before it
                // leaves the row, and the next vacuum erases the rest.
                crate::recovery::set_non_durable(&mut txn)?;
            }
            {
                let mut tables = MainTables::open(&txn, &self.file_writes)?;
                for k in &doomed {
                    tables.data.remove(k.as_slice())?;
                }
                if last {
                    tables.meta.remove(row.as_str())?;
                }
            }
            // Again: a sync may have failed while this chunk was gathered.
            refuse_after_failed_sync(&db.sync)?;
            txn.commit()?;
            drop(db);
            // An old file whose last reader has ended since closes, as after every commit.
            self.retired.close_unread();
            erased += doomed.len() as u64;
            if last {
                return Ok(erased);
            }
            between();
        }
    }
}

/// Refuses to erase storage key `t` unless it is a purged tenant's: a registry row that names
/// it (or that does not decode, and so might), or a key no tenant has been given yet (`next`
/// is the next one to give), says the owed row is wrong, and erasing on its word could wipe a
/// live tenant. Such a row is reported with the malformed ones, and the other ranges are still
/// erased.
fn refuse_live_key(next: TenantKey, rows: &[RegistryRow], t: TenantKey) -> Result<(), StoreError> {
    if t.raw() >= next.raw() {
        return Err(StoreError::Corrupt(format!(
            "meta {}: storage key {} was never given to a tenant (next is {}): not erased",
            owed_row(t),
            t.raw(),
            next.raw()
        )));
    }
    if let Some(raw) = tenant_naming(rows, t)? {
        return Err(StoreError::Corrupt(format!(
            "meta {}: storage key {} is tenant {raw}'s: not erased",
            owed_row(t),
            t.raw()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
