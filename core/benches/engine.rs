//! Core benchmarks (`cargo bench -p lainlet-core`): the cost of keeping up with etcd and of
//! serving views, without any IO. Results and how to read them: BENCHMARKS.md.
//!
//! * `apply_*`  — applying realistic pod-group watch events (deployd-size values, ~4–9 KB) on a
//!   1,000-app cluster, next to the floor: parsing the same bytes with serde_json alone.
//! * `render_*` — rendering one view of that cluster (what one change costs per distinct view).
//! * `snapshot_load_10k` — loading a 10,000-pod-group dump.
//! * `fan_out_10k` — one change delivered to 10,000 watchers of the same view.
//! * `drift_check_10k` — one drift check (a keys-and-revisions listing compared) at 10,000
//!   pod groups.
// Plays the shell: reads the clock the core may not (core/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use lainlet_core::{
    Engine, EngineConfig, KeyValue, Method, Reply, Request, RequestContext, WatchEvent,
};
use lainlet_fixtures::{generated, ClusterShape, Dump};

fn main() {
    divan::main();
}

/// The 1,000-app cluster (3,000 pod groups).
fn cluster() -> &'static Dump {
    static DUMP: OnceLock<Dump> = OnceLock::new();
    DUMP.get_or_init(|| generated(&ClusterShape::large(1_000)))
}

/// One changed value per pod group: every container IP moved to another subnet, as when
/// deployd reschedules (the bytes differ, so each event really decodes).
fn pod_group_events() -> &'static [WatchEvent] {
    static EVENTS: OnceLock<Vec<WatchEvent>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let dump = cluster();
        dump.kvs
            .iter()
            .filter(|kv| kv.key.starts_with("/lain/deployd/pod_groups/"))
            .enumerate()
            .map(|(i, kv)| {
                let text = String::from_utf8(kv.value.clone())
                    .unwrap()
                    .replace("\"ContainerIp\":\"172.", "\"ContainerIp\":\"10.");
                WatchEvent::Put(KeyValue {
                    key: kv.key.clone(),
                    value: text.into_bytes(),
                    mod_revision: dump.revision + 1 + i as i64,
                })
            })
            .collect()
    })
}

/// The first `n` app names of the cluster.
fn apps(n: usize) -> Vec<String> {
    let mut names: Vec<String> = cluster()
        .kvs
        .iter()
        .filter_map(|kv| kv.key.strip_prefix("/lain/deployd/pod_groups/"))
        .filter_map(|rest| rest.split('/').next())
        .map(str::to_owned)
        .collect();
    names.dedup();
    names.truncate(n);
    names
}

fn event_bytes(events: &[WatchEvent]) -> usize {
    events
        .iter()
        .map(|e| match e {
            WatchEvent::Put(kv) => kv.value.len(),
            _ => 0,
        })
        .sum()
}

fn loaded_engine() -> Engine {
    let mut engine = Engine::new(EngineConfig {
        node_ip: "192.168.77.21".into(),
        hostname: "node1".into(),
        ..EngineConfig::default()
    });
    engine.handle_snapshot(Instant::now(), cluster().snapshot());
    engine
}

fn ctx() -> RequestContext {
    RequestContext {
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        now: Instant::now(),
        wall: SystemTime::now(),
        connections: 1,
    }
}

fn open_watch(engine: &mut Engine, path: &str) {
    match engine.handle_request(&Request::new(Method::Get, path), &ctx()) {
        Reply::Stream(id) => while engine.poll_frame(id).is_some() {},
        Reply::Response(r) => panic!("{path}: {}", r.status),
    }
}

/// The floor: parse every event value with serde_json into a `Value` tree.
#[divan::bench]
fn apply_floor_serde_json_value(bencher: Bencher) {
    let events = pod_group_events();
    bencher
        .counter(BytesCount::new(event_bytes(events)))
        .counter(ItemsCount::new(events.len()))
        .bench(|| {
            for e in events {
                if let WatchEvent::Put(kv) = e {
                    divan::black_box(
                        serde_json::from_slice::<serde_json::Value>(&kv.value).unwrap(),
                    );
                }
            }
        });
}

/// The floor without building anything: serde_json validating the same bytes.
#[divan::bench]
fn apply_floor_serde_json_ignored(bencher: Bencher) {
    let events = pod_group_events();
    bencher
        .counter(BytesCount::new(event_bytes(events)))
        .counter(ItemsCount::new(events.len()))
        .bench(|| {
            for e in events {
                if let WatchEvent::Put(kv) = e {
                    divan::black_box(
                        serde_json::from_slice::<serde::de::IgnoredAny>(&kv.value).unwrap(),
                    );
                }
            }
        });
}

/// Applying the events, one watch response each, with nobody watching.
#[divan::bench(sample_count = 10)]
fn apply_events_no_watchers(bencher: Bencher) {
    let events = pod_group_events();
    bencher
        .counter(BytesCount::new(event_bytes(events)))
        .counter(ItemsCount::new(events.len()))
        .with_inputs(|| (loaded_engine(), events.to_vec()))
        .bench_local_values(|(mut engine, events)| {
            for e in events {
                engine.handle_events(Instant::now(), [e]);
            }
            engine
        });
}

/// Applying the events with a node's typical watchers: webrouter (all), one proxy view per app
/// of 100 apps, this node's containers, rebellion, and the config.
#[divan::bench(sample_count = 10)]
fn apply_events_typical_watchers(bencher: Bencher) {
    let events = pod_group_events();
    bencher
        .counter(BytesCount::new(event_bytes(events)))
        .counter(ItemsCount::new(events.len()))
        .with_inputs(|| {
            let mut engine = loaded_engine();
            for path in [
                "/v2/webrouter/webprocs?watch=1",
                "/v2/containers?nodename=node1&watch=1",
                "/v2/rebellion/localprocs?watch=1",
                "/v2/configwatcher?watch=1",
            ] {
                open_watch(&mut engine, path);
            }
            for app in apps(100) {
                open_watch(
                    &mut engine,
                    &format!("/v2/proxywatcher?appname={app}&watch=1"),
                );
            }
            (engine, events.to_vec())
        })
        .bench_local_values(|(mut engine, events)| {
            for e in events {
                engine.handle_events(Instant::now(), [e]);
                while let Some(id) = engine.poll_wakeup() {
                    while engine.poll_frame(id).is_some() {}
                }
            }
            engine
        });
}

fn render_bench(bencher: Bencher, path: &str) {
    let mut engine = loaded_engine();
    let request = Request::new(Method::Get, path);
    // An event between renders invalidates the cached view each time.
    let events = pod_group_events();
    let mut i = 0;
    bencher.bench_local(|| {
        engine.handle_events(Instant::now(), [events[i % events.len()].clone()]);
        i += 1;
        match engine.handle_request(&request, &ctx()) {
            Reply::Response(r) => divan::black_box(r.body.len()),
            Reply::Stream(_) => unreachable!(),
        }
    });
}

/// Rendering `/v2/coreinfowatcher` for all 3,000 pod groups (plus applying one event).
#[divan::bench(sample_count = 20)]
fn render_coreinfo_all(bencher: Bencher) {
    render_bench(bencher, "/v2/coreinfowatcher");
}

/// Rendering `/v2/webrouter/webprocs` for all apps (plus applying one event).
#[divan::bench(sample_count = 20)]
fn render_webprocs_all(bencher: Bencher) {
    render_bench(bencher, "/v2/webrouter/webprocs");
}

/// Rendering `/v2/containers` for all nodes (plus applying one event).
#[divan::bench(sample_count = 20)]
fn render_containers_all(bencher: Bencher) {
    render_bench(bencher, "/v2/containers");
}

/// A GET of a small view that is cached (nothing changed): the engine's share of GET cost.
#[divan::bench]
fn get_cached_small_view(bencher: Bencher) {
    let mut engine = loaded_engine();
    let path = format!("/v2/proxywatcher?appname={}", apps(1)[0]);
    let request = Request::new(Method::Get, &path);
    let ctx = ctx();
    bencher.bench_local(|| match engine.handle_request(&request, &ctx) {
        Reply::Response(r) => divan::black_box(r.body.len()),
        Reply::Stream(_) => unreachable!(),
    });
}

/// Loading a 10,000-pod-group dump (~110 MB of deployd values) as the first snapshot.
#[divan::bench(sample_count = 3)]
fn snapshot_load_10k(bencher: Bencher) {
    let dump = generated(&ClusterShape {
        pod_groups: 10_000,
        ..ClusterShape::large(1_000)
    });
    let bytes: usize = dump.kvs.iter().map(|kv| kv.value.len()).sum();
    bencher
        .counter(BytesCount::new(bytes))
        .with_inputs(|| dump.snapshot())
        .bench_local_values(|snap| {
            let mut engine = Engine::new(EngineConfig::default());
            engine.handle_snapshot(Instant::now(), snap);
            engine
        });
}

/// One change delivered to 10,000 watchers of the same view: render once, then one shared
/// frame per watcher.
#[divan::bench(sample_count = 20)]
fn fan_out_10k(bencher: Bencher) {
    let mut engine = loaded_engine();
    let app = apps(1).remove(0);
    for _ in 0..10_000 {
        open_watch(
            &mut engine,
            &format!("/v2/proxywatcher?appname={app}&watch=1"),
        );
    }
    let prefix = format!("/lain/deployd/pod_groups/{app}/");
    let key = cluster()
        .kvs
        .iter()
        .find(|kv| kv.key.starts_with(&prefix))
        .unwrap()
        .clone();
    let mut revision = cluster().revision + 10_000;
    bencher
        .counter(ItemsCount::new(10_000usize))
        .bench_local(|| {
            revision += 1;
            let ip = format!("\"ContainerIp\":\"10.{}.", revision % 200);
            let value = String::from_utf8(key.value.clone())
                .unwrap()
                .replace("\"ContainerIp\":\"172.", &ip);
            engine.handle_events(
                Instant::now(),
                [WatchEvent::Put(KeyValue {
                    key: key.key.clone(),
                    value: value.into_bytes(),
                    mod_revision: revision,
                })],
            );
            let mut frames = 0;
            while let Some(id) = engine.poll_wakeup() {
                while engine.poll_frame(id).is_some() {
                    frames += 1;
                }
            }
            divan::black_box(frames)
        });
}

/// One drift check at 10,000 pod groups: comparing a listing of every key and revision (what
/// etcd answers to a keys-only range) with the mirror. No drift, so nothing is re-read.
#[divan::bench(sample_count = 10)]
fn drift_check_10k(bencher: Bencher) {
    let dump = generated(&ClusterShape {
        pod_groups: 10_000,
        ..ClusterShape::large(1_000)
    });
    let mut engine = Engine::new(EngineConfig::default());
    engine.handle_snapshot(Instant::now(), dump.snapshot());
    let listing = lainlet_core::KeyListing {
        revision: dump.revision,
        keys: dump
            .kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.mod_revision))
            .collect(),
    };
    bencher
        .counter(ItemsCount::new(listing.keys.len()))
        .with_inputs(|| Ok(listing.clone()))
        .bench_local_values(|listing| {
            let outcome = engine.handle_key_listing(Instant::now(), listing);
            assert!(
                matches!(outcome, lainlet_core::DriftOutcome::Consistent { .. }),
                "{outcome:?}"
            );
        });
}
