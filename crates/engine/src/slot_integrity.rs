//! A tenant slot's integrity tracker, and a lock-free copy of its state for the many readers
//! of the state (every search, every write).
//!
//! The tracker is reached only through [`SlotIntegrity::with_tracker`] (or the health-aware
//! variants the search's sample uses), which copies the state out on the way back, so the
//! copy cannot fall behind a change made under the lock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::integrity::{IntegrityState, Tracker};
use crate::registry::lock;

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
}

/// One tenant's integrity tracker and the copy of its state.
pub(crate) struct SlotIntegrity {
    guarded: Mutex<Guarded>,
    /// The tracker's state as of the last call that held its lock, as a `StateCode`.
    state: AtomicU8,
}

impl Default for SlotIntegrity {
    fn default() -> Self {
        Self {
            guarded: Mutex::default(),
            state: AtomicU8::new(StateCode::Normal as u8),
        }
    }
}

impl SlotIntegrity {
    /// Runs `f` on the tracker under its lock, then copies its state out.
    pub fn with_tracker<R>(&self, f: impl FnOnce(&mut Tracker) -> R) -> R {
        self.with_guarded(|g| f(&mut g.tracker))
    }

    /// Runs `f` on the tracker if its health was read from the index at `writes` (the index
    /// has not changed since); `None`, without running `f`, otherwise.
    pub fn with_tracker_if_health_read_at<R>(
        &self,
        writes: u64,
        f: impl FnOnce(&mut Tracker) -> R,
    ) -> Option<R> {
        self.with_guarded(|g| (g.health_read_at == writes).then(|| f(&mut g.tracker)))
    }

    /// Runs `f` on the tracker, which refreshes its health from the index as of `writes`.
    pub fn with_tracker_reading_health_at<R>(
        &self,
        writes: u64,
        f: impl FnOnce(&mut Tracker) -> R,
    ) -> R {
        self.with_guarded(|g| {
            g.health_read_at = writes;
            f(&mut g.tracker)
        })
    }

    #[cfg(test)]
    pub fn health_read_at(&self) -> u64 {
        lock(&self.guarded).health_read_at
    }

    fn with_guarded<R>(&self, f: impl FnOnce(&mut Guarded) -> R) -> R {
        let mut guarded = lock(&self.guarded);
        let result = f(&mut guarded);
        let code = StateCode::from(guarded.tracker.machine.state);
        self.state.store(code as u8, Ordering::Relaxed);
        result
    }

    /// Whether the tracker is at rest ([`Tracker::at_rest`]); `false` while another thread
    /// holds it, without waiting.
    pub fn at_rest(&self) -> bool {
        self.guarded.try_lock().is_ok_and(|g| g.tracker.at_rest())
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
