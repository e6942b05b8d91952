//! Test support: the built agent spoken to over pipes as the bridge would, and a scripted
//! fake of the bridge's tunnel that answers the agent's model requests with provider-style
//! server-sent events.
#![allow(dead_code)] // Each test file uses a different part of it.

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clawpen_protocol::{
    decode, encode, Event, EventBody, FromAgent, Request, ResponsePart, ToAgent, TurnMessage,
    TurnOptions,
};
use serde_json::{json, Value};

pub type TestResult = Result<(), Box<dyn Error>>;
pub type Fallible<T> = Result<T, Box<dyn Error>>;
pub type Headers = Vec<(String, String)>;

/// How long to wait for any one line before calling the agent stuck.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Lines the reader thread may hold that the test has not received yet.
const READ_AHEAD: usize = 64;

/// Every variable the agent reads, removed so the caller's environment cannot leak in.
const AGENT_VARS: &[&str] = &[
    "CLAWPEN_PROVIDER",
    "CLAWPEN_MODEL",
    "CLAWPEN_HARNESS",
    "CLAWPEN_WORKSPACE",
    "CLAWPEN_TUNNEL_PORT",
    "CLAWPEN_MAX_STEPS",
    "CLAWPEN_TURN_SECS",
    "CLAWPEN_MAX_OUTPUT_KB",
    "CLAWPEN_HISTORY_TOKENS",
    "CLAWPEN_MAX_TOKENS",
    "CLAWPEN_ECHO_DELAY_MS",
];

/// A running agent process.
pub struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Everything the agent wrote to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Start the agent with `envs` (on a free loopback port unless they say otherwise)
    /// and read its `Ready`.
    pub fn spawn(envs: &[(&str, &str)]) -> Fallible<Self> {
        let agent = Self::start(envs)?;
        match agent.recv()? {
            FromAgent::Ready { .. } => Ok(agent),
            other => Err(format!("expected Ready, got {other:?}").into()),
        }
    }

    /// Start the agent with `envs` without reading anything yet.
    pub fn start(envs: &[(&str, &str)]) -> Fallible<Self> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clawpen-agent"));
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in AGENT_VARS {
            command.env_remove(var);
        }
        command.env("CLAWPEN_TUNNEL_PORT", "0");
        command.envs(envs.iter().copied());
        let mut child = command.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, lines) = mpsc::sync_channel(READ_AHEAD);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Ok(mut log) = sink.lock() {
                    log.push(line);
                }
            }
        });
        Ok(Agent {
            child,
            stdin,
            lines,
            log,
        })
    }

    /// Write raw bytes to the agent's stdin (garbage included).
    pub fn send_raw(&mut self, bytes: &[u8]) -> TestResult {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    pub fn send(&mut self, message: &ToAgent) -> TestResult {
        self.send_raw(&encode(message)?)
    }

    /// The next line, which must be an event.
    pub fn recv_event(&self) -> Fallible<Event> {
        match self.recv_quiet()? {
            FromAgent::Event(event) => Ok(event),
            other => Err(format!("expected an event, got {other:?}").into()),
        }
    }

    /// Events up to and including the next `Final`.
    pub fn recv_turn(&self) -> Fallible<Vec<Event>> {
        let mut events = Vec::new();
        loop {
            let event = self.recv_event()?;
            let done = event.body == EventBody::Final;
            events.push(event);
            if done {
                return Ok(events);
            }
        }
    }

    /// Close the agent's stdin, as a bridge that goes away for good.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Wait for the agent to exit.
    pub fn wait(&mut self) -> Fallible<std::process::ExitStatus> {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err("the agent did not exit".into())
    }

    pub fn recv(&self) -> Fallible<FromAgent> {
        let line = self.lines.recv_timeout(PATIENCE)?;
        Ok(decode(line.as_bytes())?)
    }

    /// The next line that is not a heartbeat.
    pub fn recv_quiet(&self) -> Fallible<FromAgent> {
        loop {
            match self.recv()? {
                FromAgent::Heartbeat => continue,
                line => return Ok(line),
            }
        }
    }

    /// The port of the in-box endpoint, from the agent's log.
    pub fn port(&self) -> Fallible<u16> {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            let found = self.log.lock().ok().and_then(|log| {
                log.iter().find_map(|line| {
                    line.split("listening on 127.0.0.1:")
                        .nth(1)
                        .and_then(|port| port.trim().parse().ok())
                })
            });
            if let Some(port) = found {
                return Ok(port);
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err("the agent did not say where it listens".into())
    }

    /// Play the bridge for one turn: answer each request with `answer` and collect the
    /// events up to `Final`. Returns the events and the requests, in order.
    pub fn serve(
        &mut self,
        mut answer: impl FnMut(usize, &Request) -> Vec<ResponsePart>,
    ) -> Fallible<(Vec<Event>, Vec<Request>)> {
        let mut events = Vec::new();
        let mut requests = Vec::new();
        loop {
            match self.recv_quiet()? {
                FromAgent::Event(event) => {
                    let done = event.body == EventBody::Final;
                    events.push(event);
                    if done {
                        return Ok((events, requests));
                    }
                }
                // This bridge sends whole answers at once, which are small enough not to
                // need the credit the agent grants.
                FromAgent::Credit { .. } => {}
                FromAgent::Request { id, request, .. } => {
                    let parts = answer(requests.len(), &request);
                    requests.push(request);
                    for part in parts {
                        self.send(&ToAgent::Response { id, part })?;
                    }
                }
                other => return Err(format!("unexpected line {other:?}").into()),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn message(text: &str) -> TurnMessage {
    TurnMessage {
        id: "m1".into(),
        sender: "ann".into(),
        at: 1_700_000_000,
        text: text.into(),
        addressed: true,
        attachments: Vec::new(),
    }
}

/// A turn of several messages, numbered `m0`, `m1`, ...
pub fn turn_of(id: &str, texts: &[&str]) -> ToAgent {
    let messages = texts
        .iter()
        .enumerate()
        .map(|(n, text)| TurnMessage {
            id: format!("m{n}"),
            ..message(text)
        })
        .collect();
    ToAgent::Turn {
        turn: id.into(),
        messages,
        options: TurnOptions::default(),
    }
}

pub fn turn(id: &str, text: &str) -> ToAgent {
    ToAgent::Turn {
        turn: id.into(),
        messages: vec![message(text)],
        options: TurnOptions::default(),
    }
}

/// The reply text of a turn's events.
pub fn reply(events: &[Event]) -> String {
    let mut reply = String::new();
    for event in events {
        match &event.body {
            EventBody::TextDelta { text } => reply.push_str(text),
            EventBody::Retract { bytes } => {
                let keep = reply.len().saturating_sub(*bytes as usize);
                assert!(reply.is_char_boundary(keep), "a retract split a char");
                reply.truncate(keep);
            }
            _ => {}
        }
    }
    reply
}

/// The status lines of a turn's events.
pub fn statuses(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match &event.body {
            EventBody::Status { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The error messages of a turn's events.
pub fn errors(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match &event.body {
            EventBody::Error { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// The parts of a model request: path, headers and the body as JSON.
pub fn model_request(request: &Request) -> Fallible<(String, Headers, Value)> {
    match request {
        Request::Model {
            method,
            path,
            headers,
            body,
        } => {
            assert_eq!(method, "POST");
            Ok((path.clone(), headers.clone(), serde_json::from_str(body)?))
        }
        other => Err(format!("expected a model request, got {other:?}").into()),
    }
}

/// Whether `headers` carry anything like a credential.
pub fn has_credential(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(name, value)| {
        let name = name.to_ascii_lowercase();
        name == "authorization" || name == "x-api-key" || value.contains("placeholder")
    })
}

/// A successful streamed answer: `Head` 200, the body in awkward pieces, `End`.
pub fn streamed(body: &str) -> Vec<ResponsePart> {
    let mut parts = vec![ResponsePart::Head {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
    }];
    parts.extend(
        pieces(body, 37)
            .into_iter()
            .map(|data| ResponsePart::Body { data }),
    );
    parts.push(ResponsePart::End);
    parts
}

/// An error answer with this status, headers and JSON body.
pub fn status(status: u16, headers: &[(&str, &str)], body: &str) -> Vec<ResponsePart> {
    vec![
        ResponsePart::Head {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        },
        ResponsePart::Body { data: body.into() },
        ResponsePart::End,
    ]
}

/// `text` cut into pieces of about `size` bytes on char boundaries.
pub fn pieces(text: &str, size: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + size).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(text[start..end].to_owned());
        start = end;
    }
    out
}

fn sse(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// An Anthropic stream answering with `text` (in two deltas).
pub fn anthropic_text(text: &str) -> String {
    let (first, second) = text.split_at(text.len() / 2);
    let mut body = sse(
        "message_start",
        &json!({"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "content": [], "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    );
    body += &sse(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    body += &sse("ping", &json!({"type": "ping"}));
    for piece in [first, second] {
        body += &sse(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        );
    }
    body += &sse(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    );
    body += &sse(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
    );
    body += &sse("message_stop", &json!({"type": "message_stop"}));
    body
}

/// An Anthropic stream calling one tool, its input JSON in two pieces.
pub fn anthropic_tool(id: &str, name: &str, input: &Value) -> String {
    let json = input.to_string();
    let (first, second) = json.split_at(json.len() / 2);
    let mut body = sse(
        "message_start",
        &json!({"type": "message_start", "message": {"id": "msg_2", "usage": {"input_tokens": 10}}}),
    );
    body += &sse(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
    );
    for piece in [first, second] {
        body += &sse(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}}),
        );
    }
    body += &sse(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    );
    body += &sse(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 20}}),
    );
    body += &sse("message_stop", &json!({"type": "message_stop"}));
    body
}

fn chunk(delta: &Value, finish: Option<&str>) -> String {
    let data = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {data}\n\n")
}

/// An OpenAI stream answering with `text` (in two deltas), usage and `[DONE]`.
pub fn openai_text(text: &str) -> String {
    let (first, second) = text.split_at(text.len() / 2);
    let mut body = chunk(&json!({"role": "assistant", "content": ""}), None);
    body += &chunk(&json!({"content": first}), None);
    body += &chunk(&json!({"content": second}), None);
    body += &chunk(&json!({}), Some("stop"));
    body += &format!(
        "data: {}\n\n",
        json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5}})
    );
    body += "data: [DONE]\n\n";
    body
}

/// An OpenAI stream calling one tool, its arguments in two pieces.
pub fn openai_tool(id: &str, name: &str, input: &Value) -> String {
    let json = input.to_string();
    let (first, second) = json.split_at(json.len() / 2);
    let mut body = chunk(&json!({"role": "assistant", "content": null}), None);
    body += &chunk(
        &json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": first}}]}),
        None,
    );
    body += &chunk(
        &json!({"tool_calls": [{"index": 0, "function": {"arguments": second}}]}),
        None,
    );
    body += &chunk(&json!({}), Some("tool_calls"));
    body += "data: [DONE]\n\n";
    body
}

/// The text of every message in a request body, for "did the model see X" checks.
pub fn all_text(body: &Value) -> String {
    body.get("messages")
        .map(Value::to_string)
        .unwrap_or_default()
}

/// Read a workspace file.
pub fn read(dir: &Path, path: &str) -> Fallible<String> {
    Ok(std::fs::read_to_string(dir.join(path))?)
}
