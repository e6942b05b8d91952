//! Raw connections for clients that are not reqwest (the Discord gateway's websocket): a
//! TCP stream to the destination, through the operator's CONNECT proxy when one applies,
//! with TLS trusting the built-in web PKI roots and the extra CA certificates.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Egress;

/// How long connecting (proxy, tunnel and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The most of a proxy's answer to CONNECT that is read (status line and headers).
const PROXY_HEAD_MAX: usize = 16 * 1024;

/// A byte stream to a destination: plain or TLS, direct or tunnelled.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connected stream.
pub type Stream = Pin<Box<dyn Io>>;

impl Egress {
    /// Connects to `url`'s host and port (`ws`/`http` plain, `wss`/`https` over TLS),
    /// through the proxy [`Egress::proxy_for`] names for it. Errors are worded for the
    /// operator and name the proxy when it was the one that refused.
    pub async fn connect(&self, url: &url::Url) -> Result<Stream, String> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_now(url))
            .await
            .unwrap_or_else(|_| Err(format!("connecting to {url} timed out")))
    }

    async fn connect_now(&self, url: &url::Url) -> Result<Stream, String> {
        let tls = match url.scheme() {
            "wss" | "https" => true,
            "ws" | "http" => false,
            other => return Err(format!("cannot connect to a {other}: URL")),
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("{url} names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let tcp = match self.proxy_for(url) {
            Some(proxy) => tunnel(&proxy, &host, port).await?,
            None => TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("connecting to {host}:{port}: {e}"))?,
        };
        let _ = tcp.set_nodelay(true);
        if !tls {
            return Ok(Box::pin(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(self.tls_config()?);
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
        Ok(Box::pin(stream))
    }

    /// A TLS client configuration trusting the built-in roots and the extra ones.
    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let (added, _) = roots.add_parsable_certificates(self.ders.iter().cloned());
        if added < self.ders.len() {
            tracing::debug!(
                skipped = self.ders.len() - added,
                "extra CA certificates not usable as TLS roots"
            );
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// A TCP stream to `host:port` through the HTTP proxy at `proxy` (`http://[user:pass@]host:port`),
/// by `CONNECT`.
async fn tunnel(proxy: &str, host: &str, port: u16) -> Result<TcpStream, String> {
    let parsed = url::Url::parse(proxy).map_err(|e| format!("the proxy {proxy}: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "the proxy {} is not an http:// proxy",
            parsed.origin().ascii_serialization()
        ));
    }
    let proxy_host = parsed
        .host_str()
        .ok_or_else(|| format!("the proxy {proxy} names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let proxy_port = parsed.port_or_known_default().unwrap_or(80);
    // Named without credentials in every message.
    let shown = format!("{proxy_host}:{proxy_port}");
    let mut tcp = TcpStream::connect((proxy_host.as_str(), proxy_port))
        .await
        .map_err(|e| format!("connecting to the proxy {shown}: {e}"))?;
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if !parsed.username().is_empty() {
        let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
        let user = decode(parsed.username());
        let password = decode(parsed.password().unwrap_or_default());
        let credentials = STANDARD.encode(format!("{user}:{password}"));
        head.push_str(&format!("Proxy-Authorization: Basic {credentials}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("asking the proxy {shown} for {target}: {e}"))?;
    let answer = read_head(&mut tcp)
        .await
        .map_err(|e| format!("the proxy {shown} for {target}: {e}"))?;
    let status_line = answer.lines().next().unwrap_or_default().trim().to_string();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status.len() == 3 && status.starts_with('2') {
        Ok(tcp)
    } else {
        Err(format!(
            "the proxy {shown} refused {target}: {}",
            if status_line.is_empty() {
                "no answer"
            } else {
                &status_line
            }
        ))
    }
}

/// Reads an HTTP head up to its blank line, byte by byte so that nothing of the tunnelled
/// stream after it is taken; at most [`PROXY_HEAD_MAX`] bytes.
async fn read_head(tcp: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= PROXY_HEAD_MAX {
            return Err(format!("an answer longer than {PROXY_HEAD_MAX} bytes"));
        }
        match tcp.read(&mut byte).await {
            Ok(0) => return Err("it hung up".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_proxy_that_refuses_is_named_and_its_status_given() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
            let head = read_head(&mut tcp).await.unwrap_or_else(|e| panic!("{e}"));
            let _ = tcp
                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                .await;
            head
        });
        let proxy = format!("http://bot:p%40ss@{addr}");
        let egress = Egress::default().with_proxy(proxy);
        let url =
            url::Url::parse("wss://gateway.example:443/?v=10").unwrap_or_else(|e| panic!("{e}"));
        let error = match egress.connect(&url).await {
            Ok(_) => panic!("the refused tunnel connected"),
            Err(error) => error,
        };
        assert!(error.contains("refused gateway.example:443"), "{error}");
        assert!(error.contains("403 Forbidden"), "{error}");
        assert!(
            !error.contains("p@ss") && !error.contains("bot:"),
            "{error}"
        );
        let head = server.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            head.starts_with("CONNECT gateway.example:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Proxy-Authorization: Basic Ym90OnBAc3M=\r\n"),
            "{head}"
        );
    }
}
