//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`.
//!
//! Every request is sent with `Connection: close` (unless the caller sets a `Connection` header)
//! and the response body is framed by `Transfer-Encoding: chunked`, `Content-Length`, or the
//! server closing the connection, in that order of precedence. The client can bind its socket to
//! a chosen loopback source address (e.g. `127.0.0.5`) before connecting, because the service
//! authorises callers by their source IP.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::sse::SseStream;

/// A complete HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code, e.g. `200`.
    pub status: u16,
    /// Header fields in received order; names as sent (compare case-insensitively, or use
    /// [`HttpResponse::header`]).
    pub headers: Vec<(String, String)>,
    /// The body after transfer decoding (chunked framing removed, trailers dropped).
    pub body: Vec<u8>,
    /// The head exactly as received: status line, header lines and the terminating empty line,
    /// with their original line endings (lossy UTF-8).
    pub raw_head: String,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// Every value of header `name` (case-insensitive), in received order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the status and body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, body: {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// Returns the first value of header `name` (case-insensitive) in `headers`.
pub(crate) fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A blocking HTTP/1.1 client configuration: I/O timeout, optional source address, default
/// headers. Cheap to clone; every request opens a fresh connection.
#[derive(Clone, Debug)]
pub struct HttpClient {
    timeout: Duration,
    local_ip: Option<IpAddr>,
    headers: Vec<(String, String)>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl HttpClient {
    /// A client with a 10 s connect/read/write timeout, connecting from an OS-chosen address.
    pub fn new() -> HttpClient {
        HttpClient {
            timeout: Duration::from_secs(10),
            local_ip: None,
            headers: Vec::new(),
        }
    }

    /// A client whose sockets are bound to source address `ip` (e.g. `"127.0.0.5"`; any address
    /// in 127.0.0.0/8 works on Linux without configuration). Panics if `ip` is not an IP address.
    pub fn from_ip(ip: &str) -> HttpClient {
        HttpClient::new().local_ip(ip)
    }

    /// Binds future sockets to source address `ip`. Panics if `ip` is not an IP address.
    pub fn local_ip(mut self, ip: &str) -> HttpClient {
        let ip = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad source IP {ip:?}: {e}"));
        self.local_ip = Some(ip);
        self
    }

    /// Sets the connect/read/write timeout (per socket operation, not per request).
    pub fn timeout(mut self, timeout: Duration) -> HttpClient {
        self.timeout = timeout;
        self
    }

    /// Adds a header sent with every request of this client.
    pub fn header(mut self, name: &str, value: &str) -> HttpClient {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The configured I/O timeout.
    pub fn io_timeout(&self) -> Duration {
        self.timeout
    }

    /// Opens a TCP connection to `addr` (`"127.0.0.1:port"`) from the configured source address,
    /// with the client's read/write timeouts set.
    pub fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        let target: SocketAddr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no address for {addr}"),
            )
        })?;
        let stream = match self.local_ip {
            None => TcpStream::connect_timeout(&target, self.timeout)?,
            Some(ip) => {
                let socket = Socket::new(
                    Domain::for_address(target),
                    Type::STREAM,
                    Some(Protocol::TCP),
                )?;
                socket.bind(&SocketAddr::new(ip, 0).into())?;
                socket.connect_timeout(&target.into(), self.timeout)?;
                TcpStream::from(socket)
            }
        };
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Sends `method path` to `addr` with extra `headers` and `body`, and reads the whole
    /// response. A `Content-Length` header is added when `body` is non-empty or the method is
    /// `POST`/`PUT`/`PATCH`.
    pub fn request(
        &self,
        method: &str,
        addr: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<HttpResponse> {
        let mut stream = self.connect(addr)?;
        self.write_request(&mut stream, method, addr, path_and_query, headers, body)?;
        let mut reader = BufReader::new(stream);
        read_response(&mut reader, method.eq_ignore_ascii_case("HEAD"))
    }

    /// `GET path_and_query` on `addr`.
    pub fn get(&self, addr: &str, path_and_query: &str) -> io::Result<HttpResponse> {
        self.request("GET", addr, path_and_query, &[], b"")
    }

    /// `HEAD path_and_query` on `addr` (the response has no body).
    pub fn head(&self, addr: &str, path_and_query: &str) -> io::Result<HttpResponse> {
        self.request("HEAD", addr, path_and_query, &[], b"")
    }

    /// `POST path` on `addr` with a JSON body.
    pub fn post_json(
        &self,
        addr: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> io::Result<HttpResponse> {
        let bytes = serde_json::to_vec(body).map_err(io::Error::other)?;
        self.request(
            "POST",
            addr,
            path,
            &[("Content-Type", "application/json")],
            &bytes,
        )
    }

    /// Opens a Server-Sent-Events stream: `GET path_and_query` (which should carry `watch=1`)
    /// and reads the response head. See [`SseStream`].
    pub fn sse(&self, addr: &str, path_and_query: &str) -> io::Result<SseStream> {
        self.sse_with_headers(addr, path_and_query, &[])
    }

    /// Like [`HttpClient::sse`] with extra request headers (e.g. `Last-Event-ID`).
    pub fn sse_with_headers(
        &self,
        addr: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<SseStream> {
        let mut stream = self.connect(addr)?;
        self.write_request(&mut stream, "GET", addr, path_and_query, headers, b"")?;
        SseStream::from_stream(stream, self.timeout)
    }

    /// Writes a request head (plus `body`) to `w`: request line, `Host`, the client's default
    /// headers, `headers`, `Connection: close` unless given, and `Content-Length` when needed.
    pub fn write_request(
        &self,
        w: &mut impl Write,
        method: &str,
        host: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut head = format!("{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\n");
        let all = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain(headers.iter().copied());
        let mut has_connection = false;
        for (name, value) in all {
            has_connection |= name.eq_ignore_ascii_case("connection");
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !has_connection {
            head.push_str("Connection: close\r\n");
        }
        let wants_length = ["POST", "PUT", "PATCH"]
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method));
        if !body.is_empty() || wants_length {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        w.write_all(&bytes)?;
        w.flush()
    }
}

/// Parsed status line and headers of a response, with the raw head text.
pub(crate) struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub raw: String,
}

/// Parses a complete response head (everything up to and including the empty line).
pub(crate) fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let status = match status {
        Some(s) if version.starts_with("HTTP/") => s,
        _ => return Err(bad_data(format!("bad status line {status_line:?}"))),
    };
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad_data(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Head {
        status,
        headers,
        raw: text,
    })
}

/// How a response body is delimited.
#[derive(Debug)]
pub(crate) enum Framing {
    /// No body (HEAD request, 1xx/204/304).
    Empty,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length: n`.
    Length(u64),
    /// Until the server closes the connection.
    Close,
}

/// Decides the body framing of a response to a request (`head_request`: it was `HEAD`).
pub(crate) fn framing(head: &Head, head_request: bool) -> io::Result<Framing> {
    if head_request || head.status / 100 == 1 || head.status == 204 || head.status == 304 {
        return Ok(Framing::Empty);
    }
    if let Some(te) = header_value(&head.headers, "transfer-encoding") {
        if te.to_ascii_lowercase().contains("chunked") {
            return Ok(Framing::Chunked);
        }
    }
    match header_value(&head.headers, "content-length") {
        Some(cl) => cl
            .parse()
            .map(Framing::Length)
            .map_err(|_| bad_data(format!("bad Content-Length {cl:?}"))),
        None => Ok(Framing::Close),
    }
}

/// Reads one complete response from `r` (`head_request`: the request was `HEAD`, so no body).
///
/// Public so that tests can drive keep-alive connections by hand: write requests with
/// [`HttpClient::write_request`] and read each answer with this.
pub fn read_response(r: &mut impl BufRead, head_request: bool) -> io::Result<HttpResponse> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        if r.read_until(b'\n', &mut raw)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before the response head ended; got {:?}",
                    String::from_utf8_lossy(&raw)
                ),
            ));
        }
        let line = &raw[before..];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let head = parse_head(&raw)?;
    let mut body = Vec::new();
    match framing(&head, head_request)? {
        Framing::Empty => {}
        Framing::Length(n) => {
            r.take(n).read_to_end(&mut body)?;
            if (body.len() as u64) < n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body ended after {} of {n} bytes", body.len()),
                ));
            }
        }
        Framing::Close => {
            r.read_to_end(&mut body)?;
        }
        Framing::Chunked => {
            let mut dec = ChunkDecoder::default();
            while !dec.is_done() {
                let buf = r.fill_buf()?;
                if buf.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a chunked body",
                    ));
                }
                let used = dec.push(buf, &mut body)?;
                r.consume(used);
            }
        }
    }
    Ok(HttpResponse {
        status: head.status,
        headers: head.headers,
        body,
        raw_head: head.raw,
    })
}

/// Incremental decoder for `Transfer-Encoding: chunked` (chunk extensions and trailers are
/// accepted and ignored). Feed it raw bytes in any split; it never loses state between calls.
#[derive(Debug, Default)]
pub(crate) struct ChunkDecoder {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// Reading the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines after the last (zero-size) chunk.
    Trailers,
    /// The terminating empty line has been read.
    Done,
}

impl ChunkDecoder {
    /// Whether the terminating chunk and trailers have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, appending body bytes to `out`; returns how many input bytes were
    /// consumed (less than `input.len()` only once done).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let mut i = 0;
        while i < input.len() && self.state != ChunkState::Done {
            if let ChunkState::Data(left) = self.state {
                let n = (left.min((input.len() - i) as u64)) as usize;
                out.extend_from_slice(&input[i..i + n]);
                i += n;
                self.state = if left == n as u64 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left - n as u64)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() > 8192 {
                    return Err(bad_data("chunked framing line too long".into()));
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\r');
            self.state = match self.state {
                ChunkState::Size => {
                    let hex = line.split(';').next().unwrap_or_default().trim();
                    let size = u64::from_str_radix(hex, 16)
                        .map_err(|_| bad_data(format!("bad chunk size line {line:?}")))?;
                    if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    }
                }
                ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                ChunkState::DataEnd => {
                    return Err(bad_data(format!(
                        "chunk data not followed by CRLF: {line:?}"
                    )))
                }
                ChunkState::Trailers if line.is_empty() => ChunkState::Done,
                ChunkState::Trailers => ChunkState::Trailers,
                ChunkState::Data(_) | ChunkState::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }
}

/// An `InvalidData` I/O error with `msg`.
pub(crate) fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
