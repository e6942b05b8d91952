//! The tunnel client: requests the box makes of the bridge, and the routing of the answers.
//!
//! The box has no network, so a model call or a web fetch is a `FromAgent::Request` line
//! with an id, answered by `ToAgent::Response` lines with that id (`Head`, `Body`*, `End`,
//! or one `Failed`). A [`Tunnel`] is the cheap handle every caller (the agent loop, the
//! in-box HTTP endpoint) holds: [`Tunnel::send`] registers a channel for the id and hands
//! the request to the endpoint, which writes it through the one stdout writer; the
//! endpoint gives every `Response` line to [`Tunnel::deliver`], which routes it to the
//! waiting [`Response`]. Dropping a `Response` forgets the id, so answers to an abandoned
//! request (a cancelled turn, a closed connection) are dropped on arrival.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use clawpen_protocol::{Request, ResponsePart};
use tokio::sync::mpsc;

/// Requests handed to the endpoint but not yet queued for stdout. The endpoint takes them
/// at once, so this only fills while it is busy; callers then wait their turn.
pub const REQUEST_QUEUE: usize = 8;

/// Parts of one answer routed but not yet read by its caller. The bridge does not wait
/// for the box, so the endpoint cannot wait either (it must keep reading stdin): when a
/// caller falls this far behind, its answer is dropped and the caller sees it as lost.
pub const RESPONSE_QUEUE: usize = 256;

/// How long an answer may make no progress before the caller gives up on it.
pub const NO_PROGRESS: Duration = Duration::from_secs(120);

/// Why a request got no (complete) answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// The endpoint is gone: the agent is stopping.
    #[error("the agent is shutting down")]
    Closed,
    /// Nothing arrived for [`NO_PROGRESS`].
    #[error("the bridge sent nothing for {} s", .0.as_secs())]
    Stalled(Duration),
    /// The answer stopped without `End` or `Failed` (its caller fell too far behind).
    #[error("the answer was cut off inside the box")]
    Lost,
    /// The bridge re-attached to the box; it does not continue answers across an attach.
    #[error("the bridge reconnected to the box while the answer was on its way")]
    Reattached,
}

/// What goes to a waiting caller: a part, or why no more parts will come.
type Delivery = Result<ResponsePart, TunnelError>;

/// A line for the endpoint to write about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A new request: its id and what it asks.
    Request(u64, Request),
    /// The caller gave up on the answer to this request before it was complete.
    Abort(u64),
}

/// The handle callers share; clones are cheap and all route through the same map.
#[derive(Clone, Debug)]
pub struct Tunnel {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The next request id; ids are unique within the process, from 1.
    next_id: AtomicU64,
    /// Where each awaited answer goes, by request id. A std mutex: it is held only for a
    /// map operation or a `try_send`, never across an await.
    waiting: Mutex<HashMap<u64, mpsc::Sender<Delivery>>>,
    /// To the endpoint, which writes requests out (bounded by [`REQUEST_QUEUE`]).
    outgoing: mpsc::Sender<Outgoing>,
    /// [`NO_PROGRESS`], shorter in tests.
    no_progress: Duration,
}

impl Tunnel {
    /// A tunnel whose requests come out of the returned receiver, for the endpoint.
    pub fn new(no_progress: Duration) -> (Tunnel, mpsc::Receiver<Outgoing>) {
        let (outgoing, requests) = mpsc::channel(REQUEST_QUEUE);
        let shared = Shared {
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            outgoing,
            no_progress,
        };
        let tunnel = Tunnel {
            shared: Arc::new(shared),
        };
        (tunnel, requests)
    }

    /// Send a request; its answer arrives through the returned [`Response`].
    pub async fn send(&self, request: Request) -> Result<Response, TunnelError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (parts_in, parts) = mpsc::channel(RESPONSE_QUEUE);
        // Registered before the request leaves, so no answer can arrive unrouted.
        self.shared.waiting().insert(id, parts_in);
        let response = Response {
            id,
            parts,
            shared: Arc::clone(&self.shared),
        };
        self.shared
            .outgoing
            .send(Outgoing::Request(id, request))
            .await
            .map_err(|_| TunnelError::Closed)?;
        Ok(response)
    }

    /// Route one part of an answer (from the endpoint). Never waits; see [`RESPONSE_QUEUE`].
    pub fn deliver(&self, id: u64, part: ResponsePart) {
        let mut waiting = self.shared.waiting();
        let Some(parts) = waiting.get(&id) else {
            // Its caller gave up (cancelled turn, closed connection): nobody to tell.
            return;
        };
        let last = matches!(part, ResponsePart::End | ResponsePart::Failed { .. });
        match parts.try_send(Ok(part)) {
            Ok(()) if !last => {}
            Ok(()) => {
                waiting.remove(&id);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                eprintln!("clawpen-agent: request {id}: its reader fell {RESPONSE_QUEUE} parts behind; answer dropped");
                waiting.remove(&id);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                waiting.remove(&id);
            }
        }
    }

    /// End every awaited answer with [`TunnelError::Reattached`]: the bridge re-attached
    /// and will not continue answers it was streaming before. Callers may try again.
    pub fn reattached(&self) {
        for (_, parts) in self.shared.waiting().drain() {
            // A full queue just loses the note; its caller then sees `Lost`.
            let _ = parts.try_send(Err(TunnelError::Reattached));
        }
    }

    /// How many answers are awaited.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.shared.waiting().len()
    }
}

impl Shared {
    fn waiting(&self) -> MutexGuard<'_, HashMap<u64, mpsc::Sender<Delivery>>> {
        // The map stays consistent even if a holder panicked: every operation is one call.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The answer to one request, part by part.
#[derive(Debug)]
pub struct Response {
    id: u64,
    parts: mpsc::Receiver<Delivery>,
    shared: Arc<Shared>,
}

impl Response {
    /// The request id.
    #[cfg(test)]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next part; an error when nothing came for [`NO_PROGRESS`] or the answer was
    /// cut off. Cancel-safe (a dropped call loses no part).
    pub async fn next(&mut self) -> Result<ResponsePart, TunnelError> {
        match tokio::time::timeout(self.shared.no_progress, self.parts.recv()).await {
            Err(_) => Err(TunnelError::Stalled(self.shared.no_progress)),
            Ok(None) => Err(TunnelError::Lost),
            Ok(Some(delivery)) => delivery,
        }
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        // Still registered: the answer was not complete, so the bridge is told to stop
        // performing the request. When the queue is full the abort is skipped; the answer
        // then runs to its end and is dropped on arrival.
        if self.shared.waiting().remove(&self.id).is_some() {
            let _ = self.shared.outgoing.try_send(Outgoing::Abort(self.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(url: &str) -> Request {
        Request::WebFetch { url: url.into() }
    }

    fn body(data: &str) -> ResponsePart {
        ResponsePart::Body { data: data.into() }
    }

    #[tokio::test]
    async fn answers_reach_their_own_request() -> Result<(), TunnelError> {
        let (tunnel, mut requests) = Tunnel::new(NO_PROGRESS);
        let mut a = tunnel.send(fetch("a")).await?;
        let mut b = tunnel.send(fetch("b")).await?;
        let first = requests.recv().await.ok_or(TunnelError::Closed)?;
        assert_eq!(first, Outgoing::Request(a.id(), fetch("a")));
        let Some(Outgoing::Request(id_b, _)) = requests.recv().await else {
            return Err(TunnelError::Closed);
        };
        let id_a = a.id();
        assert_ne!(id_a, id_b);
        tunnel.deliver(id_b, body("for b"));
        tunnel.deliver(id_a, body("for a"));
        tunnel.deliver(id_a, ResponsePart::End);
        assert_eq!(a.next().await?, body("for a"));
        assert_eq!(a.next().await?, ResponsePart::End);
        assert_eq!(b.next().await?, body("for b"));
        // `a` is complete and forgotten; dropping `b` forgets it too, and asks the bridge
        // to stop performing it. A complete answer is never aborted.
        assert_eq!(tunnel.pending(), 1);
        drop(a);
        drop(b);
        assert_eq!(tunnel.pending(), 0);
        assert_eq!(requests.try_recv().ok(), Some(Outgoing::Abort(id_b)));
        assert!(
            requests.try_recv().is_err(),
            "a complete answer was aborted"
        );
        tunnel.deliver(id_b, body("late"));
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_without_progress_stalls() -> Result<(), TunnelError> {
        let (tunnel, _requests) = Tunnel::new(NO_PROGRESS);
        let mut response = tunnel.send(fetch("slow")).await?;
        tunnel.deliver(response.id(), body("first"));
        assert_eq!(response.next().await?, body("first"));
        let start = tokio::time::Instant::now();
        assert_eq!(
            response.next().await,
            Err(TunnelError::Stalled(NO_PROGRESS))
        );
        assert_eq!(start.elapsed(), NO_PROGRESS);
        Ok(())
    }

    #[tokio::test]
    async fn a_reader_too_far_behind_loses_its_answer() -> Result<(), TunnelError> {
        let (tunnel, _requests) = Tunnel::new(NO_PROGRESS);
        let mut response = tunnel.send(fetch("big")).await?;
        for _ in 0..=RESPONSE_QUEUE {
            tunnel.deliver(response.id(), body("x"));
        }
        for _ in 0..RESPONSE_QUEUE {
            assert_eq!(response.next().await?, body("x"));
        }
        assert_eq!(response.next().await, Err(TunnelError::Lost));
        Ok(())
    }

    #[tokio::test]
    async fn a_reattach_ends_every_waiting_answer() -> Result<(), TunnelError> {
        let (tunnel, _requests) = Tunnel::new(NO_PROGRESS);
        let mut response = tunnel.send(fetch("a")).await?;
        tunnel.reattached();
        assert_eq!(response.next().await, Err(TunnelError::Reattached));
        assert_eq!(tunnel.pending(), 0);
        Ok(())
    }
}
