//! A tenant's own integrity policy as its registry row holds it. The row keeps it as raw
//! JSON (`TenantProfile::integrity_policy`) and it is decoded here only where it is used, so
//! a damaged policy (or one written by a newer version) fails that tenant's requests alone
//! and can be replaced without being read. Decoding is closed: every field is required and
//! none is unknown, unlike the configuration's and the API's type, which default what is
//! left out.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::IntegrityPolicy;

/// A tenant's own integrity policy as stored, and as an export carries it: every field
/// required (a stored policy missing one was not written by the engine), none unknown. An
/// enter threshold at +inf (never entered) is written `"inf"`; a `null` there, which earlier
/// versions wrote for +inf, reads as +inf (see `threshold`).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoredIntegrityPolicy {
    latency_contract_ms: f64,
    queue_wait_contract_ms: f64,
    queue_depth_limit: u32,
    #[serde(
        serialize_with = "super::threshold::serialize",
        deserialize_with = "super::threshold::deserialize_stored"
    )]
    #[schema(schema_with = super::threshold::schema)]
    stress_enter: f64,
    stress_exit: f64,
    #[serde(
        serialize_with = "super::threshold::serialize",
        deserialize_with = "super::threshold::deserialize_stored"
    )]
    #[schema(schema_with = super::threshold::schema)]
    critical_enter: f64,
    critical_exit: f64,
    consecutive: u32,
    cooldown_ms: u64,
}

/// The stored form of a validated policy, every field written.
pub(crate) fn encode_stored(p: &IntegrityPolicy) -> Value {
    let stored = StoredIntegrityPolicy {
        latency_contract_ms: p.latency_contract_ms,
        queue_wait_contract_ms: p.queue_wait_contract_ms,
        queue_depth_limit: p.queue_depth_limit,
        stress_enter: p.stress_enter,
        stress_exit: p.stress_exit,
        critical_enter: p.critical_enter,
        critical_exit: p.critical_exit,
        consecutive: p.consecutive,
        cooldown_ms: p.cooldown_ms,
    };
    serde_json::to_value(stored).unwrap_or(Value::Null)
}

/// A stored policy, decoded closed and validated; the error says what is wrong with it.
pub(crate) fn decode_stored(v: &Value) -> Result<IntegrityPolicy, String> {
    let p = decode_closed(v).map_err(|e| e.to_string())?;
    p.validate()?;
    Ok(p)
}

/// A policy in its stored form (as an export carries it too), decoded closed but not yet
/// validated, for a caller that words the two errors differently.
pub(crate) fn decode_closed(v: &Value) -> Result<IntegrityPolicy, serde_json::Error> {
    let s = StoredIntegrityPolicy::deserialize(v)?;
    Ok(IntegrityPolicy {
        latency_contract_ms: s.latency_contract_ms,
        queue_wait_contract_ms: s.queue_wait_contract_ms,
        queue_depth_limit: s.queue_depth_limit,
        stress_enter: s.stress_enter,
        stress_exit: s.stress_exit,
        critical_enter: s.critical_enter,
        critical_exit: s.critical_exit,
        consecutive: s.consecutive,
        cooldown_ms: s.cooldown_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_round_trips_through_its_stored_form() {
        let p = IntegrityPolicy {
            consecutive: 2,
            latency_contract_ms: 40.0,
            ..IntegrityPolicy::default()
        };
        assert_eq!(decode_stored(&encode_stored(&p)).unwrap(), p);
    }

    #[test]
    fn a_stored_policy_missing_a_field_or_out_of_range_does_not_decode() {
        let mut v = encode_stored(&IntegrityPolicy::default());
        v.as_object_mut().unwrap().remove("cooldown_ms");
        let e = decode_stored(&v).unwrap_err();
        assert!(e.contains("cooldown_ms"), "{e}");

        let mut v = encode_stored(&IntegrityPolicy::default());
        v["consecutive"] = 0.into();
        assert!(decode_stored(&v).unwrap_err().starts_with("consecutive"));

        let mut v = encode_stored(&IntegrityPolicy::default());
        v["from_a_newer_version"] = true.into();
        assert!(decode_stored(&v).is_err());
        assert!(decode_stored(&Value::String("x".into())).is_err());
    }
}
