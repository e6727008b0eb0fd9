//! Re-records the etcd 2.3.7 answers in `core/src/etcd/recorded/` (`etcd2_*.http` from a 2.3.7
//! member, `proxy2_*.http` through a 2.3.7 proxy in front of it): the bytes exactly as they came
//! over a raw socket, head and (chunked) body. Not a test: run it with
//! `scripts/record-etcd2.sh` (or `cargo test -p lainlet-tests --test record_etcd2 --
//! --ignored --nocapture`). It prints, per file, when the head and the end of the answer came
//! (ms after the request was sent) and whether `X-Etcd-Cluster-Id` / `X-Etcd-Index` were in the
//! head: the README's table is written from that output.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use lainlet_tests::*;

/// Where the recordings go.
fn out_dir() -> PathBuf {
    workspace_root().join("core/src/etcd/recorded")
}

/// One recorded answer and its timing.
struct Recording {
    bytes: Vec<u8>,
    head_ms: Option<u128>,
    end_ms: Option<u128>,
    /// (ms since the request, bytes received so far) at every read that returned data.
    arrivals: Vec<(u128, usize)>,
}

/// Where the head ends (after `\r\n\r\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A header's value in a raw head (case-insensitive name).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// Whether `body` (after the head) is a complete chunked body (ends with the 0-size chunk).
fn chunked_complete(body: &[u8]) -> bool {
    let mut rest = body;
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or(""), 16)
        else {
            return false;
        };
        let need = eol + 2 + size + 2;
        if size == 0 {
            return rest.len() >= need;
        }
        if rest.len() < need {
            return false;
        }
        rest = &rest[need..];
    }
}

/// Whether `buf` holds a complete answer (Content-Length or chunked framing).
fn complete(buf: &[u8]) -> bool {
    let Some(end) = head_end(buf) else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let body = &buf[end..];
    if let Some(n) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        return body.len() >= n;
    }
    if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return chunked_complete(body);
    }
    false
}

/// Sends `GET path` to `endpoint` and reads until the answer is complete, the server closes, or
/// `limit` passes (a stream is cut there). `during` runs on another thread once the request
/// has been sent (to write while a watch waits).
fn record(
    endpoint: &str,
    path: &str,
    limit: Duration,
    during: impl FnOnce() + Send + 'static,
) -> Recording {
    let mut s = TcpStream::connect(endpoint).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nAccept: */*\r\n\r\n");
    let start = Instant::now();
    s.write_all(req.as_bytes()).expect("send");
    let writer = thread::spawn(during);
    let mut rec = Recording {
        bytes: Vec::new(),
        head_ms: None,
        end_ms: None,
        arrivals: Vec::new(),
    };
    let mut chunk = [0u8; 65536];
    while start.elapsed() < limit {
        match s.read(&mut chunk) {
            Ok(0) => {
                rec.end_ms = Some(start.elapsed().as_millis());
                break;
            }
            Ok(n) => {
                rec.bytes.extend_from_slice(&chunk[..n]);
                let ms = start.elapsed().as_millis();
                rec.arrivals.push((ms, rec.bytes.len()));
                if rec.head_ms.is_none() && head_end(&rec.bytes).is_some() {
                    rec.head_ms = Some(ms);
                }
                if complete(&rec.bytes) {
                    rec.end_ms = Some(ms);
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read {path} from {endpoint}: {e}"),
        }
    }
    writer.join().expect("writer thread");
    rec
}

/// Writes `rec` to `name` and prints its row: timing and the two headers.
fn save(name: &str, what: &str, rec: &Recording) {
    std::fs::write(out_dir().join(name), &rec.bytes).expect("write recording");
    let head = head_end(&rec.bytes)
        .map(|e| String::from_utf8_lossy(&rec.bytes[..e]).into_owned())
        .unwrap_or_default();
    let status = head.lines().next().unwrap_or("(no head)");
    let has = |h: &str| {
        if header(&head, h).is_some() {
            "yes"
        } else {
            "no"
        }
    };
    let ms = |v: Option<u128>| v.map(|v| format!("{v}")).unwrap_or_else(|| "—".into());
    println!(
        "| `{name}` | {what} | {status} | head {} ms, end {} ms | cluster-id {} | index {} |",
        ms(rec.head_ms),
        ms(rec.end_ms),
        has("X-Etcd-Cluster-Id"),
        has("X-Etcd-Index"),
    );
    if rec.arrivals.len() > 2 {
        println!("    arrivals (ms, bytes): {:?}", rec.arrivals);
    }
}

/// The keys of the 3.4 recordings (`snapshot_tree.http`), in the same order.
fn load_tree(etcd: &EtcdServer) {
    etcd.v2_put("/lain/config/vip", "192.168.77.201");
    etcd.v2_put("/lain/config/vips/192.168.77.201", r#"{"app":"webrouter"}"#);
    etcd.v2_put("/lain/config/super_apps/console", "{}");
    etcd.v2_put(
        "/lain/nodes/nodes/node1:192.168.77.21:22",
        r#"{"name":"node1","ssh_port":22}"#,
    );
    etcd.v2_put(
        "/lain/deployd/pod_groups/shop/shop.web.web",
        r#"{"Spec":{"Name":"shop.web.web"}}"#,
    );
    etcd.v2_put(
        "/lain/deployd/pod_groups/shop-api/shop-api.web.web",
        r#"{"Spec":{"Name":"shop-api.web.web"}}"#,
    );
    etcd.v2_mkdir("/lain/deployd/depends/pods");
}

/// A form PUT straight to the member (from a writer thread).
fn put(member: &str, key: &str, value: &str) {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("value", value)
        .finish();
    let r = HttpClient::new()
        .request(
            "PUT",
            member,
            &format!("/v2/keys{key}"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
        .expect("put");
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
}

const SNAPSHOT: &str = "/v2/keys/lain?recursive=true&sorted=true&quorum=true";
const PROBE: &str = "/v2/keys/lain?quorum=true";

fn watch(index: i64, stream: bool) -> String {
    let stream = if stream { "&stream=true" } else { "" };
    format!("/v2/keys/lain?wait=true&recursive=true{stream}&waitIndex={index}")
}

fn nothing() {}

#[test]
#[ignore = "re-records core/src/etcd/recorded/{etcd2,proxy2}_*.http: scripts/record-etcd2.sh"]
fn record_etcd2_member_and_proxy_answers() {
    assert!(
        setup_selected(Store::V2, EtcdSetup::Etcd2Proxy),
        "etcd 2.3.7 is needed"
    );
    let mut etcd = EtcdServer::with_setup(EtcdSetup::Etcd2Proxy, &[]).expect("2.3.7 + proxy");
    let member = etcd.member_endpoint();
    let proxy = etcd.endpoint();
    let short = Duration::from_secs(5);
    println!("| file | request | status | timing | X-Etcd-Cluster-Id | X-Etcd-Index |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (prefix, ep) in [("etcd2", &member), ("proxy2", &proxy)] {
        let r = record(ep, SNAPSHOT, short, nothing);
        save(
            &format!("{prefix}_snapshot_missing.http"),
            "snapshot, empty store",
            &r,
        );
        let r = record(ep, PROBE, short, nothing);
        save(
            &format!("{prefix}_probe_missing.http"),
            "probe, empty store",
            &r,
        );
    }
    load_tree(&etcd);
    let index = etcd.v2_index();
    for (prefix, ep) in [("etcd2", &member), ("proxy2", &proxy)] {
        let r = record(ep, SNAPSHOT, short, nothing);
        save(
            &format!("{prefix}_snapshot_tree.http"),
            "snapshot of the tree",
            &r,
        );
        let r = record(ep, PROBE, short, nothing);
        save(&format!("{prefix}_probe_keys.http"), "probe with keys", &r);
        // from history: waitIndex at an existing event (the first put)
        let first = index - 6;
        let r = record(ep, &watch(first, false), short, nothing);
        save(
            &format!("{prefix}_watch_once_history_hit.http"),
            "long-poll from history",
            &r,
        );
        // live: waitIndex beyond the store; one put 300 ms later
        let next = etcd.v2_index() + 1;
        let m = member.clone();
        let r = record(ep, &watch(next, false), short, move || {
            thread::sleep(Duration::from_millis(300));
            put(&m, "/lain/config/vip", "192.168.77.202");
        });
        save(
            &format!("{prefix}_watch_once_live.http"),
            "long-poll answered live (put after 300 ms)",
            &r,
        );
    }

    // stream=true: the member flushes the head at once; the proxy does not.
    for (prefix, ep) in [("etcd2", &member), ("proxy2", &proxy)] {
        let next = etcd.v2_index() + 1;
        let m = member.clone();
        let r = record(ep, &watch(next, true), Duration::from_secs(3), move || {
            thread::sleep(Duration::from_millis(300));
            put(&m, "/lain/config/vip", "192.168.77.203");
        });
        save(
            &format!("{prefix}_watch_stream_one_event.http"),
            "stream=true on a quiet store, one put after 300 ms, cut at 3 s",
            &r,
        );
    }
    for (prefix, ep) in [("etcd2", &member), ("proxy2", &proxy)] {
        let next = etcd.v2_index() + 1;
        let m = member.clone();
        let r = record(ep, &watch(next, true), Duration::from_secs(8), move || {
            // one put every 50 ms for 5 s: ~100 events of ~230 bytes
            for i in 0..100 {
                thread::sleep(Duration::from_millis(50));
                put(
                    &m,
                    &format!("/lain/config/stream/k{}", i % 10),
                    &format!("value-{i:04}-{}", "x".repeat(40)),
                );
            }
        });
        save(
            &format!("{prefix}_watch_stream_live.http"),
            "stream=true, one put per 50 ms for 5 s, cut at 8 s",
            &r,
        );
    }

    // 401: an index the store has forgotten (more than 1000 writes later)
    let old = etcd.v2_index();
    etcd.v2_load((0..1005).map(|i| (format!("/lain/config/churn/k{}", i % 50), format!("v{i}"))));
    for (prefix, ep) in [("etcd2", &member), ("proxy2", &proxy)] {
        let r = record(ep, &watch(old, false), short, nothing);
        save(
            &format!("{prefix}_watch_cleared.http"),
            "long-poll from an index cleared by 1005 writes",
            &r,
        );
    }

    // The member killed while a long-poll through the proxy waits; then the member down.
    let next = etcd.v2_index() + 1;
    let pid = etcd.pid().expect("member pid") as libc::pid_t;
    let r = record(&proxy, &watch(next, false), short, move || {
        thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on the member we started; it is reaped by etcd.kill() below.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    save(
        "proxy2_watch_member_killed.http",
        "long-poll waiting when the member is SIGKILLed (300 ms)",
        &r,
    );
    etcd.kill();
    let r = record(&proxy, PROBE, short, nothing);
    save(
        "proxy2_probe_member_down.http",
        "probe right after (member down)",
        &r,
    );
    let r = record(&proxy, &watch(next, false), short, nothing);
    save(
        "proxy2_watch_member_down.http",
        "long-poll, member down",
        &r,
    );
    // after --proxy-failure-wait (5 s) the endpoint is tried again: 502 again
    thread::sleep(Duration::from_millis(5500));
    let r = record(&proxy, PROBE, short, nothing);
    save(
        "proxy2_probe_member_down_later.http",
        "probe 5.5 s later (member still down)",
        &r,
    );
}
