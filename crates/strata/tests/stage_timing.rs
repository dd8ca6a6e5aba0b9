//! `X-Strata-Timing`: on a server with `server.stage_timing` on, an authenticated request that
//! asks gets its stage durations back in `Server-Timing` (what `strata bench noisy` reads for a
//! victim's slowest requests); one that does not ask gets nothing extra, and a search's answer
//! is the same JSON either way. A server with the setting off (the default) never sends them,
//! and a refused credential (401, 403) never gets them.

mod common;

use common::{OPERATOR_KEY, Server};
use serde_json::{Value, json};

const TIMING_ON: &[(&str, &str)] = &[("STRATA__SERVER__STAGE_TIMING", "true")];

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

/// A tenant `acme` with a 2-d collection `v` holding two records; its key.
fn acme(server: &Server) -> String {
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
    key
}

/// Sends `method path` with `body` as `key` (none: anonymous), asking for timings; the status
/// and the `Server-Timing` header if any.
fn timed(server: &Server, key: Option<&str>, path: &str, body: Value) -> (u16, Option<String>) {
    let mut req = reqwest::blocking::Client::new()
        .post(format!("{}{path}", server.url))
        .header("x-strata-timing", "1")
        .json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().expect("request");
    let header = res
        .headers()
        .get("server-timing")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (res.status().as_u16(), header)
}

#[test]
fn a_search_that_asks_gets_each_stage_in_order_and_they_add_up_to_the_total() {
    let server = Server::start_with(TIMING_ON);
    let key = acme(&server);
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
fn a_write_that_asks_sees_its_wait_for_durability_apart_from_the_reply() {
    let server = Server::start_with(TIMING_ON);
    let key = acme(&server);
    let (status, header) = timed(
        &server,
        Some(&key),
        "/v1/memories",
        json!({"records": [{"modality": "v", "content": "c", "vector": [0.5, 0.5]}]}),
    );
    assert_eq!(status, 201);
    let header = header.expect("timings");
    let names: Vec<String> = stages(&header).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "parse", "admit", "body", "prepare", "queue", "job", "durable", "reply", "total"
        ],
        "{header}"
    );
}

/// A write under an `Idempotency-Key` runs on a task of its own (to its end even if its
/// client goes); its answer carries the same stages as an unkeyed write's, and so does the
/// replay of its answer to a retry.
#[test]
fn a_keyed_write_that_asks_gets_its_stages_like_an_unkeyed_one() {
    let server = Server::start_with(TIMING_ON);
    let key = acme(&server);
    let send = || {
        let res = reqwest::blocking::Client::new()
            .post(format!("{}/v1/memories", server.url))
            .header("x-strata-timing", "1")
            .header("idempotency-key", "keyed-write-1")
            .bearer_auth(&key)
            .json(&json!({"records": [{"modality": "v", "content": "k", "vector": [0.5, 0.5]}]}))
            .send()
            .expect("request");
        let header = res
            .headers()
            .get("server-timing")
            .map(|v| v.to_str().expect("ascii").to_owned());
        (res.status().as_u16(), header)
    };
    let (status, header) = send();
    assert_eq!(status, 201);
    let header = header.expect("a keyed write's timings");
    let names: Vec<String> = stages(&header).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "parse", "admit", "body", "prepare", "queue", "job", "durable", "reply", "total"
        ],
        "{header}"
    );
    let (status, header) = send();
    assert_eq!(status, 201, "the replayed answer");
    let header = header.expect("a replay's timings");
    assert!(
        header.contains("admit;dur=") && header.contains("total;dur="),
        "{header}"
    );
}

#[test]
fn a_server_without_the_setting_sends_no_timings() {
    let server = Server::start();
    let key = acme(&server);
    let (status, header) = timed(
        &server,
        Some(&key),
        "/v1/search",
        json!({"modality": "v", "vector": [1.0, 0.1], "k": 1}),
    );
    assert_eq!(status, 200);
    assert_eq!(header, None, "stage_timing is off by default");
}

#[test]
fn a_refused_credential_gets_no_timings() {
    let server = Server::start_with(TIMING_ON);
    let key = acme(&server);
    let search = json!({"modality": "v", "vector": [1.0, 0.1], "k": 1});
    // No credential, and a wrong one: 401 before anything is timed for them.
    assert_eq!(
        timed(&server, None, "/v1/search", search.clone()),
        (401, None)
    );
    let forged = "sk_not-a-real-key-0123456789abcdef";
    assert_eq!(
        timed(&server, Some(forged), "/v1/search", search.clone()),
        (401, None)
    );
    // A valid credential refused for this route: 403, also after authentication.
    assert_eq!(
        timed(&server, Some(OPERATOR_KEY), "/v1/search", search.clone()),
        (403, None)
    );
    let reader = server.key("acme", json!({"permissions": ["read"]}));
    let (status, header) = timed(
        &server,
        Some(&reader),
        "/v1/memories",
        json!({"records": [{"modality": "v", "content": "c", "vector": [0.5, 0.5]}]}),
    );
    assert_eq!((status, header), (403, None));
    // The same server answers them to the tenant's own key.
    assert!(timed(&server, Some(&key), "/v1/search", search).1.is_some());
}
