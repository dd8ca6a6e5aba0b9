//! The `dedicated` level over HTTP: a tenant migrates shared → dedicated → partition → shared
//! (its data moving into its own file and back) while writers and readers work on it and on
//! another tenant; no request fails, every acknowledged write is there, answers do not move
//! and `verify` is clean. Then SIGKILL at random points of such migrations: after each
//! restart the tenant is whole on exactly one side, a move cut short is resumed to its end,
//! and `verify` is clean. And cancelling a move, running or cut short.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::levels::{DIM, answers, vector};
use common::{OPERATOR_KEY, Server, StopOnDrop, code};
use serde_json::{Value, json};

/// Tenant `id` with `n` vectors in collection `vec`; its key.
fn fill(server: &Server, id: &str, n: usize) -> String {
    server.tenant(id);
    let key = server.key(id, json!({"permissions": ["read", "write", "admin"]}));
    let (s, v) = server.post("/v1/collections", &key, json!({"name": "vec", "dim": DIM}));
    assert_eq!(s, 201, "{v}");
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"id": format!("r{i}"), "modality": "vec", "vector": vector(*i),
                            "content": format!("memory number {i}")})
            })
            .collect();
        let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
        assert_eq!(s, 201, "{v}");
    }
    key
}

fn verify(server: &Server, id: &str) -> Value {
    let (s, v) = server.post(
        &format!("/v1/admin/tenants/{id}/verify"),
        OPERATOR_KEY,
        json!({}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["usage_stored"], v["usage_recounted"], "{v}");
    v
}

fn level(server: &Server, id: &str) -> String {
    let (s, v) = server.get(&format!("/v1/admin/tenants/{id}"), OPERATOR_KEY);
    assert_eq!(s, 200, "{v}");
    v["isolation"].as_str().expect("isolation").to_owned()
}

/// Polls `GET .../migration` until the tenant's migration has ended; its last status. Every
/// status seen on the way is one a data move goes through.
fn wait_migration(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, v) = server.get(&format!("/v1/admin/tenants/{id}/migration"), OPERATOR_KEY);
        assert_eq!(s, 200, "{v}");
        match v["state"].as_str() {
            Some("copying" | "catching_up" | "cleaning_up") => {
                assert!(v["finished_at"].is_null(), "{v}");
                assert!(Instant::now() < deadline, "still moving: {v}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Some("done" | "rebuilding" | "failed" | "interrupted") => return v,
            _ => panic!("not a state of a started migration: {v}"),
        }
    }
}

/// Polls `GET .../migration` until the tenant's migration has ended and, if it was cut short
/// (`interrupted`), until the server has resumed it to its end; its last status. A move that
/// stays `interrupted` past the deadline was not resumed: the test fails.
fn wait_settled(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (s, v) = server.get(&format!("/v1/admin/tenants/{id}/migration"), OPERATOR_KEY);
        assert_eq!(s, 200, "{v}");
        match v["state"].as_str() {
            Some("copying" | "catching_up" | "cleaning_up" | "interrupted") => {
                assert!(Instant::now() < deadline, "not resumed to its end: {v}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Some("done" | "rebuilding" | "failed" | "cancelled" | "none") => return v,
            _ => panic!("not a state of a migration: {v}"),
        }
    }
}

/// Starts a migration of `id` without waiting: a data move answers `202` with the report and
/// a `Location` naming its status.
fn start_migration(server: &Server, id: &str, target: &str) -> (u16, Value) {
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/v1/admin/tenants/{id}/migrate", server.url))
        .bearer_auth(OPERATOR_KEY)
        .json(&json!({ "target": target }))
        .send()
        .expect("migrate");
    let status = res.status().as_u16();
    if status == 202 {
        assert_eq!(
            res.headers().get("location").and_then(|v| v.to_str().ok()),
            Some(format!("/v1/admin/tenants/{id}/migration").as_str())
        );
    }
    (status, res.json().expect("report"))
}

fn all_present(server: &Server, key: &str, ids: &[String]) {
    for id in ids {
        let (s, v) = server.get(&format!("/v1/memories/{id}"), key);
        assert_eq!(s, 200, "acknowledged {id} lost: {v}");
    }
}

/// One writer and one reader per tenant while `migrate` runs; returns each tenant's
/// acknowledged ids. Every request must succeed and every answer equal its reference.
fn under_load(
    server: &Server,
    tenants: &[(&str, &str, &[Value])],
    round: usize,
    migrate: impl FnOnce(),
) -> Vec<Vec<String>> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut writers = Vec::new();
        for (t, (id, key, reference)) in tenants.iter().enumerate() {
            let stop = &stop;
            writers.push(s.spawn(move || {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) || acked.len() < 5 {
                    let rid = format!("w{round}-{t}-{i}");
                    let far: Vec<f32> = vector(i).iter().map(|x| -x).collect();
                    let (st, v) = server.post(
                        "/v1/memories",
                        key,
                        json!({"records": [{"id": rid, "modality": "vec", "vector": far}]}),
                    );
                    assert_eq!(st, 201, "{id}: write during migration failed: {v}");
                    acked.push(rid);
                    i += 1;
                }
                acked
            }));
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) || n < 5 {
                    assert_eq!(&answers(server, key), reference, "{id}: answer moved");
                    n += 1;
                }
            });
        }
        // Should `migrate` panic, the load threads are told to stop as it unwinds, so that
        // the scope joins them and the test fails instead of hanging.
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(150));
        migrate();
        std::thread::sleep(Duration::from_millis(150));
        stop.store(true, Ordering::Relaxed);
        writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect()
    })
}

#[test]
fn shared_dedicated_partition_shared_online_under_load() {
    let mut server = Server::start();
    let acme = fill(&server, "acme", 1_200);
    let other = fill(&server, "other", 300);
    let (ra, ro) = (answers(&server, &acme), answers(&server, &other));
    let mut written = [1_200u64, 300];

    // The dry run reports the move and changes nothing.
    let (s, dry) = server.post(
        "/v1/admin/tenants/acme/migrate",
        OPERATOR_KEY,
        json!({"target": "dedicated", "dry_run": true}),
    );
    assert_eq!(s, 200, "{dry}");
    assert_eq!(
        (&dry["moves_data"], &dry["records"], &dry["vectors"]),
        (&json!(true), &json!(1_200), &json!(1_200)),
        "{dry}"
    );
    assert!(dry["bytes"].as_u64().unwrap_or(0) > 1_200 * 32, "{dry}");
    assert_eq!(level(&server, "acme"), "shared");
    assert_eq!(verify(&server, "acme")["dedicated_file"], false);

    for (round, target) in ["dedicated", "partition", "shared"].into_iter().enumerate() {
        let tenants = [
            ("acme", acme.as_str(), &ra[..]),
            ("other", other.as_str(), &ro[..]),
        ];
        // Data moves answer 202 at once and run in the background (polled to their end under
        // the load); partition → shared moves nothing and answers 200 when done.
        let acked = under_load(&server, &tenants, round, || {
            let (s, v) = start_migration(&server, "acme", target);
            assert_eq!(s, if target == "shared" { 200 } else { 202 }, "{v}");
            assert_eq!(v["moves_data"], target != "shared", "{v}");
            let ended = wait_migration(&server, "acme");
            assert!(
                ended["state"] == "done" || ended["state"] == "rebuilding",
                "{ended}"
            );
            assert_eq!(ended["to"], target, "{ended}");
        });
        assert_eq!(level(&server, "acme"), target);
        let (s, status) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
        assert_eq!(s, 200, "{status}");
        if target != "shared" {
            assert_eq!(status["moves_data"], true, "{status}");
            assert!(
                status["keys_total"].as_u64().unwrap_or(0) > 1_200,
                "{status}"
            );
            // Writes during the copy add keys beyond the count taken at its start.
            assert!(
                status["keys_copied"].as_u64() >= status["keys_total"].as_u64(),
                "{status}"
            );
        }
        all_present(&server, &acme, &acked[0]);
        all_present(&server, &other, &acked[1]);
        written[0] += acked[0].len() as u64;
        written[1] += acked[1].len() as u64;
        let v = verify(&server, "acme");
        assert_eq!(v["records"], written[0], "{v}");
        assert_eq!(v["dedicated_file"], target == "dedicated", "{v}");
        assert_eq!(verify(&server, "other")["records"], written[1]);
        assert_eq!(answers(&server, &acme), ra);
        assert_eq!(answers(&server, &other), ro);
        if target == "dedicated" {
            // Its own directory exists; a restart keeps the tenant there.
            assert!(
                server
                    .dir
                    .path()
                    .join("data")
                    .join("tenants")
                    .read_dir()
                    .unwrap()
                    .count()
                    == 1
            );
            server.restart();
            assert_eq!(level(&server, "acme"), "dedicated");
            assert_eq!(verify(&server, "acme")["dedicated_file"], true);
            // The migration's status is kept across the restart.
            let (s, kept) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
            assert_eq!(s, 200, "{kept}");
            assert_eq!(
                (&kept["from"], &kept["to"], &kept["moves_data"]),
                (&json!("shared"), &json!("dedicated"), &json!(true)),
                "{kept}"
            );
            assert!(
                kept["state"] == "done" || kept["state"] == "rebuilding",
                "{kept}"
            );
            assert_eq!(
                (
                    &kept["started_at"],
                    &kept["finished_at"],
                    &kept["keys_total"]
                ),
                (
                    &status["started_at"],
                    &status["finished_at"],
                    &status["keys_total"]
                ),
                "{kept} {status}"
            );
            assert_eq!(answers(&server, &acme), ra);
        }
    }
    assert_eq!(
        server
            .dir
            .path()
            .join("data")
            .join("tenants")
            .read_dir()
            .unwrap()
            .count(),
        0,
        "the file is gone once the tenant moved out"
    );
    let (s, v) = server.get(
        "/v1/admin/audit?action=tenant.migrate&tenant=acme",
        OPERATOR_KEY,
    );
    assert_eq!(s, 200, "{v}");
    // Each migration is in the tenant's log and the operator's; the operator's listing shows
    // each once.
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(3), "{v}");
}

#[test]
fn a_tenant_created_dedicated_serves_and_is_purged_with_its_file() {
    let server = Server::start();
    let (s, v) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({"id": "big", "isolation": "dedicated", "index_params": {"m": 24}}),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["isolation"], "dedicated");
    let key = server.key("big", json!({"permissions": ["read", "write", "admin"]}));
    let (s, v) = server.post("/v1/collections", &key, json!({"name": "vec", "dim": DIM}));
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"records": [{"id": "a", "modality": "vec", "vector": vector(1)}]}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post(
        "/v1/search",
        &key,
        json!({"vector": vector(1), "modality": "vec", "k": 5}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hits"][0]["id"], "a", "{v}");
    assert_eq!(verify(&server, "big")["dedicated_file"], true);
    let tenants = server.dir.path().join("data").join("tenants");
    assert_eq!(tenants.read_dir().unwrap().count(), 1);
    let (s, v) = server.hard_delete("big");
    assert_eq!((s, &v["purged"]), (200, &json!(true)), "{v}");
    assert_eq!(tenants.read_dir().unwrap().count(), 0);
}

/// The config override that turns resumption of interrupted moves on or off.
const RESUME: &str = "STRATA__ENGINE__ISOLATION__RESUME_INTERRUPTED_MIGRATIONS";

/// A small deterministic generator: the kill points differ per trial and per run of the test
/// binary only through the trial number.
fn jitter(trial: u64, below: u64) -> u64 {
    let mut x = trial.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    x % below.max(1)
}

#[test]
fn sigkill_at_random_points_of_migrations_leaves_the_tenant_whole() {
    const RECORDS: usize = 2_000;
    const TRIALS: u64 = 20;
    let mut server = Server::start();
    let key = fill(&server, "acme", RECORDS);
    let reference = answers(&server, &key);
    // Calibrate: how long a whole move takes here (alone; with the writer it takes 1-4 times
    // as long), so kills land before, during and after the copy and the flip.
    let started = Instant::now();
    let (s, v) = server.post(
        "/v1/admin/tenants/acme/migrate",
        OPERATOR_KEY,
        json!({"target": "dedicated", "wait": true}),
    );
    assert_eq!(s, 200, "{v}");
    let span = (started.elapsed().as_millis() as u64).max(20) * 3;
    let (s, calibrated) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
    assert_eq!(s, 200, "{calibrated}");
    let mut acked_all: Vec<String> = Vec::new();
    let mut sides = [0u32; 2];
    let mut flipped = 0u32;
    let mut resumed = 0u32;
    let mut interrupted = 0u32;
    let mut previous_status = Some(calibrated);
    for trial in 0..TRIALS {
        let from = level(&server, "acme");
        let target = match (from.as_str(), trial % 2) {
            ("dedicated", 0) => "shared",
            ("dedicated", _) => "partition",
            _ => "dedicated",
        };
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (url, key, acked, failed) = (
                server.url.clone(),
                key.clone(),
                acked.clone(),
                failed.clone(),
            );
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                for i in 0.. {
                    let id = format!("t{trial}-{i}");
                    let far: Vec<f32> = vector(i).iter().map(|x| -x).collect();
                    let body = json!({"records": [{"id": id, "modality": "vec", "vector": far}]});
                    match http
                        .post(format!("{url}/v1/memories"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                    {
                        Ok(res) if res.status().as_u16() == 201 => {
                            acked.lock().expect("acked").push(id)
                        }
                        Ok(res) => failed.lock().expect("failed").push(res.status().as_u16()),
                        // The server is gone: this write was never acknowledged.
                        Err(_) => return,
                    }
                }
            })
        };
        let migration = {
            let (url, target) = (server.url.clone(), target.to_owned());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("client");
                // Killed mid-way, it gets no answer; that is the point. Half the trials wait
                // in the request, half let the move run in the background.
                let _ = http
                    .post(format!("{url}/v1/admin/tenants/acme/migrate"))
                    .bearer_auth(OPERATOR_KEY)
                    .json(&json!({ "target": target, "wait": trial % 4 < 2 }))
                    .send();
            })
        };
        std::thread::sleep(Duration::from_millis(jitter(trial, span)));
        let killed = Command::new("kill")
            .args(["-KILL", &server.pid().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        assert!(server.wait_exit(Duration::from_secs(10)).is_some());
        writer.join().expect("writer");
        migration.join().expect("migration");
        assert!(
            failed.lock().expect("failed").is_empty(),
            "trial {trial}: writes refused during the migration: {:?}",
            failed.lock().expect("failed")
        );
        // Half the trials restart without resumption, so that what start-up alone leaves
        // is checked (below, right after the restart); the others let the server resume a
        // move cut short and check where that ends.
        let resume = trial % 2 == 1;
        server.set_env(RESUME, if resume { "true" } else { "false" });
        server.restart();

        let now = if resume {
            // A move cut short is resumed once the server is up, from a clean copy: wait for
            // it to end. Seen still moving or `interrupted` right after the restart, it was
            // resumed (and said it would be).
            let (s, first) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
            assert_eq!(s, 200, "{first}");
            let was_cut = matches!(
                first["state"].as_str(),
                Some("interrupted" | "copying" | "catching_up" | "cleaning_up")
            );
            if first["state"] == "interrupted" {
                assert_eq!(first["will_resume"], true, "trial {trial}: {first}");
            }
            let st = wait_settled(&server, "acme");
            let now = level(&server, "acme");
            // Killed before the move was recorded, the previous trial's status is still
            // there (same start) and the tenant did not move; otherwise the move of this
            // trial ended `done` at its target, flipped before the kill or resumed after it.
            let unrecorded = previous_status
                .as_ref()
                .is_some_and(|p| p["started_at"] == st["started_at"]);
            previous_status = Some(st.clone());
            if unrecorded {
                assert!(
                    !was_cut,
                    "trial {trial}: resumed a move never recorded: {st}"
                );
                assert_eq!(now, from, "trial {trial}: flipped without a status: {st}");
                // The previous trial's: done at `now`, or cancelled (it stayed at `now`).
                let ended_at = if st["state"] == "cancelled" {
                    &st["from"]
                } else {
                    &st["to"]
                };
                assert_eq!(ended_at, now.as_str(), "trial {trial}: {st}");
            } else {
                assert!(
                    st["state"] == "done" || st["state"] == "rebuilding",
                    "trial {trial}: after a restart: {st}"
                );
                assert_eq!(st["to"], now.as_str(), "trial {trial}: {st}");
                assert!(st["finished_at"].is_i64(), "trial {trial}: {st}");
                assert_eq!(now, target, "trial {trial}: {from} → {now}: {st}");
                assert_eq!(st["from"], from.as_str(), "trial {trial}: {st}");
                flipped += 1;
                resumed += u32::from(was_cut);
            }
            now
        } else {
            // Start-up alone: the tenant is at one of the two levels, whole there (checked
            // below: `verify` clean, no leftover directory, every acknowledged write), and
            // the kept status agrees: the move that flipped it ended `done`; one cut short
            // says `interrupted`, names both levels and is not resumed; killed before it was
            // recorded, the previous trial's status is still there unchanged.
            let now = level(&server, "acme");
            assert!(
                now == from || now == target,
                "trial {trial}: {from} → {now}?"
            );
            let (s, st) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
            assert_eq!(s, 200, "{st}");
            let unrecorded = previous_status
                .as_ref()
                .is_some_and(|p| p["started_at"] == st["started_at"]);
            previous_status = Some(st.clone());
            if unrecorded {
                assert_eq!(now, from, "trial {trial}: flipped without a status: {st}");
                assert_ne!(st["state"], "interrupted", "trial {trial}: {st}");
            } else {
                match st["state"].as_str() {
                    Some("done" | "rebuilding") => {
                        assert_eq!(now, target, "trial {trial}: {st}");
                        assert_eq!(st["to"], now.as_str(), "trial {trial}: {st}");
                        assert!(st["finished_at"].is_i64(), "trial {trial}: {st}");
                        flipped += 1;
                    }
                    Some("interrupted") => {
                        assert_eq!(
                            (st["from"].as_str(), st["to"].as_str()),
                            (Some(now.as_str()), Some(target)),
                            "trial {trial}: {st}"
                        );
                        assert_eq!(st["will_resume"], false, "trial {trial}: {st}");
                        interrupted += 1;
                    }
                    _ => panic!("trial {trial}: after a restart: {st}"),
                }
            }
            now
        };
        sides[usize::from(now == "dedicated")] += 1;
        acked_all.extend(acked.lock().expect("acked").iter().cloned());
        all_present(&server, &key, &acked.lock().expect("acked"));
        let v = verify(&server, "acme");
        assert_eq!(
            v["dedicated_file"],
            now == "dedicated",
            "trial {trial}: {v}"
        );
        // Writes not acknowledged may or may not be there; acknowledged ones all are.
        let records = v["records"].as_u64().expect("records");
        assert!(
            records >= (RECORDS + acked_all.len()) as u64,
            "trial {trial}: {records} records, {} acknowledged",
            RECORDS + acked_all.len()
        );
        let dirs = server
            .dir
            .path()
            .join("data")
            .join("tenants")
            .read_dir()
            .map_or(0, |d| d.count());
        assert_eq!(
            dirs,
            usize::from(now == "dedicated"),
            "trial {trial}: leftovers"
        );
        assert_eq!(answers(&server, &key), reference, "trial {trial}");
        // A move left `interrupted` (resumption off) is cancelled, so that the next trial,
        // resuming, does not resume it instead of its own: the tenant stays where it is.
        if !resume {
            let (s, st) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
            assert_eq!(s, 200, "{st}");
            if st["state"] == "interrupted" {
                let (s, c) = cancel(&server, "acme");
                assert_eq!((s, c["state"].as_str()), (200, Some("cancelled")), "{c}");
                assert_eq!(level(&server, "acme"), now, "trial {trial}: {c}");
                previous_status = Some(c);
            }
        }
    }
    // Spot-check every acknowledged write once more at the end.
    all_present(&server, &key, &acked_all);
    println!(
        "{TRIALS} kills over {span} ms windows: {flipped} moves flipped, {resumed} of them \
         resumed after the restart, {interrupted} left interrupted (resumption off); ended {} \
         times shared/partition, {} dedicated; {} acknowledged writes all present",
        sides[0],
        sides[1],
        acked_all.len()
    );
}

/// Migrations of one tenant racing each other, into its file and out of it: each either
/// completes or is refused with 409 (one planned from a level the tenant has left since, or
/// while another moves its data); none loses a record, before or after a restart.
#[test]
fn racing_migrations_conflict_instead_of_losing_data() {
    let mut server = Server::start();
    let acme = fill(&server, "acme", 600);
    let ids: Vec<String> = (0..600).map(|i| format!("r{i}")).collect();
    let reference = answers(&server, &acme);
    let mut outcomes = Vec::new();
    for round in 0..4 {
        let statuses: Vec<(u16, Value)> = std::thread::scope(|s| {
            let server = &server;
            let racers: Vec<_> = (0..4)
                .map(|i| {
                    let target = if (i + round) % 2 == 0 {
                        "dedicated"
                    } else {
                        "shared"
                    };
                    s.spawn(move || {
                        server.post(
                            "/v1/admin/tenants/acme/migrate",
                            OPERATOR_KEY,
                            json!({ "target": target, "wait": true }),
                        )
                    })
                })
                .collect();
            racers.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (s, v) in &statuses {
            assert!(*s == 200 || *s == 409, "{s} {v}");
            if *s == 409 {
                assert_eq!(v["error"]["code"], "CONFLICT", "{v}");
            }
            outcomes.push(*s);
        }
        let v = verify(&server, "acme");
        assert_eq!(
            v["dedicated_file"],
            json!(level(&server, "acme") == "dedicated"),
            "{v}"
        );
        all_present(&server, &acme, &ids);
        assert_eq!(answers(&server, &acme), reference);
    }
    assert!(outcomes.contains(&200), "{outcomes:?}");
    server.restart();
    verify(&server, "acme");
    all_present(&server, &acme, &ids);
    assert_eq!(answers(&server, &acme), reference);
}

/// A server stopped (SIGTERM) while a data move runs in the background stops cleanly: the
/// move ends `interrupted` with the tenant whole at its old level, or, if it flipped first,
/// `done` at the new one; the status says which after the restart, and nothing is left over.
/// A bad `wait` is refused naming the field.
#[test]
fn a_shutdown_during_a_background_move_stops_it_cleanly() {
    // Resumption off: the interrupted move stays so (and is cancelled below).
    let mut server = Server::start_with(&[(RESUME, "false")]);
    let key = fill(&server, "acme", 3_000);
    let reference = answers(&server, &key);
    let (s, v) = server.post(
        "/v1/admin/tenants/acme/migrate",
        OPERATOR_KEY,
        json!({"target": "dedicated", "wait": "yes"}),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("wait:"),
        "{v}"
    );
    let (s, none) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
    assert_eq!((s, none["state"].as_str()), (200, Some("none")), "{none}");

    let (s, v) = start_migration(&server, "acme", "dedicated");
    assert_eq!(s, 202, "{v}");
    // SIGTERM at once: the copy of 3,000 records is still under way (or just ended).
    server.restart();
    let (s, st) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
    assert_eq!(s, 200, "{st}");
    let now = level(&server, "acme");
    match st["state"].as_str() {
        Some("interrupted") => {
            assert_eq!(now, "shared", "{st}");
            assert!(
                st["finished_at"].is_i64(),
                "a clean stop records its end: {st}"
            );
            // Cancelled, it is not resumed even once resumption is on.
            let (s, c) = server.call(
                "DELETE",
                "/v1/admin/tenants/acme/migration",
                Some(OPERATOR_KEY),
                &[],
                None,
            );
            assert_eq!((s, c["state"].as_str()), (200, Some("cancelled")), "{c}");
            assert_eq!(c["level"], "shared", "{c}");
            server.set_env(RESUME, "true");
            server.restart();
            let (_, again) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
            assert_eq!(again["state"], "cancelled", "{again}");
            assert_eq!(level(&server, "acme"), "shared");
        }
        Some("done" | "rebuilding") => assert_eq!(now, "dedicated", "{st}"),
        _ => panic!("after a clean stop: {st}"),
    }
    assert_eq!(
        (&st["from"], &st["to"]),
        (&json!("shared"), &json!("dedicated")),
        "{st}"
    );
    assert_eq!(
        verify(&server, "acme")["dedicated_file"],
        now == "dedicated"
    );
    let dirs = server
        .dir
        .path()
        .join("data")
        .join("tenants")
        .read_dir()
        .map_or(0, |d| d.count());
    assert_eq!(dirs, usize::from(now == "dedicated"), "leftovers");
    assert_eq!(answers(&server, &key), reference);

    // Asked again, it completes; waiting in the request answers 200 once moved.
    let target = if now == "dedicated" {
        "shared"
    } else {
        "dedicated"
    };
    let (s, v) = server.post(
        "/v1/admin/tenants/acme/migrate",
        OPERATOR_KEY,
        json!({"target": target, "wait": true}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(level(&server, "acme"), target);
    let (_, st) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
    assert!(st["state"] == "done" || st["state"] == "rebuilding", "{st}");
    verify(&server, "acme");
    assert_eq!(answers(&server, &key), reference);

    // A hard delete erases the status with the tenant: a tenant of the same name starts anew.
    let (s, v) = server.hard_delete("acme");
    assert_eq!((s, &v["purged"]), (200, &json!(true)), "{v}");
    server.tenant("acme");
    let (s, st) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
    assert_eq!((s, st["state"].as_str()), (200, Some("none")), "{st}");
}

/// A move cut short while its tenant is soft-deleted is not resumed at start-up (only live
/// tenants' moves are); restoring the tenant resumes it to its end.
#[test]
fn a_restored_tenants_cut_short_move_is_resumed() {
    let mut server = Server::start_with(&[(RESUME, "false")]);
    let key = fill(&server, "acme", 3_000);
    let reference = answers(&server, &key);
    let (s, v) = start_migration(&server, "acme", "dedicated");
    assert_eq!(s, 202, "{v}");
    let (s, v) = server.call(
        "DELETE",
        "/v1/admin/tenants/acme",
        Some(OPERATOR_KEY),
        &[],
        None,
    );
    assert_eq!(s, 200, "{v}");
    // SIGTERM at once: the copy of 3,000 records is still under way (or just ended).
    server.set_env(RESUME, "true");
    server.restart();
    let (_, st) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
    let cut_short = st["state"] == "interrupted";
    if cut_short {
        // Start-up's resumption has skipped it (give it time to have run).
        std::thread::sleep(Duration::from_millis(500));
        let (_, st) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
        assert_eq!(st["state"], "interrupted", "{st}");
        assert_eq!(level(&server, "acme"), "shared");
    } else {
        assert!(st["state"] == "done" || st["state"] == "rebuilding", "{st}");
        eprintln!("the move ended before the stop; only the restore is checked");
    }
    let (s, v) = server.post("/v1/admin/tenants/acme/restore", OPERATOR_KEY, json!({}));
    assert_eq!(s, 200, "{v}");
    let st = wait_settled(&server, "acme");
    assert!(st["state"] == "done" || st["state"] == "rebuilding", "{st}");
    assert_eq!(level(&server, "acme"), "dedicated");
    assert_eq!(verify(&server, "acme")["dedicated_file"], true);
    assert_eq!(answers(&server, &key), reference);
}

fn cancel(server: &Server, id: &str) -> (u16, Value) {
    server.call(
        "DELETE",
        &format!("/v1/admin/tenants/{id}/migration"),
        Some(OPERATOR_KEY),
        &[],
        None,
    )
}

/// `DELETE .../migration` stops a move copying in the background: the tenant stays whole at
/// its old level and the move ends `cancelled`; a move past its copy completes and the cancel
/// answers `409` (both are legal outcomes of the race; either way nothing is lost). A move
/// cut short by a shutdown is resumed once the server is back, to its end.
#[test]
fn a_move_is_cancelled_or_completes_and_an_interrupted_one_is_resumed() {
    let mut server = Server::start();
    let key = fill(&server, "acme", 3_000);
    let reference = answers(&server, &key);
    let (s, v) = cancel(&server, "acme");
    assert_eq!((s, code(&v)), (409, "CONFLICT"), "nothing to cancel: {v}");
    let (s, v) = cancel(&server, "nobody");
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");

    let (s, v) = start_migration(&server, "acme", "dedicated");
    assert_eq!(s, 202, "{v}");
    // The server's list of running moves holds it while it runs, with its status.
    let (s, list) = server.get("/v1/admin/migrations", OPERATOR_KEY);
    let (_, own) = server.get("/v1/admin/tenants/acme/migration", OPERATOR_KEY);
    assert_eq!(s, 200, "{list}");
    match list["migrations"]
        .as_array()
        .expect("migrations")
        .as_slice()
    {
        [m] => {
            assert_eq!(m["tenant"], "acme", "{list}");
            assert_eq!(
                (&m["status"]["from"], &m["status"]["to"]),
                (&json!("shared"), &json!("dedicated")),
                "{list}"
            );
        }
        [] => assert!(
            !matches!(
                own["state"].as_str(),
                Some("copying" | "catching_up" | "cleaning_up")
            ),
            "a move running after the list was read: {own}"
        ),
        _ => panic!("one move runs: {list}"),
    }
    let (s, c) = cancel(&server, "acme");
    let now = match s {
        200 => {
            assert_eq!(c["state"], "cancelled", "{c}");
            assert!(c["finished_at"].is_i64() && c["error"].is_string(), "{c}");
            "shared"
        }
        409 => {
            assert_eq!(code(&c), "CONFLICT", "{c}");
            let ended = wait_migration(&server, "acme");
            assert!(
                ended["state"] == "done" || ended["state"] == "rebuilding",
                "{ended}"
            );
            "dedicated"
        }
        _ => panic!("cancel: {s} {c}"),
    };
    assert_eq!(level(&server, "acme"), now);
    assert_eq!(
        verify(&server, "acme")["dedicated_file"],
        now == "dedicated"
    );
    let dirs = |server: &Server| {
        server
            .dir
            .path()
            .join("data")
            .join("tenants")
            .read_dir()
            .map_or(0, |d| d.count())
    };
    assert_eq!(dirs(&server), usize::from(now == "dedicated"), "leftovers");
    assert_eq!(answers(&server, &key), reference);

    // Stopped by a shutdown right after it started, the next move is resumed after the
    // restart (or had flipped already): either way it ends at its target.
    let target = if now == "dedicated" {
        "shared"
    } else {
        "dedicated"
    };
    let (s, v) = start_migration(&server, "acme", target);
    assert_eq!(s, 202, "{v}");
    server.restart();
    let st = wait_settled(&server, "acme");
    assert!(st["state"] == "done" || st["state"] == "rebuilding", "{st}");
    assert_eq!(
        (st["from"].as_str(), st["to"].as_str()),
        (Some(now), Some(target)),
        "{st}"
    );
    assert_eq!(level(&server, "acme"), target);
    assert_eq!(
        verify(&server, "acme")["dedicated_file"],
        target == "dedicated"
    );
    assert_eq!(
        dirs(&server),
        usize::from(target == "dedicated"),
        "leftovers"
    );
    assert_eq!(answers(&server, &key), reference);
    all_present(
        &server,
        &key,
        &(0..3_000).map(|i| format!("r{i}")).collect::<Vec<_>>(),
    );
}

/// The load helper itself: a panic in the step it runs under load (a failed assertion) stops
/// its writer and reader threads, so the test fails promptly instead of hanging on them.
/// (Without the guard in `under_load`, this times out.)
#[test]
fn a_failing_step_under_load_fails_the_test_instead_of_hanging_it() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let run = std::thread::spawn(move || {
        let server = Server::start();
        let _ = pid_tx.send(server.pid());
        let key = fill(&server, "acme", 20);
        let reference = answers(&server, &key);
        let tenants = [("acme", key.as_str(), &reference[..])];
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            under_load(&server, &tenants, 0, || {
                panic!("a check failed mid-migration")
            })
        }));
        let _ = tx.send(outcome.is_err());
    });
    let Ok(panicked) = rx.recv_timeout(Duration::from_secs(120)) else {
        // The thread is stuck and keeps its server: kill that by its id before failing.
        if let Ok(pid) = pid_rx.try_recv() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        panic!("the load threads never stopped after the step panicked");
    };
    assert!(panicked, "the panic was swallowed");
    // Its server is dropped (killed) with the thread, before this test process may exit.
    run.join().expect("the test thread");
}
