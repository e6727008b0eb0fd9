//! Reading a request head before any HTTP library sees it, and deciding what it is: a watch
//! (streamed by the shell itself), a plain request (given to the shell's HTTP library), or
//! something to refuse with a clear `4xx` and close.
//!
//! The original answered `?watch=1` by taking the connection over and writing exactly
//! [`lainlet_core::SSE_HEAD`], a head neither hyper nor tiny_http can produce for an HTTP/1.1
//! request. So both shells read each request head themselves, ask the core whether it is a
//! watch ([`lainlet_core::Request::is_watch`]), and give every other request to their HTTP
//! library. Both shells use this one function, so they answer every malformed head alike.
//!
//! Pure: bytes in, a verdict out; every length that comes from the peer is checked.

use lainlet_core::{Method, Request, Response};

/// Largest request head sniffed; larger ones are refused (`431`).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields per request.
pub const MAX_HEADERS: usize = 100;
/// Largest request body accepted (no endpoint reads one); larger ones are refused (`413`).
pub const MAX_BODY: u64 = 64 * 1024;

/// A watch request taken from the connection: method and request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    /// The method (always GET for a watch).
    pub method: Method,
    /// The request target in origin form (`/v2/procwatcher?appname=x&watch=1`).
    pub target: String,
    /// The `Last-Event-ID` header, if the client sent one (resumable streams).
    pub last_event_id: Option<String>,
}

/// How the body of a plain request is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length` bytes (0 without the header), at most [`MAX_BODY`].
    Length(u64),
    /// `Transfer-Encoding` (chunked): its end is only known by decoding it, so the
    /// connection is closed after the response.
    Chunked,
}

/// Why a head is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not an HTTP/1.x request head.
    Malformed,
    /// The head is larger than [`MAX_HEAD`] or has more than [`MAX_HEADERS`] fields.
    HeadTooLarge,
    /// A `Content-Length` that is not a number, or two that disagree.
    BadContentLength,
    /// A body larger than [`MAX_BODY`].
    BodyTooLarge,
    /// An HTTP/2 connection preface.
    Http2,
}

impl Refusal {
    /// The response that ends the connection.
    pub fn response(self) -> Response {
        let (status, text) = match self {
            Refusal::Malformed => (400, "400 Bad Request: not an HTTP/1.1 request head"),
            Refusal::HeadTooLarge => (431, "431 Request Header Fields Too Large"),
            Refusal::BadContentLength => (400, "400 Bad Request: invalid Content-Length"),
            Refusal::BodyTooLarge => (413, "413 Payload Too Large: lainlet reads no request body"),
            Refusal::Http2 => (
                505,
                "505 HTTP Version Not Supported: lainlet speaks HTTP/1.1",
            ),
        };
        Response::text(status, text)
    }
}

/// What the bytes at a request boundary are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// Not a complete head yet: read more.
    Partial,
    /// A plain request: a head of `head` bytes, then its body.
    Plain {
        /// Length of the head, blank line included.
        head: usize,
        /// The body's framing.
        body: Body,
    },
    /// A watch request, with a head of `head` bytes (a watch has no body).
    Watch {
        /// Length of the head, blank line included.
        head: usize,
        /// The request line and the headers the engine needs.
        request: WatchRequest,
    },
    /// Answer [`Refusal::response`] and close the connection.
    Refuse(Refusal),
}

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Sniffs the request head at the start of `buf`.
pub fn sniff(buf: &[u8]) -> Sniffed {
    let probe = buf.len().min(HTTP2_PREFACE.len());
    if probe > 0 && buf[..probe] == HTTP2_PREFACE[..probe] {
        return match probe == HTTP2_PREFACE.len() {
            true => Sniffed::Refuse(Refusal::Http2),
            false => Sniffed::Partial,
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Sniffed::Refuse(Refusal::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Sniffed::Partial,
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return Sniffed::Refuse(Refusal::HeadTooLarge)
        }
        Err(_) => return Sniffed::Refuse(Refusal::Malformed),
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Sniffed::Refuse(Refusal::Malformed);
    };
    if !path.is_ascii() || path.is_empty() {
        return Sniffed::Refuse(Refusal::Malformed);
    }
    let method = Method::parse(method);
    let target = origin_form(path);
    let body = match body_framing(req.headers) {
        Ok(body) => body,
        Err(refusal) => return Sniffed::Refuse(refusal),
    };
    if Request::new(method, target).is_watch() {
        let last_event_id = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("last-event-id"))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned());
        let request = WatchRequest {
            method,
            target: target.to_owned(),
            last_event_id,
        };
        return Sniffed::Watch { head, request };
    }
    Sniffed::Plain { head, body }
}

/// The body framing the headers announce, refusing what cannot be trusted (RFC 9112 §6.3).
fn body_framing(headers: &[httparse::Header<'_>]) -> Result<Body, Refusal> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(Refusal::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(Refusal::BadContentLength);
            }
            length = Some(n);
        }
    }
    match (chunked, length) {
        (true, _) => Ok(Body::Chunked),
        (false, Some(n)) if n > MAX_BODY => Err(Refusal::BodyTooLarge),
        (false, n) => Ok(Body::Length(n.unwrap_or(0))),
    }
}

/// `http://host/path?q` → `/path?q`; origin-form targets are returned as they are.
pub fn origin_form(target: &str) -> &str {
    match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn heads_are_told_apart() {
        assert_eq!(
            sniff(b"GET /v2/nodes?watch=1 HTTP/1.1\r\nHo"),
            Sniffed::Partial
        );
        let watch = b"GET http://x/v2/nodes?watch=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            sniff(watch),
            Sniffed::Watch {
                head: watch.len(),
                request: WatchRequest {
                    method: Method::Get,
                    target: "/v2/nodes?watch=1".into(),
                    last_event_id: None,
                }
            }
        );
        let post = b"POST /v2/nodes HTTP/1.1\r\nContent-Length: 3\r\n\r\nx=1";
        assert_eq!(
            sniff(post),
            Sniffed::Plain {
                head: post.len() - 3,
                body: Body::Length(3)
            }
        );
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(
            sniff(chunked),
            Sniffed::Plain {
                body: Body::Chunked,
                ..
            }
        ));
    }

    #[test]
    fn a_watch_carries_its_last_event_id() {
        let watch = b"GET /v2/nodes?watch=1 HTTP/1.1\r\nLast-Event-ID:  42 \r\n\r\n";
        let Sniffed::Watch { request, .. } = sniff(watch) else {
            panic!("a watch");
        };
        assert_eq!(request.last_event_id.as_deref(), Some("42"));
    }

    #[test]
    fn malformed_heads_are_refused_with_a_clear_status() {
        let refused = |bytes: &[u8]| match sniff(bytes) {
            Sniffed::Refuse(r) => Some(r.response().status),
            _ => None,
        };
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Some(400)
        );
        assert_eq!(refused(b"\x00\x01 garbage\r\n\r\n"), Some(400));
        assert_eq!(refused(&vec![b'a'; MAX_HEAD + 1]), Some(431));
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n"),
            Some(413),
            "a huge body is refused, not waited for"
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            Some(400),
            "a length past u64 is invalid"
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Some(400),
            "two lengths that disagree"
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"),
            Some(400)
        );
        assert_eq!(refused(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Some(505));
        assert_eq!(sniff(b"PRI * HT"), Sniffed::Partial);
        assert_eq!(refused(b"GET /version\xd0\x87 HTTP/1.1\r\n\r\n"), Some(400));
        let many: Vec<u8> = [&b"GET / HTTP/1.1\r\n"[..]]
            .into_iter()
            .chain(std::iter::repeat_n(&b"A: b\r\n"[..], MAX_HEADERS + 1))
            .chain([&b"\r\n"[..]])
            .flatten()
            .copied()
            .collect();
        assert_eq!(refused(&many), Some(431));
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n"),
            None,
            "equal repeated lengths are accepted"
        );
    }
}
