//! Behaviour of writes, reads and collections that the random model test does not single out.

mod common;

use serde_json::json;
use strata_auth::{Grant, Permission, Permissions, TenantScope};
use strata_engine::{EngineError, Page, Vectors};
use strata_types::*;

fn rec(v: serde_json::Value) -> NewRecord {
    serde_json::from_value(v).unwrap()
}

fn scope_json(v: serde_json::Value) -> RequestScope {
    serde_json::from_value(v).unwrap()
}

#[test]
fn run_level_dedup_returns_the_existing_id() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let req = scope_json(json!({"run_id": "run-1"}));
    let first = engine
        .put(&scope, &req, vec![rec(json!({"content": "likes tea"}))])
        .unwrap();
    let again = engine
        .put(&scope, &req, vec![rec(json!({"content": "likes tea"}))])
        .unwrap();
    assert!(first[0].created && !first[0].deduplicated);
    assert!(again[0].deduplicated && !again[0].created);
    assert_eq!(first[0].id, again[0].id);
    // Another run, or no run, is not deduplicated.
    let other = engine
        .put(
            &scope,
            &scope_json(json!({"run_id": "run-2"})),
            vec![rec(json!({"content": "likes tea"}))],
        )
        .unwrap();
    assert!(other[0].created);
    let none = engine
        .put(
            &scope,
            &RequestScope::default(),
            vec![rec(json!({"content": "likes tea"}))],
        )
        .unwrap();
    assert!(none[0].created);
    // Once the first is deleted, the same content is new again.
    engine.delete(&scope, &req, &first[0].id).unwrap();
    let fresh = engine
        .put(&scope, &req, vec![rec(json!({"content": "likes tea"}))])
        .unwrap();
    assert!(fresh[0].created && fresh[0].id != first[0].id);
}

#[test]
fn upsert_by_client_id_keeps_created_at() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let req = RequestScope::default();
    let out = engine
        .put(
            &scope,
            &req,
            vec![rec(json!({"id": "mem-1", "content": "v1"}))],
        )
        .unwrap();
    assert!(out[0].created);
    let v1 = engine.get(&scope, &req, &out[0].id).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let out = engine
        .put(
            &scope,
            &req,
            vec![rec(json!({"id": "mem-1", "content": "v2"}))],
        )
        .unwrap();
    assert!(!out[0].created);
    let v2 = engine.get(&scope, &req, &out[0].id).unwrap();
    assert_eq!(v2.content.as_deref(), Some("v2"));
    assert_eq!(v2.created_at, v1.created_at);
    assert!(v2.updated_at > v1.updated_at);
}

#[test]
fn client_ids_of_another_principal_conflict_and_stay_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let alice = scope_json(json!({"user_tokens": ["u:alice"]}));
    let bob = scope_json(json!({"user_tokens": ["u:bob"]}));
    engine
        .put(
            &scope,
            &alice,
            vec![rec(json!({"id": "m", "content": "alice's"}))],
        )
        .unwrap();
    let err = engine
        .put(
            &scope,
            &bob,
            vec![rec(json!({"id": "m", "content": "bob's"}))],
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::IdConflict(_)));
    assert_eq!(
        err.to_string(),
        "id m is taken by a record outside this request's scope"
    );
    let id = RecordId::parse("m").unwrap();
    assert!(matches!(
        engine.get(&scope, &bob, &id),
        Err(EngineError::NotFound)
    ));
    assert_eq!(
        engine.get(&scope, &alice, &id).unwrap().content.as_deref(),
        Some("alice's")
    );
}

#[test]
fn tenants_share_nothing_even_with_equal_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, a) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    drop(engine);
    let (engine, b) = common::open_with_tenant(dir.path(), "globex", common::full_grant());
    let a = TenantScope::for_tests(
        &engine.tenant_meta(a.tenant()).unwrap(),
        common::full_grant(),
    );
    let req = RequestScope::default();
    engine
        .put(
            &a,
            &req,
            vec![rec(json!({"id": "same", "content": "acme secret"}))],
        )
        .unwrap();
    let id = RecordId::parse("same").unwrap();
    assert!(matches!(
        engine.get(&b, &req, &id),
        Err(EngineError::NotFound)
    ));
    assert_eq!(engine.count(&b, &req, None).unwrap(), 0);
    assert!(matches!(
        engine.delete(&b, &req, &id),
        Err(EngineError::NotFound)
    ));
    engine
        .put(
            &b,
            &req,
            vec![rec(json!({"id": "same", "content": "globex"}))],
        )
        .unwrap();
    assert_eq!(
        engine.get(&a, &req, &id).unwrap().content.as_deref(),
        Some("acme secret")
    );
}

#[test]
fn expired_records_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let req = RequestScope::default();
    let soon = common::expiring_soon();
    let out = engine
        .put(
            &scope,
            &req,
            vec![
                rec(json!({"content": "old", "expires_at": soon})),
                rec(json!({"content": "new"})),
            ],
        )
        .unwrap();
    common::wait_past(soon);
    assert!(matches!(
        engine.get(&scope, &req, &out[0].id),
        Err(EngineError::NotFound)
    ));
    assert_eq!(engine.count(&scope, &req, None).unwrap(), 1);
}

/// A batch's refusal of one record names it whatever its status: a 409 (an id taken outside
/// the request's scope) and a 403 (a record shared tenant-wide, which a bound credential may
/// not replace) start with `records[i]: ` as a 400 does; a single-record write names none.
#[test]
fn a_batch_names_the_record_of_a_conflict_or_a_forbidden_write() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let alice = scope_json(json!({"user_tokens": ["u:alice"]}));
    let bob = scope_json(json!({"user_tokens": ["u:bob"]}));
    let plain = RequestScope::default();
    engine
        .put(
            &scope,
            &alice,
            vec![rec(json!({"id": "m", "content": "alice's"}))],
        )
        .unwrap();
    engine
        .put(
            &scope,
            &plain,
            vec![rec(json!({"id": "s", "content": "shared"}))],
        )
        .unwrap();
    let batch = vec![
        rec(json!({"content": "fine"})),
        rec(json!({"id": "m", "content": "bob's"})),
    ];
    let err = engine.put(&scope, &bob, batch).unwrap_err();
    assert!(matches!(err, EngineError::IdConflict(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "records[1]: id m is taken by a record outside this request's scope"
    );
    let meta = engine.tenant_meta(scope.tenant()).unwrap();
    let bound = TenantScope::for_tests(
        &meta,
        Grant {
            permissions: Permissions::read_write(),
            user_tokens: Some(vec![UserToken::parse("u:bob").unwrap()]),
            domains: None,
        },
    );
    let batch = vec![
        rec(json!({"content": "fine"})),
        rec(json!({"content": "fine too"})),
        rec(json!({"id": "s", "content": "taken over"})),
    ];
    let err = engine.put(&bound, &plain, batch).unwrap_err();
    assert!(matches!(err, EngineError::ScopeForbidden(_)), "{err:?}");
    assert!(err.to_string().contains("records[2]: "), "{err}");
    // Nothing of either batch was written.
    assert_eq!(engine.count(&scope, &plain, None).unwrap(), 1);
    // One record alone is not a batch: its refusal names no record.
    let err = engine
        .put(
            &scope,
            &bob,
            vec![rec(json!({"id": "m", "content": "bob's"}))],
        )
        .unwrap_err();
    assert!(!err.to_string().contains("records["), "{err}");
}

#[test]
fn permissions_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, full) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let meta = engine.tenant_meta(full.tenant()).unwrap();
    let read_only = TenantScope::for_tests(
        &meta,
        Grant {
            permissions: Permissions::of(&[Permission::Read]),
            user_tokens: None,
            domains: None,
        },
    );
    let req = RequestScope::default();
    assert!(matches!(
        engine.put(&read_only, &req, vec![rec(json!({"content": "x"}))]),
        Err(EngineError::PermissionDenied(Permission::Write))
    ));
    let writer = TenantScope::for_tests(&meta, Grant::read_write());
    let star = scope_json(json!({"user_tokens": ["*"]}));
    assert!(matches!(
        engine.count(&writer, &star, None),
        Err(EngineError::ScopeForbidden(_))
    ));
    assert!(matches!(
        engine.create_collection(
            &writer,
            &CollectionName::parse("c").unwrap(),
            3,
            Metric::Dot
        ),
        Err(EngineError::PermissionDenied(Permission::Admin))
    ));
}

/// A read that skips vectors answers the same records, with `vector: None`, and the same
/// pages; one that reads them answers the stored vector.
#[test]
fn reads_skip_vectors_when_asked_and_change_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let name = CollectionName::parse("tiny").unwrap();
    engine
        .create_collection(&scope, &name, 2, Metric::L2)
        .unwrap();
    let req = RequestScope::default();
    engine
        .put(
            &scope,
            &req,
            vec![
                rec(json!({"id": "a", "modality": "tiny", "vector": [1.0, 2.0], "content": "x"})),
                rec(json!({"id": "b", "content": "no vector"})),
                rec(json!({"id": "c", "modality": "tiny", "vector": [3.0, 4.0]})),
            ],
        )
        .unwrap();
    let a = RecordId::parse("a").unwrap();
    let full = engine.get_with(&scope, &req, &a, Vectors::Read).unwrap();
    assert_eq!(full.vector, Some(vec![1.0, 2.0]));
    assert_eq!(engine.get(&scope, &req, &a).unwrap(), full);
    let lean = engine.get_with(&scope, &req, &a, Vectors::Skip).unwrap();
    assert_eq!(lean.vector, None);
    assert_eq!(
        Record {
            vector: full.vector.clone(),
            ..lean
        },
        full
    );
    assert!(matches!(
        engine.get_with(&scope, &req, &RecordId::parse("zz").unwrap(), Vectors::Skip),
        Err(EngineError::NotFound)
    ));

    let page = |after: Option<&str>, vectors| {
        let page = Page {
            after: after.map(|a| RecordId::parse(a).unwrap()),
            limit: 2,
        };
        engine.scan_with(&scope, &req, None, page, vectors).unwrap()
    };
    let (read, skipped) = (page(None, Vectors::Read), page(None, Vectors::Skip));
    assert_eq!(read.next, skipped.next);
    assert_eq!(read.next.as_ref().map(RecordId::as_str), Some("b"));
    assert_eq!(read.records[0].vector, Some(vec![1.0, 2.0]));
    for (r, s) in read.records.iter().zip(&skipped.records) {
        assert_eq!(s.vector, None);
        assert_eq!(
            &Record {
                vector: r.vector.clone(),
                ..s.clone()
            },
            r
        );
    }
    let rest = page(Some("b"), Vectors::Skip);
    assert_eq!(rest.records.len(), 1);
    assert_eq!(rest.records[0].id.as_str(), "c");
    assert_eq!(rest.records[0].vector, None);
    assert_eq!(rest.next, None);
}

#[test]
fn deleting_a_collection_deletes_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let name = CollectionName::parse("tiny").unwrap();
    engine
        .create_collection(&scope, &name, 2, Metric::L2)
        .unwrap();
    let req = RequestScope::default();
    engine
        .put(
            &scope,
            &req,
            vec![
                rec(json!({"modality": "tiny", "vector": [1.0, 2.0]})),
                rec(json!({"content": "text stays"})),
            ],
        )
        .unwrap();
    assert_eq!(engine.delete_collection(&scope, &name).unwrap(), 1);
    let left = engine
        .scan(
            &scope,
            &req,
            None,
            Page {
                after: None,
                limit: 10,
            },
        )
        .unwrap();
    assert_eq!(left.records.len(), 1);
    assert_eq!(left.records[0].content.as_deref(), Some("text stays"));
    let names: Vec<String> = engine
        .collections(&scope)
        .unwrap()
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    assert_eq!(names, ["audio", "image", "text"]);
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
        engine
            .put(
                &scope,
                &RequestScope::default(),
                vec![rec(json!({"content": "durable"}))],
            )
            .unwrap()[0]
            .id
            .clone()
    };
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    assert_eq!(
        engine
            .get(&scope, &RequestScope::default(), &id)
            .unwrap()
            .content
            .as_deref(),
        Some("durable")
    );
}

/// An expired record is gone for every reader, so writing the same content into its run again
/// must store a new record, not answer "deduplicated" with the id of a record nobody can read
/// (the write would be acknowledged and lost).
#[test]
fn an_expired_copy_does_not_deduplicate_a_new_write() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let req = scope_json(json!({"run_id": "run-1"}));
    let soon = now_millis() + 50;
    let first = engine
        .put(
            &scope,
            &req,
            vec![rec(
                json!({"content": "call the plumber", "expires_at": soon}),
            )],
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(120));
    for batch in [1, 2] {
        let again = engine
            .put(
                &scope,
                &req,
                vec![rec(json!({"content": "call the plumber"})); batch],
            )
            .unwrap();
        assert!(again[0].created && !again[0].deduplicated, "{again:?}");
        assert_ne!(again[0].id, first[0].id);
        // The new record deduplicates what follows it, in the same batch too.
        assert!(again.iter().skip(1).all(|o| o.deduplicated));
        assert_eq!(
            engine
                .get(&scope, &req, &again[0].id)
                .unwrap()
                .content
                .as_deref(),
            Some("call the plumber")
        );
        engine.delete(&scope, &req, &again[0].id).unwrap();
    }
    assert!(matches!(
        engine.get(&scope, &req, &first[0].id),
        Err(EngineError::NotFound)
    ));
}

/// A client id whose record has expired is free: the write creates a record under it (not
/// `409`, not an update of the expired one), with nothing of the expired record kept.
#[test]
fn a_client_id_of_an_expired_record_is_written_as_new() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let req = RequestScope::default();
    let bob = scope_json(json!({"user_tokens": ["u:bob"]}));
    let soon = now_millis() + 50;
    engine
        .put(
            &scope,
            &bob,
            vec![rec(
                json!({"id": "note-1", "content": "old", "expires_at": soon,
                            "user_tokens": ["u:bob"], "metadata": {"old": true}}),
            )],
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(120));
    let out = engine
        .put(
            &scope,
            &req,
            vec![rec(json!({"id": "note-1", "content": "new"}))],
        )
        .unwrap();
    assert!(out[0].created && !out[0].deduplicated, "{out:?}");
    let got = engine.get(&scope, &req, &out[0].id).unwrap();
    assert_eq!(got.content.as_deref(), Some("new"));
    assert!(got.user_tokens.is_empty() && got.expires_at.is_none());
    assert!(got.metadata.get("old").is_none());
    assert_eq!(engine.count(&scope, &req, None).unwrap(), 1);
}

/// A write's expiry checks and times are those of its commit: a copy that expires while the
/// write is being embedded (each step queued in the tenant's fair share) does not
/// deduplicate it, and the new record is stamped when it is written.
#[test]
fn a_copy_that_expires_while_a_write_is_embedded_does_not_deduplicate_it() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let req = scope_json(json!({"run_id": "run-1"}));
    let soon = now_millis() + 100;
    engine
        .put(
            &scope,
            &req,
            vec![rec(
                json!({"content": "water the plants", "expires_at": soon}),
            )],
        )
        .unwrap();
    let pending = engine
        .begin_put(
            &scope,
            &req,
            vec![rec(json!({"content": "water the plants"}))],
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let out = engine.finish_put(&scope, &req, pending).unwrap();
    assert!(out[0].created && !out[0].deduplicated, "{out:?}");
    let got = engine.get(&scope, &req, &out[0].id).unwrap();
    assert!(got.created_at >= soon, "stamped at its commit: {got:?}");
}

#[test]
fn a_past_expiry_is_refused_and_a_batch_names_the_record_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let req = RequestScope::default();
    let past = now_millis() - 1;
    let err = engine
        .put(
            &scope,
            &req,
            vec![rec(json!({"content": "x", "expires_at": past}))],
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::InvalidRecord(RecordError::ExpiryNotAhead { at, .. }) if at == past
        ),
        "{err}"
    );
    // Several records: the error says which; a batch of one says so when asked.
    let mut batch: Vec<NewRecord> = (0..5)
        .map(|i| rec(json!({"content": format!("r{i}")})))
        .collect();
    batch.push(rec(json!({"content": "x", "metadata": {"created_at": 1}})));
    let err = engine.put(&scope, &req, batch).unwrap_err();
    assert!(
        matches!(
            &err,
            EngineError::InvalidRecordAt {
                index: 5,
                error: RecordError::ShadowedField { .. }
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("records[5].metadata: "),
        "{err}"
    );
    // Found only in the transaction (the collection's dimension): named the same way.
    let batch = vec![
        rec(json!({"content": "fine"})),
        rec(json!({"vector": [1.0, 2.0]})),
    ];
    let err = engine.put(&scope, &req, batch).unwrap_err();
    assert!(
        matches!(
            &err,
            EngineError::InvalidRecordAt {
                index: 1,
                error: RecordError::DimensionMismatch { .. }
            }
        ),
        "{err}"
    );
    let one = vec![rec(json!({"content": "x", "expires_at": past}))];
    let err = engine.begin_put_batch(&scope, &req, one).err().unwrap();
    assert!(
        err.to_string().starts_with("records[0].expires_at: "),
        "{err}"
    );
    assert_eq!(engine.count(&scope, &req, None).unwrap(), 0);
    // The same expiry ahead is written, and a patch may not move it into the past.
    let ahead = now_millis() + 60_000;
    let out = engine
        .put(
            &scope,
            &req,
            vec![rec(json!({"content": "x", "expires_at": ahead}))],
        )
        .unwrap();
    let patch: RecordPatch = serde_json::from_value(json!({"expires_at": past})).unwrap();
    let err = engine.patch(&scope, &req, &out[0].id, patch).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::InvalidRecord(RecordError::ExpiryNotAhead { .. })
        ),
        "{err}"
    );
}

#[test]
fn a_null_metadata_patch_clears_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let req = RequestScope::default();
    let out = engine
        .put(
            &scope,
            &req,
            vec![rec(json!({"content": "x", "metadata": {"a": 1, "b": 2}}))],
        )
        .unwrap();
    let id = &out[0].id;
    let patch = |body| serde_json::from_value::<RecordPatch>(body).unwrap();
    let r = engine
        .patch(&scope, &req, id, patch(json!({"metadata": {"a": null}})))
        .unwrap();
    assert_eq!(r.metadata, *json!({"b": 2}).as_object().unwrap());
    let r = engine
        .patch(&scope, &req, id, patch(json!({"metadata": null})))
        .unwrap();
    assert!(r.metadata.is_empty());
    assert!(engine.get(&scope, &req, id).unwrap().metadata.is_empty());
}
