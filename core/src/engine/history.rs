//! What changed at which revision, for watches that resume (`rev=1` with `Last-Event-ID` or
//! `since`): did a view change after the client's revision R, and which of its top-level
//! members may have?
//!
//! The history keeps one entry per changed cache key per applied batch, within a window (at
//! least `min_age` and at least `min_revisions`, at most `max_entries`). Its horizon is the
//! oldest revision after which every change is known: the first snapshot's, moved up as old
//! entries are dropped. A resume from before the horizon, or from the future, cannot be
//! answered, and gets a fresh `init`: the history never claims "unchanged" when it cannot know.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::mirror::Change;
use crate::persist::SavedChange;
use crate::state::Family;
use crate::views::{Members, ViewKey};

/// How much history is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryWindow {
    /// Entries younger than this are kept.
    pub min_age: Duration,
    /// Entries within this many revisions of the newest are kept.
    pub min_revisions: i64,
    /// Beyond this many entries the oldest go regardless (the memory bound).
    pub max_entries: usize,
}

impl Default for HistoryWindow {
    fn default() -> Self {
        HistoryWindow {
            min_age: Duration::from_secs(300),
            min_revisions: 10_000,
            max_entries: 200_000,
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    revision: i64,
    at: Instant,
    family: Family,
    key: String,
}

/// What happened to a view after a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// The history cannot tell (before its horizon, in the future, or nothing loaded yet).
    Unknown,
    /// Nothing the view selects changed.
    Unchanged,
    /// The view may have changed: these top-level members, or `None` when the members cannot
    /// be told (the whole view must be sent).
    Changed(Option<BTreeSet<String>>),
}

/// The change history.
#[derive(Debug)]
pub struct History {
    entries: VecDeque<Entry>,
    horizon: Option<i64>,
    window: HistoryWindow,
    /// Answers for resumes from before the horizon, by revision.
    backfills: BTreeMap<i64, Backfilled>,
}

/// How many backfilled revisions are kept (clients resuming after a restart mostly share a
/// few).
const MAX_BACKFILLS: usize = 32;

/// The cache keys that changed after a revision before the horizon, up to `upto`.
#[derive(Debug)]
struct Backfilled {
    upto: i64,
    keys: Vec<(Family, String)>,
}

/// What the history reports about itself (`/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Entries held.
    pub entries: usize,
    /// The oldest revision a watch can resume from (0 before the first snapshot).
    pub horizon: i64,
}

impl History {
    /// An empty history keeping `window`.
    pub fn new(window: HistoryWindow) -> History {
        History {
            entries: VecDeque::new(),
            horizon: None,
            window,
            backfills: BTreeMap::new(),
        }
    }

    /// The first snapshot was applied at `revision`: changes are known from there on.
    pub fn start(&mut self, revision: i64) {
        self.horizon.get_or_insert(revision);
    }

    /// Forgets everything (the store read changed: the revisions that follow are counted by
    /// the other store); known again from the next [`History::start`].
    pub fn clear(&mut self) {
        self.entries.clear();
        self.horizon = None;
        self.backfills.clear();
    }

    /// A batch of `changes` brought the state to `revision` at `now`.
    pub fn record(&mut self, now: Instant, revision: i64, changes: &[Change]) {
        if self.horizon.is_none() {
            return;
        }
        self.entries.extend(changes.iter().map(|c| Entry {
            revision,
            at: now,
            family: c.family,
            key: c.key.clone(),
        }));
        self.prune(now, revision);
    }

    fn prune(&mut self, now: Instant, newest: i64) {
        while let Some(oldest) = self.entries.front() {
            let old = now.saturating_duration_since(oldest.at) > self.window.min_age
                && newest - oldest.revision > self.window.min_revisions;
            if !old && self.entries.len() <= self.window.max_entries {
                break;
            }
            let dropped = oldest.revision;
            // Changes at `dropped` are no longer all known: resumes must come from it or later.
            self.horizon = self.horizon.map(|h| h.max(dropped));
            self.entries.pop_front();
        }
    }

    /// What changed after `revision`, from before the horizon, as read back from etcd (see
    /// `super::backfill`): the cache keys that changed in (`revision`, `upto`], `upto` being
    /// the applied revision the listing was compared with. Kept for the last few revisions
    /// asked for, and while the history holds every change after `upto`.
    pub fn add_backfill(&mut self, revision: i64, upto: i64, keys: Vec<(Family, String)>) {
        if self.horizon.is_none_or(|h| revision >= h || upto < h) {
            return;
        }
        while self.backfills.len() >= MAX_BACKFILLS {
            self.backfills.pop_first();
        }
        self.backfills.insert(revision, Backfilled { upto, keys });
    }

    /// Whether a resume from `revision` can be answered from a backfill.
    pub fn has_backfill(&self, revision: i64) -> bool {
        self.backfill(revision).is_some()
    }

    fn backfill(&self, revision: i64) -> Option<&Backfilled> {
        let horizon = self.horizon?;
        self.backfills.get(&revision).filter(|b| b.upto >= horizon)
    }

    /// The revision the history reaches back to (`None` before the first snapshot).
    pub fn horizon(&self) -> Option<i64> {
        self.horizon
    }

    /// The cache keys that changed after `revision`; `None` when the history cannot tell (it
    /// does not reach back that far).
    pub fn touched_after(&self, revision: i64) -> Option<HashSet<(Family, &str)>> {
        if self.horizon.is_none_or(|h| revision < h) {
            return None;
        }
        let first = self.entries.partition_point(|e| e.revision <= revision);
        Some(
            self.entries
                .range(first..)
                .map(|e| (e.family, e.key.as_str()))
                .collect(),
        )
    }

    /// What happened to `view` after revision `resume`, the state being at `applied`.
    /// `exact`: the view's selector is a key the state holds now (spec §2.1: then it selects
    /// that key only, not the keys it is a prefix of).
    pub fn since(&self, resume: i64, applied: i64, view: &ViewKey, exact: bool) -> Since {
        let Some(horizon) = self.horizon else {
            return Since::Unknown;
        };
        if resume > applied {
            return Since::Unknown;
        }
        // From before the horizon only with a backfill: its keys, then the entries after it.
        let (before, after) = match resume < horizon {
            true => match self.backfill(resume) {
                Some(b) => (b.keys.as_slice(), b.upto),
                None => return Since::Unknown,
            },
            false => (&[][..], resume),
        };
        let family = view.family();
        // Container keys derive from pod group values, and the values of before are not
        // read back: a changed pod group may have moved any container.
        if family == Family::Container && before.iter().any(|(f, _)| *f == Family::PodGroup) {
            return Since::Changed(None);
        }
        let selector = view.selector.as_str();
        let selected =
            |f: Family, key: &str| f == family && (selector == "*" || key.starts_with(selector));
        let first = self.entries.partition_point(|e| e.revision <= after);
        let touching: Vec<&str> = before
            .iter()
            .filter(|(f, key)| selected(*f, key))
            .map(|(_, key)| key.as_str())
            .chain(
                self.entries
                    .range(first..)
                    .filter(|e| selected(e.family, &e.key))
                    .map(|e| e.key.as_str()),
            )
            .collect();
        if touching.is_empty() {
            return Since::Unchanged;
        }
        // An exact-hit selection (spec §2.1) switches between one key and a prefix when that
        // key comes or goes: which members the client holds cannot be told then. While the
        // key stays, the keys it is only a prefix of are not in the view.
        if selector != "*" && touching.contains(&selector) {
            return Since::Changed(None);
        }
        if exact {
            return Since::Unchanged;
        }
        let members = view.endpoint.spec().members;
        let keys = touching
            .into_iter()
            .map(|key| member_of(members, key))
            .collect::<Option<BTreeSet<String>>>();
        Since::Changed(keys)
    }

    /// The horizon and every entry after it, each with its age at `now` (for the state
    /// file; entries at the horizon, such as the first snapshot's, answer no resume).
    pub fn saved(&self, now: Instant) -> (Option<i64>, Vec<SavedChange>) {
        let horizon = self.horizon.unwrap_or(i64::MAX);
        let entries = self
            .entries
            .iter()
            .filter(|e| e.revision > horizon)
            .map(|e| SavedChange {
                revision: e.revision,
                age: now.saturating_duration_since(e.at),
                family: e.family,
                key: e.key.clone(),
            })
            .collect();
        (self.horizon, entries)
    }

    /// Replaces the history with a saved one, applied up to `applied`: entries at or below
    /// the horizon or past `applied` are dropped, and entries out of order end the history
    /// there (the horizon moves up past them), so it never claims more than it knows.
    pub fn restore(&mut self, now: Instant, applied: i64, horizon: i64, saved: Vec<SavedChange>) {
        self.clear();
        let mut horizon = horizon.min(applied);
        let mut last = horizon;
        for c in saved {
            if c.revision <= horizon || c.revision > applied {
                continue;
            }
            if c.revision < last {
                // Out of order: nothing before it can be trusted.
                self.entries.clear();
                horizon = last;
                continue;
            }
            last = c.revision;
            self.entries.push_back(Entry {
                revision: c.revision,
                at: now.checked_sub(c.age).unwrap_or(now),
                family: c.family,
                key: c.key,
            });
        }
        self.horizon = Some(horizon);
        self.prune(now, applied);
    }

    /// What the history reports about itself.
    pub fn stats(&self) -> HistoryStats {
        HistoryStats {
            entries: self.entries.len(),
            horizon: self.horizon.unwrap_or(0),
        }
    }
}

/// The top-level member of a view a changed cache key stands for.
fn member_of(members: Members, cache_key: &str) -> Option<String> {
    match members {
        Members::CacheKey => Some(cache_key.to_owned()),
        // Pod group keys are `<namespace>/<Spec.Name>` (deployd writes them so; the engine
        // refuses diff resumes while a pod group says otherwise).
        Members::PodGroupName => cache_key.split_once('/').map(|(_, name)| name.to_owned()),
        Members::Namespace => cache_key.split_once('/').map(|(ns, _)| ns.to_owned()),
        Members::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::mirror::ChangeKind;
    use crate::views::Endpoint;

    fn change(family: Family, key: &str) -> Change {
        Change {
            family,
            key: key.into(),
            kind: ChangeKind::Put,
        }
    }

    fn view(endpoint: Endpoint, selector: &str) -> ViewKey {
        ViewKey {
            endpoint,
            selector: selector.into(),
        }
    }

    #[test]
    fn a_view_untouched_after_the_revision_is_unchanged_and_touched_ones_name_their_members() {
        let now = Instant::now();
        let mut h = History::new(HistoryWindow::default());
        h.start(10);
        h.record(now, 12, &[change(Family::Config, "vip")]);
        h.record(now, 15, &[change(Family::PodGroup, "hello/hello.web.web")]);
        let config = view(Endpoint::Config, "*");
        assert_eq!(h.since(12, 15, &config, false), Since::Unchanged);
        let members = |keys: &[&str]| Some(keys.iter().map(|k| k.to_string()).collect());
        assert_eq!(
            h.since(11, 15, &config, false),
            Since::Changed(members(&["vip"]))
        );
        let proxy = view(Endpoint::Proxy, "hello/");
        assert_eq!(
            h.since(12, 15, &proxy, false),
            Since::Changed(members(&["hello.web.web"]))
        );
        assert_eq!(
            h.since(12, 15, &view(Endpoint::Apps, "*"), false),
            Since::Changed(members(&["hello"]))
        );
        assert_eq!(
            h.since(12, 15, &view(Endpoint::Proxy, "other/"), false),
            Since::Unchanged
        );
    }

    #[test]
    fn revisions_outside_the_known_history_are_unknown() {
        let mut h = History::new(HistoryWindow::default());
        let v = view(Endpoint::Config, "*");
        assert_eq!(
            h.since(5, 5, &v, false),
            Since::Unknown,
            "nothing loaded yet"
        );
        h.start(10);
        assert_eq!(
            h.since(9, 10, &v, false),
            Since::Unknown,
            "before the first snapshot"
        );
        assert_eq!(
            h.since(11, 10, &v, false),
            Since::Unknown,
            "from the future"
        );
        assert_eq!(h.since(10, 10, &v, false), Since::Unchanged);
    }

    #[test]
    fn dropping_old_entries_moves_the_horizon_so_nothing_is_claimed_unchanged() {
        let now = Instant::now();
        let window = HistoryWindow {
            min_age: Duration::ZERO,
            min_revisions: 0,
            max_entries: 2,
        };
        let mut h = History::new(window);
        h.start(1);
        for r in 2..=5 {
            h.record(now, r, &[change(Family::Config, &format!("k{r}"))]);
        }
        let v = view(Endpoint::Config, "*");
        assert!(h.stats().entries <= 2);
        assert_eq!(
            h.since(2, 5, &v, false),
            Since::Unknown,
            "k3 may be gone from the history"
        );
        assert!(matches!(h.since(4, 5, &v, false), Since::Changed(_)));
    }

    #[test]
    fn an_exact_hit_selection_ignores_keys_that_only_share_its_prefix() {
        let now = Instant::now();
        let mut h = History::new(HistoryWindow::default());
        h.start(1);
        h.record(now, 2, &[change(Family::Config, "vips/192.168.77.201")]);
        let vip = view(Endpoint::Config, "vip");
        assert_eq!(
            h.since(1, 2, &vip, true),
            Since::Unchanged,
            "`vip` exists: exact"
        );
        assert_eq!(
            h.since(1, 2, &vip, false),
            Since::Changed(Some(["vips/192.168.77.201".to_owned()].into())),
            "no `vip`: a prefix"
        );
    }

    #[test]
    fn an_exact_hit_selection_whose_key_changed_cannot_name_its_members() {
        let now = Instant::now();
        let mut h = History::new(HistoryWindow::default());
        h.start(1);
        h.record(now, 2, &[change(Family::Config, "domain")]);
        assert_eq!(
            h.since(1, 2, &view(Endpoint::Config, "domain"), true),
            Since::Changed(None)
        );
    }
}
