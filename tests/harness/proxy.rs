//! An etcd 2.3.7 v2 proxy (`etcd --proxy on`) in front of one member, as on every LAIN node
//! that is not a manager (lainlet connects to `<node_ip>:4001`, the proxy). Owned by an
//! [`EtcdServer`](crate::EtcdServer) started on
//! [`EtcdSetup::Etcd2Proxy`](crate::EtcdSetup::Etcd2Proxy); reach it with
//! [`EtcdServer::proxy`](crate::EtcdServer::proxy).
//!
//! What the proxy does (etcd 2.3.7 `proxy/`, and measured): it forwards **every** request,
//! `/health` and `/version` included, to a member's client URL, which it learns from the
//! member's peer URL (`--initial-cluster`) at start and every 30 s (every 1 s while it knows
//! none). It copies the answer's head only when the member's head has arrived and then copies
//! the body with `io.Copy` (no flush per write, so a `stream=true` watch's head and events
//! arrive late or in batches). With the member unreachable it answers itself:
//! `502 {"message":"proxy: unable to get response from 1 endpoint(s)"}`, and for 5 s after a
//! failure (`--proxy-failure-wait`) `503 {"message":"proxy: zero endpoints currently
//! available"}`. The harness runs it with etcd's defaults, as the LAIN playbook does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::http::HttpClient;
use super::util::{
    free_port, kill_and_reap, log_tail, print_log_tail, read_log, signal_child, wait_child,
    wait_for,
};

/// How long a proxy start waits for `/health` through it to answer `true`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped) etcd 2.3.7 proxy process with its own data dir and log.
#[derive(Debug)]
pub struct EtcdProxy {
    bin: PathBuf,
    dir: PathBuf,
    client_port: u16,
    initial_cluster: String,
    child: Option<Child>,
    paused: bool,
    starts: u32,
}

impl EtcdProxy {
    /// A proxy for the member `initial_cluster` names (`"name=http://127.0.0.1:<peer>"`),
    /// not started yet; its files go to `dir` (created).
    pub(crate) fn new(bin: PathBuf, dir: PathBuf, initial_cluster: String) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(EtcdProxy {
            bin,
            dir,
            client_port: free_port(),
            initial_cluster,
            child: None,
            paused: false,
            starts: 0,
        })
    }

    /// The proxy's client endpoint, `"127.0.0.1:<port>"` (what the service's `--etcd` gets).
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The proxy's data directory (it keeps the member list there, `proxy/cluster`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The file that receives the proxy's stdout and stderr (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("proxy.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// Prints the last 8 KiB of the log to stderr.
    pub fn print_log(&self) {
        let path = self.log_path();
        let title = format!("etcd proxy log ({})", path.display());
        print_log_tail(&title, "etcd proxy", &path, 8 * 1024);
    }

    /// The process id, while started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the proxy process is alive (true while paused).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts the proxy (again, same port and data dir) and waits until `/health` answered
    /// through it says `true` (so the member must be up). On the first start only, a port
    /// lost to another process is replaced (up to 5 tries). No-op while running.
    pub fn start(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let first_start = self.starts == 0;
        let mut last_err = None;
        for _ in 0..5 {
            let offset = fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0);
            self.spawn()?;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.kill();
                    let log = self.log();
                    let this_run = log.get(offset as usize..).unwrap_or_default();
                    if !(first_start && this_run.contains("address already in use")) {
                        return Err(e);
                    }
                    self.client_port = free_port();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("etcd proxy did not start")))
    }

    /// Stops the proxy gracefully (SIGTERM, then SIGKILL after 10 s) and reaps it.
    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = signal_child(&child, libc::SIGTERM);
            if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                kill_and_reap(&mut child);
            }
        }
    }

    /// Kills the proxy abruptly (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        self.paused = false;
    }

    /// [`EtcdProxy::stop`] then [`EtcdProxy::start`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.start()
    }

    /// Freezes the proxy (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&mut self) {
        if let Some(c) = &self.child {
            signal_child(c, libc::SIGSTOP).expect("SIGSTOP etcd proxy");
            self.paused = true;
        }
    }

    /// Thaws the proxy after [`EtcdProxy::pause`] (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(c) = &self.child {
            if self.paused {
                signal_child(c, libc::SIGCONT).expect("SIGCONT etcd proxy");
            }
        }
        self.paused = false;
    }

    fn spawn(&mut self) -> io::Result<()> {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(
            log,
            "===== harness: etcd proxy start #{} =====",
            self.starts
        )?;
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let child = Command::new(&self.bin)
            .args(["--proxy", "on", "--name", "proxy", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--initial-cluster", &self.initial_cluster])
            .stdin(Stdio::null())
            .stdout(File::try_clone(&log)?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawn {}: {e}", self.bin.display())))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        // a 2.3.7 member's /health waits up to 750 ms for raft progress
        let probe = HttpClient::new().timeout(Duration::from_secs(2));
        let endpoint = self.endpoint();
        let ready = wait_for(READY_TIMEOUT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Some(Err(format!("the proxy exited ({status})")));
            }
            if TcpStream::connect(&endpoint).is_err() {
                return None;
            }
            let r = probe.get(&endpoint, "/health").ok()?;
            (r.status == 200 && r.text().contains("true")).then_some(Ok(()))
        });
        let what = match ready {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) => e,
            None => format!("/health through the proxy not `true` after {READY_TIMEOUT:?}"),
        };
        Err(io::Error::other(format!(
            "{what} ({} --proxy on at {endpoint}, member {}); log tail:\n{}",
            self.bin.display(),
            self.initial_cluster,
            log_tail(&self.log_path(), 4096)
        )))
    }
}

impl Drop for EtcdProxy {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}
