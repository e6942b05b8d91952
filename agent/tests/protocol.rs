//! The built clawpen-agent binary, spoken to over pipes the way the bridge does through
//! the Docker attach stream.

mod support;

use std::thread;
use std::time::Duration;

use clawpen_protocol::{
    Event, EventBody, FromAgent, ToAgent, ENV_ECHO_DELAY_MS, ENV_PROVIDER, VERSION,
};
use support::{message, reply, turn_of as turn, Agent, TestResult};

#[test]
fn a_turn_streams_back_and_unacked_events_are_replayed_on_resume() -> TestResult {
    let mut agent = Agent::start(&[(ENV_ECHO_DELAY_MS, "1")])?;
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
            last_seq,
            acked: Some(1),
            version: Some(VERSION),
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
    let mut agent = Agent::start(&[(ENV_ECHO_DELAY_MS, "400")])?;
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
    let mut agent = Agent::start(&[(ENV_ECHO_DELAY_MS, "60000")])?;
    agent.recv()?;
    agent.send(&turn("t1", &["ab"]))?;
    assert!(matches!(agent.recv()?, FromAgent::Event(_)));
    assert_eq!(agent.recv()?, FromAgent::Heartbeat);
    Ok(())
}

#[test]
fn acks_are_processed_while_stdout_is_blocked() -> TestResult {
    let mut agent = Agent::start(&[(ENV_ECHO_DELAY_MS, "0")])?;
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
    let mut agent = Agent::start(&[(ENV_PROVIDER, "oracle")])?;
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
