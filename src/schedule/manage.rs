//! Making and changing tasks: the agent's requests (`schedule_task` …) and the chat
//! commands (`/tasks`, `/pause` …), checked here against the schedule rules, the limits
//! and who may change what.
//!
//! A conversation manages only its own tasks; the owner (the terminal's operator, the
//! adapter's paired owner, or a user named in `task_owners`) manages every task from any
//! chat. The box always acts for its own conversation only, never as the owner.

use chrono_tz::Tz;
use clawpen_adapters::command::{Caller, TaskLine, TaskReply, TaskRequest};
use clawpen_domain::ConversationKey;
use clawpen_protocol::TaskSpec;

use super::occurrence::{self, Why};
use super::spec::{self, Schedule};
use super::Scheduler;
use crate::store::{CatchUp, StoreError, StoredSchedule, TaskKind, TaskRecord, TaskState};

/// The longest title kept.
const TITLE_CHARS: usize = 80;
/// The longest reminder text or job prompt.
const TEXT_CHARS: usize = 4000;
/// The longest check command.
const CHECK_CHARS: usize = 1000;

/// How many next runs a description names.
const SHOWN_RUNS: usize = 3;

impl Scheduler {
    /// The schedule of a stored task, parsed again.
    pub(super) fn schedule_of(task: &TaskRecord) -> Result<(Schedule, Tz), String> {
        let tz = spec::zone(&task.zone)?;
        let schedule = match &task.schedule {
            StoredSchedule::Once { at } => Schedule::Once { at: *at },
            StoredSchedule::Every { secs, anchor } => Schedule::Every {
                secs: *secs,
                anchor: *anchor,
            },
            StoredSchedule::Cron { expr } => Schedule::Cron {
                expr: expr.clone(),
                cron: Box::new(spec::cron(expr)?),
            },
        };
        Ok((schedule, tz))
    }

    /// A conversation's time zone: its own (`/tz`), else the operator's default.
    pub(super) fn zone_of(&self, conversation: &ConversationKey) -> String {
        match self.inner.store.zone(conversation) {
            Ok(Some(zone)) => zone,
            _ => self.inner.settings.default_zone.clone(),
        }
    }

    /// Checks what the model asked for and makes it a task record (not stored yet).
    pub fn task_from_spec(
        &self,
        conversation: &ConversationKey,
        spec: &TaskSpec,
        now: i64,
    ) -> Result<TaskRecord, String> {
        let text = spec.text.trim();
        if text.is_empty() {
            return Err("`text` is empty: give the reminder's text or the job's prompt".into());
        }
        if text.chars().count() > TEXT_CHARS {
            return Err(format!("`text` is longer than {TEXT_CHARS} characters"));
        }
        let check = spec
            .check
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        if check.is_some_and(|c| c.chars().count() > CHECK_CHARS) {
            return Err(format!("`check` is longer than {CHECK_CHARS} characters"));
        }
        let kind = match spec.kind.trim().to_ascii_lowercase().as_str() {
            "" | "reminder" if check.is_none() => TaskKind::Reminder { text: text.into() },
            "" | "reminder" => {
                return Err("only a job can have a `check` command".into());
            }
            "job" => TaskKind::Job {
                prompt: text.into(),
                check: check.map(str::to_string),
            },
            other => {
                return Err(format!(
                    "`kind` is `{other}`; it must be `reminder` or `job`"
                ))
            }
        };
        let zone_name = match spec.timezone.as_deref().map(str::trim) {
            Some(zone) if !zone.is_empty() => zone.to_string(),
            _ => self.zone_of(conversation),
        };
        let tz = spec::zone(&zone_name)?;
        let catch_up = match spec.catch_up.as_deref().map(str::trim) {
            None | Some("") | Some("once") => CatchUp::Once,
            Some("skip") => CatchUp::Skip,
            Some(other) => {
                return Err(format!(
                    "`catch_up` is `{other}`; it must be `once` or `skip`"
                ))
            }
        };
        let given = [&spec.at, &spec.after, &spec.every, &spec.cron]
            .iter()
            .filter(|w| w.as_deref().is_some_and(|w| !w.trim().is_empty()))
            .count();
        if given != 1 {
            return Err(
                "say when with exactly one of `at` (a date and time), `in` (a delay such as \
                 20m), `every` (an interval such as 1h) or `cron` (five fields)"
                    .into(),
            );
        }
        let min = self.inner.settings.min_interval_secs;
        let schedule = if let Some(at) = nonempty(&spec.at) {
            let at = spec::date_time(at, tz)?;
            if at <= now {
                return Err(format!(
                    "{} is in the past (it is {} now)",
                    spec::show(tz, at),
                    spec::show(tz, now)
                ));
            }
            StoredSchedule::Once { at }
        } else if let Some(after) = nonempty(&spec.after) {
            let secs = spec::duration(after)?.max(1);
            let at = now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX));
            StoredSchedule::Once { at }
        } else if let Some(every) = nonempty(&spec.every) {
            let secs = spec::duration(every)?;
            if secs < min {
                return Err(format!(
                    "tasks may repeat at most every {} here (min_task_interval_secs)",
                    spec::show_duration(min)
                ));
            }
            let anchor = now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX));
            StoredSchedule::Every { secs, anchor }
        } else {
            let expr = nonempty(&spec.cron).unwrap_or_default();
            let parsed = Schedule::Cron {
                expr: expr.to_string(),
                cron: Box::new(spec::cron(expr)?),
            };
            if parsed.next_after(tz, now, None).is_none() {
                return Err(format!("`{expr}` never matches"));
            }
            if parsed.shortest_gap(tz, now).is_some_and(|gap| gap < min) {
                return Err(format!(
                    "tasks may repeat at most every {} here (min_task_interval_secs)",
                    spec::show_duration(min)
                ));
            }
            StoredSchedule::Cron {
                expr: expr.split_whitespace().collect::<Vec<_>>().join(" "),
            }
        };
        let title: String = match spec.title.trim() {
            "" => text.chars().take(40).collect(),
            title => title.chars().take(TITLE_CHARS).collect(),
        };
        let mut task = TaskRecord {
            id: 0,
            conversation: conversation.clone(),
            title: title.replace(['\n', '\r'], " "),
            kind,
            schedule,
            zone: tz.name().to_string(),
            catch_up,
            state: TaskState::Active,
            next_due: None,
            last_due: None,
            last_outcome: None,
            created_by: "agent".into(),
            created_at: now,
        };
        let (schedule, tz) = Self::schedule_of(&task)?;
        task.next_due = schedule.next_after(tz, now, None);
        Ok(task)
    }

    /// Stores a new task for `conversation` within its limit; answers in words for the
    /// model: the task's description and its next runs.
    pub async fn schedule(
        &self,
        conversation: &ConversationKey,
        spec: &TaskSpec,
    ) -> Result<String, String> {
        let now = self.inner.clock.unix_now();
        let task = self.task_from_spec(conversation, spec, now)?;
        let store = &self.inner.store;
        let max = self.inner.settings.max_tasks;
        if store.count_tasks(conversation).map_err(store_words)? >= max {
            return Err(format!(
                "this chat has {max} tasks already (max_tasks_per_conversation); cancel one first"
            ));
        }
        let task = store.create_task(&task).map_err(store_words)?;
        tracing::info!(conversation = %conversation, task = task.id, title = %task.title, "task scheduled");
        self.inner.changed.notify_one();
        Ok(format!("Scheduled {}", describe(&task)))
    }

    /// A conversation's tasks in words, for the model.
    pub fn list_for_agent(&self, conversation: &ConversationKey) -> Result<String, String> {
        let now = self.inner.clock.unix_now();
        let tasks = self
            .inner
            .store
            .tasks_of(conversation)
            .map_err(store_words)?;
        let zone = self.zone_of(conversation);
        if tasks.is_empty() {
            return Ok(format!(
                "No tasks. This chat's time zone is {zone}; it is {} now.",
                now_in(&zone, now)
            ));
        }
        let lines: Vec<String> = tasks.iter().map(describe).collect();
        Ok(format!(
            "This chat's time zone is {zone}; it is {} now.\n{}",
            now_in(&zone, now),
            lines.join("\n")
        ))
    }

    /// Carries out a chat command (or the agent's pause, resume and cancel, as a caller
    /// who is never the owner).
    pub async fn command(
        &self,
        caller: &Caller<'_>,
        request: TaskRequest,
        owner: bool,
    ) -> TaskReply {
        match self.command_inner(caller, request, owner).await {
            Ok(reply) => reply,
            Err(e) => TaskReply::Refused(store_words(e)),
        }
    }

    async fn command_inner(
        &self,
        caller: &Caller<'_>,
        request: TaskRequest,
        owner: bool,
    ) -> Result<TaskReply, StoreError> {
        let store = &self.inner.store;
        let now = self.inner.clock.unix_now();
        let id = match &request {
            TaskRequest::List { all } => {
                if *all && !owner {
                    return Ok(TaskReply::Refused(
                        "Only the bot's owner can list every chat's tasks.".into(),
                    ));
                }
                let tasks = match all {
                    true => store.all_tasks()?,
                    false => store.tasks_of(caller.conversation)?,
                };
                let tasks = tasks.iter().map(|t| line(t, *all)).collect();
                let zone = self.zone_of(caller.conversation);
                return Ok(TaskReply::List { zone, tasks });
            }
            TaskRequest::Zone(None) => {
                let zone = self.zone_of(caller.conversation);
                return Ok(TaskReply::Zone { zone, set: false });
            }
            TaskRequest::Zone(Some(name)) => {
                let tz = match spec::zone(name) {
                    Ok(tz) => tz,
                    Err(why) => return Ok(TaskReply::Refused(why)),
                };
                store.set_zone(caller.conversation, tz.name())?;
                let zone = tz.name().to_string();
                return Ok(TaskReply::Zone { zone, set: true });
            }
            TaskRequest::Pause(id)
            | TaskRequest::Resume(id)
            | TaskRequest::Cancel(id)
            | TaskRequest::Run(id) => *id,
        };
        let Some(mut task) = store.task(id)? else {
            return Ok(TaskReply::NotFound(id));
        };
        if task.conversation != *caller.conversation && !owner {
            return Ok(TaskReply::NotYours(id));
        }
        let title = task.title.clone();
        let tz = spec::zone(&task.zone).unwrap_or(Tz::UTC);
        let mut next = None;
        match &request {
            TaskRequest::Pause(_) => {
                task.state = TaskState::Paused { reason: None };
                store.update_task(&task)?;
            }
            TaskRequest::Resume(_) => {
                // From now on: what was due while paused does not run.
                task.state = TaskState::Active;
                task.next_due = match Self::schedule_of(&task) {
                    Ok((schedule, tz)) => schedule.next_after(tz, now, task.last_due),
                    Err(why) => return Ok(TaskReply::Refused(why)),
                };
                store.update_task(&task)?;
                next = task.next_due.map(|n| spec::show(tz, n));
            }
            TaskRequest::Cancel(_) => {
                store.delete_task(id)?;
            }
            TaskRequest::Run(_) => {
                let message = occurrence::message(&task, now, now, Why::Now);
                self.enter(message).await?;
                next = task
                    .next_due
                    .filter(|_| task.is_active())
                    .map(|n| spec::show(tz, n));
            }
            TaskRequest::List { .. } | TaskRequest::Zone(_) => {}
        }
        tracing::info!(conversation = %caller.conversation, task = id, request = ?request, "task changed by command");
        self.inner.changed.notify_one();
        Ok(TaskReply::Done {
            request,
            title,
            next,
        })
    }
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn store_words(e: StoreError) -> String {
    format!("the task store failed: {e}")
}

fn now_in(zone: &str, now: i64) -> String {
    spec::show(spec::zone(zone).unwrap_or(Tz::UTC), now)
}

/// A task for the model: id, title, kind, schedule, state, next runs.
pub fn describe(task: &TaskRecord) -> String {
    let (schedule, runs) = match Scheduler::schedule_of(task) {
        Ok((schedule, tz)) => {
            let runs: Vec<String> = match task.next_due {
                Some(next) if task.is_active() => std::iter::once(next)
                    .chain(schedule.upcoming(tz, next, Some(next), SHOWN_RUNS - 1))
                    .map(|at| spec::show(tz, at))
                    .collect(),
                _ => Vec::new(),
            };
            (schedule.describe(tz), runs)
        }
        Err(why) => (format!("unreadable schedule ({why})"), Vec::new()),
    };
    let kind = match &task.kind {
        TaskKind::Reminder { .. } => "reminder",
        TaskKind::Job { .. } => "job",
    };
    let state = match &task.state {
        TaskState::Active if runs.is_empty() => "no further runs".to_string(),
        TaskState::Active => format!("next runs: {}", runs.join("; ")),
        TaskState::Paused { reason: None } => "paused".into(),
        TaskState::Paused { reason: Some(why) } => format!("paused: {why}"),
    };
    format!(
        "task #{} “{}” ({kind}), {schedule}, time zone {} — {state}.",
        task.id, task.title, task.zone
    )
}

/// A task as `/tasks` shows it; its times in its own zone.
fn line(task: &TaskRecord, with_conversation: bool) -> TaskLine {
    let zone = spec::zone(&task.zone).unwrap_or(Tz::UTC);
    let (schedule, next) = match Scheduler::schedule_of(task) {
        Ok((schedule, tz)) => (
            schedule.describe(tz),
            task.next_due
                .filter(|_| task.is_active())
                .map(|n| spec::show(tz, n)),
        ),
        Err(why) => (format!("unreadable schedule ({why})"), None),
    };
    TaskLine {
        id: task.id,
        title: task.title.clone(),
        kind: match task.kind {
            TaskKind::Reminder { .. } => "reminder".into(),
            TaskKind::Job { .. } => "job".into(),
        },
        schedule,
        next,
        paused: match &task.state {
            TaskState::Active => None,
            TaskState::Paused { reason } => Some(reason.clone().unwrap_or_default()),
        },
        last_run: task.last_due.map(|due| spec::show(zone, due)),
        last_outcome: task.last_outcome.clone(),
        conversation: with_conversation.then(|| task.conversation.to_string()),
    }
}
