//! Tenant lifecycle and quotas over HTTP against the real binary: suspend and resume (API keys
//! and JWTs alike, on every data route of the route table), soft delete, restore and purge,
//! hard delete, and a quota race of concurrent writers.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::table::{concrete, data_routes, valid_body};
use common::{HS_SECRET, OPERATOR_KEY, Server, code};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const ALL: &[&str] = &["read", "write", "admin", "all_principals"];

fn jwt(tenant: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let claims =
        json!({"tenant": tenant, "sub": "svc", "permissions": ALL, "exp": now + 600, "iat": now});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .expect("sign jwt")
}

/// A key of `acme` that may only read: refused by the admin routes while its tenant is live.
fn read_only_key(server: &Server) -> String {
    server.key("acme", json!({ "permissions": ["read"] }))
}

/// A tenant `acme` holding record `a-rec` and collection `a-coll`; returns its key and a JWT.
fn seeded(server: &Server) -> (String, String) {
    server.tenant("acme");
    let key = server.key("acme", json!({ "permissions": ALL }));
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "a-rec", "content": "acme keeps this"}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post("/v1/collections", &key, json!({"name": "a-coll", "dim": 4}));
    assert_eq!(s, 201, "{v}");
    (key, jwt("acme"))
}

fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> Value {
    let (s, v) = server.call(method, path, Some(OPERATOR_KEY), &[], body.as_ref());
    assert_eq!(s, 200, "{method} {path}: {v}");
    v
}

/// Every data route in the route table, with each credential, answers `(status, code)`.
fn every_data_route_answers(server: &Server, creds: &[&str], status: u16, expect: &str) {
    for (method, path, _) in data_routes() {
        let p = concrete(path);
        for cred in creds {
            let body = valid_body(method, path);
            let (s, v) = server.call(method, &p, Some(cred), &[], body.as_ref());
            assert_eq!((s, code(&v)), (status, expect), "{method} {p}: {v}");
        }
    }
}

fn reads_back(server: &Server, cred: &str) {
    let (s, v) = server.get("/v1/memories/a-rec", cred);
    assert_eq!(
        (s, v["content"].as_str()),
        (200, Some("acme keeps this")),
        "{v}"
    );
}

#[test]
fn suspended_keys_and_jwts_can_do_nothing_until_resumed() {
    let server = Server::start();
    let (key, token) = seeded(&server);
    let reader = read_only_key(&server);
    reads_back(&server, &token);
    let v = admin(&server, "POST", "/v1/admin/tenants/acme/suspend", None);
    assert_eq!(v["status"], "suspended", "{v}");
    // The tenant's state first, whatever the credential may do.
    every_data_route_answers(&server, &[&key, &token, &reader], 403, "TENANT_SUSPENDED");
    // The operator still sees it, and its data is kept.
    let v = admin(&server, "GET", "/v1/admin/tenants/acme", None);
    assert_eq!(
        (v["status"].as_str(), v["usage"]["records"].as_u64()),
        (Some("suspended"), Some(1))
    );

    let v = admin(&server, "POST", "/v1/admin/tenants/acme/resume", None);
    assert_eq!(v["status"], "active", "{v}");
    reads_back(&server, &key);
    reads_back(&server, &token);
    let (s, v) = server.post("/v1/search", &token, json!({"query": "keeps"}));
    assert_eq!(
        (s, v["hits"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{v}"
    );
    let (s, v) = server.post("/v1/memories", &key, json!({"content": "after resume"}));
    assert_eq!(s, 201, "{v}");
}

#[test]
fn a_suspension_survives_a_soft_delete_and_restore() {
    let server = Server::start();
    let (key, token) = seeded(&server);
    admin(&server, "POST", "/v1/admin/tenants/acme/suspend", None);
    let v = admin(&server, "DELETE", "/v1/admin/tenants/acme", None);
    assert_eq!(v["status"], "deleted", "{v}");
    // A second delete must not forget what the first one found.
    admin(&server, "DELETE", "/v1/admin/tenants/acme", None);
    // Restore brings back the status the delete found, not `active`: restoring is no way to
    // lift a suspension.
    let v = admin(&server, "POST", "/v1/admin/tenants/acme/restore", None);
    assert_eq!(
        (v["status"].as_str(), &v["deleted_at"]),
        (Some("suspended"), &Value::Null),
        "{v}"
    );
    every_data_route_answers(&server, &[&key, &token], 403, "TENANT_SUSPENDED");
    let v = admin(&server, "POST", "/v1/admin/tenants/acme/resume", None);
    assert_eq!(v["status"], "active", "{v}");
    reads_back(&server, &key);

    // An active tenant deleted and restored is active again.
    admin(&server, "DELETE", "/v1/admin/tenants/acme", None);
    let v = admin(&server, "POST", "/v1/admin/tenants/acme/restore", None);
    assert_eq!(v["status"], "active", "{v}");
    reads_back(&server, &token);
}

#[test]
fn soft_deleted_tenants_are_hidden_restorable_and_purged() {
    let server = Server::start();
    let (key, token) = seeded(&server);
    let reader = read_only_key(&server);
    let v = admin(&server, "DELETE", "/v1/admin/tenants/acme", None);
    assert_eq!(v["status"], "deleted", "{v}");
    assert!(v["deleted_at"].is_number(), "{v}");
    // Hidden: the credential still authenticates, but its tenant reads as missing, the same
    // `404 NOT_FOUND` on every data route, for keys and JWTs, a read-only key on the admin
    // routes too (not the 403 its permissions would give a live tenant's).
    every_data_route_answers(&server, &[&key, &token, &reader], 404, "NOT_FOUND");
    // Suspending or resuming a deleted tenant does not bring it back: it exists (deleted), so
    // not 404 but 409, naming the restore.
    for action in ["resume", "suspend"] {
        let (s, v) = server.post(
            &format!("/v1/admin/tenants/acme/{action}"),
            OPERATOR_KEY,
            json!({}),
        );
        assert_eq!((s, code(&v)), (409, "CONFLICT"), "{action}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("restore it first"), "{message}");
    }
    // Nor is a key minted for it: it would work only after a restore.
    let (s, v) = server.post(
        "/v1/admin/keys",
        OPERATOR_KEY,
        json!({"tenant": "acme", "permissions": ["read"]}),
    );
    assert_eq!((s, code(&v)), (409, "CONFLICT"), "{v}");
    // Nor a successor by rotation, which would also revoke the old key.
    let (s, v) = server.get("/v1/admin/keys?tenant=acme", OPERATOR_KEY);
    assert_eq!(s, 200, "{v}");
    let key_id = v["keys"][0]["id"]
        .as_str()
        .expect("a key of acme")
        .to_owned();
    let (s, v) = server.post(
        &format!("/v1/admin/keys/{key_id}/rotate"),
        OPERATOR_KEY,
        json!({"grace_secs": 0}),
    );
    assert_eq!((s, code(&v)), (409, "CONFLICT"), "{v}");

    // Within the retention period nothing is purged, and restore brings everything back.
    let v = admin(
        &server,
        "POST",
        "/v1/admin/tenants/purge-deleted",
        Some(json!({"retention_secs": 3600})),
    );
    assert_eq!(v["purged"], json!([]), "{v}");
    let v = admin(&server, "POST", "/v1/admin/tenants/acme/restore", None);
    assert_eq!(
        (v["status"].as_str(), &v["deleted_at"]),
        (Some("active"), &Value::Null)
    );
    reads_back(&server, &key);
    reads_back(&server, &token);

    // Deleted again and past retention (0): purged for good, and its credentials are dead.
    admin(&server, "DELETE", "/v1/admin/tenants/acme", None);
    let v = admin(
        &server,
        "POST",
        "/v1/admin/tenants/purge-deleted",
        Some(json!({"retention_secs": 0})),
    );
    assert_eq!(v["purged"], json!(["acme"]), "{v}");
    for cred in [&key, &token] {
        let (s, v) = server.get("/v1/memories/a-rec", cred);
        assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"), "{v}");
    }
    let (s, _) = server.get("/v1/admin/tenants/acme", OPERATOR_KEY);
    assert_eq!(s, 404);
    let (s, _) = server.post("/v1/admin/tenants/acme/restore", OPERATOR_KEY, json!({}));
    assert_eq!(s, 404);
}

#[test]
fn the_server_sweeps_tenants_past_retention_by_itself() {
    let server = Server::start_with(&[
        ("STRATA__SERVER__RETENTION_SECS", "0"),
        ("STRATA__SERVER__PURGE_INTERVAL_SECS", "1"),
    ]);
    server.tenant("acme");
    server.tenant("kept");
    admin(&server, "DELETE", "/v1/admin/tenants/acme", None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.get("/v1/admin/tenants/acme", OPERATOR_KEY).0 != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep never purged acme"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(server.get("/v1/admin/tenants/kept", OPERATOR_KEY).0, 200);
    let (s, v) = server.get("/v1/admin/audit?action=tenant.purge", OPERATOR_KEY);
    assert_eq!(
        (s, v["rows"][0]["actor"].as_str()),
        (200, Some("system:retention")),
        "{v}"
    );
}

/// The files under `dir` holding `needle`. The server's background work (index saves, a
/// vacuum) writes temporary files and renames or removes them meanwhile: one gone between the
/// listing and its read held nothing that stays.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut hits = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if gone(&e) => return hits,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if gone(&e) => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(path.display().to_string());
        }
    }
    hits
}

#[test]
fn hard_delete_erases_every_byte_at_once_and_for_good() {
    const CANARY: &str = "CANARY-http-4d1e-only-acme-wrote-this";
    let mut server = Server::start();
    // The canary goes into everything an operator or the tenant can store for it: display
    // name, tenant metadata, key names, record content and metadata, collection names, audit rows.
    let (s, v) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({
            "id": "acme",
            "display_name": format!("{CANARY} Inc."),
            "metadata": {"note": CANARY},
        }),
    );
    assert_eq!(s, 201, "{v}");
    let key = server.key(
        "acme",
        json!({"permissions": ALL, "name": format!("{CANARY} key")}),
    );
    server.key(
        "acme",
        json!({"permissions": ["read"], "name": format!("{CANARY} spare")}),
    );
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"content": CANARY, "metadata": {"note": CANARY}, "run_id": "r1"}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post(
        "/v1/collections",
        &key,
        json!({"name": format!("c-{}", &CANARY[..20]), "dim": 4}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, _) = server.post("/v1/search", &key, json!({"query": "canary"}));
    assert_eq!(s, 200);
    // A refused attempt with a wrong secret for acme's key leaves a security row about acme.
    let forged = format!("{}{}", &key[..key.len() - 4], "0000");
    assert_eq!(server.get("/v1/memories/list", &forged).0, 401);
    server.tenant("globex");
    let data = server.dir.path().join("data");
    assert!(!files_containing(&data, CANARY.as_bytes()).is_empty());

    let (s, v) = server.hard_delete("acme");
    // No read was in flight: the data file was rewritten before the answer.
    assert_eq!(
        (s, &v),
        (
            200,
            &json!({"id": "acme", "purged": true, "erasure": "done"})
        )
    );
    let stats = admin(&server, "GET", "/v1/admin/stats", None);
    assert_eq!(stats["vacuums"]["erasure_pending"], json!(false), "{stats}");
    assert!(stats["vacuums"]["runs"].as_u64() >= Some(1), "{stats}");
    let purge = admin(&server, "GET", "/v1/admin/audit?action=tenant.purge", None);
    let detail = &purge["rows"][0]["detail"];
    assert_eq!(detail["records"], json!(1), "{purge}");
    assert!(detail["storage_bytes"].as_u64() > Some(0), "{purge}");
    let (s, v) = server.get("/v1/memories/list", &key);
    assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"), "{v}");
    let (s, _) = server.get("/v1/admin/tenants/acme", OPERATOR_KEY);
    assert_eq!(s, 404);
    // Its keys are gone with it, and the tenant is no more: its listing is 404.
    let v = admin(&server, "GET", "/v1/admin/keys", None);
    let keys = v["keys"].as_array().expect("keys");
    assert!(keys.iter().all(|k| k["tenant"] != "acme"), "{v}");
    let (s, v) = server.get("/v1/admin/keys?tenant=acme", OPERATOR_KEY);
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
    let needle = &CANARY.as_bytes()[..20];
    let left = files_containing(&data, needle);
    assert!(
        left.is_empty(),
        "canary bytes remain after hard delete: {left:?}"
    );
    server.stop();
    let left = files_containing(&data, needle);
    assert!(
        left.is_empty(),
        "canary bytes remain after shutdown: {left:?}"
    );
    server.restart();
    assert_eq!(server.get("/v1/admin/tenants/globex", OPERATOR_KEY).0, 200);
    assert_eq!(server.get("/v1/memories/list", &key).0, 401);
    server.stop();
    let left = files_containing(&data, needle);
    assert!(
        left.is_empty(),
        "canary bytes remain after restart: {left:?}"
    );
    server.restart();
    // A bad `hard` value is refused, not read as false.
    server.tenant("other");
    let (s, _) = server.call(
        "DELETE",
        "/v1/admin/tenants/other?hard=yes",
        Some(OPERATOR_KEY),
        &[],
        None,
    );
    assert_eq!(s, 400);
}

/// Moves `id` to `target` and waits for the move to end.
fn migrate_and_wait(server: &Server, id: &str, target: &str) {
    let (s, v) = server.call(
        "POST",
        &format!("/v1/admin/tenants/{id}/migrate"),
        Some(OPERATOR_KEY),
        &[],
        Some(&json!({ "target": target })),
    );
    assert!(s == 200 || s == 202, "migrate {id} to {target}: {s} {v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v = admin(
            server,
            "GET",
            &format!("/v1/admin/tenants/{id}/migration"),
            None,
        );
        match v["state"].as_str() {
            Some("done" | "none") => return,
            Some("copying" | "catching_up" | "cleaning_up" | "rebuilding") => {
                assert!(std::time::Instant::now() < deadline, "move not over: {v}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => panic!("move of {id} to {target} did not end well: {v}"),
        }
    }
}

/// A tenant's registry row and metadata rewritten many times (profile changes and a move to its
/// own file and back, among other tenants' writes), then purged: no copy of them is left in
/// any file, and the purge's rewrite of the main file (a vacuum) keeps every other tenant's
/// rows, and the writes after it, across restarts. (This does not reproduce the older copy of a
/// row the storage engine can leave in the unused part of a live page: its debug builds fill
/// new pages with 0xFF. The store's vacuum tests plant such bytes instead.)
#[test]
fn a_purge_leaves_no_old_copy_of_a_registry_row_rewritten_many_times() {
    const MARKER: &str = "MARKER-7c2f-registry-row-of-victim";
    let mut server = Server::start();
    let mut keys = Vec::new();
    for id in ["north", "south", "east"] {
        server.tenant(id);
        keys.push(server.key(id, json!({ "permissions": ALL })));
    }
    let (s, v) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({"id": "victim", "display_name": format!("{MARKER} 0"), "metadata": {"note": MARKER}}),
    );
    assert_eq!(s, 201, "{v}");
    for round in 0..120 {
        let patch = json!({
            "display_name": format!("{MARKER} {round} {}", "x".repeat(round % 37)),
            "metadata": {"note": format!("{MARKER} {round}")},
            "weight": round % 4 + 1,
        });
        admin(&server, "PATCH", "/v1/admin/tenants/victim", Some(patch));
        for key in &keys {
            let (s, v) = server.post(
                "/v1/memories",
                key,
                json!({
                    "id": format!("f-{round}"),
                    "content": format!("filler {round} {}", "y".repeat(round * 7 % 300)),
                }),
            );
            assert_eq!(s, 201, "{v}");
        }
        if round == 60 {
            migrate_and_wait(&server, "victim", "dedicated");
            migrate_and_wait(&server, "victim", "shared");
        }
    }
    let data = server.dir.path().join("data");
    assert!(!files_containing(&data, MARKER.as_bytes()).is_empty());
    let (s, v) = server.hard_delete("victim");
    assert_eq!(s, 200, "{v}");
    server.stop();
    let left = files_containing(&data, MARKER.as_bytes());
    assert!(
        left.is_empty(),
        "old copies of victim's rows remain: {left:?}"
    );
    // Every other tenant's rows survived the rewrite, and so does a write after it.
    server.restart();
    let ids = ["north", "south", "east"];
    for (id, key) in ids.iter().zip(&keys) {
        every_filler_is_there(&server, id, key, 120);
        let (s, v) = server.post(
            "/v1/memories",
            key,
            json!({"id": "f-after", "content": "after the rewrite"}),
        );
        assert_eq!(s, 201, "{v}");
    }
    server.restart();
    for (id, key) in ids.iter().zip(&keys) {
        every_filler_is_there(&server, id, key, 121);
        assert_eq!(server.get("/v1/memories/f-after", key).0, 200);
    }
}

/// SIGKILL at several moments of a hard delete, most of them while it rewrites the main file:
/// after the restart every other tenant's row is there, nothing the rewrite left beside the
/// main file remains, and a victim whose purge had committed has no byte left (the start runs
/// the rewrite the kill cut short).
#[test]
fn sigkill_during_a_purge_rewrite_loses_nothing_and_leaves_nothing() {
    let mut server = Server::start();
    server.tenant("keep");
    let key = server.key("keep", json!({ "permissions": ALL }));
    // Some megabytes, so the rewrite takes a while to be killed in.
    for i in 0..200 {
        let (s, v) = server.post(
            "/v1/memories",
            &key,
            json!({"id": format!("k-{i}"), "content": format!("{i} {}", "k".repeat(40_000))}),
        );
        assert_eq!(s, 201, "{v}");
    }
    let data = server.dir.path().join("data");
    for (round, delay_ms) in [0u64, 30, 120, 300, 700].into_iter().enumerate() {
        let victim = format!("victim{round}");
        let mark = format!("VICTIM-MARK-{round}-5e1a");
        server.tenant(&victim);
        let vkey = server.key(&victim, json!({ "permissions": ALL }));
        let (s, v) = server.post("/v1/memories", &vkey, json!({ "content": mark }));
        assert_eq!(s, 201, "{v}");
        std::thread::scope(|s| {
            let server = &server;
            // Its answer, if any comes before the kill, does not matter.
            let url = format!("{}/v1/admin/tenants/{victim}?hard=true", server.url);
            s.spawn(move || {
                let _ = reqwest::blocking::Client::new()
                    .delete(url)
                    .bearer_auth(OPERATOR_KEY)
                    .send();
            });
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &server.pid().to_string()])
                .status()
                .expect("run kill");
            assert!(killed.success());
        });
        let exit = server.wait_exit(std::time::Duration::from_secs(60));
        assert!(exit.is_some(), "round {round}: still running after SIGKILL");
        server.restart();
        let leftovers: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".vacuum"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
        for i in 0..200 {
            let (s, v) = server.get(&format!("/v1/memories/k-{i}"), &key);
            assert_eq!(s, 200, "round {round}: k-{i} lost: {v}");
        }
        let (s, _) = server.get(&format!("/v1/admin/tenants/{victim}"), OPERATOR_KEY);
        if s == 404 {
            let left = files_containing(&data, mark.as_bytes());
            assert!(
                left.is_empty(),
                "round {round}: the purged victim remains in {left:?}"
            );
        } else {
            assert_eq!(s, 200, "round {round}");
        }
    }
    // Writes after all that reach the file the restarts read.
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "k-last", "content": "last"}),
    );
    assert_eq!(s, 201, "{v}");
    server.restart();
    assert_eq!(server.get("/v1/memories/k-last", &key).0, 200);
}

fn every_filler_is_there(server: &Server, id: &str, key: &str, records: u64) {
    let v = admin(server, "GET", &format!("/v1/admin/tenants/{id}"), None);
    assert_eq!(v["usage"]["records"], records, "{v}");
    for round in 0..120 {
        let (s, v) = server.get(&format!("/v1/memories/f-{round}"), key);
        assert_eq!(s, 200, "{id} lost f-{round}: {v}");
    }
}

/// Mints a JWT for `acme`, waits past its `iat` second, then deletes `acme` (hard, or soft and
/// purged) and creates it again; the old key and the old JWT must act on nothing.
fn recreate_with_old_credentials(hard: bool) {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({ "permissions": ALL }));
    let token = jwt("acme");
    let (s, v) = server.post("/v1/memories", &key, json!({"content": "old owner"}));
    assert_eq!(s, 201, "{v}");
    assert_eq!(server.get("/v1/memories/list", &token).0, 200);
    // `iat` has second resolution: the next incarnation must be created in a later second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    if hard {
        let (s, v) = server.hard_delete("acme");
        assert_eq!(s, 200, "{v}");
    } else {
        admin(&server, "DELETE", "/v1/admin/tenants/acme", None);
        let v = admin(
            &server,
            "POST",
            "/v1/admin/tenants/purge-deleted",
            Some(json!({"retention_secs": 0})),
        );
        assert_eq!(v["purged"], json!(["acme"]), "{v}");
    }
    let v = admin(&server, "GET", "/v1/admin/keys", None);
    let keys = v["keys"].as_array().expect("keys");
    assert!(
        keys.iter().all(|k| k["tenant"] != "acme"),
        "deleting a tenant deletes its keys: {v}"
    );
    server.tenant("acme");
    let fresh = server.key("acme", json!({ "permissions": ALL }));
    let (s, v) = server.post("/v1/memories", &fresh, json!({"content": "new owner"}));
    assert_eq!(s, 201, "{v}");
    for old in [&key, &token] {
        let (s, v) = server.get("/v1/memories/list", old);
        assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"), "{v}");
        let (s, v) = server.post("/v1/memories", old, json!({"content": "intruder"}));
        assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"), "{v}");
        let (s, v) = server.get("/v1/audit", old);
        assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"), "{v}");
    }
    let (s, v) = server.get("/v1/memories/list", &fresh);
    assert_eq!(s, 200, "{v}");
    let contents: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["content"].as_str())
        .collect();
    assert_eq!(contents, ["new owner"], "{v}");
    // A token minted for the new incarnation works.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(server.get("/v1/memories/list", &jwt("acme")).0, 200);
}

#[test]
fn credentials_of_a_hard_deleted_tenant_never_act_on_its_successor() {
    recreate_with_old_credentials(true);
}

#[test]
fn credentials_of_a_purged_tenant_never_act_on_its_successor() {
    recreate_with_old_credentials(false);
}

fn vector(seed: usize) -> Vec<f32> {
    (0..384)
        .map(|j| ((seed * 131 + j * 7) % 97) as f32 / 97.0 + 0.01)
        .collect()
}

#[test]
fn concurrent_writers_over_http_never_overshoot_the_vector_quota() {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({ "permissions": ALL }));
    let v = admin(
        &server,
        "PATCH",
        "/v1/admin/tenants/acme",
        Some(json!({"limits": {"max_vectors": 50, "max_collections": 20}, "weight": 2})),
    );
    assert_eq!(v["limits"]["max_vectors"], 50, "{v}");
    // Limits patch as a merge: naming one keeps the others.
    let v = admin(
        &server,
        "PATCH",
        "/v1/admin/tenants/acme",
        Some(json!({"limits": {"max_collections": null}})),
    );
    assert_eq!(
        (
            &v["limits"]["max_vectors"],
            &v["limits"]["max_collections"],
            &v["weight"]
        ),
        (&json!(50), &Value::Null, &json!(2)),
        "{v}"
    );
    let (s, v) = server.call(
        "PATCH",
        "/v1/admin/tenants/acme",
        Some(OPERATOR_KEY),
        &[],
        Some(&json!({"limits": {"max_vector": 1}})),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");

    let (ok, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (server, key, ok, refused) = (&server, &key, &ok, &refused);
            scope.spawn(move || {
                for i in 0..12 {
                    let body =
                        json!({"content": format!("w{t}-{i}"), "vector": vector(t * 100 + i)});
                    let (s, v) = server.post("/v1/memories", key, body);
                    match (s, code(&v)) {
                        (201, _) => ok.fetch_add(1, Ordering::Relaxed),
                        (403, "QUOTA_EXCEEDED") => {
                            let m = v["error"]["message"].as_str().unwrap_or("");
                            assert!(m.contains("max_vectors"), "{v}");
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        other => panic!("unexpected {other:?}: {v}"),
                    };
                }
            });
        }
    });
    assert_eq!((ok.into_inner(), refused.into_inner()), (50, 46));
    let v = admin(&server, "GET", "/v1/admin/tenants/acme", None);
    assert_eq!(
        (
            v["usage"]["vectors"].as_u64(),
            v["usage"]["records"].as_u64()
        ),
        (Some(50), Some(50)),
        "{v}"
    );
    assert!(v["usage"]["storage_bytes"].as_u64().unwrap_or(0) > 0, "{v}");
}

/// A quota's usage counts every principal's records, so a refusal tells it only to a key that
/// may read the tenant's usage; a key bound to a user token learns the limit alone.
#[test]
fn a_quota_refusal_shows_the_usage_only_to_whom_may_read_it() {
    let server = Server::start();
    server.tenant("acme");
    let whole = server.key("acme", json!({ "permissions": ALL }));
    let alice = server.key(
        "acme",
        json!({"permissions": ["read", "write"], "user_tokens": ["u:alice"]}),
    );
    admin(
        &server,
        "PATCH",
        "/v1/admin/tenants/acme",
        Some(json!({"limits": {"max_vectors": 2}})),
    );
    for (i, cred) in [&whole, &whole].into_iter().enumerate() {
        let (s, v) = server.post(
            "/v1/memories",
            cred,
            json!({"content": format!("kept {i}"), "vector": vector(i)}),
        );
        assert_eq!(s, 201, "{v}");
    }
    let refusal = |cred: &str| {
        let (s, v) = server.post(
            "/v1/memories",
            cred,
            json!({"content": "one more", "vector": vector(9)}),
        );
        assert_eq!((s, code(&v)), (403, "QUOTA_EXCEEDED"), "{v}");
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // Bound to a user token, to a domain, or unbound but without `all_principals`: none of
    // them may read the tenant's usage.
    let domain = server.key(
        "acme",
        json!({"permissions": ["read", "write", "admin", "all_principals"], "domains": ["default"]}),
    );
    let own_principal = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    for cred in [&alice, &domain, &own_principal] {
        assert_eq!(
            refusal(cred),
            "quota exceeded: max_vectors: the request would pass the limit of 2"
        );
    }
    assert_eq!(refusal(&whole), "quota exceeded: max_vectors: 2 used of 2");
}

/// A `PATCH` of the tenant `acme`, answered with `(status, body)`.
fn patch(server: &Server, body: Value) -> (u16, Value) {
    server.call(
        "PATCH",
        "/v1/admin/tenants/acme",
        Some(OPERATOR_KEY),
        &[],
        Some(&body),
    )
}

#[test]
fn tenant_metadata_is_set_merged_bounded_and_kept() {
    let mut server = Server::start();
    let first = json!({"team": "search", "owner": {"name": "ana", "tz": "utc"}, "tier": 2});
    let (s, v) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({"id": "acme", "metadata": first}),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["metadata"], first);
    server.tenant("globex");
    assert_eq!(
        admin(&server, "GET", "/v1/admin/tenants/acme", None)["metadata"],
        first
    );
    assert_eq!(
        admin(&server, "GET", "/v1/admin/tenants/globex", None)["metadata"],
        json!({})
    );
    // Lists leave it out, whatever a tenant holds (it could be 16 KiB a tenant).
    let list = admin(&server, "GET", "/v1/admin/tenants", None);
    let tenants = list["tenants"].as_array().expect("tenants");
    assert_eq!(tenants.len(), 2, "{list}");
    assert!(
        tenants.iter().all(|t| t.get("metadata").is_none()),
        "{list}"
    );

    // A merge patch: keys set, nested objects merged, `null` removes; other fields stay.
    let (s, v) = patch(
        &server,
        json!({"metadata": {"tier": null, "owner": {"tz": null, "mail": "a@x"}, "plan": "pro"}}),
    );
    assert_eq!(s, 200, "{v}");
    let merged = json!({"team": "search", "owner": {"name": "ana", "mail": "a@x"}, "plan": "pro"});
    assert_eq!(v["metadata"], merged);
    let (s, v) = patch(&server, json!({"weight": 2}));
    assert_eq!((s, &v["metadata"]), (200, &merged), "{v}");

    // Out of bounds or of the wrong shape: 400 naming the field, nothing changed.
    let deep = (0..9).fold(json!(1), |v, _| json!({ "a": v }));
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
    for bad in [
        json!("x"),
        json!([1]),
        deep.clone(),
        Value::Object(many.clone()),
        json!({"blob": "x".repeat(16 * 1024)}),
    ] {
        let (s, v) = patch(&server, json!({ "metadata": bad }));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("metadata")),
            "{v}"
        );
        let (s, v) = server.post(
            "/v1/admin/tenants",
            OPERATOR_KEY,
            json!({"id": "bad", "metadata": bad}),
        );
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("metadata")),
            "{v}"
        );
    }
    assert_eq!(server.get("/v1/admin/tenants/bad", OPERATOR_KEY).0, 404);
    assert_eq!(
        admin(&server, "GET", "/v1/admin/tenants/acme", None)["metadata"],
        merged
    );
    // Exactly at each bound is accepted: 64 keys, 8 levels, 16384 bytes encoded
    // (`{"blob":""}` is 11 of them).
    let keys64: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("k{i}"), json!(i))).collect();
    let depth8 = (0..8).fold(json!(1), |v, _| json!({ "a": v }));
    let bytes16k = json!({"blob": "x".repeat(16 * 1024 - 11)});
    assert_eq!(serde_json::to_vec(&bytes16k).unwrap().len(), 16 * 1024);
    for (i, edge) in [Value::Object(keys64), depth8, bytes16k]
        .into_iter()
        .enumerate()
    {
        let (s, v) = server.post(
            "/v1/admin/tenants",
            OPERATOR_KEY,
            json!({"id": format!("edge{i}"), "metadata": edge}),
        );
        assert_eq!((s, &v["metadata"]), (201, &edge), "{v}");
    }

    // The tenant works as before, and everything survives a restart.
    let key = server.key("acme", json!({ "permissions": ALL }));
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "a-rec", "content": "acme keeps this"}),
    );
    assert_eq!(s, 201, "{v}");
    reads_back(&server, &key);
    // What the tenant sees of itself never carries the operator's metadata.
    let (s, stats) = server.get("/v1/stats", &key);
    assert_eq!(s, 200, "{stats}");
    let seen = stats.to_string();
    assert!(
        !seen.contains("a@x") && !seen.contains("\"plan\""),
        "{seen}"
    );
    server.restart();
    assert_eq!(
        admin(&server, "GET", "/v1/admin/tenants/acme", None)["metadata"],
        merged
    );
    let (s, v) = patch(&server, json!({"metadata": null}));
    assert_eq!((s, &v["metadata"]), (200, &json!({})), "{v}");
    let v = admin(&server, "POST", "/v1/admin/tenants/acme/verify", None);
    assert_eq!(v["ok"], true, "{v}");
}

/// A damaged metadata row (here one longer than the bound, which the decoder refuses before
/// parsing) blocks nothing but itself: the get and the list answer, suspend, resume and a
/// limits patch work, a merge patch is refused, and `"metadata": null` clears it.
#[test]
fn a_damaged_metadata_row_blocks_only_itself_and_null_clears_it() {
    use strata_store::Reads;
    let mut server = Server::start();
    let (s, v) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({"id": "acme", "metadata": {"team": "search"}}),
    );
    assert_eq!(s, 201, "{v}");
    server.tenant("globex");
    server.stop();
    let store =
        strata_store::Store::open(&server.dir.path().join("data").join(strata_engine::DB_FILE))
            .expect("store");
    let oversized = json!({"blob": "x".repeat(20_000)});
    store
        .write(|w| {
            let id = strata_types::TenantId::parse("acme").expect("id");
            let key = w.tenant(&id)?.expect("meta").key;
            w.put_tenant_metadata(key, oversized.as_object().expect("object"))
        })
        .expect("damage");
    drop(store);
    server.restart();

    let v = admin(&server, "GET", "/v1/admin/tenants/acme", None);
    assert!(v.get("metadata").is_none(), "{v}");
    let list = admin(&server, "GET", "/v1/admin/tenants", None);
    assert_eq!(list["tenants"].as_array().map(Vec::len), Some(2), "{list}");
    let v = admin(&server, "POST", "/v1/admin/tenants/acme/verify", None);
    assert_eq!(v["ok"], false, "{v}");
    admin(&server, "POST", "/v1/admin/tenants/acme/suspend", None);
    admin(&server, "POST", "/v1/admin/tenants/acme/resume", None);
    let (s, v) = patch(&server, json!({"limits": {"max_vectors": 5}, "weight": 3}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["limits"]["max_vectors"], &v["weight"]),
        (&json!(5), &json!(3))
    );

    // A stable refusal the operator can act on, not a server failure.
    let (s, v) = patch(&server, json!({"metadata": {"plan": "pro"}}));
    assert_eq!((s, code(&v)), (409, "METADATA_DAMAGED"), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("\"metadata\": null"), "{v}");
    let (s, v) = patch(&server, json!({"metadata": null}));
    assert_eq!((s, &v["metadata"]), (200, &json!({})), "{v}");
    let v = admin(&server, "POST", "/v1/admin/tenants/acme/verify", None);
    assert_eq!(v["ok"], true, "{v}");
    let (s, v) = patch(&server, json!({"metadata": {"plan": "pro"}}));
    assert_eq!((s, &v["metadata"]), (200, &json!({"plan": "pro"})), "{v}");
}

/// A tenant's own integrity policy over HTTP: set at creation, shown by the tenant's view and
/// by `GET .../integrity` with where it comes from (its own over the configuration's override
/// over the default), refused naming the field when out of range, cleared with `null`; and
/// `updated_at`, the creation time at first, moves with each change.
#[test]
fn a_tenants_integrity_policy_is_set_shown_validated_and_cleared_over_http() {
    let server =
        Server::start_with(&[("STRATA__ENGINE__INTEGRITY__TENANTS__ACME__CONSECUTIVE", "9")]);
    let (s, created) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({"id": "acme", "integrity_policy": {"latency_contract_ms": 50, "consecutive": 2}}),
    );
    assert_eq!(s, 201, "{created}");
    assert_eq!(
        created["integrity_policy"]["latency_contract_ms"],
        json!(50.0)
    );
    assert_eq!(created["updated_at"], created["created_at"], "{created}");
    let integrity = || admin(&server, "GET", "/v1/admin/tenants/acme/integrity", None);
    let v = integrity();
    assert_eq!(
        (&v["policy_source"], &v["policy"]["consecutive"]),
        (&json!("tenant"), &json!(2)),
        "{v}"
    );

    // Each refusal names the field, and changes nothing.
    for (policy, field) in [
        (
            json!({"stress_enter": 0.5, "stress_exit": 0.7}),
            "integrity_policy.stress_enter",
        ),
        (json!({"consecutive": 0}), "integrity_policy.consecutive"),
        (json!({"consecutive": -1}), "integrity_policy.consecutive"),
        (
            json!({"latency_contract_ms": -5}),
            "integrity_policy.latency_contract_ms",
        ),
        (
            json!({"cooldown_ms": "soon"}),
            "integrity_policy.cooldown_ms",
        ),
        (json!({"stres_enter": 1.0}), "integrity_policy"),
    ] {
        let (s, v) = patch(&server, json!({ "integrity_policy": policy }));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{policy}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{policy}: {v}");
    }
    let (s, v) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({"id": "bad", "integrity_policy": {"critical_exit": 9.0}}),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    let shown = admin(&server, "GET", "/v1/admin/tenants/acme", None);
    assert_eq!(shown["integrity_policy"], created["integrity_policy"]);
    assert_eq!(shown["updated_at"], created["updated_at"]);

    // Other changes leave it; `null` gives the tenant back to the configuration.
    clock_past(created["updated_at"].as_i64().unwrap_or_default());
    let (s, v) = patch(&server, json!({"weight": 2}));
    assert_eq!(
        (s, &v["integrity_policy"]),
        (200, &created["integrity_policy"]),
        "{v}"
    );
    let weighted = v["updated_at"].as_i64().unwrap_or_default();
    assert!(
        weighted > created["updated_at"].as_i64().unwrap_or(i64::MAX),
        "{v}"
    );
    let (s, v) = patch(&server, json!({"integrity_policy": null}));
    assert_eq!(s, 200, "{v}");
    assert!(v.get("integrity_policy").is_none(), "{v}");
    let v = integrity();
    assert_eq!(
        (&v["policy_source"], &v["policy"]["consecutive"]),
        (&json!("config_tenant"), &json!(9)),
        "{v}"
    );
    server.tenant("globex");
    let v = admin(&server, "GET", "/v1/admin/tenants/globex/integrity", None);
    assert_eq!(v["policy_source"], "config_default", "{v}");

    // A suspension is a change of the registry entry too.
    let before = admin(&server, "GET", "/v1/admin/tenants/acme", None)["updated_at"]
        .as_i64()
        .unwrap_or_default();
    clock_past(before);
    let v = admin(&server, "POST", "/v1/admin/tenants/acme/suspend", None);
    assert!(v["updated_at"].as_i64().unwrap_or_default() > before, "{v}");
}

/// Waits until the wall clock (milliseconds since the epoch, as `updated_at` counts) is past
/// `ms`, so that a change made next must carry a later `updated_at`.
fn clock_past(ms: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if now > ms {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the clock never passed {ms}"
        );
        std::thread::yield_now();
    }
}

/// A stored integrity policy that does not decode (here one field missing) refuses only its
/// own tenant's requests, with a clear error naming the repair; the tenant's view (policy
/// left out), the other tenants and the list answer; `"integrity_policy": null` repairs it.
#[test]
fn an_unreadable_integrity_policy_blocks_only_its_tenant_and_null_repairs_it() {
    use strata_store::Reads;
    let mut server = Server::start();
    let (s, v) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({"id": "acme", "integrity_policy": {"consecutive": 2}}),
    );
    assert_eq!(s, 201, "{v}");
    server.tenant("globex");
    let acme_key = server.key("acme", json!({}));
    let globex_key = server.key("globex", json!({}));
    server.stop();
    let store =
        strata_store::Store::open(&server.dir.path().join("data").join(strata_engine::DB_FILE))
            .expect("store");
    store
        .write(|w| {
            let id = strata_types::TenantId::parse("acme").expect("id");
            let mut meta = w.tenant(&id)?.expect("meta");
            let policy = meta
                .profile
                .get_mut("integrity_policy")
                .expect("stored policy");
            policy
                .as_object_mut()
                .expect("object")
                .remove("cooldown_ms");
            w.put_tenant(&meta)
        })
        .expect("damage");
    drop(store);
    server.restart();

    let count = |key: &str| server.call("GET", "/v1/collections", Some(key), &[], None);
    let (s, v) = count(&acme_key);
    assert_eq!((s, code(&v)), (409, "INTEGRITY_POLICY_DAMAGED"), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("integrity_policy") && message.contains("null"),
        "{v}"
    );
    assert_eq!(count(&globex_key).0, 200);
    let v = admin(&server, "GET", "/v1/admin/tenants/acme", None);
    assert!(v.get("integrity_policy").is_none(), "{v}");
    admin(&server, "GET", "/v1/admin/tenants/globex", None);
    let list = admin(&server, "GET", "/v1/admin/tenants", None);
    assert_eq!(list["tenants"].as_array().map(Vec::len), Some(2), "{list}");

    let (s, v) = patch(&server, json!({"integrity_policy": null}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(count(&acme_key).0, 200);
}
