//! Numeric hygiene end to end: vectors at the edges of what `strata-types` accepts (subnormal,
//! tiny, huge up to the 1e15 norm bound, at dimensions up to `max_dim`) are stored and searched
//! with finite scores, cosine in [-1, 1] and "never fewer than k"; vectors past the edges are
//! refused with a typed error naming the field, for writes, patches, imports and queries.

mod common;

use proptest::prelude::*;
use serde_json::json;
use strata_auth::{OperatorScope, TenantScope};
use strata_engine::{Engine, EngineError, ExportLine};
use strata_types::*;

fn req() -> RequestScope {
    RequestScope::default()
}

fn name() -> CollectionName {
    CollectionName::parse("num").unwrap()
}

/// A vector of `dim` components, from a seed: a direction drawn from ordinary, tiny, subnormal
/// and zero values, scaled (in f64) to a norm between subnormal territory and just past the
/// bound; one time in four, one component is then made non-finite or pushed to either side of
/// the bound.
fn extreme_vector(dim: usize, seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let unit = |r: u64| (r >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
    let direction: Vec<f64> = (0..dim)
        .map(|_| {
            let r = next();
            match r % 8 {
                0 => 0.0,
                1 => unit(r) * 1e-30,
                2 => f64::from(f32::from_bits((r >> 16) as u32 % 0x007F_FFFF + 1)),
                _ => unit(r),
            }
        })
        .collect();
    let length = direction.iter().map(|c| c * c).sum::<f64>().sqrt();
    let bound = MAX_VECTOR_NORM;
    let norms = [
        1e-42,
        1e-30,
        1e-3,
        1.0,
        1e7,
        bound * (1.0 - 1e-6),
        bound,
        bound * 1.0001,
    ];
    let norm = norms[(next() % norms.len() as u64) as usize];
    let mut v: Vec<f32> = direction
        .iter()
        .map(|c| {
            if length > 0.0 {
                (c / length * norm) as f32
            } else {
                0.0
            }
        })
        .collect();
    if next() % 4 == 0 {
        let spoilers = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3e38,
            -3e38,
            f32::MAX,
            (bound as f32).next_up(),
            -(bound as f32).next_down(),
        ];
        let at = (next() % dim as u64) as usize;
        v[at] = spoilers[(next() % spoilers.len() as u64) as usize];
    }
    v
}

/// The documented contract, written independently of the code under test: the field a
/// refusal must name, or `None` when the vector is accepted.
fn refusal(v: &[f32], cosine_record: bool) -> Option<String> {
    for (i, x) in v.iter().enumerate() {
        if !x.is_finite() || f64::from(x.abs()) > MAX_VECTOR_NORM {
            return Some(format!("vector[{i}]: "));
        }
    }
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    if norm > MAX_VECTOR_NORM {
        return Some("vector: ".into());
    }
    if cosine_record && v.iter().all(|x| *x == 0.0) {
        return Some("vector: a zero vector".into());
    }
    None
}

fn assert_refused(err: EngineError, field: &str) {
    assert!(
        matches!(err, EngineError::InvalidRecord(_)),
        "not a validation error: {err:?}"
    );
    assert!(err.to_string().starts_with(field), "{err} (want {field})");
}

/// The score `metric` gives `b` for the query `a`, in f64, with the tolerance the f32 kernels
/// must meet: `n · ε` relative to the magnitudes summed, plus what underflowing products lose.
fn reference(metric: Metric, a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut ab, mut aa, mut bb, mut d2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
        d2 += (x - y) * (x - y);
    }
    let (na, nb) = (aa.sqrt(), bb.sqrt());
    let eps = 4.0 * a.len() as f64 * f64::from(f32::EPSILON);
    let underflow = a.len() as f64 * f64::from(f32::from_bits(1));
    match metric {
        Metric::Cosine if na == 0.0 || nb == 0.0 => (0.0, 1e-6),
        Metric::Cosine => (ab / (na * nb), 1e-3),
        Metric::Dot => (ab, eps * na * nb + underflow),
        Metric::L2 => (-d2.sqrt(), eps * (na + nb) + underflow.sqrt()),
    }
}

fn setup(dim: u32, metric: Metric) -> (tempfile::TempDir, Engine, TenantScope) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    engine
        .create_collection(&scope, &name(), dim, metric)
        .unwrap();
    (dir, engine, scope)
}

fn record(i: usize, v: &[f32]) -> NewRecord {
    NewRecord {
        id: Some(RecordId::parse(format!("r{i}")).unwrap()),
        modality: Some(name()),
        content: Some(format!("word{}", i % 3)),
        vector: Some(v.to_vec()),
        ..Default::default()
    }
}

/// Searches with `q` in every mode that uses it and checks the contract on each response.
fn check_search(
    engine: &Engine,
    scope: &TenantScope,
    metric: Metric,
    stored: &[(usize, Vec<f32>)],
    q: &[f32],
    k: usize,
) {
    let search = |mode, fusion| SearchRequest {
        vector: Some(q.to_vec()),
        query: Some("word1".into()),
        k,
        modality: Some(name()),
        mode: Some(mode),
        fusion,
        explain: true,
        ..Default::default()
    };
    let vector = engine
        .search(
            scope,
            &req(),
            &search(SearchMode::Vector, Fusion::default()),
        )
        .unwrap();
    assert_eq!(vector.hits.len(), k.min(stored.len()), "never fewer than k");
    for pair in vector.hits.windows(2) {
        assert!(pair[0].score >= pair[1].score, "ranked best first");
    }
    for hit in &vector.hits {
        let id = hit.id.to_string();
        let (_, v) = stored
            .iter()
            .find(|(i, _)| format!("r{i}") == id)
            .expect("a stored record");
        let (want, tolerance) = reference(metric, q, v);
        assert!(
            (f64::from(hit.score) - want).abs() <= tolerance,
            "{metric:?} {id}: score {} vs {want} (± {tolerance})",
            hit.score
        );
    }
    let hybrid = [Fusion::Rrf { k: 60 }, Fusion::Weighted { alpha: 0.3 }].map(|f| {
        engine
            .search(scope, &req(), &search(SearchMode::Hybrid, f))
            .unwrap()
    });
    for response in hybrid.iter().chain([&vector]) {
        assert_eq!(response.hits.len(), k.min(stored.len()));
        let json = serde_json::to_value(response).unwrap();
        for hit in json["hits"].as_array().unwrap() {
            assert!(hit["score"].is_number(), "score is not a number: {hit}");
            if let Some(s) = hit["explain"].get("vector_score") {
                assert!(s.is_number(), "{hit}");
            }
        }
        for hit in &response.hits {
            assert!(hit.score.is_finite(), "{hit:?}");
            if metric == Metric::Cosine {
                let s = hit.explain.as_ref().and_then(|e| e.vector_score);
                assert!(s.is_none_or(|s| (-1.0..=1.0).contains(&s)), "{hit:?}");
            }
        }
    }
}

fn metric_of(i: u8) -> Metric {
    [Metric::Cosine, Metric::Dot, Metric::L2][usize::from(i % 3)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Writes extreme vectors into a collection of any metric and dimension (up to the default
    /// `max_dim`), then searches it with extreme queries.
    #[test]
    fn extreme_vectors_are_refused_or_score_finitely(
        metric in (0u8..3).prop_map(metric_of),
        dim in prop_oneof![3 => 1u32..9, 1 => Just(4096u32)],
        seeds in proptest::collection::vec(any::<u64>(), 1..30),
        queries in proptest::collection::vec(any::<u64>(), 1..4),
        k in 1usize..40,
    ) {
        let (_dir, engine, scope) = setup(dim, metric);
        let cosine = metric == Metric::Cosine;
        let mut stored = Vec::new();
        let mut refused = Vec::new();
        for (i, seed) in seeds.iter().enumerate() {
            let v = extreme_vector(dim as usize, *seed);
            match refusal(&v, cosine) {
                None => stored.push((i, v)),
                Some(field) => refused.push((i, v, field)),
            }
        }
        // Accepted vectors go in as one batch; each refused one alone, and so does a batch
        // holding it: all or nothing.
        let batch: Vec<_> = stored.iter().map(|(i, v)| record(*i, v)).collect();
        // An empty batch is refused as such: only when something was accepted.
        if !batch.is_empty() {
            engine.put(&scope, &req(), batch).unwrap();
        }
        for (i, v, field) in &refused {
            let err = engine.put(&scope, &req(), vec![record(*i, v)]).unwrap_err();
            assert_refused(err, field);
            if let Some((j, ok)) = stored.first() {
                let both = vec![record(*i, v), record(*j + 1000, ok)];
                let err = engine.put(&scope, &req(), both).unwrap_err();
                assert!(err.to_string().starts_with("records[0]."), "{err}");
                // A batch's refusal names the record first (`records[0].vector[3]: ...`).
                let EngineError::InvalidRecordAt { index: 0, error } = err else {
                    panic!("not the first record's validation error: {err:?}");
                };
                assert_refused(EngineError::InvalidRecord(error), field);
                let patch = RecordPatch { vector: Some(v.clone()), ..Default::default() };
                let id = RecordId::parse(format!("r{j}")).unwrap();
                assert_refused(engine.patch(&scope, &req(), &id, patch).unwrap_err(), field);
            }
        }
        let count = engine.count(&scope, &req(), None).unwrap();
        prop_assert_eq!(count, stored.len() as u64, "only accepted records are stored");

        for seed in queries {
            check_query(&engine, &scope, metric, &stored, &extreme_vector(dim as usize, seed), k);
        }
    }
}

/// Searches with one extreme query: a vector past the edges is refused naming its field; a
/// zero query on a cosine collection has no direction and is refused as a bad request (as a
/// zero stored vector is); any other query keeps the contract of `check_search`.
fn check_query(
    engine: &Engine,
    scope: &TenantScope,
    metric: Metric,
    stored: &[(usize, Vec<f32>)],
    q: &[f32],
    k: usize,
) {
    let s = SearchRequest {
        vector: Some(q.to_vec()),
        k,
        modality: Some(name()),
        ..Default::default()
    };
    match refusal(q, false) {
        Some(field) => assert_refused(engine.search(scope, &req(), &s).unwrap_err(), &field),
        None if metric == Metric::Cosine && q.iter().all(|x| *x == 0.0) => {
            let err = engine.search(scope, &req(), &s).unwrap_err();
            assert!(
                matches!(&err, EngineError::BadRequest(m)
                    if m.starts_with("vector: a zero vector has no direction")),
                "{err:?}"
            );
        }
        None if !stored.is_empty() => check_search(engine, scope, metric, stored, q, k),
        None => {}
    }
}

/// The case that found the zero cosine query (a 1-dimensional query whose only component
/// is 0), kept as a fixed test so it is tried on every run, not only when the random
/// cases happen to draw it.
#[test]
fn a_zero_query_on_a_cosine_collection_is_refused() {
    let (_dir, engine, scope) = setup(1, Metric::Cosine);
    let stored = vec![(0, vec![0.5f32])];
    engine
        .put(&scope, &req(), vec![record(0, &stored[0].1)])
        .unwrap();
    let q = extreme_vector(1, 7292143071361391793);
    assert_eq!(q, vec![0.0], "the seed draws the zero query");
    check_query(&engine, &scope, Metric::Cosine, &stored, &q, 14);
    check_query(&engine, &scope, Metric::Cosine, &stored, &[0.25], 14);
}

/// A collection large enough to be searched on the HNSW graph, holding vectors from subnormal
/// scale to the bound: the graph path keeps the same contract as the exact scan.
#[test]
fn extreme_vectors_on_the_graph_path() {
    // 1100 vectors × 2048 dimensions is past the planner's exact-scan budget (2M).
    let (n, dim) = (1100usize, 2048usize);
    let norms = [1e-40, 1e-20, 1.0, 1e10, MAX_VECTOR_NORM * (1.0 - 1e-6)];
    let base = strata_index::testdata::clustered(n, dim, 20, 3);
    let scale = |v: &[f32], norm: f64| -> Vec<f32> {
        let length = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        v.iter()
            .map(|&x| (f64::from(x) / length * norm) as f32)
            .collect()
    };
    let vectors: Vec<Vec<f32>> = base
        .iter()
        .enumerate()
        .map(|(i, v)| scale(v, norms[i % norms.len()]))
        .collect();
    let queries: Vec<Vec<f32>> = norms
        .iter()
        .enumerate()
        .map(|(i, norm)| scale(&base[i * 7], *norm))
        .collect();
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let (_dir, engine, scope) = setup(dim as u32, metric);
        for (c, part) in vectors.chunks(500).enumerate() {
            let batch = part
                .iter()
                .enumerate()
                .map(|(j, v)| record(c * 500 + j, v))
                .collect();
            engine.put(&scope, &req(), batch).unwrap();
        }
        // Graphs are built in the background after the first load; searches scan exactly
        // until then.
        engine.index_stats(&scope).unwrap();
        engine.wait_for_graph_builds();
        for q in &queries {
            // A request's own `ef` keeps the planner's exact-scan budget at its base: a
            // calibrated default beam (these norms are hard data) would widen it past this
            // collection and answer exactly.
            let s = SearchRequest {
                vector: Some(q.clone()),
                k: 10,
                ef: Some(64),
                modality: Some(name()),
                ..Default::default()
            };
            let r = engine.search(&scope, &req(), &s).unwrap();
            assert!(!r.exact, "{metric:?}: expected the graph to answer");
            assert_eq!(r.hits.len(), 10, "{metric:?}");
            for h in &r.hits {
                assert!(h.score.is_finite(), "{metric:?}: {h:?}");
                if metric == Metric::Cosine {
                    assert!((-1.0..=1.0).contains(&h.score), "{h:?}");
                }
            }
        }
    }
}

/// The lines of an import of tenant `copy`: its tenant line, collection `num` (4 dimensions,
/// dot) and one record line.
fn import_of(record: serde_json::Value) -> Vec<Result<ExportLine, EngineError>> {
    vec![
        Ok(common::tenant_line("copy")),
        Ok(ExportLine::Collection(Collection {
            name: name(),
            dim: 4,
            metric: Metric::Dot,
            created_at: 0,
            embedder: None,
            analyzer: Default::default(),
            memory: Default::default(),
        })),
        Ok(serde_json::from_value(record).unwrap()),
    ]
}

/// An import is checked like a write: a record line with the finding's vector is refused with
/// its line and field named, and no tenant is left behind.
#[test]
fn import_refuses_out_of_range_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let op = OperatorScope::for_tests();
    for (vector, field) in [
        (json!([3e38, -3e38, 3e38, -3e38]), "vector[0]: "),
        (json!([6e14, 6e14, 6e14, 6e14]), "vector: "),
    ] {
        let lines = import_of(json!({
            "type": "record", "id": "x", "modality": "num", "kind": null, "content": null,
            "vector": vector, "user_tokens": [], "memory_domain": "default", "run_id": null,
            "memory_scope": null, "metadata": {}, "created_at": 0, "updated_at": 0,
            "expires_at": null, "confidence": {"value": 0.5}
        }));
        let copy = TenantId::parse("copy").unwrap();
        let err = engine.import_tenant(&op, &copy, lines).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("import line 3: {field}")),
            "{message}"
        );
        assert!(matches!(
            engine.tenant(&op, &copy),
            Err(EngineError::TenantNotFound(_))
        ));
    }
}

/// An imported record's times must be times from 1970 to 2^53 ms: a `created_at` past what the
/// index's timestamp columns hold exactly, or before 1970, is refused with its line and field.
#[test]
fn import_refuses_times_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let op = OperatorScope::for_tests();
    for (field, value) in [
        ("created_at", json!(9_007_199_254_740_993u64)),
        ("updated_at", json!(i64::MAX)),
        ("created_at", json!(-1)),
        ("expires_at", json!(i64::MAX)),
    ] {
        let mut record = json!({
            "type": "record", "id": "x", "modality": "num", "kind": null, "content": "x",
            "vector": null, "user_tokens": [], "memory_domain": "default", "run_id": null,
            "memory_scope": null, "metadata": {}, "created_at": 0, "updated_at": 0,
            "expires_at": null, "confidence": {"value": 0.5}
        });
        record[field] = value.clone();
        let lines = import_of(record);
        let copy = TenantId::parse("copy").unwrap();
        let message = engine
            .import_tenant(&op, &copy, lines)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!("import line 3: {field}: {value} is not a time")),
            "{message}"
        );
    }
}

/// A write or a patch holds `expires_at` to the bound an import holds it to, so an export
/// of whatever writes stored can always be imported again (one record far past 2^53 made a
/// whole tenant's export refused by line).
#[test]
fn writes_and_patches_refuse_an_expiry_an_import_would_refuse() {
    let (_dir, engine, scope) = setup(2, Metric::Dot);
    let late = |i: usize, at: i64| NewRecord {
        expires_at: Some(at),
        ..record(i, &[1.0, 2.0])
    };
    for at in [MAX_RECORD_TIME + 1, i64::MAX] {
        let err = engine.put(&scope, &req(), vec![late(0, at)]).unwrap_err();
        assert!(
            matches!(err, EngineError::InvalidRecord(RecordError::ExpiryTooLate { at: a }) if a == at),
            "{err}"
        );
    }
    // The bound itself is a time a record may carry.
    engine
        .put(&scope, &req(), vec![late(1, MAX_RECORD_TIME)])
        .unwrap();
    let id = RecordId::parse("r1").unwrap();
    let patch = RecordPatch {
        expires_at: Some(Some(MAX_RECORD_TIME + 1)),
        ..Default::default()
    };
    let err = engine.patch(&scope, &req(), &id, patch).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::InvalidRecord(RecordError::ExpiryTooLate { .. })
        ),
        "{err}"
    );
    // What was stored exports and imports again.
    let op = OperatorScope::for_tests();
    let mut lines = Vec::new();
    engine
        .export_tenant(&op, scope.tenant(), |l| {
            lines.push(Ok(l.clone()));
            Ok(())
        })
        .unwrap();
    let copy = TenantId::parse("copy").unwrap();
    engine.import_tenant(&op, &copy, lines).unwrap();
}

/// `min_score` is compared with every score, so it must be a number a score can be.
#[test]
fn min_score_must_be_finite() {
    let (_dir, engine, scope) = setup(2, Metric::Dot);
    engine
        .put(&scope, &req(), vec![record(0, &[1.0, 2.0])])
        .unwrap();
    for (min_score, hits) in [(Some(f32::INFINITY), None), (Some(f32::MIN), Some(1))] {
        let s = SearchRequest {
            vector: Some(vec![1.0, 0.0]),
            modality: Some(name()),
            min_score,
            ..Default::default()
        };
        match (engine.search(&scope, &req(), &s), hits) {
            (Ok(r), Some(n)) => assert_eq!(r.hits.len(), n),
            (Err(e), None) => assert!(e.to_string().starts_with("min_score: "), "{e}"),
            (other, _) => panic!("{min_score:?}: {other:?}"),
        }
    }
}

/// Metadata ids past 2^53 (a chat platform's message ids), which `f64` cannot tell apart, are
/// filtered exactly by search and count, equality and ranges alike, before and after the
/// tenant is loaded again from what it stored.
#[test]
fn metadata_integers_past_2_pow_53_filter_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let base: u64 = 1 << 53;
    let filter = |v: serde_json::Value| Filter::parse(&v).unwrap();
    let check = |engine: &Engine, scope: &TenantScope| {
        let hits = |f: Filter| -> Vec<String> {
            let mut ids: Vec<String> = engine
                .search(
                    scope,
                    &req(),
                    &SearchRequest {
                        vector: Some(vec![1.0, 0.0, 0.0]),
                        modality: Some(name()),
                        k: 10,
                        filter: Some(f),
                        ..Default::default()
                    },
                )
                .unwrap()
                .hits
                .into_iter()
                .map(|h| h.id.to_string())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(hits(filter(json!({"msg": base + 1}))), ["m1"]);
        assert_eq!(hits(filter(json!({"msg": {"$in": [base + 2, 7]}}))), ["m2"]);
        assert_eq!(hits(filter(json!({"msg": {"$gt": base}}))), ["m1", "m2"]);
        assert_eq!(
            hits(filter(json!({"msg": {"$lte": base + 1}}))),
            ["m0", "m1"]
        );
        assert_eq!(hits(filter(json!({"msg": base as f64}))), ["m0"]);
        let count = |f: serde_json::Value| engine.count(scope, &req(), Some(&filter(f))).unwrap();
        assert_eq!(count(json!({"msg": base + 1})), 1);
        assert_eq!(count(json!({"msg": {"$ne": base + 1}})), 2);
    };
    {
        let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
        engine
            .create_collection(&scope, &name(), 3, Metric::Cosine)
            .unwrap();
        let records = (0..3u64)
            .map(|i| {
                serde_json::from_value(json!({
                    "id": format!("m{i}"), "modality": "num",
                    "vector": [1.0, i as f32 * 0.1, 0.0], "metadata": {"msg": base + i},
                }))
                .unwrap()
            })
            .collect();
        engine.put(&scope, &req(), records).unwrap();
        check(&engine, &scope);
    }
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    check(&engine, &scope);
}
