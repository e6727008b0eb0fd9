//! The v2 codec on answers recorded from etcd 3.4.23 (`--enable-v2=true`) over a raw socket:
//! `core/src/etcd/recorded/*.http` are the bytes etcd sent (head, then the body as it came,
//! chunked where etcd chunked it). The expected values below were read off those recordings
//! (and the requests that produced them, see `recorded/README.md`), not off the codec.

use super::*;
use crate::etcd::{CodecError, WatchResponse};

/// A recorded answer: status, `X-Etcd-Index`, the body without its transfer encoding, and
/// whether the body was complete (a stream still open when the recording stopped is not).
struct Recorded {
    status: u16,
    index: Option<String>,
    body: Vec<u8>,
    complete: bool,
}

fn recorded(raw: &[u8]) -> Recorded {
    let text = std::str::from_utf8(raw).expect("recorded answers are UTF-8");
    let (head, rest) = text.split_once("\r\n\r\n").expect("a head");
    let status = head[9..12].parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(": ")
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.to_owned())
    };
    let index = header(INDEX_HEADER);
    if header("Transfer-Encoding").as_deref() != Some("chunked") {
        return Recorded {
            status,
            index,
            body: rest.as_bytes().to_vec(),
            complete: true,
        };
    }
    let (mut body, mut rest, mut complete) = (Vec::new(), rest, false);
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            complete = true;
            break;
        }
        body.extend_from_slice(&after.as_bytes()[..size]);
        rest = &after[size + 2..];
    }
    Recorded {
        status,
        index,
        body,
        complete,
    }
}

fn answer(r: &Recorded) -> Answer<'_> {
    Answer {
        status: r.status,
        etcd_index: r.index.as_deref(),
        body: &r.body,
    }
}

fn put(key: &str, value: &str, index: i64) -> WatchEvent {
    WatchEvent::Put(KeyValue {
        key: key.into(),
        value: value.into(),
        mod_revision: index,
    })
}

fn delete(key: &str, index: i64) -> WatchEvent {
    WatchEvent::Delete {
        key: key.into(),
        mod_revision: index,
    }
}

fn delete_dir(key: &str, index: i64) -> WatchEvent {
    WatchEvent::DeleteDir {
        key: key.into(),
        mod_revision: index,
    }
}

/// Every message of a recorded watch answer, the body fed `step` bytes at a time; the last
/// element is what `finish` said if the body was complete.
fn decode(r: &Recorded, stream: bool, step: usize) -> Vec<Result<WatchResponse, CodecError>> {
    let mut d = WatchDecoder::new(r.status, r.index.as_deref(), stream);
    let mut out = Vec::new();
    let drain = |d: &mut WatchDecoder, out: &mut Vec<_>| {
        while let Some(m) = d.poll() {
            out.push(m);
        }
    };
    drain(&mut d, &mut out);
    for chunk in r.body.chunks(step) {
        if d.is_done() {
            break;
        }
        d.push(chunk).unwrap();
        drain(&mut d, &mut out);
    }
    if r.complete && !d.is_done() {
        out.push(d.finish());
    }
    out
}

const PG: &str = "/lain/deployd/pod_groups";

#[test]
fn a_snapshot_is_the_leaves_of_the_tree_at_the_index_header() {
    let r = recorded(include_bytes!("../recorded/snapshot_tree.http"));
    let s = parse_snapshot(answer(&r)).unwrap();
    assert_eq!(s.revision, 10);
    let kv = |key: &str, value: &str, index: i64| KeyValue {
        key: key.into(),
        value: value.into(),
        mod_revision: index,
    };
    assert_eq!(
        s.kvs,
        vec![
            kv("/lain/config/super_apps/console", "{}", 6),
            kv("/lain/config/vip", "192.168.77.201", 4),
            kv(
                "/lain/config/vips/192.168.77.201",
                r#"{"app":"webrouter"}"#,
                5
            ),
            kv(
                &format!("{PG}/shop/shop.web.web"),
                r#"{"Spec":{"Name":"shop.web.web"}}"#,
                8
            ),
            kv(
                &format!("{PG}/shop-api/shop-api.web.web"),
                r#"{"Spec":{"Name":"shop-api.web.web"}}"#,
                9
            ),
            kv(
                "/lain/nodes/nodes/node1:192.168.77.21:22",
                r#"{"name":"node1","ssh_port":22}"#,
                7
            ),
        ],
        "the empty directory /lain/deployd/depends/pods is no key"
    );
}

#[test]
fn a_missing_lain_is_an_empty_snapshot_at_the_current_index() {
    let r = recorded(include_bytes!("../recorded/snapshot_missing.http"));
    assert_eq!(r.status, 404);
    assert_eq!(
        parse_snapshot(answer(&r)).unwrap(),
        Snapshot {
            revision: 3,
            kvs: vec![]
        }
    );
}

#[test]
fn broken_snapshot_answers_are_typed_errors_that_say_what_came() {
    let html = b"<html><body><h1>502 Bad Gateway</h1></body></html>";
    let e = parse_snapshot(Answer {
        status: 502,
        etcd_index: None,
        body: html,
    })
    .unwrap_err();
    assert!(
        matches!(&e, CodecError::Json(m) if m.contains("HTTP 502") && m.contains("Bad Gateway")),
        "{e}"
    );
    let r = recorded(include_bytes!("../recorded/snapshot_tree.http"));
    let half = &r.body[..r.body.len() / 2];
    let truncated = Answer {
        status: 200,
        etcd_index: Some("10"),
        body: half,
    };
    assert!(matches!(
        parse_snapshot(truncated),
        Err(CodecError::Json(_))
    ));
    let no_index = Answer {
        etcd_index: None,
        ..answer(&r)
    };
    assert!(matches!(
        parse_snapshot(no_index),
        Err(CodecError::Shape(_))
    ));
    let huge = Answer {
        etcd_index: Some("99999999999999999999"),
        ..answer(&r)
    };
    assert!(matches!(parse_snapshot(huge), Err(CodecError::Shape(_))));
    let auth = br#"{"errorCode":110,"message":"The request requires user authentication","cause":"Insufficient credentials","index":0}"#;
    let e = parse_snapshot(Answer {
        status: 401,
        etcd_index: None,
        body: auth,
    })
    .unwrap_err();
    assert!(
        matches!(&e, CodecError::Etcd(m) if m.contains("error 110") && m.contains("Insufficient")),
        "{e}"
    );
}

#[test]
fn the_probe_tells_a_used_store_from_an_empty_one_and_from_no_v2_api() {
    let r = recorded(include_bytes!("../recorded/probe_keys.http"));
    assert_eq!(parse_probe(answer(&r)), Probe::Keys);
    let r = recorded(include_bytes!("../recorded/probe_missing.http"));
    assert_eq!(parse_probe(answer(&r)), Probe::Empty);
    // etcd 3.4 started without --enable-v2.
    let r = recorded(include_bytes!("../recorded/probe_v2_not_served.http"));
    assert!(matches!(parse_probe(answer(&r)), Probe::Unavailable(m) if m.contains("404")));
    let empty_dir =
        br#"{"action":"get","node":{"key":"/lain","dir":true,"modifiedIndex":4,"createdIndex":4}}"#;
    let a = Answer {
        status: 200,
        etcd_index: Some("4"),
        body: empty_dir,
    };
    assert_eq!(parse_probe(a), Probe::Empty);
    let a = Answer {
        status: 500,
        etcd_index: None,
        body: b"<html>oops</html>",
    };
    assert!(matches!(parse_probe(a), Probe::Failed(_)));
}

#[test]
fn a_live_stream_decodes_every_action_and_directory_event_in_any_framing() {
    let r = recorded(include_bytes!("../recorded/watch_stream_live.http"));
    assert!(!r.complete, "the stream was still open");
    let cron = format!("{PG}/shop/shop.worker.cron");
    let expected: Vec<(Vec<WatchEvent>, i64)> = vec![
        (vec![put("/lain/config/vip", "192.168.77.202", 11)], 11),
        (vec![put("/lain/config/ttl_key", "x", 12)], 12),
        (vec![put(&cron, r#"{"Spec":{}}"#, 13)], 13),
        (vec![put(&cron, r#"{"Spec":{"x":1}}"#, 14)], 14),
        (vec![put("/lain/config/vip", "192.168.77.203", 15)], 15),
        (vec![put("/lain/config/cad", "1", 16)], 16),
        (vec![delete("/lain/config/cad", 17)], 17),
        (vec![], 18), // mkdir: no key
        (vec![delete_dir(&format!("{PG}/gone"), 19)], 19),
        (vec![delete(&format!("{PG}/shop/shop.web.web"), 20)], 20),
        (vec![delete(&cron, 21)], 21),
        (vec![delete_dir(&format!("{PG}/shop"), 22)], 22),
        (
            vec![put(&format!("{PG}/shop-api/shop-api.worker.w"), "{}", 23)],
            23,
        ),
        (vec![delete_dir(&format!("{PG}/shop-api"), 24)], 24),
        // 25 was /other/key: etcd does not send it on a watch of /lain
        (
            vec![put(
                "/lain/config/unicode",
                r#"{"note":"héllo \u2028 \"q\"\n"}"#,
                26,
            )],
            26,
        ),
        (vec![delete("/lain/config/ttl_key", 27)], 27), // expire
    ];
    let events: Vec<WatchEvent> = expected.iter().flat_map(|(e, _)| e.clone()).collect();
    for step in [1, 7, 100, usize::MAX] {
        let messages = decode(&r, true, step);
        let head = messages[0].as_ref().unwrap();
        assert!(head.created && head.header_revision == 10 && !head.last);
        let batches: Vec<&WatchResponse> =
            messages[1..].iter().map(|m| m.as_ref().unwrap()).collect();
        assert!(
            batches.iter().all(|m| !m.last),
            "live events do not end the stream"
        );
        let got: Vec<WatchEvent> = batches.iter().flat_map(|m| m.events.clone()).collect();
        assert_eq!(got, events, "fed {step} bytes at a time");
        assert_eq!(batches.last().unwrap().last_event_revision, Some(27));
        if step == 1 {
            // Line by line as it comes: one message per event, each with its index.
            let indexes: Vec<i64> = batches
                .iter()
                .map(|m| m.last_event_revision.unwrap())
                .collect();
            assert_eq!(
                indexes,
                expected.iter().map(|(_, i)| *i).collect::<Vec<_>>()
            );
        }
        if step == usize::MAX {
            assert_eq!(batches.len(), 1, "a backlog is one batch");
        }
    }
}

#[test]
fn a_stream_from_history_carries_one_event_and_says_so() {
    let r = recorded(include_bytes!("../recorded/watch_stream_history_hit.http"));
    let messages = decode(&r, true, usize::MAX);
    assert_eq!(messages.len(), 2, "head and the one event");
    let hit = messages[1].as_ref().unwrap();
    assert_eq!(
        hit.events,
        vec![put("/lain/config/vip", "192.168.77.202", 11)]
    );
    assert_eq!(
        hit.header_revision, 27,
        "etcd was at 27 when it answered from history"
    );
    assert!(hit.last, "etcd sends nothing more on this answer");
}

#[test]
fn a_watch_without_stream_is_one_complete_event() {
    let r = recorded(include_bytes!("../recorded/watch_once_history_hit.http"));
    assert!(r.complete);
    let messages = decode(&r, false, 3);
    assert_eq!(messages.len(), 2);
    let hit = messages[1].as_ref().unwrap();
    assert_eq!(hit.events, vec![put("/lain/config/ttl_key", "x", 12)]);
    assert!(hit.last);
}

#[test]
fn history_cleared_is_a_compaction_at_the_oldest_index_etcd_keeps() {
    let r = recorded(include_bytes!("../recorded/watch_cleared.http"));
    assert_eq!(r.status, 400);
    let messages = decode(&r, true, 16);
    assert_eq!(messages.len(), 1, "no head for an error answer");
    let m = messages[0].as_ref().unwrap();
    assert!(m.canceled);
    assert_eq!((m.compact_revision, m.header_revision), (33, 1032));
    assert!(
        m.cancel_reason.contains("outdated and cleared"),
        "{}",
        m.cancel_reason
    );
}

#[test]
fn a_truncated_or_foreign_stream_is_an_error_not_a_silent_end() {
    let r = recorded(include_bytes!("../recorded/watch_stream_live.http"));
    let cut = r.body.len() - 40; // in the middle of the last event
    let mut d = WatchDecoder::new(200, Some("10"), true);
    d.push(&r.body[..cut]).unwrap();
    while d.poll().is_some() {}
    assert!(matches!(d.finish(), Err(CodecError::Json(m)) if m.contains("middle")));

    let mut d = WatchDecoder::new(200, Some("10"), true);
    assert!(d.poll().unwrap().unwrap().created);
    d.push(b"<html><body>proxy error</body></html>\n").unwrap();
    assert!(matches!(d.poll(), Some(Err(CodecError::Json(_)))));
    assert!(d.is_done() && d.poll().is_none());

    let mut d = WatchDecoder::new(200, Some("10"), true);
    d.poll();
    assert!(
        matches!(d.finish(), Err(CodecError::Shape(_))),
        "ended without an event"
    );

    let mut d = WatchDecoder::new(200, Some("10"), true);
    d.poll();
    assert!(
        d.push(&vec![b'x'; MAX_LINE + 2]).is_err(),
        "a line beyond the limit"
    );

    let odd = br#"{"action":"frobnicate","node":{"key":"/lain/config/vip","modifiedIndex":12}}"#;
    let mut d = WatchDecoder::new(200, Some("10"), true);
    d.poll();
    d.push(odd).unwrap();
    d.push(b"\n").unwrap();
    assert!(matches!(d.poll(), Some(Err(CodecError::Shape(_)))));
    let no_index = br#"{"action":"set","node":{"key":"/lain/config/vip","value":"1"}}"#;
    assert!(matches!(event(no_index), Err(CodecError::Shape(_))));
}

#[test]
fn a_stream_that_ends_cleanly_after_events_is_a_last_message() {
    let r = recorded(include_bytes!("../recorded/watch_stream_live.http"));
    let mut d = WatchDecoder::new(200, r.index.as_deref(), true);
    d.push(&r.body).unwrap();
    let mut n = 0;
    while let Some(m) = d.poll() {
        m.unwrap();
        n += 1;
    }
    assert_eq!(n, 2, "the head, and the 16 events in one batch");
    let end = d.finish().unwrap();
    assert!(end.last && end.events.is_empty() && end.last_event_revision.is_none());
}

#[test]
fn a_long_backlog_comes_in_bounded_batches_and_a_bad_line_after_good_ones_waits_its_turn() {
    let line = |i: i64| {
        format!(
            r#"{{"action":"set","node":{{"key":"/lain/config/k","value":"{i}","modifiedIndex":{i}}}}}"#
        )
    };
    let mut body = String::new();
    for i in 11..11 + super::stream::MAX_BATCH as i64 + 3 {
        body.push_str(&line(i));
        body.push('\n');
    }
    body.push_str("<html>\n");
    let mut d = WatchDecoder::new(200, Some("10"), true);
    d.poll();
    d.push(body.as_bytes()).unwrap();
    let first = d.poll().unwrap().unwrap();
    assert_eq!(first.events.len(), super::stream::MAX_BATCH);
    let second = d.poll().unwrap().unwrap();
    assert_eq!(second.events.len(), 3, "the good lines before the bad one");
    assert_eq!(
        second.last_event_revision,
        Some(11 + super::stream::MAX_BATCH as i64 + 2)
    );
    assert!(matches!(d.poll(), Some(Err(CodecError::Json(_)))));
    assert!(d.is_done() && d.poll().is_none());
}

#[test]
fn a_one_shot_answer_from_history_shows_a_deaf_stream_and_a_live_one_does_not() {
    // An event from etcd's history (index 12, answered at 27): the stream missed it.
    let r = recorded(include_bytes!("../recorded/watch_once_history_hit.http"));
    assert!(missed_by_stream(answer(&r), false));
    // More than the window since: missed after a busy stream, not after a quiet one (writes
    // elsewhere move the index without anything for a watch of /lain).
    let r = recorded(include_bytes!("../recorded/watch_cleared.http"));
    assert!(missed_by_stream(answer(&r), true));
    assert!(!missed_by_stream(answer(&r), false));
    // An event that happened after the watch was made (index 11, answered at 10): nothing
    // was missed, the one-shot watch simply waited for it.
    let r = recorded(include_bytes!("../recorded/watch_stream_live.http"));
    let first_event = r.body.split(|&b| b == b'\n').next().unwrap().to_vec();
    let live = Answer {
        status: 200,
        etcd_index: Some("10"),
        body: &first_event,
    };
    assert!(!missed_by_stream(live, true));
    let html = Answer {
        status: 502,
        etcd_index: None,
        body: b"<html>",
    };
    assert!(
        !missed_by_stream(html, true),
        "not etcd: the next check decides"
    );
}

#[test]
fn requests_are_the_documented_paths() {
    assert_eq!(
        watch_path(11, false),
        "/v2/keys/lain?wait=true&recursive=true&stream=true&waitIndex=11"
    );
    assert_eq!(
        watch_path(12, true),
        "/v2/keys/lain?wait=true&recursive=true&waitIndex=12"
    );
    assert_eq!(basic_auth("root", "pw"), "Basic cm9vdDpwdw==");
}

#[test]
fn a_quorum_read_passes_unless_etcd_answers_an_error_other_than_not_found() {
    let answer = |status, body: &'static [u8]| Answer {
        status,
        etcd_index: Some("7"),
        body,
    };
    assert_eq!(
        parse_quorum(answer(
            200,
            br#"{"action":"get","node":{"key":"/lain","dir":true}}"#
        )),
        Ok(())
    );
    assert_eq!(
        parse_quorum(answer(
            404,
            br#"{"errorCode":100,"message":"Key not found","cause":"/lain","index":7}"#
        )),
        Ok(()),
        "no /lain yet is still a quorum"
    );
    let raft = br#"{"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver: request timed out","index":0}"#;
    assert!(parse_quorum(answer(500, raft))
        .unwrap_err()
        .contains("Raft Internal Error"));
    assert!(parse_quorum(answer(200, b"<html>")).is_err());
}
