//! The box side of an actor: getting a box, re-attaching after a restart, and what
//! happens when a box goes idle, stalls or dies.

use std::future::Future;
use std::task::Poll;

use clawpen_adapters::reply::ReplyState;
use clawpen_protocol::{ToAgent, TurnMessage};

use super::{Actor, Requests, Sequencer, Session, Turn};
use crate::metrics::TurnFailure;
use crate::router::turn::{box_gone_message, error_text, turn_message, Stopped};
use crate::router::ConversationState;
use crate::sandbox::{BoxExit, SandboxError};
use crate::store::{InboundState, TurnRecord};

impl Actor {
    /// Attach a box to this conversation: wait for a slot, start it, attach, resume.
    pub(super) async fn ensure_session(&mut self) -> Result<(), SandboxError> {
        if self.session.is_some() {
            return Ok(());
        }
        // Where its files are: a volume claimed from the warm pool, or (None) the one named
        // after it. Unreadable, no box is started rather than one on an empty workspace.
        let claimed = self
            .shared
            .store
            .claimed_workspace(&self.key)
            .await
            .map_err(|e| SandboxError::Protocol(format!("cannot read its workspace: {e}")))?;
        if let Some(session) = self.claim_warm(claimed.as_deref()).await {
            self.session = Some(session);
            self.last_activity = self.now();
            return Ok(());
        }
        // Its first poll puts the acquire in the semaphore's fair queue; only then is the
        // conversation shown as waiting, so "waiting for a box slot" means its place is taken.
        let acquire = self.shared.slots.clone().acquire_owned();
        tokio::pin!(acquire);
        let first = std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
        let permit = match first {
            Poll::Ready(permit) => permit,
            Poll::Pending => {
                // The warm pool gives up a slot for a conversation that waits for one.
                let _waiting = self.shared.pool.slot_wait();
                self.shared.set_status(
                    &self.key,
                    None,
                    ConversationState::WaitingForSlot,
                    self.queue.len(),
                );
                tokio::select! {
                    permit = &mut acquire => permit,
                    _ = self.shared.shutdown.cancelled() => {
                        return Err(SandboxError::Protocol("shutting down".into()));
                    }
                }
            }
        }
        .map_err(|_| SandboxError::Protocol("the box slots are closed".into()))?;
        self.shared.set_status(
            &self.key,
            None,
            ConversationState::StartingBox,
            self.queue.len(),
        );
        let workspace = self.workspace(claimed);
        let started = self
            .shared
            .sandbox
            .ensure_box_on(&self.key, &workspace)
            .await?;
        let mut conn = self.shared.sandbox.attach(&started.container).await?;
        // After a fresh start nothing was acknowledged. After a re-adopt the bridge has no
        // record of the box's events: its `State` says where they stand, and the sequencer
        // asks for whatever comes after that.
        conn.send(&ToAgent::Resume {
            version: clawpen_protocol::VERSION,
            after: 0,
        })
        .await?;
        tracing::debug!(conversation = %self.key, r#box = %started.container, fresh = started.fresh, "box attached");
        self.session = Some(Session {
            conn,
            _permit: permit,
            replay_at: None,
            seq: if started.fresh {
                Sequencer::known(0)
            } else {
                Sequencer::unknown()
            },
            resync: false,
            requests: Requests::default(),
            malformed: Default::default(),
            states_due: 1,
        });
        self.last_activity = self.now();
        Ok(())
    }

    /// The agent rejected a line from the bridge. An agent of protocol version 1 rejects a
    /// `Resume` of any other version, naming its own, and gives no `State`: it is resumed
    /// again in its version (from what is processed now, which is where the first one
    /// asked), and then works as it always did. Any other rejection is only logged.
    pub(super) async fn on_rejected(&mut self, reason: String) {
        let spoken = clawpen_protocol::spoken_version(&reason)
            .filter(|v| (clawpen_protocol::MIN_VERSION..clawpen_protocol::VERSION).contains(v));
        let (Some(version), Some(session)) = (spoken, self.session.as_ref()) else {
            tracing::warn!(conversation = %self.key, reason, "the agent rejected a line from the bridge");
            return;
        };
        let after = session.seq.acked().unwrap_or(0);
        tracing::info!(conversation = %self.key, version, "the box's agent speaks an older protocol; resuming it in that version");
        if let Some(session) = self.session.as_mut() {
            // The rejected `Resume` gets no answer; the one sent now does.
            session.states_due = session.states_due.saturating_sub(1);
        }
        self.send_to_box(&ToAgent::Resume { version, after }).await;
    }

    pub(super) async fn send_to_box(&mut self, message: &ToAgent) -> bool {
        let Some(session) = self.session.as_mut() else {
            return false;
        };
        if matches!(message, ToAgent::Resume { .. }) {
            session.states_due = session.states_due.saturating_add(1);
        }
        match session.conn.send(message).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(conversation = %self.key, error = %e, "writing to the box failed");
                self.box_gone().await;
                false
            }
        }
    }

    pub(super) async fn resume(&mut self, record: TurnRecord) {
        let alive = matches!(self.shared.sandbox.inspect(&record.container).await, Ok(Some(exit)) if exit.running);
        let Some(outbox) = self.outbox() else {
            return;
        };
        // What the platform showed: the delivery record's snapshot; records written before
        // delivery had one of its own kept their parts in the turn record.
        let shown = match self.shared.store.delivery(&self.key, &record.turn) {
            Ok(Some(delivery)) => delivery.shown.map(ReplyState::from),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(conversation = %self.key, error = %e, "unreadable delivery record; the reply is shown again in new messages");
                None
            }
        };
        let shown = shown.unwrap_or_else(|| record.shown_before_delivery_records());
        outbox.resume(
            Some(record.turn.clone()),
            shown,
            &record.heading,
            &record.text,
        );
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
        self.turn = Some(Turn::new(record, messages, self.now(), self.typing_start()));
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
                        replay_at: None,
                        seq: Sequencer::known(acked),
                        resync: true,
                        requests: Requests::default(),
                        malformed: Default::default(),
                        states_due: 1,
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

    /// The stall timer or the turn's cap on duration ran out: the box is stopped.
    pub(super) async fn stalled(&mut self) {
        let config = &self.shared.config;
        let (stall, max_turn) = (config.turn_stall, config.max_turn);
        let now = self.now();
        let Some(turn) = self.turn.as_ref() else {
            return;
        };
        let reason = if now >= turn.started + max_turn {
            Stopped::TooLong(max_turn)
        } else if turn
            .cancelled
            .is_some_and(|at| now >= at + super::caps::STOP_GRACE)
        {
            Stopped::Unstoppable(super::caps::STOP_GRACE)
        } else {
            Stopped::Stalled(stall)
        };
        self.stop_box(reason).await;
    }

    /// Kills the running turn's box for `reason`, which its reply then gives.
    pub(super) async fn stop_box(&mut self, reason: Stopped) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        turn.stopped = Some(reason);
        tracing::warn!(conversation = %self.key, ?reason, "stopping the box mid-turn");
        let container = turn.record.container.clone();
        if let Err(e) = self.shared.sandbox.kill(&container).await {
            tracing::warn!(conversation = %self.key, error = %e, "could not kill the box");
        }
        self.box_gone().await;
    }

    /// The box's agent speaks a protocol version this bridge cannot use: its box is
    /// removed (the workspace stays), so the next message starts one from the current
    /// image; a running turn ends saying why.
    pub(super) async fn incompatible(&mut self, version: u32) {
        let Some(container) = self.session.as_ref().map(|s| s.conn.container.clone()) else {
            return;
        };
        let (min, max) = (clawpen_protocol::MIN_VERSION, clawpen_protocol::VERSION);
        tracing::error!(
            conversation = %self.key,
            r#box = %container,
            version,
            "the box's agent speaks protocol version {version}, and this bridge speaks {min} to \
             {max}: removing the box; the next message starts one from the current image \
             (`clawpen image build` rebuilds it)"
        );
        if self.turn.is_some() {
            self.stop_box(Stopped::Incompatible(version)).await;
        } else {
            if let Err(e) = self.shared.sandbox.kill(&container).await {
                tracing::warn!(conversation = %self.key, error = %e, "could not kill the box");
            }
            self.box_gone().await;
        }
        if let Err(e) = self.shared.sandbox.remove_container(&container).await {
            tracing::warn!(conversation = %self.key, error = %e, "could not remove the box");
        }
    }

    /// The box went away: end the running turn with a clear error; the next message
    /// starts the box again (same workspace).
    pub(super) async fn box_gone(&mut self) {
        if let Some(session) = self.session.as_mut() {
            let suppressed = session.malformed.take_suppressed();
            if suppressed > 0 {
                tracing::warn!(conversation = %self.key, count = suppressed, "more malformed lines came from the box before it went");
            }
        }
        let session = self.session.take();
        let container = session
            .as_ref()
            .map(|s| s.conn.container.clone())
            .or_else(|| self.turn.as_ref().map(|t| t.record.container.clone()));
        let exit = match &container {
            Some(c) => self.shared.sandbox.inspect(c).await.ok().flatten(),
            None => None,
        };
        if let (Some(c), true) = (&container, exit.as_ref().is_some_and(|e| e.running)) {
            // The attach broke but the box runs: stop it so the next turn starts clean and
            // no box runs unattached, outside the cap.
            let _ = self.shared.sandbox.kill(c).await;
        }
        // The slot is released once the box is down.
        drop(session);
        let Some(turn) = self.turn.as_mut() else {
            tracing::debug!(conversation = %self.key, "box detached while idle");
            // Stopped by the bridge between turns (a background job filled the workspace):
            // the chat hears why, or its next message would meet the same stop unexplained.
            if let Some(reason) = exit.and_then(|e| e.stopped_for) {
                if let Some(outbox) = self.outbox() {
                    outbox.notice(
                        ReplyState::new(None),
                        &format!("⚠️ The box was stopped: {reason}."),
                    );
                }
            }
            return;
        };
        let message = box_gone_message(exit.as_ref(), turn.stopped);
        let failure = match turn.stopped {
            None => TurnFailure::BoxGone,
            Some(Stopped::Stalled(_)) => TurnFailure::Stalled,
            Some(Stopped::TooLong(_)) => TurnFailure::TooLong,
            Some(Stopped::Flooding(_)) => TurnFailure::Flooding,
            Some(Stopped::Incompatible(_)) => TurnFailure::BoxGone,
            Some(Stopped::Unstoppable(_)) => TurnFailure::Flooding,
        };
        self.shared.metrics.turn_failed(failure);
        tracing::warn!(conversation = %self.key, r#box = ?container, message, "turn ended by the box going away");
        let text = error_text(turn.progress.text(), &message);
        turn.progress.note(&text);
        if let Some(outbox) = self.outbox() {
            // What the dead box had queued goes no further; the reply ends with why.
            outbox.drop_queued();
            outbox.push(&text);
        }
        if !self.finish_turn().await {
            // Its record stays: the next start finds the box gone and ends it again.
            self.turn = None;
            if let Some(outbox) = self.outbox() {
                outbox.finish();
            }
        }
    }

    pub(super) async fn idle_stop(&mut self) {
        let Some(container) = self.session.as_ref().map(|s| s.conn.container.clone()) else {
            return;
        };
        tracing::info!(conversation = %self.key, r#box = %container, "stopping idle box");
        if let Err(e) = self.shared.sandbox.stop(&container).await {
            // A failed stop (an engine that gave up waiting for the exit, or lost its
            // connection) may leave the box running: it keeps its slot, and its session,
            // until it is seen down.
            let down = matches!(
                self.shared.sandbox.inspect(&container).await,
                Ok(None | Some(BoxExit { running: false, .. }))
            );
            if !down {
                tracing::warn!(conversation = %self.key, error = %e, "could not stop the idle box; it keeps its slot and is stopped at its next idle deadline");
                self.last_activity = self.now();
                return;
            }
        }
        // Only now does the slot go to the next conversation: the cap counts boxes that
        // run, and this one ran until `stop` returned.
        self.session = None;
    }
}
