//! `lainlet-smol`: the same service as `lainlet`, from the same core, on smol, tiny_http for
//! plain HTTP and trillium-client for etcd (its v3 JSON gateway and its v2 keys API) — no
//! tokio anywhere in its dependency tree. It proves that the core does not depend on a runtime.
//!
//! * [`front`] — each connection's request heads are read by an async task that streams
//!   watches (the common watch loop) and gives plain requests to tiny_http ([`backend`]), so
//!   no thread waits for an idle watch;
//! * [`etcd_http`] — trillium-client under the common etcd clients (v3 JSON gateway, v2 keys
//!   API);
//! * [`tls`] — its connector (TCP, rustls for `https://`);
//! * [`rt`] — smol's listener, socket and timer for the common code;
//! * everything else (command line, the process's life, the engine's wake-ups, the etcd
//!   driver, request sniffing, the watch stream) is `lainlet-shell-common`, shared with the
//!   tokio shell.
//!
//! One executor thread per core runs every task (accept, connections, watches, etcd,
//! heartbeats; [`rt::spawn_workers`]); tiny_http adds its accept thread, its pool (4 threads,
//! two of them parsing its persistent connections from the front) and two handler threads. Exit status: 0 after a clean shutdown
//! (SIGTERM/SIGINT) or `-v`; 1 when the listener cannot be bound; 2 for bad flags, and for
//! the gRPC flags (`-grpc.addr` …: tonic needs tokio, so only `lainlet` serves gRPC).

mod backend;
mod etcd_http;
mod front;
mod rt;
mod tls;

use std::process::ExitCode;
use std::sync::Arc;

use async_signal::{Signal, Signals};
use lainlet_shell_common::etcd::Clients;
use lainlet_shell_common::etcd_v2::V2Client;
use lainlet_shell_common::gateway::GatewayClient;
use lainlet_shell_common::service::{self, Accepted, Started};
use lainlet_shell_common::socket::refuse;
use lainlet_shell_common::{Cli, Shared};
use smol::stream::StreamExt;
use smol::Executor;
use tracing::{error, warn};

use crate::backend::Backend;
use crate::front::Front;
use crate::rt::{Listener, Smol};

const PACKAGE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> ExitCode {
    let Some(cli) = service::init("lainlet-smol", PACKAGE, VERSION, env!("CARGO_CRATE_NAME"))
    else {
        return ExitCode::SUCCESS;
    };
    let ex = Arc::new(Executor::new());
    rt::spawn_workers(&ex);
    smol::block_on(ex.run(run(cli, ex.clone())))
}

async fn run(cli: Cli, ex: Arc<Executor<'static>>) -> ExitCode {
    if cli.grpc_requested() {
        error!(
            "lainlet-smol does not serve gRPC (-grpc.addr, -grpc.TLS, -grpc.key, -grpc.cert): its \
             server, tonic, needs tokio; run the `lainlet` binary for the gRPC API"
        );
        return ExitCode::from(2);
    }
    let started = match Started::new(cli, PACKAGE, VERSION, Listener::new) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let listener = started.listener;
    let shared = started.shared;
    match Signals::new([Signal::Term, Signal::Int]) {
        Ok(signals) => ex.spawn(on_signals(shared.clone(), signals)).detach(),
        Err(e) => warn!("cannot install signal handlers: {e}"),
    }
    let seed = lainlet_shell_common::cli::random_seed();
    let backend = match Backend::start(shared.clone(), seed, ex.clone()) {
        Ok(b) => b,
        Err(e) => {
            error!("cannot start the HTTP backend (tiny_http): {e}");
            return ExitCode::FAILURE;
        }
    };
    if !started.endpoints.is_empty() {
        let cli = &started.cli;
        let credentials = cli.etcd_credentials();
        let http = tls::EtcdHttp::new(started.etcd_tls.clone());
        let http = etcd_http::Trillium(http);
        let v3 = GatewayClient::new(http.clone(), Smol, credentials.clone());
        let v2 = V2Client::new(http.clone(), Smol, credentials.clone());
        // The fleet heartbeat writes on clients of its own (it never waits for the watch).
        let fleet = Clients {
            v2: V2Client::new(http.clone(), Smol, credentials.clone()),
            v3: GatewayClient::new(http, Smol, credentials),
        };
        let endpoints = started.endpoints.clone();
        ex.spawn(lainlet_shell_common::announce::announce(
            shared.clone(),
            endpoints,
            fleet,
            Smol,
        ))
        .detach();
        let clients = Clients { v2, v3 };
        let follow =
            lainlet_shell_common::etcd::follow(shared.clone(), started.endpoints, clients, Smol);
        ex.spawn(follow).detach();
    }
    ex.spawn(shared.clone().run_timer(Smol)).detach();
    let front = Arc::new(Front {
        shared: shared.clone(),
        backend,
        policy: started.policy,
        executor: ex.clone(),
    });
    ex.spawn(service::trim_after_floods(shared.clone(), Smol))
        .detach();
    ex.spawn(lainlet_shell_common::state_file::keep(shared.clone(), Smol))
        .detach();
    let (policy, node_ip) = (started.policy, &started.cli.ip);
    service::accept(
        &shared,
        &Smol,
        &listener,
        &policy,
        node_ip,
        |accepted| match accepted {
            Accepted::Serve { socket, peer, open } => {
                ex.spawn(front::connection(front.clone(), socket, peer, open))
                    .detach();
            }
            Accepted::Refuse { socket, response } => {
                ex.spawn(async move { refuse(&Smol, &socket, &response).await })
                    .detach();
            }
        },
    )
    .await;
    service::drain(&shared, &Smol).await
}

/// Shutdown on SIGTERM or SIGINT (see [`service::on_signal`]).
async fn on_signals(shared: Arc<Shared>, mut signals: Signals) {
    while let Some(Ok(signal)) = signals.next().await {
        let name = if signal == Signal::Term {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        service::on_signal(&shared, name);
    }
}
