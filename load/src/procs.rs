//! The processes under test: starting etcd and lainlet (or attaching to running ones), reading
//! their memory and CPU time from `/proc`, and a minimal HTTP/1.0 GET for `/health`, `/healthz`
//! and `/metrics`. Every address is checked to be a loopback one.

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest HTTP response read by [`http_get`].
const MAX_BODY: usize = 64 << 20;
/// How long a started server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Parses `host:port` and refuses anything that is not an IPv4 loopback address: the tool
/// never talks to another machine.
pub fn loopback(addr: &str) -> anyhow::Result<SocketAddr> {
    let addr = addr.trim();
    let addr = addr.strip_prefix("http://").unwrap_or(addr);
    let sa: SocketAddr = addr
        .parse()
        .with_context(|| format!("{addr:?} is not an IP:port address"))?;
    match sa.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Ok(sa),
        _ => bail!("{sa} is not a 127.x.x.x address; lainlet-load only talks to this machine"),
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Raises the soft open-files limit to at least `needed` (up to the hard limit; beyond it
/// only if the process may raise the hard limit). Returns the new soft limit.
pub fn raise_nofile(needed: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= needed {
        return Ok(lim.rlim_cur);
    }
    let want = libc::rlimit {
        rlim_cur: needed.max(lim.rlim_max.min(1 << 20)),
        rlim_max: lim.rlim_max.max(needed),
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
        bail!(
            "{needed} open files are needed but the hard limit is {} (raise it: ulimit -Hn {needed})",
            lim.rlim_max
        );
    }
    Ok(want.rlim_cur)
}

/// A scratch directory for data dirs and logs, deleted on drop unless kept.
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `<parent>/lainlet-load-<pid>-<nanos>`.
    pub fn new(parent: &Path, keep: bool) -> anyhow::Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("lainlet-load-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path, keep })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A server: its loopback address, and its pid when known (started here, or `--server-pid`).
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, for `/proc` readings.
    pub pid: Option<u32>,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl Server {
    /// A server started elsewhere.
    pub fn attached(addr: SocketAddr, pid: Option<u32>) -> Server {
        Server {
            addr,
            pid,
            child: None,
            log: None,
        }
    }

    /// Whether this tool started it.
    pub fn is_own(&self) -> bool {
        self.child.is_some()
    }

    /// Stops a server started here: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The last `bytes` of its log (servers started here).
    pub fn log_tail(&self, bytes: usize) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let text = fs::read(log).unwrap_or_default();
        String::from_utf8_lossy(&text[text.len().saturating_sub(bytes)..]).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    Command::new(bin)
        .args(args)
        // lainlet: no state file unless asked (runs never share /var/lib/lainlet/state).
        .env(
            "LAINLET_STATE_FILE",
            std::env::var("LAINLET_STATE_FILE").unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// Starts a single-member etcd on two free loopback ports with its data dir under `dir`, and
/// waits until `/health` says healthy.
pub async fn start_etcd(bin: &Path, dir: &Path) -> anyhow::Result<Server> {
    let client = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let peer = format!("http://127.0.0.1:{}", free_port()?);
    let client_url = format!("http://{client}");
    let args: Vec<String> = [
        "--name",
        "load",
        "--data-dir",
        &dir.join("etcd-data").to_string_lossy(),
        "--listen-client-urls",
        &client_url,
        "--advertise-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("load={peer}"),
        "--logger",
        "zap",
        "--log-level",
        "warn",
        // the v2 keys store too (--etcd-api v2); the v3 store is not affected
        "--enable-v2=true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = dir.join("etcd.log");
    let child = spawn(bin, &args, &log)?;
    let mut server = Server {
        addr: client,
        pid: Some(child.id()),
        child: Some(child),
        log: Some(log),
    };
    wait_ready(&mut server, "/health", |body| body.contains("true"))
        .await
        .map_err(|e| anyhow!("etcd: {e}\n{}", server.log_tail(4096)))?;
    Ok(server)
}

/// Starts lainlet on a free loopback port following store `api` (`--etcd-api`) of the etcd at
/// `etcd`, and waits until `/healthz` answers 200 (first snapshot applied).
pub async fn start_lainlet(
    bin: &Path,
    etcd: SocketAddr,
    api: &str,
    dir: &Path,
) -> anyhow::Result<Server> {
    let web = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let args: Vec<String> = vec![
        "--web".into(),
        web.to_string(),
        "--etcd".into(),
        etcd.to_string(),
        "--etcd-api".into(),
        api.into(),
        "--hostname".into(),
        "node1".into(),
    ];
    let log = dir.join("lainlet.log");
    let child =
        spawn(bin, &args, &log).context("(build it: cargo build --release --bin lainlet)")?;
    let mut server = Server {
        addr: web,
        pid: Some(child.id()),
        child: Some(child),
        log: Some(log),
    };
    wait_ready(&mut server, "/healthz", |_| true)
        .await
        .map_err(|e| anyhow!("lainlet: {e}\n{}", server.log_tail(4096)))?;
    Ok(server)
}

/// Starts the original (Go) lainlet with its own flags (`-web`, `-etcd`; it reads etcd's v2
/// store) on a free loopback port, and waits until `/version` answers 200 (it has no
/// `/healthz`; the caller waits for the data itself).
pub async fn start_original(bin: &Path, etcd: SocketAddr, dir: &Path) -> anyhow::Result<Server> {
    let web = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let args = vec![format!("-web={web}"), format!("-etcd={etcd}")];
    let log = dir.join("original.log");
    let child = spawn(bin, &args, &log)?;
    let mut server = Server {
        addr: web,
        pid: Some(child.id()),
        child: Some(child),
        log: Some(log),
    };
    wait_ready(&mut server, "/version", |_| true)
        .await
        .map_err(|e| anyhow!("the original lainlet: {e}\n{}", server.log_tail(4096)))?;
    Ok(server)
}

async fn wait_ready(
    server: &mut Server,
    path: &str,
    ok: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(child) = server.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("exited during start-up ({status})");
            }
        }
        if let Ok((200, body)) = http_get(server.addr, path, Duration::from_secs(1)).await {
            if ok(&String::from_utf8_lossy(&body)) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("not ready after {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` over HTTP/1.0 (so the body simply ends at close): status and body.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let fetch = async {
        let mut tcp = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        tcp.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        (&mut tcp)
            .take(MAX_BODY as u64)
            .read_to_end(&mut buf)
            .await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(limit, fetch)
        .await
        .map_err(|_| anyhow!("GET {path}: timed out"))??;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: no complete response head"))?;
    let status = std::str::from_utf8(&buf[..head_end])
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("GET {path}: bad status line"))?;
    Ok((status, buf[head_end + 4..].to_vec()))
}

/// Samples of a Prometheus text page: the first unlabelled sample of each wanted name.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of a process, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): state is field 3, utime 14,
    // stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

/// This process's own user + system CPU time, in seconds.
pub fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!(loopback("127.0.0.1:2379").is_ok());
        assert!(loopback("http://127.0.0.1:2379").is_ok());
        assert!(loopback("10.0.0.1:2379").is_err());
        assert!(loopback("0.0.0.0:9001").is_err());
        assert!(loopback("localhost:9001").is_err());
        assert!(loopback("[::1]:9001").is_err());
    }

    #[test]
    fn metrics_are_read_by_exact_name() {
        let page = "# HELP x\nfoo_total{a=\"b\"} 3\nfoo_total 7\nfoo_total_x 9\n";
        assert_eq!(metric(page, "foo_total"), Some(7.0));
        assert_eq!(metric(page, "bar"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_secs(pid).is_some());
    }
}
