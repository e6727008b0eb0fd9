//! The original lainlet as a live oracle: the original (built from `../shared/upstream` by
//! `scripts/build-original.sh`) and lainlet (both binaries) on the **same** etcd — a 2.3.7
//! member behind a 2.3.7 proxy, as on LAIN's nodes, and etcd 3.4 with `--enable-v2` — fed the
//! same seeded, deployd-shaped churn, and asked the same random requests.
//!
//! Each round writes a burst of changes (pod groups appear, scale, move and vanish, portals,
//! nodes, config keys), then a marker key, and waits until **both** servers serve the marker:
//! from then on both have applied the same etcd state, so any difference in their answers is a
//! difference of behaviour, not of timing. Then random requests go to both from random loopback
//! sources (every endpoint, its parameters, a trailing slash, `HEAD`), and status, the headers
//! clients read and the bodies (JSON equality) are compared. Watch streams opened before the
//! churn are compared on the state each converges to after the last round.
//!
//! Every difference the project knows and explains is a row of
//! `tests/differential/differences.tsv` (what differs, the rule that recognises it, the README
//! section that explains it); the rules are implemented below by name. Anything else fails the
//! test with a reproduction: the seed, the round, the request and both answers.
//!
//! A third of the requests are `/appname` (mostly from 127.0.0.1, which is super; from the
//! other sources both must refuse), with the `ip` variants of spec §2.4.15: none, empty, a
//! container's IP (of a pod group or a portal, from every data set the churn mixes), with a port,
//! a prefix of many IPs, addresses no container has, and odd ones the original strips at the
//! last `:` (`::1`, `[::1]`, `:80`).
//!
//! With `lainlet` (the binary that serves gRPC), every tenth round also calls `Get` of every
//! view service, and takes the first message of its `Watch`, on both gRPC servers with random
//! requests (through the Python grpcio client), plus five `Appname.Get` with the same `ip`
//! variants, and compares the replies.
//!
//! The generated clusters the churn mixes reuse container IPs (as calico does), and the
//! original's IP table answers from the order of the writes, not from etcd's data (rule
//! `original-ip-bookkeeping`; the mechanism is pinned in `oracle/mod.rs` and reproduced step by
//! step by `the_originals_ip_map_follows_the_last_writer_not_etcds_data`). The churn replays
//! every write through a model of that table ([`IpBook`]), so a difference of `/appname` or
//! `Appname` is accepted only where lainlet answers what etcd's data gives and the original
//! what the model gives; the original's auth watches, which start after a gap of their own,
//! are probed live before the churn starts.
//!
//! `LAINLET_DIFF_SECS` (default 12 per setup and binary) and `LAINLET_DIFF_SEED` run it longer
//! or with another seed.

mod common;
mod grpc;
mod oracle;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use lainlet_fixtures::{generated, original, ClusterShape};
use lainlet_tests::*;
use oracle::*;
use serde_json::Value;

/// The documented differences, one per line: `rule<TAB>what differs<TAB>README section`.
const DIFFERENCES: &str = include_str!("../differential/differences.tsv");

/// A small xorshift generator: the whole run follows from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The etcd state the churn moves between: the original's fixtures plus small generated
/// clusters (deployd's exact value formats) of different seeds.
struct Churn {
    rng: Rng,
    current: BTreeMap<String, Vec<u8>>,
    targets: Vec<BTreeMap<String, Vec<u8>>>,
    /// The original's IP bookkeeping after the writes so far (rule `original-ip-bookkeeping`).
    book: IpBook,
}

impl Churn {
    fn new(seed: u64) -> Churn {
        let shape = |s| ClusterShape {
            apps: 10,
            pod_groups: 24,
            nodes: 3,
            max_instances: 3,
            seed: s,
        };
        let targets: Vec<BTreeMap<String, Vec<u8>>> = (0..4)
            .map(|i| {
                let dump = generated(&shape(seed.wrapping_add(i)));
                dump.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
            })
            .collect();
        let mut current: BTreeMap<String, Vec<u8>> = original()
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        current.extend(targets[0].clone());
        // The original reads it all at its start.
        let mut book = IpBook::default();
        book.refresh(current.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        Churn {
            rng: Rng(seed | 1),
            current,
            targets,
            book,
        }
    }

    /// A put the servers see, applied to the model.
    fn put(&mut self, key: &str, value: &[u8]) {
        self.book.put(key, value);
        self.current.insert(key.to_owned(), value.to_owned());
    }

    /// A delete the servers see, applied to the model.
    fn delete(&mut self, key: &str) {
        self.book.delete(key);
        self.current.remove(key);
    }

    /// Every container IP the churn's data sets list (pod groups and portals), some addresses
    /// no container has, and a prefix of many (the original's cache lookup scans prefixes).
    fn ips(&self) -> Vec<String> {
        let mut ips = BTreeSet::new();
        for (key, value) in self.targets.iter().flatten().chain(&self.current) {
            if key.starts_with(POD_GROUPS) {
                ips.extend(pod_group_ips(value).into_iter().map(|(ip, _)| ip));
            } else if key.starts_with(DEPENDS) {
                ips.extend(depends_ips(value));
            }
        }
        ips.remove("");
        ips.extend(["10.9.9.9", "172.20.10", "127.0.0.1", "192.168.77.21"].map(String::from));
        ips.into_iter().collect()
    }

    /// The next burst of writes (`None`: delete), applied to the model.
    fn burst(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let target = self.targets[self.rng.below(self.targets.len())].clone();
        let mut candidates: Vec<(String, Option<Vec<u8>>)> = target
            .iter()
            .filter(|(k, v)| self.current.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        candidates.extend(
            self.current
                .keys()
                .filter(|k| !target.contains_key(*k) && !k.starts_with("/lain/config/"))
                .map(|k| (k.clone(), None)),
        );
        let mut burst = Vec::new();
        for _ in 0..1 + self.rng.below(8) {
            if candidates.is_empty() {
                break;
            }
            let i = self.rng.below(candidates.len());
            burst.push(candidates.swap_remove(i));
        }
        // Config keys of the operator's kind: a plain value, and one that may come and go.
        if self.rng.chance(40) {
            let n = self.rng.below(1000);
            // Odd but valid values an operator may write: empty, JSON-looking, escapes, non-ASCII.
            let odd = [
                String::new(),
                format!("v{n}"),
                r#"{"a":[1,2,{"b":null}]}"#.to_owned(),
                "line\nbreak \"quoted\" \\ back".to_owned(),
                "héllo wörld \u{2028} ✓".to_owned(),
                "<script>&amp;</script>".to_owned(),
            ];
            let value = self.rng.pick(&odd).clone();
            burst.push((format!("/lain/config/diff/k{}", n % 4), Some(value.into())));
        }
        if self.rng.chance(20) {
            burst.push((format!("/lain/config/diff/k{}", self.rng.below(4)), None));
        }
        for (key, value) in &burst {
            match value {
                Some(v) => self.put(key, v),
                None => self.delete(key),
            };
        }
        burst
    }

    /// The apps (pod group namespaces) and nodes in the model, with names that exist nowhere.
    fn names(&self) -> (Vec<String>, Vec<String>) {
        let mut apps = BTreeSet::new();
        let mut nodes = BTreeSet::new();
        for key in self.current.keys() {
            if let Some(rest) = key.strip_prefix("/lain/deployd/pod_groups/") {
                apps.insert(rest.split('/').next().unwrap_or_default().to_owned());
            } else if let Some(rest) = key.strip_prefix("/lain/nodes/nodes/") {
                nodes.insert(rest.split(':').next().unwrap_or_default().to_owned());
            }
        }
        apps.insert("no-such-app".into());
        nodes.insert("no-such-node".into());
        (apps.into_iter().collect(), nodes.into_iter().collect())
    }
}

/// An `ip` of `/appname` or gRPC `Appname`: none, a container's (with a port at times), or an
/// odd one (spec §2.2 strips everything from the last `:`).
fn appname_ip(rng: &mut Rng, ips: &[String]) -> String {
    let ip = rng.pick(ips).clone();
    match rng.below(10) {
        0 => String::new(),
        1 => format!("{ip}:{}", 1 + rng.below(65535)),
        2 => rng
            .pick(&["[::1]:80", "::1", "[::1]", ":80", " ", "a:b:c"])
            .to_string(),
        _ => ip,
    }
}

/// One random request: method, path and query, source address. A third are `/appname`,
/// mostly from 127.0.0.1 (super; other sources are answered `super required`).
fn request(
    rng: &mut Rng,
    apps: &[String],
    nodes: &[String],
    ips: &[String],
) -> (&'static str, String, String) {
    if rng.chance(33) {
        let ip = appname_ip(rng, ips);
        let encoded: String = form_urlencoded::byte_serialize(ip.as_bytes()).collect();
        let slash = if rng.chance(10) { "/" } else { "" };
        let path = match (ip.is_empty(), rng.chance(50)) {
            (true, true) => format!("/appname{slash}"),
            _ => format!("/appname{slash}?ip={encoded}"),
        };
        let method = if rng.chance(10) { "HEAD" } else { "GET" };
        let source = match rng.chance(75) {
            true => "127.0.0.1".to_owned(),
            false => format!("127.0.0.{}", 2 + rng.below(4)),
        };
        return (method, path, source);
    }
    let app = rng.pick(apps).clone();
    let node = rng.pick(nodes).clone();
    let target = rng
        .pick(&["vip", "domain", "super_apps", "diff", "*", "nope"])
        .to_string();
    let paths = [
        "/v2/configwatcher".to_owned(),
        format!("/v2/configwatcher?target={target}"),
        format!("/v2/procwatcher?appname={app}"),
        "/v2/coreinfowatcher".to_owned(),
        format!("/v2/coreinfowatcher?appname={app}"),
        "/v2/proxywatcher".to_owned(),
        format!("/v2/proxywatcher?appname={app}"),
        "/v2/webrouter/webprocs".to_owned(),
        "/v2/streamrouter/streamprocs".to_owned(),
        "/v2/streamrouter/ports".to_owned(),
        format!("/v2/rebellion/localprocs?appname={app}"),
        format!("/v2/backupspec?appname={app}"),
        format!("/v2/containers?nodename={node}"),
        format!("/v2/localspecquery?nodename={node}"),
        format!("/v2/depends?target={app}"),
        "/v2/depends".to_owned(),
        "/v2/nodes".to_owned(),
        format!("/v2/nodes?name={node}"),
        "/v2/appswatcher".to_owned(),
        "/version".to_owned(),
    ];
    let mut path = rng.pick(&paths).clone();
    if rng.chance(10) {
        path = match path.split_once('?') {
            Some((p, q)) => format!("{p}/?{q}"),
            None => format!("{path}/"),
        };
    }
    let method = if rng.chance(10) { "HEAD" } else { "GET" };
    let source = format!("127.0.0.{}", 1 + rng.below(5));
    (method, path, source)
}

/// The documented differences: rule name → (what differs, README section).
fn documented() -> BTreeMap<&'static str, (&'static str, &'static str)> {
    DIFFERENCES
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                cols.len(),
                3,
                "differences.tsv: 3 tab-separated columns: {l:?}"
            );
            (cols[0], (cols[1], cols[2]))
        })
        .collect()
}

/// Arrays the original emits in random order, sorted (rule `random-order`).
fn sort_arrays(v: &mut Value) {
    match v {
        Value::Array(items) => {
            items.iter_mut().for_each(sort_arrays);
            items.sort_by_key(|x| x.to_string());
        }
        Value::Object(map) => map.values_mut().for_each(sort_arrays),
        _ => {}
    }
}

/// The host `/appname` (or `Appname`) asked from `caller` with `ip` looks up: `ip` (the first
/// value; empty is absent) or else the caller's own address, without its port (spec §2.4.15).
fn appname_host<'a>(ip: Option<&'a str>, caller: &'a str) -> &'a str {
    strip_port(ip.filter(|ip| !ip.is_empty()).unwrap_or(caller))
}

/// Rule `original-ip-bookkeeping`: for one `/appname` (or `Appname`) lookup of `host`, lainlet
/// answers what etcd's current data gives (`ours_is`), the original what the model of its IP
/// bookkeeping gives after the same writes (`theirs_is`), and the two differ.
fn ip_bookkeeping(
    churn: &Churn,
    host: &str,
    ours_is: impl Fn(&Lookup) -> bool,
    theirs_is: impl Fn(&Lookup) -> bool,
) -> Option<&'static str> {
    let kvs = churn
        .current
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()));
    let (data, book) = (data_app_name(kvs, host), churn.book.app_name(host));
    (data != book && ours_is(&data) && theirs_is(&book)).then_some("original-ip-bookkeeping")
}

/// What the rule `original-ip-bookkeeping` compares for the lookup of `host`, for a report.
fn ip_note(churn: &Churn, host: &str) -> String {
    let kvs = churn
        .current
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()));
    format!(
        "\n  (host {host:?}: etcd's data gives {:?}, the model of the original {:?})",
        data_app_name(kvs, host),
        churn.book.app_name(host)
    )
}

/// The host an `/appname` request asks about (see [`appname_host`]).
fn appname_request_host(path: &str, source: &str) -> String {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let ip = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "ip")
        .map(|(_, v)| v.into_owned());
    appname_host(ip.as_deref(), source).to_owned()
}

/// Whether an `/appname` answer is `lookup` (a `HEAD` answer has no body).
fn answers_lookup(answer: &Answer, lookup: &Lookup, head: bool) -> bool {
    let body_is = match lookup {
        _ if head => answer.text.is_empty(),
        Ok(app) => answer.json == Some(serde_json::json!({ "appname": app })),
        Err(text) => answer.text == *text,
    };
    let status = if lookup.is_ok() { 200 } else { 500 };
    answer.status == status && body_is
}

/// The rule that explains why `ours` and `theirs` differ for `method path` from `source`, if
/// one does.
fn explained(
    churn: &Churn,
    (method, path, source): (&str, &str, &str),
    ours: &Answer,
    theirs: &Answer,
) -> Option<&'static str> {
    let endpoint = path
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    // Both super (loopback is local; no container has a loopback IP), as the rule requires.
    if endpoint == "/appname" && source == "127.0.0.1" && ours.content_type == theirs.content_type {
        let host = appname_request_host(path, source);
        let head = method == "HEAD";
        return ip_bookkeeping(
            churn,
            &host,
            |l| answers_lookup(ours, l, head),
            |l| answers_lookup(theirs, l, head),
        );
    }
    if let (Some(a), Some(b)) = (&ours.json, &theirs.json) {
        if ours.status == theirs.status
            && matches!(endpoint, "/v2/procwatcher" | "/v2/localspecquery")
        {
            let (mut a, mut b) = (a.clone(), b.clone());
            sort_arrays(&mut a);
            sort_arrays(&mut b);
            if a == b {
                return Some("random-order");
            }
        }
    }
    None
}

/// `Get` of every view service with random requests, and the first message of its `Watch`;
/// `Appname.Get` five times. Not `StreamrouterStreamprocs`: the original's reply builder panics
/// on any pod group with stream ports and takes the process down (README, differences of the
/// gRPC answers).
fn grpc_batch(rng: &mut Rng, apps: &[String], nodes: &[String], ips: &[String]) -> Vec<Value> {
    let appnames: Vec<Value> = (0..5)
        .map(|_| {
            let request = serde_json::json!({ "ip": appname_ip(rng, ips) });
            grpc::call("Appname", "Get", request)
        })
        .collect();
    grpc::RPCS
        .iter()
        .filter(|rpc| !matches!(rpc.name, "StreamrouterStreamprocs" | "Appname"))
        .flat_map(|rpc| {
            let value = match rpc.param.map(|(field, _)| field) {
                None => None,
                Some("Nodeip") => Some(format!("192.168.77.{}", 21 + rng.below(3))),
                Some("Nodename" | "Name") => Some(rng.pick(nodes).clone()),
                Some("Target") if rpc.name == "Config" => Some(
                    rng.pick(&["vip", "domain", "super_apps", "diff", "nope"])
                        .to_string(),
                ),
                Some(_) => Some(rng.pick(apps).clone()),
            };
            let request = match (rpc.param, value) {
                (Some((field, _)), Some(v)) => serde_json::json!({ field: v }),
                _ => serde_json::json!({}),
            };
            let mut calls = vec![grpc::call(rpc.name, "Get", request.clone())];
            if rpc.watch {
                // The first message of a Watch: the current reply.
                calls.push(grpc::call(rpc.name, "Watch", request));
            }
            calls
        })
        .chain(appnames)
        .collect()
}

/// The rule that explains why two gRPC results of `call` differ, if one does.
fn grpc_explained(
    churn: &Churn,
    call: &Value,
    ours: &Value,
    theirs: &Value,
) -> Option<&'static str> {
    if call["service"] == "Appname" {
        // The Python client calls from 127.0.0.1: super, and its own address when `ip` is empty.
        let host = appname_host(call["request"]["ip"].as_str(), "127.0.0.1");
        let reply = |l: &Lookup| match l {
            Ok(app) => serde_json::json!({"reply": {"Data": {"appname": app}}}),
            Err(text) => serde_json::json!({"error": {"code": "UNKNOWN", "details": text}}),
        };
        return ip_bookkeeping(churn, host, |l| *ours == reply(l), |l| *theirs == reply(l));
    }
    if matches!(call["service"].as_str(), Some("Podgroup" | "Localspec")) {
        let (mut a, mut b) = (ours.clone(), theirs.clone());
        sort_arrays(&mut a);
        sort_arrays(&mut b);
        if a == b {
            return Some("random-order");
        }
    }
    None
}

/// An answer, as compared.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    json: Option<Value>,
    text: String,
}

impl Answer {
    fn of(r: HttpResponse) -> Answer {
        let text = String::from_utf8_lossy(&r.body).into_owned();
        Answer {
            status: r.status,
            content_type: r.header("Content-Type").map(str::to_owned),
            json: serde_json::from_slice(&r.body).ok(),
            text,
        }
    }

    fn same_as(&self, other: &Answer) -> bool {
        self.status == other.status
            && self.content_type == other.content_type
            && match (&self.json, &other.json) {
                (Some(a), Some(b)) => a == b,
                _ => self.text == other.text,
            }
    }
}

/// The counts of one run.
#[derive(Default)]
struct Tally {
    requests: usize,
    grpc: usize,
    /// `/appname` requests and `Appname` calls among them.
    appname: usize,
    streams: usize,
    documented: BTreeMap<&'static str, usize>,
    unexplained: Vec<String>,
}

/// Containers `svc` lists over `nodes` (`/v2/containers`, the original's container watcher).
fn container_count(svc: &Service, nodes: &[String]) -> usize {
    nodes
        .iter()
        .map(|n| {
            let v = svc.get(&format!("/v2/containers?nodename={n}")).json();
            v.as_object().map_or(0, |m| m.len())
        })
        .sum()
}

/// Waits until the original's watches are live. Its first watch of each prefix starts "from
/// now" after its first read, so a write in between is lost for good (spec §4.2 W6, a bug
/// lainlet does not have): after its reads (every `/debug` watcher holds keys), new pod groups
/// and portals are written until its views show one (a write lost in that gap is followed by
/// another); they stay in the data.
fn warm_up_original(theirs: &Service, w: &StoreWriter<'_>, churn: &mut Churn) {
    let families = ["config", "container", "depends", "nodes", "podgroup"];
    let loaded = wait_until(20 * SEC, || {
        let debug = theirs.get("/debug").json();
        families
            .iter()
            .all(|f| debug["watchers"][f]["TotalKeys"].as_i64().unwrap_or(0) > 0)
    });
    assert!(
        loaded,
        "the original read etcd: {}",
        theirs.get("/debug").text()
    );
    await_auth_watches(theirs, w, churn);
    let (_, nodes) = churn.names();
    for (prefix, view) in [
        ("/lain/deployd/pod_groups/", "coreinfowatcher"),
        ("/lain/deployd/depends/pods/", "depends"),
    ] {
        let spares: Vec<(String, Vec<u8>)> = churn
            .targets
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(prefix) && !churn.current.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let live = spares.iter().take(5).any(|(key, value)| {
            let before = (
                theirs.get(&format!("/v2/{view}")).text(),
                container_count(theirs, &nodes),
            );
            w.put(key, value);
            churn.put(key, value);
            wait_until(3 * SEC, || {
                let shown = theirs.get(&format!("/v2/{view}")).text() != before.0;
                shown && (view != "coreinfowatcher" || container_count(theirs, &nodes) != before.1)
            })
        });
        assert!(
            live,
            "the original's watch of {prefix} shows none of 5 new keys"
        );
    }
}

/// Waits until the watches of the original's auth module are live. They are watches of their
/// own (the IP tables of `/appname` and of every authorisation, `oracle/`), with the same gap
/// after their first read: a pod group and a portal with IPs of their own are written until the
/// original resolves one of the IPs, then deleted (a view's watch that missed the put takes the
/// delete of a key it never had for nothing).
fn await_auth_watches(theirs: &Service, w: &StoreWriter<'_>, churn: &mut Churn) {
    for (n, make) in [
        (0, pod_group_at as fn(&str, &[&str]) -> (String, Vec<u8>)),
        (1, |s: &str, ips: &[&str]| portal_at(s, "diff-probe", ips)),
    ] {
        let mut key = String::new();
        let live = (1..=5).any(|i| {
            let ip = format!("172.31.{n}.{i}");
            let value;
            (key, value) = make("diff-probe", &[&ip]);
            w.put(&key, &value);
            churn.put(&key, &value);
            wait_until(3 * SEC, || {
                theirs.get(&format!("/appname?ip={ip}")).status == 200
            })
        });
        assert!(live, "the original's auth watch shows none of 5 probes");
        w.delete(&key);
        churn.delete(&key);
    }
}

/// Waits until `svc` serves config key `diff/marker` = `value`.
fn serves_marker(svc: &Service, value: &str) -> bool {
    wait_until(20 * SEC, || {
        svc.get("/v2/configwatcher?target=diff/marker").json()["diff/marker"] == value
    })
}

/// Streams opened on both before the churn (path, ours, theirs).
const STREAMS: [&str; 5] = [
    "/v2/configwatcher?watch=1",
    "/v2/coreinfowatcher?watch=1",
    "/v2/depends?watch=1",
    "/v2/nodes?watch=1",
    "/v2/webrouter/webprocs?watch=1",
];

/// Reads `stream` until its newest data equals `want` (bounded); that data.
fn converge(stream: &mut SseStream, want: &Value) -> Option<Value> {
    let deadline = Instant::now() + 20 * SEC;
    let mut last = None;
    while Instant::now() < deadline {
        match stream.next_frame(Duration::from_millis(500)) {
            Some(frame) => {
                if let Some(data) = &frame.data {
                    last = serde_json::from_str::<Value>(data).ok();
                }
            }
            None if last.is_some() => {}
            None => continue,
        }
        if last.as_ref() == Some(want) {
            return last;
        }
    }
    last
}

fn differential(kind: ServiceKind, setup: EtcdSetup) {
    let Some(orig_bin) = original_binary() else {
        return;
    };
    if !setup.available_or_skip() {
        return;
    }
    let seed = env_number("LAINLET_DIFF_SEED", 0x5eed_0019);
    let secs = env_number("LAINLET_DIFF_SECS", 12);
    let rules = documented();
    let etcd = EtcdServer::with_setup(setup, &[]).expect("start etcd");
    let w = etcd.with_store(Store::V2);
    let mut churn = Churn::new(seed);
    w.load(
        churn
            .current
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice())),
    );
    w.put("/lain/config/diff/marker", "start");

    // gRPC on both when the binary serves it.
    let grpc_addrs = (kind == ServiceKind::Tokio).then(|| (free_addr(), free_addr()));
    let ours = match &grpc_addrs {
        Some((addr, _)) => command_in(kind, &etcd, Store::V2)
            .args(["--grpc.addr", addr.as_str()])
            .start()
            .expect("start lainlet"),
        None => start_in(kind, &etcd, Store::V2),
    };
    let orig_grpc = grpc_addrs
        .as_ref()
        .map_or_else(free_addr, |(_, b)| b.clone());
    let theirs = start_original(&orig_bin, &etcd, &orig_grpc);
    warm_up_original(&theirs, &w, &mut churn);
    w.put("/lain/config/diff/marker", "warm");
    assert!(serves_marker(&ours, "warm") && serves_marker(&theirs, "warm"));
    let mut streams: Vec<(&str, SseStream, SseStream)> = STREAMS
        .iter()
        .map(|p| (*p, ours.watch(p), theirs.watch(p)))
        .collect();

    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut tally = Tally::default();
    let ips = churn.ips();
    let started = Instant::now();
    let mut round = 0;
    // The writes of every round, for the reproduction of a difference.
    let mut writes: Vec<String> = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        round += 1;
        for (key, value) in churn.burst() {
            match value {
                Some(v) => {
                    writes.push(format!("round {round}: put {key} ({} bytes)", v.len()));
                    w.put(&key, v)
                }
                None => {
                    writes.push(format!("round {round}: delete {key}"));
                    w.delete(&key)
                }
            };
        }
        let marker = format!("round-{round}");
        w.put("/lain/config/diff/marker", &marker);
        assert!(
            serves_marker(&ours, &marker),
            "lainlet applies round {round}"
        );
        assert!(
            serves_marker(&theirs, &marker),
            "the original applies round {round}"
        );
        let (apps, nodes) = churn.names();
        if let Some((ours_grpc, theirs_grpc)) = grpc_addrs.as_ref().filter(|_| round % 10 == 1) {
            let batch = grpc_batch(&mut rng, &apps, &nodes, &ips);
            let a = grpc::calls(ours_grpc, &[], &batch);
            let b = grpc::calls(theirs_grpc, &[], &batch);
            for ((call, a), b) in batch.iter().zip(&a).zip(&b) {
                tally.grpc += 1;
                tally.appname += usize::from(call["service"] == "Appname");
                if a == b {
                    continue;
                }
                match grpc_explained(&churn, call, a, b) {
                    Some(rule) => *tally.documented.entry(rule).or_default() += 1,
                    None => tally.unexplained.push(format!(
                        "seed {seed:#x}, round {round}: gRPC {call}\n  lainlet:  {a}\n  \
                         original: {b}{}",
                        match call["service"] == "Appname" {
                            true => ip_note(
                                &churn,
                                appname_host(call["request"]["ip"].as_str(), "127.0.0.1")
                            ),
                            false => String::new(),
                        }
                    )),
                }
            }
        }
        for _ in 0..20 {
            let (method, path, source) = request(&mut rng, &apps, &nodes, &ips);
            let client = HttpClient::from_ip(&source);
            let ask = |svc: &Service| {
                Answer::of(
                    client
                        .request(method, svc.addr(), &path, &[], b"")
                        .unwrap_or_else(|e| panic!("{method} {path}: {e}")),
                )
            };
            let (a, b) = (ask(&ours), ask(&theirs));
            tally.requests += 1;
            tally.appname += usize::from(path.starts_with("/appname"));
            if a.same_as(&b) {
                continue;
            }
            // The original watches each prefix on its own: the marker in /lain/config/ does
            // not say it has applied the pod group writes made before it. It may catch up to
            // lainlet's answer, which must not change meanwhile (lainlet's one watch is in
            // order: having the marker, it has everything before it).
            // Or it may catch up to an answer a rule explains.
            let request = (method, path.as_str(), source.as_str());
            let explain = |b: &Answer| explained(&churn, request, &a, b);
            let lagged = |b: &Answer| explain(b).is_none() && !a.same_as(b);
            let mut b = b;
            let waited = lagged(&b)
                && wait_until(3 * SEC, || {
                    b = ask(&theirs);
                    !lagged(&b)
                });
            let rule = match waited && a.same_as(&b) {
                true => ask(&ours).same_as(&a).then_some("original-prefix-lag"),
                false => explain(&b),
            };
            match rule {
                Some(rule) => *tally.documented.entry(rule).or_default() += 1,
                None => tally.unexplained.push(format!(
                    "seed {seed:#x}, round {round}: {method} {path} from {source}\n  lainlet:  \
                     {} {:?} {}\n  original: {} {:?} {}{}",
                    a.status,
                    a.content_type,
                    a.text,
                    b.status,
                    b.content_type,
                    b.text,
                    match path.starts_with("/appname") {
                        true => ip_note(&churn, &appname_request_host(&path, &source)),
                        false => String::new(),
                    }
                )),
            }
        }
    }
    // Every stream ends at its server's GET; both servers' final states compared.
    for (path, mine, orig) in &mut streams {
        let get = path.replace("?watch=1", "");
        let (want_ours, want_theirs) = (ours.get(&get).json(), theirs.get(&get).json());
        let (a, b) = (converge(mine, &want_ours), converge(orig, &want_theirs));
        tally.streams += 1;
        let (ours_current, theirs_current) = (
            a.as_ref() == Some(&want_ours),
            b.as_ref() == Some(&want_theirs),
        );
        if ours_current && theirs_current && a == b {
            continue;
        }
        // These streams are not read during the churn: slow readers. The original drops what
        // it cannot write at once and may leave such a reader stale for good (spec §3.5).
        if ours_current && !theirs_current && want_ours == want_theirs {
            *tally.documented.entry("original-stale-stream").or_default() += 1;
            continue;
        }
        tally.unexplained.push(format!(
            "seed {seed:#x}: stream {path} after {round} rounds (each at its own GET: lainlet \
             {ours_current}, original {theirs_current})\n  lainlet ended at:  {a:?}\n  original \
             ended at: {b:?}"
        ));
    }
    for rule in tally.documented.keys() {
        assert!(
            rules.contains_key(rule),
            "rule {rule} is not in differences.tsv"
        );
    }
    println!(
        "differential: {} {}: {round} rounds; {} requests, {} grpc calls ({} of them /appname \
         or Appname), {} streams compared; {} documented differences {:?}; {} unexplained",
        setup.describe(),
        kind.bin_name(),
        tally.requests,
        tally.grpc,
        tally.appname,
        tally.streams,
        tally.documented.values().sum::<usize>(),
        tally.documented,
        tally.unexplained.len()
    );
    assert!(
        tally.unexplained.is_empty(),
        "{} differences not in tests/differential/differences.tsv:\n{}\nthe data: the \
         original's fixtures and a generated cluster (seed {seed:#x}), then:\n{}",
        tally.unexplained.len(),
        tally.unexplained.join("\n"),
        writes
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

conformance_test!(fn lainlet_answers_as_the_original_through_an_etcd2_proxy_under_churn(kind) {
    differential(kind, EtcdSetup::Etcd2Proxy);
});

conformance_test!(fn lainlet_answers_as_the_original_on_etcd34_v2_under_churn(kind) {
    differential(kind, EtcdSetup::Etcd34);
});

#[test]
fn every_documented_difference_is_explained_in_the_readme() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    for (rule, (what, section)) in documented() {
        assert!(
            readme.contains(section),
            "differences.tsv row {rule} ({what}) points at README section {section:?}, which \
             is not in README.md"
        );
    }
}

/// A pod group of `app` (`<app>/<app>.web.web`), one pod per container IP, in deployd's format.
fn pod_group_at(app: &str, ips: &[&str]) -> (String, Vec<u8>) {
    use lainlet_fixtures::{ContainerParams, ContainerSpecParams, PodGroupParams, PodParams};
    let p = PodGroupParams {
        name: format!("{app}.web.web"),
        namespace: app.to_owned(),
        version: 1,
        annotation: "{}".to_owned(),
        dependencies: vec![],
        containers: vec![ContainerSpecParams::lain(
            app,
            "release-1",
            "web",
            &["./web"],
            8080,
        )],
        pods: ips
            .iter()
            .enumerate()
            .map(|(i, ip)| PodParams {
                instance_no: i as i64 + 1,
                containers: vec![ContainerParams {
                    id: format!("{:064x}", 0xc0_ffee + i),
                    node_name: "node1".into(),
                    node_ip: "192.168.77.21".into(),
                    container_ip: (*ip).to_owned(),
                }],
            })
            .collect(),
    };
    (p.key(), lainlet_fixtures::pod_group_value(&p))
}

/// A portal `<service>.portal.portal-<client>` of `service` for app `client`, one shared pod per
/// container IP, in deployd's format.
fn portal_at(service: &str, client: &str, ips: &[&str]) -> (String, Vec<u8>) {
    use lainlet_fixtures::{ContainerParams, ContainerSpecParams, PortalParams, SharedPodParams};
    let name = format!("{service}.portal.portal-{client}");
    let p = PortalParams {
        name: name.clone(),
        service_app: service.to_owned(),
        version: 1,
        annotation: lainlet_fixtures::portal_annotation(service),
        container: ContainerSpecParams::lain(service, "release-1", &name, &["./portal"], 0)
            .with_service_name(service),
        pods: ips
            .iter()
            .enumerate()
            .map(|(i, ip)| SharedPodParams {
                node_name: format!("node{}", i + 1),
                client_app: client.to_owned(),
                ref_count: 1,
                container: ContainerParams {
                    id: format!("{:064x}", 0xbeef + i),
                    node_name: format!("node{}", i + 1),
                    node_ip: format!("192.168.77.{}", 21 + i),
                    container_ip: (*ip).to_owned(),
                },
            })
            .collect(),
    };
    (p.key(), lainlet_fixtures::depends_value(&p))
}

/// `svc`'s answer to `/appname?ip=<ip>` from 127.0.0.1 (super): the app, or the error text.
fn app_name_of(svc: &Service, ip: &str) -> Lookup {
    let r = svc.get(&format!("/appname?ip={ip}"));
    match r.status {
        200 => Ok(r.json()["appname"].as_str().unwrap_or_default().to_owned()),
        500 => Err(r.text()),
        other => panic!("/appname?ip={ip}: status {other}: {}", r.text()),
    }
}

/// Waits (10 s) until `svc` answers `want` for `ip`; the last answer.
fn await_app_name(svc: &Service, ip: &str, want: &Lookup) -> Lookup {
    let mut last = app_name_of(svc, ip);
    wait_until(10 * SEC, || {
        last = app_name_of(svc, ip);
        &last == want
    });
    last
}

/// The original's IP → app bookkeeping (module docs of `oracle/`), reproduced with single
/// writes against the real original on a 2.3.7 member behind a proxy (etcd 3.4 without 2.3.7),
/// next to lainlet, which answers from etcd's data. Every step's write also lists a fresh IP,
/// and both servers are first seen answering it, so each server has applied the write before
/// the shared IP is asked. Each answer of the original is also the one [`IpBook`] (the model
/// that recognises the `original-ip-bookkeeping` differences) predicts.
#[test]
fn the_originals_ip_map_follows_the_last_writer_not_etcds_data() {
    let Some(bin) = original_binary() else {
        return;
    };
    let setup = if EtcdSetup::Etcd2Proxy.available_or_skip() {
        EtcdSetup::Etcd2Proxy
    } else {
        EtcdSetup::Etcd34
    };
    if !setup.available_or_skip() {
        return;
    }
    run_for_kind(ServiceKind::Tokio, |kind| {
        let etcd = EtcdServer::with_setup(setup, &[]).expect("start etcd");
        let w = etcd.with_store(Store::V2);
        let (x, y, z) = ("172.20.50.2", "172.20.50.3", "172.20.60.2");
        let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        // w and v are listed twice from the start: the full read decides them (tree order).
        let (w_ip, v_ip) = ("172.20.52.1", "172.20.62.1");
        data.extend([
            pod_group_at("alpha", &[x]),
            portal_at("one", "alpha", &[z]),
            pod_group_at("delta", &[w_ip]),
            pod_group_at("delta-x", &[w_ip]),
            portal_at("one", "beta", &[v_ip]),
            portal_at("three", "alpha", &[v_ip]),
        ]);
        w.load(data.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        let mut book = IpBook::default();
        book.refresh(data.iter().map(|(k, v)| (k.as_str(), v.as_slice())));

        let ours = start_in(kind, &etcd, Store::V2);
        let theirs = start_original(&bin, &etcd, &free_addr());
        let alpha = Ok("alpha".to_owned());
        let one = Ok("one".to_owned());
        assert_eq!(await_app_name(&theirs, x, &alpha), alpha);
        assert_eq!(await_app_name(&theirs, z, &one), one);
        // Of two pod groups the last in etcd's tree order (`delta/…` before `delta-x/…`), of
        // two portals the first.
        let initial = (app_name_of(&theirs, w_ip), app_name_of(&theirs, v_ip));
        assert_eq!(initial, (Ok("delta-x".into()), one.clone()));
        assert_eq!(initial, (book.app_name(w_ip), book.app_name(v_ip)));
        // The auth module's watches start "from now" after its first read (spec W6): probe
        // keys with IPs of their own until the original shows one of them.
        for (n, make) in [
            (0, pod_group_at as fn(&str, &[&str]) -> (String, Vec<u8>)),
            (1, |s: &str, ips: &[&str]| portal_at(s, "probe", ips)),
        ] {
            let live = (1..=5).any(|i| {
                let ip = format!("172.20.9{n}.{i}");
                let (key, value) = make("probe", &[&ip]);
                w.put(&key, &value);
                data.insert(key.clone(), value.clone());
                book.put(&key, &value);
                app_name_of(&theirs, &ip).is_ok()
                    || wait_until(3 * SEC, || app_name_of(&theirs, &ip).is_ok())
            });
            assert!(live, "the original's auth watch shows none of 5 probes");
        }

        // Each step: a write listing a fresh IP, then the shared IP's answers.
        let mut step = |what: &str, key: &str, value: Option<Vec<u8>>, fresh: &str, ip: &str| {
            match &value {
                Some(v) => {
                    w.put(key, v);
                    book.put(key, v);
                    data.insert(key.to_owned(), v.clone());
                }
                None => {
                    w.delete(key);
                    book.delete(key);
                    data.remove(key);
                }
            }
            let kvs = || data.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
            let (fresh_ours, fresh_theirs) = (data_app_name(kvs(), fresh), book.app_name(fresh));
            assert_eq!(
                await_app_name(&ours, fresh, &fresh_ours),
                fresh_ours,
                "{what}"
            );
            assert_eq!(
                await_app_name(&theirs, fresh, &fresh_theirs),
                fresh_theirs,
                "{what}: the original applied it"
            );
            let answers = (app_name_of(&ours, ip), app_name_of(&theirs, ip));
            assert_eq!(answers.0, data_app_name(kvs(), ip), "{what}: lainlet");
            assert_eq!(
                answers.1,
                book.app_name(ip),
                "{what}: the model of the original"
            );
            answers
        };
        let unknown = |ip: &str| Err(format!("unkown address {ip}"));

        // Two pod groups list x: the original answers the last writer (auth.go:196-201),
        // lainlet the first by key (`alpha/…` before `beta/…`).
        let (key, value) = pod_group_at("beta", &[x, "172.20.51.1"]);
        let got = step("beta lists x", &key, Some(value), "172.20.51.1", x);
        assert_eq!(got, (alpha.clone(), Ok("beta".into())));
        // beta goes: the original drops x with its last writer (watcher.go:154-161), though
        // alpha still lists it in etcd.
        let got = step("beta deleted", &key, None, "172.20.51.1", x);
        assert_eq!(got, (alpha.clone(), unknown(x)));
        // alpha written again (a fresh IP added): x is back.
        let (key, value) = pod_group_at("alpha", &[x, "172.20.51.2"]);
        let got = step("alpha rewritten", &key, Some(value), "172.20.51.2", x);
        assert_eq!(got, (alpha.clone(), alpha.clone()));
        // alpha's container moves from x to y: the original keeps x (spec W9), etcd has no x.
        let (key, value) = pod_group_at("alpha", &[y, "172.20.51.2"]);
        let got = step("alpha moves x to y", &key, Some(value), y, x);
        assert_eq!(got, (unknown(x), alpha.clone()));
        // gamma's container gets an IP that y is a string prefix of; alpha goes: the original
        // deletes y recursively (cacher.go:252-262), and gamma's IP with it.
        let y0 = "172.20.50.30";
        let (gamma, value) = pod_group_at("gamma", &[y0]);
        let got = step("gamma lists y0", &gamma, Some(value), y0, y0);
        assert_eq!(got, (Ok("gamma".into()), Ok("gamma".into())));
        let got = step("alpha deleted", &key, None, "172.20.51.2", y0);
        assert_eq!(got, (Ok("gamma".into()), unknown(y0)));

        // The same for portals (auth.go:216-244): two portals list z; the last writer's
        // service replaces the other's, and goes with it.
        let (key, value) = portal_at("two", "alpha", &[z, "172.20.61.1"]);
        let got = step("portal two lists z", &key, Some(value), "172.20.61.1", z);
        assert_eq!(got, (one.clone(), Ok("two".into())));
        let got = step("portal two deleted", &key, None, "172.20.61.1", z);
        assert_eq!(got, (one.clone(), unknown(z)));
    });
}
