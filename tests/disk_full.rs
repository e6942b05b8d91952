//! A full disk under the store, for real: a small tmpfs filled to the last byte. While it
//! is full no message is reported stored (so no platform is told it was), the store says
//! it is in trouble, and once space returns it writes again by itself, losing nothing.
//!
//! Mounting needs root, as CI runs; elsewhere the test fails saying so.

mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clawpen::adapters::{ConversationKey, Inbound};
use clawpen::store::{InsertOutcome, Store};
use support::{eventually, Cleanup};
use telegram_fake::{FakeTelegram, TOKEN};

/// A tmpfs mounted for the test, unmounted when dropped (also when the test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap_or_else(|e| panic!("mount: {e}"));
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill it, which needs root (CI runs as root)"
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn message(id: usize) -> Inbound {
    Inbound {
        id: id.to_string(),
        conversation: ConversationKey::new("telegram", "1"),
        sender_id: "42".into(),
        sender_name: "Ada".into(),
        text: format!("message {id}: {}", "x".repeat(2000)),
        attachments: Vec::new(),
        reply_to: None,
        addressed: true,
        at: 1,
    }
}

/// Writes zeros to `path` until the filesystem refuses.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap_or_else(|e| panic!("filler: {e}"));
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).and_then(|_| file.sync_all()).is_ok() {}
    // The last bytes: smaller writes until not even one fits.
    while file.write_all(&[0u8]).and_then(|_| file.sync_all()).is_ok() {}
}

#[test]
fn a_full_disk_refuses_messages_then_recovers_by_itself_losing_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let _mount = Tmpfs::mount(dir.path(), "12m");
    let store_dir = dir.path().join("store");
    let store = Store::open(&store_dir).unwrap_or_else(|e| panic!("open: {e}"));
    let first = store.insert_inbound(&message(0));
    assert!(matches!(first, Ok(InsertOutcome::New)), "{first:?}");
    assert_eq!(store.trouble(), None);

    fill(&dir.path().join("filler"));
    // Messages arrive while the disk is full: none may be reported stored.
    let mut refused = None;
    for id in 1..200 {
        match store.insert_inbound(&message(id)) {
            Ok(_) => {} // sled still had room in space it had claimed before
            Err(_) => {
                refused = Some(id);
                break;
            }
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("the full disk never refused a write"));
    let trouble = store.trouble().unwrap_or_default();
    assert!(trouble.contains("has failed"), "{trouble:?}");
    // Asked again, the refused message is still refused: it must never pass for stored
    // (a platform would then forget it) while it is not on disk.
    for _ in 0..20 {
        let again = store.insert_inbound(&message(refused));
        assert!(again.is_err(), "reported stored on a full disk: {again:?}");
    }

    // Space returns: the store writes again by itself, within its backoff.
    std::fs::remove_file(dir.path().join("filler")).unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let outcome = loop {
        match store.insert_inbound(&message(refused)) {
            Ok(outcome) => break outcome,
            Err(e) if std::time::Instant::now() < deadline => {
                // The store opens again at its own pace; ask again shortly.
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the store never recovered: {e}"),
        }
    };
    assert!(
        matches!(outcome, InsertOutcome::New | InsertOutcome::Duplicate),
        "{outcome:?}"
    );
    assert_eq!(
        store.trouble(),
        None,
        "recovered, yet still reported in trouble"
    );

    // What was reported stored, and the refused message now, are on disk.
    drop(store);
    let store = Store::open(&store_dir).unwrap_or_else(|e| panic!("reopen: {e}"));
    let ids: Vec<String> = store
        .pending_inbound(&ConversationKey::new("telegram", "1"))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|m| m.inbound.id)
        .collect();
    let expected: Vec<String> = (0..=refused).map(|id| id.to_string()).collect();
    assert_eq!(ids, expected);
}

/// `clawpen status` of the daemon on `data`.
fn status(data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_clawpen"))
        .arg("status")
        .env("CLAWPEN_DATA_DIR", data)
        .output()
        .unwrap_or_else(|e| panic!("status: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_waits_out_a_full_disk_says_so_and_then_answers_everything_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    let _mount = Tmpfs::mount(&data, "32m");
    let _cleanup = Cleanup {
        instance: Store::open(&data.join("store"))
            .unwrap_or_else(|e| panic!("{e}"))
            .instance_id(),
    };
    let fake = FakeTelegram::start().await;
    let chats: Vec<i64> = (1..=4).map(|n| -900 - n).collect();
    let allowed: Vec<String> = chats.iter().map(ToString::to_string).collect();
    // The log goes beside the tmpfs, where there is room to count its lines.
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{e}"));
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_clawpen"))
        .arg("run")
        .env_remove("CLAWPEN_CONFIG")
        .env("CLAWPEN_DATA_DIR", &data)
        .env("CLAWPEN_ECHO_DELAY_MS", "5")
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_API_URL", fake.url())
        .env("CLAWPEN_TELEGRAM_ALLOWED_CHATS", allowed.join(","))
        .env("CLAWPEN_LOG", "clawpen=info,clawpen_adapters=info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn clawpen: {e}"));
    let answered = |chat: i64, text: &str| {
        fake.messages(chat)
            .iter()
            .filter(|m| m.text == text)
            .count()
    };

    fake.send(fake.message(chats[0], 101, "@ClawBot before the disk filled"));
    let ok = eventually(support::REPLY_TIMEOUT, || async {
        answered(chats[0], "before the disk filled") == 1
    })
    .await;
    assert!(
        ok,
        "no answer before the disk filled: {:#?}",
        fake.messages(chats[0])
    );

    fill(&data.join("filler"));
    let full_since = std::time::Instant::now();
    // Keep every chat talking, one long message at a time, until the store runs out of the
    // room sled had claimed before the disk filled and the daemon says it is degraded.
    let mut asked: Vec<Vec<String>> = vec![Vec::new(); chats.len()];
    let long = "word ".repeat(600);
    let mut degraded = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !degraded && std::time::Instant::now() < deadline {
        for (n, chat) in chats.iter().enumerate() {
            let idle = asked[n].last().is_none_or(|text| answered(*chat, text) > 0);
            if idle {
                let text = format!("episode {n}.{} {}", asked[n].len(), long.trim_end());
                fake.send(fake.message(*chat, 101, &format!("@ClawBot {text}")));
                asked[n].push(text);
            }
        }
        degraded = status(&data).contains("degraded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        degraded,
        "the daemon never said degraded: {}",
        status(&data)
    );
    // Messages that arrive during the episode.
    for (n, chat) in chats.iter().enumerate() {
        let text = format!("during the episode {n}");
        fake.send(fake.message(*chat, 101, &format!("@ClawBot {text}")));
        asked[n].push(text);
    }

    std::fs::remove_file(data.join("filler")).unwrap_or_else(|e| panic!("{e}"));
    let full_for = full_since.elapsed();
    // Every message is answered; a message sent while its chat's turn ran is answered in
    // that turn's reply, so look for each text in the chat's replies.
    let shown = |chat: i64, text: &str| {
        fake.messages(chat)
            .iter()
            .filter(|m| m.text.split("\n\n").any(|part| part == text))
            .count()
    };
    let all = eventually(Duration::from_secs(120), || async {
        chats
            .iter()
            .enumerate()
            .all(|(n, chat)| asked[n].iter().all(|text| shown(*chat, text) >= 1))
    })
    .await;
    let recovered = eventually(Duration::from_secs(60), || async {
        !status(&data).contains("degraded")
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    for (n, chat) in chats.iter().enumerate() {
        for text in &asked[n] {
            let seen = shown(*chat, text);
            if !(all && seen > 0) {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                let texts: Vec<String> = fake
                    .messages(*chat)
                    .iter()
                    .map(|m| format!("{:.60}… ({} chars)", m.text, m.text.len()))
                    .collect();
                panic!(
                    "chat {chat} never answered {text:.40}…; it shows {texts:#?}; log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            assert_eq!(seen, 1, "chat {chat} answered {:.40} {seen} times", text);
        }
    }
    assert!(
        recovered,
        "still degraded after space returned: {}",
        status(&data)
    );
    // A count, not a flood: a few lines per second of the episode at most.
    let lines = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .count();
    let bound = 50 + 5 * full_for.as_secs() as usize;
    assert!(
        lines < bound,
        "{lines} log lines for a {full_for:?} episode (bound {bound})"
    );
}
