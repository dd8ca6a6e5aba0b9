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

/// Whether `s` holds no text: empty, or only whitespace (Unicode whitespace) and characters
/// that render as nothing ([`is_invisible`]). Content of only those would be embedded and
/// stored like a blank string.
pub(crate) fn is_blank(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
}

/// Unicode's default-ignorable code points (`Default_Ignorable_Code_Point`, Unicode 15):
/// characters a renderer shows as nothing unless it supports them specially: the zero-width
/// space, joiners and marks, the soft hyphen, the Mongolian vowel separator and free variation
/// selectors, the invisible math operators, the Hangul fillers, variation selectors and tags.
/// Listed from the standard's `DerivedCoreProperties.txt`; no crate of ours carries it. With
/// them, the format controls that show nothing on their own: the interlinear annotation marks
/// (U+FFF9 to U+FFFB) and the Egyptian hieroglyph format controls (U+13430 to U+1343F).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{FFF9}'..='\u{FFFB}' | '\u{13430}'..='\u{1343F}' |
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
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
            "{field}: is empty or whitespace only (control characters and invisible ones such as \
             zero-width spaces count as whitespace); {instead}"
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
            // Soft hyphen, Mongolian vowel separator, invisible operators, Hangul filler,
            // variation selector, a tag character.
            "\u{00ad}\u{180e}\u{2061}\u{2064}\u{3164}\u{fe0f}\u{e0041}",
            // Control characters and format controls that show nothing.
            "\u{0}\u{7f}\u{fff9}\u{fffb}\u{13430}",
        ] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for text in [
            "a",
            " a ",
            "\u{3000}x",
            "\u{200b}x\u{200b}",
            "\u{200d}\u{1F600}",
            "co\u{00ad}operate",
            "\u{2764}\u{fe0f}",
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
