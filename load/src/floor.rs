//! The floor (`--mode floor`): the least a server on this machine must do to deliver one change
//! to N SSE watchers, measured with the same clients as lainlet.
//!
//! A minimal writer inside the tool, on threads of its own: an acceptor answers each watch
//! request with lainlet's SSE head and `init` frame, then hands the socket (non-blocking) to
//! one of `threads` writers, each owning a slice of the connections. For every change the
//! coordinator stamps the time it is *sent*, and each writer writes one pre-rendered frame —
//! the exact bytes lainlet sends for that change ([`crate::render`]: same size, id and sequence
//! marker), rendered before the change is timed — to each of its sockets with one `write`
//! (`send`) call, in a plain loop. A socket that cannot take the whole frame keeps the rest
//! and at most one newer frame (conflation, like lainlet) and is flushed when it becomes
//! writable. No parsing, no locks shared between writers, no allocation per frame, no wakeups
//! per watcher: what remains is the kernel's TCP send path.
//!
//! The floor's CPU time is the sum of its threads' own CPU clocks (`CLOCK_THREAD_CPUTIME_ID`),
//! its memory per watcher the state it keeps per connection.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use lainlet_core::SSE_HEAD;
use tokio::sync::oneshot;

use crate::clients::Clock;
use crate::render::Frames;
use crate::stats::Sent;

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

/// A running floor server. Dropping it stops its threads and closes every connection.
pub struct Floor {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// One sender per writer.
    writers: Vec<Sender<Pass>>,
    threads: Vec<JoinHandle<()>>,
    /// The frames of each path, followed change by change.
    frames: Option<Vec<Frames>>,
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
    /// CPU nanoseconds of each floor thread (acceptor, writers, coordinator), as each last
    /// saw its own clock.
    cpu_ns: Vec<AtomicU64>,
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
            cpu_ns: (0..t + 2).map(|_| AtomicU64::new(0)).collect(),
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
            frames: Some(frames),
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

    /// CPU seconds of the floor's threads so far.
    pub fn cpu_secs(&self) -> f64 {
        let ns: u64 = self
            .shared
            .cpu_ns
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        ns as f64 / 1e9
    }

    /// The floor's memory per connection: the state it keeps for one (KiB).
    pub fn kib_per_connection() -> f64 {
        std::mem::size_of::<Conn>() as f64 / 1024.0
    }

    /// Writes the changes `values` at `rate` per second from a coordinator thread: for each,
    /// renders lainlet's frame of every path (untimed), waits for its tick, stamps it sent,
    /// hands it to every writer and waits until each has handed it to all its sockets (the
    /// "put" time). The answer comes on the returned channel (the caller's runtime keeps
    /// running meanwhile). Can run once.
    pub fn start_series(
        &mut self,
        clock: Clock,
        values: Vec<(u32, Vec<u8>)>,
        rate: f64,
    ) -> anyhow::Result<oneshot::Receiver<anyhow::Result<Vec<Sent>>>> {
        let mut frames = self
            .frames
            .take()
            .ok_or_else(|| anyhow!("the floor's series runs once"))?;
        let writers = self.writers.clone();
        let shared = self.shared.clone();
        let (tx, rx) = oneshot::channel();
        spawn("floor-series", move || {
            let slot = shared.cpu_ns.len() - 1;
            let result = coordinate(clock, &mut frames, &writers, values, rate);
            shared.cpu_ns[slot].store(thread_cpu_ns(), Ordering::Relaxed);
            let _ = tx.send(result);
        })?;
        Ok(rx)
    }
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

/// This thread's CPU time in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn coordinate(
    clock: Clock,
    frames: &mut [Frames],
    writers: &[Sender<Pass>],
    values: Vec<(u32, Vec<u8>)>,
    rate: f64,
) -> anyhow::Result<Vec<Sent>> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut sent = Vec::with_capacity(values.len());
    let mut tick = Instant::now();
    for (seq, value) in values {
        let rendered = frames
            .iter_mut()
            .map(|f| f.next(value.clone()).map(Arc::<[u8]>::from))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let rendered = Arc::new(rendered);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let (done_tx, done_rx) = mpsc::channel();
        let t0 = clock.now();
        for w in writers {
            let pass = Pass {
                frames: rendered.clone(),
                done: done_tx.clone(),
            };
            w.send(pass)
                .map_err(|_| anyhow!("a floor writer stopped"))?;
        }
        for _ in writers {
            done_rx
                .recv_timeout(PASS_TIMEOUT)
                .map_err(|_| anyhow!("a floor writer took more than {PASS_TIMEOUT:?}"))?;
        }
        let t1 = clock.now();
        sent.push(Sent {
            seq,
            sent: t0,
            acked: t1,
        });
        tick += period;
        tick = tick.max(Instant::now());
    }
    Ok(sent)
}

/// Accepts watch connections until stopped: reads the request head, answers a known path
/// with its head and `init` frame, and hands the socket to writer `k mod threads`.
fn accept(listener: TcpListener, s: &Shared, paths: &[String], heads: &[Vec<u8>]) {
    let slot = s.cpu_ns.len() - 2;
    let mut next = 0;
    while !s.stop.load(Ordering::Relaxed) {
        s.cpu_ns[slot].store(thread_cpu_ns(), Ordering::Relaxed);
        if !wait_fd(listener.as_raw_fd(), libc::POLLIN, IDLE_POLL) {
            continue;
        }
        let Ok((tcp, _)) = listener.accept() else {
            continue;
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
        s.cpu_ns[i].store(thread_cpu_ns(), Ordering::Relaxed);
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
            let values = (2..=4)
                .map(|s| (s, format!("LOADSEQ{s:010}").into_bytes()))
                .collect();
            let rx = floor.start_series(Clock::new(), values, 1000.0).unwrap();
            let sent = rx.blocking_recv().unwrap().unwrap();
            assert_eq!(sent.iter().map(|s| s.seq).collect::<Vec<_>>(), [2, 3, 4]);
            for (c, g) in clients.iter_mut().zip(&mut got) {
                read_until(c, g, 4);
                let text = String::from_utf8_lossy(g);
                assert!(text.contains("id: 4\nevent: update\n"), "{text}");
                assert_eq!(find_seq(&g[g.len() - 40..]), Some(4), "{text}");
            }
            assert_eq!(floor.troubles(), (0, 0));
            assert!(floor.start_series(Clock::new(), Vec::new(), 1.0).is_err());
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
