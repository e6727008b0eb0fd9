//! The floor (`--mode floor`): the least a server on this machine must do to deliver one change
//! to N SSE watchers, measured with the same clients as lainlet.
//!
//! A minimal writer, run as a process of its own (this binary, started by
//! [`crate::floor_remote`]: the clients and the server each hold N sockets, and both ends in
//! one process would not fit this machine's open-files limit at 10,000 watchers; as a process
//! of its own it is also measured like lainlet, RSS and CPU from `/proc`). An acceptor thread
//! answers each watch request with lainlet's SSE head and `init` frame, then hands the socket
//! (non-blocking) to one of `threads` writers, each owning a slice of the connections. For
//! every change the tool sends a sequence number down a pipe; the frame of that change — the
//! exact bytes lainlet sends for it ([`crate::render`]: same size, id and sequence marker) —
//! is already rendered, and each writer writes it to each of its sockets with one `write`
//! (`send`) call, in a plain loop, then the floor answers `done`. A socket that cannot take
//! the whole frame keeps the rest and at most one newer frame (conflation, like lainlet) and
//! is flushed when it becomes writable. No parsing, no locks shared between writers, no
//! allocation per frame, no wakeups per watcher: what remains is the kernel's TCP send path.

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use lainlet_core::SSE_HEAD;

use crate::render::Frames;

/// Listen backlog (the clients open up to `--connect-concurrency` at once).
const BACKLOG: libc::c_int = 4096;
/// How long the acceptor waits for a request head, and to write the head and `init`.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How often idle threads look at the stop flag.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How long one change may take to be handed to every socket.
const PASS_TIMEOUT: Duration = Duration::from_secs(60);

/// What the floor serves.
pub struct Params {
    /// Writer threads (each owns every `threads`-th connection).
    pub threads: usize,
    /// The watch paths served, each with the key whose changes it shows.
    pub paths: Vec<String>,
    /// The changing key and its current value (the `init` frames show it).
    pub key: String,
    pub first: Vec<u8>,
}

/// The value of the key with sequence number `seq` (the scenario's).
pub type Values = Box<dyn Fn(u32) -> Vec<u8> + Send>;

/// A running floor server. Dropping it stops its threads and closes every connection.
pub struct Floor {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// One sender per writer.
    writers: Vec<Sender<Pass>>,
    threads: Vec<JoinHandle<()>>,
    /// The frames of each path, followed change by change.
    frames: Vec<Frames>,
}

struct Shared {
    stop: AtomicBool,
    /// Connections waiting to be taken by their writer.
    incoming: Vec<Mutex<Vec<Conn>>>,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    /// Connections a writer gave up on (write error).
    dead: AtomicUsize,
    /// (connection, change) pairs conflated because the socket was still busy.
    conflated: AtomicUsize,
}

/// One change for one writer: the frame of each path, and where to say it is done.
struct Pass {
    frames: Arc<Vec<Arc<[u8]>>>,
    done: Sender<()>,
}

/// One watch connection.
struct Conn {
    tcp: TcpStream,
    path: usize,
    /// The frame being written and how much of it is written.
    partial: Option<(Arc<[u8]>, usize)>,
    /// The newest frame waiting behind it.
    queued: Option<Arc<[u8]>>,
}

impl Floor {
    /// Binds a free loopback port and starts the acceptor and the writers.
    pub fn start(params: Params) -> anyhow::Result<Floor> {
        if params.threads == 0 || params.paths.is_empty() {
            bail!("the floor needs at least one thread and one path");
        }
        let mut frames = Vec::new();
        let mut heads = Vec::new();
        for p in &params.paths {
            let (f, init) = Frames::open(p, &params.key, params.first.clone())
                .with_context(|| format!("rendering lainlet's frames of {p}"))?;
            let mut head = SSE_HEAD.to_vec();
            head.extend_from_slice(&init);
            heads.push(head);
            frames.push(f);
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("floor: binding")?;
        // SAFETY: listen(2) on our own bound socket; a second call only resizes the backlog.
        unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
        let addr = listener.local_addr()?;
        let t = params.threads;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            incoming: (0..t).map(|_| Mutex::new(Vec::new())).collect(),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            dead: AtomicUsize::new(0),
            conflated: AtomicUsize::new(0),
        });
        let mut threads = Vec::new();
        let (s, paths) = (shared.clone(), params.paths.clone());
        threads.push(spawn("floor-accept", move || {
            accept(listener, &s, &paths, &heads)
        })?);
        let mut writers = Vec::new();
        for i in 0..t {
            let (tx, rx) = mpsc::channel();
            let s = shared.clone();
            threads.push(spawn(&format!("floor-write-{i}"), move || {
                write(i, rx, &s)
            })?);
            writers.push(tx);
        }
        Ok(Floor {
            addr,
            shared,
            writers,
            threads,
            frames,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections answered (head and `init` written), and requests refused.
    pub fn accepted(&self) -> (usize, usize) {
        let s = &self.shared;
        (
            s.accepted.load(Ordering::Relaxed),
            s.refused.load(Ordering::Relaxed),
        )
    }

    /// Connections given up on (write errors), and conflated (connection, change) pairs.
    pub fn troubles(&self) -> (usize, usize) {
        let s = &self.shared;
        (
            s.dead.load(Ordering::Relaxed),
            s.conflated.load(Ordering::Relaxed),
        )
    }

    /// The frame of every path when the key takes `value` (rendered by lainlet's engine).
    pub fn render(&mut self, value: &[u8]) -> anyhow::Result<Arc<Vec<Arc<[u8]>>>> {
        let frames = self
            .frames
            .iter_mut()
            .map(|f| f.next(value.to_vec()).map(Arc::<[u8]>::from))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Arc::new(frames))
    }

    /// Hands `frames` (from [`Floor::render`]) to every writer and waits until each has
    /// handed it to all its sockets.
    pub fn pass(&self, frames: &Arc<Vec<Arc<[u8]>>>) -> anyhow::Result<()> {
        let (done_tx, done_rx) = mpsc::channel();
        for w in &self.writers {
            let pass = Pass {
                frames: frames.clone(),
                done: done_tx.clone(),
            };
            w.send(pass)
                .map_err(|_| anyhow!("a floor writer stopped"))?;
        }
        for _ in &self.writers {
            done_rx
                .recv_timeout(PASS_TIMEOUT)
                .map_err(|_| anyhow!("a floor writer took more than {PASS_TIMEOUT:?}"))?;
        }
        Ok(())
    }
}

/// `--mode floor-server` (started by [`crate::floor_remote`]): starts a floor, prints
/// `listening ADDR`, then for every line of stdin answers: `SEQ` → writes the frame of the
/// key's value `values(SEQ)` to every watcher, `done SEQ`; `stats` → `stats ACCEPTED REFUSED
/// DEAD CONFLATED`. The next change's frame is rendered ahead (SEQ + 1), before it is asked
/// for. Ends at the end of stdin (the tool is gone) or after `limit`.
pub fn serve(
    params: Params,
    first_seq: u32,
    values: Values,
    limit: Duration,
) -> anyhow::Result<()> {
    let mut floor = Floor::start(params)?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening {}", floor.addr())?;
    out.flush()?;
    let deadline = Instant::now() + limit;
    let mut ahead = (first_seq + 1, floor.render(&values(first_seq + 1))?);
    let mut lines = io::stdin().lock().lines();
    while Instant::now() < deadline {
        let Some(line) = lines.next() else { break };
        let line = line?;
        let line = line.trim();
        if line == "stats" {
            let ((a, r), (d, c)) = (floor.accepted(), floor.troubles());
            writeln!(out, "stats {a} {r} {d} {c}")?;
        } else if let Ok(seq) = line.parse::<u32>() {
            if ahead.0 != seq {
                ahead = (seq, floor.render(&values(seq))?);
            }
            floor.pass(&ahead.1)?;
            writeln!(out, "done {seq}")?;
            out.flush()?;
            ahead = (seq + 1, floor.render(&values(seq + 1))?);
            continue;
        } else {
            writeln!(out, "error unknown command {line:?}")?;
        }
        out.flush()?;
    }
    Ok(())
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.writers.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("starting the {name} thread"))
}

/// Accepts watch connections until stopped: reads the request head, answers a known path
/// with its head and `init` frame, and hands the socket to writer `k mod threads`.
fn accept(listener: TcpListener, s: &Shared, paths: &[String], heads: &[Vec<u8>]) {
    let mut next = 0;
    while !s.stop.load(Ordering::Relaxed) {
        if !wait_fd(listener.as_raw_fd(), libc::POLLIN, IDLE_POLL) {
            continue;
        }
        let tcp = match listener.accept() {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // out of file descriptors, or the like: say so once a while, do not spin
                eprintln!("floor: accept: {e}");
                std::thread::sleep(IDLE_POLL);
                continue;
            }
        };
        match answer(&tcp, paths, heads) {
            Ok(path) if tcp.set_nonblocking(true).is_ok() => {
                let conn = Conn {
                    tcp,
                    path,
                    partial: None,
                    queued: None,
                };
                let k = next % s.incoming.len();
                next += 1;
                s.incoming[k].lock().expect("floor queue").push(conn);
                s.accepted.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                s.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Reads one request head; a `GET` of a known path gets its head and `init` frame (returns
/// the path's index), anything else a `404` or `400` (an error).
fn answer(mut tcp: &TcpStream, paths: &[String], heads: &[Vec<u8>]) -> io::Result<usize> {
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(HEAD_TIMEOUT))?;
    tcp.set_write_timeout(Some(HEAD_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Err(io::Error::other("no complete request head"));
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next(), words.next());
    if method != Some(b"GET") {
        tcp.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Err(io::Error::other("not a GET"));
    }
    let Some(i) = target.and_then(|t| paths.iter().position(|p| p.as_bytes() == t)) else {
        tcp.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Err(io::Error::other("unknown path"));
    };
    tcp.write_all(&heads[i])?;
    Ok(i)
}

/// Writer `i`: takes its new connections, and for every pass writes the frame to each of
/// them; between passes flushes sockets that could not take a whole frame.
fn write(i: usize, rx: Receiver<Pass>, s: &Shared) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut busy = false;
    while !s.stop.load(Ordering::Relaxed) {
        let wait = if busy {
            Duration::from_millis(1)
        } else {
            IDLE_POLL
        };
        let pass = match rx.recv_timeout(wait) {
            Ok(pass) => Some(pass),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        {
            let mut incoming = s.incoming[i].lock().expect("floor queue");
            conns.append(&mut incoming);
        }
        if let Some(pass) = pass {
            for c in conns.iter_mut() {
                c.offer(&pass.frames[c.path], s);
                c.flush(s);
            }
            let _ = pass.done.send(());
        } else if busy {
            flush_writable(&mut conns, s);
        }
        conns.retain(|c| c.path != usize::MAX);
        busy = conns.iter().any(|c| c.partial.is_some());
    }
}

/// Flushes the busy connections the kernel says are writable (waits ≤ 1 ms).
fn flush_writable(conns: &mut [Conn], s: &Shared) {
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut which = Vec::new();
    for (k, c) in conns.iter().enumerate() {
        if c.partial.is_some() {
            fds.push(libc::pollfd {
                fd: c.tcp.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            });
            which.push(k);
        }
    }
    // SAFETY: poll(2) on an array of pollfd we own, of the length we pass.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1) };
    if ready <= 0 {
        return;
    }
    for (fd, k) in fds.iter().zip(which) {
        if fd.revents != 0 {
            conns[k].flush(s);
        }
    }
}

/// Whether `fd` gets `events` within `limit`.
fn wait_fd(fd: libc::c_int, events: libc::c_short, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd we own.
    unsafe { libc::poll(&mut p, 1, limit.as_millis() as libc::c_int) > 0 }
}

impl Conn {
    /// A new frame for this connection: written next, or (behind a partly written one)
    /// waiting as the newest.
    fn offer(&mut self, frame: &Arc<[u8]>, s: &Shared) {
        if self.path == usize::MAX {
            return;
        }
        if self.partial.is_none() {
            self.partial = Some((frame.clone(), 0));
        } else if self.queued.replace(frame.clone()).is_some() {
            s.conflated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes what it can without blocking; a failed socket is marked dead (`path` MAX).
    fn flush(&mut self, s: &Shared) {
        while let Some((frame, at)) = &mut self.partial {
            match (&self.tcp).write(&frame[*at..]) {
                Ok(n) if n > 0 => {
                    *at += n;
                    if *at == frame.len() {
                        self.partial = self.queued.take().map(|f| (f, 0));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => {
                    self.partial = None;
                    self.queued = None;
                    self.path = usize::MAX;
                    s.dead.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::find_seq;

    fn params(threads: usize) -> Params {
        Params {
            threads,
            paths: vec!["/v2/configwatcher?target=load/stamp&watch=1".into()],
            key: "/lain/config/load/stamp".into(),
            first: b"LOADSEQ0000000001".to_vec(),
        }
    }

    fn read_until(tcp: &mut TcpStream, got: &mut Vec<u8>, seq: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        while !got
            .windows(17)
            .any(|w| w == format!("LOADSEQ{seq:010}").as_bytes())
        {
            assert!(
                Instant::now() < deadline,
                "{}",
                String::from_utf8_lossy(got)
            );
            let n = tcp.read(&mut buf).unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(got));
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn watchers_get_the_head_init_and_every_change() {
        for threads in [1, 2] {
            let mut floor = Floor::start(params(threads)).unwrap();
            let mut clients: Vec<TcpStream> = (0..5)
                .map(|_| {
                    let mut c = TcpStream::connect(floor.addr()).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let req = "GET /v2/configwatcher?target=load/stamp&watch=1 HTTP/1.1\r\n\r\n";
                    c.write_all(req.as_bytes()).unwrap();
                    c
                })
                .collect();
            let mut got = vec![Vec::new(); clients.len()];
            for (c, g) in clients.iter_mut().zip(&mut got) {
                read_until(c, g, 1);
                assert!(g.starts_with(SSE_HEAD));
            }
            assert_eq!(floor.accepted(), (5, 0));
            for seq in 2..=4u32 {
                let frames = floor
                    .render(format!("LOADSEQ{seq:010}").as_bytes())
                    .unwrap();
                floor.pass(&frames).unwrap();
            }
            for (c, g) in clients.iter_mut().zip(&mut got) {
                read_until(c, g, 4);
                let text = String::from_utf8_lossy(g);
                assert!(text.contains("id: 4\nevent: update\n"), "{text}");
                assert_eq!(find_seq(&g[g.len() - 40..]), Some(4), "{text}");
            }
            assert_eq!(floor.troubles(), (0, 0));
            assert!(floor.render(b"LOADSEQ0000000004").is_err(), "unchanged");
        }
    }

    #[test]
    fn other_requests_are_refused() {
        let floor = Floor::start(params(1)).unwrap();
        for req in [
            "GET /v2/other?watch=1 HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\n\r\n",
        ] {
            let mut c = TcpStream::connect(floor.addr()).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(req.as_bytes()).unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while floor.accepted() != (0, 2) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(floor.accepted(), (0, 2));
    }
}
