//! Tenant writes of concurrent callers, batched into one redb write transaction.
//!
//! With group commit, the fsync is shared; what is left per write is its own redb
//! transaction: opening it, opening four tables, and committing it (which writes its dirty
//! pages, the allocator state and a header), one write at a time under redb's write lock. At
//! eight concurrent writers that serial work, not the fsync, bounded throughput (see the
//! benchmarks). So [`Store::write_batched_for`] queues the caller's closure, and one caller at a
//! time leads (see `batch`): it runs the closures of every queued write, of any tenants, in one
//! transaction, each under its own tenant's route, and commits once. Every caller then waits
//! for the shared durable sync as before, so each is acknowledged only once durable.
//!
//! One caller's failure must not fail or roll back the others, and redb has no savepoint
//! inside a transaction that has written. So when a closure fails (its error, a panic, or
//! storage refusing its keys), the leader aborts the transaction, gives that caller its error,
//! and runs the rest again in a new one: a closure is a function of the transaction's state,
//! so running it again on a state without the failed write is what it would have done had it
//! come after it. Each round drops one write, so a batch ends. Closures see the writes of the
//! closures before them in the batch, so checks such as quotas stay atomic.
//!
//! Dedicated tenants write in their own files, one tenant each, whose writes the engine
//! orders one at a time anyway: they take the unbatched path.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use redb::Durability;

use crate::batch::Batcher;
use crate::deferred_sync::write_path;
use crate::keys::TenantKey;
use crate::opened::Opened;
use crate::tables::{
    CREDENTIALS, DATA, META, Pending, REGISTRY, Registry, Route, Waiting, Writer,
    refuse_after_failed_sync,
};
use crate::{Store, StoreError};

/// A caller's closure, erased: runs it on the batch's writer and says whether it succeeded.
/// What it returned (or its panic) it keeps on its caller's stack.
type Run = dyn FnMut(&mut Writer<'_>) -> bool + Send;

/// One queued write: its tenant and its closure.
pub(crate) struct Job {
    tenant: TenantKey,
    /// Points into the stack of the caller of [`Store::write_batched_for`], which does not
    /// return before the job's outcome is recorded, and the leader records it only after its
    /// last call of the closure; until then the leader that took the job is its only user.
    run: *mut Run,
}

// SAFETY: the closure behind `run` is `Send`, and only one thread (the leader that took the
// job) calls it, while its caller blocks (see `Job::run`).
unsafe impl Send for Job {}

/// What became of one queued write.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Committed with the batch (not yet durable).
    Committed,
    /// Its closure failed or panicked: nothing of it was committed; its caller holds why.
    Failed,
    /// Storage failed the batch: nothing of it is known to be committed.
    Store(String),
}

pub(crate) type MainBatcher = Batcher<Job, Outcome>;

impl Store {
    /// Turns batched commits on (the default) or off. Off, [`Store::write_batched_for`] is
    /// [`Store::write_pending_for`]: every write its own transaction. Without group commit
    /// writes are never batched.
    pub fn set_write_batching(&self, on: bool) {
        self.batching
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many shared transactions [`Store::write_batched_for`] has run (batches, each
    /// aborted and run-again round not counted apart), and how many writes they took.
    pub fn write_batches(&self) -> (u64, u64) {
        self.batch.counts()
    }

    /// [`Store::write_pending_for`] for a write that may share its transaction with the
    /// concurrent writes of other callers (any tenants): one transaction and one commit for a
    /// whole batch, which is what lets many concurrent single-record writes through per
    /// second. `f` may therefore run more than once (again, on a state without a write that
    /// failed in its batch); only its last run counts, and its effects outside the
    /// transaction must allow that. A failing `f` fails alone: nothing of it is applied, and
    /// the others commit. Without group commit, and for a dedicated tenant, this is
    /// [`Store::write_pending_for`].
    pub fn write_batched_for<R: Send, E: From<StoreError> + Send>(
        &self,
        t: TenantKey,
        mut f: impl FnMut(&mut Writer<'_>) -> Result<R, E> + Send,
    ) -> Result<(R, Pending), E> {
        let batching = self.batching.load(std::sync::atomic::Ordering::Relaxed);
        if !batching || !self.grouped() || self.placement.get(t).is_some() {
            return self.write_pending_for(t, f);
        }
        refuse_after_failed_sync(&self.file)?;
        let entered = self.group.enter();
        let mut out: Option<Result<R, E>> = None;
        let mut panicked: Option<Box<dyn Any + Send>> = None;
        let mut run = |w: &mut Writer<'_>| -> bool {
            out = None;
            match std::panic::catch_unwind(AssertUnwindSafe(|| f(w))) {
                Ok(Ok(r)) => {
                    out = Some(Ok(r));
                    true
                }
                Ok(Err(e)) => {
                    out = Some(Err(e));
                    false
                }
                Err(p) => {
                    panicked = Some(p);
                    false
                }
            }
        };
        let run: *mut (dyn FnMut(&mut Writer<'_>) -> bool + Send + '_) = &mut run;
        // SAFETY: only the lifetime bound changes (same fat pointer); `submit` returns only
        // once the job's outcome is recorded, after the leader's last call (see `Job::run`),
        // so the closure and what it borrows outlive every use.
        let run: *mut Run = unsafe { std::mem::transmute(run) };
        let outcome = self.batch.submit(
            Job { tenant: t, run },
            |jobs| self.run_batch(&jobs),
            || Outcome::Store("a batch of writes panicked in storage".into()),
        );
        if let Some(p) = panicked {
            std::panic::resume_unwind(p);
        }
        match (outcome, out) {
            (Outcome::Committed, Some(Ok(r))) => {
                let waiting = Waiting {
                    seq: entered.committed(),
                    db: Arc::clone(&self.db),
                    file: self.file.clone(),
                    group: Arc::clone(&self.group),
                    commits: Arc::clone(&self.commits),
                };
                Ok((
                    r,
                    Pending {
                        waiting: Some(waiting),
                    },
                ))
            }
            (Outcome::Failed, Some(Err(e))) => Err(e),
            (Outcome::Store(why), _) => Err(StoreError::Engine(why).into()),
            (outcome, _) => Err(StoreError::Engine(format!(
                "a batched write lost its result ({outcome:?})"
            ))
            .into()),
        }
    }

    /// Runs a batch of queued writes in as few transactions as their failures need; one
    /// outcome per job, in order.
    fn run_batch(&self, jobs: &[Job]) -> Vec<Outcome> {
        let _writing = write_path();
        let mut outcomes: Vec<Option<Outcome>> = jobs.iter().map(|_| None).collect();
        loop {
            let live: Vec<usize> = (0..jobs.len()).filter(|i| outcomes[*i].is_none()).collect();
            if live.is_empty() {
                break;
            }
            match self.try_batch(jobs, &live) {
                Ok(None) => {
                    for i in live {
                        outcomes[i] = Some(Outcome::Committed);
                    }
                }
                // Aborted: that one fails, the rest run again.
                Ok(Some(failed)) => outcomes[failed] = Some(Outcome::Failed),
                Err(e) => {
                    for i in live {
                        outcomes[i] = Some(Outcome::Store(e.to_string()));
                    }
                }
            }
        }
        outcomes.into_iter().flatten().collect()
    }

    /// Runs the `live` jobs in one transaction: commits it when all succeed (`None`), or
    /// aborts it at the first that fails and names it.
    fn try_batch(&self, jobs: &[Job], live: &[usize]) -> Result<Option<usize>, StoreError> {
        refuse_after_failed_sync(&self.file)?;
        let db = self.db();
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::None)?;
        // Read under the main write lock, as `write_main` does: a flip holds it too.
        let files = self.placement.snapshot();
        let (failed, registry_written) = {
            let first = jobs[live[0]].tenant;
            let mut writer = Writer {
                data: txn.open_table(DATA)?,
                dedicated: Opened::default(),
                lazy: None,
                route: Route::Main(first, files.contains_key(&first)),
                registry: Registry::Write(txn.open_table(REGISTRY)?),
                meta: txn.open_table(META)?,
                credentials: txn.open_table(CREDENTIALS)?,
                log_cap: self.change_log_cap(),
                tracking: &self.tracking,
                registry_written: false,
            };
            let mut failed = None;
            for &i in live {
                let t = jobs[i].tenant;
                writer.route = Route::Main(t, files.contains_key(&t));
                // SAFETY: this leader took the job and has not recorded its outcome (see
                // `Job::run`).
                let ok = unsafe { (*jobs[i].run)(&mut writer) };
                if !ok {
                    failed = Some(i);
                    break;
                }
            }
            (failed, writer.registry_written)
        };
        if failed.is_some() {
            // Nothing of this transaction commits; the registry epoch need not move.
            txn.abort()?;
            return Ok(failed);
        }
        // Again: a sync may have failed while the closures ran.
        refuse_after_failed_sync(&self.file)?;
        let committed = txn.commit();
        if registry_written {
            self.registry_committed();
        }
        committed?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use crate::keys::TenantKey;
    use crate::{Reads, Store, StoreError};

    /// Starts a write that holds its batch (alone: nobody else was queued) until `n` more
    /// writes are queued behind it, so that those form the next batch together; returns once
    /// it holds the lead.
    fn hold_until_queued<'s>(
        s: &'s std::thread::Scope<'s, '_>,
        store: &'s Store,
        holding: &'s AtomicBool,
        n: usize,
    ) -> std::thread::ScopedJoinHandle<'s, ()> {
        let holder = s.spawn(move || {
            let ((), pending) = store
                .write_batched_for(TenantKey::from_raw(999), |w| {
                    holding.store(true, Ordering::SeqCst);
                    wait_for(|| store.batch.queued() >= n);
                    w.put_blob(TenantKey::from_raw(999), "held", b"1")
                })
                .unwrap();
            pending.wait_durable().unwrap();
        });
        wait_for(|| holding.load(Ordering::SeqCst));
        holder
    }

    /// Waits until `done` holds, for at most 20 s (a loaded machine schedules threads late).
    fn wait_for(done: impl Fn() -> bool) {
        let since = Instant::now();
        while !done() && since.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn count(w: &impl Reads, t: TenantKey) -> Result<u64, StoreError> {
        Ok(w.blob(t, "count")?
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes"))))
    }

    #[test]
    fn a_failing_write_in_a_batch_leaves_the_others_committed_and_itself_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let runs: Vec<AtomicU32> = (0..7).map(|_| AtomicU32::new(0)).collect();
        let holding = AtomicBool::new(false);
        let results = std::thread::scope(|s| {
            let holder = hold_until_queued(s, &store, &holding, 7);
            // Queued one after the other, so that their order in the batch is known.
            let mut writers = Vec::new();
            for i in 0..7u64 {
                let (store, runs) = (&store, &runs);
                writers.push(s.spawn(move || {
                    let t = TenantKey::from_raw(i + 1);
                    let written = store.write_batched_for(t, |w| {
                        runs[i as usize].fetch_add(1, Ordering::SeqCst);
                        w.put_blob(t, "mine", &[i as u8])?;
                        if i == 3 {
                            // Fails after writing: its write must not survive.
                            return Err(StoreError::Engine("refused".into()));
                        }
                        if i == 5 {
                            panic!("a caller's bug");
                        }
                        Ok(i)
                    });
                    written.map(|(r, pending)| {
                        pending.wait_durable().unwrap();
                        r
                    })
                }));
                wait_for(|| store.batch.queued() > i as usize);
            }
            holder.join().unwrap();
            writers.into_iter().map(|w| w.join()).collect::<Vec<_>>()
        });
        for (i, r) in results.iter().enumerate() {
            match i {
                3 => assert!(matches!(r, Ok(Err(StoreError::Engine(e))) if e == "refused")),
                5 => assert!(r.is_err(), "the panic reaches its own caller"),
                _ => assert_eq!(r.as_ref().unwrap().as_ref().unwrap(), &(i as u64)),
            }
        }
        // One batch: the writes before each failure ran again, the others once.
        let runs: Vec<u32> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        assert_eq!(runs, vec![3, 3, 3, 1, 2, 1, 1]);
        drop(store);
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let read = store.read().unwrap();
        for i in 0..7u64 {
            let got = read.blob(TenantKey::from_raw(i + 1), "mine").unwrap();
            let want = (i != 3 && i != 5).then(|| vec![i as u8]);
            assert_eq!(got, want, "writer {i}");
        }
    }

    /// Writes at most this many per tenant pass the quota check in the property test.
    const CAP: u64 = 2;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Against a model: a batch of writes of a few tenants, each checking its tenant's
        /// count against a quota and some failing after writing. Each tenant ends with exactly
        /// as many writes as the model allows (its writes that do not fail, up to the quota),
        /// its count agrees with them, and a write is present exactly when it returned `Ok`.
        #[test]
        fn batched_writes_match_the_serial_model(
            jobs in proptest::collection::vec((0u64..3, proptest::bool::ANY), 1..10)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("main.redb")).unwrap();
            let holding = AtomicBool::new(false);
            let results: Vec<bool> = std::thread::scope(|s| {
                let holder = hold_until_queued(s, &store, &holding, jobs.len());
                let writers: Vec<_> = jobs.iter().enumerate().map(|(i, &(tenant, fails))| {
                    let store = &store;
                    s.spawn(move || {
                        let t = TenantKey::from_raw(tenant + 1);
                        store.write_batched_for(t, |w| {
                            let c = count(w, t)?;
                            if c >= CAP {
                                return Err(StoreError::Engine("quota".into()));
                            }
                            w.put_blob(t, "count", &(c + 1).to_le_bytes())?;
                            w.put_blob(t, &format!("job-{i}"), b"1")?;
                            if fails {
                                return Err(StoreError::Engine("fails".into()));
                            }
                            Ok(())
                        })
                        .map(|((), p)| p.wait_durable().unwrap())
                        .is_ok()
                    })
                }).collect();
                holder.join().unwrap();
                writers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            let read = store.read().unwrap();
            for tenant in 0..3u64 {
                let t = TenantKey::from_raw(tenant + 1);
                let mine: Vec<usize> = (0..jobs.len()).filter(|i| jobs[*i].0 == tenant).collect();
                let can = mine.iter().filter(|i| !jobs[**i].1).count() as u64;
                let ok = mine.iter().filter(|i| results[**i]).count() as u64;
                prop_assert_eq!(ok, can.min(CAP), "tenant {}", tenant);
                prop_assert_eq!(count(&read, t).unwrap(), ok);
                for &i in &mine {
                    prop_assert!(!(jobs[i].1 && results[i]), "a failing write succeeded");
                    let present = read.blob(t, &format!("job-{i}")).unwrap().is_some();
                    prop_assert_eq!(present, results[i], "job {}", i);
                }
            }
        }
    }
}
