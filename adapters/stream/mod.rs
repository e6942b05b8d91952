//! Drives one reply to a platform through an adapter.
//!
//! [`ReplyStream`] carries out what the pure policy in [`crate::reply`] decides: it asks
//! [`ReplyState::next_op`] for the next operation, holds edits back with an [`EditThrottle`]
//! and retries failures as [`Backoff`] says. While a turn runs it never sleeps for the
//! throttle, since its caller has agent output to read meanwhile; it says when to come back
//! instead. Only [`ReplyStream::finish`] waits, to deliver the end of the reply.
//!
//! A message the platform lost under a reply (someone deleted it: an edit meets
//! [`AdapterError::NotFound`]) is sent again as a new message and the reply goes on there.
//! A part is first shown only once it has visible text (see [`crate::reply`]). A rate limit
//! longer than the stream's `max_rate_wait` is returned, for the caller to end the reply.
//!
//! The capabilities are the adapter's for this conversation ([`Adapter::capabilities_for`]):
//! a platform may offer drafts in private chats only. Drafts are throttled like edits and
//! shown again before the platform lets them lapse; if the platform refuses a draft for good,
//! the reply falls back to sending and editing, so the user still sees it stream.
//!
//! A caller's loop, persisting the state after each step so a restart resumes the messages:
//! ```text
//! while turn runs {
//!     let due = stream.next_due();
//!     select! {
//!         delta = agent.next() => { stream.push(&delta); stream.pump().await? }
//!         _ = sleep_until(due.unwrap_or(far)), if due.is_some() => stream.pump().await?,
//!     }
//!     store.save(stream.state());
//! }
//! stream.finish().await?;
//! ```

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::reply::{EditThrottle, Op, ReplyState};
use crate::{Adapter, AdapterError, Capabilities, ConversationKey};

mod retry;

pub use retry::{retry, Attempts, Backoff};

/// Draft ids stay at or below this, so that a platform's 32-bit integer holds any of them.
pub const MAX_DRAFT_ID: u64 = i32::MAX as u64;

/// How long a shown draft is left alone before it is shown again. Telegram keeps a draft
/// for about 30 s; a turn busy with tools may stream nothing for longer than that.
pub const DRAFT_REFRESH: Duration = Duration::from_secs(20);

/// Called with the reply's state after each message the platform accepted, and awaited
/// before anything else is sent: the caller records the new message's id durably, so that
/// a crash right after never sends it again.
pub type OnSent =
    Box<dyn FnMut(&ReplyState) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One reply on its way to a platform: the policy state plus what carrying it out needs.
pub struct ReplyStream {
    adapter: Arc<dyn Adapter>,
    conversation: ConversationKey,
    /// Read once, so that the policy sees the same limits for the whole reply.
    caps: Capabilities,
    state: ReplyState,
    /// Spaces edits by the platform's `min_edit_interval`; it holds the last write's instant.
    throttle: EditThrottle,
    backoff: Backoff,
    /// After an operation failed for good, nothing is tried before this instant (except by
    /// `finish`), so a message the platform keeps refusing is not retried on every delta.
    held_until: Option<Instant>,
    /// Draft ids of this reply are this plus the part index: distinct from other replies'
    /// (a platform animates changes between drafts of one id), never zero.
    draft_base: u64,
    /// When the current draft was last shown, to show it again within [`DRAFT_REFRESH`].
    drafted_at: Option<Instant>,
    /// Records each accepted message (see [`OnSent`]).
    on_sent: Option<OnSent>,
}

impl ReplyStream {
    /// Takes over a reply: a new one, or one resumed from storage after a restart, whose
    /// messages are then edited rather than sent again.
    pub fn new(
        adapter: Arc<dyn Adapter>,
        conversation: ConversationKey,
        state: ReplyState,
    ) -> Self {
        let caps = adapter.capabilities_for(&conversation);
        // Random per reply without a global counter: each RandomState has fresh keys.
        let draft_base = RandomState::new().hash_one(&conversation) % MAX_DRAFT_ID;
        Self {
            throttle: EditThrottle::new(caps.min_edit_interval),
            adapter,
            conversation,
            caps,
            state,
            backoff: Backoff::default(),
            held_until: None,
            draft_base,
            drafted_at: None,
            on_sent: None,
        }
    }

    /// Gives up on an operation when the platform asks for a longer wait than `wait` (see
    /// [`Backoff::max_rate_wait`]); the error is then returned, to end the reply.
    pub fn max_rate_wait(mut self, wait: Duration) -> Self {
        self.backoff.max_rate_wait = wait;
        self
    }

    /// Has `hook` record every message the platform accepts, before the next is sent.
    pub fn on_sent(mut self, hook: OnSent) -> Self {
        self.on_sent = Some(hook);
        self
    }

    /// The draft id of part `part`: in 1..=[`MAX_DRAFT_ID`], so any platform integer holds it.
    fn draft_id(&self, part: usize) -> u64 {
        (self.draft_base + part as u64) % MAX_DRAFT_ID + 1
    }

    /// The draft to show again now or later, and when.
    fn draft_refresh(&self) -> Option<(Instant, Op)> {
        let at = self.drafted_at? + DRAFT_REFRESH;
        Some((at, self.state.current_draft()?))
    }

    /// The reply's state, for the caller to persist after each step.
    pub fn state(&self) -> &ReplyState {
        &self.state
    }

    /// Appends agent text; nothing is sent until [`ReplyStream::pump`].
    pub fn push(&mut self, delta: &str) {
        self.state.push(delta, &self.caps);
    }

    /// Shows the agent's latest status under the growing message, until more text comes;
    /// see [`ReplyState::set_status`]. Nothing is sent until [`ReplyStream::pump`].
    pub fn set_status(&mut self, line: &str) {
        self.state.set_status(line);
    }

    /// The answer starts over: see [`ReplyState::restart`].
    pub fn restart(&mut self) {
        self.state.restart();
    }

    /// Performs the operations allowed now: every send, and an edit if the throttle allows.
    /// It may sleep to retry a failed operation, never to wait for the throttle. An error
    /// means an operation failed for good; the stream then holds back for `Backoff::cap`.
    pub async fn pump(&mut self) -> Result<(), AdapterError> {
        if self.held_until.is_some_and(|until| Instant::now() < until) {
            return Ok(());
        }
        loop {
            let op = match self.state.next_op(&self.caps, false) {
                Some(op) => op,
                // Nothing new to show: keep a lapsing draft on screen.
                None => match self.draft_refresh() {
                    Some((at, op)) if at <= Instant::now() => op,
                    _ => break,
                },
            };
            let throttled = matches!(op, Op::Edit { .. } | Op::Draft { .. });
            if throttled && !self.throttle.may_edit(Instant::now()) {
                break;
            }
            if let Err(error) = self.perform(op).await {
                self.held_until = Some(Instant::now() + self.backoff.cap);
                return Err(error);
            }
        }
        Ok(())
    }

    /// When [`ReplyStream::pump`] next has something to do (a throttled edit, or a retry
    /// after a hold); `None` if nothing can happen before more text arrives.
    pub fn next_due(&self) -> Option<Instant> {
        let due = match self.state.next_op(&self.caps, false) {
            Some(Op::Send { .. }) => None,
            Some(Op::Edit { .. } | Op::Draft { .. }) => self.throttle.due(),
            None => Some(self.draft_refresh()?.0).max(self.throttle.due()),
        };
        let due = due.max(self.held_until).unwrap_or_else(Instant::now);
        Some(due)
    }

    /// Delivers the whole reply, waiting out the throttle (but not a hold: the end of a reply
    /// gets one more try), then tells the adapter the reply is complete. A blank reply sends
    /// nothing, so a caller that wants the user told pushes an error text first.
    pub async fn finish(&mut self) -> Result<(), AdapterError> {
        self.deliver().await?;
        let (adapter, conversation) = (&self.adapter, &self.conversation);
        retry(&self.backoff, conversation, move || {
            adapter.finished(conversation)
        })
        .await
    }

    /// Delivers the whole text as final, waiting out the throttle, without telling the
    /// adapter that the turn's reply is complete: for messages sent while a turn goes on.
    pub async fn deliver(&mut self) -> Result<(), AdapterError> {
        while let Some(op) = self.state.next_op(&self.caps, true) {
            if let (Op::Edit { .. }, Some(due)) = (&op, self.throttle.due()) {
                sleep_until(due).await;
            }
            self.perform(op).await?;
        }
        Ok(())
    }

    /// Carries out one operation, retrying it, and records it the moment it succeeded.
    async fn perform(&mut self, op: Op) -> Result<(), AdapterError> {
        let (adapter, conversation, backoff) = (&self.adapter, &self.conversation, &self.backoff);
        let sent = match &op {
            Op::Send { part, text } => {
                // Only the first message answers the inbound one; the others continue it.
                let reply_to = self.state.reply_to.as_ref().filter(|_| *part == 0);
                let send = move || adapter.send(conversation, text, reply_to);
                Some(retry(backoff, conversation, send).await?)
            }
            Op::Edit {
                part,
                message,
                text,
            } => {
                let edit = move || adapter.edit(conversation, message, text);
                match retry(backoff, conversation, edit).await {
                    Ok(()) => None,
                    Err(AdapterError::NotFound(error)) => {
                        // Someone deleted the message: the rest of the reply must not go
                        // with it, so its part goes out again as a new message.
                        tracing::info!(%conversation, %message, %error, "a reply's message is gone; continuing in a new one");
                        self.state.lost(*part);
                        return Ok(());
                    }
                    Err(error) => return Err(error),
                }
            }
            Op::Draft { part, text } => {
                let id = self.draft_id(*part);
                let draft = move || adapter.draft(conversation, id, text);
                match retry(backoff, conversation, draft).await {
                    Ok(()) => self.drafted_at = Some(Instant::now()),
                    Err(error) if !error.is_retryable() => {
                        // Drafts are a nicety: stream by send and edit instead.
                        tracing::info!(%conversation, %error, "drafts refused; streaming by edits");
                        self.caps.has_drafts = false;
                        self.drafted_at = None;
                        return Ok(());
                    }
                    Err(error) => return Err(error),
                }
                None
            }
        };
        let was_send = matches!(op, Op::Send { .. });
        self.state.applied(&op, sent);
        self.throttle.wrote(Instant::now());
        if was_send {
            if let Some(hook) = self.on_sent.as_mut() {
                hook(&self.state).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
