//! The server's live figures for `/metrics`, the dashboard and `GET /v1/stats`: per route and
//! status, per tenant, and server-wide; recorded by one middleware ([`record_requests`]) and by
//! the admission gate (queue depth and wait, CPU time, pool use). Rendering, with the cap on
//! tenant labels, is in `exposition.rs`.
//!
//! Everything is counted in atomics on the request path; maps are only written the first time
//! a route or tenant is seen. Only authenticated tenants get a series, so a client cannot grow
//! these maps with made-up ids; route series are keyed by a fixed set of method names and the
//! route template (one `unmatched` label for every unknown path), so neither made-up methods
//! nor made-up paths grow them either. A tenant's series belongs to its incarnation
//! ([`TenantKey`]): a tenant deleted and re-created under the same id starts from zero, and
//! the series of a purged tenant is dropped ([`Metrics::forget`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use strata_store::TenantKey;
use strata_store::stats::{HistogramSnapshot, LatencyHistogram};
use strata_types::TenantId;

use crate::AppState;
use crate::answer_budget::TenantAnswers;
use crate::edge::WhoSlot;
use crate::error::AnsweredCode;

/// Settings of `/metrics` (`[metrics]` in the config file).
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// A bearer token that may read `/metrics` (and nothing else), for a scraper that should
    /// not hold the operator key. `None`: only operator credentials may scrape.
    pub token: Option<String>,
    /// Tenants that get their own `tenant` label, the most active first; the rest are summed
    /// under `tenant="(other)"`. Pinned tenants come on top of this number.
    pub tenant_label_cap: usize,
    /// Tenants that always get their own label (dedicated or important ones).
    pub pinned_tenants: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            token: None,
            tenant_label_cap: 100,
            pinned_tenants: Vec::new(),
        }
    }
}

/// Refusals counted per tenant, by the error code the client got.
pub(crate) const REFUSALS: [&str; 5] = [
    "RATE_LIMITED",
    "CONCURRENCY_LIMITED",
    "QUOTA_EXCEEDED",
    "OVERLOADED",
    "ANSWER_MEMORY_LIMITED",
];

/// Activity is ranked over the current and the previous window of this length.
const ACTIVITY_WINDOW: Duration = Duration::from_secs(60);

/// One tenant incarnation's live figures.
#[derive(Debug)]
pub(crate) struct TenantSeries {
    /// The id the incarnation answers to, for labels.
    id: TenantId,
    /// When the series was created: after its tenant authenticated, so the tenant existed then.
    born: Instant,
    /// Responses by status class: index 0 = 1xx … 4 = 5xx.
    classes: [AtomicU64; 5],
    /// Latency of every request of the tenant; its count is the tenant's request count.
    latency: LatencyHistogram,
    refusals: [AtomicU64; REFUSALS.len()],
    /// Jobs submitted to the pool and not started yet.
    queued: AtomicI64,
    /// Time from submission to a worker picking the job up.
    queue_wait: LatencyHistogram,
    /// CPU time the pool's threads spent on this tenant's jobs.
    cpu_nanos: AtomicU64,
    /// Bytes the tenant's answers hold until their clients read them (`answer_budget`).
    pub(crate) answers: Arc<TenantAnswers>,
    /// Whether the pool found the tenant over its share at its latest job: where its
    /// connections run its next requests (`crate::over_share_lane`).
    pub(crate) over_share: Arc<crate::over_share_lane::OverShare>,
    activity: Mutex<Activity>,
}

/// Requests in the current and the previous activity window.
#[derive(Debug, Default, Clone, Copy)]
struct Activity {
    window: u64,
    current: u64,
    previous: u64,
}

impl Activity {
    fn roll(&mut self, window: u64) {
        if window != self.window {
            self.previous = if window == self.window + 1 {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.window = window;
        }
    }
}

/// A copy of one tenant's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantSnapshot {
    pub classes: [u64; 5],
    pub latency: HistogramSnapshot,
    pub refusals: [u64; REFUSALS.len()],
    pub queued: i64,
    pub queue_wait: HistogramSnapshot,
    pub cpu_nanos: u64,
    /// Bytes the tenant's unread answers hold now.
    pub answer_bytes: u64,
    /// Requests in the last one to two activity windows; ranks tenants for their own label.
    pub recent: u64,
}

impl TenantSnapshot {
    pub fn requests(&self) -> u64 {
        self.latency.count()
    }

    /// Adds another tenant's figures (exact: every field is a count or a sum).
    pub fn add(&mut self, o: &TenantSnapshot) {
        for (a, b) in self.classes.iter_mut().zip(o.classes) {
            *a += b;
        }
        self.latency.add(&o.latency);
        for (a, b) in self.refusals.iter_mut().zip(o.refusals) {
            *a += b;
        }
        self.queued += o.queued;
        self.queue_wait.add(&o.queue_wait);
        self.cpu_nanos += o.cpu_nanos;
        self.answer_bytes += o.answer_bytes;
        self.recent += o.recent;
    }
}

/// A job waiting in the pool: counted in its tenant's queue depth until it starts or is
/// dropped unstarted (refused, or the server shut down).
pub(crate) struct Queued {
    series: Arc<TenantSeries>,
    since: Instant,
}

impl Queued {
    pub fn new(series: Arc<TenantSeries>) -> Queued {
        series.queued.fetch_add(1, Ordering::Relaxed);
        Queued {
            series,
            since: Instant::now(),
        }
    }

    /// The job starts: records its wait and returns the series to charge its CPU time to.
    pub fn start(self) -> Arc<TenantSeries> {
        self.series.queue_wait.observe(self.since.elapsed());
        Arc::clone(&self.series)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.series.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TenantSeries {
    fn new(id: TenantId) -> TenantSeries {
        TenantSeries {
            id,
            born: Instant::now(),
            classes: Default::default(),
            latency: LatencyHistogram::default(),
            refusals: Default::default(),
            queued: AtomicI64::new(0),
            queue_wait: LatencyHistogram::default(),
            cpu_nanos: AtomicU64::new(0),
            answers: Arc::default(),
            over_share: Arc::default(),
            activity: Mutex::default(),
        }
    }

    pub fn charge_cpu(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn record(&self, status: u16, latency: Duration, code: Option<&str>, window: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(latency);
        if let Some(i) = code.and_then(|c| REFUSALS.iter().position(|r| *r == c)) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
        let mut a = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        a.roll(window);
        a.current += 1;
    }

    fn snapshot(&self, window: u64) -> TenantSnapshot {
        let mut a = *self.activity.lock().unwrap_or_else(|e| e.into_inner());
        a.roll(window);
        TenantSnapshot {
            classes: std::array::from_fn(|i| self.classes[i].load(Ordering::Relaxed)),
            latency: self.latency.snapshot(),
            refusals: std::array::from_fn(|i| self.refusals[i].load(Ordering::Relaxed)),
            queued: self.queued.load(Ordering::Relaxed),
            queue_wait: self.queue_wait.snapshot(),
            cpu_nanos: self.cpu_nanos.load(Ordering::Relaxed),
            answer_bytes: self.answers.held(),
            recent: a.current + a.previous,
        }
    }
}

/// A route's series key: method ([`method_label`]), route template, status.
pub type RouteKey = (&'static str, String, u16);

/// The label of a request's method: the standard ones by name, every other `other`, so a
/// client inventing methods cannot add series.
pub(crate) fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 7] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
    ];
    KNOWN
        .iter()
        .find(|(k, _)| k == m)
        .map_or("other", |(_, name)| name)
}

/// The route label of a request no route matched: one for all, whatever the path.
pub(crate) const UNMATCHED: &str = "unmatched";

/// Every live figure of the server.
pub struct Metrics {
    started: Instant,
    /// The counters of `tenant="(other)"` in `/metrics`, across scrapes.
    pub(crate) folded: crate::exposition::FoldedCounters,
    routes: RwLock<HashMap<RouteKey, Arc<LatencyHistogram>>>,
    tenants: RwLock<HashMap<TenantKey, Arc<TenantSeries>>>,
    /// Pool workers running a job now, and the wall time they have spent on jobs.
    busy_workers: AtomicI64,
    busy_nanos: AtomicU64,
}

/// Connections the HTTP server holds open now. Process-wide, like the listener: one server
/// runs per process, and the accept loop has no `AppState` to count into.
static OPEN_CONNECTIONS: AtomicI64 = AtomicI64::new(0);

/// Requests run on the over-share lane (`crate::over_share_lane`). Process-wide for the same
/// reason.
static OVER_SHARE_LANE_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Counts a request run on the over-share lane.
pub(crate) fn over_share_lane_request() {
    OVER_SHARE_LANE_REQUESTS.fetch_add(1, Ordering::Relaxed);
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            folded: Default::default(),
            routes: RwLock::default(),
            tenants: RwLock::default(),
            busy_workers: AtomicI64::new(0),
            busy_nanos: AtomicU64::new(0),
        }
    }
}

/// A pool worker at work: counted busy until dropped (also when the job panics).
pub(crate) struct Busy<'a> {
    metrics: &'a Metrics,
    since: Instant,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.metrics.busy_workers.fetch_sub(1, Ordering::Relaxed);
        let nanos = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.metrics.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// An open connection: counted until dropped.
pub(crate) struct OpenConnection(());

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a connection open for as long as the returned guard lives.
pub(crate) fn connection_opened() -> OpenConnection {
    OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    OpenConnection(())
}

/// Server-wide figures at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSnapshot {
    pub uptime_secs: f64,
    pub busy_workers: i64,
    pub busy_nanos: u64,
    pub open_connections: i64,
    pub over_share_lane_requests: u64,
}

impl Metrics {
    fn window(&self) -> u64 {
        self.started.elapsed().as_secs() / ACTIVITY_WINDOW.as_secs()
    }

    /// The series of the tenant incarnation `key` (answering to `id`), created on first use.
    pub(crate) fn tenant(&self, key: TenantKey, id: &TenantId) -> Arc<TenantSeries> {
        if let Some(s) = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Arc::clone(s);
        }
        let mut map = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            map.entry(key)
                .or_insert_with(|| Arc::new(TenantSeries::new(id.clone()))),
        )
    }

    /// Drops the series of tenants gone from the registry: every series created before `asof`
    /// whose incarnation is not `alive`. A series is created only after its tenant
    /// authenticated, so one created before the registry was read and missing from it belongs
    /// to a purged tenant; one created since may belong to a tenant created since, and stays.
    pub(crate) fn forget(&self, asof: Instant, alive: impl Fn(TenantKey, &TenantId) -> bool) {
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, s| s.born >= asof || alive(*k, &s.id));
    }

    pub(crate) fn busy(&self) -> Busy<'_> {
        self.busy_workers.fetch_add(1, Ordering::Relaxed);
        Busy {
            metrics: self,
            since: Instant::now(),
        }
    }

    pub(crate) fn record(
        &self,
        key: RouteKey,
        tenant: Option<(TenantKey, &TenantId)>,
        latency: Duration,
        code: Option<&str>,
    ) {
        let status = key.2;
        let found = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let histogram = match found {
            Some(h) => h,
            None => Arc::clone(
                self.routes
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key)
                    .or_default(),
            ),
        };
        histogram.observe(latency);
        if let Some((k, id)) = tenant {
            self.tenant(k, id)
                .record(status, latency, code, self.window());
        }
    }

    pub fn routes(&self) -> Vec<(RouteKey, HistogramSnapshot)> {
        let mut out: Vec<_> = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, h)| (k.clone(), h.snapshot()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every tenant incarnation seen since start and not forgotten, with its figures.
    pub fn tenants(&self) -> HashMap<TenantKey, TenantSnapshot> {
        let window = self.window();
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, s)| (*k, s.snapshot(window)))
            .collect()
    }

    /// The figures of one incarnation; zero when it has none (no series is created).
    pub fn tenant_snapshot(&self, key: TenantKey) -> TenantSnapshot {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map(|s| s.snapshot(self.window()))
            .unwrap_or_default()
    }

    pub fn server(&self) -> ServerSnapshot {
        ServerSnapshot {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            busy_workers: self.busy_workers.load(Ordering::Relaxed),
            busy_nanos: self.busy_nanos.load(Ordering::Relaxed),
            open_connections: OPEN_CONNECTIONS.load(Ordering::Relaxed),
            over_share_lane_requests: OVER_SHARE_LANE_REQUESTS.load(Ordering::Relaxed),
        }
    }
}

/// CPU time the calling thread has used (Linux `CLOCK_THREAD_CPUTIME_ID`); zero where the
/// clock is unavailable, so a job is then charged nothing rather than failing.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Resident memory of the process in bytes, from `/proc/self/statm`; `None` off Linux.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096))
}

/// When a request arrived: the first byte of its head (or, pipelined, the end of the request
/// before it), as the connection saw it. Set by the server for every request it serves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestArrived(pub(crate) Instant);

/// Records every response: per route and status, and per tenant when a tenant credential
/// was presented. Runs inside the security middleware, so it reads the same [`WhoSlot`].
/// Each is timed from its arrival ([`RequestArrived`]; now, for a request that did not come
/// through the server's connections), so the time before authentication and admission, and
/// before the router ran at all, is in it: what the caller waited.
pub(crate) async fn record_requests(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let started = req
        .extensions()
        .get::<RequestArrived>()
        .map_or_else(Instant::now, |a| a.0);
    let method = method_label(req.method());
    // The route template, never the path: paths carry ids, which would explode cardinality.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |m| m.as_str().to_owned());
    let slot = req.extensions().get::<WhoSlot>().cloned();
    let response = next.run(req).await;
    let tenant = slot.and_then(|s| {
        s.lock()
            .ok()
            .and_then(|g| g.as_ref().and_then(|w| w.tenant_key.zip(w.tenant.clone())))
    });
    let code = response.extensions().get::<AnsweredCode>().map(|c| c.0);
    state.metrics.record(
        (method, route, response.status().as_u16()),
        tenant.as_ref().map(|(k, id)| (*k, id)),
        started.elapsed(),
        code,
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn acme() -> (TenantKey, TenantId) {
        (
            TenantKey::for_tests(1),
            TenantId::parse("acme").expect("id"),
        )
    }

    #[test]
    fn a_tenants_requests_refusals_and_queue_are_counted() {
        let m = Metrics::default();
        let (k, id) = acme();
        let key = |s: u16| ("POST", "/v1/search".to_owned(), s);
        m.record(key(200), Some((k, &id)), Duration::from_millis(2), None);
        m.record(
            key(429),
            Some((k, &id)),
            Duration::from_micros(50),
            Some("RATE_LIMITED"),
        );
        m.record(
            key(401),
            None,
            Duration::from_micros(50),
            Some("UNAUTHORIZED"),
        );
        let s = m.tenant_snapshot(k);
        assert_eq!(s.requests(), 2);
        assert_eq!(s.classes, [0, 1, 0, 1, 0]);
        assert_eq!(s.refusals, [1, 0, 0, 0, 0]);
        assert_eq!(s.recent, 2);
        let routes = m.routes();
        assert_eq!(routes.len(), 3);
        assert_eq!(routes.iter().map(|(_, h)| h.count()).sum::<u64>(), 3);

        let series = m.tenant(k, &id);
        let waiting = Queued::new(Arc::clone(&series));
        let refused = Queued::new(Arc::clone(&series));
        assert_eq!(m.tenant_snapshot(k).queued, 2);
        drop(refused);
        let running = waiting.start();
        running.charge_cpu(Duration::from_millis(3));
        let s = m.tenant_snapshot(k);
        assert_eq!(
            (s.queued, s.queue_wait.count(), s.cpu_nanos),
            (0, 1, 3_000_000)
        );
    }

    #[test]
    fn a_recreated_tenant_starts_from_zero_and_a_purged_ones_series_is_dropped() {
        let m = Metrics::default();
        let (old, id) = acme();
        let new = TenantKey::for_tests(2);
        let key = ("GET", "/v1/stats".to_owned(), 200);
        m.record(
            key.clone(),
            Some((old, &id)),
            Duration::from_millis(1),
            None,
        );
        assert_eq!(m.tenant_snapshot(new), TenantSnapshot::default());
        let asof = Instant::now();
        // The old incarnation is gone from the registry read after `asof`.
        m.forget(asof, |k, _| k == new);
        assert!(m.tenants().is_empty());
        // A series created after the registry was read stays, whatever the registry said.
        m.record(key, Some((new, &id)), Duration::from_millis(1), None);
        m.forget(asof, |_, _| false);
        assert_eq!(m.tenant_snapshot(new).requests(), 1);
    }

    #[test]
    fn only_standard_methods_get_their_own_label() {
        use axum::http::Method;
        for (m, want) in [
            (Method::GET, "GET"),
            (Method::POST, "POST"),
            (Method::PUT, "PUT"),
            (Method::PATCH, "PATCH"),
            (Method::DELETE, "DELETE"),
            (Method::HEAD, "HEAD"),
            (Method::OPTIONS, "OPTIONS"),
            (Method::TRACE, "other"),
            (Method::from_bytes(b"FROB1").expect("method"), "other"),
        ] {
            assert_eq!(method_label(&m), want);
        }
    }

    #[test]
    fn activity_rolls_over_two_windows() {
        let mut a = Activity {
            current: 5,
            ..Activity::default()
        };
        a.roll(1);
        assert_eq!((a.current, a.previous), (0, 5));
        a.current = 2;
        a.roll(3);
        assert_eq!((a.current, a.previous), (0, 0));
    }

    #[test]
    fn cpu_clock_and_memory_are_read() {
        let before = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_time() > before);
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
