//! etcd's **v2 keys API** as bytes: the requests a shell sends (paths of `GET`s on
//! `/v2/keys/lain`) and the answers it gets back (status, the `X-Etcd-Index` and
//! `X-Etcd-Cluster-Id` headers, the body), converted to [`Snapshot`], [`WatchResponse`],
//! [`Probe`] and [`EtcdIdentity`]. The v2 store index plays the revision everywhere. Recorded
//! answers of etcd 3.4.23 (`--enable-v2=true`) and of etcd 2.3.7 (member and `--proxy on`)
//! are the unit tests' fixtures (`core/src/etcd/recorded/`).
//!
//! ```text
//! GET PROBE_PATH                → parse_quorum(answer)   → EtcdIdentity (index, cluster ID)
//!                               → parse_probe(answer)    → Probe (which store holds keys)
//! GET SNAPSHOT_PATH             → parse_snapshot(answer) → Snapshot at X-Etcd-Index R
//! GET watch_path(R + 1), …      → parse_watch(answer)    → one event (last), or 401 → re-read
//! ```
//!
//! What etcd does that the codec relies on (see the recordings):
//!
//! * A snapshot is one tree; only leaves (`dir` absent) are keys. A missing `/lain` is error
//!   100 (HTTP 404): an empty snapshot at the error's index.
//! * **The watch is a long poll** (`wait=true&waitIndex=N`, no `stream=true`), as in etcd's
//!   own v2 client and the original lainlet: the answer is the first event at or after `N`,
//!   complete, then the body ends and the connection is reused for the next poll. A
//!   streaming watch (`stream=true`) is not used: etcd 2.3.7's v2 proxy (`etcd --proxy on`,
//!   which LAIN runs on every node but the managers) does not flush it — its head comes with
//!   the first event and later events only when a buffer fills — and etcd 3.4 silently drops
//!   a streaming watcher that falls 100 events behind. A long poll has neither problem.
//! * An event still in etcd's history (its last 1000 events) is answered at once; a
//!   `waitIndex` older than that answers error 401 (HTTP 400): a [`WatchResponse`] with
//!   `compact_revision`, i.e. a fresh snapshot applied as a diff.
//! * Every answer carries `X-Etcd-Index` (the store index) and `X-Etcd-Cluster-Id`: a quorum
//!   read tells whether the etcd reached still continues the history lainlet applied.

mod watch;

pub use watch::parse_watch;

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

use super::store::Probe;
use super::{CodecError, EtcdIdentity, KeyListing, QuorumReadError};
use crate::input::{KeyValue, Snapshot, WatchEvent};

#[cfg(doc)]
use super::WatchResponse;

/// The snapshot: a recursive, sorted, quorum (linearizable) read of `/lain`.
pub const SNAPSHOT_PATH: &str = "/v2/keys/lain?recursive=true&sorted=true&quorum=true";

/// The store probe and liveness check: a quorum read of `/lain` itself (its direct entries
/// only, so the answer stays small). A member cut off from the quorum cannot answer it.
pub const PROBE_PATH: &str = "/v2/keys/lain?quorum=true";

/// The response header carrying the store index.
pub const INDEX_HEADER: &str = "X-Etcd-Index";

/// Longest line of a watch answer accepted (one event; deployd's values are a few KiB).
pub const MAX_LINE: usize = 64 << 20;

/// The response header carrying etcd's cluster ID (hexadecimal).
pub const CLUSTER_ID_HEADER: &str = "X-Etcd-Cluster-Id";

/// The long-poll watch of `/lain` (recursive) for the first event at or after
/// `start_revision`: one event per answer (see the module docs).
pub fn watch_path(start_revision: i64) -> String {
    format!("/v2/keys/lain?wait=true&recursive=true&waitIndex={start_revision}")
}

/// A quorum read of one key (the first question of a history proof, see
/// [`crate::EtcdStep::ProveHistory`]): when its `modifiedIndex` is the revision lainlet
/// applied, the history is proven.
pub fn key_read_path(key: &str) -> String {
    format!("/v2/keys{}?quorum=true", key_path(key))
}

/// A long poll of one key from `revision` (the second question of a history proof, when the
/// key was written again or deleted since): in the history served, etcd answers at once with
/// the write at `revision` itself.
pub fn key_wait_path(key: &str, revision: i64) -> String {
    format!("/v2/keys{}?wait=true&waitIndex={revision}", key_path(key))
}

/// `key` as a URL path: every byte but unreserved characters, `/` and `:` percent-encoded.
pub(crate) fn key_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The answer to [`key_read_path`] or [`key_wait_path`]: the `modifiedIndex` of the node
/// (of the event, for a long poll), `None` if etcd has no such key (error 100); an error for
/// anything else (error 401: the history no longer reaches the revision).
pub fn parse_proof(answer: Answer<'_>) -> Result<Option<i64>, CodecError> {
    if answer.status != 200 {
        let error = EtcdError::parse(answer)?;
        if error.code == Some(KEY_NOT_FOUND) {
            return Ok(None);
        }
        return Err(error.into_codec_error());
    }
    let v = json(answer.status, answer.body)?;
    let node = &v["node"];
    if is_dir(node) {
        return Ok(None);
    }
    node["modifiedIndex"]
        .as_i64()
        .map(Some)
        .ok_or(CodecError::Shape("a v2 node without a modifiedIndex"))
}

/// The `Authorization` header value for etcd's v2 authentication (HTTP basic).
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", B64.encode(format!("{user}:{password}")))
}

/// An answer as the shell received it.
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    /// The HTTP status.
    pub status: u16,
    /// The `X-Etcd-Index` header's value, if present.
    pub etcd_index: Option<&'a str>,
    /// The `X-Etcd-Cluster-Id` header's value, if present.
    pub cluster_id: Option<&'a str>,
    /// The whole body (without the transfer encoding).
    pub body: &'a [u8],
}

/// A snapshot answer as a [`Snapshot`] at its `X-Etcd-Index`: every leaf under `/lain/`.
pub fn parse_snapshot(answer: Answer<'_>) -> Result<Snapshot, CodecError> {
    if answer.status != 200 {
        let error = EtcdError::parse(answer)?;
        if error.code == Some(KEY_NOT_FOUND) {
            let revision = index(answer.etcd_index)
                .or(error.index)
                .ok_or(CodecError::Shape(
                    "a v2 answer without an X-Etcd-Index header",
                ))?;
            return Ok(Snapshot {
                revision,
                kvs: Vec::new(),
            });
        }
        return Err(error.into_codec_error());
    }
    let revision = index(answer.etcd_index).ok_or(CodecError::Shape(
        "a v2 snapshot without an X-Etcd-Index header",
    ))?;
    let read: RawRead<'_> = serde_json::from_slice(answer.body).map_err(|e| {
        CodecError::Json(format!(
            "HTTP 200, {e}, after {} bytes: {}",
            answer.body.len(),
            snippet(answer.body)
        ))
    })?;
    let node = read
        .node
        .ok_or(CodecError::Shape("a v2 read without a node"))?;
    let mut kvs = Vec::new();
    leaves(node, &mut kvs)?;
    kvs.retain(|kv| kv.key.starts_with(super::PREFIX));
    Ok(Snapshot { revision, kvs })
}

/// What a [`PROBE_PATH`] answer (a quorum read) says: which history the member that answered
/// is at ([`EtcdIdentity`]: `X-Etcd-Index`, `X-Etcd-Cluster-Id`), or why it is not a member
/// with a quorum. Any answer but an etcd error other than "key not found" passes (v2 answers
/// error 300, "Raft Internal Error", when a quorum read times out without a leader; a proxy
/// whose member is gone answers something that is not etcd's).
pub fn parse_quorum(answer: Answer<'_>) -> Result<EtcdIdentity, QuorumReadError> {
    match answer.status {
        200 => {
            if let Err(e) = serde_json::from_slice::<Value>(answer.body) {
                return Err(QuorumReadError::NotJson(e.to_string()));
            }
        }
        _ => match EtcdError::parse(answer) {
            Ok(e) if e.code == Some(KEY_NOT_FOUND) => {}
            Ok(e) => return Err(e.into_codec_error().into()),
            Err(e) => return Err(e.into()),
        },
    }
    Ok(EtcdIdentity {
        revision: index(answer.etcd_index).unwrap_or(0),
        cluster_id: answer.cluster_id.and_then(cluster_id),
    })
}

/// A cluster ID header value (hexadecimal, as etcd writes it) as a number.
pub fn cluster_id(header: &str) -> Option<u64> {
    u64::from_str_radix(header.trim(), 16)
        .ok()
        .filter(|id| *id != 0)
}

/// A [`SNAPSHOT_PATH`] answer as a listing of keys and `modifiedIndex`es at its
/// `X-Etcd-Index` (v2 cannot list without values: the drift check reads them too).
pub fn parse_keys(answer: Answer<'_>) -> Result<KeyListing, CodecError> {
    let snapshot = parse_snapshot(answer)?;
    Ok(KeyListing {
        revision: snapshot.revision,
        keys: snapshot
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.mod_revision))
            .collect(),
    })
}

/// What a [`PROBE_PATH`] answer says about the v2 store (see [`Probe`]): `/lain` as a
/// directory with entries holds keys (deployd's directories count: the store is in use).
pub fn parse_probe(answer: Answer<'_>) -> Probe {
    match answer.status {
        200 => match serde_json::from_slice::<Value>(answer.body) {
            Ok(v) => {
                let node = &v["node"];
                let entries = node["nodes"].as_array().is_some_and(|n| !n.is_empty());
                if is_dir(node) && entries {
                    Probe::Keys
                } else {
                    Probe::Empty
                }
            }
            Err(e) => Probe::Failed(format!("HTTP 200 with something that is not JSON: {e}")),
        },
        status => match EtcdError::parse(answer) {
            Ok(e) if e.code == Some(KEY_NOT_FOUND) => Probe::Empty,
            Ok(e) => Probe::Failed(e.into_codec_error().to_string()),
            // etcd 3.4 without --enable-v2: Go's "404 page not found".
            Err(_) if status == 404 => Probe::Unavailable(format!(
                "GET /v2/keys answers HTTP 404: {}",
                snippet(answer.body)
            )),
            Err(e) => Probe::Failed(e.to_string()),
        },
    }
}

/// etcd's error 100, "Key not found".
pub(crate) const KEY_NOT_FOUND: i64 = 100;
/// etcd's error 401, "The event in requested index is outdated and cleared".
pub(crate) const EVENT_INDEX_CLEARED: i64 = 401;

/// An error answer of the keys API (`{"errorCode":…,"message":…,"cause":…,"index":…}`).
#[derive(Debug)]
pub(crate) struct EtcdError {
    pub(crate) status: u16,
    pub(crate) code: Option<i64>,
    pub(crate) message: String,
    pub(crate) cause: String,
    pub(crate) index: Option<i64>,
}

impl EtcdError {
    /// The error an answer carries; a [`CodecError::Json`] if its body is not JSON (an HTML
    /// page from a proxy, a truncated answer).
    pub(crate) fn parse(answer: Answer<'_>) -> Result<EtcdError, CodecError> {
        let v = json(answer.status, answer.body)?;
        Ok(EtcdError {
            status: answer.status,
            code: v["errorCode"].as_i64(),
            message: v["message"].as_str().unwrap_or_default().to_owned(),
            cause: v["cause"].as_str().unwrap_or_default().to_owned(),
            index: v["index"].as_i64().or_else(|| index(answer.etcd_index)),
        })
    }

    pub(crate) fn into_codec_error(self) -> CodecError {
        let code = self.code.map_or(String::new(), |c| format!(" (error {c})"));
        let cause = match self.cause.is_empty() {
            true => String::new(),
            false => format!(": {}", self.cause),
        };
        CodecError::Etcd(format!(
            "HTTP {}{code}: {}{cause}",
            self.status, self.message
        ))
    }
}

/// A JSON body, or an error that says what came instead.
fn json(status: u16, body: &[u8]) -> Result<Value, CodecError> {
    serde_json::from_slice(body).map_err(|e| {
        CodecError::Json(format!(
            "HTTP {status}, {e}, after {} bytes: {}",
            body.len(),
            snippet(body)
        ))
    })
}

/// The start of a body, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{text:?}")
}

/// An index header value (`None` if absent, not a number, or beyond `i64`).
fn index(header: Option<&str>) -> Option<i64> {
    header?.trim().parse::<i64>().ok().filter(|i| *i >= 0)
}

fn is_dir(node: &Value) -> bool {
    node["dir"].as_bool().unwrap_or(false)
}

/// A read's answer (`{"action":"get","node":…}`), only what a snapshot needs: values are
/// moved out of the parsed tree, not copied.
#[derive(serde::Deserialize)]
struct RawRead<'a> {
    #[serde(borrow, default)]
    node: Option<RawTree<'a>>,
}

/// A node of a read (with its `nodes`) or of a watch event (without).
#[derive(serde::Deserialize)]
struct RawTree<'a> {
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    value: Option<Cow<'a, str>>,
    #[serde(default)]
    dir: bool,
    #[serde(rename = "modifiedIndex", default)]
    modified_index: Option<i64>,
    #[serde(borrow, default)]
    nodes: Vec<RawTree<'a>>,
}

/// Appends every leaf below `node` (itself if it is one). serde_json's recursion limit bounds
/// the depth.
fn leaves(node: RawTree<'_>, out: &mut Vec<KeyValue>) -> Result<(), CodecError> {
    if node.dir {
        for child in node.nodes {
            leaves(child, out)?;
        }
        return Ok(());
    }
    out.push(KeyValue {
        key: node
            .key
            .ok_or(CodecError::Shape("a v2 node without a key"))?
            .into_owned(),
        value: node
            .value
            .map(Cow::into_owned)
            .unwrap_or_default()
            .into_bytes(),
        mod_revision: node
            .modified_index
            .filter(|i| *i > 0)
            .ok_or(CodecError::Shape("a v2 node without a modifiedIndex"))?,
    });
    Ok(())
}

/// One line of a watch answer as etcd writes it: an event, or (from a proxy) an error object.
/// Only the fields lainlet uses are decoded (`prevNode` is skipped).
#[derive(serde::Deserialize)]
struct RawLine<'a> {
    #[serde(borrow, default)]
    action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    node: Option<RawTree<'a>>,
    #[serde(rename = "errorCode", default)]
    error_code: Option<i64>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// One watch line (`{"action":…,"node":…,"prevNode":…}`) as a [`WatchEvent`] and its index;
/// `None` for events that change no key (a directory created or its TTL updated).
pub(crate) fn event(line: &[u8]) -> Result<(Option<WatchEvent>, i64), CodecError> {
    let raw: RawLine<'_> = serde_json::from_slice(line)
        .map_err(|e| CodecError::Json(format!("a v2 watch line that is not an event ({e})")))?;
    if let Some(code) = raw.error_code {
        let message = raw.message.unwrap_or_default();
        return Err(CodecError::Etcd(format!(
            "error {code} in a watch: {message}"
        )));
    }
    let node = raw
        .node
        .ok_or(CodecError::Shape("a v2 event without a node"))?;
    let key = node
        .key
        .ok_or(CodecError::Shape("a v2 node without a key"))?
        .into_owned();
    let index = node
        .modified_index
        .filter(|i| *i > 0)
        .ok_or(CodecError::Shape("a v2 node without a modifiedIndex"))?;
    let action = raw
        .action
        .ok_or(CodecError::Shape("a v2 event without an action"))?;
    let value = || {
        node.value
            .as_deref()
            .unwrap_or_default()
            .as_bytes()
            .to_vec()
    };
    let event = match action.as_ref() {
        "set" | "create" | "update" | "compareAndSwap" if node.dir => None,
        "set" | "create" | "update" | "compareAndSwap" => Some(WatchEvent::Put(KeyValue {
            value: value(),
            key,
            mod_revision: index,
        })),
        "delete" | "expire" | "compareAndDelete" if node.dir => Some(WatchEvent::DeleteDir {
            key: key.trim_end_matches('/').to_owned(),
            mod_revision: index,
        }),
        "delete" | "expire" | "compareAndDelete" => Some(WatchEvent::Delete {
            key,
            mod_revision: index,
        }),
        "get" => None,
        _ => return Err(CodecError::Shape("a v2 event with an unknown action")),
    };
    Ok((event, index))
}

#[cfg(test)]
mod tests;
