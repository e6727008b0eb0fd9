//! Properties of the etcd codecs, which read bytes from a peer (etcd, or whatever answers in its
//! place): the v2 keys API (`lainlet_core::v2`) and the v3 JSON gateway
//! (`lainlet_core::gateway`). Inputs are etcd's recorded answers (`core/src/etcd/recorded/`),
//! mutated byte by byte, truncated and spliced, and plain random bytes:
//!
//! * no parser panics, whatever the status, `X-Etcd-Index`, `X-Etcd-Cluster-Id` or body
//!   (v2 answers are read whole, so how their bytes arrived cannot change what is decoded).

use lainlet_core::v2::Answer;
use lainlet_core::{gateway, v2};
use proptest::prelude::*;

/// The recorded answers, as (status, `X-Etcd-Index`, body without its transfer encoding).
fn recorded() -> Vec<(u16, Option<String>, Vec<u8>)> {
    const FILES: [&[u8]; 33] = [
        include_bytes!("../src/etcd/recorded/etcd2_probe_keys.http"),
        include_bytes!("../src/etcd/recorded/etcd2_probe_missing.http"),
        include_bytes!("../src/etcd/recorded/etcd2_snapshot_missing.http"),
        include_bytes!("../src/etcd/recorded/etcd2_snapshot_tree.http"),
        include_bytes!("../src/etcd/recorded/etcd2_watch_cleared.http"),
        include_bytes!("../src/etcd/recorded/etcd2_watch_once_history_hit.http"),
        include_bytes!("../src/etcd/recorded/etcd2_watch_once_live.http"),
        include_bytes!("../src/etcd/recorded/etcd2_watch_stream_live.http"),
        include_bytes!("../src/etcd/recorded/etcd2_watch_stream_one_event.http"),
        include_bytes!("../src/etcd/recorded/probe_keys.http"),
        include_bytes!("../src/etcd/recorded/probe_missing.http"),
        include_bytes!("../src/etcd/recorded/probe_v2_not_served.http"),
        include_bytes!("../src/etcd/recorded/proxy2_probe_keys.http"),
        include_bytes!("../src/etcd/recorded/proxy2_probe_member_down.http"),
        include_bytes!("../src/etcd/recorded/proxy2_probe_member_down_later.http"),
        include_bytes!("../src/etcd/recorded/proxy2_probe_missing.http"),
        include_bytes!("../src/etcd/recorded/proxy2_snapshot_missing.http"),
        include_bytes!("../src/etcd/recorded/proxy2_snapshot_tree.http"),
        include_bytes!("../src/etcd/recorded/proxy2_watch_cleared.http"),
        include_bytes!("../src/etcd/recorded/proxy2_watch_member_down.http"),
        include_bytes!("../src/etcd/recorded/proxy2_watch_member_killed.http"),
        include_bytes!("../src/etcd/recorded/proxy2_watch_once_history_hit.http"),
        include_bytes!("../src/etcd/recorded/proxy2_watch_once_live.http"),
        include_bytes!("../src/etcd/recorded/proxy2_watch_stream_live.http"),
        include_bytes!("../src/etcd/recorded/proxy2_watch_stream_one_event.http"),
        include_bytes!("../src/etcd/recorded/snapshot_missing.http"),
        include_bytes!("../src/etcd/recorded/snapshot_tree.http"),
        include_bytes!("../src/etcd/recorded/v3_probe_empty.http"),
        include_bytes!("../src/etcd/recorded/v3_probe_keys.http"),
        include_bytes!("../src/etcd/recorded/watch_cleared.http"),
        include_bytes!("../src/etcd/recorded/watch_once_history_hit.http"),
        include_bytes!("../src/etcd/recorded/watch_stream_history_hit.http"),
        include_bytes!("../src/etcd/recorded/watch_stream_live.http"),
    ];
    // (A streaming watch through etcd 2.3.7's proxy on a quiet store recorded no bytes at all.)
    FILES
        .iter()
        .filter(|raw| !raw.is_empty())
        .map(|raw| split(raw))
        .collect()
}

/// Status, `X-Etcd-Index` and the de-chunked body of one recorded answer.
fn split(raw: &[u8]) -> (u16, Option<String>, Vec<u8>) {
    let text = std::str::from_utf8(raw).expect("recorded answers are UTF-8");
    let (head, mut rest) = text.split_once("\r\n\r\n").expect("a head");
    let status = head[9..12].parse().expect("a status");
    let index = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Etcd-Index: "))
        .map(str::to_owned);
    if !head.contains("Transfer-Encoding: chunked") {
        return (status, index, rest.as_bytes().to_vec());
    }
    let mut body = Vec::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size, 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        // A stream recorded while still open may stop inside a chunk.
        let Some(chunk) = after.as_bytes().get(..size) else {
            body.extend_from_slice(after.as_bytes());
            break;
        };
        body.extend_from_slice(chunk);
        rest = after.get(size + 2..).unwrap_or_default();
    }
    (status, index, body)
}

/// A body: a recorded one mutated (bytes replaced, a cut, a splice of another), or random.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let bodies: Vec<Vec<u8>> = recorded().into_iter().map(|(_, _, b)| b).collect();
    let n = bodies.len();
    let mutated = (
        0..n,
        0..n,
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(a, b, flips, cut, splice)| {
            let mut out = bodies[a].clone();
            for (at, byte) in flips {
                if !out.is_empty() {
                    let i = at.index(out.len());
                    out[i] = byte;
                }
            }
            out.truncate(cut.index(out.len() + 1));
            let other = &bodies[b];
            out.extend_from_slice(&other[splice.index(other.len() + 1)..]);
            out
        });
    prop_oneof![
        3 => mutated,
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(200u16),
        Just(201),
        Just(400),
        Just(401),
        Just(404),
        Just(500),
        any::<u16>()
    ]
}

fn etcd_index() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        (0i64..100).prop_map(|i| Some(i.to_string())),
        Just(Some(i64::MAX.to_string())),
        Just(Some("18446744073709551616".to_owned())),
        Just(Some("-1".to_owned())),
        "\\PC{0,12}".prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_v2_answer_makes_a_parser_panic(
        status in status(),
        index in etcd_index(),
        body in body(),
        cluster in etcd_index(),
    ) {
        let answer = Answer {
            status,
            etcd_index: index.as_deref(),
            cluster_id: cluster.as_deref(),
            body: &body,
        };
        let _ = v2::parse_snapshot(answer);
        let _ = v2::parse_quorum(answer);
        let _ = v2::parse_keys(answer);
        let _ = v2::parse_probe(answer);
        let _ = v2::parse_watch(answer);
    }

    #[test]
    fn no_gateway_answer_makes_a_parser_panic(
        status in status(),
        body in body(),
        revision in any::<i64>(),
    ) {
        let _ = gateway::parse_range(&body);
        let _ = gateway::parse_keys(&body, revision);
        let _ = gateway::parse_keys_probe(status, &body);
        let _ = gateway::parse_quorum(status, &body);
        let _ = gateway::parse_token(&body);
        for line in body.split(|&b| b == b'\n') {
            let _ = gateway::parse_watch_line(line);
        }
        let _ = gateway::parse_watch_line(&body);
    }
}
