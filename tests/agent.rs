//! The agent in the box against a scripted fake model provider: tools run in the box, the
//! key stays in the bridge, limits and provider failures reach the user as clear words.

mod support;

use std::time::Duration;

use clawpen::adapters::terminal::TerminalEvent;
use clawpen::config::Secret;
use clawpen::router::{Clock, ManualClock};
use serde_json::{json, Value};
use support::model::{FakeModel, Page, PageServer, Reply};
use support::{eventually, TestBridge};

const KEY: &str = "sk-ant-bridge-only-4d1c7e";

/// A bridge whose boxes use the Anthropic wire format against `model`.
async fn anthropic_bridge(
    model: &FakeModel,
    tweak: impl FnOnce(&mut clawpen::config::Config),
) -> TestBridge {
    anthropic_bridge_on(Clock::default(), model, tweak).await
}

/// [`anthropic_bridge`], its conversations' timers on `clock`.
async fn anthropic_bridge_on(
    clock: Clock,
    model: &FakeModel,
    tweak: impl FnOnce(&mut clawpen::config::Config),
) -> TestBridge {
    let url = model.url();
    TestBridge::start_on(clock, move |c| {
        c.provider = "anthropic".into();
        c.model = Some("claude-test".into());
        c.anthropic_base_url = url;
        c.anthropic_api_key = Some(Secret::new(KEY));
        tweak(c);
    })
    .await
}

/// Every text the model was sent in one request (messages, tool results), flattened.
fn request_text(body: &Value) -> String {
    fn walk(value: &Value, out: &mut String) {
        match value {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    walk(&body["messages"], &mut out);
    out
}

/// The text of the last tool result in an Anthropic request.
fn last_tool_result(body: &Value) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let blocks: Vec<Value> = messages
        .iter()
        .filter_map(|m| m["content"].as_array().cloned())
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .collect();
    match blocks.last().map(|b| b["content"].clone()) {
        Some(Value::String(text)) => text,
        Some(other) => request_text(&json!({ "messages": [other] })),
        None => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_step_turn_writes_a_file_reads_it_back_and_answers() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::tool_call(
        "write_file",
        json!({"path": "notes/plan.txt", "content": "ship it on friday"}),
    ));
    model.push_reply(Reply::tool_call(
        "read_file",
        json!({"path": "notes/plan.txt"}),
    ));
    model.push_reply(Reply::text("The plan says: ship it on friday."));
    let t = anthropic_bridge(&model, |_| {}).await;

    let reply = t.ask("planner", "write down the plan").await;
    assert_eq!(reply, "The plan says: ship it on friday.");
    // The file is in the box's volume.
    let (code, out) = t
        .exec("planner", &["cat", "/workspace/notes/plan.txt"])
        .await;
    assert_eq!((code, out.as_str()), (0, "ship it on friday"));
    // The model saw the file's contents come back from the read tool.
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    assert!(request_text(&requests[2].body).contains("ship it on friday"));
    assert!(request_text(&requests[0].body).contains("write down the plan"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_reaches_the_provider_and_never_the_box() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::text("hello"));
    let t = anthropic_bridge(&model, |_| {}).await;
    assert_eq!(t.ask("keys", "hi").await, "hello");

    let request = &model.requests()[0];
    assert_eq!(request.header("x-api-key"), Some(KEY));
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.body["model"], "claude-test");

    let (_, environ) = t
        .exec(
            "keys",
            &["sh", "-c", "cat /proc/*/environ | tr '\\0' '\\n'; env"],
        )
        .await;
    assert!(!environ.contains(KEY), "key in a box environment");
    let (_, cmdlines) = t
        .exec("keys", &["sh", "-c", "cat /proc/*/cmdline | tr '\\0' ' '"])
        .await;
    assert!(!cmdlines.contains(KEY), "key in a process argument");
    let (code, found) = t
        .exec(
            "keys",
            &[
                "sh",
                "-c",
                &format!("grep -rl '{KEY}' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null"),
            ],
        )
        .await;
    assert_ne!(code, 0, "key found in box files: {found}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_tunnel_refuses_other_destinations() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::text("ready"));
    let t = anthropic_bridge(&model, |_| {}).await;
    assert_eq!(t.ask("tunnel", "hi").await, "ready");
    let before = model.requests().len();
    // A process in the box tries to reach other endpoints through the local tunnel.
    for path in ["/v1/models", "/admin", "/v1/messages/../../etc"] {
        let (code, out) = t
            .exec(
                "tunnel",
                &[
                    "sh",
                    "-c",
                    &format!("wget -q -O- --post-data='{{}}' http://127.0.0.1:8089{path} 2>&1"),
                ],
            )
            .await;
        assert_ne!(code, 0, "{path} answered: {out}");
    }
    // And it cannot reach anything directly: no network.
    let (code, _) = t
        .exec(
            "tunnel",
            &[
                "sh",
                "-c",
                &format!("wget -q -T 3 -O- {}/v1/messages", model.url()),
            ],
        )
        .await;
    assert_ne!(code, 0);
    assert_eq!(
        model.requests().len(),
        before,
        "a refused request reached the provider"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_fetch_refuses_private_addresses_and_fetches_allowlisted_pages() {
    let pages = PageServer::start(vec![
        (
            "/page",
            Page::Html("<html><body><h1>Menu</h1><p>Soup &amp; bread</p></body></html>".into()),
        ),
        (
            "/sneaky",
            Page::Redirect("http://169.254.169.254/latest/meta-data".into()),
        ),
    ])
    .await;
    let model = FakeModel::start().await;
    let targets = [
        "http://127.0.0.1:1/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://169.254.169.254/latest/meta-data".to_string(),
        pages.url("/sneaky"),
        pages.url("/page"),
    ];
    for url in &targets {
        model.push_reply(Reply::tool_call("web_fetch", json!({ "url": url })));
    }
    model.push_reply(Reply::text("done fetching"));
    let allow = vec![pages.host_port()];
    let t = anthropic_bridge(&model, move |c| c.web_fetch_allow = allow).await;
    assert_eq!(t.ask("fetcher", "look these up").await, "done fetching");

    let requests = model.requests();
    assert_eq!(requests.len(), targets.len() + 1);
    // Each tool result is in the request after the call; the first four are refusals.
    for (i, url) in targets.iter().enumerate() {
        let result = last_tool_result(&requests[i + 1].body);
        if i < 4 {
            let lower = result.to_lowercase();
            assert!(
                lower.contains("refused") || lower.contains("not allowed"),
                "{url}: {result}"
            );
        } else {
            assert!(result.contains("Soup & bread"), "{url}: {result}");
        }
    }
    // Only the allowlisted page server was contacted: /sneaky and /page.
    assert_eq!(
        pages.hits(),
        vec!["/sneaky".to_string(), "/page".to_string()]
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_sent_mid_turn_is_in_the_next_model_request() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::tool_call(
        "shell",
        json!({"command": "sleep 3; echo slept"}),
    ));
    model.push_reply(Reply::text("noted both"));
    let t = anthropic_bridge(&model, |_| {}).await;
    let mut events = t.watch("busy");
    t.say("busy", "start the long job").await;
    let started = eventually(Duration::from_secs(30), || async {
        !model.requests().is_empty()
    })
    .await;
    assert!(started);
    t.say("busy", "also water the plants").await;
    assert_eq!(support::next_reply(&mut events).await, "noted both");
    let requests = model.requests();
    assert!(
        request_text(&requests[1].body).contains("also water the plants"),
        "{}",
        requests[1].body
    );
    assert!(request_text(&requests[1].body).contains("slept"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_and_limits_reach_the_user_clearly() {
    let model = FakeModel::start().await;
    let t = anthropic_bridge(&model, |c| c.requests_per_minute = 3).await;

    model.push_reply(Reply::unauthorized());
    let reply = t.ask("errors", "one").await;
    assert!(reply.contains("401"), "{reply}");

    model.push_reply(Reply::rate_limited(1));
    model.push_reply(Reply::text("after waiting"));
    assert_eq!(t.ask("errors", "two").await, "after waiting");

    // Three requests this minute already: the limit answers, the provider is not asked.
    let before = model.requests().len();
    let reply = t.ask("errors", "three").await;
    assert!(reply.contains("limit"), "{reply}");
    assert_eq!(model.requests().len(), before);

    // Tokens: a reply that used more than the day's budget stops the next request.
    let model2 = FakeModel::start().await;
    model2.push_reply(Reply::text("that was expensive").with_usage(400, 200));
    let t2 = anthropic_bridge(&model2, |c| c.tokens_per_day = 500).await;
    assert_eq!(t2.ask("tokens", "spend").await, "that was expensive");
    let reply = t2.ask("tokens", "more").await;
    assert!(
        reply.contains("limit") && reply.contains("token"),
        "{reply}"
    );
    assert_eq!(model2.requests().len(), 1);
    t2.stop().await;

    // A stream that breaks, on a conversation with its own budget.
    model.push_reply(Reply::broken_stream());
    model.push_reply(Reply::broken_stream());
    let reply = t.ask("broken", "four").await;
    assert!(reply.contains("⚠️"), "{reply}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_broke_off_is_replaced_in_place_by_its_retry() {
    let model = FakeModel::start().await;
    let t = anthropic_bridge(&model, |_| {}).await;
    model.push_reply(Reply::broken_stream());
    model.push_reply(Reply::text("The whole answer, from its start."));
    let mut events = t.watch("cut");
    t.say("cut", "a question").await;
    let reply = support::next_reply_events(&mut events).await;
    // The cut text is not followed by the retry: the retry takes its place.
    assert_eq!(
        support::final_text(&reply),
        "The whole answer, from its start."
    );
    let sends = reply
        .iter()
        .filter(|e| matches!(e, TerminalEvent::Send { .. }))
        .count();
    assert_eq!(sends, 1, "one message carries the answer: {reply:?}");
    assert_eq!(model.requests().len(), 2);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_an_idle_stop_and_compaction_keeps_memory() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::tool_call(
        "write_file",
        json!({"path": "MEMORY.md", "content": "The user's cat is called Miso."}),
    ));
    model.push_reply(Reply::text("I will remember Miso."));
    let instructions = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(instructions.path(), "Always sign off with a paw print.")
        .unwrap_or_else(|e| panic!("{e}"));
    let path = instructions.path().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    // Idle boxes stop when the test moves this clock past the idle timeout.
    let clock = ManualClock::new();
    let t = anthropic_bridge_on(clock.clock(), &model, move |c| {
        c.instructions_file = Some(path);
    })
    .await;
    assert_eq!(
        t.ask("memory", "my cat is Miso").await,
        "I will remember Miso."
    );
    // The operator's instructions reach the model, from a read-only mount.
    let first = model.requests()[0].body.clone();
    assert!(
        first["system"].to_string().contains("paw print"),
        "{}",
        first["system"]
    );
    let (code, _) = t
        .exec(
            "memory",
            &["sh", "-c", "echo x >> /etc/clawpen/instructions.md"],
        )
        .await;
    assert_ne!(code, 0, "the instructions file is writable from the box");
    clock.advance(t.config.idle_timeout());
    let freed = eventually(Duration::from_secs(30), || async {
        t.bridge.router.live_boxes() == 0
    })
    .await;
    assert!(freed, "the idle box still holds its slot");
    assert_eq!(
        t.box_running("memory").await,
        Some(false),
        "the idle box was not stopped"
    );

    model.push_reply(Reply::text("Miso, of course."));
    assert_eq!(
        t.ask("memory", "what is my cat called?").await,
        "Miso, of course."
    );
    let last = model.requests().pop().map(|r| r.body).unwrap_or_default();
    // History came back after the restart, and MEMORY.md is in the system prompt.
    assert!(request_text(&last).contains("my cat is Miso"), "{last}");
    assert!(
        last["system"].to_string().contains("Miso"),
        "{}",
        last["system"]
    );
    let (_, memory) = t.exec("memory", &["cat", "/workspace/MEMORY.md"]).await;
    assert_eq!(memory, "The user's cat is called Miso.");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_harness_talks_to_the_in_box_endpoint_with_a_placeholder_key() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::text("harness answer"));
    // A scripted harness: posts to the base URL it is given and prints what comes back.
    let harness = r#"read -r prompt; wget -q -O- --header "x-api-key: $ANTHROPIC_API_KEY" --header 'content-type: application/json' --post-data "{\"model\":\"m\",\"max_tokens\":10,\"stream\":false,\"messages\":[{\"role\":\"user\",\"content\":\"$prompt\"}]}" "$ANTHROPIC_BASE_URL/v1/messages" | sed 's/.*"text":"\([^"]*\)".*/\1/'"#;
    let t = anthropic_bridge(&model, |c| c.harness = Some(harness.into())).await;
    let reply = t.ask("harnessed", "hello harness").await;
    assert!(reply.contains("harness answer"), "{reply}");
    let request = &model.requests()[0];
    assert_eq!(
        request.header("x-api-key"),
        Some(KEY),
        "the bridge's key replaced the placeholder"
    );
    assert!(request_text(&request.body).contains("hello harness"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_wire_format_works_the_same() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::tool_call(
        "shell",
        json!({"command": "echo 42 > answer.txt && cat answer.txt"}),
    ));
    model.push_reply(Reply::text("The answer is 42."));
    let url = model.openai_url();
    let t = TestBridge::start(move |c| {
        c.provider = "openai".into();
        c.model = Some("gpt-test".into());
        c.openai_base_url = url;
        c.openai_api_key = Some(Secret::new("sk-openai-bridge-only"));
    })
    .await;
    assert_eq!(t.ask("oai", "compute").await, "The answer is 42.");
    let requests = model.requests();
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer sk-openai-bridge-only")
    );
    assert!(request_text(&requests[1].body).contains("42"));
    let (_, out) = t.exec("oai", &["cat", "/workspace/answer.txt"]).await;
    assert_eq!(out.trim(), "42");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_a_model_call_ends_the_turn_and_the_providers_request() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::stall());
    let t = anthropic_bridge(&model, |_| {}).await;
    let mut events = t.watch("stuck");
    t.say("stuck", "think very hard").await;
    let in_flight = |t: &TestBridge| t.requests_in_flight("stuck");
    assert!(eventually(Duration::from_secs(30), || async { in_flight(&t) == 1 }).await);
    t.say("stuck", "/stop").await;
    let reply = support::next_reply(&mut events).await;
    assert!(reply.contains("stopped"), "{reply}");
    // The box aborted its request and the bridge stopped performing it.
    assert!(
        eventually(Duration::from_secs(10), || async { in_flight(&t) == 0 }).await,
        "the model request is still being performed"
    );
    t.stop().await;
}

/// The text of an Anthropic event stream's text deltas, and whether it ended properly.
fn streamed_text(sse: &str) -> (String, bool) {
    let mut text = String::new();
    let mut stopped = false;
    for data in sse.lines().filter_map(|line| line.strip_prefix("data: ")) {
        let event: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        match event["type"].as_str() {
            Some("content_block_delta") => {
                text.push_str(event["delta"]["text"].as_str().unwrap_or_default());
            }
            Some("message_stop") => stopped = true,
            _ => {}
        }
    }
    (text, stopped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_harness_reads_a_10_mb_answer_whole() {
    let model = FakeModel::start().await;
    let text: String = (0..)
        .map(|n| format!("line {n:07}: the quick brown fox jumps over the lazy dog\n"))
        .take_while({
            let mut size = 0;
            move |line| {
                size += line.len();
                size <= 10 << 20
            }
        })
        .collect();
    // In small pieces, so the answer is many parts: far more than the 256 by which an agent
    // without flow control let its reader fall behind, beyond what socket buffers hold.
    model.push_reply(Reply::text(&text).in_pieces_of(8 * 1024));
    // A harness that streams the answer into a file and reads it slowly: nothing while
    // the model writes the whole answer (about 7 s), then 64 KB at a time with a pause.
    let harness = r#"read -r prompt; wget -q -O- --header 'content-type: application/json' --post-data '{"model":"m","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"everything"}]}' "$ANTHROPIC_BASE_URL/v1/messages" | { sleep 10; while n=$(dd bs=65536 count=1 2>/dev/null | tee -a answer.sse | wc -c) && [ "$n" -gt 0 ]; do sleep 0.02; done; }; echo "read $(wc -c < answer.sse) bytes""#;
    let t = anthropic_bridge(&model, |c| c.harness = Some(harness.into())).await;
    let reply = t.ask("slow", "send everything").await;
    assert!(reply.starts_with("read "), "{reply}");
    let (_, sse) = t.exec("slow", &["cat", "/workspace/answer.sse"]).await;
    let (received, stopped) = streamed_text(&sse);
    assert!(
        received == text,
        "the harness got {} of {} bytes of the answer",
        received.len(),
        text.len()
    );
    assert!(stopped, "the stream did not end with message_stop");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_command_that_leaves_orphans_keeps_its_exit_code_and_leaves_no_zombie() {
    let model = FakeModel::start().await;
    // Orphans of every kind: background jobs of subshells, and daemons in their own session.
    let command =
        "for i in $(seq 20); do (sleep 0.1 &); setsid sleep 0.1 & done; echo spawned; exit 3";
    model.push_reply(Reply::tool_call("shell", json!({ "command": command })));
    model.push_reply(Reply::tool_call(
        "shell",
        json!({ "command": "echo second; exit 0" }),
    ));
    model.push_reply(Reply::text("done"));
    let t = anthropic_bridge(&model, |c| c.limits.pids = 64).await;

    assert_eq!(t.ask("reaped", "make orphans").await, "done");
    let requests = model.requests();
    let first = last_tool_result(&requests[1].body);
    assert!(
        first.contains("spawned") && first.ends_with("[exit code 3]"),
        "{first}"
    );
    let second = last_tool_result(&requests[2].body);
    assert_eq!(second.trim(), "second");
    let reaped = eventually(Duration::from_secs(20), || async {
        t.zombies("reaped").await == 0
    })
    .await;
    assert!(reaped, "{} zombies left", t.zombies("reaped").await);
    t.stop().await;
}
