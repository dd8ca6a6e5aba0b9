//! `Idempotency-Key`: a client may name a write, so that a retry after a lost answer gets the
//! first answer back instead of writing again (a record with a server-made id would otherwise
//! be written twice). The answer is kept in the same transaction as the write, so after a
//! crash either both exist or neither does; the same key with a different request is refused
//! rather than answered with the other request's answer. Kept answers are swept after
//! [`IDEMPOTENCY_RETENTION_MS`].

use serde_json::Value;
use strata_auth::{OperatorScope, Permission, TenantScope};
use strata_store::{IdempotencyRow, Reads, has_stale_idempotency_rows};
use strata_types::{Millis, NewRecord, RequestScope, now_millis};

use crate::{Engine, EngineError, PendingPut, PutOutcome};

/// How long a kept answer stays: a day, as long as clients reasonably retry.
pub const IDEMPOTENCY_RETENTION_MS: Millis = 24 * 60 * 60 * 1000;

/// Longest key accepted (a UUID is 36 characters).
const MAX_KEY_LEN: usize = 255;

/// Rows one transaction of the sweep looks at: a few milliseconds of the write lock.
const SWEEP_ROWS: usize = 2_000;

/// A client's key for one request and the fingerprint of that request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    key: String,
    fingerprint: String,
    /// Whose keys these are (see [`Idempotency::among`]); empty: the tenant's.
    namespace: String,
}

impl Idempotency {
    /// Checks the key: 1 to 255 visible ASCII characters. `fingerprint` identifies the request
    /// (a hash of its route, query and body).
    pub fn new(key: &str, fingerprint: String) -> Result<Self, EngineError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(EngineError::BadRequest(format!(
                "Idempotency-Key: expected 1 to {MAX_KEY_LEN} visible ASCII characters"
            )));
        }
        Ok(Idempotency {
            key: key.to_owned(),
            fingerprint,
            namespace: String::new(),
        })
    }

    /// Keeps the key among those of `namespace` only (the API passes a digest of the
    /// credential's grant): the same key sent by a caller of another grant — another principal
    /// of the tenant — is a different key, so nobody learns whether another used a key, nor
    /// blocks another's writes by taking its keys first.
    pub fn among(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }

    /// The key as the client sent it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What identifies the request the key names: equal for a retry of it, different for
    /// another request.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key as stored: unique within the tenant, across namespaces.
    pub fn stored(&self) -> String {
        if self.namespace.is_empty() {
            self.key.clone()
        } else {
            format!("{}/{}", self.namespace, self.key)
        }
    }
}

/// The status and answer of `row`, kept for a request under `idem` and not yet expired; a row
/// kept for another request under the same key is `IdempotencyKeyReused`.
fn kept(
    row: Option<IdempotencyRow>,
    idem: &Idempotency,
) -> Result<Option<(u16, Value)>, EngineError> {
    match row {
        Some(row) if row.at > now_millis() - IDEMPOTENCY_RETENTION_MS => {
            if row.fingerprint != idem.fingerprint {
                return Err(EngineError::IdempotencyKeyReused(idem.key.clone()));
            }
            Ok(Some((row.status, row.answer)))
        }
        _ => Ok(None),
    }
}

/// What an idempotent write did.
#[derive(Debug)]
pub enum Answered<T> {
    /// Written now.
    Fresh(T),
    /// Written by an earlier request with the same key: its status and body, unchanged.
    Replayed { status: u16, answer: Value },
}

impl Engine {
    /// [`Engine::put`] under an `Idempotency-Key`. `shape` turns the outcomes into the status
    /// and body the client is answered with, which are kept with the key.
    pub fn put_idempotent(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        records: Vec<NewRecord>,
        idem: &Idempotency,
        shape: impl FnOnce(&[PutOutcome]) -> (u16, Value),
    ) -> Result<Answered<Vec<PutOutcome>>, EngineError> {
        let pending = self.begin_put(scope, req, records)?;
        self.finish_put_idempotent(scope, req, pending, idem, shape)
    }

    /// The answer kept for an earlier write under `idem`, if any, looked up before a write
    /// embeds anything: a retry of a write that has ended costs a look-up, not the batch's
    /// embedding again. The same key under another request is `IdempotencyKeyReused`. The
    /// write's own transaction checks again ([`Engine::finish_put_idempotent`]), so this is
    /// only a shortcut.
    ///
    /// A kept answer found by a read belongs to a write that has committed, but may not be
    /// durable: its writer may still be waiting for its sync, or have failed it (a full disk),
    /// and answering the retry from it would acknowledge a write a crash can lose. So it is
    /// looked up again in a write transaction of the tenant, whose durability (waited for, or
    /// deferred to the caller's [`Engine::deferring_durability`]) covers every commit before
    /// it, and which a store that failed a sync refuses. Only a retry pays for it. That
    /// transaction writes no record: a tenant in the `critical` integrity state, whose writes
    /// are refused, still gets the answers of writes made before, and its audit row says
    /// `replayed`.
    pub fn kept_answer(
        &self,
        scope: &TenantScope,
        idem: &Idempotency,
    ) -> Result<Option<(u16, Value)>, EngineError> {
        let stored = idem.stored();
        let found = self.read_tenant(scope, Permission::Write, |r| {
            kept(r.idempotency_row(scope.key(), &stored)?, idem)
        })?;
        if found.is_none() {
            return Ok(None);
        }
        let detail = serde_json::json!({ "replayed": true });
        self.confirm_in_write(scope, "memory.put", detail, |w| {
            kept(w.idempotency_row(scope.key(), &stored)?, idem)
        })
    }

    /// [`Engine::finish_put`] under an `Idempotency-Key`: the last step of
    /// [`Engine::put_idempotent`]. The key is looked up in the write's own transaction, so a
    /// request that embedded alongside another with the same key still writes only once.
    pub fn finish_put_idempotent(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        pending: PendingPut,
        idem: &Idempotency,
        shape: impl FnOnce(&[PutOutcome]) -> (u16, Value),
    ) -> Result<Answered<Vec<PutOutcome>>, EngineError> {
        let batch = self.embedded(pending)?;
        let stored = idem.stored();
        self.write_tenant(scope, "memory.put", |w, changes| {
            if let Some((status, answer)) = kept(w.idempotency_row(scope.key(), &stored)?, idem)? {
                return Ok(Answered::Replayed { status, answer });
            }
            let now = now_millis();
            let outcomes = batch.apply(w, changes, scope, req)?;
            let (status, answer) = shape(&outcomes);
            let row = IdempotencyRow {
                at: now,
                fingerprint: idem.fingerprint.clone(),
                status,
                answer,
            };
            w.put_idempotency_row(scope.key(), &stored, &row)?;
            Ok(Answered::Fresh(outcomes))
        })
    }

    /// Deletes kept answers older than [`IDEMPOTENCY_RETENTION_MS`], of every tenant; returns
    /// how many. Run by the server's periodic sweep.
    pub fn sweep_idempotency_keys(&self, _op: &OperatorScope) -> Result<usize, EngineError> {
        let cutoff = now_millis() - IDEMPOTENCY_RETENTION_MS;
        let reader = self.store.read()?;
        let mut swept = 0;
        for meta in reader.tenants()? {
            if !has_stale_idempotency_rows(&reader, meta.key, cutoff)? {
                continue;
            }
            // Short transactions of at most SWEEP_ROWS rows each, so that no tenant's writes
            // wait on a whole sweep, even of a tenant with millions of keyed writes.
            let mut after: Option<Vec<u8>> = None;
            loop {
                let (deleted, next) = self.store.write(|w| {
                    Ok::<_, EngineError>(w.sweep_idempotency_rows(
                        meta.key,
                        cutoff,
                        after.as_deref(),
                        SWEEP_ROWS,
                    )?)
                })?;
                swept += deleted;
                match next {
                    Some(key) => after = Some(key),
                    None => break,
                }
            }
        }
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use strata_types::RecordId;

    use super::*;
    use crate::test_support::engine_with_tenant;

    fn note(content: &str) -> Vec<NewRecord> {
        vec![NewRecord {
            content: Some(content.into()),
            ..Default::default()
        }]
    }

    fn shape(outcomes: &[PutOutcome]) -> (u16, Value) {
        (201, json!({"id": outcomes[0].id.to_string()}))
    }

    fn fresh_id(a: Answered<Vec<PutOutcome>>) -> RecordId {
        match a {
            Answered::Fresh(o) => o[0].id.clone(),
            Answered::Replayed { .. } => panic!("expected a fresh write"),
        }
    }

    /// A kept answer found by the look-up before a write is answered only after a durable
    /// point of the tenant's store: the write that kept it may have committed without being
    /// durable yet (its writer still waiting for its sync, or failed at it).
    #[test]
    fn a_kept_answer_is_given_only_after_a_durable_point() {
        let (_dir, engine, scope) = engine_with_tenant("acme");
        let idem = Idempotency::new("retry-2", "f1".into()).unwrap();

        // Nothing kept: a look-up, no write to wait for.
        let (none, durable) = engine.deferring_durability(|| engine.kept_answer(&scope, &idem));
        assert!(none.unwrap().is_none());
        assert!(durable.is_empty(), "a first request waits for nothing");

        let first = fresh_id(
            engine
                .put_idempotent(&scope, &RequestScope::default(), note("n"), &idem, shape)
                .unwrap(),
        );
        let (kept, durable) = engine.deferring_durability(|| engine.kept_answer(&scope, &idem));
        assert_eq!(kept.unwrap(), Some((201, json!({"id": first.to_string()}))));
        assert!(
            !durable.is_empty(),
            "a replay waits for a durable point first"
        );

        // The same key under another request is refused by the look-up already.
        let other = Idempotency::new("retry-2", "f2".into()).unwrap();
        let err = engine.kept_answer(&scope, &other).unwrap_err();
        assert!(matches!(err, EngineError::IdempotencyKeyReused(_)), "{err}");
    }

    #[test]
    fn a_retry_gets_the_first_answer_and_writes_nothing() {
        let (_dir, engine, scope) = engine_with_tenant("acme");
        let req = RequestScope::default();
        let idem = Idempotency::new("retry-1", "f1".into()).unwrap();

        let first = fresh_id(
            engine
                .put_idempotent(&scope, &req, note("a new note"), &idem, shape)
                .unwrap(),
        );
        match engine
            .put_idempotent(&scope, &req, note("a new note"), &idem, shape)
            .unwrap()
        {
            Answered::Replayed { status, answer } => {
                assert_eq!(status, 201);
                assert_eq!(answer, json!({"id": first.to_string()}));
            }
            Answered::Fresh(_) => panic!("the retry wrote again"),
        }
        assert_eq!(engine.count(&scope, &req, None).unwrap(), 1);

        // The same key for another request is refused, and writes nothing.
        let other = Idempotency::new("retry-1", "f2".into()).unwrap();
        let err = engine
            .put_idempotent(&scope, &req, note("another note"), &other, shape)
            .unwrap_err();
        assert!(matches!(err, EngineError::IdempotencyKeyReused(_)), "{err}");
        assert_eq!(engine.count(&scope, &req, None).unwrap(), 1);

        // Among another namespace (another grant), the same key is another key: it writes.
        let elsewhere = Idempotency::new("retry-1", "f2".into())
            .unwrap()
            .among("other-grant");
        fresh_id(
            engine
                .put_idempotent(&scope, &req, note("another note"), &elsewhere, shape)
                .unwrap(),
        );
        assert_eq!(engine.count(&scope, &req, None).unwrap(), 2);

        // Another key writes.
        let next = Idempotency::new("retry-2", "f1".into()).unwrap();
        let second = fresh_id(
            engine
                .put_idempotent(&scope, &req, note("a new note, again"), &next, shape)
                .unwrap(),
        );
        assert_ne!(first, second);

        // Fresh rows survive the sweep; the answer is still replayed afterwards.
        let op = OperatorScope::for_tests();
        assert_eq!(engine.sweep_idempotency_keys(&op).unwrap(), 0);
        assert!(matches!(
            engine
                .put_idempotent(&scope, &req, note("a new note"), &idem, shape)
                .unwrap(),
            Answered::Replayed { .. }
        ));
    }

    #[test]
    fn keys_are_validated() {
        for bad in ["", "has space", "tab\t", "ünicode", &"k".repeat(256)] {
            assert!(Idempotency::new(bad, "f".into()).is_err(), "{bad:?}");
        }
        assert!(Idempotency::new("0f8fad5b-d9cb-469f-a165-70867728950e", "f".into()).is_ok());
    }
}
