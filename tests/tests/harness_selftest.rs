//! Self-test of the end-to-end harness: real etcd, loopback HTTP servers in std threads serving
//! canned bytes, and a stand-in service binary (`lainlet-harness-fake`) for `Service`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use lainlet_tests::*;
use serde_json::json;

const SEC: Duration = Duration::from_secs(1);
const FAKE: &str = env!("CARGO_BIN_EXE_lainlet-harness-fake");

/// The exact watch head the service writes (spec §3.2).
const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nVary: Accept-Encoding\r\n\r\n";

/// Serves every connection on a fresh loopback port in its own thread: reads the request head,
/// then calls `handler(method, path, stream)`, then closes. Returns the address.
fn serve(handler: fn(&str, &str, &mut TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).unwrap();
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line.trim() != "" {
                    line.clear();
                }
                let mut parts = first.split(' ');
                let (method, path) = (parts.next().unwrap(), parts.next().unwrap());
                handler(method, path, &mut conn);
            });
        }
    });
    addr
}

/// Writes `pieces` with a flush and a short pause between them, so they arrive in separate reads.
fn trickle(conn: &mut TcpStream, pieces: &[&[u8]]) {
    for p in pieces {
        conn.write_all(p).unwrap();
        conn.flush().unwrap();
        thread::sleep(Duration::from_millis(15));
    }
}

fn http_handler(method: &str, path: &str, conn: &mut TcpStream) {
    match path {
        "/len" if method == "HEAD" => trickle(
            conn,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n"],
        ),
        "/len" => trickle(
            conn,
            &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhel",
                b"lo",
            ],
        ),
        "/chunked" => trickle(
            conn,
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhe",
                b"llo\r\n7\r",
                b"\n, world\r\n0\r\nX-Trailer: t\r\n",
                b"\r\n",
            ],
        ),
        "/close" => trickle(conn, &[b"HTTP/1.1 200 OK\r\nX-B: 2\r\n\r\nbye ", b"bye"]),
        "/nocontent" => trickle(conn, &[b"HTTP/1.1 204 No Content\r\n\r\n"]),
        "/peer" => {
            let ip = conn.peer_addr().unwrap().ip().to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{ip}",
                ip.len()
            );
            trickle(conn, &[head.as_bytes()]);
        }
        _ => trickle(
            conn,
            &[b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"],
        ),
    }
}

#[test]
fn wait_until_polls_and_times_out() {
    let start = Instant::now();
    let mut calls = 0;
    assert!(wait_until(SEC, || {
        calls += 1;
        calls == 3
    }));
    assert!(!wait_until(Duration::from_millis(50), || false));
    assert!(start.elapsed() < SEC);
    assert_eq!(wait_for(SEC, || Some(7)), Some(7));
    let (a, b) = (free_port(), free_port());
    assert_ne!(a, b);
}

#[test]
fn http_reads_content_length_chunked_close_and_empty_bodies() {
    let addr = serve(http_handler);
    let c = HttpClient::new().timeout(5 * SEC);

    let r = c.get(&addr, "/len").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(
        r.raw_head,
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n"
    );
    assert_eq!(r.header("x-a"), Some("1"));

    let r = c.get(&addr, "/chunked").unwrap();
    assert_eq!(r.text(), "hello, world");
    assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));

    let r = c.get(&addr, "/close").unwrap();
    assert_eq!(r.text(), "bye bye");
    assert_eq!(r.headers, vec![("X-B".to_owned(), "2".to_owned())]);

    let r = c.head(&addr, "/len").unwrap();
    assert_eq!(
        (r.status, r.body.len(), r.header("content-length")),
        (200, 0, Some("5"))
    );

    let r = c
        .request("DELETE", &addr, "/nocontent", &[("X-C", "3")], b"")
        .unwrap();
    assert_eq!((r.status, r.body.len()), (204, 0));
    assert_eq!(c.get(&addr, "/nope").unwrap().status, 404);
}

#[test]
fn http_client_binds_the_chosen_source_address() {
    let addr = serve(http_handler);
    assert_eq!(
        HttpClient::new().get(&addr, "/peer").unwrap().text(),
        "127.0.0.1"
    );
    let r = HttpClient::from_ip("127.0.0.5")
        .get(&addr, "/peer")
        .unwrap();
    assert_eq!(r.text(), "127.0.0.5");
}

#[test]
fn sse_parser_handles_any_split() {
    let stream = "id: 1\nevent: init\ndata: {\"a\":1}\n\n: comment\n\nid: 0\nevent: heartbeat\n\n\
                  id: 3\r\nevent: update\r\ndata: x\r\ndata: y\r\n\r\nid: oops\nevent: e\ndata\n\n";
    let expected = [
        (1, "init", Some("{\"a\":1}")),
        (0, "heartbeat", None),
        (3, "update", Some("x\ny")),
        (0, "e", Some("")),
    ];
    for step in [1, 2, 7, stream.len()] {
        let mut p = SseParser::new();
        for piece in stream.as_bytes().chunks(step) {
            p.push(piece);
        }
        let frames: Vec<Frame> = std::iter::from_fn(|| p.next_frame()).collect();
        let got: Vec<_> = frames
            .iter()
            .map(|f| (f.id, f.event.as_str(), f.data.as_deref()))
            .collect();
        assert_eq!(got, expected, "split every {step} bytes");
        assert_eq!(frames[0], Frame::new(1, "init", Some("{\"a\":1}")));
        assert_eq!(frames[1], Frame::new(0, "heartbeat", None));
        assert!(frames[1].is_heartbeat());
        assert_eq!(frames[0].json(), json!({"a": 1}));
        assert!(!p.has_partial());
    }
}

/// Frames of a typical watch, cut at awkward places.
const SSE_PIECES: [&str; 5] = [
    "id: 1\nevent: init\ndata: {\"a\":1}\n\nid: 0\nev",
    "ent: heartbeat\n\nid: 3\nevent: upd",
    "ate\ndata: {\"a\":2}\n",
    "\n",
    "id: 4\nevent: delete\ndata: {}\n\n",
];

fn sse_handler(_method: &str, path: &str, conn: &mut TcpStream) {
    match path {
        "/close" => {
            conn.write_all(SSE_HEAD.as_bytes()).unwrap();
            trickle(conn, &SSE_PIECES.map(str::as_bytes));
        }
        "/chunked" => {
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
            let chunks: Vec<Vec<u8>> = SSE_PIECES
                .iter()
                .map(|p| format!("{:x}\r\n{p}\r\n", p.len()).into_bytes())
                .chain([b"0\r\n\r\n".to_vec()])
                .collect();
            // split chunk framing itself across writes too
            let all = chunks.concat();
            let pieces: Vec<&[u8]> = all.chunks(11).collect();
            trickle(conn, &pieces);
            // keep the connection open: the end of the chunked body alone must end the stream
            thread::sleep(3 * SEC);
        }
        "/hold" => {
            conn.write_all(SSE_HEAD.as_bytes()).unwrap();
            trickle(conn, &[b"id: 1\nevent: init\ndata: {}\n\n"]);
            thread::sleep(Duration::from_millis(600));
            trickle(
                conn,
                &[b"id: 0\nevent: heartbeat\n\nid: 2\nevent: update\ndata: {\"b\":1}\n\n"],
            );
            thread::sleep(3 * SEC);
        }
        _ => {}
    }
}

fn expected_watch() -> Vec<Frame> {
    vec![
        Frame::new(1, "init", Some("{\"a\":1}")),
        Frame::new(0, "heartbeat", None),
        Frame::new(3, "update", Some("{\"a\":2}")),
        Frame::new(4, "delete", Some("{}")),
    ]
}

#[test]
fn sse_stream_reads_a_close_delimited_body_until_eof() {
    let addr = serve(sse_handler);
    let mut s = SseStream::open(&addr, "/close").unwrap();
    assert_eq!(s.status(), 200);
    assert_eq!(s.raw_head(), SSE_HEAD);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    let frames = s.frames_until(|f| f.event == "delete", 5 * SEC);
    assert_eq!(frames, expected_watch());
    assert!(s.wait_closed(5 * SEC), "server closed");
    assert!(s.is_closed());
    assert_eq!(s.next_frame(SEC), None);
    assert_eq!(s.body(), SSE_PIECES.concat().as_bytes());
    assert!(s.wire().starts_with(SSE_HEAD.as_bytes()));
}

#[test]
fn sse_stream_decodes_chunked_transfer_encoding() {
    let addr = serve(sse_handler);
    let mut s = HttpClient::new().sse(&addr, "/chunked").unwrap();
    assert_eq!(s.header("transfer-encoding"), Some("chunked"));
    let start = Instant::now();
    let mut frames = Vec::new();
    while let Some(f) = s.next_frame(5 * SEC) {
        frames.push(f);
    }
    assert_eq!(frames, expected_watch());
    assert!(s.is_closed(), "the terminal chunk ends the stream");
    assert!(
        start.elapsed() < 2 * SEC,
        "did not wait for the socket to close"
    );
    assert_eq!(s.body(), SSE_PIECES.concat().as_bytes());
}

#[test]
fn sse_stream_times_out_without_losing_frames() {
    let addr = serve(sse_handler);
    let mut s = SseStream::open(&addr, "/hold").unwrap();
    assert_eq!(s.next_frame(SEC).map(|f| f.event), Some("init".to_owned()));
    assert_eq!(
        s.next_frame(Duration::from_millis(100)),
        None,
        "nothing yet"
    );
    assert!(!s.is_closed());
    let update = s
        .wait_frame(|f| f.event == "update", 5 * SEC)
        .expect("update");
    assert_eq!(update.json(), json!({"b": 1}));
    assert!(s.collect_for(Duration::from_millis(200)).is_empty());
    assert!(!s.wait_closed(Duration::from_millis(100)));
}

#[test]
fn etcd_put_get_delete_compact() {
    let etcd = EtcdServer::new().unwrap();
    assert!(etcd.endpoint().starts_with("127.0.0.1:"));
    let r0 = etcd.current_revision();
    let r1 = etcd.put("/lain/a/x", b"1");
    let r2 = etcd.put("/lain/a/y", "two");
    let r3 = etcd.put("/lain/ab", b"");
    assert_eq!((r1, r2, r3), (r0 + 1, r0 + 2, r0 + 3));
    assert_eq!(etcd.get("/lain/a/x"), Some(b"1".to_vec()));
    assert_eq!(etcd.get("/lain/none"), None);
    assert_eq!(
        etcd.get_prefix("/lain/a/"),
        vec![
            ("/lain/a/x".to_owned(), b"1".to_vec(), r1),
            ("/lain/a/y".to_owned(), b"two".to_vec(), r2)
        ]
    );
    assert_eq!(etcd.get_prefix("").len(), 3);
    assert_eq!(
        etcd.get_prefix("/lain/ab"),
        vec![("/lain/ab".to_owned(), vec![], r3)]
    );

    let r4 = etcd.delete("/lain/a/x");
    assert_eq!(r4, r3 + 1);
    assert_eq!(
        etcd.delete("/lain/a/x"),
        r4,
        "deleting nothing keeps the revision"
    );
    let r5 = etcd.delete_prefix("/lain/");
    assert_eq!(r5, r4 + 1);
    assert!(etcd.get_prefix("/lain/").is_empty());
    assert_eq!(etcd.current_revision(), r5);

    etcd.compact(r4);
    let err = etcd
        .gateway(
            "/v3/kv/range",
            &json!({"key": "L2xhaW4v", "revision": r3.to_string()}),
        )
        .unwrap_err();
    assert!(err.to_string().contains("compacted"), "{err}");
}

#[test]
fn etcd_restart_keeps_data_and_endpoint() {
    let mut etcd = EtcdServer::new().unwrap();
    let endpoint = etcd.endpoint();
    let rev = etcd.put("/lain/config/vip", b"\"192.168.77.201\"");
    etcd.stop();
    assert!(!etcd.is_running());
    assert!(
        HttpClient::new().get(&endpoint, "/health").is_err(),
        "etcd is down"
    );
    etcd.start().unwrap();
    assert_eq!(etcd.endpoint(), endpoint);
    assert_eq!(
        etcd.get_prefix("/lain/config/"),
        vec![(
            "/lain/config/vip".to_owned(),
            b"\"192.168.77.201\"".to_vec(),
            rev
        )]
    );
    etcd.kill();
    etcd.start().unwrap();
    assert_eq!(etcd.current_revision(), rev);
    assert!(etcd.log().contains("harness: etcd start #3"));
}

#[test]
fn etcd_watcher_count_follows_gateway_watches() {
    let etcd = EtcdServer::new().unwrap();
    assert_eq!((etcd.watcher_count(), etcd.watch_stream_count()), (0, 0));
    // A streaming gateway watch: the request body stays open, the answer is chunked JSON.
    let client = HttpClient::new();
    let mut conn = client.connect(&etcd.endpoint()).unwrap();
    let body = json!({"create_request": {"key": "L2xhaW4v", "range_end": "L2xhaW4w"}}).to_string();
    client
        .write_request(
            &mut conn,
            "POST",
            &etcd.endpoint(),
            "/v3/watch",
            &[],
            body.as_bytes(),
        )
        .unwrap();
    assert!(
        wait_until(5 * SEC, || etcd.watcher_count() == 1),
        "one watcher"
    );
    assert_eq!(etcd.watch_stream_count(), 1);
    drop(conn);
    assert!(
        wait_until(5 * SEC, || etcd.watcher_count() == 0),
        "watcher gone"
    );
}

#[test]
fn etcd_load_batches_and_manifest() {
    let etcd = EtcdServer::new().unwrap();
    let items: Vec<(String, String)> = (0..300)
        .map(|i| (format!("/lain/load/{i:03}"), format!("v{i}")))
        .collect();
    let before = etcd.current_revision();
    let rev = etcd.load(
        items
            .iter()
            .map(|(k, v)| (k, v))
            .chain([(&items[299].0, &"again".to_owned())]),
    );
    assert_eq!(
        rev,
        before + 4,
        "128 + 128 + 44, then a new batch for the repeated key"
    );
    let got = etcd.get_prefix("/lain/load/");
    assert_eq!(got.len(), 300);
    assert_eq!(
        got[256],
        ("/lain/load/256".to_owned(), b"v256".to_vec(), before + 3)
    );
    assert_eq!(
        got[299],
        ("/lain/load/299".to_owned(), b"again".to_vec(), before + 4)
    );

    let dir = TempDir::new("manifest").unwrap();
    std::fs::write(
        dir.path().join("MANIFEST.tsv"),
        "# etcd key\tfile\n/lain/config/vip\tvip\n/lain/config/domain\tdomain\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("vip"), " \"10.0.0.1\"").unwrap();
    std::fs::write(dir.path().join("domain"), "lain.local").unwrap();
    etcd.load_manifest(dir.path());
    assert_eq!(
        etcd.get("/lain/config/vip"),
        Some(b" \"10.0.0.1\"".to_vec())
    );
    assert_eq!(etcd.get_prefix("/lain/config/").len(), 2);
}

#[test]
fn etcd_pause_and_resume() {
    let etcd = EtcdServer::new().unwrap();
    etcd.pause();
    let quick = HttpClient::new().timeout(Duration::from_millis(300));
    assert!(
        quick.get(&etcd.endpoint(), "/health").is_err(),
        "a paused etcd answers nothing"
    );
    etcd.resume();
    assert!(wait_until(5 * SEC, || quick
        .get(&etcd.endpoint(), "/health")
        .is_ok_and(|r| r.status == 200)));
}

#[test]
fn service_launch_args_log_and_source_ip() {
    let addr = free_addr();
    let args = vec![
        format!("-web={addr}"),
        "-etcd=127.0.0.1:1".to_owned(),
        "-ip".to_owned(),
        "127.0.0.2".to_owned(),
    ];
    let mut svc = Service::command(ServiceKind::Tokio)
        .bin(FAKE)
        .args(args.clone())
        .start()
        .unwrap();
    assert_eq!(svc.addr(), addr);
    assert_eq!(svc.get("/args").json(), json!(args));
    assert_eq!(svc.get_from("127.0.0.7", "/peer").text(), "127.0.0.7");
    assert_eq!(svc.get("/nope").status, 404);
    assert!(
        svc.log().contains("fake service listening on"),
        "{}",
        svc.log()
    );
    assert!(
        svc.log().contains("fake service args"),
        "stderr is captured too"
    );

    svc.restart().unwrap();
    assert_eq!(svc.get("/healthz").status, 200);
    assert!(svc.log().contains("harness: start #2"));

    svc.signal(libc::SIGTERM).unwrap();
    assert!(svc.wait_exit(5 * SEC).is_some());
    assert!(!svc.is_running());
}

#[test]
fn service_waits_for_readiness_and_reports_failures() {
    let started = Instant::now();
    let svc = Service::command(ServiceKind::Smol)
        .bin(FAKE)
        .web_auto()
        .args(["--ready-after-ms", "400"])
        .start()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    let pid = svc.pid().unwrap();
    drop(svc);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "killed and reaped on drop"
    );

    let err = Service::command(ServiceKind::Tokio)
        .bin(FAKE)
        .web_auto()
        .args(["--exit", "3"])
        .start()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("exited") && msg.contains("exiting with 3"),
        "{msg}"
    );

    let mut svc = Service::command(ServiceKind::Tokio)
        .bin(FAKE)
        .args(["--exit", "1"])
        .spawn()
        .unwrap();
    assert_eq!(svc.wait_exit(5 * SEC).and_then(|s| s.code()), Some(1));

    let err = Service::command(ServiceKind::Tokio)
        .bin(FAKE)
        .web_auto()
        .args(["--ready-after-ms", "60000"])
        .ready_timeout(Duration::from_millis(300))
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("/healthz"), "{err}");
}

#[test]
fn service_kinds_are_named_and_located() {
    assert_eq!(ServiceKind::from_name("lainlet"), Some(ServiceKind::Tokio));
    assert_eq!(
        ServiceKind::from_name("lainlet-smol"),
        Some(ServiceKind::Smol)
    );
    assert_eq!(ServiceKind::Smol.bin_env(), "LAINLET_TEST_BIN_SMOL");
    assert!(workspace_root().join("Cargo.toml").is_file());
    for kind in ServiceKind::ALL {
        match kind.binary() {
            Ok(path) => assert!(path.ends_with(kind.bin_name())),
            Err(e) => assert!(
                e.to_string()
                    .contains(&format!("cargo build -p {}", kind.package())),
                "{e}"
            ),
        }
    }
}

// Expands the per-binary macro (compile check); ignored because it needs the real binaries.
conformance_test!(
    #[ignore = "needs the service binaries; shows the conformance pattern"]
    fn conformance_pattern(kind) {
        let etcd = EtcdServer::new().unwrap();
        let svc = Service::command(kind).web_auto().etcd(&etcd).start().unwrap();
        assert_eq!(svc.get("/healthz").status, 200);
    }
);

// ---------------------------------------------------------------------------------------------
// etcd v2 keys store, one writer for both stores, the store conformance macro
// ---------------------------------------------------------------------------------------------

#[test]
fn etcd_v2_put_get_delete_and_directories() {
    let etcd = EtcdServer::new().unwrap();
    let i0 = etcd.v2_index();
    let i1 = etcd.v2_put("/lain/a/x", b"1");
    let i2 = etcd.v2_put("/lain/a/y", "two");
    let i3 = etcd.v2_put("/lain/ab", "");
    assert_eq!(
        (i1, i2, i3),
        (i0 + 1, i0 + 2, i0 + 3),
        "one index per write"
    );
    assert_eq!(etcd.v2_index(), i3);
    assert_eq!(etcd.v2_get("/lain/a/x"), Some(b"1".to_vec()));
    assert_eq!(etcd.v2_get("/lain/a"), None, "a directory has no value");
    assert_eq!(etcd.v2_get("/lain/none"), None);
    assert_eq!(
        etcd.v2_get_prefix("/lain/a/"),
        vec![
            ("/lain/a/x".to_owned(), b"1".to_vec(), i1),
            ("/lain/a/y".to_owned(), b"two".to_vec(), i2)
        ]
    );
    assert_eq!(
        etcd.v2_get_prefix("/lain/a").len(),
        3,
        "a string prefix, as in v3"
    );
    assert_eq!(etcd.v2_get_prefix("").len(), 3);
    assert!(etcd.v2_get_prefix("/nothing/here/").is_empty());

    // the v2 and v3 stores are separate
    assert_eq!(etcd.get("/lain/a/x"), None);
    etcd.put("/lain/v3only", "3");
    assert_eq!(etcd.v2_get_prefix("/lain/").len(), 3);
    assert_eq!(etcd.get_prefix("/lain/").len(), 1);

    // values and keys are form- and path-encoded: what goes in comes out
    let odd_key = "/lain/config/naïve key?#%";
    let odd_value = "é ü & = + % \"quoted\"\n{\"a\":1}";
    etcd.v2_put(odd_key, odd_value);
    assert_eq!(etcd.v2_get(odd_key), Some(odd_value.as_bytes().to_vec()));
    assert_eq!(etcd.v2_get_prefix("/lain/config/")[0].0, odd_key);

    // v2 values are strings: other bytes are refused with a clear message
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        etcd.v2_put("/lain/bin", [0xff, 0xfe])
    }))
    .unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("not UTF-8"), "{msg}");

    // deletes: a missing key leaves the index as it is
    let i4 = etcd.v2_delete("/lain/a/x");
    assert_eq!(i4, etcd.v2_index());
    assert_eq!(etcd.v2_delete("/lain/a/x"), i4, "deleting nothing");

    // directories: mkdir creates no leaf; an empty one goes with dir=true; a full one only
    // recursively, in one event
    let i5 = etcd.v2_mkdir("/lain/empty");
    assert_eq!(i5, i4 + 1);
    assert!(etcd.v2_get_prefix("/lain/empty").is_empty());
    assert_eq!(etcd.v2_delete_dir("/lain/empty", false), i5 + 1);
    let r = etcd
        .v2_request("DELETE", "/v2/keys/lain/a?dir=true", b"")
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["errorCode"], 108, "Directory not empty");
    etcd.v2_put("/lain/a/z/deep", "d");
    let before = etcd.v2_index();
    let i6 = etcd.v2_delete_dir("/lain/a", true);
    assert_eq!(i6, before + 1, "a recursive delete is one event");
    assert!(etcd.v2_get_prefix("/lain/a/").is_empty());
    let event = etcd
        .v2_request(
            "GET",
            &format!("/v2/keys/lain?wait=true&recursive=true&waitIndex={i6}"),
            b"",
        )
        .unwrap()
        .json();
    assert_eq!(
        (
            &event["action"],
            &event["node"]["key"],
            &event["node"]["dir"]
        ),
        (&json!("delete"), &json!("/lain/a"), &json!(true)),
        "{event}"
    );

    // a TTL runs out by itself (an `expire` event)
    let it = etcd.v2_put_ttl("/lain/ttl", "x", 1);
    assert!(
        wait_until(10 * SEC, || etcd.v2_get("/lain/ttl").is_none()),
        "TTL expired"
    );
    let event = etcd
        .v2_request(
            "GET",
            &format!("/v2/keys/lain/ttl?wait=true&waitIndex={}", it + 1),
            b"",
        )
        .unwrap()
        .json();
    assert_eq!(event["action"], "expire", "{event}");
}

#[test]
fn etcd_v2_load_and_delete_prefix() {
    let etcd = EtcdServer::new().unwrap();
    let items: Vec<(String, String)> = (0..300)
        .map(|i| (format!("/lain/load/{}/{i:03}", i % 3), format!("v{i}")))
        .collect();
    let start = Instant::now();
    let index = etcd.v2_load(
        items
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([(items[299].0.as_str(), "again")]),
    );
    eprintln!("v2_load of 301 puts took {:?}", start.elapsed());
    assert_eq!(index, etcd.v2_index());
    let got = etcd.v2_get_prefix("/lain/load/");
    assert_eq!(got.len(), 300);
    let last = got.iter().find(|kv| kv.0 == items[299].0).unwrap();
    assert_eq!(last.1, b"again", "a repeated key's last value wins");
    let keys: Vec<&String> = got.iter().map(|kv| &kv.0).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted by key");

    // a directory prefix goes in one event; a plain string prefix key by key
    etcd.v2_put("/lain/loader", "not under /lain/load/");
    let before = etcd.v2_index();
    assert_eq!(etcd.v2_delete_prefix("/lain/load/0/"), before + 1);
    assert_eq!(etcd.v2_get_prefix("/lain/load/").len(), 200);
    let before = etcd.v2_index();
    assert_eq!(
        etcd.v2_delete_prefix("/lain/load"),
        before + 2,
        "the directory /lain/load, and /lain/loader"
    );
    assert!(etcd.v2_get_prefix("/lain/").is_empty());
    etcd.v2_load([("/x/1", "1"), ("/y", "2")]);
    etcd.v2_delete_prefix("");
    assert!(etcd.v2_get_prefix("").is_empty(), "everything");
}

#[test]
fn store_writer_runs_one_body_against_either_store() {
    assert_eq!(Store::from_name("V2"), Some(Store::V2));
    assert_eq!(Store::from_name("v3"), Some(Store::V3));
    assert_eq!(Store::from_name("v4"), None);
    assert_eq!(Store::V2.to_string(), "v2");
    if std::env::var_os(STORES_ENV).is_none() {
        assert_eq!(Store::selected(), vec![Store::V3, Store::V2]);
    }
    let mut ran = Vec::new();
    for store in Store::ALL {
        run_for_store(store, |s| ran.push(s));
    }
    assert_eq!(ran, Store::selected());

    let etcd = EtcdServer::new().unwrap();
    for store in Store::ALL {
        let other = if store == Store::V2 {
            Store::V3
        } else {
            Store::V2
        };
        let w = etcd.with_store(store);
        assert_eq!(w.store(), store);
        let r0 = w.current_revision();
        let r1 = w.put("/lain/config/vip", "\"192.168.77.201\"");
        assert!(r1 > r0, "{store}");
        assert_eq!(w.current_revision(), r1, "{store}");
        assert_eq!(
            w.get("/lain/config/vip"),
            Some(b"\"192.168.77.201\"".to_vec())
        );
        let r2 = w.load([
            ("/lain/deployd/pod_groups/hello/hello.web.web", "{}"),
            (
                "/lain/deployd/pod_groups/hello-service/hello-service.proc",
                "{}",
            ),
            ("/lain/deployd/pod_groups/hello/hello.worker.w", "{}"),
        ]);
        assert_eq!(w.current_revision(), r2, "{store}");
        let pods = w.get_prefix("/lain/deployd/pod_groups/hello/");
        assert_eq!(
            pods.iter().map(|kv| kv.0.as_str()).collect::<Vec<_>>(),
            [
                "/lain/deployd/pod_groups/hello/hello.web.web",
                "/lain/deployd/pod_groups/hello/hello.worker.w"
            ],
            "{store}"
        );
        assert!(
            pods.iter().all(|kv| kv.2 > r1 && kv.2 <= r2),
            "{store}: {pods:?}"
        );
        assert!(
            etcd.with_store(other).get_prefix("/lain/").is_empty(),
            "{store} writes are invisible to {other}"
        );
        // the exact-delete rule: `hello/` never takes `hello-service/`
        w.delete_prefix("/lain/deployd/pod_groups/hello/");
        assert_eq!(w.get_prefix("/lain/deployd/").len(), 1, "{store}");
        let r3 = w.delete("/lain/config/vip");
        assert_eq!(
            w.delete("/lain/config/vip"),
            r3,
            "{store}: deleting nothing"
        );
        assert_eq!(w.get("/lain/config/vip"), None);
        w.delete_prefix("/lain/");
        assert!(w.get_prefix("").is_empty(), "{store}");
    }
}

// Expands the per-binary-and-store macro (compile check); ignored because it needs the real
// binaries. Generates `lainlet_v3`, `lainlet_v2`, `lainlet_smol_v3`, `lainlet_smol_v2`.
store_conformance_test!(
    #[ignore = "needs the service binaries; shows the store conformance pattern"]
    fn store_conformance_pattern(kind, store) {
        let etcd = EtcdServer::new().unwrap();
        etcd.with_store(store).put("/lain/config/vip", "\"192.168.77.201\"");
        let svc = Service::command(kind).web_auto().etcd(&etcd).start().unwrap();
        assert_eq!(svc.get("/healthz").status, 200);
    }
);

// ---------------------------------------------------------------------------------------------
// a 3-member etcd cluster
// ---------------------------------------------------------------------------------------------

#[test]
fn etcd_cluster_loses_and_regains_quorum() {
    let started = Instant::now();
    let mut cluster = EtcdCluster::new(3).unwrap();
    eprintln!("3-member cluster up in {:?}", started.elapsed());
    assert_eq!(cluster.len(), 3);
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.split(',').count(), 3);
    assert!(endpoints.split(',').all(|e| e.starts_with("127.0.0.1:")));
    assert!(cluster.leader().is_some());
    let cmd = Service::command(ServiceKind::Tokio).etcd_cluster(&cluster);
    assert!(format!("{cmd:?}").contains(&endpoints), "--etcd a,b,c");

    let rev = cluster.put("/lain/config/vip", "\"192.168.77.201\"");
    let index = cluster.v2_put("/lain/config/vip", "192.168.77.201");
    assert_eq!(cluster.current_revision(), rev);
    assert_eq!(cluster.with_store(Store::V2).current_revision(), index);

    // kill the leader and one follower: the survivor is a lone follower
    let leader = cluster.leader().expect("a leader");
    let survivor = (0..3).find(|&i| i != leader).unwrap();
    for i in (0..3).filter(|&i| i != survivor) {
        cluster.member(i).kill();
    }
    assert!(!cluster.member(leader).is_running());
    let t = Instant::now();
    assert!(
        wait_until(10 * SEC, || !cluster.has_leader()),
        "no healthy member without quorum"
    );
    eprintln!("quorum lost: /health false after {:?}", t.elapsed());

    // a linearizable range cannot complete; etcd answers with an error after its request timeout
    let t = Instant::now();
    let err = cluster
        .gateway("/v3/kv/range", &json!({"key": "L2xhaW4vY29uZmlnL3ZpcA=="}))
        .unwrap_err();
    let linearizable = t.elapsed();
    eprintln!("linearizable range without quorum: {err} after {linearizable:?}");
    assert!(
        linearizable < 10 * SEC,
        "answered before the client timeout"
    );
    let msg = err.to_string();
    assert!(
        ["request timed out", "leader changed", "deadline exceeded"]
            .iter()
            .any(|m| msg.contains(m)),
        "{msg}"
    );
    // a serializable range answers from the survivor's local copy at once
    let t = Instant::now();
    let local = cluster
        .gateway(
            "/v3/kv/range",
            &json!({"key": "L2xhaW4vY29uZmlnL3ZpcA==", "serializable": true}),
        )
        .unwrap();
    eprintln!(
        "serializable range without quorum: ok after {:?}",
        t.elapsed()
    );
    assert_eq!(local["kvs"][0]["value"], "IjE5Mi4xNjguNzcuMjAxIg==");
    let r = cluster
        .v2_request("GET", "/v2/keys/lain/config/vip", b"")
        .unwrap();
    assert_eq!(r.json()["node"]["value"], "192.168.77.201", "v2 local read");

    // bring both back: quorum returns and nothing was lost
    let t = Instant::now();
    for i in (0..3).filter(|&i| i != survivor) {
        cluster.member(i).start().unwrap();
    }
    assert!(cluster.wait_leader(20 * SEC), "a leader again");
    eprintln!("quorum back {:?} after the restarts", t.elapsed());
    assert_eq!(
        cluster.get("/lain/config/vip"),
        Some(b"\"192.168.77.201\"".to_vec())
    );
    assert_eq!(
        cluster.v2_get("/lain/config/vip"),
        Some(b"192.168.77.201".to_vec())
    );
    assert_eq!(cluster.put("/lain/config/after", "1"), rev + 1);

    // pause/resume a follower: requests go to the live members meanwhile (pausing the leader
    // would start an election, and requests during it fail with "etcdserver: leader changed")
    let leader = cluster.leader().expect("a leader");
    let follower = (0..3).find(|&i| i != leader).unwrap();
    cluster.member(follower).pause();
    assert!(cluster.member(follower).is_paused());
    assert_eq!(cluster.get("/lain/config/after"), Some(b"1".to_vec()));
    cluster.member(follower).resume();

    let dirs: Vec<_> = cluster
        .members()
        .iter()
        .map(|m| m.dir().to_owned())
        .collect();
    let pids: Vec<_> = cluster
        .members()
        .iter()
        .filter_map(EtcdMember::pid)
        .collect();
    drop(cluster);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "reaped"
        );
    }
    if std::env::var_os("LAINLET_TEST_KEEP").is_none() {
        assert!(dirs.iter().all(|d| !d.exists()), "directories removed");
    }
    eprintln!("cluster self-test took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Python clients: the runner, webrouter's sseclient, headless Chromium
// ---------------------------------------------------------------------------------------------

/// A request head as read by [`serve_requests`].
struct Request {
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Like [`serve`], but hands the handler the request's path and headers.
fn serve_requests(handler: fn(&Request, &mut TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).unwrap_or(0) == 0 {
                    return;
                }
                let mut headers = Vec::new();
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line.trim() != "" {
                    if let Some((n, v)) = line.split_once(':') {
                        headers.push((n.trim().to_owned(), v.trim().to_owned()));
                    }
                    line.clear();
                }
                let path = first.split(' ').nth(1).unwrap_or("/").to_owned();
                handler(&Request { path, headers }, &mut conn);
            });
        }
    });
    addr
}

/// Keeps a streaming response open until the client goes away (or 20 s pass).
fn hold_until_client_closes(conn: &mut TcpStream) {
    use std::io::Read;
    conn.set_read_timeout(Some(20 * SEC)).unwrap();
    let mut buf = [0u8; 512];
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

const SSE_HEAD_PLAIN: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";

fn sseclient_handler(req: &Request, conn: &mut TcpStream) {
    match (req.path.as_str(), req.header("last-event-id")) {
        ("/sse", None) => {
            conn.write_all(SSE_HEAD_PLAIN.as_bytes()).unwrap();
            trickle(
                conn,
                &[
                    b"retry: 50\nid: 1\nevent: init\ndata: {\"n\":1}\n\n",
                    b"id: 2\nevent: update\ndata: {\"n\":2}\ndata: more\n\n",
                    b"id: 0\nevent: heartbeat\n\n",
                    // cut mid-event: sseclient keeps the complete `id: 9` line
                    b"id: 9\nevent: cut-he",
                ],
            );
        }
        ("/sse", Some(last)) => {
            conn.write_all(SSE_HEAD_PLAIN.as_bytes()).unwrap();
            let frame = format!("event: update\ndata: reconnect last-event-id={last} é\n\n");
            trickle(conn, &[frame.as_bytes()]);
            hold_until_client_closes(conn);
        }
        ("/silent", _) => {
            conn.write_all(SSE_HEAD_PLAIN.as_bytes()).unwrap();
            hold_until_client_closes(conn);
        }
        _ => trickle(
            conn,
            &[b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"],
        ),
    }
}

/// The JSON lines `sse_client_check.py` printed.
fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

#[test]
fn python_runner_finds_the_venv_and_kills_on_timeout() {
    let py = python().unwrap_or_else(|e| panic!("{e}"));
    assert!(py.starts_with(venv_dir()), "{}", py.display());
    assert!(python_dir().join("requirements.txt").is_file());
    let err = run_python("no_such_script.py", &[], &[], SEC).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);

    let out = run_python("sse_client_check.py", &["--help"], &[], 20 * SEC).unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--last-event-id"));

    // a stream that never sends an event: killed at the timeout
    let addr = serve_requests(sseclient_handler);
    let url = format!("http://{addr}/silent");
    let t = Instant::now();
    let err = run_python("sse_client_check.py", &[&url, "1"], &[], 3 * SEC).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(t.elapsed() < 8 * SEC);

    // a running script's output can be followed; drop kills it
    let proc = spawn_python("sse_client_check.py", &[&url, "1"], &[]).unwrap();
    assert!(
        proc.wait_stdout(20 * SEC, |_| proc.stderr_text().contains("connect #1")),
        "connected: {}",
        proc.stderr_text()
    );
    let pid = proc.pid().unwrap();
    drop(proc);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "reaped"
    );
}

#[test]
fn sseclient_reconnects_with_last_event_id() {
    let addr = serve_requests(sseclient_handler);
    let url = format!("http://{addr}/sse");
    let t = Instant::now();
    let out = run_python("sse_client_check.py", &[&url, "4"], &[], 30 * SEC).unwrap();
    eprintln!("sseclient run: {:?}", t.elapsed());
    assert!(out.status.success());
    let events = json_lines(&out.stdout);
    assert_eq!(
        events,
        vec![
            json!({"id": "1", "event": "init", "data": "{\"n\":1}"}),
            json!({"id": "2", "event": "update", "data": "{\"n\":2}\nmore"}),
            // heartbeats are yielded too, and their `id: 0` replaces the last id
            json!({"id": "0", "event": "heartbeat", "data": ""}),
            // reconnected after `retry: 50` ms with `Last-Event-ID: 0`; the complete `id: 9`
            // line of the cut event is glued onto the new connection's first event; UTF-8 data
            // is decoded as ISO-8859-1 (no charset in the Content-Type)
            json!({"id": "9", "event": "update", "data": "reconnect last-event-id=0 Ã©"}),
        ]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connect #1 Last-Event-ID=None"), "{stderr}");
    assert!(stderr.contains("connect #2 Last-Event-ID=0"), "{stderr}");

    // an initial last id is sent on the first request already
    let out = run_python(
        "sse_client_check.py",
        &[&url, "1", "--last-event-id", "7"],
        &[],
        30 * SEC,
    )
    .unwrap();
    assert!(out.status.success());
    assert_eq!(
        json_lines(&out.stdout),
        vec![json!({"id": null, "event": "update", "data": "reconnect last-event-id=7 Ã©"})]
    );
}

fn browser_handler(req: &Request, conn: &mut TcpStream) {
    const PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>waiting</title>\
        </head><body><h1 id=\"s\">waiting for an event</h1><script>\
        const es = new EventSource('/events');\
        es.addEventListener('init', e => {\
          const v = JSON.parse(e.data);\
          document.getElementById('s').textContent = 'EventSource got ' + v.hello + ' (id ' + e.lastEventId + ')';\
          document.title = 'got ' + v.hello;\
          es.close();\
        });\
        </script></body></html>";
    match req.path.as_str() {
        "/" => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                PAGE.len()
            );
            trickle(conn, &[head.as_bytes(), PAGE.as_bytes()]);
        }
        "/events" => {
            conn.write_all(SSE_HEAD.as_bytes()).unwrap();
            trickle(
                conn,
                &[b"id: 1\nevent: init\ndata: {\"hello\":\"world\"}\n\n"],
            );
            hold_until_client_closes(conn);
        }
        _ => trickle(
            conn,
            &[b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"],
        ),
    }
}

#[test]
fn headless_chromium_sees_an_eventsource_event() {
    let addr = serve_requests(browser_handler);
    let dir = TempDir::new("browser").unwrap();
    let png = dir.path().join("eventsource.png");
    let t = Instant::now();
    let out = run_python(
        "browser_title_check.py",
        &[
            &format!("http://{addr}/"),
            "got world",
            png.to_str().unwrap(),
        ],
        &[],
        60 * SEC,
    )
    .unwrap();
    eprintln!("headless Chromium run: {:?}", t.elapsed());
    assert!(out.status.success(), "browser_title_check.py failed");
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
}
