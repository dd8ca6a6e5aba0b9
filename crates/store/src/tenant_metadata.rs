//! A tenant's operator metadata (free-form JSON an operator attaches to the tenant: team,
//! billing plan, ...), kept as one row in the tenant's own range rather than in its registry
//! row: every write decodes the registry row for its liveness check, and must not pay for
//! metadata it never looks at. Being in the tenant's range, the row moves with a data move
//! (copied, and caught up by the flip) and a purge erases it with the tenant.

use redb::ReadableTable;
use serde_json::{Map, Value};

use crate::StoreError;
use crate::codec::{decode_tenant_metadata, encode_tenant_metadata};
use crate::keys::{self, TenantKey};
use crate::tables::{Reads, Writer};

/// The bounds a tenant's metadata keeps (the engine refuses changes past them; the store
/// refuses to decode a longer row and verify reports a stored one past them): encoded
/// (compact JSON) size at most...
pub const MAX_BYTES: usize = 16 * 1024;
/// ...top-level keys at most...
pub const MAX_KEYS: usize = 64;
/// ...and nesting at most: the object itself is level 1, an object or array in it level 2.
pub const MAX_DEPTH: usize = 8;

/// Levels of nesting of an object (1 for a flat one), walked without recursion; stops
/// counting one past [`MAX_DEPTH`].
pub fn depth_of(m: &Map<String, Value>) -> usize {
    let mut deepest = 1;
    let mut stack: Vec<(&Value, usize)> = m.values().map(|v| (v, 1)).collect();
    while let Some((v, level)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Object(o) => Box::new(o.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        let level = level + 1;
        deepest = deepest.max(level);
        if deepest > MAX_DEPTH {
            return deepest;
        }
        stack.extend(children.map(|c| (c, level)));
    }
    deepest
}

/// What is wrong with a decoded row by the bounds (the byte bound is the decoder's), if
/// anything: a row past them was not written by the engine.
pub(crate) fn out_of_bounds(m: &Map<String, Value>) -> Option<String> {
    if m.len() > MAX_KEYS {
        return Some(format!("{} keys, more than {MAX_KEYS}", m.len()));
    }
    let depth = depth_of(m);
    (depth > MAX_DEPTH).then(|| format!("nested {depth} levels deep, more than {MAX_DEPTH}"))
}

/// Tenant `t`'s metadata, where the tenant lives in this transaction; empty if it has none. A
/// row that does not decode is [`StoreError::Corrupt`].
pub fn tenant_metadata(r: &impl Reads, t: TenantKey) -> Result<Map<String, Value>, StoreError> {
    match r.data_table(t)?.get(keys::tenant_metadata(t).as_slice())? {
        Some(v) => decode_tenant_metadata(v.value()),
        None => Ok(Map::new()),
    }
}

impl Writer<'_> {
    /// Replaces tenant `t`'s metadata; an empty map removes the row. Goes through the tracked
    /// table, so a data move under way carries the change to the other side.
    pub fn put_tenant_metadata(
        &mut self,
        t: TenantKey,
        m: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        let key = keys::tenant_metadata(t);
        let mut table = self.table_mut(t)?;
        if m.is_empty() {
            table.remove(key.as_slice())?;
        } else {
            table.insert(key.as_slice(), encode_tenant_metadata(m)?.as_slice())?;
        }
        Ok(())
    }

    /// Writes tenant `t`'s metadata row as the bytes given, for tests of damaged rows.
    #[cfg(feature = "test-support")]
    pub fn put_tenant_metadata_bytes_for_tests(
        &mut self,
        t: TenantKey,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let key = keys::tenant_metadata(t);
        self.table_mut(t)?.insert(key.as_slice(), bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_tenant;

    #[test]
    fn the_row_reads_back_verifies_clean_and_goes_when_emptied() {
        let (_dir, store, t) = crate::test_tenant::store_with_tenant("acme");
        assert!(
            tenant_metadata(&store.read().unwrap(), t)
                .unwrap()
                .is_empty()
        );
        let before = check_tenant(&store.read().unwrap(), t).unwrap().keys;
        let m = serde_json::json!({"plan": "pro"})
            .as_object()
            .cloned()
            .unwrap();
        store.write(|w| w.put_tenant_metadata(t, &m)).unwrap();
        let r = store.read().unwrap();
        assert_eq!(tenant_metadata(&r, t).unwrap(), m);
        let check = check_tenant(&r, t).unwrap();
        assert!(check.problems.is_empty(), "{check:?}");
        assert_eq!(check.keys, before + 1);
        drop(r);
        store
            .write(|w| w.put_tenant_metadata(t, &Map::new()))
            .unwrap();
        assert_eq!(
            check_tenant(&store.read().unwrap(), t).unwrap().keys,
            before
        );
    }

    /// A stored row past the key or depth bound (not written by the engine: damaged or
    /// edited) is reported by verify; one exactly at the bounds is clean.
    #[test]
    fn verify_reports_a_row_past_the_key_or_depth_bound() {
        let (_dir, store, t) = crate::test_tenant::store_with_tenant("acme");
        let flat = |n: usize| -> Map<String, Value> {
            (0..n).map(|i| (format!("k{i}"), Value::from(i))).collect()
        };
        let deep = |levels: usize| -> Map<String, Value> {
            let mut v = Value::from(1);
            for _ in 1..levels {
                v = serde_json::json!({ "a": v });
            }
            serde_json::json!({ "a": v }).as_object().cloned().unwrap()
        };
        assert_eq!(depth_of(&deep(MAX_DEPTH)), MAX_DEPTH);
        for (m, clean) in [
            (flat(MAX_KEYS), true),
            (flat(MAX_KEYS + 1), false),
            (deep(MAX_DEPTH), true),
            (deep(MAX_DEPTH + 1), false),
        ] {
            let bytes = crate::codec::encode_tenant_metadata(&m).unwrap();
            store
                .write(|w| {
                    w.table_mut(t)?
                        .insert(keys::tenant_metadata(t).as_slice(), bytes.as_slice())?;
                    Ok::<_, StoreError>(())
                })
                .unwrap();
            let check = check_tenant(&store.read().unwrap(), t).unwrap();
            assert_eq!(check.problems.is_empty(), clean, "{check:?}");
        }
    }
}
