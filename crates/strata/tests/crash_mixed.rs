//! Chaos over HTTP: client threads of several tenants run a seeded mix of what users do (single
//! and batch puts with every scope field, patches of content, metadata, principals, vector and
//! domain, evidence, deletes one by one and by filter, links made and removed, reads, lists,
//! counts and searches of every mode) while an operator thread suspends, resumes, soft-deletes,
//! restores, migrates, updates, exports and creates tenants; the server is killed with SIGKILL at a seeded moment
//! (every other round within milliseconds of a migration's answer), restarted, and then has to
//! agree with what it acknowledged:
//! - every record is as its last acknowledged write left it (a delete stays deleted); the one
//!   write of a client whose answer never arrived is either wholly applied or not at all (a
//!   batch or a delete by filter is all or nothing, a patch is the old or the new record), and
//!   a record write sent again with its `Idempotency-Key` is replayed exactly when it was kept;
//! - `verify` is clean, and the usage, stats, count, list, `GET` (of every record), exact
//!   searches (vector, text, hybrid, filtered, narrowed to a principal or a run) and export all
//!   name exactly the same records, with the same fields (content, vector, scope fields,
//!   metadata, confidence and its evidence, no kind, no expiry), and nothing of another tenant;
//! - acknowledged links (seen from both ends) and link removals, tenant states, isolation
//!   levels, profiles (name, limits, weight) and new tenants survive, and every acknowledged
//!   operation but a migration (whose row is written when it lands) has its audit row;
//! - no search dropped a hit in its defensive re-check on resident state
//!   (`strata_search_recheck_drops_total` stays 0, under the load and after the checks);
//! - the server log never says "panicked".
//!
//! During the load every answer is checked too: a write's answer is the record (or link, or
//! count) it promises, a refusal is only the one the API documents for a tenant the operator
//! paused, and a search returns at least as many hits as the asking client's own records that
//! match it (exactly as many when it filters by them), up to `k`.
//!
//! `CRASH_SEED=<n>` replays a seed's operation mix and kill moments (the interleaving of the
//! threads is the machine's); a failure names the seed, the round, the tenant and the record.

mod common;

#[path = "crash_mixed/check.rs"]
mod check;
#[path = "crash_mixed/client.rs"]
mod client;
#[path = "crash_mixed/model.rs"]
mod model;
#[path = "crash_mixed/operator.rs"]
mod operator;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{OPERATOR_KEY, Server, StopOnDrop};
use serde_json::json;

use crate::client::ClientModel;
use crate::model::{Failures, Rng, Shared, TENANTS, tenant_id};
use crate::operator::OperatorModel;

/// Kill rounds: each runs the load, kills the server, restarts it and checks everything
/// (`CRASH_ROUNDS=<n>` runs more, or fewer).
const ROUNDS: u64 = 16;
/// Client threads per tenant, each owning its own record ids, so each knows exactly what its
/// acknowledged writes left behind.
const CLIENTS_PER_TENANT: usize = 3;

#[test]
fn sigkill_under_a_mixed_workload_loses_and_half_applies_nothing() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let rounds = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(ROUNDS);
    println!("crash_mixed: CRASH_SEED={seed}, {rounds} rounds");
    let started = Instant::now();
    let mut server = Server::start();
    let keys: Vec<String> = (0..TENANTS)
        .map(|t| {
            let id = tenant_id(t);
            server.tenant(&id);
            let key = server.key(
                &id,
                json!({"permissions": ["read", "write", "admin", "all_principals"]}),
            );
            let (s, v) = server.post(
                "/v1/collections",
                &key,
                json!({"name": model::COLLECTION, "dim": model::DIM}),
            );
            assert_eq!(s, 201, "seed {seed}: creating the collection of {id}: {v}");
            key
        })
        .collect();
    let mut clients: Vec<ClientModel> = (0..TENANTS * CLIENTS_PER_TENANT)
        .map(|c| ClientModel::new(c / CLIENTS_PER_TENANT, c % CLIENTS_PER_TENANT))
        .collect();
    let mut operator = OperatorModel::new();
    let shared = Shared::new();
    let mut master = Rng::new(seed);
    for round in 0..rounds {
        let failures = Failures::new(seed, round);
        let round_began = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let kill_after = Duration::from_millis(200 + master.below(2300) as u64);
        let kill_soon = master.below(20) as u64;
        let when = if round % 2 == 0 {
            format!("after {kill_after:?}")
        } else {
            format!("{kill_soon} ms after a migration's answer (at most {kill_after:?})")
        };
        let stop = AtomicBool::new(false);
        let url = server.url.clone();
        std::thread::scope(|s| {
            let _stop_on_panic = StopOnDrop(&stop);
            for c in clients.iter_mut() {
                let rng = Rng::new(master.next());
                let (url, keys, shared, stop, failures) = (&url, &keys, &shared, &stop, &failures);
                s.spawn(move || c.run(rng, url, &keys[c.tenant], shared, stop, failures));
            }
            let rng = Rng::new(master.next());
            let op = &mut operator;
            let (url, shared, stop, failures) = (&url, &shared, &stop, &failures);
            s.spawn(move || op.run(rng, round, url, shared, stop, failures));
            if round % 2 == 0 {
                std::thread::sleep(kill_after);
                check::no_recheck_drops(url, failures, "under the load, before the kill");
            } else {
                // Within a few milliseconds of a migration's answer: while it copies, flips
                // or rebuilds, so the restart has a move to resume or clean up.
                let deadline = Instant::now() + kill_after;
                let seen = shared.migrations.load(Ordering::SeqCst);
                while shared.migrations.load(Ordering::SeqCst) == seen && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis(kill_soon));
            }
            let killed = Command::new("kill")
                .args(["-KILL", &server.pid().to_string()])
                .status()
                .expect("kill");
            assert!(killed.success(), "seed {seed} round {round}: kill failed");
            assert!(
                server.wait_exit(Duration::from_secs(10)).is_some(),
                "seed {seed} round {round}: the server outlived SIGKILL"
            );
            // The threads stop at their first cut connection; the flag only ends loops that
            // are between requests.
            stop.store(true, Ordering::SeqCst);
        });
        failures.assert_none("during the load");
        server.restart();
        let ops: usize = clients.iter().map(|c| c.acknowledged_this_round()).sum();
        let tally = check::after_restart(
            &server,
            &keys,
            &mut clients,
            &mut operator,
            &shared,
            &failures,
            round_began,
        );
        check::no_recheck_drops(&server.url, &failures, "after the checks");
        let log = server.log();
        if let Some(line) = log.lines().find(|l| l.contains("panicked")) {
            failures.push(format!("the server log has a panic: {line}"));
        }
        failures.assert_none("after the restart");
        println!(
            "crash_mixed: seed {seed} round {round}: killed {when}, \
             {ops} acknowledged client operations, {} records, unanswered writes applied {} \
             and not {} ({} sent again), {} moves resumed or under way ({} cancelled), levels {:?}, operator {:?}: all checks \
             passed ({:?} so far)",
            tally.records,
            tally.unanswered_applied,
            tally.unanswered_not_applied,
            tally.retried,
            tally.moves_after_restart,
            tally.moves_cancelled,
            tally.levels,
            operator.acknowledged,
            started.elapsed()
        );
    }
    // The operator key is still the operator's after all the restarts.
    let (s, v) = server.get("/v1/admin/tenants", OPERATOR_KEY);
    assert_eq!(s, 200, "seed {seed}: {v}");
}
