//! The persisted form of a [`Bm25Index`]: the term list by id, one posting per id (its slots as
//! a roaring bitmap in the portable format, and its repeated term frequencies sorted by slot),
//! the document lengths and one term-id list per slot. Decoding allocates per term and per
//! document, never hashes per word of a document, and checks what a damaged form could
//! otherwise turn into a panic or a wrong score: every listed (slot, term) is in that term's
//! posting and the counts agree both ways, lengths add up to the total.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use serde::de::Error;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Analyzer;
use crate::bm25::{Bm25Index, Posting, repeat_key};
use crate::id_table::IdTable;
use crate::slot_lists::SlotLists;

#[derive(Serialize, Deserialize)]
struct StoredPosting {
    slots: RoaringBitmap,
    /// (slot, term frequency) where the frequency is above 1, by slot.
    repeats: Vec<(u32, u32)>,
}

#[derive(Serialize)]
struct StoredRef<'a> {
    analyzer: Analyzer,
    terms: &'a [String],
    postings: Vec<StoredPosting>,
    docs: &'a RoaringBitmap,
    lens: &'a [u32],
    slot_terms: &'a SlotLists,
    total_len: u64,
}

#[derive(Deserialize)]
struct Stored {
    analyzer: Analyzer,
    terms: Vec<String>,
    postings: Vec<StoredPosting>,
    docs: RoaringBitmap,
    lens: Vec<u32>,
    slot_terms: Vec<Vec<u32>>,
    total_len: u64,
}

impl Serialize for Bm25Index {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The stored form keeps each posting's repeats with it (as before postings were sized
        // to their contents), so the bytes do not depend on the in-memory layout.
        let mut repeats: Vec<Vec<(u32, u32)>> = vec![Vec::new(); self.postings.len()];
        for (key, n) in &self.repeats {
            let (term, slot) = ((key >> 32) as usize, *key as u32);
            if let Some(list) = repeats.get_mut(term) {
                list.push((slot, *n));
            }
        }
        let postings = self
            .postings
            .iter()
            .zip(repeats)
            .map(|(p, mut repeats)| {
                repeats.sort_unstable();
                StoredPosting {
                    slots: p.to_bitmap(),
                    repeats,
                }
            })
            .collect();
        StoredRef {
            analyzer: self.analyzer,
            terms: &self.terms,
            postings,
            docs: &self.docs,
            lens: &self.lens,
            slot_terms: &self.slot_terms,
            total_len: self.total_len,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Bm25Index {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Bm25Index::from_stored(Stored::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl Bm25Index {
    fn from_stored(s: Stored) -> Result<Self, String> {
        if s.terms.len() != s.postings.len() {
            return Err(format!(
                "bm25: {} terms for {} postings",
                s.terms.len(),
                s.postings.len()
            ));
        }
        let mut ids = IdTable::with_capacity(s.terms.len());
        let mut free_ids = Vec::new();
        let mut postings = Vec::with_capacity(s.postings.len());
        let mut repeats = HashMap::new();
        let mut entries = 0u64;
        let term_of = |id: u32| s.terms[id as usize].as_str();
        for (id, (term, p)) in s.terms.iter().zip(s.postings).enumerate() {
            let id = id as u32;
            if term.is_empty() != p.slots.is_empty() {
                return Err(format!("bm25: term {id} and its posting disagree"));
            }
            if term.is_empty() {
                free_ids.push(id);
            } else if ids.get(term.as_str(), term_of).is_some() {
                return Err(format!("bm25: term {term:?} twice"));
            } else {
                ids.insert(id, term_of);
            }
            for (slot, n) in &p.repeats {
                let repeated_once = repeats.insert(repeat_key(id, *slot), *n).is_none();
                if *n < 2 || !p.slots.contains(*slot) || !repeated_once {
                    return Err(format!("bm25: term {term:?} has a bad frequency"));
                }
            }
            entries += p.slots.len();
            postings.push(Posting::from_bitmap(p.slots));
        }
        // Free ids are reused last-freed first; any order is valid.
        free_ids.reverse();
        let mut listed = 0u64;
        // The last slot (+1) that listed each term: a term listed twice by one slot would let
        // the counts below balance with a posting that no slot lists.
        let mut last_lister = vec![0usize; postings.len()];
        for (slot, list) in s.slot_terms.iter().enumerate() {
            if !list.is_empty() && !s.docs.contains(slot as u32) {
                return Err(format!("bm25: terms for the empty slot {slot}"));
            }
            for id in list {
                match last_lister.get_mut(*id as usize) {
                    Some(last) if *last == slot + 1 => {
                        return Err(format!("bm25: slot {slot} lists term {id} twice"));
                    }
                    Some(last) => *last = slot + 1,
                    // Out of range: refused just below.
                    None => {}
                }
            }
            let held = |id: &u32| {
                postings
                    .get(*id as usize)
                    .is_some_and(|p: &Posting| p.contains(slot as u32))
            };
            if !list.iter().all(held) {
                return Err(format!("bm25: slot {slot} lists a term not posted for it"));
            }
            listed += list.len() as u64;
        }
        // Every listed (slot, term) is posted and only documents list terms, so equal counts
        // mean the postings hold exactly the listed entries: no posting names a non-document.
        if listed != entries {
            return Err(format!(
                "bm25: {listed} term entries by slot, {entries} in postings"
            ));
        }
        let lens_total: u64 = s.lens.iter().map(|l| u64::from(*l)).sum();
        let stray_len = s
            .lens
            .iter()
            .enumerate()
            .any(|(slot, l)| *l > 0 && !s.docs.contains(slot as u32));
        if lens_total != s.total_len || stray_len {
            return Err("bm25: document lengths do not add up".into());
        }
        Ok(Bm25Index {
            ids,
            postings,
            repeats,
            terms: s.terms,
            free_ids,
            docs: s.docs,
            lens: s.lens,
            slot_terms: SlotLists::from_lists(s.slot_terms),
            total_len: s.total_len,
            analyzer: s.analyzer,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Hits of a few queries as (slot, score bits): equal only if every score is the same float.
    fn answers(ix: &Bm25Index) -> Vec<Vec<(u32, u32)>> {
        ["a", "b c", "a a d", "e", "zzz"]
            .iter()
            .map(|q| {
                ix.query(q, ix.doc_slots())
                    .search(10, |_| true)
                    .iter()
                    .map(|h| (h.slot, h.score.to_bits()))
                    .collect()
            })
            .collect()
    }

    fn round_trip(ix: &Bm25Index) -> Bm25Index {
        serde_json::from_value(serde_json::to_value(ix).unwrap()).unwrap()
    }

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d", "e"]), 0..8)
            .prop_map(|words| words.join(" "))
    }

    /// Insert (Some text) or remove (None) a slot.
    fn ops() -> impl Strategy<Value = Vec<(u32, Option<String>)>> {
        prop::collection::vec((0u32..12, prop::option::weighted(0.7, text())), 0..40)
    }

    fn apply(ix: &mut Bm25Index, ops: &[(u32, Option<String>)]) {
        for (slot, text) in ops {
            match text {
                Some(t) => ix.insert(*slot, t),
                None => {
                    ix.remove(*slot);
                }
            }
        }
    }

    proptest! {
        /// A decoded index answers like the one it was saved from, and keeps doing so through
        /// the same writes afterwards (freed term ids, reused slots).
        #[test]
        fn decoded_index_behaves_like_the_original(before in ops(), after in ops()) {
            let mut original = Bm25Index::new();
            apply(&mut original, &before);
            let mut decoded = round_trip(&original);
            prop_assert_eq!(answers(&decoded), answers(&original));
            apply(&mut original, &after);
            apply(&mut decoded, &after);
            prop_assert_eq!(answers(&decoded), answers(&original));
            prop_assert_eq!(decoded.doc_count(), original.doc_count());
            prop_assert_eq!(decoded.total_len, original.total_len);
        }
    }

    #[test]
    fn damaged_forms_are_errors() {
        let mut ix = Bm25Index::new();
        ix.insert(0, "a b b");
        ix.insert(1, "b c");
        let good = serde_json::to_value(&ix).unwrap();
        assert!(serde_json::from_value::<Bm25Index>(good.clone()).is_ok());
        let damage: [fn(&mut Value); 7] = [
            |v| v["terms"].as_array_mut().unwrap().push(json!("x")),
            |v| v["terms"][0] = v["terms"][1].clone(),
            |v| v["slot_terms"][1] = json!([0, 1, 2]),
            |v| v["slot_terms"][0] = json!([]),
            |v| v["total_len"] = json!(99),
            |v| v["slot_terms"][0] = json!([7]),
            // Counts balance, but slot 1 lists `b` twice and `c` not at all.
            |v| v["slot_terms"][1] = json!([1, 1]),
        ];
        for (i, damage) in damage.iter().enumerate() {
            let mut bad = good.clone();
            damage(&mut bad);
            assert!(
                serde_json::from_value::<Bm25Index>(bad).is_err(),
                "damage {i} decoded"
            );
        }
    }
}
