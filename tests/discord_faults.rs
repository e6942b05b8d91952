//! The Discord adapter when things go wrong: rate limits, lost answers, broken gateway
//! frames, a dropped connection, a refused intent, and the daemon killed mid-reply. The
//! real serenity routes and builders against the fake Discord, the real router, store and
//! Docker engine, and the echo provider.

#[path = "support/discord/bridge.rs"]
mod discord_bridge;
#[path = "support/discord/mod.rs"]
mod discord_fake;
mod support;

use clawpen::adapters::Adapter;
use discord_bridge::{Dc, ANN, BOB, DM_ANN, DM_BOB};
use discord_fake::{Failure, FakeDiscord, TOKEN};
use serde_json::json;
use support::daemon::{self, Daemon};
use support::logs::logged;
use support::model::{FakeModel, Reply};
use support::{eventually, REPLY_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_on_send_and_edit_are_waited_out_without_loss_or_duplicate() {
    let model = FakeModel::start().await;
    let (first, rest) = ("The first half of the answer,", " and the second half.");
    let (reply, hold) = Reply::held(first, rest);
    model.push_reply(reply);
    let fake = FakeDiscord::start().await;
    fake.fail(
        "POST /channels/{}/messages",
        [Failure::RateLimited {
            retry_after: 0.3,
            global: false,
        }],
    );
    fake.fail(
        "PATCH /channels/{}/messages/{}",
        [
            Failure::RateLimitedHeadersOnly {
                retry_after_secs: 1,
            },
            Failure::RateLimited {
                retry_after: 0.2,
                global: true,
            },
        ],
    );
    let t = Dc::with_fake(fake, |config, discord| {
        model.serve(config);
        discord.allowed_users = vec![ANN.into()];
    })
    .await;
    t.connected().await;
    t.fake.dm(DM_ANN, ANN, "go");
    hold.arrived().await;
    let fake = &t.fake;
    let shown = eventually(REPLY_TIMEOUT, || async {
        !fake.messages(DM_ANN).is_empty()
    })
    .await;
    assert!(shown, "the first part never showed");
    hold.release();
    t.reply(DM_ANN, 1, &format!("{first}{rest}")).await;
    let sends = t.fake.calls("POST /channels/{}/messages");
    assert_eq!(sends.len(), 2, "one 429, one send");
    assert_eq!(
        sends[0]["nonce"], sends[1]["nonce"],
        "the retry has another nonce"
    );
    assert_eq!(sends[1]["enforce_nonce"], json!(true));
    assert!(
        t.fake.calls("PATCH /channels/{}/messages/{}").len() >= 3,
        "the edits were not retried"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_ends_the_reply_with_a_log_line_and_is_not_retried() {
    let fake = FakeDiscord::start().await;
    let forbidden = Failure::Status(403, "Missing Permissions".into());
    fake.fail("POST /channels/{}/messages", [forbidden.clone(), forbidden]);
    let t = Dc::with_fake(fake, |_, discord| discord.allowed_users = vec![ANN.into()]).await;
    t.connected().await;
    t.fake.dm(DM_ANN, ANN, "one");
    let ended = eventually(REPLY_TIMEOUT, || async {
        logged().contains("the platform refused the end of a reply")
    })
    .await;
    assert!(ended, "no log line ended the refused reply");
    // The conversation goes on: the next reply is delivered (after at most the one 403
    // left over, which its end's own attempt outlives).
    t.fake.dm(DM_ANN, ANN, "two");
    let shown = t.reply(DM_ANN, 1, "two").await;
    assert_eq!(
        shown[0].content, "two",
        "the refused reply showed after all"
    );
    assert!(
        t.fake.calls("POST /channels/{}/messages").len() <= 4,
        "a 403 was retried"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_message_continues_in_a_new_one_and_a_gone_channel_ends_the_reply() {
    let model = FakeModel::start().await;
    let (first, rest) = ("The first half,", " and the rest of it.");
    let (reply, hold) = Reply::held(first, rest);
    model.push_reply(reply);
    let t = Dc::for_ann(&model).await;

    // Someone deletes the reply's message while it streams: the edit meets 404 Unknown
    // Message, and the whole part goes out again in a new message.
    t.fake.dm(DM_ANN, ANN, "tell me");
    hold.arrived().await;
    assert!(t.shows(DM_ANN, first).await, "the first half never showed");
    let gone = Failure::Status(404, "Unknown Message".into());
    t.fake.fail("PATCH /channels/{}/messages/{}", [gone]);
    hold.release();
    let text = format!("{first}{rest}");
    let shown = t.reply(DM_ANN, 2, &text).await;
    assert_eq!(shown[0].content, first, "{shown:?}");

    // The channel is gone (404 Unknown Channel): the reply ends with a log line, it is
    // not retried, and the conversation goes on.
    let sends = t.fake.calls("POST /channels/{}/messages").len();
    let unknown = Failure::Status(404, "Unknown Channel".into());
    t.fake
        .fail("POST /channels/{}/messages", [unknown.clone(), unknown]);
    t.fake.dm(DM_ANN, ANN, "again");
    let ended = eventually(REPLY_TIMEOUT, || async {
        logged().lines().any(|line| {
            line.contains("the platform refused the end of a reply")
                && line.contains("Unknown Channel")
        })
    })
    .await;
    assert!(ended, "no log line ended the reply to a gone channel");
    model.push_reply(Reply::text("Back."));
    t.fake.dm(DM_ANN, ANN, "are you there");
    t.reply(DM_ANN, 3, "Back.").await;
    // The failed reply's send and its end's one try, then the answer that went through
    // (after at most the one 404 left over).
    assert!(
        t.fake.calls("POST /channels/{}/messages").len() - sends <= 4,
        "a 404 was retried"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_reached_discord_before_failing_shows_once() {
    let fake = FakeDiscord::start().await;
    fake.fail("POST /channels/{}/messages", [Failure::AppliedThen502]);
    let t = Dc::with_fake(fake, |_, discord| discord.allowed_users = vec![ANN.into()]).await;
    t.connected().await;
    t.fake.dm(DM_ANN, ANN, "once please");
    t.reply(DM_ANN, 1, "once please").await;
    assert_eq!(t.fake.calls("POST /channels/{}/messages").len(), 2);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_dispatches_and_unknown_events_are_skipped_with_a_log_line() {
    let t = Dc::start(|_, discord| discord.allowed_users = vec![ANN.into()]).await;
    t.connected().await;
    let bad = t
        .fake
        .raw_dispatch("MESSAGE_CREATE", json!({"id": 5, "author": "nobody"}));
    let unknown = t
        .fake
        .raw_dispatch("SOMETHING_NEW_2030", json!({"x": [1, 2]}));
    t.fake.raw_frame("{not json at all");
    t.fake
        .raw_frame(r#"{"op": 0, "s": null, "t": "MESSAGE_CREATE", "d": null}"#);
    t.fake.dm(DM_ANN, ANN, "still here");
    t.reply(DM_ANN, 1, "still here").await;
    let logs = logged();
    for (seq, words) in [(bad, "malformed"), (unknown, "unknown type")] {
        let line = logs
            .lines()
            .find(|l| l.contains(&format!("seq=Some({seq})")) && l.contains(words));
        assert!(line.is_some(), "no log line for dispatch {seq} ({words})");
    }
    assert!(
        logs.contains("does not read"),
        "no log line for the broken frame"
    );
    assert_eq!(t.fake.gateway_counts().0, 1, "the session was not kept");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_mid_turn_loses_and_doubles_nothing() {
    let model = FakeModel::start().await;
    let (first, rest) = ("Part one of a long answer,", " and its end.");
    let (reply, hold) = Reply::held(first, rest);
    model.push_reply(reply);
    model.push_reply(Reply::text("the second answer"));
    let t = Dc::start(|config, discord| {
        model.serve(config);
        discord.allowed_users = vec![ANN.into(), BOB.into()];
    })
    .await;
    t.connected().await;
    t.fake.dm(DM_ANN, ANN, "a long question");
    hold.arrived().await;
    // The connection drops; the resume replays the last dispatch seen (Ann's message)
    // and the one sent meanwhile (Bob's).
    t.fake.replay_overlap(1);
    t.fake.disconnect(4000);
    t.fake.dm(DM_BOB, BOB, "a second question");
    let fake = &t.fake;
    let resumed = eventually(REPLY_TIMEOUT, || async { fake.gateway_counts().1 >= 1 }).await;
    assert!(resumed, "the client never resumed");
    t.reply(DM_BOB, 1, "the second answer").await;
    hold.release();
    t.reply(DM_ANN, 1, &format!("{first}{rest}")).await;
    assert_eq!(
        t.fake.gateway_counts().0,
        1,
        "identified again instead of resuming"
    );
    assert_eq!(model.requests().len(), 2, "a message was handled twice");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_content_intent_is_named_with_the_portal_switch() {
    let fake = FakeDiscord::start().await;
    fake.refuse_identify(Some(4014));
    let t = Dc::with_fake(fake, |_, discord| discord.allowed_users = vec![ANN.into()]).await;
    let adapter = &t.adapter;
    let told = eventually(REPLY_TIMEOUT, || async { adapter.trouble().is_some() }).await;
    let trouble = t.adapter.trouble().unwrap_or_default();
    assert!(
        told && trouble.contains("Message Content Intent"),
        "{trouble:?}"
    );
    assert!(
        logged().contains("4014"),
        "no log line names the close code"
    );
    t.stop().await;
}

/// The environment of a daemon whose Discord adapter talks to `fake` and lets Ann in.
fn discord_env(fake: &FakeDiscord) -> Vec<(&'static str, String)> {
    vec![
        ("CLAWPEN_ECHO_DELAY_MS", "250".into()),
        ("DISCORD_BOT_TOKEN", TOKEN.into()),
        ("DISCORD_API_URL", fake.url().into()),
        ("CLAWPEN_DISCORD_ALLOWED_USERS", ANN.into()),
        ("CLAWPEN_LOG", "clawpen=debug,clawpen_adapters=debug".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_reply_then_restart_shows_one_complete_reply() {
    let fake = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().to_path_buf();
    let text: String = (1..=45).map(|n| format!("word{n} ")).collect::<String>();
    let text = text.trim_end();

    let _cleanup = daemon::cleanup(&data);
    let env = discord_env(&fake);
    let mut first = Daemon::start(&data, 0, &env);
    let ready = eventually(REPLY_TIMEOUT, || async { !fake.commands().is_empty() }).await;
    assert!(ready, "the daemon never connected");
    fake.dm(DM_ANN, ANN, text);
    let started = eventually(REPLY_TIMEOUT, || async {
        !fake.messages(DM_ANN).is_empty()
    })
    .await;
    assert!(started, "the reply never started");
    first.kill(); // SIGKILL
    let before = fake.messages(DM_ANN);
    assert_eq!(before.len(), 1);
    assert!(
        before[0].content.len() < text.len(),
        "killed too late: {before:?}"
    );

    let second = Daemon::start(&data, 1, &env);
    let done = eventually(REPLY_TIMEOUT, || async {
        fake.messages(DM_ANN).iter().any(|m| m.content == text)
    })
    .await;
    let after = fake.messages(DM_ANN);
    assert!(done, "no complete reply after the restart: {after:#?}");
    assert_eq!(after.len(), 1, "the reply was repeated: {after:#?}");
    assert_eq!(after[0].id, before[0].id, "the same message was finished");
    drop(second);
}
