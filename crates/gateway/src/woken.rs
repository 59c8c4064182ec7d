//! A future polled only when it asked to be: [`WhenWoken`].
//!
//! A connection's task waits on its socket and, beside it, on its clock and the gateway's
//! shutdown (`tokio::select!`). Every wake-up of the task — each request's bytes, each upstream
//! answer — would poll all three, and the clock's timer and notifications cost far more to poll
//! than they ever change. Wrapped, they are polled again only after their own waker fired.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// `F`, polled only when its own waker fired since its last poll (or the task's waker changed).
pub struct WhenWoken<F> {
    inner: Pin<Box<F>>,
    gate: Arc<Gate>,
    /// The task's waker at the last real poll.
    task: Option<Waker>,
}

/// The waker `F` sees: notes that it fired and wakes the task.
struct Gate {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock().unwrap_or_else(|e| e.into_inner()) {
            task.wake_by_ref();
        }
    }
}

impl<F: Future> WhenWoken<F> {
    /// Wraps `inner`; its first poll is a real one.
    pub fn new(inner: F) -> WhenWoken<F> {
        let gate = Arc::new(Gate { woken: AtomicBool::new(true), task: Mutex::new(None) });
        WhenWoken { inner: Box::pin(inner), gate, task: None }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let same_task = this.task.as_ref().is_some_and(|task| task.will_wake(cx.waker()));
        if same_task && !this.gate.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        if !same_task {
            this.task = Some(cx.waker().clone());
            *this.gate.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        }
        // Cleared before the poll: a wake-up during it is seen at the next one.
        this.gate.woken.store(false, Ordering::Release);
        let waker = Waker::from(this.gate.clone());
        this.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts its polls; ready on the third.
    struct Counted(Arc<AtomicUsize>);

    impl Future for Counted {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= 3 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn it_is_polled_again_only_after_its_waker_fired() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut future = WhenWoken::new(Counted(polls.clone()));
        let task = Waker::noop();
        let mut cx = Context::from_waker(task);
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut future).poll(&mut cx).is_ready(), "each poll followed a wake-up it asked for");
        assert_eq!(polls.load(Ordering::Relaxed), 3);

        let quiet = Arc::new(AtomicUsize::new(0));
        let mut waiting = WhenWoken::new(std::future::pending::<()>());
        for _ in 0..100 {
            assert!(Pin::new(&mut waiting).poll(&mut cx).is_pending());
        }
        let mut silent = WhenWoken::new(async {
            quiet.fetch_add(1, Ordering::Relaxed);
            std::future::pending::<()>().await
        });
        for _ in 0..100 {
            assert!(Pin::new(&mut silent).poll(&mut cx).is_pending());
        }
        assert_eq!(quiet.load(Ordering::Relaxed), 1, "a future that asked for nothing is not polled again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_inside_still_fires() {
        let started = tokio::time::Instant::now();
        let mut other_wakes = 0;
        let others = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                other_wakes += 1;
            }
        };
        tokio::select! {
            () = WhenWoken::new(tokio::time::sleep(Duration::from_secs(5))) => {}
            () = others => unreachable!(),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(other_wakes >= 49, "the task woke for others meanwhile ({other_wakes})");
    }
}
