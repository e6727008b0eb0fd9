//! `/lain/deployd/depends/pods/<portal pod name>`: shared portal pods per node and client app
//! (spec §1.5).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{null_as_default, DecodeError};

/// A decoded depends value: node name → client namespace → shared portal pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Depends {
    /// Node name → client app → the portal pod serving it on that node.
    pub nodes: BTreeMap<String, BTreeMap<String, SharedPod>>,
}

/// The read fields of one `SharedPodWithSpec`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedPod {
    /// `Spec.Annotation`.
    pub annotation: String,
    /// `Pod.Containers`.
    pub containers: Vec<PortalContainer>,
}

/// The read fields of a portal container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PortalContainer {
    /// Docker container id.
    #[serde(rename = "Id", default, deserialize_with = "null_as_default")]
    pub id: String,
    /// Node IP.
    #[serde(rename = "NodeIp", default, deserialize_with = "null_as_default")]
    pub node_ip: String,
    /// Container IP.
    #[serde(rename = "ContainerIp", default, deserialize_with = "null_as_default")]
    pub container_ip: String,
    /// Container port.
    #[serde(
        rename = "ContainerPort",
        default,
        deserialize_with = "null_as_default"
    )]
    pub container_port: i64,
}

impl Depends {
    /// Decodes a depends value.
    pub fn decode(value: &[u8]) -> Result<Depends, DecodeError> {
        type Raw = Option<BTreeMap<String, Option<BTreeMap<String, RawShared>>>>;
        let raw: Raw =
            serde_json::from_slice(value).map_err(|e| DecodeError::invalid("depends", e))?;
        let nodes = raw
            .unwrap_or_default()
            .into_iter()
            .map(|(node, apps)| {
                let apps = apps
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(ns, shared)| {
                        let pod = SharedPod {
                            annotation: shared.spec.annotation,
                            containers: shared.pod.containers,
                        };
                        (ns, pod)
                    })
                    .collect();
                (node, apps)
            })
            .collect();
        Ok(Depends { nodes })
    }

    /// Every container IP of every shared pod, in key order.
    pub fn container_ips(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .values()
            .flat_map(|apps| apps.values())
            .flat_map(|pod| pod.containers.iter())
            .map(|c| c.container_ip.as_str())
    }
}

/// The service name that owns a portal (spec §2.2): split the depends key on `.`; with more
/// than three parts all but the last two, else the first part.
pub fn service_name(portal: &str) -> &str {
    let parts: Vec<&str> = portal.split('.').collect();
    if parts.len() > 3 {
        let keep = parts.len() - 2;
        let end: usize = parts[..keep].iter().map(|p| p.len()).sum::<usize>() + keep - 1;
        &portal[..end]
    } else {
        parts[0]
    }
}

#[derive(Default, Deserialize)]
struct RawShared {
    #[serde(rename = "Spec", default, deserialize_with = "null_as_default")]
    spec: RawSharedSpec,
    #[serde(rename = "Pod", default, deserialize_with = "null_as_default")]
    pod: RawSharedPod,
}

#[derive(Default, Deserialize)]
struct RawSharedSpec {
    #[serde(rename = "Annotation", default, deserialize_with = "null_as_default")]
    annotation: String,
}

#[derive(Default, Deserialize)]
struct RawSharedPod {
    #[serde(rename = "Containers", default, deserialize_with = "null_as_default")]
    containers: Vec<PortalContainer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_the_portal_naming_rule() {
        assert_eq!(
            service_name("hello-service.portal.portal-hello"),
            "hello-service"
        );
        assert_eq!(
            service_name("resource.redis.myapp.portal.portal-redis"),
            "resource.redis.myapp"
        );
        assert_eq!(service_name("a.b"), "a");
        assert_eq!(service_name(""), "");
    }

    #[test]
    fn null_nodes_and_apps_decode_as_empty() {
        let d = Depends::decode(br#"{"node1": null, "node2": {"app": {"Spec": null}}}"#).unwrap();
        assert!(d.nodes["node1"].is_empty());
        assert_eq!(d.nodes["node2"]["app"], SharedPod::default());
        assert!(Depends::decode(b"[1]").is_err());
        assert!(Depends::decode(b"null").unwrap().nodes.is_empty());
    }
}
