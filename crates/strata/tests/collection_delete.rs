//! A collection's delete runs in steps (mark, chunks, unmark). Cut short by SIGKILL at points
//! across a delete of the same size timed first: after a restart the collection is whole (the
//! mark had not committed), gone, or marked; a marked one is missing to writes, searches and
//! listings, its records are not counted, its name is refused to a create (409) until the same
//! DELETE again finishes it, counting only what that one deleted. The other collections and
//! the other tenant verify clean throughout.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, code};
use serde_json::{Value, json};

const RECORDS: usize = 6_000;
const KEPT: usize = 500;

fn fill(server: &Server, key: &str, name: &str, n: usize) {
    let (s, v) = server.post(
        "/v1/collections",
        key,
        json!({"name": name, "dim": 4, "metric": "l2"}),
    );
    assert_eq!(s, 201, "{v}");
    for batch in 0..n.div_ceil(1_000) {
        let records: Vec<_> = (0..1_000.min(n - batch * 1_000))
            .map(|i| {
                json!({"content": format!("{name} {batch} {i}"),
                       "vector": [0.1, 0.2, 0.3, i as f32], "modality": name})
            })
            .collect();
        let (s, v) = server.post("/v1/memories", key, json!({ "records": records }));
        assert_eq!(s, 201, "{v}");
    }
}

fn delete(server: &Server, key: &str, name: &str) -> (u16, Value) {
    server.call(
        "DELETE",
        &format!("/v1/collections/{name}"),
        Some(key),
        &[],
        None,
    )
}

fn count(server: &Server, key: &str) -> u64 {
    let (s, v) = server.post("/v1/memories/count", key, json!({"user_tokens": ["*"]}));
    assert_eq!(s, 200, "{v}");
    v["count"].as_u64().expect("count")
}

fn collections(server: &Server, key: &str) -> Vec<String> {
    let (s, v) = server.get("/v1/collections", key);
    assert_eq!(s, 200, "{v}");
    v["collections"]
        .as_array()
        .expect("collections")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_owned())
        .collect()
}

/// What a marked collection answers, then the repeated DELETE that finishes it.
fn check_marked_then_finish(server: &Server, key: &str, name: &str) -> u64 {
    assert!(!collections(server, key).contains(&name.to_owned()));
    assert_eq!(
        count(server, key),
        KEPT as u64,
        "its records are not counted"
    );
    let (s, v) = server.post(
        "/v1/search",
        key,
        json!({"modality": name, "vector": [0.1, 0.2, 0.3, 1.0], "k": 3}),
    );
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
    let (s, v) = server.post(
        "/v1/memories",
        key,
        json!({"records": [{"content": "late", "vector": [0.0, 0.0, 0.0, 1.0], "modality": name}]}),
    );
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
    let (s, v) = server.post(
        "/v1/collections",
        key,
        json!({"name": name, "dim": 4, "metric": "l2"}),
    );
    assert_eq!((s, code(&v)), (409, "CONFLICT"), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("unfinished delete"), "{v}");
    let (s, v) = delete(server, key, name);
    assert_eq!(s, 200, "{v}");
    let n = v["deleted_records"].as_u64().expect("deleted_records");
    assert!(n <= RECORDS as u64, "{v}");
    n
}

#[test]
fn sigkill_during_a_collection_delete_leaves_it_whole_gone_or_marked_and_a_repeat_finishes_it() {
    let mut server = Server::start();
    let grant = json!({"permissions": ["read", "write", "admin", "all_principals"]});
    server.tenant("acme");
    let key = server.key("acme", grant.clone());
    server.tenant("other");
    let other = server.key("other", grant);
    fill(&server, &other, "notes", KEPT);
    fill(&server, &key, "kept", KEPT);

    // The time a whole delete of this size takes here.
    fill(&server, &key, "big0", RECORDS);
    let began = Instant::now();
    let (s, v) = delete(&server, &key, "big0");
    let took = began.elapsed();
    assert_eq!(
        (s, v["deleted_records"].as_u64()),
        (200, Some(RECORDS as u64)),
        "{v}"
    );
    let (s, v) = delete(&server, &key, "big0");
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");

    let mut marked = 0;
    for round in 1..=3u32 {
        let name = format!("big{round}");
        fill(&server, &key, &name, RECORDS);
        let (url, k, n) = (server.url.clone(), key.clone(), name.clone());
        let cut = std::thread::spawn(move || {
            let _ = reqwest::blocking::Client::new()
                .delete(format!("{url}/v1/collections/{n}"))
                .bearer_auth(k)
                .timeout(Duration::from_secs(60))
                .send();
        });
        std::thread::sleep(took * round / 4);
        let killed = Command::new("kill")
            .args(["-KILL", &server.pid().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        assert!(server.wait_exit(Duration::from_secs(10)).is_some());
        cut.join().expect("delete thread");
        server.restart();

        let state = if collections(&server, &key).contains(&name) {
            // Killed before the mark committed: whole, and a delete takes all of it.
            let (s, v) = delete(&server, &key, &name);
            assert_eq!(
                (s, v["deleted_records"].as_u64()),
                (200, Some(RECORDS as u64)),
                "{v}"
            );
            "whole"
        } else {
            let (s, v) = server.post(
                "/v1/collections",
                &key,
                json!({"name": name, "dim": 4, "metric": "l2"}),
            );
            if s == 201 {
                // Finished before the kill: the name is free.
                let (s, v) = delete(&server, &key, &name);
                assert_eq!((s, v["deleted_records"].as_u64()), (200, Some(0)), "{v}");
                "finished"
            } else {
                assert_eq!(s, 409, "{v}");
                marked += 1;
                let n = check_marked_then_finish(&server, &key, &name);
                println!("round {round}: the repeat deleted {n}");
                "marked"
            }
        };
        let (s, v) = delete(&server, &key, &name);
        assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "round {round}: {v}");
        assert_eq!(count(&server, &key), KEPT as u64, "round {round}");
        assert_eq!(count(&server, &other), KEPT as u64, "round {round}");
        server.verify_clean("acme");
        server.verify_clean("other");
        println!(
            "round {round}: killed after {:?} of {took:?}: {state}",
            took * round / 4
        );
    }
    // The kills fall a quarter, a half and three quarters into a delete's time.
    assert!(marked >= 1, "no kill fell inside a delete");
}

/// A client that hangs up once its delete has begun (the collection has left the listings)
/// does not stop it: the delete runs to its end, the name becomes free and nothing of the
/// collection stays counted, with no second DELETE.
#[test]
fn a_delete_whose_client_hangs_up_runs_to_its_end() {
    use std::io::Write;

    let server = Server::start();
    let grant = json!({"permissions": ["read", "write", "admin", "all_principals"]});
    server.tenant("acme");
    let key = server.key("acme", grant);
    fill(&server, &key, "kept", KEPT);
    fill(&server, &key, "big", RECORDS);

    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        conn,
        "DELETE /v1/collections/big HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\r\n"
    )
    .expect("send");
    let began = Instant::now();
    while collections(&server, &key).contains(&"big".to_owned()) {
        assert!(began.elapsed() < Duration::from_secs(30), "never marked");
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(conn);
    let create = || {
        server.post(
            "/v1/collections",
            &key,
            json!({"name": "big", "dim": 4, "metric": "l2"}),
        )
    };
    // Still under way when the client went (else this test would show nothing).
    let (s, v) = create();
    assert_eq!((s, code(&v)), (409, "CONFLICT"), "{v}");
    let gone = Instant::now();
    loop {
        let (s, v) = create();
        if s == 201 {
            break;
        }
        assert_eq!(s, 409, "{v}");
        assert!(
            gone.elapsed() < Duration::from_secs(60),
            "still marked a minute after the client went"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(&server, &key), KEPT as u64);
    server.verify_clean("acme");
}
