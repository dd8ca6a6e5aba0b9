//! The tenant registry, as the operator sees it.

use serde::Serialize;
use serde_json::{Map, Value};
use strata_auth::{OperatorScope, TenantScope};
use strata_store::{Reads, TenantMeta};
use strata_types::{Collection, Millis, TenantId, now_millis};

use crate::{Engine, EngineError};

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantInfo {
    pub id: TenantId,
    pub display_name: Option<String>,
    pub created_at: Millis,
}

impl From<&TenantMeta> for TenantInfo {
    fn from(m: &TenantMeta) -> Self {
        TenantInfo {
            id: m.id.clone(),
            display_name: m
                .profile
                .get("display_name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            created_at: m.created_at,
        }
    }
}

const MAX_DISPLAY_NAME: usize = 256;

impl Engine {
    /// Registers a tenant and creates the server's default collections for it.
    pub fn create_tenant(
        &self,
        _op: &OperatorScope,
        id: &TenantId,
        display_name: Option<String>,
    ) -> Result<TenantInfo, EngineError> {
        if display_name
            .as_ref()
            .is_some_and(|n| n.len() > MAX_DISPLAY_NAME)
        {
            return Err(EngineError::BadRequest(format!(
                "display_name: at most {MAX_DISPLAY_NAME} bytes"
            )));
        }
        let now = now_millis();
        self.store.write(|w| {
            if w.tenant(id)?.is_some() {
                return Err(EngineError::TenantExists(id.clone()));
            }
            let mut profile = Map::new();
            if let Some(name) = display_name {
                profile.insert("display_name".into(), Value::String(name));
            }
            let meta = w.create_tenant(id, now, profile)?;
            for c in &self.config.default_collections {
                let collection = Collection {
                    name: c.name.clone(),
                    dim: c.dim,
                    metric: c.metric,
                    created_at: now,
                };
                w.put_collection(meta.key, &collection)?;
            }
            Ok(TenantInfo::from(&meta))
        })
    }

    pub fn tenant(&self, _op: &OperatorScope, id: &TenantId) -> Result<TenantInfo, EngineError> {
        Ok(TenantInfo::from(&self.tenant_meta(id)?))
    }

    pub fn tenants(&self, _op: &OperatorScope) -> Result<Vec<TenantInfo>, EngineError> {
        Ok(self
            .store
            .read()?
            .tenants()?
            .iter()
            .map(TenantInfo::from)
            .collect())
    }

    /// The registry entry the authentication layer builds scopes from.
    pub fn tenant_meta(&self, id: &TenantId) -> Result<TenantMeta, EngineError> {
        self.store
            .read()?
            .tenant(id)?
            .ok_or_else(|| EngineError::TenantNotFound(id.clone()))
    }
}

/// Fails when the scope's tenant is no longer registered under the same storage key (it was
/// deleted, or deleted and re-created, after the credential was checked).
pub(crate) fn check_live(r: &impl Reads, scope: &TenantScope) -> Result<(), EngineError> {
    match r.tenant(scope.tenant())? {
        Some(meta) if meta.key == scope.key() => Ok(()),
        _ => Err(EngineError::TenantNotFound(scope.tenant().clone())),
    }
}
