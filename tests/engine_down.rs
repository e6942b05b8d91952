//! The sandbox engine going away and coming back, as an operator's restart of dockerd looks
//! to the bridge: the real `clawpen run` reaches the real engine through a TCP relay that
//! the test can cut. A message that arrives meanwhile gets one plain-words notice, waits,
//! and runs once the engine is back; nobody sees a raw client error.

mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use support::{eventually, Cleanup, REPLY_TIMEOUT};
use telegram_fake::{FakeTelegram, TOKEN};
use tokio::net::{TcpListener, UnixStream};
use tokio::task::AbortHandle;

/// The engine's socket the relay forwards to.
const ENGINE: &str = "/var/run/docker.sock";

/// A TCP relay to the engine that can be cut (every connection dropped, new ones refused
/// at once) and restored.
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let down = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (is_down, all) = (down.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is reset
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect(ENGINE).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
                all.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(link.abort_handle());
            }
        });
        Relay { port, down, links }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for link in self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            link.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waits_for_the_engine_with_one_plain_notice_then_runs() {
    let relay = Relay::start().await;
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().to_path_buf();
    let _cleanup = Cleanup {
        instance: clawpen::store::Store::open(&data.join("store"))
            .unwrap_or_else(|e| panic!("{e}"))
            .instance_id(),
    };
    let (before, during) = (-951_i64, -952_i64);
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_clawpen"))
        .arg("run")
        .env_remove("CLAWPEN_CONFIG")
        .env("CLAWPEN_DATA_DIR", &data)
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", relay.port))
        .env("CLAWPEN_ECHO_DELAY_MS", "5")
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_API_URL", fake.url())
        .env(
            "CLAWPEN_TELEGRAM_ALLOWED_CHATS",
            format!("{before},{during}"),
        )
        .env("CLAWPEN_LOG", "clawpen=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn clawpen: {e}"));

    fake.send(fake.message(before, 101, "@ClawBot engine up"));
    let up = eventually(REPLY_TIMEOUT, || async {
        fake.messages(before).iter().any(|m| m.text == "engine up")
    })
    .await;
    assert!(
        up,
        "no answer with the engine up: {:#?}",
        fake.messages(before)
    );

    relay.cut();
    fake.send(fake.message(during, 101, "@ClawBot while the engine is away"));
    let noticed = eventually(REPLY_TIMEOUT, || async {
        fake.messages(during)
            .iter()
            .any(|m| m.text.contains("not answering"))
    })
    .await;
    assert!(noticed, "no notice: {:#?}", fake.messages(during));

    relay.restore();
    let ran = eventually(REPLY_TIMEOUT, || async {
        fake.messages(during)
            .iter()
            .any(|m| m.text == "while the engine is away")
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let shown = fake.messages(during);
    assert!(
        ran,
        "the message never ran after the engine came back: {shown:#?}"
    );
    assert_eq!(shown.len(), 2, "one notice, one answer: {shown:#?}");
    for message in &shown {
        let text = message.text.to_lowercase();
        assert!(
            !text.contains("hyper") && !text.contains("docker"),
            "a raw client error reached the user: {shown:#?}"
        );
    }
}
