//! The engine's side of following etcd: the connection policy ([`EtcdSync`]), the store it
//! reads ([`crate::etcd::store`]), and what the engine tells about the connection. The engine
//! is the one owner of the applied revision: the policy resumes watches from it, and progress
//! notifications advance it.

use std::time::{Duration, Instant};

use super::Engine;
use crate::error::EtcdCallError;
use crate::etcd::{
    choose_store, EtcdApi, EtcdIdentity, EtcdStep, EtcdSync, Jitter, NoStore, Probe, Store,
    StoreChoice, WatchOutcome, WatchResponse,
};

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
    /// Why the store read was chosen (`--etcd-api`, or the detection rule's reason).
    pub(super) store_reason: Option<String>,
    /// Times auto-detection switched to the other store.
    pub(super) store_switches: u64,
    /// Watches that started behind etcd's history (v3 compaction, v2 error 401) and forced a
    /// new snapshot.
    pub(super) history_lost: u64,
    /// Watch events about keys not under `/lain/` (ignored).
    pub(super) foreign_events: u64,
    /// History losses since the last event applied (a storm of them backs off).
    lost_in_a_row: u32,
    /// The cluster ID of the etcd whose history the served state follows (from the quorum
    /// checks; `None` until one said).
    pub(super) cluster_id: Option<u64>,
    /// Times etcd's history was found to have gone back or changed cluster (each followed by
    /// a fresh snapshot, applied as a diff).
    pub(super) history_resets: u64,
    /// When the watch last delivered a message, or started: silence is counted from it.
    pub(super) last_message: Option<Instant>,
}

/// History losses in a row (each followed by a fresh snapshot and no event) after which the
/// next one counts as a failure, i.e. is retried after a back-off.
const LOST_IN_A_ROW: u32 = 3;

/// What [`Engine::handle_store_probe`] decided.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDecision {
    /// The store read from now on, whether that is settled, and why.
    pub choice: StoreChoice,
    /// The store read until now, when that changes (its state was served until the new
    /// store's snapshot, which is applied as a diff).
    pub switched_from: Option<Store>,
}

impl EtcdLink {
    pub(super) fn new(config: &super::EngineConfig) -> EtcdLink {
        EtcdLink {
            sync: EtcdSync::new(
                config.etcd_endpoints,
                config.backoff,
                config.etcd_api,
                config.store_reprobe,
            ),
            jitter: Jitter::new(config.seed),
            status: EtcdStatus::Disconnected {
                reason: "not connected yet".to_owned(),
            },
            disconnects: 0,
            etcd_revision: 0,
            endpoint: None,
            store_reason: match config.etcd_api {
                EtcdApi::Auto => None,
                EtcdApi::Only(store) => Some(format!("--etcd-api {store}")),
            },
            store_switches: 0,
            history_lost: 0,
            foreign_events: 0,
            lost_in_a_row: 0,
            cluster_id: None,
            history_resets: 0,
            last_message: None,
        }
    }

    /// Whether the etcd that answered a quorum check with `id` continues the history the
    /// served state follows (`applied`: its revision): `Some(why not)` when it answers as
    /// another cluster, or at a revision below one already seen (its data restored from a
    /// backup). A linearizable read is answered at or past every revision committed before
    /// it, by any member, so a lower one cannot be a lagging member.
    pub(super) fn history_break(
        &mut self,
        id: EtcdIdentity,
        applied: Option<i64>,
    ) -> Option<String> {
        if let (Some(known), Some(new)) = (self.cluster_id, id.cluster_id) {
            if known != new {
                return Some(format!(
                    "etcd answers as cluster {new:x}, but the state served came from cluster \
                     {known:x} (restored from a snapshot, or another cluster)"
                ));
            }
        }
        self.cluster_id = id.cluster_id.or(self.cluster_id);
        let seen = self.etcd_revision.max(applied.unwrap_or(0));
        if id.revision > 0 && id.revision < seen {
            return Some(format!(
                "etcd is at revision {} but lainlet has seen revision {seen}: its history \
                 went back (restored from a backup?)",
                id.revision
            ));
        }
        self.etcd_revision = self.etcd_revision.max(id.revision);
        None
    }

    /// etcd's history is not the one applied (see [`EtcdLink::history_break`]; `id`: what
    /// its quorum check said, if that told): its state is read again, and until then
    /// `/healthz` says `stale`.
    pub(super) fn handle_history_break(&mut self, id: Option<EtcdIdentity>, reason: String) {
        self.history_resets += 1;
        // What the next quorum check says is the history followed from now on.
        self.etcd_revision = id.map_or(0, |id| id.revision);
        if let Some(id) = id {
            self.cluster_id = id.cluster_id;
        }
        self.status = EtcdStatus::Disconnected { reason };
        self.sync.handle_compacted();
    }

    pub(super) fn handle_snapshot(&mut self) {
        self.sync.handle_snapshot();
    }

    /// A saved state was loaded: its store and cluster, to be proven at the next connect.
    pub(super) fn handle_restored(
        &mut self,
        now: Instant,
        (store, settled): (Store, bool),
        cluster_id: Option<u64>,
        revision: i64,
        api: EtcdApi,
    ) {
        self.sync.handle_restored(now, store, settled);
        self.cluster_id = cluster_id;
        if api == EtcdApi::Auto {
            self.store_reason = Some("the store of the state file (checked at connect)".into());
        }
        self.status = EtcdStatus::Disconnected {
            reason: format!(
                "started from the state file at revision {revision}, not connected to etcd yet"
            ),
        };
    }

    pub(super) fn handle_demo(&mut self) {
        self.status = EtcdStatus::Demo;
    }

    /// A check found the mirror out of step: the next step reads a snapshot (a diff).
    pub(super) fn request_snapshot(&mut self) {
        self.sync.handle_compacted();
    }

    /// The history served was proven to be etcd's.
    pub(super) fn handle_proven(&mut self) {
        self.sync.handle_proven();
    }

    /// A number in `[0, 1)` from the jitter source (spreads the checks of many nodes).
    pub(super) fn jitter_unit(&mut self) -> f64 {
        self.jitter.unit()
    }

    /// What `--etcd-api` asked for.
    pub(super) fn api_name(&self) -> &'static str {
        self.sync.api().name()
    }
}

impl Engine {
    /// What to do next for etcd (see [`EtcdStep`]). While a watch is being read, ask again
    /// only after it ended.
    pub fn poll_etcd(&mut self, now: Instant) -> EtcdStep {
        let step = self.etcd.sync.next_step(
            now,
            self.mirror.applied_revision(),
            self.etcd.etcd_revision,
            self.mirror.newest_put(),
        );
        match step {
            EtcdStep::Connect { endpoint, .. } => self.etcd.endpoint = Some(endpoint),
            EtcdStep::Watch { .. } => self.etcd.last_message = Some(now),
            _ => {}
        }
        step
    }

    /// Takes the answers to [`EtcdStep::Probe`] into account: what each store said about keys
    /// under `/lain/` ([`Probe`]). Returns the decision (to log), or why no store can be read
    /// (then report [`Engine::handle_etcd_failure`]). A switch to the other store reads its
    /// snapshot next, applied as a diff of values (the two stores' revisions are unrelated).
    pub fn handle_store_probe(
        &mut self,
        now: Instant,
        v2: &Probe,
        v3: &Probe,
    ) -> Result<StoreDecision, NoStore> {
        let choice = match self.etcd.sync.api() {
            EtcdApi::Only(store) => StoreChoice {
                store,
                settled: true,
                reason: format!("--etcd-api {store}"),
            },
            EtcdApi::Auto => choose_store(v2, v3)?,
        };
        let before = self.etcd.sync.store().map(|(store, _)| store);
        let switched = self.etcd.sync.handle_store_choice(now, &choice);
        let switched_from = before.filter(|_| switched);
        if switched {
            self.persist.handle_unverified();
            self.etcd.store_switches += 1;
            self.etcd.etcd_revision = 0;
            self.mirror.handle_store_switch();
            self.history.clear();
        }
        self.etcd.store_reason = Some(choice.reason.clone());
        Ok(StoreDecision {
            choice,
            switched_from,
        })
    }

    /// The store read and whether that choice is settled (`None` until one was chosen).
    pub(super) fn etcd_store_settled(&self) -> Option<(Store, bool)> {
        self.etcd.sync.store()
    }

    /// The store read (`None` until auto-detection chose one), and why.
    pub fn etcd_store(&self) -> Option<(Store, &str)> {
        let (store, _) = self.etcd.sync.store()?;
        Some((store, self.etcd.store_reason.as_deref().unwrap_or_default()))
    }

    /// The store whose state is served: none in demo mode.
    pub(super) fn served_store(&self) -> Option<Store> {
        match self.etcd.status {
            EtcdStatus::Demo => None,
            _ => self.etcd_store().map(|(store, _)| store),
        }
    }

    /// The connection asked for by [`EtcdStep::Connect`] is up.
    pub fn handle_etcd_connected(&mut self, _now: Instant) {
        self.etcd.sync.handle_connected();
    }

    /// Takes one message of the watch asked for by [`EtcdStep::Watch`] into account.
    ///
    /// Revisions: a message with events advances the applied revision to its last event's
    /// (converted or not); a progress notification (no events, not the `created` reply, not a
    /// `last` message) to its header revision. The header of the `created` reply, or of a
    /// catch-up batch, may be ahead of the events delivered so far, so it is never taken as
    /// progress: a watch resumed from it could skip events. Events about keys outside
    /// `/lain/` are ignored and counted.
    pub fn handle_watch_response(&mut self, now: Instant, response: WatchResponse) -> WatchOutcome {
        self.etcd.last_message = Some(now);
        let newest = response
            .header_revision
            .max(response.last_event_revision.unwrap_or(0));
        self.etcd.etcd_revision = self.etcd.etcd_revision.max(newest);
        let start_revision = self.mirror.applied_revision().map_or(0, |r| r + 1);
        if response.compact_revision > 0 {
            self.etcd.history_lost += 1;
            self.etcd.lost_in_a_row += 1;
            self.etcd.sync.handle_compacted();
            if self.etcd.lost_in_a_row > LOST_IN_A_ROW {
                return WatchOutcome::Canceled {
                    reason: format!(
                        "etcd's history was lost {} times in a row, each time right after a \
                         fresh snapshot (revision {start_revision}, oldest kept {})",
                        self.etcd.lost_in_a_row, response.compact_revision
                    ),
                };
            }
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
            // The connect's checks passed and the watch continues the state served.
            self.persist.handle_verified();
            // Reported once per watch the policy starts (every v2 long poll says `created`).
            let already = self.etcd.sync.is_watching();
            self.etcd.sync.handle_watching();
            self.etcd.status = EtcdStatus::Watching;
            if already {
                return WatchOutcome::Applied;
            }
            return WatchOutcome::Created { start_revision };
        }
        let progress = match (response.last_event_revision, response.last) {
            (Some(revision), _) => revision,
            (None, false) => response.header_revision,
            (None, true) => 0,
        };
        if response.last_event_revision.is_some() {
            self.etcd.lost_in_a_row = 0;
        }
        let foreign = response.foreign_keys().count();
        self.etcd.foreign_events += foreign as u64;
        self.handle_events(now, response.events);
        if progress > 0 {
            self.mirror.advance_to(progress);
        }
        match response.last {
            true => WatchOutcome::Ended,
            false => WatchOutcome::Applied,
        }
    }

    /// The connection, the snapshot read or the watch failed: the served state stays, the
    /// status says why (the error's text), and the next [`Engine::poll_etcd`] backs off (the
    /// returned delay), then tries the next endpoint.
    pub fn handle_etcd_failure(&mut self, now: Instant, error: EtcdCallError) -> Duration {
        if !matches!(self.etcd.status, EtcdStatus::Disconnected { .. }) {
            self.etcd.disconnects += 1;
        }
        self.etcd.status = EtcdStatus::Disconnected {
            reason: error.to_string(),
        };
        // Resumes waiting for etcd's history get a fresh `init` instead.
        self.release_held_resumes(now);
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

    const V3: Store = Store::V3;

    fn config(api: EtcdApi) -> EngineConfig {
        EngineConfig {
            etcd_api: api,
            ..EngineConfig::default()
        }
    }

    fn kv(key: &str, value: &str, mod_revision: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            mod_revision,
        }
    }

    fn engine_with(store: Store, revision: i64, kvs: Vec<KeyValue>) -> Engine {
        let mut e = Engine::new(config(EtcdApi::Only(store)));
        let now = Instant::now();
        let connect = EtcdStep::Connect {
            endpoint: 0,
            store: Some(store),
        };
        assert_eq!(e.poll_etcd(now), connect);
        e.handle_etcd_connected(now);
        assert_eq!(e.poll_etcd(now), EtcdStep::ReadSnapshot { store });
        e.handle_snapshot(now, Snapshot { revision, kvs });
        e
    }

    fn engine_at(revision: i64) -> Engine {
        engine_with(V3, revision, vec![])
    }

    fn watch(store: Store, start_revision: i64, in_history: bool) -> EtcdStep {
        EtcdStep::Watch {
            store,
            start_revision,
            in_history,
            until: None,
        }
    }

    fn long_poll(now: Instant, start_revision: i64, in_history: bool) -> EtcdStep {
        EtcdStep::Watch {
            store: Store::V2,
            start_revision,
            in_history,
            until: Some(now + crate::V2_LONG_POLL_RENEW),
        }
    }

    fn get(e: &mut Engine, path: &str) -> String {
        let ctx = crate::RequestContext {
            peer: std::net::IpAddr::from([127, 0, 0, 1]),
            now: Instant::now(),
            wall: std::time::SystemTime::now(),
            connections: 1,
        };
        let request = crate::Request::new(crate::Method::Get, path);
        match e.handle_request(&request, &ctx) {
            crate::Reply::Response(r) => String::from_utf8_lossy(&r.body).into_owned(),
            _ => panic!("not a plain response"),
        }
    }

    #[test]
    fn watch_messages_advance_by_their_events_and_progress_by_the_header() {
        let now = Instant::now();
        let mut e = engine_at(10);
        assert_eq!(e.poll_etcd(now), watch(V3, 11, false));
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
        let put = WatchEvent::Put(kv("/lain/config/x", "1", 12));
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
        assert_eq!(e.etcd.history_lost, 1);
        assert_eq!(e.poll_etcd(now), EtcdStep::ReadSnapshot { store: V3 });
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
    fn a_v2_answer_from_history_ends_the_watch_and_the_next_one_starts_in_history() {
        let now = Instant::now();
        let mut e = engine_with(Store::V2, 10, vec![]);
        assert_eq!(e.poll_etcd(now), long_poll(now, 11, false));
        let head = WatchResponse {
            created: true,
            header_revision: 27,
            ..WatchResponse::default()
        };
        let _ = e.handle_watch_response(now, head);
        let hit = WatchResponse {
            header_revision: 27,
            events: vec![WatchEvent::Put(kv("/lain/config/vip", "1.2.3.4", 12))],
            last_event_revision: Some(12),
            last: true,
            ..WatchResponse::default()
        };
        assert_eq!(e.handle_watch_response(now, hit), WatchOutcome::Ended);
        assert_eq!(e.applied_revision(), Some(12));
        assert_eq!(e.poll_etcd(now), long_poll(now, 13, true), "etcd is at 27");
        let ended = WatchResponse {
            header_revision: 27,
            last: true,
            ..WatchResponse::default()
        };
        assert_eq!(e.handle_watch_response(now, ended), WatchOutcome::Ended);
        assert_eq!(e.applied_revision(), Some(12), "an end is no progress");
    }

    #[test]
    fn a_v2_directory_delete_removes_the_keys_below_it_only() {
        let now = Instant::now();
        let kvs = lainlet_fixtures::original()
            .kvs
            .into_iter()
            .map(|k| kv(&k.key, &String::from_utf8(k.value).unwrap(), 5))
            .collect();
        let mut e = engine_with(Store::V2, 9, kvs);
        let apps = get(&mut e, "/v2/appswatcher");
        assert!(
            apps.contains("\"hello\"") && apps.contains("hello-service"),
            "{apps}"
        );
        let delete = WatchResponse {
            events: vec![WatchEvent::DeleteDir {
                key: "/lain/deployd/pod_groups/hello".into(),
                mod_revision: 10,
            }],
            last_event_revision: Some(10),
            ..WatchResponse::default()
        };
        let _ = e.handle_watch_response(now, delete);
        let apps = get(&mut e, "/v2/appswatcher");
        assert!(!apps.contains("\"hello\""), "{apps}");
        assert!(
            apps.contains("hello-service"),
            "a sibling with the same start stays: {apps}"
        );
        assert!(apps.contains("redis"), "{apps}");
    }

    #[test]
    fn events_outside_the_prefix_are_counted_and_change_nothing() {
        let now = Instant::now();
        let mut e = engine_with(Store::V2, 9, vec![kv("/lain/config/vip", "a", 3)]);
        let foreign = WatchResponse {
            events: vec![
                WatchEvent::Put(kv("/other/key", "x", 10)),
                WatchEvent::Delete {
                    key: "/lainx/config/vip".into(),
                    mod_revision: 11,
                },
            ],
            last_event_revision: Some(11),
            ..WatchResponse::default()
        };
        assert_eq!(e.handle_watch_response(now, foreign), WatchOutcome::Applied);
        assert_eq!(e.etcd.foreign_events, 2);
        assert_eq!(get(&mut e, "/v2/configwatcher"), r#"{"vip":"a"}"#);
        assert_eq!(e.applied_revision(), Some(11));
    }

    #[test]
    fn auto_detection_probes_and_a_switch_diffs_values_not_revisions() {
        let now = Instant::now();
        let mut e = Engine::new(config(EtcdApi::Auto));
        assert!(matches!(
            e.poll_etcd(now),
            EtcdStep::Connect { store: None, .. }
        ));
        e.handle_etcd_connected(now);
        assert_eq!(e.poll_etcd(now), EtcdStep::Probe);
        assert!(e.etcd_store().is_none());
        let d = e
            .handle_store_probe(now, &Probe::Empty, &Probe::Empty)
            .unwrap();
        assert_eq!(
            (d.choice.store, d.choice.settled, d.switched_from),
            (Store::V2, false, None)
        );
        assert_eq!(
            e.poll_etcd(now),
            EtcdStep::ReadSnapshot { store: Store::V2 }
        );
        // The v2 store: vip at index 7.
        e.handle_snapshot(
            now,
            Snapshot {
                revision: 7,
                kvs: vec![kv("/lain/config/vip", "a", 7)],
            },
        );
        let later = now + Duration::from_secs(11);
        assert_eq!(
            e.poll_etcd(later),
            EtcdStep::Probe,
            "provisional: asked again"
        );
        let d = e
            .handle_store_probe(later, &Probe::Empty, &Probe::Keys)
            .unwrap();
        assert_eq!((d.choice.store, d.switched_from), (V3, Some(Store::V2)));
        assert_eq!(e.etcd_store().map(|(s, _)| s), Some(V3));
        assert_eq!(e.poll_etcd(later), EtcdStep::ReadSnapshot { store: V3 });
        // v3 has another vip at revision 7 (same number, other store): it must be applied.
        e.handle_snapshot(
            later,
            Snapshot {
                revision: 3,
                kvs: vec![kv("/lain/config/vip", "b", 7)],
            },
        );
        assert_eq!(get(&mut e, "/v2/configwatcher"), r#"{"vip":"b"}"#);
        assert_eq!(e.applied_revision(), Some(3));
        assert_eq!(
            e.poll_etcd(later),
            watch(V3, 4, false),
            "settled, counted from v3"
        );
        assert_eq!(e.etcd.store_switches, 1);
    }

    #[test]
    fn a_storm_of_history_losses_backs_off_instead_of_re_reading_at_once() {
        let now = Instant::now();
        let mut e = engine_with(Store::V2, 10, vec![]);
        let cleared = || WatchResponse {
            canceled: true,
            compact_revision: 900,
            header_revision: 1900,
            ..WatchResponse::default()
        };
        for _ in 0..LOST_IN_A_ROW {
            assert!(matches!(
                e.handle_watch_response(now, cleared()),
                WatchOutcome::Compacted { .. }
            ));
            assert_eq!(
                e.poll_etcd(now),
                EtcdStep::ReadSnapshot { store: Store::V2 }
            );
            e.handle_snapshot(
                now,
                Snapshot {
                    revision: 10,
                    kvs: vec![],
                },
            );
        }
        let outcome = e.handle_watch_response(now, cleared());
        assert!(
            matches!(&outcome, WatchOutcome::Canceled { reason } if reason.contains("in a row")),
            "{outcome:?}"
        );
        e.handle_etcd_failure(now, "storm".into());
        assert!(
            matches!(e.poll_etcd(now), EtcdStep::Wait { .. }),
            "backs off"
        );
        let event = WatchResponse {
            events: vec![WatchEvent::Put(kv("/lain/config/vip", "x", 11))],
            last_event_revision: Some(11),
            ..WatchResponse::default()
        };
        let _ = e.handle_watch_response(now, event);
        assert!(
            matches!(
                e.handle_watch_response(now, cleared()),
                WatchOutcome::Compacted { .. }
            ),
            "an event resets the count"
        );
    }

    #[test]
    fn no_store_to_read_is_an_error_for_the_failure_path() {
        let now = Instant::now();
        let mut e = Engine::new(config(EtcdApi::Auto));
        e.poll_etcd(now);
        e.handle_etcd_connected(now);
        let off = Probe::Unavailable("404".into());
        assert!(e.handle_store_probe(now, &off, &off).is_err());
        assert!(e.etcd_store().is_none());
    }

    #[test]
    fn a_failure_is_counted_once_per_outage_and_backs_off_before_the_next_endpoint() {
        let now = Instant::now();
        let mut e = engine_at(10);
        let _ = e.handle_watch_response(
            now,
            WatchResponse {
                created: true,
                ..WatchResponse::default()
            },
        );
        let delay = e.handle_etcd_failure(now, "gone".into());
        assert_eq!(e.etcd_status().reason(), Some("gone"));
        assert!(matches!(e.poll_etcd(now), EtcdStep::Wait { .. }));
        let connect = EtcdStep::Connect {
            endpoint: 0,
            store: Some(V3),
        };
        assert_eq!(e.poll_etcd(now + delay), connect);
        e.handle_etcd_failure(now + delay, "still gone".into());
        assert_eq!(e.etcd.disconnects, 1, "one outage");
        assert_eq!(e.applied_revision(), Some(10), "the served state stays");
    }
}
