//! What a start does with boxes the store cannot place, and `clawpen gc`: a workspace is
//! never deleted unless the operator asks for it. The real binary, real sled and the real
//! Docker engine.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use clawpen::adapters::ConversationKey;
use clawpen::sandbox::{spec, Sandbox};
use clawpen::store::Store;
use support::{exec_in, test_config, Cleanup};

/// What `clawpen ARGS` did on a data directory.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn clawpen(data: &Path, args: &[&str]) -> Ran {
    let out = Command::new(env!("CARGO_BIN_EXE_clawpen"))
        .args(args)
        .env("CLAWPEN_DATA_DIR", data)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn clawpen: {e}"));
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A data directory's instance id (its store made on the way), and the sandbox of it with
/// the box image ready.
async fn instance_of(data: &Path) -> (String, Sandbox) {
    let instance = Store::open(&data.join("store"))
        .unwrap_or_else(|e| panic!("{e}"))
        .instance_id();
    let config = test_config(data);
    let sandbox = Sandbox::connect(&config, &instance)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sandbox
        .ensure_image(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (instance, sandbox)
}

/// Gives `conversation` a running box with a file in its workspace, as its agent would
/// have left it; returns the container id.
async fn box_with_notes(sandbox: &Sandbox, conversation: &ConversationKey) -> String {
    let started = sandbox
        .ensure_box(conversation)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, out) = exec_in(
        sandbox.docker(),
        started.container.as_str(),
        &["sh", "-c", "echo precious notes > /workspace/notes.txt"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    started.container.to_string()
}

/// The notes file of a conversation's workspace, read in its box (started if needed).
async fn notes(sandbox: &Sandbox, conversation: &ConversationKey) -> String {
    let started = sandbox
        .ensure_box(conversation)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, out) = exec_in(
        sandbox.docker(),
        started.container.as_str(),
        &["cat", "/workspace/notes.txt"],
    )
    .await;
    out
}

async fn volume_names(sandbox: &Sandbox) -> Vec<String> {
    let volumes = sandbox.volumes().await.unwrap_or_else(|e| panic!("{e}"));
    volumes.into_iter().map(|v| v.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_of_an_unknown_conversation_is_stopped_and_kept_until_gc_yes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("data");
    let (instance, sandbox) = instance_of(&data).await;
    let _cleanup = Cleanup {
        instance: instance.clone(),
    };
    // A box of this instance whose conversation the store never heard of (its record lost).
    let stray = ConversationKey::new("terminal", "stray");
    let box_name = spec::container_name(&instance, &stray);
    let volume = spec::volume_name(&instance, &stray);
    box_with_notes(&sandbox, &stray).await;

    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{e}"));
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_clawpen"))
        .arg("run")
        .env("CLAWPEN_DATA_DIR", &data)
        // The boxes are counted below; warm pool boxes would be among them
        // (tests/pool.rs covers what a start does with those).
        .env("CLAWPEN_WARM_POOL", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn clawpen: {e}"));
    // Recovery is done before the control socket answers.
    let socket = data.join("control.sock");
    let up = support::eventually(Duration::from_secs(60), || async {
        clawpen::control::query_status(&socket).await.is_some()
    })
    .await;
    assert!(up, "the daemon did not start");

    // Stopped, not removed, and its workspace kept.
    let boxes = sandbox.list().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(boxes.len(), 1, "{boxes:?}");
    assert_eq!(boxes[0].name, box_name);
    assert!(!boxes[0].running, "the stray box still runs");
    assert_eq!(volume_names(&sandbox).await, std::slice::from_ref(&volume));

    // gc does not run beside the store's owner.
    let refused = clawpen(&data, &["gc", "--yes"]);
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("daemon is running"),
        "{}",
        refused.stderr
    );
    assert_eq!(volume_names(&sandbox).await, std::slice::from_ref(&volume));

    let pid = daemon.id().to_string();
    let signalled = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(signalled.is_ok_and(|s| s.success()));
    let _ = daemon.wait();
    let logged = std::fs::read_to_string(&log_path).unwrap_or_default();
    let line = logged
        .lines()
        .find(|l| l.contains(&box_name))
        .unwrap_or_else(|| panic!("the stray box is not named in the log:\n{logged}"));
    assert!(line.contains("clawpen gc"), "{line}");

    // A dry run lists the box and its volume and removes nothing.
    let listed = clawpen(&data, &["gc"]);
    assert!(listed.ok, "{}", listed.stderr);
    assert!(listed.stdout.contains(&box_name), "{}", listed.stdout);
    assert!(listed.stdout.contains(&volume), "{}", listed.stdout);
    assert!(listed.stdout.contains("--yes"), "{}", listed.stdout);
    assert_eq!(notes(&sandbox, &stray).await, "precious notes\n");

    let removed = clawpen(&data, &["gc", "--yes"]);
    assert!(removed.ok, "{}", removed.stderr);
    assert!(
        removed.stdout.contains(&format!("removed volume {volume}")),
        "{}",
        removed.stdout
    );
    assert!(sandbox
        .list()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
    assert!(volume_names(&sandbox).await.is_empty());
    let again = clawpen(&data, &["gc"]);
    assert!(again.stdout.contains("no orphans"), "{}", again.stdout);
}

/// Overwrites the stored record of `conversation` with bytes that do not decode, straight
/// through sled, as disk damage or a bad migration would leave it.
fn damage_record(store_dir: &Path, conversation: &ConversationKey) {
    // The store just closed in this process may hold its lock a moment longer.
    let mut tries = 0;
    let db = loop {
        match sled::Config::new().path(store_dir).open() {
            Ok(db) => break db,
            Err(e) if tries < 60 => {
                tries += 1;
                eprintln!("waiting for the store lock: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let tree = db
        .open_tree("conversations")
        .unwrap_or_else(|e| panic!("{e}"));
    tree.insert(conversation.to_string().as_bytes(), &b"{\"key\": 7"[..])
        .unwrap_or_else(|e| panic!("{e}"));
    db.flush().unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_conversation_record_does_not_cost_its_workspace() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().to_path_buf();
    let config = test_config(&data);
    let (instance, sandbox) = instance_of(&data).await;
    let _cleanup = Cleanup {
        instance: instance.clone(),
    };
    let key = ConversationKey::new("terminal", "precious");
    box_with_notes(&sandbox, &key).await;
    damage_record(&config.store_dir(), &key);

    let bridge = clawpen::daemon::Bridge::start(&config, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("bridge start: {e}"));
    bridge.shutdown().await;
    assert_eq!(
        volume_names(&sandbox).await,
        [spec::volume_name(&instance, &key)]
    );
    assert_eq!(notes(&sandbox, &key).await, "precious notes\n");
    // Its conversation is known, so it is no orphan either.
    let listed = clawpen(&data, &["gc"]);
    assert!(listed.ok, "{}", listed.stderr);
    assert!(listed.stdout.contains("no orphans"), "{}", listed.stdout);
}
