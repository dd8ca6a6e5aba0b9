//! Engine settings: default collections and record limits.

use serde::{Deserialize, Serialize};
use strata_types::{CollectionName, Metric, RecordLimits, TextAnalyzer};

use crate::EngineError;
use crate::adaptive::AdaptiveConfig;
use crate::integrity::IntegrityConfig;
use crate::isolation::IsolationConfig;
use crate::residency::ResidencyConfig;

/// A collection every new tenant gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultCollection {
    pub name: CollectionName,
    pub dim: u32,
    pub metric: Metric,
    /// Whether the server's built-in embedder embeds this collection's text (when it runs one;
    /// `dim` must then be the embedder's, 384). Fixed when a tenant is created.
    #[serde(default)]
    pub embed: bool,
    /// How its text is analysed for BM25 (`standard` when absent).
    #[serde(default)]
    pub analyzer: TextAnalyzer,
}

/// The smallest store page cache accepted: below it every read would go to the file.
const MIN_STORAGE_CACHE_BYTES: u64 = 1 << 20;

/// Engine settings, validated by [`EngineConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub default_collections: Vec<DefaultCollection>,
    pub limits: RecordLimits,
    /// Whether concurrent writes share fsyncs (group commit). Every write is acknowledged only
    /// once durable either way; off, each pays its own fsync under the storage engine's single
    /// write lock, which caps durable single-record writes at about one per fsync.
    pub group_commit: bool,
    /// Whether concurrent small writes (a `put` of up to 8 records) share one storage
    /// transaction (batched commits, `docs/durability.md`); only with `group_commit`. Off,
    /// each write commits its own transaction before sharing the fsync.
    pub batch_writes: bool,
    /// Bytes of storage pages kept in memory (the store's page cache). Counted apart from
    /// the residency budget, so the process holds about `memory_budget_bytes` plus this plus
    /// a fixed overhead (`docs/residency.md`). At least 1 MiB. Default: an eighth of the
    /// memory the process may use (the machine's, or its container's limit), from 64 MiB to
    /// 4 GiB (`crate::storage_cache` says why).
    pub storage_cache_bytes: u64,
    /// From this length on, a storage file (the main file, a dedicated tenant's) records its
    /// allocator state in every durable commit, so that a start after a crash loads it instead
    /// of reading the whole file to rebuild it (`docs/durability.md`); such a commit syncs
    /// twice. 0 turns it off; 1 makes every file record it. Default 512 MiB.
    pub fast_recovery_from_bytes: u64,
    /// Entries each tenant's change log keeps at most (`docs/residency.md`): a tenant whose
    /// search image is older than its log's oldest entry is rebuilt from its records at its
    /// next load instead of replayed. At least 1.
    pub change_log_cap: u64,
    /// `[engine.residency]`: the memory budget for loaded tenant indexes.
    pub residency: ResidencyConfig,
    /// `[engine.integrity]`: per-tenant integrity thresholds.
    pub integrity: IntegrityConfig,
    /// `[engine.isolation]`: automatic promotion between isolation levels.
    pub isolation: IsolationConfig,
    /// `[engine.adaptive]`: adaptive reranking state (`docs/adaptive-reranking.md`).
    pub adaptive: AdaptiveConfig,
    /// The OS priority the background graph builds compute at (`graph_build`), so that they
    /// take only the CPU requests leave. Not an `[engine]` setting: the server passes its
    /// `[scheduler] background_priority` (lowest normal priority by default); a library user
    /// gets `Unchanged`, the builds at the process's priority.
    #[serde(skip)]
    pub background_priority: strata_sched::BackgroundPriority,
    /// Seconds a JWT's `iat` may run ahead of the server's clock, 0 when the server verifies
    /// no JWTs: an id purged is created again only after that many more seconds, so a token
    /// of the purged incarnation never names the new one (`recent_purges`). Not an `[engine]`
    /// setting: the server passes its `auth.jwt_leeway_secs`.
    #[serde(skip)]
    pub jwt_leeway_secs: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let c = |name: &str, dim| DefaultCollection {
            name: CollectionName::parse(name).expect("invariant: literal names are valid"),
            dim,
            metric: Metric::Cosine,
            embed: name == "text",
            // `standard` for `text` too: on the conversational-memory recall set it beat
            // `english` for BM25 (recall@10 0.66 vs 0.48 tenant-wide, 0.90 vs 0.86 per user)
            // and tied in hybrid search (docs/benchmarks.md).
            analyzer: TextAnalyzer::Standard,
        };
        EngineConfig {
            default_collections: vec![c("text", 384), c("image", 512), c("audio", 512)],
            limits: RecordLimits::default(),
            group_commit: true,
            batch_writes: true,
            storage_cache_bytes: crate::storage_cache::default_bytes(),
            fast_recovery_from_bytes: strata_store::DEFAULT_FAST_RECOVERY_FROM_BYTES,
            change_log_cap: strata_store::DEFAULT_CHANGE_LOG_CAP,
            residency: ResidencyConfig::default(),
            integrity: IntegrityConfig::default(),
            isolation: IsolationConfig::default(),
            adaptive: AdaptiveConfig::default(),
            background_priority: strata_sched::BackgroundPriority::Unchanged,
            jwt_leeway_secs: 0,
        }
    }
}

impl EngineConfig {
    pub fn validate(&self) -> Result<(), EngineError> {
        self.integrity.validate().map_err(EngineError::BadRequest)?;
        self.adaptive.validate().map_err(EngineError::BadRequest)?;
        self.limits.validate().map_err(EngineError::BadRequest)?;
        if self.storage_cache_bytes < MIN_STORAGE_CACHE_BYTES {
            return Err(EngineError::BadRequest(format!(
                "storage_cache_bytes must be at least {MIN_STORAGE_CACHE_BYTES}, not {}",
                self.storage_cache_bytes
            )));
        }
        if self.change_log_cap == 0 {
            return Err(EngineError::BadRequest(
                "change_log_cap must be at least 1".into(),
            ));
        }
        for (i, c) in self.default_collections.iter().enumerate() {
            // A copy-paste mistake, never meant: one of them would silently be lost.
            if self.default_collections[..i]
                .iter()
                .any(|d| d.name == c.name)
            {
                return Err(EngineError::BadRequest(format!(
                    "default_collections: {} is named twice",
                    c.name
                )));
            }
            if c.dim == 0 || c.dim > self.limits.max_dim {
                return Err(EngineError::BadRequest(format!(
                    "default collection {}: dim must be 1 to {}",
                    c.name, self.limits.max_dim
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_storage_cache_is_valid_and_a_tiny_one_is_refused_by_name() {
        let config = EngineConfig::default();
        assert!(config.storage_cache_bytes >= strata_store::DEFAULT_CACHE_BYTES as u64);
        config.validate().unwrap();
        let tiny = EngineConfig {
            storage_cache_bytes: 4096,
            ..EngineConfig::default()
        };
        let err = tiny.validate().unwrap_err().to_string();
        assert!(
            err.contains("storage_cache_bytes must be at least 1048576, not 4096"),
            "{err}"
        );
    }

    #[test]
    fn a_default_collection_named_twice_is_refused() {
        let mut config = EngineConfig::default();
        let mut again = config.default_collections[1].clone();
        again.dim = 8;
        config.default_collections.push(again);
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("default_collections: image is named twice"),
            "{err}"
        );
    }

    #[test]
    fn an_absent_storage_cache_takes_the_machine_sized_default() {
        let config: EngineConfig = serde_json::from_str(r#"{"group_commit": true}"#).unwrap();
        assert_eq!(
            config.storage_cache_bytes,
            crate::storage_cache::default_bytes()
        );
        let config: EngineConfig =
            serde_json::from_str(r#"{"storage_cache_bytes": 2097152}"#).unwrap();
        assert_eq!(config.storage_cache_bytes, 2 << 20);
    }
}
