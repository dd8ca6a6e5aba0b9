//! Start-time fair queueing (SFQ, Goyal et al. 1996) over per-tenant FIFO queues: the pure,
//! single-threaded queue behind [`FairScheduler`](crate::FairScheduler).
//!
//! Every job costs one unit. When a job is queued it gets a *start tag*
//! `S = max(V, F_prev)` and its tenant's finish tag becomes `F = S + 1/weight`, where `V`, the
//! virtual time, is the start tag of the job most recently dispatched. Dispatch takes the
//! smallest start tag, ties broken by submission order. Consequences:
//!
//! - Deterministic: the order is a function of the sequence of `push`/`pop` calls alone.
//! - Weighted: while tenants are backlogged, each is served in proportion to its weight (the
//!   lag between two tenants is bounded by one job each).
//! - Starvation-free: a tenant arriving while another has 1000 jobs queued gets `S = V`, which
//!   is no larger than any tag still waiting, so it is dispatched next (after jobs already
//!   tagged `V`), i.e. it waits behind at most about one job per worker.
//!
//! Limitation: cost is counted in jobs, not CPU time, because cost is unknown when a job is
//! queued; a tenant whose jobs are 10× longer gets 10× the CPU at equal weight. Callers that
//! know better can split work or lower such a tenant's weight.
//!
//! Tags are fixed-point `u128` (`1/weight` as `2^32 / weight`), so integer arithmetic keeps the
//! order exact and reproducible, and overflow is out of reach.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;

use foldhash::fast::RandomState;

/// Fixed-point unit of virtual time: one job of a weight-1 tenant.
const ONE: u128 = 1 << 32;

/// Idle tenant entries are swept once the map reaches this size (and doubles after).
const MIN_SWEEP: usize = 64;

/// How jobs are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discipline {
    /// Start-time fair queueing across tenants, weighted.
    #[default]
    Fair,
    /// Plain first-in first-out, ignoring tenants and weights: the baseline for comparisons.
    Fifo,
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueFull {
    /// The queue holds its total maximum.
    #[error("queue full: {queued} jobs")]
    Total {
        /// Jobs queued across all tenants.
        queued: usize,
    },
    /// The tenant holds its per-tenant maximum.
    #[error("tenant queue full: {queued} jobs")]
    Tenant {
        /// Jobs queued for this tenant.
        queued: usize,
    },
}

/// A queued job with its tags.
struct Entry<T> {
    start: u128,
    seq: u64,
    item: T,
}

/// One tenant's queue and the finish tag of its last queued job.
struct TenantQueue<T> {
    jobs: VecDeque<Entry<T>>,
    finish: u128,
}

/// A tenant's head-of-line job in the ready heap (min-heap by `(start, seq)`).
struct Head<K> {
    start: u128,
    seq: u64,
    key: K,
}

impl<K> PartialEq for Head<K> {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl<K> Eq for Head<K> {}
impl<K> PartialOrd for Head<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Head<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap. `seq` is unique, so keys are never compared.
        (other.start, other.seq).cmp(&(self.start, self.seq))
    }
}

/// Bounded per-tenant queues with weighted fair dispatch. Not thread-safe by itself; the
/// scheduler wraps it in a mutex.
pub struct FairQueue<K, T> {
    discipline: Discipline,
    tenants: HashMap<K, TenantQueue<T>, RandomState>,
    /// Exactly one entry per tenant with a non-empty queue: its head job.
    ready: BinaryHeap<Head<K>>,
    vtime: u128,
    /// Largest finish tag handed out; `vtime` jumps here when the queue empties (SFQ's rule
    /// for the end of a busy period), so idle tenants all restart level and can be swept.
    max_finish: u128,
    seq: u64,
    len: usize,
    max_len: usize,
    max_per_tenant: usize,
    sweep_at: usize,
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    /// An empty queue holding at most `max_len` jobs, at most `max_per_tenant` per tenant.
    pub fn new(discipline: Discipline, max_len: usize, max_per_tenant: usize) -> Self {
        Self {
            discipline,
            tenants: HashMap::with_hasher(RandomState::default()),
            ready: BinaryHeap::new(),
            vtime: 0,
            max_finish: 0,
            seq: 0,
            len: 0,
            max_len,
            max_per_tenant,
            sweep_at: MIN_SWEEP,
        }
    }

    /// Queues `item` for `key` with `weight` (0 is treated as 1). The weight applies to this
    /// job, so a changed tenant weight takes effect from the next push.
    pub fn push(&mut self, key: &K, weight: u32, item: T) -> Result<(), QueueFull> {
        if self.len >= self.max_len {
            return Err(QueueFull::Total { queued: self.len });
        }
        if !self.tenants.contains_key(key) {
            if self.tenants.len() >= self.sweep_at {
                self.sweep();
            }
            let fresh = TenantQueue {
                jobs: VecDeque::new(),
                finish: 0,
            };
            self.tenants.insert(key.clone(), fresh);
        }
        let Some(tenant) = self.tenants.get_mut(key) else {
            unreachable!("invariant: inserted above")
        };
        if tenant.jobs.len() >= self.max_per_tenant {
            return Err(QueueFull::Tenant {
                queued: tenant.jobs.len(),
            });
        }
        let seq = self.seq;
        self.seq += 1;
        let start = match self.discipline {
            Discipline::Fair => self.vtime.max(tenant.finish),
            Discipline::Fifo => u128::from(seq),
        };
        tenant.finish = start + ONE / u128::from(weight.max(1));
        self.max_finish = self.max_finish.max(tenant.finish);
        if tenant.jobs.is_empty() {
            self.ready.push(Head {
                start,
                seq,
                key: key.clone(),
            });
        }
        tenant.jobs.push_back(Entry { start, seq, item });
        self.len += 1;
        Ok(())
    }

    /// Takes the next job to dispatch, with its tenant key.
    pub fn pop(&mut self) -> Option<(K, T)> {
        let head = self.ready.pop()?;
        let Some(tenant) = self.tenants.get_mut(&head.key) else {
            unreachable!("invariant: every ready head has a tenant entry")
        };
        let Some(entry) = tenant.jobs.pop_front() else {
            unreachable!("invariant: a ready tenant has a non-empty queue")
        };
        if self.discipline == Discipline::Fair {
            self.vtime = self.vtime.max(entry.start);
        }
        if let Some(next) = tenant.jobs.front() {
            self.ready.push(Head {
                start: next.start,
                seq: next.seq,
                key: head.key.clone(),
            });
        }
        self.len -= 1;
        if self.len == 0 && self.discipline == Discipline::Fair {
            self.vtime = self.max_finish;
        }
        Some((head.key, entry.item))
    }

    /// Drops entries of tenants with nothing queued whose finish tag the virtual time has
    /// passed: their next job would get `S = V` either way, so they carry no state.
    fn sweep(&mut self) {
        let vtime = self.vtime;
        let fifo = self.discipline == Discipline::Fifo;
        self.tenants
            .retain(|_, t| !t.jobs.is_empty() || (!fifo && t.finish > vtime));
        self.sweep_at = (2 * self.tenants.len()).max(MIN_SWEEP);
    }

    /// Jobs queued across all tenants.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Jobs queued for `key`.
    pub fn tenant_len(&self, key: &K) -> usize {
        self.tenants.get(key).map_or(0, |t| t.jobs.len())
    }

    /// Tenant entries held: tenants with jobs queued plus those served within the current
    /// virtual-time round (their finish tag is still ahead of `V`), with sweep slack.
    pub fn tenant_entries(&self) -> usize {
        self.tenants.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `(tenant, weight)` jobs labelled by index, then pops everything.
    fn order(discipline: Discipline, pushes: &[(u32, u32)]) -> Vec<(u32, usize)> {
        let mut q = FairQueue::new(discipline, usize::MAX, usize::MAX);
        for (i, &(k, w)) in pushes.iter().enumerate() {
            q.push(&k, w, i).unwrap();
        }
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn equal_weights_alternate_and_fifo_does_not() {
        let pushes = [(1, 1), (1, 1), (1, 1), (2, 1), (2, 1), (2, 1)];
        let fair: Vec<u32> = order(Discipline::Fair, &pushes)
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(fair, [1, 2, 1, 2, 1, 2]);
        let fifo: Vec<u32> = order(Discipline::Fifo, &pushes)
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(fifo, [1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn weights_set_the_share() {
        let mut pushes = vec![(1, 3); 30];
        pushes.extend(vec![(2, 1); 30]);
        let first_20: Vec<u32> = order(Discipline::Fair, &pushes)
            .iter()
            .take(20)
            .map(|p| p.0)
            .collect();
        assert_eq!(first_20.iter().filter(|&&k| k == 1).count(), 15);
        assert_eq!(&first_20[..4], &[1, 2, 1, 1]);
    }

    #[test]
    fn late_arrival_goes_next() {
        let mut q = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        for i in 0..1000 {
            q.push(&1u32, 1, i).unwrap();
        }
        for _ in 0..10 {
            q.pop();
        }
        q.push(&2, 1, 9999).unwrap();
        // Tenant 1's job tagged V was already dispatched, so tenant 2 is next.
        assert_eq!(q.pop(), Some((2, 9999)));
    }

    #[test]
    fn bounds_are_enforced() {
        let mut q = FairQueue::new(Discipline::Fair, 3, 2);
        q.push(&1u32, 1, ()).unwrap();
        q.push(&1, 1, ()).unwrap();
        assert_eq!(q.push(&1, 1, ()), Err(QueueFull::Tenant { queued: 2 }));
        q.push(&2, 1, ()).unwrap();
        assert_eq!(q.push(&3, 1, ()), Err(QueueFull::Total { queued: 3 }));
        assert_eq!((q.len(), q.tenant_len(&1), q.tenant_len(&3)), (3, 2, 0));
    }

    #[test]
    fn idle_tenant_entries_are_swept() {
        let mut q = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        for k in 0..10_000u32 {
            q.push(&k, 1, ()).unwrap();
            q.pop();
        }
        assert!(
            q.tenant_entries() <= 2 * MIN_SWEEP,
            "{}",
            q.tenant_entries()
        );
    }
}
