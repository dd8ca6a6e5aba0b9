//! The checks after each restart: tenants as their operator left them, every record as its
//! client's acknowledged writes left it, and every way of reading the records agreeing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use std::ops::DerefMut;

use crate::client::{ClientModel, Pending, scope, whole_record_scope};
use crate::common::{OPERATOR_KEY, Server};
use crate::model::{
    COLLECTION, COMMON_WORD, DOMAINS, Failures, Rec, Shared, TENANTS, send_with, tenant_id,
};
use crate::operator::{OperatorModel, export, profile_of};

/// A migration a crash cut short is resumed after the start; this bounds the wait for it.
const SETTLE_WITHIN: Duration = Duration::from_secs(90);
/// How long a cut-short move of a tenant deleted at the restart is left `interrupted` before
/// the operator cancels it (a resumption may still be about to look at it).
const CANCEL_AFTER: Duration = Duration::from_secs(2);

/// What a round's checks saw, for its summary line.
#[derive(Debug, Default)]
pub struct Tally {
    /// Records found, over all tenants.
    pub records: usize,
    /// Unanswered writes found applied, and found not applied.
    pub unanswered_applied: usize,
    pub unanswered_not_applied: usize,
    /// Unanswered record writes sent again with their idempotency keys.
    pub retried: usize,
    /// Tenants whose migration was still under way, or cut short, at the restart.
    pub moves_after_restart: usize,
    /// Cut-short moves of tenants deleted at the restart, cancelled.
    pub moves_cancelled: usize,
    /// Tenants at each isolation level.
    pub levels: BTreeMap<String, usize>,
}

/// `round_began`: when the round's load began, in milliseconds since the epoch; its
/// acknowledged operations' audit rows are looked for from then on.
pub fn after_restart(
    server: &Server,
    keys: &[String],
    clients: &mut [ClientModel],
    operator: &mut OperatorModel,
    shared: &Shared,
    failures: &Failures,
    round_began: u128,
) -> Tally {
    let mut tally = Tally::default();
    // Read at once, while a move the crash cut short may be resuming: nothing writes until
    // the checks are done, so this must be what is read once the move has settled.
    let at_once: Vec<Option<BTreeMap<String, Rec>>> = keys
        .iter()
        .enumerate()
        .map(|(t, key)| {
            let id = tenant_id(t);
            let (s, info) = server.get(&format!("/v1/admin/tenants/{id}"), OPERATOR_KEY);
            (s == 200 && info["status"] == "active").then(|| listed(server, key, &id, failures))
        })
        .collect();
    for t in 0..TENANTS {
        tenant(server, t, operator, failures, &mut tally);
        shared.set_disturbed(t, false);
        *tally
            .levels
            .entry(operator.level[t][0].clone())
            .or_default() += 1;
    }
    audit(server, clients, operator, round_began, failures);
    for new in &operator.created {
        let (s, v) = server.get(&format!("/v1/admin/tenants/{new}"), OPERATOR_KEY);
        if s != 200 || v["status"] != "active" || v["isolation"] != "shared" {
            failures.push(format!("tenant {new}, created with 201, is now {s}: {v}"));
        }
    }
    for (t, key) in keys.iter().enumerate() {
        let mine: Vec<&mut ClientModel> = clients.iter_mut().filter(|c| c.tenant == t).collect();
        let observed = records(server, key, t, mine, failures, &mut tally);
        if let Some(early) = &at_once[t]
            && *early != observed
        {
            let ids = |m: &BTreeMap<String, Rec>| m.keys().cloned().collect::<BTreeSet<_>>();
            failures.push(format!(
                "tenant {}: listed right after the restart, before its moves settled, \
                 {} records ({:?} differ), and {} after",
                tenant_id(t),
                early.len(),
                ids(early)
                    .symmetric_difference(&ids(&observed))
                    .collect::<Vec<_>>(),
                observed.len()
            ));
        }
    }
    tally
}

/// The tenant's status and level are what the operator's answers promised; then it is made
/// active again, and its migration (resumed after the restart) is waited for.
fn tenant(
    server: &Server,
    t: usize,
    operator: &mut OperatorModel,
    failures: &Failures,
    tally: &mut Tally,
) {
    let id = tenant_id(t);
    let (s, info) = server.get(&format!("/v1/admin/tenants/{id}"), OPERATOR_KEY);
    let status = info["status"].as_str().unwrap_or("").to_owned();
    if s != 200 || !operator.status[t].contains(&status.as_str()) {
        failures.push(format!(
            "tenant {id}: status {status:?} ({s}), expected one of {:?}: {info}",
            operator.status[t]
        ));
    }
    let wake = match status.as_str() {
        "suspended" => Some("resume"),
        "deleted" => Some("restore"),
        _ => None,
    };
    if let Some(wake) = wake {
        let path = format!("/v1/admin/tenants/{id}/{wake}");
        let (s, v) = server.post(&path, OPERATOR_KEY, json!({}));
        if !(200..300).contains(&s) {
            failures.push(format!("tenant {id}: {wake} after the restart: {s}: {v}"));
        }
    }
    operator.status[t] = vec!["active"];
    let started = Instant::now();
    let deadline = started + SETTLE_WITHIN;
    let mut first = true;
    let mut cancelled = false;
    let migration = loop {
        let (s, v) = server.get(&format!("/v1/admin/tenants/{id}/migration"), OPERATOR_KEY);
        let state = v["state"].as_str().unwrap_or("");
        if s == 200 && matches!(state, "none" | "done" | "failed" | "cancelled") {
            break v;
        }
        if std::mem::take(&mut first) {
            tally.moves_after_restart += 1;
        }
        // A move cut short while its tenant was deleted is not resumed (the tenant was
        // deleted, so the move is skipped) and stays `interrupted`: the operator cancels it.
        if state == "interrupted"
            && status == "deleted"
            && !cancelled
            && started.elapsed() > CANCEL_AFTER
        {
            cancelled = true;
            tally.moves_cancelled += 1;
            let path = format!("/v1/admin/tenants/{id}/migration");
            let (s, v) = server.call("DELETE", &path, Some(OPERATOR_KEY), &[], None);
            eprintln!("check: tenant {id}: cancelling its cut-short move: {s}: {v}");
            // `409`: a resumption started it meanwhile, past its copy or just starting (then
            // a second cancel stops it); it settles either way.
            if !(200..300).contains(&s) && s != 409 {
                failures.push(format!(
                    "tenant {id}: cancelling its cut-short move: {s}: {v}"
                ));
            }
        }
        if Instant::now() > deadline {
            failures.push(format!(
                "tenant {id}: its migration did not settle within {SETTLE_WITHIN:?}: {s}: {v}"
            ));
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "check: tenant {id} at the restart: {status}, migration {}",
        migration
    );
    if migration["state"] == "failed" {
        failures.push(format!("tenant {id}: its migration failed: {migration}"));
    }
    let (_, info) = server.get(&format!("/v1/admin/tenants/{id}"), OPERATOR_KEY);
    let level = info["isolation"].as_str().unwrap_or("").to_owned();
    let profile = profile_of(&info);
    if !operator.profile[t].contains(&profile) {
        failures.push(format!(
            "tenant {id}: profile {profile}, expected one of {:?}",
            operator.profile[t]
        ));
    }
    operator.profile[t] = vec![profile];
    if cancelled && let Some(from) = migration["from"].as_str() {
        // Cancelled: the tenant stays whole at the level the move started from.
        operator.level[t].push(from.to_owned());
    }
    if !operator.level[t].contains(&level) {
        failures.push(format!(
            "tenant {id}: isolation {level:?}, expected one of {:?} (migration {migration})",
            operator.level[t]
        ));
    }
    operator.level[t] = vec![level];
}

/// Every record of tenant `t` as the server lists it, by id.
fn listed(server: &Server, key: &str, id: &str, failures: &Failures) -> BTreeMap<String, Rec> {
    let mut out = BTreeMap::new();
    for domain in DOMAINS {
        let path = format!("/v1/memories/list?{}", scope(domain));
        let body = json!({"limit": 1000, "include": ["record", "vector"]});
        let (s, v) = server.post(&path, key, body);
        let records = v["records"].as_array().cloned().unwrap_or_default();
        if s != 200 || !v["next"].is_null() {
            failures.push(format!("tenant {id}: list in {domain}: {s}: {v}"));
        }
        for r in &records {
            let rid = r["id"].as_str().unwrap_or("").to_owned();
            match Rec::from_json(r) {
                _ if !rid.starts_with(&format!("{id}-")) => {
                    failures.push(format!("tenant {id}: lists a record not its own: {r}"))
                }
                Some(rec) if rec.domain == domain => {
                    if out.insert(rid.clone(), rec).is_some() {
                        failures.push(format!("tenant {id}: record {rid} is in two domains"));
                    }
                }
                _ => failures.push(format!("tenant {id}: list in {domain} gave {r}")),
            }
        }
    }
    out
}

fn records(
    server: &Server,
    key: &str,
    t: usize,
    clients: Vec<&mut ClientModel>,
    failures: &Failures,
    tally: &mut Tally,
) -> BTreeMap<String, Rec> {
    let id = tenant_id(t);
    let observed = listed(server, key, &id, failures);
    tally.records += observed.len();
    let mut known = BTreeSet::new();
    let mut clients = clients;
    // Unanswered record writes to send again once the checks of what the crash left are done,
    // with whether they were applied before the crash.
    let mut retries: Vec<(usize, bool, Pending)> = Vec::new();
    for (ci, c) in clients.iter_mut().enumerate() {
        if let Some(p) = c.pending.take() {
            let is = |side: &[(String, Option<Rec>)]| {
                side.iter()
                    .all(|(rid, rec)| observed.get(rid) == rec.as_ref())
            };
            // A write that changes nothing reads as both: counted as not applied.
            if is(&p.before) {
                tally.unanswered_not_applied += 1;
            } else if is(&p.after) {
                tally.unanswered_applied += 1;
            } else {
                let now: Vec<(&String, Option<&Rec>)> = p
                    .after
                    .iter()
                    .map(|(rid, _)| (rid, observed.get(rid)))
                    .collect();
                failures.push(format!(
                    "tenant {id}: unanswered {} is half applied: now {now:?}, before {:?}, \
                     after {:?}",
                    p.what, p.before, p.after
                ));
            }
            for (rid, _) in &p.after {
                c.state.insert(rid.clone(), observed.get(rid).cloned());
            }
            let touched: Vec<&String> = p.after.iter().map(|(rid, _)| rid).collect();
            c.links
                .retain(|(s, t), _| !touched.contains(&s) && !touched.contains(&t));
            if p.retry.is_some() {
                retries.push((ci, !is(&p.before), p));
            }
        }
        for (rid, expected) in c.state.iter_mut() {
            known.insert(rid.clone());
            let got = observed.get(rid);
            if got != expected.as_ref() {
                failures.push(format!(
                    "tenant {id}: record {rid}: acknowledged {expected:?}, found {got:?}"
                ));
                *expected = got.cloned();
            }
        }
        links(server, key, &id, c, &observed, failures);
    }
    for rid in observed.keys().filter(|rid| !known.contains(*rid)) {
        failures.push(format!(
            "tenant {id}: record {rid} was never written by a client"
        ));
    }
    gets(server, key, &id, &observed, failures);
    for domain in DOMAINS {
        searches(server, key, &id, domain, &observed, failures);
    }
    totals(server, key, &id, observed.len(), failures);
    let (s, lines) = export(&reqwest_client(), &server.url, &id).unwrap_or_default();
    let exported: BTreeMap<String, Option<Rec>> = lines
        .iter()
        .filter(|l| l["type"] == "record")
        .map(|l| (l["id"].as_str().unwrap_or("").to_owned(), Rec::from_json(l)))
        .collect();
    let wanted: BTreeMap<String, Option<Rec>> = observed
        .iter()
        .map(|(rid, r)| (rid.clone(), Some(r.clone())))
        .collect();
    if s != 200 || exported != wanted {
        failures.push(format!(
            "tenant {id}: export ({s}) has {} records, storage {}: {:?}",
            exported.len(),
            wanted.len(),
            exported
                .keys()
                .collect::<BTreeSet<_>>()
                .symmetric_difference(&wanted.keys().collect())
        ));
    }
    tally.retried += retries.len();
    for (ci, applied, p) in retries {
        retry(
            server,
            key,
            &id,
            clients[ci].deref_mut(),
            applied,
            p,
            failures,
        );
    }
    observed
}

/// Sends an unanswered record write again with its `Idempotency-Key`, as its client would:
/// the answer is a replay exactly when the crash kept the write, and either way the records
/// are then as the write makes them.
fn retry(
    server: &Server,
    key: &str,
    id: &str,
    c: &mut ClientModel,
    applied: bool,
    p: Pending,
    failures: &Failures,
) {
    let Some(r) = &p.retry else { return };
    let url = format!("{}{}", server.url, r.path);
    let answer = send_with(
        &crate::model::http(),
        "POST",
        &url,
        key,
        Some(&r.body),
        &[("idempotency-key", r.key.as_str())],
    );
    match answer {
        Ok((s, _, replayed)) if (200..300).contains(&s) && replayed == applied => {}
        other => failures.push(format!(
            "tenant {id}: {} sent again with its idempotency key after the crash (applied \
             before: {applied}): {other:?}",
            p.what
        )),
    }
    for (rid, rec) in p.after {
        let Some(rec) = rec else { continue };
        let path = format!("/v1/memories/{rid}?{}", whole_record_scope(&rec.domain));
        let (s, v) = server.get(&path, key);
        if s != 200 || Rec::from_json(&v).as_ref() != Some(&rec) {
            failures.push(format!(
                "tenant {id}: {rid} after {} was sent again: {s}: {v}, expected {rec:?}",
                p.what
            ));
        }
        c.state.insert(rid, Some(rec));
    }
}

fn reqwest_client() -> reqwest::blocking::Client {
    crate::model::http()
}

/// Every acknowledged operation of the round left its audit row, naming the request and the
/// action, with the outcome `ok`: a mutation and its row are committed together.
fn audit(
    server: &Server,
    clients: &[ClientModel],
    operator: &OperatorModel,
    since: u128,
    failures: &Failures,
) {
    let mut wanted: BTreeMap<String, Vec<(&str, &str)>> = BTreeMap::new();
    for c in clients {
        for (request_id, action) in &c.audited {
            wanted
                .entry(tenant_id(c.tenant))
                .or_default()
                .push((request_id, action));
        }
    }
    for (tenant, request_id, action) in &operator.audited {
        wanted
            .entry(tenant.clone())
            .or_default()
            .push((request_id, action));
    }
    for (tenant, wanted) in wanted {
        let rows = audit_rows(server, &tenant, since, failures);
        for (request_id, action) in wanted {
            let found = rows.values().any(|r| {
                r["request_id"] == request_id && r["action"] == action && r["outcome"] == "ok"
            });
            if !found {
                let same: Vec<&Value> = rows
                    .values()
                    .filter(|r| r["request_id"] == request_id)
                    .collect();
                failures.push(format!(
                    "tenant {tenant}: acknowledged {action} (request {request_id}) has no audit \
                     row with outcome ok; rows of the request: {same:?}"
                ));
            }
        }
    }
}

/// A tenant's audit rows at or after `since` (ms), by sequence number, page by page.
fn audit_rows(
    server: &Server,
    tenant: &str,
    since: u128,
    failures: &Failures,
) -> BTreeMap<u64, Value> {
    const PAGE: usize = 1000;
    let mut rows = BTreeMap::new();
    let mut until: Option<i64> = None;
    loop {
        let mut path = format!("/v1/admin/audit?tenant={tenant}&since={since}&limit={PAGE}");
        if let Some(until) = until {
            path.push_str(&format!("&until={until}"));
        }
        let (s, v) = server.get(&path, OPERATOR_KEY);
        let page = v["rows"].as_array().cloned().unwrap_or_default();
        if s != 200 {
            failures.push(format!("tenant {tenant}: audit rows: {s}: {v}"));
            return rows;
        }
        let before = rows.len();
        let oldest = page.iter().filter_map(|r| r["at"].as_i64()).min();
        for r in page.iter() {
            rows.insert(r["seq"].as_u64().unwrap_or(u64::MAX), r.clone());
        }
        // The next page ends just after the oldest row's millisecond (`until` is exclusive),
        // so rows sharing it are read again rather than skipped.
        match oldest {
            Some(oldest) if page.len() == PAGE && rows.len() > before => until = Some(oldest + 1),
            _ => return rows,
        }
    }
}

/// `GET` agrees with the listing, record by record: each record in its own domain, and every
/// third one as absent from the other domain.
fn gets(
    server: &Server,
    key: &str,
    id: &str,
    observed: &BTreeMap<String, Rec>,
    failures: &Failures,
) {
    for (i, rid) in observed.keys().enumerate() {
        let rec = &observed[rid];
        for domain in DOMAINS
            .into_iter()
            .filter(|d| *d == rec.domain || i % 3 == 0)
        {
            let path = format!("/v1/memories/{rid}?{}", whole_record_scope(domain));
            let (s, v) = server.get(&path, key);
            let right = if rec.domain == domain {
                s == 200 && Rec::from_json(&v).as_ref() == Some(rec)
            } else {
                s == 404
            };
            if !right {
                failures.push(format!(
                    "tenant {id}: GET {rid} in {domain} ({i}): {s}: {v}, listed as {rec:?}"
                ));
            }
        }
    }
}

/// Exact searches of every mode return exactly the listed records the request may see, with
/// their current content.
fn searches(
    server: &Server,
    key: &str,
    id: &str,
    domain: &str,
    observed: &BTreeMap<String, Rec>,
    failures: &Failures,
) {
    let in_domain = |f: &dyn Fn(&Rec) -> bool| -> BTreeSet<String> {
        observed
            .iter()
            .filter(|(_, r)| r.domain == domain && f(r))
            .map(|(rid, _)| rid.clone())
            .collect()
    };
    let query = vec![0.5f32; crate::model::DIM];
    let all = scope(domain);
    let cases: Vec<(&str, String, Value, BTreeSet<String>)> = vec![
        (
            "vector",
            all.clone(),
            json!({"vector": query, "mode": "vector"}),
            in_domain(&|_| true),
        ),
        (
            "ids only",
            all.clone(),
            json!({"vector": query, "mode": "vector", "include": []}),
            in_domain(&|_| true),
        ),
        (
            "text",
            all.clone(),
            json!({"query": COMMON_WORD, "mode": "text"}),
            in_domain(&|_| true),
        ),
        (
            "hybrid",
            all.clone(),
            json!({"vector": query, "query": COMMON_WORD, "mode": "hybrid"}),
            in_domain(&|_| true),
        ),
        (
            "filtered",
            all.clone(),
            json!({"vector": query, "mode": "vector", "filter": {"tag": 1}}),
            in_domain(&|r| r.metadata["tag"] == 1),
        ),
        (
            "principal",
            format!("memory_domain={domain}&user_tokens=u:bob"),
            json!({"query": COMMON_WORD, "mode": "text"}),
            in_domain(&|r| r.visible_to("u:bob")),
        ),
        (
            "run",
            format!("{all}&run_id=run1"),
            json!({"vector": query, "mode": "vector"}),
            in_domain(&|r| r.run_id.as_deref() == Some("run1")),
        ),
    ];
    for (name, q, mut body, expected) in cases {
        body["modality"] = json!(COLLECTION);
        body["k"] = json!(1000);
        let (s, v) = server.post(&format!("/v1/search?{q}"), key, body.clone());
        let hits = v["hits"].as_array().cloned().unwrap_or_default();
        let got: BTreeSet<String> = hits
            .iter()
            .map(|h| h["id"].as_str().unwrap_or("").to_owned())
            .collect();
        if s != 200 || got != expected || got.len() != hits.len() {
            failures.push(format!(
                "tenant {id}: {name} search in {domain} ({s}): ghosts {:?}, missing {:?}: {v}",
                got.difference(&expected).collect::<Vec<_>>(),
                expected.difference(&got).collect::<Vec<_>>()
            ));
            continue;
        }
        for hit in hits.iter().filter(|_| name != "ids only") {
            let rid = hit["id"].as_str().unwrap_or("");
            let rec = &observed[rid];
            if hit["content"] != rec.content.as_str()
                || hit["metadata"].as_object() != Some(&rec.metadata)
            {
                failures.push(format!(
                    "tenant {id}: {name} search in {domain}: hit {hit} differs from {rec:?}"
                ));
            }
        }
    }
    let (s, v) = server.post(&format!("/v1/memories/count?{all}"), key, json!({}));
    let expected = in_domain(&|_| true).len();
    if s != 200 || v["count"] != expected {
        failures.push(format!(
            "tenant {id}: count in {domain} ({s}): {v}, listed {expected}"
        ));
    }
}

/// The tenant's usage (the operator's view and its own stats) and `verify` count the listed
/// records, and `verify` is clean.
fn totals(server: &Server, key: &str, id: &str, records: usize, failures: &Failures) {
    // Every record has a vector. The operator's view and the tenant's own stats agree.
    for (path, who) in [
        (format!("/v1/admin/tenants/{id}"), OPERATOR_KEY),
        ("/v1/stats".to_owned(), key),
    ] {
        let (s, v) = server.get(&path, who);
        let usage = &v["usage"];
        if s != 200 || usage["records"] != records || usage["vectors"] != records {
            failures.push(format!(
                "tenant {id}: {path} says {} records and {} vectors, listed {records}: {v}",
                usage["records"], usage["vectors"]
            ));
        }
    }
    let (s, v) = server.post(
        &format!("/v1/admin/tenants/{id}/verify"),
        OPERATOR_KEY,
        json!({}),
    );
    if s != 200 || v["ok"] != true || v["records"] != records {
        failures.push(format!(
            "tenant {id}: verify ({s}) is not clean or counts other than {records}: {v}"
        ));
    }
}

/// Each acknowledged link whose ends were not written since is still there, seen from both
/// ends with the weight it was made with, and each acknowledged removal of one still holds.
fn links(
    server: &Server,
    key: &str,
    id: &str,
    c: &ClientModel,
    observed: &BTreeMap<String, Rec>,
    failures: &Failures,
) {
    for ((source, target), made) in &c.links {
        for (end, side, other, other_field) in [
            (source, "outgoing", target, "target"),
            (target, "incoming", source, "source"),
        ] {
            let Some(rec) = observed.get(end) else {
                continue;
            };
            let path = format!("/v1/memories/{end}/links?{}", scope(&rec.domain));
            let (s, v) = server.get(&path, key);
            let found: Vec<&Value> = v[side]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter(|l| l[other_field] == other.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let right = if *made {
                matches!(found.as_slice(), [l] if l["relation"] == "related" && l["weight"] == 0.5)
            } else {
                found.is_empty()
            };
            if s != 200 || !right {
                failures.push(format!(
                    "tenant {id}: link {source} -> {target} acknowledged as {}, {side} links of \
                     {end} ({s}): {v}",
                    if *made { "made" } else { "removed" }
                ));
            }
        }
    }
}

/// No search of this server process dropped a hit on resident state in its defensive re-check
/// (`strata_search_recheck_drops_total`): such a drop is an index that disagrees with storage,
/// which the searches' answers may hide by searching again. `when` names the moment.
pub fn no_recheck_drops(url: &str, failures: &Failures, when: &str) {
    const SERIES: &str = "strata_search_recheck_drops_total ";
    let scraped = crate::model::http()
        .get(format!("{url}/metrics"))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .map_err(|e| e.to_string())
        .and_then(|r| Ok((r.status().as_u16(), r.text().map_err(|e| e.to_string())?)));
    let drops = match &scraped {
        Ok((200, text)) => text
            .lines()
            .find_map(|l| l.strip_prefix(SERIES))
            .and_then(|n| n.trim().parse::<f64>().ok()),
        _ => None,
    };
    if drops != Some(0.0) {
        let answer = scraped.map(|(s, text)| {
            let line = text
                .lines()
                .find(|l| l.starts_with(SERIES))
                .map(str::to_owned);
            (s, line)
        });
        failures.push(format!(
            "{when}: search re-check drops on resident state (an index bug): {answer:?}"
        ));
    }
}
