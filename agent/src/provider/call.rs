//! One model call through the tunnel: the request, the streamed answer, the retries.
//!
//! The request goes to the bridge as `Request::Model` with a path, the format's headers
//! and a JSON body, and no credential (the bridge adds the key). The answer's `Head` says
//! whether it succeeded; a success is a server-sent event stream that is parsed as it
//! arrives, its text passed on to the reply at once; a failure's body is read for the
//! provider's message. [`RetryPolicy`] decides what a failure means.

use clawpen_protocol::{Request, ResponsePart};

use super::retry::{retry_after, Decision, Failure, RetryPolicy};
use super::run::{Out, OutputFull};
use super::sse::SseParser;
use super::wire::{error_message, Format, HttpRequest, ModelRequest, Reply};
use crate::tunnel::{Tunnel, TunnelError};

/// The most bytes of an error body kept for its message.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Calls one provider's model through the tunnel; cheap to clone.
#[derive(Clone, Debug)]
pub struct Model {
    tunnel: Tunnel,
    format: Format,
}

impl Model {
    /// Calls in `format` through `tunnel`.
    pub fn new(tunnel: Tunnel, format: Format) -> Self {
        Model { tunnel, format }
    }

    /// The wire format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Make the call, retrying as the policy says. With `stream`, the answer's text goes
    /// to `out` as it arrives. `Err` is the message for the user.
    pub async fn call(
        &self,
        request: &ModelRequest<'_>,
        out: &mut Out,
        stream: bool,
    ) -> Result<Reply, String> {
        let http = self.format.request(request);
        let mut policy = RetryPolicy::default();
        loop {
            let mut streamed = false;
            let mark = out.mark();
            let failure = match self.attempt(&http, out, stream, &mut streamed).await {
                Err(full) => return Err(full.to_string()),
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(failure)) => failure,
            };
            match policy.decide(&failure) {
                Decision::GiveUp(message) => {
                    eprintln!("clawpen-agent: model call failed: {failure:?}");
                    return Err(message);
                }
                Decision::Retry(wait) => {
                    eprintln!(
                        "clawpen-agent: model call failed, retrying in {wait:?}: {failure:?}"
                    );
                    out.status(format!(
                        "{}; retrying in {} s",
                        brief(&failure),
                        wait.as_secs_f32().ceil()
                    ))
                    .await;
                    if streamed {
                        // The next attempt answers from the start: its text replaces this
                        // one's in the chat instead of following it.
                        out.rewind(mark).await;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One try. The outer `Err` is the output limit, which ends the turn at once.
    async fn attempt(
        &self,
        http: &HttpRequest,
        out: &mut Out,
        stream: bool,
        streamed: &mut bool,
    ) -> Result<Result<Reply, Failure>, OutputFull> {
        let request = Request::Model {
            method: "POST".into(),
            path: http.path.into(),
            headers: http.headers.clone(),
            body: http.body.clone(),
        };
        let mut response = match self.tunnel.send(request).await {
            Ok(response) => response,
            Err(err) => return Ok(Err(Failure::Bridge(err.to_string()))),
        };
        let (status, headers) = match response.next().await {
            Ok(ResponsePart::Head { status, headers }) => (status, headers),
            Ok(ResponsePart::Failed { message }) => return Ok(Err(Failure::Bridge(message))),
            Ok(_) => return Ok(Err(Failure::Broken("the answer had no status".into()))),
            Err(err) => return Ok(Err(tunnel_failure(err))),
        };
        if !(200..300).contains(&status) {
            let mut body = String::new();
            while let Ok(ResponsePart::Body { data }) = response.next().await {
                if body.len() < MAX_ERROR_BODY {
                    body.push_str(&data);
                }
            }
            return Ok(Err(Failure::Status {
                status,
                retry_after: retry_after(&headers),
                message: error_message(&body),
            }));
        }
        let mut parser = SseParser::default();
        let mut assembler = self.format.assembler();
        loop {
            let data = match response.next().await {
                Ok(ResponsePart::Body { data }) => data,
                Ok(ResponsePart::End) => {
                    return Ok(assembler
                        .finish()
                        .map_err(|err| Failure::Broken(err.to_string())));
                }
                // Mid-answer, `Failed` means the bridge lost the provider's stream.
                Ok(ResponsePart::Failed { message }) => return Ok(Err(Failure::Broken(message))),
                Ok(ResponsePart::Head { .. }) => {
                    return Ok(Err(Failure::Broken("the answer had two heads".into())))
                }
                Err(err) => return Ok(Err(tunnel_failure(err))),
            };
            let events = match parser.push(&data) {
                Ok(events) => events,
                Err(err) => return Ok(Err(Failure::Broken(err.to_string()))),
            };
            for event in events {
                let deltas = match assembler.feed(&event) {
                    Ok(deltas) => deltas,
                    Err(err) => return Ok(Err(Failure::Broken(err.to_string()))),
                };
                if stream {
                    for delta in deltas {
                        *streamed = true;
                        out.text(&delta).await?;
                    }
                }
            }
        }
    }
}

/// What a tunnel error means for the call: a bridge that re-attached (it restarted) is
/// not the provider's failure; no progress means the provider went quiet, since the
/// bridge passes on whatever it gets.
fn tunnel_failure(error: TunnelError) -> Failure {
    match error {
        TunnelError::Reattached => Failure::Reattached,
        TunnelError::Stalled(after) => Failure::Stalled(after),
        other => Failure::Broken(other.to_string()),
    }
}

/// A failure in a few words, for a status line.
fn brief(failure: &Failure) -> String {
    match failure {
        Failure::Status { status: 429, .. } => "the model provider is rate limiting".into(),
        Failure::Status { status, .. } => format!("the model provider answered {status}"),
        Failure::Bridge(message) => message.clone(),
        Failure::Broken(_) => "the model's answer broke off".into(),
        Failure::Reattached => "the bridge reconnected".into(),
        Failure::Stalled(_) => "the model provider went quiet".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::run::Step;
    use super::super::wire::Message;
    use super::*;
    use crate::tunnel::NO_PROGRESS;
    use tokio::sync::mpsc;

    const OVERLOADED: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

    /// A bridge answering the n-th request with `answers[n]` (the last one repeats).
    fn bridge(answers: Vec<Vec<ResponsePart>>) -> Model {
        let (tunnel, mut requests) = Tunnel::new(NO_PROGRESS);
        let answering = tunnel.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(outgoing) = requests.recv().await {
                let crate::tunnel::Outgoing::Request { id, .. } = outgoing else {
                    continue;
                };
                let parts = answers
                    .get(n)
                    .or(answers.last())
                    .cloned()
                    .unwrap_or_default();
                for part in parts {
                    answering.deliver(id, part);
                }
                n += 1;
            }
        });
        Model::new(tunnel, Format::Anthropic)
    }

    /// Asks `model` "hi", streaming; returns the outcome and the steps it sent.
    async fn ask(model: &Model) -> (Result<Reply, String>, mpsc::Receiver<Step>) {
        let (steps_in, steps) = mpsc::channel(16);
        let mut out = Out::new(steps_in, 1024);
        let messages = [Message::user("hi")];
        let request = ModelRequest {
            model: "m",
            system: "s",
            messages: &messages,
            tools: &[],
            max_tokens: 10,
        };
        (model.call(&request, &mut out, true).await, steps)
    }

    fn head(status: u16) -> ResponsePart {
        ResponsePart::Head {
            status,
            headers: Vec::new(),
        }
    }

    fn body(data: &str) -> ResponsePart {
        ResponsePart::Body { data: data.into() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_that_goes_quiet_is_named_and_not_waited_for_twice() {
        // The bridge passes on whatever the provider sends: here, nothing at all.
        let model = bridge(vec![vec![]]);
        let started = tokio::time::Instant::now();
        let (result, _steps) = ask(&model).await;
        let Err(message) = result else {
            panic!("expected a failure: {result:?}")
        };
        assert!(message.contains("model provider sent nothing"), "{message}");
        assert!(!message.contains("bridge"), "{message}");
        assert_eq!(started.elapsed(), NO_PROGRESS, "waited once, not twice");
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_and_error_events_are_retried_then_reported() {
        let model = bridge(vec![
            vec![head(503), body("{}"), ResponsePart::End],
            vec![head(200), body(OVERLOADED), ResponsePart::End],
        ]);
        let (result, mut steps) = ask(&model).await;
        let Err(message) = result else {
            panic!("expected a failure: {result:?}")
        };
        assert!(message.contains("broke off twice"), "{message}");
        assert!(message.contains("Overloaded"), "{message}");
        let mut statuses = Vec::new();
        while let Some(Step::Status(text)) = steps.recv().await {
            statuses.push(text);
        }
        assert_eq!(
            statuses,
            [
                "the model provider answered 503; retrying in 1 s",
                "the model's answer broke off; retrying in 1 s"
            ]
        );
    }
}
