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
