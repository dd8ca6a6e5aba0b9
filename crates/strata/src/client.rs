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

    /// Sends one request and returns the JSON answer; an error answer becomes an error that
    /// carries the server's code and message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server);
        let mut req = self.http.request(method, &url).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = res.status();
        let value: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = value["error"]["code"].as_str().unwrap_or("?");
            let message = value["error"]["message"].as_str().unwrap_or("");
            bail!("{status} {code}: {message}");
        }
        Ok(value)
    }
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
