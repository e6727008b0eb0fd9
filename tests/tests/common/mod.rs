//! Helpers shared by the end-to-end tests (`e2e_*.rs`): a real etcd loaded with the original's
//! fixture set, the service started the way the goldens were recorded, and polling helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lainlet_tests::*;
use serde_json::Value;

/// One second.
pub const SEC: Duration = Duration::from_secs(1);

/// The path of every `/v2` view (spec §2.4), without parameters.
pub const V2_VIEWS: [&str; 14] = [
    "/v2/appswatcher",
    "/v2/configwatcher",
    "/v2/procwatcher",
    "/v2/coreinfowatcher",
    "/v2/nodes",
    "/v2/containers",
    "/v2/proxywatcher",
    "/v2/depends",
    "/v2/webrouter/webprocs",
    "/v2/streamrouter/streamprocs",
    "/v2/streamrouter/ports",
    "/v2/rebellion/localprocs",
    "/v2/backupspec",
    "/v2/localspecquery",
];

/// The exact watch head of the original (spec §3.2).
pub const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nVary: Accept-Encoding\r\n\r\n";

/// The node IP and host name the goldens were recorded with.
pub const NODE_IP: &str = "192.168.77.21";
/// See [`NODE_IP`].
pub const HOSTNAME: &str = "node1";

/// `fixtures/data/golden`.
pub fn golden_dir() -> PathBuf {
    workspace_root().join("fixtures/data/golden")
}

/// A fresh etcd holding `lainlet_fixtures::original()`.
pub fn etcd_with_original() -> EtcdServer {
    let etcd = EtcdServer::new().expect("start etcd");
    let dump = lainlet_fixtures::original();
    etcd.load(
        dump.kvs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_slice())),
    );
    etcd
}

/// A fresh etcd holding `lainlet_fixtures::original()` in `store` (v2: written through the
/// keys API, one PUT per key; v3: batched transactions).
pub fn etcd_with_original_in(store: Store) -> EtcdServer {
    let etcd = EtcdServer::new().expect("start etcd");
    let dump = lainlet_fixtures::original();
    etcd.with_store(store).load(
        dump.kvs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_slice())),
    );
    etcd
}

/// The service reading `store` (`--etcd-api`), otherwise as [`start`], ready.
pub fn start_in(kind: ServiceKind, etcd: &EtcdServer, store: Store) -> Service {
    command_in(kind, etcd, store)
        .start()
        .expect("start the service")
}

/// The launcher [`start_in`] uses, for adding arguments.
pub fn command_in(kind: ServiceKind, etcd: &EtcdServer, store: Store) -> ServiceCommand {
    command(kind, etcd).etcd_api(store)
}

/// The service with `--web <free> --etcd <etcd> --ip 192.168.77.21 --hostname node1`, ready.
pub fn start(kind: ServiceKind, etcd: &EtcdServer) -> Service {
    command(kind, etcd).start().expect("start the service")
}

/// The launcher [`start`] uses, for adding arguments.
pub fn command(kind: ServiceKind, etcd: &EtcdServer) -> ServiceCommand {
    Service::command(kind)
        .web_auto()
        .etcd(etcd)
        .args(["--ip", NODE_IP, "--hostname", HOSTNAME])
}

/// The etcd revision the service says it serves (`/healthz`).
pub fn served_revision(svc: &Service) -> i64 {
    svc.get("/healthz").json()["revision"].as_i64().unwrap_or(0)
}

/// Waits until the service serves `revision` or later; panics after 15 s.
pub fn wait_revision(svc: &Service, revision: i64) {
    let ok = wait_until(15 * SEC, || served_revision(svc) >= revision);
    assert!(
        ok,
        "the service did not reach revision {revision} (at {})",
        served_revision(svc)
    );
}

/// Waits until `GET path` answers `expected` as JSON; panics with the last answer after 15 s.
pub fn wait_json(svc: &Service, path: &str, expected: &Value) {
    let mut last = Value::Null;
    let ok = wait_until(15 * SEC, || {
        let r = svc.get(path);
        last = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        r.status == 200 && &last == expected
    });
    assert!(ok, "GET {path}: expected {expected}, last answer {last}");
}

/// etcd's `/lain/config/` keys as `/v2/configwatcher` shows them (relative key → raw value).
pub fn etcd_config(etcd: &EtcdServer) -> Value {
    etcd_config_in(etcd, Store::V3)
}

/// `store`'s `/lain/config/` keys as `/v2/configwatcher` shows them.
pub fn etcd_config_in(etcd: &EtcdServer, store: Store) -> Value {
    let map: BTreeMap<String, Value> = etcd
        .with_store(store)
        .get_prefix("/lain/config/")
        .into_iter()
        .map(|(k, v, _)| {
            let key = k["/lain/config/".len()..].to_owned();
            (key, Value::String(String::from_utf8_lossy(&v).into_owned()))
        })
        .collect();
    serde_json::to_value(map).unwrap()
}

/// A Prometheus sample from the service's `/metrics` (`name` with its labels, e.g.
/// `lainlet_etcd_watch_state{state="watching"}`).
pub fn metric(svc: &Service, name: &str) -> Option<f64> {
    let text = svc.get("/metrics").text();
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

/// A put through the etcd gateway that tolerates etcd being down: retries for up to 30 s.
pub fn put_retrying(etcd: &EtcdServer, key: &str, value: &str) -> i64 {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({ "key": b64.encode(key), "value": b64.encode(value) });
    let revision = wait_for(30 * SEC, || {
        let answer = etcd.gateway("/v3/kv/put", &body).ok()?;
        answer["header"]["revision"].as_str()?.parse::<i64>().ok()
    });
    revision.unwrap_or_else(|| panic!("put {key}: etcd unavailable for 30 s"))
}

/// A put into `store` that tolerates etcd being down: retries for up to 30 s; the revision.
pub fn put_retrying_in(etcd: &EtcdServer, store: Store, key: &str, value: &str) -> i64 {
    let revision = wait_for(30 * SEC, || etcd.with_store(store).try_put(key, value).ok());
    revision.unwrap_or_else(|| panic!("put {key}: etcd unavailable for 30 s"))
}

/// Reads one whole watch stream frame by frame until `pred` matches a frame; panics if none
/// does within `timeout`.
pub fn expect_frame(
    stream: &mut SseStream,
    what: &str,
    timeout: Duration,
    pred: impl FnMut(&Frame) -> bool,
) -> Frame {
    stream
        .wait_frame(pred, timeout)
        .unwrap_or_else(|| panic!("no frame {what} within {timeout:?}"))
}

/// Reads the service can make of `store`, from the member's `/metrics`: v3 `Range` calls (gRPC
/// and the JSON gateway alike), v2 reads of the keys store (3.4 `etcd_debugging_store_…`, 2.3.7
/// `etcd_store_…`; through a proxy they reach the member the same).
pub fn etcd_reads(etcd: &EtcdServer, store: Store) -> f64 {
    let page = HttpClient::new()
        .get(&etcd.member_endpoint(), "/metrics")
        .expect("etcd /metrics")
        .text();
    let prefixes: &[&str] = match store {
        Store::V3 => &["grpc_server_started_total{grpc_method=\"Range\""],
        Store::V2 => &[
            "etcd_debugging_store_reads_total{",
            "etcd_store_reads_total{",
        ],
    };
    page.lines()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (bounded by `timeout`) until the service has read `store` `n` more times (its quorum
/// checks of a silent watch, with `--quorum-check-after 1`: time for it to act has passed).
pub fn wait_etcd_reads(etcd: &EtcdServer, store: Store, n: f64, timeout: Duration) -> bool {
    let before = etcd_reads(etcd, store);
    wait_until(timeout, || etcd_reads(etcd, store) - before >= n)
}
