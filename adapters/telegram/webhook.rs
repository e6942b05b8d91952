//! Receiving by webhook: Telegram posts each update to a public HTTPS URL, which reaches
//! this server (through the operator's reverse proxy or tunnel, which ends TLS).
//!
//! Every request must carry the secret token given to `setWebhook` in the
//! `X-Telegram-Bot-Api-Secret-Token` header; anything else is refused before its body is
//! read. An update is answered 200 only once the sink stored it; otherwise Telegram keeps
//! it and posts it again, which is the webhook's version of not moving the offset. One
//! connection at a time keeps each chat's messages in order.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use teloxide::payloads::SetWebhookSetters;
use teloxide::prelude::Requester;
use teloxide::types::AllowedUpdate;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use super::adapter::TelegramAdapter;
use super::config::is_secret_token;
use super::PLATFORM;
use crate::{AdapterError, InboundSink, SinkError};

/// The header Telegram returns the secret token in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// The largest update accepted; Telegram's are a few KiB.
const MAX_BODY: usize = 1 << 20;

/// How long open connections get to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// What one request needs.
struct Endpoint {
    adapter: Arc<TelegramAdapter>,
    sink: Arc<dyn InboundSink>,
    path: String,
    secret: String,
}

/// Registers the webhook and serves it until `shutdown`.
pub(super) async fn serve(
    adapter: Arc<TelegramAdapter>,
    sink: Arc<dyn InboundSink>,
    shutdown: CancellationToken,
) -> Result<(), AdapterError> {
    let config = &adapter.config;
    let url = config
        .webhook_url
        .as_deref()
        .and_then(|u| Url::parse(u).ok())
        .ok_or(AdapterError::Rejected(
            "telegram.webhook_url is not a URL".into(),
        ))?;
    let secret = match &config.webhook_secret {
        Some(secret) => secret.clone(),
        None => generated_secret(),
    };
    let addr = config
        .listen_addr()
        .map_err(|e| AdapterError::Rejected(format!("telegram.webhook_listen: {e}")))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| AdapterError::Transport(format!("listening on {addr}: {e}")))?;
    let set_webhook = || {
        let request = adapter
            .bot
            .set_webhook(url.clone())
            .secret_token(secret.clone())
            .allowed_updates([AllowedUpdate::Message])
            .max_connections(1);
        async move { request.await.map_err(super::api::adapter_error) }
    };
    let own = &super::api::OWN_BACKOFF;
    crate::stream::retry(own, &"setWebhook", set_webhook).await?;
    tracing::info!(adapter = PLATFORM, %addr, url = %url, "receiving Telegram updates by webhook");
    let endpoint = Arc::new(Endpoint {
        adapter: adapter.clone(),
        sink,
        path: url.path().to_string(),
        secret,
    });
    // Connection tasks, drained on shutdown.
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(adapter = PLATFORM, error = %e, "accepting a webhook connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (endpoint, shutdown) = (endpoint.clone(), shutdown.clone());
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let endpoint = endpoint.clone();
                async move { Ok::<_, Infallible>(endpoint.handle(request).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(adapter = PLATFORM, %peer, error = %e, "webhook connection ended");
            }
        });
    }
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            adapter = PLATFORM,
            open = connections.len(),
            "webhook connections still open at shutdown"
        );
    }
    Ok(())
}

impl Endpoint {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::POST || request.uri().path() != self.path {
            return status(StatusCode::NOT_FOUND);
        }
        let offered = request
            .headers()
            .get(SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !same(offered, &self.secret) {
            tracing::warn!(
                adapter = PLATFORM,
                "refusing a webhook request without the secret token"
            );
            return status(StatusCode::UNAUTHORIZED);
        }
        let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                tracing::warn!(adapter = PLATFORM, error = %e, "unreadable webhook request");
                return status(StatusCode::PAYLOAD_TOO_LARGE);
            }
        };
        let value = match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(e) => {
                // Posting it again would not make it readable: confirm it.
                tracing::warn!(adapter = PLATFORM, error = %e, "skipping a webhook update that is not JSON");
                return status(StatusCode::OK);
            }
        };
        match self.adapter.handle_update(&*self.sink, value).await {
            Ok(()) => status(StatusCode::OK),
            Err(SinkError::ShuttingDown) => status(StatusCode::SERVICE_UNAVAILABLE),
            Err(e) => {
                tracing::error!(adapter = PLATFORM, error = %e, "could not store a webhook update; Telegram will post it again");
                status(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// A secret for a webhook configured without one: 64 hex digits.
fn generated_secret() -> String {
    let secret: String = (0..4)
        .map(|_| format!("{:016x}", super::random_u64()))
        .collect();
    debug_assert!(is_secret_token(&secret));
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_valid_and_differ() {
        let (a, b) = (generated_secret(), generated_secret());
        assert!(is_secret_token(&a) && a.len() == 64);
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()) && !same(&a, &b) && !same(&a, "short"));
    }
}
