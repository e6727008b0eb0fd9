//! # lainlet-gojson
//!
//! JSON written the way Go's `encoding/json` writes it, which the original lainlet and deployd
//! used. One implementation for the core's renderers, the gRPC mapping and the fixtures' value
//! builders. Pure: serde, serde_json and bytes only.
//!
//! Differences from serde_json's defaults that v2 clients can observe:
//! `<`, `>`, `&`, U+2028 and U+2029 are escaped as `\u003c`, `\u003e`, `\u0026`, `\u2028`,
//! `\u2029`; backspace and form feed are `\u0008` and `\u000c`; floats are written as Go writes
//! float64 (`22`, `0.5`, `1e+21`, `1e-7`). Map keys come out sorted when the maps are
//! `BTreeMap`s (serde_json's `Value` included).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::{self, Write};

use bytes::Bytes;
use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

/// serde_json formatter that writes Go-compatible JSON.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let escape: Option<&[u8]> = match bytes[i] {
                b'<' => Some(b"\\u003c"),
                b'>' => Some(b"\\u003e"),
                b'&' => Some(b"\\u0026"),
                // U+2028 and U+2029 are E2 80 A8 / E2 80 A9 in UTF-8.
                0xE2 if i + 2 < bytes.len() && bytes[i + 1] == 0x80 && bytes[i + 2] == 0xA8 => {
                    Some(b"\\u2028")
                }
                0xE2 if i + 2 < bytes.len() && bytes[i + 1] == 0x80 && bytes[i + 2] == 0xA9 => {
                    Some(b"\\u2029")
                }
                _ => None,
            };
            if let Some(esc) = escape {
                writer.write_all(&bytes[start..i])?;
                writer.write_all(esc)?;
                i += if bytes[i] == 0xE2 { 3 } else { 1 };
                start = i;
            } else {
                i += 1;
            }
        }
        writer.write_all(&bytes[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        let s: &[u8] = match char_escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"\\/",
            CharEscape::Backspace => b"\\u0008",
            CharEscape::FormFeed => b"\\u000c",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let buf = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(byte >> 4) as usize],
                    HEX[(byte & 0xF) as usize],
                ];
                return writer.write_all(&buf);
            }
        };
        writer.write_all(s)
    }

    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(go_float(value).as_bytes())
    }

    fn write_f32<W: ?Sized + Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(writer, f64::from(value))
    }
}

/// Formats a float64 the way Go's `encoding/json` does (shortest round-trip digits, exponent
/// form below 1e-6 and from 1e21 on, exponent without leading zeros and with an explicit `+`).
pub fn go_float(value: f64) -> String {
    if !value.is_finite() {
        // JSON cannot carry these; Go refuses to encode them. Never produced from parsed JSON.
        return "null".to_owned();
    }
    let abs = value.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        return format!("{value}");
    }
    let formatted = format!("{value:e}");
    match formatted.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
        _ => formatted,
    }
}

/// Serializes `value` as compact Go-compatible JSON.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Serializing our own output types into a Vec cannot fail: they hold only strings,
    // integers, finite floats, sequences and maps with string keys.
    if value.serialize(&mut ser).is_err() {
        out.clear();
        out.extend_from_slice(b"null");
    }
    out
}

/// Serializes `value` as compact Go-compatible JSON text.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> String {
    // The formatter writes only whole UTF-8 strings and ASCII escapes.
    String::from_utf8(to_vec(value))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Appends `s` as a quoted JSON string with Go's escapes: `"` and `\` backslashed; `\n`, `\r`,
/// `\t`; other control characters, `<`, `>`, `&`, U+2028 and U+2029 as `\u00XX`/`\u20XX`;
/// everything else (non-ASCII and DEL included) raw.
pub fn push_go_string(out: &mut String, s: &str) {
    out.push_str(&to_string(s));
}

/// Returns `s` quoted like Go's `encoding/json` (see [`push_go_string`]).
pub fn go_string(s: &str) -> String {
    to_string(s)
}

/// Serializes `value` as compact Go-compatible JSON into shared bytes.
pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Bytes {
    Bytes::from(to_vec(value))
}

/// Wraps a `serde_json::Value` so that its numbers are written as Go writes float64: the
/// original decoded `/v2/nodes` values into `map[string]interface{}`, where every number is a
/// float64.
pub struct AsGoValue<'a>(pub &'a serde_json::Value);

impl Serialize for AsGoValue<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        use serde_json::Value;
        match self.0 {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Number(n) => serializer.serialize_f64(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => serializer.serialize_str(s),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&AsGoValue(item))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                // serde_json's Map is a BTreeMap without `preserve_order`: keys come out sorted.
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    out.serialize_entry(k, &AsGoValue(v))?;
                }
                out.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_characters_and_line_separators_are_escaped_like_go() {
        let s = "a<b>&c\u{2028}d\u{2029}e\u{8}\u{c}\u{1}\n\"\\/é";
        let out = String::from_utf8(to_vec(s)).unwrap();
        assert_eq!(
            out,
            r#""a\u003cb\u003e\u0026c\u2028d\u2029e\u0008\u000c\u0001\n\"\\/é""#
        );
    }

    #[test]
    fn go_escaping_matches_encoding_json() {
        assert_eq!(go_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_string("<a>&b"), r#""\u003ca\u003e\u0026b""#);
        assert_eq!(
            go_string("\n\r\t\u{1}\u{1f}\u{8}"),
            r#""\n\r\t\u0001\u001f\u0008""#
        );
        assert_eq!(go_string("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
        assert_eq!(go_string("é☃😀\u{7f}"), "\"é☃😀\u{7f}\"");
    }

    #[test]
    fn push_go_string_appends_the_quoted_string() {
        let mut out = String::from("x:");
        push_go_string(&mut out, "<");
        assert_eq!(out, r#"x:"\u003c""#);
    }

    #[test]
    fn floats_are_formatted_like_go_float64() {
        assert_eq!(go_float(22.0), "22");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1e20), "100000000000000000000");
        assert_eq!(go_float(1e-7), "1e-7");
        assert_eq!(go_float(0.000001), "0.000001");
        assert_eq!(go_float(-1.5e300), "-1.5e+300");
        assert_eq!(go_float(0.0), "0");
        // Precision loss above 2^53, as Go's float64 round trip.
        assert_eq!(go_float(9007199254740993_u64 as f64), "9007199254740992");
    }

    #[test]
    fn node_values_pass_numbers_through_float64() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"z":1,"a":{"big":1e21,"n":22,"f":0.5},"l":[1,null,true]}"#)
                .unwrap();
        let out = String::from_utf8(to_vec(&AsGoValue(&v))).unwrap();
        assert_eq!(
            out,
            r#"{"a":{"big":1e+21,"f":0.5,"n":22},"l":[1,null,true],"z":1}"#
        );
    }
}
