//! Every `/v2` endpoint described in one place: its path, the cache keys it selects from, who
//! may read it, how its selection key comes from the request, how it is rendered, and whether
//! it can be watched (spec §2.1–§2.4). Adding an endpoint is one variant and one descriptor;
//! the exhaustive `match` in [`Endpoint::spec`] makes the compiler find a missing one.

use bytes::Bytes;

use super::{pod_groups, tables, RenderContext};
use crate::error::ApiError;
use crate::model::PodGroup;
use crate::state::{ClusterState, Family};

/// A `/v2` endpoint (spec §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// `/v2/appswatcher`
    Apps,
    /// `/v2/configwatcher`
    Config,
    /// `/v2/procwatcher`
    Proc,
    /// `/v2/coreinfowatcher`
    CoreInfo,
    /// `/v2/nodes`
    Nodes,
    /// `/v2/containers`
    Containers,
    /// `/v2/proxywatcher`
    Proxy,
    /// `/v2/depends`
    Depends,
    /// `/v2/webrouter/webprocs`
    WebProcs,
    /// `/v2/streamrouter/streamprocs`
    StreamProcs,
    /// `/v2/streamrouter/ports`
    StreamPorts,
    /// `/v2/rebellion/localprocs`
    Rebellion,
    /// `/v2/backupspec`
    Backup,
    /// `/v2/localspecquery` (GET only)
    LocalSpec,
    /// `/fleet` (new, not part of the original's API): the live lainlets of the cluster and,
    /// with `?revision=R`, which of them have applied R.
    Fleet,
}

/// Who may read an endpoint (spec §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, unless the selection could include a secret config key; then super callers
    /// only (`/v2/configwatcher`).
    SecretTargets,
    /// Super callers only.
    Super,
    /// The app parameter is required and the caller must pass for it (`/v2/procwatcher`).
    AppStrict,
    /// The app parameter defaults to `*`; a caller that may not see every app silently gets
    /// its own.
    AppAuto,
}

/// How the selection key is derived from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Always `*` (no parameter).
    All,
    /// The parameter `name` (default `*`); unless it is `*` or already ends with `suffix`,
    /// `suffix` is appended (app-scoped endpoints add `/`, `/v2/nodes` adds `:`).
    Param {
        /// The query parameter.
        name: &'static str,
        /// Appended to a selection that does not end with it yet.
        suffix: Option<char>,
    },
    /// `nodeip`, defaulting to this node's IP (`-ip`), with `/` appended
    /// (`/v2/localspecquery`); no IP at all selects nothing (`empty key`).
    NodeIp,
    /// `revision` (`/fleet`): `*` when absent, else the revision as a canonical decimal. It
    /// selects every member, so every change of the family notifies the view.
    Revision,
}

/// How an endpoint's JSON body is built.
#[derive(Clone, Copy)]
pub enum Renderer {
    /// One JSON fragment per selected pod group, spliced together; a watched view keeps its
    /// fragments, so a change re-encodes only the pod groups it touched.
    Fragments {
        /// The fragment of one pod group; `None` when it does not appear in this view.
        fragment: fn(&PodGroup, &RenderContext<'_>) -> Option<Bytes>,
        /// How the fragments are spliced.
        assembly: Assembly,
    },
    /// A function of the whole state and the selection key.
    Whole(fn(&ClusterState, &str) -> Result<Bytes, ApiError>),
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Renderer::Fragments { assembly, .. } => write!(f, "Fragments({assembly:?})"),
            Renderer::Whole(_) => f.write_str("Whole"),
        }
    }
}

/// How fragments are spliced into a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assembly {
    /// A JSON array in pod-group-key order (`/v2/procwatcher`).
    Array,
    /// A JSON object keyed by `Spec.Name`; on a name clash the larger pod group key wins.
    ByName,
    /// [`Assembly::ByName`] with the webrouter rule: fails when no pod, or fewer than half of
    /// the pods, have a first container with an IP (spec §2.4.5).
    ByNameMostlyAlive,
}

/// The JSON type of a body (diff streams need objects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyShape {
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

/// What a top-level member of the body stands for, so a resuming diff watch can tell which
/// members changed from which cache keys did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Members {
    /// A cache key of the endpoint's family (config keys, containers, portals, nodes).
    CacheKey,
    /// A pod group's `Spec.Name`.
    PodGroupName,
    /// A pod group's `Spec.Namespace` (an app).
    Namespace,
    /// The body is not an object.
    None,
}

/// The description of one endpoint.
#[derive(Debug)]
pub struct EndpointSpec {
    /// The registered path.
    pub path: &'static str,
    /// The family of cache keys the selection is matched against.
    pub family: Family,
    /// Who may read it.
    pub access: Access,
    /// How the selection key is derived.
    pub selector: Selector,
    /// How the body is built.
    pub renderer: Renderer,
    /// Whether `?watch=1` is allowed (`/v2/localspecquery` refuses it).
    pub watchable: bool,
    /// The JSON type of the body.
    pub body: BodyShape,
    /// What its top-level members stand for.
    pub members: Members,
}

const APP: Selector = Selector::Param {
    name: "appname",
    suffix: Some('/'),
};

const fn fragments(
    path: &'static str,
    access: Access,
    fragment: fn(&PodGroup, &RenderContext<'_>) -> Option<Bytes>,
    assembly: Assembly,
) -> EndpointSpec {
    EndpointSpec {
        path,
        family: Family::PodGroup,
        access,
        selector: APP,
        renderer: Renderer::Fragments { fragment, assembly },
        watchable: true,
        body: match assembly {
            Assembly::Array => BodyShape::Array,
            _ => BodyShape::Object,
        },
        members: match assembly {
            Assembly::Array => Members::None,
            _ => Members::PodGroupName,
        },
    }
}

static APPS: EndpointSpec = EndpointSpec {
    path: "/v2/appswatcher",
    family: Family::PodGroup,
    access: Access::Super,
    selector: Selector::All,
    renderer: Renderer::Whole(|state, _| Ok(pod_groups::apps(state))),
    watchable: true,
    body: BodyShape::Object,
    members: Members::Namespace,
};
static CONFIG: EndpointSpec = EndpointSpec {
    path: "/v2/configwatcher",
    family: Family::Config,
    access: Access::SecretTargets,
    selector: Selector::Param {
        name: "target",
        suffix: None,
    },
    renderer: Renderer::Whole(|state, s| Ok(tables::config(state, s))),
    watchable: true,
    body: BodyShape::Object,
    members: Members::CacheKey,
};
static PROC: EndpointSpec = fragments(
    "/v2/procwatcher",
    Access::AppStrict,
    |pg, _| pod_groups::proc_fragment(pg),
    Assembly::Array,
);
static CORE_INFO: EndpointSpec = fragments(
    "/v2/coreinfowatcher",
    Access::AppAuto,
    |pg, _| pod_groups::core_info_fragment(pg),
    Assembly::ByName,
);
static NODES: EndpointSpec = EndpointSpec {
    path: "/v2/nodes",
    family: Family::Nodes,
    access: Access::Super,
    selector: Selector::Param {
        name: "name",
        suffix: Some(':'),
    },
    renderer: Renderer::Whole(|state, s| Ok(tables::nodes(state, s))),
    watchable: true,
    body: BodyShape::Object,
    members: Members::CacheKey,
};
static CONTAINERS: EndpointSpec = EndpointSpec {
    path: "/v2/containers",
    family: Family::Container,
    access: Access::Super,
    selector: Selector::Param {
        name: "nodename",
        suffix: Some('/'),
    },
    renderer: Renderer::Whole(|state, s| Ok(tables::containers(state, s))),
    watchable: true,
    body: BodyShape::Object,
    members: Members::CacheKey,
};
static PROXY: EndpointSpec = fragments(
    "/v2/proxywatcher",
    Access::AppAuto,
    |pg, _| pod_groups::proxy_fragment(pg),
    Assembly::ByName,
);
static DEPENDS: EndpointSpec = EndpointSpec {
    path: "/v2/depends",
    family: Family::Depends,
    access: Access::Super,
    selector: Selector::Param {
        name: "target",
        suffix: None,
    },
    renderer: Renderer::Whole(|state, s| Ok(tables::depends(state, s))),
    watchable: true,
    body: BodyShape::Object,
    members: Members::CacheKey,
};
static WEB_PROCS: EndpointSpec = fragments(
    "/v2/webrouter/webprocs",
    Access::AppAuto,
    |pg, _| pod_groups::web_procs_fragment(pg),
    Assembly::ByNameMostlyAlive,
);
static STREAM_PROCS: EndpointSpec = EndpointSpec {
    path: "/v2/streamrouter/streamprocs",
    family: Family::PodGroup,
    access: Access::AppAuto,
    selector: APP,
    renderer: Renderer::Whole(pod_groups::stream_procs),
    watchable: true,
    body: BodyShape::Object,
    members: Members::Namespace,
};
static STREAM_PORTS: EndpointSpec = EndpointSpec {
    path: "/v2/streamrouter/ports",
    family: Family::PodGroup,
    access: Access::AppAuto,
    selector: APP,
    renderer: Renderer::Whole(|state, s| Ok(pod_groups::stream_ports(state, s))),
    watchable: true,
    body: BodyShape::Array,
    members: Members::None,
};
static REBELLION: EndpointSpec = fragments(
    "/v2/rebellion/localprocs",
    Access::AppAuto,
    |pg, ctx| pod_groups::rebellion_fragment(pg, ctx.hostname),
    Assembly::ByName,
);
static BACKUP: EndpointSpec = fragments(
    "/v2/backupspec",
    Access::Super,
    |pg, _| pod_groups::backup_fragment(pg),
    Assembly::ByName,
);
static LOCAL_SPEC: EndpointSpec = EndpointSpec {
    path: "/v2/localspecquery",
    family: Family::Container,
    access: Access::Super,
    selector: Selector::NodeIp,
    renderer: Renderer::Whole(tables::local_spec),
    watchable: false,
    body: BodyShape::Array,
    members: Members::None,
};

static FLEET: EndpointSpec = EndpointSpec {
    path: "/fleet",
    family: Family::Fleet,
    access: Access::Super,
    selector: Selector::Revision,
    renderer: Renderer::Whole(|state, s| state.fleet.render(s)),
    watchable: true,
    body: BodyShape::Object,
    members: Members::None,
};

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 15] = [
        Endpoint::Apps,
        Endpoint::Config,
        Endpoint::Proc,
        Endpoint::CoreInfo,
        Endpoint::Nodes,
        Endpoint::Containers,
        Endpoint::Proxy,
        Endpoint::Depends,
        Endpoint::WebProcs,
        Endpoint::StreamProcs,
        Endpoint::StreamPorts,
        Endpoint::Rebellion,
        Endpoint::Backup,
        Endpoint::LocalSpec,
        Endpoint::Fleet,
    ];

    /// The endpoint's description.
    pub fn spec(self) -> &'static EndpointSpec {
        match self {
            Endpoint::Apps => &APPS,
            Endpoint::Config => &CONFIG,
            Endpoint::Proc => &PROC,
            Endpoint::CoreInfo => &CORE_INFO,
            Endpoint::Nodes => &NODES,
            Endpoint::Containers => &CONTAINERS,
            Endpoint::Proxy => &PROXY,
            Endpoint::Depends => &DEPENDS,
            Endpoint::WebProcs => &WEB_PROCS,
            Endpoint::StreamProcs => &STREAM_PROCS,
            Endpoint::StreamPorts => &STREAM_PORTS,
            Endpoint::Rebellion => &REBELLION,
            Endpoint::Backup => &BACKUP,
            Endpoint::LocalSpec => &LOCAL_SPEC,
            Endpoint::Fleet => &FLEET,
        }
    }

    /// The registered path.
    pub fn path(self) -> &'static str {
        self.spec().path
    }

    /// The family of cache keys this endpoint selects from.
    pub fn family(self) -> Family {
        self.spec().family
    }

    /// The endpoint registered at `path` (exact, no trailing slash).
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_has_a_distinct_path_under_v2_but_the_fleet() {
        let mut paths: Vec<&str> = Endpoint::ALL.iter().map(|e| e.path()).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), Endpoint::ALL.len());
        let outside: Vec<&str> = paths
            .iter()
            .copied()
            .filter(|p| !p.starts_with("/v2/"))
            .collect();
        assert_eq!(outside, ["/fleet"]);
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_path(e.path()), Some(e));
        }
    }

    #[test]
    fn only_localspecquery_refuses_watches_and_array_bodies_are_the_three_of_the_spec() {
        let unwatchable: Vec<Endpoint> = Endpoint::ALL
            .into_iter()
            .filter(|e| !e.spec().watchable)
            .collect();
        assert_eq!(unwatchable, [Endpoint::LocalSpec]);
        let arrays: Vec<Endpoint> = Endpoint::ALL
            .into_iter()
            .filter(|e| e.spec().body == BodyShape::Array)
            .collect();
        assert_eq!(
            arrays,
            [Endpoint::Proc, Endpoint::StreamPorts, Endpoint::LocalSpec]
        );
    }
}
