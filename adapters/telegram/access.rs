//! Who may talk to the bot: allowlists, the owner paired at first start, and polite,
//! rate-limited refusals for everyone else. No I/O here; the adapter persists the owner.
//!
//! A bot token alone lets anyone on Telegram message the bot, and every conversation costs
//! a box. So nothing from a stranger ever reaches the router: with no allowlist configured,
//! the bot is closed until its operator pairs with the one-time code `clawpen run` prints.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

/// A stranger is told at most this often that the bot is not for them.
pub const REFUSE_EVERY: Duration = Duration::from_secs(3600);

/// Strangers whose last refusal is remembered; past this, expired ones are forgotten (and if
/// all are recent, all are: the worst case is one extra refusal each).
const REFUSED_KEPT: usize = 10_000;

/// The store key of the paired owner's user id.
pub const OWNER_KEY: &str = "telegram.owner";

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
    users: HashSet<i64>,
    chats: HashSet<i64>,
    owner: Option<i64>,
    /// The code that pairs the owner, while pairing is open.
    pairing: Option<String>,
    /// When each stranger was last refused.
    refused: HashMap<i64, Instant>,
}

impl Access {
    /// Access from the configured allowlists; closed to all until [`Access::restore`].
    pub fn new(users: &[i64], chats: &[i64]) -> Self {
        Self {
            users: users.iter().copied().collect(),
            chats: chats.iter().copied().collect(),
            owner: None,
            pairing: None,
            refused: HashMap::new(),
        }
    }

    /// Takes the owner stored by an earlier run. With no owner and no allowlist, pairing
    /// opens with `code`, which is returned for the operator to see.
    pub fn restore(&mut self, owner: Option<i64>, code: String) -> Option<&str> {
        self.owner = owner;
        if owner.is_none() && self.users.is_empty() && self.chats.is_empty() {
            self.pairing = Some(code);
        }
        self.pairing.as_deref()
    }

    /// The pairing code, while pairing is open.
    pub fn pairing_code(&self) -> Option<&str> {
        self.pairing.as_deref()
    }

    /// Decides on a message from `user` in `chat`. `addressed` says whether it was meant for
    /// the bot (a stranger's group chatter is dropped silently); `text` may be the pairing
    /// code, which only counts in a private chat, where nobody else sees it.
    pub fn check(
        &mut self,
        user: i64,
        chat: i64,
        private: bool,
        addressed: bool,
        text: &str,
        now: Instant,
    ) -> Verdict {
        if self.owner == Some(user) || self.users.contains(&user) || self.chats.contains(&chat) {
            return Verdict::Allowed;
        }
        let offered = text.trim();
        let offered = offered.strip_prefix("/start").map_or(offered, str::trim);
        if private
            && self
                .pairing
                .as_deref()
                .is_some_and(|code| same(code, offered))
        {
            self.pairing = None;
            self.owner = Some(user);
            return Verdict::Paired;
        }
        if !addressed {
            return Verdict::Ignore;
        }
        if self
            .refused
            .get(&user)
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
        self.refused.insert(user, now);
        Verdict::Refuse
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlisted_users_and_chats_pass_and_strangers_are_refused_once_an_hour() {
        let t0 = Instant::now();
        let mut access = Access::new(&[1], &[-100]);
        assert_eq!(access.restore(None, "1234-5678".into()), None, "no pairing");
        assert_eq!(access.check(1, 1, true, true, "hi", t0), Verdict::Allowed);
        assert_eq!(
            access.check(9, -100, false, false, "hi", t0),
            Verdict::Allowed
        );
        assert_eq!(access.check(9, 9, true, true, "hi", t0), Verdict::Refuse);
        assert_eq!(access.check(9, 9, true, true, "hi?", t0), Verdict::Ignore);
        let later = t0 + REFUSE_EVERY;
        assert_eq!(
            access.check(9, 9, true, true, "hello", later),
            Verdict::Refuse
        );
        // A stranger's chatter in a group that is not allowed is dropped without a word.
        assert_eq!(access.check(8, -5, false, false, "hi", t0), Verdict::Ignore);
        assert_eq!(
            access.check(8, -5, false, true, "@bot hi", t0),
            Verdict::Refuse
        );
    }

    #[test]
    fn the_first_sender_of_the_code_in_private_becomes_the_owner() {
        let t0 = Instant::now();
        let mut access = Access::new(&[], &[]);
        assert_eq!(access.restore(None, "1234-5678".into()), Some("1234-5678"));
        assert_eq!(
            access.check(5, -1, false, true, "1234-5678", t0),
            Verdict::Refuse
        );
        assert_eq!(
            access.check(6, 6, true, true, "1234-0000", t0),
            Verdict::Refuse
        );
        assert_eq!(
            access.check(7, 7, true, true, "/start 1234-5678", t0),
            Verdict::Paired
        );
        assert_eq!(access.pairing_code(), None, "the code is single-use");
        assert_eq!(access.check(7, 7, true, true, "hi", t0), Verdict::Allowed);
        assert_eq!(
            access.check(8, 8, true, true, " 1234-5678 ", t0),
            Verdict::Refuse
        );
    }

    #[test]
    fn a_stored_owner_closes_pairing() {
        let mut access = Access::new(&[], &[]);
        assert_eq!(access.restore(Some(3), "1111-2222".into()), None);
        let t0 = Instant::now();
        assert_eq!(access.check(3, 3, true, true, "hi", t0), Verdict::Allowed);
    }

    #[test]
    fn the_refusal_memory_is_bounded() {
        let t0 = Instant::now();
        let mut access = Access::new(&[1], &[]);
        for user in 0..(REFUSED_KEPT as i64 + 10) {
            access.check(user + 10, user + 10, true, true, "hi", t0);
        }
        assert!(access.refused.len() <= REFUSED_KEPT);
    }

    #[test]
    fn codes_have_eight_digits() {
        assert_eq!(new_code(0), "0000-0000");
        assert_eq!(new_code(u64::MAX), "0955-1615");
        assert_eq!(new_code(12_345_678), "1234-5678");
    }
}
