//! The one place that builds storage keys.
//!
//! Every key of the `data` table is `tenant(8, big-endian) | tag(1) | rest`. Names never contain
//! a NUL byte (see `strata_types::name`), so `\0` separates variable-length parts without
//! ambiguity, and a prefix that ends in `\0` never matches a longer name.

use strata_types::{CollectionName, Domain, Millis, RecordId, UserToken};

use crate::adaptive::NarrativePrincipal;

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

    pub(crate) const fn from_raw(n: u64) -> Self {
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
const TAG_LINK_OUT: u8 = 7;
const TAG_LINK_IN: u8 = 8;
/// The last record written to each run of a domain, for automatic `next` links.
const TAG_RUN_TAIL: u8 = 9;
/// A collection whose delete has begun and not finished, holding the collection as it was
/// (`Writer::mark_collection_deleting`): its records are still stored and are hidden from
/// every read until the delete removes them and then this row.
const TAG_COLLECTION_DELETING: u8 = 10;
/// The expiry index (`crates/store/src/expiry.rs`): one empty row per record with an
/// `expires_at`, `expires_at (8, order-preserving) | id`, so the records due are a prefix of
/// the range.
const TAG_EXPIRY: u8 = 11;
/// The tenant's one row saying its expiry index covers every record: records written before
/// the index existed are entered by a one-time backfill, which writes this row last.
const TAG_EXPIRY_BUILT: u8 = 12;
/// Adaptive reranking state (`crates/store/src/adaptive.rs`). A tag well above the others, so
/// that tags added meanwhile for other state (7, 8, ...) cannot collide with it.
const TAG_ADAPTIVE: u8 = 16;
/// Second part of an adaptive key: a collection's narrative vector, or a record's pheromone.
/// `n` is the narrative of callers without user tokens (the only narrative before narratives
/// were kept per principal, so keys written then still read as that one); `u` one of callers
/// speaking for exactly some user tokens; `a` one of callers with `user_tokens: ["*"]`.
const ADAPTIVE_NARRATIVE: &[u8] = b"n";
const ADAPTIVE_NARRATIVE_TOKENS: &[u8] = b"u";
const ADAPTIVE_NARRATIVE_ALL: &[u8] = b"a";
const ADAPTIVE_PHEROMONE: &[u8] = b"p";
/// Far from the others so that tags added for other state never meet it.
const TAG_IDEMPOTENCY: u8 = 20;
/// The change log (`crates/store/src/changelog.rs`): one entry per record change, by sequence.
const TAG_CHANGE: u8 = 21;
/// The change log's head: the next sequence and the first one still kept.
const TAG_CHANGE_HEAD: u8 = 22;
/// Per collection, the last sequence its persisted search image reflects.
const TAG_CHANGE_MARK: u8 = 23;
/// The tenant's last isolation-level migration (`crates/store/src/migration_row.rs`). Far from
/// the change log's tags, so that tags added meanwhile for other state cannot collide with it.
const TAG_LAST_MIGRATION: u8 = 30;
/// The operator's metadata of the tenant (`crates/store/src/tenant_metadata.rs`): kept apart
/// from the registry row, which every write decodes for its liveness check.
const TAG_TENANT_METADATA: u8 = 31;

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

/// The row marking collection `name` as being deleted.
pub fn collection_deleting(tenant: TenantKey, name: &CollectionName) -> Vec<u8> {
    key(tenant, TAG_COLLECTION_DELETING, &[name.as_str().as_bytes()])
}

/// Every row marking a collection of the tenant as being deleted.
pub fn collections_deleting(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_COLLECTION_DELETING, &[])
}

pub fn record(tenant: TenantKey, id: &RecordId) -> Vec<u8> {
    key(tenant, TAG_RECORD, &[id.as_str().as_bytes()])
}

pub fn records(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_RECORD, &[])
}

/// Every scope index entry of the tenant; each ends with its record's id, after its last `\0`.
pub fn scopes(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_SCOPE, &[])
}

/// Every run-level dedup entry of the tenant (its value is the record's id).
pub fn dedups(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_DEDUP, &[])
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

/// Every adaptive reranking key of the tenant.
pub fn adaptive_all(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_ADAPTIVE, &[])
}

/// Every adaptive reranking key of one (tenant, domain) namespace: `domain \0`.
pub fn adaptive_namespace(tenant: TenantKey, domain: &Domain) -> Vec<u8> {
    let mut k = key(tenant, TAG_ADAPTIVE, &[domain.as_str().as_bytes()]);
    k.push(0);
    k
}

/// A collection's narrative vector of one principal in a namespace: `domain \0 n \0 collection`
/// for callers without user tokens, `domain \0 a \0 collection` for `["*"]`, and
/// `domain \0 u \0 collection \0 token (\0 token)*` for exact user tokens, in ascending order.
pub fn adaptive_narrative(
    tenant: TenantKey,
    domain: &Domain,
    principal: &NarrativePrincipal,
    c: &CollectionName,
) -> Vec<u8> {
    let (d, c) = (domain.as_str().as_bytes(), c.as_str().as_bytes());
    match principal {
        NarrativePrincipal::Shared => key(tenant, TAG_ADAPTIVE, &[d, ADAPTIVE_NARRATIVE, c]),
        NarrativePrincipal::AllPrincipals => {
            key(tenant, TAG_ADAPTIVE, &[d, ADAPTIVE_NARRATIVE_ALL, c])
        }
        NarrativePrincipal::Tokens(tokens) => {
            let mut parts: Vec<&[u8]> = vec![d, ADAPTIVE_NARRATIVE_TOKENS, c];
            parts.extend(tokens.as_slice().iter().map(|t| t.as_str().as_bytes()));
            key(tenant, TAG_ADAPTIVE, &parts)
        }
    }
}

/// A record's pheromone in a namespace: `domain \0 p \0 id`.
pub fn adaptive_pheromone(tenant: TenantKey, domain: &Domain, id: &RecordId) -> Vec<u8> {
    key(
        tenant,
        TAG_ADAPTIVE,
        &[
            domain.as_str().as_bytes(),
            ADAPTIVE_PHEROMONE,
            id.as_str().as_bytes(),
        ],
    )
}

/// Every expiry index entry of the tenant, earliest expiry first.
pub fn expiry_list(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_EXPIRY, &[])
}

/// The expiry index entry of record `id`, which expires at `at`.
pub fn expiry_entry(tenant: TenantKey, at: Millis, id: &RecordId) -> Vec<u8> {
    let mut k = expiry_list(tenant);
    k.extend_from_slice(&ordered_millis(at));
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

/// The first key after every expiry entry of the tenant with an expiry at or before `at`.
pub fn expiry_after(tenant: TenantKey, at: Millis) -> Vec<u8> {
    let mut k = expiry_list(tenant);
    match at.checked_add(1) {
        Some(next) => k.extend_from_slice(&ordered_millis(next)),
        // Nothing sorts after the largest time but the end of the list.
        None => return prefix_end(&k).unwrap_or(k),
    }
    k
}

/// Splits the rest of an expiry entry (after tenant and tag) into its time and record id;
/// `None` if it is not well formed.
pub fn parse_expiry(rest: &[u8]) -> Option<(Millis, &[u8])> {
    let (at, id) = rest.split_first_chunk::<8>()?;
    if id.is_empty() {
        return None;
    }
    Some(((u64::from_be_bytes(*at) ^ SIGN) as Millis, id))
}

/// The tenant's row saying its expiry index is complete.
pub fn expiry_built(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_EXPIRY_BUILT, &[])
}

/// Flips the sign bit, so that big-endian byte order is numeric order for negative times too
/// (an import may carry any `expires_at`).
const SIGN: u64 = 1 << 63;

fn ordered_millis(at: Millis) -> [u8; 8] {
    ((at as u64) ^ SIGN).to_be_bytes()
}

/// What an adaptive key names, parsed back from the bytes after its tag.
pub enum AdaptiveKey<'a> {
    Narrative {
        domain: &'a [u8],
        collection: &'a [u8],
        principal: KeyPrincipal<'a>,
    },
    Pheromone {
        domain: &'a [u8],
        id: &'a [u8],
    },
}

/// Whose narrative a key names (see [`adaptive_narrative`]); tokens as stored, not yet checked
/// to be valid names in ascending order.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyPrincipal<'a> {
    Shared,
    AllPrincipals,
    Tokens(Vec<&'a [u8]>),
}

/// Splits the `rest` of an adaptive key; `None` if it is not well formed.
pub fn parse_adaptive(rest: &[u8]) -> Option<AdaptiveKey<'_>> {
    let mut parts = rest.splitn(3, |b| *b == 0);
    let (domain, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    if domain.is_empty() || name.is_empty() {
        return None;
    }
    if kind == ADAPTIVE_NARRATIVE_TOKENS {
        let mut names = name.split(|b| *b == 0);
        let collection = names.next()?;
        let tokens: Vec<&[u8]> = names.collect();
        if collection.is_empty() || tokens.is_empty() || tokens.iter().any(|t| t.is_empty()) {
            return None;
        }
        return Some(AdaptiveKey::Narrative {
            domain,
            collection,
            principal: KeyPrincipal::Tokens(tokens),
        });
    }
    if name.contains(&0) {
        return None;
    }
    let narrative = |principal| AdaptiveKey::Narrative {
        domain,
        collection: name,
        principal,
    };
    match kind {
        ADAPTIVE_NARRATIVE => Some(narrative(KeyPrincipal::Shared)),
        ADAPTIVE_NARRATIVE_ALL => Some(narrative(KeyPrincipal::AllPrincipals)),
        ADAPTIVE_PHEROMONE => Some(AdaptiveKey::Pheromone { domain, id: name }),
        _ => None,
    }
}

/// The answers kept for `Idempotency-Key` headers, by key.
pub fn idempotency_keys(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_IDEMPOTENCY, &[])
}

pub fn idempotency(tenant: TenantKey, idempotency_key: &str) -> Vec<u8> {
    key(tenant, TAG_IDEMPOTENCY, &[idempotency_key.as_bytes()])
}

/// Every entry of the tenant's change log, in sequence order.
pub fn change_log(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_CHANGE, &[])
}

/// One change log entry: the sequence, big-endian, so that key order is sequence order.
pub fn change_entry(tenant: TenantKey, seq: u64) -> Vec<u8> {
    let mut k = change_log(tenant);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence of a [`change_entry`] key's rest (after prefix and tag).
pub fn change_seq(rest: &[u8]) -> Option<u64> {
    rest.try_into().ok().map(u64::from_be_bytes)
}

/// The change log's one head row.
pub fn change_head(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_CHANGE_HEAD, &[])
}

/// The sequence a collection's persisted search image reflects, by collection name.
pub fn change_mark(tenant: TenantKey, c: &CollectionName) -> Vec<u8> {
    key(tenant, TAG_CHANGE_MARK, &[c.as_str().as_bytes()])
}

/// The tenant's one row describing its last isolation-level migration. Inside the tenant's
/// range, so it moves with the tenant's data and is erased with it.
pub fn last_migration(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_LAST_MIGRATION, &[])
}

/// The tenant's one row of operator metadata. Inside the tenant's range, so it moves with the
/// tenant's data and is erased with it.
pub fn tenant_metadata(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_TENANT_METADATA, &[])
}

/// A link by its source: `source \0 target \0 relation`, holding the link's weight.
pub fn link_out(
    tenant: TenantKey,
    source: &RecordId,
    target: &RecordId,
    relation: &str,
) -> Vec<u8> {
    key(
        tenant,
        TAG_LINK_OUT,
        &[
            source.as_str().as_bytes(),
            target.as_str().as_bytes(),
            relation.as_bytes(),
        ],
    )
}

/// The mirror of [`link_out`] by target (`target \0 source \0 relation`), so a record's
/// incoming links are a prefix scan too.
pub fn link_in(tenant: TenantKey, source: &RecordId, target: &RecordId, relation: &str) -> Vec<u8> {
    key(
        tenant,
        TAG_LINK_IN,
        &[
            target.as_str().as_bytes(),
            source.as_str().as_bytes(),
            relation.as_bytes(),
        ],
    )
}

/// Every link out of `source` (`incoming: false`) or into it (`incoming: true`).
pub fn links_of(tenant: TenantKey, id: &RecordId, incoming: bool) -> Vec<u8> {
    let tag = if incoming { TAG_LINK_IN } else { TAG_LINK_OUT };
    let mut k = key(tenant, tag, &[id.as_str().as_bytes()]);
    k.push(0);
    k
}

/// The last record written to run `run` of `domain` for the principals `tokens` (a record's
/// sorted `user_tokens`; none for tenant-shared records): `domain \0 run [\0 token]…`, so each
/// principal set's turns chain on their own. (Rows written before 3 Dec 2026 are
/// `domain \0 run` for every principal set, the key tenant-shared records use now: the engine
/// links from a tail only when its record has the new record's tokens.)
pub fn run_tail(tenant: TenantKey, domain: &Domain, run: &str, tokens: &[UserToken]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![domain.as_str().as_bytes(), run.as_bytes()];
    parts.extend(tokens.iter().map(|t| t.as_str().as_bytes()));
    key(tenant, TAG_RUN_TAIL, &parts)
}

/// Every link of the tenant, by source.
pub fn links_all(tenant: TenantKey) -> Vec<u8> {
    key(tenant, TAG_LINK_OUT, &[])
}

/// Splits the rest of a link key (after tenant and tag) into its three parts: for an outgoing
/// key `(source, target, relation)`, for an incoming one `(target, source, relation)`.
pub fn split_link(rest: &[u8]) -> Option<(&str, &str, &str)> {
    let mut parts = rest.splitn(3, |&b| b == 0);
    let a = std::str::from_utf8(parts.next()?).ok()?;
    let b = std::str::from_utf8(parts.next()?).ok()?;
    let c = std::str::from_utf8(parts.next()?).ok()?;
    Some((a, b, c))
}

/// The bytes of a link key of `tenant` after its prefix and tag.
pub fn link_rest(tenant: TenantKey, key: &[u8]) -> Option<&[u8]> {
    key.get(tenant.prefix().len() + 1..)
}

/// What a key of the `data` table is, by its tag byte (the bytes after the tenant prefix and
/// the tag are `rest`); `None` for a key too short or with an unknown tag.
pub enum KeyKind<'a> {
    Collection(&'a [u8]),
    /// A collection being deleted; the rest is its name.
    CollectionDeleting(&'a [u8]),
    Record(&'a [u8]),
    /// A scope index entry (`domain \0 field-tag value \0 id`).
    Scope,
    Dedup,
    Blob(&'a [u8]),
    Audit(&'a [u8]),
    /// A link by source (`source \0 target \0 relation`).
    LinkOut,
    /// The mirror of a link, by target (`target \0 source \0 relation`).
    LinkIn,
    /// The last record of a run (`domain \0 run`), holding its id.
    RunTail,
    /// Adaptive reranking state (see [`parse_adaptive`]).
    Adaptive(&'a [u8]),
    Idempotency(&'a [u8]),
    /// A change log entry; the rest is its sequence (see [`change_seq`]).
    Change(&'a [u8]),
    /// The change log's head (the rest is empty).
    ChangeHead(&'a [u8]),
    /// An image's change-log mark; the rest is the collection's name.
    ChangeMark(&'a [u8]),
    /// The last migration's row (the rest is empty).
    LastMigration(&'a [u8]),
    /// The operator's metadata of the tenant (the rest is empty).
    TenantMetadata(&'a [u8]),
    /// An expiry index entry (see [`parse_expiry`]).
    Expiry(&'a [u8]),
    /// The row saying the expiry index is complete (the rest is empty).
    ExpiryBuilt(&'a [u8]),
}

/// Splits a `data` key of `tenant` into its kind; `None` if it is not one of this tenant's
/// well-formed keys.
pub fn classify(tenant: TenantKey, key: &[u8]) -> Option<KeyKind<'_>> {
    let rest = key.strip_prefix(&tenant.prefix())?;
    let (&tag, rest) = rest.split_first()?;
    Some(match tag {
        TAG_COLLECTION => KeyKind::Collection(rest),
        TAG_COLLECTION_DELETING => KeyKind::CollectionDeleting(rest),
        TAG_RECORD => KeyKind::Record(rest),
        TAG_SCOPE => KeyKind::Scope,
        TAG_LINK_OUT => KeyKind::LinkOut,
        TAG_LINK_IN => KeyKind::LinkIn,
        TAG_RUN_TAIL => KeyKind::RunTail,
        TAG_DEDUP => KeyKind::Dedup,
        TAG_BLOB => KeyKind::Blob(rest),
        TAG_AUDIT => KeyKind::Audit(rest),
        TAG_ADAPTIVE => KeyKind::Adaptive(rest),
        TAG_IDEMPOTENCY => KeyKind::Idempotency(rest),
        TAG_CHANGE => KeyKind::Change(rest),
        TAG_CHANGE_HEAD => KeyKind::ChangeHead(rest),
        TAG_CHANGE_MARK => KeyKind::ChangeMark(rest),
        TAG_LAST_MIGRATION => KeyKind::LastMigration(rest),
        TAG_TENANT_METADATA => KeyKind::TenantMetadata(rest),
        TAG_EXPIRY => KeyKind::Expiry(rest),
        TAG_EXPIRY_BUILT => KeyKind::ExpiryBuilt(rest),
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
            link_out(t, &id, &id, "next"),
            link_in(t, &id, &id, "next"),
            links_of(t, &id, true),
            links_all(t),
            run_tail(t, &d("x"), "run", &[]),
            collection(t, &c),
            record(t, &id),
            scope_entry(t, &d("x"), ScopeField::RunId, "run", &id),
            dedup(t, &d("x"), "run", b"h"),
            blob(t, "hnsw"),
            idempotency(t, "retry-1"),
            adaptive_narrative(t, &d("x"), &NarrativePrincipal::Shared, &c),
            adaptive_narrative(t, &d("x"), &NarrativePrincipal::AllPrincipals, &c),
            adaptive_narrative(t, &d("x"), &bob(), &c),
            adaptive_pheromone(t, &d("x"), &id),
            change_entry(t, 7),
            change_head(t),
            change_mark(t, &c),
            last_migration(t),
            tenant_metadata(t),
            expiry_entry(t, 5, &id),
            expiry_built(t),
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
    fn adaptive_keys_parse_back_and_namespaces_do_not_overlap() {
        let t = TenantKey(1);
        let id = RecordId::parse("r1").unwrap();
        let p = adaptive_pheromone(t, &d("ab"), &id);
        assert!(p.starts_with(&adaptive_namespace(t, &d("ab"))));
        assert!(!p.starts_with(&adaptive_namespace(t, &d("a"))));
        let Some(KeyKind::Adaptive(rest)) = classify(t, &p) else {
            panic!("not adaptive")
        };
        assert!(matches!(
            parse_adaptive(rest),
            Some(AdaptiveKey::Pheromone {
                domain: b"ab",
                id: b"r1"
            })
        ));
        let c = CollectionName::parse("text").unwrap();
        let n = adaptive_narrative(t, &d("ab"), &NarrativePrincipal::Shared, &c);
        let Some(KeyKind::Adaptive(rest)) = classify(t, &n) else {
            panic!("not adaptive")
        };
        assert!(matches!(
            parse_adaptive(rest),
            Some(AdaptiveKey::Narrative {
                domain: b"ab",
                collection: b"text",
                principal: KeyPrincipal::Shared,
            })
        ));
        assert!(parse_adaptive(b"ab\0x\0r").is_none());
        assert!(parse_adaptive(b"ab\0p").is_none());
    }

    fn bob() -> NarrativePrincipal {
        NarrativePrincipal::of_tokens([strata_types::UserToken::parse("u:bob").unwrap()])
    }

    #[test]
    fn narrative_keys_name_their_principal_and_old_keys_read_as_namespace_wide() {
        let t = TenantKey(1);
        let c = CollectionName::parse("text").unwrap();
        let parsed = |k: &[u8]| -> (Vec<u8>, Vec<Vec<u8>>, u8) {
            let Some(KeyKind::Adaptive(rest)) = classify(t, k) else {
                panic!("not adaptive")
            };
            match parse_adaptive(rest) {
                Some(AdaptiveKey::Narrative {
                    collection,
                    principal,
                    ..
                }) => match principal {
                    KeyPrincipal::Shared => (collection.to_vec(), vec![], b'n'),
                    KeyPrincipal::AllPrincipals => (collection.to_vec(), vec![], b'a'),
                    KeyPrincipal::Tokens(ts) => (
                        collection.to_vec(),
                        ts.iter().map(|t| t.to_vec()).collect(),
                        b'u',
                    ),
                },
                _ => panic!("not a narrative"),
            }
        };
        // The key written before narratives had principals: `domain \0 n \0 collection`.
        let mut old = key(t, TAG_ADAPTIVE, &[b"x", b"n", b"text"]);
        assert_eq!(
            adaptive_narrative(t, &d("x"), &NarrativePrincipal::Shared, &c),
            old
        );
        assert_eq!(parsed(&old), (b"text".to_vec(), vec![], b'n'));
        let pair = NarrativePrincipal::of_tokens(
            ["u:bob", "u:alice"].map(|s| strata_types::UserToken::parse(s).unwrap()),
        );
        let k = adaptive_narrative(t, &d("x"), &pair, &c);
        assert_eq!(
            parsed(&k),
            (
                b"text".to_vec(),
                vec![b"u:alice".to_vec(), b"u:bob".to_vec()],
                b'u'
            )
        );
        let all = adaptive_narrative(t, &d("x"), &NarrativePrincipal::AllPrincipals, &c);
        assert_eq!(parsed(&all), (b"text".to_vec(), vec![], b'a'));
        // Every principal's narrative is inside the namespace, and they are distinct keys.
        let keys = [
            old.clone(),
            k,
            all,
            adaptive_narrative(t, &d("x"), &bob(), &c),
        ];
        for k in &keys {
            assert!(k.starts_with(&adaptive_namespace(t, &d("x"))));
        }
        let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        // A token narrative needs a collection and at least one non-empty token.
        assert!(parse_adaptive(b"x\0u\0text").is_none());
        assert!(parse_adaptive(b"x\0u\0text\0").is_none());
        assert!(parse_adaptive(b"x\0u\0\0u:bob").is_none());
        assert!(parse_adaptive(b"x\0a\0text\0u:bob").is_none());
        old.push(0);
        assert!(parse_adaptive(&old[9..]).is_none());
    }

    #[test]
    fn link_lists_do_not_overlap_for_prefix_ids() {
        let t = TenantKey(1);
        let (a, ab, b) = (
            RecordId::parse("a").unwrap(),
            RecordId::parse("ab").unwrap(),
            RecordId::parse("b").unwrap(),
        );
        assert!(link_out(t, &a, &b, "next").starts_with(&links_of(t, &a, false)));
        assert!(!link_out(t, &ab, &b, "next").starts_with(&links_of(t, &a, false)));
        assert!(link_in(t, &a, &b, "next").starts_with(&links_of(t, &b, true)));
        assert!(!link_in(t, &a, &b, "next").starts_with(&links_of(t, &a, true)));
        let k = link_out(t, &a, &b, "next");
        assert_eq!(
            split_link(link_rest(t, &k).unwrap()),
            Some(("a", "b", "next"))
        );
    }

    #[test]
    fn change_entries_sort_by_sequence_and_classify_back() {
        let t = TenantKey(1);
        assert!(change_entry(t, 255) < change_entry(t, 256));
        assert!(change_entry(t, 9).starts_with(&change_log(t)));
        let k = change_entry(t, 300);
        let Some(KeyKind::Change(rest)) = classify(t, &k) else {
            panic!("not a change entry")
        };
        assert_eq!(change_seq(rest), Some(300));
        assert_eq!(change_seq(b"short"), None);
        assert!(matches!(
            classify(t, &change_head(t)),
            Some(KeyKind::ChangeHead(b""))
        ));
        let c = CollectionName::parse("text").unwrap();
        assert!(matches!(
            classify(t, &change_mark(t, &c)),
            Some(KeyKind::ChangeMark(b"text"))
        ));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }

    #[test]
    fn expiry_entries_sort_by_time_and_parse_back() {
        let t = TenantKey(1);
        let (a, b) = (RecordId::parse("a").unwrap(), RecordId::parse("b").unwrap());
        let times = [Millis::MIN, -5, 0, 1, 1_700_000_000_000, Millis::MAX];
        let keys: Vec<Vec<u8>> = times.iter().map(|at| expiry_entry(t, *at, &b)).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "time order is key order"
        );
        for (at, k) in times.iter().zip(&keys) {
            let Some(KeyKind::Expiry(rest)) = classify(t, k) else {
                panic!("not an expiry entry")
            };
            assert_eq!(parse_expiry(rest), Some((*at, &b"b"[..])));
            // Everything due at `at` is before `expiry_after(at)`, nothing later is.
            assert!(k.as_slice() < expiry_after(t, *at).as_slice());
            assert!(expiry_entry(t, *at, &a).as_slice() < expiry_after(t, *at).as_slice());
        }
        assert!(expiry_after(t, 0).as_slice() <= expiry_entry(t, 1, &a).as_slice());
        assert!(expiry_after(t, Millis::MAX) > expiry_entry(t, Millis::MAX, &b));
        assert!(parse_expiry(&[0; 8]).is_none(), "an entry names a record");
        assert!(parse_expiry(&[0; 3]).is_none());
    }
}
