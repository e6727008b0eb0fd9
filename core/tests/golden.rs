//! Compatibility with the original lainlet: every request recorded in
//! `original-fixtures/golden/INDEX.tsv` must get the same status and the same body (compared as
//! JSON; arrays the original emitted in random order compared as multisets) when the engine
//! holds the same fixture set, and the watch transcripts must match frame by frame.

mod support;

use std::path::PathBuf;

use lainlet_core::{EventName, SSE_HEAD};
use lainlet_fixtures::{watch_scenario, ScenarioStep};
use support::{parts, Harness};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/golden")
}

struct Golden {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

fn read_golden(file: &str) -> Golden {
    let raw = std::fs::read(golden_dir().join(file)).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\n\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .map(str::to_owned);
    let body = body.strip_suffix('\n').unwrap_or(body).as_bytes().to_vec();
    Golden {
        status,
        content_type,
        body,
    }
}

/// Arrays whose order was random in the original are sorted before comparing.
fn normalise(path: &str, mut v: serde_json::Value) -> serde_json::Value {
    let random_order =
        path.starts_with("/v2/procwatcher") || path.starts_with("/v2/localspecquery");
    if let (true, serde_json::Value::Array(items)) = (random_order, &mut v) {
        items.sort_by_key(|i| i.to_string());
    }
    v
}

#[test]
fn every_golden_get_request_gets_the_originals_status_and_body() {
    let index = std::fs::read_to_string(golden_dir().join("INDEX.tsv")).unwrap();
    let mut h = Harness::golden();
    let mut checked = 0;
    for line in index.lines() {
        let mut cols = line.split('\t');
        let (file, path) = (cols.next().unwrap(), cols.next().unwrap());
        if path.contains("watch=1") {
            continue; // the watch golden is checked below
        }
        let golden = read_golden(file);
        let ours = h.get(path);
        assert_eq!(ours.status, golden.status, "{file} {path}: status");
        assert_eq!(
            Some(ours.content_type.to_owned()),
            golden.content_type,
            "{file} {path}: content type"
        );
        let golden_json = serde_json::from_slice::<serde_json::Value>(&golden.body);
        match (ours.status, golden_json) {
            (200, Ok(expected)) => {
                let got: serde_json::Value = serde_json::from_slice(&ours.body)
                    .unwrap_or_else(|e| panic!("{file} {path}: our body is not JSON: {e}"));
                assert_eq!(
                    normalise(path, got),
                    normalise(path, expected),
                    "{file} {path}: body"
                );
            }
            _ => assert_eq!(
                String::from_utf8_lossy(&ours.body),
                String::from_utf8_lossy(&golden.body),
                "{file} {path}: body"
            ),
        }
        checked += 1;
    }
    assert_eq!(checked, 37, "every GET golden was compared");
}

#[test]
fn golden_bodies_whose_order_is_defined_match_byte_for_byte() {
    // Go's encoder and ours must agree on escaping, key order and number formatting.
    let mut h = Harness::golden();
    for (file, path) in [
        ("get_02.txt", "/v2/configwatcher"),
        ("get_10.txt", "/v2/coreinfowatcher"),
        ("get_16.txt", "/v2/depends"),
        ("get_18.txt", "/v2/nodes"),
        ("get_20.txt", "/v2/containers"),
        ("get_28.txt", "/v2/streamrouter/streamprocs"),
        ("get_31.txt", "/v2/backupspec?appname=hello"),
    ] {
        let golden = read_golden(file);
        assert_eq!(
            String::from_utf8_lossy(&h.get(path).body),
            String::from_utf8_lossy(&golden.body),
            "{file} {path}"
        );
    }
}

#[test]
fn a_watch_on_localspecquery_is_refused_with_the_originals_exact_bytes() {
    let golden = std::fs::read(golden_dir().join("get_38.txt")).unwrap();
    let mut h = Harness::golden();
    let id = h.watch("/v2/localspecquery?watch=1");
    let mut bytes = SSE_HEAD.to_vec();
    let frames = h.drain(id);
    for f in &frames {
        bytes.extend(f.to_bytes());
    }
    assert!(
        frames.last().unwrap().close,
        "the stream closes after the error"
    );
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&golden)
    );
    assert!(h.engine.poll_frame(id).is_none(), "the watch is gone");
}

/// Parses a golden SSE transcript into (id, event, data) frames, heartbeats left out.
fn golden_frames(file: &str) -> Vec<(u64, String, Option<String>)> {
    let raw = String::from_utf8(std::fs::read(golden_dir().join(file)).unwrap()).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert_eq!(
        format!("{head}\r\n\r\n").as_bytes(),
        SSE_HEAD,
        "{file}: head"
    );
    body.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let mut frame = (0, String::new(), None);
            for line in f.lines() {
                match line.split_once(": ") {
                    Some(("id", v)) => frame.0 = v.parse().unwrap(),
                    Some(("event", v)) => frame.1 = v.to_owned(),
                    Some(("data", v)) => frame.2 = Some(v.to_owned()),
                    _ => panic!("{file}: unexpected line {line:?}"),
                }
            }
            frame
        })
        .filter(|f| f.1 != EventName::Heartbeat.as_str())
        .collect()
}

#[test]
fn the_recorded_watch_scenario_produces_the_originals_frames() {
    let mut h = Harness::golden();
    let streams = [
        (
            "watch_proxy_hello.txt",
            h.watch("/v2/proxywatcher?appname=hello&watch=1&heartbeat=4"),
        ),
        (
            "watch_config_vip.txt",
            h.watch("/v2/configwatcher?target=vip&watch=1"),
        ),
        (
            "watch_webrouter.txt",
            h.watch("/v2/webrouter/webprocs?watch=1"),
        ),
    ];
    let mut got: Vec<Vec<_>> = vec![Vec::new(); streams.len()];
    let mut resynced = false;
    let mut ids_before_resync = vec![0usize; streams.len()];
    for step in std::iter::once(None).chain(watch_scenario().into_iter().map(Some)) {
        match step {
            Some(ScenarioStep::Store(change)) => h.apply(&[change]),
            Some(ScenarioStep::WatchBreak) => {
                h.resync();
                resynced = true;
            }
            None => {}
        }
        for (i, (_, id)) in streams.iter().enumerate() {
            got[i].extend(h.drain(*id).iter().map(parts));
            if !resynced {
                ids_before_resync[i] = got[i].len();
            }
        }
    }
    for (i, (file, _)) in streams.iter().enumerate() {
        let expected = golden_frames(file);
        let events = |v: &[(u64, String, Option<String>)]| {
            v.iter()
                .map(|(_, e, d)| (e.clone(), d.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            events(&got[i]),
            events(&expected),
            "{file}: events and data"
        );
        // Ids match exactly until the resync. The original re-broadcast every key after a broken
        // watch (consuming an id on every connection); our resync is a diff and touches nothing
        // that did not change, so later ids may be smaller — still increasing, as clients need.
        let n = ids_before_resync[i];
        let ids = |v: &[(u64, String, Option<String>)]| v.iter().map(|f| f.0).collect::<Vec<_>>();
        assert_eq!(
            ids(&got[i][..n]),
            ids(&expected[..n]),
            "{file}: ids before the resync"
        );
        let data_ids: Vec<u64> = got[i].iter().map(|f| f.0).filter(|&id| id != 0).collect();
        assert!(
            data_ids.windows(2).all(|w| w[0] < w[1]),
            "{file}: ids increase: {data_ids:?}"
        );
    }
}
