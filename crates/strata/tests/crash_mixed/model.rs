//! What the chaos test expects: records as their acknowledged writes left them, a seeded
//! random source, the failures found so far, and the HTTP calls of the load threads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};

pub const TENANTS: usize = 3;
pub const COLLECTION: &str = "vec";
pub const DIM: usize = 8;
pub const DOMAINS: [&str; 2] = ["default", "work"];
/// Principal sets a record may carry; the empty one is tenant-shared memory.
pub const TOKEN_SETS: [&[&str]; 4] = [&[], &["u:alice"], &["u:bob"], &["u:alice", "u:bob"]];
/// A word in every record's content, so a text search for it is exact.
pub const COMMON_WORD: &str = "memo";

pub fn tenant_id(t: usize) -> String {
    format!("chaos{t}")
}

/// SplitMix64: small, seedable, and the same sequence on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A non-zero vector whose components are multiples of 1/64, so JSON carries them exactly.
    pub fn vector(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIM)
            .map(|_| (self.below(129) as f32 - 64.0) / 64.0)
            .collect();
        v[0] = 0.5 + self.below(32) as f32 / 64.0;
        v
    }

    pub fn words(&mut self) -> String {
        const WORDS: [&str; 8] = [
            "apple", "river", "cloud", "stone", "ember", "lumen", "quartz", "tide",
        ];
        let n = 1 + self.below(4);
        let mut out = vec![COMMON_WORD.to_owned()];
        out.extend((0..n).map(|_| self.pick(&WORDS).to_string()));
        out.push(format!("n{}", self.next() % 10_000));
        out.join(" ")
    }
}

/// One record as the test expects it: the fields a client writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub domain: String,
    pub content: String,
    pub vector: Vec<f32>,
    /// Sorted, as the server keeps them.
    pub tokens: Vec<String>,
    pub run_id: Option<String>,
    pub memory_scope: Option<String>,
    pub metadata: Map<String, Value>,
    /// Evidence counted in its confidence: a write of the whole record starts both at 0.
    pub corroborations: u64,
    pub contradictions: u64,
    /// Pieces of evidence so far (this test gives only corroborations and contradictions).
    pub evidence_count: u64,
    /// The confidence value in billionths, so that a float parsed from JSON compares exactly.
    pub confidence: i64,
    /// The value itself, which the next piece of evidence starts from.
    pub exact_confidence: Carried<f64>,
    /// The record's collection and kind, and its expiry: the writes set none of the last two,
    /// so a value here is a field the server made up or mixed up.
    pub modality: String,
    pub kind: Option<String>,
    pub expires_at: Option<i64>,
}

/// A value a record carries along for the model's own arithmetic and never compares: what
/// is compared is derived from it (the confidence in billionths).
#[derive(Debug, Clone, Copy)]
pub struct Carried<T>(pub T);

impl<T> PartialEq for Carried<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A fresh record's confidence (the collection's default initial value).
pub const INITIAL_CONFIDENCE: f64 = 0.5;
/// The weight of the prior in the server's Beta-Bernoulli update, in observations.
const PRIOR_STRENGTH: f64 = 2.0;

/// A confidence value in billionths.
pub fn billionths(value: f64) -> i64 {
    (value * 1e9).round() as i64
}

impl Rec {
    /// A record as a first write of `content` leaves it: no tokens, run, scope or metadata
    /// (callers set theirs), no evidence yet, the initial confidence.
    pub fn fresh(domain: &str, content: String, vector: Vec<f32>) -> Rec {
        Rec {
            domain: domain.to_owned(),
            content,
            vector,
            tokens: Vec::new(),
            run_id: None,
            memory_scope: None,
            metadata: Map::new(),
            corroborations: 0,
            contradictions: 0,
            evidence_count: 0,
            confidence: billionths(INITIAL_CONFIDENCE),
            exact_confidence: Carried(INITIAL_CONFIDENCE),
            modality: COLLECTION.to_owned(),
            kind: None,
            expires_at: None,
        }
    }

    /// A record as the server answers it; `None` when a field is missing or mistyped.
    pub fn from_json(v: &Value) -> Option<Rec> {
        let strings = |v: &Value| -> Option<Vec<String>> {
            v.as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let optional = |v: &Value| -> Option<Option<String>> {
            match v {
                Value::Null => Some(None),
                Value::String(s) => Some(Some(s.clone())),
                _ => None,
            }
        };
        Some(Rec {
            domain: v["memory_domain"].as_str()?.to_owned(),
            content: v["content"].as_str()?.to_owned(),
            vector: v["vector"]
                .as_array()?
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<f32>>>()?,
            tokens: strings(&v["user_tokens"])?,
            run_id: optional(&v["run_id"])?,
            memory_scope: optional(&v["memory_scope"])?,
            metadata: v["metadata"].as_object()?.clone(),
            corroborations: v["confidence"]["corroborations"].as_u64()?,
            contradictions: v["confidence"]["contradictions"].as_u64()?,
            evidence_count: v["confidence"]["evidence_count"].as_u64()?,
            confidence: billionths(v["confidence"]["value"].as_f64()?),
            exact_confidence: Carried(v["confidence"]["value"].as_f64()?),
            modality: v["modality"].as_str()?.to_owned(),
            kind: optional(&v["kind"])?,
            expires_at: match &v["expires_at"] {
                Value::Null => None,
                x => Some(x.as_i64()?),
            },
        })
    }

    /// The record after one more piece of evidence, by the server's documented rule:
    /// `value' = (value · (n₀ + n) + x) / (n₀ + n + 1)`.
    pub fn add_evidence(&mut self, corroborate: bool) {
        let x = if corroborate { 1.0 } else { 0.0 };
        let weight = PRIOR_STRENGTH + self.evidence_count as f64;
        let value = ((self.exact_confidence.0 * weight + x) / (weight + 1.0)).clamp(0.0, 1.0);
        self.exact_confidence = Carried(value);
        self.confidence = billionths(value);
        self.evidence_count += 1;
        if corroborate {
            self.corroborations += 1;
        } else {
            self.contradictions += 1;
        }
    }

    /// The record's body in a write (its domain travels in the request scope).
    pub fn write_body(&self, id: &str) -> Value {
        json!({
            "id": id,
            "modality": COLLECTION,
            "content": self.content,
            "vector": self.vector,
            "user_tokens": self.tokens,
            "run_id": self.run_id,
            "memory_scope": self.memory_scope,
            "metadata": self.metadata,
        })
    }

    pub fn visible_to(&self, token: &str) -> bool {
        self.tokens.is_empty() || self.tokens.iter().any(|t| t == token)
    }
}

/// The failures found, each naming the seed and round; shared by every thread of a round.
pub struct Failures {
    pub seed: u64,
    pub round: u64,
    found: Mutex<Vec<String>>,
}

impl Failures {
    pub fn new(seed: u64, round: u64) -> Failures {
        Failures {
            seed,
            round,
            found: Mutex::new(Vec::new()),
        }
    }

    pub fn push(&self, what: String) {
        let line = format!("CRASH_SEED={} round {}: {what}", self.seed, self.round);
        eprintln!("{line}");
        self.found.lock().expect("failures").push(line);
    }

    pub fn assert_none(&self, when: &str) {
        let found = self.found.lock().expect("failures");
        assert!(
            found.is_empty(),
            "{} failure(s) {when} (replay with CRASH_SEED={}):\n{}",
            found.len(),
            self.seed,
            found.join("\n")
        );
    }
}

/// What the operator thread tells the clients: which tenants it may have suspended or
/// deleted, so their refusals are expected, not failures.
pub struct Shared {
    disturbed: Vec<AtomicBool>,
    /// Bumped whenever a tenant's flag is set or cleared, so a client that saw the flag
    /// change while its request ran knows a refusal may be the operator's doing.
    epoch: Vec<AtomicU64>,
    /// Migrations answered so far: some rounds kill the server just after one starts.
    pub migrations: AtomicU64,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            disturbed: (0..TENANTS).map(|_| AtomicBool::new(false)).collect(),
            epoch: (0..TENANTS).map(|_| AtomicU64::new(0)).collect(),
            migrations: AtomicU64::new(0),
        }
    }

    pub fn set_disturbed(&self, tenant: usize, on: bool) {
        self.disturbed[tenant].store(on, Ordering::SeqCst);
        self.epoch[tenant].fetch_add(1, Ordering::SeqCst);
    }

    /// A mark taken before a request; [`Shared::may_refuse`] compares it after the answer.
    pub fn mark(&self, tenant: usize) -> (bool, u64) {
        (
            self.disturbed[tenant].load(Ordering::SeqCst),
            self.epoch[tenant].load(Ordering::SeqCst),
        )
    }

    pub fn may_refuse(&self, tenant: usize, before: (bool, u64)) -> bool {
        before.0
            || self.disturbed[tenant].load(Ordering::SeqCst)
            || self.epoch[tenant].load(Ordering::SeqCst) != before.1
    }
}

/// An HTTP client for a load thread: its own connection pool and a timeout that still
/// answers on a loaded 2-core machine.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// Sends one request; `Err` when no answer arrived (the server was killed).
pub fn send(
    http: &reqwest::blocking::Client,
    method: &str,
    url: &str,
    key: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    send_with(http, method, url, key, body, &[]).map(|(s, v, _)| (s, v))
}

/// Like [`send`], with extra headers (an `Idempotency-Key`, an `X-Request-Id` the audit row
/// names); also says whether the answer was a replay (`Idempotent-Replayed: true`).
pub fn send_with(
    http: &reqwest::blocking::Client,
    method: &str,
    url: &str,
    key: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<(u16, Value, bool), String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http.request(method, url).bearer_auth(key);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let replayed = res
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = res.text().map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        replayed,
    ))
}

/// Whether an answer is the refusal the API documents for a tenant the operator suspended
/// (`403 TENANT_SUSPENDED`) or soft-deleted (`404 NOT_FOUND` naming the tenant): the only
/// refusals a pause may cause. Any other `4xx` is a failure even while the tenant is paused.
pub fn tenant_refusal(status: u16, v: &Value, tenant: &str) -> bool {
    let code = v["error"]["code"].as_str().unwrap_or("");
    let message = v["error"]["message"].as_str().unwrap_or("");
    match status {
        403 => code == "TENANT_SUSPENDED",
        404 => code == "NOT_FOUND" && message == format!("tenant {tenant} does not exist"),
        _ => false,
    }
}

/// A refusal the server may give any request under load: it applied nothing.
pub fn overloaded(status: u16) -> bool {
    status == 429 || status == 503
}

#[test]
fn the_model_follows_the_documented_evidence_rule() {
    let mut rec = Rec::fresh(DOMAINS[0], COMMON_WORD.to_owned(), vec![0.5; DIM]);
    // The first corroboration of a fresh memory moves it from 0.5 to 2/3, a contradiction
    // then back to (2/3 · 3 + 0) / 4 = 1/2.
    rec.add_evidence(true);
    assert_eq!(rec.confidence, billionths(2.0 / 3.0));
    rec.add_evidence(false);
    assert_eq!(rec.confidence, billionths(0.5));
    assert_eq!(
        (rec.evidence_count, rec.corroborations, rec.contradictions),
        (2, 1, 1)
    );
    let mut answered = rec.write_body("chaos0-c0-0");
    answered["memory_domain"] = json!(rec.domain);
    answered["confidence"] = json!({
        "value": 0.5, "evidence_count": 2, "corroborations": 1, "contradictions": 1,
    });
    answered["kind"] = Value::Null;
    answered["expires_at"] = Value::Null;
    assert_eq!(Rec::from_json(&answered), Some(rec.clone()));
    answered["expires_at"] = json!(1);
    assert_ne!(Rec::from_json(&answered), Some(rec));
}

#[test]
fn only_the_documented_refusals_of_a_paused_tenant_pass() {
    let error = |code: &str, message: &str| json!({"error": {"code": code, "message": message}});
    assert!(tenant_refusal(
        403,
        &error("TENANT_SUSPENDED", "tenant chaos0 is suspended"),
        "chaos0"
    ));
    assert!(tenant_refusal(
        404,
        &error("NOT_FOUND", "tenant chaos0 does not exist"),
        "chaos0"
    ));
    // A record that is not found, another tenant, another refusal: failures.
    assert!(!tenant_refusal(
        404,
        &error("NOT_FOUND", "not found"),
        "chaos0"
    ));
    assert!(!tenant_refusal(
        404,
        &error("NOT_FOUND", "tenant chaos1 does not exist"),
        "chaos0"
    ));
    assert!(!tenant_refusal(403, &error("FORBIDDEN", "no"), "chaos0"));
    assert!(!tenant_refusal(409, &error("CONFLICT", "moving"), "chaos0"));
    assert!(!tenant_refusal(401, &error("UNAUTHORIZED", "no"), "chaos0"));
}
