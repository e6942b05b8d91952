//! Warm turns through the router to the Discord adapter and the fake Discord's REST API
//! (the test suite's fake, on loopback): the Discord row beside the terminal's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context};
use clawpen::adapters::discord::{DiscordAdapter, DiscordConfig};
use clawpen::adapters::{Accepted, Adapter, ConversationKey, Inbound, InboundSink};
use clawpen::daemon::Bridge;
use clawpen::router::ConversationState;
use tokio::time::{timeout, Instant};

#[path = "../../tests/support/discord/mod.rs"]
mod fake;

pub use fake::FakeDiscord;

/// The DM channel and the user of the bench's Discord conversation.
const CHANNEL: &str = "400000000000000009";
const USER: &str = "100000000000000009";

/// The longest wait for one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The fake and an adapter that talks to it, for the bridge to run.
pub async fn start() -> anyhow::Result<(FakeDiscord, Arc<dyn Adapter>)> {
    let fake = FakeDiscord::start().await;
    let config = DiscordConfig {
        token: Some(fake::TOKEN.into()),
        api_url: fake.url().into(),
        allowed_users: vec![USER.into()],
        ..DiscordConfig::default()
    };
    let adapter: Arc<dyn Adapter> = DiscordAdapter::new(config).map_err(|e| anyhow!("{e}"))?;
    Ok((fake, adapter))
}

/// `warm_up` unmeasured then `samples` measured turns of one Discord conversation: from
/// just before `accept` to the reply's first message created at the fake's REST API.
pub async fn warm_turns(
    bridge: &Bridge,
    fake: &FakeDiscord,
    warm_up: usize,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let key = ConversationKey::new("discord", CHANNEL);
    let mut created = fake.created();
    let mut times = Vec::new();
    for n in 0..warm_up + samples {
        let text = format!("ping {n}");
        let message = Inbound {
            id: format!("bench-discord-{n}"),
            conversation: key.clone(),
            sender_id: USER.into(),
            sender_name: "bench".into(),
            text: text.clone(),
            attachments: Vec::new(),
            reply_to: None,
            addressed: true,
            at: 0,
        };
        created.borrow_and_update();
        let started = Instant::now();
        let accepted = bridge.router.accept(message).await?;
        ensure!(
            accepted == Accepted::Stored,
            "Discord message {n} was not stored"
        );
        timeout(REPLY_TIMEOUT, created.changed())
            .await
            .map_err(|_| anyhow!("no Discord reply within {REPLY_TIMEOUT:?}"))?
            .context("the fake Discord stopped")?;
        let first = started.elapsed();
        // The whole reply, then the turn's end, before the next message (which would
        // otherwise join the running turn).
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let shown = fake.messages(CHANNEL).last().map(|m| m.content.clone());
            let idle =
                bridge.router.status().iter().any(|s| {
                    s.conversation == key.to_string() && s.state == ConversationState::Idle
                });
            if shown.as_deref() == Some(text.as_str()) && idle {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "Discord reply {n} never completed: {shown:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if n >= warm_up {
            times.push(first);
        }
    }
    Ok(times)
}
