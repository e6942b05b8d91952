//! `clawpen chat`: one terminal conversation, through the daemon when one runs, else
//! in-process.
//!
//! On a terminal, lines are sent as typed and replies stream. On a pipe, each line is sent
//! after the previous reply is complete, each complete reply is printed, and the command
//! exits when stdin ends and the last reply is done, so that it can be scripted.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clawpen_adapters::terminal::render::Renderer;
use clawpen_adapters::terminal::{TerminalAdapter, TerminalEvent, PLATFORM};
use clawpen_adapters::ConversationKey;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::config::Config;
use std::sync::Arc;

use crate::control::{ChatLine, Request};
use crate::daemon::Bridge;
use crate::router::Router;

/// Where chat messages go and replies come from.
enum Link {
    /// Through a running daemon's control socket.
    Daemon {
        lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
        write: OwnedWriteHalf,
    },
    /// An in-process bridge.
    Local {
        router: Router,
        terminal: Arc<TerminalAdapter>,
        key: ConversationKey,
        events: mpsc::Receiver<TerminalEvent>,
    },
}

impl Link {
    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        match self {
            Link::Daemon { write, .. } => {
                let mut line = serde_json::to_vec(&ChatLine {
                    text: text.to_string(),
                })?;
                line.push(b'\n');
                write
                    .write_all(&line)
                    .await
                    .context("sending to the daemon")
            }
            Link::Local {
                router,
                terminal,
                key,
                ..
            } => {
                terminal
                    .say(router, key, text)
                    .await
                    .context("storing the message")?;
                Ok(())
            }
        }
    }

    async fn next(&mut self) -> anyhow::Result<Option<TerminalEvent>> {
        match self {
            Link::Daemon { lines, .. } => loop {
                let Some(line) = lines.next_line().await? else {
                    return Ok(None);
                };
                match serde_json::from_str(&line) {
                    Ok(event) => return Ok(Some(event)),
                    Err(e) => tracing::warn!(error = %e, "unreadable line from the daemon"),
                }
            },
            Link::Local { events, .. } => Ok(events.recv().await),
        }
    }
}

pub(super) async fn run(config: &Config, conversation: &str) -> anyhow::Result<ExitCode> {
    let key = ConversationKey::new(PLATFORM, conversation);
    let socket = config.control_socket();
    if let Ok(stream) = UnixStream::connect(&socket).await {
        let (read, mut write) = stream.into_split();
        let mut hello = serde_json::to_vec(&Request::Chat {
            conversation: conversation.to_string(),
        })?;
        hello.push(b'\n');
        write
            .write_all(&hello)
            .await
            .context("talking to the daemon")?;
        let link = Link::Daemon {
            lines: BufReader::new(read).lines(),
            write,
        };
        return converse(link).await;
    }
    let bridge = Bridge::start(config, Vec::new())
        .await
        .context("starting clawpen in-process")?;
    let events = bridge.terminal.watch(&key);
    let link = Link::Local {
        router: bridge.router.clone(),
        terminal: bridge.terminal.clone(),
        key,
        events,
    };
    let result = converse(link).await;
    let sandbox = bridge.router.sandbox().clone();
    bridge.shutdown().await;
    // No daemon will watch these boxes' idle time: stop them (workspaces are kept).
    for info in sandbox
        .list()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b.running)
    {
        let _ = sandbox.kill(&info.id).await;
    }
    result
}

async fn converse(mut link: Link) -> anyhow::Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    let mut renderer = Renderer::new(std::io::stdout().is_terminal());
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let mut busy = false;
    let mut input_open = true;
    loop {
        if !input_open && !busy {
            return Ok(ExitCode::SUCCESS);
        }
        // On a pipe, the next line waits for the previous reply.
        let read_input = input_open && (interactive || !busy);
        tokio::select! {
            line = input.next_line(), if read_input => {
                match line.context("reading stdin")? {
                    Some(line) if line.trim().is_empty() => {}
                    Some(line) => {
                        link.say(&line).await?;
                        busy = true;
                    }
                    None => input_open = false,
                }
            }
            event = link.next() => {
                let Some(event) = event? else {
                    anyhow::bail!("the daemon closed the connection");
                };
                if renderer.apply(&event, &mut stdout, &mut stderr)? {
                    busy = false;
                }
            }
        }
    }
}
