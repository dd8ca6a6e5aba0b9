//! The answer budget bounds what a page's fetch holds, not only what is encoded, against the
//! real binary: a tenant that taught its estimate small records and then sends a burst of
//! unread requests for pages of large ones gets short pages (together within its budget),
//! so the server's peak memory stays within the tenant's budget plus slack; another tenant
//! is served meanwhile; and a client paging through the large records with `next` gets every
//! record exactly once.

mod common;

use std::io::Read;
use std::net::TcpStream;

use common::{Server, status_line};
use serde_json::{Value, json};

/// Large records: near the content limit (64 KiB), so a page of them all is ~18 MB of JSON.
const BIG: usize = 300;
const BIG_CONTENT: usize = 60_000;
const SMALL: usize = 200;
/// The tenant's budget: one page of every large record does not fit, a short page does.
const PER_TENANT: u64 = 16 << 20;
/// The server's: less than two fresh tenants' worst-case estimates of a 1,000-record page
/// (each capped at `PER_TENANT`), more than what their fetches really hold.
const SERVER: u64 = 24 << 20;
/// Concurrent unread requests of the burst.
const BURST: usize = 10;

const BIG_PAGE: &str = "/v1/memories/list?limit=1000&filter=%7B%22size%22%3A%22big%22%7D";

fn kb(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// The server's resident memory now and at its peak since the last reset, in bytes.
fn rss(server: &Server) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("status");
    (kb(&status, "VmRSS:") << 10, kb(&status, "VmHWM:") << 10)
}

/// Resets the server's peak resident memory to what it holds now (`clear_refs` 5).
fn reset_peak(server: &Server) {
    std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").expect("clear_refs");
}

/// `strata_tenant_answer_bytes_held` of `tenant`.
fn held(server: &Server, tenant: &str) -> u64 {
    let text = server.metrics();
    let prefix = format!("strata_tenant_answer_bytes_held{{tenant=\"{tenant}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().expect("number"))
}

fn write_records(server: &Server, key: &str, records: Vec<Value>) {
    // Small batches: a write's parsed body is memory the allocator may keep, which would hide
    // the burst's own peak.
    for chunk in records.chunks(10) {
        let (s, v) = server.post("/v1/memories", key, json!({ "records": chunk }));
        assert_eq!(s, 201, "{v}");
    }
}

#[test]
fn a_burst_of_pages_over_large_records_is_held_within_the_budget_and_paging_gets_them_all() {
    let server = Server::start_with(&[
        (
            "STRATA__SERVER__MAX_ANSWER_BYTES_PER_TENANT",
            &PER_TENANT.to_string(),
        ),
        ("STRATA__SERVER__MAX_ANSWER_BYTES", &SERVER.to_string()),
        ("STRATA__SERVER__WRITE_TIMEOUT_SECS", "300"),
    ]);
    server.tenant("sly");
    let sly = server.key("sly", json!({"permissions": ["read", "write"]}));
    server.tenant("other");
    let other = server.key("other", json!({"permissions": ["read", "write"]}));
    let small: Vec<Value> = (0..SMALL)
        .map(
            |i| json!({"id": format!("s{i:04}"), "content": "tiny", "metadata": {"size": "small"}}),
        )
        .collect();
    write_records(&server, &sly, small.clone());
    write_records(&server, &other, small);
    let big: Vec<Value> = (0..BIG)
        .map(|i| {
            let content = format!("{i:04}").repeat(BIG_CONTENT / 4);
            json!({"id": format!("b{i:04}"), "content": content, "metadata": {"size": "big"}})
        })
        .collect();
    write_records(&server, &sly, big);

    // The tenant teaches its estimate small records: a page of them, read whole.
    let (s, v) = server.get(
        "/v1/memories/list?limit=1000&filter=%7B%22size%22%3A%22small%22%7D",
        &sly,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(SMALL));

    // Then a burst of requests for pages of the large records, none read.
    let (before, _) = rss(&server);
    reset_peak(&server);
    let mut readers: Vec<TcpStream> = (0..BURST)
        .map(|_| server.ask_and_never_read(&sly, BIG_PAGE))
        .collect();
    let heads: Vec<String> = readers.iter_mut().map(status_line).collect();
    // Every handler has returned: each page was fetched, encoded and refused or answered.
    let sly_held = held(&server, "sly");
    let (_, peak) = rss(&server);
    let grew = peak.saturating_sub(before);
    eprintln!("burst: {heads:?}; tenant held {sly_held} bytes; peak RSS grew {grew} bytes");
    // Within the budget and one answer (a short page), with slack for the allocator, the
    // pages being encoded and the connections' buffers. Fetched whole, the burst's pages
    // held ten times 18 MB before the old code refused them at encode.
    assert!(
        grew <= PER_TENANT + (32 << 20),
        "peak resident memory grew by {grew} bytes during the burst: {heads:?}"
    );
    // What the tenant's answers hold is within its budget.
    assert!(sly_held <= PER_TENANT, "held {sly_held}: {heads:?}");
    // Another tenant, fresh (its estimate the records' worst case), is served meanwhile: the
    // server's budget counts what the burst really holds, not its estimates.
    let (s, v) = server.get("/v1/memories/list?limit=1000", &other);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(SMALL));
    // The burst's pages came back short, not refused: together within the budget.
    for (mut r, head) in readers.into_iter().zip(heads) {
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).expect("read");
        if head == "HTTP/1.1 200" {
            let text = String::from_utf8_lossy(&buf);
            let body = &text[text.find("\r\n\r\n").expect("head's end") + 4..];
            // The body may be chunked; count the records' ids.
            let records = body.matches("\"id\":\"b").count();
            assert!((1..BIG).contains(&records), "{records} records");
        }
    }

    // Pages of ids only hold ids: the records' text is dropped as they are fetched, not
    // held until the page is encoded (their measure is the ids' JSON).
    reset_peak(&server);
    let (before, _) = rss(&server);
    let ids_only = format!("{BIG_PAGE}&include=");
    let mut readers: Vec<TcpStream> = (0..BURST)
        .map(|_| server.ask_and_never_read(&sly, &ids_only))
        .collect();
    let heads: Vec<String> = readers.iter_mut().map(status_line).collect();
    let (_, peak) = rss(&server);
    let grew = peak.saturating_sub(before);
    eprintln!("ids-only burst: {heads:?}; peak RSS grew {grew} bytes");
    assert!(
        grew <= 32 << 20,
        "peak resident memory grew by {grew} bytes: {heads:?}"
    );
    drop(readers);
    // The server lets go of an unread answer once it sees its connection closed, which it
    // learns on its own time: the pages below need the tenant's whole budget.
    // (It sees the close when it next writes or polls the connection: within moments here.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while held(&server, "sly") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "unread answers of closed connections still held"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // A client that reads its pages pages through every large record exactly once, in
    // order, following `next` through pages shorter than its `limit`.
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut after: Option<String> = None;
    loop {
        let body = json!({"filter": {"size": "big"}, "limit": 1000, "after": after});
        let (s, v) = server.post("/v1/memories/list", &sly, body);
        assert_eq!(s, 200, "{v}");
        pages += 1;
        let page = v["records"].as_array().expect("records");
        assert!(!page.is_empty() || v["next"].is_null(), "{v}");
        ids.extend(
            page.iter()
                .map(|r| r["id"].as_str().expect("id").to_owned()),
        );
        match v["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..BIG).map(|i| format!("b{i:04}")).collect();
    assert_eq!(ids, expected, "every record once, in order");
    assert!(
        pages > 1,
        "a page of every large record would pass the budget"
    );
    assert_eq!(held(&server, "sly"), 0);
}
