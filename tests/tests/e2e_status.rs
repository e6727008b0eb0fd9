//! End to end, for the operator: the live status page and its stream (local callers only), the
//! page in headless Chromium following a real etcd (with a screenshot), and what start-up
//! logs (progress, the time until it serves, JSON lines for log shippers).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::*;
use lainlet_tests::*;
use serde_json::Value;

/// The node IP of these tests: a loopback address other than 127.0.0.1, so a caller can come
/// from it.
const LOCAL_IP: &str = "127.0.0.9";

/// `target/test-artifacts`, created.
fn artifacts() -> PathBuf {
    let dir = workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

conformance_test!(fn the_page_and_its_stream_are_for_local_callers_only(kind) {
    let etcd = etcd_with_original();
    let svc = Service::command(kind)
        .web_auto()
        .etcd(&etcd)
        .args(["--ip", LOCAL_IP, "--hostname", HOSTNAME])
        .start()
        .unwrap();
    for path in ["/", "/status"] {
        for from in ["127.0.0.1", LOCAL_IP] {
            let page = svc.get_from(from, path);
            assert_eq!(page.status, 200, "{path} from {from}");
            assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
            let csp = page.header("content-security-policy").unwrap_or_default();
            assert!(csp.contains("default-src 'none'"), "{csp}");
            assert!(page.text().contains("<title>lainlet status</title>"));
        }
        let refused = svc.get_from("127.0.0.5", path);
        assert_eq!(refused.status, 403, "{path} from another address");
        assert!(refused.text().contains("local callers only"), "{}", refused.text());
    }

    let mut stream = svc.watch("/status/stream");
    let frame = stream.next_frame(5 * SEC).expect("a status frame at once");
    assert_eq!(frame.event, "status");
    let status = frame.json();
    assert_eq!(status["mode"], "etcd");
    assert_eq!(status["etcd"]["store"], "v3", "the test etcd holds /lain/ in v3");
    // the endpoint the service was given (https:// under LAINLET_TEST_ETCD_TLS=1)
    let given = etcd.service_flags()[1].clone();
    let endpoint = match given.contains("://") {
        true => given,
        false => format!("http://{given}"),
    };
    assert_eq!(status["etcd"]["endpoint"], endpoint);
    assert_eq!(status["node_ip"], LOCAL_IP);
    assert_eq!(status["watchers"]["status_pages"], 1);
    let revision = etcd.put("/lain/config/status_e2e", "1");
    let newer = expect_frame(&mut stream, "at the put's revision", 10 * SEC, |f| {
        f.json()["etcd"]["applied_revision"].as_i64() >= Some(revision)
    });
    assert!(newer.json()["uptime_ms"].as_u64() > status["uptime_ms"].as_u64());

    let mut refused = svc.watch_from("127.0.0.5", "/status/stream");
    assert_eq!(refused.status(), 403);
    assert!(refused.next_frame(SEC).is_none(), "no stream for others");
    // The v2 paths are untouched.
    assert_eq!(svc.get("/v2/nodes/").status, 200);
    assert_eq!(svc.get("/status/nothing").status, 404);
});

conformance_test!(fn the_status_page_follows_etcd_in_a_browser(kind) {
    let etcd = etcd_with_original();
    let svc = start(kind, &etcd);
    let mut watches: Vec<SseStream> = [
        "/v2/procwatcher?appname=hello&watch=1",
        "/v2/procwatcher/?appname=hello&watch=1",
        "/v2/nodes?watch=1",
    ]
    .iter()
    .map(|path| svc.watch(path))
    .collect();
    for w in &mut watches {
        assert_eq!(w.next_frame(5 * SEC).expect("init").event, "init");
    }
    let png = artifacts().join(format!("status-page-{}.png", kind.bin_name()));
    let _ = std::fs::remove_file(&png);
    let started = Instant::now();
    let out = run_python(
        "status_page_check.py",
        &[
            &format!("http://{}/", svc.addr()),
            &etcd.client_url(),
            png.to_str().unwrap(),
        ],
        &[],
        120 * SEC,
    )
    .unwrap();
    eprintln!("status page in headless Chromium: {:?}", started.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status_page_check.py failed: {stdout}");
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(seen["mode"], "etcd", "{seen}");
    let bytes = std::fs::read(&png).expect("the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    // What the page showed is what lainlet serves.
    let debug = svc.get("/debug").json();
    assert!(debug["decode_errors"]["/lain/deployd/pod_groups/broken/broken.web.web"].is_object());
    drop(watches);
});

// A snapshot read that takes long (etcd or the network slow: here a proxy holds the v2 read for
// 6 s) says every 5 s that it is still reading, then what it read; until then every v2 request
// gets 503.
conformance_test!(fn a_slow_snapshot_read_says_it_is_still_reading(kind) {
    let etcd = etcd_with_original_in(Store::V2);
    let proxy = FaultyProxy::start(&etcd.endpoint()).unwrap();
    proxy.delay("sorted=true", 1, std::time::Duration::from_secs(6));
    let started = Instant::now();
    let mut svc = Service::command(kind)
        .web_auto()
        .args(["--etcd", proxy.addr(), "--etcd-api", "v2", "--ip", NODE_IP])
        .spawn()
        .expect("start");
    svc.wait_listening(10 * SEC).expect("listening");
    let early = svc.get("/v2/configwatcher?target=vip");
    assert_eq!(early.status, 503, "before the snapshot: {}", early.text());
    svc.wait_healthy(30 * SEC).expect("ready after the slow read");
    assert!(started.elapsed() > 6 * SEC, "{:?}", started.elapsed());
    let log = svc.log();
    let still = log.lines().filter(|l| l.contains("still reading /lain/")).count();
    assert_eq!(still, 1, "one progress line in 6 s: {log}");
    let keys = lainlet_fixtures::original().kvs.len();
    assert!(log.contains(&format!("read {keys} keys")), "{log}");
    assert!(log.contains("serving: ready"), "{log}");
});

conformance_test!(fn start_up_logs_its_progress_as_json_lines(kind) {
    let etcd = etcd_with_original();
    let svc = command(kind, &etcd).args(["--log-format", "json"]).start().unwrap();
    let lines: Vec<Value> = svc
        .log()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let message = |needle: &str| {
        lines
            .iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.contains(needle)))
            .unwrap_or_else(|| panic!("no log line with {needle:?} in {}", svc.log()))
    };
    let keys = lainlet_fixtures::original().kvs.len();
    let read = message("keys (");
    assert!(read["message"].as_str().unwrap().contains(&format!("read {keys} keys")), "{read}");
    assert_eq!(read["level"], "INFO");
    assert!(read["timestamp"].is_string(), "{read}");
    message("decoded and applied");
    message("serving: ready");
    message("open files: soft limit");
    assert!(!svc.log().lines().any(|l| l.contains(" INFO ")), "no text lines: {}", svc.log());

    // The demo's status says demo.
    let demo = Service::command(kind).web_auto().arg("--demo").start().unwrap();
    let status = demo.watch("/status/stream").next_frame(5 * SEC).expect("status").json();
    assert_eq!(status["mode"], "demo");
    assert_eq!(status["etcd"]["state"], "demo");
    assert_eq!(demo.get("/healthz").json()["etcd"], "demo");
});
