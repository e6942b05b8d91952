//! The built agent on a model, with the test playing the bridge: model requests are
//! answered with scripted server-sent events as Anthropic and OpenAI send them.

mod support;

use std::time::Duration;

use clawpen_protocol::{EventBody, Request, ResponsePart, ToAgent, TurnOptions};
use serde_json::json;
use support::*;

/// An agent on `provider` working in `workspace`, with `extra` settings.
fn start(provider: &str, workspace: &std::path::Path, extra: &[(&str, &str)]) -> Fallible<Agent> {
    let workspace = workspace.to_string_lossy().into_owned();
    let mut envs = vec![
        ("CLAWPEN_PROVIDER", provider),
        ("CLAWPEN_MODEL", "test-model"),
        ("CLAWPEN_WORKSPACE", workspace.as_str()),
    ];
    envs.extend_from_slice(extra);
    Agent::spawn(&envs)
}

#[test]
fn anthropic_tools_write_and_read_a_file_then_answer() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("MEMORY.md"), "- ann likes tea\n")?;
    let mut agent = start("anthropic", dir.path(), &[])?;
    agent.send(&turn("t1", "please save a note"))?;
    let (events, requests) = agent.serve(|n, _| {
        streamed(&match n {
            0 => anthropic_tool(
                "toolu_1",
                "write_file",
                &json!({"path": "notes/hello.txt", "content": "hi from the model ✓"}),
            ),
            1 => anthropic_tool("toolu_2", "read_file", &json!({"path": "notes/hello.txt"})),
            _ => anthropic_text("Saved: hi from the model ✓"),
        })
    })?;

    assert_eq!(reply(&events), "Saved: hi from the model ✓");
    assert_eq!(read(dir.path(), "notes/hello.txt")?, "hi from the model ✓");
    assert_eq!(
        statuses(&events),
        ["writing notes/hello.txt", "reading notes/hello.txt"]
    );
    assert!(errors(&events).is_empty(), "{events:?}");
    assert_eq!(requests.len(), 3);

    let (path, headers, body) = model_request(&requests[0])?;
    assert_eq!(path, "/v1/messages");
    assert!(!has_credential(&headers), "{headers:?}");
    assert!(headers.contains(&("anthropic-version".into(), "2023-06-01".into())));
    assert!(headers.contains(&("content-type".into(), "application/json".into())));
    assert_eq!(body["stream"], true);
    assert_eq!(body["model"], "test-model");
    assert!(body["max_tokens"].as_u64().is_some_and(|n| n > 0));
    let system = body["system"].as_str().unwrap_or_default();
    assert!(system.contains("- ann likes tea"), "{system}");
    let tools: Vec<&str> = body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|tool| tool["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for tool in [
        "shell",
        "read_file",
        "write_file",
        "edit_file",
        "web_fetch",
        "send_file",
    ] {
        assert!(tools.contains(&tool), "{tool} missing from {tools:?}");
    }
    let first = all_text(&body);
    assert!(first.contains("ann: please save a note"), "{first}");

    // The second call carries the first tool's result, the third the file's content.
    let (_, _, body) = model_request(&requests[1])?;
    let last = &body["messages"][2]["content"][0];
    assert_eq!(last["type"], "tool_result");
    assert_eq!(last["tool_use_id"], "toolu_1");
    let (_, _, body) = model_request(&requests[2])?;
    let last = &body["messages"][4]["content"][0];
    assert_eq!(last["tool_use_id"], "toolu_2");
    assert_eq!(last["content"], "hi from the model ✓");
    drop(agent);

    // A new agent process on the same workspace (a restarted box) remembers the turn.
    let mut agent = start("anthropic", dir.path(), &[])?;
    agent.send(&turn("t2", "what did you save?"))?;
    let (events, requests) = agent.serve(|_, _| streamed(&anthropic_text("The note.")))?;
    assert_eq!(reply(&events), "The note.");
    let (_, _, body) = model_request(&requests[0])?;
    let history = all_text(&body);
    assert!(history.contains("please save a note"), "{history}");
    assert!(history.contains("Saved: hi from the model"), "{history}");
    assert!(history.contains("what did you save?"), "{history}");
    Ok(())
}

#[test]
fn openai_tools_and_a_follow_up_reach_the_model() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut agent = start("openai", dir.path(), &[])?;
    agent.send(&ToAgent::Turn {
        turn: "t1".into(),
        messages: vec![message("write it")],
        options: TurnOptions {
            model: Some("override-model".into()),
        },
    })?;
    // The first request: answered after a follow-up arrives, so its next call sees it.
    let (id, request) = match agent.recv_quiet()? {
        clawpen_protocol::FromAgent::Request { id, request, .. } => (id, request),
        other => return Err(format!("expected a request, got {other:?}").into()),
    };
    agent.send(&ToAgent::FollowUp {
        turn: "t1".into(),
        messages: vec![message("and make it loud")],
    })?;
    let tool = openai_tool(
        "call_1",
        "write_file",
        &json!({"path": "out.txt", "content": "HELLO"}),
    );
    for part in streamed(&tool) {
        agent.send(&ToAgent::Response { id, part })?;
    }
    let (events, requests) = agent.serve(|n, _| {
        streamed(&match n {
            0 => openai_tool("call_2", "read_file", &json!({"path": "out.txt"})),
            _ => openai_text("Done, it says HELLO."),
        })
    })?;
    assert_eq!(reply(&events), "Done, it says HELLO.");
    assert_eq!(read(dir.path(), "out.txt")?, "HELLO");

    let (path, headers, body) = model_request(&request)?;
    assert_eq!(path, "/chat/completions");
    assert!(!has_credential(&headers), "{headers:?}");
    assert_eq!(body["model"], "override-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["tools"][0]["type"], "function");

    let (_, _, body) = model_request(&requests[0])?;
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .map(|all| all.iter().filter_map(|m| m["role"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
    assert_eq!(body["messages"][2]["tool_calls"][0]["id"], "call_1");
    assert_eq!(body["messages"][3]["tool_call_id"], "call_1");
    let follow_up = body["messages"][4]["content"].as_str().unwrap_or_default();
    assert!(follow_up.contains("and make it loud"), "{follow_up}");
    let (_, _, body) = model_request(&requests[1])?;
    assert_eq!(body["messages"][6]["role"], "tool");
    assert_eq!(body["messages"][6]["content"], "HELLO");
    Ok(())
}

#[test]
fn a_follow_up_during_the_last_call_is_answered_in_the_same_turn() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut agent = start("anthropic", dir.path(), &[])?;
    agent.send(&turn("t1", "first question"))?;
    let id = match agent.recv_quiet()? {
        clawpen_protocol::FromAgent::Request { id, .. } => id,
        other => return Err(format!("expected a request, got {other:?}").into()),
    };
    agent.send(&ToAgent::FollowUp {
        turn: "t1".into(),
        messages: vec![message("second question")],
    })?;
    for part in streamed(&anthropic_text("First answer.")) {
        agent.send(&ToAgent::Response { id, part })?;
    }
    let (events, requests) = agent.serve(|_, _| streamed(&anthropic_text("Second answer.")))?;
    assert_eq!(reply(&events), "First answer.\n\nSecond answer.");
    assert!(events.iter().all(|event| event.turn == "t1"));
    let (_, _, body) = model_request(&requests[0])?;
    let text = all_text(&body);
    assert!(text.contains("First answer."), "{text}");
    assert!(text.contains("second question"), "{text}");
    Ok(())
}

#[test]
fn a_request_in_flight_when_the_bridge_reattaches_is_made_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut agent = start("openai", dir.path(), &[])?;
    agent.send(&turn("t1", "hi"))?;
    let first = match agent.recv_quiet()? {
        clawpen_protocol::FromAgent::Request { id, .. } => id,
        other => return Err(format!("expected a request, got {other:?}").into()),
    };
    // A new bridge attaches: the answer to the first request will never come.
    agent.send(&ToAgent::Resume {
        version: clawpen_protocol::VERSION,
        after: 0,
    })?;
    let mut state = false;
    let second = loop {
        match agent.recv_quiet()? {
            clawpen_protocol::FromAgent::State { running, .. } => {
                assert_eq!(running.as_deref(), Some("t1"));
                state = true;
            }
            clawpen_protocol::FromAgent::Request { id, .. } => break id,
            _ => {}
        }
    };
    assert!(state);
    assert_ne!(first, second);
    // The old bridge's late answer is ignored; the new one's is used.
    for part in streamed(&openai_text("stale")) {
        agent.send(&ToAgent::Response { id: first, part })?;
    }
    for part in streamed(&openai_text("Hello again.")) {
        agent.send(&ToAgent::Response { id: second, part })?;
    }
    let (events, _) = agent.serve(|_, _| Vec::new())?;
    assert_eq!(reply(&events), "Hello again.");
    Ok(())
}

#[test]
fn bridge_restarts_mid_answer_are_not_the_providers_failures() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut agent = start("openai", dir.path(), &[])?;
    agent.send(&turn("t1", "hi"))?;
    let mut id = match agent.recv_quiet()? {
        clawpen_protocol::FromAgent::Request { id, .. } => id,
        other => return Err(format!("expected a request, got {other:?}").into()),
    };
    // Three bridges in a row attach while the answer is on its way: each time the call
    // is simply made again, and the turn does not fail.
    for _ in 0..3 {
        agent.send(&ToAgent::Resume {
            version: clawpen_protocol::VERSION,
            after: 0,
        })?;
        id = loop {
            if let clawpen_protocol::FromAgent::Request { id: next, .. } = agent.recv_quiet()? {
                break next;
            }
        };
    }
    for part in streamed(&openai_text("Hello again.")) {
        agent.send(&ToAgent::Response { id, part })?;
    }
    let (events, _) = agent.serve(|_, _| Vec::new())?;
    assert!(errors(&events).is_empty(), "{events:?}");
    assert_eq!(reply(&events), "Hello again.");
    Ok(())
}

#[test]
fn a_rate_limit_is_waited_out_and_a_broken_stream_retried() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut agent = start("anthropic", dir.path(), &[])?;
    agent.send(&turn("t1", "hi"))?;
    let cut = anthropic_text("Hello there");
    let cut = &cut[..cut.find("event: message_delta").unwrap_or(0)];
    let (events, requests) = agent.serve(|n, _| match n {
        0 => status(
            429,
            &[("retry-after", "0"), ("content-type", "application/json")],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        ),
        1 => streamed(cut),
        _ => streamed(&anthropic_text("Hello there")),
    })?;
    assert_eq!(requests.len(), 3);
    assert!(errors(&events).is_empty(), "{events:?}");
    // The cut answer is withdrawn and the whole one takes its place: shown once.
    assert_eq!(reply(&events), "Hello there");
    assert!(
        events
            .iter()
            .any(|event| matches!(event.body, EventBody::Retract { .. })),
        "the cut text was never withdrawn: {events:?}"
    );
    let statuses = statuses(&events);
    assert!(statuses[0].contains("rate limiting"), "{statuses:?}");
    assert!(statuses[1].contains("broke off"), "{statuses:?}");
    Ok(())
}

#[test]
fn a_refused_key_and_a_bridge_refusal_end_the_turn_with_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut agent = start("anthropic", dir.path(), &[])?;
    agent.send(&turn("t1", "hi"))?;
    let (events, requests) = agent.serve(|_, _| {
        status(
            401,
            &[],
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        )
    })?;
    assert_eq!(requests.len(), 1, "a refused key is not retried");
    let errors = errors(&events);
    assert_eq!(errors.len(), 1, "{events:?}");
    assert!(errors[0].contains("refused the key (401)"), "{}", errors[0]);
    assert!(errors[0].contains("invalid x-api-key"), "{}", errors[0]);
    assert_eq!(
        events.last().map(|event| &event.body),
        Some(&EventBody::Final)
    );

    agent.send(&turn("t2", "hi again"))?;
    let (events, _) = agent.serve(|_, _| {
        vec![ResponsePart::Failed {
            message: "request limit reached: 60 per minute".into(),
        }]
    })?;
    let errors = support::errors(&events);
    assert!(errors[0].contains("request limit reached"), "{errors:?}");
    Ok(())
}

#[test]
fn reset_clears_the_history_but_keeps_memory() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("MEMORY.md"), "keep me")?;
    let mut agent = start("anthropic", dir.path(), &[])?;
    agent.send(&turn("t1", "remember the number 42"))?;
    agent.serve(|_, _| streamed(&anthropic_text("Noted.")))?;
    assert!(dir.path().join(".clawpen/history.jsonl").exists());

    agent.send(&turn("t2", "/reset"))?;
    let (events, requests) = agent.serve(|_, _| Vec::new())?;
    assert!(requests.is_empty(), "no model call for /reset");
    assert_eq!(reply(&events), "History cleared; MEMORY.md is kept.");
    assert_eq!(read(dir.path(), "MEMORY.md")?, "keep me");

    agent.send(&turn("t3", "what number?"))?;
    let (_, requests) = agent.serve(|_, _| streamed(&anthropic_text("No idea.")))?;
    let (_, _, body) = model_request(&requests[0])?;
    assert!(!all_text(&body).contains("42"), "{body}");
    Ok(())
}

#[test]
fn a_long_history_is_summarized_and_memory_is_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("MEMORY.md"), "keep me")?;
    std::fs::create_dir_all(dir.path().join(".clawpen"))?;
    let mut history = String::new();
    for n in 0..12 {
        let filler = "blah ".repeat(200);
        history += &format!(
            "{}\n",
            json!({"kind": "user", "text": format!("ann: old question {n} {filler}")})
        );
        history += &format!(
            "{}\n",
            json!({"kind": "assistant", "text": format!("old answer {n}")})
        );
    }
    std::fs::write(dir.path().join(".clawpen/history.jsonl"), history)?;
    let mut agent = start(
        "anthropic",
        dir.path(),
        &[("CLAWPEN_HISTORY_TOKENS", "2000")],
    )?;
    agent.send(&turn("t1", "new question"))?;
    let (events, requests) = agent.serve(|n, _| {
        streamed(&anthropic_text(if n == 0 {
            "SUMMARY: ann asked old questions."
        } else {
            "Answer."
        }))
    })?;
    assert_eq!(
        reply(&events),
        "Answer.",
        "the summary is not part of the reply"
    );
    assert_eq!(requests.len(), 2);
    let (_, _, summary_request) = model_request(&requests[0])?;
    assert!(
        summary_request.get("tools").is_none(),
        "the summary call has no tools"
    );
    assert!(all_text(&summary_request).contains("old question 0"));
    let (_, _, body) = model_request(&requests[1])?;
    let text = all_text(&body);
    assert!(text.contains("SUMMARY: ann asked old questions."), "{text}");
    assert!(!text.contains("old question 0 "), "{text}");
    assert!(
        text.contains("old question 11"),
        "the recent part is kept: {text}"
    );
    assert!(text.contains("new question"), "{text}");

    let stored = read(dir.path(), ".clawpen/history.jsonl")?;
    let first: serde_json::Value = serde_json::from_str(stored.lines().next().unwrap_or_default())?;
    assert_eq!(first["kind"], "summary");
    assert_eq!(read(dir.path(), "MEMORY.md")?, "keep me");
    Ok(())
}

#[test]
fn cancel_stops_a_running_command_and_the_step_limit_ends_a_loop() -> TestResult {
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("marker");
    let mut agent = start("anthropic", dir.path(), &[("CLAWPEN_MAX_STEPS", "2")])?;
    agent.send(&turn("t1", "run it"))?;
    let command = format!("sleep 2; touch {}", marker.display());
    // Answer the model, then cancel as soon as the command is running.
    loop {
        match agent.recv_quiet()? {
            clawpen_protocol::FromAgent::Request { id, .. } => {
                let body = anthropic_tool("toolu_1", "shell", &json!({"command": command}));
                for part in streamed(&body) {
                    agent.send(&ToAgent::Response { id, part })?;
                }
            }
            clawpen_protocol::FromAgent::Event(event) => {
                if let EventBody::Status { text } = &event.body {
                    assert!(text.starts_with("running: sleep 2"), "{text}");
                    break;
                }
            }
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    agent.send(&ToAgent::Cancel { turn: "t1".into() })?;
    let (events, _) = agent.serve(|_, _| Vec::new())?;
    assert_eq!(reply(&events), "\n\n(stopped)");
    std::thread::sleep(Duration::from_secs(3));
    assert!(!marker.exists(), "the cancelled command ran on");

    // A model that never stops calling tools is stopped by the step limit.
    agent.send(&turn("t2", "loop"))?;
    let (events, requests) = agent.serve(|n, _| {
        streamed(&anthropic_tool(
            &format!("toolu_{n}"),
            "list_files",
            &json!({}),
        ))
    })?;
    assert_eq!(requests.len(), 2);
    let errors = errors(&events);
    assert!(errors[0].contains("limit of 2 model calls"), "{errors:?}");
    Ok(())
}

#[test]
fn web_fetch_goes_through_the_bridge() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut agent = start("anthropic", dir.path(), &[])?;
    agent.send(&turn("t1", "what does example.com say?"))?;
    let (events, requests) = agent.serve(|n, request| match (n, request) {
        (0, _) => streamed(&anthropic_tool(
            "toolu_1",
            "web_fetch",
            &json!({"url": "https://example.com/"}),
        )),
        (1, Request::WebFetch { url }) if url == "https://example.com/" => vec![
            ResponsePart::Head {
                status: 200,
                headers: vec![("content-type".into(), "text/plain".into())],
            },
            ResponsePart::Body {
                data: "Example Domain. ".into(),
            },
            ResponsePart::Body {
                data: "For use in examples.".into(),
            },
            ResponsePart::End,
        ],
        _ => streamed(&anthropic_text("It is an example page.")),
    })?;
    assert_eq!(reply(&events), "It is an example page.");
    assert_eq!(statuses(&events), ["fetching https://example.com/"]);
    let (_, _, body) = model_request(&requests[2])?;
    let result = &body["messages"][2]["content"][0];
    assert_eq!(result["content"], "Example Domain. For use in examples.");
    Ok(())
}
