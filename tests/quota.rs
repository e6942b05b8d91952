//! The workspace quota (`[box] workspace_mb`): a box that writes past it is stopped, its chat
//! is told why, and other conversations are served on.

mod support;

use std::time::Duration;

use clawpen::config::Secret;
use serde_json::json;
use support::model::{FakeModel, Reply};
use support::{next_reply, TestBridge};

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
    // Another conversation is served meanwhile.
    assert_eq!(
        t.ask("bystander", "are you there?").await,
        "still serving you"
    );
    t.stop().await;
}
