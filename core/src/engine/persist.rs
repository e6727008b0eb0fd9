//! The state file, engine side: what is saved and when, and a start from a saved state.
//!
//! ```text
//! start:    bytes of the file ──▶ handle_saved_state(now, bytes) ──▶ Ok(Restored) | Err(why)
//!           (a file that cannot be read: handle_state_file_error(why); counted, never fatal)
//! running:  at poll_state_save_timeout() (or on SIGTERM, with shutdown = true):
//!           poll_state_save(now, shutdown) ──▶ Some(SavedState) → encode, write atomically
//!                                           ──▶ handle_state_saved(now, Ok | Err(why))
//! ```
//!
//! A restored state is served at once but is **unproven** (DESIGN rule 8): `/healthz` says
//! `stale` and why, and the etcd policy treats the start as a reconnect that must prove its
//! history — the quorum check at connect (cluster ID, a revision not lower), then
//! [`crate::EtcdStep::ProveHistory`] (etcd still has the newest put saved), then a watch from
//! the saved revision + 1. A history that does not continue (another cluster, a restore from
//! a backup, a compacted revision, a v2 index out of etcd's 1000-event window) is read again
//! and applied as a diff, as after any reconnect. Nothing is saved while the state served is
//! not proven to be etcd's.

use std::time::{Duration, Instant};

use super::Engine;
use crate::error::StateIoError;
use crate::etcd::{EtcdApi, Store};
use crate::input::{KeyValue, Snapshot};
use crate::persist::{SavedState, StateFileError};

/// What a start from a state file loaded ([`Engine::handle_saved_state`]), for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The store the state was read from.
    pub store: Store,
    /// The revision (v2: index) it reflects.
    pub revision: i64,
    /// etcd keys loaded.
    pub keys: usize,
    /// Resume-history entries loaded.
    pub history: usize,
}

/// What identifies the state saved: when it differs from the current one, there is
/// something new to save.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    revision: Option<i64>,
    snapshots: u64,
    batches: u64,
    cluster_id: Option<u64>,
    store: Option<Store>,
}

/// The state file's bookkeeping.
#[derive(Debug, Default)]
pub(super) struct Persist {
    /// The state last saved or loaded.
    saved: Option<Mark>,
    /// A save handed out and not reported yet.
    pending: Option<Mark>,
    /// When the next periodic save may be made.
    next_at: Option<Instant>,
    /// The state served is not proven to be etcd's (loaded from a file, or etcd's history
    /// broke): it is not saved, and `/healthz` says so.
    unverified: bool,
    /// The revision loaded from a file, if the state came from one.
    pub(super) restored: Option<i64>,
    /// States saved.
    pub(super) saves: u64,
    /// Saves that failed (the shell's write).
    pub(super) save_failures: u64,
    /// Files not used (unreadable, corrupt, truncated, another version or store).
    pub(super) load_failures: u64,
    /// Loaded states whose history etcd did not continue (read again).
    pub(super) rejected: u64,
    /// The last problem with the file, for the status page.
    pub(super) last_error: Option<String>,
}

impl Persist {
    /// The state is etcd's (a snapshot was applied, or the history was proven).
    pub(super) fn handle_verified(&mut self) {
        self.unverified = false;
    }

    /// The state is not proven to be etcd's: not saved until it is.
    pub(super) fn handle_unverified(&mut self) {
        if self.restored.is_some() && self.unverified {
            self.rejected += 1;
        }
        self.unverified = true;
        self.restored = None;
    }

    /// Whether the state came from a file and is not proven yet.
    pub(super) fn serving_unproven_file(&self) -> Option<i64> {
        self.restored.filter(|_| self.unverified)
    }
}

impl Engine {
    /// Loads a state file's `bytes` into a fresh engine (before the first
    /// [`Engine::poll_etcd`]): served at once, `/healthz` `stale` until etcd proves that it
    /// continues the history saved (see the module docs). On error nothing changes; the
    /// error is counted (`/metrics`) for the shell to log once.
    pub fn handle_saved_state(
        &mut self,
        now: Instant,
        bytes: &[u8],
    ) -> Result<Restored, StateFileError> {
        let result = self.restore(now, bytes);
        if let Err(e) = &result {
            self.persist.load_failures += 1;
            self.persist.last_error = Some(format!("not loaded: {e}"));
        }
        result
    }

    fn restore(&mut self, now: Instant, bytes: &[u8]) -> Result<Restored, StateFileError> {
        if self.is_ready() {
            return Err(StateFileError::AlreadyLoaded);
        }
        let saved = SavedState::decode(bytes)?;
        if let EtcdApi::Only(configured) = self.config.etcd_api {
            if configured != saved.store {
                return Err(StateFileError::OtherStore {
                    file: saved.store,
                    configured,
                });
            }
        }
        let revision = saved.revision;
        let keys = saved.keys.len();
        let snapshot = Snapshot {
            revision,
            kvs: saved
                .keys
                .into_iter()
                .map(|(key, mod_revision, value)| KeyValue {
                    key,
                    value: value.to_vec(),
                    mod_revision,
                })
                .collect(),
        };
        let mut changes = Vec::new();
        let fleet_changed = self.replace_fleet(now, &snapshot.kvs);
        self.mirror
            .apply_snapshot(now, &mut self.state, snapshot, &mut changes);
        self.after_fleet(now, fleet_changed, true);
        if let Some(newest) = saved.newest_put.filter(|(_, r)| *r <= revision) {
            self.mirror.restore_newest_put(Some(newest));
        }
        self.misnamed_pod_group = self.state.pod_groups.iter().any(|(key, pg)| {
            key.split_once('/') != Some((pg.namespace.as_str(), pg.name.as_str()))
        });
        let history = saved.history.len();
        let horizon = saved.horizon.unwrap_or(revision);
        self.history.restore(now, revision, horizon, saved.history);
        let api = self.config.etcd_api;
        let (store, settled) = (saved.store, saved.settled);
        self.etcd
            .handle_restored(now, (store, settled), saved.cluster_id, revision, api);
        self.counters.ready_at = Some(now);
        self.persist.restored = Some(revision);
        self.persist.unverified = true;
        self.persist.saved = Some(self.persist_mark());
        self.persist.last_error = None;
        Ok(Restored {
            store,
            revision,
            keys,
            history,
        })
    }

    /// A state file that could not be read at all: counted, for the shell to log once.
    pub fn handle_state_file_error(&mut self, error: StateIoError) {
        self.persist.load_failures += 1;
        self.persist.last_error = Some(error.to_string());
    }

    /// The state to save now, if one is due: something changed since the last save, the
    /// state is proven to be etcd's, and the period since the last save has passed (or
    /// `shutdown`: the process is about to stop). Cheap (values are shared); encode it with
    /// [`SavedState::encode`] outside the engine's lock, write it, and report with
    /// [`Engine::handle_state_saved`]. `None` when saving is off
    /// ([`crate::EngineConfig::state_save_every`]).
    pub fn poll_state_save(&mut self, now: Instant, shutdown: bool) -> Option<SavedState> {
        let every = self.config.state_save_every?;
        let mark = self.savable_mark()?;
        let next_at = *self.persist.next_at.get_or_insert(now + every);
        if !shutdown && now < next_at {
            return None;
        }
        let mut keys = self.mirror.saved_keys()?;
        keys.extend(self.saved_fleet_keys());
        let (store, settled) = self.etcd_store_settled()?;
        let (horizon, history) = self.history.saved(now);
        self.persist.pending = Some(mark);
        self.persist.next_at = Some(now + every);
        Some(SavedState {
            store,
            settled,
            cluster_id: self.etcd.cluster_id,
            revision: mark.revision?,
            newest_put: self.mirror.newest_put().map(|(k, r)| (k.to_owned(), r)),
            horizon,
            keys,
            history,
        })
    }

    /// When [`Engine::poll_state_save`] has something to hand out next (`None`: nothing to
    /// save now; ask again after the next change, e.g. after [`Engine::state_save_every`]).
    pub fn poll_state_save_timeout(&self) -> Option<Instant> {
        self.config.state_save_every?;
        self.savable_mark()?;
        self.persist.next_at
    }

    /// How often a changed state is saved (`None`: never).
    pub fn state_save_every(&self) -> Option<Duration> {
        self.config.state_save_every
    }

    /// The outcome of writing the state [`Engine::poll_state_save`] handed out: `Ok`, or why
    /// it failed (a full or read-only disk: counted, tried again a period later; the
    /// service goes on).
    pub fn handle_state_saved(&mut self, _now: Instant, result: Result<(), StateIoError>) {
        let pending = self.persist.pending.take();
        match result {
            Ok(()) => {
                self.persist.saved = pending;
                self.persist.saves += 1;
                self.persist.last_error = None;
            }
            Err(e) => {
                self.persist.save_failures += 1;
                self.persist.last_error = Some(format!("not saved: {e}"));
            }
        }
    }

    /// The mark of the current state if it may and needs to be saved.
    fn savable_mark(&self) -> Option<Mark> {
        if self.persist.unverified || self.etcd.status == super::EtcdStatus::Demo {
            return None;
        }
        let mark = self.persist_mark();
        mark.revision?;
        mark.store?;
        let known = [self.persist.saved, self.persist.pending];
        (!known.contains(&Some(mark))).then_some(mark)
    }

    fn persist_mark(&self) -> Mark {
        Mark {
            revision: self.applied_revision(),
            snapshots: self.counters.snapshots,
            batches: self.counters.event_batches,
            cluster_id: self.etcd.cluster_id,
            store: self.etcd_store().map(|(s, _)| s),
        }
    }

    /// The note `/healthz` and the status page add while a loaded state is unproven.
    pub(super) fn saved_state_note(&self) -> Option<String> {
        let revision = self.persist.serving_unproven_file()?;
        Some(format!(
            "serving the state saved at revision {revision} (state file), not yet verified \
             against etcd"
        ))
    }
}
