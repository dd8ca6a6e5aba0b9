//! Online backups over HTTP and the CLI: a backup taken while writers keep writing to a
//! shared and a dedicated tenant holds every write acknowledged before it was asked for, and a
//! server started on it serves both tenants whole; one backup runs at a time, a name is used
//! once, and only the operator may ask.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{OPERATOR_KEY, Server, StopOnDrop, code};
use serde_json::{Value, json};

fn tenant_with_key(server: &Server, id: &str) -> String {
    server.tenant(id);
    server.key(id, json!({"permissions": ["read", "write", "admin"]}))
}

fn write(server: &Server, key: &str, id: &str) {
    let (s, v) = server.post(
        "/v1/memories",
        key,
        json!({"records": [{"id": id, "content": format!("note {id}")}]}),
    );
    assert_eq!(s, 201, "{v}");
}

/// Polls a backup's status until it has ended; its last status.
fn wait_backup(server: &Server, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (s, v) = server.get(&format!("/v1/admin/backups/{name}"), OPERATOR_KEY);
        assert_eq!(s, 200, "{v}");
        if v["state"] != "running" {
            return v;
        }
        assert!(Instant::now() < deadline, "backup still running: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_backup_taken_under_writes_restores_every_acknowledged_write() {
    let server = Server::start();
    let shared = tenant_with_key(&server, "shared-t");
    let dedicated = tenant_with_key(&server, "dedicated-t");
    for key in [&shared, &dedicated] {
        let (s, v) = server.post("/v1/collections", key, json!({"name": "v3", "dim": 3}));
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = server.post(
        "/v1/admin/tenants/dedicated-t/migrate",
        OPERATOR_KEY,
        json!({"target": "dedicated", "wait": true}),
    );
    assert_eq!(s, 200, "{v}");

    // Writers on both tenants, each keeping the ids the server acknowledged.
    let stop = AtomicBool::new(false);
    let acknowledged: Vec<Arc<Mutex<Vec<String>>>> = (0..2).map(|_| Arc::default()).collect();
    let before_backup = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        for (i, key) in [&shared, &dedicated].into_iter().enumerate() {
            let (server, stop, done) = (&server, &stop, &acknowledged[i]);
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("w{n}");
                    let (st, v) = server.post(
                        "/v1/memories",
                        key,
                        json!({"records": [{"id": id, "modality": "v3", "vector": [1.0, n as f32, 0.5],
                                            "content": format!("written {n}")}]}),
                    );
                    assert_eq!(st, 201, "{v}");
                    done.lock().unwrap().push(id);
                    n += 1;
                }
            });
        }
        while acknowledged.iter().any(|a| a.lock().unwrap().len() < 20) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let before: Vec<Vec<String>> = acknowledged
            .iter()
            .map(|a| a.lock().unwrap().clone())
            .collect();
        let (s, v) = server.post("/v1/admin/backups", OPERATOR_KEY, json!({"name": "b1"}));
        assert_eq!(s, 202, "{v}");
        assert_eq!(v["name"], "b1");
        // One at a time: a second one while it runs (or a second of the same name) is refused.
        let (s2, v2) = server.post("/v1/admin/backups", OPERATOR_KEY, json!({"name": "b1"}));
        assert_eq!((s2, code(&v2)), (409, "CONFLICT"), "{v2}");
        let done = wait_backup(&server, "b1");
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(done["dedicated_files"], 1, "{done}");
        assert_eq!(done["rows_copied"], done["rows_total"], "{done}");
        // Writes went on during the backup.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        before
    });
    write(&server, &shared, "after-the-backup");

    let path = server.dir.path().join("backups").join("b1");
    assert!(path.join("strata.redb").is_file());
    let (s, rows) = server.get("/v1/admin/audit?action=backup.create", OPERATOR_KEY);
    assert_eq!(s, 200, "{rows}");
    assert_eq!(rows["rows"][0]["detail"]["name"], "b1", "{rows}");
    assert_eq!(rows["rows"][0]["outcome"], "ok", "{rows}");

    // A server started on the backup: both tenants whole, with every write acknowledged
    // before the backup was asked for, the dedicated one still in its own file.
    let restored = Server::start_with(&[("STRATA__SERVER__DATA_DIR", path.to_str().unwrap())]);
    for (i, (id, key)) in [("shared-t", &shared), ("dedicated-t", &dedicated)]
        .into_iter()
        .enumerate()
    {
        for rec in &before_backup[i] {
            let (s, v) = restored.get(&format!("/v1/memories/{rec}"), key);
            assert_eq!(s, 200, "{id}/{rec}: {v}");
        }
        restored.verify_clean(id);
        let (s, v) = restored.post(
            "/v1/search",
            key,
            json!({"vector": [1.0, 3.0, 0.5], "k": 5, "modality": "v3"}),
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["hits"].as_array().map(Vec::len), Some(5), "{v}");
    }
    let (s, v) = restored.get("/v1/admin/tenants/dedicated-t", OPERATOR_KEY);
    assert_eq!(
        (s, v["isolation"].as_str()),
        (200, Some("dedicated")),
        "{v}"
    );
    let (s, _) = restored.get("/v1/memories/after-the-backup", &shared);
    assert_eq!(s, 404, "a write after the backup ended is not in it");
    // The backup server writes as any other.
    write(&restored, &shared, "on-the-restored-server");
}

#[test]
fn the_cli_follows_a_backup_and_fails_with_the_servers_reason() {
    let server = Server::start();
    let key = tenant_with_key(&server, "acme");
    write(&server, &key, "r1");
    let strata = |args: &[&str]| {
        let (ok, stdout, stderr) = common::operator_cli(&server, args);
        (
            ok,
            serde_json::from_str::<Value>(&stdout).unwrap_or(Value::Null),
            stderr,
        )
    };
    let (ok, v, err) = strata(&["backup", "--name", "nightly"]);
    assert!(ok, "{err}");
    assert_eq!(
        (v["state"].as_str(), v["name"].as_str()),
        (Some("done"), Some("nightly")),
        "{v}"
    );
    assert!(v["bytes"].as_u64().unwrap() > 0, "{v}");
    let (ok, _, err) = strata(&["backup", "--name", "nightly"]);
    assert!(!ok && err.contains("taken already"), "{err}");
    let (ok, _, err) = strata(&["backup", "--name", "../escape"]);
    assert!(!ok && err.contains("name"), "{err}");
    // Without a name: the time's; the status of one this server did not run comes from disk.
    let (ok, v, err) = strata(&["backup"]);
    assert!(ok, "{err}");
    let name = v["name"].as_str().unwrap().to_owned();
    assert!(name.ends_with('Z'), "{name}");
    let mut server = server;
    server.restart();
    let (s, v) = server.get(&format!("/v1/admin/backups/{name}"), OPERATOR_KEY);
    assert_eq!((s, v["state"].as_str()), (200, Some("done")), "{v}");
    let (s, v) = server.get("/v1/admin/backups/never-made", OPERATOR_KEY);
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
}

#[test]
fn only_the_operator_backs_up() {
    let server = Server::start();
    let key = tenant_with_key(&server, "acme");
    let (s, v) = server.post("/v1/admin/backups", &key, json!({"name": "mine"}));
    assert_eq!(s, 403, "{v}");
    let (s, v) = server.get("/v1/admin/backups/mine", &key);
    assert_eq!(s, 403, "{v}");
    for bad in [
        json!({"name": "a/b"}),
        json!({"name": "x.partial"}),
        json!({"name": 7}),
        json!({"when": 1}),
    ] {
        let (s, v) = server.post("/v1/admin/backups", OPERATOR_KEY, bad.clone());
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{bad}: {v}");
    }
    assert!(!server.dir.path().join("backups").join("mine").exists());
}

/// A backup directory inside the data directory stops the start, naming the setting.
#[test]
fn a_backup_directory_inside_the_data_directory_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = data.join("backups");
    let err = common::serve_refused(&[
        ("STRATA__SERVER__LISTEN", "127.0.0.1:0".as_ref()),
        ("STRATA__SERVER__DATA_DIR", data.as_ref()),
        ("STRATA__SERVER__BACKUP_DIR", backups.as_ref()),
    ]);
    assert!(
        err.contains("server.backup_dir") && err.contains("inside the data directory"),
        "{err}"
    );
}
