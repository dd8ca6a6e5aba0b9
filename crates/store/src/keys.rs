//! The one place that builds storage keys.
//!
//! Every key of the `data` table is `tenant(8, big-endian) | tag(1) | rest`. Names never contain
//! a NUL byte (see `strata_types::name`), so `\0` separates variable-length parts without
//! ambiguity, and a prefix that ends in `\0` never matches a longer name.

use strata_types::{CollectionName, Domain, RecordId};

/// A tenant's storage prefix: a number assigned once at creation and never reused, so a
/// re-created tenant of the same name can never meet the old one's bytes.
///
/// Only the registry mints these; the engine gets one from an authenticated scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantKey(u64);

impl TenantKey {
    /// The server's own audit log, for events that belong to no registered tenant. The
    /// registry never mints 0.
    pub const SERVER: TenantKey = TenantKey(0);

    pub(crate) fn from_raw(n: u64) -> Self {
        TenantKey(n)
    }

    /// A key for tests that need distinct incarnations without a registry.
    #[cfg(feature = "test-support")]
    pub fn for_tests(n: u64) -> Self {
        TenantKey(n)
    }

    pub(crate) fn raw(self) -> u64 {
        self.0
    }

    fn prefix(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

const TAG_COLLECTION: u8 = 1;
const TAG_RECORD: u8 = 2;
const TAG_SCOPE: u8 = 3;
const TAG_DEDUP: u8 = 4;
const TAG_BLOB: u8 = 5;
const TAG_AUDIT: u8 = 6;
/// Far from the others so that tags added for other state never meet it.
const TAG_IDEMPOTENCY: u8 = 20;

/// Which scope field a secondary-index entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeField {
    /// Every record of the domain (value is empty).
    Domain,
    RunId,
    MemoryScope,
    /// One entry per user token of the record.
    UserToken,
    /// Records without user tokens: tenant-shared memory (value is empty).
    Shared,
}

impl ScopeField {
    fn tag(self) -> u8 {
        match self {
            ScopeField::Domain => b'd',
            ScopeField::RunId => b'r',
            ScopeField::MemoryScope => b's',
            ScopeField::UserToken => b't',
            ScopeField::Shared => b'n',
        }
    }
}

fn key(tenant: TenantKey, tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 9 + parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    k.extend_from_slice(&tenant.prefix());
    k.push(tag);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

/// Every key of the tenant.
pub fn tenant_all(tenant: TenantKey) -> Vec<u8> {
    tenant.prefix().to_vec()
}

pub fn collection(tenant: TenantKey, name: &CollectionName) -> Vec<u8> {
    key(tenant, TAG_COLLECTION, &[name.as_str().as_bytes()])
}

pub fn collections(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_COLLECTION, &[])
}

pub fn record(tenant: TenantKey, id: &RecordId) -> Vec<u8> {
    key(tenant, TAG_RECORD, &[id.as_str().as_bytes()])
}

pub fn records(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_RECORD, &[])
}

/// The prefix of a scope index list: `domain \0 field value \0`; the record id follows.
pub fn scope_list(tenant: TenantKey, domain: &Domain, field: ScopeField, value: &str) -> Vec<u8> {
    let mut k = key(
        tenant,
        TAG_SCOPE,
        &[domain.as_str().as_bytes(), &[field.tag()]],
    );
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

pub fn scope_entry(
    tenant: TenantKey,
    domain: &Domain,
    field: ScopeField,
    value: &str,
    id: &RecordId,
) -> Vec<u8> {
    let mut k = scope_list(tenant, domain, field, value);
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

/// Run-level content dedup: `domain \0 run \0 hash`.
pub fn dedup(tenant: TenantKey, domain: &Domain, run: &str, hash: &[u8]) -> Vec<u8> {
    key(
        tenant,
        TAG_DEDUP,
        &[domain.as_str().as_bytes(), run.as_bytes(), hash],
    )
}

/// An opaque per-tenant blob (index snapshots and the like), by name.
pub fn blob(tenant: TenantKey, name: &str) -> Vec<u8> {
    key(tenant, TAG_BLOB, &[name.as_bytes()])
}

/// The tenant's audit log: rows by sequence number.
pub fn audit_log(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_AUDIT, &[])
}

pub fn audit_row(tenant: TenantKey, seq: u64) -> Vec<u8> {
    let mut k = audit_log(tenant);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The answers kept for `Idempotency-Key` headers, by key.
pub fn idempotency_keys(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_IDEMPOTENCY, &[])
}

pub fn idempotency(tenant: TenantKey, idempotency_key: &str) -> Vec<u8> {
    key(tenant, TAG_IDEMPOTENCY, &[idempotency_key.as_bytes()])
}

/// What a key of the `data` table is, by its tag byte (the bytes after the tenant prefix and
/// the tag are `rest`); `None` for a key too short or with an unknown tag.
pub enum KeyKind<'a> {
    Collection(&'a [u8]),
    Record(&'a [u8]),
    /// A scope index entry (`domain \0 field-tag value \0 id`).
    Scope,
    Dedup,
    Blob(&'a [u8]),
    Audit(&'a [u8]),
    Idempotency(&'a [u8]),
}

/// Splits a `data` key of `tenant` into its kind; `None` if it is not one of this tenant's
/// well-formed keys.
pub fn classify(tenant: TenantKey, key: &[u8]) -> Option<KeyKind<'_>> {
    let rest = key.strip_prefix(&tenant.prefix())?;
    let (&tag, rest) = rest.split_first()?;
    Some(match tag {
        TAG_COLLECTION => KeyKind::Collection(rest),
        TAG_RECORD => KeyKind::Record(rest),
        TAG_SCOPE => KeyKind::Scope,
        TAG_DEDUP => KeyKind::Dedup,
        TAG_BLOB => KeyKind::Blob(rest),
        TAG_AUDIT => KeyKind::Audit(rest),
        TAG_IDEMPOTENCY => KeyKind::Idempotency(rest),
        _ => return None,
    })
}

/// The smallest key greater than every key starting with `prefix`, or `None` when the prefix
/// is all `0xff` (then the range is unbounded above).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[test]
    fn every_key_starts_with_the_tenant_prefix() {
        let t = TenantKey(0x0102);
        let id = RecordId::parse("r").unwrap();
        let c = CollectionName::parse("text").unwrap();
        for k in [
            collection(t, &c),
            record(t, &id),
            scope_entry(t, &d("x"), ScopeField::RunId, "run", &id),
            dedup(t, &d("x"), "run", b"h"),
            blob(t, "hnsw"),
            idempotency(t, "retry-1"),
        ] {
            assert!(k.starts_with(&tenant_all(t)));
            assert!(!k.starts_with(&tenant_all(TenantKey(0x0103))));
        }
    }

    #[test]
    fn scope_lists_do_not_overlap_for_prefix_names() {
        let t = TenantKey(1);
        let id = RecordId::parse("r").unwrap();
        let a = scope_list(t, &d("a"), ScopeField::RunId, "x");
        let ab = scope_entry(t, &d("ab"), ScopeField::RunId, "x", &id);
        assert!(!ab.starts_with(&a));
        let run_x = scope_list(t, &d("a"), ScopeField::RunId, "x");
        let run_xy = scope_entry(t, &d("a"), ScopeField::RunId, "xy", &id);
        assert!(!run_xy.starts_with(&run_x));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
