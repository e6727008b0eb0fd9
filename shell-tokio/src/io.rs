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
//! complete request head and sniffs it (`lainlet_shell_common::sniff`, shared with the smol
//! shell). Ordinary requests pass through to hyper untouched (with their `Content-Length` body,
//! then the next boundary). A watch request, or a head the sniffer refuses, is withheld and
//! hyper reads end-of-stream instead: it finishes what it was doing and returns the connection
//! (`Connection::without_shutdown`), and the shell takes over ([`Takeover`]): it streams the
//! watch with the original's exact bytes (`lainlet_shell_common::watch`), or writes the
//! refusal and closes. So hyper keeps serving every plain request (keep-alive, HEAD, `Date`),
//! and every watch — first request of a connection or after keep-alive GETs — gets the exact
//! bytes of the original.
//!
//! Details that make this sound:
//! * hyper reads a new head only after it has encoded the previous response, and writes are
//!   always accepted whole (what the socket did not take is copied here), so hyper's own write
//!   buffer is empty whenever it hands the connection back; what is still buffered here is
//!   flushed before the SSE head ([`SniffIo::into_parts`]).
//! * Writes are vectored, so hyper hands over the response head and the engine's shared body
//!   bytes as they are instead of first copying both into one buffer (a 200 KB view is then
//!   copied only if the socket does not take it at once).
//! * Back-pressure moves to the read side: while more than [`WRITE_LIMIT`] bytes wait for a
//!   client that does not read, no further request is passed to hyper.
//! * hyper must run with `half_close(true)`, so it never probes for end-of-stream while a
//!   request is being answered.
//! * A chunked request body cannot be followed here: the connection switches to plain
//!   pass-through for the rest of its life, and the response closes it (see `http.rs`).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use hyper::rt::{Read, ReadBufCursor, Write};
use lainlet_shell_common::conn::{ConnectionPolicy, Waiting};
use lainlet_shell_common::sniff::{sniff, Body, Refusal, Sniffed, WatchRequest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Bytes of responses buffered for a slow client before requests stop being read.
pub const WRITE_LIMIT: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Before a request: sniff its head.
    Boundary,
    /// This many bytes of the current request (head and body) still go to hyper.
    Passing(u64),
    /// Everything goes to hyper.
    Opaque,
}

/// What the shell does with a connection hyper handed back.
#[derive(Debug)]
pub enum Takeover {
    /// Stream this watch.
    Watch(WatchRequest),
    /// Answer the refusal and close.
    Refuse(Refusal),
    /// The client took too long (see [`ConnectionPolicy::timed_out`]): answer and close.
    TimedOut(Waiting),
}

/// The socket with a read-side request sniffer and an always-accepting write side.
pub struct SniffIo {
    tcp: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
    state: ReadState,
    wbuf: Vec<u8>,
    takeover: Option<Takeover>,
    policy: ConnectionPolicy,
    /// What the connection waits for, and since when.
    waiting: (Waiting, Instant),
    /// The timer that gives up on the wait, and when it is armed for: never later than the
    /// wait's deadline; a deadline moved later is taken up when the timer fires (one timer
    /// reset per timeout, not one per request).
    timer: Pin<Box<Sleep>>,
    armed: Instant,
}

impl SniffIo {
    /// Wraps a fresh connection, which follows `policy`'s head and idle timeouts.
    pub fn new(tcp: TcpStream, policy: ConnectionPolicy) -> SniffIo {
        let now = Instant::now();
        let armed = policy.deadline(Waiting::Request, now);
        let timer = Box::pin(tokio::time::sleep_until(armed.into()));
        SniffIo {
            tcp,
            rbuf: Vec::new(),
            rpos: 0,
            state: ReadState::Boundary,
            wbuf: Vec::new(),
            takeover: None,
            policy,
            waiting: (Waiting::Request, now),
            timer,
            armed,
        }
    }

    /// Starts waiting for `what` from now: for the next request after one was answered, for
    /// the rest of a head once part of it arrived.
    fn wait_for(&mut self, what: Waiting) {
        let now = Instant::now();
        self.waiting = (what, now);
        let deadline = self.policy.deadline(what, now);
        if deadline < self.armed {
            self.armed = deadline;
            self.timer.as_mut().reset(deadline.into());
        }
    }

    /// Whether the wait has run out; `Pending` (the timer armed) while it has not.
    fn poll_timed_out(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let deadline = self.policy.deadline(self.waiting.0, self.waiting.1);
            if deadline <= self.armed {
                return Poll::Ready(());
            }
            // The wait started again after the timer was armed: follow it.
            self.armed = deadline;
            self.timer.as_mut().reset(deadline.into());
        }
    }

    /// The socket, the response bytes not yet written to it, and what the shell takes over.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>, Option<Takeover>) {
        (self.tcp, self.wbuf, self.takeover)
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
        let mut pos = 0;
        let result = loop {
            if pos == self.wbuf.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.tcp).poll_write(cx, &self.wbuf[pos..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => pos += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        // One move of what is left, not one per partial write.
        self.wbuf.drain(..pos);
        result
    }
}

/// Appends to `out` the bytes of `bufs` after the first `written` (what the socket did not
/// take of a vectored write).
fn keep_unwritten(out: &mut Vec<u8>, bufs: &[IoSlice<'_>], mut written: usize) {
    for buf in bufs {
        match buf.get(written..) {
            Some(rest) => {
                out.extend_from_slice(rest);
                written = 0;
            }
            None => written -= buf.len(),
        }
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
            if this.takeover.is_some() {
                return Poll::Ready(Ok(())); // end of stream for hyper
            }
            if this.wbuf.len() >= WRITE_LIMIT {
                // The client does not read its responses: stop taking requests.
                ready!(this.poll_drain(cx))?;
                continue;
            }
            let avail = this.rbuf.len() - this.rpos;
            match this.state {
                ReadState::Boundary if avail > 0 => match sniff(&this.rbuf[this.rpos..]) {
                    Sniffed::Partial => {}
                    Sniffed::Refuse(refusal) => {
                        this.takeover = Some(Takeover::Refuse(refusal));
                        continue;
                    }
                    Sniffed::Plain {
                        body: Body::Chunked,
                        ..
                    } => {
                        this.state = ReadState::Opaque;
                        continue;
                    }
                    Sniffed::Plain {
                        head,
                        body: Body::Length(n),
                    } => {
                        this.state = ReadState::Passing(head as u64 + n);
                        continue;
                    }
                    Sniffed::Watch { head, request } => {
                        this.rpos += head;
                        this.takeover = Some(Takeover::Watch(request));
                        continue;
                    }
                },
                ReadState::Passing(0) => {
                    this.state = ReadState::Boundary;
                    this.wait_for(Waiting::Request);
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
            if this.state == ReadState::Boundary && avail > 0 && this.waiting.0 != Waiting::Head {
                this.wait_for(Waiting::Head);
            }
            let filled = match this.poll_fill(cx) {
                Poll::Ready(r) => r?,
                Poll::Pending if this.state == ReadState::Boundary => {
                    ready!(this.poll_timed_out(cx));
                    this.takeover = Some(Takeover::TimedOut(this.waiting.0));
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            };
            if filled == 0 {
                if this.state == ReadState::Boundary && this.rbuf.len() > this.rpos {
                    // A partial head before end of stream.
                    this.takeover = Some(Takeover::Refuse(Refusal::Malformed));
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

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut written = 0;
        if this.wbuf.is_empty() {
            match Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs) {
                Poll::Ready(Ok(n)) => written = n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        keep_unwritten(&mut this.wbuf, bufs, written);
        // In-memory slices: their total fits in usize.
        Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
    }

    fn is_write_vectored(&self) -> bool {
        true
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
    use super::*;

    fn kept(parts: &[&[u8]], written: usize) -> Vec<u8> {
        let bufs: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut out = b"old".to_vec();
        keep_unwritten(&mut out, &bufs, written);
        out
    }

    #[test]
    fn a_vectored_write_keeps_exactly_what_the_socket_did_not_take() {
        let parts: [&[u8]; 3] = [b"head\r\n", b"", b"body"];
        assert_eq!(kept(&parts, 0), b"oldhead\r\nbody");
        assert_eq!(kept(&parts, 2), b"oldad\r\nbody");
        assert_eq!(kept(&parts, 6), b"oldbody", "the head written exactly");
        assert_eq!(kept(&parts, 8), b"olddy");
        assert_eq!(kept(&parts, 10), b"old", "everything written");
    }
}
