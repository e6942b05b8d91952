//! Running shell commands: in their own process group, with a timeout and bounded output.
//!
//! A command is `sh -c CMD` in a new process group, so that everything it starts can be
//! stopped together: on timeout, and when its turn is cancelled (the future is dropped and
//! the [`Group`] guard kills the group). Its stdout and stderr are read together into a
//! [`Capture`] that keeps the head and the tail, which is where compilers and test
//! runners put what matters.
//!
//! Background jobs a command leaves running (`server &`) are left alone when it exits on
//! its own; when they end, the box's init reaps them (see `init`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::process::{read_some, Group};

/// The timeout when the model gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest timeout the model may ask for; the turn's own limit still applies.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Keeps the first and last `half` bytes of a stream, counting what is cut between.
#[derive(Debug)]
pub struct Capture {
    half: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    total: usize,
}

impl Capture {
    /// A capture keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Capture {
            half: cap / 2,
            head: Vec::new(),
            tail: Vec::new(),
            total: 0,
        }
    }

    /// Add bytes.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len();
        let room = self.half.saturating_sub(self.head.len());
        let (head, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(head);
        bytes = rest;
        self.tail.extend_from_slice(bytes);
        // Trim in batches so a byte-at-a-time stream does not shift the buffer every time.
        if self.tail.len() > self.half * 2 {
            self.tail.drain(..self.tail.len() - self.half);
        }
    }

    /// The text, with a note where bytes were cut.
    pub fn text(&self) -> String {
        let tail_start = self.tail.len().saturating_sub(self.half);
        let tail = &self.tail[tail_start..];
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        let cut = self.total - self.head.len() - tail.len();
        if cut > 0 {
            text.push_str(&format!(
                "\n[… {cut} bytes of output cut; {} bytes in all …]\n",
                self.total
            ));
        }
        text.push_str(&String::from_utf8_lossy(tail));
        text
    }
}

/// Run `command` with `sh -c` in `dir`; returns the output with its exit status noted.
/// Err only when the shell could not be started.
pub async fn run(
    command: &str,
    dir: &Path,
    timeout: Duration,
    cap: usize,
) -> std::io::Result<String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let mut group = Group::new(&child);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut capture = Capture::new(cap);
    let (mut out_buf, mut err_buf) = (vec![0; 8192], vec![0; 8192]);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let after_exit = tokio::time::sleep(MAX_TIMEOUT);
    tokio::pin!(after_exit);
    let mut status = None;
    let mut timed_out = false;
    loop {
        if status.is_some() && stdout.is_none() && stderr.is_none() {
            break;
        }
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Some(n) => capture.push(out_buf.get(..n).unwrap_or_default()),
                None => stdout = None,
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Some(n) => capture.push(err_buf.get(..n).unwrap_or_default()),
                None => stderr = None,
            },
            exit = child.wait(), if status.is_none() => {
                status = Some(exit);
                after_exit.as_mut().reset(tokio::time::Instant::now() + crate::process::AFTER_EXIT);
            },
            _ = &mut after_exit, if status.is_some() => break,
            _ = &mut deadline => {
                timed_out = true;
                break;
            }
        }
    }
    let mut text = capture.text();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if timed_out {
        drop(group);
        // Reap `sh` now that it is dead, rather than leaving it to the orphan queue.
        let _ = child.wait().await;
        text.push_str(&format!(
            "[timed out after {} s; the command and everything it started were killed]",
            timeout.as_secs()
        ));
        return Ok(text);
    }
    group.disarm();
    match status {
        Some(Ok(status)) => match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(0), _) if text.is_empty() => text.push_str("(no output; exit code 0)"),
            (Some(0), _) => {}
            (Some(code), _) => text.push_str(&format!("[exit code {code}]")),
            (None, Some(signal)) => text.push_str(&format!("[killed by signal {signal}]")),
            (None, None) => text.push_str("[ended without an exit code]"),
        },
        Some(Err(err)) => text.push_str(&format!("[could not wait for the command: {err}]")),
        None => {}
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn capture_keeps_head_and_tail() {
        let mut capture = Capture::new(10);
        capture.push(b"abc");
        assert_eq!(capture.text(), "abc");
        for _ in 0..100 {
            capture.push(b"0123456789");
        }
        capture.push(b"TAIL!");
        let text = capture.text();
        assert!(text.starts_with("abc01"), "{text}");
        assert!(text.ends_with("…]\nTAIL!"), "{text}");
        assert!(
            text.contains("bytes of output cut; 1008 bytes in all"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn output_and_exit_codes_are_reported() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let text = run(
            "echo out; echo err >&2; exit 3",
            dir.path(),
            DEFAULT_TIMEOUT,
            1024,
        )
        .await?;
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
        assert!(text.ends_with("[exit code 3]"), "{text}");
        let text = run("true", dir.path(), DEFAULT_TIMEOUT, 1024).await?;
        assert_eq!(text, "(no output; exit code 0)");
        let text = run("pwd", dir.path(), DEFAULT_TIMEOUT, 1024).await?;
        assert_eq!(
            text.trim(),
            dir.path().canonicalize()?.to_string_lossy().as_ref()
        );
        Ok(())
    }

    #[tokio::test]
    async fn big_output_is_capped_with_a_note() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let text = run(
            "i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done",
            dir.path(),
            DEFAULT_TIMEOUT,
            16 * 1024,
        )
        .await?;
        assert!(text.len() < 16 * 1024 + 200, "{}", text.len());
        assert!(text.starts_with("line0\n"), "{text}");
        assert!(text.contains("bytes of output cut"), "{text}");
        assert!(text.contains("line2999\n"), "{text}");
        Ok(())
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let marker = dir.path().join("survived");
        let command = format!(
            "(sleep 2; touch {}) & echo started; sleep 30",
            marker.display()
        );
        let start = Instant::now();
        let text = run(&command, dir.path(), Duration::from_millis(500), 1024).await?;
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(text.starts_with("started\n"), "{text}");
        assert!(text.contains("[timed out after 0 s"), "{text}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!marker.exists(), "a background job outlived the timeout");
        Ok(())
    }

    #[tokio::test]
    async fn a_background_job_holding_the_pipe_does_not_block() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let start = Instant::now();
        let text = run("sleep 5 & echo done", dir.path(), DEFAULT_TIMEOUT, 1024).await?;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(text, "done\n");
        Ok(())
    }

    #[tokio::test]
    async fn dropping_a_running_command_kills_it() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let marker = dir.path().join("survived");
        let command = format!("sleep 1; touch {}", marker.display());
        let running = run(&command, dir.path(), DEFAULT_TIMEOUT, 1024);
        assert!(tokio::time::timeout(Duration::from_millis(200), running)
            .await
            .is_err());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!marker.exists(), "the cancelled command ran on");
        Ok(())
    }
}
