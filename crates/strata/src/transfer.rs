//! `strata tenant export` and `strata tenant import`: stream a tenant's JSON lines from or to a
//! running server, with a progress bar on stderr when stderr is a terminal.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::Value;

use crate::client::Client;
use crate::partial_file::PartialFile;

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

/// How an export's record lines begin: every line is an object whose `type` comes first.
const RECORD_LINE: &[u8] = br#"{"type":"record""#;
/// How its end line begins (then `,` or `}`): the last line of a whole export.
const END_LINE: &[u8] = br#"{"type":"end""#;

/// Counts the lines of an export as its chunks arrive (a line may span chunks), and which of
/// them are records: the only lines whose number is known before the export (the tenant's
/// usage), so the bar's total is never short of what it counts.
#[derive(Debug, Default)]
struct LineCount {
    lines: u64,
    records: u64,
    /// The last complete line is the end line: the export is whole (so far as the stream
    /// goes; a line after it would clear this).
    ended: bool,
    /// The first bytes of the line under way, up to the length of [`RECORD_LINE`].
    start: Vec<u8>,
}

impl LineCount {
    fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' {
                self.lines += 1;
                if self.start == RECORD_LINE {
                    self.records += 1;
                }
                self.ended = self.start.starts_with(END_LINE)
                    && matches!(self.start.get(END_LINE.len()), Some(b',' | b'}'));
                self.start.clear();
            } else if self.start.len() < RECORD_LINE.len() {
                self.start.push(b);
            }
        }
    }
}

/// The reader of our standard output closed it (`strata tenant export acme | head`): what it
/// read is what it wanted, as for any Unix filter, so the command ends quietly with success.
/// Only writes to standard output become this error: a broken pipe anywhere else (a server
/// closing the connection while an import is sent) is a failure like any other.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// What an export wrote: all its lines, and how many were records.
pub struct Exported {
    pub lines: u64,
    pub records: u64,
}

/// Where an export goes: standard output as it arrives, or a file that appears only whole.
enum Sink<'a> {
    Stdout(std::io::BufWriter<std::io::StdoutLock<'a>>),
    File(PartialFile),
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::File(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(w) => w.flush(),
        }
    }
}

/// Writes tenant `id`'s export to `out` (stdout when `None`). A file is written as
/// `out.partial` and renamed to `out` once the export's end line arrived and it is synced
/// (`crate::partial_file`): an export cut short (a server error, a lost connection, Ctrl-C)
/// leaves no file, and an earlier file at `out` as it was. On stdout what arrived is written
/// as it arrives, and a missing end line fails the command all the same.
pub async fn export(client: &Client, id: &str, out: Option<&Path>) -> anyhow::Result<Exported> {
    // The bar counts records, of the tenant's usage: the export also carries a header, its
    // collections, links, audit rows and adaptive state, whose number is not known before
    // (the export itself is a consistent snapshot of its own; records written meanwhile can
    // still take the count past the usage read here, and then the total follows).
    let tenant = format!("/v1/admin/tenants/{}", crate::client::segment(id));
    let info = client.call(Method::GET, &tenant, None).await?;
    let expected = info["usage"]["records"].as_u64().unwrap_or(0);
    let mut res = client
        .send(client.request(Method::GET, &format!("{tenant}/export")))
        .await?;
    // Before the file exists, so that no signal can leave it behind.
    let stop = stop_signal();
    let mut sink = match out {
        Some(path) => Sink::File(PartialFile::create(path)?),
        None => Sink::Stdout(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let pb = bar(
        Some(expected),
        "exporting {prefix} {wide_bar} {pos}/{len} records, {msg} {elapsed_precise}",
    );
    pb.set_prefix(id.to_owned());
    let (mut count, mut bytes) = (LineCount::default(), 0u64);
    // Only a write to our own standard output may end the command quietly (see `StdoutClosed`).
    let written = |e: std::io::Error| -> anyhow::Error {
        if out.is_none() && e.kind() == std::io::ErrorKind::BrokenPipe {
            StdoutClosed.into()
        } else {
            anyhow::Error::new(e).context("writing the export")
        }
    };
    let stream = async {
        while let Some(chunk) = res.chunk().await.context("reading the export")? {
            sink.write_all(&chunk).map_err(written)?;
            count.feed(&chunk);
            bytes += chunk.len() as u64;
            if pb.length().is_some_and(|len| count.records > len) {
                pb.set_length(count.records);
            }
            pb.set_position(count.records);
            pb.set_message(indicatif::HumanBytes(bytes).to_string());
        }
        anyhow::Ok(())
    };
    // Ctrl-C (or a polite kill) ends the stream as an error, so the partial file is removed
    // as on any other (the handlers stay for the rest of the process, which ends with this
    // command).
    let streamed = tokio::select! {
        streamed = stream => streamed,
        signal = stop => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    pb.finish_and_clear();
    // On an error the sink is dropped, and a file's temporary with it.
    streamed?;
    if !count.ended {
        anyhow::bail!(
            "the export of tenant {id} ended before its end line ({} lines arrived): the \
             connection was cut or the server failed{}",
            count.lines,
            if out.is_some() {
                "; no file was written"
            } else {
                ""
            }
        );
    }
    match sink {
        Sink::Stdout(mut w) => w.flush().map_err(written)?,
        Sink::File(f) => f.commit()?,
    }
    Ok(Exported {
        lines: count.lines,
        records: count.records,
    })
}

/// Waits for the first of SIGINT (Ctrl-C) and SIGTERM. The handlers are set when this is
/// called, not when it is first awaited: from then on neither signal kills the process
/// before the export's temporary file is removed.
#[cfg(unix)]
fn stop_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn recv(s: Option<Signal>) {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            // No handler could be set: the signal keeps its default action.
            None => std::future::pending().await,
        }
    }
    let (int, term) = (
        signal(SignalKind::interrupt()).ok(),
        signal(SignalKind::terminate()).ok(),
    );
    async move {
        tokio::select! {
            _ = recv(int) => "Ctrl-C",
            _ = recv(term) => "SIGTERM",
        }
    }
}

#[cfg(not(unix))]
fn stop_signal() -> impl std::future::Future<Output = &'static str> {
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    }
}

/// Creates tenant `id` on the server from the export in `file` (`-`: standard input); returns
/// the server's answer.
pub async fn import(client: &Client, id: &str, file: PathBuf) -> anyhow::Result<Value> {
    let (mut reader, len): (Box<dyn Read + Send>, Option<u64>) = if file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f =
            std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        let meta = f
            .metadata()
            .with_context(|| format!("reading {}", file.display()))?;
        anyhow::ensure!(
            !meta.is_dir(),
            "{} is a directory: give the export file (or - for standard input)",
            file.display()
        );
        (Box::new(f), Some(meta.len()))
    };
    let pb = bar(
        len,
        "importing {prefix} {wide_bar} {bytes}/{total_bytes} {elapsed_precise} {msg}",
    );
    pb.set_prefix(id.to_owned());
    // The bar counts what the upload has taken; the server applies (and embeds) the last
    // lines after that, which can take seconds: the clock keeps running meanwhile.
    pb.enable_steady_tick(std::time::Duration::from_millis(250));
    // The file is read on a plain thread and handed over in chunks, so neither side holds a
    // whole tenant in memory; the bar counts bytes as the upload takes them.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let counter = pb.clone();
    // A read error ends the upload, which the HTTP client then reports as a failed send; the
    // error itself is kept to say what went wrong.
    let read_error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
    let seen = Arc::clone(&read_error);
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let item = match reader.read(&mut buf) {
                Ok(0) => {
                    counter.set_message("sent; the server is applying the last lines");
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    counter.inc(n as u64);
                    Ok(buf)
                }
                Err(e) => {
                    let kept = std::io::Error::new(e.kind(), e.to_string());
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(kept);
                    Err(e)
                }
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
        .request(
            Method::POST,
            &format!("/v1/admin/tenants/{}/import", crate::client::segment(id)),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(stream));
    let result = client.send(req).await;
    pb.finish_and_clear();
    if let Some(e) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        anyhow::bail!("reading {}: {e}", file.display());
    }
    Ok(result?.json().await.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_among_the_lines_whatever_the_chunks() {
        let export = concat!(
            r#"{"type":"tenant","id":"acme"}"#,
            "\n",
            r#"{"type":"collection","name":"c"}"#,
            "\n",
            r#"{"type":"record","id":"r1"}"#,
            "\n",
            r#"{"type":"record","id":"r2"}"#,
            "\n",
            r#"{"type":"audit","action":"memory.put","detail":{"type":"record"}}"#,
            "\n",
        )
        .as_bytes();
        for size in [1, 3, 16, 17, export.len()] {
            let mut count = LineCount::default();
            for chunk in export.chunks(size) {
                count.feed(chunk);
            }
            assert_eq!((count.lines, count.records), (5, 2), "chunks of {size}");
            assert!(!count.ended, "no end line");
        }
    }

    #[test]
    fn only_an_end_line_that_comes_last_makes_the_export_whole() {
        let feed = |text: &str, size: usize| {
            let mut count = LineCount::default();
            for chunk in text.as_bytes().chunks(size) {
                count.feed(chunk);
            }
            count.ended
        };
        let whole = concat!(
            r#"{"type":"tenant","id":"acme"}"#,
            "\n",
            r#"{"type":"end","records":0}"#,
            "\n",
        );
        for size in [1, 5, whole.len()] {
            assert!(feed(whole, size), "chunks of {size}");
            // Cut inside the end line: it never completed.
            assert!(!feed(&whole[..whole.len() - 1], size), "chunks of {size}");
            assert!(!feed(&whole[..whole.len() - 5], size), "chunks of {size}");
            // A line after it: not the end.
            let more = format!("{whole}{}\n", r#"{"type":"record","id":"r"}"#);
            assert!(!feed(&more, size), "chunks of {size}");
        }
        // A type that only begins like it.
        assert!(!feed("{\"type\":\"endless\"}\n", 3));
    }
}
