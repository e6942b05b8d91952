//! One `clawpen chat` client of a running daemon: [`ChatLine`]s in, [`TerminalEvent`]s out,
//! one JSON value a line. The daemon's control socket hands the connection over here once
//! the client asked for a chat.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt, Lines};
use tokio_util::sync::CancellationToken;

use super::{TerminalAdapter, TerminalEvent};
use crate::command::Handled;
use crate::{ConversationKey, InboundSink};

/// A line from a chat client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    /// The message text.
    pub text: String,
}

/// Serves one chat client of `conversation` until it leaves, or until `shutdown` and the
/// reply under way (if any) is complete: running turns are allowed to finish, and their
/// client should see the end.
pub async fn serve<R, W>(
    terminal: &TerminalAdapter,
    sink: &dyn InboundSink,
    conversation: &ConversationKey,
    mut lines: Lines<R>,
    mut write: W,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut events = terminal.watch(conversation);
    // Whether a reply is under way.
    let mut busy = false;
    let mut stopping = false;
    loop {
        if stopping && !busy {
            break;
        }
        tokio::select! {
            line = lines.next_line(), if !stopping => {
                let Some(line) = line? else { break };
                let Ok(chat) = serde_json::from_str::<ChatLine>(&line) else {
                    tracing::warn!("malformed chat line on the control socket");
                    continue;
                };
                match terminal.say(sink, conversation, &chat.text).await {
                    Ok(Handled::Accepted(_)) => busy = true,
                    // The answer reaches this client as a notice, through `events`.
                    Ok(Handled::Answer(_)) => {}
                    Err(e) => {
                        let event = TerminalEvent::Status { text: format!("not accepted: {e}") };
                        send_event(&mut write, &event).await?;
                    }
                }
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    TerminalEvent::Finished => busy = false,
                    TerminalEvent::Notice { .. } => {}
                    _ => busy = true,
                }
                send_event(&mut write, &event).await?;
            }
            _ = shutdown.cancelled(), if !stopping => stopping = true,
        }
    }
    // The client left; its conversation's actor goes on and the store keeps the reply.
    Ok(())
}

async fn send_event<W: AsyncWrite + Unpin>(
    write: &mut W,
    event: &TerminalEvent,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}
