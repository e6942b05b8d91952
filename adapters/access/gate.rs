//! Access as adapters use it: the decision of [`Access`], the owner kept through the sink
//! across restarts, and what to tell those who are turned away.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::{new_code, random_u64, Access, Rules, Sender, Verdict};
use crate::InboundSink;

/// Said to a stranger (at most once an hour each).
pub const REFUSAL: &str = "Sorry, this bot only talks to people its owner has allowed.";

/// Said to a stranger while the bot waits for its owner to pair.
pub const UNPAIRED: &str = "This bot is not set up yet. Its owner pairs with it by sending the \
                            code that `clawpen run` printed.";

/// Said to the new owner.
pub const PAIRED: &str = "Paired: you are this bot's owner now. Write anything to start; /help \
                          lists the commands.";

/// What an adapter does with a message after access control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go on: commands, then the sink.
    Allowed,
    /// Answer with this text and do nothing else (a refusal, or the pairing confirmed).
    Answer(&'static str),
    /// Drop it without a word.
    Drop,
}

/// The access control of one adapter.
#[derive(Debug)]
pub struct Gate {
    /// The adapter's platform: the log field, and the namespace of the stored owner.
    platform: &'static str,
    /// A std mutex held only for a decision, never across an await.
    access: Mutex<Access>,
}

impl Gate {
    /// A gate with the configured allowlists, closed to all until [`Gate::restore`].
    pub fn new(platform: &'static str, rules: &Rules) -> Self {
        Self {
            platform,
            access: Mutex::new(Access::new(rules)),
        }
    }

    fn access(&self) -> MutexGuard<'_, Access> {
        // Held only for decisions that leave the data consistent; a poisoned lock is usable.
        self.access.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sink key of the paired owner's user id (`telegram.owner`).
    pub fn owner_key(&self) -> String {
        format!("{}.owner", self.platform)
    }

    /// The one-time code that makes its first sender the owner, while pairing is open (no
    /// allowlist configured and no owner yet); `None` before [`Gate::restore`] or after.
    pub fn pairing_code(&self) -> Option<String> {
        self.access().pairing_code().map(str::to_string)
    }

    /// Restores the paired owner from the sink, or opens pairing and shows the operator its
    /// code. `label` names the platform for people ("Telegram"); `reach` says where to send
    /// the code ("@clawbot in a private chat").
    pub async fn restore(&self, sink: &dyn InboundSink, label: &str, reach: &str) {
        let owner = match sink.load_value(&self.owner_key()).await {
            Ok(value) => value
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            Err(e) => {
                tracing::error!(adapter = self.platform, error = %e, "cannot read the paired owner");
                None
            }
        };
        let code = new_code(random_u64());
        let opened = self.access().restore(owner, code).map(str::to_string);
        if let Some(code) = opened {
            tracing::info!(
                adapter = self.platform,
                code,
                "no {label} allowlist: pair by sending the code to {reach}"
            );
            eprintln!(
                "clawpen: no {label} user is allowed yet. Send this one-time code to {reach} \
                 to become its owner: {code}"
            );
        }
    }

    /// Decides on a message from `sender` reading `text`; a new owner is stored through
    /// `sink` before this returns.
    pub async fn admit(
        &self,
        sink: &dyn InboundSink,
        sender: &Sender<'_>,
        text: &str,
    ) -> Admission {
        let verdict = self.access().check(sender, text, Instant::now());
        let (adapter, user, chat) = (self.platform, sender.user, sender.chat);
        match verdict {
            Verdict::Allowed => Admission::Allowed,
            Verdict::Paired => {
                tracing::info!(adapter, user, "paired: this user is the bot's owner now");
                if let Err(e) = sink.save_value(&self.owner_key(), user).await {
                    tracing::error!(adapter, user, error = %e, "could not store the owner; pair again after a restart");
                }
                Admission::Answer(PAIRED)
            }
            Verdict::Refuse => {
                tracing::info!(adapter, user, chat, "refusing a user who is not allowed");
                match self.access().pairing_code() {
                    Some(_) => Admission::Answer(UNPAIRED),
                    None => Admission::Answer(REFUSAL),
                }
            }
            Verdict::Ignore => {
                tracing::debug!(
                    adapter,
                    user,
                    chat,
                    "dropping a message from a user who is not allowed"
                );
                Admission::Drop
            }
        }
    }
}
