//! Each tenant's share of the memory that request bodies take.
//!
//! A body is read whole (up to `max_body_bytes`) before its handler parses it, and held until
//! the handler is done with it. Without a per-tenant budget, one tenant sending many large
//! bodies at once (on as many connections as it may hold) could fill the server's memory with
//! them. So a tenant's bodies in memory, together, stay within
//! `max_body_bytes_per_tenant`: a body is reserved before it is read (its declared length, or
//! the largest allowed when it declares none, trimmed to its real size once read) and released
//! when the last reference to its bytes is dropped. A body that does not fit is refused from
//! its headers, unread (`429 CONCURRENCY_LIMITED`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use strata_store::TenantKey;

/// The tenant a request's body is counted for, put in the request by authentication.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyTenant(pub TenantKey);

/// Bytes of bodies each tenant holds, against one budget for all tenants.
#[derive(Debug)]
pub(crate) struct TenantBodies {
    max_per_tenant: u64,
    held: Mutex<HashMap<TenantKey, u64>>,
}

/// A refusal: the tenant holds `held` bytes, `wanted` more would pass `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverBudget {
    pub held: u64,
    pub wanted: u64,
    pub max: u64,
}

/// Bytes reserved for one body; given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<TenantBodies>,
    key: TenantKey,
    bytes: u64,
}

impl TenantBodies {
    /// `max_per_tenant` is raised to `max_body` when lower: every body the server accepts at
    /// all must fit a tenant's budget on its own.
    pub(crate) fn new(max_per_tenant: u64, max_body: u64) -> Arc<Self> {
        Arc::new(TenantBodies {
            max_per_tenant: max_per_tenant.max(max_body).max(1),
            held: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn reserve(
        self: &Arc<Self>,
        key: TenantKey,
        bytes: u64,
    ) -> Result<Reservation, OverBudget> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = held.get(&key).copied().unwrap_or(0);
        if now.saturating_add(bytes) > self.max_per_tenant {
            return Err(OverBudget {
                held: now,
                wanted: bytes,
                max: self.max_per_tenant,
            });
        }
        *held.entry(key).or_insert(0) += bytes;
        Ok(Reservation {
            budget: Arc::clone(self),
            key,
            bytes,
        })
    }

    #[cfg(test)]
    fn held_by(&self, key: TenantKey) -> u64 {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&key).copied().unwrap_or(0)
    }

    fn give_back(&self, key: TenantKey, bytes: u64) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&key) {
            *n = n.saturating_sub(bytes);
            if *n == 0 {
                held.remove(&key);
            }
        }
    }
}

impl Reservation {
    /// Gives back what a body turned out not to need.
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.give_back(self.key, self.bytes - bytes);
            self.bytes = bytes;
        }
    }

    /// `body`, holding this reservation until every clone of the returned bytes is dropped.
    pub(crate) fn attach(mut self, body: Bytes) -> Bytes {
        self.shrink_to(body.len() as u64);
        Bytes::from_owner(Held {
            body,
            _reservation: self,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.key, self.bytes);
    }
}

/// A body with its reservation, as the owner of the bytes handlers see.
struct Held {
    body: Bytes,
    _reservation: Reservation,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u64) -> TenantKey {
        TenantKey::for_tests(n)
    }

    #[test]
    fn a_body_holds_its_bytes_until_its_last_clone_is_dropped() {
        let budget = TenantBodies::new(100, 10);
        let mut r = budget.reserve(key(1), 60).unwrap();
        assert_eq!(
            budget.reserve(key(1), 50).unwrap_err(),
            OverBudget {
                held: 60,
                wanted: 50,
                max: 100
            }
        );
        // Another tenant's budget is its own.
        let other = budget.reserve(key(2), 100).unwrap();
        r.shrink_to(30);
        assert_eq!(budget.held_by(key(1)), 30);
        let body = r.attach(Bytes::from(vec![7u8; 20]));
        assert_eq!(budget.held_by(key(1)), 20);
        assert_eq!(&body[..3], &[7, 7, 7]);
        let clone = body.slice(1..4);
        drop(body);
        assert_eq!(budget.held_by(key(1)), 20);
        drop(clone);
        assert_eq!(budget.held_by(key(1)), 0);
        drop(other);
        assert!(budget.held.lock().unwrap().is_empty());
    }

    #[test]
    fn the_budget_is_never_below_the_largest_body() {
        let budget = TenantBodies::new(5, 64);
        assert!(budget.reserve(key(1), 64).is_ok());
    }

    proptest! {
        /// Against a model summing the live reservations: the held bytes match it, never pass
        /// the budget, and a reservation is refused exactly when it would pass it.
        #[test]
        fn held_bytes_follow_the_live_reservations(
            ops in proptest::collection::vec((0u64..2, 0u64..70, any::<bool>()), 1..60),
        ) {
            let budget = TenantBodies::new(100, 1);
            let mut live: Vec<(u64, u64, Reservation)> = Vec::new();
            for (tenant, bytes, release) in ops {
                if release && !live.is_empty() {
                    live.remove(bytes as usize % live.len());
                } else {
                    let model: u64 = live.iter().filter(|l| l.0 == tenant).map(|l| l.1).sum();
                    match budget.reserve(key(tenant), bytes) {
                        Ok(r) => {
                            prop_assert!(model + bytes <= 100);
                            live.push((tenant, bytes, r));
                        }
                        Err(e) => {
                            prop_assert!(model + bytes > 100);
                            prop_assert_eq!(e.held, model);
                        }
                    }
                }
                for t in 0..2 {
                    let model: u64 = live.iter().filter(|l| l.0 == t).map(|l| l.1).sum();
                    prop_assert_eq!(budget.held_by(key(t)), model);
                    prop_assert!(model <= 100);
                }
            }
        }
    }
}
