//! End to end, the checks beside the etcd watch (spec: issue #11, items 1 and 6), in both
//! shells and against both stores:
//!
//! * quorum loss in a 3-member cluster: with 2 members killed, the survivor accepts
//!   connections and watches and sends nothing. The service must say `stale` (not `ok`) while
//!   it serves the last known state, and recover by itself once the quorum is back;
//! * the drift check: listings of etcd's keys compared with what the service holds, during
//!   churn, find nothing to repair (a wrong revision mapping or key set would "repair" every
//!   time).

mod common;

use std::time::{Duration, Instant};

use common::*;
use lainlet_tests::*;
use serde_json::json;

const CONFIG: &str = "/v2/configwatcher";

/// `/healthz`'s `status` field.
fn health(svc: &Service) -> String {
    let body = svc.get("/healthz").json();
    body["status"].as_str().unwrap_or("?").to_owned()
}

store_conformance_test!(fn losing_the_quorum_reports_stale_and_regaining_it_recovers(kind, store) {
    if skip_unless_etcd34("a 3-member cluster is etcd 3.4 only; a 2.3.7 member lost behind its \
        proxy is e2e_proxy.rs's the_member_gone_behind_a_live_proxy_reports_stale_then_ok")
    {
        return;
    }
    let mut cluster = EtcdCluster::new(3).expect("start a 3-member etcd cluster");
    let w = cluster.with_store(store);
    w.put("/lain/config/vip", "192.168.77.201");
    let svc = Service::command(kind)
        .web_auto()
        .etcd_cluster(&cluster)
        .etcd_api(store)
        .args(["--quorum-check-after", "2"])
        .start()
        .expect("start the service");
    wait_json(&svc, CONFIG, &json!({"vip": "192.168.77.201"}));
    // Served from the snapshot at once; `ok` once the watch is established just after.
    assert!(wait_until(10 * SEC, || health(&svc) == "ok"), "{}", health(&svc));

    // Kill two members, keeping the one the service uses (the first of `--etcd`): the
    // survivor has no quorum, and its connections and watches stay open.
    assert!(cluster.leader().is_some(), "a leader");
    let killed = [1, 2];
    for &i in &killed {
        cluster.member(i).kill();
    }
    let lost = Instant::now();
    assert!(
        wait_until(30 * SEC, || health(&svc) == "stale"),
        "/healthz still says {} 30 s after the quorum was lost",
        health(&svc)
    );
    eprintln!("{kind:?}/{store:?}: `stale` {:?} after the quorum was lost", lost.elapsed());
    let body = svc.get("/healthz").json();
    assert_eq!(body["etcd"], "disconnected", "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a reason is given: {body}"
    );
    // The last known state is still served.
    let r = svc.get(CONFIG);
    assert_eq!((r.status, r.json()), (200, json!({"vip": "192.168.77.201"})));

    // The quorum comes back; a change made then is served, and health is `ok` again.
    let restarted = Instant::now();
    for &i in &killed {
        cluster.member(i).start().expect("restart a member");
    }
    assert!(cluster.wait_leader(30 * SEC), "the cluster has a leader again");
    let back = restarted.elapsed();
    cluster.with_store(store).put("/lain/config/vip", "192.168.77.202");
    assert!(wait_until(60 * SEC, || health(&svc) == "ok"), "{}", svc.log());
    wait_json(&svc, CONFIG, &json!({"vip": "192.168.77.202"}));
    eprintln!(
        "{kind:?}/{store:?}: a leader {back:?} after the restarts; `ok` and current {:?} after \
         the restarts",
        restarted.elapsed()
    );
    let failures = metric(&svc, "lainlet_etcd_quorum_check_failures_total").unwrap_or(0.0);
    let disconnects = metric(&svc, "lainlet_etcd_disconnects_total").unwrap_or(0.0);
    assert!(disconnects >= 1.0, "the outage is counted");
    assert!(failures >= 1.0, "the survivor failed a quorum check");
    eprintln!("quorum check failures: {failures}, disconnects: {disconnects}");
    assert!(!svc.log().contains("panicked"), "{}", svc.log());
});

store_conformance_test!(fn drift_checks_during_churn_find_nothing_to_repair(kind, store) {
    let etcd = etcd_with_original_in(store);
    let svc = command_in(kind, &etcd, store)
        .args(["--drift-check-every", "1"])
        .start()
        .expect("start the service");
    let w = etcd.with_store(store);
    let checks = || metric(&svc, "lainlet_drift_checks_total").unwrap_or(0.0);
    let started = Instant::now();
    let mut i = 0;
    while checks() < 4.0 && started.elapsed() < Duration::from_secs(40) {
        w.put(&format!("/lain/config/drift/k{}", i % 7), format!("v{i}"));
        if i % 5 == 4 {
            w.delete(&format!("/lain/config/drift/k{}", i % 7));
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(checks() >= 4.0, "drift checks ran: {}", checks());
    assert_eq!(
        metric(&svc, "lainlet_drift_repairs_total"),
        Some(0.0),
        "a mirror that follows etcd has nothing to repair; log:\n{}",
        svc.log()
    );
    wait_json(&svc, CONFIG, &etcd_config_in(&etcd, store));
    assert_eq!(metric(&svc, "lainlet_snapshots_total"), Some(1.0), "no re-read");
});

conformance_test!(fn the_check_flags_are_validated(kind) {
    for bad in [["--quorum-check-after", "0"], ["--drift-check-every", "x"]] {
        let mut svc = Service::command(kind)
            .args(["--demo", "--web", "127.0.0.1:0"])
            .args(bad)
            .spawn()
            .expect("run");
        let status = svc.wait_exit(10 * SEC).expect("exits");
        assert_eq!(status.code(), Some(2), "{bad:?}: {}", svc.log());
        assert!(svc.log().contains(bad[0]), "{bad:?}: {}", svc.log());
    }
});
