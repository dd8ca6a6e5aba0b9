//! Latency figures of the storage layer for the metrics endpoint: a lock-free fixed-bucket
//! histogram, and the one instance the store fills, the duration of each durable commit (which
//! is dominated by `fsync`).
//!
//! The histogram lives here because storage is the lowest crate that times anything; the HTTP
//! layer reuses the same type for its own series so every histogram has the same buckets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus `le`); a last `+Inf` bucket is implied.
/// From 100 µs (a commit on fast storage) to 10 s (a request stuck behind a long queue).
pub const BUCKETS_SECS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// A latency histogram: a count per bucket (not cumulative), the total and the sum.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS_SECS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A copy of a histogram's figures, for rendering and for summing histograms exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket, not cumulative; the last one is `+Inf`.
    pub buckets: [u64; BUCKETS_SECS.len() + 1],
    pub sum_nanos: u64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS_SECS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS_SECS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another histogram's observations (exact: buckets are shared).
    pub fn add(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_nanos += other.sum_nanos;
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), in seconds; `None` when
    /// empty, and the largest finite bound when it falls in `+Inf`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(BUCKETS_SECS.get(i).copied().unwrap_or(BUCKETS_SECS[14]));
            }
        }
        Some(BUCKETS_SECS[14])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_add_up() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50)); // ≤ 0.0001
        h.observe(Duration::from_micros(100)); // ≤ 0.0001 (bounds are inclusive)
        h.observe(Duration::from_millis(3)); // ≤ 0.005
        h.observe(Duration::from_secs(60)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[5], 1);
        assert_eq!(s.buckets[15], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_nanos, 50_000 + 100_000 + 3_000_000 + 60_000_000_000);
        let mut total = s;
        total.add(&s);
        assert_eq!(total.count(), 8);
        assert_eq!(s.quantile(0.5), Some(0.0001));
        assert_eq!(s.quantile(0.75), Some(0.005));
        assert_eq!(s.quantile(1.0), Some(10.0));
        assert_eq!(HistogramSnapshot::default().quantile(0.99), None);
    }
}
