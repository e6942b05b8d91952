//! The fake's HTTP side: accepting connections, routing `/bot<token>/<method>` and
//! `/file/bot<token>/<path>`, checking the token, decoding JSON and multipart bodies, and
//! recording each call or serving the failure injected for it. What a method does is in `api`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::api::{self, error};
use super::{State, TOKEN};

/// Serves `listener` until the returned task is aborted, which drops the JoinSet of
/// connections and so aborts them too.
pub(super) fn spawn(listener: TcpListener, shared: Arc<State>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut open = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let state = shared.clone();
            open.spawn(async move {
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(serve(&state, request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn serve(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/file/bot") {
        return download(state, rest);
    }
    let Some((token, method)) = path
        .strip_prefix("/bot")
        .and_then(|rest| rest.split_once('/'))
    else {
        return error(404, "Not Found");
    };
    if token != TOKEN {
        return error(401, "Unauthorized");
    }
    let method = method.to_ascii_lowercase();
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return error(400, "Bad Request: unreadable body"),
    };
    let (params, files) = if let Some(boundary) = content_type
        .strip_prefix("multipart/form-data")
        .and_then(|rest| rest.split("boundary=").nth(1))
    {
        multipart(&body, boundary.trim_matches('"'))
    } else if body.is_empty() {
        (json!({}), Vec::new())
    } else {
        match serde_json::from_slice(&body) {
            Ok(params) => (params, Vec::new()),
            Err(_) => return error(400, "Bad Request: invalid JSON"),
        }
    };
    let failure = {
        let mut inner = state.lock();
        inner.calls.push((method.clone(), params.clone()));
        let failure = inner
            .failures
            .get_mut(&method)
            .and_then(VecDeque::pop_front);
        if failure.is_some() {
            *inner.failed.entry(method.clone()).or_default() += 1;
        }
        failure
    };
    if let Some(failure) = failure {
        return api::failed(failure);
    }
    api::call(state, &method, params, files).await
}

/// `GET /file/bot<token>/<path>`: checks the token and decodes the path; [`api::file`]
/// serves the file.
fn download(state: &State, rest: &str) -> Response<Full<Bytes>> {
    let Some((token, path)) = rest.split_once('/') else {
        return error(404, "Not Found");
    };
    if token != TOKEN {
        return error(401, "Unauthorized");
    }
    // Clients percent-encode the file path as one URL segment (`photos%2Ffile_1.jpg`).
    let path = percent_decode(path);
    api::file(state, &path)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = text
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a multipart/form-data body: text fields as parameters, files as
/// (field, file name, contents).
fn multipart(body: &[u8], boundary: &str) -> (Value, Vec<(String, String, Vec<u8>)>) {
    let delimiter = format!("--{boundary}");
    let mut params = Map::new();
    let mut files = Vec::new();
    for part in split_bytes(body, delimiter.as_bytes()) {
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        if part.starts_with(b"--") || part.is_empty() {
            continue;
        }
        let Some(split) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let headers = String::from_utf8_lossy(&part[..split]).to_string();
        let content = &part[split + 4..];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let disposition = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .unwrap_or_default();
        let attr = |name: &str| {
            disposition
                .split(';')
                .map(str::trim)
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(|v| v.trim_matches('"').to_string())
        };
        let Some(field) = attr("name") else { continue };
        match attr("filename") {
            Some(file_name) => files.push((field, file_name, content.to_vec())),
            None => {
                params.insert(
                    field,
                    Value::String(String::from_utf8_lossy(content).into()),
                );
            }
        }
    }
    (Value::Object(params), files)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split_bytes<'a>(mut body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = find(body, delimiter) {
        parts.push(&body[..at]);
        body = &body[at + delimiter.len()..];
    }
    parts.push(body);
    parts
}
