//! Group commit: many writers, one flush.
//!
//! A flushed write waits for the disk, and every conversation streaming a reply writes
//! after each step of it. Writes sent through [`Store::submit`] (or [`Store::commit`]) are
//! applied by one thread, in the order they arrive; all that arrived while the last flush
//! ran are applied together and made durable by one flush, whose result each writer then
//! gets. Under load one flush serves many conversations; a lone write waits for one flush,
//! as a direct write would, without a hop through tokio's blocking pool.
//!
//! A write that goes through here must not flush by itself: the committer does.
//!
//! A write whose writer can wait a little for its durability (a step of a streaming
//! reply, whose box keeps the events until they are acknowledged) goes through
//! [`Store::submit_soon`]: it asks for no flush of its own, and resolves with the next
//! flush, which another write asks for or, at the latest, [`SOON`] after it was applied.
//! A stream of such writes then costs a flush per [`SOON`] at most, and none of its own
//! when other writes flush anyway.
//!
//! A write that may be lost by a crash without harm (one a restart redoes or makes moot,
//! such as forgetting a delivered reply's record) goes through [`Store::apply`]: it is
//! applied in the same order as every other write, asks for no flush of its own, and
//! becomes durable with the next flush that one of them asks for, or sled's own periodic
//! flush.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Inner, Store, StoreError};

/// Writes waiting for the committer thread. When full, [`Store::submit`] waits: writers are
/// slowed to the pace of the disk instead of piling up in memory.
pub(super) const QUEUE: usize = 1024;

/// The most writes applied before one flush, so that a steady stream of writers cannot hold
/// back the results of those that came first.
const BATCH: usize = 256;

/// How long a write of [`Store::submit_soon`] waits at most for a flush.
pub const SOON: Duration = Duration::from_millis(10);

/// One write: applied on the committer thread, it returns what to do with the result of
/// the flush that follows it.
type Job = Box<dyn FnOnce(&Store) -> Finish + Send>;

/// When a write is made durable, and when its writer hears of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// Flushed right after it is applied; the writer hears after that flush.
    Now,
    /// Durable with the next flush, within [`SOON`]; the writer hears after that flush.
    Soon,
    /// Durable with some later flush; the writer hears once it is applied.
    Whenever,
}

/// A job, and when it must be durable.
struct Queued {
    job: Job,
    durability: Durability,
}

/// Hands a job its flush's result.
type Finish = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

/// The sending side of the committer; the thread ends when the store is dropped.
pub(super) struct Committer {
    jobs: mpsc::Sender<Queued>,
}

/// A write handed to the committer: resolves once it is applied and flushed (or failed).
pub struct Pending<T> {
    result: oneshot::Receiver<Result<T, StoreError>>,
}

impl<T> std::future::Future for Pending<T> {
    type Output = Result<T, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.result)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(stopped())))
    }
}

fn stopped() -> StoreError {
    StoreError::Db("the store's commit thread stopped".into())
}

impl Committer {
    /// Starts the committer thread of a store; `None` if the system refuses a thread.
    pub(super) fn start(store: Weak<Inner>) -> Option<Self> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("clawpen-store-commit".into())
            .spawn(move || run(store, queue))
            .map_err(
                |e| tracing::error!(error = %e, "no thread for store commits; writing directly"),
            )
            .ok()?;
        Some(Self { jobs })
    }
}

/// The committer thread: take what is queued, apply it, flush once, answer everyone.
fn run(store: Weak<Inner>, mut queue: mpsc::Receiver<Queued>) {
    // Only a clock, to wait for the next write no longer than a waiting write's flush is
    // due; without one, such writes are flushed at once.
    let clock = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| tracing::warn!(error = %e, "no timer for store commits; flushing every write"))
        .ok();
    // Applied writes waiting for a flush, and when it is due.
    let mut waiting: Vec<Finish> = Vec::new();
    let mut due: Option<Instant> = None;
    loop {
        let first = match (due, clock.as_ref()) {
            (Some(at), Some(clock)) => {
                // The timer is made inside the clock's context, which it needs.
                let next =
                    clock.block_on(async { tokio::time::timeout_at(at, queue.recv()).await });
                match next {
                    Ok(next) => next,
                    Err(_) => {
                        // Nobody else flushed in time.
                        flush_waiting(&store, &mut waiting);
                        due = None;
                        continue;
                    }
                }
            }
            _ => queue.blocking_recv(),
        };
        let Some(first) = first else {
            flush_waiting(&store, &mut waiting);
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let Some(inner) = store.upgrade() else {
            return;
        };
        let store = Store { inner };
        // Without a clock, nothing could wait for a later flush.
        let flush_now = clock.is_none()
            || batch
                .iter()
                .any(|queued| queued.durability == Durability::Now);
        for queued in batch {
            let finish = (queued.job)(&store);
            match queued.durability {
                Durability::Whenever if !flush_now => finish(&Ok(())),
                _ => waiting.push(finish),
            }
        }
        if flush_now {
            let flushed = store.flush();
            for finish in waiting.drain(..) {
                finish(&flushed);
            }
            due = None;
        } else if !waiting.is_empty() {
            due = due.or_else(|| Some(Instant::now() + SOON));
        }
    }
}

/// Flushes for the writes waiting for it, and tells them how it went.
fn flush_waiting(store: &Weak<Inner>, waiting: &mut Vec<Finish>) {
    if waiting.is_empty() {
        return;
    }
    let flushed = match store.upgrade() {
        Some(inner) => Store { inner }.flush(),
        None => Err(stopped()),
    };
    for finish in waiting.drain(..) {
        finish(&flushed);
    }
}

impl Store {
    /// Hands `write` to the committer and returns its outcome to come: `write` runs on the
    /// committer thread, in submission order with every other submitted write, and the
    /// outcome is ready once a flush made it durable. `write` must not flush.
    pub async fn submit<T, F>(&self, write: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.enqueue(write, Durability::Now).await
    }

    /// Like [`Store::submit`], but asking for no flush of its own: the outcome is ready
    /// once the next flush made the write durable, which another write asks for or, at the
    /// latest, [`SOON`] after it was applied.
    pub async fn submit_soon<T, F>(&self, write: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.enqueue(write, Durability::Soon).await
    }

    /// Applies `write` through the committer, in order with every other write, without
    /// asking for a flush: for a write a crash may lose without harm. Resolves once it is
    /// applied (durable with the next flush).
    pub async fn apply<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.enqueue(write, Durability::Whenever).await.await
    }

    async fn enqueue<T, F>(&self, write: F, durability: Durability) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |store: &Store| {
            let result = write(store);
            Box::new(move |flushed: &Result<(), StoreError>| {
                let outcome = match (result, flushed) {
                    (Ok(value), Ok(())) => Ok(value),
                    (Err(e), _) => Err(e),
                    // A flush some other write asked for failed: this one needed none.
                    (Ok(value), Err(_)) if durability == Durability::Whenever => Ok(value),
                    (Ok(_), Err(e)) => Err(e.shared()),
                };
                let _ = tx.send(outcome);
            })
        });
        let committer = self.inner.committer.get_or_init(|| {
            let weak: Weak<Inner> = Arc::downgrade(&self.inner);
            Committer::start(weak)
        });
        match committer {
            Some(committer) => {
                let queued = Queued { job, durability };
                if let Err(mpsc::error::SendError(queued)) = committer.jobs.send(queued).await {
                    // The thread is gone (only if it panicked): write directly instead.
                    run_directly(self, queued.job).await;
                }
            }
            None => run_directly(self, job).await,
        }
        Pending { result: rx }
    }

    /// Applies `write` through the committer and waits until it is durable.
    pub async fn commit<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(write).await.await
    }
}

/// Without a committer thread: one job and its own flush on the blocking pool.
async fn run_directly(store: &Store, job: Job) {
    let store = store.clone();
    let done = tokio::task::spawn_blocking(move || {
        let finish = job(&store);
        finish(&store.flush());
    })
    .await;
    if let Err(e) = done {
        tracing::error!(error = %e, "a store write failed to run");
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_apply_in_submission_order_and_all_are_durable_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut pending = Vec::new();
            for i in 0..300u32 {
                pending.push(
                    store
                        .submit(move |s| {
                            // Each write reads the last: out-of-order application would show.
                            let last = s.cursor("order")?.unwrap_or_default();
                            s.put_cursor_unflushed("order", &format!("{last}{}", i % 10))?;
                            Ok(i)
                        })
                        .await,
                );
            }
            for (i, p) in pending.into_iter().enumerate() {
                assert_eq!(p.await.unwrap(), u32::try_from(i).unwrap());
            }
        }
        let store = Store::open(dir.path()).unwrap();
        let expected: String = (0..300)
            .map(|i| char::from(b'0' + (i % 10) as u8))
            .collect();
        assert_eq!(store.cursor("order").unwrap(), Some(expected));
    }

    #[tokio::test]
    async fn a_write_applied_lazily_asks_for_no_flush_and_is_durable_with_the_next() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let before = store.flushes();
            store
                .apply(|s| s.put_cursor_unflushed("lazy", "1"))
                .await
                .unwrap();
            // Applied (readable) at once, and no flush was asked for it.
            assert_eq!(store.cursor("lazy").unwrap().as_deref(), Some("1"));
            assert_eq!(store.flushes(), before);
            store
                .commit(|s| s.put_cursor_unflushed("durable", "2"))
                .await
                .unwrap();
            assert_eq!(store.flushes(), before + 1);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.cursor("lazy").unwrap().as_deref(), Some("1"));
        assert_eq!(store.cursor("durable").unwrap().as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn a_write_due_soon_rides_the_next_flush_or_gets_its_own_within_soon() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let before = store.flushes();
        // Another write's flush makes it durable: one flush for both.
        let soon = store
            .submit_soon(|s| s.put_cursor_unflushed("soon", "1"))
            .await;
        store
            .commit(|s| s.put_cursor_unflushed("now", "2"))
            .await
            .unwrap();
        soon.await.unwrap();
        assert_eq!(store.flushes(), before + 1);
        // Alone, it gets a flush of its own, within `SOON` (a clock, not a wait, shows the
        // write resolved only once flushed: the flush count is read right after).
        let started = std::time::Instant::now();
        store
            .submit_soon(|s| s.put_cursor_unflushed("soon", "3"))
            .await
            .await
            .unwrap();
        assert_eq!(store.flushes(), before + 2);
        assert!(started.elapsed() >= SOON, "{:?}", started.elapsed());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.cursor("soon").unwrap().as_deref(), Some("3"));
    }

    #[tokio::test]
    async fn a_failed_write_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bad = store
            .submit(|_| -> Result<(), StoreError> { Err(StoreError::Encode("no".into())) })
            .await;
        let good = store.submit(|s| s.put_cursor_unflushed("x", "1")).await;
        assert!(matches!(bad.await, Err(StoreError::Encode(_))));
        good.await.unwrap();
        assert_eq!(store.cursor("x").unwrap().as_deref(), Some("1"));
    }
}
