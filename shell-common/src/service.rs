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

use lainlet_core::{is_local_peer, Engine, Response};
use tracing::{debug, error, info, warn};

use crate::conn::{
    raise_open_files_limit, trim_memory, widen_backlog, Admission, ConnectionPolicy, OpenFiles,
    TrimPolicy,
};
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
    /// The process's open-files limit.
    pub open_files: OpenFiles,
    /// The connection rules (limit, reserve, timeouts, keepalive).
    pub policy: ConnectionPolicy,
    /// Client TLS to etcd, if asked for (the files read and checked).
    pub etcd_tls: Option<Arc<crate::etcd_tls::EtcdTls>>,
}

impl<L> Started<L> {
    /// Binds the listener (non-blocking, handed to `register` for the shell's runtime, with the
    /// connection rules its accepted sockets follow) and
    /// builds the engine; reads the etcd TLS files; logs what it listens on. On failure the
    /// error is logged and the exit status returned (1: cannot listen; 2: unusable TLS files).
    pub fn new(
        cli: Cli,
        package: &str,
        version: &str,
        register: impl FnOnce(std::net::TcpListener, &ConnectionPolicy) -> io::Result<L>,
    ) -> Result<Started<L>, ExitCode> {
        let fail = |e: String| {
            error!("{e}");
            ExitCode::FAILURE
        };
        let etcd_tls = crate::etcd_tls::EtcdTls::from_cli(&cli).map_err(|e| {
            error!("{e}");
            ExitCode::from(2)
        })?;
        let open_files = raise_open_files_limit();
        let policy = cli.connection_policy(open_files.soft);
        info!(
            "open files: soft limit {} (raised from {}), hard limit {}; at most {} connections \
             ({} kept for local callers)",
            open_files.soft,
            open_files.before,
            open_files.hard,
            policy.max_connections,
            policy.local_reserve
        );
        let bound = cli.bind().map_err(fail)?;
        if let Err(e) = widen_backlog(&bound, policy.max_connections) {
            warn!("cannot widen the listen backlog: {e}");
        }
        let local = bound
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let listener = bound
            .set_nonblocking(true)
            .and_then(|()| register(bound, &policy))
            .map_err(|e| fail(format!("cannot listen on {local}: {e}")))?;
        let config = lainlet_core::EngineConfig {
            started: Some(crate::startup::mark_start()),
            announce: cli.announce_config(package),
            ..cli.engine_config()
        };
        crate::log_listening(package, version, &local, &cli, &config.hostname);
        let mut engine = Engine::new(config);
        let state_file = cli.state_file().filter(|_| !cli.demo);
        if let Some(path) = &state_file {
            crate::state_file::load(&mut engine, path);
        }
        let shared = Shared::new(engine);
        if let Some(path) = state_file {
            shared.set_state_file(path);
        }
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
            open_files,
            policy,
            etcd_tls,
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

/// Accepts connections until shutdown, handing each to `handle` (which spawns its task), or
/// to be refused when `policy` does not admit it (see [`ConnectionPolicy::admit`]).
pub async fn accept<L: Listener, R: Runtime>(
    shared: &Arc<Shared>,
    rt: &R,
    listener: &L,
    policy: &ConnectionPolicy,
    node_ip: &str,
    mut handle: impl FnMut(Accepted<L::Socket>),
) {
    loop {
        let (socket, peer) = match first(listener.accept(), shared.shut_down()).await {
            Either::Left(Ok(conn)) => conn,
            Either::Left(Err(e)) => {
                // Out of descriptors despite the headroom (or a transient error): back off
                // instead of spinning.
                warn!("accept failed: {e}");
                rt.sleep(Duration::from_millis(50)).await;
                continue;
            }
            Either::Right(()) => return,
        };
        let peer = peer.ip().to_canonical();
        let open = shared.open_connection();
        match policy.admit(open.count, is_local_peer(peer, node_ip)) {
            Admission::Serve => handle(Accepted::Serve { socket, peer, open }),
            Admission::Refuse(response) => {
                drop(open);
                debug!(%peer, "connection refused: the limit is {}", policy.max_connections);
                handle(Accepted::Refuse { socket, response });
            }
        }
    }
}

/// Gives memory back to the system after a flood of connections has drained (see
/// [`TrimPolicy`]), checking once a second until shutdown.
pub async fn trim_after_floods<R: Runtime>(shared: Arc<Shared>, rt: R) {
    let mut policy = TrimPolicy::default();
    loop {
        match first(rt.sleep(Duration::from_secs(1)), shared.shut_down()).await {
            Either::Left(()) => {}
            Either::Right(()) => return,
        }
        if policy.handle_count(Instant::now(), shared.connection_count()) {
            debug!("connections drained: giving freed memory back");
            trim_memory();
        }
    }
}

/// After the listener closed: waits (at most [`DRAIN`]) for connections to end, saves the
/// state file if the state changed, and says how it stopped.
pub async fn drain<R: Runtime>(shared: &Shared, rt: &R) -> ExitCode {
    let deadline = Instant::now() + DRAIN;
    while shared.connection_count() > 0 && Instant::now() < deadline {
        rt.sleep(Duration::from_millis(10)).await;
    }
    let withdrawn = crate::announce::WITHDRAW_TIMEOUT + Duration::from_millis(500);
    if let Either::Right(()) = first(shared.announce_finished(), rt.sleep(withdrawn)).await {
        warn!("fleet: the heartbeat did not stop within {withdrawn:?}");
    }
    crate::state_file::save_now(shared);
    info!("stopped ({} connections left)", shared.connection_count());
    ExitCode::SUCCESS
}
