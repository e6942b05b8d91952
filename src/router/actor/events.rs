//! The reply side of an actor: what comes out of the box (events, requests, garbage) and
//! how it becomes platform messages, persisted before it is acknowledged.

use std::sync::Arc;

use clawpen_adapters::reply::ReplyState;
use clawpen_protocol::{Event, EventBody, FromAgent, Request, ToAgent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::sequence::{AfterState, Verdict};
use super::{Actor, Turn, FINISHED_KEPT, RESPONSE_CAPACITY};
use crate::metrics::TurnFailure;
use crate::router::delivery::{Outbox, Side};
use crate::router::turn::{error_text, now_secs};
use crate::sandbox::BoxOutput;
use crate::store::TurnRecord;

impl Actor {
    pub(super) async fn on_output(&mut self, output: BoxOutput) {
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
                acked,
            }) => self.on_state(running, finished, last_seq, acked).await,
            BoxOutput::Message(FromAgent::Ready { version, provider }) => {
                tracing::debug!(conversation = %self.key, version, provider, "agent ready");
            }
            BoxOutput::Message(FromAgent::Heartbeat) => {}
            BoxOutput::Message(FromAgent::Abort { id }) => self.on_abort(id),
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

    /// The agent's answer to a `Resume`, after everything it replayed: resynchronise the
    /// sequence, and resend the running turn if the box never received it.
    async fn on_state(
        &mut self,
        running: Option<String>,
        finished: Vec<String>,
        last_seq: u64,
        agent_acked: Option<u64>,
    ) {
        if self.session.is_none() {
            return;
        }
        // Turns the agent finished are never answered in a new reply, even when their last
        // events come again after a restart of the bridge.
        for id in &finished {
            self.remember_finished(id);
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let resync = std::mem::take(&mut session.resync);
        match session.seq.on_state(last_seq, agent_acked) {
            AfterState::InStep => {}
            AfterState::Replay { .. } if session.replay_at.is_some() => {
                // Events could not be stored: the replay waits for its timer, so a failing
                // disk is not asked in a loop.
                session.resync = resync;
                return;
            }
            AfterState::Replay { after } => {
                tracing::debug!(conversation = %self.key, after, last_seq, "asking the box to replay events not yet processed");
                self.send_to_box(&ToAgent::Resume {
                    version: clawpen_protocol::VERSION,
                    after,
                })
                .await;
                if let Some(session) = self.session.as_mut() {
                    // The resend decision waits for the answer to this `Resume`.
                    session.resync = resync;
                }
                return;
            }
            AfterState::AgentRestarted => {
                tracing::info!(conversation = %self.key, last_seq, "the box's agent is a new process; its numbering starts again");
                if let Some(turn) = self.turn.as_mut() {
                    turn.record.last_acked = last_seq;
                }
            }
            AfterState::Skip { seq, lost } => {
                tracing::warn!(conversation = %self.key, lost, seq, "events the box no longer holds were skipped");
            }
        }
        if let Some(seq) = self.session.as_ref().and_then(|s| s.seq.acked()) {
            if seq > 0 {
                // Frees what an adopted box held for the bridge before this one.
                self.send_to_box(&ToAgent::Ack { seq }).await;
            }
        }
        // The running turn, if the box never received it (its agent is a new process, or
        // the bridge stopped before sending it).
        let Some(unknown) = self.turn.as_ref().filter(|t| {
            resync
                && running.as_deref() != Some(t.record.turn.as_str())
                && !finished.contains(&t.record.turn)
        }) else {
            return;
        };
        if unknown.messages.is_empty() {
            // A turn the agent began itself, in a process that is gone: there is nothing to
            // send it again, so it ends with a word rather than a blank answer.
            if let Some(turn) = self.turn.as_mut() {
                let note = error_text(&turn.record.reply.text, LOST_TURN);
                self.shared.metrics.turn_failed(TurnFailure::Lost);
                turn.record.reply.text.push_str(&note);
                if let Some(outbox) = self.outbox() {
                    outbox.push(&note);
                }
            }
            self.finish_turn().await;
            return;
        }
        let request = ToAgent::Turn {
            turn: unknown.record.turn.clone(),
            messages: unknown.messages.clone(),
            options: self.turn_options(),
        };
        tracing::info!(conversation = %self.key, "the box does not know the running turn; sending it again");
        if let Some(turn) = self.turn.as_mut() {
            // Its answer starts over: it replaces what the lost process had streamed.
            turn.record.reply.text.clear();
            if let Some(outbox) = self.outbox() {
                outbox.restart();
            }
        }
        self.send_to_box(&request).await;
    }

    /// Notes a turn as finished, so late events of its never open a new reply (bounded).
    fn remember_finished(&mut self, id: &str) {
        if self.finished.iter().any(|f| f == id) {
            return;
        }
        if self.finished.len() >= FINISHED_KEPT {
            self.finished.pop_front();
        }
        self.finished.push_back(id.to_string());
    }

    /// Perform a box's request in its own task, streaming the response back to the box,
    /// so a long model response never holds up the conversation.
    pub(super) fn on_request(&mut self, id: u64, request: Request) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let input = session.conn.input();
        let (tunnel, key) = (self.shared.tunnel.clone(), self.key.clone());
        session.requests.retain(|_, request| !request.is_finished());
        let task = self.shared.tracker.spawn(async move {
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
        session.requests.insert(id, task.abort_handle());
    }

    /// The box gave up on a request: stop performing it (dropping a model response
    /// closes its connection, so the provider stops generating).
    fn on_abort(&mut self, id: u64) {
        if let Some(request) = self.session.as_mut().and_then(|s| s.requests.remove(&id)) {
            tracing::debug!(conversation = %self.key, request = id, "the box aborted a request");
            request.abort();
        }
    }

    pub(super) async fn on_event(&mut self, event: Event) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        match session.seq.check(event.seq) {
            Verdict::Take => session.seq.took(event.seq),
            // A replay of something already processed.
            Verdict::Seen => return,
            Verdict::Gap => {
                // Written before the agent handled our `Resume`; the replay brings it again,
                // after the events it must follow.
                tracing::debug!(conversation = %self.key, seq = event.seq, "event ahead of the replay; waiting for it in order");
                return;
            }
        }
        if self.turn.is_none()
            && !self.finished.contains(&event.turn)
            && !matches!(event.body, EventBody::Final)
        {
            // The agent began a turn of its own: follow-ups that reached it just after it
            // finished the last turn are answered in a new reply.
            self.agent_turn(&event.turn).await;
        }
        let outbox = self.outbox();
        let Some(turn) = self.turn.as_mut().filter(|t| t.record.turn == event.turn) else {
            // Nothing of ours is waiting for it (a turn already finished).
            self.send_to_box(&ToAgent::Ack { seq: event.seq }).await;
            return;
        };
        let mut pushed = None;
        let mut retracted = None;
        let mut finished = false;
        match event.body {
            EventBody::TextDelta { text } => pushed = Some(text),
            EventBody::Retract { bytes } => {
                retracted = Some(retract(&mut turn.record.reply.text, bytes));
            }
            EventBody::Error { message } => {
                self.shared.metrics.turn_failed(TurnFailure::AgentError);
                pushed = Some(error_text(&turn.record.reply.text, &message));
            }
            EventBody::Status { text } => side(&outbox, Side::Status(text)),
            EventBody::Message { text } => side(&outbox, Side::Message(text)),
            EventBody::File { path } => {
                let container = turn.record.container.clone();
                side(&outbox, Side::Upload { container, path });
            }
            EventBody::Final => finished = true,
        }
        if let Some(text) = &pushed {
            turn.record.reply.text.push_str(text);
        }
        // Hot path: shown at once, before the flush, which then runs while the platform
        // call is under way. Shown text can run ahead of the disk only until the flush (or,
        // after a crash, until the restart edits the messages back to what was stored).
        if let (Some(outbox), Some(text)) = (&outbox, &pushed) {
            outbox.push(text);
        }
        if let (Some(outbox), Some(_)) = (&outbox, &retracted) {
            // The shown messages are edited back to the text that remains.
            outbox.restart();
            outbox.push(&turn.record.reply.text);
        }
        let previous_ack = std::mem::replace(&mut turn.record.last_acked, event.seq);
        if finished {
            if !self.finish_turn().await {
                self.not_durable(event.seq, previous_ack, None, None);
                return;
            }
        } else if pushed.is_some() || retracted.is_some() {
            let record = turn.record.clone();
            let saved = self
                .shared
                .store
                .blocking(move |s| s.put_turn(&record))
                .await;
            if let Err(e) = saved {
                tracing::debug!(conversation = %self.key, error = %e, "reply progress not persisted");
                self.not_durable(event.seq, previous_ack, pushed.as_deref(), retracted);
                if let Some(outbox) = &outbox {
                    // Back to what is stored; the replay shows the rest again.
                    outbox.restart();
                    outbox.push(&record_text(&self.turn));
                }
                return;
            }
        }
        self.store_ok();
        self.send_to_box(&ToAgent::Ack { seq: event.seq }).await;
    }

    /// An event could not be made durable (a full or failing disk): undo it in memory and
    /// leave it unacknowledged; the box keeps it, and replays it once the store writes again
    /// ([`Actor::replay_due`]), so it is never shown twice.
    fn not_durable(
        &mut self,
        seq: u64,
        previous_ack: u64,
        pushed: Option<&str>,
        retracted: Option<String>,
    ) {
        if let Some(turn) = self.turn.as_mut() {
            turn.record.last_acked = previous_ack;
            let text = &mut turn.record.reply.text;
            if let Some(pushed) = pushed {
                text.truncate(text.len().saturating_sub(pushed.len()));
            }
            if let Some(removed) = retracted {
                text.push_str(&removed);
            }
        }
        let wait = self.store_failed();
        if let Some(session) = self.session.as_mut() {
            session.seq.rewind(seq.saturating_sub(1));
            session.replay_at = Some(Instant::now() + wait);
        }
    }

    /// Asks the box to replay what it holds after the last durable event.
    pub(super) async fn replay_due(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        session.replay_at = None;
        let after = session.seq.acked().unwrap_or(0);
        self.send_to_box(&ToAgent::Resume {
            version: clawpen_protocol::VERSION,
            after,
        })
        .await;
    }

    /// Track a turn the agent started without a `Turn` request from us.
    pub(super) async fn agent_turn(&mut self, id: &str) {
        let Some(session) = self.session.as_ref() else {
            return;
        };
        let record = TurnRecord {
            conversation: self.key.clone(),
            turn: id.to_string(),
            container: session.conn.container.clone(),
            last_acked: session.seq.acked().unwrap_or(0),
            inbound: Vec::new(),
            reply: ReplyState::new(None),
            started_at: now_secs(),
        };
        let Some(outbox) = self.outbox() else {
            return;
        };
        if let Err(e) = self.shared.store.put_turn(&record) {
            tracing::warn!(conversation = %self.key, error = %e, "could not persist the agent's turn");
        }
        tracing::debug!(conversation = %self.key, turn = id, "the agent started a turn");
        outbox.begin(Some(record.turn.clone()), record.reply.clone());
        self.shared.metrics.turn_started(&self.key);
        self.turn = Some(Turn {
            record,
            messages: Vec::new(),
            last_sign: Instant::now(),
            next_typing: self.typing_start(),
            stalled: None,
        });
    }

    /// The turn is over: its messages are answered and its reply's final text is kept with
    /// its delivery, in one step; the delivery task shows the rest of it (however long the
    /// platform makes it wait) while the conversation goes on. False, with the turn still
    /// running, if that step could not be stored.
    pub(super) async fn finish_turn(&mut self) -> bool {
        let Some(turn) = self.turn.as_ref() else {
            return true;
        };
        let mut record = turn.record.clone();
        let blank = record.reply.text.trim().is_empty();
        if blank {
            record.reply.text.push_str(BLANK_REPLY);
        }
        let turn_id = record.turn.clone();
        if let Err(e) = self
            .shared
            .store
            .blocking(move |s| s.complete_turn(&record))
            .await
        {
            tracing::debug!(conversation = %self.key, error = %e, "the finished turn was not recorded");
            return false;
        }
        self.turn = None;
        self.shared.metrics.turn_finished(&self.key);
        self.remember_finished(&turn_id);
        if let Some(outbox) = self.outbox() {
            if blank {
                outbox.push(BLANK_REPLY);
            }
            outbox.finish();
        }
        self.last_activity = Instant::now();
        true
    }

    pub(super) fn typing(&mut self) {
        let Some(adapter) = self.shared.adapter(&self.key) else {
            return;
        };
        let interval = adapter.capabilities().typing_interval;
        if let Some(turn) = self.turn.as_mut() {
            turn.next_typing = interval.map(|i| Instant::now() + i);
        }
        if let Some(outbox) = self.outbox() {
            outbox.side(Side::Typing);
        }
    }
}

/// What a turn the agent began itself says when a restart of its box lost it.
const LOST_TURN: &str =
    "This answer was cut short when the agent's box restarted. Send your message again to retry.";

/// What a turn that ends with no text at all shows.
const BLANK_REPLY: &str = "(the agent finished without a reply)";

/// Withdraws the last `bytes` bytes of `text`, never splitting a char; returns them.
fn retract(text: &mut String, bytes: u64) -> String {
    let mut keep = text
        .len()
        .saturating_sub(usize::try_from(bytes).unwrap_or(usize::MAX));
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    text.split_off(keep)
}

/// The running turn's reply text as acknowledged.
fn record_text(turn: &Option<Turn>) -> String {
    turn.as_ref()
        .map(|t| t.record.reply.text.clone())
        .unwrap_or_default()
}

/// Hands a side operation to the delivery, if there is one.
fn side(outbox: &Option<Arc<Outbox>>, op: Side) {
    if let Some(outbox) = outbox {
        outbox.side(op);
    }
}

#[cfg(test)]
mod tests {
    use super::retract;

    #[test]
    fn retracting_withdraws_bytes_from_the_end_without_splitting_a_char() {
        let mut text = "answer: déjà".to_string();
        retract(&mut text, 3);
        assert_eq!(text, "answer: dé");
        // One byte back lands inside the two bytes of "é": the cut moves back to its start.
        retract(&mut text, 1);
        assert_eq!(text, "answer: d");
        retract(&mut text, 100);
        assert_eq!(text, "");
    }
}
