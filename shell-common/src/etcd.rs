//! The one etcd watch of the process, driven by the core's [`EtcdSync`] policy through the
//! shell's etcd client, and the demo data set used when no etcd is configured.
//!
//! ```text
//! Connect{endpoint}  → client.connect(url)
//! ReadSnapshot       → client.read_snapshot() (range /lain/) → engine.handle_snapshot
//! Watch{start}       → client.watch(start): one prefix watch of /lain/; each message →
//!                      sync.handle_watch_response → engine.handle_events / EtcdStatus::Watching;
//!                      compacted → back to ReadSnapshot (applied as a diff)
//! any error          → sync.handle_failure(jitter) + EtcdStatus::Disconnected; the last
//!                      state keeps being served
//! ```
//!
//! A shell provides the client ([`EtcdClient`]: gRPC for the tokio shell, the v3 JSON gateway
//! for the smol shell) and its sleep function; everything else — order, revisions, back-off,
//! logging, what the engine is told — is here, once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use lainlet_core::{
    BackoffPolicy, EtcdStatus, EtcdSync, KeyValue, Snapshot, SyncStep, WatchResponse, WatchStep,
};
use tracing::{debug, info, warn};

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
pub async fn follow<C: EtcdClient, F: Future<Output = ()>>(
    shared: Arc<Shared>,
    endpoints: Vec<String>,
    mut client: C,
    sleep_until: impl Fn(Instant) -> F,
) {
    let mut sync = EtcdSync::new(endpoints.len(), BackoffPolicy::default());
    let mut rng = XorShift::seeded();
    loop {
        let outcome = match sync.next_step(Instant::now()) {
            SyncStep::Wait { until } => match first(sleep_until(until), shared.shut_down()).await {
                Either::Left(()) => continue,
                Either::Right(()) => return,
            },
            SyncStep::Connect { endpoint } => {
                let url = &endpoints[endpoint];
                match first(client.connect(url), shared.shut_down()).await {
                    Either::Left(r) => r.map(|()| {
                        debug!("using etcd endpoint {url}");
                        sync.handle_connected();
                    }),
                    Either::Right(()) => return,
                }
            }
            SyncStep::ReadSnapshot => match first(client.read_snapshot(), shared.shut_down()).await
            {
                Either::Left(Ok(snapshot)) => {
                    let revision = snapshot.revision;
                    info!(
                        "read {} keys under {PREFIX} at revision {revision}",
                        snapshot.kvs.len()
                    );
                    shared.with_engine(|engine| engine.handle_snapshot(Instant::now(), snapshot));
                    sync.handle_snapshot(revision);
                    Ok(())
                }
                Either::Left(Err(e)) => Err(e.context(format!("reading {PREFIX}"))),
                Either::Right(()) => return,
            },
            SyncStep::Watch { start_revision } => {
                watch(&shared, &mut sync, &mut client, start_revision).await
            }
        };
        if shared.is_shutting_down() {
            return;
        }
        if let Err(e) = outcome {
            let reason = format!("{e:#}");
            let delay = sync.handle_failure(Instant::now(), rng.unit());
            warn!("etcd: {reason}; serving the last known state, retrying in {delay:.1?}");
            shared.with_engine(|engine| {
                engine.handle_etcd_status(Instant::now(), EtcdStatus::Disconnected { reason });
            });
        }
    }
}

/// Runs one watch until it fails (`Err`), is compacted away (`Ok`), or shutdown (`Ok`).
async fn watch<C: EtcdClient>(
    shared: &Shared,
    sync: &mut EtcdSync,
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
        match sync.handle_watch_response(response) {
            WatchStep::Created => {
                info!("watching {PREFIX} on etcd from revision {start_revision}");
                shared.with_engine(|e| e.handle_etcd_status(Instant::now(), EtcdStatus::Watching));
            }
            WatchStep::Compacted { compact_revision } => {
                warn!(
                    "etcd compacted its history past revision {start_revision} \
                     (to {compact_revision}): re-reading"
                );
                return Ok(());
            }
            WatchStep::Canceled { reason } => bail!("etcd canceled the watch: {reason}"),
            WatchStep::Apply(events) if events.is_empty() => {}
            WatchStep::Apply(events) => {
                shared.with_engine(|engine| engine.handle_events(Instant::now(), events));
            }
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

/// Loads the built-in demo data set and marks the engine as serving it; returns the number of
/// keys.
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
    shared.with_engine(|engine| {
        let now = Instant::now();
        engine.handle_snapshot(now, snapshot);
        engine.handle_etcd_status(now, EtcdStatus::Demo);
    });
    keys
}

/// A tiny xorshift generator for back-off jitter (no cryptographic use).
pub struct XorShift(u64);

impl XorShift {
    /// Seeded from the clock and the process id.
    pub fn seeded() -> XorShift {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        XorShift((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
