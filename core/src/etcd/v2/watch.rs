//! One answer to a long-poll watch ([`super::watch_path`]): etcd holds the request until an
//! event at or after `waitIndex` exists under `/lain`, then answers that one event and ends
//! the body. An event already in etcd's history (the last 1000) is answered at once, so a
//! watch that is behind catches up one request per event; error 401 says the history no
//! longer reaches `waitIndex`.

use super::{event, Answer, EtcdError, EVENT_INDEX_CLEARED, MAX_LINE};
use crate::etcd::{CodecError, WatchResponse};

/// The whole answer to a [`super::watch_path`] request as the watch message it is: one event
/// (possibly none that changes a key: a directory created), always [`WatchResponse::last`]
/// (watch again from the next index); error 401 as a [`WatchResponse`] with
/// `compact_revision` (a fresh snapshot, applied as a diff); any other answer an error.
pub fn parse_watch(answer: Answer<'_>) -> Result<WatchResponse, CodecError> {
    let header_revision = super::index(answer.etcd_index).unwrap_or(0);
    if answer.status != 200 {
        let error = EtcdError::parse(answer)?;
        if error.code != Some(EVENT_INDEX_CLEARED) {
            return Err(error.into_codec_error());
        }
        let current = error.index.unwrap_or(0).max(header_revision);
        return Ok(WatchResponse {
            canceled: true,
            cancel_reason: format!("{} ({})", error.message, error.cause),
            compact_revision: oldest_index(&error.cause).unwrap_or(current).max(1),
            header_revision: current,
            ..WatchResponse::default()
        });
    }
    if answer.body.len() > MAX_LINE {
        return Err(CodecError::Shape("a v2 watch answer longer than the limit"));
    }
    let line = answer.body.trim_ascii();
    if line.is_empty() {
        return Err(CodecError::Shape(
            "a v2 watch answer without an event (etcd 2.3.7's proxy answers so when it loses its member)",
        ));
    }
    let (event, index) = event(line).map_err(|e| match e {
        CodecError::Json(m) => CodecError::Json(format!(
            "{m}, in {} bytes: {}",
            answer.body.len(),
            super::snippet(answer.body)
        )),
        other => other,
    })?;
    Ok(WatchResponse {
        header_revision,
        events: event.into_iter().collect(),
        last_event_revision: Some(index),
        last: true,
        ..WatchResponse::default()
    })
}

/// The oldest index etcd still has, from a 401's cause (`the requested history has been
/// cleared [33/11]`: 33 is the oldest, 11 the requested).
fn oldest_index(cause: &str) -> Option<i64> {
    let inside = cause.rsplit_once('[')?.1.split_once(']')?.0;
    inside.split_once('/')?.0.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::oldest_index;

    #[test]
    fn the_oldest_index_is_read_from_the_cause_of_a_401() {
        assert_eq!(
            oldest_index("the requested history has been cleared [33/11]"),
            Some(33)
        );
        assert_eq!(oldest_index("cleared"), None);
        assert_eq!(oldest_index("[x/1]"), None);
    }
}
