//! Transactions over the three tables, with typed reads and writes.

use std::path::Path;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, Table, TableDefinition,
};
use sha2::{Digest, Sha256};
use strata_types::{Collection, CollectionName, Domain, Millis, Record, RecordId, TenantId};

use crate::StoreError;
use crate::codec::{decode_json, decode_record, encode_json, encode_record};
use crate::group_commit::{GroupCommit, Seq};
use crate::keys::{self, ScopeField, TenantKey};
use crate::registry::{StoredMeta, TenantMeta};

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
const REGISTRY: TableDefinition<&str, &[u8]> = TableDefinition::new("registry");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Credentials by id (API keys and the like), as opaque bytes owned by the auth crate.
const CREDENTIALS: TableDefinition<&str, &[u8]> = TableDefinition::new("credentials");
const NEXT_TENANT_KEY: &str = "next_tenant_key";

/// The database. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    /// Transactions begin under the read lock; compaction, which needs no transaction in
    /// flight, takes the write lock.
    db: Arc<RwLock<Database>>,
    /// Concurrent writes share fsyncs (see `group_commit`); on by default.
    grouped: AtomicBool,
    group: Arc<GroupCommit>,
    /// How long each durable commit took (with group commit, each shared sync), for the
    /// metrics endpoint.
    commits: Arc<crate::stats::LatencyHistogram>,
}

/// A write that has committed and is visible to readers, but is not yet known to be durable.
/// [`Pending::wait_durable`] blocks until it is; acknowledge the write only after that. It owns
/// what it needs, so the wait can happen on another thread than the write.
#[must_use = "a write is not durable until wait_durable returns Ok"]
pub struct Pending {
    /// `None` when the write committed with its own fsync (group commit off).
    waiting: Option<Waiting>,
}

/// What a pending write needs to wait for, or lead, a sync.
struct Waiting {
    seq: Seq,
    db: Arc<RwLock<Database>>,
    group: Arc<GroupCommit>,
    commits: Arc<crate::stats::LatencyHistogram>,
}

impl Pending {
    /// Returns once the write is on disk, sharing one fsync with every other write committed
    /// meanwhile; an error means the write is not known to be durable.
    pub fn wait_durable(self) -> Result<(), StoreError> {
        match self.waiting {
            None => Ok(()),
            Some(w) => w.group.wait_durable(w.seq, || sync(&w.db, &w.commits)),
        }
    }
}

fn read_db(db: &RwLock<Database>) -> RwLockReadGuard<'_, Database> {
    // A panic while holding the lock cannot leave the database half-changed: redb's own
    // transactions guarantee that.
    db.read().unwrap_or_else(|e| e.into_inner())
}

/// One durable commit of an empty transaction, which flushes and syncs every commit before it.
fn sync(db: &RwLock<Database>, commits: &crate::stats::LatencyHistogram) -> Result<(), StoreError> {
    let db = read_db(db);
    let started = std::time::Instant::now();
    let txn = db.begin_write()?;
    txn.commit()?;
    commits.observe(started.elapsed());
    Ok(())
}

/// The store's page cache when not configured: enough for the pages a few cold-tenant loads
/// and the hot write path touch, small beside the residency budget it adds to.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl Store {
    /// Opens or creates the database file at `path` with the default page cache
    /// ([`DEFAULT_CACHE_BYTES`]). After a crash redb repairs the file on open; the last durable
    /// commit is what remains.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a page cache of at most `cache_bytes` (redb's own default is 1 GiB,
    /// which would sit outside every memory figure the server reports).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(DATA)?;
        txn.open_table(REGISTRY)?;
        txn.open_table(META)?;
        txn.open_table(CREDENTIALS)?;
        txn.commit()?;
        Ok(Store {
            db: Arc::new(RwLock::new(db)),
            grouped: AtomicBool::new(true),
            group: Arc::default(),
            commits: Arc::default(),
        })
    }

    /// Turns group commit on (the default) or off. Off, every write pays its own fsync while
    /// holding the storage engine's single write lock; only useful to measure the difference.
    pub fn set_group_commit(&self, on: bool) {
        self.grouped.store(on, Ordering::Relaxed);
    }

    /// Durations of the durable commits so far (each includes its `fsync`; with group commit,
    /// each is one sync shared by the writes it covered).
    pub fn commit_latency(&self) -> crate::stats::HistogramSnapshot {
        self.commits.snapshot()
    }

    fn db(&self) -> RwLockReadGuard<'_, Database> {
        read_db(&self.db)
    }

    /// Rewrites the file so that freed pages are released and their old contents are gone
    /// from it. Waits for transactions in flight to finish; returns whether anything moved.
    pub fn compact(&self) -> Result<bool, StoreError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        let mut compacted = false;
        // redb compacts in steps; repeat until a pass moves nothing.
        while db.compact()? {
            compacted = true;
        }
        Ok(compacted)
    }

    /// A consistent snapshot for reading.
    pub fn read(&self) -> Result<Reader, StoreError> {
        let txn = self.db().begin_read()?;
        Ok(Reader {
            data: txn.open_table(DATA)?,
            registry: txn.open_table(REGISTRY)?,
            credentials: txn.open_table(CREDENTIALS)?,
        })
    }

    /// Runs `f` in one write transaction. On `Ok` the transaction is committed and synced to
    /// disk before this returns; on `Err` nothing of it is applied.
    pub fn write<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let (result, pending) = self.write_pending(f)?;
        pending.wait_durable()?;
        Ok(result)
    }

    /// Runs `f` in one write transaction and commits it, returning before the commit is
    /// necessarily durable, so the caller can release its own locks first and let other
    /// writers join the same fsync. On `Err` nothing of it is applied, and writes committed
    /// alongside it are not affected: each write is its own transaction.
    pub fn write_pending<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<(R, Pending), E> {
        let entered = self
            .grouped
            .load(Ordering::Relaxed)
            .then(|| self.group.enter());
        let db = self.db();
        let mut txn = db.begin_write().map_err(StoreError::from)?;
        if entered.is_some() {
            txn.set_durability(Durability::None)
                .map_err(StoreError::from)?;
        }
        let result = {
            let mut writer = Writer {
                data: txn.open_table(DATA).map_err(StoreError::from)?,
                registry: txn.open_table(REGISTRY).map_err(StoreError::from)?,
                meta: txn.open_table(META).map_err(StoreError::from)?,
                credentials: txn.open_table(CREDENTIALS).map_err(StoreError::from)?,
            };
            f(&mut writer)
        };
        match result {
            Ok(r) => {
                let started = std::time::Instant::now();
                txn.commit().map_err(StoreError::from)?;
                if entered.is_none() {
                    self.commits.observe(started.elapsed());
                }
                drop(db);
                let waiting = entered.map(|e| Waiting {
                    seq: e.committed(),
                    db: Arc::clone(&self.db),
                    group: Arc::clone(&self.group),
                    commits: Arc::clone(&self.commits),
                });
                Ok((r, Pending { waiting }))
            }
            Err(e) => {
                // Dropping an uncommitted transaction aborts it.
                drop(txn);
                Err(e)
            }
        }
    }
}

/// A read snapshot.
pub struct Reader {
    data: ReadOnlyTable<&'static [u8], &'static [u8]>,
    registry: ReadOnlyTable<&'static str, &'static [u8]>,
    credentials: ReadOnlyTable<&'static str, &'static [u8]>,
}

/// The inside of a write transaction.
pub struct Writer<'txn> {
    pub(crate) data: Table<'txn, &'static [u8], &'static [u8]>,
    registry: Table<'txn, &'static str, &'static [u8]>,
    meta: Table<'txn, &'static str, u64>,
    pub(crate) credentials: Table<'txn, &'static str, &'static [u8]>,
}

type IdIter<'a> = Box<dyn Iterator<Item = Result<RecordId, StoreError>> + 'a>;

pub(crate) mod sealed {
    use redb::ReadableTable;

    /// The raw tables behind [`super::Reads`]. In a private module, so no other crate can
    /// name it and reach a table past the typed methods (credentials above all, which only
    /// [`crate::CredentialStore`] touches).
    pub trait Tables {
        fn data_table(&self) -> &impl ReadableTable<&'static [u8], &'static [u8]>;
        fn registry_table(&self) -> &impl ReadableTable<&'static str, &'static [u8]>;
        fn credentials_table(&self) -> &impl ReadableTable<&'static str, &'static [u8]>;
    }
}

use sealed::Tables;

/// One registry row as stored: its id, and its meta or why that does not decode.
pub type RegistryRow = (String, Result<TenantMeta, StoreError>);

/// Reads shared by snapshots and write transactions (which see their own writes).
#[allow(private_bounds)]
pub trait Reads: Tables {
    fn tenant(&self, id: &TenantId) -> Result<Option<TenantMeta>, StoreError> {
        let Some(v) = self.registry_table().get(id.as_str())? else {
            return Ok(None);
        };
        let stored: StoredMeta = decode_json(v.value())?;
        Ok(Some(TenantMeta::from_stored(id.clone(), stored)))
    }

    fn tenants(&self) -> Result<Vec<TenantMeta>, StoreError> {
        let mut out = Vec::new();
        for entry in self.registry_table().iter()? {
            let (k, v) = entry?;
            let id = TenantId::parse(k.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push(TenantMeta::from_stored(id, decode_json(v.value())?));
        }
        Ok(out)
    }

    /// Up to `limit` tenants with ids after `after` (all from the start when `None`), in id
    /// order. Each row is decoded on its own and returned with its stored id, so one row that
    /// does not decode cannot hide the others from a caller that can carry on without it.
    fn tenants_page(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<RegistryRow>, StoreError> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.as_str()));
        let mut out = Vec::new();
        for entry in self
            .registry_table()
            .range::<&str>((start, Bound::Unbounded))?
            .take(limit)
        {
            let (k, v) = entry?;
            let raw = k.value().to_owned();
            let meta = TenantId::parse(&raw)
                .map_err(|e| StoreError::Corrupt(e.to_string()))
                .and_then(|id| Ok(TenantMeta::from_stored(id, decode_json(v.value())?)));
            out.push((raw, meta));
        }
        Ok(out)
    }

    /// How many tenants are registered (soft-deleted ones included); reads keys only.
    fn tenant_count(&self) -> Result<u64, StoreError> {
        Ok(redb::ReadableTableMetadata::len(self.registry_table())?)
    }

    fn collection(
        &self,
        t: TenantKey,
        name: &CollectionName,
    ) -> Result<Option<Collection>, StoreError> {
        let v = self
            .data_table()
            .get(keys::collection(t, name).as_slice())?;
        v.map(|v| decode_json(v.value())).transpose()
    }

    fn collections(&self, t: TenantKey) -> Result<Vec<Collection>, StoreError> {
        let prefix = keys::collections(t);
        let mut out = Vec::new();
        for entry in prefix_range(self.data_table(), &prefix)? {
            let (_, v) = entry?;
            out.push(decode_json(&v)?);
        }
        Ok(out)
    }

    fn record(&self, t: TenantKey, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let v = self.data_table().get(keys::record(t, id).as_slice())?;
        v.map(|v| decode_record(v.value())).transpose()
    }

    /// Every record of the tenant in id order, starting after `after`.
    fn records<'a>(
        &'a self,
        t: TenantKey,
        after: Option<&RecordId>,
    ) -> Result<Box<dyn Iterator<Item = Result<Record, StoreError>> + 'a>, StoreError> {
        let prefix = keys::records(t);
        let start = match after {
            Some(id) => successor(keys::record(t, id)),
            None => prefix.clone(),
        };
        let iter = bounded_range(self.data_table(), &start, &prefix)?;
        Ok(Box::new(
            iter.map(|e| e.and_then(|(_, v)| decode_record(&v))),
        ))
    }

    /// Ids in one scope-index list, in id order, starting after `after`.
    fn scope_ids<'a>(
        &'a self,
        t: TenantKey,
        domain: &Domain,
        field: ScopeField,
        value: &str,
        after: Option<&RecordId>,
    ) -> Result<IdIter<'a>, StoreError> {
        let list = keys::scope_list(t, domain, field, value);
        let start = match after {
            Some(id) => successor(keys::scope_entry(t, domain, field, value, id)),
            None => list.clone(),
        };
        let skip = list.len();
        let iter = bounded_range(self.data_table(), &start, &list)?;
        Ok(Box::new(iter.map(move |e| {
            let (k, _) = e?;
            let id =
                std::str::from_utf8(&k[skip..]).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            RecordId::parse(id).map_err(|e| StoreError::Corrupt(e.to_string()))
        })))
    }

    /// The record that a run-level dedup key points to, if any.
    fn dedup_target(&self, t: TenantKey, record: &Record) -> Result<Option<RecordId>, StoreError> {
        let Some(key) = dedup_key(t, record) else {
            return Ok(None);
        };
        let Some(v) = self.data_table().get(key.as_slice())? else {
            return Ok(None);
        };
        let id = std::str::from_utf8(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(
            RecordId::parse(id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        ))
    }

    /// Audit rows of the tenant with sequence numbers above `after`, oldest first.
    fn audit_rows(
        &self,
        t: TenantKey,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let prefix = keys::audit_log(t);
        let start = keys::audit_row(t, after.saturating_add(1));
        let mut out = Vec::new();
        for entry in bounded_range(self.data_table(), &start, &prefix)?.take(limit) {
            let (k, v) = entry?;
            let seq = k[prefix.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("audit key".into()))?;
            out.push((seq, v));
        }
        Ok(out)
    }

    fn blob(&self, t: TenantKey, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .data_table()
            .get(keys::blob(t, name).as_slice())?
            .map(|v| v.value().to_vec()))
    }

    /// Every blob of the tenant whose name starts with `prefix`, by name, with its name.
    fn blobs_named(
        &self,
        t: TenantKey,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = keys::blob(t, prefix);
        let skip = keys::blob(t, "").len();
        let mut out = Vec::new();
        for entry in prefix_range(self.data_table(), &start)? {
            let (k, v) = entry?;
            let name = std::str::from_utf8(&k[skip..])
                .map_err(|e| StoreError::Corrupt(format!("blob name: {e}")))?;
            out.push((name.to_owned(), v));
        }
        Ok(out)
    }
}

impl Reads for Reader {}
impl Reads for Writer<'_> {}

impl Tables for Reader {
    fn data_table(&self) -> &impl ReadableTable<&'static [u8], &'static [u8]> {
        &self.data
    }
    fn registry_table(&self) -> &impl ReadableTable<&'static str, &'static [u8]> {
        &self.registry
    }
    fn credentials_table(&self) -> &impl ReadableTable<&'static str, &'static [u8]> {
        &self.credentials
    }
}

impl Tables for Writer<'_> {
    fn data_table(&self) -> &impl ReadableTable<&'static [u8], &'static [u8]> {
        &self.data
    }
    fn registry_table(&self) -> &impl ReadableTable<&'static str, &'static [u8]> {
        &self.registry
    }
    fn credentials_table(&self) -> &impl ReadableTable<&'static str, &'static [u8]> {
        &self.credentials
    }
}

impl<'txn> Writer<'txn> {
    /// The `data` table, for the other modules of this crate that write their own keys.
    pub(crate) fn data_mut(&mut self) -> &mut Table<'txn, &'static [u8], &'static [u8]> {
        &mut self.data
    }

    /// Registers a tenant under a fresh, never reused storage key.
    pub fn create_tenant(
        &mut self,
        id: &TenantId,
        created_at: Millis,
        profile: serde_json::Map<String, serde_json::Value>,
    ) -> Result<TenantMeta, StoreError> {
        let next = self
            .meta
            .get(NEXT_TENANT_KEY)?
            .map(|v| v.value())
            .unwrap_or(1);
        self.meta.insert(NEXT_TENANT_KEY, next + 1)?;
        let meta = TenantMeta {
            id: id.clone(),
            key: TenantKey::from_raw(next),
            created_at,
            profile,
        };
        self.put_tenant(&meta)?;
        Ok(meta)
    }

    pub fn put_tenant(&mut self, meta: &TenantMeta) -> Result<(), StoreError> {
        self.registry
            .insert(meta.id.as_str(), encode_json(&meta.to_stored())?.as_slice())?;
        Ok(())
    }

    /// Removes the tenant from the registry and erases every key of its data and every
    /// credential issued for it.
    pub fn erase_tenant(&mut self, meta: &TenantMeta) -> Result<(), StoreError> {
        self.registry.remove(meta.id.as_str())?;
        let mut owned = Vec::new();
        for entry in self.credentials.iter()? {
            let (k, v) = entry?;
            if crate::credentials::decode_row(v.value())?.owner == Some(meta.key) {
                owned.push(k.value().to_owned());
            }
        }
        for id in owned {
            self.credentials.remove(id.as_str())?;
        }
        let start = keys::tenant_all(meta.key);
        match keys::prefix_end(&start) {
            Some(end) => {
                self.data
                    .retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
            }
            None => {
                self.data.retain_in(start.as_slice().., |_, _| false)?;
            }
        }
        Ok(())
    }

    pub fn put_collection(&mut self, t: TenantKey, c: &Collection) -> Result<(), StoreError> {
        self.data.insert(
            keys::collection(t, &c.name).as_slice(),
            encode_json(c)?.as_slice(),
        )?;
        Ok(())
    }

    pub fn delete_collection(
        &mut self,
        t: TenantKey,
        name: &CollectionName,
    ) -> Result<bool, StoreError> {
        Ok(self
            .data
            .remove(keys::collection(t, name).as_slice())?
            .is_some())
    }

    /// Stores `record`, replacing any record with its id, and keeps the scope index and the
    /// dedup entry in step. Returns the record it replaced.
    pub fn put_record(
        &mut self,
        t: TenantKey,
        record: &Record,
    ) -> Result<Option<Record>, StoreError> {
        let old = self.delete_record(t, &record.id)?;
        self.data.insert(
            keys::record(t, &record.id).as_slice(),
            encode_record(record)?.as_slice(),
        )?;
        for key in scope_entries(t, record) {
            self.data.insert(key.as_slice(), [].as_slice())?;
        }
        if let Some(key) = dedup_key(t, record) {
            self.data
                .insert(key.as_slice(), record.id.as_str().as_bytes())?;
        }
        Ok(old)
    }

    /// Deletes a record with its index entries. Returns it, or `None` if there was none.
    pub fn delete_record(
        &mut self,
        t: TenantKey,
        id: &RecordId,
    ) -> Result<Option<Record>, StoreError> {
        let old = match self.data.remove(keys::record(t, id).as_slice())? {
            Some(bytes) => decode_record(bytes.value())?,
            None => return Ok(None),
        };
        for key in scope_entries(t, &old) {
            self.data.remove(key.as_slice())?;
        }
        if let Some(key) = dedup_key(t, &old) {
            // Another record with the same content may own the entry now; leave it alone.
            let ours = self
                .data
                .get(key.as_slice())?
                .is_some_and(|v| v.value() == id.as_str().as_bytes());
            if ours {
                self.data.remove(key.as_slice())?;
            }
        }
        Ok(Some(old))
    }

    /// Appends a row to the tenant's audit log and returns its sequence number.
    pub fn append_audit(&mut self, t: TenantKey, row: &[u8]) -> Result<u64, StoreError> {
        let prefix = keys::audit_log(t);
        let seq = {
            let mut range = match keys::prefix_end(&prefix) {
                Some(end) => self.data.range(prefix.as_slice()..end.as_slice())?,
                None => self.data.range(prefix.as_slice()..)?,
            };
            match range.next_back() {
                Some(entry) => {
                    let (k, _) = entry?;
                    let bytes: [u8; 8] = k.value()[prefix.len()..]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("audit key".into()))?;
                    u64::from_be_bytes(bytes) + 1
                }
                None => 1,
            }
        };
        self.data.insert(keys::audit_row(t, seq).as_slice(), row)?;
        Ok(seq)
    }

    /// Erases the rows of `t`'s audit log for which `erase` says so (a purge erases the
    /// server log's rows about the purged tenant).
    pub fn erase_audit_rows(
        &mut self,
        t: TenantKey,
        mut erase: impl FnMut(&[u8]) -> Result<bool, StoreError>,
    ) -> Result<usize, StoreError> {
        let prefix = keys::audit_log(t);
        let mut doomed = Vec::new();
        for entry in prefix_range(&self.data, &prefix)? {
            let (k, v) = entry?;
            if erase(&v)? {
                doomed.push(k);
            }
        }
        for k in &doomed {
            self.data.remove(k.as_slice())?;
        }
        Ok(doomed.len())
    }

    pub fn put_blob(&mut self, t: TenantKey, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.data.insert(keys::blob(t, name).as_slice(), bytes)?;
        Ok(())
    }

    pub fn delete_blob(&mut self, t: TenantKey, name: &str) -> Result<(), StoreError> {
        self.data.remove(keys::blob(t, name).as_slice())?;
        Ok(())
    }
}

pub(crate) fn scope_entries(t: TenantKey, r: &Record) -> Vec<Vec<u8>> {
    let d = &r.memory_domain;
    let mut out = vec![keys::scope_entry(t, d, ScopeField::Domain, "", &r.id)];
    if let Some(run) = &r.run_id {
        out.push(keys::scope_entry(
            t,
            d,
            ScopeField::RunId,
            run.as_str(),
            &r.id,
        ));
    }
    if let Some(scope) = &r.memory_scope {
        out.push(keys::scope_entry(
            t,
            d,
            ScopeField::MemoryScope,
            scope.as_str(),
            &r.id,
        ));
    }
    if r.user_tokens.is_empty() {
        out.push(keys::scope_entry(t, d, ScopeField::Shared, "", &r.id));
    }
    for token in &r.user_tokens {
        out.push(keys::scope_entry(
            t,
            d,
            ScopeField::UserToken,
            token.as_str(),
            &r.id,
        ));
    }
    out
}

/// Records with content in a run are deduplicated on (collection, principals, local scope,
/// content): two writes that would produce indistinguishable memories share one id.
pub(crate) fn dedup_key(t: TenantKey, r: &Record) -> Option<Vec<u8>> {
    let run = r.run_id.as_ref()?;
    let content = r.content.as_ref()?;
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(r.modality.as_str().as_bytes());
    field(
        r.memory_scope
            .as_ref()
            .map_or("", |s| s.as_str())
            .as_bytes(),
    );
    for token in &r.user_tokens {
        field(token.as_str().as_bytes());
    }
    field(b"\0content");
    field(content.as_bytes());
    Some(keys::dedup(
        t,
        &r.memory_domain,
        run.as_str(),
        &h.finalize(),
    ))
}

/// The smallest key strictly after `key`.
fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

type Entry = Result<(Vec<u8>, Vec<u8>), StoreError>;

pub(crate) fn prefix_range<'a>(
    table: &'a impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
) -> Result<impl Iterator<Item = Entry> + 'a, StoreError> {
    bounded_range(table, prefix, prefix)
}

/// Entries from `start` on while their key starts with `prefix`.
fn bounded_range<'a>(
    table: &'a impl ReadableTable<&'static [u8], &'static [u8]>,
    start: &[u8],
    prefix: &[u8],
) -> Result<impl Iterator<Item = Entry> + 'a, StoreError> {
    let prefix = prefix.to_vec();
    let range = table.range(start..)?;
    Ok(range
        .map(|e| {
            e.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .map_err(StoreError::from)
        })
        .take_while(move |e| e.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix))))
}
