//! Bounds what security events cost: each audit log (the server's own, and each tenant's, with
//! the refused tries of each of its key ids apart) gets a token bucket per kind of event, so refusals keep being recorded and logged, but at most a
//! burst and then a steady rate of rows and WARN lines. Events over the bucket are counted, not
//! written: the count becomes one summary row and line (`N more auth.failure events suppressed
//! since …`) when the bucket next admits one, and the Prometheus counter
//! `strata_security_events_suppressed_total{action}` holds every one.
//!
//! Why: without it every `401` was a durable audit row and a log line, so anyone able to reach
//! the port could grow the disk without limit (and, naming a tenant's key id, flood that
//! tenant's log), at no cost to any rate limit. A suppressed event costs a bucket check and a
//! counter: no storage write, no log line.
//!
//! The buckets are `strata_sched`'s rate limiter, so idle ones are evicted and memory follows
//! the logs active within a bucket's refill time. A pending count is written with the next
//! event its bucket admits, or by the server's periodic flush ([`SecurityThrottle::due`]) once
//! the bucket admits again, and at shutdown; their number is capped, and past the cap only the
//! counter records them.
//! A tenant's buckets are keyed by its incarnation, so a re-created tenant starts afresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use strata_sched::{Limits, RateLimiter};
use strata_store::TenantKey;
use strata_types::{Millis, TenantId};

/// The events throttled, in the order of their counters; each is audited and logged.
pub(crate) const THROTTLED_ACTIONS: [&str; 4] = [
    "auth.failure",
    "security.tenant_mismatch",
    "security.scope_forbidden",
    "security.permission_denied",
];

/// Logs with suppressed events waiting for their summary, at most. Each tenant that exists
/// can hold a few, so this is reached only by a server with very many attacked tenants; past
/// it, new suppressions are counted by the metric alone.
const MAX_PENDING: usize = 65_536;

/// The security-event limits of `[audit]`: per log and kind of event, `burst` events at once
/// and then `per_sec` a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecurityEventLimits {
    pub burst: u32,
    pub per_sec: f64,
}

impl Default for SecurityEventLimits {
    fn default() -> Self {
        SecurityEventLimits {
            burst: 100,
            // One row a second per log and kind: a flood of bad credentials kept up for a day
            // adds 86,400 rows to a log, not 864,000; the rest is counted in summaries.
            per_sec: 1.0,
        }
    }
}

/// Which audit log an event belongs in, and for a tenant's, whose events they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AuditLog {
    /// The server's own: events that name no tenant (operators read it).
    Server,
    /// One tenant incarnation's, for its own credentials' events.
    Tenant(TenantKey),
    /// One tenant incarnation's, for refused tokens that name one of its keys (by a hash of the
    /// key id). Each key has buckets of its own, so a stranger flooding with one key id cannot
    /// bury the refusals of another key's tries, or of the tenant's own clients, in a count.
    /// Their number is bounded by the tenant's stored keys.
    KeyTried(TenantKey, u64),
}

impl AuditLog {
    /// The log of refused tokens naming `key_id`, a stored key of the tenant `tenant`.
    pub fn key_tried(tenant: TenantKey, key_id: &str) -> AuditLog {
        // SipHash with fixed keys: a collision only shares a bucket, never moves a row.
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(key_id, &mut h);
        AuditLog::KeyTried(tenant, std::hash::Hasher::finish(&h))
    }

    /// The tenant incarnation whose log this is, if a tenant's.
    pub fn tenant(self) -> Option<TenantKey> {
        match self {
            AuditLog::Server => None,
            AuditLog::Tenant(key) | AuditLog::KeyTried(key, _) => Some(key),
        }
    }
}

/// One bucket's key: a log and a kind of event. Kinds have separate buckets so that, say, a
/// stranger trying keys against a tenant cannot crowd out the tenant's own clients' mismatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Stream {
    log: AuditLog,
    action: usize,
}

/// Events of one stream that were not written, since the first of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Suppressed {
    /// The tenant whose log they belong in (none: the server's).
    pub tenant: Option<TenantId>,
    pub count: u64,
    /// When the first and the last of them happened (ms since the epoch).
    pub since: Millis,
    pub until: Millis,
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it (row and line), after a summary of the events suppressed before it, if any.
    Record(Option<Suppressed>),
    /// Count it only.
    Suppress,
}

pub(crate) struct SecurityThrottle {
    limits: Limits,
    buckets: RateLimiter<Stream>,
    pending: Mutex<HashMap<Stream, Suppressed>>,
    suppressed: [AtomicU64; THROTTLED_ACTIONS.len()],
}

impl SecurityThrottle {
    /// Fails on limits a bucket cannot have (a zero burst, a rate not above 0).
    pub fn new(limits: SecurityEventLimits) -> Result<Self, String> {
        let limits = Limits::new(limits.per_sec, Some(limits.burst))
            .map_err(|e| format!("audit.security_events: {e}"))?;
        Ok(SecurityThrottle {
            limits,
            buckets: RateLimiter::new(),
            pending: Mutex::new(HashMap::new()),
            suppressed: Default::default(),
        })
    }

    /// Decides about one `action` event for `log` (tenant `tenant`'s, or the server's), at
    /// `now` (`now_ms` on the wall clock, for the summary). An action not in
    /// [`THROTTLED_ACTIONS`] is a bug; it is recorded.
    pub fn admit(
        &self,
        log: AuditLog,
        tenant: Option<&TenantId>,
        action: &str,
        now: Instant,
        now_ms: Millis,
    ) -> Verdict {
        let Some(index) = THROTTLED_ACTIONS.iter().position(|a| *a == action) else {
            return Verdict::Record(None);
        };
        let stream = Stream { log, action: index };
        let admitted = self.buckets.check(&stream, &self.limits, now).is_ok();
        // A poisoned lock only means another thread panicked while holding it; the map of
        // counts is still whole, and refusing to record would be worse.
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if admitted {
            return Verdict::Record(pending.remove(&stream));
        }
        self.suppressed[index].fetch_add(1, Ordering::Relaxed);
        if let Some(s) = pending.get_mut(&stream) {
            s.count += 1;
            s.until = s.until.max(now_ms);
        } else if pending.len() < MAX_PENDING {
            pending.insert(
                stream,
                Suppressed {
                    tenant: tenant.cloned(),
                    count: 1,
                    since: now_ms,
                    until: now_ms,
                },
            );
        }
        Verdict::Suppress
    }

    /// The pending summaries whose bucket admits an event again at `now` (each takes that
    /// event's place), taken out to be written: so a count reaches its log within a refill
    /// time of the flood's end even if no event of its kind comes after it. `drain` takes every
    /// one whatever its bucket says (at shutdown, when nothing would write them later).
    pub fn due(&self, now: Instant, drain: bool) -> Vec<(AuditLog, &'static str, Suppressed)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let ready: Vec<Stream> = pending
            .keys()
            .filter(|s| drain || self.buckets.check(s, &self.limits, now).is_ok())
            .copied()
            .collect();
        ready
            .into_iter()
            .filter_map(|s| Some((s.log, THROTTLED_ACTIONS[s.action], pending.remove(&s)?)))
            .collect()
    }

    /// Events suppressed since start, by action, for `/metrics`.
    pub fn suppressed_counts(&self) -> Vec<(&'static str, u64)> {
        THROTTLED_ACTIONS
            .iter()
            .zip(&self.suppressed)
            .map(|(a, n)| (*a, n.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn throttle(burst: u32, per_sec: f64) -> SecurityThrottle {
        SecurityThrottle::new(SecurityEventLimits { burst, per_sec }).unwrap()
    }

    fn key(n: u64) -> AuditLog {
        AuditLog::Tenant(TenantKey::for_tests(n))
    }

    #[test]
    fn a_burst_is_recorded_then_counted_then_summarised_once() {
        let t = throttle(3, 10.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                t.admit(AuditLog::Server, None, "auth.failure", t0, 1_000),
                Verdict::Record(None)
            );
        }
        for ms in 1_001..1_101 {
            assert_eq!(
                t.admit(AuditLog::Server, None, "auth.failure", t0, ms),
                Verdict::Suppress
            );
        }
        // 10/s: one token 100 ms later, carrying the summary of what came before it.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            t.admit(AuditLog::Server, None, "auth.failure", later, 2_000),
            Verdict::Record(Some(Suppressed {
                tenant: None,
                count: 100,
                since: 1_001,
                until: 1_100,
            }))
        );
        assert_eq!(
            t.admit(AuditLog::Server, None, "auth.failure", later, 2_000),
            Verdict::Suppress
        );
        let after = t0 + Duration::from_millis(200);
        assert_eq!(
            t.admit(AuditLog::Server, None, "auth.failure", after, 2_100),
            Verdict::Record(Some(Suppressed {
                tenant: None,
                count: 1,
                since: 2_000,
                until: 2_000,
            }))
        );
        assert_eq!(t.suppressed_counts()[0], ("auth.failure", 101));
    }

    #[test]
    fn logs_and_kinds_of_event_have_their_own_buckets() {
        let t = throttle(1, 1.0);
        let t0 = Instant::now();
        assert_eq!(
            t.admit(key(1), None, "auth.failure", t0, 0),
            Verdict::Record(None)
        );
        assert_eq!(
            t.admit(key(1), None, "auth.failure", t0, 0),
            Verdict::Suppress
        );
        // Another tenant, the server's log, and the same tenant's other events are untouched.
        for (log, action) in [
            (key(2), "auth.failure"),
            (AuditLog::Server, "auth.failure"),
            (key(1), "security.tenant_mismatch"),
            (key(1), "security.scope_forbidden"),
        ] {
            assert_eq!(
                t.admit(log, None, action, t0, 0),
                Verdict::Record(None),
                "{log:?}"
            );
        }
        let counts = t.suppressed_counts();
        assert_eq!(counts[0], ("auth.failure", 1));
        assert_eq!(counts[1], ("security.tenant_mismatch", 0));
    }

    #[test]
    fn each_key_tried_has_its_own_buckets() {
        let t = throttle(1, 1.0);
        let t0 = Instant::now();
        let tenant = TenantKey::for_tests(1);
        let tried = AuditLog::key_tried(tenant, "k1");
        assert_eq!(tried, AuditLog::key_tried(tenant, "k1"));
        assert_eq!(tried.tenant(), Some(tenant));
        assert_eq!(
            t.admit(tried, None, "auth.failure", t0, 0),
            Verdict::Record(None)
        );
        assert_eq!(
            t.admit(tried, None, "auth.failure", t0, 0),
            Verdict::Suppress
        );
        // Tries of another key, and the tenant's own credentials' refusals, are still written.
        for log in [
            AuditLog::key_tried(tenant, "k2"),
            AuditLog::Tenant(tenant),
            AuditLog::key_tried(TenantKey::for_tests(2), "k1"),
        ] {
            assert_eq!(
                t.admit(log, None, "auth.failure", t0, 0),
                Verdict::Record(None),
                "{log:?}"
            );
        }
    }

    #[test]
    fn an_unknown_action_is_recorded_unthrottled() {
        let t = throttle(1, 1.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(
                t.admit(AuditLog::Server, None, "something.else", t0, 0),
                Verdict::Record(None)
            );
        }
    }

    #[test]
    fn limits_that_cannot_be_a_bucket_are_refused() {
        for (burst, per_sec) in [(0, 10.0), (100, 0.0), (100, f64::NAN)] {
            assert!(SecurityThrottle::new(SecurityEventLimits { burst, per_sec }).is_err());
        }
    }

    #[test]
    fn a_pending_count_is_due_once_its_bucket_admits_again() {
        let t = throttle(1, 10.0);
        let t0 = Instant::now();
        let tenant = TenantId::parse("acme").unwrap();
        let log = AuditLog::Tenant(TenantKey::for_tests(7));
        assert_eq!(
            t.admit(log, Some(&tenant), "auth.failure", t0, 0),
            Verdict::Record(None)
        );
        for ms in 1..4 {
            assert_eq!(
                t.admit(log, Some(&tenant), "auth.failure", t0, ms),
                Verdict::Suppress
            );
        }
        // Not yet: the bucket is empty.
        assert!(t.due(t0, false).is_empty());
        let due = t.due(t0 + Duration::from_millis(100), false);
        assert_eq!(
            due,
            vec![(
                log,
                "auth.failure",
                Suppressed {
                    tenant: Some(tenant.clone()),
                    count: 3,
                    since: 1,
                    until: 3,
                }
            )]
        );
        // Taken once; the next event is not a summary's carrier any more.
        assert!(t.due(t0 + Duration::from_secs(1), false).is_empty());
        // A drain takes a count whatever its bucket says.
        assert_eq!(
            t.admit(
                log,
                Some(&tenant),
                "auth.failure",
                t0 + Duration::from_secs(1),
                5
            ),
            Verdict::Record(None)
        );
        t.admit(
            log,
            Some(&tenant),
            "auth.failure",
            t0 + Duration::from_secs(1),
            6,
        );
        assert!(t.due(t0 + Duration::from_secs(1), false).is_empty());
        assert_eq!(t.due(t0 + Duration::from_secs(1), true).len(), 1);
    }
}
