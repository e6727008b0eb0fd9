//! The original lainlet as a process of the tests (`e2e_differential.rs`), and a model of its
//! container IP → app bookkeeping, against which its `/appname` answers are recognised.
//!
//! # The original's IP bookkeeping (`auth/auth.go` and `watcher/watcher.go` of `1b3d1b8`)
//!
//! `AppName(ip)` (auth.go:156-175) looks the IP up in the cache of the auth module's own pod
//! group watcher (a map IP → `{AppName, …}`), then in the cache of its own depends watcher (IP →
//! service names, the first one wins), else fails with `unkown address <ip>`; an empty IP fails
//! earlier, in the cache lookup (watcher.go:194-195: `empty key`). Both caches are kept by the
//! generic watcher (watcher.go:99-174) with a convert function and an "invert" table:
//!
//! * **a full read** (start, and after a broken watch: `refresh`, watcher.go:81-96) replaces the
//!   cache by the conversion of every key in etcd's sorted tree order (`GetTree` with
//!   `Sort: true`, depth first). `podgroupConvert` (auth.go:185-206) sets `ip → app` for every
//!   container, so of two pod groups listing one IP the **last** in tree order wins;
//!   `dependsConvert` (auth.go:216-244) appends, so the **first** service wins. Each also sets
//!   `invert[ip] = etcd key` (auth.go:201, 238), the last writer. The invert tables are never
//!   reset.
//! * **a put** of one key (watcher.go:142-153) converts that key's value alone and `Put`s each
//!   IP it lists: the **last writer wins** (`ip → its app`, or `ip → [its service]`, replacing
//!   other services), and becomes `invert[ip]`. IPs the key listed before and no longer lists are
//!   **left as they were** (spec W9: a container that moved keeps its old app).
//! * **a delete** of key K (watcher.go:154-162) takes every IP whose `invert[ip]` starts with K
//!   — the IP's last writer — **even when another key still lists the IP**, and leaves IPs K
//!   listed but another key wrote last. Each IP taken is deleted *recursively*
//!   (`Delete(k, true)`, cacher.go:252-262: every cache key that starts with it), so deleting
//!   the writer of `172.20.10.3` also drops `172.20.10.30` … `172.20.10.39`, whoever wrote them.
//!
//! So after a container IP is reused (deployd moves containers; calico hands a freed IP to the
//! next container), the original's answer depends on the order of the writes, not on etcd's
//! data: a delete of the last writer makes an IP that another pod group still lists
//! `unkown address`, and an update that drops an IP keeps its old app.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lainlet_tests::*;
use serde_json::Value;

use crate::common::SEC;

/// Environment variable naming the original binary (default `target/original/lainlet`).
pub const ORIGINAL_ENV: &str = "LAINLET_TEST_ORIGINAL";

/// The original's binary, or `None` (after a note) when it is not built outside CI.
pub fn original_binary() -> Option<PathBuf> {
    let path = std::env::var_os(ORIGINAL_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/original/lainlet"));
    // It runs in a UTS namespace of its own (`unshare --uts`), which takes root.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if path.is_file() && root {
        return Some(path);
    }
    if path.is_file() {
        eprintln!("[differential] skipping: not root (the original runs under unshare --uts)");
        return None;
    }
    let msg = format!(
        "the original lainlet is not built at {} (scripts/build-original.sh, or set {ORIGINAL_ENV})",
        path.display()
    );
    assert!(!is_ci(), "{msg}");
    eprintln!("[differential] skipping: {msg}");
    None
}

/// The original, started on `etcd` with its own flags, serving once it answers a GET. It takes
/// the node's name from the operating system's host name (spec §2.4.8), where lainlet has
/// `--hostname` (the harness passes `node1`): it runs in a UTS namespace of its own whose host
/// name is `node1` (`unshare --uts`, as root).
pub fn start_original(bin: &Path, etcd: &EtcdServer, grpc: &str) -> Service {
    let web = free_addr();
    let mut svc = Service::command(ServiceKind::Tokio)
        .bin("unshare")
        .args([
            "--uts".to_owned(),
            "sh".to_owned(),
            "-c".to_owned(),
            r#"hostname node1 && exec "$0" "$@""#.to_owned(),
            bin.display().to_string(),
            format!("-web={web}"),
            format!("-grpc.addr={grpc}"),
            format!("-etcd={}", etcd.endpoint()),
            "-ip=192.168.77.21".to_owned(),
        ])
        .spawn()
        .expect("start the original");
    svc.wait_listening(20 * SEC).expect("the original listens");
    assert!(
        wait_until(20 * SEC, || svc.get("/v2/configwatcher").status == 200),
        "the original serves"
    );
    svc
}

/// etcd prefix of pod groups.
pub const POD_GROUPS: &str = "/lain/deployd/pod_groups/";
/// etcd prefix of portal (depends) pods.
pub const DEPENDS: &str = "/lain/deployd/depends/pods/";

/// The `(container IP, app)` pairs a pod group value lists, in value order (empty IPs
/// included, as the original's conversion keeps them); none if it does not decode.
pub fn pod_group_ips(value: &[u8]) -> Vec<(String, String)> {
    let Ok(v) = serde_json::from_slice::<Value>(value) else {
        return Vec::new();
    };
    let app = v["Spec"]["Namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let pods = v["Pods"].as_array().cloned().unwrap_or_default();
    pods.iter()
        .flat_map(|p| p["Containers"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            let ip = c["ContainerIp"].as_str().unwrap_or_default().to_owned();
            (ip, app.clone())
        })
        .collect()
}

/// The container IPs a depends value (`{node: {client app: shared pod}}`) lists.
pub fn depends_ips(value: &[u8]) -> Vec<String> {
    let Ok(Value::Object(nodes)) = serde_json::from_slice::<Value>(value) else {
        return Vec::new();
    };
    nodes
        .values()
        .filter_map(Value::as_object)
        .flat_map(|apps| apps.values())
        .flat_map(|pod| {
            pod["Pod"]["Containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| c["ContainerIp"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The service a portal key's name stands for (spec §2.2): with more than 3 dot-parts, all but
/// the last two; otherwise the first.
pub fn service_name(portal: &str) -> String {
    let parts: Vec<&str> = portal.split('.').collect();
    if parts.len() > 3 {
        parts[..parts.len() - 2].join(".")
    } else {
        parts[0].to_owned()
    }
}

/// etcd's sorted tree order of two keys (a recursive sorted GET read depth first): by path
/// segment, so `…/hello/x` comes before `…/hello-service/y`.
fn tree_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// How an `/appname` lookup ends: the app, or the error text (status 500).
pub type Lookup = Result<String, String>;

/// The original's `AppName` cache and invert tables (see the module docs), replayed from the
/// writes it watched.
#[derive(Clone, Debug, Default)]
pub struct IpBook {
    /// The auth pod group watcher's cache: IP → app.
    apps: BTreeMap<String, String>,
    /// `podgroupInvertTable`: IP → the etcd key that wrote it last.
    app_writer: BTreeMap<String, String>,
    /// The auth depends watcher's cache: IP → service names.
    services: BTreeMap<String, Vec<String>>,
    /// `dependsInvertTable`: IP → the etcd key that wrote it last.
    service_writer: BTreeMap<String, String>,
}

impl IpBook {
    /// The original's full read of `kvs` (its start, or a refresh after a broken watch).
    pub fn refresh<'a>(&mut self, kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>) {
        let mut kvs: Vec<(&str, &[u8])> = kvs.into_iter().collect();
        kvs.sort_by(|a, b| tree_order(a.0, b.0));
        self.apps.clear();
        self.services.clear();
        for (key, value) in kvs {
            if key.starts_with(POD_GROUPS) {
                for (ip, app) in pod_group_ips(value) {
                    self.apps.insert(ip.clone(), app);
                    self.app_writer.insert(ip, key.to_owned());
                }
            } else if let Some(portal) = key.strip_prefix(DEPENDS) {
                let service = service_name(portal);
                for ip in depends_ips(value) {
                    self.services
                        .entry(ip.clone())
                        .or_default()
                        .push(service.clone());
                    self.service_writer.insert(ip, key.to_owned());
                }
            }
        }
    }

    /// A put of `key` as the original's watch applies it.
    pub fn put(&mut self, key: &str, value: &[u8]) {
        if key.starts_with(POD_GROUPS) {
            for (ip, app) in pod_group_ips(value) {
                self.apps.insert(ip.clone(), app);
                self.app_writer.insert(ip, key.to_owned());
            }
        } else if let Some(portal) = key.strip_prefix(DEPENDS) {
            // One key's conversion: every IP it lists maps to its service alone (twice if the
            // value lists the IP twice), replacing what other keys wrote.
            let service = service_name(portal);
            let mut converted: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for ip in depends_ips(value) {
                converted.entry(ip).or_default().push(service.clone());
            }
            for (ip, services) in converted {
                self.services.insert(ip.clone(), services);
                self.service_writer.insert(ip, key.to_owned());
            }
        }
    }

    /// A delete of `key` as the original's watch applies it: every IP whose last writer starts
    /// with `key` goes, and with it every IP it is a string prefix of.
    pub fn delete(&mut self, key: &str) {
        if key.starts_with(POD_GROUPS) || POD_GROUPS.starts_with(key) {
            delete_written(&mut self.apps, &self.app_writer, key);
        }
        if key.starts_with(DEPENDS) || DEPENDS.starts_with(key) {
            delete_written(&mut self.services, &self.service_writer, key);
        }
    }

    /// The original's answer to `/appname?ip=<host>` (`host` without its port).
    pub fn app_name(&self, host: &str) -> Lookup {
        if host.is_empty() {
            return Err("empty key".to_owned());
        }
        if let Some(app) = self.apps.get(host) {
            return Ok(app.clone());
        }
        match self.services.get(host).and_then(|s| s.first()) {
            Some(service) => Ok(service.clone()),
            None => Err(format!("unkown address {host}")),
        }
    }
}

/// The original's DELETE of `key` on a cache keyed by IP (watcher.go:154-162): the IPs in the
/// cache whose last writer starts with `key`, each deleted with every cache key it is a prefix
/// of (cacher.go:252-262).
fn delete_written<V>(
    cache: &mut BTreeMap<String, V>,
    writers: &BTreeMap<String, String>,
    key: &str,
) {
    let taken: Vec<String> = cache
        .keys()
        .filter(|ip| writers.get(*ip).is_some_and(|w| w.starts_with(key)))
        .cloned()
        .collect();
    cache.retain(|ip, _| !taken.iter().any(|t| ip.starts_with(t.as_str())));
}

/// The answer to `/appname?ip=<host>` that etcd's data `kvs` gives (spec §2.2: the app of a
/// pod group listing the IP, else the service of a portal listing it), where several keys
/// listing the IP are decided as lainlet's README says: the pod group, then the portal, whose
/// key (`<app>/<pod group>`, `<portal>`) sorts first.
pub fn data_app_name<'a>(kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>, host: &str) -> Lookup {
    if host.is_empty() {
        return Err("empty key".to_owned());
    }
    let mut app: Option<(&str, String)> = None;
    let mut service: Option<(&str, String)> = None;
    for (key, value) in kvs {
        if let Some(owner) = key.strip_prefix(POD_GROUPS) {
            let listed = pod_group_ips(value).into_iter().find(|(ip, _)| ip == host);
            if let Some((_, a)) = listed {
                if app.as_ref().is_none_or(|(o, _)| owner < *o) {
                    app = Some((owner, a));
                }
            }
        } else if let Some(portal) = key.strip_prefix(DEPENDS) {
            let listed = depends_ips(value).iter().any(|ip| ip == host);
            if listed && service.as_ref().is_none_or(|(o, _)| portal < *o) {
                service = Some((portal, service_name(portal)));
            }
        }
    }
    match app.or(service) {
        Some((_, name)) => Ok(name),
        None => Err(format!("unkown address {host}")),
    }
}

/// The host part of an `ip` parameter, as the original strips it (spec §2.2: everything before
/// the last `:`).
pub fn strip_port(ip: &str) -> &str {
    ip.rsplit_once(':').map_or(ip, |(host, _)| host)
}
