//! The metrics endpoint: `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1, a daemon
//! component started after the router and stopped before it.
//!
//! It is for a scraper and a supervisor on a private address (the default is loopback), so
//! it answers GET only, reads no body, bounds its connections and how long a request head
//! may take, and serves nothing a user could fill: no ids, no text.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Metrics, Readiness};
use crate::component::{Component, ComponentError};
use crate::router::Router;

/// Connections served at once; further ones wait in the listen backlog until one closes.
const MAX_CONNECTIONS: usize = 16;

/// How long a client may take to send a request head (a stalled client holds a connection
/// slot no longer than this).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The media type of the OpenMetrics text exposition, which Prometheus negotiates.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoint could not listen.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for metrics: {source}")]
pub struct MetricsError {
    /// The configured address.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// What the handlers read.
struct State {
    metrics: Metrics,
    router: Router,
    readiness: Readiness,
}

/// The endpoint as a component.
pub struct Server {
    listen: SocketAddr,
    state: Arc<State>,
    /// The address actually bound (a `:0` port is chosen by the system), once started.
    bound: OnceLock<SocketAddr>,
    /// Fired by `stop`: the accept loop and every connection end.
    stop: CancellationToken,
    /// The accept loop and the connections, waited for by `stopped`.
    tasks: TaskTracker,
}

/// The metrics endpoint on `listen`, serving `metrics` and the live figures of `router`.
pub fn component(
    listen: SocketAddr,
    metrics: Metrics,
    router: Router,
    readiness: Readiness,
) -> Arc<Server> {
    Arc::new(Server {
        listen,
        state: Arc::new(State {
            metrics,
            router,
            readiness,
        }),
        bound: OnceLock::new(),
        stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
    })
}

impl Server {
    /// Where it listens, once started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.bound.get().copied()
    }
}

#[async_trait]
impl Component for Server {
    fn name(&self) -> String {
        "metrics endpoint".into()
    }

    async fn start(&self) -> Result<(), ComponentError> {
        let listener = TcpListener::bind(self.listen).await.map_err(|source| {
            ComponentError::new(MetricsError {
                addr: self.listen,
                source,
            })
        })?;
        let bound = listener.local_addr().unwrap_or(self.listen);
        let _ = self.bound.set(bound);
        tracing::info!(listen = %bound, "serving /metrics, /healthz and /readyz");
        let (state, stop, tasks) = (self.state.clone(), self.stop.clone(), self.tasks.clone());
        self.tasks.spawn(accept(listener, state, stop, tasks));
        Ok(())
    }

    fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
    }

    async fn stopped(&self) {
        self.tasks.wait().await;
    }
}

/// Accepts connections until `stop`, each served in a task of its own.
async fn accept(
    listener: TcpListener,
    state: Arc<State>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics endpoint: accept failed");
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let (state, stop) = (state.clone(), stop.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "metrics endpoint: connection ended");
                    }
                }
                _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
    }
    match request.uri().path() {
        // The process is up and serving: nothing else is checked.
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" => {
            let report = state.readiness.check().await;
            let status = if report.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut body = serde_json::to_string(&report).unwrap_or_default();
            body.push('\n');
            reply(status, "application/json", body)
        }
        "/metrics" => {
            // The gauges are read from the router now rather than kept up to date on the
            // message path.
            state.metrics.set_boxes(
                state.router.live_boxes(),
                state.router.conversations_waiting(),
            );
            state.metrics.set_pool(
                state.router.warm_boxes(),
                state.router.sandbox().starts_waiting(),
            );
            reply(StatusCode::OK, OPENMETRICS, state.metrics.encode())
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: /metrics, /healthz or /readyz\n".into(),
        ),
    }
}
