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

/// Private records of `who`, `n` of them, written in batches; their ids.
fn private_records(
    engine: &strata_engine::Engine,
    scope: &strata_auth::TenantScope,
    who: &str,
    n: usize,
) -> Vec<RecordId> {
    let req = scope_json(json!({"user_tokens": [who]}));
    let mut ids = Vec::new();
    for start in (0..n).step_by(500) {
        let batch: Vec<NewRecord> = (start..(start + 500).min(n))
            .map(|i| {
                serde_json::from_value(json!({"id": format!("{}-{i:05}", &who[2..]),
                    "content": format!("{who} note {i}"), "user_tokens": [who]}))
                .unwrap()
            })
            .collect();
        ids.extend(
            engine
                .put(scope, &req, batch)
                .unwrap()
                .into_iter()
                .map(|o| o.id),
        );
    }
    ids
}

fn links_to(ids: &[RecordId], target: &str) -> Vec<NewLink> {
    ids.iter().map(|id| link(id, target)).collect()
}

/// Three principals link to one shared record, 2,600 links in all: each is held to
/// `MAX_LINKS_PER_RECORD` of the links it can see, exactly at the boundary, whether its links
/// come one by one or in batches that cross the count's early stops; a caller that sees every
/// principal's links is past the cap.
#[test]
fn the_visible_link_cap_holds_exactly_among_many_principals_links() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    engine
        .put(
            &scope,
            &RequestScope::default(),
            vec![serde_json::from_value(json!({"id": "policy", "content": "the policy"})).unwrap()],
        )
        .unwrap();
    let as_ = |who: &str| scope_json(json!({"user_tokens": [who]}));
    let over = |e: EngineError| match e {
        EngineError::QuotaExceeded {
            resource: "links_per_record",
            limit,
            used,
        } => (limit, used),
        other => panic!("{other}"),
    };
    let cap = MAX_LINKS_PER_RECORD as u64;

    let carol = private_records(&engine, &scope, "u:carol", 600);
    engine
        .link_batch(&scope, &as_("u:carol"), links_to(&carol, "policy"))
        .unwrap();
    let alice = private_records(&engine, &scope, "u:alice", MAX_LINKS_PER_RECORD + 1);
    engine
        .link_batch(&scope, &as_("u:alice"), links_to(&alice[..600], "policy"))
        .unwrap();
    let bob = private_records(&engine, &scope, "u:bob", MAX_LINKS_PER_RECORD + 1);
    engine
        .link_batch(
            &scope,
            &as_("u:bob"),
            links_to(&bob[..MAX_LINKS_PER_RECORD], "policy"),
        )
        .unwrap();
    let err = engine
        .link(
            &scope,
            &as_("u:bob"),
            link(&bob[MAX_LINKS_PER_RECORD], "policy"),
        )
        .unwrap_err();
    assert_eq!(over(err), (cap, Some(cap)));

    // Alice's next 400 one batch: her count starts from a bound, not an exact figure.
    engine
        .link_batch(
            &scope,
            &as_("u:alice"),
            links_to(&alice[600..MAX_LINKS_PER_RECORD], "policy"),
        )
        .unwrap();
    let err = engine
        .link(
            &scope,
            &as_("u:alice"),
            link(&alice[MAX_LINKS_PER_RECORD], "policy"),
        )
        .unwrap_err();
    assert_eq!(over(err), (cap, Some(cap)));
    // A refused batch adds nothing.
    let policy = RecordId::parse("policy").unwrap();
    let alices = engine
        .record_links(&scope, &as_("u:alice"), &policy)
        .unwrap();
    assert_eq!(alices.incoming.len(), MAX_LINKS_PER_RECORD);
    let bobs = engine.record_links(&scope, &as_("u:bob"), &policy).unwrap();
    assert_eq!(bobs.incoming.len(), MAX_LINKS_PER_RECORD);
    assert!(
        bobs.incoming
            .iter()
            .all(|l| l.source.as_str().starts_with("bob-"))
    );

    // Carol sees her 600: room for more.
    let more = private_records(&engine, &scope, "u:carol2", 1);
    let carol_and_2 = scope_json(json!({"user_tokens": ["u:carol", "u:carol2"]}));
    engine
        .link(&scope, &carol_and_2, link(&more[0], "policy"))
        .unwrap();

    // A caller that sees every principal's records sees 2,601 links: past the cap.
    let all = private_records(&engine, &scope, "u:dave", 1);
    let err = engine
        .link(
            &scope,
            &scope_json(json!({"user_tokens": ["*"]})),
            link(&all[0], "policy"),
        )
        .unwrap_err();
    assert_eq!(over(err), (cap, Some(cap)));
}

/// A record moved to another domain leaves its links to records of the old one behind, and
/// gives their bytes back: a request sees one domain, so a link across two could be neither
/// seen nor deleted by any request. Links to records of the new domain stay.
#[test]
fn a_record_moved_to_another_domain_drops_the_links_it_would_leave_across_domains() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let in_ = |d: &str| scope_json(json!({"memory_domain": d}));
    let put = |d: &str, id: &str| {
        let r = serde_json::from_value(json!({"id": id, "content": "same"})).unwrap();
        engine.put(&scope, &in_(d), vec![r]).unwrap();
    };
    for id in ["m1", "m2", "twin"] {
        put("d1", id);
    }
    put("d2", "n1");
    let rid = |id: &str| RecordId::parse(id).unwrap();
    let bytes = || {
        engine
            .own_usage(&scope)
            .unwrap()
            .info
            .usage
            .unwrap()
            .storage_bytes
    };
    let move_to = |id: &str, from: &str, to: &str| {
        let patch = RecordPatch {
            move_to_domain: Some(Domain::parse(to).unwrap()),
            ..Default::default()
        };
        engine.patch(&scope, &in_(from), &rid(id), patch).unwrap();
    };
    let unlinked = bytes();
    engine
        .link_batch(&scope, &in_("d1"), vec![link(&rid("m1"), "m2")])
        .unwrap();
    let link_bytes = bytes() - unlinked;
    assert!(link_bytes > 0);
    // What a move itself changes, seen on a record without links.
    let before = bytes();
    move_to("twin", "d1", "d2");
    let moved_record = bytes() as i64 - before as i64;

    let before = bytes();
    move_to("m2", "d1", "d2");
    assert_eq!(
        bytes() as i64,
        before as i64 + moved_record - link_bytes as i64
    );
    let m1 = engine.record_links(&scope, &in_("d1"), &rid("m1")).unwrap();
    assert!(m1.outgoing.is_empty(), "{m1:?}");

    // In d2 now: its link to n1 stays through a patch that moves nothing.
    engine
        .link_batch(&scope, &in_("d2"), vec![link(&rid("m2"), "n1")])
        .unwrap();
    let content = RecordPatch {
        content: Some("edited".into()),
        ..Default::default()
    };
    engine
        .patch(&scope, &in_("d2"), &rid("m2"), content)
        .unwrap();
    let m2 = engine.record_links(&scope, &in_("d2"), &rid("m2")).unwrap();
    assert_eq!(m2.outgoing.len(), 1, "{m2:?}");
}
