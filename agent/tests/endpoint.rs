//! The in-box HTTP endpoint of the built agent: a raw HTTP client on loopback, the test
//! playing the bridge on the agent's stdin/stdout.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::Duration;

use clawpen_protocol::{FromAgent, Request, ResponsePart, ToAgent, VERSION};
use support::*;

/// Send `request` to the endpoint and read the whole answer (the server closes).
fn exchange(port: u16, request: &[u8]) -> Fallible<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(String::from_utf8(answer)?)
}

/// The body of a chunked HTTP answer.
fn dechunk(mut body: &str) -> Fallible<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("no chunk size")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or("short chunk")?);
        body = rest.get(size + 2..).ok_or("no chunk end")?;
    }
}

/// Answer the next request the agent makes with `parts`; returns the request.
fn answer(agent: &mut Agent, parts: Vec<ResponsePart>) -> Fallible<Request> {
    match agent.recv_quiet()? {
        FromAgent::Request { id, request, .. } => {
            for part in parts {
                agent.send(&ToAgent::Response { id, part })?;
            }
            Ok(request)
        }
        other => Err(format!("expected a request, got {other:?}").into()),
    }
}

#[test]
fn a_post_is_tunnelled_without_its_key_and_streamed_back() -> TestResult {
    let mut agent = Agent::spawn(&[])?;
    let port = agent.port()?;
    let body = r#"{"model":"m","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /v1/messages?beta=true HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: clawpen-placeholder\r\nAuthorization: Bearer clawpen-placeholder\r\nAnthropic-Version: 2023-06-01\r\nanthropic-beta: tools-x\r\nCookie: a=b\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let client =
        thread::spawn(move || exchange(port, request.as_bytes()).map_err(|err| err.to_string()));
    let sse = anthropic_text("Hi from the bridge");
    let forwarded = answer(&mut agent, streamed(&sse))?;
    let answer = client.join().map_err(|_| "client panicked")??;

    let (path, headers, sent) = model_request(&forwarded)?;
    assert_eq!(path, "/v1/messages");
    assert!(!has_credential(&headers), "{headers:?}");
    assert!(headers.contains(&("anthropic-version".into(), "2023-06-01".into())));
    assert!(headers.contains(&("anthropic-beta".into(), "tools-x".into())));
    assert!(headers.contains(&("content-type".into(), "application/json".into())));
    assert!(!headers
        .iter()
        .any(|(name, _)| name == "cookie" || name == "host"));
    assert_eq!(sent, serde_json::from_str::<serde_json::Value>(body)?);

    let (head, rest) = answer.split_once("\r\n\r\n").ok_or("no head")?;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(dechunk(rest)?, sse);
    Ok(())
}

#[test]
fn openai_paths_errors_and_refusals() -> TestResult {
    let mut agent = Agent::spawn(&[])?;
    let port = agent.port()?;

    // An HTTP/1.0 client on the OpenAI path gets a close-delimited answer.
    let body = r#"{"model":"m","messages":[]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer clawpen-placeholder\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let client =
        thread::spawn(move || exchange(port, request.as_bytes()).map_err(|err| err.to_string()));
    let forwarded = answer(
        &mut agent,
        status(
            429,
            &[("retry-after", "7"), ("content-type", "application/json")],
            r#"{"error":{"message":"slow down"}}"#,
        ),
    )?;
    let answer = client.join().map_err(|_| "client panicked")??;
    let (path, headers, _) = model_request(&forwarded)?;
    assert_eq!(path, "/chat/completions");
    assert!(!has_credential(&headers), "{headers:?}");
    assert!(
        answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{answer}"
    );
    assert!(answer.contains("retry-after: 7\r\n"), "{answer}");
    assert!(!answer.contains("transfer-encoding"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\n{\"error\":{\"message\":\"slow down\"}}"),
        "{answer}"
    );

    // The bridge refusing becomes a 502 with the reason, in an error body SDKs read.
    let request = format!(
        "POST /chat/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let client =
        thread::spawn(move || exchange(port, request.as_bytes()).map_err(|err| err.to_string()));
    answer_failed(&mut agent, "request limit reached")?;
    let answer = client.join().map_err(|_| "client panicked")??;
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    assert!(answer.contains("request limit reached"), "{answer}");

    // Other paths, methods and oversized bodies never reach the bridge.
    let not_found = exchange(port, b"GET /v1/models HTTP/1.1\r\n\r\n")?;
    assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
    let wrong = exchange(port, b"GET /v1/messages HTTP/1.1\r\n\r\n")?;
    assert!(wrong.starts_with("HTTP/1.1 405 "), "{wrong}");
    let big = exchange(
        port,
        b"POST /v1/messages HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n{",
    )?;
    assert!(big.starts_with("HTTP/1.1 413 "), "{big}");
    let chunked = exchange(
        port,
        b"POST /v1/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )?;
    assert!(chunked.starts_with("HTTP/1.1 411 "), "{chunked}");
    Ok(())
}

fn answer_failed(agent: &mut Agent, message: &str) -> TestResult {
    answer(
        agent,
        vec![ResponsePart::Failed {
            message: message.into(),
        }],
    )?;
    Ok(())
}

/// The harness path end to end: busybox `wget` in a harness posts through the endpoint
/// (as it would inside the box) and its output is the reply. Skipped without busybox.
#[test]
fn a_harness_reaches_the_model_through_the_endpoint_with_busybox_wget() -> TestResult {
    if Command::new("busybox").arg("true").status().is_err() {
        eprintln!("busybox is not installed; skipping");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let workspace = dir.path().to_string_lossy().into_owned();
    let harness = r#"busybox wget -q -O - --header "x-api-key: $ANTHROPIC_API_KEY" --header 'content-type: application/json' --header 'anthropic-version: 2023-06-01' --post-data "{\"prompt\":\"$(cat)\"}" "$ANTHROPIC_BASE_URL/v1/messages""#;
    let mut agent = Agent::spawn(&[
        ("CLAWPEN_HARNESS", harness),
        ("CLAWPEN_WORKSPACE", &workspace),
    ])?;
    agent.send(&turn("t1", "ping"))?;
    let (events, requests) = agent.serve(|_, _| {
        let mut parts = vec![ResponsePart::Head {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
        }];
        parts.extend(
            ["pong ", "from ", "the model"].map(|data| ResponsePart::Body { data: data.into() }),
        );
        parts.push(ResponsePart::End);
        parts
    })?;
    assert!(errors(&events).is_empty(), "{events:?}");
    assert_eq!(reply(&events), "pong from the model");
    let (path, headers, body) = model_request(&requests[0])?;
    assert_eq!(path, "/v1/messages");
    assert!(!has_credential(&headers), "{headers:?}");
    assert_eq!(body["prompt"], "ping");
    Ok(())
}

/// Connect, send `request`, then read the answer slowly: nothing for a while, then small
/// reads with pauses, as a harness busy with something else would.
fn slow_exchange(port: u16, request: &[u8]) -> Fallible<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.write_all(request)?;
    thread::sleep(Duration::from_millis(500));
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(String::from_utf8(answer)?);
        }
        answer.extend_from_slice(buf.get(..n).unwrap_or_default());
        thread::sleep(Duration::from_micros(200));
    }
}

/// A request for the endpoint, posting a small model request.
fn model_post() -> String {
    let body = r#"{"model":"m","max_tokens":10,"stream":true,"messages":[]}"#;
    format!(
        "POST /v1/messages HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A long answer in many small parts: far more parts than a reader could fall behind by
/// without flow control.
fn long_answer() -> (String, Vec<ResponsePart>) {
    let text: String = (0..3000)
        .map(|n| format!("line {n:05} {}\n", "x".repeat(500)))
        .collect();
    let mut parts = vec![ResponsePart::Head {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
    }];
    parts.extend(
        pieces(&text, 512)
            .into_iter()
            .map(|data| ResponsePart::Body { data }),
    );
    parts.push(ResponsePart::End);
    (text, parts)
}

/// Resume the agent as a bridge of `version` and read its `State`.
fn resume(agent: &mut Agent, version: u32) -> Fallible<Option<u32>> {
    agent.send(&ToAgent::Resume { version, after: 0 })?;
    match agent.recv_quiet()? {
        FromAgent::State { version, .. } => Ok(version),
        other => Err(format!("expected State, got {other:?}").into()),
    }
}

#[test]
fn a_slow_reader_gets_a_long_answer_whole_as_fast_as_it_grants_credit() -> TestResult {
    let mut agent = Agent::spawn(&[])?;
    let port = agent.port()?;
    assert_eq!(resume(&mut agent, VERSION)?, Some(VERSION));
    let client = thread::spawn(move || {
        slow_exchange(port, model_post().as_bytes()).map_err(|err| err.to_string())
    });
    let (id, window) = match agent.recv_quiet()? {
        FromAgent::Request {
            id,
            window: Some(window),
            ..
        } => (id, window),
        other => return Err(format!("expected a request with a window, got {other:?}").into()),
    };
    assert!(window > 0);
    // Play a bridge that never sends past what the agent allows.
    let (text, parts) = long_answer();
    let mut allowed = u64::from(window);
    let mut granted = 0;
    for (sent, part) in (0u64..).zip(parts) {
        while sent >= allowed {
            match agent.recv_quiet()? {
                FromAgent::Credit {
                    id: credited,
                    parts,
                } if credited == id => {
                    allowed += u64::from(parts);
                    granted += u64::from(parts);
                }
                other => return Err(format!("expected credit, got {other:?}").into()),
            }
        }
        agent.send(&ToAgent::Response { id, part })?;
    }
    let answer = client.join().map_err(|_| "client panicked")??;
    let (head, rest) = answer.split_once("\r\n\r\n").ok_or("no head")?;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let body = dechunk(rest)?;
    assert!(body == text, "got {} of {} bytes", body.len(), text.len());
    assert!(granted > 0, "the answer fit in the first window");
    Ok(())
}

#[test]
fn a_bridge_of_version_1_gets_requests_without_a_window_and_no_credit() -> TestResult {
    let mut agent = Agent::spawn(&[])?;
    let port = agent.port()?;
    // The agent answers in the bridge's version; its own, in `State`, a first bridge ignores.
    assert_eq!(resume(&mut agent, 1)?, Some(VERSION));
    let client = thread::spawn(move || {
        exchange(port, model_post().as_bytes()).map_err(|err| err.to_string())
    });
    let id = match agent.recv_quiet()? {
        FromAgent::Request {
            id, window: None, ..
        } => id,
        other => return Err(format!("expected a request without a window, got {other:?}").into()),
    };
    // Within the parts a reader may fall behind by, the answer arrives whole, as before.
    let text = "x".repeat(100 * 37);
    for part in streamed(&text) {
        agent.send(&ToAgent::Response { id, part })?;
    }
    let answer = client.join().map_err(|_| "client panicked")??;
    let (_, rest) = answer.split_once("\r\n\r\n").ok_or("no head")?;
    assert_eq!(dechunk(rest)?, text);
    // Nothing else came for it: the next line answers the next `Resume`.
    assert_eq!(resume(&mut agent, 1)?, Some(VERSION));
    Ok(())
}

#[test]
fn a_reader_that_goes_away_aborts_its_request_even_between_credits() -> TestResult {
    let mut agent = Agent::spawn(&[])?;
    let port = agent.port()?;
    resume(&mut agent, VERSION)?;
    // A client that takes the first bytes of the answer and hangs up.
    let client = thread::spawn(move || -> Result<(), String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream
            .write_all(model_post().as_bytes())
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1024];
        stream.read(&mut buf).map_err(|e| e.to_string())?;
        Ok(())
    });
    let (id, window) = match agent.recv_quiet()? {
        FromAgent::Request {
            id,
            window: Some(window),
            ..
        } => (id, window),
        other => return Err(format!("expected a request with a window, got {other:?}").into()),
    };
    agent.send(&ToAgent::Response {
        id,
        part: ResponsePart::Head {
            status: 200,
            headers: Vec::new(),
        },
    })?;
    // Send all the credit allows, and more as it is granted, until the agent gives up.
    let (mut allowed, mut sent) = (u64::from(window), 1);
    loop {
        while sent < allowed {
            let data = "x".repeat(512);
            agent.send(&ToAgent::Response {
                id,
                part: ResponsePart::Body { data },
            })?;
            sent += 1;
        }
        match agent.recv_quiet()? {
            FromAgent::Credit {
                id: credited,
                parts,
            } if credited == id => {
                allowed += u64::from(parts);
            }
            FromAgent::Abort { id: aborted } if aborted == id => break,
            other => return Err(format!("expected credit or abort, got {other:?}").into()),
        }
    }
    client.join().map_err(|_| "client panicked")??;
    Ok(())
}
