//! The Telegram adapter end to end: the real teloxide client against a fake Bot API server,
//! the real router, store and Docker engine, and the echo provider (which echoes every turn
//! message's text, unaddressed context included, joined by blank lines).

mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use clawpen::adapters::telegram::TelegramAdapter;
use clawpen::adapters::terminal::TerminalEvent;
use clawpen::adapters::{Adapter, InboundSink, Upload};
use serde_json::json;
use support::daemon::{cleanup, telegram_env, Daemon};
use support::logs::logged;
use support::model::{FakeModel, Reply};
use support::{eventually, REPLY_TIMEOUT};
use telegram_fake::bridge::{key, telegram_config, Tg};
use telegram_fake::{Failure, FakeTelegram, Sent, BOT_ID, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_chat_streams_a_draft_and_ends_with_the_agents_text() {
    // The model holds the rest of its answer until the first part was seen as a draft.
    let model = FakeModel::start().await;
    let (first, rest) = (
        "Hello there! This reply streams in pieces,",
        " so drafts show it grow.",
    );
    let (reply, hold) = Reply::held(first, rest);
    model.push_reply(reply);
    let t = Tg::start(|config, telegram| {
        model.serve(config);
        telegram.allowed_users = vec![100];
    })
    .await;
    t.fake.dm(100, "say hello");
    hold.arrived().await;
    let drafted = eventually(REPLY_TIMEOUT, || async {
        t.fake.drafts(100).iter().any(|d| d.text == first)
    })
    .await;
    assert!(
        drafted,
        "the first part was never a draft: {:?}",
        t.fake.drafts(100)
    );
    hold.release();
    let text = format!("{first}{rest}");
    let shown = t.reply(100, 1, &text).await;
    assert_eq!(shown[0].reply_to, None, "no quoting in a private chat");
    let actions = t.fake.actions(100);
    assert!(
        actions.iter().any(|(_, action)| action == "typing"),
        "{actions:?}"
    );
    let drafts = t.fake.drafts(100);
    assert!(!drafts.is_empty(), "the reply did not stream as a draft");
    for draft in &drafts {
        assert!(text.starts_with(&draft.text), "{draft:?}");
        assert_eq!(draft.draft_id, drafts[0].draft_id, "one draft per part");
    }
    let commands = t.fake.calls("setMyCommands");
    assert_eq!(commands.len(), 1);
    assert!(commands[0].to_string().contains("status"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_group_mentions_are_answered_and_chatter_is_context() {
    let chat = -200;
    let t = Tg::start(|_, telegram| telegram.allowed_chats = vec![chat]).await;
    // Chatter before the bot was ever addressed: stored and confirmed, not answered.
    let (chatter, _) = t.fake.send(t.fake.message(chat, 102, "good morning all"));
    t.handled(chatter).await;
    assert!(t.fake.messages(chat).is_empty(), "chatter was answered");
    assert!(t.boxes().await.is_empty(), "chatter started a box");
    // A mention is answered, with the chatter as context (the echo agent echoes it back).
    let (_, asked) = t
        .fake
        .send(t.fake.message(chat, 101, "@ClawBot first question"));
    let shown = t.reply(chat, 1, "good morning all\n\nfirst question").await;
    assert_eq!(
        shown[0].reply_to,
        Some(asked),
        "a group reply quotes the question"
    );

    // Chatter while the box lives, then the trigger word: the same again.
    let (chatter, _) = t
        .fake
        .send(t.fake.message(chat, 102, "lunch at noon, anyone?"));
    t.handled(chatter).await;
    t.fake
        .send(t.fake.message(chat, 101, "claw, second question"));
    t.reply(chat, 2, "lunch at noon, anyone?\n\nclaw, second question")
        .await;
    // A reply to the bot's message addresses it too.
    let mut reply = t.fake.message(chat, 103, "third");
    reply["reply_to_message"] = json!({
        "message_id": shown[0].id, "date": 1, "chat": telegram_fake::chat_json(chat),
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "Claw"}, "text": "first question",
    });
    t.fake.send(reply);
    t.reply(chat, 3, "third").await;
    assert!(t.fake.drafts(chat).is_empty(), "no drafts in groups");
    assert_eq!(t.boxes().await, [key(chat)]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forum_topics_are_conversations_with_boxes_of_their_own() {
    let chat = -300;
    let t = Tg::start(|_, telegram| telegram.allowed_chats = vec![chat]).await;
    for (thread, text) in [
        (11, "@ClawBot in topic eleven"),
        (22, "@ClawBot in topic twenty-two"),
    ] {
        let mut message = t.fake.message(chat, 101, text);
        message["message_thread_id"] = json!(thread);
        message["is_topic_message"] = json!(true);
        t.fake.send(message);
    }
    let expected = [
        (Some(11), "in topic eleven".to_string()),
        (Some(22), "in topic twenty-two".to_string()),
    ];
    let fake = &t.fake;
    let replies = || {
        let mut replies: Vec<(Option<i64>, String)> = fake
            .messages(chat)
            .into_iter()
            .map(|m| (m.thread, m.text))
            .collect();
        replies.sort();
        replies
    };
    let answered = eventually(REPLY_TIMEOUT, || async { replies() == expected }).await;
    assert!(answered, "each topic gets its own answer: {:?}", replies());
    let mut boxes = t.boxes().await;
    boxes.sort();
    assert_eq!(
        boxes,
        [key(chat).with_thread("11"), key(chat).with_thread("22")]
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reply_is_split_into_messages_that_keep_the_code_block_whole() {
    let t = Tg::start(|config, telegram| {
        config.echo_delay_ms = 1;
        telegram.allowed_users = vec![200];
    })
    .await;
    let sentence = "Every sentence says a little more 😀, and then a bit more again. ";
    let prose = |paragraphs: usize| -> String {
        (0..paragraphs)
            .map(|p| format!("Paragraph {p}. {}\n\n", sentence.repeat(4)))
            .collect()
    };
    let code: String = (0..40)
        .map(|i| format!("    let value_{i:02} = compute({i}) < limit && ok;\n"))
        .collect();
    let text = format!(
        "{}```rust\n{code}```\n\n{}**Done**: the end.",
        prose(18),
        prose(14)
    );
    assert!(text.chars().count() > 10_000, "{}", text.chars().count());
    t.fake.dm(200, &text);
    let fake = &t.fake;
    let finished = eventually(REPLY_TIMEOUT, || async {
        fake.messages(200)
            .last()
            .is_some_and(|m| m.text.ends_with("Done: the end."))
    })
    .await;
    let shown = fake.messages(200);
    assert!(
        finished,
        "the reply never finished: {} messages",
        shown.len()
    );
    assert!(shown.len() >= 3, "{} messages", shown.len());
    for message in &shown {
        assert!(
            message.text.encode_utf16().count() <= 4096,
            "too long: {}",
            message.text.len()
        );
        assert_eq!(message.parse_mode.as_deref(), Some("HTML"));
    }
    let with_code: Vec<&Sent> = shown.iter().filter(|m| m.raw.contains("<pre>")).collect();
    assert_eq!(with_code.len(), 1, "the code block was split");
    assert!(
        with_code[0].text.contains(code.trim_end()),
        "the code block lost text"
    );
    // Joined, the messages show exactly the agent's words, in order, once.
    let expected = text
        .replace("```rust\n", "")
        .replace("```", "")
        .replace("**", "");
    let joined: Vec<&str> = shown
        .iter()
        .flat_map(|m| m.text.split_whitespace())
        .collect();
    assert_eq!(joined, expected.split_whitespace().collect::<Vec<_>>());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_on_send_and_edit_delay_the_reply_but_lose_and_repeat_nothing() {
    let chat = -400;
    // The model holds the rest of its answer until the first part is shown, so the rest
    // can only arrive as edits.
    let model = FakeModel::start().await;
    let (first, rest) = (
        "This answer streams in pieces",
        " while Telegram says slow down",
    );
    let (reply, hold) = Reply::held(first, rest);
    model.push_reply(reply);
    let t = Tg::start(|config, telegram| {
        model.serve(config);
        telegram.allowed_chats = vec![chat];
    })
    .await;
    t.fake.fail("sendMessage", [Failure::RetryAfter(1)]);
    t.fake.fail(
        "editMessageText",
        [Failure::RetryAfter(1), Failure::RetryAfter(1)],
    );
    t.fake
        .send(t.fake.message(chat, 101, "@ClawBot answer slowly"));
    hold.arrived().await;
    let sent = eventually(REPLY_TIMEOUT, || async {
        !t.fake.messages(chat).is_empty()
    })
    .await;
    assert!(sent, "the first part was never shown");
    hold.release();
    let shown = t.reply(chat, 1, &format!("{first}{rest}")).await;
    assert!(shown[0].edits >= 1, "the reply was never edited");
    assert_eq!(t.fake.failed("sendMessage"), 1);
    assert!(t.fake.failed("editMessageText") >= 1, "no edit met the 429");
    // One message, so the 429 on send was not taken for a lost message and sent twice.
    assert_eq!(t.fake.messages(chat).len(), 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_resumes_within_seconds_after_the_bot_api_fails() {
    let fake = FakeTelegram::start().await;
    let outage = vec![Failure::Error(502, "Bad Gateway".into()); 4];
    fake.fail("getUpdates", outage);
    // Already waiting when the bridge starts, so it can only arrive through the outage.
    fake.dm(100, "are you there?");
    let began = std::time::Instant::now();
    let t = Tg::with_fake(fake, |_, telegram| telegram.allowed_users = vec![100]).await;
    t.reply(100, 1, "are you there?").await;
    let took = began.elapsed();
    assert_eq!(t.fake.failed("getUpdates"), 4, "the outage was not served");
    // teloxide's own 10 s pause after each 5xx plus a minute-long backoff took about 55 s.
    assert!(
        took < std::time::Duration::from_secs(15),
        "the reply came {took:?} after the message"
    );
    // The outage is one warning and one line saying it ended, not a line per failure.
    let log = logged();
    assert_eq!(log.matches("getUpdates failing").count(), 1, "{log}");
    assert!(log.contains("polling recovered after 4 failures"), "{log}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_once_and_never_get_a_box() {
    let t = Tg::start(|_, telegram| telegram.allowed_users = vec![1]).await;
    assert_eq!(
        t.adapter.pairing_code(),
        None,
        "an allowlist closes pairing"
    );
    t.fake.dm(666, "hi");
    let (last, _) = t.fake.dm(666, "hello? anyone?");
    t.handled(last).await;
    let shown = t.fake.messages(666);
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(
        shown[0].text.contains("only talks to people"),
        "{}",
        shown[0].text
    );
    assert!(t.boxes().await.is_empty(), "a stranger got a box");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sender_of_the_pairing_code_becomes_the_owner() {
    let t = Tg::start(|_, _| {}).await;
    let adapter = &t.adapter;
    let open = eventually(REPLY_TIMEOUT, || async { adapter.pairing_code().is_some() }).await;
    assert!(open, "no pairing code");
    let code = adapter.pairing_code().unwrap_or_default();

    let (before, _) = t.fake.dm(701, "let me in");
    t.handled(before).await;
    assert!(t.fake.messages(701)[0].text.contains("not set up yet"));

    t.fake.dm(702, &code);
    let fake = &t.fake;
    let paired = eventually(REPLY_TIMEOUT, || async { fake.messages(702).len() == 1 }).await;
    assert!(paired, "no answer to the code");
    assert!(
        fake.messages(702)[0].text.contains("owner"),
        "{:?}",
        fake.messages(702)
    );
    assert_eq!(adapter.pairing_code(), None, "the code is single-use");
    let owner = t
        .bridge
        .router
        .load_value("telegram.owner")
        .await
        .ok()
        .flatten();
    assert_eq!(owner.as_deref(), Some("702"), "the owner is persisted");

    t.fake.dm(702, "hi, it is me");
    t.reply(702, 2, "hi, it is me").await;
    let (late, _) = t.fake.dm(703, &code);
    t.handled(late).await;
    let shown = fake.messages(703);
    assert_eq!(shown.len(), 1);
    assert!(shown[0].text.contains("only talks to people"), "{shown:?}");
    assert_eq!(t.boxes().await, [key(702)], "only the owner got a box");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_reach_the_inbox_and_uploads_reach_the_chat() {
    let t = Tg::start(|_, telegram| telegram.allowed_users = vec![300]).await;
    let photo = |id: &str, side: u32, size: u32| {
        json!({"file_id": id, "file_unique_id": format!("u{id}"), "width": side, "height": side,
            "file_size": size})
    };
    t.fake
        .add_file("big", "photos/file_7.jpg", b"JPEG BYTES OF THE BIG ONE");
    // Methods the shared driver does not retry honour a 429 too.
    t.fake.fail("getFile", [Failure::RetryAfter(1)]);
    t.fake.fail("sendDocument", [Failure::RetryAfter(1)]);
    let mut message = t.fake.message(300, 300, "");
    if let Some(object) = message.as_object_mut() {
        object.remove("text");
        object.insert("caption".into(), json!("look at this"));
        object.insert(
            "photo".into(),
            json!([photo("small", 90, 9), photo("big", 1280, 25)]),
        );
    }
    t.fake.send(message);
    t.reply(300, 1, "look at this").await;
    let conversation = key(300);
    let (code, out) = t
        .exec(
            &conversation,
            &["sh", "-c", "cat /workspace/inbox/*-photo-ubig.jpg"],
        )
        .await;
    let listing = t.exec(&conversation, &["ls", "-laR", "/workspace"]).await.1;
    let notes: Vec<String> = logged()
        .lines()
        .filter(|l| l.contains("attachment"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        (code, out.as_str()),
        (0, "JPEG BYTES OF THE BIG ONE"),
        "{listing}\n{notes:?}\n{:?}",
        t.fake.calls("getFile")
    );

    // A file over the size cap is refused before anything is downloaded.
    let mut message = t.fake.message(300, 300, "");
    if let Some(object) = message.as_object_mut() {
        object.remove("text");
        object.insert("caption".into(), json!("too big"));
        object.insert(
            "document".into(),
            json!({"file_id": "huge", "file_unique_id": "uhuge", "file_name": "huge.bin",
                "file_size": 500_000_000u64}),
        );
    }
    t.fake.send(message);
    t.reply(300, 2, "too big").await;
    let asked: Vec<String> = t
        .fake
        .calls("getFile")
        .iter()
        .map(|p| p["file_id"].to_string())
        .collect();
    assert_eq!(asked, ["\"big\"", "\"big\""], "the huge file was fetched");

    // The echo agent sends no files, so the upload is driven through the adapter directly.
    let file = Upload {
        name: "report.txt".into(),
        data: b"the agent's report".to_vec(),
    };
    let sent = t.adapter.upload(&conversation, &file).await;
    assert!(sent.is_ok(), "{sent:?}");
    let documents = t.fake.documents(300);
    assert_eq!(t.fake.failed("sendDocument"), 1);
    assert_eq!(documents.len(), 1);
    assert_eq!(
        (documents[0].name.as_str(), documents[0].data.as_slice()),
        ("report.txt", file.data.as_slice())
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_updates_are_skipped_with_a_log_line() {
    let t = Tg::start(|_, telegram| telegram.allowed_users = vec![400]).await;
    let unknown = t
        .fake
        .push_raw_update(|id| json!({"update_id": id, "some_future_update": {"x": 1}}));
    let malformed = t.fake.push_raw_update(
        |id| json!({"update_id": id, "message": {"message_id": "not a number", "chat": 5}}),
    );
    t.fake.dm(400, "still here");
    t.reply(400, 1, "still here").await;
    assert!(
        t.fake.confirmed(malformed),
        "the bad updates block the offset"
    );
    let logs = logged();
    for id in [unknown, malformed] {
        let line = logs
            .lines()
            .find(|l| l.contains(&format!("update_id=Some({id})")) && l.contains("skipping"));
        assert!(line.is_some(), "no log line for update {id}");
    }
    t.stop().await;
}

/// `clawpen run` on `data`, talking to `fake` and letting in `chat`; its log is `daemon-<run>.log`
/// in `data`.
fn daemon(data: &std::path::Path, run: u32, fake: &FakeTelegram, chat: i64) -> Daemon {
    let mut env = telegram_env(fake.url(), TOKEN, &[chat]);
    env.push(("CLAWPEN_ECHO_DELAY_MS", "250".into()));
    env.push(("CLAWPEN_LOG", "clawpen=debug,clawpen_adapters=debug".into()));
    Daemon::start(data, run, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_reply_then_restart_shows_one_complete_reply() {
    let chat = -500;
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().to_path_buf();
    let text: String = (1..=45).map(|n| format!("word{n} ")).collect::<String>();
    let text = text.trim_end();
    // Removes the daemons' boxes however the test ends.
    let _cleanup = cleanup(&data);

    let mut first = daemon(&data, 0, &fake, chat);
    fake.send(fake.message(chat, 101, &format!("@ClawBot {text}")));
    // Killed once the reply was edited: an edit comes only after the sent message's id is
    // stored, so the kill is past the first send's one-round-trip window (Telegram has no
    // idempotency key; `tests/crash.rs` counts that window) and mid-reply.
    let started = eventually(REPLY_TIMEOUT, || async {
        fake.messages(chat).first().is_some_and(|m| m.edits >= 1)
    })
    .await;
    assert!(started, "the reply never started");
    first.kill(); // SIGKILL
    let before = fake.messages(chat);
    assert_eq!(before.len(), 1);
    assert!(
        before[0].text.len() < text.len(),
        "killed too late: {before:?}"
    );

    let mut second = daemon(&data, 1, &fake, chat);
    let done = eventually(REPLY_TIMEOUT, || async {
        fake.messages(chat).iter().any(|m| m.text == text)
    })
    .await;
    second.kill();
    let after = fake.messages(chat);
    assert!(done, "no complete reply after the restart: {after:#?}");
    assert_eq!(after.len(), 1, "the reply was repeated: {after:#?}");
    assert_eq!(after[0].id, before[0].id, "the same message was finished");
}

/// Posts a JSON body to the webhook server; returns the HTTP status.
async fn post(addr: &str, path: &str, secret: Option<&str>, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let secret = secret
        .map(|s| format!("X-Telegram-Bot-Api-Secret-Token: {s}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{secret}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_takes_updates_only_with_the_secret_token() {
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        probe
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    };
    let listen = addr.clone();
    let t = Tg::start(move |_, telegram| {
        telegram.allowed_users = vec![600];
        telegram.webhook_url = Some("https://bot.example.org/telegram/hook".into());
        telegram.webhook_secret = Some("s3cret-token".into());
        telegram.webhook_listen = Some(listen);
    })
    .await;
    let fake = &t.fake;
    let registered = eventually(REPLY_TIMEOUT, || async {
        !fake.calls("setWebhook").is_empty()
    })
    .await;
    assert!(registered, "the webhook was never set");
    let set = &fake.calls("setWebhook")[0];
    assert_eq!(set["url"], "https://bot.example.org/telegram/hook");
    assert_eq!(set["secret_token"], "s3cret-token");

    let update = |id: i64, text: &str| {
        json!({"update_id": id, "message": fake.message(600, 600, text)}).to_string()
    };
    let path = "/telegram/hook";
    assert_eq!(post(&addr, path, None, &update(1, "no secret")).await, 401);
    assert_eq!(
        post(&addr, path, Some("wrong"), &update(2, "bad secret")).await,
        401
    );
    assert_eq!(
        post(&addr, "/elsewhere", Some("s3cret-token"), &update(3, "x")).await,
        404
    );
    assert_eq!(
        post(
            &addr,
            path,
            Some("s3cret-token"),
            &update(4, "through the hook")
        )
        .await,
        200
    );
    t.reply(600, 1, "through the hook").await;
    assert!(
        fake.calls("getUpdates").is_empty(),
        "a webhook bot does not poll"
    );
    t.stop().await;
}

#[tokio::test]
async fn refused_formatting_is_sent_as_plain_text_and_unchanged_edits_succeed() {
    let fake = FakeTelegram::start().await;
    let adapter =
        TelegramAdapter::new(telegram_config(&fake)).unwrap_or_else(|e| panic!("adapter: {e}"));
    let chat = key(900);
    let refused = "Bad Request: can't parse entities: Can't find end of the entity";
    fake.fail("sendMessage", [Failure::Error(400, refused.into())]);
    let sent = adapter.send(&chat, "**bold** & <b>raw</b>", None).await;
    let message = sent.unwrap_or_else(|e| panic!("send: {e}"));
    let shown = fake.messages(900);
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert_eq!(shown[0].parse_mode, None, "resent without parse mode");
    assert_eq!(shown[0].text, "**bold** & <b>raw</b>", "nothing lost");

    for _ in 0..2 {
        let edited = adapter.edit(&chat, &message, "*now* formatted").await;
        assert_eq!(edited, Ok(()), "an unchanged edit is not an error");
    }
    let shown = fake.messages(900);
    assert_eq!(
        (shown[0].raw.as_str(), shown[0].edits),
        ("<i>now</i> formatted", 1)
    );
    let not_modified = fake.calls("editMessageText").len();
    assert_eq!(
        not_modified, 2,
        "the second edit reached Telegram and was refused"
    );
}

#[tokio::test]
async fn a_server_without_drafts_is_noticed_once() {
    let fake = FakeTelegram::start().await;
    let adapter =
        TelegramAdapter::new(telegram_config(&fake)).unwrap_or_else(|e| panic!("adapter: {e}"));
    let chat = key(901);
    assert!(adapter.capabilities_for(&chat).has_drafts);
    assert!(
        !adapter.capabilities_for(&key(-901)).has_drafts,
        "groups have none"
    );
    fake.fail(
        "sendMessageDraft",
        [Failure::Error(404, "Not Found".into())],
    );
    assert!(adapter.draft(&chat, 1, "hi").await.is_err());
    assert!(
        !adapter.capabilities_for(&chat).has_drafts,
        "later replies stream by edits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_answered_alike_in_telegram_and_in_the_terminal() {
    let t = Tg::start(|_, telegram| telegram.allowed_users = vec![100]).await;
    let terminal = clawpen::adapters::ConversationKey::new("terminal", "local");
    let mut watcher = t.bridge.terminal.watch(&terminal);
    for (count, command) in ["/help", "/status", "/stop"].into_iter().enumerate() {
        t.fake.dm(100, command);
        let fake = &t.fake;
        let answered = eventually(REPLY_TIMEOUT, || async {
            fake.messages(100).len() == count + 1
        })
        .await;
        assert!(answered, "Telegram got no answer to {command}");
        let in_telegram = fake.messages(100)[count].text.clone();

        let said = t
            .bridge
            .terminal
            .say(&t.bridge.router, &terminal, command)
            .await;
        assert!(said.is_ok(), "{said:?}");
        let in_terminal = match tokio::time::timeout(REPLY_TIMEOUT, watcher.recv()).await {
            Ok(Some(TerminalEvent::Notice { text })) => text,
            other => panic!("the terminal got no answer to {command}: {other:?}"),
        };
        assert_eq!(in_telegram, in_terminal, "{command}");
    }
    let shown: Vec<String> = t.fake.messages(100).into_iter().map(|m| m.text).collect();
    assert!(
        shown[0].contains("/status — what this conversation's box is doing"),
        "{shown:?}"
    );
    let cap = t.bridge.router.max_boxes();
    assert_eq!(
        shown[1],
        format!("This conversation: no box running; it starts with your next message. 0 of {cap} boxes live.")
    );
    assert_eq!(shown[2], "⏹ Stop requested.");
    assert!(t.boxes().await.is_empty(), "a command started a box");
    t.stop().await;
}
