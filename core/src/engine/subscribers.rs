//! Watch connections: one latest-value slot each (rule 6 in the crate docs), wake-ups for the shell, and
//! heartbeat deadlines.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::views::SubscriberId;
use crate::sse::{frame_body, EventName, Frame};
use crate::views::{Endpoint, ViewKey};

#[derive(Debug)]
struct Subscriber {
    view: Option<ViewKey>,
    /// The view's touch count when this watch started: frame id = touches − base + 1.
    base: u64,
    pending: Option<Frame>,
    heartbeat: Option<Duration>,
    heartbeat_due: bool,
    /// In the wake-up queue or holding an undelivered frame the shell was told about.
    awake: bool,
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
}

impl Subscribers {
    /// Opens a watch whose first frame is `first`. `view` is the view it follows (`None` for a
    /// watch that ends with its first frame), `base` the view's touch count now.
    pub fn open(
        &mut self,
        now: Instant,
        view: Option<ViewKey>,
        base: u64,
        first: Frame,
        heartbeat: Option<Duration>,
    ) -> SubscriberId {
        self.next_id += 1;
        let id = SubscriberId(self.next_id);
        if let Some(period) = heartbeat {
            if let Some(deadline) = now.checked_add(period) {
                self.heartbeats.push(Reverse((deadline, id)));
            }
        }
        let sub = Subscriber {
            view,
            base,
            pending: Some(first),
            heartbeat,
            heartbeat_due: false,
            awake: true,
        };
        self.subs.insert(id, sub);
        self.wakeups.push_back(id);
        id
    }

    /// Closes a watch; returns the view it followed.
    pub fn close(&mut self, id: SubscriberId) -> Option<ViewKey> {
        self.subs.remove(&id).and_then(|s| s.view)
    }

    /// Puts a view's new output into the slot of a subscriber, replacing an undelivered one.
    pub fn deliver(&mut self, id: SubscriberId, touches: u64, event: EventName, body: &Bytes) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let frame = if event == EventName::Error {
            Frame {
                id: 0,
                body: body.clone(),
                close: true,
            }
        } else {
            let id = touches.saturating_sub(sub.base) + 1;
            Frame {
                id,
                body: body.clone(),
                close: false,
            }
        };
        if sub.pending.replace(frame).is_some() {
            self.stats.conflated += 1;
        }
        if !sub.awake {
            sub.awake = true;
            self.wakeups.push_back(id);
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
        let frame = if let Some(frame) = sub.pending.take() {
            frame
        } else if std::mem::take(&mut sub.heartbeat_due) {
            self.stats.heartbeats += 1;
            Frame {
                id: 0,
                body: heartbeat_body(),
                close: false,
            }
        } else {
            sub.awake = false;
            return None;
        };
        self.stats.frames += 1;
        self.stats.bytes += frame.len() as u64;
        let closed_view = if frame.close { self.close(id) } else { None };
        Some((frame, closed_view))
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
            sub.heartbeat_due = true;
            if !sub.awake {
                sub.awake = true;
                self.wakeups.push_back(id);
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

    /// Open watches per endpoint (watches that end with their first frame are not counted).
    pub fn count_by_endpoint(&self) -> BTreeMap<Endpoint, usize> {
        let mut counts = BTreeMap::new();
        for view in self.subs.values().filter_map(|s| s.view.as_ref()) {
            *counts.entry(view.endpoint).or_default() += 1;
        }
        counts
    }
}

fn heartbeat_body() -> Bytes {
    static BODY: &[u8] = b"event: heartbeat\n\n";
    debug_assert_eq!(frame_body(EventName::Heartbeat, b""), BODY);
    Bytes::from_static(BODY)
}
