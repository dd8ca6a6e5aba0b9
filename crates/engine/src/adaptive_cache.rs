//! Loaded adaptive namespaces, capped with least-recently-used eviction.
//!
//! Storage is the truth: feedback writes its changes through before they are applied here, so
//! dropping a namespace loses nothing and the next use reloads it identically. Every tenant's
//! `default` namespace stays loaded once used and does not count against the cap; the others
//! are evicted, least recently used first, beyond `max_namespaces`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strata_store::TenantKey;
use strata_types::Domain;

use crate::EngineError;
use crate::adaptive::Namespace;
use crate::registry::lock;

type Key = (TenantKey, Domain);

struct Entry {
    ns: Arc<Mutex<Namespace>>,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    clock: u64,
    evictions: u64,
    loads: u64,
}

pub(crate) struct AdaptiveCache {
    inner: Mutex<Inner>,
    cap: usize,
    /// Orders the feedback of each namespace (striped by hash): a feedback holds its stripe
    /// from its read of the namespace through its commit to its update of the loaded copy, so
    /// two feedbacks of one namespace apply in commit order. Searches never take it, and a
    /// feedback holds a namespace's own mutex only for short reads and updates, never while it
    /// waits for the tenant's write lock — a search holds its index lock while it reads the
    /// namespace, and a record write holds the write lock while it waits for the index lock.
    feedback_order: Vec<Mutex<()>>,
}

/// Stripes of [`AdaptiveCache::feedback_order`].
const FEEDBACK_STRIPES: usize = 64;

fn evictable(key: &Key) -> bool {
    key.1.as_str() != "default"
}

impl AdaptiveCache {
    pub(crate) fn new(cap: usize) -> AdaptiveCache {
        AdaptiveCache {
            inner: Mutex::new(Inner::default()),
            cap,
            feedback_order: (0..FEEDBACK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The feedback-ordering lock of one namespace (see the field's comment).
    pub(crate) fn feedback_order(
        &self,
        tenant: TenantKey,
        domain: &Domain,
    ) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (tenant, domain).hash(&mut h);
        lock(&self.feedback_order[h.finish() as usize % FEEDBACK_STRIPES])
    }

    /// The namespace, loaded with `load` if it is not in memory. Loading runs under the cache
    /// lock, so two loads of one namespace cannot race a feedback that lands between them;
    /// a load is one range read of a small namespace.
    pub(crate) fn get_or_load(
        &self,
        tenant: TenantKey,
        domain: &Domain,
        load: impl FnOnce() -> Result<Namespace, EngineError>,
    ) -> Result<Arc<Mutex<Namespace>>, EngineError> {
        let mut inner = lock(&self.inner);
        inner.clock += 1;
        let now = inner.clock;
        let key = (tenant, domain.clone());
        if let Some(e) = inner.map.get_mut(&key) {
            e.last_used = now;
            return Ok(Arc::clone(&e.ns));
        }
        let ns = Arc::new(Mutex::new(load()?));
        inner.loads += 1;
        let evict = evictable(&key);
        inner.map.insert(
            key,
            Entry {
                ns: Arc::clone(&ns),
                last_used: now,
            },
        );
        if evict {
            self.evict_beyond_cap(&mut inner);
        }
        Ok(ns)
    }

    fn evict_beyond_cap(&self, inner: &mut Inner) {
        loop {
            let mut count = 0;
            let mut oldest: Option<(&Key, u64)> = None;
            for (k, e) in inner.map.iter().filter(|(k, _)| evictable(k)) {
                count += 1;
                if oldest.is_none_or(|(_, t)| e.last_used < t) {
                    oldest = Some((k, e.last_used));
                }
            }
            if count <= self.cap {
                return;
            }
            let Some((victim, _)) = oldest else { return };
            let victim = victim.clone();
            inner.map.remove(&victim);
            inner.evictions += 1;
        }
    }

    /// Whether `ns` is still the loaded copy of the namespace (it may have been dropped and
    /// reloaded while its holder was writing).
    pub(crate) fn is_current(
        &self,
        tenant: TenantKey,
        domain: &Domain,
        ns: &Arc<Mutex<Namespace>>,
    ) -> bool {
        lock(&self.inner)
            .map
            .get(&(tenant, domain.clone()))
            .is_some_and(|e| Arc::ptr_eq(&e.ns, ns))
    }

    /// Drops a namespace from memory (after its stored state changed behind the cache).
    pub(crate) fn forget(&self, tenant: TenantKey, domain: &Domain) {
        lock(&self.inner).map.remove(&(tenant, domain.clone()));
    }

    /// Drops every namespace of a tenant (hard delete, import, collection drop).
    pub(crate) fn forget_tenant(&self, tenant: TenantKey) {
        lock(&self.inner).map.retain(|(t, _), _| *t != tenant);
    }

    /// The loaded namespaces of a tenant with their estimated bytes.
    /// (Each namespace is measured after the cache lock is released: a namespace is held
    /// through its feedback's commit, and that must not stall every other tenant's lookups.)
    pub(crate) fn loaded(&self, tenant: TenantKey) -> Vec<(Domain, u64)> {
        let held: Vec<(Domain, Arc<Mutex<Namespace>>)> = lock(&self.inner)
            .map
            .iter()
            .filter(|((t, _), _)| *t == tenant)
            .map(|((_, d), e)| (d.clone(), Arc::clone(&e.ns)))
            .collect();
        held.into_iter()
            .map(|(d, ns)| (d, lock(&ns).bytes()))
            .collect()
    }

    /// Loaded namespaces, their estimated bytes, loads and evictions since start.
    pub(crate) fn totals(&self) -> (u64, u64, u64, u64) {
        let (held, loads, evictions) = {
            let inner = lock(&self.inner);
            let held: Vec<Arc<Mutex<Namespace>>> =
                inner.map.values().map(|e| Arc::clone(&e.ns)).collect();
            (held, inner.loads, inner.evictions)
        };
        let bytes = held.iter().map(|ns| lock(ns).bytes()).sum();
        (held.len() as u64, bytes, loads, evictions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[test]
    fn least_recently_used_goes_first_and_default_never() {
        let cache = AdaptiveCache::new(2);
        let t = TenantKey::for_tests(1);
        let loads = std::cell::Cell::new(0);
        let load = || {
            loads.set(loads.get() + 1);
            Ok(Namespace::default())
        };
        cache.get_or_load(t, &d("default"), load).unwrap();
        cache.get_or_load(t, &d("a"), load).unwrap();
        cache.get_or_load(t, &d("b"), load).unwrap();
        cache.get_or_load(t, &d("a"), load).unwrap(); // a is now more recent than b
        cache.get_or_load(t, &d("c"), load).unwrap(); // evicts b
        assert_eq!(loads.get(), 4);
        let mut held: Vec<String> = cache
            .loaded(t)
            .into_iter()
            .map(|(d, _)| d.to_string())
            .collect();
        held.sort();
        assert_eq!(held, ["a", "c", "default"]);
        cache.get_or_load(t, &d("b"), load).unwrap(); // reloaded, evicts a
        assert_eq!(loads.get(), 5);
        assert_eq!(cache.totals().3, 2);
        cache.forget_tenant(t);
        assert!(cache.loaded(t).is_empty());
    }
}
