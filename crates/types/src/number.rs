//! [`Num`]: a JSON number compared exactly, for filters and the field index alike.
//!
//! Comparing JSON numbers as `f64` makes every integer beyond ±2^53 equal to its neighbours
//! (`9007199254740993` rounds to `9007199254740992`), so a filter on a 64-bit id, such as a
//! message id from a chat platform, would match records of other ids. Here integers stay
//! integers and compare with floats by value: `1` equals `1.0`, `-0.0` equals `0`, and
//! `2^53 + 1` is greater than the float `2^53`.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

/// 2^63 and 2^64: the ends of `i64` and `u64` as floats (both exact).
const TWO_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_64: f64 = 18_446_744_073_709_551_616.0;

/// A JSON number in a canonical form: every integral value within `i64` is an `Int` (whether
/// it was written `3` or `3.0`), every integral value above `i64::MAX` up to `u64::MAX` a
/// `UInt`, every other value a `Float` (a value with a fraction, or a float beyond the two
/// integer types). So two numbers are equal exactly when their forms are, and the order is the
/// numbers' exact order. JSON has no NaN or infinity; neither is a `Num`. Sixteen bytes, as
/// the field index holds one per numeric value.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Num {
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl Num {
    /// The number `n` holds, exactly for every integer JSON can carry (`i64` and `u64`).
    pub fn of(n: &serde_json::Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            return Some(Num::Int(i));
        }
        if let Some(u) = n.as_u64() {
            return Some(Num::UInt(u));
        }
        n.as_f64().and_then(Num::from_f64)
    }

    /// The number of a JSON value, if it is one.
    pub fn of_value(v: &serde_json::Value) -> Option<Num> {
        match v {
            serde_json::Value::Number(n) => Num::of(n),
            _ => None,
        }
    }

    /// `x` in canonical form; `None` for NaN and infinities.
    pub fn from_f64(x: f64) -> Option<Num> {
        if !x.is_finite() {
            return None;
        }
        // Exact conversions: an integral float in range is an integer the type holds (`-0.0`
        // is 0).
        Some(if x.fract() != 0.0 {
            Num::Float(x)
        } else if (-TWO_63..TWO_63).contains(&x) {
            Num::Int(x as i64)
        } else if (TWO_63..TWO_64).contains(&x) {
            Num::UInt(x as u64)
        } else {
            Num::Float(x)
        })
    }

    /// The `f64` equal to this number, if there is one (every `Float`; an integer up to 2^53
    /// and the larger ones `f64` happens to hold).
    pub fn exact_f64(self) -> Option<f64> {
        match self {
            Num::Float(x) => Some(x),
            Num::Int(i) => {
                let x = i as f64;
                // `x` may round to 2^63, past `i64`: compare as i128 (both hold every value).
                (x as i128 == i128::from(i)).then_some(x)
            }
            Num::UInt(u) => {
                let x = u as f64;
                (x as i128 == i128::from(u)).then_some(x)
            }
        }
    }

    /// The `f64` nearest to this number.
    pub fn nearest_f64(self) -> f64 {
        match self {
            Num::Float(x) => x,
            Num::Int(i) => i as f64,
            Num::UInt(u) => u as f64,
        }
    }

    /// Whether the form is canonical (what [`Num::of`] and [`Num::from_f64`] give).
    fn is_canonical(self) -> bool {
        match self {
            Num::Int(_) => true,
            Num::UInt(u) => u > i64::MAX as u64,
            Num::Float(x) => x.is_finite() && matches!(Num::from_f64(x), Some(Num::Float(_))),
        }
    }

    /// An integer's value, wide enough for both integer forms.
    fn wide(self) -> Option<i128> {
        match self {
            Num::Int(i) => Some(i.into()),
            Num::UInt(u) => Some(u.into()),
            Num::Float(_) => None,
        }
    }
}

/// `i` against `x`, where `x` is a canonical `Float`: a value with a fraction (so never equal
/// to an integer) or beyond both integer types.
fn int_vs_float(i: i128, x: f64) -> Ordering {
    if x >= TWO_64 {
        Ordering::Less
    } else if x < -TWO_63 {
        Ordering::Greater
    } else if i <= x.floor() as i128 {
        // x has a fraction: x > floor(x) >= i.
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.wide(), other.wide(), *self, *other) {
            (Some(a), Some(b), ..) => a.cmp(&b),
            (Some(a), None, _, Num::Float(b)) => int_vs_float(a, b),
            (None, Some(b), Num::Float(a), _) => int_vs_float(b, a).reverse(),
            (.., Num::Float(a), Num::Float(b)) => a.total_cmp(&b),
            _ => unreachable!("every form is an integer or a float"),
        }
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Num {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Num {}

impl Hash for Num {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Canonical forms: equal numbers have equal forms, so hashing the form agrees with Eq.
        match *self {
            Num::Int(i) => (0u8, i).hash(state),
            Num::UInt(u) => (1u8, u).hash(state),
            Num::Float(x) => (2u8, x.to_bits()).hash(state),
        }
    }
}

/// Decoded closed: a stored form that is not canonical (an integral `Float`, a NaN) is an
/// error, since it would compare unequal to the same number in canonical form.
impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        enum Stored {
            Int(i64),
            UInt(u64),
            Float(f64),
        }
        let n = match Stored::deserialize(d)? {
            Stored::Int(i) => Num::Int(i),
            Stored::UInt(u) => Num::UInt(u),
            Stored::Float(x) => Num::Float(x),
        };
        if !n.is_canonical() {
            return Err(serde::de::Error::custom(format!(
                "number {n:?} is not in canonical form"
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn num(v: serde_json::Value) -> Num {
        Num::of_value(&v).unwrap()
    }

    #[test]
    fn integers_past_2_pow_53_stay_apart() {
        let a = num(json!(9_007_199_254_740_992u64));
        let b = num(json!(9_007_199_254_740_993u64));
        assert_ne!(a, b);
        assert!(a < b);
        // The float 2^53 is the integer 2^53, and below 2^53 + 1.
        assert_eq!(num(json!(9_007_199_254_740_992.0)), a);
        assert!(num(json!(9_007_199_254_740_992.0)) < b);
        assert!(num(json!(u64::MAX)) > num(json!(i64::MAX)));
        assert!(num(json!(i64::MIN)) < num(json!(-9.2e18)));
    }

    #[test]
    fn one_and_one_point_zero_are_one_number_and_so_are_the_zeros() {
        assert_eq!(num(json!(1)), num(json!(1.0)));
        assert_eq!(num(json!(-0.0)), num(json!(0)));
        assert!(num(json!(1.5)) > num(json!(1)) && num(json!(1.5)) < num(json!(2)));
        assert!(num(json!(-1.5)) < num(json!(-1)) && num(json!(-1.5)) > num(json!(-2)));
        assert!(num(json!(1e300)) > num(json!(u64::MAX)));
        assert!(num(json!(-1e300)) < num(json!(i64::MIN)));
        assert!(Num::from_f64(f64::NAN).is_none());
    }

    #[test]
    fn a_num_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Num>(), 16);
    }

    #[test]
    fn the_forms_meet_at_the_ends_of_the_integer_types() {
        assert_eq!(Num::from_f64(TWO_63), Some(Num::UInt(1 << 63)));
        assert_eq!(Num::from_f64(-TWO_63), Some(Num::Int(i64::MIN)));
        assert_eq!(Num::from_f64(TWO_64), Some(Num::Float(TWO_64)));
        assert!(Num::Float(TWO_64) > Num::UInt(u64::MAX));
        assert!(Num::Float(-TWO_63 - 4096.0) < Num::Int(i64::MIN));
        assert!(Num::UInt(1 << 63) > Num::Int(i64::MAX));
        assert_eq!(Num::Int(i64::MAX).exact_f64(), None);
        assert_eq!(Num::UInt(u64::MAX).exact_f64(), None);
    }

    #[test]
    fn exact_f64_is_only_for_numbers_f64_holds() {
        assert_eq!(num(json!(3)).exact_f64(), Some(3.0));
        assert_eq!(num(json!(0.25)).exact_f64(), Some(0.25));
        assert_eq!(num(json!(9_007_199_254_740_993u64)).exact_f64(), None);
        assert_eq!(
            num(json!(9_007_199_254_740_994u64)).exact_f64(),
            Some(9_007_199_254_740_994.0)
        );
    }

    #[test]
    fn a_stored_number_decodes_closed() {
        let ok: Num = serde_json::from_value(json!({"Int": 5})).unwrap();
        assert_eq!(ok, Num::Int(5));
        let ok: Num = serde_json::from_value(json!({"Float": 0.5})).unwrap();
        assert_eq!(ok, Num::Float(0.5));
        assert!(serde_json::from_value::<Num>(json!({"Float": 2.0})).is_err());
        assert!(serde_json::from_value::<Num>(json!({"UInt": 5})).is_err());
        assert_eq!(
            serde_json::from_value::<Num>(json!({"UInt": u64::MAX})).unwrap(),
            Num::UInt(u64::MAX)
        );
    }

    fn any_num() -> impl Strategy<Value = Num> {
        prop_oneof![
            any::<i64>().prop_map(Num::Int),
            any::<u64>().prop_map(|u| Num::of(&u.into()).unwrap()),
            (-(1i64 << 54)..(1i64 << 54)).prop_map(Num::Int),
            // Floats around the ends of the integer types.
            (-4i32..4).prop_map(|d| Num::from_f64(TWO_63 + f64::from(d) * 2048.0).unwrap()),
            (-4i32..4).prop_map(|d| Num::from_f64(TWO_64 + f64::from(d) * 4096.0).unwrap()),
            (-4i32..4).prop_map(|d| Num::from_f64(-TWO_63 + f64::from(d) * 2048.0).unwrap()),
            any::<f64>().prop_filter_map("finite", Num::from_f64),
            (-100i32..100, 0u8..4)
                .prop_map(|(i, q)| Num::from_f64(i as f64 + q as f64 / 4.0).unwrap()),
        ]
    }

    /// `total_cmp`'s key of a float: its bits with the magnitude flipped for negatives.
    fn total_key(x: f64) -> i64 {
        let bits = x.to_bits() as i64;
        bits ^ ((((bits >> 63) as u64) >> 1) as i64)
    }

    /// The model the order is checked against: (side, integer part, fraction, the float's own
    /// order). `side` puts floats beyond ±2^127 below (-1) or above (1) every other number.
    /// A float's fraction `x - floor(x)` may round (towards 1.0 for tiny negatives), but
    /// rounding keeps the order among floats of one integer part, and never makes a float
    /// equal to an integer, whose fraction is 0 and whose integer part differs; ties between
    /// floats fall to their own order.
    fn model(n: Num) -> (i8, i128, u64, i64) {
        // 2^127: past it a float's integer part does not fit the model's i128.
        const I128_EDGE: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
        match n {
            Num::Int(i) => (0, i.into(), 0, 0),
            Num::UInt(u) => (0, u.into(), 0, 0),
            Num::Float(x) if x.abs() >= I128_EDGE => {
                (if x > 0.0 { 1 } else { -1 }, 0, 0, total_key(x))
            }
            Num::Float(x) => {
                let fl = x.floor();
                (0, fl as i128, (x - fl).to_bits(), total_key(x))
            }
        }
    }

    proptest! {
        #[test]
        fn the_order_is_the_exact_order(a in any_num(), b in any_num()) {
            prop_assert_eq!(a.cmp(&b), model(a).cmp(&model(b)));
            prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
            if a == b {
                let h = |n: Num| {
                    use std::collections::hash_map::DefaultHasher;
                    let mut s = DefaultHasher::new();
                    n.hash(&mut s);
                    s.finish()
                };
                prop_assert_eq!(h(a), h(b));
            }
        }
    }
}
