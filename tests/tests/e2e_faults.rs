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

/// Reads from `tcp` until the server closes it or `limit` passes; the bytes and whether it
/// closed.
fn read_until_closed(tcp: &mut std::net::TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
    while Instant::now() < deadline {
        match tcp.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

conformance_test!(fn slow_heads_and_idle_connections_are_closed_but_watches_stay(kind) {
    let etcd = etcd_with_original();
    let svc = command(kind, &etcd)
        .args(["--header-timeout", "1", "--idle-timeout", "2"])
        .start()
        .expect("start");
    // A slowloris: one header byte every 300 ms never completes a head: 408 after ~1 s.
    let mut slow = HttpClient::from_ip("127.0.0.5").connect(svc.addr()).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for b in b"GET /version HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        let (bytes, closed) = read_until_closed(&mut slow, Duration::from_millis(300));
        answer.extend(bytes);
        if closed {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // A connection that never sends anything, and a keep-alive one after its request: closed
    // after the idle timeout, without an answer.
    let mut idle = HttpClient::from_ip("127.0.0.6").connect(svc.addr()).unwrap();
    let mut kept = HttpClient::new().connect(svc.addr()).unwrap();
    kept.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (first, _) = read_until_closed(&mut kept, Duration::from_millis(500));
    assert!(String::from_utf8_lossy(&first).contains("2.4.3+git"));
    let (bytes, closed) = read_until_closed(&mut idle, Duration::from_secs(5));
    assert!(closed && bytes.is_empty(), "idle: {bytes:?} closed {closed}");
    let (bytes, closed) = read_until_closed(&mut kept, Duration::from_secs(5));
    assert!(closed && bytes.is_empty(), "kept alive: {bytes:?} closed {closed}");
    // A watch outlives the idle timeout and still gets changes.
    let mut watch = svc.watch("/v2/configwatcher?target=vip&watch=1");
    watch.next_frame(5 * SEC).expect("init");
    std::thread::sleep(Duration::from_secs(3));
    etcd.put("/lain/config/vip", "192.168.77.240");
    let update = expect_frame(&mut watch, "the update", 5 * SEC, |f| f.event == "update");
    assert_eq!(update.json()["vip"], "192.168.77.240");
    still_healthy(&svc);
});

// The idle timeout counts from the end of the last request, not from the connection's start:
// a keep-alive client asking every 0.5 s keeps its connection well past `--idle-timeout 2`,
// and once it stops asking the connection closes after about that long.
conformance_test!(fn a_busy_keep_alive_connection_outlives_the_idle_timeout(kind) {
    let etcd = etcd_with_original();
    let svc = command(kind, &etcd)
        .args(["--idle-timeout", "2"])
        .start()
        .expect("start");
    let mut kept = HttpClient::new().connect(svc.addr()).unwrap();
    let started = Instant::now();
    let mut last = started;
    for i in 0..10 {
        last = Instant::now();
        kept.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap_or_else(|e| panic!("request {i} after {:?}: {e}", started.elapsed()));
        let (answer, closed) = read_until_closed(&mut kept, Duration::from_millis(500));
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.contains("2.4.3+git"),
            "request {i} after {:?}: {text:?}",
            started.elapsed()
        );
        assert!(!closed, "closed after request {i}, {:?} after the start", started.elapsed());
    }
    assert!(started.elapsed() > Duration::from_secs(4), "{:?}", started.elapsed());
    let (bytes, closed) = read_until_closed(&mut kept, Duration::from_secs(5));
    assert!(closed && bytes.is_empty(), "after going quiet: {bytes:?} closed {closed}");
    let idle = last.elapsed();
    assert!(idle > Duration::from_millis(1800), "closed {idle:?} after the last request");
    still_healthy(&svc);
});

conformance_test!(fn a_flood_past_the_limit_is_refused_cleanly_locals_get_in_and_all_recovers(kind) {
    let etcd = etcd_with_original();
    // 400 descriptors: the default limit leaves 256 of them free → 144 connections, 20 of
    // them kept for local callers.
    let svc = command(kind, &etcd)
        .args(["--local-reserve", "20"])
        .open_files(400)
        .start()
        .expect("start");
    assert!(svc.log().contains("at most 144 connections"), "{}", svc.log());
    // 124 idle connections from a stranger fill what non-local callers may use…
    let mut held = Vec::new();
    for _ in 0..124 {
        held.push(HttpClient::from_ip("127.0.0.5").connect(svc.addr()).unwrap());
    }
    wait_until(5 * SEC, || svc.get("/debug").json()["connections"].as_u64() >= Some(125));
    // …the next stranger is refused with a clear 503, the node's own callers still get in.
    let refused = HttpClient::from_ip("127.0.0.5").get(svc.addr(), "/version").unwrap();
    assert_eq!(refused.status, 503);
    assert!(refused.text().contains("too many open connections"), "{}", refused.text());
    assert_eq!(svc.get("/healthz").status, 200, "a local caller during the flood");
    // A burst far past the limit (more than the descriptors the process has): every client
    // gets an answer or a refusal, and nothing breaks.
    let burst: Vec<_> = (0..600)
        .map(|i| {
            let addr = svc.addr().to_owned();
            std::thread::spawn(move || {
                let client = HttpClient::from_ip(&format!("127.0.0.{}", 10 + i % 50)).timeout(10 * SEC);
                client.get(&addr, "/version").map(|r| r.status).unwrap_or(0)
            })
        })
        .collect();
    let statuses: Vec<u16> = burst.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503 || *s == 0), "{statuses:?}");
    assert!(statuses.contains(&503), "some were refused");
    // The flood ends: everything works again, with no error in between.
    drop(held);
    let recovered = wait_until(10 * SEC, || {
        HttpClient::from_ip("127.0.0.5").get(svc.addr(), "/v2/configwatcher?target=domain").is_ok_and(|r| r.status == 200)
    });
    assert!(recovered, "strangers are served again");
    for _ in 0..50 {
        let r = HttpClient::from_ip("127.0.0.5").get(svc.addr(), "/version").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_revision(&svc, etcd.put("/lain/config/vip", "192.168.77.241"));
    still_healthy(&svc);
});
