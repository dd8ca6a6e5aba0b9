//! Test harness: runs the real `strata` binary on port 0 with a temporary data directory,
//! reads the bound address from its stdout, talks HTTP to it, and kills it on drop.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod levels;
pub mod table;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub const OPERATOR_KEY: &str = "test-operator-key-0123456789abcdef";
pub const HS_SECRET: &str = "test-hs256-secret-of-at-least-32-bytes";
// Throwaway Ed25519 test keys (generated with `openssl genpkey -algorithm ed25519`).
pub const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIM+/f0gT0gVhdROVVrBw/0w1JLqRAkEYHnoXQ/DrXNQ9
-----END PRIVATE KEY-----
";
pub const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAyePH9yi6BUHxahjGhFDZtl0+EvVCq7Y4pJL/cpmaJ+M=
-----END PUBLIC KEY-----
";
pub const ED_OTHER_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILQUVU09SLTRhKsPqH988T1V9MirMmtgdOyQSg58xSHU
-----END PRIVATE KEY-----
";

/// How long a start may take to print its address, and a stop to exit, before the test
/// fails: far beyond what either takes on a loaded 2-core machine, and still an answer rather
/// than a hang.
const START_WITHIN: Duration = Duration::from_secs(180);
const STOP_WITHIN: Duration = Duration::from_secs(180);

pub struct Server {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    http: reqwest::blocking::Client,
    env: Vec<(String, String)>,
    /// Shell commands run before the server is `exec`ed (`ulimit`s), kept for restarts.
    limits: Option<String>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts the server with extra environment, e.g. config overrides `STRATA__…`.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        Server::launch(None, env)
    }

    /// Starts the server with its soft limit on open file descriptors set to `limit` (through
    /// the shell's `ulimit`, which then `exec`s the server, so the pid stays the server's).
    pub fn start_with_fd_limit(limit: u32, env: &[(&str, &str)]) -> Server {
        Server::launch(Some(format!("ulimit -n {limit}")), env)
    }

    /// Starts the server unable to grow any file past `bytes` (the shell's `ulimit -f`, with
    /// `SIGXFSZ` ignored so that a write past it fails with `EFBIG` as a full disk fails with
    /// `ENOSPC`, instead of killing the process). The limit holds across restarts until
    /// [`Server::lift_limits`].
    pub fn start_with_file_size_limit(bytes: u64, env: &[(&str, &str)]) -> Server {
        // `ulimit -f` counts 512-byte blocks in POSIX shells.
        Server::launch(
            Some(format!("trap '' XFSZ && ulimit -f {}", bytes.div_ceil(512))),
            env,
        )
    }

    /// Starts the next [`Server::restart`] without the limits it was started with.
    pub fn lift_limits(&mut self) {
        self.limits = None;
    }

    fn launch(limits: Option<String>, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, url) = spawn(dir.path(), limits.as_deref(), &env);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        Server {
            child,
            url,
            dir,
            http,
            env,
            limits,
        }
    }

    /// Stops the server cleanly (SIGTERM, as an operator would) and waits for it to exit.
    pub fn stop(&mut self) {
        if self.child.try_wait().expect("poll the server").is_some() {
            return;
        }
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success(), "kill -TERM failed");
        // Bounded: a server that hangs in its shutdown fails the test instead of hanging it
        // (generous, for a loaded machine; the server's own drain timeout is 30 s).
        let Some(exit) = self.wait_exit(STOP_WITHIN) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("the server did not stop within {STOP_WITHIN:?} of SIGTERM");
        };
        assert!(exit.success(), "the server did not stop cleanly: {exit}");
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to be gone; a
    /// [`Server::restart`] then starts it again.
    pub fn kill(&mut self) {
        let killed = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("send SIGKILL");
        assert!(killed.success(), "kill -KILL failed");
        assert!(
            self.wait_exit(Duration::from_secs(30)).is_some(),
            "the server outlived SIGKILL by 30 s"
        );
    }

    /// Stops the server cleanly and starts it again on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        let (child, url) = spawn(self.dir.path(), self.limits.as_deref(), &self.env);
        self.child = child;
        self.url = url;
    }

    /// Sets (or replaces) an environment variable of the server from its next
    /// [`Server::restart`] on, e.g. a config override `STRATA__…`.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Sends a request; returns the status and the JSON body (`null` when there is none).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (status, value, _) = self.call_with_id(method, path, key, headers, body);
        (status, value)
    }

    /// Like [`Server::call`], and also returns the response's `x-request-id`.
    pub fn call_with_id(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().expect("request");
        let status = res.status().as_u16();
        let id = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = res.text().expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            id,
        )
    }

    /// Sends a raw body with a content type; returns the status and the body as text.
    pub fn send_raw(
        &self,
        method: &str,
        path: &str,
        key: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
        self.send_raw_with(method, path, key, &[("content-type", content_type)], body)
    }

    /// Sends a raw body with the given headers; returns the status and the body as text.
    pub fn send_raw_with(
        &self,
        method: &str,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {key}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.body(body).send().expect("request");
        let status = res.status().as_u16();
        (status, res.text().expect("body"))
    }

    pub fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.call("GET", path, Some(key), &[], None)
    }

    pub fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(key), &[], Some(&body))
    }

    /// Registers a tenant and returns nothing; panics on failure.
    pub fn tenant(&self, id: &str) {
        let (s, v) = self.post("/v1/admin/tenants", OPERATOR_KEY, json!({ "id": id }));
        assert_eq!(s, 201, "{v}");
    }

    /// Verifies tenant `id` as the operator: no problem, and its stored usage equals a recount.
    pub fn verify_clean(&self, id: &str) {
        let (s, v) = self.post(
            &format!("/v1/admin/tenants/{id}/verify"),
            OPERATOR_KEY,
            json!({}),
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["usage_stored"], v["usage_recounted"], "{v}");
    }

    /// Hard-deletes tenant `id` as the operator; the status and the answer.
    pub fn hard_delete(&self, id: &str) -> (u16, Value) {
        self.call(
            "DELETE",
            &format!("/v1/admin/tenants/{id}?hard=true"),
            Some(OPERATOR_KEY),
            &[],
            None,
        )
    }

    /// Sets a tenant's limits (a merge patch); panics on failure.
    pub fn limit(&self, tenant: &str, limits: Value) {
        let (s, v) = self.call(
            "PATCH",
            &format!("/v1/admin/tenants/{tenant}"),
            Some(OPERATOR_KEY),
            &[],
            Some(&json!({ "limits": limits })),
        );
        assert_eq!(s, 200, "{v}");
    }

    /// Mints a key for `tenant` with the extra fields in `grant`; returns its secret.
    pub fn key(&self, tenant: &str, grant: Value) -> String {
        let mut body = json!({ "tenant": tenant });
        if let Value::Object(m) = grant {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let (s, v) = self.post("/v1/admin/keys", OPERATOR_KEY, body);
        assert_eq!(s, 201, "{v}");
        v["key"].as_str().expect("key in answer").to_owned()
    }

    /// The server's `host:port`, for raw TCP.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// The Prometheus text of `/metrics`, scraped with the operator key.
    pub fn metrics(&self) -> String {
        reqwest::blocking::Client::new()
            .get(format!("{}/metrics", self.url))
            .header("authorization", format!("Bearer {OPERATOR_KEY}"))
            .send()
            .expect("scrape")
            .text()
            .expect("body")
    }

    /// Sends `GET target` with `key` on a connection of its own and reads nothing of the
    /// answer: an unread client, whose answer the server holds.
    pub fn ask_and_never_read(&self, key: &str, target: &str) -> std::net::TcpStream {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(self.addr()).expect("connect");
        write!(
            s,
            "GET {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n"
        )
        .expect("send");
        s
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as an orchestrator stopping the server would.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `within` for the server to exit; its exit status, or `None` if it did not.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The server's log so far, for assertions on security events.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

/// Waits until the wall clock is in a later second than when called (at most a second): a
/// test that wants several steps to share one second of JWT `iat` starts with it.
pub fn into_next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    let rest = 1_000 - u64::from(now.subsec_millis());
    std::thread::sleep(Duration::from_millis(rest + 10));
}

/// Milliseconds since the Unix epoch, as `expires_at` takes them.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(now.as_millis()).expect("a time in range")
}

/// An expiry a moment ahead, for records a test wants expired: a write refuses an
/// `expires_at` that is already past. [`wait_past`] it before looking.
pub fn expiring_soon() -> i64 {
    now_ms() + 1_000
}

/// Returns once `t` (milliseconds since the epoch) has passed.
pub fn wait_past(t: i64) {
    while now_ms() <= t {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sets its flag when dropped: load threads that loop until told to stop are told so even
/// when the test body panics, so the scope joining them ends and the panic fails the test
/// (instead of the test hanging on threads that never stop).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Kills the child even when the test panics (drop runs during unwinding): no server outlives
/// its test.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary on `dir` (its data in `dir/data`, its log appended to `dir/server.log`) and
/// returns it with the address it printed.
fn spawn(dir: &std::path::Path, limits: Option<&str>, env: &[(String, String)]) -> (Child, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log file");
    let mut command = match limits {
        None => Command::new(env!("CARGO_BIN_EXE_strata")),
        Some(limits) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("{limits} && exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_strata"));
            sh
        }
    };
    let mut child = command
        .arg("serve")
        .env("STRATA__SERVER__LISTEN", "127.0.0.1:0")
        .env("STRATA__SERVER__DATA_DIR", dir.join("data"))
        // Never the working directory's `./backups`.
        .env("STRATA__SERVER__BACKUP_DIR", dir.join("backups"))
        .env("STRATA__AUTH__JWT_HS256_SECRET", HS_SECRET)
        .env("STRATA__AUTH__JWT_EDDSA_PUBLIC_KEY", ED_PUBLIC)
        .env("STRATA_OPERATOR_KEY", OPERATOR_KEY)
        .env("RUST_LOG", "info")
        // No embedder unless a test asks for one (`embedder_env`): fast starts, and no test
        // fetches the model from a working directory that lacks it.
        .env("STRATA__EMBEDDER__ENABLED", "false")
        .env_remove("STRATA_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn strata");
    let stdout = child.stdout.take().expect("piped stdout");
    // Read on a thread of its own, so that a server that never prints its address fails the
    // test after `START_WITHIN` instead of hanging it; the thread then keeps draining stdout
    // so the server never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("listening on ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    match rx.recv_timeout(START_WITHIN) {
        Ok(url) => (child, url),
        Err(e) => {
            // Not left running behind a failed test.
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            panic!(
                "the server printed no address ({e:?}); its log ends (last line first):\n{tail}"
            );
        }
    }
}

/// Runs `strata serve` with `env` over the tests' defaults (no embedder, the operator key) and
/// expects it to refuse to start; its stderr.
pub fn serve_refused(env: &[(&str, &std::ffi::OsStr)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .env("STRATA__EMBEDDER__ENABLED", "false")
        .env("STRATA_OPERATOR_KEY", OPERATOR_KEY)
        .env_remove("STRATA_CONFIG")
        .env_remove("RUST_BACKTRACE")
        .envs(env.iter().copied())
        .output()
        .expect("run strata serve");
    assert!(!out.status.success(), "the server started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the CLI against `server` with the operator key: whether it succeeded, its stdout and
/// its stderr.
pub fn operator_cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .args(["--server", &server.url])
        .env("STRATA_KEY", OPERATOR_KEY)
        .output()
        .expect("run strata");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The repository's model directory (filled by `scripts/fetch-model.sh`).
pub fn model_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/all-MiniLM-L6-v2").to_owned()
}

/// Environment for a server that runs the built-in embedder from the repository's model
/// directory, never fetching.
pub fn embedder_env(model_dir: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STRATA__EMBEDDER__ENABLED", "true".to_owned()),
        ("STRATA__EMBEDDER__AUTO_FETCH", "false".to_owned()),
        ("STRATA__EMBEDDER__MODEL_DIR", model_dir.to_owned()),
    ]
}

/// The error code of an error body.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// The status line's first bytes (`HTTP/1.1 200`) of the answer on `s`: once they are there,
/// the handler has returned and the body is hyper's to send. The rest stays unread.
pub fn status_line(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("an answer's first bytes");
    String::from_utf8_lossy(&head).into_owned()
}
