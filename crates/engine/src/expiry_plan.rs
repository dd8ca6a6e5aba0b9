//! Which tenants a pass of the expiry sweep visits, so that tenants without records due cost
//! the sweep nothing (`crate::expiry_sweep`).
//!
//! A pass over every registered tenant reads each one's registry row and its expiry index:
//! at 100,000 tenants, about 1.5 s of a core every minute, for tenants that almost all have
//! nothing due. So the plan keeps, in memory, the tenants whose expiry index holds entries,
//! each with the earliest time it knows of: the earliest entry a pass found there, or the
//! earliest `expires_at` a write stored since (noted by `IndexRegistry` after the write's
//! commit, from the changes it applies). A pass visits only the tenants due by then.
//!
//! A full pass over every tenant runs first after a start (the plan is memory only) and then
//! at least every [`FULL_EVERY`]: the net under whatever no note covers (a write that failed
//! after its commit, an import, a row-log replay, a damaged index).
//!
//! A pass that reads a tenant's index while a write of it commits must not drop that write's
//! note: each note takes a number from one sequence, and a pass settles a tenant only against
//! notes older than its read ([`ExpiryPlan::settle`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_store::TenantKey;
use strata_types::{Millis, TenantId};

use crate::registry::lock;
use crate::tenant_index::Change;

/// The longest a plan goes without a full pass.
pub(crate) const FULL_EVERY: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub(crate) struct ExpiryPlan {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the last full pass began; `None`: none since the start.
    full_at: Option<Instant>,
    /// The number of the last note.
    seq: u64,
    /// Tenants with (or, for a write's note, perhaps with) entries in their expiry index.
    next: HashMap<TenantKey, Planned>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    pub id: TenantId,
    /// The earliest time an entry of the tenant may be due.
    pub at: Millis,
    /// The number of the last note that set or lowered `at` (0: a pass's own reading).
    seq: u64,
}

impl ExpiryPlan {
    /// Notes the records with an expiry that a committed write of tenant `key` stored.
    pub fn note_changes(&self, key: TenantKey, id: &TenantId, changes: &[Change]) {
        let earliest = changes
            .iter()
            .filter_map(|c| match c {
                Change::Upsert { record, .. } => record.expires_at,
                _ => None,
            })
            .min();
        if let Some(at) = earliest {
            self.note(key, id, at);
        }
    }

    /// Notes that tenant `key` may hold entries due from `at` on (0: visit it next pass).
    pub fn note(&self, key: TenantKey, id: &TenantId, at: Millis) {
        let mut s = lock(&self.state);
        s.seq += 1;
        let seq = s.seq;
        s.next
            .entry(key)
            .and_modify(|p| {
                if p.id != *id {
                    // Another incarnation's leftover: this one starts from the write.
                    *p = Planned {
                        id: id.clone(),
                        at,
                        seq,
                    };
                } else if at <= p.at {
                    (p.at, p.seq) = (at, seq);
                } else {
                    p.seq = seq;
                }
            })
            .or_insert_with(|| Planned {
                id: id.clone(),
                at,
                seq,
            });
    }

    /// Starts a pass at `now`: whether it must visit every tenant, and else the tenants due.
    /// Either way, the sequence number to settle the tenants it reads against.
    pub fn begin(&self, now: Millis) -> (Visit, u64) {
        let mut s = lock(&self.state);
        let full = s.full_at.is_none_or(|at| at.elapsed() >= FULL_EVERY);
        let visit = if full {
            s.full_at = Some(Instant::now());
            Visit::Every
        } else {
            let mut due: Vec<(TenantKey, TenantId)> = s
                .next
                .iter()
                .filter(|(_, p)| p.at <= now)
                .map(|(k, p)| (*k, p.id.clone()))
                .collect();
            due.sort_by(|a, b| a.1.cmp(&b.1));
            Visit::Due(due)
        };
        (visit, s.seq)
    }

    /// The sequence number as it stands: taken before reading a tenant's index.
    pub fn seq(&self) -> u64 {
        lock(&self.state).seq
    }

    /// Records what a pass read of tenant `key` (`id`) before note `seq`: its earliest entry
    /// (`None`: its index is empty, or the tenant is gone). A note taken after the read keeps
    /// its tenant planned at no later than that note's time.
    pub fn settle(&self, key: TenantKey, id: &TenantId, earliest: Option<Millis>, seq: u64) {
        let mut s = lock(&self.state);
        let noted_since = s
            .next
            .get(&key)
            .filter(|p| p.id == *id && p.seq > seq)
            .cloned();
        match (earliest, noted_since) {
            (Some(at), Some(p)) => {
                s.next.insert(
                    key,
                    Planned {
                        at: at.min(p.at),
                        ..p
                    },
                );
            }
            (None, Some(_)) => {}
            (Some(at), None) => {
                s.next.insert(
                    key,
                    Planned {
                        id: id.clone(),
                        at,
                        seq: 0,
                    },
                );
            }
            (None, None) => {
                s.next.remove(&key);
            }
        }
    }

    /// Forgets tenant `key` unless a note since `seq` names it (a tenant purged, or replaced
    /// under its id).
    pub fn forget(&self, key: TenantKey, seq: u64) {
        let mut s = lock(&self.state);
        if s.next.get(&key).is_some_and(|p| p.seq <= seq) {
            s.next.remove(&key);
        }
    }

    /// What the plan holds for tenant `key` (tests).
    #[cfg(test)]
    pub fn planned(&self, key: TenantKey) -> Option<Planned> {
        lock(&self.state).next.get(&key).cloned()
    }

    /// Tenants planned (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.state).next.len()
    }
}

/// Held through a full pass: dropped before [`FullPass::done`] (the pass stopped or failed
/// before it visited every tenant), it makes the next pass full again.
pub(crate) struct FullPass<'a> {
    plan: &'a ExpiryPlan,
    done: bool,
}

impl<'a> FullPass<'a> {
    pub fn new(plan: &'a ExpiryPlan) -> Self {
        FullPass { plan, done: false }
    }

    /// Every tenant was visited.
    pub fn done(mut self) {
        self.done = true;
    }
}

impl Drop for FullPass<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.plan.state).full_at = None;
        }
    }
}

/// Which tenants a pass visits.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Visit {
    /// Every registered tenant (a full pass).
    Every,
    /// These, in id order: planned with a time due.
    Due(Vec<(TenantKey, TenantId)>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> TenantKey {
        TenantKey::for_tests(n)
    }

    fn id(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn the_first_pass_is_full_and_later_ones_visit_the_tenants_due() {
        let plan = ExpiryPlan::default();
        assert_eq!(plan.begin(100).0, Visit::Every);
        plan.note(key(1), &id("a"), 150);
        plan.note(key(2), &id("b"), 90);
        plan.note(key(2), &id("b"), 300);
        assert_eq!(plan.begin(100).0, Visit::Due(vec![(key(2), id("b"))]));
        assert_eq!(
            plan.begin(200).0,
            Visit::Due(vec![(key(1), id("a")), (key(2), id("b"))])
        );
    }

    #[test]
    fn a_settle_drops_a_tenant_with_nothing_left_and_moves_one_to_its_next_entry() {
        let plan = ExpiryPlan::default();
        plan.note(key(1), &id("a"), 10);
        plan.note(key(2), &id("b"), 10);
        let seq = plan.seq();
        plan.settle(key(1), &id("a"), None, seq);
        plan.settle(key(2), &id("b"), Some(500), seq);
        assert_eq!(plan.planned(key(1)), None);
        assert_eq!(plan.planned(key(2)).map(|p| p.at), Some(500));
        plan.forget(key(2), plan.seq());
        assert_eq!(plan.len(), 0);
    }

    /// A write noted after a pass read the tenant's index keeps the tenant planned: the pass
    /// may have read before the write committed.
    #[test]
    fn a_note_after_the_read_survives_the_settle() {
        let plan = ExpiryPlan::default();
        let seq = plan.seq();
        plan.note(key(1), &id("a"), 40);
        plan.settle(key(1), &id("a"), None, seq);
        assert_eq!(plan.planned(key(1)).map(|p| p.at), Some(40));
        plan.settle(key(1), &id("a"), Some(20), seq);
        assert_eq!(plan.planned(key(1)).map(|p| p.at), Some(20));
        plan.forget(key(1), seq);
        assert!(plan.planned(key(1)).is_some());
        // Settled against a later read, it goes.
        plan.settle(key(1), &id("a"), None, plan.seq());
        assert_eq!(plan.planned(key(1)), None);
    }

    /// A tenant re-created under another key, or a key reused by another id, is planned as the
    /// new one.
    #[test]
    fn another_incarnation_replaces_the_planned_one() {
        let plan = ExpiryPlan::default();
        plan.note(key(1), &id("a"), 10);
        plan.note(key(1), &id("z"), 99);
        assert_eq!(
            plan.planned(key(1)).map(|p| (p.id, p.at)),
            Some((id("z"), 99))
        );
    }
}
