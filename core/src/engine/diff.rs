//! Diff streams (`diff=1`): what changed between two renderings of a view whose body is a JSON
//! object, as `{"put":{"<key>":<value>,…},"delete":["<key>",…]}` over its top-level members
//! (either member absent when empty). Applying the patch to the first rendering gives the
//! second, member for member.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::json::to_vec;

/// The top-level members of a JSON object, by key; `None` if `json` is not an object.
pub fn members(json: &[u8]) -> Option<BTreeMap<String, &RawValue>> {
    serde_json::from_slice(json).ok()
}

/// The patch from `old` to `new` (both JSON objects); `None` when no member differs (or
/// either is not an object).
pub fn patch(old: &[u8], new: &[u8]) -> Option<Bytes> {
    let (old, new) = (members(old)?, members(new)?);
    let put: BTreeMap<&str, &RawValue> = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_none_or(|o| o.get() != v.get()))
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let delete: BTreeSet<&str> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(String::as_str)
        .collect();
    encode(&put, &delete)
}

/// The members that differ between two JSON objects (present in one only, or with another
/// value).
pub fn changed_members(old: &[u8], new: &[u8]) -> BTreeSet<String> {
    let (Some(old), Some(new)) = (members(old), members(new)) else {
        return BTreeSet::new();
    };
    let mut keys: BTreeSet<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_none_or(|o| o.get() != v.get()))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    keys
}

/// The patch that brings a client holding some earlier state to `new`, when the members that
/// may have changed since are `changed`: each is put with its current value, or deleted if
/// `new` no longer has it. `None` if `new` is not an object or nothing is to be sent.
pub fn patch_of(changed: &BTreeSet<String>, new: &[u8]) -> Option<Bytes> {
    let new = members(new)?;
    let mut put = BTreeMap::new();
    let mut delete = BTreeSet::new();
    for key in changed {
        match new.get(key) {
            Some(v) => {
                put.insert(key.as_str(), *v);
            }
            None => {
                delete.insert(key.as_str());
            }
        }
    }
    encode(&put, &delete)
}

fn encode(put: &BTreeMap<&str, &RawValue>, delete: &BTreeSet<&str>) -> Option<Bytes> {
    if put.is_empty() && delete.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(64 + put.values().map(|v| v.get().len()).sum::<usize>());
    out.push(b'{');
    if !put.is_empty() {
        out.extend_from_slice(b"\"put\":{");
        for (i, (k, v)) in put.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend(to_vec(*k));
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
    }
    if !delete.is_empty() {
        if !put.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"delete\":");
        out.extend(to_vec(delete));
    }
    out.push(b'}');
    Some(Bytes::from(out))
}

/// Applies a patch to a rendering (what a diff client does; used by the tests).
pub fn apply(base: &[u8], patch: &[u8]) -> Option<serde_json::Value> {
    let mut state: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(base).ok()?;
    let patch: serde_json::Value = serde_json::from_slice(patch).ok()?;
    if let Some(put) = patch.get("put").and_then(|p| p.as_object()) {
        for (k, v) in put {
            state.insert(k.clone(), v.clone());
        }
    }
    if let Some(delete) = patch.get("delete").and_then(|d| d.as_array()) {
        for k in delete.iter().filter_map(|k| k.as_str()) {
            state.remove(k);
        }
    }
    Some(serde_json::Value::Object(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_puts_changed_and_new_members_and_deletes_gone_ones() {
        let old = br#"{"a":1,"b":{"x":[1,2]},"c":"<gone>"}"#;
        let new = br#"{"a":1,"b":{"x":[1,3]},"d":null}"#;
        let p = patch(old, new).unwrap();
        assert_eq!(
            std::str::from_utf8(&p).unwrap(),
            r#"{"put":{"b":{"x":[1,3]},"d":null},"delete":["c"]}"#
        );
        assert_eq!(
            apply(old, &p).unwrap(),
            serde_json::from_slice::<serde_json::Value>(new).unwrap()
        );
        assert_eq!(patch(new, new), None);
        assert_eq!(
            std::str::from_utf8(&patch(br#"{"a":1}"#, br#"{}"#).unwrap()).unwrap(),
            r#"{"delete":["a"]}"#
        );
        assert_eq!(patch(b"[1]", b"[2]"), None, "arrays have no members");
    }

    #[test]
    fn keys_are_escaped_as_go_writes_them() {
        let p = patch(br#"{}"#, br#"{"a\u003cb":1}"#).unwrap();
        assert_eq!(
            std::str::from_utf8(&p).unwrap(),
            r#"{"put":{"a\u003cb":1}}"#
        );
    }

    #[test]
    fn a_resume_patch_takes_current_values_of_the_changed_members() {
        let changed: BTreeSet<String> = ["a", "gone"].iter().map(|s| s.to_string()).collect();
        let p = patch_of(&changed, br#"{"a":2,"b":3}"#).unwrap();
        assert_eq!(
            std::str::from_utf8(&p).unwrap(),
            r#"{"put":{"a":2},"delete":["gone"]}"#
        );
        assert_eq!(patch_of(&BTreeSet::new(), b"{}"), None);
    }
}
