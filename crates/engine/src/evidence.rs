//! Evidence about a memory: the Beta-Bernoulli confidence update of
//! `strata_types::Confidence::with_evidence`, written with its audit row in one transaction.

use strata_auth::{Permission, TenantScope};
use strata_store::Reads;
use strata_types::{Evidence, Record, RecordId, RequestScope, now_millis};

use crate::records::{store_record, writable};
use crate::visibility::Visibility;
use crate::{Engine, EngineError};

impl Engine {
    /// Applies one piece of evidence to a record the request can see and may write
    /// (`Visibility::check_writable`) and returns the record with its new confidence. Needs
    /// `write`; a missing, foreign or invisible id is [`EngineError::NotFound`], a visible
    /// record the credential may not write is [`EngineError::ScopeForbidden`]. The update and the audit row (`memory.evidence`) commit
    /// together, so concurrent evidence is never lost: each reads the value the previous one
    /// wrote.
    pub fn add_evidence(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        id: &RecordId,
        evidence: Evidence,
    ) -> Result<Record, EngineError> {
        let now = now_millis();
        let vis = Visibility::resolve(scope, req, Permission::Write, now)?;
        self.write_tenant(scope, "memory.evidence", |w, changes| {
            // Judged at the commit, not at arrival: a record that expired while the request
            // waited for the write lock is gone, not brought back by its evidence.
            let vis = vis.at_commit();
            // Evidence rewrites the record's confidence, so it is a write of the record.
            let mut record = writable(w.record(scope.key(), id)?, &vis)?;
            record.confidence = record.confidence.with_evidence(evidence);
            record.updated_at = vis.now;
            store_record(w, changes, scope, &record)?;
            Ok(record)
        })
    }
}
