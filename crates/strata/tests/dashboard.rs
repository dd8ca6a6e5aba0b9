//! The operator dashboard in a real browser: the real binary, headless Chromium driven over
//! the Chrome DevTools protocol. Signs in with the operator key, reads the tenants table, opens
//! a tenant, suspends and resumes it (checked through the admin API), saves a screenshot under
//! `target/tmp/`, and fails if the page shows an error, throws, or requests any URL that is not
//! the server's own.
//!
//! Needs Chromium (`apt-get install -y chromium`; `.ci/run` installs it). Without it this test
//! fails and says so: a dashboard test that silently passes would test nothing.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{OPERATOR_KEY, Server};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// The browser: `STRATA_CHROMIUM`, or the first of the usual names on `PATH`.
fn chromium() -> String {
    if let Ok(path) = std::env::var("STRATA_CHROMIUM") {
        assert!(
            std::path::Path::new(&path).is_file(),
            "STRATA_CHROMIUM={path} is not a file: point it at a Chromium or Chrome binary"
        );
        return path;
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
        if found {
            return name.to_owned();
        }
    }
    panic!(
        "the dashboard test needs Chromium: install Debian's package with \
         `apt-get install -y chromium` (CI's .ci/run does), or set STRATA_CHROMIUM to a \
         Chromium or Chrome binary"
    );
}

/// A headless browser, killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    /// `host:port` of its DevTools endpoint.
    devtools: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox", // CI runs as root, where the sandbox cannot start.
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--window-size=1366,860",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chromium");
        // Chromium prints `DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…`.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or("").to_owned());
                }
            }
        });
        let devtools = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium did not open its DevTools port within 60 s");
        Browser {
            child,
            _profile: profile,
            devtools,
        }
    }

    /// The first page target's DevTools connection.
    fn page(&self) -> Page {
        let list: Value = reqwest::blocking::get(format!("http://{}/json/list", self.devtools))
            .expect("DevTools target list")
            .json()
            .expect("target list JSON");
        let url = list
            .as_array()
            .and_then(|l| l.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let stream = TcpStream::connect(&self.devtools).expect("DevTools socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("DevTools handshake");
        let mut page = Page {
            ws,
            next_id: 0,
            requests: Vec::new(),
            errors: Vec::new(),
        };
        for domain in ["Page", "Network", "Runtime"] {
            page.call(&format!("{domain}.enable"), json!({}));
        }
        page
    }
}

/// One page over the DevTools protocol, keeping what its events told us.
struct Page {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Every URL the page requested.
    requests: Vec<String>,
    /// Uncaught exceptions and `console.error` lines.
    errors: Vec<String>,
}

impl Page {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send to DevTools");
        loop {
            let msg = self.ws.read().expect("read from DevTools");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    fn event(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("Network.requestWillBeSent") => {
                if let Some(url) = v["params"]["request"]["url"].as_str() {
                    self.requests.push(url.to_owned());
                }
            }
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(v["params"]["exceptionDetails"].to_string());
            }
            Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                self.errors.push(v["params"]["args"].to_string());
            }
            _ => {}
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "evaluating {expr}: {r}"
        );
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true in the page.
    fn wait_for(&mut self, expr: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.eval(expr) == Value::Bool(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let body = self.eval("document.body.innerText");
        panic!("timed out waiting for {what} ({expr}); the page shows:\n{body}");
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        std::fs::write(path, png).expect("writing the screenshot");
    }
}

/// Standard base64 (the screenshot's encoding); a dependency for 20 lines is not worth it.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|c| u32::from(value(*c))).collect();
        let n = v.iter().fold(0u32, |acc, x| acc << 6 | x) << (6 * (4 - v.len()));
        out.extend_from_slice(&n.to_be_bytes()[1..v.len()]);
    }
    out
}

fn status_of(server: &Server, tenant: &str) -> String {
    let (s, v) = server.get(&format!("/v1/admin/tenants/{tenant}"), OPERATOR_KEY);
    assert_eq!(s, 200, "{v}");
    v["status"].as_str().expect("status").to_owned()
}

#[test]
fn operator_signs_in_reads_tenants_and_suspends_and_resumes_one() {
    let server = Server::start();
    for t in ["acme", "beta", "gamma"] {
        server.tenant(t);
    }
    server.limit(
        "acme",
        json!({"max_vectors": 1000, "max_storage_bytes": 10_000_000, "max_qps": 500}),
    );
    let acme = server.key("acme", json!({}));
    let beta = server.key("beta", json!({}));
    let load = |n: usize| {
        for i in 0..n {
            let (s, v) = server.post(
                "/v1/memories",
                &acme,
                json!({"content": format!("note {i}")}),
            );
            assert_eq!(s, 201, "{v}");
            server.get("/v1/collections", &beta);
        }
    };
    load(10);
    // A search loads acme's indexes, so its residency shows in the table.
    let (s, v) = server.post("/v1/search", &acme, json!({"query": "note", "k": 3}));
    assert_eq!(s, 200, "{v}");

    let browser = Browser::launch();
    let mut page = browser.page();
    page.call(
        "Page.navigate",
        json!({"url": format!("{}/dashboard", server.url)}),
    );
    page.wait_for(
        "document.readyState === 'complete' && !!document.getElementById('login-key')",
        "the sign-in form",
    );

    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    page.screenshot(&tmp.join("dashboard-login.png"));

    // Sign in.
    page.eval(&format!(
        "document.getElementById('login-key').value = {}; \
         document.getElementById('login-form').requestSubmit(); true",
        json!(OPERATOR_KEY)
    ));
    page.wait_for(
        "document.querySelectorAll('#tenants tbody tr[data-tenant]').length === 3",
        "the tenants table",
    );
    // It asks the server for its running data moves; with none, the section stays hidden.
    page.wait_for(
        "performance.getEntriesByType('resource').some((e) => e.name.endsWith('/v1/admin/migrations')) \
         && document.getElementById('migrations').hidden",
        "the running migrations, none",
    );
    // The key is in this tab's session storage only.
    assert_eq!(
        page.eval(
            "[localStorage.length, document.cookie, sessionStorage.getItem('strata.operatorKey')]"
        ),
        json!([0, "", OPERATOR_KEY])
    );

    // Read the table: every tenant, active, with acme's usage against its quota.
    let table = page.eval(
        "[...document.querySelectorAll('#tenants tbody tr')].map(tr => \
           [tr.dataset.tenant, ...[...tr.cells].map(td => td.textContent)])",
    );
    let rows = table.as_array().expect("rows");
    let ids: Vec<&str> = rows.iter().map(|r| r[0].as_str().unwrap_or("")).collect();
    for t in ["acme", "beta", "gamma"] {
        assert!(ids.contains(&t), "{table}");
    }
    assert!(rows.iter().all(|r| r[2] == "active"), "{table}");
    let head =
        page.eval("[...document.querySelectorAll('#tenants thead th')].map(th => th.textContent)");
    for col in [
        "Tenant",
        "Status",
        "Integrity",
        "Resident",
        "Records",
        "Vectors",
        "Storage",
        "QPS",
        "p99",
    ] {
        assert!(
            head.as_array().expect("head").contains(&json!(col)),
            "{head}"
        );
    }

    // The integrity and residency columns show each tenant's own figures: acme's indexes
    // were loaded by its writes, gamma's never.
    let cell = |col: &str, tenant: &str| {
        format!(
            "(() => {{ const i = [...document.querySelectorAll('#tenants thead th')].findIndex(th => th.dataset.col === '{col}'); \
               return document.querySelector('#tenants tbody tr[data-tenant=\"{tenant}\"]').cells[i].textContent; }})()"
        )
    };
    assert_eq!(page.eval(&cell("integrity", "acme")), json!("normal"));
    assert_eq!(page.eval(&cell("resident", "gamma")), json!("not loaded"));
    let (s, v) = server.get("/v1/admin/tenants/acme/residency", OPERATOR_KEY);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["resident"], true, "{v}");
    let acme_resident = page.eval(&cell("resident", "acme"));
    let shown = acme_resident.as_str().unwrap_or("");
    assert!(
        shown != "not loaded" && shown != "–" && shown.contains('B'),
        "{acme_resident}"
    );
    assert!(
        page.eval("document.getElementById('f-integrity').textContent") == json!("all normal"),
        "the header's integrity summary"
    );

    // Filtering narrows the table; clearing it brings everyone back.
    page.eval("{ const f = document.getElementById('filter'); f.value = 'bet'; f.dispatchEvent(new Event('input')); } true");
    assert_eq!(
        page.eval("[...document.querySelectorAll('#tenants tbody tr[data-tenant]')].map(tr => tr.dataset.tenant)"),
        json!(["beta"])
    );
    page.eval("{ const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); } true");

    // Open acme, let a few samples come in while it works, then suspend and resume it.
    page.eval("document.querySelector('#tenants tbody tr[data-tenant=\"acme\"]').click(); true");
    page.wait_for(
        "!document.getElementById('tenant-detail').hidden && \
         document.getElementById('tenant-name').textContent === 'acme'",
        "the tenant view",
    );
    page.wait_for(
        "[...document.querySelectorAll('#tenant-figures dt')].some(dt => dt.textContent === 'residency') && \
         document.querySelector('#tenant-transitions td') !== null",
        "the tenant's residency and integrity transitions",
    );
    let figures = page.eval("document.getElementById('tenant-figures').textContent");
    assert!(
        figures
            .as_str()
            .is_some_and(|f| f.contains("loaded") && f.contains("1 loads")),
        "{figures}"
    );
    assert!(
        page.requests
            .iter()
            .any(|u| u.ends_with("/v1/admin/tenants/acme/integrity")),
        "{:?}",
        page.requests
    );
    for _ in 0..3 {
        load(15);
        std::thread::sleep(Duration::from_millis(1500));
    }
    page.eval("document.getElementById('suspend').click(); true");
    page.wait_for(
        "document.getElementById('tenant-status').textContent === 'suspended'",
        "the tenant to show as suspended",
    );
    assert_eq!(status_of(&server, "acme"), "suspended");
    let (s, v) = server.get("/v1/collections", &acme);
    assert_eq!((s, common::code(&v)), (403, "TENANT_SUSPENDED"), "{v}");
    page.eval("document.getElementById('resume').click(); true");
    page.wait_for(
        "document.getElementById('tenant-status').textContent === 'active'",
        "the tenant to show as active again",
    );
    assert_eq!(status_of(&server, "acme"), "active");
    page.wait_for(
        "[...document.querySelectorAll('#tenant-audit td')].some(td => td.textContent === 'tenant.resume')",
        "the resume in the tenant's audit tail",
    );
    // Change a limit through the form; the admin API shows it, the others unchanged, even
    // one changed elsewhere since the form was filled (the form still shows 1000).
    let (s, v) = server.call(
        "PATCH",
        "/v1/admin/tenants/acme",
        Some(OPERATOR_KEY),
        &[],
        Some(&json!({"limits": {"max_vectors": 2000}})),
    );
    assert_eq!(s, 200, "{v}");
    page.eval(
        "document.querySelector('#limits input[name=\"max_qps\"]').value = '250'; \
         document.getElementById('limits-form').requestSubmit(); true",
    );
    page.wait_for(
        "document.getElementById('limits-note').textContent === 'Saved.'",
        "the limits to be saved",
    );
    let (s, v) = server.get("/v1/admin/tenants/acme", OPERATOR_KEY);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["limits"]["max_qps"], 250.0, "{v}");
    assert_eq!(v["limits"]["max_vectors"], 2000, "{v}");
    assert_eq!(v["limits"]["max_concurrent"], Value::Null, "{v}");
    load(10);
    std::thread::sleep(Duration::from_millis(2500));

    let shot = tmp.join("dashboard.png");
    page.screenshot(&shot);
    eprintln!("dashboard screenshot: {}", shot.display());

    // No error on the page, none in its console, and nothing fetched from elsewhere.
    let shown = page.eval("document.getElementById('error').textContent");
    assert_eq!(shown, json!(""), "the page shows an error");
    assert!(page.errors.is_empty(), "page errors: {:?}", page.errors);
    let foreign: Vec<&String> = page
        .requests
        .iter()
        .filter(|u| !u.starts_with(&format!("{}/", server.url)) && !u.starts_with("data:"))
        .collect();
    assert!(
        foreign.is_empty(),
        "the page requested other URLs: {foreign:?}"
    );
    assert!(
        page.requests.iter().any(|u| u.ends_with("/v1/admin/stats")),
        "{:?}",
        page.requests
    );
}
