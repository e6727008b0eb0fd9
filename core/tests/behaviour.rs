//! Scenario tests of the rules the engine keeps (DESIGN "Rules the core keeps", spec §2.2,
//! §3), each named after the behaviour it checks.

mod support;

use std::time::Duration;

use lainlet_core::{Engine, EventName, Method, Reply, Request};
use lainlet_fixtures::{
    auth_fixture, keys, original, original_pod_groups, pod_group_value, Change,
};
use support::{golden_config, ip, parts, Harness};

fn body(r: &lainlet_core::Response) -> String {
    String::from_utf8(r.body.to_vec()).unwrap()
}

#[test]
fn authorisation_follows_the_observed_table_of_spec_2_2() {
    let mut h = Harness::new(auth_fixture(), golden_config());
    let cases: &[(&str, &str, u16, &str)] = &[
        ("127.0.0.5", "/v2/coreinfowatcher", 200, "client1.web.web"),
        (
            "127.0.0.5",
            "/v2/proxywatcher?appname=hello",
            400,
            "authorize failed, no permission",
        ),
        (
            "127.0.0.5",
            "/v2/configwatcher?target=domain",
            200,
            r#"{"domain":"lain.local"}"#,
        ),
        (
            "127.0.0.5",
            "/v2/configwatcher?target=vip",
            400,
            "authorize failed, super required",
        ),
        // The original let a shorter prefix of a secret key through (W11); we do not.
        (
            "127.0.0.5",
            "/v2/configwatcher?target=v",
            400,
            "authorize failed, super required",
        ),
        (
            "127.0.0.5",
            "/v2/nodes",
            400,
            "authorize failed, super required",
        ),
        (
            "127.0.0.5",
            "/appname",
            400,
            "authorize failed, super required",
        ),
        (
            "127.0.0.6",
            "/appname?ip=127.0.0.5",
            200,
            r#"{"appname":"client1"}"#,
        ),
        ("127.0.0.6", "/v2/proxywatcher", 200, "hello.web.web"),
        (
            "127.0.0.9",
            "/v2/proxywatcher",
            400,
            "authorize failed, can not confirm the app by request ip",
        ),
        (
            "127.0.0.7",
            "/v2/proxywatcher",
            200,
            "hello-service.worker.hello",
        ),
        (
            "127.0.0.5",
            "/v2/procwatcher?appname=*",
            400,
            "authorize failed, no permission",
        ),
        (
            "127.0.0.5",
            "/v2/procwatcher?appname=client1",
            200,
            "ProcName",
        ),
        (
            "127.0.0.7",
            "/v2/procwatcher?appname=hello-service",
            200,
            "ProcName",
        ),
        ("192.168.77.21", "/v2/nodes", 200, "node1"),
        ("127.0.0.6", "/v2/containers?nodename=node1", 200, "client1"),
    ];
    for (caller, path, status, needle) in cases {
        let r = h.get_from(ip(caller), path);
        assert_eq!(r.status, *status, "{caller} {path}: {}", body(&r));
        assert!(
            body(&r).contains(needle),
            "{caller} {path}: {} lacks {needle}",
            body(&r)
        );
    }
    // The app-auto fallback gives the caller its own app only.
    let own = body(&h.get_from(ip("127.0.0.5"), "/v2/coreinfowatcher"));
    assert!(!own.contains("hello.web.web"), "{own}");
    // A portal caller is not super.
    assert_eq!(h.get_from(ip("127.0.0.7"), "/v2/nodes").status, 400);
}

#[test]
fn a_refused_watch_is_an_sse_error_event_then_close() {
    let mut h = Harness::new(auth_fixture(), golden_config());
    let id = h.watch_from(ip("127.0.0.5"), "/v2/configwatcher?target=vip&watch=1");
    let frames = h.drain(id);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        parts(&frames[0]),
        (
            0,
            "error".into(),
            Some("authorize failed, super required".into())
        )
    );
    assert!(frames[0].close);
}

#[test]
fn without_auth_every_caller_is_super() {
    let config = lainlet_core::EngineConfig {
        auth: false,
        ..golden_config()
    };
    let mut h = Harness::new(original(), config);
    assert_eq!(h.get_from(ip("10.9.9.9"), "/v2/nodes").status, 200);
    assert_eq!(
        h.get_from(ip("10.9.9.9"), "/v2/configwatcher?target=vip")
            .status,
        200
    );
}

fn hello_web_with_ip(ip: &str) -> Change {
    let mut pg = original_pod_groups()
        .into_iter()
        .find(|p| p.name == "hello.web.web")
        .unwrap();
    pg.pods[1].containers[0].container_ip = ip.into();
    Change::Put {
        key: pg.key(),
        value: pod_group_value(&pg),
    }
}

#[test]
fn an_undecodable_value_keeps_the_last_good_value_and_is_reported() {
    let mut h = Harness::golden();
    let key = keys::pod_group("hello", "hello.web.web");
    h.apply(&[Change::Put {
        key: key.clone(),
        value: br#"{"Spec": 5}"#.to_vec(),
    }]);
    assert!(
        body(&h.get("/v2/proxywatcher?appname=hello")).contains("172.20.0.3"),
        "last good value kept"
    );
    let debug = body(&h.get("/debug"));
    assert!(
        debug.contains(&key) && debug.contains("invalid pod group value"),
        "{debug}"
    );
    assert!(body(&h.get("/metrics")).contains("lainlet_undecodable_keys 1"));
    // Other keys still update.
    h.apply(&[Change::Put {
        key: keys::config("vip"),
        value: b"10.0.0.1".to_vec(),
    }]);
    assert_eq!(
        body(&h.get("/v2/configwatcher?target=vip")),
        r#"{"vip":"10.0.0.1"}"#
    );
    // A good value clears the report.
    h.apply(&[hello_web_with_ip("172.20.0.99")]);
    assert!(body(&h.get("/v2/proxywatcher?appname=hello")).contains("172.20.0.99"));
    assert!(!body(&h.get("/debug")).contains("invalid pod group value"));
}

#[test]
fn deleting_a_key_removes_exactly_that_key_and_no_sibling() {
    let mut h = Harness::golden();
    h.apply(&[
        Change::Delete {
            key: "/lain/deployd/pod_groups/hello".into(),
        }, // deployd's dir cleanup
        Change::Delete {
            key: keys::config("vip"),
        },
    ]);
    assert!(body(&h.get("/v2/appswatcher")).contains("hello-service"));
    assert!(body(&h.get("/v2/configwatcher?target=vips")).contains("vips/192.168.77.201"));
    h.apply(&[Change::Delete {
        key: keys::pod_group("hello", "hello.web.web"),
    }]);
    let apps = body(&h.get("/v2/coreinfowatcher"));
    assert!(
        !apps.contains("hello.web.web")
            && apps.contains("hello-service.worker.hello")
            && apps.contains("hello.worker.cron")
    );
}

#[test]
fn a_slow_watcher_gets_only_the_newest_state_with_constant_memory() {
    let mut h = Harness::golden();
    let id = h.watch("/v2/proxywatcher?appname=hello&watch=1");
    assert_eq!(h.drain(id).len(), 1, "init");
    for i in 0..50 {
        h.apply(&[hello_web_with_ip(&format!("172.20.0.{}", 100 + i))]);
    }
    let frames = h.drain(id);
    assert_eq!(frames.len(), 1, "49 intermediate states conflated");
    let (id_no, event, data) = parts(&frames[0]);
    assert_eq!((id_no, event.as_str()), (51, "update"));
    assert!(data.unwrap().contains("172.20.0.149"));
    assert_eq!(h.engine.delivery_stats().conflated, 49);
}

#[test]
fn a_watcher_that_reads_nothing_does_not_delay_others() {
    let mut h = Harness::golden();
    let slow = h.watch("/v2/proxywatcher?appname=hello&watch=1");
    let fast = h.watch("/v2/proxywatcher?appname=hello&watch=1");
    h.drain(fast);
    for i in 0..3 {
        h.apply(&[hello_web_with_ip(&format!("172.20.0.{}", 10 + i))]);
        let frames = h.drain(fast);
        assert_eq!(frames.len(), 1);
        assert!(parts(&frames[0])
            .2
            .unwrap()
            .contains(&format!("172.20.0.{}", 10 + i)));
    }
    assert_eq!(
        h.drain(slow).len(),
        1,
        "the slow one has its newest state waiting"
    );
}

#[test]
fn heartbeats_arrive_every_period_with_id_zero_and_never_displace_data() {
    let mut h = Harness::golden();
    let id = h.watch("/v2/configwatcher?target=domain&watch=1&heartbeat=5");
    h.drain(id);
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_secs(5))
    );
    h.advance(Duration::from_secs(4));
    assert!(h.drain(id).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(h.engine.poll_wakeup(), Some(id));
    let frames = h.drain(id);
    assert_eq!(
        frames.iter().map(|f| f.to_bytes()).collect::<Vec<_>>(),
        vec![b"id: 0\nevent: heartbeat\n\n".to_vec()]
    );
    h.apply(&[Change::Put {
        key: keys::config("domain"),
        value: b"x".to_vec(),
    }]);
    h.advance(Duration::from_secs(5));
    let events: Vec<String> = h.drain(id).iter().map(|f| parts(f).1).collect();
    assert_eq!(events, ["update", "heartbeat"]);
}

#[test]
fn a_disconnected_watcher_is_forgotten() {
    let mut h = Harness::golden();
    let id = h.watch("/v2/nodes?watch=1&heartbeat=1");
    assert_eq!(h.engine.subscriber_count(), 1);
    h.engine.handle_disconnect(id);
    assert_eq!(h.engine.subscriber_count(), 0);
    h.advance(Duration::from_secs(2));
    assert!(h.engine.poll_frame(id).is_none());
}

#[test]
fn a_resync_sends_only_what_changed_including_selections_that_became_empty() {
    let mut h = Harness::golden();
    let domains = h.watch("/v2/configwatcher?target=domains&watch=1");
    let vip = h.watch("/v2/configwatcher?target=vip&watch=1");
    h.drain(domains);
    h.drain(vip);
    // While the watch was broken, domains/* was deleted.
    let key = keys::config("domains/*.lain.local");
    h.store.apply(&Change::Delete { key });
    h.resync();
    let frames: Vec<_> = h.drain(domains).iter().map(parts).collect();
    assert_eq!(frames, vec![(2, "delete".into(), Some("{}".into()))]);
    assert!(h.drain(vip).is_empty(), "nothing changed for vip");
}

#[test]
fn replayed_and_stale_events_are_ignored() {
    let mut h = Harness::golden();
    let revision = h.store.revision;
    h.engine.handle_events(
        h.now,
        [support::event(
            &Change::Put {
                key: keys::config("vip"),
                value: b"old".to_vec(),
            },
            revision,
        )],
    );
    assert_eq!(
        body(&h.get("/v2/configwatcher?target=vip")),
        r#"{"vip":"192.168.77.201"}"#
    );
}

#[test]
fn before_the_first_snapshot_requests_are_refused_clearly() {
    let mut engine = Engine::new(golden_config());
    let h = Harness::golden();
    let ctx = h.ctx(ip("127.0.0.1"));
    let Reply::Response(r) = engine.handle_request(&Request::new(Method::Get, "/v2/nodes"), &ctx)
    else {
        panic!()
    };
    assert_eq!(r.status, 503);
    let Reply::Response(r) = engine.handle_request(&Request::new(Method::Get, "/healthz"), &ctx)
    else {
        panic!()
    };
    assert_eq!(r.status, 503);
    let Reply::Stream(id) =
        engine.handle_request(&Request::new(Method::Get, "/v2/nodes?watch=1"), &ctx)
    else {
        panic!()
    };
    let frame = engine.poll_frame(id).unwrap();
    assert!(frame.close && parts(&frame).1 == "error");
    // Events before the snapshot are ignored: the shell must read a snapshot first.
    engine.handle_events(
        h.now,
        [support::event(
            &Change::Put {
                key: keys::config("vip"),
                value: b"x".to_vec(),
            },
            99,
        )],
    );
    assert!(!engine.is_ready());
}

#[test]
fn routing_and_parameter_errors_have_clear_answers() {
    let mut h = Harness::golden();
    let ctx = h.ctx(ip("127.0.0.1"));
    let Reply::Response(r) = h
        .engine
        .handle_request(&Request::new(Method::Other, "/v2/nodes"), &ctx)
    else {
        panic!()
    };
    assert_eq!(
        (r.status, body(&r).as_str(), r.nosniff),
        (404, "404 page not found\n", true)
    );
    let Reply::Response(r) = h
        .engine
        .handle_request(&Request::new(Method::Get, "/v2/apps"), &ctx)
    else {
        panic!()
    };
    assert_eq!((r.status, body(&r).as_str()), (404, "404 not found"));
    let r = h.get("/v2/nodes?watch=perhaps");
    assert_eq!(
        (r.status, body(&r).as_str()),
        (400, r#"invalid value for parameter watch: "perhaps""#)
    );
    assert_eq!(
        h.get("/v2/procwatcher/?appname=hello").status,
        200,
        "trailing slash"
    );
    let Reply::Response(r) = h
        .engine
        .handle_request(&Request::new(Method::Head, "/v2/nodes?watch=1"), &ctx)
    else {
        panic!("HEAD never streams")
    };
    assert_eq!(r.status, 200);
}

#[test]
fn the_webrouter_rule_passes_at_exactly_half_alive_and_fails_below() {
    let mut h = Harness::golden();
    h.apply(&[hello_web_with_ip("")]);
    assert_eq!(
        h.get("/v2/webrouter/webprocs?appname=hello").status,
        200,
        "1 of 2 alive"
    );
    let id = h.watch("/v2/webrouter/webprocs?appname=hello&watch=1");
    h.drain(id);
    let mut pg = original_pod_groups()
        .into_iter()
        .find(|p| p.name == "hello.web.web")
        .unwrap();
    for pod in &mut pg.pods {
        pod.containers[0].container_ip.clear();
    }
    h.apply(&[Change::Put {
        key: pg.key(),
        value: pod_group_value(&pg),
    }]);
    let r = h.get("/v2/webrouter/webprocs?appname=hello");
    assert_eq!(
        (r.status, body(&r).as_str()),
        (500, "over half of the containers lost their IPs")
    );
    let frames = h.drain(id);
    assert_eq!(
        parts(&frames[0]),
        (0, EventName::Error.as_str().into(), Some(body(&r)))
    );
    assert!(frames[0].close);
}

#[test]
fn the_edge_case_dump_loads_and_every_endpoint_answers() {
    let mut h = Harness::new(lainlet_fixtures::edge_cases(), golden_config());
    for e in lainlet_core::Endpoint::ALL {
        let r = h.get(e.path());
        assert!(
            matches!(r.status, 200 | 400 | 500),
            "{}: {}",
            e.path(),
            r.status
        );
        if r.status == 500 {
            assert!(
                body(&r) == "over half of the containers lost their IPs" || body(&r) == "empty key"
            );
        }
    }
    assert!(
        h.engine.decode_failures().count() >= 3,
        "the dump's bad values are reported"
    );
}

#[test]
fn values_that_are_not_pod_groups_keep_the_last_good_value_and_are_reported() {
    let key = keys::pod_group("hello", "hello.web.web");
    for bad in [
        &b"[]"[..],
        b"null",
        b"{}",
        br#"{"Spec":null}"#,
        b"\"\"",
        b"0",
        b"true",
    ] {
        let mut h = Harness::golden();
        let proxy = body(&h.get("/v2/proxywatcher?appname=hello"));
        h.apply(&[Change::Put {
            key: key.clone(),
            value: bad.to_vec(),
        }]);
        let shown = String::from_utf8_lossy(bad);
        assert_eq!(
            body(&h.get("/v2/proxywatcher?appname=hello")),
            proxy,
            "{shown}: the pods stay"
        );
        assert!(
            body(&h.get("/debug")).contains(&key),
            "{shown}: reported in /debug"
        );
        assert!(
            body(&h.get("/metrics")).contains("lainlet_undecodable_keys 1"),
            "{shown}: counted in /metrics"
        );
    }
}

#[test]
fn debug_shows_raw_values_to_super_callers_only_and_keeps_its_fields_for_everyone() {
    let mut h = Harness::golden();
    h.apply(&[Change::Put {
        key: keys::config("rsyncd_secrets"),
        value: b"s3cr3t-uuid".to_vec(),
    }]);
    let secret = "czNjcjN0LXV1aWQ="; // base64 of the value
    let local: serde_json::Value = serde_json::from_str(&body(&h.get("/debug"))).unwrap();
    assert_eq!(
        local["watchers"]["config"]["LastEvent"]["Data"][0]["Value"],
        secret
    );
    let stranger = body(&h.get_from(ip("127.0.0.99"), "/debug"));
    assert!(!stranger.contains(secret), "{stranger}");
    let stranger: serde_json::Value = serde_json::from_str(&stranger).unwrap();
    let data = &stranger["watchers"]["config"]["LastEvent"]["Data"][0];
    assert_eq!(
        data["Key"], "/lain/config/rsyncd_secrets",
        "the fields stay"
    );
    assert_eq!(data["Value"], "", "the value is redacted");
    for field in ["connections", "goroutines", "watchers"] {
        assert!(stranger.get(field).is_some(), "{field}");
    }
}

#[test]
fn debug_last_events_are_the_originals_zero_until_the_first_event_then_update_codes() {
    let mut h = Harness::golden();
    let debug = |h: &mut Harness| -> serde_json::Value {
        serde_json::from_str(&body(&h.get("/debug"))).unwrap()
    };
    // After the first snapshot: zero values everywhere (spec §2.4.16; the original's too).
    let start = debug(&mut h);
    for family in ["config", "container", "depends", "nodes", "podgroup"] {
        let w = &start["watchers"][family];
        assert_eq!(w["UpdateTime"], "0001-01-01T00:00:00Z", "{family}: {w}");
        assert_eq!(w["LastEvent"]["Action"], 0, "{family}: {w}");
        assert_eq!(w["LastEvent"]["Key"], "", "{family}: {w}");
    }
    // A put is UPDATE (2) whatever etcd called it; a delete is DELETE (3).
    let pod_group = keys::pod_group("hello", "hello.web.web");
    h.apply(&[Change::Put {
        key: keys::config("vip"),
        value: b"192.168.77.240".to_vec(),
    }]);
    h.apply(&[Change::Delete {
        key: pod_group.clone(),
    }]);
    let after = debug(&mut h);
    let config = &after["watchers"]["config"]["LastEvent"];
    assert_eq!(config["Action"], 2, "{config}");
    assert_eq!(config["Key"], "/lain/config/vip", "{config}");
    let pods = &after["watchers"]["podgroup"]["LastEvent"];
    assert_eq!(pods["Action"], 3, "{pods}");
    assert_eq!(pods["Key"], pod_group, "{pods}");
    // The container family's status stays at zero values forever (the original kept it on a
    // copy).
    let containers = &after["watchers"]["container"];
    assert_eq!(containers["LastEvent"]["Action"], 0, "{containers}");
    assert_eq!(
        containers["UpdateTime"], "0001-01-01T00:00:00Z",
        "{containers}"
    );
}
