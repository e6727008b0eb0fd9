//! What a server does with lainlet's answers, decided without a server: the reply or error of
//! a `Get`, and the messages of a `Watch` (one encoding per view state shared by every watcher
//! of it, and no message when a watcher's reply did not change).
//!
//! ```text
//! Get:    engine answer (status, body) ──get_reply──▶ EncodedReply | RpcError
//! Watch:  each new view state: sealed = state.encoded_with(|json| seal_reply(service, json))
//!         (made once per state, shared) ──WatchReplies::next──▶ send / skip / fail
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::encoded::EncodedReply;
use crate::error::{MapError, RequestError};
use crate::reply::reply_from_view;
use crate::service::Service;

/// The gRPC status codes lainlet answers with, numbered as gRPC numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// `UNKNOWN` (2): every error of the original (it returned plain Go errors, which gRPC-Go
    /// sends as `Unknown`) — authorisation, parameters, the dead-container rule.
    Unknown = 2,
    /// `INTERNAL` (13): a view that cannot be turned into its reply (a lainlet bug).
    Internal = 13,
    /// `UNAVAILABLE` (14): lainlet is not ready yet (no etcd snapshot) or is shutting down;
    /// the conventional code for "try again", new like the conditions themselves.
    Unavailable = 14,
}

impl Code {
    /// The code for a view request that failed with HTTP status `status`: `Unavailable` for
    /// `503` (not ready), `Unknown` for every other status.
    pub fn for_http_status(status: u16) -> Code {
        match status {
            503 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    /// The code's number on the wire (`grpc-status`).
    pub fn number(self) -> i32 {
        self as i32
    }
}

/// A failed rpc: the status code and message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    /// The status code.
    pub code: Code,
    /// The message (`grpc-message`): the original's error text where there is one.
    pub message: String,
}

impl RpcError {
    /// The error of a view request that failed with HTTP status `status` and body `text`
    /// (the original's error texts, e.g. `authorize failed, super required`).
    pub fn from_view_error(status: u16, text: impl Into<String>) -> RpcError {
        RpcError {
            code: Code::for_http_status(status),
            message: text.into(),
        }
    }

    /// A stream ended because the service is shutting down (`Unavailable`).
    pub fn shutting_down() -> RpcError {
        RpcError {
            code: Code::Unavailable,
            message: "lainlet is shutting down".to_owned(),
        }
    }

    /// A view whose JSON did not map to its reply (`Internal`).
    pub fn from_map_error(error: &MapError) -> RpcError {
        RpcError {
            code: Code::Internal,
            message: format!("lainlet could not build the reply: {error}"),
        }
    }
}

impl From<RequestError> for RpcError {
    /// A request that cannot become a view query: `Unknown` with the original's text
    /// (`appname reequired`).
    fn from(error: RequestError) -> RpcError {
        RpcError {
            code: Code::Unknown,
            message: error.to_string(),
        }
    }
}

/// `Get`: the reply to send for lainlet's answer `(status, body)` to the view query of
/// `service`. `200` → the reply built from the JSON body; any other status → the error with
/// the body's text.
pub fn get_reply(service: Service, status: u16, body: &[u8]) -> Result<EncodedReply, RpcError> {
    if status != 200 {
        return Err(RpcError::from_view_error(
            status,
            String::from_utf8_lossy(body),
        ));
    }
    reply_from_view(service, body)
        .map(EncodedReply::from)
        .map_err(|e| RpcError::from_map_error(&e))
}

const SEALED_REPLY: u8 = 1;
const SEALED_FAILURE: u8 = 0;

/// The reply of `service` for one state of its view (`json`), sealed into one buffer that a
/// byte cache can hold (lainlet-core's `ViewVersion::encoded_with`): either the encoded reply
/// or the mapping failure. Open it with [`WatchReplies::next`].
pub fn seal_reply(service: Service, json: &[u8]) -> Bytes {
    match reply_from_view(service, json) {
        Ok(reply) => {
            let mut sealed = BytesMut::with_capacity(1 + reply.len());
            sealed.put_u8(SEALED_REPLY);
            sealed.put_slice(&reply);
            sealed.freeze()
        }
        Err(e) => seal_failure(&RpcError::from_map_error(&e).message),
    }
}

/// A view state that has no reply, sealed like [`seal_reply`]'s failures: a watcher given it
/// ends with an `Internal` error carrying `message`.
pub fn seal_failure(message: &str) -> Bytes {
    let mut sealed = BytesMut::with_capacity(1 + message.len());
    sealed.put_u8(SEALED_FAILURE);
    sealed.put_slice(message.as_bytes());
    sealed.freeze()
}

fn unseal(sealed: &Bytes) -> Result<EncodedReply, RpcError> {
    match sealed.first() {
        Some(&SEALED_REPLY) => Ok(EncodedReply(sealed.slice(1..))),
        Some(_) => Err(RpcError {
            code: Code::Internal,
            message: String::from_utf8_lossy(&sealed[1..]).into_owned(),
        }),
        None => Err(RpcError {
            code: Code::Internal,
            message: "lainlet could not build the reply: no encoding".to_owned(),
        }),
    }
}

/// The messages of one `Watch`: the first view state's reply, then one per state whose reply
/// differs from the last one sent. Two view states can map to the same reply (a `null` list
/// and an empty one are the same proto3 field), and then the watcher gets nothing.
#[derive(Clone, Debug, Default)]
pub struct WatchReplies {
    last: Option<Bytes>,
}

impl WatchReplies {
    /// A watch that has sent nothing yet.
    pub fn new() -> WatchReplies {
        WatchReplies::default()
    }

    /// What to do with a new view state, given as sealed by [`seal_reply`]: `Some(Ok(reply))`
    /// to send it, `None` when the reply equals the last one sent, `Some(Err(_))` when the
    /// state has no reply (end the stream with that error).
    pub fn next(&mut self, sealed: &Bytes) -> Option<Result<EncodedReply, RpcError>> {
        let reply = match unseal(sealed) {
            Ok(reply) => reply,
            Err(e) => return Some(Err(e)),
        };
        if self.last.as_ref() == Some(&reply.0) {
            return None;
        }
        self.last = Some(reply.0.clone());
        Some(Ok(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ConfigReply, CoreinfoReply};
    use crate::FromView;

    #[test]
    fn a_get_answers_the_reply_or_the_views_error_text() {
        let reply = get_reply(Service::Config, 200, br#"{"vip":"192.168.77.201"}"#).unwrap();
        assert_eq!(
            reply.decode_as::<ConfigReply>().unwrap(),
            ConfigReply::from_view(br#"{"vip":"192.168.77.201"}"#).unwrap()
        );
        assert_eq!(
            get_reply(Service::Nodes, 400, b"authorize failed, super required"),
            Err(RpcError {
                code: Code::Unknown,
                message: "authorize failed, super required".into()
            })
        );
        assert_eq!(
            get_reply(
                Service::WebrouterWebprocs,
                500,
                b"over half of the containers lost their IPs"
            )
            .unwrap_err()
            .code,
            Code::Unknown
        );
        assert_eq!(
            get_reply(Service::Config, 503, b"lainlet is starting")
                .unwrap_err()
                .code,
            Code::Unavailable
        );
        assert_eq!(
            get_reply(Service::Config, 200, b"[1,2]").unwrap_err().code,
            Code::Internal
        );
    }

    #[test]
    fn a_missing_podgroup_appname_is_the_originals_text() {
        let e = RpcError::from(RequestError::AppnameRequired);
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::Unknown, "appname reequired")
        );
        assert_eq!(Code::Unknown.number(), 2);
        assert_eq!(Code::Internal.number(), 13);
        assert_eq!(Code::Unavailable.number(), 14);
        assert_eq!(RpcError::shutting_down().code, Code::Unavailable);
    }

    #[test]
    fn a_watch_sends_a_state_only_when_its_reply_changes() {
        let mut watch = WatchReplies::new();
        let hello = |command: &str| {
            format!(
                r#"{{"hello.web.web":{{"PodInfos":[{{"Annotation":"","ContainerInfos":[{{"Command":{command},"ContainerId":"c","ContainerIp":"172.20.0.2","Cpu":1,"Env":null,"Expose":80,"Image":"i","Memory":5,"NodeIp":"n","NodeName":"node1","Volumes":null}}],"Dependencies":[],"InstanceNo":1}}]}}}}"#
            )
        };
        let first = seal_reply(Service::Coreinfo, hello("null").as_bytes());
        let sent = watch.next(&first).unwrap().unwrap();
        assert_eq!(
            sent.decode_as::<CoreinfoReply>().unwrap(),
            CoreinfoReply::from_view(hello("null").as_bytes()).unwrap()
        );
        // `null` and `[]` are the same proto3 field: the same reply, nothing to send.
        let same = seal_reply(Service::Coreinfo, hello("[]").as_bytes());
        assert_eq!(first, same);
        assert!(watch.next(&same).is_none());
        let changed = seal_reply(Service::Coreinfo, hello(r#"["./run"]"#).as_bytes());
        assert!(watch.next(&changed).unwrap().is_ok());
        assert!(watch.next(&changed).is_none());
        // Back to the first reply: a change for this watcher.
        assert_eq!(watch.next(&first).unwrap().unwrap(), sent);
    }

    #[test]
    fn a_state_without_a_reply_ends_the_watch_with_an_internal_error() {
        let mut watch = WatchReplies::new();
        let bad = seal_reply(Service::Config, b"not json");
        let e = watch.next(&bad).unwrap().unwrap_err();
        assert_eq!(e.code, Code::Internal);
        assert!(e.message.contains("/v2/configwatcher"), "{}", e.message);
        assert_eq!(
            watch.next(&Bytes::new()).unwrap().unwrap_err().code,
            Code::Internal
        );
        assert_eq!(
            watch.next(&seal_failure("no reply")),
            Some(Err(RpcError {
                code: Code::Internal,
                message: "no reply".into()
            }))
        );
    }

    #[test]
    fn an_empty_reply_is_a_reply() {
        // `{}` encodes to zero bytes; it is still a message to send.
        let mut watch = WatchReplies::new();
        let empty = seal_reply(Service::Config, b"{}");
        let sent = watch.next(&empty).unwrap().unwrap();
        assert!(sent.bytes().is_empty());
        assert!(watch.next(&empty).is_none());
    }
}
