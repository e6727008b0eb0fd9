//! etcd's v3 JSON gateway (grpc-gateway) as bytes: the request bodies a shell posts and the
//! answers it gets back, converted to [`Snapshot`] and [`WatchResponse`]. Keys and values are
//! base64, int64s are JSON strings, and fields equal to their zero value are omitted (a `PUT`
//! event has no `type`, an empty value no `value`).
//!
//! ```text
//! POST /v3/kv/range   range_request()          → parse_range(answer)          → Snapshot
//! POST /v3/watch      watch_request(start)     → each line: parse_watch_line  → WatchResponse
//!                                              (split by WatchLines as bytes arrive)
//! POST /v3/kv/range   keys_probe_request()     → parse_keys_probe(status, answer) → Probe
//!                                              → parse_quorum(status, answer) (quorum check)
//! POST /v3/kv/range   keys_request(revision)   → parse_keys(answer, revision) → KeyListing
//! POST /v3/auth/authenticate  auth_request()   → parse_token(answer)
//! any call's 401 "invalid auth token": token_expired(status, answer) → authenticate again
//! ```

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{CodecError, EtcdIdentity, KeyListing, Probe, QuorumReadError, WatchResponse, PREFIX};
use crate::input::{KeyValue, Snapshot, WatchEvent};

/// The end of the `/lain/` prefix range (`/lain/` with its last byte incremented).
const RANGE_END: &str = "/lain0";

/// The body of `POST /v3/kv/range` reading every key under `/lain/`.
pub fn range_request() -> Vec<u8> {
    json!({ "key": B64.encode(PREFIX), "range_end": B64.encode(RANGE_END) })
        .to_string()
        .into_bytes()
}

/// The store probe (auto-detection): a linearizable one-key, keys-only range of `/lain/`.
pub fn keys_probe_request() -> Vec<u8> {
    json!({ "key": B64.encode(PREFIX), "range_end": B64.encode(RANGE_END),
            "keys_only": true, "limit": "1" })
    .to_string()
    .into_bytes()
}

/// What a [`keys_probe_request`] answer with HTTP `status` says about the v3 store: a `404`
/// is an etcd without this gateway (etcd 2.x, or 3.2 and older with `/v3alpha`).
pub fn parse_keys_probe(status: u16, answer: &[u8]) -> Probe {
    match (status, parse(answer)) {
        (200, Ok(v))
            if int(&v["count"]) > 0 || v["kvs"].as_array().is_some_and(|k| !k.is_empty()) =>
        {
            Probe::Keys
        }
        (200, Ok(v)) if v["header"].is_object() => Probe::Empty,
        (200, _) => Probe::Failed("an unexpected answer to /v3/kv/range".to_owned()),
        (404, _) => Probe::Unavailable("POST /v3/kv/range answers HTTP 404".to_owned()),
        (status, Ok(v)) => Probe::Failed(format!(
            "HTTP {status}: {}",
            v["message"].as_str().unwrap_or("?")
        )),
        (status, Err(_)) => Probe::Failed(format!("HTTP {status}")),
    }
}

/// The body of `POST /v3/kv/range` listing every key under `/lain/` at `revision`, with its
/// revisions and without values (the drift check).
pub fn keys_request(revision: i64) -> Vec<u8> {
    json!({ "key": B64.encode(PREFIX), "range_end": B64.encode(RANGE_END),
            "keys_only": true, "revision": revision.to_string() })
    .to_string()
    .into_bytes()
}

/// A [`keys_request`] answer as the listing at `revision` (the answer's header carries the
/// store's current revision, not the one read).
pub fn parse_keys(answer: &[u8], revision: i64) -> Result<KeyListing, CodecError> {
    let snapshot = parse_range(answer)?;
    Ok(KeyListing {
        revision,
        keys: snapshot
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.mod_revision))
            .collect(),
    })
}

/// Whether a [`keys_probe_request`] answer with HTTP `status` shows a member with a quorum
/// (a linearizable read succeeded), and then its header's revision and cluster ID; the error
/// says why not.
pub fn parse_quorum(status: u16, answer: &[u8]) -> Result<EtcdIdentity, QuorumReadError> {
    match (status, parse(answer)) {
        (200, Ok(v)) if v["header"].is_object() => Ok(EtcdIdentity {
            revision: int(&v["header"]["revision"]),
            cluster_id: uint(&v["header"]["cluster_id"]).filter(|id| *id != 0),
        }),
        (200, _) => Err(QuorumReadError::UnexpectedAnswer),
        (status, Ok(v)) => Err(QuorumReadError::Status {
            status,
            message: v["message"]
                .as_str()
                .or(v["error"].as_str())
                .unwrap_or("?")
                .to_owned(),
        }),
        (status, Err(_)) => Err(QuorumReadError::BareStatus(status)),
    }
}

/// The body of `POST /v3/watch` creating one prefix watch of `/lain/` from `start_revision`,
/// with progress notifications.
pub fn watch_request(start_revision: i64) -> Vec<u8> {
    json!({ "create_request": {
        "key": B64.encode(PREFIX),
        "range_end": B64.encode(RANGE_END),
        "start_revision": start_revision.to_string(),
        "progress_notify": true,
    }})
    .to_string()
    .into_bytes()
}

/// The body of `POST /v3/kv/range` asking for `key` as of `revision` (`None`: now), keys
/// only: the history proof of a reconnect ([`crate::EtcdStep::ProveHistory`]).
pub fn proof_request(key: &str, revision: Option<i64>) -> Vec<u8> {
    let mut body = json!({ "key": B64.encode(key), "keys_only": true });
    if let Some(revision) = revision {
        body["revision"] = json!(revision.to_string());
    }
    body.to_string().into_bytes()
}

/// A [`proof_request`] answer: the `mod_revision` of the key as of the revision asked, `None`
/// if etcd had no such key then; an error for anything else (a compacted revision, say).
pub fn parse_proof(status: u16, answer: &[u8]) -> Result<Option<i64>, CodecError> {
    let v = parse(answer)?;
    if status != 200 || !v["header"].is_object() {
        let message = v["message"].as_str().or(v["error"].as_str()).unwrap_or("?");
        return Err(CodecError::Etcd(format!("HTTP {status}: {message}")));
    }
    Ok(v["kvs"]
        .as_array()
        .and_then(|kvs| kvs.first())
        .map(|kv| int(&kv["mod_revision"])))
}

/// The body of `POST /v3/auth/authenticate`.
pub fn auth_request(name: &str, password: &str) -> Vec<u8> {
    json!({ "name": name, "password": password })
        .to_string()
        .into_bytes()
}

/// The token of an authenticate answer.
pub fn parse_token(answer: &[u8]) -> Result<String, CodecError> {
    let v = parse(answer)?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or(CodecError::Shape("an authenticate answer without a token"))
}

/// A range answer as a snapshot at its header revision. Keys that are not UTF-8 are left out
/// (lainlet reads none).
pub fn parse_range(answer: &[u8]) -> Result<Snapshot, CodecError> {
    let v = parse(answer)?;
    let revision = int(&v["header"]["revision"]);
    if revision <= 0 {
        return Err(CodecError::Shape(
            "a range answer without a header revision",
        ));
    }
    let mut kvs = Vec::new();
    for kv in v["kvs"].as_array().map(Vec::as_slice).unwrap_or_default() {
        if let Some(kv) = key_value(kv)? {
            kvs.push(kv);
        }
    }
    Ok(Snapshot { revision, kvs })
}

/// One line of the streaming watch answer: `{"result": WatchResponse}` or `{"error": …}`.
pub fn parse_watch_line(line: &[u8]) -> Result<WatchResponse, CodecError> {
    let message = parse(line)?;
    let Some(result) = message.get("result") else {
        let error = message.get("error").unwrap_or(&message);
        return Err(CodecError::Etcd(error.to_string()));
    };
    let raw_events = result["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut events = Vec::with_capacity(raw_events.len());
    for event in raw_events {
        let Some(kv) = key_value(&event["kv"])? else {
            continue;
        };
        events.push(match event["type"].as_str() {
            Some("DELETE") => WatchEvent::Delete {
                key: kv.key,
                mod_revision: kv.mod_revision,
            },
            _ => WatchEvent::Put(kv),
        });
    }
    Ok(WatchResponse {
        created: result["created"].as_bool().unwrap_or(false),
        canceled: result["canceled"].as_bool().unwrap_or(false),
        cancel_reason: result["cancel_reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        compact_revision: int(&result["compact_revision"]),
        header_revision: int(&result["header"]["revision"]),
        last_event_revision: raw_events.last().map(|e| int(&e["kv"]["mod_revision"])),
        events,
        last: false,
    })
}

/// Whether an answer with HTTP `status` says the request's auth token is not (or no longer)
/// valid (it expired: `--auth-token-ttl`); the shell then authenticates again and makes the
/// call once more.
pub fn token_expired(status: u16, answer: &[u8]) -> bool {
    status == 401 && String::from_utf8_lossy(answer).contains("invalid auth token")
}

/// The streaming watch answer, one JSON object per line, as bytes arrive:
/// [`WatchLines::push`] what was read, then drain each whole line's [`WatchResponse`] with
/// [`WatchLines::poll_response`] until it says `Ok(None)` (more bytes are needed).
#[derive(Debug)]
pub struct WatchLines {
    /// Bytes not yet parsed (a partial line).
    pending: Vec<u8>,
    /// The longest line accepted.
    max_line: usize,
}

impl WatchLines {
    /// No bytes yet; lines longer than `max_line` bytes are refused.
    pub fn new(max_line: usize) -> WatchLines {
        WatchLines {
            pending: Vec::new(),
            max_line,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next whole line's response (blank lines are skipped); `Ok(None)` when no whole
    /// line is left. An error for a line that is not a watch response, and for a partial line
    /// already longer than the limit.
    pub fn poll_response(&mut self) -> Result<Option<WatchResponse>, CodecError> {
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if !line.iter().all(u8::is_ascii_whitespace) {
                return parse_watch_line(&line).map(Some);
            }
        }
        if self.pending.len() > self.max_line {
            return Err(CodecError::TooLong(self.max_line));
        }
        Ok(None)
    }
}

fn parse(bytes: &[u8]) -> Result<Value, CodecError> {
    serde_json::from_slice(bytes).map_err(|e| CodecError::Json(e.to_string()))
}

/// A `KeyValue` object; `None` for a key that is not UTF-8.
fn key_value(kv: &Value) -> Result<Option<KeyValue>, CodecError> {
    let key = b64(&kv["key"])?;
    let Ok(key) = String::from_utf8(key) else {
        return Ok(None);
    };
    Ok(Some(KeyValue {
        key,
        value: b64(&kv["value"])?,
        mod_revision: int(&kv["mod_revision"]),
    }))
}

/// An int64 field (sent as a JSON string; omitted when zero).
/// A `uint64` of the gateway's JSON (a decimal string), if it is one.
fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        v => v.as_u64(),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// A bytes field (base64; omitted when empty).
fn b64(v: &Value) -> Result<Vec<u8>, CodecError> {
    match v.as_str() {
        Some(s) => B64
            .decode(s)
            .map_err(|_| CodecError::Shape("invalid base64 in a key or value")),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_messages_convert_with_their_omitted_defaults() {
        let m = br#"{"result":{"header":{"revision":"5"},"events":[
                {"kv":{"key":"L2xhaW4vZQ==","create_revision":"5","mod_revision":"5"}},
                {"type":"DELETE","kv":{"key":"L2xhaW4vYQ==","mod_revision":"6"}}]}}"#;
        let r = parse_watch_line(m).unwrap();
        assert_eq!(r.header_revision, 5);
        assert_eq!(r.last_event_revision, Some(6));
        assert!(!r.created && !r.canceled);
        assert_eq!(
            r.events,
            vec![
                WatchEvent::Put(KeyValue {
                    key: "/lain/e".into(),
                    value: vec![],
                    mod_revision: 5
                }),
                WatchEvent::Delete {
                    key: "/lain/a".into(),
                    mod_revision: 6
                }
            ]
        );
        let compacted = br#"{"result":{"header":{},"canceled":true,"compact_revision":"4"}}"#;
        let r = parse_watch_line(compacted).unwrap();
        assert!(r.canceled);
        assert_eq!(r.compact_revision, 4);
        let error = br#"{"error":{"message":"boom"}}"#;
        assert!(matches!(parse_watch_line(error), Err(CodecError::Etcd(m)) if m.contains("boom")));
        assert!(matches!(
            parse_watch_line(b"<html>"),
            Err(CodecError::Json(_))
        ));
    }

    /// The body of a recorded HTTP answer (`recorded/*.http`, Content-Length framed).
    fn recorded_body(raw: &[u8]) -> (u16, &[u8]) {
        let text = std::str::from_utf8(raw).unwrap();
        let status = text[9..12].parse().unwrap();
        let at = text.find("\r\n\r\n").unwrap() + 4;
        (status, &raw[at..])
    }

    #[test]
    fn the_keys_probe_tells_keys_from_empty_from_no_gateway_on_recorded_answers() {
        let (status, body) = recorded_body(include_bytes!("recorded/v3_probe_keys.http"));
        assert_eq!(parse_keys_probe(status, body), Probe::Keys);
        let (status, body) = recorded_body(include_bytes!("recorded/v3_probe_empty.http"));
        assert_eq!(parse_keys_probe(status, body), Probe::Empty);
        // etcd 3.4's answer to an unknown gateway path, as etcd 2.x answers /v3/kv/range.
        let (status, body) = recorded_body(include_bytes!("recorded/probe_v2_not_served.http"));
        assert!(matches!(
            parse_keys_probe(status, body),
            Probe::Unavailable(_)
        ));
        assert!(matches!(
            parse_keys_probe(503, b"<html>busy</html>"),
            Probe::Failed(_)
        ));
        assert!(matches!(
            parse_keys_probe(200, b"{\"kvs\":"),
            Probe::Failed(_)
        ));
        let request: serde_json::Value = serde_json::from_slice(&keys_probe_request()).unwrap();
        assert!(
            request.get("serializable").is_none(),
            "linearizable: {request}"
        );
    }

    #[test]
    fn a_range_answer_is_a_snapshot_at_its_header_revision() {
        let answer = br#"{"header":{"revision":"9"},"kvs":[
            {"key":"L2xhaW4vZQ==","value":"MQ==","mod_revision":"7"},
            {"key":"/w==","value":"MQ==","mod_revision":"8"}],"count":"2"}"#;
        let s = parse_range(answer).unwrap();
        assert_eq!(s.revision, 9);
        assert_eq!(
            s.kvs,
            vec![KeyValue {
                key: "/lain/e".into(),
                value: b"1".to_vec(),
                mod_revision: 7
            }],
            "the key that is not UTF-8 is left out"
        );
        assert!(parse_range(br#"{"kvs":[]}"#).is_err(), "no header revision");
        assert!(parse_range(br#"{"header":{"revision":"3"},"kvs":[{"key":"!!"}]}"#).is_err());
        assert_eq!(parse_token(br#"{"token":"t.1"}"#).unwrap(), "t.1");
        let keys = parse_keys(answer, 8).unwrap();
        assert_eq!(
            (keys.revision, keys.keys),
            (8, vec![("/lain/e".to_owned(), 7)])
        );
    }

    #[test]
    fn a_history_proof_asks_for_one_key_at_a_revision_and_reads_its_mod_revision() {
        let body: Value =
            serde_json::from_slice(&proof_request("/lain/config/vip", Some(2))).unwrap();
        assert_eq!(
            body,
            json!({"key": "L2xhaW4vY29uZmlnL3ZpcA==", "keys_only": true, "revision": "2"})
        );
        assert!(!String::from_utf8(proof_request("/lain/x", None))
            .unwrap()
            .contains("revision"));
        // etcd 3.4's answer for /lain/config/vip, put at revision 2, as recorded.
        let (status, answer) = recorded_body(include_bytes!("recorded/v3_probe_keys.http"));
        assert_eq!(parse_proof(status, answer), Ok(Some(2)));
        let (status, empty) = recorded_body(include_bytes!("recorded/v3_probe_empty.http"));
        assert_eq!(parse_proof(status, empty), Ok(None), "no such key then");
        let compacted = br#"{"error":"etcdserver: mvcc: required revision has been compacted","code":11,"message":"etcdserver: mvcc: required revision has been compacted"}"#;
        assert!(matches!(
            parse_proof(400, compacted),
            Err(CodecError::Etcd(m)) if m.contains("compacted")
        ));
        assert!(parse_proof(200, b"<html>").is_err());
    }

    #[test]
    fn a_quorum_check_passes_on_a_header_and_fails_on_etcds_errors() {
        // etcd 3.4's answer, as recorded: the header's uint64s are decimal strings.
        let (status, body) = recorded_body(include_bytes!("recorded/v3_probe_keys.http"));
        assert_eq!(
            parse_quorum(status, body),
            Ok(EtcdIdentity {
                revision: 2,
                cluster_id: Some(9936239848842411879)
            })
        );
        assert_eq!(
            parse_quorum(200, br#"{"header":{"revision":"3"}}"#),
            Ok(EtcdIdentity {
                revision: 3,
                cluster_id: None
            }),
            "a header without a cluster ID still shows a quorum"
        );
        let timed_out = br#"{"error":"etcdserver: request timed out","code":14,"message":"etcdserver: request timed out"}"#;
        assert_eq!(
            parse_quorum(503, timed_out).map_err(|e| e.to_string()),
            Err("HTTP 503: etcdserver: request timed out".to_owned())
        );
        assert!(parse_quorum(200, b"<html>").is_err());
    }

    #[test]
    fn watch_lines_split_a_stream_read_in_any_pieces() {
        let stream = b"{\"result\":{\"header\":{\"revision\":\"4\"},\"created\":true}}\n\r\n\
                       {\"result\":{\"header\":{\"revision\":\"5\"}}}\n";
        for cut in 0..stream.len() {
            let mut lines = WatchLines::new(1024);
            let mut seen = Vec::new();
            for piece in [&stream[..cut], &stream[cut..]] {
                lines.push(piece);
                while let Some(r) = lines.poll_response().unwrap() {
                    seen.push((r.created, r.header_revision));
                }
            }
            assert_eq!(seen, vec![(true, 4), (false, 5)], "cut at {cut}");
        }
        let mut lines = WatchLines::new(8);
        lines.push(b"{\"error\":{\"message\":\"x\"}}\n");
        assert!(matches!(lines.poll_response(), Err(CodecError::Etcd(_))));
        lines.push(b"123456789");
        assert_eq!(lines.poll_response(), Err(CodecError::TooLong(8)));
        let mut lines = WatchLines::new(8);
        lines.push(b"12345678");
        assert_eq!(
            lines.poll_response(),
            Ok(None),
            "a partial line within the limit waits"
        );
    }

    #[test]
    fn only_an_invalid_token_answer_is_an_expired_token() {
        let invalid = br#"{"error":"etcdserver: invalid auth token","code":16}"#;
        assert!(token_expired(401, invalid));
        assert!(!token_expired(401, b"{\"error\":\"permission denied\"}"));
        assert!(!token_expired(200, invalid));
    }
}
