//! The watch clients: SSE streams on lainlet (HTTP/1.1 over a plain `TcpStream`, parsed here)
//! and direct etcd watches (etcd-client). Both record, for every frame or event that carries a
//! sequence marker, when it was received; the SSE client also records when the bytes arrived
//! in its socket (the kernel's `SO_TIMESTAMPNS`), which leaves out this tool's own scheduling
//! delay.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::WatchClient;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};

/// The marker every written value carries: `LOADSEQ` and the sequence number.
pub const MARKER: &str = "LOADSEQ";

/// How long one client may take to connect and get its first answer.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// A common time base: monotonic instants and wall-clock kernel timestamps both become
/// nanoseconds since the same moment.
#[derive(Clone, Copy)]
pub struct Clock {
    start: Instant,
    wall_ns: i128,
}

impl Clock {
    /// Now is zero.
    pub fn new() -> Clock {
        let start = Instant::now();
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        Clock { start, wall_ns }
    }

    /// Nanoseconds since the base.
    pub fn now(&self) -> i64 {
        self.start.elapsed().as_nanos() as i64
    }

    fn wall_to_ns(&self, ts: &libc::timespec) -> i64 {
        (ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128 - self.wall_ns) as i64
    }
}

/// One frame (or etcd event) carrying a sequence number.
#[derive(Clone, Copy, Debug)]
pub struct Receipt {
    /// The sequence number found in it.
    pub seq: u32,
    /// When the client task had it ([`Clock`] ns).
    pub received: i64,
    /// When its last bytes arrived in the socket (kernel timestamp), if known.
    pub arrived: Option<i64>,
}

/// What one client saw.
#[derive(Debug, Default)]
pub struct ClientLog {
    /// Frames with a sequence number, in arrival order.
    pub receipts: Vec<Receipt>,
    /// Why it failed (connect error, bad status, stream ended early), if it did.
    pub error: Option<String>,
    /// `event: error` frames (lainlet) or cancelled watches (etcd).
    pub error_frames: u32,
    /// Frames without a marker (heartbeats, other keys).
    pub other_frames: u32,
}

/// Counters the orchestrator polls while clients run.
#[derive(Default)]
pub struct Progress {
    /// Clients that have their first answer (SSE `init`, etcd `created`).
    pub opened: AtomicUsize,
    /// Clients that failed before or after opening.
    pub failed: AtomicUsize,
    /// Clients that have received a sequence number ≥ the target.
    pub done: AtomicUsize,
    /// The target sequence number (set before the series starts).
    pub target: std::sync::atomic::AtomicU32,
}

/// Per-client state shared by both kinds.
struct Tracker<'a> {
    progress: &'a Progress,
    log: ClientLog,
    opened: bool,
    done: bool,
    permit: Option<OwnedSemaphorePermit>,
}

impl<'a> Tracker<'a> {
    fn new(progress: &'a Progress, permit: OwnedSemaphorePermit, expected: usize) -> Self {
        Tracker {
            progress,
            log: ClientLog {
                receipts: Vec::with_capacity(expected),
                ..ClientLog::default()
            },
            opened: false,
            done: false,
            permit: Some(permit),
        }
    }

    fn open(&mut self) {
        if !self.opened {
            self.opened = true;
            self.permit = None;
            self.progress.opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn receipt(&mut self, r: Receipt) {
        self.log.receipts.push(r);
        let target = self.progress.target.load(Ordering::Relaxed);
        if !self.done && target > 0 && r.seq >= target {
            self.done = true;
            self.progress.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fail(mut self, why: String) -> ClientLog {
        self.progress.failed.fetch_add(1, Ordering::Relaxed);
        self.log.error = Some(why);
        self.log
    }
}

/// The sequence number after the first [`MARKER`] in `bytes`.
pub fn find_seq(bytes: &[u8]) -> Option<u32> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()?,
    };
    let at = text.find(MARKER)? + MARKER.len();
    let digits = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Runs one SSE watch of `path` on lainlet at `addr` until `stop`: connects (holding `permit`
/// until the first frame), then records every frame that carries a sequence number.
pub async fn sse_client(
    addr: SocketAddr,
    path: String,
    clock: Clock,
    progress: Arc<Progress>,
    permit: OwnedSemaphorePermit,
    expected: usize,
    mut stop: watch::Receiver<bool>,
) -> ClientLog {
    let mut t = Tracker::new(&progress, permit, expected);
    let connecting = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        enable_timestamps(&tcp);
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        tcp.write_all(req.as_bytes()).await?;
        Ok::<_, io::Error>(tcp)
    };
    let tcp = match tokio::time::timeout(OPEN_TIMEOUT, connecting).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return t.fail(format!("connect: {e}")),
        Err(_) => return t.fail("connect: timed out".into()),
    };
    let opened_by = tokio::time::Instant::now() + OPEN_TIMEOUT;
    let mut pending: Vec<u8> = Vec::new();
    let mut head_done = false;
    let mut scratch = vec![0u8; 16 * 1024];
    loop {
        let ready = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return t.log,
            () = tokio::time::sleep_until(opened_by), if !t.opened => {
                return t.fail("no first frame within the open timeout".into());
            }
            r = tcp.readable() => r,
        };
        if let Err(e) = ready {
            return t.fail(format!("read: {e}"));
        }
        loop {
            let (n, kernel) = match recv_timestamped(&tcp, &mut scratch) {
                Ok((0, _)) => {
                    return t.fail(format!(
                        "stream closed by the server{}",
                        if head_done { "" } else { " before the head" }
                    ))
                }
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return t.fail(format!("read: {e}")),
            };
            let received = clock.now();
            let arrived = kernel.map(|ts| clock.wall_to_ns(&ts));
            pending.extend_from_slice(&scratch[..n]);
            let mut used = 0;
            if !head_done {
                let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                if !pending.starts_with(b"HTTP/1.1 200") {
                    let line = String::from_utf8_lossy(&pending[..end.min(200)]).into_owned();
                    return t.fail(format!("answer: {line}"));
                }
                head_done = true;
                used = end + 4;
            }
            while let Some(len) = pending[used..].windows(2).position(|w| w == b"\n\n") {
                let frame = &pending[used..used + len + 2];
                used += len + 2;
                if frame.windows(12).any(|w| w == b"event: error") {
                    t.log.error_frames += 1;
                }
                t.open();
                match find_seq(frame) {
                    Some(seq) => {
                        t.receipt(Receipt {
                            seq,
                            received,
                            arrived,
                        });
                    }
                    None => t.log.other_frames += 1,
                }
            }
            pending.drain(..used);
        }
    }
}

/// Asks the kernel to timestamp arriving packets (`SO_TIMESTAMPNS`); best effort.
fn enable_timestamps(tcp: &TcpStream) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// One non-blocking `recvmsg`: bytes read and the kernel's receive timestamp, if sent.
fn recv_timestamped(
    tcp: &TcpStream,
    buf: &mut [u8],
) -> io::Result<(usize, Option<libc::timespec>)> {
    tcp.try_io(Interest::READABLE, || {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        // SAFETY: msghdr is plain data; zero is a valid initial value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg points at live buffers of the stated sizes for the duration of the call.
        let n = unsafe { libc::recvmsg(tcp.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ts = None;
        // SAFETY: walking the control messages the kernel wrote into `control`, within
        // msg_controllen, with the libc CMSG macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    ts = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(c).cast::<libc::timespec>(),
                    ));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok((n as usize, ts))
    })
}

/// Runs one direct etcd watch of `key` (its own gRPC watch stream on a shared connection)
/// until `stop`, recording every event that carries a sequence number.
pub async fn etcd_client(
    mut client: WatchClient,
    key: String,
    clock: Clock,
    progress: Arc<Progress>,
    permit: OwnedSemaphorePermit,
    expected: usize,
    mut stop: watch::Receiver<bool>,
) -> ClientLog {
    let mut t = Tracker::new(&progress, permit, expected);
    let mut stream = match tokio::time::timeout(OPEN_TIMEOUT, client.watch(key, None)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return t.fail(format!("watch: {e}")),
        Err(_) => return t.fail("watch: timed out".into()),
    };
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return t.log,
            m = stream.message() => m,
        };
        let received = clock.now();
        let response = match message {
            Ok(Some(r)) => r,
            Ok(None) => return t.fail("watch stream closed by etcd".into()),
            Err(e) => return t.fail(format!("watch: {e}")),
        };
        if response.created() {
            t.open();
        }
        if response.canceled() {
            t.log.error_frames += 1;
            return t.fail(format!("watch canceled: {}", response.cancel_reason()));
        }
        for event in response.events() {
            match event.kv().and_then(|kv| find_seq(kv.value())) {
                Some(seq) => t.receipt(Receipt {
                    seq,
                    received,
                    arrived: None,
                }),
                None => t.log.other_frames += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::find_seq;

    #[test]
    fn sequence_numbers_are_found_in_frames() {
        let frame = b"id: 3\nevent: update\ndata: {\"load/stamp\":\"LOADSEQ00000042 xx\"}\n\n";
        assert_eq!(find_seq(frame), Some(42));
        assert_eq!(find_seq(b"id: 0\nevent: heartbeat\n\n"), None);
        assert_eq!(find_seq(b"LOADSEQ7"), Some(7));
        assert_eq!(find_seq(b"LOADSEQx"), None);
    }
}
