//! What a collection keeps resident per record: the few fields search decides with, never the
//! whole record.
//!
//! Search needs, per slot, the record's id (to name hits and find pheromones), its scope
//! fields (for `SlotVisibility::sees_slot` in `crate::visibility`, and to clear the scope
//! bitmaps when it goes), its expiry, and what ranking reads (`created_at`, confidence). Content, metadata, kind and the vector
//! stay in storage (the text and field indexes hold what they index of them); the records of a
//! search's hits, and of candidates a filter the field index cannot answer must see, are read
//! from the search's own storage snapshot (`crate::hits`). Keeping whole records resident cost
//! 2.3 × the raw vectors for 200,000 records (`docs/benchmarks.md`).

use strata_types::{Millis, Record, RecordId};

use crate::EngineError;
use crate::scope_names::{ScopeIds, ScopeNames};

/// The resident part of one record (see the module docs). Its scope fields are ids into its
/// collection's name tables (`crate::scope_names`): a string per record and field cost about
/// 120 bytes per record.
///
/// No `PartialEq`: two slots with equal ids may name different records when they come from
/// different collections' tables; compare a slot with a record through [`SlotDoc::describes`].
///
/// One cache line, aligned to one (`align(64)`, and 64 bytes with the expiry kept as a time
/// and a flag rather than an `Option`, which took 16 bytes and made it 72): a search that
/// names its hits reads each hit's resident part, and a part spanning two lines cost two
/// cache misses per hit instead of one (docs/benchmarks.md, issue 15, 1 Dec).
#[derive(Debug, Clone)]
#[repr(align(64))]
pub(crate) struct SlotDoc {
    pub id: RecordId,
    /// Domain, run, memory scope and user tokens, interned in the collection's `ScopeNames`.
    pub scope: ScopeIds,
    pub created_at: Millis,
    /// The record's expiry when `expires` is set, and 0 otherwise ([`SlotDoc::expires_at`]);
    /// private so that the two never disagree.
    expiry: Millis,
    expires: bool,
    /// The record's confidence value (`Confidence::value`), for ranking.
    pub confidence: f64,
    /// Estimated heap bytes of the record's entries in the text and field indexes, computed
    /// once from the whole record (`index_bytes`) and kept, so that adding and removing the
    /// record balance in `CollectionIndex::resident_bytes` without reading it again.
    pub index_bytes: u32,
}

impl SlotDoc {
    /// A resident part from its fields.
    pub fn new(
        id: RecordId,
        scope: ScopeIds,
        created_at: Millis,
        expires_at: Option<Millis>,
        confidence: f64,
        index_bytes: u32,
    ) -> SlotDoc {
        SlotDoc {
            id,
            scope,
            created_at,
            expiry: expires_at.unwrap_or(0),
            expires: expires_at.is_some(),
            confidence,
            index_bytes,
        }
    }

    /// The resident part of `r`, its scope names interned in `names` (a reference each, given
    /// back by `ScopeNames::release` when the slot goes).
    pub fn of(r: &Record, names: &mut ScopeNames) -> Result<SlotDoc, EngineError> {
        let scope = names.acquire(
            &r.memory_domain,
            r.run_id.as_ref(),
            r.memory_scope.as_ref(),
            &r.user_tokens,
        )?;
        Ok(SlotDoc::new(
            r.id.clone(),
            scope,
            r.created_at,
            r.expires_at,
            r.confidence.value,
            index_bytes(r),
        ))
    }

    /// When the record expires (TTL), if it does.
    pub fn expires_at(&self) -> Option<Millis> {
        self.expires.then_some(self.expiry)
    }

    /// Whether this slot holds what `r` would put there (for the tenant check): the same id,
    /// scope names, times, confidence and estimate.
    pub fn describes(&self, r: &Record, names: &ScopeNames) -> bool {
        let Some(scope) = names.names(self.scope) else {
            return false;
        };
        self.id == r.id
            && scope.domain == r.memory_domain
            && scope.run_id == r.run_id
            && scope.memory_scope == r.memory_scope
            && scope.user_tokens == r.user_tokens
            && self.created_at == r.created_at
            && self.expires_at() == r.expires_at
            && self.confidence == r.confidence.value
            && self.index_bytes == index_bytes(r)
    }

    /// Whether the record's TTL has passed at `now` (the rule of `Record::is_expired`).
    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires_at().is_some_and(|t| t <= now)
    }

    /// Estimated heap bytes this slot holds: its id (with its reference counts and an
    /// allocator header) and its index entries. The inline part is counted by the slot table's
    /// capacity, the scope names by their tables (`ScopeNames::heap_bytes`).
    pub fn heap_bytes(&self) -> u64 {
        (self.id.heap_bytes() + self.index_bytes as usize) as u64
    }
}

/// Estimated heap bytes of a record's entries in the text and field indexes: a posting per
/// word of content (about a byte of content each, with the term table), a few bitmap and
/// field-index entries per metadata field and optional built-in field (`kind`, `expires_at`).
/// The built-ins kept in columns (`created_at`, `updated_at`, `confidence`) are not counted
/// here: the columns are counted whole, by capacity (`FieldIndex::column_bytes`), as they
/// keep their places when records go. Cheap (no allocation), and the same record always gives
/// the same figure.
pub(crate) fn index_bytes(r: &Record) -> u32 {
    const PER_FIELD_ENTRY: usize = 32;
    let content = r.content.as_ref().map_or(0, String::len);
    let kind = r.kind.as_ref().map_or(0, |k| k.as_str().len());
    let metadata = json_bytes(&r.metadata);
    let optional = usize::from(r.kind.is_some()) + usize::from(r.expires_at.is_some());
    let bytes = content + kind + metadata + optional * PER_FIELD_ENTRY;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

fn json_bytes(map: &serde_json::Map<String, serde_json::Value>) -> usize {
    use serde_json::Value;
    map.values()
        .map(|v| {
            32 + match v {
                Value::String(s) => s.len(),
                Value::Array(a) => a.len() * 32,
                Value::Object(o) => json_bytes(o),
                _ => 0,
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_types::{CollectionName, Confidence, Domain, RunId, UserToken};

    fn record() -> Record {
        Record {
            id: RecordId::parse("r1").unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: None,
            content: Some("a long text that stays in storage".into()),
            vector: Some(vec![1.0; 4]),
            user_tokens: vec![UserToken::parse("u:a").unwrap()],
            memory_domain: Domain::default_domain(),
            run_id: Some(RunId::parse("run").unwrap()),
            memory_scope: None,
            metadata: serde_json::json!({"k": "v"}).as_object().cloned().unwrap(),
            created_at: 5,
            updated_at: 6,
            expires_at: Some(10),
            confidence: Confidence::initial(0.75),
        }
    }

    #[test]
    fn keeps_what_search_decides_with() {
        let mut names = ScopeNames::default();
        let d = SlotDoc::of(&record(), &mut names).unwrap();
        assert_eq!(d.id.as_str(), "r1");
        let scope = names.names(d.scope).unwrap();
        assert_eq!(scope.run_id.as_ref().map(|r| r.as_str()), Some("run"));
        assert_eq!(scope.user_tokens.len(), 1);
        assert_eq!((d.created_at, d.confidence), (5, 0.75));
        assert!(!d.is_expired(9) && d.is_expired(10));
        assert!(d.describes(&record(), &names));
        let mut other = record();
        other.run_id = None;
        assert!(!d.describes(&other, &names));
        // The same record always weighs the same, so place and remove balance.
        assert_eq!(
            d.heap_bytes(),
            SlotDoc::of(&record(), &mut names).unwrap().heap_bytes()
        );
        assert!(d.heap_bytes() > 0);
        assert!(
            std::mem::size_of::<Option<SlotDoc>>() <= 80,
            "a slot stays small: {}",
            std::mem::size_of::<Option<SlotDoc>>()
        );
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_slot_is_one_cache_line_and_starts_on_one() {
        // A search reads one line per hit, not two (see `SlotDoc`).
        assert_eq!(std::mem::size_of::<Option<SlotDoc>>(), 64);
        assert_eq!(std::mem::align_of::<Option<SlotDoc>>(), 64);
        let mut names = ScopeNames::default();
        let docs: Vec<Option<SlotDoc>> = (0..3)
            .map(|_| SlotDoc::of(&record(), &mut names).ok())
            .collect();
        assert!(
            docs.iter()
                .all(|d| (d as *const Option<SlotDoc>).addr().is_multiple_of(64))
        );
    }

    #[test]
    fn the_expiry_is_kept_as_given() {
        let mut names = ScopeNames::default();
        let mut r = record();
        for expires_at in [None, Some(0), Some(10), Some(Millis::MAX)] {
            r.expires_at = expires_at;
            let d = SlotDoc::of(&r, &mut names).unwrap();
            assert_eq!(d.expires_at(), expires_at);
            assert!(d.describes(&r, &names));
        }
        // No expiry never expires; one at 0 has expired at any time from 0.
        r.expires_at = None;
        assert!(!SlotDoc::of(&r, &mut names).unwrap().is_expired(Millis::MAX));
        r.expires_at = Some(0);
        let d = SlotDoc::of(&r, &mut names).unwrap();
        assert!(d.is_expired(0) && !d.is_expired(-1));
    }
}
