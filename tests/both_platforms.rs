//! The real `clawpen run` with both chat platforms configured, as an operator starts it:
//! one daemon serves Telegram and Discord together (the fake of each), every conversation
//! in a box of its own, and SIGTERM stops both cleanly.

#[path = "support/discord/mod.rs"]
mod discord_fake;
mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use clawpen::adapters::ConversationKey;
use support::daemon::{self, Daemon};
use support::{eventually, test_config, REPLY_TIMEOUT};

const ANN: &str = "100000000000000001";
const DM_ANN: &str = "400000000000000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_answers_on_telegram_and_discord_in_boxes_of_their_own() {
    let telegram = telegram_fake::FakeTelegram::start().await;
    let discord = discord_fake::FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().to_path_buf();
    let _cleanup = daemon::cleanup(&data);
    let mut env = daemon::telegram_env(telegram.url(), telegram_fake::TOKEN, &[100]);
    env.extend([
        ("DISCORD_BOT_TOKEN", discord_fake::TOKEN.to_string()),
        ("DISCORD_API_URL", discord.url().to_string()),
        ("CLAWPEN_DISCORD_ALLOWED_USERS", ANN.to_string()),
    ]);
    let running = Daemon::start(&data, 0, &env);
    // Discord's slash commands are registered once its adapter has started.
    let ready = eventually(REPLY_TIMEOUT, || async { !discord.commands().is_empty() }).await;
    assert!(ready, "the Discord adapter never started");

    telegram.dm(100, "hello from Telegram");
    discord.dm(DM_ANN, ANN, "hello from Discord");
    let answered = eventually(REPLY_TIMEOUT, || async {
        let on_telegram = telegram.messages(100);
        let on_discord = discord.messages(DM_ANN);
        on_telegram.iter().any(|m| m.text == "hello from Telegram")
            && on_discord.iter().any(|m| m.content == "hello from Discord")
    })
    .await;
    if !answered {
        daemon::print_log_tails(&data, 0, 40);
    }
    assert!(
        answered,
        "Telegram shows {:?}, Discord shows {:?}",
        telegram.messages(100),
        discord.messages(DM_ANN)
    );
    let status = running.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "the daemon did not stop cleanly: {status:?}"
    );

    // The boxes stay for next time, one per conversation: labelled with it, or a box of
    // the warm pool that the conversation claimed (its workspace recorded in the store).
    let store = clawpen::store::Store::open(&data.join("store")).unwrap_or_else(|e| panic!("{e}"));
    let sandbox = clawpen::sandbox::Sandbox::connect(&test_config(&data), &store.instance_id())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let listed = sandbox.list().await.unwrap_or_default();
    let labelled = listed.iter().filter_map(|b| b.conversation.clone());
    let claimed = store.claimed_workspaces().unwrap_or_default().into_values();
    let mut boxes: Vec<ConversationKey> = labelled.chain(claimed).collect();
    boxes.sort_by_key(ToString::to_string);
    boxes.dedup();
    assert_eq!(
        boxes,
        [
            ConversationKey::new("discord", DM_ANN),
            ConversationKey::new("telegram", "100"),
        ],
        "{listed:?}"
    );
}
