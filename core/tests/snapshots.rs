//! insta snapshots: every endpoint's exact response for the edge-case dump, and the exact SSE
//! bytes of the scripted watch scenario. The edge-case expectations were reviewed against the
//! spec rule each fixture key names (see `fixtures/src/edge.rs`); the original set's bodies are
//! pinned by the goldens in `golden.rs`. A snapshot file no test writes fails
//! `no_snapshot_file_is_orphaned`.

mod support;

use std::time::Duration;

use lainlet_fixtures::{edge_cases, watch_scenario, ScenarioStep};
use support::{golden_config, ip, Harness};

/// (snapshot name, request path) for the edge-case dump.
const EDGE_REQUESTS: &[(&str, &str)] = &[
    ("edge_config_all", "/v2/configwatcher"),
    ("edge_config_vip", "/v2/configwatcher?target=vip"),
    ("edge_config_domain", "/v2/configwatcher?target=domain"),
    ("edge_config_edge", "/v2/configwatcher?target=edge"),
    ("edge_procwatcher_hello", "/v2/procwatcher?appname=hello"),
    (
        "edge_procwatcher_nocontainer",
        "/v2/procwatcher?appname=nocontainer",
    ),
    ("edge_coreinfo_all", "/v2/coreinfowatcher"),
    ("edge_proxy_all", "/v2/proxywatcher"),
    ("edge_webprocs_all", "/v2/webrouter/webprocs"),
    (
        "edge_webprocs_unknown_app",
        "/v2/webrouter/webprocs?appname=x",
    ),
    (
        "edge_webprocs_hello",
        "/v2/webrouter/webprocs?appname=hello",
    ),
    ("edge_streamprocs_all", "/v2/streamrouter/streamprocs"),
    ("edge_streamports_all", "/v2/streamrouter/ports"),
    ("edge_rebellion_all", "/v2/rebellion/localprocs"),
    ("edge_backup_all", "/v2/backupspec"),
    ("edge_containers_node1", "/v2/containers?nodename=node1"),
    ("edge_localspec_node2", "/v2/localspecquery?nodeip=node2"),
    ("edge_depends_all", "/v2/depends"),
    ("edge_nodes_all", "/v2/nodes"),
    ("edge_nodes_node1", "/v2/nodes?name=node1"),
    ("edge_apps", "/v2/appswatcher"),
    ("edge_appname_resource_portal", "/appname?ip=172.20.12.10"),
];

const SCENARIO_STREAMS: &[(&str, &str)] = &[
    (
        "scenario_sse_proxy_hello",
        "/v2/proxywatcher?appname=hello&watch=1&heartbeat=4",
    ),
    (
        "scenario_sse_config_vip",
        "/v2/configwatcher?target=vip&watch=1",
    ),
    ("scenario_sse_webrouter", "/v2/webrouter/webprocs?watch=1"),
];

#[test]
fn edge_case_responses() {
    let mut h = Harness::new(edge_cases(), golden_config());
    for (name, path) in EDGE_REQUESTS {
        let r = h.get(path);
        let text = format!(
            "GET {path}\n{}\n{}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        insta::assert_snapshot!(*name, text);
    }
    // `cons` is not a super app even though it prefixes `console` (W10 not copied).
    let cons_ip = ip("172.20.6.2");
    assert_eq!(h.get_from(cons_ip, "/v2/nodes").status, 400);
}

#[test]
fn scenario_sse_byte_streams() {
    let mut h = Harness::golden();
    let ids: Vec<_> = SCENARIO_STREAMS.iter().map(|(_, p)| h.watch(p)).collect();
    let mut wire: Vec<Vec<u8>> = vec![lainlet_core::SSE_HEAD.to_vec(); ids.len()];
    let read = |h: &mut Harness, wire: &mut Vec<Vec<u8>>| {
        for (i, id) in ids.iter().enumerate() {
            for f in h.drain(*id) {
                wire[i].extend(f.to_bytes());
            }
        }
    };
    read(&mut h, &mut wire);
    for step in watch_scenario() {
        // steps are 1 s apart, like the recording's ~0.5 s, so heartbeats interleave
        h.advance(Duration::from_secs(1));
        match step {
            ScenarioStep::Store(change) => h.apply(&[change]),
            ScenarioStep::WatchBreak => h.resync(),
        }
        read(&mut h, &mut wire);
    }
    for ((name, _), bytes) in SCENARIO_STREAMS.iter().zip(wire) {
        insta::assert_snapshot!(*name, String::from_utf8(bytes).unwrap());
    }
}

#[test]
fn no_snapshot_file_is_orphaned() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let known: Vec<String> = EDGE_REQUESTS
        .iter()
        .chain(SCENARIO_STREAMS)
        .map(|(name, _)| format!("snapshots__{name}.snap"))
        .collect();
    let mut orphans = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("snapshots__") && !known.contains(&name) {
            orphans.push(name);
        }
    }
    assert!(
        orphans.is_empty(),
        "snapshot files no test writes: {orphans:?}"
    );
}
