//! Server-Sent-Events: an incremental frame parser ([`SseParser`]) and a blocking stream reader
//! over one watch connection ([`SseStream`]).
//!
//! The service writes its watch head raw and then a close-delimited body (spec §3.2); other
//! servers may use chunked transfer encoding or a `Content-Length`. [`SseStream`] handles all
//! three and keeps the exact bytes it received so tests can compare them byte for byte.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::http::{framing, header_value, parse_head, ChunkDecoder, Framing, HttpClient};

/// One SSE event (a block of field lines ended by an empty line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The `id:` value; `0` if the frame has no `id:` line or it is not an unsigned integer
    /// (check [`Frame::raw`] to tell those apart).
    pub id: u64,
    /// The `event:` value; empty if the frame has no `event:` line.
    pub event: String,
    /// The `data:` payload (several `data:` lines joined with `\n`); `None` when the frame has no
    /// `data:` line at all, as heartbeats.
    pub data: Option<String>,
    /// The frame's exact text including the terminating empty line, e.g.
    /// `"id: 1\nevent: init\ndata: {}\n\n"`.
    pub raw: String,
}

impl Frame {
    /// The canonical frame the service writes: `id: <id>\nevent: <event>\n` then one `data:` line
    /// per payload line (none for `None`), then an empty line. Useful for `assert_eq!`.
    pub fn new(id: u64, event: &str, data: Option<&str>) -> Frame {
        let mut raw = format!("id: {id}\nevent: {event}\n");
        for line in data.iter().flat_map(|d| d.split('\n')) {
            raw.push_str(&format!("data: {line}\n"));
        }
        raw.push('\n');
        Frame {
            id,
            event: event.to_owned(),
            data: data.map(str::to_owned),
            raw,
        }
    }

    /// Whether this is a heartbeat (`event: heartbeat`).
    pub fn is_heartbeat(&self) -> bool {
        self.event == "heartbeat"
    }

    /// The payload parsed as JSON; panics (showing the frame) if absent or not JSON.
    pub fn json(&self) -> serde_json::Value {
        let data = self
            .data
            .as_deref()
            .unwrap_or_else(|| panic!("frame has no data: {:?}", self.raw));
        serde_json::from_str(data)
            .unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {:?}", self.raw))
    }
}

/// Incremental SSE parser: push bytes in any split, pop complete frames.
///
/// Lines end with `\n` (a preceding `\r` is tolerated); `:` lines are comments; one space after
/// the field colon is stripped; unknown fields are ignored; empty lines that do not end a frame
/// (no field seen) are skipped.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    raw: String,
    id: Option<u64>,
    event: Option<String>,
    data: Option<String>,
    fields: usize,
    frames: VecDeque<Frame>,
}

impl SseParser {
    /// An empty parser.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds body bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.line_done(&String::from_utf8_lossy(&line));
            } else {
                self.line.push(b);
            }
        }
    }

    /// Pops the oldest complete frame.
    pub fn next_frame(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// Whether bytes of an unfinished frame are buffered (e.g. a stream cut mid-frame).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || !self.raw.is_empty()
    }

    fn line_done(&mut self, line: &str) {
        self.raw.push_str(line);
        self.raw.push('\n');
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if self.fields > 0 {
                self.frames.push_back(Frame {
                    id: self.id.take().unwrap_or(0),
                    event: self.event.take().unwrap_or_default(),
                    data: self.data.take(),
                    raw: std::mem::take(&mut self.raw),
                });
                self.fields = 0;
            } else {
                self.raw.clear();
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        self.fields += 1;
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.id = value.parse().ok(),
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
}

/// One open watch connection: the response head, then frames as they arrive.
///
/// Reading never blocks longer than the timeout given to each call. Frames read while waiting
/// for something else (e.g. in [`SseStream::wait_closed`]) stay queued for
/// [`SseStream::next_frame`].
#[derive(Debug)]
pub struct SseStream {
    stream: TcpStream,
    status: u16,
    headers: Vec<(String, String)>,
    raw_head: String,
    framing: Framing,
    chunks: ChunkDecoder,
    parser: SseParser,
    body: Vec<u8>,
    wire: Vec<u8>,
    eof: bool,
}

impl SseStream {
    /// Opens `GET path_and_query` on `addr` with a default [`HttpClient`].
    pub fn open(addr: &str, path_and_query: &str) -> io::Result<SseStream> {
        HttpClient::new().sse(addr, path_and_query)
    }

    /// Takes over a connection on which a request has been written: reads the response head
    /// (waiting at most `head_timeout`) and keeps any body bytes that came with it.
    pub fn from_stream(stream: TcpStream, head_timeout: Duration) -> io::Result<SseStream> {
        let mut s = SseStream {
            stream,
            status: 0,
            headers: Vec::new(),
            raw_head: String::new(),
            framing: Framing::Close,
            chunks: ChunkDecoder::default(),
            parser: SseParser::new(),
            body: Vec::new(),
            wire: Vec::new(),
            eof: false,
        };
        let deadline = Instant::now() + head_timeout;
        let head_len = loop {
            if let Some(end) = head_end(&s.wire) {
                break end;
            }
            match s.read_some(deadline)? {
                Some(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("closed before the response head ended: {:?}", s.wire_text()),
                    ))
                }
                Some(_) => {}
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no complete response head in time: {:?}", s.wire_text()),
                    ))
                }
            }
        };
        let head = parse_head(&s.wire[..head_len])?;
        s.framing = framing(&head, false)?;
        s.status = head.status;
        s.headers = head.headers;
        s.raw_head = head.raw;
        let rest = s.wire[head_len..].to_vec();
        s.decode(&rest)?;
        if matches!(s.framing, Framing::Empty | Framing::Length(0)) {
            s.eof = true;
        }
        Ok(s)
    }

    /// The response status code (the service always answers 200 to a watch, even for errors).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response header fields in received order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The response head exactly as received, including the terminating empty line, e.g.
    /// `"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nVary: Accept-Encoding\r\n\r\n"`.
    pub fn raw_head(&self) -> &str {
        &self.raw_head
    }

    /// The body bytes received so far, after transfer decoding.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Every byte received on the socket so far (head and undecoded body).
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Waits up to `timeout` for the next frame; `None` on timeout or once the server has closed
    /// the stream and every received frame has been returned.
    pub fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.parser.next_frame() {
                return Some(f);
            }
            if self.eof || !self.pump(deadline) {
                return None;
            }
        }
    }

    /// Reads frames until one satisfies `pred` or `timeout` (overall) elapses or the stream
    /// ends; returns every frame read, the matching one last. Check the last element: the
    /// predicate may not have matched.
    pub fn frames_until(
        &mut self,
        mut pred: impl FnMut(&Frame) -> bool,
        timeout: Duration,
    ) -> Vec<Frame> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Some(f) = self.next_frame(deadline.saturating_duration_since(Instant::now())) {
            let done = pred(&f);
            out.push(f);
            if done {
                break;
            }
        }
        out
    }

    /// Skips frames until one satisfies `pred`; returns it, or `None` on timeout/end of stream.
    pub fn wait_frame(
        &mut self,
        mut pred: impl FnMut(&Frame) -> bool,
        timeout: Duration,
    ) -> Option<Frame> {
        self.frames_until(&mut pred, timeout)
            .pop()
            .filter(|f| pred(f))
    }

    /// Every frame that arrives within `duration` (always waits the full duration unless the
    /// stream ends). For "nothing more is written" assertions.
    pub fn collect_for(&mut self, duration: Duration) -> Vec<Frame> {
        self.frames_until(|_| false, duration)
    }

    /// Whether the server has closed the stream (as far as read so far; does not read).
    pub fn is_closed(&self) -> bool {
        self.eof
    }

    /// Reads until the server closes the stream or `timeout` elapses; returns whether it closed.
    /// Frames read meanwhile stay queued for [`SseStream::next_frame`].
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.eof && self.pump(deadline) {}
        self.eof
    }

    /// Writes raw bytes to the server on this connection (e.g. to test that stray client bytes
    /// do not crash the service, spec §3.7).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// The underlying socket (e.g. for `local_addr` or `shutdown`).
    pub fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads once (waiting at most until `deadline`) and decodes; returns whether any progress
    /// was made (bytes or end of stream). I/O errors count as end of stream.
    fn pump(&mut self, deadline: Instant) -> bool {
        let before = self.wire.len();
        match self.read_some(deadline) {
            Ok(Some(0)) => {
                self.eof = true;
                true
            }
            Ok(Some(_)) => {
                let fresh = self.wire[before..].to_vec();
                if self.decode(&fresh).is_err() {
                    self.eof = true;
                }
                true
            }
            Ok(None) => false,
            Err(_) => {
                self.eof = true;
                true
            }
        }
    }

    /// One `read` into `wire`: `Some(n)` bytes (0 = EOF), `None` if nothing came by `deadline`.
    fn read_some(&mut self, deadline: Instant) -> io::Result<Option<usize>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(n) => {
                    self.wire.extend_from_slice(&buf[..n]);
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies transfer decoding to raw body bytes and feeds the SSE parser.
    fn decode(&mut self, raw: &[u8]) -> io::Result<()> {
        let mut out = Vec::new();
        match &mut self.framing {
            Framing::Empty => {}
            Framing::Close => out.extend_from_slice(raw),
            Framing::Length(left) => {
                let n = (*left).min(raw.len() as u64) as usize;
                out.extend_from_slice(&raw[..n]);
                *left -= n as u64;
                self.eof |= *left == 0;
            }
            Framing::Chunked => {
                self.chunks.push(raw, &mut out)?;
                self.eof |= self.chunks.is_done();
            }
        }
        self.parser.push(&out);
        self.body.extend_from_slice(&out);
        Ok(())
    }

    fn wire_text(&self) -> String {
        String::from_utf8_lossy(&self.wire).into_owned()
    }
}

/// Length of the response head in `buf` (through the first empty line), if complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            start = i + 1;
        }
    }
    None
}
