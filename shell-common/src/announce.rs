//! The fleet heartbeat's IO (`--announce`): the engine says when to write what
//! ([`lainlet_core::Engine::poll_fleet`]); a shell's [`FleetClient`]s do the writes on their
//! own connections, so a slow or refusing etcd never holds up the watch or any request.
//!
//! ```text
//! Off                      → return
//! Wait { until }           → sleep (until then, or shutdown)
//! Write { endpoint, write } → that store's client (connected to that endpoint) →
//!                            handle_fleet_written (a failure: one log line, counted, retried
//!                            at the next heartbeat)
//! shutdown                 → poll_fleet_withdraw → the key removed (within WITHDRAW_TIMEOUT)
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lainlet_core::fleet::announcer::{FleetStep, FleetWrite, FleetWritten};
use lainlet_core::{Store, CALL_TIMEOUT};
use tracing::{debug, info, warn};

use crate::etcd::Clients;
use crate::socket::Runtime;
use crate::sync::{first, Either};
use crate::Shared;

/// How long shutdown waits for the key's removal.
pub const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(1);

/// Writes of the fleet heartbeat to one store of one etcd endpoint at a time.
pub trait FleetClient: Send {
    /// Connects to `endpoint` (`http://host:port`), replacing any earlier connection.
    fn connect(&mut self, endpoint: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Does `write` (see [`FleetWrite`]); what etcd said.
    fn write(&mut self, write: &FleetWrite) -> impl Future<Output = FleetWritten> + Send;
}

/// Keeps this lainlet's fleet key alive until shutdown, then removes it; returns at once
/// without `--announce`. Tells `shared` when it is done ([`Shared::announce_done`]).
pub async fn announce<V2: FleetClient, V3: FleetClient, R: Runtime>(
    shared: Arc<Shared>,
    endpoints: Vec<String>,
    mut clients: Clients<V2, V3>,
    rt: R,
) {
    shared.announce_started();
    let mut connected: Option<(Store, usize)> = None;
    let mut failing = false;
    loop {
        let step = shared.with_engine(|e| e.poll_fleet(Instant::now()));
        let (endpoint, write) = match step {
            FleetStep::Off => {
                shared.announce_done();
                return;
            }
            FleetStep::Wait { until } => {
                match first(rt.sleep_until(until), shared.shut_down()).await {
                    Either::Left(()) => continue,
                    Either::Right(()) => break,
                }
            }
            FleetStep::Write { endpoint, write } => (endpoint, write),
        };
        let result = match first(
            perform(
                &mut clients,
                &endpoints,
                &mut connected,
                endpoint,
                &write,
                &rt,
            ),
            shared.shut_down(),
        )
        .await
        {
            Either::Left(result) => result,
            Either::Right(()) => FleetWritten::Failed("shutting down".to_owned()),
        };
        match &result {
            FleetWritten::Failed(reason) | FleetWritten::Refused { reason, .. } if !failing => {
                warn!("fleet: heartbeat failed ({reason}); retried at the next one, counted in lainlet_fleet_heartbeats{{kind=\"failed\"}}");
                failing = true;
            }
            FleetWritten::Failed(reason) | FleetWritten::Refused { reason, .. } => {
                debug!("fleet: heartbeat failed again: {reason}")
            }
            FleetWritten::Gone => info!("fleet: the key had expired; announcing again"),
            FleetWritten::Done { .. } if failing => {
                info!("fleet: heartbeats work again");
                failing = false;
            }
            FleetWritten::Done { .. } => {}
        }
        if matches!(result, FleetWritten::Failed(_)) {
            connected = None;
        }
        shared.with_engine(|e| e.handle_fleet_written(Instant::now(), result));
        if shared.is_shutting_down() {
            break;
        }
    }
    withdraw(&shared, &endpoints, &mut clients, &mut connected, &rt).await;
    shared.announce_done();
}

/// At shutdown: removes the key (bounded by [`WITHDRAW_TIMEOUT`]).
async fn withdraw<V2: FleetClient, V3: FleetClient, R: Runtime>(
    shared: &Shared,
    endpoints: &[String],
    clients: &mut Clients<V2, V3>,
    connected: &mut Option<(Store, usize)>,
    rt: &R,
) {
    let Some(write) = shared.with_engine(|e| e.poll_fleet_withdraw()) else {
        return;
    };
    let endpoint = connected.map_or(0, |(_, e)| e);
    let result = match first(
        perform(clients, endpoints, connected, endpoint, &write, rt),
        rt.sleep(WITHDRAW_TIMEOUT),
    )
    .await
    {
        Either::Left(r) => r,
        Either::Right(()) => FleetWritten::Failed(format!("no answer within {WITHDRAW_TIMEOUT:?}")),
    };
    match &result {
        FleetWritten::Failed(reason) => {
            warn!("fleet: could not remove this node's key ({reason}); it expires with its TTL")
        }
        _ => info!("fleet: this node's key removed"),
    }
    shared.with_engine(|e| e.handle_fleet_written(Instant::now(), result));
}

/// One write with the store's client, connecting it to `endpoint` first when needed, within
/// [`CALL_TIMEOUT`].
async fn perform<V2: FleetClient, V3: FleetClient, R: Runtime>(
    clients: &mut Clients<V2, V3>,
    endpoints: &[String],
    connected: &mut Option<(Store, usize)>,
    endpoint: usize,
    write: &FleetWrite,
    rt: &R,
) -> FleetWritten {
    let store = match write {
        FleetWrite::Put { store, .. }
        | FleetWrite::Refresh { store, .. }
        | FleetWrite::Withdraw { store, .. } => *store,
    };
    let Some(url) = endpoints.get(endpoint % endpoints.len().max(1)) else {
        return FleetWritten::Failed("no etcd endpoint".to_owned());
    };
    let call = async {
        if *connected != Some((store, endpoint)) {
            let connecting = match store {
                Store::V2 => clients.v2.connect(url).await,
                Store::V3 => clients.v3.connect(url).await,
            };
            if let Err(e) = connecting {
                return FleetWritten::Failed(format!("connecting to {url}: {e:#}"));
            }
            *connected = Some((store, endpoint));
        }
        match store {
            Store::V2 => clients.v2.write(write).await,
            Store::V3 => clients.v3.write(write).await,
        }
    };
    match first(call, rt.sleep(CALL_TIMEOUT)).await {
        Either::Left(r) => r,
        Either::Right(()) => FleetWritten::Failed(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}
