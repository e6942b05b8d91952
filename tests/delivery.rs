//! Delivery beside the actor, against the fake Telegram: rate limits are waited out however
//! long they last and the whole reply arrives once, and while an edit waits out a long 429
//! the conversation itself goes on (`/stop` ends the turn at once).

mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use std::time::{Duration, Instant};

use support::model::{FakeModel, Reply};
use support::{eventually, REPLY_TIMEOUT};
use telegram_fake::bridge::Tg;
use telegram_fake::Failure;

/// A reply of about 2,500 characters, in many small deltas.
fn long_text() -> String {
    let words: Vec<String> = (1..=320).map(|n| format!("w{n}")).collect();
    words.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_on_edits_is_waited_out_and_the_whole_reply_arrives_once() {
    let chat = -810;
    let t = Tg::start(|config, telegram| {
        config.echo_delay_ms = 10;
        telegram.allowed_chats = vec![chat];
    })
    .await;
    // Twice as many 429s as an operation has attempts: a limit is not a failure.
    t.fake
        .fail("editMessageText", vec![Failure::RetryAfter(1); 12]);
    let text = long_text();
    t.fake
        .send(t.fake.message(chat, 101, &format!("@ClawBot {text}")));
    let done = eventually(REPLY_TIMEOUT, || async {
        t.fake.messages(chat).iter().any(|m| m.text == text)
    })
    .await;
    let shown = t.fake.messages(chat);
    assert!(done, "the reply never arrived whole: {shown:#?}");
    assert_eq!(shown.len(), 1, "the reply was repeated: {shown:#?}");
    assert_eq!(
        t.fake.failed("editMessageText"),
        12,
        "the storm was not served"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_turn_at_once_while_an_edit_waits_out_a_long_429() {
    let chat = -811;
    // The answer's first part streams in small pieces (a message, then edits); then the
    // model holds the rest, so the turn runs until it is stopped.
    let model = FakeModel::start().await;
    let rest = " and an end that is never shown";
    let (reply, hold) = Reply::held(&long_text(), rest);
    model.push_reply(reply.in_pieces_of(40));
    let t = Tg::start(|config, telegram| {
        model.serve(config);
        telegram.allowed_chats = vec![chat];
    })
    .await;
    t.fake.fail("editMessageText", [Failure::RetryAfter(15)]);
    let (_, asked_id) = t
        .fake
        .send(t.fake.message(chat, 101, "@ClawBot tell me everything"));
    hold.arrived().await;
    // The reply started and its first edit met the 429: delivery now waits 15 s.
    let held = eventually(REPLY_TIMEOUT, || async {
        t.fake.failed("editMessageText") == 1
    })
    .await;
    assert!(held, "no edit met the 429");
    let key = telegram_fake::bridge::key(chat).to_string();
    let running = |t: &Tg| {
        t.bridge.router.status().iter().any(|s| {
            s.conversation == key && s.state == clawpen::router::ConversationState::RunningTurn
        })
    };
    assert!(running(&t), "the turn should still be running");

    let asked = Instant::now();
    t.fake.send(t.fake.message(chat, 101, "/stop@ClawBot"));
    let stopped = eventually(Duration::from_secs(30), || async { !running(&t) }).await;
    let took = asked.elapsed();
    assert!(stopped, "the turn never ended");
    // Far below the 15 s the platform asked for: the actor never waited for delivery.
    assert!(
        took < Duration::from_secs(5),
        "/stop took {took:?} behind a held edit"
    );
    // The reply still ends as stopped once the platform lets the edit through.
    let shown = eventually(Duration::from_secs(90), || async {
        t.fake
            .messages(chat)
            .iter()
            .any(|m| m.text.ends_with("(stopped)"))
    })
    .await;
    let messages = t.fake.messages(chat);
    assert!(shown, "the stopped reply was never shown: {messages:#?}");
    assert!(
        messages.iter().all(|m| !m.text.contains(rest)),
        "the turn ran to its end: {messages:#?}"
    );
    let replies = messages.iter().filter(|m| m.reply_to == Some(asked_id));
    assert_eq!(
        replies.count(),
        1,
        "one message carries the reply: {messages:#?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drops_the_messages_a_box_queued_and_not_yet_shown() {
    let chat = -812;
    // Twenty separate messages at once, which the chat's pace spreads over a minute, then
    // an answer that is under way until the turn is stopped.
    let model = FakeModel::start().await;
    let notes = (0..20)
        .map(|n| {
            (
                "send_message",
                serde_json::json!({"text": format!("note {n}")}),
            )
        })
        .collect();
    model.push_reply(Reply::tool_calls(notes));
    let (held, _hold) = Reply::held("working on it", " and the end");
    model.push_reply(held);
    model.push_reply(Reply::text("the next answer"));
    let t = Tg::start(|config, telegram| {
        model.serve(config);
        telegram.allowed_chats = vec![chat];
    })
    .await;
    let shown = |t: &Tg, what: &str| {
        t.fake
            .messages(chat)
            .iter()
            .filter(|m| m.text.contains(what))
            .count()
    };
    t.fake.send(
        t.fake
            .message(chat, 101, "@ClawBot tell me in many messages"),
    );
    let started = eventually(REPLY_TIMEOUT, || async { shown(&t, "note") > 0 }).await;
    assert!(started, "no message of the box arrived");
    t.fake.send(t.fake.message(chat, 101, "/stop@ClawBot"));
    let stopped = eventually(REPLY_TIMEOUT, || async { shown(&t, "(stopped)") > 0 }).await;
    assert!(
        stopped,
        "the turn never showed as stopped: {:#?}",
        t.fake.messages(chat)
    );
    // The next answer goes out after whatever the stopped turn still had queued: once it
    // is shown, every message that was going to come has come.
    t.fake.send(t.fake.message(chat, 101, "@ClawBot and now?"));
    let next = eventually(Duration::from_secs(90), || async {
        shown(&t, "the next answer") > 0
    })
    .await;
    assert!(
        next,
        "the next answer never came: {:#?}",
        t.fake.messages(chat)
    );
    let notes = shown(&t, "note");
    assert!(
        notes < 10,
        "{notes} of the 20 queued messages reached the chat after /stop: {:#?}",
        t.fake.messages(chat)
    );
    t.stop().await;
}
