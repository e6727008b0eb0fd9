//! What the engine answers: a plain HTTP [`Response`], or a watch stream ([`Reply`]), and the
//! HTTP/1.1 bytes of a response for the connections a shell answers without its HTTP library
//! (a refused connection, a malformed head, a watch request the engine answered plainly on a
//! socket the shell has already taken over for streaming).

use bytes::Bytes;

use crate::error::ApiError;

/// The content type of every v2 body (Go's content sniffing of JSON text, spec §2.1).
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// A plain HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// Whether to add `X-Content-Type-Options: nosniff` (the 404 of a wrong method).
    pub nosniff: bool,
    /// Further headers (the status page's `Content-Security-Policy`, …); none on v2 answers.
    pub extra_headers: &'static [(&'static str, &'static str)],
    /// The body (the shell omits it for HEAD but keeps its length).
    pub body: Bytes,
}

impl Response {
    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Response {
        Response {
            status,
            content_type: TEXT_PLAIN,
            nosniff: false,
            extra_headers: &[],
            body: body.into(),
        }
    }

    /// The response of a failed request: its status and exact text.
    pub fn error(err: &ApiError) -> Response {
        Response::text(err.status(), err.to_string())
    }

    /// The headers besides `Content-Length` (which the shell's HTTP library writes from the
    /// body), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        let nosniff = self
            .nosniff
            .then_some(("X-Content-Type-Options", "nosniff"));
        std::iter::once(("Content-Type", self.content_type))
            .chain(nosniff)
            .chain(self.extra_headers.iter().copied())
    }

    /// The whole response as HTTP/1.1 bytes that end the connection: status line, the
    /// [`Response::headers`], `Content-Length`, `Connection: close`, and the body unless
    /// `head_only` (a `HEAD` request keeps the length of the body it does not get).
    pub fn to_http1(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (name, value) in self.headers() {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send this response.
    Response(Response),
    /// Write [`crate::SSE_HEAD`], then the frames of [`crate::Engine::poll_frame`] for this watch
    /// until one says `close`; call [`crate::Engine::handle_disconnect`] if the client goes
    /// away first.
    Stream(crate::SubscriberId),
}

/// The reason phrase of `status` for the status line (`""` for codes the engine never uses).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_written_with_its_length_and_closes_the_connection() {
        let r = Response {
            status: 404,
            content_type: TEXT_PLAIN,
            nosniff: true,
            extra_headers: &[("Cache-Control", "no-store")],
            body: Bytes::from_static(b"404 page not found\n"),
        };
        assert_eq!(
            String::from_utf8(r.to_http1(false)).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
             X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nContent-Length: 19\r\nConnection: close\r\n\r\n\
             404 page not found\n"
        );
        let head = String::from_utf8(r.to_http1(true)).unwrap();
        assert!(head.ends_with("Content-Length: 19\r\nConnection: close\r\n\r\n"));
        assert_eq!(reason_phrase(503), "Service Unavailable");
        assert_eq!(reason_phrase(299), "");
    }
}
