//! What every task shares: the one [`Engine`] behind a mutex, the wake-up handles of the watch
//! connections, the connection counter, the heartbeat timer and the shutdown signal.
//!
//! The mutex is never held across an `.await`: each method locks, calls the engine, drains
//! [`Engine::poll_wakeup`] and wakes the connections it names, and unlocks. A connection's
//! [`Notify`] keeps a permit when nobody waits, so a wake-up that arrives while the connection
//! is busy writing is not lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use lainlet_core::{Engine, Frame, Reply, Request, RequestContext, SubscriberId};
use tokio::sync::{watch, Notify};

/// The engine and its companions; one per process, behind an `Arc`.
pub struct Shared {
    inner: Mutex<Inner>,
    /// Open HTTP connections (`/debug`'s `connections`, and the `--max-connections` limit).
    pub connections: AtomicUsize,
    timer: Notify,
    shutdown: watch::Sender<bool>,
}

struct Inner {
    engine: Engine,
    wakers: HashMap<SubscriberId, Arc<Notify>>,
}

impl Inner {
    fn wake(&mut self) {
        while let Some(id) = self.engine.poll_wakeup() {
            if let Some(notify) = self.wakers.get(&id) {
                notify.notify_one();
            }
        }
    }
}

impl Shared {
    /// Wraps `engine`.
    pub fn new(engine: Engine) -> Arc<Shared> {
        Arc::new(Shared {
            inner: Mutex::new(Inner {
                engine,
                wakers: HashMap::new(),
            }),
            connections: AtomicUsize::new(0),
            timer: Notify::new(),
            shutdown: watch::channel(false).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the engine, then wakes the watches that have something to write.
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        let mut inner = self.lock();
        let result = f(&mut inner.engine);
        inner.wake();
        result
    }

    /// Answers a request. For a stream, also returns the handle that wakes its connection
    /// (registered under the same lock, so no wake-up can be missed) and re-arms the timer.
    pub fn request(&self, request: &Request<'_>, ctx: &RequestContext) -> Opened {
        let mut inner = self.lock();
        let reply = inner.engine.handle_request(request, ctx);
        let notify = match reply {
            Reply::Stream(id) => {
                let notify = Arc::new(Notify::new());
                inner.wakers.insert(id, notify.clone());
                self.timer.notify_one();
                Some(notify)
            }
            Reply::Response(_) => None,
        };
        inner.wake();
        Opened { reply, notify }
    }

    /// The next frame to write on watch `id`, if any.
    pub fn poll_frame(&self, id: SubscriberId) -> Option<Frame> {
        self.with_engine(|engine| engine.poll_frame(id))
    }

    /// Watch `id` is over (client gone, stream closed, or shutdown).
    pub fn disconnect(&self, id: SubscriberId) {
        let mut inner = self.lock();
        inner.wakers.remove(&id);
        inner.engine.handle_disconnect(id);
        inner.wake();
    }

    /// The current open-connection count.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// A handle that resolves once shutdown has begun.
    pub fn shutdown_signal(&self) -> Shutdown {
        Shutdown(self.shutdown.subscribe())
    }

    /// Begins shutdown: listeners stop accepting, watch streams end, connections close.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Drives heartbeats: sleeps until [`Engine::poll_timeout`], calls
    /// [`Engine::handle_timeout`], and re-arms when a new watch opens. Runs until shutdown.
    pub async fn run_timer(self: Arc<Self>) {
        let mut shutdown = self.shutdown_signal();
        loop {
            let next = self.lock().engine.poll_timeout();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => self.with_engine(|e| e.handle_timeout(Instant::now())),
                () = self.timer.notified() => {}
                () = shutdown.wait() => return,
            }
        }
    }
}

/// The result of [`Shared::request`].
pub struct Opened {
    /// The engine's answer.
    pub reply: Reply,
    /// For [`Reply::Stream`]: notified whenever the watch has something to write.
    pub notify: Option<Arc<Notify>>,
}

/// A shutdown signal receiver (cheap to clone).
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once shutdown has begun (immediately if it already has).
    pub async fn wait(&mut self) {
        if self.0.wait_for(|down| *down).await.is_err() {
            // The sender is gone: the process is ending anyway.
            std::future::pending::<()>().await;
        }
    }

    /// Whether shutdown has begun.
    pub fn is_down(&self) -> bool {
        *self.0.borrow()
    }
}
