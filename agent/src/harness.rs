//! Harness mode: an external agent program answers each turn instead of the built-in loop.
//!
//! With `CLAWPEN_HARNESS` set, every turn runs `sh -c "$CLAWPEN_HARNESS"` in the workspace
//! with the turn's message text on stdin; its stdout is the reply, streamed as it comes.
//! The harness reaches the model through the in-box HTTP endpoint: it gets the usual SDK
//! variables pointing there, with a placeholder key that the endpoint drops (the real key
//! stays in the bridge). A non-zero exit fails the turn with the tail of its stderr;
//! `Cancel` and the turn's limits kill it with everything it started.

use std::path::PathBuf;
use std::process::Stdio;

use clawpen_protocol::{TurnMessage, TurnOptions, ENV_MODEL};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::config::Limits;
use crate::process::{read_some, Group, AFTER_EXIT};
use crate::provider::run::{Out, TaskRun, TurnResult};

/// The key handed to the harness. It is not secret and goes nowhere: the endpoint strips
/// it, and the bridge adds the real one.
pub const PLACEHOLDER_KEY: &str = "clawpen-placeholder";

/// How much of the harness's stderr is kept for the error message.
const STDERR_TAIL: usize = 2048;

/// A configured harness.
#[derive(Clone, Debug)]
pub struct Harness {
    command: String,
    workspace: PathBuf,
    /// The in-box endpoint's port.
    port: u16,
    limits: Limits,
}

impl Harness {
    /// The harness `command`, run in `workspace`, told to use the endpoint on `port`.
    pub fn new(command: String, workspace: PathBuf, port: u16, limits: Limits) -> Self {
        Harness {
            command,
            workspace,
            port,
            limits,
        }
    }

    /// Start answering a turn. Follow-ups cannot reach a running harness; they stay in the
    /// inbox and the endpoint answers them with another run afterwards.
    pub fn start(&self, messages: Vec<TurnMessage>, options: TurnOptions) -> TaskRun {
        let harness = self.clone();
        let input = messages
            .iter()
            .map(|message| message.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        TaskRun::spawn(
            self.limits.turn_time,
            self.limits.max_output,
            move |out, _inbox| harness.run(input, options, out),
        )
    }

    async fn run(self, input: String, options: TurnOptions, mut out: Out) -> TurnResult {
        let base = format!("http://127.0.0.1:{}", self.port);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .current_dir(&self.workspace)
            .env("ANTHROPIC_BASE_URL", &base)
            .env("ANTHROPIC_API_KEY", PLACEHOLDER_KEY)
            .env("OPENAI_BASE_URL", format!("{base}/v1"))
            .env("OPENAI_API_KEY", PLACEHOLDER_KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(model) = &options.model {
            command.env(ENV_MODEL, model);
        }
        let mut child = command
            .spawn()
            .map_err(|err| format!("could not start the harness: {err}"))?;
        let mut group = Group::new(&child);
        let mut stdin = child.stdin.take();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        // Written beside the reading: a harness that answers before reading all its input
        // must not deadlock against us.
        let feed = async move {
            if let Some(stdin) = &mut stdin {
                // A harness that does not read its input closes the pipe; that is its call.
                let _ = stdin.write_all(input.as_bytes()).await;
            }
            // Dropping stdin here sends EOF.
        };
        tokio::pin!(feed);
        let mut fed = false;
        let (mut out_buf, mut err_buf) = (vec![0; 8192], vec![0; 4096]);
        let mut text = Utf8Stream::default();
        let mut errors: Vec<u8> = Vec::new();
        let mut status = None;
        let after_exit = tokio::time::sleep(self.limits.turn_time);
        tokio::pin!(after_exit);
        loop {
            if status.is_some() && stdout.is_none() && stderr.is_none() {
                break;
            }
            tokio::select! {
                _ = &mut feed, if !fed => fed = true,
                read = read_some(&mut stdout, &mut out_buf) => match read {
                    Some(n) => out
                        .text(&text.push(out_buf.get(..n).unwrap_or_default()))
                        .await
                        .map_err(|full| full.to_string())?,
                    None => stdout = None,
                },
                read = read_some(&mut stderr, &mut err_buf) => match read {
                    Some(n) => {
                        errors.extend_from_slice(err_buf.get(..n).unwrap_or_default());
                        if errors.len() > 2 * STDERR_TAIL {
                            errors.drain(..errors.len() - STDERR_TAIL);
                        }
                    }
                    None => stderr = None,
                },
                exit = child.wait(), if status.is_none() => {
                    status = Some(exit);
                    after_exit.as_mut().reset(tokio::time::Instant::now() + AFTER_EXIT);
                },
                _ = &mut after_exit, if status.is_some() => break,
            }
        }
        group.disarm();
        out.text(&text.finish())
            .await
            .map_err(|full| full.to_string())?;
        match status {
            Some(Ok(status)) if status.success() => Ok(()),
            Some(Ok(status)) => {
                let tail = &errors[errors.len().saturating_sub(STDERR_TAIL)..];
                let tail = String::from_utf8_lossy(tail);
                let tail = tail.trim();
                let mut message = format!("the harness failed ({status})");
                if !tail.is_empty() {
                    message.push_str(":\n");
                    message.push_str(tail);
                }
                Err(message)
            }
            Some(Err(err)) => Err(format!("could not wait for the harness: {err}")),
            None => Err("the harness did not finish".into()),
        }
    }
}

/// Decodes UTF-8 that arrives in pieces cut anywhere; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
struct Utf8Stream {
    /// The start of a character cut off at the end of the last piece.
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(valid) => {
                    text.push_str(valid);
                    start = self.pending.len();
                    break;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    text.push_str(&String::from_utf8_lossy(
                        &self.pending[start..start + valid],
                    ));
                    match err.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            start += valid + bad;
                        }
                        // Incomplete at the end: keep it for the next piece.
                        None => {
                            start += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        text
    }

    /// Whatever is left at the end of the stream.
    fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::run::Step;
    use std::time::Duration;

    #[test]
    fn utf8_split_anywhere_decodes_whole() {
        let text = "héllo 😀 wörld";
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let mut stream = Utf8Stream::default();
            let mut out = stream.push(&bytes[..cut]);
            out.push_str(&stream.push(&bytes[cut..]));
            out.push_str(&stream.finish());
            assert_eq!(out, text, "cut at {cut}");
        }
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.push(b"a\xffb"), "a\u{fffd}b");
    }

    fn harness(command: &str, dir: &std::path::Path) -> Harness {
        let limits = Limits {
            turn_time: Duration::from_secs(20),
            ..Limits::default()
        };
        Harness::new(command.into(), dir.to_owned(), 8089, limits)
    }

    fn message(text: &str) -> TurnMessage {
        TurnMessage {
            id: "1".into(),
            sender: "ann".into(),
            at: 0,
            text: text.into(),
            addressed: true,
            attachments: Vec::new(),
        }
    }

    async fn steps(mut run: TaskRun) -> Vec<Step> {
        let mut steps = Vec::new();
        loop {
            let step = run.next().await;
            let end = matches!(step, Step::Done | Step::Failed(_));
            steps.push(step);
            if end {
                return steps;
            }
        }
    }

    fn text(steps: &[Step]) -> String {
        steps
            .iter()
            .filter_map(|step| match step {
                Step::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn the_harness_gets_the_message_and_the_endpoint() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let run = harness(
            "printf 'got: '; cat; printf ' via %s %s %s' \"$ANTHROPIC_BASE_URL\" \"$OPENAI_BASE_URL\" \"$ANTHROPIC_API_KEY\"",
            dir.path(),
        )
        .start(vec![message("hello")], TurnOptions::default());
        let steps = steps(run).await;
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(
            text(&steps),
            "got: hello via http://127.0.0.1:8089 http://127.0.0.1:8089/v1 clawpen-placeholder"
        );
        Ok(())
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_harness() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let marker = dir.path().join("marker");
        let run = harness(&format!("sleep 1; touch {}", marker.display()), dir.path())
            .start(vec![message("hi")], TurnOptions::default());
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(run);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !marker.exists(),
            "the harness ran on after its run was dropped"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_failing_harness_reports_its_stderr() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let run = harness(
            "echo partial; echo 'no model configured' >&2; exit 2",
            dir.path(),
        )
        .start(vec![message("hi")], TurnOptions::default());
        let steps = steps(run).await;
        assert_eq!(text(&steps), "partial\n");
        let Some(Step::Failed(message)) = steps.last() else {
            panic!("{steps:?}")
        };
        assert!(message.contains("exit status: 2"), "{message}");
        assert!(message.contains("no model configured"), "{message}");
        Ok(())
    }
}
