//! API keys: random secrets shown once, stored only as SHA-256 hashes in the store's
//! `credentials` table, compared in constant time, revocable and optionally expiring.
//!
//! A key reads `sk_<id>_<secret>`: `id` (16 hex digits) is the public row id that lets a
//! request find its row without scanning; `secret` is 256 random bits. A fast hash is enough
//! because the secret has full entropy (no dictionary to attack), and it keeps verification at
//! ~0.1 µs, where a password hash would make every request a denial-of-service lever.

use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use strata_store::{CredentialStore, Owner, StoreError, TenantKey, Writer};
use strata_types::{Domain, Millis, TenantId, UserToken, now_millis};

use crate::{AuthError, Grant, OperatorScope, Permission, Permissions};

/// Every API key starts with this, so log scrubbers and secret scanners can find them.
pub const KEY_PREFIX: &str = "sk_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
const MAX_KEY_NAME: usize = 256;

/// Whom a key belongs to: one tenant, or every tenant (the operator, written `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum KeyTenant {
    Operator,
    Tenant(TenantId),
}

impl TryFrom<String> for KeyTenant {
    type Error = AuthError;
    fn try_from(s: String) -> Result<Self, AuthError> {
        if s == "*" {
            Ok(KeyTenant::Operator)
        } else {
            Ok(KeyTenant::Tenant(TenantId::parse(s)?))
        }
    }
}

impl utoipa::PartialSchema for KeyTenant {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^([a-zA-Z0-9_.-]{1,64}|\\*)$"))
            .description(Some("A tenant id, or `*` for an operator key."))
            .into()
    }
}

impl utoipa::ToSchema for KeyTenant {}

impl From<KeyTenant> for String {
    fn from(t: KeyTenant) -> String {
        match t {
            KeyTenant::Operator => "*".into(),
            KeyTenant::Tenant(t) => t.into(),
        }
    }
}

/// A key as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub tenant: KeyTenant,
    pub name: Option<String>,
    pub permissions: Permissions,
    pub user_tokens: Option<Vec<UserToken>>,
    pub domains: Option<Vec<Domain>>,
    #[schema(value_type = i64)]
    pub created_at: Millis,
    #[schema(value_type = Option<i64>)]
    pub expires_at: Option<Millis>,
    #[schema(value_type = Option<i64>)]
    pub revoked_at: Option<Millis>,
}

/// What a key's creation (`key.create`) or revocation (`key.revoke`) writes in the change's
/// own transaction: its audit row, given the action, the key's owner (its tenant's storage
/// key, or [`TenantKey::SERVER`] for an operator key) and the key as it is now. The engine
/// builds it (the audit format is the engine's); it never sees the secret.
pub type KeyAudit<'a> =
    dyn Fn(&mut Writer<'_>, &'static str, TenantKey, &KeyInfo) -> Result<(), StoreError> + 'a;

/// What to mint.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub tenant: KeyTenant,
    pub name: Option<String>,
    pub permissions: Permissions,
    pub user_tokens: Option<Vec<UserToken>>,
    pub domains: Option<Vec<Domain>>,
    pub expires_at: Option<Millis>,
}

/// A freshly minted key. `secret` is the whole bearer token; it exists only in this value and
/// is never stored or shown again.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub info: KeyInfo,
    pub secret: String,
}

/// The row in the credentials table.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    info: KeyInfo,
    /// SHA-256 of the whole token, hex.
    sha256: String,
    /// The id of the key a rotation replaced this one with: a key is rotated once (absent in
    /// rows written before rotations existed, and in every key not rotated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replaced_by: Option<String>,
}

/// SHA-256 of a bearer token.
pub(crate) fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equality whose running time does not depend on where the inputs differ.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Fold every byte difference into one accumulator instead of returning early; black_box
    // keeps the optimiser from turning the loop back into a short-circuiting compare.
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn random_hex(n: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; n];
    rand::rngs::OsRng
        .try_fill_bytes(&mut buf)
        .map_err(|_| AuthError::Config("the operating system's random source failed".into()))?;
    Ok(hex(&buf))
}

/// Splits `sk_<id>_<secret>` into its row id, or `None` when it is not shaped like a key.
pub(crate) fn key_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = id.len() == ID_BYTES * 2
        && secret.len() == SECRET_BYTES * 2
        && rest.bytes().all(|b| b == b'_' || b.is_ascii_hexdigit());
    ok.then_some(id)
}

/// Checks `token` against its stored row and returns the key's info, with the tenant
/// incarnation it was issued for, when it is valid now.
pub(crate) fn verify(
    creds: CredentialStore<'_>,
    token: &str,
    now: Millis,
) -> Result<(KeyInfo, TenantKey), AuthError> {
    let id = key_id(token).ok_or(AuthError::Unauthorized("malformed api key".into()))?;
    let Some(row) = creds.get(id)? else {
        return Err(AuthError::Unauthorized("unknown api key".into()));
    };
    let stored = decode(&row.body)?;
    let expected = unhex(&stored.sha256)
        .ok_or_else(|| StoreError::Corrupt(format!("credential {id}: bad hash")))?;
    if !ct_eq(&hash_token(token), &expected) {
        return Err(AuthError::Unauthorized("wrong api key secret".into()));
    }
    // Rows are given owners at start-up (`upgrade_legacy`); one without is refused, never
    // guessed.
    let owner = row.owner.ok_or(AuthError::Unauthorized(
        "api key has no tenant incarnation".into(),
    ))?;
    if stored.info.revoked_at.is_some() {
        return Err(AuthError::Unauthorized("revoked api key".into()));
    }
    if stored.info.expires_at.is_some_and(|t| t <= now) {
        return Err(AuthError::Unauthorized("expired api key".into()));
    }
    Ok((stored.info, owner))
}

/// Gives owners to key rows written before rows had them (see
/// [`CredentialStore::upgrade_legacy`]). Runs at every start; once every row has an owner it
/// returns without reading any row.
pub(crate) fn upgrade_legacy(creds: CredentialStore<'_>) -> Result<usize, AuthError> {
    creds.upgrade_legacy(|body| match decode(body)?.info.tenant {
        KeyTenant::Operator => Ok(None),
        KeyTenant::Tenant(t) => Ok(Some(t)),
    })
}

fn decode(bytes: &[u8]) -> Result<StoredKey, AuthError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("credential: {e}")).into())
}

fn encode(stored: &StoredKey) -> Result<Vec<u8>, AuthError> {
    serde_json::to_vec(stored).map_err(|e| AuthError::Config(format!("encoding credential: {e}")))
}

impl KeyInfo {
    /// The grant a request made with this key carries.
    pub fn grant(&self) -> Grant {
        Grant {
            permissions: self.permissions,
            user_tokens: self.user_tokens.clone(),
            domains: self.domains.clone(),
        }
    }
}

/// Mints a key. The operator scope proves the caller may.
pub fn create_key(
    creds: CredentialStore<'_>,
    _op: &OperatorScope,
    new: NewKey,
    audit: &KeyAudit<'_>,
) -> Result<CreatedKey, AuthError> {
    create_unchecked(creds, new, audit)
}

/// Mints a key without an operator scope. Private because only the server's first start may
/// do this: it creates the operator key that every later operator call proves itself with.
pub(crate) fn create_unchecked(
    creds: CredentialStore<'_>,
    new: NewKey,
    audit: &KeyAudit<'_>,
) -> Result<CreatedKey, AuthError> {
    if new.name.as_ref().is_some_and(|n| n.len() > MAX_KEY_NAME) {
        return Err(AuthError::BadRequest(format!(
            "name: at most {MAX_KEY_NAME} bytes"
        )));
    }
    if new.permissions == Permissions::default() {
        return Err(AuthError::BadRequest(
            "permissions: a key needs at least one permission".into(),
        ));
    }
    if new.tenant == KeyTenant::Operator && !new.permissions.has(Permission::Admin) {
        return Err(AuthError::BadRequest(
            "permissions: an operator key (tenant \"*\") needs admin".into(),
        ));
    }
    if matches!(&new.user_tokens, Some(t) if t.is_empty()) {
        return Err(AuthError::BadRequest(
            "user_tokens: bind at least one token or leave it out".into(),
        ));
    }
    if matches!(&new.domains, Some(d) if d.is_empty()) {
        return Err(AuthError::BadRequest(
            "domains: name at least one domain or leave it out".into(),
        ));
    }
    let id = random_hex(ID_BYTES)?;
    let secret = format!("{KEY_PREFIX}{id}_{}", random_hex(SECRET_BYTES)?);
    let info = KeyInfo {
        id: id.clone(),
        tenant: new.tenant,
        name: new.name,
        permissions: new.permissions,
        user_tokens: new.user_tokens,
        domains: new.domains,
        created_at: now_millis(),
        expires_at: new.expires_at,
        revoked_at: None,
    };
    let stored = StoredKey {
        info: info.clone(),
        sha256: hex(&hash_token(&secret)),
        replaced_by: None,
    };
    let bytes = encode(&stored)?;
    let owner = match &stored.info.tenant {
        KeyTenant::Operator => Owner::Server,
        KeyTenant::Tenant(t) => Owner::Tenant(t),
    };
    if !creds.insert(&id, owner, &bytes, |w, key| {
        audit(w, "key.create", key, &info)
    })? && let KeyTenant::Tenant(t) = stored.info.tenant
    {
        return Err(AuthError::TenantNotFound(t));
    }
    Ok(CreatedKey { info, secret })
}

/// Every key, or one tenant's keys, revoked ones included (for audit); a tenant that does not
/// exist is `TenantNotFound`.
pub fn list_keys(
    creds: CredentialStore<'_>,
    _op: &OperatorScope,
    tenant: Option<&KeyTenant>,
) -> Result<Vec<KeyInfo>, AuthError> {
    // As every other admin route naming a tenant: an empty list would read as "no keys".
    if let Some(KeyTenant::Tenant(t)) = tenant
        && creds.tenant(t)?.is_none()
    {
        return Err(AuthError::TenantNotFound(t.clone()));
    }
    let mut out = Vec::new();
    for (_, row) in creds.all()? {
        let info = decode(&row.body)?.info;
        if tenant.is_none_or(|t| *t == info.tenant) {
            out.push(info);
        }
    }
    out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(out)
}

/// One key by id.
pub fn key(
    creds: CredentialStore<'_>,
    _op: &OperatorScope,
    id: &str,
) -> Result<KeyInfo, AuthError> {
    let row = creds.get(id)?.ok_or(AuthError::KeyNotFound)?;
    Ok(decode(&row.body)?.info)
}

/// Revokes a key; it stops working at once. The row stays, marked, so listings show who had
/// access when. Revoking twice keeps the first time.
pub fn revoke_key(
    creds: CredentialStore<'_>,
    _op: &OperatorScope,
    id: &str,
    audit: &KeyAudit<'_>,
) -> Result<KeyInfo, AuthError> {
    let row = creds.update(
        id,
        |body| {
            let mut stored = decode(body)?;
            if stored.info.revoked_at.is_some() {
                return Ok(None);
            }
            stored.info.revoked_at = Some(now_millis());
            encode(&stored).map(Some)
        },
        // Only a revocation that changed the row is audited: revoking again changes nothing.
        |w, owner, body| Ok(audit(w, "key.revoke", owner, &decode(body)?.info)?),
    )?;
    let row = row.ok_or(AuthError::KeyNotFound)?;
    Ok(decode(&row.body)?.info)
}

/// How a key is rotated.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// When the old key stops working; `None`: at once (it is revoked). A deadline later than
    /// the old key's own expiry keeps that expiry: rotating never lengthens a key's life.
    pub old_until: Option<Millis>,
    /// The new key's expiry; `None` gives it the old key's (a rotation does not turn a
    /// temporary key into a lasting one unless asked).
    pub expires_at: Option<Millis>,
}

/// A rotated key: its successor (with the secret, shown once) and the old key as it is now.
#[derive(Debug, Clone)]
pub struct RotatedKey {
    pub created: CreatedKey,
    pub old: KeyInfo,
}

/// Replaces key `id` by a new key with the same tenant (incarnation), name, permissions and
/// bindings, and lets the old one work until `rotation.old_until`, in one transaction audited
/// `key.rotate` (the old key, its new expiry or revocation) and `key.create` (the new one).
/// A revoked or expired key is not rotated (`Conflict`): nothing of it is in use any more.
/// Whose key `id` is, if it is a key (for a check before acting on it).
pub fn key_tenant(creds: CredentialStore<'_>, id: &str) -> Result<Option<KeyTenant>, AuthError> {
    match creds.get(id)? {
        Some(row) => Ok(Some(decode(&row.body)?.info.tenant)),
        None => Ok(None),
    }
}

pub fn rotate_key(
    creds: CredentialStore<'_>,
    _op: &OperatorScope,
    id: &str,
    rotation: Rotation,
    audit: &KeyAudit<'_>,
) -> Result<RotatedKey, AuthError> {
    let new_id = random_hex(ID_BYTES)?;
    let secret = format!("{KEY_PREFIX}{new_id}_{}", random_hex(SECRET_BYTES)?);
    let now = now_millis();
    let mut made = None;
    let rotated = creds.rotate(
        id,
        &new_id,
        |body| {
            let mut old = decode(body)?;
            if old.info.revoked_at.is_some() {
                return Err(AuthError::Conflict(
                    "the key is revoked: create a new key instead".into(),
                ));
            }
            if old.info.expires_at.is_some_and(|t| t <= now) {
                return Err(AuthError::Conflict(
                    "the key has expired: create a new key instead".into(),
                ));
            }
            // A second rotation would mint a successor expiring with the first one's grace,
            // and leave the old key two live successors.
            if let Some(successor) = &old.replaced_by {
                return Err(AuthError::Conflict(format!(
                    "the key was already rotated, to key {successor}: rotate or revoke that \
                     one instead"
                )));
            }
            let info = KeyInfo {
                id: new_id.clone(),
                tenant: old.info.tenant.clone(),
                name: old.info.name.clone(),
                permissions: old.info.permissions,
                user_tokens: old.info.user_tokens.clone(),
                domains: old.info.domains.clone(),
                created_at: now,
                expires_at: rotation.expires_at.or(old.info.expires_at),
                revoked_at: None,
            };
            match rotation.old_until {
                None => old.info.revoked_at = Some(now),
                Some(until) => {
                    old.info.expires_at = Some(old.info.expires_at.map_or(until, |t| t.min(until)))
                }
            }
            old.replaced_by = Some(new_id.clone());
            let new = StoredKey {
                info: info.clone(),
                sha256: hex(&hash_token(&secret)),
                replaced_by: None,
            };
            let bodies = (encode(&old)?, encode(&new)?);
            made = Some((info, old.info));
            Ok(bodies)
        },
        |w, owner, old, new| {
            audit(w, "key.rotate", owner, &decode(old)?.info)?;
            Ok(audit(w, "key.create", owner, &decode(new)?.info)?)
        },
    )?;
    rotated.ok_or(AuthError::KeyNotFound)?;
    let (info, old) = made.ok_or(AuthError::KeyNotFound)?;
    Ok(RotatedKey {
        created: CreatedKey { info, secret },
        old,
    })
}

/// Whether some live operator key is stored (then first start has already happened). Reads
/// only the operator's credentials, so a start does not grow with the tenants' keys.
pub(crate) fn has_operator_key(creds: CredentialStore<'_>) -> Result<bool, AuthError> {
    for (_, row) in creds.operator_credentials()? {
        let info = decode(&row.body)?.info;
        if info.tenant == KeyTenant::Operator && info.revoked_at.is_none() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_compares_whole_slices() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"xbc"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), bytes);
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }

    #[test]
    fn key_shape_is_checked() {
        let good = format!("sk_{}_{}", "a".repeat(16), "b".repeat(64));
        assert_eq!(key_id(&good), Some("aaaaaaaaaaaaaaaa"));
        for bad in [
            "",
            "sk_",
            "pk_aaaaaaaaaaaaaaaa_bb",
            &format!("sk_{}_{}", "a".repeat(15), "b".repeat(64)),
            &format!("sk_{}_{}", "a".repeat(16), "b".repeat(63)),
            &format!("sk_{}_{}", "a".repeat(16), "z".repeat(64)),
        ] {
            assert_eq!(key_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn hash_is_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hex(&hash_token("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
