//! Per-tenant export and import as JSON lines (`application/x-ndjson`), streamed both ways.
//!
//! The engine works synchronously on one consistent snapshot; these handlers connect it to
//! HTTP bodies through bounded channels, so neither direction ever holds a whole tenant in
//! memory: an export is sent while it is read, an import is applied while it arrives.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use strata_engine::{EngineError, ExportLine, KnownFields};
use strata_types::TenantId;
use tokio::sync::mpsc;

use crate::edge::OperatorAuth;
use crate::input::{PathParam, declared_length};
use crate::{ApiError, AppState};

pub(crate) const NDJSON: &str = "application/x-ndjson";
/// Export lines are sent in chunks of about this many bytes: large enough to keep the
/// per-chunk overhead small, small enough that the channel bounds memory to a few MiB.
const CHUNK: usize = 64 * 1024;
/// Chunks (export) or lines (import) in flight between the blocking task and the body.
const IN_FLIGHT: usize = 32;

fn tenant_id(id: String) -> Result<TenantId, ApiError> {
    TenantId::parse_field("id", id).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Streams a tenant's export: a tenant line, its collections, records, adaptive state, links
/// and audit rows, then the end line that counts them.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/export", tag = "admin", operation_id = "export_tenant",
    params(("id" = TenantId, Path, description = "tenant id")),
    responses((status = 200, description = "One JSON object per line: the tenant, its collections, records, adaptive state, links and audit rows, then an end line counting them", body = ExportLine, content_type = "application/x-ndjson")),
    security(("bearer" = [])))]
pub async fn export_tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let id = tenant_id(id)?;
    let filename = format!("attachment; filename=\"{id}.ndjson\"");
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, ApiError>>(IN_FLIGHT);
    let engine = Arc::clone(&state.engine);
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        let result = engine.export_tenant(&op, &id, |line| {
            // `ExportLine` is plain data; serialising it cannot fail short of a bug.
            serde_json::to_writer(&mut buf, line)
                .map_err(|e| EngineError::Index(format!("export: {e}")))?;
            buf.push(b'\n');
            if buf.len() >= CHUNK {
                let chunk = Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(CHUNK)));
                // The receiver is gone when the client hung up: stop reading the tenant.
                tx.blocking_send(Ok(chunk))
                    .map_err(|_| EngineError::BadRequest("export: the client went away".into()))?;
            }
            Ok(())
        });
        let last = match result {
            Ok(_) => Ok(Bytes::from(buf)),
            Err(e) => Err(ApiError::from(e)),
        };
        let _ = tx.blocking_send(last);
    });
    // Nothing is sent before the first chunk, so an export that fails early (no such tenant)
    // is an ordinary error response rather than a broken stream.
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(e),
        None => {
            return Err(ApiError::Internal(
                "export task ended without output".into(),
            ));
        }
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let stream = futures_util::stream::once(async move { Ok(first) })
        .chain(rest)
        .map(|item| {
            item.map_err(|e| {
                // Too late for an error response: the status is sent. Breaking the stream makes
                // the client see a truncated body instead of a silently short export.
                tracing::error!(error = ?e, "export failed mid-stream");
                std::io::Error::other("export failed")
            })
        });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    if let Ok(v) = HeaderValue::from_str(&filename) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// What the body reader hands the blocking import task.
enum Feed {
    /// A line with its 1-based number.
    Line(u64, Bytes),
    /// The body cannot be read on: too large, or broken off.
    Fail(ApiError),
    /// The body was read to its end. Without it a closed channel means the request went
    /// away (the client disconnected and its handler was dropped), and the lines received
    /// are not the whole file: an export without an end line would be imported cut short.
    End,
}

/// The import's lines as the engine wants them: parsed, with errors that name the line.
struct Lines {
    rx: mpsc::Receiver<Feed>,
    /// Why the body failed, kept so the response has the right status (e.g. 413), not 400.
    failure: Arc<Mutex<Option<ApiError>>>,
    /// The fields found known on the lines so far: a line of known keys is only decoded.
    known: KnownFields,
    /// Whether the lines have ended (the body's end, or a failure reported): nothing more.
    ended: bool,
}

impl Iterator for Lines {
    type Item = Result<ExportLine, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let Some(feed) = self.rx.blocking_recv() else {
            self.ended = true;
            return Some(Err(EngineError::BadRequest(
                "body: the request ended before its body was read to the end (the client \
                 went away); nothing was imported"
                    .into(),
            )));
        };
        match feed {
            Feed::End => {
                self.ended = true;
                None
            }
            // Read with unique keys first (an object with a repeated key is refused, as in
            // every request body), then typed from the value, moving its strings, refusing a
            // field no line of its kind has.
            Feed::Line(n, bytes) => Some(
                crate::unique_keys::from_slice(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|v| ExportLine::from_value_closed_with(&mut self.known, v))
                    .map_err(|e| EngineError::BadRequest(format!("import line {n}: {e}"))),
            ),
            Feed::Fail(e) => {
                self.ended = true;
                let message = e.to_string();
                if let Ok(mut slot) = self.failure.lock() {
                    *slot = Some(e);
                }
                Some(Err(EngineError::BadRequest(message)))
            }
        }
    }
}

/// Splits a body into lines as it arrives; `Err` carries the reason to stop.
struct Splitter {
    pending: Vec<u8>,
    line: u64,
    total: u64,
    max_total: u64,
    max_line: usize,
}

impl Splitter {
    /// Feeds one body chunk; returns the complete lines in it.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<(u64, Bytes)>, ApiError> {
        self.total += chunk.len() as u64;
        if self.total > self.max_total {
            return Err(ApiError::PayloadTooLarge(format!(
                "body: an import is at most {} bytes (server.max_import_bytes)",
                self.max_total
            )));
        }
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            out.push(self.take()?);
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > self.max_line {
            return Err(ApiError::PayloadTooLarge(format!(
                "import line {}: longer than {} bytes",
                self.line + 1,
                self.max_line
            )));
        }
        Ok(out)
    }

    /// The last line, if the body did not end with a newline.
    fn finish(&mut self) -> Result<Option<(u64, Bytes)>, ApiError> {
        if self.pending.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        self.take().map(Some)
    }

    fn take(&mut self) -> Result<(u64, Bytes), ApiError> {
        self.line += 1;
        let mut line = std::mem::take(&mut self.pending);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        // Blank lines are refused rather than skipped, so line numbers in errors (ours and
        // the engine's) always match the file.
        if line.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest(format!(
                "import line {}: empty line",
                self.line
            )));
        }
        Ok((self.line, Bytes::from(line)))
    }
}

/// Creates tenant `id` from an export (JSON lines). All or nothing: a bad line is `400`
/// naming its line number, and nothing of the tenant is left behind.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/import", tag = "admin", operation_id = "import_tenant",
    params(("id" = TenantId, Path, description = "the new tenant's id")),
    request_body(description = "An export, one JSON object per line (any of these types, or none)",
        content(
            (String = "application/x-ndjson"),
            (String = "application/jsonl"),
            (String = "application/x-jsonlines"),
            (String = "application/json"),
        )),
    responses((status = 201, description = "The new tenant, with its usage", body = strata_engine::TenantInfo)),
    security(("bearer" = [])))]
pub async fn import_tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<strata_engine::TenantInfo>), ApiError> {
    let id = crate::tenant_ids::new_tenant_id(id)?;
    let max_total = state.config.max_import_bytes;
    if declared_length(&headers).is_some_and(|len| len > max_total) {
        return Err(ApiError::PayloadTooLarge(format!(
            "body: an import is at most {max_total} bytes (server.max_import_bytes)"
        )));
    }
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let failure = Arc::new(Mutex::new(None));
    let lines = Lines {
        rx,
        failure: Arc::clone(&failure),
        known: KnownFields::default(),
        ended: false,
    };
    let engine = Arc::clone(&state.engine);
    let task = tokio::task::spawn_blocking(move || engine.import_tenant(&op, &id, lines));

    let mut splitter = Splitter {
        pending: Vec::new(),
        line: 0,
        total: 0,
        max_total,
        max_line: state.config.max_body_bytes,
    };
    let mut stream = body.into_data_stream();
    // Sends stop succeeding once the engine has given up (it drops the receiver): then the
    // rest of the body is not worth reading.
    'read: loop {
        let (feed, done) = match stream.next().await {
            Some(Ok(chunk)) => (splitter.push(&chunk), false),
            Some(Err(e)) => (Err(ApiError::BadRequest(format!("body: {e}"))), true),
            None => (splitter.finish().map(|l| l.into_iter().collect()), true),
        };
        match feed {
            Ok(lines) => {
                for (n, line) in lines {
                    if tx.send(Feed::Line(n, line)).await.is_err() {
                        break 'read;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Feed::Fail(e)).await;
                break 'read;
            }
        }
        if done {
            // Read to its end (a failure broke out above): the lines are the whole file.
            let _ = tx.send(Feed::End).await;
            break;
        }
    }
    drop(tx);
    let result = task
        .await
        .map_err(|e| ApiError::Internal(format!("import task failed: {e}")))?;
    match result {
        Ok(info) => Ok((StatusCode::CREATED, Json(info))),
        Err(e) => match failure.lock().ok().and_then(|mut f| f.take()) {
            Some(original) => Err(original),
            None => Err(e.into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> (mpsc::Sender<Feed>, Lines) {
        let (tx, rx) = mpsc::channel(4);
        let lines = Lines {
            rx,
            failure: Arc::new(Mutex::new(None)),
            known: KnownFields::default(),
            ended: false,
        };
        (tx, lines)
    }

    /// A body read to its end ends the lines; a request that went away before (its sender
    /// dropped without the end) is an error, so the import is discarded, not activated cut
    /// short.
    #[test]
    fn the_lines_end_only_with_the_body() {
        let (tx, mut read) = lines();
        tx.blocking_send(Feed::End).unwrap();
        assert!(read.next().is_none());
        assert!(read.next().is_none());

        let (tx, mut cut) = lines();
        drop(tx);
        let err = cut.next().unwrap().unwrap_err().to_string();
        assert!(err.contains("went away"), "{err}");
        assert!(cut.next().is_none(), "reported once");
    }
}
