//! Audit rows kept for a retention period (`[audit] retention_days`), then deleted.
//!
//! Every write appends an audit row, and no quota counts them: without a retention, a tenant
//! rewriting the same records grows the disk without end. The periodic sweep deletes each log's
//! rows older than the retention from the log's start, in short transactions. A log's rows are
//! in the order they were written, so the sweep stops at its first row within the retention (an
//! imported row older than that, written later, goes once the rows before it have), and it
//! never deletes a log's newest row, whose sequence number the next row continues.

use strata_auth::OperatorScope;
use strata_store::codec::decode_json;
use strata_store::{Reads, StoreError, TenantKey};
use strata_types::{Millis, now_millis};

use crate::audit::AuditRow;
use crate::{Engine, EngineError};

/// Rows one transaction of the sweep deletes at most: a few milliseconds of the write lock.
const SWEEP_ROWS: usize = 2_000;

impl Engine {
    /// Deletes audit rows older than `retention_ms` from every tenant's log and the server's;
    /// returns how many. A log whose rows do not decode is left as it is (and said in the
    /// server log), the others are swept.
    pub fn sweep_audit(
        &self,
        _op: &OperatorScope,
        retention_ms: Millis,
    ) -> Result<usize, EngineError> {
        let cutoff = now_millis().saturating_sub(retention_ms);
        let mut logs = vec![TenantKey::SERVER];
        logs.extend(self.store.read()?.tenants()?.into_iter().map(|m| m.key));
        let mut swept = 0;
        for key in logs {
            match self.sweep_audit_log(key, cutoff) {
                Ok(n) => swept += n,
                Err(e) => tracing::warn!(error = %e, "audit retention skipped a log"),
            }
        }
        Ok(swept)
    }

    fn sweep_audit_log(&self, key: TenantKey, cutoff: Millis) -> Result<usize, EngineError> {
        // Read first: most logs have nothing to sweep at a given hour, and a write
        // transaction (with its sync) for each of many tenants would cost more than the sweep.
        let first = self.store.read()?.audit_rows(key, 0, 2)?;
        let has_stale = match first.as_slice() {
            [(_, oldest), _] => decode_json::<AuditRow>(oldest)?.at < cutoff,
            // None, or only the newest row, which stays.
            _ => false,
        };
        if !has_stale {
            return Ok(0);
        }
        let mut swept = 0;
        loop {
            let (deleted, more) = self.store.write(|w| {
                let stale = |bytes: &[u8]| {
                    let row: AuditRow = decode_json(bytes)?;
                    Ok::<_, StoreError>(row.at < cutoff)
                };
                Ok::<_, EngineError>(w.trim_audit_log(key, stale, SWEEP_ROWS)?)
            })?;
            swept += deleted;
            if !more {
                return Ok(swept);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use strata_auth::OperatorScope;
    use strata_types::{NewRecord, RequestScope};

    use crate::audit::AuditQuery;
    use crate::test_support::engine_with_tenant;

    #[test]
    fn rows_past_the_retention_go_but_each_logs_newest_stays_and_numbering_goes_on() {
        let (_dir, engine, scope) = engine_with_tenant("acme");
        let op = OperatorScope::for_tests();
        for i in 0..5 {
            let note = NewRecord {
                content: Some(format!("note {i}")),
                ..Default::default()
            };
            engine
                .put(&scope, &RequestScope::default(), vec![note])
                .unwrap();
        }
        let rows = |engine: &crate::Engine| {
            engine
                .own_audit_rows(&scope, &AuditQuery::default())
                .unwrap()
        };
        let before = rows(&engine);
        assert!(before.len() >= 5, "{}", before.len());
        let newest = before.iter().map(|r| r.seq).max().unwrap();
        // Within a retention of a day: nothing goes.
        assert_eq!(engine.sweep_audit(&op, 86_400_000).unwrap(), 0);
        assert_eq!(rows(&engine).len(), before.len());
        // Past a retention of nothing: all but each log's newest row.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let swept = engine.sweep_audit(&op, 0).unwrap();
        assert!(swept >= before.len() - 1, "{swept}");
        let after = rows(&engine);
        assert_eq!(
            after.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![newest]
        );
        assert_eq!(
            engine.sweep_audit(&op, 0).unwrap(),
            0,
            "the newest row stays"
        );
        // The next row goes on from the newest's number.
        engine
            .put(
                &scope,
                &RequestScope::default(),
                vec![NewRecord {
                    content: Some("later".into()),
                    ..Default::default()
                }],
            )
            .unwrap();
        let seqs: Vec<u64> = rows(&engine).iter().map(|r| r.seq).collect();
        assert!(seqs.contains(&(newest + 1)), "{seqs:?}");
    }
}
