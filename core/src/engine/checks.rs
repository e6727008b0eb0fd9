//! Checks beside the open watch. A silent watch proves nothing: a member that lost its quorum
//! keeps its streams open and sends no events, so after a while of silence a linearizable read
//! (which only a member with a leader answers) must succeed, or the connection counts as
//! failed — `/healthz` says `stale` — and is made again until it does. And now and then the
//! mirror is compared with a listing of etcd's keys (see [`super::drift`]); a difference is
//! repaired by a fresh snapshot, applied as a diff.

use std::time::{Duration, Instant};

use super::drift::{DriftCheck, MirrorView};
use super::Engine;
use crate::error::EtcdCallError;
use crate::etcd::{EtcdCheck, EtcdIdentity, KeyListing};

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

/// What a quorum check found ([`Engine::handle_quorum_check`]).
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuorumOutcome {
    /// etcd has a quorum and continues the history the served state follows.
    Continues,
    /// etcd has a quorum, but its history is not the one the served state follows (its data
    /// restored from a backup, or another cluster): end the watch; the next step reads
    /// `/lain/` again, applied as a diff. `/healthz` says `stale` until the state is etcd's.
    HistoryChanged {
        /// What was found, for the log.
        reason: String,
    },
    /// No quorum, or no answer: report it with [`Engine::handle_etcd_failure`].
    Failed {
        /// Why, for the log and `/healthz`.
        reason: String,
    },
}

/// What a key listing found.
#[must_use]
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
    /// for, at once; a key listing when the drift check is due; else a quorum check once the
    /// watch has been silent for the policy's `quorum_after` (silence counts from the watch's
    /// start or its last message, as handed to [`Engine::handle_watch_response`], and from
    /// the last passed check).
    pub fn poll_etcd_check(&mut self, now: Instant) -> (Instant, EtcdCheck) {
        if let Some(at_revision) = self.wanted_backfill() {
            return (now, EtcdCheck::Backfill { at_revision });
        }
        let policy = self.config.checks;
        let last_message = self.etcd.last_message.unwrap_or(now);
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

    /// The outcome of a quorum check: what etcd said about itself, or why it failed. It
    /// runs after every connect and after silence on the watch, so a reconnect (and a silent
    /// watch) proves that etcd continues the history the served state follows: the same
    /// cluster, at a revision not below one already seen. See [`QuorumOutcome`].
    pub fn handle_quorum_check(
        &mut self,
        now: Instant,
        result: Result<EtcdIdentity, EtcdCallError>,
    ) -> QuorumOutcome {
        let id = match result {
            Ok(id) => id,
            Err(e) => {
                self.checks.quorum_failures += 1;
                return QuorumOutcome::Failed {
                    reason: format!("no quorum: a linearizable read failed ({e})"),
                };
            }
        };
        self.checks.quorum_ok_at = Some(now);
        let Some(reason) = self.etcd.history_break(id, self.applied_revision()) else {
            return QuorumOutcome::Continues;
        };
        self.persist.handle_unverified();
        self.etcd.handle_history_break(Some(id), reason.clone());
        self.forget_history(now);
        QuorumOutcome::HistoryChanged { reason }
    }

    /// The answer to [`crate::EtcdStep::ProveHistory`]: the revision etcd has `key` written
    /// at as of the revision asked (`None`: etcd has no such key then), or why it could not
    /// tell. The same revision proves the history served; anything else (or no answer) means
    /// a re-read, applied as a diff — never a failure.
    pub fn handle_history_proof(
        &mut self,
        now: Instant,
        answer: Result<Option<i64>, EtcdCallError>,
    ) -> QuorumOutcome {
        let Some((key, revision)) = self.mirror.newest_put() else {
            self.etcd.handle_proven();
            return QuorumOutcome::Continues;
        };
        let reason = match answer {
            Ok(Some(found)) if found == revision => {
                self.persist.handle_verified();
                self.etcd.handle_proven();
                return QuorumOutcome::Continues;
            }
            Ok(Some(found)) => format!(
                "etcd's history differs from the one served: {key} was written at revision \
                 {revision}, etcd has it at {found} (restored from a backup?)"
            ),
            Ok(None) => format!(
                "etcd's history differs from the one served: {key} was written at revision \
                 {revision}, etcd has no such write (restored from a backup?)"
            ),
            Err(e) => format!(
                "could not prove that etcd continues the history served ({key} at revision \
                 {revision}: {e})"
            ),
        };
        self.persist.handle_unverified();
        self.etcd.handle_history_break(None, reason.clone());
        self.forget_history(now);
        QuorumOutcome::HistoryChanged { reason }
    }

    /// The revisions applied so far are another history's: the next snapshot is compared by
    /// value, and resumes from those revisions get a fresh `init`.
    fn forget_history(&mut self, now: Instant) {
        self.mirror.handle_store_switch();
        self.history.clear();
        self.release_held_resumes(now);
    }

    /// A listing of etcd's keys for the drift check (or why none came).
    pub fn handle_key_listing(
        &mut self,
        now: Instant,
        listing: Result<KeyListing, EtcdCallError>,
    ) -> DriftOutcome {
        if let Some(every) = self.config.checks.drift_every {
            self.checks.next_drift = Some(now + self.drift_interval(every));
        }
        let listing = match listing {
            Ok(l) => l,
            Err(e) => {
                return DriftOutcome::Skipped {
                    reason: e.to_string(),
                }
            }
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
        let _ = e.handle_watch_response(now, created);
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

    /// What etcd 3.4 answered a quorum check with, at `revision`.
    fn etcd_at(revision: i64) -> EtcdIdentity {
        EtcdIdentity {
            revision,
            cluster_id: Some(0x89e4_9d7f_8155_3f67),
        }
    }

    /// A progress notification at `revision` (a message that changes nothing).
    fn progress(revision: i64) -> WatchResponse {
        WatchResponse {
            header_revision: revision,
            ..WatchResponse::default()
        }
    }

    #[test]
    fn a_silent_watch_is_quorum_checked_and_a_failed_check_makes_health_stale() {
        let t0 = Instant::now();
        let mut e = watching(policy(None), t0);
        let s = Duration::from_secs;
        assert_eq!(e.poll_etcd_check(t0), (t0 + s(10), EtcdCheck::Quorum));
        let _ = e.handle_watch_response(t0 + s(5), progress(20));
        assert_eq!(
            e.poll_etcd_check(t0 + s(7)),
            (t0 + s(15), EtcdCheck::Quorum),
            "every message pushes the check back"
        );
        assert_eq!(e.etcd_check_timeout(EtcdCheck::Quorum), s(3));
        assert_eq!(
            e.handle_quorum_check(t0 + s(15), Ok(etcd_at(20))),
            QuorumOutcome::Continues
        );
        assert_eq!(
            e.poll_etcd_check(t0 + s(15)),
            (t0 + s(25), EtcdCheck::Quorum),
            "a passed check counts as a message: the next one is a period later"
        );
        assert!(healthz(&mut e).contains(r#""status":"ok""#));
        let failed = e.handle_quorum_check(t0 + s(25), Err("timed out".into()));
        let QuorumOutcome::Failed { reason } = failed else {
            panic!("a failed check is an etcd failure: {failed:?}");
        };
        assert!(
            reason.contains("no quorum") && reason.contains("timed out"),
            "{reason}"
        );
        e.handle_etcd_failure(t0 + s(25), reason.into());
        let health = healthz(&mut e);
        assert!(health.contains(r#""status":"stale""#), "{health}");
        assert!(health.contains("no quorum"), "{health}");
        assert_eq!(e.checks.quorum_failures, 1);
    }

    #[test]
    fn etcd_restored_from_a_backup_is_noticed_by_its_lower_revision_and_read_again() {
        let t0 = Instant::now();
        let mut e = watching(policy(None), t0);
        assert_eq!(
            e.handle_quorum_check(t0, Ok(etcd_at(25))),
            QuorumOutcome::Continues
        );
        // etcd comes back from a copy of its data dir taken at revision 12: same cluster.
        let outcome = e.handle_quorum_check(t0, Ok(etcd_at(12)));
        let QuorumOutcome::HistoryChanged { reason } = outcome else {
            panic!("a history that went back must be read again: {outcome:?}");
        };
        assert!(reason.contains("went back"), "{reason}");
        let health = healthz(&mut e);
        assert!(
            health.contains(r#""status":"stale""#),
            "not ok before the state is etcd's again: {health}"
        );
        assert_eq!(e.poll_etcd(t0), EtcdStep::ReadSnapshot { store: Store::V3 });
        // The restored etcd holds VIP at revision 4 with another value, and no DOMAIN.
        e.handle_snapshot(
            t0,
            Snapshot {
                revision: 12,
                kvs: vec![KeyValue {
                    key: VIP.into(),
                    value: b"\"restored\"".to_vec(),
                    mod_revision: 4,
                }],
            },
        );
        assert_eq!(
            e.applied_revision(),
            Some(12),
            "etcd's revision, though lower"
        );
        assert!(
            matches!(
                e.poll_etcd(t0),
                EtcdStep::Watch {
                    start_revision: 13,
                    ..
                }
            ),
            "watched from the restored history"
        );
        let _ = e.handle_watch_response(
            t0,
            WatchResponse {
                created: true,
                header_revision: 12,
                ..WatchResponse::default()
            },
        );
        assert!(healthz(&mut e).contains(r#""status":"ok""#));
        assert_eq!(e.etcd.history_resets, 1);
        assert_eq!(
            e.handle_quorum_check(t0, Ok(etcd_at(12))),
            QuorumOutcome::Continues,
            "the restored history is the one followed now"
        );
    }

    #[test]
    fn a_restored_etcd_that_took_more_writes_than_it_lost_is_caught_by_the_reconnects_proof() {
        let t0 = Instant::now();
        let mut e = watching(policy(None), t0);
        let put = WatchResponse {
            events: vec![crate::WatchEvent::Put(KeyValue {
                key: VIP.into(),
                value: b"\"y\"".to_vec(),
                mod_revision: 21,
            })],
            last_event_revision: Some(21),
            ..WatchResponse::default()
        };
        let _ = e.handle_watch_response(t0, put);
        // A clean reconnect: etcd has VIP written at 21, as served.
        let delay = e.handle_etcd_failure(t0, "connection reset".into());
        let t1 = t0 + delay;
        assert!(matches!(e.poll_etcd(t1), EtcdStep::Connect { .. }));
        e.handle_etcd_connected(t1);
        let prove = EtcdStep::ProveHistory {
            store: Store::V3,
            key: VIP.into(),
            revision: 21,
        };
        assert_eq!(e.poll_etcd(t1), prove);
        assert_eq!(
            e.handle_history_proof(t1, Ok(Some(21))),
            QuorumOutcome::Continues
        );
        assert!(matches!(
            e.poll_etcd(t1),
            EtcdStep::Watch {
                start_revision: 22,
                ..
            }
        ));
        // etcd restored from a copy taken at 20, then written to 30: same cluster, a higher
        // revision than lainlet's, and VIP last written at 26 in that history.
        let delay = e.handle_etcd_failure(t1, "connection reset".into());
        let t2 = t1 + delay;
        assert!(matches!(e.poll_etcd(t2), EtcdStep::Connect { .. }));
        e.handle_etcd_connected(t2);
        assert_eq!(
            e.handle_quorum_check(t2, Ok(etcd_at(30))),
            QuorumOutcome::Continues,
            "the revision alone cannot tell"
        );
        assert_eq!(e.poll_etcd(t2), prove);
        let outcome = e.handle_history_proof(t2, Ok(Some(26)));
        assert!(
            matches!(&outcome, QuorumOutcome::HistoryChanged { reason } if reason.contains("26")),
            "{outcome:?}"
        );
        assert!(healthz(&mut e).contains(r#""status":"stale""#));
        assert_eq!(e.poll_etcd(t2), EtcdStep::ReadSnapshot { store: Store::V3 });
        // No answer is no proof: a re-read too, never a failure.
        let mut other = watching(policy(None), t0);
        let delay = other.handle_etcd_failure(t0, "gone".into());
        other.poll_etcd(t0 + delay);
        other.handle_etcd_connected(t0 + delay);
        assert!(matches!(
            other.poll_etcd(t0 + delay),
            EtcdStep::ProveHistory { revision: 5, .. }
        ));
        assert!(matches!(
            other.handle_history_proof(t0 + delay, Err("compacted".into())),
            QuorumOutcome::HistoryChanged { .. }
        ));
        assert_eq!(
            other.poll_etcd(t0 + delay),
            EtcdStep::ReadSnapshot { store: Store::V3 }
        );
    }

    #[test]
    fn another_cluster_behind_the_same_address_is_read_again() {
        let t0 = Instant::now();
        let mut e = watching(policy(None), t0);
        assert_eq!(
            e.handle_quorum_check(t0, Ok(etcd_at(20))),
            QuorumOutcome::Continues
        );
        // `etcdctl snapshot restore` makes a new cluster, here even at a higher revision.
        let other = EtcdIdentity {
            revision: 40,
            cluster_id: Some(0x1234),
        };
        let outcome = e.handle_quorum_check(t0, Ok(other));
        assert!(
            matches!(&outcome, QuorumOutcome::HistoryChanged { reason } if reason.contains("1234")),
            "{outcome:?}"
        );
        assert_eq!(e.poll_etcd(t0), EtcdStep::ReadSnapshot { store: Store::V3 });
        let unknown = EtcdIdentity {
            revision: 40,
            cluster_id: None,
        };
        assert_eq!(
            e.handle_quorum_check(t0, Ok(unknown)),
            QuorumOutcome::Continues,
            "an answer without a cluster ID proves what it can: the revision"
        );
    }

    #[test]
    fn the_drift_check_comes_every_period_instead_of_a_quorum_check() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut quick = watching(policy(Some(60)), t0);
        assert_eq!(
            quick.poll_etcd_check(t0),
            (t0 + s(10), EtcdCheck::Quorum),
            "a quorum check due before the listing comes first"
        );
        // Quorum checks far off: the next check is the listing, 75–125 % of a period away.
        let mut e = watching(
            CheckPolicy {
                quorum_after: s(100_000),
                ..policy(Some(60))
            },
            t0,
        );
        let keys = EtcdCheck::Keys { at_revision: 20 };
        let spread = |from: Instant| from + s(45)..=from + s(75);
        let due = |e: &mut Engine, now: Instant| {
            let (at, check) = e.poll_etcd_check(now);
            assert_eq!(check, keys);
            at
        };
        let first = due(&mut e, t0);
        assert!(spread(t0).contains(&first), "{:?}", first - t0);
        assert_eq!(due(&mut e, t0 + s(30)), first, "polling does not move it");
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
                let _ = e.handle_key_listing(third, Ok(listing(20, &[(VIP, 4), (DOMAIN, 5)])));
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
        assert_eq!(off.poll_etcd_check(late).1, EtcdCheck::Quorum);
        let mut empty = Engine::new(EngineConfig {
            checks: policy(Some(1)),
            ..EngineConfig::default()
        });
        assert_eq!(empty.poll_etcd_check(t0).1, EtcdCheck::Quorum);
        assert_eq!(empty.poll_etcd_check(late).1, EtcdCheck::Quorum);
        let outcome = empty.handle_key_listing(late, Ok(listing(5, &[(VIP, 1)])));
        assert!(
            matches!(outcome, DriftOutcome::Skipped { .. }),
            "{outcome:?}"
        );
    }
}
