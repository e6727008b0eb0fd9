//! HTTP/1.1 bytes of a [`Response`], for the connections a shell answers without its HTTP
//! library: the `503` of the connection limit, and a watch request the engine answered with a
//! plain response (an error, or `503` before the first snapshot) on a socket the shell has
//! already taken over for streaming.

use crate::engine::Response;

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

impl Response {
    /// The whole response as HTTP/1.1 bytes that end the connection: status line,
    /// `Content-Type`, `X-Content-Type-Options` when asked for, `Content-Length`,
    /// `Connection: close`, and the body unless `head_only` (a `HEAD` request keeps the length
    /// of the body it does not get).
    pub fn to_http1(&self, head_only: bool) -> Vec<u8> {
        let nosniff = if self.nosniff {
            "X-Content-Type-Options: nosniff\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\n{nosniff}Content-Length: {}\r\n\
             Connection: close\r\n\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_response_is_written_with_its_length_and_closes_the_connection() {
        let r = Response {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            nosniff: true,
            body: Bytes::from_static(b"404 page not found\n"),
        };
        assert_eq!(
            String::from_utf8(r.to_http1(false)).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
             X-Content-Type-Options: nosniff\r\nContent-Length: 19\r\nConnection: close\r\n\r\n\
             404 page not found\n"
        );
        let head = String::from_utf8(r.to_http1(true)).unwrap();
        assert!(head.ends_with("Content-Length: 19\r\nConnection: close\r\n\r\n"));
        assert_eq!(reason_phrase(503), "Service Unavailable");
        assert_eq!(reason_phrase(299), "");
    }
}
