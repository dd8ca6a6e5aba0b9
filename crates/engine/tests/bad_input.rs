//! Bad input returns typed errors, never a panic, and changes nothing.

mod common;

use serde_json::json;
use strata_engine::{EngineError, Page};
use strata_types::*;

fn setup() -> (
    tempfile::TempDir,
    strata_engine::Engine,
    strata_auth::TenantScope,
) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    (dir, engine, scope)
}

fn rec(v: serde_json::Value) -> NewRecord {
    serde_json::from_value(v).unwrap()
}

fn put_err(record: NewRecord) -> EngineError {
    let (_dir, engine, scope) = setup();
    let err = engine
        .put(&scope, &RequestScope::default(), vec![record])
        .unwrap_err();
    assert_eq!(
        engine
            .count(&scope, &RequestScope::default(), None)
            .unwrap(),
        0,
        "nothing is written"
    );
    err
}

#[test]
fn invalid_names_are_rejected_with_the_field_named() {
    for (result, field) in [
        (TenantId::parse("bad tenant").map(|_| ()), "tenant_id"),
        (Domain::parse("").map(|_| ()), "memory_domain"),
        (CollectionName::parse("a/b").map(|_| ()), "collection"),
        (RunId::parse("x".repeat(65)).map(|_| ()), "run_id"),
        (MemoryScope::parse("a b").map(|_| ()), "memory_scope"),
        (RecordId::parse("../etc").map(|_| ()), "id"),
        (UserToken::parse("u alice").map(|_| ()), "user_tokens"),
    ] {
        assert_eq!(result.unwrap_err().field, field);
    }
    let bad: Result<NewRecord, _> =
        serde_json::from_value(json!({"content": "x", "run_id": "no spaces"}));
    assert!(bad.unwrap_err().to_string().contains("run_id"));
}

#[test]
fn wrong_vector_dimension() {
    let err = put_err(rec(json!({"vector": [1.0, 2.0]})));
    assert!(
        matches!(
            err,
            EngineError::InvalidRecord(RecordError::DimensionMismatch {
                expected: 384,
                got: 2,
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn oversized_metadata() {
    let err = put_err(rec(
        json!({"content": "x", "metadata": {"blob": "y".repeat(20_000)}}),
    ));
    assert!(
        matches!(
            err,
            EngineError::InvalidRecord(RecordError::MetadataTooLarge { .. })
        ),
        "{err}"
    );
}

#[test]
fn metadata_shadowing_scope_keys() {
    for key in [
        "user_tokens",
        "memory_domain",
        "run_id",
        "memory_scope",
        "tenant_id",
        "created_at",
    ] {
        let err = put_err(rec(json!({"content": "x", "metadata": {key: "sneaky"}})));
        assert!(
            matches!(&err, EngineError::InvalidRecord(RecordError::ShadowedField { key: k }) if k == key),
            "{err}"
        );
    }
}

#[test]
fn non_finite_zero_and_empty_records() {
    let mut v = common::vector(384, 1);
    v[7] = f32::INFINITY;
    let err = put_err(NewRecord {
        vector: Some(v),
        ..Default::default()
    });
    assert!(matches!(
        err,
        EngineError::InvalidRecord(RecordError::NonFiniteVector { position: 7 })
    ));
    let err = put_err(NewRecord {
        vector: Some(vec![0.0; 384]),
        ..Default::default()
    });
    assert!(matches!(
        err,
        EngineError::InvalidRecord(RecordError::ZeroVector { .. })
    ));
    let err = put_err(NewRecord::default());
    assert!(matches!(
        err,
        EngineError::InvalidRecord(RecordError::Empty)
    ));
    let err = put_err(rec(json!({"content": "x".repeat(100_000)})));
    assert!(matches!(
        err,
        EngineError::InvalidRecord(RecordError::ContentTooLarge { .. })
    ));
}

#[test]
fn unknown_collection_and_oversized_batch() {
    let err = put_err(rec(json!({"content": "x", "modality": "video"})));
    assert!(matches!(err, EngineError::CollectionNotFound(_)), "{err}");
    let (_dir, engine, scope) = setup();
    let batch = vec![rec(json!({"content": "x"})); 1001];
    let err = engine
        .put(&scope, &RequestScope::default(), batch)
        .unwrap_err();
    assert!(matches!(
        err,
        EngineError::InvalidRecord(RecordError::BatchTooLarge {
            count: 1001,
            max: 1000
        })
    ));
}

#[test]
fn an_empty_batch_and_an_id_given_twice_are_refused() {
    let (_dir, engine, scope) = setup();
    let err = engine
        .put(&scope, &RequestScope::default(), Vec::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::InvalidRecord(RecordError::EmptyBatch { max: 1000 })
        ),
        "{err}"
    );
    let batch = vec![
        rec(json!({"id": "x", "content": "first"})),
        rec(json!({"content": "no id"})),
        rec(json!({"content": "no id"})),
        rec(json!({"id": "x", "content": "second"})),
    ];
    let err = engine
        .begin_put_batch(&scope, &RequestScope::default(), batch)
        .err()
        .expect("refused");
    assert!(
        matches!(
            &err,
            EngineError::InvalidRecordAt {
                index: 3,
                error: RecordError::DuplicateId { first: 0, .. }
            }
        ),
        "{err}"
    );
    assert_eq!(
        engine
            .count(&scope, &RequestScope::default(), None)
            .unwrap(),
        0,
        "nothing is written"
    );
}

#[test]
fn one_bad_record_rejects_the_whole_batch() {
    let (_dir, engine, scope) = setup();
    let batch = vec![
        rec(json!({"content": "fine"})),
        rec(json!({"vector": [1.0]})),
    ];
    assert!(engine.put(&scope, &RequestScope::default(), batch).is_err());
    assert_eq!(
        engine
            .count(&scope, &RequestScope::default(), None)
            .unwrap(),
        0
    );
}

#[test]
fn bad_patches_change_nothing() {
    let (_dir, engine, scope) = setup();
    let req = RequestScope::default();
    let id = engine
        .put(
            &scope,
            &req,
            vec![rec(json!({"content": "x", "metadata": {"a": 1}}))],
        )
        .unwrap()[0]
        .id
        .clone();
    let patch: RecordPatch = serde_json::from_value(json!({"metadata": {"run_id": "r"}})).unwrap();
    assert!(matches!(
        engine.patch(&scope, &req, &id, patch),
        Err(EngineError::InvalidRecord(
            RecordError::ShadowedField { .. }
        ))
    ));
    let patch: RecordPatch = serde_json::from_value(json!({"vector": [1.0, 2.0, 3.0]})).unwrap();
    assert!(matches!(
        engine.patch(&scope, &req, &id, patch),
        Err(EngineError::InvalidRecord(
            RecordError::DimensionMismatch { .. }
        ))
    ));
    let r = engine.get(&scope, &req, &id).unwrap();
    assert_eq!(r.metadata, json!({"a": 1}).as_object().cloned().unwrap());
    assert!(r.vector.is_none());
    assert!(serde_json::from_value::<RecordPatch>(json!({"memory_domain": "elsewhere"})).is_err());
}

#[test]
fn bad_filters_and_pages() {
    let (_dir, engine, scope) = setup();
    assert!(Filter::parse(&json!({"n": {"$where": "1"}})).is_err());
    let err = engine
        .scan(
            &scope,
            &RequestScope::default(),
            None,
            Page {
                after: None,
                limit: 0,
            },
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::BadRequest(_)));
    let err = engine
        .scan(
            &scope,
            &RequestScope::default(),
            None,
            Page {
                after: None,
                limit: 5000,
            },
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::BadRequest(_)));
}

#[test]
fn collections_validate_their_shape() {
    let (_dir, engine, scope) = setup();
    let name = CollectionName::parse("mine").unwrap();
    assert!(matches!(
        engine.create_collection(&scope, &name, 0, Metric::L2),
        Err(EngineError::BadRequest(_))
    ));
    assert!(matches!(
        engine.create_collection(&scope, &name, 100_000, Metric::L2),
        Err(EngineError::BadRequest(_))
    ));
    engine
        .create_collection(&scope, &name, 3, Metric::L2)
        .unwrap();
    assert!(matches!(
        engine.create_collection(&scope, &name, 3, Metric::L2),
        Err(EngineError::CollectionExists(_))
    ));
    assert!(matches!(
        engine.create_collection(
            &scope,
            &CollectionName::parse("text").unwrap(),
            3,
            Metric::L2
        ),
        Err(EngineError::CollectionExists(_))
    ));
}
