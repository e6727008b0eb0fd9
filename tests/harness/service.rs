//! Launching the service binaries under test, and running one test against each of them.
//!
//! Binaries are located, per [`ServiceKind`], at the path in its environment override
//! (`LAINLET_TEST_BIN` for `lainlet`, `LAINLET_TEST_BIN_SMOL` for `lainlet-smol`), else next to
//! the running test executable's profile dir (`target/<profile>/<name>`, found from
//! `current_exe`), else `<workspace>/target/debug/<name>`. `cargo test -p lainlet-tests` does
//! **not** build them: run `cargo build --workspace --bins` first.
//!
//! Which kinds a conformance test runs against: the comma-separated names in
//! `LAINLET_TEST_KINDS` (each must exist, else the test fails), or by default every kind whose
//! binary exists (the others are skipped with a note; if none exists the test fails).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::cluster::EtcdCluster;
use super::etcd::EtcdServer;
use super::http::{HttpClient, HttpResponse};
use super::sse::SseStream;
use super::store::Store;
use super::util::{
    free_addr, kill_and_reap, log_tail, print_log_tail, read_log, signal_child, wait_child,
    wait_for, TempDir,
};

/// Environment variable selecting the service kinds to test, e.g. `lainlet,lainlet-smol`.
pub const KINDS_ENV: &str = "LAINLET_TEST_KINDS";

/// Default time [`ServiceCommand::start`] waits for `GET /healthz` to answer 200.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One implementation of the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// The production shell: binary `lainlet` of package `lainlet-tokio`.
    Tokio,
    /// The smol shell: binary `lainlet-smol` of package `lainlet-smol`.
    Smol,
}

impl ServiceKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ServiceKind; 2] = [ServiceKind::Tokio, ServiceKind::Smol];

    /// The binary's file name.
    pub fn bin_name(self) -> &'static str {
        match self {
            ServiceKind::Tokio => "lainlet",
            ServiceKind::Smol => "lainlet-smol",
        }
    }

    /// The cargo package that builds the binary.
    pub fn package(self) -> &'static str {
        match self {
            ServiceKind::Tokio => "lainlet-tokio",
            ServiceKind::Smol => "lainlet-smol",
        }
    }

    /// The environment variable that overrides the binary's path.
    pub fn bin_env(self) -> &'static str {
        match self {
            ServiceKind::Tokio => "LAINLET_TEST_BIN",
            ServiceKind::Smol => "LAINLET_TEST_BIN_SMOL",
        }
    }

    /// The kind whose [`ServiceKind::bin_name`] is `name`.
    pub fn from_name(name: &str) -> Option<ServiceKind> {
        ServiceKind::ALL.into_iter().find(|k| k.bin_name() == name)
    }

    /// The binary's path (see the module docs for the search order), or an error that says how
    /// to build it.
    pub fn binary(self) -> io::Result<PathBuf> {
        if let Some(p) = std::env::var_os(self.bin_env()).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            return match p.is_file() {
                true => Ok(p),
                false => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}={} is not a file", self.bin_env(), p.display()),
                )),
            };
        }
        let from_exe = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()));
        let mut candidates: Vec<PathBuf> = from_exe
            .into_iter()
            .chain([workspace_root().join("target").join("debug")])
            .map(|dir| dir.join(self.bin_name()))
            .collect();
        candidates.dedup();
        if let Some(found) = candidates.iter().find(|p| p.is_file()) {
            self.check_fresh(found)?;
        }
        candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "service binary `{}` not found (looked at {:?}); build it with \
                     `cargo build -p {} --bin {}` or set {}",
                        self.bin_name(),
                        candidates,
                        self.package(),
                        self.bin_name(),
                        self.bin_env()
                    ),
                )
            })
    }

    /// An error when the built binary at `path` is older than one of the source files cargo
    /// built it from (its dep-info, `<binary>.d`): `cargo test -p lainlet-tests` builds the
    /// tests, not the binaries they start, and a stale binary makes a test fail (or pass) for
    /// code that is no longer there.
    fn check_fresh(self, path: &Path) -> io::Result<()> {
        let built = std::fs::metadata(path)?.modified()?;
        let Ok(dep_info) = std::fs::read_to_string(path.with_extension("d")) else {
            return Ok(());
        };
        let sources = dep_info
            .split_once(": ")
            .map_or("", |(_, deps)| deps)
            .split_whitespace();
        let newer = sources.map(PathBuf::from).find(|source| {
            std::fs::metadata(source)
                .and_then(|m| m.modified())
                .is_ok_and(|at| at > built)
        });
        match newer {
            Some(source) => Err(io::Error::other(format!(
                "{} is older than {}, which it is built from: build it with \
                 `cargo build -p {} --bin {}` (scripts/test.sh does)",
                path.display(),
                source.display(),
                self.package(),
                self.bin_name()
            ))),
            None => Ok(()),
        }
    }

    /// The kinds conformance tests run against (see the module docs). Panics on an unknown name
    /// in `LAINLET_TEST_KINDS`.
    pub fn selected() -> Vec<ServiceKind> {
        match std::env::var(KINDS_ENV) {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|name| {
                    ServiceKind::from_name(name).unwrap_or_else(|| {
                        panic!("{KINDS_ENV}: unknown service {name:?} (lainlet, lainlet-smol)")
                    })
                })
                .collect(),
            _ => ServiceKind::ALL
                .into_iter()
                .filter(|k| k.binary().is_ok())
                .collect(),
        }
    }
}

/// The workspace root (the parent of this crate's manifest dir).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs `body(kind)` if `kind` is selected (see the module docs); otherwise prints a skip note.
/// Panics if no kind is selected at all, or a selected kind's binary is missing.
pub fn run_for_kind(kind: ServiceKind, body: impl FnOnce(ServiceKind)) {
    let selected = ServiceKind::selected();
    if selected.is_empty() {
        let why = kind
            .binary()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        panic!("no service binary available to test: {why}");
    }
    if !selected.contains(&kind) {
        eprintln!(
            "[harness] skipping {}: not selected or not built",
            kind.bin_name()
        );
        return;
    }
    if let Err(e) = kind.binary() {
        panic!("{e}");
    }
    body(kind)
}

/// Defines a test that runs once per [`ServiceKind`]: a module `name` with one `#[test]` per
/// binary (`name::lainlet`, `name::lainlet_smol`), each going through
/// [`run_for_kind`](crate::run_for_kind). Attributes (e.g. `#[ignore]`) apply to both tests.
///
/// ```ignore
/// conformance_test!(fn healthz_is_ok(kind) {
///     let etcd = EtcdServer::new().unwrap();
///     let svc = Service::command(kind).web_auto().etcd(&etcd).start().unwrap();
///     assert_eq!(svc.get("/healthz").status, 200);
/// });
/// ```
#[macro_export]
macro_rules! conformance_test {
    ($(#[$meta:meta])* fn $name:ident($kind:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($kind: $crate::ServiceKind) $body

            $(#[$meta])*
            #[test]
            fn lainlet() {
                $crate::run_for_kind($crate::ServiceKind::Tokio, body)
            }

            $(#[$meta])*
            #[test]
            fn lainlet_smol() {
                $crate::run_for_kind($crate::ServiceKind::Smol, body)
            }
        }
    };
}

/// How to launch a service: binary, arguments, environment. Build with [`Service::command`].
#[derive(Clone, Debug)]
pub struct ServiceCommand {
    kind: Option<ServiceKind>,
    bin: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ready_timeout: Duration,
    open_files: Option<u64>,
}

impl ServiceCommand {
    /// Runs the process with its open-files limit (soft and hard) at `n` (through util-linux's
    /// `prlimit`, which execs the binary: the process id stays the service's).
    pub fn open_files(mut self, n: u64) -> ServiceCommand {
        self.open_files = Some(n);
        self
    }

    /// Uses the binary at `path` instead of the kind's (for stand-ins and one-off builds).
    pub fn bin(mut self, path: impl Into<PathBuf>) -> ServiceCommand {
        self.bin = Some(path.into());
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> ServiceCommand {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> ServiceCommand {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends `--web 127.0.0.1:<free port>`.
    pub fn web_auto(self) -> ServiceCommand {
        let addr = free_addr();
        self.args(["--web".to_owned(), addr])
    }

    /// Appends `--etcd <endpoint>` for `etcd` (under `LAINLET_TEST_ETCD_TLS=1`, its TLS
    /// endpoint and the TLS flags: [`EtcdServer::service_flags`]).
    pub fn etcd(self, etcd: &EtcdServer) -> ServiceCommand {
        self.args(etcd.service_flags())
    }

    /// Appends `--etcd <every member's endpoint, comma-separated>` for `cluster`.
    pub fn etcd_cluster(self, cluster: &EtcdCluster) -> ServiceCommand {
        self.args(["--etcd".to_owned(), cluster.endpoints()])
    }

    /// Appends `--etcd-api <store>` (`v2` or `v3`): the service reads that store without
    /// detecting (leave it out to test the detection, `--etcd-api auto`).
    pub fn etcd_api(self, store: Store) -> ServiceCommand {
        self.args(["--etcd-api", store.name()])
    }

    /// Sets an environment variable for the process (the rest is inherited;
    /// `RUST_BACKTRACE=1` is set unless overridden).
    pub fn env(mut self, key: &str, value: &str) -> ServiceCommand {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// How long [`ServiceCommand::start`] waits for readiness (default 20 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> ServiceCommand {
        self.ready_timeout = timeout;
        self
    }

    /// Launches the process without waiting for anything (e.g. to test flag errors with
    /// [`Service::wait_exit`], or start-up before etcd is reachable).
    pub fn spawn(self) -> io::Result<Service> {
        let bin = match (&self.bin, self.kind) {
            (Some(p), _) => p.clone(),
            (None, Some(kind)) => kind.binary()?,
            (None, None) => return Err(io::Error::other("ServiceCommand without a binary")),
        };
        let mut svc = Service {
            web: web_addr(&self.args),
            cmd: self,
            bin,
            dir: TempDir::new("service")?,
            child: None,
            starts: 0,
        };
        svc.spawn()?;
        Ok(svc)
    }

    /// Launches the process and waits until `GET /healthz` answers 200.
    pub fn start(self) -> io::Result<Service> {
        let timeout = self.ready_timeout;
        let mut svc = self.spawn()?;
        svc.wait_healthy(timeout)?;
        Ok(svc)
    }
}

/// A running service process with its log, killed on drop (printing its log tail when the
/// owning test panics).
#[derive(Debug)]
pub struct Service {
    cmd: ServiceCommand,
    bin: PathBuf,
    web: Option<String>,
    dir: TempDir,
    child: Option<Child>,
    starts: u32,
}

impl Service {
    /// A launcher for `kind`'s binary with no arguments yet.
    pub fn command(kind: ServiceKind) -> ServiceCommand {
        ServiceCommand {
            kind: Some(kind),
            bin: None,
            args: Vec::new(),
            env: Vec::new(),
            ready_timeout: READY_TIMEOUT,
            open_files: None,
        }
    }

    /// Launches `kind` with exactly `args` (any flag style: `--web A`, `-web=A`, …) and waits
    /// until `GET /healthz` answers 200.
    pub fn start(kind: ServiceKind, args: Vec<String>) -> io::Result<Service> {
        Service::command(kind).args(args).start()
    }

    /// The kind launched, if it was launched by kind.
    pub fn kind(&self) -> Option<ServiceKind> {
        self.cmd.kind
    }

    /// The binary's path.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The arguments it was launched with.
    pub fn args(&self) -> &[String] {
        &self.cmd.args
    }

    /// The HTTP address to connect to, from the `web` flag (`:P` and `0.0.0.0:P` become
    /// `127.0.0.1:P`). Panics if the arguments have no `web` flag.
    pub fn addr(&self) -> &str {
        self.web
            .as_deref()
            .expect("service launched without a web flag")
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `GET path` from 127.0.0.1; panics on I/O errors.
    pub fn get(&self, path_and_query: &str) -> HttpResponse {
        self.get_with(&HttpClient::new(), path_and_query)
    }

    /// `GET path` from source address `ip` (e.g. `"127.0.0.5"`); panics on I/O errors.
    pub fn get_from(&self, ip: &str, path_and_query: &str) -> HttpResponse {
        self.get_with(&HttpClient::from_ip(ip), path_and_query)
    }

    /// `GET path` with `client`; panics on I/O errors.
    pub fn get_with(&self, client: &HttpClient, path_and_query: &str) -> HttpResponse {
        client
            .get(self.addr(), path_and_query)
            .unwrap_or_else(|e| panic!("GET {path_and_query} on {}: {e}", self.addr()))
    }

    /// Opens a watch (`path` should carry `watch=1`) from 127.0.0.1; panics on I/O errors.
    pub fn watch(&self, path_and_query: &str) -> SseStream {
        self.watch_with(&HttpClient::new(), path_and_query)
    }

    /// Opens a watch from source address `ip`; panics on I/O errors.
    pub fn watch_from(&self, ip: &str, path_and_query: &str) -> SseStream {
        self.watch_with(&HttpClient::from_ip(ip), path_and_query)
    }

    /// Opens a watch with `client`; panics on I/O errors.
    pub fn watch_with(&self, client: &HttpClient, path_and_query: &str) -> SseStream {
        client
            .sse(self.addr(), path_and_query)
            .unwrap_or_else(|e| panic!("watch {path_and_query} on {}: {e}", self.addr()))
    }

    /// Waits until the web port accepts TCP connections.
    pub fn wait_listening(&mut self, timeout: Duration) -> io::Result<()> {
        let addr = self.addr().to_owned();
        self.wait_ready(timeout, "accepting connections", || {
            TcpStream::connect(&addr).is_ok()
        })
    }

    /// Waits until `GET /healthz` answers 200 (the service is ready after its first snapshot).
    pub fn wait_healthy(&mut self, timeout: Duration) -> io::Result<()> {
        let addr = self.addr().to_owned();
        let probe = HttpClient::new().timeout(Duration::from_millis(500));
        self.wait_ready(timeout, "answering GET /healthz with 200", || {
            probe.get(&addr, "/healthz").is_ok_and(|r| r.status == 200)
        })
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `timeout` for the process to exit on its own; its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(self.child.as_mut()?, timeout)
    }

    /// Sends signal `sig` (e.g. `libc::SIGINT`) to the process.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        match &self.child {
            Some(c) => signal_child(c, sig),
            None => Err(io::Error::other("service not running")),
        }
    }

    /// Kills (SIGKILL) and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    /// Kills the process and launches it again with the same arguments (same port); waits
    /// for readiness.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_healthy(self.cmd.ready_timeout)
    }

    /// The file receiving the process's stdout and stderr (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("service.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// Prints the last 16 KiB of the log to stderr.
    pub fn print_log(&self) {
        let title = format!("service log ({})", self.bin.display());
        print_log_tail(&title, "service", &self.log_path(), 16 * 1024);
    }

    fn spawn(&mut self) -> io::Result<()> {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(
            log,
            "===== harness: start #{}: {} {:?} =====",
            self.starts,
            self.bin.display(),
            self.cmd.args
        )?;
        let mut cmd = match self.cmd.open_files {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        // Many services run in parallel: none shares the default state file
        // (/var/lib/lainlet/state); a test that wants one sets LAINLET_STATE_FILE or passes
        // --state-file.
        cmd.args(&self.cmd.args)
            .env("RUST_BACKTRACE", "1")
            .env("LAINLET_STATE_FILE", "");
        cmd.envs(self.cmd.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::try_clone(&log)?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawn {}: {e}", self.bin.display())))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(
        &mut self,
        timeout: Duration,
        what: &str,
        mut ready: impl FnMut() -> bool,
    ) -> io::Result<()> {
        let mut exited = None;
        let ok = wait_for(timeout, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                exited = Some(status);
                return Some(false);
            }
            ready().then_some(true)
        });
        match (ok, exited) {
            (Some(true), _) => Ok(()),
            (_, status) => {
                let state = match status {
                    Some(s) => format!("exited ({s})"),
                    None => format!("not {what} after {timeout:?}"),
                };
                Err(io::Error::other(format!(
                    "{} {:?} on {}: {state}; log tail:\n{}",
                    self.bin.display(),
                    self.cmd.args,
                    self.web.as_deref().unwrap_or("?"),
                    log_tail(&self.log_path(), 4096)
                )))
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.print_log();
        }
    }
}

/// The address to connect to, from a `--web A` / `-web A` / `--web=A` / `-web=A` argument.
fn web_addr(args: &[String]) -> Option<String> {
    let mut value = None;
    for (i, a) in args.iter().enumerate() {
        if a == "--web" || a == "-web" {
            value = args.get(i + 1).cloned();
        } else if let Some(v) = a.strip_prefix("--web=").or_else(|| a.strip_prefix("-web=")) {
            value = Some(v.to_owned());
        }
    }
    let v = value?;
    Some(match v.rsplit_once(':') {
        Some(("", port)) | Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        _ => v,
    })
}

#[cfg(test)]
mod tests {
    use super::web_addr;

    fn addr(args: &[&str]) -> Option<String> {
        web_addr(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn web_flag_forms() {
        assert_eq!(
            addr(&["--web", "127.0.0.1:9"]).as_deref(),
            Some("127.0.0.1:9")
        );
        assert_eq!(
            addr(&["-etcd=x", "-web=:9001"]).as_deref(),
            Some("127.0.0.1:9001")
        );
        assert_eq!(addr(&["-web", "0.0.0.0:7"]).as_deref(), Some("127.0.0.1:7"));
        assert_eq!(addr(&["--web=127.0.0.3:5"]).as_deref(), Some("127.0.0.3:5"));
        assert_eq!(addr(&["--etcd", "127.0.0.1:2379"]), None);
    }
}
