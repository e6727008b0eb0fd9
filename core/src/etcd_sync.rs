//! The etcd connection policy, as a sans-IO state machine both shells drive: which endpoint to
//! use, when to read a snapshot, from which revision to watch, and how long to back off.
//!
//! ```text
//! loop {
//!     match sync.next_step(now) {
//!         SyncStep::Wait { until }        => sleep until `until`
//!         SyncStep::Connect { endpoint }  => connect → handle_connected / handle_failure
//!         SyncStep::ReadSnapshot          => range /lain/ → engine.handle_snapshot,
//!                                            then handle_snapshot(revision) / handle_failure
//!         SyncStep::Watch { start_revision } => watch /lain/ from there; each message →
//!                                            handle_watch_response → WatchStep (Created: report
//!                                            Watching; Apply: engine.handle_events; Compacted:
//!                                            end the watch; Canceled: a failure);
//!                                            error → handle_failure
//!     }
//! }
//! ```
//!
//! A broken watch is resumed from the last applied revision on the next endpoint (etcd keeps
//! the history, so nothing is lost and nothing is re-read); only a compaction past that
//! revision forces a new snapshot, which the engine applies as a diff.

use std::time::{Duration, Instant};

use crate::input::WatchEvent;

/// Retry timing after failures: exponential from `initial` up to `max`, with jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl BackoffPolicy {
    /// The delay after `failures` consecutive failures (≥ 1), scaled by a jitter factor in
    /// `[0.5, 1.0]` taken from `jitter` ∈ `[0, 1)`, so that many nodes do not retry in step.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let raw = self.initial.saturating_mul(1u32 << exp).min(self.max);
        raw.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// What the shell should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStep {
    /// Nothing until `until` (backing off after a failure).
    Wait {
        /// When to ask again.
        until: Instant,
    },
    /// Connect to endpoint number `endpoint` of the configured list.
    Connect {
        /// Index into the endpoint list.
        endpoint: usize,
    },
    /// Read every key under `/lain/` and hand it to the engine.
    ReadSnapshot,
    /// Watch `/lain/` (prefix) from `start_revision`.
    Watch {
        /// The first revision to receive.
        start_revision: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Disconnected,
    Connected,
    Watching,
}

/// The connection policy state.
#[derive(Clone, Debug)]
pub struct EtcdSync {
    endpoints: usize,
    current: usize,
    phase: Phase,
    failures: u32,
    policy: BackoffPolicy,
    retry_at: Option<Instant>,
    applied: Option<i64>,
    need_snapshot: bool,
    /// Consecutive-failure count reset when a watch is established; total failures kept.
    pub failures_total: u64,
}

impl EtcdSync {
    /// A policy over `endpoints` endpoints (at least one).
    pub fn new(endpoints: usize, policy: BackoffPolicy) -> Self {
        EtcdSync {
            endpoints: endpoints.max(1),
            current: 0,
            phase: Phase::Disconnected,
            failures: 0,
            policy,
            retry_at: None,
            applied: None,
            need_snapshot: true,
            failures_total: 0,
        }
    }

    /// The next step. While watching, the shell is busy reading the watch and need not ask.
    pub fn next_step(&mut self, now: Instant) -> SyncStep {
        if let Some(until) = self.retry_at {
            if now < until {
                return SyncStep::Wait { until };
            }
            self.retry_at = None;
        }
        match (self.phase, self.applied) {
            (Phase::Disconnected, _) => SyncStep::Connect {
                endpoint: self.current,
            },
            (_, None) => SyncStep::ReadSnapshot,
            (_, Some(_)) if self.need_snapshot => SyncStep::ReadSnapshot,
            (_, Some(revision)) => SyncStep::Watch {
                start_revision: revision + 1,
            },
        }
    }

    /// The connection to the current endpoint is up.
    pub fn handle_connected(&mut self) {
        self.phase = Phase::Connected;
    }

    /// A snapshot at `revision` was applied to the engine.
    pub fn handle_snapshot(&mut self, revision: i64) {
        self.applied = Some(revision);
        self.need_snapshot = false;
    }

    /// The watch is established: failures so far are forgiven.
    pub fn handle_watching(&mut self) {
        self.phase = Phase::Watching;
        self.failures = 0;
    }

    /// Events up to `revision` were applied (a watch response or a progress notification).
    pub fn handle_revision(&mut self, revision: i64) {
        self.applied = Some(self.applied.map_or(revision, |r| r.max(revision)));
    }

    /// The watch start revision was compacted away: a new snapshot is needed.
    pub fn handle_compacted(&mut self) {
        self.need_snapshot = true;
        if self.phase == Phase::Watching {
            self.phase = Phase::Connected;
        }
    }

    /// The connection, the read or the watch failed: back off, then try the next endpoint.
    /// `jitter` ∈ `[0, 1)` comes from the shell's random source.
    pub fn handle_failure(&mut self, now: Instant, jitter: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.failures_total += 1;
        self.phase = Phase::Disconnected;
        self.current = (self.current + 1) % self.endpoints;
        let delay = self.policy.delay(self.failures, jitter);
        self.retry_at = now.checked_add(delay);
        delay
    }

    /// The revision the served state reflects.
    pub fn applied_revision(&self) -> Option<i64> {
        self.applied
    }
}

/// One message of the etcd watch stream, converted by the shell from its client's type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchResponse {
    /// The reply that confirms the watch was created.
    pub created: bool,
    /// etcd canceled the watch.
    pub canceled: bool,
    /// Why etcd canceled it (may be empty).
    pub cancel_reason: String,
    /// Non-zero when the start revision was compacted away: the oldest revision etcd still has.
    pub compact_revision: i64,
    /// The revision of the response header (the store's revision when it was sent).
    pub header_revision: i64,
    /// The events the shell could convert (keys that are not UTF-8 are left out), in order.
    pub events: Vec<WatchEvent>,
    /// The `mod_revision` of the last event etcd sent, converted or not (`None` without
    /// events).
    pub last_event_revision: Option<i64>,
}

/// What the shell does with a watch message, as decided by [`EtcdSync::handle_watch_response`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchStep {
    /// The watch is established: tell the engine [`crate::EtcdStatus::Watching`].
    Created,
    /// The start revision was compacted away: end this watch; the next step reads a snapshot.
    Compacted {
        /// The oldest revision etcd still has.
        compact_revision: i64,
    },
    /// etcd canceled the watch for another reason: a failure
    /// ([`EtcdSync::handle_failure`]).
    Canceled {
        /// etcd's reason (may be empty).
        reason: String,
    },
    /// Hand these events to the engine ([`crate::Engine::handle_events`]); empty for a
    /// progress notification.
    Apply(Vec<WatchEvent>),
}

impl EtcdSync {
    /// Takes one watch message into account and says what to do with it.
    ///
    /// Revisions: a message with events advances the applied revision to its last event's;
    /// a progress notification (no events, not the `created` reply) to its header revision.
    /// The header of the `created` reply, or of a catch-up batch, may be ahead of the events
    /// delivered so far, so it is never taken as progress: a watch resumed from it could skip
    /// events.
    pub fn handle_watch_response(&mut self, response: WatchResponse) -> WatchStep {
        if response.compact_revision > 0 {
            self.handle_compacted();
            return WatchStep::Compacted {
                compact_revision: response.compact_revision,
            };
        }
        if response.canceled {
            return WatchStep::Canceled {
                reason: response.cancel_reason,
            };
        }
        if response.created {
            self.handle_watching();
            return WatchStep::Created;
        }
        let revision = response
            .last_event_revision
            .unwrap_or(response.header_revision);
        if revision > 0 {
            self.handle_revision(revision);
        }
        WatchStep::Apply(response.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_start_connects_reads_a_snapshot_then_watches_from_the_next_revision() {
        let now = Instant::now();
        let mut s = EtcdSync::new(2, BackoffPolicy::default());
        assert_eq!(s.next_step(now), SyncStep::Connect { endpoint: 0 });
        s.handle_connected();
        assert_eq!(s.next_step(now), SyncStep::ReadSnapshot);
        s.handle_snapshot(41);
        assert_eq!(s.next_step(now), SyncStep::Watch { start_revision: 42 });
        s.handle_watching();
        s.handle_revision(50);
        assert_eq!(s.applied_revision(), Some(50));
    }

    #[test]
    fn a_broken_watch_resumes_from_the_applied_revision_on_the_next_endpoint_after_backoff() {
        let now = Instant::now();
        let mut s = EtcdSync::new(3, BackoffPolicy::default());
        s.handle_connected();
        s.handle_snapshot(10);
        s.handle_watching();
        s.handle_revision(12);
        let delay = s.handle_failure(now, 0.0);
        assert_eq!(delay, Duration::from_millis(100));
        assert_eq!(s.next_step(now), SyncStep::Wait { until: now + delay });
        assert_eq!(s.next_step(now + delay), SyncStep::Connect { endpoint: 1 });
        s.handle_connected();
        assert_eq!(
            s.next_step(now + delay),
            SyncStep::Watch { start_revision: 13 }
        );
    }

    #[test]
    fn a_compaction_forces_a_new_snapshot() {
        let now = Instant::now();
        let mut s = EtcdSync::new(1, BackoffPolicy::default());
        s.handle_connected();
        s.handle_snapshot(10);
        s.handle_watching();
        s.handle_compacted();
        assert_eq!(s.next_step(now), SyncStep::ReadSnapshot);
        s.handle_snapshot(90);
        assert_eq!(s.next_step(now), SyncStep::Watch { start_revision: 91 });
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_with_jitter() {
        let p = BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(p.delay(1, 0.999_999).as_millis(), 99);
        assert_eq!(p.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(6, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(u32::MAX, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(6, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn watch_messages_advance_by_their_events_and_progress_by_the_header() {
        let mut s = EtcdSync::new(1, BackoffPolicy::default());
        s.handle_connected();
        s.handle_snapshot(10);
        let created = WatchResponse {
            created: true,
            header_revision: 30,
            ..WatchResponse::default()
        };
        assert_eq!(s.handle_watch_response(created), WatchStep::Created);
        assert_eq!(
            s.applied_revision(),
            Some(10),
            "the created header is not progress"
        );
        let put = WatchEvent::Delete {
            key: "/lain/x".into(),
            mod_revision: 12,
        };
        let batch = WatchResponse {
            header_revision: 30,
            events: vec![put.clone()],
            last_event_revision: Some(13),
            ..WatchResponse::default()
        };
        assert_eq!(s.handle_watch_response(batch), WatchStep::Apply(vec![put]));
        assert_eq!(
            s.applied_revision(),
            Some(13),
            "the last event etcd sent counts"
        );
        let progress = WatchResponse {
            header_revision: 31,
            ..WatchResponse::default()
        };
        assert_eq!(s.handle_watch_response(progress), WatchStep::Apply(vec![]));
        assert_eq!(s.applied_revision(), Some(31));
        let compacted = WatchResponse {
            canceled: true,
            compact_revision: 40,
            ..WatchResponse::default()
        };
        assert_eq!(
            s.handle_watch_response(compacted),
            WatchStep::Compacted {
                compact_revision: 40
            }
        );
        assert_eq!(s.next_step(Instant::now()), SyncStep::ReadSnapshot);
        let canceled = WatchResponse {
            canceled: true,
            cancel_reason: "no".into(),
            ..WatchResponse::default()
        };
        assert_eq!(
            s.handle_watch_response(canceled),
            WatchStep::Canceled {
                reason: "no".into()
            }
        );
    }
}
