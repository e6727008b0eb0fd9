//! End to end, streams that resume and send only what changed (issue #12), against both
//! binaries and both etcd stores: `rev=1` ids are the store's revision (v3) or index (v2) of
//! the state shown, heartbeats and errors carry no id; a resume (`Last-Event-ID` header or
//! `since=`) sends nothing for an unchanged view, one `update` or one `patch` of exactly what
//! changed otherwise, an `init` for a revision from the future and a `400` for garbage;
//! `diff=1` patches applied to the `init` reproduce every GET; a slow diff reader's patches
//! merge; the `/metrics` history rows. Real clients that are not ours (Python `sseclient`, a
//! browser `EventSource`) resuming across restarts and compactions: `e2e_resume_clients.rs`.
//!
//! Expected values come from the contract of issue #12 and the state written to etcd, never
//! from lainlet's own output: a patch is checked against the difference of two GETs, an id
//! against the store's revision after the write.

mod common;
mod resume_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use lainlet_fixtures::{keys, original_pod_groups, pod_group_value};
use lainlet_tests::*;
use resume_support::*;
use serde_json::{json, Value};

const CONFIG: &str = "/v2/configwatcher";
const COREINFO: &str = "/v2/coreinfowatcher";

/// Opens a watch of `path`, sending `Last-Event-ID: <id>` when given.
fn watch_from_id(svc: &Service, path: &str, last_event_id: Option<&str>) -> SseStream {
    let headers: Vec<(&str, &str)> = last_event_id
        .map(|id| ("Last-Event-ID", id))
        .into_iter()
        .collect();
    HttpClient::new()
        .sse_with_headers(svc.addr(), path, &headers)
        .unwrap_or_else(|e| panic!("watch {path}: {e}"))
}

/// Whether the frame has an `id:` line (the parser reports 0 for "none").
fn has_id_line(f: &Frame) -> bool {
    f.raw.lines().any(|l| l.starts_with("id:"))
}

/// The next frame that is not a heartbeat, within 10 s; heartbeats met on the way must carry
/// no id.
fn next_change(stream: &mut SseStream, what: &str) -> Frame {
    let deadline = std::time::Instant::now() + 10 * SEC;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let f = stream
            .next_frame(left)
            .unwrap_or_else(|| panic!("no frame ({what}) within 10 s"));
        if !f.is_heartbeat() {
            return f;
        }
        assert_eq!(
            f.raw, "event: heartbeat\n\n",
            "{what}: a heartbeat in rev mode"
        );
    }
}

/// `GET path` as JSON; it must answer 200.
fn get_json(svc: &Service, path: &str) -> Value {
    let r = svc.get(path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

/// A named store write, returning the revision after it.
type Step<'a> = (&'static str, Box<dyn Fn() -> i64 + 'a>);

/// The service on a fresh etcd holding the original's fixture set in `store`, caught up.
fn setup(kind: ServiceKind, store: Store) -> (EtcdServer, Service) {
    let etcd = etcd_with_original_in(store);
    let svc = start_in(kind, &etcd, store);
    wait_revision(&svc, etcd.with_store(store).current_revision());
    (etcd, svc)
}

store_conformance_test!(fn rev_ids_are_the_stores_revisions_and_heartbeats_and_errors_carry_none(kind, store) {
    let (etcd, svc) = setup(kind, store);
    let w = etcd.with_store(store);
    let start = w.current_revision();
    let mut stream = svc.watch(&format!("{CONFIG}?watch=1&rev=1&heartbeat=1"));
    let init = next_change(&mut stream, "init");
    assert_eq!((init.event.as_str(), init.id), ("init", start as u64), "{}", init.raw);
    assert!(init.raw.starts_with(&format!("id: {start}\nevent: init\n")), "{}", init.raw);
    let mut state = init.json();
    assert_eq!(state, get_json(&svc, CONFIG));

    // Each write that changes the view is one frame whose id is the store's revision after
    // the write; writes elsewhere (a pod group) move the revision but send nothing here.
    let (web, web_value) = hello_web_with_ip("172.20.0.33");
    let mut ids = vec![init.id];
    let steps: Vec<Step> = vec![
        ("put vip", Box::new(|| w.put(&keys::config("vip"), "192.168.77.230"))),
        ("put a pod group", Box::new(|| w.put(&web, &web_value))),
        ("delete domain", Box::new(|| w.delete(&keys::config("domain")))),
        ("put a new key", Box::new(|| w.put(&keys::config("e2e/resume"), "1"))),
    ];
    for (what, step) in &steps {
        let revision = step();
        assert_eq!(revision, w.current_revision(), "{what}");
        wait_revision(&svc, revision);
        let want = etcd_config_in(&etcd, store);
        if want == state {
            continue; // the pod group: checked by the next frame's id
        }
        let f = next_change(&mut stream, what);
        assert!(matches!(f.event.as_str(), "update" | "delete"), "{what}: {}", f.raw);
        assert_eq!(f.id, revision as u64, "{what}: the id is the revision of the write");
        assert_eq!(f.json(), want, "{what}");
        state = want;
        ids.push(f.id);
    }
    assert_eq!(ids.len(), 4, "init and three config changes: {ids:?}");
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "ids strictly increase: {ids:?}");
    let hb = expect_frame(&mut stream, "a heartbeat", 5 * SEC, Frame::is_heartbeat);
    assert_eq!(hb.raw, "event: heartbeat\n\n", "no id line on a heartbeat");

    // An error frame: without an id line in rev mode, `id: 0` as the original otherwise.
    let failing = "/v2/webrouter/webprocs?appname=redis&watch=1";
    let mut plain = svc.watch(failing);
    let original = plain.next_frame(5 * SEC).expect("the original's error frame");
    assert_eq!(original.event, "error");
    assert!(original.raw.starts_with("id: 0\nevent: error\n"), "{}", original.raw);
    let mut rev = svc.watch(&format!("{failing}&rev=1&heartbeat=1"));
    let error = rev.next_frame(5 * SEC).expect("an error frame");
    assert_eq!(error.event, "error");
    assert!(!has_id_line(&error), "no id on an error frame: {:?}", error.raw);
    assert_eq!(error.data, original.data);
    assert!(rev.wait_closed(5 * SEC), "the stream ends after its error, as before");
});

conformance_test!(fn a_last_event_id_on_a_plain_watch_is_ignored(kind) {
    let (etcd, svc) = setup(kind, Store::V3);
    let path = format!("{CONFIG}?target=vip&watch=1");
    let mut streams: Vec<SseStream> = [None, Some("17"), Some("999999"), Some("not a number")]
        .into_iter()
        .map(|id| watch_from_id(&svc, &path, id))
        .collect();
    let want = "id: 1\nevent: init\ndata: {\"vip\":\"192.168.77.201\"}\n\n";
    for s in &mut streams {
        assert_eq!(s.status(), 200);
        assert_eq!(s.raw_head(), SSE_HEAD);
        assert_eq!(s.next_frame(5 * SEC).expect("init").raw, want, "the original's bytes");
    }
    wait_revision(&svc, etcd.put(&keys::config("vip"), "192.168.77.232"));
    let update = "id: 2\nevent: update\ndata: {\"vip\":\"192.168.77.232\"}\n\n";
    for s in &mut streams {
        assert_eq!(s.next_frame(5 * SEC).expect("update").raw, update);
        assert_eq!(s.body().len(), want.len() + update.len(), "nothing else was written");
    }
});

store_conformance_test!(fn a_resume_of_an_unchanged_view_sends_nothing_until_the_next_change(kind, store) {
    let (etcd, svc) = setup(kind, store);
    let w = etcd.with_store(store);
    let vip = format!("{CONFIG}?target=vip&watch=1&rev=1");
    let redis = format!("{COREINFO}?appname=redis&watch=1&diff=1");
    let r_vip = next_change(&mut svc.watch(&vip), "vip init").id;
    let mut redis_stream = svc.watch(&redis);
    let redis_init = next_change(&mut redis_stream, "redis init");
    assert_eq!(redis_init.event, "init");
    drop(redis_stream);
    // Changes the two views do not select.
    let (web, web_value) = hello_web_with_ip("172.20.0.34");
    w.put(&web, &web_value);
    wait_revision(&svc, w.put(&keys::config("domain"), "lain.example"));

    // Resumed by header and by parameter: no init; the first frame is the next change.
    let mut vip_stream = watch_from_id(&svc, &vip, Some(&r_vip.to_string()));
    let mut redis_stream = svc.watch(&format!("{redis}&since={}", redis_init.id));
    let r = w.put(&keys::config("vip"), "192.168.77.233");
    wait_revision(&svc, r);
    let f = next_change(&mut vip_stream, "the vip update");
    assert_eq!((f.event.as_str(), f.id), ("update", r as u64), "{}", f.raw);
    assert_eq!(f.json(), json!({"vip": "192.168.77.233"}));

    let value = String::from_utf8(w.get(&redis_key()).unwrap()).unwrap();
    let r = w.put(&redis_key(), value.replace("172.20.1.2", "172.20.1.9"));
    wait_revision(&svc, r);
    let want = get_json(&svc, &format!("{COREINFO}?appname=redis"));
    let f = next_change(&mut redis_stream, "the redis patch");
    assert_eq!((f.event.as_str(), f.id), ("patch", r as u64), "{}", f.raw);
    assert_eq!(patch_parts(&f.json()), expected_patch(&redis_init.json(), &want));
    assert_eq!(apply_patch(&redis_init.json(), &f.json()), want);
});

store_conformance_test!(fn a_resume_after_changes_sends_one_update_or_one_patch_of_exactly_what_changed(kind, store) {
    let (etcd, svc) = setup(kind, store);
    let w = etcd.with_store(store);
    let full = format!("{CONFIG}?watch=1&rev=1");
    let diff = format!("{CONFIG}?watch=1&diff=1");
    let core = format!("{COREINFO}?watch=1&diff=1");
    let inits: Vec<Frame> = [&full, &diff, &core]
        .iter()
        .map(|p| next_change(&mut svc.watch(p), "init"))
        .collect();
    let r = inits[0].id;
    assert!(inits.iter().all(|f| f.event == "init" && f.id == r), "{inits:?}");

    // While nobody watches: config put, delete, new key; a pod group changed, one deleted,
    // one new.
    w.put(&keys::config("vip"), "192.168.77.234");
    w.delete(&keys::config("domain"));
    w.put(&keys::config("e2e/new"), "x");
    let (web, web_value) = hello_web_with_ip("172.20.0.35");
    w.put(&web, &web_value);
    w.delete(&redis_key());
    let (extra, extra_value) = extra_pod_group();
    let last = w.put(&extra, &extra_value);
    wait_revision(&svc, last);
    let (config_now, core_now) = (get_json(&svc, CONFIG), get_json(&svc, COREINFO));
    assert_eq!(config_now, etcd_config_in(&etcd, store));

    let mut full_stream = watch_from_id(&svc, &full, Some(&r.to_string()));
    let f = next_change(&mut full_stream, "the resume update");
    assert_eq!((f.event.as_str(), f.id), ("update", last as u64), "{}", f.raw);
    assert_eq!(f.json(), config_now);

    let mut diff_stream = svc.watch(&format!("{diff}&since={r}"));
    let p = next_change(&mut diff_stream, "the resume patch");
    assert_eq!((p.event.as_str(), p.id), ("patch", last as u64), "{}", p.raw);
    let config_put = BTreeMap::from([
        ("vip".to_owned(), json!("192.168.77.234")),
        ("e2e/new".to_owned(), json!("x")),
    ]);
    assert_eq!(patch_parts(&p.json()), (config_put, BTreeSet::from(["domain".to_owned()])));
    assert_eq!(apply_patch(&inits[1].json(), &p.json()), config_now);

    let mut core_stream = watch_from_id(&svc, &core, Some(&r.to_string()));
    let p = next_change(&mut core_stream, "the pod groups' patch");
    assert_eq!((p.event.as_str(), p.id), ("patch", last as u64), "{}", p.raw);
    let core_put = BTreeMap::from([
        ("hello.web.web".to_owned(), core_now["hello.web.web"].clone()),
        ("hello.worker.extra".to_owned(), core_now["hello.worker.extra"].clone()),
    ]);
    let core_delete = BTreeSet::from(["redis.worker.redis".to_owned()]);
    assert_eq!(patch_parts(&p.json()), (core_put, core_delete));
    assert_eq!(apply_patch(&inits[2].json(), &p.json()), core_now);

    // The header beats the parameter (a browser sends the newest id it saw, the URL keeps
    // the first): resumed from `last`, nothing is missing.
    let mut both = watch_from_id(&svc, &format!("{full}&since={r}"), Some(&last.to_string()));
    // Exactly one frame each: the next one is the next change.
    let marker = w.put(&keys::config("e2e/marker"), "1");
    wait_revision(&svc, marker);
    let marked = get_json(&svc, CONFIG);
    for (what, s) in [("full", &mut full_stream), ("header and since", &mut both)] {
        let f = next_change(s, what);
        assert_eq!((f.event.as_str(), f.id), ("update", marker as u64), "{what}: {}", f.raw);
        assert_eq!(f.json(), marked, "{what}");
    }
    let f = next_change(&mut diff_stream, "the marker patch");
    assert_eq!((f.event.as_str(), f.id), ("patch", marker as u64), "{}", f.raw);
    assert_eq!(f.json(), json!({"put": {"e2e/marker": "1"}}));
    assert!(core_stream.collect_for(Duration::from_millis(300)).is_empty(), "no pod group changed");
});

store_conformance_test!(fn a_resume_from_the_future_gets_an_init_and_garbage_a_400(kind, store) {
    let (etcd, svc) = setup(kind, store);
    let now = etcd.with_store(store).current_revision();
    let future = (now + 1000).to_string();
    for (path, id) in [
        (format!("{CONFIG}?watch=1&rev=1"), Some(future.as_str())),
        (format!("{CONFIG}?watch=1&diff=1&since={future}"), None),
        (format!("{COREINFO}?watch=1&diff=1"), Some(future.as_str())),
    ] {
        let mut s = watch_from_id(&svc, &path, id);
        let f = next_change(&mut s, &path);
        assert_eq!((f.event.as_str(), f.id), ("init", now as u64), "{path}: {}", f.raw);
        let get = path.split("?watch").next().unwrap();
        assert_eq!(f.json(), get_json(&svc, get), "{path}");
    }
    let client = HttpClient::new();
    for (path, id) in [
        (format!("{CONFIG}?watch=1&rev=1"), "abc"),
        (format!("{CONFIG}?watch=1&diff=1"), "-3"),
        (format!("{CONFIG}?watch=1&rev=1&since=5"), "5x"),
    ] {
        let r = client
            .request("GET", svc.addr(), &path, &[("Last-Event-ID", id)], b"")
            .unwrap();
        assert_eq!(r.status, 400, "{path} with Last-Event-ID {id:?}: {}", r.text());
        assert!(r.text().contains("Last-Event-ID"), "a clear message: {}", r.text());
    }
});

conformance_test!(fn bad_stream_parameters_and_diffs_of_array_views_are_clear_400s(kind) {
    let (etcd, svc) = setup(kind, Store::V3);
    for (path, name) in [
        ("rev=maybe", "rev"),
        ("rev=2", "rev"),
        ("diff=2", "diff"),
        ("diff=maybe", "diff"),
        ("since=abc", "since"),
        ("since=-4", "since"),
        ("since=1.5", "since"),
    ] {
        let r = svc.get(&format!("{CONFIG}?watch=1&{path}"));
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(
            r.text().starts_with(&format!("invalid value for parameter {name}")),
            "{path}: {}",
            r.text()
        );
    }
    let now = etcd.current_revision() as u64;
    for path in ["/v2/procwatcher?appname=hello", "/v2/localspecquery", "/v2/streamrouter/ports"] {
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = svc.get(&format!("{path}{sep}watch=1&diff=1"));
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(
            r.text().contains("diff=1") && r.text().contains("array"),
            "{path}: a clear message: {}",
            r.text()
        );
        // rev=1 works there (localspecquery has no watch at all: its error, without an id).
        let mut s = svc.watch(&format!("{path}{sep}watch=1&rev=1"));
        let f = next_change(&mut s, path);
        if path == "/v2/localspecquery" {
            assert_eq!(f.event, "error", "{}", f.raw);
            assert!(!has_id_line(&f), "{path}: {}", f.raw);
            continue;
        }
        assert_eq!((f.event.as_str(), f.id), ("init", now), "{path}: {}", f.raw);
        assert!(f.json().is_array(), "{path}");
    }
});

store_conformance_test!(fn diff_patches_applied_to_the_init_reproduce_every_get(kind, store) {
    let (etcd, svc) = setup(kind, store);
    let w = etcd.with_store(store);
    let views = [CONFIG, COREINFO, "/v2/containers?nodename=node1", "/v2/appswatcher"];
    let mut clients: Vec<(SseStream, Value)> = views
        .iter()
        .map(|v| {
            let sep = if v.contains('?') { '&' } else { '?' };
            let mut s = svc.watch(&format!("{v}{sep}watch=1&diff=1&heartbeat=1"));
            let init = next_change(&mut s, v);
            assert_eq!(init.event, "init", "{v}");
            assert_eq!(init.json(), get_json(&svc, v), "{v}");
            (s, init.json())
        })
        .collect();
    let (web1, web1_value) = hello_web_with_ip("172.20.0.36");
    let (extra, extra_value) = extra_pod_group();
    let mut web2 = original_pod_groups()[0].clone();
    web2.pods[0].containers[0].container_ip = "172.20.0.37".to_owned();
    let web2_value = pod_group_value(&web2);
    let cron_value = w.get(&cron_key()).unwrap();
    let steps: Vec<Step> = vec![
        ("put vip", Box::new(|| w.put(&keys::config("vip"), "192.168.77.235"))),
        ("put a new config key", Box::new(|| w.put(&keys::config("e2e/list"), "[1,2]"))),
        ("delete domain", Box::new(|| w.delete(&keys::config("domain")))),
        ("move a container", Box::new(|| w.put(&web1, &web1_value))),
        ("a new pod group", Box::new(|| w.put(&extra, &extra_value))),
        ("delete a pod group", Box::new(|| w.delete(&cron_key()))),
        ("move a node1 container", Box::new(|| w.put(&web2.key(), &web2_value))),
        ("delete the new pod group", Box::new(|| w.delete(&extra))),
        ("bring the deleted one back", Box::new(|| w.put(&cron_key(), &cron_value))),
        ("delete a config key", Box::new(|| w.delete(&keys::config("e2e/list")))),
    ];
    let mut patches = 0;
    for (what, step) in &steps {
        let revision = step();
        wait_revision(&svc, revision);
        for (view, (stream, state)) in views.iter().zip(&mut clients) {
            let want = get_json(&svc, view);
            if want == *state {
                continue; // nothing is sent: the next frame read must be the next change
            }
            let f = next_change(stream, &format!("{view} after {what}"));
            assert_eq!((f.event.as_str(), f.id), ("patch", revision as u64), "{view} after {what}: {}", f.raw);
            assert_eq!(patch_parts(&f.json()), expected_patch(state, &want), "{view} after {what}");
            *state = apply_patch(state, &f.json());
            assert_eq!(*state, want, "{view} after {what}");
            patches += 1;
        }
    }
    assert!(patches >= steps.len() + 3, "every step changed some view: {patches} patches");
    for (view, (stream, _)) in views.iter().zip(&mut clients) {
        let extra: Vec<Frame> = stream
            .collect_for(Duration::from_millis(300))
            .into_iter()
            .filter(|f| !f.is_heartbeat())
            .collect();
        assert!(extra.is_empty(), "{view}: nothing more than one patch per change: {extra:?}");
    }
});

store_conformance_test!(fn a_slow_diff_reader_gets_merged_patches_that_end_at_the_get(kind, store) {
    let (etcd, svc) = setup(kind, store);
    let w = etcd.with_store(store);
    // A client with a tiny receive buffer, so that lainlet cannot write ahead of it.
    let addr: SocketAddr = svc.addr().parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut tcp: TcpStream = socket.into();
    let path = format!("{CONFIG}?watch=1&diff=1");
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut slow = SseStream::from_stream(tcp, 5 * SEC).unwrap();
    let init = next_change(&mut slow, "init");
    assert_eq!(init.event, "init");
    let mut state = init.json();
    let conflated = metric(&svc, "lainlet_conflated_frames_total").unwrap_or(0.0);

    // Far more than the socket buffers hold (up to 4 MiB on loopback): values of 64 KiB until
    // lainlet had to merge patches for this reader (how many that takes depends on how etcd's
    // events arrive in batches, so the writer watches the counter rather than guessing), with a
    // key put then deleted (nothing), an existing key deleted and one put twice among them.
    let big = |i: usize| format!("{i:06}").repeat(64 * 1024 / 6);
    let mut sent = 0usize;
    let mut n = 0usize;
    let mut merged_at = None;
    while n < 2_000 && merged_at.is_none_or(|m| n < m + 40) {
        w.put(&keys::config("e2e/big"), big(n));
        sent += big(n).len();
        match n {
            50 => {
                w.put(&keys::config("e2e/tmp"), "t");
            }
            60 => {
                w.delete(&keys::config("e2e/tmp"));
            }
            70 => {
                w.delete(&keys::config("domain"));
            }
            80 | 90 => {
                w.put(&keys::config("vip"), format!("192.168.77.{n}"));
            }
            _ => {}
        }
        n += 1;
        if merged_at.is_none()
            && n % 10 == 0
            && n > 100
            && metric(&svc, "lainlet_conflated_frames_total").unwrap() > conflated
        {
            merged_at = Some(n);
        }
    }
    assert!(merged_at.is_some(), "the slow reader's patches were merged within {n} changes");
    let last = w.current_revision();
    wait_revision(&svc, last);
    let want = get_json(&svc, CONFIG);
    assert_eq!(want["e2e/big"], json!(big(n - 1)));

    let mut frames = Vec::new();
    let ok = wait_until(30 * SEC, || {
        while let Some(f) = slow.next_frame(Duration::from_millis(100)) {
            assert_eq!(f.event, "patch", "{:.200}", f.raw);
            state = apply_patch(&state, &f.json());
            frames.push((f.id, f.raw.len()));
        }
        state == want
    });
    assert!(ok, "the slow reader ends at the GET (has {} frames)", frames.len());
    let ids: Vec<u64> = frames.iter().map(|f| f.0).collect();
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "ids strictly increase: {ids:?}");
    assert_eq!(ids.last(), Some(&(last as u64)), "the last patch shows the last revision");
    let received: usize = frames.iter().map(|f| f.1).sum();
    eprintln!("slow diff reader: {} patches, {received} bytes, for {n} changes of {sent} bytes", frames.len());
    assert!(frames.len() < n, "{} patches for {n} changes: merged, not queued", frames.len());
    assert!(received < sent * 3 / 4, "{received} bytes read of {sent} written to etcd");
    assert!(state.get("e2e/tmp").is_none() && state.get("domain").is_none());
});

store_conformance_test!(fn the_history_rows_in_metrics_count_changes_and_say_where_resumes_reach(kind, store) {
    let (etcd, svc) = setup(kind, store);
    let w = etcd.with_store(store);
    let snapshot = w.current_revision();
    let entries = |svc: &Service| metric(svc, "lainlet_history_entries").expect("history entries");
    let oldest = |svc: &Service| {
        metric(svc, "lainlet_history_oldest_revision").expect("history oldest revision") as i64
    };
    let horizon = oldest(&svc);
    match store {
        // The v2 store cannot be read in the past: the history starts at the first snapshot.
        Store::V2 => assert_eq!(horizon, snapshot),
        // v3 may reach further back (etcd's history), never past the snapshot.
        Store::V3 => assert!((0..=snapshot).contains(&horizon), "{horizon} vs {snapshot}"),
    }
    let before = entries(&svc);
    w.put(&keys::config("e2e/a"), "1");
    w.put(&keys::config("e2e/b"), "2");
    let r = w.delete(&keys::config("e2e/a"));
    wait_revision(&svc, r);
    assert_eq!(entries(&svc), before + 3.0, "one entry per changed key");
    assert_eq!(oldest(&svc), horizon, "nothing dropped within the window");

    // The row says what a resume gets: from the oldest revision an update (the view changed
    // since). From before it, a v2 lainlet cannot know what changed: an init; a v3 one may
    // still know from etcd's own history (issue #12): an init or an update, of the state.
    let r = w.put(&keys::config("vip"), "192.168.77.236");
    wait_revision(&svc, r);
    let path = format!("{CONFIG}?target=vip&watch=1&rev=1");
    let f = next_change(&mut svc.watch(&format!("{path}&since={horizon}")), "from the oldest");
    assert_eq!((f.event.as_str(), f.id), ("update", r as u64), "from {horizon}: {}", f.raw);
    assert_eq!(f.json(), json!({"vip": "192.168.77.236"}));
    if horizon > 0 {
        let from = horizon - 1;
        let f = next_change(&mut svc.watch(&format!("{path}&since={from}")), "from before it");
        let allowed: &[&str] = match store {
            Store::V2 => &["init"],
            Store::V3 => &["init", "update"],
        };
        assert!(allowed.contains(&f.event.as_str()), "from {from}: {}", f.raw);
        assert_eq!((f.id, f.json()), (r as u64, json!({"vip": "192.168.77.236"})));
    }

    // A restart: a v2 lainlet's history starts again at its new snapshot.
    let mut svc = svc;
    svc.restart().unwrap();
    let snapshot = w.current_revision();
    wait_revision(&svc, snapshot);
    match store {
        Store::V2 => assert_eq!(oldest(&svc), snapshot),
        Store::V3 => assert!(oldest(&svc) <= snapshot),
    }
});

store_conformance_test!(fn a_watch_through_a_compaction_gets_one_frame_of_the_real_differences(kind, store) {
    let (mut etcd, svc) = setup(kind, store);
    let mut full = svc.watch(&format!("{CONFIG}?watch=1&rev=1"));
    let mut pods = svc.watch(&format!("{COREINFO}?watch=1&diff=1"));
    next_change(&mut full, "init");
    let init = next_change(&mut pods, "init").json();
    let reads = metric(&svc, "lainlet_snapshots_total").unwrap();

    // lainlet frozen; its etcd connection broken; changes; the history it would resume from
    // gone (v3 compacted, the v2 store's 1000-event window moved past it); lainlet thawed.
    svc.signal(libc::SIGSTOP).unwrap();
    etcd.restart().expect("restart etcd");
    {
        let w = etcd.with_store(store);
        w.put(&keys::config("vip"), "192.168.77.237");
        w.put(&keys::config("e2e/gone"), "put and deleted while lainlet was away");
        w.delete(&keys::config("e2e/gone"));
        let (web, value) = hello_web_with_ip("172.20.0.40");
        w.put(&web, value);
        w.delete(&redis_key());
    }
    match store {
        Store::V3 => etcd.compact(etcd.current_revision()),
        Store::V2 => {
            etcd.v2_load((0..1001).map(|i| (format!("/e2e-churn/k{i}"), "x")));
        }
    }
    svc.signal(libc::SIGCONT).unwrap();
    let now = etcd.with_store(store).current_revision();
    wait_revision(&svc, now);
    let reads_now = metric(&svc, "lainlet_snapshots_total").unwrap();
    // (after the v3 compaction or the v2 watch's 401; or, when the v2 stream just ended,
    // by catching up at once)
    assert!(reads_now > reads, "lainlet re-read the store");

    // One frame each, at the revision of the re-read, of what differs.
    let f = next_change(&mut full, "the re-read");
    assert_eq!((f.event.as_str(), f.id), ("update", now as u64), "{}", f.raw);
    assert_eq!(f.json(), etcd_config_in(&etcd, store));
    let p = next_change(&mut pods, "the re-read");
    assert_eq!((p.event.as_str(), p.id), ("patch", now as u64), "{}", p.raw);
    let want = get_json(&svc, COREINFO);
    let put = BTreeMap::from([("hello.web.web".to_owned(), want["hello.web.web"].clone())]);
    let delete = BTreeSet::from(["redis.worker.redis".to_owned()]);
    assert_eq!(patch_parts(&p.json()), (put, delete));
    assert_eq!(apply_patch(&init, &p.json()), want);
    // Nothing more: the next frames are the next change's.
    let marker = etcd.with_store(store).put(&keys::config("e2e/marker"), "1");
    wait_revision(&svc, marker);
    let f = next_change(&mut full, "the marker");
    assert_eq!((f.event.as_str(), f.id), ("update", marker as u64), "{}", f.raw);
    let (web, value) = hello_web_with_ip("172.20.0.41");
    let marker = etcd.with_store(store).put(&web, value);
    wait_revision(&svc, marker);
    let p = next_change(&mut pods, "the marker");
    assert_eq!((p.event.as_str(), p.id), ("patch", marker as u64), "{}", p.raw);
});

store_conformance_test!(fn a_diff_watch_of_a_failing_view_sends_its_error_and_closes_as_before(kind, store) {
    let (etcd, svc) = setup(kind, store);
    let w = etcd.with_store(store);
    let path = "/v2/webrouter/webprocs";
    let mut plain = svc.watch(&format!("{path}?watch=1"));
    let mut diff = svc.watch(&format!("{path}?watch=1&diff=1"));
    assert_eq!(next_change(&mut plain, "init").event, "init");
    let init = next_change(&mut diff, "init");
    assert_eq!(init.json(), get_json(&svc, path));

    // Every container of hello.web.web loses its IP: the view fails (the original's rule).
    let mut lost = original_pod_groups()[0].clone();
    for pod in &mut lost.pods {
        pod.containers[0].container_ip = String::new();
    }
    wait_revision(&svc, w.put(&lost.key(), pod_group_value(&lost)));
    let original = expect_frame(&mut plain, "the error", 5 * SEC, |f| f.event == "error");
    assert!(original.raw.starts_with("id: 0\nevent: error\n"), "{}", original.raw);
    let error = next_change(&mut diff, "the error");
    assert_eq!(error.event, "error", "{}", error.raw);
    assert!(!has_id_line(&error), "{}", error.raw);
    assert_eq!(error.data, original.data);
    assert!(diff.wait_closed(5 * SEC) && plain.wait_closed(5 * SEC), "both end, as before");
    // Resuming while it fails: the error again, no id.
    let mut again = watch_from_id(&svc, &format!("{path}?watch=1&diff=1"), Some(&init.id.to_string()));
    let f = next_change(&mut again, "the error on a resume");
    assert_eq!((f.event.as_str(), f.data.as_deref()), ("error", error.data.as_deref()));
    assert!(!has_id_line(&f) && again.wait_closed(5 * SEC), "{}", f.raw);

    // Back to good, then resumed from the init: no init, patches to the GET.
    let (web, value) = hello_web_with_ip("172.20.0.42");
    wait_revision(&svc, w.put(&web, value));
    let mut resumed = watch_from_id(&svc, &format!("{path}?watch=1&diff=1"), Some(&init.id.to_string()));
    let want = get_json(&svc, path);
    let p = next_change(&mut resumed, "the resume");
    assert_eq!(p.event, "patch", "{}", p.raw);
    assert_eq!(apply_patch(&init.json(), &p.json()), want);
});

store_conformance_test!(fn a_resume_ignores_keys_that_only_share_the_selected_keys_prefix(kind, store) {
    // `target=vip` selects exactly the key `vip` while it exists (spec §2.1); the fixture's
    // `vips/192.168.77.201` shares its prefix but is not in the view.
    let (etcd, svc) = setup(kind, store);
    let w = etcd.with_store(store);
    let get = format!("{CONFIG}?target=vip");
    let (full, diff) = (format!("{get}&watch=1&rev=1"), format!("{get}&watch=1&diff=1"));
    let init = next_change(&mut svc.watch(&full), "init");
    assert_eq!(init.json(), json!({"vip": "192.168.77.201"}));
    let r = w.put(&keys::config("vips/192.168.77.201"), r#"{"app": "webrouter"}"#);
    wait_revision(&svc, r);
    assert_eq!(get_json(&svc, &get), init.json(), "the view did not change");

    let id = init.id.to_string();
    let mut streams = [
        watch_from_id(&svc, &full, Some(&id)),
        watch_from_id(&svc, &diff, Some(&id)),
    ];
    let marker = w.put(&keys::config("vip"), "192.168.77.238");
    wait_revision(&svc, marker);
    let [full_stream, diff_stream] = &mut streams;
    let f = next_change(full_stream, "full");
    assert_eq!(
        (f.event.as_str(), f.id, f.data.as_deref()),
        ("update", marker as u64, Some(r#"{"vip":"192.168.77.238"}"#)),
        "unchanged view: the stream starts with the next change"
    );
    let p = next_change(diff_stream, "diff");
    assert_eq!(
        (p.event.as_str(), p.id, p.data.as_deref()),
        ("patch", marker as u64, Some(r#"{"put":{"vip":"192.168.77.238"}}"#)),
        "unchanged view: the stream starts with the next change"
    );
});

store_conformance_test!(fn a_resume_from_before_the_bounded_history_gets_an_init_and_metrics_show_the_bound(kind, store) {
    let etcd = etcd_with_original_in(store);
    let svc = command_in(kind, &etcd, store)
        .args(["--history-max-entries", "4"])
        .start()
        .expect("start the service");
    let w = etcd.with_store(store);
    wait_revision(&svc, w.current_revision());
    let mut state = get_json(&svc, CONFIG);
    // Six changes of one key each; the history keeps the four newest.
    let mut revisions = Vec::new();
    let mut states = Vec::new();
    for i in 0..6 {
        let (key, value) = (format!("e2e/k{i}"), format!("v{i}"));
        revisions.push(w.put(&keys::config(&key), &value));
        state[key] = json!(value);
        states.push(state.clone());
    }
    wait_revision(&svc, *revisions.last().unwrap());
    let now = *revisions.last().unwrap();
    assert_eq!(metric(&svc, "lainlet_history_entries"), Some(4.0), "the memory bound");
    // The oldest revision a resume can come from: the changes after it are all kept.
    let oldest = metric(&svc, "lainlet_history_oldest_revision").unwrap() as i64;
    assert_eq!(oldest, revisions[1], "changes after {} are kept: {revisions:?}", revisions[1]);

    // From there: one patch of exactly the four changes after it.
    let mut s = svc.watch(&format!("{CONFIG}?watch=1&diff=1&since={oldest}"));
    let p = next_change(&mut s, "from the oldest revision");
    assert_eq!((p.event.as_str(), p.id), ("patch", now as u64), "{}", p.raw);
    assert_eq!(patch_parts(&p.json()), expected_patch(&states[1], &state));
    assert_eq!(apply_patch(&states[1], &p.json()), get_json(&svc, CONFIG));
    // From before it lainlet cannot know (on v3 neither can etcd, once compacted): an init.
    if store == Store::V3 {
        etcd.compact(now);
    }
    for path in [format!("{CONFIG}?watch=1&diff=1"), format!("{CONFIG}?watch=1&rev=1")] {
        let mut s = watch_from_id(&svc, &path, Some(&revisions[0].to_string()));
        let f = next_change(&mut s, "from before the oldest revision");
        assert_eq!((f.event.as_str(), f.id), ("init", now as u64), "{path}: {}", f.raw);
        assert_eq!(f.json(), get_json(&svc, CONFIG), "{path}");
    }
});
