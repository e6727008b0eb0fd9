//! Server-Sent-Events framing of spec §3.2–§3.3.

use bytes::Bytes;

/// The exact response head the original wrote before the first event.
pub const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nVary: Accept-Encoding\r\n\r\n";

/// The name of an SSE event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventName {
    /// First event of a watch: the full output.
    Init,
    /// The output changed.
    Update,
    /// The output changed because keys were deleted.
    Delete,
    /// A failure; the stream closes after it.
    Error,
    /// Keep-alive, without data.
    Heartbeat,
    /// A diff stream's change: `{"put":{…},"delete":[…]}` (`diff=1`).
    Patch,
    /// The status page's stream (`/status/stream`): the service's status as JSON.
    Status,
}

impl EventName {
    /// The name on the `event:` line.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::Init => "init",
            EventName::Update => "update",
            EventName::Delete => "delete",
            EventName::Error => "error",
            EventName::Heartbeat => "heartbeat",
            EventName::Patch => "patch",
            EventName::Status => "status",
        }
    }
}

/// Builds the part of a frame after the `id:` line: `event: <name>\n`, one `data:` line per
/// payload line (none for an empty payload), and the blank line.
pub fn frame_body(event: EventName, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 32);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_str().as_bytes());
    out.push(b'\n');
    // JSON as lainlet encodes it has no raw newline: one line, found with a fast search.
    if !data.is_empty() && !data.contains(&b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data);
        out.push(b'\n');
    } else if !data.is_empty() {
        for line in data.split(|&b| b == b'\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// One event for one watch connection: the connection's `id:` line, then a body shared by
/// every connection that receives the same event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame id; `None` writes no `id:` line. In the original's numbering: 1 for `init`,
    /// ≥ 2 for `update`/`delete`, 0 for `error`/`heartbeat`. With `rev=1`: the etcd revision
    /// of the state shown, and no id on `error`/`heartbeat`.
    pub id: Option<u64>,
    /// `event:` and `data:` lines and the terminating blank line.
    pub body: Bytes,
    /// Whether the server must close the connection after writing this frame.
    pub close: bool,
}

/// The `id: <n>\n` line of a frame, formatted on the stack.
#[derive(Clone, Copy, Debug)]
pub struct IdLine {
    buf: [u8; 26],
    start: usize,
}

impl IdLine {
    /// The line's bytes (empty for a frame without an id).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl Frame {
    /// The `id: <n>\n` line (empty without an id), without allocating.
    pub fn id_line(&self) -> IdLine {
        let mut buf = [0u8; 26];
        let Some(mut n) = self.id else {
            return IdLine { buf, start: 26 };
        };
        let mut i = 25;
        buf[i] = b'\n';
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        i -= 4;
        buf[i..i + 4].copy_from_slice(b"id: ");
        IdLine { buf, start: i }
    }

    /// The whole frame as one buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let id = self.id_line();
        let mut out = Vec::with_capacity(id.as_bytes().len() + self.body.len());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// Number of bytes the frame takes on the wire.
    pub fn len(&self) -> usize {
        self.id_line().as_bytes().len() + self.body.len()
    }

    /// Whether the frame is empty (never: a frame has at least its id and event lines).
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frames_length_is_its_wire_size_for_every_id_width() {
        for id in [
            Some(0),
            Some(1),
            Some(9),
            Some(10),
            Some(99),
            Some(100),
            Some(12_345),
            Some(u64::MAX),
            None,
        ] {
            let f = Frame {
                id,
                body: frame_body(EventName::Update, b"{}"),
                close: false,
            };
            assert_eq!(f.len(), f.to_bytes().len(), "id {id:?}");
        }
    }

    #[test]
    fn frames_are_laid_out_as_the_original_wrote_them() {
        let f = Frame {
            id: Some(3),
            body: frame_body(EventName::Update, br#"{"a":1}"#),
            close: false,
        };
        assert_eq!(f.to_bytes(), b"id: 3\nevent: update\ndata: {\"a\":1}\n\n");
        assert_eq!(
            Frame {
                id: Some(u64::MAX),
                ..f.clone()
            }
            .id_line()
            .as_bytes(),
            b"id: 18446744073709551615\n"
        );
        assert_eq!(Frame { id: None, ..f }.id_line().as_bytes(), b"");
        let hb = Frame {
            id: Some(0),
            body: frame_body(EventName::Heartbeat, b""),
            close: false,
        };
        assert_eq!(hb.to_bytes(), b"id: 0\nevent: heartbeat\n\n");
        assert_eq!(
            frame_body(EventName::Error, b"a\nb"),
            &b"event: error\ndata: a\ndata: b\n\n"[..]
        );
    }
}
