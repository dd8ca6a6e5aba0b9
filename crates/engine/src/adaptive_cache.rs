//! Loaded adaptive namespaces, capped with least-recently-used eviction.
//!
//! Storage is the truth: feedback writes its changes through before they are applied here, so
//! dropping a namespace loses nothing and the next use reloads it identically. Every tenant's
//! `default` namespace stays loaded once used and does not count against the cap; the others
//! are evicted, least recently used first, beyond `max_namespaces`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use strata_store::TenantKey;
use strata_types::Domain;

use crate::EngineError;
use crate::adaptive::Namespace;
use crate::registry::lock;

type Key = (TenantKey, Domain);

/// One namespace's place in the cache: empty until its first user has loaded it. `loading`
/// is held through that load, so concurrent users of the namespace wait for the one load
/// while every other namespace stays reachable; readers of `loaded` never wait.
#[derive(Default)]
struct Slot {
    loaded: OnceLock<Arc<Mutex<Namespace>>>,
    loading: Mutex<()>,
    /// Set when the load found nothing stored: such a namespace is evicted before any other
    /// (it reloads for nothing), so that searches naming made-up domains, however many,
    /// evict only each other and never another namespace's real state. Not cleared when
    /// feedback later fills it: an eviction is always safe, only a reload dearer.
    empty_at_load: std::sync::atomic::AtomicBool,
}

struct Entry {
    slot: Arc<Slot>,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    clock: u64,
    evictions: u64,
}

/// Lock order: the cache's `inner` is never held while waiting for a slot's `loading` or a
/// namespace's mutex.
pub(crate) struct AdaptiveCache {
    inner: Mutex<Inner>,
    loads: AtomicU64,
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
            loads: AtomicU64::new(0),
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

    /// The namespace, loaded with `load` if it is not in memory. The load runs under the
    /// namespace's own slot lock, so two loads of one namespace cannot race a feedback that
    /// lands between them (a feedback first waits here for the loaded copy), while lookups of
    /// every other namespace go on: one tenant's load never stalls another's search.
    pub(crate) fn get_or_load(
        &self,
        tenant: TenantKey,
        domain: &Domain,
        load: impl FnOnce() -> Result<Namespace, EngineError>,
    ) -> Result<Arc<Mutex<Namespace>>, EngineError> {
        let slot = {
            let mut inner = lock(&self.inner);
            inner.clock += 1;
            let now = inner.clock;
            let key = (tenant, domain.clone());
            match inner.map.get_mut(&key) {
                Some(e) => {
                    e.last_used = now;
                    Arc::clone(&e.slot)
                }
                None => {
                    let slot = Arc::new(Slot::default());
                    let evict = evictable(&key);
                    let entry = Entry {
                        slot: Arc::clone(&slot),
                        last_used: now,
                    };
                    inner.map.insert(key, entry);
                    if evict {
                        self.evict_beyond_cap(&mut inner);
                    }
                    slot
                }
            }
        };
        if let Some(ns) = slot.loaded.get() {
            return Ok(Arc::clone(ns));
        }
        let _loading = crate::registry::lock_slot(&slot.loading);
        if let Some(ns) = slot.loaded.get() {
            return Ok(Arc::clone(ns));
        }
        // A failed load leaves the slot empty: the next user tries again.
        let ns = load()?;
        if ns.narratives.is_empty() && ns.pheromones.is_empty() {
            slot.empty_at_load.store(true, Ordering::Relaxed);
        }
        let ns = Arc::new(Mutex::new(ns));
        // Only the holder of `loading` sets it, and only once.
        let _ = slot.loaded.set(Arc::clone(&ns));
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok(ns)
    }

    /// The loaded namespaces of the entries `keep` selects (one being loaded is left out),
    /// cloned under the cache lock so that they are locked only after it is released.
    fn loaded_where(&self, keep: impl Fn(&Key) -> bool) -> Vec<(Key, Arc<Mutex<Namespace>>)> {
        lock(&self.inner)
            .map
            .iter()
            .filter(|(k, _)| keep(k))
            .filter_map(|(k, e)| Some((k.clone(), Arc::clone(e.slot.loaded.get()?))))
            .collect()
    }

    fn evict_beyond_cap(&self, inner: &mut Inner) {
        loop {
            let mut count = 0;
            // The least recently used of the namespaces loaded empty, else of all.
            let mut oldest: Option<(&Key, (bool, u64))> = None;
            for (k, e) in inner.map.iter().filter(|(k, _)| evictable(k)) {
                count += 1;
                let rank = (!e.slot.empty_at_load.load(Ordering::Relaxed), e.last_used);
                if oldest.is_none_or(|(_, r)| rank < r) {
                    oldest = Some((k, rank));
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
        let key = (tenant, domain.clone());
        self.loaded_where(|k| *k == key)
            .iter()
            .any(|(_, held)| Arc::ptr_eq(held, ns))
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
        self.loaded_where(|(t, _)| *t == tenant)
            .into_iter()
            .map(|((_, d), ns)| (d, lock(&ns).bytes()))
            .collect()
    }

    /// Loaded namespaces, their estimated bytes, loads and evictions since start.
    pub(crate) fn totals(&self) -> (u64, u64, u64, u64) {
        let evictions = lock(&self.inner).evictions;
        let held = self.loaded_where(|_| true);
        let bytes = held.iter().map(|(_, ns)| lock(ns).bytes()).sum();
        let loads = self.loads.load(Ordering::Relaxed);
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

    /// Searches naming made-up domains (nothing stored) evict each other, never another
    /// tenant's namespace that holds state, however many there are.
    #[test]
    fn namespaces_loaded_empty_are_evicted_before_any_with_state() {
        let cache = AdaptiveCache::new(4);
        let (owner, flood) = (TenantKey::for_tests(1), TenantKey::for_tests(2));
        let held = || {
            let mut ns = Namespace::default();
            ns.pheromones.insert(
                strata_types::RecordId::parse("r").unwrap(),
                strata_store::codec::StoredPheromone {
                    strength: 1.0,
                    updated_at: 0,
                    reinforcements: 1,
                    exposures: 0,
                },
            );
            Ok(ns)
        };
        cache.get_or_load(owner, &d("notes"), held).unwrap();
        for i in 0..100 {
            cache
                .get_or_load(flood, &d(&format!("made-up-{i}")), || {
                    Ok(Namespace::default())
                })
                .unwrap();
        }
        let kept: Vec<String> = cache
            .loaded(owner)
            .into_iter()
            .map(|(d, _)| d.to_string())
            .collect();
        assert_eq!(kept, ["notes"]);
        assert!(cache.loaded(flood).len() <= 4);
    }

    #[test]
    fn a_slow_load_stalls_only_its_own_namespace() {
        use std::sync::mpsc;
        let cache = Arc::new(AdaptiveCache::new(8));
        let t = TenantKey::for_tests(1);
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let slow = {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                cache
                    .get_or_load(t, &d("slow"), || {
                        started_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                        Ok(Namespace::default())
                    })
                    .unwrap()
            })
        };
        started.recv().unwrap();
        // While "slow" is loading, another namespace loads and answers.
        cache
            .get_or_load(t, &d("fast"), || Ok(Namespace::default()))
            .unwrap();
        assert_eq!(
            cache.loaded(t).len(),
            1,
            "only the finished load is counted"
        );
        // A second user of "slow" waits for the one load instead of loading again.
        let waiter = {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                cache
                    .get_or_load(t, &d("slow"), || panic!("loaded twice"))
                    .unwrap()
            })
        };
        release.send(()).unwrap();
        let (a, b) = (slow.join().unwrap(), waiter.join().unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(cache.is_current(t, &d("slow"), &a));
        assert_eq!(cache.totals().2, 2);
    }
}
