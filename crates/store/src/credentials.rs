//! The narrow handle the authentication layer gets: credential rows and tenant look-ups,
//! nothing of any tenant's data.
//!
//! Every credential row names its owner, the storage key of the tenant incarnation it was
//! issued for (or [`TenantKey::SERVER`] for operator credentials). Storage keys are never
//! reused, so a credential of a deleted tenant can never match a tenant created later under
//! the same id, and erasing a tenant finds and erases its credentials in the same transaction.

use redb::ReadableTable;
use strata_types::TenantId;

use crate::codec::{decode_credential, encode_credential};
use crate::registry::TenantMeta;
use crate::tables::sealed::Tables;
use crate::tables::{Reads, Store, Writer};
use crate::{StoreError, TenantKey};

/// Names in the `meta` table that keep the server's start, and a tenant's erasure,
/// independent of the number of credentials: without them, finding an operator key, upgrading
/// legacy rows and erasing a tenant's keys each read every credential (one per tenant,
/// typically).
///
/// Set once every credential row has an owner; [`CredentialStore::upgrade_legacy`] then skips
/// its scan. Rows are only ever written with an owner after that.
const OWNERS_COMPLETE: &str = "credentials.owners_complete";
/// Set once the owner index below lists every credential; before that (a data directory from
/// an older version) the index is built by one scan at start
/// ([`CredentialStore::operator_credentials`]), and erasing a tenant scans.
const OWNER_INDEX_COMPLETE: &str = "credentials.owner_index_complete";
/// Prefix of the owner index: `credentials.owner:<owner key, 16 hex digits>:<credential id>`
/// for each credential row. Operator credentials are the owner `0000000000000000`.
const OWNER_INDEX: &str = "credentials.owner:";

fn owner_prefix(owner: TenantKey) -> String {
    format!("{OWNER_INDEX}{:016x}:", owner.raw())
}

/// The end of an owner's range: `;` is the byte after `:`.
fn owner_prefix_end(owner: TenantKey) -> String {
    format!("{OWNER_INDEX}{:016x};", owner.raw())
}

fn owner_entry(owner: TenantKey, id: &str) -> String {
    format!("{}{id}", owner_prefix(owner))
}

/// Adds credential `id` of `owner` to the owner index.
pub(crate) fn index_owner(
    meta: &mut crate::file_writes::Tracked<'_, &'static str, u64>,
    owner: TenantKey,
    id: &str,
) -> Result<(), StoreError> {
    meta.insert(owner_entry(owner, id).as_str(), 1)?;
    Ok(())
}

/// The ids of `owner`'s credentials, from the owner index; `None` while the index is not
/// complete (the caller scans instead).
pub(crate) fn owned_ids(
    meta: &impl redb::ReadableTable<&'static str, u64>,
    owner: TenantKey,
) -> Result<Option<Vec<String>>, StoreError> {
    if meta.get(OWNER_INDEX_COMPLETE)?.is_none() {
        return Ok(None);
    }
    let prefix = owner_prefix(owner);
    let end = owner_prefix_end(owner);
    let mut ids = Vec::new();
    for entry in meta.range(prefix.as_str()..end.as_str())? {
        let (k, _) = entry?;
        ids.push(k.value()[prefix.len()..].to_owned());
    }
    Ok(Some(ids))
}

/// Removes `owner`'s credential `id` from the owner index.
pub(crate) fn unindex_owner(
    meta: &mut crate::file_writes::Tracked<'_, &'static str, u64>,
    owner: TenantKey,
    id: &str,
) -> Result<(), StoreError> {
    meta.remove(owner_entry(owner, id).as_str())?;
    Ok(())
}

/// A credential row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// The incarnation it belongs to; `None` for a row written before rows had owners, which
    /// grants nothing until [`CredentialStore::upgrade_legacy`] has given it one.
    pub owner: Option<TenantKey>,
    /// The authentication layer's own encoding of the credential.
    pub body: Vec<u8>,
}

/// Whom a new credential is for.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// The operator: every tenant, through the admin API.
    Server,
    /// The tenant currently registered under this id.
    Tenant(&'a TenantId),
}

/// Credential rows and tenant look-ups, for the authentication layer.
#[derive(Clone, Copy)]
pub struct CredentialStore<'a> {
    store: &'a Store,
}

impl Store {
    /// The handle authentication uses; it cannot reach any tenant's data.
    pub fn credentials(&self) -> CredentialStore<'_> {
        CredentialStore { store: self }
    }
}

pub(crate) fn decode_row(bytes: &[u8]) -> Result<StoredCredential, StoreError> {
    Ok(match decode_credential(bytes)? {
        Some((owner, body)) => StoredCredential {
            owner: Some(TenantKey::from_raw(owner)),
            body: body.to_vec(),
        },
        None => StoredCredential {
            owner: None,
            body: bytes.to_vec(),
        },
    })
}

impl CredentialStore<'_> {
    /// A credential by id.
    pub fn get(&self, id: &str) -> Result<Option<StoredCredential>, StoreError> {
        let r = self.store.read()?;
        let row = r.credentials_table().get(id)?;
        row.map(|v| decode_row(v.value())).transpose()
    }

    /// Every credential, by id.
    pub fn all(&self) -> Result<Vec<(String, StoredCredential)>, StoreError> {
        let r = self.store.read()?;
        let mut out = Vec::new();
        for entry in r.credentials_table().iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_owned(), decode_row(v.value())?));
        }
        Ok(out)
    }

    /// The tenant registered under `id` now, if any.
    pub fn tenant(&self, id: &TenantId) -> Result<Option<TenantMeta>, StoreError> {
        self.store.read()?.tenant(id)
    }

    /// Stores a new credential for `owner`, in one transaction with the check that the tenant
    /// exists and with `audit` (given the owner's storage key), so the credential and its audit
    /// row are durable together or not at all. Returns `Ok(false)`, storing nothing, when the
    /// tenant does not exist. An id already stored is an error: a credential is never
    /// overwritten by another.
    pub fn insert(
        &self,
        id: &str,
        owner: Owner<'_>,
        body: &[u8],
        audit: impl FnOnce(&mut Writer<'_>, TenantKey) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        self.store.write(|w| {
            if w.credentials.get(id)?.is_some() {
                return Err(StoreError::Engine(format!(
                    "credential id {id} is already taken"
                )));
            }
            let key = match owner {
                Owner::Server => TenantKey::SERVER,
                Owner::Tenant(t) => match w.tenant(t)? {
                    Some(meta) => meta.key,
                    None => return Ok(false),
                },
            };
            w.credentials
                .insert(id, encode_credential(key.raw(), body).as_slice())?;
            index_owner(&mut w.meta, key, id)?;
            audit(w, key)?;
            Ok(true)
        })
    }

    /// Every credential owned by the server (operator keys), revoked ones included, read
    /// through the owner index: the cost follows the number of operator keys, not of all
    /// credentials. A data directory from before the index gets it built here, by one scan.
    pub fn operator_credentials(&self) -> Result<Vec<(String, StoredCredential)>, StoreError> {
        self.store.write(|w| {
            if w.meta.get(OWNER_INDEX_COMPLETE)?.is_none() {
                let mut rows = Vec::new();
                for entry in w.credentials_table().iter()? {
                    let (k, v) = entry?;
                    if let Some(owner) = decode_row(v.value())?.owner {
                        rows.push((owner, k.value().to_owned()));
                    }
                }
                for (owner, id) in rows {
                    index_owner(&mut w.meta, owner, &id)?;
                }
                w.meta.insert(OWNER_INDEX_COMPLETE, 1)?;
            }
            let ids = owned_ids(&*w.meta, TenantKey::SERVER)?.unwrap_or_default();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                // An index entry without its row would be a bug; the row is what counts.
                if let Some(v) = w.credentials_table().get(id.as_str())? {
                    let row = decode_row(v.value())?;
                    if row.owner == Some(TenantKey::SERVER) {
                        out.push((id, row));
                    }
                }
            }
            Ok(out)
        })
    }

    /// Rewrites the body of credential `id` with `f` (which may return `None` to leave it as
    /// it is), keeping its owner, in one transaction; when `f` changed it, `audit` runs in that
    /// transaction too, given the owner's storage key and the new body. Returns the body as it
    /// is afterwards, or `None` when there is no such credential.
    pub fn update<E: From<StoreError>>(
        &self,
        id: &str,
        f: impl FnOnce(&[u8]) -> Result<Option<Vec<u8>>, E>,
        audit: impl FnOnce(&mut Writer<'_>, TenantKey, &[u8]) -> Result<(), E>,
    ) -> Result<Option<StoredCredential>, E> {
        self.store.write(|w| {
            let row = match w.credentials_table().get(id).map_err(StoreError::from)? {
                Some(v) => decode_row(v.value())?,
                None => return Ok(None),
            };
            let mut row = row;
            let Some(owner) = row.owner else {
                return Err(StoreError::Corrupt(format!("credential {id}: no owner")).into());
            };
            if let Some(body) = f(&row.body)? {
                w.credentials
                    .insert(id, encode_credential(owner.raw(), &body).as_slice())
                    .map_err(StoreError::from)?;
                audit(w, owner, &body)?;
                row.body = body;
            }
            Ok(Some(row))
        })
    }

    /// Rotates credential `id`: `f` gets its body and returns its new body and the body of a
    /// new credential `new_id`, which gets the same owner (the same tenant incarnation); both
    /// are written, and `audit` runs given the owner and the two new bodies (old, new), in one
    /// transaction, so a crash leaves either the old credential alone or both. `Ok(None)` when
    /// there is no credential `id`.
    pub fn rotate<E: From<StoreError>>(
        &self,
        id: &str,
        new_id: &str,
        f: impl FnOnce(&[u8]) -> Result<(Vec<u8>, Vec<u8>), E>,
        audit: impl FnOnce(&mut Writer<'_>, TenantKey, &[u8], &[u8]) -> Result<(), E>,
    ) -> Result<Option<()>, E> {
        self.store.write(|w| {
            let row = match w.credentials_table().get(id).map_err(StoreError::from)? {
                Some(v) => decode_row(v.value())?,
                None => return Ok(None),
            };
            let Some(owner) = row.owner else {
                return Err(StoreError::Corrupt(format!("credential {id}: no owner")).into());
            };
            if w.credentials
                .get(new_id)
                .map_err(StoreError::from)?
                .is_some()
            {
                return Err(
                    StoreError::Engine(format!("credential id {new_id} is already taken")).into(),
                );
            }
            let (old_body, new_body) = f(&row.body)?;
            w.credentials
                .insert(id, encode_credential(owner.raw(), &old_body).as_slice())
                .map_err(StoreError::from)?;
            w.credentials
                .insert(new_id, encode_credential(owner.raw(), &new_body).as_slice())
                .map_err(StoreError::from)?;
            index_owner(&mut w.meta, owner, new_id)?;
            audit(w, owner, &old_body, &new_body)?;
            Ok(Some(()))
        })
    }

    /// Gives every row written before rows had owners the owner that `owner_of` names for its
    /// body: the tenant registered under that id now (the only incarnation the row can have
    /// been meant for), or the server. Rows whose tenant no longer exists are erased. Returns
    /// how many rows were upgraded or erased.
    pub fn upgrade_legacy<E: From<StoreError>>(
        &self,
        owner_of: impl Fn(&[u8]) -> Result<Option<TenantId>, E>,
    ) -> Result<usize, E> {
        self.store.write(|w| {
            if w.meta
                .get(OWNERS_COMPLETE)
                .map_err(StoreError::from)?
                .is_some()
            {
                return Ok(0);
            }
            let mut legacy = Vec::new();
            for entry in w.credentials_table().iter().map_err(StoreError::from)? {
                let (k, v) = entry.map_err(StoreError::from)?;
                let row = decode_row(v.value())?;
                if row.owner.is_none() {
                    legacy.push((k.value().to_owned(), row.body));
                }
            }
            for (id, body) in &legacy {
                let owner = match owner_of(body)? {
                    None => Some(TenantKey::SERVER),
                    Some(t) => w.tenant(&t)?.map(|m| m.key),
                };
                match owner {
                    Some(key) => {
                        w.credentials
                            .insert(id.as_str(), encode_credential(key.raw(), body).as_slice())
                            .map_err(StoreError::from)?;
                        index_owner(&mut w.meta, key, id)?;
                    }
                    None => {
                        w.credentials
                            .remove(id.as_str())
                            .map_err(StoreError::from)?;
                    }
                }
            }
            w.meta
                .insert(OWNERS_COMPLETE, 1)
                .map_err(StoreError::from)?;
            Ok(legacy.len())
        })
    }

    /// Writes a credential row exactly as given, owner and all (`None`: the format before
    /// owners). For tests of old formats and of rows that outlived their tenant.
    #[cfg(feature = "test-support")]
    pub fn restore_for_tests(&self, id: &str, row: &StoredCredential) -> Result<(), StoreError> {
        let bytes = match row.owner {
            Some(owner) => encode_credential(owner.raw(), &row.body),
            None => row.body.clone(),
        };
        self.store.write(|w| {
            w.credentials.insert(id, bytes.as_slice())?;
            if let Some(owner) = row.owner {
                index_owner(&mut w.meta, owner, id)?;
            } else {
                // An old-format row: the next start must look for it again.
                w.meta.remove(OWNERS_COMPLETE)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_audit(_: &mut Writer<'_>, _: TenantKey) -> Result<(), StoreError> {
        Ok(())
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        (dir, store)
    }

    fn acme(store: &Store) -> TenantId {
        let id = TenantId::parse("acme").unwrap();
        store
            .write(|w| w.create_tenant(&id, 1, Default::default()).map(|_| ()))
            .unwrap();
        id
    }

    fn ids(rows: Vec<(String, StoredCredential)>) -> Vec<String> {
        rows.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn the_operator_index_lists_server_credentials_only() {
        let (_dir, store) = store();
        let acme = acme(&store);
        let creds = store.credentials();
        assert!(creds.insert("op1", Owner::Server, b"{}", no_audit).unwrap());
        assert!(
            creds
                .insert("t1", Owner::Tenant(&acme), b"{}", no_audit)
                .unwrap()
        );
        assert!(creds.insert("op2", Owner::Server, b"{}", no_audit).unwrap());
        assert_eq!(ids(creds.operator_credentials().unwrap()), ["op1", "op2"]);
        // An id is never reused for another credential.
        assert!(creds.insert("t1", Owner::Server, b"{}", no_audit).is_err());
        assert_eq!(ids(creds.operator_credentials().unwrap()), ["op1", "op2"]);
    }

    /// A credential change and its audit row commit together: an audit that fails leaves the
    /// credential as it was.
    #[test]
    fn a_failing_audit_undoes_its_credential_change() {
        let (_dir, store) = store();
        let creds = store.credentials();
        let refuse = || StoreError::Engine("audit refused".into());
        assert!(
            creds
                .insert("op1", Owner::Server, b"{}", |_, _| Err(refuse()))
                .is_err()
        );
        assert!(creds.get("op1").unwrap().is_none());
        assert!(creds.insert("op1", Owner::Server, b"{}", no_audit).unwrap());
        let changed: Result<_, StoreError> =
            creds.update("op1", |_| Ok(Some(b"[]".to_vec())), |_, _, _| Err(refuse()));
        assert!(changed.is_err());
        assert_eq!(creds.get("op1").unwrap().unwrap().body, b"{}");
    }

    #[test]
    fn erasing_a_tenant_erases_its_credentials_and_their_index_entries() {
        let (_dir, store) = store();
        let acme = acme(&store);
        let creds = store.credentials();
        creds.operator_credentials().unwrap(); // as at start: the index is complete
        creds.insert("op1", Owner::Server, b"{}", no_audit).unwrap();
        creds
            .insert("t1", Owner::Tenant(&acme), b"{}", no_audit)
            .unwrap();
        creds
            .insert("t2", Owner::Tenant(&acme), b"{}", no_audit)
            .unwrap();
        let meta = creds.tenant(&acme).unwrap().unwrap();
        store
            .write(|w| {
                assert_eq!(owned_ids(&*w.meta, meta.key)?.unwrap(), ["t1", "t2"]);
                w.erase_tenant(&meta)?;
                assert_eq!(
                    owned_ids(&*w.meta, meta.key)?.unwrap(),
                    Vec::<String>::new()
                );
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert!(creds.get("t1").unwrap().is_none());
        assert!(creds.get("t2").unwrap().is_none());
        assert_eq!(ids(creds.operator_credentials().unwrap()), ["op1"]);
    }

    #[test]
    fn a_directory_without_the_operator_index_gets_it_built_once() {
        let (_dir, store) = store();
        let creds = store.credentials();
        creds.insert("op1", Owner::Server, b"{}", no_audit).unwrap();
        // As an older version left it: the row, no index entry, no completion mark.
        store
            .write(|w| {
                unindex_owner(&mut w.meta, TenantKey::SERVER, "op1")?;
                w.meta.remove(OWNER_INDEX_COMPLETE)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(ids(creds.operator_credentials().unwrap()), ["op1"]);
        let marked = store
            .write(|w| Ok::<_, StoreError>(w.meta.get(OWNER_INDEX_COMPLETE)?.is_some()))
            .unwrap();
        assert!(marked);
    }

    #[test]
    fn legacy_rows_are_looked_for_until_none_is_left_then_never_again() {
        let (_dir, store) = store();
        let creds = store.credentials();
        // A row as versions before owners wrote it: the bare body.
        store
            .write(|w| {
                w.credentials.insert("old", b"{}".as_slice())?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        // The first start gives the row an owner (here: the server) and indexes it.
        assert_eq!(
            creds.upgrade_legacy(|_| Ok::<_, StoreError>(None)).unwrap(),
            1
        );
        assert_eq!(ids(creds.operator_credentials().unwrap()), ["old"]);
        // A row without an owner written behind the store's back is no longer looked for:
        // only the store writes rows, always with an owner.
        store
            .write(|w| {
                w.credentials.insert("sneaked", b"{}".as_slice())?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(
            creds.upgrade_legacy(|_| Ok::<_, StoreError>(None)).unwrap(),
            0
        );
    }
}
