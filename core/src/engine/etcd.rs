//! The engine's side of following etcd: the connection policy ([`EtcdSync`]) and what the
//! engine tells about the connection. The engine is the one owner of the applied revision:
//! the policy resumes watches from it, and progress notifications advance it.

use std::time::{Duration, Instant};

use super::Engine;
use crate::etcd::{EtcdStep, EtcdSync, Jitter, WatchOutcome, WatchResponse};

/// The state of the etcd connection (`/healthz`, `/debug`, `/metrics`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcdStatus {
    /// Connected and watching (after a snapshot was applied).
    Watching,
    /// Not watching: connecting, reading, or retrying after a failure. The state served is
    /// the last known one.
    Disconnected {
        /// A human-readable reason, e.g. the client error.
        reason: String,
    },
    /// Serving a built-in data set, not connected to any etcd.
    Demo,
}

impl EtcdStatus {
    /// The state's name in `/healthz`, `/debug` and `/metrics`.
    pub fn name(&self) -> &'static str {
        match self {
            EtcdStatus::Watching => "watching",
            EtcdStatus::Disconnected { .. } => "disconnected",
            EtcdStatus::Demo => "demo",
        }
    }

    /// Every state name, for `/metrics`.
    pub const NAMES: [&'static str; 3] = ["watching", "disconnected", "demo"];

    /// Why the connection is down, if it is.
    pub fn reason(&self) -> Option<&str> {
        match self {
            EtcdStatus::Disconnected { reason } => Some(reason),
            _ => None,
        }
    }
}

/// The policy, the state, and counters about the connection.
#[derive(Debug)]
pub(super) struct EtcdLink {
    sync: EtcdSync,
    jitter: Jitter,
    pub(super) status: EtcdStatus,
    /// Times the connection or the watch was lost.
    pub(super) disconnects: u64,
    /// The newest store revision etcd has reported (response headers).
    pub(super) etcd_revision: i64,
    /// The endpoint of the last [`EtcdStep::Connect`] (an index into the shell's list).
    pub(super) endpoint: Option<usize>,
}

impl EtcdLink {
    pub(super) fn new(config: &super::EngineConfig) -> EtcdLink {
        EtcdLink {
            sync: EtcdSync::new(config.etcd_endpoints, config.backoff),
            jitter: Jitter::new(config.seed),
            status: EtcdStatus::Disconnected {
                reason: "not connected yet".to_owned(),
            },
            disconnects: 0,
            etcd_revision: 0,
            endpoint: None,
        }
    }

    pub(super) fn handle_snapshot(&mut self) {
        self.sync.handle_snapshot();
    }

    pub(super) fn handle_demo(&mut self) {
        self.status = EtcdStatus::Demo;
    }
}

impl Engine {
    /// What to do next for etcd (see [`EtcdStep`]). While a watch is being read, ask again
    /// only after it ended.
    pub fn poll_etcd(&mut self, now: Instant) -> EtcdStep {
        let step = self
            .etcd
            .sync
            .next_step(now, self.mirror.applied_revision());
        if let EtcdStep::Connect { endpoint } = step {
            self.etcd.endpoint = Some(endpoint);
        }
        step
    }

    /// The connection asked for by [`EtcdStep::Connect`] is up.
    pub fn handle_etcd_connected(&mut self, _now: Instant) {
        self.etcd.sync.handle_connected();
    }

    /// Takes one message of the watch asked for by [`EtcdStep::Watch`] into account.
    ///
    /// Revisions: a message with events advances the applied revision to its last event's
    /// (converted or not); a progress notification (no events, not the `created` reply) to its
    /// header revision. The header of the `created` reply, or of a catch-up batch, may be ahead
    /// of the events delivered so far, so it is never taken as progress: a watch resumed from
    /// it could skip events.
    pub fn handle_watch_response(&mut self, now: Instant, response: WatchResponse) -> WatchOutcome {
        self.etcd.etcd_revision = self.etcd.etcd_revision.max(response.header_revision);
        let start_revision = self.mirror.applied_revision().map_or(0, |r| r + 1);
        if response.compact_revision > 0 {
            self.etcd.sync.handle_compacted();
            return WatchOutcome::Compacted {
                start_revision,
                compact_revision: response.compact_revision,
            };
        }
        if response.canceled {
            return WatchOutcome::Canceled {
                reason: response.cancel_reason,
            };
        }
        if response.created {
            self.etcd.sync.handle_watching();
            self.etcd.status = EtcdStatus::Watching;
            return WatchOutcome::Created { start_revision };
        }
        let progress = response
            .last_event_revision
            .unwrap_or(response.header_revision);
        self.handle_events(now, response.events);
        if progress > 0 {
            self.mirror.advance_to(progress);
        }
        WatchOutcome::Applied
    }

    /// The connection, the snapshot read or the watch failed: the served state stays, the
    /// status says why, and the next [`Engine::poll_etcd`] backs off (the returned delay), then
    /// tries the next endpoint.
    pub fn handle_etcd_failure(&mut self, now: Instant, reason: String) -> Duration {
        if !matches!(self.etcd.status, EtcdStatus::Disconnected { .. }) {
            self.etcd.disconnects += 1;
        }
        self.etcd.status = EtcdStatus::Disconnected { reason };
        let jitter = self.etcd.jitter.unit();
        self.etcd.sync.handle_failure(now, jitter)
    }

    /// The state of the etcd connection.
    pub fn etcd_status(&self) -> &EtcdStatus {
        &self.etcd.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{KeyValue, Snapshot, WatchEvent};
    use crate::{EngineConfig, EtcdStep};

    fn engine_at(revision: i64) -> Engine {
        let mut e = Engine::new(EngineConfig::default());
        let now = Instant::now();
        assert_eq!(e.poll_etcd(now), EtcdStep::Connect { endpoint: 0 });
        e.handle_etcd_connected(now);
        assert_eq!(e.poll_etcd(now), EtcdStep::ReadSnapshot);
        e.handle_snapshot(
            now,
            Snapshot {
                revision,
                kvs: vec![],
            },
        );
        e
    }

    #[test]
    fn watch_messages_advance_by_their_events_and_progress_by_the_header() {
        let now = Instant::now();
        let mut e = engine_at(10);
        assert_eq!(e.poll_etcd(now), EtcdStep::Watch { start_revision: 11 });
        let created = WatchResponse {
            created: true,
            header_revision: 30,
            ..WatchResponse::default()
        };
        assert_eq!(
            e.handle_watch_response(now, created),
            WatchOutcome::Created { start_revision: 11 }
        );
        assert_eq!(
            e.applied_revision(),
            Some(10),
            "the created header is not progress"
        );
        assert_eq!(e.etcd_status(), &EtcdStatus::Watching);
        let put = WatchEvent::Put(KeyValue {
            key: "/lain/config/x".into(),
            value: b"1".to_vec(),
            mod_revision: 12,
        });
        let batch = WatchResponse {
            header_revision: 30,
            events: vec![put],
            last_event_revision: Some(13),
            ..WatchResponse::default()
        };
        assert_eq!(e.handle_watch_response(now, batch), WatchOutcome::Applied);
        assert_eq!(
            e.applied_revision(),
            Some(13),
            "the last event etcd sent counts"
        );
        let progress = WatchResponse {
            header_revision: 31,
            ..WatchResponse::default()
        };
        assert_eq!(
            e.handle_watch_response(now, progress),
            WatchOutcome::Applied
        );
        assert_eq!(e.applied_revision(), Some(31), "progress is served at once");
        let compacted = WatchResponse {
            canceled: true,
            compact_revision: 40,
            ..WatchResponse::default()
        };
        assert_eq!(
            e.handle_watch_response(now, compacted),
            WatchOutcome::Compacted {
                start_revision: 32,
                compact_revision: 40
            }
        );
        assert_eq!(e.poll_etcd(now), EtcdStep::ReadSnapshot);
        let canceled = WatchResponse {
            canceled: true,
            cancel_reason: "no".into(),
            ..WatchResponse::default()
        };
        assert_eq!(
            e.handle_watch_response(now, canceled),
            WatchOutcome::Canceled {
                reason: "no".into()
            }
        );
    }

    #[test]
    fn a_failure_is_counted_once_per_outage_and_backs_off_before_the_next_endpoint() {
        let now = Instant::now();
        let mut e = engine_at(10);
        e.handle_watch_response(
            now,
            WatchResponse {
                created: true,
                ..WatchResponse::default()
            },
        );
        let delay = e.handle_etcd_failure(now, "gone".into());
        assert_eq!(e.etcd_status().reason(), Some("gone"));
        assert!(matches!(e.poll_etcd(now), EtcdStep::Wait { .. }));
        assert_eq!(e.poll_etcd(now + delay), EtcdStep::Connect { endpoint: 0 });
        e.handle_etcd_failure(now + delay, "still gone".into());
        assert_eq!(e.etcd.disconnects, 1, "one outage");
        assert_eq!(e.applied_revision(), Some(10), "the served state stays");
    }
}
