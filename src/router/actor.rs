//! The actor of one conversation: its queue, its box and its running turn.
//!
//! Everything a conversation does happens in this one task, in order: messages start a
//! turn or become follow-ups of the running one, box events become reply edits, and every
//! step is persisted before the box's event is acknowledged.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clawpen_adapters::reply::ReplyState;
use clawpen_adapters::stream::ReplyStream;
use clawpen_adapters::{ConversationKey, Inbound, MessageRef};
use clawpen_protocol::{Event, EventBody, FromAgent, Request, ToAgent, TurnMessage, TurnOptions};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::{sleep_until, Instant};

use super::turn::{box_gone_message, error_text, now_secs, turn_id, turn_message};
use super::Shared;
use crate::sandbox::{BoxConn, BoxOutput, SandboxError};
use crate::store::{InboundState, TurnRecord};

/// Response parts not yet written to the box. When full, the request's task waits for the
/// box to take them: a slow box slows only its own responses.
const RESPONSE_CAPACITY: usize = 32;

/// How many finished turn ids an actor remembers.
const FINISHED_KEPT: usize = 16;

/// A command for an actor.
#[derive(Debug)]
pub(crate) enum Command {
    /// A stored, addressed message.
    Inbound(Box<Inbound>),
    /// End the running turn.
    Cancel,
}

/// How an actor begins.
#[derive(Debug, Default)]
pub(crate) struct Start {
    /// Stored messages not yet given to a box.
    pub queue: Vec<Inbound>,
    /// A turn interrupted by a bridge restart, to resume.
    pub resume: Option<TurnRecord>,
    /// The conversation's box runs already (left by the previous bridge).
    pub adopt: bool,
}

/// The attached box.
struct Session {
    conn: BoxConn,
    /// The live-box slot this box occupies; released when the session drops.
    _permit: OwnedSemaphorePermit,
    /// The highest event sequence number processed and acknowledged.
    acked: u64,
    /// Set when attaching to a turn interrupted by a restart: the agent's answer to
    /// `Resume` then tells whether it ever received that turn.
    resync: bool,
}

/// The running turn.
struct Turn {
    record: TurnRecord,
    messages: Vec<TurnMessage>,
    reply: ReplyStream,
    /// The last sign of life from the box (event or heartbeat), for stall detection.
    last_sign: Instant,
    /// When to renew the typing indicator.
    next_typing: Option<Instant>,
    /// Set when the bridge killed the box for stalling, to explain the failure.
    stalled: Option<Duration>,
}

pub(crate) struct Actor {
    key: ConversationKey,
    shared: Arc<Shared>,
    mailbox: mpsc::Receiver<Command>,
    session: Option<Session>,
    turn: Option<Turn>,
    queue: VecDeque<Inbound>,
    /// Recently finished turns, so late events of theirs never open a new reply.
    finished: VecDeque<String>,
    last_activity: Instant,
}

/// What the actor's select loop woke up for.
enum Wake {
    Command(Option<Command>),
    Output(BoxOutput),
    ReplyDue,
    Typing,
    Stall,
    Idle,
    Shutdown,
}

impl Actor {
    pub(crate) fn new(
        key: ConversationKey,
        shared: Arc<Shared>,
        mailbox: mpsc::Receiver<Command>,
    ) -> Self {
        Self {
            key,
            shared,
            mailbox,
            session: None,
            turn: None,
            queue: VecDeque::new(),
            finished: VecDeque::new(),
            last_activity: Instant::now(),
        }
    }

    pub(crate) async fn run(mut self, start: Start) {
        self.queue.extend(start.queue);
        if let Some(record) = start.resume {
            self.resume(record).await;
        } else if start.adopt {
            if let Err(e) = self.ensure_session().await {
                tracing::warn!(conversation = %self.key, error = %e, "could not re-adopt the box");
            }
        }
        loop {
            let shutting_down = self.shared.shutdown.is_cancelled();
            if self.turn.is_none() && !self.queue.is_empty() && !shutting_down {
                self.start_turn().await;
                continue;
            }
            self.publish_status();
            // Retire when there is nothing to hold on to; stored messages stay pending.
            let nothing_held = self.session.is_none() && self.queue.is_empty();
            if self.turn.is_none()
                && (shutting_down || nothing_held)
                && self.shared.try_retire(&self.key, &self.mailbox)
            {
                break;
            }
            match self.wait().await {
                Wake::Command(Some(Command::Inbound(message))) => self.on_inbound(*message).await,
                Wake::Command(Some(Command::Cancel)) => self.cancel().await,
                Wake::Command(None) => break,
                Wake::Output(output) => self.on_output(output).await,
                Wake::ReplyDue => self.pump().await,
                Wake::Typing => self.typing().await,
                Wake::Stall => self.stalled().await,
                Wake::Idle => self.idle_stop().await,
                Wake::Shutdown => {}
            }
        }
        tracing::debug!(conversation = %self.key, "actor stopped");
    }

    async fn wait(&mut self) -> Wake {
        let far = Instant::now() + Duration::from_secs(86_400);
        let reply_due = self.turn.as_ref().and_then(|t| t.reply.next_due());
        let typing_due = self.turn.as_ref().and_then(|t| t.next_typing);
        let stall_due = self
            .turn
            .as_ref()
            .map(|t| t.last_sign + self.shared.config.turn_stall);
        let idle_due = (self.turn.is_none() && self.session.is_some())
            .then(|| self.last_activity + self.shared.config.idle_timeout);
        let shutdown = self.shared.shutdown.clone();
        let watch_shutdown = self.turn.is_none() && !shutdown.is_cancelled();
        let session = self.session.as_mut();
        tokio::select! {
            command = self.mailbox.recv() => Wake::Command(command),
            output = recv_output(session) => Wake::Output(output),
            _ = sleep_until(reply_due.unwrap_or(far)), if reply_due.is_some() => Wake::ReplyDue,
            _ = sleep_until(typing_due.unwrap_or(far)), if typing_due.is_some() => Wake::Typing,
            _ = sleep_until(stall_due.unwrap_or(far)), if stall_due.is_some() => Wake::Stall,
            _ = sleep_until(idle_due.unwrap_or(far)), if idle_due.is_some() => Wake::Idle,
            _ = shutdown.cancelled(), if watch_shutdown => Wake::Shutdown,
        }
    }

    fn publish_status(&self) {
        let container = self.session.as_ref().map(|s| s.conn.container.as_str());
        let state = match (&self.turn, &self.session) {
            (Some(_), _) => "running a turn",
            (None, Some(_)) => "idle",
            (None, None) if self.queue.is_empty() => "stopped",
            (None, None) => "waiting for a box",
        };
        self.shared
            .set_status(&self.key, container, state, self.queue.len());
    }

    /// Attach a box to this conversation: wait for a slot, start it, attach, resume.
    async fn ensure_session(&mut self) -> Result<(), SandboxError> {
        if self.session.is_some() {
            return Ok(());
        }
        self.shared
            .set_status(&self.key, None, "waiting for a box slot", self.queue.len());
        let permit = tokio::select! {
            permit = self.shared.slots.clone().acquire_owned() => permit
                .map_err(|_| SandboxError::Protocol("the box slots are closed".into()))?,
            _ = self.shared.shutdown.cancelled() => {
                return Err(SandboxError::Protocol("shutting down".into()));
            }
        };
        let started = self.shared.sandbox.ensure_box(&self.key).await?;
        let mut conn = self.shared.sandbox.attach(&started.container).await?;
        // After a fresh start nothing was acknowledged; after a re-adopt, the agent replays
        // what it still holds and events of turns we no longer know are skipped.
        conn.send(&ToAgent::Resume {
            version: clawpen_protocol::VERSION,
            after: 0,
        })
        .await?;
        tracing::debug!(conversation = %self.key, r#box = %started.container, fresh = started.fresh, "box attached");
        self.session = Some(Session {
            conn,
            _permit: permit,
            acked: 0,
            resync: false,
        });
        self.last_activity = Instant::now();
        Ok(())
    }

    async fn send_to_box(&mut self, message: &ToAgent) -> bool {
        let Some(session) = self.session.as_mut() else {
            return false;
        };
        match session.conn.send(message).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(conversation = %self.key, error = %e, "writing to the box failed");
                self.box_gone().await;
                false
            }
        }
    }

    fn new_reply(&self, state: ReplyState) -> Option<ReplyStream> {
        let adapter = self.shared.adapter(&self.key)?;
        Some(ReplyStream::new(adapter, self.key.clone(), state))
    }

    fn typing_start(&self) -> Option<Instant> {
        self.shared
            .adapter(&self.key)?
            .capabilities()
            .typing_interval
            .map(|_| Instant::now())
    }

    async fn start_turn(&mut self) {
        let messages: Vec<Inbound> = self.queue.drain(..).collect();
        if let Err(e) = self.ensure_session().await {
            tracing::warn!(conversation = %self.key, error = %e, "no box for the turn");
            let text = match &e {
                SandboxError::Protocol(_) if self.shared.shutdown.is_cancelled() => {
                    // Shutting down: keep the messages stored as pending for the next start.
                    return;
                }
                other => format!("⚠️ Could not start this conversation's box: {other}"),
            };
            self.fail_messages(&messages, &text).await;
            return;
        }
        let Some(last) = messages.last() else { return };
        let counter = self.shared.turn_counter.fetch_add(1, Ordering::Relaxed);
        let record = TurnRecord {
            conversation: self.key.clone(),
            turn: turn_id(counter),
            container: self
                .session
                .as_ref()
                .map(|s| s.conn.container.clone())
                .unwrap_or_default(),
            last_acked: self.session.as_ref().map(|s| s.acked).unwrap_or(0),
            inbound: messages.iter().map(|m| m.id.clone()).collect(),
            reply: ReplyState::new(Some(MessageRef(last.id.clone()))),
            started_at: now_secs(),
        };
        let Some(reply) = self.new_reply(record.reply.clone()) else {
            tracing::error!(conversation = %self.key, "no adapter for this platform; dropping the turn");
            return;
        };
        if let Err(e) = self.shared.store.put_turn(&record) {
            tracing::error!(conversation = %self.key, error = %e, "could not persist the turn; messages stay pending");
            self.queue.extend(messages);
            return;
        }
        for message in &messages {
            let state = InboundState::InTurn {
                turn: record.turn.clone(),
            };
            if let Err(e) = self
                .shared
                .store
                .set_inbound_state(&self.key, &message.id, state)
            {
                tracing::warn!(conversation = %self.key, error = %e, "could not mark a message in-turn");
            }
        }
        let turn_messages: Vec<TurnMessage> = messages.iter().map(turn_message).collect();
        let request = ToAgent::Turn {
            turn: record.turn.clone(),
            messages: turn_messages.clone(),
            options: self.turn_options(),
        };
        self.turn = Some(Turn {
            record,
            messages: turn_messages,
            reply,
            last_sign: Instant::now(),
            next_typing: self.typing_start(),
            stalled: None,
        });
        self.send_to_box(&request).await;
    }

    /// The conversation's per-turn choices (its model override).
    fn turn_options(&self) -> TurnOptions {
        let model = self
            .shared
            .store
            .conversation(&self.key)
            .ok()
            .flatten()
            .and_then(|c| c.model);
        TurnOptions { model }
    }

    /// Answer messages that could not reach a box with an error, and mark them done.
    async fn fail_messages(&mut self, messages: &[Inbound], text: &str) {
        let reply_to = messages.last().map(|m| MessageRef(m.id.clone()));
        if let Some(mut reply) = self.new_reply(ReplyState::new(reply_to)) {
            reply.push(text);
            if let Err(e) = reply.finish().await {
                tracing::warn!(conversation = %self.key, error = %e, "could not deliver an error reply");
            }
        }
        for message in messages {
            let _ = self
                .shared
                .store
                .set_inbound_state(&self.key, &message.id, InboundState::Done);
        }
    }

    async fn resume(&mut self, record: TurnRecord) {
        let alive = matches!(self.shared.sandbox.inspect(&record.container).await, Ok(Some(exit)) if exit.running);
        let Some(reply) = self.new_reply(record.reply.clone()) else {
            return;
        };
        let messages: Vec<TurnMessage> = self
            .shared
            .store
            .pending_inbound(&self.key)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| matches!(&s.state, InboundState::InTurn { turn } if *turn == record.turn))
            .map(|s| turn_message(&s.inbound))
            .collect();
        let acked = record.last_acked;
        self.turn = Some(Turn {
            record,
            messages,
            reply,
            last_sign: Instant::now(),
            next_typing: self.typing_start(),
            stalled: None,
        });
        if !alive {
            self.box_gone().await;
            return;
        }
        let container = self
            .turn
            .as_ref()
            .map(|t| t.record.container.clone())
            .unwrap_or_default();
        let permit = match self.shared.slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => return,
        };
        match self.shared.sandbox.attach(&container).await {
            Ok(mut conn) => {
                let resume = ToAgent::Resume {
                    version: clawpen_protocol::VERSION,
                    after: acked,
                };
                if conn.send(&resume).await.is_ok() {
                    tracing::info!(conversation = %self.key, r#box = %container, after = acked, "resuming the interrupted turn");
                    self.session = Some(Session {
                        conn,
                        _permit: permit,
                        acked,
                        resync: true,
                    });
                    return;
                }
                self.box_gone().await;
            }
            Err(e) => {
                tracing::warn!(conversation = %self.key, error = %e, "could not re-attach for the interrupted turn");
                self.box_gone().await;
            }
        }
    }

    async fn on_inbound(&mut self, message: Inbound) {
        self.last_activity = Instant::now();
        let Some(turn) = self.turn.as_mut() else {
            self.queue.push_back(message);
            return;
        };
        // A follow-up: straight to the running agent, in order.
        turn.record.inbound.push(message.id.clone());
        let follow = turn_message(&message);
        turn.messages.push(follow.clone());
        let turn_id = turn.record.turn.clone();
        let state = InboundState::InTurn {
            turn: turn_id.clone(),
        };
        if let Err(e) = self
            .shared
            .store
            .set_inbound_state(&self.key, &message.id, state)
        {
            tracing::warn!(conversation = %self.key, error = %e, "could not mark a follow-up in-turn");
        }
        if let Err(e) = self.shared.store.put_turn(&turn.record) {
            tracing::warn!(conversation = %self.key, error = %e, "could not persist the turn");
        }
        self.send_to_box(&ToAgent::FollowUp {
            turn: turn_id,
            messages: vec![follow],
        })
        .await;
    }

    async fn cancel(&mut self) {
        if let Some(turn) = &self.turn {
            let request = ToAgent::Cancel {
                turn: turn.record.turn.clone(),
            };
            self.send_to_box(&request).await;
        }
    }

    async fn on_output(&mut self, output: BoxOutput) {
        self.last_activity = Instant::now();
        if let Some(turn) = self.turn.as_mut() {
            turn.last_sign = Instant::now();
        }
        match output {
            BoxOutput::Message(FromAgent::Event(event)) => self.on_event(event).await,
            BoxOutput::Message(FromAgent::State {
                running,
                finished,
                last_seq,
            }) => {
                let mut resync = false;
                if let Some(session) = self.session.as_mut() {
                    // Replayed events came before this line; anything else up to last_seq
                    // was acknowledged by an earlier bridge.
                    session.acked = session.acked.max(last_seq);
                    resync = std::mem::take(&mut session.resync);
                }
                let options = self.turn_options();
                let resend = self.turn.as_ref().filter(|_| resync).and_then(|t| {
                    let known = running.as_deref() == Some(t.record.turn.as_str())
                        || finished.contains(&t.record.turn);
                    (!known).then(|| ToAgent::Turn {
                        turn: t.record.turn.clone(),
                        messages: t.messages.clone(),
                        options,
                    })
                });
                if let Some(request) = resend {
                    tracing::info!(conversation = %self.key, "the box does not know the running turn; sending it again");
                    self.send_to_box(&request).await;
                }
            }
            BoxOutput::Message(FromAgent::Ready { version, provider }) => {
                tracing::debug!(conversation = %self.key, version, provider, "agent ready");
            }
            BoxOutput::Message(FromAgent::Heartbeat) => {}
            BoxOutput::Message(FromAgent::Request { id, request }) => self.on_request(id, request),
            BoxOutput::Message(FromAgent::Rejected { reason }) => {
                tracing::warn!(conversation = %self.key, reason, "the agent rejected a line from the bridge");
            }
            BoxOutput::Malformed(reason) => {
                tracing::warn!(conversation = %self.key, reason, "malformed line from the box");
                self.send_to_box(&ToAgent::Rejected { reason }).await;
            }
            BoxOutput::Closed => self.box_gone().await,
        }
    }

    /// Perform a box's request in its own task, streaming the response back to the box,
    /// so a long model response never holds up the conversation.
    fn on_request(&mut self, id: u64, request: Request) {
        let Some(session) = self.session.as_ref() else {
            return;
        };
        let input = session.conn.input();
        let (tunnel, key) = (self.shared.tunnel.clone(), self.key.clone());
        self.shared.tracker.spawn(async move {
            let (parts, mut rx) = mpsc::channel(RESPONSE_CAPACITY);
            let perform = tunnel.perform(&key, request, parts);
            let forward = async {
                while let Some(part) = rx.recv().await {
                    if input.send(&ToAgent::Response { id, part }).await.is_err() {
                        break;
                    }
                }
            };
            tokio::join!(perform, forward);
        });
    }

    async fn on_event(&mut self, event: Event) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if event.seq <= session.acked {
            return; // a replay of something already processed
        }
        session.acked = event.seq;
        if self.turn.is_none()
            && !self.finished.contains(&event.turn)
            && !matches!(event.body, EventBody::Final)
        {
            // The agent began a turn of its own: follow-ups that reached it just after it
            // finished the last turn are answered in a new reply.
            self.agent_turn(&event.turn).await;
        }
        let mut finished = false;
        if let Some(turn) = self.turn.as_mut().filter(|t| t.record.turn == event.turn) {
            match event.body {
                EventBody::TextDelta { text } => {
                    turn.reply.push(&text);
                    if let Err(e) = turn.reply.pump().await {
                        tracing::warn!(conversation = %self.key, error = %e, "delivering reply text failed");
                    }
                }
                EventBody::Status { text } => {
                    if let Some(adapter) = self.shared.adapter(&self.key) {
                        let _ = adapter.status(&self.key, &text).await;
                    }
                }
                EventBody::Message { text } => {
                    if let Some(adapter) = self.shared.adapter(&self.key) {
                        let mut message =
                            ReplyStream::new(adapter, self.key.clone(), ReplyState::new(None));
                        message.push(&text);
                        if let Err(e) = message.deliver().await {
                            tracing::warn!(conversation = %self.key, error = %e, "sending the agent's message failed");
                        }
                    }
                }
                EventBody::File { path } => {
                    let container = turn.record.container.clone();
                    if let Err(e) = upload_file(&self.shared, &self.key, &container, &path).await {
                        tracing::warn!(conversation = %self.key, path, error = %e, "uploading the agent's file failed");
                        let note = error_text(
                            &turn.reply.state().text,
                            &format!("Could not send the file {path}: {e}"),
                        );
                        turn.reply.push(&note);
                    }
                }
                EventBody::Error { message } => {
                    let text = error_text(&turn.reply.state().text, &message);
                    turn.reply.push(&text);
                }
                EventBody::Final => finished = true,
            }
            turn.record.last_acked = event.seq;
            turn.record.reply = turn.reply.state().clone();
            if finished {
                self.finish_turn().await;
            } else if let Err(e) = self.shared.store.put_turn(&turn.record) {
                tracing::error!(conversation = %self.key, error = %e, "could not persist reply progress; not acknowledging");
                return;
            }
        }
        self.send_to_box(&ToAgent::Ack { seq: event.seq }).await;
    }

    /// Track a turn the agent started without a `Turn` request from us.
    async fn agent_turn(&mut self, id: &str) {
        let Some(session) = self.session.as_ref() else {
            return;
        };
        let record = TurnRecord {
            conversation: self.key.clone(),
            turn: id.to_string(),
            container: session.conn.container.clone(),
            last_acked: session.acked,
            inbound: Vec::new(),
            reply: ReplyState::new(None),
            started_at: now_secs(),
        };
        let Some(reply) = self.new_reply(record.reply.clone()) else {
            return;
        };
        if let Err(e) = self.shared.store.put_turn(&record) {
            tracing::warn!(conversation = %self.key, error = %e, "could not persist the agent's turn");
        }
        tracing::debug!(conversation = %self.key, turn = id, "the agent started a turn");
        self.turn = Some(Turn {
            record,
            messages: Vec::new(),
            reply,
            last_sign: Instant::now(),
            next_typing: self.typing_start(),
            stalled: None,
        });
    }

    /// Deliver the rest of the reply, then forget the turn (inbound marked done).
    async fn finish_turn(&mut self) {
        let Some(mut turn) = self.turn.take() else {
            return;
        };
        if self.finished.len() >= FINISHED_KEPT {
            self.finished.pop_front();
        }
        self.finished.push_back(turn.record.turn.clone());
        if turn.reply.state().text.trim().is_empty() {
            turn.reply.push("(the agent finished without a reply)");
        }
        if let Err(e) = turn.reply.finish().await {
            tracing::warn!(conversation = %self.key, error = %e, "delivering the end of the reply failed");
        }
        if let Err(e) = self.shared.store.finish_turn(&self.key) {
            tracing::error!(conversation = %self.key, error = %e, "could not record the finished turn");
        }
        self.last_activity = Instant::now();
    }

    async fn pump(&mut self) {
        if let Some(turn) = self.turn.as_mut() {
            if let Err(e) = turn.reply.pump().await {
                tracing::warn!(conversation = %self.key, error = %e, "delivering reply text failed");
            }
            turn.record.reply = turn.reply.state().clone();
            let _ = self.shared.store.put_turn(&turn.record);
        }
    }

    async fn typing(&mut self) {
        let Some(adapter) = self.shared.adapter(&self.key) else {
            return;
        };
        let interval = adapter.capabilities().typing_interval;
        if let Some(turn) = self.turn.as_mut() {
            turn.next_typing = interval.map(|i| Instant::now() + i);
        }
        if let Err(e) = adapter.typing(&self.key).await {
            tracing::debug!(conversation = %self.key, error = %e, "typing indicator failed");
        }
    }

    async fn stalled(&mut self) {
        let after = self.shared.config.turn_stall;
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        turn.stalled = Some(after);
        tracing::warn!(conversation = %self.key, after = ?after, "the box stalled mid-turn; killing it");
        let container = turn.record.container.clone();
        if let Err(e) = self.shared.sandbox.kill(&container).await {
            tracing::warn!(conversation = %self.key, error = %e, "could not kill the stalled box");
        }
        self.box_gone().await;
    }

    /// The box went away: end the running turn with a clear error; the next message
    /// starts the box again (same workspace).
    async fn box_gone(&mut self) {
        let session = self.session.take();
        let container = session
            .as_ref()
            .map(|s| s.conn.container.clone())
            .or_else(|| self.turn.as_ref().map(|t| t.record.container.clone()));
        drop(session);
        let Some(turn) = self.turn.as_mut() else {
            tracing::debug!(conversation = %self.key, "box detached while idle");
            return;
        };
        let exit = match &container {
            Some(c) => self.shared.sandbox.inspect(c).await.ok().flatten(),
            None => None,
        };
        if exit.as_ref().is_some_and(|e| e.running) {
            // The attach broke but the box runs: stop it so the next turn starts clean.
            if let Some(c) = &container {
                let _ = self.shared.sandbox.kill(c).await;
            }
        }
        let message = box_gone_message(exit.as_ref(), turn.stalled);
        tracing::warn!(conversation = %self.key, r#box = ?container, message, "turn ended by the box going away");
        let text = error_text(&turn.reply.state().text, &message);
        turn.reply.push(&text);
        self.finish_turn().await;
    }

    async fn idle_stop(&mut self) {
        if let Some(session) = self.session.take() {
            let container = session.conn.container.clone();
            drop(session);
            tracing::info!(conversation = %self.key, r#box = %container, "stopping idle box");
            if let Err(e) = self.shared.sandbox.stop(&container).await {
                tracing::warn!(conversation = %self.key, error = %e, "could not stop the idle box");
            }
        }
    }
}

/// Read a file the agent named from its workspace and upload it to the chat.
async fn upload_file(
    shared: &Shared,
    key: &ConversationKey,
    container: &str,
    path: &str,
) -> Result<(), String> {
    let adapter = shared.adapter(key).ok_or("no adapter")?;
    let data = shared
        .sandbox
        .read_workspace_file(container, path)
        .await
        .map_err(|e| e.to_string())?;
    let name = std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    adapter
        .upload(key, &clawpen_adapters::Upload { name, data })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn recv_output(session: Option<&mut Session>) -> BoxOutput {
    match session {
        Some(session) => session
            .conn
            .output
            .recv()
            .await
            .unwrap_or(BoxOutput::Closed),
        None => std::future::pending().await,
    }
}
