//! The tool's side of the floor: starts this binary as `--mode floor-server` ([`crate::floor`]),
//! learns its address, and drives the series through its stdin and stdout — a change is *sent*
//! just before its sequence number is written to the pipe (as a change to lainlet is sent just
//! before its put), and the floor answers when every socket has the frame.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::sync::oneshot;

use crate::clients::Clock;
use crate::procs::loopback;
use crate::stats::Sent;

/// How long the floor may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The floor's control pipe.
struct Ctl {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Ctl {
    /// Sends one command line and reads the answer line.
    fn ask(&mut self, command: &str) -> anyhow::Result<String> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let mut answer = String::new();
        if self.stdout.read_line(&mut answer)? == 0 {
            bail!("the floor ended (see its messages above)");
        }
        Ok(answer.trim_end().to_owned())
    }
}

/// A running floor process. Dropping it ends the floor (its stdin closes; SIGKILL after 5 s).
pub struct Remote {
    addr: SocketAddr,
    child: Child,
    ctl: Arc<Mutex<Option<Ctl>>>,
}

impl Remote {
    /// Starts `exe` (this binary) with `args` (`--mode floor-server …`) and waits for its
    /// address.
    pub fn start(exe: &Path, args: &[String]) -> anyhow::Result<Remote> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the floor ({})", exe.display()))?;
        let stdin = child.stdin.take().context("the floor's stdin")?;
        let stdout = child.stdout.take().context("the floor's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            let read = stdout.read_line(&mut line).map(|_| line);
            let _ = tx.send((read, stdout));
        });
        let (line, stdout) = match rx.recv_timeout(START_TIMEOUT) {
            Ok((Ok(line), stdout)) => (line, stdout),
            Ok((Err(e), _)) => {
                let _ = child.kill();
                return Err(e).context("reading the floor's address");
            }
            Err(_) => {
                let _ = child.kill();
                bail!("the floor did not start within {START_TIMEOUT:?}");
            }
        };
        let addr = match line.trim().strip_prefix("listening ") {
            Some(a) => loopback(a)?,
            None => {
                let _ = child.kill();
                bail!("the floor did not start (it said {:?})", line.trim());
            }
        };
        Ok(Remote {
            addr,
            child,
            ctl: Arc::new(Mutex::new(Some(Ctl { stdin, stdout }))),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Watchers answered, refused, given up (write errors), and conflated frames.
    pub fn stats(&mut self) -> anyhow::Result<[u64; 4]> {
        let mut ctl = self.ctl.lock().map_err(|_| anyhow!("the floor's pipe"))?;
        let answer = ctl
            .as_mut()
            .context("the floor's pipe is closed")?
            .ask("stats")?;
        let numbers: Vec<u64> = answer
            .strip_prefix("stats ")
            .map(|s| s.split(' ').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default();
        numbers
            .try_into()
            .map_err(|_| anyhow!("the floor answered {answer:?} to stats"))
    }

    /// Asks for the changes `seqs` at `rate` per second from a thread of its own (paced like
    /// the etcd writer); the answer comes on the returned channel.
    pub fn start_series(
        &mut self,
        clock: Clock,
        seqs: Vec<u32>,
        rate: f64,
    ) -> anyhow::Result<oneshot::Receiver<anyhow::Result<Vec<Sent>>>> {
        let ctl = self.ctl.clone();
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("floor-series".into())
            .spawn(move || {
                let result = match ctl.lock().as_deref_mut() {
                    Ok(Some(ctl)) => series(ctl, clock, seqs, rate),
                    _ => Err(anyhow!("the floor's pipe is closed")),
                };
                let _ = tx.send(result);
            })
            .context("starting the floor's series thread")?;
        Ok(rx)
    }
}

fn series(ctl: &mut Ctl, clock: Clock, seqs: Vec<u32>, rate: f64) -> anyhow::Result<Vec<Sent>> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut sent = Vec::with_capacity(seqs.len());
    let mut tick = Instant::now();
    for seq in seqs {
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let t0 = clock.now();
        let answer = ctl.ask(&seq.to_string())?;
        let t1 = clock.now();
        if answer != format!("done {seq}") {
            bail!("the floor answered {answer:?} to change {seq}");
        }
        sent.push(Sent {
            seq,
            sent: t0,
            acked: t1,
        });
        tick = (tick + period).max(Instant::now());
    }
    Ok(sent)
}

impl Drop for Remote {
    fn drop(&mut self) {
        // closes its stdin (unless a series still runs): the floor ends
        if let Ok(mut ctl) = self.ctl.try_lock() {
            ctl.take();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
