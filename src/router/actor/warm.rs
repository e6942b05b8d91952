//! A new conversation's box from the warm pool: claimed instead of created, when the
//! conversation has no workspace yet and wants nothing a pool box lacks.
//!
//! Hot path: a new conversation's first message waits for this. On it: one store read, one
//! engine inspect (is there a workspace named after the conversation?), one flushed store
//! write (the claim), one rename. Nothing else may be added; anything that fails falls
//! back to the cold path, which is always correct.

use clawpen_protocol::ToAgent;

use super::{Actor, Requests, Sequencer, Session};
use crate::router::turn::now_secs;

impl Actor {
    /// Claims a warm box for this conversation, if it is new (no workspace claimed from the
    /// pool, `claimed`, and none named after it) and fits the pool's settings; `None` sends
    /// it down the cold path.
    pub(super) async fn claim_warm(&mut self, claimed: Option<&str>) -> Option<Session> {
        let shared = self.shared.clone();
        if shared.pool.target() == 0 || claimed.is_some() {
            return None;
        }
        if shared.pool.ready() == 0 {
            // Nothing to claim (a burst took it all): no engine call for nothing.
            return None;
        }
        if !shared.sandbox.fits_pool(&self.key) {
            tracing::debug!(conversation = %self.key, "settings of its own: a box of its own, not a warm one");
            return None;
        }
        match shared.sandbox.has_own_workspace(&self.key).await {
            Ok(false) => {}
            // Resumed conversations keep their own workspace; an engine error is left to
            // the cold path, which reports it.
            Ok(true) | Err(_) => return None,
        }
        let ready = shared.pool.take(&shared.sandbox, &shared.tracker)?;
        // The claim is durable before the box is given anything, so the volume is never
        // taken for an unclaimed leftover (see `sandbox::pool`).
        let volume = ready.warm.volume.clone();
        if let Err(e) = shared
            .store
            .claim_workspace(&self.key, &volume, now_secs())
            .await
        {
            tracing::warn!(conversation = %self.key, error = %e, "could not store the claim of a warm box; starting a box of its own");
            shared.pool.put_back(ready);
            return None;
        }
        let mut ready = ready;
        let claimed = async {
            shared
                .sandbox
                .rename_claimed(&ready.warm, &self.key)
                .await?;
            // As after any fresh start: nothing was acknowledged yet.
            ready
                .warm
                .conn
                .send(&ToAgent::Resume {
                    version: clawpen_protocol::VERSION,
                    after: 0,
                })
                .await
        }
        .await;
        if let Err(e) = claimed {
            // The volume is this conversation's now; only the container goes. The cold
            // path starts a box of its own on that volume.
            tracing::warn!(conversation = %self.key, r#box = %ready.warm.name, error = %e, "could not take over a warm box; starting a box of its own on its workspace");
            let _ = shared
                .sandbox
                .remove_container(ready.warm.container())
                .await;
            return None;
        }
        tracing::debug!(conversation = %self.key, r#box = %ready.warm.container(), workspace = %volume, "claimed a warm box");
        Some(Session {
            conn: ready.warm.conn,
            _permit: ready.permit,
            replay_at: None,
            seq: Sequencer::known(0),
            resync: false,
            requests: Requests::default(),
            malformed: Default::default(),
            // The `Resume` sent above.
            states_due: 1,
        })
    }

    /// This conversation's workspace volume: the one it claimed from the warm pool, or the
    /// one named after it.
    pub(super) fn workspace(&self, claimed: Option<String>) -> String {
        claimed.unwrap_or_else(|| {
            crate::sandbox::spec::volume_name(self.shared.sandbox.instance(), &self.key)
        })
    }
}
