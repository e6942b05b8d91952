//! Tool status lines ("running: cargo test") on the chat platforms: while a tool runs, the
//! line shows under the reply being streamed (in its draft on Telegram's private chats, in
//! its edited message on Discord), and the final reply is the agent's text alone. The real
//! clients against the fake platforms, the real router, store and Docker engine.

#[path = "support/discord/bridge.rs"]
mod discord_bridge;
#[path = "support/discord/mod.rs"]
mod discord_fake;
mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use discord_bridge::{Dc, ANN, DM_ANN};
use serde_json::json;
use support::model::{FakeModel, Reply};
use support::{eventually, REPLY_TIMEOUT};
use telegram_fake::bridge::Tg;

const STATUS: &str = "⚙️ running: echo checked";
const ANSWER: &str = "Checked: all is well.";

/// The model first runs a command, then answers; the answer waits for the returned hold,
/// so the tool's status line stays up for as long as the test looks.
fn tool_then_answer(model: &FakeModel) -> support::model::Hold {
    model.push_reply(Reply::tool_call(
        "shell",
        json!({ "command": "echo checked" }),
    ));
    let (answer, hold) = Reply::held("", ANSWER);
    model.push_reply(answer);
    hold
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_shows_the_status_line_in_the_draft_and_not_in_the_reply() {
    let model = FakeModel::start().await;
    let hold = tool_then_answer(&model);
    let t = Tg::start(|config, telegram| {
        model.serve(config);
        telegram.allowed_users = vec![100];
    })
    .await;
    t.fake.dm(100, "check it");
    hold.arrived().await;
    let fake = &t.fake;
    let shown = eventually(REPLY_TIMEOUT, || async {
        fake.drafts(100).iter().any(|d| d.text == STATUS)
    })
    .await;
    assert!(shown, "no status line: {:?}", fake.drafts(100));
    hold.release();
    let sent = t.reply(100, 1, ANSWER).await;
    assert!(!sent[0].text.contains("⚙️"), "{sent:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_shows_the_status_line_in_the_message_the_answer_then_takes_over() {
    let model = FakeModel::start().await;
    let hold = tool_then_answer(&model);
    let t = Dc::for_ann(&model).await;
    t.fake.dm(DM_ANN, ANN, "check it");
    hold.arrived().await;
    let shown = t.shows(DM_ANN, STATUS).await;
    assert!(shown, "no status line: {:?}", t.fake.messages(DM_ANN));
    hold.release();
    // One message: the status line's, edited into the answer.
    let sent = t.reply(DM_ANN, 1, ANSWER).await;
    assert!(sent[0].edits >= 1, "{sent:?}");
    t.stop().await;
}
