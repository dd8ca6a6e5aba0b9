//! The admin CLI: `strata tenant …` and `strata key …` call a running server's operator API
//! with an operator key, and print the JSON answers.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

/// Where and as whom the CLI talks.
pub struct Client {
    http: reqwest::Client,
    server: String,
    key: String,
}

impl Client {
    pub fn new(server: &str, key: Option<String>) -> anyhow::Result<Self> {
        let key = key.context("an operator key is needed: pass --key or set STRATA_KEY")?;
        Ok(Client {
            http: reqwest::Client::new(),
            server: server.trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// A client whose every request fails after `timeout` (a benchmark's load generator: a
    /// stuck answer must count as a failure, not hang the run).
    pub fn with_timeout(
        server: &str,
        key: Option<String>,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let mut client = Client::new(server, key)?;
        client.http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(client)
    }

    /// Sends one request and returns the JSON answer; an error answer becomes an error that
    /// carries the server's code and message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = self.send(req).await?;
        Ok(res.json().await.unwrap_or(Value::Null))
    }

    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A request to `path` with the operator key, for callers that need more than JSON.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.server))
            .bearer_auth(&self.key)
    }

    /// Sends a request; an error answer becomes an error that carries the server's code and
    /// message.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.server))?;
        Self::successful(res).await
    }

    /// The JSON of an answer already received, or its error as [`Client::call`] makes it.
    pub async fn answer_json(&self, res: reqwest::Response) -> anyhow::Result<Value> {
        let res = Self::successful(res).await?;
        Ok(res.json().await.unwrap_or(Value::Null))
    }

    async fn successful(res: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let value: Value = res.json().await.unwrap_or(Value::Null);
        let code = value["error"]["code"].as_str().unwrap_or("?");
        let message = value["error"]["message"].as_str().unwrap_or("");
        bail!("{status} {code}: {message}");
    }
}

/// A tenant id as one path segment: an id the server would refuse (`a/b`, `x?y`) must reach
/// it as that id and be refused, not become another path or a query (`tenant delete
/// 'acme?hard=true'` must not erase `acme`).
pub fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Limits given as CLI flags; only the ones given are sent, so the others stay as they are.
/// Each takes a value, or `none`, which removes the limit.
#[derive(Debug, Default, clap::Args)]
pub struct LimitFlags {
    #[arg(long, value_parser = limit::<u64>)]
    pub max_vectors: Option<Limit<u64>>,
    #[arg(long, value_parser = limit::<u64>)]
    pub max_storage_bytes: Option<Limit<u64>>,
    #[arg(long, value_parser = limit::<u64>)]
    pub max_collections: Option<Limit<u64>>,
    /// Sustained requests per second.
    #[arg(long, value_parser = rate_limit)]
    pub max_qps: Option<Limit<f64>>,
    /// Token bucket size.
    #[arg(long, value_parser = limit::<u32>)]
    pub burst: Option<Limit<u32>>,
    #[arg(long, value_parser = limit::<u32>)]
    pub max_concurrent: Option<Limit<u32>>,
    #[arg(long, value_parser = limit::<u32>)]
    pub max_spreading_depth: Option<Limit<u32>>,
}

/// A limit flag's value: a figure, or `none` (no limit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit<T> {
    At(T),
    Unlimited,
}

impl<T: serde::Serialize> Limit<T> {
    /// As a merge patch sends it: `null` removes the limit.
    fn patch(&self) -> Value {
        match self {
            Limit::At(v) => json!(v),
            Limit::Unlimited => Value::Null,
        }
    }
}

fn limit<T: std::str::FromStr>(s: &str) -> Result<Limit<T>, String>
where
    T::Err: std::fmt::Display,
{
    if s == "none" {
        return Ok(Limit::Unlimited);
    }
    s.parse()
        .map(Limit::At)
        .map_err(|e| format!("{s:?}: {e} (give a number, or none to remove the limit)"))
}

/// A rate: finite and above zero (`nan` or `inf` would travel as JSON `null`, which removes
/// the limit instead of setting it), or `none`.
fn rate_limit(s: &str) -> Result<Limit<f64>, String> {
    if s == "none" {
        return Ok(Limit::Unlimited);
    }
    match s.parse::<f64>() {
        Ok(q) if q.is_finite() && q > 0.0 => Ok(Limit::At(q)),
        _ => Err(format!(
            "{s:?} is not a positive number of requests per second (or none to remove the \
             limit)"
        )),
    }
}

/// `--metadata`: a JSON object (or, for an update, `null`, which removes it all), checked
/// here so that a typo fails before a request is sent.
pub fn metadata_arg(s: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ (Value::Object(_) | Value::Null)) => Ok(v),
        Ok(_) => Err("metadata must be a JSON object, e.g. '{\"team\":\"search\"}'".into()),
        Err(e) => Err(format!("metadata is not JSON: {e}")),
    }
}

/// `--server` (or `STRATA_SERVER`): an `http` URL with a host, checked here so that a value
/// that is no URL at all, or one this CLI cannot speak (it has no TLS client), is reported as
/// such, not as a server that cannot be reached.
pub fn server_arg(s: &str) -> Result<String, String> {
    const EXAMPLE: &str = "e.g. http://127.0.0.1:7700";
    match reqwest::Url::parse(s) {
        Ok(url) if url.scheme() == "http" && url.has_host() => Ok(s.to_owned()),
        Ok(url) if url.scheme() == "https" => Err(format!(
            "not a valid server URL for this CLI: it speaks plain HTTP only (no TLS client is \
             built in); give the server's http:// address ({EXAMPLE}), or reach it through a \
             local TLS-terminating proxy"
        )),
        Ok(url) => Err(format!(
            "not a valid server URL: it must be http:// with a host ({EXAMPLE}), and this \
             one's scheme is {:?}",
            url.scheme()
        )),
        Err(e) => Err(format!("not a valid server URL ({e}); {EXAMPLE}")),
    }
}

/// `--integrity-policy` of `tenant create`: a JSON object, checked for shape here so that a
/// typo fails before a request is sent; the server checks the thresholds.
pub fn integrity_policy_arg(s: &str) -> Result<Value, String> {
    integrity_policy_patch_arg(s).and_then(|v| match v {
        Value::Null => Err(
            "integrity policy must be a JSON object at creation (leave the flag out for the \
             server configuration's)"
                .into(),
        ),
        v => Ok(v),
    })
}

/// `--integrity-policy` of `tenant update`: a JSON object, or `null`, which clears it.
pub fn integrity_policy_patch_arg(s: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ (Value::Object(_) | Value::Null)) => Ok(v),
        Ok(_) => Err(
            "integrity policy must be a JSON object, e.g. '{\"latency_contract_ms\":50}'".into(),
        ),
        Err(e) => Err(format!("integrity policy is not JSON: {e}")),
    }
}

/// `--index-params` of `tenant migrate`: a JSON object, checked here so that a typo fails
/// before a migration is asked for.
pub fn json_object_arg(s: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("index params must be a JSON object, e.g. '{\"m\":32}'".into()),
        Err(e) => Err(format!("index params are not JSON: {e}")),
    }
}

/// The body of `PATCH /v1/admin/tenants/{id}` from CLI flags. Limits go as a merge patch
/// (`none` as `null`, which removes the limit).
pub fn update_body(name: Option<String>, limits: &LimitFlags, weight: Option<u32>) -> Value {
    let mut l = serde_json::Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            l.insert(k.to_owned(), v);
        }
    };
    put("max_vectors", limits.max_vectors.map(|v| v.patch()));
    put(
        "max_storage_bytes",
        limits.max_storage_bytes.map(|v| v.patch()),
    );
    put("max_collections", limits.max_collections.map(|v| v.patch()));
    put("max_qps", limits.max_qps.map(|v| v.patch()));
    put("burst", limits.burst.map(|v| v.patch()));
    put("max_concurrent", limits.max_concurrent.map(|v| v.patch()));
    put(
        "max_spreading_depth",
        limits.max_spreading_depth.map(|v| v.patch()),
    );
    let mut body = json!({});
    if let Some(n) = name {
        body["display_name"] = json!(n);
    }
    if !l.is_empty() {
        body["limits"] = Value::Object(l);
    }
    if let Some(w) = weight {
        body["weight"] = json!(w);
    }
    body
}

fn split_list(s: Option<String>) -> Option<Vec<String>> {
    s.map(|s| {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// The body of `POST /v1/admin/keys` from CLI flags.
pub fn new_key_body(
    tenant: String,
    name: Option<String>,
    permissions: Option<String>,
    user_tokens: Option<String>,
    domains: Option<String>,
    expires_in_secs: Option<u64>,
) -> Value {
    let mut body = json!({ "tenant": tenant });
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body[k] = v;
        }
    };
    set("name", name.map(Value::String));
    set("permissions", split_list(permissions).map(|v| json!(v)));
    set("user_tokens", split_list(user_tokens).map(|v| json!(v)));
    set("domains", split_list(domains).map(|v| json!(v)));
    set("expires_in_secs", expires_in_secs.map(|v| json!(v)));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_stays_one_path_segment() {
        assert_eq!(segment("acme-team_1.x"), "acme-team_1.x");
        assert_eq!(segment("acme?hard=true"), "acme%3Fhard%3Dtrue");
        assert_eq!(segment("a/b#c"), "a%2Fb%23c");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn a_server_flag_is_an_http_url_with_a_host() {
        for good in [
            "http://127.0.0.1:7700",
            "http://strata.example.com/",
            "http://h",
        ] {
            assert_eq!(server_arg(good).as_deref(), Ok(good));
        }
        for bad in [
            "notaurl",
            "127.0.0.1:7700",
            "localhost:7700",
            "ftp://h",
            "file:///x",
            "https://strata.example.com/",
            "",
        ] {
            let e = server_arg(bad).expect_err(bad);
            assert!(e.starts_with("not a valid server URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_rate_flag_is_a_positive_finite_number_or_none() {
        assert_eq!(rate_limit("2.5"), Ok(Limit::At(2.5)));
        assert_eq!(rate_limit("none"), Ok(Limit::Unlimited));
        for bad in ["0", "-1", "nan", "inf", "ten", "null"] {
            assert!(rate_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(limit::<u64>("7"), Ok(Limit::At(7)));
        assert!(limit::<u64>("-7").is_err() && limit::<u32>("seven").is_err());
    }

    #[test]
    fn update_flags_become_a_merge_patch() {
        let limits = LimitFlags {
            max_vectors: Some(Limit::At(50)),
            max_qps: Some(Limit::Unlimited),
            ..Default::default()
        };
        assert_eq!(
            update_body(None, &limits, Some(3)),
            json!({"limits": {"max_vectors": 50, "max_qps": null}, "weight": 3})
        );
        assert_eq!(
            update_body(Some("A".into()), &LimitFlags::default(), None),
            json!({"display_name": "A"})
        );
    }

    #[test]
    fn key_flags_become_a_body() {
        let b = new_key_body(
            "acme".into(),
            None,
            Some("read,write".into()),
            Some("u:a".into()),
            None,
            Some(60),
        );
        assert_eq!(
            b,
            json!({"tenant": "acme", "permissions": ["read", "write"],
                   "user_tokens": ["u:a"], "expires_in_secs": 60})
        );
    }
}
