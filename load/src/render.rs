//! The exact bytes lainlet would send, rendered with lainlet's own engine (`lainlet-core`, pure:
//! no IO) before anything is timed: the floors ([`crate::floor`], [`crate::get_floor`]) then
//! write these pre-rendered bytes, so they send the same sizes, ids and sequence markers as
//! lainlet does for the same scenario and view, and the clients measure them unchanged.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Instant, SystemTime};

use anyhow::{anyhow, bail};
use lainlet_core::{
    Engine, EngineConfig, KeyValue, Method, Reply, Request, RequestContext, Response, Snapshot,
    SubscriberId, WatchEvent,
};

/// The host name the tool gives the lainlets it starts (`--hostname`), so views that depend
/// on it render the same.
pub const HOSTNAME: &str = "node1";

fn engine() -> Engine {
    Engine::new(EngineConfig {
        hostname: HOSTNAME.into(),
        ..EngineConfig::default()
    })
}

fn context() -> RequestContext {
    RequestContext {
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        now: Instant::now(),
        wall: SystemTime::now(),
        connections: 1,
    }
}

/// One watch of one view, followed change by change: the SSE frames lainlet writes to a
/// watcher of `path` (after [`lainlet_core::SSE_HEAD`]) when `key` takes each value.
pub struct Frames {
    engine: Engine,
    id: SubscriberId,
    key: String,
    revision: i64,
}

impl Frames {
    /// Loads `key` = `first` (at revision 1) and opens a watch of `path` (`…&watch=1`).
    /// Returns the frames and the `init` frame.
    pub fn open(path: &str, key: &str, first: Vec<u8>) -> anyhow::Result<(Frames, Vec<u8>)> {
        let mut engine = engine();
        let kv = KeyValue {
            key: key.into(),
            value: first,
            mod_revision: 1,
        };
        engine.handle_snapshot(
            Instant::now(),
            Snapshot {
                revision: 1,
                kvs: vec![kv],
            },
        );
        let id = match engine.handle_request(&Request::new(Method::Get, path), &context()) {
            Reply::Stream(id) => id,
            Reply::Response(r) => bail!(
                "{path} is not a watch here: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
        };
        let init = engine
            .poll_frame(id)
            .ok_or_else(|| anyhow!("{path}: no init frame"))?;
        let frames = Frames {
            engine,
            id,
            key: key.into(),
            revision: 1,
        };
        Ok((frames, init.to_bytes()))
    }

    /// The frame a watcher gets when the key takes `value` (the newest if the engine gives
    /// several); an error if the view does not change (the path does not show the key).
    pub fn next(&mut self, value: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        self.revision += 1;
        let event = WatchEvent::Put(KeyValue {
            key: self.key.clone(),
            value,
            mod_revision: self.revision,
        });
        self.engine.handle_events(Instant::now(), [event]);
        let mut last = None;
        for _ in 0..16 {
            match self.engine.poll_frame(self.id) {
                Some(f) => last = Some(f),
                None => break,
            }
        }
        let frame = last.ok_or_else(|| {
            anyhow!(
                "a change of {} gives no frame: does the endpoint show the key?",
                self.key
            )
        })?;
        Ok(frame.to_bytes())
    }
}

/// lainlet's answer to a plain `GET path` as a loopback caller, with the built-in demo data
/// (`lainlet --demo`).
pub fn demo_get(path: &str) -> Response {
    let mut engine = engine();
    let dump = lainlet_fixtures::demo();
    let snapshot = Snapshot::from(dump);
    engine.handle_demo(Instant::now(), snapshot);
    match engine.handle_request(&Request::new(Method::Get, path), &context()) {
        Reply::Response(r) => r,
        Reply::Stream(_) => Response::text(400, "a watch, not a plain GET"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::find_seq;

    #[test]
    fn frames_carry_each_values_sequence_number() {
        let path = "/v2/configwatcher?target=load/stamp&watch=1";
        let key = "/lain/config/load/stamp";
        let (mut frames, init) = Frames::open(path, key, b"LOADSEQ0000000001".to_vec()).unwrap();
        assert!(init.starts_with(b"id: 1\nevent: init\ndata: "), "{init:?}");
        assert_eq!(find_seq(&init), Some(1));
        let next = frames.next(b"LOADSEQ0000000002".to_vec()).unwrap();
        assert!(next.starts_with(b"id: 2\nevent: update\n"));
        assert_eq!(find_seq(&next), Some(2));
        assert!(next.ends_with(b"\n\n"));
    }

    #[test]
    fn a_path_that_does_not_show_the_key_is_an_error() {
        let path = "/v2/configwatcher?target=other&watch=1";
        let key = "/lain/config/load/stamp";
        let (mut frames, _) = Frames::open(path, key, b"LOADSEQ1".to_vec()).unwrap();
        assert!(frames.next(b"LOADSEQ2".to_vec()).is_err());
        assert!(Frames::open("/v2/nope?watch=1", key, b"x".to_vec()).is_err());
    }

    #[test]
    fn the_demo_answers_the_small_view() {
        let r = demo_get("/v2/configwatcher?target=vip");
        assert_eq!(r.status, 200);
        assert!(!r.body.is_empty());
        assert_eq!(demo_get("/v2/nope").status, 404);
    }
}
