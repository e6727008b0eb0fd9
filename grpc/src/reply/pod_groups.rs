//! Replies of the services over pod groups: Apps, Backupctl, Coreinfo, Podgroup, Proxy,
//! RebellionLocalprocs, StreamrouterPorts, StreamrouterStreamprocs, WebrouterWebprocs.
//!
//! Each function reads the JSON of the HTTP view (spec §2.4) and builds what the original's
//! `endpoints/<name>.go` builds from the same pod groups.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::MapError;
use crate::json::{null_as_empty, parse, GoInt};
use crate::message::{
    backupctl_reply::PodInfoList, AppInfo, AppsReply, BackupctlReply, Container,
    ContainerForBackupctl, ContainerForProxy, ContainerForWebrouter, CoreInfo,
    CoreInfoForRebellion, CoreInfoForWebrouter, CoreinfoReply, Dependency, Pod, PodGroup, PodInfo,
    PodInfoForBackupctl, PodInfoForRebellion, PodInfoForWebrouter, PodgroupReply, ProcInfo,
    ProxyReply, RebellionLocalprocsReply, StreamProc, StreamProcList, StreamService,
    StreamUpstream, StreamrouterPortsReply, StreamrouterStreamprocsReply, WebrouterWebprocsReply,
};
use crate::service::Service;

/// `/v2/appswatcher` `{ns: {"Appname": ns}}` → `AppsReply{Data: {ns: AppInfo{Appname}}}`.
pub fn apps_reply(json: &[u8]) -> Result<AppsReply, MapError> {
    #[derive(Deserialize)]
    struct App {
        #[serde(rename = "Appname")]
        appname: String,
    }
    let view: BTreeMap<String, App> = parse(Service::Apps.http_path(), json)?;
    let data = view
        .into_iter()
        .map(|(ns, app)| {
            let appname = app.appname;
            (ns, AppInfo { appname })
        })
        .collect();
    Ok(AppsReply { data })
}

/// `/v2/backupspec` `{name: [{Annotation, Containers: [{Id, Ip, NodeIp, NodeName}],
/// InstanceNo}]}` → `BackupctlReply{Data: {name: PodInfoList{pods}}}`.
pub fn backupctl_reply(json: &[u8]) -> Result<BackupctlReply, MapError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct BackupContainer {
        id: String,
        ip: String,
        node_ip: String,
        node_name: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct BackupPod {
        annotation: String,
        #[serde(default, deserialize_with = "null_as_empty")]
        containers: Vec<BackupContainer>,
        instance_no: GoInt,
    }
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Pods(#[serde(deserialize_with = "null_as_empty")] Vec<BackupPod>);

    let view: BTreeMap<String, Pods> = parse(Service::Backupctl.http_path(), json)?;
    let data = view
        .into_iter()
        .map(|(name, Pods(pods))| {
            let pods = pods
                .into_iter()
                .map(|pod| PodInfoForBackupctl {
                    annotation: pod.annotation,
                    containers: pod
                        .containers
                        .into_iter()
                        .map(|c| ContainerForBackupctl {
                            id: c.id,
                            ip: c.ip,
                            node_ip: c.node_ip,
                            node_name: c.node_name,
                        })
                        .collect(),
                    instance_no: pod.instance_no.to_int32(),
                })
                .collect();
            (name, PodInfoList { pods })
        })
        .collect();
    Ok(BackupctlReply { data })
}

/// `/v2/coreinfowatcher` `{name: {"PodInfos": [{Annotation, ContainerInfos, Dependencies,
/// InstanceNo}]}}` → `CoreinfoReply`. HTTP `ContainerInfos[]` `{Command, ContainerId,
/// ContainerIp, Cpu, Env, Expose, Image, Memory, NodeIp, NodeName, Volumes}` become
/// `Containers[]` `{Command, Id, Ip, Cpu, Env, Expose, Image, Memory, NodeIp, NodeName,
/// Volumes}`; `null` lists become empty.
pub fn coreinfo_reply(json: &[u8]) -> Result<CoreinfoReply, MapError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct ContainerInfo {
        #[serde(default, deserialize_with = "null_as_empty")]
        command: Vec<String>,
        container_id: String,
        container_ip: String,
        cpu: GoInt,
        #[serde(default, deserialize_with = "null_as_empty")]
        env: Vec<String>,
        expose: GoInt,
        image: String,
        memory: GoInt,
        node_ip: String,
        node_name: String,
        #[serde(default, deserialize_with = "null_as_empty")]
        volumes: Vec<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Dep {
        pod_name: String,
        policy: GoInt,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HttpPodInfo {
        annotation: String,
        #[serde(default, deserialize_with = "null_as_empty")]
        container_infos: Vec<ContainerInfo>,
        #[serde(default, deserialize_with = "null_as_empty")]
        dependencies: Vec<Dep>,
        instance_no: GoInt,
    }
    let view: BTreeMap<String, PodInfos<HttpPodInfo>> = parse(Service::Coreinfo.http_path(), json)?;
    let data = view
        .into_iter()
        .map(|(name, infos)| {
            let pod_infos = infos
                .pod_infos
                .into_iter()
                .map(|pod| PodInfo {
                    annotation: pod.annotation,
                    containers: pod
                        .container_infos
                        .into_iter()
                        .map(|c| Container {
                            command: c.command,
                            id: c.container_id,
                            ip: c.container_ip,
                            cpu: c.cpu.to_int32(),
                            env: c.env,
                            expose: c.expose.to_int32(),
                            image: c.image,
                            // MemoryLimit is an int64 in the original: no truncation.
                            memory: c.memory.0,
                            node_ip: c.node_ip,
                            node_name: c.node_name,
                            volumes: c.volumes,
                        })
                        .collect(),
                    dependencies: pod
                        .dependencies
                        .into_iter()
                        .map(|d| Dependency {
                            pod_name: d.pod_name,
                            policy: d.policy.to_int32(),
                        })
                        .collect(),
                    instance_no: pod.instance_no.to_int32(),
                })
                .collect();
            (name, CoreInfo { pod_infos })
        })
        .collect();
    Ok(CoreinfoReply { data })
}

/// `/v2/procwatcher` `[{"proc": [{InstanceNo, IP, Port, ProcName}]}]` →
/// `PodgroupReply{Data: [PodGroup{Pods: [Pod]}]}`, element order kept.
pub fn podgroup_reply(json: &[u8]) -> Result<PodgroupReply, MapError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct ProcPod {
        instance_no: GoInt,
        #[serde(rename = "IP")]
        ip: String,
        port: GoInt,
        proc_name: String,
    }
    #[derive(Deserialize)]
    struct Proc {
        #[serde(default, deserialize_with = "null_as_empty")]
        proc: Vec<ProcPod>,
    }
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Procs(#[serde(deserialize_with = "null_as_empty")] Vec<Proc>);

    let Procs(view) = parse(Service::Podgroup.http_path(), json)?;
    let data = view
        .into_iter()
        .map(|group| PodGroup {
            pods: group
                .proc
                .into_iter()
                .map(|p| Pod {
                    instance_no: p.instance_no.to_int32(),
                    ip: p.ip,
                    port: p.port.to_int32(),
                    proc_name: p.proc_name,
                })
                .collect(),
        })
        .collect();
    Ok(PodgroupReply { data })
}

/// `/v2/proxywatcher` `{name: {"containers": [{container_ip, container_port}]}}` →
/// `ProxyReply{Data: {name: ProcInfo{Containers: [{ContainerIp, ContainerPort}]}}}`.
pub fn proxy_reply(json: &[u8]) -> Result<ProxyReply, MapError> {
    #[derive(Deserialize)]
    struct ProxyContainer {
        container_ip: String,
        container_port: GoInt,
    }
    #[derive(Deserialize)]
    struct Proc {
        #[serde(default, deserialize_with = "null_as_empty")]
        containers: Vec<ProxyContainer>,
    }
    let view: BTreeMap<String, Proc> = parse(Service::Proxy.http_path(), json)?;
    let data = view
        .into_iter()
        .map(|(name, proc)| {
            let containers = proc
                .containers
                .into_iter()
                .map(|c| ContainerForProxy {
                    container_ip: c.container_ip,
                    container_port: c.container_port.to_int32(),
                })
                .collect();
            (name, ProcInfo { containers })
        })
        .collect();
    Ok(ProxyReply { data })
}

/// `/v2/rebellion/localprocs` `{name: {"PodInfos": [{Annotation, AppVersion, InstanceNo}]}}`
/// → `RebellionLocalprocsReply{Data: {name: CoreInfoForRebellion{PodInfos}}}`.
pub fn rebellion_localprocs_reply(json: &[u8]) -> Result<RebellionLocalprocsReply, MapError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct LocalPod {
        annotation: String,
        app_version: String,
        instance_no: GoInt,
    }
    let view: BTreeMap<String, PodInfos<LocalPod>> =
        parse(Service::RebellionLocalprocs.http_path(), json)?;
    let data = view
        .into_iter()
        .map(|(name, infos)| {
            let pod_infos = infos
                .pod_infos
                .into_iter()
                .map(|pod| PodInfoForRebellion {
                    annotation: pod.annotation,
                    app_version: pod.app_version,
                    instance_no: pod.instance_no.to_int32(),
                })
                .collect();
            (name, CoreInfoForRebellion { pod_infos })
        })
        .collect();
    Ok(RebellionLocalprocsReply { data })
}

/// `/v2/streamrouter/ports` `[srcport…]` → `StreamrouterPortsReply{Data}`.
///
/// The original decoded annotation ports straight into `int32` fields, so a port outside the
/// int32 range became 0, and it sorted the int32 values: both are reproduced.
pub fn streamrouter_ports_reply(json: &[u8]) -> Result<StreamrouterPortsReply, MapError> {
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Ports(#[serde(deserialize_with = "null_as_empty")] Vec<GoInt>);

    let Ports(ports) = parse(Service::StreamrouterPorts.http_path(), json)?;
    let mut data: Vec<i32> = ports.into_iter().map(GoInt::decoded_as_int32).collect();
    data.sort();
    Ok(StreamrouterPortsReply { data })
}

/// `/v2/streamrouter/streamprocs` `{ns: [{Name, Upstreams: [{Host, InstanceNo}], Services:
/// [{UpstreamPort, ListenPort, Send, Expect}]}]}` → `StreamrouterStreamprocsReply{Data: {ns:
/// StreamProcList{procs}}}`.
///
/// The original's builder panicked before producing any reply (spec §5); this is the reply it
/// meant to build: ports decoded into int32 (out of range → 0), instance numbers truncated,
/// procs sorted by name, upstreams by instance number, services by listen port (stable, so
/// ties keep the view's order).
pub fn streamrouter_streamprocs_reply(
    json: &[u8],
) -> Result<StreamrouterStreamprocsReply, MapError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Upstream {
        host: String,
        instance_no: GoInt,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HttpService {
        upstream_port: GoInt,
        listen_port: GoInt,
        send: String,
        expect: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Proc {
        name: String,
        #[serde(default, deserialize_with = "null_as_empty")]
        upstreams: Vec<Upstream>,
        #[serde(default, deserialize_with = "null_as_empty")]
        services: Vec<HttpService>,
    }
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Procs(#[serde(deserialize_with = "null_as_empty")] Vec<Proc>);

    let view: BTreeMap<String, Procs> = parse(Service::StreamrouterStreamprocs.http_path(), json)?;
    let data = view
        .into_iter()
        .map(|(namespace, Procs(procs))| {
            let mut procs: Vec<StreamProc> = procs
                .into_iter()
                .map(|p| {
                    let mut upstreams: Vec<StreamUpstream> = p
                        .upstreams
                        .into_iter()
                        .map(|u| StreamUpstream {
                            host: u.host,
                            instance_no: u.instance_no.to_int32(),
                        })
                        .collect();
                    upstreams.sort_by_key(|u| u.instance_no);
                    let mut services: Vec<StreamService> = p
                        .services
                        .into_iter()
                        .map(|s| StreamService {
                            upstream_port: s.upstream_port.decoded_as_int32(),
                            listen_port: s.listen_port.decoded_as_int32(),
                            send: s.send,
                            expect: s.expect,
                        })
                        .collect();
                    services.sort_by_key(|s| s.listen_port);
                    StreamProc {
                        name: p.name,
                        upstreams,
                        services,
                    }
                })
                .collect();
            procs.sort_by(|a, b| a.name.cmp(&b.name));
            (namespace, StreamProcList { procs })
        })
        .collect();
    Ok(StreamrouterStreamprocsReply { data })
}

/// `/v2/webrouter/webprocs` `{name: {"PodInfos": [{Annotation, ContainerInfos: [{ContainerIp,
/// Expose}]}]}}` → `WebrouterWebprocsReply{Data: {name: CoreInfoForWebrouter{PodInfos:
/// [{Annotation, Containers: [{IP, Expose}]}]}}}`.
pub fn webrouter_webprocs_reply(json: &[u8]) -> Result<WebrouterWebprocsReply, MapError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct WebContainer {
        container_ip: String,
        expose: GoInt,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct WebPod {
        annotation: String,
        #[serde(default, deserialize_with = "null_as_empty")]
        container_infos: Vec<WebContainer>,
    }
    let view: BTreeMap<String, PodInfos<WebPod>> =
        parse(Service::WebrouterWebprocs.http_path(), json)?;
    let data = view
        .into_iter()
        .map(|(name, infos)| {
            let pod_infos = infos
                .pod_infos
                .into_iter()
                .map(|pod| PodInfoForWebrouter {
                    annotation: pod.annotation,
                    containers: pod
                        .container_infos
                        .into_iter()
                        .map(|c| ContainerForWebrouter {
                            ip: c.container_ip,
                            expose: c.expose.to_int32(),
                        })
                        .collect(),
                })
                .collect();
            (name, CoreInfoForWebrouter { pod_infos })
        })
        .collect();
    Ok(WebrouterWebprocsReply { data })
}

/// `{"PodInfos": [...]}`, the value shape of several views.
#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
struct PodInfos<T> {
    #[serde(rename = "PodInfos", default, deserialize_with = "null_as_empty")]
    pod_infos: Vec<T>,
}
