//! A write's embedding in steps of bounded cost. Embedding a batch of long texts takes tens of
//! milliseconds a text; done in one call, a large batch would hold a worker of the shared pool
//! for tens of seconds and every other tenant's requests would queue behind it. Instead the
//! API runs [`Engine::begin_put`], then [`Engine::embed_put_step`] until
//! [`PendingPut::is_embedded`], then [`Engine::finish_put`], each as its own job in the
//! tenant's fair share, so other tenants' jobs run between the steps. The write itself is one
//! transaction as before; it refuses records whose collection changed model since
//! `begin_put` (`put_one` checks the collection against the model that embedded them). Each
//! step first checks that the tenant is still live: a batch whose tenant was suspended or
//! deleted meanwhile stops at its next step with the error its commit would give, instead of
//! embedding on for minutes only to be refused at the end.

use strata_auth::{Permission, TenantScope};
use strata_embed::MAX_TOKENS;
use strata_types::{NewRecord, RequestScope};

use crate::embedding::embed_error;
use crate::records::PreparedPut;
use crate::{Engine, EngineError, PutOutcome};

/// Word pieces embedded per step: about one long paragraph (the model reads at most 256),
/// a few tens of milliseconds of one core. Short texts are batched up to it, which keeps most
/// of a batch's throughput.
pub(crate) const STEP_TOKENS: usize = 256;

/// A text's cost in word pieces, estimated from its length without tokenising it twice: a
/// word piece of English is about four bytes, so three over-counts it a little, and the model
/// reads no more than [`MAX_TOKENS`] of any text.
pub(crate) fn estimated_tokens(text: &str) -> usize {
    (text.len() / 3 + 2).min(MAX_TOKENS)
}

/// A validated write whose texts are being embedded, step by step.
pub struct PendingPut {
    batch: PreparedPut,
    /// Whose write it is: each step checks the tenant is still live.
    scope: TenantScope,
    /// The first record not yet looked at by a step.
    next: usize,
}

impl PendingPut {
    /// Whether every record the loaded model embeds has its vector: the write can be finished.
    pub fn is_embedded(&self) -> bool {
        self.next >= self.batch.records.len()
    }

    /// Moves `next` past records that need no embedding.
    fn skip_done(&mut self) {
        let embedded = &self.batch.embedded;
        while self.next < embedded.len() && !embedded[self.next] {
            self.next += 1;
        }
    }
}

impl Engine {
    /// Checks a write (credential, input, which records the loaded model embeds) and returns it
    /// ready for its embedding steps. Embeds nothing. A record's error names it by its place
    /// (`records[i]`) when there are several.
    pub fn begin_put(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        records: Vec<NewRecord>,
    ) -> Result<PendingPut, EngineError> {
        let indexed = records.len() > 1;
        self.begin_put_indexed(scope, req, records, indexed)
    }

    /// [`Engine::begin_put`] of a batch sent in the `{"records": [...]}` form: a record's error
    /// names it by its place, even in a batch of one.
    pub fn begin_put_batch(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        records: Vec<NewRecord>,
    ) -> Result<PendingPut, EngineError> {
        self.begin_put_indexed(scope, req, records, true)
    }

    fn begin_put_indexed(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        records: Vec<NewRecord>,
        indexed: bool,
    ) -> Result<PendingPut, EngineError> {
        let batch = self.prepare_put(scope, req, records, indexed)?;
        let mut pending = PendingPut {
            batch,
            scope: scope.clone(),
            next: 0,
        };
        pending.skip_done();
        Ok(pending)
    }

    /// Embeds the next texts of `pending`, about [`STEP_TOKENS`] word pieces of them by
    /// [`estimated_tokens`] (at least one text). Does nothing once [`PendingPut::is_embedded`].
    /// Fails as the write's commit would (`TenantSuspended`, `TenantNotFound`) once its tenant
    /// is no longer live, before embedding anything more.
    pub fn embed_put_step(&self, pending: &mut PendingPut) -> Result<(), EngineError> {
        // From memory while no registry row changed (`liveness`): a few atomic reads a step.
        self.check_readable(&pending.scope, Permission::Write)?;
        if pending.is_embedded() {
            return Ok(());
        }
        let Some((embedder, _)) = self.loaded_embedder() else {
            // Records are marked only when a model is loaded, and it never unloads.
            return Err(EngineError::Embedding("no embedder loaded".into()));
        };
        let records = &mut pending.batch.records;
        let embedded = &pending.batch.embedded;
        let (mut picked, mut tokens) = (Vec::new(), 0);
        let mut i = pending.next;
        while i < records.len() {
            if embedded[i] {
                let n = estimated_tokens(records[i].content.as_deref().unwrap_or_default());
                if !picked.is_empty() && tokens + n > STEP_TOKENS {
                    break;
                }
                tokens += n;
                picked.push(i);
            }
            i += 1;
        }
        let texts: Vec<&str> = picked
            .iter()
            .map(|&r| records[r].content.as_deref().unwrap_or_default())
            .collect();
        let vectors = crate::embedding::forward_pass(embedder, &texts)
            .map_err(|e| embed_error(e, |t| picked[t]))?;
        for (&r, v) in picked.iter().zip(vectors) {
            records[r].vector = Some(v);
        }
        pending.next = i;
        pending.skip_done();
        Ok(())
    }

    /// Writes `pending` in one transaction, durable before this returns; texts its steps have
    /// not embedded yet are embedded first.
    pub fn finish_put(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        pending: PendingPut,
    ) -> Result<Vec<PutOutcome>, EngineError> {
        let batch = self.embedded(pending)?;
        self.write_prepared(scope, req, batch)
    }

    /// The prepared write of `pending`, its remaining steps run.
    pub(crate) fn embedded(&self, mut pending: PendingPut) -> Result<PreparedPut, EngineError> {
        while !pending.is_embedded() {
            self.embed_put_step(&mut pending)?;
        }
        Ok(pending.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;
    use strata_auth::OperatorScope;
    use strata_types::TenantId;

    /// A write prepared for tenant `id`, then its tenant suspended (or deleted): its next step
    /// fails with the commit's own error, so nothing more is embedded for it.
    fn a_step_after(id: &str, stop: impl Fn(&Engine, &TenantId)) -> EngineError {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let tenant = TenantId::parse(id).unwrap();
        engine
            .create_tenant(&OperatorScope::for_tests(), &tenant, None)
            .unwrap();
        let scope = crate::test_support::admin_scope(&engine, id);
        let req = RequestScope::default();
        let record = || NewRecord {
            content: Some("a note".into()),
            vector: Some(vec![0.5, 0.5]),
            ..Default::default()
        };
        let mut pending = engine.begin_put(&scope, &req, vec![record()]).unwrap();
        engine.embed_put_step(&mut pending).unwrap();
        stop(&engine, &tenant);
        let step = engine.embed_put_step(&mut pending).unwrap_err();
        // What the write's own transaction says, its steps' check left out.
        let commit = engine
            .write_prepared(&scope, &req, pending.batch)
            .unwrap_err();
        assert_eq!(step.to_string(), commit.to_string());
        step
    }

    #[test]
    fn a_step_stops_once_its_tenant_is_suspended_or_deleted() {
        let op = OperatorScope::for_tests();
        let suspended = a_step_after("acme", |e, id| {
            e.suspend_tenant(&op, id).unwrap();
        });
        assert!(
            matches!(suspended, EngineError::TenantSuspended(_)),
            "{suspended:?}"
        );
        let deleted = a_step_after("acme", |e, id| {
            e.delete_tenant(&op, id).unwrap();
        });
        assert!(
            matches!(deleted, EngineError::TenantNotFound(_)),
            "{deleted:?}"
        );
    }

    #[test]
    fn a_step_holds_one_long_paragraph_or_many_short_texts() {
        let long = "word ".repeat(400);
        assert_eq!(estimated_tokens(&long), MAX_TOKENS);
        assert!(2 * estimated_tokens(&long) > STEP_TOKENS);
        assert!(16 * estimated_tokens("a short note of a few words") <= STEP_TOKENS);
    }
}
