//! The v2 views: request parameters → selection key (with authorisation), and selection key →
//! JSON bytes (spec §2.4). Rendering is a pure function of the state, so the same key renders
//! the same bytes for every watcher and every GET. What differs between endpoints is data, in
//! [`endpoint`].

mod endpoint;
mod fragments;
mod pod_groups;
mod tables;

pub use endpoint::{Access, Assembly, BodyShape, Endpoint, Members, Renderer, Selector};
pub use fragments::FragmentSet;

use bytes::Bytes;

use crate::auth::{is_secret_target, Authorizer};
use crate::error::ApiError;
use crate::request::Query;
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
        self.endpoint.family()
    }

    /// The prefix of cache keys whose changes notify this view (`""` for `*`, and for a
    /// `/fleet` view, which every fleet change may concern).
    pub fn notify_prefix(&self) -> &str {
        if self.selector == "*" || self.endpoint.spec().selector == Selector::Revision {
            ""
        } else {
            &self.selector
        }
    }
}

/// What a rendering needs besides the state.
#[derive(Clone, Copy, Debug)]
pub struct RenderContext<'a> {
    /// This machine's host name (`/v2/rebellion/localprocs` selects containers on it).
    pub hostname: &'a str,
}

/// Renders a view from scratch as Go-compatible JSON.
pub fn render(
    state: &ClusterState,
    key: &ViewKey,
    ctx: &RenderContext<'_>,
) -> Result<Bytes, ApiError> {
    match key.endpoint.spec().renderer {
        Renderer::Whole(render) => render(state, &key.selector),
        Renderer::Fragments { .. } => FragmentSet::build(key, state, ctx).assemble(),
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
    let spec = endpoint.spec();
    let param = match spec.selector {
        Selector::All => None,
        Selector::Param { name, .. } => query.get(name),
        Selector::NodeIp => query.get("nodeip").or(Some(auth.node_ip)),
        Selector::Revision => {
            auth.require_super(host)?;
            let selector = crate::fleet::revision_selector(query.get("revision"))?;
            return Ok(ViewKey { endpoint, selector });
        }
    };
    let chosen = param.unwrap_or("*");
    let selector = match spec.access {
        Access::SecretTargets => {
            if is_secret_target(chosen) {
                auth.require_super(host)?;
            }
            scoped(spec.selector, chosen)
        }
        Access::Super => {
            auth.require_super(host)?;
            scoped(spec.selector, chosen)
        }
        Access::AppStrict => {
            let app = param.ok_or(ApiError::AppnameRequired)?;
            if !auth.pass(host, app) {
                return Err(ApiError::NoPermission);
            }
            scoped(spec.selector, app)
        }
        Access::AppAuto => {
            if auth.pass(host, chosen) {
                scoped(spec.selector, chosen)
            } else if chosen == "*" {
                let own = auth
                    .app_name(host)
                    .map_err(|_| ApiError::CannotConfirmApp)?;
                scoped(spec.selector, own)
            } else {
                return Err(ApiError::NoPermission);
            }
        }
    };
    Ok(ViewKey { endpoint, selector })
}

/// The selection key for a chosen parameter value: `*` stays `*`; a suffix is appended once
/// (`hello` → `hello/`, `hello/` stays `hello/`, spec §2.1); an empty node IP selects nothing.
fn scoped(selector: Selector, value: &str) -> String {
    match selector {
        Selector::All => "*".to_owned(),
        Selector::Param { .. } if value == "*" => "*".to_owned(),
        Selector::Param { suffix: None, .. } => value.to_owned(),
        Selector::Param {
            suffix: Some(suffix),
            ..
        } => with_suffix(value, suffix),
        // The original appended `/` to any node IP, `*` included (which selects nothing).
        Selector::NodeIp if value.is_empty() => String::new(),
        Selector::NodeIp => with_suffix(value, '/'),
        Selector::Revision => value.to_owned(),
    }
}

fn with_suffix(value: &str, suffix: char) -> String {
    if value.ends_with(suffix) {
        value.to_owned()
    } else {
        format!("{value}{suffix}")
    }
}

/// The pod groups a selection key selects, in key order.
fn selected_pod_groups<'a>(
    state: &'a ClusterState,
    selector: &str,
) -> Vec<(&'a str, &'a std::sync::Arc<crate::model::PodGroup>)> {
    select(&state.pod_groups, selector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_appended_once_and_star_is_kept() {
        let app = Selector::Param {
            name: "appname",
            suffix: Some('/'),
        };
        assert_eq!(scoped(app, "hello"), "hello/");
        assert_eq!(
            scoped(app, "hello/"),
            "hello/",
            "no second slash (spec §2.1)"
        );
        assert_eq!(scoped(app, "*"), "*");
        let node = Selector::Param {
            name: "name",
            suffix: Some(':'),
        };
        assert_eq!(scoped(node, "node1"), "node1:");
        assert_eq!(scoped(node, "node1:"), "node1:");
        let raw = Selector::Param {
            name: "target",
            suffix: None,
        };
        assert_eq!(scoped(raw, "vip"), "vip");
        assert_eq!(scoped(Selector::NodeIp, ""), "");
        assert_eq!(scoped(Selector::NodeIp, "10.0.0.1"), "10.0.0.1/");
        assert_eq!(
            scoped(Selector::NodeIp, "*"),
            "*/",
            "as the original's fixPrefix"
        );
        assert_eq!(scoped(Selector::All, "x"), "*");
    }
}
