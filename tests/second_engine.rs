//! Boxes on an engine that is not the host's: the test starts its own `dockerd` (its own
//! socket, data root, exec root and config file; vfs storage, no bridge network), runs the
//! real `clawpen run` with `DOCKER_HOST` pointing at it, and restarts that engine in the
//! middle of a turn. Where `dockerd` cannot be started (not root, not installed, no cgroups
//! in this environment) the test says so and passes without running.

mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{eventually, REPLY_TIMEOUT};
use telegram_fake::{FakeTelegram, TOKEN};

/// How long the engine gets to answer after it was started.
const ENGINE_START: Duration = Duration::from_secs(60);

/// A `dockerd` of the test's own, stopped when dropped.
struct Engine {
    dir: PathBuf,
    process: Option<Child>,
}

impl Engine {
    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts `dockerd` on `dir`; `Err` says why it cannot run here.
    async fn start(dir: &Path) -> Result<Self, String> {
        let mut engine = Self {
            dir: dir.to_path_buf(),
            process: None,
        };
        engine.run().await?;
        Ok(engine)
    }

    async fn run(&mut self) -> Result<(), String> {
        let config = self.dir.join("daemon.json");
        std::fs::write(&config, "{}\n").map_err(|e| format!("writing {config:?}: {e}"))?;
        let log = std::fs::File::create(self.dir.join("dockerd.log"))
            .map_err(|e| format!("dockerd.log: {e}"))?;
        let process = Command::new("dockerd")
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.dir.join("root"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("dockerd.pid"))
            .arg("--config-file")
            .arg(&config)
            .args(["--storage-driver", "vfs", "--bridge", "none"])
            .args(["--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start dockerd: {e}"))?;
        self.process = Some(process);
        let host = self.host();
        let up = eventually(ENGINE_START, || async {
            Command::new("docker")
                .args(["--host", &host, "version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .await;
        if up {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        self.stop();
        Err(format!(
            "dockerd did not answer within {} s: {}",
            ENGINE_START.as_secs(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }

    /// SIGTERM, as an operator's restart does (the engine stops its containers), and wait.
    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &process.id().to_string()])
                .status();
            let _ = process.wait();
        }
    }

    /// Names of the containers on this engine.
    fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["--host", &self.host(), "ps", "-a", "--format", "{{.Names}}"])
            .output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why a dockerd of our own cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|ids| ids.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        return Some("dockerd needs root".into());
    }
    let found = Command::new("dockerd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        return Some("no dockerd on PATH (Debian: apt-get install docker.io)".into());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxes_run_on_a_second_engine_through_docker_host_and_survive_its_restart() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED second_engine: {why}");
        return;
    }
    // A short path: a Unix socket's path must fit in 108 bytes.
    let engine_dir = tempfile::Builder::new()
        .prefix("cpe")
        .tempdir_in("/tmp")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut engine = match Engine::start(engine_dir.path()).await {
        Ok(engine) => engine,
        Err(why) => {
            eprintln!("SKIPPED second_engine: {why}");
            return;
        }
    };
    let fake = FakeTelegram::start().await;
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (warm, restarted) = (-961_i64, -962_i64);
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_clawpen"))
        .arg("run")
        .env_remove("CLAWPEN_CONFIG")
        .env("CLAWPEN_DATA_DIR", data.path())
        .env("DOCKER_HOST", engine.host())
        .env("CLAWPEN_ECHO_DELAY_MS", "150")
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_API_URL", fake.url())
        .env(
            "CLAWPEN_TELEGRAM_ALLOWED_CHATS",
            format!("{warm},{restarted}"),
        )
        .env("CLAWPEN_LOG", "clawpen=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn clawpen: {e}"));

    // The box image is built on the new engine (offline) and the box runs there.
    fake.send(fake.message(warm, 101, "@ClawBot on the second engine"));
    let answered = eventually(REPLY_TIMEOUT * 2, || async {
        fake.messages(warm)
            .iter()
            .any(|m| m.text == "on the second engine")
    })
    .await;
    assert!(answered, "no answer: {:#?}", fake.messages(warm));
    // The warm pool's boxes (`…-pool-…`, unclaimed) run there too; one serves the chat.
    let boxes: Vec<String> = engine
        .containers()
        .into_iter()
        .filter(|name| !name.contains("-pool-"))
        .collect();
    assert_eq!(boxes.len(), 1, "one box on the second engine: {boxes:?}");

    // The engine restarts while a reply streams.
    let long = "one two three four five six seven eight nine ten eleven twelve thirteen \
                fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    fake.send(fake.message(restarted, 101, &format!("@ClawBot {long}")));
    let streaming = eventually(REPLY_TIMEOUT, || async {
        !fake.messages(restarted).is_empty()
    })
    .await;
    assert!(streaming, "the reply did not start");
    engine.stop();
    engine
        .run()
        .await
        .unwrap_or_else(|e| panic!("the engine did not come back: {e}"));
    // The turn ends in words the user understands: finished, or failed with a way on.
    let ended = eventually(REPLY_TIMEOUT, || async {
        fake.messages(restarted)
            .iter()
            .any(|m| m.text.contains("twenty") || m.text.contains("send your message again"))
    })
    .await;
    assert!(
        ended,
        "the turn never ended: {:#?}",
        fake.messages(restarted)
    );

    // The conversation goes on on the restarted engine, its workspace intact.
    fake.send(fake.message(restarted, 101, "@ClawBot after the restart"));
    let again = eventually(REPLY_TIMEOUT, || async {
        fake.messages(restarted)
            .iter()
            .any(|m| m.text == "after the restart")
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let shown = fake.messages(restarted);
    assert!(again, "no answer after the restart: {shown:#?}");
    for message in &shown {
        let text = message.text.to_lowercase();
        assert!(
            !text.contains("hyper") && !text.contains("docker"),
            "a raw client error reached the user: {shown:#?}"
        );
    }
    // The engine and everything on it go with its directory.
    engine.stop();
}
