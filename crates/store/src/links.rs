//! Links between a tenant's records: each stored twice, by source (`link_out`, holding the
//! value) and by target (`link_in`, the same value), so both a record's outgoing and its
//! incoming links are one prefix scan, and deleting a record finds every link that touches it.

use redb::ReadableTable;
use strata_types::{Domain, Link, RecordId, Relation, UserToken};

use crate::StoreError;
use crate::codec::{decode_link, encode_link};
use crate::keys::{self, TenantKey};
use crate::tables::{Reads, Writer, prefix_range};

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("link key: {what}"))
}

/// The link a key and value of `t` stand for; `incoming` says which of the two entries it is.
pub(crate) fn link_of(
    t: TenantKey,
    key: &[u8],
    value: &[u8],
    incoming: bool,
) -> Result<Link, StoreError> {
    let rest = keys::link_rest(t, key).ok_or_else(|| corrupt("too short"))?;
    let (a, b, relation) = keys::split_link(rest).ok_or_else(|| corrupt("malformed"))?;
    let (source, target) = if incoming { (b, a) } else { (a, b) };
    let (weight, created_at) = decode_link(value)?;
    Ok(Link {
        source: RecordId::parse(source).map_err(corrupt)?,
        target: RecordId::parse(target).map_err(corrupt)?,
        relation: Relation::parse(relation).map_err(corrupt)?,
        weight,
        created_at,
    })
}

/// Reads of links, for every transaction that reads.
pub trait LinkReads: Reads {
    /// The links out of `id` (`incoming: false`) or into it (`incoming: true`), ordered by the
    /// other end's id, then relation.
    fn links_of(
        &self,
        t: TenantKey,
        id: &RecordId,
        incoming: bool,
    ) -> Result<Vec<Link>, StoreError> {
        let prefix = keys::links_of(t, id, incoming);
        prefix_range(self.data_table(t)?, &prefix)?
            .map(|e| e.and_then(|(k, v)| link_of(t, &k, &v, incoming)))
            .collect()
    }

    /// How many links go out of `id` (`incoming: false`) or into it (`incoming: true`): the
    /// entries counted, not decoded, for the per-record caps checked on every link write.
    fn link_count(&self, t: TenantKey, id: &RecordId, incoming: bool) -> Result<usize, StoreError> {
        let prefix = keys::links_of(t, id, incoming);
        let mut n = 0;
        for e in self.data_table(t)?.range(prefix.as_slice()..)? {
            let (k, _) = e?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// One link, if it exists.
    fn link(
        &self,
        t: TenantKey,
        source: &RecordId,
        target: &RecordId,
        relation: &Relation,
    ) -> Result<Option<Link>, StoreError> {
        let key = keys::link_out(t, source, target, relation.as_str());
        let Some(v) = self.data_table(t)?.get(key.as_slice())? else {
            return Ok(None);
        };
        link_of(t, &key, v.value(), false).map(Some)
    }

    /// Every link of the tenant, by source.
    fn all_links<'a>(
        &'a self,
        t: TenantKey,
    ) -> Result<Box<dyn Iterator<Item = Result<Link, StoreError>> + 'a>, StoreError> {
        let prefix = keys::links_all(t);
        Ok(Box::new(prefix_range(self.data_table(t)?, &prefix)?.map(
            move |e| e.and_then(|(k, v)| link_of(t, &k, &v, false)),
        )))
    }
}

impl<R: Reads> LinkReads for R {}

/// A run tail's value: the record id as text. Closed: anything else is corrupt.
pub(crate) fn decode_run_tail(bytes: &[u8]) -> Result<RecordId, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| RecordId::parse(s).ok())
        .ok_or_else(|| StoreError::Corrupt("run tail: not a record id".into()))
}

impl Writer<'_> {
    /// Stores a link (both entries), replacing the weight of an existing one. Returns the link
    /// it replaced. The caller checks that both ends are records of `t`.
    /// The last record written to a run of a domain, as [`Writer::put_run_tail`] left it.
    pub fn run_tail(
        &self,
        t: TenantKey,
        domain: &Domain,
        run: &str,
        tokens: &[UserToken],
    ) -> Result<Option<RecordId>, StoreError> {
        match self
            .table(t)?
            .get(keys::run_tail(t, domain, run, tokens).as_slice())?
        {
            Some(v) => decode_run_tail(v.value()).map(Some),
            None => Ok(None),
        }
    }

    pub fn put_run_tail(
        &mut self,
        t: TenantKey,
        domain: &Domain,
        run: &str,
        tokens: &[UserToken],
        id: &RecordId,
    ) -> Result<(), StoreError> {
        self.table_mut(t)?.insert(
            keys::run_tail(t, domain, run, tokens).as_slice(),
            id.as_str().as_bytes(),
        )?;
        Ok(())
    }

    /// Forgets the last record of a run (its record gone from the run); whether there was one.
    pub fn delete_run_tail(
        &mut self,
        t: TenantKey,
        domain: &Domain,
        run: &str,
        tokens: &[UserToken],
    ) -> Result<bool, StoreError> {
        let key = keys::run_tail(t, domain, run, tokens);
        let mut table = self.table_mut(t)?;
        let removed = table.remove(key.as_slice())?.is_some();
        Ok(removed)
    }

    pub fn put_link(&mut self, t: TenantKey, link: &Link) -> Result<Option<Link>, StoreError> {
        let old = self.link(t, &link.source, &link.target, &link.relation)?;
        let value = encode_link(link.weight, link.created_at);
        let rel = link.relation.as_str();
        self.table_mut(t)?.insert(
            keys::link_out(t, &link.source, &link.target, rel).as_slice(),
            value.as_slice(),
        )?;
        self.table_mut(t)?.insert(
            keys::link_in(t, &link.source, &link.target, rel).as_slice(),
            value.as_slice(),
        )?;
        Ok(old)
    }

    /// Removes a link (both entries). Returns it, or `None` if there was none.
    pub fn delete_link(
        &mut self,
        t: TenantKey,
        source: &RecordId,
        target: &RecordId,
        relation: &Relation,
    ) -> Result<Option<Link>, StoreError> {
        let Some(old) = self.link(t, source, target, relation)? else {
            return Ok(None);
        };
        let rel = relation.as_str();
        self.table_mut(t)?
            .remove(keys::link_out(t, source, target, rel).as_slice())?;
        self.table_mut(t)?
            .remove(keys::link_in(t, source, target, rel).as_slice())?;
        Ok(Some(old))
    }

    /// Removes every link out of or into `id` (when its record is deleted). Returns them.
    pub fn delete_links_of(
        &mut self,
        t: TenantKey,
        id: &RecordId,
    ) -> Result<Vec<Link>, StoreError> {
        let mut gone = self.links_of(t, id, false)?;
        gone.extend(self.links_of(t, id, true)?);
        for l in &gone {
            self.delete_link(t, &l.source, &l.target, &l.relation)?;
        }
        Ok(gone)
    }
}
