//! Starts from a state file (issue 20), against a simulated etcd that keeps every revision:
//!
//! * a property test: for any saved state and any etcd history since — the same history
//!   continued, compacted past the saved revision, restored from a backup taken before the
//!   save and written again, or another cluster — starting from the file ends equal to a
//!   fresh start, on both stores; and when the history continues within etcd's window the
//!   start reads no snapshot;
//! * scenarios: `/healthz` is `stale` (not `503`) while the loaded state is unproven, also
//!   when etcd is away; a corrupt file changes nothing; a `rev=1` client resuming across the
//!   restart gets nothing or one update on v2; saves happen only when something changed and
//!   the period passed.
// Plays the shell: reads the clock the core may not (core/clippy.toml).
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use lainlet_core::{
    Engine, EngineConfig, EtcdApi, EtcdIdentity, EtcdStep, Probe, SavedState, StateFileError,
    StateIoError, Store, WatchResponse,
};
use lainlet_fixtures::{Change, Dump};
use proptest::prelude::*;
use support::client::Client;
use support::{apply_to_dump, event, golden_config, key_pool, snapshot, Harness};

const CLUSTER: u64 = 0x89e4_9d7f_8155_3f67;

/// etcd as the engine sees it: every revision's state, a compaction point, a cluster ID.
#[derive(Clone)]
struct Etcd {
    dumps: Vec<Dump>,
    /// Revisions at or below this are compacted away (v3), or out of the event window (v2).
    compacted: i64,
    cluster_id: u64,
    /// Events after each revision: `events[i]` brought the store to `dumps[i + 1]`.
    changes: Vec<Change>,
}

impl Etcd {
    fn new(cluster_id: u64, writes: impl IntoIterator<Item = Change>) -> Etcd {
        let mut etcd = Etcd {
            dumps: vec![Dump {
                revision: 1,
                kvs: Vec::new(),
            }],
            compacted: 0,
            cluster_id,
            changes: Vec::new(),
        };
        for c in writes {
            etcd.apply(c);
        }
        etcd
    }

    fn current(&self) -> &Dump {
        self.dumps.last().unwrap()
    }

    fn apply(&mut self, change: Change) {
        let revision = self.current().revision + 1;
        let next = apply_to_dump(self.current(), &change, revision);
        self.dumps.push(next);
        self.changes.push(change);
    }

    fn at(&self, revision: i64) -> Option<&Dump> {
        self.dumps.iter().rev().find(|d| d.revision <= revision)
    }

    /// etcd restored from a copy taken at `revision`: the same cluster, the history after it
    /// gone.
    fn restored_to(&self, revision: i64) -> Etcd {
        let keep = self.dumps.iter().filter(|d| d.revision <= revision).count();
        Etcd {
            dumps: self.dumps[..keep].to_vec(),
            compacted: self.compacted.min(revision),
            cluster_id: self.cluster_id,
            changes: self.changes[..keep - 1].to_vec(),
        }
    }
}

/// What a start cost etcd.
#[derive(Debug, Default)]
struct Cost {
    snapshots: usize,
    events: usize,
}

fn config(api: EtcdApi) -> EngineConfig {
    EngineConfig {
        etcd_api: api,
        state_save_every: Some(Duration::from_secs(60)),
        ..golden_config()
    }
}

/// Drives `e` as a shell does, answering from `etcd`, until it watches at etcd's current
/// revision.
fn follow(e: &mut Engine, now: Instant, etcd: &Etcd, store: Store) -> Cost {
    let mut cost = Cost::default();
    for _ in 0..50 {
        match e.poll_etcd(now) {
            EtcdStep::Connect { store: s, .. } => {
                if s.is_some() {
                    let id = EtcdIdentity {
                        revision: etcd.current().revision,
                        cluster_id: Some(etcd.cluster_id),
                    };
                    let _ = e.handle_quorum_check(now, Ok(id));
                }
                e.handle_etcd_connected(now);
            }
            EtcdStep::Probe => {
                let (keys, empty) = (Probe::Keys, Probe::Empty);
                let (v2, v3) = match store {
                    Store::V2 => (&keys, &empty),
                    Store::V3 => (&empty, &keys),
                };
                let _ = e.handle_store_probe(now, v2, v3).unwrap();
            }
            EtcdStep::ProveHistory { key, revision, .. } => {
                let answer = match revision <= etcd.compacted {
                    true => Err("mvcc: required revision has been compacted".into()),
                    false => Ok(etcd.at(revision).and_then(|d| {
                        d.kvs
                            .iter()
                            .find(|kv| kv.key == key)
                            .map(|kv| kv.mod_revision)
                    })),
                };
                let _ = e.handle_history_proof(now, answer);
            }
            EtcdStep::ReadSnapshot { .. } => {
                cost.snapshots += 1;
                e.handle_snapshot(now, snapshot(etcd.current()));
            }
            EtcdStep::Watch { start_revision, .. } => {
                if start_revision <= etcd.compacted {
                    let lost = WatchResponse {
                        canceled: true,
                        compact_revision: etcd.compacted + 1,
                        header_revision: etcd.current().revision,
                        ..WatchResponse::default()
                    };
                    let _ = e.handle_watch_response(now, lost);
                    continue;
                }
                // The quorum check a silent watch gets within seconds (with `auto`, the first
                // that tells the cluster ID).
                let id = EtcdIdentity {
                    revision: etcd.current().revision,
                    cluster_id: Some(etcd.cluster_id),
                };
                if e.handle_quorum_check(now, Ok(id)) != lainlet_core::QuorumOutcome::Continues {
                    continue;
                }
                let created = WatchResponse {
                    created: true,
                    header_revision: etcd.current().revision,
                    ..WatchResponse::default()
                };
                let _ = e.handle_watch_response(now, created);
                let first = (start_revision - 2).max(0) as usize;
                for (i, change) in etcd.changes.iter().enumerate().skip(first) {
                    let revision = i as i64 + 2;
                    cost.events += 1;
                    let message = WatchResponse {
                        header_revision: etcd.current().revision,
                        events: vec![event(change, revision)],
                        last_event_revision: Some(revision),
                        ..WatchResponse::default()
                    };
                    let _ = e.handle_watch_response(now, message);
                }
                return cost;
            }
            EtcdStep::Wait { .. } => panic!("no failure expected"),
        }
    }
    panic!("did not reach a watch");
}

/// A fresh start on `etcd`.
fn fresh(api: EtcdApi, store: Store, now: Instant, etcd: &Etcd) -> (Engine, Cost) {
    let mut e = Engine::new(config(api));
    let cost = follow(&mut e, now, etcd, store);
    (e, cost)
}

const PATHS: &[&str] = &[
    "/v2/configwatcher",
    "/v2/configwatcher?target=vip",
    "/v2/coreinfowatcher",
    "/v2/procwatcher?appname=hello",
    "/v2/proxywatcher",
    "/v2/webrouter/webprocs",
    "/v2/streamrouter/streamprocs",
    "/v2/containers?nodename=node1",
    "/v2/depends",
    "/v2/nodes",
    "/v2/appswatcher",
    "/v2/localspecquery?nodeip=node2",
    "/appname?ip=172.20.0.1",
];

fn views(e: Engine, now: Instant) -> Vec<(u16, Vec<u8>)> {
    let mut h = Harness::new(Dump::default(), golden_config());
    h.engine = e;
    h.now = now;
    PATHS
        .iter()
        .map(|p| {
            let r = h.get(p);
            (r.status, r.body.to_vec())
        })
        .collect()
}

fn healthz(e: &mut Engine, now: Instant) -> (u16, String) {
    let ctx = lainlet_core::RequestContext {
        peer: support::localhost(),
        now,
        wall: std::time::SystemTime::UNIX_EPOCH,
        connections: 1,
    };
    let request = lainlet_core::Request::new(lainlet_core::Method::Get, "/healthz");
    match e.handle_request(&request, &ctx) {
        lainlet_core::Reply::Response(r) => (r.status, String::from_utf8_lossy(&r.body).into()),
        lainlet_core::Reply::Stream(_) => panic!("a stream"),
    }
}

/// What etcd did while lainlet was down.
#[derive(Clone, Debug)]
enum Since {
    /// The same history, `n` more writes.
    Continued,
    /// …and compacted past the saved revision.
    Compacted,
    /// Restored from a copy taken `back` revisions before the save, then written again.
    Restored { back: i64 },
    /// Another cluster with its own data.
    OtherCluster,
}

fn since() -> impl Strategy<Value = Since> {
    prop_oneof![
        4 => Just(Since::Continued),
        1 => Just(Since::Compacted),
        2 => (0i64..4).prop_map(|back| Since::Restored { back }),
        1 => Just(Since::OtherCluster),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_start_from_the_file_ends_equal_to_a_fresh_start_whatever_etcd_did_since(
        v2 in any::<bool>(),
        auto in any::<bool>(),
        initial in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<bool>()), 0..12),
        before_save in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<bool>()), 0..12),
        after in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<bool>()), 0..12),
        since in since(),
    ) {
        let store = if v2 { Store::V2 } else { Store::V3 };
        let api = if auto { EtcdApi::Auto } else { EtcdApi::Only(store) };
        let pool = key_pool();
        let change = |&(k, v, delete): &(usize, usize, bool)| {
            let (key, values) = &pool[k % pool.len()];
            match delete {
                true => Change::Delete { key: key.clone() },
                false => Change::Put { key: key.clone(), value: values[v % values.len()].clone() },
            }
        };
        let now = Instant::now();
        let mut etcd = Etcd::new(CLUSTER, initial.iter().map(change));
        let (mut running, _) = fresh(api, store, now, &etcd);
        // lainlet follows some writes, then stops and saves.
        for c in &before_save {
            etcd.apply(change(c));
        }
        follow(&mut running, now, &etcd, store);
        let saved = running.poll_state_save(now, true).expect("a changed state is saved");
        let saved_revision = saved.revision();
        prop_assert_eq!(saved_revision, etcd.current().revision);
        let bytes = saved.encode();
        let saved = SavedState::decode(&bytes).unwrap();
        running.handle_state_saved(now, Ok(()));
        // etcd goes on without lainlet.
        let mut etcd = match since {
            Since::Continued | Since::Compacted => etcd,
            Since::Restored { back } => etcd.restored_to((saved_revision - back).max(1)),
            Since::OtherCluster => Etcd::new(0x1234, initial.iter().rev().map(change)),
        };
        for c in &after {
            etcd.apply(change(c));
        }
        if let Since::Compacted = since {
            etcd.compacted = etcd.current().revision;
        }
        if let Since::Restored { back } = since {
            // The proof's blind spots (issue 17's design, not the file's): it asks for the
            // newest *put*, so a history rewritten after it (the saved state ended in
            // deletes), or a new write at the saved revision to the same key, pass it.
            // Same cluster, a revision as high: nothing cheap tells those histories apart
            // (the drift check repairs them later).
            let index = (saved_revision - 2) as usize;
            let same = etcd.changes.get(index).map(|c| c.key().to_owned());
            let ends_in_a_put = saved.newest_revision() == Some(saved_revision);
            prop_assume!(back == 0 || (ends_in_a_put && same.as_deref() != saved.newest_key()));
        }
        // The start from the file.
        let later = now + Duration::from_secs(5);
        let mut restarted = Engine::new(config(api));
        let restored = restarted.handle_saved_state(later, &bytes).unwrap();
        prop_assert_eq!(restored.revision, saved_revision);
        let (status, body) = healthz(&mut restarted, later);
        prop_assert_eq!(status, 200, "{}", body);
        prop_assert!(body.contains("\"stale\"") && body.contains("state file"), "{}", body);
        prop_assert!(restarted.poll_state_save(later, true).is_none(), "an unproven state is not saved");
        let cost = follow(&mut restarted, later, &etcd, store);
        let (status, body) = healthz(&mut restarted, later);
        prop_assert_eq!(status, 200);
        prop_assert!(body.contains("\"ok\""), "{}", body);
        if let Since::Continued = since {
            prop_assert_eq!(cost.snapshots, 0, "the history continues: no full read");
        }
        let (scratch, _) = fresh(api, store, later, &etcd);
        let ours = views(restarted, later);
        let expected = views(scratch, later);
        for ((path, a), b) in PATHS.iter().zip(&ours).zip(&expected) {
            prop_assert_eq!(a, b, "{}", path);
        }
    }

    #[test]
    fn no_file_contents_make_the_start_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut e = Engine::new(config(EtcdApi::Auto));
        let now = Instant::now();
        let _ = e.handle_saved_state(now, &bytes);
    }
}

/// A running engine on `etcd` with the original's fixture data, and its saved bytes.
fn saved_fixture(store: Store) -> (Etcd, Engine, Vec<u8>, Instant) {
    let dump = lainlet_fixtures::original();
    let etcd = Etcd::new(
        CLUSTER,
        dump.kvs.iter().map(|kv| Change::Put {
            key: kv.key.clone(),
            value: kv.value.clone(),
        }),
    );
    let now = Instant::now();
    let (mut e, _) = fresh(EtcdApi::Only(store), store, now, &etcd);
    let bytes = e.poll_state_save(now, true).unwrap().encode();
    e.handle_state_saved(now, Ok(()));
    (etcd, e, bytes, now)
}

#[test]
fn etcd_away_at_start_serves_the_saved_state_as_stale_not_503() {
    let (_, mut before, bytes, now) = saved_fixture(Store::V3);
    let mut e = Engine::new(config(EtcdApi::Only(Store::V3)));
    assert_eq!(healthz(&mut e, now).0, 503, "without a file: starting");
    e.handle_saved_state(now, &bytes).unwrap();
    assert!(matches!(e.poll_etcd(now), EtcdStep::Connect { .. }));
    e.handle_etcd_failure(now, "connection refused".into());
    let (status, body) = healthz(&mut e, now);
    assert_eq!(status, 200);
    assert!(body.contains("\"stale\""), "{body}");
    assert!(
        body.contains("connection refused") && body.contains("state file"),
        "{body}"
    );
    let mut h = Harness::new(Dump::default(), golden_config());
    h.engine = e;
    let got = h.get("/v2/coreinfowatcher?appname=hello");
    let mut b = Harness::new(Dump::default(), golden_config());
    b.engine = std::mem::replace(&mut before, Engine::new(golden_config()));
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b.get("/v2/coreinfowatcher?appname=hello").body);
    let metrics = String::from_utf8(h.get("/metrics").body.to_vec()).unwrap();
    assert!(
        metrics.contains("lainlet_state_file_unproven 1"),
        "{metrics}"
    );
}

/// Whether an error is the one expected.
type Expected = fn(&StateFileError) -> bool;

#[test]
fn a_corrupt_truncated_or_foreign_file_is_refused_and_changes_nothing() {
    let (_, _, bytes, now) = saved_fixture(Store::V2);
    let mut corrupt = bytes.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x40;
    let cases: [(&[u8], Expected); 3] = [
        (&corrupt, |e| *e == StateFileError::Corrupt),
        (&bytes[..bytes.len() - 3], |e| {
            matches!(e, StateFileError::Truncated(_) | StateFileError::Corrupt)
        }),
        (b"", |e| *e == StateFileError::NotAStateFile),
    ];
    for (file, expected) in cases {
        let mut e = Engine::new(config(EtcdApi::Only(Store::V2)));
        let err = e.handle_saved_state(now, file).unwrap_err();
        assert!(expected(&err), "{err}");
        assert!(!e.is_ready());
        assert!(matches!(e.poll_etcd(now), EtcdStep::Connect { .. }));
        e.handle_etcd_connected(now);
        assert_eq!(
            e.poll_etcd(now),
            EtcdStep::ReadSnapshot { store: Store::V2 },
            "a full read, as without a file"
        );
    }
    let mut other = Engine::new(config(EtcdApi::Only(Store::V3)));
    assert_eq!(
        other.handle_saved_state(now, &bytes),
        Err(StateFileError::OtherStore {
            file: Store::V2,
            configured: Store::V3
        })
    );
}

#[test]
fn a_v2_client_resuming_across_the_restart_gets_nothing_or_one_update() {
    let (mut etcd, mut running, bytes, now) = saved_fixture(Store::V2);
    let mut h = Harness::new(Dump::default(), golden_config());
    h.engine = std::mem::replace(&mut running, Engine::new(golden_config()));
    h.now = now;
    let mut config_client = Client::new("/v2/configwatcher", false);
    let mut domain_client = Client::new("/v2/configwatcher?target=domain", true);
    config_client.read(&mut h).unwrap();
    domain_client.read(&mut h).unwrap();
    // Down: one change.
    etcd.apply(Change::Put {
        key: lainlet_fixtures::keys::config("vip"),
        value: b"192.168.77.240".to_vec(),
    });
    let mut e = Engine::new(config(EtcdApi::Only(Store::V2)));
    e.handle_saved_state(now, &bytes).unwrap();
    let cost = follow(&mut e, now, &etcd, Store::V2);
    assert_eq!(cost.snapshots, 0);
    assert_eq!(cost.events, 1);
    h.engine = e;
    config_client.stream = None;
    domain_client.stream = None;
    config_client.read(&mut h).unwrap();
    domain_client.read(&mut h).unwrap();
    assert_eq!(config_client.events, ["init", "update"]);
    assert_eq!(domain_client.events, ["init"], "untouched: nothing");
    let want: serde_json::Value = serde_json::from_slice(&h.get("/v2/configwatcher").body).unwrap();
    assert_eq!(config_client.state, Some(want));
}

#[test]
fn a_state_is_saved_when_it_changed_and_the_period_passed_and_a_failed_write_is_retried() {
    let (mut etcd, mut e, _, now) = saved_fixture(Store::V3);
    let every = Duration::from_secs(60);
    assert!(
        e.poll_state_save(now + every * 2, false).is_none(),
        "unchanged"
    );
    assert_eq!(e.poll_state_save_timeout(), None);
    etcd.apply(Change::Delete {
        key: lainlet_fixtures::keys::config("vip"),
    });
    follow_events(&mut e, now, &etcd);
    let due = e.poll_state_save_timeout().expect("changed: a save is due");
    assert!(e
        .poll_state_save(due - Duration::from_secs(1), false)
        .is_none());
    let saved = e.poll_state_save(due, false).expect("due");
    assert_eq!(saved.revision(), etcd.current().revision);
    assert!(e.poll_state_save(due, true).is_none(), "handed out already");
    let full = StateIoError::Write {
        path: "/var/lib/lainlet/state".into(),
        reason: "No space left on device".into(),
    };
    e.handle_state_saved(due, Err(full));
    let again = e.poll_state_save_timeout().unwrap();
    assert_eq!(again, due + every, "retried a period later");
    assert!(e.poll_state_save(again, false).is_some());
    e.handle_state_saved(again, Ok(()));
    assert!(e.poll_state_save(again + every * 2, true).is_none());
}

/// Applies etcd's newest change to a watching engine.
fn follow_events(e: &mut Engine, now: Instant, etcd: &Etcd) {
    let revision = etcd.current().revision;
    let change = etcd.changes.last().unwrap();
    let message = WatchResponse {
        header_revision: revision,
        events: vec![event(change, revision)],
        last_event_revision: Some(revision),
        ..WatchResponse::default()
    };
    let _ = e.handle_watch_response(now, message);
}

#[test]
fn a_saved_state_round_trips_through_its_bytes() {
    let (_, mut e, bytes, now) = saved_fixture(Store::V3);
    let decoded = SavedState::decode(&bytes).unwrap();
    assert!(decoded.key_count() > 10);
    assert_eq!(decoded.cluster_id(), Some(CLUSTER));
    assert_eq!(decoded.encode(), bytes);
    let _ = e.poll_etcd(now);
}
