//! A misbehaving HTTP proxy in front of a real etcd, for answers etcd itself never gives (an
//! HTML error page from a load balancer, a truncated body, a storm of errors, an event about a
//! key elsewhere): requests whose path contains an injected pattern get the canned answer
//! instead (as many times as asked), every other request is relayed to etcd unchanged.
//!
//! One request per connection: the proxy reads a request head (and its `Content-Length` body),
//! answers or relays it with `Connection: close`, then copies etcd's answer until etcd closes
//! (a streaming watch stays relayed as long as it runs). On drop, every connection is closed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A canned answer for requests whose path contains `pattern`, `left` more times.
struct Fault {
    pattern: String,
    left: usize,
    answer: Vec<u8>,
}

/// Requests to relay late: (pattern, how many more, by how long).
type Delay = (String, usize, Duration);

#[derive(Default)]
struct Shared {
    faults: Mutex<Vec<Fault>>,
    delays: Mutex<Vec<Delay>>,
    open: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
    injected: AtomicUsize,
}

/// A running proxy (see the module docs).
pub struct FaultyProxy {
    addr: String,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FaultyProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FaultyProxy {
    /// A proxy on a free loopback port relaying to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> io::Result<FaultyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared::default());
        let (s, upstream) = (shared.clone(), upstream.to_owned());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (s, upstream) = (s.clone(), upstream.clone());
                thread::spawn(move || {
                    let _ = serve(&s, conn, &upstream);
                });
            }
        });
        Ok(FaultyProxy { addr, shared })
    }

    /// The proxy's address, `127.0.0.1:<port>` (give it as the service's `--etcd`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The next `times` requests whose path (with its query) contains `pattern` get `answer`
    /// (a whole HTTP response; the proxy closes the connection after it).
    pub fn inject(&self, pattern: &str, times: usize, answer: impl Into<Vec<u8>>) {
        self.shared.faults.lock().unwrap().push(Fault {
            pattern: pattern.to_owned(),
            left: times,
            answer: answer.into(),
        });
    }

    /// The next `times` requests whose path (with its query) contains `pattern` are relayed to
    /// etcd only after `by` (a slow etcd or network, e.g. a snapshot read that takes long).
    pub fn delay(&self, pattern: &str, times: usize, by: Duration) {
        let delay = (pattern.to_owned(), times, by);
        self.shared.delays.lock().unwrap().push(delay);
    }

    /// Canned answers sent so far.
    pub fn injected(&self) -> usize {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Whether every injected answer has been sent.
    pub fn drained(&self) -> bool {
        self.shared
            .faults
            .lock()
            .unwrap()
            .iter()
            .all(|f| f.left == 0)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wakes the accept loop
        for c in self.shared.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// A whole HTTP/1.1 response with `status` (e.g. `"502 Bad Gateway"`), extra `headers` lines
/// and `body`, closing the connection.
pub fn http_answer(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn serve(s: &Shared, mut down: TcpStream, upstream: &str) -> io::Result<()> {
    down.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.open.lock().unwrap().push(down.try_clone()?);
    let (head, body) = read_request(&mut down)?;
    let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
    let canned = {
        let mut faults = s.faults.lock().unwrap();
        faults
            .iter_mut()
            .find(|f| f.left > 0 && target.contains(&f.pattern))
            .map(|f| {
                f.left -= 1;
                f.answer.clone()
            })
    };
    if let Some(answer) = canned {
        s.injected.fetch_add(1, Ordering::SeqCst);
        down.write_all(&answer)?;
        return down.shutdown(Shutdown::Both);
    }
    let delay = {
        let mut delays = s.delays.lock().unwrap();
        delays
            .iter_mut()
            .find(|(pattern, left, _)| *left > 0 && target.contains(pattern.as_str()))
            .map(|(_, left, by)| {
                *left -= 1;
                *by
            })
    };
    if let Some(by) = delay {
        thread::sleep(by);
    }
    let mut up = TcpStream::connect(upstream)?;
    s.open.lock().unwrap().push(up.try_clone()?);
    // The request as it came, with `Connection: close` (one request per connection).
    let mut lines = head.split("\r\n");
    let mut request = vec![lines.next().unwrap_or_default(), "Connection: close"];
    request.extend(lines.filter(|l| !l.to_ascii_lowercase().starts_with("connection:")));
    up.write_all(format!("{}\r\n\r\n", request.join("\r\n")).as_bytes())?;
    up.write_all(&body)?;
    down.set_read_timeout(None)?;
    io::copy(&mut up, &mut down)?;
    down.shutdown(Shutdown::Both)
}

/// A request head (without its final empty line) and its `Content-Length` body.
fn read_request(conn: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no request"));
        }
        buf.push(byte[0]);
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("request head too long"));
        }
    }
    let head = String::from_utf8_lossy(&buf[..buf.len() - 4]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length.min(16 << 20)];
    conn.read_exact(&mut body)?;
    Ok((head, body))
}
