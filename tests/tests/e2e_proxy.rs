//! End to end through an etcd **2.3.7 proxy** (`etcd --proxy on`) in front of a 2.3.7 member:
//! the setup of every LAIN node that is not a manager (issue 17). The service is given the
//! proxy's endpoint; the test writes to the member. The proxy forwards a `stream=true` watch
//! without flushing it (nothing arrives until 512 bytes of events, then 4 KiB batches; see
//! `core/src/etcd/recorded/README.md`), answers with its own 502/503 while the member is
//! unreachable, and turns a member dying under a waiting long-poll into an empty `200`. Every
//! test needs a change made through the member to reach the service's views in bounded time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lainlet_tests::*;
use serde_json::{json, Value};

const CONFIG: &str = "/v2/configwatcher";

/// How long the service may take to be ready through the proxy (the target is 1 s;
/// checked at the end of each test, so that a slow start does not hide the scenario's result).
const READY_WITHIN: Duration = Duration::from_secs(5);

/// A 2.3.7 member behind a 2.3.7 proxy holding a vip, and the service reading v2 through the
/// proxy (`--quorum-check-after 2`), ready (waiting up to 40 s), with the time it took to be
/// ready; `None` (skipped) without etcd 2.3.7.
fn through_proxy(kind: ServiceKind) -> Option<(EtcdServer, Service, Duration)> {
    if !setup_selected(Store::V2, EtcdSetup::Etcd2Proxy) {
        return None;
    }
    let etcd = EtcdServer::with_setup(EtcdSetup::Etcd2Proxy, &[]).expect("2.3.7 member + proxy");
    etcd.v2_put("/lain/config/vip", "192.168.77.201");
    let started = Instant::now();
    let svc = command_in(kind, &etcd, Store::V2)
        .args(["--quorum-check-after", "2"])
        .ready_timeout(40 * SEC)
        .start()
        .expect("the service ready through the proxy");
    let ready = started.elapsed();
    wait_revision(&svc, etcd.v2_index());
    Some((etcd, svc, ready))
}

/// The readiness check deferred by [`through_proxy`].
fn ready_in_time(ready: Duration) {
    assert!(
        ready <= READY_WITHIN,
        "the service took {ready:?} to be ready through the proxy (at most {READY_WITHIN:?})"
    );
}

/// `/healthz`'s `status`.
fn health(svc: &Service) -> String {
    svc.get("/healthz").json()["status"]
        .as_str()
        .unwrap_or("?")
        .to_owned()
}

/// Waits up to `timeout` until `GET path` answers `want`; panics with the last answer and how
/// long it waited.
fn wait_json_within(svc: &Service, path: &str, want: &Value, timeout: Duration, what: &str) {
    let started = Instant::now();
    let mut last = Value::Null;
    let ok = wait_until(timeout, || {
        last = svc.get(path).json();
        &last == want
    });
    assert!(
        ok,
        "{what}: GET {path} not {want} after {timeout:?}; last answer {last}; health {}",
        svc.get("/healthz").text()
    );
    eprintln!("{what}: served after {:?}", started.elapsed());
}

/// One change through the member must reach the vip view and an open watch in 5 s.
fn one_change_is_seen(etcd: &EtcdServer, svc: &Service, vip: &str, what: &str) {
    let mut watch = svc.watch(&format!("{CONFIG}?target=vip&watch=1"));
    expect_frame(&mut watch, "init", 5 * SEC, |f| f.event == "init");
    etcd.v2_put("/lain/config/vip", vip);
    let want = json!({ "vip": vip });
    expect_frame(&mut watch, what, 5 * SEC, |f| {
        f.data.is_some() && f.json() == want
    });
    wait_json_within(svc, &format!("{CONFIG}?target=vip"), &want, 5 * SEC, what);
}

conformance_test!(fn a_quiet_cluster_then_one_change_is_seen_through_the_proxy(kind) {
    let Some((etcd, svc, ready)) = through_proxy(kind) else { return };
    // Quiet for longer than the stream's deaf rule and two quorum-check periods: whatever
    // lainlet keeps open to etcd must still carry the next change.
    std::thread::sleep(5 * SEC);
    assert_eq!(health(&svc), "ok", "{}", svc.get("/healthz").text());
    one_change_is_seen(&etcd, &svc, "192.168.77.202", "one change after 5 s of quiet");
    assert_eq!(served_revision(&svc), etcd.v2_index());
    ready_in_time(ready);
});

conformance_test!(fn a_storm_of_2000_writes_through_the_proxy_ends_at_every_final_value(kind) {
    let Some((etcd, svc, ready)) = through_proxy(kind) else { return };
    let mut watch = svc.watch(&format!("{CONFIG}?watch=1"));
    watch.next_frame(5 * SEC).expect("init");
    // As fast as one writer goes, 50 keys rewritten 40 times each.
    let started = Instant::now();
    for i in 0..2000 {
        etcd.v2_put(&format!("/lain/config/storm/k{:02}", i % 50), format!("v{i}"));
    }
    eprintln!("2000 writes in {:?}", started.elapsed());
    let want = etcd_config_in(&etcd, Store::V2);
    assert_eq!(want["storm/k49"], "v1999");
    wait_json_within(&svc, CONFIG, &want, 10 * SEC, "the storm's final values");
    assert_eq!(served_revision(&svc), etcd.v2_index());
    expect_frame(&mut watch, "the final state on the open watch", 10 * SEC, |f| {
        f.data.is_some() && f.json() == want
    });
    ready_in_time(ready);
});

conformance_test!(fn changes_after_the_member_restarts_behind_the_proxy_are_seen(kind) {
    let Some((mut etcd, svc, ready)) = through_proxy(kind) else { return };
    one_change_is_seen(&etcd, &svc, "192.168.77.203", "a change before the restart");
    etcd.restart().expect("restart the member");
    // The proxy marks the member failed for 5 s after a failed request: allow for it.
    etcd.v2_put("/lain/config/after", "member restart");
    let want = etcd_config_in(&etcd, Store::V2);
    wait_json_within(&svc, CONFIG, &want, 20 * SEC, "a change made after the member restart");
    one_change_is_seen(&etcd, &svc, "192.168.77.204", "a change once settled");
    assert!(wait_until(20 * SEC, || health(&svc) == "ok"), "{}", svc.get("/healthz").text());
    ready_in_time(ready);
});

conformance_test!(fn changes_after_the_proxy_restarts_are_seen(kind) {
    let Some((mut etcd, svc, ready)) = through_proxy(kind) else { return };
    one_change_is_seen(&etcd, &svc, "192.168.77.205", "a change before the restart");
    etcd.proxy_mut().expect("the proxy").restart().expect("restart the proxy");
    etcd.v2_put("/lain/config/after", "proxy restart");
    let want = etcd_config_in(&etcd, Store::V2);
    wait_json_within(&svc, CONFIG, &want, 20 * SEC, "a change made after the proxy restart");
    one_change_is_seen(&etcd, &svc, "192.168.77.206", "a change once settled");
    assert!(wait_until(20 * SEC, || health(&svc) == "ok"), "{}", svc.get("/healthz").text());
    ready_in_time(ready);
});

conformance_test!(fn the_member_gone_behind_a_live_proxy_reports_stale_then_ok(kind) {
    let Some((mut etcd, svc, ready)) = through_proxy(kind) else { return };
    assert_eq!(health(&svc), "ok");
    // The member goes away; the proxy keeps accepting connections and answers 502/503.
    etcd.kill();
    let gone = Instant::now();
    assert!(
        wait_until(30 * SEC, || health(&svc) == "stale"),
        "/healthz still {} 30 s after the member behind the proxy died",
        svc.get("/healthz").text()
    );
    eprintln!("{kind:?}: `stale` {:?} after the member died", gone.elapsed());
    // The last known state is still served.
    assert_eq!(svc.get(&format!("{CONFIG}?target=vip")).json(), json!({"vip": "192.168.77.201"}));
    // Back: a change is served and health is `ok` again.
    etcd.start().expect("start the member again");
    let back = Instant::now();
    etcd.v2_put("/lain/config/vip", "192.168.77.207");
    wait_json_within(
        &svc,
        &format!("{CONFIG}?target=vip"),
        &json!({"vip": "192.168.77.207"}),
        30 * SEC,
        "a change after the member came back",
    );
    assert!(wait_until(30 * SEC, || health(&svc) == "ok"), "{}", svc.get("/healthz").text());
    eprintln!("{kind:?}: current and `ok` {:?} after the member came back", back.elapsed());
    ready_in_time(ready);
});
