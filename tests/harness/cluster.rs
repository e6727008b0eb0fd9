//! A throw-away multi-member etcd cluster on loopback (`EtcdCluster::new(3)`), for tests of
//! failover, quorum loss and a service given several endpoints (`--etcd a,b,c`).
//!
//! Every member has its own client and peer port, data dir and log under one temp dir; the
//! cluster token is unique per cluster. Members can be killed (SIGKILL), stopped (SIGTERM),
//! started again on the same data dir and ports, paused (SIGSTOP) and resumed. Reads and writes
//! go through the first live member that accepts a connection.
//!
//! **Quorum loss (etcd 3.4.23, measured here with 2 of 3 members killed):** the survivor keeps
//! accepting connections and `/health` answers `{"health":"false"}` within about 1 s, but every
//! request that needs the raft quorum blocks for etcd's request timeout (5 s + 2 × election
//! timeout = **7 s** with the defaults) and then fails:
//!
//! | request (through the survivor) | answer after 7 s |
//! | --- | --- |
//! | v3 linearizable range (`POST /v3/kv/range`) | HTTP 503 `{"error":"etcdserver: request timed out","code":14}` |
//! | v3 put (`POST /v3/kv/put`) | HTTP 500 `{"error":"context deadline exceeded","code":2}` |
//! | v2 `GET …?quorum=true`, v2 `PUT` | HTTP 500 `{"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver: request timed out"}` |
//!
//! A serializable v3 range (`"serializable": true`) and a v2 GET without `quorum=true` answer at
//! once from the survivor's local, possibly stale copy, and a v2 watch is accepted (200) and
//! simply sees nothing. Once a second member is back, a leader is elected within about a second
//! and everything written before is intact. (The harness self-test
//! `etcd_cluster_loses_and_regains_quorum` re-measures the range case.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::client::EtcdClient;
use super::etcd::EtcdServer;
use super::http::{HttpClient, HttpResponse};
use super::kv::EtcdApi;
use super::setup::EtcdSetup;
use super::util::{
    free_port, kill_and_reap, log_tail, print_log_tail, read_log, signal_child, wait_child,
    wait_for, wait_until, TempDir,
};

/// How long a member start waits for its client port to answer, and a new cluster for a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd cluster of `n` members on loopback; every member is killed and its directory
/// deleted on drop (the members' log tails are printed when the owning test panics).
///
/// The key-value helpers are the [`EtcdClient`] trait's, sent through the first live member:
/// `put`, `v2_put`, … panic with etcd's answer on failure; [`EtcdClient::gateway`] and
/// [`EtcdClient::v2_request`] return errors instead, to observe quorum loss.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    http: HttpClient,
    dir: TempDir,
}

/// One member of an [`EtcdCluster`]: its own ports, data dir and log.
#[derive(Debug)]
pub struct EtcdMember {
    name: String,
    bin: PathBuf,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    initial_cluster: String,
    token: String,
    extra_args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    starts: u32,
}

impl EtcdCluster {
    /// Starts an `n`-member cluster (`n` ≥ 1) on fresh loopback ports and waits until it has a
    /// leader and answers quorum reads.
    pub fn new(n: usize) -> io::Result<EtcdCluster> {
        EtcdCluster::with_args(n, &[])
    }

    /// Like [`EtcdCluster::new`] with extra etcd flags for every member (etcd 3.4 only: on another
    /// [`EtcdSetup::current`] an error says to opt out) (e.g.
    /// `["--election-timeout", "500", "--heartbeat-interval", "50"]`), reused on restarts.
    pub fn with_args(n: usize, extra_args: &[&str]) -> io::Result<EtcdCluster> {
        assert!(n >= 1, "an etcd cluster needs at least one member");
        let setup = EtcdSetup::current();
        if setup != EtcdSetup::Etcd34 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "EtcdCluster runs etcd 3.4 only, but this test runs on {setup}: opt out \
                     with skip_unless_etcd34"
                ),
            ));
        }
        let bin = EtcdServer::find_binary()?;
        let dir = TempDir::new("etcd-cluster")?;
        let token = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lainlet-test".to_owned());
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            http: HttpClient::new().timeout(Duration::from_secs(10)),
            dir,
        };
        let mut last_err = None;
        for _ in 0..5 {
            let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
            let initial_cluster = ports
                .iter()
                .enumerate()
                .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
                .collect::<Vec<_>>()
                .join(",");
            cluster.members = ports
                .iter()
                .enumerate()
                .map(|(i, &(client_port, peer_port))| EtcdMember {
                    name: format!("m{i}"),
                    bin: bin.clone(),
                    dir: cluster.dir.path().join(format!("m{i}")),
                    client_port,
                    peer_port,
                    initial_cluster: initial_cluster.clone(),
                    token: token.clone(),
                    extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                    child: None,
                    paused: false,
                    starts: 0,
                })
                .collect();
            match cluster.boot() {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    let port_clash = cluster
                        .members
                        .iter()
                        .any(|m| m.log().contains("address already in use"));
                    for m in &mut cluster.members {
                        m.kill();
                        let _ = fs::remove_dir_all(m.data_dir());
                    }
                    if !port_clash {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("etcd cluster did not start")))
    }

    /// Spawns every member, then waits for each client port and for a leader.
    fn boot(&mut self) -> io::Result<()> {
        for m in &mut self.members {
            m.spawn()?;
        }
        for m in &mut self.members {
            m.wait_listening()?;
        }
        if self.wait_leader(READY_TIMEOUT) {
            Ok(())
        } else {
            let tails: String = self
                .members
                .iter()
                .map(|m| format!("--- {} ---\n{}\n", m.name, log_tail(&m.log_path(), 2048)))
                .collect();
            Err(io::Error::other(format!(
                "etcd cluster ({}) has no leader after {READY_TIMEOUT:?}; log tails:\n{tails}",
                self.endpoints()
            )))
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never true: [`EtcdCluster::new`] needs one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client endpoint, comma-separated, as the service's `--etcd` flag takes
    /// them: `"127.0.0.1:p0,127.0.0.1:p1,127.0.0.1:p2"`.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(EtcdMember::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i` (0-based), to kill, stop, start, pause or resume it. Panics if out of range.
    pub fn member(&mut self, i: usize) -> &mut EtcdMember {
        let n = self.members.len();
        self.members
            .get_mut(i)
            .unwrap_or_else(|| panic!("member {i} of a {n}-member cluster"))
    }

    /// All members, in order.
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// Whether a live member answers `/health` with `true` (etcd 3.4: it knows a leader and a
    /// quorum read succeeds within 1 s). Each unhealthy member takes up to ~2 s to answer.
    pub fn has_leader(&self) -> bool {
        let probe = HttpClient::new().timeout(Duration::from_secs(2));
        self.live().any(|m| {
            probe
                .get(&m.endpoint(), "/health")
                .is_ok_and(|r| r.status == 200 && r.text().contains("true"))
        })
    }

    /// Polls [`EtcdCluster::has_leader`] until true or `timeout`; whether it became true.
    pub fn wait_leader(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.has_leader())
    }

    /// The index of the live member that considers itself leader (from
    /// `/v3/maintenance/status`), if any. Right after quorum loss a stale leader may still say
    /// so for up to an election timeout.
    pub fn leader(&self) -> Option<usize> {
        let probe = HttpClient::new().timeout(Duration::from_secs(2));
        self.members.iter().enumerate().find_map(|(i, m)| {
            if !m.is_live() {
                return None;
            }
            let r = probe
                .post_json(&m.endpoint(), "/v3/maintenance/status", &json!({}))
                .ok()?;
            let v: Value = serde_json::from_slice(&r.body).ok()?;
            let (me, leader) = (&v["header"]["member_id"], &v["leader"]);
            (r.status == 200 && !leader.is_null() && me == leader).then_some(i)
        })
    }

    /// Prints the last 8 KiB of every member's log to stderr.
    pub fn print_logs(&self) {
        for m in &self.members {
            m.print_log_tail(&m.name, 8 * 1024);
        }
    }

    /// Members that were started and are neither killed, stopped nor paused.
    fn live(&self) -> impl Iterator<Item = &EtcdMember> {
        self.members.iter().filter(|m| m.is_live())
    }
}

impl EtcdApi for EtcdCluster {
    /// Tries the live members in order; moves on only when a connection is refused (a member
    /// that crashed by itself), so a member that hangs is not retried elsewhere.
    fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<HttpResponse> {
        let mut last = None;
        for m in self.live() {
            match self
                .http
                .request(method, &m.endpoint(), path_and_query, headers, body)
            {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => last = Some(e),
                other => return other,
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no live etcd member")))
    }
}

impl EtcdClient for EtcdCluster {
    fn describe(&self) -> String {
        format!("cluster {}", self.endpoints())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.resume();
            m.kill();
        }
        if std::thread::panicking() {
            self.print_logs();
        }
    }
}

impl EtcdMember {
    /// The member's name (`m0`, `m1`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client endpoint, `"127.0.0.1:<port>"`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client URL, `"http://127.0.0.1:<port>"`.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.endpoint())
    }

    /// The peer URL, `"http://127.0.0.1:<peer port>"`.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The member's data directory (kept across stop/kill and start).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The file receiving the member's stdout and stderr (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The member's whole log so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// Prints the last 16 KiB of the member's log to stderr.
    pub fn print_log(&self) {
        self.print_log_tail("etcd", 16 * 1024);
    }

    /// Prints the last `max_bytes` of the log, the closing line naming `end` (`end of {end} log`).
    fn print_log_tail(&self, end: &str, max_bytes: usize) {
        let path = self.log_path();
        let title = format!("etcd member {} log ({})", self.name, path.display());
        print_log_tail(&title, end, &path, max_bytes);
    }

    /// The process id, while started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive (false after kill/stop or a crash; true while paused).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Whether the member is paused (SIGSTOP).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Started, not killed or stopped, not paused: requests are sent to it.
    fn is_live(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    /// Kills the member abruptly (SIGKILL, like a crash) and reaps it. Data persists.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        self.paused = false;
    }

    /// Stops the member gracefully (SIGTERM, then SIGKILL after 10 s) and reaps it.
    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = signal_child(&child, libc::SIGTERM);
            if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                kill_and_reap(&mut child);
            }
        }
    }

    /// Starts the member again on its data dir and ports, and waits until its client port
    /// answers `/version` (not for a leader: with quorum lost there is none; use
    /// [`EtcdCluster::wait_leader`]). No-op while running.
    pub fn start(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.spawn()?;
        self.wait_listening()
    }

    /// Freezes the member (SIGSTOP): its connections stay open, nothing is answered, and the
    /// cluster's helpers stop sending to it.
    pub fn pause(&mut self) {
        if let Some(c) = &self.child {
            signal_child(c, libc::SIGSTOP).expect("SIGSTOP etcd member");
            self.paused = true;
        }
    }

    /// Thaws the member after [`EtcdMember::pause`] (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(c) = &self.child {
            if self.paused {
                signal_child(c, libc::SIGCONT).expect("SIGCONT etcd member");
            }
        }
        self.paused = false;
    }

    fn spawn(&mut self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(
            log,
            "===== harness: etcd member {} start #{} =====",
            self.name, self.starts
        )?;
        let (client, peer) = (self.client_url(), self.peer_url());
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir());
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
        cmd.args(["--initial-cluster", &self.initial_cluster]);
        cmd.args(["--initial-cluster-state", "new"]);
        cmd.args(["--initial-cluster-token", &self.token]);
        cmd.args(["--enable-v2=true", "--logger", "zap"]);
        cmd.args(&self.extra_args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::try_clone(&log)?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawn {}: {e}", self.bin.display())))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Waits until `/version` answers 200 (the client port is served), or the process exits.
    fn wait_listening(&mut self) -> io::Result<()> {
        let probe = HttpClient::new().timeout(Duration::from_millis(500));
        let endpoint = self.endpoint();
        let mut exited = None;
        let ok = wait_for(READY_TIMEOUT, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                exited = Some(status);
                return Some(false);
            }
            probe
                .get(&endpoint, "/version")
                .is_ok_and(|r| r.status == 200)
                .then_some(true)
        });
        if ok == Some(true) {
            return Ok(());
        }
        let state = match exited {
            Some(s) => format!("exited ({s})"),
            None => format!("not answering /version after {READY_TIMEOUT:?}"),
        };
        Err(io::Error::other(format!(
            "etcd member {} on {endpoint}: {state}; log tail:\n{}",
            self.name,
            log_tail(&self.log_path(), 4096)
        )))
    }

    /// The member's directory (data dir and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}
