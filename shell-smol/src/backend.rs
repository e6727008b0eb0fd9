//! tiny_http, answering the plain requests (GET, HEAD, anything but a watch).
//!
//! tiny_http gives every open connection a thread of its pool, blocked reading the next
//! request, and can only take connections from its own listener. So it does not own the
//! public socket: the front (`front.rs`) does, and hands each plain request to tiny_http over
//! a private Unix socket (abstract name, Linux), one short connection per request:
//!
//! ```text
//! client ──TCP──▶ front: sniff head ──watch──▶ watch.rs (async, no thread)
//!                                  └─plain──▶ forward_head ──unix──▶ tiny_http ──▶ handler
//!                                             ◀── response bytes, to end of stream ──┘
//! ```
//!
//! The forwarded head carries the caller's address ([`PEER_HEADER`]; any such header from the
//! client is dropped) and `Connection: close`, so tiny_http's pool thread is done as soon as
//! it has parsed the request and the response ends when tiny_http closes. Its threads work
//! only while a request is parsed or answered; an idle keep-alive client costs none.
//!
//! Few requests are handed over at once (each holds a few descriptors for a moment), and a
//! backend that stops answering — tiny_http's accept thread dies if it ever meets the open-files
//! limit (tiny-http/tiny-http#195) — is replaced by a fresh one on a new socket.

use std::io;
use std::io::Cursor;
use std::net::IpAddr;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lainlet_core::Response;
use lainlet_shell_common::sniff::{origin_form, Refusal, MAX_HEADERS};
use lainlet_shell_common::Shared;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::lock::Semaphore;
use smol::{Async, Timer};
use tiny_http::{Header, StatusCode};
use tracing::{debug, error};

/// The header that carries the TCP peer's address from the front to tiny_http.
pub const PEER_HEADER: &str = "X-Lainlet-Peer";
/// Threads taking requests from tiny_http and answering them through the engine.
const HANDLERS: usize = 2;

/// Requests handed to tiny_http at once: each holds up to three descriptors (both ends of the
/// private socket, and tiny_http's clone of its end), so their number must stay small next to
/// the descriptors the connection limit leaves free.
const EXCHANGE_SLOTS: usize = 32;
/// Time tiny_http has to answer; after it, the backend counts as broken and is restarted.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The tiny_http server behind the front, restarted if it stops answering.
pub struct Backend {
    shared: Arc<Shared>,
    current: Mutex<Arc<Server>>,
    slots: Semaphore,
    restarts: AtomicU64,
}

/// One tiny_http server on its private socket, with its handler threads.
struct Server {
    addr: SocketAddr,
    http: Arc<tiny_http::Server>,
}

impl Backend {
    /// Starts tiny_http on a fresh private socket, with its handler threads.
    pub fn start(shared: Arc<Shared>, nonce: u64) -> io::Result<Backend> {
        let server = Server::start(&shared, nonce)?;
        Ok(Backend {
            shared,
            current: Mutex::new(Arc::new(server)),
            slots: Semaphore::new(EXCHANGE_SLOTS),
            restarts: AtomicU64::new(0),
        })
    }

    /// Sends one forwarded request head to tiny_http and returns its whole response. A head
    /// tiny_http closes on without an answer gets the sniffer's `400`. A backend that does not
    /// answer in time is replaced by a fresh one.
    pub async fn exchange(&self, head: &[u8]) -> io::Result<Vec<u8>> {
        let _slot = self.slots.acquire().await;
        let server = self.current();
        let timeout = async {
            Timer::after(EXCHANGE_TIMEOUT).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "tiny_http did not answer",
            ))
        };
        let result = smol::future::or(server.exchange(head), timeout).await;
        if let Err(e) = &result {
            let broken = matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::ConnectionRefused
            );
            if broken {
                self.restart(&server, e);
            }
        }
        result
    }

    fn current(&self) -> Arc<Server> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces `broken` (if it is still the current server) with a fresh one.
    fn restart(&self, broken: &Arc<Server>, why: &io::Error) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&current, broken) {
            return; // already replaced
        }
        let n = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        match Server::start(&self.shared, lainlet_shell_common::cli::random_seed() ^ n) {
            Ok(fresh) => {
                error!("the HTTP backend (tiny_http) failed ({why}): restarted it (#{n})");
                let old = std::mem::replace(&mut *current, Arc::new(fresh));
                old.stop();
            }
            Err(e) => error!("the HTTP backend (tiny_http) failed ({why}) and cannot restart: {e}"),
        }
    }
}

impl Server {
    fn start(shared: &Arc<Shared>, nonce: u64) -> io::Result<Server> {
        let name = format!("lainlet-smol/{}/{nonce:016x}", std::process::id());
        let addr = abstract_addr(&name)?;
        let listener = UnixListener::bind_addr(&addr)?;
        let http = tiny_http::Server::from_listener(listener, None)
            .map(Arc::new)
            .map_err(io::Error::other)?;
        for i in 0..HANDLERS {
            let (http, shared) = (http.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("lainlet-http-{i}"))
                .spawn(move || handle_requests(&http, &shared))?;
        }
        Ok(Server { addr, http })
    }

    async fn exchange(&self, head: &[u8]) -> io::Result<Vec<u8>> {
        // A local connect does not wait for the accept, only for room in the backlog.
        let stream = Async::new(UnixStream::connect_addr(&self.addr)?)?;
        (&stream).write_all(head).await?;
        let mut response = Vec::new();
        (&stream).read_to_end(&mut response).await?;
        if response.is_empty() {
            return Ok(Refusal::Malformed.response().to_http1(false));
        }
        strip_server_header(&mut response)?;
        Ok(response)
    }

    /// Ends the handler threads and forgets the server: tiny_http's `Drop` panics on an
    /// abstract socket address, and a replaced server is rare enough to keep.
    fn stop(self: Arc<Self>) {
        for _ in 0..HANDLERS {
            self.http.unblock();
        }
        std::mem::forget(self);
    }
}

/// tiny_http adds `Server: tiny-http (Rust)` to every response; the tokio shell (and the
/// original) send no `Server` header, so it is taken out of the head again. Fails when the
/// bytes are not a complete response head.
fn strip_server_header(response: &mut Vec<u8>) -> io::Result<()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let bad = |what: &str| io::Error::other(format!("tiny_http sent {what}"));
    match parsed.parse(response) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("a truncated response head")),
        Err(e) => return Err(bad(&format!("an invalid response head ({e})"))),
    }
    let server = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("server"))
        .map(|h| {
            // The header's line: from its name to the end of its value and the CRLF.
            let start = h.name.as_ptr() as usize - response.as_ptr() as usize;
            let end = h.value.as_ptr() as usize - response.as_ptr() as usize + h.value.len();
            (start, end + 2)
        });
    if let Some((start, end)) = server.filter(|&(_, end)| end <= response.len()) {
        response.drain(start..end);
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(name: &str) -> io::Result<SocketAddr> {
    let path = std::env::temp_dir().join(name.replace('/', "-"));
    let _ = std::fs::remove_file(&path);
    SocketAddr::from_pathname(path)
}

/// The head tiny_http gets for a plain request, and whether the client's connection stays
/// open afterwards.
pub struct Forward {
    /// The rewritten head.
    pub head: Vec<u8>,
    /// HTTP/1.1 without `Connection: close` (and without `Expect`, whose body may never come).
    pub keep_alive: bool,
}

/// Rewrites a complete request head for tiny_http: origin-form target, the client's headers
/// minus the hop-by-hop and framing ones (the body is not forwarded: no endpoint reads one) and
/// those with non-ASCII values, plus [`PEER_HEADER`] and `Connection: close`. `None` if it does
/// not parse.
pub fn forward_head(head: &[u8], peer: IpAddr) -> Option<Forward> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?.is_complete().then_some(())?;
    let version = req.version?;
    let mut out = format!(
        "{} {} HTTP/1.{version}\r\n",
        req.method?,
        origin_form(req.path?)
    )
    .into_bytes();
    let mut keep_alive = version == 1;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "connection" => {
                let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                keep_alive &= !value.contains("close");
            }
            "expect" => keep_alive = false,
            "content-length" | "transfer-encoding" | "keep-alive" | "te" | "upgrade" => {}
            _ if name.eq_ignore_ascii_case(PEER_HEADER) => {}
            // tiny_http refuses a request with such a value, and no endpoint reads one.
            _ if !h.value.is_ascii() => {}
            _ => {
                out.extend_from_slice(h.name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(format!("{PEER_HEADER}: {peer}\r\nConnection: close\r\n\r\n").as_bytes());
    Some(Forward {
        head: out,
        keep_alive,
    })
}

/// A handler thread: every request tiny_http parses, through the engine, answered.
fn handle_requests(server: &tiny_http::Server, shared: &Shared) {
    for rq in server.incoming_requests() {
        let peer = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv(PEER_HEADER))
            .and_then(|h| h.value.as_str().parse::<IpAddr>().ok());
        let Some(peer) = peer else {
            // Not from the front: refuse.
            let _ = rq.respond(tiny_http::Response::empty(StatusCode(400)));
            continue;
        };
        let response: Response = shared.answer(rq.method().as_str(), origin_form(rq.url()), peer);
        let headers = response
            .headers()
            .filter_map(|(n, v)| Header::from_bytes(n.as_bytes(), v.as_bytes()).ok())
            .collect();
        let length = response.body.len();
        let out = tiny_http::Response::new(
            StatusCode(response.status),
            headers,
            Cursor::new(response.body),
            Some(length),
            None,
        );
        if let Err(e) = rq.respond(out) {
            debug!(%peer, "response not delivered to the front: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_head_names_the_peer_and_closes() {
        let head = b"GET http://x/version HTTP/1.1\r\nHost: x\r\nX-Lainlet-Peer: 10.0.0.1\r\n\
                     Content-Length: 3\r\nAccept: */*\r\n\r\n";
        let f = forward_head(head, "127.0.0.5".parse().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(f.head).unwrap(),
            "GET /version HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\
             X-Lainlet-Peer: 127.0.0.5\r\nConnection: close\r\n\r\n"
        );
        assert!(f.keep_alive);
        let close = b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n";
        assert!(
            !forward_head(close, "::1".parse().unwrap())
                .unwrap()
                .keep_alive
        );
        let old = b"GET / HTTP/1.0\r\n\r\n";
        assert!(
            !forward_head(old, "::1".parse().unwrap())
                .unwrap()
                .keep_alive
        );
        assert!(forward_head(b"GET / HTTP/1.1\r\n", "::1".parse().unwrap()).is_none());
    }

    #[test]
    fn tiny_https_server_header_is_removed_from_the_head_only() {
        let mut r = b"HTTP/1.1 200 OK\r\nServer: tiny-http (Rust)\r\nDate: x\r\n\r\n\
                      Server: tiny-http (Rust)\r\n"
            .to_vec();
        strip_server_header(&mut r).unwrap();
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nDate: x\r\n\r\nServer: tiny-http (Rust)\r\n"
        );
        assert!(strip_server_header(&mut b"HTTP/1.1 200 OK\r\nDa".to_vec()).is_err());
        assert!(strip_server_header(&mut b"\x00garbage".to_vec()).is_err());
        let mut plain = b"HTTP/1.1 200 OK\r\n\r\nbody".to_vec();
        strip_server_header(&mut plain).unwrap();
        assert_eq!(plain, b"HTTP/1.1 200 OK\r\n\r\nbody");
    }
}
