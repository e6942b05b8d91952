//! The warm pool: `warm_pool` boxes started and attached ahead of need, each on a fresh
//! workspace volume, none bound to a conversation, so that a new conversation's first reply
//! does not wait for the engine to create and start a box (see `sandbox::pool` for how a
//! claimed box and volume become the conversation's).
//!
//! - Each ready box holds a live-box slot: the pool counts against `max_boxes`. It never
//!   keeps a slot from a conversation: the refill takes a slot only when one is free and
//!   nobody waits (tokio's semaphore hands released slots to waiters first), and while a
//!   conversation waits for a slot the pool gives its boxes up, one at a time.
//! - One refill task creates the boxes one after another (so the pool takes at most one
//!   of the engine's start permits), and only while no conversation waits for a box start:
//!   new conversations are served first.
//! - A box nobody claimed within [`RECYCLE_AFTER`] is replaced, so that a new image (or a
//!   changed configuration) reaches the pool; one whose agent went away is replaced too.
//! - On shutdown the task removes the boxes still ready; a crash leaves them for the next
//!   start, whose recovery removes every pool box and volume no conversation claimed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use clawpen_adapters::stream::Backoff;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::task::TaskTracker;

use tracing::Instrument;

use super::{Router, Shared};
use crate::sandbox::{BoxInfo, Sandbox, VolumeInfo, WarmBox};

/// How long a pool box waits to be claimed before it is replaced by a fresh one, so that
/// image upgrades and configuration changes reach the pool.
pub const RECYCLE_AFTER: Duration = Duration::from_secs(10 * 60);

/// How often the refill task looks at the pool without being woken: to take a slot freed
/// by an idle box, to recycle, and to try again once starts stop queueing. Missed ticks
/// are skipped.
const REFILL_TICK: Duration = Duration::from_secs(1);

/// How the refill backs off while the engine refuses pool boxes (a missing image, a full
/// disk): with full jitter, up to a minute, never giving up.
const REFILL_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    factor: 2,
    cap: Duration::from_secs(60),
    max_attempts: u32::MAX,
    max_rate_wait: Duration::MAX,
};

/// A box ready to be claimed, with the live-box slot it occupies.
#[derive(Debug)]
pub(crate) struct Ready {
    pub(crate) warm: WarmBox,
    pub(crate) permit: OwnedSemaphorePermit,
    /// When it was ready, on the router's clock (a manual one in tests).
    born: Instant,
}

/// The pool; lives in the router's shared state.
pub(crate) struct Pool {
    /// How many boxes to keep ready (`warm_pool`); 0: the pool is off.
    target: usize,
    /// Boxes ready to be claimed, oldest first. A std mutex: held to push or pop only.
    ready: Mutex<VecDeque<Ready>>,
    /// Wakes the refill task: a box was claimed, or a conversation began to wait for a slot.
    wake: Notify,
    /// Conversations waiting for a live-box slot, to whom the pool gives its slots up.
    slot_waiters: AtomicUsize,
    /// Live-box slots the pool holds: its ready boxes, and the one being created.
    held: AtomicUsize,
}

/// Counts a conversation as waiting for a slot while it lives.
pub(crate) struct SlotWait<'a>(&'a Pool);

impl Drop for SlotWait<'_> {
    fn drop(&mut self) {
        self.0.slot_waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is one push or pop, so a panicked holder left the queue consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    /// A pool keeping `target` boxes ready (none until [`run`] starts filling it).
    pub(crate) fn new(target: usize) -> Self {
        Self {
            target,
            ready: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            slot_waiters: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
        }
    }

    /// How many boxes the pool keeps ready when it can.
    pub(crate) fn target(&self) -> usize {
        self.target
    }

    /// Boxes ready to be claimed now.
    pub(crate) fn ready(&self) -> usize {
        lock(&self.ready).len()
    }

    /// Live-box slots the pool holds now (ready boxes and one being created): the live
    /// boxes that serve no conversation.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes the oldest ready box whose agent is still attached, with its slot; the refill
    /// replaces it. A box whose attach ended is removed on the way.
    pub(crate) fn take(&self, sandbox: &Sandbox, tracker: &TaskTracker) -> Option<Ready> {
        let ready = loop {
            let ready = lock(&self.ready).pop_front()?;
            if !ready.warm.conn.output.is_closed() {
                break ready;
            }
            tracing::warn!(r#box = %ready.warm.name, "a warm box's agent went away; removing it");
            discard_later(self, sandbox, tracker, ready);
        };
        // Its slot goes with it, to the conversation.
        self.held.fetch_sub(1, Ordering::Relaxed);
        self.wake.notify_one();
        Some(ready)
    }

    /// Puts back a box that was taken but could not be claimed (the store did not take
    /// the claim): nothing was written to it.
    pub(crate) fn put_back(&self, ready: Ready) {
        self.held.fetch_add(1, Ordering::Relaxed);
        lock(&self.ready).push_front(ready);
    }

    /// Counts the caller as waiting for a live-box slot until the guard drops, and asks
    /// the pool to give one of its slots up.
    pub(crate) fn slot_wait(&self) -> SlotWait<'_> {
        self.slot_waiters.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        SlotWait(self)
    }

    fn pop_if(&self, pick: impl Fn(&Ready) -> bool) -> Option<Ready> {
        let mut ready = lock(&self.ready);
        let at = ready.iter().position(pick)?;
        ready.remove(at)
    }
}

impl Router {
    /// Start keeping the warm pool filled (after [`Router::recover`] removed what the last
    /// run left of it); it stops, removing its boxes, on shutdown. Nothing with a pool of 0.
    pub fn start_pool(&self) {
        if self.shared.pool.target() == 0 {
            return;
        }
        let span = tracing::info_span!("warm pool");
        let shared = self.shared.clone();
        self.shared.tracker.spawn(run(shared).instrument(span));
    }

    /// Warm pool boxes ready to be claimed now.
    pub fn warm_boxes(&self) -> usize {
        self.shared.pool.ready()
    }

    /// Live boxes that serve a conversation: those not held by the warm pool.
    pub fn conversation_boxes(&self) -> usize {
        self.live_boxes().saturating_sub(self.shared.pool.held())
    }

    /// How many boxes the warm pool keeps ready when it can (`warm_pool`).
    pub fn warm_pool(&self) -> usize {
        self.shared.pool.target()
    }
}

/// Removes a taken box in the background (tracked with the actors, so shutdown waits for
/// it); its slot is released once it is gone.
fn discard_later(pool: &Pool, sandbox: &Sandbox, tracker: &TaskTracker, ready: Ready) {
    // Counted out of the pool now: the conversation taking a box must not wait for this.
    pool.held.fetch_sub(1, Ordering::Relaxed);
    let sandbox = sandbox.clone();
    tracker.spawn(async move { remove(&sandbox, ready).await });
}

/// Removes a pool box no conversation claimed, with its volume, then frees its slot.
async fn discard(pool: &Pool, sandbox: &Sandbox, ready: Ready) {
    remove(sandbox, ready).await;
    pool.held.fetch_sub(1, Ordering::Relaxed);
}

async fn remove(sandbox: &Sandbox, ready: Ready) {
    let Ready { warm, permit, .. } = ready;
    let name = warm.name.clone();
    if let Err(e) = sandbox.remove_warm_box(warm).await {
        tracing::warn!(r#box = %name, error = %e, "could not remove a warm box; the next start removes it");
    }
    drop(permit);
}

/// The refill task: keeps the pool at its target until shutdown, then empties it.
pub(crate) async fn run(shared: Arc<Shared>) {
    let pool = &shared.pool;
    let sandbox = &shared.sandbox;
    let mut tick = tokio::time::interval(REFILL_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut failures: u32 = 0;
    loop {
        if shared.shutdown.is_cancelled() {
            break;
        }
        // A conversation waits for a slot: it comes before a box nobody asked for yet. One
        // box is given up per wake: the waiter stops counting only once it runs again, and
        // a second look at once would give up a box for a waiter already served.
        let waiting = pool.slot_waiters.load(Ordering::Relaxed) > 0;
        let given_up = match waiting.then(|| pool.pop_if(|_| true)).flatten() {
            Some(ready) => {
                tracing::debug!(r#box = %ready.warm.name, "giving a warm box's slot to a waiting conversation");
                discard(pool, sandbox, ready).await;
                true
            }
            None => false,
        };
        let now = shared.config.clock.now();
        let stale = |r: &Ready| {
            now.duration_since(r.born) >= RECYCLE_AFTER || r.warm.conn.output.is_closed()
        };
        if let Some(ready) = pool.pop_if(stale) {
            tracing::debug!(r#box = %ready.warm.name, "recycling a warm box");
            discard(pool, sandbox, ready).await;
            continue;
        }
        let short = !given_up && pool.ready() < pool.target;
        let quiet = sandbox.starts_waiting() == 0 && pool.slot_waiters.load(Ordering::Relaxed) == 0;
        if short && quiet {
            if let Ok(permit) = shared.slots.clone().try_acquire_owned() {
                pool.held.fetch_add(1, Ordering::Relaxed);
                match sandbox.create_warm_box().await {
                    Ok(warm) => {
                        failures = 0;
                        tracing::debug!(r#box = %warm.name, "warm box ready");
                        lock(&pool.ready).push_back(Ready {
                            warm,
                            permit,
                            born: shared.config.clock.now(),
                        });
                        continue;
                    }
                    Err(e) => {
                        drop(permit);
                        pool.held.fetch_sub(1, Ordering::Relaxed);
                        failures = failures.saturating_add(1);
                        if failures.is_power_of_two() {
                            tracing::warn!(error = %e, failures, "could not start a warm box; new conversations get cold boxes meanwhile");
                        }
                        let jitter = (clawpen_adapters::access::random_u64() >> 11) as f64
                            / (1u64 << 53) as f64;
                        let wait = REFILL_BACKOFF
                            .delay(failures, jitter)
                            .unwrap_or(REFILL_TICK);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shared.shutdown.cancelled() => {}
                        }
                        continue;
                    }
                }
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = pool.wake.notified() => {}
            _ = shared.shutdown.cancelled() => {}
        }
    }
    while let Some(ready) = pool.pop_if(|_| true) {
        discard(pool, sandbox, ready).await;
    }
}

/// Whether a box is what an earlier run left of its pool: a pool box no conversation
/// claimed, or one claimed but never renamed to its conversation's box (a crash between the
/// claim and the rename; the conversation gets a box of its own on the claimed volume).
/// Such a box never served anyone. `info` has been through [`crate::sandbox::attribute`].
pub(crate) fn leftover(sandbox: &Sandbox, info: &BoxInfo) -> bool {
    info.pool
        && info.conversation.as_ref().is_none_or(|key| {
            info.name != crate::sandbox::spec::container_name(sandbox.instance(), key)
        })
}

/// Removes what an earlier run of this instance left of its pool: [`leftover`] boxes, and
/// pool volumes no conversation claimed (after [`crate::sandbox::attribute`]), which never
/// held anything of anyone's. Failures are logged; the next start tries again.
pub(crate) async fn remove_leftovers(sandbox: &Sandbox, boxes: &[BoxInfo], volumes: &[VolumeInfo]) {
    // Containers first: the engine refuses to remove a volume a container still uses.
    for info in boxes.iter().filter(|b| leftover(sandbox, b)) {
        tracing::info!(r#box = %info.name, "removing a warm box left by the last run");
        if let Err(e) = sandbox.remove_container(&info.id).await {
            tracing::warn!(r#box = %info.name, error = %e, "could not remove a leftover warm box");
        }
    }
    for volume in volumes
        .iter()
        .filter(|v| v.pool && v.conversation.is_none())
    {
        if let Err(e) = sandbox.remove_volume(&volume.name).await {
            tracing::warn!(volume = %volume.name, error = %e, "could not remove a leftover warm box's volume");
        }
    }
}
