//! Delivery: the task beside each conversation's actor that carries its replies to the
//! platform, so the actor never waits for a platform.
//!
//! The actor hands work over through an [`Outbox`]: it locks, appends and notifies, never
//! awaits. Text pushed while the task is busy (an edit held by a 429, a send being retried)
//! coalesces into one string, so a long wait costs one edit afterwards, not one per delta;
//! `/stop`, the box's acknowledgements and the stall timer go on meanwhile. The task owns
//! each reply's [`ReplyStream`] (its throttle and retries), records every message the
//! platform accepted before sending the next, and forgets a turn's delivery record only once
//! its final text is shown, so a pending reply survives a restart and is finished then.
//!
//! Replies go out in the order they were begun; side messages (the agent's
//! `send_message`, tool status lines, typing, uploads) go out as they come.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use clawpen_adapters::reply::ReplyState;
use clawpen_adapters::stream::{Attempts, Backoff, OnSent, ReplyStream};
use clawpen_adapters::{Adapter, AdapterError, ConversationKey, Upload};
use clawpen_domain::{ContainerId, TurnId};
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, Instant};

use super::turn::{error_text, FileError};
use super::Shared;

/// Side operations waiting for the task. Status lines and typing are dropped first when it
/// is full (they are stale by then); messages and uploads are kept however many come, since
/// they are bounded by the box's own output, which the actor reads at its pace.
const SIDE_CAPACITY: usize = 64;

/// How a reply whose platform keeps failing tries its end again, once the stream's own
/// retries gave up: for ever (the reply must arrive), at most a minute apart.
const FINISH_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(5),
    factor: 2,
    cap: Duration::from_secs(60),
    max_attempts: u32::MAX,
    max_rate_wait: Duration::MAX,
};

/// A reply's work, handed over by the actor and not yet taken by the task.
struct Job {
    /// The turn it answers, when it has a record in the store (its delivery is then
    /// recorded and resumed after a restart); `None` for a notice such as an error reply.
    turn: Option<TurnId>,
    /// Where it starts: a new reply, or what the platform showed before a restart.
    start: Option<ReplyState>,
    /// What the reply shows before the answer (a scheduled run's mark): it starts the
    /// reply, and starts it again when the answer starts over.
    heading: String,
    /// Text pushed since the task last looked.
    text: String,
    /// The answer started over since the task last looked.
    restart: bool,
    /// No more text comes: deliver all of it.
    finished: bool,
    /// Delivery gave up on it (the platform asked for too long a wait): text still
    /// pushed to it is dropped until it is finished.
    ended: bool,
}

/// A side operation.
#[derive(Debug)]
pub(crate) enum Side {
    /// A separate message (the agent's `send_message`).
    Message(String),
    /// A short status line ("running: cargo test").
    Status(String),
    /// Renew the typing indicator.
    Typing,
    /// Upload a workspace file of the box `container` to the chat.
    Upload {
        container: ContainerId,
        path: String,
    },
}

#[derive(Default)]
struct Pending {
    replies: VecDeque<Job>,
    side: VecDeque<Side>,
    /// The actor is gone: finish what is here, then stop.
    closed: bool,
}

/// The actor's side of a conversation's delivery. Cheap to share; every method returns at
/// once.
pub(crate) struct Outbox {
    /// A std mutex: held only to append or to take, never across an await.
    pending: Mutex<Pending>,
    /// Wakes the task when something was added.
    wake: Notify,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self, change: impl FnOnce(&mut Pending)) {
        change(&mut self.lock());
        self.wake.notify_one();
    }

    /// Begins a reply after the ones already begun. `start` is what the platform shows of
    /// it already (after a restart), or a new reply state.
    pub(crate) fn begin(&self, turn: Option<TurnId>, start: ReplyState) {
        self.begin_headed(turn, start, "");
    }

    /// Begins a new reply that shows `heading` before its answer.
    pub(crate) fn begin_headed(&self, turn: Option<TurnId>, start: ReplyState, heading: &str) {
        self.open(turn, start, heading, heading);
    }

    fn open(&self, turn: Option<TurnId>, start: ReplyState, heading: &str, text: &str) {
        self.changed(|p| {
            p.replies.push_back(Job {
                turn,
                start: Some(start),
                heading: heading.to_owned(),
                text: text.to_owned(),
                restart: false,
                finished: false,
                ended: false,
            })
        });
    }

    /// Begins a reply that was under way before a restart: `shown` is what the platform
    /// showed at its last accepted message, `heading` and `text` the reply's heading and
    /// its text as acknowledged. When the shown text is not where the reply began (it ran
    /// ahead of the disk), the reply replaces it in the same messages.
    pub(crate) fn resume(
        &self,
        turn: Option<TurnId>,
        shown: ReplyState,
        heading: &str,
        text: &str,
    ) {
        let reply = format!("{heading}{text}");
        let rest = reply.strip_prefix(shown.text.as_str()).map(str::to_owned);
        self.open(turn, shown, heading, "");
        match rest {
            Some(rest) => self.push(&rest),
            None => {
                self.restart();
                self.push(text);
            }
        }
    }

    /// Appends text to the newest reply.
    pub(crate) fn push(&self, text: &str) {
        self.changed(|p| {
            if let Some(job) = p.replies.back_mut() {
                job.text.push_str(text);
            }
        });
    }

    /// The newest reply's answer starts over: its heading and new text replace what was
    /// shown.
    pub(crate) fn restart(&self) {
        self.changed(|p| {
            if let Some(job) = p.replies.back_mut() {
                job.text.clone_from(&job.heading);
                job.restart = true;
            }
        });
    }

    /// The newest reply is complete: show all of it.
    pub(crate) fn finish(&self) {
        self.changed(|p| {
            if let Some(job) = p.replies.back_mut() {
                job.finished = true;
            }
        });
    }

    /// A complete reply of its own (an error notice), after the others.
    pub(crate) fn notice(&self, reply_to: ReplyState, text: &str) {
        self.begin(None, reply_to);
        self.push(text);
        self.finish();
    }

    /// A side operation, as soon as the task gets to it.
    pub(crate) fn side(&self, side: Side) {
        self.changed(|p| {
            if matches!(side, Side::Typing) && p.side.iter().any(|s| matches!(s, Side::Typing)) {
                return;
            }
            if p.side.len() >= SIDE_CAPACITY {
                if let Some(stale) = p
                    .side
                    .iter()
                    .position(|s| matches!(s, Side::Status(_) | Side::Typing))
                {
                    p.side.remove(stale);
                } else if matches!(side, Side::Status(_) | Side::Typing) {
                    return;
                }
            }
            p.side.push_back(side);
        });
    }

    /// The running turn was stopped, or its box died: the side operations it queued and
    /// that were not carried out yet (messages, status lines, uploads) are dropped, so a
    /// flood queued before the stop does not go on reaching the chat. The reply's own text
    /// is kept whole: it is bounded by the reply's cap, and cutting out what was not shown
    /// yet would leave a gap before the text that still comes (the word that it stopped).
    pub(crate) fn drop_queued(&self) {
        self.changed(|p| p.side.clear());
    }

    /// The actor is gone: the task delivers what it has, then stops.
    pub(crate) fn close(&self) {
        self.changed(|p| p.closed = true);
    }
}

/// The reply being delivered now.
struct Current {
    turn: Option<TurnId>,
    stream: ReplyStream,
    finished: bool,
}

/// Starts the delivery task of one conversation.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    key: ConversationKey,
    adapter: Arc<dyn Adapter>,
) -> Arc<Outbox> {
    let outbox = Arc::new(Outbox {
        pending: Mutex::new(Pending::default()),
        wake: Notify::new(),
    });
    let task = Task {
        shared: shared.clone(),
        key,
        adapter,
        outbox: outbox.clone(),
        current: None,
    };
    shared.tracker.spawn(Box::new(task).run());
    outbox
}

struct Task {
    shared: Arc<Shared>,
    key: ConversationKey,
    adapter: Arc<dyn Adapter>,
    outbox: Arc<Outbox>,
    current: Option<Current>,
}

impl Task {
    /// Boxed, like the actor: an async fn keeps its arguments for its whole run.
    async fn run(mut self: Box<Self>) {
        loop {
            let outbox = self.outbox.clone();
            let notified = outbox.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (side, closed) = self.take();
            // One at a time, so that `/stop` (which empties the queue) also stops what this
            // round would still have sent; those that came meanwhile wait for the next round.
            for _ in 0..side {
                let Some(op) = self.outbox.lock().side.pop_front() else {
                    break;
                };
                Box::pin(self.perform(op)).await;
            }
            // Boxed, as the actor's work is: what a conversation at rest keeps is only this
            // loop's own state.
            if self.current.as_ref().is_some_and(|c| c.finished) {
                Box::pin(self.finish()).await;
                continue;
            }
            if let Some(current) = self.current.as_mut() {
                match Box::pin(current.stream.pump()).await {
                    Ok(()) => {}
                    Err(AdapterError::RateLimited { retry_after }) => {
                        Box::pin(self.give_up(retry_after)).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(conversation = %self.key, error = %e, "delivering reply text failed; trying again later");
                    }
                }
            }
            if closed && self.current.is_none() && self.is_idle() {
                break;
            }
            let due = self.current.as_ref().and_then(|c| c.stream.next_due());
            tokio::select! {
                _ = &mut notified => {}
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
            }
        }
        tracing::debug!(conversation = %self.key, "delivery stopped");
    }

    fn is_idle(&self) -> bool {
        let pending = self.outbox.lock();
        pending.replies.is_empty() && pending.side.is_empty()
    }

    /// Moves what the actor handed over into the current reply (starting the next one when
    /// none is current); says how many side operations wait, and whether the actor is gone.
    fn take(&mut self) -> (usize, bool) {
        let mut pending = self.outbox.lock();
        // A reply delivery gave up on: its text goes nowhere, and it is dropped once complete.
        while let Some(job) = pending.replies.front_mut().filter(|job| job.ended) {
            job.text.clear();
            job.restart = false;
            if !job.finished {
                return (pending.side.len(), pending.closed);
            }
            pending.replies.pop_front();
        }
        if self.current.is_none() {
            if let Some(job) = pending.replies.front_mut() {
                let start = job.start.take().unwrap_or_default();
                self.current = Some(Current {
                    turn: job.turn.clone(),
                    stream: self.stream(job.turn.clone(), start),
                    finished: false,
                });
            }
        }
        if let (Some(current), Some(job)) = (self.current.as_mut(), pending.replies.front_mut()) {
            if std::mem::take(&mut job.restart) {
                current.stream.restart();
            }
            if !job.text.is_empty() {
                current.stream.push(&std::mem::take(&mut job.text));
            }
            if job.finished {
                current.finished = true;
                pending.replies.pop_front();
            }
        }
        (pending.side.len(), pending.closed)
    }

    fn stream(&self, turn: Option<TurnId>, start: ReplyState) -> ReplyStream {
        let stream = ReplyStream::new(self.adapter.clone(), self.key.clone(), start)
            .max_rate_wait(self.shared.config.max_rate_wait);
        let Some(turn) = turn else {
            return stream;
        };
        let (store, key) = (self.shared.store.clone(), self.key.clone());
        let hook: OnSent = Box::new(move |state: &ReplyState| {
            let (store, key, turn, state) =
                (store.clone(), key.clone(), turn.clone(), state.clone());
            Box::pin(async move {
                let conversation = key.clone();
                let saved = store
                    .commit(move |s| s.save_delivery_unflushed(&conversation, &turn, &state))
                    .await;
                if let Err(e) = saved {
                    tracing::error!(conversation = %key, error = %e, "could not record a sent message; a restart may send it again");
                }
            })
        });
        stream.on_sent(hook)
    }

    /// Delivers the rest of the current reply, however long the platform makes it wait,
    /// then forgets its delivery record.
    async fn finish(&mut self) {
        let Some(mut current) = self.current.take() else {
            return;
        };
        let mut attempts = Attempts::new(FINISH_BACKOFF);
        loop {
            let error = match current.stream.finish().await {
                Ok(()) => break,
                Err(e) => e,
            };
            if let AdapterError::RateLimited { retry_after } = error {
                // Past `max_rate_wait`: the stream waits out any shorter limit itself.
                self.current = Some(current);
                self.give_up(retry_after).await;
                return;
            }
            match attempts.failed(&error) {
                Some(wait) => {
                    let failures = attempts.failures();
                    if failures <= 1 || failures.is_power_of_two() {
                        tracing::warn!(conversation = %self.key, %error, failures, "the end of a reply could not be delivered yet; retrying");
                    }
                    sleep(wait).await;
                }
                None => {
                    tracing::warn!(conversation = %self.key, %error, "the platform refused the end of a reply");
                    break;
                }
            }
        }
        self.forget(current.turn).await;
    }

    /// Ends the current reply where it is, because the platform asked for a wait longer
    /// than `max_rate_wait` (Telegram has asked for hours): says so in the log, forgets the
    /// reply's delivery record, and once the platform lets the bot write again tells the
    /// chat that the reply was cut short. The conversation goes on meanwhile; later
    /// replies wait here, as the platform would refuse them anyway.
    async fn give_up(&mut self, retry_after: Duration) {
        let Some(current) = self.current.take() else {
            return;
        };
        let until = Instant::now() + retry_after;
        let cap = self.shared.config.max_rate_wait;
        tracing::warn!(conversation = %self.key, ?retry_after, ?cap, "the platform asked for a longer wait than max_rate_wait; the reply ends here");
        if !current.finished {
            if let Some(job) = self.outbox.lock().replies.front_mut() {
                job.ended = true;
            }
        }
        self.forget(current.turn).await;
        tokio::select! {
            _ = sleep_until(until) => {}
            _ = self.shared.shutdown.cancelled() => {
                tracing::info!(conversation = %self.key, "shutting down; the note about a cut reply is not sent");
                return;
            }
        }
        let reply_to = current.stream.state().reply_to.clone();
        let mut note = ReplyStream::new(
            self.adapter.clone(),
            self.key.clone(),
            ReplyState::new(reply_to),
        );
        note.push(&cut_short_note(retry_after));
        if let Err(e) = note.deliver().await {
            tracing::warn!(conversation = %self.key, error = %e, "could not tell the chat that a reply was cut short");
        }
    }

    /// Forgets a turn's delivery record: its reply is delivered, or given up on. No flush
    /// waits for it: if a crash loses it, the restart shows the reply's end again, which
    /// changes nothing the user sees (the parts' ids are stored, so it is an edit to the
    /// same text).
    async fn forget(&self, turn: Option<TurnId>) {
        let Some(turn) = turn else {
            return;
        };
        let key = self.key.clone();
        if let Err(e) = self
            .shared
            .store
            .apply(move |s| s.delivered_unflushed(&key, &turn))
            .await
        {
            tracing::error!(conversation = %self.key, error = %e, "could not record a delivered reply; a restart shows its end again");
        }
    }

    async fn perform(&mut self, side: Side) {
        let adapter = &self.adapter;
        match side {
            Side::Message(text) => {
                let mut message =
                    ReplyStream::new(adapter.clone(), self.key.clone(), ReplyState::new(None));
                message.push(&text);
                if let Err(e) = message.deliver().await {
                    tracing::warn!(conversation = %self.key, error = %e, "sending the agent's message failed");
                }
            }
            Side::Status(text) if adapter.capabilities_for(&self.key).status_in_reply => {
                // Under the reply being streamed; with none, the typing indicator says enough.
                if let Some(current) = self.current.as_mut() {
                    current.stream.set_status(&text);
                }
            }
            Side::Status(text) => {
                if let Err(e) = adapter.status(&self.key, &text).await {
                    tracing::debug!(conversation = %self.key, error = %e, "status line failed");
                }
            }
            Side::Typing => {
                if let Err(e) = adapter.typing(&self.key).await {
                    tracing::debug!(conversation = %self.key, error = %e, "typing indicator failed");
                }
            }
            Side::Upload { container, path } => {
                if let Err(e) = self.upload(&container, &path).await {
                    tracing::warn!(conversation = %self.key, path, error = %e, "uploading the agent's file failed");
                    if let Some(current) = self.current.as_mut() {
                        let note = error_text(
                            &current.stream.state().text,
                            &format!("Could not send the file {path}: {e}"),
                        );
                        current.stream.push(&note);
                    }
                }
            }
        }
    }

    /// Reads a file the agent named from its workspace and uploads it to the chat.
    async fn upload(&self, container: &ContainerId, path: &str) -> Result<(), FileError> {
        let data = self
            .shared
            .sandbox
            .read_workspace_file(container, path)
            .await?;
        let name = std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        self.adapter
            .upload(&self.key, &Upload { name, data })
            .await?;
        Ok(())
    }
}

/// What the chat is told when a reply was cut short by a rate limit past `max_rate_wait`.
fn cut_short_note(retry_after: Duration) -> String {
    let secs = retry_after.as_secs();
    let wait = match secs {
        0..=119 => format!("{secs} seconds"),
        120..=7199 => format!("{} minutes", secs.div_ceil(60)),
        _ => format!("{} hours {} minutes", secs / 3600, (secs % 3600) / 60),
    };
    format!("(The rest of the reply above was not delivered: the chat service asked the bot to pause for {wait}.)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_short_note_says_how_long_in_words() {
        let note = |s| cut_short_note(Duration::from_secs(s));
        assert!(note(90).contains("pause for 90 seconds"));
        assert!(note(601).contains("pause for 11 minutes"));
        assert!(note(13_938).contains("pause for 3 hours 52 minutes"));
    }
}
