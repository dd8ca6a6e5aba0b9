//! Tenant ids purged moments ago, so that an id created again begins in a later whole second
//! than its purge ended in.
//!
//! A JWT names the incarnation it was minted for only by its `iat`, in whole seconds, and is
//! accepted from the second its tenant was created in (`strata_auth`, so that a client may
//! mint a token right after creating its tenant). A token minted for a purged incarnation
//! carries at latest the second of the purge; a re-created tenant that starts in a later second
//! therefore never accepts it. The ids are kept in memory; across a restart, the store keeps
//! when the last purge committed, and no tenant at all is created in that second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use strata_types::{Millis, TenantId, now_millis};

use crate::registry::lock;

/// Marks a purge that has begun and not ended yet.
const UNDER_WAY: Millis = Millis::MAX;

/// How long an ended purge is remembered: past its second, it no longer matters.
const REMEMBERED_MS: Millis = 2_000;

/// Ids whose purge is under way or ended in the last [`REMEMBERED_MS`].
#[derive(Default)]
pub(crate) struct RecentPurges {
    ended_at: Mutex<HashMap<TenantId, Millis>>,
    /// When the last purge before this start committed (its ids are not known): creating
    /// any id waits for a later second.
    before_start: Option<Millis>,
}

/// Held while a purge runs; its drop records when the purge ended, whatever its outcome.
pub(crate) struct PurgeUnderWay<'a> {
    purges: &'a RecentPurges,
    id: TenantId,
}

impl Drop for PurgeUnderWay<'_> {
    fn drop(&mut self) {
        lock(&self.purges.ended_at).insert(self.id.clone(), now_millis());
    }
}

impl RecentPurges {
    /// Starts with the last purge the store recorded before this start, if any.
    pub(crate) fn after_restart(last_purge: Option<Millis>) -> RecentPurges {
        RecentPurges {
            before_start: last_purge,
            ..RecentPurges::default()
        }
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
    /// since: at most about a second, and only for an id purged just before.
    pub(crate) fn wait_to_create(&self, id: &TenantId) {
        loop {
            let now = now_millis();
            let wait = {
                let mut ended = lock(&self.ended_at);
                ended.retain(|_, at| *at == UNDER_WAY || now - *at < REMEMBERED_MS);
                // The last purge before the start matters only within its own second: one
                // further back has passed, and one in the future (the clock stepped back)
                // would stall every creation, so it is ignored.
                let before_start = self
                    .before_start
                    .filter(|&at| at <= now && now - at < REMEMBERED_MS);
                match ended.get(id).copied().or(before_start) {
                    None => return,
                    Some(UNDER_WAY) => 1,
                    Some(at) if now.div_euclid(1000) > at.div_euclid(1000) => return,
                    Some(at) => (at.div_euclid(1000) + 1) * 1000 - now,
                }
            };
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
        purges.wait_to_create(&id);
        assert!(now_millis().div_euclid(1000) > ended.div_euclid(1000));
        // Another id does not wait, and neither does one purged long ago.
        let before = std::time::Instant::now();
        purges.wait_to_create(&other);
        lock(&purges.ended_at).insert(id.clone(), now_millis() - REMEMBERED_MS);
        purges.wait_to_create(&id);
        assert!(before.elapsed() < Duration::from_millis(500));
        assert!(lock(&purges.ended_at).is_empty(), "old entries are dropped");
    }

    #[test]
    fn after_a_restart_no_id_is_created_in_the_second_of_the_last_purge() {
        let at = now_millis();
        let purges = RecentPurges::after_restart(Some(at));
        purges.wait_to_create(&TenantId::parse("any").unwrap());
        assert!(now_millis().div_euclid(1000) > at.div_euclid(1000));
        // A purge long before the start costs nothing, and neither does one in the future.
        for at in [at - 5_000, at + 3_600_000, Millis::MAX] {
            let purges = RecentPurges::after_restart(Some(at));
            let before = std::time::Instant::now();
            purges.wait_to_create(&TenantId::parse("any").unwrap());
            assert!(before.elapsed() < Duration::from_millis(500), "{at}");
        }
    }

    #[test]
    fn creation_waits_for_a_purge_under_way() {
        let purges = RecentPurges::default();
        let id = TenantId::parse("acme").unwrap();
        let under_way = purges.begin(&id);
        std::thread::scope(|s| {
            let created = s.spawn(|| {
                purges.wait_to_create(&id);
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
