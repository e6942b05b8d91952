//! The router's side of the scheduler: a handle the scheduler holds without keeping the
//! router alive, and the hand-over of occurrences the scheduler has stored already.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use clawpen_adapters::Inbound;

use super::actor::Command;
use super::{Router, Shared};
use crate::schedule::Scheduler;

/// A handle to the router that does not keep it alive (the scheduler's: the router holds
/// the scheduler, and a cycle would keep the store open after shutdown).
#[derive(Clone, Debug, Default)]
pub struct WeakRouter {
    shared: Weak<Shared>,
}

impl WeakRouter {
    /// The router, while it exists.
    pub fn upgrade(&self) -> Option<Router> {
        self.shared.upgrade().map(|shared| Router { shared })
    }
}

impl Router {
    /// A handle that does not keep the router alive.
    pub fn downgrade(&self) -> WeakRouter {
        WeakRouter {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Gives the router its scheduler (once; later calls are ignored).
    pub fn set_scheduler(&self, scheduler: Scheduler) {
        let _ = self.shared.scheduler.set(scheduler);
    }

    /// Whether an adapter of this platform is configured (the terminal always is).
    pub fn has_platform(&self, platform: &str) -> bool {
        self.shared.adapters.contains_key(platform)
    }

    /// Hands a message the scheduler stored already (an occurrence) to its conversation's
    /// actor. While shutting down it stays pending in the store for the next start.
    pub(crate) async fn hand_over(&self, message: Inbound) {
        if !self.shared.accepting.load(Ordering::SeqCst) {
            return;
        }
        self.shared
            .metrics
            .accepted(&message.conversation, message.addressed);
        let key = message.conversation.clone();
        self.dispatch(&key, Command::Inbound(Box::new(message)))
            .await;
    }
}
