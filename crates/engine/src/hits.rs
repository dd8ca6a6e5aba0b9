//! A search's checks of candidates and the records of its hits, read from storage.
//!
//! Collections keep only a lean `SlotDoc` per record resident (`crate::slot_doc`), so what
//! needs a whole record reads it from the search's own storage snapshot, taken while the
//! search holds the tenant's index (so it is never older than the index): a filter the field
//! index cannot answer exactly (read once per candidate slot and search, the answer kept), and
//! the hits themselves. Each hit's stored record passes `Visibility::sees` and the filter once
//! more before it is returned; a record a concurrent write changed out of sight, or removed,
//! is passed over for the next candidate.
//!
//! A search whose `include` needs nothing of the stored record (`[]`: ids and scores) and
//! whose filter the field index answered exactly (or that has none) reads no record at all
//! ([`answers_from_index`]): each hit is decided by `Visibility::sees_slot` on its resident
//! part and answered with the id it holds (such a hit carries no record). That answer is the
//! one storage would give, because the resident state never differs from storage in a way a
//! caller could see:
//! - a search holds the tenant's index under its read lock from the walk to the last hit, and
//!   every write applies its changes to the loaded index under the write lock, after its
//!   commit and before it returns, in commit order (`crate::registry`: `write` holds the
//!   tenant's write order across commit and apply; `write_shared` draws its place in it right
//!   before its commit and applies in that order, `crate::write_order`). So a search sees the
//!   index as of one commit, holding every write that returned before the search began; a
//!   write it does not see had not returned, so the search is ordered before it. From before
//!   a write's transaction until its apply, the loaded index is marked
//!   `TenantIndex::write_pending` (set through a read guard, cleared after the apply; for
//!   shared writes set by the first in flight and cleared by the last); a search that
//!   sees the mark while it holds the index reads its hits from its storage snapshot instead,
//!   so a change another request may already read from storage (a `get` answering 404 after
//!   a delete) is never contradicted by a later search answered from the index before the
//!   apply. A batched write's mark covers the batch leader's commit, which its closure waits
//!   for. A failed or panicking apply, a commit that failed after its transaction body
//!   succeeded, or a panic inside the write drops the index (a poisoned index lock counts as
//!   not loaded), and the next search loads it from storage.
//! - every record write is a `Change::Remove` of the old record and a `Change::Upsert` of the
//!   new one (`crate::records::store_record`), deletes are removes and a collection's deletion
//!   drops its index, so a patch that moves a record to another collection, domain, run,
//!   memory scope or set of user tokens, or changes its expiry, replaces its resident part,
//!   which copies exactly the fields `Visibility` reads (`SlotDoc::of`);
//! - TTL: an expired record is hidden from its `expires_at` on by `Visibility::sees_slot` with
//!   the request's `now`, the rule `Record::is_expired` applies to the stored record, until the
//!   expiry sweep deletes it (`crate::expiry_sweep`), which updates the index like any delete;
//! - tenant suspension, deletion and purge are checked by `Engine::read_tenant` /
//!   `check_readable` before the index is searched, as for every search (reading the records
//!   never re-checked them); a purge forgets the index and a new incarnation has another key;
//! - the field index is updated in the same apply as the resident part, so a filter it
//!   answers exactly is answered as of the same commit.
//!
//! Such a search without a filter and without shared domains begins no storage snapshot at
//! all (`crate::search`): the tenant's liveness and permission are checked while the index is
//! held by `Engine::check_readable` (`read_tenant`'s checks, from memory while the tenant is
//! known live, from a snapshot otherwise), and the collection's defaults come from the
//! definition its index was made from (`CollectionIndex::definition`), which is never stale:
//! a definition does not change under a loaded index (a collection deleted, re-embedded or
//! created again gets a new index from its new definition).
//!
//! Beam policy. Every rule a hit must pass is applied to candidates inside the channels (the
//! graph walk's predicate, or candidates that all pass), so after the graph nothing is dropped
//! unless a write raced the search. A plain vector search's first try therefore ranks exactly
//! k candidates, and the graph's beam is `max(ef, k)`, as the bare index's. A reranked search
//! ranks its pool; a hybrid search, or one boosted by confidence or recency (asked for, or
//! turned on by the collection's default `recency_half_life_secs`), ranks
//! `max(k + 8, 50)` so that a record below the top k can rise, and its beam is at least that.
//! The hits are then checked once more (`HitChecks::sees`, the filter) and, when read from
//! storage, on their stored records; a try that lost hits there and holds fewer than k is run
//! again once the index is released (`crate::search_retry`), ranking beyond k one spare
//! candidate for every hit lost by the tries so far and `SPARE_HITS` more; the last of
//! `SEARCH_ATTEMPTS` tries first waits for the tenant's write in flight to be applied. The
//! guarantee: a search answers k hits (or every visible match, if fewer) unless writes that
//! commit after that wait, and before the last try's storage snapshot, hide more candidates
//! than it ranks beyond k; a search that names its hits from the index alone loses none.
//! Shared domains are searched the same way, each against its owner's index. Both include
//! modes follow this one policy, so `include: []` and an include that reads records rank the
//! same top k with the same `exact` flag. A hit the re-check drops on resident state had
//! passed the same rules in its channel, so only an index disagreement drops one: it is
//! counted (`strata_search_recheck_drops_total`) and logged the first time.
//!
//! What the resident state cannot answer still reads storage: a filter the field index cannot
//! answer exactly (checked on stored records per candidate, and re-checked on each hit's
//! record), and any `include` of content, metadata, vector or the whole record.

use std::cell::RefCell;
use std::collections::HashMap;

use strata_store::{Reader, Reads, TenantKey};
use strata_types::{CollectionName, Filter, Record, RecordId, SearchRequest};

use crate::EngineError;
use crate::collection_index::CollectionIndex;
use crate::visibility::{SlotVisibility, Visibility};

/// Whether the hits of `s` can be named from the index's resident state without reading a
/// record (see the module docs): its `include` asks for nothing of the stored record, and the
/// field index answered its filter exactly (`filter_exact`, true without a filter).
pub(crate) fn answers_from_index(s: &SearchRequest, filter_exact: bool) -> bool {
    filter_exact && !s.needs_records()
}

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
    /// The search's storage snapshot; none for a search named from the index alone
    /// ([`answers_from_index`] without a filter), which reads no record.
    stored: Option<&'a StoredRecords<'a>>,
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
        stored: Option<&'a StoredRecords<'a>>,
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
        let passes = match self.stored().and_then(|s| s.get(self.ci, slot, false)) {
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
            .stored()?
            .get(self.ci, slot, with_vector)?
            .filter(|r| self.vis.sees(r) && self.filter.is_none_or(|f| f.matches(r))))
    }

    /// The id of a hit named from its resident part alone: a hit of a search whose `include`
    /// is empty carries its id and score and nothing else (`SearchHit::record` is `None`).
    /// Only for searches [`answers_from_index`] allows (the filter, if any, was answered
    /// exactly by the candidates), and only for a slot [`HitChecks::sees`] just accepted under
    /// the same hold of the index, so visibility is decided once per hit. `None` for an empty
    /// slot, which `sees` never accepts.
    pub fn resident_id(&self, slot: u32) -> Option<RecordId> {
        self.ci
            .docs
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|doc| doc.id.clone())
    }

    /// The snapshot, or an error for a search that was given none yet needs a record: a
    /// caller bug, answered as a failed search rather than a guess.
    fn stored(&self) -> Result<&'a StoredRecords<'a>, EngineError> {
        self.stored.ok_or_else(|| {
            EngineError::Index("a search that reads records was given no snapshot".into())
        })
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
