//! Views computed from pod groups: apps, procs, core info, proxy, webrouter, streamrouter,
//! rebellion, backup (spec §2.4.2–§2.4.9, §2.4.14).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use crate::error::ApiError;
use crate::json::to_bytes;
use crate::model::{Container, ContainerSpec, Dependency, PodGroup};
use crate::state::{select, ClusterState};

type Selected<'a> = Vec<(&'a str, &'a std::sync::Arc<PodGroup>)>;

fn selected<'a>(state: &'a ClusterState, selector: &str) -> Selected<'a> {
    select(&state.pod_groups, selector)
}

/// `/v2/appswatcher`: `{ns: {"Appname": ns}}` for every namespace.
pub fn apps(state: &ClusterState) -> Bytes {
    #[derive(Serialize)]
    struct App<'a> {
        #[serde(rename = "Appname")]
        appname: &'a str,
    }
    let out: BTreeMap<&str, App> = state
        .pod_groups
        .values()
        .map(|pg| {
            (
                pg.namespace.as_str(),
                App {
                    appname: &pg.namespace,
                },
            )
        })
        .collect();
    to_bytes(&out)
}

/// `/v2/procwatcher`: the `{"proc": [...]}` element of one pod group (elements are sorted by
/// pod group key; the original's order was random).
pub fn proc_fragment(pg: &PodGroup) -> Option<Bytes> {
    #[derive(Serialize)]
    struct ProcPod<'a> {
        #[serde(rename = "InstanceNo")]
        instance_no: i64,
        #[serde(rename = "IP")]
        ip: &'a str,
        #[serde(rename = "Port")]
        port: i64,
        #[serde(rename = "ProcName")]
        proc_name: &'a str,
    }
    #[derive(Serialize)]
    struct Proc<'a> {
        proc: Vec<ProcPod<'a>>,
    }
    let out = Proc {
        proc: pg
            .pods
            .iter()
            .map(|pod| {
                let first = pod.containers.first();
                ProcPod {
                    instance_no: pod.instance_no,
                    ip: first.map_or("", |c| &c.container_ip),
                    port: first.map_or(0, |c| c.container_port),
                    proc_name: first.map_or("", |c| &c.proc_name),
                }
            })
            .collect(),
    };
    Some(to_bytes(&out))
}

/// `/v2/coreinfowatcher`: `{"PodInfos": [...]}` of one pod group, keyed by `Spec.Name`.
pub fn core_info_fragment(pg: &PodGroup) -> Option<Bytes> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct ContainerInfo<'a> {
        command: &'a Option<Vec<String>>,
        container_id: &'a str,
        container_ip: &'a str,
        cpu: i64,
        env: &'a Option<Vec<String>>,
        expose: i64,
        image: &'a str,
        memory: i64,
        node_ip: &'a str,
        node_name: &'a str,
        volumes: &'a Option<Vec<String>>,
    }
    #[derive(Serialize)]
    struct Dep<'a> {
        #[serde(rename = "PodName")]
        pod_name: &'a str,
        #[serde(rename = "Policy")]
        policy: i64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct PodInfo<'a> {
        annotation: &'a str,
        container_infos: Vec<ContainerInfo<'a>>,
        dependencies: Vec<Dep<'a>>,
        instance_no: i64,
    }
    let pod_infos: Vec<PodInfo> = pg
        .pods
        .iter()
        .map(|pod| PodInfo {
            annotation: &pg.annotation,
            container_infos: paired(pg, &pod.containers)
                .map(|(spec, c)| ContainerInfo {
                    command: &spec.command,
                    container_id: &c.id,
                    container_ip: &c.container_ip,
                    cpu: spec.cpu_limit,
                    env: &spec.env,
                    expose: spec.expose,
                    image: &spec.image,
                    memory: spec.memory_limit,
                    node_ip: &c.node_ip,
                    node_name: &c.node_name,
                    volumes: &spec.volumes,
                })
                .collect(),
            dependencies: pg
                .dependencies
                .iter()
                .map(|d: &Dependency| Dep {
                    pod_name: &d.pod_name,
                    policy: d.policy,
                })
                .collect(),
            instance_no: pod.instance_no,
        })
        .collect();
    Some(to_bytes(&PodInfos { pod_infos }))
}

/// `/v2/proxywatcher`: `{"containers": [{container_ip, container_port}]}` of one pod group,
/// keyed by `Spec.Name`; the port is the spec's `Expose`.
pub fn proxy_fragment(pg: &PodGroup) -> Option<Bytes> {
    #[derive(Serialize)]
    struct ProxyContainer<'a> {
        container_ip: &'a str,
        container_port: i64,
    }
    #[derive(Serialize)]
    struct Proc<'a> {
        containers: Vec<ProxyContainer<'a>>,
    }
    let containers = pg
        .pods
        .iter()
        .flat_map(|pod| paired(pg, &pod.containers))
        .map(|(spec, c)| ProxyContainer {
            container_ip: &c.container_ip,
            container_port: spec.expose,
        })
        .collect();
    Some(to_bytes(&Proc { containers }))
}

/// `/v2/webrouter/webprocs`: `{"PodInfos": [...]}` of a web proc (`None` for other procs),
/// keyed by `Spec.Name`; the dead-container rule is applied when assembling.
pub fn web_procs_fragment(pg: &PodGroup) -> Option<Bytes> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct WebContainer<'a> {
        container_ip: &'a str,
        expose: i64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct WebPod<'a> {
        annotation: &'a str,
        container_infos: Vec<WebContainer<'a>>,
    }
    if !pg.is_web_proc() {
        return None;
    }
    let pod_infos: Vec<WebPod> = pg
        .pods
        .iter()
        .map(|pod| WebPod {
            annotation: &pg.annotation,
            container_infos: paired(pg, &pod.containers)
                .map(|(spec, c)| WebContainer {
                    container_ip: &c.container_ip,
                    expose: spec.expose,
                })
                .collect(),
        })
        .collect();
    Some(to_bytes(&PodInfos { pod_infos }))
}

/// `/v2/streamrouter/streamprocs`: pod groups whose annotation has `ports`, by namespace, with
/// the dead-container rule.
pub fn stream_procs(state: &ClusterState, selector: &str) -> Result<Bytes, ApiError> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Upstream<'a> {
        host: &'a str,
        instance_no: i64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Service {
        upstream_port: i64,
        listen_port: i64,
        send: &'static str,
        expect: &'static str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct StreamProc<'a> {
        name: &'a str,
        upstreams: Vec<Upstream<'a>>,
        services: Vec<Service>,
    }
    let kept: Selected = selected(state, selector)
        .into_iter()
        .filter(|(_, pg)| !pg.stream_ports.is_empty())
        .collect();
    check_alive(&kept)?;
    let mut out: BTreeMap<&str, Vec<StreamProc>> = BTreeMap::new();
    for (_, pg) in kept {
        let mut upstreams: Vec<Upstream> = pg
            .pods
            .iter()
            .map(|pod| Upstream {
                host: pod.containers.first().map_or("", |c| &c.container_ip),
                instance_no: pod.instance_no,
            })
            .collect();
        upstreams.sort_by_key(|u| u.instance_no);
        let mut services: Vec<Service> = pg
            .stream_ports
            .iter()
            .map(|p| Service {
                upstream_port: p.dstport,
                listen_port: p.srcport,
                send: "",
                expect: "",
            })
            .collect();
        services.sort_by_key(|s| s.listen_port);
        out.entry(pg.namespace.as_str())
            .or_default()
            .push(StreamProc {
                name: &pg.name,
                upstreams,
                services,
            });
    }
    for procs in out.values_mut() {
        procs.sort_by(|a, b| a.name.cmp(b.name));
    }
    Ok(to_bytes(&out))
}

/// `/v2/streamrouter/ports`: every annotation `srcport`, ascending, duplicates kept.
pub fn stream_ports(state: &ClusterState, selector: &str) -> Bytes {
    let mut ports: Vec<i64> = selected(state, selector)
        .into_iter()
        .flat_map(|(_, pg)| pg.stream_ports.iter().map(|p| p.srcport))
        .collect();
    ports.sort_unstable();
    to_bytes(&ports)
}

/// `/v2/rebellion/localprocs`: `{"PodInfos": [...]}` of the pods with a container on this
/// host, keyed by `Spec.Name` (`None` when the pod group has no local pod).
pub fn rebellion_fragment(pg: &PodGroup, hostname: &str) -> Option<Bytes> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct LocalPod<'a> {
        annotation: &'a str,
        app_version: &'a str,
        instance_no: i64,
    }
    let pod_infos: Vec<LocalPod> = pg
        .pods
        .iter()
        .filter(|pod| pod.containers.iter().any(|c| c.node_name == hostname))
        .map(|pod| LocalPod {
            annotation: &pg.annotation,
            app_version: &pg.app_version,
            instance_no: pod.instance_no,
        })
        .collect();
    (!pod_infos.is_empty()).then(|| to_bytes(&PodInfos { pod_infos }))
}

/// `/v2/backupspec`: `[{Annotation, Containers, InstanceNo}]` of one pod group, keyed by
/// `Spec.Name`.
pub fn backup_fragment(pg: &PodGroup) -> Option<Bytes> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct BackupContainer<'a> {
        id: &'a str,
        ip: &'a str,
        node_ip: &'a str,
        node_name: &'a str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct BackupPod<'a> {
        annotation: &'a str,
        containers: Vec<BackupContainer<'a>>,
        instance_no: i64,
    }
    let pods: Vec<BackupPod> = pg
        .pods
        .iter()
        .map(|pod| BackupPod {
            annotation: &pg.annotation,
            containers: pod
                .containers
                .iter()
                .map(|c| BackupContainer {
                    id: &c.id,
                    ip: &c.container_ip,
                    node_ip: &c.node_ip,
                    node_name: &c.node_name,
                })
                .collect(),
            instance_no: pod.instance_no,
        })
        .collect();
    Some(to_bytes(&pods))
}

/// `{"PodInfos": [...]}`, shared by several views.
#[derive(Serialize)]
struct PodInfos<T> {
    #[serde(rename = "PodInfos")]
    pod_infos: Vec<T>,
}

/// Runtime containers paired with their spec containers by index.
fn paired<'a>(
    pg: &'a PodGroup,
    containers: &'a [Container],
) -> impl Iterator<Item = (&'a ContainerSpec, &'a Container)> {
    containers
        .iter()
        .enumerate()
        .map(move |(j, c)| (pg.container_spec(j), c))
}

/// The dead-container rule (spec §2.4.5): fails when there is no pod at all, or when fewer
/// than half of the pods have a first container with an IP.
fn check_alive(kept: &Selected<'_>) -> Result<(), ApiError> {
    let pods = kept.iter().flat_map(|(_, pg)| pg.pods.iter());
    let (total, alive) = pods.fold((0usize, 0usize), |(t, a), pod| {
        let has_ip = pod
            .containers
            .first()
            .is_some_and(|c| !c.container_ip.is_empty());
        (t + 1, a + usize::from(has_ip))
    });
    if total == 0 || 2 * alive < total {
        Err(ApiError::DeadContainers)
    } else {
        Ok(())
    }
}
