//! `strata bench chroma`: the load of `strata bench search`, sent to a Chroma server instead,
//! so that the two servers are measured side by side by one load generator.
//!
//! Each Strata tenant becomes a Chroma tenant with a `default` database and one cosine
//! collection, filled with the same vectors (`bench::vector`) and texts; the searches ask
//! for the same k nearest neighbours of the same query vectors, cycling through the tenants.
//! What a hit carries is matched to Strata's answers: by default documents, metadata and
//! distances (Strata: content and metadata with the score); `--include ''` asks for distances
//! only (Strata: ids and scores).

use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench::vector;
use crate::loadgen::{Prepared, QUERIES, SearchArgs, describe_tenants, drive};

/// Records sent per `add` while filling.
const BATCH: usize = 500;

pub async fn chroma(server: &str, args: SearchArgs) -> anyhow::Result<()> {
    let chroma = Chroma {
        http: reqwest::Client::new(),
        base: format!("{}/api/v2", server.trim_end_matches('/')),
    };
    let names = args.tenant_names();
    let mut query_urls = Vec::with_capacity(names.len());
    for name in &names {
        let collection = chroma.prepare(name, args.records).await?;
        query_urls.push(format!("{collection}/query"));
    }
    let include = match args.include.as_deref() {
        None => json!(["documents", "metadatas", "distances"]),
        Some(_) => json!(["distances"]),
    };
    let requests: Arc<Vec<Prepared>> = Arc::new(
        (0..QUERIES.max(names.len()))
            .map(|i| {
                let body = json!({
                    "query_embeddings": [vector(5_000_000 + i as u64)],
                    "n_results": args.k,
                    "include": include,
                });
                Ok(Prepared {
                    url: query_urls[i % query_urls.len()].clone(),
                    bearer: None,
                    body: serde_json::to_vec(&body).context("query body")?,
                })
            })
            .collect::<anyhow::Result<_>>()?,
    );
    println!(
        "Chroma at {server}: queries of {} ({} records each, k = {}, include = {include}), {} s per phase",
        describe_tenants(&names),
        args.records,
        args.k,
        args.seconds
    );
    drive(requests, &args.connections, args.seconds, "searches").await
}

struct Chroma {
    http: reqwest::Client,
    base: String,
}

impl Chroma {
    /// Creates the tenant, its database and collection when missing, adds the records it
    /// lacks, and returns the collection's URL.
    async fn prepare(&self, tenant: &str, records: usize) -> anyhow::Result<String> {
        self.create(&format!("{}/tenants", self.base), json!({"name": tenant}))
            .await?;
        let db = format!("{}/tenants/{tenant}/databases", self.base);
        self.create(&db, json!({"name": "default"})).await?;
        let created = self
            .post(
                &format!("{db}/default/collections"),
                json!({
                    "name": "memories",
                    "get_or_create": true,
                    "configuration": {"hnsw": {"space": "cosine"}},
                }),
            )
            .await?;
        let id = created["id"]
            .as_str()
            .context("Chroma's collection answer has no id")?;
        let collection = format!("{db}/default/collections/{id}");
        let have = self
            .http
            .get(format!("{collection}/count"))
            .send()
            .await?
            .error_for_status()?
            .json::<Value>()
            .await?
            .as_u64()
            .context("Chroma's count is not a number")? as usize;
        for start in (have..records).step_by(BATCH) {
            let ids: Vec<usize> = (start..(start + BATCH).min(records)).collect();
            self.post(
                &format!("{collection}/add"),
                json!({
                    "ids": ids.iter().map(|i| format!("m{i}")).collect::<Vec<_>>(),
                    "embeddings": ids.iter().map(|&i| vector(i as u64)).collect::<Vec<_>>(),
                    "documents": ids.iter().map(|i| format!("{tenant} memory {i}")).collect::<Vec<_>>(),
                }),
            )
            .await?;
        }
        Ok(collection)
    }

    /// Creates something that may exist already (a tenant or database of an earlier run).
    async fn create(&self, url: &str, body: Value) -> anyhow::Result<()> {
        let res = self.http.post(url).json(&body).send().await?;
        if res.status().is_success() || res.status() == reqwest::StatusCode::CONFLICT {
            return Ok(());
        }
        let status = res.status();
        bail!("{url}: {status} {}", res.text().await.unwrap_or_default())
    }

    async fn post(&self, url: &str, body: Value) -> anyhow::Result<Value> {
        let res = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach Chroma at {url}"))?;
        let status = res.status();
        if !status.is_success() {
            bail!("{url}: {status} {}", res.text().await.unwrap_or_default());
        }
        Ok(res.json().await.unwrap_or(Value::Null))
    }
}
