//! Test support: drive an engine in memory from fixture dumps, as a shell would.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use lainlet_core::{
    Engine, EngineConfig, Frame, KeyValue, Method, Reply, Request, RequestContext, Response,
    Snapshot, SubscriberId, WatchEvent,
};
use lainlet_fixtures::{Change, Dump};

/// The settings the original's goldens were recorded with.
pub fn golden_config() -> EngineConfig {
    EngineConfig {
        node_ip: "192.168.77.21".into(),
        hostname: "node1".into(),
        ..EngineConfig::default()
    }
}

pub fn snapshot(dump: &Dump) -> Snapshot {
    Snapshot {
        revision: dump.revision,
        kvs: dump
            .kvs
            .iter()
            .map(|kv| KeyValue {
                key: kv.key.clone(),
                value: kv.value.clone(),
                mod_revision: kv.mod_revision,
            })
            .collect(),
    }
}

/// Converts a scripted change into a watch event at `revision`.
pub fn event(change: &Change, revision: i64) -> WatchEvent {
    match change {
        Change::Put { key, value } => WatchEvent::Put(KeyValue {
            key: key.clone(),
            value: value.clone(),
            mod_revision: revision,
        }),
        Change::Delete { key } => WatchEvent::Delete {
            key: key.clone(),
            mod_revision: revision,
        },
    }
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
        kvs.push(lainlet_fixtures::Kv {
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
    (frame.id, event, data)
}
