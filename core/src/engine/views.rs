//! The table of live views: each distinct (endpoint, selection) is rendered once per change
//! and its bytes are shared by every GET and every watcher of it (rule 4 in the crate docs).

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::mirror::{Change, ChangeKind};
use crate::error::ApiError;
use crate::sse::EventName;
use crate::state::{ClusterState, Family};
use crate::views::{render, FragmentSet, RenderContext, Renderer, ViewKey};

/// Identifies one watch connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriberId(pub u64);

/// A rendering: the JSON bytes, or the error the view currently fails with.
pub type Rendering = Result<Bytes, ApiError>;

/// One view's shared state.
#[derive(Debug, Default)]
pub struct View {
    /// How many changes have touched this view since it was created; watch ids count from it.
    pub touches: u64,
    /// The current rendering; `None` when stale (only for views nobody watches).
    pub rendering: Option<Rendering>,
    /// The watchers of this view.
    pub subscribers: BTreeSet<SubscriberId>,
    /// For a watched view built from per-pod-group fragments: the encoded fragments, so a
    /// change re-encodes only what it touched.
    fragments: Option<FragmentSet>,
}

/// A change of a watched view's output, to be delivered to its subscribers.
#[derive(Debug)]
pub struct ViewUpdate {
    /// The view.
    pub key: ViewKey,
    /// Its touch count after the change (frame ids derive from it).
    pub touches: u64,
    /// `update` or `delete`; `error` when the new rendering is an error.
    pub event: EventName,
    /// The payload: JSON, or the error text.
    pub data: Bytes,
}

/// All views that are watched or cached for GETs.
#[derive(Debug)]
pub struct ViewTable {
    views: HashMap<ViewKey, View>,
    /// family → selection prefix (`""` for `*`) → views with that selection.
    index: HashMap<Family, HashMap<String, Vec<ViewKey>>>,
    max_unwatched: usize,
    renders_total: u64,
}

/// What the view table reports about itself (`/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewStats {
    /// Distinct views held (watched or cached for GETs).
    pub views: usize,
    /// Renderings made since start.
    pub renders_total: u64,
}

impl ViewTable {
    /// An empty table that keeps at most `max_unwatched` views nobody watches.
    pub fn new(max_unwatched: usize) -> Self {
        ViewTable {
            views: HashMap::new(),
            index: HashMap::new(),
            max_unwatched,
            renders_total: 0,
        }
    }

    /// The view, created and rendered if needed.
    pub fn view(
        &mut self,
        key: &ViewKey,
        state: &ClusterState,
        ctx: &RenderContext<'_>,
    ) -> &mut View {
        if !self.views.contains_key(key) {
            self.evict_unwatched_if_full();
            let prefix = key.notify_prefix().to_owned();
            let bucket = self.index.entry(key.family()).or_default();
            bucket.entry(prefix).or_default().push(key.clone());
            self.views.insert(key.clone(), View::default());
        }
        let view = self.views.get_mut(key).expect("inserted above");
        if view.rendering.is_none() {
            self.renders_total += 1;
            view.rendering = Some(render(state, key, ctx));
        }
        view
    }

    /// The view if it exists.
    pub fn get_mut(&mut self, key: &ViewKey) -> Option<&mut View> {
        self.views.get_mut(key)
    }

    /// What the table reports about itself.
    pub fn stats(&self) -> ViewStats {
        ViewStats {
            views: self.views.len(),
            renders_total: self.renders_total,
        }
    }

    /// Applies a batch of changes: every view whose selection prefixes a changed cache key is
    /// touched; watched ones are re-rendered once and returned when their output changed,
    /// unwatched ones just go stale.
    pub fn apply(
        &mut self,
        changes: &[Change],
        state: &ClusterState,
        ctx: &RenderContext<'_>,
    ) -> Vec<ViewUpdate> {
        // view → (whether every change that touched it was a delete, changed pod group keys)
        let mut touched: HashMap<&ViewKey, (bool, Vec<&str>)> = HashMap::new();
        for change in changes {
            let Some(bucket) = self.index.get(&change.family) else {
                continue;
            };
            let deleted = change.kind == ChangeKind::Delete;
            for end in (0..=change.key.len()).filter(|&i| change.key.is_char_boundary(i)) {
                for key in bucket.get(&change.key[..end]).into_iter().flatten() {
                    let entry = touched.entry(key).or_insert((true, Vec::new()));
                    entry.0 &= deleted;
                    if change.family == Family::PodGroup {
                        entry.1.push(&change.key);
                    }
                }
            }
        }
        let mut touched: Vec<(ViewKey, bool, Vec<&str>)> = touched
            .into_iter()
            .map(|(k, (deleted, keys))| (k.clone(), deleted, keys))
            .collect();
        touched.sort();
        let mut updates = Vec::new();
        for (key, all_deleted, changed) in touched {
            let Some(view) = self.views.get_mut(&key) else {
                continue;
            };
            view.touches += 1;
            if view.subscribers.is_empty() {
                view.rendering = None;
                view.fragments = None;
                continue;
            }
            self.renders_total += 1;
            let new = match key.endpoint.spec().renderer {
                Renderer::Fragments { .. } => {
                    let set = match &mut view.fragments {
                        Some(set) => {
                            set.refresh(&key, &changed, state, ctx);
                            set
                        }
                        None => view.fragments.insert(FragmentSet::build(&key, state, ctx)),
                    };
                    set.assemble()
                }
                Renderer::Whole(_) => render(state, &key, ctx),
            };
            if view.rendering.as_ref() == Some(&new) {
                continue; // unchanged output writes nothing (rule 5 in the crate docs)
            }
            let (event, data) = match &new {
                Ok(json) if all_deleted => (EventName::Delete, json.clone()),
                Ok(json) => (EventName::Update, json.clone()),
                Err(e) => (EventName::Error, Bytes::from(e.to_string())),
            };
            view.rendering = Some(new);
            updates.push(ViewUpdate {
                key,
                touches: view.touches,
                event,
                data,
            });
        }
        updates
    }

    fn evict_unwatched_if_full(&mut self) {
        let unwatched = self
            .views
            .values()
            .filter(|v| v.subscribers.is_empty())
            .count();
        if unwatched < self.max_unwatched {
            return;
        }
        self.views.retain(|_, v| !v.subscribers.is_empty());
        for bucket in self.index.values_mut() {
            for keys in bucket.values_mut() {
                keys.retain(|k| self.views.contains_key(k));
            }
            bucket.retain(|_, keys| !keys.is_empty());
        }
    }
}
