//! Per-tenant integrity states: `normal`, `stress`, `critical`, computed from the tenant's
//! own signals only, so one tenant under pressure changes no other tenant's state.
//!
//! A sample is the tenant's *pressure*: the largest of its search latency (an exponentially
//! weighted average, over its contract, when it has one), its queue wait on the worker pool
//! (likewise, over `queue_wait_contract_ms`), its queue depth (over `queue_depth_limit`) and
//! its index health: deleted vectors still in a graph, over twice the fraction that triggers
//! compaction, or nodes a search from the entry point no longer reaches
//! (`crate::connectivity`), over twice `UNREACHABLE_STRESS`. Samples are taken at each of
//! its searches, at each write refused while it is critical, and, when a queue threshold is
//! set, as each of its requests leaves the queue. The state machine moves only after
//! `consecutive` samples in a row point the same way, never within `cooldown_ms` of its last
//! move, and with hysteresis: it enters `stress` at `stress_enter` but leaves only below
//! `stress_exit` (likewise for `critical`). `stress` sheds the tenant's most expensive
//! searches; `critical` refuses its writes until the pressure falls.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use strata_types::Millis;

mod policy_input;
mod stored_policy;
mod threshold;
pub use policy_input::IntegrityPolicyInput;
pub use stored_policy::StoredIntegrityPolicy;
pub(crate) use stored_policy::{decode_closed, decode_stored, encode_stored};

/// A tenant's integrity state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IntegrityState {
    Normal,
    Stress,
    Critical,
}

/// `[engine.integrity]`: the thresholds, for every tenant unless `tenants` overrides them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrityPolicy {
    /// The search latency the tenant is promised, in milliseconds: pressure 1.0. 0 (the
    /// default): no latency contract, so only index health moves the state.
    pub latency_contract_ms: f64,
    /// The queue wait on the worker pool that counts as pressure 1.0, in milliseconds
    /// (exponentially weighted like latency). 0 (the default): the wait does not count.
    pub queue_wait_contract_ms: f64,
    /// Requests of the tenant waiting in the pool that count as pressure 1.0. 0 (the
    /// default): the depth does not count.
    pub queue_depth_limit: u32,
    /// Written `"inf"` for +inf (never entered).
    #[serde(
        serialize_with = "threshold::serialize",
        deserialize_with = "threshold::deserialize"
    )]
    #[schema(schema_with = threshold::schema)]
    pub stress_enter: f64,
    pub stress_exit: f64,
    /// Written `"inf"` for +inf (never entered).
    #[serde(
        serialize_with = "threshold::serialize",
        deserialize_with = "threshold::deserialize"
    )]
    #[schema(schema_with = threshold::schema)]
    pub critical_enter: f64,
    pub critical_exit: f64,
    /// Samples in a row needed to move.
    pub consecutive: u32,
    /// Least time between two moves, in milliseconds.
    pub cooldown_ms: u64,
}

impl Default for IntegrityPolicy {
    fn default() -> Self {
        IntegrityPolicy {
            latency_contract_ms: 0.0,
            queue_wait_contract_ms: 0.0,
            queue_depth_limit: 0,
            stress_enter: 1.0,
            stress_exit: 0.7,
            critical_enter: 4.0,
            critical_exit: 2.5,
            consecutive: 5,
            cooldown_ms: 10_000,
        }
    }
}

/// The longest cooldown a policy may set: a day.
pub const MAX_COOLDOWN_MS: u64 = 86_400_000;

impl IntegrityPolicy {
    /// Checks every threshold: each number finite and in range, and the ordering the
    /// hysteresis needs (`0 < stress_exit < stress_enter <= critical_exit < critical_enter`).
    /// The error starts with the name of the first field at fault, for callers to prefix with
    /// where the policy came from (`integrity_policy.`, `integrity.default.`).
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("latency_contract_ms", self.latency_contract_ms),
            ("queue_wait_contract_ms", self.queue_wait_contract_ms),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!(
                    "{name}: must be a finite number of at least 0 (0: not counted), not {v}"
                ));
            }
        }
        for (name, v) in [
            ("stress_exit", self.stress_exit),
            ("critical_exit", self.critical_exit),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name}: must be a finite number above 0, not {v}"));
            }
        }
        // An enter threshold at +inf means "never" (a configuration may say
        // `critical_enter = inf` to never refuse writes), as it always could; NaN and -inf
        // mean nothing.
        for (name, v) in [
            ("stress_enter", self.stress_enter),
            ("critical_enter", self.critical_enter),
        ] {
            if !(v > 0.0 && (v.is_finite() || v == f64::INFINITY)) {
                return Err(format!(
                    "{name}: must be a number above 0 (inf: never), not {v}"
                ));
            }
        }
        // Each pair in the order the hysteresis needs; the message names the later field.
        let order = [
            (
                "stress_exit",
                self.stress_exit,
                "stress_enter",
                self.stress_enter,
                true,
            ),
            (
                "stress_enter",
                self.stress_enter,
                "critical_exit",
                self.critical_exit,
                false,
            ),
            (
                "critical_exit",
                self.critical_exit,
                "critical_enter",
                self.critical_enter,
                true,
            ),
        ];
        for (low, lv, high, hv, strict) in order {
            let inverted = if strict { lv >= hv } else { lv > hv };
            if inverted {
                let relation = if strict { "above" } else { "at least" };
                return Err(format!(
                    "{high}: must be {relation} {low} ({lv}), not {hv} (hysteresis needs \
                     0 < stress_exit < stress_enter <= critical_exit < critical_enter)"
                ));
            }
        }
        if self.consecutive == 0 {
            return Err("consecutive: must be at least 1 sample".into());
        }
        Ok(())
    }

    /// [`IntegrityPolicy::validate`] for a policy an operator gives now (an API request): a
    /// cooldown is how long a state holds at least, and one of days would keep a tenant that
    /// recovered refused until an operator noticed. Not a rule of stored policies, which
    /// `validate` checks as they are read: one stored before the rule must still decode.
    pub fn validate_new(&self) -> Result<(), String> {
        self.validate()?;
        if self.cooldown_ms > MAX_COOLDOWN_MS {
            return Err(format!(
                "cooldown_ms: must be at most {MAX_COOLDOWN_MS} (one day), not {}",
                self.cooldown_ms
            ));
        }
        Ok(())
    }
}

/// Where a tenant's integrity policy comes from, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// The tenant's own, in its registry entry (set at creation or by `PATCH`).
    Tenant,
    /// `[engine.integrity.tenants.<id>]` of the server's configuration.
    ConfigTenant,
    /// `[engine.integrity.default]`.
    ConfigDefault,
}

/// One move of the state machine.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Transition {
    pub from: IntegrityState,
    pub to: IntegrityState,
    #[schema(value_type = i64)]
    pub at: Millis,
    /// The pressure of the sample that completed the move.
    pub pressure: f64,
}

/// Under `stress`, searches asking for more than this many hits are shed.
pub const STRESS_MAX_K: usize = 50;
/// Under `stress`, searches asking for a wider beam than this are shed.
pub const STRESS_MAX_EF: usize = 256;

/// Transitions kept per tenant.
const RECENT: usize = 16;

/// The state machine of one tenant.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub state: IntegrityState,
    /// How many samples in a row point away from the state on one side (up to a worse state,
    /// or down to a better one), and the nearest state among their targets: where a move
    /// goes. Targets that alternate on one side (stress, normal, stress… out of critical)
    /// still count as samples in a row.
    pending: Option<(IntegrityState, u32)>,
    last_move: Option<Millis>,
    pub recent: VecDeque<Transition>,
    pub last_pressure: f64,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            state: IntegrityState::Normal,
            pending: None,
            last_move: None,
            recent: VecDeque::new(),
            last_pressure: 0.0,
        }
    }
}

/// States in order of severity.
fn rank(s: IntegrityState) -> u8 {
    match s {
        IntegrityState::Normal => 0,
        IntegrityState::Stress => 1,
        IntegrityState::Critical => 2,
    }
}

impl Machine {
    /// Where a sample of `pressure` points from the current state, hysteresis included.
    fn target(&self, p: &IntegrityPolicy, pressure: f64) -> IntegrityState {
        use IntegrityState::*;
        match self.state {
            Normal if pressure >= p.critical_enter => Critical,
            Normal if pressure >= p.stress_enter => Stress,
            Normal => Normal,
            Stress if pressure >= p.critical_enter => Critical,
            Stress if pressure < p.stress_exit => Normal,
            Stress => Stress,
            Critical if pressure < p.stress_exit => Normal,
            Critical if pressure < p.critical_exit => Stress,
            Critical => Critical,
        }
    }

    /// Takes one sample; returns the move it completed, if any.
    pub fn observe(
        &mut self,
        p: &IntegrityPolicy,
        pressure: f64,
        now: Millis,
    ) -> Option<Transition> {
        self.last_pressure = pressure;
        let target = self.target(p, pressure);
        if target == self.state {
            self.pending = None;
            return None;
        }
        let up = |s: IntegrityState| rank(s) > rank(self.state);
        let (target, count) = match self.pending {
            Some((t, n)) if up(t) == up(target) => {
                // The nearer of the two to the current state: the move no sample overshoots.
                let nearer = if rank(t).abs_diff(rank(self.state))
                    <= rank(target).abs_diff(rank(self.state))
                {
                    t
                } else {
                    target
                };
                (nearer, n + 1)
            }
            _ => (target, 1),
        };
        self.pending = Some((target, count));
        let cooldown = Millis::try_from(p.cooldown_ms).unwrap_or(Millis::MAX);
        // The times are the wall clock's: one stepped back past the last move by more than
        // the cooldown (an NTP correction) counts as cooled, or a tenant in `critical` would
        // have its writes refused for as long as the step, on top of the cooldown. A sample
        // a little behind the last move (its time read before another thread moved the
        // state) is within the cooldown, as it should be.
        let cooled = self.last_move.is_none_or(|t| {
            if now < t {
                t - now > cooldown
            } else {
                now - t >= cooldown
            }
        });
        if count < p.consecutive || !cooled {
            return None;
        }
        let t = Transition {
            from: self.state,
            to: target,
            at: now,
            pressure,
        };
        self.state = target;
        self.pending = None;
        self.last_move = Some(now);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(t.clone());
        Some(t)
    }
}

/// `[engine.integrity]`: the default policy and per-tenant overrides
/// (`[engine.integrity.tenants.<id>]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrityConfig {
    pub default: IntegrityPolicy,
    pub tenants: std::collections::HashMap<String, IntegrityPolicy>,
}

impl IntegrityConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.default
            .validate()
            .map_err(|e| format!("integrity.default.{e}"))?;
        for (id, p) in &self.tenants {
            strata_types::TenantId::parse(id).map_err(|e| format!("integrity.tenants: {e}"))?;
            p.validate()
                .map_err(|e| format!("integrity.tenants.{id}.{e}"))?;
        }
        Ok(())
    }

    /// The policy of tenant `id`: its own (`own`, from its registry entry) over the
    /// configuration's override for it over the configuration's default.
    pub(crate) fn effective(
        &self,
        id: &strata_types::TenantId,
        own: Option<IntegrityPolicy>,
    ) -> EffectivePolicy {
        if let Some(policy) = own {
            return EffectivePolicy {
                policy,
                source: PolicySource::Tenant,
            };
        }
        let (policy, source) = match self.tenants.get(id.as_str()) {
            Some(p) => (p, PolicySource::ConfigTenant),
            None => (&self.default, PolicySource::ConfigDefault),
        };
        EffectivePolicy {
            policy: policy.clone(),
            source,
        }
    }

    /// The policy in force for tenant `id` without a policy of its own: the base a partial
    /// policy of its own is completed from (`crate::tenants`).
    pub(crate) fn configured(&self, id: &strata_types::TenantId) -> &IntegrityPolicy {
        self.tenants.get(id.as_str()).unwrap_or(&self.default)
    }
}

/// The policy a tenant is held to and where it comes from, worked out once when its
/// admission is read (`crate::admission`), so that no request looks it up again.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    pub policy: IntegrityPolicy,
    pub source: PolicySource,
}

/// Weight of the newest latency (and queue wait) in the moving average.
const LATENCY_WEIGHT: f64 = 0.2;

/// How fast the latency signal ages while no latency is measured (only refused requests):
/// halved every five seconds, so a tenant in `critical` whose every write is refused is back
/// under its exit threshold within seconds once nothing slow is measured, cooldown and
/// consecutive samples still applying.
const LATENCY_HALF_LIFE_MS: f64 = 5_000.0;

/// The fraction of sampled graph nodes a search no longer reaches that counts as half of
/// pressure 1, like the compaction threshold for deleted vectors.
pub(crate) const UNREACHABLE_STRESS: f64 = 0.05;

/// The most pressure index health alone can add: below the default `critical_exit`, so a
/// graph in poor shape (the engine's to repair, by compaction) sheds a tenant's most
/// expensive searches but never refuses its writes.
const INDEX_HEALTH_MAX: f64 = 2.5;

/// A tenant's index health at one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct IndexHealth {
    /// The largest fraction of deleted vectors still in one of its graphs.
    pub deleted_fraction: f64,
    /// The smallest fraction of sampled nodes reachable in one of its graphs.
    pub reachable: f64,
}

impl Default for IndexHealth {
    fn default() -> Self {
        IndexHealth {
            deleted_fraction: 0.0,
            reachable: 1.0,
        }
    }
}

/// The integrity of one tenant: its state machine and the signals it is fed.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    pub machine: Machine,
    pub latency_ms: f64,
    /// When the last latency was measured: a sample without one (a refused write, a shed
    /// search) ages the latency signal from then, so that a tenant whose requests are all
    /// refused is not held by its last measurement for ever.
    pub latency_at: Millis,
    pub health: IndexHealth,
    /// The tenant's requests waiting in the pool when its last one was submitted.
    pub queue_depth: u64,
    /// Its requests' wait in the pool, exponentially weighted, in milliseconds.
    pub queue_wait_ms: f64,
    /// The last connectivity sample of each of its graphs (see `crate::connectivity`).
    pub reach: std::collections::HashMap<strata_types::CollectionName, crate::connectivity::Sample>,
}

fn moving_average(avg: f64, newest: f64) -> f64 {
    if avg == 0.0 {
        newest
    } else {
        avg + LATENCY_WEIGHT * (newest - avg)
    }
}

impl Tracker {
    /// Whether the tracker holds nothing a fresh one would not but its signals: `normal`, no
    /// move under way, no transition to show. Only such a tenant's slot may be dropped while
    /// it is idle (`crate::slot_retirement`): dropping it must not reset a gate. Its signals
    /// (latency, queue depth and wait, index health) are those of its last requests, a
    /// minute or more ago; a new slot starts them again from its next request.
    pub fn at_rest(&self) -> bool {
        self.machine.state == IntegrityState::Normal
            && self.machine.pending.is_none()
            && self.machine.last_move.is_none()
            && self.machine.recent.is_empty()
    }

    /// Feeds one search's latency and the tenant's index health; returns the new state.
    pub fn sample(
        &mut self,
        p: &IntegrityPolicy,
        latency_ms: Option<f64>,
        health: IndexHealth,
        now: Millis,
    ) -> IntegrityState {
        match latency_ms {
            Some(l) => {
                self.latency_ms = moving_average(self.latency_ms, l);
                self.latency_at = now;
            }
            None => {
                let age = now.saturating_sub(self.latency_at).max(0) as f64;
                self.latency_ms *= 0.5f64.powf(age / LATENCY_HALF_LIFE_MS);
                self.latency_at = now;
            }
        }
        self.health = health;
        self.machine.observe(p, self.pressure(p), now);
        self.machine.state
    }

    /// Records one request leaving the pool's queue: the tenant's depth when it was
    /// submitted and how long it waited. Takes a sample only when the policy counts either
    /// (the other signals as last seen), so without queue thresholds this changes no state.
    pub fn queue(
        &mut self,
        p: &IntegrityPolicy,
        depth: u64,
        wait_ms: f64,
        now: Millis,
    ) -> IntegrityState {
        self.queue_depth = depth;
        self.queue_wait_ms = moving_average(self.queue_wait_ms, wait_ms);
        if p.queue_wait_contract_ms > 0.0 || p.queue_depth_limit > 0 {
            self.machine.observe(p, self.pressure(p), now);
        }
        self.machine.state
    }

    /// The pressure of the signals as they stand (1.0 = at the contract).
    fn pressure(&self, p: &IntegrityPolicy) -> f64 {
        let over = |value: f64, contract: f64| {
            if contract > 0.0 {
                value / contract
            } else {
                0.0
            }
        };
        // Index health and the queue can shed a tenant's costly searches (`stress`) but never
        // refuse its writes (`critical`): a damaged graph is repaired by writes and rebuilds,
        // and a queue also waits on the other tenants' load, so neither may lock a tenant out.
        // Below both critical thresholds: these signals can neither put a tenant in
        // `critical` nor hold it there.
        // Where the policy's bands touch (`stress_enter == critical_exit`, allowed), that bound
        // is below `stress_enter`, and these signals could not even shed searches: outside
        // `critical` they may reach `stress_enter`, still below `critical_enter`.
        let mut cap = p.critical_exit.min(p.critical_enter) * 0.999;
        if self.machine.state != IntegrityState::Critical {
            cap = cap.max(p.stress_enter.min(p.critical_enter * 0.999));
        }
        let below_critical = |x: f64| x.min(cap);
        let latency = over(self.latency_ms, p.latency_contract_ms);
        let wait = below_critical(over(self.queue_wait_ms, p.queue_wait_contract_ms));
        let depth = below_critical(over(
            self.queue_depth as f64,
            f64::from(p.queue_depth_limit),
        ));
        // Twice the compaction threshold is pressure 1: a graph that far gone means compaction
        // is not keeping up; likewise twice `UNREACHABLE_STRESS` of its nodes lost.
        let deleted = self.health.deleted_fraction
            / (2.0 * crate::collection_index::COMPACT_DELETED_FRACTION);
        let lost = (1.0 - self.health.reachable) / (2.0 * UNREACHABLE_STRESS);
        let health = below_critical(deleted.max(lost).min(INDEX_HEALTH_MAX));
        latency.max(wait).max(depth).max(health)
    }

    pub fn report(&self, policy: &IntegrityPolicy, policy_source: PolicySource) -> TenantIntegrity {
        TenantIntegrity {
            state: self.machine.state,
            pressure: self.machine.last_pressure,
            latency_ms: self.latency_ms,
            deleted_fraction: self.health.deleted_fraction,
            connectivity: self.health.reachable,
            queue_depth: self.queue_depth,
            queue_wait_ms: self.queue_wait_ms,
            policy: policy.clone(),
            policy_source,
            transitions: self.machine.recent.iter().cloned().collect(),
        }
    }
}

/// A tenant's integrity, for the admin API and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TenantIntegrity {
    pub state: IntegrityState,
    /// The last sample's pressure (1.0 = at the contract).
    pub pressure: f64,
    /// The tenant's search latency, exponentially weighted, in milliseconds.
    pub latency_ms: f64,
    /// The largest fraction of deleted vectors still in one of its graphs.
    pub deleted_fraction: f64,
    /// The smallest fraction of sampled nodes that a search from the entry point reaches,
    /// over its graphs (1.0 without a graph).
    pub connectivity: f64,
    /// Its requests waiting in the worker pool when its last one was submitted.
    pub queue_depth: u64,
    /// Its requests' wait in the worker pool, exponentially weighted, in milliseconds.
    pub queue_wait_ms: f64,
    /// The policy the tenant is held to: its own, else the configuration's for it, else the
    /// configuration's default (`policy_source` says which).
    pub policy: IntegrityPolicy,
    pub policy_source: PolicySource,
    /// Up to 16 most recent moves, oldest first.
    pub transitions: Vec<Transition>,
}

impl crate::Engine {
    /// Feeds one of the tenant's requests leaving the worker pool's queue to its integrity
    /// state: its queued requests when this one was submitted, and how long this one waited.
    /// Called by the admission layer, which owns the pool; touches nothing of the tenant's
    /// data, only its in-memory integrity tracker.
    pub fn observe_queue(
        &self,
        scope: &strata_auth::TenantScope,
        depth: usize,
        wait: std::time::Duration,
    ) {
        // A tenant whose policy cannot be read has its request refused already; nothing
        // to sample then.
        let Ok(policy) = self.integrity_policy(scope) else {
            return;
        };
        self.indexes.integrity_queue(
            scope.key(),
            scope.tenant(),
            &policy.policy,
            depth as u64,
            wait.as_secs_f64() * 1000.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> IntegrityPolicy {
        IntegrityPolicy {
            consecutive: 3,
            cooldown_ms: 100,
            ..IntegrityPolicy::default()
        }
    }

    /// Each broken threshold is refused naming its field; the defaults pass.
    #[test]
    fn validation_names_the_field_at_fault() {
        let check = |change: fn(&mut IntegrityPolicy), field: &str| {
            let mut p = IntegrityPolicy::default();
            change(&mut p);
            let e = p.validate().unwrap_err();
            assert!(e.starts_with(&format!("{field}: ")), "{field}: {e}");
        };
        assert_eq!(IntegrityPolicy::default().validate(), Ok(()));
        check(|p| p.latency_contract_ms = -1.0, "latency_contract_ms");
        check(|p| p.latency_contract_ms = f64::NAN, "latency_contract_ms");
        check(
            |p| p.queue_wait_contract_ms = f64::INFINITY,
            "queue_wait_contract_ms",
        );
        check(|p| p.stress_exit = 0.0, "stress_exit");
        check(|p| p.critical_enter = f64::NEG_INFINITY, "critical_enter");
        check(|p| p.stress_exit = 1.0, "stress_enter");
        check(|p| p.stress_enter = 3.0, "critical_exit");
        check(|p| p.critical_exit = 4.0, "critical_enter");
        check(|p| p.consecutive = 0, "consecutive");
        // `stress_enter == critical_exit` is allowed: the bands may touch.
        let touching = IntegrityPolicy {
            critical_exit: 1.0,
            ..IntegrityPolicy::default()
        };
        assert_eq!(touching.validate(), Ok(()));
    }

    /// The tenant's own policy over the configuration's override over the default.
    #[test]
    fn the_effective_policy_is_the_most_specific() {
        let id = strata_types::TenantId::parse("acme").unwrap();
        let other = strata_types::TenantId::parse("globex").unwrap();
        let mut config = IntegrityConfig::default();
        config.tenants.insert("acme".into(), policy());
        let own = IntegrityPolicy {
            consecutive: 7,
            ..IntegrityPolicy::default()
        };
        let effective = |policy: IntegrityPolicy, source| EffectivePolicy { policy, source };
        assert_eq!(
            config.effective(&id, Some(own.clone())),
            effective(own, PolicySource::Tenant)
        );
        assert_eq!(
            config.effective(&id, None),
            effective(policy(), PolicySource::ConfigTenant)
        );
        assert_eq!(
            config.effective(&other, None),
            effective(IntegrityPolicy::default(), PolicySource::ConfigDefault)
        );
    }

    /// An enter threshold at +inf means "never" and was always accepted in a configuration;
    /// NaN and -inf are not numbers a threshold can be.
    #[test]
    fn an_enter_threshold_may_be_infinite_but_not_nan() {
        let never_critical = IntegrityPolicy {
            critical_enter: f64::INFINITY,
            ..IntegrityPolicy::default()
        };
        assert_eq!(never_critical.validate(), Ok(()));
        let config = IntegrityConfig {
            default: never_critical,
            ..IntegrityConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
        for bad in [f64::NAN, f64::NEG_INFINITY] {
            let p = IntegrityPolicy {
                critical_enter: bad,
                ..IntegrityPolicy::default()
            };
            assert!(p.validate().unwrap_err().starts_with("critical_enter"));
            let p = IntegrityPolicy {
                stress_enter: bad,
                ..IntegrityPolicy::default()
            };
            assert!(p.validate().unwrap_err().starts_with("stress_enter"));
        }
        let p = IntegrityPolicy {
            critical_exit: f64::INFINITY,
            ..IntegrityPolicy::default()
        };
        assert!(p.validate().unwrap_err().starts_with("critical_exit"));
    }

    #[test]
    fn moves_after_consecutive_samples_and_comes_back_below_the_exit() {
        let p = policy();
        let mut m = Machine::default();
        assert!(m.observe(&p, 1.5, 0).is_none());
        assert!(m.observe(&p, 1.5, 10).is_none());
        assert_eq!(
            m.observe(&p, 1.5, 20).map(|t| t.to),
            Some(IntegrityState::Stress)
        );
        // Between exit and enter: stays.
        for i in 0..10 {
            assert!(m.observe(&p, 0.8, 200 + i).is_none());
        }
        for i in 0..2 {
            assert!(m.observe(&p, 0.5, 300 + i).is_none());
        }
        assert_eq!(
            m.observe(&p, 0.5, 400).map(|t| t.to),
            Some(IntegrityState::Normal)
        );
        assert_eq!(m.recent.len(), 2);
    }

    /// Targets that alternate on one side still count as samples in a row: out of `critical`
    /// with pressure around `stress_exit` (normal, stress, normal…), the tenant goes to
    /// `stress`, the nearer; it once stayed in `critical`, writes refused, for as long as the
    /// targets kept alternating.
    #[test]
    fn alternating_targets_on_one_side_still_move_to_the_nearer() {
        let p = policy();
        let mut m = Machine::default();
        for i in 0..3 {
            m.observe(&p, 5.0, i);
        }
        assert_eq!(m.state, IntegrityState::Critical);
        let mut moved = None;
        for (i, pressure) in [0.6, 0.8, 0.6, 0.8, 0.6].into_iter().enumerate() {
            moved = moved.or(m.observe(&p, pressure, 1_000 + i as Millis));
        }
        assert_eq!(moved.map(|t| t.to), Some(IntegrityState::Stress));
        // And into `stress` from `normal` with pressure around `critical_enter`.
        let mut m = Machine::default();
        for (i, pressure) in [3.9, 4.1, 3.9].into_iter().enumerate() {
            m.observe(&p, pressure, i as Millis);
        }
        assert_eq!(m.state, IntegrityState::Stress);
    }

    fn tracker_policy() -> IntegrityPolicy {
        IntegrityPolicy {
            latency_contract_ms: 10.0,
            queue_wait_contract_ms: 10.0,
            ..policy()
        }
    }

    /// Into `critical` by latency: 100 ms searches against a 10 ms contract.
    fn critical_tracker(p: &IntegrityPolicy) -> Tracker {
        let mut t = Tracker::default();
        for i in 0..3 {
            t.sample(p, Some(100.0), IndexHealth::default(), i);
        }
        assert_eq!(t.machine.state, IntegrityState::Critical);
        t
    }

    /// The queue's wait (which other tenants' load lengthens) never holds a tenant in
    /// `critical`: its pressure is capped below the exit as well as the entry.
    #[test]
    fn the_queue_alone_cannot_hold_a_tenant_in_critical() {
        let p = tracker_policy();
        let mut t = critical_tracker(&p);
        for i in 0..50 {
            t.queue(&p, 0, 1_000.0, 1_000 + i);
            t.sample(&p, Some(1.0), IndexHealth::default(), 1_000 + i);
        }
        assert_ne!(t.machine.state, IntegrityState::Critical);
    }

    /// With the bands touching (`stress_enter == critical_exit`), the queue and index health
    /// still shed a tenant's searches (`stress`), and still never refuse its writes nor hold
    /// it in `critical`.
    #[test]
    fn touching_bands_let_the_queue_and_index_health_reach_stress_only() {
        let p = IntegrityPolicy {
            stress_enter: 2.0,
            critical_exit: 2.0,
            ..tracker_policy()
        };
        p.validate().unwrap();
        let sick = IndexHealth {
            deleted_fraction: 1.0,
            reachable: 0.0,
        };
        let mut t = Tracker::default();
        for i in 0..20 {
            t.sample(&p, Some(1.0), sick, i);
        }
        assert_eq!(t.machine.state, IntegrityState::Stress);
        let mut t = Tracker::default();
        for i in 0..20 {
            t.queue(&p, 0, 1_000.0, i);
        }
        assert_eq!(t.machine.state, IntegrityState::Stress);
        let mut t = critical_tracker(&p);
        for i in 0..50 {
            t.queue(&p, 0, 1_000.0, 1_000 + i);
            t.sample(&p, Some(1.0), sick, 1_000 + i);
        }
        assert_eq!(t.machine.state, IntegrityState::Stress);
    }

    /// A tenant whose every request is refused (writes in `critical`, shed searches) has no
    /// latency measured; its last one ages, and the state comes back.
    #[test]
    fn refused_requests_age_the_latency_until_the_state_falls() {
        let p = tracker_policy();
        let mut t = critical_tracker(&p);
        let mut now = 0;
        while t.machine.state == IntegrityState::Critical && now < 120_000 {
            now += 1_000;
            t.sample(&p, None, IndexHealth::default(), now);
        }
        assert_ne!(
            t.machine.state,
            IntegrityState::Critical,
            "still critical at {now} ms"
        );
        assert!(now <= 30_000, "{now} ms");
    }

    /// A wall clock stepped back past the last move does not hold the state for the step.
    #[test]
    fn a_clock_stepped_back_does_not_hold_the_state() {
        let p = policy();
        let mut m = Machine::default();
        for i in 0..3 {
            m.observe(&p, 5.0, 1_000_000 + i);
        }
        assert_eq!(m.state, IntegrityState::Critical);
        // An hour back: the samples that follow move it as if the cooldown had passed.
        for i in 0..10 {
            m.observe(&p, 0.1, 1_000_000 - 3_600_000 + i);
        }
        assert_ne!(m.state, IntegrityState::Critical);
    }

    /// An operator's new policy may not hold a state for more than a day; a stored one that
    /// does (written before the rule) still reads.
    #[test]
    fn a_new_cooldown_longer_than_a_day_is_refused() {
        let long = IntegrityPolicy {
            cooldown_ms: MAX_COOLDOWN_MS + 1,
            ..policy()
        };
        assert!(
            long.validate_new()
                .unwrap_err()
                .starts_with("cooldown_ms: ")
        );
        assert_eq!(long.validate(), Ok(()));
        let day = IntegrityPolicy {
            cooldown_ms: MAX_COOLDOWN_MS,
            ..policy()
        };
        assert_eq!(day.validate_new(), Ok(()));
    }

    /// A sample whose time was read just before another thread's move is within the
    /// cooldown: the state does not move back at once.
    #[test]
    fn a_sample_a_little_behind_the_last_move_does_not_skip_the_cooldown() {
        let p = IntegrityPolicy {
            consecutive: 1,
            cooldown_ms: 1_000,
            ..IntegrityPolicy::default()
        };
        let mut m = Machine::default();
        m.observe(&p, 5.0, 1_000_000);
        assert_eq!(m.state, IntegrityState::Critical);
        m.observe(&p, 0.1, 1_000_000 - 5);
        assert_eq!(m.state, IntegrityState::Critical);
    }

    /// A cooldown too long for milliseconds since the epoch is a cooldown, not none.
    #[test]
    fn a_huge_cooldown_still_holds_the_state() {
        let p = IntegrityPolicy {
            cooldown_ms: u64::MAX,
            ..policy()
        };
        let mut m = Machine::default();
        for i in 0..3 {
            m.observe(&p, 5.0, i);
        }
        assert_eq!(m.state, IntegrityState::Critical);
        for i in 0..10 {
            m.observe(&p, 0.1, 10_000 + i);
        }
        assert_eq!(m.state, IntegrityState::Critical);
    }

    proptest! {
        /// No flapping: moves are at least a cooldown apart, each follows `consecutive`
        /// samples pointing its way, and pressure inside the hysteresis band never moves the
        /// state.
        #[test]
        fn no_flapping(samples in prop::collection::vec((0.0f64..6.0, 0i64..60), 1..300)) {
            let p = policy();
            let mut m = Machine::default();
            let mut now = 0;
            let mut last: Option<Millis> = None;
            let mut run: Vec<IntegrityState> = Vec::new();
            for (pressure, dt) in samples {
                now += dt;
                let before = m.state;
                let target = m.target(&p, pressure);
                run.push(target);
                let in_band = match before {
                    IntegrityState::Normal => pressure < p.stress_enter,
                    IntegrityState::Stress => (p.stress_exit..p.critical_enter).contains(&pressure),
                    IntegrityState::Critical => pressure >= p.critical_exit,
                };
                match m.observe(&p, pressure, now) {
                    Some(t) => {
                        prop_assert!(!in_band);
                        prop_assert_eq!(t.from, before);
                        if let Some(l) = last {
                            prop_assert!(now - l >= p.cooldown_ms as Millis);
                        }
                        // The last `consecutive` samples all pointed away on the side of the
                        // move, and none of them nearer than where it went (no overshoot).
                        let tail = &run[run.len() - p.consecutive as usize..];
                        let up = |s: IntegrityState| rank(s) > rank(before);
                        let dist = |s: IntegrityState| rank(s).abs_diff(rank(before));
                        prop_assert!(tail.iter().all(|s| *s != before && up(*s) == up(t.to)));
                        prop_assert!(tail.iter().all(|s| dist(t.to) <= dist(*s)));
                        last = Some(now);
                        run.clear();
                    }
                    None => prop_assert_eq!(m.state, before),
                }
            }
        }
    }
}
