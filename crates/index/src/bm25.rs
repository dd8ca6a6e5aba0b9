//! An in-memory BM25 inverted index keyed by `u32` slot, one per tenant-collection.
//!
//! Scoring is Okapi BM25 with `k1 = 1.2`, `b = 0.75` and Lucene's always-positive IDF
//! `ln(1 + (N - df + 0.5) / (df + 0.5))`. Document frequencies, the document count `N` and
//! the average document length are this index's own: the engine keeps one index per tenant,
//! so one tenant's writes can never change another tenant's scores.
//!
//! A query's terms are de-duplicated (a term repeated in the query counts once) and summed in
//! the order they first appear, so a document's score is the same float whether it comes from
//! [`Bm25Index::search`] or [`Bm25Index::score_of`].

use std::collections::HashMap;

use crate::exact::{Hit, TopK};

/// BM25 term-frequency saturation.
pub const K1: f32 = 1.2;
/// BM25 length normalisation.
pub const B: f32 = 0.75;

/// Splits `text` into lowercase tokens at every non-alphanumeric Unicode character, dropping
/// empty tokens. No stemming and no stop words.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// What the index remembers about one document, so that removal is exact.
#[derive(Debug, Clone)]
struct Doc {
    len: u32,
    /// Distinct terms of the document.
    terms: Vec<String>,
}

/// An in-memory BM25 index. Not internally synchronised: writes take `&mut self`.
#[derive(Debug, Default, Clone)]
pub struct Bm25Index {
    /// term -> (slot -> term frequency).
    postings: HashMap<String, HashMap<u32, u32>>,
    docs: HashMap<u32, Doc>,
    total_len: u64,
}

impl Bm25Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of indexed documents.
    pub fn doc_count(&self) -> usize {
        self.docs.len()
    }

    /// Average document length in tokens (0 when empty).
    pub fn avgdl(&self) -> f32 {
        if self.docs.is_empty() {
            0.0
        } else {
            (self.total_len as f64 / self.docs.len() as f64) as f32
        }
    }

    /// Number of documents containing `term` (already tokenized).
    pub fn doc_freq(&self, term: &str) -> usize {
        self.postings.get(term).map_or(0, HashMap::len)
    }

    /// Whether `slot` is indexed.
    pub fn contains(&self, slot: u32) -> bool {
        self.docs.contains_key(&slot)
    }

    /// Indexes `text` under `slot`, replacing whatever the slot held (upsert).
    pub fn insert(&mut self, slot: u32, text: &str) {
        self.remove(slot);
        let tokens = tokenize(text);
        let mut tf: HashMap<String, u32> = HashMap::new();
        for t in tokens.iter() {
            *tf.entry(t.clone()).or_insert(0) += 1;
        }
        let len = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        let mut terms = Vec::with_capacity(tf.len());
        for (term, count) in tf {
            self.postings
                .entry(term.clone())
                .or_default()
                .insert(slot, count);
            terms.push(term);
        }
        self.total_len += u64::from(len);
        self.docs.insert(slot, Doc { len, terms });
    }

    /// Removes `slot`; returns whether it was indexed.
    pub fn remove(&mut self, slot: u32) -> bool {
        let Some(doc) = self.docs.remove(&slot) else {
            return false;
        };
        self.total_len -= u64::from(doc.len);
        for term in doc.terms {
            if let Some(list) = self.postings.get_mut(&term) {
                list.remove(&slot);
                if list.is_empty() {
                    self.postings.remove(&term);
                }
            }
        }
        true
    }

    /// The query's distinct terms in first-appearance order, with their IDF and postings.
    fn query_terms(&self, query: &str) -> Vec<(f32, &HashMap<u32, u32>)> {
        let mut seen = std::collections::HashSet::new();
        let n = self.docs.len() as f32;
        tokenize(query)
            .into_iter()
            .filter(|t| seen.insert(t.clone()))
            .filter_map(|t| {
                let list = self.postings.get(&t)?;
                let df = list.len() as f32;
                let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                Some((idf, list))
            })
            .collect()
    }

    /// One term's contribution for a document of length `len` with term frequency `tf`.
    fn term_score(&self, idf: f32, tf: u32, len: u32, avgdl: f32) -> f32 {
        let tf = tf as f32;
        let norm = if avgdl > 0.0 { len as f32 / avgdl } else { 0.0 };
        idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * norm))
    }

    /// The best `k` documents for `query` among those for which `predicate` is true, by BM25
    /// score descending, ties by slot ascending. The predicate is applied before ranking, so
    /// a filter never empties the top `k` while matching documents exist. Documents sharing
    /// no term with the query are not returned.
    pub fn search(&self, query: &str, k: usize, predicate: impl Fn(u32) -> bool) -> Vec<Hit> {
        if k == 0 {
            return Vec::new();
        }
        let terms = self.query_terms(query);
        let avgdl = self.avgdl();
        let mut scores: HashMap<u32, f32> = HashMap::new();
        let mut rejected: std::collections::HashSet<u32> = std::collections::HashSet::new();
        for (idf, list) in &terms {
            for (&slot, &tf) in list.iter() {
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
                let len = self.docs.get(&slot).map_or(0, |d| d.len);
                *entry += self.term_score(*idf, tf, len, avgdl);
            }
        }
        let mut top = TopK::new(k);
        for (slot, score) in scores {
            top.push(Hit { slot, score });
        }
        top.into_sorted()
    }

    /// The score `slot` would get for `query` in [`Self::search`] (for explanations), or
    /// `None` if the slot is not indexed or shares no term with the query.
    pub fn score_of(&self, query: &str, slot: u32) -> Option<f32> {
        let doc = self.docs.get(&slot)?;
        let avgdl = self.avgdl();
        let mut score = None;
        for (idf, list) in self.query_terms(query) {
            if let Some(&tf) = list.get(&slot) {
                *score.get_or_insert(0.0) += self.term_score(idf, tf, doc.len, avgdl);
            }
        }
        score
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn ranks_by_bm25() {
        let ix = index(&[
            (1, "the cat sat"),
            (2, "the dog sat on the cat"),
            (3, "dogs and birds"),
        ]);
        let hits = ix.search("cat", 10, |_| true);
        // Both contain "cat" once; the shorter document wins through length normalisation.
        assert_eq!(slots(&hits), vec![1, 2]);
        assert!(hits[0].score > hits[1].score);
        assert!(ix.search("unicorn", 10, |_| true).is_empty());
        assert!(ix.search("cat", 0, |_| true).is_empty());
    }

    #[test]
    fn rare_terms_weigh_more() {
        let ix = index(&[
            (1, "common rare"),
            (2, "common"),
            (3, "common"),
            (4, "common"),
        ]);
        let idf_rare = ix.score_of("rare", 1).expect("scored");
        let idf_common = ix.score_of("common", 1).expect("scored");
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
        assert_eq!(slots(&ix.search("same", 2, |_| true)), vec![3, 5]);
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
        let hits = ix.search("apple", 5, |s| s >= 90);
        assert_eq!(slots(&hits), vec![90, 91, 92, 93, 94]);
    }

    #[test]
    fn search_and_score_of_agree() {
        let ix = index(&[(1, "a b c a"), (2, "b c d"), (3, "c d e f g")]);
        for hit in ix.search("a c d c", 10, |_| true) {
            assert_eq!(ix.score_of("a c d c", hit.slot), Some(hit.score));
        }
        assert_eq!(ix.score_of("zzz", 1), None);
        assert_eq!(ix.score_of("a", 42), None);
    }

    #[test]
    fn upsert_replaces_old_postings() {
        let mut ix = index(&[(1, "old words here"), (2, "other")]);
        ix.insert(1, "new");
        assert_eq!(ix.doc_count(), 2);
        assert!(ix.search("old", 10, |_| true).is_empty());
        assert_eq!(ix.doc_freq("old"), 0);
        assert_eq!(slots(&ix.search("new", 10, |_| true)), vec![1]);
        assert_eq!(ix.avgdl(), 1.0);
    }

    #[test]
    fn remove_updates_stats() {
        let mut ix = index(&[(1, "x y"), (2, "x"), (3, "y y y y")]);
        let before = ix.score_of("x", 2).expect("scored");
        assert!(ix.remove(1));
        assert!(!ix.remove(1));
        assert_eq!(ix.doc_count(), 2);
        assert_eq!(ix.doc_freq("x"), 1);
        assert_eq!(ix.avgdl(), 2.5);
        // x became rarer, so slot 2's score for it rises.
        assert!(ix.score_of("x", 2).expect("scored") > before);
        ix.remove(2);
        ix.remove(3);
        assert_eq!((ix.doc_count(), ix.avgdl()), (0, 0.0));
        assert!(ix.postings.is_empty());
    }

    #[test]
    fn other_instances_do_not_change_scores() {
        // The engine keeps one index per tenant; this pins down that an index's scores depend
        // only on its own documents, whatever another instance (tenant) receives.
        let tenant_a = index(&[(1, "shared word"), (2, "another doc")]);
        let before = tenant_a.search("shared word", 10, |_| true);
        let mut tenant_b = Bm25Index::new();
        for slot in 0..500 {
            tenant_b.insert(slot, "shared shared word word word");
        }
        assert_eq!(tenant_a.search("shared word", 10, |_| true), before);
    }

    #[test]
    fn repeated_query_terms_count_once() {
        let ix = index(&[(1, "alpha beta"), (2, "beta")]);
        assert_eq!(ix.score_of("alpha alpha ALPHA", 1), ix.score_of("alpha", 1));
    }
}
