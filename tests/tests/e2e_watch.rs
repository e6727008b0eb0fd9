//! End to end, watch streams: the recorded scenario against the original's transcripts, the
//! last frame equal to a fresh GET, undecodable values, one etcd watch for many clients,
//! clients that write on their watch, graceful shutdown, and what idle watches cost. Each test
//! that reads etcd runs against its v3 store and its v2 keys store (`store_conformance_test!`).

mod common;

use std::time::Duration;

use common::*;
use lainlet_fixtures::{watch_scenario, Change, ScenarioStep};
use lainlet_tests::*;
use serde_json::json;

/// (id, event, data) of every non-heartbeat frame of a golden transcript.
fn golden_frames(file: &str) -> Vec<(u64, String, Option<String>)> {
    let raw = std::fs::read_to_string(golden_dir().join(file)).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert_eq!(format!("{head}\r\n\r\n"), SSE_HEAD, "{file}");
    let mut parser = SseParser::new();
    parser.push(body.as_bytes());
    std::iter::from_fn(|| parser.next_frame())
        .filter(|f| !f.is_heartbeat())
        .map(|f| (f.id, f.event, f.data))
        .collect()
}

fn apply(w: &StoreWriter, change: &Change) -> i64 {
    match change {
        Change::Put { key, value } => w.put(key, value),
        Change::Delete { key } => w.delete(key),
    }
}

store_conformance_test!(fn the_recorded_scenario_streams_the_originals_frames(kind, store) {
    let mut etcd = etcd_with_original_in(store);
    let svc = start_in(kind, &etcd, store);
    // (golden transcript, request, frames written before the watch break)
    let cases = [
        ("watch_proxy_hello.txt", "/v2/proxywatcher?appname=hello&watch=1&heartbeat=4", 3),
        ("watch_config_vip.txt", "/v2/configwatcher?target=vip&watch=1", 2),
        ("watch_webrouter.txt", "/v2/webrouter/webprocs?watch=1", 2),
    ];
    let mut streams: Vec<SseStream> = cases.iter().map(|(_, path, _)| svc.watch(path)).collect();
    for step in watch_scenario() {
        match step {
            ScenarioStep::Store(change) => {
                let revision = apply(&etcd.with_store(store), &change);
                wait_revision(&svc, revision)
            }
            // The original's watch broke; ours does when etcd restarts, and resumes.
            ScenarioStep::WatchBreak => etcd.restart().expect("restart etcd"),
        }
    }
    for ((file, path, before_break), stream) in cases.iter().zip(&mut streams) {
        assert_eq!(stream.raw_head(), SSE_HEAD, "{path}");
        let expected = golden_frames(file);
        let mut got = Vec::new();
        while got.len() < expected.len() {
            match stream.next_frame(10 * SEC) {
                Some(f) if f.is_heartbeat() => assert_eq!(f.id, 0),
                Some(f) => got.push((f.id, f.event, f.data)),
                None => break,
            }
        }
        let events = |v: &[(u64, String, Option<String>)]| {
            v.iter().map(|(_, e, d)| (e.clone(), d.clone())).collect::<Vec<_>>()
        };
        assert_eq!(events(&got), events(&expected), "{path}: events and data");
        let ids = |v: &[(u64, String, Option<String>)]| v.iter().map(|f| f.0).collect::<Vec<_>>();
        assert_eq!(ids(&got[..*before_break]), ids(&expected[..*before_break]), "{path}: ids");
        let data_ids: Vec<u64> = ids(&got).into_iter().filter(|&i| i != 0).collect();
        assert!(data_ids.windows(2).all(|w| w[0] < w[1]), "{path}: ids increase: {data_ids:?}");
    }
    assert!(streams[2].wait_closed(5 * SEC), "closed after the error frame");
});

store_conformance_test!(fn the_last_frame_equals_a_fresh_get_and_bad_values_are_isolated(kind, store) {
    let etcd = etcd_with_original_in(store);
    let svc = start_in(kind, &etcd, store);
    let etcd = etcd.with_store(store);
    let path = "/v2/coreinfowatcher?appname=hello";
    let mut watch = svc.watch(&format!("{path}&watch=1"));
    let init = expect_frame(&mut watch, "init", 5 * SEC, |f| f.event == "init");
    assert_eq!(init.json(), svc.get(path).json());

    // A value that does not decode: reported, isolated, last good value kept.
    let web_key = "/lain/deployd/pod_groups/hello/hello.web.web";
    let bad_key = "/lain/deployd/pod_groups/broken/broken.web.web";
    etcd.put(bad_key, b"{\"Spec\": 42");
    wait_revision(&svc, etcd.put(web_key, b"not json at all"));
    let debug = svc.get("/debug").json();
    let errors = debug["decode_errors"].as_object().expect("decode_errors");
    assert!(errors.contains_key(bad_key) && errors.contains_key(web_key), "{debug}");
    assert_eq!(metric(&svc, "lainlet_undecodable_keys"), Some(2.0));
    assert!(metric(&svc, "lainlet_decode_errors_total").unwrap() >= 2.0);
    assert_eq!(svc.get(path).json(), init.json(), "hello.web.web keeps its last good value");
    // Other keys still update.
    wait_revision(&svc, etcd.put("/lain/config/vip", "192.168.77.209"));
    assert_eq!(
        svc.get("/v2/configwatcher?target=vip").json(),
        json!({"vip": "192.168.77.209"})
    );

    // Changes to the watched view stream in, and the last frame is what a GET says.
    let cron = "/lain/deployd/pod_groups/hello/hello.worker.cron";
    let cron_value = etcd.get(cron).unwrap();
    wait_revision(&svc, etcd.delete(cron));
    let delete = expect_frame(&mut watch, "delete", 5 * SEC, |f| f.event == "delete");
    assert!(delete.json().get("hello.worker.cron").is_none());
    wait_revision(&svc, etcd.put(cron, &cron_value));
    let update = expect_frame(&mut watch, "update", 5 * SEC, |f| f.event == "update");
    assert!(update.json().get("hello.worker.cron").is_some());
    let good = lainlet_fixtures::original();
    wait_revision(&svc, etcd.put(web_key, good.value(web_key).unwrap()));
    assert!(svc.get("/debug").json()["decode_errors"].get(web_key).is_none());
    for i in 0..20 {
        let value = String::from_utf8(cron_value.clone())
            .unwrap()
            .replace("172.20.0.4", &format!("172.20.1.{i}"));
        etcd.put(cron, value);
    }
    let revision = etcd.current_revision();
    wait_revision(&svc, revision);
    let want = svc.get(path).json();
    let last = expect_frame(&mut watch, "the final state", 10 * SEC, |f| {
        f.data.is_some() && f.json() == want
    });
    assert!(last.id >= 2);
    assert!(watch.collect_for(Duration::from_millis(300)).iter().all(Frame::is_heartbeat));
});

store_conformance_test!(fn one_etcd_watch_serves_many_clients(kind, store) {
    let server = etcd_with_original_in(store);
    let etcd = server.with_store(store);
    assert_eq!(etcd.watchers(), 0);
    let svc = start_in(kind, &server, store);
    assert!(wait_until(5 * SEC, || etcd.watchers() == 1), "the service watches once");
    let paths = [
        "/v2/configwatcher?watch=1",
        "/v2/coreinfowatcher?watch=1",
        "/v2/proxywatcher?appname=hello&watch=1",
        "/v2/nodes?watch=1",
        "/v2/containers?nodename=node1&watch=1&heartbeat=1",
    ];
    let mut watches: Vec<SseStream> = (0..50).map(|i| svc.watch(paths[i % paths.len()])).collect();
    for w in &mut watches {
        assert_eq!(w.next_frame(5 * SEC).expect("init").event, "init");
    }
    wait_revision(&svc, etcd.put("/lain/config/e2e", "many"));
    for w in watches.iter_mut().step_by(paths.len()) {
        expect_frame(w, "the config update", 5 * SEC, |f| f.event == "update");
    }
    // v2 re-issues its long poll after each answer: for a moment etcd counts none.
    assert!(wait_until(5 * SEC, || etcd.watchers() == 1), "still one etcd watcher for 50 clients");
    assert!((0..20).all(|_| etcd.watchers() <= 1), "never more than one");
    if store == Store::V3 {
        assert_eq!(server.watch_stream_count(), 1); // v2: a watcher is its own stream
    }
    assert_eq!(metric(&svc, "lainlet_subscribers{endpoint=\"/v2/nodes\"}"), Some(10.0));
});

store_conformance_test!(fn bytes_from_a_watch_client_do_not_hurt(kind, store) {
    let etcd = etcd_with_original_in(store);
    let svc = start_in(kind, &etcd, store);
    let etcd = etcd.with_store(store);
    let mut noisy = svc.watch("/v2/configwatcher?target=vip&watch=1");
    let mut quiet = svc.watch("/v2/configwatcher?target=vip&watch=1");
    noisy.next_frame(5 * SEC).expect("init");
    quiet.next_frame(5 * SEC).expect("init");
    noisy.write_raw(b"GET /v2/nodes HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    noisy.write_raw(&vec![b'x'; 256 * 1024]).unwrap();
    noisy.write_raw(b"\r\n\r\n\0\xff garbage").unwrap();
    wait_revision(&svc, etcd.put("/lain/config/vip", "192.168.77.210"));
    let data = Some(r#"{"vip":"192.168.77.210"}"#.to_owned());
    for w in [&mut noisy, &mut quiet] {
        let f = expect_frame(w, "update", 5 * SEC, |f| f.event == "update");
        assert_eq!(f.data, data);
    }
    assert_eq!(svc.get("/healthz").status, 200);
    assert!(!noisy.is_closed() && !quiet.is_closed());
});

store_conformance_test!(fn sigterm_ends_watch_streams_and_exits_0(kind, store) {
    let etcd = etcd_with_original_in(store);
    let mut svc = start_in(kind, &etcd, store);
    let mut watches: Vec<SseStream> = ["/v2/nodes?watch=1", "/v2/configwatcher?watch=1&heartbeat=1"]
        .iter()
        .map(|p| svc.watch(p))
        .collect();
    for w in &mut watches {
        w.next_frame(5 * SEC).expect("init");
    }
    // An idle keep-alive connection must not hold the shutdown up either.
    let client = HttpClient::new().header("Connection", "keep-alive");
    let mut idle = client.connect(svc.addr()).unwrap();
    client.write_request(&mut idle, "GET", svc.addr(), "/version", &[], b"").unwrap();
    svc.signal(libc::SIGTERM).unwrap();
    for w in &mut watches {
        assert!(w.wait_closed(3 * SEC), "the stream ends on SIGTERM");
    }
    let status = svc.wait_exit(5 * SEC).expect("exits within seconds");
    assert_eq!(status.code(), Some(0), "{}", svc.log());
});

store_conformance_test!(fn a_client_that_does_not_read_stalls_nobody_and_gets_the_newest_state(kind, store) {
    let server = EtcdServer::new().expect("start etcd");
    let etcd = server.with_store(store);
    let demo = lainlet_fixtures::demo();
    etcd.load(demo.kvs.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())));
    let svc = start_in(kind, &server, store);
    // ~200 KB per frame; this client reads nothing until the end.
    let big = "/v2/coreinfowatcher";
    let mut slow = svc.watch(&format!("{big}?watch=1"));
    let mut fast = svc.watch("/v2/configwatcher?target=vip&watch=1");
    fast.next_frame(5 * SEC).expect("init");
    let cron = "/lain/deployd/pod_groups/hello/hello.worker.cron";
    let value = String::from_utf8(etcd.get(cron).unwrap()).unwrap();
    for i in 0..100 {
        etcd.put(cron, value.replace("172.20.0.4", &format!("172.20.2.{i}")));
        if i % 10 == 0 {
            let vip = format!("192.168.78.{i}");
            etcd.put("/lain/config/vip", &vip);
            let f = expect_frame(&mut fast, "the vip update", 5 * SEC, |f| f.event == "update");
            assert_eq!(f.json(), json!({ "vip": vip }), "the fast client is never held up");
        }
    }
    wait_revision(&svc, etcd.current_revision());
    assert!(
        metric(&svc, "lainlet_conflated_frames_total").unwrap() > 0.0,
        "the slow client's undelivered states were conflated"
    );
    let want = svc.get(big).json();
    let frames = slow.frames_until(|f| f.data.is_some() && f.json() == want, 30 * SEC);
    let last = frames.last().expect("frames");
    assert_eq!(last.json(), want, "the slow client ends at the newest state");
    assert!(frames.len() < 101, "{} frames: states were skipped, not queued", frames.len());
});

conformance_test!(fn idle_watches_cost_no_thread_and_little_memory(kind) {
    let svc = Service::command(kind).web_auto().arg("--demo").start().unwrap();
    let pid = svc.pid().unwrap();
    let status = |field: &str| -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let mut warm = svc.watch("/v2/nodes?watch=1");
    warm.next_frame(5 * SEC).expect("init");
    let (threads, rss) = (status("Threads"), status("VmRSS"));
    let mut watches: Vec<SseStream> = (0..300).map(|_| svc.watch("/v2/nodes?watch=1")).collect();
    for w in &mut watches {
        assert_eq!(w.next_frame(5 * SEC).expect("init").event, "init");
    }
    assert!(status("Threads") <= threads + 1, "{threads} -> {} threads", status("Threads"));
    let per_watch = status("VmRSS").saturating_sub(rss) / 300;
    assert!(per_watch < 32, "{per_watch} KiB per idle watch");
    assert_eq!(svc.get("/version").status, 200, "plain requests still served");
});
