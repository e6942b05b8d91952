//! The Telegram adapter against the real Bot API's stricter and odder behaviours, each one
//! taught to the suite's fake Telegram: updates teloxide cannot read, entity types newer
//! than it, files without a size, messages deleted under a streaming reply, and text that
//! renders as nothing. The real teloxide client, router, store and Docker engine, and the
//! echo provider (which echoes each turn message's text).

mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use clawpen::adapters::InboundSink;
use serde_json::json;
use support::logs::logged;
use support::{eventually, REPLY_TIMEOUT};
use telegram_fake::bridge::{key, Tg};
use telegram_fake::{chat_json, Failure};

/// Whether a line at warn level names the update and says `what` (the tests of this
/// binary share one log, and each fake numbers its updates from 1).
fn warned(update_id: i64, what: &str) -> bool {
    logged().lines().any(|l| {
        l.contains(" WARN ")
            && l.contains(&format!("update_id=Some({update_id})"))
            && l.contains(what)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_teloxide_cannot_read_is_skipped_and_the_bot_goes_on() {
    let t = Tg::start(|_, telegram| telegram.allowed_users = vec![410]).await;
    // A reaction with neither `user` nor `actor_chat`: teloxide 0.17's deserializer panics
    // on it, which the release profile turns into an abort, again after every restart.
    let reaction = t.fake.push_raw_update(|id| {
        json!({"update_id": id, "message_reaction": {"chat": chat_json(-410), "message_id": 5,
            "date": 1, "old_reaction": [], "new_reaction": [{"type": "emoji", "emoji": "👍"}]}})
    });
    // A message of a shape no one documented: skipped with a warning, never a crash.
    let odd = t.fake.push_raw_update(|id| {
        json!({"update_id": id, "message": {"message_id": [1], "chat": {"id": 410}, "text": "x"}})
    });
    t.fake.dm(410, "still here");
    t.reply(410, 1, "still here").await;
    assert!(t.fake.confirmed(odd), "the offset did not move past them");
    let offset = t.bridge.router.load_value("telegram.offset").await.ok();
    let offset: i64 = offset.flatten().and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(offset > reaction && offset > odd, "saved offset {offset}");
    assert!(
        warned(odd, "malformed"),
        "the odd message was skipped silently"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_a_new_entity_type_is_answered_and_an_unusable_one_is_reported() {
    let t = Tg::start(|_, telegram| telegram.allowed_users = vec![420]).await;
    // Bot API 9.5's `date_time` entity, which teloxide 0.17 does not know.
    let mut message = t.fake.message(420, 420, "see you at 10:00 then");
    message["entities"] = json!([{"type": "date_time", "offset": 11, "length": 5,
        "unix_time": 1_700_000_000, "date_time_format": "t"}]);
    t.fake.send(message);
    t.reply(420, 1, "see you at 10:00 then").await;

    // A sticker: nothing the bridge can read, so no answer, but the operator hears of it.
    let mut sticker = t.fake.message(420, 420, "");
    if let Some(object) = sticker.as_object_mut() {
        object.remove("text");
        object.insert(
            "sticker".into(),
            json!({"file_id": "s", "file_unique_id": "us", "type": "regular", "width": 512,
                "height": 512, "is_animated": false, "is_video": false}),
        );
    }
    let (unusable, _) = t.fake.send(sticker);
    t.handled(unusable).await;
    let logged = eventually(REPLY_TIMEOUT, || async { warned(unusable, "sticker") }).await;
    assert!(
        logged,
        "the sticker was skipped without a warning naming it"
    );
    assert_eq!(t.fake.messages(420).len(), 1, "the sticker got an answer");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_without_a_size_reaches_the_inbox() {
    let t = Tg::start(|_, telegram| telegram.allowed_users = vec![430]).await;
    // `file_size` is optional in Document and in File; teloxide fills a missing one with
    // u32::MAX, which reads as a 4 GiB file.
    t.fake
        .add_unsized_file("nosize", "documents/file_3.txt", b"NOTES WITHOUT A SIZE");
    let mut message = t.fake.message(430, 430, "");
    if let Some(object) = message.as_object_mut() {
        object.remove("text");
        object.insert("caption".into(), json!("my notes"));
        object.insert(
            "document".into(),
            json!({"file_id": "nosize", "file_unique_id": "unosize", "file_name": "notes.txt",
                "mime_type": "text/plain"}),
        );
    }
    t.fake.send(message);
    t.reply(430, 1, "my notes").await;
    let (code, out) = t
        .exec(&key(430), &["sh", "-c", "cat /workspace/inbox/*-notes.txt"])
        .await;
    assert_eq!((code, out.as_str()), (0, "NOTES WITHOUT A SIZE"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_whose_message_was_deleted_goes_on_in_a_new_one() {
    let chat = -440;
    let t = Tg::start(|config, telegram| {
        config.echo_delay_ms = 150;
        telegram.allowed_chats = vec![chat];
    })
    .await;
    let words: Vec<String> = (1..=60).map(|n| format!("w{n}")).collect();
    let text = words.join(" ");
    t.fake
        .send(t.fake.message(chat, 101, &format!("@ClawBot {text}")));
    let fake = &t.fake;
    let started = eventually(REPLY_TIMEOUT, || async { !fake.messages(chat).is_empty() }).await;
    assert!(started, "the reply never started");
    let first = fake.messages(chat)[0].clone();
    assert_ne!(
        first.text, text,
        "the reply ended before the test could delete it"
    );
    fake.delete_message(chat, first.id);
    let done = eventually(REPLY_TIMEOUT, || async {
        fake.messages(chat).iter().any(|m| m.text == text)
    })
    .await;
    let shown = fake.messages(chat);
    assert!(done, "the rest of the reply never arrived: {shown:#?}");
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert_ne!(shown[0].id, first.id, "continued in a new message");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_sends_an_empty_message() {
    let chat = -450;
    let t = Tg::start(|config, telegram| {
        config.echo_delay_ms = 100;
        telegram.allowed_chats = vec![chat];
    })
    .await;
    // The echo streams this in deltas of nine characters: the first two are the fence line
    // alone, which renders as an empty block.
    t.fake.send(
        t.fake
            .message(chat, 101, "@ClawBot ```typescriptreact\nconst x = 1;\n```"),
    );
    t.reply(chat, 1, "const x = 1;").await;
    // A reply that is one empty code block still shows something.
    t.fake.send(t.fake.message(chat, 101, "@ClawBot ```\n```"));
    t.reply(chat, 2, "(empty)").await;
    // Markdown that formats to nothing (an empty quote) goes as the plain text it is.
    t.fake.send(t.fake.message(chat, 101, "@ClawBot >"));
    t.reply(chat, 3, ">").await;
    let empty: Vec<_> = t
        .fake
        .refused()
        .into_iter()
        .filter(|(_, why)| why.contains("text is empty"))
        .collect();
    assert!(empty.is_empty(), "empty messages were sent: {empty:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chats_refused_draft_leaves_drafts_on_for_the_others() {
    let t = Tg::start(|config, telegram| {
        config.echo_delay_ms = 60;
        telegram.allowed_users = vec![460, 461];
    })
    .await;
    let refusal = "Forbidden: bot was blocked by the user";
    t.fake
        .fail("sendMessageDraft", [Failure::Error(403, refusal.into())]);
    let text = "A reply long enough to stream as a draft in a few steps.";
    t.fake.dm(460, text);
    t.reply(460, 1, text).await;
    assert_eq!(t.fake.failed("sendMessageDraft"), 1);
    t.fake.dm(461, text);
    t.reply(461, 1, text).await;
    assert!(
        !t.fake.drafts(461).is_empty(),
        "one chat's refusal turned drafts off for everyone"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_past_the_cap_ends_the_reply_and_the_chat_is_told_later() {
    let chat = -470;
    let t = Tg::start(|config, telegram| {
        config.echo_delay_ms = 50;
        config.max_rate_wait_secs = 1;
        telegram.allowed_chats = vec![chat];
    })
    .await;
    // Telegram has answered with waits of hours; here 3 s against a cap of 1 s.
    t.fake.fail("editMessageText", [Failure::RetryAfter(3)]);
    let words: Vec<String> = (1..=40).map(|n| format!("w{n}")).collect();
    let text = words.join(" ");
    let (_, asked) = t
        .fake
        .send(t.fake.message(chat, 101, &format!("@ClawBot {text}")));
    let fake = &t.fake;
    let told = eventually(REPLY_TIMEOUT, || async {
        fake.messages(chat)
            .iter()
            .any(|m| m.text.contains("was not delivered"))
    })
    .await;
    let shown = fake.messages(chat);
    assert!(told, "the chat was never told: {shown:#?}");
    assert_eq!(shown.len(), 2, "{shown:#?}");
    assert_ne!(shown[0].text, text, "the reply was not cut short");
    assert!(
        shown[1].text.contains("pause for 3 seconds"),
        "{}",
        shown[1].text
    );
    assert_eq!(shown[1].reply_to, Some(asked));
    assert_eq!(fake.failed("editMessageText"), 1);
    // The conversation goes on.
    t.fake.send(t.fake.message(chat, 101, "@ClawBot again"));
    t.reply(chat, 3, "again").await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_admin_is_admitted_by_the_groups_id_in_allowed_users() {
    let chat = -480;
    let t = Tg::start(|_, telegram| telegram.allowed_users = vec![chat]).await;
    // An anonymous admin writes as the group: `from` is Telegram's placeholder bot.
    let mut message = t.fake.message(chat, 0, "@ClawBot what is new?");
    message["from"] = json!({"id": 1_087_968_824i64, "is_bot": true, "first_name": "Group",
        "username": "GroupAnonymousBot"});
    message["sender_chat"] = json!({"id": chat, "type": "supergroup", "title": "Group"});
    t.fake.send(message);
    t.reply(chat, 1, "what is new?").await;
    assert_eq!(t.boxes().await, [key(chat)]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_set_elsewhere_is_named_in_the_log_and_in_status() {
    let t = Tg::start(|_, telegram| telegram.allowed_users = vec![490]).await;
    t.fake.dm(490, "first");
    t.reply(490, 1, "first").await;
    // Another deployment of the same bot registers a webhook: polls now get 409s.
    t.fake
        .set_webhook_elsewhere(Some("https://other.example/hook"));
    let router = &t.bridge.router;
    let named = eventually(REPLY_TIMEOUT, || async {
        (router.adapter_troubles().iter()).any(|l| l.starts_with("telegram: a webhook is set"))
    })
    .await;
    assert!(named, "status shows {:?}", router.adapter_troubles());
    let warned = logged()
        .lines()
        .any(|l| l.contains(" WARN ") && l.contains("cannot receive updates: a webhook is set"));
    assert!(warned, "no actionable warning in the log");
    // Once the other deployment removes it, polling and replies resume by themselves.
    t.fake.dm(490, "second");
    t.fake.set_webhook_elsewhere(None);
    t.reply(490, 2, "second").await;
    assert!(router.adapter_troubles().is_empty());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formatting_telegram_would_drop_is_not_sent() {
    let t = Tg::start(|config, telegram| {
        config.echo_delay_ms = 1;
        telegram.allowed_users = vec![495];
    })
    .await;
    // 120 bold words (Telegram shows only the first 100 entities of a message) and code
    // inside a link (which Telegram does not show as code).
    let words: String = (1..=120).map(|n| format!("**b{n}** ")).collect();
    let text = format!("{words}see [`cargo test`](https://doc.rust-lang.org)");
    t.fake.dm(495, &text);
    let shown_text = text.replace("**", "").replace('`', "");
    let shown_text = shown_text.replace("[cargo test](https://doc.rust-lang.org)", "cargo test");
    let shown = t.reply(495, 1, &shown_text).await;
    assert_eq!(shown[0].ignored_entities, 0, "{}", shown[0].raw);
    assert_eq!(shown[0].raw.matches("<b>").count(), 100);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_upgraded_to_a_supergroup_keeps_its_reply_its_allowlist_entry_and_its_box() {
    let (old, new) = (-620, -100_620);
    let t = Tg::start(|config, telegram| {
        config.echo_delay_ms = 150;
        telegram.allowed_chats = vec![old];
    })
    .await;
    let words: Vec<String> = (1..=50).map(|n| format!("w{n}")).collect();
    let text = words.join(" ");
    t.fake
        .send(t.fake.message(old, 101, &format!("@ClawBot {text}")));
    let fake = &t.fake;
    let started = eventually(REPLY_TIMEOUT, || async { !fake.messages(old).is_empty() }).await;
    assert!(started, "the reply never started");
    fake.migrate(old, new);
    // The reply in progress follows the group to its new id.
    let followed = eventually(REPLY_TIMEOUT, || async {
        fake.messages(new).iter().any(|m| m.text == text)
    })
    .await;
    assert!(followed, "the reply was dropped: {:#?}", fake.messages(new));
    // Members of the supergroup are admitted by the old id's allowlist entry, and the
    // conversation goes on where it was: same box, workspace and history.
    t.fake.send(t.fake.message(new, 101, "@ClawBot again"));
    t.reply(new, 2, "again").await;
    assert_eq!(
        t.boxes().await,
        vec![key(old)],
        "the supergroup became a new conversation"
    );
    let named = logged()
        .lines()
        .any(|l| l.contains(" WARN ") && l.contains("new=-100620") && l.contains("supergroup"));
    assert!(named, "the operator was not told the new id");
    t.stop().await;
}
