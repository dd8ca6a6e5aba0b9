//! A write run on the pool in steps: its check, each embedding step of bounded cost
//! (`strata_engine::Engine::embed_put_step`) and its transaction are separate jobs in the
//! tenant's fair share, so a tenant's large text batch queues behind its own requests instead
//! of holding a worker for the whole embedding while every other tenant waits.
//!
//! The check and the embedding steps of a write that may embed (a record without a vector)
//! write nothing, so they may run on the pool's low-priority workers while the tenant is over
//! its CPU share ([`Demotable::WritesInForeground`]): a tenant flooding text writes then embeds
//! at low priority, and another tenant's search, on a normal thread, takes the core from it.
//! The transaction itself always runs on a normal-priority worker: in the job of the last
//! embedding step when that job ran on one, else in a job of its own. A write whose records
//! all carry vectors stays one job on a normal worker: its check is microseconds, and a job
//! more per write (a queue turn, two thread hand-offs on a background worker) would cost the
//! write more than the check it moves.

use strata_auth::TenantScope;
use strata_engine::{Engine, PendingPut};
use strata_sched::Demotable;
use strata_types::{NewRecord, RequestScope};

use crate::admission::Admitted;
use crate::{ApiError, AppState};

/// Where a write stands after one of its jobs.
enum Step<T, F> {
    Done(T),
    Embedding(Box<PendingPut>, F),
    /// Checked and embedded on a low-priority worker: the transaction is left to a job on a
    /// normal one.
    Embedded(Box<PendingPut>, F),
}

/// Checks and embeds `records`, then runs `finish` (the write) on the prepared batch, each
/// step its own pool job. The last embedding step and `finish` share a job, so a write of a
/// few short texts is still one job. `batch`: the records came as `{"records": [...]}`, so a
/// record's error names it by its place (`records[i]`).
pub(crate) async fn put_in_steps<T, F>(
    state: &AppState,
    admitted: &Admitted,
    scope: TenantScope,
    req: RequestScope,
    records: Vec<NewRecord>,
    batch: bool,
    finish: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Engine, &TenantScope, &RequestScope, PendingPut) -> Result<T, ApiError>
        + Send
        + 'static,
{
    let (s, r) = (scope.clone(), req.clone());
    let first = match records.iter().any(|r| r.vector.is_none()) {
        true => Demotable::WritesInForeground,
        false => Demotable::Never,
    };
    let mut step = state
        .run_tenant_as(admitted, first, move |e| {
            let pending = if batch {
                e.begin_put_batch(&s, &r, records)?
            } else {
                e.begin_put(&s, &r, records)?
            };
            embed_step(e, &s, &r, pending, finish)
        })
        .await?;
    loop {
        match step {
            Step::Done(answer) => return Ok(answer),
            Step::Embedding(pending, finish) => {
                let (s, r) = (scope.clone(), req.clone());
                step = state
                    .run_tenant_as(admitted, Demotable::WritesInForeground, move |e| {
                        embed_step(e, &s, &r, *pending, finish)
                    })
                    .await?;
            }
            Step::Embedded(pending, finish) => {
                let (s, r) = (scope.clone(), req.clone());
                return state
                    .run_tenant(admitted, move |e| finish(e, &s, &r, *pending))
                    .await;
            }
        }
    }
}

/// One embedding step, and the write once nothing is left to embed.
fn embed_step<T, F>(
    e: &Engine,
    scope: &TenantScope,
    req: &RequestScope,
    mut pending: PendingPut,
    finish: F,
) -> Result<Step<T, F>, ApiError>
where
    F: FnOnce(&Engine, &TenantScope, &RequestScope, PendingPut) -> Result<T, ApiError>,
{
    e.embed_put_step(&mut pending)?;
    if !pending.is_embedded() {
        Ok(Step::Embedding(Box::new(pending), finish))
    } else if strata_sched::on_background_worker() {
        Ok(Step::Embedded(Box::new(pending), finish))
    } else {
        Ok(Step::Done(finish(e, scope, req, pending)?))
    }
}
