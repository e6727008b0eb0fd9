//! A throw-away single-member etcd (Debian `etcd-server`, 3.4) on free loopback ports, driven
//! through its v3 JSON gateway (`POST /v3/kv/{put,range,deleterange,txn,compaction}`, keys and
//! values base64) and its **v2 keys API** (`/v2/keys/...`) with the harness's own HTTP client.
//!
//! etcd always runs with `--enable-v2=true`: real LAIN clusters keep their data in the v2 store
//! (spec §1.1), which etcd 3.4 keeps **separate** from the v3 store: keys written with
//! [`EtcdServer::v2_put`] are invisible to [`EtcdServer::get`] and vice versa, and the v2 index
//! ([`EtcdServer::v2_index`], a node's `modifiedIndex`) counts independently of the v3
//! revision. v2 writes are form-encoded (`PUT /v2/keys/<key>` with `value=<percent-encoded>`);
//! **v2 values are strings, so they must be UTF-8** (the helpers refuse other bytes). The v2
//! store is a tree: reads flatten it to leaves, and a recursive directory delete is one event.
//! [`EtcdServer::with_store`] gives one writer for either store.
//!
//! **Setups** ([`EtcdSetup`]): [`EtcdServer::new`] starts the setup of the running thread
//! ([`EtcdSetup::current`]: 3.4 unless a store conformance test chose another). On
//! [`EtcdSetup::Etcd2`] the member is etcd **2.3.7** (v2 only, etcd 2.x flags, no v3 gateway:
//! v3 helpers fail with a message saying so); on [`EtcdSetup::Etcd2Proxy`] a 2.3.7 proxy runs in
//! front of it ([`EtcdProxy`]): [`EtcdServer::endpoint`] is then the **proxy's** (what the
//! service connects to) while every helper of the harness talks to the member
//! ([`EtcdServer::member_endpoint`]). Member and proxy stop, start, pause and resume
//! independently ([`EtcdServer::proxy_mut`]). Readiness is the member's `/health` answering
//! `true` (verified on 2.3.7: it waits for raft progress, ~0.5 s per probe, so the probe allows
//! 2 s), then the proxy's `/health` (forwarded to the member) the same.
//!
//! **Backups**: [`EtcdServer::copy_data_dir`] / [`EtcdServer::restore_data_dir`] copy the data
//! directory of a stopped etcd (an operator's backup and restore: same cluster ID, the index
//! goes back); [`EtcdServer::snapshot_save`] / [`EtcdServer::snapshot_restore`] use 3.4's
//! `etcdctl snapshot save|restore` (a new cluster ID).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::EtcdClient;
use super::http::{HttpClient, HttpResponse};
use super::kv::{self, EtcdApi};
use super::proxy::EtcdProxy;
use super::setup::EtcdSetup;
use super::util::{
    copy_dir, free_port, kill_and_reap, log_tail, print_log_tail, read_log, signal_child,
    wait_child, TempDir,
};

/// Environment variable naming the etcd binary to use (default: `etcd` on `PATH`, then
/// `/usr/bin/etcd`).
pub const ETCD_ENV: &str = "LAINLET_TEST_ETCD";

/// Environment variable that runs the suite over TLS: with `1`, every etcd 3.4 that
/// [`EtcdServer::new`] or [`EtcdServer::with_args`] starts requires client certificates on a
/// TLS address, and [`ServiceCommand::etcd`](super::service::ServiceCommand::etcd) points the
/// service there with `--etcd-ca`, `--etcd-cert` and `--etcd-key`.
pub const ETCD_TLS_ENV: &str = "LAINLET_TEST_ETCD_TLS";

/// How long [`EtcdServer::start`] waits for `/health` to report healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The member's name (`--name`, and in `--initial-cluster`).
const MEMBER_NAME: &str = "t";

/// A running etcd with its own data dir and log, killed and deleted on drop.
///
/// The key-value helpers (`put`, `get_prefix`, `v2_put`, …) are the [`EtcdClient`] trait's: they
/// panic with etcd's answer on failure, so test bodies stay short; use
/// [`EtcdClient::gateway`] to observe errors. When the owning test panics, the tail of etcd's
/// log is printed.
#[derive(Debug)]
pub struct EtcdServer {
    setup: EtcdSetup,
    proxy: Option<EtcdProxy>,
    bin: PathBuf,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    extra_args: Vec<String>,
    /// A second client port that speaks TLS (see [`EtcdServer::with_tls`]).
    tls_port: Option<u16>,
    /// Under [`ETCD_TLS_ENV`]: the certificates, and the CA and client certificate the
    /// service is given.
    tls_client: Option<(
        super::pki::TestPki,
        super::pki::CertFiles,
        super::pki::CertFiles,
    )>,
    child: Option<Child>,
    http: HttpClient,
    starts: u32,
}

impl EtcdServer {
    /// Starts etcd ([`EtcdSetup::current`]'s setup) on fresh loopback ports with a fresh data
    /// dir and waits until healthy.
    pub fn new() -> io::Result<EtcdServer> {
        EtcdServer::with_args(&[])
    }

    /// Like [`EtcdServer::new`] with extra command-line flags for the member appended (e.g.
    /// `["--max-request-bytes", "4096"]`); they are reused by every later [`EtcdServer::start`].
    /// Flags only etcd 3.4 knows make a 2.3.7 member exit: such tests opt out with
    /// [`skip_unless_etcd34`](crate::skip_unless_etcd34).
    pub fn with_args(extra_args: &[&str]) -> io::Result<EtcdServer> {
        let setup = EtcdSetup::current();
        let tls = std::env::var(ETCD_TLS_ENV).is_ok_and(|v| v == "1");
        if !tls || setup != EtcdSetup::Etcd34 {
            return EtcdServer::with_setup(setup, extra_args);
        }
        use super::pki::{TestPki, Usage};
        let pki = TestPki::new()?;
        let ca = pki.ca("ca")?;
        let server = pki.issue("server", "etcd", Usage::Server, &ca, 30)?;
        let client = pki.issue("client", "lainlet", Usage::Client, &ca, 30)?;
        let mut etcd = EtcdServer::with_tls(&server, Some(&ca.cert), extra_args)?;
        etcd.tls_client = Some((pki, ca, client));
        Ok(etcd)
    }

    /// The service's flags for this etcd: `--etcd <endpoint>`, or under [`ETCD_TLS_ENV`] the
    /// TLS endpoint with `--etcd-ca`, `--etcd-cert` and `--etcd-key`.
    pub fn service_flags(&self) -> Vec<String> {
        match (&self.tls_client, self.tls_endpoint()) {
            (Some((_, ca, client)), Some(endpoint)) => vec![
                "--etcd".into(),
                endpoint,
                "--etcd-ca".into(),
                ca.cert.display().to_string(),
                "--etcd-cert".into(),
                client.cert.display().to_string(),
                "--etcd-key".into(),
                client.key.display().to_string(),
            ],
            _ => vec!["--etcd".into(), self.endpoint()],
        }
    }

    /// An etcd 3.4 that also serves TLS on a second loopback client address
    /// ([`EtcdServer::tls_endpoint`]) with `server` (`--cert-file`, `--key-file`) and, if
    /// `client_ca` is given, client certificates verified against that file
    /// (`--client-cert-auth --trusted-ca-file`; it is read again at each
    /// [`EtcdServer::start`]). The plain port stays, for the harness's helpers.
    pub fn with_tls(
        server: &super::pki::CertFiles,
        client_ca: Option<&Path>,
        extra_args: &[&str],
    ) -> io::Result<EtcdServer> {
        let mut args: Vec<String> = vec![
            "--cert-file".into(),
            server.cert.display().to_string(),
            "--key-file".into(),
            server.key.display().to_string(),
        ];
        if let Some(ca) = client_ca {
            args.push("--client-cert-auth".into());
            args.push("--trusted-ca-file".into());
            args.push(ca.display().to_string());
        }
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut etcd = EtcdServer {
            setup: EtcdSetup::Etcd34,
            proxy: None,
            bin: EtcdSetup::Etcd34.binary()?,
            dir: TempDir::new("etcd")?,
            client_port: free_port(),
            peer_port: free_port(),
            extra_args: args,
            tls_port: Some(free_port()),
            tls_client: None,
            child: None,
            http: HttpClient::new().timeout(Duration::from_secs(10)),
            starts: 0,
        };
        etcd.start()?;
        Ok(etcd)
    }

    /// The TLS client URL (`https://127.0.0.2:<port>`) of an etcd made by
    /// [`EtcdServer::with_tls`].
    pub fn tls_endpoint(&self) -> Option<String> {
        self.tls_port.map(|p| format!("https://127.0.0.2:{p}"))
    }

    /// Starts `setup` (whatever the thread's current one): the member, and on
    /// [`EtcdSetup::Etcd2Proxy`] then the proxy; waits until both are ready.
    pub fn with_setup(setup: EtcdSetup, extra_args: &[&str]) -> io::Result<EtcdServer> {
        let mut etcd = EtcdServer {
            setup,
            proxy: None,
            bin: setup.binary()?,
            dir: TempDir::new("etcd")?,
            client_port: free_port(),
            peer_port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            tls_port: None,
            tls_client: None,
            child: None,
            http: HttpClient::new().timeout(Duration::from_secs(10)),
            starts: 0,
        };
        etcd.start()?;
        if setup.has_proxy() {
            let initial_cluster = format!("{MEMBER_NAME}={}", etcd.peer_url());
            let dir = etcd.dir.path().join("proxy");
            let mut proxy = EtcdProxy::new(etcd.bin.clone(), dir, initial_cluster)?;
            proxy.start()?;
            etcd.proxy = Some(proxy);
        }
        Ok(etcd)
    }

    /// The setup this server runs.
    pub fn setup(&self) -> EtcdSetup {
        self.setup
    }

    /// The proxy in front of the member ([`EtcdSetup::Etcd2Proxy`] only).
    pub fn proxy(&self) -> Option<&EtcdProxy> {
        self.proxy.as_ref()
    }

    /// The proxy, to stop, start, kill, pause or resume it ([`EtcdSetup::Etcd2Proxy`] only).
    pub fn proxy_mut(&mut self) -> Option<&mut EtcdProxy> {
        self.proxy.as_mut()
    }

    /// Locates the etcd binary: `$LAINLET_TEST_ETCD`, else `etcd` on `PATH`, else `/usr/bin/etcd`.
    pub fn find_binary() -> io::Result<PathBuf> {
        if let Some(p) = std::env::var_os(ETCD_ENV).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{ETCD_ENV}={} is not a file", p.display()),
                ))
            };
        }
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .map(|dir| dir.join("etcd"));
        on_path
            .chain([PathBuf::from("/usr/bin/etcd")])
            .find(|p| p.is_file())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "etcd not found (looked at ${ETCD_ENV}, PATH, /usr/bin/etcd): \
                         run `apt-get install -y etcd-server` or set {ETCD_ENV}"
                    ),
                )
            })
    }

    /// The client endpoint as the service's `-etcd` flag takes it: `"127.0.0.1:<port>"`: the
    /// proxy's on [`EtcdSetup::Etcd2Proxy`], else the member's.
    pub fn endpoint(&self) -> String {
        match &self.proxy {
            Some(p) => p.endpoint(),
            None => self.member_endpoint(),
        }
    }

    /// The member's client endpoint, `"127.0.0.1:<port>"` (where the helpers write and read).
    pub fn member_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The member's peer URL, `"http://127.0.0.1:<peer port>"`.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The client URL of [`EtcdServer::endpoint`]: `"http://127.0.0.1:<port>"`.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.endpoint())
    }

    /// etcd's data directory (kept across [`EtcdServer::stop`]/[`EtcdServer::start`]).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The file that receives etcd's stdout and stderr (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// Prints the last 16 KiB of the log (and the proxy's) to stderr (shown by the test runner
    /// on failure).
    pub fn print_log(&self) {
        let path = self.log_path();
        print_log_tail(
            &format!("etcd log ({}, {})", self.setup, path.display()),
            "etcd",
            &path,
            16 * 1024,
        );
        if let Some(p) = &self.proxy {
            p.print_log();
        }
    }

    /// The process id, while started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the etcd process is alive (false after [`EtcdServer::stop`] or a crash).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts etcd (again) on the same data dir and ports and waits until healthy. On the first
    /// start only, a port lost to another process is replaced by a fresh one (up to 5 tries).
    pub fn start(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let first_start = self.starts == 0;
        let mut last_err = None;
        for _ in 0..5 {
            let offset = fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0);
            self.spawn()?;
            match self.wait_healthy() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.kill();
                    let log = self.log();
                    let this_run = log.get(offset as usize..).unwrap_or_default();
                    if !this_run.contains("address already in use") {
                        return Err(e);
                    }
                    if first_start {
                        self.client_port = free_port();
                        self.peer_port = free_port();
                        self.tls_port = self.tls_port.map(|_| free_port());
                    } else {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    /// Stops etcd (the member) gracefully (SIGTERM, then SIGKILL after 10 s) and reaps it.
    /// Data persists. A proxy keeps running.
    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = signal_child(&child, libc::SIGTERM);
            if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                kill_and_reap(&mut child);
            }
        }
    }

    /// Kills etcd (the member) abruptly (SIGKILL, like a crash) and reaps it. Data persists.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// [`EtcdServer::stop`] then [`EtcdServer::start`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.start()
    }

    /// Freezes etcd (the member; SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            signal_child(c, libc::SIGSTOP).expect("SIGSTOP etcd");
        }
    }

    /// Thaws etcd after [`EtcdServer::pause`] (SIGCONT).
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            signal_child(c, libc::SIGCONT).expect("SIGCONT etcd");
        }
    }

    /// Copies the data directory of the **stopped** member to `to` (which must not exist): a
    /// backup. An error while the member runs.
    pub fn copy_data_dir(&mut self, to: &Path) -> io::Result<()> {
        if self.is_running() {
            return Err(io::Error::other("copy_data_dir: stop etcd first"));
        }
        copy_dir(&self.data_dir(), to)
    }

    /// Replaces the **stopped** member's data directory with a copy of `from` (made by
    /// [`EtcdServer::copy_data_dir`]): a restore from backup; start it with
    /// [`EtcdServer::start`]. An error while the member runs.
    pub fn restore_data_dir(&mut self, from: &Path) -> io::Result<()> {
        if self.is_running() {
            return Err(io::Error::other("restore_data_dir: stop etcd first"));
        }
        let data = self.data_dir();
        if data.exists() {
            fs::remove_dir_all(&data)?;
        }
        copy_dir(from, &data)
    }

    /// `etcdctl snapshot save <file>` against the running member (etcd 3.4 only; the v3 store).
    pub fn snapshot_save(&self, file: &Path) -> io::Result<()> {
        let mut cmd = Command::new(etcdctl()?);
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &format!("http://{}", self.member_endpoint())])
            .args(["snapshot", "save"])
            .arg(file);
        run_quietly(cmd, "etcdctl snapshot save")
    }

    /// Replaces the **stopped** member's data directory by `etcdctl snapshot restore <file>`
    /// (etcd 3.4 only): the v3 store as saved, under a **new cluster ID**. Start it with
    /// [`EtcdServer::start`].
    pub fn snapshot_restore(&mut self, file: &Path) -> io::Result<()> {
        if self.is_running() {
            return Err(io::Error::other("snapshot_restore: stop etcd first"));
        }
        let data = self.data_dir();
        if data.exists() {
            fs::remove_dir_all(&data)?;
        }
        let peer = self.peer_url();
        let mut cmd = Command::new(etcdctl()?);
        cmd.env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(file)
            .args(["--name", MEMBER_NAME, "--data-dir"])
            .arg(&data)
            .args(["--initial-cluster", &format!("{MEMBER_NAME}={peer}")])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster-token", "restored"]);
        run_quietly(cmd, "etcdctl snapshot restore")
    }

    /// The cluster ID etcd reports (`X-Etcd-Cluster-Id` of a v2 answer from the member; 3.4
    /// serves it only with `--enable-v2`, which the harness always passes).
    pub fn cluster_id(&self) -> Option<String> {
        let r = self
            .http
            .get(&self.member_endpoint(), "/v2/keys/?quorum=false")
            .ok()?;
        r.header("x-etcd-cluster-id").map(|s| s.trim().to_owned())
    }

    /// Compacts the history up to `revision` and waits until the compaction is physically
    /// applied. Watches starting at or below `revision` then fail with "compacted".
    pub fn compact(&self, revision: i64) {
        let body = json!({ "revision": revision.to_string(), "physical": true });
        self.call("/v3/kv/compaction", &body);
    }

    /// The value of an unlabelled Prometheus gauge/counter from etcd's `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let resp = self.http.get(&self.member_endpoint(), "/metrics").ok()?;
        let text = resp.text();
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|v| v.trim().parse().ok())
    }

    /// Number of watchers registered in etcd's MVCC store
    /// (`etcd_debugging_mvcc_watcher_total`): one per watched range, over all clients and
    /// streams. Panics if the metric cannot be read.
    pub fn watcher_count(&self) -> u64 {
        self.metric("etcd_debugging_mvcc_watcher_total")
            .expect("etcd_debugging_mvcc_watcher_total in /metrics") as u64
    }

    /// Number of open watch streams (`etcd_debugging_mvcc_watch_stream_total`): one per gRPC
    /// `Watch` call (or gateway `/v3/watch` request), each carrying any number of watchers.
    pub fn watch_stream_count(&self) -> u64 {
        self.metric("etcd_debugging_mvcc_watch_stream_total")
            .expect("etcd_debugging_mvcc_watch_stream_total in /metrics") as u64
    }

    /// Loads a fixture directory: `MANIFEST.tsv` lines `<etcd key>\t<file>` (`#` comments), each
    /// value read byte-for-byte from `<dir>/<file>`. Returns the revision after loading.
    pub fn load_manifest(&self, dir: &Path) -> i64 {
        self.load(kv::read_manifest(dir))
    }

    fn call(&self, path: &str, body: &Value) -> Value {
        self.gateway(path, body)
            .unwrap_or_else(|e| panic!("etcd gateway call failed: {e}"))
    }

    fn spawn(&mut self) -> io::Result<()> {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(log, "===== harness: etcd start #{} =====", self.starts)?;
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let listen = match self.tls_port {
            // etcd 3.4 cannot serve http and https on two ports of one address
            // ("address already in use"): the TLS port is on 127.0.0.2
            Some(port) => format!("{client},https://127.0.0.2:{port}"),
            None => client.clone(),
        };
        let peer = self.peer_url();
        let data = self.data_dir();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--name")
            .arg(MEMBER_NAME)
            .arg("--data-dir")
            .arg(&data);
        cmd.args([
            "--listen-client-urls",
            &listen,
            "--advertise-client-urls",
            &client,
        ]);
        cmd.args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ]);
        cmd.args(["--initial-cluster", &format!("{MEMBER_NAME}={peer}")]);
        if self.setup.is_etcd2() {
            // etcd 2.x: v2 is all it serves; no --logger, no --enable-v2
            cmd.args(["--initial-cluster-state", "new"]);
        } else {
            cmd.args(["--logger", "zap"]);
            // the v2 keys API real LAIN clusters use; etcd 3.4 keeps its store apart from v3's
            cmd.arg("--enable-v2=true");
        }
        cmd.args(&self.extra_args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::try_clone(&log)?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawn {}: {e}", self.bin.display())))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        // 2.3.7's /health waits up to 750 ms for raft progress (about 500 ms when idle)
        let probe = HttpClient::new().timeout(Duration::from_secs(2));
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(self.start_error(&format!("etcd exited ({status})")));
                }
            }
            if let Ok(r) = probe.get(&self.member_endpoint(), "/health") {
                if r.status == 200 && r.text().contains("true") {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.start_error("etcd not healthy after 30 s"));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    fn start_error(&self, what: &str) -> io::Error {
        io::Error::other(format!(
            "{what} ({} on {}); log tail:\n{}",
            self.bin.display(),
            self.member_endpoint(),
            log_tail(&self.log_path(), 4096)
        ))
    }
}

impl EtcdApi for EtcdServer {
    fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<HttpResponse> {
        if self.setup.is_etcd2() && path_and_query.starts_with("/v3/") {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{method} {path_and_query}: etcd 2.3.7 has no v3 API (this test runs on {}); \
                     a test that needs it opts out with skip_unless_etcd34",
                    self.setup
                ),
            ));
        }
        self.http.request(
            method,
            &self.member_endpoint(),
            path_and_query,
            headers,
            body,
        )
    }
}

impl EtcdClient for EtcdServer {
    fn describe(&self) -> String {
        format!("{} ({})", self.member_endpoint(), self.setup)
    }
}

/// Debian's `etcdctl` (package `etcd-client`), or an error saying how to install it.
fn etcdctl() -> io::Result<PathBuf> {
    ["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "etcdctl not found: run scripts/ensure-deps.sh --with-etcd (apt-get install \
                 etcd-client)",
            )
        })
}

/// Runs `cmd` to completion; an error with its output if it fails.
fn run_quietly(mut cmd: Command, what: &str) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        if std::thread::panicking() {
            self.print_log();
        }
    }
}
