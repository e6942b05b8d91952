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
//!
//! The endpoint must keep reading stdin whatever a caller does, so it never waits for a
//! caller: with a bridge of protocol version 2 or later every request carries a window
//! ([`RESPONSE_WINDOW`] parts) and the bridge sends no more than that ahead of the reader,
//! which grants more (`Credit`) as it takes parts ([`Window`]). A slow reader (a harness
//! that reads its answer slowly) then slows the bridge, and the provider behind it, instead
//! of losing its answer. A bridge of version 1 does not wait for credit; then, as before,
//! an answer whose reader falls [`RESPONSE_QUEUE`] parts behind is dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use clawpen_protocol::{Request, ResponsePart, TASKS_VERSION, WINDOW_VERSION};
use tokio::sync::{mpsc, Notify};

/// Requests handed to the endpoint but not yet queued for stdout. The endpoint takes them
/// at once, so this only fills while it is busy; callers then wait their turn.
pub const REQUEST_QUEUE: usize = 8;

/// Parts of one answer routed but not yet read by its caller. A bridge with flow control
/// never sends more than [`RESPONSE_WINDOW`] ahead, so this only fills with a bridge of
/// version 1, which does not wait for the box: the endpoint cannot wait either (it must
/// keep reading stdin), so when a caller falls this far behind its answer is dropped and
/// the caller sees it as lost.
pub const RESPONSE_QUEUE: usize = 256;

/// How many parts of one answer the bridge may send ahead of its reader. A part carries
/// at most 32 KB of text (the bridge's pieces), so a reader that stops reading holds at
/// most about 2 MB in the box per request; credit comes back in halves of the window, so a
/// reader that keeps up does not wait for it.
pub const RESPONSE_WINDOW: u32 = 64;

// The queue must hold a whole window, and room for a last note after it.
const _: () = assert!((RESPONSE_WINDOW as usize) < RESPONSE_QUEUE);

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
    /// A new request, and the window of its answer (none without flow control).
    Request {
        /// Its id.
        id: u64,
        /// What it asks.
        request: Request,
        /// How many parts the bridge may send before it is granted more.
        window: Option<u32>,
    },
    /// The caller took this many more parts of the answer to request `id`.
    Credit {
        /// The request's id.
        id: u64,
        /// How many parts.
        parts: u32,
    },
    /// The caller gave up on the answer to this request before it was complete.
    Abort(u64),
}

/// The reader's side of one answer's flow control, with no I/O: counts the parts the
/// reader took that the bridge has not been told about, and says when to tell it.
///
/// The bridge starts with `size` parts of credit and gets back every part the reader
/// takes, in batches of half the window. So it is never more than `size` parts ahead of
/// the reader, and when it has used up its credit the reader has taken at least half a
/// window untold, which makes a grant due: the two never wait for each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    size: u32,
    /// Parts taken since the last grant.
    untold: u32,
}

impl Window {
    /// A window of `size` parts (at least 1).
    pub fn new(size: u32) -> Self {
        Window {
            size: size.max(1),
            untold: 0,
        }
    }

    /// How many parts the bridge may send before the first grant.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The reader took one part; returns the credit to grant now, if one is due.
    pub fn took(&mut self) -> Option<u32> {
        self.untold = self.untold.saturating_add(1);
        if self.untold >= self.size.div_ceil(2) {
            Some(std::mem::take(&mut self.untold))
        } else {
            None
        }
    }
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
    /// Credits and aborts the bridge is owed. They are never dropped (a lost credit would
    /// stall an answer, a lost abort keep the bridge performing a request nobody reads),
    /// so they do not go through `outgoing`, where a caller could have to wait: a grant
    /// is added to what the request is already owed, so this holds at most one credit
    /// per request being read, and aborts of requests just dropped. A std mutex, held
    /// for one map operation.
    notes: Mutex<Notes>,
    /// Wakes the endpoint when a note is added.
    noted: Notify,
    /// Whether the bridge grants flow control (it speaks [`WINDOW_VERSION`] or later); set
    /// at every `Resume`, false before the first.
    windowed: AtomicBool,
    /// The protocol version the bridge speaks, set at every `Resume`; 0 before the first.
    /// Task requests go only to a bridge of [`TASKS_VERSION`] or later.
    bridge_version: AtomicU32,
    /// [`NO_PROGRESS`], shorter in tests.
    no_progress: Duration,
}

/// Notes for the bridge about requests already handed to the endpoint.
#[derive(Debug, Default)]
struct Notes {
    /// Parts owed back to the bridge, by request id.
    credits: BTreeMap<u64, u32>,
    /// Requests given up on, oldest first.
    aborts: Vec<u64>,
}

impl Tunnel {
    /// A tunnel whose lines about requests come out of the returned [`Outbound`], for the
    /// endpoint.
    pub fn new(no_progress: Duration) -> (Tunnel, Outbound) {
        let (outgoing, requests) = mpsc::channel(REQUEST_QUEUE);
        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            outgoing,
            notes: Mutex::new(Notes::default()),
            noted: Notify::new(),
            windowed: AtomicBool::new(false),
            bridge_version: AtomicU32::new(0),
            no_progress,
        });
        let outbound = Outbound {
            requests,
            shared: Arc::clone(&shared),
        };
        (Tunnel { shared }, outbound)
    }

    /// Send a request; its answer arrives through the returned [`Response`].
    pub async fn send(&self, request: Request) -> Result<Response, TunnelError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (parts_in, parts) = mpsc::channel(RESPONSE_QUEUE);
        // Registered before the request leaves, so no answer can arrive unrouted.
        self.shared.waiting().insert(id, parts_in);
        let window = self
            .shared
            .windowed
            .load(Ordering::Relaxed)
            .then(|| Window::new(RESPONSE_WINDOW));
        let outgoing = Outgoing::Request {
            id,
            request,
            window: window.as_ref().map(Window::size),
        };
        let response = Response {
            id,
            parts,
            window,
            shared: Arc::clone(&self.shared),
        };
        self.shared
            .outgoing
            .send(outgoing)
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

    /// The bridge (re-)attached, speaking protocol `version`. It will not continue answers
    /// it was streaming before, so every awaited answer ends with
    /// [`TunnelError::Reattached`] (callers may try again), and nothing is owed for them.
    /// Requests from now on have flow control if the bridge speaks it.
    pub fn reattached(&self, version: u32) {
        self.shared
            .windowed
            .store(version >= WINDOW_VERSION, Ordering::Relaxed);
        self.shared.bridge_version.store(version, Ordering::Relaxed);
        for (_, parts) in self.shared.waiting().drain() {
            // A full queue just loses the note; its caller then sees `Lost`.
            let _ = parts.try_send(Err(TunnelError::Reattached));
        }
        *self.shared.notes() = Notes::default();
    }

    /// Whether the bridge performs task requests (it speaks [`TASKS_VERSION`] or later).
    pub fn bridge_schedules(&self) -> bool {
        self.shared.bridge_version.load(Ordering::Relaxed) >= TASKS_VERSION
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

    fn notes(&self) -> MutexGuard<'_, Notes> {
        // As for `waiting`: every operation is one call.
        self.notes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Owe the bridge `parts` more of request `id`, and wake the endpoint.
    fn credit(&self, id: u64, parts: u32) {
        let mut notes = self.notes();
        let owed = notes.credits.entry(id).or_default();
        *owed = owed.saturating_add(parts);
        drop(notes);
        self.noted.notify_one();
    }

    /// Tell the bridge to stop performing request `id`, and wake the endpoint.
    fn abort(&self, id: u64) {
        let mut notes = self.notes();
        notes.credits.remove(&id);
        notes.aborts.push(id);
        drop(notes);
        self.noted.notify_one();
    }

    /// The next note to write, if any.
    fn take_note(&self) -> Option<Outgoing> {
        let mut notes = self.notes();
        if !notes.aborts.is_empty() {
            return Some(Outgoing::Abort(notes.aborts.remove(0)));
        }
        let (id, parts) = notes.credits.pop_first()?;
        Some(Outgoing::Credit { id, parts })
    }
}

/// The endpoint's end of the tunnel: the lines to write about requests.
#[derive(Debug)]
pub struct Outbound {
    requests: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
}

impl Outbound {
    /// The next line to write. Requests come first: a credit or an abort is only ever
    /// about a request already handed over, so it never overtakes its request. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        loop {
            match self.requests.try_recv() {
                Ok(request) => return Some(request),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if let Some(note) = self.shared.take_note() {
                return Some(note);
            }
            // A note added after the check above still wakes this: `notify_one` keeps a
            // permit for the next wait.
            tokio::select! {
                request = self.requests.recv() => return request,
                () = self.shared.noted.notified() => {}
            }
        }
    }
}

/// The answer to one request, part by part.
#[derive(Debug)]
pub struct Response {
    id: u64,
    parts: mpsc::Receiver<Delivery>,
    /// The answer's flow control; `None` when the bridge does not grant credit.
    window: Option<Window>,
    shared: Arc<Shared>,
}

impl Response {
    /// The request id.
    #[cfg(test)]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next part; an error when nothing came for [`NO_PROGRESS`] or the answer was
    /// cut off. Taking a part grants the bridge credit for more. Cancel-safe (a dropped
    /// call loses no part).
    pub async fn next(&mut self) -> Result<ResponsePart, TunnelError> {
        let part = match tokio::time::timeout(self.shared.no_progress, self.parts.recv()).await {
            Err(_) => return Err(TunnelError::Stalled(self.shared.no_progress)),
            Ok(None) => return Err(TunnelError::Lost),
            Ok(Some(delivery)) => delivery?,
        };
        // Nothing follows a last part, so no credit is owed for one.
        let last = matches!(part, ResponsePart::End | ResponsePart::Failed { .. });
        if let (Some(window), false) = (self.window.as_mut(), last) {
            if let Some(parts) = window.took() {
                self.shared.credit(self.id, parts);
            }
        }
        Ok(part)
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        // Still registered: the answer was not complete, so the bridge is told to stop
        // performing the request.
        if self.shared.waiting().remove(&self.id).is_some() {
            self.shared.abort(self.id);
        }
    }
}

#[cfg(test)]
mod tests;
