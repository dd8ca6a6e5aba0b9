//! The audit log: append-only, per tenant.
//!
//! Mutations append their row inside their own transaction, so a write and its audit row are
//! durable together or not at all. Events that change nothing (authentication failures,
//! security events) are appended on their own. Rows of a tenant live under the tenant's
//! storage prefix, so a tenant's rows never show up in another tenant's view, and a hard
//! delete erases them with the rest; events that belong to no registered tenant go to the
//! server's own log, which only operators read.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use strata_auth::{KeyInfo, KeyTenant, OperatorScope, Permission, TenantScope};
use strata_store::codec::{decode_json, encode_json};
use strata_store::{Reads, StoreError, TenantKey, Writer};
use strata_types::{Millis, TenantId, now_millis};

use crate::whole_tenant::{Reach, require_whole_tenant};
use crate::{Engine, EngineError};

/// The most rows one query returns.
pub const MAX_AUDIT_ROWS: usize = 1000;
/// Rows a listing returns when it names no `limit`.
pub const DEFAULT_AUDIT_ROWS: usize = 100;

/// One audit row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRow {
    /// Position in its tenant's log (or the server's).
    #[serde(default)]
    pub seq: u64,
    #[schema(value_type = i64)]
    pub at: Millis,
    pub tenant: Option<TenantId>,
    /// Key id or JWT subject.
    pub actor: String,
    /// What happened, e.g. `memory.put`, `tenant.suspend`, `auth.failure`.
    pub action: String,
    /// `ok`, or the error code that refused it.
    pub outcome: String,
    pub client: Option<String>,
    pub request_id: Option<String>,
    /// Small, action-specific facts (counts, ids); never record content.
    #[serde(default)]
    pub detail: Value,
    /// Set on a row that came with an import: the tenant and actor it named where it was
    /// written. Such a row's `tenant` is the importing tenant and its `actor` is `imported`; it
    /// keeps no client address or request id (see [`AuditRow::imported_into`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportedFrom>,
    /// Set when the row is listed from the server's own log (never stored): the operator's
    /// listing merges it with the tenants' logs, whose positions (`seq`) are counted apart, so
    /// a place in the listing (`AuditCursor`) names the log too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub server_log: bool,
}

/// Who an imported audit row named on the server that wrote it. Kept apart from the row's own
/// `tenant` and `actor`, which always name this server's tenant and identities: a key id of the
/// exported tenant names nothing here, and may one day name someone else's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedFrom {
    /// The tenant the row named where it was written (the exported tenant's id).
    pub tenant: Option<TenantId>,
    /// Its actor there: a key id or JWT subject of that server.
    pub actor: String,
}

/// The actor of every imported row: what it records was done elsewhere, by a credential that
/// does not exist here.
pub(crate) const IMPORTED_ACTOR: &str = "imported";

impl AuditRow {
    /// This row of an export as a row of tenant `into`'s log. What happened, when, how it ended
    /// and its details are kept: they are the history of the imported data. The identities are
    /// not copied as the row's own: the tenant becomes `into`, the actor `imported`, the source
    /// tenant and actor move to `imported` (the first source is kept when a row is imported
    /// again), and the client address and request id, which describe a request to another
    /// server, are dropped.
    pub(crate) fn imported_into(self, into: &TenantId) -> AuditRow {
        let AuditRow {
            at,
            tenant,
            actor,
            action,
            outcome,
            detail,
            imported,
            ..
        } = self;
        AuditRow {
            seq: 0,
            at,
            tenant: Some(into.clone()),
            actor: IMPORTED_ACTOR.to_owned(),
            action,
            outcome,
            client: None,
            request_id: None,
            detail,
            imported: Some(imported.unwrap_or(ImportedFrom { tenant, actor })),
            server_log: false,
        }
    }
}

/// An event to record; `at` and `seq` are filled in.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    pub tenant: Option<TenantId>,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub client: Option<String>,
    pub request_id: Option<String>,
    pub detail: Value,
}

/// Which rows to return.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditQuery {
    /// Operator queries only: one tenant's rows (`*`-less); absent means every log.
    pub tenant: Option<TenantId>,
    pub action: Option<String>,
    /// Rows at or after this time (ms).
    pub since: Option<Millis>,
    /// Rows before this time (ms).
    pub until: Option<Millis>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Only rows after this one in the listing's order: the `next` of the page before, so a
    /// log is read page by page without losing or repeating a row (rows of one millisecond
    /// are told apart by their position, which `until` cannot do).
    #[serde(skip)]
    pub before: Option<AuditCursor>,
}

/// A place in an audit listing, which is ordered newest first by time, then position in its
/// log, then tenant, then log (a tenant's before the server's): `{at}:{seq}`, with
/// `:{tenant}` when the row names one, and `:s` after it for a row of the server's own log
/// (`{at}:{seq}::s` when it names none), as a page's `next` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    at: Millis,
    seq: u64,
    tenant: Option<TenantId>,
    server_log: bool,
}

impl AuditCursor {
    /// Where `row` stands in a listing.
    pub fn of(row: &AuditRow) -> AuditCursor {
        AuditCursor {
            at: row.at,
            seq: row.seq,
            tenant: row.tenant.clone(),
            server_log: row.server_log,
        }
    }

    pub fn parse(s: &str) -> Result<AuditCursor, EngineError> {
        let bad = || {
            EngineError::BadRequest(format!(
                "before: {s:?} is not a page's `next` (at:seq, at:seq:tenant, at:seq:tenant:s)"
            ))
        };
        let mut parts = s.splitn(4, ':');
        let at = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let seq = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let tenant = match parts.next() {
            None | Some("") => None,
            Some(t) => Some(TenantId::parse_field("before", t).map_err(|_| bad())?),
        };
        let server_log = match parts.next() {
            None => false,
            Some("s") => true,
            Some(_) => return Err(bad()),
        };
        Ok(AuditCursor {
            at,
            seq,
            tenant,
            server_log,
        })
    }

    /// The listing's order, newest first: larger keys come first.
    fn key(&self) -> (Millis, u64, &str, bool) {
        (
            self.at,
            self.seq,
            self.tenant.as_ref().map_or("", |t| t.as_str()),
            self.server_log,
        )
    }
}

impl std::fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.at, self.seq)?;
        if self.tenant.is_some() || self.server_log {
            write!(f, ":{}", self.tenant.as_ref().map_or("", |t| t.as_str()))?;
        }
        if self.server_log {
            f.write_str(":s")?;
        }
        Ok(())
    }
}

fn listing_key(row: &AuditRow) -> (Millis, u64, &str, bool) {
    (
        row.at,
        row.seq,
        row.tenant.as_ref().map_or("", |t| t.as_str()),
        row.server_log,
    )
}

impl AuditQuery {
    fn limit(&self) -> Result<usize, EngineError> {
        match self.limit {
            None => Ok(DEFAULT_AUDIT_ROWS),
            Some(n) if (1..=MAX_AUDIT_ROWS).contains(&n) => Ok(n),
            Some(_) => Err(EngineError::BadRequest(format!(
                "limit: must be 1 to {MAX_AUDIT_ROWS}"
            ))),
        }
    }

    fn keeps(&self, row: &AuditRow) -> bool {
        self.action.as_ref().is_none_or(|a| &row.action == a)
            && self.since.is_none_or(|t| row.at >= t)
            && self.until.is_none_or(|t| row.at < t)
            // The cursor's own millisecond and older: the cursor itself is applied once the
            // logs are merged and their copies dropped (`AuditQuery::page`), so a row's copy
            // in the other log cannot come back on a later page.
            && self.before.as_ref().is_none_or(|c| row.at <= c.at)
    }

    /// The listing's page: the rows after the cursor, newest first, at most `limit`.
    fn page(&self, mut rows: Vec<AuditRow>, limit: usize) -> Vec<AuditRow> {
        if let Some(c) = &self.before {
            rows.retain(|row| listing_key(row) < c.key());
        }
        newest(rows, limit)
    }
}

impl AuditEvent {
    fn into_row(self) -> AuditRow {
        self.into_row_at(now_millis())
    }

    fn into_row_at(self, at: Millis) -> AuditRow {
        AuditRow {
            seq: 0,
            at,
            tenant: self.tenant,
            actor: self.actor,
            action: self.action,
            outcome: self.outcome,
            client: self.client,
            request_id: self.request_id,
            detail: self.detail,
            imported: None,
            server_log: false,
        }
    }
}

/// Appends an existing row (from an import, already made this tenant's by
/// [`AuditRow::imported_into`]) to the log under `key`; it gets a new sequence number.
pub(crate) fn append_row(
    w: &mut Writer<'_>,
    key: TenantKey,
    row: &AuditRow,
) -> Result<(), StoreError> {
    w.append_audit(key, &encode_json(row)?)?;
    Ok(())
}

/// Erases the server log's rows about `tenant` (refused credentials and the like), inside the
/// caller's transaction; not the `tenant.purge` rows of earlier tenants of that id, which are
/// the server's to keep as this purge's own is.
pub(crate) fn erase_server_rows_about(
    w: &mut Writer<'_>,
    tenant: &TenantId,
) -> Result<usize, StoreError> {
    w.erase_audit_rows(TenantKey::SERVER, |bytes| {
        let row = decode_json::<AuditRow>(bytes)?;
        Ok(row.tenant.as_ref() == Some(tenant) && row.action != "tenant.purge")
    })
}

/// Appends `event` to the log under `key`, inside the caller's transaction.
pub(crate) fn append(
    w: &mut Writer<'_>,
    key: TenantKey,
    event: AuditEvent,
) -> Result<(), StoreError> {
    w.append_audit(key, &encode_json(&event.into_row())?)?;
    Ok(())
}

/// Appends `event` to the log under `key` and to the server's, inside the caller's
/// transaction: one row, made once, so the two copies are equal in every field (their time
/// too, whichever millisecond each append falls in) and the operator's listing shows it once.
pub(crate) fn append_to_both(
    w: &mut Writer<'_>,
    key: TenantKey,
    event: AuditEvent,
) -> Result<(), StoreError> {
    append_to_both_by(w, key, event, now_millis)
}

/// [`append_to_both`], reading the time from `clock`.
fn append_to_both_by(
    w: &mut Writer<'_>,
    key: TenantKey,
    event: AuditEvent,
    mut clock: impl FnMut() -> Millis,
) -> Result<(), StoreError> {
    let bytes = encode_json(&event.into_row_at(clock()))?;
    w.append_audit(key, &bytes)?;
    w.append_audit(TenantKey::SERVER, &bytes)?;
    Ok(())
}

/// The audit event of a tenant-scoped mutation.
pub(crate) fn tenant_event(scope: &TenantScope, action: &str, detail: Value) -> AuditEvent {
    AuditEvent {
        tenant: Some(scope.tenant().clone()),
        actor: scope.actor().to_owned(),
        action: action.to_owned(),
        outcome: "ok".into(),
        client: scope.context().client.clone(),
        request_id: scope.context().request_id.clone(),
        detail,
    }
}

/// The audit event of an operator action on a tenant.
pub(crate) fn operator_event(op: &OperatorScope, tenant: &TenantId, action: &str) -> AuditEvent {
    AuditEvent {
        tenant: Some(tenant.clone()),
        actor: op.actor().to_owned(),
        action: action.to_owned(),
        outcome: "ok".into(),
        client: op.context().client.clone(),
        request_id: op.context().request_id.clone(),
        detail: Value::Null,
    }
}

/// The audit row of an API key's creation or revocation, written in the change's own
/// transaction by the credential store ([`strata_auth::KeyAudit`]): in the key's tenant's log,
/// or the server's for an operator key, where the operator's other actions are. It names the
/// key's id, permissions and bindings; the key's secret never reaches it.
pub(crate) fn key_audit(
    op: &OperatorScope,
) -> impl Fn(&mut Writer<'_>, &'static str, TenantKey, &KeyInfo) -> Result<(), StoreError> + '_ {
    move |w, action, owner, info| {
        let tenant = match &info.tenant {
            KeyTenant::Tenant(t) => Some(t.clone()),
            KeyTenant::Operator => None,
        };
        let detail = serde_json::json!({
            "key": info.id,
            "name": info.name,
            "permissions": info.permissions,
            "user_tokens": info.user_tokens,
            "domains": info.domains,
            "expires_at": info.expires_at,
            "revoked_at": info.revoked_at,
        });
        let event = AuditEvent {
            tenant,
            actor: op.actor().to_owned(),
            action: action.to_owned(),
            outcome: "ok".into(),
            client: op.context().client.clone(),
            request_id: op.context().request_id.clone(),
            detail,
        };
        append(w, owner, event)
    }
}

/// Calls `f` with each row of `key`'s log, oldest first, reading a page at a time: an export
/// streams a log of any length without holding it.
pub(crate) fn each_row(
    r: &impl Reads,
    key: TenantKey,
    mut f: impl FnMut(AuditRow) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let mut after = 0;
    loop {
        let rows = r.audit_rows(key, after, 1024)?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        after = *last;
        for (seq, bytes) in rows {
            let mut row: AuditRow = decode_json(&bytes)?;
            row.seq = seq;
            row.server_log = key == TenantKey::SERVER;
            f(row)?;
        }
    }
}

/// Adds the server log's `server` rows to the tenants' `rows`, but not a row whose copy is in
/// its tenant's log: an action written to both logs (a level change, a tenant created at a
/// level other than shared) is one action, and the operator's listing shows it once (the
/// tenant's copy). Rows alike in every field but their position are copies (written once by
/// [`append_to_both`], so their times are equal too); nothing else is dropped. A row names its
/// tenant, so a row of one tenant never matches another's.
#[cfg(test)]
fn add_server_rows(rows: &mut Vec<AuditRow>, server: Vec<AuditRow>) {
    let kept = non_copies(rows, server);
    rows.extend(kept);
}

/// The `server` rows that are not copies of one of the tenants' `rows` (see
/// [`add_server_rows`]).
fn non_copies(rows: &[AuditRow], server: Vec<AuditRow>) -> Vec<AuditRow> {
    use std::collections::HashMap;
    let mut by_moment: HashMap<(Millis, &str), Vec<&AuditRow>> = HashMap::new();
    for row in rows.iter() {
        by_moment
            .entry((row.at, row.action.as_str()))
            .or_default()
            .push(row);
    }
    let is_copy = |s: &AuditRow| {
        by_moment
            .get(&(s.at, s.action.as_str()))
            .is_some_and(|same| {
                same.iter().any(|t| {
                    AuditRow {
                        seq: t.seq,
                        server_log: t.server_log,
                        ..s.clone()
                    } == **t
                })
            })
    };
    server.into_iter().filter(|s| !is_copy(s)).collect()
}

/// A row's place in time, action and tenant: what a server row and its copy in a tenant's log
/// share.
type Moment<'a> = (Millis, &'a str, Option<&'a TenantId>);

/// The operator's merged page ([`Engine::audit_rows`]): the newest `limit` rows past the
/// cursor of the tenants' logs (`tenants` offers each of their rows) and of the server's
/// (`server`), a server row listed only when its tenant's log holds no copy of it (see
/// [`add_server_rows`]). Holds a page of each, not the logs: a log keeps every write's row,
/// forever by default, and a listing that held them all before it sorted them could take the
/// server's memory. The server's page is chosen first, so that the tenants' rows at its rows'
/// moments, past the cursor or not, are kept to find the copies among it; a page whose copies
/// leave fewer than `limit` rows is chosen again twice as long (copies are rare: level
/// changes), since an older server row may then belong on the page.
fn merged_page(
    q: &AuditQuery,
    limit: usize,
    mut server: impl FnMut(&mut dyn FnMut(AuditRow)) -> Result<(), EngineError>,
    mut tenants: impl FnMut(&mut dyn FnMut(AuditRow)) -> Result<(), EngineError>,
) -> Result<Vec<AuditRow>, EngineError> {
    let mut server_limit = limit;
    loop {
        let mut server_page = NewestPage::new(q, server_limit);
        server(&mut |row| server_page.offer(row))?;
        let server_rows = server_page.into_rows();
        let whole = server_rows.len() < server_limit;
        let moments: std::collections::HashSet<Moment<'_>> = server_rows
            .iter()
            .filter(|s| s.tenant.is_some())
            .map(|s| (s.at, s.action.as_str(), s.tenant.as_ref()))
            .collect();
        let mut twins = Vec::new();
        let mut page = NewestPage::new(q, limit);
        tenants(&mut |row| {
            let moment = (row.at, row.action.as_str(), row.tenant.as_ref());
            if moments.contains(&moment) && q.keeps(&row) {
                twins.push(row.clone());
            }
            page.offer(row);
        })?;
        drop(moments);
        let kept = non_copies(&twins, server_rows);
        if kept.len() >= limit || whole {
            let mut rows = page.into_rows();
            rows.extend(kept);
            return Ok(q.page(rows, limit));
        }
        server_limit = server_limit.saturating_mul(2);
    }
}

fn newest(mut rows: Vec<AuditRow>, limit: usize) -> Vec<AuditRow> {
    rows.sort_by(|a, b| listing_key(b).cmp(&listing_key(a)));
    rows.truncate(limit);
    rows
}

impl Engine {
    /// What API key changes write with them: their audit rows (see [`key_audit`]). Pass it to
    /// `Authenticator::create_key` and `revoke_key`.
    pub fn key_audit<'a>(
        &self,
        op: &'a OperatorScope,
    ) -> impl Fn(&mut Writer<'_>, &'static str, TenantKey, &KeyInfo) -> Result<(), StoreError> + 'a
    {
        key_audit(op)
    }

    /// Records an event that is not part of a write (authentication failures, security
    /// events). It goes to the tenant's log if the tenant exists, else to the server's.
    pub fn record_audit(&self, event: AuditEvent) -> Result<(), EngineError> {
        self.store.write(|w| {
            let key = match &event.tenant {
                Some(t) => w.tenant(t)?.map_or(TenantKey::SERVER, |m| m.key),
                None => TenantKey::SERVER,
            };
            Ok::<_, EngineError>(append(w, key, event)?)
        })
    }

    /// Operator view: rows of one tenant, or of every tenant and the server, newest first.
    pub fn audit_rows(
        &self,
        _op: &OperatorScope,
        q: &AuditQuery,
    ) -> Result<Vec<AuditRow>, EngineError> {
        let limit = q.limit()?;
        let r = self.store.read()?;
        // Events about one tenant that reached the server log (e.g. after a purge) count in
        // its listing.
        let server = |offer: &mut dyn FnMut(AuditRow)| {
            each_row(&r, TenantKey::SERVER, |row| {
                if q.tenant
                    .as_ref()
                    .is_none_or(|t| row.tenant.as_ref() == Some(t))
                {
                    offer(row);
                }
                Ok(())
            })
        };
        let tenants = |offer: &mut dyn FnMut(AuditRow)| {
            let keys: Vec<TenantKey> = match &q.tenant {
                Some(t) => r.tenant(t)?.map(|m| m.key).into_iter().collect(),
                None => r.tenants()?.into_iter().map(|m| m.key).collect(),
            };
            for key in keys {
                each_row(&r, key, |row| {
                    offer(row);
                    Ok(())
                })?;
            }
            Ok(())
        };
        merged_page(q, limit, server, tenants)
    }

    /// A tenant's own rows, newest first; needs an unbound `admin` credential with
    /// `all_principals`: rows are about every domain and principal and name their record ids
    /// (`crate::whole_tenant`).
    pub fn own_audit_rows(
        &self,
        scope: &TenantScope,
        q: &AuditQuery,
    ) -> Result<Vec<AuditRow>, EngineError> {
        if q.tenant.as_ref().is_some_and(|t| t != scope.tenant()) {
            return Err(EngineError::ScopeForbidden(
                "tenant: a tenant reads only its own audit rows".into(),
            ));
        }
        // A place in another listing (another tenant's rows, the server's log) would page
        // nothing here, silently: said instead.
        if q.before
            .as_ref()
            .is_some_and(|c| c.server_log || c.tenant.as_ref().is_some_and(|t| t != scope.tenant()))
        {
            return Err(EngineError::BadRequest(
                "before: not a place in this tenant's audit listing; pass the `next` of one of \
                 its pages"
                    .into(),
            ));
        }
        require_whole_tenant(
            scope,
            Permission::Admin,
            Reach::EveryPrincipal,
            "reading the audit log",
        )?;
        let limit = q.limit()?;
        self.read_tenant(scope, Permission::Admin, |r| {
            // The page's rows only, not the log: a log keeps every write's row (forever by
            // default), and a page of it held them all before it sorted them.
            let mut page = NewestPage::new(q, limit);
            each_row(r, scope.key(), |row| {
                page.offer(row);
                Ok(())
            })?;
            Ok(page.into_rows())
        })
    }
}

/// One log's page ([`AuditQuery::page`] of its rows that [`AuditQuery::keeps`]), chosen while
/// the log is read: at most `limit` rows held at any time, whatever the log's length. Rows do
/// not come in the listing's order (an imported row keeps its time and takes the next
/// position), so none can be passed over unread.
struct NewestPage<'q> {
    q: &'q AuditQuery,
    limit: usize,
    /// The page so far, its oldest row on top.
    rows: std::collections::BinaryHeap<std::cmp::Reverse<ByListing>>,
}

/// An audit row ordered by its place in a listing ([`listing_key`]).
struct ByListing(AuditRow);

impl PartialEq for ByListing {
    fn eq(&self, other: &Self) -> bool {
        listing_key(&self.0) == listing_key(&other.0)
    }
}

impl Eq for ByListing {}

impl PartialOrd for ByListing {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByListing {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        listing_key(&self.0).cmp(&listing_key(&other.0))
    }
}

impl<'q> NewestPage<'q> {
    fn new(q: &'q AuditQuery, limit: usize) -> Self {
        NewestPage {
            q,
            limit,
            rows: std::collections::BinaryHeap::with_capacity(limit.saturating_add(1)),
        }
    }

    fn offer(&mut self, row: AuditRow) {
        if !self.q.keeps(&row)
            || self
                .q
                .before
                .as_ref()
                .is_some_and(|c| listing_key(&row) >= c.key())
        {
            return;
        }
        let row = std::cmp::Reverse(ByListing(row));
        if self.rows.len() < self.limit {
            self.rows.push(row);
        } else if self.rows.peek().is_some_and(|oldest| row < *oldest) {
            // Newer than the page's oldest (`Reverse`: smaller is newer): it takes its place.
            self.rows.pop();
            self.rows.push(row);
        }
    }

    /// The page, newest first.
    fn into_rows(self) -> Vec<AuditRow> {
        // Ascending `Reverse` order is descending listing order: newest first.
        self.rows
            .into_sorted_vec()
            .into_iter()
            .map(|std::cmp::Reverse(ByListing(row))| row)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A tenant's page chosen while its log is read holds the rows that sorting the whole
        /// log gave: rows out of the listing's order (imported ones), many in one millisecond,
        /// every filter and a cursor.
        #[test]
        fn a_page_chosen_while_reading_is_the_sorted_logs_page(
            ats in proptest::collection::vec(0u64..12, 0..60),
            actions in proptest::collection::vec(any::<bool>(), 60),
            action in proptest::option::of(any::<bool>()),
            since in proptest::option::of(0u64..12),
            until in proptest::option::of(0u64..12),
            cursor in proptest::option::of(0usize..60),
            limit in 1usize..8,
        ) {
            let rows: Vec<AuditRow> = ats
                .iter()
                .enumerate()
                .map(|(i, &at)| {
                    let name = if actions[i] { "memory.put" } else { "memory.delete" };
                    row(i as u64 + 1, 1_000 + at as Millis, name, Value::Null)
                })
                .collect();
            let name = |put: bool| if put { "memory.put" } else { "memory.delete" };
            let q = AuditQuery {
                tenant: None,
                action: action.map(|a| name(a).to_owned()),
                since: since.map(|t| 1_000 + t as Millis),
                until: until.map(|t| 1_000 + t as Millis),
                limit: Some(limit),
                before: cursor.and_then(|i| rows.get(i)).map(AuditCursor::of),
            };
            let sorted = q.page(rows.iter().filter(|r| q.keeps(r)).cloned().collect(), limit);
            let mut page = NewestPage::new(&q, limit);
            for r in rows {
                page.offer(r);
            }
            prop_assert_eq!(page.into_rows(), sorted);
        }
    }

    fn row(seq: u64, at: Millis, action: &str, detail: Value) -> AuditRow {
        AuditRow {
            seq,
            at,
            tenant: Some(TenantId::parse("acme").expect("id")),
            actor: "operator".into(),
            action: action.into(),
            outcome: "ok".into(),
            client: None,
            request_id: Some("r1".into()),
            detail,
            imported: None,
            server_log: false,
        }
    }

    /// A server row older than a copy in the server's page still comes on the page: here, in
    /// one millisecond, the server's copy of a level change (position 1001), a server row of
    /// its own (1000) and the tenant's copy (5). Pages of one list the server's row, then the
    /// level change, each once.
    #[test]
    fn a_copy_in_the_servers_page_does_not_push_an_older_server_row_off_it() {
        let change = |seq, server_log| AuditRow {
            server_log,
            ..row(seq, 7, "tenant.migrate", Value::Null)
        };
        let own = AuditRow {
            server_log: true,
            ..row(1000, 7, "auth.failure", Value::Null)
        };
        let server = [change(1001, true), own.clone()];
        let tenants = [change(5, false)];
        let mut q = AuditQuery::default();
        let mut pages = Vec::new();
        loop {
            let page = merged_page(
                &q,
                1,
                |offer| {
                    server.iter().cloned().for_each(&mut *offer);
                    Ok(())
                },
                |offer| {
                    tenants.iter().cloned().for_each(&mut *offer);
                    Ok(())
                },
            )
            .unwrap();
            let Some(last) = page.last() else { break };
            q.before = Some(AuditCursor::parse(&AuditCursor::of(last).to_string()).unwrap());
            pages.extend(page);
        }
        assert_eq!(pages, vec![own, change(5, false)]);
    }

    /// Paging with each page's `next` lists every row once, in order, as the operator's merged
    /// listing does: even when many rows share a millisecond (which `until`, a time, cannot
    /// split), when two tenants' logs and the server's repeat positions and tenants, and when
    /// a row written to both logs has its server copy at a lower position than its tenant's.
    #[test]
    fn paging_by_cursor_loses_and_repeats_nothing() {
        let mut tenants = Vec::new();
        let mut server = Vec::new();
        for seq in 1..=37u64 {
            for tenant in ["acme", "beta"] {
                let mut r = row(seq, 1000 + (seq / 5) as Millis, "memory.put", Value::Null);
                r.tenant = Some(TenantId::parse(tenant).unwrap());
                tenants.push(r);
            }
            // The server's own rows: some name acme at the very (at, seq) of acme's rows.
            if seq % 3 == 0 {
                let mut r = row(seq, 1000 + (seq / 5) as Millis, "auth.failure", Value::Null);
                r.server_log = true;
                server.push(r);
            }
        }
        // A level change written to both logs: the server's copy at a lower position.
        let migrate = |seq, server_log| AuditRow {
            server_log,
            ..row(
                seq,
                1003,
                "tenant.migrate",
                serde_json::json!({"to": "dedicated"}),
            )
        };
        tenants.push(migrate(500, false));
        server.push(migrate(2, true));
        // Every row held and sorted: what the bounded merge must list.
        let reference = |q: &AuditQuery, limit: usize| {
            let mut rows: Vec<AuditRow> = tenants.iter().filter(|r| q.keeps(r)).cloned().collect();
            let kept = server.iter().filter(|r| q.keeps(r)).cloned().collect();
            add_server_rows(&mut rows, kept);
            q.page(rows, limit)
        };
        let listing = |q: &AuditQuery, limit: usize| {
            let offer_all = |rows: &Vec<AuditRow>| {
                let rows = rows.clone();
                move |offer: &mut dyn FnMut(AuditRow)| {
                    rows.iter().cloned().for_each(&mut *offer);
                    Ok(())
                }
            };
            let page = merged_page(q, limit, offer_all(&server), offer_all(&tenants)).unwrap();
            assert_eq!(
                page,
                reference(q, limit),
                "limit {limit}, before {:?}",
                q.before
            );
            page
        };
        let whole = listing(&AuditQuery::default(), 1000);
        assert_eq!(
            whole.len(),
            tenants.len() + server.len() - 1,
            "the copy is listed once"
        );
        for limit in [1, 4, 7] {
            let mut paged = Vec::new();
            let mut q = AuditQuery::default();
            loop {
                let page = listing(&q, limit);
                let Some(last) = page.last() else { break };
                let next = AuditCursor::of(last).to_string();
                q.before = Some(AuditCursor::parse(&next).unwrap());
                paged.extend(page);
            }
            assert_eq!(paged, whole, "pages of {limit}");
        }
        for (text, cursor) in [
            ("17:3", (17, 3, None, false)),
            ("17:3:acme", (17, 3, Some("acme"), false)),
            ("17:3:acme:s", (17, 3, Some("acme"), true)),
            ("17:3::s", (17, 3, None, true)),
        ] {
            let parsed = AuditCursor::parse(text).unwrap();
            let (at, seq, tenant, server_log) = cursor;
            assert_eq!(
                parsed,
                AuditCursor {
                    at,
                    seq,
                    tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
                    server_log
                }
            );
            assert_eq!(parsed.to_string(), text);
        }
        for bad in [
            "",
            "17",
            "x:3",
            "17:3:no tenant",
            "17:-1",
            "17:3:acme:x",
            "17:3:acme:s:s",
        ] {
            assert!(AuditCursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_row_written_to_both_logs_is_listed_once_and_other_server_rows_stay() {
        let migrate = |seq| {
            row(
                seq,
                10,
                "tenant.migrate",
                serde_json::json!({"to": "partition"}),
            )
        };
        let mut rows = vec![migrate(4)];
        let other_detail = row(
            9,
            10,
            "tenant.migrate",
            serde_json::json!({"to": "dedicated"}),
        );
        let other_moment = row(
            10,
            11,
            "tenant.migrate",
            serde_json::json!({"to": "partition"}),
        );
        let purge = row(11, 12, "tenant.purge", Value::Null);
        add_server_rows(
            &mut rows,
            vec![
                migrate(8),
                other_detail.clone(),
                other_moment.clone(),
                purge.clone(),
            ],
        );
        assert_eq!(rows, vec![migrate(4), other_detail, other_moment, purge]);
    }

    /// The two copies are one row, even when the clock's millisecond turns between the
    /// appends: here a clock that moves at every reading.
    #[test]
    fn a_row_appended_to_both_logs_is_the_same_row_in_each() {
        let dir = tempfile::tempdir().expect("dir");
        let store = strata_store::Store::open(&dir.path().join("db.redb")).expect("store");
        let acme = TenantId::parse("acme").expect("id");
        let key = store
            .write(|w| Ok::<_, StoreError>(w.create_tenant(&acme, 0, Default::default())?.key))
            .expect("tenant");
        let mut ticks = 0;
        let clock = || {
            ticks += 1;
            ticks
        };
        let event = AuditEvent {
            tenant: Some(acme),
            actor: "operator".into(),
            action: "tenant.migrate".into(),
            outcome: "ok".into(),
            client: None,
            request_id: None,
            detail: Value::Null,
        };
        store
            .write(|w| append_to_both_by(w, key, event, clock))
            .expect("append");
        let r = store.read().expect("read");
        let tenant = r.audit_rows(key, 0, 10).expect("rows");
        let server = r.audit_rows(TenantKey::SERVER, 0, 10).expect("rows");
        assert_eq!(tenant.len(), 1);
        assert_eq!(server.len(), 1);
        assert_eq!(tenant[0].1, server[0].1);
        let row: AuditRow = decode_json(&tenant[0].1).expect("row");
        let mut listed = vec![AuditRow {
            seq: 1,
            ..row.clone()
        }];
        add_server_rows(&mut listed, vec![AuditRow { seq: 2, ..row }]);
        assert_eq!(listed.len(), 1, "listed once");
    }
}
