//! Drives one reply to a platform through an adapter.
//!
//! [`ReplyStream`] carries out what the pure policy in [`crate::reply`] decides: it asks
//! [`ReplyState::next_op`] for the next operation, holds edits back with an [`EditThrottle`]
//! and retries failures as [`Backoff`] says. While a turn runs it never sleeps for the
//! throttle, since its caller has agent output to read meanwhile; it says when to come back
//! instead. Only [`ReplyStream::finish`] waits, to deliver the end of the reply.
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
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, sleep_until, Instant};

use crate::reply::{EditThrottle, Op, ReplyState};
use crate::{Adapter, AdapterError, Capabilities, ConversationKey};

/// How often and how patiently a failed operation is retried.
///
/// A transport error backs off exponentially, so an outage is not hammered; a rate limit
/// waits as long as the platform asked. Both count toward `max_attempts`, so that a reply
/// gives up (and says so) rather than hanging on a platform that never recovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first transport error.
    pub base: Duration,
    /// What each further wait is multiplied by.
    pub factor: u32,
    /// The longest wait, and how long a stream holds back after giving up on an operation.
    pub cap: Duration,
    /// How many attempts an operation gets in all, the first included.
    pub max_attempts: u32,
}

impl Default for Backoff {
    /// 0.5 s, 1 s, 2 s, 4 s, 8 s: six attempts over about 15 s, never more than 30 s apart.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            factor: 2,
            cap: Duration::from_secs(30),
            max_attempts: 6,
        }
    }
}

impl Backoff {
    /// The wait after the `failures`th failed attempt (counting from 1) ended in a transport
    /// error, or `None` when no attempt is left.
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        if failures >= self.max_attempts {
            return None;
        }
        let growth = self
            .factor
            .checked_pow(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        Some(self.base.saturating_mul(growth).min(self.cap))
    }

    /// The wait before retrying after the `failures`th failed attempt ended in `error`, or
    /// `None` if the error is to be returned: it is final, or no attempt is left.
    pub fn retry_after(&self, failures: u32, error: &AdapterError) -> Option<Duration> {
        match error {
            AdapterError::RateLimited { retry_after } => {
                (failures < self.max_attempts).then_some(*retry_after)
            }
            AdapterError::Transport(_) => self.delay(failures),
            AdapterError::Rejected(_)
            | AdapterError::NotFound(_)
            | AdapterError::Unsupported(_) => None,
        }
    }
}

/// Draft ids stay at or below this, so that a platform's 32-bit integer holds any of them.
pub const MAX_DRAFT_ID: u64 = i32::MAX as u64;

/// How long a shown draft is left alone before it is shown again. Telegram keeps a draft
/// for about 30 s; a turn busy with tools may stream nothing for longer than that.
pub const DRAFT_REFRESH: Duration = Duration::from_secs(20);

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
        }
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

    /// Replaces the default retry policy.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The reply's state, for the caller to persist after each step.
    pub fn state(&self) -> &ReplyState {
        &self.state
    }

    /// Appends agent text; nothing is sent until [`ReplyStream::pump`].
    pub fn push(&mut self, delta: &str) {
        self.state.push(delta, &self.caps);
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
            Op::Edit { message, text, .. } => {
                let edit = move || adapter.edit(conversation, message, text);
                retry(backoff, conversation, edit).await?;
                None
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
        self.state.applied(&op, sent);
        self.throttle.wrote(Instant::now());
        Ok(())
    }
}

/// Runs `attempt` until it succeeds or `backoff` says to give up; the retries are logged
/// here, the final error by the caller.
async fn retry<T, F, Fut>(
    backoff: &Backoff,
    conversation: &ConversationKey,
    mut attempt: F,
) -> Result<T, AdapterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AdapterError>>,
{
    let mut failures = 0;
    loop {
        let error = match attempt().await {
            Ok(done) => return Ok(done),
            Err(error) => error,
        };
        failures += 1;
        let Some(wait) = backoff.retry_after(failures, &error) else {
            return Err(error);
        };
        tracing::debug!(%conversation, %error, ?wait, failures, "retrying a platform operation");
        sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Mutex, PoisonError};

    use async_trait::async_trait;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{InboundSink, LengthUnit, MessageRef};

    /// A platform that keeps what its users would see and fails on demand.
    struct Fake {
        caps: Capabilities,
        /// The chat's messages, in the order they were sent: (id, current text).
        chat: Mutex<Vec<(MessageRef, String)>>,
        /// Every call, failed ones included, as "send TEXT", "edit TEXT" or "finished".
        calls: Mutex<Vec<String>>,
        /// What the next calls fail with, in order.
        failures: Mutex<VecDeque<AdapterError>>,
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    impl Fake {
        fn new(max_len: usize, can_edit: bool) -> Arc<Self> {
            let caps = Capabilities {
                max_len,
                length_unit: LengthUnit::Chars,
                can_edit,
                has_drafts: false,
                has_threads: false,
                min_edit_interval: Duration::from_secs(1),
                typing_interval: None,
            };
            let (chat, calls, failures) = Default::default();
            Arc::new(Self {
                caps,
                chat,
                calls,
                failures,
            })
        }

        fn fail_next(&self, errors: impl IntoIterator<Item = AdapterError>) {
            lock(&self.failures).extend(errors);
        }

        fn call(&self, call: String) -> Result<(), AdapterError> {
            lock(&self.calls).push(call);
            lock(&self.failures).pop_front().map_or(Ok(()), Err)
        }

        fn chat(&self) -> Vec<String> {
            lock(&self.chat)
                .iter()
                .map(|(_, text)| text.clone())
                .collect()
        }

        fn calls(&self) -> Vec<String> {
            lock(&self.calls).clone()
        }
    }

    #[async_trait]
    impl Adapter for Fake {
        fn platform(&self) -> &str {
            "fake"
        }

        fn capabilities(&self) -> Capabilities {
            self.caps.clone()
        }

        /// Drafts only in the chat named "dm", as Telegram has them in private chats only.
        fn capabilities_for(&self, conversation: &ConversationKey) -> Capabilities {
            Capabilities {
                has_drafts: self.caps.has_drafts && conversation.chat == "dm",
                ..self.caps.clone()
            }
        }

        async fn draft(
            &self,
            _conversation: &ConversationKey,
            draft_id: u64,
            text: &str,
        ) -> Result<(), AdapterError> {
            assert!((1..=MAX_DRAFT_ID).contains(&draft_id), "{draft_id}");
            self.call(format!("draft {text}"))
        }

        async fn run(
            self: Arc<Self>,
            _sink: Arc<dyn InboundSink>,
            _shutdown: CancellationToken,
        ) -> Result<(), AdapterError> {
            Ok(())
        }

        async fn send(
            &self,
            _conversation: &ConversationKey,
            text: &str,
            _reply_to: Option<&MessageRef>,
        ) -> Result<MessageRef, AdapterError> {
            self.call(format!("send {text}"))?;
            let mut chat = lock(&self.chat);
            let id = MessageRef(format!("m{}", chat.len()));
            chat.push((id.clone(), text.to_string()));
            Ok(id)
        }

        async fn edit(
            &self,
            _conversation: &ConversationKey,
            message: &MessageRef,
            text: &str,
        ) -> Result<(), AdapterError> {
            self.call(format!("edit {text}"))?;
            let mut chat = lock(&self.chat);
            let Some((_, shown)) = chat.iter_mut().find(|(id, _)| id == message) else {
                return Err(AdapterError::NotFound(message.to_string()));
            };
            *shown = text.to_string();
            Ok(())
        }

        async fn finished(&self, _conversation: &ConversationKey) -> Result<(), AdapterError> {
            self.call("finished".into())
        }
    }

    fn with_drafts(max_len: usize) -> Arc<Fake> {
        let mut fake = Fake::new(max_len, true);
        if let Some(fake) = Arc::get_mut(&mut fake) {
            fake.caps.has_drafts = true;
        }
        fake
    }

    fn stream_in(fake: &Arc<Fake>, chat: &str) -> ReplyStream {
        let conversation = ConversationKey::new("fake", chat);
        ReplyStream::new(fake.clone(), conversation, ReplyState::new(None))
    }

    fn stream(fake: &Arc<Fake>, state: ReplyState) -> ReplyStream {
        ReplyStream::new(fake.clone(), ConversationKey::new("fake", "1"), state)
    }

    fn rate_limited(seconds: u64) -> AdapterError {
        AdapterError::RateLimited {
            retry_after: Duration::from_secs(seconds),
        }
    }

    fn transport() -> AdapterError {
        AdapterError::Transport("502 Bad Gateway".into())
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        let secs = Duration::from_secs_f64;
        let backoff = Backoff::default();
        let waits: Vec<_> = (1..=6).map(|n| backoff.delay(n)).collect();
        assert_eq!(
            waits,
            [
                Some(secs(0.5)),
                Some(secs(1.0)),
                Some(secs(2.0)),
                Some(secs(4.0)),
                Some(secs(8.0)),
                None
            ]
        );
        let patient = Backoff {
            max_attempts: 100,
            ..backoff
        };
        assert_eq!(patient.delay(8), Some(secs(30.0)));
        assert_eq!(
            patient.delay(99),
            Some(secs(30.0)),
            "overflow must saturate"
        );
    }

    #[test]
    fn only_rate_limits_and_transport_errors_are_retried() {
        let backoff = Backoff::default();
        assert_eq!(
            backoff.retry_after(1, &rate_limited(7)),
            Some(Duration::from_secs(7))
        );
        assert_eq!(backoff.retry_after(6, &rate_limited(7)), None);
        assert_eq!(
            backoff.retry_after(2, &transport()),
            Some(Duration::from_secs(1))
        );
        for error in [
            AdapterError::Rejected("bad markup".into()),
            AdapterError::NotFound("m0".into()),
            AdapterError::Unsupported("edit"),
        ] {
            assert_eq!(backoff.retry_after(1, &error), None, "{error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_still_end_with_every_part_sent_once() -> Result<(), AdapterError> {
        let fake = Fake::new(20, true);
        let mut stream = stream(&fake, ReplyState::new(None));
        fake.fail_next([rate_limited(3), transport()]);
        stream.push("aaaa bbbb");
        stream.pump().await?;
        fake.fail_next([rate_limited(1)]);
        stream.push(" cccc dddd eeee ffff gggg");
        stream.pump().await?;
        fake.fail_next([transport(), rate_limited(2)]);
        stream.push(" hhhh");
        stream.finish().await?;
        assert_eq!(fake.chat(), ["aaaa bbbb cccc dddd", "eeee ffff gggg hhhh"]);
        let calls = fake.calls();
        assert_eq!(
            calls.iter().filter(|c| *c == "send aaaa bbbb").count(),
            3,
            "{calls:?}"
        );
        assert_eq!(
            calls.iter().filter(|c| *c == "send eeee ffff gggg").count(),
            2,
            "{calls:?}"
        );
        assert_eq!(calls.last().map(String::as_str), Some("finished"));
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn edits_within_one_interval_coalesce() -> Result<(), AdapterError> {
        let fake = Fake::new(100, true);
        let mut stream = stream(&fake, ReplyState::new(None));
        stream.push("Hello");
        stream.pump().await?;
        let sent_at = Instant::now();
        for delta in [" there", ",", " how", " are", " you", "?"] {
            stream.push(delta);
            stream.pump().await?;
        }
        assert_eq!(fake.calls(), ["send Hello"]);
        assert_eq!(stream.next_due(), Some(sent_at + Duration::from_secs(1)));
        sleep_until(sent_at + Duration::from_secs(1)).await;
        stream.pump().await?;
        assert_eq!(
            fake.calls(),
            ["send Hello", "edit Hello there, how are you?"]
        );
        assert_eq!(stream.next_due(), None);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn finish_waits_out_the_throttle_and_delivers_the_end() -> Result<(), AdapterError> {
        let fake = Fake::new(100, true);
        let mut stream = stream(&fake, ReplyState::new(None));
        stream.push("Hello");
        stream.pump().await?;
        stream.push(" world");
        stream.pump().await?;
        stream.finish().await?;
        assert_eq!(fake.calls(), ["send Hello", "edit Hello world", "finished"]);
        assert_eq!(fake.chat(), ["Hello world"]);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn without_edits_each_part_is_sent_once_complete() -> Result<(), AdapterError> {
        let fake = Fake::new(20, false);
        let mut stream = stream(&fake, ReplyState::new(None));
        for word in ["aaaa ", "bbbb ", "cccc ", "dddd ", "eeee ", "ffff"] {
            stream.push(word);
            stream.pump().await?;
        }
        assert_eq!(fake.calls(), ["send aaaa bbbb cccc dddd"]);
        stream.finish().await?;
        assert_eq!(
            fake.calls(),
            ["send aaaa bbbb cccc dddd", "send eeee ffff", "finished"]
        );
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_resumed_reply_edits_its_message_instead_of_resending() -> Result<(), AdapterError> {
        let fake = Fake::new(100, true);
        let mut first = stream(&fake, ReplyState::new(None));
        first.push("Hello");
        first.pump().await?;
        let mut resumed = stream(&fake, first.state().clone());
        resumed.push(" again");
        resumed.finish().await?;
        assert_eq!(fake.calls(), ["send Hello", "edit Hello again", "finished"]);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn final_errors_are_returned_and_not_hammered() {
        let fake = Fake::new(100, true);
        let mut stream = stream(&fake, ReplyState::new(None));
        fake.fail_next([AdapterError::Rejected("bad markup".into())]);
        stream.push("Hi");
        assert_eq!(
            stream.pump().await,
            Err(AdapterError::Rejected("bad markup".into()))
        );
        stream.push(" there");
        assert_eq!(stream.pump().await, Ok(()), "held back after a final error");
        assert_eq!(fake.calls(), ["send Hi"]);
        assert!(stream.next_due().is_some_and(|due| due > Instant::now()));

        fake.fail_next(std::iter::repeat_with(transport).take(6));
        assert_eq!(stream.finish().await, Err(transport()));
        assert_eq!(fake.calls().len(), 1 + 6, "one try, then six attempts");
        assert!(fake.chat().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn drafts_stream_and_the_final_text_is_sent_once() -> Result<(), AdapterError> {
        let fake = with_drafts(100);
        let mut stream = stream_in(&fake, "dm");
        stream.push("Hello");
        stream.pump().await?;
        stream.push(" world");
        stream.pump().await?;
        assert_eq!(
            fake.calls(),
            ["draft Hello"],
            "drafts are throttled like edits"
        );
        let due = stream.next_due().unwrap_or_else(Instant::now);
        sleep_until(due).await;
        stream.pump().await?;
        stream.finish().await?;
        assert_eq!(
            fake.calls(),
            [
                "draft Hello",
                "draft Hello world",
                "send Hello world",
                "finished"
            ]
        );
        assert_eq!(fake.chat(), ["Hello world"]);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn drafts_apply_only_where_the_adapter_offers_them() -> Result<(), AdapterError> {
        let fake = with_drafts(100);
        let mut stream = stream_in(&fake, "group");
        stream.push("Hello");
        stream.finish().await?;
        assert_eq!(fake.calls(), ["send Hello", "finished"]);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_draft_falls_back_to_send_and_edit() -> Result<(), AdapterError> {
        let fake = with_drafts(100);
        let mut stream = stream_in(&fake, "dm");
        fake.fail_next([AdapterError::Rejected("method not found".into())]);
        stream.push("Hello");
        stream.pump().await?;
        stream.push(" again");
        stream.finish().await?;
        assert_eq!(
            fake.calls(),
            ["draft Hello", "send Hello", "edit Hello again", "finished"]
        );
        assert_eq!(fake.chat(), ["Hello again"]);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_draft_is_shown_again_before_it_lapses() -> Result<(), AdapterError> {
        let fake = with_drafts(100);
        let mut stream = stream_in(&fake, "dm");
        let start = Instant::now();
        stream.push("Thinking");
        stream.pump().await?;
        assert_eq!(stream.next_due(), Some(start + DRAFT_REFRESH));
        sleep_until(start + DRAFT_REFRESH).await;
        stream.pump().await?;
        assert_eq!(fake.calls(), ["draft Thinking", "draft Thinking"]);
        stream.finish().await?;
        assert_eq!(
            stream.next_due(),
            None,
            "a sent reply has no draft to refresh"
        );
        Ok(())
    }
}
