//! The one etcd watch of the process: the engine says what to do
//! ([`lainlet_core::Engine::poll_etcd`]), a shell's [`EtcdClient`] does the IO, and the result
//! goes back to the engine. Also the demo data set used when no etcd is configured.
//!
//! ```text
//! Connect{endpoint}  → client.connect(url)        → handle_etcd_connected / handle_etcd_failure
//! ReadSnapshot       → client.read_snapshot()      → handle_snapshot (applied as a diff)
//! Watch{start}       → client.watch(start), each message → handle_watch_response
//! Wait{until}        → sleep
//! ```
//!
//! A shell provides the client (gRPC for the tokio shell, the v3 JSON gateway for the smol
//! shell) and its timer; the order, the revisions, the back-off and what `/healthz` says are the
//! engine's.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use lainlet_core::{EtcdStep, KeyValue, Snapshot, WatchOutcome, WatchResponse};
use tracing::{debug, info, warn};

use crate::socket::Runtime;
use crate::sync::{first, Either};
use crate::Shared;

/// The prefix lainlet reads and watches.
pub const PREFIX: &str = "/lain/";

/// A connection to one etcd endpoint at a time, as a shell implements it. Each call should
/// give up by itself when etcd does not answer (the shell's timeouts).
pub trait EtcdClient: Send {
    /// The stream of one watch.
    type Watch: EtcdWatch;

    /// Connects to `endpoint` (`http://host:port`), replacing any earlier connection.
    fn connect(&mut self, endpoint: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Reads every key under [`PREFIX`] in one consistent range, at the header's revision.
    fn read_snapshot(&mut self) -> impl Future<Output = anyhow::Result<Snapshot>> + Send;

    /// Starts one prefix watch of [`PREFIX`] from `start_revision`.
    fn watch(
        &mut self,
        start_revision: i64,
    ) -> impl Future<Output = anyhow::Result<Self::Watch>> + Send;
}

/// The messages of one watch.
pub trait EtcdWatch: Send {
    /// The next message; `Ok(None)` when etcd closed the stream.
    fn next(&mut self) -> impl Future<Output = anyhow::Result<Option<WatchResponse>>> + Send;
}

/// Follows etcd at `endpoints` (URLs; one is used at a time) with `client` until shutdown.
pub async fn follow<C: EtcdClient, R: Runtime>(
    shared: Arc<Shared>,
    endpoints: Vec<String>,
    mut client: C,
    rt: R,
) {
    loop {
        let step = shared.with_engine(|e| e.poll_etcd(Instant::now()));
        let outcome = match step {
            EtcdStep::Wait { until } => {
                match first(rt.sleep_until(until), shared.shut_down()).await {
                    Either::Left(()) => continue,
                    Either::Right(()) => return,
                }
            }
            EtcdStep::Connect { endpoint } => {
                let url = &endpoints[endpoint % endpoints.len()];
                match first(client.connect(url), shared.shut_down()).await {
                    Either::Left(r) => r.map(|()| {
                        debug!("using etcd endpoint {url}");
                        shared.with_engine(|e| e.handle_etcd_connected(Instant::now()));
                    }),
                    Either::Right(()) => return,
                }
            }
            EtcdStep::ReadSnapshot => match first(
                crate::startup::read_snapshot(&mut client, &rt),
                shared.shut_down(),
            )
            .await
            {
                Either::Left(Ok(snapshot)) => {
                    crate::startup::apply_snapshot(&shared, snapshot);
                    Ok(())
                }
                Either::Left(Err(e)) => Err(e.context(format!("reading {PREFIX}"))),
                Either::Right(()) => return,
            },
            EtcdStep::Watch { start_revision } => watch(&shared, &mut client, start_revision).await,
        };
        if shared.is_shutting_down() {
            return;
        }
        if let Err(e) = outcome {
            let reason = format!("{e:#}");
            let delay =
                shared.with_engine(|e| e.handle_etcd_failure(Instant::now(), reason.clone()));
            warn!("etcd: {reason}; serving the last known state, retrying in {delay:.1?}");
        }
    }
}

/// Runs one watch until it fails (`Err`), is compacted away (`Ok`), or shutdown (`Ok`).
async fn watch<C: EtcdClient>(
    shared: &Shared,
    client: &mut C,
    start_revision: i64,
) -> anyhow::Result<()> {
    let mut stream = match first(client.watch(start_revision), shared.shut_down()).await {
        Either::Left(stream) => stream?,
        Either::Right(()) => return Ok(()),
    };
    loop {
        let message = match first(stream.next(), shared.shut_down()).await {
            Either::Left(message) => message?,
            Either::Right(()) => return Ok(()),
        };
        let Some(response) = message else {
            bail!("the watch stream was closed by etcd");
        };
        match shared.with_engine(|e| e.handle_watch_response(Instant::now(), response)) {
            WatchOutcome::Applied => {}
            WatchOutcome::Created { start_revision } => {
                info!("watching {PREFIX} on etcd from revision {start_revision}");
            }
            WatchOutcome::Compacted {
                start_revision,
                compact_revision,
            } => {
                warn!(
                    "etcd compacted its history past revision {start_revision} \
                     (to {compact_revision}): re-reading"
                );
                return Ok(());
            }
            WatchOutcome::Canceled { reason } => bail!("etcd canceled the watch: {reason}"),
        }
    }
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
    let snapshot = Snapshot {
        revision: dump.revision,
        kvs: dump
            .kvs
            .into_iter()
            .map(|kv| KeyValue {
                key: kv.key,
                value: kv.value,
                mod_revision: kv.mod_revision,
            })
            .collect(),
    };
    shared.with_engine(|engine| engine.handle_demo(Instant::now(), snapshot));
    keys
}
