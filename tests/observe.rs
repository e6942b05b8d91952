//! What an operator sees: JSON logs from the real binary.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

/// Keys that must never appear in a log line.
const SECRETS: [&str; 2] = ["sk-ant-observe-secret-4242", "123456:observe-bot-token"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_conversation_and_no_secret() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_clawpen"))
        .args(["chat", "-c", "json-logs"])
        .env("CLAWPEN_DATA_DIR", dir.path())
        .env("CLAWPEN_ECHO_DELAY_MS", "5")
        .env("CLAWPEN_LOG_FORMAT", "json")
        .env("CLAWPEN_LOG", "clawpen=debug")
        .env("ANTHROPIC_API_KEY", SECRETS[0])
        .env("TELEGRAM_BOT_TOKEN", SECRETS[1])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn clawpen: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(b"hello from the log test\n")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let instance = clawpen::store::Store::open(&dir.path().join("store"))
        .map(|store| store.instance_id())
        .unwrap_or_default();
    let _cleanup = support::Cleanup { instance };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "hello from the log test", "{stderr}");

    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(!lines.is_empty(), "no log line at debug level");
    for line in &lines {
        assert!(line.is_object(), "{line}");
        assert!(line.get("level").is_some() && line.get("timestamp").is_some());
    }
    // The conversation's actor logs inside a span naming its conversation and platform.
    let in_conversation = lines.iter().find(|line| {
        line["spans"].as_array().is_some_and(|spans| {
            spans.iter().any(|span| {
                span["conversation"] == "terminal:json-logs" && span["platform"] == "terminal"
            })
        })
    });
    assert!(
        in_conversation.is_some(),
        "no line in the conversation's span:\n{stderr}"
    );
    for secret in SECRETS {
        assert!(!stderr.contains(secret), "a secret was logged:\n{stderr}");
    }
}
