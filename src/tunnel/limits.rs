//! Accounting and limits per conversation: model requests per minute, tokens per day,
//! web fetches per minute, and requests in flight (counted by the tunnel itself).
//!
//! Pure bookkeeping, no I/O: time comes from a [`Clock`], so tests move it by hand.
//! Requests are counted when they are admitted; tokens as the provider reports them in its
//! response. A request is admitted while the conversation is under both limits, so the one
//! that crosses the daily token limit still completes; the next one is refused.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clawpen_adapters::ConversationKey;

/// The window of the requests-per-minute limit.
const MINUTE: Duration = Duration::from_secs(60);

/// Seconds in a (UTC) day; the token budget resets at midnight UTC.
const DAY_SECS: u64 = 24 * 3600;

/// Above this many tracked conversations, accounts with nothing in the current minute or
/// day are forgotten, so a long-running bridge does not keep every conversation it ever saw.
const ACCOUNTS_KEPT: usize = 1024;

/// Where the tunnel gets the time from.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The time since the Unix epoch.
    fn now(&self) -> Duration;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// A clock that moves only when told to; for tests. Clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now: Arc<Mutex<Duration>>,
}

impl ManualClock {
    /// A clock showing `since_epoch`.
    pub fn at(since_epoch: Duration) -> Self {
        Self {
            now: Arc::new(Mutex::new(since_epoch)),
        }
    }

    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The limits every conversation is held to; 0 means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Model requests in any sliding 60 s window.
    pub requests_per_minute: u32,
    /// Tokens (input, cache and output) per UTC day.
    pub tokens_per_day: u64,
    /// Web fetches in any sliding 60 s window.
    pub fetches_per_minute: u32,
    /// Requests (model calls and fetches together) being performed at once.
    pub requests_in_flight: u32,
}

impl Limits {
    /// No limit at all.
    pub const NONE: Limits = Limits {
        requests_per_minute: 0,
        tokens_per_day: 0,
        fetches_per_minute: 0,
        requests_in_flight: 0,
    };
}

/// What a conversation has used, for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Model requests admitted in the last 60 s.
    pub requests_last_minute: u32,
    /// Tokens counted since midnight UTC.
    pub tokens_today: u64,
}

/// A limit the conversation has reached; its `Display` is the message the user sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    /// Too many model requests in the last minute.
    #[error(
        "This conversation reached its limit of {} model requests per minute; try again in {} s.",
        thousands(u64::from(*limit)),
        retry_after.as_secs()
    )]
    RequestsPerMinute {
        /// The configured limit.
        limit: u32,
        /// When the oldest request leaves the window (whole seconds, at least 1).
        retry_after: Duration,
    },
    /// The day's token budget is spent.
    #[error(
        "This conversation reached its daily limit of {} tokens; it resets at midnight UTC, in {}.",
        thousands(*limit),
        hours_minutes(*resets_in)
    )]
    TokensPerDay {
        /// The configured limit.
        limit: u64,
        /// Time until midnight UTC.
        resets_in: Duration,
    },
    /// Too many web fetches in the last minute.
    #[error(
        "This conversation reached its limit of {} web fetches per minute; try again in {} s.",
        thousands(u64::from(*limit)),
        retry_after.as_secs()
    )]
    FetchesPerMinute {
        /// The configured limit.
        limit: u32,
        /// When the oldest fetch leaves the window (whole seconds, at least 1).
        retry_after: Duration,
    },
    /// As many requests as allowed are under way already.
    #[error(
        "This conversation already has {limit} requests under way, its limit; wait for one \
         to finish before asking for another."
    )]
    InFlight {
        /// The configured limit.
        limit: u32,
    },
}

/// The accounts of all conversations.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    accounts: HashMap<ConversationKey, Account>,
}

/// One conversation's counters.
#[derive(Debug, Default)]
struct Account {
    /// When each request of the last minute was admitted, oldest first.
    recent: VecDeque<Duration>,
    /// When each web fetch of the last minute was admitted, oldest first.
    fetches: VecDeque<Duration>,
    /// The UTC day (days since the epoch) `tokens` belongs to.
    day: u64,
    /// Tokens counted on `day`.
    tokens: u64,
}

impl Account {
    /// Drop what has aged out as of `now`.
    fn roll(&mut self, now: Duration) {
        for window in [&mut self.recent, &mut self.fetches] {
            while window
                .front()
                .is_some_and(|at| now.saturating_sub(*at) >= MINUTE)
            {
                window.pop_front();
            }
        }
        let today = now.as_secs() / DAY_SECS;
        if self.day != today {
            self.day = today;
            self.tokens = 0;
        }
    }

    /// Whether nothing is left to limit.
    fn is_idle(&self) -> bool {
        self.recent.is_empty() && self.fetches.is_empty() && self.tokens == 0
    }
}

/// Counts one more entry at `now` in a sliding minute `window` of at most `limit` entries
/// (0: no limit), or says how long until the oldest leaves it: whole seconds, at least 1
/// ("try again in 0 s" would invite an immediate, refused retry).
fn admit_to(window: &mut VecDeque<Duration>, limit: u32, now: Duration) -> Result<(), Duration> {
    if limit > 0 && window.len() >= limit as usize {
        let oldest = window.front().copied().unwrap_or(now);
        let wait = (oldest + MINUTE).saturating_sub(now);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Err(Duration::from_secs(secs.max(1)));
    }
    window.push_back(now);
    Ok(())
}

impl Ledger {
    /// The account of `key`, up to date as of `now` (made when new, forgetting idle ones
    /// first when many are kept).
    fn account(&mut self, key: &ConversationKey, now: Duration) -> &mut Account {
        if self.accounts.len() >= ACCOUNTS_KEPT && !self.accounts.contains_key(key) {
            self.forget_idle(now);
        }
        let account = self.accounts.entry(key.clone()).or_default();
        account.roll(now);
        account
    }

    /// Admit one model request of `key` at `now` and count it, or say which limit is reached.
    pub(crate) fn admit(
        &mut self,
        key: &ConversationKey,
        now: Duration,
        limits: Limits,
    ) -> Result<(), LimitReached> {
        let account = self.account(key, now);
        if limits.tokens_per_day > 0 && account.tokens >= limits.tokens_per_day {
            let midnight = (account.day + 1) * DAY_SECS;
            return Err(LimitReached::TokensPerDay {
                limit: limits.tokens_per_day,
                resets_in: Duration::from_secs(midnight).saturating_sub(now),
            });
        }
        let limit = limits.requests_per_minute;
        admit_to(&mut account.recent, limit, now)
            .map_err(|retry_after| LimitReached::RequestsPerMinute { limit, retry_after })
    }

    /// Admit one web fetch of `key` at `now` and count it, or say that the conversation
    /// fetched as much as it may this minute.
    pub(crate) fn admit_fetch(
        &mut self,
        key: &ConversationKey,
        now: Duration,
        limits: Limits,
    ) -> Result<(), LimitReached> {
        let account = self.account(key, now);
        let limit = limits.fetches_per_minute;
        admit_to(&mut account.fetches, limit, now)
            .map_err(|retry_after| LimitReached::FetchesPerMinute { limit, retry_after })
    }

    /// Count tokens a response of `key` reported.
    pub(crate) fn add_tokens(&mut self, key: &ConversationKey, now: Duration, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let account = self.accounts.entry(key.clone()).or_default();
        account.roll(now);
        account.tokens = account.tokens.saturating_add(tokens);
    }

    /// What `key` has used as of `now`.
    pub(crate) fn usage(&self, key: &ConversationKey, now: Duration) -> Usage {
        let Some(account) = self.accounts.get(key) else {
            return Usage::default();
        };
        let today = now.as_secs() / DAY_SECS;
        Usage {
            requests_last_minute: account
                .recent
                .iter()
                .filter(|at| now.saturating_sub(**at) < MINUTE)
                .count()
                .try_into()
                .unwrap_or(u32::MAX),
            tokens_today: if account.day == today {
                account.tokens
            } else {
                0
            },
        }
    }

    /// Forget accounts with nothing left to limit.
    fn forget_idle(&mut self, now: Duration) {
        self.accounts.retain(|_, account| {
            account.roll(now);
            !account.is_idle()
        });
    }
}

/// `2000000` as `2,000,000`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration as `5 h 3 min` (or `42 min` under an hour).
fn hours_minutes(d: Duration) -> String {
    let minutes = d.as_secs().div_ceil(60);
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ConversationKey {
        ConversationKey::new("test", name)
    }

    const LIMITS: Limits = Limits {
        requests_per_minute: 3,
        tokens_per_day: 1000,
        fetches_per_minute: 2,
        requests_in_flight: 4,
    };

    /// Noon of some UTC day.
    fn noon() -> Duration {
        Duration::from_secs(20_000 * DAY_SECS + 12 * 3600)
    }

    #[test]
    fn requests_per_minute_slide() {
        let mut ledger = Ledger::default();
        let t0 = noon();
        for s in [0, 10, 20] {
            assert!(ledger
                .admit(&key("a"), t0 + Duration::from_secs(s), LIMITS)
                .is_ok());
        }
        let err = ledger
            .admit(&key("a"), t0 + Duration::from_millis(48_500), LIMITS)
            .err();
        assert_eq!(
            err,
            Some(LimitReached::RequestsPerMinute {
                limit: 3,
                retry_after: Duration::from_secs(12)
            })
        );
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            message,
            "This conversation reached its limit of 3 model requests per minute; try again in 12 s."
        );
        // Other conversations are not affected.
        assert!(ledger.admit(&key("b"), t0, LIMITS).is_ok());
        // A minute after the first, one slot is free again, and only one.
        let later = t0 + Duration::from_secs(60);
        assert!(ledger.admit(&key("a"), later, LIMITS).is_ok());
        assert!(ledger.admit(&key("a"), later, LIMITS).is_err());
        assert_eq!(ledger.usage(&key("a"), later).requests_last_minute, 3);
        assert_eq!(
            ledger
                .usage(&key("a"), later + Duration::from_secs(61))
                .requests_last_minute,
            0
        );
    }

    #[test]
    fn fetches_per_minute_slide_apart_from_model_requests() {
        let mut ledger = Ledger::default();
        let t0 = noon();
        assert!(ledger.admit_fetch(&key("a"), t0, LIMITS).is_ok());
        assert!(ledger
            .admit_fetch(&key("a"), t0 + Duration::from_secs(5), LIMITS)
            .is_ok());
        let err = ledger
            .admit_fetch(&key("a"), t0 + Duration::from_millis(30_200), LIMITS)
            .err();
        assert_eq!(
            err.map(|e| e.to_string()).unwrap_or_default(),
            "This conversation reached its limit of 2 web fetches per minute; try again in 30 s."
        );
        // Model requests have their own window, and other conversations their own account.
        assert!(ledger.admit(&key("a"), t0, LIMITS).is_ok());
        assert!(ledger.admit_fetch(&key("b"), t0, LIMITS).is_ok());
        assert!(ledger
            .admit_fetch(&key("a"), t0 + Duration::from_secs(60), LIMITS)
            .is_ok());
    }

    #[test]
    fn refused_requests_are_not_counted() {
        let mut ledger = Ledger::default();
        let limits = Limits {
            requests_per_minute: 1,
            ..Limits::NONE
        };
        assert!(ledger.admit(&key("a"), noon(), limits).is_ok());
        for _ in 0..5 {
            assert!(ledger.admit(&key("a"), noon(), limits).is_err());
        }
        assert_eq!(ledger.usage(&key("a"), noon()).requests_last_minute, 1);
    }

    #[test]
    fn tokens_per_day_reset_at_midnight_utc() {
        let mut ledger = Ledger::default();
        let t0 = noon();
        assert!(ledger.admit(&key("a"), t0, LIMITS).is_ok());
        ledger.add_tokens(&key("a"), t0, 1200);
        let later = t0 + Duration::from_secs(3 * 3600 + 30 * 60);
        let err = ledger.admit(&key("a"), later, LIMITS).err();
        assert_eq!(
            err.map(|e| e.to_string()).unwrap_or_default(),
            "This conversation reached its daily limit of 1,000 tokens; it resets at midnight UTC, in 8 h 30 min."
        );
        assert_eq!(ledger.usage(&key("a"), later).tokens_today, 1200);
        let tomorrow = t0 + Duration::from_secs(12 * 3600);
        assert_eq!(ledger.usage(&key("a"), tomorrow).tokens_today, 0);
        assert!(ledger.admit(&key("a"), tomorrow, LIMITS).is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        let mut ledger = Ledger::default();
        let limits = Limits::NONE;
        for _ in 0..100 {
            assert!(ledger.admit(&key("a"), noon(), limits).is_ok());
            assert!(ledger.admit_fetch(&key("a"), noon(), limits).is_ok());
            ledger.add_tokens(&key("a"), noon(), 1_000_000);
        }
    }

    #[test]
    fn idle_accounts_are_forgotten_when_many() {
        let mut ledger = Ledger::default();
        for i in 0..ACCOUNTS_KEPT {
            assert!(ledger.admit(&key(&i.to_string()), noon(), LIMITS).is_ok());
        }
        let tomorrow = noon() + Duration::from_secs(DAY_SECS);
        assert!(ledger.admit(&key("new"), tomorrow, LIMITS).is_ok());
        assert_eq!(ledger.accounts.len(), 1);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(2_000_000), "2,000,000");
        assert_eq!(thousands(12_345), "12,345");
        assert_eq!(hours_minutes(Duration::from_secs(59)), "1 min");
        assert_eq!(hours_minutes(Duration::from_secs(7200)), "2 h");
    }

    #[test]
    fn manual_clock_moves_when_told() {
        let clock = ManualClock::at(Duration::from_secs(5));
        let shared = clock.clone();
        shared.advance(Duration::from_secs(2));
        assert_eq!(clock.now(), Duration::from_secs(7));
    }
}
