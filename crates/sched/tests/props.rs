//! Property tests against simple models: the token bucket against exact integer arithmetic,
//! and the fair queue against FIFO-per-tenant, bound-counting and fairness-bound models.
//! proptest prints the minimal failing case and records its seed in `tests/props.regressions`,
//! which is replayed first on the next run.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use strata_sched::{Discipline, FairQueue, Lane, Limits, QueueFull, RateLimiter};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

/// One rate-limit step: wait `dt_us`, then check `key` under `(qps, burst)`, maybe after an
/// eviction sweep (which must never change a decision).
#[derive(Debug, Clone)]
struct Step {
    dt_us: u64,
    key: u8,
    qps: u64,
    burst: u32,
    evict: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (0u64..400_000, 0u8..3, 1u64..50, 1u32..6, any::<bool>()).prop_map(
        |(dt_us, key, qps, burst, evict)| Step {
            dt_us,
            key,
            qps,
            burst,
            evict,
        },
    )
}

/// The model bucket in exact integers: tokens scaled by 1e6, refilled by `dt_us * qps` at the
/// limits stored by the previous check, plus the increase of the burst when a check raises it.
#[derive(Debug, Clone, Copy)]
struct ModelBucket {
    scaled: u64,
    last_us: u64,
    qps: u64,
    cap: u64,
}

impl ModelBucket {
    fn level(&self, now_us: u64) -> u64 {
        (self.scaled + (now_us - self.last_us) * self.qps).min(self.cap)
    }
}

const SCALE: u64 = 1_000_000;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn token_bucket_matches_integer_model(steps in prop::collection::vec(step(), 1..200)) {
        let rl = RateLimiter::new();
        let t0 = Instant::now();
        let mut now_us = 0u64;
        let mut model: HashMap<u8, ModelBucket> = HashMap::new();
        for s in steps {
            now_us += s.dt_us;
            let now = t0 + Duration::from_micros(now_us);
            if s.evict {
                rl.evict_idle(now);
                model.retain(|_, b| b.level(now_us) < b.cap);
            }
            let lim = Limits::new(s.qps as f64, Some(s.burst)).unwrap();
            let cap = u64::from(s.burst) * SCALE;
            let fresh = ModelBucket { scaled: cap, last_us: now_us, qps: s.qps, cap };
            let b = model.entry(s.key).or_insert(fresh);
            // A raised burst adds its increase at once; a lowered one clamps.
            b.scaled = (b.level(now_us) + cap.saturating_sub(b.cap)).min(cap);
            (b.last_us, b.qps, b.cap) = (now_us, s.qps, cap);
            let expected = if b.scaled >= SCALE {
                b.scaled -= SCALE;
                Ok(())
            } else {
                // µs·qps still missing, converted to whole ms, rounded up.
                Err((SCALE - b.scaled).div_ceil(s.qps * 1000))
            };
            match (rl.check(&s.key, &lim, now), expected) {
                (Ok(()), Ok(())) => {}
                (Err(got), Err(want)) => prop_assert!(
                    got.millis.abs_diff(want) <= 1,
                    "retry-after {} ms, model {} ms", got.millis, want
                ),
                (got, want) => prop_assert!(false, "limiter {:?}, model {:?}", got, want),
            }
        }
    }
}

/// One queue step: push to `key` with `weight`, or pop.
#[derive(Debug, Clone)]
enum Op {
    Push { key: u8, weight: u32 },
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..5, 1u32..5).prop_map(|(key, weight)| Op::Push { key, weight }),
        2 => Just(Op::Pop),
    ]
}

/// Runs `ops` (then pops everything) and returns the popped `(key, label)` pairs, the labels
/// being push indices, checking bounds against a counting model on the way.
fn run_ops(discipline: Discipline, ops: &[Op], max: usize, per: usize) -> Vec<(u8, usize)> {
    let mut q = FairQueue::new(discipline, max, per);
    let mut counts: HashMap<u8, usize> = HashMap::new();
    let mut total = 0;
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Push { key, weight } => {
                let mine = counts.entry(key).or_default();
                let want = if total >= max {
                    Err(QueueFull::Total { queued: total })
                } else if *mine >= per {
                    Err(QueueFull::Tenant { queued: *mine })
                } else {
                    *mine += 1;
                    total += 1;
                    Ok(())
                };
                assert_eq!(q.push(&key, weight, i), want);
            }
            Op::Pop => {
                if let Some((key, label)) = q.pop() {
                    *counts.entry(key).or_default() -= 1;
                    total -= 1;
                    out.push((key, label));
                } else {
                    assert_eq!(total, 0);
                }
            }
        }
        assert_eq!(q.len(), total);
    }
    out.extend(std::iter::from_fn(|| q.pop()));
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn queue_loses_nothing_and_keeps_tenant_fifo(
        ops in prop::collection::vec(op(), 0..300), max in 1usize..40, per in 1usize..15
    ) {
        let popped = run_ops(Discipline::Fair, &ops, max, per);
        // Replay the accepted pushes: each tenant's labels pop in push order.
        let mut per_tenant: HashMap<u8, VecDeque<usize>> = HashMap::new();
        for &(key, label) in &popped {
            per_tenant.entry(key).or_default().push_back(label);
        }
        for labels in per_tenant.values() {
            prop_assert!(labels.iter().zip(labels.iter().skip(1)).all(|(a, b)| a < b));
        }
        // Deterministic: the same ops give the same order.
        prop_assert_eq!(&popped, &run_ops(Discipline::Fair, &ops, max, per));
    }

    #[test]
    fn fifo_discipline_pops_in_push_order(ops in prop::collection::vec(op(), 0..300)) {
        let popped = run_ops(Discipline::Fifo, &ops, usize::MAX, usize::MAX);
        prop_assert!(popped.windows(2).all(|w| w[0].1 < w[1].1));
    }

    /// SFQ's fairness bound for unit jobs: while tenants i and j are both backlogged, their
    /// normalised service differs by at most 1/w_i + 1/w_j.
    #[test]
    fn backlogged_service_stays_within_fairness_bound(
        tenants in prop::collection::vec((1u32..6, 5usize..60), 2..5)
    ) {
        let mut q = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        // Interleaved pushes, so everyone is backlogged from the start.
        let most = tenants.iter().map(|t| t.1).max().unwrap_or(0);
        for round in 0..most {
            for (k, &(w, n)) in tenants.iter().enumerate() {
                if round < n {
                    q.push(&k, w, ()).unwrap();
                }
            }
        }
        let mut served = vec![0usize; tenants.len()];
        while let Some((k, ())) = q.pop() {
            served[k] += 1;
            for i in 0..tenants.len() {
                for j in 0..tenants.len() {
                    let (wi, wj) = (f64::from(tenants[i].0), f64::from(tenants[j].0));
                    if q.tenant_len(&i) > 0 && q.tenant_len(&j) > 0 {
                        let lag = served[i] as f64 / wi - served[j] as f64 / wj;
                        prop_assert!(lag.abs() <= 1.0 / wi + 1.0 / wj + 1e-9,
                            "lag {} between {} and {} after {:?}", lag, i, j, served);
                    }
                }
            }
        }
    }

    /// A newcomer waits behind at most one job of each tenant queued when it arrives, however
    /// deep their backlogs are.
    #[test]
    fn newcomer_waits_at_most_one_job_per_other_tenant(
        backlog in prop::collection::vec((0u8..4, 1u32..5), 1..400), pops in 0usize..200
    ) {
        let mut q = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        for &(k, w) in &backlog {
            q.push(&k, w, ()).unwrap();
        }
        for _ in 0..pops {
            q.pop();
        }
        let others = (0u8..4).filter(|k| q.tenant_len(k) > 0).count();
        q.push(&99, 1, ()).unwrap();
        let mut ahead: HashMap<u8, usize> = HashMap::new();
        while let Some((k, ())) = q.pop() {
            if k == 99 {
                break;
            }
            *ahead.entry(k).or_default() += 1;
        }
        prop_assert!(ahead.len() <= others);
        prop_assert!(ahead.values().all(|&n| n <= 1), "{:?}", ahead);
    }
}

/// A simulated pool: `workers` servers take jobs from the queue, each job runs for its cost in
/// simulated nanoseconds and is then settled with its measured cost. Every tenant stays
/// backlogged (a new job is queued whenever one is dispatched). Returns the cost each tenant
/// was served by the time `horizon` passed. With `settle = false` the costs are never reported,
/// as before CPU-time charging.
fn simulate_pool(
    weights: &[u32],
    base_costs: &[u64],
    workers: usize,
    horizon: u64,
    seed: u64,
    settle: bool,
) -> Vec<u64> {
    let mut rng = seed | 1;
    // Each job's cost: its tenant's base cost, ±50 %.
    let mut cost_of = |t: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        base_costs[t] / 2 + rng % base_costs[t].max(1)
    };
    let mut q: FairQueue<u8, u64> = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
    for (t, &w) in weights.iter().enumerate() {
        for _ in 0..3 {
            q.push(&(t as u8), w, cost_of(t)).unwrap();
        }
    }
    let mut served = vec![0u64; weights.len()];
    let mut running: Vec<Option<(u64, strata_sched::Charge<u8>, u64)>> = vec![None; workers];
    let mut now = 0u64;
    while now < horizon {
        for slot in running.iter_mut().filter(|s| s.is_none()) {
            let (charge, cost) = q.pop_charged().expect("tenants stay backlogged");
            let t = charge.key as usize;
            q.push(&charge.key, weights[t], cost_of(t)).unwrap();
            *slot = Some((now + cost, charge, cost));
        }
        let (w, end) = running
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|(end, _, _)| (i, *end)))
            .min_by_key(|&(_, end)| end)
            .expect("a job is running");
        let (_, charge, cost) = running[w].take().expect("running");
        now = end;
        served[charge.key as usize] += cost;
        let settled = if settle { cost } else { charge.estimate_ns };
        q.complete(charge, settled);
    }
    served
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    /// CPU-time accounting: with jobs of unequal cost (up to 20× apart between tenants, ±50 %
    /// within one), each backlogged tenant's share of the served time stays within a few of the
    /// largest jobs of its weight share, whatever its jobs cost.
    #[test]
    fn cpu_share_follows_weight_share_for_unequal_costs(
        tenants in prop::collection::vec((1u32..5, 50_000u64..1_000_000), 2..5),
        workers in 1usize..4,
        seed in any::<u64>(),
    ) {
        let weights: Vec<u32> = tenants.iter().map(|t| t.0).collect();
        let costs: Vec<u64> = tenants.iter().map(|t| t.1).collect();
        let max_cost = costs.iter().max().copied().unwrap_or(1) * 3 / 2;
        let horizon = 600 * max_cost;
        let served = simulate_pool(&weights, &costs, workers, horizon, seed, true);
        let total: u64 = served.iter().sum();
        let weight_sum: u32 = weights.iter().sum();
        for (t, &s) in served.iter().enumerate() {
            let fair = total as f64 * f64::from(weights[t]) / f64::from(weight_sum);
            // SFQ's lag bound (about one job per tenant) plus the jobs in flight, whose
            // estimates are settled only when they finish.
            let bound = (2 + 2 * workers as u64) * max_cost * u64::from(weights[t])
                + workers as u64 * max_cost;
            prop_assert!(
                (s as f64 - fair).abs() <= bound as f64,
                "tenant {t} (weight {}, cost {}): served {s} ns, fair {fair:.0} ± {bound} \
                 (total {total}, weights {weights:?}, costs {costs:?}, {workers} workers)",
                weights[t], costs[t]
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..config() })]

    /// With measured costs settled, a refund (a job cheaper than its estimate) moves its
    /// tenant's later jobs down, past a newcomer's tag, so the newcomer's bound is in cost:
    /// what each backlogged tenant runs before it adds up to no more than the estimate it was
    /// charged plus one of its jobs, whatever the weights and however long they were served.
    #[test]
    fn newcomer_waits_behind_about_one_job_cost_of_each_other_tenant(
        tenants in prop::collection::vec((1u32..5, 50_000u64..1_000_000), 1..5),
        pops in 0usize..400,
        seed in any::<u64>(),
    ) {
        let mut rng = seed | 1;
        let mut cost_of = |base: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            base / 2 + rng % base
        };
        let newcomer = u8::MAX;
        let mut q: FairQueue<u8, u64> = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        for (t, &(w, base)) in tenants.iter().enumerate() {
            for _ in 0..4 {
                q.push(&(t as u8), w, cost_of(base)).unwrap();
            }
        }
        // One worker, each job settled as it ends; every tenant stays backlogged.
        let mut estimates = vec![0u64; tenants.len()];
        let mut ahead = vec![0u64; tenants.len()];
        let mut arrived = false;
        for step in 0.. {
            if step == pops {
                q.push(&newcomer, 1, 0).unwrap();
                arrived = true;
            }
            let (charge, cost) = q.pop_charged().expect("tenants stay backlogged");
            if charge.key == newcomer {
                break;
            }
            let t = usize::from(charge.key);
            if arrived {
                ahead[t] += cost;
            } else {
                estimates[t] = charge.estimate_ns;
            }
            let (w, base) = tenants[t];
            q.push(&charge.key, w, cost_of(base)).unwrap();
            q.complete(charge, cost);
        }
        for (t, &(_, base)) in tenants.iter().enumerate() {
            // The estimate is a sliding average of costs, seeded with the all-tenant one.
            let estimate = estimates[t].max(strata_sched::DEFAULT_COST_NS).max(base * 3 / 2);
            let bound = estimate + base * 3 / 2;
            prop_assert!(
                ahead[t] <= bound,
                "tenant {t} ran {} ns before the newcomer, bound {bound} ({tenants:?})",
                ahead[t]
            );
        }
    }
}

/// The property above is not vacuous: counting jobs instead of settling their costs gives a
/// tenant with 10× costlier jobs about 10× the time, and charging costs gives it half.
#[test]
fn counting_jobs_gives_costly_tenants_more_time_and_charging_costs_does_not() {
    let weights = [1, 1];
    let costs = [1_000_000, 100_000];
    let share = |settle| {
        let s = simulate_pool(&weights, &costs, 2, 2_000_000_000, 7, settle);
        s[0] as f64 / (s[0] + s[1]) as f64
    };
    let (counted, charged) = (share(false), share(true));
    assert!(
        counted > 0.85,
        "counting jobs: costly tenant got {counted:.3}"
    );
    assert!(
        (0.47..=0.53).contains(&charged),
        "charging CPU time: {charged:.3}"
    );
}

/// One step against a queue with a reserved lane: push in a lane, pop as a shared worker, pop
/// as a reserved worker, or settle the oldest running job at a cost.
#[derive(Debug, Clone)]
enum LaneOp {
    Push { key: u8, reserved: bool },
    PopShared,
    PopReserved,
    Complete { cost_us: u64 },
}

fn lane_op() -> impl Strategy<Value = LaneOp> {
    prop_oneof![
        4 => (0u8..5, any::<bool>()).prop_map(|(key, reserved)| LaneOp::Push { key, reserved }),
        2 => Just(LaneOp::PopShared),
        2 => Just(LaneOp::PopReserved),
        1 => (1u64..5_000).prop_map(|cost_us| LaneOp::Complete { cost_us }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Against a model of per-tenant FIFO queues and each tenant's latest lane: a reserved pop
    /// takes only a job of a tenant whose latest push was reserved, and is `None` exactly when
    /// no such tenant has a job waiting; nothing is lost or duplicated; each tenant's jobs
    /// leave in push order whichever worker kind takes them.
    #[test]
    fn reserved_lane_serves_only_reserved_tenants_and_loses_nothing(
        ops in prop::collection::vec(lane_op(), 0..400)
    ) {
        let mut q = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        let mut model: HashMap<u8, (VecDeque<usize>, bool)> = HashMap::new();
        let mut running = VecDeque::new();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                LaneOp::Push { key, reserved } => {
                    let lane = if reserved { Lane::Reserved } else { Lane::Shared };
                    q.push_in(&key, 1, lane, i).unwrap();
                    let entry = model.entry(key).or_default();
                    entry.0.push_back(i);
                    entry.1 = reserved;
                }
                LaneOp::PopShared | LaneOp::PopReserved => {
                    let reserved_only = matches!(op, LaneOp::PopReserved);
                    let popped = if reserved_only { q.pop_reserved() } else { q.pop_charged() };
                    let eligible = model
                        .values()
                        .any(|(jobs, r)| !jobs.is_empty() && (*r || !reserved_only));
                    match popped {
                        None => prop_assert!(!eligible, "nothing popped at step {}", i),
                        Some((charge, label)) => {
                            let (jobs, r) = model.get_mut(&charge.key).unwrap();
                            prop_assert!(*r || !reserved_only, "shared tenant on reserved lane");
                            prop_assert_eq!(jobs.pop_front(), Some(label));
                            running.push_back(charge);
                        }
                    }
                }
                LaneOp::Complete { cost_us } => {
                    if let Some(charge) = running.pop_front() {
                        q.complete(charge, cost_us * 1_000);
                    }
                }
            }
            let waiting: usize = model.values().map(|(jobs, _)| jobs.len()).sum();
            prop_assert_eq!(q.len(), waiting);
        }
    }
}

/// One step against a queue whose pool has background workers: push for a tenant, pop as a
/// normal worker (which passes over the tenants in `aside`), or pop as a background worker
/// (which takes only those).
#[derive(Debug, Clone)]
enum AsideOp {
    Push { key: u8 },
    PopNormal { aside: u8 },
    PopAside { aside: u8 },
}

fn aside_op() -> impl Strategy<Value = AsideOp> {
    prop_oneof![
        4 => (0u8..4).prop_map(|key| AsideOp::Push { key }),
        // `aside` is a bit set over the 4 tenants.
        2 => (0u8..16).prop_map(|aside| AsideOp::PopNormal { aside }),
        2 => (0u8..16).prop_map(|aside| AsideOp::PopAside { aside }),
    ]
}

/// A model tenant: waiting `(seq, label)`, head start tag, finish tag.
type ModelTenant = (VecDeque<(u64, usize)>, u64, u64);

/// The start-time fair queue written out plainly, in units of one job's cost at weight 4.
#[derive(Default)]
struct SfqModel {
    vtime: u64,
    max_finish: u64,
    tenants: HashMap<u8, ModelTenant>,
    seq: u64,
}

impl SfqModel {
    fn cost(weight: u32) -> u64 {
        4 / u64::from(weight)
    }

    fn push(&mut self, key: u8, label: usize) {
        let vtime = self.vtime;
        let t = self.tenants.entry(key).or_default();
        if t.0.is_empty() {
            t.1 = vtime.max(t.2);
        }
        t.0.push_back((self.seq, label));
        self.seq += 1;
    }

    /// The fairest job among tenants `allowed` accepts; `in_order` pops first lift heads below
    /// the virtual time up to it and then move it, aside pops leave it alone.
    fn pop(
        &mut self,
        weight: impl Fn(u8) -> u32,
        allowed: impl Fn(u8) -> bool,
        in_order: bool,
    ) -> Option<(u8, usize)> {
        let vtime = self.vtime;
        let key = self
            .tenants
            .iter_mut()
            .filter(|(k, t)| !t.0.is_empty() && allowed(**k))
            .map(|(k, t)| {
                if in_order {
                    t.1 = t.1.max(vtime);
                }
                (t.1, t.0[0].0, *k)
            })
            .min()?
            .2;
        let t = self.tenants.get_mut(&key).expect("chosen");
        let (_, label) = t.0.pop_front().expect("non-empty");
        if in_order {
            self.vtime = self.vtime.max(t.1);
        }
        t.2 = t.1 + Self::cost(weight(key));
        t.1 = t.2;
        self.max_finish = self.max_finish.max(t.2);
        if self.tenants.values().all(|t| t.0.is_empty()) {
            self.vtime = self.max_finish;
        }
        Some((key, label))
    }
}

proptest! {
    #![proptest_config(config())]

    /// Against the plain model: normal and background workers dispatch exactly the jobs the
    /// model does, in the same order; a background pop never moves the virtual time while
    /// jobs wait; and a tenant coming back from the background is lifted to the virtual time
    /// (the model lifts it; were the queue not to, the orders would differ).
    #[test]
    fn background_pops_leave_the_virtual_time_alone(
        ops in prop::collection::vec(aside_op(), 0..300),
        weights in prop::collection::vec(prop::sample::select(vec![1u32, 2, 4]), 4),
    ) {
        let weight = |k: u8| weights[usize::from(k)];
        let mut q: FairQueue<u8, usize> = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
        let mut model = SfqModel::default();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                AsideOp::Push { key } => {
                    q.push(&key, weight(key), i).unwrap();
                    model.push(key, i);
                }
                AsideOp::PopNormal { aside } => {
                    let normal = |k: u8| aside & (1 << k) == 0;
                    let got = q.pop_charged_where(|k, _| normal(*k)).map(|(c, l)| (c.key, l));
                    prop_assert_eq!(got, model.pop(weight, normal, true), "step {}", i);
                }
                AsideOp::PopAside { aside } => {
                    let behind = |k: u8| aside & (1 << k) != 0;
                    let before = q.virtual_time();
                    let got = q.pop_charged_aside(|k, _| behind(*k)).map(|(c, l)| (c.key, l));
                    prop_assert_eq!(got, model.pop(weight, behind, false), "step {}", i);
                    if !q.is_empty() {
                        prop_assert_eq!(q.virtual_time(), before, "an aside pop moved V");
                    }
                }
            }
            prop_assert_eq!(q.len(), model.tenants.values().map(|t| t.0.len()).sum::<usize>());
        }
    }
}
