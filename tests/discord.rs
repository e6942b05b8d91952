//! The Discord adapter end to end: the real serenity routes and builders against a fake
//! Discord (REST through `DISCORD_API_URL`, a gateway on plain `ws://`), the real router,
//! store and Docker engine, and the echo provider (which echoes every turn message's text,
//! unaddressed context included, joined by blank lines).

#[path = "support/discord/bridge.rs"]
mod discord_bridge;
#[path = "support/discord/mod.rs"]
mod discord_fake;
mod support;

use clawpen::adapters::access::{PAIRED, REFUSAL, UNPAIRED};
use clawpen::adapters::{Adapter, Upload};
use discord_bridge::{
    assert_never_pings, key, Dc, ANN, BOB, CHANNEL, DM_ANN, DM_STRANGER, STRANGER,
};
use discord_fake::{Failure, FakeDiscord, Sent, TOKEN};
use serde_json::json;
use support::model::{FakeModel, Reply};
use support::{eventually, REPLY_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_streams_into_one_edited_message_with_the_agents_text() {
    let model = FakeModel::start().await;
    let (first, rest) = (
        "Hello there! This reply streams in pieces,",
        " edited in place.",
    );
    let (reply, hold) = Reply::held(first, rest);
    model.push_reply(reply);
    let t = Dc::for_ann(&model).await;
    t.fake.dm(DM_ANN, ANN, "say hello");
    hold.arrived().await;
    assert!(
        t.shows(DM_ANN, first).await,
        "the first part never showed: {:?}",
        t.fake.messages(DM_ANN)
    );
    hold.release();
    let text = format!("{first}{rest}");
    let shown = t.reply(DM_ANN, 1, &text).await;
    assert!(shown[0].edits >= 1, "the reply was not edited in place");
    assert!(shown[0].nonce.is_some(), "a send without a nonce");
    assert!(t.fake.typing(DM_ANN) >= 1, "no typing indicator");
    assert_never_pings(&shown);
    let intents = t.fake.intents().unwrap_or_default();
    // GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES, MESSAGE_CONTENT.
    assert_eq!(intents, 1 | 1 << 9 | 1 << 12 | 1 << 15);
    let names: Vec<String> = t
        .fake
        .commands()
        .iter()
        .map(|c| c["name"].to_string())
        .collect();
    // `/ask`, then the shared chat commands, each with its argument as an option.
    let shared: Vec<String> = std::iter::once("ask")
        .chain(clawpen::adapters::command::menu().map(|(name, _)| name))
        .map(|name| format!("{name:?}"))
        .collect();
    assert_eq!(names, shared);
    assert!(names.contains(&"\"pause\"".to_string()), "{names:?}");
    let pause = t.fake.commands();
    let pause = pause.iter().find(|c| c["name"] == "pause");
    assert_eq!(
        pause.map(|c| c["options"][0]["name"].clone()),
        Some(serde_json::json!("args")),
        "/pause takes the task's id"
    );
    assert!(t.fake.gateway_counts().2 >= 1, "no heartbeat");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_channel_mentions_are_answered_and_chatter_is_context() {
    let t = Dc::start(|_, discord| discord.allowed_channels = vec![CHANNEL.into()]).await;
    t.connected().await;
    t.fake.chatter(CHANNEL, BOB, "good morning all");
    let asked = t.fake.mention(CHANNEL, ANN, "first question");
    let shown = t
        .reply(CHANNEL, 1, "good morning all\n\nfirst question")
        .await;
    assert_eq!(
        shown[0].reply_to.as_deref(),
        Some(asked.as_str()),
        "the answer quotes the question"
    );
    // A reply to the bot's message addresses it too; chatter alone is never answered.
    t.fake.chatter(CHANNEL, BOB, "lunch at noon?");
    let mut reply = t.fake.message(CHANNEL, true, BOB, "third");
    reply["type"] = json!(19);
    reply["message_reference"] = json!({"message_id": shown[0].id, "channel_id": CHANNEL});
    reply["referenced_message"] = json!({"id": shown[0].id, "author": discord_fake::bot_user()});
    t.fake.post(reply);
    t.reply(CHANNEL, 2, "lunch at noon?\n\nthird").await;
    assert_eq!(t.boxes().await, [key(CHANNEL)]);
    assert_never_pings(&t.fake.messages(CHANNEL));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_threads_are_two_conversations_with_boxes_of_their_own() {
    let t = Dc::start(|_, discord| discord.allowed_channels = vec![CHANNEL.into()]).await;
    t.connected().await;
    let one = t.fake.open_thread(CHANNEL);
    let two = t.fake.open_thread(CHANNEL);
    t.fake.mention(&one, ANN, "in thread one");
    t.fake.mention(&two, BOB, "in thread two");
    t.reply(&one, 1, "in thread one").await;
    t.reply(&two, 1, "in thread two").await;
    assert!(
        t.fake.messages(CHANNEL).is_empty(),
        "a thread's answer went to its channel"
    );
    let mut boxes = t.boxes().await;
    boxes.sort();
    let mut expected = vec![
        key(CHANNEL).with_thread(&one),
        key(CHANNEL).with_thread(&two),
    ];
    expected.sort();
    assert_eq!(boxes, expected);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5000_character_reply_splits_outside_its_code_block_and_loses_nothing() {
    let t = Dc::start(|config, discord| {
        config.echo_delay_ms = 1;
        discord.allowed_users = vec![ANN.into()];
    })
    .await;
    t.connected().await;
    let sentence = "Every sentence says a little more, and then a bit more again. ";
    let prose = |n: usize| -> String {
        (0..n)
            .map(|p| format!("Paragraph {p}. {}\n\n", sentence.repeat(3)))
            .collect()
    };
    let code: String = (0..30)
        .map(|i| format!("    let value_{i:02} = compute({i}) < limit;\n"))
        .collect();
    let text = format!(
        "{}```rust\n{code}```\n\n{}**Done**: the end.",
        prose(12),
        prose(8)
    );
    assert!(text.chars().count() > 5000, "{}", text.chars().count());
    t.fake.dm(DM_ANN, ANN, &text);
    let fake = &t.fake;
    let finished = eventually(REPLY_TIMEOUT, || async {
        fake.messages(DM_ANN)
            .last()
            .is_some_and(|m| m.content.ends_with("**Done**: the end."))
    })
    .await;
    let shown = fake.messages(DM_ANN);
    assert!(finished, "the reply never finished: {shown:#?}");
    assert!(shown.len() >= 3, "{} messages", shown.len());
    for message in &shown {
        assert!(
            message.content.chars().count() <= 2000,
            "too long: {}",
            message.content.len()
        );
        assert_eq!(
            message.content.matches("```").count() % 2,
            0,
            "a code block was cut: {message:?}"
        );
    }
    let whole: Vec<&Sent> = shown
        .iter()
        .filter(|m| m.content.contains(code.trim_end()))
        .collect();
    assert_eq!(whole.len(), 1, "the code block was split");
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    let joined: String = shown.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        squeeze(&joined),
        squeeze(&text),
        "the messages do not show the agent's text"
    );
    assert_never_pings(&shown);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_in_agent_output_never_pings() {
    let t = Dc::start(|_, discord| discord.allowed_users = vec![ANN.into()]).await;
    t.connected().await;
    t.fake.dm(DM_ANN, ANN, "@everyone @here <@&5> look");
    let shown = t.reply(DM_ANN, 1, "@everyone @here <@&5> look").await;
    assert_never_pings(&shown);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_is_refused_once_and_gets_no_box() {
    let t = Dc::start(|_, discord| discord.allowed_users = vec![ANN.into()]).await;
    t.connected().await;
    t.fake.dm(DM_STRANGER, STRANGER, "let me in");
    t.reply(DM_STRANGER, 1, REFUSAL).await;
    t.fake.dm(DM_STRANGER, STRANGER, "please?");
    t.fake.mention(CHANNEL, STRANGER, "hello?");
    // Events are handled in order: once Ann is answered, the stranger's were handled.
    t.fake.dm(DM_ANN, ANN, "hi");
    t.reply(DM_ANN, 1, "hi").await;
    assert_eq!(
        t.fake.messages(DM_STRANGER).len(),
        1,
        "refused more than once an hour"
    );
    assert!(t.fake.messages(CHANNEL).is_empty());
    assert_eq!(t.boxes().await, [key(DM_ANN)], "a stranger got a box");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_admits_its_holders_in_any_channel() {
    let role = "500000000000000001";
    let t = Dc::start(|_, discord| discord.allowed_roles = vec![role.into()]).await;
    t.connected().await;
    let mut held = t.fake.message(
        CHANNEL,
        true,
        BOB,
        &format!("<@{}> with the role", discord_fake::BOT_ID),
    );
    held["mentions"] = json!([discord_fake::bot_user()]);
    held["member"]["roles"] = json!([role]);
    t.fake.post(held);
    t.reply(CHANNEL, 1, "with the role").await;
    t.fake.mention(CHANNEL, STRANGER, "without it");
    t.reply(CHANNEL, 2, REFUSAL).await;
    assert_eq!(t.boxes().await, [key(CHANNEL)]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_allowlist_the_owner_pairs_by_a_code_in_a_dm() {
    let t = Dc::start(|_, _| {}).await;
    t.connected().await;
    let code = t
        .adapter
        .pairing_code()
        .unwrap_or_else(|| panic!("pairing is not open"));
    t.fake.dm(DM_STRANGER, STRANGER, "hello?");
    t.reply(DM_STRANGER, 1, UNPAIRED).await;
    // The code counts in a DM only: said in a channel it pairs nobody.
    t.fake.mention(CHANNEL, BOB, &code);
    t.reply(CHANNEL, 1, UNPAIRED).await;
    t.fake.dm(DM_ANN, ANN, &code);
    t.reply(DM_ANN, 1, PAIRED).await;
    t.fake.dm(DM_ANN, ANN, "now me");
    t.reply(DM_ANN, 2, "now me").await;
    assert_eq!(t.boxes().await, [key(DM_ANN)]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_commands_are_acknowledged_in_time_and_answered() {
    let t = Dc::start(|_, discord| discord.allowed_users = vec![ANN.into()]).await;
    t.connected().await;
    let ask = t
        .fake
        .slash(CHANNEL, true, ANN, "ask", Some("what is two and two"));
    t.reply(CHANNEL, 1, "what is two and two").await;
    let answered = t.fake.answered(&ask);
    assert_eq!(answered.acked, Some(5), "not deferred within Discord's 3 s");
    assert_eq!(answered.content.as_deref(), Some("> what is two and two"));
    let status = t.fake.slash(CHANNEL, true, ANN, "status", None);
    let fake = &t.fake;
    let done = eventually(REPLY_TIMEOUT, || async {
        fake.answered(&status).content.is_some()
    })
    .await;
    assert!(done, "/status was never answered");
    assert_eq!(t.fake.answered(&status).acked, Some(5));
    // A stranger's slash command is answered with the refusal, and never reaches a box.
    let refused = t
        .fake
        .slash(CHANNEL, true, STRANGER, "ask", Some("let me in"));
    let done = eventually(REPLY_TIMEOUT, || async {
        fake.answered(&refused).content.is_some()
    })
    .await;
    assert!(done, "the stranger's command was never answered");
    assert_eq!(t.fake.answered(&refused).content.as_deref(), Some(REFUSAL));
    assert_eq!(t.boxes().await, [key(CHANNEL)]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_opens_a_thread_that_is_the_conversation_from_then_on() {
    let t = Dc::start(|_, discord| {
        discord.allowed_channels = vec![CHANNEL.into()];
        discord.thread_per_mention = true;
    })
    .await;
    t.connected().await;
    t.fake
        .mention(CHANNEL, ANN, "plan the release\nwith details");
    let fake = &t.fake;
    let opened = eventually(REPLY_TIMEOUT, || async { !fake.threads().is_empty() }).await;
    assert!(opened, "no thread was opened");
    let (parent, thread, name) = t.fake.threads()[0].clone();
    assert_eq!(
        (parent.as_str(), name.as_str()),
        (CHANNEL, "plan the release")
    );
    t.reply(&thread, 1, "plan the release\nwith details").await;
    // In the bot's thread every message is for the bot, without a mention.
    t.fake.chatter(&thread, ANN, "and the changelog");
    t.reply(&thread, 2, "and the changelog").await;
    assert!(
        t.fake.messages(CHANNEL).is_empty(),
        "an answer went to the channel"
    );
    assert_eq!(t.boxes().await, [key(CHANNEL).with_thread(&thread)]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_reach_the_inbox_and_uploads_reach_the_channel() {
    let fake = FakeDiscord::start().await;
    fake.fail(
        "POST /channels/{}/messages",
        [Failure::RateLimited {
            retry_after: 0.2,
            global: false,
        }],
    );
    let t = Dc::with_fake(fake, |_, discord| discord.allowed_users = vec![ANN.into()]).await;
    t.connected().await;
    let url = t.fake.add_file("notes.txt", b"NOTES OF THE MEETING");
    let mut message = t.fake.message(DM_ANN, false, ANN, "read this");
    message["attachments"] = json!([{"id": "1", "filename": "notes.txt", "size": 20, "url": url,
        "proxy_url": url, "content_type": "text/plain"}]);
    t.fake.post(message);
    t.reply(DM_ANN, 1, "read this").await;
    let sandbox = t.bridge.router.sandbox();
    let boxes = sandbox.list().await.unwrap_or_default();
    let container = boxes
        .first()
        .map(|b| b.id.clone())
        .unwrap_or_else(|| panic!("no box"));
    let cat = ["sh", "-c", "cat /workspace/inbox/*notes.txt"];
    let (code, out) = support::exec_in(sandbox.docker(), container.as_str(), &cat).await;
    assert_eq!((code, out.as_str()), (0, "NOTES OF THE MEETING"));
    // The echo agent sends no files, so the upload is driven through the adapter directly.
    let file = Upload {
        name: "report.txt".into(),
        data: b"the agent's report".to_vec(),
    };
    let sent = t.adapter.upload(&key(DM_ANN), &file).await;
    assert!(sent.is_ok(), "{sent:?}");
    let uploads: Vec<Sent> = t
        .fake
        .messages(DM_ANN)
        .into_iter()
        .filter(|m| !m.files.is_empty())
        .collect();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        uploads[0].files,
        [("report.txt".to_string(), file.data.clone())]
    );
    assert_never_pings(&uploads);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_token_the_message_content_intent_and_the_gateway() {
    use clawpen::adapters::discord::registration::Discord;
    use clawpen::adapters::registry::Registration;
    use std::collections::BTreeMap;
    let fake = FakeDiscord::start().await;
    let env = |token: &str| {
        BTreeMap::from([
            ("DISCORD_BOT_TOKEN".to_string(), token.to_string()),
            ("DISCORD_API_URL".to_string(), fake.url().to_string()),
        ])
    };
    let probe = |token: &str| {
        let settings = Discord.configure(&BTreeMap::new(), &env(token));
        let settings = settings.unwrap_or_else(|e| panic!("{e}"));
        async move { settings.probe().await }
    };
    let checks = probe(TOKEN).await;
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert!(checks[0].detail.contains("token accepted"), "{checks:?}");
    assert!(checks[0].detail.contains("reachable"), "{checks:?}");
    // A gateway nothing listens at: the check fails and says which part.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = closed.local_addr().map(|a| a.port()).unwrap_or(1);
    drop(closed);
    fake.set_gateway_url(&format!("ws://127.0.0.1:{port}"));
    let checks = probe(TOKEN).await;
    assert!(
        !checks[0].ok && checks[0].detail.contains("cannot reach the gateway"),
        "{checks:?}"
    );
    let checks = probe("wrong-token").await;
    assert!(
        !checks[0].ok && checks[0].detail.contains("DISCORD_BOT_TOKEN"),
        "{checks:?}"
    );
    fake.set_app_flags(0);
    let checks = probe(TOKEN).await;
    assert!(
        !checks[0].ok && checks[0].detail.contains("Message Content Intent"),
        "{checks:?}"
    );
}
