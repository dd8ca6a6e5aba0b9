//! A hard delete cut short by SIGKILL at several points: after a restart the tenant is whole
//! (the purge had not committed) or gone, and then none of its content is left in the data
//! file (the start-up vacuum finished the erasure the purge owed); the other tenant verifies
//! clean either way.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{OPERATOR_KEY, Server};
use serde_json::json;

const RECORDS: usize = 3_000;

fn fill(server: &Server, id: &str) -> String {
    server.tenant(id);
    let key = server.key(id, json!({"permissions": ["read", "write", "admin"]}));
    let (s, v) = server.post(
        "/v1/collections",
        &key,
        json!({"name": "v", "dim": 4, "metric": "l2"}),
    );
    assert_eq!(s, 201, "{v}");
    for batch in 0..RECORDS / 1_000 {
        let records: Vec<_> = (0..1_000)
            .map(|i| {
                json!({"content": format!("secret-{id}-{batch}-{i}"),
                       "vector": [0.1, 0.2, 0.3, i as f32], "modality": "v"})
            })
            .collect();
        let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
        assert_eq!(s, 201, "{v}");
    }
    key
}

fn main_file_holds(server: &Server, needle: &str) -> bool {
    let bytes =
        std::fs::read(server.dir.path().join("data").join("strata.redb")).expect("main file");
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn sigkill_during_a_purge_leaves_the_tenant_whole_or_gone() {
    let mut server = Server::start();
    fill(&server, "kept");
    let mut gone = 0;
    for (round, delay_ms) in [0u64, 15, 40, 100].into_iter().enumerate() {
        let id = format!("doomed{round}");
        let key = fill(&server, &id);
        let url = server.url.clone();
        let doomed = id.clone();
        let purge = std::thread::spawn(move || {
            let _ = reqwest::blocking::Client::new()
                .delete(format!("{url}/v1/admin/tenants/{doomed}?hard=true"))
                .bearer_auth(OPERATOR_KEY)
                .timeout(Duration::from_secs(30))
                .send();
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        let killed = Command::new("kill")
            .args(["-KILL", &server.pid().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        assert!(server.wait_exit(Duration::from_secs(10)).is_some());
        purge.join().expect("purge thread");
        server.restart();
        let (s, v) = server.post("/v1/memories/count", &key, json!({}));
        match s {
            200 => {
                assert_eq!(v["count"], json!(RECORDS), "round {round}: {v}");
                server.verify_clean(&id);
            }
            401 => {
                gone += 1;
                assert!(
                    !main_file_holds(&server, &format!("secret-{id}-")),
                    "round {round}: a purged tenant's content is left in the data file"
                );
            }
            _ => panic!("round {round}: {s} {v}"),
        }
        server.verify_clean("kept");
        println!("round {round}: killed after {delay_ms} ms, tenant {id}: {s}");
    }
    println!("{gone} of 4 purges had committed");
}
