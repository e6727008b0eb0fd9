//! `lainlet-smol`: the same service as `lainlet`, from the same core, on smol's runtime parts
//! (async-io for sockets and timers, async-executor for tasks), tiny_http for plain HTTP and
//! etcd's v3 JSON gateway for etcd — no tokio anywhere in its dependency tree. It proves that
//! the core does not depend on a runtime.
//!
//! * [`front`] — the public listener; each connection's request heads are read by an async
//!   task that streams watches itself ([`watch`]) and gives plain requests to tiny_http
//!   ([`backend`]), so no thread waits for an idle watch;
//! * [`gateway`] — etcd through the JSON gateway, over the small [`http_client`];
//! * everything else (command line, the engine's wake-ups, the etcd sync driver, request
//!   sniffing) is `lainlet-shell-common`, shared with the tokio shell.
//!
//! One executor thread runs every task (accept, connections, watches, etcd, heartbeats);
//! tiny_http adds its accept thread, its pool (4 threads, more only while many requests are
//! parsed at once) and two handler threads. Exit status: 0 after a clean shutdown
//! (SIGTERM/SIGINT) or `-v`; 1 when the listener cannot be bound; 2 for bad flags.

mod backend;
mod front;
mod gateway;
mod http_client;
mod watch;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_io::{Async, Timer};
use async_signal::{Signal, Signals};
use futures_lite::StreamExt;
use lainlet_core::Engine;
use lainlet_shell_common::etcd::XorShift;
use lainlet_shell_common::{Cli, Shared};
use tracing::{error, info, warn};

use crate::backend::Backend;
use crate::front::Front;

/// How long shutdown waits for connections to finish.
const DRAIN: Duration = Duration::from_secs(2);
const PACKAGE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> ExitCode {
    let cli = Cli::from_env("lainlet-smol");
    if cli.version {
        lainlet_shell_common::print_version(PACKAGE, VERSION);
        return ExitCode::SUCCESS;
    }
    lainlet_shell_common::init_logging(cli.debug, env!("CARGO_CRATE_NAME"));
    let ex = Arc::new(Executor::new());
    async_io::block_on(ex.run(run(cli, ex.clone())))
}

/// The async-io sleep the common loops are lent.
async fn sleep_until(at: Instant) {
    Timer::at(at).await;
}

async fn run(cli: Cli, ex: Arc<Executor<'static>>) -> ExitCode {
    let listener = match cli
        .bind()
        .and_then(|l| Async::new(l).map_err(|e| e.to_string()))
    {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener
        .get_ref()
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let config = cli.engine_config();
    let hostname = config.hostname.clone();
    let shared = Shared::new(Engine::new(config));
    match Signals::new([Signal::Term, Signal::Int]) {
        Ok(signals) => ex.spawn(on_signals(shared.clone(), signals)).detach(),
        Err(e) => warn!("cannot install signal handlers: {e}"),
    }
    let backend = match Backend::start(shared.clone(), XorShift::seeded().next_u64()) {
        Ok(b) => b,
        Err(e) => {
            error!("cannot start the HTTP backend (tiny_http): {e}");
            return ExitCode::FAILURE;
        }
    };
    let endpoints = cli.etcd_endpoints();
    if endpoints.is_empty() {
        lainlet_shell_common::start_demo(&shared, &cli);
    } else {
        if let Some(e) = endpoints.iter().find(|e| !e.starts_with("http://")) {
            error!("--etcd {e}: lainlet-smol reaches etcd over plain http only (lainlet has TLS)");
            return ExitCode::from(2);
        }
        let credentials = cli.etcd_user.clone().zip(cli.etcd_password.clone());
        let client = gateway::GatewayClient::new(credentials);
        info!(
            "following etcd at {} (v3 JSON gateway)",
            endpoints.join(",")
        );
        let follow =
            lainlet_shell_common::etcd::follow(shared.clone(), endpoints, client, sleep_until);
        ex.spawn(follow).detach();
    }
    lainlet_shell_common::log_listening(PACKAGE, VERSION, &local, &cli, &hostname);
    ex.spawn(shared.clone().run_timer(sleep_until)).detach();
    let front = Arc::new(Front {
        shared: shared.clone(),
        backend,
        max_connections: cli.max_connections,
    });
    front::serve(front, listener, ex.clone()).await;
    // Shutdown: the listener is closed; watch streams and idle connections are ending.
    let deadline = Instant::now() + DRAIN;
    while shared.connection_count() > 0 && Instant::now() < deadline {
        Timer::after(Duration::from_millis(10)).await;
    }
    info!("stopped ({} connections left)", shared.connection_count());
    ExitCode::SUCCESS
}

/// Begins shutdown on the first SIGTERM or SIGINT; exits at once on a second one.
async fn on_signals(shared: Arc<Shared>, mut signals: Signals) {
    match signals.next().await {
        Some(Ok(Signal::Term)) => info!("SIGTERM: shutting down"),
        Some(Ok(_)) => info!("SIGINT: shutting down"),
        _ => return,
    }
    shared.begin_shutdown();
    signals.next().await;
    warn!("second signal: exiting now");
    std::process::exit(130);
}
