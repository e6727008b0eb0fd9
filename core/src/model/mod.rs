//! Decoding of the values deployd and the cluster tooling write under `/lain/` (spec §1).
//!
//! Only the fields lainlet reads are decoded; everything else (the large Docker `Runtime`
//! object, timestamps, states) is skipped without allocation. Decoding follows Go's
//! `encoding/json` where clients could notice: unknown fields are ignored, missing fields and
//! JSON `null` give zero values, and a type mismatch in a read field makes the value
//! undecodable ([`DecodeError`]).

pub(crate) mod depends;
mod podgroup;

pub use depends::Depends;
#[cfg(test)]
pub use podgroup::Pod;
pub use podgroup::{Container, ContainerSpec, Dependency, PodGroup};

use serde::{Deserialize, Deserializer};

/// Why a value under `/lain/` could not be decoded. The key keeps its last good value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The value is not valid JSON or does not have the expected shape.
    #[error("invalid {what} value: {message}")]
    Invalid {
        /// Which kind of value: `pod group`, `depends`, `node`.
        what: &'static str,
        /// serde_json's description of the problem (with line and column).
        message: String,
    },
}

impl DecodeError {
    fn invalid(what: &'static str, err: impl std::fmt::Display) -> Self {
        DecodeError::Invalid {
            what,
            message: err.to_string(),
        }
    }
}

/// Decodes a `/lain/nodes/nodes/<name>:<ip>:<port>` value: any JSON object, or `null`.
pub fn decode_node(value: &[u8]) -> Result<serde_json::Value, DecodeError> {
    let parsed: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| DecodeError::invalid("node", e))?;
    match parsed {
        serde_json::Value::Object(_) | serde_json::Value::Null => Ok(parsed),
        other => Err(DecodeError::invalid(
            "node",
            format!("expected a JSON object, found {}", json_kind(&other)),
        )),
    }
}

/// Decodes a `/lain/config/...` value: an opaque string. Invalid UTF-8 becomes U+FFFD, one per
/// invalid byte, as Go's JSON encoder writes it (Rust's `from_utf8_lossy` would merge a truncated
/// sequence into one).
pub fn decode_config(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                out.push_str(valid);
                return out;
            }
            Err(e) => {
                let (valid, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push(char::REPLACEMENT_CHARACTER);
                rest = &bad[1..];
            }
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Go semantics for a non-pointer field: JSON `null` leaves the zero value.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Go semantics for a `[]string` field that clients see as `null` or a list: `null` stays
/// `None`, `null` elements become empty strings.
pub(crate) fn nullable_strings<'de, D>(d: D) -> Result<Option<Vec<String>>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Option::<Vec<Option<String>>>::deserialize(d)?;
    Ok(raw.map(|items| items.into_iter().map(Option::unwrap_or_default).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_values_must_be_objects_or_null() {
        assert!(decode_node(br#" {"name": "node1"}"#).is_ok());
        assert_eq!(decode_node(b"null").unwrap(), serde_json::Value::Null);
        let err = decode_node(br#""just a string""#).unwrap_err();
        assert!(err
            .to_string()
            .contains("expected a JSON object, found a string"));
        assert!(decode_node(b"{").is_err());
    }

    #[test]
    fn config_values_with_invalid_utf8_are_replaced_like_go() {
        assert_eq!(decode_config(b"ok\xffend"), "ok\u{fffd}end");
        // A truncated 3-byte sequence is two invalid bytes: two replacement characters.
        assert_eq!(decode_config(b"a\xe2\x80b"), "a\u{fffd}\u{fffd}b");
        assert_eq!(decode_config("é€".as_bytes()), "é€");
    }
}
