//! Each tenant's share of the server's connections.
//!
//! The server's cap on open connections (`server.max_connections`) is one pool for everyone:
//! without a per-tenant budget, one tenant opening connections until the cap is reached would
//! leave every other tenant's new connections refused. A connection cannot be told apart at
//! accept time (nothing is authenticated yet), so it is counted against a tenant from its
//! first request that authenticates as that tenant, until it closes. A request that would take
//! a tenant past its budget is refused (`429 CONCURRENCY_LIMITED`) and its connection closed
//! after the answer, which gives the slot back to the server at once.
//!
//! A connection that serves several tenants (a proxy's) counts for the tenant of its latest
//! request. Operator requests count for nobody.
//!
//! By default (`max_connections_per_tenant = 0`) the budget is a quarter of the cap and binds
//! only under pressure: while a quarter of the server's connections or more are free, a
//! tenant may hold more (a server with one busy tenant serves it with every connection). A
//! budget set explicitly always binds.
//!
//! A connection no tenant's request has bound (its requests went unauthenticated, or to public
//! routes, or were an operator's) counts for nobody, so no budget would ever close it: a client
//! could hold the server's connections with one cheap request a minute on each (a `401`, a
//! `/healthz`), each resetting its idle deadline. Under pressure such a connection is closed
//! after its answer; a client that reconnects then competes for a slot again, its new
//! connection dropped if it sends nothing before the head deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use strata_store::TenantKey;

use crate::over_share_lane::OverShare;
use tokio::sync::Semaphore;

/// How many connections each tenant holds, against one budget for all tenants.
#[derive(Debug)]
pub(crate) struct TenantConnections {
    max_per_tenant: usize,
    /// Whether the budget binds at all times (set explicitly), not only under pressure.
    always_binds: bool,
    /// The server's free connection slots, and how few of them is pressure.
    pressure: Option<(Arc<Semaphore>, usize)>,
    open: Mutex<HashMap<TenantKey, usize>>,
}

/// A refusal: the tenant holds `open` connections and may hold `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverBudget {
    pub open: usize,
    pub max: usize,
}

impl TenantConnections {
    /// A budget that always binds, without a view of the server's free slots (tests).
    #[cfg(test)]
    pub(crate) fn new(max_per_tenant: usize) -> Arc<Self> {
        Self::with(max_per_tenant, true, None)
    }

    /// A budget that always binds, on a server whose free slots are `free` (pressure at
    /// `low` or fewer: unbound connections are then closed after their answers).
    pub(crate) fn always_binding(
        max_per_tenant: usize,
        free: Arc<Semaphore>,
        low: usize,
    ) -> Arc<Self> {
        Self::with(max_per_tenant, true, Some((free, low)))
    }

    /// A budget that binds only while `free` has at most `low` permits left.
    pub(crate) fn under_pressure(
        max_per_tenant: usize,
        free: Arc<Semaphore>,
        low: usize,
    ) -> Arc<Self> {
        Self::with(max_per_tenant, false, Some((free, low)))
    }

    fn with(
        max_per_tenant: usize,
        always_binds: bool,
        pressure: Option<(Arc<Semaphore>, usize)>,
    ) -> Arc<Self> {
        Arc::new(TenantConnections {
            max_per_tenant: max_per_tenant.max(1),
            always_binds,
            pressure,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn binds(&self) -> bool {
        self.always_binds || self.pressed()
    }

    /// Whether the server's free connection slots are at the pressure mark or below.
    fn pressed(&self) -> bool {
        self.pressure
            .as_ref()
            .is_some_and(|(free, low)| free.available_permits() <= *low)
    }

    /// The handle of a new connection, counted for no tenant yet.
    pub(crate) fn connection(self: &Arc<Self>) -> Arc<ConnectionTenant> {
        Arc::new(ConnectionTenant {
            budget: Arc::clone(self),
            bound: Mutex::new(None),
            close: AtomicBool::new(false),
            followed: Mutex::new(Followed::None),
        })
    }

    #[cfg(test)]
    fn open_of(&self, key: TenantKey) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&key).copied().unwrap_or(0)
    }

    fn release(&self, open: &mut HashMap<TenantKey, usize>, key: TenantKey) {
        if let Some(n) = open.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                // Tenants that hold no connection keep no entry: the map stays as small as
                // the set of tenants connected right now.
                open.remove(&key);
            }
        }
    }
}

/// One connection's place in its tenant's budget.
#[derive(Debug)]
pub(crate) struct ConnectionTenant {
    budget: Arc<TenantConnections>,
    bound: Mutex<Option<TenantKey>>,
    /// Set by a refusal: the answer closes the connection.
    close: AtomicBool,
    /// The over-share flag of the tenant whose requests this connection carries.
    followed: Mutex<Followed>,
}

/// Whose over-share flag a connection follows.
#[derive(Debug)]
enum Followed {
    /// No request admitted yet.
    None,
    Tenant(Arc<OverShare>),
    /// The connection has carried more than one tenant's requests.
    Mixed,
}

impl ConnectionTenant {
    /// Counts this connection for `key` (from its current tenant, if another). Refuses, and
    /// marks the connection to be closed after the answer, when `key` holds its whole budget.
    pub(crate) fn bind(&self, key: TenantKey) -> Result<(), OverBudget> {
        let mut bound = self.bound.lock().unwrap_or_else(PoisonError::into_inner);
        if *bound == Some(key) {
            return Ok(());
        }
        let mut open = self
            .budget
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = open.get(&key).copied().unwrap_or(0);
        if held >= self.budget.max_per_tenant && self.budget.binds() {
            self.close.store(true, Ordering::Relaxed);
            return Err(OverBudget {
                open: held,
                max: self.budget.max_per_tenant,
            });
        }
        if let Some(previous) = bound.take() {
            self.budget.release(&mut open, previous);
            // A connection that carries several tenants' requests (a proxy's) cannot tell
            // whose comes next: it stays on the main async threads (`follow`).
            *self.followed.lock().unwrap_or_else(PoisonError::into_inner) = Followed::Mixed;
        }
        *open.entry(key).or_insert(0) += 1;
        *bound = Some(key);
        Ok(())
    }

    /// Follows `flag`, the over-share flag of the tenant whose request this connection just
    /// admitted (after [`bind`](Self::bind)): the connection's next request runs where that
    /// tenant's would (`crate::over_share_lane`). Not once the connection has carried another
    /// tenant's requests.
    pub(crate) fn follow(&self, flag: &Arc<OverShare>) {
        let mut followed = self.followed.lock().unwrap_or_else(PoisonError::into_inner);
        match &*followed {
            Followed::Mixed => {}
            Followed::Tenant(f) if Arc::ptr_eq(f, flag) => {}
            _ => *followed = Followed::Tenant(Arc::clone(flag)),
        }
    }

    /// Whether the one tenant this connection has served was over its share at its latest
    /// job.
    pub(crate) fn over_share(&self) -> bool {
        match &*self.followed.lock().unwrap_or_else(PoisonError::into_inner) {
            Followed::Tenant(f) => f.get(),
            Followed::None | Followed::Mixed => false,
        }
    }

    /// Whether this connection is closed after its current answer: a refusal asked for it,
    /// or no tenant's request has bound it while the server is under pressure (module docs).
    pub(crate) fn must_close(&self) -> bool {
        self.close.load(Ordering::Relaxed)
            || (self
                .bound
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none()
                && self.budget.pressed())
    }
}

impl Drop for ConnectionTenant {
    fn drop(&mut self) {
        let bound = self.bound.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = bound.take() {
            let mut open = self
                .budget
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.budget.release(&mut open, key);
        }
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
    fn a_tenant_past_its_budget_is_refused_and_others_are_not() {
        let budget = TenantConnections::new(2);
        let a1 = budget.connection();
        let a2 = budget.connection();
        let a3 = budget.connection();
        let b1 = budget.connection();
        assert_eq!(a1.bind(key(1)), Ok(()));
        assert_eq!(a2.bind(key(1)), Ok(()));
        assert_eq!(a3.bind(key(1)), Err(OverBudget { open: 2, max: 2 }));
        assert!(a3.must_close());
        assert!(!a1.must_close());
        assert_eq!(b1.bind(key(2)), Ok(()));
        // The same connection asking again costs nothing.
        assert_eq!(a1.bind(key(1)), Ok(()));
        drop(a1);
        assert_eq!(budget.open_of(key(1)), 1);
        let a4 = budget.connection();
        assert_eq!(a4.bind(key(1)), Ok(()));
    }

    /// A connection follows its one tenant's over-share flag; once it has carried another
    /// tenant's request (a proxy's connection) it stays on the main async threads for good.
    #[test]
    fn a_connection_follows_its_one_tenants_flag_and_a_mixed_one_none() {
        let budget = TenantConnections::new(8);
        let conn = budget.connection();
        let (a, b) = (
            Arc::new(OverShare::default()),
            Arc::new(OverShare::default()),
        );
        assert!(!conn.over_share(), "nothing admitted yet");
        conn.bind(key(1)).unwrap();
        conn.follow(&a);
        assert!(!conn.over_share());
        a.set(true);
        assert!(conn.over_share(), "the flag is read at each request");
        a.set(false);
        assert!(!conn.over_share());
        a.set(true);
        conn.bind(key(2)).unwrap();
        conn.follow(&b);
        b.set(true);
        assert!(!conn.over_share(), "a connection of two tenants");
        conn.bind(key(1)).unwrap();
        conn.follow(&a);
        assert!(!conn.over_share(), "mixed for good");
    }

    /// A connection no tenant's request bound is kept open while the server has slots to
    /// spare, and closed after its answer under pressure; a bound one is not.
    #[test]
    fn under_pressure_a_connection_no_tenant_bound_is_closed_after_its_answer() {
        for explicit in [false, true] {
            let free = Arc::new(Semaphore::new(8));
            let budget = match explicit {
                false => TenantConnections::under_pressure(4, Arc::clone(&free), 2),
                true => TenantConnections::always_binding(4, Arc::clone(&free), 2),
            };
            let anonymous = budget.connection();
            let tenant = budget.connection();
            tenant.bind(key(1)).unwrap();
            assert!(!anonymous.must_close() && !tenant.must_close());
            let _held = free.try_acquire_many(6).unwrap();
            assert!(anonymous.must_close(), "explicit budget: {explicit}");
            assert!(!tenant.must_close(), "explicit budget: {explicit}");
        }
        // Without a view of the server's slots (a budget alone), never for that reason.
        assert!(!TenantConnections::new(1).connection().must_close());
    }

    #[test]
    fn the_default_budget_binds_only_while_few_connections_are_free() {
        let free = Arc::new(Semaphore::new(8));
        let budget = TenantConnections::under_pressure(1, Arc::clone(&free), 2);
        let a1 = budget.connection();
        let a2 = budget.connection();
        a1.bind(key(1)).unwrap();
        // Six of eight slots free: no pressure, the tenant may take more than its share.
        let _held = free.try_acquire_many(2).unwrap();
        assert_eq!(a2.bind(key(1)), Ok(()));
        // Two free: the budget binds.
        let _more = free.try_acquire_many(4).unwrap();
        let a3 = budget.connection();
        assert_eq!(a3.bind(key(1)), Err(OverBudget { open: 2, max: 1 }));
        assert_eq!(budget.connection().bind(key(2)), Ok(()));
    }

    #[test]
    fn a_connection_moves_to_the_tenant_of_its_latest_request() {
        let budget = TenantConnections::new(1);
        let c = budget.connection();
        c.bind(key(1)).unwrap();
        c.bind(key(2)).unwrap();
        assert_eq!(budget.open_of(key(1)), 0);
        assert_eq!(budget.open_of(key(2)), 1);
        drop(c);
        assert_eq!(budget.open_of(key(2)), 0);
        assert!(budget.open.lock().unwrap().is_empty());
    }

    proptest! {
        /// Against a model that knows each live connection's tenant: the counts always match
        /// it, no tenant ever holds more than its budget, and a refusal happens exactly when
        /// the tenant already holds its whole budget through other connections.
        #[test]
        fn counts_follow_the_live_connections(
            max in 1usize..4,
            ops in proptest::collection::vec((0usize..6, 0u64..3, any::<bool>()), 1..80),
        ) {
            let budget = TenantConnections::new(max);
            let mut conns: Vec<Arc<ConnectionTenant>> = (0..6).map(|_| budget.connection()).collect();
            let mut model: Vec<Option<u64>> = vec![None; 6];
            for (slot, tenant, reconnect) in ops {
                if reconnect {
                    // The old connection closes; a new one takes its place.
                    conns[slot] = budget.connection();
                    model[slot] = None;
                } else {
                    let others = (0..6)
                        .filter(|&i| i != slot && model[i] == Some(tenant))
                        .count();
                    let result = conns[slot].bind(key(tenant));
                    if model[slot] == Some(tenant) || others < max {
                        prop_assert!(result.is_ok());
                        model[slot] = Some(tenant);
                    } else {
                        prop_assert_eq!(result, Err(OverBudget { open: others, max }));
                    }
                }
                for t in 0..3 {
                    let live = model.iter().filter(|b| **b == Some(t)).count();
                    prop_assert_eq!(budget.open_of(key(t)), live);
                    prop_assert!(live <= max);
                }
            }
        }
    }
}
