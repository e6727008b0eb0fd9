//! Looking at a request head before any HTTP library sees it: is it a watch?
//!
//! The original answered `?watch=1` by taking the connection over and writing exactly
//! [`lainlet_core::SSE_HEAD`], a head neither hyper nor tiny_http can produce for an HTTP/1.1
//! request. So both shells read each request head themselves, ask the core whether it is a watch
//! ([`lainlet_core::Request::is_watch`]), stream watches on the raw socket, and give every other
//! request to their HTTP library. This module is the runtime-free part: parsing one head.

use lainlet_core::{Method, Request};

/// Largest request head sniffed; larger ones are refused.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields per request.
pub const MAX_HEADERS: usize = 100;

/// A watch request taken from the connection: method and request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    /// The method (always GET for a watch).
    pub method: Method,
    /// The request target in origin form (`/v2/procwatcher?appname=x&watch=1`).
    pub target: String,
}

/// How the body of a plain request is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length` bytes (0 without the header).
    Length(u64),
    /// `Transfer-Encoding` (chunked): its end is only known by decoding it.
    Chunked,
}

/// What the bytes at a request boundary are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// Not a complete head yet: read more.
    Partial,
    /// Not a request head that can be understood (a parse error, a head over [`MAX_HEAD`], a
    /// bad `Content-Length`).
    Invalid,
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
        /// The request line.
        request: WatchRequest,
    },
}

/// Sniffs the request head at the start of `buf`.
pub fn sniff(buf: &[u8]) -> Sniffed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Sniffed::Partial,
        _ => return Sniffed::Invalid,
    };
    let method = Method::parse(req.method.unwrap_or_default());
    let target = origin_form(req.path.unwrap_or_default());
    if Request::new(method, target).is_watch() {
        let request = WatchRequest {
            method,
            target: target.to_owned(),
        };
        return Sniffed::Watch { head, request };
    }
    let mut body = Body::Length(0);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            body = Body::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length") && body != Body::Chunked {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) => body = Body::Length(n),
                None => return Sniffed::Invalid,
            }
        }
    }
    Sniffed::Plain { head, body }
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
                    target: "/v2/nodes?watch=1".into()
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
        assert_eq!(
            sniff(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Sniffed::Invalid
        );
        assert_eq!(sniff(b"\x00\x01 garbage\r\n\r\n"), Sniffed::Invalid);
        assert_eq!(sniff(&vec![b'a'; MAX_HEAD + 1]), Sniffed::Invalid);
    }
}
