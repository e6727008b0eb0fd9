//! The one etcd watch of the process, driven by the core's [`EtcdSync`] policy, and the demo
//! data set used when no etcd is configured.
//!
//! ```text
//! Connect{endpoint}  → etcd_client::Client for that one endpoint
//! ReadSnapshot       → range /lain/ (prefix) → engine.handle_snapshot at the header revision
//! Watch{start}       → one prefix watch of /lain/ from `start`, progress notify on;
//!                      each response → engine.handle_events + sync.handle_revision
//!                      compact_revision > 0 → sync.handle_compacted (a new snapshot follows)
//! any error          → sync.handle_failure(jitter) + EtcdStatus::Disconnected; the last
//!                      state keeps being served
//! ```
//!
//! Revisions: a response with events advances to its last event's revision; a progress
//! notification (no events, not the `created` reply) to its header revision. The header of
//! the `created` reply, or of a catch-up batch, may be ahead of the events delivered so far,
//! so it is never taken as progress — a watch resumed from it could skip events.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use lainlet_core::{BackoffPolicy, EtcdStatus, EtcdSync, KeyValue, Snapshot, SyncStep, WatchEvent};
use tracing::{info, warn};

use crate::shared::{Shared, Shutdown};

/// The prefix lainlet reads and watches.
const PREFIX: &str = "/lain/";
/// Time limit of one call that should answer promptly (connect, range, watch creation).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest etcd message accepted (a big cluster's snapshot is one range response).
const MAX_MESSAGE: usize = 512 << 20;

/// How to reach etcd.
pub struct EtcdConfig {
    /// Endpoint URLs (`http://host:port`); one is used at a time.
    pub endpoints: Vec<String>,
    /// Connection options (authentication, TLS, keep-alive).
    pub options: ConnectOptions,
}

/// Loads the built-in demo data set and marks the engine as serving it.
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

/// Follows etcd until shutdown.
pub async fn run(shared: std::sync::Arc<Shared>, config: EtcdConfig) {
    let mut shutdown = shared.shutdown_signal();
    let mut sync = EtcdSync::new(config.endpoints.len(), BackoffPolicy::default());
    let mut rng = XorShift::seeded();
    let mut client: Option<Client> = None;
    loop {
        let step = sync.next_step(Instant::now());
        let outcome = match step {
            SyncStep::Wait { until } => {
                tokio::select! {
                    () = tokio::time::sleep_until(until.into()) => {}
                    () = shutdown.wait() => return,
                }
                continue;
            }
            SyncStep::Connect { endpoint } => {
                let url = &config.endpoints[endpoint];
                connect(url, &config.options).await.map(|c| {
                    tracing::debug!("using etcd endpoint {url}");
                    client = Some(c);
                    sync.handle_connected();
                })
            }
            SyncStep::ReadSnapshot => match client.as_mut() {
                Some(c) => read_snapshot(&shared, &mut sync, c).await,
                None => Err(anyhow!("no etcd client")),
            },
            SyncStep::Watch { start_revision } => match client.as_mut() {
                Some(c) => watch(&shared, &mut sync, c, start_revision, &mut shutdown).await,
                None => Err(anyhow!("no etcd client")),
            },
        };
        if shutdown.is_down() {
            return;
        }
        if let Err(e) = outcome {
            client = None;
            let reason = format!("{e:#}");
            let delay = sync.handle_failure(Instant::now(), rng.unit());
            warn!("etcd: {reason}; serving the last known state, retrying in {delay:.1?}");
            shared.with_engine(|engine| {
                engine.handle_etcd_status(Instant::now(), EtcdStatus::Disconnected { reason });
            });
        }
    }
}

async fn connect(url: &str, options: &ConnectOptions) -> anyhow::Result<Client> {
    let connecting = Client::connect([url], Some(options.clone()));
    tokio::time::timeout(CALL_TIMEOUT, connecting)
        .await
        .map_err(|_| anyhow!("connecting to {url} timed out"))?
        .with_context(|| format!("connecting to {url}"))
}

async fn read_snapshot(
    shared: &Shared,
    sync: &mut EtcdSync,
    client: &Client,
) -> anyhow::Result<()> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let reading = kv.get(PREFIX, Some(GetOptions::new().with_prefix()));
    let mut response = tokio::time::timeout(CALL_TIMEOUT, reading)
        .await
        .map_err(|_| anyhow!("reading {PREFIX} timed out"))?
        .with_context(|| format!("reading {PREFIX}"))?;
    let revision = response
        .header()
        .map(|h| h.revision())
        .ok_or_else(|| anyhow!("range response without a header"))?;
    let kvs: Vec<KeyValue> = response.take_kvs().iter().filter_map(key_value).collect();
    info!(
        "read {} keys under {PREFIX} at revision {revision}",
        kvs.len()
    );
    shared.with_engine(|engine| engine.handle_snapshot(Instant::now(), Snapshot { revision, kvs }));
    sync.handle_snapshot(revision);
    Ok(())
}

/// Runs one watch until it fails (`Err`), is compacted away (`Ok`), or shutdown (`Ok`).
async fn watch(
    shared: &Shared,
    sync: &mut EtcdSync,
    client: &Client,
    start_revision: i64,
    shutdown: &mut Shutdown,
) -> anyhow::Result<()> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start_revision)
        .with_progress_notify();
    let mut watch_client = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
    let mut stream = tokio::time::timeout(CALL_TIMEOUT, watch_client.watch(PREFIX, Some(options)))
        .await
        .map_err(|_| anyhow!("starting the watch timed out"))?
        .context("starting the watch")?;
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = shutdown.wait() => return Ok(()),
        };
        let Some(response) = message.context("watch")? else {
            bail!("the watch stream was closed by etcd");
        };
        if response.compact_revision() > 0 {
            warn!(
                "etcd compacted its history past revision {start_revision} (to {}): re-reading",
                response.compact_revision()
            );
            sync.handle_compacted();
            return Ok(());
        }
        if response.canceled() {
            bail!("etcd canceled the watch: {}", response.cancel_reason());
        }
        if response.created() {
            info!("watching {PREFIX} on etcd from revision {start_revision}");
            sync.handle_watching();
            shared.with_engine(|e| e.handle_etcd_status(Instant::now(), EtcdStatus::Watching));
            continue;
        }
        let events: Vec<WatchEvent> = response.events().iter().filter_map(watch_event).collect();
        let revision = match response.events().last().and_then(|e| e.kv()) {
            Some(kv) => kv.mod_revision(),
            None => response.header().map_or(0, |h| h.revision()),
        };
        if !events.is_empty() {
            shared.with_engine(|engine| engine.handle_events(Instant::now(), events));
        }
        if revision > 0 {
            sync.handle_revision(revision);
        }
    }
}

fn key_value(kv: &etcd_client::KeyValue) -> Option<KeyValue> {
    match kv.key_str() {
        Ok(key) => Some(KeyValue {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
        }),
        Err(_) => {
            warn!(key = %String::from_utf8_lossy(kv.key()), "skipping a key that is not UTF-8");
            None
        }
    }
}

fn watch_event(event: &etcd_client::Event) -> Option<WatchEvent> {
    let kv = key_value(event.kv()?)?;
    Some(match event.event_type() {
        EventType::Put => WatchEvent::Put(kv),
        EventType::Delete => WatchEvent::Delete {
            key: kv.key,
            mod_revision: kv.mod_revision,
        },
    })
}

/// A tiny xorshift generator for back-off jitter (no cryptographic use).
struct XorShift(u64);

impl XorShift {
    fn seeded() -> XorShift {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        XorShift((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    /// A number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}
