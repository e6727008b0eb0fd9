//! What every task of a shell shares: the one [`Engine`] behind a mutex, the wake-up handles of
//! the watch connections, the connection counter, the heartbeat timer and the shutdown latch.
//!
//! The mutex is never held across an `.await`: each method locks, calls the engine, drains
//! [`Engine::poll_wakeup`] and wakes the connections it names, and unlocks. A connection's
//! [`Notify`] keeps a permit when nobody waits, so a wake-up that arrives while the connection
//! is busy writing is not lost. Nothing here knows an async runtime: the only thing a shell
//! lends is its sleep function ([`Shared::run_timer`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use lainlet_core::{
    Engine, Frame, Method, Reply, Request, RequestContext, Response, SubscriberId, Update,
};
use tracing::{debug, error};

use crate::socket::Runtime;
use crate::sync::{first, Either, Latch, Notify};

/// The engine and its companions; one per process, behind an `Arc`.
pub struct Shared {
    inner: Mutex<Inner>,
    connections: AtomicUsize,
    timer: Notify,
    shutdown: Latch,
    /// `--state-file`, when on.
    state_file: std::sync::OnceLock<std::path::PathBuf>,
    /// Whether the fleet heartbeat runs (it removes its key before the process exits).
    announcing: std::sync::atomic::AtomicBool,
    /// Set when the fleet heartbeat is over (its key removed, or it never ran).
    announce_done: Latch,
}

struct Inner {
    engine: Engine,
    wakers: HashMap<SubscriberId, Arc<Notify>>,
    /// Wakes the etcd loop ([`Engine::poll_etcd_wakeup`]).
    etcd: Arc<Notify>,
    /// The deadline the timer task sleeps until ([`Shared::run_timer`]); `None`: forever.
    armed: Option<Instant>,
}

impl Inner {
    /// Whether the engine's next deadline is earlier than the one the timer sleeps until
    /// (after any `handle_*` call: the timer must wake up and re-arm).
    fn deadline_moved_earlier(&self) -> bool {
        match (self.engine.poll_timeout(), self.armed) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    fn wake(&mut self) {
        while let Some(id) = self.engine.poll_wakeup() {
            if let Some(notify) = self.wakers.get(&id) {
                notify.notify();
            }
        }
        while self.engine.poll_etcd_wakeup().is_some() {
            self.etcd.notify();
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
                etcd: Arc::new(Notify::new()),
                armed: None,
            }),
            connections: AtomicUsize::new(0),
            timer: Notify::new(),
            shutdown: Latch::new(),
            state_file: std::sync::OnceLock::new(),
            announcing: std::sync::atomic::AtomicBool::new(false),
            announce_done: Latch::new(),
        })
    }

    /// The fleet heartbeat task starts ([`crate::announce::announce`]).
    pub fn announce_started(&self) {
        self.announcing.store(true, Ordering::SeqCst);
    }

    /// The fleet heartbeat task is over.
    pub fn announce_done(&self) {
        self.announce_done.set();
    }

    /// Resolves when the fleet heartbeat is over, or at once if it never started.
    pub async fn announce_finished(&self) {
        if self.announcing.load(Ordering::SeqCst) {
            self.announce_done.wait().await;
        }
    }

    /// Sets the state file the engine's state is saved to (once, at start).
    pub fn set_state_file(&self, path: std::path::PathBuf) {
        let _ = self.state_file.set(path);
    }

    /// The state file, if saving is on.
    pub fn state_file(&self) -> Option<&std::path::Path> {
        self.state_file.get().map(std::path::PathBuf::as_path)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves when the engine wants the etcd loop to look at its checks again (a watch
    /// resuming from before the history waits for a listing).
    pub async fn etcd_wanted(&self) {
        let notify = self.lock().etcd.clone();
        notify.notified().await;
    }

    /// Runs `f` on the engine, then wakes the watches that have something to write, and the
    /// timer if the engine's next deadline moved earlier.
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        let mut inner = self.lock();
        let result = f(&mut inner.engine);
        inner.wake();
        if inner.deadline_moved_earlier() {
            self.timer.notify();
        }
        result
    }

    /// Answers a request. For a stream, also returns the handle that wakes its connection
    /// (registered under the same lock, so no wake-up can be missed) and re-arms the timer.
    pub fn request(&self, request: &Request<'_>, ctx: &RequestContext) -> Opened {
        let mut inner = self.lock();
        let opened = match inner.engine.handle_request(request, ctx) {
            Reply::Stream(id) => {
                let notify = Arc::new(Notify::new());
                inner.wakers.insert(id, notify.clone());
                Opened::Stream { id, notify }
            }
            Reply::Response(r) => Opened::Response(r),
        };
        inner.wake();
        if inner.deadline_moved_earlier() {
            self.timer.notify();
        }
        opened
    }

    /// Answers a plain request (what a shell's HTTP library hands over) from `peer`. The
    /// sniffer keeps every watch away from the HTTP library, so a stream here is refused.
    pub fn answer(&self, method: &str, target: &str, peer: IpAddr) -> Response {
        let request = Request::new(Method::parse(method), target);
        let response = match self.request(&request, &self.context(peer)) {
            Opened::Response(r) => r,
            Opened::Stream { id, .. } => {
                error!(%peer, target, "a watch request reached the HTTP library; refusing it");
                self.disconnect(id);
                Response::text(500, "lainlet: this watch request could not be served")
            }
        };
        debug!(%peer, method, target, status = response.status, "request");
        response
    }

    /// The request context for a caller at `peer`, now.
    pub fn context(&self, peer: IpAddr) -> RequestContext {
        RequestContext {
            peer,
            now: Instant::now(),
            wall: SystemTime::now(),
            connections: self.connection_count(),
        }
    }

    /// The next frame to write on watch `id`, if any.
    pub fn poll_frame(&self, id: SubscriberId) -> Option<Frame> {
        self.with_engine(|engine| engine.poll_frame(id))
    }

    /// The next state of watch `id` opened with `Delivery::Raw`, if any (see
    /// [`Engine::poll_update`]).
    pub fn poll_update(&self, id: SubscriberId) -> Option<Update> {
        self.with_engine(|engine| engine.poll_update(id))
    }

    /// Watch `id` is over (client gone, stream closed, or shutdown).
    pub fn disconnect(&self, id: SubscriberId) {
        let mut inner = self.lock();
        inner.wakers.remove(&id);
        inner.engine.handle_disconnect(id);
        inner.wake();
    }

    /// Counts one more open HTTP connection for as long as the guard lives.
    pub fn open_connection(self: &Arc<Self>) -> OpenConnection {
        let count = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        OpenConnection {
            shared: self.clone(),
            count,
        }
    }

    /// The current open-connection count (`/debug`'s `connections`, the connection limit).
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Resolves once shutdown has begun (at once if it has).
    pub async fn shut_down(&self) {
        self.shutdown.wait().await
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_set()
    }

    /// Begins shutdown: listeners stop accepting, watch streams end, connections close.
    /// Waiting watches are woken through their own handle (they check
    /// [`Shared::is_shutting_down`] when woken, rather than each waiting on the latch).
    pub fn begin_shutdown(&self) {
        self.shutdown.set();
        for notify in self.lock().wakers.values() {
            notify.notify();
        }
    }

    /// Drives the engine's timers until shutdown: sleeps until [`Engine::poll_timeout`],
    /// calls [`Engine::handle_timeout`], and re-arms whenever a call into the engine moved
    /// that deadline earlier (a watch opened, a resume held, …).
    pub async fn run_timer<R: Runtime>(self: Arc<Self>, rt: R) {
        loop {
            let next = {
                let mut inner = self.lock();
                inner.armed = inner.engine.poll_timeout();
                inner.armed
            };
            let sleep = async {
                match next {
                    Some(at) => rt.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            match first(first(sleep, self.timer.notified()), self.shut_down()).await {
                Either::Left(Either::Left(())) => {
                    self.with_engine(|e| e.handle_timeout(Instant::now()));
                }
                Either::Left(Either::Right(())) => {}
                Either::Right(()) => return,
            }
        }
    }
}

/// The result of [`Shared::request`].
pub enum Opened {
    /// Send this response.
    Response(Response),
    /// A watch: stream the frames of `id`, polling again whenever `notify` fires.
    Stream {
        /// The watch.
        id: SubscriberId,
        /// Notified whenever the watch has something to write.
        notify: Arc<Notify>,
    },
}

/// One open HTTP connection, counted until dropped.
pub struct OpenConnection {
    shared: Arc<Shared>,
    /// The open-connection count including this one, when it was opened.
    pub count: usize,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::net::{IpAddr, Ipv4Addr};
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::task::{Context, Wake, Waker};

    use lainlet_core::{EngineConfig, Method, Reply, Request};

    use super::*;

    /// A runtime whose sleeps never end and are recorded.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Instant>>>);

    impl Runtime for Recorder {
        fn sleep_until(&self, at: Instant) -> impl Future<Output = ()> + Send {
            self.0.lock().unwrap().push(at);
            std::future::pending()
        }
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_timer_rearms_when_any_engine_call_moves_the_deadline_earlier() {
        let shared = Shared::new(Engine::new(EngineConfig::default()));
        crate::etcd::load_demo(&shared);
        let rt = Recorder::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut timer = pin!(shared.clone().run_timer(rt.clone()));
        let mut cx = Context::from_waker(&waker);
        assert!(timer.as_mut().poll(&mut cx).is_pending());
        assert!(
            rt.0.lock().unwrap().is_empty(),
            "no deadline yet: sleeps forever"
        );
        // A watch opened by a plain engine call (not Shared::request) adds a heartbeat.
        let ctx = shared.context(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let request = Request::new(Method::Get, "/v2/configwatcher?watch=1&heartbeat=5");
        let reply = shared.with_engine(|e| e.handle_request(&request, &ctx));
        assert!(matches!(reply, Reply::Stream(_)));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the timer was woken");
        assert!(timer.as_mut().poll(&mut cx).is_pending());
        let armed = rt.0.lock().unwrap().clone();
        assert_eq!(armed.len(), 1, "re-armed once: {armed:?}");
        assert_eq!(Some(armed[0]), shared.with_engine(|e| e.poll_timeout()));
        // A call that leaves the deadline where it is does not wake it again.
        shared.with_engine(|e| e.is_ready());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
