//! A [`FleetWrite`] as etcd's APIs spell it, and what their answers mean, for the shells'
//! clients that speak HTTP (the v2 keys API in both shells; the v3 JSON gateway in
//! `lainlet-smol`). The tokio shell's v3 client (gRPC) maps the same writes onto etcd-client's
//! lease and put calls, and reads their answers with [`lease_ttl`], [`keepalive_answer`] and
//! [`lease_not_found`].
//!
//! ```text
//! v2   Put       PUT    /v2/keys<key>  value=…&ttl=…
//!      Refresh   PUT    /v2/keys<key>  ttl=…&refresh=true&prevExist=true   (error 100: Gone)
//!      Withdraw  DELETE /v2/keys<key>                                     (error 100: done)
//! v3   Put       POST /v3/lease/grant {"TTL"} (no lease yet), POST /v3/kv/put {"key","value","lease"}
//!      Refresh   POST /v3/lease/keepalive {"ID"}       (TTL 0 or "lease not found": Gone)
//!      Withdraw  POST /v3/lease/revoke {"ID"}
//! ```

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::announcer::{FleetWrite, FleetWritten};
use crate::etcd::v2::{key_path, Answer, EtcdError, KEY_NOT_FOUND};

/// One request of the v2 keys API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V2Request {
    /// `PUT` or `DELETE`.
    pub method: &'static str,
    /// Path and query, e.g. `/v2/keys/lain/lainlet/nodes/node1`.
    pub path: String,
    /// The `application/x-www-form-urlencoded` body, if any.
    pub form: Option<String>,
}

/// The v2 request of `write`.
pub fn v2_request(write: &FleetWrite) -> V2Request {
    let (method, key, form) = match write {
        FleetWrite::Put {
            key, value, ttl, ..
        } => (
            "PUT",
            key,
            Some(format!("value={}&ttl={}", form_encode(value), secs(*ttl))),
        ),
        FleetWrite::Refresh { key, ttl, .. } => (
            "PUT",
            key,
            Some(format!("ttl={}&refresh=true&prevExist=true", secs(*ttl))),
        ),
        FleetWrite::Withdraw { key, .. } => ("DELETE", key, None),
    };
    V2Request {
        method,
        path: format!("/v2/keys{}", key_path(key)),
        form,
    }
}

/// What the v2 answer to [`v2_request`]`(write)` means.
pub fn v2_answer(write: &FleetWrite, answer: Answer<'_>) -> FleetWritten {
    if matches!(answer.status, 200 | 201) {
        return FleetWritten::Done { lease: None };
    }
    let error = match EtcdError::parse(answer) {
        Ok(e) => e,
        Err(e) => return FleetWritten::Failed(format!("HTTP {}: {e}", answer.status)),
    };
    match (write, error.code) {
        (FleetWrite::Refresh { .. }, Some(KEY_NOT_FOUND)) => FleetWritten::Gone,
        (FleetWrite::Withdraw { .. }, Some(KEY_NOT_FOUND)) => FleetWritten::Done { lease: None },
        _ => FleetWritten::Failed(error.into_codec_error().to_string()),
    }
}

/// The body of `POST /v3/lease/grant` for a lease of `ttl`.
pub fn grant_request(ttl: Duration) -> Vec<u8> {
    json!({ "TTL": secs(ttl).to_string() })
        .to_string()
        .into_bytes()
}

/// The lease ID a grant answer carries, or why there is none.
pub fn parse_grant(status: u16, answer: &[u8]) -> Result<i64, FleetWritten> {
    let v = outcome(status, answer)?;
    match int(&v["ID"]) {
        id if id > 0 => Ok(id),
        _ => Err(FleetWritten::Failed(
            "a lease grant answer without an ID".to_owned(),
        )),
    }
}

/// The body of `POST /v3/kv/put` for `key` = `value` under `lease`.
pub fn put_request(key: &str, value: &[u8], lease: i64) -> Vec<u8> {
    json!({ "key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string() })
        .to_string()
        .into_bytes()
}

/// The body of `POST /v3/lease/keepalive` (one keep-alive) or `POST /v3/lease/revoke`.
pub fn lease_request(lease: i64) -> Vec<u8> {
    json!({ "ID": lease.to_string() }).to_string().into_bytes()
}

/// What the answer to a put, keep-alive or revoke means (`Done` carries no lease: the caller
/// knows which it used). A keep-alive answered with TTL 0, or any call answered "lease not
/// found", is [`FleetWritten::Gone`] (a revoke of a lease gone is done).
pub fn parse_lease_call(status: u16, answer: &[u8], revoke: bool) -> FleetWritten {
    match outcome(status, answer) {
        // A keep-alive's answer is a stream message: `{"result": {"ID", "TTL"}}`.
        Ok(v) if v["result"].is_object() && int(&v["result"]["TTL"]) <= 0 => FleetWritten::Gone,
        Ok(_) => FleetWritten::Done { lease: None },
        Err(FleetWritten::Gone) if revoke => FleetWritten::Done { lease: None },
        Err(other) => other,
    }
}

/// The TTL of the lease a [`FleetWrite::Put`] is granted, in whole seconds (at least one).
pub fn lease_ttl(ttl: Duration) -> i64 {
    i64::try_from(secs(ttl)).unwrap_or(i64::MAX)
}

/// What a keep-alive answer with `ttl` (`None`: the stream ended without one) means: the
/// lease lives on, or it is gone.
pub fn keepalive_answer(ttl: Option<i64>) -> FleetWritten {
    match ttl {
        Some(ttl) if ttl > 0 => FleetWritten::Done { lease: None },
        _ => FleetWritten::Gone,
    }
}

/// What etcd's "lease not found" means for `write`: a withdrawal is done (nothing is left to
/// remove), anything else found the key gone.
pub fn lease_not_found(write: &FleetWrite) -> FleetWritten {
    match write {
        FleetWrite::Withdraw { .. } => FleetWritten::Done { lease: None },
        _ => FleetWritten::Gone,
    }
}

/// The JSON of a successful answer, else what it means.
fn outcome(status: u16, answer: &[u8]) -> Result<Value, FleetWritten> {
    // A keep-alive stream may end its one message with a newline.
    let first = answer
        .split(|b| *b == b'\n')
        .find(|l| !l.trim_ascii().is_empty())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(first).map_err(|_| {
        FleetWritten::Failed(format!(
            "HTTP {status}: not JSON: {}",
            String::from_utf8_lossy(&first[..first.len().min(200)])
        ))
    })?;
    let error = v["error"]
        .as_object()
        .map(|e| Value::Object(e.clone()))
        .unwrap_or_else(|| v.clone());
    let message = error["message"]
        .as_str()
        .or(v["error"].as_str())
        .unwrap_or_default();
    if message.contains("lease not found") {
        return Err(FleetWritten::Gone);
    }
    if status != 200 || !message.is_empty() {
        return Err(FleetWritten::Failed(format!("HTTP {status}: {message}")));
    }
    Ok(v)
}

fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_i64().unwrap_or(0),
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// `application/x-www-form-urlencoded` of `bytes` (every byte but unreserved characters
/// percent-encoded).
fn form_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
