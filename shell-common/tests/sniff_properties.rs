//! Properties of the request-head sniffer, which reads bytes from any peer: it never panics,
//! never claims more bytes than it was given, and a head it accepts stays accepted whatever
//! follows it.

use lainlet_shell_common::sniff::{sniff, Body, Sniffed, MAX_BODY};
use proptest::prelude::*;

fn head_len(s: &Sniffed) -> Option<usize> {
    match s {
        Sniffed::Plain { head, .. } | Sniffed::Watch { head, .. } => Some(*head),
        _ => None,
    }
}

/// Request-like bytes: a method, a target with odd characters, headers from a small menu
/// (including lengths near the limits), and arbitrary trailing bytes.
fn requestish() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PRI", "G\u{e9}T", ""]);
    let target = "[/a-z?=&%0-9\\x80-\\xff ]{0,40}";
    let header = prop::sample::select(vec![
        "Host: x".to_owned(),
        "Content-Length: 0".to_owned(),
        "Content-Length: 3".to_owned(),
        format!("Content-Length: {}", MAX_BODY + 1),
        format!("Content-Length: {}", u64::MAX),
        "Content-Length: 99999999999999999999999".to_owned(),
        "Content-Length: -1".to_owned(),
        "Transfer-Encoding: chunked".to_owned(),
        "Last-Event-ID: 7".to_owned(),
        "X: \u{1}\u{ff}".to_owned(),
    ]);
    (
        method,
        target,
        prop::collection::vec(header, 0..6),
        prop::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(m, t, hs, tail)| {
            let mut out = format!("{m} {t} HTTP/1.1\r\n").into_bytes();
            for h in hs {
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend(tail);
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic_and_heads_fit_the_input(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let s = sniff(&bytes);
        if let Some(n) = head_len(&s) {
            prop_assert!(n <= bytes.len());
        }
    }

    #[test]
    fn request_like_bytes_get_a_verdict_that_more_bytes_do_not_change(bytes in requestish(), more in prop::collection::vec(any::<u8>(), 0..64)) {
        let first = sniff(&bytes);
        if let Some(n) = head_len(&first) {
            prop_assert!(n <= bytes.len());
            let mut longer = bytes.clone();
            longer.extend(&more);
            prop_assert_eq!(sniff(&longer), first.clone());
        }
        if let Sniffed::Plain { body: Body::Length(n), .. } = first {
            prop_assert!(n <= MAX_BODY, "bodies past the limit are refused");
        }
    }
}
