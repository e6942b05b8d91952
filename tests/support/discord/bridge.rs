//! A bridge with the Discord adapter against the fake, in-process: start it, look at its
//! boxes, wait for replies, stop it.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

use std::sync::Arc;

use clawpen::adapters::discord::{DiscordAdapter, DiscordConfig};
use clawpen::adapters::egress::Egress;
use clawpen::adapters::{Adapter, ConversationKey};
use clawpen::config::Config;
use clawpen::daemon::Bridge;
use serde_json::json;

use crate::discord_fake::{FakeDiscord, Sent, TOKEN};
use crate::support::logs::logs;
use crate::support::model::FakeModel;
use crate::support::{eventually, test_config, Cleanup, REPLY_TIMEOUT};

/// Users, channels and DM channels of the tests.
pub const ANN: &str = "100000000000000001";
pub const BOB: &str = "100000000000000002";
pub const STRANGER: &str = "100000000000000666";
pub const CHANNEL: &str = "300000000000000001";
pub const DM_ANN: &str = "400000000000000001";
pub const DM_BOB: &str = "400000000000000002";
pub const DM_STRANGER: &str = "400000000000000666";

/// Every send and edit forbade @everyone, @here and role pings.
pub fn assert_never_pings(messages: &[Sent]) {
    for message in messages {
        assert!(!message.allowed_mentions.is_empty(), "{message:?}");
        for allowed in &message.allowed_mentions {
            assert_eq!(allowed["parse"], json!([]), "{message:?}");
        }
        assert!(!message.pings_everyone(), "{message:?}");
    }
}

/// A bridge with the Discord adapter, on its own data directory and fake server.
pub struct Dc {
    pub fake: FakeDiscord,
    pub adapter: Arc<DiscordAdapter>,
    pub bridge: Bridge,
    pub dir: tempfile::TempDir,
    /// Removes the boxes even when a test panics before [`Dc::stop`].
    pub cleanup: Cleanup,
}

pub fn discord_config(fake: &FakeDiscord) -> DiscordConfig {
    DiscordConfig {
        token: Some(TOKEN.into()),
        api_url: fake.url().into(),
        ..DiscordConfig::default()
    }
}

impl Dc {
    pub async fn start(tweak: impl FnOnce(&mut Config, &mut DiscordConfig)) -> Self {
        Self::with_fake(FakeDiscord::start().await, tweak).await
    }

    /// A bridge on a fake the test prepared first.
    pub async fn with_fake(
        fake: FakeDiscord,
        tweak: impl FnOnce(&mut Config, &mut DiscordConfig),
    ) -> Self {
        Self::through(fake, Egress::from_env(), tweak).await
    }

    /// The same, reaching the fake through `egress` (a proxy, extra CAs).
    pub async fn through(
        fake: FakeDiscord,
        egress: Egress,
        tweak: impl FnOnce(&mut Config, &mut DiscordConfig),
    ) -> Self {
        logs();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut config = test_config(dir.path());
        let mut discord = discord_config(&fake);
        tweak(&mut config, &mut discord);
        let adapter =
            DiscordAdapter::with_egress(discord, egress).unwrap_or_else(|e| panic!("adapter: {e}"));
        let bridge = Bridge::start(&config, vec![adapter.clone() as Arc<dyn Adapter>])
            .await
            .unwrap_or_else(|e| panic!("bridge start: {e}"));
        let instance = bridge.router.sandbox().instance().to_string();
        Self {
            fake,
            adapter,
            bridge,
            dir,
            cleanup: Cleanup { instance },
        }
    }

    /// Waits until the gateway session is ready (READY handled: the bot knows itself).
    /// A bridge on `model` that lets Ann in, connected to the fake gateway.
    pub async fn for_ann(model: &FakeModel) -> Self {
        let t = Self::start(|config, discord| {
            model.serve(config);
            discord.allowed_users = vec![ANN.into()];
        })
        .await;
        t.connected().await;
        t
    }

    /// Whether `channel` comes to show a message reading `text`, within the reply timeout.
    pub async fn shows(&self, channel: &str, text: &str) -> bool {
        let fake = &self.fake;
        eventually(REPLY_TIMEOUT, || async {
            fake.messages(channel).iter().any(|m| m.content == text)
        })
        .await
    }

    pub async fn connected(&self) {
        let fake = &self.fake;
        let ready = eventually(REPLY_TIMEOUT, || async { !fake.commands().is_empty() }).await;
        assert!(
            ready,
            "the adapter never registered its commands after READY"
        );
    }

    /// The conversations that have a box.
    pub async fn boxes(&self) -> Vec<ConversationKey> {
        let list = self
            .bridge
            .router
            .sandbox()
            .list()
            .await
            .unwrap_or_default();
        list.into_iter().filter_map(|b| b.conversation).collect()
    }

    /// Waits until `channel` shows `count` messages from the bot, the last reading `text`.
    pub async fn reply(&self, channel: &str, count: usize, text: &str) -> Vec<Sent> {
        let fake = &self.fake;
        let done = eventually(REPLY_TIMEOUT, || async {
            let shown = fake.messages(channel);
            shown.len() == count && shown.last().is_some_and(|m| m.content == text)
        })
        .await;
        let shown = fake.messages(channel);
        assert!(
            done,
            "channel {channel} never showed {text:?}; it shows {shown:#?}"
        );
        shown
    }

    pub async fn stop(self) {
        let sandbox = self.bridge.router.sandbox().clone();
        self.bridge.shutdown().await;
        if let Err(e) = sandbox.remove_all().await {
            eprintln!("cleanup failed: {e}");
        }
    }
}

pub fn key(channel: &str) -> ConversationKey {
    ConversationKey::new("discord", channel)
}
