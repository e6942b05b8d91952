//! The reply side of an actor: what comes out of the box (events, requests, garbage) and
//! how it becomes platform messages, persisted before it is acknowledged.

use std::sync::Arc;

use clawpen_adapters::reply::ReplyState;
use clawpen_protocol::{Event, EventBody, FromAgent, Request, ToAgent};

use super::caps;
use super::noise::Log;
use super::sequence::{AfterState, Verdict};
use super::{Actor, Turn, FINISHED_KEPT};
use crate::metrics::TurnFailure;
use crate::router::delivery::{Outbox, Side};
use crate::router::turn::{error_text, now_secs, Stopped};
use crate::sandbox::BoxOutput;
use crate::store::{StoreError, TurnRecord};
use clawpen_domain::{MessageRef, TurnId};

impl Actor {
    pub(super) async fn on_output(&mut self, output: BoxOutput) {
        // A box's output is a sign of life for its turn, never activity of the
        // conversation: a box that writes while idle does not keep its slot by it.
        if let Some(turn) = self.turn.as_mut() {
            turn.last_sign = self.shared.config.clock.now();
        }
        match output {
            BoxOutput::Message(FromAgent::Event(event)) => self.on_event(event).await,
            BoxOutput::Message(FromAgent::State {
                version: Some(version),
                ..
            })
            | BoxOutput::Message(FromAgent::Ready { version, .. })
                if !supported(version) =>
            {
                self.incompatible(version).await
            }
            BoxOutput::Message(FromAgent::State {
                running,
                finished,
                last_seq,
                acked,
                ..
            }) => self.on_state(running, finished, last_seq, acked).await,
            BoxOutput::Message(FromAgent::Ready { version, provider }) => {
                tracing::debug!(conversation = %self.key, version, provider, "agent ready");
            }
            BoxOutput::Message(FromAgent::Heartbeat) => {}
            BoxOutput::Message(FromAgent::Abort { id }) => self.on_abort(id),
            BoxOutput::Message(FromAgent::Request {
                id,
                request,
                window,
            }) => self.on_request(id, request, window),
            BoxOutput::Message(FromAgent::Credit { id, parts }) => self.on_credit(id, parts),
            BoxOutput::Message(FromAgent::Rejected { reason }) => self.on_rejected(reason).await,
            BoxOutput::Malformed(reason) => {
                let now = self.now();
                if let Some(session) = self.session.as_mut() {
                    if let Log::This { suppressed } = session.malformed.occurred(now) {
                        tracing::warn!(conversation = %self.key, reason, suppressed, "malformed line from the box (one a minute is logged; `suppressed` counts the rest of the minute before)");
                    }
                }
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
        let Some(session) = self.session.as_mut() else {
            return;
        };
        // Taken even when this session sent no `Resume` for it: the answer to one sent by
        // the bridge before a restart can come on the new attach, and the agent's word on
        // where its events stand is what the sequencer goes by (a box that lies about it
        // garbles only its own replies).
        if session.states_due == 0 {
            tracing::debug!(conversation = %self.key, "a State this session did not ask for");
        }
        session.states_due = session.states_due.saturating_sub(1);
        // Turns the agent finished are never answered in a new reply, even when their last
        // events come again after a restart of the bridge.
        for id in &finished {
            self.remember_finished(&TurnId::from(id.as_str()));
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
                self.restart_numbering(last_seq).await;
            }
            AfterState::Skip { seq, lost } => {
                tracing::warn!(conversation = %self.key, lost, seq, "events the box no longer holds were skipped");
            }
        }
        let processed = self.session.as_ref().and_then(|s| s.seq.acked());
        // Only what is stored is acknowledged: events of the running turn processed but
        // not yet stored are acknowledged once their text is (`store_progress`). Were they
        // acknowledged here, the agent would forget them, and a crash before the store
        // would leave a restarted bridge nothing to replay: a gap in the reply.
        let stored = match self.turn.as_ref() {
            Some(turn) => processed.map(|seq| seq.min(turn.progress.stored_seq())),
            None => processed,
        };
        if let Some(seq) = stored.filter(|&seq| seq > 0) {
            // Frees what an adopted box held for the bridge before this one.
            self.send_to_box(&ToAgent::Ack { seq }).await;
        }
        // The running turn, if the box never received it (its agent is a new process, or
        // the bridge stopped before sending it).
        let Some(unknown) = self.turn.as_ref().filter(|t| {
            resync
                && running.as_deref() != Some(t.record.turn.as_str())
                && !finished.iter().any(|f| *f == *t.record.turn.as_str())
        }) else {
            return;
        };
        if unknown.messages.is_empty() {
            // A turn the agent began itself, in a process that is gone: there is nothing to
            // send it again, so it ends with a word rather than a blank answer.
            if let Some(turn) = self.turn.as_mut() {
                let note = error_text(turn.progress.text(), LOST_TURN);
                self.shared.metrics.turn_failed(TurnFailure::Lost);
                turn.progress.note(&note);
                if let Some(outbox) = self.outbox() {
                    outbox.push(&note);
                }
            }
            self.finish_turn().await;
            return;
        }
        let request = ToAgent::Turn {
            turn: unknown.record.turn.to_string(),
            messages: unknown.messages.clone(),
            options: self.turn_options(),
        };
        tracing::info!(conversation = %self.key, "the box does not know the running turn; sending it again");
        if let Some(turn) = self.turn.as_mut() {
            // Its answer starts over: it replaces what the lost process had streamed.
            turn.progress.clear();
            if let Some(outbox) = self.outbox() {
                outbox.restart();
            }
        }
        self.send_to_box(&request).await;
    }

    /// The box's agent is a new process, numbering its events from 1 again: the running
    /// turn's stored text (numbered by the old process) goes, so that the new numbering
    /// starts a text of its own.
    async fn restart_numbering(&mut self, last_seq: u64) {
        // A write under way belongs to the old numbering; it is settled first.
        self.settle_commit().await;
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        turn.record.last_acked = last_seq;
        turn.record.legacy = None;
        turn.progress.restarted(last_seq);
        let record = turn.record.clone();
        if let Err(e) = self
            .shared
            .store
            .commit(move |s| s.restart_turn(&record))
            .await
        {
            tracing::warn!(conversation = %self.key, error = %e, "could not store the restart of the turn's numbering");
        }
    }

    /// Notes a turn as finished, so late events of its never open a new reply (bounded).
    fn remember_finished(&mut self, id: &TurnId) {
        if self.finished.contains(id) {
            return;
        }
        if self.finished.len() >= FINISHED_KEPT {
            self.finished.pop_front();
        }
        self.finished.push_back(id.clone());
    }

    /// Perform a box's request in its own task, streaming the response back to the box
    /// (within its window, see `requests`), so a long model response never holds up the
    /// conversation.
    pub(super) fn on_request(&mut self, id: u64, request: Request, window: Option<u32>) {
        self.perform_request(id, request, window);
    }

    /// The box gave up on a request: stop performing it (dropping a model response
    /// closes its connection, so the provider stops generating).
    fn on_abort(&mut self, id: u64) {
        self.abort_request(id);
    }

    /// Hot path: every event of every streaming reply. The text is shown at once; storing
    /// it is handed to the store's committer (never awaited here), and the event is
    /// acknowledged once it is durable ([`Actor::on_stored`]).
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
            && !self.finished.iter().any(|f| *f == *event.turn)
            && !matches!(event.body, EventBody::Final)
        {
            // The agent began a turn of its own: follow-ups that reached it just after it
            // finished the last turn are answered in a new reply.
            self.agent_turn(&event.turn).await;
        }
        let outbox = self.outbox();
        let Some(turn) = self.turn.as_mut().filter(|t| t.record.turn == *event.turn) else {
            // Nothing of ours is waiting for it (a turn already finished); acknowledged with
            // the rest, never ahead of text still being stored.
            self.store_progress().await;
            return;
        };
        let limits = &{ self.shared.config.reply_limits };
        let stopped = turn.cancelled.is_some();
        let progress = &mut turn.progress;
        let side_done = progress.side_done(event.seq);
        match event.body {
            EventBody::TextDelta { text } => {
                let len = progress.text().len();
                let text = match turn.overflow.text(limits, len, &text, stopped) {
                    caps::Take::All => text,
                    caps::Take::Cut { keep } => {
                        format!("{}{}", &text[..keep], caps::size_note(limits))
                    }
                    caps::Take::Nothing => String::new(),
                };
                if !text.is_empty() {
                    progress.push(event.seq, &text);
                    if let Some(outbox) = &outbox {
                        outbox.push(&text);
                    }
                }
            }
            EventBody::Retract { .. } if stopped || progress.text().len() >= limits.bytes => {}
            EventBody::Retract { bytes } => {
                progress.retract(event.seq, bytes);
                if let Some(outbox) = &outbox {
                    // The shown messages are edited back to the text that remains.
                    outbox.restart();
                    outbox.push(progress.text());
                }
            }
            EventBody::Error { message } => {
                self.shared.metrics.turn_failed(TurnFailure::AgentError);
                super::scheduled::note_failure(&self.shared, &turn.messages, &message);
                let text = error_text(progress.text(), &message);
                progress.push(event.seq, &text);
                if let Some(outbox) = &outbox {
                    outbox.push(&text);
                }
            }
            EventBody::Status { .. } | EventBody::File { .. } if stopped => {}
            EventBody::Status { text } if !side_done => side(&outbox, Side::Status(text)),
            EventBody::Message { text } if !side_done => {
                match turn.overflow.message(limits, text.len(), stopped) {
                    caps::Send::Yes => side(&outbox, Side::Message(text)),
                    caps::Send::Note => side(&outbox, Side::Message(caps::messages_note(limits))),
                    caps::Send::No => {}
                }
            }
            EventBody::File { path } if !side_done => {
                let container = turn.record.container.clone();
                side(&outbox, Side::Upload { container, path });
            }
            EventBody::Status { .. } | EventBody::Message { .. } | EventBody::File { .. } => {}
            EventBody::Final => {
                if !self.finish_turn().await {
                    // Left unacknowledged: the box replays it once the store writes again.
                    return;
                }
            }
        }
        if self
            .turn
            .as_ref()
            .is_some_and(|t| t.overflow.flooding(limits))
        {
            let kb = u64::try_from(limits.bytes / 1024).unwrap_or(u64::MAX);
            self.stop_box(Stopped::Flooding(kb)).await;
            return;
        }
        self.store_progress().await;
    }

    /// Hands the running turn's changed text to the store, unless a write is under way
    /// (what changes meanwhile goes with the next one); with nothing to store, acknowledges
    /// every event processed.
    async fn store_progress(&mut self) {
        if self.turn.as_ref().is_some_and(|t| t.progress.storing()) {
            return;
        }
        let Some((chunk, id)) = self
            .turn
            .as_mut()
            .and_then(|t| Some((t.progress.cut()?, t.record.turn.clone())))
        else {
            let processed = self.session.as_ref().and_then(|s| s.seq.acked());
            if let Some(seq) = processed.filter(|&seq| seq > 0) {
                self.send_to_box(&ToAgent::Ack { seq }).await;
            }
            return;
        };
        let key = self.key.clone();
        let pending = self
            .shared
            .store
            .submit_soon(move |s| s.append_text(&key, &id, chunk.seq, chunk.at, &chunk.text))
            .await;
        if let Some(turn) = self.turn.as_mut() {
            turn.commit = Some(pending);
        }
    }

    /// The running turn's store write is done: acknowledge what it made durable and store
    /// what changed meanwhile; or, if it failed, go back to the stored text.
    pub(super) async fn on_stored(&mut self, result: Result<(), StoreError>) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        turn.commit = None;
        if let Err(e) = result {
            tracing::debug!(conversation = %self.key, error = %e, "reply progress not stored");
            self.not_durable();
            return;
        }
        turn.progress.stored_ok();
        turn.record.last_acked = turn.progress.stored_seq();
        let stored = turn.progress.stored_seq();
        let more = turn.progress.dirty();
        self.store_ok();
        if more {
            // Events after the stored one wait for their own text to be stored.
            if stored > 0 {
                self.send_to_box(&ToAgent::Ack { seq: stored }).await;
            }
        }
        self.store_progress().await;
    }

    /// Waits for the running turn's store write, if one is under way. False if it failed
    /// (the turn is then back at its stored text, see [`Actor::not_durable`]).
    async fn settle_commit(&mut self) -> bool {
        let Some(commit) = self.turn.as_mut().and_then(|t| t.commit.take()) else {
            return true;
        };
        match commit.await {
            Ok(()) => {
                if let Some(turn) = self.turn.as_mut() {
                    turn.progress.stored_ok();
                    turn.record.last_acked = turn.progress.stored_seq();
                }
                true
            }
            Err(e) => {
                tracing::debug!(conversation = %self.key, error = %e, "reply progress not stored");
                self.not_durable();
                false
            }
        }
    }

    /// Reply text could not be made durable (a full or failing disk): back to the stored
    /// text, shown again as such, with the events after it unacknowledged; the box keeps
    /// them, and replays them once the store writes again ([`Actor::replay_due`]), so
    /// nothing is lost or shown twice.
    fn not_durable(&mut self) {
        let processed = self
            .session
            .as_ref()
            .and_then(|s| s.seq.acked())
            .unwrap_or(0);
        let outbox = self.outbox();
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        turn.commit = None;
        let stored_seq = turn.progress.stored_seq();
        let text = turn.progress.stored_failed(processed);
        if let Some(outbox) = &outbox {
            outbox.restart();
            outbox.push(text);
        }
        let wait = self.store_failed();
        if let Some(session) = self.session.as_mut() {
            session.seq.rewind(stored_seq);
            session.replay_at = Some(self.shared.config.clock.now() + wait);
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
        if !std::mem::take(&mut self.owed_turn) {
            // Its events are acknowledged and dropped with those of finished turns.
            tracing::debug!(conversation = %self.key, turn = id, "the box began a turn nobody asked for; ignored");
            return;
        }
        // A follow-up that reached the agent after it had finished the last turn is what
        // this turn answers (`<last turn>+<n>`): its reply is a reply to that message.
        let reply_to = self
            .late_follow_up
            .as_ref()
            .filter(|(last, _)| {
                id.strip_prefix(last.as_str())
                    .is_some_and(|rest| rest.starts_with('+'))
            })
            .map(|(_, message)| MessageRef(message.clone()));
        let record = TurnRecord::new(
            self.key.clone(),
            TurnId::from(id),
            session.conn.container.clone(),
            session.seq.acked().unwrap_or(0),
            reply_to,
            now_secs(),
        );
        let Some(outbox) = self.outbox() else {
            return;
        };
        let stored = record.clone();
        if let Err(e) = self
            .shared
            .store
            .commit(move |s| s.put_turn_unflushed(&stored))
            .await
        {
            tracing::warn!(conversation = %self.key, error = %e, "could not persist the agent's turn");
        }
        tracing::debug!(conversation = %self.key, turn = id, "the agent started a turn");
        outbox.begin(Some(record.turn.clone()), ReplyState::new(None));
        self.shared.metrics.turn_started(&self.key);
        self.turn = Some(Turn::new(
            record,
            Vec::new(),
            self.now(),
            self.typing_start(),
        ));
    }

    /// The turn is over: its messages are answered and its reply's final text is kept with
    /// its delivery, in one step; the delivery task shows the rest of it (however long the
    /// platform makes it wait) while the conversation goes on. False, with the turn still
    /// running and back at its stored text, if that step could not be stored.
    pub(super) async fn finish_turn(&mut self) -> bool {
        let Some(turn) = self.turn.as_ref() else {
            return true;
        };
        let mut record = turn.record.clone();
        record.text = turn.progress.text().to_string();
        let blank = record.text.trim().is_empty();
        if blank {
            record.text.push_str(BLANK_REPLY);
        }
        let turn_id = record.turn.clone();
        // Behind a chunk still being stored, if there is one: the end is applied after it,
        // and the end's flush makes both durable.
        let ended = self
            .shared
            .store
            .commit(move |s| s.complete_turn_unflushed(&record))
            .await;
        if let Err(e) = ended {
            tracing::debug!(conversation = %self.key, error = %e, "the finished turn was not recorded");
            // Back to the stored text, with the chunk before it if that was stored (a
            // failed chunk went back already).
            if self.settle_commit().await {
                self.not_durable();
            }
            return false;
        }
        // The end holds the whole text: how the chunk before it went no longer matters.
        self.store_ok();
        self.late_follow_up = self
            .turn
            .take()
            .and_then(|t| Some((turn_id.clone(), t.record.last_follow_up()?.to_owned())));
        self.owed_turn = self.late_follow_up.is_some();
        self.shared.metrics.turn_finished(&self.key);
        self.remember_finished(&turn_id);
        if let Some(outbox) = self.outbox() {
            if blank {
                outbox.push(BLANK_REPLY);
            }
            outbox.finish();
        }
        self.last_activity = self.now();
        true
    }

    pub(super) fn typing(&mut self) {
        let Some(adapter) = self.shared.adapter(&self.key) else {
            return;
        };
        let interval = adapter.capabilities().typing_interval;
        if let Some(turn) = self.turn.as_mut() {
            turn.next_typing = interval.map(|i| self.shared.config.clock.now() + i);
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

/// Hands a side operation to the delivery, if there is one.
fn side(outbox: &Option<Arc<Outbox>>, op: Side) {
    if let Some(outbox) = outbox {
        outbox.side(op);
    }
}

/// Whether the bridge can speak with an agent of protocol `version`.
fn supported(version: u32) -> bool {
    (clawpen_protocol::MIN_VERSION..=clawpen_protocol::VERSION).contains(&version)
}
