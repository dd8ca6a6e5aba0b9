//! Each tenant's share of the memory that answers take until their clients read them.
//!
//! A page of records or a search answer is serialised whole into one buffer before it is sent,
//! and the buffer lives until the client has read the last byte: a tenant asking for many large
//! pages on many connections and reading them slowly could hold gigabytes (a page of 1,000
//! records with 4,096-dimension vectors is ~43 MB of JSON). So the answers a tenant holds,
//! together, stay within `max_answer_bytes_per_tenant`, and all tenants' within
//! `max_answer_bytes`:
//!
//! - an answer is reserved before it exists, as an estimate (records asked for × bytes per
//!   record, [`TenantAnswers::estimate`]), when its request is admitted to fetch it: a burst of
//!   requests all admitted before any answer is encoded is refused there, up front, not once
//!   the memory is taken (`429 ANSWER_MEMORY_LIMITED` for the tenant's budget,
//!   `503 OVERLOADED` for the server's);
//! - the reservation is moved to the real size once the buffer exists, counting its capacity
//!   (spare capacity is held memory too); an answer larger than its estimate is checked
//!   again at its real size and refused (its buffer freed) when that does not fit, so a
//!   tenant that taught the estimate small records cannot pass its budget with a burst of
//!   large ones;
//! - it is given back only when the buffer is freed: the buffer's owner in the response body
//!   ([`AnswerHold::into_body`], `Bytes::from_owner`) holds it, and every slice of the body
//!   (hyper may keep a chunk after the handler and the body are done) keeps that owner alive.
//!
//! One answer always fits a tenant that holds none (and the server when none is held), so an
//! answer larger than the budget is still served, one at a time. Counting is an atomic
//! compare-and-swap on the tenant's counter and on the server's, and a subtraction on each when
//! the answer is freed: no lock, so a small search pays nothing measurable.

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

/// Bytes of one answer, reserved or real, given back when dropped.
#[derive(Debug)]
pub(crate) struct AnswerHold {
    budget: Arc<AnswerBudget>,
    tenant: Arc<TenantAnswers>,
    bytes: u64,
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

    /// Reserves `bytes` for one answer of the tenant's, or refuses it: the tenant's budget
    /// first (its own doing: 429), then the server's (everyone's: 503).
    pub(crate) fn reserve(
        self: &Arc<Self>,
        tenant: &Arc<TenantAnswers>,
        bytes: u64,
    ) -> Result<AnswerHold, ApiError> {
        if let Err(held) = try_add(&tenant.held, 0, bytes, self.per_tenant) {
            return Err(self.tenant_refusal(held, bytes));
        }
        if try_add(&self.held, 0, bytes, self.server).is_err() {
            tenant.held.fetch_sub(bytes, Ordering::AcqRel);
            return Err(server_refusal());
        }
        Ok(AnswerHold {
            budget: Arc::clone(self),
            tenant: Arc::clone(tenant),
            bytes,
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

/// Adds `bytes` to `counter` unless that passes `max` (0: no max) while anything besides
/// `own` (the caller's reservation, already counted in it) is held; else the bytes held.
fn try_add(counter: &AtomicU64, own: u64, bytes: u64, max: u64) -> Result<(), u64> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            let fits = max == 0 || held <= own || held.saturating_add(bytes) <= max;
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
    /// Moves the reservation to `bytes`, the real size. Never refused: the bytes exist.
    pub(crate) fn adjust(&mut self, bytes: u64) {
        if bytes > self.bytes {
            let more = bytes - self.bytes;
            self.tenant.held.fetch_add(more, Ordering::AcqRel);
            self.budget.held.fetch_add(more, Ordering::AcqRel);
        } else {
            let less = self.bytes - bytes;
            self.tenant.held.fetch_sub(less, Ordering::AcqRel);
            self.budget.held.fetch_sub(less, Ordering::AcqRel);
        }
        self.bytes = bytes;
    }

    /// Grows the reservation to `bytes`, the real size, or refuses the answer as a
    /// reservation of that size would be: an estimate learned from a tenant's small records
    /// must not let a burst of large answers pass its budget (the bytes are freed when the
    /// refused answer is dropped, so what unread answers hold stays within the budget, past
    /// it by one answer at most). A lone answer always fits.
    fn grow_to(&mut self, bytes: u64) -> Result<(), ApiError> {
        if bytes <= self.bytes {
            self.adjust(bytes);
            return Ok(());
        }
        let more = bytes - self.bytes;
        if let Err(held) = try_add(&self.tenant.held, self.bytes, more, self.budget.per_tenant) {
            return Err(self.budget.tenant_refusal(held - self.bytes, bytes));
        }
        if try_add(&self.budget.held, self.bytes, more, self.budget.server).is_err() {
            self.tenant.held.fetch_sub(more, Ordering::AcqRel);
            return Err(server_refusal());
        }
        self.bytes = bytes;
        Ok(())
    }

    /// The encoded answer of `records` records of one shape as a response body that holds
    /// its bytes, counted by capacity, until the last slice of it is dropped; refused (and
    /// freed) if its real size does not fit where its estimate did ([`Self::grow_to`]).
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
        // Learned even from a refused answer: the next estimate is its real size.
        self.tenant.learn(records, shape, bytes);
        self.grow_to(bytes)?;
        Ok(Bytes::from_owner(HeldAnswer { buf, _hold: self }))
    }
}

impl Drop for AnswerHold {
    fn drop(&mut self) {
        self.tenant.held.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
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
    fn a_reservation_is_held_adjusted_and_given_back() {
        let b = budget(100, 1000);
        let (t1, t2) = (Arc::<TenantAnswers>::default(), Arc::default());
        let mut r = b.reserve(&t1, 60).unwrap();
        assert_eq!(
            code(b.reserve(&t1, 50).unwrap_err()),
            "ANSWER_MEMORY_LIMITED"
        );
        assert_eq!(t1.held(), 60, "a refusal leaves nothing behind");
        // Another tenant's budget is its own.
        let other = b.reserve(&t2, 100).unwrap();
        r.adjust(30);
        assert_eq!((t1.held(), b.held()), (30, 130));
        let r2 = b.reserve(&t1, 50).unwrap();
        // The real size may pass the budget: the bytes exist; the next reservation is refused.
        r.adjust(200);
        assert_eq!((t1.held(), b.held()), (250, 350));
        assert!(b.reserve(&t1, 1).is_err());
        drop(r);
        drop(r2);
        assert_eq!(t1.held(), 0);
        drop(other);
        assert_eq!((t2.held(), b.held()), (0, 0));
    }

    #[test]
    fn an_answer_larger_than_its_estimate_is_checked_again_at_its_real_size() {
        let b = budget(100, 1000);
        let (t, other) = (Arc::<TenantAnswers>::default(), Arc::default());
        let held = b.reserve(&t, 60).unwrap();
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
        assert_eq!(t.held(), 100);
        drop((body, held));
        // A lone answer always fits, however large.
        let lone = b.reserve(&t, 10).unwrap();
        let body = lone.into_body(vec![b'x'; 500], 1, Shape::Records).unwrap();
        assert_eq!(t.held(), 500);
        // The server's budget is checked again too, and refuses with 503.
        let b = budget(1000, 100);
        let _theirs = b.reserve(&other, 90).unwrap();
        let mine = b.reserve(&t, 5).unwrap();
        let e = mine
            .into_body(vec![b'x'; 50], 1, Shape::Records)
            .unwrap_err();
        assert_eq!(code(e), "OVERLOADED");
        assert_eq!(b.held(), 90);
        drop(body);
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
        let (t1, t2) = (Arc::<TenantAnswers>::default(), Arc::default());
        let _a = b.reserve(&t1, 100).unwrap();
        let e = b.reserve(&t2, 60).unwrap_err();
        assert_eq!(e.status_and_code().0.as_u16(), 503);
        assert_eq!(
            e.to_string(),
            "the server's memory for unread answers is full; retry later"
        );
        assert_eq!(code(e), "OVERLOADED");
        assert_eq!(t2.held(), 0);
        assert!(b.reserve(&t2, 50).is_ok());
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
