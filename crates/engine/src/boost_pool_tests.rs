//! A boosted search re-ranks a pool deeper than its k, whatever k is: a record just below the
//! top k by relevance can rise into it.

use strata_types::{
    CollectionName, Confidence, Metric, NewRecord, RecordId, RequestScope, SearchRequest,
};

use crate::{Engine, EngineConfig};

/// Tenant `acme` with an empty two-dimensional `small` collection under L2.
fn small_l2_collection() -> (
    tempfile::TempDir,
    Engine,
    strata_auth::TenantScope,
    CollectionName,
) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let scope = crate::test_support::created_tenant(&engine, "acme");
    let name = CollectionName::parse("small").unwrap();
    engine
        .create_collection(&scope, &name, 2, Metric::L2)
        .unwrap();
    (dir, engine, scope, name)
}

#[test]
fn a_confident_record_below_a_large_k_rises_into_it() {
    const K: usize = 60;
    let (_dir, engine, scope, name) = small_l2_collection();
    // p0 nearest, p63 farthest; only p62 (relevance rank 63, below k) is confident.
    let records = (0..64)
        .map(|i| NewRecord {
            id: Some(RecordId::parse(format!("p{i}")).unwrap()),
            modality: Some(name.clone()),
            vector: Some(vec![i as f32, 0.0]),
            confidence: Some(Confidence {
                value: if i == 62 { 1.0 } else { 0.0 },
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    engine
        .put(&scope, &RequestScope::default(), records)
        .unwrap();
    let s = SearchRequest {
        vector: Some(vec![0.0, 0.0]),
        k: K,
        modality: Some(name),
        confidence_weight: Some(0.9),
        include: Some(vec![]),
        ..Default::default()
    };
    let found = engine.search(&scope, &RequestScope::default(), &s).unwrap();
    assert_eq!(found.hits.len(), K);
    // A pool cut at k would never have held p62.
    assert_eq!(found.hits[0].id.to_string(), "p62");
}

/// With relevance weighing nothing (`confidence_weight: 1`), records of equal confidence tie
/// on their score: the better match comes first, not the one stored first.
#[test]
fn ties_of_the_boosted_score_go_to_the_better_match() {
    let (_dir, engine, scope, name) = small_l2_collection();
    // q0 farthest from the query, stored first; q9 nearest, stored last.
    let records = (0..10)
        .map(|i| NewRecord {
            id: Some(RecordId::parse(format!("q{i}")).unwrap()),
            modality: Some(name.clone()),
            vector: Some(vec![10.0 - i as f32, 0.0]),
            ..Default::default()
        })
        .collect();
    engine
        .put(&scope, &RequestScope::default(), records)
        .unwrap();
    let s = SearchRequest {
        vector: Some(vec![0.0, 0.0]),
        k: 3,
        modality: Some(name),
        confidence_weight: Some(1.0),
        include: Some(vec![]),
        ..Default::default()
    };
    let found = engine.search(&scope, &RequestScope::default(), &s).unwrap();
    let ids: Vec<String> = found.hits.iter().map(|h| h.id.to_string()).collect();
    assert_eq!(ids, ["q9", "q8", "q7"]);
}
