//! Resumable and diff streams (`rev=1`, `diff=1`, `Last-Event-ID`), as clients use them:
//!
//! * a property test: for random sequences of puts, deletes and resyncs, with a history window
//!   that is sometimes tiny (so resumes fall before its horizon), watchers in revision mode
//!   and in diff mode disconnect at random points and resume with the last id they saw; each
//!   ends, after applying what it received, equal to a GET — so the engine never claimed
//!   "unchanged" when it could not know, and a patch always brought the client to the state;
//!   ids strictly increase within every stream;
//! * scenario tests of each rule of the contract.

mod support;

use std::collections::BTreeMap;

use lainlet_core::{
    apply_patch, EngineConfig, HistoryWindow, Method, Reply, Request, SubscriberId,
};
use lainlet_fixtures::{keys, Change};
use proptest::prelude::*;
use serde_json::Value;
use support::client::{seen, Client, Seen};
use support::{apply_to_dump, event, golden_config, key_pool, localhost, Harness};

/// Views whose bodies are JSON objects (diff streams need objects).
const OBJECT_PATHS: &[&str] = &[
    "/v2/configwatcher",
    "/v2/configwatcher?target=vip",
    "/v2/configwatcher?target=vips",
    "/v2/configwatcher?target=domain",
    "/v2/coreinfowatcher",
    "/v2/coreinfowatcher?appname=hello",
    "/v2/proxywatcher?appname=hello-service",
    "/v2/webrouter/webprocs",
    "/v2/streamrouter/streamprocs",
    "/v2/rebellion/localprocs",
    "/v2/backupspec?appname=hello",
    "/v2/containers",
    "/v2/containers?nodename=node1",
    "/v2/depends",
    "/v2/nodes",
    "/v2/appswatcher",
];

#[derive(Clone, Debug)]
enum Op {
    Put { key: usize, value: usize },
    Delete { key: usize },
    Resync,
    Read { client: usize },
    Reconnect { client: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<usize>(), any::<usize>()).prop_map(|(key, value)| Op::Put { key, value }),
        2 => any::<usize>().prop_map(|key| Op::Delete { key }),
        1 => Just(Op::Resync),
        3 => any::<usize>().prop_map(|client| Op::Read { client }),
        3 => any::<usize>().prop_map(|client| Op::Reconnect { client }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn resuming_watchers_end_equal_to_the_get_and_never_miss_a_change(
        initial in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..12),
        ops in proptest::collection::vec(op(), 1..60),
        tiny_history in any::<bool>(),
        history_entries in 1usize..12,
    ) {
        let pool = key_pool();
        let writes = initial.iter().map(|(k, v)| {
            let (key, values) = &pool[k % pool.len()];
            (key.clone(), values[v % values.len()].clone())
        });
        let mut config = golden_config();
        if tiny_history {
            config.history = HistoryWindow {
                min_age: std::time::Duration::ZERO,
                min_revisions: 0,
                max_entries: history_entries,
            };
        }
        let mut h = Harness::new(lainlet_fixtures::Dump::from_writes(2, writes), config);
        let mut clients: Vec<Client> = OBJECT_PATHS
            .iter()
            .flat_map(|p| [Client::new(p, false), Client::new(p, true)])
            .collect();
        for c in &mut clients {
            c.connect(&mut h);
        }
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    let (key, values) = &pool[key % pool.len()];
                    let change = Change::Put { key: key.clone(), value: values[value % values.len()].clone() };
                    let revision = h.store.revision + 1;
                    h.store = apply_to_dump(&h.store, &change, revision);
                    h.engine.handle_events(h.now, [event(&change, revision)]);
                }
                Op::Delete { key } => {
                    let change = Change::Delete { key: pool[key % pool.len()].0.clone() };
                    let revision = h.store.revision + 1;
                    h.store = apply_to_dump(&h.store, &change, revision);
                    h.engine.handle_events(h.now, [event(&change, revision)]);
                }
                Op::Resync => h.resync(),
                Op::Read { client } => {
                    let n = clients.len();
                    clients[client % n].read(&mut h).map_err(TestCaseError::fail)?;
                }
                Op::Reconnect { client } => {
                    let n = clients.len();
                    let c = &mut clients[client % n];
                    c.disconnect(&mut h);
                    c.connect(&mut h);
                }
            }
        }
        for c in &mut clients {
            c.read(&mut h).map_err(TestCaseError::fail)?;
            let path = c.url.split("watch=1").next().unwrap().trim_end_matches(['?', '&']).to_owned();
            let get = h.get(&path);
            if get.status == 200 {
                let want: Value = serde_json::from_slice(&get.body).unwrap();
                prop_assert!(!c.failed, "{}: failed but the GET answers", c.url);
                prop_assert_eq!(c.state.as_ref(), Some(&want), "{}", c.url);
            } else {
                prop_assert!(c.failed, "{}: the GET fails ({}) but the stream did not say so", c.url, get.status);
            }
        }
    }
}

fn watch_with(
    h: &mut Harness,
    url: &str,
    last_event_id: Option<&str>,
) -> Result<SubscriberId, lainlet_core::Response> {
    let request = Request::new(Method::Get, url).with_last_event_id(last_event_id);
    let ctx = h.ctx(localhost());
    match h.engine.handle_request(&request, &ctx) {
        Reply::Stream(s) => Ok(s),
        Reply::Response(r) => Err(r),
    }
}

fn frames(h: &mut Harness, s: SubscriberId) -> Vec<Seen> {
    h.drain(s).iter().map(seen).collect()
}

fn put_vip(h: &mut Harness, vip: &str) -> i64 {
    h.apply(&[Change::Put {
        key: keys::config("vip"),
        value: vip.as_bytes().to_vec(),
    }]);
    h.store.revision
}

#[test]
fn rev_ids_are_revisions_and_heartbeats_and_errors_carry_none() {
    let mut h = Harness::golden();
    let start = h.store.revision;
    let s = watch_with(
        &mut h,
        "/v2/configwatcher?target=vip&watch=1&rev=1&heartbeat=1",
        None,
    )
    .unwrap();
    let init = frames(&mut h, s);
    assert_eq!(init.len(), 1);
    assert_eq!(
        (init[0].id, init[0].event.as_str()),
        (Some(start as u64), "init")
    );
    let r = put_vip(&mut h, "192.168.77.250");
    let update = frames(&mut h, s);
    assert_eq!(
        (update[0].id, update[0].event.as_str()),
        (Some(r as u64), "update")
    );
    h.advance(std::time::Duration::from_secs(1));
    let hb = frames(&mut h, s);
    assert_eq!((hb[0].id, hb[0].event.as_str()), (None, "heartbeat"));
    let refused = watch_with(
        &mut h,
        "/v2/webrouter/webprocs?appname=redis&watch=1&rev=1",
        None,
    )
    .unwrap();
    let error = frames(&mut h, refused);
    assert_eq!(
        (error[0].id, error[0].event.as_str(), error[0].close),
        (None, "error", true)
    );
}

#[test]
fn without_the_new_parameters_a_last_event_id_is_ignored_and_ids_are_the_originals() {
    let mut h = Harness::golden();
    let s = watch_with(
        &mut h,
        "/v2/configwatcher?target=vip&watch=1",
        Some("12345"),
    )
    .unwrap();
    let init = frames(&mut h, s);
    assert_eq!((init[0].id, init[0].event.as_str()), (Some(1), "init"));
    put_vip(&mut h, "192.168.77.250");
    assert_eq!(frames(&mut h, s)[0].id, Some(2));
    let garbage = watch_with(&mut h, "/v2/configwatcher?watch=1", Some("not a number"));
    assert!(garbage.is_ok(), "v2 clients may send anything there");
}

#[test]
fn a_resume_with_nothing_new_sends_no_init_and_starts_with_the_next_change() {
    let mut h = Harness::golden();
    let s = watch_with(&mut h, "/v2/configwatcher?target=vip&watch=1&rev=1", None).unwrap();
    let last = frames(&mut h, s)[0].id.unwrap().to_string();
    h.engine.handle_disconnect(s);
    // Another key changes meanwhile: this view is not touched.
    h.apply(&[Change::Put {
        key: keys::config("domain"),
        value: b"lain.example".to_vec(),
    }]);
    let s = watch_with(
        &mut h,
        "/v2/configwatcher?target=vip&watch=1&rev=1",
        Some(&last),
    )
    .unwrap();
    assert!(
        frames(&mut h, s).is_empty(),
        "no init: the client is up to date"
    );
    let r = put_vip(&mut h, "192.168.77.251");
    let next = frames(&mut h, s);
    assert_eq!(
        (next[0].id, next[0].event.as_str()),
        (Some(r as u64), "update")
    );
    assert_eq!(next[0].data.as_deref(), Some(r#"{"vip":"192.168.77.251"}"#));
}

#[test]
fn a_resume_after_a_change_sends_one_update_or_one_patch_of_exactly_what_changed() {
    let mut h = Harness::golden();
    let full = watch_with(&mut h, "/v2/configwatcher?watch=1&rev=1", None).unwrap();
    let diff = watch_with(&mut h, "/v2/configwatcher?watch=1&diff=1", None).unwrap();
    let last = frames(&mut h, full)[0].id.unwrap().to_string();
    assert_eq!(frames(&mut h, diff)[0].event, "init");
    h.engine.handle_disconnect(full);
    h.engine.handle_disconnect(diff);
    let r = put_vip(&mut h, "192.168.77.252");
    h.apply(&[Change::Delete {
        key: keys::config("domain"),
    }]);
    let full = watch_with(&mut h, "/v2/configwatcher?watch=1&rev=1", Some(&last)).unwrap();
    let f = frames(&mut h, full);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].id, f[0].event.as_str()),
        (Some(r as u64 + 1), "update")
    );
    assert_eq!(
        f[0].data.as_deref(),
        Some(h.get("/v2/configwatcher").body.as_ref()).map(|b| std::str::from_utf8(b).unwrap())
    );
    let diff = watch_with(&mut h, "/v2/configwatcher?watch=1&diff=1", Some(&last)).unwrap();
    let d = frames(&mut h, diff);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].event, "patch");
    assert_eq!(
        d[0].data.as_deref(),
        Some(r#"{"put":{"vip":"192.168.77.252"},"delete":["domain"]}"#)
    );
}

#[test]
fn a_diff_stream_sends_patches_that_merge_for_a_slow_reader() {
    let mut h = Harness::golden();
    let s = watch_with(&mut h, "/v2/configwatcher?watch=1&diff=1", None).unwrap();
    let init = frames(&mut h, s);
    let mut state: BTreeMap<String, Value> =
        serde_json::from_str(init[0].data.as_deref().unwrap()).unwrap();
    // Three changes before the client reads: put, put again, put then delete.
    put_vip(&mut h, "1.1.1.1");
    put_vip(&mut h, "2.2.2.2");
    h.apply(&[
        Change::Put {
            key: keys::config("x"),
            value: b"1".to_vec(),
        },
        Change::Delete {
            key: keys::config("x"),
        },
    ]);
    let p = frames(&mut h, s);
    assert_eq!(p.len(), 1, "one merged patch");
    assert_eq!(p[0].data.as_deref(), Some(r#"{"put":{"vip":"2.2.2.2"}}"#));
    let patched = apply_patch(
        &serde_json::to_vec(&state).unwrap(),
        p[0].data.as_deref().unwrap().as_bytes(),
    )
    .unwrap();
    state = serde_json::from_value(patched).unwrap();
    let get: BTreeMap<String, Value> =
        serde_json::from_slice(&h.get("/v2/configwatcher").body).unwrap();
    assert_eq!(state, get);
}

#[test]
fn an_unknowable_resume_gets_a_fresh_init() {
    let window = HistoryWindow {
        min_age: std::time::Duration::ZERO,
        min_revisions: 0,
        max_entries: 1,
    };
    let config = EngineConfig {
        history: window,
        ..golden_config()
    };
    let mut h = Harness::new(lainlet_fixtures::original(), config);
    let s = watch_with(&mut h, "/v2/configwatcher?target=vip&watch=1&rev=1", None).unwrap();
    let last = frames(&mut h, s)[0].id.unwrap();
    h.engine.handle_disconnect(s);
    for i in 0..3 {
        h.apply(&[Change::Put {
            key: keys::config(&format!("k{i}")),
            value: b"v".to_vec(),
        }]);
    }
    for (why, id) in [
        ("older than the history", last.to_string()),
        ("in the future", (h.store.revision + 10).to_string()),
    ] {
        let s = watch_with(
            &mut h,
            "/v2/configwatcher?target=vip&watch=1&rev=1",
            Some(&id),
        )
        .unwrap();
        let f = frames(&mut h, s);
        assert_eq!(f[0].event, "init", "{why}");
        assert_eq!(f[0].id, Some(h.store.revision as u64), "{why}");
    }
}

#[test]
fn garbage_stream_parameters_and_diffs_of_arrays_are_clear_400s() {
    let mut h = Harness::golden();
    let answer = |h: &mut Harness, url: &str, id: Option<&str>| match watch_with(h, url, id) {
        Err(r) => (r.status, String::from_utf8(r.body.to_vec()).unwrap()),
        Ok(_) => (200, String::new()),
    };
    for url in [
        "/v2/configwatcher?watch=1&rev=maybe",
        "/v2/configwatcher?watch=1&diff=2",
        "/v2/configwatcher?watch=1&since=-4",
    ] {
        let (status, body) = answer(&mut h, url, None);
        assert_eq!(status, 400, "{url}");
        assert!(
            body.starts_with("invalid value for parameter"),
            "{url}: {body}"
        );
    }
    let (status, body) = answer(&mut h, "/v2/configwatcher?watch=1&rev=1", Some("x1"));
    assert_eq!(status, 400);
    assert!(body.contains("Last-Event-ID"), "{body}");
    for path in ["/v2/procwatcher?appname=hello", "/v2/streamrouter/ports"] {
        let (status, body) = answer(
            &mut h,
            &format!("{path}&watch=1&diff=1").replacen('&', "?", usize::from(!path.contains('?'))),
            None,
        );
        assert_eq!(status, 400, "{path}");
        assert!(body.contains("returns an array"), "{body}");
    }
}

#[test]
fn a_change_while_a_resume_patch_waits_is_merged_into_it() {
    let mut h = Harness::golden();
    let s = watch_with(&mut h, "/v2/configwatcher?watch=1&diff=1", None).unwrap();
    let init = frames(&mut h, s);
    let last = init[0].id.unwrap().to_string();
    let mut state = init[0].data.clone().unwrap().into_bytes();
    h.engine.handle_disconnect(s);
    put_vip(&mut h, "1.1.1.1");
    // The client resumes; before it reads, another member changes.
    let s = watch_with(&mut h, "/v2/configwatcher?watch=1&diff=1", Some(&last)).unwrap();
    h.apply(&[Change::Put {
        key: keys::config("domain"),
        value: b"lain.example".to_vec(),
    }]);
    let p = frames(&mut h, s);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].data.as_deref(),
        Some(r#"{"put":{"domain":"lain.example","vip":"1.1.1.1"}}"#)
    );
    state =
        serde_json::to_vec(&apply_patch(&state, p[0].data.as_deref().unwrap().as_bytes()).unwrap())
            .unwrap();
    let get: Value = serde_json::from_slice(&h.get("/v2/configwatcher").body).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&state).unwrap(), get);
}
