//! The box's requests being performed, and the flow control of their answers.
//!
//! Each request runs in a task of its own, so a long model answer never holds up the
//! conversation; the task streams the answer back to the box as `Response` lines. A request
//! that came with a `window` (from an agent of protocol version 2 or later) is answered no
//! faster than its reader in the box takes the parts: the task sends at most the window
//! ahead of what the agent has granted ([`Window`]) and waits for the agent's `Credit`
//! when it has none left. Behind it the provider's stream waits too (the task's queue is
//! bounded, and an unread response body holds the provider back by TCP flow control), so
//! neither side buffers more than a window however slow the reader. A request without a
//! window is answered as fast as the box reads its stdin, as agents of version 1 expect.
//! Task requests (protocol version 3) go to the scheduler instead of the tunnel, and are
//! answered the same way.

use std::collections::HashMap;

use clawpen_protocol::{Request, ResponsePart, ToAgent};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::Actor;
use crate::schedule::is_task_request;

/// Response parts performed but not yet written to the box. When full, the request's
/// performer waits (and the provider with it) until the box, or the reader's credit,
/// takes more: a slow box slows only its own responses.
const RESPONSE_CAPACITY: usize = 32;

/// The bridge's side of one answer's flow control, with no I/O: how many parts it may
/// still send to the box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// Parts the agent allows in all (its window plus its grants); `None` without flow
    /// control.
    allowed: Option<u64>,
    /// Parts sent so far.
    sent: u64,
}

impl Window {
    /// The window a request came with; `None` means no flow control.
    pub(crate) fn new(window: Option<u32>) -> Self {
        Self {
            allowed: window.map(u64::from),
            sent: 0,
        }
    }

    /// The agent granted `parts` more. The box chooses the number, so it only ever adds,
    /// without overflowing: a box granting without bound only gets its answers unpaced.
    pub(crate) fn grant(&mut self, parts: u64) {
        if let Some(allowed) = self.allowed.as_mut() {
            *allowed = allowed.saturating_add(parts);
        }
    }

    /// Whether one more part may go now.
    pub(crate) fn open(&self) -> bool {
        self.allowed.is_none_or(|allowed| self.sent < allowed)
    }

    /// One part went to the box.
    pub(crate) fn sent(&mut self) {
        self.sent = self.sent.saturating_add(1);
    }
}

/// The requests being performed for one attached box, by the box's request id. Dropping
/// it (the box went away) stops them all.
#[derive(Debug, Default)]
pub(super) struct Requests {
    running: HashMap<u64, Running>,
}

/// One request being performed.
#[derive(Debug)]
struct Running {
    /// Stops the task performing it.
    task: AbortHandle,
    /// What the agent has granted in all, for the task. A watch, so that handing on a
    /// grant never waits and grants the task has not seen yet add up; dropping it ends a
    /// task waiting for credit.
    granted: watch::Sender<u64>,
}

impl Requests {
    /// Track a request's task; a request reusing a running one's id replaces it.
    fn insert(&mut self, id: u64, running: Running) {
        self.running
            .retain(|_, running| !running.task.is_finished());
        if let Some(old) = self.running.insert(id, running) {
            old.task.abort();
        }
    }

    /// The agent's reader took `parts` more of request `id`'s answer.
    fn credit(&self, id: u64, parts: u32) {
        if let Some(running) = self.running.get(&id) {
            running
                .granted
                .send_modify(|granted| *granted = granted.saturating_add(u64::from(parts)));
        }
    }

    /// Stop performing request `id`; false if it was not running.
    fn abort(&mut self, id: u64) -> bool {
        match self.running.remove(&id) {
            Some(running) => {
                running.task.abort();
                true
            }
            None => false,
        }
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        for (_, running) in self.running.drain() {
            running.task.abort();
        }
    }
}

impl Actor {
    /// Perform a box's request in its own task, streaming the answer back to the box
    /// within the request's window, if it has one.
    pub(super) fn perform_request(&mut self, id: u64, request: Request, window: Option<u32>) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let input = session.conn.input();
        let (tunnel, key) = (self.shared.tunnel.clone(), self.key.clone());
        let scheduler = self.shared.scheduler.get().cloned();
        // A scheduled run may not schedule (reminders must not multiply), unless someone
        // wrote to the agent during it and may have asked for it.
        let scheduled_run = self.turn.as_ref().is_some_and(|turn| {
            let scheduled = |id: &str| clawpen_protocol::scheduled_task(id).is_some();
            turn.messages.iter().any(|m| scheduled(&m.id))
                && !turn
                    .messages
                    .iter()
                    .any(|m| m.addressed && !scheduled(&m.id))
        });
        let (granted, mut grants) = watch::channel(0u64);
        let task = self.shared.tracker.spawn(async move {
            let (parts, mut rx) = mpsc::channel(RESPONSE_CAPACITY);
            let perform = async {
                match (is_task_request(&request), scheduler) {
                    (true, Some(scheduler)) => {
                        scheduler.perform(&key, request, scheduled_run, parts).await;
                    }
                    (true, None) => {
                        let message = "scheduled tasks are not available here".to_string();
                        let _ = parts.send(ResponsePart::Failed { message }).await;
                    }
                    (false, _) => tunnel.perform(&key, request, parts).await,
                }
            };
            let forward = async {
                let mut window = Window::new(window);
                let mut seen = 0;
                while let Some(part) = rx.recv().await {
                    while !window.open() {
                        // Out of credit until the reader in the box takes more. A request
                        // forgotten meanwhile (aborted, its box gone) ends here, and the
                        // performer with it.
                        if grants.changed().await.is_err() {
                            return;
                        }
                        let total = *grants.borrow_and_update();
                        window.grant(total.saturating_sub(seen));
                        seen = total;
                    }
                    window.sent();
                    if input.send(&ToAgent::Response { id, part }).await.is_err() {
                        return;
                    }
                }
            };
            tokio::join!(perform, forward);
        });
        let running = Running {
            task: task.abort_handle(),
            granted,
        };
        session.requests.insert(id, running);
    }

    /// The box gave up on a request: stop performing it (dropping a model response
    /// closes its connection, so the provider stops generating).
    pub(super) fn abort_request(&mut self, id: u64) {
        if let Some(session) = self.session.as_mut() {
            if session.requests.abort(id) {
                tracing::debug!(conversation = %self.key, request = id, "the box aborted a request");
            }
        }
    }

    /// The box's reader took `parts` more of request `id`'s answer: that many more may go.
    pub(super) fn on_credit(&mut self, id: u64, parts: u32) {
        if let Some(session) = self.session.as_ref() {
            session.requests.credit(id, parts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn a_window_allows_what_was_granted_and_no_more() {
        let mut window = Window::new(Some(2));
        assert!(window.open());
        window.sent();
        window.sent();
        assert!(!window.open(), "past the window");
        window.grant(1);
        assert!(window.open());
        window.sent();
        assert!(!window.open());
        // Grants before they are needed add up.
        window.grant(2);
        window.grant(1);
        for _ in 0..3 {
            assert!(window.open());
            window.sent();
        }
        assert!(!window.open());
    }

    #[test]
    fn a_window_of_nothing_waits_for_a_grant() {
        let mut window = Window::new(Some(0));
        assert!(!window.open());
        window.grant(1);
        assert!(window.open());
    }

    #[test]
    fn without_a_window_everything_goes_and_grants_change_nothing() {
        let mut window = Window::new(None);
        for _ in 0..10_000 {
            assert!(window.open());
            window.sent();
        }
        window.grant(5);
        assert_eq!(window, {
            let mut same = Window::new(None);
            for _ in 0..10_000 {
                same.sent();
            }
            same
        });
    }

    #[test]
    fn a_box_granting_without_bound_cannot_overflow_the_count() {
        let mut window = Window::new(Some(u32::MAX));
        window.grant(u64::MAX);
        window.grant(u64::MAX);
        assert!(window.open());
        window.sent();
        assert!(window.open());
    }
}
