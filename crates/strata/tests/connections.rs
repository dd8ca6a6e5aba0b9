//! Connection hygiene over raw TCP, where a client library would hide the behaviour: stalled
//! connections are closed on their deadlines while others are served, the connection cap
//! refuses clearly and recovers, early refusals keep a keep-alive connection usable or say
//! `Connection: close`, hyper's parse errors carry the standard error body, the accept loop
//! survives running out of file descriptors, and SIGTERM lets the request in flight finish.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{OPERATOR_KEY, Server};
use serde_json::{Value, json};

/// One HTTP response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// The standard error body with `code`, and a request id.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "{self:?}");
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        assert!(
            self.header("x-request-id").is_some_and(|id| id.len() >= 32),
            "no request id: {self:?}"
        );
    }
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads one response; `None` if the connection ended (or went silent) before one arrived.
fn read_answer(s: &mut TcpStream) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(buf).expect("ASCII head");
    let mut lines = head.trim_end().split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(Answer {
        status,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

/// True if the server closes the connection (end of input, or a reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn get(s: &mut TcpStream, path: &str) -> Option<Answer> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .ok()?;
    read_answer(s)
}

/// `/healthz` on a new connection.
fn healthz(server: &Server) -> Option<u16> {
    let mut s = connect(server);
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    get(&mut s, "/healthz").map(|a| a.status)
}

/// The head of a POST with a JSON body of `len` bytes.
fn post_head(path: &str, key: Option<&str>, len: usize) -> String {
    let auth = key.map_or_else(String::new, |k| format!("authorization: Bearer {k}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\n\
         content-length: {len}\r\n\r\n"
    )
}

const FAST: &[(&str, &str)] = &[
    ("STRATA__SERVER__HEADER_READ_TIMEOUT_SECS", "1"),
    ("STRATA__SERVER__BODY_READ_TIMEOUT_SECS", "1"),
    ("STRATA__SERVER__IDLE_TIMEOUT_SECS", "30"),
];

/// Deadlines long enough that "served promptly" (well under them) can be told from "served
/// once the stalled connections were dropped" on a slow, loaded machine.
const SLOWER: &[(&str, &str)] = &[
    ("STRATA__SERVER__HEADER_READ_TIMEOUT_SECS", "3"),
    ("STRATA__SERVER__BODY_READ_TIMEOUT_SECS", "3"),
    ("STRATA__SERVER__IDLE_TIMEOUT_SECS", "30"),
];

#[test]
fn stalled_connections_are_closed_on_their_deadlines_while_others_are_served() {
    let server = Server::start_with(SLOWER);
    let opened = Instant::now();
    // Hundreds of clients that stall: silent, half a request line, half the headers, and
    // whole headers with half a body on a route that reads it.
    let mut silent: Vec<TcpStream> = (0..100).map(|_| connect(&server)).collect();
    let mut partial: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = connect(&server);
            let half = if i % 2 == 0 {
                "GET /heal"
            } else {
                "GET /healthz HTTP/1.1\r\nhost: x\r\nx-half: ab"
            };
            s.write_all(half.as_bytes()).unwrap();
            s
        })
        .collect();
    let mut half_body: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = connect(&server);
            let head = post_head("/v1/admin/tenants", Some(OPERATOR_KEY), 100);
            s.write_all(format!("{head}{{\"id\": ").as_bytes()).unwrap();
            s
        })
        .collect();

    // A normal client is served promptly all the while: before the stalled connections'
    // 3 s deadlines, which is what it would wait for if they held the server up.
    let asked = Instant::now();
    let mut s = connect(&server);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert_eq!(get(&mut s, "/healthz").map(|a| a.status), Some(200));
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );

    // Every stalled connection is closed by the server within its 3 s deadline (plus slack):
    // quietly if it sent nothing, with a 408 if it sent part of a request.
    let within = Duration::from_secs(8);
    for s in &mut silent {
        assert!(closed_within(s, within), "a silent connection stayed open");
    }
    for s in partial.iter_mut().chain(half_body.iter_mut()) {
        let answer = read_answer(s).expect("a stalled request is answered");
        answer.assert_error(408, "REQUEST_TIMEOUT");
        assert!(answer.closes(), "{answer:?}");
        assert!(
            closed_within(s, within),
            "the connection stayed open after the 408"
        );
    }
    assert!(
        opened.elapsed() < Duration::from_secs(16),
        "{:?}",
        opened.elapsed()
    );
    assert_eq!(healthz(&server), Some(200));
}

#[test]
fn a_keep_alive_connection_may_rest_until_the_idle_timeout_and_no_longer() {
    let server = Server::start_with(&[
        ("STRATA__SERVER__HEADER_READ_TIMEOUT_SECS", "1"),
        ("STRATA__SERVER__IDLE_TIMEOUT_SECS", "3"),
    ]);
    let mut s = connect(&server);
    // Rests longer than the header timeout between requests: the idle timeout applies.
    for _ in 0..2 {
        assert_eq!(get(&mut s, "/healthz").map(|a| a.status), Some(200));
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert_eq!(get(&mut s, "/healthz").map(|a| a.status), Some(200));
    let rested = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(6)));
    let idle = rested.elapsed();
    assert!(idle >= Duration::from_millis(2500), "closed after {idle:?}");
}

#[test]
fn the_connection_cap_refuses_clearly_and_recovers() {
    let server = Server::start_with(&[("STRATA__SERVER__MAX_CONNECTIONS", "8")]);
    let mut held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect(&server);
            assert_eq!(get(&mut s, "/healthz").map(|a| a.status), Some(200));
            s
        })
        .collect();

    let mut over = connect(&server);
    let answer = get(&mut over, "/healthz").expect("the refusal is an answer");
    answer.assert_error(503, "OVERLOADED");
    assert!(answer.closes(), "{answer:?}");
    assert!(answer.header("retry-after").is_some(), "{answer:?}");
    assert!(closed_within(&mut over, Duration::from_secs(3)));

    // The connections within the cap are untouched; closing two makes room again.
    assert_eq!(get(&mut held[0], "/healthz").map(|a| a.status), Some(200));
    held.truncate(6);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut s = connect(&server);
        match get(&mut s, "/healthz") {
            Some(a) if a.status == 200 => break,
            other => assert!(Instant::now() < deadline, "no recovery: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` with a bearer key on an open connection.
fn get_as(s: &mut TcpStream, path: &str, key: &str) -> Option<Answer> {
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\r\n").as_bytes(),
    )
    .ok()?;
    read_answer(s)
}

#[test]
fn one_tenant_cannot_take_every_connection_from_the_others() {
    let server = Server::start_with(&[
        ("STRATA__SERVER__MAX_CONNECTIONS", "12"),
        ("STRATA__SERVER__MAX_CONNECTIONS_PER_TENANT", "3"),
    ]);
    server.tenant("flood");
    server.tenant("calm");
    let flood = server.key("flood", json!({"permissions": ["read", "write"]}));
    let calm = server.key("calm", json!({"permissions": ["read", "write"]}));
    let collections = "/v1/collections";
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect(&server);
            assert_eq!(
                get_as(&mut s, collections, &flood).map(|a| a.status),
                Some(200)
            );
            s
        })
        .collect();

    // A fourth connection of the same tenant is refused by its budget, and closed.
    let mut over = connect(&server);
    let answer = get_as(&mut over, collections, &flood).expect("the refusal is an answer");
    answer.assert_error(429, "CONCURRENCY_LIMITED");
    assert!(answer.closes(), "{answer:?}");
    assert!(closed_within(&mut over, Duration::from_secs(3)));

    // Another tenant connects and is served meanwhile; the flooding tenant's own connections
    // keep working.
    let mut other = connect(&server);
    assert_eq!(
        get_as(&mut other, collections, &calm).map(|a| a.status),
        Some(200)
    );
    assert_eq!(
        get_as(&mut held[0], collections, &flood).map(|a| a.status),
        Some(200)
    );

    // Closing one gives the tenant its slot back.
    held.truncate(2);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut s = connect(&server);
        match get_as(&mut s, collections, &flood) {
            Some(a) if a.status == 200 => break,
            other => assert!(Instant::now() < deadline, "no recovery: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_tenant_s_bodies_in_memory_stay_within_its_budget() {
    let server = Server::start_with(&[
        ("STRATA__SERVER__MAX_BODY_BYTES", "4096"),
        ("STRATA__SERVER__MAX_BODY_BYTES_PER_TENANT", "8192"),
    ]);
    server.tenant("flood");
    server.tenant("calm");
    let flood = server.key("flood", json!({"permissions": ["read", "write"]}));
    let calm = server.key("calm", json!({"permissions": ["read", "write"]}));
    let search = "/v1/search";
    // Two bodies of 4,000 bytes announced and not yet sent hold 8,000 of the tenant's 8,192.
    let mut pending: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(&server);
            s.write_all(post_head(search, Some(&flood), 4000).as_bytes())
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A third is refused from its headers, before its body is read.
    let mut third = connect(&server);
    third
        .write_all(post_head(search, Some(&flood), 4000).as_bytes())
        .unwrap();
    let answer = read_answer(&mut third).expect("the refusal is an answer");
    answer.assert_error(429, "CONCURRENCY_LIMITED");
    // Another tenant's body is not counted against it.
    let body = json!({"query": "tea", "k": 1}).to_string();
    let mut other = connect(&server);
    other
        .write_all(format!("{}{body}", post_head(search, Some(&calm), body.len())).as_bytes())
        .unwrap();
    assert_eq!(read_answer(&mut other).map(|a| a.status), Some(200));
    // Once a pending body arrives and is answered, its bytes are given back.
    let padded = format!("{body:<4000}");
    pending[0].write_all(padded.as_bytes()).unwrap();
    assert_eq!(read_answer(&mut pending[0]).map(|a| a.status), Some(200));
    let mut fourth = connect(&server);
    fourth
        .write_all(format!("{}{body}", post_head(search, Some(&flood), body.len())).as_bytes())
        .unwrap();
    assert_eq!(read_answer(&mut fourth).map(|a| a.status), Some(200));
    drop(pending);
}

/// Chunked bodies count against the tenant's budget as they arrive: two stalled before their
/// last chunk, holding 4,000 bytes each, leave no room for a third's first 4,000 bytes, which
/// is refused (they were counted only once read whole, so stalled chunked bodies held memory
/// past any budget). Another tenant's chunked body goes through.
#[test]
fn chunked_bodies_count_against_the_tenants_budget_as_they_arrive() {
    let server = Server::start_with(&[
        ("STRATA__SERVER__MAX_BODY_BYTES", "4096"),
        ("STRATA__SERVER__MAX_BODY_BYTES_PER_TENANT", "8192"),
    ]);
    server.tenant("flood");
    server.tenant("calm");
    let flood = server.key("flood", json!({"permissions": ["read", "write"]}));
    let calm = server.key("calm", json!({"permissions": ["read", "write"]}));
    let chunked_head = |key: &str| {
        format!(
            "POST /v1/search HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        )
    };
    let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
    let stalled_piece = format!("{:<4000}", "{\"query\": \"tea\", \"k\": 1}");
    let pending: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(&server);
            s.write_all(format!("{}{}", chunked_head(&flood), chunk(&stalled_piece)).as_bytes())
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut third = connect(&server);
    third
        .write_all(format!("{}{}", chunked_head(&flood), chunk(&stalled_piece)).as_bytes())
        .unwrap();
    let answer = read_answer(&mut third).expect("the refusal is an answer");
    answer.assert_error(429, "CONCURRENCY_LIMITED");
    // Another tenant's chunked body, whole: answered.
    let body = json!({"query": "tea", "k": 1}).to_string();
    let mut other = connect(&server);
    other
        .write_all(format!("{}{}0\r\n\r\n", chunked_head(&calm), chunk(&body)).as_bytes())
        .unwrap();
    assert_eq!(read_answer(&mut other).map(|a| a.status), Some(200));
    drop(pending);
}

#[test]
fn early_refusals_keep_the_connection_usable_or_say_close() {
    let server = Server::start_with(&[("STRATA__SERVER__MAX_BODY_BYTES", "4096")]);
    server.tenant("acme");
    let key = server.key("acme", json!({ "permissions": ["read", "write"] }));
    server.limit("acme", json!({"max_qps": 0.01, "burst": 1}));
    let body = r#"{"content": "a memory"}"#;

    // Heads first, bodies a moment later: the refusal is decided before the body arrives.
    // Each answer either keeps the connection usable or says it closes.
    let mut s = connect(&server);
    let mut statuses = Vec::new();
    for key in [Some(key.as_str()), Some(&key), None, Some(&key), None] {
        let sent = s
            .write_all(post_head("/v1/memories", key, body.len()).as_bytes())
            .and_then(|()| {
                std::thread::sleep(Duration::from_millis(150));
                s.write_all(body.as_bytes())
            });
        let answer = sent.ok().and_then(|()| read_answer(&mut s));
        let Some(answer) = answer else {
            panic!("after {statuses:?}, the connection closed though no answer said so");
        };
        statuses.push(answer.status);
        if answer.closes() {
            assert!(closed_within(&mut s, Duration::from_secs(3)));
            s = connect(&server);
        }
    }
    assert_eq!(statuses, [201, 429, 401, 429, 401]);
    assert_eq!(get(&mut s, "/healthz").map(|a| a.status), Some(200));

    // A body that never comes: the refusal says the connection closes, and it does.
    for key in [Some(key.as_str()), None] {
        let mut s = connect(&server);
        s.write_all(post_head("/v1/memories", key, 100).as_bytes())
            .unwrap();
        let answer = read_answer(&mut s).expect("answered");
        assert!(matches!(answer.status, 429 | 401), "{answer:?}");
        assert!(answer.closes(), "{answer:?}");
        assert!(closed_within(&mut s, Duration::from_secs(3)));
    }

    // A body over the limit is not read at all.
    let mut s = connect(&server);
    s.write_all(post_head("/v1/admin/tenants", Some(OPERATOR_KEY), 1 << 20).as_bytes())
        .unwrap();
    let answer = read_answer(&mut s).expect("answered");
    answer.assert_error(413, "PAYLOAD_TOO_LARGE");
    assert!(answer.closes(), "{answer:?}");
}

#[test]
fn requests_hyper_cannot_parse_get_the_standard_error_body() {
    let server = Server::start();
    let long = "a".repeat(70_000);
    let huge = "h".repeat(100_000);
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases = [
        (
            "GET /healthz HTTP/1.1\r\nhost: x\r\nbad header: x\r\n\r\n".to_owned(),
            400,
            "BAD_REQUEST",
        ),
        (
            "GET /healthz HTTP/1.1\r\nhost: x\r\nx-bin: a\u{1}b\r\n\r\n".to_owned(),
            400,
            "BAD_REQUEST",
        ),
        (
            "GET /healthz HTTP/9.9\r\nhost: x\r\n\r\n".to_owned(),
            400,
            "BAD_REQUEST",
        ),
        (
            format!("GET /{long} HTTP/1.1\r\nhost: x\r\n\r\n"),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {huge}\r\n\r\n"),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}\r\n"),
            431,
            "HEADERS_TOO_LARGE",
        ),
    ];
    for (request, status, code) in cases {
        let mut s = connect(&server);
        s.write_all(request.as_bytes()).unwrap();
        let answer = read_answer(&mut s).expect("answered");
        answer.assert_error(status, code);
        assert!(answer.closes(), "{answer:?}");
    }

    // A target over `server.max_uri_bytes` but within hyper's limits is refused by the router,
    // and the connection stays usable.
    let mut s = connect(&server);
    let answer = get(&mut s, &format!("/{}", "a".repeat(10_000))).expect("answered");
    answer.assert_error(414, "URI_TOO_LONG");
    assert!(!answer.closes(), "{answer:?}");
    assert_eq!(get(&mut s, "/healthz").map(|a| a.status), Some(200));
}

#[test]
fn a_low_descriptor_limit_and_stalled_clients_do_not_stop_the_server() {
    // 256 descriptors: a cap of 192 connections, the rest kept back for the server itself.
    let server = Server::start_with_fd_limit(256, FAST);
    let stalled: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = connect(&server);
            let _ = s.write_all(b"GET /heal");
            s
        })
        .collect();
    // Those over the cap were refused; those within it are closed at their 1 s deadline, after
    // which a normal client is served.
    let deadline = Instant::now() + Duration::from_secs(5);
    while healthz(&server) != Some(200) {
        assert!(Instant::now() < deadline, "the server stopped serving");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stalled);
}

/// The server's CPU time so far (user + system), from `/proc`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("stat").1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports in USER_HZ, which is 100 on every mainstream configuration.
    Duration::from_millis(ticks * 10)
}

#[test]
fn out_of_descriptors_the_accept_loop_pauses_and_recovers() {
    // A cap above the descriptor limit, so accepting fails with EMFILE.
    let mut server = Server::start_with_fd_limit(
        128,
        &[
            ("STRATA__SERVER__MAX_CONNECTIONS", "1000"),
            ("STRATA__SERVER__HEADER_READ_TIMEOUT_SECS", "60"),
        ],
    );
    let held: Vec<TcpStream> = (0..200).map(|_| connect(&server)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_time(server.pid());
    std::thread::sleep(Duration::from_millis(1500));
    let spent = cpu_time(server.pid()) - before;
    assert!(
        spent < Duration::from_millis(300),
        "accept loop spun: {spent:?} of CPU"
    );
    assert!(server.log().contains("accept failed"), "{}", server.log());
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "the server died"
    );

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while healthz(&server) != Some(200) {
        assert!(Instant::now() < deadline, "accepting did not resume");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits() {
    let mut server = Server::start();
    let mut idle = connect(&server);
    assert_eq!(get(&mut idle, "/healthz").map(|a| a.status), Some(200));
    // A request in flight: its handler is waiting for the rest of the body.
    let mut busy = connect(&server);
    let body = r#"{"id": "acme"}"#;
    busy.write_all(post_head("/v1/admin/tenants", Some(OPERATOR_KEY), body.len()).as_bytes())
        .unwrap();
    busy.write_all(&body.as_bytes()[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    server.terminate();
    // The idle keep-alive connection is closed at once, and no new connection is served.
    assert!(closed_within(&mut idle, Duration::from_secs(2)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        TcpStream::connect(server.addr())
            .map(|_| ())
            .map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused)
    );
    // The request in flight completes, told that the connection closes.
    busy.write_all(&body.as_bytes()[5..]).unwrap();
    let answer = read_answer(&mut busy).expect("the request in flight is answered");
    assert_eq!(answer.status, 201, "{answer:?}");
    assert!(answer.closes(), "{answer:?}");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits");
    assert!(status.success(), "{status:?}");
}
