//! A worker that just finished a job watches the queue for a short while before it sleeps.
//!
//! Waking a sleeping thread costs more than the wake-up call: on a virtual machine an idle
//! CPU halts, and the job waits for the hypervisor to run that CPU again. A client that sends
//! its requests one after another (an agent recalling, then writing, then recalling) queues
//! its next job a fraction of a millisecond after the last one ended, so every request paid
//! that wake-up: about half of a small search's latency on one connection
//! (docs/benchmarks.md, 5 Dec). Storage engines built for low latency poll the same way
//! before they sleep (ScyllaDB's reactor, 200 µs by default).
//!
//! The rules, and why:
//! - **One poller in the pool at a time**, the worker that went idle last (the one most likely
//!   to be warm, on a core that is awake). Every poller takes a core while it polls; on two
//!   cores, two pollers would leave none for the threads that read the next request.
//! - **It yields between looks**, so a thread with work on its core runs first, and it polls
//!   at most `window`, then sleeps until woken as before. **A worker polls once per job it ran**
//!   (and once when it starts), whatever ended the poll, so the polls' CPU is at most a window
//!   of one core per job, never a loop of polls without work.
//! - **Only what concerns the poller ends its poll** ([`PollState::wants`]): a job its kind of
//!   worker would be woken for, any other wake-up of its kind (a place freed by a wait or a long
//!   job, a turn passed on: the poller is not on the condition variable they signal), and
//!   shutdown. A job for another kind (a reserved worker polls, a shared tenant's job arrives)
//!   wakes that kind as before and leaves the poll alone.
//! - **A job it will take wakes nobody** ([`PollState::claim`]): the submitter skips the
//!   wake-up of the poller's kind once, so a sleeping worker of that kind is not woken to find
//!   the queue empty. Only while the poller is on a CPU: one that has not looked for [`FRESH`]
//!   (the OS runs another thread on its core) is not counted on, and a sleeper is woken as
//!   without polling, so a job does not wait for a poller's turn on a busy core while another
//!   core idles. Nothing is lost when the poller does not take the job (another worker popped
//!   it, or the poller may not run it): the poller locks the state and looks at the queue
//!   before it can sleep, and a sleeper woken instead would see the same queue.
//! - **Polls that keep finding nothing become rare** ([`PollState::take_turn`]): a client whose
//!   next request comes later than the window (a script that thinks between calls, a client
//!   slower than the server) would have every poll pass for nothing, a window of CPU per
//!   request. After three polls in a row found no job, the pool skips the next idle worker's
//!   poll, then two, four, … up to 64 between polls; one that finds a job polls at every turn
//!   again. The skipped polls cost nothing, and the occasional one notices when requests come
//!   back to back again. Unless asked to poll always ([`crate::SchedulerConfig::idle_poll_always`]):
//!   a poll that finds nothing still keeps its core out of the idle state, which on a virtual
//!   machine made a slow client's requests about a fifth faster (docs/benchmarks.md, 5 Dec),
//!   for up to a window of CPU per request.
//! - Background workers (lowest priority) never poll: their jobs are a flooding tenant's.
//! - A machine with one CPU never polls: the poller would take the core from the thread that
//!   reads the next request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::scheduler::Kind;

/// The default [`crate::SchedulerConfig::idle_poll`] on a machine with two CPUs or more.
pub const DEFAULT_IDLE_POLL: Duration = Duration::from_micros(200);

/// Looks at the counter between two yields of the CPU: a few microseconds, so a thread
/// waiting for this core waits no longer, and the poller is seldom inside a yield (where it
/// does not count as on a CPU, see [`IdlePoll::wait`]).
const SPINS_PER_YIELD: u32 = 256;

/// A poller that looked at the counter this recently is on a CPU and takes a job at once.
const FRESH: Duration = Duration::from_micros(50);

/// `IdlePoll::looked` while the poller yields its core (or before any poll).
const YIELDING: u64 = u64::MAX;

/// The default poll window for this machine: none with a single CPU (see the module's
/// documentation).
pub fn default_idle_poll() -> Duration {
    match std::thread::available_parallelism() {
        Ok(cpus) if cpus.get() >= 2 => DEFAULT_IDLE_POLL,
        _ => Duration::ZERO,
    }
}

/// What the poller watches without the state's lock: the window, a counter bumped by what
/// ends a poll, and when the poller last looked at it.
#[derive(Debug)]
pub(crate) struct IdlePoll {
    window: Duration,
    nudges: AtomicU64,
    /// The clock `looked` counts from.
    epoch: Instant,
    /// Nanoseconds from `epoch` to the poller's last look, or [`YIELDING`].
    looked: AtomicU64,
}

impl IdlePoll {
    pub(crate) fn new(window: Duration) -> Self {
        IdlePoll {
            window,
            nudges: AtomicU64::new(0),
            epoch: Instant::now(),
            looked: AtomicU64::new(YIELDING),
        }
    }

    fn stamp(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.looked.store(now, Ordering::Relaxed);
    }

    /// Whether the poller looked at the counter within [`FRESH`]: it is on a CPU.
    pub(crate) fn on_cpu(&self) -> bool {
        let looked = self.looked.load(Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let fresh = u64::try_from(FRESH.as_nanos()).unwrap_or(u64::MAX);
        looked != YIELDING && now.saturating_sub(looked) <= fresh
    }

    /// Whether a worker of `kind` ever polls.
    pub(crate) fn polls(&self, kind: Kind) -> bool {
        !self.window.is_zero() && kind != Kind::Background
    }

    /// Ends the poll (called under the state's lock).
    pub(crate) fn nudge(&self) {
        self.nudges.fetch_add(1, Ordering::Release);
    }

    /// The counter, read under the state's lock before it is released to poll; marks the
    /// poller as looking.
    pub(crate) fn seen(&self) -> u64 {
        self.stamp();
        self.nudges.load(Ordering::Acquire)
    }

    /// Polls, without the state's lock, until nudged after `seen` or the window passed.
    pub(crate) fn wait(&self, seen: u64) {
        let until = Instant::now() + self.window;
        loop {
            for _ in 0..SPINS_PER_YIELD {
                if self.nudges.load(Ordering::Acquire) != seen {
                    return;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= until {
                return;
            }
            // Not on a CPU while it yields: the OS may give the core to a busy thread for a
            // while, and a job handed to the poller meanwhile would wait for its next turn.
            // Stamped again once the yield returned: the OS runs this thread now.
            self.looked.store(YIELDING, Ordering::Relaxed);
            std::thread::yield_now();
            self.stamp();
        }
    }
}

/// The poller, under the state's lock.
#[derive(Debug, Default)]
pub(crate) struct PollState {
    /// The kind of the worker polling, if one is.
    poller: Option<Kind>,
    /// Whether a job queued since it began polling skipped its wake-up for it.
    claimed: bool,
    /// Polls after which the worker started a job at once, and polls after which it did not.
    found: u64,
    expired: u64,
    /// Polls in a row after which no job started, and the turns to skip before the next.
    misses: u32,
    skips: u32,
    /// Poll at every turn, whatever the polls found.
    always: bool,
}

/// Polls in a row that found nothing before the pool starts skipping turns.
const MISSES_BEFORE_SKIPPING: u32 = 3;

/// At most this many turns are skipped between two polls.
const MAX_SKIPS: u32 = 64;

impl PollState {
    /// `always`: poll at every turn, even when polls keep finding nothing.
    pub(crate) fn new(always: bool) -> Self {
        PollState {
            always,
            ..PollState::default()
        }
    }

    /// Whether a worker may begin to poll now (nobody else is).
    pub(crate) fn free(&self) -> bool {
        self.poller.is_none()
    }

    pub(crate) fn begin(&mut self, kind: Kind) {
        debug_assert!(self.poller.is_none());
        self.poller = Some(kind);
        self.claimed = false;
    }

    /// The poller is back under the lock.
    pub(crate) fn end(&mut self) {
        self.poller = None;
        self.claimed = false;
    }

    /// What the worker's first look at the queue after its poll found: a job it started, or
    /// none.
    pub(crate) fn counted(&mut self, started: bool) {
        if started {
            self.found += 1;
            self.misses = 0;
        } else {
            self.expired += 1;
            self.misses = self.misses.saturating_add(1);
            if let Some(over) = self.misses.checked_sub(MISSES_BEFORE_SKIPPING) {
                self.skips = 1u32.checked_shl(over).unwrap_or(MAX_SKIPS).min(MAX_SKIPS);
            }
        }
    }

    /// Whether an idle worker that may poll does, or skips its turn (recent polls found
    /// nothing; see the module's documentation).
    pub(crate) fn take_turn(&mut self) -> bool {
        if self.skips == 0 || self.always {
            return true;
        }
        self.skips -= 1;
        false
    }

    /// Whether the poller is a worker of `kind`: a wake-up of that kind must end its poll.
    pub(crate) fn wants(&self, kind: Kind) -> bool {
        self.poller == Some(kind)
    }

    /// A job was queued that a worker of `kind` would be woken for: true if the poller is of
    /// that kind, `on_cpu` ([`IdlePoll::on_cpu`]) and not handed a job yet, which it now is
    /// (the wake-up is skipped).
    pub(crate) fn claim(&mut self, kind: Kind, on_cpu: impl FnOnce() -> bool) -> bool {
        let take = self.wants(kind) && !self.claimed && on_cpu();
        self.claimed |= take;
        take
    }

    /// (polls after which the worker started a job at once, polls after which it did not).
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.found, self.expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poller_is_handed_one_job_of_its_kind() {
        let on = || true;
        let mut p = PollState::default();
        assert!(!p.claim(Kind::Foreground, on), "nobody polls");
        p.begin(Kind::Foreground);
        assert!(!p.free());
        assert!(p.wants(Kind::Foreground) && !p.wants(Kind::Reserved));
        assert!(
            !p.claim(Kind::Reserved, on),
            "another kind's job wakes its own"
        );
        assert!(
            !p.claim(Kind::Foreground, || false),
            "off its CPU: a sleeper is woken"
        );
        assert!(p.claim(Kind::Foreground, on));
        assert!(
            !p.claim(Kind::Foreground, on),
            "a second job wakes a sleeper"
        );
        p.end();
        assert!(p.free() && !p.wants(Kind::Foreground));
        assert!(!p.claim(Kind::Foreground, on), "ended: nobody polls");
        p.counted(true);
        p.counted(false);
        assert_eq!(p.counts(), (1, 1));
    }

    #[test]
    fn polls_that_find_nothing_become_rare_and_one_that_finds_a_job_resets_them() {
        let mut p = PollState::default();
        // Turns taken (true) and skipped, polling whenever allowed and finding nothing.
        let mut turns = Vec::new();
        for _ in 0..200 {
            let take = p.take_turn();
            turns.push(take);
            if take {
                p.counted(false);
            }
        }
        let polls = turns.iter().filter(|t| **t).count();
        assert!(
            turns[..3].iter().all(|t| *t),
            "the first misses poll: {turns:?}"
        );
        assert!(!turns[3], "then a turn is skipped");
        assert!(
            polls <= 3 + 1 + 1 + 1 + 1 + 1 + 1 + 200 / 64 + 1,
            "{polls} polls in 200 turns"
        );
        let longest_skip = turns.split(|t| *t).map(<[bool]>::len).max().unwrap();
        assert_eq!(longest_skip, MAX_SKIPS as usize, "skips grow to the cap");
        // Find a job once: the misses start again from none, so two more misses skip no turn
        // and the third skips exactly one.
        while !p.take_turn() {}
        p.counted(true);
        for _ in 0..2 {
            assert!(p.take_turn());
            p.counted(false);
        }
        assert!(p.take_turn());
        p.counted(false);
        assert!(!p.take_turn(), "the third miss in a row skips one turn");
        assert!(p.take_turn(), "only one");

        let mut always = PollState::new(true);
        for _ in 0..100 {
            assert!(always.take_turn());
            always.counted(false);
        }
    }

    #[test]
    fn a_nudge_ends_the_poll_and_the_window_ends_it_otherwise() {
        let poll = std::sync::Arc::new(IdlePoll::new(Duration::from_secs(30)));
        // Looking once `seen` returned (retried: the OS may stop this thread for longer than
        // `FRESH` between the two calls on a loaded machine).
        assert!((0..1000).any(|_| {
            poll.seen();
            poll.on_cpu()
        }));
        let seen = poll.seen();
        let nudger = {
            let poll = poll.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                poll.nudge();
            })
        };
        let t = Instant::now();
        poll.wait(seen);
        assert!(t.elapsed() < Duration::from_secs(10), "ended by the nudge");
        nudger.join().unwrap();
        std::thread::sleep(FRESH * 4);
        assert!(!poll.on_cpu(), "no longer looking");

        let short = IdlePoll::new(Duration::from_millis(2));
        let t = Instant::now();
        short.wait(short.seen());
        assert!(t.elapsed() >= Duration::from_millis(2));
    }

    #[test]
    fn background_workers_and_a_zero_window_never_poll() {
        let on = IdlePoll::new(DEFAULT_IDLE_POLL);
        assert!(on.polls(Kind::Foreground) && on.polls(Kind::Reserved));
        assert!(!on.polls(Kind::Background));
        assert!(!IdlePoll::new(Duration::ZERO).polls(Kind::Foreground));
    }
}
