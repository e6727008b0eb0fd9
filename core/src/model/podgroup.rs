//! `/lain/deployd/pod_groups/<namespace>/<name>`: deployd's `PodGroupWithSpec` (spec §1.4).

use serde::Deserialize;

use super::{null_as_default, nullable_strings, DecodeError};

/// The parts of a pod group that the v2 views read, decoded once per change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodGroup {
    /// `Spec.Name`, e.g. `hello.web.web`.
    pub name: String,
    /// `Spec.Namespace`: the LAIN app name.
    pub namespace: String,
    /// `Spec.Pod.Annotation`: JSON text written by lain-sdk.
    pub annotation: String,
    /// `Spec.Pod.Dependencies`.
    pub dependencies: Vec<Dependency>,
    /// `Spec.Pod.Containers`, paired by index with each pod's runtime containers.
    pub container_specs: Vec<ContainerSpec>,
    /// `Pods`: the runtime instances, in stored order.
    pub pods: Vec<Pod>,
    /// The `ports` of the annotation (stream procs), decoded leniently as the original did.
    pub stream_ports: Vec<StreamPort>,
    /// `LAIN_APP_RELEASE_VERSION` from the first spec container's `Env` (spec §2.3).
    pub app_version: String,
}

/// One entry of `Spec.Pod.Dependencies`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Dependency {
    /// The portal pod name, e.g. `hello-service.portal.portal-hello`.
    #[serde(rename = "PodName", default, deserialize_with = "null_as_default")]
    pub pod_name: String,
    /// 0 = namespace level, 1 = node level.
    #[serde(rename = "Policy", default, deserialize_with = "null_as_default")]
    pub policy: i64,
}

/// The read fields of one `Spec.Pod.Containers[j]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ContainerSpec {
    /// Docker image.
    #[serde(rename = "Image", default, deserialize_with = "null_as_default")]
    pub image: String,
    /// `KEY=VALUE` strings; `None` when stored as `null`.
    #[serde(rename = "Env", default, deserialize_with = "nullable_strings")]
    pub env: Option<Vec<String>>,
    /// Volume paths; `None` when stored as `null`.
    #[serde(rename = "Volumes", default, deserialize_with = "nullable_strings")]
    pub volumes: Option<Vec<String>>,
    /// Command; `None` when stored as `null`.
    #[serde(rename = "Command", default, deserialize_with = "nullable_strings")]
    pub command: Option<Vec<String>>,
    /// CPU limit.
    #[serde(rename = "CpuLimit", default, deserialize_with = "null_as_default")]
    pub cpu_limit: i64,
    /// Memory limit in bytes.
    #[serde(rename = "MemoryLimit", default, deserialize_with = "null_as_default")]
    pub memory_limit: i64,
    /// Exposed port, 0 for none.
    #[serde(rename = "Expose", default, deserialize_with = "null_as_default")]
    pub expose: i64,
}

/// One runtime instance of a pod group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    /// 1-based instance number.
    pub instance_no: i64,
    /// The runtime containers, paired by index with the spec containers.
    pub containers: Vec<Container>,
}

/// The read fields of one runtime container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    /// Docker container id (64 hex).
    pub id: String,
    /// Swarm node name.
    pub node_name: String,
    /// Node IP.
    pub node_ip: String,
    /// IP in the app's network; may be empty.
    pub container_ip: String,
    /// Runtime container port.
    pub container_port: i64,
    /// The value of the last `LAIN_PROCNAME=` entry in `Runtime.Config.Env` (`""` if none).
    pub proc_name: String,
}

/// One entry of the annotation's `ports` (stream procs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamPort {
    /// Port the stream router listens on.
    pub srcport: i64,
    /// Port of the upstream container.
    pub dstport: i64,
}

impl PodGroup {
    /// Decodes a pod group value. Fails on invalid JSON, on a type mismatch in a read field,
    /// and on a value that is not a pod group: not a JSON object, or without what every value
    /// deployd writes has (a `Spec` with a `Name` and a `Namespace`).
    pub fn decode(value: &[u8]) -> Result<PodGroup, DecodeError> {
        let first = value.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            let found = match first {
                None => "nothing",
                Some(b'[') => "an array",
                Some(b'n') => "null",
                Some(b'"') => "a string",
                Some(b't' | b'f') => "a boolean",
                Some(_) => "something else",
            };
            return Err(DecodeError::invalid(
                "pod group",
                format!("expected a JSON object, found {found}"),
            ));
        }
        let raw: RawPodGroup =
            serde_json::from_slice(value).map_err(|e| DecodeError::invalid("pod group", e))?;
        let Some(spec) = raw.spec else {
            return Err(DecodeError::invalid("pod group", "no Spec"));
        };
        if spec.name.is_empty() || spec.namespace.is_empty() {
            return Err(DecodeError::invalid(
                "pod group",
                "Spec.Name or Spec.Namespace is empty",
            ));
        }
        let stream_ports = annotation_ports(&spec.pod.annotation);
        let app_version = spec
            .pod
            .containers
            .first()
            .and_then(|c| c.env.as_deref())
            .map(app_version)
            .unwrap_or_default();
        let pods = raw
            .pods
            .into_iter()
            .map(|p| Pod {
                instance_no: p.instance_no,
                containers: p
                    .containers
                    .into_iter()
                    .map(|c| Container {
                        proc_name: c.runtime.config.proc_name.0,
                        id: c.id,
                        node_name: c.node_name,
                        node_ip: c.node_ip,
                        container_ip: c.container_ip,
                        container_port: c.container_port,
                    })
                    .collect(),
            })
            .collect();
        Ok(PodGroup {
            name: spec.name,
            namespace: spec.namespace,
            annotation: spec.pod.annotation,
            dependencies: spec.pod.dependencies,
            container_specs: spec.pod.containers,
            pods,
            stream_ports,
            app_version,
        })
    }

    /// The spec container paired with runtime container `j` (a default one when the runtime has
    /// more containers than the spec, where the original panicked).
    pub fn container_spec(&self, j: usize) -> &ContainerSpec {
        static EMPTY: ContainerSpec = ContainerSpec {
            image: String::new(),
            env: None,
            volumes: None,
            command: None,
            cpu_limit: 0,
            memory_limit: 0,
            expose: 0,
        };
        self.container_specs.get(j).unwrap_or(&EMPTY)
    }

    /// Whether this is a web proc: the name has at least three dot-parts and the second-to-last
    /// is `web` (spec §2.4.5).
    pub fn is_web_proc(&self) -> bool {
        let parts: Vec<&str> = self.name.split('.').collect();
        parts.len() >= 3 && parts[parts.len() - 2] == "web"
    }
}

/// The AppVersion rule of spec §2.3: the first entry that splits on `=` into exactly two parts
/// named `LAIN_APP_RELEASE_VERSION`.
fn app_version(env: &[String]) -> String {
    env.iter()
        .find_map(|entry| {
            let mut parts = entry.split('=');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("LAIN_APP_RELEASE_VERSION"), Some(value), None) => Some(value.to_owned()),
                _ => None,
            }
        })
        .unwrap_or_default()
}

/// Decodes the annotation's `ports` as Go did into `[]struct{Srcport, Dstport int; Proto string}`:
/// keys match case-insensitively, a mistyped field stays 0, a non-object element is a zero
/// entry, and anything that is not an object with a `ports` array gives no ports.
fn annotation_ports(annotation: &str) -> Vec<StreamPort> {
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(annotation) else {
        return Vec::new();
    };
    let Some(serde_json::Value::Array(items)) = get_ci(&obj, "ports") else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| match item {
            serde_json::Value::Object(port) => StreamPort {
                srcport: get_ci(port, "srcport")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0),
                dstport: get_ci(port, "dstport")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0),
            },
            _ => StreamPort::default(),
        })
        .collect()
}

/// Go's field matching: an exact key first, else a case-insensitive one.
fn get_ci<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

#[derive(Default, Deserialize)]
struct RawPodGroup {
    #[serde(rename = "Spec", default)]
    spec: Option<RawSpec>,
    #[serde(rename = "Pods", default, deserialize_with = "null_as_default")]
    pods: Vec<RawPod>,
}

#[derive(Default, Deserialize)]
struct RawSpec {
    #[serde(rename = "Name", default, deserialize_with = "null_as_default")]
    name: String,
    #[serde(rename = "Namespace", default, deserialize_with = "null_as_default")]
    namespace: String,
    #[serde(rename = "Pod", default, deserialize_with = "null_as_default")]
    pod: RawPodSpec,
}

#[derive(Default, Deserialize)]
struct RawPodSpec {
    #[serde(rename = "Containers", default, deserialize_with = "null_as_default")]
    containers: Vec<ContainerSpec>,
    #[serde(rename = "Dependencies", default, deserialize_with = "null_as_default")]
    dependencies: Vec<Dependency>,
    #[serde(rename = "Annotation", default, deserialize_with = "null_as_default")]
    annotation: String,
}

#[derive(Default, Deserialize)]
struct RawPod {
    #[serde(rename = "InstanceNo", default, deserialize_with = "null_as_default")]
    instance_no: i64,
    #[serde(rename = "Containers", default, deserialize_with = "null_as_default")]
    containers: Vec<RawContainer>,
}

#[derive(Default, Deserialize)]
struct RawContainer {
    #[serde(rename = "Id", default, deserialize_with = "null_as_default")]
    id: String,
    #[serde(rename = "Runtime", default, deserialize_with = "null_as_default")]
    runtime: RawRuntime,
    #[serde(rename = "NodeName", default, deserialize_with = "null_as_default")]
    node_name: String,
    #[serde(rename = "NodeIp", default, deserialize_with = "null_as_default")]
    node_ip: String,
    #[serde(rename = "ContainerIp", default, deserialize_with = "null_as_default")]
    container_ip: String,
    #[serde(
        rename = "ContainerPort",
        default,
        deserialize_with = "null_as_default"
    )]
    container_port: i64,
}

#[derive(Default, Deserialize)]
struct RawRuntime {
    #[serde(rename = "Config", default, deserialize_with = "null_as_default")]
    config: RawRuntimeConfig,
}

#[derive(Default, Deserialize)]
struct RawRuntimeConfig {
    #[serde(rename = "Env", default)]
    proc_name: ProcNameFromEnv,
}

/// The value of the last `LAIN_PROCNAME=` entry of a runtime `Env` list, found without
/// allocating the other entries (`""` if none; `null` list or entries are skipped as in Go).
#[derive(Default)]
struct ProcNameFromEnv(String);

impl<'de> Deserialize<'de> for ProcNameFromEnv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ProcNameFromEnv;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of KEY=VALUE strings or null")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(ProcNameFromEnv::default())
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(ProcNameFromEnv::default())
            }
            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Self::Value, D::Error> {
                d.deserialize_seq(self)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut found = String::new();
                while let Some(entry) = seq.next_element::<Option<std::borrow::Cow<'de, str>>>()? {
                    if let Some(value) = entry
                        .as_deref()
                        .and_then(|e| e.strip_prefix("LAIN_PROCNAME="))
                    {
                        found = value.to_owned();
                    }
                }
                Ok(ProcNameFromEnv(found))
            }
        }
        d.deserialize_option(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_version_ignores_values_containing_equals() {
        let env = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            app_version(&env(&["A=1", "LAIN_APP_RELEASE_VERSION=r1"])),
            "r1"
        );
        assert_eq!(
            app_version(&env(&[
                "LAIN_APP_RELEASE_VERSION=a=b",
                "LAIN_APP_RELEASE_VERSION=r2"
            ])),
            "r2"
        );
        assert_eq!(app_version(&env(&["LAIN_APP_RELEASE_VERSION=a=b"])), "");
    }

    #[test]
    fn annotation_ports_decode_leniently_like_go() {
        let ports =
            annotation_ports(r#"{"ports": [{"srcport": 9501, "dstport": 6379, "proto": "tcp"}]}"#);
        assert_eq!(
            ports,
            vec![StreamPort {
                srcport: 9501,
                dstport: 6379
            }]
        );
        let mistyped = annotation_ports(r#"{"Ports": [{"SrcPort": "9501", "dstport": 6379}, 5]}"#);
        assert_eq!(
            mistyped,
            vec![
                StreamPort {
                    srcport: 0,
                    dstport: 6379
                },
                StreamPort::default()
            ]
        );
        assert!(annotation_ports(r#"{"ports": "nope"}"#).is_empty());
        assert!(annotation_ports("not json").is_empty());
        assert!(annotation_ports(r#"{"ports": [{"srcport": 9501.5}]}"#)[0].srcport == 0);
    }

    #[test]
    fn type_mismatch_in_a_read_field_is_undecodable_and_nulls_are_zero() {
        assert!(PodGroup::decode(br#"{"Spec": 5}"#).is_err());
        assert!(PodGroup::decode(
            br#"{"Spec": {"Name": "a.w.w", "Namespace": "a"}, "Pods": [{"InstanceNo": "1"}]}"#
        )
        .is_err());
        let pg = PodGroup::decode(
            br#"{"Spec": {"Name": "a.w.w", "Namespace": "a", "Pod": {"Containers": null}}, "Pods": null, "Extra": [1]}"#,
        )
        .unwrap();
        assert_eq!(
            pg,
            PodGroup {
                name: "a.w.w".into(),
                namespace: "a".into(),
                ..PodGroup::default()
            }
        );
    }

    #[test]
    fn values_that_are_not_pod_groups_are_undecodable() {
        for value in [
            &b"[]"[..],
            b"null",
            b"{}",
            br#"{"Spec":null}"#,
            br#"{"Spec":{}}"#,
            br#"{"Spec":{"Name":"x.web.web"}}"#,
            br#"{"Spec":{"Name":null,"Namespace":"x"}}"#,
            b"\"\"",
            b"0",
            b"true",
            b"",
            b"  ",
        ] {
            let err = PodGroup::decode(value).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid pod group value"),
                "{}: {err}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn proc_name_is_the_last_lain_procname_of_the_runtime_env() {
        let proc = |env: &str| {
            let v = String::from(
                r#"{"Spec":{"Name":"a.w.w","Namespace":"a"},"Pods":[{"Containers":[{"Runtime":{"Config":{"Env":"#,
            ) + env
                + "}}}]}]}";
            PodGroup::decode(v.as_bytes()).map(|pg| pg.pods[0].containers[0].proc_name.clone())
        };
        assert_eq!(
            proc(r#"["LAIN_PROCNAME=a","X=1",null,"LAIN_PROCNAME=b"]"#).unwrap(),
            "b"
        );
        assert_eq!(proc(r#"["LAIN_PROCNAME=w\u0065b\"x"]"#).unwrap(), "web\"x");
        assert_eq!(proc("null").unwrap(), "");
        assert_eq!(proc("[]").unwrap(), "");
        assert!(
            proc("5").is_err(),
            "a type mismatch makes the value undecodable"
        );
        assert!(proc("[5]").is_err());
    }

    #[test]
    fn web_procs_are_recognised_by_the_second_to_last_name_part() {
        let named = |n: &str| PodGroup {
            name: n.into(),
            ..PodGroup::default()
        };
        assert!(named("hello.web.web").is_web_proc());
        assert!(named("resource.x.y.web.web").is_web_proc());
        assert!(named("hello.web.admin").is_web_proc());
        assert!(!named("hello.worker.web").is_web_proc());
        assert!(!named("web.web").is_web_proc());
    }
}
