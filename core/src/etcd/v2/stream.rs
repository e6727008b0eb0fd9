//! The decoder of one v2 watch answer: its head, its body one JSON event per line, and how it
//! ended, as [`WatchResponse`]s for [`crate::Engine::handle_watch_response`].
//!
//! ```text
//! let mut d = WatchDecoder::new(status, x_etcd_index, asked_for_stream);
//! loop {
//!     if let Some(message) = d.poll() { hand message? to the engine; continue }
//!     if d.is_done() { end this watch }
//!     match read the body { bytes => d.push(&bytes)?, end => hand d.finish()? to the engine }
//! }
//! ```

use super::{event, Answer, EtcdError, EVENT_INDEX_CLEARED, MAX_LINE};
use crate::etcd::{CodecError, WatchResponse};

/// Most events in one message: a backlog is applied in batches of this size (one view update
/// each), a live stream one event at a time as it comes.
pub const MAX_BATCH: usize = 512;

/// Decodes one answer to a [`super::watch_path`] request.
#[derive(Debug)]
pub struct WatchDecoder {
    status: u16,
    /// `X-Etcd-Index`: the store index when etcd created the watch (0 if absent).
    header_index: i64,
    stream: bool,
    /// Body bytes; `buf[start..]` are not decoded yet.
    buf: Vec<u8>,
    start: usize,
    /// How far `buf` has been searched for a newline.
    scanned: usize,
    head_sent: bool,
    /// Events (lines) decoded from this answer.
    events: u64,
    /// A line that failed after good ones in the same batch: the next message.
    failed: Option<CodecError>,
    /// etcd sends nothing more on this answer, or it failed: no more messages.
    done: bool,
}

impl WatchDecoder {
    /// A decoder for an answer with HTTP `status` and `X-Etcd-Index` header `etcd_index`, to a
    /// request that asked for `stream=true` or not.
    pub fn new(status: u16, etcd_index: Option<&str>, stream: bool) -> WatchDecoder {
        WatchDecoder {
            status,
            header_index: super::index(etcd_index).unwrap_or(0),
            stream,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            head_sent: false,
            events: 0,
            failed: None,
            done: false,
        }
    }

    /// Whether the answer is an error (then only [`WatchDecoder::finish`], once the whole
    /// body is in, says what it is).
    pub fn is_error(&self) -> bool {
        self.status != 200
    }

    /// Whether no more messages will come: the shell ends this watch.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Appends body bytes. Fails when a line grows beyond [`MAX_LINE`] (or an error body
    /// beyond 1 MiB).
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        let limit = if self.is_error() { 1 << 20 } else { MAX_LINE };
        let undecoded = self.buf.len() - self.start;
        if undecoded.saturating_add(bytes.len()) > limit.saturating_add(1) {
            self.done = true;
            return Err(CodecError::Shape(
                "a v2 watch answer with a line longer than the limit",
            ));
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.scanned = 0;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next message: first the head (`created`, for a `200`), then the events of every
    /// complete line (at most [`MAX_BATCH`] in one message). `None` when more body is needed
    /// (or after the last message).
    pub fn poll(&mut self) -> Option<Result<WatchResponse, CodecError>> {
        if let Some(e) = self.failed.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.done || self.is_error() {
            return None;
        }
        if !self.head_sent {
            self.head_sent = true;
            return Some(Ok(WatchResponse {
                created: true,
                header_revision: self.header_index,
                ..WatchResponse::default()
            }));
        }
        let mut batch: Option<WatchResponse> = None;
        let mut lines = 0;
        while lines < MAX_BATCH {
            let Some(line) = self.next_line() else {
                break;
            };
            let line = &self.buf[line];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            lines += 1;
            let (event, index) = match event(line) {
                Ok(e) => e,
                Err(e) if batch.is_some() => {
                    self.failed = Some(e);
                    break;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            // The first event of an answer at or below its X-Etcd-Index came from etcd's
            // history: etcd sends that one only. Without stream=true, every answer is one
            // event.
            let last = !self.stream || (self.events == 0 && index <= self.header_index);
            self.events += 1;
            let m = batch.get_or_insert_with(|| WatchResponse {
                header_revision: self.header_index,
                ..WatchResponse::default()
            });
            m.events.extend(event);
            m.last_event_revision = Some(index);
            if last {
                m.last = true;
                self.done = true;
                break;
            }
        }
        self.compact();
        batch.map(Ok)
    }

    /// The next complete line (without its newline) as a range of `buf`.
    fn next_line(&mut self) -> Option<std::ops::Range<usize>> {
        let from = self.scanned.max(self.start);
        match self.buf[from..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = self.start..from + i;
                self.start = from + i + 1;
                self.scanned = self.start;
                Some(line)
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// Drops decoded bytes once they are a good part of the buffer.
    fn compact(&mut self) {
        if self.start > 0 && (self.start == self.buf.len() || self.start >= 64 << 10) {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
    }

    /// The body ended: what that means. For an error answer, the error (error 401, history
    /// cleared, is a [`WatchResponse`] with `compact_revision`); for a `200`, a last message
    /// if events came (etcd ends streams now and then: watch again), else an error (an answer
    /// that ends without an event, or in the middle of one, is broken).
    pub fn finish(&mut self) -> Result<WatchResponse, CodecError> {
        self.done = true;
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let rest = &self.buf[self.start..];
        if self.is_error() {
            let answer = Answer {
                status: self.status,
                etcd_index: None,
                body: rest,
            };
            let error = EtcdError::parse(answer)?;
            if error.code != Some(EVENT_INDEX_CLEARED) {
                return Err(error.into_codec_error());
            }
            let current = error.index.unwrap_or(0).max(self.header_index);
            return Ok(WatchResponse {
                canceled: true,
                cancel_reason: format!("{} ({})", error.message, error.cause),
                compact_revision: oldest_index(&error.cause).unwrap_or(current).max(1),
                header_revision: current,
                ..WatchResponse::default()
            });
        }
        if !rest.iter().all(u8::is_ascii_whitespace) {
            return Err(CodecError::Json(format!(
                "the v2 watch answer ended in the middle of an event ({} bytes)",
                rest.len()
            )));
        }
        if self.events == 0 {
            return Err(CodecError::Shape(
                "the v2 watch answer ended without an event",
            ));
        }
        Ok(WatchResponse {
            header_revision: self.header_index,
            last: true,
            ..WatchResponse::default()
        })
    }
}

/// The oldest index etcd still has, from a 401's cause (`the requested history has been
/// cleared [33/11]`: 33 is the oldest, 11 the requested).
fn oldest_index(cause: &str) -> Option<i64> {
    let inside = cause.rsplit_once('[')?.1.split_once(']')?.0;
    inside.split_once('/')?.0.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::oldest_index;

    #[test]
    fn the_oldest_index_is_read_from_the_cause_of_a_401() {
        assert_eq!(
            oldest_index("the requested history has been cleared [33/11]"),
            Some(33)
        );
        assert_eq!(oldest_index("cleared"), None);
        assert_eq!(oldest_index("[x/1]"), None);
    }
}
