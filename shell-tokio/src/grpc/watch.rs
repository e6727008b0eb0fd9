//! A `Watch` rpc's replies as the `Stream` tonic sends from.
//!
//! The stream holds no queue. tonic (through hyper's HTTP/2) polls it only when the stream has
//! flow-control room for more; each poll takes the watch's newest state from the engine
//! (`Shared::poll_update`: older states a slow reader missed were conflated there, one slot per
//! watch), turns it into its reply with `ViewVersion::encoded_with` (encoded once per state,
//! shared by every watcher of the same selection) and lets `WatchReplies` drop a reply equal to
//! the last one sent. With nothing new it waits on the watch's wake-up. So a reader that does
//! not read holds at most what HTTP/2 flow control lets through plus the state in its slot, and
//! gets the newest state when it reads again; nobody else waits for it.
//!
//! Dropping the stream (the client cancelled, the connection closed, or the server ended the
//! call) ends the watch in the engine at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use lainlet_core::{SubscriberId, Update};
use lainlet_grpc::{seal_failure, seal_reply, EncodedReply, RpcError, Service, WatchReplies};
use lainlet_shell_common::sync::Notify;
use lainlet_shell_common::Shared;
use tonic::Status;
use tracing::debug;

use super::status;

/// The replies of one `Watch`.
pub struct Replies {
    shared: Arc<Shared>,
    id: SubscriberId,
    notify: Arc<Notify>,
    service: Service,
    replies: WatchReplies,
    /// The first message, taken when the watch opened.
    first: Option<EncodedReply>,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
}

impl Replies {
    /// The replies of watch `id` (opened with `Delivery::Raw`) of `service`'s view, woken by
    /// `notify`. The first state is taken now, so that a watch that fails at once (not
    /// authorised, a dead-container view, …) is answered with its error and no stream.
    pub fn open(
        shared: Arc<Shared>,
        service: Service,
        id: SubscriberId,
        notify: Arc<Notify>,
    ) -> Result<Replies, Status> {
        let for_shutdown = shared.clone();
        let mut replies = Replies {
            shared,
            id,
            notify,
            service,
            replies: WatchReplies::new(),
            first: None,
            shutdown: Box::pin(async move { for_shutdown.shut_down().await }),
            done: false,
        };
        match replies.next_reply() {
            Some(Ok(first)) => replies.first = Some(first),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        Ok(replies)
    }

    /// The next message from the engine, if it has one: a reply that differs from the last one
    /// sent, or the error that ends the watch.
    fn next_reply(&mut self) -> Option<Result<EncodedReply, Status>> {
        loop {
            match self.shared.poll_update(self.id)? {
                Update::State(version) => {
                    let service = self.service;
                    let sealed = version.encoded_with(|rendering| match rendering {
                        Ok(json) => seal_reply(service, json),
                        // Not reached: poll_update gives error renderings as Update::Error.
                        Err(e) => seal_failure(&e.to_string()),
                    });
                    match self.replies.next(&sealed) {
                        None => continue,
                        Some(Ok(reply)) => return Some(Ok(reply)),
                        Some(Err(e)) => {
                            self.done = true;
                            return Some(Err(status(e)));
                        }
                    }
                }
                Update::Error(e) => {
                    self.done = true;
                    let text = e.to_string();
                    return Some(Err(status(RpcError::from_view_error(e.status(), text))));
                }
            }
        }
    }
}

impl Stream for Replies {
    type Item = Result<EncodedReply, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(item) = this.next_reply() {
                return Poll::Ready(Some(item));
            }
            if this.shutdown.as_mut().poll(cx).is_ready() {
                this.done = true;
                return Poll::Ready(Some(Err(status(RpcError::shutting_down()))));
            }
            // A wake-up between `poll_update` and here is kept as the notify's permit.
            if this.notify.poll_notified(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        debug!(watch = self.id.0, service = ?self.service, "gRPC watch ended");
        self.shared.disconnect(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Instant;

    use lainlet_core::{
        Delivery, Engine, EngineConfig, KeyValue, Method, Request, Snapshot, WatchEvent,
    };
    use lainlet_grpc::message::ConfigReply;
    use lainlet_shell_common::Opened;
    use tonic::Code;

    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn kv(key: &str, value: &str, mod_revision: i64) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: value.as_bytes().to_vec(),
            mod_revision,
        }
    }

    fn shared() -> Arc<Shared> {
        let shared = Shared::new(Engine::new(EngineConfig::default()));
        let snapshot = Snapshot {
            revision: 2,
            kvs: vec![
                kv("/lain/config/vip", "192.168.77.201", 1),
                kv("/lain/config/domain", "lain.local", 2),
            ],
        };
        shared.with_engine(|e| e.handle_snapshot(Instant::now(), snapshot));
        shared
    }

    fn put(shared: &Shared, key: &str, value: &str, revision: i64) {
        let event = WatchEvent::Put(kv(key, value, revision));
        shared.with_engine(|e| e.handle_events(Instant::now(), [event]));
    }

    fn watch(shared: &Arc<Shared>, target: &str) -> Replies {
        let path = format!("/v2/configwatcher?target={target}&watch=1");
        let request = Request::new(Method::Get, &path).with_delivery(Delivery::Raw);
        match shared.request(&request, &shared.context(LOCAL)) {
            Opened::Stream { id, notify } => {
                Replies::open(shared.clone(), Service::Config, id, notify).expect("a watch")
            }
            Opened::Response(r) => panic!("not a watch: {r:?}"),
        }
    }

    fn poll(replies: &mut Replies) -> Poll<Option<Result<EncodedReply, Status>>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(replies).poll_next(&mut cx)
    }

    fn reply(replies: &mut Replies) -> EncodedReply {
        match poll(replies) {
            Poll::Ready(Some(Ok(reply))) => reply,
            other => panic!("no reply: {other:?}"),
        }
    }

    fn vip(reply: &EncodedReply) -> String {
        let config: ConfigReply = reply.decode_as().unwrap();
        config.data["vip"].clone()
    }

    #[test]
    fn watchers_of_the_same_selection_share_one_encoding() {
        let shared = shared();
        let (mut a, mut b) = (watch(&shared, "vip"), watch(&shared, "vip"));
        let mut other = watch(&shared, "domain");
        let (first_a, first_b) = (reply(&mut a), reply(&mut b));
        assert_eq!(vip(&first_a), "192.168.77.201");
        assert_eq!(
            first_a.bytes().as_ptr(),
            first_b.bytes().as_ptr(),
            "one buffer"
        );
        let first_other = reply(&mut other);
        assert_ne!(first_other, first_a);
        put(&shared, "/lain/config/vip", "10.0.0.1", 3);
        let (next_a, next_b) = (reply(&mut a), reply(&mut b));
        assert_eq!(vip(&next_a), "10.0.0.1");
        assert_eq!(
            next_a.bytes().as_ptr(),
            next_b.bytes().as_ptr(),
            "one buffer"
        );
        // The other selection did not change: nothing for it.
        assert!(poll(&mut other).is_pending());
    }

    #[test]
    fn a_watcher_that_does_not_poll_gets_only_the_newest_state() {
        let shared = shared();
        let mut w = watch(&shared, "vip");
        reply(&mut w);
        for i in 0..5 {
            put(&shared, "/lain/config/vip", &format!("10.0.0.{i}"), 3 + i);
        }
        assert_eq!(vip(&reply(&mut w)), "10.0.0.4");
        assert!(poll(&mut w).is_pending());
        // A write that leaves the reply as it is sends nothing.
        put(&shared, "/lain/config/vip", "10.0.0.4", 9);
        assert!(poll(&mut w).is_pending());
    }

    #[test]
    fn dropping_the_replies_ends_the_watch_in_the_engine() {
        let shared = shared();
        let w = watch(&shared, "vip");
        assert_eq!(shared.with_engine(|e| e.subscriber_count()), 1);
        drop(w);
        assert_eq!(shared.with_engine(|e| e.subscriber_count()), 0);
    }

    #[test]
    fn a_failing_watch_is_an_error_and_no_stream() {
        let shared = Shared::new(Engine::new(EngineConfig::default()));
        let request =
            Request::new(Method::Get, "/v2/configwatcher?watch=1").with_delivery(Delivery::Raw);
        let Opened::Stream { id, notify } = shared.request(&request, &shared.context(LOCAL)) else {
            panic!("a watch");
        };
        // Not ready yet: no snapshot.
        let status = Replies::open(shared.clone(), Service::Config, id, notify)
            .err()
            .expect("an error");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(shared.with_engine(|e| e.subscriber_count()), 0);
    }

    #[test]
    fn shutdown_ends_a_watch_with_unavailable() {
        let shared = shared();
        let mut w = watch(&shared, "vip");
        reply(&mut w);
        assert!(poll(&mut w).is_pending());
        shared.begin_shutdown();
        match poll(&mut w) {
            Poll::Ready(Some(Err(status))) => assert_eq!(status.code(), Code::Unavailable),
            other => panic!("not ended: {other:?}"),
        }
        assert!(matches!(poll(&mut w), Poll::Ready(None)));
    }
}
