//! Python test clients (`tests/python/*.py`) run with the interpreter of the test virtualenv
//! that `scripts/ensure-deps.sh --with-python` creates at `target/test-venv` (pinned packages
//! from `tests/python/requirements.txt`: webrouter's `sseclient`, `grpcio`, `selenium`).
//!
//! Each script runs in its own process group, so a timeout (or drop) also ends what it started
//! (chromedriver, Chromium). Its stdout and stderr are collected while it runs and printed when it
//! fails (non-zero exit or timeout).

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::service::workspace_root;
use super::util::{wait_child, wait_until};

/// Environment variable naming the test virtualenv (default `<workspace>/target/test-venv`).
pub const VENV_ENV: &str = "LAINLET_TEST_VENV";

/// The test virtualenv's directory: `$LAINLET_TEST_VENV`, else `<workspace>/target/test-venv`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os(VENV_ENV).filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => workspace_root().join("target/test-venv"),
    }
}

/// The directory of the Python test scripts, `<workspace>/tests/python`.
pub fn python_dir() -> PathBuf {
    workspace_root().join("tests/python")
}

/// The virtualenv's interpreter (`<venv>/bin/python`), or a `NotFound` error saying to run
/// `scripts/ensure-deps.sh --with-python`.
pub fn python() -> io::Result<PathBuf> {
    let py = venv_dir().join("bin/python");
    if py.is_file() {
        Ok(py)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no Python test venv at {} (no {}): run `scripts/ensure-deps.sh --with-python` \
                 (or set {VENV_ENV})",
                venv_dir().display(),
                py.display()
            ),
        ))
    }
}

/// A running Python test script (see [`spawn_python`]); its process group is killed on drop.
#[derive(Debug)]
pub struct PythonProcess {
    script: String,
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

/// Starts `tests/python/<script>` with the venv's python, `args`, and `env` added to the
/// inherited environment (plus `PYTHONUNBUFFERED=1`, `PYTHONDONTWRITEBYTECODE=1`), in its own
/// process group, with stdout and stderr collected.
pub fn spawn_python(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> io::Result<PythonProcess> {
    let py = python()?;
    let path = python_dir().join(script);
    if !path.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no Python test script {}", path.display()),
        ));
    }
    let mut cmd = Command::new(&py);
    cmd.arg(&path)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("spawn {} {script}: {e}", py.display())))?;
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers = vec![
        collect(
            child.stdout.take().expect("piped stdout"),
            Arc::clone(&stdout),
        ),
        collect(
            child.stderr.take().expect("piped stderr"),
            Arc::clone(&stderr),
        ),
    ];
    Ok(PythonProcess {
        script: script.to_owned(),
        child: Some(child),
        stdout,
        stderr,
        readers,
    })
}

/// Runs `tests/python/<script>` with the venv's python (see [`spawn_python`]) and waits up to
/// `timeout` for it to exit. A non-zero exit is returned as `Ok` (check `output.status`); on a
/// timeout the script's process group is killed and a `TimedOut` error returned. Either way
/// its stdout and stderr are printed to stderr.
pub fn run_python(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<Output> {
    spawn_python(script, args, env)?.wait(timeout)
}

impl PythonProcess {
    /// The process id (also the process group id), while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the script has written to stdout so far (lossy UTF-8).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stdout)).into_owned()
    }

    /// Everything the script has written to stderr so far (lossy UTF-8).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// Polls until `cond(stdout so far)` holds or `timeout`; whether it did.
    pub fn wait_stdout(&self, timeout: Duration, mut cond: impl FnMut(&str) -> bool) -> bool {
        wait_until(timeout, || cond(&self.stdout_text()))
    }

    /// Waits up to `timeout` for the script to exit and returns its output; see [`run_python`].
    pub fn wait(mut self, timeout: Duration) -> io::Result<Output> {
        let mut child = self.child.take().expect("python child");
        let status = wait_child(&mut child, timeout);
        kill_group(&child);
        let _ = child.wait();
        // the pipes close when the script (and anything it started) is gone
        wait_until(Duration::from_secs(2), || {
            self.readers.iter().all(JoinHandle::is_finished)
        });
        let output = Output {
            status: status.unwrap_or_default(),
            stdout: lock(&self.stdout).clone(),
            stderr: lock(&self.stderr).clone(),
        };
        match status {
            Some(s) if s.success() => Ok(output),
            Some(s) => {
                self.print_output(&format!("failed ({s})"));
                Ok(output)
            }
            None => {
                self.print_output(&format!("killed after {timeout:?}"));
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("python {} did not exit within {timeout:?}", self.script),
                ))
            }
        }
    }

    /// Prints the script's stdout and stderr to stderr under a heading saying `what` happened.
    pub fn print_output(&self, what: &str) {
        eprintln!(
            "----- python {} {what}: stdout -----\n{}\n----- stderr -----\n{}\n----- end of python {} -----",
            self.script,
            self.stdout_text(),
            self.stderr_text(),
            self.script
        );
    }
}

impl Drop for PythonProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.wait();
            if thread::panicking() {
                self.print_output("dropped during a panic");
            }
        }
    }
}

/// SIGKILLs the process group led by `child` (the script and whatever it started), ignoring
/// "no such process".
fn kill_group(child: &Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names the process
        // group that `process_group(0)` created for this child (alive while any member is).
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

fn collect(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            lock(&into).extend_from_slice(&buf[..n]);
        }
    })
}

fn lock(m: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
