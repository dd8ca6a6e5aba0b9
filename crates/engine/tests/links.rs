//! The per-record link caps count what the request can see.

mod common;

use serde_json::json;
use strata_engine::{EngineError, MAX_LINKS_PER_RECORD};
use strata_types::*;

fn scope_json(v: serde_json::Value) -> RequestScope {
    serde_json::from_value(v).unwrap()
}

fn link(source: &RecordId, target: &str) -> NewLink {
    serde_json::from_value(json!({"source": source, "target": target})).unwrap()
}

/// Alice filling a tenant-shared record's incoming links with links from her private records
/// neither shows in Bob's count nor leaves him without room: he links to it, and his view of
/// its links holds only his own.
#[test]
fn a_principals_private_links_do_not_use_up_a_shared_records_room() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let shared = RequestScope::default();
    engine
        .put(
            &scope,
            &shared,
            vec![serde_json::from_value(json!({"id": "policy", "content": "the policy"})).unwrap()],
        )
        .unwrap();
    let alice = scope_json(json!({"user_tokens": ["u:alice"]}));
    let mut theirs = Vec::new();
    for chunk in 0..2 {
        let batch: Vec<NewRecord> = (0..MAX_LINKS_PER_RECORD / 2 + 1)
            .map(|i| {
                serde_json::from_value(json!({
                    "content": format!("alice note {chunk} {i}"), "user_tokens": ["u:alice"]
                }))
                .unwrap()
            })
            .collect();
        theirs.extend(
            engine
                .put(&scope, &alice, batch)
                .unwrap()
                .into_iter()
                .map(|o| o.id),
        );
    }
    let (fit, over) = theirs.split_at(MAX_LINKS_PER_RECORD);
    for chunk in fit.chunks(500) {
        let batch = chunk.iter().map(|id| link(id, "policy")).collect();
        engine.link_batch(&scope, &alice, batch).unwrap();
    }
    // Alice herself is at the cap.
    let err = engine
        .link(&scope, &alice, link(&over[0], "policy"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::QuotaExceeded {
                resource: "links_per_record",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "quota exceeded: links_per_record: {MAX_LINKS_PER_RECORD} used of {MAX_LINKS_PER_RECORD}"
        )
    );
    let bob = scope_json(json!({"user_tokens": ["u:bob"]}));
    let mine = engine
        .put(
            &scope,
            &bob,
            vec![
                serde_json::from_value(json!({"content": "bob's note", "user_tokens": ["u:bob"]}))
                    .unwrap(),
            ],
        )
        .unwrap()[0]
        .id
        .clone();
    engine.link(&scope, &bob, link(&mine, "policy")).unwrap();
    let policy = RecordId::parse("policy").unwrap();
    let seen = engine.record_links(&scope, &bob, &policy).unwrap();
    assert_eq!(seen.incoming.len(), 1);
    assert_eq!(seen.incoming[0].source, mine);
}
