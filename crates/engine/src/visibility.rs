//! The one place where a request's scope is resolved against its credential and where a
//! record's visibility is decided (docs/isolation.md, rules 2 and 3).
//!
//! Rules, in order:
//! - the operation needs its permission (`read` or `write`);
//! - the domain is the request's (default `default`, or the credential's only domain); a
//!   credential limited to domains may name only those;
//! - the principals are the request's `user_tokens`; absent, the credential's bound tokens (or
//!   none). A bound credential may name only a subset; `["*"]` needs `all_principals` and an
//!   unbound credential;
//! - a record is visible when it is in the domain, matches `run_id` / `memory_scope` if the
//!   request names them, has not expired (a delete sees expired records too:
//!   `Visibility::with_expired`), and either has no tokens (tenant-shared memory) or
//!   matches the request's tokens (`any`: they intersect; `all`: the request holds them all).

use std::collections::BTreeSet;

use strata_auth::{Permission, TenantScope};
use strata_store::NarrativePrincipal;
use strata_types::{
    Domain, MemoryScope, Millis, Record, RequestScope, RunId, TokenSelector, UserMatch, UserToken,
};

use crate::EngineError;
use crate::scope_names::{NO_TOKENS, NameId, ScopeNames, TokenSetId};
use crate::slot_doc::SlotDoc;

/// Which principals a resolved request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principals {
    /// Every principal (`["*"]` with `all_principals`).
    All,
    /// These principals; empty means "only tenant-shared records".
    Set(BTreeSet<UserToken>, UserMatch),
}

/// A request scope resolved against its credential: what this request may see.
#[derive(Debug, Clone)]
pub(crate) struct Visibility {
    pub domain: Domain,
    pub run_id: Option<RunId>,
    pub memory_scope: Option<MemoryScope>,
    pub principals: Principals,
    /// Tokens a record written by this request gets when it names none.
    default_write_tokens: Vec<UserToken>,
    bound_tokens: Option<BTreeSet<UserToken>>,
    pub now: Millis,
    /// Whether records past their `expires_at` are seen too ([`Visibility::with_expired`]).
    expired_seen: bool,
}

impl Visibility {
    /// The same, judged at this moment (never earlier than it was): for a write that resolved
    /// its scope on arrival and commits later, so that what expired meanwhile is gone.
    pub fn at_commit(&self) -> Visibility {
        let mut vis = self.clone();
        vis.now = strata_types::now_millis().max(vis.now);
        vis
    }

    /// Resolves `req` for an operation that needs `permission`.
    pub fn resolve(
        scope: &TenantScope,
        req: &RequestScope,
        permission: Permission,
        now: Millis,
    ) -> Result<Visibility, EngineError> {
        let grant = scope.grant();
        if !grant.permissions.has(permission) {
            return Err(EngineError::PermissionDenied(permission));
        }
        let domain = resolve_domain(grant.domains.as_deref(), req.memory_domain.as_ref())?;
        let bound: Option<BTreeSet<UserToken>> = grant
            .user_tokens
            .as_ref()
            .map(|t| t.iter().cloned().collect());
        let principals = match (&req.user_tokens, &bound) {
            (None, None) => Principals::Set(BTreeSet::new(), req.user_match),
            (None, Some(b)) => Principals::Set(b.clone(), req.user_match),
            (Some(TokenSelector::Tokens(list)), b) => {
                let asked: BTreeSet<UserToken> = list.iter().cloned().collect();
                if let Some(b) = b {
                    check_subset(&asked, b)?;
                }
                Principals::Set(asked, req.user_match)
            }
            (Some(TokenSelector::AllPrincipals), b) => {
                if b.is_some() || !grant.permissions.has(Permission::AllPrincipals) {
                    return Err(EngineError::ScopeForbidden(
                        "user_tokens [\"*\"] needs an unbound credential with the all_principals permission"
                            .into(),
                    ));
                }
                Principals::All
            }
        };
        let default_write_tokens = match (&principals, &bound) {
            (Principals::Set(s, _), _) => s.iter().cloned().collect(),
            (Principals::All, _) => Vec::new(),
        };
        Ok(Visibility {
            domain,
            run_id: req.run_id.clone(),
            memory_scope: req.memory_scope.clone(),
            principals,
            default_write_tokens,
            bound_tokens: bound,
            now,
            expired_seen: false,
        })
    }

    /// What a grantee sees of an owner's shared domain (`crate::shares`): the domain's
    /// tenant-shared records only — a record bound to user tokens never crosses tenants, since
    /// the grantee's principals mean nothing in the owner's tenant — narrowed by the request's
    /// `run_id` and `memory_scope`. It never writes: no write path takes it.
    pub fn shared_domain(domain: Domain, req: &RequestScope, now: Millis) -> Visibility {
        Visibility {
            domain,
            run_id: req.run_id.clone(),
            memory_scope: req.memory_scope.clone(),
            principals: Principals::Set(BTreeSet::new(), UserMatch::Any),
            default_write_tokens: Vec::new(),
            bound_tokens: None,
            now,
            expired_seen: false,
        }
    }

    /// This visibility for a delete: it also sees the records past their `expires_at`. Expiry
    /// hides a record from reads because of the time, not because it stopped being the
    /// caller's: until the expiry sweep removes it, a delete within the caller's scope (by id,
    /// or by a filter, such as forgetting an end user) takes it, and its bytes, with it.
    pub fn with_expired(mut self) -> Visibility {
        self.expired_seen = true;
        self
    }

    /// Whose narrative vector this request feeds and reads (adaptive reranking,
    /// docs/adaptive-reranking.md): the principal it speaks for, never merely what it sees.
    /// A bound credential speaks for its whole binding, whichever subset of it a request names:
    /// a key bound to n tokens has one narrative, not 2^n - 1 it could mint to push everyone
    /// else's out of the namespace's cap. An unbound credential speaks for the tokens it names;
    /// `["*"]` is a principal of its own, and none is the namespace-wide principal. `None` for a
    /// credential bound to no tokens at all, which speaks for nobody and so has no narrative.
    pub fn narrative_principal(&self) -> Option<NarrativePrincipal> {
        match (&self.principals, &self.bound_tokens) {
            (Principals::All, _) => Some(NarrativePrincipal::AllPrincipals),
            (_, Some(bound)) if !bound.is_empty() => {
                Some(NarrativePrincipal::of_tokens(bound.iter().cloned()))
            }
            (_, Some(_)) => None,
            (Principals::Set(set, _), None) if !set.is_empty() => {
                Some(NarrativePrincipal::of_tokens(set.iter().cloned()))
            }
            (Principals::Set(..), None) => Some(NarrativePrincipal::Shared),
        }
    }

    /// Whether records must hold *every* token they carry in the request's set (`user_match:
    /// "all"`), which the principal bitmaps cannot decide on their own.
    pub fn matches_all_tokens(&self) -> bool {
        matches!(self.principals, Principals::Set(_, UserMatch::All))
    }

    /// Whether this request may see `record` (which is already known to be in its tenant).
    pub fn sees(&self, record: &Record) -> bool {
        self.sees_fields(Fields {
            domain: &record.memory_domain,
            run_id: record.run_id.as_ref(),
            memory_scope: record.memory_scope.as_ref(),
            expired: record.is_expired(self.now),
            user_tokens: &record.user_tokens,
        })
    }

    /// [`Visibility::sees`] on a record's scope fields alone ([`strata_store::RecordScope`]),
    /// for checks over many records that need nothing else of them.
    pub fn sees_scope(&self, record: &strata_store::RecordScope) -> bool {
        self.sees_fields(Fields {
            domain: &record.memory_domain,
            run_id: record.run_id.as_ref(),
            memory_scope: record.memory_scope.as_ref(),
            expired: record.expires_at.is_some_and(|t| t <= self.now),
            user_tokens: &record.user_tokens,
        })
    }

    /// The same decisions on the resident parts of one collection's records, whose scope
    /// fields are ids into `names`: the request's names are resolved to ids once, here, and
    /// each slot is then decided by comparing ids ([`SlotVisibility::sees_slot`]).
    pub fn for_slots<'a>(&'a self, names: &'a ScopeNames) -> SlotVisibility<'a> {
        let domain = names.domains.id(&self.domain);
        // A name the request needs that no record of the collection carries: nothing matches
        // (fail closed, never "no constraint").
        let run = self.run_id.as_ref().map(|r| names.runs.id(r));
        let scope = self.memory_scope.as_ref().map(|s| names.scopes.id(s));
        let nothing = domain.is_none() || run == Some(None) || scope == Some(None);
        let principals = match &self.principals {
            Principals::All => SlotPrincipals::All,
            Principals::Set(set, how) => {
                // A request token no record carries can match no record token: left out.
                let mut ids: Vec<NameId> = set.iter().filter_map(|t| names.tokens.id(t)).collect();
                ids.sort_unstable();
                SlotPrincipals::Set(ids, *how)
            }
        };
        SlotVisibility {
            names,
            nothing,
            domain: domain.unwrap_or(NameId::MIN),
            run: run.flatten(),
            scope: scope.flatten(),
            principals,
            now: self.now,
            expired_seen: self.expired_seen,
        }
    }

    /// The rules themselves (module docs), over the fields they read.
    fn sees_fields(&self, record: Fields<'_>) -> bool {
        *record.domain == self.domain
            && self
                .run_id
                .as_ref()
                .is_none_or(|r| record.run_id == Some(r))
            && self
                .memory_scope
                .as_ref()
                .is_none_or(|s| record.memory_scope == Some(s))
            && (self.expired_seen || !record.expired)
            && self.sees_tokens(record.user_tokens)
    }

    fn sees_tokens(&self, tokens: &[UserToken]) -> bool {
        if tokens.is_empty() {
            return true;
        }
        match &self.principals {
            Principals::All => true,
            Principals::Set(set, UserMatch::Any) => tokens.iter().any(|t| set.contains(t)),
            Principals::Set(set, UserMatch::All) => tokens.iter().all(|t| set.contains(t)),
        }
    }

    /// The tokens a record written by this request gets: its own list, or the request's
    /// principals. A bound credential may only write for a non-empty subset of its principals.
    pub fn write_tokens(&self, asked: Option<&[UserToken]>) -> Result<Vec<UserToken>, EngineError> {
        let tokens: BTreeSet<UserToken> = match asked {
            Some(list) => list.iter().cloned().collect(),
            None => self.default_write_tokens.iter().cloned().collect(),
        };
        if let Some(bound) = &self.bound_tokens {
            if tokens.is_empty() {
                return Err(EngineError::ScopeForbidden(
                    "a credential bound to user tokens cannot write tenant-shared records".into(),
                ));
            }
            check_subset(&tokens, bound)?;
        }
        Ok(tokens.into_iter().collect())
    }

    /// Whether this request may change or delete `record`, which it already sees: a credential
    /// bound to user tokens speaks for those principals, not for the tenant, so it may touch
    /// only a record it could have written itself under [`Visibility::write_tokens`]'s rule —
    /// one whose tokens are a non-empty subset of its own. A tenant-shared record, or one
    /// co-owned with a principal outside the binding, it may read but not rewrite, hide, move
    /// or delete. Refused the way `write_tokens` refuses (`ScopeForbidden`).
    pub fn check_writable(&self, record: &Record) -> Result<(), EngineError> {
        self.write_tokens(Some(&record.user_tokens)).map(|_| ())
    }

    /// [`Visibility::check_writable`] as a yes or no, for scans that skip what they may not
    /// touch (a delete by filter).
    pub fn may_write(&self, record: &Record) -> bool {
        self.bound_tokens.is_none() || self.check_writable(record).is_ok()
    }
}

/// Principals by token id (see [`Visibility::for_slots`]).
enum SlotPrincipals {
    All,
    /// Sorted token ids.
    Set(Vec<NameId>, UserMatch),
}

/// A [`Visibility`] resolved against one collection's scope names (`Visibility::for_slots`).
pub(crate) struct SlotVisibility<'a> {
    names: &'a ScopeNames,
    /// The request names a domain, run or memory scope that no record of the collection has.
    nothing: bool,
    domain: NameId,
    run: Option<NameId>,
    scope: Option<NameId>,
    principals: SlotPrincipals,
    now: Millis,
    expired_seen: bool,
}

impl SlotVisibility<'_> {
    /// Whether the request sees the record whose resident part is `doc`: the rules of
    /// `Visibility::sees` (module docs), on ids.
    pub fn sees_slot(&self, doc: &SlotDoc) -> bool {
        let s = &doc.scope;
        !self.nothing
            && s.domain == self.domain
            && self.run.is_none_or(|r| s.run == Some(r))
            && self.scope.is_none_or(|m| s.scope == Some(m))
            && (self.expired_seen || !doc.is_expired(self.now))
            && self.sees_tokens(s.tokens)
    }

    fn sees_tokens(&self, set: TokenSetId) -> bool {
        if set == NO_TOKENS {
            return true;
        }
        // A set the table does not hold (never for a slot it gave ids to): fail closed.
        let Some(tokens) = self.names.token_set(set) else {
            return false;
        };
        match &self.principals {
            SlotPrincipals::All => true,
            SlotPrincipals::Set(ids, UserMatch::Any) => {
                tokens.iter().any(|t| ids.binary_search(t).is_ok())
            }
            SlotPrincipals::Set(ids, UserMatch::All) => {
                tokens.iter().all(|t| ids.binary_search(t).is_ok())
            }
        }
    }
}

/// What the visibility rules read of a record.
struct Fields<'a> {
    domain: &'a Domain,
    run_id: Option<&'a RunId>,
    memory_scope: Option<&'a MemoryScope>,
    expired: bool,
    user_tokens: &'a [UserToken],
}

fn resolve_domain(bound: Option<&[Domain]>, asked: Option<&Domain>) -> Result<Domain, EngineError> {
    let domain = match (asked, bound) {
        (Some(d), _) => d.clone(),
        (None, Some([only])) => only.clone(),
        (None, _) => Domain::default_domain(),
    };
    if let Some(bound) = bound
        && !bound.contains(&domain)
    {
        return Err(EngineError::ScopeForbidden(format!(
            "memory_domain {domain} is outside the credential's domains"
        )));
    }
    Ok(domain)
}

fn check_subset(
    asked: &BTreeSet<UserToken>,
    bound: &BTreeSet<UserToken>,
) -> Result<(), EngineError> {
    match asked.iter().find(|t| !bound.contains(*t)) {
        Some(t) => Err(EngineError::ScopeForbidden(format!(
            "user token {t} is outside the credential's user tokens"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "visibility_slot_tests.rs"]
mod slot_tests;
