//! Views assembled from one JSON fragment per pod group: `/v2/procwatcher`,
//! `/v2/coreinfowatcher`, `/v2/proxywatcher`, `/v2/webrouter/webprocs`,
//! `/v2/rebellion/localprocs`, `/v2/backupspec`.
//!
//! Rendering such a view encodes each selected pod group once and splices the pieces together.
//! A watched view keeps its fragments, so a change re-encodes only the pod groups it touched
//! instead of the whole cluster (the engine's view table does that bookkeeping).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use super::pod_groups::{
    backup_fragment, core_info_fragment, proc_fragment, proxy_fragment, rebellion_fragment,
    web_procs_fragment,
};
use super::RenderContext;
use crate::error::ApiError;
use crate::json::GoFormatter;
use crate::model::PodGroup;
use crate::request::Endpoint;

/// One pod group's part of a view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// `Spec.Name`: the key of the fragment in the output object.
    pub name: String,
    /// The JSON of the value; `None` when the pod group does not appear in this view.
    pub json: Option<Bytes>,
    /// For the webrouter rule: pods of this pod group.
    pub pods: usize,
    /// For the webrouter rule: pods whose first container has an IP.
    pub alive: usize,
}

/// Whether an endpoint's view is assembled from per-pod-group fragments.
pub fn is_fragmented(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::Proc
            | Endpoint::CoreInfo
            | Endpoint::Proxy
            | Endpoint::WebProcs
            | Endpoint::Rebellion
            | Endpoint::Backup
    )
}

/// The fragment of `pg` in a view of `endpoint` (which must be fragmented).
pub fn fragment(endpoint: Endpoint, pg: &PodGroup, ctx: RenderContext<'_>) -> Fragment {
    let json = match endpoint {
        Endpoint::Proc => proc_fragment(pg),
        Endpoint::CoreInfo => core_info_fragment(pg),
        Endpoint::Proxy => proxy_fragment(pg),
        Endpoint::WebProcs => web_procs_fragment(pg),
        Endpoint::Rebellion => rebellion_fragment(pg, ctx.hostname),
        Endpoint::Backup => backup_fragment(pg),
        _ => None,
    };
    let (pods, alive) = if endpoint == Endpoint::WebProcs && json.is_some() {
        let alive = pg
            .pods
            .iter()
            .filter(|p| {
                p.containers
                    .first()
                    .is_some_and(|c| !c.container_ip.is_empty())
            })
            .count();
        (pg.pods.len(), alive)
    } else {
        (0, 0)
    };
    Fragment {
        name: pg.name.clone(),
        json,
        pods,
        alive,
    }
}

/// Splices fragments, given in pod-group-key order, into the view's JSON. `/v2/procwatcher` is
/// an array in that order; the others are objects keyed by `Spec.Name`, where a larger pod
/// group key wins a name clash (the original's choice was random). `/v2/webrouter/webprocs`
/// fails when no pod or fewer than half of the pods are alive (spec §2.4.5).
pub fn assemble<'a>(
    endpoint: Endpoint,
    fragments: impl IntoIterator<Item = &'a Fragment>,
) -> Result<Bytes, ApiError> {
    let mut out = Vec::with_capacity(4096);
    if endpoint == Endpoint::Proc {
        out.push(b'[');
        for (i, json) in fragments
            .into_iter()
            .filter_map(|f| f.json.as_ref())
            .enumerate()
        {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(json);
        }
        out.push(b']');
        return Ok(Bytes::from(out));
    }
    let mut by_name: BTreeMap<&str, &Bytes> = BTreeMap::new();
    let (mut pods, mut alive) = (0, 0);
    for f in fragments {
        if let Some(json) = &f.json {
            by_name.insert(&f.name, json);
            pods += f.pods;
            alive += f.alive;
        }
    }
    if endpoint == Endpoint::WebProcs && (pods == 0 || 2 * alive < pods) {
        return Err(ApiError::DeadContainers);
    }
    out.push(b'{');
    for (i, (name, json)) in by_name.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
        // Writing a string into a Vec cannot fail.
        let _ = name.serialize(&mut ser);
        out.push(b':');
        out.extend_from_slice(json);
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}
