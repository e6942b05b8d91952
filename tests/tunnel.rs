//! The tunnel against a fake model provider and a loopback page server: keys added by the
//! bridge only, paths and destinations checked, limits enforced, answers streamed back.

mod support;

use std::sync::Arc;
use std::time::Duration;

use clawpen::adapters::ConversationKey;
use clawpen::config::{Config, Secret};
use clawpen::protocol::{Request, ResponsePart};
use clawpen::tunnel::{AllowRule, ManualClock, Settings, Tunnel, Usage};
use serde_json::json;
use support::model::{FakeModel, Page, PageServer, Reply};
use tokio::sync::mpsc;

/// How long one request may take in a test before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const ANTHROPIC_KEY: &str = "sk-ant-bridge-only-key";
const OPENAI_KEY: &str = "sk-openai-bridge-only-key";
const PLACEHOLDER: &str = "placeholder-key-from-the-box";

fn conversation(name: &str) -> ConversationKey {
    ConversationKey::new("test", name)
}

/// A tunnel to `fake` as the given provider; `tweak` adjusts its settings.
fn tunnel_to(
    fake: &FakeModel,
    provider: &str,
    tweak: impl FnOnce(&mut Settings),
) -> (Tunnel, ManualClock) {
    let config = Config {
        provider: provider.into(),
        anthropic_base_url: fake.url(),
        openai_base_url: fake.openai_url(),
        anthropic_api_key: Some(Secret::new(ANTHROPIC_KEY)),
        openai_api_key: Some(Secret::new(OPENAI_KEY)),
        ..Config::default()
    };
    with_settings(Settings::from_config(&config), tweak)
}

fn with_settings(
    mut settings: Settings,
    tweak: impl FnOnce(&mut Settings),
) -> (Tunnel, ManualClock) {
    tweak(&mut settings);
    // Noon UTC, so a test's minutes never cross midnight.
    let clock = ManualClock::at(Duration::from_secs(19_700 * 86_400 + 12 * 3600));
    (
        Tunnel::with_settings(settings, Arc::new(clock.clone())),
        clock,
    )
}

/// A tunnel for web fetches, with this allowlist.
fn fetcher(allow: &[&str], tweak: impl FnOnce(&mut Settings)) -> Tunnel {
    let config = Config {
        web_fetch_allow: allow.iter().map(|s| s.to_string()).collect(),
        ..Config::default()
    };
    with_settings(Settings::from_config(&config), tweak).0
}

/// Perform `request` and collect every part the box would get.
async fn run(tunnel: &Tunnel, key: &ConversationKey, request: Request) -> Vec<ResponsePart> {
    let (tx, mut rx) = mpsc::channel(8);
    let collect = async {
        let mut parts = Vec::new();
        while let Some(part) = rx.recv().await {
            parts.push(part);
        }
        parts
    };
    let both = async { tokio::join!(tunnel.perform(key, request, tx), collect).1 };
    tokio::time::timeout(REQUEST_TIMEOUT, both)
        .await
        .unwrap_or_else(|_| panic!("the tunnel did not finish within {REQUEST_TIMEOUT:?}"))
}

fn anthropic_request(path: &str, stream: bool) -> Request {
    Request::Model {
        method: "POST".into(),
        path: path.into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-api-key".into(), PLACEHOLDER.into()),
            ("authorization".into(), format!("Bearer {PLACEHOLDER}")),
            ("anthropic-version".into(), "2023-06-01".into()),
            (
                "anthropic-beta".into(),
                "fine-grained-tool-streaming-2025-05-14".into(),
            ),
            ("cookie".into(), format!("session={PLACEHOLDER}")),
            ("host".into(), "evil.example".into()),
        ],
        body: json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        })
        .to_string(),
    }
}

fn openai_request(stream: bool) -> Request {
    Request::Model {
        method: "POST".into(),
        path: "/chat/completions".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), format!("Bearer {PLACEHOLDER}")),
            ("openai-organization".into(), "org-from-the-box".into()),
        ],
        body: json!({
            "model": "gpt-4o-mini",
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        })
        .to_string(),
    }
}

fn fetch(url: &str) -> Request {
    Request::WebFetch { url: url.into() }
}

/// The status and headers of the `Head` part (which must come first).
fn head(parts: &[ResponsePart]) -> (u16, Vec<(String, String)>) {
    match parts.first() {
        Some(ResponsePart::Head { status, headers }) => (*status, headers.clone()),
        other => panic!("expected Head first, got {other:?} in {parts:?}"),
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn body(parts: &[ResponsePart]) -> String {
    parts
        .iter()
        .filter_map(|part| match part {
            ResponsePart::Body { data } => Some(data.as_str()),
            _ => None,
        })
        .collect()
}

/// The message of a lone `Failed` (or the last part, which must be `Failed`).
fn failure(parts: &[ResponsePart]) -> String {
    match parts.last() {
        Some(ResponsePart::Failed { message }) => message.clone(),
        other => panic!("expected Failed last, got {other:?} in {parts:?}"),
    }
}

fn refusal(parts: &[ResponsePart]) -> String {
    assert_eq!(parts.len(), 1, "a refusal is one part: {parts:?}");
    failure(parts)
}

/// The text of an Anthropic event stream's text deltas.
fn anthropic_text(stream: &str) -> String {
    stream
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<serde_json::Value>(data).ok())
        .filter(|event| event["delta"]["type"] == "text_delta")
        .filter_map(|event| event["delta"]["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_bridge_key_reaches_anthropic_and_the_box_key_does_not() {
    let fake = FakeModel::start().await;
    let (tunnel, _) = tunnel_to(&fake, "anthropic", |_| {});
    let text = "Grüße 👋🏽 — a reply in «several» chunks";
    fake.push_reply(Reply::text(text).with_usage(20, 7));
    let key = conversation("a");
    let parts = run(&tunnel, &key, anthropic_request("/v1/messages", true)).await;

    let (status, headers) = head(&parts);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(header(&headers, "request-id"), Some("req_fake_1"));
    assert_eq!(parts.last(), Some(&ResponsePart::End));
    assert!(
        parts.len() > 3,
        "the answer streams in several parts: {parts:?}"
    );
    assert_eq!(anthropic_text(&body(&parts)), text);

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("fine-grained-tool-streaming-2025-05-14")
    );
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(sent.header("cookie"), None);
    assert_eq!(
        sent.header("host"),
        Some(fake.url().trim_start_matches("http://"))
    );
    assert!(
        sent.headers.iter().all(|(_, v)| !v.contains(PLACEHOLDER)),
        "{:?}",
        sent.headers
    );
    assert_eq!(sent.body["messages"][0]["content"], "hi");

    assert_eq!(
        tunnel.usage(&key),
        Usage {
            requests_last_minute: 1,
            tokens_today: 27
        }
    );
    assert_eq!(tunnel.usage(&conversation("other")), Usage::default());
}

#[tokio::test]
async fn openai_gets_a_bearer_key_and_reports_usage_at_the_end_of_the_stream() {
    let fake = FakeModel::start().await;
    let (tunnel, _) = tunnel_to(&fake, "openai", |_| {});
    fake.push_reply(Reply::tool_call("read_file", json!({"path": "notes.md"})).with_usage(31, 9));
    let key = conversation("b");
    let parts = run(&tunnel, &key, openai_request(true)).await;

    assert_eq!(head(&parts).0, 200);
    assert_eq!(header(&head(&parts).1, "x-request-id"), Some("req-fake-1"));
    assert_eq!(parts.last(), Some(&ResponsePart::End));
    let stream = body(&parts);
    assert!(stream.contains("\"name\":\"read_file\""), "{stream}");
    assert!(stream.trim_end().ends_with("data: [DONE]"), "{stream}");

    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(sent.header("openai-organization"), None);
    // The bridge asks for the usage chunk, so the stream's tokens are counted.
    assert_eq!(sent.body["stream_options"]["include_usage"], true);
    assert_eq!(tunnel.usage(&key).tokens_today, 40);

    // A non-streamed answer's usage is counted too.
    fake.push_reply(Reply::text("whole").with_usage(3, 2));
    let parts = run(&tunnel, &key, openai_request(false)).await;
    assert!(body(&parts).contains("\"content\":\"whole\""), "{parts:?}");
    assert_eq!(tunnel.usage(&key).tokens_today, 45);
}

#[tokio::test]
async fn other_endpoints_and_destinations_are_refused_before_reaching_the_provider() {
    let fake = FakeModel::start().await;
    let (tunnel, _) = tunnel_to(&fake, "anthropic", |_| {});
    let key = conversation("c");
    let smuggled = format!("{}/v1/messages", fake.url());
    for path in [
        "/v1/models",
        "/v1/files",
        "/v1/messages?beta=true",
        "/v1/messages/../files",
        "/v1/../v1/messages",
        "//evil.example/v1/messages",
        "@evil.example/v1/messages",
        "https://api.anthropic.com/v1/messages",
        smuggled.as_str(),
        "/chat/completions",
    ] {
        let message = refusal(&run(&tunnel, &key, anthropic_request(path, true)).await);
        assert!(
            message.starts_with("refused:") && message.contains("not an endpoint"),
            "{path}: {message}"
        );
        assert!(message.contains("POST /v1/messages"), "{message}");
    }
    let get = Request::Model {
        method: "GET".into(),
        path: "/v1/messages".into(),
        headers: Vec::new(),
        body: String::new(),
    };
    assert!(refusal(&run(&tunnel, &key, get).await).contains("`GET /v1/messages`"));

    // No provider configured: nothing is tunnelled anywhere.
    let (echo, _) = tunnel_to(&fake, "echo", |_| {});
    let message = refusal(&run(&echo, &key, anthropic_request("/v1/messages", true)).await);
    assert!(
        message.contains("no model provider") && message.contains("echo"),
        "{message}"
    );

    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert_eq!(fake.connections(), 0);
    assert_eq!(
        tunnel.usage(&key),
        Usage::default(),
        "refusals are not counted"
    );
}

#[tokio::test]
async fn requests_per_minute_are_limited_per_conversation() {
    let fake = FakeModel::start().await;
    let (tunnel, clock) = tunnel_to(&fake, "anthropic", |s| s.limits.requests_per_minute = 2);
    let key = conversation("d");
    for _ in 0..2 {
        let parts = run(&tunnel, &key, anthropic_request("/v1/messages", true)).await;
        assert_eq!(parts.last(), Some(&ResponsePart::End));
        clock.advance(Duration::from_secs(10));
    }
    let message = refusal(&run(&tunnel, &key, anthropic_request("/v1/messages", true)).await);
    assert_eq!(
        message,
        "This conversation reached its limit of 2 model requests per minute; try again in 40 s."
    );
    assert_eq!(fake.requests().len(), 2, "the refused request was not sent");
    assert_eq!(tunnel.usage(&key).requests_last_minute, 2);

    // Another conversation has its own budget.
    let other = run(
        &tunnel,
        &conversation("e"),
        anthropic_request("/v1/messages", true),
    )
    .await;
    assert_eq!(other.last(), Some(&ResponsePart::End));

    clock.advance(Duration::from_secs(40));
    let parts = run(&tunnel, &key, anthropic_request("/v1/messages", true)).await;
    assert_eq!(parts.last(), Some(&ResponsePart::End));
}

#[tokio::test]
async fn tokens_per_day_are_limited_per_conversation() {
    let fake = FakeModel::start().await;
    let (tunnel, clock) = tunnel_to(&fake, "anthropic", |s| s.limits.tokens_per_day = 1_000);
    let key = conversation("f");
    fake.push_reply(Reply::text("a long answer").with_usage(700, 350));
    let parts = run(&tunnel, &key, anthropic_request("/v1/messages", true)).await;
    assert_eq!(parts.last(), Some(&ResponsePart::End));
    assert_eq!(tunnel.usage(&key).tokens_today, 1_050);

    let message = refusal(&run(&tunnel, &key, anthropic_request("/v1/messages", true)).await);
    assert_eq!(
        message,
        "This conversation reached its daily limit of 1,000 tokens; it resets at midnight UTC, in 12 h."
    );
    assert_eq!(fake.requests().len(), 1);

    clock.advance(Duration::from_secs(12 * 3600));
    assert_eq!(tunnel.usage(&key).tokens_today, 0);
    let parts = run(&tunnel, &key, anthropic_request("/v1/messages", false)).await;
    assert_eq!(parts.last(), Some(&ResponsePart::End));
    assert_eq!(
        tunnel.usage(&key).tokens_today,
        15,
        "non-streamed usage counts"
    );
}

#[tokio::test]
async fn provider_errors_pass_through_with_their_headers() {
    let fake = FakeModel::start().await;
    let (tunnel, _) = tunnel_to(&fake, "anthropic", |_| {});
    let key = conversation("g");

    fake.push_reply(Reply::rate_limited(17));
    let parts = run(&tunnel, &key, anthropic_request("/v1/messages", true)).await;
    let (status, headers) = head(&parts);
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "retry-after"), Some("17"));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert!(body(&parts).contains("rate_limit_error"));
    assert_eq!(parts.last(), Some(&ResponsePart::End));

    fake.push_reply(Reply::unauthorized());
    let parts = run(&tunnel, &key, anthropic_request("/v1/messages", true)).await;
    assert_eq!(head(&parts).0, 401);
    assert!(body(&parts).contains("authentication_error"));

    fake.push_reply(Reply::server_error());
    let parts = run(&tunnel, &key, anthropic_request("/v1/messages", true)).await;
    assert_eq!(head(&parts).0, 500);
    assert!(body(&parts).contains("api_error"));

    // A redirect is not followed: it would carry the key to wherever it points.
    let elsewhere = FakeModel::start().await;
    fake.push_reply(Reply::redirect(&format!("{}/v1/messages", elsewhere.url())));
    let parts = run(&tunnel, &key, anthropic_request("/v1/messages", true)).await;
    assert_eq!(head(&parts).0, 307);
    assert_eq!(parts.last(), Some(&ResponsePart::End));
    assert_eq!(elsewhere.connections(), 0);
}

#[tokio::test]
async fn a_stream_that_breaks_off_ends_in_failed_after_its_body() {
    let fake = FakeModel::start().await;
    let (tunnel, _) = tunnel_to(&fake, "anthropic", |_| {});
    let key = conversation("h");
    fake.push_reply(Reply::broken_stream().with_usage(40, 5));
    let parts = run(&tunnel, &key, anthropic_request("/v1/messages", true)).await;
    assert_eq!(head(&parts).0, 200);
    assert!(body(&parts).contains("message_start"), "{parts:?}");
    let message = failure(&parts);
    assert!(message.contains("broke off"), "{message}");
    assert!(!parts.contains(&ResponsePart::End));
    // The input tokens reported before the break still count.
    assert_eq!(tunnel.usage(&key).tokens_today, 41);
}

#[tokio::test]
async fn garbage_passes_through_as_text_and_counts_nothing() {
    let fake = FakeModel::start().await;
    let (tunnel, _) = tunnel_to(&fake, "anthropic", |_| {});
    let key = conversation("i");
    fake.push_reply(Reply::garbage());
    let parts = run(&tunnel, &key, anthropic_request("/v1/messages", true)).await;
    assert_eq!(head(&parts).0, 200);
    let text = body(&parts);
    assert!(
        text.contains("this is not an event stream") && text.contains('\u{fffd}'),
        "{text}"
    );
    assert_eq!(parts.last(), Some(&ResponsePart::End));
    assert_eq!(tunnel.usage(&key).tokens_today, 0);
}

#[tokio::test]
async fn a_silent_or_absent_provider_fails_clearly() {
    let fake = FakeModel::start().await;
    let (tunnel, _) = tunnel_to(&fake, "anthropic", |s| {
        s.model_idle_timeout = Duration::from_millis(500);
    });
    fake.push_reply(Reply::stall());
    let parts = run(
        &tunnel,
        &conversation("j"),
        anthropic_request("/v1/messages", true),
    )
    .await;
    let message = refusal(&parts);
    assert!(message.contains("did not answer within"), "{message}");

    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"));
    let config = Config {
        provider: "openai".into(),
        openai_base_url: format!("http://{closed}/v1"),
        openai_api_key: Some(Secret::new(OPENAI_KEY)),
        ..Config::default()
    };
    let (tunnel, _) = with_settings(Settings::from_config(&config), |_| {});
    let message = refusal(&run(&tunnel, &conversation("j"), openai_request(true)).await);
    assert!(
        message.contains("could not reach the model provider"),
        "{message}"
    );
}

#[tokio::test]
async fn private_destinations_are_never_fetched() {
    let pages = PageServer::start(vec![("/", Page::Html("<p>secret</p>".into()))]).await;
    let tunnel = fetcher(&[], |_| {});
    let key = conversation("k");
    for (url, why) in [
        (pages.url("/"), "a loopback address"),
        ("http://10.0.0.1/".into(), "a private network address"),
        (
            "http://169.254.169.254/latest/meta-data".into(),
            "a cloud metadata address",
        ),
        ("http://[::1]/".into(), "a loopback address"),
        (
            "http://[::ffff:169.254.169.254]/".into(),
            "a cloud metadata address",
        ),
        ("http://localhost/".into(), "the local machine"),
        ("file:///etc/passwd".into(), "only http and https"),
    ] {
        let message = refusal(&run(&tunnel, &key, fetch(&url)).await);
        assert!(
            message.starts_with("refused:") && message.contains(why),
            "{url}: {message}"
        );
    }
    assert_eq!(pages.connections(), 0);

    // With an allowlist, unlisted hosts are refused whatever they are.
    let listed = fetcher(&["docs.example.com"], |_| {});
    let message = refusal(&run(&listed, &key, fetch(&pages.url("/"))).await);
    assert!(message.contains("web_fetch_allow"), "{message}");
    assert_eq!(pages.connections(), 0);
}

#[tokio::test]
async fn redirects_to_private_destinations_are_refused_before_connecting() {
    let elsewhere = PageServer::start(vec![("/", Page::Html("<p>internal</p>".into()))]).await;
    let pages = PageServer::start(vec![
        (
            "/to-private",
            Page::Redirect("http://10.0.0.1/admin".into()),
        ),
        (
            "/to-metadata",
            Page::Redirect("http://169.254.169.254/latest/meta-data/".into()),
        ),
        ("/to-v6-loopback", Page::Redirect("http://[::1]/".into())),
        ("/to-loopback", Page::Redirect(elsewhere.url("/"))),
    ])
    .await;
    // The page server is named explicitly; `*` lets any public host through, no more.
    let tunnel = fetcher(&[&pages.host_port(), "*"], |_| {});
    let key = conversation("l");
    for (path, why) in [
        ("/to-private", "10.0.0.1 (a private network address)"),
        ("/to-metadata", "169.254.169.254 (a cloud metadata address)"),
        ("/to-v6-loopback", "::1 (a loopback address)"),
        ("/to-loopback", "127.0.0.1 (a loopback address)"),
    ] {
        let message = refusal(&run(&tunnel, &key, fetch(&pages.url(path))).await);
        assert!(
            message.starts_with("refused:") && message.contains(why),
            "{path}: {message}"
        );
    }
    assert_eq!(
        pages.hits(),
        [
            "/to-private",
            "/to-metadata",
            "/to-v6-loopback",
            "/to-loopback"
        ]
    );
    assert_eq!(elsewhere.connections(), 0);
}

#[tokio::test]
async fn an_allowlisted_page_is_fetched_as_readable_text() {
    let html = r#"<!doctype html><html><head><title>Release notes</title>
        <script>track("visit")</script><style>p { color: red }</style></head>
        <body><h1>Version&nbsp;2</h1><p>Faster <b>and</b> safer &amp; smaller.</p>
        <ul><li>One</li><li>Two: see <a href="/details">the details</a></li></ul></body></html>"#;
    let pages = PageServer::start(vec![
        ("/notes", Page::Html(html.into())),
        ("/old", Page::Redirect("/notes".into())),
        (
            "/data.json",
            Page::Typed {
                content_type: "application/json".into(),
                body: br#"{"ok": true}"#.to_vec(),
            },
        ),
        (
            "/logo.png",
            Page::Typed {
                content_type: "image/png".into(),
                body: b"\x89PNG\r\n\x1a\n".to_vec(),
            },
        ),
        ("/loop", Page::Redirect("/loop".into())),
    ])
    .await;
    let tunnel = fetcher(&[&pages.host_port()], |_| {});
    let key = conversation("m");

    let parts = run(&tunnel, &key, fetch(&pages.url("/old"))).await;
    let (status, headers) = head(&parts);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        header(&headers, "content-location"),
        Some(pages.url("/notes").as_str())
    );
    assert_eq!(parts.last(), Some(&ResponsePart::End));
    assert_eq!(
        body(&parts),
        format!(
            "Release notes\n\n# Version 2\n\nFaster and safer & smaller.\n\n- One\n- Two: see the details ({})",
            pages.url("/details")
        )
    );

    let parts = run(&tunnel, &key, fetch(&pages.url("/data.json"))).await;
    assert_eq!(body(&parts), r#"{"ok": true}"#);

    let message = refusal(&run(&tunnel, &key, fetch(&pages.url("/logo.png"))).await);
    assert!(
        message.contains("image/png") && message.contains("does not read"),
        "{message}"
    );

    let message = refusal(&run(&tunnel, &key, fetch(&pages.url("/loop"))).await);
    assert!(message.contains("more than 5 redirects"), "{message}");

    // A name is resolved by the bridge, checked, and the connection pinned to the result
    // (`localhost` is refused unless named, as here, with its port).
    let by_name = pages.url("/notes").replace("127.0.0.1", "localhost");
    let port = pages
        .host_port()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let named = fetcher(&[&format!("localhost:{port}")], |_| {});
    let parts = run(&named, &key, fetch(&by_name)).await;
    assert!(body(&parts).starts_with("Release notes"), "{parts:?}");
    let message = refusal(&run(&tunnel, &key, fetch(&by_name)).await);
    assert!(message.contains("web_fetch_allow"), "{message}");

    // Fetches are not model requests.
    assert_eq!(tunnel.usage(&key), Usage::default());
}

#[tokio::test]
async fn fetches_are_capped_in_size_and_time() {
    let big = format!("<p>{}</p>", "word ".repeat(2_000));
    let pages = PageServer::start(vec![("/big", Page::Html(big)), ("/slow", Page::Stall)]).await;
    let host = pages.host_port();
    let tunnel = fetcher(&[&host], |s| {
        s.fetch.max_bytes = 1024;
        s.fetch.timeout = Duration::from_millis(500);
    });
    let key = conversation("n");
    let parts = run(&tunnel, &key, fetch(&pages.url("/big"))).await;
    let text = body(&parts);
    assert!(text.starts_with("word word"), "{text}");
    assert!(text.len() < 1200, "{}", text.len());
    assert!(
        text.ends_with("[truncated: the page is larger than 1 KB]"),
        "{text}"
    );

    let message = refusal(&run(&tunnel, &key, fetch(&pages.url("/slow"))).await);
    assert!(message.contains("took longer than"), "{message}");
    assert_eq!(
        tunnel.settings().fetch.allow,
        [AllowRule::parse(&host).unwrap_or(AllowRule::Any)]
    );
}

#[tokio::test]
async fn pages_without_a_content_type_are_read_by_how_they_start() {
    let bare = |body: &[u8]| Page::Typed {
        content_type: String::new(),
        body: body.to_vec(),
    };
    // Past the sniffed start, so the rest arrives after the decision.
    let long_html = format!("<!DOCTYPE html><p>{}</p><p>end</p>", "word ".repeat(400));
    let pages = PageServer::start(vec![
        ("/html", bare(long_html.as_bytes())),
        ("/text", bare(b"just some plain words")),
        ("/binary", bare(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")),
    ])
    .await;
    let host = pages.host_port();
    let tunnel = fetcher(&[&host], |_| {});
    let key = conversation("bare");
    let html = body(&run(&tunnel, &key, fetch(&pages.url("/html"))).await);
    assert!(html.starts_with("word word"), "{html}");
    assert!(html.ends_with("end"), "{html}");
    assert!(!html.contains('<'), "{html}");
    let text = run(&tunnel, &key, fetch(&pages.url("/text"))).await;
    assert_eq!(body(&text), "just some plain words");
    assert_eq!(header(&head(&text).1, "content-type"), Some("text/plain"));
    let message = refusal(&run(&tunnel, &key, fetch(&pages.url("/binary"))).await);
    assert!(message.contains("does not look like text"), "{message}");
}
