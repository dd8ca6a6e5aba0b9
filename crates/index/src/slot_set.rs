//! A set of slots sized to what it holds: one slot inline, a few as a sorted array, many as a
//! roaring bitmap.
//!
//! BM25 keeps one set per distinct term, and most terms of real text (names, numbers, typos)
//! occur in one or a handful of documents. A roaring bitmap holding one slot costs about 100
//! heap bytes (its container list, a container, the container's array) plus 24 inline; this
//! set holds one slot in its 32 inline bytes and no heap, and up to [`PROMOTE_AT`] slots in one
//! 4-byte-per-slot array. Past that it becomes a bitmap, whose set algebra with a caller's
//! visible set is what large postings need; it falls back to an array only once it has shrunk
//! to half of that, so a set hovering at the boundary does not convert on every change.

use roaring::RoaringBitmap;

/// An array grows to this many slots before it becomes a bitmap.
pub(crate) const PROMOTE_AT: usize = 32;
/// A bitmap that shrinks to this many slots becomes an array again.
const DEMOTE_AT: u64 = (PROMOTE_AT / 2) as u64;

/// A set of `u32` slots (see the module docs).
#[derive(Debug, Clone, Default)]
pub(crate) enum SlotSet {
    #[default]
    Empty,
    One(u32),
    /// Two to `PROMOTE_AT` slots, sorted ascending, no duplicates.
    Few(Vec<u32>),
    /// More than `DEMOTE_AT` slots.
    Many(RoaringBitmap),
}

impl SlotSet {
    /// The set holding the slots of `bm`, in the form its size calls for.
    #[cfg(test)]
    pub(crate) fn from_bitmap(bm: RoaringBitmap) -> SlotSet {
        match bm.len() {
            0 => SlotSet::Empty,
            1 => SlotSet::One(bm.min().unwrap_or_default()),
            n if n as usize <= PROMOTE_AT => SlotSet::Few(bm.iter().collect()),
            _ => SlotSet::Many(bm),
        }
    }

    /// The same slots as a bitmap.
    #[cfg(test)]
    pub(crate) fn to_bitmap(&self) -> RoaringBitmap {
        match self {
            SlotSet::Many(bm) => bm.clone(),
            other => other.iter().collect(),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        match self {
            SlotSet::Empty => 0,
            SlotSet::One(_) => 1,
            SlotSet::Few(v) => v.len() as u64,
            SlotSet::Many(bm) => bm.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, SlotSet::Empty)
    }

    pub(crate) fn contains(&self, slot: u32) -> bool {
        match self {
            SlotSet::Empty => false,
            SlotSet::One(s) => *s == slot,
            SlotSet::Few(v) => v.binary_search(&slot).is_ok(),
            SlotSet::Many(bm) => bm.contains(slot),
        }
    }

    /// Adds `slot`; returns whether it was new.
    pub(crate) fn insert(&mut self, slot: u32) -> bool {
        match self {
            SlotSet::Empty => *self = SlotSet::One(slot),
            SlotSet::One(s) if *s == slot => return false,
            SlotSet::One(s) => {
                let (a, b) = if *s < slot { (*s, slot) } else { (slot, *s) };
                *self = SlotSet::Few(vec![a, b]);
            }
            SlotSet::Few(v) => match v.binary_search(&slot) {
                Ok(_) => return false,
                Err(at) if v.len() < PROMOTE_AT => v.insert(at, slot),
                Err(_) => {
                    let mut bm: RoaringBitmap = v.iter().copied().collect();
                    bm.insert(slot);
                    *self = SlotSet::Many(bm);
                }
            },
            SlotSet::Many(bm) => return bm.insert(slot),
        }
        true
    }

    /// Removes `slot`; returns whether it was there.
    pub(crate) fn remove(&mut self, slot: u32) -> bool {
        match self {
            SlotSet::One(s) if *s == slot => *self = SlotSet::Empty,
            SlotSet::Few(v) => {
                let Ok(at) = v.binary_search(&slot) else {
                    return false;
                };
                v.remove(at);
                if v.len() == 1 {
                    *self = SlotSet::One(v[0]);
                }
            }
            SlotSet::Many(bm) => {
                if !bm.remove(slot) {
                    return false;
                }
                if bm.len() <= DEMOTE_AT {
                    *self = SlotSet::Few(bm.iter().collect());
                }
            }
            SlotSet::Empty | SlotSet::One(_) => return false,
        }
        true
    }

    /// The slots in ascending order.
    pub(crate) fn iter(&self) -> SlotIter<'_> {
        match self {
            SlotSet::Empty => SlotIter::Slice([].iter()),
            SlotSet::One(s) => SlotIter::Slice(std::slice::from_ref(s).iter()),
            SlotSet::Few(v) => SlotIter::Slice(v.iter()),
            SlotSet::Many(bm) => SlotIter::Bitmap(bm.iter()),
        }
    }

    /// How many of its slots are in `other`.
    pub(crate) fn intersection_len(&self, other: &RoaringBitmap) -> u64 {
        match self {
            SlotSet::Many(bm) => bm.intersection_len(other),
            small => small.iter().filter(|s| other.contains(*s)).count() as u64,
        }
    }

    /// Its slots that are in `other`, ascending.
    pub(crate) fn and(&self, other: &RoaringBitmap) -> Vec<u32> {
        match self {
            SlotSet::Many(bm) => (bm & other).iter().collect(),
            small => small.iter().filter(|s| other.contains(*s)).collect(),
        }
    }
}

/// The iterator of [`SlotSet::iter`].
pub(crate) enum SlotIter<'a> {
    Slice(std::slice::Iter<'a, u32>),
    Bitmap(roaring::bitmap::Iter<'a>),
}

impl Iterator for SlotIter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        match self {
            SlotIter::Slice(it) => it.next().copied(),
            SlotIter::Bitmap(it) => it.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sizes_follow_the_contents() {
        let mut s = SlotSet::default();
        assert!(s.insert(7));
        assert!(matches!(s, SlotSet::One(7)));
        assert!(!s.insert(7));
        // With 7, `PROMOTE_AT` slots: still an array.
        for slot in 0..PROMOTE_AT as u32 - 1 {
            s.insert(slot * 2);
        }
        assert_eq!(s.len(), PROMOTE_AT as u64);
        assert!(matches!(s, SlotSet::Few(_)), "{s:?}");
        s.insert(1_000);
        assert!(matches!(s, SlotSet::Many(_)));
        for slot in 0..1_000 {
            s.remove(slot);
        }
        assert!(matches!(s, SlotSet::One(1_000)));
        assert!(s.remove(1_000) && s.is_empty() && !s.remove(1_000));
        assert_eq!(std::mem::size_of::<SlotSet>(), 32);
    }

    fn ops() -> impl Strategy<Value = Vec<(bool, u32)>> {
        // Slots in a narrow range, so sets grow past the promotion size and shrink back.
        prop::collection::vec((prop::bool::weighted(0.6), 0u32..80), 0..300)
    }

    proptest! {
        /// Every operation answers as a `BTreeSet` does, through promotions and demotions.
        #[test]
        fn behaves_like_a_btreeset(ops in ops(), probe in prop::collection::vec(0u32..80, 0..40)) {
            let mut set = SlotSet::default();
            let mut model = BTreeSet::new();
            let other: RoaringBitmap = probe.iter().copied().collect();
            for (insert, slot) in ops {
                if insert {
                    prop_assert_eq!(set.insert(slot), model.insert(slot));
                } else {
                    prop_assert_eq!(set.remove(slot), model.remove(&slot));
                }
                prop_assert_eq!(set.len(), model.len() as u64);
                prop_assert_eq!(set.is_empty(), model.is_empty());
                prop_assert!(set.iter().eq(model.iter().copied()));
                let both: Vec<u32> = model.iter().copied().filter(|s| other.contains(*s)).collect();
                prop_assert_eq!(set.intersection_len(&other), both.len() as u64);
                prop_assert_eq!(set.and(&other), both);
                prop_assert!(probe.iter().all(|s| set.contains(*s) == model.contains(s)));
                let round = SlotSet::from_bitmap(set.to_bitmap());
                prop_assert!(round.iter().eq(model.iter().copied()));
            }
        }
    }
}
