//! Forwarding a checked model request and streaming the answer back to the box.

use clawpen_protocol::{ResponsePart, MODEL_RESPONSE_HEADERS as RESPONSE_HEADERS};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Response, StatusCode};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::chunk::{pieces, Utf8Chunks};
use super::meter::TokenMeter;
use super::provider::Outgoing;
use super::{seconds, Settings, TunnelError};

/// A box's model request, as it arrived.
#[derive(Debug)]
pub(super) struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    pub body: String,
}

/// Send `outgoing` and stream the answer to `out`: `Head`, `Body`*, `End`. Token usage is
/// passed to `count` as the answer reports it. `Ok` also when the box went away mid-way
/// (nothing is left to tell it); an error after `Head` means the stream broke.
pub(super) async fn forward(
    client: &reqwest::Client,
    settings: &Settings,
    outgoing: Outgoing,
    count: impl Fn(u64),
    out: &mpsc::Sender<ResponsePart>,
) -> Result<(), TunnelError> {
    let idle = settings.model_idle_timeout;
    let host = outgoing.url.host_str().unwrap_or("?").to_string();
    let request = client
        .post(outgoing.url)
        .headers(outgoing.headers)
        .body(outgoing.body);
    let mut response = match timeout(idle, request.send()).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            let chain = error_chain(&e);
            // A forward proxy that refuses the CONNECT: its policy, not the provider.
            let proxy = if chain.contains("tunnel error") {
                " (the proxy refused to connect there: is the host on its allowlist?)"
            } else {
                ""
            };
            return Err(TunnelError::Unreachable(format!(
                "could not reach the model provider at {host}{proxy}: {chain}"
            )));
        }
        Err(_) => {
            return Err(TunnelError::Unreachable(format!(
                "the model provider at {host} did not answer within {}",
                seconds(idle)
            )))
        }
    };
    if matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        tracing::warn!(status = %response.status(), provider = %host, "the model provider refused the bridge's API key; check the configured key");
    }
    let head = head_of(&response);
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if out.send(head).await.is_err() {
        return Ok(());
    }
    let mut meter = TokenMeter::new(content_type.as_deref());
    let mut utf8 = Utf8Chunks::default();
    let mut received = 0usize;
    loop {
        let chunk = match timeout(idle, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                count(meter.finish());
                return Err(TunnelError::Broken(format!(
                    "the model provider's response broke off after {received} bytes: {}",
                    error_chain(&e)
                )));
            }
            Err(_) => {
                count(meter.finish());
                return Err(TunnelError::Broken(format!(
                    "the model provider's response stalled: nothing for {} after {received} bytes",
                    seconds(idle)
                )));
            }
        };
        received += chunk.len();
        count(meter.feed(&chunk));
        if !send_text(out, &utf8.push(&chunk)).await {
            return Ok(());
        }
    }
    count(meter.finish());
    if send_text(out, &utf8.finish()).await {
        let _ = out.send(ResponsePart::End).await;
    }
    Ok(())
}

/// The response's status and the headers worth passing on.
fn head_of(response: &Response) -> ResponsePart {
    let headers = RESPONSE_HEADERS
        .iter()
        .filter_map(|name| {
            let value = response.headers().get(*name)?.to_str().ok()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    ResponsePart::Head {
        status: response.status().as_u16(),
        headers,
    }
}

/// Send `text` as `Body` parts; false if the box is gone.
pub(super) async fn send_text(out: &mpsc::Sender<ResponsePart>, text: &str) -> bool {
    for piece in pieces(text) {
        let part = ResponsePart::Body {
            data: piece.to_string(),
        };
        if out.send(part).await.is_err() {
            return false;
        }
    }
    true
}

/// An error with its causes, `outer: inner: innermost` (reqwest's own message alone says
/// little more than "error sending request").
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
