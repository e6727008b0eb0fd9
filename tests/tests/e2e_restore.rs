//! End to end, etcd restored from a backup (issue 17): the history goes **back** (a lower
//! revision or index, or a new cluster ID) and lainlet must notice, re-read, and serve etcd's
//! restored state plus what is written after it; `/healthz` must never say `ok` while lainlet
//! serves a state that etcd does not hold.
//!
//! On three setups: an etcd 2.3.7 member (v2), etcd 3.4's v2 store (`--enable-v2`), etcd 3.4's
//! v3 store; and for v3 also `etcdctl snapshot restore` (a new cluster ID). The writes lost in
//! the restore always create `/lain/config/lost`, which no later write creates, so the
//! pre-restore state can never be mistaken for a valid one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use lainlet_tests::*;
use serde_json::Value;

const CONFIG: &str = "/v2/configwatcher";

/// How long lainlet may take to serve etcd's state after a restore.
const CONVERGE: Duration = Duration::from_secs(10);

/// A fresh `setup` holding a vip and five keys in `store`, and the service reading `store`,
/// caught up; `None` (skipped) when the setup is not selected or not built.
fn start_pair(kind: ServiceKind, store: Store, setup: EtcdSetup) -> Option<(EtcdServer, Service)> {
    if !setup_selected(store, setup) {
        return None;
    }
    let etcd = EtcdServer::with_setup(setup, &[]).expect("start etcd");
    {
        let w = etcd.with_store(store);
        w.put("/lain/config/vip", "192.168.77.201");
        for i in 0..5 {
            w.put(&format!("/lain/config/e2e/k{i}"), format!("v{i}"));
        }
    }
    let svc = command_in(kind, &etcd, store)
        .args(["--quorum-check-after", "2"])
        .start()
        .expect("start the service");
    wait_json(&svc, CONFIG, &etcd_config_in(&etcd, store));
    Some((etcd, svc))
}

/// The writes a restore loses: a changed vip, a new key `lost`, a deleted key.
fn lost_writes(etcd: &EtcdServer, store: Store) {
    let w = etcd.with_store(store);
    w.put("/lain/config/vip", "192.168.77.250");
    w.put("/lain/config/lost", "written after the backup");
    w.delete("/lain/config/e2e/k0");
}

/// Samples `/healthz` and the config view in a loop until stopped: (status, config read after
/// the status) pairs.
struct HealthWatch {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(String, Value)>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl HealthWatch {
    fn start(svc: &Service) -> HealthWatch {
        let addr = svc.addr().to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, samples) = (stop.clone(), samples.clone());
            thread::spawn(move || {
                let http = HttpClient::new().timeout(2 * SEC);
                while !stop.load(Ordering::Relaxed) {
                    let health = http.get(&addr, "/healthz").map(|r| r.json());
                    let config = http.get(&addr, CONFIG).map(|r| r.json());
                    if let (Ok(h), Ok(c)) = (health, config) {
                        let status = h["status"].as_str().unwrap_or("?").to_owned();
                        samples.lock().unwrap().push((status, c));
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            })
        };
        HealthWatch {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Stops sampling; panics if `/healthz` said `ok` with a config that is none of `valid`
    /// (etcd's states since the watch started). Returns how many samples were taken.
    fn check(mut self, valid: &[Value]) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("health sampler");
        }
        let samples = self.samples.lock().unwrap();
        for (i, (status, config)) in samples.iter().enumerate() {
            assert!(
                status != "ok" || valid.contains(config),
                "sample {i}: /healthz said ok while serving {config}, which etcd never held \
                 since the restore (etcd's states: {valid:?})"
            );
        }
        samples.len()
    }
}

impl Drop for HealthWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until the service serves etcd's config (bounded by [`CONVERGE`]) and then `ok`; on
/// success prints how long it took, else returns what it served.
fn converges(svc: &Service, etcd: &EtcdServer, store: Store, what: &str) -> Result<(), String> {
    let want = etcd_config_in(etcd, store);
    let started = Instant::now();
    let mut last = Value::Null;
    let ok = wait_until(CONVERGE, || {
        last = svc.get(CONFIG).json();
        last == want
    });
    if !ok {
        return Err(format!(
            "{what}: not serving etcd's state {CONVERGE:?} after the restore\n etcd:    {want}\n \
             served:  {last}\n healthz: {}",
            svc.get("/healthz").text()
        ));
    }
    eprintln!("{what}: etcd's state served after {:?}", started.elapsed());
    if !wait_until(CONVERGE, || svc.get("/healthz").json()["status"] == "ok") {
        return Err(format!(
            "{what}: not `ok` again: {}",
            svc.get("/healthz").text()
        ));
    }
    Ok(())
}

/// Checks the health samples first (`ok` on a state etcd never held is the sharper failure),
/// then that the service converged.
fn verdict(watch: HealthWatch, valid: &[Value], converged: Result<(), String>) {
    let n = watch.check(valid);
    eprintln!("{n} health samples checked");
    if let Err(e) = converged {
        panic!("{e}");
    }
}

/// Backup by copying the stopped member's data dir; more writes (applied by lainlet); restore
/// the copy (the index/revision goes back); a few new writes: lainlet must serve the restored
/// state plus them, and never say `ok` on the lost state.
fn restore_a_data_dir_copy(kind: ServiceKind, store: Store, setup: EtcdSetup) {
    let Some((mut etcd, svc)) = start_pair(kind, store, setup) else {
        return;
    };
    let backup = TempDir::new("etcd-backup").expect("temp dir");
    let copy = backup.path().join("data");
    etcd.stop();
    etcd.copy_data_dir(&copy).expect("copy the data dir");
    etcd.start().expect("start etcd after the backup");
    lost_writes(&etcd, store);
    wait_json(&svc, CONFIG, &etcd_config_in(&etcd, store));
    let before = etcd.with_store(store).current_revision();

    etcd.stop();
    etcd.restore_data_dir(&copy).expect("restore the copy");
    etcd.start().expect("start the restored etcd");
    let watch = HealthWatch::start(&svc);
    let mut valid = vec![etcd_config_in(&etcd, store)];
    let w = etcd.with_store(store);
    for i in 0..2 {
        w.put(
            &format!("/lain/config/new/k{i}"),
            format!("after the restore {i}"),
        );
        valid.push(etcd_config_in(&etcd, store));
    }
    let after = w.current_revision();
    assert!(after < before, "the history went back: {before} → {after}");
    let converged = converges(&svc, &etcd, store, "restored copy + 2 writes");
    verdict(watch, &valid, converged);
}

/// As [`restore_a_data_dir_copy`], but lainlet is frozen (SIGSTOP) through the restore and
/// until etcd has taken more writes than were lost: the revision is higher again than what
/// lainlet applied, over a different history.
fn restore_and_write_more_than_was_lost(kind: ServiceKind, store: Store, setup: EtcdSetup) {
    let Some((mut etcd, svc)) = start_pair(kind, store, setup) else {
        return;
    };
    let backup = TempDir::new("etcd-backup").expect("temp dir");
    let copy = backup.path().join("data");
    etcd.stop();
    etcd.copy_data_dir(&copy).expect("copy the data dir");
    etcd.start().expect("start etcd after the backup");
    lost_writes(&etcd, store);
    wait_json(&svc, CONFIG, &etcd_config_in(&etcd, store));
    let applied = served_revision(&svc);

    let disconnects = || metric(&svc, "lainlet_etcd_disconnects_total").unwrap_or(0.0);
    let before = disconnects();
    svc.signal(libc::SIGSTOP).unwrap();
    etcd.stop();
    etcd.restore_data_dir(&copy).expect("restore the copy");
    etcd.start().expect("start the restored etcd");
    let w = etcd.with_store(store);
    for i in 0..20 {
        w.put(
            &format!("/lain/config/new/k{i:02}"),
            format!("after the restore {i}"),
        );
    }
    let now = w.current_revision();
    assert!(
        now > applied,
        "more writes than were lost: {applied} → {now}"
    );
    let valid = vec![etcd_config_in(&etcd, store)];
    svc.signal(libc::SIGCONT).unwrap();
    // Until lainlet has run again and seen its connection broken, it answers from before the
    // freeze; from then on it must not say `ok` on a state etcd has not held.
    assert!(
        wait_until(10 * SEC, || disconnects() > before),
        "lainlet noticed its broken etcd connection"
    );
    let watch = HealthWatch::start(&svc);
    let converged = converges(
        &svc,
        &etcd,
        store,
        "restored copy + 20 writes, lainlet frozen",
    );
    verdict(watch, &valid, converged);
}

conformance_test!(fn a_restored_data_dir_copy_is_served_on_etcd2_v2(kind) {
    restore_a_data_dir_copy(kind, Store::V2, EtcdSetup::Etcd2);
});

conformance_test!(fn a_restored_data_dir_copy_is_served_on_etcd34_v2(kind) {
    restore_a_data_dir_copy(kind, Store::V2, EtcdSetup::Etcd34);
});

conformance_test!(fn a_restored_data_dir_copy_is_served_on_etcd34_v3(kind) {
    restore_a_data_dir_copy(kind, Store::V3, EtcdSetup::Etcd34);
});

conformance_test!(fn a_restore_that_took_more_writes_than_were_lost_is_served_on_etcd2_v2(kind) {
    restore_and_write_more_than_was_lost(kind, Store::V2, EtcdSetup::Etcd2);
});

conformance_test!(fn a_restore_that_took_more_writes_than_were_lost_is_served_on_etcd34_v2(kind) {
    restore_and_write_more_than_was_lost(kind, Store::V2, EtcdSetup::Etcd34);
});

conformance_test!(fn a_restore_that_took_more_writes_than_were_lost_is_served_on_etcd34_v3(kind) {
    restore_and_write_more_than_was_lost(kind, Store::V3, EtcdSetup::Etcd34);
});

conformance_test!(fn an_etcdctl_snapshot_restore_with_a_new_cluster_id_is_served_on_v3(kind) {
    let Some((mut etcd, svc)) = start_pair(kind, Store::V3, EtcdSetup::Etcd34) else { return };
    let backup = TempDir::new("etcd-snapshot").expect("temp dir");
    let file = backup.path().join("snapshot.db");
    etcd.snapshot_save(&file).expect("etcdctl snapshot save");
    let old_id = etcd.cluster_id().expect("a cluster ID");
    lost_writes(&etcd, Store::V3);
    wait_json(&svc, CONFIG, &etcd_config_in(&etcd, Store::V3));

    etcd.stop();
    etcd.snapshot_restore(&file).expect("etcdctl snapshot restore");
    etcd.start().expect("start the restored etcd");
    let new_id = etcd.cluster_id().expect("a cluster ID");
    assert_ne!(old_id, new_id, "snapshot restore makes a new cluster");
    let watch = HealthWatch::start(&svc);
    let mut valid = vec![etcd_config_in(&etcd, Store::V3)];
    for i in 0..2 {
        etcd.put(&format!("/lain/config/new/k{i}"), format!("after the restore {i}"));
        valid.push(etcd_config_in(&etcd, Store::V3));
    }
    let converged = converges(&svc, &etcd, Store::V3, "snapshot restore + 2 writes");
    verdict(watch, &valid, converged);
});
