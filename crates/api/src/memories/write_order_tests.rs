//! The order in which a write's conversion refuses a body (`JsonBody`'s order): a body naming
//! another tenant before anything else about it, a malformed `Idempotency-Key` handed back to
//! be refused after the request's scope is checked.

use serde_json::{Map, Value, json};
use strata_types::TenantId;

use super::convert_write;
use crate::ApiError;

fn body(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

fn tenant(name: &str) -> Option<TenantId> {
    Some(TenantId::parse(name).expect("a valid tenant id"))
}

fn bad_key() -> Result<Option<crate::idempotency::Fingerprint>, ApiError> {
    Err(ApiError::BadRequest("Idempotency-Key: malformed".into()))
}

#[test]
fn a_body_naming_another_tenant_is_refused_before_its_key_and_records() {
    let foreign = body(json!({"tenant_id": "tb", "records": [{"bogus": 1}]}));
    match convert_write(tenant("ta"), bad_key(), foreign) {
        Err(ApiError::TenantMismatch(m)) => {
            assert_eq!(m, "tenant_id names a tenant other than the credential's")
        }
        Err(e) => panic!("expected TENANT_MISMATCH, got {e:?}"),
        Ok(_) => panic!("expected TENANT_MISMATCH, got a converted write"),
    }
}

#[test]
fn a_malformed_key_is_handed_back_not_returned() {
    let own = body(json!({"tenant_id": "ta", "records": [{"content": "x"}]}));
    let Ok(input) = convert_write(tenant("ta"), bad_key(), own) else {
        panic!("a body of the credential's tenant converts");
    };
    assert!(matches!(input.idem, Err(ApiError::BadRequest(_))));
    assert!(input.batch);
    assert_eq!(input.records.map(|r| r.len()).ok(), Some(1));
}
