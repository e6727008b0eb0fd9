//! When to write what to keep this lainlet's fleet key alive: a pure state machine that the
//! engine drives with its own facts ([`Facts`]) and the shell with the results of the writes.
//!
//! ```text
//! every `every` s (the heartbeat):
//!   no key yet, or another store   → Put (v3: grant a lease of `ttl`, put under it;
//!                                          v2: set with `ttl`)
//!   what it reports changed        → Put (v3: under the same lease; v2: set with `ttl`)
//!   else                           → Refresh (v3: one lease keep-alive; v2: `refresh=true`,
//!                                             which no watcher sees)
//! a refresh finds the key or lease gone → Put at once
//! a write fails                    → counted; the next heartbeat tries again
//! shutdown                         → Withdraw (v3: revoke the lease; v2: delete the key)
//! ```
//!
//! "What it reports changed" excludes the revision moved only by the fleet's own writes (see
//! the module docs of [`crate::fleet`]), and the lag.

use std::time::{Duration, Instant};

use super::{Announcement, FLEET_PREFIX};
use crate::etcd::Store;

/// The shortest TTL a fleet key gets.
pub const MIN_TTL: Duration = Duration::from_secs(5);

/// On etcd's v2 store a heartbeat sets the value again, instead of refreshing the TTL, when
/// the last set is this old. A refresh notifies no watcher but takes a place in etcd's
/// 1000-event history; a quiet `/lain/` would otherwise fall out of that history (N
/// announcing lainlets fill it in 2000/N s) and every renewed long poll would end in a full
/// re-read (error 401). One set a minute wakes every lainlet's poll with an event (which no
/// view sees and nobody answers with a write), so its next poll starts inside the history.
pub const V2_SET_EVERY: Duration = Duration::from_secs(60);

/// Settings of the fleet heartbeat (`--announce`, `--announce-every`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Seconds between two heartbeats (`--announce-every`).
    pub every: Duration,
    /// The binary's name (`lainlet`, `lainlet-smol`).
    pub shell: String,
    /// When the process started, in seconds since the Unix epoch.
    pub started_at: u64,
}

impl AnnounceConfig {
    /// The TTL of the key: three heartbeats, at least [`MIN_TTL`].
    pub fn ttl(&self) -> Duration {
        self.every.saturating_mul(3).max(MIN_TTL)
    }
}

/// One write of the heartbeat, on the store the engine follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetWrite {
    /// v3: grant a lease of `ttl` when `lease` is `None`, then put `key` = `value` under the
    /// lease; v2: set `key` = `value` with `ttl`. Report the lease used.
    Put {
        /// The store to write to.
        store: Store,
        /// The full etcd key.
        key: String,
        /// The value ([`Announcement::encode`]).
        value: Vec<u8>,
        /// The key's time to live.
        ttl: Duration,
        /// v3: the lease granted by an earlier put.
        lease: Option<i64>,
    },
    /// v3: one keep-alive of `lease`; v2: refresh the TTL of `key` in place
    /// (`refresh=true&prevExist=true`, which notifies no watcher). A key or lease that no
    /// longer exists is [`FleetWritten::Gone`].
    Refresh {
        /// The store to write to.
        store: Store,
        /// The full etcd key.
        key: String,
        /// The key's time to live.
        ttl: Duration,
        /// v3: the lease to keep alive.
        lease: Option<i64>,
    },
    /// v3: revoke `lease` (which deletes the key); v2: delete `key`.
    Withdraw {
        /// The store to write to.
        store: Store,
        /// The full etcd key.
        key: String,
        /// v3: the lease to revoke.
        lease: Option<i64>,
    },
}

/// What became of a [`FleetWrite`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetWritten {
    /// Done; for a v3 put, the lease the key is under.
    Done {
        /// The lease (v3).
        lease: Option<i64>,
    },
    /// A refresh found the key (v2) or the lease (v3) gone (it expired).
    Gone,
    /// etcd did not do it; why, as the client said it (logged, shown on the status page).
    Failed(String),
    /// v3: a put etcd refused after granting its lease (a user that may not write the key):
    /// counted as a failure, and the lease is used by the next put instead of a new grant.
    Refused {
        /// The lease granted for the put.
        lease: i64,
        /// Why the put was refused.
        reason: String,
    },
}

/// What the heartbeat should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetStep {
    /// The fleet is off (no `--announce`): nothing, ever.
    Off,
    /// Nothing until `until`; ask again then (or when woken).
    Wait {
        /// When to ask again.
        until: Instant,
    },
    /// Do `write` at etcd endpoint number `endpoint`, then report
    /// [`crate::Engine::handle_fleet_written`].
    Write {
        /// Index into the shell's endpoint list (the one the watch uses).
        endpoint: usize,
        /// The write.
        write: FleetWrite,
    },
}

/// What the engine knows when a heartbeat is due.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The store followed, and the endpoint used; `None` before either is known.
    pub store: Option<(Store, usize)>,
    /// What to announce (its revision is the applied one); `None` before the first snapshot.
    pub announcement: Option<Announcement>,
    /// The newest revision at which the served state changed.
    pub relevant_revision: i64,
}

/// Counters of the heartbeat (`/metrics`, the status page).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AnnounceStats {
    /// Puts done (a new value, or a new key).
    pub puts: u64,
    /// Refreshes done (the TTL only).
    pub refreshes: u64,
    /// Writes etcd did not do.
    pub failures: u64,
    /// Times the key or lease had expired and was put again.
    pub expired: u64,
    /// The last failure's reason.
    pub last_error: Option<String>,
}

/// The key as last written.
#[derive(Clone, Debug)]
struct Held {
    store: Store,
    lease: Option<i64>,
    written: Announcement,
    /// When the value was last set (v2: see [`V2_SET_EVERY`]).
    set_at: Instant,
}

/// The heartbeat state machine (see the module docs).
#[derive(Clone, Debug)]
pub struct Announcer {
    config: AnnounceConfig,
    key: String,
    next: Option<Instant>,
    held: Option<Held>,
    in_flight: Option<FleetWrite>,
    /// The value handed out with the put in flight.
    putting: Option<Announcement>,
    /// v3: a lease granted for a put that etcd refused, for the next put (no grant per
    /// failed heartbeat).
    spare_lease: Option<i64>,
    stats: AnnounceStats,
}

impl Announcer {
    /// A heartbeat for the key of `hostname`.
    pub fn new(config: AnnounceConfig, hostname: &str) -> Announcer {
        Announcer {
            config,
            key: format!("{FLEET_PREFIX}{hostname}"),
            next: None,
            held: None,
            in_flight: None,
            putting: None,
            spare_lease: None,
            stats: AnnounceStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &AnnounceConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &AnnounceStats {
        &self.stats
    }

    /// The key written.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether a key is believed to be alive in etcd.
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// What to do at `now`, given what the engine knows.
    pub fn poll(&mut self, now: Instant, facts: Facts) -> FleetStep {
        let every = self.config.every;
        if self.in_flight.is_some() {
            // The shell reports every write before it asks again; be patient if not.
            return FleetStep::Wait { until: now + every };
        }
        if let Some(next) = self.next.filter(|next| now < *next) {
            return FleetStep::Wait { until: next };
        }
        let (Some((store, endpoint)), Some(announcement)) = (facts.store, facts.announcement)
        else {
            return FleetStep::Wait { until: now + every };
        };
        self.next = Some(now + every);
        let ttl = self.config.ttl();
        let key = self.key.clone();
        let write = match &self.held {
            Some(held)
                if held.store == store
                    && !changed(&held.written, &announcement, facts.relevant_revision)
                    && !(store == Store::V2
                        && now.saturating_duration_since(held.set_at) >= V2_SET_EVERY) =>
            {
                FleetWrite::Refresh {
                    store,
                    key,
                    ttl,
                    lease: held.lease,
                }
            }
            held => {
                let lease = held
                    .as_ref()
                    .filter(|h| h.store == store)
                    .and_then(|h| h.lease)
                    .or(self.spare_lease.filter(|_| store == Store::V3));
                self.putting = Some(announcement.clone());
                FleetWrite::Put {
                    store,
                    key,
                    value: announcement.encode(),
                    ttl,
                    lease,
                }
            }
        };
        self.in_flight = Some(write.clone());
        FleetStep::Write { endpoint, write }
    }

    /// The result of the write handed out last, at `now`.
    pub fn handle_written(&mut self, now: Instant, result: FleetWritten) {
        let Some(write) = self.in_flight.take() else {
            return;
        };
        let putting = self.putting.take();
        match (write, result) {
            (FleetWrite::Put { store, .. }, FleetWritten::Done { lease }) => {
                self.stats.puts += 1;
                self.spare_lease = None;
                if let Some(written) = putting {
                    self.held = Some(Held {
                        store,
                        lease,
                        written,
                        set_at: now,
                    });
                }
            }
            (FleetWrite::Refresh { .. }, FleetWritten::Done { .. }) => self.stats.refreshes += 1,
            (FleetWrite::Withdraw { .. }, FleetWritten::Done { .. }) => {}
            (_, FleetWritten::Gone) => {
                // Expired while etcd could not be reached: put it again at once.
                self.stats.expired += 1;
                self.held = None;
                self.spare_lease = None;
                self.next = Some(now);
            }
            (_, FleetWritten::Refused { lease, reason }) => {
                self.spare_lease = Some(lease);
                self.stats.failures += 1;
                self.stats.last_error = Some(reason);
            }
            (_, FleetWritten::Failed(reason)) => {
                self.stats.failures += 1;
                self.stats.last_error = Some(reason);
                // A put that failed may or may not have been applied: put again next time.
                if let Some(held) = &mut self.held {
                    if putting.is_some() {
                        held.written.revision = -1;
                    }
                }
            }
        }
    }

    /// The write that removes the key at shutdown, if one is held (reported like any other).
    pub fn poll_withdraw(&mut self) -> Option<FleetWrite> {
        let held = self.held.take()?;
        let write = FleetWrite::Withdraw {
            store: held.store,
            key: self.key.clone(),
            lease: held.lease,
        };
        self.in_flight = Some(write.clone());
        Some(write)
    }
}

/// Whether `now` reports something `written` does not: the static facts, the watchers, or a
/// change of the served state since (not the lag, not a revision moved only by fleet writes).
fn changed(written: &Announcement, now: &Announcement, relevant_revision: i64) -> bool {
    written.node != now.node
        || written.ip != now.ip
        || written.version != now.version
        || written.shell != now.shell
        || written.store != now.store
        || written.started_at != now.started_at
        || written.watchers != now.watchers
        || written.revision < relevant_revision
        || written.revision > now.revision
}
