//! The router: gives each conversation one actor, and each actor its box.
//!
//! Inbound messages are stored durably first ([`InboundSink::accept`] returns only then),
//! then handed to the conversation's actor, which owns its queue, its box and its running
//! turn. An actor sitting idle with its box attached is handed the message unstored, and
//! stores it together with the turn it begins, in one commit. A semaphore caps live boxes; tokio's semaphore is fair, so conversations waiting
//! for a slot are served first come, first served.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use clawpen_adapters::{
    Accepted, Adapter, ConversationKey, Inbound, InboundSink, SinkError, StatusReport,
};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

mod actor;
mod clock;
mod delivery;
mod mailbox;
mod pool;
mod scheduled;
mod settings;
mod status;
mod turn;

use actor::{Actor, Command, Handoff, Start};
pub use clock::{Clock, ManualClock};
use mailbox::{Mailboxes, Retire};
use pool::Pool;
pub use pool::RECYCLE_AFTER;
pub use scheduled::WeakRouter;
pub use settings::{ReplyLimits, RouterConfig};
pub use status::{ConversationState, ConversationStatus};
pub use turn::now_secs;

use crate::metrics::Metrics;
use crate::sandbox::{Sandbox, SandboxError};
use crate::schedule::{occurrence, Scheduler};
use crate::store::{DeliveryRecord, InboundState, InsertOutcome, Store, StoreError, TurnRecord};
use crate::tunnel::Tunnel;

/// How long an accept waits for an idle actor to take a message before storing it itself.
/// An idle actor takes it at once; this only bounds the rare race in which the actor turned
/// to something slow (stopping its idle box) just after it was found idle.
const HAND_OFF_WAIT: Duration = Duration::from_millis(250);

/// Why [`Router::recover`] could not reconcile with what the last run left.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The store could not be read, so what is known cannot be told from what is not;
    /// starting anyway would strand stored messages and turns.
    #[error("cannot read the store to recover the last run (nothing was started or removed): {0}")]
    Store(StoreError),
    /// The engine could not list or stop boxes.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Handle to the router; cheap to clone.
#[derive(Clone)]
pub struct Router {
    shared: Arc<Shared>,
}

/// State shared by the router and every actor.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) sandbox: Sandbox,
    pub(crate) config: RouterConfig,
    pub(crate) adapters: HashMap<String, Arc<dyn Adapter>>,
    /// Performs the boxes' requests (model calls, web fetches).
    pub(crate) tunnel: Tunnel,
    /// One permit per live box; waiting for one is the fair queue of conversations.
    pub(crate) slots: Arc<Semaphore>,
    /// Boxes started ahead of need, each holding one of `slots`.
    pub(crate) pool: Pool,
    /// The mailbox of every live actor. A std mutex: held only to look up or insert.
    actors: Mailboxes<Command>,
    /// What each live actor is doing; written by actors, read by `status`.
    status: Mutex<HashMap<ConversationKey, ConversationStatus>>,
    /// Every actor task, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Fired on shutdown: actors finish their turn and stop.
    pub(crate) shutdown: CancellationToken,
    /// Cleared when shutdown begins: nothing new is accepted.
    accepting: AtomicBool,
    /// Makes turn ids unique within one process.
    pub(crate) turn_counter: AtomicU64,
    /// Counts messages, turns and store writes ([`Metrics::off`] unless served).
    pub(crate) metrics: Metrics,
    /// The scheduler, for task commands and the boxes' task requests; set once at start.
    pub(crate) scheduler: OnceLock<Scheduler>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned map only means an actor panicked mid-update; the data is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn set_status(
        &self,
        key: &ConversationKey,
        container: Option<&str>,
        state: ConversationState,
        queued: usize,
    ) {
        lock(&self.status).insert(
            key.clone(),
            ConversationStatus {
                conversation: key.to_string(),
                container: container.map(str::to_string),
                state,
                queued,
                requests_last_minute: 0,
                tokens_today: 0,
                requests_in_flight: 0,
            },
        );
    }

    /// Called by an actor that wants to exit: it may only when no command reached it, so
    /// a message sent concurrently is never stranded in a dead mailbox (see [`mailbox`]).
    pub(crate) fn try_retire(
        &self,
        key: &ConversationKey,
        mailbox: &mut mpsc::Receiver<Command>,
    ) -> Retire<Command> {
        let retire = self.actors.retire(key, mailbox);
        if matches!(retire, Retire::Gone) {
            lock(&self.status).remove(key);
        }
        retire
    }

    pub(crate) fn adapter(&self, key: &ConversationKey) -> Option<Arc<dyn Adapter>> {
        self.adapters.get(&key.platform).cloned()
    }
}

impl Router {
    /// A router over the given store, sandbox and adapters (keyed by platform name),
    /// counting in `metrics`.
    pub fn new(
        store: Store,
        sandbox: Sandbox,
        tunnel: Tunnel,
        adapters: Vec<Arc<dyn Adapter>>,
        config: RouterConfig,
        shutdown: CancellationToken,
        metrics: Metrics,
    ) -> Self {
        let adapters = adapters
            .into_iter()
            .map(|a| (a.platform().to_string(), a))
            .collect();
        Self {
            shared: Arc::new(Shared {
                store,
                sandbox,
                tunnel,
                slots: Arc::new(Semaphore::new(config.max_boxes)),
                pool: Pool::new(config.warm_pool),
                config,
                adapters,
                actors: Mailboxes::new(),
                status: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                shutdown,
                accepting: AtomicBool::new(true),
                turn_counter: AtomicU64::new(0),
                metrics,
                scheduler: OnceLock::new(),
            }),
        }
    }

    /// Reconcile with what survived the last run, before anything new is accepted: stop
    /// boxes of conversations the store does not know (never removing them or their
    /// workspaces), resume interrupted turns, re-adopt running boxes, and queue stored
    /// messages that never reached a box.
    ///
    /// A store that cannot be read fails the start instead of being taken for an empty
    /// one: reading "nothing" would strand every stored message and turn.
    pub async fn recover(&self) -> Result<(), RecoverError> {
        let store = &self.shared.store;
        let known = store.known_conversations().map_err(RecoverError::Store)?;
        // Claimed warm pool boxes and volumes carry no conversation label: the store's
        // mappings say whose they are. Pool boxes no conversation claimed are removed.
        let claims = store.claimed_workspaces().map_err(RecoverError::Store)?;
        let sandbox = &self.shared.sandbox;
        let (mut boxes, mut volumes) = (sandbox.list().await?, sandbox.volumes().await?);
        crate::sandbox::attribute(&mut boxes, &mut volumes, &claims);
        pool::remove_leftovers(sandbox, &boxes, &volumes).await;
        let mut running = Vec::new();
        for info in boxes.into_iter().filter(|b| !pool::leftover(sandbox, b)) {
            match &info.conversation {
                Some(key) if known.contains(key) => {
                    if info.running {
                        running.push(key.clone());
                    }
                }
                other => {
                    // Its workspace may be all a user has of a conversation whose record
                    // was lost; only the operator may delete it, with `clawpen gc --yes`.
                    let conversation = other.as_ref().map(ToString::to_string);
                    tracing::warn!(
                        r#box = %info.name,
                        conversation = conversation.as_deref().unwrap_or("(no label)"),
                        "the store does not know this box's conversation: stopping it and \
                         keeping its workspace; `clawpen gc` lists such boxes and removes them"
                    );
                    if info.running {
                        if let Err(e) = self.shared.sandbox.stop(&info.id).await {
                            tracing::warn!(r#box = %info.name, error = %e, "could not stop the box of an unknown conversation");
                        }
                    }
                }
            }
        }
        let turns: HashMap<ConversationKey, TurnRecord> = store
            .turns()
            .map_err(RecoverError::Store)?
            .into_iter()
            .map(|t| (t.conversation.clone(), t))
            .collect();
        let mut deliveries: HashMap<ConversationKey, Vec<DeliveryRecord>> = HashMap::new();
        for pending in store.pending_deliveries().map_err(RecoverError::Store)? {
            deliveries
                .entry(pending.conversation.clone())
                .or_default()
                .push(pending);
        }
        let mut keys: Vec<ConversationKey> = store
            .conversations_with_pending()
            .map_err(RecoverError::Store)?;
        keys.extend(turns.keys().cloned());
        keys.extend(deliveries.keys().cloned());
        keys.extend(running.iter().cloned());
        keys.sort();
        keys.dedup();
        let mut starts = Vec::with_capacity(keys.len());
        // Everything is read before any actor starts, so a failed read starts none.
        for key in keys {
            let (mut queue, mut context) = (Vec::new(), Vec::new());
            for stored in store.pending_inbound(&key).map_err(RecoverError::Store)? {
                match stored.state {
                    InboundState::Pending => queue.push(stored.inbound),
                    InboundState::Context => context.push(stored.inbound),
                    InboundState::InTurn { .. } | InboundState::Done => {}
                }
            }
            let start = Start {
                queue,
                resume: turns.get(&key).cloned(),
                adopt: running.contains(&key),
                context,
                deliveries: deliveries.remove(&key).unwrap_or_default(),
            };
            starts.push((key, start));
        }
        for (key, start) in starts {
            tracing::info!(conversation = %key, resume = start.resume.is_some(), adopt = start.adopt, "recovering conversation");
            self.spawn_actor(key, start);
        }
        Ok(())
    }

    fn spawn_actor(&self, key: ConversationKey, start: Start) -> mpsc::Sender<Command> {
        let idle = Arc::new(AtomicBool::new(false));
        let (tx, rx) = self.shared.actors.open(&key, idle.clone());
        self.shared
            .set_status(&key, None, ConversationState::Starting, start.queue.len());
        // Every line the actor logs carries its conversation and platform (as span fields in
        // JSON logs). At error level so that it is there whatever the log filter lets through.
        let span =
            tracing::error_span!("conversation", conversation = %key, platform = %key.platform);
        let actor = Box::new(Actor::new(key, self.shared.clone(), rx, idle));
        let run = actor.run(Box::new(start));
        self.shared.tracker.spawn(run.instrument(span));
        tx
    }

    /// A message the platform sent again. Usually it was handed to its actor already and
    /// nothing is done; but a store write that failed after the message reached sled (a
    /// full disk: the flush failed, the data got out anyway) leaves it logged as pending
    /// with no actor holding it, and only this copy can still get it answered. The actor
    /// ignores a message it already holds.
    async fn redeliver(&self, message: Inbound) {
        if !message.addressed {
            return;
        }
        let store = self.shared.store.clone();
        let (key, id) = (message.conversation.clone(), message.id.clone());
        let state = store.blocking(move |s| s.inbound_state(&key, &id)).await;
        if matches!(state, Ok(Some(InboundState::Pending))) {
            let key = message.conversation.clone();
            self.dispatch(&key, Command::Inbound(Box::new(message)))
                .await;
        }
    }

    /// Hands an addressed message to its conversation's actor if that sits idle with its
    /// box attached: the actor stores it and begins its turn in one commit. `None` if no
    /// actor is idle, or the one that was did not take the message within
    /// [`HAND_OFF_WAIT`] (it turned to something slow meanwhile): the caller stores it
    /// then. A message taken is waited for however long its commit takes.
    async fn hand_to_idle(&self, message: &Inbound) -> Option<Result<InsertOutcome, StoreError>> {
        let sender = self.shared.actors.idle(&message.conversation)?;
        let (handoff, taken, outcome) = Handoff::new();
        let command = Command::Accept(Box::new(message.clone()), handoff);
        sender.try_send(command).ok()?;
        match tokio::time::timeout(HAND_OFF_WAIT, taken).await {
            Ok(Ok(())) => outcome.await.ok(),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Hand a command to a conversation's actor, starting one if needed.
    async fn dispatch(&self, key: &ConversationKey, mut command: Command) {
        loop {
            let existing = self.shared.actors.get(key);
            let sender = match existing {
                Some(sender) => sender,
                None => match command {
                    Command::Context(message) => {
                        let start = Start {
                            context: vec![*message],
                            ..Start::default()
                        };
                        self.spawn_actor(key.clone(), start);
                        return;
                    }
                    Command::Inbound(message) => {
                        let start = Start {
                            queue: vec![*message],
                            ..Start::default()
                        };
                        self.spawn_actor(key.clone(), start);
                        return;
                    }
                    // Nothing runs, so there is nothing to cancel.
                    Command::Cancel => return,
                    // Only sent to an actor found idle (`hand_to_idle`); dropping it ends the
                    // router's wait, and it stores the message itself.
                    Command::Accept(..) => return,
                },
            };
            match sender.send(command).await {
                Ok(()) => return,
                // The actor retired between lookup and send: take the command back, retry.
                Err(mpsc::error::SendError(back)) => {
                    self.shared.actors.forget(key, &sender);
                    command = back;
                }
            }
        }
    }

    /// End the running turn of a conversation (`/stop`).
    pub async fn cancel(&self, key: &ConversationKey) {
        self.dispatch(key, Command::Cancel).await;
    }

    /// What every live conversation is doing.
    pub fn status(&self) -> Vec<ConversationStatus> {
        let mut list: Vec<(ConversationKey, ConversationStatus)> = lock(&self.shared.status)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        list.sort_by(|a, b| a.1.conversation.cmp(&b.1.conversation));
        list.into_iter()
            .map(|(key, mut status)| {
                let usage = self.shared.tunnel.usage(&key);
                status.requests_last_minute = usage.requests_last_minute;
                status.tokens_today = usage.tokens_today;
                status.requests_in_flight = self.shared.tunnel.in_flight(&key);
                status
            })
            .collect()
    }

    /// Conversations waiting for a live-box slot.
    pub fn conversations_waiting(&self) -> usize {
        lock(&self.shared.status)
            .values()
            .filter(|s| s.state == ConversationState::WaitingForSlot)
            .count()
    }

    /// What keeps each adapter from working fully, as `platform: trouble` lines.
    pub fn adapter_troubles(&self) -> Vec<String> {
        let mut troubles: Vec<String> = (self.shared.adapters)
            .iter()
            .filter_map(|(platform, adapter)| Some(format!("{platform}: {}", adapter.trouble()?)))
            .collect();
        troubles.sort();
        troubles
    }

    /// The cap on live boxes.
    pub fn max_boxes(&self) -> usize {
        self.shared.config.max_boxes
    }

    /// Boxes alive now (slots in use).
    pub fn live_boxes(&self) -> usize {
        self.shared.config.max_boxes - self.shared.slots.available_permits()
    }

    /// The store the router writes to.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The sandbox the router runs boxes in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.shared.sandbox
    }

    /// Stop accepting messages and tell actors to wind down after their running turn.
    pub fn begin_shutdown(&self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
    }

    /// Wait for every actor to stop, up to `deadline`; returns the conversations still busy.
    pub async fn wait_stopped(&self, deadline: Duration) -> Vec<String> {
        self.shared.tracker.close();
        if tokio::time::timeout(deadline, self.shared.tracker.wait())
            .await
            .is_ok()
        {
            return Vec::new();
        }
        self.shared.actors.names()
    }
}

#[async_trait]
impl InboundSink for Router {
    async fn accept(&self, message: Inbound) -> Result<Accepted, SinkError> {
        if !self.shared.accepting.load(Ordering::SeqCst) {
            return Err(SinkError::ShuttingDown);
        }
        if occurrence::is_reserved_sender(&message.sender_id) {
            // Only the scheduler speaks as `clawpen:…`; a platform never may.
            tracing::warn!(conversation = %message.conversation, sender = %message.sender_id, "dropping a message from a reserved sender id");
            return Ok(Accepted::Duplicate);
        }
        let began = std::time::Instant::now();
        // Hot path. An addressed message to an actor sitting idle with its box attached is
        // stored by that actor, in the same commit as the turn it begins: one flush, not
        // two, before the box has it. Otherwise one store commit (shared with whatever else
        // is being stored) and a hand-off to the actor.
        let handed = match message.addressed {
            true => self.hand_to_idle(&message).await,
            false => None,
        };
        let by_actor = handed.is_some();
        let outcome = match handed {
            Some(outcome) => outcome,
            None => {
                let stored = message.clone();
                self.shared
                    .store
                    .commit(move |s| s.log_inbound_unflushed(&stored))
                    .await
            }
        };
        self.shared.metrics.store_write("inbound", began.elapsed());
        if by_actor {
            return match outcome {
                Ok(InsertOutcome::New) => {
                    let metrics = &self.shared.metrics;
                    metrics.accepted(&message.conversation, message.addressed);
                    Ok(Accepted::Stored)
                }
                Ok(InsertOutcome::Duplicate) => {
                    self.redeliver(message).await;
                    Ok(Accepted::Duplicate)
                }
                Err(e) => Err(SinkError::Store(e.to_string())),
            };
        }
        match outcome {
            Ok(InsertOutcome::Duplicate) => {
                self.redeliver(message).await;
                return Ok(Accepted::Duplicate);
            }
            Ok(InsertOutcome::New) => {}
            Err(e) => return Err(SinkError::Store(e.to_string())),
        }
        self.shared
            .metrics
            .accepted(&message.conversation, message.addressed);
        let key = message.conversation.clone();
        if !message.addressed {
            self.dispatch(&key, Command::Context(Box::new(message)))
                .await;
            return Ok(Accepted::Stored);
        }
        self.dispatch(&key, Command::Inbound(Box::new(message)))
            .await;
        Ok(Accepted::Stored)
    }

    async fn load_value(&self, key: &str) -> Result<Option<String>, SinkError> {
        self.shared
            .store
            .cursor(key)
            .map_err(|e| SinkError::Store(e.to_string()))
    }

    async fn save_value(&self, key: &str, value: &str) -> Result<(), SinkError> {
        self.shared
            .store
            .set_cursor(key, value)
            .map_err(|e| SinkError::Store(e.to_string()))
    }

    async fn cancel(&self, conversation: &ConversationKey) {
        Router::cancel(self, conversation).await;
    }

    async fn tasks(
        &self,
        caller: &clawpen_adapters::command::Caller<'_>,
        request: clawpen_adapters::command::TaskRequest,
    ) -> clawpen_adapters::command::TaskReply {
        match self.shared.scheduler.get() {
            Some(scheduler) => scheduler.chat_command(caller, request).await,
            None => clawpen_adapters::command::TaskReply::Unavailable,
        }
    }

    async fn status(&self, conversation: &ConversationKey) -> StatusReport {
        let key = conversation.to_string();
        let live = self.status().into_iter().find(|s| s.conversation == key);
        StatusReport {
            queued: live.as_ref().map_or(0, |s| s.queued),
            state: live.map(|s| s.state.to_string()),
            // The user asks about conversations' boxes; the warm pool's are not theirs.
            live_boxes: self.conversation_boxes(),
            max_boxes: self.shared.config.max_boxes,
        }
    }
}
