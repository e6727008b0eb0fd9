//! End to end, etcd trouble: a restart in the middle of a stream of changes (either store), a
//! compaction past the service's revision while it was cut off (v3; the v2 store's 1000-event
//! window is in `e2e_v2.rs`), and a dead endpoint in the list. The service must end up serving
//! exactly etcd's state, and a watch open all along must end at that state too.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use lainlet_tests::*;

/// The config view of everything: what etcd holds under `/lain/config/`.
const CONFIG: &str = "/v2/configwatcher";

store_conformance_test!(fn an_etcd_restart_in_a_stream_of_changes_loses_nothing(kind, store) {
    let mut etcd = etcd_with_original_in(store);
    let svc = start_in(kind, &etcd, store);
    let mut watch = svc.watch(&format!("{CONFIG}?watch=1"));
    watch.next_frame(5 * SEC).expect("init");

    // A writer keeps changing config keys (tolerating etcd's absence) while etcd restarts.
    let done = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU32::new(0));
    let writer = {
        let (endpoint, done, writes) = (etcd.endpoint(), done.clone(), writes.clone());
        thread::spawn(move || {
            let client = HttpClient::new().timeout(2 * SEC);
            while !done.load(Ordering::Relaxed) {
                let i = writes.load(Ordering::Relaxed);
                let key = format!("/lain/config/e2e/k{}", i % 17);
                if put_raw(&client, &endpoint, store, &key, &format!("v{i}")) {
                    writes.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let wrote = |n: u32| wait_until(20 * SEC, || writes.load(Ordering::Relaxed) >= n);
    assert!(wrote(30), "the writer is writing");
    etcd.restart().expect("restart etcd");
    let after_restart = writes.load(Ordering::Relaxed);
    assert!(wrote(after_restart + 30), "the writer goes on after the restart");
    done.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let w = etcd.with_store(store);
    w.delete("/lain/config/e2e/k3");

    let want = etcd_config_in(&etcd, store);
    wait_json(&svc, CONFIG, &want);
    assert_eq!(served_revision(&svc), w.current_revision());
    expect_frame(&mut watch, "the final state", 10 * SEC, |f| {
        f.data.is_some() && f.json() == want
    });
    assert!(metric(&svc, "lainlet_etcd_disconnects_total").unwrap() >= 1.0);
    assert_eq!(metric(&svc, "lainlet_snapshots_total"), Some(1.0), "resumed, not re-read");
    // (v2: between two long polls etcd counts none for a moment)
    assert!(wait_until(5 * SEC, || w.watchers() == 1), "one etcd watcher");
});

conformance_test!(fn a_compaction_past_the_served_revision_is_survived(kind) {
    let mut etcd = etcd_with_original();
    let svc = start(kind, &etcd);
    let mut watch = svc.watch(&format!("{CONFIG}?watch=1"));
    watch.next_frame(5 * SEC).expect("init");
    let before = served_revision(&svc);

    // Freeze the service, and while it cannot notice, break its etcd connection, change many
    // keys, and compact the history past the revision it has.
    svc.signal(libc::SIGSTOP).unwrap();
    etcd.restart().expect("restart etcd");
    for i in 0..200 {
        etcd.put(&format!("/lain/config/e2e/k{}", i % 23), format!("v{i}"));
    }
    etcd.delete("/lain/config/vip");
    etcd.delete_prefix("/lain/config/e2e/k1");
    let now = etcd.current_revision();
    etcd.compact(now);
    svc.signal(libc::SIGCONT).unwrap();

    let want = etcd_config(&etcd);
    wait_json(&svc, CONFIG, &want);
    assert!(served_revision(&svc) >= now && before < now);
    expect_frame(&mut watch, "the final state", 10 * SEC, |f| {
        f.data.is_some() && f.json() == want
    });
    assert_eq!(metric(&svc, "lainlet_snapshots_total"), Some(2.0), "re-read once");
    assert!(svc.log().contains("compacted"), "logs the compaction");
    // And it keeps following etcd afterwards.
    wait_revision(&svc, etcd.put("/lain/config/vip", "192.168.77.250"));
    assert_eq!(svc.get(&format!("{CONFIG}?target=vip")).text(), r#"{"vip":"192.168.77.250"}"#);
    assert_eq!(etcd.watcher_count(), 1);
});

// Detecting the store (no --etcd-api) through a list whose first endpoint is dead.
store_conformance_test!(fn a_dead_endpoint_in_the_list_is_skipped(kind, store) {
    let etcd = etcd_with_original_in(store);
    let endpoints = format!("127.0.0.1:{},http://{}", free_port(), etcd.endpoint());
    let svc = Service::command(kind)
        .web_auto()
        .args(["--etcd", &endpoints, "--ip", NODE_IP, "--hostname", HOSTNAME])
        .start()
        .expect("ready through the second endpoint");
    let w = etcd.with_store(store);
    wait_revision(&svc, w.put("/lain/config/vip", "192.168.77.251"));
    assert_eq!(svc.get(&format!("{CONFIG}?target=vip")).json()["vip"], "192.168.77.251");
    assert_eq!(svc.get("/healthz").json()["store"], store.name());
    // (v2: between two long polls etcd counts none for a moment)
    assert!(wait_until(5 * SEC, || w.watchers() == 1), "one etcd watcher");
});

/// One put into `store` at `endpoint` over `client`; whether etcd took it (it may be down).
fn put_raw(client: &HttpClient, endpoint: &str, store: Store, key: &str, value: &str) -> bool {
    match store {
        Store::V3 => {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD;
            let body = serde_json::json!({ "key": b64.encode(key), "value": b64.encode(value) });
            client
                .post_json(endpoint, "/v3/kv/put", &body)
                .is_ok_and(|r| r.status == 200)
        }
        Store::V2 => {
            let form = format!("value={value}"); // the values here need no escaping
            let headers = [("Content-Type", "application/x-www-form-urlencoded")];
            let path = format!("/v2/keys{key}");
            client
                .request("PUT", endpoint, &path, &headers, form.as_bytes())
                .is_ok_and(|r| r.status == 200 || r.status == 201)
        }
    }
}
