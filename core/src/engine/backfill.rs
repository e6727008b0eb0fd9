//! Resuming from before the history, such as across a restart of lainlet: a restarted
//! lainlet knows its state from its first snapshot on, not what changed before it, so a watch
//! resuming from an older revision R would get a fresh `init`. etcd's v3 store still knows:
//! a keys-only listing at R (keys and revisions, no values) and the mirror's own
//! `mod_revision`s tell exactly which keys changed after R:
//!
//! * a key the mirror holds with `mod_revision` > R changed after R;
//! * a key the listing has and the mirror does not was deleted after R.
//!
//! A key created and deleted after R is in neither, and in neither view. So such a resume is
//! held (no frame yet, heartbeats go on) while the shell asks etcd for the listing beside the
//! watch ([`crate::EtcdCheck::Backfill`]); then it is answered from the history like any other
//! (nothing, one `update`, one `patch`). No listing within [`HOLD_LIMIT`] (etcd compacted R
//! away, or is unreachable) and it gets its `init`. The v2 store cannot read the past: a v2
//! lainlet answers such resumes with `init` at once.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use super::subscribers::Mode;
use super::views::SubscriberId;
use super::Engine;
use crate::error::EtcdCallError;
use crate::etcd::{KeyListing, Store};
use crate::state::{classify, Family};
use crate::views::ViewKey;

/// How long a resume waits for etcd's listing before it gets an `init`.
pub const HOLD_LIMIT: Duration = Duration::from_secs(5);

/// At most this many resumes wait at once (beyond, they get `init` at once).
const MAX_HELD: usize = 100_000;

/// A resume waiting for a listing.
#[derive(Debug)]
struct Held {
    id: SubscriberId,
    key: ViewKey,
    mode: Mode,
    resume: i64,
    deadline: Instant,
}

/// The resumes waiting for etcd, and the listings they need.
#[derive(Debug, Default)]
pub(super) struct Backfill {
    held: Vec<Held>,
    /// Revisions to list, not yet handed to the shell.
    wanted: BTreeSet<i64>,
    /// Revisions added to `wanted` since the shell last looked ([`Engine::poll_etcd_wakeup`]).
    wake: Vec<i64>,
    /// Listings that came (for `/metrics`).
    pub listings: u64,
}

/// Why the etcd loop is woken before its next check is due ([`Engine::poll_etcd_wakeup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdWakeup {
    /// A resume waits for a keys-only listing at `at_revision` ([`crate::EtcdCheck::Backfill`]
    /// is due now).
    Backfill {
        /// The revision to list at.
        at_revision: i64,
    },
}

/// What a listing did, for the log.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackfillOutcome {
    /// The resumes from `revision` were answered: `changed` cache keys changed after it.
    Answered {
        /// The revision listed.
        revision: i64,
        /// Cache keys that changed after it.
        changed: usize,
        /// Watches answered.
        watches: usize,
    },
    /// No listing: the resumes from `revision` get `init`.
    Failed {
        /// The revision asked for.
        revision: i64,
        /// Why.
        reason: String,
        /// Watches that get `init`.
        watches: usize,
    },
}

impl Backfill {
    /// Resumes waiting.
    pub(super) fn waiting(&self) -> usize {
        self.held.len()
    }
}

impl Engine {
    /// Whether a resume from `resume` should wait for etcd's listing of that revision.
    pub(super) fn can_backfill(&self, resume: i64) -> bool {
        let Some(horizon) = self.history.horizon() else {
            return false;
        };
        resume >= 1
            && resume < horizon
            && self.served_store() == Some(Store::V3)
            && self.backfill.held.len() < MAX_HELD
    }

    /// Holds watch `id` (already open, without a view) until the listing of `resume` comes.
    pub(super) fn hold_resume(
        &mut self,
        now: Instant,
        id: SubscriberId,
        key: ViewKey,
        mode: Mode,
        resume: i64,
    ) {
        self.backfill.held.push(Held {
            id,
            key,
            mode,
            resume,
            deadline: now + HOLD_LIMIT,
        });
        if self.backfill.wanted.insert(resume) {
            self.backfill.wake.push(resume);
        }
    }

    /// Why the etcd loop should look at [`Engine::poll_etcd_check`] again now, once per new
    /// request (drain until `None`; the shell wakes its etcd loop if there was any). A
    /// request already answered by [`Engine::handle_backfill`] is not told.
    pub fn poll_etcd_wakeup(&mut self) -> Option<EtcdWakeup> {
        while let Some(at_revision) = self.backfill.wake.pop() {
            if self.backfill.wanted.contains(&at_revision) {
                return Some(EtcdWakeup::Backfill { at_revision });
            }
        }
        None
    }

    /// A listing wanted by a held resume, if any (wanted until it is handed back to
    /// [`Engine::handle_backfill`]).
    pub(super) fn wanted_backfill(&self) -> Option<i64> {
        self.backfill.wanted.last().copied()
    }

    /// A keys-only listing of `/lain/` at `revision`, as [`crate::EtcdCheck::Backfill`]
    /// asked, or why none came. Answers the resumes that waited for it.
    pub fn handle_backfill(
        &mut self,
        now: Instant,
        revision: i64,
        listing: Result<KeyListing, EtcdCallError>,
    ) -> BackfillOutcome {
        self.backfill.wanted.remove(&revision);
        let changed = match listing {
            Ok(listing) if listing.revision == revision => self.changed_after(&listing),
            Ok(listing) => Err(format!(
                "a listing at revision {} instead of {revision}",
                listing.revision
            )),
            Err(e) => Err(e.to_string()),
        };
        let outcome = match changed {
            Ok(keys) => {
                self.backfill.listings += 1;
                let count = keys.len();
                let upto = self.applied_revision().unwrap_or(0);
                self.history.add_backfill(revision, upto, keys);
                BackfillOutcome::Answered {
                    revision,
                    changed: count,
                    watches: 0,
                }
            }
            Err(reason) => BackfillOutcome::Failed {
                revision,
                reason,
                watches: 0,
            },
        };
        let released = self.release_held(now, |h| h.resume == revision);
        match outcome {
            BackfillOutcome::Answered {
                revision, changed, ..
            } => BackfillOutcome::Answered {
                revision,
                changed,
                watches: released,
            },
            BackfillOutcome::Failed {
                revision, reason, ..
            } => BackfillOutcome::Failed {
                revision,
                reason,
                watches: released,
            },
        }
    }

    /// Answers the held resumes whose time is up, with `init`.
    pub(super) fn expire_held_resumes(&mut self, now: Instant) {
        if self.backfill.held.iter().any(|h| h.deadline <= now) {
            self.release_held(now, |h| h.deadline <= now);
        }
    }

    /// Answers every held resume now (etcd failed: no listing is coming).
    pub(super) fn release_held_resumes(&mut self, now: Instant) {
        self.backfill.wanted.clear();
        self.release_held(now, |_| true);
    }

    /// The earliest deadline of a held resume.
    pub(super) fn held_deadline(&self) -> Option<Instant> {
        self.backfill.held.iter().map(|h| h.deadline).min()
    }

    /// Opens the held watches `which` selects for real: from the history if it can answer
    /// now, else with `init`. Returns how many.
    fn release_held(&mut self, now: Instant, which: impl Fn(&Held) -> bool) -> usize {
        let (release, keep): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.backfill.held)
            .into_iter()
            .partition(which);
        self.backfill.held = keep;
        let mut released = 0;
        for held in release {
            if self.start_watch(now, held.id, held.key, held.mode, held.resume) {
                released += 1;
            }
        }
        released
    }

    /// The cache keys that changed after the listing's revision, the mirror being current.
    fn changed_after(&self, listing: &KeyListing) -> Result<Vec<(Family, String)>, String> {
        let mut changed = Vec::new();
        let mut held: HashSet<&str> = HashSet::new();
        for key in self.mirror.keys() {
            held.insert(key);
            let Some(revision) = self.mirror.mod_revision(key) else {
                continue;
            };
            if revision > listing.revision {
                if let Some((source, cache_key)) = classify(key) {
                    changed.push((source.family(), cache_key.to_owned()));
                }
            }
        }
        for (key, _) in &listing.keys {
            if !held.contains(key.as_str()) {
                if let Some((source, cache_key)) = classify(key) {
                    changed.push((source.family(), cache_key.to_owned()));
                }
            }
        }
        changed.sort();
        changed.dedup();
        Ok(changed)
    }
}
