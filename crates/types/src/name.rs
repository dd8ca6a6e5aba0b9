//! Validated names: tenant ids, domains, collections, runs, scopes, record ids and user tokens.
//!
//! All of them match `^[a-zA-Z0-9_.-]{1,64}$`; user tokens may also contain `:` (`u:alice`).
//! Because no name can contain a NUL byte or `*`, storage keys may use `\0` as a separator and
//! `*` can mean "every principal" without ambiguity.
//!
//! A name holds its text in an `Arc<str>`: a clone is a reference count, never an allocation.
//! With `String`s, naming each search hit (its id, collection and scope names) cost three
//! allocations and three frees per hit, about 5 % of a 128-d `include: []` search's CPU
//! (docs/benchmarks.md, issue 15). A search names its hits with its own copies of its
//! collection and of the scope names they carry (`unshared`), so that searches on other
//! threads do not write the same reference counts; a hit's id is a clone of the index's.
//! A name is immutable once validated, so sharing it changes nothing a caller can see.
//! Parsing validates the borrowed text and copies it once, into the `Arc`.

use std::fmt;
use std::sync::Arc;

/// A name failed validation. `field` is the request field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidName {
    pub field: &'static str,
    pub reason: String,
}

const MAX_NAME_LEN: usize = 64;

/// Bytes a name's heap allocation holds besides its text: the `Arc`'s two reference counts.
const ARC_COUNTS: usize = 2 * std::mem::size_of::<usize>();

/// The allocator's bookkeeping per heap allocation, as the engine's memory estimates count it.
const PER_ALLOCATION: usize = 16;

fn check(field: &'static str, s: &str, allow_colon: bool) -> Result<(), InvalidName> {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return Err(InvalidName {
            field,
            reason: format!(
                "must be 1 to {MAX_NAME_LEN} characters long, got {}",
                s.len()
            ),
        });
    }
    let allowed = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') || (allow_colon && c == ':')
    };
    if let Some(bad) = s.chars().find(|c| !allowed(*c)) {
        let set = if allow_colon {
            "[a-zA-Z0-9_.:-]"
        } else {
            "[a-zA-Z0-9_.-]"
        };
        return Err(InvalidName {
            field,
            reason: format!("character {bad:?} is not in {set}"),
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, field = $field:literal, colon = $colon:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The request field this name is read from, used in error messages.
            pub const FIELD: &'static str = $field;

            /// Validates `s`, naming [`Self::FIELD`] in the error.
            pub fn parse(s: impl AsRef<str>) -> Result<Self, InvalidName> {
                Self::parse_field(Self::FIELD, s)
            }

            /// Validates `s`, naming `field` in the error. The text is copied once, straight
            /// into the name's `Arc` (an owned `String` would be copied again into it).
            pub fn parse_field(field: &'static str, s: impl AsRef<str>) -> Result<Self, InvalidName> {
                let s = s.as_ref();
                check(field, s, $colon)?;
                Ok(Self(Arc::from(s)))
            }

            /// A copy of this name with its own reference count, for a caller that clones it
            /// many times on one thread while other threads clone the original: their counts
            /// then live on different cache lines.
            pub fn unshared(&self) -> Self {
                Self(Arc::from(&*self.0))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Estimated heap bytes of the one allocation behind this name and its clones:
            /// the text, the `Arc`'s two reference counts and the allocator's header (for
            /// estimates of resident memory; the inline part is the holder's).
            pub fn heap_bytes(&self) -> usize {
                self.0.len() + ARC_COUNTS + PER_ALLOCATION
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;
            fn try_from(s: String) -> Result<Self, InvalidName> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0.as_ref().to_owned()
            }
        }

        // Written as the bare string, without a copy.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        // Read from a borrowed string where the format allows, validated, and copied once
        // into its `Arc` (through a `String` it would be copied twice).
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        check($name::FIELD, s, $colon).map_err(E::custom)?;
                        Ok($name(Arc::from(s)))
                    }
                    // As `String` reads bytes: UTF-8 or an error, then the name's own check.
                    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<$name, E> {
                        match std::str::from_utf8(b) {
                            Ok(s) => self.visit_str(s),
                            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(b), &self)),
                        }
                    }
                }
                d.deserialize_str(Visitor)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

name_type!(
    /// The label of a link between two memories (`next`, `causes`, `about:person`).
    Relation, field = "relation", colon = true
);
name_type!(
    /// A tenant: the hard ownership boundary. Comes only from a credential.
    TenantId, field = "tenant_id", colon = false
);
name_type!(
    /// A memory domain (namespace) inside a tenant.
    Domain, field = "memory_domain", colon = false
);
name_type!(
    /// A collection: a vector space with a fixed dimension and metric.
    CollectionName, field = "collection", colon = false
);
name_type!(
    /// A run (session or task).
    RunId, field = "run_id", colon = false
);
name_type!(
    /// The narrowest local scope, such as one asset or workspace.
    MemoryScope, field = "memory_scope", colon = false
);
name_type!(
    /// A record id: a server UUIDv7 or the client's own id.
    RecordId, field = "id", colon = false
);
name_type!(
    /// The name of an online backup: its directory under the server's backup directory.
    BackupName, field = "name", colon = false
);
name_type!(
    /// A free label such as `episodic` or `semantic`.
    Kind, field = "kind", colon = false
);
name_type!(
    /// A principal inside a tenant, such as `u:alice` or `agent:planner`.
    UserToken, field = "user_tokens", colon = true
);

impl Domain {
    /// The domain used when a request names none.
    pub fn default_domain() -> Self {
        Domain(Arc::from("default"))
    }
}

impl Default for Domain {
    fn default() -> Self {
        Self::default_domain()
    }
}

impl RecordId {
    /// A fresh server-assigned id: a UUIDv7 string, which sorts by creation time. The caller
    /// formats the UUID (hyphenated, so always a valid name) into a stack buffer, and this
    /// copies it once into the name's `Arc`.
    pub fn from_uuid_str(s: &str) -> Self {
        debug_assert!(check(Self::FIELD, s, false).is_ok());
        RecordId(Arc::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_name(input: &str, ok: bool) {
        assert_eq!(Domain::parse(input).is_ok(), ok, "{input:?}");
    }

    #[test]
    fn names_follow_the_pattern() {
        check_name("dialog", true);
        check_name("a.b-c_D9", true);
        check_name(&"x".repeat(64), true);
        check_name(&"x".repeat(65), false);
        check_name("", false);
        check_name("a b", false);
        check_name("a/b", false);
        check_name("u:alice", false);
        check_name("*", false);
        check_name("é", false);
        check_name("a\0b", false);
    }

    #[test]
    fn user_tokens_allow_colon() {
        assert!(UserToken::parse("u:alice").is_ok());
        assert!(UserToken::parse("*").is_err());
    }

    #[test]
    fn error_names_the_field() {
        let err = RunId::parse("bad run").unwrap_err();
        assert_eq!(err.field, "run_id");
        assert!(err.to_string().starts_with("run_id: "));
    }

    #[test]
    fn clones_share_their_text_and_unshared_copies_do_not() {
        let id = RecordId::parse("r-1").unwrap();
        let clone = id.clone();
        assert!(std::ptr::eq(id.as_str(), clone.as_str()));
        let own = id.unshared();
        assert_eq!(own, id);
        assert!(!std::ptr::eq(own.as_str(), id.as_str()));
        assert_eq!(String::from(own), "r-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"r-1\"");
        assert_eq!(format!("{id} {id:?}"), "r-1 \"r-1\"");
        // Hashing and ordering follow the text, as with the `String` it used to hold.
        use std::hash::BuildHasher;
        let h = std::collections::hash_map::RandomState::new();
        assert_eq!(h.hash_one(&id), h.hash_one(RecordId::parse("r-1").unwrap()));
        assert!(RecordId::parse("a").unwrap() < RecordId::parse("b").unwrap());
    }

    #[test]
    fn heap_bytes_count_text_reference_counts_and_allocation() {
        let run = RunId::parse("r".repeat(40)).unwrap();
        assert_eq!(run.heap_bytes(), 40 + 2 * std::mem::size_of::<usize>() + 16);
        // Clones share the one allocation, so each reports the same figure, not a sum.
        assert_eq!(run.clone().heap_bytes(), run.heap_bytes());
    }

    #[test]
    fn parse_takes_any_string_form() {
        let owned = String::from("a-b");
        assert_eq!(Domain::parse(&owned).unwrap().as_str(), "a-b");
        assert_eq!(Domain::parse(owned.as_str()).unwrap().as_str(), "a-b");
        assert_eq!(Domain::parse(owned).unwrap().as_str(), "a-b");
        let err = Domain::parse_field("move_to_domain", "a b").unwrap_err();
        assert_eq!(err.field, "move_to_domain");
    }

    #[test]
    fn bytes_deserialize_as_a_string_does() {
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        use serde::de::value::{BytesDeserializer, Error};
        let ok = Domain::deserialize(BytesDeserializer::<Error>::new(b"support")).unwrap();
        assert_eq!(ok.as_str(), "support");
        let not_utf8 = Domain::deserialize(BytesDeserializer::<Error>::new(b"\xff"));
        let as_string = String::deserialize(BytesDeserializer::<Error>::new(b"\xff"));
        assert_eq!(
            not_utf8.unwrap_err().to_string(),
            as_string.unwrap_err().to_string()
        );
        let bad = RunId::deserialize(BytesDeserializer::<Error>::new(b"no way")).unwrap_err();
        assert!(bad.to_string().starts_with("run_id: "), "{bad}");
        let s: Result<Domain, Error> = Domain::deserialize("x".into_deserializer());
        assert_eq!(s.unwrap().as_str(), "x");
    }

    #[test]
    fn serde_validates() {
        let ok: Result<Domain, _> = serde_json::from_str("\"support\"");
        assert!(ok.is_ok());
        let bad: Result<Domain, _> = serde_json::from_str("\"no way\"");
        assert!(bad.is_err());
        let err = serde_json::from_str::<RunId>("\"no way\"").unwrap_err();
        assert!(err.to_string().starts_with("run_id: "), "{err}");
        assert!(serde_json::from_str::<RunId>("5").is_err());
        // An escaped string is not borrowed from the input, and reads the same.
        let escaped: RunId = serde_json::from_str("\"a\\u002db\"").unwrap();
        assert_eq!(escaped.as_str(), "a-b");
    }

    proptest! {
        #[test]
        fn valid_iff_pattern(s in "\\PC{0,70}") {
            let expected = !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            prop_assert_eq!(TenantId::parse(&s).is_ok(), expected);
        }
    }
}
