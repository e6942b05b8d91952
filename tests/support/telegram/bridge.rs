//! A bridge with the Telegram adapter against the fake, in-process, for the tests that
//! watch a chat through the fake: start it, look at its boxes, wait for replies, stop it.

use std::sync::Arc;

use clawpen::adapters::egress::Egress;
use clawpen::adapters::telegram::{TelegramAdapter, TelegramConfig};
use clawpen::adapters::{Adapter, ConversationKey};
use clawpen::config::Config;
use clawpen::daemon::Bridge;

use super::{FakeTelegram, Sent, TOKEN};
use crate::support::logs::logs;
use crate::support::{eventually, exec_in, test_config, REPLY_TIMEOUT};

/// A bridge with the Telegram adapter, on its own data directory and fake server.
pub struct Tg {
    pub fake: FakeTelegram,
    pub adapter: Arc<TelegramAdapter>,
    pub bridge: Bridge,
    pub dir: tempfile::TempDir,
}

pub fn telegram_config(fake: &FakeTelegram) -> TelegramConfig {
    TelegramConfig {
        token: Some(TOKEN.into()),
        api_url: fake.url().into(),
        trigger: Some("claw".into()),
        poll_timeout_secs: 2,
        ..TelegramConfig::default()
    }
}

impl Tg {
    pub async fn start(tweak: impl FnOnce(&mut Config, &mut TelegramConfig)) -> Self {
        Self::with_fake(FakeTelegram::start().await, tweak).await
    }

    /// A bridge on a fake the test prepared first (failures to serve, queued updates).
    pub async fn with_fake(
        fake: FakeTelegram,
        tweak: impl FnOnce(&mut Config, &mut TelegramConfig),
    ) -> Self {
        Self::through(fake, &Egress::from_env(), tweak).await
    }

    /// The same, reaching the fake through `egress` (a proxy, extra CAs).
    pub async fn through(
        fake: FakeTelegram,
        egress: &Egress,
        tweak: impl FnOnce(&mut Config, &mut TelegramConfig),
    ) -> Self {
        logs();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut config = test_config(dir.path());
        let mut telegram = telegram_config(&fake);
        tweak(&mut config, &mut telegram);
        let adapter = TelegramAdapter::with_egress(telegram, egress)
            .unwrap_or_else(|e| panic!("adapter: {e}"));
        let bridge = Bridge::start(&config, vec![adapter.clone() as Arc<dyn Adapter>])
            .await
            .unwrap_or_else(|e| panic!("bridge start: {e}"));
        Self {
            fake,
            adapter,
            bridge,
            dir,
        }
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

    /// Runs a command in a conversation's box.
    pub async fn exec(&self, conversation: &ConversationKey, cmd: &[&str]) -> (i64, String) {
        let sandbox = self.bridge.router.sandbox();
        let list = sandbox.list().await.unwrap_or_default();
        let Some(info) = list
            .iter()
            .find(|b| b.conversation.as_ref() == Some(conversation))
        else {
            panic!("no box for {conversation}");
        };
        exec_in(sandbox.docker(), info.id.as_str(), cmd).await
    }

    /// Waits until the chat shows `count` messages from the bot, the last one reading
    /// `text`; returns them.
    pub async fn reply(&self, chat: i64, count: usize, text: &str) -> Vec<Sent> {
        let fake = &self.fake;
        let done = eventually(REPLY_TIMEOUT, || async {
            let shown = fake.messages(chat);
            shown.len() == count && shown.last().is_some_and(|m| m.text == text)
        })
        .await;
        let shown = fake.messages(chat);
        assert!(
            done,
            "chat {chat} never showed {text:?}; it shows {shown:#?}"
        );
        shown
    }

    /// Waits until Telegram was told every update up to `update_id` is handled.
    pub async fn handled(&self, update_id: i64) {
        let done = eventually(REPLY_TIMEOUT, || async { self.fake.confirmed(update_id) }).await;
        assert!(done, "update {update_id} was never confirmed");
    }

    pub async fn stop(self) {
        let sandbox = self.bridge.router.sandbox().clone();
        self.bridge.shutdown().await;
        if let Err(e) = sandbox.remove_all().await {
            eprintln!("cleanup failed: {e}");
        }
    }
}

pub fn key(chat: i64) -> ConversationKey {
    ConversationKey::new("telegram", chat.to_string())
}
