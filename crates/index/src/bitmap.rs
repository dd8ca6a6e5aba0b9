//! Candidate sets as Roaring bitmaps of slots, and [`FieldIndex`], a secondary index from
//! JSON scalar values to the slots holding them, for one tenant-collection.
//!
//! Numbers compare exactly ([`Num`], as filters compare them): `1` and `1.0` are equal, `-0.0`
//! equals `0`, and integers past ±2^53 stay apart.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

pub use roaring::RoaringBitmap;
use serde_json::Value;
pub use strata_types::Num;

use crate::field_column::Column;

/// One indexed scalar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) enum Scalar {
    Str(String),
    Bool(bool),
    Num(Num),
}

impl Scalar {
    /// The scalar form of a JSON value, if it is a string, bool or number.
    fn of(value: &Value) -> Option<Scalar> {
        match value {
            Value::String(s) => Some(Scalar::Str(s.clone())),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::Number(n) => Num::of(n).map(Scalar::Num),
            _ => None,
        }
    }
}

/// The values of one path.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct PathIndex {
    strings: BTreeMap<String, RoaringBitmap>,
    bools: [RoaringBitmap; 2],
    #[serde(with = "number_pairs")]
    numbers: BTreeMap<Num, RoaringBitmap>,
}

/// The numbers' map as a list of (number, slots) pairs: formats whose map keys must be
/// strings (JSON) can hold it too, and a number listed twice is an error, not a silent merge.
mod number_pairs {
    use std::collections::BTreeMap;

    use roaring::RoaringBitmap;
    use serde::{Deserialize, Deserializer, Serializer};
    use strata_types::Num;

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<Num, RoaringBitmap>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Num, RoaringBitmap>, D::Error> {
        let pairs = Vec::<(Num, RoaringBitmap)>::deserialize(d)?;
        let listed = pairs.len();
        let map: BTreeMap<Num, RoaringBitmap> = pairs.into_iter().collect();
        if map.len() != listed {
            return Err(serde::de::Error::custom("a number listed twice"));
        }
        Ok(map)
    }
}

impl PathIndex {
    fn bitmap_mut(&mut self, scalar: &Scalar) -> &mut RoaringBitmap {
        match scalar {
            Scalar::Str(s) => self.strings.entry(s.clone()).or_default(),
            Scalar::Bool(b) => &mut self.bools[usize::from(*b)],
            Scalar::Num(n) => self.numbers.entry(*n).or_default(),
        }
    }

    /// How many (value, slot) entries it holds.
    pub(crate) fn entry_count(&self) -> u64 {
        self.strings
            .values()
            .chain(self.numbers.values())
            .chain(self.bools.iter())
            .map(RoaringBitmap::len)
            .sum()
    }

    pub(crate) fn get(&self, scalar: &Scalar) -> Option<&RoaringBitmap> {
        match scalar {
            Scalar::Str(s) => self.strings.get(s),
            Scalar::Bool(b) => Some(&self.bools[usize::from(*b)]),
            Scalar::Num(n) => self.numbers.get(n),
        }
    }

    /// Removes `slot` from the scalar's bitmap, dropping the bitmap when it empties.
    fn remove(&mut self, scalar: &Scalar, slot: u32) {
        match scalar {
            Scalar::Str(s) => {
                if let Some(bm) = self.strings.get_mut(s) {
                    bm.remove(slot);
                    if bm.is_empty() {
                        self.strings.remove(s);
                    }
                }
            }
            Scalar::Bool(b) => {
                self.bools[usize::from(*b)].remove(slot);
            }
            Scalar::Num(n) => {
                if let Some(bm) = self.numbers.get_mut(n) {
                    bm.remove(slot);
                    if bm.is_empty() {
                        self.numbers.remove(n);
                    }
                }
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.strings.is_empty()
            && self.numbers.is_empty()
            && self.bools.iter().all(RoaringBitmap::is_empty)
    }
}

/// Whether `lower..upper` is a valid, non-empty range for `BTreeMap::range` (which panics on
/// an inverted range, or on equal excluded bounds).
fn valid_range<T: PartialOrd>(lower: Bound<&T>, upper: Bound<&T>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l <= u,
        (Bound::Included(l), Bound::Excluded(u))
        | (Bound::Excluded(l), Bound::Included(u))
        | (Bound::Excluded(l), Bound::Excluded(u)) => l < u,
        _ => true,
    }
}

/// A secondary index over JSON scalar values of one tenant-collection: for each `path`, which
/// slots hold which value. A slot may hold several values under one path (arrays, or repeated
/// inserts); [`FieldIndex::remove_slot`] forgets all of a slot's entries exactly.
///
/// Serialisable (serde, in `field_stored`) so the engine can persist it and load a
/// collection without walking its records' fields again.
#[derive(Debug, Default, Clone)]
pub struct FieldIndex {
    /// Path → its id in `paths`.
    pub(crate) ids: HashMap<String, u32>,
    /// By path id: the path's name and values. An emptied path's id is in `free_ids`.
    pub(crate) names: Vec<String>,
    pub(crate) paths: Vec<PathIndex>,
    pub(crate) free_ids: Vec<u32>,
    /// By slot: the (path id, scalar) entries it holds, so removal needs no scan. Dense
    /// because the engine's slots are, so a persisted index decodes it as plain lists.
    pub(crate) by_slot: Vec<Vec<(u32, Scalar)>>,
    /// Slots with at least one entry or column value.
    pub(crate) slots_with_values: usize,
    /// Numeric paths kept as one value per slot (`field_column`), by name; a slot's first
    /// number under such a path goes here, anything else under it to `paths` as usual.
    pub(crate) columns: Vec<(String, Column)>,
}

impl FieldIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty index that keeps the numbers of `paths` as columns, one value per slot, rather
    /// than as a map of values to bitmaps: for fields whose values are nearly unique per
    /// record, such as timestamps, where the map costs ~200 bytes per record and the column 8.
    /// Answers are the same either way.
    pub fn with_columns(paths: &[&str]) -> Self {
        FieldIndex {
            columns: paths
                .iter()
                .map(|p| (p.to_string(), Column::default()))
                .collect(),
            ..Self::default()
        }
    }

    fn column(&self, path: &str) -> Option<&Column> {
        self.columns.iter().find(|(p, _)| p == path).map(|(_, c)| c)
    }

    /// Whether `slot` holds any value, in the map or a column.
    fn holds_any(&self, slot: u32) -> bool {
        self.by_slot
            .get(slot as usize)
            .is_some_and(|e| !e.is_empty())
            || self.columns.iter().any(|(_, c)| c.get(slot).is_some())
    }

    /// Puts the number `x` of `path` in its column if it has one and the slot's place there
    /// is free; `true` if the value is held there now (put, or there already).
    fn insert_into_column(&mut self, slot: u32, path: &str, x: f64) -> bool {
        let held_any = self.holds_any(slot);
        let Some((_, col)) = self.columns.iter_mut().find(|(p, _)| p == path) else {
            return false;
        };
        match col.get(slot) {
            Some(old) => old == x,
            None => {
                let set = col.set(slot, x);
                if set && !held_any {
                    self.slots_with_values += 1;
                }
                set
            }
        }
    }

    /// Number of slots with at least one indexed value.
    pub fn slot_count(&self) -> usize {
        self.slots_with_values
    }

    /// The slots holding at least one value, in the map or a column: for checking a decoded
    /// index against the slots its owner holds.
    pub fn held_slots(&self) -> RoaringBitmap {
        let listed = (0u32..)
            .zip(&self.by_slot)
            .filter(|(_, e)| !e.is_empty())
            .map(|(slot, _)| slot);
        let mut held = RoaringBitmap::from_sorted_iter(listed).unwrap_or_default();
        for (_, col) in &self.columns {
            held |= col.exists();
        }
        held
    }

    /// The paths kept as columns (see [`Self::with_columns`]).
    pub fn column_paths(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(p, _)| p.as_str())
    }

    /// The number `slot` holds in the column of `path`, if `path` has a column and the slot
    /// a value there.
    pub fn column_value(&self, path: &str, slot: u32) -> Option<f64> {
        self.column(path).and_then(|c| c.get(slot))
    }

    /// Heap bytes of the columns, by capacity: 8 per place allocated, whether it holds a
    /// value or not (a column reaches the highest slot given a value, grows by doubling and
    /// keeps its places when values are cleared).
    pub fn column_bytes(&self) -> u64 {
        self.columns
            .iter()
            .map(|(_, c)| (c.values.capacity() * std::mem::size_of::<f64>()) as u64)
            .sum()
    }

    /// Records that `slot` holds `value` under `path`. Strings, booleans and numbers are
    /// indexed; for an array each scalar element is indexed; `null`, objects and nested arrays
    /// are ignored (the engine flattens objects into dotted paths). Adds to what the slot
    /// already holds: to replace a record's values, call [`Self::remove_slot`] first.
    pub fn insert(&mut self, slot: u32, path: &str, value: &Value) {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.insert_scalar(slot, path, item);
                }
            }
            other => self.insert_scalar(slot, path, other),
        }
    }

    /// The id of `path`, given a new one (or a freed one) if it has none.
    fn id_of(&mut self, path: &str) -> u32 {
        if let Some(id) = self.ids.get(path) {
            return *id;
        }
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.names[id as usize] = path.to_string();
                id
            }
            None => {
                self.paths.push(PathIndex::default());
                self.names.push(path.to_string());
                (self.paths.len() - 1) as u32
            }
        };
        self.ids.insert(path.to_string(), id);
        id
    }

    fn path(&self, path: &str) -> Option<&PathIndex> {
        self.ids.get(path).map(|id| &self.paths[*id as usize])
    }

    fn insert_scalar(&mut self, slot: u32, path: &str, value: &Value) {
        let Some(scalar) = Scalar::of(value) else {
            return;
        };
        // A column holds `f64`s: a number `f64` cannot hold exactly goes to the map.
        if let Scalar::Num(n) = scalar
            && let Some(x) = n.exact_f64()
            && self.insert_into_column(slot, path, x)
        {
            return;
        }
        let held_any = self.holds_any(slot);
        let id = self.id_of(path);
        let at = slot as usize;
        if self.by_slot.len() <= at {
            self.by_slot.resize(at + 1, Vec::new());
        }
        let entries = &mut self.by_slot[at];
        if entries.iter().any(|(p, s)| *p == id && s == &scalar) {
            return;
        }
        if !held_any {
            self.slots_with_values += 1;
        }
        self.paths[id as usize].bitmap_mut(&scalar).insert(slot);
        entries.push((id, scalar));
    }

    /// Forgets every value `slot` holds; returns whether it held any.
    pub fn remove_slot(&mut self, slot: u32) -> bool {
        let mut in_column = false;
        for (_, col) in &mut self.columns {
            in_column |= col.clear(slot);
        }
        let entries = self
            .by_slot
            .get_mut(slot as usize)
            .map(std::mem::take)
            .unwrap_or_default();
        if entries.is_empty() && !in_column {
            return false;
        }
        self.slots_with_values -= 1;
        for (id, scalar) in entries {
            let Some(pi) = self.paths.get_mut(id as usize) else {
                continue;
            };
            pi.remove(&scalar, slot);
            if pi.is_empty() {
                let name = std::mem::take(&mut self.names[id as usize]);
                self.ids.remove(&name);
                self.free_ids.push(id);
            }
        }
        true
    }

    /// Slots holding `value` under `path` (numbers compare numerically). For an array
    /// `value`, slots holding any of its scalar elements. Other values match nothing.
    pub fn eq(&self, path: &str, value: &Value) -> RoaringBitmap {
        let mut out = RoaringBitmap::new();
        if let Some(col) = self.column(path) {
            let numbers: Vec<f64> = match value {
                Value::Array(items) => items.iter().filter_map(column_number).collect(),
                other => column_number(other).into_iter().collect(),
            };
            out = col.eq_any(&numbers);
        }
        let Some(pi) = self.path(path) else {
            return out;
        };
        out | match value {
            Value::Array(items) => items
                .iter()
                .filter_map(|v| Scalar::of(v).and_then(|s| pi.get(&s)))
                .fold(RoaringBitmap::new(), |acc, bm| acc | bm),
            other => Scalar::of(other)
                .and_then(|s| pi.get(&s))
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Slots holding any of `values` under `path`: the union of [`Self::eq`] over them (an
    /// array among them counts as its elements), as `$in` asks. A column is read once for
    /// all the numbers, not once per value.
    pub fn eq_many(&self, path: &str, values: &[Value]) -> RoaringBitmap {
        let scalars = || {
            values.iter().flat_map(|v| match v {
                Value::Array(items) => items.as_slice(),
                other => std::slice::from_ref(other),
            })
        };
        let mut out = match self.column(path) {
            Some(col) => col.eq_any(&scalars().filter_map(column_number).collect::<Vec<_>>()),
            None => RoaringBitmap::new(),
        };
        if let Some(pi) = self.path(path) {
            for bm in scalars().filter_map(|v| Scalar::of(v).and_then(|s| pi.get(&s))) {
                out |= bm;
            }
        }
        out
    }

    /// Slots holding a number within the bounds under `path`. Empty ranges match nothing.
    pub fn range(&self, path: &str, lower: Bound<Num>, upper: Bound<Num>) -> RoaringBitmap {
        if !valid_range(lower.as_ref(), upper.as_ref()) {
            return RoaringBitmap::new();
        }
        let in_column = self.column(path).map_or_else(RoaringBitmap::new, |col| {
            col.range(column_bound(lower, true), column_bound(upper, false))
        });
        let Some(pi) = self.path(path) else {
            return in_column;
        };
        pi.numbers
            .range((lower, upper))
            .fold(in_column, |acc, (_, bm)| acc | bm)
    }

    /// Slots holding a string within the bounds (byte-wise order) under `path`.
    pub fn range_str(&self, path: &str, lower: Bound<&str>, upper: Bound<&str>) -> RoaringBitmap {
        let Some(pi) = self.path(path) else {
            return RoaringBitmap::new();
        };
        let lower = lower.map(str::to_string);
        let upper = upper.map(str::to_string);
        if !valid_range(lower.as_ref(), upper.as_ref()) {
            return RoaringBitmap::new();
        }
        pi.strings
            .range((lower, upper))
            .fold(RoaringBitmap::new(), |acc, (_, bm)| acc | bm)
    }

    /// How many distinct strings and numbers `path` holds in the map (a column's values are
    /// not counted: a range scans a column once, whatever it holds).
    pub fn distinct_values(&self, path: &str) -> usize {
        self.path(path)
            .map_or(0, |pi| pi.strings.len() + pi.numbers.len())
    }

    /// Slots holding any indexed value under `path`.
    pub fn exists(&self, path: &str) -> RoaringBitmap {
        let in_column = self
            .column(path)
            .map_or_else(RoaringBitmap::new, Column::exists);
        let Some(pi) = self.path(path) else {
            return in_column;
        };
        let strings = pi
            .strings
            .values()
            .chain(pi.numbers.values())
            .chain(pi.bools.iter());
        strings.fold(in_column, |acc, bm| acc | bm)
    }
}

/// A number as a column (which holds `f64`s exactly) can equal it: `None` for a value that is
/// not a number, or a number no `f64` holds (no column value equals it).
fn column_number(v: &Value) -> Option<f64> {
    Num::of_value(v).and_then(Num::exact_f64)
}

/// The `f64` bound that selects exactly the column values (`f64`s) within `b`: a bound no
/// `f64` holds becomes the nearest `f64`, included when it lies inside the range and excluded
/// when outside (no `f64` lies between the two).
fn column_bound(b: Bound<Num>, lower: bool) -> Bound<f64> {
    let n = match b {
        Bound::Unbounded => return Bound::Unbounded,
        Bound::Included(n) | Bound::Excluded(n) => n,
    };
    if let Some(x) = n.exact_f64() {
        return b.map(|_| x);
    }
    let x = n.nearest_f64();
    let inside = match Num::from_f64(x) {
        Some(near) if lower => near > n,
        Some(near) => near < n,
        // Past every finite f64: nothing is inside on that side.
        None => false,
    };
    if inside {
        Bound::Included(x)
    } else {
        Bound::Excluded(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn set(bm: &RoaringBitmap) -> Vec<u32> {
        bm.iter().collect()
    }

    #[test]
    fn equality_across_types() {
        let mut ix = FieldIndex::new();
        ix.insert(1, "n", &json!(1));
        ix.insert(2, "n", &json!(1.0));
        ix.insert(3, "n", &json!("1"));
        ix.insert(4, "n", &json!(true));
        ix.insert(5, "n", &json!(-0.0));
        ix.insert(6, "n", &json!(0));
        assert_eq!(set(&ix.eq("n", &json!(1))), vec![1, 2]);
        assert_eq!(set(&ix.eq("n", &json!("1"))), vec![3]);
        assert_eq!(set(&ix.eq("n", &json!(true))), vec![4]);
        assert_eq!(set(&ix.eq("n", &json!(0.0))), vec![5, 6]);
        assert_eq!(set(&ix.eq("n", &json!([true, "1"]))), vec![3, 4]);
        assert!(ix.eq("n", &json!(null)).is_empty());
        assert!(ix.eq("missing", &json!(1)).is_empty());
    }

    #[test]
    fn column_bytes_follow_capacity() {
        let mut ix = FieldIndex::with_columns(&["t"]);
        assert_eq!(ix.column_bytes(), 0);
        ix.insert(999, "t", &json!(5));
        assert!(ix.column_bytes() >= 8 * 1000);
        // Places stay allocated when their values go: the memory is still held.
        let held = ix.column_bytes();
        ix.remove_slot(999);
        assert_eq!(ix.column_bytes(), held);
    }

    #[test]
    fn arrays_index_each_element() {
        let mut ix = FieldIndex::new();
        ix.insert(1, "tags", &json!(["a", "b", ["nested"], {"o": 1}, null, 3]));
        assert_eq!(set(&ix.eq("tags", &json!("a"))), vec![1]);
        assert_eq!(set(&ix.eq("tags", &json!(3))), vec![1]);
        assert!(ix.eq("tags", &json!("nested")).is_empty());
        assert!(ix.remove_slot(1));
        assert!(!ix.remove_slot(1));
        assert!(ix.ids.is_empty() && ix.slot_count() == 0);
    }

    #[test]
    fn ranges() {
        let mut ix = FieldIndex::new();
        for (slot, x) in [
            (1, json!(-5)),
            (2, json!(0)),
            (3, json!(2.5)),
            (4, json!(10)),
            (5, json!("7")),
        ] {
            ix.insert(slot, "x", &x);
        }
        use Bound::*;
        let n = |x: f64| Num::from_f64(x).unwrap();
        assert_eq!(
            set(&ix.range("x", Included(n(0.0)), Included(n(10.0)))),
            vec![2, 3, 4]
        );
        assert_eq!(
            set(&ix.range("x", Excluded(n(0.0)), Excluded(n(10.0)))),
            vec![3]
        );
        assert_eq!(set(&ix.range("x", Unbounded, Excluded(n(0.0)))), vec![1]);
        assert_eq!(
            set(&ix.range("x", Included(n(-0.0)), Included(n(0.0)))),
            vec![2]
        );
        assert!(ix.range("x", Included(n(5.0)), Included(n(1.0))).is_empty());
        assert!(ix.range("x", Excluded(n(1.0)), Excluded(n(1.0))).is_empty());
        assert_eq!(set(&ix.range_str("x", Included("5"), Unbounded)), vec![5]);
        assert!(ix.range_str("x", Included("9"), Excluded("1")).is_empty());
        assert_eq!(set(&ix.exists("x")), vec![1, 2, 3, 4, 5]);
    }

    /// Integers past 2^53, which `f64` cannot tell apart, are different values, in the map and
    /// in a column (which holds only the numbers `f64` holds exactly) alike.
    #[test]
    fn integers_past_2_pow_53_stay_apart() {
        use Bound::*;
        let big = 1u64 << 53;
        for mut ix in [FieldIndex::new(), FieldIndex::with_columns(&["x"])] {
            ix.insert(1, "x", &json!(big));
            ix.insert(2, "x", &json!(big + 1));
            ix.insert(3, "x", &json!(big + 2));
            ix.insert(4, "x", &json!(big as f64));
            assert_eq!(set(&ix.eq("x", &json!(big + 1))), vec![2]);
            assert_eq!(set(&ix.eq("x", &json!(big))), vec![1, 4]);
            assert_eq!(
                set(&ix.eq_many("x", &[json!(big + 1), json!(big + 2)])),
                vec![2, 3]
            );
            let n = |u: u64| Num::Int(u as i64);
            assert_eq!(set(&ix.range("x", Excluded(n(big)), Unbounded)), vec![2, 3]);
            assert_eq!(
                set(&ix.range("x", Unbounded, Excluded(n(big + 1)))),
                vec![1, 4]
            );
            assert_eq!(
                set(&ix.range("x", Included(n(big + 1)), Included(n(big + 1)))),
                vec![2]
            );
        }
    }

    /// A slot's entry costs what it did when numbers were `f64` bits: exact numbers must not
    /// grow every record's field entries.
    #[test]
    fn an_entry_stays_32_bytes() {
        assert_eq!(std::mem::size_of::<(u32, Scalar)>(), 32);
    }

    /// Brute-force model: every (slot, path, value) ever inserted and not removed.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, &'static str, Value),
        Remove(u32),
    }

    fn value() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            (-3i64..3).prop_map(|i| json!(i)),
            (-3i64..3).prop_map(|i| json!(i as f64 + 0.5)),
            (-3i64..3).prop_map(|i| json!(i as f64)),
            prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(|s| json!(s)),
            any::<bool>().prop_map(|b| json!(b)),
            // Neighbours past 2^53, one `f64` apart or not at all.
            (0u64..3).prop_map(|i| json!((1u64 << 53) + i)),
            Just(json!((1u64 << 53) as f64)),
        ];
        prop_oneof![
            4 => scalar.clone(),
            1 => proptest::collection::vec(scalar, 0..3).prop_map(Value::Array),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let path = prop_oneof![Just("p"), Just("q")];
        prop_oneof![
            3 => (0u32..16, path, value()).prop_map(|(s, p, v)| Op::Insert(s, p, v)),
            1 => (0u32..16).prop_map(Op::Remove),
        ]
    }

    fn model_scalars(v: &Value) -> Vec<Value> {
        match v {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        }
    }

    fn num_eq(a: &Value, b: &Value) -> bool {
        match (Num::of_value(a), Num::of_value(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        }
    }

    fn bound() -> impl Strategy<Value = Num> {
        prop_oneof![
            3 => (-16i32..16).prop_map(|q| Num::from_f64(f64::from(q) / 4.0).unwrap()),
            1 => (0i64..4).prop_map(|i| Num::Int((1i64 << 53) + i)),
        ]
    }

    proptest! {
        #[test]
        fn matches_brute_force_model(ops in proptest::collection::vec(op(), 0..60), probe in value(), many in proptest::collection::vec(value(), 0..6), lo in bound(), hi in bound(), columns in any::<bool>()) {
            // With `columns`, path `p` keeps each slot's first number in a column: the
            // answers must not change.
            let mut ix = if columns { FieldIndex::with_columns(&["p"]) } else { FieldIndex::new() };
            let mut model: Vec<(u32, &str, Value)> = Vec::new();
            for op in &ops {
                match op {
                    Op::Insert(s, p, v) => {
                        ix.insert(*s, p, v);
                        for x in model_scalars(v) {
                            model.push((*s, p, x));
                        }
                    }
                    Op::Remove(s) => {
                        ix.remove_slot(*s);
                        model.retain(|(slot, _, _)| slot != s);
                    }
                }
            }
            for path in ["p", "q"] {
                let probes = model_scalars(&probe);
                let expect: RoaringBitmap = model
                    .iter()
                    .filter(|(_, p, v)| *p == path && probes.iter().any(|x| num_eq(v, x)))
                    .map(|(s, _, _)| *s)
                    .collect();
                prop_assert_eq!(ix.eq(path, &probe), expect);
                let probes: Vec<Value> = many.iter().flat_map(model_scalars).collect();
                let expect: RoaringBitmap = model
                    .iter()
                    .filter(|(_, p, v)| *p == path && probes.iter().any(|x| num_eq(v, x)))
                    .map(|(s, _, _)| *s)
                    .collect();
                prop_assert_eq!(ix.eq_many(path, &many), expect);
                let expect: RoaringBitmap = model
                    .iter()
                    .filter(|(_, p, v)| *p == path && Num::of_value(v).is_some_and(|x| lo <= x && x < hi))
                    .map(|(s, _, _)| *s)
                    .collect();
                prop_assert_eq!(ix.range(path, Bound::Included(lo), Bound::Excluded(hi)), expect);
                let expect: RoaringBitmap = model
                    .iter()
                    .filter(|(_, p, v)| *p == path && Scalar::of(v).is_some())
                    .map(|(s, _, _)| *s)
                    .collect();
                prop_assert_eq!(ix.exists(path), expect);
            }
            let live: std::collections::HashSet<u32> = model.iter().map(|(s, _, _)| *s).collect();
            prop_assert_eq!(ix.slot_count(), live.len());
            prop_assert_eq!(ix.held_slots(), live.iter().copied().collect::<RoaringBitmap>());
        }
    }
}
