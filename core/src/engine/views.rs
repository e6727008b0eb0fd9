//! The table of live views: each distinct (endpoint, selection) is rendered once per change
//! and its bytes are shared by every GET and every watcher of it (rule 4 in the crate docs).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::mirror::{Change, ChangeKind};
use super::version::ViewVersion;
use crate::sse::EventName;
use crate::state::{ClusterState, Family};
use crate::views::{render, FragmentSet, RenderContext, Renderer, ViewKey};

/// Identifies one watch connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriberId(pub u64);

/// One view's shared state.
#[derive(Debug, Default)]
pub struct View {
    /// How many changes have touched this view since it was created; watch ids count from it.
    pub touches: u64,
    /// The current state; `None` when stale (only for views nobody watches).
    pub current: Option<Arc<ViewVersion>>,
    /// The watchers of this view.
    pub subscribers: BTreeSet<SubscriberId>,
    /// For a watched view built from per-pod-group fragments: the encoded fragments, so a
    /// change re-encodes only what it touched.
    fragments: Option<FragmentSet>,
}

impl View {
    /// The current state (the view must have been rendered, see [`ViewTable::view`]).
    pub fn current(&self) -> &Arc<ViewVersion> {
        self.current.as_ref().expect("rendered by ViewTable::view")
    }
}

/// A change of a watched view's output, to be delivered to its subscribers.
#[derive(Debug)]
pub struct ViewUpdate {
    /// The view.
    pub key: ViewKey,
    /// Its new state.
    pub version: Arc<ViewVersion>,
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

    /// The view, created and rendered (at `revision`) if needed.
    pub fn view(
        &mut self,
        key: &ViewKey,
        state: &ClusterState,
        ctx: &RenderContext<'_>,
        revision: i64,
    ) -> &mut View {
        if !self.views.contains_key(key) {
            self.evict_unwatched_if_full();
            let prefix = key.notify_prefix().to_owned();
            let bucket = self.index.entry(key.family()).or_default();
            bucket.entry(prefix).or_default().push(key.clone());
            self.views.insert(key.clone(), View::default());
        }
        let view = self.views.get_mut(key).expect("inserted above");
        if view.current.is_none() {
            self.renders_total += 1;
            let rendering = render(state, key, ctx);
            // Shown as a change (a resume's `update`) it is one; `init` frames say `init`.
            let version =
                ViewVersion::new(view.touches, revision, EventName::Update, rendering, None);
            view.current = Some(Arc::new(version));
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

    /// Applies a batch of changes that brought the state to `revision`: every view whose
    /// selection prefixes a changed cache key is touched; watched ones are re-rendered once and
    /// returned when their output changed, unwatched ones just go stale.
    pub fn apply(
        &mut self,
        changes: &[Change],
        state: &ClusterState,
        ctx: &RenderContext<'_>,
        revision: i64,
    ) -> Vec<ViewUpdate> {
        let mut updates = Vec::new();
        for (key, all_deleted, changed) in self.touched(changes) {
            let Some(view) = self.views.get_mut(&key) else {
                continue;
            };
            view.touches += 1;
            if view.subscribers.is_empty() {
                view.current = None;
                view.fragments = None;
                continue;
            }
            self.renders_total += 1;
            // Unchanged output writes nothing (rule 5 in the crate docs). A fragmented view
            // knows from its pieces; another compares its bytes.
            let previous = view.current.as_ref().map(|v| v.rendering.clone());
            let new = match key.endpoint.spec().renderer {
                Renderer::Fragments { .. } => {
                    // `known`: the set was kept since `previous` was assembled from it.
                    let (set, differs, known) = match &mut view.fragments {
                        Some(set) => {
                            let differs = set.refresh(&key, &changed, state, ctx);
                            (set, differs, previous.is_some())
                        }
                        None => {
                            let set = view.fragments.insert(FragmentSet::build(&key, state, ctx));
                            (set, true, false)
                        }
                    };
                    if known && !differs {
                        continue;
                    }
                    let new = set.assemble();
                    if !known && previous.as_ref() == Some(&new) {
                        continue;
                    }
                    new
                }
                Renderer::Whole(_) => {
                    let new = render(state, &key, ctx);
                    if previous.as_ref() == Some(&new) {
                        continue;
                    }
                    new
                }
            };
            let event = if all_deleted {
                EventName::Delete
            } else {
                EventName::Update
            };
            let previous = previous.and_then(Result::ok);
            let version = Arc::new(ViewVersion::new(
                view.touches,
                revision,
                event,
                new,
                previous,
            ));
            view.current = Some(version.clone());
            updates.push(ViewUpdate { key, version });
        }
        updates
    }

    /// The views a batch touches, in key order, with whether every change that touched each
    /// was a delete, and the pod group keys among them (for fragmented views).
    fn touched(&self, changes: &[Change]) -> Vec<(ViewKey, bool, Vec<String>)> {
        let mut touched: HashMap<&ViewKey, (bool, Vec<String>)> = HashMap::new();
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
                        entry.1.push(change.key.clone());
                    }
                }
            }
        }
        let mut touched: Vec<(ViewKey, bool, Vec<String>)> = touched
            .into_iter()
            .map(|(k, (deleted, keys))| (k.clone(), deleted, keys))
            .collect();
        touched.sort();
        touched
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
