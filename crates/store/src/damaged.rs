//! Records whose stored bytes no longer decode (a changed byte fails their checksum, see
//! `codec`): found, and removed together with every entry that names them, so that an
//! operator can bring the rest of a tenant back without restoring a backup (the engine's
//! `repair_tenant`). Until then every read that meets such a record fails rather than serve
//! bytes nobody wrote.

use std::collections::HashSet;

use strata_types::{CollectionName, RecordId};

use crate::StoreError;
use crate::codec::{ChangeOp, decode_record};
use crate::keys::{self, AdaptiveKey, KeyKind, TenantKey};
use crate::tables::{Reads, Writer, prefix_range};

/// The ids of tenant `t`'s records whose rows do not decode, in id order.
pub fn damaged_records(r: &impl Reads, t: TenantKey) -> Result<Vec<RecordId>, StoreError> {
    let prefix = keys::records(t);
    let mut out = Vec::new();
    for entry in prefix_range(r.data_table(t)?, &prefix)? {
        let (k, v) = entry?;
        if decode_record(&v).is_ok() {
            continue;
        }
        // The key was written with the record and is checked by the page's own checksum:
        // one that no longer names an id is damage of another kind, which `verify` reports.
        let id = std::str::from_utf8(&k[prefix.len()..])
            .ok()
            .and_then(|text| RecordId::parse(text).ok())
            .ok_or_else(|| StoreError::Corrupt(format!("record key {k:02x?}: not an id")))?;
        out.push(id);
    }
    Ok(out)
}

impl Writer<'_> {
    /// Removes records `ids` of tenant `t`, whose rows do not decode, with every entry that
    /// names them: their scope-index, expiry-index and dedup entries and their pheromones
    /// (found by the id they end with or hold, since the records that would name them cannot
    /// be read; one pass over each kind), and the links out of and into them. (A run's tail
    /// may still name one, as after any delete: the run's next record finds no such record and
    /// links to none.) Their collections are unknown, so each removal is logged in every one
    /// of `collections`: an index of any of them drops the id when it catches up.
    pub fn remove_damaged_records(
        &mut self,
        t: TenantKey,
        ids: &[RecordId],
        collections: &[CollectionName],
    ) -> Result<(), StoreError> {
        let raw: HashSet<&[u8]> = ids.iter().map(|id| id.as_str().as_bytes()).collect();
        let named = |id: Option<&[u8]>| id.is_some_and(|id| raw.contains(id));
        let mut doomed: Vec<Vec<u8>> = ids.iter().map(|id| keys::record(t, id)).collect();
        for entry in prefix_range(self.table(t)?, &keys::scopes(t))? {
            let (k, _) = entry?;
            if named(k.rsplit(|b| *b == 0).next()) {
                doomed.push(k);
            }
        }
        let expiry = keys::expiry_list(t);
        for entry in prefix_range(self.table(t)?, &expiry)? {
            let (k, _) = entry?;
            if named(keys::parse_expiry(&k[expiry.len()..]).map(|(_, id)| id)) {
                doomed.push(k);
            }
        }
        for entry in prefix_range(self.table(t)?, &keys::dedups(t))? {
            let (k, v) = entry?;
            if named(Some(&v)) {
                doomed.push(k);
            }
        }
        for entry in prefix_range(self.table(t)?, &keys::adaptive_all(t))? {
            let (k, _) = entry?;
            let pheromone_of = match keys::classify(t, &k) {
                Some(KeyKind::Adaptive(rest)) => match keys::parse_adaptive(rest) {
                    Some(AdaptiveKey::Pheromone { id, .. }) => Some(id),
                    _ => None,
                },
                _ => None,
            };
            if named(pheromone_of) {
                doomed.push(k);
            }
        }
        for k in doomed {
            self.table_mut(t)?.remove(k.as_slice())?;
        }
        for id in ids {
            self.delete_links_of(t, id)?;
            for c in collections {
                self.log_change(t, ChangeOp::Delete, c, id)?;
            }
        }
        Ok(())
    }
}
