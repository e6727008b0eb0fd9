//! The decoded cluster state: one map per source plus the derived indexes the views and the
//! authorisation need. Every change reports which cache keys it touched, so the engine can
//! tell which views to re-render.

mod keys;
mod multi;

pub use keys::{classify, Family, Source};
pub use multi::{select, MultiIndex};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::model::{depends::service_name, Depends, PodGroup};

/// One entry of the container index (`/v2/containers`, `/v2/localspecquery`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ContainerEntry {
    /// `Spec.Namespace`.
    pub app: String,
    /// AppVersion rule of spec §2.3.
    pub app_version: String,
    /// `Spec.Name`.
    pub proc: String,
    /// Runtime node name.
    pub nodename: String,
    /// Runtime node IP.
    pub nodeip: String,
    /// Container IP.
    pub ip: String,
    /// Runtime container port.
    pub port: i64,
    /// Pod instance number.
    #[serde(rename = "instanceNo")]
    pub instance_no: i64,
}

/// What a container IP belongs to (the original's IP→app table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppIdentity {
    /// `Spec.Namespace` of the pod group.
    pub app: String,
}

/// A decoded value for one cache key.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// A raw config string.
    Config(String),
    /// A pod group.
    PodGroup(PodGroup),
    /// A depends (portal) value.
    Depends(Depends),
    /// A node object (or `null`).
    Node(serde_json::Value),
}

/// A cache key whose data changed, with the family it belongs to.
pub type Touched = (Family, String);

/// The in-memory cluster state.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// Config key (relative to `/lain/config/`) → raw value.
    pub config: BTreeMap<String, String>,
    /// `<ns>/<name>` → pod group.
    pub pod_groups: BTreeMap<String, Arc<PodGroup>>,
    /// `<node name or ip>/<container id>` → container, owned by pod group keys.
    pub containers: MultiIndex<Arc<ContainerEntry>>,
    /// Portal pod name → depends value.
    pub depends: BTreeMap<String, Arc<Depends>>,
    /// `<name>:<ip>:<port>` → node object.
    pub nodes: BTreeMap<String, Arc<serde_json::Value>>,
    /// Container IP → app, owned by pod group keys.
    pub ip_apps: MultiIndex<AppIdentity>,
    /// Portal container IP → service name, owned by depends keys.
    pub ip_services: MultiIndex<String>,
    /// Names under `/lain/config/super_apps/`.
    pub super_apps: BTreeSet<String>,
    /// The fleet's announcements (`/lain/lainlet/nodes/`), kept apart from the v2 state.
    pub fleet: crate::fleet::FleetTable,
}

impl ClusterState {
    /// Sets (`Some`) or removes (`None`) the value of `cache_key` and appends every cache key
    /// whose data this changed to `touched`.
    pub fn set(
        &mut self,
        source: Source,
        cache_key: &str,
        value: Option<Decoded>,
        touched: &mut Vec<Touched>,
    ) {
        match (source, value) {
            (Source::Config, Some(Decoded::Config(v))) => {
                self.set_super_app(cache_key, true);
                self.config.insert(cache_key.to_owned(), v);
            }
            (Source::Config, _) => {
                self.set_super_app(cache_key, false);
                self.config.remove(cache_key);
            }
            (Source::PodGroup, value) => {
                let new = match value {
                    Some(Decoded::PodGroup(pg)) => Some(Arc::new(pg)),
                    _ => None,
                };
                self.set_pod_group(cache_key, new, touched);
            }
            (Source::Depends, value) => {
                let new = match value {
                    Some(Decoded::Depends(d)) => Some(Arc::new(d)),
                    _ => None,
                };
                self.set_depends(cache_key, new);
            }
            (Source::Node, Some(Decoded::Node(v))) => {
                self.nodes.insert(cache_key.to_owned(), Arc::new(v));
            }
            (Source::Node, _) => {
                self.nodes.remove(cache_key);
            }
        }
        touched.push((source.family(), cache_key.to_owned()));
    }

    /// The cache keys a write of `cache_key` touches when its value stays the same (a re-put):
    /// the key itself and, for a pod group, its container keys.
    pub fn touched_by_rewrite(&self, source: Source, cache_key: &str, touched: &mut Vec<Touched>) {
        if source == Source::PodGroup {
            if let Some(pg) = self.pod_groups.get(cache_key) {
                touched.extend(container_key_names(pg).map(|k| (Family::Container, k)));
            }
        }
        touched.push((source.family(), cache_key.to_owned()));
    }

    /// Whether the state holds a value for `cache_key` of `source`.
    pub fn contains(&self, source: Source, cache_key: &str) -> bool {
        match source {
            Source::Config => self.config.contains_key(cache_key),
            Source::PodGroup => self.pod_groups.contains_key(cache_key),
            Source::Depends => self.depends.contains_key(cache_key),
            Source::Node => self.nodes.contains_key(cache_key),
        }
    }

    /// Number of cache keys in `family` (the original's `TotalKeys`).
    pub fn len(&self, family: Family) -> usize {
        match family {
            Family::Config => self.config.len(),
            Family::PodGroup => self.pod_groups.len(),
            Family::Container => self.containers.len(),
            Family::Depends => self.depends.len(),
            Family::Nodes => self.nodes.len(),
            Family::Fleet => self.fleet.members().len(),
        }
    }

    fn set_super_app(&mut self, cache_key: &str, present: bool) {
        if let Some(name) = cache_key.strip_prefix("super_apps/") {
            if present {
                self.super_apps.insert(name.to_owned());
            } else {
                self.super_apps.remove(name);
            }
        }
    }

    fn set_pod_group(&mut self, key: &str, new: Option<Arc<PodGroup>>, touched: &mut Vec<Touched>) {
        if let Some(old) = self.pod_groups.remove(key) {
            for ckey in container_key_names(&old) {
                self.containers.remove(&ckey, key);
                touched.push((Family::Container, ckey));
            }
            for ip in container_ips(&old) {
                self.ip_apps.remove(ip, key);
            }
        }
        if let Some(pg) = new {
            for (ckey, entry) in container_keys(&pg) {
                self.containers.insert(ckey.clone(), key, entry);
                touched.push((Family::Container, ckey));
            }
            for ip in container_ips(&pg) {
                let identity = AppIdentity {
                    app: pg.namespace.clone(),
                };
                self.ip_apps.insert(ip.to_owned(), key, identity);
            }
            self.pod_groups.insert(key.to_owned(), pg);
        }
    }

    fn set_depends(&mut self, key: &str, new: Option<Arc<Depends>>) {
        if let Some(old) = self.depends.remove(key) {
            for ip in old.container_ips() {
                self.ip_services.remove(ip, key);
            }
        }
        if let Some(d) = new {
            let service = service_name(key);
            for ip in d.container_ips().filter(|ip| !ip.is_empty()) {
                self.ip_services
                    .insert(ip.to_owned(), key, service.to_owned());
            }
            self.depends.insert(key.to_owned(), d);
        }
    }
}

/// The container index entries of a pod group: two keys per runtime container.
fn container_keys(pg: &PodGroup) -> impl Iterator<Item = (String, Arc<ContainerEntry>)> + '_ {
    pg.pods.iter().flat_map(move |pod| {
        pod.containers.iter().flat_map(move |c| {
            let entry = Arc::new(ContainerEntry {
                app: pg.namespace.clone(),
                app_version: pg.app_version.clone(),
                proc: pg.name.clone(),
                nodename: c.node_name.clone(),
                nodeip: c.node_ip.clone(),
                ip: c.container_ip.clone(),
                port: c.container_port,
                instance_no: pod.instance_no,
            });
            let by_name = (format!("{}/{}", c.node_name, c.id), Arc::clone(&entry));
            let by_ip = (format!("{}/{}", c.node_ip, c.id), entry);
            [by_name, by_ip]
        })
    })
}

/// The container index keys of a pod group (the keys of [`container_keys`], without building
/// the entries).
fn container_key_names(pg: &PodGroup) -> impl Iterator<Item = String> + '_ {
    pg.pods
        .iter()
        .flat_map(|pod| pod.containers.iter())
        .flat_map(|c| {
            [
                format!("{}/{}", c.node_name, c.id),
                format!("{}/{}", c.node_ip, c.id),
            ]
        })
}

/// The non-empty container IPs of a pod group.
fn container_ips(pg: &PodGroup) -> impl Iterator<Item = &str> {
    pg.pods
        .iter()
        .flat_map(|p| p.containers.iter())
        .map(|c| c.container_ip.as_str())
        .filter(|ip| !ip.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, Pod};

    fn pod_group(ns: &str, name: &str, ips: &[&str]) -> PodGroup {
        PodGroup {
            name: name.into(),
            namespace: ns.into(),
            pods: ips
                .iter()
                .enumerate()
                .map(|(i, ip)| Pod {
                    instance_no: i as i64 + 1,
                    containers: vec![Container {
                        id: format!("id{i}{name}"),
                        node_name: "node1".into(),
                        node_ip: "10.0.0.1".into(),
                        container_ip: ip.to_string(),
                        ..Container::default()
                    }],
                })
                .collect(),
            ..PodGroup::default()
        }
    }

    #[test]
    fn deleting_a_pod_group_removes_only_its_own_containers_and_ips() {
        let mut state = ClusterState::default();
        let mut touched = Vec::new();
        for (key, ns, ip) in [
            ("hello/hello.web.web", "hello", "172.0.0.1"),
            (
                "hello-service/hello-service.web.web",
                "hello-service",
                "172.0.0.2",
            ),
        ] {
            let name = key.split('/').nth(1).unwrap();
            let pg = Decoded::PodGroup(pod_group(ns, name, &[ip]));
            state.set(Source::PodGroup, key, Some(pg), &mut touched);
        }
        assert_eq!(state.containers.len(), 4);
        touched.clear();
        state.set(Source::PodGroup, "hello/hello.web.web", None, &mut touched);
        assert_eq!(state.pod_groups.len(), 1);
        assert_eq!(state.containers.len(), 2);
        assert!(state.ip_apps.first("172.0.0.1").is_none());
        assert_eq!(
            state.ip_apps.first("172.0.0.2").unwrap().app,
            "hello-service"
        );
        assert_eq!(
            touched.len(),
            3,
            "two container keys and the pod group key: {touched:?}"
        );
    }

    #[test]
    fn super_apps_follow_config_keys() {
        let mut state = ClusterState::default();
        let mut t = Vec::new();
        state.set(
            Source::Config,
            "super_apps/console",
            Some(Decoded::Config(" {}".into())),
            &mut t,
        );
        assert!(state.super_apps.contains("console"));
        state.set(Source::Config, "super_apps/console", None, &mut t);
        assert!(state.super_apps.is_empty());
    }
}
