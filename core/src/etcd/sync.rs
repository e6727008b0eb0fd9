//! The etcd connection policy as a sans-IO state machine: which endpoint to use, when to read a
//! snapshot, from which revision to watch, and how long to back off after a failure.
//!
//! A broken watch is resumed from the served revision on the next endpoint (etcd keeps the
//! history, so nothing is lost and nothing is re-read); only a compaction past that revision
//! forces a new snapshot, which the engine applies as a diff. The revision itself is not kept
//! here: the engine owns it and passes it to [`EtcdSync::next_step`].

use std::time::{Duration, Instant};

#[cfg(doc)]
use super::Jitter;

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

/// What the shell should do next for etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdStep {
    /// Nothing until `until` (backing off after a failure).
    Wait {
        /// When to ask again.
        until: Instant,
    },
    /// Connect to endpoint number `endpoint` of the configured list, then report
    /// [`crate::Engine::handle_etcd_connected`] or [`crate::Engine::handle_etcd_failure`].
    Connect {
        /// Index into the endpoint list.
        endpoint: usize,
    },
    /// Read every key under `/lain/` and hand it to [`crate::Engine::handle_snapshot`].
    ReadSnapshot,
    /// Watch `/lain/` (prefix) from `start_revision`; hand each message to
    /// [`crate::Engine::handle_watch_response`].
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
    need_snapshot: bool,
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
            need_snapshot: true,
        }
    }

    /// The next step, given the revision the served state reflects (`None` before the first
    /// snapshot). While watching, the shell is busy reading the watch and need not ask.
    pub fn next_step(&mut self, now: Instant, applied: Option<i64>) -> EtcdStep {
        if let Some(until) = self.retry_at {
            if now < until {
                return EtcdStep::Wait { until };
            }
            self.retry_at = None;
        }
        match (self.phase, applied) {
            (Phase::Disconnected, _) => EtcdStep::Connect {
                endpoint: self.current,
            },
            (_, None) => EtcdStep::ReadSnapshot,
            (_, Some(_)) if self.need_snapshot => EtcdStep::ReadSnapshot,
            (_, Some(revision)) => EtcdStep::Watch {
                start_revision: revision + 1,
            },
        }
    }

    /// The connection to the current endpoint is up.
    pub fn handle_connected(&mut self) {
        self.phase = Phase::Connected;
    }

    /// A snapshot was applied.
    pub fn handle_snapshot(&mut self) {
        self.need_snapshot = false;
    }

    /// The watch is established: failures so far are forgiven.
    pub fn handle_watching(&mut self) {
        self.phase = Phase::Watching;
        self.failures = 0;
    }

    /// The watch start revision was compacted away: a new snapshot is needed.
    pub fn handle_compacted(&mut self) {
        self.need_snapshot = true;
        if self.phase == Phase::Watching {
            self.phase = Phase::Connected;
        }
    }

    /// The connection, the read or the watch failed: back off, then try the next endpoint.
    /// `jitter` ∈ `[0, 1)` spreads the retries of many nodes ([`Jitter::unit`]). Returns the
    /// back-off delay.
    pub fn handle_failure(&mut self, now: Instant, jitter: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.phase = Phase::Disconnected;
        self.current = (self.current + 1) % self.endpoints;
        let delay = self.policy.delay(self.failures, jitter);
        self.retry_at = now.checked_add(delay);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_start_connects_reads_a_snapshot_then_watches_from_the_next_revision() {
        let now = Instant::now();
        let mut s = EtcdSync::new(2, BackoffPolicy::default());
        assert_eq!(s.next_step(now, None), EtcdStep::Connect { endpoint: 0 });
        s.handle_connected();
        assert_eq!(s.next_step(now, None), EtcdStep::ReadSnapshot);
        s.handle_snapshot();
        assert_eq!(
            s.next_step(now, Some(41)),
            EtcdStep::Watch { start_revision: 42 }
        );
        s.handle_watching();
    }

    #[test]
    fn a_broken_watch_resumes_from_the_applied_revision_on_the_next_endpoint_after_backoff() {
        let now = Instant::now();
        let mut s = EtcdSync::new(3, BackoffPolicy::default());
        s.handle_connected();
        s.handle_snapshot();
        s.handle_watching();
        let delay = s.handle_failure(now, 0.0);
        assert_eq!(delay, Duration::from_millis(100));
        assert_eq!(
            s.next_step(now, Some(12)),
            EtcdStep::Wait { until: now + delay }
        );
        assert_eq!(
            s.next_step(now + delay, Some(12)),
            EtcdStep::Connect { endpoint: 1 }
        );
        s.handle_connected();
        assert_eq!(
            s.next_step(now + delay, Some(12)),
            EtcdStep::Watch { start_revision: 13 }
        );
    }

    #[test]
    fn a_compaction_forces_a_new_snapshot() {
        let now = Instant::now();
        let mut s = EtcdSync::new(1, BackoffPolicy::default());
        s.handle_connected();
        s.handle_snapshot();
        s.handle_watching();
        s.handle_compacted();
        assert_eq!(s.next_step(now, Some(10)), EtcdStep::ReadSnapshot);
        s.handle_snapshot();
        assert_eq!(
            s.next_step(now, Some(90)),
            EtcdStep::Watch { start_revision: 91 }
        );
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
}
