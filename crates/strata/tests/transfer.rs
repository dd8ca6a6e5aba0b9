//! Export and import over HTTP and through the CLI: an export imported into a new tenant gives
//! the same search results; a bad line is `400` naming its line number and leaves nothing.

mod common;

use std::process::Command;

use common::{OPERATOR_KEY, Server, code, operator_cli};
use serde_json::{Value, json};

const ALL: &[&str] = &["read", "write", "admin", "all_principals"];

fn vector(seed: usize) -> Vec<f32> {
    (0..8)
        .map(|j| ((seed * 37 + j * 11) % 23) as f32 - 11.0)
        .collect()
}

/// A tenant with a custom collection, vectors, texts, principals and domains.
fn seed(server: &Server, id: &str) -> String {
    server.tenant(id);
    let key = server.key(id, json!({ "permissions": ALL }));
    let (s, v) = server.post(
        "/v1/collections",
        &key,
        json!({"name": "small", "dim": 8, "metric": "l2"}),
    );
    assert_eq!(s, 201, "{v}");
    let records: Vec<Value> = (0..60)
        .map(|i| {
            json!({
                "id": format!("r{i}"),
                "modality": "small",
                "vector": vector(i),
                "content": format!("note {i} about {}", ["coffee", "tea", "printers"][i % 3]),
                "user_tokens": if i % 2 == 0 { json!(["u:alice"]) } else { json!([]) },
                "metadata": {"n": i},
            })
        })
        .collect();
    let (s, v) = server.post("/v1/memories", &key, json!({"records": records}));
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"content": "support ticket about coffee", "memory_domain": "support"}),
    );
    assert_eq!(s, 201, "{v}");
    key
}

/// Ids and scores of a few searches, as the tenant's key sees them.
fn results(server: &Server, key: &str) -> Vec<Value> {
    let searches = [
        json!({"vector": vector(7), "modality": "small", "k": 10, "user_tokens": ["*"]}),
        json!({"vector": vector(3), "modality": "small", "k": 5, "user_tokens": ["u:alice"]}),
        json!({"query": "coffee", "modality": "small", "k": 10, "user_tokens": ["*"]}),
        json!({"query": "coffee", "k": 5, "memory_domain": "support"}),
    ];
    searches
        .iter()
        .map(|q| {
            let (s, v) = server.post("/v1/search", key, q.clone());
            assert_eq!(s, 200, "{q}: {v}");
            let hits = v["hits"].as_array().expect("hits");
            assert!(!hits.is_empty(), "{q}: no hits");
            json!(
                hits.iter()
                    .map(|h| json!([h["id"], h["score"]]))
                    .collect::<Vec<_>>()
            )
        })
        .collect()
}

fn export(server: &Server, id: &str) -> String {
    let res = reqwest::blocking::Client::new()
        .get(format!("{}/v1/admin/tenants/{id}/export", server.url))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .expect("export");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    res.text().expect("body")
}

fn import(server: &Server, id: &str, body: &str) -> (u16, Value) {
    let (s, text) = server.send_raw(
        "POST",
        &format!("/v1/admin/tenants/{id}/import"),
        OPERATOR_KEY,
        "application/x-ndjson",
        body.as_bytes().to_vec(),
    );
    (s, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn export_then_import_gives_the_same_search_results() {
    let server = Server::start();
    let key = seed(&server, "acme");
    let (s, _) = server.call(
        "PATCH",
        "/v1/admin/tenants/acme",
        Some(OPERATOR_KEY),
        &[],
        Some(&json!({
            "limits": {"max_vectors": 1000},
            "weight": 3,
            "metadata": {"team": "search", "owner": {"name": "ana"}},
        })),
    );
    assert_eq!(s, 200);
    let ndjson = export(&server, "acme");
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    // A header, 3 default collections plus `small`, 61 records, then the audit history.
    let count = |t: &str| lines.iter().filter(|l| l["type"] == t).count();
    assert_eq!(
        (count("tenant"), count("collection"), count("record")),
        (1, 4, 61)
    );
    assert!(
        count("audit") >= 3,
        "the tenant's audit rows are exported too"
    );
    assert_eq!(lines.len(), 1 + 4 + 61 + count("audit") + 1);
    assert_eq!(lines[0]["type"], "tenant");
    assert_eq!(lines[0]["end_line"], true);
    assert_eq!(
        lines.last().unwrap(),
        &json!({"type": "end", "collections": 4, "records": 61, "pheromones": 0,
                "narratives": 0, "links": 0, "audit": count("audit")})
    );

    let (s, v) = import(&server, "acme-copy", &ndjson);
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["weight"].as_u64()),
        (Some("active"), Some(3)),
        "{v}"
    );
    assert_eq!(v["limits"]["max_vectors"], 1000, "{v}");
    assert_eq!(
        v["metadata"],
        json!({"team": "search", "owner": {"name": "ana"}}),
        "{v}"
    );
    assert_eq!(v["usage"]["records"], 61, "{v}");
    let copy = server.key("acme-copy", json!({ "permissions": ALL }));
    assert_eq!(results(&server, &copy), results(&server, &key));
    // Importing onto an existing tenant is a conflict.
    let (s, v) = import(&server, "acme", &ndjson);
    assert_eq!((s, code(&v)), (409, "CONFLICT"), "{v}");
}

#[test]
fn a_bad_line_is_refused_by_number_and_leaves_nothing() {
    let server = Server::start();
    seed(&server, "acme");
    let ndjson = export(&server, "acme");
    let mut lines: Vec<&str> = ndjson.lines().collect();
    lines[6] = "{\"type\": \"record\", \"oops\": ";
    let (s, v) = import(&server, "broken", &lines.join("\n"));
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("line 7"), "{message}");
    let (s, _) = server.get("/v1/admin/tenants/broken", OPERATOR_KEY);
    assert_eq!(s, 404, "a failed import left a tenant behind");
    // An empty line is refused the same way, by number.
    let mut lines: Vec<&str> = ndjson.lines().collect();
    lines.insert(2, "");
    let (s, v) = import(&server, "broken", &lines.join("\n"));
    assert!(
        s == 400
            && v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("line 3"),
        "{v}"
    );
    // The first line must be the tenant line, and there must be one.
    let (s, v) = import(&server, "broken", "{\"type\": \"collection\"}\n");
    assert_eq!(s, 400, "{v}");
    let collection = ndjson.lines().nth(1).expect("a collection line");
    assert!(collection.contains("\"collection\""), "{collection}");
    let (s, v) = import(&server, "broken", collection);
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("begins with its tenant line"), "{v}");
    let (s, v) = import(&server, "broken", "");
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("the body is empty"), "{v}");
    let (s, _) = server.get("/v1/admin/tenants/broken", OPERATOR_KEY);
    assert_eq!(s, 404, "a refused import left a tenant behind");
    // A line with a repeated key, at any depth, is refused naming it, like a request body.
    let mut lines: Vec<String> = ndjson.lines().map(str::to_owned).collect();
    lines[6] = lines[6].replacen('{', "{\"zz\":{\"dup\":1,\"dup\":2},", 1);
    let (s, v) = import(&server, "broken", &lines.join("\n"));
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert_eq!(s, 400, "{v}");
    assert!(
        message.contains("line 7") && message.contains("duplicate key `dup`"),
        "{message}"
    );
}

#[test]
fn cli_export_and_import_round_trip() {
    let server = Server::start();
    let key = seed(&server, "acme");
    let file = server.dir.path().join("acme.ndjson");
    let path = file.to_str().expect("utf-8 path");
    let (ok, _, err) = operator_cli(&server, &["tenant", "export", "acme", "-o", path]);
    assert!(ok, "{err}");
    // Written aside and renamed over the file: no temporary is left.
    assert!(!server.dir.path().join("acme.ndjson.partial").exists());
    // A tenant that does not exist: no file at all.
    let none = server.dir.path().join("nobody.ndjson");
    let (ok, _, refused) = operator_cli(
        &server,
        &["tenant", "export", "nobody", "-o", none.to_str().unwrap()],
    );
    assert!(!ok && refused.contains("NOT_FOUND"), "{refused}");
    assert!(!none.exists(), "{refused}");
    assert!(!server.dir.path().join("nobody.ndjson.partial").exists());
    let written = std::fs::read_to_string(&file)
        .expect("export file")
        .lines()
        .count();
    assert!(written > 66, "records and audit rows: {written}");
    assert!(err.contains(&format!("exported {written} lines")), "{err}");
    // The bar counts records (the only lines known in advance); the summary says how many.
    let records = std::fs::read_to_string(&file)
        .expect("export file")
        .lines()
        .filter(|l| l.starts_with(r#"{"type":"record""#))
        .count();
    assert!(records > 0 && records < written, "{records} of {written}");
    assert!(err.contains(&format!("({records} records)")), "{err}");
    // Not a terminal: no progress bar escape codes.
    assert!(!err.contains('\u{1b}'), "{err:?}");
    let (ok, out, err) = operator_cli(&server, &["tenant", "import", "acme-cli", path]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json answer");
    assert_eq!(v["usage"]["records"], 61, "{v}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
    let copy = server.key("acme-cli", json!({ "permissions": ALL }));
    assert_eq!(results(&server, &copy), results(&server, &key));
    // Export to stdout is the same export (the audit log, and the end line's count of it,
    // have grown by the first export).
    let (ok, out, err) = operator_cli(&server, &["tenant", "export", "acme"]);
    assert!(ok, "{err}");
    let data = |s: &str| {
        s.lines()
            .filter(|l| {
                !l.starts_with("{\"type\":\"audit\"") && !l.starts_with("{\"type\":\"end\"")
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let first = std::fs::read_to_string(&file).expect("file");
    assert_eq!(data(&out), data(&first));
    assert_eq!(
        out.lines().count(),
        first.lines().count() + 1,
        "one more audit row: the first export"
    );
    let (ok, _, err) = operator_cli(&server, &["tenant", "import", "acme-cli", path]);
    assert!(!ok && err.contains("CONFLICT"), "{err}");
    // `-` reads the export from standard input.
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "tenant",
            "import",
            "acme-stdin",
            "-",
            "--server",
            &server.url,
        ])
        .env("STRATA_KEY", OPERATOR_KEY)
        .stdin(std::fs::File::open(&file).expect("export file"))
        .output()
        .expect("run strata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let piped = server.key("acme-stdin", json!({ "permissions": ALL }));
    assert_eq!(results(&server, &piped), results(&server, &key));
    // A directory is named as such, not reported as a server that cannot be reached.
    let dir = server.dir.path().to_str().expect("utf-8 path");
    let (ok, _, err) = operator_cli(&server, &["tenant", "import", "acme-dir", dir]);
    assert!(!ok && err.contains("is a directory"), "{err}");
    assert!(!err.contains("cannot reach"), "{err}");
}

/// `strata tenant export acme | head`: the reader leaves early, and the CLI stops quietly
/// with success, as a Unix filter does, instead of failing with "Broken pipe".
#[test]
fn an_export_piped_into_a_reader_that_leaves_early_ends_quietly() {
    use std::io::BufRead;
    let server = Server::start();
    let key = seed(&server, "acme");
    // More than a pipe's buffer, so the export is still writing when its reader leaves.
    for batch in 0..4 {
        let records: Vec<Value> = (0..500)
            .map(|i| json!({"content": format!("filler {batch} {i} {}", "x".repeat(300))}))
            .collect();
        let (s, v) = server.post("/v1/memories", &key, json!({"records": records}));
        assert_eq!(s, 201, "{v}");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["tenant", "export", "acme", "--server", &server.url])
        .env("STRATA_KEY", OPERATOR_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run strata");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    assert!(first.starts_with('{'), "{first}");
    // The reader is dropped here: the pipe's read end is closed.
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("Broken pipe"), "{err}");
    // The same for a command's answer (`strata audit | head -c 10`): its stdout is closed
    // before the answer is written; the command did what was asked and ends with success.
    for args in [&["audit", "--limit", "1000"][..], &["tenant", "list"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .args(["--server", &server.url])
            .env("STRATA_KEY", OPERATOR_KEY)
            .env_remove("RUST_BACKTRACE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run strata");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?}: {err}", out.status);
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn imports_larger_than_max_import_bytes_are_refused() {
    let server = Server::start_with(&[("STRATA__SERVER__MAX_IMPORT_BYTES", "4096")]);
    seed(&server, "acme");
    let ndjson = export(&server, "acme");
    assert!(ndjson.len() > 4096);
    let (s, v) = import(&server, "big", &ndjson);
    assert_eq!((s, code(&v)), (413, "PAYLOAD_TOO_LARGE"), "{v}");
    let (s, _) = server.get("/v1/admin/tenants/big", OPERATOR_KEY);
    assert_eq!(s, 404, "a refused import left a tenant behind");
}

/// An import cut short by `SIGKILL` (its body still arriving) leaves nothing once the server
/// is back: the partial tenant is discarded at start, and the import can be sent again.
#[test]
fn an_import_killed_midway_leaves_nothing_after_a_restart() {
    use std::io::Write;

    let mut server = Server::start();
    seed(&server, "acme");
    let ndjson = export(&server, "acme");
    let lines: Vec<&str> = ndjson.lines().collect();
    let half = lines.len() / 2;
    // The first half of the body in one chunk of a chunked request that never ends.
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    let chunk = lines[..half].join("\n") + "\n";
    write!(
        stream,
        "POST /v1/admin/tenants/acme-copy/import HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {OPERATOR_KEY}\r\nContent-Type: application/x-ndjson\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n",
        chunk.len()
    )
    .expect("send half the body");
    stream.flush().expect("flush");
    // Wait until the import has created its tenant (suspended), then kill the server.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (s, v) = server.get("/v1/admin/tenants/acme-copy", OPERATOR_KEY);
        if s == 200 {
            assert_eq!(v["status"], "suspended", "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the import never began"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.kill();
    drop(stream);
    server.restart();
    let (s, v) = server.get("/v1/admin/tenants/acme-copy", OPERATOR_KEY);
    assert_eq!(s, 404, "an import cut short left a tenant behind: {v}");
    assert!(
        server.log().contains("discarded an import cut short"),
        "the discard is logged"
    );
    let (s, v) = import(&server, "acme-copy", &ndjson);
    assert_eq!(s, 201, "{v}");
}

/// An export cut after a complete line (disk full, an interrupted copy, `head`) is refused
/// naming the line it ends after, and leaves nothing; so is one whose end line is not last or
/// whose counts disagree with the file. An export of an earlier version (no end line, none
/// announced in its tenant line) imports as before.
#[test]
fn a_truncated_export_is_refused_and_leaves_nothing() {
    let server = Server::start();
    seed(&server, "acme");
    let ndjson = export(&server, "acme");
    let lines: Vec<&str> = ndjson.lines().collect();
    let refused = |body: String, expected: &str| {
        let (s, v) = import(&server, "cut", &body);
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{expected}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(expected), "{expected}: {message}");
        let (s, _) = server.get("/v1/admin/tenants/cut", OPERATOR_KEY);
        assert_eq!(s, 404, "{expected}: a refused import left a tenant behind");
    };
    for keep in [1, 30, lines.len() - 1] {
        refused(
            lines[..keep].join("\n") + "\n",
            &format!("the file ends after line {keep} without its end line: it is incomplete"),
        );
    }
    // A line after the end line (its counts right for what came before).
    let mut after = lines.clone();
    after.push(lines[lines.len() - 2]);
    refused(
        after.join("\n"),
        &format!(
            "import line {}: a line after the end line (line {})",
            lines.len() + 1,
            lines.len()
        ),
    );
    // A record line left out (lines 6 to 66 are the records).
    let mut short = lines.clone();
    short.remove(10);
    refused(
        short.join("\n"),
        "the end line's counts disagree with the file (records: the end line says 61, the file has 60)",
    );
    // As an earlier version exported it: no end line, none announced.
    let mut tenant: Value = serde_json::from_str(lines[0]).unwrap();
    tenant.as_object_mut().unwrap().remove("end_line");
    let earlier = std::iter::once(tenant.to_string())
        .chain(lines[1..lines.len() - 1].iter().map(|l| l.to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    let (s, v) = import(&server, "cut", &earlier);
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["usage"]["records"], 61, "{v}");
}

/// A field no line of its kind has is refused on every kind of line, naming the line and the
/// field, as the API refuses unknown fields: a hand-edited backup never loses data silently.
#[test]
fn an_unknown_field_is_refused_on_every_line_naming_it() {
    let server = Server::start();
    seed(&server, "acme");
    let ndjson = export(&server, "acme");
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = |kind: &str| lines.iter().position(|l| l["type"] == kind).unwrap();
    for (kind, field) in [
        ("tenant", "colour"),
        ("collection", "analyser"),
        ("record", "colour"),
        ("audit", "colour"),
        ("end", "colour"),
    ] {
        let at = first(kind);
        let mut edited = lines.clone();
        edited[at][field] = json!("english");
        let body: Vec<String> = edited.iter().map(Value::to_string).collect();
        let (s, v) = import(&server, "edited", &body.join("\n"));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{kind}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.starts_with(&format!("import line {}: ", at + 1))
                && message.contains(&format!("unknown field `{field}`")),
            "{kind}: {message}"
        );
        let (s, _) = server.get("/v1/admin/tenants/edited", OPERATOR_KEY);
        assert_eq!(s, 404, "{kind}: a refused import left a tenant behind");
    }
}

/// A record id given twice is refused naming both its lines; a collection wider than the
/// server takes names the limit and the setting.
#[test]
fn import_messages_name_the_lines_and_the_limit() {
    let server = Server::start();
    seed(&server, "acme");
    let ndjson = export(&server, "acme");
    let mut lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Lines 7 and 40 are records (6 to 66); the second takes the first's id.
    assert_eq!(
        (&lines[6]["type"], &lines[39]["type"]),
        (&json!("record"), &json!("record"))
    );
    lines[39]["id"] = lines[6]["id"].clone();
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    let (s, v) = import(&server, "twice", &body.join("\n"));
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    let id = lines[6]["id"].as_str().unwrap();
    assert_eq!(
        message,
        format!("import line 40: record {id} appears twice (an earlier line has it)"),
        "{v}"
    );

    let mut lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[1]["type"], "collection");
    lines[1]["dim"] = json!(5000);
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    let (s, v) = import(&server, "wide", &body.join("\n"));
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("import line 2: ")
            && message
                .contains("has dim 5000; this server takes 1 to 4096 (engine.limits.max_dim)"),
        "{message}"
    );
    // A record's content is held to what a write may send: text, not blanks alone.
    for blank in ["", " \n", "\u{200b}"] {
        let mut lines: Vec<Value> = ndjson
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines[6]["content"] = json!(blank);
        let body: Vec<String> = lines.iter().map(Value::to_string).collect();
        let (s, v) = import(&server, "blank", &body.join("\n"));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.starts_with("import line 7: content: is empty or whitespace only"),
            "{message}"
        );
    }
    for id in ["twice", "wide", "blank"] {
        let (s, _) = server.get(&format!("/v1/admin/tenants/{id}"), OPERATOR_KEY);
        assert_eq!(s, 404, "{id}: a refused import left a tenant behind");
    }
}

/// A tenant an operator put below its own usage (limits lowered after its writes) exports and
/// imports whole: a backup of a tenant the server runs must restore. The imported tenant keeps
/// those limits, and its next write is `403 QUOTA_EXCEEDED` naming the quota, as the original's
/// is.
#[test]
fn a_tenant_past_its_own_limits_exports_and_imports_whole() {
    let server = Server::start();
    seed(&server, "acme");
    // 60 vectors, 4 collections (3 default and `small`), 61 records of some KiB.
    server.limit("acme", json!({"max_vectors": 2, "max_collections": 3}));
    let ndjson = export(&server, "acme");
    let (s, v) = import(&server, "copy", &ndjson);
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (
            v["usage"]["vectors"].as_u64(),
            v["usage"]["collections"].as_u64(),
            v["limits"]["max_vectors"].as_u64()
        ),
        (Some(60), Some(4), Some(2)),
        "{v}"
    );
    for tenant in ["acme", "copy"] {
        let key = server.key(tenant, json!({ "permissions": ALL }));
        let (s, v) = server.post(
            "/v1/memories",
            &key,
            json!({"content": "one more", "modality": "small", "vector": vec![0.5f32; 8]}),
        );
        assert_eq!((s, code(&v)), (403, "QUOTA_EXCEEDED"), "{tenant}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("max_vectors"), "{tenant}: {message}");
    }
}

/// Imported audit rows are kept as the importing tenant's history, marked `imported`: their
/// tenant is the new one, their actor `imported`, the source's tenant and actor only in the
/// mark, and no client address or request id of the source's requests.
#[test]
fn imported_audit_rows_carry_no_foreign_identity() {
    let server = Server::start();
    seed(&server, "acme");
    let ndjson = export(&server, "acme");
    let source_rows: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter(|l| l["type"] == "audit")
        .collect();
    let put = source_rows
        .iter()
        .find(|r| r["action"] == "memory.put")
        .expect("a memory.put row");
    let source_actor = put["actor"].as_str().expect("actor").to_owned();
    let source_client = put["client"].as_str().expect("client").to_owned();
    assert!(source_actor.starts_with("key:"), "{put}");

    let (s, v) = import(&server, "acme-copy", &ndjson);
    assert_eq!(s, 201, "{v}");
    let copy = server.key("acme-copy", json!({ "permissions": ALL }));
    let (s, v) = server.get("/v1/audit?limit=1000", &copy);
    assert_eq!(s, 200, "{v}");
    let rows = v["rows"].as_array().expect("rows");
    let imported: Vec<&Value> = rows.iter().filter(|r| !r["imported"].is_null()).collect();
    assert_eq!(imported.len(), source_rows.len(), "{v}");
    for row in &imported {
        assert_eq!(row["tenant"], "acme-copy", "{row}");
        assert_eq!(row["actor"], "imported", "{row}");
        assert!(
            row["client"].is_null() && row["request_id"].is_null(),
            "{row}"
        );
        assert_eq!(row["imported"]["tenant"], "acme", "{row}");
    }
    let put = imported
        .iter()
        .find(|r| r["action"] == "memory.put")
        .expect("the imported memory.put row");
    assert_eq!(put["imported"]["actor"], source_actor.as_str(), "{put}");
    // No imported row names the source's tenant or key as its own, nor its client address.
    for row in &imported {
        let own = json!([
            row["tenant"],
            row["actor"],
            row["client"],
            row["request_id"]
        ]);
        let text = own.to_string();
        assert!(
            !text.contains("\"acme\"") && !text.contains(&source_actor),
            "{row}"
        );
        assert!(!row.to_string().contains(&source_client), "{row}");
    }
    // The import itself is this server's row, unmarked.
    assert!(
        rows.iter()
            .any(|r| r["action"] == "tenant.import" && r["imported"].is_null()),
        "{v}"
    );
}

/// A record's confidence, evidence included (its value, its counts of corroborations and
/// contradictions), comes back from an export and an import exactly as it was: an import
/// that recomputed it from the collection's initial confidence would lose what was learnt.
#[test]
fn an_imported_record_keeps_its_confidence_and_evidence_exactly() {
    let server = Server::start();
    server.tenant("ev");
    let key = server.key("ev", json!({ "permissions": ALL }));
    let (s, v) = server.post(
        "/v1/collections",
        &key,
        json!({"name": "c", "dim": 4, "initial_confidence": 0.7}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "m", "modality": "c", "vector": [1.0, 0.5, 0.0, 0.25], "content": "a note"}),
    );
    assert_eq!(s, 201, "{v}");
    for evidence in [
        json!({"corroborate": true}),
        json!({"corroborate": true}),
        json!({"contradict": true}),
        json!({"signal": 0.3}),
    ] {
        let (s, v) = server.post("/v1/memories/m/evidence", &key, evidence.clone());
        assert_eq!(s, 200, "{evidence}: {v}");
    }
    let (s, original) = server.get("/v1/memories/m", &key);
    assert_eq!(s, 200, "{original}");
    let confidence = &original["confidence"];
    assert!(
        confidence["corroborations"].as_u64() > Some(0)
            && confidence["contradictions"].as_u64() > Some(0),
        "evidence of both kinds: {confidence}"
    );
    assert_ne!(confidence["value"], 0.7, "{confidence}");

    let (s, v) = import(&server, "ev-copy", &export(&server, "ev"));
    assert_eq!(s, 201, "{v}");
    let copy = server.key("ev-copy", json!({ "permissions": ALL }));
    let (s, imported) = server.get("/v1/memories/m", &copy);
    assert_eq!(s, 200, "{imported}");
    assert_eq!(imported["confidence"], original["confidence"]);
}

/// Floats a client stores come back as it sent them, digit for digit, from a read and from an
/// export imported elsewhere. Each of these doubles is one the JSON parser's fast path reads
/// one unit in the last place off (about one random double in nine is).
#[test]
fn stored_floats_come_back_digit_for_digit() {
    const FLOATS: [&str; 3] = [
        "90.08966719419209",
        "365.87992443022756",
        "223.16896362404054",
    ];
    let server = Server::start();
    server.tenant("fl");
    let key = server.key("fl", json!({ "permissions": ALL }));
    let body = format!(
        r#"{{"id": "f", "content": "coordinates", "metadata": {{"at": [{}]}}}}"#,
        FLOATS.join(", ")
    );
    let (s, text) = server.send_raw(
        "POST",
        "/v1/memories",
        &key,
        "application/json",
        body.into(),
    );
    assert_eq!(s, 201, "{text}");
    let read_raw = |key: &str| {
        let (s, text) = server.send_raw("GET", "/v1/memories/f", key, "application/json", vec![]);
        assert_eq!(s, 200, "{text}");
        text
    };
    let (read, exported) = (read_raw(&key), export(&server, "fl"));
    let (s, v) = import(&server, "fl-copy", &exported);
    assert_eq!(s, 201, "{v}");
    let imported = read_raw(&server.key("fl-copy", json!({ "permissions": ALL })));
    for float in FLOATS {
        for (what, text) in [
            ("read", &read),
            ("export", &exported),
            ("import", &imported),
        ] {
            assert!(text.contains(float), "{what} lost {float}: {text}");
        }
    }
}
