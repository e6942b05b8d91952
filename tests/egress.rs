//! Behind a forward proxy with its own CA, as inside a Docker Sandboxes micro-VM: model
//! requests, web fetches and Discord (REST and the gateway's websocket) go through a
//! CONNECT proxy made here, to TLS servers whose certificates a CA made here signed;
//! trusted only once that CA is added, and a host the proxy refuses gives an error that
//! says so.

#[path = "support/discord/bridge.rs"]
mod discord_bridge;
#[path = "support/discord/mod.rs"]
mod discord_fake;
mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawpen::adapters::egress::Egress;
use clawpen::adapters::ConversationKey;
use clawpen::config::{Config, Secret};
use clawpen::protocol::{Request, ResponsePart};
use clawpen::tunnel::{Settings, SystemClock, Tunnel};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The provider's name; nothing resolves it but the proxy.
const PROVIDER_HOST: &str = "model.clawpen.test";

/// A host the proxy refuses, as a deny-by-default policy does.
const REFUSED_HOST: &str = "elsewhere.clawpen.test";

/// Telegram's Bot API, as only the proxy reaches it.
const TELEGRAM_API_HOST: &str = "api.telegram.clawpen.test";

/// Discord's REST API and gateway, as only the proxy reaches them.
const DISCORD_API_HOST: &str = "api.discord.clawpen.test";
const DISCORD_GATEWAY_HOST: &str = "gateway.discord.clawpen.test";

/// A CA and a certificate it signed for the hosts above.
struct Pki {
    ca_pem: String,
    leaf: CertificateDer<'static>,
    key: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let fail = |e: rcgen::Error| -> ! { panic!("rcgen: {e}") };
    let ca_key = KeyPair::generate().unwrap_or_else(|e| fail(e));
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail(e));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "clawpen test proxy CA");
    let ca = ca.self_signed(&ca_key).unwrap_or_else(|e| fail(e));
    let key = KeyPair::generate().unwrap_or_else(|e| fail(e));
    let names = [
        PROVIDER_HOST,
        TELEGRAM_API_HOST,
        DISCORD_API_HOST,
        DISCORD_GATEWAY_HOST,
    ];
    let leaf = CertificateParams::new(names.map(String::from).to_vec())
        .unwrap_or_else(|e| fail(e))
        .signed_by(&key, &ca, &ca_key)
        .unwrap_or_else(|e| fail(e));
    Pki {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        key: key.serialize_der(),
    }
}

/// The servers' TLS: the leaf the test CA signed.
fn server_tls(pki: &Pki) -> tokio_rustls::TlsAcceptor {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_no_client_auth()
    .with_single_cert(
        vec![pki.leaf.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone())),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn listen() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (listener, addr)
}

/// A TLS front for a plain server at `upstream`: what the fake Discord serves on loopback
/// is served as HTTPS and WSS with the test CA's certificate.
async fn tls_front(pki: &Pki, upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let acceptor = server_tls(pki);
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// A TLS "model provider" on loopback answering every request with a small JSON message.
async fn provider(pki: &Pki) -> std::net::SocketAddr {
    let acceptor = server_tls(pki);
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate hangs up here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = vec![0u8; 8192];
                let _ = tls.read(&mut request).await;
                let body = r#"{"type":"message","content":[{"type":"text","text":"hi through the proxy"}],"usage":{"input_tokens":3,"output_tokens":4}}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// A CONNECT proxy that lets the hosts of `routes` through (each to its address) and
/// refuses every other host with 403, recording what it was asked.
struct Proxy {
    url: String,
    asked: Arc<Mutex<Vec<String>>>,
    tunnels: Arc<AtomicUsize>,
}

async fn proxy(routes: &[(&'static str, std::net::SocketAddr)]) -> Proxy {
    let (listener, addr) = listen().await;
    let url = format!("http://{addr}");
    let routes = Arc::new(routes.to_vec());
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let (log, count) = (asked.clone(), tunnels.clone());
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (log, count, routes) = (log.clone(), count.clone(), routes.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match client.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or_default()
                    .to_string();
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(target.clone());
                let host = target.split(':').next();
                let Some(&(_, upstream)) = routes.iter().find(|(h, _)| Some(*h) == host) else {
                    let _ = client
                        .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(upstream).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    Proxy {
        url,
        asked,
        tunnels,
    }
}

/// A tunnel to `host` as the Anthropic provider, through `egress`.
fn tunnel(host: &str, egress: Egress) -> Tunnel {
    let config = Config {
        provider: "anthropic".into(),
        anthropic_base_url: format!("https://{host}"),
        anthropic_api_key: Some(Secret::new("sk-ant-egress-test")),
        ..Config::default()
    };
    let mut settings = Settings::from_config(&config);
    settings.egress = egress;
    settings.model_idle_timeout = Duration::from_secs(20);
    Tunnel::with_settings(settings, Arc::new(SystemClock))
}

/// One model request; every part the box would get.
async fn ask(tunnel: &Tunnel) -> Vec<ResponsePart> {
    let request = Request::Model {
        method: "POST".into(),
        path: "/v1/messages".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#.into(),
    };
    perform(tunnel, request).await
}

/// Performs `request` for a conversation; every part the box would get.
async fn perform(tunnel: &Tunnel, request: Request) -> Vec<ResponsePart> {
    let (tx, mut rx) = mpsc::channel(8);
    let key = ConversationKey::new("test", "egress");
    let collect = async {
        let mut parts = Vec::new();
        while let Some(part) = rx.recv().await {
            parts.push(part);
        }
        parts
    };
    let both = async { tokio::join!(tunnel.perform(&key, request, tx), collect).1 };
    tokio::time::timeout(Duration::from_secs(60), both)
        .await
        .unwrap_or_else(|_| panic!("the request did not finish"))
}

/// The text of the answer's `Body` parts.
fn body(parts: &[ResponsePart]) -> String {
    parts
        .iter()
        .filter_map(|part| match part {
            ResponsePart::Body { data } => Some(data.as_str()),
            _ => None,
        })
        .collect()
}

fn failure(parts: &[ResponsePart]) -> Option<String> {
    parts.iter().find_map(|part| match part {
        ResponsePart::Failed { message } => Some(message.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_requests_go_through_the_proxy_and_trust_its_ca_once_given() {
    let pki = pki();
    let provider = provider(&pki).await;
    let proxy = proxy(&[(PROVIDER_HOST, provider)]).await;

    // The CA is not among the built-in roots: refused, and the message says why.
    let untrusted = ask(&tunnel(
        PROVIDER_HOST,
        Egress::default().with_proxy(&proxy.url),
    ))
    .await;
    let message = failure(&untrusted).unwrap_or_else(|| panic!("trusted: {untrusted:?}"));
    assert!(message.to_lowercase().contains("certificate"), "{message}");

    // With the CA added (as SSL_CERT_FILE adds it), the answer comes through the proxy.
    let mut egress = Egress::default().with_proxy(&proxy.url);
    egress
        .add_pem(pki.ca_pem.as_bytes(), "the test CA")
        .unwrap_or_else(|e| panic!("{e}"));
    let parts = ask(&tunnel(PROVIDER_HOST, egress.clone())).await;
    assert_eq!(failure(&parts), None, "{parts:?}");
    let body = body(&parts);
    assert!(body.contains("hi through the proxy"), "{parts:?}");
    assert!(proxy.tunnels.load(Ordering::SeqCst) >= 1);

    // A host the proxy's policy refuses: a clear error naming the proxy.
    let refused = ask(&tunnel(REFUSED_HOST, egress)).await;
    let message = failure(&refused).unwrap_or_else(|| panic!("not refused: {refused:?}"));
    assert!(message.contains(REFUSED_HOST), "{message}");
    assert!(message.contains("proxy"), "{message}");
    let asked = proxy
        .asked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(
        asked.iter().any(|t| t == &format!("{REFUSED_HOST}:443")),
        "{asked:?}"
    );
}

/// One web fetch of `url` through `egress`; every part the box would get.
async fn fetch(url: &str, egress: Egress) -> Vec<ResponsePart> {
    let config = Config {
        web_fetch_timeout_secs: 20,
        ..Config::default()
    };
    let mut settings = Settings::from_config(&config);
    settings.fetch.egress = egress;
    let tunnel = Tunnel::with_settings(settings, Arc::new(SystemClock));
    perform(&tunnel, Request::WebFetch { url: url.into() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_fetches_go_through_the_proxy_and_private_destinations_are_still_refused() {
    let pki = pki();
    let provider = provider(&pki).await;
    let proxy = proxy(&[(PROVIDER_HOST, provider)]).await;
    let mut egress = Egress::default().with_proxy(&proxy.url);
    egress
        .add_pem(pki.ca_pem.as_bytes(), "the test CA")
        .unwrap_or_else(|e| panic!("{e}"));

    // A host only the proxy can resolve: the page comes through it.
    let parts = fetch(&format!("https://{PROVIDER_HOST}/page"), egress.clone()).await;
    assert_eq!(failure(&parts), None, "{parts:?}");
    let body = body(&parts);
    assert!(body.contains("hi through the proxy"), "{parts:?}");

    // A host the proxy's policy refuses: a clear error naming the proxy.
    let refused = fetch(&format!("https://{REFUSED_HOST}/"), egress.clone()).await;
    let message = failure(&refused).unwrap_or_else(|| panic!("not refused: {refused:?}"));
    assert!(message.contains("proxy refused"), "{message}");

    // Private destinations are refused before anything reaches the proxy.
    let asked_before = proxy.asked.lock().unwrap_or_else(|e| e.into_inner()).len();
    for url in [
        "https://localhost/",
        "http://127.0.0.1:8080/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
    ] {
        let parts = fetch(url, egress.clone()).await;
        let message = failure(&parts).unwrap_or_else(|| panic!("{url} fetched: {parts:?}"));
        assert!(message.starts_with("refused"), "{url}: {message}");
    }
    let asked_after = proxy.asked.lock().unwrap_or_else(|e| e.into_inner()).len();
    assert_eq!(
        asked_before, asked_after,
        "a private destination reached the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_rest_and_gateway_go_through_the_proxy_and_trust_its_ca() {
    use clawpen::adapters::Adapter;
    use discord_bridge::{Dc, ANN, DM_ANN};
    use discord_fake::FakeDiscord;
    use support::model::{FakeModel, Reply};
    use support::{eventually, REPLY_TIMEOUT};

    let pki = pki();
    let fake = FakeDiscord::start().await;
    let (rest, gateway) = fake.addrs();
    let (rest, gateway) = (tls_front(&pki, rest).await, tls_front(&pki, gateway).await);
    let proxy = proxy(&[(DISCORD_API_HOST, rest), (DISCORD_GATEWAY_HOST, gateway)]).await;
    let mut egress = Egress::default().with_proxy(&proxy.url);
    egress
        .add_pem(pki.ca_pem.as_bytes(), "the test CA")
        .unwrap_or_else(|e| panic!("{e}"));
    // First the gateway is said to be where the proxy's policy refuses to go.
    fake.set_gateway_url(&format!("wss://{REFUSED_HOST}"));
    let model = FakeModel::start().await;
    model.push_reply(Reply::text("hi through the proxy, over the gateway"));
    let t = Dc::through(fake, egress, |config, discord| {
        model.serve(config);
        discord.api_url = format!("https://{DISCORD_API_HOST}");
        discord.allowed_users = vec![ANN.into()];
    })
    .await;

    // REST went through the proxy (GET /gateway/bot answered); the refused gateway is a
    // trouble that names the proxy and the host.
    let adapter = t.adapter.clone();
    let told = eventually(REPLY_TIMEOUT, || async { adapter.trouble().is_some() }).await;
    let trouble = t.adapter.trouble().unwrap_or_default();
    assert!(told, "no trouble reported for a refused gateway");
    assert!(
        trouble.contains(&format!("refused {REFUSED_HOST}:443")) && trouble.contains("403"),
        "{trouble}"
    );

    // Once the gateway is one the proxy lets through, the bot connects over WSS (the test
    // CA trusted) and answers a DM.
    t.fake
        .set_gateway_url(&format!("wss://{DISCORD_GATEWAY_HOST}"));
    t.connected().await;
    t.fake.dm(DM_ANN, ANN, "are you there?");
    t.reply(DM_ANN, 1, "hi through the proxy, over the gateway")
        .await;
    let asked = proxy
        .asked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for host in [DISCORD_API_HOST, DISCORD_GATEWAY_HOST, REFUSED_HOST] {
        assert!(
            asked.contains(&format!("{host}:443")),
            "the proxy was never asked for {host}: {asked:?}"
        );
    }
    assert_eq!(t.adapter.trouble(), None);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_goes_through_the_proxy_and_trusts_its_ca() {
    use support::model::{FakeModel, Reply};
    use telegram_fake::bridge::Tg;
    use telegram_fake::FakeTelegram;

    let pki = pki();
    let fake = FakeTelegram::start().await;
    let plain = fake
        .url()
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("the fake's address: {e}"));
    let front = tls_front(&pki, plain).await;
    let proxy = proxy(&[(TELEGRAM_API_HOST, front)]).await;
    let mut egress = Egress::default().with_proxy(&proxy.url);
    egress
        .add_pem(pki.ca_pem.as_bytes(), "the test CA")
        .unwrap_or_else(|e| panic!("{e}"));
    let model = FakeModel::start().await;
    model.push_reply(Reply::text("hi through the proxy, from Telegram"));
    let t = Tg::through(fake, &egress, |config, telegram| {
        model.serve(config);
        telegram.api_url = format!("https://{TELEGRAM_API_HOST}");
        telegram.allowed_users = vec![100];
    })
    .await;
    t.fake.dm(100, "are you there?");
    t.reply(100, 1, "hi through the proxy, from Telegram").await;
    let asked = proxy
        .asked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(
        asked.contains(&format!("{TELEGRAM_API_HOST}:443")),
        "the proxy was never asked for the Bot API: {asked:?}"
    );
    t.stop().await;
}
