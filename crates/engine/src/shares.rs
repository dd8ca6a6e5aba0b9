//! Shared knowledge: the one sanctioned way across the tenant wall (`docs/shared-knowledge.md`).
//!
//! An owner publishes one of its domains, read-only, to named tenants and/or to all its
//! children (`crate::hierarchy`). Storage: the share row lives in the owner's range (blob
//! `share:out:<id>`); each named grantee gets a pointer row in its own range (blob
//! `share:in:<owner>/<id>`), which binds the grant to that grantee's incarnation: a tenant
//! re-created with the same id has a fresh range and no pointer. Children need no pointer:
//! a child is whoever names the owner as `parent` now.
//!
//! Consent: a pointer alone is an *offer*. A named grantee reads the domain only once it has
//! accepted (`crate::share_consent`, an acceptance row `share:accepted:<owner>/<id>` beside
//! the pointer); until then the offer is listed to it and nothing more: no search, no count
//! toward any of its limits. Pointers stored before consent existed have no acceptance row,
//! so they are offers. Children's grants need no acceptance: the operator, who sets the
//! hierarchy, consented for them.
//!
//! The invariant: code can read another tenant's records only through a [`SharedDomain`],
//! and the only function that makes one is [`verify`], which checks, on one snapshot, that the
//! grantee is live, the owner is live (same incarnation, neither suspended nor deleted), the
//! share row still exists, and the grantee is named in it (with its pointer and its
//! acceptance) or is a child of the owner while the share is for children. Nothing is cached:
//! every request verifies again, so a revoke, decline, suspension, deletion or parent change
//! is seen by the next request.
//! A `SharedDomain` has no write method, and its visibility (`Visibility::shared_domain`)
//! sees only the domain's tenant-shared records.

use serde::{Deserialize, Serialize};
use strata_auth::{Permission, TenantScope};
use strata_store::codec::{decode_json, encode_json};
use strata_store::{Reads, StoreError, TenantKey, Writer};
use strata_types::{
    Collection, CollectionName, Domain, HitSource, Millis, RequestScope, SearchHit, SearchMode,
    SearchRequest, SharedSelector, TenantId, now_millis,
};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::audit::{self, tenant_event};
use crate::hits::StoredRecords;
use crate::lifecycle::{TenantProfile, TenantStatus};
use crate::search::{Searched, search_collection};
use crate::tenants::check_live;
use crate::visibility::Visibility;
use crate::{Engine, EngineError};
use crate::{share_consent, share_read_memo};

/// See [`Engine::audit_shared_reads`]: one shared read in this many waits for its rows' sync.
const SHARED_READ_SYNC_EVERY: u64 = 64;
/// Shared reads audited by this process (one count for every engine in it, which only makes
/// syncs more frequent).
static SHARED_READS: AtomicU64 = AtomicU64::new(0);

const OUT_PREFIX: &str = "share:out:";
pub(crate) const IN_PREFIX: &str = "share:in:";
/// Shares one owner may have at once.
pub const MAX_SHARES: usize = 100;
/// Named grantees of one share.
pub const MAX_GRANTEES: usize = 100;

/// A published domain, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Share {
    pub id: String,
    #[schema(value_type = String)]
    pub owner: TenantId,
    #[schema(value_type = String)]
    pub domain: Domain,
    /// Tenants it is offered to by name, but those that declined it. Every name the owner
    /// gave is listed, whether or not such a tenant exists: only `accepted` tells.
    #[schema(value_type = Vec<String>)]
    pub tenants: Vec<TenantId>,
    /// The named tenants that accepted it (a subset of `tenants`); only they can read it.
    #[schema(value_type = Vec<String>)]
    pub accepted: Vec<TenantId>,
    /// Whether every current child of the owner is a grantee too.
    pub children: bool,
    #[schema(value_type = i64)]
    pub created_at: Millis,
}

/// `POST /v1/shares`: publish `domain` to `tenants` and/or to all children.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShare {
    #[schema(value_type = Domain)]
    pub domain: Domain,
    /// Grantees by id (at most 100). A name that is no live tenant is offered nothing, and
    /// answered like any other (no tenant learns which others exist).
    #[serde(default)]
    #[schema(value_type = Vec<TenantId>, max_items = 100)]
    pub tenants: Vec<TenantId>,
    /// Grant every tenant whose parent is the owner, now and later, while it stays a child.
    #[serde(default)]
    pub children: bool,
}

/// How a grantee holds a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantVia {
    /// The owner named this tenant.
    Named,
    /// The owner published to its children, and this tenant is one.
    Children,
}

/// Whether a grantee consented to a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShareState {
    /// Offered by name and not accepted yet: its grantee's searches do not see it.
    Offered,
    /// Accepted by its named grantee, or held as a child: searches may include it.
    Accepted,
}

/// A live grant or offer, as its grantee sees it (never the owner's other grantees).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IncomingShare {
    pub id: String,
    #[schema(value_type = String)]
    pub owner: TenantId,
    #[schema(value_type = String)]
    pub domain: Domain,
    pub via: GrantVia,
    pub state: ShareState,
    #[schema(value_type = i64)]
    pub created_at: Millis,
}

/// The share row in the owner's range. Every field is required when read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredShare {
    id: String,
    domain: Domain,
    tenants: Vec<TenantId>,
    children: bool,
    created_at: Millis,
    created_by: String,
}

/// The pointer row in a named grantee's range: the offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pointer {
    pub(crate) owner: TenantId,
    pub(crate) share: String,
}

pub(crate) fn out_name(id: &str) -> String {
    format!("{OUT_PREFIX}{id}")
}

pub(crate) fn in_name(owner: &TenantId, id: &str) -> String {
    format!("{IN_PREFIX}{owner}/{id}")
}

/// Whether a blob name belongs to shares, and its value decodes; for tenant verification.
pub(crate) fn check_blob(name: &str, bytes: &[u8]) -> Option<Result<(), StoreError>> {
    if name.starts_with(OUT_PREFIX) {
        Some(decode_json::<StoredShare>(bytes).map(|_| ()))
    } else if name.starts_with(IN_PREFIX) {
        Some(decode_json::<Pointer>(bytes).map(|_| ()))
    } else {
        share_consent::check_blob(name, bytes)
    }
}

/// A verified, read-only handle on one owner's shared domain, for one request, that the grantee
/// consented to. Fields are private and [`verify`] is its only constructor.
#[derive(Debug)]
pub(crate) struct SharedDomain {
    share: String,
    owner: TenantId,
    owner_key: TenantKey,
    domain: Domain,
    via: GrantVia,
    created_at: Millis,
}

impl SharedDomain {
    fn incoming(&self, state: ShareState) -> IncomingShare {
        IncomingShare {
            id: self.share.clone(),
            owner: self.owner.clone(),
            domain: self.domain.clone(),
            via: self.via,
            state,
            created_at: self.created_at,
        }
    }
}

/// What [`verify`] finds of one share for one grantee.
pub(crate) enum Standing {
    /// A grant the grantee may read: accepted by name, or held as a child.
    Usable(SharedDomain),
    /// A live offer by name, not accepted: listed to the grantee, never read.
    Offered(IncomingShare),
}

impl Standing {
    pub(crate) fn incoming(&self) -> IncomingShare {
        match self {
            Standing::Usable(g) => g.incoming(ShareState::Accepted),
            Standing::Offered(o) => o.clone(),
        }
    }
}

/// The one check of a grant (see the module docs): `Some` only if `scope`'s tenant is live and
/// holds a live grant or offer `share` of the live `owner`.
pub(crate) fn verify(
    r: &impl Reads,
    scope: &TenantScope,
    owner: &TenantId,
    share: &str,
) -> Result<Option<Standing>, EngineError> {
    standing(r, scope, owner, share, OwnerMust::BeActive)
}

/// Whether [`standing`] requires the owner to be active, or only registered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerMust {
    /// For every read of a grant: a suspended or deleted owner shares nothing.
    BeActive,
    /// For a grantee giving up a share: its consent is its own to withdraw whatever state
    /// the owner is in (else an accepted share would come back with the owner's resumption).
    Exist,
}

/// [`verify`], with the owner's state as `owner_must` says.
pub(crate) fn standing(
    r: &impl Reads,
    scope: &TenantScope,
    owner: &TenantId,
    share: &str,
    owner_must: OwnerMust,
) -> Result<Option<Standing>, EngineError> {
    let grantee = check_live(r, scope)?;
    if owner == scope.tenant() {
        return Ok(None);
    }
    let Some(meta) = r.tenant(owner)? else {
        return Ok(None);
    };
    // An owner whose profile does not decode shares nothing: its damage stops only itself,
    // never its grantees' own searches and listings.
    if owner_must == OwnerMust::BeActive
        && !TenantProfile::of(&meta).is_ok_and(|p| p.status == TenantStatus::Active)
    {
        return Ok(None);
    }
    let Some(bytes) = r.blob(meta.key, &out_name(share))? else {
        return Ok(None);
    };
    // A share of the owner's that does not decode grants nothing: its damage fails the owner's
    // own listing, not its grantees' searches.
    let stored: StoredShare = match decode_json(&bytes) {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(
                tenant = %owner, share, error = %e,
                "a stored share does not decode; it grants nothing"
            );
            return Ok(None);
        }
    };
    let named = if stored.tenants.contains(scope.tenant()) {
        share_consent::named_state(r, scope.key(), owner, share)?
    } else {
        None
    };
    let child = stored.children && grantee.parent.as_ref() == Some(owner);
    let (via, usable) = match (named, child) {
        (Some(ShareState::Accepted), _) => (GrantVia::Named, true),
        (_, true) => (GrantVia::Children, true),
        (Some(ShareState::Offered), false) => (GrantVia::Named, false),
        (None, false) => return Ok(None),
    };
    let grant = SharedDomain {
        share: stored.id,
        owner: meta.id,
        owner_key: meta.key,
        domain: stored.domain,
        via,
        created_at: stored.created_at,
    };
    Ok(Some(if usable {
        Standing::Usable(grant)
    } else {
        Standing::Offered(grant.incoming(ShareState::Offered))
    }))
}

/// Whether grant `g`, verified earlier, still stands on snapshot `r`, for the same owner
/// incarnation and domain.
fn still_granted(
    r: &impl Reads,
    scope: &TenantScope,
    g: &SharedDomain,
) -> Result<bool, EngineError> {
    Ok(
        match standing(r, scope, &g.owner, &g.share, OwnerMust::BeActive)? {
            Some(Standing::Usable(now)) => now.owner_key == g.owner_key && now.domain == g.domain,
            _ => false,
        },
    )
}

/// The shares of `scope`'s parent that are for children, as (owner, share) candidates.
fn children_candidates(
    r: &impl Reads,
    parent: Option<&TenantId>,
) -> Result<Vec<(TenantId, String)>, EngineError> {
    let mut out = Vec::new();
    if let Some(parent) = parent
        && let Some(meta) = r.tenant(parent)?
    {
        for (name, bytes) in r.blobs_named(meta.key, OUT_PREFIX)? {
            // A share of the parent's that does not decode grants nothing; it fails the
            // parent's own listing, not every child's search.
            match decode_json::<StoredShare>(&bytes) {
                Ok(s) if s.children => out.push((parent.clone(), s.id)),
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    tenant = %parent, share = %name, error = %e,
                    "a stored share does not decode; its children are granted nothing by it"
                ),
            }
        }
    }
    Ok(out)
}

/// Every share `scope`'s tenant stands in, verified one by one, in (owner, share) order:
/// its offers and acceptances by name (`named_prefix` picks which rows to start from) and
/// its grants as a child.
fn standings(
    r: &impl Reads,
    scope: &TenantScope,
    named_prefix: &str,
) -> Result<Vec<Standing>, EngineError> {
    let profile = check_live(r, scope)?;
    let mut candidates = share_consent::named_candidates(r, scope.key(), named_prefix)?;
    candidates.extend(children_candidates(r, profile.parent.as_ref())?);
    candidates.sort();
    candidates.dedup();
    let mut out = Vec::new();
    for (owner, share) in candidates {
        if let Some(g) = verify(r, scope, &owner, &share)? {
            out.push(g);
        }
    }
    Ok(out)
}

/// Every grant `scope`'s tenant may read: the accepted ones and its children's grants. Starts
/// from the acceptance rows, so offers cost a search nothing.
fn live_grants(r: &impl Reads, scope: &TenantScope) -> Result<Vec<SharedDomain>, EngineError> {
    Ok(standings(r, scope, share_consent::ACCEPTED_PREFIX)?
        .into_iter()
        .filter_map(|s| match s {
            Standing::Usable(g) => Some(g),
            Standing::Offered(_) => None,
        })
        .collect())
}

/// The owner-side checks: `admin`, a credential not bound to user tokens (it speaks for
/// principals, not for the tenant), and `domain` within the credential's domains.
fn require_publisher(scope: &TenantScope, domain: Option<&Domain>) -> Result<(), EngineError> {
    let grant = scope.grant();
    if !grant.permissions.has(Permission::Admin) {
        return Err(EngineError::PermissionDenied(Permission::Admin));
    }
    if grant.user_tokens.is_some() {
        return Err(EngineError::ScopeForbidden(
            "a credential bound to user tokens cannot publish or revoke shares".into(),
        ));
    }
    if let (Some(d), Some(bound)) = (domain, &grant.domains)
        && !bound.contains(d)
    {
        return Err(EngineError::ScopeForbidden(format!(
            "memory_domain {d} is outside the credential's domains"
        )));
    }
    Ok(())
}

/// The owner's view of `s`: its named grantees as they stand now. A grantee that declined, or
/// whose incarnation is gone (purged, perhaps re-created under its id), holds no pointer and
/// is left out.
/// The owner's view of a share: every name it offered it to, but those that declined (a
/// decline takes the name off the stored share), whether or not a tenant of that name exists
/// or still does, and which of them accepted.
fn to_share(r: &impl Reads, owner: &TenantId, s: StoredShare) -> Result<Share, EngineError> {
    let mut accepted = Vec::new();
    for t in &s.tenants {
        let Some(m) = r.tenant(t)? else { continue };
        if share_consent::named_state(r, m.key, owner, &s.id)? == Some(ShareState::Accepted) {
            accepted.push(t.clone());
        }
    }
    Ok(Share {
        id: s.id,
        owner: owner.clone(),
        domain: s.domain,
        tenants: s.tenants,
        accepted,
        children: s.children,
        created_at: s.created_at,
    })
}

/// Takes `grantee` off the names of the owner's share `id`, if the owner's incarnation still
/// holds it: the grantee declined, and the owner's listing says so from now on.
pub(crate) fn forget_grantee(
    w: &mut Writer<'_>,
    owner: &TenantId,
    id: &str,
    grantee: &TenantId,
) -> Result<(), EngineError> {
    let Some(meta) = w.tenant(owner)? else {
        return Ok(());
    };
    let Some(bytes) = w.blob(meta.key, &out_name(id))? else {
        return Ok(());
    };
    let mut s: StoredShare = decode_json(&bytes)?;
    s.tenants.retain(|t| t != grantee);
    w.put_blob(meta.key, &out_name(id), &encode_json(&s)?)?;
    Ok(())
}

/// Appends a row to the log of every tenant `s` reaches now: `named_action` for the named
/// grantees holding its pointer row (so a tenant re-created under a grantee's id, which never
/// held the offer, hears nothing of it), `children_action` for the owner's current children
/// (a tenant that is both hears the children's one).
/// When each owner's unanswered offers last wrote a row into each grantee's log, keyed by
/// (owner, grantee, action): an offer is the owner's alone to make, so a tenant offering and
/// revoking shares to another in a loop wrote two rows a turn into a log that is the other's
/// storage, which it cannot stop. The rows of offers the grantee has not accepted are written
/// at most once a minute per key (see `share_read_memo`); those of accepted shares and of
/// children's grants, which change what the grantee reads, always.
pub(crate) type OfferRows = share_read_memo::ReadByMemo<(TenantKey, TenantKey, &'static str)>;

/// Writes a share's row into each grantee's log; returns the keys of the unanswered offers'
/// rows it wrote, for [`OfferRows::wrote`] once the transaction commits. `children` are the
/// owner's children as [`children_now`] found them before the transaction; each is checked
/// again in it.
fn audit_grantees(
    w: &mut Writer<'_>,
    scope: &TenantScope,
    s: &StoredShare,
    children: &[TenantId],
    named_action: &'static str,
    children_action: &'static str,
    (offer_rows, now): (&OfferRows, strata_types::Millis),
) -> Result<Vec<(TenantKey, TenantKey, &'static str)>, EngineError> {
    // (grantee's key, id, action, whether it is an offer the grantee has not accepted)
    let mut reached: Vec<(TenantKey, TenantId, &'static str, bool)> = Vec::new();
    for child in children {
        // Found by a scan before this transaction: still a child now?
        if let Some(m) = w.tenant(child)?
            && crate::hierarchy::names_parent(&m, scope.tenant())
        {
            reached.push((m.key, m.id, children_action, false));
        }
    }
    for t in &s.tenants {
        if let Some(m) = w.tenant(t)? {
            let state = share_consent::named_state(w, m.key, scope.tenant(), &s.id)?;
            if let Some(state) = state {
                let unanswered = state == ShareState::Offered;
                reached.push((m.key, m.id, named_action, unanswered));
            }
        }
    }
    // Stable: a child named too keeps its children's row, pushed first.
    reached.sort_by_key(|(key, ..)| *key);
    reached.dedup_by_key(|(key, ..)| *key);
    let detail = serde_json::json!({"share": s.id, "owner": scope.tenant(), "domain": s.domain});
    let mut remembered = Vec::new();
    for (key, grantee, action, unanswered) in reached {
        if unanswered {
            let memo_key = (scope.key(), key, action);
            if !offer_rows.due(&memo_key, now) {
                continue;
            }
            remembered.push(memo_key);
        }
        audit::append(
            w,
            key,
            foreign_event(scope, Some(grantee), action, detail.clone()),
        )?;
    }
    Ok(remembered)
}

/// An audit row that `scope`'s request writes into another tenant's log (`row_tenant`'s): it
/// names the other side by its tenant alone. The caller's key id or JWT subject, client
/// address and request id are its own tenant's business, and stay in its own log's row.
pub(crate) fn foreign_event(
    scope: &TenantScope,
    row_tenant: Option<TenantId>,
    action: &str,
    detail: serde_json::Value,
) -> audit::AuditEvent {
    audit::AuditEvent {
        tenant: row_tenant,
        actor: format!("tenant:{}", scope.tenant()),
        action: action.to_owned(),
        outcome: "ok".into(),
        client: None,
        request_id: None,
        detail,
    }
}

impl Engine {
    /// The caller's children, when `wanted`, for the audit rows of a share for children: found
    /// by a scan of the registry before the share's write transaction, so that the scan (every
    /// tenant's registry row) does not hold the store's write lock, and every other tenant's
    /// writes, for its length. A tenant that becomes a child meanwhile gets no row, as a child
    /// created after the share gets none; one that stops being a child is checked out in the
    /// transaction.
    fn children_now(
        &self,
        scope: &TenantScope,
        wanted: bool,
    ) -> Result<Vec<TenantId>, EngineError> {
        if !wanted {
            return Ok(Vec::new());
        }
        crate::hierarchy::children(&self.store.read()?, scope.tenant())
    }

    /// Publishes one of the caller's domains read-only (needs `admin`).
    pub fn create_share(&self, scope: &TenantScope, new: &NewShare) -> Result<Share, EngineError> {
        require_publisher(scope, Some(&new.domain))?;
        let mut tenants = new.tenants.clone();
        tenants.sort();
        tenants.dedup();
        // A tenant named twice is a mistake in the request (as in a key's bindings), not two
        // grants.
        if tenants.len() != new.tenants.len() {
            return Err(EngineError::BadRequest(
                "tenants: a tenant is named twice".into(),
            ));
        }
        if tenants.is_empty() && !new.children {
            return Err(EngineError::BadRequest(
                "tenants: name at least one tenant, or set children: true".into(),
            ));
        }
        if tenants.len() > MAX_GRANTEES {
            return Err(EngineError::BadRequest(format!(
                "tenants: at most {MAX_GRANTEES}"
            )));
        }
        if tenants.contains(scope.tenant()) {
            return Err(EngineError::BadRequest(
                "tenants: a tenant cannot share with itself".into(),
            ));
        }
        let children = self.children_now(scope, new.children)?;
        let stored = StoredShare {
            id: format!("sh-{}", uuid::Uuid::now_v7().simple()),
            domain: new.domain.clone(),
            tenants,
            children: new.children,
            created_at: now_millis(),
            created_by: scope.actor().to_owned(),
        };
        self.store
            .write(|w| {
                check_live(w, scope)?;
                let used = w.blobs_named(scope.key(), OUT_PREFIX)?.len();
                if used >= MAX_SHARES {
                    return Err(EngineError::QuotaExceeded {
                        resource: "shares",
                        limit: MAX_SHARES as u64,
                        used: Some(used as u64),
                    });
                }
                // A name that is no live tenant is offered nothing, and the answer (and the
                // owner's listing) is the same as for one that is: which other customers a
                // deployment holds is not a tenant's to learn. Only a tenant's consent, which
                // needs the offer, ever tells the owner that it exists.
                let mut grantees = Vec::with_capacity(stored.tenants.len());
                for t in &stored.tenants {
                    match w.tenant(t)? {
                        // A tenant whose profile does not decode is offered the share as a
                        // live one is: the answer must not tell the two apart.
                        Some(m)
                            if TenantProfile::of(&m)
                                .map_or(true, |p| p.status != TenantStatus::Deleted) =>
                        {
                            grantees.push(m.key);
                        }
                        _ => {}
                    }
                }
                w.put_blob(scope.key(), &out_name(&stored.id), &encode_json(&stored)?)?;
                let pointer = encode_json(&Pointer {
                    owner: scope.tenant().clone(),
                    share: stored.id.clone(),
                })?;
                for key in grantees {
                    w.put_blob(key, &in_name(scope.tenant(), &stored.id), &pointer)?;
                }
                let detail = serde_json::json!({
                    "share": stored.id, "domain": stored.domain,
                    "tenants": stored.tenants, "children": stored.children,
                });
                audit::append(w, scope.key(), tenant_event(scope, "share.create", detail))?;
                let rows = (&self.offer_rows, now_millis());
                let wrote = audit_grantees(
                    w,
                    scope,
                    &stored,
                    &children,
                    "share.offered",
                    "share.granted",
                    rows,
                )?;
                Ok((to_share(w, scope.tenant(), stored.clone())?, wrote, rows.1))
            })
            .map(|(share, wrote, now)| {
                for key in wrote {
                    self.offer_rows.wrote(key, now);
                }
                share
            })
    }

    /// The caller's outgoing shares (needs `admin`; a domain-bound credential sees those of
    /// its domains).
    pub fn shares(&self, scope: &TenantScope) -> Result<Vec<Share>, EngineError> {
        require_publisher(scope, None)?;
        self.read_tenant(scope, Permission::Admin, |r| {
            let mut out = Vec::new();
            for (_, bytes) in r.blobs_named(scope.key(), OUT_PREFIX)? {
                let s: StoredShare = decode_json(&bytes)?;
                let bound = scope.grant().domains.as_ref();
                if bound.is_none_or(|d| d.contains(&s.domain)) {
                    out.push(to_share(r, scope.tenant(), s)?);
                }
            }
            out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
            Ok(out)
        })
    }

    /// Revokes one of the caller's shares (needs `admin`); its grantees' next request sees
    /// nothing of it. A share that is not the caller's is `NotFound`.
    pub fn revoke_share(&self, scope: &TenantScope, id: &str) -> Result<Share, EngineError> {
        require_publisher(scope, None)?;
        // Whether the share is for children decides whether they are looked for; the
        // transaction reads the share again (it may be gone by then: `NotFound` there).
        let for_children = self.read_tenant(scope, Permission::Admin, |r| {
            Ok(match r.blob(scope.key(), &out_name(id))? {
                Some(bytes) => decode_json::<StoredShare>(&bytes)?.children,
                None => false,
            })
        })?;
        let children = self.children_now(scope, for_children)?;
        self.store
            .write(|w| {
                check_live(w, scope)?;
                let bytes = w
                    .blob(scope.key(), &out_name(id))?
                    .ok_or(EngineError::NotFound)?;
                let stored: StoredShare = decode_json(&bytes)?;
                // A share of a domain the credential is not bound to is one it cannot see: it
                // looks missing, as it does in the credential's list of shares.
                if scope
                    .grant()
                    .domains
                    .as_ref()
                    .is_some_and(|bound| !bound.contains(&stored.domain))
                {
                    return Err(EngineError::NotFound);
                }
                require_publisher(scope, Some(&stored.domain))?;
                // Tell the grantees, and answer with who held it, while their pointer rows still
                // say who they are.
                let rows = (&self.offer_rows, now_millis());
                let wrote = audit_grantees(
                    w,
                    scope,
                    &stored,
                    &children,
                    "share.revoked",
                    "share.revoked",
                    rows,
                )?;
                let answer = (to_share(w, scope.tenant(), stored.clone())?, wrote, rows.1);
                w.delete_blob(scope.key(), &out_name(id))?;
                for t in &stored.tenants {
                    if let Some(m) = w.tenant(t)? {
                        share_consent::delete_named(w, m.key, scope.tenant(), id)?;
                    }
                }
                let detail = serde_json::json!({"share": stored.id, "domain": stored.domain});
                audit::append(w, scope.key(), tenant_event(scope, "share.revoke", detail))?;
                Ok(answer)
            })
            .map(|(share, wrote, now)| {
                for key in wrote {
                    self.offer_rows.wrote(key, now);
                }
                share
            })
    }

    /// The live grants and offers the caller's tenant holds (needs `read`).
    pub fn incoming_shares(&self, scope: &TenantScope) -> Result<Vec<IncomingShare>, EngineError> {
        self.read_tenant(scope, Permission::Read, |r| {
            Ok(standings(r, scope, IN_PREFIX)?
                .iter()
                .map(Standing::incoming)
                .collect())
        })
    }

    /// Hits from the granted shared domains `selector` names, for a search of `collection`
    /// by `scope`. Runs inside the caller's engine call, so on the fair-queueing pool in the
    /// grantee's share. A grant whose owner has no collection of that name, or one with
    /// another dimension, metric or embedding model, adds nothing (its scores would not be
    /// comparable). BM25 statistics come from the shared domain's visible records alone.
    /// Each read is audited in both tenants' logs, with counts. `beam_cap`: the searching
    /// tenant's cap on a default graph beam while it sheds load (its search does the work).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn search_shared(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        s: &SearchRequest,
        mode: SearchMode,
        collection: &Collection,
        selector: &SharedSelector,
        beam_cap: Option<usize>,
    ) -> Result<(Vec<SearchHit>, bool), EngineError> {
        let name: &CollectionName = &collection.name;
        let grants = self.read_tenant(scope, Permission::Read, |r| {
            let mut out = Vec::new();
            for g in live_grants(r, scope)? {
                if !selector.selects(&g.share, &g.owner, &g.domain) {
                    continue;
                }
                let comparable = r.collection(g.owner_key, name)?.is_some_and(|c| {
                    c.dim == collection.dim
                        && c.metric == collection.metric
                        && c.embedder == collection.embedder
                });
                // Two grants of one owner's domain (named, and as a child) read it once.
                let seen = out
                    .iter()
                    .any(|o: &SharedDomain| o.owner == g.owner && o.domain == g.domain);
                if comparable && !seen {
                    out.push(g);
                }
            }
            Ok(out)
        })?;
        // Other tenants decide how many grants "all" selects; the work of one search must not
        // be theirs to grow.
        if grants.len() > strata_types::MAX_SHARED_SELECTORS {
            return Err(EngineError::BadRequest(format!(
                "include_shared: selects {} granted domains, at most {} per search; name them",
                grants.len(),
                strata_types::MAX_SHARED_SELECTORS
            )));
        }
        let now = now_millis();
        #[cfg(test)]
        if let Some(hook) = crate::registry::lock(&self.indexes.before_shared_read).take() {
            hook();
        }
        // Shared hits are ranked by relevance alone, like the caller's own in such a search
        // (`check_fields` refuses reranking with `include_shared`).
        let (mut hits, mut exact, mut reads) = (Vec::new(), true, Vec::new());
        for g in &grants {
            let vis = Visibility::shared_domain(g.domain.clone(), req, now);
            // Searched again when an owner's write takes hits out of sight, like the caller's
            // own collection (`crate::search_retry`), against the owner's index.
            let owner = self.indexes.slot(g.owner_key, &g.owner);
            let searched = self.search_until_full(&owner, |extra| {
                self.indexes
                    .with_slot_index(&self.store, g.owner_key, &owner, |ti| {
                        let Some(ci) = ti.collections.get(name) else {
                            return Ok((Searched::empty(mode), false));
                        };
                        // The owner's records, through the verified grant `g`, from a
                        // snapshot begun while its index is held (`crate::hits`). The grant is
                        // verified again on that snapshot: loading the owner's index can take
                        // seconds, and an owner suspended or purged, or a share revoked,
                        // meanwhile shares nothing once the call that stopped it returned.
                        let r = self.store.read()?;
                        if !still_granted(&r, scope, g)? {
                            return Ok((Searched::empty(mode), false));
                        }
                        let stored = StoredRecords::new(&r, g.owner_key, name);
                        let searched = search_collection(
                            ci,
                            name,
                            &vis,
                            s,
                            mode,
                            None,
                            None,
                            Some(&stored),
                            ti.write_pending(),
                            extra,
                            beam_cap,
                        )?;
                        Ok((searched, true))
                    })
            });
            let searched = match searched {
                Ok((searched, true)) => searched,
                Ok((_, false)) => continue,
                // The owner was purged after the grant was verified: its index cannot load,
                // and the grant adds nothing, as it would a moment later.
                Err(EngineError::TenantNotFound(gone)) if gone == g.owner => continue,
                Err(e) => return Err(e),
            };
            let part = searched.response;
            exact &= part.exact;
            reads.push((g, part.hits.len()));
            for mut hit in part.hits {
                // The index holds vectors normalised for its metric, not the owner's stored
                // ones; shared hits carry none.
                if let Some(record) = &mut hit.record {
                    record.vector = None;
                }
                hit.source = Some(Box::new(HitSource {
                    tenant: g.owner.clone(),
                    domain: g.domain.clone(),
                    share: g.share.clone(),
                }));
                hits.push(hit);
            }
        }
        if !reads.is_empty() {
            self.audit_shared_reads(scope, &reads)?;
        }
        Ok((hits, exact))
    }

    /// One row in the grantee's log listing what it used, with hit counts, and one per owner
    /// saying who read its shared domain (at most one a minute per grantee and share), without
    /// them: the hits a grant gave one search say
    /// what the grantee's query was about (an owner with a domain per topic would learn which
    /// topic matched), so the owner learns that its domain was searched, never how it answered.
    ///
    /// Committed, visible at once, but mostly not waited on to be durable: a read
    /// acknowledges no write, so it need not pay for an fsync of its own (it took a search
    /// across a grant from 0.5 to 8 ms on a busy disk). The rows become durable with the next
    /// synced commit of any write, or at a clean close; a crash can lose the read rows of the
    /// last moments, never a mutation's. Every [`SHARED_READ_SYNC_EVERY`]th read waits for
    /// its sync, so on a server that only reads the unsynced rows (and what the storage
    /// engine keeps in memory for unsynced commits) stay bounded.
    fn audit_shared_reads(
        &self,
        scope: &TenantScope,
        reads: &[(&SharedDomain, usize)],
    ) -> Result<(), EngineError> {
        // Decided before the write (whose closure may run again): a grantee searching in a
        // loop writes one `share.read_by` row per share a minute into each owner's log, not
        // one per search (see `share_read_memo`). Its own `share.read` rows stay per search.
        let now = now_millis();
        let memo_key = |g: &SharedDomain| (g.owner_key, scope.key(), g.share.clone());
        let read_by: Vec<bool> = reads
            .iter()
            .map(|(g, _)| self.read_by.due(&memo_key(g), now))
            .collect();
        let ((), pending) = self.store.write_pending(|w| {
            let used: Vec<serde_json::Value> = reads
                .iter()
                .map(|(g, n)| {
                    serde_json::json!({"share": g.share, "owner": g.owner, "domain": g.domain, "hits": n})
                })
                .collect();
            // The grantee may have been purged while it searched: never write into a range
            // that is no longer its incarnation's (the purge's erasure may be over).
            if w.tenant(scope.tenant())?.is_some_and(|m| m.key == scope.key()) {
                audit::append(
                    w,
                    scope.key(),
                    tenant_event(scope, "share.read", serde_json::json!({"used": used})),
                )?;
            }
            for ((g, _), _) in reads.iter().zip(&read_by).filter(|(_, due)| **due) {
                // The owner may have been purged meanwhile: never write into a range that is
                // no longer its incarnation's.
                if w.tenant(&g.owner)?.is_some_and(|m| m.key == g.owner_key) {
                    let detail = serde_json::json!({
                        "share": g.share, "domain": g.domain, "reader": scope.tenant(),
                    });
                    let event =
                        foreign_event(scope, Some(g.owner.clone()), "share.read_by", detail);
                    audit::append(w, g.owner_key, event)?;
                }
            }
            Ok::<_, EngineError>(())
        })?;
        // Remembered only now that the rows are committed: a failed write leaves the next
        // read due.
        for ((g, _), _) in reads.iter().zip(&read_by).filter(|(_, due)| **due) {
            self.read_by.wrote(memo_key(g), now);
        }
        if SHARED_READS
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SHARED_READ_SYNC_EVERY)
        {
            pending.wait_durable()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn share() -> StoredShare {
        StoredShare {
            id: "sh-1".into(),
            domain: Domain::parse("kb").unwrap(),
            tenants: vec![TenantId::parse("team-a").unwrap()],
            children: true,
            created_at: 1_700_000_000_000,
            created_by: "key-1".into(),
        }
    }

    const SHARE_GOLDEN: &str = "017b226964223a2273682d31222c22646f6d61696e223a226b62222c2274656e616e7473223a5b227465616d2d61225d2c226368696c6472656e223a747275652c22637265617465645f6174223a313730303030303030303030302c22637265617465645f6279223a226b65792d31227d";
    const POINTER_GOLDEN: &str = "017b226f776e6572223a226f7267222c227368617265223a2273682d31227d";

    #[test]
    fn stored_formats_are_pinned_and_decode_closed() {
        assert_eq!(hex(&encode_json(&share()).unwrap()), SHARE_GOLDEN);
        let p = Pointer {
            owner: TenantId::parse("org").unwrap(),
            share: "sh-1".into(),
        };
        assert_eq!(hex(&encode_json(&p).unwrap()), POINTER_GOLDEN);
        assert_eq!(
            decode_json::<StoredShare>(&encode_json(&share()).unwrap()).unwrap(),
            share()
        );
        // A field missing, an unknown one, or another format byte: corrupt, never a default.
        for bad in [
            &b"\x01{\"id\":\"sh-1\"}"[..],
            b"\x01{\"owner\":\"org\",\"share\":\"s\",\"x\":1}",
            b"\x07{}",
        ] {
            assert!(check_blob("share:in:org/s", bad).unwrap().is_err());
            assert!(check_blob("share:out:s", bad).unwrap().is_err());
        }
        assert!(check_blob("usage", b"").is_none());
    }
}
