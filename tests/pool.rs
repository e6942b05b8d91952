//! The warm pool through the real router, engine and store: new conversations are served
//! by boxes started ahead of need, keep the workspace they claimed, never see another's
//! files, and the pool neither outgrows `max_boxes` nor outlives a restart.

mod support;

use std::collections::BTreeSet;

use clawpen::config::ConversationSettings;
use clawpen::router::{ConversationState, ManualClock, RECYCLE_AFTER};
use clawpen::sandbox::spec;
use clawpen_domain::ContainerId;
use support::{eventually, next_reply, TestBridge, REPLY_TIMEOUT};

/// The ids of the warm boxes no conversation has claimed, as the engine lists them.
async fn unclaimed(t: &TestBridge) -> BTreeSet<ContainerId> {
    let boxes = t.bridge.router.sandbox().list().await;
    boxes
        .unwrap_or_else(|e| panic!("list: {e}"))
        .into_iter()
        .filter(|b| b.pool && b.name.contains("-pool-"))
        .map(|b| b.id)
        .collect()
}

/// Waits until the pool holds `n` ready boxes; returns their ids.
async fn pool_of(t: &TestBridge, n: usize) -> BTreeSet<ContainerId> {
    let full = eventually(REPLY_TIMEOUT, || async {
        t.bridge.router.warm_boxes() == n && unclaimed(t).await.len() == n
    })
    .await;
    assert!(full, "the pool never held {n} boxes");
    unclaimed(t).await
}

/// The names of this bridge's volumes, as the engine lists them.
async fn volume_names(t: &TestBridge) -> BTreeSet<String> {
    let volumes = t.bridge.router.sandbox().volumes().await;
    volumes
        .unwrap_or_else(|e| panic!("volumes: {e}"))
        .into_iter()
        .map(|v| v.name)
        .collect()
}

/// The workspace volume a conversation claimed from the pool, as the store has it.
fn claimed(t: &TestBridge, name: &str) -> Option<String> {
    let record = t.bridge.router.store().conversation(&TestBridge::key(name));
    record
        .unwrap_or_else(|e| panic!("store: {e}"))
        .and_then(|r| r.workspace)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_conversation_is_answered_by_a_warm_box_and_keeps_its_files_across_a_restart() {
    let t = TestBridge::start(|c| c.warm_pool = 2).await;
    let warm = pool_of(&t, 2).await;

    assert_eq!(t.ask("alpha", "hello").await, "hello");
    // Its box is one the pool had started before the message came: none was created for it.
    let container = t.container("alpha").await;
    assert!(warm.contains(&container), "{container} was not a warm box");
    let volume = claimed(&t, "alpha").unwrap_or_else(|| panic!("no claim stored"));
    assert!(volume.contains("-pool-"), "{volume}");
    let write = ["sh", "-c", "echo mine > /workspace/notes.txt"];
    assert_eq!(t.exec("alpha", &write).await.0, 0);
    // The pool refills behind it.
    let refilled = pool_of(&t, 2).await;
    assert!(!refilled.contains(&container));

    let t = t.restart().await;
    // The claimed box is the conversation's, adopted as it ran; its workspace is the one
    // it claimed, files and all.
    assert_eq!(t.ask("alpha", "again").await, "again");
    assert_eq!(t.container("alpha").await, container);
    let (code, out) = t.exec("alpha", &["cat", "/workspace/notes.txt"]).await;
    assert_eq!((code, out.trim()), (0, "mine"));
    assert_eq!(claimed(&t, "alpha").as_deref(), Some(volume.as_str()));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_box_that_stopped_comes_back_labelled_on_the_same_workspace() {
    let clock = ManualClock::new();
    let t = TestBridge::start_on(clock.clock(), |c| c.warm_pool = 1).await;
    pool_of(&t, 1).await;
    assert_eq!(t.ask("sleepy", "first").await, "first");
    let write = ["sh", "-c", "echo kept > /workspace/state.txt"];
    assert_eq!(t.exec("sleepy", &write).await.0, 0);
    clock.advance(t.config.idle_timeout());
    let stopped = eventually(REPLY_TIMEOUT, || async {
        t.box_running("sleepy").await == Some(false)
    })
    .await;
    assert!(stopped, "the idle box was not stopped");

    assert_eq!(t.ask("sleepy", "back").await, "back");
    // An ordinary box now, with its conversation's label, on the workspace it claimed.
    let boxes = t.bridge.router.sandbox().list().await.unwrap_or_default();
    let own = boxes
        .iter()
        .find(|b| b.conversation == Some(TestBridge::key("sleepy")))
        .unwrap_or_else(|| panic!("no labelled box: {boxes:?}"));
    assert!(!own.pool, "{own:?}");
    assert_eq!(own.workspace, claimed(&t, "sleepy"));
    let (code, out) = t.exec("sleepy", &["cat", "/workspace/state.txt"]).await;
    assert_eq!((code, out.trim()), (0, "kept"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_conversation_never_sees_the_first_ones_files() {
    let t = TestBridge::start(|c| c.warm_pool = 2).await;
    pool_of(&t, 2).await;
    assert_eq!(t.ask("first", "one").await, "one");
    let write = ["sh", "-c", "echo secret > /workspace/private.txt"];
    assert_eq!(t.exec("first", &write).await.0, 0);
    // Enough new conversations to use boxes started after the first one's claim too.
    for name in ["second", "third", "fourth"] {
        assert_eq!(t.ask(name, "hi").await, "hi");
        let (code, out) = t
            .exec(name, &["sh", "-c", "grep -rl secret /workspace; true"])
            .await;
        assert_eq!((code, out.trim()), (0, ""), "{name} sees another's files");
    }
    let volumes: BTreeSet<Option<String>> = ["first", "second", "third", "fourth"]
        .iter()
        .map(|name| claimed(&t, name))
        .collect();
    assert_eq!(volumes.len(), 4, "{volumes:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_boxes_count_against_max_boxes_and_give_their_slot_to_a_waiting_conversation() {
    let clock = ManualClock::new();
    let t = TestBridge::start_on(clock.clock(), |c| {
        c.max_boxes = Some(1);
        c.warm_pool = 2;
    })
    .await;
    let idle = t.config.idle_timeout();
    // One slot: the pool holds one box, not two.
    let warm = pool_of(&t, 1).await;
    assert_eq!(t.bridge.router.live_boxes(), 1);

    let mut a = t.watch("first");
    t.say("first", "one").await;
    assert_eq!(next_reply(&mut a).await, "one");
    assert!(warm.contains(&t.container("first").await));
    // The pool is empty and the slot taken: a second new conversation waits for the slot.
    let mut b = t.watch("second");
    t.say("second", "two").await;
    let waiting = eventually(REPLY_TIMEOUT, || async {
        t.state("second") == Some(ConversationState::WaitingForSlot)
    })
    .await;
    assert!(waiting, "the second did not queue for the slot");
    clock.advance(idle);
    assert_eq!(next_reply(&mut b).await, "two");
    assert_eq!(t.box_running("first").await, Some(false));

    // Once the second is idle too, the pool takes the free slot again ...
    clock.advance(idle);
    pool_of(&t, 1).await;
    assert_eq!(t.bridge.router.live_boxes(), 1);
    // ... and gives it up to a conversation that cannot take a warm box (it has a
    // workspace already).
    let mut a = t.watch("first");
    t.say("first", "back").await;
    assert_eq!(next_reply(&mut a).await, "back");
    assert_eq!(t.bridge.router.live_boxes(), 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclaimed_warm_boxes_are_replaced_after_a_while() {
    let clock = ManualClock::new();
    let t = TestBridge::start_on(clock.clock(), |c| c.warm_pool = 2).await;
    let before = pool_of(&t, 2).await;
    let old_volumes = volume_names(&t).await;
    clock.advance(RECYCLE_AFTER);
    // New boxes on new volumes (so a rebuilt image reaches the pool), and the old ones gone.
    let replaced = eventually(REPLY_TIMEOUT, || async {
        let now = unclaimed(&t).await;
        now.len() == 2 && now.is_disjoint(&before) && t.bridge.router.warm_boxes() == 2
    })
    .await;
    assert!(replaced, "the warm boxes were not replaced");
    let volumes = volume_names(&t).await;
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    assert!(volumes.is_disjoint(&old_volumes), "{volumes:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_pool_off_a_new_conversation_gets_a_box_of_its_own_as_before() {
    let t = TestBridge::start(|c| c.warm_pool = 0).await;
    assert_eq!(t.bridge.router.warm_boxes(), 0);
    assert_eq!(t.ask("plain", "hello").await, "hello");
    let boxes = t.bridge.router.sandbox().list().await.unwrap_or_default();
    assert_eq!(boxes.len(), 1, "{boxes:?}");
    assert_eq!(boxes[0].conversation, Some(TestBridge::key("plain")));
    assert!(!boxes[0].pool);
    let instance = t.bridge.router.sandbox().instance().to_string();
    let own = spec::volume_name(&instance, &TestBridge::key("plain"));
    assert_eq!(volume_names(&t).await, BTreeSet::from([own]));
    assert_eq!(claimed(&t, "plain"), None);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_leaves_no_warm_box_behind() {
    let t = TestBridge::start(|c| c.warm_pool = 2).await;
    let before = pool_of(&t, 2).await;
    // What a crash would leave: a warm box and volume the bridge no longer knows of.
    let sandbox = t.bridge.router.sandbox().clone();
    let stray = sandbox
        .create_warm_box()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (stray_box, stray_volume) = (stray.container().clone(), stray.volume.clone());
    drop(stray);
    let old_volumes = volume_names(&t).await;
    assert!(old_volumes.contains(&stray_volume));

    let t = t.restart().await;
    let after = pool_of(&t, 2).await;
    assert!(after.is_disjoint(&before), "{after:?} {before:?}");
    assert!(!after.contains(&stray_box));
    let volumes = volume_names(&t).await;
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    assert!(volumes.is_disjoint(&old_volumes), "{volumes:?}");

    // A clean stop takes the pool with it.
    let sandbox = t.bridge.router.sandbox().clone();
    t.bridge.shutdown().await;
    let left = sandbox.list().await.unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let left = sandbox.volumes().await.unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_with_a_model_of_its_own_gets_a_cold_box() {
    let own = TestBridge::key("special").to_string();
    let t = TestBridge::start(|c| {
        c.warm_pool = 2;
        let settings = ConversationSettings {
            model: Some("special-model".into()),
            harness: None,
        };
        c.conversations.insert(own, settings);
    })
    .await;
    let warm = pool_of(&t, 2).await;
    assert_eq!(t.ask("special", "hello").await, "hello");
    let container = t.container("special").await;
    assert!(!warm.contains(&container));
    assert_eq!(claimed(&t, "special"), None);
    // The pool is untouched, for conversations it suits.
    assert_eq!(unclaimed(&t).await, warm);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_and_status_know_a_claimed_workspace_for_its_conversations() {
    let t = TestBridge::start(|c| c.warm_pool = 2).await;
    pool_of(&t, 2).await;
    assert_eq!(t.ask("kept", "hello").await, "hello");
    let write = ["sh", "-c", "echo precious > /workspace/notes.txt"];
    assert_eq!(t.exec("kept", &write).await.0, 0);
    let volume = claimed(&t, "kept").unwrap_or_else(|| panic!("no claim stored"));
    let data = t.config.data_dir.clone();
    let sandbox = t.bridge.router.sandbox().clone();
    let _cleanup = support::Cleanup {
        instance: sandbox.instance().to_string(),
    };
    // Stopped as a daemon stops: the claimed box runs on, the unclaimed ones are gone.
    t.bridge.shutdown().await;

    let clawpen = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawpen"))
            .args(args)
            .env("CLAWPEN_DATA_DIR", &data)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("spawn clawpen: {e}"));
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = clawpen(&["status"]);
    assert!(status.contains("terminal:kept"), "{status}");
    let gc = clawpen(&["gc", "--yes"]);
    assert!(gc.contains("no orphans"), "{gc}");
    let volumes = sandbox.volumes().await.unwrap_or_default();
    assert!(volumes.iter().any(|v| v.name == volume), "{volumes:?}");
    let container = spec::container_name(sandbox.instance(), &TestBridge::key("kept"));
    let (code, out) = support::exec_in(
        sandbox.docker(),
        &container,
        &["cat", "/workspace/notes.txt"],
    )
    .await;
    assert_eq!((code, out.trim()), (0, "precious"));
    let _ = sandbox.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_cut_short_by_a_crash_keeps_the_workspace_and_no_stray_box() {
    let t = TestBridge::start(|c| c.warm_pool = 1).await;
    pool_of(&t, 1).await;
    // A claim stored, then the bridge gone before the box was renamed: the box runs on
    // under its pool name, its volume the conversation's.
    let sandbox = t.bridge.router.sandbox().clone();
    let warm = sandbox
        .create_warm_box()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (stray, volume) = (warm.container().clone(), warm.volume.clone());
    let key = TestBridge::key("cut");
    t.bridge
        .router
        .store()
        .claim_workspace(&key, &volume, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mark = ["sh", "-c", "echo claimed > /workspace/mark.txt"];
    let (code, _) = support::exec_in(sandbox.docker(), stray.as_str(), &mark).await;
    assert_eq!(code, 0);
    drop(warm);

    let t = t.restart().await;
    assert_eq!(t.ask("cut", "hello").await, "hello");
    // Its own box on the claimed volume; the one never renamed is gone.
    let boxes = t.bridge.router.sandbox().list().await.unwrap_or_default();
    assert!(boxes.iter().all(|b| b.id != stray), "{boxes:?}");
    let (code, out) = t.exec("cut", &["cat", "/workspace/mark.txt"]).await;
    assert_eq!((code, out.trim()), (0, "claimed"));
    t.stop().await;
}
