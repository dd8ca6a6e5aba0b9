//! Imports cut short by a crash or shutdown.
//!
//! An import creates its tenant suspended and marked `importing`, writes the export's lines in
//! many transactions, and clears the mark in the transaction that activates the tenant. A
//! process that dies in between leaves a tenant holding part of its data; an import is all or
//! nothing, so the next start discards it (a purge, like a failed import's), and the client,
//! which never got its answer, imports again.

use strata_auth::OperatorScope;
use strata_types::TenantId;

use crate::lifecycle::TenantProfile;
use crate::{Engine, EngineError};

impl Engine {
    /// Purges every tenant an import was still creating when the process stopped; returns
    /// their ids. Run at start, before requests are served. A tenant that cannot be purged now
    /// is logged and left suspended (and still marked) for the next start. The rewrite of the
    /// data file that takes their bytes out of it runs in the background (it took the start
    /// 1.7 s for a 140 MB file, growing with the file, not with the import).
    pub fn discard_interrupted_imports(
        &self,
        op: &OperatorScope,
    ) -> Result<Vec<TenantId>, EngineError> {
        let mut cut_short = Vec::new();
        // Only the rows that mention `importing` (every profile with the flag set does), each
        // decoded on its own: an unreadable one is not an import's to discard.
        for (_, meta) in self.store.rows_marked(strata_store::RowMark::Importing)? {
            if let Ok(meta) = meta
                && TenantProfile::of(&meta).is_ok_and(|p| p.importing)
            {
                cut_short.push((meta.id, meta.key));
            }
        }
        let mut discarded = Vec::new();
        for (id, key) in cut_short {
            match self.purge_incarnation_vacuum_owed(op, &id, key) {
                Ok(_) => {
                    tracing::warn!(tenant = %id, "discarded an import cut short by a crash or \
                        shutdown; import the export again");
                    discarded.push(id);
                }
                Err(e) => {
                    tracing::error!(tenant = %id, error = %e, "an import cut short could not \
                        be discarded; the tenant stays suspended")
                }
            }
        }
        Ok(discarded)
    }
}
