//! A tenant's collections: vector spaces with a fixed dimension and metric.

use strata_auth::{Permission, TenantScope};
use strata_store::Reads;
use strata_types::{Collection, CollectionName, MemoryDefaults, Metric, TextAnalyzer, now_millis};

use crate::tenant_index::Change;
use crate::tenants::check_live;
use crate::whole_tenant::{Reach, require_whole_tenant};
use crate::{Engine, EngineError};

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
            dim,
            metric,
            analyzer,
            MemoryDefaults::default(),
        )
    }

    /// Creates a collection with the given text analyzer and memory-intelligence defaults
    /// (initial confidence, recency half-life).
    pub fn create_collection_full(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
        dim: u32,
        metric: Metric,
        analyzer: TextAnalyzer,
        memory: MemoryDefaults,
    ) -> Result<Collection, EngineError> {
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
        self.store.write(|w| {
            let profile = check_live(w, scope)?;
            if w.collection(scope.key(), name)?.is_some() {
                return Err(EngineError::CollectionExists(name.clone()));
            }
            if let Some(max) = profile.limits.max_collections
                && w.collections(scope.key())?.len() as u64 >= max
            {
                return Err(EngineError::QuotaExceeded {
                    resource: "max_collections",
                    limit: max,
                });
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
                embedder: None,
                analyzer,
                memory,
            };
            w.put_collection(scope.key(), &c)?;
            Ok(c)
        })
    }

    /// Deletes a collection and every record in it, of every domain and principal, in one
    /// transaction; so it needs an unbound `admin` credential with `all_principals`.
    pub fn delete_collection(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
    ) -> Result<u64, EngineError> {
        require_whole_tenant(
            scope,
            Permission::Admin,
            Reach::EveryPrincipal,
            "deleting a collection",
        )?;
        self.write_tenant(scope, "collection.delete", |w, changes| {
            if !w.delete_collection(scope.key(), name)? {
                return Err(EngineError::CollectionNotFound(name.clone()));
            }
            let mut doomed = Vec::new();
            // What the records counted in the tenant's usage goes with them: they leave
            // without one `Change::Remove` each, which is what usually gives it back.
            let mut gone = crate::lifecycle::Usage::default();
            for r in w.records(scope.key(), None)? {
                let r = r?;
                if &r.modality == name {
                    gone.add(&r);
                    doomed.push(r.id);
                }
            }
            for id in &doomed {
                w.delete_record(scope.key(), id)?;
                crate::links::remove_links_of(w, scope, id)?;
            }
            crate::lifecycle::release(w, scope.key(), gone)?;
            crate::snapshot::delete(w, scope.key(), name)?;
            crate::search_image::delete(w, scope.key(), name)?;
            w.delete_change_mark(scope.key(), name)?;
            changes.push(Change::DropCollection(name.clone()));
            Ok(doomed.len() as u64)
        })
        .inspect(|_| {
            // Its graph files: no snapshot names them now (best effort; a file left behind is
            // deleted by the tenant's next save or purge).
            let _ = self
                .store
                .retain_derived(scope.key(), |n| !crate::graph_file::is_of(n, name));
        })
    }
}
