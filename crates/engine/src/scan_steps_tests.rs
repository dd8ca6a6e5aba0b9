//! Counts, listings and deletes by filter in steps (`crate::scan_steps`, `crate::delete_steps`)
//! against a simple model of the tenant, over random records, filters, request scopes
//! (principals, domain, run) and step sizes: a stepped answer is the one-call answer, whatever
//! the step size; a step reads no more than its budget; one snapshot serves every step until a
//! vacuum or its age renews it; a delete checks each record again in the transaction that
//! deletes it.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use strata_auth::{OperatorScope, TenantScope};
use strata_types::{
    CollectionName, Domain, Filter, Metric, NewRecord, RecordId, RecordPatch, RequestScope, RunId,
    TenantId, TokenSelector, UserToken,
};

use crate::scan::{Page, ScanPage, Vectors};
use crate::scan_steps::{StepSize, Stepped};
use crate::{Engine, EngineConfig, EngineError, PendingDelete};

/// A record as the model sees it.
#[derive(Debug, Clone)]
struct Modelled {
    id: String,
    n: i64,
    g: &'static str,
    tokens: Vec<&'static str>,
    /// Its memory domain; `None` the default one.
    domain: Option<&'static str>,
    run: Option<&'static str>,
}

/// The domains and runs of a tenant made with scopes ([`scoped_tenant`]).
const DOMAINS: [Option<&str>; 2] = [None, Some("d2")];
const RUNS: [Option<&str>; 3] = [None, Some("run1"), Some("run2")];

const GROUPS: [&str; 3] = ["a", "b", "c"];
const TOKEN_SETS: [&[&str]; 4] = [&[], &["u:a"], &["u:b"], &["u:a", "u:b"]];

/// A request's principals: every one, some, or none (tenant-shared records only).
#[derive(Debug, Clone)]
enum Principals {
    All,
    Some(Vec<&'static str>),
}

impl Principals {
    fn request(&self) -> RequestScope {
        RequestScope {
            user_tokens: match self {
                Principals::All => Some(TokenSelector::AllPrincipals),
                Principals::Some(t) if t.is_empty() => None,
                Principals::Some(t) => Some(TokenSelector::Tokens(
                    t.iter().map(|t| UserToken::parse(*t).unwrap()).collect(),
                )),
            },
            ..Default::default()
        }
    }

    fn sees(&self, r: &Modelled) -> bool {
        match self {
            Principals::All => true,
            Principals::Some(t) => r.tokens.is_empty() || r.tokens.iter().any(|x| t.contains(x)),
        }
    }
}

/// A request's scope: its principals, domain and run.
#[derive(Debug, Clone)]
struct Who {
    principals: Principals,
    domain: Option<&'static str>,
    run: Option<&'static str>,
}

impl Who {
    fn request(&self) -> RequestScope {
        RequestScope {
            memory_domain: self.domain.map(|d| Domain::parse(d).unwrap()),
            run_id: self.run.map(|r| RunId::parse(r).unwrap()),
            ..self.principals.request()
        }
    }

    fn sees(&self, r: &Modelled) -> bool {
        self.principals.sees(r)
            && r.domain == self.domain
            && self.run.is_none_or(|run| r.run == Some(run))
    }
}

/// A filter and what it means to the model.
#[derive(Debug, Clone)]
enum Shape {
    None,
    NEq(i64),
    NBelow(i64),
    GroupOrN(&'static str, i64),
    GroupIn(&'static str, &'static str),
    /// Many clauses, one of which can match: a heavy filter.
    ManyN(i64),
}

impl Shape {
    fn random(rng: &mut StdRng) -> Shape {
        let n = rng.random_range(0..7);
        let g = GROUPS[rng.random_range(0..3)];
        match rng.random_range(0..6) {
            0 => Shape::None,
            1 => Shape::NEq(n),
            2 => Shape::NBelow(n),
            3 => Shape::GroupOrN(g, n),
            4 => Shape::GroupIn(g, GROUPS[rng.random_range(0..3)]),
            _ => Shape::ManyN(n),
        }
    }

    fn filter(&self) -> Option<Filter> {
        let v = match self {
            Shape::None => return None,
            Shape::NEq(n) => json!({"n": n}),
            Shape::NBelow(n) => json!({"n": {"$lt": n}}),
            Shape::GroupOrN(g, n) => json!({"$or": [{"g": g}, {"n": n}]}),
            Shape::GroupIn(a, b) => json!({"g": {"$in": [a, b]}}),
            Shape::ManyN(n) => {
                // On 200 paths, so the parser cannot join them into one `$in`.
                let mut any: Vec<Value> = (0..200).map(|i| json!({format!("m{i}"): i})).collect();
                any.push(json!({"n": n}));
                json!({"$or": any})
            }
        };
        Some(Filter::parse(&v).unwrap())
    }

    fn matches(&self, r: &Modelled) -> bool {
        match self {
            Shape::None => true,
            Shape::NEq(n) | Shape::ManyN(n) => r.n == *n,
            Shape::NBelow(n) => r.n < *n,
            Shape::GroupOrN(g, n) => r.g == *g || r.n == *n,
            Shape::GroupIn(a, b) => r.g == *a || r.g == *b,
        }
    }
}

fn c() -> CollectionName {
    CollectionName::parse("c").unwrap()
}

fn everyone() -> RequestScope {
    Principals::All.request()
}

/// Tenant `acme` holding `n` random records in collection `c`, all in the default domain and
/// in no run, and the model of them.
fn tenant(dir: &std::path::Path, n: usize, seed: u64) -> (Engine, TenantScope, Vec<Modelled>) {
    make_tenant(dir, n, seed, false)
}

/// [`tenant`], its records spread over [`DOMAINS`] and [`RUNS`] at random.
fn scoped_tenant(
    dir: &std::path::Path,
    n: usize,
    seed: u64,
) -> (Engine, TenantScope, Vec<Modelled>) {
    make_tenant(dir, n, seed, true)
}

fn make_tenant(
    dir: &std::path::Path,
    n: usize,
    seed: u64,
    scoped: bool,
) -> (Engine, TenantScope, Vec<Modelled>) {
    let engine = Engine::open(dir, EngineConfig::default()).unwrap();
    let scope = crate::test_support::created_tenant(&engine, "acme");
    engine
        .create_collection(&scope, &c(), 2, Metric::L2)
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let model: Vec<Modelled> = (0..n)
        .map(|i| Modelled {
            id: format!("r{i:05}"),
            n: rng.random_range(0..7),
            g: GROUPS[rng.random_range(0..3)],
            tokens: TOKEN_SETS[rng.random_range(0..4)].to_vec(),
            domain: scoped.then(|| DOMAINS[rng.random_range(0..2)]).flatten(),
            run: scoped.then(|| RUNS[rng.random_range(0..3)]).flatten(),
        })
        .collect();
    for domain in DOMAINS {
        let req = in_domain(domain);
        let here: Vec<&Modelled> = model.iter().filter(|m| m.domain == domain).collect();
        for part in here.chunks(500) {
            let records = part.iter().map(|m| new_record(m)).collect();
            engine.put(&scope, &req, records).unwrap();
        }
    }
    (engine, scope, model)
}

fn new_record(m: &Modelled) -> NewRecord {
    NewRecord {
        id: Some(RecordId::parse(m.id.as_str()).unwrap()),
        modality: Some(c()),
        vector: Some(vec![0.5, 0.5]),
        metadata: serde_json::from_value(json!({"n": m.n, "g": m.g})).unwrap(),
        run_id: m.run.map(|r| RunId::parse(r).unwrap()),
        user_tokens: Some(
            m.tokens
                .iter()
                .map(|t| UserToken::parse(*t).unwrap())
                .collect(),
        ),
        ..Default::default()
    }
}

fn size(reads: u64) -> StepSize {
    // Tests bound steps by reads alone: no step ends early on a busy machine.
    StepSize {
        reads,
        time: Duration::from_secs(3600),
    }
}

/// A count run step by step; with the reads of each step.
fn count_in_steps(
    e: &Engine,
    scope: &TenantScope,
    req: &RequestScope,
    filter: Option<Filter>,
    reads: u64,
) -> (u64, Vec<u64>) {
    let mut pending = e.begin_count(scope, req, filter).unwrap();
    pending.cursor.size = size(reads);
    let mut steps = Vec::new();
    loop {
        match e.count_step(pending).unwrap() {
            Stepped::Done(n) => return (n, steps),
            Stepped::More(p) => {
                steps.push(p.cursor.last_reads);
                pending = *p;
            }
        }
    }
}

fn page_in_steps(
    e: &Engine,
    scope: &TenantScope,
    req: &RequestScope,
    filter: Option<Filter>,
    page: Page,
    reads: u64,
) -> ScanPage {
    let mut pending = e
        .begin_page(scope, req, filter, page, Vectors::Skip)
        .unwrap();
    pending.cursor.size = size(reads);
    loop {
        match e.page_step(pending).unwrap() {
            Stepped::Done(page) => return page,
            Stepped::More(p) => pending = *p,
        }
    }
}

/// Every page of a listing, in order, each listed step by step.
fn list_all(
    e: &Engine,
    scope: &TenantScope,
    req: &RequestScope,
    filter: Option<&Filter>,
    limit: usize,
    reads: u64,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = Page { after, limit };
        let got = page_in_steps(e, scope, req, filter.cloned(), page, reads);
        pages.push(got.records.iter().map(|r| r.id.to_string()).collect());
        match got.next {
            Some(next) => after = Some(next),
            None => return pages,
        }
    }
}

fn begin_delete(
    e: &Engine,
    scope: &TenantScope,
    req: &RequestScope,
    filter: Filter,
    reads: u64,
    chunk: usize,
) -> PendingDelete {
    let mut pending = e.begin_delete_where(scope, req, filter).unwrap();
    pending.cursor_mut().unwrap().size = size(reads);
    pending.chunk = chunk;
    pending
}

fn finish_delete(e: &Engine, mut pending: PendingDelete) -> Result<u64, EngineError> {
    loop {
        match e.delete_where_step(pending)? {
            Stepped::Done(n) => return Ok(n),
            Stepped::More(p) => pending = *p,
        }
    }
}

fn random_who(rng: &mut StdRng) -> Who {
    let principals = match rng.random_range(0..4) {
        0 => Principals::All,
        i => Principals::Some(TOKEN_SETS[i - 1].to_vec()),
    };
    Who {
        principals,
        domain: DOMAINS[rng.random_range(0..2)],
        run: RUNS[rng.random_range(0..3)],
    }
}

/// Every principal's records in `domain` (`None`: the default one), any run.
fn in_domain(domain: Option<&'static str>) -> RequestScope {
    Who {
        principals: Principals::All,
        domain,
        run: None,
    }
    .request()
}

/// Every record of the tenant, in id order.
fn all_ids(e: &Engine, scope: &TenantScope) -> Vec<String> {
    let mut ids: Vec<String> = DOMAINS
        .into_iter()
        .flat_map(|d| list_all(e, scope, &in_domain(d), None, 1000, 1 << 20).concat())
        .collect();
    ids.sort();
    ids
}

#[test]
fn stepped_counts_and_listings_are_the_one_call_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, model) = scoped_tenant(dir.path(), 400, 7);
    let mut rng = StdRng::seed_from_u64(11);
    for case in 0..60 {
        let who = random_who(&mut rng);
        let shape = Shape::random(&mut rng);
        let reads = [1, 2, 3, 7, 50, 100_000][rng.random_range(0..6)];
        let limit = [1, 3, 7, 64, 1000][rng.random_range(0..5)];
        let ctx = format!("case {case}: {who:?} {shape:?} reads {reads} limit {limit}");
        let req = who.request();
        let filter = shape.filter();
        let expected: Vec<String> = model
            .iter()
            .filter(|r| who.sees(r) && shape.matches(r))
            .map(|r| r.id.clone())
            .collect();

        let (n, _) = count_in_steps(&engine, &scope, &req, filter.clone(), reads);
        assert_eq!(n, expected.len() as u64, "{ctx}");
        assert_eq!(
            engine.count(&scope, &req, filter.as_ref()).unwrap(),
            n,
            "{ctx}"
        );

        let pages = list_all(&engine, &scope, &req, filter.as_ref(), limit, reads);
        let whole = list_all(&engine, &scope, &req, filter.as_ref(), limit, 1 << 20);
        assert_eq!(pages, whole, "{ctx}: pages as one step lists them");
        assert_eq!(pages.concat(), expected, "{ctx}");
        let full = pages.iter().filter(|p| p.len() == limit).count();
        assert!(
            full + 1 >= pages.len(),
            "{ctx}: only the last page is short"
        );
    }
}

#[test]
fn stepped_deletes_by_filter_delete_what_the_model_says() {
    let mut rng = StdRng::seed_from_u64(23);
    for case in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let (engine, scope, model) = scoped_tenant(dir.path(), 150, case);
        let who = random_who(&mut rng);
        let shape = match Shape::random(&mut rng) {
            Shape::None => Shape::NBelow(3),
            s => s,
        };
        let reads = [1, 3, 10, 100_000][rng.random_range(0..4)];
        let chunk = [1, 4, 1000][rng.random_range(0..3)];
        let ctx = format!("case {case}: {who:?} {shape:?} reads {reads} chunk {chunk}");
        let doomed: BTreeSet<String> = model
            .iter()
            .filter(|r| who.sees(r) && shape.matches(r))
            .map(|r| r.id.clone())
            .collect();
        let pending = begin_delete(
            &engine,
            &scope,
            &who.request(),
            shape.filter().unwrap(),
            reads,
            chunk,
        );
        assert_eq!(
            finish_delete(&engine, pending).unwrap(),
            doomed.len() as u64,
            "{ctx}"
        );
        let left: Vec<String> = model
            .iter()
            .map(|r| r.id.clone())
            .filter(|id| !doomed.contains(id))
            .collect();
        assert_eq!(all_ids(&engine, &scope), left, "{ctx}");
    }
}

#[test]
fn a_step_reads_no_more_than_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, model) = tenant(dir.path(), 200, 3);
    let (n, steps) = count_in_steps(&engine, &scope, &everyone(), None, 5);
    assert_eq!(n, model.len() as u64);
    // 40 steps of 5 candidates; the 41st finds none left and ends the count.
    assert_eq!(steps.len(), 40);
    assert!(steps.iter().all(|&r| r == 5), "{steps:?}");
    // A filter of 202 clauses and combinators weighs each candidate: 64 reads' budget
    // (32 clause checks each) covers 9 of them.
    let heavy = Shape::ManyN(2);
    let (n, steps) = count_in_steps(&engine, &scope, &everyone(), heavy.filter(), 64);
    let expected = model.iter().filter(|r| heavy.matches(r)).count();
    assert_eq!(n, expected as u64);
    assert_eq!(steps.len(), 22, "22 steps of 9, then the last 2");
    assert!(steps.iter().all(|&r| r == 9), "{steps:?}");
}

#[test]
fn every_step_of_a_scan_reads_the_snapshot_it_began_on() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, model) = tenant(dir.path(), 100, 5);
    let mut pending = engine.begin_count(&scope, &everyone(), None).unwrap();
    pending.cursor.size = size(10);
    let Stepped::More(pending) = engine.count_step(pending).unwrap() else {
        panic!("100 records take more than one step of 10");
    };
    // Written and deleted between steps: neither is seen by the count under way.
    let later = Modelled {
        id: "r99999".into(),
        n: 1,
        g: "a",
        tokens: vec![],
        domain: None,
        run: None,
    };
    engine
        .put(&scope, &everyone(), vec![new_record(&later)])
        .unwrap();
    let last = RecordId::parse(model[99].id.as_str()).unwrap();
    engine.delete(&scope, &everyone(), &last).unwrap();
    let mut pending = *pending;
    let n = loop {
        match engine.count_step(pending).unwrap() {
            Stepped::Done(n) => break n,
            Stepped::More(p) => pending = *p,
        }
    };
    assert_eq!(n, 100);
    assert_eq!(engine.count(&scope, &everyone(), None).unwrap(), 100);
}

#[test]
fn a_scan_stops_at_its_next_step_once_its_tenant_is_suspended() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, _) = tenant(dir.path(), 50, 9);
    let mut pending = engine.begin_count(&scope, &everyone(), None).unwrap();
    pending.cursor.size = size(10);
    let Stepped::More(pending) = engine.count_step(pending).unwrap() else {
        panic!("50 records take more than one step of 10");
    };
    let id = TenantId::parse("acme").unwrap();
    engine
        .suspend_tenant(&OperatorScope::for_tests(), &id)
        .unwrap();
    let stopped = engine.count_step(*pending).map(|_| ()).unwrap_err();
    assert!(
        matches!(stopped, EngineError::TenantSuspended(_)),
        "{stopped:?}"
    );
}

#[test]
fn a_delete_by_filter_checks_each_record_again_when_it_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, model) = tenant(dir.path(), 120, 13);
    let in_a: Vec<&Modelled> = model.iter().filter(|r| r.g == "a").collect();
    assert!(in_a.len() > 10);
    let filter = Filter::parse(&json!({"g": "a"})).unwrap();
    let mut pending = begin_delete(&engine, &scope, &everyone(), filter, 7, 4);
    while !pending.writes_next() {
        match engine.delete_where_step(pending).unwrap() {
            Stepped::More(p) => pending = *p,
            Stepped::Done(n) => panic!("the scan found {n} records to delete, and deleted them"),
        }
    }
    // Between the scan and the deletes: one match changed to stop matching, one deleted
    // already, one new record that matches.
    let changed = RecordId::parse(in_a[0].id.as_str()).unwrap();
    let patch: RecordPatch = serde_json::from_value(json!({"metadata": {"g": "b"}})).unwrap();
    engine.patch(&scope, &everyone(), &changed, patch).unwrap();
    let gone = RecordId::parse(in_a[1].id.as_str()).unwrap();
    engine.delete(&scope, &everyone(), &gone).unwrap();
    let later = Modelled {
        id: "r99999".into(),
        n: 0,
        g: "a",
        tokens: vec![],
        domain: None,
        run: None,
    };
    engine
        .put(&scope, &everyone(), vec![new_record(&later)])
        .unwrap();

    assert_eq!(
        finish_delete(&engine, pending).unwrap(),
        in_a.len() as u64 - 2
    );
    let left = all_ids(&engine, &scope);
    assert!(
        left.contains(&changed.to_string()),
        "no longer matching: kept"
    );
    assert!(
        left.contains(&later.id),
        "written after the scan began: kept"
    );
    let expected = model.len() - in_a.len() + 2;
    assert_eq!(left.len(), expected);
}

#[test]
fn stepped_operations_can_move_between_pool_threads() {
    fn movable<T: Send + 'static>() {}
    movable::<crate::PendingCount>();
    movable::<crate::PendingPage>();
    movable::<PendingDelete>();
}

#[test]
fn a_delete_by_filter_that_matches_nothing_still_leaves_its_audit_row() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, _) = tenant(dir.path(), 20, 17);
    let rows = |e: &Engine| {
        e.own_audit_rows(&scope, &crate::audit::AuditQuery::default())
            .unwrap()
            .into_iter()
            .filter(|r| r.action == "memory.delete_where")
            .count()
    };
    let nothing = Filter::parse(&json!({"g": "nowhere"})).unwrap();
    assert_eq!(
        engine.delete_where(&scope, &everyone(), &nothing).unwrap(),
        0
    );
    assert_eq!(rows(&engine), 1);
}

/// Runs a count's steps to its end; with how many fresh snapshots its last step had taken.
fn finish_count(e: &Engine, mut pending: crate::PendingCount) -> (u64, u64) {
    loop {
        let renewed = pending.cursor.kept.renewed;
        match e.count_step(pending).unwrap() {
            // A last step that renewed its snapshot is not seen here; the tests renew earlier.
            Stepped::Done(n) => return (n, renewed),
            Stepped::More(p) => pending = *p,
        }
    }
}

#[test]
fn a_scan_takes_a_fresh_snapshot_once_the_main_file_was_vacuumed() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, _) = tenant(dir.path(), 100, 21);
    let mut pending = engine.begin_count(&scope, &everyone(), None).unwrap();
    pending.cursor.size = size(10);
    let Stepped::More(pending) = engine.count_step(pending).unwrap() else {
        panic!("100 records take more than one step of 10");
    };
    assert_eq!(pending.cursor.kept.renewed, 0);
    // The vacuum a purge runs: the snapshot under way reads the replaced file from now on.
    let before = engine.vacuums();
    engine.vacuum().unwrap();
    assert_eq!(engine.vacuums(), before + 1);
    let Stepped::More(pending) = engine.count_step(*pending).unwrap() else {
        panic!("80 records left");
    };
    assert_eq!(
        pending.cursor.kept.renewed, 1,
        "the step after the vacuum renews"
    );
    let (n, renewed) = finish_count(&engine, *pending);
    assert_eq!(renewed, 1, "once only");
    assert_eq!(n, 100, "every record seen once across the two snapshots");
}

#[test]
fn a_scan_takes_a_fresh_snapshot_once_its_snapshot_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, model) = tenant(dir.path(), 100, 23);
    let filter = Shape::NBelow(3);
    let expected = model.iter().filter(|r| filter.matches(r)).count() as u64;
    let mut pending = engine
        .begin_count(&scope, &everyone(), filter.filter())
        .unwrap();
    pending.cursor.size = size(10);
    pending.cursor.kept.max_age = Duration::ZERO;
    let (n, renewed) = finish_count(&engine, pending);
    assert_eq!(n, expected);
    assert!(
        renewed >= 9,
        "every step renews an expired snapshot: {renewed}"
    );
}

/// Scans `pending` until its next step deletes.
fn scan_for_delete(e: &Engine, mut pending: PendingDelete) -> PendingDelete {
    while !pending.writes_next() {
        match e.delete_where_step(pending).unwrap() {
            Stepped::More(p) => pending = *p,
            Stepped::Done(n) => panic!("the scan found {n} records to delete, and deleted them"),
        }
    }
    pending
}

#[test]
fn a_record_written_again_after_a_delete_by_filter_began_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, model) = tenant(dir.path(), 120, 25);
    let in_a: Vec<&Modelled> = model.iter().filter(|r| r.g == "a").collect();
    assert!(in_a.len() > 10);
    let filter = Filter::parse(&json!({"g": "a"})).unwrap();
    let pending = scan_for_delete(
        &engine,
        begin_delete(&engine, &scope, &everyone(), filter, 7, 4),
    );
    // Written in a later millisecond than the request began, and still matching: one
    // replaced by a put with its id, one patched.
    std::thread::sleep(Duration::from_millis(3));
    engine
        .put(&scope, &everyone(), vec![new_record(in_a[0])])
        .unwrap();
    let patched = RecordId::parse(in_a[1].id.as_str()).unwrap();
    let patch: RecordPatch =
        serde_json::from_value(json!({"metadata": {"g": "a", "note": "kept"}})).unwrap();
    engine.patch(&scope, &everyone(), &patched, patch).unwrap();

    assert_eq!(
        finish_delete(&engine, pending).unwrap(),
        in_a.len() as u64 - 2
    );
    let left = all_ids(&engine, &scope);
    assert!(left.contains(&in_a[0].id), "replaced after the start: kept");
    assert!(left.contains(&in_a[1].id), "patched after the start: kept");
    assert_eq!(left.len(), model.len() - in_a.len() + 2);
}

#[test]
fn a_delete_by_filter_rechecks_visibility_when_it_deletes_and_takes_what_expired_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, model) = tenant(dir.path(), 120, 27);
    // A credential bound to user token u:a: it deletes the records bearing u:a alone (a
    // tenant-shared one, or one co-owned with u:b, it sees but may not write).
    let grant = strata_auth::Grant {
        permissions: strata_auth::Permissions::read_write(),
        user_tokens: Some(vec![UserToken::parse("u:a").unwrap()]),
        domains: None,
    };
    let meta = engine
        .tenant_meta(&TenantId::parse("acme").unwrap())
        .unwrap();
    let bound_scope = TenantScope::for_tests(&meta, grant);
    let mine: Vec<&Modelled> = model.iter().filter(|r| r.tokens == ["u:a"]).collect();
    assert!(mine.len() > 10);
    let filter = Filter::parse(&json!({"n": {"$gte": 0}})).unwrap();
    let mut pending = scan_for_delete(
        &engine,
        begin_delete(
            &engine,
            &bound_scope,
            &RequestScope::default(),
            filter,
            7,
            4,
        ),
    );
    // The written-since check is set aside: this test is about the other ones.
    pending.started = i64::MAX;
    // Between the scan and the deletes: one match given to another principal alone, one
    // given an expiry that passes before the delete.
    let moved = RecordId::parse(mine[0].id.as_str()).unwrap();
    let to_b: RecordPatch = serde_json::from_value(json!({"user_tokens": ["u:b"]})).unwrap();
    engine.patch(&scope, &everyone(), &moved, to_b).unwrap();
    let expiring = RecordId::parse(mine[1].id.as_str()).unwrap();
    let soon = strata_types::now_millis() + 300;
    let expiry: RecordPatch = serde_json::from_value(json!({"expires_at": soon})).unwrap();
    engine
        .patch(&scope, &everyone(), &expiring, expiry)
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));

    assert_eq!(
        finish_delete(&engine, pending).unwrap(),
        mine.len() as u64 - 1,
        "the record out of sight is not counted; the expired one, still the credential's, is"
    );
    let left = all_ids(&engine, &scope);
    assert!(left.contains(&mine[0].id), "now another principal's: kept");
    let stored = engine.store.read().unwrap();
    let gone = strata_store::Reads::stored_record(&stored, scope.key(), &expiring).unwrap();
    assert!(
        gone.is_none(),
        "expired, and deleted: not left on disk for the sweep"
    );
    drop(stored);
    for r in &model {
        let kept = left.contains(&r.id);
        if r.tokens != ["u:a"] {
            assert!(kept, "{} is not the credential's to write", r.id);
        } else if r.id != mine[0].id {
            assert!(!kept, "{} was the credential's: deleted", r.id);
        }
    }
}

#[test]
fn each_chunk_of_a_delete_by_filter_names_its_chunk_and_count_in_its_audit_row() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, model) = tenant(dir.path(), 60, 29);
    let in_a = model.iter().filter(|r| r.g == "a").count();
    let filter = Filter::parse(&json!({"g": "a"})).unwrap();
    let pending = begin_delete(&engine, &scope, &everyone(), filter, 1 << 20, 5);
    assert_eq!(finish_delete(&engine, pending).unwrap(), in_a as u64);
    let rows: Vec<Value> = engine
        .own_audit_rows(&scope, &crate::audit::AuditQuery::default())
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "memory.delete_where")
        .map(|r| r.detail)
        .collect();
    assert_eq!(rows.len(), in_a.div_ceil(5));
    let mut chunks: Vec<u64> = rows.iter().map(|d| d["chunk"].as_u64().unwrap()).collect();
    chunks.sort();
    assert_eq!(chunks, (0..rows.len() as u64).collect::<Vec<_>>());
    let removed: u64 = rows.iter().map(|d| d["removed"].as_u64().unwrap()).sum();
    assert_eq!(removed, in_a as u64);
}

#[test]
fn a_delete_chunk_ends_once_its_records_links_reach_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, model) = tenant(dir.path(), 40, 31);
    let in_a: Vec<&Modelled> = model.iter().filter(|r| r.g == "a").collect();
    assert!(in_a.len() > 6);
    // The first match carries three links, the others none.
    let hub = in_a[0].id.as_str();
    let links = model
        .iter()
        .filter(|r| r.id != hub)
        .take(3)
        .map(|r| serde_json::from_value(json!({"source": hub, "target": r.id})).unwrap());
    engine
        .link_batch(&scope, &everyone(), links.collect())
        .unwrap();
    let filter = Filter::parse(&json!({"g": "a"})).unwrap();
    let mut pending = begin_delete(&engine, &scope, &everyone(), filter, 1 << 20, 1000);
    pending.chunk_links = 2;
    assert_eq!(finish_delete(&engine, pending).unwrap(), in_a.len() as u64);
    let chunks: Vec<Value> = engine
        .own_audit_rows(&scope, &crate::audit::AuditQuery::default())
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "memory.delete_where")
        .map(|r| r.detail)
        .collect();
    // The hub's chunk ended after it; the rest went in one more.
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    let mut removed: Vec<u64> = chunks
        .iter()
        .map(|d| d["removed"].as_u64().unwrap())
        .collect();
    removed.sort();
    assert_eq!(removed, vec![1, in_a.len() as u64 - 1]);
    assert_eq!(all_ids(&engine, &scope).len(), model.len() - in_a.len());
}

/// Every page of a listing whose pages `admit` cuts short, each listed step by step, with
/// what `admit` was asked (the record's id, and whether it was the page's first).
fn list_admitting(
    e: &Engine,
    scope: &TenantScope,
    req: &RequestScope,
    limit: usize,
    reads: u64,
    admit: &mut dyn FnMut(&mut strata_types::Record, bool) -> bool,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = Page { after, limit };
        let mut pending = e.begin_page(scope, req, None, page, Vectors::Skip).unwrap();
        pending.cursor.size = size(reads);
        let got = loop {
            match e.page_step_admitting(pending, admit).unwrap() {
                Stepped::Done(page) => break page,
                Stepped::More(p) => pending = *p,
            }
        };
        pages.push(got.records.iter().map(|r| r.id.to_string()).collect());
        match got.next {
            Some(next) => after = Some(next),
            None => return pages,
        }
    }
}

/// A page that `admit` ends early (as the answer budget does once a page's records pass its
/// reservation) comes back shorter with a `next`, and paging on yields every record exactly
/// once, in order, whatever the step size; a page always holds at least its first record,
/// even one `admit` refuses.
#[test]
fn pages_cut_short_by_admit_list_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, model) = tenant(dir.path(), 300, 5);
    let req = everyone();
    let mut expected: Vec<String> = model.iter().map(|r| r.id.clone()).collect();
    expected.sort();
    let mut rng = StdRng::seed_from_u64(3);
    for case in 0..12 {
        let reads = [1, 3, 50, 100_000][case % 4];
        let limit = [7, 64, 1000][case % 3];
        // A page holds records while their made-up "sizes" fit a budget; a record refused
        // ends its page and is asked again first on the next.
        let budget: u64 = [1, 5, 40][case % 3];
        let mut used = 0u64;
        let mut asked_first = 0usize;
        let mut admit = |_: &mut strata_types::Record, first: bool| {
            let size = rng.random_range(1..=10u64);
            if first {
                asked_first += 1;
                used = 0;
            }
            if first || used + size <= budget {
                used += size;
                true
            } else {
                false
            }
        };
        let pages = list_admitting(&engine, &scope, &req, limit, reads, &mut admit);
        let ctx = format!("case {case}: reads {reads} limit {limit} budget {budget}");
        assert_eq!(
            pages.concat(),
            expected,
            "{ctx}: every record once, in order"
        );
        assert!(pages.iter().all(|p| p.len() <= limit), "{ctx}");
        let nonempty = pages.iter().filter(|p| !p.is_empty()).count();
        assert!(
            nonempty + 1 >= pages.len(),
            "{ctx}: only the last page may be empty"
        );
        assert_eq!(
            asked_first, nonempty,
            "{ctx}: each page's first record was asked"
        );
        if budget == 1 {
            assert!(
                pages.iter().all(|p| p.len() <= 1),
                "{ctx}: one record a page"
            );
            assert_eq!(nonempty, expected.len(), "{ctx}");
        }
    }
    // An `admit` that refuses everything still moves on, a record a page.
    let pages = list_admitting(&engine, &scope, &req, 1000, 100_000, &mut |_, _| false);
    assert_eq!(pages.concat(), expected);
    assert!(pages.iter().all(|p| p.len() <= 1));
}
