//! `strata tenant export` and `strata tenant import`: stream a tenant's JSON lines from or to a
//! running server, with a progress bar on stderr when stderr is a terminal.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::Value;

use crate::client::Client;

/// Bytes read from the import file per chunk sent.
const CHUNK: usize = 256 * 1024;

/// A bar on stderr, or a hidden one when stderr is not a terminal (pipes, CI, tests), so
/// redirected output never fills with escape codes.
fn bar(len: Option<u64>, template: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(len, target);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb
}

/// Writes tenant `id`'s export to `out` (stdout when `None`); returns the number of lines.
pub async fn export(client: &Client, id: &str, out: Option<&Path>) -> anyhow::Result<u64> {
    // The tenant's usage gives the number of lines to expect: a header, its collections and
    // its records. Only for the bar, which grows past it when the export also carries links,
    // audit rows and adaptive state: the export itself is a consistent snapshot of its own.
    let info = client
        .call(Method::GET, &format!("/v1/admin/tenants/{id}"), None)
        .await?;
    let usage = &info["usage"];
    let expected =
        1 + usage["collections"].as_u64().unwrap_or(0) + usage["records"].as_u64().unwrap_or(0);
    let mut res = client
        .send(client.request(Method::GET, &format!("/v1/admin/tenants/{id}/export")))
        .await?;
    let mut sink: Box<dyn Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let pb = bar(
        Some(expected),
        "exporting {prefix} {wide_bar} {pos}/{len} lines, {msg} {elapsed_precise}",
    );
    pb.set_prefix(id.to_owned());
    let (mut lines, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = res.chunk().await.context("reading the export")? {
        sink.write_all(&chunk).context("writing the export")?;
        let n = chunk.iter().filter(|b| **b == b'\n').count() as u64;
        lines += n;
        bytes += chunk.len() as u64;
        pb.inc(n);
        if pb.length().is_some_and(|len| lines > len) {
            pb.set_length(lines);
        }
        pb.set_message(indicatif::HumanBytes(bytes).to_string());
    }
    sink.flush().context("writing the export")?;
    pb.finish_and_clear();
    Ok(lines)
}

/// Creates tenant `id` on the server from the export in `file`; returns the server's answer.
pub async fn import(client: &Client, id: &str, file: PathBuf) -> anyhow::Result<Value> {
    let mut reader =
        std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let len = reader.metadata().map(|m| m.len()).ok();
    let pb = bar(
        len,
        "importing {prefix} {wide_bar} {bytes}/{total_bytes} {elapsed_precise}",
    );
    pb.set_prefix(id.to_owned());
    // The file is read on a plain thread and handed over in chunks, so neither side holds a
    // whole tenant in memory; the bar counts bytes as the upload takes them.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let counter = pb.clone();
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let item = match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    counter.inc(n as u64);
                    Ok(buf)
                }
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let req = client
        .request(Method::POST, &format!("/v1/admin/tenants/{id}/import"))
        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(stream));
    let result = client.send(req).await;
    pb.finish_and_clear();
    Ok(result?.json().await.unwrap_or(Value::Null))
}
