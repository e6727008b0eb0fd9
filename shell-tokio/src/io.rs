//! The TCP connection as hyper sees it, with watch requests taken out of its hands.
//!
//! # Why
//!
//! The original answered `?watch=1` by taking the connection over and writing exactly
//! [`lainlet_core::SSE_HEAD`] — no `Date`, no `Content-Length`, no chunked encoding, a body
//! that ends when the server closes (spec §3.2). hyper 1 cannot produce that head: for an
//! HTTP/1.1 request and a body of unknown length it always adds `transfer-encoding: chunked`
//! (close-delimited bodies only for HTTP/1.0 requests, and then the status line says
//! `HTTP/1.0`); `auto_date_header(false)` and `title_case_headers(true)` fix the rest but not
//! this. hyper's upgrade mechanism needs a `101` or a `CONNECT`.
//!
//! # How
//!
//! [`SniffIo`] sits between the socket and hyper. At every request boundary it waits for the
//! complete request head, parses it (httparse) and asks the core whether it is a watch
//! ([`lainlet_core::Request::is_watch`]). Ordinary requests pass through to hyper untouched
//! (with their `Content-Length` body, then the next boundary). A watch request is withheld and
//! hyper reads end-of-stream instead: it finishes what it was doing and returns the connection
//! (`Connection::without_shutdown`), and the shell writes the SSE head and frames itself (see
//! `watch.rs`). So hyper keeps serving every plain request (keep-alive, HEAD, `Date`, errors),
//! and every watch — first request of a connection or after keep-alive GETs — gets the exact
//! bytes of the original.
//!
//! Details that make this sound:
//! * hyper reads a new head only after it has encoded the previous response, and writes are
//!   always accepted whole (copied here if the socket is busy), so hyper's own write buffer is
//!   empty whenever it hands the connection back; what is still buffered here is flushed before
//!   the SSE head ([`SniffIo::into_parts`]).
//! * Back-pressure moves to the read side: while more than [`WRITE_LIMIT`] bytes wait for a
//!   client that does not read, no further request is passed to hyper.
//! * hyper must run with `half_close(true)`, so it never probes for end-of-stream while a
//!   request is being answered.
//! * Whatever cannot be sniffed (a head over [`MAX_HEAD`], a parse error, a chunked request
//!   body) switches the connection to plain pass-through: hyper answers the error itself, and a
//!   later watch on such a connection is streamed by hyper (see `http.rs`).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use lainlet_core::{Method, Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Largest request head sniffed; larger ones go to hyper, which refuses them.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields per request (hyper is configured with the same limit).
pub const MAX_HEADERS: usize = 100;
/// Bytes of responses buffered for a slow client before requests stop being read.
pub const WRITE_LIMIT: usize = 256 * 1024;

/// A watch request taken from the connection: method and request target.
#[derive(Clone, Debug)]
pub struct WatchRequest {
    /// The method (always GET for a watch).
    pub method: Method,
    /// The request target in origin form (`/v2/procwatcher?appname=x&watch=1`).
    pub target: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Before a request: sniff its head.
    Boundary,
    /// This many bytes of the current request (head and body) still go to hyper.
    Passing(u64),
    /// Everything goes to hyper.
    Opaque,
}

/// The socket with a read-side request sniffer and an always-accepting write side.
pub struct SniffIo {
    tcp: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
    state: ReadState,
    wbuf: Vec<u8>,
    watch: Option<WatchRequest>,
}

impl SniffIo {
    /// Wraps a fresh connection.
    pub fn new(tcp: TcpStream) -> SniffIo {
        SniffIo {
            tcp,
            rbuf: Vec::new(),
            rpos: 0,
            state: ReadState::Boundary,
            wbuf: Vec::new(),
            watch: None,
        }
    }

    /// The socket, the response bytes not yet written to it, and the withheld watch request.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>, Option<WatchRequest>) {
        (self.tcp, self.wbuf, self.watch)
    }

    /// Sniffs the head at the start of the read buffer.
    fn sniff(&mut self) -> Sniffed {
        let avail = &self.rbuf[self.rpos..];
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(avail) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if avail.len() < MAX_HEAD => return Sniffed::Partial,
            _ => return Sniffed::Opaque,
        };
        let method = Method::parse(req.method.unwrap_or_default());
        let target = origin_form(req.path.unwrap_or_default());
        if Request::new(method, target).is_watch() {
            return Sniffed::Watch(
                head_len,
                WatchRequest {
                    method,
                    target: target.to_owned(),
                },
            );
        }
        let mut body = 0;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                return Sniffed::Opaque;
            }
            if h.name.eq_ignore_ascii_case("content-length") {
                match std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                {
                    Some(n) => body = n,
                    None => return Sniffed::Opaque,
                }
            }
        }
        Sniffed::Pass(head_len as u64 + body)
    }

    /// Reads more bytes from the socket into the buffer; `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        let mut chunk = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf))?;
        self.rbuf.extend_from_slice(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    }

    /// Writes buffered response bytes to the socket until done or it would block.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wbuf.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

enum Sniffed {
    Partial,
    Opaque,
    Pass(u64),
    Watch(usize, WatchRequest),
}

/// `http://host/path?q` → `/path?q`; origin-form targets are returned as they are.
fn origin_form(target: &str) -> &str {
    match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target,
    }
}

impl Read for SniffIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.watch.is_some() {
                return Poll::Ready(Ok(())); // end of stream for hyper
            }
            if this.wbuf.len() >= WRITE_LIMIT {
                // The client does not read its responses: stop taking requests.
                ready!(this.poll_drain(cx))?;
                continue;
            }
            let avail = this.rbuf.len() - this.rpos;
            match this.state {
                ReadState::Boundary if avail > 0 => match this.sniff() {
                    Sniffed::Partial => {}
                    Sniffed::Opaque => {
                        this.state = ReadState::Opaque;
                        continue;
                    }
                    Sniffed::Pass(n) => {
                        this.state = ReadState::Passing(n);
                        continue;
                    }
                    Sniffed::Watch(head, request) => {
                        this.rpos += head;
                        this.watch = Some(request);
                        continue;
                    }
                },
                ReadState::Passing(0) => {
                    this.state = ReadState::Boundary;
                    continue;
                }
                ReadState::Passing(_) | ReadState::Opaque if avail > 0 => {
                    let want = match this.state {
                        ReadState::Passing(n) => n.min(avail as u64) as usize,
                        _ => avail,
                    };
                    let n = want.min(buf.remaining());
                    buf.put_slice(&this.rbuf[this.rpos..this.rpos + n]);
                    this.rpos += n;
                    if let ReadState::Passing(left) = &mut this.state {
                        *left -= n as u64;
                    }
                    return Poll::Ready(Ok(()));
                }
                _ => {}
            }
            if ready!(this.poll_fill(cx))? == 0 {
                if this.rbuf.len() > this.rpos {
                    // A partial head before end of stream: let hyper report it.
                    this.state = ReadState::Opaque;
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl Write for SniffIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut written = 0;
        if this.wbuf.is_empty() {
            match Pin::new(&mut this.tcp).poll_write(cx, buf) {
                Poll::Ready(Ok(n)) => written = n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        this.wbuf.extend_from_slice(&buf[written..]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::origin_form;

    #[test]
    fn absolute_targets_are_reduced_to_origin_form() {
        assert_eq!(origin_form("/v2/nodes?watch=1"), "/v2/nodes?watch=1");
        assert_eq!(
            origin_form("http://lainlet.lain:9001/v2/nodes?watch=1"),
            "/v2/nodes?watch=1"
        );
        assert_eq!(origin_form("http://lainlet.lain:9001"), "/");
        assert_eq!(origin_form("/a?u=http://x/y"), "/a?u=http://x/y");
    }
}
