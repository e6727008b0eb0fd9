//! Replies of the services over the other tables: Appname, Config, Containers, Depends,
//! Localspec, Nodes.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::MapError;
use crate::json::{go_json, null_as_empty, parse, GoInt};
use crate::message::node_info::value::Type as NodeValueType;
use crate::message::node_info::Value as NodeValue;
use crate::message::{
    AppnameReply, ConfigReply, ContainerInfo, ContainersReply, DependsAppMap, DependsItem,
    DependsNodeMap, DependsReply, Info, LocalspecReply, NodeInfo, NodesReply,
};
use crate::service::Service;

/// `/appname` `{"appname": x}` → `AppnameReply{Data: {"appname": x}}`.
pub fn appname_reply(json: &[u8]) -> Result<AppnameReply, MapError> {
    let data: BTreeMap<String, String> = parse(Service::Appname.http_path(), json)?;
    Ok(AppnameReply { data })
}

/// `/v2/configwatcher` `{key: raw value}` → `ConfigReply{Data}`.
pub fn config_reply(json: &[u8]) -> Result<ConfigReply, MapError> {
    let data: BTreeMap<String, String> = parse(Service::Config.http_path(), json)?;
    Ok(ConfigReply { data })
}

/// `/v2/containers` `{key: {app, app_version, proc, nodename, nodeip, ip, port, instanceNo}}`
/// → `ContainersReply{Data: {key: Info{AppName, AppVersion, ProcName, NodeName, NodeIP, IP,
/// Port, InstanceNo}}}`. A `null` entry is left out, as the original skipped nil entries.
pub fn containers_reply(json: &[u8]) -> Result<ContainersReply, MapError> {
    #[derive(Deserialize)]
    struct Entry {
        app: String,
        app_version: String,
        proc: String,
        nodename: String,
        nodeip: String,
        ip: String,
        port: GoInt,
        #[serde(rename = "instanceNo")]
        instance_no: GoInt,
    }
    let view: BTreeMap<String, Option<Entry>> = parse(Service::Containers.http_path(), json)?;
    let data = view
        .into_iter()
        .filter_map(|(key, entry)| {
            let c = entry?;
            let info = Info {
                app_name: c.app,
                app_version: c.app_version,
                proc_name: c.proc,
                node_name: c.nodename,
                node_ip: c.nodeip,
                ip: c.ip,
                port: c.port.to_int32(),
                instance_no: c.instance_no.to_int32(),
            };
            Some((key, info))
        })
        .collect();
    Ok(ContainersReply { data })
}

/// `/v2/depends` `{portal: {node: {app: {Annotation, Containers: [{ContainerID, NodeIP, IP,
/// Port}]}}}}` → `DependsReply{Data: {portal: DependsNodeMap{nodes: {node:
/// DependsAppMap{apps: {app: DependsItem}}}}}}`.
pub fn depends_reply(json: &[u8]) -> Result<DependsReply, MapError> {
    #[derive(Deserialize)]
    struct PortalContainer {
        #[serde(rename = "ContainerID")]
        container_id: String,
        #[serde(rename = "NodeIP")]
        node_ip: String,
        #[serde(rename = "IP")]
        ip: String,
        #[serde(rename = "Port")]
        port: GoInt,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Shared {
        annotation: String,
        #[serde(default, deserialize_with = "null_as_empty")]
        containers: Vec<PortalContainer>,
    }
    type Apps = BTreeMap<String, Shared>;
    let view: BTreeMap<String, BTreeMap<String, Apps>> = parse(Service::Depends.http_path(), json)?;
    let data = view
        .into_iter()
        .map(|(portal, nodes)| {
            let nodes = nodes
                .into_iter()
                .map(|(node, apps)| {
                    let apps = apps
                        .into_iter()
                        .map(|(app, shared)| {
                            let containers = shared
                                .containers
                                .into_iter()
                                .map(|c| ContainerInfo {
                                    container_id: c.container_id,
                                    node_ip: c.node_ip,
                                    ip: c.ip,
                                    port: c.port.to_int32(),
                                })
                                .collect();
                            let item = DependsItem {
                                annotation: shared.annotation,
                                containers,
                            };
                            (app, item)
                        })
                        .collect();
                    (node, DependsAppMap { apps })
                })
                .collect();
            (portal, DependsNodeMap { nodes })
        })
        .collect();
    Ok(DependsReply { data })
}

/// `/v2/localspecquery` `["app/proc", …]` → `LocalspecReply{Data}`; `LocalIP` and `ip` stay
/// empty, as in the original.
pub fn localspec_reply(json: &[u8]) -> Result<LocalspecReply, MapError> {
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Specs(#[serde(deserialize_with = "null_as_empty")] Vec<String>);

    let Specs(data) = parse(Service::Localspec.http_path(), json)?;
    Ok(LocalspecReply {
        data,
        local_ip: String::new(),
        ip: String::new(),
    })
}

/// `/v2/nodes` `{key: {attribute: value}}` → `NodesReply{Data: {key: NodeInfo{v: {attribute:
/// Value}}}}`, see [`node_value`]. A `null` node becomes an empty `NodeInfo`.
pub fn nodes_reply(json: &[u8]) -> Result<NodesReply, MapError> {
    let view: BTreeMap<String, Option<BTreeMap<String, Value>>> =
        parse(Service::Nodes.http_path(), json)?;
    let data = view
        .into_iter()
        .map(|(key, attributes)| {
            let v = attributes
                .unwrap_or_default()
                .iter()
                .map(|(name, value)| (name.clone(), node_value(value)))
                .collect();
            (key, NodeInfo { v })
        })
        .collect();
    Ok(NodesReply { data })
}

/// One node attribute as a `NodeInfo.Value`:
///
/// * a string → `Vtype: STRING`, `sval` = the string;
/// * an object → `Vtype: MAP`, `mval` = each member's value as a string (a string member as
///   itself, any other member as its compact JSON text);
/// * anything else (number, boolean, `null`, array) → `Vtype: STRING`, `sval` = its compact
///   JSON text as the view wrote it (`22`, `1e+21`, `true`, `null`, `["a","b"]`).
///
/// The original only handled strings: its `map[string]string` assertion never matched a
/// decoded JSON object, so every non-string attribute became a nil value.
pub fn node_value(value: &Value) -> NodeValue {
    match value {
        Value::String(s) => NodeValue {
            vtype: NodeValueType::String as i32,
            sval: s.clone(),
            mval: BTreeMap::new(),
        },
        Value::Object(members) => NodeValue {
            vtype: NodeValueType::Map as i32,
            sval: String::new(),
            mval: members
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => go_json(other),
                    };
                    (k.clone(), text)
                })
                .collect(),
        },
        other => NodeValue {
            vtype: NodeValueType::String as i32,
            sval: go_json(other),
            mval: BTreeMap::new(),
        },
    }
}
