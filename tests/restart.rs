//! The real `clawpen` daemon, killed with SIGKILL mid-turn and started again.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clawpen::adapters::terminal::TerminalEvent;
use clawpen::control::{ChatLine, Request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

fn daemon(data: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_clawpen"))
        .arg("run")
        .env("CLAWPEN_DATA_DIR", data)
        .env("CLAWPEN_ECHO_DELAY_MS", "300")
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
    let mut line = serde_json::to_vec(&ChatLine { text: text.into() }).unwrap_or_default();
    line.push(b'\n');
    write
        .write_all(&line)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

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

    // Clean up the boxes this daemon's instance left.
    let store = clawpen::store::Store::open(&data.join("store")).unwrap_or_else(|e| panic!("{e}"));
    let config = support::test_config(&data);
    let sandbox = clawpen::sandbox::Sandbox::connect(&config, &store.instance_id())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = sandbox.remove_all().await;
}
