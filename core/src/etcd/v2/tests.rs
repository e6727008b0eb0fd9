//! The v2 codec on answers recorded from etcd over a raw socket:
//! `core/src/etcd/recorded/*.http` are the bytes etcd sent (head, then the body as it came,
//! chunked where etcd chunked it). The expected values below were read off those recordings
//! (and the requests that produced them, see `recorded/README.md`), not off the codec.

use super::*;
use crate::etcd::{CodecError, EtcdIdentity};

/// A recorded answer: status, `X-Etcd-Index`, the body without its transfer encoding, and
/// whether the body was complete (a stream still open when the recording stopped is not).
struct Recorded {
    status: u16,
    index: Option<String>,
    cluster: Option<String>,
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
    let cluster = header(CLUSTER_ID_HEADER);
    if header("Transfer-Encoding").as_deref() != Some("chunked") {
        return Recorded {
            status,
            index,
            cluster,
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
        cluster,
        body,
        complete,
    }
}

fn answer(r: &Recorded) -> Answer<'_> {
    Answer {
        status: r.status,
        etcd_index: r.index.as_deref(),
        cluster_id: r.cluster.as_deref(),
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
        cluster_id: None,
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
        cluster_id: None,
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
        cluster_id: None,
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
        cluster_id: None,
        body: empty_dir,
    };
    assert_eq!(parse_probe(a), Probe::Empty);
    let a = Answer {
        status: 500,
        etcd_index: None,
        cluster_id: None,
        body: b"<html>oops</html>",
    };
    assert!(matches!(parse_probe(a), Probe::Failed(_)));
}

#[test]
fn every_action_and_directory_event_decodes_as_etcd_sent_it() {
    // A recorded stream is one event per line, each the same JSON a long poll answers with.
    let r = recorded(include_bytes!("../recorded/watch_stream_live.http"));
    let cron = format!("{PG}/shop/shop.worker.cron");
    let expected: Vec<(Option<WatchEvent>, i64)> = vec![
        (Some(put("/lain/config/vip", "192.168.77.202", 11)), 11),
        (Some(put("/lain/config/ttl_key", "x", 12)), 12),
        (Some(put(&cron, r#"{"Spec":{}}"#, 13)), 13),
        (Some(put(&cron, r#"{"Spec":{"x":1}}"#, 14)), 14),
        (Some(put("/lain/config/vip", "192.168.77.203", 15)), 15),
        (Some(put("/lain/config/cad", "1", 16)), 16),
        (Some(delete("/lain/config/cad", 17)), 17),
        (None, 18), // mkdir: no key
        (Some(delete_dir(&format!("{PG}/gone"), 19)), 19),
        (Some(delete(&format!("{PG}/shop/shop.web.web"), 20)), 20),
        (Some(delete(&cron, 21)), 21),
        (Some(delete_dir(&format!("{PG}/shop"), 22)), 22),
        (
            Some(put(&format!("{PG}/shop-api/shop-api.worker.w"), "{}", 23)),
            23,
        ),
        (Some(delete_dir(&format!("{PG}/shop-api"), 24)), 24),
        // 25 was /other/key: etcd does not send it on a watch of /lain
        (
            Some(put(
                "/lain/config/unicode",
                r#"{"note":"héllo \u2028 \"q\"\n"}"#,
                26,
            )),
            26,
        ),
        (Some(delete("/lain/config/ttl_key", 27)), 27), // expire
    ];
    let got: Vec<(Option<WatchEvent>, i64)> = r
        .body
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .map(|line| event(line).unwrap())
        .collect();
    assert_eq!(got, expected);
    // The same line as the whole answer to a long poll: one message that ends the poll.
    let line = r.body.split(|&b| b == b'\n').nth(8).unwrap();
    let m = parse_watch(Answer {
        status: 200,
        etcd_index: Some("10"),
        cluster_id: None,
        body: line,
    })
    .unwrap();
    assert_eq!(m.events, vec![delete_dir(&format!("{PG}/gone"), 19)]);
    assert_eq!((m.last_event_revision, m.last), (Some(19), true));
}

#[test]
fn a_long_poll_answer_is_one_complete_event_that_ends_the_poll() {
    let r = recorded(include_bytes!("../recorded/watch_once_history_hit.http"));
    assert!(r.complete);
    let m = parse_watch(answer(&r)).unwrap();
    assert_eq!(m.events, vec![put("/lain/config/ttl_key", "x", 12)]);
    assert_eq!(
        (m.header_revision, m.last_event_revision, m.last, m.created),
        (27, Some(12), true, false),
        "etcd was at 27 when it answered event 12 from its history"
    );
}

#[test]
fn history_cleared_is_a_compaction_at_the_oldest_index_etcd_keeps() {
    let r = recorded(include_bytes!("../recorded/watch_cleared.http"));
    assert_eq!(r.status, 400);
    let m = parse_watch(answer(&r)).unwrap();
    assert!(m.canceled);
    assert_eq!((m.compact_revision, m.header_revision), (33, 1032));
    assert!(
        m.cancel_reason.contains("outdated and cleared"),
        "{}",
        m.cancel_reason
    );
}

#[test]
fn a_truncated_empty_or_foreign_watch_answer_is_an_error_not_an_event() {
    let r = recorded(include_bytes!("../recorded/watch_once_history_hit.http"));
    let with = |status: u16, body: &'static [u8]| Answer {
        status,
        etcd_index: Some("10"),
        cluster_id: None,
        body,
    };
    let cut = &r.body[..r.body.len() - 40];
    let e = parse_watch(Answer {
        body: cut,
        ..answer(&r)
    })
    .unwrap_err();
    assert!(
        matches!(&e, CodecError::Json(m) if m.contains("ttl_key")),
        "{e}"
    );
    let e = parse_watch(with(200, b"<html><body>proxy error</body></html>\n")).unwrap_err();
    assert!(
        matches!(&e, CodecError::Json(m) if m.contains("proxy error")),
        "{e}"
    );
    assert!(matches!(
        parse_watch(with(200, b"  \n")),
        Err(CodecError::Shape(_))
    ));
    let e = parse_watch(with(502, b"<html>Bad Gateway</html>")).unwrap_err();
    assert!(
        matches!(&e, CodecError::Json(m) if m.contains("HTTP 502")),
        "{e}"
    );
    let raft = br#"{"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver: request timed out","index":0}"#;
    assert!(matches!(
        parse_watch(with(500, raft)),
        Err(CodecError::Etcd(_))
    ));
    let huge = vec![b' '; MAX_LINE + 1];
    let e = parse_watch(Answer {
        body: &huge,
        ..with(200, b"")
    });
    assert!(
        matches!(e, Err(CodecError::Shape(_))),
        "a body beyond the limit"
    );
    let odd = br#"{"action":"frobnicate","node":{"key":"/lain/config/vip","modifiedIndex":12}}"#;
    assert!(matches!(
        parse_watch(with(200, odd)),
        Err(CodecError::Shape(_))
    ));
    let no_index = br#"{"action":"set","node":{"key":"/lain/config/vip","value":"1"}}"#;
    assert!(matches!(
        parse_watch(with(200, no_index)),
        Err(CodecError::Shape(_))
    ));
}

#[test]
fn requests_are_the_documented_paths() {
    assert_eq!(
        watch_path(11),
        "/v2/keys/lain?wait=true&recursive=true&waitIndex=11"
    );
    assert!(
        !watch_path(12).contains("stream"),
        "a long poll, never a stream"
    );
    assert_eq!(basic_auth("root", "pw"), "Basic cm9vdDpwdw==");
}

#[test]
fn a_quorum_read_says_where_etcds_history_is_unless_etcd_answers_an_error() {
    // etcd 3.4's answer as recorded: index 10, cluster 89e49d7f81553f67.
    let r = recorded(include_bytes!("../recorded/probe_keys.http"));
    assert_eq!(
        parse_quorum(answer(&r)),
        Ok(EtcdIdentity {
            revision: 10,
            cluster_id: Some(0x89e4_9d7f_8155_3f67)
        })
    );
    let answer = |status, body: &'static [u8]| Answer {
        status,
        etcd_index: Some("7"),
        cluster_id: None,
        body,
    };
    assert_eq!(
        parse_quorum(answer(
            404,
            br#"{"errorCode":100,"message":"Key not found","cause":"/lain","index":7}"#
        )),
        Ok(EtcdIdentity {
            revision: 7,
            cluster_id: None
        }),
        "no /lain yet is still a quorum"
    );
    let raft = br#"{"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver: request timed out","index":0}"#;
    assert!(parse_quorum(answer(500, raft))
        .unwrap_err()
        .to_string()
        .contains("Raft Internal Error"));
    assert!(parse_quorum(answer(200, b"<html>")).is_err());
    assert_eq!(cluster_id("0"), None, "no cluster is cluster 0");
    assert_eq!(cluster_id("zz"), None);
}

#[test]
fn a_history_proof_reads_one_keys_modified_index() {
    assert_eq!(
        key_read_path("/lain/nodes/nodes/node1:192.168.77.21:22"),
        "/v2/keys/lain/nodes/nodes/node1:192.168.77.21:22?quorum=true"
    );
    assert_eq!(
        key_wait_path("/lain/config/a b?&", 7),
        "/v2/keys/lain/config/a%20b%3F%26?wait=true&waitIndex=7"
    );
    // The event answer etcd 3.4 gave (recorded): ttl_key written at 12.
    let r = recorded(include_bytes!("../recorded/watch_once_history_hit.http"));
    assert_eq!(parse_proof(answer(&r)), Ok(Some(12)));
    let r = recorded(include_bytes!("../recorded/snapshot_missing.http"));
    assert_eq!(parse_proof(answer(&r)), Ok(None), "error 100: no such key");
    let r = recorded(include_bytes!("../recorded/probe_keys.http"));
    assert_eq!(parse_proof(answer(&r)), Ok(None), "a directory is no key");
    let r = recorded(include_bytes!("../recorded/watch_cleared.http"));
    assert!(matches!(parse_proof(answer(&r)), Err(CodecError::Etcd(m)) if m.contains("401")));
    let html = Answer {
        status: 502,
        etcd_index: None,
        cluster_id: None,
        body: b"<html>",
    };
    assert!(parse_proof(html).is_err());
}

// etcd 2.3.7, the etcd of every LAIN cluster: a member, and `etcd --proxy on` in front of it
// (what lainlet reads on most nodes). Recorded over a raw socket, see `recorded/README.md`.

#[test]
fn etcd_2_3_7_and_its_proxy_answer_a_long_poll_with_one_event_as_3_4_does() {
    for raw in [
        &include_bytes!("../recorded/etcd2_watch_once_history_hit.http")[..],
        &include_bytes!("../recorded/proxy2_watch_once_history_hit.http")[..],
    ] {
        let r = recorded(raw);
        let m = parse_watch(answer(&r)).unwrap();
        assert_eq!(
            m.events,
            vec![put("/lain/config/vip", "192.168.77.201", 4)],
            "the first write at or after waitIndex, from etcd's history"
        );
        assert_eq!((m.last, m.last_event_revision), (true, Some(4)));
    }
    // Answered live through the proxy (its head comes only with the event).
    let r = recorded(include_bytes!("../recorded/proxy2_watch_once_live.http"));
    let m = parse_watch(answer(&r)).unwrap();
    assert_eq!(
        m.events,
        vec![put("/lain/config/vip", "192.168.77.202", 12)]
    );
    assert_eq!(m.header_revision, 11, "the index when the poll was made");
}

#[test]
fn through_the_proxy_a_quorum_read_shows_the_members_index_and_cluster() {
    let r = recorded(include_bytes!("../recorded/etcd2_probe_keys.http"));
    let direct = parse_quorum(answer(&r)).unwrap();
    assert_eq!(
        direct,
        EtcdIdentity {
            revision: 10,
            cluster_id: Some(0x4763_dbe0_45f3_53e4)
        }
    );
    let r = recorded(include_bytes!("../recorded/proxy2_probe_keys.http"));
    let proxied = parse_quorum(answer(&r)).unwrap();
    assert_eq!(
        proxied.cluster_id, direct.cluster_id,
        "the proxy passes it on"
    );
    assert_eq!(parse_probe(answer(&r)), Probe::Keys);
}

#[test]
fn a_proxy_whose_member_is_gone_fails_the_poll_and_the_quorum_check() {
    // The poll waiting when the member died: 200, no body.
    let r = recorded(include_bytes!(
        "../recorded/proxy2_watch_member_killed.http"
    ));
    assert_eq!((r.status, r.body.len()), (200, 0));
    let e = parse_watch(answer(&r)).unwrap_err();
    assert!(
        matches!(&e, CodecError::Shape(m) if m.contains("proxy")),
        "{e}"
    );
    // Then the proxy's own errors, without etcd's errorCode.
    for raw in [
        &include_bytes!("../recorded/proxy2_probe_member_down.http")[..],
        &include_bytes!("../recorded/proxy2_watch_member_down.http")[..],
        &include_bytes!("../recorded/proxy2_probe_member_down_later.http")[..],
    ] {
        let r = recorded(raw);
        assert!(r.status == 502 || r.status == 503, "{}", r.status);
        let reason = parse_quorum(answer(&r)).unwrap_err().to_string();
        assert!(reason.contains("proxy:"), "{reason}");
        assert!(parse_watch(answer(&r)).is_err());
        assert!(matches!(parse_probe(answer(&r)), Probe::Failed(_)));
    }
}

#[test]
fn etcd_2_3_7_clears_its_history_as_3_4_does() {
    for raw in [
        &include_bytes!("../recorded/etcd2_watch_cleared.http")[..],
        &include_bytes!("../recorded/proxy2_watch_cleared.http")[..],
    ] {
        let r = recorded(raw);
        let m = parse_watch(answer(&r)).unwrap();
        assert!(m.canceled && m.compact_revision > 0, "{m:?}");
    }
    let r = recorded(include_bytes!("../recorded/proxy2_watch_cleared.http"));
    let m = parse_watch(answer(&r)).unwrap();
    assert_eq!((m.compact_revision, m.header_revision), (220, 1219));
}

#[test]
fn etcd_2_3_7_snapshots_hold_the_same_keys_directly_and_through_the_proxy() {
    let keys = |raw: &[u8]| -> Vec<String> {
        let s = parse_snapshot(answer(&recorded(raw))).unwrap();
        s.kvs.into_iter().map(|kv| kv.key).collect()
    };
    let direct = keys(include_bytes!("../recorded/etcd2_snapshot_tree.http"));
    let proxied = keys(include_bytes!("../recorded/proxy2_snapshot_tree.http"));
    let on_3_4 = keys(include_bytes!("../recorded/snapshot_tree.http"));
    assert_eq!(direct, on_3_4, "the same writes as the 3.4 recording");
    assert_eq!(proxied, direct);
    for raw in [
        &include_bytes!("../recorded/etcd2_snapshot_missing.http")[..],
        &include_bytes!("../recorded/proxy2_snapshot_missing.http")[..],
    ] {
        assert!(parse_snapshot(answer(&recorded(raw)))
            .unwrap()
            .kvs
            .is_empty());
    }
}
