//! How an enter threshold (`stress_enter`, `critical_enter`) is written in JSON. `+inf`
//! means "never entered", which JSON numbers cannot say (serde_json writes it as `null`), so
//! it is written as the string `"inf"`: in the API, in the stored policy and in exports.
//! Read: a number, or `"inf"`. The stored form also reads `null` as `+inf`, for rows written
//! before this form existed: `null` was only ever written for `+inf` there (the validation
//! refuses NaN and `-inf`, the other values written as `null`), and only enter thresholds
//! accept it, so a `null` in any other field still does not decode.

use serde::{Deserializer, Serializer, de};

const NEVER: &str = "inf";

struct Threshold {
    legacy_null: bool,
}

impl de::Visitor<'_> for Threshold {
    type Value = f64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number, or \"inf\" (never entered)")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        if v == NEVER {
            Ok(f64::INFINITY)
        } else {
            Err(E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        if self.legacy_null {
            Ok(f64::INFINITY)
        } else {
            Err(E::invalid_type(de::Unexpected::Unit, &self))
        }
    }
    fn visit_none<E: de::Error>(self) -> Result<f64, E> {
        self.visit_unit()
    }
}

/// Writes `+inf` as `"inf"`, any other value as a number.
pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if *v == f64::INFINITY {
        s.serialize_str(NEVER)
    } else {
        s.serialize_f64(*v)
    }
}

/// Reads a number or `"inf"`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(Threshold { legacy_null: false })
}

/// Reads a stored threshold: a number, `"inf"`, or `null` (`+inf`, as written before).
pub(crate) fn deserialize_stored<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(Threshold { legacy_null: true })
}

/// An optional threshold of a partial policy: absent or `null` is "not given".
pub(crate) mod optional {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct Given(#[serde(deserialize_with = "super::deserialize")] f64);
        Ok(Option::<Given>::deserialize(d)?.map(|g| g.0))
    }
}

/// The OpenAPI schema of an enter threshold: a number, or `"inf"`.
pub fn schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([NEVER])),
        )
        .description(Some("A number above 0, or \"inf\": never entered."))
        .build();
    Schema::OneOf(one_of)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct Api(
        #[serde(
            serialize_with = "super::serialize",
            deserialize_with = "super::deserialize"
        )]
        f64,
    );
    #[derive(Debug, Deserialize)]
    struct Stored(#[serde(deserialize_with = "super::deserialize_stored")] f64);

    #[test]
    fn infinity_is_written_and_read_as_inf() {
        assert_eq!(
            serde_json::to_string(&Api(f64::INFINITY)).unwrap(),
            "\"inf\""
        );
        assert_eq!(serde_json::to_string(&Api(2.5)).unwrap(), "2.5");
        for (text, v) in [("\"inf\"", f64::INFINITY), ("4", 4.0), ("0.5", 0.5)] {
            assert_eq!(serde_json::from_str::<Api>(text).unwrap().0, v);
            assert_eq!(serde_json::from_str::<Stored>(text).unwrap().0, v);
        }
        // `null` only in the stored form (rows written before), never in the API.
        assert!(serde_json::from_str::<Api>("null").is_err());
        assert_eq!(
            serde_json::from_str::<Stored>("null").unwrap().0,
            f64::INFINITY
        );
        for bad in ["\"-inf\"", "\"nan\"", "\"Infinity\"", "true"] {
            assert!(serde_json::from_str::<Stored>(bad).is_err(), "{bad}");
        }
    }
}
