//! How many large request bodies are parsed at once.
//!
//! A body over `PARSE_INLINE_BYTES` is parsed and converted in a pool job of its tenant's
//! share, and such a job can take seconds (a 12.6 MB body of 80 objects of 16,000 keys took
//! 3–4 s). The pool does not preempt a running job, so two flooding clients kept both workers
//! parsing and another tenant's search waited for one whatever its fair share. So a large body
//! takes a slot before its job is queued:
//! - at most one per tenant at a time: a tenant's own large bodies wait behind each other, not
//!   in front of another tenant's;
//! - at most `workers - 1` over all tenants (at least one), so one worker is always left for
//!   the requests of ordinary size, which are most of every tenant's work.
//!
//! A body of at most [`SHORT_PARSE_BYTES`] takes its tenant's slot only: its parse is short
//! (milliseconds; tens of them for the most key-heavy JSON the bounds let through), so it is an
//! ordinary job of the fair queue, never queued behind another tenant's body of megabytes (a
//! 100 KB search waited 1.4 s behind another tenant's 12–16 MB bodies when every large body
//! queued for the one shared slot of a 2-core machine).
//!
//! Waiting for a slot holds no worker and no lock; the body's bytes are already counted in its
//! tenant's body budget (`tenant_bodies`), so a tenant cannot queue more of them than that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strata_types::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ApiError;

pub(crate) struct ParseSlots {
    /// Slots over all tenants.
    any: Arc<Semaphore>,
    /// One slot per tenant with a large body parsing or waiting; an entry nobody holds is
    /// dropped at the next acquisition.
    tenants: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
}

/// Bodies up to this size parse on their tenant's slot alone (see the module's documentation).
pub(crate) const SHORT_PARSE_BYTES: usize = 1 << 20;

/// A large body's right to a parse job: its slots return when it drops.
pub(crate) struct ParseSlot {
    _tenant: OwnedSemaphorePermit,
    /// `None` for a body of at most [`SHORT_PARSE_BYTES`].
    _any: Option<OwnedSemaphorePermit>,
}

impl ParseSlots {
    /// Slots for a pool of `workers` workers.
    pub(crate) fn new(workers: usize) -> Self {
        ParseSlots {
            any: Arc::new(Semaphore::new(workers.saturating_sub(1).max(1))),
            tenants: Mutex::default(),
        }
    }

    /// Waits for `tenant`'s slot, then, for a body of more than [`SHORT_PARSE_BYTES`], for one
    /// over all tenants (in that order, so a tenant waits for the shared slots with one body at
    /// most).
    pub(crate) async fn acquire(
        &self,
        tenant: &TenantId,
        len: usize,
    ) -> Result<ParseSlot, ApiError> {
        let own = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            tenants.retain(|_, slot| Arc::strong_count(slot) > 1);
            Arc::clone(
                tenants
                    .entry(tenant.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(1))),
            )
        };
        let closed = |_| ApiError::Internal("the body parse slots are closed".into());
        let own = own.acquire_owned().await.map_err(closed)?;
        let any = match len > SHORT_PARSE_BYTES {
            true => Some(
                Arc::clone(&self.any)
                    .acquire_owned()
                    .await
                    .map_err(closed)?,
            ),
            false => None,
        };
        Ok(ParseSlot {
            _tenant: own,
            _any: any,
        })
    }

    /// Slots free over all tenants (for tests).
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.any.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).expect("a valid tenant id")
    }

    fn now<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[test]
    fn one_worker_is_always_left_and_a_pool_of_one_still_parses() {
        assert_eq!(ParseSlots::new(2).free(), 1);
        assert_eq!(ParseSlots::new(8).free(), 7);
        assert_eq!(ParseSlots::new(1).free(), 1);
        assert_eq!(ParseSlots::new(0).free(), 1);
    }

    #[test]
    fn a_tenant_parses_one_large_body_at_a_time() {
        let slots = ParseSlots::new(8);
        let a = tenant("a");
        let first = now(slots.acquire(&a, LARGE)).expect("free").expect("open");
        assert!(
            now(slots.acquire(&a, LARGE)).is_none(),
            "a's second body waits"
        );
        // Another tenant is not held up by a's bodies.
        let b = now(slots.acquire(&tenant("b"), LARGE))
            .expect("free")
            .expect("open");
        drop(first);
        assert!(
            now(slots.acquire(&a, LARGE)).is_some(),
            "a's slot came back"
        );
        drop(b);
    }

    #[test]
    fn the_slots_over_all_tenants_leave_one_worker() {
        let slots = ParseSlots::new(3);
        let a = now(slots.acquire(&tenant("a"), LARGE))
            .expect("free")
            .expect("open");
        let b = now(slots.acquire(&tenant("b"), LARGE))
            .expect("free")
            .expect("open");
        assert!(
            now(slots.acquire(&tenant("c"), LARGE)).is_none(),
            "2 of 3 workers parse"
        );
        drop(a);
        assert!(now(slots.acquire(&tenant("c"), LARGE)).is_some());
        drop(b);
    }

    const LARGE: usize = SHORT_PARSE_BYTES + 1;

    /// Another tenant's body of a megabyte or less does not wait for the shared slots that
    /// bodies of megabytes hold; its tenant's own slot still bounds it to one at a time.
    #[test]
    fn a_short_parse_does_not_wait_behind_another_tenants_large_bodies() {
        let slots = ParseSlots::new(2);
        let a = now(slots.acquire(&tenant("a"), LARGE))
            .expect("free")
            .expect("open");
        assert!(
            now(slots.acquire(&tenant("c"), LARGE)).is_none(),
            "the one shared slot is a's"
        );
        let b = now(slots.acquire(&tenant("b"), SHORT_PARSE_BYTES))
            .expect("a short parse needs no shared slot")
            .expect("open");
        assert!(
            now(slots.acquire(&tenant("b"), 100_000)).is_none(),
            "b's second body waits for its first"
        );
        drop((a, b));
    }

    #[test]
    fn an_idle_tenant_leaves_no_entry() {
        let slots = ParseSlots::new(2);
        for i in 0..100 {
            drop(now(slots.acquire(&tenant(&format!("t{i}")), LARGE)));
        }
        drop(now(slots.acquire(&tenant("last"), LARGE)));
        assert!(slots.tenants.lock().unwrap().len() <= 1);
    }
}
