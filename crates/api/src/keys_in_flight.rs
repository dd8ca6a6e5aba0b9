//! Writes in flight by `Idempotency-Key`: a client that times out and retries a slow write
//! (a large batch the server embeds) sends the same request again while the first is still
//! running. The retry waits for the first's answer and is answered with it, as a replay,
//! instead of embedding everything again; the engine's check in the write's transaction
//! (`strata_engine::Engine::finish_put_idempotent`) stays what guarantees one write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use strata_engine::{EngineError, Idempotency};
use strata_store::TenantKey;
use tokio::sync::watch;

use crate::ApiError;

/// Longest a retry waits for the first request's answer. Past it, the retry runs itself (the
/// transaction still writes once); a retry whose client is gone is dropped before that.
const MAX_WAIT: Duration = Duration::from_secs(120);

/// An answer to share: status and body.
type Answer = Option<(u16, Value)>;

/// The keys of writes running now, per tenant incarnation.
#[derive(Default)]
pub(crate) struct KeysInFlight {
    running: Mutex<HashMap<(TenantKey, String), Running>>,
    next_id: std::sync::atomic::AtomicU64,
}

struct Running {
    id: u64,
    fingerprint: String,
    answer: watch::Receiver<Answer>,
}

/// What a request with a key does.
pub(crate) enum Claim {
    /// No request with its key runs: it runs, and shares its answer through the guard.
    First(Leader),
    /// The same request ran: its answer, or `None` when the wait ran out, and this request
    /// runs itself, unregistered (a request that ended without an answer hands the key to
    /// one of its waiters instead).
    Waited(Option<(u16, Value)>),
}

/// The running request's hold on its key; dropping it frees the key, and waiters without an
/// answer run themselves.
pub(crate) struct Leader {
    keys: Arc<KeysInFlight>,
    slot: (TenantKey, String),
    id: u64,
    answer: watch::Sender<Answer>,
}

impl Leader {
    /// Hands `status` and `body` to the requests waiting on this one.
    pub(crate) fn answered(&self, status: u16, body: &Value) {
        self.answer.send_replace(Some((status, body.clone())));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut running = self.keys.lock();
        if running.get(&self.slot).is_some_and(|r| r.id == self.id) {
            running.remove(&self.slot);
        }
    }
}

impl KeysInFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantKey, String), Running>> {
        // The map holds no invariant a panic could break half-way.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `idem`'s request, or waits for the same request running under its key. Another
    /// request under a key in flight is `409 CONFLICT`, as it is once the key is stored.
    pub(crate) async fn claim(
        self: &Arc<Self>,
        tenant: TenantKey,
        idem: &Idempotency,
    ) -> Result<Claim, ApiError> {
        let slot = (tenant, idem.stored());
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let mut answer = {
                let mut running = self.lock();
                match running.get(&slot) {
                    Some(r) if r.fingerprint != idem.fingerprint() => {
                        return Err(EngineError::IdempotencyKeyReused(idem.key().to_owned()).into());
                    }
                    Some(r) => r.answer.clone(),
                    None => {
                        let id = self
                            .next_id
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (tx, rx) = watch::channel(None);
                        running.insert(
                            slot.clone(),
                            Running {
                                id,
                                fingerprint: idem.fingerprint().to_owned(),
                                answer: rx,
                            },
                        );
                        return Ok(Claim::First(Leader {
                            keys: Arc::clone(self),
                            slot,
                            id,
                            answer: tx,
                        }));
                    }
                }
            };
            match tokio::time::timeout_at(deadline, answer.wait_for(Option::is_some)).await {
                Ok(Ok(a)) => return Ok(Claim::Waited(a.clone())),
                // The running request ended without an answer (it failed, or its task was
                // dropped), and freed its key first: claim again, so that one waiter runs
                // the write and the others wait for it, rather than all running at once.
                Ok(Err(_)) => continue,
                Err(_) => return Ok(Claim::Waited(None)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn idem(key: &str, fingerprint: &str) -> Idempotency {
        Idempotency::new(key, fingerprint.into()).expect("key")
    }

    fn tenant() -> TenantKey {
        TenantKey::SERVER
    }

    #[tokio::test]
    async fn a_retry_gets_the_running_answer_another_request_is_refused() {
        let keys = Arc::new(KeysInFlight::default());
        let Claim::First(first) = keys.claim(tenant(), &idem("k", "f")).await.expect("claim")
        else {
            panic!("nothing runs under the key yet");
        };
        let err = keys.claim(tenant(), &idem("k", "other")).await.err();
        assert!(matches!(err, Some(ApiError::Conflict(_))), "{err:?}");
        let waiter = {
            let keys = Arc::clone(&keys);
            tokio::spawn(async move { keys.claim(tenant(), &idem("k", "f")).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.answered(201, &json!({"id": "a"}));
        drop(first);
        match waiter.await.expect("join").expect("claim") {
            Claim::Waited(Some((201, body))) => assert_eq!(body, json!({"id": "a"})),
            _ => panic!("the retry was not answered with the first answer"),
        }
        // The key is free again: the next request runs (and finds the stored answer).
        assert!(matches!(
            keys.claim(tenant(), &idem("k", "f")).await,
            Ok(Claim::First(_))
        ));
    }

    /// A request that ends without an answer hands its key to one waiter, which runs the
    /// write; the other waiters wait for that one instead of all running at once.
    #[tokio::test]
    async fn a_request_that_ended_without_an_answer_hands_its_key_to_one_waiter() {
        let keys = Arc::new(KeysInFlight::default());
        let Claim::First(first) = keys.claim(tenant(), &idem("k", "f")).await.expect("claim")
        else {
            panic!("nothing runs under the key yet");
        };
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let keys = Arc::clone(&keys);
                tokio::spawn(async move {
                    match keys.claim(tenant(), &idem("k", "f")).await {
                        Ok(Claim::First(leader)) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            leader.answered(201, &json!({"id": "r1"}));
                            "ran"
                        }
                        Ok(Claim::Waited(Some(_))) => "replayed",
                        Ok(Claim::Waited(None)) => "ran unregistered",
                        Err(_) => "refused",
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let mut outcomes = Vec::new();
        for w in waiters {
            outcomes.push(w.await.expect("join"));
        }
        outcomes.sort();
        assert_eq!(outcomes, ["ran", "replayed", "replayed"]);
    }
}
