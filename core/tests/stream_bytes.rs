//! What resumable and diff streams save, in bytes (issue #12's benchmark figures; exact, so
//! tests rather than timings), on the generated 1,000-app cluster (3,000 pod groups):
//!
//! * one pod group change to a `/v2/coreinfowatcher?watch=1&diff=1` watcher costs at most 2×
//!   the rendered size of that pod group's entry, where the same watcher without `diff` gets
//!   the whole cluster again;
//! * 1,000 watchers resuming after a restart of lainlet (v3, their revision listed by etcd)
//!   receive nothing when nothing changed, and one small patch each (diff) when one pod group
//!   changed — against 1,000 full `init`s without resume.
//!
//! `cargo test -p lainlet-core --test stream_bytes -- --nocapture` prints the figures.

mod support;

use lainlet_core::{
    EngineConfig, EtcdApi, HistoryWindow, KeyListing, Method, Reply, Request, Store, SubscriberId,
};
use lainlet_fixtures::{generated, ClusterShape, Dump};
use serde_json::Value;
use support::client::Client;
use support::{apply_to_dump, golden_config, restart, serve_backfills, Harness};

const COREINFO: &str = "/v2/coreinfowatcher";

fn cluster() -> Dump {
    generated(&ClusterShape::large(1_000))
}

fn v3_config() -> EngineConfig {
    EngineConfig {
        etcd_api: EtcdApi::Only(Store::V3),
        history: HistoryWindow::default(),
        ..golden_config()
    }
}

/// One pod group's value with every container IP moved (the bytes differ, as after a
/// reschedule), as a change at the next revision.
fn moved_pod_group(dump: &Dump) -> (lainlet_fixtures::Change, String) {
    let kv = dump
        .kvs
        .iter()
        .find(|kv| kv.key.starts_with("/lain/deployd/pod_groups/"))
        .unwrap();
    let text = String::from_utf8(kv.value.clone())
        .unwrap()
        .replace("\"ContainerIp\":\"172.", "\"ContainerIp\":\"10.");
    let name = kv.key.rsplit('/').next().unwrap().to_owned();
    let change = lainlet_fixtures::Change::Put {
        key: kv.key.clone(),
        value: text.into_bytes(),
    };
    (change, name)
}

/// Bytes a client received: the sum of its frames' sizes (id line and body).
fn read_bytes(h: &mut Harness, c: &mut Client) -> usize {
    let Some(stream) = c.stream else { return 0 };
    let mut bytes = 0;
    while let Some(frame) = h.engine.poll_frame(stream) {
        bytes += frame.len();
        c.take(support::client::seen(&frame)).unwrap();
    }
    bytes
}

#[test]
fn a_pod_group_change_costs_a_diff_watcher_at_most_twice_its_entry() {
    let dump = cluster();
    let mut h = Harness::new(dump.clone(), golden_config());
    let mut full = Client::new(COREINFO, false);
    let mut diff = Client::new(COREINFO, true);
    full.connect(&mut h);
    diff.connect(&mut h);
    let init = read_bytes(&mut h, &mut full);
    read_bytes(&mut h, &mut diff);
    let (change, name) = moved_pod_group(&dump);
    h.apply(&[change]);
    let full_bytes = read_bytes(&mut h, &mut full);
    let diff_bytes = read_bytes(&mut h, &mut diff);
    let get: Value = serde_json::from_slice(&h.get(COREINFO).body).unwrap();
    assert_eq!(
        diff.state.as_ref(),
        Some(&get),
        "the patch brought the client to the GET"
    );
    // The entry as rendered: `"<name>":<value>` inside the view.
    let entry = serde_json::to_vec(&get[&name]).unwrap().len() + name.len() + 3;
    println!(
        "one pod group change on the 1,000-app cluster: full {full_bytes} B (the whole view; \
         init {init} B), diff {diff_bytes} B, the pod group's entry {entry} B ({:.2}x)",
        diff_bytes as f64 / entry as f64
    );
    assert!(diff_bytes <= 2 * entry, "{diff_bytes} > 2 × {entry}");
    assert!(
        full_bytes > 100 * diff_bytes,
        "the full frame is the whole cluster"
    );
}

/// Opens a watch of `url`, resuming from `last_id` if given.
fn open(h: &mut Harness, url: &str, last_id: Option<i64>) -> SubscriberId {
    let id = last_id.map(|i| i.to_string());
    let request = Request::new(Method::Get, url).with_last_event_id(id.as_deref());
    let ctx = h.ctx(support::localhost());
    match h.engine.handle_request(&request, &ctx) {
        Reply::Stream(s) => s,
        Reply::Response(r) => panic!("{url}: {r:?}"),
    }
}

fn drained(h: &mut Harness, s: SubscriberId) -> usize {
    std::iter::from_fn(|| h.engine.poll_frame(s))
        .map(|f| f.len())
        .sum()
}

#[test]
fn watchers_resuming_after_a_restart_receive_only_what_changed() {
    const N: usize = 1_000;
    let before = cluster();
    let listing = KeyListing {
        revision: before.revision,
        keys: before
            .kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.mod_revision))
            .collect(),
    };
    let (change, _) = moved_pod_group(&before);
    let after = apply_to_dump(&before, &change, before.revision + 1);
    let urls = [
        format!("{COREINFO}?watch=1&rev=1"),
        format!("{COREINFO}?watch=1&diff=1"),
    ];
    let init_bytes = {
        let mut h = Harness::new(before.clone(), golden_config());
        let s = open(&mut h, &urls[0], None);
        drained(&mut h, s)
    };
    for (label, now) in [("no change", &before), ("one pod group changed", &after)] {
        // lainlet restarts at `now`; N watchers (half full, half diff) that were up to date
        // at `before` resume with its revision.
        let mut h = Harness::new(now.clone(), golden_config());
        h.engine = restart(v3_config(), h.now, now);
        let streams: Vec<(usize, SubscriberId)> = (0..N)
            .map(|i| (i % 2, open(&mut h, &urls[i % 2], Some(before.revision))))
            .collect();
        let outcomes = serve_backfills(&mut h, |r| {
            assert_eq!(r, before.revision);
            Ok(listing.clone())
        });
        let listings = usize::from(now.revision != before.revision);
        assert_eq!(outcomes.len(), listings, "{label}: {outcomes:?}");
        let mut sent = [0usize; 2];
        for (mode, s) in streams {
            sent[mode] += drained(&mut h, s);
        }
        println!(
            "{N} watchers of {COREINFO} resuming after a restart, {label}: {} B to the {} rev=1 \
             watchers, {} B to the {} diff=1 watchers; without resume: {} B of init",
            sent[0],
            N / 2,
            sent[1],
            N / 2,
            init_bytes * N
        );
        match listings {
            0 => assert_eq!(sent, [0, 0], "nothing changed: nothing sent"),
            _ => {
                let whole = (init_bytes * N / 2) as f64;
                let ratio = sent[0] as f64 / whole;
                assert!(
                    (0.99..1.01).contains(&ratio),
                    "rev=1: one update of the view each"
                );
                assert!(
                    sent[1] * 1000 < init_bytes * N / 2,
                    "diff=1: one small patch each"
                );
            }
        }
    }
}
