//! Adaptive reranking state in storage: per (tenant, domain) namespace, one narrative vector
//! per collection and one pheromone per reinforced record, each its own key (built in
//! `keys.rs`) so that feedback rewrites only what it touched and deleting a record deletes its
//! pheromone with one key. Values are encoded in `codec.rs`.

use redb::ReadableTable;
use strata_types::{CollectionName, Domain, RecordId};

use crate::StoreError;
use crate::codec::{
    StoredNarrative, StoredPheromone, decode_narrative, decode_pheromone, encode_narrative,
    encode_pheromone,
};
use crate::keys::{self, AdaptiveKey, TenantKey};
use crate::tables::{Reads, Writer, prefix_range};

/// One stored piece of adaptive state.
#[derive(Debug, Clone, PartialEq)]
pub enum AdaptiveItem {
    Narrative(CollectionName, StoredNarrative),
    Pheromone(RecordId, StoredPheromone),
}

/// One stored piece with the domain of its namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveRow {
    pub domain: Domain,
    pub item: AdaptiveItem,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("adaptive key: {what}"))
}

fn name<T>(
    bytes: &[u8],
    parse: impl Fn(String) -> Result<T, strata_types::InvalidName>,
) -> Result<T, StoreError> {
    let s = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8"))?;
    parse(s.to_owned()).map_err(|e| corrupt(&e.to_string()))
}

/// Decodes one adaptive key (its bytes after the tag) and value; closed.
pub(crate) fn decode_row(rest: &[u8], value: &[u8]) -> Result<AdaptiveRow, StoreError> {
    match keys::parse_adaptive(rest).ok_or_else(|| corrupt("malformed"))? {
        AdaptiveKey::Narrative { domain, collection } => Ok(AdaptiveRow {
            domain: name(domain, Domain::parse)?,
            item: AdaptiveItem::Narrative(
                name(collection, CollectionName::parse)?,
                decode_narrative(value)?,
            ),
        }),
        AdaptiveKey::Pheromone { domain, id } => Ok(AdaptiveRow {
            domain: name(domain, Domain::parse)?,
            item: AdaptiveItem::Pheromone(name(id, RecordId::parse)?, decode_pheromone(value)?),
        }),
    }
}

/// Reads of adaptive state, for snapshots and write transactions alike.
pub trait AdaptiveReads: Reads {
    /// Every piece of the tenant's adaptive state, or of one namespace when `domain` is given,
    /// in key order.
    fn adaptive_rows(
        &self,
        t: TenantKey,
        domain: Option<&Domain>,
    ) -> Result<Vec<AdaptiveRow>, StoreError> {
        let prefix = match domain {
            Some(d) => keys::adaptive_namespace(t, d),
            None => keys::adaptive_all(t),
        };
        let skip = keys::adaptive_all(t).len();
        let mut out = Vec::new();
        for entry in prefix_range(self.data_table(t)?, &prefix)? {
            let (k, v) = entry?;
            out.push(decode_row(&k[skip..], &v)?);
        }
        Ok(out)
    }

    fn pheromone(
        &self,
        t: TenantKey,
        domain: &Domain,
        id: &RecordId,
    ) -> Result<Option<StoredPheromone>, StoreError> {
        let k = keys::adaptive_pheromone(t, domain, id);
        let v = self.data_table(t)?.get(k.as_slice())?;
        v.map(|v| decode_pheromone(v.value())).transpose()
    }
}

impl<T: Reads> AdaptiveReads for T {}

impl Writer<'_> {
    pub fn put_narrative(
        &mut self,
        t: TenantKey,
        domain: &Domain,
        c: &CollectionName,
        n: &StoredNarrative,
    ) -> Result<(), StoreError> {
        let k = keys::adaptive_narrative(t, domain, c);
        self.table_mut(t)?
            .insert(k.as_slice(), encode_narrative(n)?.as_slice())?;
        Ok(())
    }

    pub fn delete_narrative(
        &mut self,
        t: TenantKey,
        domain: &Domain,
        c: &CollectionName,
    ) -> Result<bool, StoreError> {
        let k = keys::adaptive_narrative(t, domain, c);
        Ok(self.table_mut(t)?.remove(k.as_slice())?.is_some())
    }

    pub fn put_pheromone(
        &mut self,
        t: TenantKey,
        domain: &Domain,
        id: &RecordId,
        p: &StoredPheromone,
    ) -> Result<(), StoreError> {
        let k = keys::adaptive_pheromone(t, domain, id);
        self.table_mut(t)?
            .insert(k.as_slice(), encode_pheromone(p)?.as_slice())?;
        Ok(())
    }

    /// Whether there was one to delete.
    pub fn delete_pheromone(
        &mut self,
        t: TenantKey,
        domain: &Domain,
        id: &RecordId,
    ) -> Result<bool, StoreError> {
        let k = keys::adaptive_pheromone(t, domain, id);
        Ok(self.table_mut(t)?.remove(k.as_slice())?.is_some())
    }
}
