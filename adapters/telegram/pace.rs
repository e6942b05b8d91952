//! Pacing of writes to Telegram, so the bot stays under the limits Telegram documents
//! instead of running into 429s: about one message per second in a chat, twenty a minute in
//! a group, thirty a second in all, stated once as [`Rate`]s that the adapter's edit
//! intervals follow too. A 429 that still comes holds the chat here (every write to it
//! waits) and is retried by the shared [`crate::stream::Backoff`].
//!
//! Plain token buckets with the clock passed in; the [`Pacer`] holds one per chat and one
//! for the bot, and tells a caller how long to wait before its write.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// A rate of writes Telegram allows: `writes` per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// How many writes…
    pub writes: u32,
    /// …in how long.
    pub per: Duration,
}

impl Rate {
    /// Writes per second.
    pub fn per_sec(self) -> f64 {
        f64::from(self.writes) / self.per.as_secs_f64()
    }

    /// The gap between two writes at this rate: how far apart a reply's edits go.
    pub fn interval(self) -> Duration {
        self.per / self.writes.max(1)
    }
}

/// Telegram's limits, stated once: the pacer's buckets and the adapter's edit intervals
/// both follow them. One private chat: about one message a second.
pub const PRIVATE_RATE: Rate = Rate {
    writes: 1,
    per: Duration::from_secs(1),
};

/// One group: twenty messages a minute.
pub const GROUP_RATE: Rate = Rate {
    writes: 20,
    per: Duration::from_secs(60),
};

/// All chats together: thirty messages a second.
pub const GLOBAL_RATE: Rate = Rate {
    writes: 30,
    per: Duration::from_secs(1),
};

/// The rate of one chat: users have positive ids, groups and channels negative ones.
pub fn chat_rate(chat: i64) -> Rate {
    if chat > 0 {
        PRIVATE_RATE
    } else {
        GROUP_RATE
    }
}

/// Writes that may go at once after a quiet spell: a long reply's parts leave together.
const CHAT_BURST: f64 = 3.0;

/// Chats whose buckets are kept; past this, buckets that are full again (idle chats) are
/// dropped, which forgets nothing since a full bucket is the starting state.
const CHATS_KEPT: usize = 1024;

/// A token bucket that lends: a write always gets a slot, possibly in the future, and is
/// told how long to wait for it. Waiters are thus served in the order they asked.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    /// Tokens available at `updated`; negative when slots are lent out.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens, refilled at `per_sec`.
    pub fn new(capacity: f64, per_sec: f64, now: Instant) -> Self {
        Self {
            capacity,
            per_sec,
            tokens: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.updated = self.updated.max(now);
    }

    /// Takes one token at `now`; returns how long to wait before using it.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_sec)
        }
    }

    /// Whether the bucket is full at `now` (no recent writes).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

/// The pacing of one bot: a bucket per chat and one for everything.
#[derive(Debug)]
pub struct Pacer {
    /// Shared by every write; a std mutex held only to do arithmetic.
    global: Mutex<TokenBucket>,
    /// One bucket per chat written to recently; same mutex discipline.
    chats: Mutex<HashMap<i64, TokenBucket>>,
    /// Chats Telegram answered with a 429, and until when it asked us to wait: writes to
    /// them wait that long too, so a retry is not the only call that honours it.
    held: Mutex<HashMap<i64, Instant>>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only arithmetic happens under these locks; a poisoned one still holds valid numbers.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pacer {
    /// A pacer with every bucket full at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            global: Mutex::new(TokenBucket::new(
                f64::from(GLOBAL_RATE.writes),
                GLOBAL_RATE.per_sec(),
                now,
            )),
            chats: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Records that Telegram asked for no writes to `chat` until `until` (a 429).
    pub fn hold(&self, chat: i64, until: Instant) {
        let mut held = lock(&self.held);
        let now = Instant::now();
        held.retain(|_, at| *at > now);
        let at = held.entry(chat).or_insert(until);
        *at = (*at).max(until);
    }

    /// Until when writes to `chat` are held, if they are at `now`.
    pub fn held_until(&self, chat: i64, now: Instant) -> Option<Instant> {
        lock(&self.held).get(&chat).copied().filter(|at| *at > now)
    }

    /// Reserves a write at `now`, to `chat` if it counts against the chat's limit; returns
    /// how long to wait before making it.
    pub fn reserve(&self, chat: Option<i64>, now: Instant) -> Duration {
        let global = lock(&self.global).reserve(now);
        let Some(chat) = chat else {
            return global;
        };
        let mut chats = lock(&self.chats);
        if chats.len() >= CHATS_KEPT {
            chats.retain(|_, bucket| !bucket.is_full(now));
        }
        let rate = chat_rate(chat).per_sec();
        let local = chats
            .entry(chat)
            .or_insert_with(|| TokenBucket::new(CHAT_BURST, rate, now))
            .reserve(now);
        drop(chats);
        let held = self
            .held_until(chat, now)
            .map_or(Duration::ZERO, |at| at - now);
        global.max(local).max(held)
    }

    /// Waits for a write's turn.
    pub async fn wait(&self, chat: Option<i64>) {
        let wait = self.reserve(chat, Instant::now());
        if !wait.is_zero() {
            tracing::debug!(?chat, ?wait, "pacing a write to Telegram");
            tokio::time::sleep(wait).await;
        }
    }

    /// How many chats have buckets (for tests of the bound).
    #[cfg(test)]
    pub fn chats_tracked(&self) -> usize {
        lock(&self.chats).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_bucket_gives_its_burst_then_lends_slots_in_order() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3.0, 1.0, t0);
        let waits: Vec<_> = (0..5).map(|_| bucket.reserve(t0)).collect();
        assert_eq!(
            waits,
            [secs(0.0), secs(0.0), secs(0.0), secs(1.0), secs(2.0)]
        );
        // Three seconds on, two of the three new tokens repaid the loans.
        assert_eq!(bucket.reserve(t0 + secs(3.0)), secs(0.0));
        assert_eq!(bucket.reserve(t0 + secs(3.0)), secs(1.0));
        assert!(!bucket.is_full(t0 + secs(3.0)));
        assert!(
            bucket.is_full(t0 + secs(10.0)),
            "refills up to the capacity"
        );
        assert_eq!(bucket.reserve(t0 + secs(10.0)), secs(0.0));
    }

    #[test]
    fn groups_are_paced_slower_than_private_chats_and_all_share_the_global_limit() {
        let t0 = Instant::now();
        let pacer = Pacer::new(t0);
        for _ in 0..3 {
            assert_eq!(pacer.reserve(Some(7), t0), Duration::ZERO);
            assert_eq!(pacer.reserve(Some(-100), t0), Duration::ZERO);
        }
        assert_eq!(pacer.reserve(Some(7), t0), secs(1.0));
        assert_eq!(pacer.reserve(Some(-100), t0), secs(3.0));
        // 8 writes so far; 22 more empty the global bucket, then everyone waits.
        for _ in 0..22 {
            assert_eq!(pacer.reserve(None, t0), Duration::ZERO);
        }
        assert_eq!(pacer.reserve(Some(8), t0), secs(1.0 / 30.0));
    }

    #[test]
    fn a_held_chat_waits_until_telegram_said() {
        let t0 = Instant::now();
        let pacer = Pacer::new(t0);
        pacer.hold(9, t0 + secs(5.0));
        pacer.hold(9, t0 + secs(2.0));
        assert_eq!(
            pacer.held_until(9, t0),
            Some(t0 + secs(5.0)),
            "the later hold wins"
        );
        assert_eq!(pacer.reserve(Some(9), t0), secs(5.0));
        assert_eq!(
            pacer.reserve(Some(10), t0),
            Duration::ZERO,
            "other chats go on"
        );
        assert_eq!(pacer.held_until(9, t0 + secs(5.0)), None);
    }

    #[test]
    fn rates_give_the_gaps_between_edits() {
        assert_eq!(chat_rate(7).interval(), secs(1.0));
        assert_eq!(chat_rate(-100).interval(), secs(3.0));
        assert_eq!(GLOBAL_RATE.per_sec(), 30.0);
    }

    #[test]
    fn idle_chats_are_forgotten_past_the_bound() {
        let t0 = Instant::now();
        let pacer = Pacer::new(t0);
        for chat in 1..=CHATS_KEPT as i64 {
            pacer.reserve(Some(chat), t0);
        }
        assert_eq!(pacer.chats_tracked(), CHATS_KEPT);
        pacer.reserve(Some(-5), t0 + secs(60.0));
        assert_eq!(pacer.chats_tracked(), 1);
    }
}
