//! JSON read with every object's keys unique.
//!
//! `serde_json` keeps the last of a repeated key, while many proxies, firewalls and other
//! parsers keep the first: `{"user_tokens":["u:alice"],"user_tokens":[]}` would pass a filter
//! that reads Alice's token and then write a tenant-shared record here. A body that says two
//! things is refused rather than guessed at, so a repeated key, in any object at any depth, is
//! an error naming the key. The check happens while the value is built, in the one parse.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Longest key quoted back in the error (a key can be as long as the body).
const MAX_QUOTED_KEY: usize = 64;

/// A JSON value whose objects, at every depth, have no repeated key.
pub(crate) struct UniqueKeys(pub Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let unbounded = Bounds::new(usize::MAX, usize::MAX, usize::MAX, usize::MAX);
        d.deserialize_any(ValueVisitor { bounds: &unbounded })
            .map(UniqueKeys)
    }
}

/// What one parse may build: keys per object, and values in all (every scalar, array and
/// object counts one, keys do not). Counted as the values are read, so a body past either
/// bound is refused at a fraction of its parse.
struct Bounds {
    max_keys: usize,
    max_values: usize,
    values: Cell<usize>,
    /// Most elements of one array.
    max_items: usize,
    /// Most bytes of memory the parsed value may take, as [`Bounds::charge`] estimates them.
    max_bytes: usize,
    bytes: Cell<usize>,
}

/// What a parsed value takes beside its own slot: a key's `String` and text, and a map node
/// (`BTreeMap` holds up to 11 entries of a 24-byte key and a 32-byte value in a node of about
/// 650 bytes, allocated for an object's first key and about every 11th after it). A body of
/// many small objects took over 200 bytes of memory per byte of text: 16 MiB of `{"a":0},`
/// parsed to about 1.3 GB, and a batch of 5.6 million empty records grew the server by 4 GB
/// before its batch size was checked.
const KEY_BYTES: usize = std::mem::size_of::<String>();
const MAP_NODE_BYTES: usize = 656;
const ENTRIES_PER_NODE: usize = 11;

impl Bounds {
    fn new(max_keys: usize, max_values: usize, max_items: usize, max_bytes: usize) -> Self {
        Bounds {
            max_keys,
            max_values,
            values: Cell::new(0),
            max_items,
            max_bytes,
            bytes: Cell::new(0),
        }
    }

    /// Counts `n` more bytes of the parsed value's memory, or fails past `max_bytes`.
    fn charge<E: de::Error>(&self, n: usize) -> Result<(), E> {
        let total = self.bytes.get().saturating_add(n);
        if total > self.max_bytes {
            return Err(E::custom(format_args!(
                "{MEMORY_REFUSAL} {} MiB of memory to parse (a great many small objects or \
                 strings); send fewer records or smaller metadata per request",
                self.max_bytes >> 20
            )));
        }
        self.bytes.set(total);
        Ok(())
    }

    /// Counts one more value, or fails past `max_values`.
    fn count_one<E: de::Error>(&self) -> Result<(), E> {
        let n = self.values.get() + 1;
        if n > self.max_values {
            return Err(E::custom(format_args!(
                "{VALUES_REFUSAL} {} values",
                self.max_values
            )));
        }
        self.values.set(n);
        Ok(())
    }
}

/// How the refusal of a body of too many values starts (the bound follows it).
pub(crate) const VALUES_REFUSAL: &str = "the body has more than";

/// How the refusal of a body whose parse would take too much memory starts.
pub(crate) const MEMORY_REFUSAL: &str = "the body would take more than";

/// Builds a [`Value`] as `serde_json`'s own visitor does, except that a repeated key fails, and
/// so does an object of more than `max_keys` keys (as soon as its next key is read) or a value
/// past `max_values`.
#[derive(Clone, Copy)]
struct ValueVisitor<'a> {
    bounds: &'a Bounds,
}

impl<'de> de::DeserializeSeed<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.bounds.count_one()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.bounds.count_one()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.bounds.count_one()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.bounds.count_one()?;
        // JSON text has no NaN or infinity; this is what `serde_json` does with them too.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.bounds.count_one()?;
        self.bounds.charge(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.bounds.count_one()?;
        self.bounds.charge(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.bounds.count_one()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.bounds.count_one()?;
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.bounds.count_one()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(self)? {
            if items.len() == self.bounds.max_items {
                return Err(de::Error::custom(format_args!(
                    "an array has more than {} elements, the most any request has a use for",
                    self.bounds.max_items
                )));
            }
            // Each element's slot (the array's room to grow is in the budget's margin).
            self.bounds.charge(std::mem::size_of::<Value>())?;
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        self.bounds.count_one()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                let quoted: String = key.chars().take(MAX_QUOTED_KEY).collect();
                return Err(de::Error::custom(format_args!("duplicate key `{quoted}`")));
            }
            if map.len() == self.bounds.max_keys {
                return Err(de::Error::custom(format_args!(
                    "an object has more than {} keys",
                    self.bounds.max_keys
                )));
            }
            let node = if map.len().is_multiple_of(ENTRIES_PER_NODE) {
                MAP_NODE_BYTES
            } else {
                0
            };
            self.bounds.charge(KEY_BYTES + key.len() + node)?;
            let value = access.next_value_seed(self)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// Parses JSON text with unique keys; the error is `serde_json`'s, with its line and column.
pub(crate) fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<UniqueKeys>(bytes).map(|UniqueKeys(v)| v)
}

/// [`from_slice`] for a request body: an object of more than `max_keys` keys fails as soon as
/// its next key is read, and a body of more than `max_values` values (`Bounds`) as soon as its
/// value too many is, so a body of one huge object, or of a great many values, is refused at a
/// fraction of its parse.
#[cfg(test)]
pub(crate) fn from_slice_bounded(
    bytes: &[u8],
    max_keys: usize,
    max_values: usize,
) -> Result<Value, serde_json::Error> {
    from_slice_within(bytes, max_keys, max_values, usize::MAX, usize::MAX)
}

/// [`from_slice_bounded`], and an array of more than `max_items` elements fails as soon as
/// its element too many is read, and so does a body whose parse would take more than
/// `max_bytes` of memory as `Bounds::charge` estimates it: many small objects take far more
/// per byte of text than values do.
pub(crate) fn from_slice_within(
    bytes: &[u8],
    max_keys: usize,
    max_values: usize,
    max_items: usize,
    max_bytes: usize,
) -> Result<Value, serde_json::Error> {
    let bounds = Bounds::new(max_keys, max_values, max_items, max_bytes);
    let mut d = serde_json::Deserializer::from_slice(bytes);
    let value = de::DeserializeSeed::deserialize(ValueVisitor { bounds: &bounds }, &mut d)?;
    d.end()?;
    Ok(value)
}

/// Whether `e` is the refusal of an array of too many elements, or of a body whose parse would
/// take too much memory.
pub(crate) fn is_too_large_a_parse(e: &serde_json::Error) -> bool {
    let m = e.to_string();
    m.starts_with(MEMORY_REFUSAL) || m.starts_with("an array has more than")
}

/// Whether `e` is the refusal of a body of too many values.
pub(crate) fn is_too_many_values(e: &serde_json::Error) -> bool {
    e.to_string().starts_with(VALUES_REFUSAL)
}

/// Whether `e` is the refusal of a repeated key (any key).
pub(crate) fn is_repeated_key(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("duplicate key `")
}

/// Every string value of `key`, at any depth and with its repeats. A body that repeats
/// `tenant_id` is refused, but a copy naming another tenant must make that refusal the security
/// event it is, whichever copy a parser would have kept.
pub(crate) fn every_string_of(bytes: &[u8], key: &str) -> Vec<String> {
    let mut found = Vec::new();
    let seed = Collect {
        key,
        found: &mut found,
        take: false,
    };
    // Text that does not parse has no tenant to check; its error is reported elsewhere.
    let _ =
        de::DeserializeSeed::deserialize(seed, &mut serde_json::Deserializer::from_slice(bytes));
    found
}

/// Walks a JSON value, keeping the strings found under `key`, every copy of it.
struct Collect<'a> {
    key: &'a str,
    found: &'a mut Vec<String>,
    /// Whether the value walked is `key`'s.
    take: bool,
}

impl<'de> de::DeserializeSeed<'de> for Collect<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Collect<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if self.take {
            self.found.push(v.to_owned());
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (key, found) = (self.key, self.found);
        while seq
            .next_element_seed(Collect {
                key,
                found: &mut *found,
                take: false,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let (key, found) = (self.key, self.found);
        while let Some(k) = access.next_key::<String>()? {
            access.next_value_seed(Collect {
                key,
                found: &mut *found,
                take: k == key,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_at_any_depth_is_refused_and_named() {
        for (text, key) in [
            (
                r#"{"content":"x","user_tokens":["u:a"],"user_tokens":[]}"#,
                "user_tokens",
            ),
            (r#"{"records":[{"a":1},{"b":1,"b":2}]}"#, "b"),
            (r#"{"m":{"k":{"deep":1,"deep":1}}}"#, "deep"),
            // Keys are compared after unescaping, as every parser reads them.
            (r#"{"ab":1,"a\u0062":2}"#, "ab"),
        ] {
            let e = from_slice(text.as_bytes()).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("duplicate key `{key}`")),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn values_read_exactly_as_serde_json_reads_them() {
        let text = br#"{"s":"\u00e9\n","i":-7,"u":18446744073709551615,"f":1.5e-7,
            "n":null,"b":[true,false,[],{}],"same":{"x":1},"other":{"x":2}}"#;
        let ours = from_slice(text).unwrap();
        let theirs: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(ours, theirs);
        assert!(from_slice(b"{\"a\":").is_err());
        assert!(from_slice(b"[1,2]").unwrap().is_array());
    }

    #[test]
    fn every_copy_of_a_repeated_key_is_found_at_any_depth() {
        let text = br#"{"tenant_id":"a","x":{"tenant_id":"b","tenant_id":7},
            "records":[{"tenant_id":"c"}],"tenant_id":"d","other":"e"}"#;
        let e = from_slice(text).unwrap_err();
        assert!(is_repeated_key(&e), "{e}");
        assert!(!is_repeated_key(&from_slice(b"{\"a\":").unwrap_err()));
        assert_eq!(every_string_of(text, "tenant_id"), ["a", "b", "c", "d"]);
        assert!(every_string_of(b"{\"tenant_id\":", "tenant_id").is_empty());
    }

    #[test]
    fn an_object_past_the_bound_of_keys_is_refused_at_any_depth() {
        let object = |n: usize| {
            let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\":1")).collect();
            format!("{{{}}}", keys.join(","))
        };
        assert!(from_slice_bounded(object(4).as_bytes(), 4, usize::MAX).is_ok());
        let e = from_slice_bounded(object(5).as_bytes(), 4, usize::MAX).unwrap_err();
        assert!(
            e.to_string().starts_with("an object has more than 4 keys"),
            "{e}"
        );
        let nested = format!("{{\"a\":[{}]}}", object(5));
        assert!(from_slice_bounded(nested.as_bytes(), 4, usize::MAX).is_err());
        // Trailing text is refused as by `from_slice`; the unbounded reader takes any object.
        assert!(from_slice_bounded(b"{} x", 4, usize::MAX).is_err());
        assert!(from_slice(object(5).as_bytes()).is_ok());
        assert_eq!(
            from_slice_bounded(br#"{"a":{"b":[1,{"c":null}]}}"#, 4, usize::MAX).unwrap(),
            from_slice(br#"{"a":{"b":[1,{"c":null}]}}"#).unwrap()
        );
    }

    #[test]
    fn a_body_past_the_bound_of_values_is_refused() {
        // Six values: the object, the array, its three numbers and the string.
        let text = br#"{"a":[1,2,3],"b":"x"}"#;
        assert!(from_slice_bounded(text, 8, 6).is_ok());
        let e = from_slice_bounded(text, 8, 5).unwrap_err();
        assert!(is_too_many_values(&e), "{e}");
        assert!(
            e.to_string().starts_with("the body has more than 5 values"),
            "{e}"
        );
        assert!(!is_too_many_values(
            &from_slice_bounded(text, 1, 6).unwrap_err()
        ));
        // Nulls and empty containers count too: each is a value the parse builds.
        assert!(from_slice_bounded(br#"[null,[],{}]"#, 8, 3).is_err());
        assert!(from_slice_bounded(br#"[null,[],{}]"#, 8, 4).is_ok());
    }

    #[test]
    fn nesting_stays_bounded_by_the_parser() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(from_slice(deep.as_bytes()).is_err());
    }
}
