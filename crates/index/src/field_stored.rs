//! The persisted form of a [`FieldIndex`]: the paths by id (name and values), each slot's
//! (path id, value) entries as one plain list per slot, and the numeric columns (one `f64` per
//! slot, NaN for none). Decoding allocates per path, value
//! and slot, never hashes an entry per slot, and checks what a damaged form could otherwise
//! turn into a panic or a wrong filter (ids in range, entries that add up).

use std::collections::HashMap;

use serde::de::Error;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bitmap::{FieldIndex, PathIndex, Scalar};
use crate::field_column::Column;

#[derive(Serialize)]
struct StoredRef<'a> {
    names: &'a [String],
    paths: &'a [PathIndex],
    by_slot: &'a [Vec<(u32, Scalar)>],
    columns: &'a [(String, Column)],
}

#[derive(Deserialize)]
struct Stored {
    names: Vec<String>,
    paths: Vec<PathIndex>,
    by_slot: Vec<Vec<(u32, Scalar)>>,
    columns: Vec<(String, Column)>,
}

impl Serialize for FieldIndex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredRef {
            names: &self.names,
            paths: &self.paths,
            by_slot: &self.by_slot,
            columns: &self.columns,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for FieldIndex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        FieldIndex::from_stored(Stored::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl FieldIndex {
    fn from_stored(s: Stored) -> Result<Self, String> {
        if s.names.len() != s.paths.len() {
            return Err(format!(
                "fields: {} names for {} paths",
                s.names.len(),
                s.paths.len()
            ));
        }
        let mut ids = HashMap::with_capacity(s.names.len());
        let mut free_ids = Vec::new();
        let mut held = 0u64;
        for (id, (name, pi)) in s.names.iter().zip(&s.paths).enumerate() {
            let id = id as u32;
            if pi.is_empty() {
                free_ids.push(id);
            } else if ids.insert(name.clone(), id).is_some() {
                return Err(format!("fields: path {name:?} twice"));
            }
            held += pi.entry_count();
        }
        // Free ids are reused last-freed first; any order is valid.
        free_ids.reverse();
        let (mut listed, mut slots_with_values) = (0u64, 0);
        for (slot, entries) in s.by_slot.iter().enumerate() {
            let known = |(id, scalar): &(u32, Scalar)| {
                s.paths
                    .get(*id as usize)
                    .and_then(|pi| pi.get(scalar))
                    .is_some_and(|bm| bm.contains(slot as u32))
            };
            if !entries.iter().all(known) {
                return Err(format!("fields: slot {slot} holds an unindexed value"));
            }
            // A value listed twice would let the counts below balance with a bitmap entry
            // that no slot lists. A slot holds few values, so a pairwise check is cheap.
            if entries
                .iter()
                .enumerate()
                .any(|(i, e)| entries[..i].contains(e))
            {
                return Err(format!("fields: slot {slot} lists a value twice"));
            }
            listed += entries.len() as u64;
            slots_with_values += usize::from(!entries.is_empty());
        }
        if listed != held {
            return Err(format!(
                "fields: {listed} entries by slot, {held} in the paths"
            ));
        }
        for (i, (name, col)) in s.columns.iter().enumerate() {
            if s.columns[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("fields: column {name:?} twice"));
            }
            // NaN marks an empty slot; JSON holds no infinity.
            if col.values.iter().any(|x| x.is_infinite()) {
                return Err(format!("fields: column {name:?} holds an infinity"));
            }
        }
        let slots = s.by_slot.len().max(
            s.columns
                .iter()
                .map(|(_, c)| c.values.len())
                .max()
                .unwrap_or(0),
        );
        // Slots with a value only in a column count too.
        let in_column_only = (s.by_slot.len()..slots)
            .chain(
                s.by_slot
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.is_empty())
                    .map(|(slot, _)| slot),
            )
            .filter(|slot| s.columns.iter().any(|(_, c)| c.get(*slot as u32).is_some()))
            .count();
        slots_with_values += in_column_only;
        Ok(FieldIndex {
            ids,
            names: s.names,
            paths: s.paths,
            free_ids,
            by_slot: s.by_slot,
            slots_with_values,
            columns: s.columns,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn round_trip(ix: &FieldIndex) -> FieldIndex {
        serde_json::from_value(serde_json::to_value(ix).unwrap()).unwrap()
    }

    /// What a few lookups answer, as slot lists.
    fn answers(ix: &FieldIndex) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        for path in ["p", "q"] {
            for v in [json!(1), json!("a"), json!(true), json!([2, "b"])] {
                out.push(ix.eq(path, &v).iter().collect());
            }
            out.push(
                ix.range(
                    path,
                    Bound::Included(crate::Num::Int(0)),
                    Bound::Excluded(crate::Num::Float(2.5)),
                )
                .iter()
                .collect(),
            );
            out.push(ix.exists(path).iter().collect());
        }
        out.push(vec![ix.slot_count() as u32]);
        out
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            (0i64..4).prop_map(|i| json!(i)),
            prop::sample::select(vec!["a", "b"]).prop_map(|s| json!(s)),
            any::<bool>().prop_map(|b| json!(b)),
            prop::collection::vec((0i64..4).prop_map(|i| json!(i)), 0..3).prop_map(Value::Array),
        ]
    }

    /// Insert a value under a path (Some) or remove a slot (None).
    fn ops() -> impl Strategy<Value = Vec<(u32, Option<(&'static str, Value)>)>> {
        let entry = (prop::sample::select(vec!["p", "q"]), value());
        prop::collection::vec((0u32..10, prop::option::weighted(0.7, entry)), 0..40)
    }

    fn apply(ix: &mut FieldIndex, ops: &[(u32, Option<(&'static str, Value)>)]) {
        for (slot, op) in ops {
            match op {
                Some((path, v)) => ix.insert(*slot, path, v),
                None => {
                    ix.remove_slot(*slot);
                }
            }
        }
    }

    proptest! {
        /// A decoded index answers like the one it was saved from, and keeps doing so through
        /// the same writes afterwards (freed path ids, reused slots).
        #[test]
        fn decoded_index_behaves_like_the_original(before in ops(), after in ops()) {
            let mut original = FieldIndex::new();
            apply(&mut original, &before);
            let mut decoded = round_trip(&original);
            prop_assert_eq!(answers(&decoded), answers(&original));
            apply(&mut original, &after);
            apply(&mut decoded, &after);
            prop_assert_eq!(answers(&decoded), answers(&original));
        }
    }

    proptest! {
        /// The same through the engine's encoding, with path `p`'s numbers in a column: the
        /// column decodes to the same answers, empty places included (JSON has no NaN).
        #[test]
        fn decoded_columns_behave_like_the_original(before in ops(), after in ops()) {
            let mut original = FieldIndex::with_columns(&["p"]);
            apply(&mut original, &before);
            let bytes = postcard::to_stdvec(&original).unwrap();
            let mut decoded: FieldIndex = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(answers(&decoded), answers(&original));
            apply(&mut original, &after);
            apply(&mut decoded, &after);
            prop_assert_eq!(answers(&decoded), answers(&original));
        }
    }

    #[test]
    fn damaged_columns_are_errors() {
        let mut ix = FieldIndex::with_columns(&["p", "q"]);
        ix.insert(0, "p", &json!(1));
        let mut good = ix.clone();
        good.columns[1].1.values = vec![f64::NAN, 2.0];
        let ok: FieldIndex = postcard::from_bytes(&postcard::to_stdvec(&good).unwrap()).unwrap();
        assert_eq!(
            ok.slot_count(),
            2,
            "a slot with a value only in a column counts"
        );
        let mut twice = ix.clone();
        twice.columns[1].0 = "p".into();
        let mut infinite = ix;
        infinite.columns[0].1.values[0] = f64::INFINITY;
        for bad in [twice, infinite] {
            let bytes = postcard::to_stdvec(&bad).unwrap();
            assert!(postcard::from_bytes::<FieldIndex>(&bytes).is_err());
        }
    }

    #[test]
    fn damaged_forms_are_errors() {
        let mut ix = FieldIndex::new();
        ix.insert(0, "p", &json!("a"));
        ix.insert(1, "p", &json!(2));
        ix.insert(1, "q", &json!(true));
        let good = serde_json::to_value(&ix).unwrap();
        assert!(serde_json::from_value::<FieldIndex>(good.clone()).is_ok());
        let damage: [fn(&mut Value); 6] = [
            |v| v["names"].as_array_mut().unwrap().push(json!("r")),
            |v| v["names"][1] = json!("p"),
            |v| v["by_slot"][0] = json!([]),
            |v| v["by_slot"][0][0][0] = json!(9),
            |v| v["by_slot"][0][0][1] = json!({"Str": "b"}),
            // Counts balance, but slot 1 lists one value twice and the other not at all.
            |v| {
                let e = v["by_slot"][1][0].clone();
                v["by_slot"][1] = json!([e.clone(), e]);
            },
        ];
        for (i, damage) in damage.iter().enumerate() {
            let mut bad = good.clone();
            damage(&mut bad);
            assert!(
                serde_json::from_value::<FieldIndex>(bad).is_err(),
                "damage {i} decoded"
            );
        }
    }
}
