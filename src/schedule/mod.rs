//! The scheduler: tasks asked for in chat (reminders and recurring jobs), run exactly once
//! per occurrence.
//!
//! Tasks live in the store (`store::task`), with a due-time index. A tick reads only the
//! index's due part, and turns each due occurrence into an inbound message of its
//! conversation (`occurrence`), stored in the inbound log together with the task's next
//! due time in one store step. From there the router takes over as for any message: the
//! log is durable before the actor sees it and dedupes by id (`task:<id>:<due>`), so a
//! crash between "due" and "ran" neither loses nor repeats an occurrence.
//!
//! - A reminder's message is delivered as it is, with no model call and no box.
//! - A job's message runs as a turn in the conversation's box, marked as a scheduled run
//!   of its task (the agent is told not to schedule anything in answer to it, and the
//!   bridge refuses `schedule_task` during such a turn).
//! - Occurrences missed while clawpen was down follow the task's `catch_up`: `once` runs
//!   the first missed one, noted as late; `skip` tells the user it was skipped. Either way
//!   the next due time is counted from now: never a burst of every missed occurrence.
//! - A task whose platform is not configured any more is paused with the reason: at start,
//!   and by the tick should one come due anyway.
//!
//! # Layout
//! - `spec`: schedules and their next runs, time zones and daylight saving (no I/O).
//! - `occurrence`: a due occurrence as an inbound message (no I/O).
//! - `manage`: making and changing tasks (the agent's requests, the chat commands).
//! - here: [`Scheduler`], its tick and its component.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawpen_adapters::command::{Caller, TaskReply, TaskRequest};
use clawpen_domain::{ConversationKey, Inbound};
use clawpen_protocol::{Request, ResponsePart};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod manage;
pub mod occurrence;
pub mod spec;

use occurrence::Why;

use crate::component::{Component, ComponentError};
use crate::router::{Clock, WeakRouter};
use crate::store::{CatchUp, InsertOutcome, Store, StoreError, TaskRecord, TaskState};

/// The most occurrences one tick fires before it looks at the clock again; more due ones
/// are fired by the next tick, at once.
const TICK_BATCH: usize = 1000;

/// The longest the scheduler sleeps without looking at the due index (a clock that jumped,
/// a task changed without a wake-up).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// An occurrence more than this late was missed while clawpen was down (or the machine
/// slept): its task's `catch_up` decides.
pub const LATE_AFTER: i64 = 120;

/// The operator's scheduling settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The time zone of conversations that set none (`timezone`, default `UTC`).
    pub default_zone: String,
    /// The most tasks one conversation may have (`max_tasks_per_conversation`).
    pub max_tasks: usize,
    /// The shortest interval a recurring task may have (`min_task_interval_secs`).
    pub min_interval_secs: u64,
    /// Users who manage every task, as `platform:user` (`task_owners`), besides the
    /// terminal's operator and each adapter's paired owner.
    pub owners: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_zone: "UTC".into(),
            max_tasks: 50,
            min_interval_secs: 60,
            owners: Vec::new(),
        }
    }
}

/// The scheduler; a cheap-to-clone handle.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Where occurrences go. Weak: the router holds the scheduler (for commands and the
    /// boxes' requests), and a cycle would keep the store open after shutdown.
    router: WeakRouter,
    settings: Settings,
    /// The wall time of the tick and its waits (a manual clock in tests).
    clock: Clock,
    /// Woken when a task is made or changed: the loop reads the due index again.
    changed: Notify,
    /// Fired by the component's stop.
    stop: CancellationToken,
    /// The loop's task.
    tasks: TaskTracker,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler over `store`, handing occurrences to `router`.
    pub fn new(store: Store, router: WeakRouter, settings: Settings, clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                router,
                settings,
                clock,
                changed: Notify::new(),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Fires every occurrence due at `now` (Unix seconds), up to [`TICK_BATCH`]; returns
    /// how many entered the router.
    ///
    /// Hot path: reads only the due part of the index, one task record per due entry,
    /// and one store commit per occurrence; no scan of all tasks.
    pub async fn tick(&self, now: i64) -> Result<usize, StoreError> {
        let store = &self.inner.store;
        let router = self.inner.router.upgrade();
        let mut fired = 0;
        for (due, id) in store.due_tasks(now, TICK_BATCH)? {
            let task = store.task(id)?;
            if task
                .as_ref()
                .is_none_or(|t| t.next_due != Some(due) || !t.is_active())
            {
                // An index entry its task no longer stands behind: it goes.
                store.remove_due(due, id)?;
                continue;
            }
            let Some(task) = task else {
                continue;
            };
            let platform = &task.conversation.platform;
            if router.as_ref().is_some_and(|r| !r.has_platform(platform)) {
                let reason = platform_gone(platform);
                tracing::warn!(task = id, conversation = %task.conversation, %reason, "pausing a task");
                pause(store, &task, reason)?;
                continue;
            }
            let (schedule, tz) = match Self::schedule_of(&task) {
                Ok(parsed) => parsed,
                Err(reason) => {
                    tracing::warn!(task = id, %reason, "pausing a task whose schedule cannot be read");
                    pause(store, &task, reason)?;
                    continue;
                }
            };
            let late = now - due > LATE_AFTER;
            // Counted from now: what else was missed does not run.
            let next = schedule.next_after(tz, now.max(due), Some(due));
            let (message, outcome) = match (late, task.catch_up) {
                (true, CatchUp::Skip) => (
                    occurrence::skipped(&task, due, now, next),
                    "skipped (clawpen was down)",
                ),
                (true, CatchUp::Once) => (
                    occurrence::message(&task, due, now, Why::Late),
                    "ran late (clawpen was down)",
                ),
                (false, _) => (occurrence::message(&task, due, now, Why::Due), "ran"),
            };
            let mut updated = task.clone();
            updated.next_due = next;
            updated.last_due = Some(due);
            updated.last_outcome = Some(outcome.into());
            let remove = next.is_none() && matches!(schedule, spec::Schedule::Once { .. });
            let stored = message.clone();
            let inserted = store
                .commit(move |s| {
                    let inserted = s.fire_task_unflushed(&stored, &updated, due, remove)?;
                    if let Err(e) = s.touch_conversation(&stored.conversation, stored.at) {
                        tracing::warn!(conversation = %stored.conversation, error = %e, "could not record the conversation");
                    }
                    Ok(inserted)
                })
                .await?;
            tracing::info!(task = id, conversation = %task.conversation, due = %spec::show_utc(due), outcome, duplicate = inserted == InsertOutcome::Duplicate, "task occurrence");
            if inserted == InsertOutcome::New {
                fired += 1;
                if let Some(router) = &router {
                    router.hand_over(message).await;
                }
            }
        }
        Ok(fired)
    }

    /// Pauses, with the reason, every active task whose conversation's platform has no
    /// adapter configured now; returns how many. Run at start, so that `/tasks` says so
    /// before such a task would have come due (the tick checks again when one does). One
    /// log line for all of them, with the count and the platforms.
    ///
    /// Reads the task index by conversation's keys, and only the records of the tasks it
    /// pauses; each pause is a flushed write (blocking).
    pub fn pause_unconfigured(&self) -> Result<usize, StoreError> {
        let Some(router) = self.inner.router.upgrade() else {
            return Ok(0);
        };
        let store = &self.inner.store;
        let tasks = store.active_tasks_off(|platform| router.has_platform(platform))?;
        let mut platforms = std::collections::BTreeSet::new();
        for task in &tasks {
            let platform = task.conversation.platform.as_str();
            let reason = platform_gone(platform);
            tracing::debug!(task = task.id, conversation = %task.conversation, %reason, "pausing a task");
            pause(store, task, reason)?;
            platforms.insert(platform);
        }
        if !tasks.is_empty() {
            tracing::warn!(count = tasks.len(), ?platforms, "paused the tasks of platforms that are not configured any more; /tasks all lists them, /resume runs one again");
        }
        Ok(tasks.len())
    }

    /// Logs an occurrence asked for now (`/run`) and hands it to the router.
    async fn enter(&self, message: Inbound) -> Result<(), StoreError> {
        let stored = message.clone();
        let inserted = self
            .inner
            .store
            .commit(move |s| s.insert_inbound_unflushed(&stored))
            .await?;
        if inserted == InsertOutcome::New {
            if let Some(router) = self.inner.router.upgrade() {
                router.hand_over(message).await;
            }
        }
        Ok(())
    }

    /// The loop: tick, sleep until the next due time (or a change), until stopped.
    async fn run(self) {
        let clock = self.inner.clock.clone();
        loop {
            let now = clock.unix_now();
            let fired = match self.tick(now).await {
                Ok(fired) => fired,
                Err(e) => {
                    tracing::warn!(error = %e, "the scheduler's tick failed; trying again");
                    // A failing store is tried again in a second, not in a spin.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if fired >= TICK_BATCH {
                continue;
            }
            // The wake-up is the next due time as an instant of the clock, read in one go,
            // so a clock moved meanwhile (a test's manual one) is not missed.
            let until = match self.inner.store.next_due_time() {
                Ok(Some(due)) if due <= now => {
                    // Due already but not fired (a record being changed meanwhile): look
                    // again in a second of real time rather than spin.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Ok(Some(due)) => clock.at_unix(due).min(clock.now() + MAX_SLEEP),
                Ok(None) | Err(_) => clock.now() + MAX_SLEEP,
            };
            tokio::select! {
                _ = clock.sleep_until(until) => {}
                _ = self.inner.changed.notified() => {}
                _ = self.inner.stop.cancelled() => return,
            }
        }
    }

    /// Whether `caller` is an owner, who manages every task: the terminal's operator, an
    /// adapter's paired owner, or a user the operator named in `task_owners`.
    pub fn is_owner(&self, caller: &Caller<'_>) -> bool {
        let platform = caller.conversation.platform.as_str();
        if platform == clawpen_adapters::terminal::PLATFORM {
            return true;
        }
        let named = format!("{platform}:{}", caller.sender);
        if self.inner.settings.owners.contains(&named) {
            return true;
        }
        let paired = self.inner.store.cursor(&format!("{platform}.owner"));
        matches!(paired, Ok(Some(owner)) if owner == caller.sender)
    }

    /// Carries out a chat command for `caller`.
    pub async fn chat_command(&self, caller: &Caller<'_>, request: TaskRequest) -> TaskReply {
        let owner = self.is_owner(caller);
        self.command(caller, request, owner).await
    }

    /// Performs a box's task request for `conversation`, answering in `out` as a fetch is
    /// answered; `scheduled_run` says whether the running turn is a scheduled run (which
    /// may not schedule anything).
    pub async fn perform(
        &self,
        conversation: &ConversationKey,
        request: Request,
        scheduled_run: bool,
        out: mpsc::Sender<ResponsePart>,
    ) {
        let caller = Caller {
            conversation,
            sender: "agent",
        };
        let by_id = |request: TaskRequest| async {
            let reply = self.command(&caller, request, false).await;
            match reply {
                TaskReply::Refused(why) => Err(why),
                other => Ok(clawpen_adapters::command::task_words(&other)),
            }
        };
        let result = match request {
            Request::ScheduleTask { .. } if scheduled_run => Err(
                "this turn is a scheduled run of a task: it may not schedule tasks (a reminder \
                 that schedules reminders would multiply forever). Do what the task says."
                    .to_string(),
            ),
            Request::ScheduleTask { task } => self.schedule(conversation, &task).await,
            Request::ListTasks => self.list_for_agent(conversation),
            Request::PauseTask { id } => by_id(TaskRequest::Pause(id)).await,
            Request::ResumeTask { id } => by_id(TaskRequest::Resume(id)).await,
            Request::CancelTask { id } => by_id(TaskRequest::Cancel(id)).await,
            Request::Model { .. } | Request::WebFetch { .. } => {
                Err("not a task request".to_string())
            }
        };
        let parts = match result {
            Ok(text) => vec![
                ResponsePart::Head {
                    status: 200,
                    headers: vec![("content-type".into(), "text/plain".into())],
                },
                ResponsePart::Body { data: text },
                ResponsePart::End,
            ],
            Err(message) => {
                tracing::info!(conversation = %conversation, %message, "task request refused");
                vec![ResponsePart::Failed { message }]
            }
        };
        for part in parts {
            if out.send(part).await.is_err() {
                return;
            }
        }
    }
}

/// Why a task of `platform` is paused when no adapter of it is configured.
fn platform_gone(platform: &str) -> String {
    format!("the {platform} adapter is not configured any more")
}

/// Stores `task` paused, with `reason`; out of the due index. Flushed.
fn pause(store: &Store, task: &TaskRecord, reason: String) -> Result<(), StoreError> {
    let mut paused = task.clone();
    paused.state = TaskState::Paused {
        reason: Some(reason),
    };
    store.update_task(&paused)
}

/// Whether a request is one of the scheduler's (else the tunnel's).
pub fn is_task_request(request: &Request) -> bool {
    matches!(
        request,
        Request::ScheduleTask { .. }
            | Request::ListTasks
            | Request::PauseTask { .. }
            | Request::ResumeTask { .. }
            | Request::CancelTask { .. }
    )
}

#[async_trait]
impl Component for Scheduler {
    fn name(&self) -> String {
        "scheduler".into()
    }

    async fn start(&self) -> Result<(), ComponentError> {
        // Before the first tick: the tasks of a platform no longer configured are paused
        // now, with why, not only when each comes due.
        let me = self.clone();
        let paused = self
            .inner
            .store
            .blocking(move |_| me.pause_unconfigured())
            .await;
        if let Err(e) = paused {
            tracing::warn!(error = %e, "could not check the tasks' platforms at start; each is checked when it comes due");
        }
        let me = self.clone();
        self.inner.tasks.spawn(me.run());
        Ok(())
    }

    fn stop(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
    }

    async fn stopped(&self) {
        self.inner.tasks.wait().await;
    }
}
