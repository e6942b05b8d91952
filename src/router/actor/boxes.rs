//! The box side of an actor: getting a box, re-attaching after a restart, and what
//! happens when a box goes idle, stalls or dies.

use std::future::Future;
use std::task::Poll;

use clawpen_adapters::reply::ReplyState;
use clawpen_protocol::{ToAgent, TurnMessage};

use super::{Actor, Requests, Sequencer, Session, Turn};
use crate::metrics::TurnFailure;
use crate::router::turn::{box_gone_message, error_text, turn_message};
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
        self.send_to_box(&ToAgent::Resume { version, after }).await;
    }

    pub(super) async fn send_to_box(&mut self, message: &ToAgent) -> bool {
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
        outbox.resume(Some(record.turn.clone()), shown, &record.text);
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

    pub(super) async fn stalled(&mut self) {
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
    pub(super) async fn box_gone(&mut self) {
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
            return;
        };
        let message = box_gone_message(exit.as_ref(), turn.stalled);
        let failure = turn
            .stalled
            .map_or(TurnFailure::BoxGone, |_| TurnFailure::Stalled);
        self.shared.metrics.turn_failed(failure);
        tracing::warn!(conversation = %self.key, r#box = ?container, message, "turn ended by the box going away");
        let text = error_text(turn.progress.text(), &message);
        turn.progress.note(&text);
        if let Some(outbox) = self.outbox() {
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
