//! The life of a lainlet process, the same in both shells: parse the command line, bind the
//! listener, build the engine, start following etcd (or serve the demo data), accept
//! connections, and on the first SIGTERM/SIGINT drain and stop.
//!
//! ```text
//! main:   let Some(cli) = service::init(NAME) else { return };   (-v, logging)
//!         let started = Started::new(cli, PACKAGE, VERSION)?;     (bind, engine)
//!         spawn: etcd driver or demo, heartbeat timer, signal handler
//!         service::accept(&started.shared, &rt, &listener, |accepted| spawn(...))
//!         service::drain(&started.shared, &rt)
//! ```

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lainlet_core::{Engine, Response};
use tracing::{debug, error, info, warn};

use crate::socket::{Runtime, Socket};
use crate::sync::{first, Either};
use crate::{Cli, OpenConnection, Shared};

/// How long shutdown waits for connections to finish.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Parses the command line of binary `name`; handles `-v` (returns `None`), exits with status
/// 1 and the usage when `-etcd` is missing without `--demo` (as the original), and sets up
/// logging for the shell's crate `shell_target`.
pub fn init(
    name: &'static str,
    package: &str,
    version: &str,
    shell_target: &'static str,
) -> Option<Cli> {
    crate::startup::mark_start();
    let cli = Cli::from_env(name);
    if cli.version {
        crate::print_version(package, version);
        return None;
    }
    if let Err(usage) = cli.check_etcd(name) {
        eprintln!("{usage}");
        std::process::exit(1);
    }
    crate::init_logging(cli.debug, cli.log_format, shell_target);
    Some(cli)
}

/// A process that has bound its listener and built its engine.
pub struct Started<L> {
    /// The command line.
    pub cli: Cli,
    /// The engine and its companions.
    pub shared: Arc<Shared>,
    /// The HTTP listener, registered with the shell's runtime.
    pub listener: L,
    /// The etcd endpoints as URLs (empty: demo mode).
    pub endpoints: Vec<String>,
}

impl<L> Started<L> {
    /// Binds the listener (non-blocking, handed to `register` for the shell's runtime) and
    /// builds the engine; logs what it listens on. On failure the error is logged and the exit
    /// status returned (1: cannot listen).
    pub fn new(
        cli: Cli,
        package: &str,
        version: &str,
        register: impl FnOnce(std::net::TcpListener) -> io::Result<L>,
    ) -> Result<Started<L>, ExitCode> {
        let fail = |e: String| {
            error!("{e}");
            ExitCode::FAILURE
        };
        let bound = cli.bind().map_err(fail)?;
        let local = bound
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let listener = bound
            .set_nonblocking(true)
            .and_then(|()| register(bound))
            .map_err(|e| fail(format!("cannot listen on {local}: {e}")))?;
        let config = lainlet_core::EngineConfig {
            started: Some(crate::startup::mark_start()),
            ..cli.engine_config()
        };
        crate::log_listening(package, version, &local, &cli, &config.hostname);
        let shared = Shared::new(Engine::new(config));
        let endpoints = cli.etcd_endpoints();
        if cli.demo {
            crate::start_demo(&shared, &cli);
        } else {
            info!("following etcd at {}", endpoints.join(","));
        }
        Ok(Started {
            cli,
            shared,
            listener,
            endpoints,
        })
    }
}

/// What the shell does on a termination signal named `name`: the first begins shutdown, a
/// second one exits at once.
pub fn on_signal(shared: &Shared, name: &str) {
    if shared.is_shutting_down() {
        warn!("second signal ({name}): exiting now");
        std::process::exit(130);
    }
    info!("{name}: shutting down");
    shared.begin_shutdown();
}

/// A listening socket as the shell's runtime provides it.
pub trait Listener {
    /// The accepted connections' type.
    type Socket: Socket + Send + 'static;
    /// The next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Socket, SocketAddr)>> + Send;
}

/// A connection the accept loop took.
pub enum Accepted<S> {
    /// Serve it; `open` counts it until dropped.
    Serve {
        /// The socket.
        socket: S,
        /// The caller's address.
        peer: IpAddr,
        /// The connection's place in the count.
        open: OpenConnection,
    },
    /// Answer `response` and close it (over the connection limit).
    Refuse {
        /// The socket.
        socket: S,
        /// The answer.
        response: Response,
    },
}

/// Accepts connections until shutdown, handing each to `handle` (which spawns its task).
/// Beyond `max_connections` open connections, a new one is to be refused.
pub async fn accept<L: Listener, R: Runtime>(
    shared: &Arc<Shared>,
    rt: &R,
    listener: &L,
    max_connections: usize,
    mut handle: impl FnMut(Accepted<L::Socket>),
) {
    loop {
        let (socket, peer) = match first(listener.accept(), shared.shut_down()).await {
            Either::Left(Ok(conn)) => conn,
            Either::Left(Err(e)) => {
                // Typically out of file descriptors: back off instead of spinning.
                warn!("accept failed: {e}");
                rt.sleep(Duration::from_millis(50)).await;
                continue;
            }
            Either::Right(()) => return,
        };
        let open = shared.open_connection();
        if open.count > max_connections {
            drop(open);
            debug!(%peer, "connection refused: limit of {max_connections} reached");
            let response = Shared::too_many(max_connections);
            handle(Accepted::Refuse { socket, response });
            continue;
        }
        let peer = peer.ip().to_canonical();
        handle(Accepted::Serve { socket, peer, open });
    }
}

/// After the listener closed: waits (at most [`DRAIN`]) for connections to end, and says how
/// it stopped.
pub async fn drain<R: Runtime>(shared: &Shared, rt: &R) -> ExitCode {
    let deadline = Instant::now() + DRAIN;
    while shared.connection_count() > 0 && Instant::now() < deadline {
        rt.sleep(Duration::from_millis(10)).await;
    }
    info!("stopped ({} connections left)", shared.connection_count());
    ExitCode::SUCCESS
}
