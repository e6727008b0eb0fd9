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

/// Decodes one answer to a [`super::watch_path`] request.
#[derive(Debug)]
pub struct WatchDecoder {
    status: u16,
    /// `X-Etcd-Index`: the store index when etcd created the watch (0 if absent).
    header_index: i64,
    stream: bool,
    /// Body bytes not yet framed into lines.
    buf: Vec<u8>,
    /// How far `buf` has been searched for a newline.
    scanned: usize,
    head_sent: bool,
    /// Events (lines) decoded from this answer.
    events: u64,
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
            scanned: 0,
            head_sent: false,
            events: 0,
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
        if self.buf.len().saturating_add(bytes.len()) > limit.saturating_add(1) {
            self.done = true;
            return Err(CodecError::Shape(
                "a v2 watch answer with a line longer than the limit",
            ));
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next message: first the head (`created`, for a `200`), then one per event line.
    /// `None` when more body is needed (or after the last message).
    pub fn poll(&mut self) -> Option<Result<WatchResponse, CodecError>> {
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
        loop {
            let end = self.buf[self.scanned..].iter().position(|&b| b == b'\n');
            let Some(end) = end.map(|i| self.scanned + i) else {
                self.scanned = self.buf.len();
                return None;
            };
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            self.scanned = 0;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let message = self.line(&line);
            if message.as_ref().map_or(true, |m| m.last) {
                self.done = true;
            }
            return Some(message);
        }
    }

    /// The body ended: what that means. For an error answer, the error (error 401, history
    /// cleared, is a [`WatchResponse`] with `compact_revision`); for a `200`, a last message
    /// if events came (etcd ends streams now and then: watch again), else an error (an answer
    /// that ends without an event, or in the middle of one, is broken).
    pub fn finish(&mut self) -> Result<WatchResponse, CodecError> {
        self.done = true;
        if self.is_error() {
            let answer = Answer {
                status: self.status,
                etcd_index: None,
                body: &self.buf,
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
        if !self.buf.iter().all(u8::is_ascii_whitespace) {
            return Err(CodecError::Json(format!(
                "the v2 watch answer ended in the middle of an event ({} bytes)",
                self.buf.len()
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

    fn line(&mut self, line: &[u8]) -> Result<WatchResponse, CodecError> {
        let v: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| CodecError::Json(format!("a v2 watch line that is not JSON ({e})")))?;
        if v.get("errorCode").is_some() {
            let answer = Answer {
                status: self.status,
                etcd_index: None,
                body: line,
            };
            return Err(EtcdError::parse(answer)?.into_codec_error());
        }
        let (event, index) = event(&v)?;
        // The first event of an answer at or below its X-Etcd-Index came from etcd's history:
        // etcd sends that one only. Without stream=true, every answer is one event.
        let last = !self.stream || (self.events == 0 && index <= self.header_index);
        self.events += 1;
        Ok(WatchResponse {
            header_revision: self.header_index,
            last_event_revision: Some(index),
            events: event.into_iter().collect(),
            last,
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
