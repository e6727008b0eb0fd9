//! Watches that resume from before lainlet's history, as after a restart of lainlet (v3
//! store): such a resume waits while the engine asks for etcd's keys-only listing of the
//! client's revision (`EtcdCheck::Backfill`), then is answered from it like any other
//! (nothing, one `update`, one `patch`); without a listing it gets `init`.
//!
//! * a property test: random puts, deletes, resyncs and restarts, with watchers in revision
//!   and diff mode reconnecting with their last id; a store that keeps every revision (as
//!   etcd's MVCC store does until compaction) answers the listings. Each watcher ends equal
//!   to the GET, and ids strictly increase within a stream;
//! * scenarios: one change during the restart gets one `update` / one `patch`, none gets
//!   nothing, a deletion is a delete, a compacted revision / no answer / an etcd failure gets
//!   `init`, the v2 store answers with `init` at once.
// Plays the shell: reads the clock the core may not (core/clippy.toml).
#![allow(clippy::disallowed_methods)]

mod support;

use lainlet_core::{
    BackfillOutcome, Engine, EngineConfig, EtcdApi, EtcdCheck, EtcdStep, HistoryWindow, KeyListing,
    Store,
};
use lainlet_fixtures::{keys, Change, Dump};
use proptest::prelude::*;
use serde_json::Value;
use support::client::Client;
use support::{
    apply_to_dump, event, golden_config, key_pool, restart, serve_backfills, snapshot, Harness,
};

/// A store that keeps every revision: `dumps[i]` is the state at revision `i + 1`.
struct VersionedStore {
    dumps: Vec<Dump>,
}

impl VersionedStore {
    /// The store after `writes`, one revision each, from an empty store at revision 1.
    fn new(writes: impl IntoIterator<Item = Change>) -> VersionedStore {
        let mut store = VersionedStore {
            dumps: vec![Dump {
                revision: 1,
                kvs: Vec::new(),
            }],
        };
        for change in writes {
            store.apply(&change);
        }
        store
    }

    fn current(&self) -> &Dump {
        self.dumps.last().unwrap()
    }

    fn apply(&mut self, change: &Change) -> i64 {
        let revision = self.current().revision + 1;
        let next = apply_to_dump(self.current(), change, revision);
        self.dumps.push(next);
        revision
    }

    /// A keys-only listing at `revision`, as etcd answers `range … keys_only revision=R`.
    fn listing(&self, revision: i64) -> Result<KeyListing, String> {
        let dump = self
            .dumps
            .iter()
            .rev()
            .find(|d| d.revision <= revision)
            .ok_or_else(|| "mvcc: required revision has been compacted".to_owned())?;
        Ok(KeyListing {
            revision,
            keys: dump
                .kvs
                .iter()
                .map(|kv| (kv.key.clone(), kv.mod_revision))
                .collect(),
        })
    }
}

fn v3_config(history: HistoryWindow) -> EngineConfig {
    EngineConfig {
        etcd_api: EtcdApi::Only(Store::V3),
        history,
        ..golden_config()
    }
}

/// Replaces the harness's engine with a restarted one; the clients' streams are gone.
fn restart_harness(
    h: &mut Harness,
    store: &VersionedStore,
    config: EngineConfig,
    clients: &mut [Client],
) {
    h.engine = restart(config, h.now, store.current());
    h.store = store.current().clone();
    for c in clients {
        c.stream = None;
    }
}

/// A harness whose engine started as a shell starts it (see [`restart`]).
fn started(store: &VersionedStore, config: EngineConfig) -> Harness {
    let mut h = Harness::new(store.current().clone(), golden_config());
    restart_harness(&mut h, store, config, &mut []);
    h
}

/// Connects `c` if it is not, serves the listings it may wait for from `store`, and reads.
fn read(c: &mut Client, h: &mut Harness, store: &VersionedStore) -> Result<(), String> {
    if c.stream.is_none() {
        c.connect(h);
    }
    serve_backfills(h, |r| store.listing(r));
    c.read(h)
}

#[derive(Clone, Debug)]
enum Op {
    Put { key: usize, value: usize },
    Delete { key: usize },
    Resync,
    Restart,
    Read { client: usize },
    Reconnect { client: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<usize>(), any::<usize>()).prop_map(|(key, value)| Op::Put { key, value }),
        2 => any::<usize>().prop_map(|key| Op::Delete { key }),
        1 => Just(Op::Resync),
        2 => Just(Op::Restart),
        3 => any::<usize>().prop_map(|client| Op::Read { client }),
        3 => any::<usize>().prop_map(|client| Op::Reconnect { client }),
    ]
}

const PATHS: &[&str] = &[
    "/v2/configwatcher",
    "/v2/configwatcher?target=vip",
    "/v2/coreinfowatcher",
    "/v2/coreinfowatcher?appname=hello",
    "/v2/proxywatcher?appname=hello-service",
    "/v2/webrouter/webprocs",
    "/v2/containers?nodename=node1",
    "/v2/depends",
    "/v2/appswatcher",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn watchers_resuming_across_restarts_end_equal_to_the_get(
        initial in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..10),
        ops in proptest::collection::vec(op(), 1..50),
        window in 0i64..12,
    ) {
        let pool = key_pool();
        let put = |k: usize, v: usize| {
            let (key, values) = &pool[k % pool.len()];
            Change::Put { key: key.clone(), value: values[v % values.len()].clone() }
        };
        let mut store = VersionedStore::new(initial.iter().map(|&(k, v)| put(k, v)));
        // A window of `window` revisions (0: no backfill at all), kept however old.
        let config = v3_config(HistoryWindow {
            min_age: std::time::Duration::from_secs(3600),
            min_revisions: window,
            max_entries: 100_000,
        });
        let mut h = started(&store, config.clone());
        let mut clients: Vec<Client> = PATHS
            .iter()
            .flat_map(|p| [Client::new(p, false), Client::new(p, true)])
            .collect();
        for c in &mut clients {
            c.connect(&mut h);
        }
        serve_backfills(&mut h, |r| store.listing(r));
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    let change = put(key, value);
                    let revision = store.apply(&change);
                    h.store = store.current().clone();
                    h.engine.handle_events(h.now, [event(&change, revision)]);
                }
                Op::Delete { key } => {
                    let change = Change::Delete { key: pool[key % pool.len()].0.clone() };
                    let revision = store.apply(&change);
                    h.store = store.current().clone();
                    h.engine.handle_events(h.now, [event(&change, revision)]);
                }
                Op::Resync => h.resync(),
                Op::Restart => restart_harness(&mut h, &store, config.clone(), &mut clients),
                Op::Read { client } => {
                    let n = clients.len();
                    read(&mut clients[client % n], &mut h, &store).map_err(TestCaseError::fail)?;
                }
                Op::Reconnect { client } => {
                    let n = clients.len();
                    let c = &mut clients[client % n];
                    c.disconnect(&mut h);
                    c.connect(&mut h);
                    serve_backfills(&mut h, |r| store.listing(r));
                }
            }
        }
        for c in &mut clients {
            read(c, &mut h, &store).map_err(TestCaseError::fail)?;
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

/// The original's fixture set written one key per revision, then a client watching `path`
/// (`rev=1`, or `diff=1`) that read its `init`.
fn watched(path: &str, diff: bool) -> (VersionedStore, Harness, Client) {
    let dump = lainlet_fixtures::original();
    let store = VersionedStore::new(dump.kvs.iter().map(|kv| Change::Put {
        key: kv.key.clone(),
        value: kv.value.clone(),
    }));
    let mut h = started(&store, v3_config(HistoryWindow::default()));
    let mut client = Client::new(path, diff);
    read(&mut client, &mut h, &store).unwrap();
    assert_eq!(client.events, ["init"]);
    (store, h, client)
}

fn vip(value: &str) -> Change {
    Change::Put {
        key: keys::config("vip"),
        value: value.as_bytes().to_vec(),
    }
}

fn get(h: &mut Harness, path: &str) -> Value {
    serde_json::from_slice(&h.get(path).body).unwrap()
}

#[test]
fn one_change_during_a_restart_is_one_update_or_one_patch_and_no_change_is_nothing() {
    for diff in [false, true] {
        let (mut store, mut h, config_client) = watched("/v2/configwatcher", diff);
        let mut domain_client = Client::new("/v2/configwatcher?target=domain", diff);
        read(&mut domain_client, &mut h, &store).unwrap();
        // lainlet stops; one change; lainlet starts again.
        store.apply(&vip("192.168.77.240"));
        let mut clients = [config_client, domain_client];
        restart_harness(
            &mut h,
            &store,
            v3_config(HistoryWindow::default()),
            &mut clients,
        );
        let [mut config_client, mut domain_client] = clients;
        config_client.connect(&mut h);
        domain_client.connect(&mut h);
        assert!(
            h.engine.poll_etcd_wakeup().is_some(),
            "the etcd loop is woken for the listing"
        );
        assert!(
            h.drain(config_client.stream.unwrap()).is_empty(),
            "held: nothing yet"
        );
        let outcomes = serve_backfills(&mut h, |r| store.listing(r));
        assert_eq!(outcomes.len(), 1, "one listing for both: {outcomes:?}");
        assert!(
            matches!(
                outcomes[0],
                BackfillOutcome::Answered {
                    changed: 1,
                    watches: 2,
                    ..
                }
            ),
            "{outcomes:?}"
        );
        config_client.read(&mut h).unwrap();
        domain_client.read(&mut h).unwrap();
        let expected = if diff { "patch" } else { "update" };
        assert_eq!(config_client.events, ["init", expected], "diff={diff}");
        assert_eq!(config_client.last_id, Some(store.current().revision as u64));
        assert_eq!(config_client.state, Some(get(&mut h, "/v2/configwatcher")));
        assert_eq!(
            domain_client.events,
            ["init"],
            "untouched: nothing after the restart"
        );
        // And the streams go on from there.
        let change = vip("192.168.77.241");
        let revision = store.apply(&change);
        h.store = store.current().clone();
        h.engine.handle_events(h.now, [event(&change, revision)]);
        config_client.read(&mut h).unwrap();
        assert_eq!(config_client.last_id, Some(revision as u64));
        assert_eq!(config_client.state, Some(get(&mut h, "/v2/configwatcher")));
    }
}

#[test]
fn a_deletion_during_a_restart_is_sent_as_a_delete() {
    let (mut store, mut h, client) = watched("/v2/configwatcher", true);
    // A key created after the client's revision and deleted again is in neither state.
    store.apply(&Change::Put {
        key: keys::config("brief"),
        value: b"x".to_vec(),
    });
    store.apply(&Change::Delete {
        key: keys::config("brief"),
    });
    store.apply(&Change::Delete {
        key: keys::config("domain"),
    });
    let mut clients = [client];
    restart_harness(
        &mut h,
        &store,
        v3_config(HistoryWindow::default()),
        &mut clients,
    );
    let [mut client] = clients;
    read(&mut client, &mut h, &store).unwrap();
    assert_eq!(client.events, ["init", "patch"]);
    let now = get(&mut h, "/v2/configwatcher");
    assert_eq!(client.state.as_ref(), Some(&now));
    assert!(now.get("domain").is_none());
}

#[test]
fn a_compacted_revision_no_answer_or_an_etcd_failure_gets_init() {
    // etcd cannot list the client's revision (compacted).
    let (mut store, mut h, client) = watched("/v2/configwatcher", false);
    store.apply(&vip("192.168.77.9"));
    let mut clients = [client];
    restart_harness(
        &mut h,
        &store,
        v3_config(HistoryWindow::default()),
        &mut clients,
    );
    let [mut client] = clients;
    client.connect(&mut h);
    let outcomes = serve_backfills(&mut h, |_| {
        Err("mvcc: required revision has been compacted".into())
    });
    assert!(
        matches!(outcomes[..], [BackfillOutcome::Failed { watches: 1, .. }]),
        "{outcomes:?}"
    );
    client.read(&mut h).unwrap();
    assert_eq!(client.events, ["init", "init"]);

    // No answer: the resume waits at most HOLD_LIMIT.
    let (mut store, mut h, client) = watched("/v2/configwatcher", false);
    store.apply(&vip("192.168.77.9"));
    let mut clients = [client];
    restart_harness(
        &mut h,
        &store,
        v3_config(HistoryWindow::default()),
        &mut clients,
    );
    let [mut client] = clients;
    client.connect(&mut h);
    let limit = h
        .engine
        .poll_timeout()
        .expect("a deadline for the held resume")
        - h.now;
    assert!(limit <= std::time::Duration::from_secs(5), "{limit:?}");
    h.advance(limit / 2);
    client.read(&mut h).unwrap();
    assert_eq!(client.events, ["init"], "still waiting");
    h.advance(limit);
    client.read(&mut h).unwrap();
    assert_eq!(client.events, ["init", "init"]);
    assert_eq!(client.state, Some(get(&mut h, "/v2/configwatcher")));

    // etcd fails while a resume waits.
    let (mut store, mut h, client) = watched("/v2/configwatcher", true);
    store.apply(&vip("192.168.77.9"));
    let mut clients = [client];
    restart_harness(
        &mut h,
        &store,
        v3_config(HistoryWindow::default()),
        &mut clients,
    );
    let [mut client] = clients;
    client.connect(&mut h);
    h.engine
        .handle_etcd_failure(h.now, "connection reset".into());
    client.read(&mut h).unwrap();
    assert_eq!(client.events, ["init", "init"]);
    let later = h.now + std::time::Duration::from_secs(60);
    assert!(matches!(
        h.engine.poll_etcd(later),
        EtcdStep::Connect { .. }
    ));
    h.engine.handle_etcd_connected(later);
    // The reconnect first proves that etcd still has the newest write served.
    let EtcdStep::ProveHistory { revision, .. } = h.engine.poll_etcd(later) else {
        panic!("a reconnect proves the history served");
    };
    let proven = h.engine.handle_history_proof(later, Ok(Some(revision)));
    assert_eq!(proven, lainlet_core::QuorumOutcome::Continues);
    assert!(matches!(h.engine.poll_etcd(later), EtcdStep::Watch { .. }));
    assert_eq!(
        h.engine.poll_etcd_check(later).1,
        EtcdCheck::Quorum,
        "nothing wanted"
    );
}

#[test]
fn the_v2_store_answers_resumes_from_before_its_history_with_init_at_once() {
    let dump = lainlet_fixtures::original();
    let now = std::time::Instant::now();
    let mut e = Engine::new(EngineConfig {
        etcd_api: EtcdApi::Only(Store::V2),
        ..golden_config()
    });
    assert!(matches!(e.poll_etcd(now), EtcdStep::Connect { .. }));
    e.handle_etcd_connected(now);
    assert_eq!(
        e.poll_etcd(now),
        EtcdStep::ReadSnapshot { store: Store::V2 }
    );
    e.handle_snapshot(now, snapshot(&dump));
    let mut h = Harness::new(dump, golden_config());
    h.engine = e;
    let mut client = Client::new("/v2/configwatcher", false);
    client.last_id = Some(3);
    client.read(&mut h).unwrap();
    assert_eq!(client.events, ["init"]);
    assert_eq!(h.engine.poll_etcd_wakeup(), None);
}

#[test]
fn many_resumes_from_a_few_revisions_need_a_listing_each() {
    let (mut store, mut h, _) = watched("/v2/configwatcher", false);
    let first = store.current().revision;
    store.apply(&vip("192.168.77.1"));
    let second = store.current().revision;
    store.apply(&vip("192.168.77.2"));
    restart_harness(&mut h, &store, v3_config(HistoryWindow::default()), &mut []);
    let mut clients: Vec<Client> = (0..10)
        .map(|i| {
            let mut c = Client::new("/v2/configwatcher", false);
            c.state = Some(Value::Null);
            c.last_id = Some(if i < 5 { first } else { second } as u64);
            c.connect(&mut h);
            c
        })
        .collect();
    let mut asked = Vec::new();
    let outcomes = serve_backfills(&mut h, |r| {
        asked.push(r);
        store.listing(r)
    });
    asked.sort();
    assert_eq!(asked, [first, second], "{outcomes:?}");
    for c in &mut clients {
        c.read(&mut h).unwrap();
        assert_eq!(c.events.len(), 1, "{}: {:?}", c.url, c.events);
        assert_ne!(c.events[0], "init", "{}", c.url);
    }
    // A later resume from an answered revision needs no listing.
    while h.engine.poll_etcd_wakeup().is_some() {}
    let mut late = Client::new("/v2/configwatcher", false);
    late.last_id = Some(first as u64);
    late.state = Some(Value::Null);
    late.connect(&mut h);
    assert_eq!(h.engine.poll_etcd_wakeup(), None);
    late.read(&mut h).unwrap();
    assert_eq!(late.events, ["update"]);
}
