//! The smallest HTTP/1.1 client etcd's JSON gateway needs, on async-io sockets: write a
//! request, read the response head, then the body (`Content-Length`, chunked, or until the
//! server closes) whole or chunk by chunk as it streams.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use lainlet_shell_common::sync::{first, Either};

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted (a big cluster's snapshot is one range response).
pub const MAX_BODY: usize = 512 << 20;

/// The status and body framing of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// The body's framing.
    pub framing: Framing,
}

/// How a response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// After this many bytes.
    Length(usize),
    /// With the last chunk.
    Chunked,
    /// When the server closes the connection.
    Close,
}

/// `f`, or a `TimedOut` error after `limit`.
pub async fn timeout<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match first(f, Timer::after(limit)).await {
        Either::Left(r) => r,
        Either::Right(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} timed out after {limit:?}"),
        )),
    }
}

/// One connection: the socket and the bytes received but not consumed yet.
pub struct Conn {
    tcp: Async<TcpStream>,
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let tcp = Async::<TcpStream>::connect(addr).await?;
        tcp.get_ref().set_nodelay(true)?;
        Ok(Conn {
            tcp,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// Writes `bytes` whole.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        (&self.tcp).write_all(bytes).await
    }

    /// Reads what the socket has into the buffer; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + 16 * 1024, 0);
        let read = (&self.tcp).read(&mut self.buf[start..]).await;
        let n = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        self.eof |= n == 0;
        read
    }

    /// Reads the response head.
    pub async fn read_head(&mut self) -> io::Result<Head> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf).map_err(io::Error::other)? {
                httparse::Status::Complete(len) => {
                    let head = head_of(&response)?;
                    self.buf.drain(..len);
                    return Ok(head);
                }
                httparse::Status::Partial if self.buf.len() > MAX_HEAD => {
                    return Err(io::Error::other("response head too large"));
                }
                httparse::Status::Partial => {}
            }
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads the whole body after `head`.
    pub async fn read_body(&mut self, head: Head) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut chunks = Chunks::default();
        loop {
            let done = match head.framing {
                Framing::Length(n) => self.buf.len() >= n,
                Framing::Chunked => chunks.decode(&mut self.buf, &mut body)?,
                Framing::Close => self.eof,
            };
            if done {
                if let Framing::Length(n) = head.framing {
                    body = self.buf.drain(..n).collect();
                } else if head.framing == Framing::Close {
                    body = std::mem::take(&mut self.buf);
                }
                return Ok(body);
            }
            if self.buf.len() + body.len() > MAX_BODY {
                return Err(io::Error::other("response body too large"));
            }
            if self.fill().await? == 0 && head.framing != Framing::Close {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Decodes the chunks received so far into `out`, reading more from the socket when none
    /// is complete; `Ok(false)` once the last chunk has arrived (or the server closed).
    pub async fn read_chunks(
        &mut self,
        chunks: &mut Chunks,
        out: &mut Vec<u8>,
    ) -> io::Result<bool> {
        let before = out.len();
        loop {
            if chunks.decode(&mut self.buf, out)? {
                return Ok(false);
            }
            if out.len() > before {
                return Ok(true);
            }
            if self.fill().await? == 0 {
                return Ok(false);
            }
        }
    }
}

fn head_of(response: &httparse::Response<'_, '_>) -> io::Result<Head> {
    let status = response.code.unwrap_or(0);
    let mut framing = Framing::Close;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::other("bad Content-Length"))?;
            framing = Framing::Length(n);
        }
    }
    Ok(Head { status, framing })
}

/// The state of a chunked body being decoded.
#[derive(Debug, Default)]
pub struct Chunks {
    finished: bool,
}

impl Chunks {
    /// Moves the data of every complete chunk at the start of `raw` to `out`; `Ok(true)` once
    /// the last chunk and the trailers have been consumed.
    pub fn decode(&mut self, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<bool> {
        let mut pos = 0;
        while !self.finished {
            let Some(eol) = find_crlf(&raw[pos..]) else {
                break;
            };
            let line = &raw[pos..pos + eol];
            let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size_text)
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .ok_or_else(|| io::Error::other("bad chunk size"))?;
            if size == 0 {
                // Trailers: lines up to an empty one.
                let mut at = pos + eol + 2;
                loop {
                    let Some(end) = find_crlf(&raw[at..]) else {
                        raw.drain(..pos);
                        return Ok(false);
                    };
                    at += end + 2;
                    if end == 0 {
                        break;
                    }
                }
                pos = at;
                self.finished = true;
                break;
            }
            let data = pos + eol + 2;
            if raw.len() < data + size + 2 {
                break;
            }
            out.extend_from_slice(&raw[data..data + size]);
            pos = data + size + 2;
        }
        raw.drain(..pos);
        Ok(self.finished)
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_decode_across_reads_with_extensions_and_trailers() {
        let mut c = Chunks::default();
        let (mut raw, mut out) = (b"5;ext=1\r\nhel".to_vec(), Vec::new());
        assert!(!c.decode(&mut raw, &mut out).unwrap());
        assert!(out.is_empty());
        raw.extend_from_slice(b"lo\r\n3\r\n, w\r\n0\r\nGrpc-Status: 0\r\n");
        assert!(!c.decode(&mut raw, &mut out).unwrap());
        assert_eq!(out, b"hello, w");
        raw.extend_from_slice(b"\r\nrest");
        assert!(c.decode(&mut raw, &mut out).unwrap());
        assert_eq!(raw, b"rest");
        assert!(Chunks::default()
            .decode(&mut b"zz\r\n".to_vec(), &mut out)
            .is_err());
    }
}
