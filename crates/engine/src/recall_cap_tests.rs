//! What one recall may look at is bounded (`recall::MAX_RECALL_LOOKS`): past the bound it stops
//! spreading, says so, and answers the best of what it reached, each hit with a path of links
//! that exist, from a seed.

use strata_types::{NewLink, NewRecord, RecallParams, RecordId, RequestScope, SearchRequest, Via};

use crate::test_support::engine_with_tenant;

fn id(name: &str) -> RecordId {
    RecordId::parse(name).unwrap()
}

#[test]
fn a_recall_stops_spreading_at_its_bound_and_says_so() {
    let (_dir, engine, scope) = engine_with_tenant("acme");
    let req = RequestScope::default();
    // One seed ("hub", the only record with its text), linked to 30 records, each linked to
    // 10 more: 331 records in reach at depth 2.
    let mut records = vec![NewRecord {
        id: Some(id("hub")),
        content: Some("the hub of everything".into()),
        ..Default::default()
    }];
    let mut links = Vec::new();
    for i in 0..30 {
        records.push(NewRecord {
            id: Some(id(&format!("a{i}"))),
            content: Some(format!("spoke {i}")),
            ..Default::default()
        });
        links.push(NewLink {
            source: id("hub"),
            target: id(&format!("a{i}")),
            relation: strata_types::related(),
            weight: 1.0 - i as f32 / 100.0,
        });
        for j in 0..10 {
            records.push(NewRecord {
                id: Some(id(&format!("b{i}-{j}"))),
                content: Some(format!("rim {i} {j}")),
                ..Default::default()
            });
            links.push(NewLink {
                source: id(&format!("a{i}")),
                target: id(&format!("b{i}-{j}")),
                relation: strata_types::related(),
                weight: 1.0,
            });
        }
    }
    engine.put(&scope, &req, records).unwrap();
    engine.link_batch(&scope, &req, links).unwrap();
    let s = SearchRequest {
        query: Some("hub".into()),
        k: 50,
        ..Default::default()
    };
    let p = RecallParams {
        seeds: Some(1),
        depth: Some(2),
        max_fanout: 100,
        threshold: 0.0,
        ..Default::default()
    };

    let whole = engine.recall(&scope, &req, &s, &p).unwrap();
    assert!(!whole.spread_capped);
    assert_eq!(whole.hits.len(), 50);

    let cut = engine
        .recall_looking_at_most(&scope, &req, &s, &p, 40)
        .unwrap();
    assert!(cut.spread_capped);
    // The seed (found by the search, not looked at by spreading) and the 40 records looked
    // at before the bound: the 30 spokes, then the first 10 of the rim.
    assert_eq!(cut.hits.len(), 41);
    assert_eq!(cut.hits[0].record.id, id("hub"));
    for h in &cut.hits[1..] {
        let Via::Path(path) = &h.via else {
            panic!("{} is not a seed", h.record.id)
        };
        assert_eq!(path[0].from, id("hub"));
        assert_eq!(path.last().unwrap().to, h.record.id);
        assert!(h.record.content.is_some(), "hits come whole");
    }
    // Below the bound nothing changes: the same answer as without one.
    let roomy = engine
        .recall_looking_at_most(&scope, &req, &s, &p, 1_000)
        .unwrap();
    assert_eq!(roomy, whole);
}

/// Another principal's records linked to a shared record do not use up the caller's budget:
/// its recall reaches the same records with or without them, until they pass a bound of their
/// own (`HIDDEN_LOOKS_PER_LOOK` per look), where it says it was cut short.
#[test]
fn another_principals_links_do_not_cut_a_recall_short() {
    let (_dir, engine, scope) = engine_with_tenant("acme");
    let everyone = RequestScope::default();
    // A shared chain: hub → mid → end.
    let shared = |name: &str, text: &str| NewRecord {
        id: Some(id(name)),
        content: Some(text.into()),
        ..Default::default()
    };
    engine
        .put(
            &scope,
            &everyone,
            vec![
                shared("hub", "the zebra hub"),
                shared("mid", "middle"),
                shared("end", "far end"),
            ],
        )
        .unwrap();
    let link = |from: &str, to: &str| NewLink {
        source: id(from),
        target: id(to),
        relation: strata_types::related(),
        weight: 1.0,
    };
    engine
        .link_batch(
            &scope,
            &everyone,
            vec![link("hub", "mid"), link("mid", "end")],
        )
        .unwrap();
    let as_ = |who: &str| RequestScope {
        user_tokens: Some(strata_types::TokenSelector::Tokens(vec![
            strata_types::UserToken::parse(who).unwrap(),
        ])),
        ..Default::default()
    };
    let bobs = |from: usize, n: usize| {
        let records: Vec<NewRecord> = (from..from + n)
            .map(|i| shared(&format!("bob{i}"), &format!("bob's note {i}")))
            .collect();
        engine.put(&scope, &as_("u:bob"), records).unwrap();
        let links = (from..from + n)
            .map(|i| link(&format!("bob{i}"), "hub"))
            .collect();
        engine.link_batch(&scope, &as_("u:bob"), links).unwrap();
    };
    let s = SearchRequest {
        query: Some("zebra".into()),
        k: 5,
        ..Default::default()
    };
    let p = RecallParams {
        seeds: Some(1),
        depth: Some(2),
        threshold: 0.0,
        ..Default::default()
    };
    let alice = as_("u:alice");
    let recall = || {
        engine
            .recall_looking_at_most(&scope, &alice, &s, &p, 10)
            .unwrap()
    };
    let ids = |r: &strata_types::RecallResponse| -> Vec<RecordId> {
        r.hits.iter().map(|h| h.record.id.clone()).collect()
    };
    let alone = recall();
    assert_eq!(ids(&alone), vec![id("hub"), id("mid"), id("end")]);
    assert!(!alone.spread_capped);

    // 30 of Bob's records link to the hub: three times Alice's 10 looks, within the 40 hidden
    // ones allowed beside them.
    bobs(0, 30);
    assert_eq!(recall(), alone);
    // 50 more: past that bound, the recall is cut short and says so.
    bobs(30, 50);
    assert!(recall().spread_capped);
}
