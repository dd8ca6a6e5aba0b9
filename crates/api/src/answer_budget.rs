//! Each tenant's share of the memory that answers take from their fetch until their clients
//! read them.
//!
//! A page of records or a search answer is fetched (records cloned out of storage), then
//! serialised whole into one buffer before it is sent, and the buffer lives until the client
//! has read the last byte: a tenant asking for many large pages on many connections and reading
//! them slowly could hold gigabytes (a page of 1,000 records with 4,096-dimension vectors is
//! ~43 MB of JSON). Two figures bound it, each an atomic counter:
//!
//! - the tenant's (`max_answer_bytes_per_tenant`, else `429 ANSWER_MEMORY_LIMITED`) counts
//!   each answer's reservation: an estimate taken when its request is admitted (records asked
//!   for × bytes per record, [`TenantAnswers::estimate`]), so a burst of requests all admitted
//!   before any answer is fetched is refused there, up front;
//! - the server's (`max_answer_bytes`, else `503 OVERLOADED`) counts only what exists: the
//!   records fetched so far, measured as they are fetched (`answer_size`: an upper bound of
//!   their JSON), then the encoded buffer. A tenant's pessimistic estimate (a fresh tenant's
//!   are the record limits' worst case, ~85 KB a record) takes its own budget, never the
//!   other tenants' share of the server's.
//!
//! The fetch keeps to the budgets: a list page grows its reservation past the estimate as
//! records arrive, and stops before the record whose growth the tenant's budget (or the
//! server's) refuses, coming back shorter, with its `next`, so the client reads on
//! ([`AnswerHold::admit_record`]); a search's or recall's `k` hits cannot be cut, so their
//! measured size must fit, the reservation grown to it, or the answer is refused before it is
//! encoded ([`AnswerHold::fetched`]). Once encoded, the answer is held at its buffer's
//! capacity (spare capacity is held memory too), checked again when that is more than it
//! held. It is given back only when the buffer is freed: the buffer's owner in the response
//! body ([`AnswerHold::into_body`], `Bytes::from_owner`) holds it, and every slice of the body
//! (hyper may keep a chunk after the handler and the body are done) keeps that owner alive.
//!
//! The invariant: every byte a tenant's answers hold, fetched or encoded, is within its
//! reservation, and every growth of either figure is checked against its budget; so what a
//! tenant's answers hold stays within its budget, and what all answers hold within the
//! server's, except that one answer always fits a tenant (or the server) holding none besides
//! it: an answer larger than the budget is still served, one at a time, and a page holds at
//! least one record. A tenant that taught its estimate small records and then asks for pages
//! of large ones gets short pages, not memory past its budget. Not counted: the one record a
//! fetch has read and not yet admitted, and an answer's records while its buffer is being
//! encoded (both for as long as a job runs, so bounded by the pool's workers).
//!
//! No lock, so a small search pays nothing measurable: a compare-and-swap on a counter per
//! reservation, per record fetched and per encoded answer, a subtraction when it is freed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use strata_types::{Include, RecordLimits, SearchRequest};

use crate::ApiError;

/// The budgets of all tenants' answers; 0 turns a budget off (the bytes are still counted).
#[derive(Debug)]
pub(crate) struct AnswerBudget {
    per_tenant: u64,
    server: u64,
    held: AtomicU64,
    /// Bytes per record of an answer with no history to go by, by [`Shape`].
    cold: [u64; 3],
}

/// What an answer's records carry, which sets its bytes per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Ids (and scores) only.
    Ids = 0,
    /// Stored fields without the vector.
    Records = 1,
    /// Stored fields with the vector.
    Vectors = 2,
}

/// What one tenant's answers hold; kept with the tenant's live figures
/// (`metrics::TenantSeries`), which admission hands every request without a lock.
#[derive(Debug, Default)]
pub(crate) struct TenantAnswers {
    held: AtomicU64,
    /// Bytes per record of the tenant's recent answers of each [`Shape`]: the largest seen,
    /// halved by each answer of smaller records. 0 until one was answered.
    per_record: [AtomicU64; 3],
}

/// Bytes of one answer, given back when dropped.
#[derive(Debug)]
pub(crate) struct AnswerHold {
    budget: Arc<AnswerBudget>,
    tenant: Arc<TenantAnswers>,
    /// Counted in the tenant's figure: the reservation, grown to what is fetched or encoded
    /// when that is more, then moved to the encoded buffer's capacity.
    bytes: u64,
    /// Counted in the server's figure: what exists, the records fetched so far (measured),
    /// then the encoded buffer's capacity. Never more than `bytes`.
    real: u64,
}

/// An encoded answer and its hold: the owner of a response body's bytes.
struct HeldAnswer {
    buf: Vec<u8>,
    _hold: AnswerHold,
}

impl AsRef<[u8]> for HeldAnswer {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

/// Bytes of JSON per vector component at most: `-1.2345678e-38,` is 15.
const JSON_BYTES_PER_DIM: u64 = 16;
/// A record's JSON besides content, metadata and vector: id, names, tokens, times, punctuation.
const RECORD_OVERHEAD: u64 = 1024;
/// A hit or record that carries its id (at most 128 bytes) and score only.
const ID_BYTES: u64 = 256;

impl Shape {
    /// What a search's (or recall's) hits carry.
    pub(crate) fn of_search(search: &SearchRequest) -> Shape {
        if search.includes(Include::Vector) {
            Shape::Vectors
        } else if search.needs_records() {
            Shape::Records
        } else {
            Shape::Ids
        }
    }
}

impl AnswerBudget {
    /// `per_tenant` and `server` in bytes, 0 for none; `limits` bound a record, for the
    /// estimate of a tenant's first answers.
    pub(crate) fn new(per_tenant: u64, server: u64, limits: &RecordLimits) -> Arc<Self> {
        let record = RECORD_OVERHEAD
            + limits.max_content_bytes as u64
            + limits.max_metadata_bytes as u64
            + limits.max_user_tokens as u64 * 64;
        Arc::new(AnswerBudget {
            per_tenant,
            server,
            held: AtomicU64::new(0),
            cold: [
                ID_BYTES,
                record,
                record + u64::from(limits.max_dim) * JSON_BYTES_PER_DIM,
            ],
        })
    }

    /// Reserves `bytes` for one answer of the tenant's, or refuses it: against the tenant's
    /// budget (its own doing: 429); the server's (everyone's: 503) only when it is full
    /// already, since it counts what answers really hold, which the fetch adds.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        tenant: &Arc<TenantAnswers>,
        bytes: u64,
    ) -> Result<AnswerHold, ApiError> {
        if self.server != 0 && self.held.load(Ordering::Acquire) >= self.server {
            return Err(server_refusal());
        }
        if let Err(held) = try_add(&tenant.held, Some(0), bytes, self.per_tenant) {
            return Err(self.tenant_refusal(held, bytes));
        }
        Ok(AnswerHold {
            budget: Arc::clone(self),
            tenant: Arc::clone(tenant),
            bytes,
            real: 0,
        })
    }

    /// The tenant's own refusal (429): its unread answers hold `held` bytes, and one of
    /// `bytes` more would pass its budget.
    fn tenant_refusal(&self, held: u64, bytes: u64) -> ApiError {
        ApiError::AnswerMemoryLimited(format!(
            "this tenant's unread answers hold {held} bytes; one of about {bytes} more would \
             pass its limit of {} bytes (server.max_answer_bytes_per_tenant); read the \
             answers already asked for, or retry later",
            self.per_tenant
        ))
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

/// The server's refusal (503). No figure: what all tenants' answers hold would tell one
/// tenant of the others'.
fn server_refusal() -> ApiError {
    ApiError::Overloaded("the server's memory for unread answers is full; retry later".into())
}

/// Adds `bytes` to `counter` unless that passes `max` (0: no max); with `Some(own)` (the
/// caller's reservation, already counted in it) it passes anyway when nothing besides `own`
/// is held (a lone answer), with `None` never. Else the bytes held.
fn try_add(counter: &AtomicU64, own: Option<u64>, bytes: u64, max: u64) -> Result<(), u64> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            let lone = own.is_some_and(|own| held <= own);
            let fits = max == 0 || lone || held.saturating_add(bytes) <= max;
            fits.then(|| held.saturating_add(bytes))
        })
        .map(drop)
}

impl TenantAnswers {
    /// Bytes the tenant's answers hold now.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// The estimate of an answer of `records` records of one shape: the bytes per record of
    /// the tenant's recent answers of that shape, or before any, the most a record may take
    /// under the server's limits.
    pub(crate) fn estimate(&self, budget: &AnswerBudget, records: usize, shape: Shape) -> u64 {
        let i = shape as usize;
        let per = match self.per_record[i].load(Ordering::Relaxed) {
            0 => budget.cold[i],
            n => n,
        };
        // An estimate past the tenant's budget is refused unless the tenant holds nothing:
        // counting more than the budget would only take the server's budget from others.
        let cap = match budget.per_tenant {
            0 => u64::MAX,
            n => n,
        };
        per.saturating_mul(records as u64).min(cap)
    }

    /// Learns from an answer of `records` records that took `bytes`. A racing update may be
    /// lost; the estimate is a guide, the real size is counted anyway.
    fn learn(&self, records: usize, shape: Shape, bytes: u64) {
        if records == 0 {
            return;
        }
        let slot = &self.per_record[shape as usize];
        let per = bytes.div_ceil(records as u64);
        slot.store(per.max(slot.load(Ordering::Relaxed) / 2), Ordering::Relaxed);
    }
}

impl AnswerHold {
    /// The reservation, in the tenant's figure.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a list page's next record, of `bytes` (measured), joins the page: it does
    /// while what the page fetched fits the tenant's and the server's budgets. Past the
    /// reservation (an estimate: these records may be larger than the recent ones) the
    /// reservation grows while the tenant's budget takes it, so a client sees full pages
    /// unless memory is really held; a page can stop short, so it gets no allowance past the
    /// budget. `Ok(false)` ends the page before the record (the client reads it on the next
    /// page). The page's `first` record must join (a page makes progress): it grows the
    /// reservation as a reservation of its size would be checked (a lone answer fits), and is
    /// refused (`Err`, the page dropped) when that, or the server's budget, does not fit.
    pub(crate) fn admit_record(&mut self, bytes: u64, first: bool) -> Result<bool, ApiError> {
        let total = self.real.saturating_add(bytes);
        if total > self.bytes {
            if first {
                self.grow_reservation(total)?;
            } else if !self.grow_reservation_within_budget(total) {
                return Ok(false);
            }
        }
        match self.grow_real(total) {
            Ok(()) => Ok(true),
            Err(_) if !first => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A search's or recall's hits were fetched, `bytes` as measured: they must fit, the
    /// reservation grown to them when they are more, or the answer is refused (429 or 503,
    /// as a reservation of that size would be) before it is encoded; dropping the refused
    /// hold gives the bytes back.
    pub(crate) fn fetched(&mut self, bytes: u64) -> Result<(), ApiError> {
        let total = self.real.saturating_add(bytes);
        if total > self.bytes {
            self.grow_reservation(total)?;
        }
        self.grow_real(total)
    }

    /// Grows the tenant's figure to `bytes`, or refuses as a reservation of that size
    /// would be refused (a lone answer always fits).
    fn grow_reservation(&mut self, bytes: u64) -> Result<(), ApiError> {
        let more = bytes.saturating_sub(self.bytes);
        if let Err(held) = try_add(
            &self.tenant.held,
            Some(self.bytes),
            more,
            self.budget.per_tenant,
        ) {
            return Err(self.budget.tenant_refusal(held - self.bytes, bytes));
        }
        self.bytes = bytes;
        Ok(())
    }

    /// Grows the tenant's figure to `bytes` only if the tenant's budget takes it: a page that
    /// can stop short gets no lone-answer allowance past the budget. Whether it grew.
    fn grow_reservation_within_budget(&mut self, bytes: u64) -> bool {
        let more = bytes.saturating_sub(self.bytes);
        let grown = try_add(&self.tenant.held, None, more, self.budget.per_tenant).is_ok();
        if grown {
            self.bytes = bytes;
        }
        grown
    }

    /// Grows the server's figure to `bytes` (at most the reservation), or refuses with 503
    /// when that passes the server's budget while other answers are held.
    fn grow_real(&mut self, bytes: u64) -> Result<(), ApiError> {
        let more = bytes.saturating_sub(self.real);
        if try_add(&self.budget.held, Some(self.real), more, self.budget.server).is_err() {
            return Err(server_refusal());
        }
        self.real = bytes;
        Ok(())
    }

    /// Moves both figures to `bytes`, an answer that exists; a growth of either is checked
    /// as [`Self::fetched`]'s is.
    fn move_to(&mut self, bytes: u64) -> Result<(), ApiError> {
        if bytes > self.bytes {
            self.grow_reservation(bytes)?;
        }
        if bytes > self.real {
            self.grow_real(bytes)?;
        }
        let (less, less_real) = (self.bytes - bytes, self.real - bytes);
        self.tenant.held.fetch_sub(less, Ordering::AcqRel);
        self.budget.held.fetch_sub(less_real, Ordering::AcqRel);
        (self.bytes, self.real) = (bytes, bytes);
        Ok(())
    }

    /// The encoded answer of `records` records of one shape as a response body that holds
    /// its bytes, counted by capacity, until the last slice of it is dropped; refused (and
    /// freed) if its real size does not fit where its reservation and what was fetched did.
    pub(crate) fn into_body(
        mut self,
        mut buf: Vec<u8>,
        records: usize,
        shape: Shape,
    ) -> Result<Bytes, ApiError> {
        // A buffer grown by doubling can hold twice its length; given back in place (no copy)
        // when that is more than an eighth.
        if buf.capacity() - buf.len() > buf.len() / 8 {
            buf.shrink_to_fit();
        }
        let bytes = buf.capacity() as u64;
        // Learned even from a refused answer: the next estimate is its real size. From the
        // fetch's measure too when that was more, so a page of `limit` records like these
        // fits the next reservation whole and is not cut short.
        self.tenant.learn(records, shape, bytes.max(self.real));
        self.move_to(bytes)?;
        Ok(Bytes::from_owner(HeldAnswer { buf, _hold: self }))
    }
}

impl Drop for AnswerHold {
    fn drop(&mut self) {
        self.tenant.held.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.held.fetch_sub(self.real, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_tenant: u64, server: u64) -> Arc<AnswerBudget> {
        AnswerBudget::new(per_tenant, server, &RecordLimits::default())
    }

    fn code(e: ApiError) -> &'static str {
        e.status_and_code().1
    }

    #[test]
    fn a_reservation_is_held_and_given_back() {
        let b = budget(100, 1000);
        let (t1, t2) = (Arc::<TenantAnswers>::default(), Arc::default());
        let mut r = b.reserve(&t1, 60).unwrap();
        assert_eq!(
            code(b.reserve(&t1, 50).unwrap_err()),
            "ANSWER_MEMORY_LIMITED"
        );
        assert_eq!(t1.held(), 60, "a refusal leaves nothing behind");
        assert_eq!(
            b.held(),
            0,
            "the server counts what exists: nothing fetched yet"
        );
        // Another tenant's budget is its own.
        let other = b.reserve(&t2, 100).unwrap();
        assert!(r.admit_record(20, true).unwrap());
        assert_eq!(
            (t1.held(), b.held()),
            (60, 20),
            "a fetched record is counted"
        );
        drop(r);
        assert_eq!((t1.held(), b.held()), (0, 0));
        drop(other);
        assert_eq!(t2.held(), 0);
    }

    /// A tenant that taught its estimate small records asks for a page of large ones: its
    /// fetch grows the reservation while the tenant's budget allows (a page is full unless
    /// memory is really held) and stops before the record that would pass it, so what it
    /// holds before encoding stays within the budget; the page comes back shorter.
    #[test]
    fn a_page_grows_within_the_budget_and_holds_at_least_one_record() {
        let b = budget(1000, 10_000);
        let (t, t2) = (
            Arc::<TenantAnswers>::default(),
            Arc::<TenantAnswers>::default(),
        );
        let mut page = b.reserve(&t, 100).unwrap();
        assert!(page.admit_record(40, true).unwrap());
        assert!(page.admit_record(40, false).unwrap());
        assert!(
            page.admit_record(40, false).unwrap(),
            "past the estimate, within the budget"
        );
        assert_eq!((t.held(), page.bytes()), (120, 120));
        assert!(
            !page.admit_record(900, false).unwrap(),
            "past the tenant's budget"
        );
        assert!(
            page.admit_record(20, false).unwrap(),
            "a smaller one still fits"
        );
        assert_eq!((t.held(), b.held()), (140, 140));
        // A first record larger than its page's reservation joins (progress), the
        // reservation grown to it while it fits the tenant's budget...
        let mut lone = b.reserve(&t2, 10).unwrap();
        assert!(
            lone.admit_record(5000, true).unwrap(),
            "a lone answer always fits"
        );
        assert_eq!((t2.held(), lone.bytes()), (5000, 5000));
        drop(lone);
        let mut grows = b.reserve(&t, 10).unwrap();
        assert!(grows.admit_record(300, true).unwrap());
        assert_eq!(t.held(), 440);
        // ...and refused as a reservation of its size would be when it does not.
        let mut big = b.reserve(&t, 10).unwrap();
        let e = big.admit_record(2000, true).unwrap_err();
        assert_eq!(code(e), "ANSWER_MEMORY_LIMITED");
        drop(big);
        assert_eq!(
            (t.held(), b.held()),
            (440, 440),
            "the refusal freed its bytes"
        );
        drop((page, grows));
        assert_eq!((t.held(), b.held()), (0, 0));
    }

    /// Encoding moves both figures to the buffer's capacity; a buffer larger than what the
    /// answer held is checked again, and refused (and freed) when it does not fit.
    #[test]
    fn an_answer_larger_than_its_estimate_is_checked_again_at_its_real_size() {
        let b = budget(100, 1000);
        let (t, other) = (Arc::<TenantAnswers>::default(), Arc::default());
        let mut held = b.reserve(&t, 60).unwrap();
        held.fetched(60).unwrap();
        // Estimated small (a tenant that taught the estimate small records), encoded large.
        let small = b.reserve(&t, 10).unwrap();
        let e = small
            .into_body(vec![b'x'; 200], 1, Shape::Records)
            .unwrap_err();
        assert_eq!(code(e), "ANSWER_MEMORY_LIMITED");
        assert_eq!(
            (t.held(), b.held()),
            (60, 60),
            "the refused answer is freed"
        );
        // Growing within the budget passes.
        let fits = b.reserve(&t, 10).unwrap();
        let body = fits.into_body(vec![b'x'; 40], 1, Shape::Records).unwrap();
        assert_eq!((t.held(), b.held()), (100, 100));
        drop((body, held));
        // A lone answer always fits, however large.
        let lone = b.reserve(&t, 10).unwrap();
        let body = lone.into_body(vec![b'x'; 500], 1, Shape::Records).unwrap();
        assert_eq!(t.held(), 500);
        // The server's budget is checked again too, and refuses with 503.
        let b = budget(1000, 100);
        let mut theirs = b.reserve(&other, 90).unwrap();
        theirs.fetched(90).unwrap();
        let mine = b.reserve(&t, 5).unwrap();
        let e = mine
            .into_body(vec![b'x'; 50], 1, Shape::Records)
            .unwrap_err();
        assert_eq!(code(e), "OVERLOADED");
        assert_eq!(b.held(), 90);
        drop(body);
    }

    /// A search's `k` hits are not cut: measured at fetch, they grow the reservation or are
    /// refused before they are encoded.
    #[test]
    fn a_search_larger_than_its_estimate_is_refused_at_fetch() {
        let b = budget(100, 1000);
        let t = Arc::<TenantAnswers>::default();
        let mut first = b.reserve(&t, 10).unwrap();
        first.fetched(50).unwrap();
        assert_eq!((t.held(), b.held()), (50, 50), "grown to the measured hits");
        let mut second = b.reserve(&t, 10).unwrap();
        assert_eq!(
            code(second.fetched(80).unwrap_err()),
            "ANSWER_MEMORY_LIMITED"
        );
        drop(second);
        assert_eq!((t.held(), b.held()), (50, 50));
        // Smaller than its estimate: the reservation stays until it is encoded.
        let mut third = b.reserve(&t, 40).unwrap();
        third.fetched(5).unwrap();
        assert_eq!((t.held(), b.held()), (90, 55));
        drop((first, third));
        assert_eq!((t.held(), b.held()), (0, 0));
    }

    #[test]
    fn one_answer_always_fits_when_none_is_held() {
        let b = budget(10, 20);
        let t = Arc::<TenantAnswers>::default();
        let big = b.reserve(&t, 1_000).unwrap();
        assert!(b.reserve(&t, 1).is_err());
        drop(big);
        assert!(b.reserve(&t, 1).is_ok());
    }

    #[test]
    fn the_server_budget_refuses_with_503_and_undoes_the_tenants_share() {
        let b = budget(100, 150);
        let (t1, t2, t3) = (
            Arc::<TenantAnswers>::default(),
            Arc::<TenantAnswers>::default(),
            Arc::<TenantAnswers>::default(),
        );
        let mut a = b.reserve(&t1, 100).unwrap();
        a.fetched(100).unwrap();
        let mut h = b.reserve(&t2, 60).unwrap();
        let e = h.fetched(60).unwrap_err();
        assert_eq!(e.status_and_code().0.as_u16(), 503);
        assert_eq!(
            e.to_string(),
            "the server's memory for unread answers is full; retry later"
        );
        assert_eq!(code(e), "OVERLOADED");
        drop(h);
        assert_eq!((t2.held(), b.held()), (0, 100));
        // A page stops at the server's budget too: shorter, not refused, once it holds one.
        let mut page = b.reserve(&t2, 100).unwrap();
        assert!(page.admit_record(30, true).unwrap());
        assert!(!page.admit_record(30, false).unwrap());
        // Full: refused up front, before any fetch.
        let mut fill = b.reserve(&t3, 20).unwrap();
        fill.fetched(20).unwrap();
        assert_eq!(b.held(), 150);
        assert_eq!(code(b.reserve(&t3, 1).unwrap_err()), "OVERLOADED");
        assert_eq!(t3.held(), 20, "the refusal undid the tenant's share");
        drop((a, page, fill));
        assert!(b.reserve(&t2, 50).is_ok());
    }

    /// The server counts what answers hold, not what they estimated: a fresh tenant's
    /// worst-case estimates (here its whole budget, as large as the server's) refuse no other
    /// tenant until its fetch really holds the bytes.
    #[test]
    fn one_tenants_pessimistic_estimates_do_not_refuse_others() {
        let b = budget(1000, 1000);
        let (fresh, other) = (Arc::<TenantAnswers>::default(), Arc::default());
        let mut pessimistic = b.reserve(&fresh, 1000).unwrap();
        assert_eq!(b.held(), 0);
        let mut mine = b.reserve(&other, 500).unwrap();
        mine.fetched(500).unwrap();
        // The pessimist's page of small records holds what it fetched.
        assert!(pessimistic.admit_record(100, true).unwrap());
        assert_eq!(b.held(), 600);
        drop((pessimistic, mine));
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn zero_turns_a_budget_off_but_still_counts() {
        let b = budget(0, 0);
        let t = Arc::<TenantAnswers>::default();
        let holds: Vec<_> = (0..10)
            .map(|_| b.reserve(&t, u64::MAX / 20).unwrap())
            .collect();
        assert_eq!(t.held(), u64::MAX / 20 * 10);
        drop(holds);
        assert_eq!((t.held(), b.held()), (0, 0));
    }

    #[test]
    fn the_body_holds_its_capacity_until_the_last_slice_is_dropped() {
        let b = budget(1 << 20, 1 << 30);
        let t = Arc::<TenantAnswers>::default();
        let hold = b.reserve(&t, 500).unwrap();
        let mut buf = Vec::with_capacity(1100);
        buf.extend_from_slice(&[b'x'; 1000]);
        let body = hold.into_body(buf, 10, Shape::Records).unwrap();
        assert_eq!(body.len(), 1000);
        assert_eq!(t.held(), 1100, "capacity, not length");
        // What hyper may do: keep a chunk of the body after the body itself is gone.
        let chunk = body.slice(0..64);
        let copy = body.clone();
        drop(body);
        drop(copy);
        assert_eq!(t.held(), 1100, "a slice pins the whole buffer");
        assert_eq!(&chunk[..], &[b'x'; 64][..]);
        drop(chunk);
        assert_eq!((t.held(), b.held()), (0, 0));
        // Spare capacity past an eighth of the length is given back first.
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(&[b'x'; 1000]);
        let body = b
            .reserve(&t, 0)
            .unwrap()
            .into_body(buf, 10, Shape::Records)
            .unwrap();
        assert!((1000..1125).contains(&t.held()), "{}", t.held());
        drop(body);
        assert_eq!(t.held(), 0);
    }

    #[test]
    fn estimates_follow_the_tenants_recent_answers() {
        let limits = RecordLimits::default();
        let b = AnswerBudget::new(1 << 30, 0, &limits);
        let t = Arc::<TenantAnswers>::default();
        // Before any answer, the most a record may take, more with vectors.
        let ids = t.estimate(&b, 10, Shape::Ids);
        let cold = t.estimate(&b, 10, Shape::Records);
        assert!(ids < cold);
        assert!(cold >= 10 * (limits.max_content_bytes + limits.max_metadata_bytes) as u64);
        let cold_vectors = t.estimate(&b, 10, Shape::Vectors);
        assert!(cold_vectors >= cold + 10 * u64::from(limits.max_dim) * 10);
        let body = b.reserve(&t, 0).unwrap();
        drop(body.into_body(vec![0; 40_000], 10, Shape::Vectors).unwrap());
        assert_eq!(t.estimate(&b, 1000, Shape::Vectors), 4_000_000);
        assert_eq!(
            t.estimate(&b, 10, Shape::Records),
            cold,
            "each shape is its own"
        );
        // Smaller records lower it by half at most per answer.
        let body = b.reserve(&t, 0).unwrap();
        drop(body.into_body(vec![0; 100], 10, Shape::Vectors).unwrap());
        assert_eq!(t.estimate(&b, 1, Shape::Vectors), 2_000);
        assert_eq!(t.held(), 0);
        // Never more than the tenant's budget: past it, only a tenant holding nothing passes.
        let small = AnswerBudget::new(1 << 20, 0, &limits);
        assert_eq!(t.estimate(&small, 1000, Shape::Records), 1 << 20);
    }
}
