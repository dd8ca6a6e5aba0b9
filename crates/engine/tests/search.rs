//! Recall quality and the search contract: recall floors, "never fewer than k" under filters of
//! every selectivity, exactness of exact plans, hybrid explain, and per-tenant BM25 statistics.

mod common;

use std::collections::HashSet;

use serde_json::json;
use strata_auth::TenantScope;
use strata_engine::Engine;
use strata_types::*;

const DIM: usize = 128;

fn req() -> RequestScope {
    RequestScope::default()
}

/// A tenant with a 128-dim collection `vec` holding `n` clustered vectors; record `i` has
/// metadata `bucket = i % 1000` and `parity`.
fn loaded(n: usize, metric: Metric) -> (tempfile::TempDir, Engine, TenantScope, Vec<Vec<f32>>) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    engine
        .create_collection(
            &scope,
            &CollectionName::parse("vec").unwrap(),
            DIM as u32,
            metric,
        )
        .unwrap();
    let data = strata_index::testdata::clustered(n, DIM, 100, 7);
    for (chunk_no, chunk) in data.chunks(1000).enumerate() {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let i = chunk_no * 1000 + j;
                NewRecord {
                    id: Some(RecordId::parse(format!("r{i}")).unwrap()),
                    modality: Some(CollectionName::parse("vec").unwrap()),
                    vector: Some(v.clone()),
                    metadata: json!({"bucket": i % 1000, "parity": if i % 2 == 0 { "even" } else { "odd" }})
                        .as_object()
                        .cloned()
                        .unwrap(),
                    ..Default::default()
                }
            })
            .collect();
        engine.put(&scope, &req(), records).unwrap();
    }
    // Load the tenant and let the background builder give it its graph, as a server does
    // between the writes and the searches.
    engine.index_stats(&scope).unwrap();
    engine.wait_for_graph_builds();
    (dir, engine, scope, data)
}

fn score(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    match metric {
        Metric::Dot => dot,
        Metric::Cosine => {
            let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (na * nb)
        }
        Metric::L2 => -a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt(),
    }
}

/// Brute-force top-k ids among records `i` with `keep(i)`.
fn truth(
    data: &[Vec<f32>],
    metric: Metric,
    q: &[f32],
    k: usize,
    keep: impl Fn(usize) -> bool,
) -> Vec<String> {
    let mut scored: Vec<(f32, usize)> = data
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(i, v)| (score(metric, q, v), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored
        .into_iter()
        .take(k)
        .map(|(_, i)| format!("r{i}"))
        .collect()
}

fn search(
    engine: &Engine,
    scope: &TenantScope,
    q: &[f32],
    k: usize,
    filter: Option<serde_json::Value>,
) -> SearchResponse {
    let s = SearchRequest {
        vector: Some(q.to_vec()),
        k,
        modality: Some(CollectionName::parse("vec").unwrap()),
        filter: filter.map(|f| Filter::parse(&f).unwrap()),
        ..Default::default()
    };
    engine.search(scope, &req(), &s).unwrap()
}

fn ids(r: &SearchResponse) -> Vec<String> {
    r.hits.iter().map(|h| h.id.to_string()).collect()
}

fn overlap(got: &[String], want: &[String]) -> usize {
    let want: HashSet<&String> = want.iter().collect();
    got.iter().filter(|g| want.contains(g)).count()
}

#[test]
fn recall_at_10_is_at_least_095_on_20k_clustered_vectors() {
    for metric in [Metric::Cosine, Metric::L2] {
        let (_dir, engine, scope, data) = loaded(20_000, metric);
        let queries = strata_index::testdata::queries(100, DIM, 100, 7, 99);
        let (mut found, mut graph_searches) = (0, 0);
        for q in &queries {
            let r = search(&engine, &scope, q, 10, None);
            assert_eq!(r.hits.len(), 10);
            graph_searches += usize::from(!r.exact);
            found += overlap(&ids(&r), &truth(&data, metric, q, 10, |_| true));
        }
        let recall = found as f64 / (10 * queries.len()) as f64;
        println!(
            "{metric:?}: recall@10 = {recall:.4} over {} queries ({graph_searches} on the graph)",
            queries.len()
        );
        assert!(recall >= 0.95, "{metric:?} recall@10 {recall}");
        assert_eq!(
            graph_searches,
            queries.len(),
            "a 20k collection should be searched on the graph"
        );
    }
}

#[test]
fn filters_of_every_selectivity_return_exactly_k() {
    let (_dir, engine, scope, data) = loaded(20_000, Metric::Cosine);
    let queries = strata_index::testdata::queries(20, DIM, 100, 7, 5);
    // bucket < b selects b / 1000 of the records: 0.1 %, 1 %, 10 %, 50 %, and 90 %, which is
    // too many candidates for an exact scan and goes to the graph.
    let mut graph_used = false;
    for buckets in [1u64, 10, 100, 500, 900] {
        let (mut found, mut approx_total) = (0, 0);
        for q in &queries {
            let filter = json!({"bucket": {"$lt": buckets}});
            let r = search(&engine, &scope, q, 10, Some(filter));
            assert_eq!(r.hits.len(), 10, "selectivity {buckets}/1000");
            let want = truth(&data, Metric::Cosine, q, 10, |i| {
                ((i % 1000) as u64) < buckets
            });
            for h in &r.hits {
                assert!(
                    h.record.as_ref().unwrap().metadata["bucket"]
                        .as_u64()
                        .unwrap()
                        < buckets,
                    "hit outside the filter"
                );
            }
            if r.exact {
                assert_eq!(
                    ids(&r),
                    want,
                    "exact plan must return the true top k (selectivity {buckets}/1000)"
                );
            } else {
                graph_used = true;
                approx_total += 10;
                found += overlap(&ids(&r), &want);
            }
        }
        if approx_total > 0 {
            let recall = found as f64 / approx_total as f64;
            println!("selectivity {buckets}/1000: graph recall@10 {recall:.4}");
            assert!(
                recall >= 0.95,
                "selectivity {buckets}/1000: recall {recall}"
            );
        }
    }
    assert!(graph_used, "the 90 % filter should be planned on the graph");
    // A negated filter ($ne, the complement of the field index's $eq) still returns k, all
    // matching.
    let r = search(
        &engine,
        &scope,
        &queries[0],
        10,
        Some(json!({"parity": {"$ne": "odd"}})),
    );
    assert_eq!(r.hits.len(), 10);
    assert!(
        r.hits
            .iter()
            .all(|h| h.record.as_ref().unwrap().metadata["parity"] == "even")
    );
    // Fewer matches than k, through a filter the field index cannot narrow: all, no more.
    let r = search(
        &engine,
        &scope,
        &queries[0],
        10,
        Some(json!({"id": {"$in": ["r3", "r1003", "r2003", "nope"]}})),
    );
    assert_eq!(
        ids(&r).into_iter().collect::<HashSet<_>>(),
        ["r3", "r1003", "r2003"].map(String::from).into()
    );
    assert!(r.exact);
}

#[test]
fn scope_is_applied_before_top_k_on_the_graph() {
    // 20,000 × 128 dimensions is past the planner's exact-scan budget: bob's search (every
    // shared record is a candidate) goes to the graph.
    let (_dir, engine, scope, data) = loaded(20_000, Metric::Cosine);
    // Alice's 20 private records sit right where the query lands; bob must never see them, and
    // must still get k of his own.
    let q = data[0].clone();
    let alice =
        serde_json::from_value::<RequestScope>(json!({"user_tokens": ["u:alice"]})).unwrap();
    let bob = serde_json::from_value::<RequestScope>(json!({"user_tokens": ["u:bob"]})).unwrap();
    let private: Vec<NewRecord> = (0..20)
        .map(|i| NewRecord {
            modality: Some(CollectionName::parse("vec").unwrap()),
            vector: Some(q.iter().map(|x| x + i as f32 * 1e-4).collect()),
            content: Some(format!("alice secret {i}")),
            ..Default::default()
        })
        .collect();
    engine.put(&scope, &alice, private).unwrap();
    let s = SearchRequest {
        vector: Some(q.clone()),
        k: 10,
        modality: Some(CollectionName::parse("vec").unwrap()),
        ..Default::default()
    };
    let as_bob = engine.search(&scope, &bob, &s).unwrap();
    assert_eq!(as_bob.hits.len(), 10);
    assert!(!as_bob.exact, "planned on the graph");
    assert!(
        as_bob
            .hits
            .iter()
            .all(|h| h.record.as_ref().unwrap().user_tokens.is_empty())
    );
    let as_alice = engine.search(&scope, &alice, &s).unwrap();
    let secrets = as_alice.hits.iter().filter(|h| {
        h.record
            .as_ref()
            .and_then(|r| r.content.as_deref())
            .is_some_and(|c| c.starts_with("alice secret"))
    });
    assert!(secrets.count() >= 9, "alice sees her own records first");
    // Another domain sees nothing at all.
    let other =
        serde_json::from_value::<RequestScope>(json!({"memory_domain": "support"})).unwrap();
    assert!(engine.search(&scope, &other, &s).unwrap().hits.is_empty());
}

#[test]
fn writes_after_load_are_searchable_and_deletes_vanish() {
    let (_dir, engine, scope, data) = loaded(2_000, Metric::Cosine);
    let q = data[17].clone();
    assert_eq!(ids(&search(&engine, &scope, &q, 1, None)), ["r17"]);
    engine
        .delete(&scope, &req(), &RecordId::parse("r17").unwrap())
        .unwrap();
    assert_ne!(ids(&search(&engine, &scope, &q, 1, None)), ["r17"]);
    let new = NewRecord {
        id: Some(RecordId::parse("fresh").unwrap()),
        modality: Some(CollectionName::parse("vec").unwrap()),
        vector: Some(q.clone()),
        ..Default::default()
    };
    engine.put(&scope, &req(), vec![new]).unwrap();
    assert_eq!(ids(&search(&engine, &scope, &q, 1, None)), ["fresh"]);
    let patch = RecordPatch {
        vector: Some(data[1].clone()),
        ..Default::default()
    };
    engine
        .patch(&scope, &req(), &RecordId::parse("fresh").unwrap(), patch)
        .unwrap();
    assert_ne!(ids(&search(&engine, &scope, &q, 1, None)), ["fresh"]);
}

fn text_tenant(dir: &std::path::Path, name: &str) -> (Engine, TenantScope) {
    common::open_with_tenant(dir, name, common::full_grant())
}

fn text_search(engine: &Engine, scope: &TenantScope, query: &str) -> SearchResponse {
    let s = SearchRequest {
        query: Some(query.into()),
        k: 5,
        explain: true,
        ..Default::default()
    };
    engine.search(scope, &req(), &s).unwrap()
}

#[test]
fn bm25_statistics_never_mix_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, a) = text_tenant(dir.path(), "acme");
    drop(engine);
    let (engine, b) = text_tenant(dir.path(), "globex");
    let a = TenantScope::for_tests(
        &engine.tenant_meta(a.tenant()).unwrap(),
        common::full_grant(),
    );
    let docs = [
        "green tea in the morning",
        "coffee after lunch",
        "tea with milk",
        "water all day",
    ];
    let records = docs
        .iter()
        .map(|d| NewRecord {
            content: Some(d.to_string()),
            ..Default::default()
        })
        .collect();
    engine.put(&a, &req(), records).unwrap();
    let before = text_search(&engine, &a, "tea");
    assert_eq!(before.hits.len(), 2);
    assert!(before.exact);
    // Tenant B floods the same term.
    let flood = (0..500)
        .map(|i| NewRecord {
            content: Some(format!("tea tea tea {i}")),
            ..Default::default()
        })
        .collect();
    engine.put(&b, &req(), flood).unwrap();
    let after = text_search(&engine, &a, "tea");
    let scores = |r: &SearchResponse| {
        r.hits
            .iter()
            .map(|h| (h.id.to_string(), h.score))
            .collect::<Vec<_>>()
    };
    assert_eq!(scores(&before), scores(&after));
    assert!(
        after
            .hits
            .iter()
            .all(|h| h.explain.as_ref().unwrap().text_score.is_some())
    );
}

#[test]
fn hybrid_fuses_channels_and_explains() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = text_tenant(dir.path(), "acme");
    engine
        .create_collection(
            &scope,
            &CollectionName::parse("small").unwrap(),
            3,
            Metric::Cosine,
        )
        .unwrap();
    let m = Some(CollectionName::parse("small").unwrap());
    let rec = |id: &str, text: &str, v: [f32; 3]| NewRecord {
        id: Some(RecordId::parse(id).unwrap()),
        modality: m.clone(),
        content: Some(text.into()),
        vector: Some(v.to_vec()),
        ..Default::default()
    };
    engine
        .put(
            &scope,
            &req(),
            vec![
                rec("both", "tea time", [1.0, 0.0, 0.0]),
                rec("vec", "nothing", [0.9, 0.1, 0.0]),
                rec("txt", "tea tea", [0.0, 0.0, 1.0]),
            ],
        )
        .unwrap();
    let s = SearchRequest {
        vector: Some(vec![1.0, 0.0, 0.0]),
        query: Some("tea".into()),
        k: 3,
        modality: m.clone(),
        explain: true,
        ..Default::default()
    };
    let r = engine.search(&scope, &req(), &s).unwrap();
    assert_eq!(r.mode, SearchMode::Hybrid);
    assert_eq!(r.hits[0].id.as_str(), "both");
    let e = r.hits[0].explain.as_ref().unwrap();
    assert!(e.vector_score.is_some() && e.text_score.is_some());
    assert_eq!(r.hits.len(), 3);
    // min_score cuts by the fused score.
    let strict = SearchRequest {
        min_score: Some(r.hits[0].score),
        ..s.clone()
    };
    assert_eq!(
        engine.search(&scope, &req(), &strict).unwrap().hits.len(),
        1
    );
    // Bad requests are errors, not panics.
    for bad in [
        SearchRequest { k: 0, ..s.clone() },
        SearchRequest {
            vector: None,
            query: None,
            ..s.clone()
        },
        SearchRequest {
            mode: Some(SearchMode::Vector),
            vector: None,
            ..s.clone()
        },
        SearchRequest {
            vector: Some(vec![1.0]),
            ..s.clone()
        },
        SearchRequest {
            vector: Some(vec![f32::NAN, 0.0, 0.0]),
            ..s.clone()
        },
        SearchRequest {
            modality: Some(CollectionName::parse("nope").unwrap()),
            ..s.clone()
        },
    ] {
        assert!(engine.search(&scope, &req(), &bad).is_err());
    }
}

/// A hybrid search's answer does not depend on `k`: each channel hands fusion a few dozen
/// candidates, and a record that only one list held used to get 0 for the other channel at a
/// small `k` and its real score at a large one, so a `k = 10` answer could leave out a record
/// that the same search at a larger `k` scored above its tenth hit, and `min_score` cut by `k`.
#[test]
fn a_hybrid_answer_and_its_scores_do_not_depend_on_k() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = text_tenant(dir.path(), "acme");
    let name = CollectionName::parse("mixed").unwrap();
    const D: usize = 8;
    engine
        .create_collection(&scope, &name, D as u32, Metric::Cosine)
        .unwrap();
    // Seeded pseudo-random vectors; "tea" in most records, repeated a varying number of
    // times among other words, so the text channel's order differs from the vector's and
    // more records match than one list holds.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5
    };
    let n = 400;
    let records: Vec<NewRecord> = (0..n)
        .map(|i| {
            let vector: Vec<f32> = (0..D).map(|_| next()).collect();
            let teas = if i % 3 == 0 { 0 } else { 1 + i % 4 };
            let filler = ["milk", "sugar", "cup", "pot", "leaf"][i % 5];
            let mut words = vec!["tea"; teas];
            words.extend(std::iter::repeat_n(filler, 1 + i % 7));
            NewRecord {
                id: Some(RecordId::parse(format!("r{i}")).unwrap()),
                modality: Some(name.clone()),
                content: Some(words.join(" ")),
                vector: Some(vector),
                ..Default::default()
            }
        })
        .collect();
    engine.put(&scope, &req(), records).unwrap();
    for q in 0..8 {
        let vector: Vec<f32> = (0..D).map(|_| next()).collect();
        let at = |k: usize| {
            let s = SearchRequest {
                vector: Some(vector.clone()),
                query: Some("tea".into()),
                k,
                modality: Some(name.clone()),
                ..Default::default()
            };
            let r = engine.search(&scope, &req(), &s).unwrap();
            assert_eq!(r.mode, SearchMode::Hybrid);
            r.hits
                .iter()
                .map(|h| (h.id.to_string(), h.score))
                .collect::<Vec<_>>()
        };
        // k = n: every candidate is in both lists, so these are the fused scores in full.
        let all = at(n);
        let scores: std::collections::HashMap<&str, f32> =
            all.iter().map(|(id, s)| (id.as_str(), *s)).collect();
        let top = at(10);
        for (id, score) in &top {
            let full = scores[id.as_str()];
            assert!(
                (score - full).abs() <= 1e-5,
                "query {q}: {id} scored {score} at k = 10 and {full} at k = {n}"
            );
        }
        let top_ids: Vec<&str> = top.iter().map(|(id, _)| id.as_str()).collect();
        let all_ids: Vec<&str> = all[..10].iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(top_ids, all_ids, "query {q}");
    }
}

#[test]
fn search_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (engine, scope) = text_tenant(dir.path(), "acme");
        engine
            .put(
                &scope,
                &req(),
                vec![NewRecord {
                    content: Some("remember the milk".into()),
                    ..Default::default()
                }],
            )
            .unwrap();
        assert_eq!(text_search(&engine, &scope, "milk").hits.len(), 1);
    }
    let (engine, scope) = text_tenant(dir.path(), "acme");
    assert_eq!(text_search(&engine, &scope, "milk").hits.len(), 1);
}

#[test]
fn graphs_are_restored_from_snapshots_after_a_clean_restart_and_caught_up_after_a_crash() {
    // Past the graph threshold at 128 dimensions (three quarters of the planner's exact-scan
    // budget: 11,719 vectors).
    const N: usize = 12_000;
    let (dir, engine, scope, data) = loaded(N, Metric::Cosine);
    let queries = &data[..20];
    let answers = |engine: &Engine, scope: &TenantScope| {
        queries
            .iter()
            .map(|q| ids(&search(engine, scope, q, 10, None)))
            .collect::<Vec<_>>()
    };
    let before = answers(&engine, &scope);
    let vec_stats = |engine: &Engine, scope: &TenantScope| {
        engine
            .index_stats(scope)
            .unwrap()
            .into_iter()
            .find(|s| s.collection.as_str() == "vec")
            .unwrap()
    };
    assert!(vec_stats(&engine, &scope).graph);
    assert!(!vec_stats(&engine, &scope).restored_from_snapshot);
    // The background builder saved the snapshot right after building the graph.
    assert!(engine.persist_indexes().unwrap() <= 1);
    assert_eq!(
        engine.persist_indexes().unwrap(),
        0,
        "nothing changed since the last save"
    );
    drop(engine);

    // Clean restart: the graph comes back from the snapshot, with the same answers.
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    assert_eq!(answers(&engine, &scope), before);
    let stats = vec_stats(&engine, &scope);
    assert!(stats.restored_from_snapshot && stats.vectors == N as u64);

    // A write after the snapshot and no save (as after a crash): the snapshot is behind
    // storage; the load restores it and replays the change log over it, so the deleted
    // record is gone without a rebuild.
    engine
        .delete(&scope, &req(), &RecordId::parse("r5").unwrap())
        .unwrap();
    drop(engine);
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    assert_ne!(ids(&search(&engine, &scope, &data[5], 1, None)), ["r5"]);
    let stats = vec_stats(&engine, &scope);
    assert!(stats.restored_from_snapshot && stats.vectors == N as u64 - 1);
}

#[test]
fn expired_records_and_all_matching_are_decided_per_record_before_top_k() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let q = common::vector(384, 1);
    let near = |i: u64| q.iter().map(|x| x + i as f32 * 1e-4).collect::<Vec<f32>>();
    let soon = common::expiring_soon();
    let records: Vec<NewRecord> = (0..5)
        .map(|i| NewRecord {
            id: Some(RecordId::parse(format!("expired{i}")).unwrap()),
            vector: Some(near(i)),
            expires_at: Some(soon),
            ..Default::default()
        })
        .chain((0..5).map(|i| NewRecord {
            id: Some(RecordId::parse(format!("far{i}")).unwrap()),
            vector: Some(common::vector(384, 100 + i)),
            ..Default::default()
        }))
        .collect();
    engine.put(&scope, &req(), records).unwrap();
    common::wait_past(soon);
    let both: RequestScope =
        serde_json::from_value(json!({"user_tokens": ["u:a", "u:b"]})).unwrap();
    engine
        .put(
            &scope,
            &both,
            vec![NewRecord {
                id: Some(RecordId::parse("ab").unwrap()),
                vector: Some(near(0)),
                ..Default::default()
            }],
        )
        .unwrap();
    let s = SearchRequest {
        vector: Some(q.clone()),
        k: 5,
        ..Default::default()
    };
    let r = engine.search(&scope, &req(), &s).unwrap();
    assert_eq!(ids(&r).len(), 5);
    assert!(
        ids(&r).iter().all(|id| id.starts_with("far")),
        "{:?}",
        ids(&r)
    );
    // `all`: a request holding only u:a must not see the record of u:a and u:b; `any` does.
    let only_a_all: RequestScope =
        serde_json::from_value(json!({"user_tokens": ["u:a"], "user_match": "all"})).unwrap();
    assert!(!ids(&engine.search(&scope, &only_a_all, &s).unwrap()).contains(&"ab".to_string()));
    let only_a_any: RequestScope = serde_json::from_value(json!({"user_tokens": ["u:a"]})).unwrap();
    assert_eq!(
        ids(&engine.search(&scope, &only_a_any, &s).unwrap())[0],
        "ab"
    );
}

/// Collections keep only a lean part of each record resident: a hit's record is read whole
/// from storage (content, metadata, kind, confidence, and its stored vector when asked), the
/// same after a restart that loads the collection from its search image, and a filter the
/// field index cannot answer (`$ne` on content) is decided on the stored records.
#[test]
fn hits_carry_their_whole_stored_record_before_and_after_an_image_load() {
    let dir = tempfile::tempdir().unwrap();
    let vec = CollectionName::parse("vec").unwrap();
    let records: Vec<NewRecord> = (0..50)
        .map(|i| NewRecord {
            id: Some(RecordId::parse(format!("r{i}")).unwrap()),
            modality: Some(vec.clone()),
            kind: Some(Kind::parse("episodic").unwrap()),
            content: Some(format!("note number {i}")),
            vector: Some(vec![i as f32, 1.0, -0.5]),
            metadata: json!({"n": i, "tags": ["a", "b"]})
                .as_object()
                .cloned()
                .unwrap(),
            ..Default::default()
        })
        .collect();
    let query = |engine: &Engine, scope: &TenantScope, include: Option<Vec<Include>>| {
        let s = SearchRequest {
            vector: Some(vec![7.2, 1.0, -0.5]),
            k: 3,
            modality: Some(vec.clone()),
            filter: Some(Filter::parse(&json!({"content": {"$ne": "note number 7"}})).unwrap()),
            include,
            ..Default::default()
        };
        engine.search(scope, &req(), &s).unwrap()
    };
    let check = |engine: &Engine, scope: &TenantScope| {
        let plain = query(engine, scope, None);
        assert_eq!(ids(&plain), ["r8", "r6", "r9"]);
        for hit in &plain.hits {
            let mut stored = engine.get(scope, &req(), &hit.id).unwrap();
            stored.vector = None;
            assert_eq!(hit.record.as_deref(), Some(&stored));
            assert!(stored.content.is_some() && stored.metadata.contains_key("tags"));
        }
        let with_vector = query(engine, scope, Some(vec![Include::Vector]));
        assert_eq!(
            with_vector.hits[0].record.as_ref().unwrap().vector,
            Some(vec![8.0, 1.0, -0.5])
        );
    };
    checked_across_an_image_load(dir.path(), (&vec, 3, Metric::L2), records, check);
}

/// Writes `records` into a new collection `(name, dim, metric)` of a tenant in `dir`, runs
/// `check`, saves the indexes, and runs `check` again after a restart that loads the
/// collection from its search image.
fn checked_across_an_image_load(
    dir: &std::path::Path,
    (name, dim, metric): (&CollectionName, u32, Metric),
    records: Vec<NewRecord>,
    check: impl Fn(&Engine, &TenantScope),
) {
    {
        let (engine, scope) = common::open_with_tenant(dir, "acme", common::full_grant());
        engine.create_collection(&scope, name, dim, metric).unwrap();
        engine.put(&scope, &req(), records).unwrap();
        check(&engine, &scope);
        engine.persist_indexes().unwrap();
    }
    let (engine, scope) = common::open_with_tenant(dir, "acme", common::full_grant());
    check(&engine, &scope);
    let stats = engine.index_stats(&scope).unwrap();
    let stats = stats.iter().find(|s| &s.collection == name).unwrap();
    assert!(stats.loaded_from_image, "the restart loaded the image");
}

/// A cosine collection's exact scan gives true cosines of vectors written at any length, as
/// written and after its search image was loaded: the scan scores the engine's unit-length
/// copies by one dot product against the query normalised once, so a copy left at its written
/// length on any path would show here as a wrong score.
#[test]
fn cosine_scores_are_true_cosines_before_and_after_an_image_load() {
    let dir = tempfile::tempdir().unwrap();
    let vec = CollectionName::parse("vec").unwrap();
    // Lengths from 1e-6 to 1e6, so no score could come out right by accident.
    let data: Vec<Vec<f32>> = (0..40)
        .map(|i| {
            let length = 10f32.powi(i % 13 - 6);
            let v = [
                (i as f32).sin(),
                (i as f32 * 0.7).cos(),
                0.3,
                -(i as f32) / 40.0,
            ];
            v.iter().map(|x| x * length).collect()
        })
        .collect();
    let query = [0.4f32, -1.2, 2.0, 0.1];
    let check = |engine: &Engine, scope: &TenantScope| {
        let s = SearchRequest {
            vector: Some(query.to_vec()),
            k: data.len(),
            modality: Some(vec.clone()),
            include: Some(Vec::new()),
            ..Default::default()
        };
        let answer = engine.search(scope, &req(), &s).unwrap();
        assert!(answer.exact, "a 40-vector collection is scanned exactly");
        assert_eq!(answer.hits.len(), data.len());
        for hit in &answer.hits {
            let i: usize = hit.id.as_str()[1..].parse().unwrap();
            let want = score(Metric::Cosine, &query, &data[i]);
            assert!(
                (hit.score - want).abs() < 1e-5,
                "{}: {} against {want}",
                hit.id.as_str(),
                hit.score
            );
        }
        assert_eq!(
            ids(&answer),
            truth(&data, Metric::Cosine, &query, data.len(), |_| true)
        );
    };
    let records = data
        .iter()
        .enumerate()
        .map(|(i, v)| NewRecord {
            id: Some(RecordId::parse(format!("r{i}")).unwrap()),
            modality: Some(vec.clone()),
            vector: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    checked_across_an_image_load(dir.path(), (&vec, 4, Metric::Cosine), records, check);
}

/// Searches racing deletes of their own best hits still answer k: a hit whose record a
/// concurrent write took out of sight after the index was searched is not simply dropped.
#[test]
fn searches_racing_deletes_of_their_hits_still_answer_k() {
    let (_dir, engine, scope, data) = loaded(2_000, Metric::L2);
    let query = data[0].clone();
    // The records nearest the query, best first: the writer deletes them in that order, so
    // the searches' top hits are the ones disappearing.
    let order: Vec<String> = search(&engine, &scope, &query, 300, None)
        .hits
        .iter()
        .map(|h| h.id.to_string())
        .collect();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for id in &order[..250] {
                engine
                    .delete(&scope, &req(), &RecordId::parse(id.as_str()).unwrap())
                    .unwrap();
            }
        });
        let mut searches = 0;
        while !writer.is_finished() || searches < 50 {
            let r = search(&engine, &scope, &query, 10, None);
            assert_eq!(r.hits.len(), 10, "search {searches}");
            searches += 1;
        }
    });
}

/// A record just below both channels' candidate lists whose fused score beats every hit
/// they hold is found whatever `k` (the lists go deeper until no record outside them can
/// outscore the hits): 60 records ahead of it by vector alone, 60 ahead by text alone.
#[test]
fn a_record_below_both_lists_is_found_whatever_k() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = text_tenant(dir.path(), "acme");
    let name = CollectionName::parse("hy").unwrap();
    engine
        .create_collection(&scope, &name, 2, Metric::Cosine)
        .unwrap();
    let rec = |id: String, v: [f32; 2], text: &str| NewRecord {
        id: Some(RecordId::parse(id).unwrap()),
        modality: Some(name.clone()),
        content: Some(text.into()),
        vector: Some(v.to_vec()),
        ..Default::default()
    };
    let mut records: Vec<NewRecord> = Vec::new();
    records.extend((0..60).map(|i| rec(format!("a{i:02}"), [0.8, 0.6], "zzz")));
    records.extend((0..60).map(|i| rec(format!("b{i:02}"), [0.0, 1.0], "kiwi kiwi")));
    records.extend((0..800).map(|i| rec(format!("f{i:03}"), [0.0, -1.0], "filler")));
    records.push(rec("c".into(), [0.7, 0.714_14], "kiwi"));
    for chunk in records.chunks(500) {
        engine.put(&scope, &req(), chunk.to_vec()).unwrap();
    }
    for k in [1, 10, 50, 60, 100] {
        let s = SearchRequest {
            vector: Some(vec![1.0, 0.0]),
            query: Some("kiwi".into()),
            k,
            modality: Some(name.clone()),
            ..Default::default()
        };
        let r = engine.search(&scope, &req(), &s).unwrap();
        assert_eq!(r.mode, SearchMode::Hybrid);
        assert_eq!(r.hits[0].id.as_str(), "c", "k = {k}: {:?}", ids(&r));
        assert_eq!(r.hits.len(), k);
    }
}
