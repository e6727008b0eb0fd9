//! `lainlet`, the production shell: tokio, etcd-client and hyper around `lainlet-core`.
//!
//! The shell owns sockets, timers and tasks and makes no decisions; the core does:
//!
//! * [`etcd`] — the single etcd watch (or the demo data set) feeding the engine,
//! * [`http`] — the listener, the connection limit, and plain requests through hyper,
//! * [`io`] — the request sniffer that keeps watch requests away from hyper,
//! * [`watch`] — streaming a watch with the original's exact head and framing,
//! * [`shared`] — the engine behind a mutex, wake-ups, the heartbeat timer, shutdown,
//! * [`cli`] — flags (modern and the original's Go-style ones) and environment.
//!
//! Exit status: 0 after a clean shutdown (SIGTERM/SIGINT) or `-v`; 1 when the listener cannot
//! be bound; 2 for bad flags.

mod cli;
mod etcd;
mod http;
mod io;
mod shared;
mod watch;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use lainlet_core::{Engine, EngineConfig, V2_VERSION};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

use crate::cli::Cli;
use crate::shared::Shared;

/// How long shutdown waits for connections to finish.
const DRAIN: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = Cli::from_env();
    if cli.version {
        eprintln!("Lainlet Version: {V2_VERSION}");
        println!("lainlet {} (lainlet-tokio)", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    init_logging(cli.debug);
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

fn init_logging(debug: bool) {
    let level = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    let filter = Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), level)
        .with_default(LevelFilter::WARN);
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    tracing_subscriber::registry().with(fmt).with(filter).init();
}

async fn run(cli: Cli) -> ExitCode {
    if cli.grpc_addr.is_some() {
        warn!("-grpc.addr is accepted for compatibility, but gRPC is not implemented");
    }
    let listener = match bind(&cli).await {
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
    let hostname = cli.hostname();
    let engine = Engine::new(EngineConfig {
        node_ip: cli.ip.clone(),
        hostname: hostname.clone(),
        auth: !cli.noauth,
        ..EngineConfig::default()
    });
    let shared = Shared::new(engine);
    tokio::spawn(signals(shared.clone()));
    let endpoints = cli.etcd_endpoints();
    if endpoints.is_empty() {
        let keys = etcd::load_demo(&shared);
        let url = demo_url(&cli.web);
        info!("demo mode: no --etcd given, serving {keys} built-in keys");
        println!(
            "lainlet is serving built-in demo data on {url} — try: \
             curl '{url}/v2/coreinfowatcher?appname=hello'"
        );
    } else {
        let options = match etcd_options(&cli) {
            Ok(o) => o,
            Err(e) => {
                error!("{e:#}");
                return ExitCode::from(2);
            }
        };
        info!("following etcd at {}", endpoints.join(","));
        tokio::spawn(etcd::run(
            shared.clone(),
            etcd::EtcdConfig { endpoints, options },
        ));
    }
    info!(
        "lainlet {} listening on {local} (host name {hostname:?}, node ip {:?}{})",
        env!("CARGO_PKG_VERSION"),
        cli.ip,
        if cli.noauth {
            ", authorisation off"
        } else {
            ""
        }
    );
    tokio::spawn(shared.clone().run_timer());
    http::serve(shared.clone(), listener, cli.max_connections).await;
    // Shutdown: the listener is closed; watch streams and idle connections are ending.
    let deadline = tokio::time::Instant::now() + DRAIN;
    while shared.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    info!("stopped ({} connections left)", shared.connection_count());
    ExitCode::SUCCESS
}

async fn bind(cli: &Cli) -> Result<TcpListener, String> {
    let mut last = String::from("no address");
    for addr in cli.listen_addrs()? {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = format!("cannot listen on {addr} (--web {}): {e}", cli.web),
        }
    }
    Err(last)
}

/// The URL to show for the demo (`:9001` → `http://127.0.0.1:9001`).
fn demo_url(web: &str) -> String {
    match web.rsplit_once(':') {
        Some(("" | "0.0.0.0" | "[::]", port)) => format!("http://127.0.0.1:{port}"),
        _ => format!("http://{web}"),
    }
}

fn etcd_options(cli: &Cli) -> anyhow::Result<etcd_client::ConnectOptions> {
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let (Some(user), Some(password)) = (&cli.etcd_user, &cli.etcd_password) {
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    #[cfg(feature = "tls")]
    if cli.etcd_tls() {
        use anyhow::Context as _;
        use etcd_client::{Certificate, Identity, TlsOptions};
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))
        };
        let mut tls = TlsOptions::new();
        if let Some(ca) = &cli.etcd_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&cli.etcd_cert, &cli.etcd_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    Ok(options)
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
