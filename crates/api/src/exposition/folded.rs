//! The counters of `tenant="(other)"`, kept monotonic across scrapes.
//!
//! Which tenants are summed under `(other)` changes from one scrape to the next (the most
//! recently active get labels of their own), and a purged tenant leaves the registry. Summing
//! the folded tenants' lifetime counters at each scrape would then move `(other)`'s counters
//! down and up by whole tenants' histories, which Prometheus reads as resets and spikes of
//! `rate()`. So `(other)`'s counters are an accumulator instead: at each scrape, each tenant
//! folded in it adds what its counters grew by since the previous scrape. A tenant that gets
//! its own label takes its lifetime figures with it and `(other)` keeps what it had; one that
//! is folded again adds only its growth from then on. Gauges are not accumulated: they are the
//! folded tenants' current sum, as before.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use strata_store::stats::HistogramSnapshot;
use strata_types::{Millis, TenantId};

use super::TenantRow;
use crate::metrics::TenantSnapshot;

/// A tenant's counters (its snapshot's gauges are left at zero), and its index loads and
/// evictions.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counters {
    pub live: TenantSnapshot,
    pub loads: u64,
    pub evictions: u64,
}

impl Counters {
    fn of(t: &TenantRow) -> Counters {
        let l = &t.live;
        Counters {
            live: TenantSnapshot {
                classes: l.classes,
                latency: l.latency,
                refusals: l.refusals,
                queue_wait: l.queue_wait,
                cpu_nanos: l.cpu_nanos,
                ..TenantSnapshot::default()
            },
            loads: t.residency.loads,
            evictions: t.residency.evictions,
        }
    }

    /// What `self` grew by since `before` (a count that went down, which a tenant's own
    /// counters never do, counts as no growth).
    fn since(&self, before: &Counters) -> Counters {
        let sub = |a: u64, b: u64| a.saturating_sub(b);
        let hist = |a: &HistogramSnapshot, b: &HistogramSnapshot| HistogramSnapshot {
            buckets: std::array::from_fn(|i| sub(a.buckets[i], b.buckets[i])),
            sum_nanos: sub(a.sum_nanos, b.sum_nanos),
        };
        let (a, b) = (&self.live, &before.live);
        Counters {
            live: TenantSnapshot {
                classes: std::array::from_fn(|i| sub(a.classes[i], b.classes[i])),
                latency: hist(&a.latency, &b.latency),
                refusals: std::array::from_fn(|i| sub(a.refusals[i], b.refusals[i])),
                queue_wait: hist(&a.queue_wait, &b.queue_wait),
                cpu_nanos: sub(a.cpu_nanos, b.cpu_nanos),
                ..TenantSnapshot::default()
            },
            loads: sub(self.loads, before.loads),
            evictions: sub(self.evictions, before.evictions),
        }
    }

    /// Each counter's larger value of `self` and `o`: what a tenant's counters were at the
    /// latest of two snapshots, whichever order two scrapes took them in.
    fn max(&self, o: &Counters) -> Counters {
        let hist = |a: &HistogramSnapshot, b: &HistogramSnapshot| HistogramSnapshot {
            buckets: std::array::from_fn(|i| a.buckets[i].max(b.buckets[i])),
            sum_nanos: a.sum_nanos.max(b.sum_nanos),
        };
        let (a, b) = (&self.live, &o.live);
        Counters {
            live: TenantSnapshot {
                classes: std::array::from_fn(|i| a.classes[i].max(b.classes[i])),
                latency: hist(&a.latency, &b.latency),
                refusals: std::array::from_fn(|i| a.refusals[i].max(b.refusals[i])),
                queue_wait: hist(&a.queue_wait, &b.queue_wait),
                cpu_nanos: a.cpu_nanos.max(b.cpu_nanos),
                ..TenantSnapshot::default()
            },
            loads: self.loads.max(o.loads),
            evictions: self.evictions.max(o.evictions),
        }
    }

    fn add(&mut self, o: &Counters) {
        self.live.add(&o.live);
        self.loads += o.loads;
        self.evictions += o.evictions;
    }
}

/// `(other)`'s accumulated counters and what each tenant's counters were at the last scrape.
#[derive(Default)]
pub struct FoldedCounters {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: Counters,
    /// By tenant incarnation (id and creation time: a tenant created again under the same id
    /// starts from zero, and is not measured against its predecessor).
    last: HashMap<(TenantId, Millis), Counters>,
}

impl FoldedCounters {
    /// Tenants whose counters are kept between scrapes (tests).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last
            .len()
    }

    /// Takes this scrape's tenants (those not in `labelled` are folded); returns `(other)`'s
    /// counters, never lower than at any earlier scrape.
    pub(crate) fn fold(&self, tenants: &[TenantRow], labelled: &BTreeSet<String>) -> Counters {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        let mut last = HashMap::with_capacity(state.last.len());
        for t in tenants {
            let key = (t.info.id.clone(), t.info.created_at);
            let now = Counters::of(t);
            let before = state.last.get(&key);
            if !labelled.contains(t.info.id.as_str()) {
                let grown = match before {
                    Some(before) => now.since(before),
                    // First seen (the first scrape, or a new tenant): all of it is new here.
                    None => now.clone(),
                };
                state.total.add(&grown);
            }
            // Two scrapes at once (two Prometheus servers) may fold their snapshots in either
            // order: what is kept is the latest value of each counter, so an older snapshot
            // folded second cannot make the next scrape count its growth again.
            let seen = match before {
                Some(before) => now.max(before),
                None => now,
            };
            // A tenant that has counted nothing is kept as no entry, which reads the same:
            // an idle node's memory does not grow with the tenants it holds on disk.
            if seen != Counters::default() {
                last.insert(key, seen);
            }
        }
        // Tenants gone from the registry are forgotten; what they added stays in the total.
        state.last = last;
        state.total.clone()
    }
}
