//! etcd's **v2 keys API** as bytes: the requests a shell sends (paths of `GET`s on
//! `/v2/keys/lain`) and the answers it gets back (status, the `X-Etcd-Index` header, the
//! body), converted to [`Snapshot`], [`WatchResponse`] and [`Probe`]. The v2 store index plays
//! the revision everywhere. Recorded answers of etcd 3.4.23 (`--enable-v2=true`) are the unit
//! tests' fixtures (`core/src/etcd/recorded/`).
//!
//! ```text
//! GET LIVE_WATCH_PATH, then SNAPSHOT_PATH → the stream that follows the snapshot (no gap)
//! GET SNAPSHOT_PATH                      → parse_snapshot(answer)       → Snapshot
//! GET PROBE_PATH                         → parse_probe(answer)          → Probe (and liveness)
//! GET watch_path(start, in_history)      → WatchDecoder: head, each line, end → WatchResponse
//! GET watch_path(next, true) (quiet)     → missed_by_stream(answer): has the stream gone deaf?
//! ```
//!
//! What etcd does that the codec relies on (measured on etcd 3.4.23, see the fixtures):
//!
//! * A snapshot is one tree; only leaves (`dir` absent) are keys. A missing `/lain` is error
//!   100 (HTTP 404): an empty snapshot at the error's index.
//! * A streaming watch (`stream=true`) answers `200` with `X-Etcd-Index` = the store index
//!   when the watch was created, then one JSON object per line (each in its own chunk).
//! * **A watch whose `waitIndex` is still in etcd's history answers with that one event only,
//!   even with `stream=true`** (etcd does not register a watcher after a history hit). Such an
//!   event is the one with `modifiedIndex` ≤ the answer's `X-Etcd-Index`; events that happen
//!   after the watch was created have a larger index. So the decoder marks a history answer
//!   as the last message ([`WatchResponse::last`]), and the engine watches again from the next
//!   index: without `stream=true` while it is still behind (a complete answer, so the
//!   connection is reused; see [`watch_path`]), with it once it has caught up.
//! * A `waitIndex` older than the last 1000 events answers error 401 (HTTP 400): a
//!   [`WatchResponse`] with `compact_revision`, i.e. a fresh snapshot applied as a diff.

mod stream;

pub use stream::WatchDecoder;

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

use super::store::Probe;
use super::{CodecError, KeyListing};
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

/// A streaming watch of `/lain` from etcd's current index (no `waitIndex`: it never answers
/// from history). Its answer's `X-Etcd-Index` is the index its first event follows.
pub const LIVE_WATCH_PATH: &str = "/v2/keys/lain?wait=true&recursive=true&stream=true";

/// The watch of `/lain` (recursive) from `start_revision`: with `stream=true` unless
/// `in_history` (etcd already reported an index at or past the start, so the answer is one
/// event from its history and ends; asking without `stream=true` makes it a complete answer
/// that leaves the connection reusable).
pub fn watch_path(start_revision: i64, in_history: bool) -> String {
    let stream = if in_history { "" } else { "&stream=true" };
    format!("/v2/keys/lain?wait=true&recursive=true{stream}&waitIndex={start_revision}")
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

/// Whether a [`PROBE_PATH`] answer (a quorum read) shows a member with a quorum: any
/// answer but an etcd error other than "key not found" (v2 answers error 300, "Raft Internal
/// Error", when a quorum read times out without a leader).
pub fn parse_quorum(answer: Answer<'_>) -> Result<(), String> {
    match answer.status {
        200 => match serde_json::from_slice::<Value>(answer.body) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("HTTP 200 with something that is not JSON: {e}")),
        },
        _ => match EtcdError::parse(answer) {
            Ok(e) if e.code == Some(KEY_NOT_FOUND) => Ok(()),
            Ok(e) => Err(e.into_codec_error().to_string()),
            Err(e) => Err(e.to_string()),
        },
    }
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

/// Whether the answer to a one-shot watch from the index after the last one a stream
/// delivered (`watch_path(next, true)`, read whole) shows that the stream missed events. etcd
/// 3.4's v2 store drops a streaming watcher whose 100-event buffer is full (a reader that fell
/// behind) without ending its answer, so a stream that went quiet is checked this way:
///
/// * an event from etcd's history (its index at or below the answer's `X-Etcd-Index`): the
///   stream should have delivered it — missed;
/// * error 401 (more than 1000 indexes since): missed if the stream was `busy` just before
///   (etcd drops watchers exactly then); after a quiet stream it only says that etcd was
///   written elsewhere meanwhile, which a healthy stream does not see;
/// * an answer that had not come yet (a long poll: nothing happened since), or anything that
///   is not etcd's: not missed (the next check decides).
pub fn missed_by_stream(answer: Answer<'_>, busy: bool) -> bool {
    if answer.status != 200 {
        return busy && EtcdError::parse(answer).is_ok_and(|e| e.code == Some(EVENT_INDEX_CLEARED));
    }
    let header = index(answer.etcd_index).unwrap_or(i64::MAX);
    let line = answer
        .body
        .split(|&b| b == b'\n')
        .find(|l| !l.trim_ascii().is_empty());
    line.and_then(|l| event(l).ok())
        .is_some_and(|(_, event_index)| event_index <= header)
}

/// etcd's error 100, "Key not found".
const KEY_NOT_FOUND: i64 = 100;
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
fn snippet(body: &[u8]) -> String {
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
