//! The agent's side of the box protocol, as plain state with no I/O.
//!
//! [`Session`] numbers reply events, keeps them until the bridge acknowledges them, decides
//! what a `Turn`, `FollowUp` or `Cancel` means given the turn running now, and orders
//! everything that must go out on stdout. The endpoint feeds it lines and drains its output;
//! keeping the rules here, away from pipes and timers, is what lets the tests below check
//! every rule directly.
//!
//! Output is not a queue of copies. Events stay in one buffer, `unacked`, and a cursor
//! (`written`) says how far they have been handed to the writer; `Resume` just moves the
//! cursor back. Other lines (`Ready`, `State`, `Heartbeat`, `Request`, `Rejected`) wait in
//! a short queue, each tagged with the last event that was issued before it, so they come
//! out in the order they happened: a `State` answering `Resume` always follows the replay.
//! Requests are not replayed: a `Resume` fails the ones in flight instead (the bridge does
//! not continue answers across an attach), and their callers retry. Credits for the same
//! request that wait together are one line.

use std::collections::VecDeque;

use clawpen_protocol::{
    decode, Event, EventBody, FromAgent, Line, Request, ResponsePart, ToAgent, TurnMessage,
    TurnOptions, MAX_LINE, MIN_VERSION, VERSION,
};

/// How many unacknowledged events are kept. A bridge that stops acknowledging (or is gone
/// for a long time) must not make the box grow without bound; past this the oldest event
/// is forgotten, with a note on stderr, and a later `Resume` cannot replay it.
pub const MAX_UNACKED: usize = 100_000;

/// How many non-event lines may wait for the writer. Only a bridge that sends lines but
/// never reads can fill it; the oldest waiting line is dropped then.
pub const MAX_CONTROL: usize = 1_024;

/// How many finished turn ids are remembered, for `State` and for ignoring resent turns.
pub const FINISHED_KEPT: usize = 32;

/// Capacity the unacked buffer keeps once everything is acknowledged.
const SHRINK_TO: usize = 64;

/// The longest `Rejected` reason, in chars; parse errors can quote the offending input.
const MAX_REASON: usize = 200;

/// Text appended to a reply ended by `Cancel`, so the reader sees it was cut short.
pub const STOPPED: &str = "\n\n(stopped)";

/// What the endpoint must do after a line from the bridge.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Start answering a new turn with these messages and options (the session now has it
    /// running).
    Start(Vec<TurnMessage>, TurnOptions),
    /// Give these messages to the running turn, after the ones it already has.
    FollowUp(Vec<TurnMessage>),
    /// The running turn was cancelled and finished; drop its provider run.
    Stop,
    /// Part of the answer to one of the agent's requests; route it to the waiting caller.
    Response {
        /// The request's id.
        id: u64,
        /// The part.
        part: ResponsePart,
    },
    /// The bridge (re-)attached, speaking this protocol version: answers it was streaming
    /// before will not continue.
    Resumed(u32),
}

/// The turn being answered now.
#[derive(Debug)]
struct Running {
    /// The id its events carry.
    id: String,
    /// Ids of `Turn`s that arrived while it ran and were folded into it as follow-ups;
    /// they count as finished with it, so a resend of one is not answered twice.
    merged: Vec<String>,
}

/// A non-event line waiting for the writer.
#[derive(Debug)]
struct Control {
    /// The last seq issued when the line was queued; events up to it go out first.
    after: u64,
    line: FromAgent,
}

/// The protocol state of one agent process.
#[derive(Debug)]
pub struct Session {
    /// The seq the next event gets; seqs start at 1 in every process.
    next_seq: u64,
    /// Events not yet acknowledged, in seq order with no gaps.
    unacked: VecDeque<Event>,
    /// Highest seq handed to the writer since the last `Resume` moved it back.
    written: u64,
    /// Highest seq the bridge has acknowledged; reported in `State`, so that a bridge
    /// adopting this box knows where the events it has not seen begin.
    acked: u64,
    /// Non-event lines waiting for the writer, oldest first (bounded by [`MAX_CONTROL`]).
    control: VecDeque<Control>,
    running: Option<Running>,
    /// Finished turn ids, most recent last (bounded by [`FINISHED_KEPT`]).
    finished: VecDeque<String>,
    /// How many unacked events were forgotten because the buffer was full.
    dropped_events: u64,
}

impl Session {
    /// A new session whose first output line is `Ready` naming `provider`.
    pub fn new(provider: &str) -> Self {
        let mut session = Session {
            next_seq: 1,
            unacked: VecDeque::new(),
            written: 0,
            acked: 0,
            control: VecDeque::new(),
            running: None,
            finished: VecDeque::new(),
            dropped_events: 0,
        };
        session.push_control(FromAgent::Ready {
            version: VERSION,
            provider: provider.to_owned(),
        });
        session
    }

    /// The id of the turn running now.
    pub fn running(&self) -> Option<&str> {
        self.running.as_ref().map(|running| running.id.as_str())
    }

    /// The highest seq issued so far (0 before the first event).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Handle one line from the bridge. Anything that does not parse is answered with
    /// `Rejected` and otherwise ignored. Blank lines are skipped silently: they carry
    /// nothing and are what a person typing at the box sends by accident.
    pub fn receive(&mut self, line: Line) -> Option<Action> {
        let bytes = match line {
            Line::Complete(bytes) => bytes,
            Line::TooLong => {
                self.reject(format!("line longer than {MAX_LINE} bytes"));
                return None;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        match decode::<ToAgent>(&bytes) {
            Ok(message) => self.handle(message),
            Err(err) => {
                self.reject(format!("malformed line: {err}"));
                None
            }
        }
    }

    /// Handle one decoded message from the bridge.
    pub fn handle(&mut self, message: ToAgent) -> Option<Action> {
        match message {
            ToAgent::Resume { version, after } => self.resume(version, after),
            ToAgent::Turn {
                turn,
                messages,
                options,
            } => self.turn(turn, messages, options),
            ToAgent::FollowUp { turn, messages } => Some(self.follow_up(turn, messages)),
            ToAgent::Cancel { turn } => self.cancel(&turn),
            ToAgent::Ack { seq } => {
                // An ack beyond what was issued (a confused bridge) acknowledges only that.
                self.acked = self.acked.max(seq.min(self.last_seq()));
                while self.unacked.front().is_some_and(|event| event.seq <= seq) {
                    self.unacked.pop_front();
                }
                if self.unacked.is_empty() {
                    // A long burst leaves a big allocation behind; an idle box should be small.
                    self.unacked.shrink_to(SHRINK_TO);
                }
                None
            }
            ToAgent::Response { id, part } => Some(Action::Response { id, part }),
            ToAgent::Rejected { reason } => {
                // The bridge could not parse something we wrote: a bug on one side, worth
                // a log line, but no reason to stop.
                eprintln!(
                    "clawpen-agent: bridge rejected a line: {}",
                    truncate(&reason, MAX_REASON)
                );
                None
            }
        }
    }

    /// Record an event of the running turn; `Final` also ends the turn. Without a running
    /// turn there is nobody to attribute the event to, so it is ignored.
    pub fn emit(&mut self, body: EventBody) {
        let Some(running) = &self.running else { return };
        let is_final = body == EventBody::Final;
        let event = Event {
            seq: self.next_seq,
            turn: running.id.clone(),
            body,
        };
        self.next_seq += 1;
        if self.unacked.len() >= MAX_UNACKED {
            self.unacked.pop_front();
            self.dropped_events += 1;
            // One line per 10,000 keeps stderr small while the bridge is away.
            if self.dropped_events % 10_000 == 1 {
                eprintln!(
                    "clawpen-agent: {} unacknowledged events kept; forgot the oldest ({} so far)",
                    MAX_UNACKED, self.dropped_events
                );
            }
        }
        self.unacked.push_back(event);
        if is_final {
            self.finish();
        }
    }

    /// Queue a `Heartbeat`, unless one is still waiting to be written (a second one would
    /// say nothing new).
    pub fn heartbeat(&mut self) {
        if !self
            .control
            .iter()
            .any(|control| control.line == FromAgent::Heartbeat)
        {
            self.push_control(FromAgent::Heartbeat);
        }
    }

    /// Whether [`Session::next_output`] has a line.
    pub fn has_output(&self) -> bool {
        !self.control.is_empty() || self.pending_index().is_some()
    }

    /// The next line for stdout, in the order things happened.
    pub fn next_output(&mut self) -> Option<FromAgent> {
        let pending = self
            .pending_index()
            .and_then(|index| self.unacked.get(index));
        if let Some(control) = self.control.front() {
            if pending.is_none_or(|event| event.seq > control.after) {
                return self.control.pop_front().map(|control| control.line);
            }
        }
        let event = pending?.clone();
        self.written = event.seq;
        Some(FromAgent::Event(event))
    }

    /// Index in `unacked` of the first event after the write cursor.
    fn pending_index(&self) -> Option<usize> {
        let first = self.unacked.front()?.seq;
        // Seqs in `unacked` have no gaps, so the offset from the front is the index.
        let index = usize::try_from((self.written + 1).saturating_sub(first)).unwrap_or(usize::MAX);
        (index < self.unacked.len()).then_some(index)
    }

    /// Queue a request to the bridge, with the window of its answer if it has flow control;
    /// it goes out after the events issued before it.
    pub fn request(&mut self, id: u64, request: Request, window: Option<u32>) {
        self.push_control(FromAgent::Request {
            id,
            request,
            window,
        });
    }

    /// Grant the bridge `parts` more parts of the answer to request `id`, added to a grant
    /// for it that is still waiting, if any.
    pub fn credit(&mut self, id: u64, parts: u32) {
        let waiting = self
            .control
            .iter_mut()
            .find_map(|control| match &mut control.line {
                FromAgent::Credit { id: waiting, parts } if *waiting == id => Some(parts),
                _ => None,
            });
        match waiting {
            Some(waiting) => *waiting = waiting.saturating_add(parts),
            None => self.push_control(FromAgent::Credit { id, parts }),
        }
    }

    /// Tell the bridge to stop performing request `id`.
    pub fn abort(&mut self, id: u64) {
        self.push_control(FromAgent::Abort { id });
    }

    /// A bridge of any version from [`MIN_VERSION`] on is answered, in the lower of its
    /// version and ours. The refusal keeps the words of version 1, which bridges read
    /// (`clawpen_protocol::spoken_version`).
    fn resume(&mut self, version: u32, after: u64) -> Option<Action> {
        if version < MIN_VERSION {
            self.reject(format!(
                "protocol version {version} is not supported; this agent speaks {VERSION}"
            ));
            return None;
        }
        // `after` is not an acknowledgement: after an agent restart it counts the old
        // process's events, so trimming by it could forget events this process never sent.
        self.written = self.written.min(after);
        let state = FromAgent::State {
            running: self.running().map(str::to_owned),
            finished: self.finished.iter().cloned().collect(),
            last_seq: self.last_seq(),
            acked: Some(self.acked),
            version: Some(VERSION),
        };
        self.push_control(state);
        Some(Action::Resumed(version.min(VERSION)))
    }

    fn turn(
        &mut self,
        turn: String,
        messages: Vec<TurnMessage>,
        options: TurnOptions,
    ) -> Option<Action> {
        if self.seen(&turn) {
            // The bridge resends a turn it is unsure we got; it was answered or is being.
            return None;
        }
        match &mut self.running {
            Some(running) => {
                // One turn runs at a time; a new turn's messages join it as follow-ups.
                running.merged.push(turn);
                if running.merged.len() > FINISHED_KEPT {
                    running.merged.remove(0);
                }
                Some(Action::FollowUp(messages))
            }
            None => {
                self.running = Some(Running {
                    id: turn,
                    merged: Vec::new(),
                });
                Some(Action::Start(messages, options))
            }
        }
    }

    /// Follow-ups are never dropped: they join whatever turn runs now, whatever its id
    /// (there is only ever one). With none running they start a turn of their own. It
    /// takes the follow-up's id unless that turn already finished; then, because `Final`
    /// promised nothing more comes for that id, it gets a new one: `<id>+<first seq>`.
    fn follow_up(&mut self, turn: String, messages: Vec<TurnMessage>) -> Action {
        if self.running.is_some() {
            return Action::FollowUp(messages);
        }
        let running = if self.seen(&turn) {
            // It still answers to the old id, so the bridge's `Cancel` for that stops it.
            Running {
                id: format!("{turn}+{}", self.next_seq),
                merged: vec![turn],
            }
        } else {
            Running {
                id: turn,
                merged: Vec::new(),
            }
        };
        self.running = Some(running);
        Action::Start(messages, TurnOptions::default())
    }

    fn cancel(&mut self, turn: &str) -> Option<Action> {
        let running = self.running.as_ref()?;
        if running.id != turn && !running.merged.iter().any(|id| id == turn) {
            // Already over (or never started): nothing to stop.
            return None;
        }
        self.emit(EventBody::TextDelta {
            text: STOPPED.to_owned(),
        });
        self.emit(EventBody::Final);
        Some(Action::Stop)
    }

    fn finish(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        for id in running.merged.into_iter().chain([running.id]) {
            if self.finished.contains(&id) {
                continue;
            }
            if self.finished.len() >= FINISHED_KEPT {
                self.finished.pop_front();
            }
            self.finished.push_back(id);
        }
    }

    fn seen(&self, turn: &str) -> bool {
        let running = self.running.as_ref().is_some_and(|running| {
            running.id == turn || running.merged.iter().any(|id| id == turn)
        });
        running || self.finished.iter().any(|id| id == turn)
    }

    fn reject(&mut self, reason: String) {
        self.push_control(FromAgent::Rejected {
            reason: truncate(&reason, MAX_REASON),
        });
    }

    fn push_control(&mut self, line: FromAgent) {
        if self.control.len() >= MAX_CONTROL {
            self.control.pop_front();
            eprintln!("clawpen-agent: output blocked; dropped a waiting line");
        }
        self.control.push_back(Control {
            after: self.last_seq(),
            line,
        });
    }
}

/// `text` cut to at most `max` chars, on a char boundary.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests;
