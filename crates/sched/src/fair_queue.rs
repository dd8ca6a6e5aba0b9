//! Start-time fair queueing (SFQ, Goyal et al. 1996) over per-tenant FIFO queues, charged by
//! measured cost: the pure, single-threaded queue behind [`FairScheduler`](crate::FairScheduler).
//!
//! A tenant's head-of-line job has a *start tag* `S`. Dispatch takes the smallest start tag,
//! ties broken by submission order, and charges the tenant its estimated cost:
//! `F = S + estimate/weight`, its finish tag, which is also the start tag of its next job.
//! When the job finishes, the caller reports what it really cost ([`FairQueue::complete`], the
//! scheduler measures the worker thread's CPU time), and the difference moves `F` and the
//! tenant's waiting head: a tenant whose requests cost 10× more is served 10× less often, so at
//! equal weights each backlogged tenant gets an equal share of CPU time, not of requests. The
//! estimate is the tenant's recent average cost, so for steady workloads corrections are small.
//!
//! A tenant whose queue was empty starts at `max(C, F)`, where `C`, the clock, stands for the
//! virtual time of the fluid model SFQ approximates (GPS): it advances with the work done
//! divided by the total weight of the tenants with work queued or running, and never falls
//! behind `V`, the start tag of the job most recently dispatched in the shared order. Plain SFQ starts such a
//! tenant at `V`, which stands still while jobs tagged at it keep arriving: with many tenants
//! that each send one request at a time, a tenant served a moment ago (tagged one job past `V`)
//! waited behind every other tenant arriving until all of them had had a turn, so fair
//! queueing gave equal tenants a tail several times FIFO's. With the clock, later arrivals get
//! later tags and such tenants are served about in arrival order. `C` is capped just below the
//! start tag of every tenant's second waiting job, so the bound below holds about as in SFQ.
//! Consequences:
//!
//! - Deterministic: the order is a function of the sequence of `push`/`pop`/`complete` calls
//!   and the reported costs alone. Without `complete`, every job costs the same estimate.
//! - Weighted: while tenants are backlogged, each is served in proportion to its weight (the
//!   lag between two tenants is bounded by about one job's cost each, plus the jobs in flight).
//! - Starvation-free: a tenant arriving while others have 1000 jobs queued starts below the
//!   second waiting job of each, so it waits behind at most one job of each while jobs cost
//!   what they were charged, and about two jobs' cost of each when refunds (jobs cheaper than
//!   estimated) move their later jobs down, plus the jobs workers already hold. Refunds never
//!   move a tag below `V`.
//!
//! Tags are fixed-point `u128` (nanoseconds × 2^20 / weight), so integer arithmetic keeps the
//! order exact and reproducible, and overflow is out of reach.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;

use foldhash::fast::RandomState;

/// Fixed-point scale of virtual time: one nanosecond of a weight-1 tenant's cost.
const SCALE: u128 = 1 << 20;

/// What a job is assumed to cost before anything was measured: 1 ms.
pub const DEFAULT_COST_NS: u64 = 1_000_000;

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

/// Which workers may run a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lane {
    /// Any shared worker, in the fair order across all tenants.
    #[default]
    Shared,
    /// Any shared worker in the fair order, and also the reserved workers, which run nothing
    /// else: the tenant's latency then does not depend on how busy the shared workers are.
    Reserved,
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

/// A queued job: its submission number, its tenant's weight when it was queued, and itself.
struct Entry<T> {
    seq: u64,
    weight: u32,
    item: T,
}

/// One tenant's queue and tags.
struct TenantQueue<T> {
    jobs: VecDeque<Entry<T>>,
    /// Finish tag: virtual time charged to the tenant so far.
    finish: u128,
    /// Start tag of the head job (meaningful while `jobs` is not empty).
    head_start: u128,
    /// Bumped whenever the head's tag changes, so older heap entries are skipped.
    head_version: u64,
    /// Recent average cost of the tenant's jobs, in nanoseconds.
    estimate: u64,
    /// Jobs dispatched and not yet completed: the tenant's entry is kept for their charges.
    running: u32,
    /// The lane of the tenant's latest push: whether its head is offered to reserved workers.
    lane: Lane,
    /// Its part of the active weight while it has work queued or running: the weight of its
    /// head when it became active and after each dispatch (with none waiting, of the job it
    /// dispatched last).
    weight: u32,
    /// The smallest start tag the tenant is filed under in the second-job heap: at most the
    /// start tag of its second waiting job, if it has one (the heap is updated lazily as that
    /// tag rises, and the entry dropped when it comes up with fewer than two waiting).
    filed: Option<u128>,
}

impl<T> TenantQueue<T> {
    /// Whether the tenant has work queued or running.
    fn is_active(&self) -> bool {
        !self.jobs.is_empty() || self.running > 0
    }

    /// The start tag its second waiting job will get once its head is dispatched, if it has
    /// one: a newcomer is tagged below it (see [`FairQueue::push_in`]).
    fn second_start(&self) -> Option<u128> {
        let head = self.jobs.front()?;
        (self.jobs.len() >= 2).then(|| self.head_start + virtual_cost(self.estimate, head.weight))
    }
}

/// A tenant in the second-job heap (min-heap by `start`): entries are current only if `start`
/// is the tenant's `filed` tag.
struct Second<K> {
    start: u128,
    key: K,
}

impl<K> PartialEq for Second<K> {
    fn eq(&self, other: &Self) -> bool {
        self.start == other.start
    }
}
impl<K> Eq for Second<K> {}
impl<K> PartialOrd for Second<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Second<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.start.cmp(&self.start)
    }
}

/// A tenant's head-of-line job in the ready heap (min-heap by `(start, seq)`). Entries whose
/// `version` is no longer the tenant's are stale and skipped.
struct Head<K> {
    start: u128,
    seq: u64,
    version: u64,
    key: K,
}

/// What a dispatch charged, to be settled with [`FairQueue::complete`] once the job's real
/// cost is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge<K> {
    /// The tenant.
    pub key: K,
    /// The estimate charged at dispatch, in nanoseconds.
    pub estimate_ns: u64,
    weight: u32,
}

impl<K> PartialEq for Head<K> {
    fn eq(&self, other: &Self) -> bool {
        (self.seq, self.version) == (other.seq, other.version)
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
        // Reversed: BinaryHeap is a max-heap. `(seq, version)` is unique, so keys are never
        // compared.
        (other.start, other.seq, other.version).cmp(&(self.start, self.seq, self.version))
    }
}

/// Bounded per-tenant queues with weighted fair dispatch. Not thread-safe by itself; the
/// scheduler wraps it in a mutex.
pub struct FairQueue<K, T> {
    discipline: Discipline,
    tenants: HashMap<K, TenantQueue<T>, RandomState>,
    /// One current entry per tenant with a non-empty queue (its head job), plus stale ones.
    ready: BinaryHeap<Head<K>>,
    /// The same for tenants in the reserved lane only: what reserved workers choose from.
    /// An entry is current only if its version is the tenant's, as in `ready`.
    reserved: BinaryHeap<Head<K>>,
    /// Tenants by a lower bound of the start tag of their second waiting job (the newcomers'
    /// cap): one current entry for each tenant with two jobs or more waiting, plus entries of
    /// tenants with fewer, dropped when they come up, and superseded ones.
    seconds: BinaryHeap<Second<K>>,
    vtime: u128,
    /// The reserved lane's own virtual time: the start tag of the last job a reserved worker
    /// took. Reserved dispatches do not move `vtime` (see `pop_from`), so a tenant served
    /// there runs its tags far past it; a head that comes up in the reserved lane behind this
    /// is lifted to it, so that a second dedicated tenant competes level with the first
    /// instead of being served alone until its tags catch up.
    reserved_vtime: u128,
    /// Where a tenant whose queue was empty starts (see the module docs): advances with the
    /// work done divided by the active weight; never behind `vtime`.
    clock: u128,
    /// Sum of the weights of the tenants with work queued or running.
    active_weight: u64,
    /// Largest finish tag handed out; `vtime` jumps here when the queue empties (SFQ's rule
    /// for the end of a busy period), so idle tenants all restart level and can be swept.
    max_finish: u128,
    seq: u64,
    len: usize,
    max_len: usize,
    max_per_tenant: usize,
    sweep_at: usize,
    /// Recent average cost over all tenants: the first estimate of a new tenant.
    typical: u64,
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    /// An empty queue holding at most `max_len` jobs, at most `max_per_tenant` per tenant.
    pub fn new(discipline: Discipline, max_len: usize, max_per_tenant: usize) -> Self {
        Self {
            discipline,
            tenants: HashMap::with_hasher(RandomState::default()),
            ready: BinaryHeap::new(),
            reserved: BinaryHeap::new(),
            seconds: BinaryHeap::new(),
            vtime: 0,
            reserved_vtime: 0,
            clock: 0,
            active_weight: 0,
            max_finish: 0,
            seq: 0,
            len: 0,
            max_len,
            max_per_tenant,
            sweep_at: MIN_SWEEP,
            typical: DEFAULT_COST_NS,
        }
    }

    /// Queues `item` for `key` with `weight` (0 is treated as 1). The weight applies to this
    /// job, so a changed tenant weight takes effect from the next push.
    pub fn push(&mut self, key: &K, weight: u32, item: T) -> Result<(), QueueFull> {
        self.push_in(key, weight, Lane::Shared, item)
    }

    /// [`push`](Self::push) in a [`Lane`]. Like the weight, the lane is the caller's to pass
    /// on every push; a tenant's latest push decides whether its waiting jobs are offered to
    /// reserved workers.
    pub fn push_in(&mut self, key: &K, weight: u32, lane: Lane, item: T) -> Result<(), QueueFull> {
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
                head_start: 0,
                head_version: 0,
                estimate: self.typical,
                running: 0,
                lane,
                weight: 1,
                filed: None,
            };
            self.tenants.insert(key.clone(), fresh);
        }
        // Where the tenant starts if its queue is empty (found before borrowing it mutably).
        let newcomer = match self.discipline {
            Discipline::Fair if self.tenant_len(key) == 0 => self.newcomer_start(),
            _ => 0,
        };
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
        let lane_changed = tenant.lane != lane;
        if lane_changed && lane == Lane::Shared && self.discipline == Discipline::Fair {
            // Its tags ran ahead on its own workers; back among the shared tenants it starts
            // level with them rather than waiting for them to catch up.
            tenant.finish = tenant.finish.min(self.vtime);
            tenant.head_start = tenant.head_start.min(self.vtime.max(tenant.finish));
        }
        tenant.lane = lane;
        let weight = weight.max(1);
        if !tenant.is_active() {
            tenant.weight = weight;
            self.active_weight += u64::from(weight);
        }
        if tenant.jobs.is_empty() {
            tenant.head_start = match self.discipline {
                Discipline::Fair => newcomer.max(tenant.finish),
                Discipline::Fifo => u128::from(seq),
            };
            tenant.jobs.push_back(Entry { seq, weight, item });
            self.offer_head(key);
        } else if lane_changed {
            // The waiting head moves into (or out of) the reserved lane: re-offer it.
            tenant.jobs.push_back(Entry { seq, weight, item });
            self.offer_head(key);
        } else {
            tenant.jobs.push_back(Entry { seq, weight, item });
            if tenant.jobs.len() == 2 {
                self.offer_second(key);
            }
        }
        self.len += 1;
        self.prune_stale();
        Ok(())
    }

    /// Takes the next job to dispatch, with its tenant key, charging the tenant its estimated
    /// cost (never corrected: use [`pop_charged`](Self::pop_charged) and
    /// [`complete`](Self::complete) to charge measured costs).
    pub fn pop(&mut self) -> Option<(K, T)> {
        self.pop_charged().map(|(charge, item)| {
            self.advance_clock(charge.estimate_ns);
            self.release(&charge.key);
            (charge.key, item)
        })
    }

    /// Takes the next job to dispatch and charges its tenant the estimated cost; settle the
    /// returned [`Charge`] with [`complete`](Self::complete) when the job has run.
    pub fn pop_charged(&mut self) -> Option<(Charge<K>, T)> {
        self.pop_from(Lane::Shared, true, |_, _| true)
    }

    /// Like [`pop_charged`](Self::pop_charged), among the tenants whose head-of-line job
    /// `allowed` accepts: the fairest job of those, `None` if none has one waiting. The others'
    /// heads keep their place. Costs a heap pop and push per tenant passed over, so it suits
    /// filters that pass over few tenants (the pool's background workers pass over the few
    /// within their share).
    pub fn pop_charged_where(
        &mut self,
        allowed: impl FnMut(&K, &T) -> bool,
    ) -> Option<(Charge<K>, T)> {
        self.pop_from(Lane::Shared, true, allowed)
    }

    /// Like [`pop_charged_where`](Self::pop_charged_where), for workers outside the shared
    /// order (the pool's background workers): the tenant is charged as usual, but the shared
    /// virtual time does not move, so work done aside never lifts the tags of the tenants
    /// waiting for the normal workers. A tenant served aside whose head fell behind the
    /// virtual time is lifted to it when the normal workers next consider it.
    pub fn pop_charged_aside(
        &mut self,
        allowed: impl FnMut(&K, &T) -> bool,
    ) -> Option<(Charge<K>, T)> {
        self.pop_from(Lane::Shared, false, allowed)
    }

    /// The virtual time: the start tag of the latest job dispatched in the shared order.
    pub fn virtual_time(&self) -> u128 {
        self.vtime
    }

    /// Like [`pop_charged`](Self::pop_charged), for a reserved worker: the fairest job among
    /// tenants in the [`Lane::Reserved`] lane only, `None` if none of them has one waiting.
    pub fn pop_reserved(&mut self) -> Option<(Charge<K>, T)> {
        self.pop_from(Lane::Reserved, false, |_, _| true)
    }

    /// Like [`pop_reserved`](Self::pop_reserved), among the tenants whose head-of-line job
    /// `allowed` accepts (as [`pop_charged_where`](Self::pop_charged_where)).
    pub fn pop_reserved_where(
        &mut self,
        allowed: impl FnMut(&K, &T) -> bool,
    ) -> Option<(Charge<K>, T)> {
        self.pop_from(Lane::Reserved, false, allowed)
    }

    /// The next job of an `allowed` tenant from the shared order (every tenant) or the
    /// reserved one. Only a pop in the shared order (`in_order`) moves the virtual time, and
    /// it first lifts a chosen head that fell behind the virtual time (while its tenant was
    /// served aside) up to it, as a push does for a tenant whose queue was empty: a tenant
    /// coming back from the background competes level with the others, not ahead of them.
    fn pop_from(
        &mut self,
        from: Lane,
        in_order: bool,
        mut allowed: impl FnMut(&K, &T) -> bool,
    ) -> Option<(Charge<K>, T)> {
        // The level a chosen head that fell behind is lifted to: the shared virtual time in
        // the shared order, the reserved lane's own in the reserved lane.
        let lift_to = match (self.discipline, from) {
            (Discipline::Fifo, _) => None,
            (Discipline::Fair, Lane::Shared) => in_order.then_some(self.vtime),
            (Discipline::Fair, Lane::Reserved) => Some(self.reserved_vtime),
        };
        // Current heads of tenants passed over, put back once the choice is made.
        let mut passed = Vec::new();
        let found = loop {
            let popped = match from {
                Lane::Shared => self.ready.pop(),
                Lane::Reserved => self.reserved.pop(),
            };
            let Some(head) = popped else {
                break None;
            };
            let Some(tenant) = self
                .tenants
                .get_mut(&head.key)
                .filter(|t| t.head_version == head.version)
            else {
                continue;
            };
            let Some(first) = tenant.jobs.front() else {
                continue;
            };
            if !allowed(&head.key, &first.item) {
                passed.push(head);
                continue;
            }
            if let Some(level) = lift_to
                && head.start < level
            {
                // Re-offered at the virtual time; each head is lifted at most once per pop,
                // since the virtual time does not move within it.
                tenant.head_start = level;
                self.offer_head(&head.key);
                continue;
            }
            break Some(head);
        };
        match from {
            Lane::Shared => self.ready.extend(passed),
            Lane::Reserved => self.reserved.extend(passed),
        }
        let head = found?;
        let Some(tenant) = self.tenants.get_mut(&head.key) else {
            unreachable!("invariant: checked current above")
        };
        let Some(entry) = tenant.jobs.pop_front() else {
            unreachable!("invariant: checked non-empty above")
        };
        let estimate = tenant.estimate;
        if self.discipline == Discipline::Fair {
            // Only dispatches in the shared order move the shared virtual time: a reserved
            // tenant served by its own workers (or one served aside by background workers)
            // runs through its tags faster than the shared tenants can, and letting it drag
            // the clock would clamp every shared tenant's head up to it, erasing their
            // weights and measured costs.
            if in_order {
                self.vtime = self.vtime.max(head.start);
            }
            if from == Lane::Reserved {
                self.reserved_vtime = self.reserved_vtime.max(head.start);
            }
            tenant.finish = head.start + virtual_cost(estimate, entry.weight);
            self.max_finish = self.max_finish.max(tenant.finish);
        }
        tenant.running += 1;
        // The tenant's current job is now its next one, or the one it runs.
        let weight = tenant.jobs.front().map_or(entry.weight, |next| next.weight);
        self.active_weight = self.active_weight - u64::from(tenant.weight) + u64::from(weight);
        tenant.weight = weight;
        if let Some(next) = tenant.jobs.front() {
            tenant.head_start = match self.discipline {
                Discipline::Fair => tenant.finish,
                Discipline::Fifo => u128::from(next.seq),
            };
            self.offer_head(&head.key);
        }
        self.len -= 1;
        // The end of a busy period, whoever took the last job: nobody waits, so every tenant
        // restarts level (and idle ones can be swept).
        if self.len == 0 && self.discipline == Discipline::Fair {
            self.vtime = self.max_finish;
        }
        self.clock = self.clock.max(self.vtime);
        let charge = Charge {
            key: head.key,
            estimate_ns: estimate,
            weight: entry.weight,
        };
        Some((charge, entry.item))
    }

    /// Settles a dispatch: the job really cost `cost_ns`. The difference from the estimate is
    /// added to (or refunded from) the tenant's tags, never moving its waiting head below the
    /// virtual time, and the tenant's estimate moves toward the measured cost.
    pub fn complete(&mut self, charge: Charge<K>, cost_ns: u64) {
        // A sliding average over about the last 8 jobs, on all tenants and on this one.
        self.typical = (self.typical * 7 + cost_ns) / 8;
        // Before the tenant may leave the active weight: its job ran among the active.
        self.advance_clock(cost_ns);
        self.settle(&charge, cost_ns);
        self.release(&charge.key);
        self.prune_stale();
    }

    /// Moves the tenant's tags by what its job really cost beyond (or short of) the estimate
    /// charged, and its estimate toward the measured cost.
    fn settle(&mut self, charge: &Charge<K>, cost_ns: u64) {
        let Some(tenant) = self.tenants.get_mut(&charge.key) else {
            return;
        };
        tenant.estimate = (tenant.estimate * 7 + cost_ns) / 8;
        if self.discipline == Discipline::Fifo || cost_ns == charge.estimate_ns {
            // The estimate moved, and with it the tag its second waiting job will get.
            self.offer_second(&charge.key);
            return;
        }
        let (owed, charged) = (
            virtual_cost(cost_ns, charge.weight),
            virtual_cost(charge.estimate_ns, charge.weight),
        );
        let shift = |tag: u128| (tag + owed).saturating_sub(charged);
        tenant.finish = shift(tenant.finish);
        self.max_finish = self.max_finish.max(tenant.finish);
        if !tenant.jobs.is_empty() {
            tenant.head_start = shift(tenant.head_start).max(self.vtime);
            self.offer_head(&charge.key);
        }
    }

    /// `cost_ns` of work done moves the clock: shared among the active weight, the tenant that
    /// did it still among it (so the sum is not zero). Work done aside or by reserved workers
    /// moves it too, as their tenants count in the weight (the virtual time `V` is moved by
    /// the shared order alone: it lifts heads, the clock only places newcomers).
    fn advance_clock(&mut self, cost_ns: u64) {
        if self.discipline == Discipline::Fair {
            self.clock += virtual_cost(cost_ns, 1) / u128::from(self.active_weight.max(1));
        }
    }

    /// One of `key`'s running jobs is over: a tenant left with nothing queued or running
    /// leaves the active weight.
    fn release(&mut self, key: &K) {
        let Some(tenant) = self.tenants.get_mut(key) else {
            return;
        };
        let was_active = tenant.is_active();
        tenant.running = tenant.running.saturating_sub(1);
        if was_active && !tenant.is_active() {
            self.active_weight -= u64::from(tenant.weight);
        }
    }

    /// Offers `key`'s head job (its tag and lane already set) under a new version, which
    /// makes its older entries stale: to the shared workers, to the reserved ones in the
    /// reserved lane (whichever pops it first runs it), and by its second job's tag.
    fn offer_head(&mut self, key: &K) {
        let Some(tenant) = self.tenants.get_mut(key) else {
            return;
        };
        let Some(first) = tenant.jobs.front() else {
            return;
        };
        tenant.head_version += 1;
        let head = Head {
            start: tenant.head_start,
            seq: first.seq,
            version: tenant.head_version,
            key: key.clone(),
        };
        if tenant.lane == Lane::Reserved {
            self.reserved.push(Head {
                key: key.clone(),
                ..head
            });
        }
        self.ready.push(head);
        self.offer_second(key);
    }

    /// Files `key` by the start tag of its second waiting job, if it has one and it is below
    /// the tag the tenant is filed under (a higher one is found when that entry comes up).
    fn offer_second(&mut self, key: &K) {
        if self.discipline != Discipline::Fair {
            return;
        }
        let Some(tenant) = self.tenants.get_mut(key) else {
            return;
        };
        if let Some(start) = tenant.second_start()
            && tenant.filed.is_none_or(|filed| start < filed)
        {
            tenant.filed = Some(start);
            self.seconds.push(Second {
                start,
                key: key.clone(),
            });
        }
    }

    /// Where a tenant whose queue is empty starts: at the clock, but before the second
    /// waiting job of every other tenant and never behind the virtual time. The clock lets
    /// tenants that each send one request at a time be served about in arrival order (the
    /// virtual time alone would put a tenant served a moment ago behind every other tenant
    /// arriving until the round is over); the cap keeps about SFQ's bound, a newcomer waiting
    /// behind at most one job of each other tenant (see the module docs for refunds).
    fn newcomer_start(&mut self) -> u128 {
        let cap = loop {
            let Some(top) = self.seconds.peek() else {
                break u128::MAX;
            };
            let Some(tenant) = self
                .tenants
                .get_mut(&top.key)
                .filter(|t| t.filed == Some(top.start))
            else {
                // Superseded by a lower entry of the same tenant, or the tenant was swept.
                self.seconds.pop();
                continue;
            };
            match tenant.second_start() {
                Some(start) if start <= top.start => break start.saturating_sub(1),
                // Its second job's tag rose since: file it under the new one.
                Some(start) => {
                    tenant.filed = Some(start);
                    let Some(mut entry) = self.seconds.peek_mut() else {
                        unreachable!("invariant: peeked above")
                    };
                    entry.start = start;
                }
                None => {
                    tenant.filed = None;
                    self.seconds.pop();
                }
            }
        };
        self.clock.min(cap).max(self.vtime)
    }

    /// Drops stale entries of the reserved heap and the second-job heap once they outnumber
    /// the tenants: shared workers that serve a reserved tenant leave its old entry there,
    /// and reserved workers (which would skip it) may be idle for long; a tenant's tags that
    /// fall (refunds) file it again under the lower one.
    fn prune_stale(&mut self) {
        let limit = 2 * self.tenants.len() + MIN_SWEEP;
        let tenants = &self.tenants;
        if self.reserved.len() > limit {
            self.reserved.retain(|h| {
                tenants
                    .get(&h.key)
                    .is_some_and(|t| t.head_version == h.version && t.lane == Lane::Reserved)
            });
        }
        if self.seconds.len() > limit {
            self.seconds.retain(|e| filed(tenants, e));
        }
    }

    /// Drops entries of tenants with nothing queued or running whose finish tag the virtual
    /// time has passed: a newcomer never starts below it, so they carry no state.
    fn sweep(&mut self) {
        let vtime = self.vtime;
        let fifo = self.discipline == Discipline::Fifo;
        self.tenants
            .retain(|_, t| t.is_active() || (!fifo && t.finish > vtime));
        // Heads of swept tenants were stale already; drop stale entries too.
        let tenants = &self.tenants;
        let current = |h: &Head<K>| {
            tenants
                .get(&h.key)
                .is_some_and(|t| t.head_version == h.version)
        };
        self.ready.retain(current);
        self.reserved.retain(current);
        self.seconds.retain(|e| filed(tenants, e));
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

    /// Jobs queued by tenants other than `except` whose next job `allowed` accepts, among
    /// every tenant ([`Lane::Shared`]) or the reserved lane's only: what pops of that lane
    /// with that filter could take (a tenant's whole queue is judged by its next job, the one
    /// a pop would take). Stops counting once past `limit`, since the caller only asks
    /// whether there are more than that. Walks the tenants, so it suits occasional checks
    /// (the pool's watchdog, when a running job passes its threshold).
    pub fn queued_where(
        &self,
        except: Option<&K>,
        lane: Lane,
        limit: usize,
        mut allowed: impl FnMut(&K, &T) -> bool,
    ) -> usize {
        // The common case under a flood, only `except`'s own jobs queued, costs no walk: the
        // map also holds every tenant served in the current round, thousands on a busy server.
        if except.is_some_and(|key| self.len == self.tenant_len(key)) {
            return 0;
        }
        let mut n = 0;
        for (k, tenant) in &self.tenants {
            if except != Some(k)
                && (lane == Lane::Shared || tenant.lane == Lane::Reserved)
                && tenant
                    .jobs
                    .front()
                    .is_some_and(|entry| allowed(k, &entry.item))
            {
                n += tenant.jobs.len();
                if n > limit {
                    break;
                }
            }
        }
        n
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

/// Whether a second-job entry is its tenant's current one.
fn filed<K: Hash + Eq, T>(
    tenants: &HashMap<K, TenantQueue<T>, RandomState>,
    e: &Second<K>,
) -> bool {
    tenants
        .get(&e.key)
        .is_some_and(|t| t.filed == Some(e.start))
}

/// `cost_ns` of a tenant of `weight` in fixed-point virtual time.
fn virtual_cost(cost_ns: u64, weight: u32) -> u128 {
    u128::from(cost_ns) * SCALE / u128::from(weight.max(1))
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
    fn late_arrival_waits_behind_at_most_one_job() {
        let mut q = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        for i in 0..1000 {
            q.push(&1u32, 1, i).unwrap();
        }
        for _ in 0..10 {
            q.pop();
        }
        q.push(&2, 1, 9999).unwrap();
        // Tenant 1 has had the whole server so far: its next job starts level with the
        // newcomer and, queued earlier, goes first; its second does not.
        assert_eq!(q.pop(), Some((1, 10)));
        assert_eq!(q.pop(), Some((2, 9999)));
    }

    /// Tenants that each send one request at a time are served about in arrival order: with
    /// 8 clients over 64 tenants, a request is passed by at most a few later arrivals.
    /// Starting newcomers at the plain SFQ virtual time (the start tag of the latest
    /// dispatch, which stands still while jobs tagged at it keep arriving) put a tenant served
    /// a moment ago behind every other tenant arriving until a round of all 64 was over.
    #[test]
    fn one_request_at_a_time_tenants_are_served_about_in_arrival_order() {
        let most = most_passed_by(false);
        assert!(most <= 8, "a job was passed by {most} later ones");
    }

    /// The same while a dedicated tenant floods its reserved worker: all work moves the clock,
    /// the reserved workers' (and background workers') too, as every tenant with work counts
    /// in the weight it divides by.
    #[test]
    fn a_reserved_flood_leaves_the_others_about_in_arrival_order() {
        let most = most_passed_by(true);
        // Were only the shared workers' work to move it, 8.
        assert!(most <= 6, "a job was passed by {most} later ones");
    }

    /// 8 closed-loop clients send one job at a time to tenant after tenant of 64; two shared
    /// workers (and, with `reserved_flood`, one reserved worker kept busy by a tenant in the
    /// reserved lane, whose jobs the shared workers may take too); jobs cost 100–150 µs.
    /// Returns the most later submissions of the clients dispatched before one of theirs.
    fn most_passed_by(reserved_flood: bool) -> usize {
        type Queue = FairQueue<u64, (u64, u64)>;
        const DEDICATED: u64 = u64::MAX;
        let (clients, tenants) = (8u64, 64u64);
        let mut q: Queue = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        // The clients' queued submissions by number, each with how many later ones were
        // dispatched first.
        let mut passed_by: std::collections::BTreeMap<u64, usize> = Default::default();
        let mut sent = 0u64;
        let mut send = |q: &mut Queue, passed_by: &mut std::collections::BTreeMap<_, _>, c| {
            if c == DEDICATED {
                q.push_in(&DEDICATED, 1, Lane::Reserved, (c, 0)).unwrap();
                return;
            }
            q.push(&((c * 7919 + sent) % tenants), 1, (c, sent))
                .unwrap();
            passed_by.insert(sent, 0);
            sent += 1;
        };
        for client in 0..clients {
            send(&mut q, &mut passed_by, client);
        }
        if reserved_flood {
            for _ in 0..4 {
                send(&mut q, &mut passed_by, DEDICATED);
            }
        }
        // Each running job: when it ends, its charge, its client, its cost, whether a reserved
        // worker runs it. A freed worker takes the next job of its kind at once.
        let mut running: Vec<(u64, Charge<u64>, u64, u64, bool)> = Vec::new();
        let (mut now, mut dispatched, mut most) = (0u64, 0u64, 0usize);
        while dispatched < 20_000 {
            for reserved in [false, true] {
                let size = match reserved {
                    false => 2,
                    true => usize::from(reserved_flood),
                };
                while running.iter().filter(|r| r.4 == reserved).count() < size {
                    let popped = if reserved {
                        q.pop_reserved()
                    } else {
                        q.pop_charged()
                    };
                    let (charge, (client, number)) = popped.expect("a job waits");
                    if client == DEDICATED {
                        send(&mut q, &mut passed_by, DEDICATED);
                    } else {
                        most = most.max(passed_by.remove(&number).expect("queued"));
                        for n in passed_by.range_mut(..number).map(|(_, n)| n) {
                            *n += 1;
                        }
                    }
                    let cost = 100_000 + (dispatched * 7919) % 50_000;
                    running.push((now + cost, charge, client, cost, reserved));
                    dispatched += 1;
                }
            }
            running.sort_by_key(|r| std::cmp::Reverse(r.0));
            let (ends, charge, client, cost, _) = running.pop().expect("jobs run");
            now = ends;
            q.complete(charge, cost);
            if client != DEDICATED {
                send(&mut q, &mut passed_by, client);
            }
        }
        most
    }

    /// The active weight is the sum of the weights of the tenants with work queued or running
    /// whatever mix of pushes (weights changing), pops of every kind and completions led there:
    /// a leak would slow the clock for good.
    #[test]
    fn active_weight_follows_the_tenants_with_work() {
        let mut q: FairQueue<u64, u64> = FairQueue::new(Discipline::Fair, usize::MAX, 50);
        let mut running = VecDeque::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = rng % 7;
            let weight = 1 + (rng >> 8) as u32 % 4;
            match (rng >> 16) % 8 {
                0..=2 => {
                    let lane = if key == 6 {
                        Lane::Reserved
                    } else {
                        Lane::Shared
                    };
                    let _ = q.push_in(&key, weight, lane, step);
                }
                3 => running.extend(q.pop_charged().map(|(c, _)| c)),
                4 => running.extend(q.pop_reserved().map(|(c, _)| c)),
                5 => running.extend(q.pop_charged_aside(|k, _| k % 2 == 0).map(|(c, _)| c)),
                6 => {
                    q.pop();
                }
                _ => {
                    if let Some(charge) = running.pop_front() {
                        q.complete(charge, (rng >> 24) % 3_000_000);
                    }
                }
            }
            let want: u64 = q
                .tenants
                .values()
                .filter(|t| t.is_active())
                .map(|t| u64::from(t.weight))
                .sum();
            assert_eq!(q.active_weight, want, "step {step}");
            assert!(q.clock >= q.vtime, "step {step}");
        }
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

    /// A reserved tenant served flat out by its own worker leaves the shared tenants' CPU
    /// shares as they would be without it: a tenant whose jobs cost 10× gets about as much
    /// CPU as a cheap one, not 10× as much.
    #[test]
    fn a_busy_reserved_lane_leaves_shared_cpu_shares_fair() {
        let mut q: FairQueue<&str, ()> = FairQueue::new(Discipline::Fair, 1_000, 100);
        let cost = |k: &str| match k {
            "costly" => 10_000_000,
            _ => 1_000_000,
        };
        for _ in 0..8 {
            q.push(&"costly", 1, ()).unwrap();
            q.push(&"cheap", 1, ()).unwrap();
            q.push_in(&"dedicated", 1, Lane::Reserved, ()).unwrap();
        }
        let (mut shared_free, mut reserved_free) = (0u64, 0u64);
        let mut cpu: HashMap<&str, u64> = HashMap::new();
        while shared_free < 2_000_000_000 {
            if reserved_free <= shared_free {
                let (charge, ()) = q.pop_reserved().expect("reserved job");
                q.complete(charge, 100_000);
                q.push_in(&"dedicated", 1, Lane::Reserved, ()).unwrap();
                reserved_free += 100_000;
            } else {
                let (charge, ()) = q.pop_charged().expect("shared job");
                let (key, ns) = (charge.key, cost(charge.key));
                q.complete(charge, ns);
                *cpu.entry(key).or_default() += ns;
                if key == "dedicated" {
                    q.push_in(&"dedicated", 1, Lane::Reserved, ()).unwrap();
                } else {
                    q.push(&key, 1, ()).unwrap();
                }
                shared_free += ns;
            }
        }
        let ratio = cpu["costly"] as f64 / cpu["cheap"] as f64;
        assert!(
            (0.5..=2.0).contains(&ratio),
            "CPU costly/cheap {ratio}: {cpu:?}"
        );
    }

    /// Two dedicated tenants share the reserved workers fairly even when one of them has run
    /// there alone for a long while with the shared workers busy: the second is not served
    /// alone until its tags catch up with the first's (the shared virtual time does not move
    /// with reserved dispatches, so a newcomer started far behind the first's tags).
    #[test]
    fn a_second_dedicated_tenant_shares_the_reserved_workers_with_the_first() {
        let mut q: FairQueue<&str, ()> = FairQueue::new(Discipline::Fair, 10_000, 1_000);
        q.push(&"shared", 1, ()).unwrap();
        for _ in 0..4 {
            q.push_in(&"d1", 1, Lane::Reserved, ()).unwrap();
        }
        // D1 alone on the reserved worker for 500 jobs; the shared worker stays busy on one
        // long job, so the shared virtual time does not move.
        for _ in 0..500 {
            let (charge, ()) = q.pop_reserved().expect("d1's job");
            q.complete(charge, 1_000_000);
            q.push_in(&"d1", 1, Lane::Reserved, ()).unwrap();
        }
        for _ in 0..4 {
            q.push_in(&"d2", 1, Lane::Reserved, ()).unwrap();
        }
        let mut served: HashMap<&str, u32> = HashMap::new();
        for _ in 0..40 {
            let (charge, ()) = q.pop_reserved().expect("a dedicated job");
            let key = charge.key;
            q.complete(charge, 1_000_000);
            q.push_in(&key, 1, Lane::Reserved, ()).unwrap();
            *served.entry(key).or_default() += 1;
        }
        let (d1, d2) = (served.get("d1").copied().unwrap_or(0), served["d2"]);
        assert!(d1 >= 15 && d2 >= 15, "d1 {d1}, d2 {d2} of 40");
    }

    #[test]
    fn reserved_pop_takes_only_the_reserved_lane_in_fair_order() {
        let mut q = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        for i in 0..3 {
            q.push(&1u32, 1, i).unwrap();
        }
        q.push_in(&2, 1, Lane::Reserved, 10).unwrap();
        q.push_in(&2, 1, Lane::Reserved, 11).unwrap();
        q.push_in(&3, 1, Lane::Reserved, 20).unwrap();
        let mut reserved = Vec::new();
        while let Some((c, item)) = q.pop_reserved() {
            q.complete(c, DEFAULT_COST_NS);
            reserved.push(item);
        }
        assert_eq!(reserved, [10, 20, 11]);
        // The shared order skips what reserved workers took.
        assert_eq!(
            std::iter::from_fn(|| q.pop()).collect::<Vec<_>>(),
            [(1, 0), (1, 1), (1, 2)]
        );
    }

    #[test]
    fn a_tenant_leaving_the_reserved_lane_takes_its_waiting_jobs_along() {
        let mut q = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        q.push_in(&1u32, 1, Lane::Reserved, 0).unwrap();
        q.push_in(&1, 1, Lane::Shared, 1).unwrap();
        assert!(q.pop_reserved().is_none());
        q.push_in(&1, 1, Lane::Reserved, 2).unwrap();
        assert_eq!(q.pop_reserved().map(|(c, i)| (c.key, i)), Some((1, 0)));
        assert_eq!(q.pop(), Some((1, 1)));
    }

    /// Under FIFO, a tenant whose latest push leaves the reserved lane keeps its jobs' places
    /// in submission order (the lane's tag adjustment is the fair order's).
    #[test]
    fn fifo_keeps_submission_order_across_a_lane_change() {
        let mut q = FairQueue::new(Discipline::Fifo, usize::MAX, usize::MAX);
        q.push(&1u32, 1, 0).unwrap();
        q.push(&1, 1, 1).unwrap();
        q.push_in(&2, 1, Lane::Reserved, 2).unwrap();
        q.push_in(&2, 1, Lane::Shared, 3).unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, [(1, 0), (1, 1), (2, 2), (2, 3)]);
    }

    #[test]
    fn stale_reserved_entries_stay_bounded_while_reserved_workers_idle() {
        let mut q = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        for i in 0..10_000u32 {
            q.push_in(&(i % 4), 1, Lane::Reserved, i).unwrap();
            let (c, _) = q.pop_charged().unwrap();
            q.complete(c, 1_000 + u64::from(i));
        }
        assert!(
            q.reserved.len() <= 2 * q.tenants.len() + MIN_SWEEP + 1,
            "{}",
            q.reserved.len()
        );
    }

    #[test]
    fn queued_where_counts_other_tenants_jobs_a_pop_could_take() {
        let mut q = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        for (key, lane, item) in [
            (1u32, Lane::Shared, 10),
            (1, Lane::Shared, 11),
            (2, Lane::Shared, 20),
            (2, Lane::Shared, 21),
            (2, Lane::Shared, 22),
            (3, Lane::Reserved, 30),
        ] {
            q.push_in(&key, 1, lane, item).unwrap();
        }
        let all = |_: &u32, _: &u32| true;
        assert_eq!(q.queued_where(None, Lane::Shared, usize::MAX, all), 6);
        assert_eq!(q.queued_where(Some(&2), Lane::Shared, usize::MAX, all), 3);
        assert_eq!(q.queued_where(None, Lane::Reserved, usize::MAX, all), 1);
        // A tenant counts by its next job only, whatever follows it.
        let not_20 = |_: &u32, item: &u32| *item != 20;
        assert_eq!(
            q.queued_where(Some(&1), Lane::Shared, usize::MAX, not_20),
            1
        );
        // Only `except`'s own jobs queued: none.
        let mut alone = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        alone.push(&1u32, 1, 0u32).unwrap();
        assert_eq!(
            alone.queued_where(Some(&1), Lane::Shared, usize::MAX, all),
            0
        );
        // Counting stops once past the limit.
        assert!(q.queued_where(None, Lane::Shared, 0, all) > 0);
        assert!(q.queued_where(None, Lane::Shared, 2, all) <= 5);
    }
}
