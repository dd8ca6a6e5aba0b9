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
use crate::tables::{Reads, Store};
use crate::{StoreError, TenantKey};

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
    /// exists. Returns `Ok(false)`, storing nothing, when it does not.
    pub fn insert(&self, id: &str, owner: Owner<'_>, body: &[u8]) -> Result<bool, StoreError> {
        self.store.write(|w| {
            let key = match owner {
                Owner::Server => TenantKey::SERVER,
                Owner::Tenant(t) => match w.tenant(t)? {
                    Some(meta) => meta.key,
                    None => return Ok(false),
                },
            };
            w.credentials
                .insert(id, encode_credential(key.raw(), body).as_slice())?;
            Ok(true)
        })
    }

    /// Rewrites the body of credential `id` with `f` (which may return `None` to leave it as
    /// it is), keeping its owner, in one transaction. Returns the body as it is afterwards, or
    /// `None` when there is no such credential.
    pub fn update<E: From<StoreError>>(
        &self,
        id: &str,
        f: impl FnOnce(&[u8]) -> Result<Option<Vec<u8>>, E>,
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
                row.body = body;
            }
            Ok(Some(row))
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
                    }
                    None => {
                        w.credentials
                            .remove(id.as_str())
                            .map_err(StoreError::from)?;
                    }
                }
            }
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
            Ok(())
        })
    }
}
