//! The attached stdin/stdout of a running box: the box's only channel to the world.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::AttachContainerOptions;
use bollard::Docker;
use clawpen_protocol::{FromAgent, Line, LineBuffer, ToAgent};
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use clawpen_domain::ContainerId;

use super::SandboxError;

/// Room for box output not yet taken by the conversation's actor, in messages. When full,
/// the reader stops reading, the box's stdout pipe fills and the agent waits:
/// backpressure, no loss.
const OUTPUT_CAPACITY: usize = 256;

/// Room for box output not yet taken by the conversation's actor, in bytes of the lines
/// it came in: with lines of up to a MiB, the count alone would let one box park hundreds
/// of MiB in the bridge. Full, it backpressures the box like [`OUTPUT_CAPACITY`].
pub const OUTPUT_BYTES: usize = 4 << 20;

/// How long one write to a box's stdin may take before the box counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest stderr line kept for the log.
const STDERR_LOG_LIMIT: usize = 400;

/// Something that came out of a box.
#[derive(Debug)]
pub enum BoxOutput {
    /// A protocol message.
    Message(FromAgent),
    /// A line that is not protocol (garbage, or too long); the bridge answers it.
    Malformed(String),
    /// The attach stream ended: the box stopped or the engine dropped the connection.
    Closed,
}

/// Protocol lines waiting for the box's stdin. When full, senders wait for the box to read.
const INPUT_CAPACITY: usize = 64;

/// An attached box: write protocol lines with [`BoxConn::input`], read its output from
/// `output`.
pub struct BoxConn {
    /// The container id.
    pub container: ContainerId,
    input: BoxInput,
    /// Output of the box, in order, ending with [`BoxOutput::Closed`].
    pub output: Outputs,
    /// The task demultiplexing the attach stream; aborted with the connection.
    reader: JoinHandle<()>,
    /// The task writing to the box's stdin; aborted with the connection.
    writer: JoinHandle<()>,
}

/// A cloneable handle for writing protocol lines to one box, so that responses to the
/// box's requests can be written from the tasks performing them.
#[derive(Clone, Debug)]
pub struct BoxInput {
    container: String,
    lines: mpsc::Sender<Vec<u8>>,
}

impl BoxInput {
    /// Queue one protocol message for the box's stdin.
    pub async fn send(&self, message: &ToAgent) -> Result<(), SandboxError> {
        let line =
            clawpen_protocol::encode(message).map_err(|e| SandboxError::Protocol(e.to_string()))?;
        self.lines
            .send(line)
            .await
            .map_err(|_| SandboxError::BoxGone {
                container: self.container.clone(),
                reason: "its stdin is closed".into(),
            })
    }
}

/// The receiving end of a box's output, holding its share of [`OUTPUT_BYTES`] until the
/// actor takes each message.
#[derive(Debug)]
pub struct Outputs {
    rx: mpsc::Receiver<Queued>,
}

/// One output in the queue, boxed: the queue's first block is allocated with the queue
/// and kept for as long as the box is attached, 32 slots of this, so at a pointer each
/// an attached box at rest holds 32 pointers, not 32 messages' room.
type Queued = Box<(BoxOutput, OwnedSemaphorePermit)>;

impl Outputs {
    /// The next output of the box; `None` once the reader is gone.
    pub async fn recv(&mut self) -> Option<BoxOutput> {
        // The permit drops here: its bytes are free for the reader again.
        self.rx.recv().await.map(|queued| queued.0)
    }

    /// Whether the reader is gone (the box's output ended).
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }
}

impl std::fmt::Debug for BoxConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxConn")
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl Drop for BoxConn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl BoxConn {
    /// Attach to a running container's stdin, stdout and stderr.
    pub async fn attach(docker: &Docker, container: &ContainerId) -> Result<Self, SandboxError> {
        let options = AttachContainerOptions {
            stream: true,
            stdin: true,
            stdout: true,
            stderr: true,
            logs: false,
            detach_keys: None,
        };
        let attached = docker
            .attach_container(container.as_str(), Some(options))
            .await
            .map_err(|e| SandboxError::from_engine("attach", container.as_str(), e))?;
        let (tx, rx) = mpsc::channel::<Queued>(OUTPUT_CAPACITY);
        let budget = Arc::new(Semaphore::new(OUTPUT_BYTES));
        let name = container.to_string();
        let mut stream = attached.output;
        let reader = tokio::spawn(async move {
            let mut lines = LineBuffer::default();
            while let Some(item) = stream.next().await {
                let bytes = match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        message
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        let text = String::from_utf8_lossy(&message);
                        let text: String = text.trim_end().chars().take(STDERR_LOG_LIMIT).collect();
                        tracing::debug!(r#box = %name, stderr = %text, "box stderr");
                        continue;
                    }
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(e) => {
                        tracing::debug!(r#box = %name, error = %e, "attach stream ended with an error");
                        break;
                    }
                };
                for line in lines.push(&bytes) {
                    let size = match &line {
                        Line::Complete(line) => line.len(),
                        Line::TooLong => 0,
                    };
                    // Waits while the actor holds as much as the budget allows.
                    let Ok(permit) = budget.clone().acquire_many_owned(permit_count(size)).await
                    else {
                        return;
                    };
                    let out = match line {
                        Line::Complete(line) if line.iter().all(u8::is_ascii_whitespace) => {
                            continue
                        }
                        Line::Complete(line) => {
                            match clawpen_protocol::decode::<FromAgent>(&line) {
                                Ok(message) => BoxOutput::Message(message),
                                Err(e) => BoxOutput::Malformed(format!(
                                    "not a protocol line ({e}): {}",
                                    String::from_utf8_lossy(&line)
                                        .chars()
                                        .take(120)
                                        .collect::<String>()
                                )),
                            }
                        }
                        Line::TooLong => {
                            BoxOutput::Malformed("line longer than the protocol allows".into())
                        }
                    };
                    if tx.send(Box::new((out, permit))).await.is_err() {
                        return;
                    }
                }
            }
            if let Ok(permit) = budget.acquire_many_owned(0).await {
                let _ = tx.send(Box::new((BoxOutput::Closed, permit))).await;
            }
        });
        let (lines, mut queue) = mpsc::channel::<Vec<u8>>(INPUT_CAPACITY);
        let mut stdin = attached.input;
        let name = container.to_string();
        let writer = tokio::spawn(async move {
            while let Some(line) = queue.recv().await {
                let write = async {
                    stdin.write_all(&line).await?;
                    stdin.flush().await
                };
                match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(r#box = %name, error = %e, "writing to the box failed");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(r#box = %name, "the box did not read its stdin for {WRITE_TIMEOUT:?}");
                        break;
                    }
                }
            }
        });
        let input = BoxInput {
            container: container.to_string(),
            lines,
        };
        Ok(Self {
            container: container.clone(),
            input,
            output: Outputs { rx },
            reader,
            writer,
        })
    }

    /// A handle for writing to the box.
    pub fn input(&self) -> BoxInput {
        self.input.clone()
    }

    /// Write one protocol message to the box's stdin.
    pub async fn send(&mut self, message: &ToAgent) -> Result<(), SandboxError> {
        self.input.send(message).await
    }
}

/// The permits a line of `size` bytes holds: at least one, so that even blank lines count,
/// and at most the whole budget, so that the longest line still fits.
fn permit_count(size: usize) -> u32 {
    u32::try_from(size.clamp(1, OUTPUT_BYTES)).unwrap_or(u32::MAX)
}
