//! Who may talk to the bot, for every adapter: allowlists of users, chats and roles, the
//! owner paired at first start by a one-time code, and polite, rate-limited refusals for
//! everyone else.
//!
//! A bot token alone lets anyone on a platform message the bot, and every conversation costs
//! a box. So nothing from a stranger ever reaches the router: with no allowlist configured,
//! the bot is closed until its operator pairs with the one-time code `clawpen run` prints.
//!
//! Ids are the platform's, as text (Telegram's numeric user and chat ids, Discord's
//! snowflakes and role ids), so one set of rules serves every adapter.
//!
//! # Layout
//! - this file: [`Access`], the decision, with no I/O (unit-tested with a clock passed in).
//! - `gate`: [`Gate`], the decision with its persistence (the owner, through the
//!   [`crate::InboundSink`]) and its words (refusal, pairing), which adapters call.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

mod gate;

pub use gate::{Admission, Gate, PAIRED, REFUSAL, UNPAIRED};

/// A stranger is told at most this often that the bot is not for them.
pub const REFUSE_EVERY: Duration = Duration::from_secs(3600);

/// How long a pairing code is good for after `clawpen run` printed it; a later one takes
/// a restart, which prints a new code.
pub const PAIRING_VALID: Duration = Duration::from_secs(3600);

/// Wrong pairing codes one user may send per hour; further ones are not even compared.
pub const GUESSES_PER_USER: u32 = 5;

/// Wrong pairing codes all users together may send before the code is withdrawn (pairing
/// then takes a restart, with a new code): with 10^8 codes, the chance that this many
/// guesses find it is one in two million.
pub const GUESSES_PER_CODE: u32 = 50;

/// Strangers whose last refusal is remembered; past this, expired ones are forgotten (and if
/// all are recent, all are: the worst case is one extra refusal each).
const REFUSED_KEPT: usize = 10_000;

/// The configured allowlists of one adapter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Users allowed everywhere.
    pub users: Vec<String>,
    /// Chats (groups, channels) whose members are all allowed there.
    pub chats: Vec<String>,
    /// Roles whose holders are allowed (platforms with roles, such as Discord).
    pub roles: Vec<String>,
}

impl Rules {
    /// Whether nothing is allowed by configuration, which opens pairing.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.chats.is_empty() && self.roles.is_empty()
    }
}

/// Who sent a message, and where, as access sees it.
#[derive(Clone, Copy, Debug)]
pub struct Sender<'a> {
    /// The sender's user id.
    pub user: &'a str,
    /// The chat's id.
    pub chat: &'a str,
    /// The sender's roles in the chat's community, where the platform has them.
    pub roles: &'a [String],
    /// Whether the chat is private (only there does the pairing code count: nobody else
    /// sees it).
    pub private: bool,
    /// Whether the message was meant for the bot (a stranger's group chatter is dropped
    /// without a word).
    pub addressed: bool,
}

/// What to do with a message, as far as access goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The sender may use the bot here.
    Allowed,
    /// The message carried the pairing code: its sender is now the owner (persist it).
    Paired,
    /// Tell the sender, once in a while, that the bot is not for them; nothing else.
    Refuse,
    /// Drop it without a word (chatter, or a stranger refused recently).
    Ignore,
}

/// The access state of one bot.
#[derive(Debug)]
pub struct Access {
    users: HashSet<String>,
    chats: HashSet<String>,
    roles: HashSet<String>,
    owner: Option<String>,
    /// The code that pairs the owner, while pairing is open.
    pairing: Option<String>,
    /// When the code stops pairing.
    pairing_until: Option<Instant>,
    /// Wrong codes per user: when their hour began, and how many.
    guesses: HashMap<String, (Instant, u32)>,
    /// Wrong codes of all users since the code was made.
    wrong: u32,
    /// When each stranger was last refused.
    refused: HashMap<String, Instant>,
}

impl Access {
    /// Access from the configured allowlists; closed to all until [`Access::restore`].
    pub fn new(rules: &Rules) -> Self {
        Self {
            users: rules.users.iter().cloned().collect(),
            chats: rules.chats.iter().cloned().collect(),
            roles: rules.roles.iter().cloned().collect(),
            owner: None,
            pairing: None,
            pairing_until: None,
            guesses: HashMap::new(),
            wrong: 0,
            refused: HashMap::new(),
        }
    }

    /// Takes the owner stored by an earlier run. With no owner and no allowlist, pairing
    /// opens with `code`, which is returned for the operator to see.
    pub fn restore(&mut self, owner: Option<String>, code: String) -> Option<&str> {
        let configured = !(self.users.is_empty() && self.chats.is_empty() && self.roles.is_empty());
        if owner.is_none() && !configured {
            self.pairing = Some(code);
            self.pairing_until = Some(Instant::now() + PAIRING_VALID);
        }
        self.owner = owner;
        self.pairing.as_deref()
    }

    /// The pairing code, while pairing is open.
    pub fn pairing_code(&self) -> Option<&str> {
        self.pairing.as_deref()
    }

    /// Decides on a message from `sender` reading `text`, which may be the pairing code
    /// (alone or after `/start`, as a Telegram deep link sends it).
    pub fn check(&mut self, sender: &Sender<'_>, text: &str, now: Instant) -> Verdict {
        let user = sender.user;
        if self.owner.as_deref() == Some(user)
            || self.users.contains(user)
            || self.chats.contains(sender.chat)
            || sender.roles.iter().any(|role| self.roles.contains(role))
        {
            return Verdict::Allowed;
        }
        let offered = text.trim();
        let offered = offered.strip_prefix("/start").map_or(offered, str::trim);
        if sender.private && self.pairing.is_some() && self.guess(user, offered, now) {
            self.pairing = None;
            self.owner = Some(user.to_string());
            return Verdict::Paired;
        }
        if !sender.addressed {
            return Verdict::Ignore;
        }
        if self
            .refused
            .get(user)
            .is_some_and(|at| now.saturating_duration_since(*at) < REFUSE_EVERY)
        {
            return Verdict::Ignore;
        }
        if self.refused.len() >= REFUSED_KEPT {
            self.refused
                .retain(|_, at| now.saturating_duration_since(*at) < REFUSE_EVERY);
            if self.refused.len() >= REFUSED_KEPT {
                self.refused.clear();
            }
        }
        self.refused.insert(user.to_string(), now);
        Verdict::Refuse
    }
}

impl Access {
    /// Whether `offered`, from `user` in a private chat, is the pairing code. Only what
    /// could be a code (its length) counts as a guess, and guesses are limited: per user
    /// an hour, and in all, after which the code is withdrawn; an expired code pairs no one.
    fn guess(&mut self, user: &str, offered: &str, now: Instant) -> bool {
        let Some(code) = self.pairing.as_deref() else {
            return false;
        };
        if offered.len() != code.len() {
            return false;
        }
        if self.pairing_until.is_some_and(|until| now >= until) {
            tracing::warn!(
                user,
                "a pairing code came after the code expired; restart clawpen for a new one"
            );
            self.pairing = None;
            return false;
        }
        if self.guesses.len() >= REFUSED_KEPT {
            self.guesses
                .retain(|_, (since, _)| now.saturating_duration_since(*since) < HOUR);
        }
        let (since, count) = self.guesses.entry(user.to_string()).or_insert((now, 0));
        if now.saturating_duration_since(*since) >= HOUR {
            (*since, *count) = (now, 0);
        }
        if *count >= GUESSES_PER_USER {
            tracing::debug!(
                user,
                "pairing guess ignored: too many wrong codes this hour"
            );
            return false;
        }
        if same(code, offered) {
            return true;
        }
        *count += 1;
        if *count == GUESSES_PER_USER {
            tracing::warn!(
                user,
                "wrong pairing codes: this user's next guesses are ignored for an hour"
            );
        }
        self.wrong += 1;
        if self.wrong >= GUESSES_PER_CODE {
            tracing::error!(
                wrong = self.wrong,
                "too many wrong pairing codes: the code is withdrawn; restart clawpen for a new one"
            );
            self.pairing = None;
        }
        false
    }
}

/// An hour, the window of the per-user guess limit.
const HOUR: Duration = Duration::from_secs(3600);

/// Compares without stopping at the first difference, so response timing says nothing
/// about how much of a guess was right.
fn same(code: &str, offered: &str) -> bool {
    code.len() == offered.len()
        && code
            .bytes()
            .zip(offered.bytes())
            .fold(0, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// A fresh pairing code: eight digits in two groups, easy to type on a phone.
pub fn new_code(random: u64) -> String {
    let digits = random % 100_000_000;
    format!("{:04}-{:04}", digits / 10_000, digits % 10_000)
}

/// A random number for a pairing code, from the operating system (or, should that fail,
/// from std's per-process hash seed, which is still unknown outside the process).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        }
    }
}

#[cfg(test)]
mod tests;
