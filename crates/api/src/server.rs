//! The HTTP/1.1 server: an accept loop with a cap on open connections, per-connection deadlines
//! (`conn_io`), and a graceful shutdown that stops accepting, lets requests in flight finish,
//! then closes.
//!
//! `axum::serve` has no timeouts and no cap, so a client that opens sockets and sends half a
//! request holds them, and the server's file descriptors, for ever; this replaces it. HTTP/2 is
//! not served (it never was: axum's `http2` feature is off, and enabling it would add h2 to
//! the build).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::header::CONNECTION;
use axum::http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::ApiError;
use crate::conn_io::{GuardedIo, InFlight, SocketLimits, Tracker};
use crate::edge::new_request_id;
use crate::over_share_lane::OverShareLane;
use crate::tenant_connections::{ConnectionTenant, TenantConnections};

/// Limits of the connections [`serve`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once; one more is answered `503 OVERLOADED` and closed.
    pub max_connections: usize,
    /// Connections one tenant may hold (counted from its first request on each); a request
    /// past it is answered `429 CONCURRENCY_LIMITED` and its connection closed. 0: a quarter
    /// of `max_connections`, binding only while fewer than a quarter of them are free, so no
    /// tenant can take every connection from the others yet one alone may use them all.
    pub max_connections_per_tenant: usize,
    /// How long a request head may take: from the accept for a connection's first request,
    /// from its first byte for later ones. A head cut short is answered `408`.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may rest between requests.
    pub idle_timeout: Duration,
    /// How long a response write may make no progress (the client stopped reading).
    pub write_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; at least 8192.
    pub max_header_bytes: usize,
    /// Whether an authenticated request sending `X-Strata-Timing: 1` gets its stage durations
    /// back in `Server-Timing`. Off by default: they are side channels on the shared server.
    pub stage_timing: bool,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 4096,
            max_connections_per_tenant: 0,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            stage_timing: false,
        }
    }
}

/// hyper refuses a read buffer smaller than this.
const MIN_BUF: usize = 8192;
/// Connections over the cap being answered at once; past this they are closed unanswered.
/// Each holds a file descriptor for at most [`REFUSAL_TIME`].
const REFUSAL_SLOTS: usize = 64;
/// How long a refused connection may take to read its answer.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// Pauses of the accept loop after an error that is not about one connection.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// At most one warning per this interval for each recurring condition (at the cap, accept
/// failing): under pressure they can flip on and off many times a second.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets every
/// connection finish its request in flight, and returns once all are closed. Dropping the
/// returned future instead drops every connection at once (the caller's shutdown timeout).
/// With a `lane`, the requests of tenants over their share of the CPU run there
/// (`crate::over_share_lane`).
pub async fn serve<F>(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    lane: Option<OverShareLane>,
    shutdown: F,
) where
    F: Future<Output = ()> + Send,
{
    let mut http = http1::Builder::new();
    http.max_buf_size(limits.max_header_bytes.max(MIN_BUF))
        .max_header_size(limits.max_header_bytes)
        // Our socket keeps the head deadline; hyper's would also need a timer, and restarts
        // whenever a keep-alive connection rests.
        .header_read_timeout(None);
    let socket = SocketLimits {
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
        write_timeout: limits.write_timeout,
        max_header_bytes: limits.max_header_bytes,
        stage_timing: limits.stage_timing,
    };
    let serving = Serving {
        app,
        http,
        limits: socket,
        lane,
    };
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_tenant = match limits.max_connections_per_tenant {
        0 => TenantConnections::under_pressure(
            (limits.max_connections / 4).max(1),
            Arc::clone(&permits),
            limits.max_connections / 4,
        ),
        n => TenantConnections::always_binding(n, Arc::clone(&permits), limits.max_connections / 4),
    };
    let refusals = Arc::new(Semaphore::new(REFUSAL_SLOTS));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Owns every connection task: dropping it (the shutdown timeout) aborts them all.
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::default();
    let mut cap_warning = Throttle::default();
    let mut refused: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done && e.is_panic() {
                    tracing::error!(error = %e, "a connection task panicked");
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if let Some(pause) = backoff.after(&e) {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                continue;
            }
        };
        backoff.reset();
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                tasks.spawn(serve_connection(
                    stream,
                    peer,
                    serving.clone(),
                    stop_rx.clone(),
                    Slot {
                        _permit: permit,
                        tenant: per_tenant.connection(),
                    },
                ));
            }
            Err(_) => {
                refused += 1;
                if cap_warning.ready() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        refused,
                        "connection limit reached; refusing new connections with 503"
                    );
                    refused = 0;
                }
                refuse(stream, peer, &refusals, &mut tasks);
            }
        }
    }
    drop(listener);
    tracing::info!(
        connections = tasks.len(),
        "stopped accepting; finishing open connections"
    );
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

/// The accept loop's answer to errors. One about a single connection (reset before we took
/// it) is skipped. Anything else (out of file descriptors, memory or buffers) does not clear
/// up by retrying at once, and the listener stays readable, so an immediate retry would spin:
/// pause instead, doubling from 5 ms to 500 ms while the errors last.
struct Backoff {
    next: Duration,
    streak: u64,
    warning: Throttle,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_MIN,
            streak: 0,
            warning: Throttle::default(),
        }
    }
}

/// Says yes at most once per [`WARN_EVERY`].
#[derive(Default)]
struct Throttle {
    last: Option<tokio::time::Instant>,
}

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let ready = self.last.is_none_or(|last| now - last >= WARN_EVERY);
        if ready {
            self.last = Some(now);
        }
        ready
    }
}

impl Backoff {
    fn after(&mut self, e: &io::Error) -> Option<Duration> {
        use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
        if matches!(
            e.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
        ) {
            return None;
        }
        self.streak += 1;
        if self.streak == 1 && self.warning.ready() {
            tracing::warn!(error = %e, "accept failed; pausing until it succeeds again");
        }
        let pause = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        Some(pause)
    }

    fn reset(&mut self) {
        if self.streak > 0 {
            tracing::debug!(errors = self.streak, "accepting connections again");
        }
        self.streak = 0;
        self.next = BACKOFF_MIN;
    }
}

/// Answers a connection over the cap with `503 OVERLOADED` and closes it, unless refusals are
/// at their own limit, in which case it is closed unanswered.
fn refuse(stream: TcpStream, peer: SocketAddr, slots: &Arc<Semaphore>, tasks: &mut JoinSet<()>) {
    let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
        return;
    };
    tasks.spawn(async move {
        let _slot = slot;
        let request_id = new_request_id();
        tracing::debug!(%peer, request_id, "over the connection limit; refused");
        let answer = ApiError::Overloaded(
            "the server is at its connection limit (server.max_connections); retry shortly".into(),
        )
        .to_http1(&request_id);
        let _ = tokio::time::timeout(REFUSAL_TIME, linger(stream, answer)).await;
    });
}

/// Writes `answer`, ends our side, then reads and discards what the client sends until it
/// closes: closing a socket with unread input makes the kernel reset the connection, and the
/// reset can destroy the answer before the client reads it.
async fn linger(mut stream: TcpStream, answer: Vec<u8>) -> io::Result<()> {
    let mut sent = 0;
    while sent < answer.len() {
        stream.writable().await?;
        match stream.try_write(&answer[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    std::future::poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx)).await?;
    let mut sink = [0u8; 4096];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// What every connection is served with.
#[derive(Clone)]
struct Serving {
    app: Router,
    http: http1::Builder,
    limits: SocketLimits,
    /// Where the requests of a tenant over its share run, if anywhere else.
    lane: Option<OverShareLane>,
}

/// A connection's place in the server's cap and in its tenant's budget, held while it is open.
struct Slot {
    _permit: OwnedSemaphorePermit,
    tenant: Arc<ConnectionTenant>,
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    serving: Serving,
    stop: watch::Receiver<bool>,
    slot: Slot,
) {
    let Serving {
        app,
        http,
        limits,
        lane,
    } = serving;
    let _open = crate::metrics::connection_opened();
    // Responses are written whole; waiting to coalesce them only adds latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "TCP_NODELAY not set");
    }
    let tracker = Arc::new(Tracker::new());
    let io = TokioIo::new(GuardedIo::new(stream, peer, Arc::clone(&tracker), limits));
    let service = ConnService {
        app,
        peer,
        tracker: Arc::clone(&tracker),
        tenant: Arc::clone(&slot.tenant),
        stage_timing: limits.stage_timing,
    };
    let tenant = Arc::clone(&slot.tenant);
    let conn = http.serve_connection(io, service);
    let connection = until_stopped(conn, peer, tracker, stop, slot);
    match lane {
        None => connection.await,
        // Where the connection runs is decided from the tenant of its latest request: the
        // next one's is not known before its credential is checked, which is part of the work
        // to move.
        Some(lane) => lane.serve(connection, move || tenant.over_share()).await,
    }
}

/// Serves `conn` until it ends or the server stops, holding its `slot`.
async fn until_stopped(
    conn: http1::Connection<TokioIo<GuardedIo>, ConnService>,
    peer: SocketAddr,
    tracker: Arc<Tracker>,
    mut stop: watch::Receiver<bool>,
    slot: Slot,
) {
    let _slot = slot;
    tokio::pin!(conn);
    let stopping = async move {
        // An error means the server is gone, which is a stop too.
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping => {
            if tracker.is_waiting() {
                // Between requests, nothing half-read: closing loses nothing.
                return;
            }
            // Finish the request in flight, answer it with `Connection: close`, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The router as hyper's per-connection service: adds the client address (audit rows name
/// it) and the connection's place in its tenant's connection budget, tells the socket when a
/// request is being served, and closes the connection after a refusal by that budget.
struct ConnService {
    app: Router,
    peer: SocketAddr,
    tracker: Arc<Tracker>,
    tenant: Arc<ConnectionTenant>,
    /// `ServerLimits::stage_timing`: when off, `X-Strata-Timing` is not even looked at.
    stage_timing: bool,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        req.extensions_mut().insert(Arc::clone(&self.tenant));
        let tenant = Arc::clone(&self.tenant);
        // The request metrics time it from here, not from when the router's middleware first
        // runs: a request whose head was read while the async threads were held up (a stall
        // that holds up everything) waited from its first byte, and its caller saw that wait.
        let arrived = self.tracker.request_started();
        req.extensions_mut().insert(crate::metrics::RequestArrived(
            arrived.unwrap_or_else(std::time::Instant::now),
        ));
        let in_flight = self.tracker.begin();
        // The router is always ready (`poll_ready` is a no-op), so it can be called directly.
        let mut app = self.app.clone();
        // When the server allows it, an authenticated caller that asks gets each stage's
        // duration back (`timing.rs`), from the first byte of this request's head.
        let timeline = (self.stage_timing && crate::timing::asked(req.headers()))
            .then(|| crate::timing::Timeline::starting(arrived));
        let response = tower::Service::call(&mut app, req.map(Body::new));
        let answer = async move {
            match timeline {
                None => response.await,
                Some(timeline) => {
                    let (response, value) = crate::timing::timed(timeline, response).await;
                    let mut response = response?;
                    if let Some(value) = value
                        && crate::timing::may_answer_with_timings(response.status())
                    {
                        response.headers_mut().insert(
                            HeaderName::from_static(crate::timing::SERVER_TIMING_HEADER),
                            value,
                        );
                    }
                    Ok(response)
                }
            }
        };
        if crate::over_share_lane::on_lane() {
            crate::metrics::over_share_lane_request();
        }
        Box::pin(async move {
            let mut response = answer.await?;
            if tenant.must_close() {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| Tracked {
                body,
                in_flight: Some(in_flight),
            }))
        })
    }
}

/// A response body that ends its request's [`InFlight`] when it has been sent or dropped.
struct Tracked {
    body: Body,
    in_flight: Option<InFlight>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) || self.body.is_end_stream() {
            self.in_flight = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::Extension;
    use axum::extract::State;

    use crate::over_share_lane::{OverShare, TestLane};
    use crate::tenant_connections::ConnectionTenant;

    /// A route that admits its request as the one test tenant's, as authentication does, and
    /// answers with the name of the thread it ran on.
    async fn thread_name(
        State(flag): State<Arc<OverShare>>,
        Extension(conn): Extension<Arc<ConnectionTenant>>,
    ) -> String {
        conn.bind(strata_store::TenantKey::for_tests(1)).unwrap();
        conn.follow(&flag);
        std::thread::current().name().unwrap_or("").to_owned()
    }

    /// One request on a kept-alive connection; returns the answer's body.
    fn ask(stream: &mut std::net::TcpStream) -> String {
        use std::io::{Read, Write};
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .expect("a length")
                .parse()
                .unwrap();
            if body.len() >= len {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return body.to_owned();
            }
        }
    }

    /// A connection whose tenant the pool found over its share moves to the lane's threads,
    /// its requests with it, and back to the main ones once the tenant is within its share;
    /// the answers are whole either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_over_its_share_has_its_connection_served_on_the_lane() {
        let test_lane = TestLane::new();
        let flag = Arc::new(OverShare::default());
        let app = Router::new()
            .route("/", axum::routing::get(thread_name))
            .with_state(Arc::clone(&flag));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            app,
            ServerLimits::default(),
            Some(test_lane.lane.clone()),
            async move {
                let _ = stopped.await;
            },
        ));
        tokio::task::spawn_blocking(move || {
            let mut conn = std::net::TcpStream::connect(addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let first = ask(&mut conn);
            assert_ne!(first, TestLane::THREAD, "nothing known of the tenant yet");
            assert_ne!(ask(&mut conn), TestLane::THREAD, "within its share");
            // A connection moves between two polls, and the poll that wrote an answer may
            // already have read the next request. The flag is set before each request, as
            // the pool's submissions would: it lapses on its own after two share windows.
            let over_ask = |conn: &mut std::net::TcpStream| {
                flag.set(true);
                ask(conn)
            };
            assert!((0..3).any(|_| over_ask(&mut conn) == TestLane::THREAD));
            assert_eq!(over_ask(&mut conn), TestLane::THREAD);
            assert_eq!(over_ask(&mut conn), TestLane::THREAD);
            flag.set(false);
            assert!((0..3).any(|_| ask(&mut conn) != TestLane::THREAD));
            assert_ne!(ask(&mut conn), TestLane::THREAD);
        })
        .await
        .unwrap();
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[test]
    fn accept_errors_back_off_exponentially_and_per_connection_errors_do_not() {
        let mut b = Backoff::default();
        assert_eq!(b.after(&io::ErrorKind::ConnectionAborted.into()), None);
        let emfile = io::Error::from_raw_os_error(24);
        let pauses: Vec<u64> = (0..10)
            .filter_map(|_| b.after(&emfile))
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 500, 500, 500]);
        b.reset();
        assert_eq!(b.after(&emfile), Some(BACKOFF_MIN));
    }
}
