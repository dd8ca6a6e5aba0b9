//! Isolation levels over HTTP: a tenant migrates shared → partition → shared while a writer
//! and a reader run on it; every acknowledged write is there, answers are the same before,
//! during and after, `verify` is clean, the level survives a restart, and every level change
//! is audited. Also: creating a tenant at a level, validation, and automatic promotion by the
//! periodic sweep. (`dedicated` and data migrations: `dedicated.rs`.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::levels::{GRAPH_DIM as DIM, answers_of, vector_of};
use common::{OPERATOR_KEY, Server, StopOnDrop, code};
use serde_json::{Value, json};

/// Enough for a graph at `GRAPH_DIM` dimensions.
const RECORDS: usize = 1_500;

fn vector(i: usize) -> Vec<f32> {
    vector_of(i, DIM)
}

fn answers(server: &Server, key: &str) -> Vec<serde_json::Value> {
    answers_of(server, key, DIM)
}

fn admin_get(server: &Server, path: &str) -> Value {
    let (s, v) = server.get(path, OPERATOR_KEY);
    assert_eq!(s, 200, "{path}: {v}");
    v
}

fn migrate(server: &Server, body: Value) -> (u16, Value) {
    server.post("/v1/admin/tenants/acme/migrate", OPERATOR_KEY, body)
}

fn wait_done(server: &Server) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = admin_get(server, "/v1/admin/tenants/acme/migration");
        if v["state"] == "done" {
            return v;
        }
        assert!(Instant::now() < deadline, "migration never finished: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_graphs(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while admin_get(server, "/v1/admin/tenants/acme/residency")["graph_builds_pending"] != 0 {
        assert!(Instant::now() < deadline, "graph build never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn verify_clean(server: &Server, records: u64) {
    let (s, v) = server.post("/v1/admin/tenants/acme/verify", OPERATOR_KEY, json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"], records, "{v}");
}

/// Runs a migration while a writer and a reader work on the tenant; returns the ids the
/// writer had acknowledged.
fn migrate_under_load(
    server: &Server,
    key: &str,
    reference: &[Value],
    body: Value,
    round: usize,
) -> Vec<String> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) || acked.len() < 5 {
                let id = format!("w{round}-{i}");
                let far: Vec<f32> = vector(i).iter().map(|x| -x).collect();
                let (st, v) = server.post(
                    "/v1/memories",
                    key,
                    json!({"records": [{"id": id, "modality": "vec", "vector": far}]}),
                );
                assert_eq!(st, 201, "write during migration failed: {v}");
                acked.push(id);
                i += 1;
            }
            acked
        });
        let reader = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 5 {
                assert_eq!(
                    answers(server, key),
                    reference,
                    "answer changed mid-migration"
                );
                n += 1;
            }
        });
        // Should the migration's checks panic, the load threads are told to stop as it
        // unwinds, so that the scope joins them and the test fails instead of hanging.
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(200));
        let (st, v) = migrate(server, body);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["dry_run"], false, "{v}");
        wait_done(server);
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader");
        writer.join().expect("writer")
    })
}

/// Tenant `acme` with `RECORDS` vectors and its graph built; its key and reference answers.
fn setup(server: &Server) -> (String, Vec<Value>) {
    server.tenant("acme");
    let key = server.key(
        "acme",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    let (s, v) = server.post("/v1/collections", &key, json!({"name": "vec", "dim": DIM}));
    assert_eq!(s, 201, "{v}");
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(300) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"id": format!("r{i}"), "modality": "vec", "vector": vector(*i)}))
            .collect();
        let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
        assert_eq!(s, 201, "{v}");
    }
    let reference = answers(server, &key);
    wait_graphs(server);
    assert_eq!(answers(server, &key), reference);
    (key, reference)
}

#[test]
fn shared_to_partition_and_back_online_under_load() {
    let mut server = Server::start();
    let (key, reference) = setup(&server);
    let tenant = admin_get(&server, "/v1/admin/tenants/acme");
    assert_eq!(tenant["isolation"], "shared", "{tenant}");
    let status = admin_get(&server, "/v1/admin/tenants/acme/migration");
    assert_eq!(
        (&status["level"], &status["state"]),
        (&json!("shared"), &json!("none"))
    );

    // Bad requests name the field; nothing changes.
    for (body, field) in [
        (json!({"target": "bogus"}), "target:"),
        (json!({}), "target:"),
        (
            json!({"target": "partition", "index_params": {"m": 1}}),
            "index_params.m:",
        ),
        (
            json!({"target": "partition", "index_params": {"ef_search": 0}}),
            "index_params.ef_search:",
        ),
        (
            json!({"target": "partition", "index_params": {"links": 3}}),
            "index_params:",
        ),
        (json!({"target": "partition", "dry_run": "yes"}), "dry_run:"),
        (json!({"target": "partition", "later": true}), "later:"),
    ] {
        let (s, v) = migrate(&server, body.clone());
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(field), "{body}: {v}");
    }
    let (s, v) = server.post(
        "/v1/admin/tenants/nobody/migrate",
        OPERATOR_KEY,
        json!({"target": "partition"}),
    );
    assert_eq!(s, 404, "{v}");

    // Dry run: a report, nothing changes.
    let params = json!({"m": 8, "ef_construction": 64, "ef_search": 128});
    let (s, report) = migrate(
        &server,
        json!({"target": "partition", "index_params": params, "dry_run": true}),
    );
    assert_eq!(s, 200, "{report}");
    assert_eq!(
        (
            &report["from"],
            &report["to"],
            &report["dry_run"],
            &report["moves_data"]
        ),
        (
            &json!("shared"),
            &json!("partition"),
            &json!(true),
            &json!(false)
        ),
        "{report}"
    );
    assert_eq!(report["rebuilds_indexes"], true, "{report}");
    assert_eq!(report["rebuild_vectors"], RECORDS, "{report}");
    // The graph build above was measured, so there is an estimate.
    assert!(report["estimated_ms"].is_u64(), "{report}");
    assert_eq!(
        admin_get(&server, "/v1/admin/tenants/acme")["isolation"],
        "shared"
    );

    // shared → partition, under load.
    let acked = migrate_under_load(
        &server,
        &key,
        &reference,
        json!({"target": "partition", "index_params": params}),
        1,
    );
    let tenant = admin_get(&server, "/v1/admin/tenants/acme");
    assert_eq!(tenant["isolation"], "partition", "{tenant}");
    assert_eq!(tenant["index_params"], params, "{tenant}");
    let listed = admin_get(&server, "/v1/admin/tenants");
    assert!(
        listed["tenants"]
            .as_array()
            .expect("tenants")
            .iter()
            .any(|t| t["id"] == "acme" && t["isolation"] == "partition"),
        "{listed}"
    );
    assert_eq!(
        admin_get(&server, "/v1/admin/tenants/acme/residency")["pinned"],
        true
    );
    let status = admin_get(&server, "/v1/admin/tenants/acme/migration");
    assert_eq!(
        (&status["level"], &status["from"], &status["to"]),
        (&json!("partition"), &json!("shared"), &json!("partition")),
        "{status}"
    );
    for id in &acked {
        let (s, v) = server.get(&format!("/v1/memories/{id}"), &key);
        assert_eq!(s, 200, "acknowledged write {id} missing: {v}");
    }
    assert_eq!(answers(&server, &key), reference);
    let mut total = (RECORDS + acked.len()) as u64;
    verify_clean(&server, total);

    // The level, and the tenant's own parameters, survive a restart.
    server.restart();
    assert_eq!(
        admin_get(&server, "/v1/admin/tenants/acme")["isolation"],
        "partition"
    );
    assert_eq!(answers(&server, &key), reference);
    assert_eq!(
        admin_get(&server, "/v1/admin/tenants/acme/residency")["pinned"],
        true
    );
    verify_clean(&server, total);

    // partition → shared, under load.
    let acked = migrate_under_load(&server, &key, &reference, json!({"target": "shared"}), 2);
    let tenant = admin_get(&server, "/v1/admin/tenants/acme");
    assert_eq!(tenant["isolation"], "shared", "{tenant}");
    assert_eq!(
        admin_get(&server, "/v1/admin/tenants/acme/residency")["pinned"],
        false
    );
    for id in &acked {
        let (s, v) = server.get(&format!("/v1/memories/{id}"), &key);
        assert_eq!(s, 200, "acknowledged write {id} missing: {v}");
    }
    assert_eq!(answers(&server, &key), reference);
    total += acked.len() as u64;
    verify_clean(&server, total);

    // Every level change is in the tenant's log and the operator's.
    let own = {
        let (s, v) = server.get("/v1/audit?action=tenant.migrate", &key);
        assert_eq!(s, 200, "{v}");
        v["rows"].as_array().expect("rows").clone()
    };
    let moves: Vec<(Value, Value)> = own
        .iter()
        .map(|r| (r["detail"]["from"].clone(), r["detail"]["to"].clone()))
        .collect();
    assert_eq!(
        moves,
        vec![
            (json!("partition"), json!("shared")),
            (json!("shared"), json!("partition"))
        ],
        "{own:?}"
    );
    let all = admin_get(&server, "/v1/admin/audit?action=tenant.migrate&limit=100");
    let rows = all["rows"].as_array().expect("rows");
    assert!(rows.len() >= 2, "{all}");
    assert!(rows.iter().all(|r| r["tenant"] == "acme"), "{all}");
}

#[test]
fn tenants_are_created_at_a_level_and_promoted_by_the_sweep() {
    let server = Server::start_with(&[
        ("STRATA__SERVER__PURGE_INTERVAL_SECS", "1"),
        ("STRATA__ENGINE__ISOLATION__PROMOTE_PARTITION_VECTORS", "10"),
    ]);
    let (s, v) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({"id": "big", "isolation": "partition", "index_params": {"m": 24}}),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (&v["isolation"], &v["index_params"]["m"]),
        (&json!("partition"), &json!(24))
    );
    for (body, status, field) in [
        (json!({"id": "x1", "isolation": "huge"}), 400, "isolation:"),
        (
            json!({"id": "x2", "isolation": "partition", "index_params": {"m": 999}}),
            400,
            "index_params.m:",
        ),
        (
            json!({"id": "x3", "isolation": "dedicated", "index_params": {"m": 1}}),
            400,
            "index_params.m:",
        ),
    ] {
        let (s, v) = server.post("/v1/admin/tenants", OPERATOR_KEY, body.clone());
        assert_eq!(s, status, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(field), "{body}: {v}");
        let id = body["id"].as_str().expect("id");
        let (s, _) = server.get(&format!("/v1/admin/tenants/{id}"), OPERATOR_KEY);
        assert_eq!(s, 404, "{id} was created by a refused request");
    }
    let created = admin_get(&server, "/v1/admin/audit?action=tenant.create&tenant=big");
    assert!(
        created["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["detail"]["isolation"] == "partition"),
        "{created}"
    );

    for (tenant, n) in [("grows", 12), ("small", 3)] {
        server.tenant(tenant);
        let key = server.key(tenant, json!({"permissions": ["read", "write", "admin"]}));
        let (s, v) = server.post("/v1/collections", &key, json!({"name": "vec", "dim": DIM}));
        assert_eq!(s, 201, "{v}");
        let records: Vec<Value> = (0..n)
            .map(|i| json!({"modality": "vec", "vector": vector(i)}))
            .collect();
        let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
        assert_eq!(s, 201, "{v}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin_get(&server, "/v1/admin/tenants/grows")["isolation"] != "partition" {
        assert!(Instant::now() < deadline, "never promoted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        admin_get(&server, "/v1/admin/tenants/small")["isolation"],
        "shared"
    );
    let promoted = admin_get(&server, "/v1/admin/audit?action=tenant.promote");
    let rows = promoted["rows"].as_array().expect("rows");
    assert!(!rows.is_empty(), "{promoted}");
    assert!(rows.iter().all(|r| r["tenant"] == "grows"), "{promoted}");
    let status = admin_get(&server, "/v1/admin/tenants/grows/migration");
    assert_eq!(
        (&status["from"], &status["to"]),
        (&json!("shared"), &json!("partition")),
        "{status}"
    );
    // Moved back to shared by the operator, it stays there: the sweep (every second here)
    // does not undo the operator's choice.
    let (s, v) = server.post(
        "/v1/admin/tenants/grows/migrate",
        OPERATOR_KEY,
        json!({"target": "shared"}),
    );
    assert_eq!(s, 200, "{v}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        admin_get(&server, "/v1/admin/tenants/grows")["isolation"],
        "shared"
    );
    let promoted = admin_get(&server, "/v1/admin/audit?action=tenant.promote");
    assert_eq!(
        promoted["rows"].as_array().map(Vec::len),
        Some(1),
        "{promoted}"
    );
}

#[test]
fn sigkill_during_a_migration_leaves_the_tenant_whole_at_its_new_level() {
    let mut server = Server::start();
    let (key, reference) = setup(&server);
    let mut written = RECORDS as u64;
    for trial in 0..6u64 {
        // Alternate levels, and change `m` each time, so every trial starts a rebuild.
        let target = if trial % 2 == 0 {
            "partition"
        } else {
            "shared"
        };
        let body = json!({"target": target, "index_params": {"m": 8 + trial}});
        let acked = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            let url = server.url.clone();
            let (key, acked) = (&key, &acked);
            s.spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                for i in 0.. {
                    let id = format!("k{trial}-{i}");
                    let far: Vec<f32> = vector(i).iter().map(|x| -x).collect();
                    let body = json!({"id": id, "modality": "vec", "vector": far});
                    match http
                        .post(format!("{url}/v1/memories"))
                        .bearer_auth(key)
                        .json(&body)
                        .send()
                    {
                        Ok(res) if res.status().as_u16() == 201 => {
                            acked.lock().expect("acked").push(id)
                        }
                        Ok(res) => panic!("{id}: {}", res.status()),
                        // The server is gone: this write was never acknowledged.
                        Err(_) => return,
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(100));
            let (st, v) = migrate(&server, body);
            assert_eq!(st, 200, "{v}");
            std::thread::sleep(Duration::from_millis(trial * 7));
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &server.pid().to_string()])
                .status()
                .expect("kill");
            assert!(killed.success());
            assert!(server.wait_exit(Duration::from_secs(10)).is_some());
        });
        server.restart();
        let tenant = admin_get(&server, "/v1/admin/tenants/acme");
        assert_eq!(tenant["isolation"], target, "trial {trial}: {tenant}");
        assert_eq!(
            tenant["index_params"]["m"],
            8 + trial,
            "trial {trial}: {tenant}"
        );
        let acked = acked.into_inner().expect("acked");
        for id in &acked {
            let (s, v) = server.get(&format!("/v1/memories/{id}"), &key);
            assert_eq!(s, 200, "trial {trial}: acknowledged {id} lost: {v}");
        }
        assert_eq!(answers(&server, &key), reference, "trial {trial}");
        // A write may have committed without its answer reaching the client before the kill.
        let (s, v) = server.post("/v1/admin/tenants/acme/verify", OPERATOR_KEY, json!({}));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["ok"], true, "trial {trial}: {v}");
        let records = v["records"].as_u64().expect("records");
        written += acked.len() as u64;
        assert!(
            records >= written,
            "trial {trial}: {records} < {written}: {v}"
        );
        written = records;
        // Its graphs are rebuilt with the level's parameters after the restart, and verify
        // is clean once they are.
        wait_graphs(&server);
        let (s, v) = server.post("/v1/admin/tenants/acme/verify", OPERATOR_KEY, json!({}));
        assert_eq!((s, &v["ok"]), (200, &json!(true)), "trial {trial}: {v}");
    }
}
