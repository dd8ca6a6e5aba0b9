//! Tenant writes of concurrent callers, batched into one redb write transaction.
//!
//! With group commit, the fsync is shared; what is left per write is its own redb
//! transaction: opening it, opening four tables, and committing it (which writes its dirty
//! pages, the allocator state and a header), one write at a time under redb's write lock. At
//! eight concurrent writers that serial work, not the fsync, bounded throughput (see the
//! benchmarks). So [`Store::write_batched_for`] queues the caller's closure, and one caller at a
//! time leads (see `batch`): it runs the closures of the queued writes (up to
//! `batch::MAX_BATCH`), of any tenants, in one transaction, each under its own tenant's route,
//! and commits once. Every caller then waits for the shared durable sync as before, so each is
//! acknowledged only once durable.
//!
//! One caller's failure must not fail or roll back the others, and redb has no savepoint
//! inside a transaction that has written. A closure that fails (its error, a panic, or
//! storage refusing its keys) without having written anything is simply left out. One that
//! fails after writing makes the leader abort the transaction; the leader gives that caller
//! its error, runs the closures before it again in a new transaction and commits them at once
//! (a closure is a function of the transaction's state, which for them is what it was), then
//! carries on with the rest in another. So any number of failing callers cost each other
//! write at most one extra run. Closures see the writes of the closures before them in the
//! batch, so checks such as quotas stay atomic.
//!
//! Every transaction of a batch registers its own commit with the group commit when it
//! commits, and a sync waits only for the transaction being run, never for writes still
//! queued for a later batch.
//!
//! Dedicated tenants write in their own files, one tenant each: they take the unbatched path
//! (one transaction per write, its commit hook called right before its commit).
//!
//! Each write's commit hook ([`Store::write_batched_for_ordered`]) is called by the leader
//! right before the commit of the transaction that holds the write, under the write lock, so
//! the engine can order what follows the commits of one tenant's writes (their apply to its
//! indexes) without holding a lock of its own across the batch.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crate::batch::Batcher;
use crate::db::Committed;
use crate::deferred_sync::batch_write_path;
use crate::group_commit::Seq;
use crate::keys::TenantKey;
use crate::opened::Opened;
use crate::tables::{
    MainTables, Pending, Registry, Route, Waiting, Writer, refuse_after_failed_sync,
};
use crate::{Store, StoreError};

/// A caller's closure, erased: runs it on the batch's writer and says whether it succeeded.
/// What it returned (or its panic) it keeps on its caller's stack.
type Run = dyn FnMut(&mut Writer<'_>) -> bool + Send;

/// A caller's hook called right before the commit that holds its write (see
/// [`Store::write_batched_for_ordered`]), erased.
type Committing = dyn Fn() + Sync;

/// One queued write: its tenant, its closure and its commit hook.
pub(crate) struct Job {
    tenant: TenantKey,
    /// Points into the stack of the caller of [`Store::write_batched_for`], which does not
    /// return before the job's outcome is recorded, and the leader records it only after its
    /// last call of the closure; until then the leader that took the job is its only user.
    run: *mut Run,
    /// Points into the same stack, for as long: called by the leader that commits the job.
    committing: *const Committing,
}

// SAFETY: the closure behind `run` is `Send`, and only one thread (the leader that took the
// job) calls it, while its caller blocks (see `Job::run`); the hook behind `committing` is
// `Sync`, called by that leader alone.
unsafe impl Send for Job {}

/// What became of one queued write.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Committed by the commit registered as this, durable as that says (see `Committed`).
    Committed(Seq, Committed),
    /// Its closure failed or panicked: nothing of it was committed; its caller holds why.
    Failed,
    /// Storage failed the batch: nothing of it is known to be committed. `true`: the file
    /// failed (`StoreError::Unavailable`), which its callers are told as such.
    Store(String, bool),
}

/// A transaction of a batch commits once its writes reach this many bytes of keys and values
/// (the jobs left over form the next one), besides the batch's bound of [`crate::batch::MAX_BATCH`]
/// writes: a bound on the memory of one transaction's dirty pages and on its commit's time.
pub(crate) const MAX_BATCH_BYTES: u64 = 8 << 20;

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
        f: impl FnMut(&mut Writer<'_>) -> Result<R, E> + Send,
    ) -> Result<(R, Pending), E> {
        self.write_batched_for_ordered(t, f, &|| {})
    }

    /// [`Store::write_batched_for`] that calls `committing` once its write is about to
    /// commit: after the last run of `f`, under the write lock of the file the write commits
    /// in, right before that commit (which may still fail). So the calls for the writes of
    /// one file are in their commit order, which lets a caller order what follows its commit
    /// (applying it to a tenant's indexes) without holding a lock of its own across the
    /// commit, and so lets writes of one tenant share a transaction. Called at most once;
    /// never for a write of which nothing can have been committed, but a write whose commit
    /// then fails was called for too. `committing` runs on whichever thread commits the
    /// batch: it must be quick and must not panic.
    pub fn write_batched_for_ordered<R: Send, E: From<StoreError> + Send>(
        &self,
        t: TenantKey,
        mut f: impl FnMut(&mut Writer<'_>) -> Result<R, E> + Send,
        committing: &(dyn Fn() + Sync),
    ) -> Result<(R, Pending), E> {
        let batching = self.batching.load(std::sync::atomic::Ordering::Relaxed);
        if !batching || !self.grouped() || self.placement.get(t).is_some() {
            // One transaction of its own, committed right after `f` returns, under the same
            // write lock.
            return self.write_pending_for(t, |w| {
                let r = f(w)?;
                committing();
                Ok(r)
            });
        }
        // On the caller's own thread, before queueing: a background worker's write is caught
        // where it was made, never in the leader running the batch.
        crate::thread_writes::check_write_allowed();
        refuse_after_failed_sync(&self.db().sync)?;
        let mut out: Option<Result<R, E>> = None;
        let mut panicked: Option<Box<dyn Any + Send>> = None;
        // CPU time the leader's thread spent on this write, every run of it.
        let mut cpu_ns: i64 = 0;
        let mut run = |w: &mut Writer<'_>| -> bool {
            out = None;
            let started = strata_sched::thread_cpu_ns();
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(w)));
            if let (Some(before), Some(after)) = (started, strata_sched::thread_cpu_ns()) {
                let spent = i64::try_from(after.saturating_sub(before)).unwrap_or(i64::MAX);
                cpu_ns = cpu_ns.saturating_add(spent);
                // On the leader's thread: not the leader's own job's work (unless this is its
                // own write, which gets it back below).
                strata_sched::adjust_job_cpu(-spent);
            }
            match result {
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
        let committing: *const (dyn Fn() + Sync + '_) = committing;
        // SAFETY: as for `run`.
        let committing: *const Committing = unsafe { std::mem::transmute(committing) };
        let outcome = self.batch.submit(
            Job {
                tenant: t,
                run,
                committing,
            },
            |jobs| self.run_batch(&jobs),
            || Outcome::Store("a batch of writes panicked in storage".into(), false),
        );
        // On the caller's thread: its job is charged its write's CPU time, wherever it ran.
        strata_sched::adjust_job_cpu(cpu_ns);
        if let Some(p) = panicked {
            std::panic::resume_unwind(p);
        }
        match (outcome, out) {
            (Outcome::Committed(seq, committed), Some(Ok(r))) => {
                let waiting = Waiting {
                    seq,
                    db: Arc::clone(&self.db),
                    group: Arc::clone(&self.group),
                    commits: Arc::clone(&self.commits),
                };
                Ok((
                    r,
                    Pending::after(committed, Some(waiting), self.log.as_ref()),
                ))
            }
            (Outcome::Failed, Some(Err(e))) => Err(e),
            (Outcome::Store(why, true), _) => Err(StoreError::Unavailable(why).into()),
            (Outcome::Store(why, false), _) => Err(StoreError::Engine(why).into()),
            (outcome, _) => Err(StoreError::Engine(format!(
                "a batched write lost its result ({outcome:?})"
            ))
            .into()),
        }
    }

    /// Runs a batch of queued writes; one outcome per job, in order.
    ///
    /// The jobs run in order in one transaction. A job that fails without having written
    /// anything is simply left out. One that fails after writing poisons the transaction
    /// (redb cannot undo part of it): the leader aborts it, runs the jobs before it again in a
    /// new transaction and commits them at once (they see the same state as before, minus
    /// nothing: the failed write came after them), then carries on with the jobs after it in
    /// another. So each job runs at most twice however many fail, unless its second run fails
    /// too (its closure depends on something outside the transaction that changed meanwhile).
    /// A transaction is also committed early once its writes reach [`MAX_BATCH_BYTES`].
    /// Storage itself failing (opening, committing or aborting a transaction) fails every job
    /// not yet committed, except that a job whose own closure failed keeps its own error.
    fn run_batch(&self, jobs: &[Job]) -> Vec<Outcome> {
        // The callers were checked against `thread_writes` on their own threads before
        // queueing: nothing here may panic for them.
        let _writing = batch_write_path();
        let mut outcomes: Vec<Option<Outcome>> = jobs.iter().map(|_| None).collect();
        // Jobs still to run, in order, and jobs to run again and commit on their own.
        let mut todo: Vec<usize> = (0..jobs.len()).collect();
        let mut again: Vec<usize> = Vec::new();
        while !(todo.is_empty() && again.is_empty()) {
            let alone = !again.is_empty();
            let list = if alone {
                std::mem::take(&mut again)
            } else {
                std::mem::take(&mut todo)
            };
            match self.run_round(jobs, &list, alone, &mut outcomes) {
                Ok(Round::Committed {
                    seq,
                    committed,
                    ran,
                    rest,
                }) => {
                    for i in ran {
                        outcomes[i] = Some(Outcome::Committed(seq, committed));
                    }
                    // Left over by the byte cap, or after an `alone` round (which runs to
                    // the end of its list): ahead of whatever else is still to run.
                    todo = rest.into_iter().chain(todo).collect();
                }
                Ok(Round::Aborted { ran, rest }) => {
                    again = ran;
                    todo = rest.into_iter().chain(todo).collect();
                }
                Err(e) => {
                    let unavailable = matches!(e, StoreError::Unavailable(_));
                    let why = match e {
                        StoreError::Unavailable(why) => why,
                        other => other.to_string(),
                    };
                    for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                        *o = Some(Outcome::Store(why.clone(), unavailable));
                    }
                    break;
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| Outcome::Store("a batched write was not run".into(), false))
            })
            .collect()
    }

    /// Runs the jobs of `list` in order in one transaction (see `run_batch`); records the
    /// outcome of each job that fails. `alone`: the list is jobs run again after an abort,
    /// committed together whatever their size.
    fn run_round(
        &self,
        jobs: &[Job],
        list: &[usize],
        alone: bool,
        outcomes: &mut [Option<Outcome>],
    ) -> Result<Round, StoreError> {
        refuse_after_failed_sync(&self.db().sync)?;
        // This transaction is the one thing between these writes and their commit: a sync
        // starting now waits for it (and not for writes still queued for later batches).
        let entered = self.group.enter();
        let db = self.db();
        let mut txn = db.begin_write()?;
        crate::recovery::set_non_durable(&mut txn)?;
        // Read under the main write lock, as `write_main` does: a flip holds it too.
        let files = self.placement.snapshot();
        let mut ran = Vec::new();
        let mut aborted_at = None;
        let mut next = list.len();
        let (registry_written, mut rows) = {
            let first = jobs[list[0]].tenant;
            let tables = MainTables::open_logged(&txn, &self.file_writes)?;
            let mut writer = Writer {
                data: tables.data,
                dedicated: Opened::default(),
                lazy: None,
                route: Route::Main(first, files.contains_key(&first)),
                registry: Registry::Write(tables.registry),
                meta: tables.meta,
                credentials: tables.credentials,
                log_cap: self.change_log_cap(),
                tracking: &self.tracking,
                registry_written: false,
                wrote: 0,
            };
            for (pos, &i) in list.iter().enumerate() {
                let t = jobs[i].tenant;
                writer.route = Route::Main(t, files.contains_key(&t));
                let (wrote_before, changes_before) = (writer.wrote, writer.changes());
                // SAFETY: this leader took the job and has not recorded its outcome (see
                // `Job::run`).
                let ok = unsafe { (*jobs[i].run)(&mut writer) };
                if ok {
                    ran.push(i);
                    if !alone && writer.wrote >= MAX_BATCH_BYTES {
                        next = pos + 1;
                        break;
                    }
                    continue;
                }
                outcomes[i] = Some(Outcome::Failed);
                if writer.wrote != wrote_before || writer.changes() != changes_before {
                    // It wrote before failing: the transaction holds part of it.
                    aborted_at = Some(pos);
                    break;
                }
            }
            let rows = match aborted_at {
                None => writer.log_rows()?,
                Some(_) => None,
            };
            (writer.registry_written, rows)
        };
        if let Some(pos) = aborted_at {
            // Nothing of this transaction commits; the registry epoch need not move. The
            // failed job's outcome is recorded already, so it keeps its own error even if
            // the abort fails.
            txn.abort()?;
            return Ok(Round::Aborted {
                ran,
                rest: list[pos + 1..].to_vec(),
            });
        }
        // Again: a sync may have failed while the closures ran.
        refuse_after_failed_sync(&db.sync)?;
        for &i in &ran {
            // SAFETY: as for `run` above; under the write lock, right before the commit.
            unsafe { (*jobs[i].committing)() };
        }
        let committed = txn.commit_logged(rows.as_deref_mut());
        if registry_written {
            self.registry_committed();
        }
        let committed = committed?;
        drop(db);
        // Out of the group's open set first: a sync starting meanwhile need not wait for the
        // close below.
        let seq = entered.committed();
        // A commit path, not a reader's: where a database a vacuum swapped out closes.
        self.retired.close_unread();
        Ok(Round::Committed {
            seq,
            committed,
            ran,
            rest: list[next..].to_vec(),
        })
    }
}

/// How one transaction of a batch ended.
enum Round {
    /// `ran` committed as `seq`; `rest` are left for the next transaction (the byte cap).
    Committed {
        seq: Seq,
        committed: Committed,
        ran: Vec<usize>,
        rest: Vec<usize>,
    },
    /// A job failed after writing: `ran` succeeded before it and must run again, `rest`
    /// come after it and have not run.
    Aborted { ran: Vec<usize>, rest: Vec<usize> },
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use std::panic::AssertUnwindSafe;

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
        let runs: Vec<AtomicU32> = (0..8).map(|_| AtomicU32::new(0)).collect();
        let holding = AtomicBool::new(false);
        let commits_before = store.group.commits_registered();
        let mut batches_before = (0, 0);
        let results = std::thread::scope(|s| {
            let holder = hold_until_queued(s, &store, &holding, 8);
            batches_before = store.write_batches();
            // Queued one after the other, so that their order in the batch is known.
            let mut writers = Vec::new();
            const N: u64 = 8;
            for i in 0..N {
                let (store, runs) = (&store, &runs);
                writers.push(s.spawn(move || {
                    let t = TenantKey::from_raw(i + 1);
                    let written = store.write_batched_for(t, |w| {
                        runs[i as usize].fetch_add(1, Ordering::SeqCst);
                        if i == 1 {
                            // Fails before writing: nothing to undo.
                            return Err(StoreError::Engine("refused early".into()));
                        }
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
                // Not for the last: once it is queued the holder lets the batch go, and the
                // queue may be empty again before this looks.
                wait_for(|| store.batch.queued() > i as usize || i == N - 1);
            }
            holder.join().unwrap();
            writers.into_iter().map(|w| w.join()).collect::<Vec<_>>()
        });
        for (i, r) in results.iter().enumerate() {
            match i {
                1 => assert!(matches!(r, Ok(Err(StoreError::Engine(e))) if e == "refused early")),
                3 => assert!(matches!(r, Ok(Err(StoreError::Engine(e))) if e == "refused")),
                5 => assert!(r.is_err(), "the panic reaches its own caller"),
                _ => assert_eq!(r.as_ref().unwrap().as_ref().unwrap(), &(i as u64)),
            }
        }
        // All eight, failing ones among them, shared one batch.
        let after = store.write_batches();
        assert_eq!(
            (after.0 - batches_before.0, after.1 - batches_before.1),
            (1, 8)
        );
        // The writes before each failure after writing ran again (committed on their own),
        // the one failing before writing cost nobody a run; no write ran more than twice.
        let runs: Vec<u32> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        assert_eq!(runs, vec![2, 1, 2, 1, 2, 1, 1, 1]);
        // The holder's commit, then [0, 2], [4] and [6, 7]: the early failure did not split
        // 0 and 2 apart.
        assert_eq!(store.group.commits_registered() - commits_before, 4);
        drop(store);
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let read = store.read().unwrap();
        for i in 0..8u64 {
            let got = read.blob(TenantKey::from_raw(i + 1), "mine").unwrap();
            let want = (![1, 3, 5].contains(&i)).then(|| vec![i as u8]);
            assert_eq!(got, want, "writer {i}");
        }
    }

    /// A write waiting in the batcher for its batch's leader is a declared wait of the
    /// worker pool (`strata_sched::blocking`): with both workers of a pool taken, one leading
    /// a batch that does not end and one waiting for it, another job still runs, and may
    /// queue its own write for the next batch.
    #[test]
    fn a_write_waiting_for_its_leader_frees_its_pool_worker() {
        use std::sync::mpsc;
        use strata_sched::{FairScheduler, SchedulerConfig};
        const NEVER: Duration = Duration::from_secs(60);
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(&dir.path().join("main.redb")).unwrap());
        let pool = FairScheduler::<&'static str>::new(SchedulerConfig {
            workers: 2,
            // Only the declared wait may free a place, not a long job giving way.
            long_job_after: Duration::ZERO,
            ..SchedulerConfig::default()
        })
        .unwrap();
        let (leading_tx, leading) = mpsc::channel::<()>();
        let (release, release_rx) = mpsc::channel::<()>();
        let (leading_tx, release_rx) = (
            std::sync::Mutex::new(leading_tx),
            std::sync::Mutex::new(release_rx),
        );
        let s = std::sync::Arc::clone(&store);
        let leader = pool
            .submit(&"a", 1, move || {
                let t = TenantKey::from_raw(1);
                s.write_batched_for(t, |w| {
                    leading_tx.lock().unwrap().send(()).unwrap();
                    let _ = release_rx.lock().unwrap().recv_timeout(NEVER);
                    w.put_blob(t, "a", b"1")
                })
                .map(|((), pending)| pending.wait_durable())
            })
            .unwrap();
        leading
            .recv_timeout(NEVER)
            .expect("the leader began its batch");
        let s = std::sync::Arc::clone(&store);
        let follower = pool
            .submit(&"b", 1, move || {
                let t = TenantKey::from_raw(2);
                s.write_batched_for(t, |w| w.put_blob(t, "b", b"1"))
                    .map(|((), pending)| pending.wait_durable())
            })
            .unwrap();
        wait_for(|| store.batch.queued() == 1);
        let (ran_tx, ran) = mpsc::channel();
        let third = pool
            .submit(&"c", 1, move || ran_tx.send(()).unwrap())
            .unwrap();
        let answered = ran.recv_timeout(NEVER);
        release.send(()).unwrap();
        answered.expect("a job ran while one worker led and the other waited for it");
        third.wait_blocking().unwrap();
        leader.wait_blocking().unwrap().unwrap().unwrap();
        follower.wait_blocking().unwrap().unwrap().unwrap();
    }

    /// Writes of one tenant in one batch, one failing after writing (its batch aborted, the
    /// writes before it run again) and one before: each committed write's hook is called
    /// once, in commit order (the order in which the closures saw each other's writes), and
    /// a failed write's never.
    #[test]
    fn commit_hooks_are_called_once_per_committed_write_in_commit_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let t = TenantKey::from_raw(1);
        let holding = AtomicBool::new(false);
        let hooked = std::sync::Mutex::new(Vec::new());
        let results = std::thread::scope(|s| {
            let holder = hold_until_queued(s, &store, &holding, 8);
            let mut writers = Vec::new();
            const N: u64 = 8;
            for i in 0..N {
                let (store, hooked) = (&store, &hooked);
                writers.push(s.spawn(move || {
                    let written = store.write_batched_for_ordered(
                        t,
                        |w| {
                            if i == 5 {
                                return Err(StoreError::Engine("refused early".into()));
                            }
                            let seen = count(w, t)?;
                            w.put_blob(t, "count", &(seen + 1).to_le_bytes())?;
                            if i == 3 {
                                return Err(StoreError::Engine("refused".into()));
                            }
                            Ok(seen)
                        },
                        &|| hooked.lock().unwrap().push(i),
                    );
                    written.map(|(seen, pending)| {
                        pending.wait_durable().unwrap();
                        seen
                    })
                }));
                wait_for(|| store.batch.queued() > i as usize || i == N - 1);
            }
            holder.join().unwrap();
            writers
                .into_iter()
                .map(|w| w.join().unwrap())
                .collect::<Vec<_>>()
        });
        let hooked = hooked.into_inner().unwrap();
        assert_eq!(hooked, [0, 1, 2, 4, 6, 7]);
        for (pos, &i) in hooked.iter().enumerate() {
            assert_eq!(
                results[i as usize].as_ref().unwrap(),
                &(pos as u64),
                "writer {i}"
            );
        }
        assert!(results[3].is_err() && results[5].is_err());
        assert_eq!(count(&store.read().unwrap(), t).unwrap(), 6);
    }

    /// A closure that failed after changing only a table other than its tenant's data (the
    /// store's meta table here) is undone like one that wrote data: its change does not
    /// commit with the batch's other writes. (Only data bytes and registry rows were looked
    /// at once; every table's changes are now.)
    #[test]
    fn a_failing_write_that_changed_only_meta_rows_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let holding = AtomicBool::new(false);
        let results = std::thread::scope(|s| {
            let holder = hold_until_queued(s, &store, &holding, 3);
            let mut writers = Vec::new();
            const N: u64 = 3;
            for i in 0..N {
                let store = &store;
                writers.push(s.spawn(move || {
                    let t = TenantKey::from_raw(i + 1);
                    store
                        .write_batched_for(t, |w| {
                            if i == 1 {
                                w.set_compaction_owed(true)?;
                                return Err(StoreError::Engine("refused".into()));
                            }
                            w.put_blob(t, "mine", &[i as u8])
                        })
                        .map(|((), pending)| pending.wait_durable().unwrap())
                }));
                // Not for the last: once it is queued the holder lets the batch go, and the
                // queue may be empty again before this looks.
                wait_for(|| store.batch.queued() > i as usize || i == N - 1);
            }
            holder.join().unwrap();
            writers
                .into_iter()
                .map(|w| w.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
        assert!(
            !store.compaction_owed().unwrap(),
            "the failed write's change committed"
        );
        let read = store.read().unwrap();
        assert_eq!(
            read.blob(TenantKey::from_raw(3), "mine").unwrap(),
            Some(vec![2])
        );
    }

    /// A file that fails while a batch runs fails the batch's writes as `Unavailable`, the
    /// class the API answers `503` for, not as an engine error.
    #[test]
    fn a_file_failing_during_a_batch_fails_its_writes_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let t = TenantKey::from_raw(7);
        let got = store.write_batched_for(t, |w| {
            w.put_blob(t, "a", b"1")?;
            store.db().sync.fail_for_test();
            Ok::<_, StoreError>(())
        });
        assert!(
            matches!(got, Err(StoreError::Unavailable(_))),
            "{:?}",
            got.err()
        );
        let later = store.write_batched_for(t, |w| w.put_blob(t, "b", b"2"));
        assert!(matches!(later, Err(StoreError::Unavailable(_))));
    }

    /// A write is acknowledged only after an fsync that followed its commit, batched or not;
    /// an fsync that fails after the deferred commit succeeded fails the writes it was to
    /// cover, and the file refuses later ones. (With the leader's sync skipped, or its error
    /// ignored, the writes were acknowledged all the same; nothing else tested it.)
    #[test]
    fn a_write_is_acknowledged_only_after_a_successful_fsync_that_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        // Writes of tenant `t` to the file `file` syncs: each acknowledged only after an fsync
        // of it; one whose fsync fails is not acknowledged, nor is any later write.
        // The syncs that make a write durable: the main file's writes, its row log's.
        enum Synced {
            File(crate::deferred_sync::FileSync),
            Log(std::sync::Arc<crate::row_log::RowLog>),
        }
        impl Synced {
            fn syncs_for_test(&self) -> u64 {
                match self {
                    Synced::File(f) => f.syncs_for_test(),
                    Synced::Log(l) => l.syncs_for_test(),
                }
            }
            fn fail_next_sync_for_test(&self) {
                match self {
                    Synced::File(f) => f.fail_next_sync_for_test(),
                    Synced::Log(l) => l.fail_next_sync_for_test(),
                }
            }
        }
        let check = |store: &Store, t: TenantKey, file: &Synced| {
            for (name, batched) in [("a", false), ("b", true)] {
                let before = file.syncs_for_test();
                let ((), pending) = if batched {
                    store.write_batched_for(t, |w| w.put_blob(t, name, b"1"))
                } else {
                    store.write_pending_for(t, |w| w.put_blob(t, name, b"1"))
                }
                .unwrap();
                pending.wait_durable().unwrap();
                assert!(
                    file.syncs_for_test() > before,
                    "{name}: acknowledged without an fsync"
                );
            }
            file.fail_next_sync_for_test();
            let ((), pending) = store
                .write_pending_for(t, |w| w.put_blob(t, "c", b"3"))
                .unwrap();
            let failed = pending.wait_durable();
            assert!(
                matches!(failed, Err(StoreError::Unavailable(_))),
                "{failed:?}"
            );
            let later = store.write_batched_for(t, |w| w.put_blob(t, "d", b"4"));
            assert!(
                matches!(later, Err(StoreError::Unavailable(_))),
                "{:?}",
                later.err()
            );
        };
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        check(
            &store,
            TenantKey::from_raw(7),
            &Synced::Log(store.log.clone().unwrap()),
        );
        // A dedicated tenant's own file, through its own group commit.
        let store = Store::open(&dir.path().join("other.redb")).unwrap();
        let b = crate::test_tenant::tenant(&store, "b");
        store.route_dedicated(store.create_dedicated(b).unwrap());
        let file = crate::tables::read_db(&store.placement.get(b).unwrap().db)
            .sync
            .clone();
        check(&store, b, &Synced::File(file));
    }

    #[test]
    fn a_batch_commits_early_at_its_byte_cap_and_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let holding = AtomicBool::new(false);
        let commits_before = store.group.commits_registered();
        let third = vec![7u8; (super::MAX_BATCH_BYTES / 3 + 1) as usize];
        std::thread::scope(|s| {
            let holder = hold_until_queued(s, &store, &holding, 4);
            let writers: Vec<_> = (0..4u64)
                .map(|i| {
                    let (store, third) = (&store, &third);
                    s.spawn(move || {
                        let t = TenantKey::from_raw(i + 1);
                        let ((), pending) = store
                            .write_batched_for(t, |w| w.put_blob(t, "big", third))
                            .unwrap();
                        pending.wait_durable().unwrap();
                    })
                })
                .collect();
            holder.join().unwrap();
            for w in writers {
                w.join().unwrap();
            }
        });
        // The holder's commit, the first three (past the cap with the third), the fourth.
        assert_eq!(store.group.commits_registered() - commits_before, 3);
        let read = store.read().unwrap();
        for i in 0..4u64 {
            let got = read.blob(TenantKey::from_raw(i + 1), "big").unwrap();
            assert_eq!(got.as_deref(), Some(third.as_slice()), "writer {i}");
        }
    }

    #[test]
    fn writes_queued_for_a_later_batch_do_not_hold_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let open_while_queued = AtomicU32::new(u32::MAX);
        let holding = AtomicBool::new(false);
        std::thread::scope(|s| {
            let holder = s.spawn(|| {
                let t = TenantKey::from_raw(999);
                let ((), pending) = store
                    .write_batched_for(t, |w| {
                        holding.store(true, Ordering::SeqCst);
                        wait_for(|| store.batch.queued() >= 3);
                        open_while_queued
                            .store(store.group.open_writers() as u32, Ordering::SeqCst);
                        w.put_blob(t, "held", b"1")
                    })
                    .unwrap();
                pending.wait_durable().unwrap();
            });
            wait_for(|| holding.load(Ordering::SeqCst));
            let writers: Vec<_> = (0..3u64)
                .map(|i| {
                    let store = &store;
                    s.spawn(move || {
                        let t = TenantKey::from_raw(i + 1);
                        let ((), p) = store
                            .write_batched_for(t, |w| w.put_blob(t, "x", b"1"))
                            .unwrap();
                        p.wait_durable().unwrap();
                    })
                })
                .collect();
            holder.join().unwrap();
            for w in writers {
                w.join().unwrap();
            }
        });
        // Only the transaction being run is open; the three queued writes are not.
        assert_eq!(open_while_queued.load(Ordering::SeqCst), 1);
    }

    /// Spins until the calling thread has used `ns` more nanoseconds of CPU.
    fn spin_cpu(ns: u64) {
        let Some(start) = strata_sched::thread_cpu_ns() else {
            return;
        };
        let mut x = 0u64;
        while strata_sched::thread_cpu_ns().unwrap() - start < ns {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
    }

    #[test]
    fn a_write_run_by_another_leader_is_charged_to_its_own_caller() {
        if strata_sched::thread_cpu_ns().is_none() {
            return;
        }
        const SPIN: u64 = 30_000_000;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let holding = AtomicBool::new(false);
        // What a thread's job is charged for one write: its thread's CPU time plus the
        // adjustment, as the worker pool computes it.
        let charged = |t: TenantKey, spin: u64| {
            strata_sched::take_job_cpu_adjustment();
            let before = strata_sched::thread_cpu_ns().unwrap();
            let ((), p) = store
                .write_batched_for(t, |w| {
                    spin_cpu(spin);
                    w.put_blob(t, "x", b"1")
                })
                .unwrap();
            p.wait_durable().unwrap();
            let used = strata_sched::thread_cpu_ns().unwrap() - before;
            used as i64 + strata_sched::take_job_cpu_adjustment()
        };
        let (quiet, spinning) = std::thread::scope(|s| {
            let holder = hold_until_queued(s, &store, &holding, 2);
            // Both in the next batch, led by one of them (most often the first queued).
            let quiet = s.spawn(|| charged(TenantKey::from_raw(1), 0));
            wait_for(|| store.batch.queued() >= 1);
            let spinning = s.spawn(|| charged(TenantKey::from_raw(2), SPIN));
            holder.join().unwrap();
            (quiet.join().unwrap(), spinning.join().unwrap())
        });
        // Whoever led, the spinning write's CPU is its own caller's, not the other's.
        assert!(
            spinning >= SPIN as i64,
            "spinning {spinning}, quiet {quiet}"
        );
        assert!(
            quiet < SPIN as i64 / 2,
            "spinning {spinning}, quiet {quiet}"
        );
    }

    #[test]
    fn a_batched_write_on_a_forbidden_thread_is_caught_on_that_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let t = TenantKey::from_raw(1);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _mark = crate::thread_writes::forbid_writes_on_this_thread();
                let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    store.write_batched_for(t, |w| w.put_blob(t, "bg", b"1"))
                }));
                // Debug builds panic in the caller, not as a lost batch (an `Err`).
                assert_eq!(caught.is_err(), cfg!(debug_assertions));
            })
            .join()
            .unwrap();
        });
        // The batcher carries on.
        let ((), p) = store
            .write_batched_for(t, |w| w.put_blob(t, "fg", b"1"))
            .unwrap();
        p.wait_durable().unwrap();
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
            jobs in proptest::collection::vec((0u64..3, proptest::bool::ANY), 1..14)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("main.redb")).unwrap();
            let holding = AtomicBool::new(false);
            let runs: Vec<AtomicU32> = jobs.iter().map(|_| AtomicU32::new(0)).collect();
            let results: Vec<bool> = std::thread::scope(|s| {
                let holder = hold_until_queued(s, &store, &holding, jobs.len());
                let writers: Vec<_> = jobs.iter().enumerate().map(|(i, &(tenant, fails))| {
                    let (store, runs) = (&store, &runs);
                    s.spawn(move || {
                        let t = TenantKey::from_raw(tenant + 1);
                        store.write_batched_for(t, |w| {
                            runs[i].fetch_add(1, Ordering::SeqCst);
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
            for (i, r) in runs.iter().enumerate() {
                // However many others failed, a write runs at most twice.
                prop_assert!(r.load(Ordering::SeqCst) <= 2, "job {} ran {:?}", i, r);
            }
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
