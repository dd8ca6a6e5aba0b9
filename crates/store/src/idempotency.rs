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
use crate::tables::{Reads, Writer, bounded_range, prefix_range};

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

    /// Deletes tenant `t`'s rows written before `cutoff`, looking at no more than `max` rows
    /// after `after` (from the first if `None`); returns how many it deleted and, when rows
    /// may remain beyond those looked at, the key to go on after in the next transaction. A
    /// row that does not decode is deleted too: it can answer nothing. Bounded so that a
    /// tenant with millions of keyed writes does not hold the write lock for the whole sweep.
    pub fn sweep_idempotency_rows(
        &mut self,
        t: TenantKey,
        cutoff: Millis,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<(usize, Option<Vec<u8>>), StoreError> {
        let prefix = keys::idempotency_keys(t);
        let start = match after {
            Some(k) => crate::tables::successor(k.to_vec()),
            None => prefix.clone(),
        };
        let max = max.max(1);
        let (mut doomed, mut looked, mut last) = (Vec::new(), 0, None);
        for entry in bounded_range(self.data_table(t)?, &start, &prefix)?.take(max) {
            let (k, v) = entry?;
            if stale(&v, cutoff) {
                doomed.push(k.clone());
            }
            looked += 1;
            last = Some(k);
        }
        for k in &doomed {
            self.table_mut(t)?.remove(k.as_slice())?;
        }
        // Fewer than `max` looked at: the range ended.
        Ok((doomed.len(), last.filter(|_| looked == max)))
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

    /// A sweep in bounded steps deletes every stale row and only those, each step looking at
    /// no more rows than it is given, the last step saying nothing is left.
    #[test]
    fn a_sweep_goes_in_steps_and_deletes_only_stale_rows() {
        let (_dir, store, t) = crate::test_tenant::store_with_tenant("acme");
        let cutoff = 1_000;
        store
            .write(|w| {
                for i in 0..50u64 {
                    let mut r = row();
                    // Every third row is fresh.
                    r.at = if i % 3 == 0 { 2_000 } else { 500 };
                    w.put_idempotency_row(t, &format!("key-{i:02}"), &r)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let (mut deleted, mut steps, mut after) = (0, 0, None::<Vec<u8>>);
        loop {
            let (n, next) = store
                .write(|w| w.sweep_idempotency_rows(t, cutoff, after.as_deref(), 7))
                .unwrap();
            assert!(n <= 7);
            deleted += n;
            steps += 1;
            match next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!(deleted, 33);
        assert_eq!(steps, 8, "50 rows, 7 a step");
        let left: Vec<Millis> = prefix_range(
            store.read().unwrap().data_table(t).unwrap(),
            &keys::idempotency_keys(t),
        )
        .unwrap()
        .map(|e| IdempotencyRow::decode(&e.unwrap().1).unwrap().at)
        .collect();
        assert_eq!(left, vec![2_000; 17]);
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
