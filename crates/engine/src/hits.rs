//! A search's checks of candidates and the records of its hits, read from storage.
//!
//! Collections keep only a lean `SlotDoc` per record resident (`crate::slot_doc`), so what
//! needs a whole record reads it from the search's own storage snapshot, taken while the
//! search holds the tenant's index (so it is never older than the index): a filter the field
//! index cannot answer exactly (read once per candidate slot and search, the answer kept), and
//! the hits themselves. Each hit's stored record passes `Visibility::sees` and the filter once
//! more before it is returned; a record a concurrent write changed out of sight, or removed,
//! is passed over for the next candidate.

use std::cell::RefCell;
use std::collections::HashMap;

use strata_store::{Reader, Reads, TenantKey};
use strata_types::{CollectionName, Filter, Record};

use crate::EngineError;
use crate::collection_index::CollectionIndex;
use crate::visibility::{SlotVisibility, Visibility};

/// One collection's records in one storage snapshot.
pub(crate) struct StoredRecords<'a> {
    reads: &'a Reader,
    key: TenantKey,
    collection: &'a CollectionName,
}

impl<'a> StoredRecords<'a> {
    /// `reads` must belong to a read that checked the tenant (`Engine::read_tenant`, or a
    /// verified grant for an owner's shared domain).
    pub fn new(reads: &'a Reader, key: TenantKey, collection: &'a CollectionName) -> Self {
        StoredRecords {
            reads,
            key,
            collection,
        }
    }

    /// The record in slot `slot` of `ci`, as stored, if it is still there and in this
    /// collection (a patch may have moved it to another since the index placed it). Without
    /// `with_vector` its vector is skipped rather than copied (`vector: None`): no rule reads
    /// it, and a hit carries it only when the request includes it.
    fn get(
        &self,
        ci: &CollectionIndex,
        slot: u32,
        with_vector: bool,
    ) -> Result<Option<Record>, EngineError> {
        let Some(doc) = ci.docs.get(slot as usize).and_then(Option::as_ref) else {
            return Ok(None);
        };
        let record = if with_vector {
            self.reads.record(self.key, &doc.id)?
        } else {
            self.reads.record_without_vector(self.key, &doc.id)?
        };
        Ok(record.filter(|r| &r.modality == self.collection))
    }
}

/// The checks one search applies to candidate slots, and its hits' records.
pub(crate) struct HitChecks<'a> {
    ci: &'a CollectionIndex,
    vis: &'a Visibility,
    /// `vis` resolved against the collection's scope names once, for `sees`.
    slots: SlotVisibility<'a>,
    filter: Option<&'a Filter>,
    /// The field index answered the filter exactly (or there is none): no record is read for
    /// it.
    filter_exact: bool,
    stored: &'a StoredRecords<'a>,
    /// Answers of the filter on stored records, by slot: a graph search asks about a node
    /// again when it widens its beam.
    filtered: RefCell<HashMap<u32, bool>>,
    /// The first storage error met inside a predicate (which can only answer yes or no);
    /// [`HitChecks::finish`] returns it.
    error: RefCell<Option<EngineError>>,
}

impl<'a> HitChecks<'a> {
    pub fn new(
        ci: &'a CollectionIndex,
        vis: &'a Visibility,
        filter: Option<&'a Filter>,
        filter_exact: bool,
        stored: &'a StoredRecords<'a>,
    ) -> Self {
        HitChecks {
            ci,
            vis,
            slots: vis.for_slots(&ci.names),
            filter,
            filter_exact,
            stored,
            filtered: RefCell::new(HashMap::new()),
            error: RefCell::new(None),
        }
    }

    /// Whether the caller sees the record in `slot`, decided on its resident part by
    /// `SlotVisibility::sees_slot`.
    pub fn sees(&self, slot: u32) -> bool {
        self.ci
            .docs
            .get(slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|d| self.slots.sees_slot(d))
    }

    /// Whether the record in `slot` matches the filter: true at once when the field index
    /// answered it exactly; otherwise decided on the stored record, once per slot.
    pub fn filter_passes(&self, slot: u32) -> bool {
        let Some(filter) = self.filter.filter(|_| !self.filter_exact) else {
            return true;
        };
        if let Some(known) = self.filtered.borrow().get(&slot) {
            return *known;
        }
        let passes = match self.stored.get(self.ci, slot, false) {
            Ok(record) => record.is_some_and(|r| filter.matches(&r)),
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                false
            }
        };
        self.filtered.borrow_mut().insert(slot, passes);
        passes
    }

    /// The stored record of a hit, if it still passes every rule: `Visibility::sees` and the
    /// filter, on the record itself. Its vector only `with_vector`.
    pub fn record(&self, slot: u32, with_vector: bool) -> Result<Option<Record>, EngineError> {
        Ok(self
            .stored
            .get(self.ci, slot, with_vector)?
            .filter(|r| self.vis.sees(r) && self.filter.is_none_or(|f| f.matches(r))))
    }

    /// The error a predicate met, if any: a search that could not read a record fails rather
    /// than answer without it.
    pub fn finish(self) -> Result<(), EngineError> {
        match self.error.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
