//! A search's own copies of the scope names it names its hits with (`HitChecks::resident`).
//!
//! A name is an `Arc<str>` (`strata_types::name`): a clone writes its reference count. A
//! collection's name tables (`crate::scope_names`) are shared by every search of the tenant,
//! so naming each hit with clones of the table's domain, run, memory scope and user tokens
//! would make every hit of every thread write to the same few cache lines. Instead a search
//! copies a name once (`unshared`, one allocation) the first time one of its hits carries it,
//! and clones its copy for later hits. The copies are kept for the first [`OWN_PER_TABLE`]
//! distinct names of each table, looked up by a short linear scan; a hit carrying a name past
//! that (a tenant with a run per record) clones the table's, as before. So a search makes at
//! most `4 × OWN_PER_TABLE` extra allocations, whatever its `k`.
//!
//! Not copied: the hit's record id, which is the slot's own (`SlotDoc::id`). Ids are distinct
//! per record, so a copy would be an allocation per hit; its count is shared only with
//! searches that return the same record at the same moment.

use strata_types::{Domain, MemoryScope, RunId, UserToken};

use crate::scope_names::{HeapSize, Interner, NameId, ScopeFields, ScopeIds, ScopeNames};

/// Distinct names per table a search keeps its own copies of.
const OWN_PER_TABLE: usize = 8;

/// A name type whose text can be copied into an allocation of its own.
trait OwnCopy: Clone + Eq + std::hash::Hash + std::fmt::Debug + HeapSize {
    fn own_copy(&self) -> Self;
}

macro_rules! own_copy {
    ($($t:ty),*) => {$(
        impl OwnCopy for $t {
            fn own_copy(&self) -> Self {
                self.unshared()
            }
        }
    )*};
}
own_copy!(Domain, RunId, MemoryScope, UserToken);

/// One table's copies, by the table's id.
struct Own<T> {
    held: Vec<(NameId, T)>,
}

impl<T> Default for Own<T> {
    fn default() -> Self {
        Own { held: Vec::new() }
    }
}

impl<T: OwnCopy> Own<T> {
    /// The name `id` in `table`: this search's copy, made now if there is room. `None` if the
    /// table does not hold `id`.
    fn name(&mut self, id: NameId, table: &Interner<T>) -> Option<T> {
        if let Some((_, own)) = self.held.iter().find(|(held, _)| *held == id) {
            // Ids are reused only after a write releases them, which needs the index's write
            // lock; a search holds it for reading for as long as these copies live.
            debug_assert_eq!(Some(own), table.get(id), "a search's copy of name {id}");
            return Some(own.clone());
        }
        let shared = table.get(id)?;
        if self.held.len() >= OWN_PER_TABLE {
            return Some(shared.clone());
        }
        let own = shared.own_copy();
        self.held.push((id, own.clone()));
        Some(own)
    }
}

/// A search's copies of one collection's scope names (see the module docs). Valid only with
/// the `ScopeNames` it was filled from, under the same hold of the index.
#[derive(Default)]
pub(crate) struct HitNames {
    domains: Own<Domain>,
    runs: Own<RunId>,
    scopes: Own<MemoryScope>,
    tokens: Own<UserToken>,
    /// The last hit's ids and the names given for them: hits of one search mostly share their
    /// scope (one domain, one run, the same principals), and a hit with the same ids as the
    /// one before is named by cloning these, without looking the ids up again (the token
    /// set's lookup, its names and their sort were 1.7 % of a 128-d `include: []` search's
    /// CPU; docs/benchmarks.md, issue 15, 1 Dec). The clones are of this search's copies as
    /// far as they are its own, as `names` would give.
    last: Option<(ScopeIds, ScopeFields)>,
}

impl HitNames {
    /// `ScopeNames::names`, with this search's copies: the same names, in the same order.
    pub fn names(&mut self, table: &ScopeNames, ids: ScopeIds) -> Option<ScopeFields> {
        if let Some((last, fields)) = &self.last
            && *last == ids
        {
            // Ids are reused only after a write releases them, which needs the index's write
            // lock; a search holds it for reading for as long as this memo lives.
            debug_assert_eq!(Some(fields), table.names(ids).as_ref(), "memo of {ids:?}");
            return Some(fields.clone());
        }
        let fields = self.look_up(table, ids)?;
        self.last = Some((ids, fields.clone()));
        Some(fields)
    }

    /// The names of `ids`, each this search's copy while there is room (see the module docs).
    fn look_up(&mut self, table: &ScopeNames, ids: ScopeIds) -> Option<ScopeFields> {
        let mut user_tokens = table
            .token_set(ids.tokens)?
            .iter()
            .map(|t| self.tokens.name(*t, &table.tokens))
            .collect::<Option<Vec<UserToken>>>()?;
        user_tokens.sort_unstable();
        Some(ScopeFields {
            domain: self.domains.name(ids.domain, &table.domains)?,
            run_id: match ids.run {
                Some(r) => Some(self.runs.name(r, &table.runs)?),
                None => None,
            },
            memory_scope: match ids.scope {
                Some(s) => Some(self.scopes.name(s, &table.scopes)?),
                None => None,
            },
            user_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(i: usize) -> RunId {
        RunId::parse(format!("run-{i}")).unwrap()
    }

    #[test]
    fn names_match_the_table_and_are_the_searchs_own_copies() {
        let mut table = ScopeNames::default();
        let d = Domain::default_domain();
        let scope = MemoryScope::parse("asset-1").unwrap();
        let tokens = [
            UserToken::parse("u:bob").unwrap(),
            UserToken::parse("u:alice").unwrap(),
        ];
        let ids = table
            .acquire(&d, Some(&run(0)), Some(&scope), &tokens)
            .unwrap();
        let mut own = HitNames::default();
        let first = own.names(&table, ids).unwrap();
        assert_eq!(first, table.names(ids).unwrap());
        let shared = table.domains.get(ids.domain).unwrap();
        assert!(!std::ptr::eq(first.domain.as_str(), shared.as_str()));
        // A later hit with the same names clones the search's copies, not the table's.
        let second = own.names(&table, ids).unwrap();
        assert!(std::ptr::eq(first.domain.as_str(), second.domain.as_str()));
        let (a, b) = (first.run_id.unwrap(), second.run_id.unwrap());
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert!(std::ptr::eq(
            first.user_tokens[0].as_str(),
            second.user_tokens[0].as_str()
        ));
        assert_eq!(second.user_tokens, table.names(ids).unwrap().user_tokens);
    }

    #[test]
    fn copies_are_bounded_and_later_names_come_from_the_table() {
        let mut table = ScopeNames::default();
        let d = Domain::default_domain();
        let all: Vec<ScopeIds> = (0..OWN_PER_TABLE + 3)
            .map(|i| table.acquire(&d, Some(&run(i)), None, &[]).unwrap())
            .collect();
        let mut own = HitNames::default();
        for (i, ids) in all.iter().enumerate() {
            let got = own.names(&table, *ids).unwrap().run_id.unwrap();
            assert_eq!(got, run(i));
            let shared = table.runs.get(ids.run.unwrap()).unwrap();
            assert_eq!(
                std::ptr::eq(got.as_str(), shared.as_str()),
                i >= OWN_PER_TABLE,
                "hit {i}"
            );
        }
        assert_eq!(own.runs.held.len(), OWN_PER_TABLE);
    }

    #[test]
    fn a_hit_with_the_last_hits_ids_is_named_from_the_memo_and_another_is_looked_up() {
        let mut table = ScopeNames::default();
        let d = Domain::default_domain();
        let tokens = [UserToken::parse("u:bob").unwrap()];
        let a = table.acquire(&d, Some(&run(0)), None, &tokens).unwrap();
        let b = table.acquire(&d, Some(&run(1)), None, &[]).unwrap();
        let mut own = HitNames::default();
        let first = own.names(&table, a).unwrap();
        assert_eq!(own.last.as_ref().map(|(ids, _)| *ids), Some(a));
        let again = own.names(&table, a).unwrap();
        assert_eq!(again, table.names(a).unwrap());
        // The memo's names are the search's copies, shared with the first hit's.
        assert!(std::ptr::eq(first.domain.as_str(), again.domain.as_str()));
        assert!(std::ptr::eq(
            first.user_tokens[0].as_str(),
            again.user_tokens[0].as_str()
        ));
        // Other ids are looked up (not answered from the memo), and become the memo.
        let other = own.names(&table, b).unwrap();
        assert_eq!(other, table.names(b).unwrap());
        assert_eq!(other.run_id, Some(run(1)));
        assert!(other.user_tokens.is_empty());
        assert_eq!(own.last.as_ref().map(|(ids, _)| *ids), Some(b));
        assert_eq!(own.names(&table, a).unwrap(), table.names(a).unwrap());
    }

    #[test]
    fn an_unknown_id_names_nothing() {
        let mut table = ScopeNames::default();
        let d = Domain::default_domain();
        let ids = table.acquire(&d, None, None, &[]).unwrap();
        table.release(ids);
        assert!(HitNames::default().names(&table, ids).is_none());
    }
}
