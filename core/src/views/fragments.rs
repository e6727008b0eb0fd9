//! Views assembled from one JSON fragment per pod group (the endpoints whose renderer is
//! [`Renderer::Fragments`]).
//!
//! A [`FragmentSet`] keeps each selected pod group's piece already encoded, with its object key
//! already escaped, in output order. A watched view keeps its set between changes, so a change
//! re-encodes only the pod groups it touched and assembling the body is one concatenation.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::Serialize;

use super::{selected_pod_groups, Assembly, RenderContext, Renderer, ViewKey};
use crate::error::ApiError;
use crate::json::GoFormatter;
use crate::model::PodGroup;
use crate::state::ClusterState;

/// One pod group's encoded part of a view.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Piece {
    /// `"<Spec.Name>":<json>` for objects, `<json>` for arrays.
    bytes: Bytes,
    /// For the webrouter rule: pods of this pod group.
    pods: usize,
    /// For the webrouter rule: pods whose first container has an IP.
    alive: usize,
}

/// The encoded fragments of one view, in output order.
#[derive(Clone, Debug)]
pub struct FragmentSet {
    fragment: fn(&PodGroup, &RenderContext<'_>) -> Option<Bytes>,
    assembly: Assembly,
    /// (output order key, pod group key) → piece. The order key is `Spec.Name` for objects
    /// (equal names: the larger pod group key wins) and the pod group key for arrays.
    pieces: BTreeMap<(String, String), Piece>,
    /// Pod group key → its output order key.
    order_of: HashMap<String, String>,
    pods: usize,
    alive: usize,
    /// Bytes of all pieces, to size the body at once.
    bytes: usize,
}

impl FragmentSet {
    /// The fragments of every pod group `key` selects. `key`'s endpoint must be fragmented.
    pub fn build(key: &ViewKey, state: &ClusterState, ctx: &RenderContext<'_>) -> FragmentSet {
        let Renderer::Fragments { fragment, assembly } = key.endpoint.spec().renderer else {
            unreachable!("{:?} is not assembled from fragments", key.endpoint);
        };
        let mut set = FragmentSet {
            fragment,
            assembly,
            pieces: BTreeMap::new(),
            order_of: HashMap::new(),
            pods: 0,
            alive: 0,
            bytes: 0,
        };
        for (k, pg) in selected_pod_groups(state, &key.selector) {
            set.insert(k, pg, ctx);
        }
        set
    }

    /// Brings the set up to date after the pod groups `changed` (keys) changed. Only those are
    /// re-encoded, unless the selection is an exact pod group key (spec §2.1: an exact hit
    /// selects only that key, which a change can switch on or off): then all are rebuilt.
    /// Returns whether the assembled body may differ (`false`: every re-encoded piece came out
    /// as it was, so the body is the same bytes and nothing needs to be assembled).
    pub fn refresh(
        &mut self,
        key: &ViewKey,
        changed: &[String],
        state: &ClusterState,
        ctx: &RenderContext<'_>,
    ) -> bool {
        let selector = key.selector.as_str();
        let exact_hit = selector != "*"
            && (state.pod_groups.contains_key(selector)
                || changed.iter().any(|c| c == selector)
                || self.order_of.contains_key(selector));
        if exact_hit {
            *self = FragmentSet::build(key, state, ctx);
            return true;
        }
        let mut differs = false;
        for k in changed.iter().map(String::as_str) {
            let before = self.remove(k);
            let selected = selector == "*" || k.starts_with(selector);
            if let Some(pg) = state.pod_groups.get(k).filter(|_| selected) {
                self.insert(k, pg, ctx);
            }
            differs |= before != self.piece(k);
        }
        differs
    }

    /// The piece of pod group `key`, with its order key.
    fn piece(&self, key: &str) -> Option<(String, Piece)> {
        let order = self.order_of.get(key)?;
        let piece = self.pieces.get(&(order.clone(), key.to_owned()))?;
        Some((order.clone(), piece.clone()))
    }

    /// The view's body: the pieces spliced into an array or an object.
    pub fn assemble(&self) -> Result<Bytes, ApiError> {
        if self.assembly == Assembly::ByNameMostlyAlive
            && (self.pods == 0 || 2 * self.alive < self.pods)
        {
            return Err(ApiError::DeadContainers);
        }
        let (open, close) = match self.assembly {
            Assembly::Array => (b'[', b']'),
            Assembly::ByName | Assembly::ByNameMostlyAlive => (b'{', b'}'),
        };
        let mut out = Vec::with_capacity(self.bytes + self.pieces.len() + 2);
        out.push(open);
        let mut pieces = self.pieces.iter().peekable();
        let mut first = true;
        while let Some(((order, _), piece)) = pieces.next() {
            let clashes_with_next = self.assembly != Assembly::Array
                && pieces.peek().is_some_and(|((next, _), _)| next == order);
            if clashes_with_next {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&piece.bytes);
        }
        out.push(close);
        Ok(Bytes::from(out))
    }

    fn insert(&mut self, key: &str, pg: &PodGroup, ctx: &RenderContext<'_>) {
        let Some(json) = (self.fragment)(pg, ctx) else {
            return;
        };
        let (order, bytes) = match self.assembly {
            Assembly::Array => (key.to_owned(), json),
            Assembly::ByName | Assembly::ByNameMostlyAlive => {
                (pg.name.clone(), object_entry(&pg.name, &json))
            }
        };
        let (pods, alive) = if self.assembly == Assembly::ByNameMostlyAlive {
            (pg.pods.len(), alive_pods(pg))
        } else {
            (0, 0)
        };
        self.pods += pods;
        self.alive += alive;
        self.bytes += bytes.len();
        self.order_of.insert(key.to_owned(), order.clone());
        self.pieces
            .insert((order, key.to_owned()), Piece { bytes, pods, alive });
    }

    /// Removes the piece of pod group `key`; returns it with its order key.
    fn remove(&mut self, key: &str) -> Option<(String, Piece)> {
        let order = self.order_of.remove(key)?;
        let piece = self.pieces.remove(&(order.clone(), key.to_owned()))?;
        self.pods -= piece.pods;
        self.alive -= piece.alive;
        self.bytes -= piece.bytes.len();
        Some((order, piece))
    }
}

/// `"<name>":<json>`, the name escaped as Go does.
fn object_entry(name: &str, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(name.len() + json.len() + 3);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Writing a string into a Vec cannot fail.
    let _ = name.serialize(&mut ser);
    out.push(b':');
    out.extend_from_slice(json);
    Bytes::from(out)
}

/// Pods whose first container has an IP (the webrouter rule).
fn alive_pods(pg: &PodGroup) -> usize {
    pg.pods
        .iter()
        .filter(|p| {
            p.containers
                .first()
                .is_some_and(|c| !c.container_ip.is_empty())
        })
        .count()
}
