//! [`Column`]: a numeric field kept as one value per slot, for fields whose values are nearly
//! unique per record (timestamps, confidence).
//!
//! The field index's map of values to bitmaps (`bitmap::PathIndex`) costs, for a value held
//! by one slot, a map entry, a one-slot roaring bitmap and the slot's (path, value) entry:
//! ~200 bytes, against 8 here. Queries scan the column (a comparison per slot, ~0.2 ms at
//! 200,000 slots), which for a range over unique values is also cheaper than unioning one
//! bitmap per value.

use std::ops::Bound;

use roaring::RoaringBitmap;

/// One value per slot; `NaN` (which JSON cannot hold) marks a slot without a value.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Column {
    pub(crate) values: Vec<f64>,
}

impl Column {
    /// The value in `slot`, if it holds one.
    pub(crate) fn get(&self, slot: u32) -> Option<f64> {
        self.values
            .get(slot as usize)
            .copied()
            .filter(|x| !x.is_nan())
    }

    /// Sets the value of `slot` (which is a number, never NaN); `-0.0` is kept as `0.0`.
    /// A NaN (which would read as "no value" here) is not written; returns whether `x` was.
    pub(crate) fn set(&mut self, slot: u32, x: f64) -> bool {
        debug_assert!(!x.is_nan(), "a column holds numbers, never NaN");
        if x.is_nan() {
            return false;
        }
        let at = slot as usize;
        if self.values.len() <= at {
            self.values.resize(at + 1, f64::NAN);
        }
        self.values[at] = if x == 0.0 { 0.0 } else { x };
        true
    }

    /// Forgets the value of `slot`; returns whether it held one.
    pub(crate) fn clear(&mut self, slot: u32) -> bool {
        match self.values.get_mut(slot as usize) {
            Some(x) if !x.is_nan() => {
                *x = f64::NAN;
                true
            }
            _ => false,
        }
    }

    /// Slots whose value passes `keep`, which is false for NaN.
    fn select(&self, keep: impl Fn(f64) -> bool) -> RoaringBitmap {
        // Ascending, so the bitmap is built by appending.
        let slots = (0u32..)
            .zip(&self.values)
            .filter(|(_, x)| keep(**x))
            .map(|(slot, _)| slot);
        RoaringBitmap::from_sorted_iter(slots).unwrap_or_default()
    }

    /// Slots holding a value equal to one of `xs` (numbers compare as `f64`, `-0.0 == 0.0`;
    /// NaN in `xs` matches nothing). One pass over the column however many values are asked:
    /// they are folded, sorted and deduplicated first, then each slot is a binary search, so
    /// a 1,024-value `$in` costs one scan, not 1,024.
    pub(crate) fn eq_any(&self, xs: &[f64]) -> RoaringBitmap {
        let mut wanted: Vec<f64> = xs
            .iter()
            .filter(|x| !x.is_nan())
            .map(|x| if *x == 0.0 { 0.0 } else { *x })
            .collect();
        wanted.sort_unstable_by(f64::total_cmp);
        wanted.dedup_by(|a, b| a.total_cmp(b).is_eq());
        match wanted.as_slice() {
            [] => RoaringBitmap::new(),
            [one] => self.select(|x| x == *one),
            many => {
                self.select(|x| !x.is_nan() && many.binary_search_by(|w| w.total_cmp(&x)).is_ok())
            }
        }
    }

    /// Slots holding a value within the bounds (neither of which is NaN).
    pub(crate) fn range(&self, lower: Bound<f64>, upper: Bound<f64>) -> RoaringBitmap {
        let above = |x: f64| match lower {
            Bound::Included(l) => x >= l,
            Bound::Excluded(l) => x > l,
            Bound::Unbounded => !x.is_nan(),
        };
        let below = |x: f64| match upper {
            Bound::Included(u) => x <= u,
            Bound::Excluded(u) => x < u,
            Bound::Unbounded => !x.is_nan(),
        };
        self.select(|x| above(x) && below(x))
    }

    /// Slots holding a value.
    pub(crate) fn exists(&self) -> RoaringBitmap {
        self.select(|x| !x.is_nan())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn bound() -> impl Strategy<Value = Bound<f64>> {
        let x = (-4i32..4).prop_map(|i| f64::from(i) / 2.0);
        prop_oneof![
            x.clone().prop_map(Bound::Included),
            x.prop_map(Bound::Excluded),
            Just(Bound::Unbounded),
        ]
    }

    fn within(x: f64, lo: Bound<f64>, hi: Bound<f64>) -> bool {
        use std::ops::RangeBounds;
        (lo, hi).contains(&x)
    }

    proptest! {
        /// Against a `BTreeMap` of slot → value: set, clear, equality, ranges, exists.
        #[test]
        fn answers_like_a_map(
            ops in prop::collection::vec((0u32..40, prop::option::weighted(0.7, -4i32..4)), 0..120),
            // Up to 8 values, repeats included: one value and many take different paths.
            probe in prop::collection::vec(-4i32..4, 0..8),
            lo in bound(),
            hi in bound(),
        ) {
            let mut col = Column::default();
            let mut model: BTreeMap<u32, f64> = BTreeMap::new();
            for (slot, value) in ops {
                match value {
                    Some(v) => {
                        let x = f64::from(v) / 2.0;
                        prop_assert!(col.set(slot, x));
                        model.insert(slot, x);
                    }
                    None => {
                        prop_assert_eq!(col.clear(slot), model.remove(&slot).is_some());
                    }
                }
            }
            let probe: Vec<f64> = probe.into_iter().map(|v| f64::from(v) / 2.0).collect();
            let expect: RoaringBitmap =
                model.iter().filter(|(_, x)| probe.contains(x)).map(|(s, _)| *s).collect();
            prop_assert_eq!(col.eq_any(&probe), expect);
            let expect: RoaringBitmap =
                model.iter().filter(|(_, x)| within(**x, lo, hi)).map(|(s, _)| *s).collect();
            prop_assert_eq!(col.range(lo, hi), expect);
            let keys: RoaringBitmap = model.keys().copied().collect();
            prop_assert_eq!(col.exists(), keys);
            for slot in 0..42 {
                prop_assert_eq!(col.get(slot), model.get(&slot).copied());
            }
        }
    }

    #[test]
    fn negative_zero_is_zero() {
        let mut col = Column::default();
        col.set(3, -0.0);
        assert_eq!(col.eq_any(&[0.0]).iter().collect::<Vec<_>>(), vec![3]);
        assert_eq!(
            col.eq_any(&[5.0, -0.0, 5.0]).iter().collect::<Vec<_>>(),
            vec![3]
        );
        assert!(col.get(3).unwrap().is_sign_positive());
    }
}
