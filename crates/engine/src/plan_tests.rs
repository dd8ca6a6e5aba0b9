//! `scope_candidates` against a simple model: the candidates are exactly the live slots whose
//! domain, run, memory scope and principals (`any` matching) the request allows, whether the
//! planner answers `All`, borrows one bitmap or intersects several.

use proptest::prelude::*;
use strata_index::RoaringBitmap;
use strata_types::{
    Collection, CollectionName, Confidence, Domain, MemoryScope, Metric, Record, RecordId,
    RequestScope, RunId, UserMatch, UserToken,
};

use super::{Candidates, scope_candidates};
use crate::collection_index::CollectionIndex;
use crate::visibility::{Principals, Visibility};

/// One record's scope: domain (0 = default), run, memory scope, tokens (indexes into small
/// name pools, so that records share them).
type Shape = (u8, Option<u8>, Option<u8>, Vec<u8>);

fn domain(i: u8) -> Domain {
    if i == 0 {
        Domain::default_domain()
    } else {
        Domain::parse(format!("d{i}")).unwrap()
    }
}

fn token(i: u8) -> UserToken {
    UserToken::parse(format!("u:{i}")).unwrap()
}

fn record(i: usize, (d, run, scope, tokens): &Shape) -> Record {
    let mut user_tokens: Vec<UserToken> = tokens.iter().map(|t| token(*t)).collect();
    user_tokens.sort();
    user_tokens.dedup();
    Record {
        id: RecordId::parse(format!("r{i}")).unwrap(),
        modality: CollectionName::parse("vec").unwrap(),
        kind: None,
        content: None,
        vector: Some(vec![i as f32, 1.0]),
        user_tokens,
        memory_domain: domain(*d),
        run_id: run.map(|r| RunId::parse(format!("run{r}")).unwrap()),
        memory_scope: scope.map(|s| MemoryScope::parse(format!("s{s}")).unwrap()),
        metadata: Default::default(),
        created_at: 0,
        updated_at: 0,
        expires_at: None,
        confidence: Confidence::initial(0.5),
    }
}

fn index(shapes: &[Shape], removed: &[usize]) -> CollectionIndex {
    let mut ci = CollectionIndex::new(&Collection {
        name: CollectionName::parse("vec").unwrap(),
        dim: 2,
        metric: Metric::L2,
        created_at: 0,
        embedder: None,
        analyzer: Default::default(),
        memory: Default::default(),
    });
    for (i, s) in shapes.iter().enumerate() {
        ci.upsert(&record(i, s), false).unwrap();
    }
    for i in removed.iter().filter(|i| **i < shapes.len()) {
        ci.remove(&RecordId::parse(format!("r{i}")).unwrap())
            .unwrap();
    }
    ci
}

/// A request in domain `d`, naming `run` / `scope` if given, speaking for `tokens` (`None`:
/// every principal).
fn visibility(d: u8, run: Option<u8>, scope: Option<u8>, tokens: Option<&[u8]>) -> Visibility {
    let req = RequestScope {
        run_id: run.map(|r| RunId::parse(format!("run{r}")).unwrap()),
        memory_scope: scope.map(|s| MemoryScope::parse(format!("s{s}")).unwrap()),
        ..Default::default()
    };
    let mut vis = Visibility::shared_domain(domain(d), &req, 0);
    vis.principals = match tokens {
        None => Principals::All,
        Some(t) => Principals::Set(t.iter().map(|t| token(*t)).collect(), UserMatch::Any),
    };
    vis
}

/// The model: records still present (record `i` sits in slot `i`, since every record is
/// placed before any is removed) in the request's domain, run and scope whose tokens are
/// empty or meet the request's. Computed from the shapes alone, not from the index.
fn model(shapes: &[Shape], removed: &[usize], vis: &Visibility) -> RoaringBitmap {
    (0..shapes.len())
        .filter(|i| !removed.contains(i))
        .filter(|&i| {
            let r = record(i, &shapes[i]);
            let principals = match &vis.principals {
                Principals::All => true,
                Principals::Set(set, _) => {
                    r.user_tokens.is_empty() || r.user_tokens.iter().any(|t| set.contains(t))
                }
            };
            r.memory_domain == vis.domain
                && vis
                    .run_id
                    .as_ref()
                    .is_none_or(|x| r.run_id.as_ref() == Some(x))
                && vis
                    .memory_scope
                    .as_ref()
                    .is_none_or(|m| r.memory_scope.as_ref() == Some(m))
                && principals
        })
        .map(|i| i as u32)
        .collect()
}

fn shared(d: u8) -> Shape {
    (d, None, None, vec![])
}

#[test]
fn one_domain_of_shared_records_needs_no_bitmap() {
    let ci = index(&[shared(0), shared(0), shared(0)], &[]);
    assert!(matches!(
        scope_candidates(&ci, &visibility(0, None, None, Some(&[]))),
        Candidates::All
    ));
    assert!(matches!(
        scope_candidates(&ci, &visibility(0, None, None, None)),
        Candidates::All
    ));
    // A removed record leaves every remaining one in: still no bitmap.
    let ci = index(&[shared(0), shared(1), shared(0)], &[1]);
    assert!(matches!(
        scope_candidates(&ci, &visibility(0, None, None, Some(&[]))),
        Candidates::All
    ));
}

#[test]
fn a_single_narrowing_bitmap_is_borrowed() {
    let ci = index(&[shared(0), shared(1), shared(0)], &[]);
    let c = scope_candidates(&ci, &visibility(0, None, None, Some(&[])));
    match &c {
        Candidates::Some(std::borrow::Cow::Borrowed(b)) => {
            assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 2]);
        }
        _ => panic!("expected the domain bitmap, borrowed"),
    }
}

#[test]
fn unknown_names_give_no_candidates() {
    let ci = index(&[shared(0), (0, Some(1), Some(1), vec![])], &[]);
    for vis in [
        visibility(3, None, None, None),
        visibility(0, Some(7), None, None),
        visibility(0, None, Some(7), None),
    ] {
        assert!(scope_candidates(&ci, &vis).bitmap(&ci).is_empty());
    }
}

#[test]
fn private_records_narrow_an_unbound_request_to_the_shared_ones() {
    let ci = index(&[shared(0), (0, None, None, vec![1]), shared(0)], &[]);
    let c = scope_candidates(&ci, &visibility(0, None, None, Some(&[])));
    assert_eq!(c.bitmap(&ci).iter().collect::<Vec<_>>(), vec![0, 2]);
    let c = scope_candidates(&ci, &visibility(0, None, None, Some(&[1])));
    assert!(
        matches!(c, Candidates::All),
        "the token covers every record"
    );
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        0u8..3,
        proptest::option::of(0u8..3),
        proptest::option::of(0u8..3),
        proptest::collection::vec(0u8..3, 0..3),
    )
}

proptest! {
    #[test]
    fn candidates_are_exactly_the_model(
        shapes in proptest::collection::vec(shape(), 0..40),
        removed in proptest::collection::vec(0usize..40, 0..10),
        d in 0u8..3,
        run in proptest::option::of(0u8..3),
        scope in proptest::option::of(0u8..3),
        tokens in proptest::option::of(proptest::collection::vec(0u8..3, 0..3)),
    ) {
        let ci = index(&shapes, &removed);
        let vis = visibility(d, run, scope, tokens.as_deref());
        let expected = model(&shapes, &removed, &vis);
        let c = scope_candidates(&ci, &vis);
        prop_assert_eq!(c.bitmap(&ci), &expected);
        if matches!(c, Candidates::All) {
            prop_assert_eq!(&ci.live, &expected);
        }
    }
}

/// `$ne` and `$nin` on metadata are answered by the field index exactly as `Filter::matches`
/// decides them on the records: missing fields, arrays holding the value, other types.
mod complements {
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use strata_types::Filter;

    use super::record;
    use crate::plan::filter_candidates;

    fn value(i: u8) -> Value {
        match i % 6 {
            0 => json!("a"),
            1 => json!("b"),
            2 => json!(1),
            3 => json!(["a", 2]),
            4 => json!({"nested": "a"}),
            _ => Value::Null,
        }
    }

    proptest! {
        #[test]
        fn ne_and_nin_match_the_records(
            values in proptest::collection::vec(proptest::option::of(0u8..6), 1..40),
            probe in proptest::collection::vec(0u8..3, 1..3),
            removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let mut ci = super::index(&[], &[]);
            let mut records = Vec::new();
            for (i, v) in values.iter().enumerate() {
                let mut r = record(i, &(0, None, None, vec![]));
                if let Some(v) = v {
                    r.metadata.insert("f".into(), value(*v));
                }
                ci.upsert(&r, false).unwrap();
                records.push(Some(r));
            }
            for at in removed {
                let i = at.index(records.len());
                if let Some(r) = records[i].take() {
                    ci.remove(&r.id).unwrap();
                }
            }
            let probes: Vec<Value> = probe.iter().map(|p| value(*p)).collect();
            for filter in [
                json!({"f": {"$ne": probes[0]}}),
                json!({"f": {"$nin": probes}}),
            ] {
                let f = Filter::parse(&filter).unwrap();
                let narrowed = filter_candidates(&f, &ci).expect("answered by the index");
                prop_assert!(narrowed.exact);
                let want: Vec<u32> = records
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.as_ref().is_some_and(|r| f.matches(r)))
                    .map(|(i, _)| i as u32)
                    .collect();
                prop_assert_eq!(narrowed.slots.iter().collect::<Vec<_>>(), want, "{}", filter);
            }
        }
    }
}

/// `$eq`, `$in` and ranges, on metadata (scalars, arrays, arrays of objects reached by dotted
/// paths, other types, missing) and on built-in
/// fields (`null` on those a record may lack): whatever the field index answers exactly is exactly what `Filter::matches` decides
/// on the records, and an inexact answer never leaves out a matching record.
mod lookups {
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use strata_types::{Confidence, Filter, Kind};

    use super::record;
    use crate::plan::filter_candidates;

    fn value(i: u8) -> Value {
        match i % 12 {
            // Arrays of objects, which `f.g` and `f.g.h` reach into; elements that are not
            // objects (a scalar, a nested array) hold no key.
            9 => json!([{"g": "a"}, {"g": [1, 3]}, {"x": 2}]),
            10 => json!([{"g": {"h": "b"}}, "a", [{"g": 2.5}], {"g": [{"h": 1}, {"h": [2, "a"]}]}]),
            11 => json!({"g": [{"h": 2.5}, {"g": "b"}], "h": true}),
            0 => json!("a"),
            1 => json!("b"),
            2 => json!(1),
            3 => json!(2.5),
            4 => json!(["a", 2]),
            5 => json!([1, 3]),
            6 => json!(true),
            7 => json!({"nested": "a"}),
            _ => Value::Null,
        }
    }

    /// A scalar a filter compares with.
    fn probe(i: u8) -> Value {
        match i % 6 {
            0 => json!("a"),
            1 => json!("b"),
            2 => json!(1),
            3 => json!(2),
            4 => json!(2.5),
            _ => json!(true),
        }
    }

    fn filters(p: &[Value], n: u8) -> Vec<Value> {
        let (a, b) = (&p[0], &p[1]);
        let n = u64::from(n);
        let mut out = vec![
            json!({"f": a}),
            json!({"f": {"$eq": b}}),
            json!({"f": {"$in": p}}),
            json!({"kind": {"$eq": "k1"}}),
            json!({"kind": {"$in": ["k0", "k2"]}}),
            json!({"created_at": n}),
            json!({"created_at": {"$in": [n, n + 1]}}),
            json!({"$or": [{"f": a}, {"created_at": {"$lt": n}}]}),
            json!({"$and": [{"f": {"$in": p}}, {"confidence": {"$gte": 0.5}}]}),
            // `null` on a built-in field a record may lack: the records without it.
            json!({"expires_at": null}),
            json!({"expires_at": {"$ne": null}}),
            json!({"expires_at": {"$in": [null, n]}}),
            json!({"expires_at": {"$nin": [null, n + 1]}}),
            json!({"expires_at": n}),
            json!({"kind": null}),
            json!({"kind": {"$in": [null, "k1"]}}),
            json!({"kind": {"$nin": [null]}}),
            json!({"$or": [{"kind": null}, {"expires_at": null}]}),
            json!({"f.g": a}),
            json!({"f.g": {"$in": p}}),
            json!({"f.g.h": b}),
            json!({"f.g.h": {"$in": p}}),
            json!({"$and": [{"f.g": {"$in": p}}, {"f.g.h": {"$nin": [a]}}]}),
            json!({"f.g": {"$ne": b}}),
            json!({"f.g.h": {"$nin": p}}),
        ];
        for op in ["$gt", "$gte", "$lt", "$lte"] {
            for bound in [json!(n), json!(2.5), json!("b")] {
                out.push(json!({"f": {op: bound}}));
                out.push(json!({"f.g": {op: bound}}));
                out.push(json!({"f.g.h": {op: bound}}));
            }
            out.push(json!({"created_at": {op: n}}));
            out.push(json!({"updated_at": {op: n * 2}}));
            out.push(json!({"confidence": {op: 0.5}}));
            out.push(json!({"kind": {op: "k1"}}));
            out.push(json!({"expires_at": {op: n}}));
        }
        out
    }

    /// A range over a path holding far more values than records is left to matching the
    /// records (a union of one bitmap per value, once per clause, cost seconds); equality,
    /// one lookup per value, stays with the index.
    #[test]
    fn a_range_over_a_path_of_many_values_per_record_is_left_to_the_records() {
        let mut ci = super::index(&[], &[]);
        for i in 0..3 {
            let mut r = record(i, &(0, None, None, vec![]));
            let files: Vec<Value> = (0..3000).map(|j| json!({"a": i * 3000 + j})).collect();
            r.metadata.insert("f".into(), Value::Array(files));
            ci.upsert(&r, false).unwrap();
        }
        for filter in [
            json!({"f.a": {"$gt": 10}}),
            json!({"$or": [{"f.a": {"$lt": 5}}]}),
        ] {
            let f = Filter::parse(&filter).unwrap();
            assert!(filter_candidates(&f, &ci).is_none(), "{filter}");
        }
        let f = Filter::parse(&json!({"f.a": 3001})).unwrap();
        let narrowed = filter_candidates(&f, &ci).expect("equality from the index");
        assert!(narrowed.exact);
        assert_eq!(narrowed.slots.iter().collect::<Vec<_>>(), vec![1]);
    }

    proptest! {
        #[test]
        fn eq_in_and_ranges_match_the_records(
            rows in proptest::collection::vec(
                (
                    proptest::option::of(0u8..12),
                    0u8..4,
                    proptest::option::of(0u8..3),
                    proptest::option::of(0u8..3),
                ),
                1..40,
            ),
            probes in proptest::collection::vec(0u8..6, 2..4),
            n in 0u8..4,
            removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let mut ci = super::index(&[], &[]);
            let mut records = Vec::new();
            for (i, (v, at, kind, expires)) in rows.iter().enumerate() {
                let mut r = record(i, &(0, None, None, vec![]));
                if let Some(v) = v {
                    r.metadata.insert("f".into(), value(*v));
                }
                r.created_at = i64::from(*at);
                r.updated_at = i64::from(*at) * 2 + 1;
                r.confidence = Confidence::initial(f64::from(*at) / 4.0);
                r.kind = kind.map(|k| Kind::parse(format!("k{k}")).unwrap());
                r.expires_at = expires.map(i64::from);
                ci.upsert(&r, false).unwrap();
                records.push(Some(r));
            }
            for at in removed {
                let i = at.index(records.len());
                if let Some(r) = records[i].take() {
                    ci.remove(&r.id).unwrap();
                }
            }
            let p: Vec<Value> = probes.iter().map(|i| probe(*i)).collect();
            for filter in filters(&p, n) {
                let f = Filter::parse(&filter).unwrap();
                let want: Vec<u32> = records
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.as_ref().is_some_and(|r| f.matches(r)))
                    .map(|(i, _)| i as u32)
                    .collect();
                let narrowed = filter_candidates(&f, &ci).expect("answered by the index");
                prop_assert!(narrowed.exact, "{}", filter);
                prop_assert_eq!(narrowed.slots.iter().collect::<Vec<_>>(), want, "{}", filter);
            }
        }
    }
}

/// 20k candidates of 128 dimensions (2.56M multiply-adds) are past the budget tuned at `ef`
/// 64, so the graph is chosen there; a graph calibrated to `ef` 512 would do eight times that
/// walk, so without a request `ef` the exact scan is chosen; a request `ef` keeps the budget.
#[test]
fn a_calibrated_default_ef_widens_the_exact_scan_budget() {
    use super::graph_pays;
    let (n, dim) = (20_000, 128);
    assert!(graph_pays(n, dim, None, 64));
    assert!(!graph_pays(n, dim, None, 512));
    assert!(graph_pays(n, dim, Some(64), 512));
    assert!(graph_pays(n, dim, Some(512), 512));
    // Far enough past the widened budget, the graph is chosen again.
    assert!(graph_pays(200_000, dim, None, 512));
    // A default below 64 never narrows the budget.
    assert!(!graph_pays(10_000, dim, None, 16));
}

/// `(slot, score bits)` of each hit, in order.
fn ranked(hits: &[strata_index::Hit]) -> Vec<(u32, u32)> {
    hits.iter().map(|h| (h.slot, h.score.to_bits())).collect()
}

proptest! {
    /// An exact scan of every vector of a collection whose slots all hold one reads the copy
    /// straight through; it ranks exactly what the walk over the candidate bitmap ranks, and
    /// a collection with a free slot (a removed record) takes the walk.
    #[test]
    fn the_straight_scan_ranks_what_the_bitmap_walk_ranks(
        n in 1usize..60,
        removed in prop::collection::vec(0usize..70, 0..4),
        query in (-80f32..80.0, -3f32..3.0),
        k in 1usize..15,
    ) {
        let ci = index(&vec![shared(0); n], &removed);
        prop_assert_eq!(ci.dense_vectors().is_some(), removed.iter().all(|r| *r >= n));
        let query = [query.0, query.1];
        let scan = |unrestricted| {
            super::vector_top(&ci, &ci.with_vector, unrestricted, &query, k, k, None, None, &|_| true)
                .unwrap()
        };
        let (straight, exact) = scan(true);
        let (walked, _) = scan(false);
        prop_assert!(exact);
        prop_assert_eq!(straight.len(), k.min(ci.with_vector.len() as usize));
        prop_assert_eq!(ranked(&straight), ranked(&walked));
    }
}
