//! Text fields that must hold text: a record's `content` and a search's `query`.
//!
//! An empty or whitespace-only string carries nothing to match, yet it would be embedded like
//! any other (every blank string gets the same vector, which then ranks high for unrelated
//! queries) or searched for (matching nothing by text). So it is refused where a request is
//! parsed; a record without text leaves `content` out instead. Stored records, and the
//! records of an import (an export of records stored before this rule), are not requests:
//! they keep whatever content they have.

use serde::Deserialize;

/// Characters that can forge or hide text where a label is shown (log lines, audit rows, a
/// dashboard): control characters, line and paragraph separators, zero-width and
/// bidirectional formatting characters, the byte-order mark. Refused in a JWT's subject and in
/// a tenant's display name.
pub fn forges_text(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{2028}' | '\u{2029}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Whether `s` holds no text: empty, or only whitespace (Unicode whitespace) and invisible
/// characters that Rust does not count as whitespace: the zero-width space, non-joiner and
/// joiner (U+200B to U+200D), the word joiner (U+2060) and the byte-order mark (U+FEFF).
/// Content of only those would be embedded and stored like a blank string.
pub(crate) fn is_blank(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_whitespace() || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
    })
}

/// Reads an optional string field named `field`, refusing a blank one. `null` reads as absent.
fn non_blank<'de, D: serde::Deserializer<'de>>(
    d: D,
    field: &str,
    instead: &str,
) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    match s {
        Some(s) if is_blank(&s) => Err(serde::de::Error::custom(format!(
            "{field}: is empty or whitespace only (zero-width characters count as whitespace); \
             {instead}"
        ))),
        s => Ok(s),
    }
}

/// `content` of a record write or patch.
pub(crate) fn content<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    non_blank(d, "content", "leave content out for a record without text")
}

/// `content` of a patch: as a write's, and `null` is refused, since a record's text cannot be
/// cleared (the record would be a vector alone, or nothing).
pub(crate) fn patch_content<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    match content(d)? {
        None => Err(crate::record::null_clears_nothing()),
        s => Ok(s),
    }
}

/// `query` of a search or recall.
pub(crate) fn query<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    non_blank(
        d,
        "query",
        "give words to search for, or search by vector alone",
    )
}

/// `query` of a feedback: the context it was given in.
pub(crate) fn feedback_query<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    non_blank(d, "query", "give the context's words, or leave query out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_empty_or_whitespace_only() {
        for blank in [
            "",
            " ",
            "   ",
            "\t\n",
            "\u{3000}",
            "\u{200b}\u{200b}\u{200b}",
            " \u{200c}\u{200d}\u{2060}\u{feff}\n",
        ] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for text in [
            "a",
            " a ",
            "\u{3000}x",
            "\u{200b}x\u{200b}",
            "\u{200d}\u{1F600}",
        ] {
            assert!(!is_blank(text), "{text:?}");
        }
    }

    #[test]
    fn a_blank_feedback_context_is_refused_naming_query() {
        let err = serde_json::from_str::<crate::FeedbackRequest>(r#"{"query": " "}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("query:"), "{err}");
        let ok: crate::FeedbackRequest = serde_json::from_str(r#"{"ids": ["a"]}"#).unwrap();
        assert_eq!(ok.query, None);
    }
}
