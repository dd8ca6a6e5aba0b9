//! Spreading activation earns its keep: on a synthetic multi-hop set (answers reachable only
//! through chains of `next` links, see `common/multihop.rs`), recall@10 of `Engine::recall` is
//! far above `Engine::search` alone, and spreading stops at the tenant's depth cap.

#[path = "common/multihop.rs"]
mod multihop;

use strata_auth::OperatorScope;
use strata_engine::{Engine, EngineConfig, TenantUpdate};
use strata_types::{RecallParams, RequestScope, SearchRequest, TenantId};

fn search(m: &multihop::MultiHop, q: &[f32]) -> SearchRequest {
    SearchRequest {
        vector: Some(q.to_vec()),
        k: 10,
        modality: Some(m.collection.clone()),
        include: Some(vec![]),
        ..Default::default()
    }
}

/// recall@10 per hop count (1, 2, 3): with search alone and with recall.
fn measure(engine: &Engine, m: &multihop::MultiHop, p: &RecallParams) -> [(f64, f64); 3] {
    let req = RequestScope::default();
    let mut hits = [(0usize, 0usize, 0usize); 3];
    for (q, answer, hops) in &m.questions {
        let s = search(m, q);
        let found = engine.search(&m.scope, &req, &s).expect("search");
        let by_search = found.hits.iter().any(|h| &h.id == answer);
        let recalled = engine.recall(&m.scope, &req, &s, p).expect("recall");
        let by_recall = recalled.hits.iter().any(|h| &h.record.id == answer);
        let h = &mut hits[*hops as usize - 1];
        h.0 += 1;
        h.1 += by_search as usize;
        h.2 += by_recall as usize;
    }
    hits.map(|(n, s, r)| (s as f64 / n as f64, r as f64 / n as f64))
}

#[test]
fn spreading_finds_answers_search_cannot_and_stops_at_the_depth_cap() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let m = multihop::build(&engine, "multihop", 100, 10, 4, 32, 20, 7);
    let defaults = measure(&engine, &m, &RecallParams::default());
    println!("recall@10 (search, recall) by hops 1..3, default parameters: {defaults:?}");
    for (hops, (search, recall)) in defaults.iter().enumerate() {
        assert!(
            *search <= 0.1,
            "hop {}: search alone found {search}",
            hops + 1
        );
        if hops == 0 {
            assert!(*recall >= 0.9, "hop 1: recall {recall}");
        }
    }
    let total_search: f64 = defaults.iter().map(|r| r.0).sum();
    let total_recall: f64 = defaults.iter().map(|r| r.1).sum();
    assert!(total_recall >= total_search + 1.0, "{defaults:?}");
    // Fewer seeds leave more room for what they activate: two hops deep.
    let one_seed = RecallParams {
        seeds: Some(1),
        ..Default::default()
    };
    let narrow = measure(&engine, &m, &one_seed);
    println!("recall@10 (search, recall) by hops 1..3, seeds 1: {narrow:?}");
    assert!(narrow[0].1 >= 0.9 && narrow[1].1 >= 0.8, "{narrow:?}");
    // Following only the conversation's `next` links: three hops deep.
    let next_only = RecallParams {
        seeds: Some(1),
        relations: Some(vec![strata_types::Relation::parse("next").unwrap()]),
        ..Default::default()
    };
    let chained = measure(&engine, &m, &next_only);
    println!("recall@10 (search, recall) by hops 1..3, seeds 1, relations [next]: {chained:?}");
    assert!(chained.iter().all(|(_, r)| *r >= 0.9), "{chained:?}");

    // The operator's cap: at depth 1, two- and three-hop answers are out of reach.
    let update: TenantUpdate =
        serde_json::from_value(serde_json::json!({"limits": {"max_spreading_depth": 1}})).unwrap();
    engine
        .update_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse("multihop").unwrap(),
            update,
        )
        .unwrap();
    let capped = measure(
        &engine,
        &m,
        &RecallParams {
            depth: Some(3),
            ..next_only
        },
    );
    println!("recall@10 with max_spreading_depth 1: {capped:?}");
    assert!(capped[0].1 >= 0.9, "{capped:?}");
    assert_eq!((capped[1].1, capped[2].1), (0.0, 0.0), "{capped:?}");
}

/// A collection with `link_runs` links each new record of a run from the run's previous one,
/// so recall walks a session turn by turn; other runs and collections get no links.
#[test]
fn link_runs_chains_a_sessions_turns_for_recall() {
    use strata_engine::TenantScope;
    use strata_types::{
        CollectionName, MemoryDefaults, Metric, NewRecord, RecordId, RunId, TextAnalyzer, Via,
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let id = TenantId::parse("acme").unwrap();
    engine.create_tenant(&op, &id, None).unwrap();
    let grant = strata_auth::Grant {
        permissions: strata_auth::Permissions::of(&[
            strata_auth::Permission::Read,
            strata_auth::Permission::Write,
            strata_auth::Permission::Admin,
            strata_auth::Permission::AllPrincipals,
        ]),
        user_tokens: None,
        domains: None,
    };
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), grant);
    let turns = CollectionName::parse("turns").unwrap();
    let memory = MemoryDefaults {
        link_runs: Some(true),
        ..Default::default()
    };
    engine
        .create_collection_full(
            &scope,
            &turns,
            strata_engine::CollectionSpec {
                dim: 2,
                metric: Metric::Cosine,
                analyzer: TextAnalyzer::Standard,
                memory,
                embed: false,
            },
        )
        .unwrap();
    let req = RequestScope::default();
    let write = |rid: &str, run: &str, v: [f32; 2]| {
        let r = NewRecord {
            id: Some(RecordId::parse(rid).unwrap()),
            modality: Some(turns.clone()),
            run_id: Some(RunId::parse(run).unwrap()),
            vector: Some(v.to_vec()),
            ..Default::default()
        };
        engine.put(&scope, &req, vec![r]).unwrap();
    };
    write("t1", "s1", [1.0, 0.0]);
    write("other", "s2", [1.0, 0.05]);
    write("t2", "s1", [0.0, 1.0]);
    write("t3", "s1", [-1.0, 0.2]);
    let links = |rid: &str| {
        let l = engine
            .record_links(&scope, &req, &RecordId::parse(rid).unwrap())
            .unwrap();
        let out: Vec<String> = l.outgoing.iter().map(|l| l.target.to_string()).collect();
        out
    };
    assert_eq!(links("t1"), ["t2"]);
    assert_eq!(links("t2"), ["t3"]);
    assert!(links("t3").is_empty() && links("other").is_empty());
    // From the first turn, recall reaches the last through the chain.
    let s = SearchRequest {
        vector: Some(vec![1.0, 0.0]),
        k: 3,
        modality: Some(turns.clone()),
        ..Default::default()
    };
    let p = RecallParams {
        seeds: Some(1),
        ..Default::default()
    };
    let got = engine.recall(&scope, &req, &s, &p).unwrap();
    let t3 = got
        .hits
        .iter()
        .find(|h| h.record.id.as_str() == "t3")
        .expect("t3 reached");
    assert!(matches!(t3.via, Via::Path(_)), "{:?}", t3.via);

    // A turn that has expired is no one's to see: the next turn of its run starts a fresh
    // chain instead of being linked from it.
    let soon = strata_types::now_millis() + 300;
    let r = NewRecord {
        id: Some(RecordId::parse("brief").unwrap()),
        modality: Some(turns.clone()),
        run_id: Some(RunId::parse("s3").unwrap()),
        vector: Some(vec![1.0, 0.0]),
        expires_at: Some(soon),
        ..Default::default()
    };
    engine.put(&scope, &req, vec![r]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    write("after", "s3", [0.0, 1.0]);
    // The export holds every stored link, seen or not.
    let mut into_after = Vec::new();
    engine
        .export_tenant(&op, &id, |line| {
            if let strata_engine::ExportLine::Link(l) = line
                && l.target.as_str() == "after"
            {
                into_after.push(l.source.to_string());
            }
            Ok(())
        })
        .unwrap();
    assert!(into_after.is_empty(), "{into_after:?}");

    // Two principals taking turns in one run: each one's turns chain on their own, and no
    // link ties one's private record to the other's.
    let as_ = |who: &str| -> RequestScope {
        serde_json::from_value(serde_json::json!({"user_tokens": [who]})).unwrap()
    };
    let write_as = |who: &str, rid: &str| {
        let r = NewRecord {
            id: Some(RecordId::parse(rid).unwrap()),
            modality: Some(turns.clone()),
            run_id: Some(RunId::parse("shared-run").unwrap()),
            vector: Some(vec![1.0, 0.0]),
            ..Default::default()
        };
        engine.put(&scope, &as_(who), vec![r]).unwrap();
    };
    write_as("u:x", "x1");
    write_as("u:x", "x2");
    write_as("u:y", "y1");
    write_as("u:x", "x3");
    write_as("u:y", "y2");
    let everyone = as_("*");
    let all_links = |rid: &str| {
        let l = engine
            .record_links(&scope, &everyone, &RecordId::parse(rid).unwrap())
            .unwrap();
        let out: Vec<String> = l.outgoing.iter().map(|l| l.target.to_string()).collect();
        let into: Vec<String> = l.incoming.iter().map(|l| l.source.to_string()).collect();
        (out, into)
    };
    assert_eq!(all_links("x1").0, ["x2"]);
    assert_eq!(all_links("x2").0, ["x3"]);
    assert_eq!(all_links("y1"), (vec!["y2".to_string()], vec![]));
    assert_eq!(all_links("x3").1, ["x2"]);
}
