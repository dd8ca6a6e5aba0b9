//! The audit log over HTTP: each kind of event (a mutation, an admin action, an
//! authentication failure, a tenant mismatch, a scope violation) produces exactly one row with
//! actor, client address, request id (the one the response carried) and time; and a tenant's
//! `GET /v1/audit` never shows another tenant's rows.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// The rows of `action` (and `tenant`, if given) the operator sees.
fn rows(server: &Server, action: &str, tenant: Option<&str>) -> Vec<Value> {
    let mut path = format!("/v1/admin/audit?action={action}&limit=1000");
    if let Some(t) = tenant {
        path.push_str(&format!("&tenant={t}"));
    }
    let (s, v) = server.get(&path, OPERATOR_KEY);
    assert_eq!(s, 200, "{v}");
    v["rows"].as_array().expect("rows").clone()
}

/// Exactly one row of `action` carries `request_id`; checks its common fields and returns it.
fn the_row(
    server: &Server,
    action: &str,
    tenant: Option<&str>,
    request_id: &str,
    actor: &str,
) -> Value {
    assert!(!request_id.is_empty(), "the response had no x-request-id");
    let all = rows(server, action, tenant);
    let mine: Vec<&Value> = all
        .iter()
        .filter(|r| r["request_id"] == request_id)
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "{action} rows for request {request_id}: {all:#?}"
    );
    let row = mine[0].clone();
    assert_eq!(row["actor"], actor, "{row}");
    assert_eq!(
        row["tenant"],
        tenant.map_or(Value::Null, |t| json!(t)),
        "{row}"
    );
    let client = row["client"].as_str().unwrap_or("");
    assert!(client.starts_with("127.0.0.1:"), "client address: {row}");
    let at = row["at"].as_i64().unwrap_or(0);
    assert!((now_ms() - 60_000..=now_ms()).contains(&at), "time: {row}");
    row
}

fn key_id(secret: &str) -> String {
    format!("key:{}", secret.split('_').nth(1).expect("key id"))
}

#[test]
fn each_kind_of_event_produces_exactly_one_row_with_its_fields() {
    let server = Server::start();
    server.tenant("acme");
    server.tenant("globex");
    let key = server.key(
        "acme",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    let domain_key = server.key(
        "acme",
        json!({"permissions": ["read"], "domains": ["support"]}),
    );
    let globex = server.key(
        "globex",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );

    // A mutation.
    let (s, v, rid) = server.call_with_id(
        "POST",
        "/v1/memories",
        Some(&key),
        &[],
        Some(&json!({"content": "x"})),
    );
    assert_eq!(s, 201, "{v}");
    let row = the_row(&server, "memory.put", Some("acme"), &rid, &key_id(&key));
    assert_eq!(row["outcome"], "ok");
    assert_eq!(row["detail"]["upserted"], 1, "{row}");

    // An admin action. A client-chosen request id is kept and recorded.
    let (s, v, rid) = server.call_with_id(
        "POST",
        "/v1/admin/tenants/acme/suspend",
        Some(OPERATOR_KEY),
        &[("x-request-id", "ops-ticket-42")],
        None,
    );
    assert_eq!((s, rid.as_str()), (200, "ops-ticket-42"), "{v}");
    the_row(
        &server,
        "tenant.suspend",
        Some("acme"),
        &rid,
        "operator:env",
    );
    let (s, _, rid) = server.call_with_id(
        "POST",
        "/v1/admin/tenants/acme/resume",
        Some(OPERATOR_KEY),
        &[],
        None,
    );
    assert_eq!(s, 200);
    the_row(&server, "tenant.resume", Some("acme"), &rid, "operator:env");

    // Authentication failures: a token that names nothing goes to the server's log; a revoked
    // key of acme's goes to acme's, under its key id. The token itself is never recorded.
    let (s, v, rid) = server.call_with_id("GET", "/v1/memories/list", Some("not-a-key"), &[], None);
    assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"));
    let row = the_row(&server, "auth.failure", None, &rid, "anonymous");
    assert_eq!(row["outcome"], "UNAUTHORIZED");
    let revoked = server.key("acme", json!({}));
    let (s, _) = server.call(
        "DELETE",
        &format!("/v1/admin/keys/{}", &key_id(&revoked)[4..]),
        Some(OPERATOR_KEY),
        &[],
        None,
    );
    assert_eq!(s, 200);
    let (s, _, rid) = server.call_with_id("GET", "/v1/memories/list", Some(&revoked), &[], None);
    assert_eq!(s, 401);
    let row = the_row(
        &server,
        "auth.failure",
        Some("acme"),
        &rid,
        &key_id(&revoked),
    );
    let secret_part = revoked.rsplit('_').next().expect("secret");
    assert!(
        !row.to_string().contains(secret_part),
        "secret in audit row: {row}"
    );

    // A tenant mismatch, filed under the credential's own tenant.
    let (s, v, rid) = server.call_with_id(
        "GET",
        "/v1/memories/list",
        Some(&key),
        &[("x-tenant-id", "globex")],
        None,
    );
    assert_eq!((s, code(&v)), (403, "TENANT_MISMATCH"));
    let row = the_row(
        &server,
        "security.tenant_mismatch",
        Some("acme"),
        &rid,
        &key_id(&key),
    );
    assert_eq!(
        (row["outcome"].as_str(), row["detail"]["route"].as_str()),
        (Some("TENANT_MISMATCH"), Some("/v1/memories/list")),
        "{row}"
    );
    assert!(
        !row.to_string().contains("globex"),
        "the other tenant's name in acme's row: {row}"
    );

    // A scope violation, which the engine detects.
    let (s, v, rid) = server.call_with_id(
        "GET",
        "/v1/memories/list",
        Some(&domain_key),
        &[("x-strata-domain", "billing")],
        None,
    );
    assert_eq!((s, code(&v)), (403, "SCOPE_FORBIDDEN"), "{v}");
    the_row(
        &server,
        "security.scope_forbidden",
        Some("acme"),
        &rid,
        &key_id(&domain_key),
    );

    // A missing permission: a read-only key writing, a tenant's key on an operator route.
    let (s, v, rid) = server.call_with_id(
        "POST",
        "/v1/memories",
        Some(&domain_key),
        &[("x-strata-domain", "support")],
        Some(&json!({"content": "y"})),
    );
    assert_eq!((s, code(&v)), (403, "FORBIDDEN"), "{v}");
    let row = the_row(
        &server,
        "security.permission_denied",
        Some("acme"),
        &rid,
        &key_id(&domain_key),
    );
    assert_eq!(row["outcome"], "FORBIDDEN", "{row}");
    let (s, v, rid) = server.call_with_id("GET", "/v1/admin/tenants", Some(&key), &[], None);
    assert_eq!((s, code(&v)), (403, "FORBIDDEN"), "{v}");
    let row = the_row(
        &server,
        "security.permission_denied",
        Some("acme"),
        &rid,
        &key_id(&key),
    );
    assert_eq!(row["detail"]["route"], "/v1/admin/tenants", "{row}");

    // Reads are not audited, and each event above wrote one row only.
    assert!(rows(&server, "memory.list", None).is_empty());
    assert_eq!(rows(&server, "auth.failure", None).len(), 2);
    assert_eq!(rows(&server, "security.tenant_mismatch", None).len(), 1);
    assert_eq!(rows(&server, "security.permission_denied", None).len(), 2);

    // Filters: time window and limit.
    let (s, v) = server.get(
        &format!("/v1/admin/audit?since={}", now_ms() + 60_000),
        OPERATOR_KEY,
    );
    assert_eq!(
        (s, v["rows"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    let (s, v) = server.get("/v1/admin/audit?limit=2", OPERATOR_KEY);
    assert_eq!(
        (s, v["rows"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{v}"
    );
    let (s, _) = server.get("/v1/admin/audit?limit=0", OPERATOR_KEY);
    assert_eq!(s, 400);
    let (s, _) = server.get("/v1/admin/audit?bogus=1", OPERATOR_KEY);
    assert_eq!(s, 400);

    // globex writes too; each tenant's own view holds only its own rows.
    let (s, _) = server.post(
        "/v1/memories",
        &globex,
        json!({"content": "globex private"}),
    );
    assert_eq!(s, 201);
    let (s, v) = server.get("/v1/audit", &key);
    assert_eq!(s, 200, "{v}");
    let own = v["rows"].as_array().expect("rows");
    assert!(own.iter().all(|r| r["tenant"] == "acme"), "{v}");
    for action in [
        "tenant.create",
        "memory.put",
        "tenant.suspend",
        "tenant.resume",
        "auth.failure",
        "security.tenant_mismatch",
        "security.scope_forbidden",
    ] {
        assert_eq!(
            own.iter().filter(|r| r["action"] == action).count(),
            1,
            "{action}: {v}"
        );
    }
    let (s, v) = server.get("/v1/audit?action=memory.put", &globex);
    assert_eq!(s, 200, "{v}");
    let theirs = v["rows"].as_array().expect("rows");
    assert_eq!(theirs.len(), 1, "{v}");
    assert!(!v.to_string().contains("acme"), "{v}");
    // Reading another tenant's log is refused; reading one's own needs `admin`.
    // A `tenant` naming another is a tenant mismatch, filed in the caller's own log.
    let (s, v) = server.get("/v1/audit?tenant=acme", &globex);
    assert_eq!((s, code(&v)), (403, "TENANT_MISMATCH"), "{v}");
    assert_eq!(
        rows(&server, "security.tenant_mismatch", Some("globex")).len(),
        1
    );
    let (s, v) = server.get("/v1/audit?tenant=globex&action=memory.put", &globex);
    assert_eq!(
        (s, v["rows"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{v}"
    );
    let (s, v) = server.get("/v1/audit", &domain_key);
    assert_eq!((s, code(&v)), (403, "FORBIDDEN"), "{v}");
}

/// A server whose security events are bounded tightly: 20 at once, then one every 2 s.
fn tightly_bounded() -> Server {
    Server::start_with(&[
        ("STRATA__AUDIT__SECURITY_EVENTS_BURST", "20"),
        ("STRATA__AUDIT__SECURITY_EVENTS_PER_SEC", "0.5"),
    ])
}

/// The rows of `action` in one log, split into events written one by one and the number of
/// events the summary rows stand for.
fn written_and_summarised(server: &Server, action: &str, tenant: Option<&str>) -> (usize, u64) {
    let all: Vec<Value> = rows(server, action, tenant)
        .into_iter()
        .filter(|r| r["tenant"] == tenant.map_or(Value::Null, |t| json!(t)))
        .collect();
    let summaries: Vec<&Value> = all
        .iter()
        .filter(|r| r["outcome"] == "SUPPRESSED")
        .collect();
    for s in &summaries {
        assert_eq!(s["actor"], "system:audit", "{s}");
        let text = s["detail"]["message"].as_str().unwrap_or("");
        assert!(
            text.contains(&format!("more {action} events suppressed since")),
            "{s}"
        );
    }
    let summarised = summaries
        .iter()
        .map(|s| s["detail"]["suppressed"].as_u64().expect("count"))
        .sum();
    (all.len() - summaries.len(), summarised)
}

/// The events the bound lets through in `secs`: the burst, the refill, one in flight.
fn bound(secs: f64) -> usize {
    20 + (secs * 0.5).ceil() as usize + 1
}

#[test]
fn unauthenticated_floods_are_recorded_within_bounds_counted_and_summarised() {
    let server = tightly_bounded();
    let started = std::time::Instant::now();
    for _ in 0..2_000 {
        let (s, _) = server.call("GET", "/v1/memories/x", None, &[], None);
        assert_eq!(s, 401);
    }
    let secs = started.elapsed().as_secs_f64();
    let (written, _) = written_and_summarised(&server, "auth.failure", None);
    assert!(
        (20..=bound(secs)).contains(&written),
        "{written} rows for 2000 refusals in {secs:.1} s"
    );
    // The next event a token admits carries the count of everything suppressed before it (or
    // the periodic flush wrote that count first, taking the token, and this event's own count
    // follows with the next flush): either way every event is accounted for, soon.
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    assert_eq!(server.call("GET", "/v1/memories/x", None, &[], None).0, 401);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (written, summarised) = loop {
        let (written, summarised) = written_and_summarised(&server, "auth.failure", None);
        if written as u64 + summarised == 2_001 {
            break (written, summarised);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{written} written and {summarised} summarised of 2001 events"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert!(summarised > 0);
    // The log is bounded alike: one line per row, one summary line per summary row.
    let log = server.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("credential refused"))
        .count();
    assert_eq!(lines, written, "one WARN line per written row");
    assert!(
        log.contains("more auth.failure events suppressed since"),
        "{log}"
    );
    let (s, text) = server.send_raw("GET", "/metrics", OPERATOR_KEY, "text/plain", Vec::new());
    assert_eq!(s, 200);
    assert!(
        text.contains(&format!(
            "strata_security_events_suppressed_total{{action=\"auth.failure\"}} {summarised}\n"
        )),
        "{text}"
    );
}

/// A flood's last count reaches the log without a later event to carry it: the periodic
/// flush writes it once the bucket refills, and a shutdown writes whatever is left.
#[test]
fn suppressed_counts_are_written_without_a_later_event_and_at_shutdown() {
    let mut server = tightly_bounded();
    let flood = |server: &Server| {
        for _ in 0..200 {
            assert_eq!(server.call("GET", "/v1/memories/x", None, &[], None).0, 401);
        }
    };
    flood(&server);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (written, summarised) = written_and_summarised(&server, "auth.failure", None);
        if written as u64 + summarised == 200 {
            assert!(summarised > 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{written} written, {summarised} summarised of 200 after 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // A second flood, then an orderly stop at once: its count is written on the way out.
    flood(&server);
    server.restart();
    let (written, summarised) = written_and_summarised(&server, "auth.failure", None);
    assert_eq!(
        written as u64 + summarised,
        400,
        "every event is accounted for"
    );
}

#[test]
fn a_tenants_log_is_bounded_apart_and_failed_keys_do_not_spend_its_rate() {
    let server = tightly_bounded();
    server.tenant("acme");
    server.limit("acme", json!({"max_qps": 2}));
    let key = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    let id = &key_id(&key)[4..];
    let wrong = format!("sk_{id}_{}", "0".repeat(64));
    let started = std::time::Instant::now();
    for _ in 0..500 {
        let (s, v) = server.get("/v1/memories/list", &wrong);
        assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"));
    }
    let secs = started.elapsed().as_secs_f64();
    let (written, _) = written_and_summarised(&server, "auth.failure", Some("acme"));
    assert!(
        (20..=bound(secs)).contains(&written),
        "{written} rows in acme's log for 500 refusals in {secs:.1} s"
    );
    // The server's own log has its own bucket: an anonymous failure is still written.
    let (_, _, rid) = server.call_with_id("GET", "/v1/memories/list", Some("nope"), &[], None);
    the_row(&server, "auth.failure", None, &rid, "anonymous");
    // So has each key id tried: the flood naming one key hides no try of another.
    let other = server.key("acme", json!({}));
    let other_id = &key_id(&other)[4..];
    let wrong_other = format!("sk_{other_id}_{}", "0".repeat(64));
    let (s, _, rid) =
        server.call_with_id("GET", "/v1/memories/list", Some(&wrong_other), &[], None);
    assert_eq!(s, 401);
    the_row(&server, "auth.failure", Some("acme"), &rid, &key_id(&other));
    // Nobody without acme's key could spend its 2 requests a second.
    let (s, v) = server.get("/v1/memories/list", &key);
    assert_eq!(s, 200, "{v}");
}

/// A summary written late never lands in a later tenant of the same id: the count of
/// failures against a purged tenant's key goes to the server's log.
#[test]
fn a_late_summary_of_a_purged_tenant_goes_to_the_servers_log() {
    let server = tightly_bounded();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read"]}));
    let wrong = format!("sk_{}_{}", &key_id(&key)[4..], "0".repeat(64));
    for _ in 0..100 {
        assert_eq!(server.get("/v1/memories/list", &wrong).0, 401);
    }
    let (s, v) = server.hard_delete("acme");
    assert_eq!(s, 200, "{v}");
    server.tenant("acme");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, summarised) = written_and_summarised(&server, "auth.failure", None);
        if summarised > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no summary after 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        rows(&server, "auth.failure", Some("acme")).is_empty(),
        "the new acme's log holds nothing of the old one's"
    );
}

#[test]
fn creating_and_revoking_keys_write_one_row_each_without_the_secret() {
    let server = Server::start();
    server.tenant("acme");
    let (s, created, rid) = server.call_with_id(
        "POST",
        "/v1/admin/keys",
        Some(OPERATOR_KEY),
        &[],
        Some(&json!({
            "tenant": "acme",
            "permissions": ["read"],
            "user_tokens": ["alice"],
            "domains": ["support"],
        })),
    );
    assert_eq!(s, 201, "{created}");
    let (id, secret) = (
        created["id"].as_str().expect("id"),
        created["key"].as_str().expect("key"),
    );
    // In the key's tenant's log, naming the key, its permissions and its bindings.
    let row = the_row(&server, "key.create", Some("acme"), &rid, "operator:env");
    assert_eq!(row["outcome"], "ok");
    assert_eq!(row["detail"]["key"], id, "{row}");
    assert_eq!(row["detail"]["permissions"], json!(["read"]), "{row}");
    assert_eq!(row["detail"]["user_tokens"], json!(["alice"]), "{row}");
    assert_eq!(row["detail"]["domains"], json!(["support"]), "{row}");
    let (s, v, rid) = server.call_with_id(
        "DELETE",
        &format!("/v1/admin/keys/{id}"),
        Some(OPERATOR_KEY),
        &[],
        None,
    );
    assert_eq!(s, 200, "{v}");
    let row = the_row(&server, "key.revoke", Some("acme"), &rid, "operator:env");
    assert_eq!(row["detail"]["key"], id, "{row}");
    // Revoking again changes nothing and writes nothing.
    let (s, v) = server.call(
        "DELETE",
        &format!("/v1/admin/keys/{id}"),
        Some(OPERATOR_KEY),
        &[],
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(rows(&server, "key.revoke", Some("acme")).len(), 1);

    // An operator key's rows go to the server's log, where the operator's other actions are.
    let (s, created, rid) = server.call_with_id(
        "POST",
        "/v1/admin/keys",
        Some(OPERATOR_KEY),
        &[],
        Some(&json!({"tenant": "*", "permissions": ["admin"]})),
    );
    assert_eq!(s, 201, "{created}");
    let row = the_row(&server, "key.create", None, &rid, "operator:env");
    assert_eq!(row["detail"]["key"], created["id"], "{row}");

    // No row anywhere holds a secret.
    let (s, all) = server.get("/v1/admin/audit?limit=1000", OPERATOR_KEY);
    assert_eq!(s, 200, "{all}");
    let text = all.to_string();
    for secret in [secret, created["key"].as_str().expect("key")] {
        assert!(
            !text.contains(&secret[3..]),
            "a secret in the audit log: {text}"
        );
    }
}

/// A client's request id is kept when it is 1 to 200 visible ASCII characters; any other one
/// (empty, too long, with a space, with bytes outside ASCII) is replaced by a made one, which
/// is the id echoed back and the id of the audit row alike.
#[test]
fn an_unusable_request_id_is_replaced_and_the_audit_row_carries_the_echoed_one() {
    let server = Server::start();
    server.tenant("acme");
    let longest = "r".repeat(200);
    let too_long = "r".repeat(201);
    let http = reqwest::blocking::Client::new();
    let cases: [(&[u8], bool); 6] = [
        (longest.as_bytes(), true),
        (b"ops-ticket-7", true),
        (too_long.as_bytes(), false),
        (b"", false),
        (b"two words", false),
        ("caf\u{e9}-r1".as_bytes(), false),
    ];
    for (round, (sent, kept)) in cases.into_iter().enumerate() {
        let action = if round % 2 == 0 { "suspend" } else { "resume" };
        let res = http
            .post(format!("{}/v1/admin/tenants/acme/{action}", server.url))
            .header("authorization", format!("Bearer {OPERATOR_KEY}"))
            .header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(sent).expect("a header value"),
            )
            .send()
            .expect("request");
        assert_eq!(res.status().as_u16(), 200);
        let echoed: Vec<&str> = res
            .headers()
            .get_all("x-request-id")
            .iter()
            .map(|v| v.to_str().expect("visible ASCII"))
            .collect();
        assert_eq!(echoed.len(), 1, "{echoed:?}");
        let echoed = echoed[0].to_owned();
        if kept {
            assert_eq!(echoed.as_bytes(), sent);
        } else {
            assert_ne!(echoed.as_bytes(), sent);
            assert!(uuid_shaped(&echoed), "a made id: {echoed}");
        }
        the_row(
            &server,
            &format!("tenant.{action}"),
            Some("acme"),
            &echoed,
            "operator:env",
        );
    }
}

fn uuid_shaped(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// A busy log read page by page with each full page's `next` comes out whole: the same rows,
/// in the same order, as one listing of all of them, whatever milliseconds they share.
#[test]
fn paging_with_next_lists_every_row_once() {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key(
        "acme",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    // Four writers at once: rows of one millisecond.
    std::thread::scope(|s| {
        for w in 0..4 {
            let (server, key) = (&server, &key);
            s.spawn(move || {
                for i in 0..15 {
                    let (st, v) = server.post(
                        "/v1/memories",
                        key,
                        json!({"content": format!("writer {w} memory {i}")}),
                    );
                    assert_eq!(st, 201, "{v}");
                }
            });
        }
    });
    let listing = |path: &str, before: Option<&str>, limit: usize| -> Value {
        let mut url = format!("{path}limit={limit}");
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let (st, v) = server.get(
            &url,
            if path.contains("admin") {
                OPERATOR_KEY
            } else {
                &key
            },
        );
        assert_eq!(st, 200, "{v}");
        v
    };
    let ids = |v: &Value| -> Vec<(i64, i64, bool)> {
        v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                let server = r["server_log"].as_bool().unwrap_or(false);
                (
                    r["at"].as_i64().unwrap(),
                    r["seq"].as_i64().unwrap(),
                    server,
                )
            })
            .collect()
    };
    // The operator's whole listing merges the tenant's log with the server's (the operator's
    // own actions), whose positions are counted apart.
    for path in [
        "/v1/audit?",
        "/v1/admin/audit?tenant=acme&",
        "/v1/admin/audit?",
    ] {
        let whole = listing(path, None, 1000);
        assert!(whole.get("next").is_none(), "not a full page: {whole}");
        let mut paged = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let page = listing(path, before.as_deref(), 7);
            paged.extend(ids(&page));
            match page.get("next").and_then(Value::as_str) {
                Some(next) => before = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(paged, ids(&whole), "{path}");
        assert!(paged.len() >= 60, "{}", paged.len());
    }
    let (st, v) = server.get("/v1/audit?before=yesterday", &key);
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("before"), "{v}");
    // A place in another listing (another tenant's, the server's log) is refused, not
    // answered with an empty page.
    for cursor in ["1:1:other", "1:1:acme:s", "1:1::s"] {
        let (st, v) = server.get(&format!("/v1/audit?before={cursor}"), &key);
        assert_eq!(st, 400, "{cursor}: {v}");
        assert!(v.to_string().contains("before: not a place"), "{v}");
    }
}
