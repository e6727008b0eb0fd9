//! End to end, gRPC (`-grpc.addr`): a real etcd holding the original's fixture set, the real
//! `lainlet` binary, and a gRPC client that is not ours — Python `grpcio` with stubs generated
//! from `grpc/proto/message.proto` at test time (`tests/python/grpc_client.py`). Every rpc is
//! compared field by field with the HTTP view of the same data, fetched in the same test from
//! the same source address; authorisation by the peer address (through a relay bound to
//! another loopback address); watches while etcd changes, a reader that does not read,
//! cancellation, shutdown; TLS; and the start-up refusals (bad TLS flags, `lainlet-smol`).
//!
//! Only the `lainlet` binary serves gRPC; `lainlet-smol` refuses it (tested here too).

mod common;
mod grpc;

use common::*;
use grpc::*;
use lainlet_fixtures::{
    original_pod_groups, pod_group_value, ContainerParams, PodGroupParams, PodParams,
};
use lainlet_tests::*;
use serde_json::{json, Value};

/// Calls covering every view rpc on the fixture set: defaults (empty fields), selections,
/// misses and the views' errors.
fn fixture_calls() -> Vec<Value> {
    let mut batch = Vec::new();
    let mut get = |service: &str, request: Value| batch.push(call(service, "Get", request));
    get("Appname", json!({"ip": "172.20.0.2"}));
    get("Appname", json!({"ip": "172.20.0.10"})); // a portal: its service app
    get("Appname", json!({"ip": "10.9.9.9"})); // unknown
    get("Appname", json!({})); // the caller itself (127.0.0.1: unknown)
    get("Apps", json!({}));
    get("Backupctl", json!({}));
    get("Backupctl", json!({"Appname": "hello"}));
    get("Config", json!({}));
    get("Config", json!({"Target": "vip"}));
    get("Config", json!({"Target": "domains"}));
    get("Config", json!({"Target": "nonexist"}));
    get("Containers", json!({}));
    get("Containers", json!({"Nodename": "node1"}));
    get("Containers", json!({"Nodename": "192.168.77.22"}));
    get("Coreinfo", json!({}));
    get("Coreinfo", json!({"Appname": "hello"}));
    get("Coreinfo", json!({"Appname": "nope"}));
    get("Depends", json!({}));
    get("Depends", json!({"Target": "hello-service"}));
    get("Localspec", json!({})); // this node (--ip), unlike the original
    get("Localspec", json!({"Nodeip": "192.168.77.22"}));
    get("Nodes", json!({}));
    get("Nodes", json!({"Name": "node1"}));
    get("Podgroup", json!({"Appname": "hello"}));
    get("Podgroup", json!({"Appname": "*"}));
    get("Podgroup", json!({})); // appname reequired
    get("Proxy", json!({}));
    get("Proxy", json!({"Appname": "hello"}));
    get("RebellionLocalprocs", json!({}));
    get("RebellionLocalprocs", json!({"Appname": "hello"}));
    get("StreamrouterPorts", json!({}));
    get("StreamrouterPorts", json!({"Appname": "redis"}));
    get("StreamrouterStreamprocs", json!({}));
    get("StreamrouterStreamprocs", json!({"Appname": "redis"}));
    get("StreamrouterStreamprocs", json!({"Appname": "hello"})); // no stream ports: error
    get("WebrouterWebprocs", json!({}));
    get("WebrouterWebprocs", json!({"Appname": "hello"}));
    get("WebrouterWebprocs", json!({"Appname": "redis"})); // dead-container error
                                                           // Every Watch: its first message is the current reply (or the view's error).
    let first_watches: Vec<Value> = batch
        .iter()
        .filter(|c| service(c["service"].as_str().unwrap()).watch)
        .map(|c| {
            call(
                c["service"].as_str().unwrap(),
                "Watch",
                c["request"].clone(),
            )
        })
        .collect();
    batch.extend(first_watches);
    batch
}

#[test]
fn every_rpc_answers_what_the_http_view_of_the_same_data_answers() {
    tokio_only(|| {
        let etcd = etcd_with_original();
        let g = start_grpc(&etcd, &[]);
        let batch = fixture_calls();
        let results = calls(&g.addr, &[], &batch);
        let local = HttpClient::new();
        let mut services = std::collections::BTreeSet::new();
        for (spec, got) in batch.iter().zip(&results) {
            let want = expected_for(&g.svc, &local, spec);
            assert_eq!(got, &want, "{spec}");
            services.insert(format!("{}.{}", spec["service"], spec["rpc"]));
        }
        // 13 services with Get and Watch, 2 with Get only.
        assert_eq!(services.len(), 13 * 2 + 2, "{services:?}");
        // Some answers carry data (the comparison above is not between two empty replies).
        let data = |i: usize| {
            results[i]["reply"]["Data"]
                .as_object()
                .map_or(0, |d| d.len())
        };
        assert!(data(5) >= 3 && data(7) >= 8 && data(11) >= 8, "{results:?}");

        // Lainlet.Version: /version, and its major.minor.
        let version = g.svc.get("/version").text();
        let api: Vec<&str> = version.split('.').take(2).collect();
        let got = calls(&g.addr, &[], &[call("Lainlet", "Version", json!({}))]);
        assert_eq!(
            got[0],
            json!({"reply": {"Version": version, "APIVersion": api.join(".")}})
        );

        // Lainlet.Status: /debug's watchers (no watch is open now).
        wait_subscribers(&g.svc, 0);
        let got = calls(&g.addr, &[], &[call("Lainlet", "Status", json!({}))]);
        let status = &got[0]["reply"];
        let debug = g.svc.get("/debug").json();
        assert!(status["Goroutines"].as_i64().unwrap() > 0, "{status}");
        let names = [
            ("config", "configwatcher"),
            ("container", "containerwatcher"),
            ("podgroup", "podgroupwatcher"),
            ("depends", "dependswatcher"),
            ("nodes", "nodeswatcher"),
        ];
        assert_eq!(status["Status"].as_object().unwrap().len(), names.len());
        for (debug_name, grpc_name) in names {
            let d = &debug["watchers"][debug_name];
            let s = &status["Status"][grpc_name];
            assert_eq!(s["NumReceivers"], d["NumReceivers"], "{grpc_name}");
            assert_eq!(s["TotalKeys"], d["TotalKeys"], "{grpc_name}");
            let update = d["UpdateTime"].as_str().unwrap();
            assert_eq!(s["UpdateTime"], json!(unix_seconds(update)), "{grpc_name}");
            let mut event = d["LastEvent"].clone();
            let zero = event["Action"] == 0 && event["Key"] == "" && event["ModifiedIndex"] == 0;
            if zero && event["Data"] == json!([]) {
                event["Data"] = Value::Null; // the original's nil slice
            }
            let got: Value = serde_json::from_str(s["LastEvent"].as_str().unwrap()).unwrap();
            assert_eq!(got, event, "{grpc_name}");
        }
        assert!(
            status["Status"]["configwatcher"]["TotalKeys"]
                .as_i64()
                .unwrap()
                >= 8
        );
    });
}

/// The auth fixture of spec §2.2's observed table: `client1` at 127.0.0.5, a container of the
/// super app `console` at 127.0.0.6, a portal container of `hello-service` at 127.0.0.7.
fn load_auth_fixture(etcd: &EtcdServer) {
    for (key, value) in lainlet_fixtures::auth_writes() {
        etcd.put(&key, value);
    }
}

#[test]
fn authorisation_is_by_the_grpc_peer_address_with_the_http_rules() {
    tokio_only(|| {
        let etcd = etcd_with_original();
        load_auth_fixture(&etcd);
        let g = start_grpc(&etcd, &[]);
        wait_json(
            &g.svc,
            "/appname?ip=127.0.0.7",
            &json!({"appname": "hello-service"}),
        );
        let c = |service: &str, rpc: &str, request: Value| call(service, rpc, request);
        let cases: Vec<(&str, Vec<Value>)> = vec![
            (
                "127.0.0.5",
                vec![
                    c("Coreinfo", "Get", json!({})),
                    c("Proxy", "Get", json!({"Appname": "hello"})),
                    c("Config", "Get", json!({"Target": "domain"})),
                    c("Config", "Get", json!({"Target": "vip"})),
                    c("Config", "Get", json!({"Target": "v"})),
                    c("Nodes", "Get", json!({})),
                    c("Appname", "Get", json!({})),
                    c("Podgroup", "Get", json!({"Appname": "*"})),
                    c("Podgroup", "Get", json!({"Appname": "client1"})),
                    c("Config", "Watch", json!({"Target": "vip"})),
                    c("Coreinfo", "Watch", json!({})),
                ],
            ),
            (
                "127.0.0.6",
                vec![
                    c("Appname", "Get", json!({"ip": "127.0.0.5"})),
                    c("Proxy", "Get", json!({})),
                    c("Nodes", "Watch", json!({})),
                ],
            ),
            ("127.0.0.7", vec![c("Proxy", "Get", json!({}))]),
            (
                "127.0.0.9",
                vec![c("Proxy", "Get", json!({})), c("Proxy", "Watch", json!({}))],
            ),
        ];
        for (ip, batch) in &cases {
            let relay = Relay::start(&g.addr, ip).expect("relay");
            let results = calls(relay.addr(), &[], batch);
            let http = HttpClient::from_ip(ip);
            for (spec, got) in batch.iter().zip(&results) {
                assert_eq!(got, &expected_for(&g.svc, &http, spec), "from {ip}: {spec}");
            }
        }
        // The comparison is not vacuous: the texts and selections of spec §2.2.
        let relay = Relay::start(&g.addr, "127.0.0.5").unwrap();
        let r = calls(relay.addr(), &[], &cases[0].1);
        let denied = |text: &str| json!({"error": {"code": "UNKNOWN", "details": text}});
        assert_eq!(r[5], denied("authorize failed, super required"));
        assert_eq!(r[1], denied("authorize failed, no permission"));
        assert_eq!(r[9], denied("authorize failed, super required"));
        let own: Vec<&String> = r[0]["reply"]["Data"].as_object().unwrap().keys().collect();
        assert_eq!(own, ["client1.web.web"]);
        assert_eq!(r[10]["reply"], r[0]["reply"]);
        let relay = Relay::start(&g.addr, "127.0.0.9").unwrap();
        let r = calls(relay.addr(), &[], &cases[3].1);
        assert_eq!(
            r[0],
            denied("authorize failed, can not confirm the app by request ip")
        );
    });
}

fn cron() -> PodGroupParams {
    original_pod_groups()
        .into_iter()
        .find(|p| p.name == "hello.worker.cron")
        .expect("hello.worker.cron in the fixture")
}

#[test]
fn a_watch_sends_each_change_of_its_reply_including_deletes_and_nothing_else() {
    tokio_only(|| {
        let etcd = etcd_with_original();
        let g = start_grpc(&etcd, &[]);
        let http = |path: &str| {
            let r = g.svc.get(path);
            expected(service(path_service(path)), r.status, &r.body)["reply"].clone()
        };
        fn path_service(path: &str) -> &'static str {
            let bare = path.split('?').next().unwrap();
            RPCS.iter().find(|r| r.path == bare).unwrap().name
        }

        // Config: a put and a delete under the selection.
        let config = spawn_watch(&g.addr, "Config", &json!({"Target": "domains"}), &[]);
        let view = "/v2/configwatcher?target=domains";
        assert_eq!(wait_message(&config, 1, 20 * SEC), http(view));
        etcd.put("/lain/config/domains/new.lain.local", "{}");
        let second = wait_message(&config, 2, 10 * SEC);
        assert!(
            second["Data"]["domains/new.lain.local"].is_string(),
            "{second}"
        );
        assert_eq!(second, http(view));
        etcd.delete("/lain/config/domains/new.lain.local");
        let third = wait_message(&config, 3, 10 * SEC);
        assert!(
            third["Data"].get("domains/new.lain.local").is_none(),
            "{third}"
        );
        assert_eq!(third, http(view));

        // Coreinfo: changes of a pod group, one that changes the HTTP view but not the reply
        // (`Command: null` → `[]`), and a delete.
        let view = "/v2/coreinfowatcher?appname=hello";
        let coreinfo = spawn_watch(&g.addr, "Coreinfo", &json!({"Appname": "hello"}), &[]);
        assert_eq!(wait_message(&coreinfo, 1, 20 * SEC), http(view));
        let mut sse = g.svc.watch(&format!("{view}&watch=1"));
        expect_frame(&mut sse, "init", 10 * SEC, |f| f.event == "init");
        let mut pg = cron();
        pg.containers[0].command = None;
        etcd.put(&pg.key(), pod_group_value(&pg));
        let null_command = wait_message(&coreinfo, 2, 10 * SEC);
        assert_eq!(null_command, http(view));
        expect_frame(&mut sse, "update (null)", 10 * SEC, |f| f.event == "update");
        pg.containers[0].command = Some(vec![]);
        etcd.put(&pg.key(), pod_group_value(&pg));
        let f = expect_frame(&mut sse, "update ([])", 10 * SEC, |f| f.event == "update");
        let data = f.data.unwrap_or_default();
        assert!(
            data.contains(r#""Command":[]"#),
            "the HTTP view changed: {data}"
        );
        // An unchanged reply is not sent: the next message must be the next change's (two
        // pods), not a repeat of message 2.
        pg.pods.push(PodParams {
            instance_no: 2,
            containers: vec![ContainerParams {
                id: "9".repeat(64),
                node_name: "node2".into(),
                node_ip: "192.168.77.22".into(),
                container_ip: "172.20.0.9".into(),
            }],
        });
        etcd.put(&pg.key(), pod_group_value(&pg));
        let two_pods = wait_message(&coreinfo, 3, 10 * SEC);
        assert_ne!(
            two_pods, null_command,
            "message 3 repeats the unchanged reply"
        );
        assert_eq!(two_pods, http(view));
        assert_eq!(
            two_pods["Data"]["hello.worker.cron"]["PodInfos"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        etcd.delete(&pg.key());
        let deleted = wait_message(&coreinfo, 4, 10 * SEC);
        assert_eq!(deleted, http(view));
        let names: Vec<&String> = deleted["Data"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["hello.web.web"]);
        assert_eq!(
            message_count(&config),
            3,
            "the config watch saw only its changes"
        );
    });
}

/// Reads `/proc/<pid>/status`'s `VmRSS` in KiB.
fn rss_kib(svc: &Service) -> u64 {
    let pid = svc.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_reader_that_does_not_read_stalls_nobody_and_gets_the_newest_state() {
    tokio_only(|| {
        const WRITES: usize = 80;
        const SIZE: usize = 256 * 1024;
        let etcd = etcd_with_original();
        etcd.put("/lain/config/big", "start");
        let g = start_grpc(&etcd, &[]);
        let dir = TempDir::new("grpc-lazy").unwrap();
        let resume = dir.path().join("resume");
        let resume_arg = resume.to_str().unwrap();
        let request = json!({"Target": "big"});
        let lazy = spawn_watch(
            &g.addr,
            "Config",
            &request,
            &["--pause-after", "1", "--resume-file", resume_arg],
        );
        let eager = spawn_watch(&g.addr, "Config", &request, &[]);
        wait_line(&lazy, "paused", 20 * SEC);
        wait_message(&eager, 1, 20 * SEC);
        let conflated_before = metric(&g.svc, "lainlet_conflated_frames_total").unwrap_or(0.0);
        let rss_before = rss_kib(&g.svc);

        let value = |i: usize| format!("{i:03}-{}", "x".repeat(SIZE));
        for i in 0..WRITES {
            etcd.put("/lain/config/big", value(i));
        }
        let last = value(WRITES - 1);
        let newest = |reply: &Value| reply["Data"]["big"].as_str() == Some(last.as_str());
        // The eager reader gets the newest state while the lazy one reads nothing.
        let ok = eager.wait_stdout(30 * SEC, |out| {
            lines(out).iter().any(|l| newest(&l["reply"]))
        });
        assert!(ok, "the reading watcher did not get the last state");
        assert_eq!(message_count(&lazy), 1, "the paused reader read nothing");
        let rss_after = rss_kib(&g.svc);
        let written_kib = (WRITES * SIZE / 1024) as u64;
        // What a stuck reader costs is bounded by HTTP/2 flow control plus one state in its
        // slot, not by the number of states it missed.
        assert!(
            rss_after.saturating_sub(rss_before) < written_kib / 2,
            "memory grew with the backlog: {rss_before} KiB → {rss_after} KiB after {written_kib} KiB written"
        );
        // Plain HTTP is served meanwhile.
        assert_eq!(g.svc.get("/v2/configwatcher?target=vip").status, 200);

        std::fs::write(&resume, b"").unwrap();
        let ok = lazy.wait_stdout(30 * SEC, |out| {
            lines(out).iter().any(|l| newest(&l["reply"]))
        });
        assert!(ok, "the reader that resumed did not get the newest state");
        let received = message_count(&lazy) - 1;
        assert!(
            (received as usize) < WRITES,
            "the paused reader got {received} of {WRITES} states: nothing was conflated"
        );
        let conflated = metric(&g.svc, "lainlet_conflated_frames_total").unwrap_or(0.0);
        eprintln!(
            "paused reader: {received} of {WRITES} states; conflated {conflated_before} → \
             {conflated}; RSS {rss_before} → {rss_after} KiB"
        );
        assert!(conflated > conflated_before, "the engine conflated states");
        // Its messages are in order and end at the newest state.
        let got = lines(&lazy.stdout_text());
        let numbers: Vec<&str> = got
            .iter()
            .filter_map(|l| l["reply"]["Data"]["big"].as_str())
            .filter(|v| *v != "start")
            .map(|v| &v[..3.min(v.len())])
            .collect();
        let mut sorted = numbers.clone();
        sorted.sort();
        assert_eq!(numbers, sorted, "states in order");
        assert_eq!(*numbers.last().unwrap(), format!("{:03}", WRITES - 1));
    });
}

const PROXY_SUBSCRIBERS: &str = r#"lainlet_subscribers{endpoint="/v2/proxywatcher"}"#;

#[test]
fn a_cancelled_or_vanished_watch_is_gone_at_once() {
    tokio_only(|| {
        let etcd = etcd_with_original();
        let g = start_grpc(&etcd, &[]);
        assert_eq!(subscribers(&g.svc), 0);

        // A client that goes away (process killed: the connection closes).
        let watch = spawn_watch(&g.addr, "Proxy", &json!({}), &[]);
        wait_message(&watch, 1, 20 * SEC);
        assert_eq!(subscribers(&g.svc), 1);
        assert_eq!(metric(&g.svc, PROXY_SUBSCRIBERS), Some(1.0));
        drop(watch);
        wait_subscribers(&g.svc, 0);

        // A client that cancels the call and keeps its connection open.
        let watch = spawn_watch(&g.addr, "Proxy", &json!({}), &["--cancel-after", "1"]);
        wait_line(&watch, "cancelled", 20 * SEC);
        wait_subscribers(&g.svc, 0);
        assert!(watch.pid().is_some(), "the client is still there");
        assert_eq!(metric(&g.svc, PROXY_SUBSCRIBERS), Some(0.0));
    });
}

#[test]
fn sigterm_ends_open_watches_with_unavailable_and_stops_the_process() {
    tokio_only(|| {
        let etcd = etcd_with_original();
        let mut g = start_grpc(&etcd, &[]);
        let watch = spawn_watch(&g.addr, "Config", &json!({}), &[]);
        wait_message(&watch, 1, 20 * SEC);
        g.svc.signal(libc::SIGTERM).unwrap();
        let status = g
            .svc
            .wait_exit(10 * SEC)
            .expect("lainlet exits after SIGTERM");
        assert!(status.success(), "{status}");
        let end = wait_line(&watch, "error", 10 * SEC);
        assert_eq!(end["error"]["code"], "UNAVAILABLE", "{end}");
    });
}
