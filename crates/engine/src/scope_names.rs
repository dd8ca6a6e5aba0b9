//! Per-collection tables of the scope names its records carry (domains, runs, memory scopes,
//! user tokens, and whole token sets), so that each resident slot (`crate::slot_doc`) holds
//! small ids instead of its own copies of the strings.
//!
//! A tenant's records share a handful of domains, runs, scopes and principals; a string per
//! record for each (24 bytes inline plus a heap allocation) was the largest part of a slot's
//! resident memory (`docs/benchmarks.md`). Names are counted: a name no record carries any
//! more is dropped and its id reused, so a tenant that churns through run ids does not grow
//! its table forever. Visibility compares ids (`crate::visibility::SlotVisibility`), after
//! resolving a request's names once per search; a name the table lacks is carried by no
//! record of the collection.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;

use strata_types::{Domain, MemoryScope, RunId, UserToken};

/// The id of an interned name (1-based, so that `Option<NameId>` is four bytes).
pub(crate) type NameId = NonZeroU32;

/// The id of an interned token set; [`NO_TOKENS`] is the empty set (tenant-shared records).
pub(crate) type TokenSetId = u32;

/// The token set of a record without user tokens.
pub(crate) const NO_TOKENS: TokenSetId = 0;

/// Estimated heap bytes a value holds (its allocation, with the allocator's header).
pub(crate) trait HeapSize {
    fn heap_size(&self) -> usize;
}

const PER_ALLOCATION: usize = 16;

macro_rules! heap_size_of_name {
    ($($t:ty),*) => {$(
        impl HeapSize for $t {
            fn heap_size(&self) -> usize {
                self.as_str().len() + PER_ALLOCATION
            }
        }
    )*};
}
heap_size_of_name!(Domain, RunId, MemoryScope, UserToken);

impl HeapSize for Box<[NameId]> {
    fn heap_size(&self) -> usize {
        self.len() * 4 + PER_ALLOCATION
    }
}

/// Counted values by dense id (see the module docs). Ids start at 1.
#[derive(Debug, Clone)]
pub(crate) struct Interner<K> {
    ids: HashMap<K, NameId>,
    /// By id − 1: the value and how many slots hold it (`None` once no slot does).
    values: Vec<Option<(K, u32)>>,
    free: Vec<NameId>,
    /// `HeapSize` of the values held, kept as they come and go: residency accounting reads
    /// it after every write, so it must not walk the table.
    value_heap: u64,
}

impl<K> Default for Interner<K> {
    fn default() -> Self {
        Interner {
            ids: HashMap::new(),
            values: Vec::new(),
            free: Vec::new(),
            value_heap: 0,
        }
    }
}

impl<K: Hash + Eq + Clone + HeapSize> Interner<K> {
    /// The id of `value`, if some slot holds it.
    pub fn id<Q>(&self, value: &Q) -> Option<NameId>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.ids.get(value).copied()
    }

    /// The value of `id`, if some slot holds it.
    pub fn get(&self, id: NameId) -> Option<&K> {
        self.values
            .get(id.get() as usize - 1)
            .and_then(Option::as_ref)
            .map(|(k, _)| k)
    }

    /// Takes one more reference to `value`, giving it an id if it had none.
    pub fn acquire(&mut self, value: &K) -> NameId {
        if let Some(id) = self.ids.get(value) {
            if let Some((_, n)) = &mut self.values[id.get() as usize - 1] {
                *n += 1;
            }
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.values[id.get() as usize - 1] = Some((value.clone(), 1));
                id
            }
            None => {
                self.values.push(Some((value.clone(), 1)));
                // Past 2^32 − 1 values held at once (hundreds of GiB of names in one
                // collection) ids would saturate; nothing smaller reaches it.
                NonZeroU32::new(u32::try_from(self.values.len()).unwrap_or(u32::MAX))
                    .unwrap_or(NonZeroU32::MIN)
            }
        };
        self.ids.insert(value.clone(), id);
        self.value_heap += value.heap_size() as u64;
        id
    }

    /// Gives back one reference to `id`; the last one drops the value and frees the id.
    pub fn release(&mut self, id: NameId) {
        let Some(entry) = self.values.get_mut(id.get() as usize - 1) else {
            return;
        };
        let Some((value, n)) = entry else { return };
        *n -= 1;
        if *n == 0 {
            self.value_heap = self.value_heap.saturating_sub(value.heap_size() as u64);
            self.ids.remove(value);
            *entry = None;
            self.free.push(id);
        }
    }

    /// Values held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Estimated heap bytes: the map and table (by capacity) plus what each value holds on
    /// the heap, twice (map key and table entry). O(1).
    fn heap_bytes(&self) -> u64 {
        let entry = std::mem::size_of::<K>();
        let map = self.ids.capacity() * (entry + 4 + 1);
        let table = self.values.capacity() * std::mem::size_of::<Option<(K, u32)>>();
        (map + table + self.free.capacity() * 4) as u64 + 2 * self.value_heap
    }
}

/// A record's scope fields as ids into one collection's [`ScopeNames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScopeIds {
    pub domain: NameId,
    pub run: Option<NameId>,
    pub scope: Option<NameId>,
    pub tokens: TokenSetId,
}

/// A record's scope fields by name (what [`ScopeNames::names`] gives back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScopeFields {
    pub domain: Domain,
    pub run_id: Option<RunId>,
    pub memory_scope: Option<MemoryScope>,
    /// Sorted and free of duplicates, as on the record.
    pub user_tokens: Vec<UserToken>,
}

/// One collection's interned scope names (see the module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct ScopeNames {
    pub domains: Interner<Domain>,
    pub runs: Interner<RunId>,
    pub scopes: Interner<MemoryScope>,
    pub tokens: Interner<UserToken>,
    /// Token sets as token ids in the order of their names; a set's id is its id here (never [`NO_TOKENS`]).
    sets: Interner<Box<[NameId]>>,
}

impl ScopeNames {
    /// Interns a record's scope fields (one reference each, given back by [`Self::release`]).
    /// `tokens` must be sorted and free of duplicates, as a record's are.
    pub fn acquire(
        &mut self,
        domain: &Domain,
        run: Option<&RunId>,
        scope: Option<&MemoryScope>,
        tokens: &[UserToken],
    ) -> ScopeIds {
        let tokens = if tokens.is_empty() {
            NO_TOKENS
        } else {
            let known: Option<Box<[NameId]>> = tokens.iter().map(|t| self.tokens.id(t)).collect();
            match known.filter(|ids| self.sets.id(ids).is_some()) {
                // A known set: its tokens are referenced once per set, not once per slot.
                Some(ids) => self.sets.acquire(&ids).get(),
                None => {
                    let ids: Box<[NameId]> =
                        tokens.iter().map(|t| self.tokens.acquire(t)).collect();
                    self.sets.acquire(&ids).get()
                }
            }
        };
        ScopeIds {
            domain: self.domains.acquire(domain),
            run: run.map(|r| self.runs.acquire(r)),
            scope: scope.map(|s| self.scopes.acquire(s)),
            tokens,
        }
    }

    /// Gives back the references [`Self::acquire`] took.
    pub fn release(&mut self, ids: ScopeIds) {
        self.domains.release(ids.domain);
        if let Some(r) = ids.run {
            self.runs.release(r);
        }
        if let Some(s) = ids.scope {
            self.scopes.release(s);
        }
        if let Some(set) = NameId::new(ids.tokens) {
            let last = self.sets.values[set.get() as usize - 1]
                .as_ref()
                .is_some_and(|(_, n)| *n == 1);
            if last && let Some(tokens) = self.sets.get(set).cloned() {
                for t in tokens.iter() {
                    self.tokens.release(*t);
                }
            }
            self.sets.release(set);
        }
    }

    /// The token ids of set `set`, in the order of their names (empty for [`NO_TOKENS`] or an unknown set).
    pub fn token_set(&self, set: TokenSetId) -> &[NameId] {
        NameId::new(set)
            .and_then(|s| self.sets.get(s))
            .map_or(&[], |s| &s[..])
    }

    /// The names behind `ids`; `None` if an id is not in the tables (never for ids this
    /// table gave out and still holds).
    pub fn names(&self, ids: ScopeIds) -> Option<ScopeFields> {
        let mut user_tokens = self
            .token_set(ids.tokens)
            .iter()
            .map(|t| self.tokens.get(*t).cloned())
            .collect::<Option<Vec<UserToken>>>()?;
        user_tokens.sort_unstable();
        Some(ScopeFields {
            domain: self.domains.get(ids.domain)?.clone(),
            run_id: match ids.run {
                Some(r) => Some(self.runs.get(r)?.clone()),
                None => None,
            },
            memory_scope: match ids.scope {
                Some(s) => Some(self.scopes.get(s)?.clone()),
                None => None,
            },
            user_tokens,
        })
    }

    /// Estimated heap bytes of the tables (each name once per table, with its allocation).
    pub fn heap_bytes(&self) -> u64 {
        self.domains.heap_bytes()
            + self.runs.heap_bytes()
            + self.scopes.heap_bytes()
            + self.tokens.heap_bytes()
            + self.sets.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> UserToken {
        UserToken::parse(s).unwrap()
    }

    #[test]
    fn names_are_shared_counted_and_dropped_with_their_last_slot() {
        let mut n = ScopeNames::default();
        let d = Domain::default_domain();
        let run = RunId::parse("r").unwrap();
        let tokens = [token("u:a"), token("u:b")];
        let a = n.acquire(&d, Some(&run), None, &tokens);
        let b = n.acquire(&d, Some(&run), None, &tokens);
        assert_eq!(a, b, "the same names give the same ids");
        assert_eq!((n.domains.len(), n.tokens.len(), n.sets.len()), (1, 2, 1));
        let shared = n.acquire(&d, None, None, &[]);
        assert_eq!(shared.tokens, NO_TOKENS);
        assert_eq!(n.names(a).unwrap().user_tokens, tokens.to_vec());
        n.release(a);
        assert_eq!(n.names(b).unwrap().run_id, Some(run.clone()));
        n.release(b);
        assert_eq!((n.runs.len(), n.tokens.len(), n.sets.len()), (0, 0, 0));
        assert_eq!(n.domains.len(), 1, "still held by the shared record");
        n.release(shared);
        assert_eq!(n.domains.len(), 0);
        assert_eq!(
            n.domains.value_heap + n.tokens.value_heap + n.sets.value_heap,
            0
        );
        // Freed ids are reused, and a reused id names only its new value.
        let c = n.acquire(
            &Domain::parse("other").unwrap(),
            None,
            None,
            &[token("u:c")],
        );
        assert_eq!(n.names(c).unwrap().domain.as_str(), "other");
        assert!(n.runs.id(&run).is_none());
    }
}
