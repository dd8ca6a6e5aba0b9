//! The persisted form of a [`Bm25Index`].
//!
//! The form (`Bm25Index`'s `Serialize`/`Deserialize`) is flat: the terms as one byte run with
//! their lengths, every posting's slot count, the slots of every posting of up to
//! [`PROMOTE_AT`] slots in one array, the larger postings as roaring bitmaps (the portable
//! format), the repeated term frequencies as (term, slot, frequency) triples, the document
//! lengths, and each slot's term ids as counts and one array; every array of numbers is one
//! run of little-endian bytes (`crate::packed`). Why: most terms of real text occur in one or
//! a handful of documents, and the previous form (a bitmap and a list per term, a list per
//! slot, which search images before format 6 held) made a load allocate, parse and convert a
//! bitmap per term and a vector per slot: at 200,000 documents of distinct words, most of a
//! large tenant's load.
//!
//! Decoding checks what a damaged form could otherwise turn into a panic or a wrong score:
//! every listed (slot, term) is in that term's posting and the counts agree both ways, every
//! posting's slots ascend, lengths add up to the total.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use serde::de::Error;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Analyzer;
use crate::bm25::{Bm25Index, Posting, repeat_key};
use crate::id_table::IdTable;
use crate::packed;
use crate::slot_lists::SlotLists;
use crate::slot_set::{PROMOTE_AT, SlotSet};

#[derive(Serialize)]
struct FlatRef<'a> {
    analyzer: Analyzer,
    #[serde(serialize_with = "packed::serialize_u32s")]
    term_lens: &'a [u32],
    #[serde(serialize_with = "packed::serialize_bytes")]
    term_bytes: &'a [u8],
    #[serde(serialize_with = "packed::serialize_u32s")]
    posting_lens: &'a [u32],
    #[serde(serialize_with = "packed::serialize_u32s")]
    small_postings: &'a [u32],
    large_postings: Vec<&'a RoaringBitmap>,
    #[serde(serialize_with = "packed::serialize_u32s")]
    repeats: &'a [u32],
    docs: &'a RoaringBitmap,
    #[serde(serialize_with = "packed::serialize_u32s")]
    lens: &'a [u32],
    #[serde(serialize_with = "packed::serialize_u32s")]
    slot_term_counts: &'a [u32],
    #[serde(serialize_with = "packed::serialize_u32s")]
    slot_term_ids: &'a [u32],
    total_len: u64,
}

#[derive(Deserialize)]
struct Flat {
    analyzer: Analyzer,
    /// Each term's length in bytes, by id (0 for a free id).
    #[serde(deserialize_with = "packed::deserialize_u32s")]
    term_lens: Vec<u32>,
    /// The terms, one after the other.
    #[serde(deserialize_with = "packed::deserialize_bytes")]
    term_bytes: Vec<u8>,
    /// Each posting's number of slots, by term id.
    #[serde(deserialize_with = "packed::deserialize_u32s")]
    posting_lens: Vec<u32>,
    /// The slots of the postings of at most `PROMOTE_AT` slots, by term id, each ascending.
    #[serde(deserialize_with = "packed::deserialize_u32s")]
    small_postings: Vec<u32>,
    /// The larger postings, by term id.
    large_postings: Vec<RoaringBitmap>,
    /// (term id, slot, frequency) where the frequency is above 1, by term then slot.
    #[serde(deserialize_with = "packed::deserialize_u32s")]
    repeats: Vec<u32>,
    docs: RoaringBitmap,
    #[serde(deserialize_with = "packed::deserialize_u32s")]
    lens: Vec<u32>,
    /// How many term ids each slot lists, by slot.
    #[serde(deserialize_with = "packed::deserialize_u32s")]
    slot_term_counts: Vec<u32>,
    /// The term ids each slot lists, slot after slot.
    #[serde(deserialize_with = "packed::deserialize_u32s")]
    slot_term_ids: Vec<u32>,
    total_len: u64,
}

impl Serialize for Bm25Index {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut term_lens = Vec::with_capacity(self.terms.len());
        let mut term_bytes = Vec::new();
        for t in &self.terms {
            term_lens.push(u32::try_from(t.len()).map_err(serde::ser::Error::custom)?);
            term_bytes.extend_from_slice(t.as_bytes());
        }
        let mut posting_lens = Vec::with_capacity(self.postings.len());
        let (mut small_postings, mut large_postings) = (Vec::new(), Vec::new());
        for p in &self.postings {
            let n = p.len();
            posting_lens.push(u32::try_from(n).map_err(serde::ser::Error::custom)?);
            match p {
                SlotSet::Many(bm) if n as usize > PROMOTE_AT => large_postings.push(bm),
                small => small_postings.extend(small.iter()),
            }
        }
        let mut repeats: Vec<(u32, u32, u32)> = self
            .repeats
            .iter()
            .map(|(key, n)| ((key >> 32) as u32, *key as u32, *n))
            .collect();
        repeats.sort_unstable();
        let repeats: Vec<u32> = repeats
            .into_iter()
            .flat_map(|(t, s, n)| [t, s, n])
            .collect();
        let (slot_term_counts, slot_term_ids) = self.slot_terms.to_flat();
        FlatRef {
            analyzer: self.analyzer,
            term_lens: &term_lens,
            term_bytes: &term_bytes,
            posting_lens: &posting_lens,
            small_postings: &small_postings,
            large_postings,
            repeats: &repeats,
            docs: &self.docs,
            lens: &self.lens,
            slot_term_counts: &slot_term_counts,
            slot_term_ids: &slot_term_ids,
            total_len: self.total_len,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Bm25Index {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Parts::from_flat(Flat::deserialize(d)?)
            .and_then(Parts::assemble)
            .map_err(D::Error::custom)
    }
}

/// An index as read, before it is checked.
struct Parts {
    analyzer: Analyzer,
    terms: Vec<String>,
    postings: Vec<Posting>,
    /// (term id, slot, frequency) triples.
    repeats: Vec<u32>,
    docs: RoaringBitmap,
    lens: Vec<u32>,
    slot_terms: SlotLists,
    total_len: u64,
}

impl Parts {
    /// The flat form's arrays cut into terms and postings; each cut checked, the rest left to
    /// [`Parts::assemble`].
    fn from_flat(f: Flat) -> Result<Parts, String> {
        let text = std::str::from_utf8(&f.term_bytes).map_err(|e| format!("bm25 terms: {e}"))?;
        let mut terms = Vec::with_capacity(f.term_lens.len());
        let mut at = 0usize;
        for len in &f.term_lens {
            let end = at.saturating_add(*len as usize);
            let term = text
                .get(at..end)
                .ok_or("bm25: terms cut outside their bytes")?;
            terms.push(term.to_owned());
            at = end;
        }
        if at != text.len() {
            return Err("bm25: bytes after the last term".into());
        }
        let mut postings = Vec::with_capacity(f.posting_lens.len());
        let (mut small, mut large) = (f.small_postings.as_slice(), f.large_postings.into_iter());
        for n in &f.posting_lens {
            let n = *n as usize;
            let posting = if n > PROMOTE_AT {
                let bm = large
                    .next()
                    .ok_or("bm25: fewer large postings than counted")?;
                if bm.len() != n as u64 {
                    return Err("bm25: a large posting of another length".into());
                }
                SlotSet::Many(bm)
            } else {
                let (slots, rest) = small
                    .split_at_checked(n)
                    .ok_or("bm25: fewer small posting slots than counted")?;
                small = rest;
                if !slots.is_sorted_by(|a, b| a < b) {
                    return Err("bm25: a posting's slots do not ascend".into());
                }
                match slots {
                    [] => SlotSet::Empty,
                    [one] => SlotSet::One(*one),
                    few => SlotSet::Few(few.to_vec()),
                }
            };
            postings.push(posting);
        }
        if !small.is_empty() || large.next().is_some() {
            return Err("bm25: more posting slots than counted".into());
        }
        if !f.repeats.len().is_multiple_of(3) {
            return Err("bm25: a partial frequency triple".into());
        }
        let slot_terms = SlotLists::from_flat(&f.slot_term_counts, f.slot_term_ids)
            .ok_or("bm25: slot term counts do not match their ids")?;
        Ok(Parts {
            analyzer: f.analyzer,
            terms,
            postings,
            repeats: f.repeats,
            docs: f.docs,
            lens: f.lens,
            slot_terms,
            total_len: f.total_len,
        })
    }

    fn assemble(self) -> Result<Bm25Index, String> {
        let s = self;
        if s.terms.len() != s.postings.len() {
            return Err(format!(
                "bm25: {} terms for {} postings",
                s.terms.len(),
                s.postings.len()
            ));
        }
        let mut ids = IdTable::with_capacity(s.terms.len());
        let mut free_ids = Vec::new();
        let mut entries = 0u64;
        let term_of = |id: u32| s.terms[id as usize].as_str();
        for (id, (term, p)) in s.terms.iter().zip(&s.postings).enumerate() {
            let id = id as u32;
            if term.is_empty() != p.is_empty() {
                return Err(format!("bm25: term {id} and its posting disagree"));
            }
            if term.is_empty() {
                free_ids.push(id);
            } else if ids.get(term.as_str(), term_of).is_some() {
                return Err(format!("bm25: term {term:?} twice"));
            } else {
                ids.insert(id, term_of);
            }
            entries += p.len();
        }
        let mut repeats = HashMap::with_capacity(s.repeats.len() / 3);
        for t in s.repeats.chunks_exact(3) {
            let (term, slot, n) = (t[0], t[1], t[2]);
            let posted = s
                .postings
                .get(term as usize)
                .is_some_and(|p| p.contains(slot));
            let repeated_once = repeats.insert(repeat_key(term, slot), n).is_none();
            if n < 2 || !posted || !repeated_once {
                return Err(format!("bm25: term {term} has a bad frequency"));
            }
        }
        // Free ids are reused last-freed first; any order is valid.
        free_ids.reverse();
        let mut listed = 0u64;
        // The last slot (+1) that listed each term: a term listed twice by one slot would let
        // the counts below balance with a posting that no slot lists.
        let mut last_lister = vec![0usize; s.postings.len()];
        for slot in 0..s.slot_terms.len() {
            let list = s.slot_terms.get(slot as u32);
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
                s.postings
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
            postings: s.postings,
            repeats,
            terms: s.terms,
            free_ids,
            docs: s.docs,
            lens: s.lens,
            slot_terms: s.slot_terms,
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

    /// Ops over 80 slots and three words: postings grow past `PROMOTE_AT` (stored as bitmaps)
    /// and shrink back through the sizes a bitmap keeps before it becomes an array again.
    fn wide_ops() -> impl Strategy<Value = Vec<(u32, Option<String>)>> {
        let text = prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..4)
            .prop_map(|words| words.join(" "));
        prop::collection::vec((0u32..80, prop::option::weighted(0.6, text)), 0..300)
    }

    proptest! {
        /// Large postings, and bitmaps holding few slots, decode to the same answers and to
        /// the same stored bytes.
        #[test]
        fn large_postings_decode_like_the_original(before in wide_ops(), after in wide_ops()) {
            let mut original = Bm25Index::new();
            apply(&mut original, &before);
            let bytes = postcard::to_stdvec(&original).unwrap();
            let mut decoded: Bm25Index = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(answers(&decoded), answers(&original));
            prop_assert_eq!(postcard::to_stdvec(&decoded).unwrap(), bytes);
            apply(&mut original, &after);
            apply(&mut decoded, &after);
            prop_assert_eq!(answers(&decoded), answers(&original));
        }

        /// A decoded index answers like the one it was saved from, and keeps doing so through
        /// the same writes afterwards (freed term ids, reused slots).
        #[test]
        fn decoded_index_behaves_like_the_original(before in ops(), after in ops()) {
            let mut original = Bm25Index::new();
            apply(&mut original, &before);
            let mut decoded = round_trip(&original);
            prop_assert_eq!(answers(&decoded), answers(&original));
            // The engine's encoding too, where the arrays are byte runs.
            let bytes = postcard::to_stdvec(&original).unwrap();
            let from_bytes: Bm25Index = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(answers(&from_bytes), answers(&original));
            apply(&mut original, &after);
            apply(&mut decoded, &after);
            prop_assert_eq!(answers(&decoded), answers(&original));
            prop_assert_eq!(decoded.doc_count(), original.doc_count());
            prop_assert_eq!(decoded.total_len, original.total_len);
        }
    }

    /// The two-document index the damage tests start from: terms a (0), b (1), c (2); b
    /// twice in slot 0.
    fn small() -> Bm25Index {
        let mut ix = Bm25Index::new();
        ix.insert(0, "a b b");
        ix.insert(1, "b c");
        ix
    }

    /// An array of numbers of the flat form, as JSON holds it (little-endian bytes).
    fn u32s(v: &Value, key: &str) -> Vec<u32> {
        let bytes: Vec<u8> = serde_json::from_value(v[key].clone()).unwrap();
        bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn set_u32s(v: &mut Value, key: &str, values: &[u32]) {
        let bytes: Vec<u8> = values.iter().flat_map(|n| n.to_le_bytes()).collect();
        v[key] = json!(bytes);
    }

    #[test]
    fn the_flat_form_holds_what_the_index_does() {
        let v = serde_json::to_value(small()).unwrap();
        assert_eq!(u32s(&v, "term_lens"), [1, 1, 1]);
        assert_eq!(v["term_bytes"], json!(b"abc".to_vec()));
        assert_eq!(u32s(&v, "posting_lens"), [1, 2, 1]);
        assert_eq!(u32s(&v, "small_postings"), [0, 0, 1, 1]);
        assert_eq!(v["large_postings"], json!([]));
        assert_eq!(u32s(&v, "repeats"), [1, 0, 2]);
        assert_eq!(u32s(&v, "lens"), [3, 2]);
        assert_eq!(u32s(&v, "slot_term_counts"), [2, 2]);
        assert_eq!(u32s(&v, "slot_term_ids"), [0, 1, 1, 2]);
        assert_eq!(v["total_len"], json!(5));
    }

    /// A posting over `PROMOTE_AT` slots is stored as a bitmap, and decodes as one.
    #[test]
    fn a_large_posting_round_trips_as_a_bitmap() {
        let mut ix = Bm25Index::new();
        for slot in 0..100 {
            ix.insert(
                slot,
                if slot % 2 == 0 {
                    "common even"
                } else {
                    "common"
                },
            );
        }
        let v = serde_json::to_value(&ix).unwrap();
        assert_eq!(v["large_postings"].as_array().unwrap().len(), 2);
        let back = round_trip(&ix);
        assert!(matches!(back.postings[0], SlotSet::Many(_)));
        assert_eq!(answers(&back), answers(&ix));
        let p = postcard::to_stdvec(&ix).unwrap();
        let back: Bm25Index = postcard::from_bytes(&p).unwrap();
        assert_eq!(answers(&back), answers(&ix));
    }

    /// A change to a stored form's JSON.
    type Damage = fn(&mut Value);

    #[test]
    fn damaged_forms_are_errors() {
        let good = serde_json::to_value(small()).unwrap();
        assert!(serde_json::from_value::<Bm25Index>(good.clone()).is_ok());
        let damage: Vec<(&str, Damage)> = vec![
            ("a term without a posting", |v| {
                set_u32s(v, "term_lens", &[1, 1, 1, 1]);
                v["term_bytes"] = json!(b"abcx".to_vec());
            }),
            ("a term twice", |v| v["term_bytes"] = json!(b"bbc".to_vec())),
            ("terms cut past their bytes", |v| {
                set_u32s(v, "term_lens", &[1, 1, 2])
            }),
            ("bytes after the terms", |v| {
                v["term_bytes"] = json!(b"abcd".to_vec())
            }),
            ("terms that are not text", |v| {
                v["term_bytes"] = json!([b'a', 0xff, b'c'])
            }),
            ("a partial number", |v| v["lens"] = json!([3, 0, 0, 0, 2])),
            ("a posting's slots descending", |v| {
                set_u32s(v, "small_postings", &[0, 1, 0, 1])
            }),
            ("more posting slots than counted", |v| {
                set_u32s(v, "small_postings", &[0, 0, 1, 1, 1])
            }),
            ("fewer posting slots than counted", |v| {
                set_u32s(v, "small_postings", &[0, 0, 1])
            }),
            ("a frequency of one", |v| set_u32s(v, "repeats", &[1, 0, 1])),
            ("a frequency where the term is not", |v| {
                set_u32s(v, "repeats", &[0, 1, 2])
            }),
            ("a frequency twice", |v| {
                set_u32s(v, "repeats", &[1, 0, 2, 1, 0, 3])
            }),
            ("a partial frequency", |v| set_u32s(v, "repeats", &[1, 0])),
            ("a slot listing a term not posted for it", |v| {
                set_u32s(v, "slot_term_counts", &[2, 3]);
                set_u32s(v, "slot_term_ids", &[0, 1, 1, 2, 0]);
            }),
            ("a slot listing nothing", |v| {
                set_u32s(v, "slot_term_counts", &[0, 2]);
                set_u32s(v, "slot_term_ids", &[1, 2]);
            }),
            ("a slot listing an unknown term", |v| {
                set_u32s(v, "slot_term_counts", &[1, 2]);
                set_u32s(v, "slot_term_ids", &[7, 1, 2]);
            }),
            // Counts balance, but slot 1 lists `b` twice and `c` not at all.
            ("a slot listing a term twice", |v| {
                set_u32s(v, "slot_term_ids", &[0, 1, 1, 1])
            }),
            ("counts beyond the ids", |v| {
                set_u32s(v, "slot_term_counts", &[2, 3])
            }),
            ("lengths that do not add up", |v| v["total_len"] = json!(99)),
        ];
        for (what, damage) in damage {
            let mut bad = good.clone();
            damage(&mut bad);
            assert!(
                serde_json::from_value::<Bm25Index>(bad).is_err(),
                "{what}: decoded"
            );
        }
    }

    /// The checks of postings stored as bitmaps: one per posting over `PROMOTE_AT` slots,
    /// each of the length counted.
    #[test]
    fn damaged_large_postings_are_errors() {
        let mut ix = Bm25Index::new();
        for slot in 0..100 {
            ix.insert(slot, if slot < 40 { "common rare" } else { "common" });
        }
        let good = serde_json::to_value(&ix).unwrap();
        assert_eq!(u32s(&good, "posting_lens"), [100, 40]);
        assert!(serde_json::from_value::<Bm25Index>(good.clone()).is_ok());
        let damage: Vec<(&str, Damage)> = vec![
            ("a bitmap of another length", |v| {
                set_u32s(v, "posting_lens", &[100, 41])
            }),
            ("a bitmap fewer", |v| {
                v["large_postings"].as_array_mut().unwrap().pop();
            }),
            ("a bitmap more", |v| {
                let extra = v["large_postings"][0].clone();
                v["large_postings"].as_array_mut().unwrap().push(extra);
            }),
            ("the two bitmaps swapped", |v| {
                v["large_postings"].as_array_mut().unwrap().swap(0, 1);
            }),
        ];
        for (what, damage) in damage {
            let mut bad = good.clone();
            damage(&mut bad);
            assert!(
                serde_json::from_value::<Bm25Index>(bad).is_err(),
                "{what}: decoded"
            );
        }
    }
}
