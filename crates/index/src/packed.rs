//! Arrays of numbers stored as one run of little-endian bytes.
//!
//! Why: a `Vec<u32>` through serde is a sequence, which postcard writes as one varint per
//! element and reads back element by element; a stored index holds millions of them (every
//! posting's slots, every document's term ids), so a load spent most of its decoding there.
//! As a byte run the whole array is one length and one copy each way. Any serde format
//! takes it: a byte run in postcard, an array of numbers in JSON (the tests' form).

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

/// Writes `values` as one byte run, four little-endian bytes each.
pub fn serialize_u32s<S: Serializer>(values: &[u32], s: S) -> Result<S::Ok, S::Error> {
    #[cfg(target_endian = "little")]
    return s.serialize_bytes(bytemuck::cast_slice(values));
    #[cfg(not(target_endian = "little"))]
    {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        s.serialize_bytes(&bytes)
    }
}

/// Reads what [`serialize_u32s`] wrote; a run whose length is not a multiple of four is an
/// error.
pub fn deserialize_u32s<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    struct U32s;
    impl<'de> Visitor<'de> for U32s {
        type Value = Vec<u32>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte run of little-endian u32s")
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u32>, E> {
            if !v.len().is_multiple_of(4) {
                return Err(E::custom(format!("{} bytes of u32s", v.len())));
            }
            Ok(v.chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<u32>, A::Error> {
            self.visit_bytes(&collect_bytes(seq)?)
        }
    }
    d.deserialize_bytes(U32s)
}

/// Writes `bytes` as one byte run.
pub fn serialize_bytes<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

/// Reads what [`serialize_bytes`] wrote.
pub fn deserialize_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Bytes;
    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte run")
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<u8>, A::Error> {
            collect_bytes(seq)
        }
    }
    d.deserialize_bytes(Bytes)
}

/// A byte run written by a format without one (JSON: an array of numbers).
fn collect_bytes<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<u8>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
    while let Some(b) = seq.next_element::<u8>()? {
        out.push(b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Both {
        #[serde(
            serialize_with = "super::serialize_u32s",
            deserialize_with = "super::deserialize_u32s"
        )]
        numbers: Vec<u32>,
        #[serde(
            serialize_with = "super::serialize_bytes",
            deserialize_with = "super::deserialize_bytes"
        )]
        bytes: Vec<u8>,
    }

    #[test]
    fn round_trips_in_postcard_and_json_and_refuses_a_partial_number() {
        let v = Both {
            numbers: vec![0, 1, 0xdead_beef, u32::MAX],
            bytes: b"ab\xff".to_vec(),
        };
        let p = postcard::to_stdvec(&v).unwrap();
        // One length (16) and 16 bytes, then one length (3) and 3 bytes.
        assert_eq!(p.len(), 1 + 16 + 1 + 3);
        assert_eq!(postcard::from_bytes::<Both>(&p).unwrap(), v);
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(serde_json::from_value::<Both>(j).unwrap(), v);
        let mut short = p.clone();
        short[0] = 15;
        short.remove(16);
        assert!(postcard::from_bytes::<Both>(&short).is_err());
    }
}
