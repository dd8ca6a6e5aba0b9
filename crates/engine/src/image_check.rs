//! Checks a search image's field and text indexes against its slots before a collection is
//! rebuilt from it (`CollectionIndex::from_image`).
//!
//! The field and BM25 indexes decode closed on their own (`field_stored`, `bm25_stored` in
//! the index crate), but only against themselves. An exact filter answered by the field index
//! reads no record to confirm its slots, so a value at a slot without a record, or past the
//! slot table, would come back as a match (or, through `$ne`, take one away); a built-in
//! column that disagreed with the slot's resident part would answer a `created_at` filter
//! otherwise than ranking reads it. Any such disagreement refuses the image, and the load
//! rebuilds the collection from its records.

use strata_index::{Bm25Index, FieldIndex, RoaringBitmap};

use crate::EngineError;
use crate::collection_index::BUILTIN_COLUMNS;
use crate::slot_doc::SlotDoc;

fn refuse(why: impl std::fmt::Display) -> Result<(), EngineError> {
    Err(EngineError::Index(format!("search image: {why}")))
}

/// Whether `fields` and `bm25` fit the slots `docs` (whose occupied slots are `live`): every
/// slot holding a field value, a column value or a text document holds a record; the field
/// index keeps exactly the built-in columns; every record has its built-in column values,
/// equal to its resident part's `created_at` and confidence where that keeps them.
pub(crate) fn check(
    live: &RoaringBitmap,
    docs: &[Option<SlotDoc>],
    fields: &FieldIndex,
    bm25: &Bm25Index,
) -> Result<(), EngineError> {
    if !fields.held_slots().is_subset(live) {
        return refuse("a field value at a slot without a record");
    }
    if !bm25.doc_slots().is_subset(live) {
        return refuse("a text document at a slot without a record");
    }
    let mut paths: Vec<&str> = fields.column_paths().collect();
    paths.sort_unstable();
    let mut builtin = BUILTIN_COLUMNS.to_vec();
    builtin.sort_unstable();
    if paths != builtin {
        return refuse(format!("field columns {paths:?}, not {builtin:?}"));
    }
    for (slot, doc) in (0u32..).zip(docs) {
        let Some(doc) = doc else { continue };
        let value = |path| fields.column_value(path, slot);
        // `==` on f64: the column keeps -0.0 as 0.0, which compares equal.
        let agree = value("b:created_at") == Some(doc.created_at as f64)
            && value("b:confidence") == Some(doc.confidence)
            && value("b:updated_at").is_some();
        if !agree {
            return refuse(format!("record {}: built-in columns disagree", doc.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use strata_index::HnswParams;
    use strata_types::{Collection, CollectionName, Confidence, Domain, Metric, Record, RecordId};

    use crate::collection_index::CollectionIndex;

    fn collection() -> Collection {
        Collection {
            name: CollectionName::parse("vec").unwrap(),
            dim: 2,
            metric: Metric::L2,
            created_at: 1,
            embedder: None,
            analyzer: Default::default(),
            memory: Default::default(),
        }
    }

    fn record(id: &str, created_at: i64) -> Record {
        Record {
            id: RecordId::parse(id).unwrap(),
            modality: CollectionName::parse("vec").unwrap(),
            kind: None,
            content: Some(format!("text of {id}")),
            vector: Some(vec![0.5, -1.0]),
            user_tokens: vec![],
            memory_domain: Domain::parse("default").unwrap(),
            run_id: None,
            memory_scope: None,
            metadata: json!({"n": 1}).as_object().cloned().unwrap(),
            created_at,
            updated_at: created_at + 1,
            expires_at: None,
            confidence: Confidence {
                value: 0.5,
                evidence_count: 1,
                corroborations: 0,
                contradictions: 0,
            },
        }
    }

    /// Three records in slots 0..3, the middle one removed: slot 1 is empty.
    fn sample() -> CollectionIndex {
        let mut ci = CollectionIndex::new(&collection());
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            ci.upsert(&record(id, 10 + i as i64), false).unwrap();
        }
        ci.remove(&RecordId::parse("b").unwrap()).unwrap();
        ci
    }

    fn rebuild(ci: &CollectionIndex) -> Result<CollectionIndex, crate::EngineError> {
        CollectionIndex::from_image(
            &collection(),
            HnswParams::default(),
            ci.docs.clone(),
            ci.names.clone(),
            Some(vec![0.0; ci.docs.len() * ci.dim]),
            ci.fields.clone(),
            ci.bm25.clone(),
        )
    }

    #[test]
    fn a_whole_image_is_taken() {
        let mut ci = sample();
        rebuild(&ci).unwrap();
        crate::search_image::check(&crate::search_image::encode(&ci, 1).unwrap()).unwrap();
        // The columns in another order are the same columns.
        refill(&mut ci, &["b:confidence", "b:created_at", "b:updated_at"]);
        let back = rebuild(&ci).unwrap();
        assert_eq!(back.live, ci.live);
        assert_eq!(back.fields.held_slots(), ci.live);
    }

    /// The field index of `sample` again, with these columns: every value as the records
    /// hold it, so only the set of columns differs.
    fn refill(ci: &mut CollectionIndex, columns: &[&str]) {
        let mut fields = strata_index::FieldIndex::with_columns(columns);
        for (slot, created_at) in [(0, 10), (2, 12)] {
            fields.insert(slot, "b:created_at", &json!(created_at));
            fields.insert(slot, "b:updated_at", &json!(created_at + 1));
            fields.insert(slot, "b:confidence", &json!(0.5));
            fields.insert(slot, "m:n", &json!(1));
        }
        ci.fields = fields;
    }

    /// Images whose indexes decode on their own but do not fit the slots are refused.
    #[test]
    fn indexes_that_do_not_fit_the_slots_are_refused() {
        type Damage = fn(&mut CollectionIndex);
        let damaged: Vec<(&str, Damage)> = vec![
            ("field value at an empty slot", |ci| {
                ci.fields.insert(1, "m:n", &json!("x"))
            }),
            ("field value past the slots", |ci| {
                ci.fields.insert(7, "m:n", &json!("x"))
            }),
            ("column value at an empty slot", |ci| {
                ci.fields.insert(1, "b:created_at", &json!(11))
            }),
            ("column value past the slots", |ci| {
                ci.fields.insert(9, "b:confidence", &json!(0.5))
            }),
            ("text at an empty slot", |ci| ci.bm25.insert(1, "ghost")),
            ("text past the slots", |ci| ci.bm25.insert(5, "ghost")),
            ("a built-in column missing", |ci| {
                refill(ci, &["b:created_at", "b:updated_at"])
            }),
            ("an extra column", |ci| {
                refill(ci, &["b:created_at", "b:updated_at", "b:confidence", "m:n"])
            }),
            ("created_at differs from the slot's", |ci| {
                ci.fields.remove_slot(0);
                ci.fields.insert(0, "b:created_at", &json!(99));
                ci.fields.insert(0, "b:updated_at", &json!(11));
                ci.fields.insert(0, "b:confidence", &json!(0.5));
            }),
            ("confidence differs from the slot's", |ci| {
                ci.fields.remove_slot(2);
                ci.fields.insert(2, "b:created_at", &json!(12));
                ci.fields.insert(2, "b:updated_at", &json!(13));
                ci.fields.insert(2, "b:confidence", &json!(0.25));
            }),
            ("updated_at missing", |ci| {
                ci.fields.remove_slot(2);
                ci.fields.insert(2, "b:created_at", &json!(12));
                ci.fields.insert(2, "b:confidence", &json!(0.5));
            }),
        ];
        for (what, damage) in damaged {
            let mut ci = sample();
            damage(&mut ci);
            assert!(rebuild(&ci).is_err(), "{what}: accepted");
            // The operator's check of stored images refuses it too.
            let bytes = crate::search_image::encode(&ci, 1).unwrap();
            assert!(
                crate::search_image::check(&bytes).is_err(),
                "{what}: passed"
            );
        }
    }
}
