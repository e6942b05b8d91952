//! The fake's gateway: one websocket connection at a time, JSON text frames.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::{bot_user, State, APP_ID};

/// The heartbeat interval the fake asks for: short, so tests see heartbeats.
const HEARTBEAT_MS: u64 = 1000;

pub(super) fn spawn(listener: TcpListener, shared: Arc<State>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut open = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let state = shared.clone();
            open.spawn(async move {
                if let Ok(socket) = tokio_tungstenite::accept_async(stream).await {
                    connection(&state, socket).await;
                }
            });
        }
    })
}

async fn connection(
    state: &State,
    mut socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) {
    let mut bumps = state.bump.subscribe();
    // A kick asked for before this connection does not concern it.
    state.lock().kick = None;
    let hello = json!({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_MS}, "s": null, "t": null});
    if socket.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    // The sequence number up to which this connection has sent dispatches; `None` until
    // IDENTIFY or RESUME.
    let mut sent: Option<u64> = None;
    loop {
        tokio::select! {
            frame = socket.next() => {
                let Some(Ok(Message::Text(text))) = frame else { return };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else { return };
                match frame["op"].as_u64() {
                    Some(1) => {
                        state.lock().heartbeats += 1;
                        let ack = json!({"op": 11, "d": null, "s": null, "t": null});
                        if socket.send(Message::text(ack.to_string())).await.is_err() {
                            return;
                        }
                    }
                    Some(2) => {
                        let refuse = {
                            let mut inner = state.lock();
                            inner.identifies += 1;
                            inner.intents = frame["d"]["intents"].as_u64();
                            inner.refuse_identify
                        };
                        if let Some(code) = refuse {
                            close(&mut socket, code).await;
                            return;
                        }
                        let session = format!("session-{}", state.id());
                        {
                            let mut inner = state.lock();
                            inner.session = Some(session.clone());
                            inner.log.clear();
                        }
                        sent = Some(0);
                        state.dispatch("READY", json!({"v": 10, "user": bot_user(), "guilds": [],
                            "session_id": session, "resume_gateway_url": state.ws_url(),
                            "application": {"id": APP_ID, "flags": 1 << 19}}));
                    }
                    Some(6) => {
                        let (known, overlap) = {
                            let mut inner = state.lock();
                            inner.resumes += 1;
                            let known = inner.session.as_deref() == frame["d"]["session_id"].as_str();
                            (known, inner.replay_overlap)
                        };
                        if !known {
                            let invalid = json!({"op": 9, "d": false, "s": null, "t": null});
                            let _ = socket.send(Message::text(invalid.to_string())).await;
                            continue;
                        }
                        let seq = frame["d"]["seq"].as_u64().unwrap_or(0);
                        sent = Some(seq.saturating_sub(overlap));
                        // Replay what was missed, then RESUMED, all in sequence.
                        if flush(state, &mut socket, &mut sent).await.is_err() {
                            return;
                        }
                        state.dispatch("RESUMED", json!({}));
                    }
                    _ => {}
                }
            }
            changed = bumps.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let (kick, raw) = {
            let mut inner = state.lock();
            (inner.kick.take(), inner.raw.drain(..).collect::<Vec<_>>())
        };
        if let Some(code) = kick {
            close(&mut socket, code).await;
            return;
        }
        if sent.is_some() {
            for frame in raw {
                if socket.send(Message::text(frame)).await.is_err() {
                    return;
                }
            }
        }
        if flush(state, &mut socket, &mut sent).await.is_err() {
            return;
        }
    }
}

/// Sends the session's dispatches after `sent`.
async fn flush(
    state: &State,
    socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    sent: &mut Option<u64>,
) -> Result<(), ()> {
    let Some(upto) = *sent else { return Ok(()) };
    let due: Vec<(u64, String)> = state
        .lock()
        .log
        .iter()
        .filter(|(seq, _)| *seq > upto)
        .cloned()
        .collect();
    for (seq, frame) in due {
        socket.send(Message::text(frame)).await.map_err(|_| ())?;
        *sent = Some(seq);
    }
    Ok(())
}

async fn close(socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, code: u16) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: "closed by the fake".into(),
    };
    let _ = socket.close(Some(frame)).await;
}
