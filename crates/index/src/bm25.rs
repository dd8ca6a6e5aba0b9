//! An in-memory BM25 inverted index keyed by `u32` slot, one per tenant-collection.
//!
//! Scoring is Okapi BM25 with `k1 = 1.2`, `b = 0.75` and Lucene's always-positive IDF
//! `ln(1 + (N - df + 0.5) / (df + 0.5))`.
//!
//! **Statistics are scope-exact.** The index holds every document of a tenant-collection, but a
//! caller may see only some of them (docs/isolation.md, rule 4: no channel may score with a record
//! the caller cannot see). So nothing scores against the whole index: [`Bm25Index::query`]
//! takes the set of slots the caller may see, and the document count `N`, the document
//! frequencies `df` and the average document length are computed over exactly that set —
//! `N = |docs ∩ visible|`, `df = |postings(term) ∩ visible|` (roaring intersection counts), and
//! the total length is summed from a dense per-slot length array. Only documents in the set are
//! scored. A document's score is therefore the same float as in an index holding nothing but
//! the visible documents, whatever else the index holds.
//!
//! A query's terms are de-duplicated (a term repeated in the query counts once) and summed in
//! the order they first appear, so a document's score is the same float whether it comes from
//! [`Bm25Query::search`] or [`Bm25Query::score_of`].

use std::collections::{HashMap, HashSet};

use roaring::RoaringBitmap;

use crate::Analyzer;
use crate::exact::{Hit, TopK};
use crate::id_table::IdTable;
use crate::slot_lists::SlotLists;
use crate::slot_set::SlotSet;

/// BM25 term-frequency saturation.
pub const K1: f32 = 1.2;
/// BM25 length normalisation.
pub const B: f32 = 0.75;

/// Splits `text` into lowercase tokens at every non-alphanumeric Unicode character, dropping
/// empty tokens. No stemming and no stop words: [`Analyzer::Standard`].
pub fn tokenize(text: &str) -> Vec<String> {
    Analyzer::Standard.terms(text)
}

/// The documents containing one term, sized to how many there are (`SlotSet`: one slot
/// inline, a few in an array, many in a bitmap): most distinct terms of real text occur in one
/// or a handful of documents, and a roaring bitmap per such term cost ~120 bytes.
pub(crate) type Posting = SlotSet;

/// The key of a term frequency above one in [`Bm25Index::repeats`].
pub(crate) fn repeat_key(term: u32, slot: u32) -> u64 {
    (u64::from(term) << 32) | u64::from(slot)
}

/// An in-memory BM25 index. Not internally synchronised: writes take `&mut self`.
///
/// Terms get dense ids; postings and each document's terms are kept by id, so that the
/// persisted form (`bm25_stored`) is a term list, a posting list and one id list per slot,
/// decoded without a string per word of every document. The engine's persisted form pins the
/// encoding with golden bytes.
#[derive(Debug, Default, Clone)]
pub struct Bm25Index {
    /// Term → its id in `postings`; the terms themselves are in `terms`, once.
    pub(crate) ids: IdTable,
    /// By term id; an emptied posting's id is in `free_ids` (its `term` is then empty).
    pub(crate) postings: Vec<Posting>,
    /// Term frequencies above one, by `repeat_key(term, slot)`: a term usually occurs once in
    /// a document, so storing only the repeats keeps the index from holding an entry per word
    /// of every document, and one map for all terms costs nothing for the terms without any.
    pub(crate) repeats: HashMap<u64, u32>,
    /// By term id: the term (for the persisted form and for reusing ids).
    pub(crate) terms: Vec<String>,
    pub(crate) free_ids: Vec<u32>,
    /// Slots holding a document.
    pub(crate) docs: RoaringBitmap,
    /// Document length in tokens by slot (0 for an empty slot). Dense because the engine's
    /// slots are: summing the lengths of a visible set is then one array read per document.
    pub(crate) lens: Vec<u32>,
    /// Each slot's distinct term ids (empty for an empty slot), so that removal is exact; in
    /// one arena rather than a `Vec` per slot (`SlotLists`).
    pub(crate) slot_terms: SlotLists,
    pub(crate) total_len: u64,
    /// Turns documents and queries alike into terms.
    pub(crate) analyzer: Analyzer,
}

impl Bm25Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty index whose documents and queries are analysed by `analyzer`.
    pub fn with_analyzer(analyzer: Analyzer) -> Self {
        Self {
            analyzer,
            ..Self::default()
        }
    }

    /// The analyzer documents and queries go through.
    pub fn analyzer(&self) -> Analyzer {
        self.analyzer
    }

    /// Number of indexed documents, visible or not (for introspection; scores never use it).
    pub fn doc_count(&self) -> usize {
        self.docs.len() as usize
    }

    /// The slots holding a document.
    pub fn doc_slots(&self) -> &RoaringBitmap {
        &self.docs
    }

    fn term_id(&self, term: &str) -> Option<u32> {
        self.ids.get(term, |id| self.terms[id as usize].as_str())
    }

    fn posting(&self, term: &str) -> Option<&Posting> {
        self.term_id(term).map(|id| &self.postings[id as usize])
    }

    /// The frequency of term `term` in `slot`, which must hold it.
    fn tf(&self, term: u32, slot: u32) -> u32 {
        self.repeats
            .get(&repeat_key(term, slot))
            .copied()
            .unwrap_or(1)
    }

    /// Number of documents containing `term` (already tokenized), visible or not.
    pub fn doc_freq(&self, term: &str) -> usize {
        self.posting(term).map_or(0, |p| p.len() as usize)
    }

    /// Whether `slot` is indexed.
    pub fn contains(&self, slot: u32) -> bool {
        self.docs.contains(slot)
    }

    /// The id of `term`, given a new one (or a freed one) if it has none.
    fn id_of(&mut self, term: &str) -> u32 {
        if let Some(id) = self.term_id(term) {
            return id;
        }
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.terms[id as usize] = term.to_string();
                id
            }
            None => {
                self.postings.push(Posting::default());
                self.terms.push(term.to_string());
                (self.postings.len() - 1) as u32
            }
        };
        let terms = &self.terms;
        self.ids.insert(id, |id| terms[id as usize].as_str());
        id
    }

    /// Indexes `text` under `slot`, replacing whatever the slot held (upsert).
    pub fn insert(&mut self, slot: u32, text: &str) {
        self.remove(slot);
        let tokens = self.analyzer.terms(text);
        let len = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        // Distinct terms in first-appearance order, so that new terms get their ids (and the
        // persisted form its bytes) in the same order on every run.
        let mut at_of: HashMap<&str, usize> = HashMap::new();
        let mut tf: Vec<(&str, u32)> = Vec::new();
        for t in &tokens {
            match at_of.get(t.as_str()) {
                Some(i) => tf[*i].1 += 1,
                None => {
                    at_of.insert(t, tf.len());
                    tf.push((t, 1));
                }
            }
        }
        let mut ids = Vec::with_capacity(tf.len());
        for (term, count) in tf {
            let id = self.id_of(term);
            self.postings[id as usize].insert(slot);
            if count > 1 {
                self.repeats.insert(repeat_key(id, slot), count);
            }
            ids.push(id);
        }
        let at = slot as usize;
        if self.lens.len() <= at {
            self.lens.resize(at + 1, 0);
        }
        self.lens[at] = len;
        self.total_len += u64::from(len);
        self.docs.insert(slot);
        self.slot_terms.set(slot, &ids);
    }

    /// Removes `slot`; returns whether it was indexed.
    pub fn remove(&mut self, slot: u32) -> bool {
        if !self.docs.remove(slot) {
            return false;
        }
        // Borrowed from `slot_terms` while the other fields change; cleared after.
        let ids = self.slot_terms.get(slot);
        if let Some(len) = self.lens.get_mut(slot as usize) {
            self.total_len -= u64::from(*len);
            *len = 0;
        }
        for &id in ids {
            let Some(posting) = self.postings.get_mut(id as usize) else {
                continue;
            };
            posting.remove(slot);
            self.repeats.remove(&repeat_key(id, slot));
            if posting.is_empty() {
                let terms = &self.terms;
                self.ids.remove(terms[id as usize].as_str(), |id| {
                    terms[id as usize].as_str()
                });
                self.terms[id as usize] = String::new();
                self.free_ids.push(id);
            }
        }
        self.slot_terms.clear(slot);
        true
    }

    fn len_of(&self, slot: u32) -> u32 {
        self.lens.get(slot as usize).copied().unwrap_or(0)
    }

    /// Total length of the documents in `set`, which holds only document slots.
    fn total_len_of(&self, set: &RoaringBitmap) -> u64 {
        let sum = |s: &RoaringBitmap| s.iter().map(|slot| u64::from(self.len_of(slot))).sum();
        // Sum over whichever side is smaller: the set, or the documents outside it. Integer
        // sums are exact, so both give the same total.
        if set.len() * 2 <= self.docs.len() {
            sum(set)
        } else {
            self.total_len - sum(&(&self.docs - set))
        }
    }

    /// Prepares `query` for scoring against exactly the documents in `visible`: statistics are
    /// computed over `visible`, and only documents in `visible` can be scored. Slots in
    /// `visible` without a document are ignored.
    pub fn query<'a>(&'a self, query: &str, visible: &RoaringBitmap) -> Bm25Query<'a> {
        let visible = visible & &self.docs;
        let n = visible.len();
        let avgdl = if n == 0 {
            0.0
        } else {
            (self.total_len_of(&visible) as f64 / n as f64) as f32
        };
        let mut seen = HashSet::new();
        let terms = self
            .analyzer
            .terms(query)
            .into_iter()
            .filter(|t| seen.insert(t.clone()))
            .filter_map(|t| {
                let id = self.term_id(&t)?;
                let posting = &self.postings[id as usize];
                let df = posting.intersection_len(&visible);
                if df == 0 {
                    // As absent as in an index without the invisible documents.
                    return None;
                }
                let (n, df) = (n as f32, df as f32);
                let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                Some((idf, id, posting))
            })
            .collect();
        Bm25Query {
            index: self,
            visible,
            terms,
            avgdl,
        }
    }
}

/// A query prepared by [`Bm25Index::query`] over one visible set.
#[derive(Debug)]
pub struct Bm25Query<'a> {
    index: &'a Bm25Index,
    /// The visible documents: the statistics' universe and the only scorable slots.
    visible: RoaringBitmap,
    /// The query's distinct terms present in `visible`, in first-appearance order, with IDF
    /// and term id.
    terms: Vec<(f32, u32, &'a Posting)>,
    avgdl: f32,
}

impl Bm25Query<'_> {
    /// Number of visible documents (`N`).
    pub fn doc_count(&self) -> u64 {
        self.visible.len()
    }

    /// Average length of the visible documents, in tokens (0 when none).
    pub fn avgdl(&self) -> f32 {
        self.avgdl
    }

    /// One term's contribution for a document of length `len` with term frequency `tf`.
    fn term_score(&self, idf: f32, tf: u32, len: u32) -> f32 {
        let tf = tf as f32;
        let norm = if self.avgdl > 0.0 {
            len as f32 / self.avgdl
        } else {
            0.0
        };
        idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * norm))
    }

    /// The best `k` visible documents for the query among those for which `predicate` is
    /// true, by BM25 score descending, ties by slot ascending. The predicate is applied before
    /// ranking, so a filter never empties the top `k` while matching documents exist; it
    /// narrows which documents are ranked, never the statistics. Documents sharing no term
    /// with the query are not returned.
    pub fn search(&self, k: usize, predicate: impl Fn(u32) -> bool) -> Vec<Hit> {
        if k == 0 {
            return Vec::new();
        }
        let mut scores: HashMap<u32, f32> = HashMap::new();
        let mut rejected: HashSet<u32> = HashSet::new();
        for (idf, term, posting) in &self.terms {
            for slot in posting.and(&self.visible) {
                if rejected.contains(&slot) {
                    continue;
                }
                let entry = match scores.get_mut(&slot) {
                    Some(e) => e,
                    None if predicate(slot) => scores.entry(slot).or_insert(0.0),
                    None => {
                        rejected.insert(slot);
                        continue;
                    }
                };
                let tf = self.index.tf(*term, slot);
                *entry += self.term_score(*idf, tf, self.index.len_of(slot));
            }
        }
        let mut top = TopK::new(k);
        for (slot, score) in scores {
            top.push(Hit { slot, score });
        }
        top.into_sorted()
    }

    /// The score `slot` would get in [`Self::search`] (for explanations), or `None` if the
    /// slot is not a visible document or shares no term with the query.
    pub fn score_of(&self, slot: u32) -> Option<f32> {
        if !self.visible.contains(slot) {
            return None;
        }
        let len = self.index.len_of(slot);
        let mut score = None;
        for (idf, term, posting) in &self.terms {
            if posting.contains(slot) {
                let tf = self.index.tf(*term, slot);
                *score.get_or_insert(0.0) += self.term_score(*idf, tf, len);
            }
        }
        score
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn index(docs: &[(u32, &str)]) -> Bm25Index {
        let mut ix = Bm25Index::new();
        for (slot, text) in docs {
            ix.insert(*slot, text);
        }
        ix
    }

    fn slots(hits: &[Hit]) -> Vec<u32> {
        hits.iter().map(|h| h.slot).collect()
    }

    /// Search with every document visible.
    fn search(ix: &Bm25Index, q: &str, k: usize, predicate: impl Fn(u32) -> bool) -> Vec<Hit> {
        ix.query(q, ix.doc_slots()).search(k, predicate)
    }

    fn score_of(ix: &Bm25Index, q: &str, slot: u32) -> Option<f32> {
        ix.query(q, ix.doc_slots()).score_of(slot)
    }

    /// Hits as (slot, score bits), for bit-exact comparison.
    fn bits(hits: &[Hit]) -> Vec<(u32, u32)> {
        hits.iter().map(|h| (h.slot, h.score.to_bits())).collect()
    }

    #[test]
    fn tokenizer() {
        let check = |input: &str, expect: &[&str]| assert_eq!(tokenize(input), expect, "{input}");
        check("Hello, World!", &["hello", "world"]);
        check("  --  ", &[]);
        check(
            "snake_case and kebab-case",
            &["snake", "case", "and", "kebab", "case"],
        );
        check("Größe ÄPFEL 42x", &["größe", "äpfel", "42x"]);
        check("日本語 テキスト", &["日本語", "テキスト"]);
    }

    /// Score bits of "the cat" over the three documents below, as the tokenizer before
    /// analyzers scored them.
    const PINNED: &[(u32, u32)] = &[(1, 1_065_741_576), (0, 1_065_019_389)];

    #[test]
    fn the_standard_analyzer_keeps_todays_scores() {
        // `standard` (the default, and what collections stored without an analyzer decode as)
        // must score exactly as the tokenizer before analyzers did, bit for bit.
        let docs = [
            (0, "The cat sat"),
            (1, "the CAT, the hat"),
            (2, "dogs and cats"),
        ];
        let mut explicit = Bm25Index::with_analyzer(Analyzer::Standard);
        for (slot, text) in docs {
            explicit.insert(slot, text);
        }
        for ix in [&index(&docs), &explicit] {
            assert_eq!(bits(&search(ix, "the cat", 3, |_| true)), PINNED);
        }
        let mut english = Bm25Index::with_analyzer(Analyzer::English);
        for (slot, text) in docs {
            english.insert(slot, text);
        }
        // English stems "cats" to "cat" and drops "the": all three documents match.
        assert_eq!(slots(&search(&english, "the cat", 3, |_| true)).len(), 3);
    }

    #[test]
    fn ranks_by_bm25() {
        let ix = index(&[
            (1, "the cat sat"),
            (2, "the dog sat on the cat"),
            (3, "dogs and birds"),
        ]);
        let hits = search(&ix, "cat", 10, |_| true);
        // Both contain "cat" once; the shorter document wins through length normalisation.
        assert_eq!(slots(&hits), vec![1, 2]);
        assert!(hits[0].score > hits[1].score);
        assert!(search(&ix, "unicorn", 10, |_| true).is_empty());
        assert!(search(&ix, "cat", 0, |_| true).is_empty());
    }

    #[test]
    fn rare_terms_weigh_more() {
        let ix = index(&[
            (1, "common rare"),
            (2, "common"),
            (3, "common"),
            (4, "common"),
        ]);
        let idf_rare = score_of(&ix, "rare", 1).expect("scored");
        let idf_common = score_of(&ix, "common", 1).expect("scored");
        assert!(idf_rare > idf_common);
        assert!(
            idf_common > 0.0,
            "Lucene's IDF stays positive even for terms in every document"
        );
        assert_eq!(ix.doc_freq("common"), 4);
    }

    #[test]
    fn ties_break_by_slot() {
        let ix = index(&[(9, "same text"), (3, "same text"), (5, "same text")]);
        assert_eq!(slots(&search(&ix, "same", 2, |_| true)), vec![3, 5]);
    }

    #[test]
    fn predicate_applies_before_top_k() {
        let mut ix = Bm25Index::new();
        for slot in 0..100 {
            // Low slots score best; only slots >= 90 pass the filter.
            let text = if slot < 50 {
                "apple apple"
            } else {
                "apple pear pear pear"
            };
            ix.insert(slot, text);
        }
        let hits = search(&ix, "apple", 5, |s| s >= 90);
        assert_eq!(slots(&hits), vec![90, 91, 92, 93, 94]);
    }

    #[test]
    fn search_and_score_of_agree() {
        let ix = index(&[(1, "a b c a"), (2, "b c d"), (3, "c d e f g")]);
        let visible: RoaringBitmap = [1, 3].into_iter().collect();
        for set in [ix.doc_slots().clone(), visible] {
            let q = ix.query("a c d c", &set);
            for hit in q.search(10, |_| true) {
                assert_eq!(q.score_of(hit.slot), Some(hit.score));
            }
        }
        assert_eq!(score_of(&ix, "zzz", 1), None);
        assert_eq!(score_of(&ix, "a", 42), None);
    }

    #[test]
    fn upsert_replaces_old_postings() {
        let mut ix = index(&[(1, "old words here"), (2, "other")]);
        ix.insert(1, "new");
        assert_eq!(ix.doc_count(), 2);
        assert!(search(&ix, "old", 10, |_| true).is_empty());
        assert_eq!(ix.doc_freq("old"), 0);
        assert_eq!(slots(&search(&ix, "new", 10, |_| true)), vec![1]);
        assert_eq!(ix.query("new", ix.doc_slots()).avgdl(), 1.0);
    }

    #[test]
    fn remove_updates_stats() {
        let mut ix = index(&[(1, "x y"), (2, "x"), (3, "y y y y")]);
        let before = score_of(&ix, "x", 2).expect("scored");
        assert!(ix.remove(1));
        assert!(!ix.remove(1));
        assert_eq!(ix.doc_count(), 2);
        assert_eq!(ix.doc_freq("x"), 1);
        assert_eq!(ix.query("x", ix.doc_slots()).avgdl(), 2.5);
        // x became rarer, so slot 2's score for it rises.
        assert!(score_of(&ix, "x", 2).expect("scored") > before);
        ix.remove(2);
        ix.remove(3);
        let q = ix.query("x", ix.doc_slots());
        assert_eq!((ix.doc_count(), q.doc_count(), q.avgdl()), (0, 0, 0.0));
        assert!(ix.ids.is_empty());
        assert_eq!(ix.total_len, 0);
    }

    #[test]
    fn other_instances_do_not_change_scores() {
        // The engine keeps one index per tenant; this pins down that an index's scores depend
        // only on its own documents, whatever another instance (tenant) receives.
        let tenant_a = index(&[(1, "shared word"), (2, "another doc")]);
        let before = search(&tenant_a, "shared word", 10, |_| true);
        let mut tenant_b = Bm25Index::new();
        for slot in 0..500 {
            tenant_b.insert(slot, "shared shared word word word");
        }
        assert_eq!(search(&tenant_a, "shared word", 10, |_| true), before);
    }

    #[test]
    fn repeated_query_terms_count_once() {
        let ix = index(&[(1, "alpha beta"), (2, "beta")]);
        assert_eq!(
            score_of(&ix, "alpha alpha ALPHA", 1),
            score_of(&ix, "alpha", 1)
        );
    }

    #[test]
    fn invisible_documents_neither_score_nor_weigh() {
        // Slots 1 and 2 are visible; 10.. hold the same word but are invisible.
        let mut ix = index(&[(1, "tea with milk"), (2, "coffee")]);
        let visible: RoaringBitmap = [1, 2].into_iter().collect();
        let before = bits(&ix.query("tea", &visible).search(10, |_| true));
        for slot in 10..200 {
            ix.insert(slot, "tea tea tea and a much longer text about tea");
        }
        let q = ix.query("tea", &visible);
        assert_eq!(bits(&q.search(10, |_| true)), before);
        assert_eq!((q.doc_count(), q.score_of(10)), (2, None));
        // A visible slot without a document is not a document.
        let with_empty: RoaringBitmap = [1, 2, 500].into_iter().collect();
        assert_eq!(
            bits(&ix.query("tea", &with_empty).search(10, |_| true)),
            before
        );
        // A term only invisible documents hold is absent, exactly as in their absence.
        assert!(ix.query("longer", &visible).search(10, |_| true).is_empty());
    }

    /// Texts over a small vocabulary, so that terms repeat across documents.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d", "e"]), 0..8)
            .prop_map(|words| words.join(" "))
    }

    proptest! {
        /// Scores over a visible subset are bit-identical to scores in an index that holds only
        /// that subset, with the invisible documents written before, after or between them.
        #[test]
        fn scores_equal_an_index_of_the_visible_documents_alone(
            docs in prop::collection::vec((text(), any::<bool>()), 0..40),
            query in text(),
            k in 1usize..10,
        ) {
            let mut all = Bm25Index::new();
            let mut alone = Bm25Index::new();
            let mut visible = RoaringBitmap::new();
            for (slot, (text, is_visible)) in docs.iter().enumerate() {
                all.insert(slot as u32, text);
                if *is_visible {
                    visible.insert(slot as u32);
                    alone.insert(slot as u32, text);
                }
            }
            let q = all.query(&query, &visible);
            let want = bits(&alone.query(&query, alone.doc_slots()).search(k, |_| true));
            prop_assert_eq!(bits(&q.search(k, |_| true)), want);
            prop_assert_eq!(q.doc_count(), alone.doc_count() as u64);
            for slot in 0..docs.len() as u32 {
                let expect = alone.query(&query, alone.doc_slots()).score_of(slot);
                prop_assert_eq!(q.score_of(slot).map(f32::to_bits), expect.map(f32::to_bits));
            }
        }
    }
}
