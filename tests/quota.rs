//! The workspace quota (`[box] workspace_mb`): a box that writes past it is stopped, its chat
//! is told why, and other conversations are served on.

mod support;

use std::time::Duration;

use clawpen::config::Secret;
use clawpen::sandbox::quota::Measured;
use serde_json::json;
use support::model::{FakeModel, Reply};
use support::{eventually, next_reply, TestBridge};

/// A bridge whose boxes ask `model`, with a 5 MB workspace quota checked every second.
async fn small_quota_bridge(model: &FakeModel) -> TestBridge {
    let url = model.url();
    TestBridge::start(move |c| {
        c.provider = "anthropic".into();
        c.model = Some("claude-test".into());
        c.anthropic_base_url = url;
        c.anthropic_api_key = Some(Secret::new("sk-ant-test"));
        c.limits.workspace_mb = 5;
        c.limits.workspace_check_secs = 1;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_writes_past_its_workspace_quota_is_stopped_and_its_chat_told() {
    let model = FakeModel::start().await;
    // The agent fills its workspace, then stays busy: the watchdog stops it mid-turn.
    model.push_reply(Reply::tool_call(
        "shell",
        json!({ "command": "dd if=/dev/zero of=/workspace/fill bs=1M count=8 && sleep 60" }),
    ));
    // A hostile one hides what it writes: deleted, but still held open, so `du` misses it.
    model.push_reply(Reply::tool_call(
        "shell",
        json!({ "command": "dd if=/dev/zero of=/workspace/hidden bs=1M count=8 \
                            && exec 3</workspace/hidden && rm /workspace/hidden && sleep 60" }),
    ));
    // A job left running after its turn fills the workspace while the box is idle.
    model.push_reply(Reply::tool_call(
        "shell",
        json!({ "command": "(sleep 1; dd if=/dev/zero of=/workspace/late bs=1M count=8; \
                            sleep 60) >/dev/null 2>&1 &" }),
    ));
    model.push_reply(Reply::text("started in the background"));
    model.push_reply(Reply::text("still serving you"));
    let t = small_quota_bridge(&model).await;

    for name in ["filler", "hider"] {
        let mut events = t.watch(name);
        t.say(name, "fill the disk").await;
        let reply = tokio::time::timeout(Duration::from_secs(50), next_reply(&mut events))
            .await
            .unwrap_or_else(|_| panic!("{name}: no reply before the shell's sleep ended"));
        assert!(
            reply.contains(
                "This turn failed: the box was stopped: its workspace is over the 5 MB limit ("
            ),
            "{name}: {reply}"
        );
        assert!(reply.contains("[box] workspace_mb"), "{name}: {reply}");
        assert_eq!(t.box_running(name).await, Some(false), "{name}");
    }
    let mut events = t.watch("late");
    t.say("late", "fill it later").await;
    assert_eq!(next_reply(&mut events).await, "started in the background");
    let notice = tokio::time::timeout(Duration::from_secs(50), next_reply(&mut events))
        .await
        .unwrap_or_else(|_| panic!("late: the chat was never told"));
    assert!(
        notice.starts_with("⚠️ The box was stopped: its workspace is over the 5 MB limit ("),
        "{notice}"
    );
    assert_eq!(t.box_running("late").await, Some(false));
    // Another conversation is served meanwhile.
    assert_eq!(
        t.ask("bystander", "are you there?").await,
        "still serving you"
    );
    // A box within its quota is measured in full, never taken for one that hides its use.
    let sandbox = t.bridge.router.sandbox();
    let id = t.container("bystander").await;
    let Measured::Kib(before) = sandbox.measure_workspace(&id).await else {
        panic!("an ordinary workspace could not be measured");
    };
    let (code, _) = t
        .exec(
            "bystander",
            &[
                "dd",
                "if=/dev/zero",
                "of=/workspace/two",
                "bs=1M",
                "count=2",
            ],
        )
        .await;
    assert_eq!(code, 0);
    let after = sandbox.measure_workspace(&id).await;
    assert!(
        matches!(after, Measured::Kib(kib) if kib >= before + 2048 && kib < 5 * 1024),
        "{before} KiB, then {after:?}"
    );
    t.stop().await;
}

/// Waits until the watchdog of `t` started `rounds` rounds in all; returns its counts then.
async fn after_round(t: &TestBridge, rounds: u64) -> (u64, u64) {
    let sandbox = t.bridge.router.sandbox();
    let reached = eventually(Duration::from_secs(60), || async {
        sandbox.quota_counts().0 >= rounds
    })
    .await;
    assert!(
        reached,
        "the watchdog stopped at {:?}",
        sandbox.quota_counts()
    );
    sandbox.quota_counts()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_at_rest_is_measured_every_tenth_round_and_one_at_work_every_round() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::text("resting"));
    // A job left running after its turn keeps its box at work.
    model.push_reply(Reply::tool_call(
        "shell",
        json!({ "command": "(while :; do :; done) >/dev/null 2>&1 &" }),
    ));
    model.push_reply(Reply::text("spinning in the background"));
    let t = small_quota_bridge(&model).await;
    assert_eq!(t.ask("rest", "hi").await, "resting");
    assert_eq!(t.ask("work", "spin").await, "spinning in the background");
    // Two rounds to settle (each box measured once it is seen, and once more after its
    // turn), then six rounds counted: the one at work is measured in each, the one at rest
    // at most once (its every-tenth-round measurement), not six times.
    let (settled, _) = t.bridge.router.sandbox().quota_counts();
    let (start, before) = after_round(&t, settled + 2).await;
    let (_, after) = after_round(&t, start + 6).await;
    let made = after - before;
    assert!(
        (5..=7).contains(&made),
        "{made} measurements in six rounds of a box at work and one at rest"
    );
    t.stop().await;
}
