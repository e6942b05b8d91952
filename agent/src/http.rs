//! The in-box HTTP endpoint: the tunnel as plain HTTP on loopback, for external harnesses.
//!
//! An agent program in the box (see `harness`) is configured with a base URL and a
//! placeholder key, as if it talked to the provider directly. This endpoint takes its
//! requests on 127.0.0.1, keeps only the headers that describe the request (content type,
//! accept, Anthropic's version and beta flags; never a key) and forwards them as
//! `Request::Model`; the answer streams back as it arrives, with the provider's status,
//! and no faster than the client reads it: the tunnel grants the bridge credit only for
//! what this server has taken, so a client that reads slowly slows the bridge (and the
//! provider) down rather than losing its answer.
//! Paths: `/v1/messages` (and `/v1/messages/count_tokens`) go on as they are,
//! `/v1/chat/completions` and `/chat/completions` as `/chat/completions`; a query string
//! (`?beta=true`) is dropped.
//!
//! The server is deliberately minimal HTTP/1.1: one request per connection (answers say
//! `Connection: close`), bodies by `Content-Length` only (up to [`MAX_BODY`]), answers in
//! chunked encoding to HTTP/1.1 clients and close-delimited to HTTP/1.0 ones. That covers
//! SDKs, curl and busybox `wget`.

use std::sync::Arc;
use std::time::Duration;

use clawpen_protocol::{Request, ResponsePart};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::tunnel::Tunnel;

/// The largest request body accepted; bigger gets 413.
pub const MAX_BODY: usize = 4 << 20;

/// The largest request head (request line and headers); bigger gets 431.
const MAX_HEAD: usize = 16 * 1024;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

/// How long a client may take to send its request, so a silent one cannot hold a slot.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long to read the rest of a refused request before closing.
const DRAIN: Duration = Duration::from_secs(1);

/// Request headers passed on to the bridge (lowercase). Everything else is dropped, the
/// placeholder `authorization` and `x-api-key` above all.
const FORWARDED: &[&str] = &[
    "content-type",
    "accept",
    "anthropic-version",
    "anthropic-beta",
];

/// Listen on loopback; port 0 picks a free one.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port)).await
}

/// Serve connections until the task is dropped (which drops, and so stops, them all).
pub async fn serve(listener: TcpListener, tunnel: Tunnel) {
    // Caps concurrent connections: a permit is taken before accepting and held by the
    // connection's task.
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Usually out of file descriptors; give it a moment rather than spin.
                eprintln!("clawpen-agent: endpoint: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tunnel = tunnel.clone();
        connections.spawn(async move {
            if let Err(err) = connection(stream, &tunnel).await {
                eprintln!("clawpen-agent: endpoint: connection ended: {err}");
            }
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
}

/// A request the server will not forward: its status and why.
#[derive(Debug, PartialEq, Eq)]
struct Refusal(u16, String);

/// What the server needs of a request.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
    /// HTTP/1.0 clients get a close-delimited answer instead of chunks.
    http10: bool,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

async fn connection(mut stream: TcpStream, tunnel: &Tunnel) -> std::io::Result<()> {
    let request = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await;
    let (head, path, body) = match request {
        Err(_) => return refuse(&mut stream, &Refusal(408, "request timeout".into())).await,
        Ok(Err(refusal)) => return refuse(&mut stream, &refusal).await,
        Ok(Ok(request)) => request,
    };
    // The first of each: busybox `wget --post-data` adds its own form content type after
    // the one given with `--header`.
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in &head.headers {
        let name = name.to_ascii_lowercase();
        if FORWARDED.contains(&name.as_str()) && !headers.iter().any(|(seen, _)| *seen == name) {
            headers.push((name, value.clone()));
        }
    }
    let request = Request::Model {
        method: "POST".into(),
        path: path.into(),
        headers,
        body,
    };
    let mut response = match tunnel.send(request).await {
        Ok(response) => response,
        Err(err) => return refuse(&mut stream, &Refusal(502, err.to_string())).await,
    };
    let (status, headers) = match response.next().await {
        Ok(ResponsePart::Head { status, headers }) => (status, headers),
        Ok(ResponsePart::Failed { message }) => {
            return refuse(&mut stream, &Refusal(502, message)).await
        }
        Ok(_) => {
            let refusal = Refusal(502, "the bridge's answer had no status".into());
            return refuse(&mut stream, &refusal).await;
        }
        Err(err) => return refuse(&mut stream, &Refusal(504, err.to_string())).await,
    };
    let chunked = !head.http10;
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in &headers {
        if clawpen_protocol::MODEL_RESPONSE_HEADERS
            .iter()
            .any(|keep| name.eq_ignore_ascii_case(keep))
            && clean(value)
        {
            out.push_str(&format!("{}: {value}\r\n", name.to_ascii_lowercase()));
        }
    }
    if chunked {
        out.push_str("transfer-encoding: chunked\r\n");
    }
    out.push_str("cache-control: no-cache\r\nconnection: close\r\n\r\n");
    stream.write_all(out.as_bytes()).await?;
    stream.flush().await?;
    loop {
        match response.next().await {
            Ok(ResponsePart::Body { data }) if data.is_empty() => {}
            Ok(ResponsePart::Body { data }) => {
                if chunked {
                    let size = format!("{:x}\r\n", data.len());
                    stream.write_all(size.as_bytes()).await?;
                    stream.write_all(data.as_bytes()).await?;
                    stream.write_all(b"\r\n").await?;
                } else {
                    stream.write_all(data.as_bytes()).await?;
                }
                stream.flush().await?;
            }
            Ok(ResponsePart::End) => {
                if chunked {
                    stream.write_all(b"0\r\n\r\n").await?;
                }
                stream.flush().await?;
                return stream.shutdown().await;
            }
            // Cut off: close without the last chunk, so the client sees it incomplete.
            Ok(ResponsePart::Failed { message }) => {
                eprintln!("clawpen-agent: endpoint: answer failed mid-way: {message}");
                return Ok(());
            }
            Ok(ResponsePart::Head { .. }) => return Ok(()),
            Err(err) => {
                eprintln!("clawpen-agent: endpoint: answer cut off: {err}");
                return Ok(());
            }
        }
    }
}

/// Read and check one request: its head, the tunnel path it maps to, and its body.
async fn read_request(stream: &mut TcpStream) -> Result<(Head, &'static str, String), Refusal> {
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(Refusal(431, "request head too large".into()));
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(Refusal(400, "incomplete request".into())),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    };
    let head = parse_head(buf.get(..end).unwrap_or_default())?;
    let path = route(&head)?;
    if head.header("transfer-encoding").is_some() {
        return Err(Refusal(411, "send the body with Content-Length".into()));
    }
    let length: usize = match head.header("content-length") {
        None => return Err(Refusal(411, "Content-Length required".into())),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|_| Refusal(400, "bad Content-Length".into()))?,
    };
    if length > MAX_BODY {
        return Err(Refusal(413, format!("body larger than {MAX_BODY} bytes")));
    }
    if head
        .header("expect")
        .is_some_and(|value| value.eq_ignore_ascii_case("100-continue"))
    {
        // curl waits for this before sending a body over 1 KB.
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| Refusal(400, "client went away".into()))?;
    }
    let mut body = buf.split_off(end);
    body.truncate(length);
    let mut rest = vec![0; length - body.len()];
    stream
        .read_exact(&mut rest)
        .await
        .map_err(|_| Refusal(400, "incomplete body".into()))?;
    body.extend_from_slice(&rest);
    let body = String::from_utf8(body).map_err(|_| Refusal(400, "the body is not UTF-8".into()))?;
    Ok((head, path, body))
}

/// The tunnel path for a request, or why there is none.
fn route(head: &Head) -> Result<&'static str, Refusal> {
    let path = head.target.split('?').next().unwrap_or_default();
    let path = match path {
        "/v1/messages" => "/v1/messages",
        "/v1/messages/count_tokens" => "/v1/messages/count_tokens",
        "/v1/chat/completions" | "/chat/completions" => "/chat/completions",
        _ => return Err(Refusal(404, format!("no endpoint at {path}"))),
    };
    if head.method != "POST" {
        return Err(Refusal(405, format!("{path} takes POST")));
    }
    Ok(path)
}

fn parse_head(bytes: &[u8]) -> Result<Head, Refusal> {
    let bad = || Refusal(400, "malformed request".into());
    let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().ok_or_else(bad)?.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Refusal(505, "HTTP/1.x only".into()));
    }
    let mut headers = Vec::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        http10: version == "HTTP/1.0",
        headers,
    })
}

/// Answer with an error the SDKs understand: Anthropic's error shape, which also has the
/// `error.message` OpenAI clients look for.
async fn refuse(stream: &mut TcpStream, refusal: &Refusal) -> std::io::Result<()> {
    let Refusal(status, message) = refusal;
    let body = json!({
        "type": "error",
        "error": {"type": "api_error", "message": format!("clawpen endpoint: {message}")},
    })
    .to_string();
    let out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        reason(*status),
        body.len()
    );
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await?;
    // Read (and drop) what the client still sends, such as the rest of a body too large to
    // take: closing with unread data would reset the connection and lose our answer.
    let drain = async {
        let mut sink = [0u8; 8192];
        while let Ok(1..) = stream.read(&mut sink).await {}
    };
    let _ = tokio::time::timeout(DRAIN, drain).await;
    Ok(())
}

/// A header value safe to copy into our answer (no line breaks smuggled in).
fn clean(value: &str) -> bool {
    !value.contains(['\r', '\n'])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        529 => "Overloaded",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, Refusal> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn heads_parse_and_route() -> Result<(), Refusal> {
        let parsed = head("POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nX-Api-Key: k\r\nContent-Length: 2\r\n\r\n")?;
        assert_eq!(parsed.method, "POST");
        assert!(!parsed.http10);
        assert_eq!(parsed.header("content-length"), Some("2"));
        assert_eq!(route(&parsed), Ok("/v1/messages"));
        let openai = head("POST /v1/chat/completions HTTP/1.0\r\n\r\n")?;
        assert!(openai.http10);
        assert_eq!(route(&openai), Ok("/chat/completions"));
        assert_eq!(
            route(&head("POST /chat/completions HTTP/1.1\r\n\r\n")?),
            Ok("/chat/completions")
        );
        assert_eq!(
            route(&head("GET /v1/models HTTP/1.1\r\n\r\n")?).map_err(|r| r.0),
            Err(404)
        );
        assert_eq!(
            route(&head("GET /v1/messages HTTP/1.1\r\n\r\n")?).map_err(|r| r.0),
            Err(405)
        );
        assert_eq!(head("garbage\r\n\r\n").map_err(|r| r.0), Err(400));
        assert_eq!(head("GET / SPDY/3\r\n\r\n").map_err(|r| r.0), Err(505));
        Ok(())
    }
}
