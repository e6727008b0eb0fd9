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
