//! Where a request's time went, stage by stage, when its caller asks (`X-Strata-Timing: 1`):
//! the answer then carries a standard `Server-Timing` header with the duration of each stage,
//! so a benchmark can see where its slowest requests waited (the async threads, admission, the
//! body, the pool's queue, the job, the way back) without a profiler.
//!
//! Off unless the operator turns it on (`[server] stage_timing`): the durations are side
//! channels (how busy the shared pool is, how long a lookup of a hidden record took, when the
//! registry last changed). Even then a request gets them only once its credential was accepted
//! (`authenticated`), and never on a 401 or 403. With the setting off nothing here runs.
//!
//! The marks live in a task-local timeline that exists only for requests that asked. With the
//! setting on, a request that did not ask pays one header look-up and the two clock reads
//! (its head's first byte, its end) that let a later request on its connection start its
//! timeline (`conn_io.rs`); with it off, none of these. A request only ever sees its own
//! timings.

use std::cell::Cell;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};

/// The request header that asks for the stage durations (any value but `0`).
pub const TIMING_HEADER: &str = "x-strata-timing";
/// The answer's header carrying them (W3C Server-Timing: `name;dur=milliseconds`, in order).
pub const SERVER_TIMING_HEADER: &str = "server-timing";

/// The moments a request passes, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The first byte of its head was read from the socket.
    Head = 0,
    /// Its head was parsed and the router called.
    Routed,
    /// Its credential, rate and in-flight limits were checked.
    Admitted,
    /// Its body was read whole.
    BodyRead,
    /// Its job was submitted to the worker pool.
    Queued,
    /// A worker started its job.
    Started,
    /// Its job finished.
    Done,
    /// What its job wrote is durable (the fsync wait of a write, or of a search's audit rows).
    Durable,
    /// Its answer, serialised, is handed to the connection to write.
    Answered,
}

const STAGES: usize = Stage::Answered as usize + 1;

/// The name of the span that ends at each stage (the first has none: it starts the clock).
const SPAN_NAMES: [&str; STAGES] = [
    "", "parse", "admit", "body", "prepare", "queue", "job", "durable", "reply",
];

/// The moments a request passed; unset ones were skipped (a route with no body, no job).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timeline {
    at: [Option<Instant>; STAGES],
    /// The request's credential was accepted: only then are its timings answered.
    authenticated: bool,
}

impl Timeline {
    /// A timeline that starts at `head` (the first byte of the request), or now.
    pub(crate) fn starting(head: Option<Instant>) -> Timeline {
        let mut t = Timeline::default();
        t.at[Stage::Head as usize] = Some(head.unwrap_or_else(Instant::now));
        t.at[Stage::Routed as usize] = Some(Instant::now());
        t
    }

    fn set(&mut self, stage: Stage, at: Instant) {
        self.at[stage as usize] = Some(at);
    }

    /// The `Server-Timing` value: each reached stage's duration since the previous reached
    /// one, then `total` from the first byte, in milliseconds with microsecond precision.
    pub(crate) fn header_value(&self) -> String {
        let mut parts = Vec::with_capacity(STAGES);
        let mut last = None;
        for (i, at) in self.at.iter().enumerate() {
            let Some(at) = *at else { continue };
            if let Some(prev) = last {
                let ms = at.saturating_duration_since(prev).as_secs_f64() * 1000.0;
                parts.push(format!("{};dur={ms:.3}", SPAN_NAMES[i]));
            }
            last = Some(at);
        }
        if let (Some(first), Some(end)) = (self.at[0], last) {
            let ms = end.saturating_duration_since(first).as_secs_f64() * 1000.0;
            parts.push(format!("total;dur={ms:.3}"));
        }
        parts.join(", ")
    }
}

tokio::task_local! {
    /// The timeline of the request this task serves, when it asked for one.
    static TIMELINE: Cell<Timeline>;
}

/// Whether the request asks for its stage durations.
pub(crate) fn asked(headers: &HeaderMap) -> bool {
    headers
        .get(TIMING_HEADER)
        .is_some_and(|v| !v.as_bytes().is_empty() && v.as_bytes() != b"0")
}

/// Runs `fut` (the request's service) with a timeline, and returns its output with the
/// `Server-Timing` value once it is done; `None` when the request was never authenticated
/// (an anonymous caller learns nothing about the server's load from it).
pub(crate) async fn timed<F: std::future::Future>(
    timeline: Timeline,
    fut: F,
) -> (F::Output, Option<HeaderValue>) {
    TIMELINE
        .scope(Cell::new(timeline), async move {
            let out = fut.await;
            mark(Stage::Answered);
            let timeline = TIMELINE.with(Cell::get);
            let value = timeline.authenticated.then(|| {
                // Only digits, names, `;`, `=`, `.`, `,` and spaces: always a valid value.
                HeaderValue::from_str(&timeline.header_value())
                    .unwrap_or_else(|_| HeaderValue::from_static("total;dur=0"))
            });
            (out, value)
        })
        .await
}

/// Runs `fut` on a task of its own (a write that must run to its end even if its caller goes)
/// with the current request's timeline carried into it and back: what `fut` marks counts as
/// the request's, as if it had run in place. A task-local does not follow a spawn by itself,
/// and a keyed write's answer lost its timings to that. A request without a timeline spawns
/// plainly; a caller gone before the task ends only loses the marks.
///
/// The task runs on the main runtime, also when the request is on the over-share lane
/// (`over_share_lane::spawn`): a keyed write's wait for durability may lead its group's sync,
/// holding the store's write lock on a blocking thread, and a thread started from a lane
/// thread would run at the lane's lowered priority.
pub(crate) async fn spawn_carrying<F>(fut: F) -> Result<F::Output, tokio::task::JoinError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Ok(timeline) = TIMELINE.try_with(Cell::get) else {
        return crate::over_share_lane::spawn(fut).await;
    };
    let carried = TIMELINE.scope(Cell::new(timeline), async move {
        let out = fut.await;
        (out, TIMELINE.with(Cell::get))
    });
    let (out, timeline) = crate::over_share_lane::spawn(carried).await?;
    let _ = TIMELINE.try_with(|t| t.set(timeline));
    Ok(out)
}

/// Records that the current request's credential was accepted (nothing if it did not ask).
pub(crate) fn authenticated() {
    let _ = TIMELINE.try_with(|t| {
        let mut timeline = t.get();
        timeline.authenticated = true;
        t.set(timeline);
    });
}

/// Whether an answer with this status may carry timings: never a refusal of the credential
/// or of its permissions, whatever stage it came from.
pub(crate) fn may_answer_with_timings(status: axum::http::StatusCode) -> bool {
    !matches!(status.as_u16(), 401 | 403)
}

/// Records that the current request reached `stage` now (nothing if it did not ask).
pub(crate) fn mark(stage: Stage) {
    mark_at(stage, Instant::now());
}

/// Records that the current request reached `stage` at `at` (a moment seen on another thread,
/// such as a worker's); nothing if it did not ask.
pub(crate) fn mark_at(stage: Stage, at: Instant) {
    let _ = TIMELINE.try_with(|t| {
        let mut timeline = t.get();
        timeline.set(stage, at);
        t.set(timeline);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_header_names_each_reached_stage_with_its_duration_and_the_total() {
        let t0 = Instant::now();
        let mut t = Timeline::default();
        t.set(Stage::Head, t0);
        t.set(Stage::Routed, t0 + Duration::from_micros(100));
        t.set(Stage::Admitted, t0 + Duration::from_micros(150));
        // No body and no job: those spans are absent, the next one spans the gap.
        t.set(Stage::Answered, t0 + Duration::from_micros(1150));
        assert_eq!(
            t.header_value(),
            "parse;dur=0.100, admit;dur=0.050, reply;dur=1.000, total;dur=1.150"
        );
    }

    #[test]
    fn only_a_request_that_asks_gets_timings() {
        let mut h = HeaderMap::new();
        assert!(!asked(&h));
        h.insert(TIMING_HEADER, HeaderValue::from_static("0"));
        assert!(!asked(&h));
        h.insert(TIMING_HEADER, HeaderValue::from_static("1"));
        assert!(asked(&h));
    }

    #[tokio::test]
    async fn marks_outside_a_timed_request_are_ignored_and_inside_are_kept() {
        mark(Stage::Admitted); // no timeline: nothing happens, no panic
        let (out, value) = timed(Timeline::starting(None), async {
            authenticated();
            mark(Stage::Admitted);
            mark_at(Stage::Queued, Instant::now());
            7
        })
        .await;
        assert_eq!(out, 7);
        let value = value.expect("an authenticated request gets its timings");
        let v = value.to_str().expect("ascii");
        for name in [
            "parse;dur=",
            "admit;dur=",
            "prepare;dur=",
            "reply;dur=",
            "total;dur=",
        ] {
            assert!(v.contains(name), "{v}");
        }
    }

    #[tokio::test]
    async fn marks_made_on_a_spawned_task_come_back_to_the_request() {
        let (out, value) = timed(Timeline::starting(None), async {
            spawn_carrying(async {
                authenticated();
                mark(Stage::Queued);
                tokio::task::yield_now().await;
                mark(Stage::Done);
                5
            })
            .await
            .expect("join")
        })
        .await;
        assert_eq!(out, 5);
        let value = value.expect("the task's authentication came back");
        let v = value.to_str().expect("ascii");
        for name in ["prepare;dur=", "job;dur=", "reply;dur="] {
            assert!(v.contains(name), "{v}");
        }
        // Outside a timed request it is a plain spawn.
        assert_eq!(spawn_carrying(async { 3 }).await.expect("join"), 3);
    }

    #[tokio::test]
    async fn a_request_never_authenticated_gets_no_timings() {
        let (out, value) = timed(Timeline::starting(None), async {
            mark(Stage::Admitted);
            1
        })
        .await;
        assert_eq!(out, 1);
        assert!(value.is_none());
    }

    #[test]
    fn refusals_of_the_credential_carry_no_timings() {
        use axum::http::StatusCode;
        assert!(!may_answer_with_timings(StatusCode::UNAUTHORIZED));
        assert!(!may_answer_with_timings(StatusCode::FORBIDDEN));
        assert!(may_answer_with_timings(StatusCode::OK));
        assert!(may_answer_with_timings(StatusCode::NOT_FOUND));
    }
}
