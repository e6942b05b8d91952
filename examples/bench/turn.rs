//! Turns driven through the bridge's router, and the same round trip straight through an
//! attach without the router.

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context};
use clawpen::adapters::terminal::{TerminalEvent, PLATFORM};
use clawpen::adapters::{Accepted, ConversationKey, InboundSink};
use clawpen::control::terminal_inbound;
use clawpen::daemon::Bridge;
use clawpen::protocol::{EventBody, FromAgent, ToAgent, VERSION};
use clawpen::sandbox::{BoxConn, BoxOutput, Sandbox};
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};

/// The longest wait for one complete reply; a box that takes longer fails the run.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The times of one turn, from just before `accept`.
pub struct Timing {
    /// How long `accept` itself took (store write and hand-off).
    pub accept: Duration,
    /// Until the first reply message reached the terminal adapter.
    pub first_reply: Duration,
}

/// A terminal conversation of the bench, watched for as long as this lives.
pub struct Conversation {
    key: ConversationKey,
    /// The terminal adapter's events for this conversation; holding the receiver keeps
    /// the watch, so a turn's events are never missed between two turns.
    events: mpsc::Receiver<TerminalEvent>,
    /// Messages sent so far; numbers the next message id, since a repeated id in a
    /// conversation is dropped as a redelivery.
    sent: usize,
}

impl Conversation {
    /// Start watching the terminal conversation `name`.
    pub fn watch(bridge: &Bridge, name: &str) -> Conversation {
        let key = ConversationKey::new(PLATFORM, name);
        let events = bridge.terminal.watch(&key);
        Conversation {
            key,
            events,
            sent: 0,
        }
    }

    /// Send `text` and wait for its whole reply; checks that the reply is the echo, so an
    /// error reply (a box that failed to start) never passes for a fast answer.
    pub async fn turn(&mut self, bridge: &Bridge, text: &str) -> anyhow::Result<Timing> {
        let n = self.sent;
        self.sent += 1;
        let mut message = terminal_inbound(&self.key, text);
        message.id = format!("bench-{n}");
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let started = Instant::now();
        let accepted = bridge.router.accept(message).await?;
        let accept = started.elapsed();
        ensure!(accepted == Accepted::Stored, "message {n} was not stored");
        let mut first_reply = None;
        let mut shown = String::new();
        loop {
            let event = timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| anyhow!("no complete reply within {REPLY_TIMEOUT:?}"))?
                .context("the terminal watch closed")?;
            match event {
                TerminalEvent::Send { text, .. } => {
                    first_reply.get_or_insert_with(|| started.elapsed());
                    shown = text;
                }
                TerminalEvent::Edit { text, .. } => shown = text,
                TerminalEvent::Finished => break,
                // Status lines (and whatever the terminal shows in future) are not reply text.
                _ => {}
            }
        }
        ensure!(
            shown == text,
            "{}: expected the echo of message {n} ({} bytes), got {} bytes: {:.80?}",
            self.key,
            text.len(),
            shown.len(),
            shown
        );
        let first_reply = first_reply.context("the reply finished without a message")?;
        Ok(Timing {
            accept,
            first_reply,
        })
    }
}

/// The first turn of a new conversation, watched only for that turn.
pub async fn first_turn(bridge: &Bridge, name: &str) -> anyhow::Result<Timing> {
    Conversation::watch(bridge, name)
        .turn(bridge, "ping 0")
        .await
        .with_context(|| format!("first turn of {name}"))
}

/// The same warm round trip without the router: a box of its own, attached directly,
/// given turns and acknowledging every event as the router does. Returns the times of the
/// `samples` turns after `warm_up` unmeasured ones.
pub async fn direct_round_trips(
    sandbox: &Sandbox,
    warm_up: usize,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut conn = attached_box(sandbox, "bench-direct").await?;
    let mut times = Vec::new();
    for n in 0..warm_up + samples {
        let turn = format!("direct-{n}");
        let (first, _) = direct_turn(&mut conn, &turn, turn_request(&turn, n)?).await?;
        if n >= warm_up {
            times.push(first);
        }
    }
    Ok(times)
}

/// Writes one turn to a directly attached box and acknowledges every event as the router
/// does, until the turn's last; the times from the write to the turn's first event and to
/// its last.
async fn direct_turn(
    conn: &mut BoxConn,
    turn: &str,
    request: ToAgent,
) -> anyhow::Result<(Duration, Duration)> {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let sent = Instant::now();
    conn.send(&request).await?;
    let mut first = None;
    loop {
        let BoxOutput::Message(FromAgent::Event(event)) = next_output(conn, deadline).await? else {
            continue;
        };
        if event.turn == turn {
            first.get_or_insert_with(|| sent.elapsed());
        }
        conn.send(&ToAgent::Ack { seq: event.seq }).await?;
        if event.turn == turn && event.body == EventBody::Final {
            let first = first.context("the turn ended without an event")?;
            return Ok((first, sent.elapsed()));
        }
    }
}

/// A new conversation's cold start without the router: its volume and box created and
/// started, attached, resumed and given its first turn straight through the sandbox, as
/// the router does it, until the box's first event. The engine's (and the agent's) floor
/// under the router's cold-start row.
pub async fn direct_cold_start(sandbox: &Sandbox, n: usize) -> anyhow::Result<Duration> {
    let key = ConversationKey::new(PLATFORM, format!("bench-cold-direct-{n}"));
    let began = Instant::now();
    let deadline = began + REPLY_TIMEOUT;
    let mut conn = attach_and_resume(sandbox, &key).await?;
    let turn = format!("cold-direct-{n}");
    conn.send(&turn_request(&turn, n)?).await?;
    loop {
        if let BoxOutput::Message(FromAgent::Event(event)) =
            next_output(&mut conn, deadline).await?
        {
            if event.turn == turn {
                return Ok(began.elapsed());
            }
        }
    }
}

/// One reply of `text`'s echo without the router: a box of its own for `name`, attached
/// directly, acknowledging every event as the router does; the time from writing the turn
/// to the box's last event of it. The agent's (the model's, here the echo's) own streaming
/// time, with the engine's attach: the floor under a long reply through the bridge.
pub async fn direct_reply(sandbox: &Sandbox, name: &str, text: &str) -> anyhow::Result<Duration> {
    let mut conn = attached_box(sandbox, name).await?;
    // A short turn first, as the bridge's conversation has one: the agent is warm for both.
    let mut took = Duration::ZERO;
    for (n, text) in ["warm up", text].into_iter().enumerate() {
        let turn = format!("{name}-{n}");
        (_, took) = direct_turn(&mut conn, &turn, text_request(&turn, text)?).await?;
    }
    Ok(took)
}

/// A box of its own for the terminal conversation `name`, attached directly and resumed,
/// as the router does it, once it said its state.
async fn attached_box(sandbox: &Sandbox, name: &str) -> anyhow::Result<BoxConn> {
    let mut conn = attach_and_resume(sandbox, &ConversationKey::new(PLATFORM, name)).await?;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while !matches!(
        next_output(&mut conn, deadline).await?,
        BoxOutput::Message(FromAgent::State { .. })
    ) {}
    Ok(conn)
}

/// The box of `key`, created and started if need be, attached and asked to resume.
async fn attach_and_resume(sandbox: &Sandbox, key: &ConversationKey) -> anyhow::Result<BoxConn> {
    let started = sandbox.ensure_box(key).await?;
    let mut conn = sandbox.attach(&started.container).await?;
    conn.send(&ToAgent::Resume {
        version: VERSION,
        after: 0,
    })
    .await?;
    Ok(conn)
}

/// A turn request with one message, `ping n`.
fn turn_request(turn: &str, n: usize) -> anyhow::Result<ToAgent> {
    text_request(turn, &format!("ping {n}"))
}

/// A turn request with one message of `text`. Built from its wire form, so optional fields
/// added to the protocol later keep their defaults here instead of breaking this example.
fn text_request(turn: &str, text: &str) -> anyhow::Result<ToAgent> {
    serde_json::from_value(serde_json::json!({
        "type": "turn",
        "turn": turn,
        "messages": [{ "id": turn, "sender": "bench", "at": 0, "text": text }],
    }))
    .context("building a turn request")
}

/// The next output of a directly attached box, before `deadline`.
async fn next_output(conn: &mut BoxConn, deadline: Instant) -> anyhow::Result<BoxOutput> {
    match timeout_at(deadline, conn.output.recv()).await {
        Err(_) => bail!("the box did not answer within {REPLY_TIMEOUT:?}"),
        Ok(None | Some(BoxOutput::Closed)) => bail!("the box closed its output"),
        Ok(Some(output)) => Ok(output),
    }
}
