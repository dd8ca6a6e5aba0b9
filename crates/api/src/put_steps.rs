//! A write run on the pool in steps: its check, each embedding step of bounded cost
//! (`strata_engine::Engine::embed_put_step`) and its transaction are separate jobs in the
//! tenant's fair share, so a tenant's large text batch queues behind its own requests instead
//! of holding a worker for the whole embedding while every other tenant waits.

use strata_auth::TenantScope;
use strata_engine::{Engine, PendingPut};
use strata_types::{NewRecord, RequestScope};

use crate::admission::Admitted;
use crate::{ApiError, AppState};

/// Where a write stands after one of its jobs.
enum Step<T, F> {
    Done(T),
    Embedding(Box<PendingPut>, F),
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
    let mut step = state
        .run_tenant(admitted, move |e| {
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
                    .run_tenant(admitted, move |e| embed_step(e, &s, &r, *pending, finish))
                    .await?;
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
    if pending.is_embedded() {
        Ok(Step::Done(finish(e, scope, req, pending)?))
    } else {
        Ok(Step::Embedding(Box::new(pending), finish))
    }
}
