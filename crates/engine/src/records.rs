//! Writing, reading, patching and deleting records.

use std::sync::Arc;

use serde::Serialize;
use strata_auth::{Permission, TenantScope};
use strata_store::codec::MetadataJson;
use strata_store::{DecodeMemo, DeletingReads, MemoReads, Reads, Writer};
use strata_types::{
    Collection, EmbedderRef, Filter, NewRecord, Record, RecordError, RecordId, RecordPatch,
    RequestScope, check_expiry, check_vector, merge_patch, now_millis, validate_metadata,
};

use crate::scan::Vectors;
use crate::scan_steps::Stepped;
use crate::tenant_index::Change;
use crate::visibility::Visibility;
use crate::{Engine, EngineError};

/// What happened to one record of a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PutOutcome {
    pub id: RecordId,
    /// `true` for a new record, `false` when a client id replaced an existing one.
    pub created: bool,
    /// `true` when the run already held the same content and its id was returned instead.
    pub deduplicated: bool,
}

impl Engine {
    /// Writes a batch atomically: all records or none, durable before this returns.
    ///
    /// Records with content and no vector, in a collection the loaded embedder embeds, get their
    /// vectors here, before the transaction opens. This runs the whole write in one call; a
    /// caller on a shared pool runs [`Engine::begin_put`], its embedding steps and
    /// [`Engine::finish_put`] as separate jobs instead.
    pub fn put(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        records: Vec<NewRecord>,
    ) -> Result<Vec<PutOutcome>, EngineError> {
        let pending = self.begin_put(scope, req, records)?;
        self.finish_put(scope, req, pending)
    }

    /// Writes a prepared batch whose texts are embedded.
    pub(crate) fn write_prepared(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        batch: PreparedPut,
    ) -> Result<Vec<PutOutcome>, EngineError> {
        if batch.records.len() <= SHARED_TRANSACTION_RECORDS {
            // May run more than once (see `write_tenant_batched`), so it applies copies.
            return self.write_tenant_batched(scope, "memory.put", |w, changes| {
                batch.apply_copies(w, changes, scope, req)
            });
        }
        self.write_tenant(scope, "memory.put", |w, changes| {
            batch.apply(w, changes, scope, req)
        })
    }

    /// Everything of a write that happens before its transaction, but the embedding: the
    /// credential, then the input, then which records the loaded model embeds.
    ///
    /// `indexed`: a record's error says which record failed (`records[i]`).
    pub(crate) fn prepare_put(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        records: Vec<NewRecord>,
        indexed: bool,
    ) -> Result<PreparedPut, EngineError> {
        // The credential is checked before the input, so a refused caller learns nothing about
        // what a valid request would look like.
        let now = now_millis();
        let vis = Visibility::resolve(scope, req, Permission::Write, now)?;
        let limits = &self.config.limits;
        if records.len() > limits.max_batch {
            return Err(RecordError::BatchTooLarge {
                count: records.len(),
                max: limits.max_batch,
            }
            .into());
        }
        if records.is_empty() {
            return Err(RecordError::EmptyBatch {
                max: limits.max_batch,
            }
            .into());
        }
        let at = RecordAt { indexed };
        let mut ids = std::collections::HashMap::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            // Imports skip the expiry check (see `strata_types::check_expiry`), so it is not
            // part of `validate`.
            r.validate(limits)
                .and_then(|()| check_expiry(r.expires_at, now))
                .map_err(|e| at.error(i, e.into()))?;
            if let Some(id) = &r.id
                && let Some(first) = ids.insert(id, i)
            {
                let e = RecordError::DuplicateId {
                    id: id.clone(),
                    first,
                };
                return Err(at.error(i, e.into()));
            }
        }
        let embedded = self.records_to_embed(scope, &records)?;
        let model = self.loaded_embedder().map(|(_, id)| id);
        let metadata = records
            .iter()
            .map(|r| MetadataJson::of(&r.metadata))
            .collect::<Result<_, _>>()?;
        Ok(PreparedPut {
            vis,
            at,
            records,
            metadata,
            embedded,
            model,
            collections: Arc::clone(&self.memos.collections),
        })
    }

    /// A record by id, with its vector. Missing, foreign and invisible records are all
    /// [`EngineError::NotFound`].
    pub fn get(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        id: &RecordId,
    ) -> Result<Record, EngineError> {
        self.get_with(scope, req, id, Vectors::Read)
    }

    /// [`Engine::get`], the record's vector read or skipped (`vector: None`).
    pub fn get_with(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        id: &RecordId,
        vectors: Vectors,
    ) -> Result<Record, EngineError> {
        let vis = Visibility::resolve(scope, req, Permission::Read, now_millis())?;
        self.read_tenant(scope, Permission::Read, |r| {
            visible(vectors.record(r, scope.key(), id)?, &vis)
        })
    }

    /// Applies `patch` to a visible record the request may write (`Visibility::check_writable`)
    /// and returns the new version.
    pub fn patch(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        id: &RecordId,
        patch: RecordPatch,
    ) -> Result<Record, EngineError> {
        let now = now_millis();
        let vis = Visibility::resolve(scope, req, Permission::Write, now)?;
        patch.validate(&self.config.limits)?;
        check_expiry(patch.expires_at.flatten(), now)?;
        let embedded = self.embed_patched_content(scope, &vis, id, &patch)?;
        self.write_tenant(scope, "memory.patch", |w, changes| {
            // Judged at the commit, not at arrival (the embedding and the write lock come
            // between): a record that expired meanwhile is gone for every reader, and a patch
            // clearing its expiry must not bring it back.
            let vis = vis.at_commit();
            let now = vis.now;
            let mut record = writable(w.record(scope.key(), id)?, &vis)?;
            if let Some(v) = patch.vector {
                let c = collection_of(w, scope, &record)?;
                check_vector(&v, &c)?;
                record.vector = Some(v);
            } else if let Some(content) = &patch.content
                && record.content.as_ref() != Some(content)
            {
                // The vector was derived from the old content: re-embed it, or drop it when
                // this server cannot embed for the collection (never keep a stale one).
                let c = collection_of(w, scope, &record)?;
                if c.embedder.is_some() {
                    let loaded = self.loaded_embedder();
                    let embeds = crate::embedding::embeds(loaded.as_ref().map(|(_, id)| id), &c)?;
                    record.vector = match loaded.filter(|_| embeds) {
                        Some((_, model)) => Some(embedded.vector_by(&model)?),
                        None => None,
                    };
                }
            }
            if let Some(tokens) = patch.user_tokens {
                record.user_tokens = vis.write_tokens(Some(&tokens))?;
            }
            match &patch.metadata {
                // `"metadata": null`: a merge patch that is not an object replaces the target
                // (RFC 7396); a record's metadata is always an object, so it becomes `{}`.
                Some(None) => record.metadata.clear(),
                Some(Some(m)) => {
                    merge_patch(&mut record.metadata, m);
                    validate_metadata(&record.metadata, &self.config.limits)?;
                }
                None => {}
            }
            if let Some(target) = &patch.move_to_domain {
                // The credential must be allowed to write in the target domain too.
                let to = RequestScope {
                    memory_domain: Some(target.clone()),
                    ..req.clone()
                };
                Visibility::resolve(scope, &to, Permission::Write, now)?;
                record.memory_domain = target.clone();
            }
            // `Some(None)` (a `null` in the body) clears a field; `None` keeps it.
            record.kind = patch.kind.unwrap_or(record.kind);
            record.content = patch.content.or(record.content);
            record.run_id = patch.run_id.unwrap_or(record.run_id);
            record.memory_scope = patch.memory_scope.unwrap_or(record.memory_scope);
            record.expires_at = patch.expires_at.unwrap_or(record.expires_at);
            record.confidence = patch.confidence.unwrap_or(record.confidence);
            record.updated_at = now;
            let moved = record.memory_domain != vis.domain;
            store_record(w, changes, scope, &record)?;
            if moved {
                crate::links::remove_links_leaving(w, scope, &record.id, &record.memory_domain)?;
            }
            Ok(record)
        })
    }

    /// The vector of a patch's new content, computed before the patch's transaction: a forward
    /// pass takes milliseconds, and inside the transaction it would hold the storage write
    /// lock, which every other tenant's writes wait for. Read from a snapshot; the transaction
    /// decides again whether the vector is wanted ([`PatchVector::vector_by`]).
    fn embed_patched_content(
        &self,
        scope: &TenantScope,
        vis: &Visibility,
        id: &RecordId,
        patch: &RecordPatch,
    ) -> Result<PatchVector, EngineError> {
        let (Some(content), None, Some((embedder, model))) =
            (&patch.content, &patch.vector, self.loaded_embedder())
        else {
            return Ok(PatchVector(None));
        };
        // Whatever this read meets (no such record, a hidden one) is the transaction's to
        // report: it reads the record again. With the patch's own permission: a write-only
        // credential may patch.
        let wanted = self.read_tenant(scope, Permission::Write, |r| {
            let Some(record) = r.record(scope.key(), id)?.filter(|r| vis.sees(r)) else {
                return Ok(false);
            };
            if record.content.as_ref() == Some(content) {
                return Ok(false);
            }
            let Some(c) = r.collection(scope.key(), &record.modality)? else {
                return Ok(false);
            };
            Ok(crate::embedding::embeds(Some(&model), &c).unwrap_or(false))
        });
        if !matches!(wanted, Ok(true)) {
            return Ok(PatchVector(None));
        }
        let vector = crate::embedding::embed(embedder, &[content])?.pop();
        Ok(PatchVector(vector.map(|v| (v, model))))
    }

    /// Deletes a visible record the request may write, by id; one past its `expires_at` too
    /// (`Visibility::with_expired`: it is still the caller's until the sweep takes it).
    pub fn delete(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        id: &RecordId,
    ) -> Result<(), EngineError> {
        let vis = Visibility::resolve(scope, req, Permission::Write, now_millis())?.with_expired();
        self.write_tenant(scope, "memory.delete", |w, changes| {
            writable(w.record(scope.key(), id)?, &vis)?;
            delete_record(w, changes, scope, id)
        })
    }

    /// Deletes every visible record that matches `filter` and that the request may write,
    /// those past their `expires_at` included. Returns how many. Runs every step of
    /// [`Engine::begin_delete_where`] in this call (its semantics are there: a scan outside the
    /// write transaction, then transactions of at most a thousand records, each record checked
    /// again in its own); a caller on the shared pool runs them as separate jobs instead.
    pub fn delete_where(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        filter: &Filter,
    ) -> Result<u64, EngineError> {
        let mut pending = self.begin_delete_where(scope, req, filter.clone())?;
        loop {
            match self.delete_where_step(pending)? {
                Stepped::Done(n) => return Ok(n),
                Stepped::More(p) => pending = *p,
            }
        }
    }
}

/// A validated batch, ready to be written in a transaction once the records marked `embedded`
/// have their vectors (`crate::put_steps`).
pub(crate) struct PreparedPut {
    vis: Visibility,
    at: RecordAt,
    pub(crate) records: Vec<NewRecord>,
    /// Each record's metadata as stored, encoded before the transaction (see `MetadataJson`).
    metadata: Vec<MetadataJson>,
    /// Which records get their vectors from the loaded embedder.
    pub(crate) embedded: Vec<bool>,
    model: Option<EmbedderRef>,
    /// The engine's decoded collections (see `write_memo`).
    collections: Arc<DecodeMemo<Collection>>,
}

/// Writes of at most this many records share their storage transaction with concurrent
/// writes (see `Engine::write_tenant_batched`); a larger batch amortises its own, and would
/// hold the others' commit back while it runs.
const SHARED_TRANSACTION_RECORDS: usize = 8;

impl PreparedPut {
    /// The request's visibility as of now, in the write's transaction: the embedding before
    /// it may have taken minutes (each step queued in the tenant's fair share), and what has
    /// expired, and the new records' times, are those of the commit, not of the request's
    /// arrival.
    fn vis_at_commit(&self) -> Visibility {
        self.vis.at_commit()
    }

    /// [`PreparedPut::apply`] of copies of the records, so that it can run again.
    pub(crate) fn apply_copies(
        &self,
        w: &mut Writer<'_>,
        changes: &mut Vec<Change>,
        scope: &TenantScope,
        req: &RequestScope,
    ) -> Result<Vec<PutOutcome>, EngineError> {
        let (vis, model) = (&self.vis_at_commit(), self.model.as_ref());
        self.records
            .iter()
            .zip(&self.metadata)
            .zip(&self.embedded)
            .enumerate()
            .map(|(i, ((r, metadata), embedded))| {
                let embedded_by = model.filter(|_| *embedded);
                let new = (r.clone(), metadata);
                let by = Embedding {
                    embedded_by,
                    loaded: model,
                };
                put_one(w, changes, scope, vis, req, new, by, &self.collections)
                    .map_err(|e| self.at.error(i, e))
            })
            .collect()
    }

    pub(crate) fn apply(
        self,
        w: &mut Writer<'_>,
        changes: &mut Vec<Change>,
        scope: &TenantScope,
        req: &RequestScope,
    ) -> Result<Vec<PutOutcome>, EngineError> {
        let vis = self.vis_at_commit();
        let (model, at) = (self.model.as_ref(), self.at);
        self.records
            .into_iter()
            .zip(&self.metadata)
            .zip(self.embedded)
            .enumerate()
            .map(|(i, ((r, metadata), embedded))| {
                let by = Embedding {
                    embedded_by: model.filter(|_| embedded),
                    loaded: model,
                };
                put_one(
                    w,
                    changes,
                    scope,
                    &vis,
                    req,
                    (r, metadata),
                    by,
                    &self.collections,
                )
                .map_err(|e| at.error(i, e))
            })
            .collect()
    }
}

/// Whether a write's record errors say which record of the batch failed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordAt {
    indexed: bool,
}

impl RecordAt {
    /// `e`, of the record at `index`: a record's own fault gets its place in the batch, whatever
    /// its status (a 403 or 409 as well as a 400), as a message that starts with `records[i]: `.
    /// Errors that are not one record's (storage, a shutdown) and those without a message of
    /// their own (a missing collection, which names itself) stay as they are.
    fn error(self, index: usize, e: EngineError) -> EngineError {
        if !self.indexed {
            return e;
        }
        let at = |m: String| format!("records[{index}]: {m}");
        match e {
            EngineError::InvalidRecord(error) => EngineError::InvalidRecordAt { index, error },
            EngineError::BadRequest(m) => EngineError::BadRequest(at(m)),
            EngineError::ScopeForbidden(m) => EngineError::ScopeForbidden(at(m)),
            EngineError::IdConflict(m) => EngineError::IdConflict(at(m)),
            other => other,
        }
    }
}

/// Stores a record and reports the change for the indexes.
pub(crate) fn store_record(
    w: &mut Writer<'_>,
    changes: &mut Vec<Change>,
    scope: &TenantScope,
    record: &Record,
) -> Result<(), EngineError> {
    let metadata = MetadataJson::of(&record.metadata)?;
    store_encoded(w, changes, scope, record.clone(), &metadata).map(drop)
}

/// [`store_record`] of a record whose metadata was encoded before the transaction, moved into
/// its change rather than copied: a put's records are built in its transaction, and their
/// metadata can be most of a large batch's bytes (see `MetadataJson`). Returns the stored
/// record, as its change holds it.
pub(crate) fn store_encoded<'c>(
    w: &mut Writer<'_>,
    changes: &'c mut Vec<Change>,
    scope: &TenantScope,
    record: Record,
    metadata: &MetadataJson,
) -> Result<&'c Record, EngineError> {
    if let Some(old) = w.put_record_encoded(scope.key(), &record, metadata)? {
        changes.push(Change::Remove(old));
    }
    changes.push(Change::Upsert {
        record,
        metadata_len: metadata.len(),
    });
    match changes.last() {
        Some(Change::Upsert { record, .. }) => Ok(record),
        _ => unreachable!("invariant: the change was just pushed"),
    }
}

/// Deletes a record and reports the change for the indexes.
pub(crate) fn delete_record(
    w: &mut Writer<'_>,
    changes: &mut Vec<Change>,
    scope: &TenantScope,
    id: &RecordId,
) -> Result<(), EngineError> {
    delete_record_and_links(w, changes, scope, id).map(|_| ())
}

/// [`delete_record`], answering how many stored links went with the record (a delete by
/// filter bounds a transaction's work by them).
pub(crate) fn delete_record_and_links(
    w: &mut Writer<'_>,
    changes: &mut Vec<Change>,
    scope: &TenantScope,
    id: &RecordId,
) -> Result<usize, EngineError> {
    let Some(old) = w.delete_record(scope.key(), id)? else {
        return Ok(0);
    };
    changes.push(Change::Remove(old));
    crate::links::remove_links_of(w, scope, id)
}

/// A fresh server-assigned id (UUIDv7, hyphenated), formatted on the stack and copied once.
fn new_record_id() -> RecordId {
    let mut buf = uuid::Uuid::encode_buffer();
    RecordId::from_uuid_str(uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf))
}

fn visible(record: Option<Record>, vis: &Visibility) -> Result<Record, EngineError> {
    record.filter(|r| vis.sees(r)).ok_or(EngineError::NotFound)
}

/// A record the request sees and may write: one it cannot see is `NotFound` (a foreign id looks
/// like a missing one), one it sees but may not write is `ScopeForbidden`.
pub(crate) fn writable(record: Option<Record>, vis: &Visibility) -> Result<Record, EngineError> {
    let record = visible(record, vis)?;
    vis.check_writable(&record)?;
    Ok(record)
}

fn collection_of(
    w: &Writer<'_>,
    scope: &TenantScope,
    record: &Record,
) -> Result<strata_types::Collection, EngineError> {
    w.collection(scope.key(), &record.modality)?
        .ok_or_else(|| EngineError::CollectionNotFound(record.modality.clone()))
}

/// A patch's new content embedded before its transaction, with the model that embedded it.
struct PatchVector(Option<(Vec<f32>, EmbedderRef)>);

impl PatchVector {
    /// The vector, for a collection that the transaction found embedding with `model`.
    fn vector_by(&self, model: &EmbedderRef) -> Result<Vec<f32>, EngineError> {
        match &self.0 {
            Some((v, by)) if by == model => Ok(v.clone()),
            // The record or its collection changed between the snapshot and the transaction
            // (its content was patched back to this text, its collection began embedding).
            _ => Err(EngineError::Reembed(
                "the record or its collection changed while this patch's content was being \
                 embedded; send it again"
                    .into(),
            )),
        }
    }
}

/// What embedded a record being written, and the server's model when the write was prepared.
#[derive(Clone, Copy)]
struct Embedding<'a> {
    /// The model that gave the record its vector, if the server embedded it.
    embedded_by: Option<&'a EmbedderRef>,
    loaded: Option<&'a EmbedderRef>,
}

#[allow(clippy::too_many_arguments)]
fn put_one(
    w: &mut Writer<'_>,
    changes: &mut Vec<Change>,
    scope: &TenantScope,
    vis: &Visibility,
    req: &RequestScope,
    (new, metadata): (NewRecord, &MetadataJson),
    by: Embedding<'_>,
    collections: &DecodeMemo<Collection>,
) -> Result<PutOutcome, EngineError> {
    let Embedding {
        embedded_by,
        loaded,
    } = by;
    let modality = new.modality.unwrap_or_else(|| {
        strata_types::CollectionName::parse("text").expect("invariant: literal name is valid")
    });
    let mut record = Record {
        id: new.id.clone().unwrap_or_else(new_record_id),
        modality,
        kind: new.kind,
        content: new.content,
        vector: new.vector,
        user_tokens: vis.write_tokens(new.user_tokens.as_deref())?,
        memory_domain: vis.domain.clone(),
        run_id: new.run_id.or_else(|| req.run_id.clone()),
        memory_scope: new.memory_scope.or_else(|| req.memory_scope.clone()),
        metadata: new.metadata,
        created_at: vis.now,
        updated_at: vis.now,
        expires_at: new.expires_at,
        confidence: new.confidence.unwrap_or_default(),
    };
    let collection = w
        .collection_memo(scope.key(), &record.modality, collections)?
        .ok_or_else(|| EngineError::CollectionNotFound(record.modality.clone()))?;
    if new.confidence.is_none() {
        record.confidence = collection.memory.initial();
    }
    if let Some(v) = &record.vector {
        check_vector(v, &collection)?;
    }
    if let Some(model) = embedded_by {
        // The collection may have been replaced since the vector was computed.
        crate::embedding::embeds(Some(model), &collection)?;
    } else if record.vector.is_none()
        && record.content.is_some()
        && loaded.is_some_and(|l| collection.embedder.as_ref() == Some(l))
    {
        // The collection took the loaded model (a re-embed's switch) after this write was
        // prepared without embedding its text: stored now, the record would be the one text
        // of the collection without a vector, which vector search never finds.
        return Err(EngineError::Reembed(format!(
            "collection {} began embedding its text with the built-in model while this write \
             was under way; send it again",
            collection.name
        )));
    }
    if let (Some(got), Some(declared)) = (&new.vector_model, &collection.embedder)
        && got != &declared.model_id
    {
        return Err(RecordError::VectorModelMismatch {
            collection: collection.name.clone(),
            expected: declared.model_id.clone(),
            got: got.clone(),
        }
        .into());
    }
    let key = scope.key();
    if new.id.is_some() {
        // Read once as stored, then hidden as the store's record reads hide it.
        let mut existing = match w.stored_record(key, &record.id)? {
            Some(stored) if w.hides(key, &stored)? => {
                // A record of a collection being deleted holds the id, hidden from every
                // read: it goes now, with its links, as that delete would take it, and the
                // write creates a record that none of them survives into.
                delete_record(w, changes, scope, &record.id)?;
                None
            }
            stored => stored,
        };
        if existing.as_ref().is_some_and(|e| e.is_expired(vis.now)) {
            // An expired record is gone for every reader and waits only for the sweep: its id
            // is free. It goes now, with its links, as the sweep would take it; the write
            // then creates a record, which no expired link or field survives into.
            delete_record(w, changes, scope, &record.id)?;
            existing = None;
        }
        if let Some(existing) = existing {
            if !vis.sees(&existing) {
                return Err(EngineError::IdConflict(format!(
                    "id {} is taken by a record outside this request's scope",
                    record.id
                )));
            }
            // Replacing a record is writing it: a tenant-shared or co-owned record stays out of
            // reach of a credential bound to user tokens, whatever the new tokens.
            vis.check_writable(&existing)?;
            record.created_at = existing.created_at;
            let stored = store_encoded(w, changes, scope, record, metadata)?;
            return Ok(PutOutcome {
                id: stored.id.clone(),
                created: false,
                deduplicated: false,
            });
        }
    } else if let Some(existing) = w.dedup_target(key, &record)?
        && w.record(key, &existing)?
            .is_some_and(|e| !e.is_expired(vis.now))
    {
        return Ok(PutOutcome {
            id: existing,
            created: false,
            deduplicated: true,
        });
    }
    // A dedup entry naming an expired copy falls through: the write creates a record, and the
    // entry moves to it (the expired copy's sweep leaves an entry that is no longer its own).

    let stored = store_encoded(w, changes, scope, record, metadata)?;
    if collection.memory.link_runs == Some(true) {
        crate::links::link_to_run(w, scope, stored, vis.now)?;
    }
    Ok(PutOutcome {
        id: stored.id.clone(),
        created: true,
        deduplicated: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(hash: &str) -> EmbedderRef {
        EmbedderRef {
            model_id: "m".into(),
            weights_hash: hash.into(),
        }
    }

    /// A batch's records are encoded before its transaction: the storage write lock, which
    /// every tenant's writes wait for, is not held for work proportional to the batch's bytes.
    /// Stored as given, and charged as a recount charges them.
    #[test]
    fn a_batch_encodes_its_records_metadata_before_its_transaction() {
        use strata_store::codec::metadata_encoded_in_write_path as encoded_inside;
        let (_dir, engine, scope) = crate::test_support::engine_with_tenant("acme");
        let metadata = |i: usize| {
            let m = serde_json::json!({"topic": "tea", "n": i, "note": "naïve \"q\"\n"});
            m.as_object().cloned().unwrap()
        };
        // More records than share a transaction with other writes: this one runs on this
        // thread, whose count is read.
        let records = |round: usize| -> Vec<NewRecord> {
            (0..SHARED_TRANSACTION_RECORDS * 3)
                .map(|i| NewRecord {
                    id: Some(RecordId::parse(format!("r{i}")).unwrap()),
                    content: Some(format!("note {i}")),
                    metadata: metadata(i * round),
                    ..Default::default()
                })
                .collect()
        };
        let before = encoded_inside();
        // Written, then written over (the replaced records' metadata charged back by the
        // length of their stored text, which is not parsed): stored as given, and charged as
        // a recount charges them.
        for round in [1, 1000] {
            let put = engine
                .put(&scope, &RequestScope::default(), records(round))
                .unwrap();
            assert_eq!(encoded_inside(), before, "encoded inside the transaction");
            for (i, outcome) in put.iter().enumerate() {
                let got = engine
                    .get(&scope, &RequestScope::default(), &outcome.id)
                    .unwrap();
                assert_eq!(got.metadata, metadata(i * round));
            }
            let op = strata_auth::OperatorScope::for_tests();
            let report = engine.verify_tenant(&op, scope.tenant()).unwrap();
            assert!(report.ok, "{:?}", report.problems);
            assert_eq!(report.usage_stored, report.usage_recounted);
        }
        // The count is live: a patch encodes its one record inside its transaction.
        let patch = RecordPatch {
            metadata: Some(Some(metadata(99))),
            ..Default::default()
        };
        engine
            .patch(
                &scope,
                &RequestScope::default(),
                &RecordId::parse("r0").unwrap(),
                patch,
            )
            .unwrap();
        assert!(encoded_inside() > before);
    }

    #[test]
    fn a_patch_vector_is_used_only_for_the_model_that_made_it() {
        let made = PatchVector(Some((vec![0.5, 0.5], model("a"))));
        assert_eq!(made.vector_by(&model("a")).unwrap(), vec![0.5, 0.5]);
        // Another model, or none computed (the snapshot saw no need): send again, never a
        // record stored without the vector its collection expects.
        assert!(matches!(
            made.vector_by(&model("b")),
            Err(EngineError::Reembed(_))
        ));
        assert!(matches!(
            PatchVector(None).vector_by(&model("a")),
            Err(EngineError::Reembed(_))
        ));
    }
}
