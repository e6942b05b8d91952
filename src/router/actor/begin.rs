//! How a turn begins: its messages' box (waiting out an engine that is down), its record,
//! stored before the box is given the turn, and its attachments in the box's workspace.
//!
//! A message handed to an idle actor before it is stored (see `Router::accept`) is stored
//! by the actor together with the turn it begins, in one commit, so a message to a warm box
//! waits for one flush, not two, before the box has it. What is stored, and when the
//! platform is told, is exactly as on the router's path: the message is durable before the
//! accept returns, and the turn is durable before the box is given it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use clawpen_adapters::reply::ReplyState;
use clawpen_adapters::{Inbound, MessageRef};
use clawpen_protocol::{ToAgent, TurnMessage, TurnOptions};

use super::{Actor, EngineWait, Handoff, Turn};
use crate::metrics::TurnFailure;
use crate::router::delivery::Outbox;
use crate::router::turn::{self, now_secs, turn_id, turn_message, FileError};
use crate::sandbox::SandboxError;
use crate::schedule::occurrence::{self, Occurrence};
use crate::store::{InboundState, InsertOutcome, StoreError, TurnRecord};

/// The largest attachment saved into a workspace.
const MAX_ATTACHMENT: u64 = 20 << 20;

/// How long messages wait for an unreachable engine before they fail.
const ENGINE_WAIT: Duration = Duration::from_secs(600);

/// The first wait before trying an unreachable engine again; it doubles with each try.
const ENGINE_RETRY: Duration = Duration::from_millis(500);

/// The longest wait between two tries of an unreachable engine.
const ENGINE_RETRY_MAX: Duration = Duration::from_secs(15);

impl Actor {
    /// The engine is out of reach: tell the user once, in plain words, and try again later,
    /// up to [`ENGINE_WAIT`]. False once that is over (the messages then fail).
    async fn wait_for_engine(&mut self, messages: &[Inbound]) -> bool {
        let now = self.now();
        let first = self.engine_wait.is_none();
        let wait = self.engine_wait.get_or_insert(EngineWait {
            since: now,
            tries: 0,
        });
        if now.duration_since(wait.since) >= ENGINE_WAIT {
            self.engine_wait = None;
            return false;
        }
        wait.tries += 1;
        let pause = ENGINE_RETRY
            .saturating_mul(2u32.saturating_pow(wait.tries - 1))
            .min(ENGINE_RETRY_MAX);
        self.retry_turn_at = Some(now + pause);
        if first {
            tracing::warn!(conversation = %self.key, "the sandbox engine is not answering; the message waits for it");
            let reply_to = messages.last().map(|m| MessageRef(m.id.clone()));
            if let Some(outbox) = self.outbox() {
                outbox.notice(
                    ReplyState::new(reply_to),
                    "⏳ The sandbox is not answering right now. Your message is kept and will \
                     run as soon as it is back.",
                );
            }
        }
        true
    }

    pub(super) async fn start_turn(&mut self) {
        // A job's run is a turn of its own: the queue is taken up to the first job, or
        // that job alone. A reminder needs no box: delivered as it is.
        let split = match self
            .queue
            .iter()
            .position(|m| occurrence::kind_of(m) == Some(Occurrence::Job))
        {
            Some(0) => 1,
            Some(n) => n,
            None => self.queue.len(),
        };
        let queued = self.queue.drain(..split).collect();
        let messages = self.deliver_reminders(queued).await;
        if messages.is_empty() {
            return;
        }
        if let Err(e) = self.ensure_session().await {
            if e.engine_down() && self.wait_for_engine(&messages).await {
                self.queue.extend(messages);
                return;
            }
            tracing::warn!(conversation = %self.key, error = %e, "no box for the turn");
            let text = match &e {
                _ if e.engine_down() => format!(
                    "⚠️ The sandbox did not come back within {} minutes, so this message was \
                     not run. Please send it again later.",
                    ENGINE_WAIT.as_secs() / 60
                ),
                SandboxError::Protocol(_) if self.shared.shutdown.is_cancelled() => {
                    // Shutting down: keep the messages stored as pending for the next start.
                    return;
                }
                SandboxError::Engine { message, .. } => format!(
                    "⚠️ The sandbox refused to start this conversation's box, so this message \
                     was not run: {message}"
                ),
                other => format!("⚠️ Could not start this conversation's box: {other}"),
            };
            self.fail_messages(&messages, &text).await;
            return;
        }
        if let Some(wait) = self.engine_wait.take() {
            tracing::info!(conversation = %self.key, tries = wait.tries, "the sandbox engine answers again");
        }
        // Scheduled jobs with a check run it first; the model is woken only if it passes.
        let messages = self.run_checks(messages).await;
        if messages.is_empty() {
            return;
        }
        // Chatter since the last turn goes first, as context; it is done with this turn.
        let context: Vec<Inbound> = self.context.drain(..).collect();
        let Some(record) = self.new_turn(&context, &messages) else {
            return;
        };
        let Some(outbox) = self.outbox() else {
            tracing::error!(conversation = %self.key, "no adapter for this platform; dropping the turn");
            return;
        };
        let (begun, ids) = (record.clone(), record.inbound.clone());
        if let Err(e) = self
            .shared
            .store
            .commit(move |s| s.begin_turn_unflushed(&begun, &ids))
            .await
        {
            // Stored messages stay pending; they start a turn once the store writes again.
            tracing::debug!(conversation = %self.key, error = %e, "the turn could not be stored");
            self.turn_not_stored(context, messages);
            return;
        }
        self.store_ok();
        self.launch_turn(record, &context, &messages, &outbox).await;
    }

    /// The record of a new turn answering `messages` after `context`, in the attached box.
    fn new_turn(&self, context: &[Inbound], messages: &[Inbound]) -> Option<TurnRecord> {
        let last = messages.last()?;
        let counter = self.shared.turn_counter.fetch_add(1, Ordering::Relaxed);
        let session = self.session.as_ref();
        let mut record = TurnRecord::new(
            self.key.clone(),
            turn_id(counter),
            session
                .map(|s| s.conn.container.clone())
                .unwrap_or_default(),
            session.and_then(|s| s.seq.acked()).unwrap_or(0),
            // A scheduled run answers no platform message.
            Some(MessageRef(last.id.clone())).filter(|_| occurrence::kind_of(last).is_none()),
            now_secs(),
        );
        record.heading = occurrence::reply_heading(messages);
        record.inbound = context
            .iter()
            .chain(messages)
            .map(|m| m.id.clone())
            .collect();
        Some(record)
    }

    /// A new turn could not be stored: its messages wait, and are tried again after the
    /// store's backoff.
    fn turn_not_stored(&mut self, context: Vec<Inbound>, messages: Vec<Inbound>) {
        let wait = self.store_failed();
        self.retry_turn_at = Some(self.now() + wait);
        self.queue.extend(messages);
        self.context.extend(context);
    }

    /// Starts a turn whose record is durable: gives it to the box and its reply to the
    /// delivery.
    async fn launch_turn(
        &mut self,
        record: TurnRecord,
        context: &[Inbound],
        messages: &[Inbound],
        outbox: &Outbox,
    ) {
        let mut turn_messages: Vec<TurnMessage> = context.iter().map(turn_message).collect();
        for message in messages {
            let mut turn_message = turn_message(message);
            turn_message.attachments = self.save_attachments(message).await;
            turn_messages.push(turn_message);
        }
        let request = ToAgent::Turn {
            turn: record.turn.to_string(),
            messages: turn_messages.clone(),
            options: self.turn_options(),
        };
        // A job's answer is marked as a scheduled run of its task.
        outbox.begin_headed(
            Some(record.turn.clone()),
            ReplyState::new(record.reply_to.clone()),
            &record.heading,
        );
        self.shared.metrics.turn_started(&self.key);
        let now = self.now();
        self.turn = Some(Turn::new(record, turn_messages, now, self.typing_start()));
        self.send_to_box(&request).await;
    }

    /// Put a message's attachments into the box's workspace (`inbox/`), returning their
    /// paths; a file that cannot be fetched or is too large is named in a note instead.
    async fn save_attachments(&self, message: &Inbound) -> Vec<String> {
        let (Some(adapter), Some(session)) =
            (self.shared.adapter(&self.key), self.session.as_ref())
        else {
            return Vec::new();
        };
        let mut saved = Vec::new();
        for attachment in &message.attachments {
            let name = turn::safe_file_name(&attachment.name);
            let path = format!("inbox/{}-{name}", turn::safe_file_name(&message.id));
            let result: Result<(), FileError> =
                match adapter.fetch_attachment(attachment, MAX_ATTACHMENT).await {
                    Ok(data) => self
                        .shared
                        .sandbox
                        .write_workspace_file(&session.conn.container, &path, &data)
                        .await
                        .map_err(FileError::from),
                    Err(e) => Err(e.into()),
                };
            match result {
                Ok(()) => saved.push(path),
                Err(e) => {
                    tracing::warn!(conversation = %self.key, file = %attachment.name, error = %e, "attachment not saved");
                    saved.push(format!("(not saved: {} — {e})", attachment.name));
                }
            }
        }
        saved
    }

    /// The conversation's per-turn choices: its own model, if the operator set one. (The
    /// box's environment carries it too, as the default of turns the agent begins itself.)
    pub(super) fn turn_options(&self) -> TurnOptions {
        TurnOptions {
            model: self
                .shared
                .config
                .models
                .get(&self.key.to_string())
                .cloned(),
        }
    }

    /// Answer messages that could not reach a box with an error, and mark them done.
    async fn fail_messages(&mut self, messages: &[Inbound], text: &str) {
        let reply_to = messages.last().map(|m| MessageRef(m.id.clone()));
        self.shared.metrics.turn_failed(TurnFailure::NoBox);
        if let Some(outbox) = self.outbox() {
            outbox.notice(ReplyState::new(reply_to), text);
        }
        for message in messages {
            let _ = self
                .shared
                .store
                .set_inbound_state(&self.key, &message.id, InboundState::Done);
        }
    }

    /// Whether a message arriving now would begin a turn at once: nothing runs or waits,
    /// the box is attached, nothing is being retried, and the bridge is not stopping.
    pub(super) fn ready_for_turn(&self) -> bool {
        self.turn.is_none()
            && self.queue.is_empty()
            && self.session.is_some()
            && self.retry_turn_at.is_none()
            && self.engine_wait.is_none()
            && self.store_failures == 0
            && !self.shared.shutdown.is_cancelled()
            && self.shared.adapter(&self.key).is_some()
    }

    /// Stores a message handed over by the router, answers how that went, and goes on
    /// with it as with any stored message. Still idle, it begins the message's turn in the
    /// same commit.
    pub(super) async fn on_accept(&mut self, message: Inbound, handoff: Handoff) {
        let Handoff { taken, done } = handoff;
        if taken.send(()).is_err() {
            // The router stopped waiting and stores the message itself.
            return;
        }
        self.last_activity = self.now();
        // A scheduled occurrence never comes this way (the router refuses its sender from a
        // platform); if one did, it takes the path that knows reminders and jobs.
        if !self.ready_for_turn() || occurrence::kind_of(&message).is_some() {
            let stored = message.clone();
            let outcome = self
                .shared
                .store
                .commit(move |s| s.log_inbound_unflushed(&stored))
                .await;
            let new = matches!(outcome, Ok(InsertOutcome::New));
            // Whether or not the router still listens, a message stored here is handled here.
            let _ = done.send(outcome);
            if new {
                self.on_inbound(message).await;
            }
            return;
        }
        let context: Vec<Inbound> = self.context.drain(..).collect();
        let messages = vec![message];
        let (Some(record), Some(outbox)) = (self.new_turn(&context, &messages), self.outbox())
        else {
            // Not reached: `ready_for_turn` saw an adapter, and there is a message.
            self.context.extend(context);
            let _ = done.send(Err(StoreError::Db("no turn for the message".into())));
            return;
        };
        let (stored, begun) = (messages[0].clone(), record.clone());
        let outcome = self
            .shared
            .store
            .commit(move |s| s.accept_into_turn_unflushed(&stored, &begun))
            .await;
        let new = matches!(outcome, Ok(InsertOutcome::New));
        // The router hears how it went: a redelivery it looks at itself, and a message
        // that could not be stored (nor its turn) the platform is told of, and sends again.
        let _ = done.send(outcome);
        if !new {
            self.context.extend(context);
            return;
        }
        self.store_ok();
        self.launch_turn(record, &context, &messages, &outbox).await;
    }
}
