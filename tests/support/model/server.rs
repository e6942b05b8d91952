//! The HTTP plumbing of the fake model and the page server: a loopback HTTP/1 server that
//! counts its connections and aborts them all when dropped, and the responses both build,
//! whole or streamed (and possibly broken off).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::Hold;

/// A response body: whole, or streamed frame by frame (and possibly broken off).
pub(super) type Body = BoxBody<Bytes, std::io::Error>;

/// The pause between two streamed events, so that they arrive as separate chunks.
const EVENT_GAP: Duration = Duration::from_millis(5);

/// Streamed events waiting to be written to a connection.
const EVENT_BUFFER: usize = 16;

/// An HTTP/1 server on a loopback port, stopped (with all its connections) on drop.
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    pub(super) connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Server {
    pub(super) async fn start<F, Fut>(answer: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
        Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind a loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local address: {e}"));
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            // Dropped with this task, which aborts every connection (stalled ones too).
            let mut open = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                open.spawn(async move {
                    let service = service_fn(move |request| {
                        let answer = answer.clone();
                        async move { Ok::<_, Infallible>(answer(request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while open.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let body = Full::new(Bytes::from(body)).map_err(|never| match never {});
    let mut response = Response::new(BodyExt::boxed(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

pub(super) fn json_response(status: u16, body: &Value) -> Response<Body> {
    respond(status, "application/json", body.to_string().into_bytes())
}

/// A streamed response: `frames` are written with a short pause between them; `broken`
/// ends the body with an error, which makes hyper drop the connection mid-stream; `hold`
/// `(i, hold)` stops before frame `i` until the test releases it (or the client goes away).
pub(super) fn stream_response(
    content_type: &str,
    frames: Vec<Vec<u8>>,
    broken: bool,
    hold: Option<(usize, Hold)>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(EVENT_BUFFER);
    tokio::spawn(async move {
        for (i, frame) in frames.into_iter().enumerate() {
            if let Some((_, hold)) = hold.as_ref().filter(|(at, _)| *at == i) {
                if !hold.hold(tx.closed()).await {
                    return;
                }
            }
            if tx.send(Ok(Frame::data(Bytes::from(frame)))).await.is_err() {
                return;
            }
            tokio::time::sleep(EVENT_GAP).await;
        }
        if broken {
            let _ = tx
                .send(Err(std::io::Error::other("the fake drops the stream")))
                .await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}
