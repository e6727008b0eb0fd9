//! Command line and environment (spec §6).
//!
//! Modern flags are GNU style (`--web :9001`); the original's Go-style single-dash flags
//! (`-web :9001`, `-web=:9001`, `-debug`, `-debug=false`, `-v`, `-grpc.addr X`) are rewritten
//! to them by [`normalise`] before clap parses, so existing deployment scripts keep working.
//! Every setting can also come from a `LAINLET_*` environment variable. Both shells take the
//! same command line, including the etcd TLS flags; only the tokio shell
//! serves the gRPC flags (`-grpc.addr`, `-grpc.TLS`, `-grpc.key`, `-grpc.cert`, see
//! [`Cli::grpc`]), which the smol shell refuses.

use std::ffi::OsString;
use std::net::SocketAddr;

use clap::builder::FalseyValueParser;
use clap::{CommandFactory, FromArgMatches, Parser};

/// The default `--state-file`.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/lainlet/state";

/// The port LAIN clients reach lainlet on; the default of `--web`.
pub const DEFAULT_WEB: &str = ":9001";

/// How log lines are written (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, message, fields), for log shippers.
    Json,
}

/// lainlet: one etcd watch per node, the cluster state served to the node's components over
/// the lainlet v2 HTTP API (GET and Server-Sent Events).
///
/// `--etcd` is required (as in the original); `--demo` serves a built-in data set instead.
#[derive(Parser, Debug, Clone)]
#[command(name = "lainlet", disable_version_flag = true)]
pub struct Cli {
    /// HTTP listen address: `host:port`, or `:port` for every interface.
    #[arg(long, env = "LAINLET_WEB", default_value = DEFAULT_WEB, value_name = "ADDR")]
    pub web: String,

    /// etcd endpoints, comma-separated `host:port` (`http://` is added when no scheme is
    /// given). Required unless --demo.
    #[arg(long, env = "LAINLET_ETCD", value_name = "ENDPOINTS")]
    pub etcd: Option<String>,

    /// Serve a built-in demo data set instead of following etcd (`/healthz` and the status
    /// page say `demo`).
    #[arg(
        long,
        env = "LAINLET_DEMO",
        value_parser = FalseyValueParser::new(),
        conflicts_with = "etcd"
    )]
    pub demo: bool,

    /// This node's IP: callers from it are local (super), and it is the default node of
    /// `/v2/localspecquery`.
    #[arg(long, env = "LAINLET_IP", default_value = "", value_name = "IP")]
    pub ip: String,

    /// This node's host name, for `/v2/rebellion/localprocs` [default: the OS host name].
    #[arg(long, env = "LAINLET_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,

    /// Log every request and more (debug level).
    #[arg(long, env = "LAINLET_DEBUG", value_parser = FalseyValueParser::new())]
    pub debug: bool,

    /// Log line format: `text`, or `json` (one object per line) for log shippers.
    #[arg(
        long,
        env = "LAINLET_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    /// Disable authorisation: every caller is treated as a super app.
    #[arg(long, env = "LAINLET_NOAUTH", value_parser = FalseyValueParser::new())]
    pub noauth: bool,

    /// Most open HTTP connections; further ones are answered `503` and closed [default: the
    /// open-files limit minus an eighth (at least 256) kept for etcd, logs and the like].
    #[arg(long, env = "LAINLET_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Connections kept for local callers (127.0.0.1, ::1, --ip) beyond what others may use,
    /// so `/healthz` and the node's own components get in during a flood.
    #[arg(
        long,
        env = "LAINLET_LOCAL_RESERVE",
        default_value_t = 64,
        value_name = "N"
    )]
    pub local_reserve: usize,

    /// Seconds a client has to send a whole request head once it started one (then `408`).
    #[arg(
        long,
        env = "LAINLET_HEADER_TIMEOUT",
        default_value_t = 10,
        value_name = "SECS"
    )]
    pub header_timeout: u64,

    /// Seconds a connection may wait for its next request before it is closed (watch streams
    /// are never idle).
    #[arg(
        long,
        env = "LAINLET_IDLE_TIMEOUT",
        default_value_t = 120,
        value_name = "SECS"
    )]
    pub idle_timeout: u64,

    /// Seconds of silence after which TCP keepalive probes check that a peer is still there.
    #[arg(
        long,
        env = "LAINLET_TCP_KEEPALIVE",
        default_value_t = 60,
        value_name = "SECS"
    )]
    pub tcp_keepalive: u64,

    /// etcd user name (etcd authentication).
    #[arg(
        long,
        env = "LAINLET_ETCD_USER",
        value_name = "USER",
        requires = "etcd_password"
    )]
    pub etcd_user: Option<String>,

    /// etcd password (etcd authentication).
    #[arg(
        long,
        env = "LAINLET_ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    pub etcd_password: Option<String>,

    /// Which etcd store to read: `v3`, `v2` (the keys API, `/v2/keys`: etcd 2.x, or etcd 3.x
    /// with `--enable-v2`), or `auto`: the one that holds keys under /lain/ (v2 if both do; if
    /// neither does yet, v2 when its API is served, checked again until one holds keys).
    #[arg(
        long,
        env = "LAINLET_ETCD_API",
        default_value = "auto",
        value_name = "auto|v2|v3",
        value_parser = parse_etcd_api
    )]
    pub etcd_api: lainlet_core::EtcdApi,

    /// Seconds between two checks of a provisional `--etcd-api auto` choice (made while
    /// neither store held keys, or one could not be asked).
    #[arg(
        long,
        env = "LAINLET_ETCD_API_RECHECK",
        default_value_t = 10,
        value_name = "SECS"
    )]
    pub etcd_api_recheck: u64,

    /// Seconds of change history kept for watches that resume (`rev=1`/`diff=1` with
    /// `Last-Event-ID` or `since`): a change is forgotten once it is older than this and more
    /// than `--history-revisions` revisions behind the newest.
    #[arg(
        long,
        env = "LAINLET_HISTORY_SECS",
        default_value_t = 300,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(0..=86_400)
    )]
    pub history_secs: u64,

    /// Revisions of change history kept for resuming watches (see `--history-secs`).
    #[arg(
        long,
        env = "LAINLET_HISTORY_REVISIONS",
        default_value_t = 10_000,
        value_name = "N",
        value_parser = clap::value_parser!(i64).range(0..=100_000_000)
    )]
    pub history_revisions: i64,

    /// The memory bound of that history: beyond this many changed keys the oldest are
    /// dropped whatever their age (a resume from before them gets a fresh `init`).
    #[arg(
        long,
        env = "LAINLET_HISTORY_MAX_ENTRIES",
        default_value_t = 200_000,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..=100_000_000)
    )]
    pub history_max_entries: u64,

    /// Seconds of silence on the etcd watch after which a linearizable read must show that
    /// the member still has a quorum (else another endpoint is tried and /healthz says
    /// `stale`); checked again as often while the watch stays silent.
    #[arg(
        long,
        env = "LAINLET_QUORUM_CHECK_AFTER",
        default_value_t = 10,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub quorum_check_after: u64,

    /// Seconds between two comparisons of lainlet's copy of /lain/ with a listing of etcd's
    /// keys and revisions (a difference is repaired by re-reading; each interval is drawn
    /// from 75–125 % of this); 0: never.
    #[arg(
        long,
        env = "LAINLET_DRIFT_CHECK_EVERY",
        default_value_t = 600,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(0..=604_800)
    )]
    pub drift_check_every: u64,

    /// Where lainlet keeps its state across restarts (the cache of /lain/, its revision, the
    /// store, etcd's cluster ID and the resume history): loaded at start and served at once
    /// (`/healthz` `stale` until etcd proves it continues that history, then only what changed
    /// is read), written atomically when it changed and at shutdown. The directory is created
    /// when missing; an unusable file is ignored with a log line. Empty: no state file.
    #[arg(
        long,
        env = "LAINLET_STATE_FILE",
        default_value = DEFAULT_STATE_FILE,
        value_name = "PATH"
    )]
    pub state_file: String,

    /// Seconds between two saves of a changed state to `--state-file` (and at shutdown).
    #[arg(
        long,
        env = "LAINLET_STATE_SAVE_EVERY",
        default_value_t = 30,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub state_save_every: u64,

    /// CA certificate (PEM) to verify etcd with; implies `https://` endpoints.
    #[arg(long, env = "LAINLET_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for etcd.
    #[arg(
        long,
        env = "LAINLET_ETCD_CERT",
        value_name = "FILE",
        requires = "etcd_key"
    )]
    pub etcd_cert: Option<std::path::PathBuf>,

    /// Client key (PEM) for etcd.
    #[arg(
        long,
        env = "LAINLET_ETCD_KEY",
        value_name = "FILE",
        requires = "etcd_cert"
    )]
    pub etcd_key: Option<std::path::PathBuf>,

    /// Announce this lainlet in etcd (the fleet): keep `/lain/lainlet/nodes/<hostname>` alive
    /// under a TTL (v3: a lease) with its version, store and applied revision, so `/fleet` on
    /// any node lists it; the key is removed at shutdown. Off by default (the original's
    /// command line changes nothing).
    #[arg(long, env = "LAINLET_ANNOUNCE", value_parser = FalseyValueParser::new())]
    pub announce: bool,

    /// Seconds between two fleet heartbeats (`--announce`); the key's TTL is three of them,
    /// at least 5 s, so a node that died leaves `/fleet` within that.
    #[arg(
        long,
        env = "LAINLET_ANNOUNCE_EVERY",
        default_value_t = 2,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=3_600)
    )]
    pub announce_every: u64,

    /// Print the version and exit.
    #[arg(short = 'v', long)]
    pub version: bool,

    /// gRPC listen address for the original's gRPC API: `host:port`, or `:port` for every
    /// interface; empty or absent: no gRPC. Only the `lainlet` binary serves gRPC.
    #[arg(long = "grpc.addr", env = "LAINLET_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<String>,

    /// Serve gRPC over TLS, with --grpc.key and --grpc.cert.
    #[arg(
        long = "grpc.TLS",
        env = "LAINLET_GRPC_TLS",
        value_parser = FalseyValueParser::new()
    )]
    pub grpc_tls: bool,

    /// The gRPC TLS private key (PEM file).
    #[arg(long = "grpc.key", env = "LAINLET_GRPC_KEY", value_name = "FILE")]
    pub grpc_key: Option<std::path::PathBuf>,

    /// The gRPC TLS certificate chain (PEM file).
    #[arg(long = "grpc.cert", env = "LAINLET_GRPC_CERT", value_name = "FILE")]
    pub grpc_cert: Option<std::path::PathBuf>,
}

/// What the original printed (and its exit status, -1) when neither `-web` nor `-grpc.addr`
/// was given (spec §6).
pub const NO_LISTENER: &str = "you should at least specify one of webAddr and grpcAddr.";

/// The gRPC service the command line asks for ([`Cli::grpc`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcSettings {
    /// `--grpc.addr` as given.
    pub addr: String,
    /// The addresses to try binding, in order (see [`Cli::listen_addrs`]).
    pub addrs: Vec<SocketAddr>,
    /// `--grpc.TLS`: the key and certificate files.
    pub tls: Option<TlsFiles>,
}

/// The PEM files of `--grpc.TLS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--grpc.key`.
    pub key: std::path::PathBuf,
    /// `--grpc.cert`.
    pub cert: std::path::PathBuf,
}

/// The kinds of long flag [`normalise`] knows, read from clap's own argument list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlagKind {
    /// Takes a value (`-web :9001`, `-web=:9001`).
    Value,
    /// A switch (`-debug`, and Go's `-debug=false`).
    Switch,
}

/// Every long name (and long alias) of `command`'s arguments, with whether it takes a value.
/// `--help` is clap's own and is included (the command is built first).
fn long_flags(command: &clap::Command) -> Vec<(String, FlagKind)> {
    let mut command = command.clone();
    command.build();
    let mut flags = Vec::new();
    for arg in command.get_arguments() {
        let kind = match arg.get_action().takes_values() {
            true => FlagKind::Value,
            false => FlagKind::Switch,
        };
        let names = arg
            .get_long()
            .into_iter()
            .chain(arg.get_all_aliases().unwrap_or_default());
        flags.extend(names.map(|name| (name.to_owned(), kind)));
    }
    flags
}

impl Cli {
    /// Parses the process's arguments (after [`normalise`]) for the binary `name` (shown in
    /// `--help` and errors); exits with clap's usage error (status 2) on bad flags.
    pub fn from_env(name: &'static str) -> Cli {
        let matches = Cli::command()
            .name(name)
            .get_matches_from(normalise(std::env::args_os()));
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let Err((status, message)) = cli.check_listeners() {
            eprintln!("{message}");
            std::process::exit(status);
        }
        cli
    }

    /// The original's rule that something must listen: with `--web` and `--grpc.addr` both
    /// empty, [`NO_LISTENER`] and exit status 255 (the original's -1). `--web` has a default,
    /// so this takes an explicit `--web ''`. HTTP cannot be switched off (`/healthz`, `/metrics`
    /// and the v2 API are always served), so an empty `--web` next to `--grpc.addr` is a usage
    /// error (status 2). `-v` is answered first.
    pub fn check_listeners(&self) -> Result<(), (i32, String)> {
        if self.version || !self.web.trim().is_empty() {
            return Ok(());
        }
        match self.grpc_addr() {
            None => Err((255, NO_LISTENER.to_owned())),
            Some(_) => Err((
                2,
                "--web cannot be empty: lainlet always serves HTTP (the v2 API, /healthz, \
                 /metrics) besides gRPC; give it an address, e.g. --web :9001"
                    .to_owned(),
            )),
        }
    }

    /// `--grpc.addr`, unless absent or empty (the original's "gRPC disabled").
    pub fn grpc_addr(&self) -> Option<&str> {
        self.grpc_addr
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
    }

    /// The user and password to authenticate to etcd with (`--etcd-user`,
    /// `--etcd-password`, which go together), if given.
    pub fn etcd_credentials(&self) -> Option<(String, String)> {
        self.etcd_user.clone().zip(self.etcd_password.clone())
    }

    /// Whether any gRPC flag is given (`--grpc.addr`, `--grpc.TLS`, `--grpc.key`,
    /// `--grpc.cert`): a shell without gRPC refuses them.
    pub fn grpc_requested(&self) -> bool {
        self.grpc_addr().is_some()
            || self.grpc_tls
            || self.grpc_key.is_some()
            || self.grpc_cert.is_some()
    }

    /// The gRPC service asked for: `None` without `--grpc.addr`; an error (to report with exit
    /// status 2) for a bad address or inconsistent TLS flags: `--grpc.TLS` needs both
    /// `--grpc.key` and `--grpc.cert`, which in turn mean nothing without `--grpc.TLS`, and
    /// none of them without `--grpc.addr`. (The original panicked on the first and ignored
    /// the others.) The files are not read here.
    pub fn grpc(&self) -> Result<Option<GrpcSettings>, String> {
        let Some(addr) = self.grpc_addr() else {
            return match self.grpc_tls || self.grpc_key.is_some() || self.grpc_cert.is_some() {
                true => Err("--grpc.TLS, --grpc.key and --grpc.cert need --grpc.addr \
                             (the gRPC listen address)"
                    .to_owned()),
                false => Ok(None),
            };
        };
        let addrs = listen_addrs_of("--grpc.addr", addr)?;
        let tls = match (self.grpc_tls, &self.grpc_key, &self.grpc_cert) {
            (true, Some(key), Some(cert)) => Some(TlsFiles {
                key: key.clone(),
                cert: cert.clone(),
            }),
            (true, key, cert) => {
                let missing: Vec<&str> = [
                    (key.is_none(), "--grpc.key"),
                    (cert.is_none(), "--grpc.cert"),
                ]
                .into_iter()
                .filter_map(|(missing, flag)| missing.then_some(flag))
                .collect();
                return Err(format!(
                    "--grpc.TLS needs --grpc.key FILE and --grpc.cert FILE (missing: {})",
                    missing.join(", ")
                ));
            }
            (false, None, None) => None,
            (false, _, _) => {
                return Err(
                    "--grpc.key and --grpc.cert are only used with --grpc.TLS: add \
                            --grpc.TLS to serve gRPC over TLS, or drop them"
                        .to_owned(),
                )
            }
        };
        Ok(Some(GrpcSettings {
            addr: addr.to_owned(),
            addrs,
            tls,
        }))
    }

    /// The etcd endpoints as URLs (empty in demo mode).
    pub fn etcd_endpoints(&self) -> Vec<String> {
        let scheme = if self.etcd_tls() { "https" } else { "http" };
        self.etcd
            .iter()
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| match e.contains("://") {
                true => e.to_owned(),
                false => format!("{scheme}://{e}"),
            })
            .collect()
    }

    /// The original's rule that `-etcd` is required (spec §6), unless `--demo`: the message to
    /// print, with the usage of binary `name`, before exiting with status 1.
    pub fn check_etcd(&self, name: &'static str) -> Result<(), String> {
        if self.demo || !self.etcd_endpoints().is_empty() {
            return Ok(());
        }
        let usage = Cli::command().name(name).render_usage();
        Err(format!(
            "{name}: -etcd is required: the etcd endpoints, comma-separated host:port \
             (e.g. -etcd=10.0.0.1:4001), or --demo to serve built-in demo data\n\n{usage}\n\n\
             For more information, try '--help'."
        ))
    }

    /// Whether TLS to etcd is configured.
    pub fn etcd_tls(&self) -> bool {
        self.etcd_ca.is_some() || self.etcd_cert.is_some()
    }

    /// The host name: `--hostname`, else the kernel's.
    pub fn hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        })
    }

    /// The engine settings these flags ask for (`-ip`, the host name, `-noauth`, the number of
    /// etcd endpoints), with a random back-off seed.
    pub fn engine_config(&self) -> lainlet_core::EngineConfig {
        lainlet_core::EngineConfig {
            node_ip: self.ip.clone(),
            hostname: self.hostname(),
            auth: !self.noauth,
            etcd_endpoints: self.etcd_endpoints().len().max(1),
            etcd_urls: self.etcd_endpoints(),
            etcd_api: self.etcd_api,
            store_reprobe: std::time::Duration::from_secs(self.etcd_api_recheck.max(1)),
            seed: random_seed(),
            history: lainlet_core::HistoryWindow {
                min_age: std::time::Duration::from_secs(self.history_secs),
                min_revisions: self.history_revisions,
                max_entries: usize::try_from(self.history_max_entries).unwrap_or(usize::MAX),
            },
            checks: lainlet_core::CheckPolicy {
                quorum_after: std::time::Duration::from_secs(self.quorum_check_after),
                drift_every: (self.drift_check_every > 0)
                    .then(|| std::time::Duration::from_secs(self.drift_check_every)),
                ..lainlet_core::CheckPolicy::default()
            },
            state_save_every: self
                .state_file()
                .filter(|_| !self.demo)
                .map(|_| std::time::Duration::from_secs(self.state_save_every)),
            ..lainlet_core::EngineConfig::default()
        }
    }

    /// The fleet heartbeat's settings for the shell `shell`, with `--announce` (not in demo
    /// mode: there is no etcd to announce in).
    pub fn announce_config(
        &self,
        shell: &str,
    ) -> Option<lainlet_core::fleet::announcer::AnnounceConfig> {
        (self.announce && !self.demo).then(|| lainlet_core::fleet::announcer::AnnounceConfig {
            every: std::time::Duration::from_secs(self.announce_every),
            shell: shell.to_owned(),
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    /// `--state-file`, unless empty (off).
    pub fn state_file(&self) -> Option<std::path::PathBuf> {
        let path = self.state_file.trim();
        (!path.is_empty()).then(|| std::path::PathBuf::from(path))
    }

    /// The connection rules these flags ask for, for a process allowed `open_files`
    /// descriptors.
    pub fn connection_policy(&self, open_files: u64) -> crate::conn::ConnectionPolicy {
        use std::time::Duration;
        crate::conn::ConnectionPolicy {
            max_connections: self
                .max_connections
                .unwrap_or_else(|| crate::conn::default_max_connections(open_files)),
            local_reserve: self.local_reserve,
            header_timeout: Duration::from_secs(self.header_timeout.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout.max(1)),
            keepalive: Duration::from_secs(self.tcp_keepalive.max(1)),
        }
    }

    /// The addresses to try binding, in order: `:port` means every interface (IPv6 dual-stack,
    /// else IPv4).
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        listen_addrs_of("--web", &self.web)
    }

    /// Binds the HTTP listener: the first of [`Cli::listen_addrs`] that works. The error says
    /// what could not be bound and why (`cannot listen on …`).
    pub fn bind(&self) -> Result<std::net::TcpListener, String> {
        let mut last = String::from("no address");
        for addr in self.listen_addrs()? {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => return Ok(l),
                Err(e) => last = format!("cannot listen on {addr} (--web {}): {e}", self.web),
            }
        }
        Err(last)
    }

    /// The URL to show for the demo (`:9001` → `http://127.0.0.1:9001`).
    pub fn demo_url(&self) -> String {
        match self.web.rsplit_once(':') {
            Some(("" | "0.0.0.0" | "[::]", port)) => format!("http://127.0.0.1:{port}"),
            _ => format!("http://{}", self.web),
        }
    }
}

/// The addresses to try binding for the value of `flag`: `:port` means every interface (IPv6
/// dual-stack, else IPv4); anything else is resolved.
fn listen_addrs_of(flag: &str, value: &str) -> Result<Vec<SocketAddr>, String> {
    let value = value.trim();
    if let Some(port) = value.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid {flag} address {value:?}: bad port"))?;
        return Ok(vec![
            SocketAddr::from(([0u16; 8], port)),
            SocketAddr::from(([0u8; 4], port)),
        ]);
    }
    std::net::ToSocketAddrs::to_socket_addrs(value)
        .map(Iterator::collect)
        .map_err(|e| format!("invalid {flag} address {value:?}: {e}"))
}

/// `--etcd-api`'s value.
fn parse_etcd_api(text: &str) -> Result<lainlet_core::EtcdApi, String> {
    lainlet_core::EtcdApi::parse(text).ok_or_else(|| format!("{text:?}: expected auto, v2 or v3"))
}

/// A seed that differs between processes and starts (clock and process id); not for
/// cryptography.
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Rewrites Go-style single-dash long flags to GNU style: `-web=:9001` → `--web=:9001`,
/// `-web :9001` → `--web :9001`, `-debug` → `--debug`, `-debug=false` → (nothing), `-help` →
/// `--help`. Which flags exist and which take a value is read from [`Cli`]'s clap command, so
/// every flag has both spellings. Short flags (`-v`, `-h`) and anything unknown stay as they
/// are (clap reports them); everything after `--` is left alone.
pub fn normalise(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    normalise_for(&Cli::command(), args)
}

/// [`normalise`] for the flags of `command`.
fn normalise_for(
    command: &clap::Command,
    args: impl IntoIterator<Item = OsString>,
) -> Vec<OsString> {
    let flags = long_flags(command);
    let kind_of = |name: &str| flags.iter().find(|(n, _)| n == name).map(|(_, k)| *k);
    let mut out = Vec::new();
    let mut rest = false;
    // The previous argument was a flag whose value is this one (`-web :9001`).
    let mut value_next = false;
    for arg in args {
        let Some(s) = arg
            .to_str()
            .filter(|_| !rest && !std::mem::take(&mut value_next))
        else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            rest = true;
            out.push(arg);
            continue;
        }
        let Some(flag) = s.strip_prefix('-').filter(|f| !f.starts_with('-')) else {
            // `--web :9001` takes its value from the next argument as well.
            let gnu = s.strip_prefix("--").filter(|f| !f.contains('='));
            value_next = gnu.and_then(kind_of) == Some(FlagKind::Value);
            out.push(arg);
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        match kind_of(name) {
            Some(FlagKind::Value) => {
                value_next = value.is_none();
                out.push(format!("-{s}").into());
            }
            // Go's bool flags take `-debug=false`; clap's switches take no value.
            Some(FlagKind::Switch) => match value.map(str::to_ascii_lowercase) {
                Some(v) if matches!(v.as_str(), "false" | "f" | "0") => {}
                _ => out.push(format!("--{name}").into()),
            },
            None => out.push(arg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalise(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn go_style_flags_become_gnu_style() {
        assert_eq!(
            norm(&[
                "lainlet",
                "-web=:9001",
                "-etcd",
                "a:1",
                "-ip=1.2.3.4",
                "-debug"
            ]),
            [
                "lainlet",
                "--web=:9001",
                "--etcd",
                "a:1",
                "--ip=1.2.3.4",
                "--debug"
            ]
        );
        assert_eq!(
            norm(&[
                "lainlet",
                "-debug=false",
                "-noauth=true",
                "-v",
                "-grpc.addr",
                ":1"
            ]),
            ["lainlet", "--noauth", "-v", "--grpc.addr", ":1"]
        );
        assert_eq!(
            norm(&["lainlet", "--web", ":1", "-x", "--", "-web"]),
            ["lainlet", "--web", ":1", "-x", "--", "-web"]
        );
    }

    /// A value clap accepts for `arg` where one is easy to name (else any text).
    fn sample_value(arg: &clap::Arg) -> String {
        if let Some(v) = arg.get_possible_values().first() {
            return v.get_name().to_owned();
        }
        let name = arg
            .get_value_names()
            .and_then(|n| n.first().map(|n| n.to_string()));
        match name.as_deref() {
            Some("SECS" | "N") => "5".to_owned(),
            Some("auto|v2|v3") => "v3".to_owned(),
            _ => "x".to_owned(),
        }
    }

    #[test]
    fn every_flag_takes_the_go_style_and_the_gnu_style_spellings() {
        let mut command = Cli::command();
        command.build();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue; // clap answers it by exiting
            }
            let takes_value = arg.get_action().takes_values();
            let value = sample_value(arg);
            let spellings: Vec<Vec<String>> = match takes_value {
                true => vec![
                    vec![format!("--{long}"), value.clone()],
                    vec![format!("--{long}={value}")],
                    vec![format!("-{long}={value}")],
                    vec![format!("-{long}"), value.clone()],
                ],
                false => vec![
                    vec![format!("--{long}")],
                    vec![format!("-{long}")],
                    vec![format!("-{long}=true")],
                ],
            };
            let parse = |spelling: &Vec<String>| {
                let args = std::iter::once("lainlet".to_owned()).chain(spelling.iter().cloned());
                let args = normalise(args.map(OsString::from));
                Cli::command().try_get_matches_from(args).map(|m| {
                    m.get_raw(arg.get_id().as_str())
                        .map(|v| v.map(|v| v.to_os_string()).collect::<Vec<_>>())
                })
            };
            let gnu = parse(&spellings[0]);
            for spelling in &spellings[1..] {
                let got = parse(spelling);
                match (&gnu, &got) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{spelling:?}"),
                    (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "{spelling:?}: {b}"),
                    _ => panic!("{spelling:?} parses as {got:?}, --{long} as {gnu:?}"),
                }
                if let Err(e) = &got {
                    assert_ne!(
                        e.kind(),
                        clap::error::ErrorKind::UnknownArgument,
                        "{spelling:?}: {e}"
                    );
                }
            }
            if !takes_value {
                let off = parse(&vec![format!("-{long}=false")]).unwrap();
                let absent = parse(&vec![]).unwrap();
                assert_eq!(off, absent, "-{long}=false leaves the switch off");
            }
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} flags walked");
    }

    #[test]
    fn a_value_that_looks_like_a_flag_stays_a_value() {
        assert_eq!(
            norm(&["lainlet", "-etcd-password", "-debug", "-web", ":1"]),
            ["lainlet", "--etcd-password", "-debug", "--web", ":1"]
        );
        assert_eq!(
            norm(&["lainlet", "--etcd-password", "-debug", "-noauth"]),
            ["lainlet", "--etcd-password", "-debug", "--noauth"]
        );
    }

    #[test]
    fn the_newer_flags_take_the_go_style_spelling() {
        let cli = parse(&[
            "lainlet",
            "-quorum-check-after=5",
            "-log-format=json",
            "-drift-check-every",
            "0",
            "-history-secs=7",
        ]);
        assert_eq!(cli.quorum_check_after, 5);
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(cli.drift_check_every, 0);
        assert_eq!(cli.history_secs, 7);
        assert!(parse(&["lainlet", "-demo"]).demo);
    }

    #[test]
    fn the_legacy_command_line_parses() {
        let cli = Cli::parse_from(normalise(
            [
                "lainlet",
                "-web=:9001",
                "-grpc.addr=:9002",
                "-etcd=10.0.0.1:4001,10.0.0.2:4001",
                "-ip=10.0.0.1",
                "-debug",
            ]
            .map(OsString::from),
        ));
        assert_eq!(cli.web, ":9001");
        assert_eq!(
            cli.etcd_endpoints(),
            ["http://10.0.0.1:4001", "http://10.0.0.2:4001"]
        );
        assert_eq!(cli.ip, "10.0.0.1");
        assert!(cli.debug && !cli.noauth);
        assert_eq!(cli.grpc_addr.as_deref(), Some(":9002"));
        assert_eq!(cli.listen_addrs().unwrap().len(), 2);
    }

    #[test]
    fn the_etcd_api_defaults_to_auto_and_takes_v2_or_v3_in_either_style() {
        use lainlet_core::{EtcdApi, Store};
        let base = ["lainlet", "-etcd=10.0.0.1:4001"];
        let cli = Cli::parse_from(normalise(base.map(OsString::from)));
        assert_eq!(
            cli.etcd_api,
            EtcdApi::Auto,
            "the original's command line detects"
        );
        assert_eq!(cli.engine_config().etcd_api, EtcdApi::Auto);
        let with = |flag: &str| {
            let args = base.iter().copied().chain([flag]).map(OsString::from);
            Cli::try_parse_from(normalise(args)).map(|c| c.etcd_api)
        };
        assert_eq!(with("-etcd-api=v2").unwrap(), EtcdApi::Only(Store::V2));
        assert_eq!(with("--etcd-api=V3").unwrap(), EtcdApi::Only(Store::V3));
        assert!(with("--etcd-api=v4").is_err());
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::parse_from(normalise(args.iter().map(OsString::from)))
    }

    #[test]
    fn the_grpc_flags_parse_go_style() {
        let cli = parse(&[
            "lainlet",
            "-grpc.addr=:9000",
            "-grpc.TLS",
            "-grpc.key",
            "/k.pem",
            "-grpc.cert=/c.pem",
        ]);
        let grpc = cli.grpc().unwrap().unwrap();
        assert_eq!(grpc.addr, ":9000");
        assert_eq!(grpc.addrs.len(), 2);
        assert_eq!(grpc.addrs[1], SocketAddr::from(([0u8; 4], 9000)));
        assert_eq!(
            grpc.tls,
            Some(TlsFiles {
                key: "/k.pem".into(),
                cert: "/c.pem".into()
            })
        );
        let tls_true = parse(&[
            "lainlet",
            "-grpc.addr=:9000",
            "-grpc.TLS=true",
            "-grpc.key=/k",
            "-grpc.cert=/c",
        ]);
        assert!(tls_true.grpc().unwrap().unwrap().tls.is_some());
        let tls_false = parse(&["lainlet", "-grpc.addr=127.0.0.1:9000", "-grpc.TLS=false"]);
        let plain = tls_false.grpc().unwrap().unwrap();
        assert_eq!(plain.tls, None);
        assert_eq!(plain.addrs, [SocketAddr::from(([127, 0, 0, 1], 9000))]);
    }

    #[test]
    fn grpc_alone_keeps_the_default_web_address() {
        let cli = parse(&["lainlet", "-grpc.addr=:9000"]);
        assert_eq!(cli.web, DEFAULT_WEB);
        assert_eq!(cli.check_listeners(), Ok(()));
        assert!(cli.grpc_requested());
        assert!(cli.grpc().unwrap().is_some());
    }

    #[test]
    fn without_grpc_addr_there_is_no_grpc() {
        for args in [
            &["lainlet"][..],
            &["lainlet", "-grpc.addr="],
            &["lainlet", "--grpc.addr", " "],
        ] {
            let cli = parse(args);
            assert_eq!(cli.grpc(), Ok(None), "{args:?}");
            assert!(!cli.grpc_requested(), "{args:?}");
        }
    }

    #[test]
    fn inconsistent_grpc_tls_flags_are_refused() {
        let err = |args: &[&str]| parse(args).grpc().unwrap_err();
        assert!(err(&["lainlet", "-grpc.addr=:1", "-grpc.TLS"])
            .contains("missing: --grpc.key, --grpc.cert"));
        assert!(
            err(&["lainlet", "-grpc.addr=:1", "-grpc.TLS", "-grpc.key=k"])
                .contains("missing: --grpc.cert")
        );
        assert!(
            err(&["lainlet", "-grpc.addr=:1", "-grpc.cert=c", "-grpc.key=k"])
                .contains("only used with --grpc.TLS")
        );
        assert!(
            err(&["lainlet", "-grpc.TLS", "-grpc.cert=c", "-grpc.key=k"])
                .contains("need --grpc.addr")
        );
        assert!(err(&["lainlet", "-grpc.addr=:x"]).contains("invalid --grpc.addr"));
        assert!(parse(&["lainlet", "-grpc.key=k"]).grpc_requested());
    }

    #[test]
    fn the_state_file_is_on_by_default_and_an_empty_path_turns_it_off() {
        let cli = parse(&["lainlet", "-etcd=10.0.0.1:4001"]);
        assert_eq!(
            cli.state_file().as_deref(),
            Some(std::path::Path::new(DEFAULT_STATE_FILE))
        );
        assert_eq!(
            cli.engine_config().state_save_every,
            Some(std::time::Duration::from_secs(30))
        );
        let off = parse(&["lainlet", "-etcd=10.0.0.1:4001", "-state-file="]);
        assert_eq!(off.state_file(), None);
        assert_eq!(off.engine_config().state_save_every, None);
        let moved = parse(&["lainlet", "--state-file", "/tmp/s", "-state-save-every=5"]);
        assert_eq!(
            moved.state_file().as_deref(),
            Some(std::path::Path::new("/tmp/s"))
        );
        assert_eq!(
            moved.engine_config().state_save_every,
            Some(std::time::Duration::from_secs(5))
        );
        let demo = parse(&["lainlet", "--demo"]);
        assert_eq!(demo.engine_config().state_save_every, None, "demo: never");
    }

    #[test]
    fn an_empty_web_follows_the_originals_listener_rule() {
        assert_eq!(
            parse(&["lainlet", "-web="]).check_listeners(),
            Err((255, NO_LISTENER.to_owned()))
        );
        let (status, message) = parse(&["lainlet", "-web=", "-grpc.addr=:9000"])
            .check_listeners()
            .unwrap_err();
        assert_eq!(status, 2);
        assert!(message.contains("--web cannot be empty"), "{message}");
        // -v is answered first.
        assert_eq!(parse(&["lainlet", "-web=", "-v"]).check_listeners(), Ok(()));
    }
}
