//! Searches that ask for ids and scores only (`include: []`) name their hits from the index's
//! resident state without reading records (`crate::hits`). They must answer exactly what a
//! search reading every record answers: never a record deleted, moved out of the caller's
//! sight or expired by a write that returned before the search began, and never fewer than k.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;
use strata_auth::TenantScope;
use strata_engine::Engine;
use strata_types::*;

const DIM: usize = 16;

fn req() -> RequestScope {
    RequestScope::default()
}

fn vec_name() -> CollectionName {
    CollectionName::parse("vec").unwrap()
}

/// A tenant with `n` tenant-shared records `r<i>` in collection `vec`, record `i` at distance
/// growing with `i` from [`query`], with metadata `n = i` and content `note <i>`.
fn loaded(n: usize) -> (tempfile::TempDir, Engine, TenantScope) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    engine
        .create_collection(&scope, &vec_name(), DIM as u32, Metric::L2)
        .unwrap();
    let records = (0..n)
        .map(|i| {
            let mut v = query();
            v[1] = i as f32 * 0.01;
            NewRecord {
                id: Some(RecordId::parse(format!("r{i}")).unwrap()),
                modality: Some(vec_name()),
                vector: Some(v),
                content: Some(format!("note {i}")),
                metadata: json!({"n": i}).as_object().cloned().unwrap(),
                ..Default::default()
            }
        })
        .collect();
    engine.put(&scope, &req(), records).unwrap();
    (dir, engine, scope)
}

fn query() -> Vec<f32> {
    let mut q = vec![0.0; DIM];
    q[0] = 1.0;
    q
}

fn search(
    engine: &Engine,
    scope: &TenantScope,
    k: usize,
    filter: Option<serde_json::Value>,
    include: Option<Vec<Include>>,
) -> SearchResponse {
    let s = SearchRequest {
        vector: Some(query()),
        k,
        modality: Some(vec_name()),
        filter: filter.map(|f| Filter::parse(&f).unwrap()),
        include,
        ..Default::default()
    };
    engine.search(scope, &req(), &s).unwrap()
}

fn row(h: &SearchHit) -> usize {
    h.id.as_str()[1..].parse().unwrap()
}

/// The write that takes record `i` out of a default-scope caller's sight: a delete, a move to
/// another domain, user tokens (the caller speaks for none), or an expiry that has passed.
fn hide(engine: &Engine, scope: &TenantScope, i: usize) {
    let id = RecordId::parse(format!("r{i}")).unwrap();
    let patch = |p: RecordPatch| engine.patch(scope, &req(), &id, p).map(|_| ());
    match i % 4 {
        0 => engine.delete(scope, &req(), &id),
        1 => patch(RecordPatch {
            move_to_domain: Some(Domain::parse("elsewhere").unwrap()),
            ..Default::default()
        }),
        2 => patch(RecordPatch {
            user_tokens: Some(vec![UserToken::parse("u:someone").unwrap()]),
            ..Default::default()
        }),
        _ => patch(RecordPatch {
            // A moment ahead (a patch refuses a past expiry), then waited out.
            expires_at: Some(Some(common::expiring_soon())),
            ..Default::default()
        }),
    }
    .unwrap();
    if i % 4 == 3 {
        common::wait_past(now_millis() + 250);
    }
}

#[test]
fn ids_only_hits_are_the_full_searchs_hits_without_their_records() {
    let (_dir, engine, scope) = loaded(300);
    for i in 0..20 {
        hide(&engine, &scope, i);
    }
    // No filter, a filter the field index answers exactly, and one it cannot (content).
    let filters = [
        None,
        Some(json!({"n": {"$gte": 40}})),
        Some(json!({"content": {"$ne": "note 25"}})),
    ];
    for filter in filters {
        let full = search(&engine, &scope, 10, filter.clone(), None);
        let lean = search(&engine, &scope, 10, filter.clone(), Some(vec![]));
        let key = |r: &SearchResponse| -> Vec<(String, u32)> {
            r.hits
                .iter()
                .map(|h| (h.id.to_string(), h.score.to_bits()))
                .collect()
        };
        assert_eq!(key(&lean), key(&full), "filter {filter:?}");
        assert_eq!(lean.hits.len(), 10);
        assert!(lean.hits.iter().all(|h| row(h) >= 20), "{filter:?}");
        // Each full hit carries its stored record, under its own id; an `include: []` hit
        // carries none, whether it was named from the index or read from storage (the
        // content filter is checked on stored records).
        assert!(full.hits.iter().all(|h| {
            h.record
                .as_ref()
                .is_some_and(|r| r.id == h.id && r.content.is_some())
        }));
        assert!(lean.hits.iter().all(|h| h.record.is_none()), "{filter:?}");
    }
    let lean = search(&engine, &scope, 10, None, Some(vec![]));
    assert_eq!(lean.hits[0].id.as_str(), "r20");
}

/// A collection whose every slot holds a vector (nothing deleted), searched exactly: when
/// nothing narrows the search its vectors are read straight through, and records a move, user
/// tokens or an expiry took out of sight, or a filter the field index cannot answer, must
/// still decide what is returned, ids only or not.
#[test]
fn a_collection_with_every_slot_filled_still_hides_what_the_caller_may_not_see() {
    let (_dir, engine, scope) = loaded(300);
    let first = |filter: &Option<serde_json::Value>| -> Vec<usize> {
        (0..)
            .filter(|i| *i >= 24 || i % 4 == 0)
            .filter(|i| filter.is_none() || *i != 25)
            .take(10)
            .collect()
    };
    assert_eq!(
        search(&engine, &scope, 10, None, Some(vec![]))
            .hits
            .iter()
            .map(row)
            .collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>(),
        "nothing hidden yet"
    );
    for i in (0..24).filter(|i| i % 4 != 0) {
        hide(&engine, &scope, i);
    }
    for filter in [None, Some(json!({"content": {"$ne": "note 25"}}))] {
        for include in [None, Some(vec![])] {
            let r = search(&engine, &scope, 10, filter.clone(), include.clone());
            let rows: Vec<usize> = r.hits.iter().map(row).collect();
            assert_eq!(rows, first(&filter), "{filter:?} {include:?}");
        }
    }
    // Nothing hidden reached the final re-check: the scan itself left the hidden records out
    // (the re-check and a retry would mend a scan that did not, at a cost).
    assert_eq!(engine.search_recheck_drops(), 0);
}

/// A writer takes the nearest records out of sight one by one (deletes, domain moves, user
/// tokens, expiry) while readers search with `include: []`: a search begun after a write
/// returned never returns that record, and every search answers k.
#[test]
fn ids_only_searches_racing_writes_never_return_what_a_returned_write_hid() {
    const HIDDEN: usize = 120;
    let (_dir, engine, scope) = loaded(400);
    // How many of the nearest records writes that have returned hid (r0 .. r<hidden>).
    let hidden = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // A panicking writer still releases the readers (they loop until `done`).
            let _done = common::StopOnDrop(&done);
            for i in 0..HIDDEN {
                hide(&engine, &scope, i);
                hidden.store(i + 1, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        });
        for _ in 0..2 {
            s.spawn(|| read_while_hiding(&engine, &scope, &hidden, &done));
        }
    });
    let r = search(&engine, &scope, 10, None, Some(vec![]));
    assert_eq!(
        r.hits.iter().map(row).collect::<Vec<_>>(),
        (HIDDEN..HIDDEN + 10).collect::<Vec<_>>()
    );
}

/// Searches with `include: []` until `done` (and at least 50 times), checking each answer
/// against the records hidden before it began.
fn read_while_hiding(
    engine: &Engine,
    scope: &TenantScope,
    hidden: &AtomicUsize,
    done: &AtomicBool,
) {
    let mut searches = 0;
    while !done.load(Ordering::SeqCst) || searches < 50 {
        let before = hidden.load(Ordering::SeqCst);
        let filter = (searches % 2 == 1).then(|| json!({"n": {"$lt": 390}}));
        let r = search(engine, scope, 10, filter, Some(vec![]));
        assert_eq!(r.hits.len(), 10, "search {searches}");
        for h in &r.hits {
            assert!(
                row(h) >= before,
                "search {searches} began after r0..r{before} were hidden and returned {}",
                h.id
            );
        }
        searches += 1;
    }
}

/// An ids-only search without a filter reads the collection's definition from its index, not
/// from storage: a collection deleted and created again with another dimension must be
/// searched by its new definition, never a stale one.
#[test]
fn ids_only_searches_follow_a_collection_deleted_and_recreated_with_another_dimension() {
    let (_dir, engine, scope) = loaded(20);
    assert_eq!(search(&engine, &scope, 5, None, Some(vec![])).hits.len(), 5);
    engine.delete_collection(&scope, &vec_name()).unwrap();
    let lean = |vector: Vec<f32>| {
        let s = SearchRequest {
            vector: Some(vector),
            k: 5,
            modality: Some(vec_name()),
            include: Some(vec![]),
            ..Default::default()
        };
        engine.search(&scope, &req(), &s)
    };
    assert!(matches!(
        lean(query()),
        Err(strata_engine::EngineError::CollectionNotFound(_))
    ));
    engine
        .create_collection(&scope, &vec_name(), 2 * DIM as u32, Metric::L2)
        .unwrap();
    let records = (0..3)
        .map(|i| NewRecord {
            id: Some(RecordId::parse(format!("new{i}")).unwrap()),
            modality: Some(vec_name()),
            vector: Some(vec![i as f32; 2 * DIM]),
            ..Default::default()
        })
        .collect();
    engine.put(&scope, &req(), records).unwrap();
    assert!(matches!(
        lean(query()),
        Err(strata_engine::EngineError::InvalidRecord(
            RecordError::DimensionMismatch { .. }
        ))
    ));
    let hits = lean(vec![0.0; 2 * DIM]).unwrap().hits;
    let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["new0", "new1", "new2"]);
}

/// The beam policy (`crate::hits`): on a graph (not an exact scan) both include modes rank the
/// same top k with the same `exact` flag, at any `ef` (below k, at k, above), and answer k.
#[test]
fn ids_only_and_full_searches_rank_the_same_top_k_from_the_graph() {
    // 1,100 vectors of 2,048 dimensions: past the graph threshold and the exact-scan budget.
    const GRAPH_DIM: usize = 2048;
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    engine
        .create_collection(&scope, &vec_name(), GRAPH_DIM as u32, Metric::L2)
        .unwrap();
    let data = strata_index::testdata::clustered(1100, GRAPH_DIM, 10, 1);
    for (c, part) in data.chunks(550).enumerate() {
        let records = part
            .iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                id: Some(RecordId::parse(format!("r{}", c * 550 + i)).unwrap()),
                modality: Some(vec_name()),
                vector: Some(v.clone()),
                ..Default::default()
            })
            .collect();
        engine.put(&scope, &req(), records).unwrap();
    }
    let queries = strata_index::testdata::queries(3, GRAPH_DIM, 10, 1, 2);
    let search = |q: &[f32], k: usize, ef: Option<usize>, include: Option<Vec<Include>>| {
        let s = SearchRequest {
            vector: Some(q.to_vec()),
            k,
            ef,
            modality: Some(vec_name()),
            include,
            ..Default::default()
        };
        engine.search(&scope, &req(), &s).unwrap()
    };
    search(&queries[0], 1, None, None);
    engine.wait_for_graph_builds();
    let key = |r: &SearchResponse| -> Vec<(String, u32)> {
        r.hits
            .iter()
            .map(|h| (h.id.to_string(), h.score.to_bits()))
            .collect()
    };
    for q in &queries {
        for k in [1, 5, 10] {
            for ef in [None, Some(1), Some(k), Some(40)] {
                let lean = search(q, k, ef, Some(vec![]));
                let full = search(q, k, ef, None);
                assert!(!lean.exact, "the graph answers (k {k}, ef {ef:?})");
                assert_eq!(lean.exact, full.exact);
                assert_eq!(key(&lean), key(&full), "k {k}, ef {ef:?}");
                assert_eq!(lean.hits.len(), k);
            }
        }
    }
}
