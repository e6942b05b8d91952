//! What an actor does with scheduled occurrences before they reach a box: a reminder is
//! delivered as it is (no box), and a job's `check` runs in the box first, so that the
//! model is woken only when the check passes (exit 0), with its output.

use std::time::Duration;

use clawpen_adapters::reply::ReplyState;
use clawpen_adapters::{Inbound, TurnId};
use clawpen_protocol::TurnMessage;

use super::{Actor, Shared};
use crate::schedule::occurrence::{self, Occurrence};
use crate::store::{InboundState, TaskKind};

/// How long a job's check may run.
const CHECK_LIMIT: Duration = Duration::from_secs(60);

impl Actor {
    /// Delivers the reminders among `messages` (see [`Actor::deliver_reminder`]); returns
    /// the rest, for a turn.
    pub(super) async fn deliver_reminders(&mut self, messages: Vec<Inbound>) -> Vec<Inbound> {
        let mut rest = Vec::with_capacity(messages.len());
        for message in messages {
            match occurrence::kind_of(&message) {
                Some(Occurrence::Reminder) => self.deliver_reminder(message).await,
                Some(Occurrence::Job) | None => rest.push(message),
            }
        }
        rest
    }

    /// Delivers a reminder (or a note about a task) as it is, with no box. It is marked
    /// done together with a delivery record of its text, as a finished turn's reply is, so
    /// a restart before it is shown shows it then (and never twice, but for the one
    /// round trip every reply has). Without an adapter for the platform, or when the store
    /// cannot write, it stays pending in the store for the next start.
    pub(super) async fn deliver_reminder(&mut self, message: Inbound) {
        let Some(outbox) = self.outbox() else {
            tracing::warn!(conversation = %self.key, message = %message.id, "no adapter for this platform; the reminder waits");
            return;
        };
        let (key, id, text) = (self.key.clone(), message.id.clone(), message.text.clone());
        let recorded = self
            .shared
            .store
            .commit(move |s| s.deliver_note_unflushed(&key, &id, &text))
            .await;
        if let Err(e) = recorded {
            tracing::warn!(conversation = %self.key, message = %message.id, error = %e, "a reminder could not be recorded; it is delivered at the next start");
            return;
        }
        tracing::info!(conversation = %self.key, message = %message.id, "delivering a reminder");
        outbox.resume(
            Some(TurnId::from(message.id.as_str())),
            ReplyState::new(None),
            "",
            &message.text,
        );
        outbox.finish();
    }

    async fn mark_done(&self, id: &str) {
        let (key, id) = (self.key.clone(), id.to_string());
        let done = self
            .shared
            .store
            .commit(move |s| s.set_inbound_state_unflushed(&key, &id, InboundState::Done))
            .await;
        if let Err(e) = done {
            tracing::warn!(conversation = %self.key, error = %e, "a scheduled occurrence could not be marked done");
        }
    }

    /// The check command of a job's occurrence, read from its task.
    fn check_of(&self, message: &Inbound) -> Option<(u64, String)> {
        if occurrence::kind_of(message) != Some(Occurrence::Job) {
            return None;
        }
        let id = clawpen_protocol::scheduled_task(&message.id)?;
        match self.shared.store.task(id) {
            Ok(Some(task)) => match task.kind {
                TaskKind::Job { check, .. } => check.map(|c| (id, c)),
                TaskKind::Reminder { .. } => None,
            },
            _ => None,
        }
    }

    /// Runs the checks of the jobs among `messages` in the attached box; returns the
    /// messages that go on to the model (a passed check's output added to its job's text).
    pub(super) async fn run_checks(&mut self, messages: Vec<Inbound>) -> Vec<Inbound> {
        let mut kept = Vec::with_capacity(messages.len());
        for mut message in messages {
            let container = self.session.as_ref().map(|s| s.conn.container.clone());
            let (Some((task, check)), Some(container)) = (self.check_of(&message), container)
            else {
                kept.push(message);
                continue;
            };
            let ran = self
                .shared
                .sandbox
                .run_in_box(&container, &check, CHECK_LIMIT)
                .await;
            let outcome = match ran {
                Ok(ran) if ran.code == Some(0) => {
                    message.text.push_str(&format!(
                        "\n\nOutput of the check command `{check}` (it exited 0):\n```\n{}\n```",
                        ran.output.trim_end()
                    ));
                    kept.push(message);
                    continue;
                }
                Ok(ran) => {
                    let why = match ran.code {
                        Some(code) => format!("exited {code}"),
                        None => format!("did not finish within {} s", CHECK_LIMIT.as_secs()),
                    };
                    tracing::info!(conversation = %self.key, task, why, "the check found nothing to do; the model is not woken");
                    format!("check {why}: nothing to do")
                }
                Err(e) => {
                    tracing::warn!(conversation = %self.key, task, error = %e, "a task's check could not run");
                    if let Some(outbox) = self.outbox() {
                        let text = format!("⚠️ Task #{task}: its check could not run ({e}). The task stays scheduled.");
                        outbox.notice(ReplyState::new(None), &text);
                    }
                    format!("failed: the check could not run ({e})")
                }
            };
            self.mark_done(&message.id).await;
            let store = self.shared.store.clone();
            let noted = store
                .blocking(move |s| s.note_task_outcome(task, &outcome))
                .await;
            if let Err(e) = noted {
                tracing::debug!(conversation = %self.key, task, error = %e, "the check's outcome was not recorded");
            }
        }
        kept
    }
}

/// A turn with scheduled runs in it failed: each run's task records why (in the
/// background; the chat is told by the turn's own error text).
pub(super) fn note_failure(shared: &Shared, messages: &[TurnMessage], error: &str) {
    let tasks: Vec<u64> = messages
        .iter()
        .filter_map(|m| clawpen_protocol::scheduled_task(&m.id))
        .collect();
    if tasks.is_empty() {
        return;
    }
    let (store, outcome) = (shared.store.clone(), format!("failed: {error}"));
    shared.tracker.spawn(async move {
        for task in tasks {
            let outcome = outcome.clone();
            let noted = store
                .blocking(move |s| s.note_task_outcome(task, &outcome))
                .await;
            if let Err(e) = noted {
                tracing::debug!(task, error = %e, "a failed run's outcome was not recorded");
            }
        }
    });
}
