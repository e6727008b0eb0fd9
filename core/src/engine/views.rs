//! The table of live views: each distinct (endpoint, selection) is rendered once per change
//! and its bytes are shared by every GET and every watcher of it (DESIGN rule 4).

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::mirror::{Change, ChangeKind};
use crate::error::ApiError;
use crate::sse::EventName;
use crate::state::{ClusterState, Family};
use crate::views::{render, RenderContext, ViewKey};

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
    /// Total renderings made (a metric).
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
        ctx: RenderContext<'_>,
    ) -> &mut View {
        if !self.views.contains_key(key) {
            self.evict_unwatched_if_full();
            let prefix = index_prefix(&key.selector).to_owned();
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

    /// Number of views held.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Applies a batch of changes: every view whose selection prefixes a changed cache key is
    /// touched; watched ones are re-rendered once and returned when their output changed,
    /// unwatched ones just go stale.
    pub fn apply(
        &mut self,
        changes: &[Change],
        state: &ClusterState,
        ctx: RenderContext<'_>,
    ) -> Vec<ViewUpdate> {
        // view → whether every change that touched it was a delete
        let mut touched: HashMap<&ViewKey, bool> = HashMap::new();
        for change in changes {
            let Some(bucket) = self.index.get(&change.family) else {
                continue;
            };
            let deleted = change.kind == ChangeKind::Delete;
            for end in (0..=change.key.len()).filter(|&i| change.key.is_char_boundary(i)) {
                for key in bucket.get(&change.key[..end]).into_iter().flatten() {
                    touched
                        .entry(key)
                        .and_modify(|d| *d &= deleted)
                        .or_insert(deleted);
                }
            }
        }
        let mut touched: Vec<(ViewKey, bool)> =
            touched.into_iter().map(|(k, d)| (k.clone(), d)).collect();
        touched.sort();
        let mut updates = Vec::new();
        for (key, all_deleted) in touched {
            let Some(view) = self.views.get_mut(&key) else {
                continue;
            };
            view.touches += 1;
            if view.subscribers.is_empty() {
                view.rendering = None;
                continue;
            }
            self.renders_total += 1;
            let new = render(state, &key, ctx);
            if view.rendering.as_ref() == Some(&new) {
                continue; // unchanged output writes nothing (DESIGN rule 5)
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

/// The prefix a selection is notified for: `*` watches everything (the empty prefix).
fn index_prefix(selector: &str) -> &str {
    if selector == "*" {
        ""
    } else {
        selector
    }
}
