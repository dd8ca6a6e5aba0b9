//! `POST /v1/feedback` and the upkeep of adaptive reranking state: feedback reinforces and
//! exposes pheromones of the caller's (tenant, domain) and moves the narrative vector of the
//! caller's principal there (`Visibility::narrative_principal`); record
//! deletions take their pheromones with them; the retention sweep purges what has decayed;
//! per-namespace figures for the tenant's stats.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use strata_auth::{OperatorScope, Permission, TenantScope};
use strata_store::codec::StoredPheromone;
use strata_store::{AdaptiveItem, AdaptiveReads, Reads, TenantKey, Writer};
use strata_types::{
    AdaptiveNamespaceStats, CollectionName, Domain, FeedbackAnswer, FeedbackRequest, Millis,
    Record, RecordId, RequestScope, check_vector_values, now_millis,
};

use crate::adaptive::Namespace;
use crate::embedding::{embed, embeds, text_collection};
use crate::pheromone_cap::{Owners, beyond_cap, confirm_drops};
use crate::registry::lock;
use crate::tenant_index::Change;
use crate::visibility::Visibility;
use crate::whole_tenant::{Reach, require_whole_tenant};
use crate::{Engine, EngineError};

/// Most ids a feedback may name in `ids` and in `shown`.
pub const MAX_FEEDBACK_IDS: usize = 1000;
/// Longest feedback query, in bytes (as for search).
const MAX_QUERY_BYTES: usize = 4096;

/// What the retention sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdaptiveSweep {
    pub pheromones: u64,
    pub narratives: u64,
}

/// Namespaces whose stored state a write changed behind the cache.
#[derive(Default)]
pub(crate) struct Touched {
    domains: HashSet<Domain>,
    all: bool,
}

fn check_feedback(f: &FeedbackRequest) -> Result<(), EngineError> {
    for (name, list) in [("ids", &f.ids), ("shown", &f.shown)] {
        if list.len() > MAX_FEEDBACK_IDS {
            return Err(EngineError::BadRequest(format!(
                "{name}: at most {MAX_FEEDBACK_IDS} ids"
            )));
        }
    }
    if f.ids.is_empty() && f.shown.is_empty() && f.vector.is_none() && f.query.is_none() {
        return Err(EngineError::BadRequest(
            "ids: feedback needs ids, shown, a vector or a query".into(),
        ));
    }
    if let Some(q) = &f.query
        && q.len() > MAX_QUERY_BYTES
    {
        return Err(EngineError::BadRequest(format!(
            "query: at most {MAX_QUERY_BYTES} bytes"
        )));
    }
    if let Some(v) = &f.vector {
        check_vector_values(v)?;
    }
    Ok(())
}

/// Stale rows of a tenant's adaptive state the sweep deletes in one transaction at most.
const SWEEP_CHUNK: usize = 4096;

impl Engine {
    /// Records feedback in the caller's (tenant, domain): each id in `ids` the caller can see
    /// is reinforced, each id in `shown` (and not in `ids`) the caller can see and that has a
    /// pheromone is exposed, and the context (vector, or embedded query) moves the
    /// collection's narrative vector of the caller's principal, which only searches speaking
    /// for the same principal read. Ids the caller cannot see are ignored exactly like
    /// missing ones, and the answer does not say which were used. Needs `write`: feedback
    /// changes what every search of the namespace ranks first, which a read-only credential
    /// must not be able to steer. One transaction, audited as `adaptive.feedback`.
    pub fn feedback(
        &self,
        scope: &TenantScope,
        req: &RequestScope,
        f: &FeedbackRequest,
    ) -> Result<FeedbackAnswer, EngineError> {
        check_feedback(f)?;
        let now = now_millis();
        let vis = Visibility::resolve(scope, req, Permission::Write, now)?;
        let principal = vis.narrative_principal();
        if principal.is_none() && (f.vector.is_some() || f.query.is_some()) {
            return Err(EngineError::ScopeForbidden(
                "a credential bound to no user tokens speaks for no principal, so it has no \
                 narrative for a feedback's vector or query to move"
                    .into(),
            ));
        }
        let name = f.modality.clone().unwrap_or_else(text_collection);
        let context = match (&f.vector, &f.query) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(q)) => self.embed_context(scope, &name, q)?,
            (None, None) => None,
        };
        let _order = self.adaptive.feedback_order(scope.key(), &vis.domain);
        let held = self.adaptive_namespace(scope, &vis.domain, Permission::Write)?;
        let cfg = &self.config.adaptive;
        let key = scope.key();
        let used: HashSet<&RecordId> = f.ids.iter().collect();
        let (pheromones, owners, dropped, narrative, stale) =
            self.write_tenant_state(scope, "adaptive.feedback", |w| {
                // A collection named is one that exists, with a context or without, as on
                // every route that names one.
                if let Some(m) = &f.modality
                    && w.collection(key, m)?.is_none()
                {
                    return Err(EngineError::CollectionNotFound(m.clone()));
                }
                // The owners of a record the caller sees (the cap groups pheromones by them).
                let sees = |w: &Writer<'_>, id: &RecordId| -> Result<Option<Owners>, EngineError> {
                    Ok(w.record(key, id)?
                        .filter(|r| vis.sees(r))
                        .map(|r| Owners::of(&r.user_tokens)))
                };
                let mut out: BTreeMap<RecordId, StoredPheromone> = BTreeMap::new();
                let mut owners: HashMap<RecordId, Owners> = HashMap::new();
                for id in &used {
                    if out.contains_key(*id) {
                        continue;
                    }
                    if let Some(o) = sees(w, id)? {
                        let old = w.pheromone(key, &vis.domain, id)?;
                        let new = cfg.reinforce(old.as_ref(), now);
                        w.put_pheromone(key, &vis.domain, id, &new, o.tokens())?;
                        out.insert((*id).clone(), new);
                        owners.insert((*id).clone(), o);
                    }
                }
                for id in f.shown.iter().filter(|id| !used.contains(id)) {
                    if out.contains_key(id) {
                        continue;
                    }
                    let Some(o) = sees(w, id)? else { continue };
                    if let Some(old) = w.pheromone(key, &vis.domain, id)? {
                        let new = cfg.expose(&old, now);
                        w.put_pheromone(key, &vis.domain, id, &new, o.tokens())?;
                        out.insert(id.clone(), new);
                        owners.insert(id.clone(), o);
                    }
                }
                // The namespace's mutex only to read what is over the cap (this runs under the
                // tenant's write lock, see `AdaptiveCache::feedback_order`); each pheromone to
                // drop is then confirmed from storage with the mutex released, so searches of
                // the namespace do not wait for those reads.
                let excess = beyond_cap(&lock(&held), &out, &owners, cfg, now);
                let mut memo = strata_store::HiddenMemo::default();
                let dropped = confirm_drops(excess, |id, set| {
                    Ok::<_, EngineError>(
                        w.pheromone(key, &vis.domain, id)?.is_some()
                            && w.record_scope(key, id, &mut memo)?
                                .is_some_and(|r| Owners::of(&r.user_tokens) == *set),
                    )
                })?;
                for id in &dropped {
                    w.delete_pheromone(key, &vis.domain, id)?;
                }
                let mut stale = Vec::new();
                let narrative = match (&context, &principal) {
                    (Some(c), Some(principal)) => {
                        let collection = w
                            .collection(key, &name)?
                            .ok_or_else(|| EngineError::CollectionNotFound(name.clone()))?;
                        if c.len() != collection.dim as usize {
                            return Err(EngineError::BadRequest(format!(
                                "vector: collection {name} has dimension {}, got {}",
                                collection.dim,
                                c.len()
                            )));
                        }
                        // The narrative is a direction (reranking compares by cosine on every
                        // metric): a zero vector has none, refused as a search refuses one.
                        if c.iter().all(|x| *x == 0.0) {
                            return Err(EngineError::BadRequest(
                                "vector: a zero vector has no direction to add to the narrative"
                                    .into(),
                            ));
                        }
                        // The narrative as stored, not as cached: a sweep or a collection's
                        // drop since the namespace was read may have deleted it, and blending
                        // the cached copy would bring it back.
                        let stored = w.narrative(key, &vis.domain, principal, &name)?;
                        let ns = lock(&held);
                        let n = cfg.absorb(stored.as_ref(), c, now);
                        if n.is_some() {
                            stale = ns.stalest_beyond_cap(principal, &name, cfg.max_narratives);
                        }
                        drop(ns);
                        if let Some(n) = &n {
                            w.put_narrative(key, &vis.domain, principal, &name, n)?;
                        }
                        for (p, c) in &stale {
                            w.delete_narrative(key, &vis.domain, p, c)?;
                        }
                        n
                    }
                    // No principal has no context (refused above).
                    _ => None,
                };
                // What was asked, not what it found: the audit log is readable by the
                // tenant's admins, whose own sight may be narrower than this caller's, so
                // it must not tell which of the ids exist either.
                let detail = serde_json::json!({
                    "memory_domain": vis.domain,
                    "ids": f.ids.len(),
                    "shown": f.shown.len(),
                    "narrative": narrative.is_some(),
                });
                Ok(((out, owners, dropped, narrative, stale), detail))
            })?;
        // Committed: the cache follows storage.
        let mut ns = lock(&held);
        ns.pheromones.extend(pheromones);
        for (id, o) in owners {
            ns.owners.insert(id, o);
        }
        for id in dropped {
            ns.pheromones.remove(&id);
            ns.owners.remove(&id);
        }
        let narrative_updated = narrative.is_some();
        if let (Some(n), Some(principal)) = (narrative, principal) {
            ns.set_narrative(principal, name, n);
        }
        for (p, c) in &stale {
            ns.remove_narrative(p, c);
        }
        drop(ns);
        // A deletion or sweep may have dropped this copy meanwhile and a search reloaded the
        // namespace from storage before this commit: drop that copy too, so the next use
        // reads this feedback.
        if !self.adaptive.is_current(key, &vis.domain, &held) {
            self.adaptive.forget(key, &vis.domain);
        }
        Ok(FeedbackAnswer {
            memory_domain: vis.domain.clone(),
            narrative_updated,
        })
    }

    /// The embedded query, when the server's embedder embeds the collection; `None` otherwise
    /// (the feedback then moves no narrative).
    fn embed_context(
        &self,
        scope: &TenantScope,
        name: &CollectionName,
        query: &str,
    ) -> Result<Option<Vec<f32>>, EngineError> {
        let collection = self.read_tenant(scope, Permission::Write, |r| {
            r.collection(scope.key(), name)?
                .ok_or_else(|| EngineError::CollectionNotFound(name.clone()))
        })?;
        let loaded = self.loaded_embedder();
        if !embeds(loaded.as_ref().map(|(_, id)| id), &collection)? {
            return Ok(None);
        }
        let Some((embedder, _)) = loaded else {
            return Ok(None);
        };
        Ok(embed(embedder, &[query])?.pop())
    }

    /// The caller's namespace, loaded from storage through the guarded read door if it is not
    /// in memory.
    pub(crate) fn adaptive_namespace(
        &self,
        scope: &TenantScope,
        domain: &Domain,
        permission: Permission,
    ) -> Result<Arc<Mutex<Namespace>>, EngineError> {
        self.adaptive.get_or_load(scope.key(), domain, || {
            self.read_tenant(scope, permission, |r| load(r, scope.key(), domain))
        })
    }

    /// The adaptive state of the caller's tenant, per namespace (stored, whether loaded or
    /// not), for `GET /v1/stats`.
    pub fn adaptive_stats(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<AdaptiveNamespaceStats>, EngineError> {
        // Every domain's figures: a credential bound to some of them may not read them all.
        // Pheromones are one per record used, private ones included: counting them needs
        // `all_principals`.
        require_whole_tenant(
            scope,
            Permission::Read,
            Reach::EveryPrincipal,
            "reading the adaptive state of every domain",
        )?;
        let rows = self.read_tenant(scope, Permission::Read, |r| {
            Ok(r.adaptive_rows(scope.key(), None)?)
        })?;
        let mut by_domain: BTreeMap<Domain, Vec<AdaptiveItem>> = BTreeMap::new();
        for row in rows {
            by_domain.entry(row.domain).or_default().push(row.item);
        }
        let loaded: HashSet<Domain> = self
            .adaptive
            .loaded(scope.key())
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        Ok(by_domain
            .into_iter()
            .map(|(domain, items)| {
                let ns = Namespace::from_items(items);
                AdaptiveNamespaceStats {
                    loaded: loaded.contains(&domain),
                    memory_domain: domain,
                    narratives: ns.narrative_count() as u64,
                    pheromones: ns.pheromones.len() as u64,
                    bytes: ns.bytes(),
                }
            })
            .collect())
    }

    /// Loaded adaptive namespaces over the server: count, estimated bytes, loads and
    /// evictions since start.
    pub fn adaptive_totals(&self, _op: &OperatorScope) -> (u64, u64, u64, u64) {
        self.adaptive.totals()
    }

    /// The retention sweep's share for adaptive reranking: in every active tenant, deletes
    /// the pheromones decayed below `min_strength` or whose record is gone, and the narratives
    /// not updated for `narrative_retention_secs`, in transactions of at most
    /// [`SWEEP_CHUNK`] rows. A tenant whose sweep fails (a row that does not decode) is logged
    /// and passed over: the others are still swept. Suspended and deleted tenants are left as
    /// they are, as the expiry sweep leaves them.
    pub fn sweep_adaptive(&self, _op: &OperatorScope) -> Result<AdaptiveSweep, EngineError> {
        let now = now_millis();
        let mut total = AdaptiveSweep::default();
        for meta in self.store.read()?.tenants()? {
            match crate::lifecycle::TenantProfile::of(&meta) {
                Ok(p) if p.status == crate::lifecycle::TenantStatus::Active => {}
                _ => continue,
            }
            match self.sweep_adaptive_of(meta.key, now, &mut || {}) {
                Ok(swept) => {
                    total.pheromones += swept.pheromones;
                    total.narratives += swept.narratives;
                }
                Err(e) => {
                    tracing::warn!(tenant = %meta.id, error = %e, "adaptive sweep of a tenant failed; the others are swept");
                }
            }
        }
        Ok(total)
    }

    /// [`Engine::sweep_adaptive`] of one tenant; `between` runs after the read that finds what
    /// is stale and before the transaction that deletes it (tests write there).
    pub(crate) fn sweep_adaptive_of(
        &self,
        key: TenantKey,
        now: Millis,
        between: &mut dyn FnMut(),
    ) -> Result<AdaptiveSweep, EngineError> {
        let cfg = &self.config.adaptive;
        let keep_ms = Millis::try_from(cfg.narrative_retention_secs.saturating_mul(1000))
            .unwrap_or(Millis::MAX);
        let stale = |r: &dyn Fn(&RecordId) -> Result<bool, EngineError>,
                     item: &AdaptiveItem|
         -> Result<bool, EngineError> {
            Ok(match item {
                AdaptiveItem::Pheromone(id, p, _) => {
                    cfg.strength_at(p, now) < cfg.min_strength || !r(id)?
                }
                AdaptiveItem::Narrative(_, _, n) => now.saturating_sub(n.updated_at) > keep_ms,
            })
        };
        let doomed = {
            let r = self.store.read()?;
            let exists = |id: &RecordId| Ok(r.record(key, id)?.is_some());
            let mut doomed = Vec::new();
            for row in r.adaptive_rows(key, None)? {
                if stale(&exists, &row.item)? {
                    doomed.push(row);
                }
            }
            doomed
        };
        if doomed.is_empty() {
            return Ok(AdaptiveSweep::default());
        }
        between();
        // Each row found stale above is read again, as it is now, in the transaction that
        // deletes it: feedback may have reinforced it (or its record come back) meanwhile,
        // and that feedback was answered as kept. Chunked, so that a tenant with a great deal
        // of stale state does not hold the store's write lock, and every other tenant's
        // writes, for the whole of it.
        let mut swept = AdaptiveSweep::default();
        for chunk in doomed.chunks(SWEEP_CHUNK) {
            let s = self.store.write(|w| {
                let mut s = AdaptiveSweep::default();
                for row in chunk {
                    let current = match &row.item {
                        AdaptiveItem::Pheromone(id, ..) => w
                            .pheromone(key, &row.domain, id)?
                            .map(|p| AdaptiveItem::Pheromone(id.clone(), p, None)),
                        AdaptiveItem::Narrative(p, c, _) => w
                            .narrative(key, &row.domain, p, c)?
                            .map(|n| AdaptiveItem::Narrative(p.clone(), c.clone(), n)),
                    };
                    let still = match &current {
                        Some(current) => {
                            let exists = |id: &RecordId| Ok(w.record(key, id)?.is_some());
                            stale(&exists, current)?
                        }
                        None => false,
                    };
                    if !still {
                        continue;
                    }
                    match &row.item {
                        AdaptiveItem::Pheromone(id, ..) => {
                            s.pheromones += u64::from(w.delete_pheromone(key, &row.domain, id)?);
                        }
                        AdaptiveItem::Narrative(p, c, _) => {
                            s.narratives +=
                                u64::from(w.delete_narrative(key, &row.domain, p, c)?);
                        }
                    }
                }
                Ok::<_, EngineError>(s)
            })?;
            // After each chunk that deleted something, not once at the end: a later chunk's
            // failure must not leave the loaded namespaces serving rows already deleted.
            if s.pheromones + s.narratives > 0 {
                self.adaptive.forget_tenant(key);
            }
            swept.pheromones += s.pheromones;
            swept.narratives += s.narratives;
        }
        Ok(swept)
    }

    /// After a committed write: drop the namespaces whose stored state it changed.
    pub(crate) fn adaptive_forget(&self, key: TenantKey, touched: &Touched) {
        if touched.all {
            self.adaptive.forget_tenant(key);
        } else {
            for d in &touched.domains {
                self.adaptive.forget(key, d);
            }
        }
    }
}

/// Reads one namespace from storage, with the owners of each pheromone's record: stored with
/// the pheromone, or for one stored before they were kept (format 1), read from its record
/// (by its scope fields alone); such a pheromone whose record is gone (the sweep removes it)
/// has none, and counts toward no owner set's cap.
fn load(r: &impl Reads, key: TenantKey, domain: &Domain) -> Result<Namespace, EngineError> {
    let rows = r.adaptive_rows(key, Some(domain))?;
    let mut ns = Namespace::from_items(rows.into_iter().map(|row| row.item));
    let mut memo = strata_store::HiddenMemo::default();
    for id in ns.pheromones.keys() {
        if ns.owners.get(id).is_none()
            && let Some(rec) = r.record_scope(key, id, &mut memo)?
        {
            ns.owners.insert(id.clone(), Owners::of(&rec.user_tokens));
        }
    }
    Ok(ns)
}

/// Inside a record write's transaction: removed records take their pheromones with them, and
/// a dropped collection its narratives. Fills `touched` with the namespaces to drop from
/// memory once the write commits.
pub(crate) fn forget_removed(
    w: &mut Writer<'_>,
    key: TenantKey,
    changes: &[Change],
    touched: &mut Touched,
) -> Result<(), EngineError> {
    let mut dropped: Vec<&CollectionName> = Vec::new();
    // The last write of each id: a batch may write one id twice. Looked up once per removed
    // record, so built once (a batch replacing a thousand records would otherwise scan its
    // changes a thousand times inside the transaction).
    let mut last_writes: Option<HashMap<&RecordId, &Record>> = None;
    for c in changes {
        match c {
            Change::Remove(removed) => {
                let r = &removed.record;
                // A record replaced in place (a patch, an upsert, evidence) keeps what feedback
                // taught about it; one deleted, or moved to another domain, leaves it behind.
                // So does one an expired record's id was written over: that write creates a
                // record (its own `created_at`), which learns from scratch.
                let last = last_writes.get_or_insert_with(|| {
                    let mut last = HashMap::new();
                    for c in changes {
                        if let Change::Upsert { record, .. } = c {
                            last.insert(&record.id, record);
                        }
                    }
                    last
                });
                let replaced = last
                    .get(&r.id)
                    .copied()
                    .filter(|u| u.memory_domain == r.memory_domain && u.created_at == r.created_at);
                crate::links::forget_run_tail(w, key, r, last.get(&r.id).copied())?;
                match replaced {
                    None => {
                        if w.delete_pheromone(key, &r.memory_domain, &r.id)? {
                            touched.domains.insert(r.memory_domain.clone());
                        }
                    }
                    // New owners move its pheromone to another owner set's cap: the loaded
                    // namespace reloads them.
                    Some(u) if Owners::of(&u.user_tokens) != Owners::of(&r.user_tokens) => {
                        if let Some(p) = w.pheromone(key, &r.memory_domain, &r.id)? {
                            w.put_pheromone(key, &r.memory_domain, &r.id, &p, &u.user_tokens)?;
                            touched.domains.insert(r.memory_domain.clone());
                        }
                    }
                    Some(_) => {}
                }
            }
            Change::DropCollection(name) => dropped.push(name),
            Change::Upsert { .. } => {}
        }
    }
    if !dropped.is_empty() {
        for row in w.adaptive_rows(key, None)? {
            match &row.item {
                AdaptiveItem::Narrative(p, c, _) if dropped.contains(&c) => {
                    w.delete_narrative(key, &row.domain, p, c)?;
                    touched.all = true;
                }
                // The dropped collection's records went without one `Remove` each: their
                // pheromones go here, so a later record under the same id starts afresh.
                AdaptiveItem::Pheromone(id, ..) if w.record(key, id)?.is_none() => {
                    w.delete_pheromone(key, &row.domain, id)?;
                    touched.all = true;
                }
                _ => {}
            }
        }
    }
    Ok(())
}
