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

use strata_index::IdTable;
use strata_types::{Domain, MemoryScope, RunId, UserToken};

use crate::EngineError;

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
                self.heap_bytes()
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

/// Counted values by dense id (see the module docs). Ids start at 1. Each value is held once,
/// in `values`; the hash index holds only ids (`IdTable`), so a tenant with a distinct name
/// per record (a run id per conversation, a token per end user) does not pay for it twice.
#[derive(Debug, Clone)]
pub(crate) struct Interner<K> {
    ids: IdTable,
    /// By id − 1: the value and how many slots hold it (`None` once no slot does).
    values: Vec<Option<(K, u32)>>,
    free: Vec<NameId>,
    /// `HeapSize` of the values held, kept as they come and go: residency accounting reads
    /// it after every write, so it must not walk the table.
    value_heap: u64,
    /// Values held now.
    held: usize,
}

impl<K> Default for Interner<K> {
    fn default() -> Self {
        Interner {
            ids: IdTable::default(),
            values: Vec::new(),
            free: Vec::new(),
            value_heap: 0,
            held: 0,
        }
    }
}

/// The value with id `id` (as `IdTable` numbers them, the `NameId` itself), or `fallback` for
/// an id without one. The hash index only ever holds ids of values held, so the fallback is
/// never compared in practice; it keeps the lookup total instead of indexing blindly.
fn value_at<'a, K>(values: &'a [Option<(K, u32)>], id: u32, fallback: &'a K) -> &'a K {
    (id as usize)
        .checked_sub(1)
        .and_then(|i| values.get(i))
        .and_then(Option::as_ref)
        .map_or(fallback, |(k, _)| k)
}

/// The id a value gets when the table holds `len` places and none is free: `None` past the
/// largest `u32` (over four billion names held at once in one collection).
fn next_id(len: usize) -> Option<NameId> {
    u32::try_from(len + 1).ok().and_then(NameId::new)
}

impl<K: Hash + Eq + Clone + HeapSize> Interner<K> {
    /// The id of `value`, if some slot holds it.
    pub fn id(&self, value: &K) -> Option<NameId> {
        self.ids
            .get(value, |id| value_at(&self.values, id, value))
            .and_then(NameId::new)
    }

    /// The value of `id`, if some slot holds it.
    pub fn get(&self, id: NameId) -> Option<&K> {
        self.entry(id).map(|(k, _)| k)
    }

    /// The value of `id` and how many slots hold it.
    fn entry(&self, id: NameId) -> Option<&(K, u32)> {
        self.values
            .get(id.get() as usize - 1)
            .and_then(Option::as_ref)
    }

    /// Takes one more reference to `value`, giving it an id if it had none; `None` when the
    /// table is full (see [`next_id`]).
    pub fn acquire(&mut self, value: &K) -> Option<NameId> {
        if let Some(id) = self.id(value) {
            if let Some(Some((_, n))) = self.values.get_mut(id.get() as usize - 1) {
                *n += 1;
            }
            return Some(id);
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let id = next_id(self.values.len())?;
                self.values.push(None);
                id
            }
        };
        self.values[id.get() as usize - 1] = Some((value.clone(), 1));
        let values = &self.values;
        self.ids.insert(id.get(), |id| value_at(values, id, value));
        self.value_heap += value.heap_size() as u64;
        self.held += 1;
        Some(id)
    }

    /// Gives back one reference to `id`; the last one drops the value and frees the id.
    pub fn release(&mut self, id: NameId) {
        let last = match self.values.get_mut(id.get() as usize - 1) {
            Some(Some((_, n))) => {
                *n -= 1;
                *n == 0
            }
            _ => return,
        };
        if !last {
            return;
        }
        let Some(Some((value, _))) = self.values.get(id.get() as usize - 1) else {
            return;
        };
        let values = &self.values;
        self.ids.remove(value, |i| value_at(values, i, value));
        self.value_heap = self.value_heap.saturating_sub(value.heap_size() as u64);
        self.values[id.get() as usize - 1] = None;
        self.free.push(id);
        self.held -= 1;
    }

    /// Values held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held
    }

    /// Each id held, with how many references it holds.
    fn counts(&self) -> impl Iterator<Item = (NameId, u32)> + '_ {
        self.values.iter().enumerate().filter_map(|(i, v)| {
            let (_, n) = v.as_ref()?;
            Some((NameId::new(u32::try_from(i + 1).ok()?)?, *n))
        })
    }

    /// Problems, by `what` table, between the references held and `expected` (id → count,
    /// recounted from the slots): an id held too often, too rarely, or not at all.
    fn check_counts(&self, what: &str, expected: &HashMap<NameId, u32>, out: &mut Vec<String>) {
        let mut seen = 0;
        for (id, n) in self.counts() {
            let want = expected.get(&id).copied().unwrap_or(0);
            if want > 0 {
                seen += 1;
            }
            if n != want {
                out.push(format!(
                    "{what} name {id} is held {n} times, by {want} slots"
                ));
            }
        }
        if seen != expected.len() || self.held != self.ids.len() {
            out.push(format!(
                "{what} names: slots point to names the table lacks"
            ));
        }
    }

    /// Estimated heap bytes: the hash index and table (by capacity) plus what each value holds
    /// on the heap. O(1).
    fn heap_bytes(&self) -> u64 {
        let index = self.ids.capacity() * (4 + 1);
        let table = self.values.capacity() * std::mem::size_of::<Option<(K, u32)>>();
        (index + table + self.free.capacity() * 4) as u64 + self.value_heap
    }
}

/// A record's scope fields as ids into one collection's [`ScopeNames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// `tokens` must be sorted and free of duplicates, as a record's are. Fails, taking no
    /// reference, when a table is full (over four billion names held at once).
    pub fn acquire(
        &mut self,
        domain: &Domain,
        run: Option<&RunId>,
        scope: Option<&MemoryScope>,
        tokens: &[UserToken],
    ) -> Result<ScopeIds, EngineError> {
        let full = || EngineError::BadRequest("collection is full (2^32 scope names)".into());
        let mut ids = ScopeIds {
            domain: self.domains.acquire(domain).ok_or_else(full)?,
            run: None,
            scope: None,
            tokens: NO_TOKENS,
        };
        let rest = (|| {
            if let Some(r) = run {
                ids.run = Some(self.runs.acquire(r)?);
            }
            if let Some(s) = scope {
                ids.scope = Some(self.scopes.acquire(s)?);
            }
            if !tokens.is_empty() {
                ids.tokens = self.acquire_tokens(tokens)?.get();
            }
            Some(())
        })();
        if rest.is_none() {
            self.release(ids);
            return Err(full());
        }
        Ok(ids)
    }

    /// Interns a non-empty token set (its tokens are referenced once per set, not per slot).
    fn acquire_tokens(&mut self, tokens: &[UserToken]) -> Option<NameId> {
        let known: Option<Box<[NameId]>> = tokens.iter().map(|t| self.tokens.id(t)).collect();
        if let Some(ids) = known.filter(|ids| self.sets.id(ids).is_some()) {
            return self.sets.acquire(&ids);
        }
        let mut ids = Vec::with_capacity(tokens.len());
        for t in tokens {
            match self.tokens.acquire(t) {
                Some(id) => ids.push(id),
                None => {
                    ids.into_iter().for_each(|id| self.tokens.release(id));
                    return None;
                }
            }
        }
        let ids: Box<[NameId]> = ids.into();
        let set = self.sets.acquire(&ids);
        if set.is_none() {
            ids.iter().for_each(|id| self.tokens.release(*id));
        }
        set
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
            if let Some((tokens, 1)) = self.sets.entry(set).cloned() {
                for t in tokens.iter() {
                    self.tokens.release(*t);
                }
            }
            self.sets.release(set);
        }
    }

    /// The token ids of set `set`, in the order of their names: empty for [`NO_TOKENS`],
    /// `None` for a set the table does not hold (which callers treat as matching nothing).
    pub fn token_set(&self, set: TokenSetId) -> Option<&[NameId]> {
        match NameId::new(set) {
            None => Some(&[]),
            Some(s) => self.sets.get(s).map(|s| &s[..]),
        }
    }

    /// The names behind `ids`; `None` if an id is not in the tables (never for ids this
    /// table gave out and still holds). Each name is a clone of the table's (a reference
    /// count).
    pub fn names(&self, ids: ScopeIds) -> Option<ScopeFields> {
        let mut user_tokens = self
            .token_set(ids.tokens)?
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

    /// Problems between the references the tables hold and the slots holding `ids` (the
    /// tenant check, `crate::verify`): each slot holds one reference to its domain, run, memory
    /// scope and token set, each token set one to each of its tokens.
    pub fn check_references<'a>(&self, ids: impl Iterator<Item = &'a ScopeIds>) -> Vec<String> {
        let mut want: [HashMap<NameId, u32>; 5] = Default::default();
        let mut bump = |table: usize, id: NameId| *want[table].entry(id).or_default() += 1;
        for s in ids {
            bump(0, s.domain);
            s.run.into_iter().for_each(|r| bump(1, r));
            s.scope.into_iter().for_each(|m| bump(2, m));
            if let Some(set) = NameId::new(s.tokens) {
                bump(4, set);
            }
        }
        let [domains, runs, scopes, tokens, sets] = &mut want;
        for set in sets.keys() {
            for t in self.sets.get(*set).map_or(&[][..], |t| &t[..]) {
                *tokens.entry(*t).or_default() += 1;
            }
        }
        let mut out = Vec::new();
        self.domains.check_counts("domain", domains, &mut out);
        self.runs.check_counts("run", runs, &mut out);
        self.scopes.check_counts("memory scope", scopes, &mut out);
        self.tokens.check_counts("user token", tokens, &mut out);
        self.sets.check_counts("token set", sets, &mut out);
        out
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
        let a = n.acquire(&d, Some(&run), None, &tokens).unwrap();
        let b = n.acquire(&d, Some(&run), None, &tokens).unwrap();
        assert_eq!(a, b, "the same names give the same ids");
        assert_eq!((n.domains.len(), n.tokens.len(), n.sets.len()), (1, 2, 1));
        let shared = n.acquire(&d, None, None, &[]).unwrap();
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
        let c = n
            .acquire(
                &Domain::parse("other").unwrap(),
                None,
                None,
                &[token("u:c")],
            )
            .unwrap();
        assert_eq!(n.names(c).unwrap().domain.as_str(), "other");
        assert!(n.runs.id(&run).is_none());
    }

    #[test]
    fn ids_stop_at_the_largest_u32_instead_of_aliasing() {
        assert_eq!(next_id(0), NameId::new(1));
        assert_eq!(next_id(u32::MAX as usize - 1), NameId::new(u32::MAX));
        assert_eq!(next_id(u32::MAX as usize), None, "no id past u32::MAX");
    }

    #[test]
    fn an_unknown_token_set_is_not_the_empty_set() {
        let mut n = ScopeNames::default();
        let d = Domain::default_domain();
        let a = n.acquire(&d, None, None, &[token("u:a")]).unwrap();
        assert_eq!(n.token_set(NO_TOKENS), Some(&[][..]));
        assert_eq!(n.token_set(a.tokens).map(<[NameId]>::len), Some(1));
        assert_eq!(n.token_set(a.tokens + 1), None);
        n.release(a);
        assert_eq!(n.token_set(a.tokens), None, "a released set is unknown");
        assert!(n.names(a).is_none());
    }

    #[test]
    fn each_name_is_held_once() {
        let mut n = ScopeNames::default();
        let d = Domain::default_domain();
        let run = RunId::parse("r".repeat(40)).unwrap();
        let before = n.runs.value_heap;
        let a = n.acquire(&d, Some(&run), None, &[]).unwrap();
        assert_eq!(n.runs.value_heap - before, run.heap_bytes() as u64);
        assert_eq!(n.runs.id(&run), a.run);
        n.release(a);
        assert_eq!(n.runs.id(&run), None);
    }

    #[test]
    fn the_check_recounts_references_from_the_slots() {
        let mut n = ScopeNames::default();
        let d = Domain::default_domain();
        let run = RunId::parse("r").unwrap();
        let tokens = [token("u:a"), token("u:b")];
        let slots = [
            n.acquire(&d, Some(&run), None, &tokens).unwrap(),
            n.acquire(&d, None, None, &tokens).unwrap(),
            n.acquire(&d, None, None, &[]).unwrap(),
        ];
        assert_eq!(n.check_references(slots.iter()), Vec::<String>::new());
        // A slot gone without giving its names back: the tables hold one reference too many.
        let problems = n.check_references(slots[1..].iter());
        assert!(
            problems.iter().any(|p| p.starts_with("run name")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("domain name")),
            "{problems:?}"
        );
        // A count off in the table itself.
        if let Some(Some((_, c))) = n.tokens.values.get_mut(0) {
            *c += 1;
        }
        let problems = n.check_references(slots.iter());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("user token name"), "{problems:?}");
    }
}
