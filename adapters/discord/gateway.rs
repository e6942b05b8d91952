//! The gateway connection: HELLO, IDENTIFY or RESUME, heartbeats, dispatches in order to
//! the handler, and reconnecting.
//!
//! Frames are read as our own [`wire`] types, so a malformed dispatch or an event this code
//! does not know is skipped with a log line and never stops the connection. (serenity 0.12
//! keeps its shard's receive side crate-private, so using it would mean its whole client,
//! which logs a broken frame's full text and ends on close code 4014.)
//!
//! A dropped connection resumes its session from the last sequence number, so Discord
//! replays what was missed; a MESSAGE_CREATE seen twice across a resume is handed to the
//! sink twice and stored once (the inbound log dedupes by message id). Close code 4014
//! (message content intent not enabled) is told to the operator in one clear line and kept
//! as the adapter's trouble for `clawpen status` and `clawpen doctor`; the adapter keeps
//! trying once a minute, so flipping the switch is enough.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use serenity::http::{LightMethod, Request, Route};
use serenity::model::gateway::GatewayIntents;
use tokio::sync::mpsc;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::adapter::DiscordAdapter;
use super::wire::{self, op, Event};
use super::PLATFORM;
use crate::egress::Stream;
use crate::stream::{Attempts, Backoff};
use crate::AdapterError;

/// The gateway version the adapter speaks.
const VERSION: u8 = 10;

/// What the bot listens to: server structure (threads), server and direct messages, and
/// their content (a privileged intent, switched on in the developer portal).
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILDS
        | GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
}

/// Said to the operator when Discord refuses the message content intent.
pub const INTENT_REFUSED: &str = "Discord refused the Message Content intent (gateway close \
    code 4014): turn on \"Message Content Intent\" under Bot → Privileged Gateway Intents for \
    this application at https://discord.com/developers/applications; clawpen retries every \
    minute";

/// How reconnecting is paced: quickly at first, at most a minute apart, never giving up.
const RECONNECT: Backoff = Backoff {
    base: Duration::from_secs(1),
    factor: 2,
    cap: Duration::from_secs(60),
    max_attempts: u32::MAX,
    max_rate_wait: Duration::MAX,
};

/// How long to wait before retrying after close code 4014.
const INTENT_RETRY: Duration = Duration::from_secs(60);

/// A session that can be resumed.
#[derive(Clone, Debug)]
struct Session {
    id: String,
    /// The last dispatch's sequence number.
    seq: u64,
    /// Where to resume (READY's `resume_gateway_url`), else the gateway's URL.
    url: Option<String>,
}

/// How one connection ended.
enum Ended {
    Shutdown,
    /// Connect again; `resume: false` when the session is no longer valid (close codes
    /// 4007, 4009).
    Reconnect {
        resume: bool,
    },
    /// The gateway refused the message content intent.
    Intents,
    /// Nothing to gain from reconnecting (a refused token, bad intents).
    Fatal(String),
}

impl DiscordAdapter {
    /// Runs the gateway until `shutdown`, handing events to `events` in order. Returns an
    /// error only when reconnecting cannot help (a refused token).
    pub(super) async fn gateway(
        &self,
        events: mpsc::Sender<Event>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        let mut session: Option<Session> = None;
        let mut attempts = Attempts::new(RECONNECT);
        loop {
            let ended = match self.gateway_url(&shutdown).await? {
                None => return Ok(()),
                Some(url) => {
                    let url = session.as_ref().and_then(|s| s.url.clone()).unwrap_or(url);
                    let mut pending = None;
                    let ended = self
                        .connection(&url, &mut session, &events, &mut pending, &shutdown)
                        .await;
                    // A dispatch read but not yet handed over counts as received (its
                    // sequence number is the session's): it must not be lost with the
                    // connection, since a resume will not replay it.
                    if let Some(event) = pending {
                        if events.send(event).await.is_err() {
                            return Ok(());
                        }
                    }
                    ended
                }
            };
            let pause = match ended {
                Ended::Shutdown => return Ok(()),
                Ended::Fatal(why) => {
                    tracing::error!(
                        adapter = PLATFORM,
                        why,
                        "the Discord gateway refused the bot; not reconnecting"
                    );
                    self.set_trouble(Some(why.clone()));
                    return Err(AdapterError::Rejected(why));
                }
                Ended::Intents => {
                    tracing::error!(adapter = PLATFORM, "{INTENT_REFUSED}");
                    self.set_trouble(Some(INTENT_REFUSED.to_string()));
                    INTENT_RETRY
                }
                Ended::Reconnect { .. } if self.connected_once() => {
                    // It worked a moment ago: start the backoff over.
                    attempts = Attempts::new(RECONNECT);
                    Duration::ZERO
                }
                Ended::Reconnect { .. } => attempts
                    .failed(&AdapterError::Transport("gateway".into()))
                    .unwrap_or(RECONNECT.cap),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// The gateway's URL, from `GET /gateway/bot`; `None` if shut down first.
    async fn gateway_url(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<String>, AdapterError> {
        let mut attempts = Attempts::new(RECONNECT);
        loop {
            let request = Request::new(Route::GatewayBot, LightMethod::Get);
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                result = self.rest.json::<Value>(request, None) => result,
            };
            let error = match result {
                Ok(answer) => match answer.get("url").and_then(Value::as_str) {
                    Some(url) => return Ok(Some(url.to_string())),
                    None => AdapterError::Transport("GET /gateway/bot named no URL".into()),
                },
                Err(error @ AdapterError::Rejected(_)) => {
                    self.set_trouble(Some(error.to_string()));
                    return Err(error);
                }
                Err(error) => error,
            };
            let pause = attempts.failed(&error).unwrap_or(RECONNECT.cap);
            tracing::warn!(adapter = PLATFORM, %error, ?pause, "cannot reach Discord yet");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One websocket connection, from HELLO until it ends.
    async fn connection(
        &self,
        base: &str,
        session: &mut Option<Session>,
        events: &mpsc::Sender<Event>,
        pending: &mut Option<Event>,
        shutdown: &CancellationToken,
    ) -> Ended {
        let url = format!("{}/?v={VERSION}&encoding=json", base.trim_end_matches('/'));
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            connected = self.open(&url) => connected,
        };
        let mut socket = match connected {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(adapter = PLATFORM, %error, "cannot connect to the Discord gateway");
                self.set_trouble(Some(format!(
                    "cannot connect to the Discord gateway: {error}"
                )));
                return Ended::Reconnect { resume: true };
            }
        };
        self.mark_connected(false);
        // The next frames, until one names the heartbeat interval.
        let interval = loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => return Ended::Shutdown,
                frame = socket.next() => frame,
            };
            match read(frame) {
                Read::Frame(f) if f.op == op::HELLO => {
                    let ms = f.d.get("heartbeat_interval").and_then(Value::as_u64);
                    break Duration::from_millis(ms.unwrap_or(41_250).max(100));
                }
                Read::Frame(_) | Read::Skip => continue,
                Read::Closed(ended) => return ended,
            }
        };
        let hello = match session {
            Some(s) => {
                json!({"op": op::RESUME, "d": {"token": self.token(), "session_id": s.id, "seq": s.seq}})
            }
            None => {
                json!({"op": op::IDENTIFY, "d": {"token": self.token(), "intents": intents().bits(),
                "properties": {"os": std::env::consts::OS, "browser": "clawpen", "device": "clawpen"}}})
            }
        };
        if socket.send(Frame::text(hello.to_string())).await.is_err() {
            return Ended::Reconnect { resume: true };
        }
        // The first beat at a random point of the interval, as Discord asks.
        let first = interval.mul_f64(crate::access::random_u64() as f64 / u64::MAX as f64);
        let mut beat = interval_at(Instant::now() + first, interval);
        beat.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut acked = true;
        // `pending` holds a dispatch read but not yet taken by the handler: reading stops
        // until it is, so a slow handler slows the socket rather than growing a queue, and
        // heartbeats go on.
        loop {
            let seq = session.as_ref().map(|s| s.seq);
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = socket.close(None).await;
                    return Ended::Shutdown;
                }
                _ = beat.tick() => {
                    if !acked {
                        tracing::warn!(adapter = PLATFORM, "no heartbeat ACK from the Discord gateway; reconnecting");
                        return Ended::Reconnect { resume: true };
                    }
                    acked = false;
                    let frame = json!({"op": op::HEARTBEAT, "d": seq}).to_string();
                    if socket.send(Frame::text(frame)).await.is_err() {
                        return Ended::Reconnect { resume: true };
                    }
                }
                permit = events.reserve(), if pending.is_some() => {
                    let Ok(permit) = permit else { return Ended::Shutdown };
                    if let Some(event) = pending.take() {
                        permit.send(event);
                    }
                }
                frame = socket.next(), if pending.is_none() => {
                    let frame = match read(frame) {
                        Read::Frame(frame) => frame,
                        Read::Skip => continue,
                        Read::Closed(ended) => {
                            if matches!(ended, Ended::Reconnect { resume: false }) {
                                *session = None;
                            }
                            return ended;
                        }
                    };
                    match frame.op {
                        op::DISPATCH => *pending = self.dispatch(frame, session),
                        op::HEARTBEAT => {
                            let frame = json!({"op": op::HEARTBEAT, "d": seq}).to_string();
                            if socket.send(Frame::text(frame)).await.is_err() {
                                return Ended::Reconnect { resume: true };
                            }
                        }
                        op::HEARTBEAT_ACK => acked = true,
                        op::RECONNECT => return Ended::Reconnect { resume: true },
                        op::INVALID_SESSION => {
                            if frame.d.as_bool() != Some(true) {
                                *session = None;
                            }
                            return Ended::Reconnect { resume: true };
                        }
                        other => tracing::debug!(adapter = PLATFORM, op = other, "ignoring a gateway opcode"),
                    }
                }
            }
        }
    }

    /// Opens the websocket at `url`, through the operator's proxy and trusting the extra
    /// CAs as every outbound client does.
    async fn open(&self, url: &str) -> Result<WebSocketStream<Stream>, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let stream = self.egress.connect(&parsed).await?;
        let (socket, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(|e| format!("the websocket handshake with {url}: {e}"))?;
        Ok(socket)
    }

    /// Reads one dispatch: READY and RESUMED keep the session; the event is returned for the
    /// handler, or `None` when it is skipped (with a log line).
    fn dispatch(&self, frame: wire::Frame, session: &mut Option<Session>) -> Option<Event> {
        let name = frame.t.unwrap_or_default();
        if let (Some(seq), Some(s)) = (frame.s, session.as_mut()) {
            s.seq = s.seq.max(seq);
        }
        match wire::read(&name, frame.d) {
            Ok(Event::Ready(ready)) => {
                *session = Some(Session {
                    id: ready.session_id.clone(),
                    seq: frame.s.unwrap_or(0),
                    url: ready.resume_gateway_url.clone(),
                });
                self.mark_connected(true);
                tracing::info!(adapter = PLATFORM, bot = %ready.user.username, "connected to the Discord gateway");
                Some(Event::Ready(ready))
            }
            Ok(Event::Resumed) => {
                self.mark_connected(true);
                tracing::info!(adapter = PLATFORM, "resumed the Discord gateway session");
                None
            }
            Ok(Event::Ignored) => None,
            Ok(Event::Unknown) => {
                tracing::info!(adapter = PLATFORM, event = %name, seq = ?frame.s, "skipping a gateway event of an unknown type");
                None
            }
            Ok(event) => Some(event),
            Err(error) => {
                tracing::warn!(adapter = PLATFORM, event = %name, seq = ?frame.s, %error, "skipping a malformed gateway dispatch");
                None
            }
        }
    }
}

/// One websocket message, read.
enum Read {
    Frame(wire::Frame),
    /// Nothing to act on (a ping, a frame that does not read: logged).
    Skip,
    Closed(Ended),
}

fn read(frame: Option<Result<Frame, tokio_tungstenite::tungstenite::Error>>) -> Read {
    match frame {
        Some(Ok(Frame::Text(text))) => match serde_json::from_str::<wire::Frame>(&text) {
            Ok(frame) => Read::Frame(frame),
            Err(error) => {
                tracing::warn!(adapter = PLATFORM, %error, "skipping a gateway frame that does not read");
                Read::Skip
            }
        },
        Some(Ok(Frame::Close(close))) => {
            let code = close.as_ref().map(|c| u16::from(c.code));
            let reason = close.map(|c| c.reason.to_string()).unwrap_or_default();
            tracing::info!(
                adapter = PLATFORM,
                ?code,
                reason,
                "the Discord gateway closed the connection"
            );
            Read::Closed(match code {
                Some(4014) => Ended::Intents,
                Some(4004) => Ended::Fatal("Discord refused the bot token (gateway close code 4004); check DISCORD_BOT_TOKEN".into()),
                Some(4013) => Ended::Fatal("Discord refused the gateway intents (close code 4013)".into()),
                Some(c @ 4010..=4012) => Ended::Fatal(format!("the Discord gateway refused the session (close code {c}: {reason})")),
                Some(4007 | 4009) => Ended::Reconnect { resume: false },
                _ => Ended::Reconnect { resume: true },
            })
        }
        Some(Ok(_)) => Read::Skip,
        Some(Err(error)) => {
            tracing::info!(adapter = PLATFORM, %error, "the Discord gateway connection failed");
            Read::Closed(Ended::Reconnect { resume: true })
        }
        None => Read::Closed(Ended::Reconnect { resume: true }),
    }
}
