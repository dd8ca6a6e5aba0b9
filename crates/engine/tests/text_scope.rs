//! Scope-exact text scoring (docs/isolation.md, rule 4): BM25 statistics, and so text and hybrid
//! scores, are computed over exactly the records the caller may see. A record the caller cannot
//! see — another principal's, another domain's, an expired one, another run's — never moves a
//! score, down to the last bit.

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;
use strata_auth::{Grant, Permission, Permissions, TenantScope};
use strata_engine::Engine;
use strata_types::*;

const DIM: usize = 8;
const WORDS: &[&str] = &["tea", "milk", "coffee", "oslo", "green"];

fn collection() -> CollectionName {
    CollectionName::parse("small").unwrap()
}

/// An engine with tenant `acme` and an 8-dimension collection `small`; the scope sees all.
fn engine(dir: &std::path::Path) -> (Engine, TenantScope) {
    let (engine, scope) = common::open_with_tenant(dir, "acme", common::full_grant());
    engine
        .create_collection(&scope, &collection(), DIM as u32, Metric::Cosine)
        .unwrap();
    (engine, scope)
}

fn scope_of(v: serde_json::Value) -> RequestScope {
    serde_json::from_value(v).unwrap()
}

/// A record of `content`, or of its vector alone when `content` is empty (a write refuses
/// blank content).
fn record(id: &str, content: &str) -> NewRecord {
    NewRecord {
        id: Some(RecordId::parse(id).unwrap()),
        modality: Some(collection()),
        content: (!content.is_empty()).then(|| content.into()),
        vector: Some(common::vector(DIM, seed_of(id))),
        ..Default::default()
    }
}

fn seed_of(id: &str) -> u64 {
    id.bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// One hit, every float as its bits: id, score, text score, vector score, text and vector rank.
type Bits = (
    String,
    u32,
    Option<u32>,
    Option<u32>,
    Option<usize>,
    Option<usize>,
);

fn bits(r: &SearchResponse) -> Vec<Bits> {
    r.hits
        .iter()
        .map(|h| {
            let e = h.explain.clone().unwrap_or_default();
            (
                h.id.to_string(),
                h.score.to_bits(),
                e.text_score.map(f32::to_bits),
                e.vector_score.map(f32::to_bits),
                e.text_rank,
                e.vector_rank,
            )
        })
        .collect()
}

/// What an observer sees for a text query and for hybrid queries under both fusions.
fn observe(engine: &Engine, scope: &TenantScope, req: &RequestScope) -> Vec<Vec<Bits>> {
    let text = SearchRequest {
        query: Some("tea milk".into()),
        k: 20,
        modality: Some(collection()),
        explain: true,
        ..Default::default()
    };
    let hybrid = |fusion| SearchRequest {
        vector: Some(common::vector(DIM, 1)),
        fusion,
        ..text.clone()
    };
    [
        text.clone(),
        hybrid(Fusion::Rrf { k: 60 }),
        hybrid(Fusion::Weighted { alpha: 0.5 }),
    ]
    .iter()
    .map(|s| bits(&engine.search(scope, req, s).unwrap()))
    .collect()
}

#[test]
fn invisible_records_never_move_a_score() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path());
    let support_key = TenantScope::for_tests(
        &engine.tenant_meta(admin.tenant()).unwrap(),
        Grant {
            permissions: Permissions::of(&[Permission::Read, Permission::Write]),
            user_tokens: None,
            domains: Some(vec![Domain::parse("support").unwrap()]),
        },
    );
    let bob = scope_of(json!({"user_tokens": ["u:bob"]}));
    let bob_all = scope_of(json!({"user_tokens": ["u:bob"], "user_match": "all"}));
    let bob_run = scope_of(json!({"user_tokens": ["u:bob"], "run_id": "r1"}));
    let support = scope_of(json!({}));
    let observers: [(&str, &TenantScope, &RequestScope); 4] = [
        ("u:bob", &admin, &bob),
        ("u:bob, user_match all", &admin, &bob_all),
        ("u:bob in run r1", &admin, &bob_run),
        ("support-only key", &support_key, &support),
    ];

    // What every observer sees: shared and bob's records, in run r1, in both domains.
    let visible = |prefix: &str| {
        vec![
            record(&format!("{prefix}1"), "green tea with milk"),
            record(&format!("{prefix}2"), "tea"),
            record(&format!("{prefix}3"), "coffee in oslo"),
            record(
                &format!("{prefix}4"),
                "milk milk and more milk in the morning",
            ),
        ]
    };
    let in_run = |mut records: Vec<NewRecord>, tokens: &[&str]| {
        for r in &mut records {
            r.run_id = Some(RunId::parse("r1").unwrap());
            r.user_tokens = Some(
                tokens
                    .iter()
                    .map(|t| UserToken::parse(*t).unwrap())
                    .collect(),
            );
        }
        records
    };
    engine
        .put(&admin, &scope_of(json!({})), in_run(visible("shared"), &[]))
        .unwrap();
    engine
        .put(&admin, &bob, in_run(visible("bob"), &["u:bob"]))
        .unwrap();
    engine
        .put(&support_key, &support, in_run(visible("support"), &[]))
        .unwrap();
    let mut before: Vec<Vec<Vec<Bits>>> = observers
        .iter()
        .map(|(_, s, r)| observe(&engine, s, r))
        .collect();
    assert!(before.iter().all(|o| o[0].len() >= 3), "{before:?}");

    // Set to a moment after its batch's write, as it is written: a write refuses a past one.
    let expiring = 0;
    let flood = |prefix: &str, n: usize| -> Vec<NewRecord> {
        (0..n)
            .map(|i| {
                record(
                    &format!("{prefix}{i}"),
                    "tea tea tea milk, a private tea note",
                )
            })
            .collect()
    };
    let expired = |prefix: &str| -> Vec<NewRecord> {
        flood(prefix, 30)
            .into_iter()
            .map(|r| NewRecord {
                expires_at: Some(expiring),
                ..r
            })
            .collect()
    };
    let alice_and_bob = scope_of(json!({"user_tokens": ["u:alice", "u:bob"]}));
    // (what is written, by whom, how, and which observers cannot see it).
    type Batch<'a> = (
        &'a str,
        &'a TenantScope,
        RequestScope,
        Vec<NewRecord>,
        &'a [usize],
    );
    let batches: Vec<Batch> = vec![
        (
            "u:alice's private records",
            &admin,
            scope_of(json!({"user_tokens": ["u:alice"]})),
            flood("alice", 40),
            &[0, 1, 2, 3],
        ),
        (
            "shared records in another domain",
            &admin,
            scope_of(json!({"memory_domain": "dialog"})),
            flood("dialog", 40),
            &[0, 1, 2, 3],
        ),
        (
            "expired shared records in the default domain",
            &admin,
            scope_of(json!({})),
            expired("expired"),
            &[0, 1, 2, 3],
        ),
        (
            "expired shared records in the support domain",
            &support_key,
            support.clone(),
            expired("expired-support"),
            &[0, 1, 2, 3],
        ),
        (
            "records of u:alice and u:bob together",
            &admin,
            alice_and_bob.clone(),
            flood("both", 20),
            &[1, 2, 3],
        ),
        (
            "bob's records in another run",
            &admin,
            scope_of(json!({"user_tokens": ["u:bob"], "run_id": "r2"})),
            flood("run2-", 20),
            &[2, 3],
        ),
        (
            "support records for u:alice",
            &admin,
            scope_of(json!({"user_tokens": ["u:alice"], "memory_domain": "support"})),
            flood("support-alice", 20),
            &[0, 1, 2, 3],
        ),
    ];
    for (what, writer, req, mut records, blind) in batches {
        let soon = common::expiring_soon();
        let expires: Vec<_> = records
            .iter_mut()
            .filter_map(|r| r.expires_at.as_mut())
            .collect();
        let expires_any = !expires.is_empty();
        expires.into_iter().for_each(|t| *t = soon);
        engine.put(writer, &req, records).unwrap();
        if expires_any {
            common::wait_past(soon);
        }
        for (i, (name, s, r)) in observers.iter().enumerate() {
            let now = observe(&engine, s, r);
            if blind.contains(&i) {
                assert_eq!(now, before[i], "{name}'s scores moved after {what}");
            }
            before[i] = now;
        }
    }

    // The test can see a leak: a record bob *can* see does move his scores.
    engine
        .put(&admin, &bob, vec![record("bob-new", "tea for two")])
        .unwrap();
    assert_ne!(observe(&engine, &admin, &bob), before[0]);
}

#[test]
fn a_filter_narrows_the_ranking_not_the_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = engine(dir.path());
    let records = (0..20)
        .map(|i| NewRecord {
            metadata: json!({"even": i % 2 == 0}).as_object().cloned().unwrap(),
            ..record(&format!("r{i}"), &"tea milk ".repeat(1 + i % 3))
        })
        .collect();
    engine.put(&scope, &scope_of(json!({})), records).unwrap();
    let search = |filter: Option<serde_json::Value>| {
        let s = SearchRequest {
            query: Some("tea".into()),
            k: 20,
            modality: Some(collection()),
            filter: filter.map(|f| Filter::parse(&f).unwrap()),
            ..Default::default()
        };
        engine
            .search(&scope, &scope_of(json!({})), &s)
            .unwrap()
            .hits
            .into_iter()
            .map(|h| (h.id.to_string(), h.score.to_bits()))
            .collect::<BTreeMap<_, _>>()
    };
    let all = search(None);
    let even = search(Some(json!({"even": true})));
    assert_eq!(even.len(), 10);
    for (id, score) in &even {
        assert_eq!(all.get(id), Some(score), "{id}");
    }
}

/// A generated record: words, tokens (indexes into `PEOPLE`), domain, run, expired.
#[derive(Debug, Clone)]
struct Spec {
    words: Vec<usize>,
    tokens: Vec<usize>,
    dialog: bool,
    run: Option<usize>,
    expired: bool,
}

const PEOPLE: &[&str] = &["u:alice", "u:bob", "u:carol"];
const RUNS: &[&str] = &["r1", "r2"];

/// The observer: tokens, `user_match: all`, the `dialog` domain, a run.
#[derive(Debug, Clone)]
struct Observer {
    tokens: Vec<usize>,
    all: bool,
    dialog: bool,
    run: Option<usize>,
}

/// The model of visibility (docs/isolation.md, rule 3), independent of the engine's code.
fn model_sees(o: &Observer, r: &Spec) -> bool {
    let tokens_ok = r.tokens.is_empty()
        || if o.all {
            r.tokens.iter().all(|t| o.tokens.contains(t))
        } else {
            r.tokens.iter().any(|t| o.tokens.contains(t))
        };
    o.dialog == r.dialog && o.run.is_none_or(|run| r.run == Some(run)) && !r.expired && tokens_ok
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(0..WORDS.len(), 0..7),
        prop::sample::subsequence((0..PEOPLE.len()).collect::<Vec<_>>(), 0..=2),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.4, 0..RUNS.len()),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(words, tokens, dialog, run, expired)| Spec {
            words,
            tokens,
            dialog,
            run,
            expired,
        })
}

fn observer() -> impl Strategy<Value = Observer> {
    (
        prop::sample::subsequence((0..PEOPLE.len()).collect::<Vec<_>>(), 0..=2),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.3, 0..RUNS.len()),
    )
        .prop_map(|(tokens, all, dialog, run)| Observer {
            tokens,
            all,
            dialog,
            run,
        })
}

fn domain(dialog: bool) -> Domain {
    Domain::parse(if dialog { "dialog" } else { "default" }).unwrap()
}

/// Writes `specs` (record `i` gets id `r{i}`), one batch per domain.
fn write(engine: &Engine, scope: &TenantScope, specs: &[(usize, &Spec)]) {
    for dialog in [false, true] {
        // A moment ahead (a write refuses a past expiry), then waited out below.
        let soon = common::expiring_soon();
        let records: Vec<NewRecord> = specs
            .iter()
            .filter(|(_, s)| s.dialog == dialog)
            .map(|(i, s)| NewRecord {
                user_tokens: Some(
                    s.tokens
                        .iter()
                        .map(|t| UserToken::parse(PEOPLE[*t]).unwrap())
                        .collect(),
                ),
                run_id: s.run.map(|r| RunId::parse(RUNS[r]).unwrap()),
                expires_at: s.expired.then_some(soon),
                ..record(
                    &format!("r{i}"),
                    &s.words
                        .iter()
                        .map(|w| WORDS[*w])
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            })
            .collect();
        if !records.is_empty() {
            let req = RequestScope {
                memory_domain: Some(domain(dialog)),
                ..Default::default()
            };
            engine.put(scope, &req, records).unwrap();
        }
        if specs.iter().any(|(_, s)| s.expired && s.dialog == dialog) {
            common::wait_past(soon);
        }
    }
}

/// Every hit's id with its score and channel scores as bits. Compared as a map, because slots
/// (the tie-breaker) differ between the two stores.
fn channel_scores(
    r: &SearchResponse,
    fused: bool,
) -> BTreeMap<String, (Option<u32>, [Option<u32>; 2])> {
    r.hits
        .iter()
        .map(|h| {
            let e = h.explain.clone().unwrap_or_default();
            (
                h.id.to_string(),
                (
                    (!fused).then_some(h.score.to_bits()),
                    [
                        e.text_score.map(f32::to_bits),
                        e.vector_score.map(f32::to_bits),
                    ],
                ),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// For random records split by a random observer's visibility, the observer's text scores
    /// and hybrid channel scores equal those on a store holding only the records it can see.
    #[test]
    fn scores_equal_those_of_a_store_of_the_visible_records_alone(
        specs in prop::collection::vec(spec(), 1..40),
        o in observer(),
        query in prop::collection::vec(0..WORDS.len(), 1..4),
    ) {
        let all_dir = tempfile::tempdir().unwrap();
        let alone_dir = tempfile::tempdir().unwrap();
        let (all, all_scope) = engine(all_dir.path());
        let (alone, alone_scope) = engine(alone_dir.path());
        let numbered: Vec<(usize, &Spec)> = specs.iter().enumerate().collect();
        write(&all, &all_scope, &numbered);
        let visible: Vec<(usize, &Spec)> =
            numbered.iter().copied().filter(|(_, s)| model_sees(&o, s)).collect();
        write(&alone, &alone_scope, &visible);

        let req = RequestScope {
            // No tokens: the unbound credential's default, tenant-shared records only.
            user_tokens: (!o.tokens.is_empty()).then(|| TokenSelector::Tokens(
                o.tokens.iter().map(|t| UserToken::parse(PEOPLE[*t]).unwrap()).collect(),
            )),
            user_match: if o.all { UserMatch::All } else { UserMatch::Any },
            memory_domain: Some(domain(o.dialog)),
            run_id: o.run.map(|r| RunId::parse(RUNS[r]).unwrap()),
            ..Default::default()
        };
        let text = SearchRequest {
            query: Some(query.iter().map(|w| WORDS[*w]).collect::<Vec<_>>().join(" ")),
            k: 50,
            modality: Some(collection()),
            explain: true,
            ..Default::default()
        };
        let hybrid = SearchRequest { vector: Some(common::vector(DIM, 3)), ..text.clone() };
        for (s, fused) in [(&text, false), (&hybrid, true)] {
            let got = all.search(&all_scope, &req, s).unwrap();
            let want = alone.search(&alone_scope, &req, s).unwrap();
            prop_assert_eq!(channel_scores(&got, fused), channel_scores(&want, fused));
        }
    }
}
