//! Tenant verification at the storage level: every key in the tenant's range is one of its
//! well-formed keys, every value decodes, and the secondary entries (scope index, expiry
//! index, dedup) agree with the records. The engine adds what only it knows (usage, indexes); see
//! `Engine::verify_tenant`.

use std::collections::HashSet;

use strata_types::{Collection, CollectionName, Link, Millis, Record, RecordId};

use crate::codec::{decode_json, decode_record};
use crate::keys::{self, KeyKind, TenantKey};
use crate::links::link_of;
use crate::tables::{Reads, prefix_range, scope_entries};
use crate::{IdempotencyRow, StoreError};

/// At most this many problems are listed; `problem_count` still counts them all.
const MAX_LISTED: usize = 100;

/// What [`check_tenant`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyCheck {
    /// Keys in the tenant's range.
    pub keys: u64,
    pub records: u64,
    pub collections: u64,
    /// Links (counted by their entry by source).
    pub links: u64,
    /// The blobs' names (usage, index snapshots, the data version), for the engine to decode.
    pub blobs: Vec<String>,
    /// Up to 100 problems, each naming the key kind and what is wrong.
    pub problems: Vec<String>,
    pub problem_count: u64,
}

impl KeyCheck {
    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(p);
        }
    }
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// Walks every key of tenant `t` once, then checks that each record's own scope and dedup
/// entries exist. Reads one consistent snapshot (`r`).
pub fn check_tenant(r: &impl Reads, t: TenantKey) -> Result<KeyCheck, StoreError> {
    let mut c = KeyCheck::default();
    let mut records: Vec<Record> = Vec::new();
    let mut collections: HashSet<CollectionName> = HashSet::new();
    let mut deleting: HashSet<CollectionName> = HashSet::new();
    let mut scope_keys: HashSet<Vec<u8>> = HashSet::new();
    let mut dedup: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut links_out: Vec<Link> = Vec::new();
    let mut links_in: HashSet<(RecordId, RecordId, String)> = HashSet::new();
    let mut change_seqs: Vec<u64> = Vec::new();
    let mut change_head = None;
    let mut expiry: Vec<(Millis, RecordId)> = Vec::new();
    let mut expiry_built = false;
    for entry in prefix_range(r.data_table(t)?, &keys::tenant_all(t))? {
        let (k, v) = entry?;
        c.keys += 1;
        match keys::classify(t, &k) {
            None => c.problem(format!("key {k:02x?}: not a well-formed key of the tenant")),
            Some(KeyKind::Collection(name)) => {
                c.collections += 1;
                match (
                    text(name).map(CollectionName::parse),
                    decode_json::<Collection>(&v),
                ) {
                    (Some(Ok(n)), Ok(col)) if col.name == n => {
                        collections.insert(n);
                    }
                    (_, Err(e)) => c.problem(format!("collection {name:?}: {e}")),
                    _ => c.problem(format!("collection {name:?}: key and value disagree")),
                }
            }
            // A collection being deleted: its records may still be stored.
            Some(KeyKind::CollectionDeleting(name)) => {
                match (
                    text(name).map(CollectionName::parse),
                    decode_json::<Collection>(&v),
                ) {
                    (Some(Ok(n)), Ok(col)) if col.name == n => {
                        if collections.contains(&n) {
                            c.problem(format!("collection {n}: both live and being deleted"));
                        }
                        deleting.insert(n);
                    }
                    (_, Err(e)) => c.problem(format!("collection being deleted {name:?}: {e}")),
                    _ => c.problem(format!(
                        "collection being deleted {name:?}: key and value disagree"
                    )),
                }
            }
            Some(KeyKind::Record(id)) => {
                c.records += 1;
                match (text(id).map(RecordId::parse), decode_record(&v)) {
                    (Some(Ok(id)), Ok(rec)) if rec.id == id => records.push(rec),
                    (_, Err(e)) => c.problem(format!(
                        "record {:?}: {e}; every request that meets it fails until a repair of \
                         the tenant (POST /v1/admin/tenants/{{id}}/repair) removes it, its \
                         content lost",
                        text(id)
                    )),
                    _ => c.problem(format!("record {:?}: key and value disagree", text(id))),
                }
            }
            Some(KeyKind::Scope) => {
                if !v.is_empty() {
                    c.problem(format!("scope entry {k:02x?}: value not empty"));
                }
                scope_keys.insert(k);
            }
            Some(KeyKind::Dedup) => dedup.push((k, v)),
            Some(KeyKind::Blob(name)) => match text(name) {
                Some(n) => c.blobs.push(n.to_string()),
                None => c.problem(format!("blob {name:02x?}: name is not UTF-8")),
            },
            Some(KeyKind::LinkOut) => match link_of(t, &k, &v, false) {
                Ok(l) => {
                    c.links += 1;
                    links_out.push(l);
                }
                Err(e) => c.problem(format!("link {k:02x?}: {e}")),
            },
            Some(KeyKind::RunTail) => {
                if crate::links::decode_run_tail(&v).is_err() {
                    c.problem(format!("run tail {k:02x?}: value is not a record id"));
                }
            }
            Some(KeyKind::LinkIn) => match link_of(t, &k, &v, true) {
                Ok(l) => {
                    links_in.insert((l.source, l.target, l.relation.to_string()));
                }
                Err(e) => c.problem(format!("link mirror {k:02x?}: {e}")),
            },
            Some(KeyKind::Adaptive(rest)) => {
                if let Err(e) = crate::adaptive::decode_row(rest, &v) {
                    c.problem(format!("adaptive state {k:02x?}: {e}"));
                }
            }
            Some(KeyKind::Audit(seq)) => {
                if seq.len() != 8 {
                    c.problem(format!("audit row {seq:02x?}: bad sequence number"));
                }
            }
            Some(KeyKind::Change(seq)) => match keys::change_seq(seq) {
                None => c.problem(format!("change log entry {seq:02x?}: bad sequence number")),
                Some(n) => match crate::codec::decode_change(&v) {
                    Ok(_) => change_seqs.push(n),
                    Err(e) => c.problem(format!("change log entry {n}: {e}")),
                },
            },
            Some(KeyKind::ChangeHead(rest)) => {
                if !rest.is_empty() {
                    c.problem(format!(
                        "change log head {rest:02x?}: unexpected key suffix"
                    ));
                } else {
                    match crate::codec::decode_change_head(&v) {
                        Ok(h) => change_head = Some(h),
                        Err(e) => c.problem(format!("change log head: {e}")),
                    }
                }
            }
            Some(KeyKind::ChangeMark(name)) => {
                if text(name).is_none_or(|n| CollectionName::parse(n).is_err()) {
                    c.problem(format!(
                        "change log mark {name:02x?}: not a collection name"
                    ));
                } else if let Err(e) = crate::codec::decode_change_mark(&v) {
                    c.problem(format!("change log mark {:?}: {e}", text(name)));
                }
            }
            Some(KeyKind::LastMigration(rest)) => {
                if !rest.is_empty() {
                    c.problem(format!(
                        "last migration row {k:02x?}: not a well-formed key"
                    ));
                } else if let Err(e) = crate::codec::decode_migration(&v) {
                    c.problem(format!("last migration row: {e}"));
                }
            }
            Some(KeyKind::TenantMetadata(rest)) => {
                if !rest.is_empty() {
                    c.problem(format!(
                        "tenant metadata row {k:02x?}: not a well-formed key"
                    ));
                } else {
                    // Named with its repair: setting the metadata to null replaces the row
                    // without reading it (a merge into it is refused).
                    let repair = "an operator replaces it by setting the tenant's metadata to null";
                    match crate::codec::decode_tenant_metadata(&v) {
                        Err(e) => c.problem(format!("tenant metadata row: {e}; {repair}")),
                        Ok(m) => {
                            if let Some(why) = crate::tenant_metadata::out_of_bounds(&m) {
                                c.problem(format!("tenant metadata row: {why}; {repair}"));
                            }
                        }
                    }
                }
            }
            Some(KeyKind::Expiry(rest)) => {
                if !v.is_empty() {
                    c.problem(format!("expiry index entry {k:02x?}: value not empty"));
                }
                match crate::expiry::parse_entry(rest) {
                    Ok(e) => expiry.push(e),
                    Err(e) => c.problem(e.to_string()),
                }
            }
            Some(KeyKind::ExpiryBuilt(rest)) => {
                if !rest.is_empty() {
                    c.problem(format!("expiry index mark {k:02x?}: not a well-formed key"));
                } else if let Err(e) = crate::expiry::check_built(&v) {
                    c.problem(e.to_string());
                } else {
                    expiry_built = true;
                }
            }
            Some(KeyKind::Idempotency(name)) => {
                if let Err(e) = IdempotencyRow::decode(&v) {
                    c.problem(format!("idempotency key {:?}: {e}", text(name)));
                }
            }
        }
    }
    // The log's entries are exactly within the head's kept range (`first..next`).
    match change_head {
        Some(h) if h.first > h.next => c.problem(format!("change log head: {h:?} is inverted")),
        Some(h) => {
            if let Some(n) = change_seqs.iter().find(|n| **n < h.first || **n >= h.next) {
                c.problem(format!("change log entry {n}: outside the head's {h:?}"));
            }
        }
        None if !change_seqs.is_empty() => c.problem("change log: entries without a head".into()),
        None => {}
    }
    let ids: HashSet<&RecordId> = records.iter().map(|r| &r.id).collect();
    let mut expected_scope = 0usize;
    for rec in &records {
        if !collections.contains(&rec.modality) && !deleting.contains(&rec.modality) {
            c.problem(format!(
                "record {}: collection {} missing",
                rec.id, rec.modality
            ));
        }
        for k in scope_entries(t, rec) {
            expected_scope += 1;
            if !scope_keys.contains(&k) {
                c.problem(format!("record {}: a scope index entry is missing", rec.id));
            }
        }
    }
    if scope_keys.len() != expected_scope {
        c.problem(format!(
            "scope index: {} entries, the records need {expected_scope}",
            scope_keys.len()
        ));
    }
    // Every expiry entry names a record that expires at its time; once the index is complete,
    // every record with an expiry has its entry.
    let expires: std::collections::HashMap<&RecordId, Millis> = records
        .iter()
        .filter_map(|r| r.expires_at.map(|at| (&r.id, at)))
        .collect();
    for (at, id) in &expiry {
        if expires.get(id) != Some(at) {
            c.problem(format!(
                "expiry index entry of {id} at {at}: no record of that id expires then"
            ));
        }
    }
    if expiry_built && expiry.len() != expires.len() {
        c.problem(format!(
            "expiry index: {} entries, the records need {}",
            expiry.len(),
            expires.len()
        ));
    }
    // Every link joins two records of the tenant and has its mirror, and no mirror is alone.
    for l in &links_out {
        if !ids.contains(&l.source) || !ids.contains(&l.target) {
            c.problem(format!(
                "link {} -> {}: an end is not a record",
                l.source, l.target
            ));
        }
        if !links_in.contains(&(l.source.clone(), l.target.clone(), l.relation.to_string())) {
            c.problem(format!(
                "link {} -> {}: its mirror entry is missing",
                l.source, l.target
            ));
        }
    }
    if links_in.len() != links_out.len() {
        c.problem(format!(
            "links: {} entries by source, {} by target",
            links_out.len(),
            links_in.len()
        ));
    }
    for (k, v) in dedup {
        match text(&v).map(RecordId::parse) {
            Some(Ok(id)) if ids.contains(&id) => {}
            _ => c.problem(format!("dedup entry {k:02x?}: points to no record")),
        }
    }
    Ok(c)
}
