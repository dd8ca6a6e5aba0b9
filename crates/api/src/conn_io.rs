//! One connection's socket, with the deadlines hyper does not keep itself and the refusals it
//! cannot word in the API's error format.
//!
//! hyper's own header timeout restarts whenever it waits for a request head, so it cannot tell
//! a keep-alive connection resting between requests from a client trickling a head byte by
//! byte, and it closes without a word. [`GuardedIo`] keeps its own clocks instead:
//!
//! - a new connection must deliver its first request head within `header_read_timeout` of being
//!   accepted, and every later head within `header_read_timeout` of its first byte;
//! - a keep-alive connection may rest `idle_timeout` between requests;
//! - a write that makes no progress for `write_timeout` (a client that stopped reading) ends
//!   the connection, and so does one whose client reads too slowly to keep up: the time writes
//!   wait for the client is a debt, which the bytes it takes pay off at
//!   [`MIN_STALLED_PROGRESS`] per `write_timeout`, and a write gives up once it has waited
//!   `write_timeout` less the debt. A client taking one segment every few seconds (which reset
//!   a plain timeout each time) cannot hold an answer, and the memory it holds, for ever; time
//!   no write waits (the server computing, a rest between requests) costs a client nothing.
//!
//! A head cut short by its deadline is answered `408 REQUEST_TIMEOUT` before the close; a
//! connection that said nothing, or rested too long, is simply closed.
//!
//! When hyper cannot parse a request head (bytes that are not HTTP, a head over
//! `max_header_bytes` or over 100 headers, a target over its fixed 65,534-byte limit) it
//! answers by itself with a bare status line, no body and no request id, and never calls the
//! service. That answer is recognised here by its exact shape, written while no request is
//! being served, and replaced by the same status with the API's error body and a fresh
//! `x-request-id`.
//!
//! When a connection closes after a response, our side is shut first and what the client is
//! still sending is read and discarded for a moment (until it closes, falls quiet for
//! [`LINGER_QUIET`], or [`LINGER_MAX`] passes), as nginx's lingering close does: closing a
//! socket with unread input makes the kernel reset the connection, and the reset can destroy
//! the response (a `413` refused before the upload ended) before the client reads it.
//!
//! Only the request-serving state crosses from the service to the socket, through [`Tracker`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::ApiError;
use crate::edge::new_request_id;

/// A closing connection stops discarding input once the client has been quiet this long...
const LINGER_QUIET: Duration = Duration::from_millis(500);
/// ...or this long after our side was shut, whichever comes first.
const LINGER_MAX: Duration = Duration::from_secs(5);
/// Reads per poll while discarding, so a fast sender cannot monopolise a worker thread.
const LINGER_READS_PER_POLL: usize = 16;

/// Bytes a client whose answer has stalled must take per `write_timeout` to keep the
/// connection (64 KiB: about 2 KiB/s at the default 30 s; module docs).
const MIN_STALLED_PROGRESS: u64 = 64 * 1024;

/// The deadlines and limits of one connection's socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    /// hyper's limit on a request head, named in the 431 message.
    pub max_header_bytes: usize,
    /// Whether requests may ask for their stage timings (`timing.rs`).
    pub stage_timing: bool,
}

/// Requests the service has started and finished on one connection, so the socket knows
/// whether the connection is serving a request or waiting for the next.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    started: AtomicU64,
    finished: AtomicU64,
    /// Set while the socket waits for the first byte of a request, nothing half-read.
    waiting: AtomicBool,
    /// Where requests start: the request metrics time each from its head's first byte, and
    /// stage timings (`timing.rs`) start there. Absent only in tests of the socket alone.
    clock: Option<StageClock>,
}

/// The moments where a request's timeline may start, as nanoseconds since `base` plus one
/// (0: none yet). Atomics, not a lock: the socket and the service write them concurrently.
#[derive(Debug)]
struct StageClock {
    base: std::time::Instant,
    /// The first byte of the latest request head read while the connection waited.
    head_at: AtomicU64,
    /// The previous request's end (its `InFlight` dropped): a pipelined request, read along
    /// with the one before it, starts no earlier than this.
    done_at: AtomicU64,
}

impl StageClock {
    fn stamp(&self, slot: &AtomicU64) {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        slot.store(nanos + 1, Ordering::Relaxed);
    }

    fn read(&self, slot: &AtomicU64) -> Option<std::time::Instant> {
        match slot.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }
}

impl Tracker {
    /// A tracker that also records where requests start (two clock reads per request).
    pub(crate) fn new() -> Tracker {
        Tracker {
            clock: Some(StageClock {
                base: std::time::Instant::now(),
                head_at: AtomicU64::new(0),
                done_at: AtomicU64::new(0),
            }),
            ..Tracker::default()
        }
    }

    /// Marks a request as being served until the returned guard is dropped, which the server
    /// does when the response body has been sent (or abandoned).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    fn busy(&self) -> bool {
        self.started() != self.finished.load(Ordering::SeqCst)
    }

    fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Where the request now beginning started: the first byte of its head, or, when it
    /// was read along with an earlier request (pipelined), the end of that request. `None`
    /// when the tracker has no clock or nothing was read yet.
    pub(crate) fn request_started(&self) -> Option<std::time::Instant> {
        let clock = self.clock.as_ref()?;
        let head = clock.read(&clock.head_at);
        match (head, clock.read(&clock.done_at)) {
            (Some(head), Some(done)) => Some(head.max(done)),
            (head, _) => head,
        }
    }

    /// No request is being served and none has begun to arrive: closing loses nothing.
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) && !self.busy()
    }
}

/// One request being served; see [`Tracker::begin`].
pub(crate) struct InFlight(Arc<Tracker>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(clock) = &self.0.clock {
            clock.stamp(&clock.done_at);
        }
        self.0.finished.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No byte of the next request yet. `fresh`: no request has been served on this connection.
    Waiting { fresh: bool },
    /// Part of a request head has arrived.
    Head,
    /// A request is being served. Its body has its own deadline (`body_guard`), and the
    /// handler's time is the server's, not the client's.
    Busy,
}

/// A TCP stream with the deadlines of the module documentation.
pub(crate) struct GuardedIo {
    inner: TcpStream,
    peer: SocketAddr,
    tracker: Arc<Tracker>,
    limits: SocketLimits,
    phase: Phase,
    /// Requests started as of the last look at the tracker.
    seen_started: u64,
    /// When the current wait for a request (Waiting, Head) ends; `None` while Busy.
    read_deadline: Option<Instant>,
    read_timer: Pin<Box<Sleep>>,
    read_timer_at: Option<Instant>,
    /// When the write pending now began to wait; `None` while no write waits.
    pending_since: Option<Instant>,
    /// Time writes have waited for the client, less the credit its reads have earned (see
    /// [`MIN_STALLED_PROGRESS`]): a write waiting `write_timeout` minus this gives up.
    stall_debt: Duration,
    /// When the pending write gives up, as the timer is set.
    write_deadline: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
    /// Our own answer, sent in place of hyper's, and how much of it is out.
    own: Vec<u8>,
    own_sent: usize,
    replaced: bool,
    /// Once our side is shut: when discarding input ends at the latest, and when it ends if
    /// nothing more arrives.
    linger_until: Option<Instant>,
    quiet_until: Option<Instant>,
}

impl GuardedIo {
    pub(crate) fn new(
        inner: TcpStream,
        peer: SocketAddr,
        tracker: Arc<Tracker>,
        limits: SocketLimits,
    ) -> Self {
        let now = Instant::now();
        tracker.waiting.store(true, Ordering::SeqCst);
        GuardedIo {
            inner,
            peer,
            tracker,
            limits,
            phase: Phase::Waiting { fresh: true },
            seen_started: 0,
            read_deadline: Some(now + limits.header_read_timeout),
            read_timer: Box::pin(tokio::time::sleep_until(now)),
            read_timer_at: None,
            pending_since: None,
            stall_debt: Duration::ZERO,
            write_deadline: None,
            write_timer: Box::pin(tokio::time::sleep_until(now)),
            own: Vec::new(),
            own_sent: 0,
            replaced: false,
            linger_until: None,
            quiet_until: None,
        }
    }

    fn enter(&mut self, phase: Phase, deadline: Option<Instant>) {
        self.phase = phase;
        self.read_deadline = deadline;
        let waiting = matches!(phase, Phase::Waiting { .. });
        self.tracker.waiting.store(waiting, Ordering::SeqCst);
    }

    /// Follows the service: a request being served makes the connection Busy; the end of the
    /// last one starts the idle wait, even if it began and ended between two looks (a quick
    /// answer can be written before the socket is read again). A pipelined request whose first
    /// bytes arrived while the previous one was served gets the idle deadline for its head;
    /// pipelining is rare.
    fn follow_service(&mut self) {
        let started = self.tracker.started();
        let new_request = started != self.seen_started;
        self.seen_started = started;
        if self.tracker.busy() {
            if self.phase != Phase::Busy {
                self.enter(Phase::Busy, None);
            }
        } else if new_request || self.phase == Phase::Busy {
            let deadline = Instant::now() + self.limits.idle_timeout;
            self.enter(Phase::Waiting { fresh: false }, Some(deadline));
        }
    }

    /// Arms the read timer for the current deadline; true if that deadline has passed. Called
    /// from every read and write, so the timer is registered as soon as a wait begins, even
    /// when the last thing hyper did was write.
    fn read_deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.follow_service();
        let Some(deadline) = self.read_deadline else {
            return false;
        };
        if self.read_timer_at != Some(deadline) {
            self.read_timer.as_mut().reset(deadline);
            self.read_timer_at = Some(deadline);
        }
        self.read_timer.as_mut().poll(cx).is_ready()
    }

    /// The read deadline passed with no request head complete.
    fn read_timed_out(&mut self) -> Poll<io::Result<()>> {
        self.read_deadline = None;
        if self.phase != Phase::Head {
            // Nothing half-sent: an ordinary close, which hyper sees as end of input.
            tracing::debug!(peer = %self.peer, "closing a connection that sent no request in time");
            return Poll::Ready(Ok(()));
        }
        let request_id = new_request_id();
        tracing::debug!(peer = %self.peer, request_id, "request head timed out");
        let answer = ApiError::RequestTimeout(
            "the request head did not arrive in time (server.header_read_timeout_secs)".into(),
        )
        .to_http1(&request_id);
        // Best effort and without waiting: the connection is being given up on. Everything
        // the client sent has been read, so the close that follows is orderly.
        let _ = self.inner.try_write(&answer);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not received in time",
        )))
    }

    /// Turns a pending write into a timeout once it has been pending for `write_timeout`,
    /// less the stall debt the client has run up (see [`Self::progressed`]).
    fn write_stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let since = *self.pending_since.get_or_insert_with(Instant::now);
        let deadline = since + self.limits.write_timeout.saturating_sub(self.stall_debt);
        if self.write_deadline != Some(deadline) {
            self.write_timer.as_mut().reset(deadline);
            self.write_deadline = Some(deadline);
        }
        if self.write_timer.as_mut().poll(cx).is_ready() {
            tracing::debug!(peer = %self.peer, ?deadline, "client stopped reading; closing");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the response in time",
            )));
        }
        Poll::Pending
    }

    fn wrote(
        &mut self,
        result: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) => {
                self.progressed(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => {
                (self.pending_since, self.write_deadline) = (None, None);
                Poll::Ready(Err(e))
            }
            Poll::Pending => self.write_stalled(cx),
        }
    }

    /// A write of `n` bytes went out: the time it waited for the client, if it waited, is
    /// added to the stall debt, and the bytes pay it off at [`MIN_STALLED_PROGRESS`] per
    /// `write_timeout`. Only time a write waits counts: a server that is slow to write, or
    /// a connection resting between requests, runs up no debt.
    fn progressed(&mut self, n: usize) {
        if let Some(since) = self.pending_since.take() {
            self.stall_debt += since.elapsed();
        }
        let full = self.limits.write_timeout;
        let share = (n as f64 / MIN_STALLED_PROGRESS as f64).min(1.0);
        self.stall_debt = self.stall_debt.saturating_sub(full.mul_f64(share));
        self.write_deadline = None;
    }

    /// Sends what is left of our own answer.
    fn poll_send_own(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.own_sent < self.own.len() {
            let r = Pin::new(&mut self.inner).poll_write(cx, &self.own[self.own_sent..]);
            match ready!(self.wrote(r, cx))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.own_sent += n,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// If `bytes` is hyper's own answer to an unparseable request, queues ours in its place.
    fn replace_hyper_refusal(&mut self, bytes: &[u8]) -> bool {
        if self.replaced || self.tracker.busy() {
            return false;
        }
        let Some(status) = hyper_refusal_status(bytes) else {
            return false;
        };
        let error = match status {
            414 => {
                ApiError::UriTooLong("the request target is longer than the server accepts".into())
            }
            431 => ApiError::HeadersTooLarge(format!(
                "the request line and headers exceed {} bytes (server.max_header_bytes) or 100 \
                 headers",
                self.limits.max_header_bytes
            )),
            _ => ApiError::BadRequest(
                "malformed request: the request line or a header is not valid HTTP/1.1".into(),
            ),
        };
        let request_id = new_request_id();
        tracing::debug!(peer = %self.peer, request_id, status, "refused an unparseable request");
        self.own = error.to_http1(&request_id);
        self.own_sent = 0;
        self.replaced = true;
        true
    }

    /// Discards what the client still sends after our side is shut; see the module docs.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let now = Instant::now();
        let until = *self.linger_until.get_or_insert(now + LINGER_MAX);
        let mut quiet_until = *self
            .quiet_until
            .get_or_insert((now + LINGER_QUIET).min(until));
        let mut sink = [0u8; 8192];
        for _ in 0..LINGER_READS_PER_POLL {
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                // End of input, or a reset: nothing left to protect.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    quiet_until = (Instant::now() + LINGER_QUIET).min(until);
                    self.quiet_until = Some(quiet_until);
                }
                Poll::Pending => {
                    // The read timer is free: no request can arrive on a shut connection.
                    self.read_deadline = None;
                    if self.read_timer_at != Some(quiet_until) {
                        self.read_timer.as_mut().reset(quiet_until);
                        self.read_timer_at = Some(quiet_until);
                    }
                    return match self.read_timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
        if Instant::now() >= until {
            return Poll::Ready(Ok(()));
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The status of an answer hyper wrote by itself to a request head it could not parse: a
/// status line of 400, 414 or 431, then only `connection: close`, `content-length: 0` and
/// `date`, and nothing after the head. Every response of the router carries `content-type`
/// and `x-request-id`, so none has this shape.
fn hyper_refusal_status(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes).ok()?;
    let head = text.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let status: u16 = rest.get(..3)?.parse().ok()?;
    if !matches!(status, 400 | 414 | 431) {
        return None;
    }
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        let expected = match name.to_ascii_lowercase().as_str() {
            "connection" => value.eq_ignore_ascii_case("close"),
            "content-length" => value == "0",
            "date" => true,
            _ => false,
        };
        if !expected {
            return None;
        }
    }
    Some(status)
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.follow_service();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && let Phase::Waiting { fresh } = this.phase
                {
                    // A new connection's first head is timed from the accept, later ones
                    // from their first byte.
                    let deadline = if fresh {
                        this.read_deadline
                    } else {
                        Some(Instant::now() + this.limits.header_read_timeout)
                    };
                    this.enter(Phase::Head, deadline);
                    if let Some(clock) = &this.tracker.clock {
                        clock.stamp(&clock.head_at);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.read_deadline_passed(cx) {
                    this.read_timed_out()
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.read_deadline_passed(cx);
        ready!(this.poll_send_own(cx))?;
        if this.replace_hyper_refusal(buf) {
            // hyper's bytes are taken (and dropped); ours go out now or at the flush.
            let _ = this.poll_send_own(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.read_deadline_passed(cx);
        ready!(this.poll_send_own(cx))?;
        // hyper's refusal is a lone head: exactly one non-empty slice.
        let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (non_empty.next(), non_empty.next())
            && this.replace_hyper_refusal(only)
        {
            let _ = this.poll_send_own(cx)?;
            return Poll::Ready(Ok(only.len()));
        }
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.read_deadline_passed(cx);
        ready!(this.poll_send_own(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger_until.is_none() {
            ready!(this.poll_send_own(cx))?;
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
        }
        this.poll_linger(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SocketLimits = SocketLimits {
        header_read_timeout: Duration::from_millis(100),
        idle_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(1),
        max_header_bytes: 8192,
        stage_timing: false,
    };

    /// A connected pair: the client's end, and the server's end wrapped.
    async fn pair() -> (TcpStream, GuardedIo, Arc<Tracker>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let tracker = Arc::new(Tracker::default());
        let io = GuardedIo::new(server, peer, Arc::clone(&tracker), LIMITS);
        (client, io, tracker)
    }

    async fn read(io: &mut GuardedIo) -> io::Result<Vec<u8>> {
        let mut bytes = [0u8; 1024];
        let mut buf = ReadBuf::new(&mut bytes);
        std::future::poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, &mut buf)).await?;
        Ok(buf.filled().to_vec())
    }

    async fn send(client: &TcpStream, bytes: &[u8]) {
        client.writable().await.unwrap();
        assert_eq!(client.try_write(bytes).unwrap(), bytes.len());
    }

    #[tokio::test]
    async fn a_half_sent_head_is_answered_408_at_its_deadline() {
        let (client, mut io, _) = pair().await;
        send(&client, b"GET /heal").await;
        assert_eq!(read(&mut io).await.unwrap(), b"GET /heal");
        let err = read(&mut io).await.expect_err("the head is late");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        client.readable().await.unwrap();
        let mut answer = [0u8; 512];
        let n = client.try_read(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    }

    #[tokio::test]
    async fn a_request_served_between_two_reads_starts_the_idle_wait() {
        let (client, mut io, tracker) = pair().await;
        send(&client, b"GET / HTTP/1.1\r\n\r\n").await;
        read(&mut io).await.unwrap();
        // Begun and answered before the socket is read again.
        drop(tracker.begin());
        let next = tokio::time::timeout(3 * LIMITS.header_read_timeout, read(&mut io)).await;
        assert!(next.is_err(), "closed at the old head deadline: {next:?}");
        assert!(tracker.is_waiting());
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
        let (_client, mut io, _) = pair().await;
        io.limits.write_timeout = Duration::from_millis(100);
        let chunk = vec![b'x'; 64 * 1024];
        let started = std::time::Instant::now();
        let err = loop {
            match std::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, &chunk)).await {
                Ok(_) => assert!(started.elapsed() < Duration::from_secs(5), "never stalled"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    /// Time a write waits for the client runs up a debt that the bytes it then takes pay
    /// off at the least rate only: a segment now and then (which reset a plain timeout) does
    /// not keep the connection; time no write waits (a slow server, a rest between requests)
    /// adds nothing.
    #[tokio::test]
    async fn a_stalled_write_needs_the_least_rate_to_go_on() {
        let (_client, mut io, _) = pair().await;
        let full = LIMITS.write_timeout;
        let segment = full.mul_f64(1448.0 / MIN_STALLED_PROGRESS as f64);
        // A write waited three quarters of the timeout, then one segment went out.
        io.pending_since = Some(Instant::now() - full * 3 / 4);
        io.progressed(1448);
        let debt = io.stall_debt;
        let expected = full * 3 / 4 - segment;
        assert!(
            debt.abs_diff(expected) < Duration::from_millis(20),
            "{debt:?}"
        );
        assert_eq!((io.pending_since, io.write_deadline), (None, None));
        // Time without a write waiting adds nothing.
        tokio::time::sleep(Duration::from_millis(30)).await;
        io.progressed(0);
        assert_eq!(io.stall_debt, debt);
        // The next wait gives up after what is left of the timeout only.
        let before = Instant::now();
        let _ = std::future::poll_fn(|cx| Poll::Ready(io.write_stalled::<()>(cx))).await;
        let left = io.write_deadline.expect("a deadline") - before;
        assert!(left <= full - debt + Duration::from_millis(5), "{left:?}");
        // Reading a whole share pays the debt off.
        io.pending_since = None;
        io.progressed(MIN_STALLED_PROGRESS as usize);
        assert_eq!(io.stall_debt, Duration::ZERO);
    }

    #[tokio::test]
    async fn a_connection_that_says_nothing_is_closed_quietly() {
        let (_client, mut io, tracker) = pair().await;
        assert!(tracker.is_waiting());
        assert_eq!(read(&mut io).await.unwrap(), b"", "end of input");
    }

    fn check(bytes: &str, expect: Option<u16>) {
        assert_eq!(hyper_refusal_status(bytes.as_bytes()), expect, "{bytes:?}");
    }

    #[test]
    fn hyper_refusals_are_recognised_by_their_exact_shape() {
        let date = "date: Sun, 29 Nov 2026 21:14:57 GMT";
        check(
            &format!(
                "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n{date}\r\n\r\n"
            ),
            Some(400),
        );
        check(
            &format!(
                "HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n{date}\r\n\r\n"
            ),
            Some(414),
        );
        check(
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n",
            Some(431),
        );
        // Anything the router writes has other headers, a body, or another status.
        check(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-request-id: 1\r\ncontent-length: 0\r\n\r\n",
            None,
        );
        check(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            None,
        );
        check("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", None);
        check("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n", None);
        check("{\"x\": \"HTTP/1.1 400 \"}\r\n\r\n", None);
    }

    /// A tracker without a clock: nothing is read from it, no request has a start.
    #[test]
    fn without_a_clock_no_start_is_recorded() {
        let tracker = Arc::new(Tracker::default());
        drop(tracker.begin());
        assert_eq!(tracker.request_started(), None);
    }

    /// A request's timeline starts at its head's first byte, but a pipelined one (read
    /// before the previous request ended) starts when the previous one ended, not at the
    /// previous one's first byte.
    #[test]
    fn a_pipelined_request_starts_when_the_previous_one_ended() {
        let tracker = Arc::new(Tracker::new());
        let clock = tracker.clock.as_ref().expect("on");
        assert_eq!(tracker.request_started(), None);
        clock.stamp(&clock.head_at);
        let head = tracker.request_started().expect("a head");
        std::thread::sleep(Duration::from_millis(2));
        drop(tracker.begin());
        let next = tracker.request_started().expect("a start");
        assert!(next >= head + Duration::from_millis(2), "{next:?} {head:?}");
        // A later head, read after the connection waited: the head wins again.
        std::thread::sleep(Duration::from_millis(2));
        clock.stamp(&clock.head_at);
        assert!(tracker.request_started().expect("a start") >= next + Duration::from_millis(2));
    }
}
