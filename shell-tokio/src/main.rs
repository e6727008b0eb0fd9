//! `lainlet`, the production shell: tokio, etcd-client and hyper around `lainlet-core`.
//!
//! The shell owns sockets, timers and tasks and makes no decisions; the core does, and what
//! both shells share (command line, the process's life, the engine's wake-ups, the etcd
//! driver, request sniffing, the watch stream) is in `lainlet-shell-common`:
//!
//! * [`etcd`] — the etcd v3 client (gRPC, etcd-client) the common etcd driver uses,
//! * [`etcd_v2`] — hyper's HTTP client under the common v2 keys API client,
//! * [`grpc`] — the original's gRPC API on `-grpc.addr` (tonic), over the same engine,
//! * [`http`] — one hyper HTTP/1.1 connection per socket, and the engine's answers as hyper
//!   responses,
//! * [`io`] — the socket as hyper sees it, with watches and refused heads taken away,
//! * [`rt`] — tokio's listener, socket and timer for the common code.
//!
//! Exit status: 0 after a clean shutdown (SIGTERM/SIGINT) or `-v`; 1 when a listener (HTTP or
//! gRPC) cannot be bound; 2 for bad flags (also unreadable or invalid `-grpc.key`/`-grpc.cert`);
//! 255 with neither `-web` nor `-grpc.addr` (the original's rule).

mod etcd;
mod etcd_v2;
mod grpc;
mod http;
mod io;
mod rt;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use lainlet_shell_common::etcd::Clients;
use lainlet_shell_common::etcd_v2::V2Client;
use lainlet_shell_common::service::{self, Accepted, Started};
use lainlet_shell_common::socket::refuse;
use lainlet_shell_common::Shared;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, warn};

use crate::grpc::{GrpcServer, StartError};
use crate::rt::{Listener, Tokio};

const PACKAGE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> ExitCode {
    let Some(cli) = service::init("lainlet", PACKAGE, VERSION, env!("CARGO_CRATE_NAME")) else {
        return ExitCode::SUCCESS;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    // Do not wait for tasks stuck in etcd calls or name lookups.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn run(cli: lainlet_shell_common::Cli) -> ExitCode {
    let grpc = match GrpcServer::prepare(&cli) {
        Ok(grpc) => grpc,
        Err(StartError::Usage(e)) => {
            error!("{e}");
            return ExitCode::from(2);
        }
        Err(StartError::Listen(e)) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let started = match Started::new(cli, PACKAGE, VERSION, Listener::new) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let listener = started.listener;
    let shared = started.shared;
    tokio::spawn(signals(shared.clone()));
    if !started.endpoints.is_empty() {
        let tls = started.etcd_tls.clone();
        let v3 = etcd::GrpcClient::new(&started.cli, tls.clone());
        let cli = &started.cli;
        let credentials = cli.etcd_credentials();
        let v2 = V2Client::new(etcd_v2::Hyper::new(tls.clone()), Tokio, credentials.clone());
        let endpoints = started.endpoints;
        // The fleet heartbeat writes on clients of its own (it never waits for the watch).
        let fleet = Clients {
            v2: V2Client::new(etcd_v2::Hyper::new(tls.clone()), Tokio, credentials),
            v3: etcd::GrpcClient::new(cli, tls),
        };
        tokio::spawn(lainlet_shell_common::announce::announce(
            shared.clone(),
            endpoints.clone(),
            fleet,
            Tokio,
        ));
        tokio::spawn(lainlet_shell_common::etcd::follow(
            shared.clone(),
            endpoints,
            Clients { v2, v3 },
            Tokio,
        ));
    }
    tokio::spawn(shared.clone().run_timer(Tokio));
    let grpc = grpc.map(|server| server.spawn(shared.clone()));
    tokio::spawn(service::trim_after_floods(shared.clone(), Tokio));
    tokio::spawn(lainlet_shell_common::state_file::keep(
        shared.clone(),
        Tokio,
    ));
    let (policy, node_ip) = (started.policy, &started.cli.ip);
    service::accept(
        &shared,
        &Tokio,
        &listener,
        &policy,
        node_ip,
        |accepted| match accepted {
            Accepted::Serve { socket, peer, open } => {
                let connection =
                    http::serve_connection(shared.clone(), open, socket.0, peer, policy);
                tokio::spawn(connection);
            }
            Accepted::Refuse { socket, response } => {
                tokio::spawn(async move { refuse(&Tokio, &socket, &response).await });
            }
        },
    )
    .await;
    let code = service::drain(&shared, &Tokio).await;
    if let Some(grpc) = grpc {
        if tokio::time::timeout(service::DRAIN, grpc).await.is_err() {
            warn!(
                "gRPC calls still open after {:?}; stopping anyway",
                service::DRAIN
            );
        }
    }
    code
}

/// Shutdown on SIGTERM or SIGINT (see [`service::on_signal`]).
async fn signals(shared: Arc<Shared>) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        service::on_signal(&shared, name);
    }
}
