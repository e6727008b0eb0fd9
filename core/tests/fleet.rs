//! The fleet in the engine, without IO: its keys never reach a v2 view, `/fleet` answers and
//! streams, and the heartbeat never writes in reaction to the fleet's own writes.

// These tests play the shell: they read the clock.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use lainlet_core::fleet::announcer::{AnnounceConfig, FleetStep, FleetWrite, FleetWritten};
use lainlet_core::fleet::Announcement;
use lainlet_core::{EngineConfig, EtcdApi, EtcdStep, KeyValue, Store, WatchEvent};
use serde_json::{json, Value};
use support::*;

fn announcement(node: &str, revision: i64) -> Announcement {
    Announcement {
        node: node.into(),
        ip: "127.0.0.12".into(),
        version: "0.1.0".into(),
        shell: "lainlet-smol".into(),
        store: "v3".into(),
        revision,
        lag: 0,
        watchers: 0,
        started_at: 1_700_000_000,
    }
}

/// A put of `node`'s fleet key at `revision`, announcing `announced`.
fn fleet_put(node: &str, revision: i64, announced: i64) -> WatchEvent {
    WatchEvent::Put(KeyValue {
        key: format!("/lain/lainlet/nodes/{node}"),
        value: announcement(node, announced).encode(),
        mod_revision: revision,
    })
}

fn config_put(key: &str, value: &str, revision: i64) -> WatchEvent {
    WatchEvent::Put(KeyValue {
        key: format!("/lain/config/{key}"),
        value: value.as_bytes().to_vec(),
        mod_revision: revision,
    })
}

fn body(h: &mut Harness, path: &str) -> Value {
    let r = h.get(path);
    assert_eq!(r.status, 200, "{path}: {:?}", r.body);
    serde_json::from_slice(&r.body).unwrap()
}

/// Every v2 answer a local caller can get: each endpoint of the table, and two selections.
fn v2_paths() -> Vec<String> {
    let views = lainlet_core::Endpoint::ALL
        .iter()
        .map(|e| e.path())
        .filter(|p| p.starts_with("/v2/"))
        .map(|p| match p {
            "/v2/procwatcher" => format!("{p}?appname=hello"),
            _ => p.to_owned(),
        });
    views
        .chain(["/v2/configwatcher?target=vips".to_owned()])
        .collect()
}

#[test]
fn fleet_keys_change_no_v2_answer() {
    let mut h = Harness::golden();
    let paths = v2_paths();
    let before: Vec<_> = paths.iter().map(|p| h.get(p)).collect();
    let watches: Vec<_> = paths
        .iter()
        .filter(|p| !p.starts_with("/v2/localspecquery"))
        .map(|p| {
            h.watch(&format!(
                "{p}{}watch=1",
                if p.contains('?') { "&" } else { "?" }
            ))
        })
        .collect();
    for &id in &watches {
        assert!(!h.drain(id).is_empty(), "each watch starts with its state");
    }
    let mut revision = h.store.revision;
    for node in ["node1", "node2", "node3"] {
        revision += 1;
        h.engine
            .handle_events(h.now, [fleet_put(node, revision, revision)]);
    }
    revision += 1;
    h.engine.handle_events(
        h.now,
        [WatchEvent::DeleteDir {
            key: "/lain/lainlet".into(),
            mod_revision: revision,
        }],
    );
    let after: Vec<_> = paths.iter().map(|p| h.get(p)).collect();
    assert_eq!(before, after);
    for &id in &watches {
        assert_eq!(h.drain(id), [], "no v2 watch hears of the fleet");
    }
    assert_eq!(
        h.engine.applied_revision(),
        Some(revision),
        "the events were applied"
    );
}

#[test]
fn fleet_lists_the_announced_lainlets_and_a_revision_question_completes_as_they_report() {
    let mut h = Harness::golden();
    let r0 = h.store.revision;
    assert_eq!(body(&mut h, "/fleet"), json!({"count": 0, "members": {}}));
    h.engine.handle_events(h.now, [fleet_put("a", r0 + 1, r0)]);
    h.engine.handle_events(h.now, [fleet_put("b", r0 + 2, r0)]);
    let all = body(&mut h, "/fleet");
    assert_eq!(all["count"], 2);
    assert_eq!(all["members"]["a"]["shell"], "lainlet-smol");
    // A deploy writes at r0 + 3.
    h.engine
        .handle_events(h.now, [config_put("deploy", "1", r0 + 3)]);
    let id = h.watch(&format!("/fleet?revision={}&watch=1", r0 + 3));
    let first = h.drain(id);
    let (_, event, data) = parts(&first[0]);
    assert_eq!(event, "init");
    let data: Value = serde_json::from_str(&data.unwrap()).unwrap();
    assert_eq!(data["complete"], false);
    assert_eq!(data["pending"], json!(["a", "b"]));
    // a reports it; b reports only later, after other fleet writes moved the revision on.
    h.engine
        .handle_events(h.now, [fleet_put("a", r0 + 4, r0 + 3)]);
    let q = body(&mut h, &format!("/fleet?revision={}", r0 + 3));
    assert_eq!(
        (q["applied"].clone(), q["pending"].clone()),
        (json!(["a"]), json!(["b"]))
    );
    h.engine
        .handle_events(h.now, [fleet_put("b", r0 + 5, r0 + 4)]);
    let frames = h.drain(id);
    let last = frames.last().expect("the watch heard of it");
    let data: Value = serde_json::from_str(&parts(last).2.unwrap()).unwrap();
    assert_eq!(data["complete"], true);
    assert_eq!(data["applied"], json!(["a", "b"]));
    // R = r0 + 5 was a fleet write: nothing served changed after r0 + 3, and both reported
    // at least r0 + 3, so both have every change up to it.
    let q = body(&mut h, &format!("/fleet?revision={}", r0 + 5));
    assert_eq!(q["complete"], true);
    // A deleted key leaves the fleet at once.
    h.engine.handle_events(
        h.now,
        [WatchEvent::Delete {
            key: "/lain/lainlet/nodes/b".into(),
            mod_revision: r0 + 6,
        }],
    );
    assert_eq!(body(&mut h, "/fleet")["count"], 1);
}

#[test]
fn fleet_is_for_local_and_super_callers_and_checks_its_parameter() {
    let mut h = Harness::golden();
    let r = h.get_from(ip("10.9.9.9"), "/fleet");
    assert_eq!(
        (r.status, &r.body[..]),
        (400, &b"authorize failed, super required"[..]),
        "as every v2 view answers it (spec §2.2)"
    );
    let r = h.get("/fleet?revision=x");
    assert_eq!(r.status, 400);
    assert_eq!(
        h.get("/fleet/").status,
        200,
        "a trailing slash as everywhere"
    );
}

fn announcing(api: Store) -> EngineConfig {
    EngineConfig {
        etcd_api: EtcdApi::Only(api),
        announce: Some(AnnounceConfig {
            every: Duration::from_secs(2),
            shell: "lainlet".into(),
            started_at: 1_700_000_000,
        }),
        state_save_every: Some(Duration::from_secs(30)),
        ..golden_config()
    }
}

/// An engine connected to etcd's `store` with the golden data loaded.
fn connected(config: EngineConfig, now: Instant) -> lainlet_core::Engine {
    let mut engine = lainlet_core::Engine::new(config);
    assert!(matches!(engine.poll_etcd(now), EtcdStep::Connect { .. }));
    engine.handle_etcd_connected(now);
    engine.handle_snapshot(now, snapshot(&lainlet_fixtures::original()));
    engine
}

fn due(engine: &mut lainlet_core::Engine, now: Instant) -> FleetWrite {
    match engine.poll_fleet(now) {
        FleetStep::Write { write, .. } => write,
        other => panic!("a heartbeat was due: {other:?}"),
    }
}

#[test]
fn the_heartbeat_announces_what_the_engine_serves_and_ignores_the_fleets_own_writes() {
    let t0 = Instant::now();
    let mut e = connected(announcing(Store::V3), t0);
    let r0 = e.applied_revision().unwrap();
    let FleetWrite::Put {
        key,
        value,
        ttl,
        lease,
        ..
    } = due(&mut e, t0)
    else {
        panic!("the first heartbeat puts")
    };
    assert_eq!(
        (key.as_str(), ttl, lease),
        ("/lain/lainlet/nodes/node1", Duration::from_secs(6), None)
    );
    let announced: Announcement = serde_json::from_slice(&value).unwrap();
    assert_eq!(
        (
            announced.node.as_str(),
            announced.ip.as_str(),
            announced.store.as_str(),
            announced.revision
        ),
        ("node1", "192.168.77.21", "v3", r0)
    );
    e.handle_fleet_written(t0, FleetWritten::Done { lease: Some(5) });
    // Its own put and two other lainlets' come back through the watch.
    e.handle_events(t0, [fleet_put("node1", r0 + 1, r0)]);
    e.handle_events(t0, [fleet_put("node2", r0 + 2, r0)]);
    e.handle_events(t0, [fleet_put("node3", r0 + 3, r0 + 2)]);
    let t1 = t0 + Duration::from_secs(2);
    assert!(matches!(
        due(&mut e, t1),
        FleetWrite::Refresh { lease: Some(5), .. }
    ));
    e.handle_fleet_written(t1, FleetWritten::Done { lease: None });
    // A change of the served state: the next heartbeat puts the revision applied then.
    e.handle_events(t1, [config_put("vips/x", "y", r0 + 4)]);
    e.handle_events(t1, [fleet_put("node2", r0 + 5, r0 + 4)]);
    let t2 = t1 + Duration::from_secs(2);
    let FleetWrite::Put { value, lease, .. } = due(&mut e, t2) else {
        panic!("a changed state is put")
    };
    let announced: Announcement = serde_json::from_slice(&value).unwrap();
    assert_eq!((announced.revision, lease), (r0 + 5, Some(5)));
    e.handle_fleet_written(t2, FleetWritten::Done { lease: Some(5) });
    // Shutdown removes the key.
    assert!(matches!(
        e.poll_fleet_withdraw(),
        Some(FleetWrite::Withdraw { lease: Some(5), .. })
    ));
}

#[test]
fn without_announce_the_heartbeat_is_off_but_fleet_is_served() {
    let mut h = Harness::golden();
    assert_eq!(h.engine.poll_fleet(h.now), FleetStep::Off);
    assert_eq!(h.engine.poll_fleet_withdraw(), None);
    assert_eq!(h.get("/fleet").status, 200);
}

#[test]
fn a_restart_from_the_state_file_keeps_the_fleet() {
    let t0 = Instant::now();
    let mut e = connected(announcing(Store::V2), t0);
    let r0 = e.applied_revision().unwrap();
    e.handle_events(t0, [fleet_put("node2", r0 + 1, r0)]);
    e.handle_events(t0, [fleet_put("node3", r0 + 2, r0)]);
    let saved = e
        .poll_state_save(t0, true)
        .expect("a state to save")
        .encode();
    let mut restarted = lainlet_core::Engine::new(announcing(Store::V2));
    restarted.handle_saved_state(t0, &saved).unwrap();
    let mut h = Harness {
        engine: restarted,
        now: t0,
        store: lainlet_fixtures::original(),
    };
    let fleet = body(&mut h, "/fleet");
    assert_eq!(fleet["count"], 2);
    assert_eq!(fleet["members"]["node3"]["node"], "node3");
}
