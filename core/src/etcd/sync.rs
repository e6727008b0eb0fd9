//! The etcd connection policy as a sans-IO state machine: which endpoint to use, which store
//! to read (see [`super::store`]), when to read a snapshot, from which revision to watch, and
//! how long to back off after a failure.
//!
//! A broken watch is resumed from the served revision on the next endpoint (etcd keeps the
//! history, so nothing is lost and nothing is re-read); only a compaction past that revision
//! (v2: the 1000-event window) forces a new snapshot, which the engine applies as a diff. The
//! revision itself is not kept here: the engine owns it and passes it to
//! [`EtcdSync::next_step`].

use std::time::{Duration, Instant};

use super::store::{EtcdApi, Store, StoreChoice};
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
    /// 200 ms, doubling up to 2 s (1–2 s with jitter): a retry costs etcd one small quorum
    /// read, and etcd back from an outage (or a restore) is followed again within 2 s.
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
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

/// How far behind etcd's reported index (v2) the served state may be and still catch up event
/// by event; beyond it a snapshot is read (the index counts writes outside `/lain/` too, so
/// this is an upper bound of the events to fetch).
pub const V2_CATCH_UP: i64 = 256;

/// Longest a v2 long poll is left waiting: then it is dropped and asked again from the same
/// index (nothing is lost: etcd keeps its last 1000 events). A proxy between lainlet and the
/// member (LAIN's `etcd --proxy on`) can lose its own connection to the member without
/// lainlet's connection noticing; a renewed poll cannot stay deaf for longer than this.
pub const V2_LONG_POLL_RENEW: Duration = Duration::from_secs(60);

/// What the shell should do next for etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
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
        /// The store whose API to connect to; `None`: both (they are to be probed). With
        /// both, the connection is up if one of them is (a failed one is probed as failed).
        store: Option<Store>,
    },
    /// Ask both stores whether they hold keys under `/lain/` (one cheap read each) and hand
    /// the answers to [`crate::Engine::handle_store_probe`].
    Probe,
    /// After a reconnect, prove that etcd continues the history served: ask `store` at which
    /// revision `key` (the newest put applied) was written, as of `revision` (its revision in
    /// the history served), and hand the answer to [`crate::Engine::handle_history_proof`].
    /// A restored etcd that has already taken more writes than it lost is at a revision as
    /// high as lainlet's, with another history: only this tells.
    ProveHistory {
        /// The store to ask.
        store: Store,
        /// The key of the newest put applied.
        key: String,
        /// Its revision in the history served.
        revision: i64,
    },
    /// Read every key under `/lain/` of `store` and hand it to
    /// [`crate::Engine::handle_snapshot`].
    ReadSnapshot {
        /// The store to read.
        store: Store,
    },
    /// Watch `/lain/` (prefix) of `store` from `start_revision`; hand each message to
    /// [`crate::Engine::handle_watch_response`].
    Watch {
        /// The store to watch.
        store: Store,
        /// The first revision to receive.
        start_revision: i64,
        /// etcd already reported a revision at or past `start_revision`: the watch starts in
        /// its history (catching up; logged more quietly).
        in_history: bool,
        /// End the watch at this time, if it still runs, and ask again (the store choice is
        /// provisional and is checked again then; a v2 long poll is renewed, see
        /// [`V2_LONG_POLL_RENEW`]).
        until: Option<Instant>,
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
    api: EtcdApi,
    /// The store read and whether that is settled; `None` until the first probe (auto).
    chosen: Option<(Store, bool)>,
    /// How long a provisional choice stands before both stores are asked again.
    reprobe: Duration,
    /// When a provisional choice is checked again.
    reprobe_at: Option<Instant>,
    /// The connection was lost since the history served was last proven: the next one
    /// proves it ([`EtcdStep::ProveHistory`]) before watching.
    unproven: bool,
}

impl EtcdSync {
    /// A policy over `endpoints` endpoints (at least one), reading the store `api` says
    /// (auto: probed, and a provisional choice probed again every `reprobe`).
    pub fn new(endpoints: usize, policy: BackoffPolicy, api: EtcdApi, reprobe: Duration) -> Self {
        EtcdSync {
            endpoints: endpoints.max(1),
            current: 0,
            phase: Phase::Disconnected,
            failures: 0,
            policy,
            retry_at: None,
            need_snapshot: true,
            api,
            chosen: match api {
                EtcdApi::Auto => None,
                EtcdApi::Only(store) => Some((store, true)),
            },
            reprobe,
            reprobe_at: None,
            unproven: false,
        }
    }

    /// The store read now, if chosen, and whether that choice is settled.
    pub fn store(&self) -> Option<(Store, bool)> {
        self.chosen
    }

    /// What `--etcd-api` asked for.
    pub fn api(&self) -> EtcdApi {
        self.api
    }

    /// The next step, given the revision the served state reflects (`None` before the first
    /// snapshot), the newest revision etcd has reported (0 if none) and the newest put
    /// applied (key, revision). While watching, the shell is busy reading the watch and need
    /// not ask.
    pub fn next_step(
        &mut self,
        now: Instant,
        applied: Option<i64>,
        etcd_revision: i64,
        newest_put: Option<(&str, i64)>,
    ) -> EtcdStep {
        if let Some(until) = self.retry_at {
            if now < until {
                return EtcdStep::Wait { until };
            }
            self.retry_at = None;
        }
        if self.phase == Phase::Disconnected {
            return EtcdStep::Connect {
                endpoint: self.current,
                store: self.chosen.filter(|(_, settled)| *settled).map(|(s, _)| s),
            };
        }
        let store = match self.chosen {
            None => return EtcdStep::Probe,
            Some(_) if self.reprobe_at.is_some_and(|at| now >= at) => return EtcdStep::Probe,
            Some((store, _)) => store,
        };
        match applied {
            // v2 catches up one event per request: far behind, a snapshot (a diff) is cheaper.
            Some(revision)
                if store == Store::V2 && etcd_revision.saturating_sub(revision) > V2_CATCH_UP =>
            {
                EtcdStep::ReadSnapshot { store }
            }
            Some(_) if self.need_snapshot => EtcdStep::ReadSnapshot { store },
            Some(_) if self.unproven && newest_put.is_some() => {
                let (key, revision) = newest_put.unwrap_or_default();
                EtcdStep::ProveHistory {
                    store,
                    key: key.to_owned(),
                    revision,
                }
            }
            Some(revision) => {
                let start_revision = revision.saturating_add(1);
                let renew = match store {
                    Store::V2 => now.checked_add(V2_LONG_POLL_RENEW),
                    Store::V3 => None,
                };
                let until = match (self.reprobe_at, renew) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                EtcdStep::Watch {
                    store,
                    start_revision,
                    in_history: start_revision <= etcd_revision,
                    until,
                }
            }
            _ => EtcdStep::ReadSnapshot { store },
        }
    }

    /// Both stores were probed and `choice` is what the rule says. Returns whether the store
    /// read changes (then a snapshot of the new store is read; the old one was served until
    /// now).
    pub fn handle_store_choice(&mut self, now: Instant, choice: &StoreChoice) -> bool {
        let changed = self.chosen.is_some_and(|(store, _)| store != choice.store);
        if changed {
            self.need_snapshot = true;
            if self.phase == Phase::Watching {
                self.phase = Phase::Connected;
            }
        }
        self.chosen = Some((choice.store, choice.settled));
        self.reprobe_at = match choice.settled {
            true => None,
            false => now.checked_add(self.reprobe),
        };
        changed
    }

    /// A saved state of `store` was loaded (a state file): nothing is read again, but the
    /// next connection proves the history served before watching, exactly as after a
    /// reconnect. With `--etcd-api auto` the saved choice is taken over: a provisional one
    /// (`settled` false) is checked by a probe first, a settled one stands (as for a lainlet
    /// that kept running).
    pub fn handle_restored(&mut self, now: Instant, store: Store, settled: bool) {
        self.need_snapshot = false;
        self.unproven = true;
        if self.api == EtcdApi::Auto {
            self.chosen = Some((store, settled));
            self.reprobe_at = (!settled).then_some(now);
        }
    }

    /// Whether a watch is established (since the last failure, compaction or store switch).
    pub fn is_watching(&self) -> bool {
        self.phase == Phase::Watching
    }

    /// The connection to the current endpoint is up.
    pub fn handle_connected(&mut self) {
        self.phase = Phase::Connected;
    }

    /// A snapshot was applied (it is etcd's history: nothing left to prove).
    pub fn handle_snapshot(&mut self) {
        self.need_snapshot = false;
        self.unproven = false;
    }

    /// The history served was proven to be etcd's ([`EtcdStep::ProveHistory`]).
    pub fn handle_proven(&mut self) {
        self.unproven = false;
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
        self.unproven = true;
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

    const V3: Store = Store::V3;

    fn sync(endpoints: usize, api: EtcdApi) -> EtcdSync {
        EtcdSync::new(
            endpoints,
            BackoffPolicy::default(),
            api,
            Duration::from_secs(10),
        )
    }

    fn watch(store: Store, start_revision: i64, in_history: bool) -> EtcdStep {
        EtcdStep::Watch {
            store,
            start_revision,
            in_history,
            until: None,
        }
    }

    /// A v2 long poll asked for at `now`: renewed after [`V2_LONG_POLL_RENEW`].
    fn long_poll(now: Instant, start_revision: i64, in_history: bool) -> EtcdStep {
        EtcdStep::Watch {
            store: Store::V2,
            start_revision,
            in_history,
            until: Some(now + V2_LONG_POLL_RENEW),
        }
    }

    fn choice(store: Store, settled: bool) -> StoreChoice {
        StoreChoice {
            store,
            settled,
            reason: String::new(),
        }
    }

    #[test]
    fn a_fresh_start_connects_reads_a_snapshot_then_watches_from_the_next_revision() {
        let now = Instant::now();
        let mut s = sync(2, EtcdApi::Only(V3));
        let connect = EtcdStep::Connect {
            endpoint: 0,
            store: Some(V3),
        };
        assert_eq!(s.next_step(now, None, 0, None), connect);
        s.handle_connected();
        assert_eq!(
            s.next_step(now, None, 0, None),
            EtcdStep::ReadSnapshot { store: V3 }
        );
        s.handle_snapshot();
        assert_eq!(s.next_step(now, Some(41), 41, None), watch(V3, 42, false));
        s.handle_watching();
    }

    #[test]
    fn a_watch_from_a_revision_etcd_has_already_reported_starts_in_its_history() {
        let now = Instant::now();
        let mut s = sync(1, EtcdApi::Only(Store::V2));
        s.handle_connected();
        s.handle_snapshot();
        assert_eq!(
            s.next_step(now, Some(41), 50, None),
            long_poll(now, 42, true)
        );
        assert_eq!(
            s.next_step(now, Some(49), 50, None),
            long_poll(now, 50, true)
        );
        assert_eq!(
            s.next_step(now, Some(50), 50, None),
            long_poll(now, 51, false)
        );
    }

    #[test]
    fn far_behind_on_v2_a_snapshot_is_read_instead_of_catching_up_event_by_event() {
        let now = Instant::now();
        let mut s = sync(1, EtcdApi::Only(Store::V2));
        s.handle_connected();
        s.handle_snapshot();
        let far = 100 + V2_CATCH_UP + 1;
        assert_eq!(
            s.next_step(now, Some(100), far, None),
            EtcdStep::ReadSnapshot { store: Store::V2 }
        );
        assert_eq!(
            s.next_step(now, Some(100), far - 1, None),
            long_poll(now, 101, true)
        );
        let mut v3 = sync(1, EtcdApi::Only(V3));
        v3.handle_connected();
        v3.handle_snapshot();
        assert_eq!(
            v3.next_step(now, Some(100), far, None),
            watch(V3, 101, true),
            "v3 streams its history"
        );
    }

    #[test]
    fn auto_connects_both_apis_probes_then_reads_the_chosen_store() {
        let now = Instant::now();
        let mut s = sync(1, EtcdApi::Auto);
        let both = EtcdStep::Connect {
            endpoint: 0,
            store: None,
        };
        assert_eq!(s.next_step(now, None, 0, None), both);
        s.handle_connected();
        assert_eq!(s.next_step(now, None, 0, None), EtcdStep::Probe);
        assert!(!s.handle_store_choice(now, &choice(Store::V2, true)));
        assert_eq!(
            s.next_step(now, None, 0, None),
            EtcdStep::ReadSnapshot { store: Store::V2 }
        );
        s.handle_snapshot();
        assert_eq!(s.next_step(now, Some(5), 5, None), long_poll(now, 6, false));
        s.handle_failure(now, 0.0);
        let later = now + Duration::from_secs(1);
        let settled = EtcdStep::Connect {
            endpoint: 0,
            store: Some(Store::V2),
        };
        assert_eq!(
            s.next_step(later, Some(5), 5, None),
            settled,
            "settled: one API only"
        );
        s.handle_connected();
        assert_eq!(
            s.next_step(later, Some(5), 5, None),
            long_poll(later, 6, false),
            "no new probe"
        );
    }

    #[test]
    fn a_provisional_choice_is_probed_again_and_a_switch_reads_the_other_store() {
        let now = Instant::now();
        let mut s = sync(1, EtcdApi::Auto);
        s.handle_connected();
        assert_eq!(s.next_step(now, None, 0, None), EtcdStep::Probe);
        s.handle_store_choice(now, &choice(Store::V2, false));
        s.handle_snapshot();
        let due = now + Duration::from_secs(10);
        let until = EtcdStep::Watch {
            store: Store::V2,
            start_revision: 4,
            in_history: false,
            until: Some(due),
        };
        assert_eq!(s.next_step(now, Some(3), 3, None), until);
        s.handle_watching();
        assert_eq!(s.next_step(due, Some(3), 3, None), EtcdStep::Probe);
        assert!(
            !s.handle_store_choice(due, &choice(Store::V2, false)),
            "same store"
        );
        assert!(matches!(
            s.next_step(due, Some(3), 3, None),
            EtcdStep::Watch {
                start_revision: 4,
                ..
            }
        ));
        let later = due + Duration::from_secs(10);
        assert_eq!(s.next_step(later, Some(3), 3, None), EtcdStep::Probe);
        assert!(s.handle_store_choice(later, &choice(V3, true)), "switched");
        assert_eq!(
            s.next_step(later, Some(3), 3, None),
            EtcdStep::ReadSnapshot { store: V3 }
        );
        s.handle_snapshot();
        assert_eq!(
            s.next_step(later, Some(1), 1, None),
            watch(V3, 2, false),
            "settled: no until"
        );
    }

    #[test]
    fn a_broken_watch_resumes_from_the_applied_revision_on_the_next_endpoint_after_backoff() {
        let now = Instant::now();
        let mut s = sync(3, EtcdApi::Only(V3));
        s.handle_connected();
        s.handle_snapshot();
        s.handle_watching();
        let delay = s.handle_failure(now, 0.0);
        assert_eq!(delay, Duration::from_millis(100));
        assert_eq!(
            s.next_step(now, Some(12), 12, None),
            EtcdStep::Wait { until: now + delay }
        );
        assert_eq!(
            s.next_step(now + delay, Some(12), 12, None),
            EtcdStep::Connect {
                endpoint: 1,
                store: Some(V3)
            }
        );
        s.handle_connected();
        assert_eq!(
            s.next_step(now + delay, Some(12), 12, None),
            watch(V3, 13, false)
        );
    }

    #[test]
    fn a_reconnect_proves_the_history_served_before_watching_again() {
        let now = Instant::now();
        let mut s = sync(1, EtcdApi::Only(V3));
        s.handle_connected();
        s.handle_snapshot();
        s.handle_watching();
        let newest = Some(("/lain/config/vip", 11));
        assert_eq!(
            s.next_step(now, Some(12), 12, newest),
            watch(V3, 13, false),
            "nothing to prove while the connection held"
        );
        let delay = s.handle_failure(now, 0.0);
        s.next_step(now + delay, Some(12), 12, newest);
        s.handle_connected();
        let prove = EtcdStep::ProveHistory {
            store: V3,
            key: "/lain/config/vip".into(),
            revision: 11,
        };
        assert_eq!(s.next_step(now + delay, Some(12), 12, newest), prove);
        assert_eq!(
            s.next_step(now + delay, Some(12), 12, newest),
            prove,
            "asked until answered"
        );
        s.handle_proven();
        assert_eq!(
            s.next_step(now + delay, Some(12), 12, newest),
            watch(V3, 13, false)
        );
        s.handle_failure(now, 0.0);
        s.handle_connected();
        assert_eq!(
            s.next_step(now + delay * 4, Some(12), 12, None),
            watch(V3, 13, false),
            "nothing put yet: nothing to prove"
        );
    }

    #[test]
    fn a_compaction_forces_a_new_snapshot() {
        let now = Instant::now();
        let mut s = sync(1, EtcdApi::Only(V3));
        s.handle_connected();
        s.handle_snapshot();
        s.handle_watching();
        s.handle_compacted();
        assert_eq!(
            s.next_step(now, Some(10), 10, None),
            EtcdStep::ReadSnapshot { store: V3 }
        );
        s.handle_snapshot();
        assert_eq!(s.next_step(now, Some(90), 90, None), watch(V3, 91, false));
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
