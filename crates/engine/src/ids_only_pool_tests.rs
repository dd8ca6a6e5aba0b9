//! A search with `include: []` (hits named from the index) draws the same candidate pool as one
//! that reads its hits' records, so both rank the same top k with the same `exact` flag, also
//! when a graph answers them.

use strata_types::{Include, Metric, RequestScope, SearchRequest};

use crate::test_support::{DIM, clustered_tenant, vec_name};

#[test]
fn ids_only_and_default_include_rank_the_same_top_k_on_a_graph() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = clustered_tenant(dir.path(), Metric::Cosine, 1100);
    // The first search loads the index and queues its graph's build.
    crate::test_support::answers(&engine, &scope);
    engine.wait_for_graph_builds();
    // A beam as narrow as k (`ef = k`), where the graph's answer depends most on how many
    // candidates are drawn: both include modes must draw the same k.
    let queries = strata_index::testdata::queries(40, DIM as usize, 10, 1, 3);
    let mut graph_answered = 0;
    for (q, k, ef) in queries
        .into_iter()
        .zip([1, 2, 3, 5].into_iter().cycle())
        .map(|(q, k)| (q, k, Some(k)))
    {
        let search = |include: Option<Vec<Include>>| {
            let s = SearchRequest {
                vector: Some(q.clone()),
                k,
                ef,
                modality: Some(vec_name()),
                include,
                ..Default::default()
            };
            let found = engine.search(&scope, &RequestScope::default(), &s).unwrap();
            let ids: Vec<(String, u32)> = found
                .hits
                .iter()
                .map(|h| (h.id.to_string(), h.score.to_bits()))
                .collect();
            (ids, found.exact)
        };
        let lean = search(Some(vec![]));
        let full = search(None);
        assert_eq!(lean, full, "k {k}");
        assert_eq!(lean.0.len(), k);
        graph_answered += usize::from(!lean.1);
    }
    assert!(graph_answered > 0, "no search was answered by the graph");
}

/// The beam policy (`crate::hits`): a plain search's first try ranks exactly k, so its beam is
/// the bare graph's `max(ef, k)`. If the engine widened it again (spares on every search),
/// its `include: []` hits would be the graph's answer to a wider beam, not this one.
#[test]
fn an_unfiltered_ids_only_search_is_the_graphs_own_answer_at_the_same_ef() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = clustered_tenant(dir.path(), Metric::L2, 1100);
    crate::test_support::answers(&engine, &scope);
    engine.wait_for_graph_builds();
    let queries = strata_index::testdata::queries(40, DIM as usize, 10, 1, 4);
    let mut differs_from_wider = 0;
    for (q, (k, ef)) in queries
        .into_iter()
        .zip([(1, 1), (3, 3), (5, 5), (10, 4)].into_iter().cycle())
    {
        let s = SearchRequest {
            vector: Some(q.clone()),
            k,
            ef: Some(ef),
            modality: Some(vec_name()),
            include: Some(vec![]),
            ..Default::default()
        };
        let found = engine.search(&scope, &RequestScope::default(), &s).unwrap();
        assert!(!found.exact, "the graph answers, not an exact scan");
        let engine_ids: Vec<String> = found.hits.iter().map(|h| h.id.to_string()).collect();
        let (graph_ids, wider_ids) = engine
            .indexes
            .with_index(&engine.store, scope.key(), scope.tenant(), |ti| {
                let ci = &ti.collections[&vec_name()];
                let graph = ci.graph.as_ref().expect("the graph is built");
                let name = |hits: Vec<strata_index::Hit>| -> Vec<String> {
                    hits.iter()
                        .map(|h| {
                            let doc = ci.docs[h.slot as usize].as_ref().unwrap();
                            doc.id.to_string()
                        })
                        .collect()
                };
                let own = graph.search(&q, k, Some(ef)).unwrap();
                let wider = graph
                    .search(&q, k, Some(k + crate::search::SPARE_HITS))
                    .unwrap();
                Ok((name(own), name(wider)))
            })
            .unwrap();
        assert_eq!(engine_ids, graph_ids, "k {k}, ef {ef}");
        differs_from_wider += usize::from(graph_ids != wider_ids);
    }
    // The comparison has teeth only if a wider beam finds other neighbours for some query.
    assert!(
        differs_from_wider > 0,
        "a wider beam found the same hits for every query"
    );
}
