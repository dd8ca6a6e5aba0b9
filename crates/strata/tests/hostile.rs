//! Hostile input over real HTTP, on every route the OpenAPI document lists: malformed and
//! mistyped JSON, missing and unknown fields, huge, negative and non-finite numbers, 1 MB
//! strings, invalid UTF-8, names with `/`, `..`, NUL and unicode, vectors with non-finite
//! values or the wrong dimension, empty bodies, wrong content types, invalid path ids and
//! query values, under a tenant key and an operator key.
//!
//! No answer may be a 5xx, every 4xx carries the stable `{"error": {"code", "message"}}`
//! shape, the server keeps answering `/healthz`, and its log holds no panic. So that the
//! hostile values reach each route's own checks rather than an earlier refusal, every route
//! with a JSON body has a sound base body that must be accepted (a value replaces one field
//! of it at a time), the records the routes act on are written afresh before each route, and
//! each group of requests must reach minimum counts of `2xx` and `400` answers.
//! Requests go over raw TCP so that the
//! bytes sent (paths with `..`, NUL, invalid UTF-8) are exactly the ones listed, not what a
//! URL parser makes of them. Deterministic: a fixed list, plus a seeded choice of values per
//! field (the seed is printed; `HOSTILE_SEED` replays another).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

/// One operation of the OpenAPI document.
struct Op {
    method: String,
    path: String,
    /// Names of the request body's top-level fields, if it has a JSON body.
    fields: Vec<String>,
    /// Names of its query parameters.
    query: Vec<String>,
}

/// An answer: status and body bytes (de-chunked).
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// Sends one request over a fresh connection and reads the whole answer.
fn send(addr: &str, method: &str, target: &[u8], headers: &[(&str, &[u8])], body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut req = Vec::with_capacity(body.len() + 256);
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nhost: strata\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    req.extend_from_slice(body);
    // The server may answer (e.g. 413) and close before reading a large body whole.
    let _ = s.write_all(&req);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_answer(&raw)
}

/// Sends bytes as they are (framing attacks) and reads the whole answer.
fn send_bytes(addr: &str, req: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    // No half-close: hyper takes a read side closed early for a client gone, and drops its
    // answer.
    let _ = s.write_all(req);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Answer {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Answer {
            status: 0,
            body: raw.to_vec(),
        };
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Answer { status, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// The top-level property names of a schema, following `$ref`, `allOf`, `oneOf`, `anyOf`.
fn properties(doc: &Value, schema: &Value, depth: usize, out: &mut Vec<String>) {
    if depth > 6 {
        return;
    }
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        properties(doc, &doc["components"]["schemas"][name], depth + 1, out);
    }
    if let Some(p) = schema["properties"].as_object() {
        for k in p.keys() {
            if !out.contains(k) {
                out.push(k.clone());
            }
        }
    }
    for combo in ["allOf", "oneOf", "anyOf"] {
        for s in schema[combo].as_array().into_iter().flatten() {
            properties(doc, s, depth + 1, out);
        }
    }
}

fn operations(doc: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let mut fields = Vec::new();
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            properties(doc, schema, 0, &mut fields);
            if fields == ["tenant_id"] {
                // A body of the tenant check alone (a share's consent, which needs a share
                // offered to be sound): fuzzed as a route without a body, its tenant check
                // by every route that has one.
                fields.clear();
            }
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            ops.push(Op {
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                fields,
                query,
            });
        }
    }
    ops
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[(self.next() % from.len() as u64) as usize]
    }
}

/// Hostile values for one JSON field.
fn hostile_values() -> Vec<Value> {
    vec![
        json!(-1),
        json!(0),
        json!(1_000_000_000_000u64),
        json!(18_446_744_073_709_551_615u64),
        json!(-9_223_372_036_854_775_808i64),
        json!(1e300),
        json!(-1e300),
        json!(1.5),
        json!("NaN"),
        json!("Infinity"),
        json!("-Infinity"),
        json!(true),
        json!([]),
        json!({}),
        json!(null),
        json!(""),
        json!(".."),
        json!("../../etc"),
        json!("a/b"),
        json!("nul\u{0}byte"),
        json!("é中文🙂\u{202e}"),
        json!("x".repeat(300)),
        json!([1e39, 0.5]),
        json!([0.1, 0.2]),
        json!(["NaN", "Infinity"]),
        json!([[1]]),
        json!({"$where": 1, "$gt": "x", "a": {"$in": 5}}),
        json!({"$and": [{"$or": []}]}),
        json!(["*"]),
        json!(["u:alice", "u alice", ""]),
        // Boundaries of the integer types the API uses, and floats past f32's range or
        // below its precision.
        json!(4_294_967_295u64),
        json!(2_147_483_647),
        json!(65_535),
        json!(1_000_000),
        json!(9_007_199_254_740_993u64),
        json!(3.4e38),
        json!(1e39),
        json!(1e-45),
        json!(-0.0),
        // A 1 MB string in every field: under the body limit, so the field's own check
        // answers.
        json!("x".repeat(1 << 20)),
    ]
}

/// A record's own fields (`NewRecord`), fuzzed inside a batch write.
const RECORD_FIELDS: &[&str] = &[
    "id",
    "modality",
    "kind",
    "content",
    "vector",
    "vector_model",
    "user_tokens",
    "run_id",
    "memory_scope",
    "metadata",
    "expires_at",
    "confidence",
    "memory_domain",
];

/// Bodies valid enough to get past decoding, for the routes where a field's value only
/// matters once the rest of the body is sound; a hostile value replaces one field at a time.
fn base_body(method: &str, path: &str) -> Option<Value> {
    let v = match (method, path) {
        ("POST", "/v1/memories") => json!({"records": [{"content": "a note"}]}),
        ("PATCH", "/v1/memories/{id}") => json!({"content": "changed"}),
        ("POST", "/v1/search") => json!({"query": "note", "k": 3, "mode": "text"}),
        ("POST", "/v1/recall") => json!({"query": "note", "k": 3}),
        ("POST", "/v1/memories/list") => json!({"limit": 5}),
        ("POST", "/v1/memories/count") => json!({}),
        ("POST", "/v1/memories/delete") => json!({"filter": {"kind": "none-such"}}),
        ("POST", "/v1/memories/{id}/evidence") => json!({"signal": 0.8}),
        ("POST", "/v1/links") => json!({"source": "r1", "target": "r2", "relation": "rel"}),
        ("POST", "/v1/links/delete") => {
            json!({"source": "r1", "target": "r2", "relation": "rel"})
        }
        ("POST", "/v1/feedback") => json!({"query": "note", "ids": ["r1"]}),
        ("POST", "/v1/collections") => json!({"name": "c2", "dim": 4, "metric": "cosine"}),
        ("POST", "/v1/shares") => json!({"domain": "default", "tenants": ["other"]}),
        ("POST", "/v1/admin/tenants") => json!({"id": "fresh"}),
        ("PATCH", "/v1/admin/tenants/{id}") => json!({"weight": 2}),
        ("POST", "/v1/admin/keys") => json!({"tenant": "other"}),
        ("POST", "/v1/admin/keys/{id}/rotate") => json!({"grace_secs": 60}),
        ("POST", "/v1/admin/tenants/{id}/migrate") => json!({"target": "partition"}),
        ("POST", "/v1/admin/backups") => json!({"name": "hostile", "wait": true}),
        ("POST", "/v1/collections/{name}/reembed") => json!({"dry_run": true}),
        ("POST", "/v1/admin/tenants/purge-deleted") => json!({"retention_secs": 86_400}),
        _ => return None,
    };
    Some(v)
}

/// The well-formed value of a path parameter, by route: the fuzzing of bodies happens there.
fn good_path(path: &str, record: &str) -> String {
    let p = if path.starts_with("/v1/admin/tenants/") {
        path.replace("{id}", "victim")
    } else if path.starts_with("/v1/memories/") {
        path.replace("{id}", record)
    } else {
        path.replace("{id}", "nosuch").replace("{name}", "mine")
    };
    assert!(
        !p.contains('{'),
        "a path parameter this test does not know: {path}"
    );
    p
}

/// Ill-formed path parameter values, as raw bytes of the request target.
fn hostile_segments() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "..",
        "%2e%2e",
        "a%2Fb",
        "%00",
        "nul%00x",
        "%FF%FE",
        "%F0%9F%98%80",
        "-1",
        "%20",
        "a%0d%0ab",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(vec![0xff, 0xfe, b'x']); // raw invalid UTF-8 in the target
    v.push("x".repeat(300).into_bytes());
    v
}

fn hostile_query_values() -> Vec<&'static str> {
    vec![
        "-1",
        "0",
        "1000000000000",
        "99999999999999999999999",
        "NaN",
        "Infinity",
        "1.5",
        "",
        "%00",
        "%FF",
        "..%2F..",
        "true",
        "a%20b",
    ]
}

/// Raw bodies that break JSON itself, or its framing, whatever the route.
fn hostile_raw_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    vec![
        ("application/json", Vec::new()),
        ("application/json", b"{".to_vec()),
        ("application/json", b"null".to_vec()),
        ("application/json", b"[]".to_vec()),
        ("application/json", b"\"s\"".to_vec()),
        ("application/json", b"1e999".to_vec()),
        ("application/json", b"{\"a\":1}{".to_vec()),
        ("application/json", b"{\"content\":\"\xff\xfe\"}".to_vec()),
        ("application/json", b"{\"\xff\":1}".to_vec()),
        ("application/json", b"\xef\xbb\xbf{}".to_vec()),
        ("application/json", deep.into_bytes()),
        ("application/json", b"{\"zz_unknown_field\":1}".to_vec()),
        ("text/plain", b"{}".to_vec()),
        ("application/x-www-form-urlencoded", b"a=1".to_vec()),
        ("application/json; charset=latin1", b"{}".to_vec()),
        ("multipart/form-data; boundary=x", b"--x--".to_vec()),
    ]
}

struct Fuzz<'a> {
    server: &'a Server,
    findings: Vec<String>,
    sent: u64,
    /// The kind of request being sent, for `statuses`.
    group: &'static str,
    /// The status of the last answer.
    last: u16,
    /// How many answers of each group had each status: a run that answered everything with
    /// one early refusal would test little, so each group must reach minimum counts.
    statuses: BTreeMap<&'static str, BTreeMap<u16, u64>>,
}

impl Fuzz<'_> {
    fn check(&mut self, what: &str, a: Answer) {
        self.sent += 1;
        self.last = a.status;
        *self
            .statuses
            .entry(self.group)
            .or_default()
            .entry(a.status)
            .or_default() += 1;
        let preview = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
        if a.status == 0 || a.status >= 500 {
            self.findings
                .push(format!("{what} -> {} {}", a.status, preview(&a.body)));
            return;
        }
        if a.status >= 400 {
            let shaped = serde_json::from_slice::<Value>(&a.body)
                .ok()
                .is_some_and(|v| {
                    v["error"]["code"].as_str().is_some_and(|c| !c.is_empty())
                        && v["error"]["message"].is_string()
                });
            if !shaped {
                self.findings.push(format!(
                    "{what} -> {} without the error shape: {}",
                    a.status,
                    preview(&a.body)
                ));
            }
        }
        if self.sent.is_multiple_of(250) {
            self.healthz(what);
        }
    }

    fn healthz(&mut self, after: &str) {
        let a = send(self.server.addr(), "GET", b"/healthz", &[], b"");
        assert_eq!(a.status, 200, "/healthz stopped answering after {after}");
    }

    /// Sends `body` as JSON.
    fn json(&mut self, key: &str, method: &str, target: &str, body: &Value) {
        let body = body.to_string();
        let ct = Some("application/json");
        self.request(key, method, target.as_bytes(), ct, &[], body.as_bytes());
    }

    fn request(
        &mut self,
        key: &str,
        method: &str,
        target: &[u8],
        content_type: Option<&str>,
        extra: &[(&str, &[u8])],
        body: &[u8],
    ) {
        let auth = format!("Bearer {key}");
        let mut headers: Vec<(&str, &[u8])> = vec![("authorization", auth.as_bytes())];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct.as_bytes()));
        }
        headers.extend_from_slice(extra);
        let a = send(self.server.addr(), method, target, &headers, body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        let what = format!(
            "{method} {} [{}] {shown}",
            String::from_utf8_lossy(target),
            content_type.unwrap_or("-")
        );
        self.check(&what, a);
    }
}

#[test]
fn hostile_input_never_gets_a_5xx_or_an_unshaped_error() {
    let seed: u64 = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026_1201);
    println!("HOSTILE_SEED={seed}");
    let mut rng = Rng(seed);

    let server = Server::start();
    for t in ["acme", "victim", "other"] {
        server.tenant(t);
    }
    let tenant_key = server.key(
        "acme",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    // What the routes work on, written afresh (new record ids) before each operation so
    // that one that deletes or moves them (a delete-where matching everything, a patch of
    // a record's scope) leaves the next routes something to act on rather than `404`s.
    let seed_data = |n: usize| {
        let records = json!({"records": [
            {"id": format!("r1-{n}"), "content": "a note"},
            {"id": format!("r2-{n}"), "content": "b"},
        ]});
        let (s, v) = server.post("/v1/memories", &tenant_key, records);
        assert!(s < 300, "{v}");
        let mine = json!({"name": "mine", "dim": 4, "metric": "cosine"});
        let (s, v) = server.post("/v1/collections", &tenant_key, mine);
        assert!(s < 300 || code(&v) == "CONFLICT", "{s} {v}");
    };
    seed_data(0);

    let (s, doc) = server.get("/openapi.json", &tenant_key);
    assert_eq!(s, 200);
    let ops = operations(&doc);
    assert!(
        ops.len() > 40,
        "the OpenAPI document lists {} operations",
        ops.len()
    );

    let unsound: Vec<String> = ops
        .iter()
        .filter(|op| !op.fields.is_empty() && base_body(&op.method, &op.path).is_none())
        .map(|op| format!("{} {} {:?}", op.method, op.path, op.fields))
        .collect();
    assert!(
        unsound.is_empty(),
        "JSON bodies without a sound base body in this test:\n{}",
        unsound.join("\n")
    );

    let mut fuzz = Fuzz {
        server: &server,
        findings: Vec::new(),
        sent: 0,
        group: "",
        last: 0,
        statuses: Default::default(),
    };
    let values = hostile_values();
    let raw = hostile_raw_bodies();
    let big = json!({"content": "x".repeat(1 << 20), "query": "y".repeat(1 << 20)}).to_string();
    let started = std::time::Instant::now();
    // Routes that destroy what the others need go last.
    let mut ops = ops;
    ops.sort_by_key(|op| {
        (
            op.method == "DELETE" || op.path.contains("purge"),
            op.path.clone(),
        )
    });
    for (n, op) in ops.iter().enumerate() {
        let admin = op.path.starts_with("/v1/admin");
        // The key the route is for gets every case; the other key a few.
        let (own, foreign) = if admin {
            (OPERATOR_KEY, tenant_key.as_str())
        } else {
            (tenant_key.as_str(), OPERATOR_KEY)
        };
        seed_data(n);
        // The records this operation works on: the base bodies name `r1` and `r2`.
        let records = |v: Value| -> Value {
            let text = v.to_string();
            let text = text.replace("\"r1\"", &format!("\"r1-{n}\""));
            let text = text.replace("\"r2\"", &format!("\"r2-{n}\""));
            serde_json::from_str(&text).expect("still JSON")
        };
        let base_body = |m: &str, path: &str| base_body(m, path).map(records);
        let mut good = good_path(&op.path, &format!("r1-{n}"));
        if op.path == "/v1/admin/keys/{id}/rotate" {
            // A rotation needs a live key of its own: the sound body rotates it.
            let (s, v) = server.post("/v1/admin/keys", OPERATOR_KEY, json!({"tenant": "other"}));
            assert_eq!(s, 201, "{v}");
            good = op.path.replace("{id}", v["id"].as_str().expect("key id"));
        }
        let m = op.method.as_str();

        // The sound body first: it must be accepted, or the fuzzing over it would only
        // meet the refusal of something else.
        let sound = base_body(m, &op.path);
        if op.path == "/v1/links/delete" {
            let link = json!({"source": format!("r1-{n}"), "target": format!("r2-{n}"), "relation": "rel"});
            let (s, v) = server.post("/v1/links", &tenant_key, link);
            assert!(s < 300, "{v}");
        }
        if let Some(body) = &sound {
            fuzz.group = "sound body";
            fuzz.json(own, m, &good, body);
            // This server has no embedding model: a re-embed decodes its body, then is
            // refused for that.
            let accepted = if op.path.ends_with("/reembed") {
                fuzz.last == 409
            } else {
                (200..300).contains(&fuzz.last)
            };
            if !accepted {
                fuzz.findings.push(format!(
                    "{m} {good}: the sound base body {body} was answered {}",
                    fuzz.last
                ));
            }
        }

        // Path parameters that are not valid ids.
        fuzz.group = "path";
        if op.path.contains('{') {
            for seg in hostile_segments() {
                let mut target = Vec::new();
                for (i, part) in op.path.split('/').enumerate() {
                    if i > 0 {
                        target.push(b'/');
                    }
                    if part.starts_with('{') {
                        target.extend_from_slice(&seg);
                    } else {
                        target.extend_from_slice(part.as_bytes());
                    }
                }
                fuzz.request(own, m, &target, Some("application/json"), &[], b"{}");
            }
        }
        // Query values.
        fuzz.group = "query";
        for q in &op.query {
            for v in hostile_query_values() {
                let target = format!("{good}?{q}={v}");
                fuzz.request(own, m, target.as_bytes(), None, &[], b"");
            }
        }
        // Bodies that break JSON or its framing, under both keys.
        fuzz.group = "raw body";
        for (ct, body) in &raw {
            fuzz.request(own, m, good.as_bytes(), Some(*ct), &[], body);
        }
        for (ct, body) in raw.iter().take(4) {
            fuzz.request(foreign, m, good.as_bytes(), Some(*ct), &[], body);
        }
        fuzz.request(
            own,
            m,
            good.as_bytes(),
            Some("application/json"),
            &[],
            big.as_bytes(),
        );
        // Every hostile value in every field, one field at a time, over a sound body where
        // the route has one (else alone); then seeded combinations of three at once.
        let base = || {
            base_body(m, &op.path)
                .and_then(|b| b.as_object().cloned())
                .unwrap_or_default()
        };
        fuzz.group = "field";
        for field in &op.fields {
            for v in &values {
                let mut body = base();
                body.insert(field.clone(), v.clone());
                fuzz.json(own, m, &good, &Value::Object(body));
            }
        }
        if !op.fields.is_empty() {
            for _ in 0..20 {
                let mut body = base();
                for _ in 0..3 {
                    body.insert(rng.pick(&op.fields).clone(), rng.pick(&values).clone());
                }
                fuzz.json(own, m, &good, &Value::Object(body));
            }
        }
        if m == "POST" && op.path == "/v1/memories" {
            for field in RECORD_FIELDS {
                for v in &values {
                    let body = json!({"records": [{"content": "c", *field: v}]});
                    fuzz.json(own, m, &good, &body);
                }
            }
            for v in &values {
                let body = json!({"records": [{"content": "c", "metadata": {"k": v}}]});
                fuzz.json(own, m, &good, &body);
            }
        }
        // Every field at once, missing the required ones or mistyped.
        if let Some(base) = base_body(m, &op.path) {
            let mut nested = base.clone();
            if let Some(records) = nested["records"].as_array_mut() {
                for v in &values {
                    records.push(json!({"content": "n", "vector": v, "metadata": {"k": v}}));
                }
            }
            for body in [nested, json!({ "records": [{}] }), json!({"k": "3"})] {
                let body = body.to_string();
                fuzz.request(
                    own,
                    m,
                    good.as_bytes(),
                    Some("application/json"),
                    &[],
                    body.as_bytes(),
                );
            }
        }
    }
    fuzz.group = "numeric";
    numeric_extremes(&mut fuzz, &tenant_key);
    fuzz.group = "import";
    hostile_imports(&mut fuzz);
    fuzz.group = "headers";
    // Headers the API reads, and credentials that are not.
    let headers: [(&str, &[u8]); 7] = [
        ("x-strata-domain", b".."),
        ("x-strata-domain", b"a/b"),
        ("x-strata-domain", b"\xff\xfe"),
        ("x-strata-domain", b""),
        ("idempotency-key", b"\xff\xfe"),
        ("idempotency-key", &[b'k'; 4096]),
        ("x-strata-tenant", b"other"),
    ];
    for (name, value) in headers {
        for (m, path) in [("POST", "/v1/memories"), ("POST", "/v1/search")] {
            let body = base_body(m, path).expect("base").to_string();
            fuzz.request(
                &tenant_key,
                m,
                path.as_bytes(),
                Some("application/json"),
                &[(name, value)],
                body.as_bytes(),
            );
        }
    }
    let auths: [&[u8]; 5] = [
        b"Bearer",
        b"Bearer \xff\xfe",
        b"Basic YTpi",
        b"Bearer a.b.c",
        b"",
    ];
    for auth in auths {
        let a = send(
            server.addr(),
            "POST",
            b"/v1/search",
            &[
                ("authorization", auth),
                ("content-type", b"application/json"),
            ],
            b"{}",
        );
        fuzz.check(
            &format!("authorization {}", String::from_utf8_lossy(auth)),
            a,
        );
    }
    // Framing the HTTP layer parses before the API sees a request. A request hyper refuses
    // by itself must still be answered in the API's shape.
    let auth = format!("authorization: Bearer {tenant_key}\r\nconnection: close\r\n");
    let framings: Vec<Vec<u8>> = vec![
        format!("POST /v1/search HTTP/1.1\r\nhost: s\r\n{auth}content-length: abc\r\n\r\n{{}}"),
        format!("POST /v1/search HTTP/1.1\r\nhost: s\r\n{auth}content-length: 2\r\ncontent-length: 3\r\n\r\n{{}}"),
        format!("POST /v1/search HTTP/1.1\r\nhost: s\r\n{auth}transfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"),
        format!("POST /v1/search HTTP/1.1\r\nhost: s\r\n{auth}content-length: -1\r\n\r\n"),
        format!("FOO /v1/search HTTP/1.1\r\nhost: s\r\n{auth}content-length: 0\r\n\r\n"),
        format!("get /v1/search HTTP/1.1\r\nhost: s\r\n{auth}content-length: 0\r\n\r\n"),
        format!("POST http://other.example/v1/search HTTP/1.1\r\nhost: s\r\n{auth}content-length: 2\r\n\r\n{{}}"),
        format!("POST * HTTP/1.1\r\nhost: s\r\n{auth}content-length: 0\r\n\r\n"),
        format!("POST /v1/search HTTP/1.0\r\n{auth}content-length: 2\r\n\r\n{{}}"),
        format!("POST /v1/search HTTP/9.9\r\nhost: s\r\n{auth}content-length: 2\r\n\r\n{{}}"),
        format!("POST /v1/search?{} HTTP/1.1\r\nhost: s\r\n{auth}content-length: 2\r\n\r\n{{}}", "a".repeat(70_000)),
        format!("POST /v1/search HTTP/1.1\r\nhost: s\r\n{auth}x-big: {}\r\ncontent-length: 2\r\n\r\n{{}}", "b".repeat(70_000)),
        format!("POST /v1/search HTTP/1.1\r\nhost: s\r\n{auth}bad header\r\n\r\n"),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    fuzz.group = "framing";
    for req in &framings {
        let a = send_bytes(server.addr(), req);
        let head = String::from_utf8_lossy(&req[..req.len().min(80)]).into_owned();
        fuzz.check(&format!("framing {head:?}"), a);
    }
    fuzz.healthz("the last request");
    println!(
        "{} requests over {} operations in {:?}; statuses {:?}",
        fuzz.sent,
        ops.len(),
        started.elapsed(),
        fuzz.statuses
    );
    assert!(
        fuzz.findings.is_empty(),
        "{} findings (seed {seed}):\n{}",
        fuzz.findings.len(),
        fuzz.findings[..fuzz.findings.len().min(40)].join("\n")
    );
    // Each group reached what it is for: accepted bodies where values are sound, refusals by
    // the checks where they are not (about half the counts of a run of today).
    let count = |group: &str, of: &dyn Fn(u16) -> bool| -> u64 {
        fuzz.statuses[group]
            .iter()
            .filter(|(s, _)| of(**s))
            .map(|(_, n)| n)
            .sum()
    };
    let ok = |s: u16| (200..300).contains(&s);
    let bad = |s: u16| s == 400;
    for (group, least_ok, least_400) in [
        ("field", 250, 3500),
        ("raw body", 0, 150),
        ("path", 0, 100),
        ("query", 100, 400),
        ("numeric", 30, 50),
        ("import", 0, 8),
    ] {
        let (o, b) = (count(group, &ok), count(group, &bad));
        assert!(
            o >= least_ok && b >= least_400,
            "{group}: {o} answers 2xx (at least {least_ok}), {b} answers 400 (at least \
             {least_400}); statuses {:?}",
            fuzz.statuses[group]
        );
    }
    let log = server.log();
    assert!(
        !log.contains("panicked"),
        "the server panicked:\n{}",
        log.lines()
            .filter(|l| l.contains("panicked"))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Vectors of the right dimension whose values are finite but extreme (their products
/// overflow f32, their norms are zero or subnormal), stored and searched in a collection of
/// each metric with the ranking options on; and a filter nested as deep as a body may be.
fn numeric_extremes(fuzz: &mut Fuzz<'_>, key: &str) {
    let vectors = [
        json!([3.4e38, 3.4e38, 3.4e38, 3.4e38]),
        json!([-3.4e38, 3.4e38, -3.4e38, 3.4e38]),
        json!([0.0, 0.0, 0.0, 0.0]),
        json!([1e-45, 1e-45, 0.0, -1e-45]),
        json!([-0.0, 0.0, 1.0, 0.0]),
        json!([1.0, 2.0, 3.0, 4.0]),
    ];
    for metric in ["cosine", "dot", "l2"] {
        let c = format!("n{metric}");
        let collection = json!({"name": c, "dim": 4, "metric": metric});
        fuzz.json(key, "POST", "/v1/collections", &collection);
        let records: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json!({"id": format!("{c}-{i}"), "modality": c, "vector": v, "content": "n"})
            })
            .collect();
        fuzz.json(key, "POST", "/v1/memories", &json!({ "records": records }));
        let link = json!({
            "source": format!("{c}-0"), "target": format!("{c}-1"), "relation": "r",
            "weight": 3.4e38
        });
        fuzz.json(key, "POST", "/v1/links", &link);
        for v in &vectors {
            for extra in [
                json!({}),
                json!({"min_score": -3.4e38, "explain": true}),
                json!({"confidence_weight": 3.4e38, "recency_half_life_secs": 1e-300}),
                json!({"query": "n", "mode": "hybrid", "fusion": "normalized_sum", "explain": true}),
                json!({"ef": 4_294_967_295u64, "k": 1_000_000}),
            ] {
                let mut body = json!({"vector": v, "modality": c, "k": 3});
                for (k, x) in extra.as_object().into_iter().flatten() {
                    body[k] = x.clone();
                }
                fuzz.json(key, "POST", "/v1/search", &body);
                fuzz.json(key, "POST", "/v1/recall", &body);
            }
            let feedback = json!({"modality": c, "vector": v, "ids": [format!("{c}-0")]});
            fuzz.json(key, "POST", "/v1/feedback", &feedback);
        }
    }
    let mut filter = json!({"kind": "x"});
    for i in 0..60 {
        filter = if i % 2 == 0 {
            json!({ "$and": [filter] })
        } else {
            json!({ "$or": [filter, {"metadata.a": {"$gt": 1e300}}] })
        };
    }
    let search = json!({"query": "n", "filter": filter});
    fuzz.json(key, "POST", "/v1/search", &search);
    fuzz.json(
        key,
        "POST",
        "/v1/memories/count",
        &json!({ "filter": filter }),
    );
}

/// Imports (JSON lines) whose lines are hostile past the first: each into a new tenant id, so
/// that each reaches the engine's checks rather than `409` for an existing tenant.
fn hostile_imports(fuzz: &mut Fuzz<'_>) {
    let tenant =
        r#"{"type":"tenant","id":"t","display_name":null,"created_at":1,"limits":{},"weight":1}"#;
    let collection = r#"{"type":"collection","name":"c","dim":2,"metric":"cosine"}"#;
    let record = |extra: &str| {
        format!(
            r#"{{"type":"record","id":"r","modality":"c","kind":null,"content":"x","vector":[0.5,0.5],"user_tokens":[],"memory_domain":"default","run_id":null,"memory_scope":null,"metadata":{{}},"created_at":1,"updated_at":1,"expires_at":null,"confidence":{{"value":0.5,"evidence_count":0,"corroborations":0,"contradictions":0}}{extra}}}"#
        )
    };
    let cases: Vec<Vec<String>> = vec![
        vec![tenant.into()],
        vec![collection.into()],
        vec![tenant.replace(r#""weight":1"#, r#""weight":4294967295"#)],
        vec![tenant.replace(r#""limits":{}"#, r#""limits":{"max_qps":1e300,"burst":0}"#)],
        vec![tenant.replace(r#""weight":1"#, r#""weight":1,"integrity_policy":{"consecutive":0}"#)],
        vec![tenant.into(), collection.replace(r#""dim":2"#, r#""dim":4294967295"#)],
        vec![tenant.into(), collection.replace(r#""dim":2"#, r#""dim":0"#)],
        vec![tenant.into(), collection.into(), record("").replace("[0.5,0.5]", "[1e39,0.5]")],
        vec![tenant.into(), collection.into(), record("").replace("[0.5,0.5]", "[0.5]")],
        vec![tenant.into(), collection.into(), record("").replace(r#""value":0.5"#, r#""value":1e300"#)],
        vec![tenant.into(), collection.into(), record(""), record("")],
        vec![tenant.into(), record("")],
        vec![tenant.into(), collection.into(), record(r#","surprise":1"#)],
        vec![
            tenant.into(),
            collection.into(),
            record(""),
            r#"{"type":"link","source":"r","target":"nope","relation":"x","weight":1e300,"created_at":1}"#.into(),
        ],
        vec![
            tenant.into(),
            collection.into(),
            record(""),
            r#"{"type":"pheromone","memory_domain":"default","id":"r","strength":1e300,"updated_at":1,"reinforcements":0,"exposures":0}"#.into(),
        ],
        vec![
            tenant.into(),
            collection.into(),
            r#"{"type":"narrative","memory_domain":"default","collection":"c","vector":[3.4e38,3.4e38],"updates":18446744073709551615,"updated_at":-1}"#.into(),
        ],
        vec![tenant.into(), "\u{0}".into()],
        vec![tenant.into(), String::new(), collection.into()],
    ];
    for (i, lines) in cases.iter().enumerate() {
        let body = lines.join("\n");
        let target = format!("/v1/admin/tenants/imp{i}/import");
        let ct = Some("application/x-ndjson");
        fuzz.request(
            OPERATOR_KEY,
            "POST",
            target.as_bytes(),
            ct,
            &[],
            body.as_bytes(),
        );
    }
}
