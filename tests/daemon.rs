//! The real `clawpen` binary: the daemon killed mid-turn and started again, stopped with
//! SIGTERM, and the `chat`, `status` and `doctor` commands.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clawpen::adapters::terminal::TerminalEvent;
use clawpen::control::{ChatLine, Request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

fn daemon(data: &std::path::Path) -> Child {
    daemon_with_delay(data, 300)
}

fn daemon_with_delay(data: &std::path::Path, echo_delay_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_clawpen"))
        .arg("run")
        .env("CLAWPEN_DATA_DIR", data)
        .env("CLAWPEN_ECHO_DELAY_MS", echo_delay_ms.to_string())
        .env("CLAWPEN_LOG", "clawpen=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn clawpen: {e}"))
}

/// Connect a chat client to the daemon's control socket, waiting for the daemon to start.
async fn connect(
    data: &std::path::Path,
) -> (
    tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    tokio::net::unix::OwnedWriteHalf,
) {
    let socket = data.join("control.sock");
    for _ in 0..300 {
        if let Ok(stream) = UnixStream::connect(&socket).await {
            let (read, mut write) = stream.into_split();
            let mut hello = serde_json::to_vec(&Request::Chat {
                conversation: "crash".into(),
            })
            .unwrap_or_default();
            hello.push(b'\n');
            write
                .write_all(&hello)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            return (BufReader::new(read).lines(), write);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the daemon did not open its control socket");
}

async fn next_event(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Option<TerminalEvent> {
    match tokio::time::timeout(support::REPLY_TIMEOUT, lines.next_line()).await {
        Ok(Ok(Some(line))) => serde_json::from_str(&line).ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_turn_then_restart_delivers_the_rest_exactly_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().to_path_buf();
    let mut first = daemon(&data);
    let (mut lines, mut write) = connect(&data).await;
    let text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen \
                fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two";
    say(&mut write, text).await;

    // Watch the reply start, then kill the daemon in the middle of it.
    let mut before = Vec::new();
    while before.len() < 3 {
        match next_event(&mut lines).await {
            Some(event @ (TerminalEvent::Send { .. } | TerminalEvent::Edit { .. })) => {
                before.push(event)
            }
            Some(TerminalEvent::Finished) => panic!("the turn finished before the kill"),
            Some(_) => {}
            None => panic!("the reply did not start"),
        }
    }
    first.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = first.wait();
    let seen_before = support::final_text(&before);
    assert!(
        seen_before.len() < text.len(),
        "killed too late: {seen_before}"
    );

    let mut second = daemon(&data);
    let (mut lines, _write) = connect(&data).await;
    let mut after = Vec::new();
    loop {
        match next_event(&mut lines).await {
            Some(TerminalEvent::Finished) => break,
            Some(event) => after.push(event),
            None => panic!("no end of the reply after restart; saw {after:?}"),
        }
    }
    let _ = second.kill();
    let _ = second.wait();

    // The reply continued in the same message: no second message was sent for it.
    let first_id = match &before[0] {
        TerminalEvent::Send { id, .. } => id.clone(),
        other => panic!("the reply began with {other:?}"),
    };
    for event in &after {
        if let TerminalEvent::Send { id, text: t } = event {
            panic!("a new message {id} ({t:?}) was sent after the restart");
        }
    }
    let last = after
        .iter()
        .rev()
        .find_map(|e| match e {
            TerminalEvent::Edit { id, text } if *id == first_id => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no edit of {first_id} after restart: {after:?}"));
    assert_eq!(last, text, "the visible reply is the whole echo, once");

    remove_boxes(&data).await;
}

/// Run `clawpen ARGS` on a data directory with `input` on stdin; returns (success, stdout).
fn clawpen(data: &std::path::Path, args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_clawpen"))
        .args(args)
        .env("CLAWPEN_DATA_DIR", data)
        .env("CLAWPEN_ECHO_DELAY_MS", "5")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn clawpen: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The sandbox of a data directory's instance (its daemon stopped, so the store is free).
async fn sandbox_of(data: &std::path::Path) -> clawpen::sandbox::Sandbox {
    let store = clawpen::store::Store::open(&data.join("store")).unwrap_or_else(|e| panic!("{e}"));
    let config = support::test_config(data);
    clawpen::sandbox::Sandbox::connect(&config, &store.instance_id())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Remove the boxes a data directory's instance left behind.
async fn remove_boxes(data: &std::path::Path) {
    let _ = sandbox_of(data).await.remove_all().await;
}

/// Send a chat line over a control connection.
async fn say(write: &mut tokio::net::unix::OwnedWriteHalf, text: &str) {
    let mut line = serde_json::to_vec(&ChatLine { text: text.into() }).unwrap_or_default();
    line.push(b'\n');
    write
        .write_all(&line)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_on_a_pipe_prints_each_complete_reply_in_process_and_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().to_path_buf();
    // No daemon: in-process.
    let (ok, out) = clawpen(
        &data,
        &["chat", "-c", "script"],
        "first line\nsecond line\n",
    );
    assert!(ok);
    assert_eq!(out, "first line\nsecond line\n");

    // With a daemon: through its control socket; status reports the conversation.
    let mut running = daemon_with_delay(&data, 5);
    let _ = connect(&data).await;
    let (ok, out) = clawpen(&data, &["chat", "-c", "script"], "third\n");
    assert!(ok);
    assert_eq!(out, "third\n");
    let (ok, status) = clawpen(&data, &["status"], "");
    assert!(ok);
    assert!(status.contains("daemon: running"), "{status}");
    assert!(status.contains("terminal:script"), "{status}");
    // The warm pool (on by default) and the queue for a box, empty here.
    assert!(status.contains("; pool 2)"), "{status}");
    assert!(
        status.contains("waiting for a box: 0 for a slot, 0 for the engine"),
        "{status}"
    );
    let (ok, doctor) = clawpen(&data, &["doctor"], "");
    assert!(ok, "{doctor}");
    assert!(
        doctor.contains("store: owned by the running daemon"),
        "{doctor}"
    );
    assert!(
        doctor.contains("image:") && !doctor.contains("FAIL"),
        "{doctor}"
    );
    let _ = running.kill();
    let _ = running.wait();
    remove_boxes(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_commands_are_answered_by_the_bridge_in_process_and_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().to_path_buf();
    // No `max_boxes` set: the cap is what the engine's machine holds.
    let cap = sandbox_of(&data).await.capacity().await.boxes;
    let no_box = format!(
        "This conversation: no box running; it starts with your next message. \
         0 of {cap} boxes live."
    );
    // No daemon: in-process. A pipe waits for each answer before the next line.
    let (ok, out) = clawpen(&data, &["chat", "-c", "cmds"], "/help\n/status\n");
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("I am an AI agent"), "{out}");
    assert!(lines.contains(&"/stop — stop the current answer"), "{out}");
    assert_eq!(lines.last().copied(), Some(no_box.as_str()), "{out}");

    // Through the daemon's control socket: the same answers, and messages still reach the
    // agent between them.
    let mut running = daemon_with_delay(&data, 5);
    let _ = connect(&data).await;
    let (ok, out) = clawpen(&data, &["chat", "-c", "cmds"], "/status\nhello\n/stop\n");
    assert!(ok);
    assert_eq!(out, format!("{no_box}\nhello\n⏹ Stop requested.\n"));
    let _ = running.kill();
    let _ = running.wait();
    remove_boxes(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_turn_finish_and_leaves_the_box_for_next_time() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().to_path_buf();
    let mut running = daemon_with_delay(&data, 100);
    let (mut lines, mut write) = connect(&data).await;
    let text = "a reply that is still streaming when the daemon is asked to stop";
    say(&mut write, text).await;
    let mut events = Vec::new();
    match next_event(&mut lines).await {
        Some(event @ TerminalEvent::Send { .. }) => events.push(event),
        other => panic!("the reply did not start: {other:?}"),
    }
    let pid = running.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .map(|s| s.success());
    assert_eq!(killed.ok(), Some(true));
    loop {
        match next_event(&mut lines).await {
            Some(TerminalEvent::Finished) => break,
            Some(event) => events.push(event),
            None => panic!("the turn did not finish before shutdown: {events:?}"),
        }
    }
    assert_eq!(support::final_text(&events), text);
    let status = running.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status:?}");
    // The box was left running for the next start to re-adopt.
    let sandbox = sandbox_of(&data).await;
    let boxes = sandbox.list().await.unwrap_or_default();
    assert_eq!(boxes.len(), 1);
    assert!(boxes[0].running);
    let _ = sandbox.remove_all().await;
}
