//! Test support: drive an engine in memory from fixture dumps, as a shell would.
// Plays the shell: reads the clock the core may not (core/clippy.toml).
#![allow(dead_code, clippy::disallowed_methods)]

pub mod client;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use lainlet_core::{
    BackfillOutcome, Engine, EngineConfig, EtcdCheck, EtcdStep, Frame, KeyListing, KeyValue,
    Method, Reply, Request, RequestContext, Response, Snapshot, SubscriberId, WatchEvent,
};
use lainlet_fixtures::{
    keys, node_value, pod_group_value, stream_annotation, web_annotation, Change, ContainerParams,
    ContainerSpecParams, Dump, PodGroupParams, PodParams, StreamPort,
};

/// The settings the original's goldens were recorded with.
pub fn golden_config() -> EngineConfig {
    EngineConfig {
        node_ip: "192.168.77.21".into(),
        hostname: "node1".into(),
        ..EngineConfig::default()
    }
}

pub fn snapshot(dump: &Dump) -> Snapshot {
    dump.snapshot()
}

/// Converts a scripted change into a watch event at `revision`.
pub fn event(change: &Change, revision: i64) -> WatchEvent {
    change.event(revision)
}

/// An engine, its clock, and the store it mirrors (to produce resync snapshots).
pub struct Harness {
    pub engine: Engine,
    pub now: Instant,
    pub store: Dump,
}

impl Harness {
    pub fn new(dump: Dump, config: EngineConfig) -> Self {
        let now = Instant::now();
        let mut engine = Engine::new(config);
        engine.handle_snapshot(now, snapshot(&dump));
        Harness {
            engine,
            now,
            store: dump,
        }
    }

    pub fn golden() -> Self {
        Harness::new(lainlet_fixtures::original(), golden_config())
    }

    pub fn ctx(&self, peer: IpAddr) -> RequestContext {
        RequestContext {
            peer,
            now: self.now,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            connections: 1,
        }
    }

    /// A GET from `peer`.
    pub fn get_from(&mut self, peer: IpAddr, path: &str) -> Response {
        let ctx = self.ctx(peer);
        match self
            .engine
            .handle_request(&Request::new(Method::Get, path), &ctx)
        {
            Reply::Response(r) => r,
            Reply::Stream(id) => panic!("GET {path} opened a stream {id:?}"),
        }
    }

    /// A GET from 127.0.0.1.
    pub fn get(&mut self, path: &str) -> Response {
        self.get_from(localhost(), path)
    }

    /// Opens a watch from `peer`.
    pub fn watch_from(&mut self, peer: IpAddr, path: &str) -> SubscriberId {
        let ctx = self.ctx(peer);
        match self
            .engine
            .handle_request(&Request::new(Method::Get, path), &ctx)
        {
            Reply::Stream(id) => id,
            Reply::Response(r) => panic!("watch {path} answered {r:?}"),
        }
    }

    pub fn watch(&mut self, path: &str) -> SubscriberId {
        self.watch_from(localhost(), path)
    }

    /// Every frame the watch has to write now.
    pub fn drain(&mut self, id: SubscriberId) -> Vec<Frame> {
        std::iter::from_fn(|| self.engine.poll_frame(id)).collect()
    }

    /// Applies changes as one watch response each, at the next revisions.
    pub fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            let revision = self.store.revision + 1;
            self.store = apply_to_dump(&self.store, change, revision);
            self.engine
                .handle_events(self.now, [event(change, revision)]);
        }
    }

    /// Re-reads the store as after a broken watch.
    pub fn resync(&mut self) {
        self.engine.handle_snapshot(self.now, snapshot(&self.store));
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.engine.handle_timeout(self.now);
    }
}

/// The dump after applying `change` at `revision`.
pub fn apply_to_dump(dump: &Dump, change: &Change, revision: i64) -> Dump {
    let mut kvs: Vec<_> = dump
        .kvs
        .iter()
        .filter(|kv| kv.key != change.key())
        .cloned()
        .collect();
    if let Change::Put { key, value } = change {
        kvs.push(KeyValue {
            key: key.clone(),
            value: value.clone(),
            mod_revision: revision,
        });
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
    }
    Dump { revision, kvs }
}

pub fn localhost() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A frame as (id, event, data) for readable assertions.
pub fn parts(frame: &Frame) -> (u64, String, Option<String>) {
    let body = String::from_utf8(frame.body.to_vec()).unwrap();
    let mut event = String::new();
    let mut data = None;
    for line in body.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            data = Some(d.to_owned());
        }
    }
    (frame.id.unwrap_or(0), event, data)
}

/// Keys with several values each; the values of a key always decode.
pub fn key_pool() -> Vec<(String, Vec<Vec<u8>>)> {
    let mut pool = Vec::new();
    let apps = [
        ("hello", "hello.web.web", "web"),
        ("hello", "hello.worker.cron", "worker"),
        ("hello-service", "hello-service.worker.hello", "worker"),
        ("hello2", "hello2.web.web", "web"),
        ("redis", "redis.worker.redis", "stream"),
    ];
    for (a, (ns, name, kind)) in apps.iter().enumerate() {
        let variants = (0..4)
            .map(|variant| {
                let annotation = match *kind {
                    "web" => {
                        web_annotation(&[&format!("{ns}.lain.local")], Some(false), Some("/ping"))
                    }
                    "stream" => stream_annotation(&[StreamPort {
                        srcport: 9501,
                        dstport: 6379,
                        proto: "tcp".into(),
                    }]),
                    _ => "{}".to_owned(),
                };
                let pods = (0..variant)
                    .map(|i| PodParams {
                        instance_no: i as i64 + 1,
                        containers: vec![ContainerParams {
                            id: format!("{a}{i}").repeat(32)[..64].to_owned(),
                            node_name: format!("node{}", i % 2 + 1),
                            node_ip: format!("192.168.77.{}", 21 + i % 2),
                            // the last variant loses an IP (webrouter dead-container rule)
                            container_ip: if variant == 3 && i > 0 {
                                String::new()
                            } else {
                                format!("172.20.{a}.{i}")
                            },
                        }],
                    })
                    .collect();
                let release = format!("release-{variant}");
                let proc_name = name.rsplit('.').next().unwrap();
                pod_group_value(&PodGroupParams {
                    name: (*name).into(),
                    namespace: (*ns).into(),
                    version: variant as i64,
                    annotation,
                    dependencies: vec![],
                    containers: vec![ContainerSpecParams::lain(
                        ns,
                        &release,
                        proc_name,
                        &["./run"],
                        8080,
                    )],
                    pods,
                })
            })
            .collect();
        pool.push((keys::pod_group(ns, name), variants));
    }
    for (path, values) in [
        ("vip", vec!["192.168.77.201", "192.168.77.202"]),
        (
            "vips/192.168.77.201",
            vec![r#"{"app": "webrouter"}"#, r#"{"app": "x"}"#],
        ),
        ("domain", vec!["lain.local", "lain.example"]),
        ("domains/*.lain.local", vec![r#"{"ips":[]}"#]),
        ("super_apps/console", vec![" {}"]),
        ("super_apps/hello2", vec![" {}"]),
    ] {
        pool.push((
            keys::config(path),
            values.into_iter().map(|v| v.as_bytes().to_vec()).collect(),
        ));
    }
    for n in 1..=2 {
        let ip = format!("192.168.77.{}", 20 + n);
        let name = format!("node{n}");
        pool.push((
            keys::node(&name, &ip, 22),
            vec![
                node_value(&name, &ip, 22, "/dev/sdb"),
                node_value(&name, &ip, 22, ""),
                b"null".to_vec(),
            ],
        ));
    }
    let portal = lainlet_fixtures::original_portal();
    let mut moved = portal.clone();
    for pod in &mut moved.pods {
        pod.container.container_ip = "172.20.9.9".into();
    }
    pool.push((
        portal.key(),
        vec![
            lainlet_fixtures::depends_value(&portal),
            lainlet_fixtures::depends_value(&moved),
        ],
    ));
    // Keys whose values never decode, and a key lainlet does not read.
    pool.push((
        keys::pod_group("bad", "bad.web.web"),
        vec![br#"{"Spec": 5}"#.to_vec()],
    ));
    pool.push((
        keys::node("bad", "1.1.1.1", 22),
        vec![br#""not an object""#.to_vec()],
    ));
    pool.push((keys::depends_specs("x.portal.y"), vec![b"{}".to_vec()]));
    pool
}

/// A restarted engine, driven as a shell would: connect, read the snapshot, until it would
/// watch.
pub fn restart(config: EngineConfig, now: std::time::Instant, current: &Dump) -> Engine {
    let mut e = Engine::new(config);
    loop {
        match e.poll_etcd(now) {
            EtcdStep::Connect { .. } => e.handle_etcd_connected(now),
            EtcdStep::Probe => {
                let keys = lainlet_core::Probe::Keys;
                let _ = e.handle_store_probe(now, &keys, &keys).unwrap();
            }
            EtcdStep::ReadSnapshot { .. } => {
                let snap = snapshot(current);
                e.handle_snapshot(now, snap);
            }
            EtcdStep::Watch { start_revision, .. } => {
                assert_eq!(start_revision, current.revision + 1);
                break;
            }
            EtcdStep::Wait { .. } => panic!("no failure expected"),
            EtcdStep::ProveHistory { .. } => panic!("a fresh engine has nothing to prove"),
        }
    }
    e
}

/// Runs the listings held resumes wait for, as the shell's watch loop does, answered by
/// `list`; returns their outcomes.
pub fn serve_backfills(
    h: &mut Harness,
    mut list: impl FnMut(i64) -> Result<KeyListing, String>,
) -> Vec<BackfillOutcome> {
    let mut outcomes = Vec::new();
    loop {
        let (due, check) = h.engine.poll_etcd_check(h.now);
        match check {
            EtcdCheck::Backfill { at_revision } => {
                assert_eq!(due, h.now, "a held resume's listing is due at once");
                let listing = list(at_revision);
                outcomes.push(h.engine.handle_backfill(
                    h.now,
                    at_revision,
                    listing.map_err(Into::into),
                ));
            }
            _ => return outcomes,
        }
    }
}
