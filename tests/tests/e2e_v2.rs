//! End to end, what only the v2 keys store does (real etcd 3.4 with `--enable-v2`, data written
//! through `/v2/keys`): directories deleted one key at a time and then themselves, recursively,
//! or by a TTL running out; a service paused while etcd's 1000-event window moves past it; and
//! every case of the store detection (`--etcd-api auto`, the default). The store-independent
//! behaviour runs against both stores in `e2e_api.rs`, `e2e_watch.rs` and `e2e_etcd.rs`.

mod common;

use std::time::Duration;

use common::*;
use lainlet_tests::*;
use serde_json::{json, Value};

const PODS: &str = "/lain/deployd/pod_groups";
const CONFIG: &str = "/v2/configwatcher";

/// `/v2/coreinfowatcher` (every app) without `drop`'s pod groups.
fn coreinfo_without(svc: &Service, drop: &[&str]) -> Value {
    let mut all = svc.get("/v2/coreinfowatcher").json();
    for name in drop {
        all.as_object_mut().unwrap().remove(*name);
    }
    all
}

/// Nothing but heartbeats for a while.
fn quiet(watch: &mut SseStream) -> bool {
    watch
        .collect_for(Duration::from_millis(500))
        .iter()
        .all(Frame::is_heartbeat)
}

conformance_test!(fn an_app_removed_key_by_key_and_then_its_empty_directory(kind) {
    let etcd = etcd_with_original_in(Store::V2);
    let svc = start_in(kind, &etcd, Store::V2);
    let others = coreinfo_without(&svc, &["hello.web.web", "hello.worker.cron"]);
    let mut hello = svc.watch("/v2/coreinfowatcher?appname=hello&watch=1");
    let init = expect_frame(&mut hello, "init", 5 * SEC, |f| f.event == "init");
    assert!(init.json().get("hello.web.web").is_some());

    wait_revision(&svc, etcd.v2_delete(&format!("{PODS}/hello/hello.web.web")));
    let f = expect_frame(&mut hello, "the first delete", 5 * SEC, |f| f.event == "delete");
    assert!(f.json().get("hello.web.web").is_none() && f.json().get("hello.worker.cron").is_some());
    wait_revision(&svc, etcd.v2_delete(&format!("{PODS}/hello/hello.worker.cron")));
    let f = expect_frame(&mut hello, "the second delete", 5 * SEC, |f| f.event == "delete");
    assert_eq!(f.json(), json!({}));

    // deployd's cleanup: the now empty directory (a `delete` event with `dir`).
    let index = etcd.v2_delete_dir(&format!("{PODS}/hello"), false);
    wait_revision(&svc, index);
    assert_eq!(served_revision(&svc), index, "the directory event is applied");
    assert!(quiet(&mut hello), "an empty directory changes nothing");
    assert_eq!(svc.get("/v2/coreinfowatcher").json(), others, "hello-service and redis stay");
    assert_eq!(svc.get("/v2/coreinfowatcher?appname=hello").json(), json!({}));
});

conformance_test!(fn a_recursive_delete_of_an_app_directory_removes_that_app_only(kind) {
    let etcd = etcd_with_original_in(Store::V2);
    let svc = start_in(kind, &etcd, Store::V2);
    let others = coreinfo_without(&svc, &["hello.web.web", "hello.worker.cron"]);
    let mut hello = svc.watch("/v2/coreinfowatcher?appname=hello&watch=1");
    let mut service = svc.watch("/v2/coreinfowatcher?appname=hello-service&watch=1");
    hello.next_frame(5 * SEC).expect("init");
    service.next_frame(5 * SEC).expect("init");

    // One event for the directory, none for the two keys inside (etcdctl rm --recursive).
    wait_revision(&svc, etcd.v2_delete_dir(&format!("{PODS}/hello"), true));
    let f = expect_frame(&mut hello, "the delete", 5 * SEC, |f| f.event == "delete");
    assert_eq!(f.json(), json!({}));
    assert!(quiet(&mut service), "hello-service/… is not below hello/");
    assert_eq!(svc.get("/v2/coreinfowatcher").json(), others);

    // A config directory the same way.
    wait_revision(&svc, etcd.v2_delete_dir("/lain/config/vips", true));
    let config = svc.get(CONFIG).json();
    assert_eq!(config, etcd_config_in(&etcd, Store::V2));
    assert!(config.as_object().unwrap().keys().all(|k| !k.starts_with("vips/")), "{config}");
});

conformance_test!(fn a_key_with_a_short_ttl_expires(kind) {
    let etcd = etcd_with_original_in(Store::V2);
    let svc = start_in(kind, &etcd, Store::V2);
    let mut watch = svc.watch(&format!("{CONFIG}?target=flash&watch=1"));
    assert_eq!(watch.next_frame(5 * SEC).expect("init").json(), json!({}));
    wait_revision(&svc, etcd.v2_put_ttl("/lain/config/flash", "on", 1));
    let f = expect_frame(&mut watch, "the put", 5 * SEC, |f| f.event == "update");
    assert_eq!(f.json(), json!({"flash": "on"}));
    // etcd expires it (an `expire` event) a second or two later.
    let f = expect_frame(&mut watch, "the expiry", 10 * SEC, |f| f.event == "delete");
    assert_eq!(f.json(), json!({}));
    assert_eq!(svc.get(&format!("{CONFIG}?target=flash")).json(), json!({}));
    assert_eq!(etcd.v2_get("/lain/config/flash"), None);
    assert_eq!(served_revision(&svc), etcd.v2_index());
});

conformance_test!(fn a_pause_past_the_1000_event_window_resyncs_to_etcds_state(kind) {
    let mut etcd = etcd_with_original_in(Store::V2);
    let svc = start_in(kind, &etcd, Store::V2);
    let mut watch = svc.watch(&format!("{CONFIG}?watch=1"));
    watch.next_frame(5 * SEC).expect("init");
    let before = served_revision(&svc);

    // Freeze the service, break its watch, and write more than the v2 store keeps.
    svc.signal(libc::SIGSTOP).unwrap();
    etcd.restart().expect("restart etcd");
    let writes: Vec<(String, String)> =
        (0..1100).map(|i| (format!("/lain/config/e2e/k{}", i % 23), format!("v{i}"))).collect();
    etcd.v2_load(writes);
    etcd.v2_delete("/lain/config/vip");
    etcd.v2_delete_dir("/lain/config/vips", true);
    let now = etcd.v2_index();
    assert!(now - before > 1000, "past the window: {before} → {now}");
    svc.signal(libc::SIGCONT).unwrap();

    let want = etcd_config_in(&etcd, Store::V2);
    wait_json(&svc, CONFIG, &want);
    assert!(served_revision(&svc) >= now);
    expect_frame(&mut watch, "the final state", 10 * SEC, |f| {
        f.data.is_some() && f.json() == want
    });
    // The reconnect's quorum check shows etcd's index far ahead: one re-read, no event by
    // event catch-up (and no 401 needed to find out).
    assert_eq!(metric(&svc, "lainlet_snapshots_total"), Some(2.0), "re-read once");
    // And it follows etcd afterwards.
    wait_revision(&svc, etcd.v2_put("/lain/config/vip", "192.168.77.250"));
    assert_eq!(svc.get(&format!("{CONFIG}?target=vip")).text(), r#"{"vip":"192.168.77.250"}"#);
    let w = etcd.with_store(Store::V2);
    assert!(wait_until(5 * SEC, || w.watchers() == 1), "one etcd watcher (its long poll)");
});

/// The vip the original fixture set holds.
const VIP: &str = "192.168.77.201";

fn vip(svc: &Service) -> Value {
    svc.get(&format!("{CONFIG}?target=vip")).json()["vip"].clone()
}

conformance_test!(fn detection_reads_the_store_that_holds_keys(kind) {
    for store in Store::ALL {
        let etcd = etcd_with_original_in(store);
        let svc = start(kind, &etcd); // no --etcd-api
        assert_eq!(svc.get("/healthz").json()["store"], store.name());
        assert_eq!(vip(&svc), VIP);
        assert!(svc.log().contains(&format!("reading {store}: the {store} store holds the data")), "{}", svc.log());
        let debug = svc.get("/debug").json();
        assert_eq!(debug["etcd"]["api"], "auto");
        assert!(debug["etcd"]["store_reason"].as_str().unwrap().contains("holds the data"), "{debug}");
        assert_eq!(metric(&svc, "lainlet_etcd_store_switches_total"), Some(0.0));
    }
});

conformance_test!(fn detection_reads_v2_when_both_stores_hold_keys_and_says_how_to_override(kind) {
    let etcd = etcd_with_original_in(Store::V3);
    let dump = lainlet_fixtures::original();
    etcd.v2_load(dump.kvs.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())));
    etcd.v2_put("/lain/config/vip", "10.0.0.2");
    let svc = start(kind, &etcd);
    assert_eq!(svc.get("/healthz").json()["store"], "v2");
    assert_eq!(vip(&svc), "10.0.0.2", "v2's value, not v3's");
    let log = svc.log();
    assert!(log.contains("WARN") && log.contains("both stores hold keys"), "{log}");
    assert!(log.contains("--etcd-api v3"), "{log}");
    drop(svc);
    let svc = command(kind, &etcd).etcd_api(Store::V3).start().unwrap();
    assert_eq!(vip(&svc), VIP, "--etcd-api v3 reads v3");
    assert!(!svc.log().contains("both stores"), "no detection with --etcd-api");
});

conformance_test!(fn an_empty_cluster_reads_v2_and_switches_when_v3_gets_the_data(kind) {
    let etcd = EtcdServer::new().unwrap();
    let svc = command(kind, &etcd)
        .args(["--etcd-api-recheck", "1", "--quorum-check-after", "1"])
        .start()
        .unwrap();
    let health = svc.get("/healthz").json();
    assert_eq!((health["status"].as_str(), health["store"].as_str()), (Some("ok"), Some("v2")));
    assert!(svc.log().contains("provisional"), "{}", svc.log());
    let mut watch = svc.watch(&format!("{CONFIG}?target=vip&watch=1"));
    assert_eq!(watch.next_frame(5 * SEC).expect("init").json(), json!({}));

    let dump = lainlet_fixtures::original();
    etcd.load(dump.kvs.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())));
    assert!(
        wait_until(10 * SEC, || svc.get("/healthz").json()["store"] == "v3"),
        "switched to v3: {}",
        svc.log()
    );
    let f = expect_frame(&mut watch, "the v3 data", 5 * SEC, |f| f.event == "update");
    assert_eq!(f.json(), json!({ "vip": VIP }));
    assert_eq!(svc.get(CONFIG).json(), etcd_config(&etcd));
    assert_eq!(metric(&svc, "lainlet_etcd_store_switches_total"), Some(1.0));
    assert!(svc.log().contains("switching from v2 to v3"), "{}", svc.log());
    // Settled now: v2 data written later is not read, while lainlet goes on checking etcd
    // (a recheck every second would have switched back by then).
    etcd.v2_put("/lain/config/vip", "10.0.0.3");
    wait_revision(&svc, etcd.put("/lain/config/vip", "10.0.0.4"));
    assert!(wait_etcd_reads(&etcd, Store::V3, 3.0, 15 * SEC), "lainlet checks etcd");
    assert_eq!(vip(&svc), "10.0.0.4");
    assert_eq!(metric(&svc, "lainlet_etcd_store_switches_total"), Some(1.0));
});

conformance_test!(fn an_empty_cluster_reads_v2_and_stays_when_v2_gets_the_data(kind) {
    let etcd = EtcdServer::new().unwrap();
    let svc = command(kind, &etcd)
        .args(["--etcd-api-recheck", "1", "--quorum-check-after", "1"])
        .start()
        .unwrap();
    assert_eq!(svc.get("/healthz").json()["store"], "v2");
    let dump = lainlet_fixtures::original();
    let index = etcd.v2_load(dump.kvs.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())));
    wait_revision(&svc, index);
    assert_eq!(svc.get(CONFIG).json(), etcd_config_in(&etcd, Store::V2));
    // Once it has been asked again, v2 holds keys: settled; v3 data does not move it.
    assert!(
        wait_until(10 * SEC, || svc
            .log()
            .lines()
            .any(|l| l.contains("etcd store: reading v2") && !l.contains("provisional"))),
        "asked again and settled: {}",
        svc.log()
    );
    etcd.put("/lain/config/vip", "10.0.0.5");
    assert!(wait_etcd_reads(&etcd, Store::V2, 3.0, 15 * SEC), "lainlet checks etcd");
    assert_eq!(vip(&svc), VIP);
    assert_eq!(metric(&svc, "lainlet_etcd_store_switches_total"), Some(0.0));
    assert_eq!(metric(&svc, "lainlet_snapshots_total"), Some(1.0), "followed, never re-read");
});

conformance_test!(fn without_the_v2_api_an_empty_cluster_reads_v3(kind) {
    let etcd = EtcdServer::with_args(&["--enable-v2=false"]).unwrap();
    let off = etcd.v2_request("GET", "/v2/keys/lain", b"").unwrap();
    assert_eq!(off.status, 404, "etcd serves no v2 API: {}", off.text());
    let svc = start(kind, &etcd);
    assert_eq!(svc.get("/healthz").json()["store"], "v3");
    assert!(svc.log().contains("only the v3 API is served"), "{}", svc.log());
    wait_revision(&svc, etcd.put("/lain/config/vip", VIP));
    assert_eq!(vip(&svc), VIP);
});

/// Error 401 as etcd answers it (HTTP 400), for a store at `index`.
fn cleared(index: i64) -> Vec<u8> {
    let body = format!(
        r#"{{"errorCode":401,"message":"The event in requested index is outdated and cleared","cause":"the requested history has been cleared [{}/2]","index":{index}}}"#,
        index - 999
    );
    http_answer(
        "400 Bad Request",
        &[
            ("Content-Type", "application/json"),
            ("X-Etcd-Index", &index.to_string()),
        ],
        body.as_bytes(),
    )
}

conformance_test!(fn answers_that_are_not_etcds_are_logged_retried_and_lose_nothing(kind) {
    let mut etcd = etcd_with_original_in(Store::V2);
    let proxy = FaultyProxy::start(&etcd.endpoint()).unwrap();
    // The first snapshot reads: a load balancer's HTML page, then a body cut in the middle.
    let html = b"<html><body><h1>502 Bad Gateway</h1></body></html>";
    proxy.inject("sorted=true", 1, http_answer("502 Bad Gateway", &[("Content-Type", "text/html")], html));
    let tree = etcd.v2_request("GET", "/v2/keys/lain?recursive=true&sorted=true&quorum=true", b"").unwrap();
    let index = tree.header("x-etcd-index").unwrap().to_owned();
    let half = &tree.body[..tree.body.len() / 2];
    let headers = [("Content-Type", "application/json"), ("X-Etcd-Index", index.as_str())];
    proxy.inject("sorted=true", 1, http_answer("200 OK", &headers, half));
    let svc = Service::command(kind)
        .web_auto()
        .args(["--etcd", proxy.addr(), "--etcd-api", "v2", "--ip", NODE_IP, "--hostname", HOSTNAME])
        .start()
        .expect("ready after the retries");
    assert_eq!(proxy.injected(), 2);
    let log = svc.log();
    assert!(log.contains("HTTP 502") && log.contains("Bad Gateway"), "{log}");
    assert!(log.contains("not JSON"), "the truncated answer: {log}");
    assert_eq!(svc.get(CONFIG).json(), etcd_config_in(&etcd, Store::V2));

    // An event about a key outside /lain/ (at an index already applied), then a 401 storm:
    // ten watch requests in a row answered "history cleared" (a watch from an index, then the
    // live stream opened before each snapshot read, which is then read from etcd).
    let now = etcd.v2_index();
    wait_revision(&svc, now);
    let line = format!(
        "{{\"action\":\"set\",\"node\":{{\"key\":\"/elsewhere/x\",\"value\":\"1\",\"modifiedIndex\":{now},\"createdIndex\":{now}}}}}\n"
    );
    let headers = [("Content-Type", "application/json"), ("X-Etcd-Index", &now.to_string())];
    proxy.inject("waitIndex=", 1, http_answer("200 OK", &headers, line.as_bytes()));
    proxy.inject("wait=true", 10, cleared(now));
    etcd.restart().expect("restart etcd"); // ends the relayed watch
    assert!(wait_until(30 * SEC, || proxy.drained()), "lainlet watched again: {}", svc.log());
    wait_revision(&svc, etcd.v2_put("/lain/config/vip", "192.168.77.240"));
    etcd.v2_delete_dir("/lain/config/vips", true);
    let want = etcd_config_in(&etcd, Store::V2);
    wait_json(&svc, CONFIG, &want);
    assert_eq!(metric(&svc, "lainlet_etcd_foreign_events_total"), Some(1.0));
    assert!(metric(&svc, "lainlet_etcd_history_lost_total").unwrap() >= 5.0);
    let log = svc.log();
    assert!(log.contains("outside /lain/") && log.contains("/elsewhere/x"), "{log}");
    assert!(log.contains("in a row"), "the storm backs off: {log}");
    assert_eq!(svc.get("/healthz").json()["status"], "ok");
});

conformance_test!(fn a_reader_frozen_while_etcd_moves_on_catches_up(kind) {
    let etcd = etcd_with_original_in(Store::V2);
    let svc = start_in(kind, &etcd, Store::V2);
    let w = etcd.with_store(Store::V2);
    // The long poll waiting in etcd is its one watcher.
    assert!(wait_until(5 * SEC, || w.watchers() == 1));
    // Frozen, lainlet reads nothing while etcd takes 300 big writes (a stream=true watcher
    // would be dropped by etcd 3.4 once 100 events are unread; a long poll is answered
    // with the first and the rest waits in etcd's history).
    svc.signal(libc::SIGSTOP).unwrap();
    let big = |i: usize| format!("{i:06}").repeat(64 * 1024 / 6);
    w.load((0..300).map(|i| (format!("/lain/config/e2e/big{}", i % 8), big(i))));
    assert!(wait_until(10 * SEC, || w.watchers() == 0), "the poll was answered");
    svc.signal(libc::SIGCONT).unwrap();
    let want = etcd_config_in(&etcd, Store::V2);
    wait_json(&svc, CONFIG, &want);
    assert_eq!(served_revision(&svc), etcd.v2_index());
    assert!(wait_until(5 * SEC, || w.watchers() == 1), "polling again");
    wait_revision(&svc, etcd.v2_put("/lain/config/vip", "192.168.77.241"));
});
