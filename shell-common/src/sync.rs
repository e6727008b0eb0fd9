//! Wake-up primitives that work under any async runtime (std only): a [`Notify`] with a stored
//! permit for one waiting task, a [`Latch`] any number of tasks wait on, and [`first`] of two
//! futures. The shells use them through [`crate::Shared`].

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A wake-up for one task. A [`Notify::notify`] while nobody waits is kept (one permit), so a
/// wake-up that arrives while the task is busy is not lost.
#[derive(Debug, Default)]
pub struct Notify {
    state: Mutex<(bool, Option<Waker>)>,
}

impl Notify {
    /// A notify without a permit.
    pub fn new() -> Notify {
        Notify::default()
    }

    /// Stores the permit and wakes the waiting task, if any.
    pub fn notify(&self) {
        let waker = {
            let mut state = lock(&self.state);
            state.0 = true;
            state.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Resolves once a permit is there, and takes it. Only one task may wait at a time.
    pub async fn notified(&self) {
        poll_fn(|cx| self.poll_notified(cx)).await
    }

    /// [`Notify::notified`] for a hand-written future or stream: takes the permit if there is
    /// one, else registers `cx`'s waker (replacing the previous one) for the next
    /// [`Notify::notify`].
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.state);
        if std::mem::take(&mut state.0) {
            state.1 = None;
            Poll::Ready(())
        } else {
            state.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// A one-way switch many tasks can wait on (shutdown).
#[derive(Debug, Default)]
pub struct Latch {
    state: Mutex<LatchState>,
}

#[derive(Debug, Default)]
struct LatchState {
    set: bool,
    next_key: u64,
    waiters: HashMap<u64, Waker>,
}

impl Latch {
    /// An unset latch.
    pub fn new() -> Latch {
        Latch::default()
    }

    /// Sets the latch and wakes every waiting task.
    pub fn set(&self) {
        let waiters = {
            let mut state = lock(&self.state);
            state.set = true;
            std::mem::take(&mut state.waiters)
        };
        waiters.into_values().for_each(Waker::wake);
    }

    /// Whether the latch is set.
    pub fn is_set(&self) -> bool {
        lock(&self.state).set
    }

    /// Resolves once the latch is set (at once if it is).
    pub async fn wait(&self) {
        struct Registration<'a>(&'a Latch, Option<u64>);
        impl Drop for Registration<'_> {
            fn drop(&mut self) {
                if let Some(key) = self.1 {
                    lock(&self.0.state).waiters.remove(&key);
                }
            }
        }
        let mut registration = Registration(self, None);
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.set {
                return Poll::Ready(());
            }
            let key = *registration.1.get_or_insert_with(|| {
                state.next_key += 1;
                state.next_key
            });
            state.waiters.insert(key, cx.waker().clone());
            Poll::Pending
        })
        .await;
        registration.1 = None;
    }
}

/// Which of two futures finished first.
#[derive(Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first one, with its output.
    Left(A),
    /// The second one, with its output.
    Right(B),
}

/// Runs `a` and `b` concurrently and returns the output of the first to finish (`a` is polled
/// first); the other is dropped.
pub async fn first<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        b.as_mut().poll(cx).map(Either::Right)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>, count: &Arc<Count>) -> Poll<F::Output> {
        let waker = Waker::from(count.clone());
        f.poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_notify_keeps_one_permit_and_wakes_its_waiter() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let n = Notify::new();
        n.notify();
        n.notify();
        assert!(poll_once(pin!(n.notified()), &count).is_ready());
        let mut waiting = pin!(n.notified());
        assert!(poll_once(waiting.as_mut(), &count).is_pending());
        n.notify();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(poll_once(waiting, &count).is_ready());
    }

    #[test]
    fn a_latch_wakes_every_waiter_and_forgets_dropped_ones() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let latch = Latch::new();
        let mut a = Box::pin(latch.wait());
        let mut b = Box::pin(latch.wait());
        assert!(poll_once(a.as_mut(), &count).is_pending());
        assert!(poll_once(b.as_mut(), &count).is_pending());
        assert!(poll_once(b.as_mut(), &count).is_pending());
        drop(b);
        assert_eq!(lock(&latch.state).waiters.len(), 1);
        latch.set();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(poll_once(a.as_mut(), &count).is_ready());
        assert!(latch.is_set());
        assert!(poll_once(pin!(latch.wait()), &count).is_ready());
    }

    #[test]
    fn first_returns_the_ready_one() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let r = poll_once(
            pin!(first(std::future::pending::<()>(), async { 7 })),
            &count,
        );
        assert_eq!(r, Poll::Ready(Either::Right(7)));
    }
}
