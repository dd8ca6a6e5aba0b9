//! A tenant slot's integrity tracker, and what its many readers and samplers (every search,
//! every write) use without its lock: a copy of its state, and a bound under which a search's
//! latency sample is held back from the tracker.
//!
//! The tracker is reached only through [`SlotIntegrity::with_tracker`] (or the health-aware
//! variants the search's sample uses), which copies the state out on the way back, so the
//! copy cannot fall behind a change made under the lock.
//!
//! Every search samples its latency. Taking the tracker's lock for each would make every
//! thread searching a tenant write the lock's cache line. While the tracker is quiet (state
//! `normal`, no move pending, every signal well below the enter thresholds:
//! `Tracker::quiet_latency_pressure`), a sample below that bound cannot move the state
//! machine, so it is added to a run kept by the searching thread's stripe instead
//! ([`SlotIntegrity::try_hold_back`]), and the runs are folded into the tracker, in full,
//! each time its lock is next taken (any sample that is not held back, a queue sample, a
//! report), before anything reads it. No sample is lost: a run is changed and emptied only
//! under its own stripe's lock.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crossbeam_utils::CachePadded;

use crate::integrity::{IntegrityPolicy, IntegrityState, LatencyRun, Tracker};
use crate::registry::lock;

/// Stripes of held-back samples per tenant: threads take them in turn, so up to this many
/// threads searching one tenant each write a line of their own.
const STRIPES: usize = 8;

/// The stripe of the calling thread.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// The quiet bound as published: the policy's fingerprint in the high half, the latency
/// pressure bound as an `f32` in the low half (rounded towards zero), 0 for none.
fn pack(policy: &IntegrityPolicy, bound: f64) -> u64 {
    let mut b = bound as f32;
    if f64::from(b) > bound {
        b = f32::from_bits(b.to_bits() - 1);
    }
    (u64::from(policy.fingerprint()) << 32) | u64::from(b.to_bits())
}

/// The in-memory code of an [`IntegrityState`] in the copy (never stored on disk).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateCode {
    Normal = 0,
    Stress = 1,
    Critical = 2,
}

/// A byte that is no [`StateCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("integrity state code {0} is not a state")]
struct UnknownStateCode(u8);

impl TryFrom<u8> for StateCode {
    type Error = UnknownStateCode;

    fn try_from(code: u8) -> Result<Self, Self::Error> {
        match code {
            0 => Ok(Self::Normal),
            1 => Ok(Self::Stress),
            2 => Ok(Self::Critical),
            other => Err(UnknownStateCode(other)),
        }
    }
}

impl From<IntegrityState> for StateCode {
    fn from(state: IntegrityState) -> Self {
        match state {
            IntegrityState::Normal => Self::Normal,
            IntegrityState::Stress => Self::Stress,
            IntegrityState::Critical => Self::Critical,
        }
    }
}

impl From<StateCode> for IntegrityState {
    fn from(code: StateCode) -> Self {
        match code {
            StateCode::Normal => Self::Normal,
            StateCode::Stress => Self::Stress,
            StateCode::Critical => Self::Critical,
        }
    }
}

/// What the tracker's lock guards.
#[derive(Default)]
struct Guarded {
    tracker: Tracker,
    /// `IndexLock::writes()` when the tracker's health was last read from the index: while
    /// it matches, the index is as it was and the health the tracker holds is current.
    health_read_at: u64,
    /// The policy of the last search sample: the one the quiet bound is worked out under,
    /// and the held-back runs folded under.
    policy: Option<IntegrityPolicy>,
}

/// One tenant's integrity tracker and what is read of it without its lock.
pub(crate) struct SlotIntegrity {
    guarded: Mutex<Guarded>,
    /// The tracker's state as of the last call that held its lock, as a `StateCode`.
    state: AtomicU8,
    /// The quiet bound as of the last call that held the lock (`pack`), 0 for none.
    quiet: AtomicU64,
    /// A copy of `Guarded::health_read_at`: a sample is held back only while the health
    /// the tracker holds is current.
    health_read_at: AtomicU64,
    /// Held-back samples by stripe, made at the first one.
    runs: OnceLock<Box<[CachePadded<Mutex<LatencyRun>>]>>,
}

impl Default for SlotIntegrity {
    fn default() -> Self {
        Self {
            guarded: Mutex::default(),
            state: AtomicU8::new(StateCode::Normal as u8),
            quiet: AtomicU64::new(0),
            health_read_at: AtomicU64::new(0),
            runs: OnceLock::new(),
        }
    }
}

impl Guarded {
    fn remember(&mut self, policy: &IntegrityPolicy) {
        if self.policy.as_ref() != Some(policy) {
            self.policy = Some(policy.clone());
        }
    }
}

impl SlotIntegrity {
    /// Runs `f` on the tracker under its lock, then copies its state out.
    pub fn with_tracker<R>(&self, f: impl FnOnce(&mut Tracker) -> R) -> R {
        self.with_guarded(|g| f(&mut g.tracker))
    }

    /// Runs `f` on the tracker, for a search's sample under `policy`, if its health was read
    /// from the index at `writes` (the index has not changed since); `None`, without running
    /// `f`, otherwise.
    pub fn with_tracker_if_health_read_at<R>(
        &self,
        writes: u64,
        policy: &IntegrityPolicy,
        f: impl FnOnce(&mut Tracker) -> R,
    ) -> Option<R> {
        self.with_guarded(|g| {
            (g.health_read_at == writes).then(|| {
                g.remember(policy);
                f(&mut g.tracker)
            })
        })
    }

    /// Runs `f` on the tracker, for a search's sample under `policy`, which refreshes its
    /// health from the index as of `writes`.
    pub fn with_tracker_reading_health_at<R>(
        &self,
        writes: u64,
        policy: &IntegrityPolicy,
        f: impl FnOnce(&mut Tracker) -> R,
    ) -> R {
        self.with_guarded(|g| {
            g.health_read_at = writes;
            self.health_read_at.store(writes, Ordering::Relaxed);
            g.remember(policy);
            f(&mut g.tracker)
        })
    }

    /// Holds a search's latency sample back from the tracker if it cannot move the state
    /// machine (see the module's documentation): the tracker is quiet under this `policy`,
    /// its health was read from the index at `writes` (the index is unchanged), and the
    /// sample is below the bound. Whether it was held back; if not, the caller samples it
    /// under the lock.
    pub fn try_hold_back(&self, policy: &IntegrityPolicy, writes: u64, latency_ms: f64) -> bool {
        let quiet = self.quiet.load(Ordering::Relaxed);
        if quiet == 0
            || (quiet >> 32) as u32 != policy.fingerprint()
            || self.health_read_at.load(Ordering::Relaxed) != writes
        {
            return false;
        }
        let bound = f64::from(f32::from_bits(quiet as u32));
        let pressure = if policy.latency_contract_ms > 0.0 {
            latency_ms / policy.latency_contract_ms
        } else {
            0.0
        };
        // A NaN (latency or pressure) compares as nothing, so it is never held back.
        if latency_ms.is_nan() || pressure.partial_cmp(&bound) != Some(std::cmp::Ordering::Less) {
            return false;
        }
        let runs = self.runs.get_or_init(|| {
            (0..STRIPES)
                .map(|_| CachePadded::new(Mutex::default()))
                .collect()
        });
        lock(&runs[stripe()]).add(latency_ms);
        true
    }

    #[cfg(test)]
    pub fn health_read_at(&self) -> u64 {
        lock(&self.guarded).health_read_at
    }

    fn with_guarded<R>(&self, f: impl FnOnce(&mut Guarded) -> R) -> R {
        let mut guarded = lock(&self.guarded);
        self.fold_runs(&mut guarded);
        let result = f(&mut guarded);
        let code = StateCode::from(guarded.tracker.machine.state);
        self.state.store(code as u8, Ordering::Relaxed);
        let quiet = guarded.policy.as_ref().and_then(|p| {
            let bound = guarded.tracker.quiet_latency_pressure(p)?;
            Some(pack(p, bound))
        });
        self.quiet.store(quiet.unwrap_or(0), Ordering::Relaxed);
        result
    }

    /// Folds every held-back run into the tracker, under the policy they were held back
    /// under (the one the published bound was worked out with).
    fn fold_runs(&self, guarded: &mut Guarded) {
        let (Some(runs), Some(policy)) = (self.runs.get(), guarded.policy.as_ref()) else {
            return;
        };
        let mut now = None;
        for run in runs.iter() {
            let run = std::mem::take(&mut *lock(run));
            if run.count > 0 {
                let now = *now.get_or_insert_with(strata_types::now_millis);
                guarded.tracker.fold(policy, run, now);
            }
        }
    }

    /// The tracker's state as of its last change, read without its lock. A copy that does
    /// not decode (a bug: only `with_guarded` writes it) is never taken for a state: the
    /// tracker itself is read under its lock instead, and the copy repaired.
    pub fn state(&self) -> IntegrityState {
        match StateCode::try_from(self.state.load(Ordering::Relaxed)) {
            Ok(code) => code.into(),
            Err(e) => {
                tracing::error!(error = %e, "integrity state copy undecodable; read the tracker");
                self.with_tracker(|t| t.machine.state)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::{IndexHealth, IntegrityPolicy};

    const STATES: [IntegrityState; 3] = [
        IntegrityState::Normal,
        IntegrityState::Stress,
        IntegrityState::Critical,
    ];

    #[test]
    fn every_state_has_its_own_code_and_no_other_byte_decodes() {
        for state in STATES {
            let code = StateCode::from(state) as u8;
            assert_eq!(
                IntegrityState::from(StateCode::try_from(code).unwrap()),
                state
            );
        }
        let codes: Vec<u8> = STATES.iter().map(|s| StateCode::from(*s) as u8).collect();
        for byte in 0..=u8::MAX {
            assert_eq!(StateCode::try_from(byte).is_ok(), codes.contains(&byte));
        }
        assert_eq!(StateCode::try_from(3), Err(UnknownStateCode(3)));
    }

    /// A tracker driven critical: every sample is far over a contract of a nanosecond.
    fn critical(integrity: &SlotIntegrity) {
        let policy = IntegrityPolicy {
            latency_contract_ms: 1e-6,
            consecutive: 1,
            cooldown_ms: 0,
            ..IntegrityPolicy::default()
        };
        integrity.with_tracker(|t| {
            let health = IndexHealth {
                deleted_fraction: 0.0,
                reachable: 1.0,
            };
            t.sample(&policy, Some(10.0), health, 0)
        });
    }

    #[test]
    fn the_copy_follows_every_change_made_under_the_lock() {
        let integrity = SlotIntegrity::default();
        assert_eq!(integrity.state(), IntegrityState::Normal);
        critical(&integrity);
        assert_eq!(integrity.state(), IntegrityState::Critical);
        integrity.with_tracker(|t| t.machine.state = IntegrityState::Stress);
        assert_eq!(integrity.state(), IntegrityState::Stress);
    }

    const HEALTHY: IndexHealth = IndexHealth {
        deleted_fraction: 0.0,
        reachable: 1.0,
    };

    /// A search's sample as `IndexRegistry::integrity_sample` takes it on an index that has
    /// not changed (`writes` 0): held back when it may be, under the lock otherwise.
    fn sample(integrity: &SlotIntegrity, policy: &IntegrityPolicy, ms: f64, now: i64) {
        if integrity.try_hold_back(policy, 0, ms) {
            return;
        }
        integrity.with_tracker_reading_health_at(0, policy, |t| {
            t.sample(policy, Some(ms), HEALTHY, now)
        });
    }

    /// Samples held back by many threads at once are all taken in: with every sample equal
    /// to `x`, the average after `n` of them from `a` is `x + (a − x)·0.8ⁿ` in any order, so
    /// one sample lost or taken twice moves it by far more than rounding.
    #[test]
    fn samples_held_back_on_many_threads_are_all_counted() {
        const THREADS: usize = 4;
        const EACH: usize = 25;
        let integrity = SlotIntegrity::default();
        let policy = IntegrityPolicy {
            latency_contract_ms: 100.0,
            ..IntegrityPolicy::default()
        };
        // The first sample starts the average under the lock (a = 1).
        sample(&integrity, &policy, 1.0, 0);
        assert!(
            !integrity
                .runs
                .get()
                .is_some_and(|r| r.iter().any(|r| lock(r).count > 0))
        );
        let barrier = std::sync::Barrier::new(THREADS);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..EACH {
                        assert!(integrity.try_hold_back(&policy, 0, 2.0));
                    }
                });
            }
        });
        let n = (THREADS * EACH) as i32;
        let expected = |n: i32| 2.0 + (1.0 - 2.0) * 0.8f64.powi(n);
        let got = integrity.with_tracker(|t| t.latency_ms);
        assert!(
            (got - expected(n)).abs() < 1e-13,
            "{got} vs {}",
            expected(n)
        );
        assert!((expected(n) - expected(n - 1)).abs() > 1e-11);
        // Taken in once: the runs are empty now, and reading again changes nothing.
        assert_eq!(integrity.with_tracker(|t| t.latency_ms), got);
    }

    #[test]
    fn nothing_is_held_back_under_another_policy_or_a_changed_index_or_over_the_bound() {
        let integrity = SlotIntegrity::default();
        let policy = IntegrityPolicy {
            latency_contract_ms: 10.0,
            ..IntegrityPolicy::default()
        };
        // Before any sample the average has not started: nothing is held back.
        assert!(!integrity.try_hold_back(&policy, 0, 1.0));
        sample(&integrity, &policy, 1.0, 0);
        assert!(integrity.try_hold_back(&policy, 0, 1.0));
        let other = IntegrityPolicy {
            latency_contract_ms: 20.0,
            ..policy.clone()
        };
        assert!(!integrity.try_hold_back(&other, 0, 1.0));
        // The index changed since the health was read.
        assert!(!integrity.try_hold_back(&policy, 1, 1.0));
        // A sample at the stress threshold could start a move; NaN is never held back.
        assert!(!integrity.try_hold_back(&policy, 0, 10.0));
        assert!(!integrity.try_hold_back(&policy, 0, f64::NAN));
        assert!(integrity.try_hold_back(&policy, 0, 9.9));
    }

    proptest::proptest! {
        /// Holding samples back changes nothing a reader sees: after every sample the state
        /// (read without the lock, as searches and writes do) is the one a tracker fed every
        /// sample under its lock holds, and in the end the averages, the last pressure and
        /// every move agree (pressures up to rounding).
        #[test]
        fn holding_back_keeps_the_state_machine_as_it_was(
            samples in proptest::collection::vec((0.0f64..60.0, 0i64..50), 1..300),
            consecutive in 1u32..4,
            cooldown_ms in 0u64..100,
        ) {
            let policy = IntegrityPolicy {
                latency_contract_ms: 10.0,
                consecutive,
                cooldown_ms,
                ..IntegrityPolicy::default()
            };
            let integrity = SlotIntegrity::default();
            let mut model = Tracker::default();
            let mut now = 0;
            for (ms, dt) in samples {
                now += dt;
                sample(&integrity, &policy, ms, now);
                model.sample(&policy, Some(ms), HEALTHY, now);
                proptest::prop_assert_eq!(integrity.state(), model.machine.state);
            }
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
            let (latency, pressure, moves) = integrity.with_tracker(|t| {
                (t.latency_ms, t.machine.last_pressure, t.machine.recent.clone())
            });
            proptest::prop_assert!(close(latency, model.latency_ms));
            proptest::prop_assert!(close(pressure, model.machine.last_pressure));
            proptest::prop_assert_eq!(moves.len(), model.machine.recent.len());
            for (a, b) in moves.iter().zip(&model.machine.recent) {
                proptest::prop_assert_eq!((a.from, a.to, a.at), (b.from, b.to, b.at));
                proptest::prop_assert!(close(a.pressure, b.pressure));
            }
        }
    }

    #[test]
    fn an_undecodable_copy_reads_the_tracker_not_a_default() {
        let integrity = SlotIntegrity::default();
        critical(&integrity);
        integrity.state.store(7, Ordering::Relaxed);
        assert_eq!(integrity.state(), IntegrityState::Critical);
        // Repaired on the way.
        assert_eq!(
            integrity.state.load(Ordering::Relaxed),
            StateCode::Critical as u8
        );
    }
}
