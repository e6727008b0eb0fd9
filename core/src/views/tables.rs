//! Views over the other tables: config, containers, local spec, depends, nodes
//! (spec §2.4.1, §2.4.10–§2.4.13).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::Serialize;

use crate::error::ApiError;
use crate::json::{to_bytes, AsGoValue};
use crate::state::{select, ClusterState};

/// `/v2/configwatcher`: `{key: raw value}`.
pub fn config(state: &ClusterState, selector: &str) -> Bytes {
    let out: BTreeMap<&str, &str> = select(&state.config, selector)
        .into_iter()
        .map(|(k, v)| (k, v.as_str()))
        .collect();
    to_bytes(&out)
}

/// `/v2/containers`: `{"<node>/<id>": {app, app_version, proc, nodename, nodeip, ip, port,
/// instanceNo}}`.
pub fn containers(state: &ClusterState, selector: &str) -> Bytes {
    let out: BTreeMap<&str, &crate::state::ContainerEntry> = state
        .containers
        .select(selector)
        .into_iter()
        .map(|(k, v)| (k, v.as_ref()))
        .collect();
    to_bytes(&out)
}

/// `/v2/localspecquery`: the distinct `"<app>/<Spec.Name>"` of the selected containers,
/// sorted (the original's order was random).
pub fn local_spec(state: &ClusterState, selector: &str) -> Result<Bytes, ApiError> {
    if selector.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    let out: BTreeSet<String> = state
        .containers
        .select(selector)
        .into_iter()
        .map(|(_, c)| format!("{}/{}", c.app, c.proc))
        .collect();
    Ok(to_bytes(&out))
}

/// `/v2/depends`: `{portal: {node: {client app: {Annotation, Containers}}}}`.
pub fn depends(state: &ClusterState, selector: &str) -> Bytes {
    #[derive(Serialize)]
    struct PortalContainer<'a> {
        #[serde(rename = "ContainerID")]
        container_id: &'a str,
        #[serde(rename = "NodeIP")]
        node_ip: &'a str,
        #[serde(rename = "IP")]
        ip: &'a str,
        #[serde(rename = "Port")]
        port: i64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Shared<'a> {
        annotation: &'a str,
        containers: Vec<PortalContainer<'a>>,
    }
    type Nodes<'a> = BTreeMap<&'a str, BTreeMap<&'a str, Shared<'a>>>;
    let out: BTreeMap<&str, Nodes> = select(&state.depends, selector)
        .into_iter()
        .map(|(portal, d)| {
            let nodes = d
                .nodes
                .iter()
                .map(|(node, apps)| {
                    let apps = apps
                        .iter()
                        .map(|(app, pod)| {
                            let shared = Shared {
                                annotation: &pod.annotation,
                                containers: pod
                                    .containers
                                    .iter()
                                    .map(|c| PortalContainer {
                                        container_id: &c.id,
                                        node_ip: &c.node_ip,
                                        ip: &c.container_ip,
                                        port: c.container_port,
                                    })
                                    .collect(),
                            };
                            (app.as_str(), shared)
                        })
                        .collect();
                    (node.as_str(), apps)
                })
                .collect();
            (portal, nodes)
        })
        .collect();
    to_bytes(&out)
}

/// `/v2/nodes`: `{"<name>:<ip>:<port>": object}` with numbers as Go float64.
pub fn nodes(state: &ClusterState, selector: &str) -> Bytes {
    let out: BTreeMap<&str, AsGoValue> = select(&state.nodes, selector)
        .into_iter()
        .map(|(k, v)| (k, AsGoValue(v.as_ref())))
        .collect();
    to_bytes(&out)
}
