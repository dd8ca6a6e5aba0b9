//! The memory a tenant's unread answers hold is bounded per tenant, against the real binary:
//! one tenant asking for large pages on several connections and never reading them is refused
//! (`429 ANSWER_MEMORY_LIMITED`, counted in its refusals) while another tenant's large page is
//! still served; once its readers drain or hang up, the bytes held fall back to zero and it is
//! served again.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, code, status_line};
use serde_json::{Value, json};

/// Vector components per record: with 500 records a page is ~12 MB of JSON, well past what
/// the kernel's socket buffers take off the server while nobody reads.
const DIM: usize = 2048;
const RECORDS: usize = 500;
/// Two such pages held, not three.
const PER_TENANT: u64 = 32 << 20;

/// One tenant with a collection of `RECORDS` records carrying `DIM`-component vectors; its key.
fn tenant_with_records(server: &Server, id: &str) -> String {
    server.tenant(id);
    let key = server.key(id, json!({"permissions": ["read", "write", "admin"]}));
    let (s, v) = server.post(
        "/v1/collections",
        &key,
        json!({"name": "v", "dim": DIM, "metric": "cosine"}),
    );
    assert_eq!(s, 201, "{v}");
    for batch in 0..2 {
        let records: Vec<Value> = (0..RECORDS / 2)
            .map(|i| {
                let n = batch * RECORDS / 2 + i;
                // Many digits each, so the page's JSON is large.
                let vector: Vec<f32> = (0..DIM)
                    .map(|j| ((n * 1031 + j * 17) % 9973) as f32 / 9973.0 + 0.001)
                    .collect();
                json!({"id": format!("r{n:04}"), "modality": "v", "content": "x", "vector": vector})
            })
            .collect();
        let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
        assert_eq!(s, 201, "{v}");
    }
    key
}

/// A page of every record, so its estimate is its size.
const PAGE: &str = "/v1/memories/list?limit=500&include=record,vector";

/// A whole page, read: the tenant's answers have a size to go by from then on.
fn read_page(server: &Server, key: &str) -> (u16, Value) {
    server.get(PAGE, key)
}

/// `strata_tenant_answer_bytes_held` and the `ANSWER_MEMORY_LIMITED` refusals of `tenant`.
fn figures(server: &Server, tenant: &str) -> (u64, u64) {
    let text = server.metrics();
    let find = |prefix: String| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no sample {prefix}"))
            .trim()
            .parse::<u64>()
            .expect("number")
    };
    (
        find(format!(
            "strata_tenant_answer_bytes_held{{tenant=\"{tenant}\"}}"
        )),
        find(format!(
            "strata_tenant_refusals_total{{tenant=\"{tenant}\",code=\"ANSWER_MEMORY_LIMITED\"}}"
        )),
    )
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_tenants_unread_answers_never_refuse_another_tenants() {
    let server = Server::start_with(&[
        (
            "STRATA__SERVER__MAX_ANSWER_BYTES_PER_TENANT",
            &PER_TENANT.to_string(),
        ),
        (
            "STRATA__SERVER__MAX_ANSWER_BYTES",
            &(256u64 << 20).to_string(),
        ),
        // The unread answers stay unread for the whole test.
        ("STRATA__SERVER__WRITE_TIMEOUT_SECS", "300"),
    ]);
    let slow = tenant_with_records(&server, "slow");
    let other = tenant_with_records(&server, "other");
    for key in [&slow, &other] {
        let (s, v) = read_page(&server, key);
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["records"].as_array().map(Vec::len), Some(RECORDS));
    }
    assert_eq!(figures(&server, "slow"), (0, 0));

    // Six requests for pages, none read: the first ones are admitted and their answers held,
    // the rest refused before their pages are fetched.
    let mut readers: Vec<TcpStream> = (0..6)
        .map(|_| server.ask_and_never_read(&slow, PAGE))
        .collect();
    let heads: Vec<String> = readers.iter_mut().map(status_line).collect();
    let answered = heads.iter().filter(|h| *h == "HTTP/1.1 200").count();
    assert!(answered >= 2, "{heads:?}");
    assert!(heads.iter().any(|h| h == "HTTP/1.1 429"), "{heads:?}");
    // Every handler has returned: what is held now is held by the bodies hyper still sends.
    let (held, refused) = figures(&server, "slow");
    assert!(held > PER_TENANT / 2, "held {held}");
    assert!(held <= PER_TENANT + (8 << 20), "held {held}");
    assert!(refused >= 1);

    // The tenant's next page is refused, with a retry hint...
    let (s, v) = read_page(&server, &slow);
    assert_eq!((s, code(&v)), (429, "ANSWER_MEMORY_LIMITED"), "{v}");
    assert_eq!(v["error"]["retry_after_ms"], 1000, "{v}");
    // ...on POST as on GET...
    let (s, v) = server.post(
        "/v1/memories/list",
        &slow,
        json!({"limit": RECORDS, "include": ["record", "vector"]}),
    );
    assert_eq!((s, code(&v)), (429, "ANSWER_MEMORY_LIMITED"), "{v}");
    // ...while the other tenant's large page is served.
    let (s, v) = read_page(&server, &other);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(RECORDS));
    assert_eq!(figures(&server, "other"), (0, 0));

    // The readers drain their answers (or the refusals they got) to the end; the bytes held
    // fall back to zero only then, and the tenant is served again.
    for (mut r, head) in readers.into_iter().zip(heads) {
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).expect("read");
        if head == "HTTP/1.1 200" {
            assert!(buf.len() > 1 << 20, "a whole page: {} bytes", buf.len());
        }
    }
    wait_for("the answers to be given back", || {
        figures(&server, "slow").0 == 0
    });
    let (_, refused) = figures(&server, "slow");
    assert!(refused >= 3, "refusals counted: {refused}");
    let (s, v) = read_page(&server, &slow);
    assert_eq!(s, 200, "{v}");
    assert_eq!(figures(&server, "slow").0, 0);
}

#[test]
fn a_hung_up_reader_gives_its_answer_back_and_searches_and_recalls_are_bounded_too() {
    let server = Server::start_with(&[
        (
            "STRATA__SERVER__MAX_ANSWER_BYTES_PER_TENANT",
            &PER_TENANT.to_string(),
        ),
        ("STRATA__SERVER__WRITE_TIMEOUT_SECS", "300"),
    ]);
    let slow = tenant_with_records(&server, "slow");
    let (s, _) = read_page(&server, &slow);
    assert_eq!(s, 200);
    let mut readers: Vec<TcpStream> = (0..4)
        .map(|_| server.ask_and_never_read(&slow, PAGE))
        .collect();
    for r in &mut readers {
        status_line(r);
    }
    assert!(figures(&server, "slow").0 > PER_TENANT / 2);
    // A search for as many hits with their vectors is refused while the pages are unread.
    let query: Vec<f32> = (0..DIM).map(|j| (j % 7) as f32 + 1.0).collect();
    let search = json!({"modality": "v", "vector": query, "k": 1000,
        "include": ["content", "vector"]});
    let (s, v) = server.post("/v1/search", &slow, search.clone());
    assert_eq!((s, code(&v)), (429, "ANSWER_MEMORY_LIMITED"), "{v}");
    // And a recall's, whose hits are a search's.
    let (s, v) = server.post("/v1/recall", &slow, search.clone());
    assert_eq!((s, code(&v)), (429, "ANSWER_MEMORY_LIMITED"), "{v}");
    // Readers that hang up free what they held, without reading it.
    drop(readers);
    wait_for("the answers to be given back", || {
        figures(&server, "slow").0 == 0
    });
    let (s, v) = server.post("/v1/search", &slow, search.clone());
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hits"].as_array().map(Vec::len), Some(RECORDS));
    let (s, v) = server.post("/v1/recall", &slow, search);
    assert_eq!(s, 200, "{v}");
    assert_eq!(figures(&server, "slow").0, 0);
}
