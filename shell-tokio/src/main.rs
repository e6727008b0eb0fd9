//! `lainlet`, the production shell: tokio, etcd-client and hyper around `lainlet-core`.
//!
//! The shell owns sockets, timers and tasks and makes no decisions; the core does, and what
//! both shells share (command line, the engine's wake-ups, the etcd sync driver, request
//! sniffing) is in `lainlet-shell-common`:
//!
//! * [`etcd`] — the etcd client (gRPC, etcd-client) the common sync driver uses,
//! * [`http`] — the listener, the connection limit, and plain requests through hyper,
//! * [`io`] — the request sniffer that keeps watch requests away from hyper,
//! * [`watch`] — streaming a watch with the original's exact head and framing.
//!
//! Exit status: 0 after a clean shutdown (SIGTERM/SIGINT) or `-v`; 1 when the listener cannot
//! be bound; 2 for bad flags.

mod etcd;
mod http;
mod io;
mod watch;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lainlet_core::Engine;
use lainlet_shell_common::{Cli, Shared};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

/// How long shutdown waits for connections to finish.
const DRAIN: Duration = Duration::from_secs(2);
const PACKAGE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> ExitCode {
    let cli = Cli::from_env("lainlet");
    if cli.version {
        lainlet_shell_common::print_version(PACKAGE, VERSION);
        return ExitCode::SUCCESS;
    }
    lainlet_shell_common::init_logging(cli.debug, env!("CARGO_CRATE_NAME"));
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

async fn run(cli: Cli) -> ExitCode {
    let listener = match cli.bind().and_then(|l| {
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        TcpListener::from_std(l).map_err(|e| e.to_string())
    }) {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let config = cli.engine_config();
    let hostname = config.hostname.clone();
    let shared = Shared::new(Engine::new(config));
    tokio::spawn(signals(shared.clone()));
    let endpoints = cli.etcd_endpoints();
    if endpoints.is_empty() {
        lainlet_shell_common::start_demo(&shared, &cli);
    } else {
        let client = match etcd::GrpcClient::new(&cli) {
            Ok(c) => c,
            Err(e) => {
                error!("{e:#}");
                return ExitCode::from(2);
            }
        };
        info!("following etcd at {}", endpoints.join(","));
        let sleep = |at: Instant| tokio::time::sleep_until(at.into());
        tokio::spawn(lainlet_shell_common::etcd::follow(
            shared.clone(),
            endpoints,
            client,
            sleep,
        ));
    }
    lainlet_shell_common::log_listening(PACKAGE, VERSION, &local, &cli, &hostname);
    let sleep = |at: Instant| tokio::time::sleep_until(at.into());
    tokio::spawn(shared.clone().run_timer(sleep));
    http::serve(shared.clone(), listener, cli.max_connections).await;
    // Shutdown: the listener is closed; watch streams and idle connections are ending.
    let deadline = tokio::time::Instant::now() + DRAIN;
    while shared.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    info!("stopped ({} connections left)", shared.connection_count());
    ExitCode::SUCCESS
}

/// Begins shutdown on the first SIGTERM or SIGINT; exits at once on a second one.
async fn signals(shared: Arc<Shared>) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    shared.begin_shutdown();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: exiting now");
    std::process::exit(130);
}
