//! Server configuration: one TOML file (see `strata.example.toml`, the commented reference)
//! plus environment overrides `STRATA__SECTION__KEY=value`, parsed once into [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use strata_auth::AuthConfig;
use strata_engine::EngineConfig;

pub use crate::model::EmbedderConfig;

/// Prefix of environment overrides; `__` separates the path, e.g. `STRATA__SERVER__LISTEN`.
const ENV_PREFIX: &str = "STRATA__";

/// More reserved threads than this is a typo, not a plan: each is an OS thread.
const MAX_RESERVED_WORKERS: usize = 256;
/// Beyond ten seconds a job giving way no longer protects anyone's latency.
const MAX_LONG_JOB_AFTER_MS: u64 = 10_000;
/// A poll longer than this would keep a core busy through idle stretches for nothing.
const MAX_IDLE_POLL_US: u64 = 10_000;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub engine: EngineConfig,
    pub embedder: EmbedderConfig,
    pub log: LogConfig,
    pub metrics: MetricsSection,
    pub scheduler: SchedulerSection,
    pub audit: AuditSection,
}

/// `[audit]`: how many security events (authentication failures, tenant mismatches, scope
/// refusals) are written to each audit log and the server log. Per log (the server's own, and
/// each tenant's) and kind of event, `security_events_burst` at once, then
/// `security_events_per_sec`; the events past that are counted, and the count is written as one
/// summary row and log line with the next event admitted (or, without one, once the bucket
/// has refilled, and at shutdown). `retention_days`: audit rows older than that are deleted by
/// the periodic sweep (`server.purge_interval_secs`); 0 keeps them all.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    pub security_events_burst: u32,
    pub security_events_per_sec: f64,
    pub retention_days: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        let d = strata_api::SecurityEventLimits::default();
        AuditSection {
            security_events_burst: d.burst,
            security_events_per_sec: d.per_sec,
            retention_days: 0,
        }
    }
}

impl AuditSection {
    /// The limits for the HTTP layer.
    pub fn api(&self) -> strata_api::SecurityEventLimits {
        strata_api::SecurityEventLimits {
            burst: self.security_events_burst,
            per_sec: self.security_events_per_sec,
        }
    }

    /// The retention in milliseconds, `None` when rows are kept for ever.
    pub fn retention_ms(&self) -> Option<i64> {
        (self.retention_days > 0).then(|| {
            i64::try_from(self.retention_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX)
        })
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.security_events_burst == 0 {
            bail!("audit.security_events_burst: at least 1");
        }
        let rate = self.security_events_per_sec;
        if !(rate.is_finite() && rate > 0.0) {
            bail!("audit.security_events_per_sec: a number above 0");
        }
        Ok(())
    }
}

/// `[scheduler]`: capacity of the worker pool set aside for `dedicated` tenants, and the
/// low-priority workers that carry tenants over their share of the CPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSection {
    /// Worker threads, on top of `server.workers`, that run only `dedicated` tenants' jobs, so
    /// their latency does not depend on how busy the shared workers are. They use no CPU
    /// while no dedicated tenant has work waiting. 0: dedicated tenants share the pool.
    pub reserved_workers: usize,
    /// Worker threads, on top of `server.workers`, at the lowest OS priority: while several
    /// tenants are active, the jobs of one with a backlog that used more than its share of the
    /// recent CPU run there, so the others' jobs preempt them. Unset (the default): as many as
    /// `server.workers`. 0: off. Otherwise at least `server.workers` (a tenant moved to the
    /// background must still reach every core). See [`Config::background_workers`].
    pub background_workers: Option<usize>,
    /// How low background workers run: `nice19` (the default), `idle` (Linux `SCHED_IDLE`),
    /// or `unchanged` (which, like any platform where the priority cannot be lowered, turns
    /// the background workers off). The background graph builds compute at it too, whatever
    /// `background_workers` says (`unchanged`: at the process's priority).
    pub background_priority: BackgroundPrioritySetting,
    /// The time slice, in microseconds, that the async threads (which read requests, answer
    /// them and hand engine work to the pool) ask of the OS scheduler; 0 leaves the kernel's
    /// default (1.4 ms on a 2-core machine). A short slice gives them an early deadline under
    /// Linux's EEVDF scheduler (6.12 and newer), so a request arriving while the pool's workers
    /// keep the cores busy is read within a fraction of a millisecond instead of after the
    /// running worker's slice: under another tenant's flood a light tenant's p50 fell by about
    /// a third and its p99 by 12–34 %, for about 4 % of the flooding tenant's throughput
    /// (docs/benchmarks.md). Otherwise 100–100,000, the kernel's range; where the OS does not
    /// take it, the server says so once and runs with the default.
    pub io_thread_slice_us: u64,
    /// Async threads of a second runtime that serves the connections of a tenant over its
    /// share of the CPU, their reads and answers with their requests (the background workers'
    /// rule without their backlog: more than 1.25× its
    /// weighted share of the pool's recent CPU while others are active), so a light tenant's
    /// requests do not wait behind a flooding tenant's on the same async threads: under a
    /// flood of vector writes a light tenant's p99 fell to about a third (docs/benchmarks.md).
    /// They use no CPU while no tenant is over its share. The rule needs the background
    /// workers' accounting: with `background_workers = 0` there is no lane. Unset (the
    /// default): as many as the main runtime's (one per CPU). 0: off. At most 256.
    pub over_share_io_threads: Option<usize>,
    /// Whether the over-share lane's threads (`over_share_io_threads`) run at the background
    /// priority (`nice 19`, never `SCHED_IDLE`: they take locks every request takes), so the
    /// OS runs a light tenant's request before the flooding tenant's parsing, key checks and
    /// answers (docs/benchmarks.md, 6 Dec). At the process's priority when
    /// `background_priority = "unchanged"`. On by default.
    pub lower_over_share_requests: bool,
    /// Milliseconds a pool job may run while another tenant's job waits for a worker before it
    /// gives up its worker's place to a spare thread (at most twice as many spares as workers), so
    /// a tenant's long jobs (embedding long texts, large searches) on every worker do not make
    /// the others' short requests wait for them to end. The long job goes on; the flooding
    /// tenant gets no extra thread. 0 turns it off; otherwise at most 10,000.
    pub long_job_after_ms: u64,
    /// Microseconds a pool worker that finished a job watches the queue before it sleeps, so
    /// that a request arriving meanwhile (a client sending one after another) starts without
    /// waking a thread. One worker at a time, yielding its core between looks. Unset:
    /// 200 on a machine with two CPUs or more, 0 (off) with one. At most 10,000.
    pub idle_poll_us: Option<u64>,
    /// Poll after every job even while polls keep finding nothing (by default, after three
    /// such polls in a row they become rare, up to 64 turns apart). A poll keeps its core
    /// awake, which on a virtual machine made a client slower than the window (a Python
    /// client sending searches one after another) about a fifth faster, for up to
    /// `idle_poll_us` of one core's time per request. Off by default.
    pub idle_poll_always: bool,
    /// Whether a tenant over its share (the background workers' rule, backlog or not) applies
    /// its writes to its loaded indexes at the background priority, on a helper thread of the
    /// worker running the write, rather than at normal priority on the worker: a vector's
    /// graph insert is most of a vector write's CPU on the pool, and under a flood of vector
    /// writes at ten times a light tenant's rate that tenant's p99 fell by a fifth to a third
    /// (docs/benchmarks.md). The write's transaction stays at normal priority; a tenant alone,
    /// or within its share, applies as before. The built-in embedder's forward passes for such
    /// a tenant (its text writes and text searches) run on that helper too. Needs the
    /// background workers. On by default.
    pub lower_over_share_index_work: bool,
}

impl SchedulerSection {
    /// The pool's idle poll window: the setting, else the machine's default.
    pub fn idle_poll(&self) -> Duration {
        self.idle_poll_us
            .map_or_else(strata_api::default_idle_poll, Duration::from_micros)
    }
}

/// `[scheduler] background_priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackgroundPrioritySetting {
    Idle,
    Nice19,
    Unchanged,
}

impl BackgroundPrioritySetting {
    pub fn api(self) -> strata_api::BackgroundPriority {
        match self {
            BackgroundPrioritySetting::Idle => strata_api::BackgroundPriority::Idle,
            BackgroundPrioritySetting::Nice19 => strata_api::BackgroundPriority::Nice19,
            BackgroundPrioritySetting::Unchanged => strata_api::BackgroundPriority::Unchanged,
        }
    }
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            reserved_workers: strata_api::PoolConfig::default().reserved_workers,
            background_workers: None,
            background_priority: BackgroundPrioritySetting::Nice19,
            io_thread_slice_us: strata_sched::slice::DEFAULT_SLICE_US,
            long_job_after_ms: u64::try_from(
                strata_api::PoolConfig::default().long_job_after.as_millis(),
            )
            .unwrap_or(u64::MAX),
            idle_poll_us: None,
            idle_poll_always: false,
            over_share_io_threads: None,
            lower_over_share_requests: true,
            lower_over_share_index_work: true,
        }
    }
}

/// `[metrics]`: who may scrape `/metrics`, and how many tenants get their own label there.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// A bearer token for `/metrics` only (a scraper need not hold the operator key); at least
    /// 16 bytes. Absent: only operator credentials may scrape.
    pub token: Option<String>,
    /// Tenants with their own `tenant` label, the most active first; the rest are summed
    /// under `tenant="(other)"`.
    pub tenant_label_cap: usize,
    /// Tenants that always get their own label, on top of the cap.
    pub pinned_tenants: Vec<String>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        let d = strata_api::MetricsConfig::default();
        MetricsSection {
            token: d.token,
            tenant_label_cap: d.tenant_label_cap,
            pinned_tenants: d.pinned_tenants,
        }
    }
}

impl MetricsSection {
    fn validate(&self) -> anyhow::Result<()> {
        if self.token.as_ref().is_some_and(|t| t.len() < 16) {
            bail!("metrics.token: at least 16 bytes");
        }
        for t in &self.pinned_tenants {
            strata_types::TenantId::parse_field("metrics.pinned_tenants", t.clone())?;
        }
        Ok(())
    }

    pub fn api(&self) -> strata_api::MetricsConfig {
        strata_api::MetricsConfig {
            token: self.token.clone(),
            tenant_label_cap: self.tenant_label_cap,
            pinned_tenants: self.pinned_tenants.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    pub listen: String,
    /// Where the embedded storage keeps its files.
    pub data_dir: PathBuf,
    /// Where online backups (`strata backup`, `POST /v1/admin/backups`) are written, each in
    /// a directory of its own; created when the first backup is. Best on another disk than
    /// `data_dir`.
    pub backup_dir: PathBuf,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Bytes of request bodies one tenant may hold in memory at once; a body past it is
    /// refused unread with 429 CONCURRENCY_LIMITED. 0 means four times `max_body_bytes`.
    pub max_body_bytes_per_tenant: u64,
    /// Bytes one tenant's answers may hold in memory until its clients read them; a request
    /// whose estimated answer would pass it is refused before its answer is fetched, with 429
    /// ANSWER_MEMORY_LIMITED, and a list page's fetch stops at its estimate (a shorter page).
    /// 0: no limit.
    pub max_answer_bytes_per_tenant: u64,
    /// Bytes all tenants' answers may hold together, counted as fetched and encoded (not as
    /// estimated); past it, 503 OVERLOADED. 0: no limit.
    pub max_answer_bytes: u64,
    /// How long shutdown waits for in-flight requests before dropping them.
    pub shutdown_timeout_secs: u64,
    /// Largest tenant import body, in bytes (imports are streamed, not buffered).
    pub max_import_bytes: u64,
    /// How long a soft-deleted tenant stays restorable before the sweep purges it, in seconds.
    pub retention_secs: u64,
    /// How often the retention sweep runs, in seconds; 0 turns it off.
    pub purge_interval_secs: u64,
    /// How often the expiry sweep removes the records past their `expires_at`, in seconds; 0
    /// turns it off (expired records are then only hidden, and keep their quota).
    pub expiry_sweep_interval_secs: u64,
    /// How often, in seconds, the indexes of resident tenants with at least
    /// `index_checkpoint_changes` unsaved record changes are saved (graphs, search images),
    /// so that a crash leaves their next load little to replay and their change logs are
    /// trimmed; 0 turns it off (they are then saved only at eviction and a clean shutdown).
    pub index_checkpoint_interval_secs: u64,
    /// Unsaved record changes that make a resident tenant's indexes due for a checkpoint;
    /// 1 to `engine.change_log_cap` (a log that drops entries an image needs makes the next
    /// load rebuild instead of replay). 0 (the default): 20,000, or half the change log's cap
    /// when that is lower.
    pub index_checkpoint_changes: u64,
    /// Worker threads running engine work with fair queueing across tenants; 0 means one
    /// per CPU.
    pub workers: usize,
    /// Jobs waiting in the pool, across tenants, before requests get 503 OVERLOADED.
    pub max_queue: usize,
    /// Jobs one tenant may have waiting before its requests get 503 OVERLOADED.
    pub max_queue_per_tenant: usize,
    /// Connections served at once; one more is answered 503 OVERLOADED and closed. 0 derives
    /// the cap from the file descriptor limit (at most 4096).
    pub max_connections: usize,
    /// Connections one tenant may hold at once (counted from each connection's first request
    /// as that tenant); past it, 429 CONCURRENCY_LIMITED and the connection is closed. 0 means
    /// a quarter of `max_connections`, enforced only while fewer than a quarter are free.
    pub max_connections_per_tenant: usize,
    /// Seconds a request head may take (from the accept, or from its first byte on a
    /// keep-alive connection); a head cut short is answered 408.
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may take, plus one second per `body_min_bytes_per_sec` bytes
    /// received; a body still arriving after that is answered 408.
    pub body_read_timeout_secs: u64,
    /// The upload rate a long body must keep up to stay within its deadline; 0: none.
    pub body_min_bytes_per_sec: u64,
    /// Seconds a keep-alive connection may rest between requests.
    pub idle_timeout_secs: u64,
    /// Seconds a response write may make no progress (the client stopped reading).
    pub write_timeout_secs: u64,
    /// Largest request head (request line and headers) in bytes; larger is 431.
    pub max_header_bytes: usize,
    /// Lets an authenticated request that sends `X-Strata-Timing: 1` get its stage durations
    /// in `Server-Timing`. Off by default: they reveal how busy the shared pool is and other
    /// timing side channels; turn on for benchmarks and diagnosis on trusted deployments.
    pub stage_timing: bool,
    /// Longest request target (path and query) in bytes; longer is 414.
    pub max_uri_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7700".into(),
            data_dir: PathBuf::from("./data"),
            backup_dir: PathBuf::from("./backups"),
            max_body_bytes: strata_api::ApiConfig::default().max_body_bytes,
            max_body_bytes_per_tenant: 0,
            max_answer_bytes_per_tenant: strata_api::ApiConfig::default()
                .max_answer_bytes_per_tenant,
            max_answer_bytes: strata_api::ApiConfig::default().max_answer_bytes,
            shutdown_timeout_secs: 30,
            max_import_bytes: strata_api::ApiConfig::default().max_import_bytes,
            retention_secs: strata_api::ApiConfig::default().retention_secs,
            purge_interval_secs: 3600,
            expiry_sweep_interval_secs: 60,
            index_checkpoint_interval_secs: 60,
            index_checkpoint_changes: 0,
            workers: strata_api::PoolConfig::default().workers,
            max_queue: strata_api::PoolConfig::default().max_queue,
            max_queue_per_tenant: strata_api::PoolConfig::default().max_queue_per_tenant,
            max_connections: 0,
            max_connections_per_tenant: 0,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            body_min_bytes_per_sec: strata_api::ApiConfig::default().body_min_bytes_per_sec,
            idle_timeout_secs: 60,
            write_timeout_secs: 30,
            max_header_bytes: 64 * 1024,
            max_uri_bytes: strata_api::ApiConfig::default().max_uri_bytes,
            stage_timing: false,
        }
    }
}

/// Unsaved changes of a resident tenant that make a checkpoint due when none are configured.
const DEFAULT_CHECKPOINT_CHANGES: u64 = 20_000;

impl Config {
    /// The pool's normal workers, as the pool counts them (`server.workers`, 0: one per CPU).
    pub fn pool_workers(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        }
    }

    /// The pool's background workers: `scheduler.background_workers`, or when unset as many
    /// as the normal workers (at most 256) where their priority can be lowered (Linux, and a
    /// `background_priority` other than `unchanged`), else none, without a warning. On by
    /// default since 5 Dec 2026: with them a light tenant's p99 under another's flood was
    /// 1.07-1.08x its p99 alone on a quiet 2-core machine (2.9-3.9x without), and equal
    /// tenants' figures moved within the noise (docs/benchmarks.md, "Background workers on by
    /// default").
    pub fn background_workers(&self) -> usize {
        match self.scheduler.background_workers {
            Some(n) => n,
            None if cfg!(target_os = "linux")
                && self.scheduler.background_priority != BackgroundPrioritySetting::Unchanged =>
            {
                self.pool_workers().min(MAX_RESERVED_WORKERS)
            }
            None => 0,
        }
    }

    /// `scheduler.over_share_io_threads` with its default resolved: as many as the main async
    /// runtime starts (tokio's default, one per CPU).
    pub fn over_share_io_threads(&self) -> usize {
        self.scheduler.over_share_io_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// `server.index_checkpoint_changes` with its default (0) resolved against the change
    /// log's cap: a checkpoint must come before the log drops entries a saved image needs.
    pub fn index_checkpoint_changes(&self) -> u64 {
        match self.server.index_checkpoint_changes {
            0 => DEFAULT_CHECKPOINT_CHANGES.min((self.engine.change_log_cap / 2).max(1)),
            n => n,
        }
    }
}

impl ServerConfig {
    fn validate_connections(&self) -> anyhow::Result<()> {
        for (name, secs) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("write_timeout_secs", self.write_timeout_secs),
        ] {
            if secs == 0 {
                bail!("server.{name}: at least 1");
            }
        }
        // hyper refuses a read buffer under 8 KiB.
        if self.max_header_bytes < 8192 {
            bail!("server.max_header_bytes: at least 8192");
        }
        if !(256..=self.max_header_bytes).contains(&self.max_uri_bytes) {
            bail!("server.max_uri_bytes: at least 256 and at most server.max_header_bytes");
        }
        // A tenant's budget above the server's would let one tenant's answers refuse every
        // other tenant's (503) before its own are refused: the isolation the budget is for.
        if self.max_answer_bytes != 0
            && (self.max_answer_bytes_per_tenant == 0
                || self.max_answer_bytes_per_tenant > self.max_answer_bytes)
        {
            bail!(
                "server.max_answer_bytes_per_tenant: at most server.max_answer_bytes (0 turns \
                 the server's limit off)"
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `strata_api=debug,info`; `RUST_LOG` wins when set.
    pub filter: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Reads `file` (if given), applies the environment's overrides and validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<toml::Table>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            if let Some(path) = key.strip_prefix(ENV_PREFIX) {
                apply_override(&mut table, path, &value)
                    .with_context(|| format!("environment variable {key}"))?;
            }
        }
        // Through the path of the value that failed, so that the message names the setting
        // (an unknown key's section, a value of the wrong type from an environment variable)
        // and not only what was wrong with it.
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                match e.path().to_string() {
                    path if path == "." => anyhow::anyhow!("invalid configuration: {}", e.inner()),
                    path => anyhow::anyhow!("invalid configuration: in `{path}`: {}", e.inner()),
                }
            })?;
        config
            .engine
            .validate()
            .context("invalid [engine] configuration")?;
        if config.server.max_body_bytes < 1024 {
            bail!("server.max_body_bytes: at least 1024");
        }
        if config.server.max_import_bytes < 1024 {
            bail!("server.max_import_bytes: at least 1024");
        }
        config.server.validate_connections()?;
        let cap = config.engine.change_log_cap;
        if config.server.index_checkpoint_changes > cap {
            bail!(
                "server.index_checkpoint_changes: 1 to engine.change_log_cap ({cap}), or 0 for \
                 the default"
            );
        }
        // 0 would answer every data request 503 OVERLOADED.
        for (name, value) in [
            ("max_queue", config.server.max_queue),
            ("max_queue_per_tenant", config.server.max_queue_per_tenant),
        ] {
            if value == 0 {
                bail!("server.{name}: at least 1");
            }
        }
        // Refused here rather than ignored with a log line the operator may never read; not
        // when a `RUST_LOG` that parses replaces it at start-up (see `main`).
        let overridden = tracing_subscriber::EnvFilter::try_from_default_env().is_ok();
        if let (false, Err(e)) = (
            overridden,
            tracing_subscriber::EnvFilter::try_new(&config.log.filter),
        ) {
            bail!("log.filter: {e}");
        }
        config.metrics.validate()?;
        config.audit.validate()?;
        // Each worker is an OS thread (and may get twice as many spares): 100,000 of them aborted
        // the process at start-up when the OS ran out of memory for their stacks.
        if config.server.workers > MAX_RESERVED_WORKERS {
            bail!("server.workers: at most {MAX_RESERVED_WORKERS} (0: one per CPU)");
        }
        if config.scheduler.reserved_workers > MAX_RESERVED_WORKERS {
            bail!("scheduler.reserved_workers: at most {MAX_RESERVED_WORKERS}");
        }
        // An explicit count only: the default follows the normal workers.
        let background = config.scheduler.background_workers.unwrap_or(0);
        if background > MAX_RESERVED_WORKERS {
            bail!("scheduler.background_workers: at most {MAX_RESERVED_WORKERS}");
        }
        // Fewer background workers than cores would cap a tenant moved to the background
        // below what it gets alone in the foreground.
        let workers = config.pool_workers();
        if background > 0 && background < workers {
            bail!(
                "scheduler.background_workers: 0 (off) or at least server.workers ({workers}), \
                 got {background}"
            );
        }
        if config
            .scheduler
            .over_share_io_threads
            .is_some_and(|n| n > MAX_RESERVED_WORKERS)
        {
            bail!("scheduler.over_share_io_threads: at most {MAX_RESERVED_WORKERS}");
        }
        let slice = config.scheduler.io_thread_slice_us;
        if slice != 0 && !strata_sched::slice::SLICE_RANGE_US.contains(&slice) {
            bail!(
                "scheduler.io_thread_slice_us: 0 (the kernel's default) or 100-100000, got {slice}"
            );
        }
        if config.scheduler.long_job_after_ms > MAX_LONG_JOB_AFTER_MS {
            bail!(
                "scheduler.long_job_after_ms: 0 (off) or at most {MAX_LONG_JOB_AFTER_MS}, got {}",
                config.scheduler.long_job_after_ms
            );
        }
        if let Some(us) = config.scheduler.idle_poll_us
            && us > MAX_IDLE_POLL_US
        {
            bail!("scheduler.idle_poll_us: 0 (off) or at most {MAX_IDLE_POLL_US}, got {us}");
        }
        if config.embedder.threads == 0 {
            bail!("embedder.threads: at least 1");
        }
        Ok(config)
    }
}

/// Sets `SECTION__KEY` (case-insensitive) in `table`. Values that read as TOML booleans,
/// numbers, arrays or quoted strings take that type; anything else is a plain string, so
/// `STRATA__SERVER__LISTEN=0.0.0.0:7700` needs no quoting.
fn apply_override(table: &mut toml::Table, path: &str, raw: &str) -> anyhow::Result<()> {
    let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if keys.iter().any(String::is_empty) {
        bail!("malformed override path");
    }
    let value = parse_value(raw);
    let (last, parents) = keys.split_last().context("empty override path")?;
    let mut cur = table;
    for k in parents {
        let entry = cur
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("{k} is not a section"),
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let typed = raw == "true"
        || raw == "false"
        || raw.starts_with('[')
        || raw.starts_with('"')
        || raw.parse::<i64>().is_ok()
        || raw.parse::<f64>().is_ok();
    if typed
        && let Ok(mut t) = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        && let Some(v) = t.remove("v")
    {
        return v;
    }
    toml::Value::String(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn defaults_are_sensible() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7700");
        assert_eq!(c.server.data_dir, PathBuf::from("./data"));
        assert_eq!(c.server.retention_secs, 7 * 24 * 3600);
        assert_eq!(c.server.max_import_bytes, 1 << 30);
        assert_eq!(
            (
                c.server.max_answer_bytes_per_tenant,
                c.server.max_answer_bytes
            ),
            (256 << 20, 1 << 30)
        );
        assert!(c.embedder.enabled && c.embedder.auto_fetch);
        assert_eq!(
            c.embedder.model_dir,
            PathBuf::from("models/all-MiniLM-L6-v2")
        );
        assert_eq!(c.embedder.threads, 1);
    }

    #[test]
    fn embedder_settings_come_from_the_environment() {
        let c = Config::load(
            None,
            env(&[
                ("STRATA__EMBEDDER__ENABLED", "false"),
                ("STRATA__EMBEDDER__MODEL_DIR", "/opt/models/minilm"),
                ("STRATA__EMBEDDER__AUTO_FETCH", "false"),
                ("STRATA__EMBEDDER__THREADS", "2"),
            ]),
        )
        .unwrap();
        assert!(!c.embedder.enabled && !c.embedder.auto_fetch);
        assert_eq!(c.embedder.model_dir, PathBuf::from("/opt/models/minilm"));
        assert_eq!(c.embedder.threads, 2);
        assert!(Config::load(None, env(&[("STRATA__EMBEDDER__THREADS", "0")])).is_err());
    }

    #[test]
    fn env_overrides_typed_values() {
        let c = Config::load(
            None,
            env(&[
                ("STRATA__SERVER__LISTEN", "127.0.0.1:0"),
                ("STRATA__SERVER__SHUTDOWN_TIMEOUT_SECS", "3"),
                ("STRATA__ENGINE__LIMITS__MAX_BATCH", "10"),
                (
                    "STRATA__AUTH__JWT_HS256_SECRET",
                    "\"12345678901234567890123456789012\"",
                ),
                ("STRATA_OPERATOR_KEY", "not an override"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:0");
        assert_eq!(c.server.shutdown_timeout_secs, 3);
        assert_eq!(c.engine.limits.max_batch, 10);
        assert_eq!(
            c.auth.jwt_hs256_secret.as_deref(),
            Some("12345678901234567890123456789012")
        );
    }

    #[test]
    fn audit_rows_are_kept_unless_a_retention_is_set() {
        assert_eq!(
            Config::load(None, env(&[])).unwrap().audit.retention_ms(),
            None
        );
        let c = Config::load(None, env(&[("STRATA__AUDIT__RETENTION_DAYS", "90")])).unwrap();
        assert_eq!(c.audit.retention_ms(), Some(90 * 86_400_000));
        let c = Config::load(None, env(&[("STRATA__AUDIT__RETENTION_DAYS", "0")])).unwrap();
        assert_eq!(c.audit.retention_ms(), None);
    }

    #[test]
    fn stage_timing_is_off_unless_turned_on() {
        assert!(!Config::load(None, env(&[])).unwrap().server.stage_timing);
        let c = Config::load(None, env(&[("STRATA__SERVER__STAGE_TIMING", "true")])).unwrap();
        assert!(c.server.stage_timing);
    }

    #[test]
    fn connection_settings_are_validated() {
        let c = Config::load(
            None,
            env(&[
                ("STRATA__SERVER__HEADER_READ_TIMEOUT_SECS", "2"),
                ("STRATA__SERVER__MAX_CONNECTIONS", "8"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.header_read_timeout_secs, 2);
        assert_eq!(c.server.max_connections, 8);
        for bad in [
            ("STRATA__SERVER__MAX_ANSWER_BYTES_PER_TENANT", "0"),
            ("STRATA__SERVER__MAX_ANSWER_BYTES", "1000"),
            ("STRATA__SERVER__IDLE_TIMEOUT_SECS", "0"),
            ("STRATA__SERVER__MAX_HEADER_BYTES", "4096"),
            ("STRATA__SERVER__MAX_URI_BYTES", "100"),
            ("STRATA__SERVER__MAX_URI_BYTES", "1000000"),
            ("STRATA__AUDIT__SECURITY_EVENTS_BURST", "0"),
            ("STRATA__AUDIT__SECURITY_EVENTS_PER_SEC", "0"),
        ] {
            assert!(Config::load(None, env(&[bad])).is_err(), "{bad:?}");
        }
    }

    /// A setting that would make the server unusable (every write, every request refused)
    /// is refused at start-up, naming it.
    #[test]
    fn impossible_limits_are_refused_at_start_up_by_name() {
        for (var, value, expected) in [
            (
                "STRATA__ENGINE__LIMITS__MAX_BATCH",
                "0",
                "limits.max_batch: at least 1",
            ),
            (
                "STRATA__ENGINE__LIMITS__MAX_METADATA_BYTES",
                "0",
                "limits.max_metadata_bytes",
            ),
            (
                "STRATA__ENGINE__LIMITS__MAX_METADATA_DEPTH",
                "0",
                "limits.max_metadata_depth",
            ),
            (
                "STRATA__SERVER__WORKERS",
                "100000",
                "server.workers: at most 256",
            ),
            (
                "STRATA__SERVER__MAX_QUEUE",
                "0",
                "server.max_queue: at least 1",
            ),
            (
                "STRATA__SERVER__MAX_QUEUE_PER_TENANT",
                "0",
                "server.max_queue_per_tenant",
            ),
            // Past the change log's cap (100,000): a checkpoint would come after the log had
            // dropped entries the saved image needs.
            (
                "STRATA__SERVER__INDEX_CHECKPOINT_CHANGES",
                "100001",
                "engine.change_log_cap (100000)",
            ),
        ] {
            let err = Config::load(None, env(&[(var, value)])).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{var}: {err:#}");
        }
        // A `RUST_LOG` that parses replaces the configured filter, which is then not checked.
        if tracing_subscriber::EnvFilter::try_from_default_env().is_err() {
            let err = Config::load(None, env(&[("STRATA__LOG__FILTER", "info,[[[[")]));
            assert!(format!("{:#}", err.unwrap_err()).contains("log.filter"));
        }
        for (var, value) in [
            // Vectors only, and no per-principal tokens: working servers.
            ("STRATA__ENGINE__LIMITS__MAX_CONTENT_BYTES", "0"),
            ("STRATA__ENGINE__LIMITS__MAX_USER_TOKENS", "0"),
            ("STRATA__SERVER__WORKERS", "256"),
            ("STRATA__ENGINE__LIMITS__MAX_BATCH", "1"),
            ("STRATA__ENGINE__LIMITS__MAX_METADATA_BYTES", "2"),
            ("STRATA__SERVER__MAX_QUEUE_PER_TENANT", "1"),
            ("STRATA__SERVER__INDEX_CHECKPOINT_CHANGES", "100000"),
            ("STRATA__LOG__FILTER", "strata_api=debug,info"),
        ] {
            Config::load(None, env(&[(var, value)])).unwrap();
        }
    }

    /// The checkpoint's default follows a lowered change-log cap, so lowering the cap alone
    /// still starts; an explicit value past the cap is refused.
    #[test]
    fn the_checkpoint_default_stays_under_the_change_log_cap() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.index_checkpoint_changes(), 20_000);
        let low = Config::load(None, env(&[("STRATA__ENGINE__CHANGE_LOG_CAP", "1000")])).unwrap();
        assert_eq!(low.index_checkpoint_changes(), 500);
        let one = Config::load(None, env(&[("STRATA__ENGINE__CHANGE_LOG_CAP", "1")])).unwrap();
        assert_eq!(one.index_checkpoint_changes(), 1);
        let set = Config::load(
            None,
            env(&[("STRATA__SERVER__INDEX_CHECKPOINT_CHANGES", "700")]),
        )
        .unwrap();
        assert_eq!(set.index_checkpoint_changes(), 700);
        let err = Config::load(
            None,
            env(&[
                ("STRATA__ENGINE__CHANGE_LOG_CAP", "1000"),
                ("STRATA__SERVER__INDEX_CHECKPOINT_CHANGES", "1001"),
            ]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("server.index_checkpoint_changes"),
            "{err:#}"
        );
    }

    #[test]
    fn reserved_workers_default_to_one_and_are_bounded() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.scheduler.reserved_workers, 1);
        let off = Config::load(None, env(&[("STRATA__SCHEDULER__RESERVED_WORKERS", "0")])).unwrap();
        assert_eq!(off.scheduler.reserved_workers, 0);
        let err = Config::load(
            None,
            env(&[("STRATA__SCHEDULER__RESERVED_WORKERS", "100000")]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("scheduler.reserved_workers"),
            "{err:#}"
        );
        assert!(Config::load(None, env(&[("STRATA__SCHEDULER__RESERVED", "1")])).is_err());
    }

    #[test]
    fn long_job_after_defaults_to_ten_ms_and_is_bounded() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.scheduler.long_job_after_ms, 10);
        for (value, ok) in [("0", true), ("10000", true), ("10001", false)] {
            let got = Config::load(
                None,
                env(&[("STRATA__SCHEDULER__LONG_JOB_AFTER_MS", value)]),
            );
            assert_eq!(got.is_ok(), ok, "{value}: {got:?}");
        }
    }

    #[test]
    fn idle_poll_defaults_to_the_machines_and_is_bounded() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.scheduler.idle_poll_us, None);
        assert_eq!(c.scheduler.idle_poll(), strata_api::default_idle_poll());
        for (value, ok) in [
            ("0", true),
            ("200", true),
            ("10000", true),
            ("10001", false),
        ] {
            let got = Config::load(None, env(&[("STRATA__SCHEDULER__IDLE_POLL_US", value)]));
            assert_eq!(got.is_ok(), ok, "{value}: {got:?}");
        }
        assert!(!c.scheduler.idle_poll_always);
        let always = env(&[("STRATA__SCHEDULER__IDLE_POLL_ALWAYS", "true")]);
        assert!(
            Config::load(None, always)
                .unwrap()
                .scheduler
                .idle_poll_always
        );
        let off = Config::load(None, env(&[("STRATA__SCHEDULER__IDLE_POLL_US", "0")])).unwrap();
        assert_eq!(off.scheduler.idle_poll(), Duration::ZERO);
    }

    #[test]
    fn an_over_share_tenants_requests_and_index_work_are_lowered_unless_turned_off() {
        type Setting = fn(&SchedulerSection) -> bool;
        let settings: [(&str, Setting); 2] = [
            ("STRATA__SCHEDULER__LOWER_OVER_SHARE_REQUESTS", |s| {
                s.lower_over_share_requests
            }),
            ("STRATA__SCHEDULER__LOWER_OVER_SHARE_INDEX_WORK", |s| {
                s.lower_over_share_index_work
            }),
        ];
        for (var, setting) in settings {
            assert!(
                setting(&Config::load(None, env(&[])).unwrap().scheduler),
                "{var}"
            );
            let off = Config::load(None, env(&[(var, "false")])).unwrap();
            assert!(!setting(&off.scheduler), "{var}");
        }
    }

    #[test]
    fn io_thread_slice_is_short_by_default_and_checked_against_the_kernels_range() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.scheduler.io_thread_slice_us, 100);
        for (value, ok) in [("0", true), ("100", true), ("100000", true), ("99", false)] {
            let got = Config::load(
                None,
                env(&[("STRATA__SCHEDULER__IO_THREAD_SLICE_US", value)]),
            );
            assert_eq!(got.is_ok(), ok, "{value}: {got:?}");
        }
        let err = Config::load(
            None,
            env(&[("STRATA__SCHEDULER__IO_THREAD_SLICE_US", "100001")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("io_thread_slice_us"), "{err:#}");
    }

    #[test]
    fn background_workers_are_on_by_default_as_many_as_the_workers_at_nice19() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.scheduler.background_workers, None);
        let on_linux = |n: usize| if cfg!(target_os = "linux") { n } else { 0 };
        assert_eq!(c.background_workers(), on_linux(c.pool_workers()));
        // Where the priority is not to be lowered, none by default (and no warning).
        let unchanged = Config::load(
            None,
            env(&[("STRATA__SCHEDULER__BACKGROUND_PRIORITY", "unchanged")]),
        );
        assert_eq!(unchanged.unwrap().background_workers(), 0);
        let four = Config::load(None, env(&[("STRATA__SERVER__WORKERS", "4")])).unwrap();
        assert_eq!(four.background_workers(), on_linux(4));
        let off = Config::load(None, env(&[("STRATA__SCHEDULER__BACKGROUND_WORKERS", "0")]));
        assert_eq!(off.unwrap().background_workers(), 0);
        assert_eq!(
            c.scheduler.background_priority,
            BackgroundPrioritySetting::Nice19
        );
        let set = Config::load(
            None,
            env(&[
                ("STRATA__SERVER__WORKERS", "2"),
                ("STRATA__SCHEDULER__BACKGROUND_WORKERS", "2"),
                ("STRATA__SCHEDULER__BACKGROUND_PRIORITY", "idle"),
            ]),
        )
        .unwrap();
        assert_eq!(set.background_workers(), 2);
        assert_eq!(
            set.scheduler.background_priority,
            BackgroundPrioritySetting::Idle
        );
        for pairs in [
            vec![("STRATA__SCHEDULER__BACKGROUND_WORKERS", "100000")],
            vec![("STRATA__SCHEDULER__BACKGROUND_PRIORITY", "realtime")],
            // Fewer than the shared workers: a demoted tenant would be capped below the cores.
            vec![
                ("STRATA__SERVER__WORKERS", "4"),
                ("STRATA__SCHEDULER__BACKGROUND_WORKERS", "2"),
            ],
        ] {
            let err = Config::load(None, env(&pairs)).unwrap_err();
            assert!(
                format!("{err:#}").contains("background_"),
                "{pairs:?}: {err:#}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::load(None, env(&[("STRATA__SERVER__LISTNE", "x")])).is_err());
    }

    /// A refused setting is named by its path, whatever its section and however it was given.
    #[test]
    fn a_bad_setting_is_named_by_its_path() {
        for (var, value, named) in [
            (
                "STRATA__ENGINE__LIMITS__FOO",
                "1",
                "in `engine.limits.foo`: unknown field `foo`",
            ),
            (
                "STRATA__METRICS__PINNED_TENANTS",
                "acme",
                "in `metrics.pinned_tenants`: invalid type: string \"acme\", expected a sequence",
            ),
            ("STRATA__SERVER__LISTEN", "7", "in `server.listen`"),
        ] {
            let err = Config::load(None, env(&[(var, value)])).unwrap_err();
            assert!(format!("{err:#}").contains(named), "{var}: {err:#}");
        }
    }

    #[test]
    fn the_over_share_lane_has_a_thread_per_cpu_unless_set() {
        let c = Config::load(None, env(&[])).unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.over_share_io_threads(), cpus);
        let var = "STRATA__SCHEDULER__OVER_SHARE_IO_THREADS";
        let off = Config::load(None, env(&[(var, "0")])).unwrap();
        assert_eq!(off.over_share_io_threads(), 0);
        let three = Config::load(None, env(&[(var, "3")])).unwrap();
        assert_eq!(three.over_share_io_threads(), 3);
        let err = Config::load(None, env(&[(var, "257")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("over_share_io_threads"),
            "{err:#}"
        );
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../strata.example.toml");
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(c.server.listen, ServerConfig::default().listen);
    }
}
