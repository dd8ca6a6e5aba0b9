//! Text analysis for BM25: how a collection's text and queries become terms.
//!
//! The same analyzer turns documents and queries into terms, so a query matches what a
//! collection stored only when both were analysed alike; it is fixed per collection.

use std::sync::OnceLock;

use rust_stemmers::{Algorithm, Stemmer};

/// How text becomes BM25 terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Analyzer {
    /// Lowercased runs of Unicode letters and digits; no stop words, no stemming. What every
    /// collection used before analyzers existed, so their scores are unchanged.
    #[default]
    Standard,
    /// `Standard`, then English stop words dropped and Snowball (Porter 2) stemming: "drinks",
    /// "drinking" and "drink" meet.
    English,
    /// Whitespace-separated tokens exactly as written (case kept): for ids and codes.
    None,
}

/// Lucene's English stop words: function words that match almost every document.
const ENGLISH_STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

fn english_stemmer() -> &'static Stemmer {
    static STEMMER: OnceLock<Stemmer> = OnceLock::new();
    STEMMER.get_or_init(|| Stemmer::create(Algorithm::English))
}

impl Analyzer {
    /// The terms of `text`, in order, repeats kept (they are term frequencies).
    pub fn terms(self, text: &str) -> Vec<String> {
        match self {
            Analyzer::Standard => standard(text).collect(),
            Analyzer::English => standard(text)
                .filter(|t| !ENGLISH_STOP_WORDS.contains(&t.as_str()))
                .map(|t| english_stemmer().stem(&t).into_owned())
                .collect(),
            Analyzer::None => text.split_whitespace().map(str::to_owned).collect(),
        }
    }
}

fn standard(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_drops_stop_words_and_stems() {
        assert_eq!(
            Analyzer::English.terms("The cats are drinking milk, and it drinks"),
            ["cat", "drink", "milk", "drink"]
        );
        assert_eq!(Analyzer::English.terms("the and of"), Vec::<String>::new());
    }

    #[test]
    fn english_handles_unicode() {
        // Lowercasing is Unicode-aware before stemming; non-Latin words pass through whole.
        assert_eq!(
            Analyzer::English.terms("ÉTÉ Straße 東京タワー running"),
            ["été", "straße", "東京タワー", "run"]
        );
    }

    #[test]
    fn standard_keeps_every_word_unstemmed() {
        assert_eq!(
            Analyzer::Standard.terms("The cats, DRINKING!"),
            ["the", "cats", "drinking"]
        );
    }

    #[test]
    fn none_keeps_tokens_as_written() {
        assert_eq!(
            Analyzer::None.terms("SKU-42 sku-42  The"),
            ["SKU-42", "sku-42", "The"]
        );
    }
}
