//! The live status page and its stream (`/`, `/status`, `/status/stream`): who may see them,
//! what a frame says, and how the stream is timed through the heartbeat deadlines.
// Plays the shell: reads the clock the core may not (core/clippy.toml).
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use lainlet_core::{
    Engine, EngineConfig, EtcdApi, Method, Reply, Request, Snapshot, Store, WatchResponse,
};
use lainlet_fixtures::{keys, Change};
use serde_json::Value;
use support::{golden_config, ip, localhost, parts, Harness};

const SEC: Duration = Duration::from_secs(1);

/// A harness whose engine was started 5 s before its clock, following the v3 store of two etcd
/// endpoints.
fn harness() -> Harness {
    let mut h = Harness::golden();
    let started = h.now;
    h.now += 5 * SEC;
    let config = EngineConfig {
        started: Some(started),
        etcd_urls: vec!["http://10.0.0.1:4001".into(), "http://10.0.0.2:4001".into()],
        etcd_endpoints: 2,
        etcd_api: EtcdApi::Only(Store::V3),
        ..golden_config()
    };
    h.engine = Engine::new(config);
    let now = h.now;
    let _ = h.engine.poll_etcd(now);
    h.engine.handle_etcd_connected(now);
    h.engine.handle_snapshot(now, support::snapshot(&h.store));
    let _ = h.engine.poll_etcd(now);
    let created = WatchResponse {
        created: true,
        ..WatchResponse::default()
    };
    let _ = h.engine.handle_watch_response(now, created);
    h
}

fn status_of(frame: &lainlet_core::Frame) -> Value {
    let (_, event, data) = parts(frame);
    assert_eq!(event, "status");
    assert_eq!(frame.id, None, "status frames carry no id");
    serde_json::from_str(&data.expect("data")).unwrap()
}

#[test]
fn the_page_is_served_to_local_callers_only_and_loads_nothing_from_elsewhere() {
    let mut h = harness();
    for path in ["/", "/status", "/status/"] {
        for peer in ["127.0.0.1", "::1", "192.168.77.21"] {
            let r = h.get_from(ip(peer), path);
            assert_eq!(r.status, 200, "{path} from {peer}");
            assert_eq!(r.content_type, "text/html; charset=utf-8");
        }
        let r = h.get_from(ip("127.0.0.5"), path);
        assert_eq!(r.status, 403, "{path} from another loopback address");
        assert!(String::from_utf8_lossy(&r.body).contains("local callers only"));
        assert_eq!(h.get_from(ip("10.1.2.3"), path).status, 403);
    }
    let page = h.get("/");
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("new EventSource(\"/status/stream\")"));
    for external in ["http://", "https://", "//cdn", "@import", "<link", "src="] {
        assert!(!html.contains(external), "the page refers to {external}");
    }
    let csp = page
        .headers()
        .find(|(n, _)| *n == "Content-Security-Policy")
        .map(|(_, v)| v)
        .expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
}

#[test]
fn the_stream_is_refused_to_other_callers_with_a_clear_403() {
    let mut h = harness();
    let ctx = h.ctx(ip("172.20.0.9"));
    let reply = h
        .engine
        .handle_request(&Request::new(Method::Get, "/status/stream"), &ctx);
    let Reply::Response(r) = reply else {
        panic!("a stream for a non-local caller")
    };
    assert_eq!(r.status, 403);
    assert_eq!(h.engine.subscriber_count(), 0);
}

#[test]
fn a_status_stream_sends_its_first_frame_at_once_then_one_every_second() {
    let mut h = harness();
    let id = h.watch("/status/stream");
    let first = h.drain(id);
    assert_eq!(first.len(), 1);
    let s = status_of(&first[0]);
    assert_eq!(s["uptime_ms"], 5000);
    assert_eq!(s["health"], "ok");
    assert_eq!(s["mode"], "etcd");
    assert_eq!(s["etcd"]["state"], "watching");
    assert_eq!(s["etcd"]["store"], "v3");
    assert_eq!(s["etcd"]["store_reason"], "--etcd-api v3");
    assert_eq!(s["etcd"]["endpoint"], "http://10.0.0.1:4001");
    assert_eq!(s["etcd"]["applied_revision"], h.store.revision);
    assert_eq!(s["snapshots"], 1);
    assert_eq!(s["resyncs"], 0);
    assert_eq!(s["ready_after_ms"], 5000);
    assert_eq!(s["watchers"]["status_pages"], 1);

    assert_eq!(h.engine.poll_timeout(), Some(h.now + SEC));
    h.advance(SEC / 2);
    assert!(h.drain(id).is_empty(), "not due yet");
    h.advance(SEC / 2);
    let next = h.drain(id);
    assert_eq!(next.len(), 1, "one frame per period, no heartbeat");
    assert_eq!(status_of(&next[0])["uptime_ms"], 6000);

    // A page that does not read for three periods gets the newest status only.
    h.advance(SEC);
    h.advance(SEC);
    h.advance(SEC);
    let late = h.drain(id);
    assert_eq!(late.len(), 1);
    assert_eq!(status_of(&late[0])["uptime_ms"], 9000);

    h.engine.handle_disconnect(id);
    h.advance(SEC);
    assert_eq!(
        h.engine.poll_timeout(),
        None,
        "a closed stream is timed no more"
    );
    assert!(h.drain(id).is_empty());
}

#[test]
fn a_frame_shows_watchers_per_view_decode_failures_and_resyncs() {
    let mut h = harness();
    let hello = h.watch("/v2/procwatcher?appname=hello&watch=1");
    let hello2 = h.watch("/v2/procwatcher/?appname=hello&watch=1");
    let nodes = h.watch("/v2/nodes?watch=1");
    for id in [hello, hello2, nodes] {
        h.drain(id);
    }
    let delivered = h.engine.delivery_stats();
    h.now += 2 * SEC;
    let bad = format!("{}broken/broken.web.web", keys::POD_GROUPS);
    h.apply(&[Change::Put {
        key: bad.clone(),
        value: b"{not json".to_vec(),
    }]);
    let bad_at = h.store.revision;
    h.now += 3 * SEC;
    h.resync();
    let id = h.watch("/status/stream");
    let s = status_of(&h.drain(id)[0]);
    assert_eq!(
        h.engine.delivery_stats().frames,
        delivered.frames,
        "status frames are not counted as delivered view frames"
    );

    let w = &s["watchers"];
    assert_eq!(w["total"], 3);
    assert_eq!(w["by_endpoint"]["/v2/procwatcher"], 2);
    assert_eq!(w["by_endpoint"]["/v2/nodes"], 1);
    let rows = w["views"].as_array().unwrap();
    assert!(rows.contains(&serde_json::json!(
        {"endpoint": "/v2/procwatcher", "selection": "hello/", "watchers": 2}
    )));
    assert!(rows.contains(&serde_json::json!(
        {"endpoint": "/v2/nodes", "selection": "*", "watchers": 1}
    )));

    let failures = s["decode_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["key"], bad.as_str());
    assert_eq!(failures[0]["revision"], bad_at);
    assert_eq!(failures[0]["age_ms"], 3000, "since the bad value arrived");
    assert!(failures[0]["error"].as_str().unwrap().len() > 3);
    assert_eq!(s["snapshots"], 2);
    assert_eq!(s["resyncs"], 1);
    assert!(s["keys"]["podgroup"].as_u64().unwrap() > 0);
}

#[test]
fn demo_mode_says_demo_and_names_no_endpoint() {
    let mut engine = Engine::new(EngineConfig::default());
    let now = std::time::Instant::now();
    engine.handle_demo(
        now,
        Snapshot {
            revision: 7,
            kvs: vec![],
        },
    );
    let ctx = lainlet_core::RequestContext {
        peer: localhost(),
        now: now + 2 * SEC,
        wall: std::time::SystemTime::UNIX_EPOCH,
        connections: 1,
    };
    let Reply::Stream(id) =
        engine.handle_request(&Request::new(Method::Get, "/status/stream"), &ctx)
    else {
        panic!("no stream")
    };
    let s = status_of(&engine.poll_frame(id).unwrap());
    assert_eq!(s["mode"], "demo");
    assert_eq!(s["etcd"]["state"], "demo");
    assert_eq!(s["etcd"]["endpoint"], Value::Null);
    assert_eq!(s["etcd"]["store"], Value::Null);
    assert_eq!(
        s["uptime_ms"], 0,
        "no start time: counted from the first status request"
    );
    assert_eq!(s["ready_after_ms"], 0);
}

#[test]
fn a_head_of_the_stream_opens_nothing() {
    let mut h = harness();
    let ctx = h.ctx(localhost());
    let reply = h
        .engine
        .handle_request(&Request::new(Method::Head, "/status/stream"), &ctx);
    let Reply::Response(r) = reply else {
        panic!("HEAD opened a stream")
    };
    assert_eq!((r.status, r.content_type), (200, "text/event-stream"));
    assert_eq!(h.engine.subscriber_count(), 0);
    assert!(!Request::new(Method::Head, "/status/stream").is_watch());
    assert!(Request::new(Method::Get, "/status/stream").is_watch());
}
