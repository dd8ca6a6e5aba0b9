//! `X-Strata-Timing`: a request that asks gets its stage durations back in `Server-Timing`
//! (what `strata bench noisy` reads for a victim's slowest requests); one that does not ask
//! gets nothing extra, and a search's answer is the same JSON either way.

mod common;

use common::Server;
use serde_json::{Value, json};

fn stages(header: &str) -> Vec<(String, f64)> {
    header
        .split(',')
        .map(|part| {
            let (name, dur) = part
                .trim()
                .split_once(";dur=")
                .unwrap_or_else(|| panic!("not a duration: {part:?} in {header:?}"));
            (name.to_owned(), dur.parse().expect("milliseconds"))
        })
        .collect()
}

#[test]
fn a_search_that_asks_gets_each_stage_in_order_and_they_add_up_to_the_total() {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    let (status, v) = server.post(
        "/v1/collections",
        &key,
        json!({"name": "v", "dim": 2, "metric": "cosine"}),
    );
    assert_eq!(status, 201, "{v}");
    let (status, v) = server.post(
        "/v1/memories",
        &key,
        json!({"records": [{"modality": "v", "content": "a", "vector": [1.0, 0.0]},
                           {"modality": "v", "content": "b", "vector": [0.0, 1.0]}]}),
    );
    assert_eq!(status, 201, "{v}");
    let http = reqwest::blocking::Client::new();
    let search = |timing: Option<&str>| {
        let mut req = http
            .post(format!("{}/v1/search", server.url))
            .bearer_auth(&key)
            .json(&json!({"modality": "v", "vector": [1.0, 0.1], "k": 1}));
        if let Some(v) = timing {
            req = req.header("x-strata-timing", v);
        }
        let res = req.send().expect("search");
        assert_eq!(res.status().as_u16(), 200);
        let header = res
            .headers()
            .get("server-timing")
            .map(|v| v.to_str().expect("ascii").to_owned());
        assert_eq!(
            res.headers()["content-type"].to_str().expect("ascii"),
            "application/json"
        );
        (header, res.json::<Value>().expect("json"))
    };

    let (header, asked) = search(Some("1"));
    let header = header.expect("a Server-Timing header when asked");
    let got = stages(&header);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    // Every stage a search passes, in the order it passes them, then the total.
    assert_eq!(
        names,
        [
            "parse", "admit", "body", "prepare", "queue", "job", "reply", "total"
        ],
        "{header}"
    );
    let sum: f64 = got[..got.len() - 1].iter().map(|(_, d)| d).sum();
    let total = got[got.len() - 1].1;
    assert!(got.iter().all(|(_, d)| *d >= 0.0), "{header}");
    // Each span is rounded to a microsecond.
    assert!((sum - total).abs() < 0.01, "{header}: spans sum to {sum}");
    assert!(total < 10_000.0, "{header}");

    let (none, plain) = search(None);
    assert_eq!(none, None, "nothing extra unless asked");
    let (zero, _) = search(Some("0"));
    assert_eq!(zero, None, "`0` does not ask");
    assert_eq!(
        asked, plain,
        "the answer does not depend on the timing header"
    );
    assert_eq!(plain["hits"][0]["content"], "a", "{plain}");
}

#[test]
fn a_refused_request_that_asks_gets_the_stages_it_reached() {
    let server = Server::start();
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/v1/search", server.url))
        .header("x-strata-timing", "1")
        .json(&json!({"vector": [1.0], "k": 1}))
        .send()
        .expect("search");
    assert_eq!(res.status().as_u16(), 401);
    let header = res.headers()["server-timing"].to_str().expect("ascii");
    let names: Vec<String> = stages(header).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["parse", "reply", "total"], "{header}");
}
