//! Inputs shared by the tests: the original's recorded HTTP responses.

#![allow(dead_code)] // each test crate uses a part

/// The JSON body of a recorded response of the original (`fixtures/data/golden/<file>`; the
/// file's `INDEX.tsv` says which request it answers).
#[macro_export]
macro_rules! golden {
    ($file:literal) => {
        $crate::common::body(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/data/golden/",
            $file
        )))
    };
}

/// The body of a recorded HTTP response: what follows the blank line after the head, without
/// the newline the recording appends.
pub fn body(recording: &'static str) -> &'static [u8] {
    let (_, body) = recording
        .split_once("\n\n")
        .expect("a recording has a head and a body");
    body.strip_suffix('\n').unwrap_or(body).as_bytes()
}

/// The first pod group annotation of the fixture's `hello.web.web`, as the views carry it.
pub const HELLO_WEB_ANNOTATION: &str = r#"{"mountpoint": ["hello.lain.local", "hello.lain"], "https_only": false, "healthcheck": "/ping"}"#;

/// The release version of the fixture's `hello` and `hello-service`.
pub const HELLO_VERSION: &str = "release-1523330000-0123456789abcdef0123456789abcdef01234567";
