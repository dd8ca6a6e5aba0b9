//! A count, a listing, a delete by filter or a collection's delete run on the pool in steps of
//! bounded cost (`strata_engine::Engine::count_step`, `page_step`, `delete_where_step`,
//! `delete_collection_step`), each step its own
//! job in the tenant's fair share: a tenant's scan of many records queues behind its own
//! requests, step by step, while other tenants' jobs run between its steps, instead of holding
//! a worker for the whole scan.

use strata_engine::Stepped::{Done, More};
use strata_engine::{
    Engine, EngineError, PendingCollectionDelete, PendingCount, PendingDelete, PendingPage,
    ScanPage, Stepped,
};

use strata_types::Record;

use crate::admission::Admitted;
use crate::answer_budget::AnswerHold;
use crate::record_body::RecordFields;
use crate::{ApiError, AppState};

/// An engine operation that runs in steps.
pub(crate) trait Steps: Sized + Send + 'static {
    type Answer: Send + 'static;

    /// Whether beginning the operation writes (a collection's delete writes its mark first):
    /// the first job then needs a worker that may take the write lock.
    const BEGIN_WRITES: bool = false;

    /// Whether the next step writes (it then needs a worker that may take the write lock).
    fn writes_next(&self) -> bool {
        false
    }

    fn step(self, e: &Engine) -> Result<Stepped<Self, Self::Answer>, EngineError>;
}

impl Steps for PendingCount {
    type Answer = u64;

    fn step(self, e: &Engine) -> Result<Stepped<Self, u64>, EngineError> {
        e.count_step(self)
    }
}

/// A listing's page whose records are admitted against its answer's memory
/// (`answer_budget`): the page stops before the record its reservation cannot grow to take
/// (the tenant's or the server's budget is full), and comes back shorter, with its `next`.
pub(crate) struct MeteredPage {
    pub pending: PendingPage,
    pub hold: AnswerHold,
    pub fields: RecordFields,
    /// The refusal of the page's first record (it does not fit even alone): the answer.
    pub refused: Option<ApiError>,
}

impl Steps for MeteredPage {
    /// The page and its hold, grown to what the page fetched; or the first record's refusal.
    type Answer = Result<(ScanPage, AnswerHold), ApiError>;

    fn step(self, e: &Engine) -> Result<Stepped<Self, Self::Answer>, EngineError> {
        let MeteredPage {
            pending,
            mut hold,
            fields,
            mut refused,
        } = self;
        let mut admit = |record: &mut Record, first: bool| {
            if refused.is_some() {
                return false;
            }
            // What the answer does not carry is dropped now, not held until the page is
            // encoded: an ids-only page of large records holds ids, as its measure says.
            fields.strip(record);
            match hold.admit_record(fields.measure(record), first) {
                Ok(joins) => joins,
                Err(e) => {
                    refused = Some(e);
                    false
                }
            }
        };
        Ok(match e.page_step_admitting(pending, &mut admit)? {
            More(pending) => More(Box::new(MeteredPage {
                pending: *pending,
                hold,
                fields,
                refused,
            })),
            Done(page) => Done(match refused {
                Some(e) => Err(e),
                None => Ok((page, hold)),
            }),
        })
    }
}

impl Steps for PendingDelete {
    type Answer = u64;

    fn writes_next(&self) -> bool {
        PendingDelete::writes_next(self)
    }

    fn step(self, e: &Engine) -> Result<Stepped<Self, u64>, EngineError> {
        e.delete_where_step(self)
    }
}

impl Steps for PendingCollectionDelete {
    type Answer = u64;

    const BEGIN_WRITES: bool = true;

    fn writes_next(&self) -> bool {
        PendingCollectionDelete::writes_next(self)
    }

    fn step(self, e: &Engine) -> Result<Stepped<Self, u64>, EngineError> {
        e.delete_collection_step(self)
    }
}

/// Runs `begin` and the first step in one job (a scan that fits in a step is one job, as
/// before), then each further step as its own job: a read one that may be demoted while the
/// tenant is over its share, or a normal one when the step writes. Before each further step
/// `recheck` runs (the request's credential checked again, `TenantAuth::recheck`): its error
/// ends the request there.
pub(crate) async fn run_in_steps<S: Steps>(
    state: &AppState,
    admitted: &Admitted,
    recheck: impl Fn(&AppState) -> Result<(), ApiError>,
    begin: impl FnOnce(&Engine) -> Result<S, EngineError> + Send + 'static,
) -> Result<S::Answer, ApiError> {
    // Every operation's first step reads (a delete scans before it deletes), but a begin may
    // write.
    let first = move |e: &Engine| Ok(begin(e)?.step(e)?);
    let mut next = if S::BEGIN_WRITES {
        state.run_tenant(admitted, first).await?
    } else {
        state.run_tenant_read(admitted, first).await?
    };
    loop {
        let pending = match next {
            Done(answer) => return Ok(answer),
            More(pending) => *pending,
        };
        recheck(state)?;
        let writes = pending.writes_next();
        let step = move |e: &Engine| Ok(pending.step(e)?);
        next = if writes {
            state.run_tenant(admitted, step).await?
        } else {
            state.run_tenant_read(admitted, step).await?
        };
    }
}
