//! The one etcd watch of the process: the engine says what to do
//! ([`lainlet_core::Engine::poll_etcd`]), a shell's [`EtcdClient`]s do the IO — one for etcd's
//! v2 keys store, one for its v3 store — and the result goes back to the engine. Also the demo
//! data set used when no etcd is configured.
//!
//! ```text
//! Connect{endpoint, store}   → that store's client.connect(url), or both (auto-detection)
//!                              → handle_etcd_connected / handle_etcd_failure
//! Probe                      → v2.probe(), v3.probe() → handle_store_probe (logged)
//! ReadSnapshot{store}        → client.read_snapshot() → handle_snapshot (applied as a diff)
//! Watch{store, start, …}     → client.watch(start), each message →
//!                              handle_watch_response, until it ends, fails or `until` passes
//! Wait{until}                → sleep
//! ```
//!
//! A shell provides the clients (v3: gRPC for the tokio shell, the JSON gateway for the smol
//! shell; v2: the keys API over hyper or trillium-client) and its timer; which store, the
//! order, the revisions, the back-off and what `/healthz` says are the engine's.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail};
use lainlet_core::{
    BackfillOutcome, DriftOutcome, EtcdCallError, EtcdCheck, EtcdIdentity, EtcdStep, KeyListing,
    KeyValue, Probe, QuorumOutcome, Snapshot, Store, StoreDecision, WatchOutcome, WatchResponse,
};
use tracing::{debug, info, warn};

use crate::socket::Runtime;
use crate::sync::{first, Either};
use crate::Shared;

/// The prefix lainlet reads and watches.
pub const PREFIX: &str = "/lain/";

/// A connection to one store of one etcd endpoint at a time, as a shell implements it. Each
/// call should give up by itself when etcd does not answer (the shell's timeouts).
pub trait EtcdClient: Send {
    /// The stream of one watch.
    type Watch: EtcdWatch;

    /// Connects to `endpoint` (`http://host:port`), replacing any earlier connection.
    fn connect(&mut self, endpoint: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Asks the store whether it holds keys under [`PREFIX`] (one cheap read); what went
    /// wrong is a [`Probe::Failed`] or, when the API is not served, [`Probe::Unavailable`].
    fn probe(&mut self) -> impl Future<Output = Probe> + Send;

    /// Reads every key under [`PREFIX`] in one consistent read, at the store's revision.
    fn read_snapshot(&mut self) -> impl Future<Output = anyhow::Result<Snapshot>> + Send;

    /// Starts one prefix watch of [`PREFIX`] from `start_revision`.
    fn watch(
        &mut self,
        start_revision: i64,
    ) -> impl Future<Output = anyhow::Result<Self::Watch>> + Send;

    /// At which revision `key` was written as of `revision` (`None`: no such key then); see
    /// [`EtcdStep::ProveHistory`]. An error when etcd cannot tell (a compacted revision).
    fn prove_put(
        &mut self,
        key: &str,
        revision: i64,
    ) -> impl Future<Output = anyhow::Result<Option<i64>>> + Send;

    /// A linearizable read, which only a member with a quorum answers, and what its answer
    /// says about etcd's history (revision, cluster ID); an error otherwise.
    fn check_quorum(&mut self) -> impl Future<Output = anyhow::Result<EtcdIdentity>> + Send;

    /// Every key under [`PREFIX`] with its revision, without values, at `at_revision` (the
    /// v2 store lists at its current index).
    fn list_keys(
        &mut self,
        at_revision: i64,
    ) -> impl Future<Output = anyhow::Result<KeyListing>> + Send;
}

/// The messages of one watch.
pub trait EtcdWatch: Send {
    /// The next message; `Ok(None)` when etcd closed the stream.
    fn next(&mut self) -> impl Future<Output = anyhow::Result<Option<WatchResponse>>> + Send;
}

/// A shell's two clients: the v2 keys store's and the v3 store's.
pub struct Clients<V2, V3> {
    /// The v2 keys API.
    pub v2: V2,
    /// The v3 API.
    pub v3: V3,
}

/// Follows etcd at `endpoints` (URLs; one is used at a time) with `clients` until shutdown.
pub async fn follow<V2: EtcdClient, V3: EtcdClient, R: Runtime>(
    shared: Arc<Shared>,
    endpoints: Vec<String>,
    mut clients: Clients<V2, V3>,
    rt: R,
) {
    // Why a store's API could not be connected to (it is probed as failed), by store.
    let mut unconnected: [Option<String>; 2] = [None, None];
    loop {
        let step = shared.with_engine(|e| e.poll_etcd(Instant::now()));
        let outcome = match step {
            EtcdStep::Wait { until } => {
                match first(rt.sleep_until(until), shared.shut_down()).await {
                    Either::Left(()) => continue,
                    Either::Right(()) => return,
                }
            }
            EtcdStep::Connect { endpoint, store } => {
                let url = &endpoints[endpoint % endpoints.len()];
                let timeout = shared.with_engine(|e| e.etcd_check_timeout(EtcdCheck::Quorum));
                let connecting = async {
                    connect(&mut clients, url, store, &mut unconnected).await?;
                    // A member without a quorum accepts connections and watches, and sends
                    // nothing: only one that answers a linearizable read is used.
                    // It also proves that etcd continues the history served (else a re-read).
                    let check = match store {
                        Some(Store::V2) => quorum(&mut clients.v2, &rt, timeout).await,
                        Some(Store::V3) => quorum(&mut clients.v3, &rt, timeout).await,
                        None => return Ok(()),
                    };
                    let outcome =
                        shared.with_engine(|e| e.handle_quorum_check(Instant::now(), check));
                    handle_quorum(outcome).map(|_| ())
                };
                match first(connecting, shared.shut_down()).await {
                    Either::Left(r) => r.map(|()| {
                        debug!("using etcd endpoint {url}");
                        shared.with_engine(|e| e.handle_etcd_connected(Instant::now()));
                    }),
                    Either::Right(()) => return,
                }
            }
            EtcdStep::Probe => {
                match first(probe(&mut clients, &unconnected), shared.shut_down()).await {
                    Either::Left((v2, v3)) => {
                        let decision =
                            shared.with_engine(|e| e.handle_store_probe(Instant::now(), &v2, &v3));
                        let both = v2 == Probe::Keys && v3 == Probe::Keys;
                        decision
                            .map(|d| log_decision(&d, both))
                            .map_err(|e| anyhow!(e))
                    }
                    Either::Right(()) => return,
                }
            }
            EtcdStep::ProveHistory {
                store,
                key,
                revision,
            } => {
                let limit = shared.with_engine(|e| e.etcd_check_timeout(EtcdCheck::Quorum));
                let asking = async {
                    let ask = async {
                        match store {
                            Store::V2 => clients.v2.prove_put(&key, revision).await,
                            Store::V3 => clients.v3.prove_put(&key, revision).await,
                        }
                    };
                    match first(ask, rt.sleep(limit)).await {
                        Either::Left(r) => r.map_err(|e| EtcdCallError::Failed(format!("{e:#}"))),
                        Either::Right(()) => Err(EtcdCallError::Timeout(limit)),
                    }
                };
                match first(asking, shared.shut_down()).await {
                    Either::Left(answer) => {
                        let outcome =
                            shared.with_engine(|e| e.handle_history_proof(Instant::now(), answer));
                        if let QuorumOutcome::Continues = outcome {
                            debug!("etcd still has {key} written at revision {revision}");
                        }
                        handle_quorum(outcome).map(|_| ())
                    }
                    Either::Right(()) => return,
                }
            }
            EtcdStep::ReadSnapshot { store } => {
                let read = match store {
                    Store::V2 => read(&shared, &mut clients.v2, &rt).await,
                    Store::V3 => read(&shared, &mut clients.v3, &rt).await,
                };
                match read {
                    Some(r) => r,
                    None => return,
                }
            }
            EtcdStep::Watch {
                store,
                start_revision,
                in_history,
                until,
            } => {
                let w = Watch {
                    store,
                    start_revision,
                    in_history,
                    until,
                };
                match store {
                    Store::V2 => watch(&shared, &mut clients.v2, &rt, w).await,
                    Store::V3 => watch(&shared, &mut clients.v3, &rt, w).await,
                }
            }
        };
        if shared.is_shutting_down() {
            return;
        }
        if let Err(e) = outcome {
            let reason = format!("{e:#}");
            let failure = EtcdCallError::Failed(reason.clone());
            let delay = shared.with_engine(|e| e.handle_etcd_failure(Instant::now(), failure));
            warn!("etcd: {reason}; serving the last known state, retrying in {delay:.1?}");
        }
    }
}

fn slot(store: Store) -> usize {
    match store {
        Store::V2 => 0,
        Store::V3 => 1,
    }
}

/// Connects the client of `store`, or both (then one is enough: the other is probed as
/// failed, with the reason kept in `unconnected`).
async fn connect<V2: EtcdClient, V3: EtcdClient>(
    clients: &mut Clients<V2, V3>,
    url: &str,
    store: Option<Store>,
    unconnected: &mut [Option<String>; 2],
) -> anyhow::Result<()> {
    *unconnected = [None, None];
    match store {
        Some(Store::V2) => clients.v2.connect(url).await,
        Some(Store::V3) => clients.v3.connect(url).await,
        None => {
            let v2 = clients.v2.connect(url).await;
            let v3 = clients.v3.connect(url).await;
            if let (Err(a), Err(b)) = (&v2, &v3) {
                bail!("v2: {a:#}; v3: {b:#}");
            }
            unconnected[0] = v2.err().map(|e| format!("{e:#}"));
            unconnected[1] = v3.err().map(|e| format!("{e:#}"));
            Ok(())
        }
    }
}

/// Both stores' answers to the probe.
async fn probe<V2: EtcdClient, V3: EtcdClient>(
    clients: &mut Clients<V2, V3>,
    unconnected: &[Option<String>; 2],
) -> (Probe, Probe) {
    let v2 = match &unconnected[slot(Store::V2)] {
        Some(e) => Probe::Failed(e.clone()),
        None => clients.v2.probe().await,
    };
    let v3 = match &unconnected[slot(Store::V3)] {
        Some(e) => Probe::Failed(e.clone()),
        None => clients.v3.probe().await,
    };
    (v2, v3)
}

/// Logs the store decision: a warning when it switches, or when both stores hold keys (one
/// of them is not read).
fn log_decision(d: &StoreDecision, both_hold_keys: bool) {
    let c = &d.choice;
    let provisional = match c.settled {
        true => "",
        false => " (provisional: both stores are asked again from time to time)",
    };
    match d.switched_from {
        Some(from) => warn!(
            "etcd store: switching from {from} to {}: {}{provisional}",
            c.store, c.reason
        ),
        None if both_hold_keys => warn!("etcd store: reading {}: {}", c.store, c.reason),
        None => info!("etcd store: reading {}: {}{provisional}", c.store, c.reason),
    }
}

/// Reads and applies a snapshot; `None` on shutdown.
async fn read<C: EtcdClient, R: Runtime>(
    shared: &Shared,
    client: &mut C,
    rt: &R,
) -> Option<anyhow::Result<()>> {
    let reading = crate::startup::read_snapshot(client, rt);
    match first(reading, shared.shut_down()).await {
        Either::Left(Ok(snapshot)) => {
            crate::startup::apply_snapshot(shared, snapshot);
            Some(Ok(()))
        }
        Either::Left(Err(e)) => Some(Err(e.context(format!("reading {PREFIX}")))),
        Either::Right(()) => None,
    }
}

/// What [`EtcdStep::Watch`] asked for.
#[derive(Clone, Copy)]
struct Watch {
    store: Store,
    start_revision: i64,
    in_history: bool,
    until: Option<Instant>,
}

/// Waits for `f`, shutdown, or `until`: `None` for the latter two.
async fn bounded<T, R: Runtime>(
    shared: &Shared,
    rt: &R,
    until: Option<Instant>,
    f: impl Future<Output = T>,
) -> Option<T> {
    let stop = async {
        match until {
            Some(at) => {
                first(rt.sleep_until(at), shared.shut_down()).await;
            }
            None => shared.shut_down().await,
        }
    };
    match first(f, stop).await {
        Either::Left(v) => Some(v),
        Either::Right(()) => None,
    }
}

/// Logs a quorum check's outcome; `Err` for a failure, `Ok(false)` when the watch must end
/// for a re-read (etcd's history went back or changed cluster).
fn handle_quorum(outcome: QuorumOutcome) -> anyhow::Result<bool> {
    match outcome {
        QuorumOutcome::Continues => Ok(true),
        QuorumOutcome::HistoryChanged { reason } => {
            warn!("etcd: {reason}; re-reading {PREFIX} (served as stale until then)");
            Ok(false)
        }
        QuorumOutcome::Failed { reason } => Err(anyhow!(reason)),
    }
}

/// A quorum check within `limit`: what etcd said, or why it failed.
async fn quorum<C: EtcdClient, R: Runtime>(
    client: &mut C,
    rt: &R,
    limit: std::time::Duration,
) -> Result<EtcdIdentity, EtcdCallError> {
    match first(client.check_quorum(), rt.sleep(limit)).await {
        Either::Left(r) => r.map_err(|e| EtcdCallError::Failed(format!("{e:#}"))),
        Either::Right(()) => Err(EtcdCallError::Timeout(limit)),
    }
}

/// A key listing at `at_revision` within `limit`, or why none came.
async fn list<C: EtcdClient, R: Runtime>(
    client: &mut C,
    rt: &R,
    at_revision: i64,
    limit: std::time::Duration,
) -> Result<KeyListing, EtcdCallError> {
    match first(client.list_keys(at_revision), rt.sleep(limit)).await {
        Either::Left(r) => r.map_err(|e| EtcdCallError::Failed(format!("{e:#}"))),
        Either::Right(()) => Err(EtcdCallError::Timeout(limit)),
    }
}

/// What a watch loop does after a message.
enum Flow {
    Continue,
    Stop,
}

/// Runs one watch until it fails (`Err`), is compacted away or ended by etcd (`Ok`), its
/// `until` passes (`Ok`), or shutdown (`Ok`). Beside it, the engine's checks run: a quorum
/// check after silence (a failure ends the watch as `Err`) and the drift check.
async fn watch<C: EtcdClient, R: Runtime>(
    shared: &Shared,
    client: &mut C,
    rt: &R,
    w: Watch,
) -> anyhow::Result<()> {
    let starting = client.watch(w.start_revision);
    let Some(stream) = bounded(shared, rt, w.until, starting).await else {
        return Ok(());
    };
    let mut stream = stream?;
    loop {
        let (due, check) = shared.with_engine(|e| e.poll_etcd_check(Instant::now()));
        // A resume that waits for a listing wakes this wait (`due` is then now).
        let due_or_wanted = first(rt.sleep_until(due), shared.etcd_wanted());
        let Some(next) = bounded(shared, rt, w.until, first(stream.next(), due_or_wanted)).await
        else {
            return Ok(());
        };
        match next {
            Either::Left(message) => match handle_message(shared, w, message?)? {
                Flow::Continue => continue,
                Flow::Stop => return Ok(()),
            },
            // Woken for a listing: ask again which check is due.
            Either::Right(Either::Right(())) => continue,
            Either::Right(Either::Left(())) => {}
        }
        // The check runs while the watch goes on being read.
        let limit = shared.with_engine(|e| e.etcd_check_timeout(check));
        let mut checking = std::pin::pin!(run_check(client, rt, check, limit));
        let result = loop {
            let Some(next) =
                bounded(shared, rt, w.until, first(checking.as_mut(), stream.next())).await
            else {
                return Ok(());
            };
            match next {
                Either::Left(result) => break result,
                Either::Right(message) => {
                    if let Flow::Stop = handle_message(shared, w, message?)? {
                        return Ok(());
                    }
                }
            }
        };
        if let Flow::Stop = handle_check(shared, result)? {
            return Ok(());
        }
    }
}

/// The outcome of a check, as the engine takes it.
enum Checked {
    Quorum(Result<EtcdIdentity, EtcdCallError>),
    Keys(Result<KeyListing, EtcdCallError>),
    Backfill(i64, Result<KeyListing, EtcdCallError>),
}

async fn run_check<C: EtcdClient, R: Runtime>(
    client: &mut C,
    rt: &R,
    check: EtcdCheck,
    limit: std::time::Duration,
) -> Checked {
    match check {
        EtcdCheck::Quorum => Checked::Quorum(quorum(client, rt, limit).await),
        EtcdCheck::Keys { at_revision } => {
            Checked::Keys(list(client, rt, at_revision, limit).await)
        }
        EtcdCheck::Backfill { at_revision } => {
            Checked::Backfill(at_revision, list(client, rt, at_revision, limit).await)
        }
    }
}

/// Hands a check's outcome to the engine: a failed quorum check fails the watch, drift ends it
/// (a snapshot is read next).
fn handle_check(shared: &Shared, checked: Checked) -> anyhow::Result<Flow> {
    let now = Instant::now();
    match checked {
        Checked::Quorum(result) => {
            let outcome = shared.with_engine(|e| e.handle_quorum_check(now, result));
            match handle_quorum(outcome)? {
                true => Ok(Flow::Continue),
                false => Ok(Flow::Stop),
            }
        }
        Checked::Backfill(revision, listing) => {
            match shared.with_engine(|e| e.handle_backfill(now, revision, listing)) {
                BackfillOutcome::Answered {
                    revision,
                    changed,
                    watches,
                } => debug!(
                    "{watches} watches resumed from revision {revision} (before lainlet's \
                     history) with etcd's listing: {changed} keys changed since"
                ),
                BackfillOutcome::Failed {
                    revision,
                    reason,
                    watches,
                } => info!(
                    "{watches} watches resuming from revision {revision} get a fresh init: \
                     etcd could not list that revision ({reason})"
                ),
            }
            Ok(Flow::Continue)
        }
        Checked::Keys(listing) => {
            match shared.with_engine(|e| e.handle_key_listing(now, listing)) {
                DriftOutcome::Consistent { compared } => {
                    debug!("drift check: the {compared} keys lainlet holds match etcd's");
                    Ok(Flow::Continue)
                }
                DriftOutcome::Skipped { reason } => {
                    debug!("drift check skipped: {reason}");
                    Ok(Flow::Continue)
                }
                DriftOutcome::Drift { keys } => {
                    let shown: Vec<&str> = keys.iter().take(5).map(String::as_str).collect();
                    warn!(
                        "drift check: {} keys differ from etcd ({}{}); re-reading to repair",
                        keys.len(),
                        shown.join(", "),
                        if keys.len() > shown.len() {
                            ", …"
                        } else {
                            ""
                        }
                    );
                    Ok(Flow::Stop)
                }
            }
        }
    }
}

/// Hands one watch message to the engine and says whether the watch goes on.
fn handle_message(
    shared: &Shared,
    w: Watch,
    message: Option<WatchResponse>,
) -> anyhow::Result<Flow> {
    let Some(response) = message else {
        bail!("the watch stream was closed by etcd");
    };
    for key in response.foreign_keys() {
        warn!(key, "ignoring an etcd event about a key outside {PREFIX}");
    }
    match shared.with_engine(|e| e.handle_watch_response(Instant::now(), response)) {
        WatchOutcome::Applied => {}
        WatchOutcome::Created { start_revision } if w.in_history => {
            debug!(
                "catching up on the etcd {} store from revision {start_revision}",
                w.store
            );
        }
        WatchOutcome::Created { start_revision } => {
            info!(
                "watching {PREFIX} on the etcd {} store from revision {start_revision}",
                w.store
            );
        }
        WatchOutcome::Ended => return Ok(Flow::Stop),
        WatchOutcome::Compacted {
            start_revision,
            compact_revision,
        } => {
            match w.store {
                Store::V3 => warn!(
                    "etcd compacted its history past revision {start_revision} \
                     (to {compact_revision}): re-reading"
                ),
                Store::V2 => warn!(
                    "etcd's v2 history (its last 1000 events) no longer reaches index \
                     {start_revision} (the oldest is {compact_revision}): the history was \
                     compacted away; re-reading"
                ),
            }
            return Ok(Flow::Stop);
        }
        WatchOutcome::Canceled { reason } => bail!("etcd canceled the watch: {reason}"),
    }
    Ok(Flow::Continue)
}

/// An etcd key as the engine takes it: `None` (with a warning) when it is not UTF-8.
pub fn key_value(key: &[u8], value: Vec<u8>, mod_revision: i64) -> Option<KeyValue> {
    match std::str::from_utf8(key) {
        Ok(key) => Some(KeyValue {
            key: key.to_owned(),
            value,
            mod_revision,
        }),
        Err(_) => {
            warn!(key = %String::from_utf8_lossy(key), "skipping a key that is not UTF-8");
            None
        }
    }
}

/// Loads the built-in demo data set into the engine; returns the number of keys.
pub fn load_demo(shared: &Shared) -> usize {
    let dump = lainlet_fixtures::demo();
    let keys = dump.kvs.len();
    let snapshot = Snapshot::from(dump);
    shared.with_engine(|engine| engine.handle_demo(Instant::now(), snapshot));
    keys
}
