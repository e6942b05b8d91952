//! Conversations, turns and box lifecycles through the real router, engine and store.

mod support;

use std::time::Duration;

use clawpen::adapters::terminal::TerminalEvent;
use clawpen::sandbox::spec;
use support::{eventually, final_text, next_reply, next_reply_events, TestBridge};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_reach_the_running_box_in_order() {
    let t = TestBridge::start(|c| c.echo_delay_ms = 40).await;
    assert_eq!(t.ask("team", "warm up").await, "warm up");
    let first_box = t.container("team").await;

    let mut events = t.watch("team");
    // About 30 chunks of echo, 40 ms apart: the turn runs for over a second.
    let long = "this first message is long enough to stream for a while, ".repeat(8);
    let long = long.trim_end();
    t.say("team", long).await;
    // Wait until the turn is visibly running, then send follow-ups.
    match tokio::time::timeout(support::REPLY_TIMEOUT, events.recv()).await {
        Ok(Some(TerminalEvent::Send { .. })) => {}
        other => panic!("expected the reply to start, got {other:?}"),
    }
    for text in ["second", "third", "fourth"] {
        t.say("team", text).await;
    }
    // One reply answers all four, in order, from the same box.
    let reply = final_text(&next_reply_events(&mut events).await);
    assert_eq!(reply, format!("{long}\n\nsecond\n\nthird\n\nfourth"));
    assert_eq!(t.container("team").await, first_box);
    assert_eq!(
        t.bridge
            .router
            .sandbox()
            .list()
            .await
            .unwrap_or_default()
            .len(),
        1
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_box_stops_and_comes_back_with_its_workspace() {
    let t = TestBridge::start(|c| c.idle_timeout_secs = 2).await;
    assert_eq!(t.ask("sleepy", "remember this").await, "remember this");
    let container = t.container("sleepy").await;
    assert_eq!(
        t.exec("sleepy", &["sh", "-c", "echo kept > /workspace/state.txt"])
            .await
            .0,
        0
    );
    let sandbox = t.bridge.router.sandbox().clone();
    let stopped = eventually(Duration::from_secs(30), || {
        let (sandbox, container) = (sandbox.clone(), container.clone());
        async move { matches!(sandbox.inspect(&container).await, Ok(Some(exit)) if !exit.running) }
    })
    .await;
    assert!(stopped, "the idle box was not stopped");
    assert_eq!(
        t.bridge.router.live_boxes(),
        0,
        "the stopped box still holds a slot"
    );

    assert_eq!(t.ask("sleepy", "wake up").await, "wake up");
    assert_eq!(
        t.container("sleepy").await,
        container,
        "same box, restarted"
    );
    let (code, out) = t.exec("sleepy", &["cat", "/workspace/state.txt"]).await;
    assert_eq!((code, out.trim()), (0, "kept"));
    t.stop().await;
}

/// Starts conversation `name`'s box with a first answer, then a long reply (`line` six
/// times) that is under way when this returns: its box, and the reply's events so far.
async fn reply_under_way(
    t: &TestBridge,
    name: &str,
    line: &str,
) -> (
    clawpen_domain::ContainerId,
    tokio::sync::mpsc::Receiver<TerminalEvent>,
) {
    assert_eq!(t.ask(name, "hi").await, "hi");
    let container = t.container(name).await;
    let mut events = t.watch(name);
    t.say(name, &line.repeat(6)).await;
    match tokio::time::timeout(support::REPLY_TIMEOUT, events.recv()).await {
        Ok(Some(TerminalEvent::Send { .. })) => {}
        other => panic!("expected the reply to start, got {other:?}"),
    }
    (container, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_killed_mid_turn_gives_a_clear_error_and_the_next_message_works() {
    let t = TestBridge::start(|c| c.echo_delay_ms = 100).await;
    let (container, mut events) = reply_under_way(
        &t,
        "fragile",
        "a long message that will not make it to the end of its echo. ",
    )
    .await;
    t.bridge
        .router
        .sandbox()
        .kill(&container)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let reply = final_text(&next_reply_events(&mut events).await);
    assert!(reply.contains("This turn failed"), "{reply}");
    assert!(
        reply.contains("the box was stopped from outside (killed)"),
        "{reply}"
    );
    assert!(reply.contains("send your message again"), "{reply}");

    let mut events = t.watch("fragile");
    t.say("fragile", "are you back?").await;
    assert_eq!(next_reply(&mut events).await, "are you back?");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_removed_mid_turn_is_reported_as_removed_and_comes_back() {
    let t = TestBridge::start(|c| c.echo_delay_ms = 100).await;
    let (container, mut events) = reply_under_way(
        &t,
        "doomed",
        "a long message whose box is removed before its echo ends. ",
    )
    .await;
    // What `docker rm -f` does: kill, then remove the container (its volume stays).
    t.bridge
        .router
        .sandbox()
        .remove_container(&container)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let reply = final_text(&next_reply_events(&mut events).await);
    assert!(
        reply.contains("This turn failed: the box was removed."),
        "{reply}"
    );
    assert!(!reply.contains("exit code"), "{reply}");

    let mut events = t.watch("doomed");
    t.say("doomed", "still there?").await;
    assert_eq!(next_reply(&mut events).await, "still there?");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_box_stdout_is_survived() {
    let t = TestBridge::start(|_| {}).await;
    assert_eq!(t.ask("noisy", "before").await, "before");
    // A process in the box writes garbage straight into the agent's stdout.
    let (code, out) = t
        .exec(
            "noisy",
            &[
                "sh",
                "-c",
                "printf 'garbage {{{\\n\\x00\\xff not json\\n' > /proc/1/fd/1",
            ],
        )
        .await;
    assert_eq!(code, 0, "{out}");
    // The bridge answered the garbage with an error, which the agent logged.
    let answered = eventually(Duration::from_secs(10), || async {
        t.box_stderr("noisy")
            .await
            .contains("bridge rejected a line")
    })
    .await;
    assert!(
        answered,
        "no rejection reached the box: {}",
        t.box_stderr("noisy").await
    );
    assert_eq!(t.ask("noisy", "after").await, "after");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_is_handled_once() {
    let t = TestBridge::start(|_| {}).await;
    let mut events = t.watch("dedupe");
    let message = clawpen::control::terminal_inbound(&TestBridge::key("dedupe"), "only once");
    use clawpen::adapters::{Accepted, InboundSink};
    assert_eq!(
        t.bridge.router.accept(message.clone()).await.ok(),
        Some(Accepted::Stored)
    );
    assert_eq!(
        t.bridge.router.accept(message).await.ok(),
        Some(Accepted::Duplicate)
    );
    assert_eq!(next_reply(&mut events).await, "only once");
    assert!(
        tokio::time::timeout(Duration::from_secs(1), events.recv())
            .await
            .is_err(),
        "a second reply came"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_cap_queues_conversations_fairly() {
    let t = TestBridge::start(|c| {
        c.max_boxes = 1;
        c.idle_timeout_secs = 1;
    })
    .await;
    let mut a = t.watch("first");
    let mut b = t.watch("second");
    let mut c = t.watch("third");
    t.say("first", "one").await;
    t.say("second", "two").await;
    t.say("third", "three").await;
    let sandbox = t.bridge.router.sandbox().clone();
    let running = |name: &str| {
        let (sandbox, wanted) = (
            sandbox.clone(),
            spec::container_name(sandbox.instance(), &TestBridge::key(name)),
        );
        async move {
            let boxes = sandbox.list().await.unwrap_or_default();
            boxes.iter().find(|b| b.name == wanted).map(|b| b.running)
        }
    };
    // Each waits for the box before it to go idle and be stopped, in the order they came.
    assert_eq!(next_reply(&mut a).await, "one");
    assert_eq!(next_reply(&mut b).await, "two");
    assert_eq!(running("first").await, Some(false), "two boxes ran at once");
    assert_eq!(
        running("third").await,
        None,
        "the third got a box before the second"
    );
    assert_eq!(next_reply(&mut c).await, "three");
    assert_eq!(
        running("second").await,
        Some(false),
        "two boxes ran at once"
    );
    assert!(t.bridge.router.live_boxes() <= 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatter_not_addressed_to_the_bot_is_context_for_the_next_turn() {
    let t = TestBridge::start(|_| {}).await;
    let mut events = t.watch("group");
    t.chatter("group", "lunch at noon?").await;
    // No turn for chatter: nothing is answered.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), events.recv())
            .await
            .is_err()
    );
    t.say("group", "what did they say?").await;
    // The echo agent answers every message it was given, context first.
    assert_eq!(
        next_reply(&mut events).await,
        "lunch at noon?\n\nwhat did they say?"
    );

    // Context is durable: chatter, a restart, then a question.
    t.chatter("group", "bring an umbrella").await;
    use clawpen::adapters::InboundSink;
    let TestBridge {
        dir: _dir,
        config,
        bridge,
        cleanup: _cleanup,
    } = t;
    bridge.shutdown().await;
    let bridge = clawpen::daemon::Bridge::start(&config, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut events = bridge.terminal.watch(&TestBridge::key("group"));
    let question = clawpen::control::terminal_inbound(&TestBridge::key("group"), "anything else?");
    bridge
        .router
        .accept(question)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        next_reply(&mut events).await,
        "bring an umbrella\n\nanything else?"
    );
    let sandbox = bridge.router.sandbox().clone();
    bridge.shutdown().await;
    let _ = sandbox.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_running_turn() {
    let t = TestBridge::start(|c| c.echo_delay_ms = 200).await;
    let mut events = t.watch("stoppable");
    t.say(
        "stoppable",
        "a very long message that would take many seconds to echo completely back",
    )
    .await;
    match tokio::time::timeout(support::REPLY_TIMEOUT, events.recv()).await {
        Ok(Some(TerminalEvent::Send { .. })) => {}
        other => panic!("expected the reply to start, got {other:?}"),
    }
    t.say("stoppable", "/stop").await;
    let reply = final_text(&next_reply_events(&mut events).await);
    assert!(reply.ends_with("(stopped)"), "{reply}");
    assert!(
        !reply.contains("completely back"),
        "the turn ran to its end: {reply}"
    );
    // The conversation goes on.
    assert_eq!(t.ask("stoppable", "next").await, "next");
    t.stop().await;
}

/// A box whose agent speaks protocol version 1 (left running by an older clawpen) answers
/// the bridge, fresh and adopted after a restart: the bridge resumes it in its version.
/// Needs such an agent: `CLAWPEN_TEST_AGENT_V1` names a static clawpen-agent built from a
/// tree of version 1 (before commit "Flow control for responses"); skipped without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_whose_agent_speaks_version_1_answers_fresh_and_adopted() {
    let Some(old) = std::env::var_os("CLAWPEN_TEST_AGENT_V1") else {
        eprintln!("CLAWPEN_TEST_AGENT_V1 is not set; skipping");
        return;
    };
    let t = TestBridge::start(|c| {
        c.agent_binary = Some(old.into());
        // Its own image, so the current agent's image is not rebuilt back and forth.
        c.image = format!("{}-agent-v1", c.image);
    })
    .await;
    assert_eq!(t.ask("old", "hello").await, "hello");

    // The bridge restarts and adopts the running box, which never sees a `Ready` again:
    // its events count only once its `State` says where they stand.
    use clawpen::adapters::InboundSink;
    let TestBridge {
        dir: _dir,
        config,
        bridge,
        cleanup: _cleanup,
    } = t;
    bridge.shutdown().await;
    let bridge = clawpen::daemon::Bridge::start(&config, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut events = bridge.terminal.watch(&TestBridge::key("old"));
    let question = clawpen::control::terminal_inbound(&TestBridge::key("old"), "again");
    bridge
        .router
        .accept(question)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next_reply(&mut events).await, "again");
    let sandbox = bridge.router.sandbox().clone();
    bridge.shutdown().await;
    let _ = sandbox.remove_all().await;
}
