//! Checks beside the open watch. A silent watch proves nothing: a member that lost its quorum
//! keeps its streams open and sends no events, so after a while of silence a linearizable read
//! (which only a member with a leader answers) must succeed, or the connection counts as
//! failed — `/healthz` says `stale` — and is made again until it does. And now and then the
//! mirror is compared with a listing of etcd's keys (see [`super::drift`]); a difference is
//! repaired by a fresh snapshot, applied as a diff.

use std::time::{Duration, Instant};

use super::drift::{DriftCheck, MirrorView};
use super::Engine;
use crate::etcd::{EtcdCheck, KeyListing};

/// When the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckPolicy {
    /// Watch silence after which the quorum is checked (and again this often while silent).
    pub quorum_after: Duration,
    /// Time a quorum check has to answer.
    pub timeout: Duration,
    /// Time a key listing has to arrive (a big cluster lists a few megabytes).
    pub listing_timeout: Duration,
    /// How often the mirror is compared with etcd's keys (each interval drawn from 75–125 % of
    /// it, so that nodes restarted together do not list together); `None`: never.
    pub drift_every: Option<Duration>,
}

impl Default for CheckPolicy {
    fn default() -> Self {
        CheckPolicy {
            quorum_after: Duration::from_secs(10),
            timeout: Duration::from_secs(3),
            listing_timeout: Duration::from_secs(30),
            drift_every: Some(Duration::from_secs(600)),
        }
    }
}

/// What the checks found, for `/metrics`, `/debug` and the logs.
#[derive(Debug, Default)]
pub(super) struct Checks {
    drift: DriftCheck,
    next_drift: Option<Instant>,
    /// When a quorum check last succeeded: silence is counted from the later of that and the
    /// watch's last message.
    quorum_ok_at: Option<Instant>,
    /// Quorum checks that failed.
    pub quorum_failures: u64,
    /// Key listings compared.
    pub drift_checks: u64,
    /// Listings that found a difference (each followed by a snapshot).
    pub drift_repairs: u64,
    /// Keys compared by the last listing.
    pub last_compared: usize,
}

/// What a key listing found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriftOutcome {
    /// The mirror matches etcd (`compared` keys).
    Consistent {
        /// Keys compared.
        compared: usize,
    },
    /// These keys differ: end the watch; the next step reads a snapshot, applied as a diff.
    Drift {
        /// The keys (the first few are enough for a log line).
        keys: Vec<String>,
    },
    /// No listing came (or it could not be compared); the next one is due later.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl Engine {
    /// The next check to run beside the open watch, and when: a listing a held resume waits
    /// for, at once; a key listing when the drift check is due; else a quorum check once the watch has been silent for the policy's
    /// `quorum_after` since `last_message` (the watch's creation or its last message).
    pub fn poll_etcd_check(&mut self, now: Instant, last_message: Instant) -> (Instant, EtcdCheck) {
        if let Some(at_revision) = self.wanted_backfill() {
            return (now, EtcdCheck::Backfill { at_revision });
        }
        let policy = self.config.checks;
        let silent_since = self
            .checks
            .quorum_ok_at
            .map_or(last_message, |ok| ok.max(last_message));
        let quorum = (silent_since + policy.quorum_after, EtcdCheck::Quorum);
        let Some(every) = policy.drift_every else {
            return quorum;
        };
        let next = match self.checks.next_drift {
            Some(next) => next,
            None => {
                let next = now + self.drift_interval(every);
                *self.checks.next_drift.insert(next)
            }
        };
        match self.applied_revision() {
            Some(at_revision) if next <= quorum.0 => (next, EtcdCheck::Keys { at_revision }),
            _ => quorum,
        }
    }

    /// The time until the next drift check: 75–125 % of `every`.
    fn drift_interval(&mut self, every: Duration) -> Duration {
        every.mul_f64(0.75 + 0.5 * self.etcd.jitter_unit())
    }

    /// How long `check` may take before it counts as failed.
    pub fn etcd_check_timeout(&self, check: EtcdCheck) -> Duration {
        match check {
            EtcdCheck::Quorum => self.config.checks.timeout,
            EtcdCheck::Keys { .. } => self.config.checks.listing_timeout,
            EtcdCheck::Backfill { .. } => super::backfill::HOLD_LIMIT,
        }
    }

    /// The outcome of a quorum check. `Err` (etcd did not answer, or answered without a
    /// quorum): report it with [`Engine::handle_etcd_failure`], which reconnects.
    pub fn handle_quorum_check(
        &mut self,
        now: Instant,
        result: Result<(), String>,
    ) -> Result<(), String> {
        match result {
            Ok(()) => {
                self.checks.quorum_ok_at = Some(now);
                Ok(())
            }
            Err(e) => {
                self.checks.quorum_failures += 1;
                Err(format!("no quorum: a linearizable read failed ({e})"))
            }
        }
    }

    /// A listing of etcd's keys for the drift check (or why none came).
    pub fn handle_key_listing(
        &mut self,
        now: Instant,
        listing: Result<KeyListing, String>,
    ) -> DriftOutcome {
        if let Some(every) = self.config.checks.drift_every {
            self.checks.next_drift = Some(now + self.drift_interval(every));
        }
        let listing = match listing {
            Ok(l) => l,
            Err(reason) => return DriftOutcome::Skipped { reason },
        };
        let Some(applied) = self.applied_revision() else {
            return DriftOutcome::Skipped {
                reason: "nothing loaded yet".to_owned(),
            };
        };
        let keys: Vec<(&str, i64)> = self
            .mirror
            .keys()
            .filter_map(|k| Some((k, self.mirror.mod_revision(k)?)))
            .collect();
        let view = MirrorView {
            applied,
            keys,
            touched_after_listing: self.history.touched_after(listing.revision),
        };
        let report = self.checks.drift.compare(&listing, &view);
        self.checks.drift_checks += 1;
        self.checks.last_compared = report.compared;
        if report.drifted.is_empty() {
            return DriftOutcome::Consistent {
                compared: report.compared,
            };
        }
        self.checks.drift_repairs += 1;
        self.etcd.request_snapshot();
        DriftOutcome::Drift {
            keys: report.drifted.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{KeyValue, Snapshot};
    use crate::{EngineConfig, EtcdApi, EtcdStep, Store, WatchResponse};

    const VIP: &str = "/lain/config/vip";
    const DOMAIN: &str = "/lain/config/domain";

    fn policy(drift_every: Option<u64>) -> CheckPolicy {
        CheckPolicy {
            quorum_after: Duration::from_secs(10),
            drift_every: drift_every.map(Duration::from_secs),
            ..CheckPolicy::default()
        }
    }

    /// An engine watching the v3 store at revision 20, holding two keys.
    fn watching(checks: CheckPolicy, now: Instant) -> Engine {
        let mut e = Engine::new(EngineConfig {
            etcd_api: EtcdApi::Only(Store::V3),
            checks,
            ..EngineConfig::default()
        });
        assert!(matches!(e.poll_etcd(now), EtcdStep::Connect { .. }));
        e.handle_etcd_connected(now);
        let kv = |key: &str, rev| KeyValue {
            key: key.into(),
            value: b"\"x\"".to_vec(),
            mod_revision: rev,
        };
        e.handle_snapshot(
            now,
            Snapshot {
                revision: 20,
                kvs: vec![kv(VIP, 4), kv(DOMAIN, 5)],
            },
        );
        assert!(matches!(e.poll_etcd(now), EtcdStep::Watch { .. }));
        let created = WatchResponse {
            created: true,
            header_revision: 20,
            ..WatchResponse::default()
        };
        e.handle_watch_response(now, created);
        e
    }

    fn healthz(e: &mut Engine) -> String {
        let ctx = crate::RequestContext {
            peer: std::net::IpAddr::from([127, 0, 0, 1]),
            now: Instant::now(),
            wall: std::time::SystemTime::UNIX_EPOCH,
            connections: 1,
        };
        let request = crate::Request::new(crate::Method::Get, "/healthz");
        match e.handle_request(&request, &ctx) {
            crate::Reply::Response(r) => String::from_utf8_lossy(&r.body).into_owned(),
            crate::Reply::Stream(_) => panic!("/healthz opened a stream"),
        }
    }

    fn listing(revision: i64, keys: &[(&str, i64)]) -> KeyListing {
        KeyListing {
            revision,
            keys: keys.iter().map(|(k, r)| (k.to_string(), *r)).collect(),
        }
    }

    #[test]
    fn a_silent_watch_is_quorum_checked_and_a_failed_check_makes_health_stale() {
        let t0 = Instant::now();
        let mut e = watching(policy(None), t0);
        let s = Duration::from_secs;
        assert_eq!(e.poll_etcd_check(t0, t0), (t0 + s(10), EtcdCheck::Quorum));
        assert_eq!(
            e.poll_etcd_check(t0 + s(7), t0 + s(5)),
            (t0 + s(15), EtcdCheck::Quorum),
            "every message pushes the check back"
        );
        assert_eq!(e.etcd_check_timeout(EtcdCheck::Quorum), s(3));
        assert_eq!(e.handle_quorum_check(t0 + s(15), Ok(())), Ok(()));
        assert_eq!(
            e.poll_etcd_check(t0 + s(15), t0 + s(5)),
            (t0 + s(25), EtcdCheck::Quorum),
            "a passed check counts as a message: the next one is a period later"
        );
        assert!(healthz(&mut e).contains(r#""status":"ok""#));
        let failed = e.handle_quorum_check(t0 + s(25), Err("timed out".into()));
        let reason = failed.expect_err("a failed check is an etcd failure");
        assert!(
            reason.contains("no quorum") && reason.contains("timed out"),
            "{reason}"
        );
        e.handle_etcd_failure(t0 + s(25), reason);
        let health = healthz(&mut e);
        assert!(health.contains(r#""status":"stale""#), "{health}");
        assert!(health.contains("no quorum"), "{health}");
        assert_eq!(e.checks.quorum_failures, 1);
    }

    #[test]
    fn the_drift_check_comes_every_period_instead_of_a_quorum_check() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut e = watching(policy(Some(60)), t0);
        assert_eq!(e.poll_etcd_check(t0, t0), (t0 + s(10), EtcdCheck::Quorum));
        let keys = EtcdCheck::Keys { at_revision: 20 };
        let spread = |from: Instant| from + s(45)..=from + s(75);
        // Quorum checks far off: the next check is the listing, 75–125 % of a period away.
        let due = |e: &mut Engine, now: Instant| {
            let (at, check) = e.poll_etcd_check(now, now + s(1000));
            assert_eq!(check, keys);
            at
        };
        let first = due(&mut e, t0);
        assert!(spread(t0).contains(&first), "{:?}", first - t0);
        assert_eq!(due(&mut e, t0 + s(30)), first, "polling does not move it");
        assert_eq!(
            e.poll_etcd_check(first - s(20), first - s(20)).1,
            EtcdCheck::Quorum
        );
        assert_eq!(e.etcd_check_timeout(keys), s(30));
        let outcome = e.handle_key_listing(first, Ok(listing(20, &[(VIP, 4), (DOMAIN, 5)])));
        assert_eq!(outcome, DriftOutcome::Consistent { compared: 2 });
        let second = due(&mut e, first);
        assert!(spread(first).contains(&second), "{:?}", second - first);
        let skipped = e.handle_key_listing(second, Err("no answer".into()));
        assert!(
            matches!(skipped, DriftOutcome::Skipped { .. }),
            "{skipped:?}"
        );
        let third = due(&mut e, second);
        assert!(
            spread(second).contains(&third),
            "a skipped listing waits a period too"
        );
        assert_eq!(
            e.checks.drift_checks, 1,
            "a missing listing compares nothing"
        );
        let intervals: std::collections::BTreeSet<_> = (0..20)
            .map(|_| {
                let at = due(&mut e, third);
                e.handle_key_listing(third, Ok(listing(20, &[(VIP, 4), (DOMAIN, 5)])));
                at
            })
            .collect();
        assert!(
            intervals.len() > 10,
            "the intervals are spread: {intervals:?}"
        );
    }

    #[test]
    fn drift_found_by_a_listing_ends_the_watch_and_reads_a_snapshot() {
        let t0 = Instant::now();
        let mut e = watching(policy(Some(60)), t0);
        // etcd holds a key lainlet never heard of, and has VIP at another revision.
        let l = listing(20, &[(VIP, 9), (DOMAIN, 5), ("/lain/config/new", 19)]);
        let outcome = e.handle_key_listing(t0, Ok(l));
        assert_eq!(
            outcome,
            DriftOutcome::Drift {
                keys: vec!["/lain/config/new".into(), VIP.into()]
            }
        );
        assert_eq!(e.poll_etcd(t0), EtcdStep::ReadSnapshot { store: Store::V3 });
        assert_eq!((e.checks.drift_checks, e.checks.drift_repairs), (1, 1));
        assert!(
            healthz(&mut e).contains(r#""status":"ok""#),
            "a repair is not an outage"
        );
    }

    #[test]
    fn no_listing_is_due_before_anything_is_loaded_or_when_drift_checks_are_off() {
        let t0 = Instant::now();
        let mut off = watching(policy(None), t0);
        let late = t0 + Duration::from_secs(100_000);
        assert_eq!(off.poll_etcd_check(late, late).1, EtcdCheck::Quorum);
        let mut empty = Engine::new(EngineConfig {
            checks: policy(Some(1)),
            ..EngineConfig::default()
        });
        assert_eq!(empty.poll_etcd_check(t0, t0).1, EtcdCheck::Quorum);
        assert_eq!(empty.poll_etcd_check(late, late).1, EtcdCheck::Quorum);
        let outcome = empty.handle_key_listing(late, Ok(listing(5, &[(VIP, 1)])));
        assert!(
            matches!(outcome, DriftOutcome::Skipped { .. }),
            "{outcome:?}"
        );
    }
}
