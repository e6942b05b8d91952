//! What an operator sees: JSON logs from the real binary, and the metrics endpoint scraped
//! over HTTP while a conversation runs.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use clawpen::metrics::{AdapterLiveness, Metered, Metrics, Readiness};
use support::TestBridge;

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

/// GET `path` from the metrics endpoint: (status, content type, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.text().await.unwrap_or_default();
    (status, kind, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_counts_warm_boxes_and_their_claims() {
    let t = TestBridge::start(|c| {
        c.metrics.listen = "127.0.0.1:0".parse().ok();
        c.warm_pool = 2;
    })
    .await;
    let addr = t
        .bridge
        .metrics_addr()
        .unwrap_or_else(|| panic!("no metrics endpoint"));
    let full = || async { t.bridge.router.warm_boxes() == 2 };
    assert!(support::eventually(support::REPLY_TIMEOUT, full).await);
    assert_eq!(t.ask("pooled-chat", "count me").await, "count me");
    // Refilled behind the claim: three created for the pool, one claimed, none cold.
    assert!(support::eventually(support::REPLY_TIMEOUT, full).await);
    let (status, _, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    for line in [
        "clawpen_box_starts_total{kind=\"warm\"} 1",
        "clawpen_box_starts_total{kind=\"pooled\"} 3",
        "clawpen_warm_boxes 2",
        "clawpen_box_starts_waiting 0",
        "clawpen_live_boxes 3",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(!text.contains("kind=\"cold\""), "{text}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_counts_a_conversation_and_reports_readiness() {
    let t = TestBridge::start(|c| {
        c.metrics.listen = "127.0.0.1:0".parse().ok();
    })
    .await;
    let addr = t
        .bridge
        .metrics_addr()
        .unwrap_or_else(|| panic!("no metrics endpoint"));
    assert_eq!(t.ask("metrics-chat", "count me").await, "count me");

    let (status, kind, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    for line in [
        "clawpen_inbound_messages_total{platform=\"terminal\"} 1",
        "clawpen_turns_started_total{platform=\"terminal\"} 1",
        "clawpen_turns_finished_total{platform=\"terminal\"} 1",
        "clawpen_box_starts_total{kind=\"cold\"} 1",
        "clawpen_first_reply_seconds_count 1",
        "clawpen_turn_duration_seconds_count 1",
        "clawpen_live_boxes 1",
        "clawpen_queued_conversations 0",
        "clawpen_store_write_seconds_count{write=\"inbound\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(
        !text.contains("metrics-chat"),
        "a conversation named in a label:\n{text}"
    );

    let (status, _, body) = get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, kind, body) = get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(kind, "application/json");
    let report: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(report["ready"], true, "{body}");
    assert_eq!(report["store"], "ok", "{body}");
    assert_eq!(report["engine"], "ok", "{body}");
    let (status, _, _) = get(addr, "/nothing").await;
    assert_eq!(status, 404);

    // An adapter whose receiving task ended makes the bridge not ready, and says which.
    let terminal: std::sync::Arc<dyn clawpen::adapters::Adapter> = t.bridge.terminal.clone();
    let liveness = AdapterLiveness::new(Metered::new(terminal, Metrics::off()));
    liveness.ended("the platform closed the connection".into());
    let readiness = Readiness {
        store: t.bridge.router.store().clone(),
        sandbox: t.bridge.router.sandbox().clone(),
        adapters: vec![("terminal".into(), liveness)],
    };
    let report = readiness.check().await;
    assert!(!report.ready);
    assert_eq!(report.store, "ok");
    assert_eq!(
        report.adapters.get("terminal").map(String::as_str),
        Some("stopped receiving: the platform closed the connection")
    );
    t.stop().await;
}
