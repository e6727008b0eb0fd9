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
//! [`SniffIo`] sits between the socket and hyper, a small adapter over the request framer
//! (`lainlet_shell_common::framer`, sans IO, shared with the smol shell): it feeds the framer
//! what the socket reads, arms one timer at its deadline, and does what it says. At every
//! request boundary the framer waits for the complete request head and sniffs it. Ordinary
//! requests pass through to hyper untouched (with their `Content-Length` body,
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
use lainlet_shell_common::framer::{Action, Framer};
use lainlet_shell_common::sniff::{Refusal, WatchRequest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Bytes of responses buffered for a slow client before requests stop being read.
pub const WRITE_LIMIT: usize = 256 * 1024;

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

/// The socket with the request framer on its read side and an always-accepting write side.
pub struct SniffIo {
    tcp: TcpStream,
    framer: Framer,
    wbuf: Vec<u8>,
    takeover: Option<Takeover>,
    /// The timer of the framer's deadline, and when it is armed for: never later than the
    /// deadline; a deadline moved later is taken up when the timer fires (one timer reset per
    /// timeout, not one per request).
    timer: Pin<Box<Sleep>>,
    armed: Instant,
}

impl SniffIo {
    /// Wraps a fresh connection, which follows `policy`'s head and idle timeouts.
    pub fn new(tcp: TcpStream, policy: ConnectionPolicy) -> SniffIo {
        let framer = Framer::new(Instant::now(), policy);
        let armed = framer.poll_timeout().unwrap_or_else(Instant::now);
        SniffIo {
            tcp,
            framer,
            wbuf: Vec::new(),
            takeover: None,
            timer: Box::pin(tokio::time::sleep_until(armed.into())),
            armed,
        }
    }

    /// The socket, the response bytes not yet written to it, and what the shell takes over.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>, Option<Takeover>) {
        (self.tcp, self.wbuf, self.takeover)
    }

    /// Reads what the socket has into the framer (end of stream included).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf))?;
        match buf.filled() {
            [] => self.framer.handle_eof(),
            bytes => self.framer.handle_read(Instant::now(), bytes),
        }
        Poll::Ready(Ok(()))
    }

    /// Waits for the framer's deadline, if it has one, and tells it the time.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.framer.poll_timeout() else {
            return Poll::Pending;
        };
        if deadline < self.armed || self.timer.is_elapsed() {
            self.armed = deadline;
            self.timer.as_mut().reset(deadline.into());
        }
        ready!(self.timer.as_mut().poll(cx));
        self.framer.handle_timeout(Instant::now());
        Poll::Ready(())
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
            if this.framer.is_done() {
                return Poll::Ready(Ok(())); // end of stream for hyper
            }
            if this.wbuf.len() >= WRITE_LIMIT {
                // The client does not read its responses: stop taking requests.
                ready!(this.poll_drain(cx))?;
                continue;
            }
            this.takeover = match this.framer.poll_action() {
                Some(Action::Pass { len, .. }) => {
                    let n = len.min(buf.remaining());
                    buf.put_slice(&this.framer.buffered()[..n]);
                    this.framer.handle_passed(Instant::now(), n);
                    return Poll::Ready(Ok(()));
                }
                Some(Action::TakeOver(request)) => Some(Takeover::Watch(request)),
                Some(Action::Refuse(refusal)) => Some(Takeover::Refuse(refusal)),
                Some(Action::TimedOut(waiting)) => Some(Takeover::TimedOut(waiting)),
                Some(Action::End) => None,
                None => match this.poll_fill(cx) {
                    Poll::Ready(result) => {
                        result?;
                        continue;
                    }
                    Poll::Pending => {
                        ready!(this.poll_deadline(cx));
                        continue;
                    }
                },
            };
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
