//! Reading the views' JSON, and writing it again the way Go's `encoding/json` does (with
//! [`lainlet_gojson`]).

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::error::MapError;

/// Parses `json` as `T`, naming `view` in the error.
pub(crate) fn parse<T: DeserializeOwned>(view: &'static str, json: &[u8]) -> Result<T, MapError> {
    serde_json::from_slice(json).map_err(|source| MapError::Json { view, source })
}

/// A Go `int` (64 bits) as the views render it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct GoInt(pub i64);

impl GoInt {
    /// Go's `int32(x)`: two's-complement truncation to the low 32 bits (`2^31 + 5` becomes
    /// `-2^31 + 5`), which is how the original filled every `int32` field from an `int`.
    pub(crate) fn to_int32(self) -> i32 {
        self.0 as i32
    }

    /// What `encoding/json` stores in an `int32` field for this number: the number itself, or
    /// 0 when it does not fit (the decoder records an error and leaves the field alone). The
    /// original decoded pod-group annotation ports straight into `int32` fields this way.
    pub(crate) fn decoded_as_int32(self) -> i32 {
        i32::try_from(self.0).unwrap_or(0)
    }
}

impl<'de> Deserialize<'de> for GoInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = GoInt;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoInt, E> {
                Ok(GoInt(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoInt, E> {
                // Beyond Go's int; never rendered. Keep the low 64 bits like a Go conversion.
                Ok(GoInt(v as i64))
            }
        }
        deserializer.deserialize_i64(IntVisitor)
    }
}

/// Deserializes a list that may be `null` (or missing, with `#[serde(default)]`) as a `Vec`:
/// proto3 cannot tell an absent repeated field from an empty one.
pub(crate) fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<Vec<T>>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// Compact JSON text of `value` as Go's `encoding/json` writes it (the rules of spec §2.1; the
/// same rules lainlet's HTTP renderer follows, so a value re-encoded here reads exactly as it
/// appeared in the view).
pub(crate) fn go_json(value: &Value) -> String {
    lainlet_gojson::to_string(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int32_conversion_wraps_like_go() {
        assert_eq!(GoInt(5).to_int32(), 5);
        assert_eq!(GoInt((1 << 31) + 5).to_int32(), i32::MIN + 5);
        assert_eq!(GoInt(-1).to_int32(), -1);
        assert_eq!(GoInt(1 << 32).to_int32(), 0);
        assert_eq!(GoInt(i64::MIN).to_int32(), 0);
    }

    #[test]
    fn decoding_into_int32_leaves_out_of_range_numbers_at_zero() {
        assert_eq!(GoInt(9501).decoded_as_int32(), 9501);
        assert_eq!(GoInt(i64::from(i32::MAX)).decoded_as_int32(), i32::MAX);
        assert_eq!(GoInt(i64::from(i32::MAX) + 1).decoded_as_int32(), 0);
        assert_eq!(GoInt(i64::from(i32::MIN) - 1).decoded_as_int32(), 0);
    }

    #[test]
    fn go_ints_accept_integers_only() {
        let parse = |s: &str| serde_json::from_str::<GoInt>(s).ok();
        assert_eq!(parse("-7"), Some(GoInt(-7)));
        assert_eq!(parse("18446744073709551615"), Some(GoInt(-1)));
        assert_eq!(parse("1.5"), None);
        assert_eq!(parse("\"1\""), None);
        assert_eq!(parse("null"), None);
    }

    #[test]
    fn go_json_escapes_like_encoding_json() {
        let v: Value =
            serde_json::from_str(r#"["a<b>&c", "\u2028\u2029", "\b\f\n\r\t\u0001\"\\/"]"#).unwrap();
        assert_eq!(
            go_json(&v),
            r#"["a\u003cb\u003e\u0026c","\u2028\u2029","\u0008\u000c\n\r\t\u0001\"\\/"]"#
        );
    }

    #[test]
    fn go_json_writes_numbers_as_the_view_rendered_them() {
        let v: Value =
            serde_json::from_str(r#"[22, -3, 0.5, 1e+21, 1e-7, 12345678901234567000]"#).unwrap();
        assert_eq!(go_json(&v), "[22,-3,0.5,1e+21,1e-7,12345678901234567000]");
    }

    #[test]
    fn go_json_of_objects_is_compact() {
        let v: Value = serde_json::from_str(r#"{ "a" : [ 1 , {"b": null} ], "c": true }"#).unwrap();
        assert_eq!(go_json(&v), r#"{"a":[1,{"b":null}],"c":true}"#);
    }
}
