//! Crash test: a child process writes batches and reports each acknowledgement; the parent kills
//! it with SIGKILL at random moments, reopens the data directory and checks that every
//! acknowledged batch is there in full and that no batch is there in part. Meanwhile the child
//! saves the tenant's search image over and over, so a kill between a write and the next save
//! must leave no stale index: after each restart every acknowledged write is searchable and
//! `verify` finds the loaded indexes equal to storage.
//!
//! Restarts alternate between redb's two ways back from a crash: in even rounds the child's
//! durable commits record the allocator state, which the reopen loads; in odd ones they do not,
//! and the reopen repairs the file by reading all of it. Each reopen must have taken the way
//! its round chose, and lose nothing either way.
//!
//! The child is this same test binary, re-run on the entry-point test below with
//! `STRATA_CRASH_CHILD_DIR` set. `STRATA_CRASH_KILLS` sets the number of kills (default 30).
//!
//! A write is acknowledged once its rows are synced in the row log, and the main file is made
//! durable only by checkpoints every few hundred milliseconds: most kills land after writes no
//! checkpoint has reached, which the restart must replay from the log (at least one restart of
//! each run must have).
//!
//! Run with one writer, and with eight concurrent writers spread over three tenants whose small
//! batches share fsyncs (group commit, across tenants and within one): a kill then lands while a
//! group is being committed or synced, and every write acknowledged from any writer of any
//! tenant must still be there. And with eight writers of eight tenants, whose writes share
//! storage transactions too (batched commits), some of which fail inside their transaction
//! (a record of the wrong dimension after good ones): a failed write must be absent after
//! every restart, and the writes batched with it present when acknowledged.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::json;
use strata_engine::{Engine, EngineConfig};
use strata_types::{NewRecord, RecordId, RequestScope};

const TENANT: &str = "crash-tenant";
const CHILD_ENV: &str = "STRATA_CRASH_CHILD_DIR";

/// The tenant that writer `writer` writes to, among `tenants`.
fn tenant_of(writer: u64, tenants: u64) -> String {
    match writer % tenants {
        0 => TENANT.to_owned(),
        n => format!("{TENANT}-{n}"),
    }
}

/// The engine on `dir` with `config`, with a scope of each of the first `tenants` tenants
/// (created if new).
fn open_tenants(
    dir: &std::path::Path,
    tenants: u64,
    config: EngineConfig,
) -> (Engine, Vec<strata_engine::TenantScope>) {
    let engine = Engine::open(dir, config).expect("open engine");
    let mut scopes = Vec::new();
    for t in 0..tenants {
        let id = strata_types::TenantId::parse(tenant_of(t, tenants)).expect("tenant id");
        if engine.tenant_meta(&id).is_err() {
            engine
                .create_tenant(&strata_auth::OperatorScope::for_tests(), &id, None)
                .expect("create tenant");
        }
        let meta = engine.tenant_meta(&id).expect("meta");
        scopes.push(strata_engine::TenantScope::for_tests(
            &meta,
            common::full_grant(),
        ));
    }
    (engine, scopes)
}

/// The file length from which the child of `round` records the allocator state in its durable
/// commits: every file in even rounds, none in odd ones, so that restarts alternate between
/// loading the recorded state and redb's full repair (and the test data, a few megabytes, is
/// far below the default length, so both paths are covered only this way).
fn fast_recovery_of(round: u64) -> u64 {
    // 1: every file; 0: none.
    u64::from(round.is_multiple_of(2))
}

/// Not a test of its own: the body of the child process, which does nothing unless the parent
/// test started it.
#[test]
fn crash_child_entry_point() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var("STRATA_CRASH_ROUND")
        .expect("round")
        .parse()
        .expect("round number");
    let writers: u64 = std::env::var("STRATA_CRASH_WRITERS")
        .expect("writers")
        .parse()
        .expect("writer count");
    let tenants: u64 = std::env::var("STRATA_CRASH_TENANTS")
        .expect("tenants")
        .parse()
        .expect("tenant count");
    let failing = std::env::var("STRATA_CRASH_FAILING").is_ok();
    let config = EngineConfig {
        fast_recovery_from_bytes: fast_recovery_of(round),
        ..EngineConfig::default()
    };
    let (engine, scopes) = open_tenants(dir.as_ref(), tenants, config);
    println!("READY");
    std::thread::scope(|s| {
        for writer in 0..writers {
            let (engine, scope) = (&engine, &scopes[(writer % tenants) as usize]);
            s.spawn(move || write_until_killed(engine, scope, round, writer, writers, failing));
        }
        // Keeps the tenants' indexes loaded and saves their search images and graph snapshots
        // again and again, so that kills land before, during and after a save, between a
        // write and the next save, and in the writers' pauses (when the image is current).
        let (engine, scopes) = (&engine, &scopes);
        s.spawn(move || {
            loop {
                for scope in scopes {
                    engine.index_stats(scope).expect("load");
                }
                engine.persist_indexes().expect("persist");
                std::thread::sleep(Duration::from_millis(3));
            }
        });
    });
}

/// Writes random batches forever, printing `ACK round writer batch size` after each `put`
/// returns. Alone, batches have 1 to 40 records; among concurrent writers, 1 to 4, so that
/// many small writes are in flight together. With `failing`, one batch in four ends with a
/// record whose vector has the wrong dimension, which fails the `put` inside its transaction
/// after the batch's other records were written there; it prints `FAIL round writer batch`.
fn write_until_killed(
    engine: &strata_engine::Engine,
    scope: &strata_engine::TenantScope,
    round: u64,
    writer: u64,
    writers: u64,
    failing: bool,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(round * 1000 + writer);
    let max = if writers == 1 { 40 } else { 4 };
    let stdout = std::io::stdout();
    for batch in 0u64.. {
        let size = rng.random_range(1..=max);
        let fails = failing && rng.random_range(0..4) == 0;
        let mut records: Vec<NewRecord> = (0..size)
            .map(|i| NewRecord {
                id: Some(RecordId::parse(format!("r{round}-w{writer}-b{batch}-{i}")).expect("id")),
                content: Some(format!(
                    "round {round} writer {writer} batch {batch} record {i} {}",
                    "x".repeat(150)
                )),
                vector: Some(common::vector(
                    384,
                    round * 100_000_000 + writer * 1_000_000 + batch * 100 + i,
                )),
                metadata: json!({"round": round, "writer": writer, "batch": batch, "size": size})
                    .as_object()
                    .cloned()
                    .expect("object"),
                ..Default::default()
            })
            .collect();
        if fails {
            let last = records.last_mut().expect("at least one record");
            last.vector = Some(common::vector(383, batch));
            let refused = engine.put(scope, &RequestScope::default(), records);
            assert!(
                refused.is_err(),
                "a record of the wrong dimension was stored"
            );
            let mut out = stdout.lock();
            writeln!(out, "FAIL {round} {writer} {batch}").expect("stdout");
            out.flush().expect("flush");
            continue;
        }
        engine
            .put(scope, &RequestScope::default(), records)
            .expect("put");
        let (batches, writes) = engine.write_batches();
        let mut out = stdout.lock();
        writeln!(out, "ACK {round} {writer} {batch} {size}").expect("stdout");
        writeln!(out, "BATCHES {batches} {writes}").expect("stdout");
        out.flush().expect("flush");
        drop(out);
        // Now and then a pause, long enough for a save to catch up with every write.
        if rng.random_range(0..8) == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn sigkill_never_loses_an_acknowledged_batch_nor_leaves_a_partial_one() {
    crash_rounds(1, 1, false);
}

/// Eight writers over three tenants: groups mix tenants, and writers of one tenant too.
#[test]
fn sigkill_during_group_commits_loses_no_acknowledged_write_of_any_writer() {
    crash_rounds(8, 3, false);
}

/// Eight writers of eight tenants, whose writes share storage transactions, some failing
/// inside them: every acknowledged write present, every failed one absent.
#[test]
fn sigkill_during_batched_commits_with_failing_writes_keeps_exactly_the_acknowledged() {
    crash_rounds(8, 8, true);
}

fn crash_rounds(writers: u64, tenants: u64, failing: bool) {
    let kills: u64 = std::env::var("STRATA_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = rand::random();
    println!("crash test: seed {seed}, {kills} kills, {writers} writers, {tenants} tenants");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    // Create the tenants once, outside any child, so children race only on record writes.
    drop(open_tenants(dir.path(), tenants, EngineConfig::default()));

    let mut acked: BTreeMap<(u64, u64, u64), u64> = BTreeMap::new();
    let mut failed: BTreeSet<(u64, u64, u64)> = BTreeSet::new();
    let mut from_image = 0;
    let mut total_acks = 0;
    // Restarts that brought acknowledged writes back from the row log.
    let mut replayed_restarts = 0;
    // Storage transactions the children's batched writes ran in, and writes they took (the
    // last report of each child: its counts since it started).
    let (mut batches, mut batched) = (0u64, 0u64);
    for round in 0..kills {
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .args([
                "crash_child_entry_point",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("STRATA_CRASH_ROUND", round.to_string())
            .env("STRATA_CRASH_WRITERS", writers.to_string())
            .env("STRATA_CRASH_TENANTS", tenants.to_string())
            .envs(failing.then_some(("STRATA_CRASH_FAILING", "1")))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the child is writing (libtest prints its own words before READY on the same
        // line), then let it run a random while before the kill.
        let started = Instant::now();
        while !rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child never became ready")
            .ends_with("READY")
        {}
        let delay = Duration::from_millis(rng.random_range(5..250));
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL");
        child.wait().expect("reap child");
        reader.join().expect("reader thread");
        let mut last_batches = (0, 0);
        for line in rx.try_iter() {
            if let Some(rest) = line.strip_prefix("BATCHES ") {
                let n: Vec<u64> = rest
                    .split(' ')
                    .map(|x| x.parse().expect("number"))
                    .collect();
                if let [b, w] = n[..] {
                    last_batches = (b, w);
                }
            } else if let Some(rest) = line.strip_prefix("ACK ") {
                let n: Vec<u64> = rest
                    .split(' ')
                    .map(|x| x.parse().expect("number"))
                    .collect();
                acked.insert((n[0], n[1], n[2]), n[3]);
                total_acks += 1;
            } else if let Some(rest) = line.strip_prefix("FAIL ") {
                let n: Vec<u64> = rest
                    .split(' ')
                    .map(|x| x.parse().expect("number"))
                    .collect();
                failed.insert((n[0], n[1], n[2]));
            }
        }

        batches += last_batches.0;
        batched += last_batches.1;

        // Reopen and check. The open after the kill repaired the file in full exactly when the
        // child's durable commits did not record the allocator state.
        let (engine, scopes) = open_tenants(dir.path(), tenants, EngineConfig::default());
        let opened = engine.storage_open_report();
        replayed_restarts += u64::from(engine.storage_log_entries_replayed() > 0);
        assert_eq!(
            opened.full_repair,
            fast_recovery_of(round) == 0,
            "round {round}: the open after the kill: {opened:?}"
        );
        let mut present: BTreeMap<(u64, u64, u64), (u64, BTreeSet<u64>)> = BTreeMap::new();
        let stored = scopes.iter().enumerate().flat_map(|(t, scope)| {
            common::all_records(&engine, scope, "default")
                .into_iter()
                .map(move |r| (t as u64, r))
        });
        for (t, r) in stored {
            let m = &r.metadata;
            let key = (
                m["round"].as_u64().expect("round"),
                m["writer"].as_u64().expect("writer"),
                m["batch"].as_u64().expect("batch"),
            );
            assert_eq!(
                t,
                key.1 % tenants,
                "round {round}: writer {}'s record is in another tenant",
                key.1
            );
            let i: u64 =
                r.id.as_str()
                    .rsplit('-')
                    .next()
                    .expect("index")
                    .parse()
                    .expect("index");
            let entry = present
                .entry(key)
                .or_insert((m["size"].as_u64().expect("size"), BTreeSet::new()));
            entry.1.insert(i);
        }
        for (key, size) in &acked {
            let got = present.get(key).map_or(0, |(_, ids)| ids.len() as u64);
            assert_eq!(
                got, *size,
                "round {round}: acknowledged batch {key:?} has {got} of {size} records"
            );
        }
        for key in &failed {
            assert!(
                !present.contains_key(key),
                "round {round}: the failed batch {key:?} left records behind"
            );
        }
        for (key, (size, ids)) in &present {
            assert_eq!(
                ids.len() as u64,
                *size,
                "round {round}: batch {key:?} is partial"
            );
        }
        // The operator's verification is clean after every crash: keys, usage counters, and
        // the indexes a search loads all agree with storage, in every tenant.
        let search = strata_types::SearchRequest {
            vector: Some(common::vector(384, round)),
            k: 5,
            ..Default::default()
        };
        let mut all_from_image = true;
        for scope in &scopes {
            engine
                .search(scope, &RequestScope::default(), &search)
                .expect("search");
            all_from_image &= engine
                .index_stats(scope)
                .expect("stats")
                .iter()
                .all(|s| s.loaded_from_image);
        }
        from_image += u64::from(all_from_image);
        // Every acknowledged write is searchable, whichever way the indexes were loaded (from
        // a current search image, or rebuilt from the records when the image was stale): the
        // first record of each writer's last acknowledged batch is its own vector's top hit
        // among its batch, in its writer's tenant.
        let last: BTreeMap<(u64, u64), u64> =
            acked.keys().map(|(r, w, b)| ((*r, *w), *b)).collect();
        for ((r, w), b) in last {
            let id = format!("r{r}-w{w}-b{b}-0");
            let search = strata_types::SearchRequest {
                vector: Some(common::vector(
                    384,
                    r * 100_000_000 + w * 1_000_000 + b * 100,
                )),
                k: 1,
                // The batch's own records: an exact scan, so the answer does not depend on the
                // graph's recall over random vectors.
                filter: Some(
                    strata_types::Filter::parse(&json!({"round": r, "writer": w, "batch": b}))
                        .expect("filter"),
                ),
                ..Default::default()
            };
            let hits = engine
                .search(
                    &scopes[(w % tenants) as usize],
                    &RequestScope::default(),
                    &search,
                )
                .expect("search")
                .hits;
            assert_eq!(
                hits.first().map(|h| h.id.as_str()),
                Some(id.as_str()),
                "round {round}: acknowledged {id} not found by search (indexes from the image: \
                 {all_from_image})"
            );
        }
        for t in 0..tenants {
            let report = engine
                .verify_tenant(
                    &strata_auth::OperatorScope::for_tests(),
                    &strata_types::TenantId::parse(tenant_of(t, tenants)).expect("id"),
                )
                .expect("verify");
            assert!(
                report.ok && report.indexes_loaded,
                "round {round}: verify of tenant {t} after restart: {report:?}"
            );
        }
        println!(
            "round {round}: killed after {:?}, {} batches acknowledged so far, {} present",
            started.elapsed(),
            acked.len(),
            present.len()
        );
    }
    println!("restarts that loaded every tenant from its search image: {from_image} of {kills}");
    println!("restarts that replayed writes from the row log: {replayed_restarts} of {kills}");
    assert!(
        replayed_restarts > 0,
        "no kill landed between a write and the next checkpoint: the row log was not tested"
    );
    assert!(
        total_acks >= kills,
        "children acknowledged too little to test anything ({total_acks})"
    );
    println!("batched writes: {batched} in {batches} transactions");
    if writers > 1 {
        assert!(
            batched > batches,
            "concurrent writers never shared a transaction ({batched} writes in {batches})"
        );
    }
    if failing {
        println!("failed writes reported: {}", failed.len());
        assert!(
            !failed.is_empty(),
            "no write failed: the test tested nothing"
        );
    }
}
