//! Each tenant's share of the memory that request bodies take.
//!
//! A body is read whole (up to `max_body_bytes`) before its handler parses it, and it and what
//! is parsed from it are held until the handler is done. Without a per-tenant budget, one
//! tenant sending many large bodies at once (on as many connections as it may hold) could fill
//! the server's memory with them. So the bodies of a tenant's requests in progress, together,
//! stay within `max_body_bytes_per_tenant`: a body of known length (`Content-Length`, or none)
//! is reserved before a byte of it is read and refused from its headers, unread, when it does
//! not fit (`429 CONCURRENCY_LIMITED`); a chunked body, whose length is known only once read,
//! is counted as it arrives ([`Counted`]: its reservation grows with each piece, and the piece
//! that passes the budget ends the body with the same refusal). It once was counted only once
//! read whole, so a tenant's chunked bodies of up to `max_body_bytes` each, stalled before
//! their last chunk on as many connections as it held, took memory past any budget. The
//! reservation is held by the request's admission ([`crate::admission::Admitted`]) and given
//! back when the handler ends.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};

use strata_store::TenantKey;
use strata_types::TenantId;

/// Where a request's body reservation is kept while the request is handled.
pub(crate) type BodySlot = Arc<Mutex<Option<Reservation>>>;

/// The tenant a request's body is counted for and the slot of its admission that holds the
/// reservation; put in the request by authentication.
#[derive(Debug, Clone)]
pub(crate) struct BodyTenant {
    /// The credential's tenant, which any `tenant_id` the body names is checked against.
    pub tenant: TenantId,
    pub key: TenantKey,
    pub slot: BodySlot,
}

impl BodyTenant {
    /// Keeps `r` until the request's admission ends.
    pub(crate) fn hold(&self, r: Reservation) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
    }

    /// Adds `bytes` to the reservation held, or says why not.
    fn grow(&self, bytes: u64) -> Result<(), OverBudget> {
        match self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            Some(r) => r.grow(bytes),
            None => Ok(()),
        }
    }

    /// Trims the reservation held to what the body turned out to be.
    pub(crate) fn shrink_to(&self, bytes: u64) {
        if let Some(r) = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            r.shrink_to(bytes);
        }
    }
}

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
    /// Reserves `bytes` more, or says why not (nothing then changes).
    fn grow(&mut self, bytes: u64) -> Result<(), OverBudget> {
        let more = self.budget.reserve(self.key, bytes)?;
        self.bytes += more.bytes;
        // Now part of this reservation: not given back on its own.
        std::mem::forget(more);
        Ok(())
    }

    /// Gives back what a body turned out not to need.
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.give_back(self.key, self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.key, self.bytes);
    }
}

/// A body of unknown length counted against its tenant's budget as it arrives: the tenant's
/// reservation (held in its admission's slot) grows with each piece of data, and the piece
/// that would pass the budget ends the body with an error, the refusal kept in `over`.
pub(crate) struct Counted {
    inner: Body,
    tenant: BodyTenant,
    pub(crate) over: Arc<Mutex<Option<OverBudget>>>,
}

impl Counted {
    pub(crate) fn new(inner: Body, tenant: BodyTenant) -> Self {
        Counted {
            inner,
            tenant,
            over: Arc::default(),
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                match this.tenant.grow(len) {
                    Ok(()) => Poll::Ready(Some(Ok(frame))),
                    Err(o) => {
                        *this.over.lock().unwrap_or_else(PoisonError::into_inner) = Some(o);
                        Poll::Ready(Some(Err(axum::Error::new(
                            "the tenant's request bodies in progress passed its limit",
                        ))))
                    }
                }
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u64) -> TenantKey {
        TenantKey::for_tests(n)
    }

    /// A reservation grows piece by piece up to the budget, and a piece that does not fit
    /// changes nothing.
    #[test]
    fn a_reservation_grows_within_the_budget() {
        let budget = TenantBodies::new(100, 10);
        let mut r = budget.reserve(key(1), 0).unwrap();
        r.grow(60).unwrap();
        r.grow(30).unwrap();
        assert_eq!(budget.held_by(key(1)), 90);
        assert_eq!(
            r.grow(20).unwrap_err(),
            OverBudget {
                held: 90,
                wanted: 20,
                max: 100
            }
        );
        assert_eq!(budget.held_by(key(1)), 90);
        drop(r);
        assert_eq!(budget.held_by(key(1)), 0);
    }

    #[test]
    fn a_body_holds_its_bytes_until_its_request_ends() {
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
        let request = BodyTenant {
            tenant: TenantId::parse("t1").unwrap(),
            key: key(1),
            slot: BodySlot::default(),
        };
        let admission = Arc::clone(&request.slot);
        request.hold(r);
        request.shrink_to(20);
        assert_eq!(budget.held_by(key(1)), 20);
        drop(request);
        assert_eq!(budget.held_by(key(1)), 20, "the admission still holds it");
        drop(admission);
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
