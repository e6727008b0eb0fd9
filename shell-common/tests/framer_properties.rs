//! Properties of the request framer, which reads bytes from any peer in pieces of any size: it
//! never panics, passes only bytes it was given and in order, and how the bytes are cut into
//! reads changes nothing — the same bytes are passed, the same request heads are marked, and
//! the same ending action follows.

use std::time::Instant;

use lainlet_shell_common::conn::ConnectionPolicy;
use lainlet_shell_common::framer::{Action, Framer};
use lainlet_shell_common::sniff::MAX_BODY;
use proptest::prelude::*;

/// What a shell sees: the bytes passed, the heads marked (offsets into the passed bytes), and
/// the action that ended the framing (if the input did).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    passed: Vec<u8>,
    heads: Vec<usize>,
    ending: Option<Action>,
}

/// Feeds `input` in reads cut at `cuts` (then end of stream if `eof`), passing at most
/// `take` bytes of each `Pass` (as an HTTP library with a small buffer would).
fn run(input: &[u8], cuts: &[usize], eof: bool, take: usize) -> Outcome {
    let now = Instant::now();
    let mut f = Framer::new(now, ConnectionPolicy::default());
    let mut out = Outcome {
        passed: Vec::new(),
        heads: Vec::new(),
        ending: None,
    };
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    let mut at = 0;
    let mut reads = cuts.into_iter().map(move |c| {
        let piece = &input[at.min(c)..c];
        at = at.max(c);
        piece
    });
    let mut eof_sent = false;
    loop {
        match f.poll_action() {
            Some(Action::Pass { len, start }) => {
                assert!(
                    len > 0 && len <= f.buffered().len(),
                    "a pass fits the buffer"
                );
                if start {
                    out.heads.push(out.passed.len());
                }
                let n = len.min(take.max(1));
                out.passed.extend_from_slice(&f.buffered()[..n]);
                f.handle_passed(now, n);
                continue;
            }
            Some(action) => {
                assert!(f.is_done());
                assert_eq!(f.poll_action(), None, "an ending action is given once");
                out.ending = Some(action);
                return out;
            }
            None => {}
        }
        match reads.next() {
            Some(piece) => f.handle_read(now, piece),
            None if eof && !eof_sent => {
                eof_sent = true;
                f.handle_eof();
            }
            None => return out,
        }
    }
}

/// A stream of requests: plain ones with small bodies, watches, odd bytes.
fn requests() -> impl Strategy<Value = Vec<u8>> {
    let request = prop_oneof![
        Just(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        Just(b"HEAD /v2/nodes HTTP/1.0\r\n\r\n".to_vec()),
        "[a-z]{0,20}".prop_map(|b| {
            format!("POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n{b}", b.len()).into_bytes()
        }),
        Just(b"GET /v2/nodes?watch=1 HTTP/1.1\r\nLast-Event-ID: 3\r\n\r\n".to_vec()),
        Just(
            format!(
                "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY + 1
            )
            .into_bytes()
        ),
        Just(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ];
    prop::collection::vec(request, 0..6).prop_map(|rs| rs.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn how_the_bytes_are_cut_into_reads_changes_nothing(
        input in requests(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        eof in any::<bool>(),
        take in 1usize..64,
    ) {
        let whole = run(&input, &[], eof, usize::MAX);
        prop_assert!(input.starts_with(&whole.passed), "passed bytes are the input, in order");
        let cut = run(&input, &cuts, eof, take);
        prop_assert_eq!(&cut, &whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        eof in any::<bool>(),
    ) {
        let out = run(&input, &cuts, eof, 7);
        prop_assert!(input.starts_with(&out.passed));
        if eof {
            prop_assert!(out.ending.is_some(), "end of stream always ends the framing");
        }
    }
}
