//! End to end, restarts from the state file (issue 20), with a real etcd on both stores:
//!
//! * a graceful restart (SIGTERM, then start) with 0, 10 or 2,000 changes made while lainlet
//!   was down ends equal to a fresh start; when etcd's history still covers the saved
//!   revision (v3; v2 within its 1000-event window and lainlet's catch-up limit) the restart
//!   reads no snapshot (`lainlet_snapshots_total` stays 0);
//! * a corrupt, truncated or foreign file is ignored with a log line and a full read; a file
//!   from another cluster is read again (`lainlet_state_file_rejected_total`);
//! * etcd away at start: the saved state is served with `/healthz` `stale` (200, not 503);
//! * a `rev=1` client resuming across the restart gets one `update` on v2 as on v3.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use lainlet_tests::*;
use serde_json::Value;

const PATHS: &[&str] = &[
    "/v2/configwatcher",
    "/v2/coreinfowatcher",
    "/v2/proxywatcher",
    "/v2/webrouter/webprocs",
    "/v2/containers?nodename=node1",
    "/v2/depends",
    "/v2/nodes",
    "/v2/appswatcher",
];

/// A fresh state-file path for one test.
fn state_path(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir()
        .join(format!(
            "lainlet-e2e-state-{}-{tag}-{nanos}",
            std::process::id()
        ))
        .join("state")
}

/// etcd on `setup` holding the original's fixture set in `store`.
fn loaded(store: Store, setup: EtcdSetup) -> EtcdServer {
    let etcd = EtcdServer::with_setup(setup, &[]).expect("start etcd");
    let dump = lainlet_fixtures::original();
    etcd.with_store(store).load(
        dump.kvs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_slice())),
    );
    etcd
}

/// The service on `etcd`/`store` with its state file at `path`, ready and caught up.
fn start_with(
    kind: ServiceKind,
    etcd: &EtcdServer,
    store: Store,
    path: &std::path::Path,
) -> Service {
    let svc = command_in(kind, etcd, store)
        .env("LAINLET_STATE_FILE", path.to_str().unwrap())
        .start()
        .expect("start the service");
    wait_ok(&svc);
    svc
}

/// Waits until `/healthz` says `ok`.
fn wait_ok(svc: &Service) {
    let ok = wait_until(20 * SEC, || {
        svc.get("/healthz").json()["status"].as_str() == Some("ok")
    });
    assert!(ok, "not ok: {}", svc.get("/healthz").text());
}

/// SIGTERM and wait for the exit (the state file is written then).
fn stop(svc: &mut Service) {
    svc.signal(libc::SIGTERM).unwrap();
    let status = svc.wait_exit(10 * SEC).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

fn views(svc: &Service) -> Vec<(u16, Value)> {
    PATHS
        .iter()
        .map(|p| {
            let r = svc.get(p);
            (
                r.status,
                serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// Compares every view with a fresh service (no state file) on the same etcd.
fn equal_to_a_fresh_start(kind: ServiceKind, etcd: &EtcdServer, store: Store, svc: &Service) {
    let fresh = command_in(kind, etcd, store)
        .start()
        .expect("start a fresh service");
    wait_ok(&fresh);
    wait_revision(svc, served_revision(&fresh));
    assert_eq!(views(svc), views(&fresh), "restarted vs fresh");
}

fn snapshots(svc: &Service) -> f64 {
    metric(svc, "lainlet_snapshots_total").unwrap_or(-1.0)
}

fn restart_with_changes(kind: ServiceKind, store: Store, setup: EtcdSetup, changes: usize) {
    if !setup_selected(store, setup) {
        return;
    }
    let etcd = loaded(store, setup);
    let path = state_path(&format!("{store}-{changes}"));
    let mut svc = start_with(kind, &etcd, store, &path);
    stop(&mut svc);
    assert!(path.exists(), "no state file at {}", path.display());
    let w = etcd.with_store(store);
    for i in 0..changes {
        match i % 3 {
            2 => w.delete(&format!("/lain/config/e2e/k{}", i - 1)),
            _ => w.put(&format!("/lain/config/e2e/k{i}"), format!("v{i}")),
        };
    }
    if changes > 0 {
        w.put("/lain/config/vip", "192.168.77.250");
    }
    svc.restart().unwrap();
    assert!(svc.log().contains("loaded the state file"), "{}", svc.log());
    wait_ok(&svc);
    // v2 catches up event by event only within its window; beyond, a diff of a full read.
    let within_window = store == Store::V3 || changes <= 200;
    if within_window {
        assert_eq!(snapshots(&svc), 0.0, "the restart read no snapshot");
    }
    assert_eq!(metric(&svc, "lainlet_state_file_unproven"), Some(0.0));
    equal_to_a_fresh_start(kind, &etcd, store, &svc);
}

conformance_test!(fn a_restart_with_no_change_reads_nothing_on_etcd34_v3(kind) {
    restart_with_changes(kind, Store::V3, EtcdSetup::Etcd34, 0);
});

conformance_test!(fn a_restart_with_ten_changes_reads_only_them_on_etcd34_v3(kind) {
    restart_with_changes(kind, Store::V3, EtcdSetup::Etcd34, 10);
});

conformance_test!(fn a_restart_with_2000_changes_ends_equal_on_etcd34_v3(kind) {
    restart_with_changes(kind, Store::V3, EtcdSetup::Etcd34, 2000);
});

conformance_test!(fn a_restart_with_ten_changes_reads_only_them_on_etcd34_v2(kind) {
    restart_with_changes(kind, Store::V2, EtcdSetup::Etcd34, 10);
});

conformance_test!(fn a_restart_with_2000_changes_ends_equal_on_etcd34_v2(kind) {
    restart_with_changes(kind, Store::V2, EtcdSetup::Etcd34, 2000);
});

conformance_test!(fn a_restart_with_ten_changes_reads_only_them_through_an_etcd2_proxy(kind) {
    restart_with_changes(kind, Store::V2, EtcdSetup::Etcd2Proxy, 10);
});

conformance_test!(fn a_restart_with_ten_changes_reads_only_them_on_an_etcd2_member(kind) {
    restart_with_changes(kind, Store::V2, EtcdSetup::Etcd2, 10);
});

conformance_test!(fn a_bad_file_is_ignored_with_a_log_line_and_a_full_read(kind) {
    let store = Store::V3;
    if !setup_selected(store, EtcdSetup::Etcd34) {
        return;
    }
    let etcd = loaded(store, EtcdSetup::Etcd34);
    let path = state_path("bad");
    let mut svc = start_with(kind, &etcd, store, &path);
    stop(&mut svc);
    let good = std::fs::read(&path).unwrap();
    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x20;
    for (what, bytes) in [
        ("corrupt", corrupt),
        ("truncated", good[..good.len() / 3].to_vec()),
        ("not a state file", b"{\"hello\": 1}".to_vec()),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        svc.restart().unwrap();
        wait_ok(&svc);
        assert_eq!(snapshots(&svc), 1.0, "{what}: a full read");
        assert_eq!(
            metric(&svc, "lainlet_state_file_load_failures_total"),
            Some(1.0),
            "{what}"
        );
        assert!(svc.log().contains("ignoring the state file"), "{what}");
        stop(&mut svc);
    }
    // A file from another cluster loads, and is read again at the connect's check.
    let other = loaded(store, EtcdSetup::Etcd34);
    other.with_store(store).put("/lain/config/vip", "10.0.0.1");
    let mut svc = command_in(kind, &other, store)
        .env("LAINLET_STATE_FILE", path.to_str().unwrap())
        .start()
        .expect("start");
    wait_ok(&svc);
    assert_eq!(metric(&svc, "lainlet_state_file_rejected_total"), Some(1.0));
    equal_to_a_fresh_start(kind, &other, store, &svc);
    stop(&mut svc);
});

conformance_test!(fn etcd_away_at_start_serves_the_saved_state_as_stale(kind) {
    let store = Store::V3;
    if !setup_selected(store, EtcdSetup::Etcd34) {
        return;
    }
    let mut etcd = loaded(store, EtcdSetup::Etcd34);
    let path = state_path("away");
    let mut svc = start_with(kind, &etcd, store, &path);
    let before = views(&svc);
    stop(&mut svc);
    etcd.stop();
    svc.restart().unwrap();
    let health = svc.get("/healthz");
    assert_eq!(health.status, 200, "{}", health.text());
    let body = health.json();
    assert_eq!(body["status"], "stale", "{body}");
    assert!(
        body["reason"].as_str().unwrap_or("").contains("state file"),
        "{body}"
    );
    assert_eq!(views(&svc), before, "the saved state is served");
    etcd.restart().unwrap();
    wait_ok(&svc);
    assert_eq!(snapshots(&svc), 0.0);
});

conformance_test!(fn a_v2_client_resuming_across_the_restart_gets_one_update(kind) {
    let store = Store::V2;
    if !setup_selected(store, EtcdSetup::Etcd34) {
        return;
    }
    let etcd = loaded(store, EtcdSetup::Etcd34);
    let path = state_path("resume");
    let mut svc = start_with(kind, &etcd, store, &path);
    let mut config = svc.watch("/v2/configwatcher?watch=1&rev=1");
    let init = config.wait_frame(|f| f.event == "init", 5 * SEC).expect("init");
    let mut domain = svc.watch("/v2/configwatcher?target=domain&watch=1&rev=1");
    let domain_init = domain.wait_frame(|f| f.event == "init", 5 * SEC).expect("init");
    drop((config, domain));
    stop(&mut svc);
    etcd.with_store(store).put("/lain/config/vip", "192.168.77.240");
    svc.restart().unwrap();
    wait_ok(&svc);
    let mut config = svc.watch(&format!("/v2/configwatcher?watch=1&rev=1&since={}", init.id));
    let frames: Vec<_> = config
        .collect_for(Duration::from_millis(1500))
        .into_iter()
        .filter(|f| !f.is_heartbeat())
        .collect();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].event, "update");
    assert_eq!(frames[0].json()["vip"], "192.168.77.240");
    let mut domain = svc.watch(&format!(
        "/v2/configwatcher?target=domain&watch=1&rev=1&since={}",
        domain_init.id
    ));
    let frames: Vec<_> = domain
        .collect_for(Duration::from_millis(1500))
        .into_iter()
        .filter(|f| !f.is_heartbeat())
        .collect();
    assert!(frames.is_empty(), "untouched: nothing, got {frames:?}");
});
