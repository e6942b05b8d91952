//! Tests of [`ReplyStream`] against a fake platform that keeps what its users would see and
//! fails on demand; time is tokio's paused clock.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::retry::tests::{rate_limited, transport};
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
            status_in_reply: false,
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

#[tokio::test(start_paused = true)]
async fn each_accepted_message_is_recorded_before_the_next_is_sent() -> Result<(), AdapterError> {
    let fake = Fake::new(20, true);
    /// What the hook saw: the platform's calls so far and the ids the state held then.
    type Seen = Vec<(usize, Vec<MessageRef>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (record, calls) = (seen.clone(), fake.clone());
    let hook: OnSent = Box::new(move |state: &ReplyState| {
        let ids = state
            .parts
            .iter()
            .filter_map(|p| p.message.clone())
            .collect();
        lock(&record).push((calls.calls().len(), ids));
        Box::pin(async {})
    });
    let mut stream = stream(&fake, ReplyState::new(None)).on_sent(hook);
    // Three parts, all sent by the one `finish`.
    stream.push("aaaa bbbb cccc dddd eeee ffff gggg hhhh iiii jjjj kkkk");
    stream.finish().await?;
    let seen = lock(&seen).clone();
    assert_eq!(seen.len(), 3, "one record per message: {seen:?}");
    for (n, (calls_then, ids)) in seen.iter().enumerate() {
        assert_eq!(ids.len(), n + 1, "the new message's id is in the record");
        assert_eq!(*calls_then, n + 1, "recorded before the next call");
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_deleted_message_is_continued_in_a_new_one() -> Result<(), AdapterError> {
    let fake = Fake::new(100, true);
    let mut stream = stream(&fake, ReplyState::new(None));
    stream.push("Hello");
    stream.pump().await?;
    lock(&fake.chat).clear(); // the user deleted the bot's message
    stream.push(" again");
    stream.finish().await?;
    assert_eq!(
        fake.chat(),
        ["Hello again"],
        "the rest of the reply was lost"
    );
    assert_eq!(
        fake.calls(),
        [
            "send Hello",
            "edit Hello again",
            "send Hello again",
            "finished"
        ]
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_reply_opening_with_a_code_fence_waits_for_its_first_line() -> Result<(), AdapterError> {
    let fake = Fake::new(100, true);
    let mut stream = stream(&fake, ReplyState::new(None));
    stream.push("```rust\n");
    stream.pump().await?;
    assert!(
        fake.calls().is_empty(),
        "an empty block was sent: {:?}",
        fake.calls()
    );
    stream.push("fn main() {}\n");
    stream.pump().await?;
    assert_eq!(fake.calls(), ["send ```rust\nfn main() {}"]);
    Ok(())
}
