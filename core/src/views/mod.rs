//! The v2 views: request parameters → selection key (with authorisation), and selection key →
//! JSON bytes (spec §2.4). Rendering is a pure function of the state, so the same key renders
//! the same bytes for every watcher and every GET.

mod fragments;
mod pod_groups;
mod tables;

pub use fragments::{assemble, fragment, is_fragmented, Fragment};

use bytes::Bytes;

use crate::auth::{is_secret_target, Authorizer};
use crate::error::ApiError;
use crate::request::{Endpoint, Query};
use crate::state::{select, ClusterState, Family};

/// A view: an endpoint and its selection key (`*`, `hello/`, `node1/`, `vip`, …). Everything a
/// rendering depends on besides the state, so watchers with equal keys share renderings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViewKey {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The selection key (spec §2.1): `*` for everything, else an exact key or a prefix.
    pub selector: String,
}

impl ViewKey {
    /// The family of cache keys this view selects from.
    pub fn family(&self) -> Family {
        family_of(self.endpoint)
    }
}

/// The family of cache keys an endpoint selects from.
pub fn family_of(endpoint: Endpoint) -> Family {
    match endpoint {
        Endpoint::Config => Family::Config,
        Endpoint::Containers | Endpoint::LocalSpec => Family::Container,
        Endpoint::Depends => Family::Depends,
        Endpoint::Nodes => Family::Nodes,
        Endpoint::Apps
        | Endpoint::Proc
        | Endpoint::CoreInfo
        | Endpoint::Proxy
        | Endpoint::WebProcs
        | Endpoint::StreamProcs
        | Endpoint::StreamPorts
        | Endpoint::Rebellion
        | Endpoint::Backup => Family::PodGroup,
    }
}

/// What a rendering needs besides the state.
#[derive(Clone, Copy, Debug)]
pub struct RenderContext<'a> {
    /// This machine's host name (`/v2/rebellion/localprocs` selects containers on it).
    pub hostname: &'a str,
}

/// Renders a view as Go-compatible JSON.
pub fn render(
    state: &ClusterState,
    key: &ViewKey,
    ctx: RenderContext<'_>,
) -> Result<Bytes, ApiError> {
    let s = key.selector.as_str();
    if is_fragmented(key.endpoint) {
        let fragments: Vec<Fragment> = select(&state.pod_groups, s)
            .into_iter()
            .map(|(_, pg)| fragment(key.endpoint, pg, ctx))
            .collect();
        return assemble(key.endpoint, &fragments);
    }
    match key.endpoint {
        Endpoint::Apps => Ok(pod_groups::apps(state)),
        Endpoint::StreamProcs => pod_groups::stream_procs(state, s),
        Endpoint::StreamPorts => Ok(pod_groups::stream_ports(state, s)),
        Endpoint::Proc
        | Endpoint::CoreInfo
        | Endpoint::Proxy
        | Endpoint::WebProcs
        | Endpoint::Rebellion
        | Endpoint::Backup => unreachable!("fragmented views are assembled above"),
        Endpoint::Config => Ok(tables::config(state, s)),
        Endpoint::Containers => Ok(tables::containers(state, s)),
        Endpoint::LocalSpec => tables::local_spec(state, s),
        Endpoint::Depends => Ok(tables::depends(state, s)),
        Endpoint::Nodes => Ok(tables::nodes(state, s)),
    }
}

/// Derives the view a request selects, applying the endpoint's authorisation policy
/// (spec §2.2). `host` is the caller's host as [`crate::auth::host_of`] spells it.
pub fn resolve(
    endpoint: Endpoint,
    query: &Query,
    host: &str,
    auth: &Authorizer<'_>,
) -> Result<ViewKey, ApiError> {
    let key = |selector: String| Ok(ViewKey { endpoint, selector });
    let app_scoped = |app: &str| {
        if app == "*" {
            "*".to_owned()
        } else {
            format!("{app}/")
        }
    };
    match endpoint {
        Endpoint::Config => {
            let target = query.get("target").unwrap_or("*");
            if is_secret_target(target) {
                auth.require_super(host)?;
            }
            key(target.to_owned())
        }
        Endpoint::Proc => {
            let app = query.get("appname").ok_or(ApiError::AppnameRequired)?;
            if !auth.pass(host, app) {
                return Err(ApiError::NoPermission);
            }
            key(app_scoped(app))
        }
        Endpoint::CoreInfo
        | Endpoint::Proxy
        | Endpoint::WebProcs
        | Endpoint::StreamProcs
        | Endpoint::StreamPorts
        | Endpoint::Rebellion => {
            let app = query.get("appname").unwrap_or("*");
            if auth.pass(host, app) {
                key(app_scoped(app))
            } else if app == "*" {
                let own = auth
                    .app_name(host)
                    .map_err(|_| ApiError::CannotConfirmApp)?;
                key(format!("{own}/"))
            } else {
                Err(ApiError::NoPermission)
            }
        }
        Endpoint::Apps => {
            auth.require_super(host)?;
            key("*".to_owned())
        }
        Endpoint::Backup => {
            auth.require_super(host)?;
            key(app_scoped(query.get("appname").unwrap_or("*")))
        }
        Endpoint::Containers => {
            auth.require_super(host)?;
            key(app_scoped(query.get("nodename").unwrap_or("*")))
        }
        Endpoint::Depends => {
            auth.require_super(host)?;
            key(query.get("target").unwrap_or("*").to_owned())
        }
        Endpoint::Nodes => {
            auth.require_super(host)?;
            let name = query.get("name").unwrap_or("*");
            if name == "*" || name.ends_with(':') {
                key(name.to_owned())
            } else {
                key(format!("{name}:"))
            }
        }
        Endpoint::LocalSpec => {
            auth.require_super(host)?;
            match query.get("nodeip").unwrap_or(auth.node_ip) {
                "" => key(String::new()),
                ip => key(format!("{ip}/")),
            }
        }
    }
}
