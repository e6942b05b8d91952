//! The actor of one conversation: its queue, its box and its running turn.
//!
//! Everything a conversation does happens in this one task, in order: messages start a
//! turn or become follow-ups of the running one, box events become reply edits, and every
//! step is persisted before the box's event is acknowledged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clawpen_adapters::reply::ReplyState;
use clawpen_adapters::{ConversationKey, Inbound};
use clawpen_domain::TurnId;
use clawpen_protocol::{ToAgent, TurnMessage};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

mod begin;
mod boxes;
mod caps;
mod events;
mod noise;
mod progress;
mod requests;
mod scheduled;
mod sequence;
mod warm;

use progress::Progress;
use requests::Requests;
use sequence::Sequencer;

use super::delivery::{self, Outbox};
use super::mailbox::Retire;
use super::turn::{turn_message, Stopped};
use super::{ConversationState, Shared};
use crate::sandbox::{BoxConn, BoxOutput};
use crate::schedule::occurrence::{self, Occurrence};
use crate::store::{DeliveryRecord, InboundState, InsertOutcome, Pending, StoreError, TurnRecord};

/// How many unaddressed messages are kept as context for the next turn.
const CONTEXT_KEPT: usize = 50;

/// The first wait after a store write failed; it doubles with each further failure.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// The longest wait between two tries of a store write.
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

/// How many finished turn ids an actor remembers.
const FINISHED_KEPT: usize = 16;

/// A command for an actor.
#[derive(Debug)]
pub(crate) enum Command {
    /// A stored, addressed message.
    Inbound(Box<Inbound>),
    /// A stored message the bot was not addressed in: context for the next turn.
    Context(Box<Inbound>),
    /// End the running turn.
    Cancel,
    /// An addressed message not stored yet, handed over because this actor was idle with
    /// its box attached: store it (beginning its turn in the same commit when still idle)
    /// and say how that went.
    Accept(Box<Inbound>, Handoff),
}

/// The router's side of a [`Command::Accept`]: the actor says at once that it took the
/// message (the router stops waiting for that after a while, and stores the message
/// itself), then how storing it went.
#[derive(Debug)]
pub(crate) struct Handoff {
    taken: oneshot::Sender<()>,
    done: oneshot::Sender<Result<InsertOutcome, StoreError>>,
}

impl Handoff {
    /// A handoff, with the receivers of "taken" and of the outcome.
    pub(crate) fn new() -> (
        Self,
        oneshot::Receiver<()>,
        oneshot::Receiver<Result<InsertOutcome, StoreError>>,
    ) {
        let (taken, taken_rx) = oneshot::channel();
        let (done, done_rx) = oneshot::channel();
        (Self { taken, done }, taken_rx, done_rx)
    }
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
    /// Chatter to give the next turn as context.
    pub context: Vec<Inbound>,
    /// Finished turns whose replies a restart interrupted, to show in full.
    pub deliveries: Vec<DeliveryRecord>,
}

/// The attached box.
struct Session {
    conn: BoxConn,
    /// The live-box slot this box occupies; released when the session drops.
    _permit: OwnedSemaphorePermit,
    /// Which of the box's events to take: in order, once each, never past a gap.
    seq: Sequencer,
    /// When to ask the box to replay events that could not be stored.
    replay_at: Option<Instant>,
    /// Set when attaching to a turn interrupted by a restart: the agent's answer to
    /// `Resume` then tells whether it ever received that turn.
    resync: bool,
    /// The box's requests being performed, so that the box can pace or abort one and a
    /// box that goes away takes its requests with it.
    requests: Requests,
    /// Malformed lines from the box, logged one a minute and the rest counted.
    malformed: noise::Noise,
    /// `Resume`s sent and not yet answered by a `State`, for the log: a `State` beyond them
    /// answers a `Resume` of the bridge before a restart (or is a box's own invention).
    states_due: u32,
}

/// The running turn.
struct Turn {
    /// Its stored record (`last_acked` kept at what is stored; its text is in `progress`).
    record: TurnRecord,
    /// Its reply text, as shown and as stored.
    progress: Progress,
    /// The store write of the chunk `progress` is storing; the actor's loop waits for it
    /// beside everything else, and acknowledges the box's events once it is durable.
    commit: Option<Pending<()>>,
    messages: Vec<TurnMessage>,
    /// The last sign of life from the box (event or heartbeat), for stall detection.
    last_sign: Instant,
    /// When to renew the typing indicator.
    next_typing: Option<Instant>,
    /// When the turn began, for its cap on duration.
    started: Instant,
    /// When the user stopped it (`/stop`): its box then has [`caps::STOP_GRACE`] to end it.
    cancelled: Option<Instant>,
    /// What its output has cost past the reply's caps.
    overflow: caps::Overflow,
    /// Set when the bridge stopped the box (stalled, too long, flooding), to explain the
    /// failure.
    stopped: Option<Stopped>,
}

impl Turn {
    /// A turn from its record, whose text (if any) is stored.
    fn new(
        mut record: TurnRecord,
        messages: Vec<TurnMessage>,
        now: Instant,
        next_typing: Option<Instant>,
    ) -> Self {
        let progress = Progress::new(std::mem::take(&mut record.text), record.last_acked);
        Self {
            record,
            progress,
            commit: None,
            messages,
            last_sign: now,
            next_typing,
            started: now,
            cancelled: None,
            overflow: caps::Overflow::default(),
            stopped: None,
        }
    }
}

pub(crate) struct Actor {
    key: ConversationKey,
    shared: Arc<Shared>,
    mailbox: mpsc::Receiver<Command>,
    session: Option<Session>,
    turn: Option<Turn>,
    queue: VecDeque<Inbound>,
    /// Recent chatter the bot was not addressed in (bounded), given to the next turn.
    context: VecDeque<Inbound>,
    /// Recently finished turns, so late events of theirs never open a new reply.
    finished: VecDeque<TurnId>,
    /// The last finished turn and the last follow-up sent to it, which the agent answers
    /// in a turn of its own if the turn was over when the follow-up reached it.
    late_follow_up: Option<(TurnId, String)>,
    /// Whether the agent may begin a turn of its own: only to answer a follow-up that
    /// reached it after the last turn was over (or one a restart may have left owed), so a
    /// box cannot post to its chat unasked, nor keep itself busy with turns of its own.
    owed_turn: bool,
    last_activity: Instant,
    /// Hands replies to the conversation's delivery task, started on first use.
    outbox: Option<Arc<Outbox>>,
    /// Store writes failed in a row (a full or failing disk), for the backoff.
    store_failures: u32,
    /// A turn that could not be stored, or found no engine, is tried again no sooner than
    /// this.
    retry_turn_at: Option<Instant>,
    /// Set while the engine is out of reach and messages wait for it.
    engine_wait: Option<EngineWait>,
    /// Set while the actor waits with nothing to do and its box attached: the router then
    /// hands it addressed messages to store itself (see [`Command::Accept`]).
    idle: Arc<AtomicBool>,
}

/// Messages waiting for an unreachable engine.
struct EngineWait {
    /// When the wait began.
    since: Instant,
    /// Attempts so far.
    tries: u32,
}

/// The actor's timers; it sleeps until the earliest one due.
#[derive(Clone, Copy)]
enum Timer {
    Replay,
    RetryTurn,
    Typing,
    Stall,
    Idle,
}

impl Timer {
    /// What the actor woke up for when this timer was due.
    fn wake(self) -> Wake {
        match self {
            Timer::Replay => Wake::Replay,
            Timer::RetryTurn => Wake::RetryTurn,
            Timer::Typing => Wake::Typing,
            Timer::Stall => Wake::Stall,
            Timer::Idle => Wake::Idle,
        }
    }
}

/// What the actor's select loop woke up for.
enum Wake {
    Command(Option<Command>),
    Output(BoxOutput),
    Stored(Result<(), StoreError>),
    Replay,
    RetryTurn,
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
        idle: Arc<AtomicBool>,
    ) -> Self {
        let last_activity = shared.config.clock.now();
        Self {
            key,
            shared,
            mailbox,
            session: None,
            turn: None,
            queue: VecDeque::new(),
            context: VecDeque::new(),
            finished: VecDeque::new(),
            late_follow_up: None,
            owed_turn: true,
            last_activity,
            outbox: None,
            store_failures: 0,
            retry_turn_at: None,
            engine_wait: None,
            idle,
        }
    }

    /// The actor's life. Itself and its start are boxed: an async fn keeps its arguments
    /// for its whole run, and every conversation at rest holds this future.
    pub(crate) async fn run(mut self: Box<Self>, start: Box<Start>) {
        let start = *start;
        self.queue.extend(start.queue);
        for message in start.context {
            self.add_context(message);
        }
        for pending in start.deliveries {
            self.deliver_pending(pending);
        }
        if let Some(record) = start.resume {
            Box::pin(self.resume(record)).await;
        } else if start.adopt {
            if let Err(e) = Box::pin(self.ensure_session()).await {
                tracing::warn!(conversation = %self.key, error = %e, "could not re-adopt the box");
            }
        }
        loop {
            let shutting_down = self.shared.shutdown.is_cancelled();
            let turn_due = self.retry_turn_at.is_none_or(|at| at <= self.now());
            if self.turn.is_none() && !self.queue.is_empty() && !shutting_down && turn_due {
                self.retry_turn_at = None;
                Box::pin(self.start_turn()).await;
                continue;
            }
            self.publish_status();
            // Retire when there is nothing to hold on to; stored messages stay pending. Context
            // (chatter for the next turn) keeps the actor alive: it is stored, but the actor
            // is what keeps it bounded as more chatter arrives.
            let nothing_held =
                self.session.is_none() && self.queue.is_empty() && self.context.is_empty();
            if self.turn.is_none() && (shutting_down || nothing_held) {
                match self.shared.try_retire(&self.key, &mut self.mailbox) {
                    Retire::Gone => break,
                    Retire::Stay(left, mailbox) => {
                        self.mailbox = mailbox;
                        for command in left {
                            Box::pin(self.on_command(command)).await;
                        }
                        continue;
                    }
                }
            }
            self.idle.store(self.ready_for_turn(), Ordering::Release);
            let wake = self.wait().await;
            self.idle.store(false, Ordering::Release);
            // Each piece of work is boxed for as long as it runs: the actor's own future
            // then holds only what waiting needs, which is what every conversation at rest
            // keeps in memory (the largest piece would otherwise set its size for all).
            match wake {
                Wake::Command(Some(command)) => Box::pin(self.on_command(command)).await,
                Wake::Command(None) => break,
                Wake::Output(output) => Box::pin(self.on_output(output)).await,
                Wake::Stored(result) => Box::pin(self.on_stored(result)).await,
                Wake::Replay => Box::pin(self.replay_due()).await,
                Wake::RetryTurn => {}
                Wake::Typing => self.typing(),
                Wake::Stall => Box::pin(self.stalled()).await,
                Wake::Idle => Box::pin(self.idle_stop()).await,
                Wake::Shutdown => {}
            }
        }
        if let Some(outbox) = &self.outbox {
            // What it holds is still delivered; then it stops too.
            outbox.close();
        }
        tracing::debug!(conversation = %self.key, "actor stopped");
    }

    /// Counts a failed store write; returns how long to wait before the next try. Logged
    /// when a run of failures starts and then at every power of two, never per failure.
    fn store_failed(&mut self) -> Duration {
        self.store_failures = self.store_failures.saturating_add(1);
        let failures = self.store_failures;
        if failures.is_power_of_two() {
            tracing::warn!(conversation = %self.key, failures, "the store cannot write; this conversation waits and tries again");
        }
        STORE_RETRY
            .saturating_mul(2u32.saturating_pow(failures - 1))
            .min(STORE_RETRY_MAX)
    }

    /// A store write succeeded: a run of failures, if any, is over.
    fn store_ok(&mut self) {
        if self.store_failures > 0 {
            tracing::info!(conversation = %self.key, failures = self.store_failures, "the store writes again");
            self.store_failures = 0;
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Inbound(message) => self.on_inbound(*message).await,
            Command::Context(message) => self.add_context(*message),
            Command::Cancel => self.cancel().await,
            Command::Accept(message, done) => self.on_accept(*message, done).await,
        }
    }

    async fn wait(&mut self) -> Wake {
        // The actor's timers run on the router's clock (a manual one in tests).
        let clock = self.shared.config.clock.clone();
        let far = clock.now() + Duration::from_secs(86_400);
        let typing_due = self.turn.as_ref().and_then(|t| t.next_typing);
        // The stall timer, or the turn's cap on duration if that comes first: output keeps
        // the first away, never the second.
        let stall_due = self.turn.as_ref().map(|t| {
            let config = &self.shared.config;
            let due = (t.last_sign + config.turn_stall).min(t.started + config.max_turn);
            t.cancelled.map_or(due, |at| due.min(at + caps::STOP_GRACE))
        });
        let idle_due = (self.turn.is_none() && self.session.is_some())
            .then(|| self.last_activity + self.shared.config.idle_timeout);
        let replay_due = self.session.as_ref().and_then(|s| s.replay_at);
        // One timer, for the earliest of them (the first listed on a tie): an actor at
        // rest keeps one sleep, not five.
        let timer = [
            (replay_due, Timer::Replay),
            (self.retry_turn_at, Timer::RetryTurn),
            (typing_due, Timer::Typing),
            (stall_due, Timer::Stall),
            (idle_due, Timer::Idle),
        ]
        .into_iter()
        .filter_map(|(due, timer)| Some((due?, timer)))
        .min_by_key(|(due, _)| *due);
        let (due, due_timer) = timer.unwrap_or((far, Timer::Idle));
        let shutdown = self.shared.shutdown.clone();
        let watch_shutdown = self.turn.is_none() && !shutdown.is_cancelled();
        let session = self.session.as_mut();
        let commit = self.turn.as_mut().and_then(|t| t.commit.as_mut());
        tokio::select! {
            command = self.mailbox.recv() => Wake::Command(command),
            output = recv_output(session) => Wake::Output(output),
            stored = wait_commit(commit) => Wake::Stored(stored),
            _ = clock.sleep_until(due), if timer.is_some() => due_timer.wake(),
            _ = shutdown.cancelled(), if watch_shutdown => Wake::Shutdown,
        }
    }

    /// Now, on the router's clock: every deadline of the actor is computed from this.
    fn now(&self) -> Instant {
        self.shared.config.clock.now()
    }

    fn publish_status(&self) {
        let container = self.session.as_ref().map(|s| s.conn.container.as_str());
        let state = match (&self.turn, &self.session) {
            (Some(_), _) => ConversationState::RunningTurn,
            (None, Some(_)) => ConversationState::Idle,
            (None, None) if self.queue.is_empty() => ConversationState::Stopped,
            (None, None) => ConversationState::WaitingForBox,
        };
        self.shared
            .set_status(&self.key, container, state, self.queue.len());
    }

    /// The conversation's delivery, started on first use; `None` without an adapter for
    /// its platform.
    fn outbox(&mut self) -> Option<Arc<Outbox>> {
        if self.outbox.is_none() {
            let adapter = self.shared.adapter(&self.key)?;
            self.outbox = Some(delivery::spawn(&self.shared, self.key.clone(), adapter));
        }
        self.outbox.clone()
    }

    /// Delivers a finished turn's reply that a restart interrupted.
    fn deliver_pending(&mut self, pending: DeliveryRecord) {
        let Some(outbox) = self.outbox() else { return };
        let text = pending.final_text.unwrap_or_default();
        let shown = pending
            .shown
            .map(ReplyState::from)
            .unwrap_or_else(|| ReplyState::new(pending.reply_to.clone()));
        tracing::info!(conversation = %self.key, turn = %pending.turn, "finishing the delivery of a reply");
        outbox.resume(Some(pending.turn), shown, "", &text);
        outbox.finish();
    }

    fn typing_start(&self) -> Option<Instant> {
        self.shared
            .adapter(&self.key)?
            .capabilities()
            .typing_interval
            .map(|_| self.now())
    }

    async fn on_inbound(&mut self, message: Inbound) {
        self.last_activity = self.now();
        let held = self.queue.iter().any(|m| m.id == message.id)
            || self
                .turn
                .as_ref()
                .is_some_and(|t| t.record.inbound.contains(&message.id));
        if held {
            // Sent again by the platform while this actor holds it (see `Router::redeliver`).
            tracing::debug!(conversation = %self.key, message = %message.id, "already holding this message");
            return;
        }
        if occurrence::kind_of(&message) == Some(Occurrence::Reminder) {
            // Delivered at once, even while a turn runs: it is not for the agent.
            self.deliver_reminder(message).await;
            return;
        }
        let job = occurrence::kind_of(&message) == Some(Occurrence::Job);
        let Some(turn) = self.turn.as_mut().filter(|_| !job) else {
            // A job's run is a turn of its own (marked, its check first), never a
            // follow-up of someone else's.
            self.queue.push_back(message);
            return;
        };
        // A follow-up: straight to the running agent, in order.
        turn.record.inbound.push(message.id.clone());
        let follow = turn_message(&message);
        turn.messages.push(follow.clone());
        let turn_id = turn.record.turn.clone();
        let (record, id) = (turn.record.clone(), message.id.clone());
        if let Err(e) = self
            .shared
            .store
            .commit(move |s| s.begin_turn_unflushed(&record, &[id]))
            .await
        {
            // It stays pending in the store: a restart answers it in a turn of its own.
            tracing::warn!(conversation = %self.key, error = %e, "could not record a follow-up in the turn");
        }
        self.send_to_box(&ToAgent::FollowUp {
            turn: turn_id.to_string(),
            messages: vec![follow],
        })
        .await;
    }

    fn add_context(&mut self, message: Inbound) {
        if self.context.len() >= CONTEXT_KEPT {
            if let Some(old) = self.context.pop_front() {
                // Too old to matter: out of the context, so the log can prune it.
                let _ = self
                    .shared
                    .store
                    .set_inbound_state(&self.key, &old.id, InboundState::Done);
            }
        }
        self.context.push_back(message);
    }

    async fn cancel(&mut self) {
        let now = self.now();
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        turn.cancelled.get_or_insert(now);
        let request = ToAgent::Cancel {
            turn: turn.record.turn.to_string(),
        };
        if let Some(outbox) = &self.outbox {
            outbox.drop_queued();
        }
        self.send_to_box(&request).await;
    }
}

/// The outcome of the running turn's store write, if one is under way.
async fn wait_commit(commit: Option<&mut Pending<()>>) -> Result<(), StoreError> {
    match commit {
        Some(commit) => commit.await,
        None => std::future::pending().await,
    }
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
