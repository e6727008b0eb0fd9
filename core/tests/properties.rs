//! Property tests (proptest) over random sequences of etcd puts, deletes, v2 directory deletes,
//! replayed responses and resyncs on realistic keys:
//! 1. every view maintained incrementally equals the view of an engine loaded from scratch
//!    with the final state;
//! 2. every watcher's last delivered frame equals a GET of the final state, however rarely it
//!    read its stream (conflation never leaves it stale);
//! 3. no input — odd keys, arbitrary bytes, arbitrary requests — makes the engine panic.
// Plays the shell: reads the clock the core may not (core/clippy.toml).
#![allow(clippy::disallowed_methods)]

mod support;

use std::net::IpAddr;

use lainlet_core::{Engine, EventName, KeyValue, Method, Request, WatchEvent};
use lainlet_fixtures::Change;
use proptest::prelude::*;
use support::{apply_to_dump, event, golden_config, key_pool, localhost, parts, Harness};

/// The requests compared between engines and watched.
const PATHS: &[&str] = &[
    "/v2/configwatcher",
    "/v2/configwatcher?target=vip",
    "/v2/configwatcher?target=vips",
    "/v2/procwatcher?appname=hello",
    "/v2/coreinfowatcher",
    "/v2/coreinfowatcher?appname=hello",
    "/v2/proxywatcher",
    "/v2/proxywatcher?appname=hello-service",
    "/v2/webrouter/webprocs",
    "/v2/webrouter/webprocs?appname=hello2",
    "/v2/streamrouter/streamprocs",
    "/v2/streamrouter/ports",
    "/v2/rebellion/localprocs",
    "/v2/backupspec?appname=hello",
    "/v2/containers",
    "/v2/containers?nodename=node1",
    "/v2/containers?nodename=192.168.77.22",
    "/v2/depends",
    "/v2/nodes",
    "/v2/nodes?name=node1",
    "/v2/appswatcher",
];

const GET_ONLY: &[&str] = &[
    "/v2/localspecquery?nodeip=node2",
    "/appname?ip=172.20.0.1",
    "/appname?ip=172.20.9.9",
];

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: usize,
        value: usize,
    },
    Delete {
        key: usize,
    },
    /// A v2 directory delete: a parent directory of a pool key, everything below it.
    DeleteDir {
        key: usize,
        depth: usize,
    },
    ReplayLast,
    Resync,
    Drain {
        watcher: usize,
    },
    GetAll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<usize>(), any::<usize>()).prop_map(|(key, value)| Op::Put { key, value }),
        2 => any::<usize>().prop_map(|key| Op::Delete { key }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(key, depth)| Op::DeleteDir { key, depth }),
        1 => Just(Op::ReplayLast),
        1 => Just(Op::Resync),
        3 => any::<usize>().prop_map(|watcher| Op::Drain { watcher }),
        1 => Just(Op::GetAll),
    ]
}

fn get_all(h: &mut Harness) -> Vec<(u16, Vec<u8>)> {
    PATHS
        .iter()
        .chain(GET_ONLY)
        .map(|p| {
            let r = h.get(p);
            (r.status, r.body.to_vec())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn incremental_views_equal_views_from_scratch_and_watchers_end_at_the_final_get(
        initial in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..12),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let pool = key_pool();
        let writes = initial.iter().map(|(k, v)| {
            let (key, values) = &pool[k % pool.len()];
            (key.clone(), values[v % values.len()].clone())
        });
        let mut h = Harness::new(lainlet_fixtures::Dump::from_writes(2, writes), golden_config());
        let mut watchers: Vec<(usize, lainlet_core::SubscriberId)> =
            PATHS.iter().enumerate().map(|(i, p)| (i, h.watch(&format!("{p}{}watch=1", if p.contains('?') { '&' } else { '?' })))).collect();
        let mut last_frames: Vec<Option<(u64, String, Option<String>)>> = vec![None; PATHS.len()];
        let mut last_batch: Option<WatchEvent> = None;

        let mut closed = vec![false; watchers.len()];
        // Reads a watcher's stream like a client: after an error closes it, reconnect (once per
        // read; a view that is still failing closes the new stream again).
        let mut drain = |h: &mut Harness, watchers: &mut Vec<(usize, lainlet_core::SubscriberId)>, last: &mut Vec<Option<(u64, String, Option<String>)>>, w: usize| {
            let path_idx = watchers[w].0;
            for _ in 0..2 {
                if closed[w] {
                    let path = PATHS[path_idx];
                    watchers[w].1 = h.watch(&format!("{path}{}watch=1", if path.contains('?') { '&' } else { '?' }));
                    closed[w] = false;
                }
                for frame in h.drain(watchers[w].1) {
                    closed[w] |= frame.close;
                    last[path_idx] = Some(parts(&frame));
                }
                if !closed[w] {
                    break;
                }
            }
        };

        for op in ops {
            match op {
                Op::Put { key, value } => {
                    let (key, values) = &pool[key % pool.len()];
                    let change = Change::Put { key: key.clone(), value: values[value % values.len()].clone() };
                    let revision = h.store.revision + 1;
                    h.store = apply_to_dump(&h.store, &change, revision);
                    let ev = event(&change, revision);
                    h.engine.handle_events(h.now, [ev.clone()]);
                    last_batch = Some(ev);
                }
                Op::Delete { key } => {
                    let key = &pool[key % pool.len()].0;
                    let change = Change::Delete { key: key.clone() };
                    let revision = h.store.revision + 1;
                    h.store = apply_to_dump(&h.store, &change, revision);
                    let ev = event(&change, revision);
                    h.engine.handle_events(h.now, [ev.clone()]);
                    last_batch = Some(ev);
                }
                Op::DeleteDir { key, depth } => {
                    // `/lain`, `/lain/deployd`, … up to the key's own directory.
                    let key = &pool[key % pool.len()].0;
                    let dirs: Vec<&str> = key.match_indices('/').skip(1).map(|(i, _)| &key[..i]).collect();
                    let dir = dirs[depth % dirs.len()].to_owned();
                    let revision = h.store.revision + 1;
                    let below = format!("{dir}/");
                    h.store.kvs.retain(|kv| !kv.key.starts_with(&below));
                    h.store.revision = revision;
                    let ev = WatchEvent::DeleteDir { key: dir, mod_revision: revision };
                    h.engine.handle_events(h.now, [ev.clone()]);
                    last_batch = Some(ev);
                }
                Op::ReplayLast => {
                    if let Some(ev) = last_batch.clone() {
                        h.engine.handle_events(h.now, [ev]);
                    }
                }
                Op::Resync => h.resync(),
                Op::Drain { watcher } => drain(&mut h, &mut watchers, &mut last_frames, watcher % PATHS.len()),
                Op::GetAll => { get_all(&mut h); }
            }
        }

        // (1) incremental == from scratch
        let mut scratch = Harness::new(h.store.clone(), golden_config());
        let ours = get_all(&mut h);
        let expected = get_all(&mut scratch);
        for ((path, a), b) in PATHS.iter().chain(GET_ONLY).zip(&ours).zip(&expected) {
            prop_assert_eq!(a, b, "{}", path);
        }

        // (2) every watcher's last frame is the final state
        for w in 0..watchers.len() {
            drain(&mut h, &mut watchers, &mut last_frames, w);
        }
        for (i, path) in PATHS.iter().enumerate() {
            let (status, body) = &ours[i];
            let (_, event, data) = last_frames[i].clone().expect("every watch has delivered a frame");
            let body = String::from_utf8(body.clone()).unwrap();
            if event == EventName::Error.as_str() {
                prop_assert_eq!(*status, 500, "{}: stream ended in error but GET succeeds", path);
            } else {
                prop_assert_eq!(*status, 200, "{}", path);
            }
            prop_assert_eq!(data.as_deref(), Some(body.as_str()), "{}: last frame vs GET", path);
        }
    }

    #[test]
    fn no_input_makes_the_engine_panic(
        kvs in proptest::collection::vec((0usize..6, "[a-z0-9./:*-]{0,20}", proptest::collection::vec(any::<u8>(), 0..64)), 0..20),
        json_values in proptest::collection::vec((0usize..4, "[a-z]{1,5}/[a-z.]{1,12}", json_like()), 0..10),
        requests in proptest::collection::vec(("\\PC{0,40}", "\\PC{0,60}", any::<[u8; 4]>()), 0..20),
    ) {
        const PREFIXES: [&str; 6] = ["/lain/config/", "/lain/deployd/pod_groups/", "/lain/deployd/depends/pods/", "/lain/nodes/nodes/", "/lain/", "/other/"];
        let mut engine = Engine::new(golden_config());
        let now = std::time::Instant::now();
        let mut revision = 1;
        let mut kv = |prefix: &str, key: &str, value: Vec<u8>| {
            revision += 1;
            KeyValue { key: format!("{prefix}{key}"), value, mod_revision: revision }
        };
        let first: Vec<KeyValue> = kvs.iter().take(5).map(|(p, k, v)| kv(PREFIXES[*p], k, v.clone())).collect();
        let mut events: Vec<WatchEvent> = kvs.iter().skip(5).map(|(p, k, v)| WatchEvent::Put(kv(PREFIXES[*p], k, v.clone()))).collect();
        events.extend(json_values.iter().map(|(p, k, v)| WatchEvent::Put(kv(PREFIXES[*p], k, v.clone().into_bytes()))));
        engine.handle_snapshot(now, lainlet_core::Snapshot { revision: 5, kvs: first });
        let watch = engine.handle_request(&Request::new(Method::Get, "/v2/coreinfowatcher?watch=1&heartbeat=1"), &ctx(localhost(), now));
        engine.handle_events(now, events);
        for (path, query, peer) in &requests {
            let target = format!("{path}?{query}");
            let peer = IpAddr::from(*peer);
            let _ = engine.handle_request(&Request::new(Method::Get, &target), &ctx(peer, now));
            let _ = engine.handle_request(&Request::new(Method::Get, &format!("/v2/{path}?{query}")), &ctx(peer, now));
        }
        engine.handle_timeout(now + std::time::Duration::from_secs(3600));
        while let Some(id) = engine.poll_wakeup() {
            while engine.poll_frame(id).is_some() {}
        }
        prop_assert!(matches!(watch, lainlet_core::Reply::Stream(_)));
        prop_assert!(engine.is_ready());
    }
}

fn ctx(peer: IpAddr, now: std::time::Instant) -> lainlet_core::RequestContext {
    lainlet_core::RequestContext {
        peer,
        now,
        wall: std::time::SystemTime::UNIX_EPOCH,
        connections: 1,
    }
}

/// JSON-ish text: real JSON shapes of the right and wrong types, to reach deep decoding paths.
fn json_like() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("5".to_owned()),
        Just("\"s\"".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("1e400".to_owned()),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("Spec"),
                        Just("Pods"),
                        Just("Pod"),
                        Just("Containers"),
                        Just("Name"),
                        Just("Annotation"),
                        Just("InstanceNo"),
                        Just("Runtime"),
                        Just("Config"),
                        Just("Env"),
                        Just("node1"),
                        Just("hello")
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|v| format!(
                "{{{}}}",
                v.iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        ]
    })
}
