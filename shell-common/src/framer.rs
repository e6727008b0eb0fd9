//! The request framer of one connection, sans IO: bytes from the client in, what the shell
//! does with them out — pass them to its HTTP library, take the connection over for a watch,
//! refuse it, or give up on a client that takes too long.
//!
//! Both shells read the client themselves and only then hand plain requests to their HTTP
//! library (hyper, tiny_http), because a watch must get the original's exact SSE head (see
//! [`crate::sniff`]). What is decided on those bytes — where a request ends, when the next
//! head is due, what a malformed or slow head gets — is decided here, once; a shell only moves
//! bytes and arms one timer.
//!
//! # Call order (quinn-proto style)
//!
//! ```text
//! let mut f = Framer::new(now, policy);
//! loop {
//!     while let Some(action) = f.poll_action() {
//!         match action {
//!             Action::Pass { len, .. } => { give f.buffered()[..n] to the HTTP library (n ≤ len);
//!                                           f.handle_passed(now, n) }
//!             Action::TakeOver(watch)  => stream it; the framer is done
//!             Action::Refuse(r)        => write r.response(), close
//!             Action::TimedOut(w)      => write policy.timed_out(w) if any, close
//!             Action::End              => the client closed between requests
//!         }
//!     }
//!     read from the socket, with a timer at f.poll_timeout():
//!       bytes → f.handle_read(now, bytes) · end of stream → f.handle_eof() ·
//!       the timer fired → f.handle_timeout(now)
//! }
//! ```
//!
//! Time is an argument: a head must complete within [`ConnectionPolicy::header_timeout`] of
//! its first byte, the next request must start within [`ConnectionPolicy::idle_timeout`] of
//! the end of the previous one. Lengths from the peer are checked: a body is at most
//! [`crate::sniff::MAX_BODY`], a head at most [`crate::sniff::MAX_HEAD`], and the buffer holds
//! at most one head and one read beyond it (a shell reads only when no action is pending).

use std::time::Instant;

use crate::conn::{ConnectionPolicy, Waiting};
use crate::sniff::{sniff, Body, Refusal, Sniffed, WatchRequest};

/// What the shell does next with a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The first `len` bytes of [`Framer::buffered`] belong to the current plain request: give
    /// them (or a prefix of them) to the HTTP library and say how many with
    /// [`Framer::handle_passed`].
    Pass {
        /// Bytes that may be passed now.
        len: usize,
        /// These bytes begin a request: they are its whole head (as the sniffer read it), and
        /// its body (if any) follows in later passes.
        start: bool,
    },
    /// A watch request: the connection is the shell's from now on (the request head is
    /// consumed; anything the client sent after it is dropped).
    TakeOver(WatchRequest),
    /// Answer [`Refusal::response`] and close.
    Refuse(Refusal),
    /// The client took too long: answer [`ConnectionPolicy::timed_out`] (if any) and close.
    TimedOut(Waiting),
    /// The client closed the connection between requests (or within a body): nothing to
    /// answer.
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before a request: sniff its head.
    Boundary,
    /// A plain request: `head` bytes of its head, then `body` bytes of body (`None`: every
    /// byte until the connection ends — a chunked body, which is not decoded here); `fresh`
    /// until a byte of it was passed.
    Passing {
        head: usize,
        body: Option<u64>,
        fresh: bool,
    },
    /// An action ended the framing; nothing more is read.
    Done,
}

/// The request framer of one connection (see the module docs for the call order).
#[derive(Debug)]
pub struct Framer {
    policy: ConnectionPolicy,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
    state: State,
    /// What the connection waits for at a boundary, and since when.
    waiting: Waiting,
    since: Instant,
    eof: bool,
    /// The action that ended the framing, not yet polled.
    ending: Option<Action>,
}

impl Framer {
    /// A fresh connection at `now`, following `policy`'s head and idle timeouts.
    pub fn new(now: Instant, policy: ConnectionPolicy) -> Framer {
        Framer {
            policy,
            buf: Vec::new(),
            pos: 0,
            state: State::Boundary,
            waiting: Waiting::Request,
            since: now,
            eof: false,
            ending: None,
        }
    }

    /// Bytes read from the client at `now`.
    pub fn handle_read(&mut self, now: Instant, bytes: &[u8]) {
        if self.state == State::Done || bytes.is_empty() {
            return;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.settle(now);
    }

    /// The client closed its side.
    pub fn handle_eof(&mut self) {
        self.eof = true;
    }

    /// The shell gave the first `n` bytes of [`Framer::buffered`] to its HTTP library at
    /// `now` (at most what [`Action::Pass`] allowed; more is clamped).
    pub fn handle_passed(&mut self, now: Instant, n: usize) {
        let State::Passing { head, body, fresh } = &mut self.state else {
            return;
        };
        *fresh = false;
        let n = n.min(self.buf.len() - self.pos);
        let from_head = n.min(*head);
        *head -= from_head;
        let from_body = n - from_head;
        let n = match body {
            Some(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(from_body);
                *left -= take as u64;
                from_head + take
            }
            None => n,
        };
        self.pos += n;
        if *head == 0 && *body == Some(0) {
            self.state = State::Boundary;
            self.waiting = Waiting::Request;
            self.since = now;
            if self.pos == self.buf.len() {
                // An idle connection waits without a buffer.
                self.buf = Vec::new();
                self.pos = 0;
            }
        }
        self.settle(now);
    }

    /// The timer of [`Framer::poll_timeout`] fired (or the shell looks at `now` anyway).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Boundary && now >= self.deadline() {
            let timed_out = self.end(Action::TimedOut(self.waiting));
            self.ending = Some(timed_out);
        }
    }

    /// What to do next; `None` when the framer needs more input (read, with the timer of
    /// [`Framer::poll_timeout`] armed if it says so). After [`Action::TakeOver`],
    /// [`Action::Refuse`], [`Action::TimedOut`] or [`Action::End`] it says `None` for ever
    /// ([`Framer::is_done`]).
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(action) = self.ending.take() {
            return Some(action);
        }
        let avail = self.buf.len() - self.pos;
        match self.state {
            State::Done => None,
            State::Boundary if avail == 0 => self.eof.then(|| self.end(Action::End)),
            State::Boundary => match sniff(&self.buf[self.pos..]) {
                Sniffed::Partial if self.eof => Some(self.end(Action::Refuse(Refusal::Malformed))),
                Sniffed::Partial => None,
                Sniffed::Refuse(refusal) => Some(self.end(Action::Refuse(refusal))),
                Sniffed::Watch { head, request } => {
                    self.pos += head;
                    Some(self.end(Action::TakeOver(request)))
                }
                Sniffed::Plain { head, body } => {
                    let body = match body {
                        Body::Length(n) => Some(n),
                        Body::Chunked => None,
                    };
                    self.state = State::Passing {
                        head,
                        body,
                        fresh: true,
                    };
                    self.poll_action()
                }
            },
            State::Passing { head, fresh, .. } if head > 0 => Some(Action::Pass {
                len: head.min(avail),
                start: fresh,
            }),
            State::Passing { body, .. } if avail > 0 => {
                let len = body.map_or(avail, |left| {
                    usize::try_from(left).unwrap_or(usize::MAX).min(avail)
                });
                Some(Action::Pass { len, start: false })
            }
            State::Passing { .. } => self.eof.then(|| self.end(Action::End)),
        }
    }

    /// When [`Framer::handle_timeout`] is due: while the connection waits for a request or
    /// the rest of a head; `None` while a request is with the HTTP library, or once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state == State::Boundary && self.ending.is_none()).then(|| self.deadline())
    }

    /// The bytes received and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Whether the connection is between requests with nothing of the next one received (a
    /// shutdown may close it now).
    pub fn is_idle(&self) -> bool {
        self.state == State::Boundary && self.pos == self.buf.len() && self.ending.is_none()
    }

    /// Whether framing has ended (and its ending action was polled): nothing more is read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.ending.is_none()
    }

    /// What the connection waits for at a boundary.
    pub fn waiting(&self) -> Waiting {
        self.waiting
    }

    fn deadline(&self) -> Instant {
        self.policy.deadline(self.waiting, self.since)
    }

    /// At a boundary with bytes of the next head received, the (shorter) head timeout runs.
    fn settle(&mut self, now: Instant) {
        if self.state == State::Boundary
            && self.pos < self.buf.len()
            && self.waiting == Waiting::Request
        {
            self.waiting = Waiting::Head;
            self.since = now;
        }
    }

    fn end(&mut self, action: Action) -> Action {
        self.state = State::Done;
        self.buf = Vec::new();
        self.pos = 0;
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn framer(now: Instant) -> Framer {
        Framer::new(now, ConnectionPolicy::default())
    }

    /// Passes every byte the framer allows, returning the passed bytes, until another action.
    fn pass_all(f: &mut Framer, now: Instant) -> (Vec<u8>, Option<Action>) {
        let mut passed = Vec::new();
        loop {
            match f.poll_action() {
                Some(Action::Pass { len, .. }) => {
                    passed.extend_from_slice(&f.buffered()[..len]);
                    f.handle_passed(now, len);
                }
                other => return (passed, other),
            }
        }
    }

    #[test]
    fn plain_requests_pass_with_their_bodies_and_a_watch_takes_over() {
        let t = Instant::now();
        let mut f = framer(t);
        let get = b"GET /version HTTP/1.1\r\n\r\n";
        let post = b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let watch = b"GET /v2/nodes?watch=1 HTTP/1.1\r\n\r\nleft over";
        f.handle_read(t, &[&get[..], post, watch].concat());
        assert_eq!(
            f.poll_action(),
            Some(Action::Pass {
                len: get.len(),
                start: true
            })
        );
        let (passed, next) = pass_all(&mut f, t);
        assert_eq!(passed, [&get[..], post].concat());
        let Some(Action::TakeOver(w)) = next else {
            panic!("a watch, got {next:?}");
        };
        assert_eq!(w.target, "/v2/nodes?watch=1");
        assert!(f.is_done());
        assert_eq!(f.poll_action(), None);
        assert_eq!(f.poll_timeout(), None);
    }

    #[test]
    fn a_body_that_has_not_arrived_is_waited_for_without_a_timer() {
        let t = Instant::now();
        let mut f = framer(t);
        f.handle_read(t, b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
        let (passed, next) = pass_all(&mut f, t);
        assert_eq!(next, None);
        assert!(passed.ends_with(b"ab"));
        assert_eq!(f.poll_timeout(), None, "the HTTP library has the request");
        f.handle_read(t, b"cdeGET");
        let (passed, next) = pass_all(&mut f, t);
        assert_eq!((passed.as_slice(), next), (&b"cde"[..], None));
        assert_eq!(f.buffered(), b"GET");
        assert_eq!(f.waiting(), Waiting::Head);
    }

    #[test]
    fn slow_heads_and_idle_connections_time_out() {
        let t = Instant::now();
        let p = ConnectionPolicy::default();
        let mut f = framer(t);
        assert_eq!(f.poll_timeout(), Some(t + p.idle_timeout));
        f.handle_timeout(t + p.idle_timeout - Duration::from_millis(1));
        assert_eq!(f.poll_action(), None, "not yet");
        let later = t + Duration::from_secs(1);
        f.handle_read(later, b"GET / HT");
        assert_eq!(f.poll_action(), None);
        assert_eq!(f.poll_timeout(), Some(later + p.header_timeout));
        f.handle_timeout(later + p.header_timeout);
        assert_eq!(f.poll_action(), Some(Action::TimedOut(Waiting::Head)));
        assert_eq!(f.poll_action(), None);
        assert!(f.is_done());
    }

    #[test]
    fn the_idle_timeout_starts_again_after_each_request() {
        let t = Instant::now();
        let p = ConnectionPolicy::default();
        let mut f = framer(t);
        f.handle_read(t, b"GET / HTTP/1.1\r\n\r\n");
        let end = t + Duration::from_secs(100);
        let Some(Action::Pass { len, .. }) = f.poll_action() else {
            panic!("a pass");
        };
        f.handle_passed(end, len);
        assert!(f.is_idle());
        assert_eq!(f.poll_timeout(), Some(end + p.idle_timeout));
    }

    #[test]
    fn end_of_stream_ends_cleanly_between_requests_and_refuses_a_partial_head() {
        let t = Instant::now();
        let mut f = framer(t);
        f.handle_eof();
        assert_eq!(f.poll_action(), Some(Action::End));
        let mut f = framer(t);
        f.handle_read(t, b"GET / HTTP/1.1\r\nHost");
        f.handle_eof();
        assert_eq!(f.poll_action(), Some(Action::Refuse(Refusal::Malformed)));
        let mut f = framer(t);
        f.handle_read(t, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(f.poll_action(), Some(Action::Refuse(Refusal::Http2)));
    }

    #[test]
    fn a_chunked_body_passes_everything_until_the_end() {
        let t = Instant::now();
        let mut f = framer(t);
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        f.handle_read(t, &[&head[..], b"3\r\nabc\r\n"].concat());
        let (passed, next) = pass_all(&mut f, t);
        assert_eq!(next, None);
        assert_eq!(passed.len(), head.len() + 8);
        f.handle_read(t, b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(
            f.poll_action(),
            Some(Action::Pass { start: false, .. })
        ));
        f.handle_eof();
        let (_, next) = pass_all(&mut f, t);
        assert_eq!(next, Some(Action::End));
    }
}
