//! [`SlotLists`]: a short list of `u32` per slot, all in one array.
//!
//! BM25 keeps each document's distinct term ids so that removing it is exact. A `Vec<u32>` per
//! slot cost 24 bytes inline plus a heap allocation (with the allocator's header and rounding)
//! for a handful of ids: ~70 bytes for a typical short memory. Here a slot costs a span (8
//! bytes) and its ids, four bytes each, in one shared arena. Replaced and removed lists leave
//! their ids behind as garbage until it passes half the arena, then the arena is compacted in
//! one pass, so updates stay amortised O(list length).

use std::collections::HashMap;

/// Where a slot's list sits in the arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

/// `Span::start` of a list kept in `SlotLists::spilled` because the arena's `u32` offsets
/// cannot reach it (over 2^32 ids in one index even after compaction: 16 GiB of ids).
const SPILLED: u32 = u32::MAX;

/// A list of ids per slot (see the module docs). Slots never given a list hold the empty one.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotLists {
    spans: Vec<Span>,
    arena: Vec<u32>,
    /// Ids in `arena` that no span covers any more.
    garbage: usize,
    spilled: HashMap<u32, Vec<u32>>,
}

/// Compaction waits for at least this much garbage, so small indexes are not compacted on
/// every update.
const MIN_GARBAGE: usize = 4096;

impl SlotLists {
    /// The lists by slot: slot `i` gets `lists[i]`.
    #[cfg(test)]
    pub fn from_lists(lists: Vec<Vec<u32>>) -> Self {
        let mut out = SlotLists::default();
        out.arena.reserve_exact(lists.iter().map(Vec::len).sum());
        out.spans.reserve_exact(lists.len());
        for (slot, list) in lists.iter().enumerate() {
            out.spans.push(Span::default());
            out.set(slot as u32, list);
        }
        out
    }

    /// The lists from their flat form (see [`SlotLists::to_flat`]): slot `i` gets the next
    /// `counts[i]` ids of `ids`, which become the arena as they are. `None` unless the counts
    /// add up to `ids`' length.
    pub fn from_flat(counts: &[u32], ids: Vec<u32>) -> Option<Self> {
        let mut spans = Vec::with_capacity(counts.len());
        let mut start = 0usize;
        for len in counts {
            let span = if *len == 0 {
                Span::default()
            } else {
                let s = u32::try_from(start).ok().filter(|s| *s != SPILLED)?;
                Span {
                    start: s,
                    len: *len,
                }
            };
            spans.push(span);
            start = start.checked_add(*len as usize)?;
        }
        // Offsets must stay below `SPILLED`; an arena that large is beyond any index here.
        (start == ids.len() && start < SPILLED as usize).then_some(SlotLists {
            spans,
            arena: ids,
            garbage: 0,
            spilled: HashMap::new(),
        })
    }

    /// Each slot's list length, and every list's ids one after the other, slot by slot.
    pub fn to_flat(&self) -> (Vec<u32>, Vec<u32>) {
        let mut counts = Vec::with_capacity(self.len());
        let mut ids = Vec::with_capacity(self.arena.len() - self.garbage);
        for slot in 0..self.len() as u32 {
            let list = self.get(slot);
            counts.push(list.len() as u32);
            ids.extend_from_slice(list);
        }
        (counts, ids)
    }

    /// Number of slots (one past the highest slot ever given a list, even an empty one).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// The list of `slot` (empty for a slot without one).
    pub fn get(&self, slot: u32) -> &[u32] {
        let Some(span) = self.spans.get(slot as usize) else {
            return &[];
        };
        if span.start == SPILLED {
            return self.spilled.get(&slot).map_or(&[], Vec::as_slice);
        }
        let start = span.start as usize;
        &self.arena[start..start + span.len as usize]
    }

    /// Gives `slot` the list `list`, replacing what it held.
    pub fn set(&mut self, slot: u32, list: &[u32]) {
        let at = slot as usize;
        if self.spans.len() <= at {
            self.spans.resize(at + 1, Span::default());
        }
        self.clear(slot);
        if list.is_empty() {
            return;
        }
        let end = self.arena.len() + list.len();
        match (u32::try_from(self.arena.len()), u32::try_from(list.len())) {
            (Ok(start), Ok(len)) if start != SPILLED && end < SPILLED as usize => {
                self.arena.extend_from_slice(list);
                self.spans[at] = Span { start, len };
            }
            _ => {
                self.spilled.insert(slot, list.to_vec());
                self.spans[at] = Span {
                    start: SPILLED,
                    len: 0,
                };
            }
        }
    }

    /// Empties the list of `slot`.
    pub fn clear(&mut self, slot: u32) {
        let Some(span) = self.spans.get_mut(slot as usize) else {
            return;
        };
        if span.start == SPILLED {
            self.spilled.remove(&slot);
        } else {
            self.garbage += span.len as usize;
        }
        *span = Span::default();
        self.compact_if_wasteful();
    }

    /// Compacts once garbage passes half the arena (and [`MIN_GARBAGE`]): called wherever
    /// garbage grows, so removing lists gives their memory back too, not only replacing them.
    fn compact_if_wasteful(&mut self) {
        if self.garbage >= MIN_GARBAGE && self.garbage * 2 > self.arena.len() {
            self.compact();
        }
    }

    /// Moves every live list to the front of a fresh arena, in slot order, allocated to fit
    /// exactly (the old one, garbage and all, is freed).
    fn compact(&mut self) {
        let mut arena = Vec::new();
        arena.reserve_exact(self.arena.len() - self.garbage);
        for span in &mut self.spans {
            if span.start == SPILLED {
                continue;
            }
            let start = span.start as usize;
            let from = start..start + span.len as usize;
            // Compaction only shrinks the arena, so every new offset fits where the old did.
            span.start = arena.len() as u32;
            arena.extend_from_slice(&self.arena[from]);
        }
        self.arena = arena;
        self.garbage = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn clearing_many_lists_gives_the_arena_back() {
        let mut lists = SlotLists::default();
        for slot in 0..10_000u32 {
            lists.set(slot, &[slot; 8]);
        }
        assert!(lists.arena.capacity() >= 80_000);
        for slot in 0..9_990u32 {
            lists.clear(slot);
        }
        assert!(
            lists.arena.capacity() < 40_000,
            "removed lists leave at most half the arena: {}",
            lists.arena.capacity()
        );
        for slot in 9_990..10_000u32 {
            assert_eq!(lists.get(slot), &[slot; 8]);
        }
        for slot in 9_990..10_000u32 {
            lists.clear(slot);
        }
        assert!(lists.arena.len() - lists.garbage == 0);
    }

    proptest! {
        /// Against a `Vec<Vec<u32>>` model, through sets, clears and compactions.
        #[test]
        fn behaves_like_a_list_per_slot(
            ops in prop::collection::vec(
                (0u32..40, prop::option::of(prop::collection::vec(any::<u32>(), 0..300))),
                0..200,
            )
        ) {
            let mut lists = SlotLists::default();
            let mut model: Vec<Vec<u32>> = Vec::new();
            for (slot, list) in &ops {
                let at = *slot as usize;
                match list {
                    Some(l) => {
                        lists.set(*slot, l);
                        if model.len() <= at {
                            model.resize(at + 1, Vec::new());
                        }
                        if let Some(m) = model.get_mut(at) {
                            *m = l.clone();
                        }
                    }
                    None => {
                        lists.clear(*slot);
                        if let Some(m) = model.get_mut(at) {
                            m.clear();
                        }
                    }
                }
                for s in 0..45u32 {
                    let expected = model.get(s as usize).map_or(&[][..], Vec::as_slice);
                    prop_assert_eq!(lists.get(s), expected);
                }
                prop_assert!(lists.arena.len() - lists.garbage
                    == model.iter().map(Vec::len).sum::<usize>());
            }
            let back = SlotLists::from_lists(model.clone());
            prop_assert_eq!(back.to_flat(), lists.to_flat());
            let (counts, ids) = lists.to_flat();
            prop_assert_eq!(counts.len(), model.len());
            prop_assert_eq!(&ids, &model.concat());
            let flat = SlotLists::from_flat(&counts, ids).unwrap();
            for s in 0..45u32 {
                prop_assert_eq!(flat.get(s), lists.get(s));
            }
        }
    }
}
