//! Small helpers: polling, free loopback ports, temporary directories, log tails, signals.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable: when set (to anything non-empty), [`TempDir`]s are kept on drop so the
/// logs and etcd data of a run can be inspected afterwards.
pub const KEEP_ENV: &str = "LAINLET_TEST_KEEP";

/// Polls `cond` until it returns `true` or `timeout` elapses; returns whether it became true.
///
/// The first check is immediate; the interval then backs off from 5 ms to 100 ms. Use this (or
/// [`wait_for`]) instead of fixed sleeps: assert on the result, e.g.
/// `assert!(wait_until(Duration::from_secs(5), || etcd.watcher_count() == 1), "...")`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || cond().then_some(())).is_some()
}

/// Polls `f` until it returns `Some(value)` or `timeout` elapses; returns the value, if any.
///
/// Same schedule as [`wait_until`]; `f` is always called at least once, and once more right at
/// the deadline.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Ports handed out by [`free_port`] in this process, so two harness objects never get the same.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Returns a TCP port that was free on 127.0.0.1 a moment ago (bind `127.0.0.1:0`, release).
///
/// Never returns the same port twice within one test process. There is an unavoidable race with
/// other processes between release and reuse; [`EtcdServer`](crate::EtcdServer) retries on
/// "address already in use".
pub fn free_port() -> u16 {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let seen = guard.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if seen.insert(port) {
            return port;
        }
    }
}

/// Returns `"127.0.0.1:<free port>"` (see [`free_port`]).
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A uniquely named directory under [`std::env::temp_dir`], removed (recursively) on drop unless
/// `LAINLET_TEST_KEEP` is set.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/lainlet-test-<tag>-<pid>-<nanos>-<n>`.
    pub fn new(tag: &str) -> io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("lainlet-test-{tag}-{}-{nanos}-{n}", std::process::id());
        let path = std::env::temp_dir().join(name);
        fs::create_dir(&path)?;
        Ok(TempDir { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty()) {
            eprintln!("[harness] keeping {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The last `max_bytes` of the file at `path` (lossy UTF-8), starting at a line boundary when
/// truncated; a note instead of the content if the file cannot be read.
pub fn log_tail(path: &Path, max_bytes: usize) -> String {
    match fs::read(path) {
        Ok(bytes) if bytes.len() <= max_bytes => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(bytes) => {
            let mut tail = &bytes[bytes.len() - max_bytes..];
            if let Some(nl) = tail.iter().position(|&b| b == b'\n') {
                tail = &tail[nl + 1..];
            }
            format!("[... truncated ...]\n{}", String::from_utf8_lossy(tail))
        }
        Err(e) => format!("[cannot read {}: {e}]", path.display()),
    }
}

/// The whole file at `path` (lossy UTF-8), empty if it cannot be read: a process's log so far.
pub(crate) fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Prints the [`log_tail`] of `path` (at most `max_bytes`) to stderr, between the lines
/// `----- {title} -----` and `----- end of {name} log -----`.
pub(crate) fn print_log_tail(title: &str, name: &str, path: &Path, max_bytes: usize) {
    eprintln!(
        "----- {title} -----\n{}\n----- end of {name} log -----",
        log_tail(path, max_bytes)
    );
}

/// Sends signal `sig` (e.g. `libc::SIGINT`) to a child process that has not been reaped yet.
pub(crate) fn signal_child(child: &Child, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid belongs to our un-reaped child.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Kills (SIGKILL) and reaps a child, ignoring "already exited".
pub(crate) fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits up to `timeout` for `child` to exit; returns its status if it did.
pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    wait_for(timeout, || child.try_wait().ok().flatten())
}

/// Copies the directory `from` recursively to `to` (which must not exist yet): files with
/// their bytes and permissions, subdirectories; symlinks are refused with an error.
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    if to.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("copy_dir: {} exists", to.display()),
        ));
    }
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&src, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
        } else {
            return Err(io::Error::other(format!(
                "copy_dir: {} is neither a file nor a directory",
                src.display()
            )));
        }
    }
    Ok(())
}
