//! Tenant ids purged moments ago, so that an id created again begins in a later whole second
//! than its purge ended in, plus the clock leeway JWTs are verified with.
//!
//! A JWT names the incarnation it was minted for only by its `iat`, in whole seconds, and is
//! accepted from the second its tenant was created in (`strata_auth`, so that a client may
//! mint a token right after creating its tenant). A token minted for a purged incarnation
//! carries at latest the second of the purge plus the leeway the server grants an `iat` ahead
//! of its clock (an issuer whose clock runs that far ahead); a re-created tenant that starts in
//! a later second than that therefore never accepts it. The ids are kept in memory; across a
//! restart, the store keeps when the last purge committed, and no tenant at all is created
//! until that much later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use strata_types::{Millis, TenantId, now_millis};

use crate::registry::lock;

/// The longest a creation waits for a purged id's seconds to pass; past it, it is refused.
const MAX_WAIT_MS: Millis = 10_000;

/// Marks a purge that has begun and not ended yet.
const UNDER_WAY: Millis = Millis::MAX;

/// Ids whose purge is under way or ended moments ago ([`RecentPurges::remembered_ms`]).
#[derive(Default)]
pub(crate) struct RecentPurges {
    ended_at: Mutex<HashMap<TenantId, Millis>>,
    /// When the last purge before this start committed (its ids are not known): creating
    /// any id waits for a later second.
    before_start: Option<Millis>,
    /// Seconds a JWT's `iat` may run ahead of the server's clock (`auth.jwt_leeway_secs`,
    /// 0 when the server verifies no JWTs).
    leeway_secs: i64,
}

/// Held while a purge runs; its drop records when the purge ended, whatever its outcome.
pub(crate) struct PurgeUnderWay<'a> {
    purges: &'a RecentPurges,
    id: TenantId,
}

impl Drop for PurgeUnderWay<'_> {
    fn drop(&mut self) {
        let now = now_millis();
        let remembered = self.purges.remembered_ms();
        let mut ended = lock(&self.purges.ended_at);
        // Pruned here too, not only by creations: a server that purges many tenants and
        // creates none would otherwise keep every purged id.
        ended.retain(|_, at| *at == UNDER_WAY || now - *at < remembered);
        ended.insert(self.id.clone(), now);
    }
}

impl RecentPurges {
    /// Starts with the last purge the store recorded before this start, if any; tokens'
    /// `iat` may run `leeway_secs` ahead of the clock.
    pub(crate) fn after_restart(last_purge: Option<Millis>, leeway_secs: u64) -> RecentPurges {
        RecentPurges {
            before_start: last_purge,
            leeway_secs: i64::try_from(leeway_secs).unwrap_or(i64::MAX / 2000),
            ..RecentPurges::default()
        }
    }

    /// How long an ended purge is remembered: past its second and the leeway, it no longer
    /// matters.
    fn remembered_ms(&self) -> Millis {
        self.leeway_secs.saturating_add(2).saturating_mul(1000)
    }

    /// Called before a purge of `id` begins: until the returned guard drops, creating `id`
    /// waits (see [`RecentPurges::wait_to_create`]).
    pub(crate) fn begin(&self, id: &TenantId) -> PurgeUnderWay<'_> {
        lock(&self.ended_at).insert(id.clone(), UNDER_WAY);
        PurgeUnderWay {
            purges: self,
            id: id.clone(),
        }
    }

    /// Blocks until `id`'s last purge (if recent) has ended and a new whole second has begun
    /// since, past the leeway: only for an id purged just before, and for at most
    /// [`MAX_WAIT_MS`] once the purge has ended; a longer wait (a leeway of more than a few
    /// seconds) is refused instead, `409` naming when the id is free, rather than holding the
    /// request (and a client's timeout) for minutes.
    pub(crate) fn wait_to_create(&self, id: &TenantId) -> Result<(), crate::EngineError> {
        loop {
            let now = now_millis();
            let remembered = self.remembered_ms();
            let wait = {
                let mut ended = lock(&self.ended_at);
                ended.retain(|_, at| *at == UNDER_WAY || now - *at < remembered);
                // The last purge before the start matters only within its own second: one
                // further back has passed, and one in the future (the clock stepped back)
                // would stall every creation, so it is ignored.
                let before_start = self
                    .before_start
                    .filter(|&at| at <= now && now - at < remembered);
                // The last second a token of the purged incarnation can name.
                match ended.get(id).copied().or(before_start) {
                    None => return Ok(()),
                    Some(UNDER_WAY) => 1,
                    Some(at) => {
                        let last = at.div_euclid(1000).saturating_add(self.leeway_secs);
                        if now.div_euclid(1000) > last {
                            return Ok(());
                        }
                        (last + 1) * 1000 - now
                    }
                }
            };
            if wait > MAX_WAIT_MS {
                return Err(crate::EngineError::IdConflict(format!(
                    "tenant {id} was purged moments ago: it can be created again in {} s, once \
                     no token of the purged tenant can name the new one (auth.jwt_leeway_secs)",
                    (wait + 999) / 1000
                )));
            }
            std::thread::sleep(Duration::from_millis(wait.clamp(1, 1000) as u64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_created_again_only_in_a_later_second_than_its_purge_ended_in() {
        let purges = RecentPurges::default();
        let id = TenantId::parse("acme").unwrap();
        let other = TenantId::parse("other").unwrap();
        drop(purges.begin(&id));
        let ended = lock(&purges.ended_at)[&id];
        purges.wait_to_create(&id).unwrap();
        assert!(now_millis().div_euclid(1000) > ended.div_euclid(1000));
        // Another id does not wait, and neither does one purged long ago.
        let before = std::time::Instant::now();
        purges.wait_to_create(&other).unwrap();
        lock(&purges.ended_at).insert(id.clone(), now_millis() - purges.remembered_ms());
        purges.wait_to_create(&id).unwrap();
        assert!(before.elapsed() < Duration::from_millis(500));
        assert!(lock(&purges.ended_at).is_empty(), "old entries are dropped");
    }

    /// Purges with no creation between them keep only the ids purged moments ago.
    #[test]
    fn purges_alone_keep_only_the_recent_ids() {
        let purges = RecentPurges::default();
        let old = TenantId::parse("old").unwrap();
        lock(&purges.ended_at).insert(old.clone(), now_millis() - purges.remembered_ms());
        drop(purges.begin(&TenantId::parse("new").unwrap()));
        let ended = lock(&purges.ended_at);
        assert!(
            !ended.contains_key(&old) && ended.len() == 1,
            "{:?}",
            ended.keys()
        );
    }

    #[test]
    fn after_a_restart_no_id_is_created_in_the_second_of_the_last_purge() {
        let at = now_millis();
        let purges = RecentPurges::after_restart(Some(at), 0);
        purges
            .wait_to_create(&TenantId::parse("any").unwrap())
            .unwrap();
        assert!(now_millis().div_euclid(1000) > at.div_euclid(1000));
        // A purge long before the start costs nothing, and neither does one in the future.
        for at in [at - 5_000, at + 3_600_000, Millis::MAX] {
            let purges = RecentPurges::after_restart(Some(at), 0);
            let before = std::time::Instant::now();
            purges
                .wait_to_create(&TenantId::parse("any").unwrap())
                .unwrap();
            assert!(before.elapsed() < Duration::from_millis(500), "{at}");
        }
    }

    /// An issuer whose clock runs ahead by the leeway mints, just before the purge, a token
    /// whose `iat` is that far past it: the id comes back only after that second.
    #[test]
    fn with_a_leeway_an_id_comes_back_only_after_the_seconds_a_token_may_run_ahead() {
        let purges = RecentPurges::after_restart(None, 1);
        let id = TenantId::parse("acme").unwrap();
        drop(purges.begin(&id));
        let ended = lock(&purges.ended_at)[&id];
        purges.wait_to_create(&id).unwrap();
        assert!(now_millis().div_euclid(1000) > ended.div_euclid(1000) + 1);
    }

    /// A leeway of minutes is not waited out inside a request: the creation is refused at
    /// once, naming when the id is free.
    #[test]
    fn a_wait_longer_than_ten_seconds_is_refused_naming_when() {
        let purges = RecentPurges::after_restart(None, 60);
        let id = TenantId::parse("acme").unwrap();
        drop(purges.begin(&id));
        let started = std::time::Instant::now();
        let err = purges.wait_to_create(&id).unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(err.contains("can be created again in 6"), "{err}");
        // Another id is not held up.
        purges
            .wait_to_create(&TenantId::parse("other").unwrap())
            .unwrap();
    }

    #[test]
    fn creation_waits_for_a_purge_under_way() {
        let purges = RecentPurges::default();
        let id = TenantId::parse("acme").unwrap();
        let under_way = purges.begin(&id);
        std::thread::scope(|s| {
            let created = s.spawn(|| {
                purges.wait_to_create(&id).unwrap();
                now_millis()
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(!created.is_finished());
            drop(under_way);
            let ended = lock(&purges.ended_at)[&id];
            let at = created.join().unwrap();
            assert!(at.div_euclid(1000) > ended.div_euclid(1000));
        });
    }
}
