//! A box that misbehaves wrecks only itself: it gets a few requests in flight, a bounded
//! reply, no slot it does not use, no endless turn, and it cannot talk the bridge into an
//! unknown protocol. The hostile box is code running as the box's user that writes raw
//! protocol lines to the agent's stdout (`/proc/1/fd/1`), as any program in a box can;
//! each test checks that another conversation stays served.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clawpen::adapters::terminal::TerminalEvent;
use clawpen::config::Config;
use clawpen::router::ConversationState;
use serde_json::json;
use support::model::{FakeModel, Reply};
use support::{eventually, lines, next_reply_events, TestBridge};
use tokio::net::TcpListener;

/// A web server that accepts connections and never answers, counting them.
struct SilentServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl SilentServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        Self { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Writes `lines` to the box's agent's stdout, from a shell in the box.
async fn inject(t: &TestBridge, name: &str, lines: &[String]) {
    let script = format!("cat > /proc/1/fd/1 <<'EOF'\n{}\nEOF", lines.join("\n"));
    let (code, out) = t.exec(name, &["sh", "-c", &script]).await;
    assert_eq!(code, 0, "the hostile writer failed: {out}");
}

/// The bridge's resident memory, in MiB (the bridge runs in this test process).
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_fetches_at_once_get_four_connections_and_the_others_are_served() {
    let server = SilentServer::start().await;
    let t = TestBridge::start(|c: &mut Config| {
        c.web_fetch_allow = vec![format!("127.0.0.1:{}", server.port)];
        c.web_fetch_timeout_secs = 120;
    })
    .await;
    assert_eq!(t.ask("greedy", "hello").await, "hello");
    let before = rss_mib();
    let lines: Vec<String> = (0..300)
        .map(|id| {
            json!({
                "type": "request",
                "id": 1_000_000 + id,
                "request": {"kind": "web_fetch", "url": format!("http://127.0.0.1:{}/{id}", server.port)},
            })
            .to_string()
        })
        .collect();
    inject(&t, "greedy", &lines).await;
    assert!(
        eventually(Duration::from_secs(30), || async { server.accepted() >= 4 }).await,
        "the fetches never reached the server"
    );
    // Another conversation is served meanwhile, and its answer is the clock: by then the
    // greedy box's lines were read long ago.
    assert_eq!(t.ask("other", "still here?").await, "still here?");
    assert_eq!(
        server.accepted(),
        4,
        "one box opened more connections than its requests in flight"
    );
    assert_eq!(t.requests_in_flight("greedy"), 4);
    let grown = rss_mib().saturating_sub(before);
    assert!(grown < 64, "the bridge grew by {grown} MiB");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_writes_while_idle_gives_up_its_slot() {
    let t = TestBridge::start(|c| {
        c.max_boxes = Some(1);
        c.idle_timeout_secs = 2;
    })
    .await;
    assert_eq!(t.ask("chatty", "hello").await, "hello");
    // A heartbeat every 100 ms from a process that lives on in the box.
    let (code, out) = t
        .exec(
            "chatty",
            &[
                "sh",
                "-c",
                "(while true; do echo '{\"type\":\"heartbeat\"}' > /proc/1/fd/1; sleep 0.1; done) \
                 >/dev/null 2>&1 &",
            ],
        )
        .await;
    assert_eq!(code, 0, "{out}");
    // The only slot is the chatty box's until it counts as idle.
    assert_eq!(t.ask("waiting", "my turn?").await, "my turn?");
    assert_eq!(t.box_running("chatty").await, Some(false));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_ends_at_its_cap_on_duration_however_lively_its_box() {
    let t = TestBridge::start(|c| {
        c.max_turn_secs = 3;
        // Half a second per word: the answer would stream for 30 s.
        c.echo_delay_ms = 500;
    })
    .await;
    let mut events = t.watch("long");
    t.say("long", &"word ".repeat(60)).await;
    let reply = support::final_text(&next_reply_events(&mut events).await);
    assert!(
        reply.contains("ran for 3 s, the most a turn may"),
        "{reply}"
    );
    assert_eq!(t.ask("other", "quick").await, "quick");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_stops_at_its_caps_with_a_note_and_a_flood_stops_the_box() {
    let model = FakeModel::start().await;
    let t = TestBridge::start(|c| {
        model.serve(c);
        c.max_reply_kb = 8;
        c.max_reply_messages = 3;
    })
    .await;

    // Too long an answer: cut at 8 KB, with a word.
    model.push_reply(Reply::text(&"lorem ipsum ".repeat(1500)).in_pieces_of(500));
    let mut events = t.watch("big");
    t.say("big", "write a lot").await;
    let reply = support::final_text(&next_reply_events(&mut events).await);
    assert!(
        reply.contains("reached its limit of 8 KB"),
        "{}",
        tail(&reply)
    );
    assert!(reply.len() < 9 * 1024, "{} bytes shown", reply.len());

    // Too many separate messages: three, then the note, then the answer.
    let calls = (0..10)
        .map(|n| ("send_message", json!({"text": format!("note {n}")})))
        .collect();
    model.push_reply(Reply::tool_calls(calls));
    model.push_reply(Reply::text("done"));
    let mut events = t.watch("chatty");
    t.say("chatty", "tell me in many messages").await;
    let seen = next_reply_events(&mut events).await;
    let sent: Vec<&str> = seen
        .iter()
        .filter_map(|e| match e {
            TerminalEvent::Send { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .filter(|text| text.starts_with("note") || text.contains("separate messages"))
        .collect();
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(sent[3].contains("3 separate messages"), "{sent:?}");

    // An answer far past the cap is a flood: the box is stopped, the chat told.
    model.push_reply(Reply::text(&"flood ".repeat(20_000)).in_pieces_of(1000));
    let mut events = t.watch("big");
    t.say("big", "again, more").await;
    let reply = support::final_text(&next_reply_events(&mut events).await);
    assert!(
        reply.contains("kept writing past the reply limit of 8 KB"),
        "{}",
        tail(&reply)
    );
    assert_eq!(t.box_running("big").await, Some(false));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_an_unknown_protocol_version_is_refused_and_replaced() {
    let t = TestBridge::start(|_| {}).await;
    assert_eq!(t.ask("odd", "hello").await, "hello");
    let first = t.container("odd").await;
    let ready = json!({"type": "ready", "version": 999, "provider": "echo"}).to_string();
    inject(&t, "odd", &[ready]).await;
    let docker = t.bridge.router.sandbox().docker().clone();
    let removed = eventually(Duration::from_secs(30), || async {
        docker
            .inspect_container(first.as_str(), None)
            .await
            .is_err()
    })
    .await;
    assert!(removed, "the box that spoke version 999 is still there");
    // The next message starts a box from the current image.
    assert_eq!(t.ask("odd", "again").await, "again");
    assert_ne!(t.container("odd").await, first);
    assert_ne!(t.state("odd"), Some(ConversationState::Stopped));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_writing_garbage_gets_one_warning_a_minute_not_one_a_line() {
    support::logs::logs();
    let t = TestBridge::start(|_| {}).await;
    assert_eq!(t.ask("garbage", "hello").await, "hello");
    let lines: Vec<String> = (0..2_000).map(|n| format!("not protocol {n}")).collect();
    inject(&t, "garbage", &lines).await;
    // The box's answer comes after its garbage in the same stream: by then all of it was
    // read and answered.
    assert_eq!(t.ask("garbage", "ping").await, "ping");
    let key = TestBridge::key("garbage").to_string();
    let warnings = support::logs::logged()
        .lines()
        .filter(|l| l.contains("malformed line from the box") && l.contains(&key))
        .count();
    assert_eq!(warnings, 1, "{warnings} warnings for 2,000 malformed lines");
    t.stop().await;
}

/// Arbitrary protocol lines from a box, mostly near real ones and during a turn, go through
/// the real bridge: the conversation and another one are served afterwards. The suite
/// writes 3,000 lines; `CLAWPEN_FUZZ_BOX_LINES` writes more, `CLAWPEN_FUZZ_SEED` repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_arbitrary_lines_from_a_box_leave_the_bridge_serving() {
    let count = lines::env_number("CLAWPEN_FUZZ_BOX_LINES").unwrap_or(3_000);
    let seed = lines::seed();
    let t = TestBridge::start(|c| {
        // A turn streams for a while, so the lines meet one running.
        c.echo_delay_ms = 50;
        c.web_fetch_timeout_secs = 2;
        // A box that lies about its events wrecks its own turn at most: this ends it.
        c.max_turn_secs = 20;
    })
    .await;
    assert_eq!(t.ask("noisy", "hello").await, "hello");
    let mut events = t.watch("noisy");
    t.say("noisy", &"word ".repeat(200)).await;
    let mut rng = lines::Rng(seed);
    let templates = lines::templates("t1", true);
    let mut container = t.container("noisy").await;
    let mut replaced = 0;
    let mut written = 0;
    while written < count {
        // In batches through a file in the workspace: lines may hold any byte.
        let mut batch = Vec::new();
        for _ in 0..count.min(written + 1_000) - written {
            batch.extend(lines::arbitrary_line(&mut rng, &templates, true));
            batch.push(b'\n');
        }
        written = count.min(written + 1_000);
        if !write_lines(&t, &container, &batch).await {
            // The bridge stopped the box (a mutated line announced another protocol
            // version, or the turn reached its cap): the next message brings a new one.
            replaced += 1;
            let _ = t.ask("noisy", "back?").await;
            container = t.container("noisy").await;
        }
    }
    eprintln!("fuzz: the bridge replaced the box {replaced} times");
    eprintln!("fuzz: {count} lines from a box, seed {seed}");
    // The other conversation is served exactly; the noisy one's turn ends (answered, or
    // failed with a word: its box may have told lies about its own events), and it answers
    // again afterwards.
    assert_eq!(t.ask("other", "fine?").await, "fine?", "seed {seed}");
    let _ = next_reply_events(&mut events).await;
    let again = t.ask("noisy", "still?").await;
    assert!(!again.is_empty(), "seed {seed}");
    t.stop().await;
}

/// Writes `batch` to the agent's stdout in the box `container`; false if the box is gone.
async fn write_lines(
    t: &TestBridge,
    container: &clawpen_domain::ContainerId,
    batch: &[u8],
) -> bool {
    let sandbox = t.bridge.router.sandbox();
    if sandbox
        .write_workspace_file(container, "lines", batch)
        .await
        .is_err()
    {
        return false;
    }
    let docker = sandbox.docker();
    let config = bollard::exec::CreateExecOptions {
        cmd: Some(vec!["sh", "-c", "cat /workspace/lines > /proc/1/fd/1"]),
        ..Default::default()
    };
    let Ok(exec) = docker.create_exec(container.as_str(), config).await else {
        return false;
    };
    if docker.start_exec(&exec.id, None).await.is_err() {
        return false;
    }
    // Detached: wait for the writer to finish.
    for _ in 0..600 {
        match docker.inspect_exec(&exec.id).await {
            Ok(info) if info.running == Some(false) => return info.exit_code == Some(0),
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => return false,
        }
    }
    false
}

fn tail(text: &str) -> &str {
    let at = text.len().saturating_sub(300);
    let at = (at..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[at..]
}
