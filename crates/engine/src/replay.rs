//! Catching a search image up with storage from the tenant's change log, so that a tenant
//! written while evicted (or while the process was down) loads from its image plus the few
//! records changed since, instead of reading and re-indexing every record.
//!
//! Each image has a mark: the change log sequence it reflects, written in the image's own
//! transaction (`TenantIndex::save`). An image behind the stored data version is usable when
//! its mark is still covered by the log (no entry after it was trimmed or dropped by the cap);
//! then every record logged after the mark is read as it is now and upserted into, or removed
//! from, the collection's index through the index's own entry points, as a live write would
//! be. Anything else — no mark, a mark older than the log's start, more changed records than
//! the tenant holds (a rebuild is then no dearer) — answers `None`, and the caller rebuilds
//! from the records, which are the truth.

use std::collections::{BTreeSet, HashMap};

use strata_store::{ChangeLogReads, Reads, TenantKey};
use strata_types::{CollectionName, RecordId};

use crate::EngineError;
use crate::collection_index::CollectionIndex;

/// Entries read per page of the log.
const PAGE: usize = 4096;

/// The log sequence collection `c`'s image (stamped `image_version`) reflects, when its mark
/// belongs to that image and the log still holds every entry after it.
pub(crate) fn replayable_mark(
    r: &impl Reads,
    key: TenantKey,
    c: &CollectionName,
    image_version: u64,
) -> Result<Option<u64>, EngineError> {
    let Some(mark) = r.change_mark(key, c)? else {
        return Ok(None);
    };
    let head = r.change_head(key)?;
    // Entries `first..next` are kept: after `mark.seq` there must be nothing missing.
    let covered = mark.seq + 1 >= head.first && mark.seq < head.next;
    Ok((mark.version == image_version && covered).then_some(mark.seq))
}

/// The records of each collection changed after its mark (`behind`), each once; `None` when
/// there are more than `limit` of them.
pub(crate) fn changed(
    r: &impl Reads,
    key: TenantKey,
    behind: &HashMap<CollectionName, u64>,
    limit: u64,
) -> Result<Option<BTreeSet<(CollectionName, RecordId)>>, EngineError> {
    let mut out = BTreeSet::new();
    let Some(mut after) = behind.values().copied().min() else {
        return Ok(Some(out));
    };
    loop {
        let page = r.changes_after(key, after, PAGE)?;
        let Some(&(last, _)) = page.last() else {
            return Ok(Some(out));
        };
        for (seq, entry) in page {
            if behind
                .get(&entry.collection)
                .is_some_and(|mark| seq > *mark)
            {
                out.insert((entry.collection, entry.id));
            }
        }
        if out.len() as u64 > limit {
            return Ok(None);
        }
        after = last;
    }
}

/// How many of the `changed` records each collection has.
pub(crate) fn per_collection(
    changed: &BTreeSet<(CollectionName, RecordId)>,
) -> HashMap<&CollectionName, usize> {
    let mut counts = HashMap::new();
    for (c, _) in changed {
        *counts.entry(c).or_default() += 1;
    }
    counts
}

/// Brings `collections` up to storage for the `changed` records: a record that is (still) in
/// the collection is upserted as stored now, any other is removed.
pub(crate) fn apply(
    r: &impl Reads,
    key: TenantKey,
    changed: BTreeSet<(CollectionName, RecordId)>,
    collections: &mut HashMap<CollectionName, CollectionIndex>,
) -> Result<(), EngineError> {
    for (collection, id) in changed {
        let Some(ci) = collections.get_mut(&collection) else {
            continue;
        };
        match r.record(key, &id)? {
            Some(record) if record.modality == collection => ci.upsert(&record, true)?,
            _ => ci.remove(&id)?,
        }
    }
    Ok(())
}
