//! The delete of a collection, in steps. Deleting a collection and every record of it in one
//! transaction read all the tenant's records under the write lock: with 100,000 records that
//! held it for seconds, and every shared tenant's writes waited. Instead:
//! 1. one short transaction moves the collection's row to a marker row
//!    (`Writer::mark_collection_deleting`), deletes what its index kept beside its records
//!    (index snapshot, search image, change-log mark: nothing loads or checks an index of a
//!    collection that is missing) and drops its in-memory index: from its commit on,
//!    the collection is missing to every write, search and listing, and the store's record
//!    reads hide its records still stored (`strata_store::DeletingReads`), so no read returns,
//!    counts or exports one;
//! 2. its records are found by a read scan in steps on one storage snapshot (renewed as a
//!    count's is, `crate::scan_steps::KeptSnapshot`), outside any transaction; the snapshot
//!    begins after the mark committed and nothing can write into a marked collection, so the
//!    scan finds every record it holds;
//! 3. they are deleted in transactions of at most `DELETE_CHUNK` records (fewer when their
//!    links reach `DELETE_CHUNK_LINKS`), with their links, usage given back, each chunk audited
//!    (`crate::delete_steps::DeleteChunks`);
//! 4. a last short transaction removes the marker (and a saved index a mark from an older
//!    build left); its graph files go after it (no snapshot names them since the mark: a
//!    save of the tenant meanwhile deletes them too).
//!
//! A crash, an error or a caller that stops running the steps part-way (the HTTP route runs
//! them to the end even when its client hangs up) leaves the collection marked: still missing to everyone, its name refused to a create (409, saying a repeated
//! delete finishes it), its remaining records hidden and still counted in the tenant's usage.
//! The same delete again resumes from step 2 and answers only what it deleted itself. Nothing
//! finishes one on its own: the delete is the operator's or client's to repeat.
//!
//! Two deletes of one name may overlap (the second resumes the first's mark). Once one has
//! finished, the name is free and a client may create the collection again and write records
//! with the same ids: so every write of the other one first checks, in its own transaction,
//! that the marker it began with is still there, the same incarnation of the collection (the
//! whole row, creation time included), and stops without writing anything when it is not.

use strata_auth::{Permission, TenantScope};
use strata_store::{DeletingReads, Reads, TenantKey, Writer};
use strata_types::{Collection, CollectionName, RecordId};

use crate::delete_steps::{DELETE_CHUNK, DELETE_CHUNK_LINKS, DeleteChunks};
use crate::scan_steps::{Budget, KeptSnapshot, STEP_SIZE, StepSize, Stepped};
use crate::tenant_index::Change;
use crate::whole_tenant::{Reach, require_whole_tenant};
use crate::{Engine, EngineError};

/// Every step is audited under this action, as the one-transaction delete was.
const ACTION: &str = "collection.delete";

/// A collection delete under way (see [`Engine::begin_delete_collection`]).
pub struct PendingCollectionDelete {
    scope: TenantScope,
    name: CollectionName,
    /// The collection as its marker holds it: the incarnation this delete deletes.
    marked: Collection,
    phase: Phase,
    /// Records a chunk deletes at most ([`DELETE_CHUNK`]; tests lower it).
    pub(crate) chunk: usize,
    /// Link rows after which a chunk ends ([`DELETE_CHUNK_LINKS`]; tests lower it).
    pub(crate) chunk_links: usize,
    /// What one step of the scan may spend ([`STEP_SIZE`]; tests lower it).
    pub(crate) size: StepSize,
    deleted: u64,
}

enum Phase {
    /// Finding the collection's records, in id order after `after`.
    Scanning {
        kept: Box<KeptSnapshot>,
        after: Option<RecordId>,
        doomed: Vec<RecordId>,
    },
    Deleting(DeleteChunks),
    /// Removing the marker and what the collection kept beside its records.
    Finishing,
}

impl PendingCollectionDelete {
    /// Whether the next step writes (deletes a chunk, or finishes) rather than reads.
    pub fn writes_next(&self) -> bool {
        !matches!(self.phase, Phase::Scanning { .. })
    }
}

impl Engine {
    /// Begins (or resumes) the delete of collection `name` and every record in it, of every
    /// domain and principal; so it needs an unbound `admin` credential with `all_principals`.
    /// Writes the mark (module docs, step 1) in its own transaction, or finds it already
    /// there; `CollectionNotFound` when there is neither collection nor mark. Deletes no
    /// record: [`Engine::delete_collection_step`] does.
    pub fn begin_delete_collection(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
    ) -> Result<PendingCollectionDelete, EngineError> {
        require_whole_tenant(
            scope,
            Permission::Admin,
            Reach::EveryPrincipal,
            "deleting a collection",
        )?;
        let key = scope.key();
        let marked = self.write_tenant_inner(scope, ACTION, true, |w, changes| {
            let step = if w.mark_collection_deleting(key, name)?.is_some() {
                crate::snapshot::delete(w, key, name)?;
                crate::search_image::delete(w, key, name)?;
                crate::reembed_record::delete(w, key, name)?;
                w.delete_change_mark(key, name)?;
                changes.push(Change::DropCollection(name.clone()));
                "begun"
            } else {
                "resumed"
            };
            // The marker as stored, which is what every later step decodes and compares
            // with: the collection decoded from its own row may not survive one more
            // encoding bit for bit (a float in its memory defaults).
            let Some(marked) = w.collection_deleting(key, name)? else {
                return Err(EngineError::CollectionNotFound(name.clone()));
            };
            let detail = serde_json::json!({"collection": name, "step": step});
            Ok((marked, Some(detail)))
        })?;
        // Taken after the mark committed: it holds every record the collection will ever hold.
        let kept = KeptSnapshot::take(self, scope, Permission::Admin)?;
        Ok(PendingCollectionDelete {
            scope: scope.clone(),
            name: name.clone(),
            marked,
            phase: Phase::Scanning {
                kept: Box::new(kept),
                after: None,
                doomed: Vec::new(),
            },
            chunk: DELETE_CHUNK,
            chunk_links: DELETE_CHUNK_LINKS,
            size: STEP_SIZE,
            deleted: 0,
        })
    }

    /// The next step of `pending`: a step of its scan, one transaction deleting the next chunk
    /// of what the scan found, or the last transaction. Done with how many records it deleted.
    pub fn delete_collection_step(
        &self,
        mut pending: PendingCollectionDelete,
    ) -> Result<Stepped<PendingCollectionDelete, u64>, EngineError> {
        let (scope, name, marked) = (&pending.scope, &pending.name, &pending.marked);
        pending.phase = match pending.phase {
            Phase::Scanning {
                mut kept,
                after,
                mut doomed,
            } => {
                let key = scope.key();
                let r = kept.for_step(self)?;
                let mut budget = Budget::new(pending.size, None);
                let mut paused = None;
                // Every record of the tenant is read (a collection has no index of its own
                // in storage), a step's budget at a time, outside any transaction; only its
                // id and collection are needed, so its vector is skipped, not copied.
                for record in r.stored_records_without_vector(key, after.as_ref())? {
                    let record = record?;
                    if &record.modality == name {
                        doomed.push(record.id.clone());
                    }
                    if budget.charge() {
                        paused = Some(record.id);
                        break;
                    }
                }
                match paused {
                    Some(after) => Phase::Scanning {
                        kept,
                        after: Some(after),
                        doomed,
                    },
                    // The scan's snapshot is let go here, before any transaction.
                    None if doomed.is_empty() => Phase::Finishing,
                    None => Phase::Deleting(DeleteChunks::new(
                        doomed,
                        pending.chunk,
                        pending.chunk_links,
                    )),
                }
            }
            Phase::Deleting(mut chunks) => {
                // Read as stored: the store's other reads hide a marked collection's records.
                // One that left the collection since the scan (its id taken by a write into
                // another collection) is not this delete's.
                let Some((n, over)) = chunks.delete_next_while(
                    self,
                    scope,
                    ACTION,
                    |w, key| still_marked(w, key, marked),
                    |w, key, id| w.stored_record(key, id),
                    |r| &r.modality == name,
                )?
                else {
                    // Another delete of it finished first: the collection of that name now,
                    // if any, is a new one, not this delete's.
                    return Ok(Stepped::Done(pending.deleted));
                };
                pending.deleted += n;
                if over {
                    Phase::Finishing
                } else {
                    Phase::Deleting(chunks)
                }
            }
            Phase::Finishing => {
                self.finish_delete_collection(scope, marked, pending.deleted)?;
                return Ok(Stepped::Done(pending.deleted));
            }
        };
        Ok(Stepped::More(Box::new(pending)))
    }

    /// Step 4 (module docs): the marker, then the collection's graph files. Nothing, when
    /// another delete of it finished first (see the module docs): what bears its name now is
    /// a new collection's.
    fn finish_delete_collection(
        &self,
        scope: &TenantScope,
        marked: &Collection,
        deleted: u64,
    ) -> Result<(), EngineError> {
        let (key, name) = (scope.key(), &marked.name);
        let superseded = std::cell::Cell::new(false);
        let done = self.write_tenant_inner(scope, ACTION, true, |w, changes| {
            if !still_marked(w, key, marked)? {
                // An error rolls the transaction back; `superseded` tells it from a real one.
                superseded.set(true);
                return Err(EngineError::CollectionNotFound(name.clone()));
            }
            let unmarked = w.unmark_collection_deleting(key, name)?;
            // The mark took the saved index; a mark written by a build from before it did is
            // finished here, so no saved index outlives its collection (for one created again
            // under its name to load). Nothing writes one for a marked collection meanwhile
            // (a save writes only the collections that exist), so this deletes nothing else.
            crate::snapshot::delete(w, key, name)?;
            crate::search_image::delete(w, key, name)?;
            crate::reembed_record::delete(w, key, name)?;
            w.delete_change_mark(key, name)?;
            if unmarked {
                changes.push(Change::DropCollection(name.clone()));
            }
            let detail = serde_json::json!({
                "collection": name,
                "step": "finished",
                "records_deleted": deleted,
            });
            Ok(((), Some(detail)))
        });
        match done {
            Err(_) if superseded.get() => return Ok(()),
            done => done?,
        }
        self.delete_unnamed_files(scope);
        Ok(())
    }

    /// A deleted collection's graph and image files, which no row names now: deleted as a
    /// save deletes its old files, under the tenant's save order and keeping every file a
    /// committed row names, not every file of the collection's name. A collection created
    /// again under that name meanwhile may have a save's new files already. Best effort: a
    /// file left behind is deleted by the tenant's next load, save or purge; so is one of a
    /// tenant with no slot (purged meanwhile, which a new slot would bring back to the
    /// registry, or never loaded, whose load deletes them).
    pub(crate) fn delete_unnamed_files(&self, scope: &TenantScope) {
        let Some(slot) = self.indexes.get(scope.key()) else {
            return;
        };
        let _saving = crate::registry::lock_slot(&slot.saving);
        let _ = crate::index_save::delete_unnamed_files(&self.store, scope.key());
    }
}

/// Whether the marker of `marked`'s name still holds this very incarnation of it.
fn still_marked(w: &Writer<'_>, key: TenantKey, marked: &Collection) -> Result<bool, EngineError> {
    Ok(w.collection_deleting(key, &marked.name)?.as_ref() == Some(marked))
}

#[cfg(test)]
#[path = "collection_delete_tests.rs"]
mod tests;
