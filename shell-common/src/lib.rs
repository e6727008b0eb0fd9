//! # lainlet-shell-common
//!
//! What both lainlet shells (`lainlet` on tokio, `lainlet-smol` on smol) need and no async
//! runtime decides, so that each shell is only its IO:
//!
//! * [`cli`] — the command line (modern and the original's Go-style flags, `LAINLET_*`
//!   variables), binding the listener;
//! * [`conn`] — admission (the limit, slots for local callers), head and idle timeouts, and
//!   when to give memory back, decided without IO;
//! * [`sniff`] — reading a request head to tell watches (streamed by the shell), plain
//!   requests (given to the shell's HTTP library) and heads to refuse apart;
//! * [`framer`] — a connection's request framing on top of it, sans IO: what to pass to the
//!   HTTP library, when to take over or refuse, when the client took too long;
//! * [`Shared`] — the engine behind a mutex with the watches' wake-ups, the connection count,
//!   the heartbeat timer loop and the shutdown latch, on the runtime-free primitives of
//!   [`sync`];
//! * [`socket`] — the two traits a shell implements ([`socket::Socket`],
//!   [`socket::Runtime`]) and the socket routines written on them (writing, lingering close,
//!   refusing);
//! * [`watch`] — the one watch-stream loop;
//! * [`etcd`] — the etcd driver over a shell's [`etcd::EtcdClient`]s (one per store), and
//!   the demo data;
//! * [`etcd_tls`] — client TLS to etcd: the PEM files, checked at start, read again when
//!   they change;
//! * [`http`] — the HTTP client trait a shell implements for the two below;
//! * [`etcd_v2`] — the v2 keys API client both shells use, over a shell's [`http`] client;
//! * [`gateway`] — the v3 JSON gateway client (`lainlet-smol`'s v3 store), over the same;
//! * [`service`] — the life of the process: start, accept loop, signals, drain;
//! * [`state_file`] — the state file: loaded at start, saved atomically when it changed and
//!   at shutdown;
//! * [`startup`] — raising the open-files limit, and the first etcd snapshot read with its
//!   progress logged;
//! * logging set-up and the start-up messages both shells print.
//!
//! No async runtime, socket type or thread here (`cargo tree -p lainlet-shell-common` has no
//! tokio and no smol): the shells lend theirs through the traits of [`socket`].

#![deny(unsafe_code)] // one allowed call: `conn::trim_memory`
#![warn(missing_docs)]

pub mod announce;
pub mod cli;
pub mod conn;
pub mod etcd;
pub mod etcd_tls;
pub mod etcd_v2;
pub mod framer;
pub mod gateway;
pub mod http;
pub mod service;
pub mod shared;
pub mod sniff;
pub mod socket;
pub mod startup;
pub mod state_file;
pub mod sync;
pub mod watch;

use std::io::IsTerminal;

pub use cli::{Cli, LogFormat};
/// The TLS library both shells use for etcd (re-exported so they build on the same version).
pub use rustls;
pub use shared::{OpenConnection, Opened, Shared};

use lainlet_core::V2_VERSION;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// For `-v`: the v2 API version on stderr (as the original printed it), the build on stdout.
/// A reader that went away (`lainlet -v | grep -q …`) is no error: nothing is left to say.
pub fn print_version(package: &str, version: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "Lainlet Version: {V2_VERSION}");
    let _ = writeln!(std::io::stdout(), "lainlet {version} ({package})");
}

/// Logs to stderr: the shell's own crate (`shell_target`, its `CARGO_CRATE_NAME`) and this
/// crate at info level (debug with `--debug`), everything else at warn; as text lines, or one
/// JSON object per line (`--log-format json`).
pub fn init_logging(debug: bool, format: LogFormat, shell_target: &'static str) {
    let level = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    let filter = Targets::new()
        .with_target(shell_target, level)
        .with_target(env!("CARGO_CRATE_NAME"), level)
        .with_default(LevelFilter::WARN);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => {
            let text = tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr);
            registry.with(text).init();
        }
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(std::io::stderr);
            registry.with(json).init();
        }
    }
}

/// Loads the demo data set into `shared` and says so (log and stdout), with a command to try.
pub fn start_demo(shared: &Shared, cli: &Cli) {
    let keys = etcd::load_demo(shared);
    let url = cli.demo_url();
    tracing::info!("demo mode (--demo): serving {keys} built-in keys, no etcd");
    println!(
        "lainlet is serving built-in demo data on {url} — try: \
         curl '{url}/v2/coreinfowatcher?appname=hello'"
    );
}

/// The start-up line: version, shell, listen address, host name, node IP, authorisation.
pub fn log_listening(package: &str, version: &str, local: &str, cli: &Cli, hostname: &str) {
    tracing::info!(
        "lainlet {version} ({package}) listening on {local} (host name {hostname:?}, node ip {:?}{})",
        cli.ip,
        if cli.noauth {
            ", authorisation off"
        } else {
            ""
        }
    );
}
