//! Changing a collection's model: a dry-run plan, then an online re-embed with the server's
//! loaded model.
//!
//! A collection never holds vectors of two models, so the new vectors are built aside (in the
//! job, in memory) while the collection keeps serving reads and writes on its old vectors, and
//! the switch is one transaction that writes every record's new vector and the collection's new
//! model (and dimension) together. Records written or changed during the job are caught up
//! before that transaction, the last few inside it, so nothing acknowledged is left on the old
//! model. A crash before the switch leaves the collection whole on its old model (the staged
//! vectors are lost and the job must be started again); after it, whole on the new one. The
//! status of each collection's last job is stored (`crate::reembed_record`), so that after a
//! restart it reads as it ended, or as interrupted.
//!
//! The engine does the work in steps ([`Engine::reembed_step`], then
//! [`Engine::reembed_finish`]); `strata-api` runs each step on the fair-queueing pool in the
//! tenant's share, so a re-embed is charged to its tenant like any other embedding.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use strata_auth::{Permission, TenantScope};
use strata_store::{Reader, Reads, TenantKey};
use strata_types::{Collection, CollectionName, EmbedderRef, Millis, RecordId, now_millis};

use crate::embedding::embed;
use crate::put_steps::{STEP_TOKENS, estimated_tokens};
use crate::records::store_record;
use crate::reembed_record::{self, Stored};
use crate::tenant_index::Change;
use crate::whole_tenant::{Reach, require_whole_tenant};
use crate::{Engine, EngineError};

/// Texts embedded per step, at most: one step is one job on the fair pool, short enough that
/// other tenants' work interleaves with a long re-embed. Long texts end a step sooner, at
/// about the word pieces of one write's embedding step (`crate::put_steps::STEP_TOKENS`).
const STEP_TEXTS: usize = 32;
/// Texts the dry run embeds to measure this machine's throughput on this collection's text.
const CALIBRATION_TEXTS: usize = 16;
/// At most this many records changed since they were staged are embedded at the switch,
/// under the tenant's write-order lock (its writes wait); more are caught up before, with no
/// lock held.
const MAX_CATCH_UP_IN_SWITCH: usize = 64;
/// Catch-up rounds before the switch; a tenant writing faster than its re-embed keeps up with
/// gets a conflict at the switch, and starts the re-embed again later.
const CATCH_UP_ROUNDS: usize = 3;

/// What a re-embed of a collection would do, without doing it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReembedPlan {
    pub collection: CollectionName,
    /// The collection's model now (absent: client vectors of an undeclared model, or none).
    pub from_model: Option<EmbedderRef>,
    /// The server's loaded model, which the re-embed switches to.
    pub to_model: EmbedderRef,
    pub from_dim: u32,
    pub to_dim: u32,
    /// Records with content, each of which gets a new vector.
    pub records: u64,
    /// Bytes of their content (UTF-8).
    pub text_bytes: u64,
    /// Records with a vector and no content: they cannot be re-embedded, and a re-embed is
    /// refused while any exists (delete them or give them content first).
    pub vector_only_records: u64,
    /// Throughput measured just now by embedding up to 16 of the collection's texts.
    pub measured_texts_per_sec: f64,
    /// `text_bytes` at the measured bytes per second, on one core, with the pool otherwise idle.
    pub estimated_seconds: f64,
    /// Records with content and no vector (written while the server ran without its
    /// embedder): a re-embed gives them one, even when the collection is already current.
    pub records_without_vector: u64,
    /// The collection already declares the loaded model and every record with content has its
    /// vector: there is nothing to do.
    pub already_current: bool,
}

/// Where a collection's re-embed stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReembedState {
    /// No re-embed of this collection is known: none ran since it was created, or only
    /// before re-embed statuses were stored.
    None,
    Running,
    Done,
    Failed,
}

/// A re-embed's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReembedStatus {
    pub collection: CollectionName,
    pub state: ReembedState,
    /// The collection's model now; it changes only when a re-embed is done.
    pub model: Option<EmbedderRef>,
    /// The model the running (or last) re-embed switches to.
    pub target_model: Option<EmbedderRef>,
    /// Texts the job has to embed, as far as known: the records with content when it
    /// started, grown by what writes during the job added (records written meanwhile are
    /// embedded too), so it is never below `records_embedded` and a progress bar built on the
    /// two never passes 100 %.
    pub records_total: u64,
    /// Texts embedded so far (catch-up of records written during the job included). Stored
    /// after each step: a job the server stopped while it ran shows its last step's figure.
    pub records_embedded: u64,
    #[schema(value_type = Option<i64>)]
    pub started_at: Option<Millis>,
    #[schema(value_type = Option<i64>)]
    pub finished_at: Option<Millis>,
    /// Why it failed; the collection is then unchanged, on its old model. A job the server
    /// stopped while it ran reads as failed after the restart, with an error that begins
    /// `interrupted` (it is not resumed).
    pub error: Option<String>,
    /// The job's id (absent in state `none`): each start gets a new one, above the
    /// collection's last one even across restarts, so the steps of an earlier job can never
    /// act on a later one and an interrupted job's id is never reused.
    pub job: Option<u64>,
}

impl ReembedStatus {
    /// Counts `n` more texts embedded; the total grows with them when the job met more texts
    /// than it counted at its start.
    fn embedded(&mut self, n: usize) {
        self.records_embedded += n as u64;
        self.records_total = self.records_total.max(self.records_embedded);
    }
}

/// One collection's job: its status and the vectors staged so far, with the content each was
/// computed from (a record whose content changed since is embedded again).
struct Job {
    id: u64,
    status: ReembedStatus,
    created_at: Millis,
    staged: HashMap<RecordId, (String, Vec<f32>)>,
    /// The last record id the staging scan has passed.
    cursor: Option<RecordId>,
}

/// Re-embed jobs by tenant and collection. In memory on purpose: the staged vectors are
/// derived, and a job lost in a crash never touched the collection. Only each job's status is
/// stored as well (`crate::reembed_record`).
pub(crate) struct Jobs {
    jobs: Mutex<HashMap<(TenantKey, CollectionName), Job>>,
    next_id: AtomicU64,
    /// This engine instance, in the status rows it writes: a row still `running` from another
    /// instance was cut short by a restart.
    boot: String,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            jobs: Mutex::default(),
            next_id: AtomicU64::new(0),
            boot: uuid::Uuid::now_v7().simple().to_string(),
        }
    }
}

impl Jobs {
    /// A new job id, above every id this instance gave and above `floor`, the id of the
    /// collection's last stored job: the counter starts again at 0 with each instance, so
    /// without the floor a job started after a restart could take the id of the one the
    /// restart interrupted, which its stored status still shows.
    fn next_id(&self, floor: u64) -> u64 {
        let before = self
            .next_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.max(floor) + 1)
            })
            .unwrap_or_else(|n| n);
        before.max(floor) + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantKey, CollectionName), Job>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a streaming pass over a collection's records counts, without holding its texts.
struct Survey {
    records: u64,
    text_bytes: u64,
    vector_only: u64,
    /// Records with content and no vector.
    without_vector: u64,
    /// The first few texts, to measure the embedding rate on.
    sample: Vec<String>,
}

fn survey(
    r: &impl Reads,
    key: TenantKey,
    name: &CollectionName,
    sample: usize,
) -> Result<Survey, EngineError> {
    let mut out = Survey {
        records: 0,
        text_bytes: 0,
        vector_only: 0,
        without_vector: 0,
        sample: Vec::new(),
    };
    for record in r.records(key, None)? {
        let record = record?;
        if &record.modality != name {
            continue;
        }
        match record.content {
            Some(content) => {
                out.records += 1;
                out.without_vector += u64::from(record.vector.is_none());
                out.text_bytes += content.len() as u64;
                if out.sample.len() < sample {
                    out.sample.push(content);
                }
            }
            None if record.vector.is_some() => out.vector_only += 1,
            None => {}
        }
    }
    Ok(out)
}

fn conflict(m: impl Into<String>) -> EngineError {
    EngineError::Reembed(m.into())
}

/// What one scan of a collection's records found.
struct Scan {
    /// (id, content) of the records with content.
    texts: Vec<(RecordId, String)>,
    /// Records with a vector and no content.
    vector_only: u64,
    /// The last record id passed (of any collection), where the next scan starts after.
    last: Option<RecordId>,
}

/// Scans the tenant's records after `after` for those of collection `name`, stopping once
/// `limit` texts are found.
fn texts_of(
    r: &impl Reads,
    key: TenantKey,
    name: &CollectionName,
    after: Option<&RecordId>,
    limit: usize,
    max_tokens: usize,
) -> Result<Scan, EngineError> {
    let mut scan = Scan {
        texts: Vec::new(),
        vector_only: 0,
        last: None,
    };
    let mut tokens = 0;
    for record in r.records(key, after)? {
        let record = record?;
        if scan.texts.len() == limit {
            break;
        }
        if &record.modality == name
            && let Some(content) = &record.content
        {
            let n = estimated_tokens(content);
            if !scan.texts.is_empty() && tokens + n > max_tokens {
                break;
            }
            tokens += n;
        }
        scan.last = Some(record.id.clone());
        if &record.modality != name {
            continue;
        }
        match record.content {
            Some(content) => scan.texts.push((record.id, content)),
            None if record.vector.is_some() => scan.vector_only += 1,
            None => {}
        }
    }
    Ok(scan)
}

fn find(r: &impl Reads, key: TenantKey, name: &CollectionName) -> Result<Collection, EngineError> {
    r.collection(key, name)?
        .ok_or_else(|| EngineError::CollectionNotFound(name.clone()))
}

impl Engine {
    /// Every read of a re-embed (dry run, start, steps, switch, status): a re-embed reads and
    /// rewrites every record of the collection, of every domain and principal, so it needs an
    /// unbound `admin` credential with `all_principals` (`crate::whole_tenant`).
    fn read_for_reembed<R>(
        &self,
        scope: &TenantScope,
        f: impl FnOnce(&Reader) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        require_whole_tenant(
            scope,
            Permission::Admin,
            Reach::EveryPrincipal,
            "re-embedding a collection",
        )?;
        self.read_tenant(scope, Permission::Admin, f)
    }

    fn loaded_for_reembed(
        &self,
    ) -> Result<(&std::sync::Arc<strata_embed::Embedder>, EmbedderRef), EngineError> {
        self.loaded_embedder().ok_or_else(|| {
            conflict(
                "this server runs without an embedder, so it cannot re-embed; \
                 fetch the model (`strata model fetch`) and restart",
            )
        })
    }

    /// The dry run: what a re-embed of `name` would embed and how long it would take, measured
    /// by embedding a sample of the collection's own texts now.
    pub fn reembed_plan(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
    ) -> Result<ReembedPlan, EngineError> {
        let (c, found) = self.read_for_reembed(scope, |r| {
            let c = find(r, scope.key(), name)?;
            Ok((c, survey(r, scope.key(), name, CALIBRATION_TEXTS)?))
        })?;
        let (embedder, loaded) = self.loaded_for_reembed()?;
        let text_bytes = found.text_bytes;
        let sample: Vec<&str> = found.sample.iter().map(String::as_str).collect();
        let (mut texts_per_sec, mut estimated_seconds) = (0.0, 0.0);
        if !sample.is_empty() {
            let started = Instant::now();
            embed(embedder, &sample)?;
            let secs = started.elapsed().as_secs_f64().max(1e-6);
            let sample_bytes: usize = sample.iter().map(|t| t.len()).sum();
            texts_per_sec = sample.len() as f64 / secs;
            estimated_seconds = text_bytes as f64 / (sample_bytes.max(1) as f64 / secs);
        }
        Ok(ReembedPlan {
            collection: c.name.clone(),
            records_without_vector: found.without_vector,
            already_current: c.embedder.as_ref() == Some(&loaded) && found.without_vector == 0,
            from_model: c.embedder,
            to_model: loaded,
            from_dim: c.dim,
            to_dim: embedder.dim() as u32,
            records: found.records,
            text_bytes,
            vector_only_records: found.vector_only,
            measured_texts_per_sec: texts_per_sec,
            estimated_seconds,
        })
    }

    /// Starts a re-embed of `name` with the loaded model; the caller then drives it with
    /// [`Engine::reembed_step`] until that returns `false`, then [`Engine::reembed_finish`].
    pub fn reembed_start(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
    ) -> Result<ReembedStatus, EngineError> {
        let (c, found, last_job) = self.read_for_reembed(scope, |r| {
            let c = find(r, scope.key(), name)?;
            let last_job = reembed_record::load_replaceable(r, scope.key(), name)?
                .and_then(|row| row.status.job);
            Ok((c, survey(r, scope.key(), name, 0)?, last_job))
        })?;
        let (texts, vector_only) = (found.records, found.vector_only);
        let (_, loaded) = self.loaded_for_reembed()?;
        // On the loaded model already, a re-embed still gives a vector to the records written
        // while the server ran without its embedder (it embeds every text again: the same
        // model gives the same vectors).
        if c.embedder.as_ref() == Some(&loaded) && found.without_vector == 0 {
            return Err(conflict(format!(
                "collection {name} is already embedded by {}, and every record with content \
                 has its vector",
                loaded.model_id
            )));
        }
        if vector_only > 0 {
            return Err(conflict(format!(
                "collection {name} has {vector_only} records with a vector and no content, \
                 which cannot be re-embedded; delete them or give them content first"
            )));
        }
        let mut jobs = self.reembeds.lock();
        let slot = (scope.key(), name.clone());
        // A running job of an earlier collection of the same name (deleted and re-created
        // since) is replaced: its steps no longer find it, and its switch would refuse anyway.
        if jobs.get(&slot).is_some_and(|j| {
            j.status.state == ReembedState::Running && j.created_at == c.created_at
        }) {
            return Err(conflict(format!(
                "a re-embed of collection {name} is already running"
            )));
        }
        let id = self.reembeds.next_id(last_job.unwrap_or(0));
        let status = ReembedStatus {
            collection: name.clone(),
            job: Some(id),
            state: ReembedState::Running,
            model: c.embedder.clone(),
            target_model: Some(loaded),
            records_total: texts,
            records_embedded: 0,
            started_at: Some(now_millis()),
            finished_at: None,
            error: None,
        };
        jobs.insert(
            slot,
            Job {
                id,
                status: status.clone(),
                created_at: c.created_at,
                staged: HashMap::new(),
                cursor: None,
            },
        );
        drop(jobs);
        // Stored as running, so that a restart before it ends reads as an interruption; a job
        // whose start cannot be stored does not run.
        let stored = self.store_status(scope, id, c.created_at, &status);
        self.fail_on_error(scope, name, id, stored)?;
        Ok(status)
    }

    /// Stores `status` as collection `status.collection`'s last re-embed, unless a later job
    /// of this engine instance stored its own meanwhile (the writes of two jobs may cross).
    fn store_status(
        &self,
        scope: &TenantScope,
        job: u64,
        created_at: Millis,
        status: &ReembedStatus,
    ) -> Result<(), EngineError> {
        let boot = &self.reembeds.boot;
        let ((), pending) = self.store.write_pending(|w| {
            crate::tenants::check_live(w, scope)?;
            // Nothing is kept for a collection deleted since (its delete removed the row).
            if w.collection(scope.key(), &status.collection)?
                .is_none_or(|c| c.created_at != created_at)
            {
                return Ok(());
            }
            // A newer job's row stays; so does this job's end (done, failed), which a step's
            // `running` row, stored after the step left the jobs' lock, must not write over.
            if let Some(row) = reembed_record::load_replaceable(w, scope.key(), &status.collection)?
                && row.boot == *boot
                && row.status.job.is_some_and(|j| {
                    j > job
                        || (j == job
                            && row.status.state != ReembedState::Running
                            && status.state == ReembedState::Running)
                })
            {
                return Ok(());
            }
            let row = Stored {
                collection_created_at: created_at,
                boot: boot.clone(),
                status: status.clone(),
            };
            Ok::<_, EngineError>(reembed_record::save(w, scope.key(), &row)?)
        })?;
        // Run on the fair pool (each step is), the fsync is waited for off the pool's worker
        // (`crate::durability`), before the step is answered: a step's row costs the worker
        // its commit, and is durable before the next step begins.
        crate::durability::wait_or_defer(pending)
    }

    /// Embeds the next few records of a running re-embed into its staging area. Returns whether
    /// more remain. A failure marks the job failed (the collection is untouched).
    pub fn reembed_step(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
        job: u64,
    ) -> Result<bool, EngineError> {
        let result = self.stage_next(scope, name, job);
        self.fail_on_error(scope, name, job, result)
    }

    fn stage_next(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
        job: u64,
    ) -> Result<bool, EngineError> {
        let cursor = self.running_job(scope.key(), name, job, |j| j.cursor.clone())?;
        let Scan { texts, last, .. } = self.read_for_reembed(scope, |r| {
            texts_of(
                r,
                scope.key(),
                name,
                cursor.as_ref(),
                STEP_TEXTS,
                STEP_TOKENS,
            )
        })?;
        let vectors = self.embed_for_reembed(&texts)?;
        let (created_at, status) = self.running_job(scope.key(), name, job, |j| {
            j.status.embedded(texts.len());
            for ((id, content), v) in texts.into_iter().zip(vectors) {
                j.staged.insert(id, (content, v));
            }
            j.cursor = last.clone();
            (j.created_at, j.status.clone())
        })?;
        // The stored row follows each step, so a job a crash cuts short reports the texts it
        // had embedded, exact to its last step. One small row per step of up to 32 texts,
        // whose embedding costs far more than the write's commit.
        self.store_status(scope, job, created_at, &status)?;
        Ok(last.is_some())
    }

    /// Catches up records written during the job, then switches the collection to the new
    /// model in one transaction. Marks the job done, or failed with the collection unchanged.
    pub fn reembed_finish(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
        job: u64,
    ) -> Result<ReembedStatus, EngineError> {
        let result = self.switch(scope, name, job);
        self.fail_on_error(scope, name, job, result)?;
        self.reembed_status(scope, name)
    }

    fn switch(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
        job: u64,
    ) -> Result<(), EngineError> {
        let key = scope.key();
        for _ in 0..CATCH_UP_ROUNDS {
            let stale = self.stale_texts(scope, name, job)?;
            if stale.len() <= MAX_CATCH_UP_IN_SWITCH {
                break;
            }
            let vectors = self.embed_for_reembed(&stale)?;
            self.stage(key, name, job, stale, vectors)?;
        }
        let (embedder, loaded) = self.loaded_for_reembed()?;
        let boot = self.reembeds.boot.clone();
        // The last records changed since they were staged are embedded under the tenant's
        // write-order lock, so that none can slip in before the switch, but before the storage
        // transaction opens: a forward pass there would hold the storage write lock, which
        // every tenant's writes wait for. Only this tenant's writes wait for it.
        let prepare = || {
            let stale = self.stale_texts(scope, name, job)?;
            if stale.len() > MAX_CATCH_UP_IN_SWITCH {
                return Err(conflict(format!(
                    "collection {name} changed faster than the re-embed caught up ({} records \
                     still to embed); start it again when writes slow down",
                    stale.len()
                )));
            }
            let vectors = self.embed_for_reembed(&stale)?;
            self.stage(key, name, job, stale, vectors)?;
            self.running_job(key, name, job, |j| {
                (
                    std::mem::take(&mut j.staged),
                    j.created_at,
                    j.status.clone(),
                )
            })
        };
        let status = self.write_tenant_prepared(
            scope,
            "collection.reembed",
            prepare,
            |w, changes, (mut staged, created_at, mut status)| {
                let mut c = find(w, key, name)?;
                if c.created_at != created_at {
                    return Err(conflict(format!(
                        "collection {name} was deleted and re-created during the re-embed"
                    )));
                }
                let mut records = Vec::new();
                for r in w.records(key, None)? {
                    let r = r?;
                    if &r.modality == name {
                        records.push(r);
                    }
                }
                for r in &records {
                    match (&r.content, staged.get(&r.id)) {
                        (Some(content), Some((was, _))) if was == content => {}
                        // Every write of the tenant waits for this switch since the catch-up
                        // above read the collection: nothing can be missing, but were it, the
                        // switch must not store a record without its vector.
                        (Some(_), _) => {
                            return Err(conflict(format!(
                                "record {} in collection {name} changed while its re-embed \
                                 switched; start it again",
                                r.id
                            )));
                        }
                        (None, _) if r.vector.is_some() => {
                            return Err(conflict(format!(
                                "record {} in collection {name} has a vector and no content, \
                                 which cannot be re-embedded",
                                r.id
                            )));
                        }
                        (None, _) => {}
                    }
                }
                c.embedder = Some(loaded.clone());
                c.dim = embedder.dim() as u32;
                w.put_collection(key, &c)?;
                // The old index (and its dimension) goes; the records below rebuild it.
                changes.push(Change::DropCollection(name.clone()));
                for mut r in records {
                    if r.content.is_none() {
                        continue;
                    }
                    r.vector = staged.remove(&r.id).map(|(_, v)| v);
                    store_record(w, changes, scope, &r)?;
                }
                // Its result is stored in the switch itself: a restart finds the collection
                // and its status in step, whenever it comes.
                status.state = ReembedState::Done;
                status.model = Some(loaded.clone());
                status.finished_at = Some(now_millis());
                let row = Stored {
                    collection_created_at: created_at,
                    boot,
                    status,
                };
                reembed_record::save(w, key, &row)?;
                Ok(row.status)
            },
        )?;
        self.running_job(key, name, job, |j| j.status = status)?;
        Ok(())
    }

    /// Stages `vectors` of the `stale` texts in the running job, counted as embedded.
    fn stage(
        &self,
        key: TenantKey,
        name: &CollectionName,
        job: u64,
        stale: Vec<(RecordId, String)>,
        vectors: Vec<Vec<f32>>,
    ) -> Result<(), EngineError> {
        self.running_job(key, name, job, |j| {
            j.status.embedded(stale.len());
            for ((id, content), v) in stale.into_iter().zip(vectors) {
                j.staged.insert(id, (content, v));
            }
        })
    }

    /// Records of the collection whose content is not staged as it is now.
    fn stale_texts(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
        job: u64,
    ) -> Result<Vec<(RecordId, String)>, EngineError> {
        let Scan { texts, .. } = self.read_for_reembed(scope, |r| {
            texts_of(r, scope.key(), name, None, usize::MAX, usize::MAX)
        })?;
        self.running_job(scope.key(), name, job, |j| {
            texts
                .into_iter()
                .filter(|(id, content)| j.staged.get(id).is_none_or(|(was, _)| was != content))
                .collect()
        })
    }

    /// Where the re-embed of `name` stands: the job this engine runs or ran, else the stored
    /// status of the collection's last one (one still `running` there was interrupted by a
    /// restart, and reads as failed), else state `none`.
    pub fn reembed_status(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
    ) -> Result<ReembedStatus, EngineError> {
        let (c, stored) = self.read_for_reembed(scope, |r| {
            let c = find(r, scope.key(), name)?;
            let stored = reembed_record::load(r, scope.key(), name)?;
            Ok((c, stored))
        })?;
        let jobs = self.reembeds.lock();
        Ok(match jobs.get(&(scope.key(), name.clone())) {
            Some(j) if j.created_at == c.created_at => j.status.clone(),
            _ => match stored {
                Some(row) if row.collection_created_at == c.created_at => {
                    let mut status = row.status_seen_by(&self.reembeds.boot);
                    status.model = c.embedder;
                    status
                }
                _ => ReembedStatus {
                    collection: name.clone(),
                    state: ReembedState::None,
                    model: c.embedder,
                    target_model: None,
                    records_total: 0,
                    records_embedded: 0,
                    started_at: None,
                    finished_at: None,
                    error: None,
                    job: None,
                },
            },
        })
    }

    /// Marks a running job failed for a reason outside the engine (e.g. the pool shut down).
    pub fn reembed_abandon(&self, scope: &TenantScope, name: &CollectionName, job: u64, why: &str) {
        let _ = self.fail_on_error::<()>(scope, name, job, Err(conflict(why)));
    }

    fn embed_for_reembed(
        &self,
        texts: &[(RecordId, String)],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (embedder, _) = self.loaded_for_reembed()?;
        let refs: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
        embed(embedder, &refs)
    }

    /// Runs `f` on the running job of `name`, or fails if there is none (it finished, failed,
    /// or the server restarted).
    fn running_job<R>(
        &self,
        key: TenantKey,
        name: &CollectionName,
        job: u64,
        f: impl FnOnce(&mut Job) -> R,
    ) -> Result<R, EngineError> {
        let mut jobs = self.reembeds.lock();
        match jobs.get_mut(&(key, name.clone())) {
            Some(j) if j.id == job && j.status.state == ReembedState::Running => Ok(f(j)),
            _ => Err(conflict(format!(
                "no re-embed of collection {name} is running"
            ))),
        }
    }

    /// Marks the job failed when `result` is an error, and stores that status. Not storing
    /// it (the tenant suspended or deleted since, a storage error) is logged, not returned:
    /// the job has failed either way, and after a restart its stored `running` reads as
    /// interrupted, failed too.
    fn fail_on_error<R>(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
        job: u64,
        result: Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        if let Err(e) = &result {
            let failed = {
                let mut jobs = self.reembeds.lock();
                match jobs.get_mut(&(scope.key(), name.clone())) {
                    Some(j) if j.id == job && j.status.state == ReembedState::Running => {
                        j.status.state = ReembedState::Failed;
                        j.status.error = Some(failure_for_tenant(name, e));
                        j.status.finished_at = Some(now_millis());
                        j.staged = HashMap::new();
                        Some((j.created_at, j.status.clone()))
                    }
                    _ => None,
                }
            };
            if let Some((created_at, status)) = failed
                && let Err(e) = self.store_status(scope, job, created_at, &status)
            {
                tracing::warn!(collection = %name, error = %e, "re-embed failure not stored");
            }
        }
        result
    }
}

/// The failure a tenant reads in its re-embed's status: the error's text, except for what the
/// API answers as `500 internal error` (storage, index and embedder failures, whose text may
/// name the data directory or the storage engine's internals), which goes to the server's log
/// and reads as an internal error.
fn failure_for_tenant(name: &CollectionName, e: &EngineError) -> String {
    match e {
        EngineError::Store(_) | EngineError::Index(_) | EngineError::Embedding(_) => {
            tracing::error!(collection = %name, error = %e, "re-embed failed");
            "internal error (the server's log has the detail)".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineConfig, OperatorScope};
    use strata_types::{Metric, TenantId};

    /// A failure the API would answer as an internal error reads as one in the job's status
    /// too: a storage error's text may name the data directory.
    #[test]
    fn a_storage_failure_reads_as_an_internal_error_in_the_status() {
        let name = CollectionName::parse("notes").unwrap();
        let io = EngineError::Store(strata_store::StoreError::Engine(
            "data directory /srv/strata: disk".into(),
        ));
        let shown = failure_for_tenant(&name, &io);
        assert!(!shown.contains("/srv/strata"), "{shown}");
        assert!(shown.starts_with("internal error"), "{shown}");
        let conflict = EngineError::Reembed("the model changed".into());
        assert_eq!(failure_for_tenant(&name, &conflict), conflict.to_string());
    }

    /// A step stores its `running` row after it left the jobs' lock; the job's end (here a
    /// failure) may be stored first. The end stays: after a restart the job must read as
    /// failed with its error, not as interrupted.
    #[test]
    fn a_steps_running_row_never_writes_over_its_jobs_end() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        engine
            .create_tenant(&OperatorScope::for_tests(), &tenant, None)
            .unwrap();
        let scope = crate::test_support::admin_scope(&engine, "acme");
        let name = CollectionName::parse("notes").unwrap();
        let c = engine
            .create_collection(&scope, &name, 4, Metric::Cosine)
            .unwrap();
        let status = |state, error: Option<&str>| ReembedStatus {
            collection: name.clone(),
            state,
            model: None,
            target_model: None,
            records_total: 10,
            records_embedded: 4,
            started_at: Some(1),
            finished_at: None,
            error: error.map(str::to_owned),
            job: Some(7),
        };
        let stored = || {
            let r = engine.store.read().unwrap();
            reembed_record::load(&r, scope.key(), &name)
                .unwrap()
                .unwrap()
                .status
        };
        let failed = status(ReembedState::Failed, Some("the model failed"));
        engine
            .store_status(&scope, 7, c.created_at, &failed)
            .unwrap();
        engine
            .store_status(
                &scope,
                7,
                c.created_at,
                &status(ReembedState::Running, None),
            )
            .unwrap();
        assert_eq!(stored(), failed);
        // A later job's row replaces it, running or not.
        let mut next = status(ReembedState::Running, None);
        next.job = Some(8);
        engine.store_status(&scope, 8, c.created_at, &next).unwrap();
        assert_eq!(stored(), next);
    }
}
