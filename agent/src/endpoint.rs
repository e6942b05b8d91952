//! The endpoint: joins stdin, stdout, the [`Session`], the provider's running turn and the
//! tunnel.
//!
//! One task runs a `select!` over everything that can happen: bytes on stdin, room in the
//! writer's queue, the next step of the running turn, requests for the bridge (from the
//! turn or the in-box HTTP endpoint), the heartbeat timer and the stop signals. Answers to
//! requests arrive on stdin and are routed to their callers by the [`Tunnel`]. Writing goes through a separate writer task fed by a small bounded queue, and
//! the loop only offers it a line when there is room, so a stalled stdout never stops the
//! loop from reading stdin: acknowledgements and cancels are processed while output is
//! blocked, and everything not yet written waits (bounded) in the session.

use std::io;
use std::time::Duration;

use clawpen_protocol::{encode, EventBody, LineBuffer, ToAgent, TurnOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::config::Config;
use crate::http;
use crate::provider::{Provider, Run, Step};
use crate::session::{Action, Session};
use crate::tunnel::{Outgoing, Tunnel, NO_PROGRESS};

/// Encoded lines handed to the writer but not yet written. When it is full the loop stops
/// offering lines (they stay in the session) and goes on reading stdin. Small, because
/// the session is the real buffer and a Resume can only rewind what is still there.
const WRITE_QUEUE: usize = 16;

/// Bytes read from stdin at a time; lines longer than this simply span several reads.
const READ_CHUNK: usize = 64 * 1024;

/// How often a running turn says it is alive, so the bridge can tell slow from stuck.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// At stdin EOF or a stop signal: how long to keep trying to write what is queued before
/// exiting anyway. Whoever reads stdout may be gone, so the wait must end.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// The state the loop works on.
struct Endpoint {
    session: Session,
    provider: Provider,
    /// Routes answers to requests to their callers.
    tunnel: Tunnel,
    /// The provider's run for the session's running turn; `Some` exactly while the
    /// session has a running turn.
    run: Option<Run>,
    /// Fires every [`HEARTBEAT`] while a turn runs; reset when a turn starts.
    heartbeat: Interval,
}

/// Speak the protocol on stdin/stdout until stdin ends or a stop signal arrives, serving
/// the in-box HTTP endpoint meanwhile. An error means stdin or stdout failed; bad input
/// never ends the loop.
pub async fn run(config: Config) -> io::Result<()> {
    // `docker stop` and Ctrl-C on an attached terminal (passed on by the box's init) end
    // the agent after what is queued is written, not in the middle of a line.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    let (tunnel, mut requests) = Tunnel::new(NO_PROGRESS);
    // The endpoint is a convenience for harnesses; without it the agent still works.
    let (port, server) = match http::bind(config.tunnel_port).await {
        Ok(listener) => {
            let port = listener
                .local_addr()
                .map_or(config.tunnel_port, |address| address.port());
            eprintln!("clawpen-agent: endpoint listening on 127.0.0.1:{port}");
            (
                port,
                Some(tokio::spawn(http::serve(listener, tunnel.clone()))),
            )
        }
        Err(err) => {
            eprintln!(
                "clawpen-agent: cannot listen on 127.0.0.1:{}: {err}; the in-box endpoint is off",
                config.tunnel_port
            );
            (config.tunnel_port, None)
        }
    };
    let provider = Provider::new(&config, &tunnel, port);
    eprintln!(
        "clawpen-agent {}: protocol {}, provider {}",
        env!("CARGO_PKG_VERSION"),
        clawpen_protocol::VERSION,
        provider.name()
    );

    let (lines, queue) = mpsc::channel(WRITE_QUEUE);
    let writer = tokio::spawn(write_lines(queue));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut endpoint = Endpoint {
        session: Session::new(provider.name()),
        provider,
        tunnel,
        run: None,
        heartbeat,
    };

    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0; READ_CHUNK];
    let mut input = LineBuffer::default();
    let end = loop {
        tokio::select! {
            // Every branch is cancel-safe: stdin keeps bytes it has read for the next
            // call, a lost `reserve` only loses its place, `Run::next` keeps its progress
            // in the run, and interval ticks and signals are not consumed unless returned.
            read = stdin.read(&mut buf) => match read {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    for line in input.push(buf.get(..n).unwrap_or_default()) {
                        if let Some(action) = endpoint.session.receive(line) {
                            endpoint.apply(action);
                        }
                    }
                }
                Err(err) => break Err(err),
            },
            permit = lines.reserve(), if endpoint.session.has_output() => match permit {
                Ok(permit) => {
                    if let Some(line) = endpoint.session.next_output().and_then(|line| encoded(&line)) {
                        permit.send(line);
                    }
                }
                Err(_) => break Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdout writer stopped")),
            },
            step = next_step(&mut endpoint.run) => endpoint.step(step),
            Some(outgoing) = requests.recv() => match outgoing {
                Outgoing::Request { id, request, window } => endpoint.session.request(id, request, window),
                Outgoing::Credit { id, parts } => endpoint.session.credit(id, parts),
                Outgoing::Abort(id) => endpoint.session.abort(id),
            },
            _ = endpoint.heartbeat.tick(), if endpoint.run.is_some() => endpoint.session.heartbeat(),
            _ = terminate.recv() => break Ok(()),
            _ = interrupt.recv() => break Ok(()),
        }
    };
    if let Some(server) = server {
        server.abort();
    }
    // Stop the running turn (and whatever it started) before exiting.
    endpoint.run = None;
    flush(&mut endpoint.session, lines, writer).await;
    end
}

impl Endpoint {
    /// Carry out what the session decided.
    fn apply(&mut self, action: Action) {
        match action {
            Action::Start(messages, options) => {
                self.run = Some(self.provider.start(messages, options));
                self.heartbeat.reset();
            }
            Action::FollowUp(messages) => match &mut self.run {
                Some(run) => run.follow_up(messages),
                // Cannot happen (the session only says follow-up while a turn runs), but
                // answering beats dropping the messages.
                None => self.run = Some(self.provider.start(messages, TurnOptions::default())),
            },
            // Dropping the run stops it: a task run is aborted, killing its processes.
            Action::Stop => self.run = None,
            Action::Response { id, part } => self.tunnel.deliver(id, part),
            // Answers in flight will not continue; their callers retry.
            Action::Resumed(version) => self.tunnel.reattached(version),
        }
    }

    /// Turn a provider step into events; a run that is over is dropped.
    fn step(&mut self, step: Step) {
        match step {
            Step::Text(text) => self.session.emit(EventBody::TextDelta { text }),
            Step::Status(text) => self.session.emit(EventBody::Status { text }),
            Step::Message(text) => self.session.emit(EventBody::Message { text }),
            Step::File(path) => self.session.emit(EventBody::File { path }),
            Step::Retract(bytes) => self.session.emit(EventBody::Retract {
                bytes: bytes as u64,
            }),
            Step::Failed(message) => {
                self.session.emit(EventBody::Error { message });
                self.finish();
            }
            Step::Done => self.finish(),
        }
    }

    /// End the running turn with `Final`. Follow-ups it never took (they came after its
    /// last model call) start the next turn, as a follow-up with no turn running would.
    fn finish(&mut self) {
        let unanswered = self.run.as_mut().map(Run::unanswered).unwrap_or_default();
        let turn = self.session.running().map(str::to_owned);
        self.session.emit(EventBody::Final);
        self.run = None;
        if let (Some(turn), false) = (turn, unanswered.is_empty()) {
            let follow_up = ToAgent::FollowUp {
                turn,
                messages: unanswered,
            };
            if let Some(action) = self.session.handle(follow_up) {
                self.apply(action);
            }
        }
    }
}

/// The running turn's next step; never completes while no turn runs.
async fn next_step(run: &mut Option<Run>) -> Step {
    match run {
        Some(run) => run.next().await,
        None => std::future::pending().await,
    }
}

/// A protocol line as bytes. Encoding our own types cannot really fail; if it ever did,
/// the line is skipped with a note rather than ending the agent.
fn encoded(line: &clawpen_protocol::FromAgent) -> Option<Vec<u8>> {
    match encode(line) {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            eprintln!("clawpen-agent: cannot encode a line: {err}");
            None
        }
    }
}

/// The writer task: stdout's only user, one flush per line so the bridge sees every line
/// as soon as it is complete. Ends when the queue closes or stdout fails.
async fn write_lines(mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut stdout = tokio::io::stdout();
    while let Some(line) = queue.recv().await {
        let written = async {
            stdout.write_all(&line).await?;
            stdout.flush().await
        };
        if let Err(err) = written.await {
            eprintln!("clawpen-agent: cannot write stdout: {err}");
            return;
        }
    }
}

/// Hand the writer what is still waiting and let it finish, within [`FLUSH_GRACE`].
async fn flush(session: &mut Session, lines: mpsc::Sender<Vec<u8>>, writer: JoinHandle<()>) {
    let drain = async {
        while session.has_output() {
            let Ok(permit) = lines.reserve().await else {
                break;
            };
            if let Some(line) = session.next_output().and_then(|line| encoded(&line)) {
                permit.send(line);
            }
        }
        drop(lines);
        // The writer handles its own errors; a join error would be its panic, already
        // reported on stderr by the runtime.
        let _ = writer.await;
    };
    if tokio::time::timeout(FLUSH_GRACE, drain).await.is_err() {
        eprintln!("clawpen-agent: stdout did not drain within {FLUSH_GRACE:?}; exiting anyway");
    }
}
