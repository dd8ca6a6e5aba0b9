//! Retries of a search whose hits a write took out of sight (`crate::search_retry`): spares
//! sized by the hits lost, and the last try after the write in flight is applied.

use std::time::{Duration, Instant};

use serde_json::Value;
use strata_auth::TenantScope;
use strata_types::{FieldRef, Filter, Include, Metric, RequestScope, SearchRequest};

use crate::search_retry::ATTEMPTS;
use crate::test_support::{DIM, pause_next_write, vec_name};
use crate::{Engine, EngineConfig};

const K: usize = 5;

fn loaded(dir: &std::path::Path) -> (Engine, TenantScope) {
    crate::test_support::clustered_tenant(dir, Metric::L2, 1100)
}

fn ids_only(k: usize, query: &[f32]) -> SearchRequest {
    SearchRequest {
        vector: Some(query.to_vec()),
        k,
        ef: Some(k),
        modality: Some(vec_name()),
        include: Some(vec![]),
        ..Default::default()
    }
}

/// The reviewer's race: one commit hides more of the top k + `SPARE_HITS` than a fixed
/// handful of spares replaces, and its writer stays between commit and apply. Each retry
/// ranks spares for every hit lost so far, so the search still answers k without the
/// deleted records, and before the last try (which would wait for the apply).
#[test]
fn a_commit_hiding_more_than_the_spares_still_leaves_k_hits() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = loaded(dir.path());
    let query = strata_index::testdata::queries(1, DIM as usize, 10, 1, 2).remove(0);
    let search = |s: &SearchRequest| engine.search(&scope, &RequestScope::default(), s).unwrap();
    search(&ids_only(K, &query));
    engine.wait_for_graph_builds();
    // More than k + SPARE_HITS of the nearest records, deleted in one transaction.
    let hidden = K + crate::search::SPARE_HITS + 6;
    let doomed: Vec<String> = search(&ids_only(hidden, &query))
        .hits
        .iter()
        .map(|h| h.id.to_string())
        .collect();
    assert_eq!(doomed.len(), hidden);
    let filter = Filter::In(
        FieldRef::Id,
        doomed.iter().map(|id| Value::String(id.clone())).collect(),
    );
    let (reached, release) = pause_next_write(&engine);
    std::thread::scope(|s| {
        let writer = s.spawn(|| engine.delete_where(&scope, &RequestScope::default(), &filter));
        reached
            .recv_timeout(Duration::from_secs(60))
            .expect("the delete reached its commit");
        for include in [Some(vec![]), None::<Vec<Include>>] {
            let at = ATTEMPTS.with(|n| n.get());
            let found = search(&SearchRequest {
                include,
                ..ids_only(K, &query)
            });
            let tried = ATTEMPTS.with(|n| n.get()) - at;
            let ids: Vec<String> = found.hits.iter().map(|h| h.id.to_string()).collect();
            assert_eq!(ids.len(), K, "{ids:?}");
            assert!(ids.iter().all(|id| !doomed.contains(id)), "{ids:?}");
            assert!(
                (2..crate::search_retry::SEARCH_ATTEMPTS).contains(&tried),
                "{tried} tries: spares sized by the hits lost answer before the last"
            );
        }
        release.send(()).unwrap();
        assert_eq!(writer.join().unwrap().unwrap(), hidden as u64);
    });
    *crate::registry::lock(&engine.indexes.after_commit) = None;
}

/// `wait_for_apply` returns only once the write in flight is applied to the index.
#[test]
fn waiting_for_the_apply_waits_for_the_write_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = loaded(dir.path());
    let query = strata_index::testdata::queries(1, DIM as usize, 10, 1, 2).remove(0);
    let nearest = engine
        .search(&scope, &RequestScope::default(), &ids_only(1, &query))
        .unwrap()
        .hits[0]
        .id
        .clone();
    let (reached, release) = pause_next_write(&engine);
    std::thread::scope(|s| {
        let writer = s.spawn(|| engine.delete(&scope, &RequestScope::default(), &nearest));
        reached
            .recv_timeout(Duration::from_secs(60))
            .expect("the delete reached its commit");
        let pending = |engine: &Engine| {
            engine
                .indexes
                .with_index(&engine.store, scope.key(), scope.tenant(), |ti| {
                    Ok(ti.write_pending())
                })
                .unwrap()
        };
        assert!(pending(&engine), "committed, not applied");
        let released = Instant::now();
        let releaser = s.spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            release.send(()).unwrap();
        });
        engine
            .indexes
            .get(scope.key())
            .expect("slot")
            .wait_for_apply();
        assert!(released.elapsed() >= Duration::from_millis(200));
        assert!(!pending(&engine), "applied when the wait returns");
        releaser.join().unwrap();
        writer.join().unwrap().unwrap();
    });
    *crate::registry::lock(&engine.indexes.after_commit) = None;
}

/// An index whose bitmap disagrees with its records (here: an expiring record missing from
/// `with_expiry`, so its channel lets it through after it expired) loses the hit at the
/// re-check on every try. The search still answers what it may see, and the drop is counted
/// (`strata_search_recheck_drops_total`) instead of passing silently.
#[test]
fn a_recheck_that_disagrees_with_its_bitmap_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let scope = crate::test_support::created_tenant(&engine, "acme");
    let name = strata_types::CollectionName::parse("small").unwrap();
    engine
        .create_collection(&scope, &name, 2, Metric::L2)
        .unwrap();
    let soon = strata_types::now_millis() + 300;
    let records = (0..3)
        .map(|i| strata_types::NewRecord {
            id: Some(strata_types::RecordId::parse(format!("m{i}")).unwrap()),
            modality: Some(name.clone()),
            vector: Some(vec![i as f32, 1.0]),
            expires_at: (i == 0).then_some(soon),
            ..Default::default()
        })
        .collect();
    engine
        .put(&scope, &RequestScope::default(), records)
        .unwrap();
    let s = SearchRequest {
        vector: Some(vec![0.0, 1.0]),
        k: 3,
        modality: Some(name.clone()),
        include: Some(vec![]),
        ..Default::default()
    };
    let ids = |engine: &Engine| -> Vec<String> {
        let found = engine.search(&scope, &RequestScope::default(), &s).unwrap();
        found.hits.iter().map(|h| h.id.to_string()).collect()
    };
    assert_eq!(ids(&engine), ["m0", "m1", "m2"]);
    assert_eq!(engine.search_recheck_drops(), 0);
    std::thread::sleep(Duration::from_millis(400));
    // The bug: the index forgets that m0 expires.
    let slot = engine.indexes.get(scope.key()).unwrap();
    let mut index = engine.indexes.write_index(&slot);
    let ci = index.as_mut().unwrap().collections.get_mut(&name).unwrap();
    ci.with_expiry.clear();
    drop(index);
    assert_eq!(ids(&engine), ["m1", "m2"]);
    assert_eq!(engine.search_recheck_drops(), 1);
}

/// Spares never cost an exact scan: the graph's beam is widened only while fewer than the k
/// a search answers pass (`plan::vector_top`'s `need`), not to fill the candidates beyond k.
#[test]
fn the_graph_is_not_widened_to_fill_spares() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = loaded(dir.path());
    let query = strata_index::testdata::queries(1, DIM as usize, 10, 1, 2).remove(0);
    engine
        .search(&scope, &RequestScope::default(), &ids_only(K, &query))
        .unwrap();
    engine.wait_for_graph_builds();
    // One record in 10 passes (110): asked for 200, the graph finds k of them, never 200.
    let passes = |slot: u32| slot.is_multiple_of(10);
    let (spared, filled) = engine
        .indexes
        .with_index(&engine.store, scope.key(), scope.tenant(), |ti| {
            let ci = &ti.collections[&vec_name()];
            assert!(ci.graph.is_some(), "the graph answers this collection");
            let top = |need: usize| {
                crate::plan::vector_top(
                    ci,
                    &ci.with_vector,
                    false,
                    &query,
                    200,
                    need,
                    Some(K),
                    None,
                    &passes,
                )
            };
            Ok((top(K)?, top(200)?))
        })
        .unwrap();
    let (hits, exact) = spared;
    assert!(
        !exact,
        "k passing from the graph: no exact scan for the spares"
    );
    assert!(
        hits.len() >= K && hits.iter().all(|h| passes(h.slot)),
        "{hits:?}"
    );
    // Asked to fill all 200, the same search climbs to an exact scan.
    assert!(filled.1, "fewer than 200 pass: settled exactly");
    assert_eq!(filled.0.len(), 110);
}
