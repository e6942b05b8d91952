//! The built clawpen-agent binary, spoken to over pipes the way the bridge does through
//! the Docker attach stream.

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use clawpen_protocol::{
    decode, encode, Event, EventBody, FromAgent, ToAgent, TurnMessage, ENV_ECHO_DELAY_MS,
    ENV_HARNESS, ENV_PROVIDER, VERSION,
};

type TestResult = Result<(), Box<dyn Error>>;

/// How long to wait for any one line before calling the agent stuck.
const PATIENCE: Duration = Duration::from_secs(20);

/// Lines the reader thread may hold that the test has not received yet.
const READ_AHEAD: usize = 16;

/// A running agent process.
struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines from stdout, read by a thread so a test can wait with a timeout. The thread
    /// reads only as far as the test consumes (plus [`READ_AHEAD`] lines), so a test that
    /// stops receiving leaves the agent's stdout blocked, like a stalled bridge.
    lines: Receiver<String>,
}

impl Agent {
    fn spawn(envs: &[(&str, &str)]) -> Result<Self, Box<dyn Error>> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clawpen-agent"));
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command
            .env_remove(ENV_PROVIDER)
            .env_remove(ENV_ECHO_DELAY_MS)
            .env_remove(ENV_HARNESS)
            // Any free port: tests run side by side on one host, not in boxes.
            .env("CLAWPEN_TUNNEL_PORT", "0");
        command.envs(envs.iter().copied());
        let mut child = command.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::sync_channel(READ_AHEAD);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Agent {
            child,
            stdin,
            lines,
        })
    }

    fn send_raw(&mut self, bytes: &[u8]) -> TestResult {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    fn send(&mut self, message: &ToAgent) -> TestResult {
        self.send_raw(&encode(message)?)
    }

    fn recv(&self) -> Result<FromAgent, Box<dyn Error>> {
        let line = self.lines.recv_timeout(PATIENCE)?;
        Ok(decode(line.as_bytes())?)
    }

    /// The next line that is not a heartbeat.
    fn recv_quiet(&self) -> Result<FromAgent, Box<dyn Error>> {
        loop {
            match self.recv()? {
                FromAgent::Heartbeat => continue,
                line => return Ok(line),
            }
        }
    }

    fn recv_event(&self) -> Result<Event, Box<dyn Error>> {
        match self.recv_quiet()? {
            FromAgent::Event(event) => Ok(event),
            other => Err(format!("expected an event, got {other:?}").into()),
        }
    }

    /// Events up to and including the next `Final`.
    fn recv_turn(&self) -> Result<Vec<Event>, Box<dyn Error>> {
        let mut events = Vec::new();
        loop {
            let event = self.recv_event()?;
            let done = event.body == EventBody::Final;
            events.push(event);
            if done {
                return Ok(events);
            }
        }
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn wait(&mut self) -> Result<ExitStatus, Box<dyn Error>> {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err("the agent did not exit".into())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Already exited in most tests; a failed test must not leave it running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message(text: &str) -> TurnMessage {
    TurnMessage {
        id: "f".into(),
        sender: "ann".into(),
        at: 1_700_000_000,
        text: text.into(),
        addressed: true,
        attachments: Vec::new(),
    }
}

fn turn(id: &str, texts: &[&str]) -> ToAgent {
    let messages = texts
        .iter()
        .enumerate()
        .map(|(n, text)| TurnMessage {
            id: format!("m{n}"),
            sender: "ann".into(),
            at: 1_700_000_000,
            text: (*text).into(),
            addressed: true,
            attachments: Vec::new(),
        })
        .collect();
    ToAgent::Turn {
        turn: id.into(),
        messages,
        options: Default::default(),
    }
}

/// The reply text of a turn's events.
fn reply(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|event| match &event.body {
            EventBody::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_turn_streams_back_and_unacked_events_are_replayed_on_resume() -> TestResult {
    let mut agent = Agent::spawn(&[(ENV_ECHO_DELAY_MS, "1")])?;
    assert_eq!(
        agent.recv()?,
        FromAgent::Ready {
            version: VERSION,
            provider: "echo".into()
        }
    );

    agent.send_raw(b"this is not json\n")?;
    assert!(matches!(agent.recv()?, FromAgent::Rejected { .. }));

    agent.send(&turn("t1", &["hello world"]))?;
    let events = agent.recv_turn()?;
    assert_eq!(reply(&events), "hello world");
    assert!(events.len() >= 4, "streamed in several deltas: {events:?}");
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert!(events.iter().all(|event| event.turn == "t1"));

    // The bridge "restarts" having processed only the first two events.
    agent.send(&ToAgent::Ack { seq: 1 })?;
    agent.send(&ToAgent::Resume {
        version: VERSION,
        after: 2,
    })?;
    let replayed: Vec<Event> = (2..events.len())
        .map(|_| agent.recv_event())
        .collect::<Result<_, _>>()?;
    assert_eq!(replayed, events[2..]);
    let last_seq = events.len() as u64;
    assert_eq!(
        agent.recv_quiet()?,
        FromAgent::State {
            running: None,
            finished: vec!["t1".into()],
            last_seq
        }
    );

    // A resent turn is not answered again; the next new one is, numbered on.
    agent.send(&turn("t1", &["hello world"]))?;
    agent.send(&turn("t2", &["/fail"]))?;
    let events = agent.recv_turn()?;
    assert_eq!(events.first().map(|event| event.seq), Some(last_seq + 1));
    assert!(events.iter().all(|event| event.turn == "t2"));
    assert_eq!(
        events[0].body,
        EventBody::Error {
            message: "echo: failure requested".into()
        }
    );

    agent.close_stdin();
    assert!(agent.wait()?.success());
    Ok(())
}

#[test]
fn follow_ups_join_the_running_turn_and_cancel_stops_it() -> TestResult {
    // Slow chunks leave time to act between them.
    let mut agent = Agent::spawn(&[(ENV_ECHO_DELAY_MS, "400")])?;
    agent.recv()?;

    agent.send(&turn("t1", &["abcd"]))?;
    let first = agent.recv_event()?;
    agent.send(&ToAgent::FollowUp {
        turn: "t1".into(),
        messages: vec![message("ok")],
    })?;
    let mut events = vec![first];
    events.extend(agent.recv_turn()?);
    assert_eq!(reply(&events), "abcd\n\nok");

    agent.send(&turn("t2", &["abcd"]))?;
    let first = agent.recv_event()?;
    agent.send(&ToAgent::Cancel { turn: "t2".into() })?;
    let mut events = vec![first];
    events.extend(agent.recv_turn()?);
    assert_eq!(reply(&events), "a\n\n(stopped)");
    Ok(())
}

#[test]
fn a_long_turn_sends_heartbeats() -> TestResult {
    let mut agent = Agent::spawn(&[(ENV_ECHO_DELAY_MS, "60000")])?;
    agent.recv()?;
    agent.send(&turn("t1", &["ab"]))?;
    assert!(matches!(agent.recv()?, FromAgent::Event(_)));
    assert_eq!(agent.recv()?, FromAgent::Heartbeat);
    Ok(())
}

#[test]
fn acks_are_processed_while_stdout_is_blocked() -> TestResult {
    let mut agent = Agent::spawn(&[(ENV_ECHO_DELAY_MS, "0")])?;
    agent.recv()?;
    // Far more output than a pipe holds; nobody reads it for a while.
    let text = "y".repeat(500_000);
    agent.send(&turn("t1", &[&text]))?;
    thread::sleep(Duration::from_secs(1));
    agent.send(&ToAgent::Ack { seq: u64::MAX })?;
    agent.send(&ToAgent::Resume {
        version: VERSION,
        after: 0,
    })?;

    // Only what was already in the pipe comes before the State: the rest was acked
    // while the writer was stuck, so there is nothing to replay.
    let mut before_state = 0;
    let last_seq = loop {
        match agent.recv()? {
            FromAgent::Event(_) => before_state += 1,
            FromAgent::State { last_seq, .. } => break last_seq,
            _ => {}
        }
    };
    assert!(
        last_seq > 10_000,
        "the turn ran on while output was blocked: {last_seq}"
    );
    assert!(
        before_state < 5_000,
        "{before_state} events came before the state"
    );
    Ok(())
}

#[test]
fn an_unknown_provider_still_starts_and_answers_with_an_error() -> TestResult {
    let mut agent = Agent::spawn(&[(ENV_PROVIDER, "oracle")])?;
    assert_eq!(
        agent.recv()?,
        FromAgent::Ready {
            version: VERSION,
            provider: "oracle".into()
        }
    );
    agent.send(&turn("t1", &["hi"]))?;
    let events = agent.recv_turn()?;
    let [Event {
        body: EventBody::Error { message },
        ..
    }, Event {
        body: EventBody::Final,
        ..
    }] = &events[..]
    else {
        return Err(format!("expected an error and the end: {events:?}").into());
    };
    assert!(message.contains("oracle"), "{message}");
    Ok(())
}
