//! End to end, peer input that is wrong or hostile, against both binaries: malformed request
//! heads (one clear 4xx/505 from either shell, never a hang or a crash), `/debug` from an
//! unknown address (no raw values), and etcd values that are not pod groups (reported, the
//! last good value kept). Every test ends by checking that the service still answers and that
//! nothing panicked.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use lainlet_tests::*;

/// Writes `bytes` on a fresh connection and reads until the server closes it (or 10 s);
/// returns the status code of the first response line.
fn raw_status(svc: &Service, bytes: &[u8]) -> Option<u16> {
    let mut tcp = HttpClient::new()
        .timeout(10 * SEC)
        .connect(svc.addr())
        .ok()?;
    tcp.write_all(bytes).ok()?;
    let mut answer = Vec::new();
    let deadline = Instant::now() + 10 * SEC;
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match tcp.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The service still serves, and its log shows no panic.
fn still_healthy(svc: &Service) {
    assert_eq!(svc.get("/healthz").status, 200);
    assert!(
        !svc.log().contains("panicked"),
        "a panic in the log:\n{}",
        svc.log()
    );
}

conformance_test!(fn malformed_heads_get_one_clear_answer_and_nothing_hangs(kind) {
    let etcd = etcd_with_original();
    let svc = start(kind, &etcd);
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a raw non-ASCII byte in the target", b"GET /version\xd0\x87 HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("a body length near u64::MAX", b"GET /version HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n".to_vec(), 413),
        ("two different lengths", b"GET /version HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(), 400),
        ("a length that is not a number", b"GET /version HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(), 400),
        ("an HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), 505),
        ("bytes that are no request", b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(), 400),
        ("a head over 16 KiB", huge.into_bytes(), 431),
        ("a watch with a body length near u64::MAX", b"GET /v2/configwatcher?target=domain&watch=1 HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n".to_vec(), 413),
    ];
    for (what, bytes, want) in cases {
        let started = Instant::now();
        assert_eq!(raw_status(&svc, &bytes), Some(want), "{what}");
        assert!(started.elapsed() < Duration::from_secs(5), "{what}: answered and closed at once");
    }
    // A truncated head, then the client half-closes: a 400, not a hang.
    let mut tcp = HttpClient::new().connect(svc.addr()).unwrap();
    tcp.write_all(b"GET /version HTTP/1.1\r\nHo").unwrap();
    tcp.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    still_healthy(&svc);
});

conformance_test!(fn debug_from_an_unknown_address_shows_no_raw_values(kind) {
    let etcd = etcd_with_original();
    let svc = start(kind, &etcd);
    wait_revision(&svc, etcd.put("/lain/config/rsyncd_secrets", "0b7e6d04-7f2c-4a7e-9bd2-2c5d0d1f7a11"));
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::STANDARD.encode("0b7e6d04-7f2c-4a7e-9bd2-2c5d0d1f7a11");
    let local = svc.get("/debug").text();
    assert!(local.contains(&secret), "local callers see values: {local}");
    let stranger = svc.get_from("127.0.0.99", "/debug");
    assert_eq!(stranger.status, 200, "networkd and collectd read /debug from anywhere");
    let text = stranger.text();
    assert!(!text.contains(&secret), "{text}");
    let json = stranger.json();
    assert_eq!(json["watchers"]["config"]["LastEvent"]["Key"], "/lain/config/rsyncd_secrets");
    assert!(json["connections"].is_number() && json["goroutines"].is_number());
    still_healthy(&svc);
});

conformance_test!(fn values_that_are_not_pod_groups_are_reported_and_keep_the_last_good_value(kind) {
    let etcd = etcd_with_original();
    let svc = start(kind, &etcd);
    let proxy = "/v2/proxywatcher?appname=hello";
    let before = svc.get(proxy).json();
    let key = "/lain/deployd/pod_groups/hello/hello.web.web";
    for bad in ["[]", "null", "{}", r#"{"Spec":null}"#, "\"\"", "0", "true"] {
        wait_revision(&svc, etcd.put(key, bad));
        assert_eq!(svc.get(proxy).json(), before, "{bad}: the app's pods stay");
        let debug = svc.get("/debug").json();
        assert!(debug["decode_errors"][key].is_object(), "{bad}: reported in /debug: {debug}");
        assert_eq!(metric(&svc, "lainlet_undecodable_keys"), Some(1.0), "{bad}");
    }
    still_healthy(&svc);
});
