//! Collections being deleted. A collection's delete runs in steps (the engine's
//! `collection_delete`): one short transaction moves its row to a marker row (this module), then
//! its records go in transactions of bounded size, then a last one removes the marker. While
//! the marker lives, the collection does not exist for any lookup (`Reads::collection` finds no
//! row, so writes and searches naming it fail as for a missing one), and its records still
//! stored are hidden here, by the store's record reads (`Reads::record`,
//! `Reads::record_without_vector`, `Reads::records`): the one place every read of a record
//! goes through, so no read path returns, counts or exports one. Only the delete itself and
//! the checks that must see every stored byte (usage recount, verify) read them, through the
//! `stored_*` reads.
//!
//! The marker holds the collection as it was, in the collection row's format, decoded closed:
//! a marker that does not decode is `StoreError::Corrupt`, never "not being deleted".

use redb::ReadableTable;
use strata_types::{Collection, CollectionName, Record};

use crate::StoreError;
use crate::codec::encode_json;
use crate::keys::{self, TenantKey};
use crate::opened::Opened;
use crate::tables::{Reads, Writer, json_row, json_rows};

/// Reads of the marker rows.
pub trait DeletingReads: Reads {
    /// The collection `name` as it was when its delete began, if that delete is unfinished.
    fn collection_deleting(
        &self,
        t: TenantKey,
        name: &CollectionName,
    ) -> Result<Option<Collection>, StoreError> {
        json_row(self.data_table(t)?, &keys::collection_deleting(t, name))
    }

    /// Every collection of the tenant whose delete is unfinished, by name.
    fn collections_deleting(&self, t: TenantKey) -> Result<Vec<Collection>, StoreError> {
        json_rows(self.data_table(t)?, &keys::collections_deleting(t))
    }

    /// Whether the store's record reads hide `record`, one read as stored
    /// ([`Reads::stored_record`]): its collection is being deleted. So a caller that needs both
    /// the stored record and whether it is hidden reads it once.
    fn hides(&self, t: TenantKey, record: &Record) -> Result<bool, StoreError> {
        is_deleting(self, t, &record.modality)
    }
}

impl<R: Reads + ?Sized> DeletingReads for R {}

/// A read snapshot's memo of each tenant's collections being deleted, read once per tenant
/// on the snapshot's first record read of it: a snapshot never changes, so every later record
/// read asks memory, not storage (a search reads each of its hits). A write transaction has
/// none: it sees its own marks come and go, so it probes the marker key each time.
#[derive(Default)]
pub struct DeletingMemo(Opened<TenantKey, Vec<CollectionName>>);

/// Whether `name` is being deleted: its records are hidden. A key probe, or the snapshot's
/// memo of the tenant's markers (whose values are decoded, closed).
pub(crate) fn is_deleting(
    r: &(impl Reads + ?Sized),
    t: TenantKey,
    name: &CollectionName,
) -> Result<bool, StoreError> {
    if let Some(memo) = r.deleting_memo() {
        let names = memo.0.get_or_try_insert(t, || {
            r.collections_deleting(t)
                .map(|cs| cs.into_iter().map(|c| c.name).collect::<Vec<_>>())
        })?;
        return Ok(names.contains(name));
    }
    Ok(r.data_table(t)?
        .get(keys::collection_deleting(t, name).as_slice())?
        .is_some())
}

/// `record` unless its collection is being deleted.
pub(crate) fn unless_hidden(
    r: &(impl Reads + ?Sized),
    t: TenantKey,
    record: Option<Record>,
) -> Result<Option<Record>, StoreError> {
    match record {
        Some(rec) if is_deleting(r, t, &rec.modality)? => Ok(None),
        other => Ok(other),
    }
}

/// Remembers, for one walk over many records, which collections are being deleted: one key
/// probe per collection name met, not one per record. A walk inside one transaction only: a
/// later transaction may see other markers.
#[derive(Default)]
pub struct HiddenMemo {
    seen: Vec<(CollectionName, bool)>,
}

impl HiddenMemo {
    pub(crate) fn hides(
        &mut self,
        r: &(impl Reads + ?Sized),
        t: TenantKey,
        record: &Record,
    ) -> Result<bool, StoreError> {
        self.hides_collection(r, t, &record.modality)
    }

    pub(crate) fn hides_collection(
        &mut self,
        r: &(impl Reads + ?Sized),
        t: TenantKey,
        name: &CollectionName,
    ) -> Result<bool, StoreError> {
        if let Some((_, hidden)) = self.seen.iter().find(|(n, _)| n == name) {
            return Ok(*hidden);
        }
        let hidden = is_deleting(r, t, name)?;
        self.seen.push((name.clone(), hidden));
        Ok(hidden)
    }
}

impl Writer<'_> {
    /// Begins the delete of collection `name`: its row becomes a marker row holding it, so
    /// from this transaction's commit on the collection is missing to every lookup and its
    /// records are hidden. `None` (and nothing written) when it has no row.
    pub fn mark_collection_deleting(
        &mut self,
        t: TenantKey,
        name: &CollectionName,
    ) -> Result<Option<Collection>, StoreError> {
        let Some(c) = self.collection(t, name)? else {
            return Ok(None);
        };
        self.delete_collection(t, name)?;
        self.table_mut(t)?.insert(
            keys::collection_deleting(t, name).as_slice(),
            encode_json(&c)?.as_slice(),
        )?;
        Ok(Some(c))
    }

    /// Ends the delete of collection `name` (its records must be gone): removes its marker.
    /// Whether there was one.
    pub fn unmark_collection_deleting(
        &mut self,
        t: TenantKey,
        name: &CollectionName,
    ) -> Result<bool, StoreError> {
        Ok(self
            .table_mut(t)?
            .remove(keys::collection_deleting(t, name).as_slice())?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tenant::store_with_tenant;
    use strata_types::{Confidence, Domain, Metric, RecordId, TextAnalyzer};

    fn collection(name: &CollectionName) -> Collection {
        Collection {
            name: name.clone(),
            dim: 2,
            metric: Metric::Cosine,
            created_at: 1,
            embedder: None,
            analyzer: TextAnalyzer::Standard,
            memory: Default::default(),
        }
    }

    fn record(id: &str, c: &CollectionName) -> Record {
        Record {
            id: RecordId::parse(id).unwrap(),
            modality: c.clone(),
            kind: None,
            content: Some("hi".into()),
            vector: Some(vec![1.0, 0.5]),
            user_tokens: Vec::new(),
            memory_domain: Domain::parse("default").unwrap(),
            run_id: None,
            memory_scope: None,
            metadata: Default::default(),
            created_at: 1,
            updated_at: 1,
            expires_at: None,
            confidence: Confidence::default(),
        }
    }

    #[test]
    fn a_marked_collection_is_missing_and_hides_its_records_until_unmarked() {
        let (_dir, store, t) = store_with_tenant("acme");
        let doomed = CollectionName::parse("doomed").unwrap();
        let kept = CollectionName::parse("kept").unwrap();
        store
            .write(|w| -> Result<(), StoreError> {
                for c in [&doomed, &kept] {
                    w.put_collection(t, &collection(c))?;
                }
                w.put_record(t, &record("a", &doomed))?;
                w.put_record(t, &record("b", &kept))?;
                Ok(())
            })
            .unwrap();
        let marked = store
            .write(|w| w.mark_collection_deleting(t, &doomed))
            .unwrap();
        assert_eq!(marked, Some(collection(&doomed)));
        let r = store.read().unwrap();
        let a = RecordId::parse("a").unwrap();
        assert_eq!(r.collection(t, &doomed).unwrap(), None);
        assert_eq!(r.collections(t).unwrap(), vec![collection(&kept)]);
        assert_eq!(
            r.collections_deleting(t).unwrap(),
            vec![collection(&doomed)]
        );
        assert_eq!(r.record(t, &a).unwrap(), None);
        assert_eq!(r.record_without_vector(t, &a).unwrap(), None);
        let listed: Vec<_> = r.records(t, None).unwrap().map(|x| x.unwrap().id).collect();
        assert_eq!(listed, vec![RecordId::parse("b").unwrap()]);
        // What the delete itself and the usage recount read.
        let stored = r.stored_record(t, &a).unwrap().unwrap();
        assert!(r.hides(t, &stored).unwrap());
        let b = r.stored_record(t, &RecordId::parse("b").unwrap()).unwrap();
        assert!(!r.hides(t, &b.unwrap()).unwrap());
        assert_eq!(r.stored_records(t, None).unwrap().count(), 2);
        // The same walk without the vectors, as the delete's scan reads it.
        let walked: Vec<_> = r
            .stored_records_without_vector(t, None)
            .unwrap()
            .map(|x| x.unwrap())
            .collect();
        let mut expected = vec![record("a", &doomed), record("b", &kept)];
        expected.iter_mut().for_each(|x| x.vector = None);
        assert_eq!(walked, expected);
        assert_eq!(
            r.stored_records_without_vector(t, Some(&a))
                .unwrap()
                .map(|x| x.unwrap().id)
                .collect::<Vec<_>>(),
            vec![RecordId::parse("b").unwrap()]
        );
        // A key check takes the marker for the collection of the records it still holds.
        assert_eq!(
            crate::check_tenant(&r, t).unwrap().problems,
            Vec::<String>::new()
        );
        drop(r);
        store
            .write(|w| -> Result<(), StoreError> {
                w.delete_record(t, &a)?;
                assert!(w.unmark_collection_deleting(t, &doomed)?);
                Ok(())
            })
            .unwrap();
        let r = store.read().unwrap();
        assert_eq!(r.collections_deleting(t).unwrap(), Vec::new());
        assert_eq!(
            crate::check_tenant(&r, t).unwrap().problems,
            Vec::<String>::new()
        );
    }

    /// A write transaction has no memo: it sees its own marks come and go.
    #[test]
    fn a_write_sees_its_own_mark_and_unmark() {
        let (_dir, store, t) = store_with_tenant("acme");
        let doomed = CollectionName::parse("doomed").unwrap();
        let a = RecordId::parse("a").unwrap();
        store
            .write(|w| -> Result<(), StoreError> {
                w.put_collection(t, &collection(&doomed))?;
                w.put_record(t, &record("a", &doomed))?;
                assert!(w.record(t, &a)?.is_some());
                let stored = w.stored_record(t, &a)?.unwrap();
                assert!(!w.hides(t, &stored)?);
                w.mark_collection_deleting(t, &doomed)?;
                assert_eq!(w.record(t, &a)?, None);
                assert!(w.hides(t, &stored)?);
                assert_eq!(w.records(t, None)?.count(), 0);
                w.unmark_collection_deleting(t, &doomed)?;
                assert!(w.record(t, &a)?.is_some());
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_marker_that_does_not_decode_is_corrupt() {
        let (_dir, store, t) = store_with_tenant("acme");
        let name = CollectionName::parse("doomed").unwrap();
        store
            .write(|w| -> Result<(), StoreError> {
                w.table_mut(t)?.insert(
                    keys::collection_deleting(t, &name).as_slice(),
                    b"\xffjunk".as_slice(),
                )?;
                Ok(())
            })
            .unwrap();
        let r = store.read().unwrap();
        assert!(matches!(
            r.collection_deleting(t, &name),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            r.collections_deleting(t),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(crate::check_tenant(&r, t).unwrap().problem_count, 1);
    }
}
