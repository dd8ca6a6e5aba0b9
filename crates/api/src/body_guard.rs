//! Request bodies on a deadline, and refusals that leave a body unread.
//!
//! A client that sends its headers and then stalls or trickles its body would hold a connection
//! and a handler for ever. So a body must arrive within `body_read_timeout`, extended by one
//! second for every `body_min_bytes_per_sec` bytes received (a large upload at a reasonable
//! rate finishes, a trickle does not); past its deadline the request is answered
//! `408 REQUEST_TIMEOUT` and the connection is closed.
//!
//! A handler may refuse a request (401, 403, 413, 429, 503) without reading its body. hyper then
//! discards the rest only if it is already buffered; otherwise it closes the connection after a
//! response that did not say so, and a client that reuses the connection loses its next
//! request. So here, after the handler, an unread remainder is read and discarded when it is
//! small and arrives promptly, and the connection stays usable; otherwise the response says
//! `Connection: close`, which hyper honours.
//!
//! The same middleware refuses request targets over `max_uri_bytes` with `414 URI_TOO_LONG`,
//! and a request whose `Content-Encoding` is anything but `identity`, or whose route reads a
//! JSON body but whose `Content-Type` is not JSON (`media_type.rs`), with
//! `415 UNSUPPORTED_MEDIA_TYPE`, before a byte of its body is read.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::{ApiConfig, ApiError, AppState};

/// An unread remainder up to this size is discarded so the connection stays usable; a larger
/// one is not worth receiving, and the connection is closed instead.
const DRAIN_MAX_BYTES: u64 = 64 * 1024;
/// How long the refusal waits for that remainder. A client that sent its whole request has
/// sent it already; one that has not is treated as stalled.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// The deadline rule of one body.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    start: Instant,
    timeout: Duration,
    min_bytes_per_sec: u64,
}

impl Deadline {
    fn new(config: &ApiConfig) -> Self {
        Deadline {
            start: Instant::now(),
            timeout: config.body_read_timeout,
            min_bytes_per_sec: config.body_min_bytes_per_sec,
        }
    }

    /// When a body that has delivered `received` bytes must be complete.
    fn at(&self, received: u64) -> Instant {
        let earned = match self.min_bytes_per_sec {
            0 => Duration::ZERO,
            rate => Duration::from_secs(received / rate),
        };
        let base = self.start + self.timeout;
        base.checked_add(earned).unwrap_or(base)
    }
}

/// What became of a request's body, as the middleware learns it once the handler is done.
enum Fate {
    /// Still held somewhere (by a task the handler started), so its state is unknown.
    InUse,
    /// Read to its end.
    Read,
    /// The client did not deliver it by its deadline.
    TimedOut,
    /// The client broke it off or framed it wrongly.
    Broken,
    /// Dropped before its end: the rest is still on the connection.
    Unread { rest: Body, polled: bool },
}

type FateSlot = Arc<Mutex<Fate>>;

fn set(slot: &FateSlot, fate: Fate) {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = fate;
}

/// The request body as handlers see it: the client's body, on a deadline, reporting its fate.
struct Guarded {
    inner: Option<Body>,
    fate: FateSlot,
    deadline: Deadline,
    received: u64,
    polled: bool,
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
}

/// The error a handler sees when the body is late; the middleware answers 408 in its place.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl Guarded {
    fn new(inner: Body, deadline: Deadline, fate: FateSlot) -> Self {
        let at = deadline.at(0);
        Guarded {
            inner: Some(inner),
            fate,
            deadline,
            received: 0,
            polled: false,
            timer: Box::pin(tokio::time::sleep_until(at)),
            timer_at: at,
        }
    }

    /// Records the body's end; the inner body is dropped, so hyper stops reading it.
    fn finish(&mut self, fate: Fate) {
        self.inner = None;
        set(&self.fate, fate);
    }
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        this.polled = true;
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                }
                if inner.is_end_stream() {
                    this.finish(Fate::Read);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish(Fate::Read);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Fate::Broken);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => {
                let at = this.deadline.at(this.received);
                if at != this.timer_at {
                    this.timer.as_mut().reset(at);
                    this.timer_at = at;
                }
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.finish(Fate::TimedOut);
                Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // Dropped before its end: hand the rest back to the middleware rather than to hyper.
        if let Some(rest) = self.inner.take() {
            set(
                &self.fate,
                Fate::Unread {
                    rest,
                    polled: self.polled,
                },
            );
        }
    }
}

/// Longest part of an unsupported coding's name quoted back to the client.
const MAX_QUOTED_CODING: usize = 32;

/// The refusal of a body in a coding the server does not decode: every `Content-Encoding`
/// other than `identity` (in any case, in any copy of the header, in any item of a list).
/// Such a body would otherwise be read as if plain: a compressed one fails as invalid JSON,
/// and one labelled compressed but sent plain is stored, so a client and a proxy in front
/// could disagree on what was written.
fn unsupported_coding(headers: &axum::http::HeaderMap) -> Option<ApiError> {
    let shown = coding_other_than(headers, header::CONTENT_ENCODING, b"identity")?;
    Some(ApiError::UnsupportedMediaType(format!(
        "Content-Encoding \"{shown}\": request bodies are read only as sent, without a \
         content coding; send the body uncompressed"
    )))
}

/// The first coding named by the `name` headers (in any copy, in any item of a list) other
/// than `allowed` (in any case), quoted for a message.
fn coding_other_than(
    headers: &axum::http::HeaderMap,
    name: header::HeaderName,
    allowed: &[u8],
) -> Option<String> {
    let coding = headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case(allowed))?;
    Some(
        String::from_utf8_lossy(coding)
            .escape_debug()
            .take(MAX_QUOTED_CODING)
            .collect(),
    )
}

/// The refusal of a body in a transfer coding other than `chunked` (`Transfer-Encoding: gzip,
/// chunked`, say): the HTTP layer undoes the chunking only, so the rest would be read as if
/// plain, where a proxy in front might decode it: the two would see different bodies.
fn unsupported_transfer_coding(headers: &axum::http::HeaderMap) -> Option<ApiError> {
    let shown = coding_other_than(headers, header::TRANSFER_ENCODING, b"chunked")?;
    Some(ApiError::UnsupportedMediaType(format!(
        "Transfer-Encoding \"{shown}\": request bodies are read only as sent, chunked or with a \
         Content-Length; send the body without another transfer coding"
    )))
}

/// The middleware: see the module documentation.
pub(crate) async fn guard_requests(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let max_uri = state.config.max_uri_bytes;
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    let too_long = (uri_len > max_uri)
        .then(|| {
            ApiError::UriTooLong(format!(
                "the request target is {uri_len} bytes; at most {max_uri} (server.max_uri_bytes)"
            ))
        })
        .or_else(|| unsupported_coding(req.headers()))
        .or_else(|| unsupported_transfer_coding(req.headers()))
        .or_else(|| crate::media_type::unsupported_type(&req));
    if req.body().is_end_stream() {
        return match too_long {
            Some(e) => e.into_response(),
            None => next.run(req).await,
        };
    }
    // A client that waits for `100 Continue` may never send a body we do not ask for.
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let slot = FateSlot::new(Mutex::new(Fate::InUse));
    let (parts, body) = req.into_parts();
    let guarded = Guarded::new(body, Deadline::new(&state.config), Arc::clone(&slot));
    let response = match too_long {
        Some(e) => {
            drop(guarded);
            e.into_response()
        }
        None => {
            next.run(Request::from_parts(parts, Body::new(guarded)))
                .await
        }
    };
    let fate = std::mem::replace(
        &mut *slot.lock().unwrap_or_else(PoisonError::into_inner),
        Fate::InUse,
    );
    match fate {
        Fate::Read => response,
        Fate::TimedOut => {
            tracing::debug!("request body timed out");
            closing(
                ApiError::RequestTimeout(
                    "the request body did not arrive in time (server.body_read_timeout_secs)"
                        .into(),
                )
                .into_response(),
            )
        }
        Fate::Broken | Fate::InUse => closing(response),
        Fate::Unread { rest, polled } => {
            // Draining would ask a client waiting for `100 Continue` to send what we refused.
            let may_drain = polled || !expects_continue;
            if may_drain && drain(rest).await {
                response
            } else {
                closing(response)
            }
        }
    }
}

/// Reads and discards a small remainder that arrives promptly; false if it did not.
async fn drain(rest: Body) -> bool {
    if rest.size_hint().lower() > DRAIN_MAX_BYTES {
        return false;
    }
    let mut chunks = rest.into_data_stream();
    let read_all = async {
        let mut total = 0u64;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(c) => total = total.saturating_add(c.len() as u64),
                Err(_) => return false,
            }
            if total > DRAIN_MAX_BYTES {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read_all)
        .await
        .unwrap_or(false)
}

/// Tells the client (and hyper) that this connection ends with this response.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(timeout_ms: u64, rate: u64) -> Deadline {
        Deadline {
            start: Instant::now(),
            timeout: Duration::from_millis(timeout_ms),
            min_bytes_per_sec: rate,
        }
    }

    #[test]
    fn bytes_received_earn_time_at_the_minimum_rate() {
        let d = rule(30_000, 1000);
        assert_eq!(d.at(0) - d.start, Duration::from_secs(30));
        assert_eq!(d.at(999) - d.start, Duration::from_secs(30));
        assert_eq!(d.at(5000) - d.start, Duration::from_secs(35));
        let flat = rule(30_000, 0);
        assert_eq!(flat.at(1 << 40) - flat.start, Duration::from_secs(30));
    }

    /// A body whose first chunk arrives and whose rest never does.
    fn stalled() -> Body {
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("{\"a\""))]);
        Body::from_stream(first.chain(futures_util::stream::pending()))
    }

    #[tokio::test]
    async fn a_stalled_body_fails_at_its_deadline_and_says_so() {
        let slot = FateSlot::new(Mutex::new(Fate::InUse));
        let body = Guarded::new(stalled(), rule(50, 0), Arc::clone(&slot));
        let started = std::time::Instant::now();
        let err = axum::body::to_bytes(Body::new(body), 1 << 20)
            .await
            .expect_err("a stalled body cannot complete");
        assert!(started.elapsed() >= Duration::from_millis(50), "{err}");
        assert!(matches!(*slot.lock().unwrap(), Fate::TimedOut));
    }

    #[tokio::test]
    async fn a_body_dropped_unread_comes_back_to_the_middleware() {
        let slot = FateSlot::new(Mutex::new(Fate::InUse));
        drop(Guarded::new(
            Body::from("{}"),
            rule(1000, 0),
            Arc::clone(&slot),
        ));
        let fate = std::mem::replace(&mut *slot.lock().unwrap(), Fate::InUse);
        let Fate::Unread { rest, polled } = fate else {
            panic!("the unread body was lost");
        };
        assert!(!polled);
        assert!(drain(rest).await, "a small body that is all there drains");
        assert!(!drain(stalled()).await, "a stalled one does not");
    }

    #[test]
    fn only_chunked_transfer_coding_is_read() {
        let refused = |values: &[&str]| {
            let mut h = axum::http::HeaderMap::new();
            for v in values {
                h.append(header::TRANSFER_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            unsupported_transfer_coding(&h).map(|e| e.to_string())
        };
        for ok in [&[][..], &["chunked"], &["Chunked"]] {
            assert_eq!(refused(ok), None, "{ok:?}");
        }
        for values in [&["gzip, chunked"][..], &["gzip", "chunked"], &["deflate"]] {
            let e = refused(values).expect("refused");
            assert!(e.contains("Transfer-Encoding"), "{e}");
        }
    }

    #[test]
    fn only_identity_content_encoding_is_read() {
        let refused = |values: &[&str]| {
            let mut h = axum::http::HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            unsupported_coding(&h).map(|e| {
                assert_eq!(e.status_and_code().1, "UNSUPPORTED_MEDIA_TYPE");
                e.to_string()
            })
        };
        for ok in [
            &[][..],
            &["identity"],
            &["IDENTITY"],
            &[" identity , identity"],
        ] {
            assert_eq!(refused(ok), None, "{ok:?}");
        }
        for (values, named) in [
            (&["gzip"][..], "\"gzip\""),
            (&["br"], "\"br\""),
            (&["identity, deflate"], "\"deflate\""),
            (&["identity", "zstd"], "\"zstd\""),
            (&["x-gzip"], "\"x-gzip\""),
        ] {
            let m = refused(values).unwrap_or_else(|| panic!("{values:?} was read"));
            assert!(m.contains(named), "{m}");
        }
        let long = "z".repeat(500);
        assert!(refused(&[&long]).unwrap().len() < 200);
    }
}
