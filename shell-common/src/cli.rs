//! Command line and environment (spec §6).
//!
//! Modern flags are GNU style (`--web :9001`); the original's Go-style single-dash flags
//! (`-web :9001`, `-web=:9001`, `-debug`, `-debug=false`, `-v`, `-grpc.addr X`) are rewritten
//! to them by [`normalise`] before clap parses, so existing deployment scripts keep working.
//! Every setting can also come from a `LAINLET_*` environment variable. Both shells take the
//! same command line; only the tokio shell has the TLS flags (feature `tls`).

use std::ffi::OsString;
use std::net::SocketAddr;

use clap::builder::FalseyValueParser;
use clap::{CommandFactory, FromArgMatches, Parser};

/// The port LAIN clients reach lainlet on; the default of `--web`.
pub const DEFAULT_WEB: &str = ":9001";

/// lainlet: one etcd watch per node, the cluster state served to the node's components over
/// the lainlet v2 HTTP API (GET and Server-Sent Events).
///
/// Without `--etcd` it serves a built-in demo data set.
#[derive(Parser, Debug, Clone)]
#[command(name = "lainlet", disable_version_flag = true)]
pub struct Cli {
    /// HTTP listen address: `host:port`, or `:port` for every interface.
    #[arg(long, env = "LAINLET_WEB", default_value = DEFAULT_WEB, value_name = "ADDR")]
    pub web: String,

    /// etcd endpoints, comma-separated `host:port` (`http://` is added when no scheme is
    /// given). Without it, lainlet serves built-in demo data.
    #[arg(long, env = "LAINLET_ETCD", value_name = "ENDPOINTS")]
    pub etcd: Option<String>,

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

    /// Disable authorisation: every caller is treated as a super app.
    #[arg(long, env = "LAINLET_NOAUTH", value_parser = FalseyValueParser::new())]
    pub noauth: bool,

    /// Most open HTTP connections; further ones are answered `503` and closed.
    #[arg(
        long,
        env = "LAINLET_MAX_CONNECTIONS",
        default_value_t = 20_000,
        value_name = "N"
    )]
    pub max_connections: usize,

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

    /// CA certificate (PEM) to verify etcd with; implies `https://` endpoints.
    #[cfg(feature = "tls")]
    #[arg(long, env = "LAINLET_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for etcd.
    #[cfg(feature = "tls")]
    #[arg(
        long,
        env = "LAINLET_ETCD_CERT",
        value_name = "FILE",
        requires = "etcd_key"
    )]
    pub etcd_cert: Option<std::path::PathBuf>,

    /// Client key (PEM) for etcd.
    #[cfg(feature = "tls")]
    #[arg(
        long,
        env = "LAINLET_ETCD_KEY",
        value_name = "FILE",
        requires = "etcd_cert"
    )]
    pub etcd_key: Option<std::path::PathBuf>,

    /// Print the version and exit.
    #[arg(short = 'v', long)]
    pub version: bool,

    /// The original's gRPC listen address: accepted, but gRPC is not implemented.
    #[arg(long = "grpc.addr", value_name = "ADDR", hide = true)]
    pub grpc_addr: Option<String>,
}

/// Flags that take a value, by their long name.
const VALUE_FLAGS: &[&str] = &[
    "web",
    "etcd",
    "ip",
    "hostname",
    "max-connections",
    "etcd-user",
    "etcd-password",
    "etcd-ca",
    "etcd-cert",
    "etcd-key",
    "grpc.addr",
];

/// Boolean flags, by their long name.
const BOOL_FLAGS: &[&str] = &["debug", "noauth", "help", "version"];

impl Cli {
    /// Parses the process's arguments (after [`normalise`]) for the binary `name` (shown in
    /// `--help` and errors); exits with clap's usage error (status 2) on bad flags.
    pub fn from_env(name: &'static str) -> Cli {
        let matches = Cli::command()
            .name(name)
            .get_matches_from(normalise(std::env::args_os()));
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
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

    /// Whether TLS to etcd is configured.
    pub fn etcd_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.etcd_ca.is_some() || self.etcd_cert.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
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
            seed: random_seed(),
            ..lainlet_core::EngineConfig::default()
        }
    }

    /// The addresses to try binding, in order: `:port` means every interface (IPv6 dual-stack,
    /// else IPv4).
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        let web = self.web.trim();
        if let Some(port) = web.strip_prefix(':') {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("invalid --web address {web:?}: bad port"))?;
            return Ok(vec![
                SocketAddr::from(([0u16; 8], port)),
                SocketAddr::from(([0u8; 4], port)),
            ]);
        }
        std::net::ToSocketAddrs::to_socket_addrs(web)
            .map(Iterator::collect)
            .map_err(|e| format!("invalid --web address {web:?}: {e}"))
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

/// A seed that differs between processes and starts (clock and process id); not for
/// cryptography.
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Rewrites Go-style single-dash long flags to GNU style: `-web=:9001` → `--web=:9001`,
/// `-debug` → `--debug`, `-debug=false` → (nothing), `-help` → `--help`. Short `-v` and `-h`
/// stay. Everything after `--` is left alone.
pub fn normalise(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest = false;
    for arg in args {
        let Some(s) = arg.to_str().filter(|_| !rest) else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            rest = true;
            out.push(arg);
            continue;
        }
        let Some(flag) = s.strip_prefix('-').filter(|f| !f.starts_with('-')) else {
            out.push(arg);
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        if VALUE_FLAGS.contains(&name) {
            out.push(format!("-{s}").into());
        } else if BOOL_FLAGS.contains(&name) {
            // Go's bool flags take `-debug=false`; clap's switches take no value.
            match value.map(|v| v.to_ascii_lowercase()) {
                Some(v) if matches!(v.as_str(), "false" | "f" | "0") => {}
                _ => out.push(format!("--{name}").into()),
            }
        } else {
            out.push(arg);
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
}
