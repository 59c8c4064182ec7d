//! The upstream request deadlines (`request_timeout`) of one worker thread, looked at by one
//! ticker instead of a timer per request.
//!
//! A tokio timer per exchange took a lock on the timer wheel to insert its entry and again to
//! remove it, nearly always before it fired (about 800 instructions per request in the
//! callgrind profile; this list measured 200 fewer in all, `bench/run-instructions.sh`). Here a
//! request's deadline is a slot in the worker's list, and the worker's ticker ([`watch`]) wakes
//! the requests past theirs, at most one [`TICK`] late. The ticker sleeps while no request
//! waits. On a thread without a ticker (a test's runtime) [`within`] uses tokio's timer.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// How often the ticker looks at the deadlines while requests wait: how late one can fire.
pub const TICK: Duration = Duration::from_millis(10);

thread_local! {
    static DEADLINES: RefCell<Option<DeadlineList>> = const { RefCell::new(None) };
}

/// One worker's waiting deadlines.
#[derive(Default)]
struct DeadlineList {
    slots: Vec<Slot>,
    free: Vec<usize>,
    waiting: usize,
    /// The ticker, while it sleeps for want of deadlines.
    ticker: Option<Waker>,
    /// Wakers to wake once the list is no longer borrowed.
    due: Vec<Waker>,
}

enum Slot {
    Free,
    Waiting { at: Instant, waker: Option<Waker>, passed: bool },
}

impl DeadlineList {
    fn insert(&mut self, at: Instant, waker: Waker) -> usize {
        let slot = Slot::Waiting { at, waker: Some(waker), passed: false };
        self.waiting += 1;
        match self.free.pop() {
            Some(index) => {
                self.slots[index] = slot;
                index
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, index: usize) {
        if let Some(slot @ Slot::Waiting { .. }) = self.slots.get_mut(index) {
            *slot = Slot::Free;
            self.waiting -= 1;
            self.free.push(index);
        }
    }

    /// Marks the deadlines passed at `now` and moves their wakers to `due`.
    fn pass(&mut self, now: Instant) {
        for slot in &mut self.slots {
            if let Slot::Waiting { at, waker, passed: passed @ false } = slot
                && *at <= now
            {
                *passed = true;
                self.due.extend(waker.take());
            }
        }
    }
}

/// Runs this worker's ticker; until it runs, [`within`] on this thread uses tokio's timer.
/// Runs until it is dropped.
pub async fn watch() {
    DEADLINES.with(|deadlines| *deadlines.borrow_mut() = Some(DeadlineList::default()));
    let _installed = Installed;
    let mut due = Vec::new();
    loop {
        poll_fn(|cx| with(|deadlines| sleep_while_none_wait(deadlines, cx)).unwrap_or(Poll::Pending)).await;
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        with(|deadlines| {
            deadlines.pass(now);
            std::mem::swap(&mut deadlines.due, &mut due);
        });
        // Woken outside the borrow: a waker may run code that registers a deadline.
        due.drain(..).for_each(Waker::wake);
    }
}

/// Takes the deadlines down with the ticker: a deadline nobody would look at is passed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = DEADLINES.try_with(|deadlines| deadlines.take());
    }
}

fn sleep_while_none_wait(deadlines: &mut DeadlineList, cx: &mut Context<'_>) -> Poll<()> {
    if deadlines.waiting > 0 {
        return Poll::Ready(());
    }
    deadlines.ticker = Some(cx.waker().clone());
    Poll::Pending
}

/// `f` on this thread's deadlines; none once the ticker is gone.
fn with<R>(f: impl FnOnce(&mut DeadlineList) -> R) -> Option<R> {
    DEADLINES.with(|deadlines| deadlines.borrow_mut().as_mut().map(f))
}

fn ticking() -> bool {
    DEADLINES.with(|deadlines| deadlines.borrow().is_some())
}

/// `future`'s output, or none if it took longer than `limit`.
pub async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    if !ticking() {
        return tokio::time::timeout(limit, future).await.ok();
    }
    let deadline = Deadline { at: Instant::now() + limit, slot: None };
    tokio::select! {
        biased;
        output = future => Some(output),
        () = deadline => None,
    }
}

/// A deadline in the worker's list, from its first poll until it is dropped.
struct Deadline {
    at: Instant,
    slot: Option<usize>,
}

/// What a poll found of a deadline in the list.
enum Looked {
    Passed,
    /// Still to come; the ticker to wake when this deadline is the first to wait.
    Waiting {
        wake_ticker: Option<Waker>,
    },
}

impl Deadline {
    /// Puts the deadline in `list` at its first poll, else looks whether it passed; keeps the
    /// task's waker there.
    fn look(&mut self, list: &mut DeadlineList, cx: &Context<'_>) -> Looked {
        let Some(index) = self.slot else {
            let ticker_asleep = list.waiting == 0;
            self.slot = Some(list.insert(self.at, cx.waker().clone()));
            return Looked::Waiting { wake_ticker: if ticker_asleep { list.ticker.take() } else { None } };
        };
        match &mut list.slots[index] {
            Slot::Waiting { passed: false, waker, .. } => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Looked::Waiting { wake_ticker: None }
            }
            Slot::Waiting { passed: true, .. } | Slot::Free => Looked::Passed,
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // The ticker is gone (its worker is ending): nothing would look at the deadline.
        let looked = with(|list| this.look(list, cx)).unwrap_or(Looked::Passed);
        match looked {
            Looked::Passed => Poll::Ready(()),
            Looked::Waiting { wake_ticker } => {
                if let Some(ticker) = wake_ticker {
                    ticker.wake();
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(index) = self.slot {
            let _ = DEADLINES.try_with(|deadlines| {
                if let Ok(mut deadlines) = deadlines.try_borrow_mut()
                    && let Some(deadlines) = deadlines.as_mut()
                {
                    deadlines.remove(index);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_slow_future_is_cut_at_most_a_tick_after_its_limit() {
        let ticker = tokio::spawn(watch());
        tokio::task::yield_now().await;
        assert!(ticking());
        let started = Instant::now();
        let slow = within(Duration::from_secs(1), tokio::time::sleep(Duration::from_secs(5))).await;
        let waited = started.elapsed();
        assert!(slow.is_none());
        assert!(waited >= Duration::from_secs(1) && waited <= Duration::from_secs(1) + TICK, "cut after {waited:?}");
        let quick = within(Duration::from_secs(1), async { 7 }).await;
        assert_eq!(quick, Some(7));
        assert_eq!(with(|deadlines| deadlines.waiting), Some(0), "a finished wait leaves no slot");
        ticker.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticker_sleeps_while_nothing_waits_and_wakes_for_a_new_deadline() {
        let ticker = tokio::spawn(watch());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(with(|deadlines| deadlines.ticker.is_some()), Some(true), "asleep with no deadline");
        let waits: Vec<_> = (1..=3u64)
            .map(|n| tokio::spawn(within(Duration::from_millis(100 * n), std::future::pending::<()>())))
            .collect();
        let started = Instant::now();
        for wait in waits {
            assert_eq!(wait.await.unwrap(), None);
        }
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited <= Duration::from_millis(300) + TICK, "{waited:?}");
        ticker.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_ticker_tokio_s_timer_cuts() {
        assert!(!ticking());
        let started = Instant::now();
        assert_eq!(within(Duration::from_millis(50), std::future::pending::<()>()).await, None);
        assert_eq!(started.elapsed(), Duration::from_millis(50));
    }
}
