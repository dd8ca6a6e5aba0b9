//! Who is over its fair share of recent CPU: the rule that sends a job to the pool's
//! foreground workers (normal OS priority) or to its background ones (lowest priority).
//!
//! The fair queue already orders jobs fairly, but it cannot stop the OS from running a
//! flooding tenant's threads while a light tenant's thread waits in the run queue: on a busy
//! machine that wait is the light tenant's tail latency. So a tenant that used more than its
//! share of the pool's recent CPU has its jobs run on threads the OS treats as unimportant,
//! and a light tenant's job, on a normal thread, preempts them the moment it wakes. A tenant
//! busy alone is within its share (all of it), so it keeps full speed on normal threads.
//!
//! Recent CPU is counted over two fixed windows (the current one and the one before, rotated
//! by the caller every [`SHARE_WINDOW`]), so it reflects the last 100–200 ms. A tenant is
//! *active* while it has jobs queued or running, or submitted a job or used CPU in either
//! window; the active tenants split the recent CPU by weight. A job submitted counts even
//! when its CPU does not: a dedicated tenant's jobs run on reserved workers, whose CPU is not
//! the shared workers' to split, and without its submissions it dropped out of the active set
//! at every turn of the window, so that a tenant flooding beside it was alone, within its
//! share, and back on normal-priority threads until its next request (docs/benchmarks.md).
//!
//! Only a tenant with a backlog is demoted: more jobs pending than the pool's normal workers
//! could run at once (the `backlog` of [`CpuShares::new`]). Over so short a window, tenants
//! that each send a request or two at a time pass 1.25× their share by chance all the time
//! (with 64 of them, a few per cent of the requests each window), and a demoted job on a busy
//! machine waits for the lowest-priority threads to get a core, tens of milliseconds: equal
//! tenants' p99 at 64 connections went from 16–23 ms to 123–131 ms with the background
//! workers on, before this rule (docs/benchmarks.md).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use foldhash::fast::RandomState;

/// How often the caller rotates the windows ([`CpuShares::rotate`]).
pub const SHARE_WINDOW: Duration = Duration::from_millis(100);

/// Slack over the exact share before a tenant counts as over it, as a fraction
/// `OVER_NUM / OVER_DEN` (1.25×): two tenants flooding equally stay on normal threads rather
/// than trading places on every small wobble.
const OVER_NUM: u128 = 5;
const OVER_DEN: u128 = 4;

/// Which set of workers a job should run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Within its share: a worker at normal OS priority.
    Foreground,
    /// Over its share while others are active: a worker at the lowest OS priority.
    Background,
}

/// The dispatch rule: a tenant that used `cpu_ns` of the `total_cpu_ns` used by all active
/// tenants recently, with `weight` of their `total_weight`, runs in the background when its
/// part of the CPU exceeds 1.25× its part of the weight. A lone tenant, or one that used
/// nothing, is always in the foreground.
pub fn placement(cpu_ns: u64, weight: u32, total_cpu_ns: u64, total_weight: u64) -> Placement {
    let (cpu, weight) = (u128::from(cpu_ns), u128::from(weight.max(1)));
    let (total_cpu, total_weight) = (u128::from(total_cpu_ns), u128::from(total_weight));
    // cpu / total_cpu > 1.25 × weight / total_weight, in integers.
    if cpu * total_weight * OVER_DEN > total_cpu * weight * OVER_NUM {
        Placement::Background
    } else {
        Placement::Foreground
    }
}

/// A tenant's backlog and CPU against its share ([`CpuShares::standing`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// More jobs pending than the backlog allows.
    pub backlog: bool,
    /// More than its weighted share of the recent CPU while others were active.
    pub over_cpu: bool,
}

impl Standing {
    /// The dispatch rule: the background only for a tenant over its share with a backlog.
    pub fn placement(self) -> Placement {
        if self.backlog && self.over_cpu {
            Placement::Background
        } else {
            Placement::Foreground
        }
    }
}

/// One tenant's recent CPU and what it has waiting.
#[derive(Debug, Clone, Copy)]
struct Usage {
    previous: u64,
    current: u64,
    weight: u32,
    /// Jobs submitted and not yet finished.
    pending: u32,
    /// Whether a job was submitted in the previous and in the current window.
    submitted_previous: bool,
    submitted_current: bool,
}

/// Recent CPU per active tenant, and their totals. Memory is bounded by active tenants:
/// an entry goes at the first rotation that finds it idle with no CPU in either window.
pub struct CpuShares<K> {
    tenants: HashMap<K, Usage, RandomState>,
    total_cpu: u64,
    total_weight: u64,
    /// Jobs a tenant may have pending and stay in the foreground whatever its CPU.
    backlog: u32,
    /// Tenants with more jobs pending than `backlog`.
    backlogged: usize,
}

impl<K: Hash + Eq + Clone> CpuShares<K> {
    /// No active tenants; a tenant with at most `backlog` jobs pending (submitted and not
    /// finished) stays in the foreground whatever its CPU (module docs). The pool passes its
    /// number of normal workers.
    pub fn new(backlog: u32) -> Self {
        Self {
            tenants: HashMap::with_hasher(RandomState::default()),
            total_cpu: 0,
            total_weight: 0,
            backlog,
            backlogged: 0,
        }
    }

    /// A job of `key` was queued with `weight` (0 counts as 1; the latest weight applies).
    /// Returns whether this job gave the tenant a backlog (module docs): from now on its jobs
    /// may go to the background.
    pub fn submitted(&mut self, key: &K, weight: u32) -> bool {
        let weight = weight.max(1);
        let usage = self.tenants.entry(key.clone()).or_insert(Usage {
            previous: 0,
            current: 0,
            weight: 0,
            pending: 0,
            submitted_previous: false,
            submitted_current: false,
        });
        usage.submitted_current = true;
        self.total_weight = self.total_weight - u64::from(usage.weight) + u64::from(weight);
        usage.weight = weight;
        usage.pending = usage.pending.saturating_add(1);
        let became = usage.pending > self.backlog && usage.pending - 1 == self.backlog;
        self.backlogged += usize::from(became);
        became
    }

    /// A job of `key` finished after using `cpu_ns` (beyond what [`charge`](Self::charge)
    /// counted while it ran).
    pub fn finished(&mut self, key: &K, cpu_ns: u64) {
        if let Some(usage) = self.tenants.get_mut(key)
            && usage.pending > 0
        {
            self.backlogged -= usize::from(usage.pending - 1 == self.backlog);
            usage.pending -= 1;
        }
        self.charge(key, cpu_ns);
    }

    /// A running job of `key` used `cpu_ns` so far: counted now, so a tenant whose jobs are
    /// long does not look idle until they end.
    pub fn charge(&mut self, key: &K, cpu_ns: u64) {
        if let Some(usage) = self.tenants.get_mut(key) {
            usage.current = usage.current.saturating_add(cpu_ns);
            self.total_cpu = self.total_cpu.saturating_add(cpu_ns);
        }
    }

    /// Starts a new window: the previous one is forgotten, and idle tenants with neither CPU
    /// nor a submission left in either window stop being active.
    pub fn rotate(&mut self) {
        self.tenants.retain(|_, u| {
            u.previous = std::mem::take(&mut u.current);
            u.submitted_previous = std::mem::take(&mut u.submitted_current);
            u.pending > 0 || u.previous > 0 || u.submitted_previous
        });
        // Recounted rather than adjusted: exact, and linear in the active tenants once per
        // window.
        self.total_cpu = self.tenants.values().map(|u| u.previous).sum();
        self.total_weight = self.tenants.values().map(|u| u64::from(u.weight)).sum();
    }

    /// Where `key`'s next job should run, given everyone's recent CPU and its backlog.
    pub fn placement(&self, key: &K) -> Placement {
        self.standing(key).placement()
    }

    /// `key`'s backlog and CPU against its share, from one look-up: what a submission needs
    /// ([`placement`](Self::placement), [`has_backlog`](Self::has_backlog) and
    /// [`over_cpu_share`](Self::over_cpu_share) at once).
    pub fn standing(&self, key: &K) -> Standing {
        self.tenants
            .get(key)
            .map_or(Standing::default(), |u| Standing {
                backlog: self.over_backlog(u),
                over_cpu: self.over_cpu(u),
            })
    }

    /// Whether `key` used more than its weighted share of the recent CPU while others were
    /// active, backlog or not: [`placement`]'s rule without the backlog's. A normal worker's
    /// job of such a tenant computes what it sets aside at the background priority
    /// (`crate::aside`): a tenant sending a job at a time, each answered before the next (a
    /// write flood paced below what the pool can do), can still use most of the cores, and
    /// another tenant's job then waits behind its computing.
    pub fn over_cpu_share(&self, key: &K) -> bool {
        self.tenants.get(key).is_some_and(|u| self.over_cpu(u))
    }

    /// The one test of a tenant's recent CPU against its share ([`placement`]).
    fn over_cpu(&self, u: &Usage) -> bool {
        let cpu = u.previous + u.current;
        placement(cpu, u.weight, self.total_cpu, self.total_weight) == Placement::Background
    }

    /// Whether `key` has more jobs pending than the backlog allows: only then can its jobs go
    /// to the background, whatever the CPU shares do.
    pub fn has_backlog(&self, key: &K) -> bool {
        self.tenants.get(key).is_some_and(|u| self.over_backlog(u))
    }

    /// The one test of a backlog, for placements and for the count of backlogged tenants.
    fn over_backlog(&self, u: &Usage) -> bool {
        u.pending > self.backlog
    }

    /// Whether any tenant has a backlog: then a placement may change while no job is
    /// submitted or finished (a window turns), and the background workers look again after
    /// each window rather than sleeping until woken.
    pub fn any_backlog(&self) -> bool {
        self.backlogged > 0
    }

    /// Active tenants: with jobs waiting or running, or a submission or CPU in the last two
    /// windows.
    pub fn active(&self) -> usize {
        self.tenants.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_busy_tenant_keeps_the_foreground() {
        let mut s = CpuShares::new(0);
        s.submitted(&1u32, 1);
        s.finished(&1, 50_000_000);
        s.submitted(&1, 1);
        assert_eq!(s.placement(&1), Placement::Foreground);
    }

    #[test]
    fn a_flood_beside_a_light_tenant_goes_to_the_background_until_it_is_alone() {
        let mut s = CpuShares::new(0);
        s.submitted(&"a", 1);
        s.finished(&"a", 90_000_000);
        s.submitted(&"b", 1);
        s.finished(&"b", 2_000_000);
        // A's next job is queued (where the pool asks).
        s.submitted(&"a", 1);
        assert_eq!(s.placement(&"a"), Placement::Background);
        assert_eq!(s.placement(&"b"), Placement::Foreground);
        // B goes quiet; two windows later A is alone again.
        s.rotate();
        s.finished(&"a", 90_000_000);
        s.submitted(&"a", 1);
        assert_eq!(s.placement(&"a"), Placement::Background);
        s.rotate();
        assert_eq!((s.active(), s.placement(&"a")), (1, Placement::Foreground));
    }

    /// A tenant whose jobs use no shared CPU (a dedicated one, on reserved workers) stays
    /// active while it keeps submitting: a flood beside it stays in the background across the
    /// turns of the window, and goes back to the foreground once a whole window has passed without one.
    #[test]
    fn a_tenant_submitting_without_shared_cpu_keeps_a_flood_in_the_background() {
        let mut s = CpuShares::new(0);
        s.submitted(&"a", 1);
        s.charge(&"a", 90_000_000);
        for _ in 0..3 {
            s.submitted(&"b", 1);
            s.finished(&"b", 0);
            s.rotate();
            assert_eq!(s.placement(&"a"), Placement::Background);
            s.charge(&"a", 90_000_000);
        }
        // B's last job was submitted in the window before: a turn later it is gone.
        s.rotate();
        assert_eq!((s.active(), s.placement(&"a")), (1, Placement::Foreground));
    }

    /// Over its share of the CPU is the placement's rule without the backlog: a tenant sending
    /// one job at a time that uses most of the CPU beside another is over; alone, or within its
    /// share, it is not.
    #[test]
    fn over_its_cpu_share_whatever_its_backlog() {
        let mut s = CpuShares::new(2);
        s.submitted(&"a", 1);
        s.finished(&"a", 30_000_000);
        assert!(!s.over_cpu_share(&"a"), "alone");
        s.submitted(&"b", 1);
        s.finished(&"b", 2_000_000);
        s.submitted(&"a", 1);
        assert_eq!(s.placement(&"a"), Placement::Foreground, "no backlog");
        assert!(s.over_cpu_share(&"a"));
        assert!(!s.over_cpu_share(&"b"));
        assert!(!s.over_cpu_share(&"c"), "unknown");
        s.finished(&"b", 40_000_000);
        assert!(!s.over_cpu_share(&"a"), "B caught up");
    }

    /// Over its share but with no more jobs pending than the backlog allows (a tenant sending
    /// one request at a time that was lucky in the window): still in the foreground.
    #[test]
    fn a_tenant_without_a_backlog_stays_in_the_foreground() {
        let mut s = CpuShares::new(2);
        s.submitted(&"b", 1);
        s.finished(&"b", 2_000_000);
        for pending in 1..=3 {
            s.submitted(&"a", 1);
            s.charge(&"a", 30_000_000);
            let want = if pending > 2 {
                Placement::Background
            } else {
                Placement::Foreground
            };
            assert_eq!(s.placement(&"a"), want, "{pending} pending");
        }
    }

    #[test]
    fn weights_scale_the_share() {
        // 3:1 weights, 70% of the CPU: within 1.25 × 75%.
        assert_eq!(placement(70, 3, 100, 4), Placement::Foreground);
        assert_eq!(placement(70, 1, 100, 4), Placement::Background);
        // Exactly 1.25× the share is still within it.
        assert_eq!(placement(625, 1, 1000, 2), Placement::Foreground);
        assert_eq!(placement(626, 1, 1000, 2), Placement::Background);
    }
}
