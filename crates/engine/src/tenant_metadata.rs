//! A tenant's operator metadata: a free-form JSON object an operator attaches to a tenant
//! (team, plan, contact, ...), set at creation, changed by a JSON merge patch, shown by the
//! admin API and carried by export and import. Stored in its own row of the tenant's range
//! (`strata_store::tenant_metadata`), never in the registry row that every write decodes.
//!
//! Bounded, so that it stays a label and not a data store beside the records: at most
//! [`MAX_BYTES`] encoded, [`MAX_KEYS`] top-level keys and [`MAX_DEPTH`] levels of nesting.

use serde_json::{Map, Value};
use strata_store::{Reads, StoreError, TenantKey, Writer};
use strata_types::TenantId;

use crate::EngineError;

/// Encoded (compact JSON) size at most.
pub const MAX_BYTES: usize = strata_store::tenant_metadata_bounds::MAX_BYTES;
/// Top-level keys at most.
pub const MAX_KEYS: usize = strata_store::tenant_metadata_bounds::MAX_KEYS;
/// Nesting at most: the object itself is level 1, an object or array in it level 2, ...
pub const MAX_DEPTH: usize = strata_store::tenant_metadata_bounds::MAX_DEPTH;

fn bad(why: String) -> EngineError {
    EngineError::BadRequest(format!("metadata: {why}"))
}

/// Checks a tenant's whole metadata against the bounds; errors name `metadata`.
pub(crate) fn check(m: &Map<String, Value>) -> Result<(), EngineError> {
    if m.len() > MAX_KEYS {
        return Err(bad(format!("at most {MAX_KEYS} keys, not {}", m.len())));
    }
    // Checked before encoding: a deep value must not recurse far in the encoder.
    let depth = strata_store::tenant_metadata_bounds::depth_of(m);
    if depth > MAX_DEPTH {
        return Err(bad(format!(
            "nested at most {MAX_DEPTH} levels deep, not {depth}"
        )));
    }
    let bytes = serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_BYTES {
        return Err(bad(format!(
            "at most {MAX_BYTES} bytes encoded, not {bytes}"
        )));
    }
    Ok(())
}

/// A change of a tenant's metadata as `PATCH` takes it: a JSON merge patch (RFC 7396) object,
/// whose keys set (objects merged recursively) or, as `null`, remove; or `null`, which removes
/// it all. Anything else is refused naming `metadata`.
pub(crate) fn apply_patch(
    current: &mut Map<String, Value>,
    patch: Value,
) -> Result<(), EngineError> {
    match patch {
        Value::Null => current.clear(),
        Value::Object(p) => merge(current, p),
        other => {
            return Err(bad(format!(
                "must be a JSON object (a merge patch) or null, not {}",
                kind(&other)
            )));
        }
    }
    check(current)
}

/// Applies `patch` (as [`apply_patch`] takes it) to tenant `key`'s stored metadata, in the
/// caller's transaction, so that two operators patching different keys at once both keep
/// their change. A `null` patch removes the row without reading it: that is how an operator
/// clears a damaged row, which any other patch refuses (it would merge into unknown values).
pub(crate) fn patch_stored(
    w: &mut Writer<'_>,
    id: &TenantId,
    key: TenantKey,
    patch: Value,
) -> Result<bool, EngineError> {
    let m = match patch {
        Value::Null => Map::new(),
        patch => {
            let mut m = strata_store::tenant_metadata(&*w, key).map_err(|e| match e {
                // The operator's to repair, and told how: not a server failure.
                StoreError::Corrupt(why) => {
                    tracing::warn!(tenant = %id, %why, "metadata merge patch refused: its row is damaged");
                    EngineError::MetadataDamaged(id.clone())
                }
                e => e.into(),
            })?;
            let before = m.clone();
            apply_patch(&mut m, patch)?;
            if m == before {
                return Ok(false);
            }
            m
        }
    };
    w.put_tenant_metadata(key, &m)?;
    Ok(true)
}

/// Tenant `key`'s metadata for an admin answer: `None` (logged) when its row does not decode,
/// so that one damaged row does not fail the answer about everything else; verify names it.
/// A failing read of the store itself is still an error.
pub(crate) fn read_for_display(
    r: &impl Reads,
    id: &TenantId,
    key: TenantKey,
) -> Result<Option<Map<String, Value>>, EngineError> {
    match strata_store::tenant_metadata(r, key) {
        Ok(m) => Ok(Some(m)),
        Err(StoreError::Corrupt(why)) => {
            tracing::warn!(tenant = %id, %why, "tenant metadata left out: its row is damaged");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn merge(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(&k);
            }
            Value::Object(p) => {
                let slot = target.entry(k).or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(t) = slot {
                    merge(t, p);
                }
            }
            v => {
                target.insert(k, v);
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn nested(levels: usize) -> Map<String, Value> {
        let mut v = json!(1);
        for _ in 1..levels {
            v = json!({ "a": v });
        }
        obj(json!({ "a": v }))
    }

    #[test]
    fn a_merge_patch_sets_merges_and_removes() {
        let mut m = obj(json!({"team": "search", "owner": {"name": "ana", "tz": "utc"}, "x": 1}));
        apply_patch(
            &mut m,
            json!({"team": "ranking", "owner": {"tz": null, "mail": "a@x"}, "x": null, "new": [1]}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(m.clone()),
            json!({"team": "ranking", "owner": {"name": "ana", "mail": "a@x"}, "new": [1]})
        );
        // An object replaces a scalar it patches; `null` empties it all.
        apply_patch(&mut m, json!({"team": {"id": 7}})).unwrap();
        assert_eq!(m["team"], json!({"id": 7}));
        apply_patch(&mut m, Value::Null).unwrap();
        assert!(m.is_empty());
        for bad in [json!(1), json!("x"), json!([1]), json!(true)] {
            let e = apply_patch(&mut m, bad).unwrap_err().to_string();
            assert!(e.contains("metadata:"), "{e}");
        }
    }

    #[test]
    fn the_bounds_hold_and_name_the_field() {
        assert!(check(&nested(MAX_DEPTH)).is_ok());
        let e = check(&nested(MAX_DEPTH + 1)).unwrap_err().to_string();
        assert!(e.contains("metadata:") && e.contains("levels"), "{e}");
        // As deep as JSON bodies get (the parser stops at 128): refused early.
        assert!(check(&nested(120)).is_err());
        let many: Map<String, Value> = (0..=MAX_KEYS)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        assert!(check(&many).unwrap_err().to_string().contains("keys"));
        let fits: Map<String, Value> = (0..MAX_KEYS - 1)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        assert!(check(&fits).is_ok());
        let all: Map<String, Value> = (0..MAX_KEYS).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(check(&all).is_ok());
        // `{"blob":""}` is 11 bytes: exactly MAX_BYTES fits, one more does not.
        let exact = obj(json!({"blob": "x".repeat(MAX_BYTES - 11)}));
        assert_eq!(serde_json::to_vec(&exact).unwrap().len(), MAX_BYTES);
        assert!(check(&exact).is_ok());
        let over = obj(json!({"blob": "x".repeat(MAX_BYTES - 10)}));
        assert!(check(&over).unwrap_err().to_string().contains("bytes"));
        let big = obj(json!({"blob": "x".repeat(MAX_BYTES)}));
        assert!(check(&big).unwrap_err().to_string().contains("bytes"));
        // A patch that would take it past a bound is refused.
        let mut m = Map::new();
        assert!(apply_patch(&mut m, Value::Object(many)).is_err());
    }
}

#[cfg(test)]
mod engine_tests {
    use serde_json::json;
    use strata_auth::OperatorScope;
    use strata_types::TenantId;

    use crate::isolation::{IsolationLevel, MigrateRequest};
    use crate::{Engine, EngineConfig, NewTenantSpec, TenantUpdate};

    /// The row lives in the tenant's range, wherever that is: a dedicated tenant's own file,
    /// and across a data move in and out of it; verify finds it clean.
    #[test]
    fn metadata_lives_and_moves_with_the_tenants_data() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let op = OperatorScope::for_tests();
        let m = json!({"team": "search"}).as_object().cloned().unwrap();
        let d = TenantId::parse("d").unwrap();
        let spec = NewTenantSpec {
            isolation: IsolationLevel::Dedicated,
            metadata: Some(m.clone()),
            ..NewTenantSpec::default()
        };
        assert_eq!(
            engine.create_tenant_with(&op, &d, spec).unwrap().metadata,
            Some(m.clone())
        );
        assert_eq!(engine.tenant(&op, &d).unwrap().metadata, Some(m.clone()));
        let update = TenantUpdate {
            metadata: Some(json!({"plan": "pro"})),
            ..TenantUpdate::default()
        };
        let merged = json!({"team": "search", "plan": "pro"})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(
            engine.update_tenant(&op, &d, update).unwrap().metadata,
            Some(merged.clone())
        );
        for target in [IsolationLevel::Shared, IsolationLevel::Dedicated] {
            let req = MigrateRequest {
                target,
                index_params: None,
                dry_run: false,
            };
            engine.migrate_tenant(&op, &d, req).unwrap();
            assert_eq!(
                engine.tenant(&op, &d).unwrap().metadata,
                Some(merged.clone())
            );
            let report = engine.verify_tenant(&op, &d).unwrap();
            assert!(report.ok, "{report:?}");
        }
        // Lists leave it out (up to 16 KiB a tenant); the get shows it.
        let listed = engine.tenants(&op).unwrap();
        assert_eq!(listed[0].metadata, None);
        drop(engine);
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        assert_eq!(
            engine.tenant(&op, &d).unwrap().metadata.unwrap()["plan"],
            "pro"
        );
    }

    /// A damaged metadata row blocks nothing but itself: lifecycle changes and limits patches
    /// go through, the get answers without it, the list answers, verify names it, a merge
    /// patch is refused and a `null` patch clears it.
    #[test]
    fn a_damaged_metadata_row_blocks_only_itself_and_a_null_patch_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let op = OperatorScope::for_tests();
        let id = TenantId::parse("acme").unwrap();
        let spec = NewTenantSpec {
            metadata: json!({"team": "search"}).as_object().cloned(),
            ..NewTenantSpec::default()
        };
        engine.create_tenant_with(&op, &id, spec).unwrap();
        let other = TenantId::parse("other").unwrap();
        engine.create_tenant(&op, &other, None).unwrap();
        let key = engine.tenant_meta(&id).unwrap().key;
        engine
            .store
            .write(|w| w.put_tenant_metadata_bytes_for_tests(key, b"\x01{\"team\":"))
            .unwrap();

        assert!(!engine.verify_tenant(&op, &id).unwrap().ok);
        assert_eq!(engine.tenant(&op, &id).unwrap().metadata, None);
        assert_eq!(engine.tenants(&op).unwrap().len(), 2);
        engine.suspend_tenant(&op, &id).unwrap();
        engine.resume_tenant(&op, &id).unwrap();
        engine.delete_tenant(&op, &id).unwrap();
        engine.restore_tenant(&op, &id).unwrap();
        let limits = crate::lifecycle::TenantLimits {
            max_vectors: Some(10),
            ..Default::default()
        };
        let update = TenantUpdate {
            limits: Some(limits.clone()),
            weight: Some(3),
            ..TenantUpdate::default()
        };
        let info = engine.update_tenant(&op, &id, update).unwrap();
        assert_eq!((info.limits, info.weight, info.metadata), (limits, 3, None));

        // Merging into values it cannot read is refused, and says how to clear it.
        let merge = TenantUpdate {
            metadata: Some(json!({"plan": "pro"})),
            ..TenantUpdate::default()
        };
        let e = engine.update_tenant(&op, &id, merge.clone()).unwrap_err();
        assert!(matches!(e, crate::EngineError::MetadataDamaged(_)), "{e:?}");
        assert!(e.to_string().contains("\"metadata\": null"), "{e}");
        let clear = TenantUpdate {
            metadata: Some(serde_json::Value::Null),
            ..TenantUpdate::default()
        };
        let info = engine.update_tenant(&op, &id, clear).unwrap();
        assert_eq!(info.metadata, Some(Default::default()));
        assert!(engine.verify_tenant(&op, &id).unwrap().ok);
        let info = engine.update_tenant(&op, &id, merge).unwrap();
        assert_eq!(info.metadata.unwrap()["plan"], "pro");
    }
}
