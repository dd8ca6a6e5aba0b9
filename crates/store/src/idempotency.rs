//! Rows for `Idempotency-Key`: the answer to a write, kept under the key its client sent, so a
//! retry of the same request gets the first answer back instead of writing again. A row is
//! written in the same transaction as the write it answers, so after a crash either both are
//! there or neither is.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use strata_types::Millis;

use crate::StoreError;
use crate::codec::{decode_json, encode_json};
use crate::keys::{self, TenantKey};
use crate::tables::sealed::Tables;
use crate::tables::{Reads, Writer, prefix_range};

/// One kept answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyRow {
    /// When the write was made; rows older than the server's retention are swept.
    pub at: Millis,
    /// SHA-256 of the request (route, query and body), hex: the same key with another request
    /// is refused rather than answered with an unrelated write's answer.
    pub fingerprint: String,
    /// The HTTP status of the first answer.
    pub status: u16,
    /// The first answer's body.
    pub answer: serde_json::Value,
}

impl IdempotencyRow {
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        encode_json(self)
    }

    /// Closed: a value of another shape is [`StoreError::Corrupt`].
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        decode_json(bytes)
    }
}

/// Whether tenant `t` has rows written before `cutoff` (or undecodable ones): a read, so a
/// sweep opens a write transaction only for tenants with something to delete.
pub fn has_stale_idempotency_rows(
    r: &impl Reads,
    t: TenantKey,
    cutoff: Millis,
) -> Result<bool, StoreError> {
    for entry in prefix_range(r.data_table(t)?, &keys::idempotency_keys(t))? {
        let (_, v) = entry?;
        if stale(&v, cutoff) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn stale(value: &[u8], cutoff: Millis) -> bool {
    IdempotencyRow::decode(value).map_or(true, |row| row.at < cutoff)
}

/// The row kept under `key` for tenant `t`, if any, in a write's or a snapshot's tables.
fn row_of(r: &impl Tables, t: TenantKey, key: &str) -> Result<Option<IdempotencyRow>, StoreError> {
    match r.data_table(t)?.get(keys::idempotency(t, key).as_slice())? {
        Some(v) => IdempotencyRow::decode(v.value()).map(Some),
        None => Ok(None),
    }
}

impl crate::Reader {
    /// The row kept under `key` for tenant `t`, if any: a look before a write's slow part
    /// (its embedding), which the write's own transaction checks again.
    pub fn idempotency_row(
        &self,
        t: TenantKey,
        key: &str,
    ) -> Result<Option<IdempotencyRow>, StoreError> {
        row_of(self, t, key)
    }
}

impl Writer<'_> {
    /// The row kept under `key` for tenant `t`, if any.
    pub fn idempotency_row(
        &self,
        t: TenantKey,
        key: &str,
    ) -> Result<Option<IdempotencyRow>, StoreError> {
        row_of(self, t, key)
    }

    pub fn put_idempotency_row(
        &mut self,
        t: TenantKey,
        key: &str,
        row: &IdempotencyRow,
    ) -> Result<(), StoreError> {
        self.table_mut(t)?.insert(
            keys::idempotency(t, key).as_slice(),
            row.encode()?.as_slice(),
        )?;
        Ok(())
    }

    /// Deletes tenant `t`'s rows written before `cutoff`; returns how many. A row that does
    /// not decode is deleted too: it can answer nothing.
    pub fn sweep_idempotency_rows(
        &mut self,
        t: TenantKey,
        cutoff: Millis,
    ) -> Result<usize, StoreError> {
        let mut doomed = Vec::new();
        for entry in prefix_range(self.data_table(t)?, &keys::idempotency_keys(t))? {
            let (k, v) = entry?;
            if stale(&v, cutoff) {
                doomed.push(k);
            }
        }
        for k in &doomed {
            self.table_mut(t)?.remove(k.as_slice())?;
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> IdempotencyRow {
        IdempotencyRow {
            at: 1_700_000_000_000,
            fingerprint: "ab".repeat(32),
            status: 201,
            answer: json!({"id": "m1", "created": true, "deduplicated": false}),
        }
    }

    #[test]
    fn golden_bytes_pin_the_format() {
        let bytes = row().encode().unwrap();
        let golden = format!(
            "\u{1}{{\"at\":1700000000000,\"fingerprint\":\"{}\",\"status\":201,\"answer\":{{\"created\":true,\"deduplicated\":false,\"id\":\"m1\"}}}}",
            "ab".repeat(32)
        );
        assert_eq!(bytes, golden.as_bytes());
        assert_eq!(IdempotencyRow::decode(&bytes).unwrap(), row());
    }

    #[test]
    fn other_shapes_do_not_decode() {
        for bad in [
            &b""[..],
            b"\x07{}",
            b"\x01{\"at\":1}",
            b"\x01{\"at\":1,\"fingerprint\":\"x\",\"status\":200,\"answer\":null,\"extra\":1}",
        ] {
            assert!(IdempotencyRow::decode(bad).is_err(), "{bad:?}");
        }
    }
}
