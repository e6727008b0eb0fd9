//! End to end, plain HTTP: a real etcd holding the original's fixture set — in its v3 store and
//! in its v2 keys store, each test once per store and binary (`store_conformance_test!`) — the
//! real service binary, and every recorded request of `fixtures/data/golden/INDEX.tsv` answered
//! with the original's status, content type and body; plus the service's own endpoints, HEAD,
//! the 404 texts, the exact watch head, the command line (the original's, unchanged, detecting
//! the store) and the connection limit.

mod common;

use std::io::{BufReader, Read, Write};

use common::*;
use lainlet_tests::*;
use serde_json::Value;

struct Golden {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

fn read_golden(file: &str) -> Golden {
    let text = std::fs::read_to_string(golden_dir().join(file)).unwrap();
    let (head, body) = text.split_once("\n\n").unwrap();
    Golden {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        content_type: head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: "))
            .map(str::to_owned),
        body: body.strip_suffix('\n').unwrap_or(body).as_bytes().to_vec(),
    }
}

/// Arrays whose order was random in the original are sorted before comparing.
fn normalise(path: &str, mut v: Value) -> Value {
    let random = path.starts_with("/v2/procwatcher") || path.starts_with("/v2/localspecquery");
    if let (true, Value::Array(items)) = (random, &mut v) {
        items.sort_by_key(|i| i.to_string());
    }
    v
}

store_conformance_test!(fn every_golden_request_gets_the_originals_answer(kind, store) {
    let etcd = etcd_with_original_in(store);
    let svc = start_in(kind, &etcd, store);
    let index = std::fs::read_to_string(golden_dir().join("INDEX.tsv")).unwrap();
    let mut checked = 0;
    for line in index.lines() {
        let mut cols = line.split('\t');
        let (file, path) = (cols.next().unwrap(), cols.next().unwrap());
        if path.contains("watch=1") {
            continue; // checked byte for byte below
        }
        let golden = read_golden(file);
        let ours = svc.get(path);
        assert_eq!(ours.status, golden.status, "{file} {path}: status");
        assert_eq!(
            ours.header("content-type").map(str::to_owned),
            golden.content_type,
            "{file} {path}: content type"
        );
        assert_eq!(
            ours.header("content-length"),
            Some(ours.body.len().to_string().as_str()),
            "{file} {path}: content length"
        );
        match (golden.status, serde_json::from_slice::<Value>(&golden.body)) {
            (200, Ok(expected)) => assert_eq!(
                normalise(path, ours.json()),
                normalise(path, expected),
                "{file} {path}: body"
            ),
            _ => assert_eq!(ours.text(), String::from_utf8_lossy(&golden.body), "{file} {path}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 37, "every GET golden was compared");

    // The refused watch, byte for byte (head, frame, close).
    let golden = std::fs::read(golden_dir().join("get_38.txt")).unwrap();
    let mut watch = svc.watch("/v2/localspecquery?watch=1");
    assert!(watch.wait_closed(5 * SEC), "the refused watch is closed");
    assert_eq!(
        String::from_utf8_lossy(watch.wire()),
        String::from_utf8_lossy(&golden)
    );
});

store_conformance_test!(fn own_endpoints_head_and_not_found(kind, store) {
    let etcd = etcd_with_original_in(store);
    let svc = start_in(kind, &etcd, store);
    let revision = etcd.with_store(store).current_revision();
    wait_revision(&svc, revision);

    // `ok` once the watch is established, just after the snapshot is served.
    assert!(wait_until(10 * SEC, || svc.get("/healthz").json()["status"] == "ok"));
    let health = svc.get("/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["etcd"], "watching");
    assert_eq!(health.json()["revision"], revision);
    assert_eq!(health.json()["store"], store.name());
    let other = if store == Store::V2 { "v3" } else { "v2" };
    assert_eq!(metric(&svc, &format!("lainlet_etcd_store{{store=\"{store}\"}}")), Some(1.0));
    assert_eq!(metric(&svc, &format!("lainlet_etcd_store{{store=\"{other}\"}}")), Some(0.0));

    assert_eq!(metric(&svc, "lainlet_ready"), Some(1.0));
    assert_eq!(metric(&svc, "lainlet_etcd_watch_state{state=\"watching\"}"), Some(1.0));
    assert_eq!(metric(&svc, "lainlet_applied_revision"), Some(revision as f64));
    assert_eq!(metric(&svc, "lainlet_undecodable_keys"), Some(0.0));
    assert_eq!(metric(&svc, "lainlet_cache_keys{family=\"podgroup\"}"), Some(4.0));
    let metrics = svc.get("/metrics");
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));

    let debug = svc.get("/debug").json();
    assert!(debug["connections"].as_u64().unwrap() >= 1, "{debug}");
    assert_eq!(debug["etcd"]["state"], "watching", "{debug}");
    assert_eq!(debug["etcd"]["applied_revision"], revision, "{debug}");
    assert_eq!(debug["etcd"]["store"], store.name(), "{debug}");
    assert_eq!(debug["etcd"]["api"], store.name(), "--etcd-api: {debug}");
    for family in ["config", "container", "depends", "nodes", "podgroup"] {
        assert!(debug["watchers"][family]["TotalKeys"].as_u64().unwrap() > 0, "{family}");
    }
    // connections counts open HTTP connections: hold two watches open and look again.
    let _w1 = svc.watch("/v2/nodes?watch=1");
    let _w2 = svc.watch("/v2/appswatcher?watch=1");
    let mut debug = Value::Null;
    let three = wait_until(5 * SEC, || {
        debug = svc.get("/debug").json();
        debug["connections"] == 3
    });
    assert!(three, "two watches and this request: {debug}");
    assert_eq!(debug["watchers"]["nodes"]["NumReceivers"], 1, "{debug}");

    assert_eq!(svc.get("/version").text(), "2.4.3+git");

    // HEAD: same status and headers as GET, Content-Length included, no body.
    let client = HttpClient::new();
    for path in ["/v2/nodes", "/version", "/v2/procwatcher", "/v2/nothing"] {
        let get = svc.get(path);
        let head = client.head(svc.addr(), path).unwrap();
        assert_eq!(head.status, get.status, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path}");
        assert_eq!(head.header("content-length"), get.header("content-length"), "HEAD {path}");
        assert_eq!(head.header("content-type"), get.header("content-type"), "HEAD {path}");
    }

    // 404 texts: unknown path vs known path with another method.
    let unknown = svc.get("/v2/apps");
    assert_eq!((unknown.status, unknown.text().as_str()), (404, "404 not found"));
    let post = client.request("POST", svc.addr(), "/v2/nodes", &[], b"x=1").unwrap();
    assert_eq!((post.status, post.text().as_str()), (404, "404 page not found\n"));
    assert_eq!(post.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(post.header("content-type"), Some("text/plain; charset=utf-8"));
    let delete = client.request("DELETE", svc.addr(), "/v2/nodes/", &[], b"").unwrap();
    assert_eq!(delete.status, 404);
});

store_conformance_test!(fn a_watch_gets_the_exact_head_even_after_keep_alive_requests(kind, store) {
    let etcd = etcd_with_original_in(store);
    let svc = start_in(kind, &etcd, store);
    let mut fresh = svc.watch("/v2/configwatcher?target=vip&watch=1");
    assert_eq!(fresh.raw_head(), SSE_HEAD);
    let init = fresh.next_frame(5 * SEC).expect("init");
    assert_eq!(init, Frame::new(1, "init", Some(r#"{"vip":"192.168.77.201"}"#)));

    // Two GETs, then a watch, on one keep-alive connection.
    let client = HttpClient::new().header("Connection", "keep-alive");
    let mut conn = client.connect(svc.addr()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for path in ["/version", "/v2/configwatcher?target=domain"] {
        client.write_request(&mut conn, "GET", svc.addr(), path, &[], b"").unwrap();
        let r = read_response(&mut reader, false).unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("date").is_some(), "plain responses carry a Date");
    }
    client
        .write_request(&mut conn, "GET", svc.addr(), "/v2/configwatcher?target=vip&watch=1", &[], b"")
        .unwrap();
    drop(reader);
    let mut watch = SseStream::from_stream(conn, 5 * SEC).unwrap();
    assert_eq!(watch.raw_head(), SSE_HEAD);
    assert_eq!(watch.next_frame(5 * SEC), Some(init.clone()));

    // HTTP/1.0, and a GET and a watch pipelined in one write: the same head. (The order of
    // the plain response's header fields is the HTTP library's; what it says is checked.)
    for (request, get_first) in [
        ("GET /v2/configwatcher?target=vip&watch=1 HTTP/1.0\r\n\r\n", false),
        (
            "GET /version HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /v2/configwatcher?target=vip&watch=true HTTP/1.1\r\nHost: x\r\n\r\n",
            true,
        ),
    ] {
        let mut conn = HttpClient::new().connect(svc.addr()).unwrap();
        conn.write_all(request.as_bytes()).unwrap();
        let mut wire = Vec::new();
        let complete = |w: &[u8]| String::from_utf8_lossy(w).ends_with(&init.raw);
        while !complete(&wire) {
            let mut buf = [0u8; 4096];
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => wire.extend_from_slice(&buf[..n]),
            }
        }
        let mut rest = std::io::Cursor::new(wire);
        if get_first {
            let version = read_response(&mut rest, false).expect("the /version response");
            assert_eq!(version.status, 200);
            assert_eq!(version.header("content-type"), Some("text/plain; charset=utf-8"));
            assert_eq!(version.header("content-length"), Some("9"));
            assert_eq!(version.text(), "2.4.3+git");
        }
        let at = rest.position() as usize;
        let sse = String::from_utf8_lossy(&rest.get_ref()[at..]).into_owned();
        assert_eq!(sse, format!("{SSE_HEAD}{}", init.raw), "{request:?}");
    }
});

// No --etcd-api: the original's command line finds the data in whichever store holds it.
store_conformance_test!(fn the_original_command_line_starts_it(kind, store) {
    let etcd = etcd_with_original_in(store);
    let port = free_port();
    // The playbook's -grpc.addr too where it is served (lainlet-smol refuses it, see
    // e2e_grpc_startup.rs).
    let grpc = (kind == ServiceKind::Tokio).then(|| "-grpc.addr=:0".to_owned());
    let mut svc = Service::command(kind)
        .args([
            format!("-web=127.0.0.1:{port}"),
            "-etcd".into(),
            etcd.endpoint(),
            format!("-ip={NODE_IP}"),
            "-debug".into(),
            "--hostname".into(),
            HOSTNAME.into(),
        ])
        .args(grpc.clone())
        .start()
        .unwrap();
    assert_eq!(svc.get("/v2/rebellion/localprocs?appname=hello").status, 200);
    let golden = read_golden("get_12.txt"); // /v2/localspecquery: the default node is -ip
    assert_eq!(
        normalise("/v2/localspecquery", svc.get("/v2/localspecquery").json()),
        normalise("/v2/localspecquery", serde_json::from_slice(&golden.body).unwrap())
    );
    if grpc.is_some() {
        assert!(svc.log().contains("gRPC listening on "), "serves -grpc.addr");
    }
    assert_eq!(svc.get("/healthz").json()["store"], store.name(), "detected");
    assert!(svc.log().contains(&format!("etcd store: reading {store}")), "logs the store");
    assert!(svc.log().contains("request"), "-debug logs requests");
    svc.kill();

    // The same settings from the environment.
    let web = free_addr();
    let mut svc = Service::command(kind)
        .env("LAINLET_WEB", &web)
        .env("LAINLET_ETCD", &etcd.endpoint())
        .env("LAINLET_IP", NODE_IP)
        .spawn()
        .unwrap();
    let client = HttpClient::new();
    let local = wait_for(20 * SEC, || {
        let r = client.get(&web, "/v2/localspecquery").ok()?;
        (r.status == 200).then(|| r.json())
    });
    assert!(svc.is_running(), "{}", svc.log());
    assert_eq!(
        local.map(|v| normalise("/v2/localspecquery", v)),
        Some(normalise("/v2/localspecquery", serde_json::from_slice(&golden.body).unwrap()))
    );
});

conformance_test!(fn version_bad_flags_and_a_busy_port_exit_clearly(kind) {
    let mut v = Service::command(kind).arg("-v").spawn().unwrap();
    assert_eq!(v.wait_exit(10 * SEC).map(|s| s.code()), Some(Some(0)));
    assert!(v.log().contains("Lainlet Version: 2.4.3+git"), "{}", v.log());

    let mut bad = Service::command(kind).args(["--web", "127.0.0.1:1", "--bogus"]).spawn().unwrap();
    assert_eq!(bad.wait_exit(10 * SEC).map(|s| s.code()), Some(Some(2)));

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let mut clash = Service::command(kind).args(["--web", &addr, "--demo"]).spawn().unwrap();
    assert_eq!(clash.wait_exit(10 * SEC).map(|s| s.code()), Some(Some(1)));
    assert!(clash.log().contains("cannot listen on"), "{}", clash.log());

    // -etcd is required, as in the original: the usage, and status 1.
    let mut no_etcd = Service::command(kind).args(["-web=127.0.0.1:1"]).spawn().unwrap();
    assert_eq!(no_etcd.wait_exit(10 * SEC).map(|s| s.code()), Some(Some(1)));
    let log = no_etcd.log();
    assert!(log.contains("-etcd is required") && log.contains("Usage: "), "{log}");
    assert!(!log.contains("listening on"), "nothing was started: {log}");
});

conformance_test!(fn demo_mode_serves_built_in_data(kind) {
    let svc = Service::command(kind).web_auto().arg("--demo").start().unwrap();
    let health = svc.get("/healthz").json();
    assert_eq!(health["etcd"], "demo", "{health}");
    let hello = svc.get("/v2/coreinfowatcher?appname=hello");
    assert_eq!(hello.status, 200);
    assert!(hello.json()["hello.web.web"]["PodInfos"].is_array(), "{}", hello.text());
    let apps = svc.get("/v2/appswatcher").json();
    assert!(apps.as_object().unwrap().len() > 3, "the realistic cluster is there: {apps}");
    let mut watch = svc.watch("/v2/nodes?watch=1");
    assert_eq!(watch.next_frame(5 * SEC).expect("init").event, "init");
    assert!(
        wait_until(5 * SEC, || svc.log().contains("lainlet is serving built-in demo data on http://")),
        "prints how to try it: {}",
        svc.log()
    );
});

store_conformance_test!(fn connections_beyond_the_limit_get_503(kind, store) {
    let etcd = etcd_with_original_in(store);
    let svc = command_in(kind, &etcd, store).args(["--max-connections", "3"]).start().unwrap();
    let mut watches: Vec<SseStream> = (0..3).map(|_| svc.watch("/v2/nodes?watch=1")).collect();
    for w in &mut watches {
        assert_eq!(w.next_frame(5 * SEC).expect("init").event, "init");
    }
    let refused = svc.get("/version");
    assert_eq!(refused.status, 503);
    assert!(refused.text().contains("too many open connections"), "{}", refused.text());
    drop(watches.pop());
    assert!(
        wait_until(5 * SEC, || svc.get("/version").status == 200),
        "a freed slot is usable again"
    );
});
