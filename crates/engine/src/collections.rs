//! A tenant's collections: vector spaces with a fixed dimension and metric.

use strata_auth::{Permission, TenantScope};
use strata_store::{DeletingReads, Reads};
use strata_types::{Collection, CollectionName, MemoryDefaults, Metric, TextAnalyzer, now_millis};

use crate::scan_steps::Stepped;
use crate::tenants::check_live;
use crate::whole_tenant::{Reach, require_whole_tenant};
use crate::{Engine, EngineError};

/// What a new collection is: its vectors' dimension and metric, how its text is analysed,
/// its memory-intelligence defaults, and whether the built-in model embeds its text.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionSpec {
    pub dim: u32,
    pub metric: Metric,
    pub analyzer: TextAnalyzer,
    pub memory: MemoryDefaults,
    pub embed: bool,
}

impl Engine {
    pub fn collections(&self, scope: &TenantScope) -> Result<Vec<Collection>, EngineError> {
        self.read_tenant(scope, Permission::Read, |r| Ok(r.collections(scope.key())?))
    }

    /// Creates a collection whose text is analysed the `standard` way.
    pub fn create_collection(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
        dim: u32,
        metric: Metric,
    ) -> Result<Collection, EngineError> {
        self.create_collection_with(scope, name, dim, metric, TextAnalyzer::Standard)
    }

    /// Creates a collection with the given text analyzer.
    pub fn create_collection_with(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
        dim: u32,
        metric: Metric,
        analyzer: TextAnalyzer,
    ) -> Result<Collection, EngineError> {
        self.create_collection_full(
            scope,
            name,
            CollectionSpec {
                dim,
                metric,
                analyzer,
                memory: MemoryDefaults::default(),
                embed: false,
            },
        )
    }

    /// Creates a collection with the given text analyzer and memory-intelligence defaults
    /// (initial confidence, recency half-life); with `embed`, one whose text (records' and
    /// queries') the server's built-in model embeds, which needs that model loaded and `dim`
    /// its dimension.
    pub fn create_collection_full(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
        spec: CollectionSpec,
    ) -> Result<Collection, EngineError> {
        let CollectionSpec {
            dim,
            metric,
            analyzer,
            memory,
            embed,
        } = spec;
        // A collection is one object for every domain and principal of the tenant; a new one
        // holds no record, so `all_principals` is not needed.
        require_whole_tenant(
            scope,
            Permission::Admin,
            Reach::NoRecord,
            "creating a collection",
        )?;
        memory.validate()?;
        if dim == 0 || dim > self.config.limits.max_dim {
            return Err(EngineError::BadRequest(format!(
                "dim: must be 1 to {}",
                self.config.limits.max_dim
            )));
        }
        let embedder = match (embed, &self.embedder) {
            (false, _) => None,
            (true, None) => {
                return Err(EngineError::BadRequest(
                    "embed: this server runs without its built-in embedder".into(),
                ));
            }
            (true, Some(e)) if e.dim() != dim as usize => {
                return Err(EngineError::BadRequest(format!(
                    "dim: a collection the built-in model embeds needs dim {}, the model's",
                    e.dim()
                )));
            }
            (true, Some(e)) => Some(crate::embedding::identity(e)),
        };
        self.store
            .write(|w| {
                let profile = check_live(w, scope)?;
                if w.collection(scope.key(), name)?.is_some() {
                    return Err(EngineError::CollectionExists(name.clone()));
                }
                // Its records would show again under the new collection: the delete must end first.
                if w.collection_deleting(scope.key(), name)?.is_some() {
                    return Err(EngineError::CollectionDeleteUnfinished(name.clone()));
                }
                if let Some(max) = profile.limits.max_collections {
                    let used = w.collections(scope.key())?.len() as u64;
                    if used >= max {
                        return Err(EngineError::QuotaExceeded {
                            resource: "max_collections",
                            limit: max,
                            used: Some(used),
                        });
                    }
                }
                crate::audit::append(
                    w,
                    scope.key(),
                    crate::audit::tenant_event(
                        scope,
                        "collection.create",
                        serde_json::json!({"collection": name}),
                    ),
                )?;
                let c = Collection {
                    name: name.clone(),
                    dim,
                    metric,
                    created_at: now_millis(),
                    embedder,
                    analyzer,
                    memory,
                };
                w.put_collection(scope.key(), &c)?;
                Ok(c)
            })
            // The quota's figure as any quota refusal shows it: only to a whole-tenant credential.
            .map_err(|e| e.seen_by(scope))
    }

    /// Deletes a collection and every record in it, of every domain and principal, running
    /// every step of [`Engine::begin_delete_collection`] in this call (a caller on the shared
    /// pool runs them as separate jobs instead); so it needs an unbound `admin` credential
    /// with `all_principals`. Resumes an unfinished delete of it. How many records it deleted.
    pub fn delete_collection(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
    ) -> Result<u64, EngineError> {
        let mut pending = self.begin_delete_collection(scope, name)?;
        loop {
            match self.delete_collection_step(pending)? {
                Stepped::Done(n) => return Ok(n),
                Stepped::More(p) => pending = *p,
            }
        }
    }
}
