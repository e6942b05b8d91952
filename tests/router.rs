//! Conversations, turns and box lifecycles through the real router, engine and store.

mod support;

use std::time::Duration;

use clawpen::adapters::terminal::TerminalEvent;
use clawpen::router::{ConversationState, ManualClock};
use clawpen::store::InboundState;
use support::model::{FakeModel, Hold, Reply, DEFAULT_TEXT};
use support::{eventually, final_text, next_reply, next_reply_events, TestBridge, REPLY_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_reach_the_running_box_in_order() {
    let model = FakeModel::start().await;
    let t = model_bridge(&model).await;
    assert_eq!(t.ask("team", "warm up").await, DEFAULT_TEXT);
    let first_box = t.container("team").await;

    // The model holds its answer, so the turn runs while the follow-ups come.
    let (_, mut events, hold) = reply_under_way(&t, &model, "team").await;
    let follow_ups = ["second", "third", "fourth"];
    for text in follow_ups {
        t.say("team", text).await;
    }
    // The actor stores each as part of the running turn, then writes it to the box; the
    // rest of the answer, released after that, reaches the box behind them on its stdin.
    let key = TestBridge::key("team");
    let in_turn = eventually(REPLY_TIMEOUT, || async {
        let stored = t
            .bridge
            .router
            .store()
            .pending_inbound(&key)
            .unwrap_or_default();
        follow_ups.iter().all(|text| {
            stored
                .iter()
                .any(|s| s.inbound.text == *text && matches!(s.state, InboundState::InTurn { .. }))
        })
    })
    .await;
    assert!(in_turn, "the follow-ups never joined the running turn");
    let answer = "Second, third and fourth, noted.";
    model.push_reply(Reply::text(answer));
    hold.release();

    // One reply answers all four: the agent asked the model again with the follow-ups,
    // in order, from the same box.
    let reply = final_text(&next_reply_events(&mut events).await);
    assert!(reply.starts_with(&format!("{FIRST_PART}{REST}")), "{reply}");
    assert!(reply.ends_with(answer), "{reply}");
    let requests = model.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    let asked = requests[2].body["messages"].to_string();
    let since = asked
        .find("New messages arrived")
        .unwrap_or_else(|| panic!("no follow-ups in the last request: {asked}"));
    let at = |text: &str| asked[since..].find(text);
    assert!(
        at("second") < at("third") && at("third") < at("fourth"),
        "{asked}"
    );
    assert!(at("second").is_some(), "{asked}");
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
    // The default idle timeout (a quarter of an hour), on a clock the test moves.
    let clock = ManualClock::new();
    let t = TestBridge::start_on(clock.clock(), |_| {}).await;
    assert_eq!(t.ask("sleepy", "remember this").await, "remember this");
    let container = t.container("sleepy").await;
    assert_eq!(
        t.exec("sleepy", &["sh", "-c", "echo kept > /workspace/state.txt"])
            .await
            .0,
        0
    );
    assert_eq!(t.box_running("sleepy").await, Some(true));
    clock.advance(t.config.idle_timeout());
    // Down when its slot is free: the slot is given up only once `docker stop` returned.
    let freed = eventually(REPLY_TIMEOUT, || async {
        t.bridge.router.live_boxes() == 0
    })
    .await;
    assert!(freed, "the idle box still holds its slot");
    assert_eq!(
        t.box_running("sleepy").await,
        Some(false),
        "the idle box was not stopped"
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

/// The first part of a held answer, shown before the turn waits on the model.
const FIRST_PART: &str = "Here is the first part of a long answer. ";

/// What a held answer would show if it were released.
const REST: &str = "And here is the rest of it, which the user never sees.";

/// A bridge whose boxes ask `model`.
async fn model_bridge(model: &FakeModel) -> TestBridge {
    TestBridge::start(|c| model.serve(c)).await
}

/// Asks conversation `name` a question whose answer shows its first part and then waits
/// on the model until the returned hold is released: the turn is running when this
/// returns. Also returns the box, and the reply's events after its first message.
async fn reply_under_way(
    t: &TestBridge,
    model: &FakeModel,
    name: &str,
) -> (
    clawpen_domain::ContainerId,
    tokio::sync::mpsc::Receiver<TerminalEvent>,
    Hold,
) {
    let (reply, hold) = Reply::held(FIRST_PART, REST);
    model.push_reply(reply);
    let mut events = t.watch(name);
    t.say(name, "tell me everything").await;
    hold.arrived().await;
    match tokio::time::timeout(REPLY_TIMEOUT, events.recv()).await {
        Ok(Some(TerminalEvent::Send { text, .. })) => {
            assert!(FIRST_PART.starts_with(&text), "{text}");
        }
        other => panic!("expected the reply to start, got {other:?}"),
    }
    (t.container(name).await, events, hold)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_killed_mid_turn_gives_a_clear_error_and_the_next_message_works() {
    let model = FakeModel::start().await;
    let t = model_bridge(&model).await;
    let (container, mut events, _hold) = reply_under_way(&t, &model, "fragile").await;
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
    assert!(!reply.contains(REST), "{reply}");

    let mut events = t.watch("fragile");
    t.say("fragile", "are you back?").await;
    assert_eq!(next_reply(&mut events).await, DEFAULT_TEXT);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_removed_mid_turn_is_reported_as_removed_and_comes_back() {
    let model = FakeModel::start().await;
    let t = model_bridge(&model).await;
    let (container, mut events, _hold) = reply_under_way(&t, &model, "doomed").await;
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
    assert_eq!(next_reply(&mut events).await, DEFAULT_TEXT);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_goes_silent_mid_turn_is_stopped_after_the_stall_timeout() {
    // The default stall timeout (two minutes), on a clock the test moves.
    let clock = ManualClock::new();
    let model = FakeModel::start().await;
    let t = TestBridge::start_on(clock.clock(), |c| model.serve(c)).await;
    let (container, mut events, _hold) = reply_under_way(&t, &model, "frozen").await;
    // Frozen, the agent sends nothing, not even its heartbeat.
    let docker = t.bridge.router.sandbox().docker();
    docker
        .pause_container(container.as_str())
        .await
        .unwrap_or_else(|e| panic!("pause: {e}"));
    let stall = Duration::from_secs(t.config.turn_stall_secs);
    // Past the stall timeout; moved again while no reply comes, in case a last heartbeat
    // was on its way when the box froze and set the deadline back.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        clock.advance(stall);
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Ok(Some(TerminalEvent::Finished)) => break,
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("reply stream closed after {seen:?}"),
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "no reply within {REPLY_TIMEOUT:?}: {seen:?}"
            ),
        }
    }
    let reply = final_text(&seen);
    assert!(reply.starts_with(FIRST_PART.trim_end()), "{reply}");
    assert!(
        reply.contains(
            "This turn failed: the agent did not answer for 120 s and its box was stopped."
        ),
        "{reply}"
    );
    assert_eq!(t.box_running("frozen").await, Some(false));
    // The next message gets a fresh start of the same box.
    assert_eq!(t.ask("frozen", "hello again").await, DEFAULT_TEXT);
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
    // Replies come in order: had the copy been run, in that turn or a turn of its own, the
    // next reply would echo it too.
    t.say("dedupe", "next").await;
    assert_eq!(next_reply(&mut events).await, "next", "a second reply came");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_an_idle_box_waits_for_one_flush_before_the_box_has_it() {
    // The actor of an idle, attached conversation stores the message and begins its turn
    // in one commit; the router's own path would flush twice (the message, then the turn).
    let model = FakeModel::start().await;
    let t = model_bridge(&model).await;
    assert_eq!(t.ask("warm", "warm up").await, DEFAULT_TEXT);
    let store = t.bridge.router.store().clone();
    // The warm-up's last writes (its finished delivery) are done, and the actor waits.
    let settled = eventually(REPLY_TIMEOUT, || async {
        t.state("warm") == Some(ConversationState::Idle)
            && store.pending_deliveries().is_ok_and(|d| d.is_empty())
    })
    .await;
    assert!(settled, "the warm-up turn never settled");
    // Commits apply and flush in order: once this one is durable, so is every write
    // before it (forgetting the delivered reply, above all).
    store
        .commit(|_| Ok(()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Held before its first word: the box has the turn once the model is asked.
    let (reply, hold) = Reply::held("", REST);
    model.push_reply(reply);
    let mut events = t.watch("warm");
    let before = store.flushes();
    t.say("warm", "once more").await;
    hold.arrived().await;
    assert_eq!(
        store.flushes() - before,
        1,
        "flushes between the message and its box"
    );
    let key = TestBridge::key("warm");
    let stored = store.pending_inbound(&key).unwrap_or_default();
    assert!(
        stored.iter().any(
            |s| s.inbound.text == "once more" && matches!(s.state, InboundState::InTurn { .. })
        ),
        "{stored:?}"
    );
    hold.release();
    let reply = final_text(&next_reply_events(&mut events).await);
    assert_eq!(reply, REST);
    // The conversation goes on as before.
    t.say("warm", "next").await;
    assert_eq!(next_reply(&mut events).await, DEFAULT_TEXT);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_but_never_handed_to_its_actor_is_answered_when_sent_again() {
    // What a failed flush on a full disk can leave: the message reached the store, the
    // platform was told to send it again, and no actor holds it.
    let t = TestBridge::start(|_| {}).await;
    let mut events = t.watch("orphan");
    let message = clawpen::control::terminal_inbound(&TestBridge::key("orphan"), "stored once");
    t.bridge
        .router
        .store()
        .insert_inbound(&message)
        .unwrap_or_else(|e| panic!("{e}"));
    use clawpen::adapters::{Accepted, InboundSink};
    assert_eq!(
        t.bridge.router.accept(message).await.ok(),
        Some(Accepted::Duplicate)
    );
    assert_eq!(next_reply(&mut events).await, "stored once");
    t.say("orphan", "next").await;
    assert_eq!(next_reply(&mut events).await, "next", "answered twice");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_cap_queues_conversations_fairly() {
    // One slot, and idle boxes stop when the test moves the clock past the idle timeout.
    let clock = ManualClock::new();
    let t = TestBridge::start_on(clock.clock(), |c| c.max_boxes = Some(1)).await;
    let idle = t.config.idle_timeout();
    let waiting = |name: &'static str| {
        let t = &t;
        move || async move { t.state(name) == Some(ConversationState::WaitingForSlot) }
    };
    let mut a = t.watch("first");
    let mut b = t.watch("second");
    let mut c = t.watch("third");
    t.say("first", "one").await;
    assert_eq!(next_reply(&mut a).await, "one");
    // The first box holds the slot; the others queue for it, the second before the third.
    t.say("second", "two").await;
    assert!(eventually(REPLY_TIMEOUT, waiting("second")).await);
    t.say("third", "three").await;
    assert!(eventually(REPLY_TIMEOUT, waiting("third")).await);

    // Each waits for the box before it to go idle and be stopped, in the order they came.
    clock.advance(idle);
    assert_eq!(next_reply(&mut b).await, "two");
    assert_eq!(
        t.box_running("first").await,
        Some(false),
        "two boxes ran at once"
    );
    assert_eq!(
        t.box_running("third").await,
        None,
        "the third got a box before the second"
    );
    assert_eq!(t.state("third"), Some(ConversationState::WaitingForSlot));
    clock.advance(idle);
    assert_eq!(next_reply(&mut c).await, "three");
    assert_eq!(
        t.box_running("second").await,
        Some(false),
        "two boxes ran at once"
    );
    assert_eq!(t.bridge.router.live_boxes(), 1);
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
    let t = t.restart().await;
    assert_eq!(
        t.ask("group", "anything else?").await,
        "bring an umbrella\n\nanything else?"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_running_turn() {
    let model = FakeModel::start().await;
    let t = model_bridge(&model).await;
    let (_, mut events, hold) = reply_under_way(&t, &model, "stoppable").await;
    t.say("stoppable", "/stop").await;
    let reply = final_text(&next_reply_events(&mut events).await);
    assert!(reply.starts_with(FIRST_PART.trim_end()), "{reply}");
    assert!(reply.ends_with("(stopped)"), "{reply}");
    assert!(!reply.contains(REST), "the turn ran to its end: {reply}");
    // The box gave up its model call; released now, the rest has nowhere to go.
    hold.abandoned().await;
    hold.release();
    // The conversation goes on.
    assert_eq!(t.ask("stoppable", "next").await, DEFAULT_TEXT);
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
    let t = t.restart().await;
    assert_eq!(t.ask("old", "again").await, "again");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unset_box_cap_is_what_the_engines_machine_holds_and_a_set_one_is_kept() {
    let t = TestBridge::start(|_| {}).await;
    let capacity = t.bridge.router.sandbox().capacity().await;
    assert_eq!(
        t.bridge.router.max_boxes(),
        capacity.boxes,
        "{}",
        capacity.why
    );
    // On any machine the engine describes, that is an estimate, never the old fixed 32.
    assert!(
        capacity.why.contains("GiB of engine memory") || capacity.why.contains("pid_max"),
        "{}",
        capacity.why
    );
    t.stop().await;
    let t = TestBridge::start(|c| c.max_boxes = Some(3)).await;
    assert_eq!(t.bridge.router.max_boxes(), 3);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_the_engine_refuses_is_told_in_plain_words_and_the_message_is_not_left_pending() {
    // More CPUs than any machine here has: the engine itself refuses to create the box.
    let t = TestBridge::start(|c| c.limits.cpus = 1000.0).await;
    let mut events = t.watch("refused");
    t.say("refused", "hello").await;
    let reply = next_text(&mut events).await;
    assert!(
        reply.starts_with("⚠️ The sandbox refused to start this conversation's box")
            && reply.contains("CPU"),
        "{reply}"
    );
    // Answered with the refusal: nothing is left for a restart to run again, and the
    // bridge still answers (a command needs no box).
    let pending = t
        .bridge
        .router
        .store()
        .pending_inbound(&TestBridge::key("refused"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(pending.is_empty(), "{pending:?}");
    t.say("refused", "/status").await;
    let status = next_text(&mut events).await;
    assert!(status.contains("no box running"), "{status}");
    assert_eq!(t.box_running("refused").await, None, "a box was made");
    t.stop().await;
}

/// The text of the next message or notice the terminal shows.
async fn next_text(events: &mut tokio::sync::mpsc::Receiver<TerminalEvent>) -> String {
    loop {
        match tokio::time::timeout(REPLY_TIMEOUT, events.recv()).await {
            Ok(Some(TerminalEvent::Send { text, .. } | TerminalEvent::Notice { text })) => {
                return text
            }
            Ok(Some(_)) => {}
            other => panic!("no message or notice came: {other:?}"),
        }
    }
}
