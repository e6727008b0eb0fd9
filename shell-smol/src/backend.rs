//! tiny_http, answering the plain requests (GET, HEAD, anything but a watch).
//!
//! tiny_http gives every open connection a thread of its pool, blocked reading the next
//! request, and can only take connections from its own listener. So it does not own the
//! public socket: the front (`front.rs`) does, and hands each plain request to tiny_http over
//! a few persistent connections on a private Unix socket (abstract name, Linux), its *lanes*:
//!
//! ```text
//! client ──TCP──▶ front: framer ──watch──▶ watch.rs (async, no thread)
//!                          └─plain──▶ forward_head ──lane (unix, pipelined)──▶ tiny_http parses
//!                                                                              ──▶ handler thread
//!            ◀── [length][response as tiny_http prints it] on the same lane, in order ──┘
//! ```
//!
//! The forwarded head carries the caller's address ([`PEER_HEADER`]; any such header from the
//! client is dropped) and `Connection: keep-alive`. tiny_http parses it — the only parse of a
//! plain request besides the framer's sniff — and a handler thread answers it through the
//! engine and prints the response with tiny_http's own [`tiny_http::Response::raw_print`]
//! (its `Date`, `Content-Length`, HEAD and HTTP/1.0 rules) into a buffer, which it sends back
//! on the lane after a 4-byte length. tiny_http writes the responses of one lane in request
//! order, so each lane's reader task hands them to the waiting requests first in, first out:
//! no connect, no response parse, no thread per idle client.

use std::collections::VecDeque;
use std::io::{self, Cursor, Write as _};
use std::net::IpAddr;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use lainlet_core::Response;
use lainlet_shell_common::sniff::{origin_form, MAX_HEADERS};
use lainlet_shell_common::Shared;
use smol::channel::{bounded, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use smol::{Async, Executor};
use tiny_http::{Header, Method, StatusCode};
use tracing::{debug, warn};

/// The header that carries the TCP peer's address from the front to tiny_http.
pub const PEER_HEADER: &str = "X-Lainlet-Peer";
/// Threads taking requests from tiny_http and answering them through the engine.
const HANDLERS: usize = 2;
/// Persistent connections to tiny_http (each has a thread of tiny_http's pool parsing it).
const LANES: usize = 2;
/// Largest response accepted on a lane (a length past it means the lane is out of step).
const MAX_RESPONSE: usize = 1 << 30;
/// The line tiny_http adds to every response head; the tokio shell (and the original) send
/// no `Server` header, so the handler takes it out again.
const SERVER_LINE: &[u8] = b"Server: tiny-http (Rust)\r\n";

/// A response due on a lane.
type Due = Sender<io::Result<Vec<u8>>>;

/// tiny_http behind the front, reached over its lanes.
pub struct Backend {
    addr: SocketAddr,
    lanes: Vec<smol::lock::Mutex<Lane>>,
    next: AtomicUsize,
    executor: Arc<Executor<'static>>,
}

/// One persistent connection to tiny_http (opened on first use and after a failure), and the
/// requests sent on it whose responses are due, oldest first.
#[derive(Default)]
struct Lane {
    stream: Option<Arc<Async<UnixStream>>>,
    due: Arc<Mutex<VecDeque<Due>>>,
}

impl Backend {
    /// Starts tiny_http on a fresh private socket, with its handler threads; lanes' reader
    /// tasks run on `executor`.
    pub fn start(
        shared: Arc<Shared>,
        nonce: u64,
        executor: Arc<Executor<'static>>,
    ) -> io::Result<Backend> {
        let name = format!("lainlet-smol/{}/{nonce:016x}", std::process::id());
        let addr = abstract_addr(&name)?;
        let listener = UnixListener::bind_addr(&addr)?;
        // Never dropped: the handler threads hold it for the life of the process.
        let http = tiny_http::Server::from_listener(listener, None)
            .map(Arc::new)
            .map_err(io::Error::other)?;
        for i in 0..HANDLERS {
            let (http, shared) = (http.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("lainlet-http-{i}"))
                .spawn(move || handle_requests(&http, &shared))?;
        }
        Ok(Backend {
            addr,
            lanes: (0..LANES).map(|_| Default::default()).collect(),
            next: AtomicUsize::new(0),
            executor,
        })
    }

    /// Sends one forwarded request head to tiny_http and returns its whole response.
    pub async fn exchange(&self, head: &[u8]) -> io::Result<Vec<u8>> {
        let (tx, rx) = bounded(1);
        {
            let lane = self.next.fetch_add(1, Ordering::Relaxed) % LANES;
            let mut lane = self.lanes[lane].lock().await;
            let stream = match &lane.stream {
                Some(stream) => stream.clone(),
                None => self.open(&mut lane)?,
            };
            lane.due
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(tx);
            if let Err(e) = (&*stream).write_all(head).await {
                // The reader fails what is due on it; the next request opens a new one.
                lane.stream = None;
                return Err(e);
            }
        }
        rx.recv()
            .await
            .map_err(|_| io::Error::other("the lane closed"))?
    }

    /// Opens `lane`'s connection and starts its reader.
    fn open(&self, lane: &mut Lane) -> io::Result<Arc<Async<UnixStream>>> {
        // A local connect does not wait for the accept, only for room in the backlog.
        let stream = Arc::new(Async::new(UnixStream::connect_addr(&self.addr)?)?);
        lane.due = Arc::default();
        lane.stream = Some(stream.clone());
        let (reader, due) = (stream.clone(), lane.due.clone());
        self.executor.spawn(read_lane(reader, due)).detach();
        Ok(stream)
    }
}

/// Hands the responses arriving on a lane to the requests due, in order, until the lane
/// fails; then fails every request still due on it.
async fn read_lane(stream: Arc<Async<UnixStream>>, due: Arc<Mutex<VecDeque<Due>>>) {
    let mut reader = BufReader::with_capacity(64 * 1024, &*stream);
    let end = loop {
        let mut len = [0u8; 4];
        if let Err(e) = reader.read_exact(&mut len).await {
            break e;
        }
        let len = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
        if len > MAX_RESPONSE {
            break io::Error::other("tiny_http is out of step on a lane");
        }
        let mut response = vec![0u8; len];
        if let Err(e) = reader.read_exact(&mut response).await {
            break e;
        }
        let next = due
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        match next {
            Some(tx) => drop(tx.try_send(Ok(response))),
            None => break io::Error::other("tiny_http answered a request never sent"),
        }
    };
    warn!("a connection to the HTTP backend (tiny_http) ended: {end}");
    let _ = stream.get_ref().shutdown(std::net::Shutdown::Both);
    let failed = std::mem::take(&mut *due.lock().unwrap_or_else(PoisonError::into_inner));
    for tx in failed {
        let _ = tx.try_send(Err(io::Error::new(end.kind(), end.to_string())));
    }
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
    /// HTTP/1.1 without `Connection: close`, without a chunked body (not followed) and
    /// without `Expect` (whose body may never come).
    pub keep_alive: bool,
}

/// Rewrites a complete request head for tiny_http: origin-form target, the client's headers
/// minus the hop-by-hop and framing ones (the body is not forwarded: no endpoint reads one) and
/// those with non-ASCII values, plus [`PEER_HEADER`] and `Connection: keep-alive` (the lane
/// stays open). `None` if it does not parse.
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
            "expect" | "transfer-encoding" => keep_alive = false,
            "content-length" | "keep-alive" | "te" | "upgrade" => {}
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
    out.extend_from_slice(
        format!("{PEER_HEADER}: {peer}\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
    );
    Some(Forward {
        head: out,
        keep_alive,
    })
}

/// A handler thread: every request tiny_http parses, through the engine, answered on its lane.
fn handle_requests(server: &tiny_http::Server, shared: &Shared) {
    for rq in server.incoming_requests() {
        let peer = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv(PEER_HEADER))
            .and_then(|h| h.value.as_str().parse::<IpAddr>().ok());
        // Without the front's header the request is not from the front: refuse it.
        let response = match peer {
            Some(peer) => shared.answer(rq.method().as_str(), origin_form(rq.url()), peer),
            None => Response::text(400, ""),
        };
        let frame = print(&rq, response);
        let mut lane = rq.into_writer();
        if let Err(e) = lane.write_all(&frame).and_then(|()| lane.flush()) {
            debug!("response not delivered to the front: {e}");
        }
    }
}

/// The response to `rq` as tiny_http prints it, without its `Server` line, after its length.
fn print(rq: &tiny_http::Request, response: Response) -> Vec<u8> {
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
    let mut frame = vec![0u8; 4];
    let head_only = *rq.method() == Method::Head;
    // Into memory: cannot fail.
    let _ = out.raw_print(
        &mut frame,
        rq.http_version().clone(),
        rq.headers(),
        head_only,
        None,
    );
    strip_server_line(&mut frame);
    let len = u32::try_from(frame.len() - 4).unwrap_or(u32::MAX);
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame
}

/// Takes tiny_http's `Server` line out of `frame` (a length, then a response as tiny_http
/// prints it: the status line, then the `Server` line it inserts first).
fn strip_server_line(frame: &mut Vec<u8>) {
    let status_end = frame.windows(2).position(|w| w == b"\r\n");
    if let Some(start) = status_end.map(|at| at + 2) {
        if frame[start..].starts_with(SERVER_LINE) {
            frame.drain(start..start + SERVER_LINE.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_head_names_the_peer_and_keeps_the_lane_open() {
        let head = b"GET http://x/version HTTP/1.1\r\nHost: x\r\nX-Lainlet-Peer: 10.0.0.1\r\n\
                     Content-Length: 3\r\nAccept: */*\r\n\r\n";
        let f = forward_head(head, "127.0.0.5".parse().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(f.head).unwrap(),
            "GET /version HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\
             X-Lainlet-Peer: 127.0.0.5\r\nConnection: keep-alive\r\n\r\n"
        );
        assert!(f.keep_alive);
        let ends = |head: &[u8]| {
            !forward_head(head, "::1".parse().unwrap())
                .unwrap()
                .keep_alive
        };
        assert!(ends(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(ends(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ends(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(forward_head(b"GET / HTTP/1.1\r\n", "::1".parse().unwrap()).is_none());
    }

    #[test]
    fn a_response_is_printed_by_tiny_http_after_its_length_without_the_server_line() {
        let frame_of = |method: Method| {
            let rq: tiny_http::Request = tiny_http::TestRequest::new()
                .with_method(method)
                .with_path("/version")
                .into();
            print(&rq, Response::text(404, "gone"))
        };
        let frame = frame_of(Method::Get);
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let text = String::from_utf8(frame[4..].to_vec()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 404 Not Found\r\nDate: "),
            "{text}"
        );
        assert!(text.ends_with("Content-Length: 4\r\n\r\ngone"), "{text}");
        assert!(!text.contains("Server"), "{text}");
        let head = String::from_utf8(frame_of(Method::Head)[4..].to_vec()).unwrap();
        assert!(
            head.ends_with("Content-Length: 4\r\n\r\n"),
            "HEAD: no body: {head}"
        );
    }

    #[test]
    fn only_the_server_line_tiny_http_inserts_is_taken_out() {
        let mut frame = b"\0\0\0\0HTTP/1.1 200 OK\r\nServer: tiny-http (Rust)\r\nDate: x\r\n\r\n\
                          Server: tiny-http (Rust)\r\n"
            .to_vec();
        strip_server_line(&mut frame);
        assert_eq!(
            &frame[4..],
            b"HTTP/1.1 200 OK\r\nDate: x\r\n\r\nServer: tiny-http (Rust)\r\n"
        );
        let mut other = b"\0\0\0\0HTTP/1.1 200 OK\r\nDate: x\r\n\r\n".to_vec();
        let before = other.clone();
        strip_server_line(&mut other);
        assert_eq!(other, before);
    }
}
