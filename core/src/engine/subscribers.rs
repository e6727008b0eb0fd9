//! Watch connections: one latest-value slot each (rule 6 in the crate docs), wake-ups for the
//! shell, and heartbeat deadlines.
//!
//! A watch holds at most one pending thing to write: its first frame, or the newest state of
//! its view (a newer one replaces an older one the shell has not taken yet). The frame is made
//! only when the shell polls, in the watch's [`Mode`]: the original's numbering, revision ids,
//! patches against what this client already holds, or the raw state for a converting shell.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::diff;
use super::version::ViewVersion;
use super::views::SubscriberId;
use crate::error::ApiError;
use crate::sse::{frame_body, EventName, Frame};
use crate::views::{Endpoint, ViewKey};

/// How a watch's frames are numbered and shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The original's: `init` is id 1, a change's id counts the view's touches since the watch
    /// began (`touches − base + 1`), heartbeats and errors are id 0.
    Original {
        /// The view's touch count when the watch began.
        base: u64,
    },
    /// `rev=1`: ids are the etcd revision of the state shown; heartbeats and errors carry no
    /// id. With `diff`, changes are `patch` frames against what the client holds.
    Revisions {
        /// `diff=1`.
        diff: bool,
    },
    /// The state itself, for a shell that converts it ([`super::Engine::poll_update`]).
    Raw,
    /// The status page's stream (`/status/stream`): no view; its period is its heartbeat
    /// deadline, and when that is due the engine makes the status frame
    /// ([`Subscribers::take_status_due`], [`Subscribers::deliver_status`]).
    Status,
}

impl Mode {
    /// The id of frames that show no state (heartbeat, error).
    pub fn quiet_id(self) -> Option<u64> {
        match self {
            Mode::Original { .. } => Some(0),
            Mode::Revisions { .. } | Mode::Raw | Mode::Status => None,
        }
    }

    fn is_diff(self) -> bool {
        self == Mode::Revisions { diff: true }
    }
}

/// How a watch begins.
#[derive(Debug)]
pub enum Opening {
    /// With an `init` of this state.
    Init(Arc<ViewVersion>),
    /// Resuming, with this state as an `update` (full mode).
    Update(Arc<ViewVersion>),
    /// Resuming a diff watch: one `patch` of the members in `changed` to this state.
    Patch(BTreeSet<String>, Arc<ViewVersion>),
    /// Resuming with nothing new since the client's revision; the client holds this state.
    Quiet(Arc<ViewVersion>),
    /// With this error, which ends the watch.
    Final(ApiError),
    /// A status stream, with its first frame's body ([`Mode::Status`]).
    Status(Bytes),
}

/// What a watch will write next.
#[derive(Debug)]
enum Pending {
    /// The first frame: the view's state as an `init`.
    Init(Arc<ViewVersion>),
    /// A change of the view.
    Change(Arc<ViewVersion>),
    /// A diff watch resuming: the client holds `base` except for the members in `changed`,
    /// and is to be brought to `to` with one `patch`.
    Resume {
        /// Members that changed after the client's revision.
        changed: BTreeSet<String>,
        /// The view's JSON when the watch opened.
        base: Bytes,
        /// The state to patch to (the newest).
        to: Arc<ViewVersion>,
    },
    /// An error that ends the watch.
    Final(ApiError),
    /// A status frame's body ([`Mode::Status`]); a newer one replaces it.
    Status(Bytes),
}

#[derive(Debug)]
struct Subscriber {
    view: Option<ViewKey>,
    mode: Mode,
    pending: Option<Pending>,
    /// Diff mode: the JSON the client holds (patches are made against it).
    held: Option<Bytes>,
    /// The revision the state was at when the watch opened: a state shown is at least that
    /// new, so revision ids never go below it.
    opened_at: i64,
    heartbeat: Option<Duration>,
    heartbeat_due: bool,
    /// In the wake-up queue or holding an undelivered frame the shell was told about.
    awake: bool,
}

/// What a raw watch receives ([`Mode::Raw`]).
#[derive(Clone, Debug)]
pub enum Update {
    /// The view's state: the first one, then one per change.
    State(Arc<ViewVersion>),
    /// The watch failed and is over.
    Error(ApiError),
}

/// Counters about delivery, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeliveryStats {
    /// Frames handed to the shell.
    pub frames: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Frames replaced by a newer one before the shell took them (slow consumers).
    pub conflated: u64,
    /// Heartbeat frames handed to the shell.
    pub heartbeats: u64,
}

/// Every open watch connection.
#[derive(Debug, Default)]
pub struct Subscribers {
    subs: HashMap<SubscriberId, Subscriber>,
    next_id: u64,
    wakeups: VecDeque<SubscriberId>,
    heartbeats: BinaryHeap<Reverse<(Instant, SubscriberId)>>,
    stats: DeliveryStats,
    /// Status streams whose period came round; the engine makes their frame.
    status_due: Vec<SubscriberId>,
}

impl Subscribers {
    /// Opens a watch of `view` (`None`: a watch that ends with its first frame) in `mode`, the
    /// state being at revision `applied`.
    pub fn open(
        &mut self,
        now: Instant,
        view: Option<ViewKey>,
        mode: Mode,
        opening: Opening,
        heartbeat: Option<Duration>,
        applied: i64,
    ) -> SubscriberId {
        let id = self.open_waiting(now, mode, heartbeat, applied);
        self.start(id, view, mode, opening, applied);
        id
    }

    /// Opens a watch that shows nothing yet but heartbeats, until [`Subscribers::start`].
    pub fn open_waiting(
        &mut self,
        now: Instant,
        mode: Mode,
        heartbeat: Option<Duration>,
        applied: i64,
    ) -> SubscriberId {
        self.next_id += 1;
        let id = SubscriberId(self.next_id);
        let heartbeat = heartbeat.filter(|_| mode != Mode::Raw);
        if let Some(period) = heartbeat {
            if let Some(deadline) = now.checked_add(period) {
                self.heartbeats.push(Reverse((deadline, id)));
            }
        }
        let sub = Subscriber {
            view: None,
            mode,
            pending: None,
            held: None,
            opened_at: applied,
            heartbeat,
            heartbeat_due: false,
            awake: false,
        };
        self.subs.insert(id, sub);
        id
    }

    /// Starts watch `id` (opened by [`Subscribers::open_waiting`]) on `view` in `mode` (the
    /// same as opened, with the original numbering's base known now) with `opening`, the state
    /// being at `applied`. Returns `false` if the watch is gone.
    pub fn start(
        &mut self,
        id: SubscriberId,
        view: Option<ViewKey>,
        mode: Mode,
        opening: Opening,
        applied: i64,
    ) -> bool {
        let Some(sub) = self.subs.get_mut(&id) else {
            return false;
        };
        let (pending, held) = match opening {
            Opening::Init(version) => (Some(Pending::Init(version)), None),
            Opening::Update(version) => (Some(Pending::Change(version)), None),
            Opening::Patch(changed, to) => {
                let base = to.json().cloned().unwrap_or_default();
                (Some(Pending::Resume { changed, base, to }), None)
            }
            Opening::Quiet(version) => (None, version.json().cloned()),
            Opening::Final(error) => (Some(Pending::Final(error)), None),
            Opening::Status(body) => (Some(Pending::Status(body)), None),
        };
        sub.view = view;
        sub.mode = mode;
        sub.pending = pending;
        sub.held = held.filter(|_| sub.mode.is_diff());
        sub.opened_at = sub.opened_at.max(applied);
        if !sub.awake {
            sub.awake = true;
            self.wakeups.push_back(id);
        }
        true
    }

    /// Closes a watch; returns the view it followed.
    pub fn close(&mut self, id: SubscriberId) -> Option<ViewKey> {
        self.subs.remove(&id).and_then(|s| s.view)
    }

    /// Puts a view's new state into the slot of a subscriber, replacing an undelivered one.
    pub fn deliver(&mut self, id: SubscriberId, version: &Arc<ViewVersion>) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let version = version.clone();
        let (next, conflated) = match sub.pending.take() {
            None => (Pending::Change(version), false),
            // The original's numbering: the first frame becomes this change (as before).
            Some(Pending::Init(_)) if matches!(sub.mode, Mode::Original { .. }) => {
                (Pending::Change(version), true)
            }
            // The client has not seen a state yet: it starts at this one.
            Some(Pending::Init(_)) => (Pending::Init(version), true),
            Some(Pending::Change(_)) => (Pending::Change(version), true),
            Some(Pending::Resume { changed, base, .. }) => (
                Pending::Resume {
                    changed,
                    base,
                    to: version,
                },
                true,
            ),
            Some(Pending::Final(error)) => (Pending::Final(error), false),
            Some(Pending::Status(_)) => (Pending::Change(version), false),
        };
        sub.pending = Some(next);
        if conflated {
            self.stats.conflated += 1;
        }
        self.wake(id);
    }

    /// Puts a status frame's body into the slot of status stream `id`, replacing one the
    /// shell has not taken yet (not counted as a conflation: it is no view's state).
    pub fn deliver_status(&mut self, id: SubscriberId, body: &Bytes) {
        let Some(sub) = self.subs.get_mut(&id).filter(|s| s.mode == Mode::Status) else {
            return;
        };
        sub.pending = Some(Pending::Status(body.clone()));
        self.wake(id);
    }

    /// The status streams whose period came round since the last call.
    pub fn take_status_due(&mut self) -> Vec<SubscriberId> {
        std::mem::take(&mut self.status_due)
    }

    fn wake(&mut self, id: SubscriberId) {
        if let Some(sub) = self.subs.get_mut(&id) {
            if !sub.awake {
                sub.awake = true;
                self.wakeups.push_back(id);
            }
        }
    }

    /// The next watch that has something to write.
    pub fn poll_wakeup(&mut self) -> Option<SubscriberId> {
        while let Some(id) = self.wakeups.pop_front() {
            if self.subs.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// The next frame for a watch. After a frame with `close`, the watch is gone. Returns
    /// `None` when there is nothing to write (the next change wakes the watch again).
    pub fn poll_frame(&mut self, id: SubscriberId) -> Option<(Frame, Option<ViewKey>)> {
        let sub = self.subs.get_mut(&id)?;
        let counted = sub.mode != Mode::Status;
        let frame = loop {
            match sub.pending.take() {
                Some(pending) => {
                    if let Some(frame) = frame_of(sub, pending) {
                        break frame;
                    }
                }
                None if std::mem::take(&mut sub.heartbeat_due) => {
                    self.stats.heartbeats += 1;
                    break Frame {
                        id: sub.mode.quiet_id(),
                        body: heartbeat_body(),
                        close: false,
                    };
                }
                None => {
                    sub.awake = false;
                    return None;
                }
            }
        };
        if counted {
            self.stats.frames += 1;
            self.stats.bytes += frame.len() as u64;
        }
        let closed_view = if frame.close { self.close(id) } else { None };
        Some((frame, closed_view))
    }

    /// The next state for a raw watch ([`Mode::Raw`]); `None` when there is nothing new.
    pub fn poll_update(&mut self, id: SubscriberId) -> Option<(Update, Option<ViewKey>)> {
        let sub = self.subs.get_mut(&id)?;
        let update = match sub.pending.take() {
            Some(Pending::Init(v) | Pending::Change(v) | Pending::Resume { to: v, .. }) => {
                match &v.rendering {
                    Ok(_) => Update::State(v),
                    Err(e) => Update::Error(e.clone()),
                }
            }
            Some(Pending::Final(error)) => Update::Error(error),
            Some(Pending::Status(_)) | None => {
                sub.awake = false;
                return None;
            }
        };
        self.stats.frames += 1;
        let closed_view = match &update {
            Update::Error(_) => self.close(id),
            Update::State(_) => None,
        };
        Some((update, closed_view))
    }

    /// When the next heartbeat is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heartbeats.peek().map(|Reverse((at, _))| *at)
    }

    /// Marks the heartbeats due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.heartbeats.peek() {
            if at > now {
                break;
            }
            self.heartbeats.pop();
            let Some(sub) = self.subs.get_mut(&id) else {
                continue;
            };
            let Some(period) = sub.heartbeat else {
                continue;
            };
            if sub.mode == Mode::Status {
                self.status_due.push(id);
            } else {
                sub.heartbeat_due = true;
                self.wake(id);
            }
            let next = at
                .checked_add(period)
                .filter(|n| *n > now)
                .or_else(|| now.checked_add(period));
            if let Some(next) = next {
                self.heartbeats.push(Reverse((next, id)));
            }
        }
    }

    /// Number of open watches.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Delivery counters.
    pub fn stats(&self) -> DeliveryStats {
        self.stats
    }

    /// Open status streams ([`Mode::Status`]).
    pub fn status_count(&self) -> usize {
        self.subs
            .values()
            .filter(|s| s.mode == Mode::Status)
            .count()
    }

    /// Open watches per view (watches that end with their first frame are not counted).
    pub fn count_by_view(&self) -> BTreeMap<&ViewKey, usize> {
        let mut counts = BTreeMap::new();
        for view in self.subs.values().filter_map(|s| s.view.as_ref()) {
            *counts.entry(view).or_default() += 1;
        }
        counts
    }

    /// Open watches per endpoint (watches that end with their first frame are not counted).
    pub fn count_by_endpoint(&self) -> BTreeMap<Endpoint, usize> {
        let mut counts = BTreeMap::new();
        for view in self.subs.values().filter_map(|s| s.view.as_ref()) {
            *counts.entry(view.endpoint).or_default() += 1;
        }
        counts
    }
}

/// The frame a pending state makes for `sub`; `None` when there is nothing to write (a patch
/// whose members did not change).
fn frame_of(sub: &mut Subscriber, pending: Pending) -> Option<Frame> {
    let frame = |id: u64, body: &Bytes| Frame {
        id: Some(id),
        body: body.clone(),
        close: false,
    };
    let version = match &pending {
        Pending::Status(body) => {
            return Some(Frame {
                id: None,
                body: body.clone(),
                close: false,
            })
        }
        Pending::Final(error) => {
            let text = error.to_string();
            return Some(Frame {
                id: sub.mode.quiet_id(),
                body: frame_body(EventName::Error, text.as_bytes()),
                close: true,
            });
        }
        Pending::Init(v) | Pending::Change(v) | Pending::Resume { to: v, .. } => v.clone(),
    };
    let Ok(json) = &version.rendering else {
        return Some(Frame {
            id: sub.mode.quiet_id(),
            body: version.change_body().clone(),
            close: true,
        });
    };
    let revision = u64::try_from(version.revision.max(sub.opened_at)).unwrap_or(0);
    let held = if sub.mode.is_diff() {
        sub.held.replace(json.clone())
    } else {
        None
    };
    Some(match (sub.mode, pending) {
        (_, Pending::Final(_) | Pending::Status(_)) => unreachable!("returned above"),
        (Mode::Original { .. }, Pending::Init(_)) => frame(1, version.init_body()),
        (Mode::Original { base }, _) => frame(
            version.touches.saturating_sub(base) + 1,
            version.change_body(),
        ),
        (_, Pending::Init(_)) => frame(revision, version.init_body()),
        (_, Pending::Resume { changed, base, .. }) => {
            // Members that changed after the client's revision, and since the watch opened.
            let mut members = changed;
            members.extend(diff::changed_members(&base, json));
            let patch = diff::patch_of(&members, json)?;
            frame(revision, &frame_body(EventName::Patch, &patch))
        }
        (Mode::Revisions { diff: true }, Pending::Change(_)) => match held {
            Some(held) => frame(revision, &version.patch_body(&held)?),
            None => frame(revision, version.init_body()),
        },
        (_, Pending::Change(_)) => frame(revision, version.change_body()),
    })
}

fn heartbeat_body() -> Bytes {
    static BODY: &[u8] = b"event: heartbeat\n\n";
    debug_assert_eq!(frame_body(EventName::Heartbeat, b""), BODY);
    Bytes::from_static(BODY)
}
