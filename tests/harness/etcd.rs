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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::EtcdClient;
use super::http::{HttpClient, HttpResponse};
use super::kv::{self, EtcdApi};
use super::util::{
    free_port, kill_and_reap, log_tail, print_log_tail, read_log, signal_child, wait_child, TempDir,
};

/// Environment variable naming the etcd binary to use (default: `etcd` on `PATH`, then
/// `/usr/bin/etcd`).
pub const ETCD_ENV: &str = "LAINLET_TEST_ETCD";

/// How long [`EtcdServer::start`] waits for `/health` to report healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd with its own data dir and log, killed and deleted on drop.
///
/// The key-value helpers (`put`, `get_prefix`, `v2_put`, …) are the [`EtcdClient`] trait's: they
/// panic with etcd's answer on failure, so test bodies stay short; use
/// [`EtcdClient::gateway`] to observe errors. When the owning test panics, the tail of etcd's
/// log is printed.
#[derive(Debug)]
pub struct EtcdServer {
    bin: PathBuf,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    extra_args: Vec<String>,
    child: Option<Child>,
    http: HttpClient,
    starts: u32,
}

impl EtcdServer {
    /// Starts etcd on two fresh loopback ports with a fresh data dir and waits until healthy.
    pub fn new() -> io::Result<EtcdServer> {
        EtcdServer::with_args(&[])
    }

    /// Like [`EtcdServer::new`] with extra command-line flags appended (e.g.
    /// `["--max-request-bytes", "4096"]`); they are reused by every later [`EtcdServer::start`].
    pub fn with_args(extra_args: &[&str]) -> io::Result<EtcdServer> {
        let mut etcd = EtcdServer {
            bin: EtcdServer::find_binary()?,
            dir: TempDir::new("etcd")?,
            client_port: free_port(),
            peer_port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
            http: HttpClient::new().timeout(Duration::from_secs(10)),
            starts: 0,
        };
        etcd.start()?;
        Ok(etcd)
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

    /// The client endpoint as the service's `-etcd` flag takes it: `"127.0.0.1:<port>"`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client URL: `"http://127.0.0.1:<port>"`.
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

    /// Prints the last 16 KiB of the log to stderr (shown by the test runner on failure).
    pub fn print_log(&self) {
        let path = self.log_path();
        print_log_tail(
            &format!("etcd log ({})", path.display()),
            "etcd",
            &path,
            16 * 1024,
        );
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
                    } else {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    /// Stops etcd gracefully (SIGTERM, then SIGKILL after 10 s) and reaps it. Data persists.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal_child(&child, libc::SIGTERM);
            if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                kill_and_reap(&mut child);
            }
        }
    }

    /// Kills etcd abruptly (SIGKILL, like a crash) and reaps it. Data persists.
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

    /// Freezes etcd (SIGSTOP): connections stay open but nothing is answered.
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

    /// Compacts the history up to `revision` and waits until the compaction is physically
    /// applied. Watches starting at or below `revision` then fail with "compacted".
    pub fn compact(&self, revision: i64) {
        let body = json!({ "revision": revision.to_string(), "physical": true });
        self.call("/v3/kv/compaction", &body);
    }

    /// The value of an unlabelled Prometheus gauge/counter from etcd's `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let resp = self.http.get(&self.endpoint(), "/metrics").ok()?;
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
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let data = self.data_dir();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--name").arg("t").arg("--data-dir").arg(&data);
        cmd.args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ]);
        cmd.args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ]);
        cmd.args(["--initial-cluster", &format!("t={peer}"), "--logger", "zap"]);
        // the v2 keys API real LAIN clusters use; etcd 3.4 keeps its store apart from v3's
        cmd.arg("--enable-v2=true");
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
        let probe = HttpClient::new().timeout(Duration::from_millis(500));
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(self.start_error(&format!("etcd exited ({status})")));
                }
            }
            if let Ok(r) = probe.get(&self.endpoint(), "/health") {
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
            self.endpoint(),
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
        self.http
            .request(method, &self.endpoint(), path_and_query, headers, body)
    }
}

impl EtcdClient for EtcdServer {
    fn describe(&self) -> String {
        self.endpoint()
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
