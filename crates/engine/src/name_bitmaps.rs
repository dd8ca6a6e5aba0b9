//! [`NameBitmaps`]: the slots carrying each interned scope name, by the name's id.
//!
//! The scope bitmaps (slots by domain, run, memory scope, user token) used to be keyed by the
//! names themselves: a third copy of every name beside the slot's and the name table's. Keyed
//! by `NameId` (dense, reused when a name goes: `crate::scope_names`), a name costs one
//! bitmap header here and its string once, in its table.

use strata_index::RoaringBitmap;

use crate::scope_names::NameId;

/// Slots by name id (see the module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct NameBitmaps {
    /// By id − 1; empty for an id no slot carries.
    bitmaps: Vec<RoaringBitmap>,
    /// Ids whose bitmap is not empty.
    held: usize,
}

impl NameBitmaps {
    /// The slots carrying `id`, if any does.
    pub fn get(&self, id: NameId) -> Option<&RoaringBitmap> {
        self.bitmaps
            .get(id.get() as usize - 1)
            .filter(|b| !b.is_empty())
    }

    pub fn insert(&mut self, id: NameId, slot: u32) {
        let at = id.get() as usize - 1;
        if self.bitmaps.len() <= at {
            self.bitmaps.resize(at + 1, RoaringBitmap::new());
        }
        let b = &mut self.bitmaps[at];
        if b.is_empty() {
            self.held += 1;
        }
        b.insert(slot);
    }

    pub fn remove(&mut self, id: NameId, slot: u32) {
        if let Some(b) = self.bitmaps.get_mut(id.get() as usize - 1)
            && b.remove(slot)
            && b.is_empty()
        {
            self.held -= 1;
            // Give the containers back: the id may stay unused for long.
            *b = RoaringBitmap::new();
        }
    }

    /// Number of ids some slot carries.
    pub fn len(&self) -> usize {
        self.held
    }

    /// Each id some slot carries, with its slots.
    pub fn iter(&self) -> impl Iterator<Item = (NameId, &RoaringBitmap)> {
        self.bitmaps.iter().enumerate().filter_map(|(i, b)| {
            let id = NameId::new(u32::try_from(i + 1).ok()?)?;
            (!b.is_empty()).then_some((id, b))
        })
    }

    /// Estimated heap bytes of the table itself (the bitmaps' containers are counted with
    /// the slots, `SlotDoc::heap_bytes`).
    pub fn heap_bytes(&self) -> u64 {
        (self.bitmaps.capacity() * std::mem::size_of::<RoaringBitmap>()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> NameId {
        NameId::new(n).unwrap()
    }

    #[test]
    fn slots_by_id_come_and_go() {
        let mut m = NameBitmaps::default();
        m.insert(id(3), 7);
        m.insert(id(3), 8);
        m.insert(id(1), 7);
        assert_eq!(m.len(), 2);
        assert!(m.get(id(2)).is_none());
        assert!(m.get(id(40)).is_none());
        assert_eq!(m.get(id(3)).unwrap().len(), 2);
        m.remove(id(3), 7);
        m.remove(id(3), 7);
        assert_eq!(m.len(), 2);
        m.remove(id(3), 8);
        assert_eq!(m.len(), 1);
        assert!(m.get(id(3)).is_none());
        let ids: Vec<u32> = m.iter().map(|(i, _)| i.get()).collect();
        assert_eq!(ids, vec![1]);
        m.remove(id(99), 1);
        assert_eq!(m.len(), 1);
    }
}
