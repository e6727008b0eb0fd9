//! End to end, the fleet (`--announce`): three lainlets of one binary (different `--hostname`
//! and `--ip` on 127.0.0.x) on one etcd — v3 and v2 of etcd 3.4, a 2.3.7 member, and a 2.3.7
//! member behind a 2.3.7 proxy as on LAIN's nodes — each see all three in `/fleet`; a
//! `?revision=R` question completes once each has applied a write; SIGTERM removes a node's
//! key before the process exits; `kill -9` leaves it to its TTL; the v2 views are the same as
//! a lainlet's without announcements; and the status page shows the fleet in a browser.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lainlet_tests::*;
use serde_json::{json, Value};

/// The heartbeat of the test lainlets (`--announce-every 1`: TTL 5 s, the shortest).
const EVERY: &str = "1";
/// Their keys' TTL.
const TTL: Duration = Duration::from_secs(5);
/// The host names of the three lainlets.
const NAMES: [&str; 3] = ["fleet-a", "fleet-b", "fleet-c"];

/// The launcher of lainlet number `i` on 127.0.0.(11 + i), host name `NAMES[i]`, reading
/// `store`, announcing itself when `announce`.
fn node(
    kind: ServiceKind,
    etcd: &EtcdServer,
    store: Store,
    i: usize,
    announce: bool,
) -> ServiceCommand {
    let ip = format!("127.0.0.{}", 11 + i);
    let mut cmd = Service::command(kind)
        .args(["--web".to_owned(), format!("{ip}:{}", free_port())])
        .etcd(etcd)
        .etcd_api(store)
        .args(["--ip", &ip, "--hostname", NAMES[i]])
        .ready_timeout(40 * SEC);
    if announce {
        cmd = cmd.args(["--announce", "--announce-every", EVERY]);
    }
    cmd
}

/// The three lainlets, ready, and listed by the first.
fn three(kind: ServiceKind, etcd: &EtcdServer, store: Store) -> Vec<Service> {
    let nodes: Vec<Service> = (0..3)
        .map(|i| {
            node(kind, etcd, store, i, true)
                .start()
                .expect("a fleet node")
        })
        .collect();
    for svc in &nodes {
        wait_members(svc, &NAMES, 20 * SEC);
    }
    nodes
}

/// The host names `/fleet` lists.
fn members(svc: &Service) -> Vec<String> {
    let fleet = svc.get("/fleet").json();
    fleet["members"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Waits until `/fleet` on `svc` lists exactly `want`; the time it took.
fn wait_members(svc: &Service, want: &[&str], timeout: Duration) -> Duration {
    let started = Instant::now();
    let mut last = Vec::new();
    let ok = wait_until(timeout, || {
        last = members(svc);
        last == want
    });
    assert!(
        ok,
        "/fleet at {} lists {last:?}, not {want:?} after {timeout:?}",
        svc.addr()
    );
    started.elapsed()
}

store_conformance_test!(fn three_lainlets_see_each_other_and_who_has_applied_a_write(kind, store) {
    let etcd = EtcdServer::new().expect("etcd");
    let w = etcd.with_store(store);
    w.put("/lain/config/vip", "192.168.77.201");
    let nodes = three(kind, &etcd, store);
    // What each announces.
    let fleet = nodes[0].get("/fleet").json();
    assert_eq!(fleet["count"], 3, "{fleet}");
    for (i, name) in NAMES.iter().enumerate() {
        let m = &fleet["members"][name];
        assert_eq!(m["node"], *name);
        assert_eq!(m["ip"], format!("127.0.0.{}", 11 + i));
        assert_eq!(m["store"], store.name());
        assert_eq!(m["shell"], kind.package(), "{m}");
        assert!(m["revision"].as_i64() > Some(0), "{m}");
    }
    // A write at R: each node flips to applied, and the question completes.
    let r = w.put("/lain/config/deploy", "1");
    let path = format!("/fleet?revision={r}");
    let mut watch = nodes[1].watch(&format!("{path}&watch=1"));
    let started = Instant::now();
    let ok = wait_until(15 * SEC, || nodes[1].get(&path).json()["complete"] == true);
    assert!(ok, "not complete: {}", nodes[1].get(&path).text());
    eprintln!("{}: ?revision={r} complete {:?} after the write", kind.bin_name(), started.elapsed());
    let q = nodes[1].get(&path).json();
    assert_eq!(q["applied"], json!(NAMES), "{q}");
    assert_eq!(q["pending"], json!([]));
    // Its watch saw it complete (an SSE stream like every view's).
    expect_frame(&mut watch, "complete", 10 * SEC, |f| {
        f.data
            .as_deref()
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .is_some_and(|v| v["complete"] == true)
    });
    // The metrics count the members and the heartbeats.
    let svc = &nodes[2];
    assert_eq!(metric(svc, "lainlet_fleet_members"), Some(3.0));
    assert!(metric(svc, "lainlet_fleet_heartbeats_total{kind=\"put\"}") >= Some(1.0));
    assert_eq!(metric(svc, "lainlet_fleet_heartbeats_total{kind=\"failed\"}"), Some(0.0));
});

store_conformance_test!(fn sigterm_removes_the_key_and_kill_leaves_it_to_its_ttl(kind, store) {
    let etcd = EtcdServer::new().expect("etcd");
    let w = etcd.with_store(store);
    w.put("/lain/config/vip", "192.168.77.201");
    let mut nodes = three(kind, &etcd, store);
    let key = |i: usize| format!("/lain/lainlet/nodes/{}", NAMES[i]);
    assert!(w.get(&key(2)).is_some(), "the key exists in etcd");
    // SIGTERM: the process removes its key before it exits.
    nodes[2].signal(libc::SIGTERM).expect("SIGTERM");
    let status = nodes[2].wait_exit(10 * SEC).expect("it exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(w.get(&key(2)), None, "the key is gone when the process has exited");
    assert!(nodes[2].log().contains("fleet: this node's key removed"), "{}", nodes[2].log());
    wait_members(&nodes[0], &NAMES[..2], 5 * SEC);
    // kill -9: the key stays until its TTL runs out.
    nodes[1].kill();
    let killed = Instant::now();
    let gone_after = wait_members(&nodes[0], &NAMES[..1], TTL + 10 * SEC);
    eprintln!("{}: a killed node left /fleet {gone_after:?} after kill -9 (TTL {TTL:?})", kind.bin_name());
    // Not removed by anyone: the TTL ran out (at least TTL - 1 s after the last heartbeat
    // before the kill; 2 s leaves room for a heartbeat delayed by a loaded machine).
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "gone {gone_after:?} after kill -9: sooner than its TTL ({TTL:?}) could have run out"
    );
    assert_eq!(w.get(&key(1)), None);
});

store_conformance_test!(fn announcements_change_no_v2_answer(kind, store) {
    let etcd = EtcdServer::new().expect("etcd");
    let w = etcd.with_store(store);
    for kv in &lainlet_fixtures::original().kvs {
        w.put(&kv.key, &kv.value);
    }
    let nodes = three(kind, &etcd, store);
    // A fourth lainlet that does not announce, with the first one's IP and host name (so the
    // node-relative views select the same), on another port.
    let quiet = Service::command(kind)
        .args(["--web".to_owned(), format!("127.0.0.11:{}", free_port())])
        .etcd(&etcd)
        .etcd_api(store)
        .args(["--ip", "127.0.0.11", "--hostname", NAMES[0]])
        .ready_timeout(40 * SEC)
        .start()
        .expect("the quiet lainlet");
    // Both at the same revision (announcements go on: wait until they agree once).
    for view in V2_VIEWS {
        let path = match view {
            "/v2/procwatcher" => "/v2/procwatcher?appname=hello",
            other => other,
        };
        let a = nodes[0].get(path);
        let b = quiet.get(path);
        assert_eq!((a.status, a.text()), (b.status, b.text()), "{path}");
    }
    assert_eq!(members(&quiet), NAMES, "the quiet one lists the fleet too");
});

conformance_test!(fn the_status_page_shows_the_fleet_in_a_browser(kind) {
    let etcd = EtcdServer::new().expect("etcd");
    etcd.with_store(Store::V3).put("/lain/config/vip", "192.168.77.201");
    let mut nodes = three(kind, &etcd, Store::V3);
    let page = format!("http://{}/", nodes[0].addr());
    let check = |alive: &[&str], gone: &[&str]| -> Value {
        let out = run_python(
            "fleet_page_check.py",
            &[&page, &alive.join(","), &gone.join(",")],
            &[],
            120 * SEC,
        )
        .expect("python runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "fleet_page_check.py failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap()
    };
    let seen = check(&NAMES, &[]);
    assert_eq!(seen["alive"], json!(NAMES), "{seen}");
    nodes[2].signal(libc::SIGTERM).expect("SIGTERM");
    nodes[2].wait_exit(10 * SEC).expect("it exits");
    let seen = check(&NAMES[..2], &NAMES[2..]);
    assert_eq!(seen["gone"], json!([NAMES[2]]), "{seen}");
});
