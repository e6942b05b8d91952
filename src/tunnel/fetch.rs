//! `web_fetch`: a page from the public web, as readable text.
//!
//! Each hop (the first URL and every redirect, at most [`MAX_REDIRECTS`]) is checked the
//! same way before anything is sent: http or https, no credentials in the URL, on the
//! operator's allowlist if there is one, and every address the host resolves to public
//! (unless the operator listed this host explicitly). The connection is then pinned to the
//! checked addresses, so a DNS answer that changes between the check and the connection
//! (DNS rebinding) cannot send it elsewhere; the client resolves nothing by itself.
//!
//! Behind the operator's forward proxy (`HTTPS_PROXY`, as inside a Docker Sandboxes VM,
//! where nothing else gets out) the proxy resolves and connects: the same checks apply to
//! the URL and to whatever the name resolves to here, a name that does not resolve here is
//! left to the proxy, and the proxy's own policy is what stops rebinding.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clawpen_protocol::ResponsePart;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::redirect::Policy;
use reqwest::{Response, Url};
use tokio::sync::mpsc;

use super::address::{refusal, refused_name};
use super::chunk::Utf8Chunks;
use super::model::{error_chain, send_text};
use super::text::HtmlText;
use super::{seconds, FetchSettings, TunnelError};

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// The longest a connection attempt of a fetch may take (within the fetch's own cap).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the bridge says it accepts: the kinds it can turn into text.
const ACCEPTED: &str = "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.9,text/*;q=0.8,*/*;q=0.1";

/// The user agent of fetches.
const USER_AGENT: &str = concat!(
    "Mozilla/5.0 (compatible; clawpen/",
    env!("CARGO_PKG_VERSION"),
    "; web_fetch)"
);

/// Fetch `url` and send the page to `out`: `Head` (status; `content-type` of the page as
/// served, `content-location` with the URL after redirects), its text as `Body` parts, `End`.
/// Plain text and JSON stream through as they arrive; HTML is read whole (within
/// `max_bytes`) to be turned into text.
pub(super) async fn perform(
    settings: &FetchSettings,
    url: &str,
    out: &mpsc::Sender<ResponsePart>,
) -> Result<(), TunnelError> {
    let mut began = false;
    let fetched = tokio::time::timeout(settings.timeout, fetch(settings, url, out, &mut began));
    match fetched.await {
        Ok(Ok(())) => {
            let _ = out.send(ResponsePart::End).await;
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let message = format!(
                "fetching {} took longer than {}",
                shorten(url),
                seconds(settings.timeout)
            );
            // Once the page began, the box has part of it: the answer broke off.
            Err(if began {
                TunnelError::Broken(message)
            } else {
                TunnelError::Unreachable(message)
            })
        }
    }
}

/// Where a page came from, for its `Head`.
struct Source<'a> {
    status: u16,
    /// As the server declared it (`text/plain` when it declared none).
    content_type: &'a str,
    /// Where it was found, after redirects.
    url: &'a Url,
}

impl Source<'_> {
    /// Sends the page's `Head`; false if the box is gone.
    async fn send_head(&self, out: &mpsc::Sender<ResponsePart>, began: &mut bool) -> bool {
        *began = true;
        let content_type = match self.content_type {
            "" => "text/plain",
            declared => declared,
        };
        let head = ResponsePart::Head {
            status: self.status,
            headers: vec![
                ("content-type".into(), content_type.to_string()),
                ("content-location".into(), self.url.to_string()),
            ],
        };
        out.send(head).await.is_ok()
    }
}

async fn fetch(
    settings: &FetchSettings,
    url: &str,
    out: &mpsc::Sender<ResponsePart>,
    began: &mut bool,
) -> Result<(), TunnelError> {
    let mut url = Url::parse(url.trim()).map_err(|e| {
        TunnelError::Refused(format!(
            "refused: `{}` is not a valid URL ({e})",
            shorten(url)
        ))
    })?;
    for hop in 0..=MAX_REDIRECTS {
        let proxy = settings.egress.proxy_for(&url);
        let addresses = destination(settings, &url, proxy.is_some()).await?;
        let client = match &proxy {
            Some(proxy) => proxied_client(settings, proxy)?,
            None => pinned_client(settings, &url, &addresses)?,
        };
        let response = client
            .get(url.clone())
            .header(ACCEPT, ACCEPTED)
            .send()
            .await
            .map_err(|e| {
                let chain = error_chain(&e);
                // A forward proxy that refuses the CONNECT: its policy, not the page.
                let proxy = if proxy.is_some() && chain.contains("tunnel error") {
                    " (the proxy refused to connect there: is the host on its allowlist?)"
                } else {
                    ""
                };
                TunnelError::Unreachable(format!("could not fetch {url}{proxy}: {chain}"))
            })?;
        let location = response
            .status()
            .is_redirection()
            .then(|| response.headers().get(LOCATION)?.to_str().ok())
            .flatten();
        let Some(location) = location else {
            return read(settings, url, response, out, began).await;
        };
        if hop == MAX_REDIRECTS {
            break;
        }
        url = url.join(location).map_err(|e| {
            TunnelError::Refused(format!(
                "refused: {url} redirects to `{}`, which is not a valid URL ({e})",
                shorten(location)
            ))
        })?;
    }
    Err(TunnelError::Refused(format!(
        "refused: more than {MAX_REDIRECTS} redirects (last to {url})"
    )))
}

/// Check that `url` may be fetched and return the addresses to connect to.
/// Through a proxy (`proxied`) the proxy resolves and connects: a name this host cannot
/// resolve is then left to it (and to its policy), while one that resolves here must still
/// resolve to public addresses only.
async fn destination(
    settings: &FetchSettings,
    url: &Url,
    proxied: bool,
) -> Result<Vec<SocketAddr>, TunnelError> {
    let refused = |why: String| Err(TunnelError::Refused(format!("refused: {why}")));
    if !matches!(url.scheme(), "http" | "https") {
        return refused(format!(
            "web_fetch reads only http and https URLs, not `{}:`",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refused("web_fetch does not send user names or passwords in URLs".into());
    }
    let (Some(host), Some(port)) = (host_of(url), url.port_or_known_default()) else {
        return refused(format!("{url} has no host"));
    };
    let host_text = match &host {
        Host::Domain(name) => name.clone(),
        Host::Ip(ip) => ip.to_string(),
    };
    let allow = &settings.allow;
    if !allow.is_empty() && !allow.iter().any(|rule| rule.permits(&host_text, port)) {
        return refused(format!(
            "{} is not on the operator's web_fetch_allow list",
            url.host_str()
                .map_or(host_text.clone(), |h| format!("{h}:{port}"))
        ));
    }
    // A host the operator named explicitly may be private: that is the point of naming it.
    let named = allow.iter().any(|rule| rule.names(&host_text, port));
    let ips: Vec<IpAddr> = match host {
        Host::Ip(ip) => vec![ip],
        Host::Domain(name) => {
            if let Some(why) = refused_name(&name).filter(|_| !named) {
                return refused(format!("web_fetch does not reach {name} ({why})"));
            }
            let resolved = tokio::net::lookup_host((name.as_str(), port)).await;
            let mut ips: Vec<IpAddr> = match resolved {
                Ok(addresses) => addresses.map(|addr| addr.ip()).collect(),
                Err(_) if proxied => Vec::new(),
                Err(e) => {
                    return Err(TunnelError::Unreachable(format!(
                        "could not resolve {name}: {e}"
                    )))
                }
            };
            ips.sort_unstable();
            ips.dedup();
            if ips.is_empty() && !proxied {
                return Err(TunnelError::Unreachable(format!(
                    "{name} resolves to no address"
                )));
            }
            if !named {
                for ip in &ips {
                    if let Some(why) = refusal(*ip) {
                        return refused(format!(
                            "web_fetch does not reach {name} (it resolves to {ip}, {why})"
                        ));
                    }
                }
            }
            return Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect());
        }
    };
    if !named {
        if let Some(why) = ips.iter().find_map(|ip| refusal(*ip)) {
            return refused(format!("web_fetch does not reach {host_text} ({why})"));
        }
    }
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// A client for one hop, bound to the checked addresses: no proxy, no redirects of its
/// own, and a resolver that refuses every name, so it connects nowhere else.
fn pinned_client(
    settings: &FetchSettings,
    url: &Url,
    addresses: &[SocketAddr],
) -> Result<reqwest::Client, TunnelError> {
    let mut builder = settings
        .egress
        .apply_roots(reqwest::Client::builder())
        .redirect(Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(NoResolver))
        .connect_timeout(CONNECT_TIMEOUT.min(settings.timeout))
        .user_agent(USER_AGENT);
    if let Some(Host::Domain(name)) = host_of(url) {
        builder = builder.resolve_to_addrs(&name, addresses);
    }
    builder.build().map_err(|e| {
        TunnelError::Unreachable(format!(
            "the bridge could not set up a client for {url}: {e}"
        ))
    })
}

/// A client for one hop through the operator's forward proxy, which resolves and connects
/// (inside a Docker Sandboxes VM nothing else reaches out): no redirects of its own.
fn proxied_client(settings: &FetchSettings, proxy: &str) -> Result<reqwest::Client, TunnelError> {
    let proxy = reqwest::Proxy::all(proxy).map_err(|e| {
        TunnelError::Unreachable(format!("the proxy `{proxy}` is not a proxy URL: {e}"))
    })?;
    settings
        .egress
        .apply_roots(reqwest::Client::builder())
        .redirect(Policy::none())
        .proxy(proxy)
        .connect_timeout(CONNECT_TIMEOUT.min(settings.timeout))
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| {
            TunnelError::Unreachable(format!("the bridge could not set up its fetch client: {e}"))
        })
}

/// A URL's host: a name to resolve, or an address.
#[derive(Debug, PartialEq, Eq)]
enum Host {
    Domain(String),
    Ip(IpAddr),
}

/// The host of `url`. The URL parser has already normalized every IPv4 spelling
/// (`0x7f.1`, `2130706433`, ...) to dotted decimal and IPv6 to brackets, so what does not
/// parse as an address here is a name.
fn host_of(url: &Url) -> Option<Host> {
    let host = url.host_str().filter(|h| !h.is_empty())?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse().ok().map(Host::Ip);
    }
    Some(match host.parse() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Domain(host.to_string()),
    })
}

/// Resolves nothing: every name a fetch client may use is pinned in advance, and anything
/// else is a bug that must not turn into an unchecked connection.
#[derive(Debug)]
struct NoResolver;

impl reqwest::dns::Resolve for NoResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let message = format!("{} was not checked before connecting", name.as_str());
        Box::pin(async move { Err(message.into()) })
    }
}

/// How a page's body is turned into text.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Html,
    Text,
    /// No content type given: decided by looking at the body.
    Unknown,
}

fn kind_of(content_type: &str) -> Option<Kind> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" => Some(Kind::Unknown),
        "text/html" | "application/xhtml+xml" => Some(Kind::Html),
        "application/json" | "application/xml" | "application/javascript" => Some(Kind::Text),
        e if e.starts_with("text/") || e.ends_with("+json") || e.ends_with("+xml") => {
            Some(Kind::Text)
        }
        _ => None,
    }
}

/// Read the body, within the size cap, make it text and send it: text as it arrives, HTML
/// converted as it arrives and sent once complete (its text only is held, never the page),
/// and a body without a content type once its start says which it is.
async fn read(
    settings: &FetchSettings,
    url: Url,
    mut response: Response,
    out: &mpsc::Sender<ResponsePart>,
    began: &mut bool,
) -> Result<(), TunnelError> {
    let status = response.status().as_u16();
    let declared = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(kind) = kind_of(&declared) else {
        return Err(TunnelError::Refused(format!(
            "refused: {url} is {declared}, which web_fetch does not read (it reads HTML, text and JSON)"
        )));
    };
    let source = Source {
        status,
        content_type: &declared,
        url: &url,
    };
    let mut page = match kind {
        Kind::Html => Reading::Html(Box::new(HtmlText::new(Some(url.clone())))),
        Kind::Text => Reading::Text,
        Kind::Unknown => Reading::Sniffing(Vec::new()),
    };
    if matches!(page, Reading::Text) && !source.send_head(out, began).await {
        return Ok(());
    }
    let mut utf8 = Utf8Chunks::default();
    let mut read = 0;
    let mut truncated = false;
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            TunnelError::Broken(format!(
                "the page {url} broke off after {read} bytes: {}",
                error_chain(&e)
            ))
        })?;
        let Some(chunk) = chunk else { break };
        let room = settings.max_bytes - read;
        let take = &chunk[..chunk.len().min(room)];
        read += take.len();
        if let Reading::Sniffing(start) = &mut page {
            start.extend_from_slice(take);
            if start.len() >= SNIFFED {
                let start = std::mem::take(start);
                page = decided(&url, &start, &source, out, began).await?;
                if !page.take(&utf8.push(&start), out).await {
                    return Ok(());
                }
            }
        } else if !page.take(&utf8.push(take), out).await {
            return Ok(());
        }
        if chunk.len() > room {
            truncated = true;
            break;
        }
    }
    if let Reading::Sniffing(start) = &mut page {
        let start = std::mem::take(start);
        page = decided(&url, &start, &source, out, began).await?;
        if !page.take(&utf8.push(&start), out).await {
            return Ok(());
        }
    }
    // A cut at the size cap may split the last character: drop it rather than show U+FFFD.
    let tail = if truncated {
        String::new()
    } else {
        utf8.finish()
    };
    let mut text = match page {
        Reading::Html(mut html) => {
            html.push(&tail);
            html.finish()
        }
        Reading::Text | Reading::Sniffing(_) => tail,
    };
    if truncated {
        text.push_str(&format!(
            "\n\n[truncated: the page is larger than {} KB]",
            settings.max_bytes / 1024
        ));
    }
    if !*began && !source.send_head(out, began).await {
        return Ok(());
    }
    send_text(out, &text).await;
    Ok(())
}

/// How much of a body without a content type is looked at to tell HTML from text.
const SNIFFED: usize = 1024;

/// A page being read, by what it turns out to be.
enum Reading {
    /// Text: sent as it comes.
    Text,
    /// HTML: converted as it comes, its text sent at the end.
    Html(Box<HtmlText>),
    /// No content type: its start, until there is enough of it to tell.
    Sniffing(Vec<u8>),
}

impl Reading {
    /// Takes the next piece of the page's text; false if the box is gone.
    async fn take(&mut self, text: &str, out: &mpsc::Sender<ResponsePart>) -> bool {
        match self {
            Self::Text => send_text(out, text).await,
            Self::Html(html) => {
                html.push(text);
                true
            }
            Self::Sniffing(start) => {
                start.extend_from_slice(text.as_bytes());
                true
            }
        }
    }
}

/// What a page without a content type is, from its start; text pages get their `Head` now.
async fn decided(
    url: &Url,
    start: &[u8],
    source: &Source<'_>,
    out: &mpsc::Sender<ResponsePart>,
    began: &mut bool,
) -> Result<Reading, TunnelError> {
    match sniff(start) {
        Some(Kind::Html) => Ok(Reading::Html(Box::new(HtmlText::new(Some(url.clone()))))),
        Some(_) => {
            source.send_head(out, began).await;
            Ok(Reading::Text)
        }
        None => Err(TunnelError::Refused(format!(
            "refused: {url} has no content type and does not look like text"
        ))),
    }
}

/// A page without a content type: HTML if it starts like HTML, text if it has no NUL
/// bytes, else not something to read.
fn sniff(body: &[u8]) -> Option<Kind> {
    let start = &body[..body.len().min(1024)];
    let head = String::from_utf8_lossy(start)
        .trim_start()
        .to_ascii_lowercase();
    if head.starts_with("<!doctype html") || head.starts_with("<html") {
        Some(Kind::Html)
    } else if start.contains(&0) {
        None
    } else {
        Some(Kind::Text)
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::AllowRule;

    fn settings(allow: &[&str]) -> FetchSettings {
        FetchSettings {
            allow: allow
                .iter()
                .map(|e| AllowRule::parse(e).unwrap_or(AllowRule::Any))
                .collect(),
            max_bytes: 1024,
            timeout: Duration::from_secs(5),
            egress: Default::default(),
        }
    }

    async fn check(settings: &FetchSettings, url: &str) -> Result<Vec<SocketAddr>, String> {
        let url = Url::parse(url).map_err(|e| e.to_string())?;
        destination(settings, &url, false)
            .await
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_ipv4_spelling_is_an_address() {
        let host = |u: &str| Url::parse(u).ok().as_ref().and_then(host_of);
        let loopback = Some(Host::Ip(IpAddr::from([127, 0, 0, 1])));
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
        ] {
            assert_eq!(host(url), loopback, "{url}");
        }
        assert_eq!(
            host("http://[::ffff:127.0.0.1]:8080/"),
            Some(Host::Ip(
                "::ffff:127.0.0.1".parse().unwrap_or(IpAddr::from([0; 4]))
            ))
        );
        assert_eq!(
            host("https://Example.COM./x"),
            Some(Host::Domain("example.com.".into()))
        );
    }

    #[tokio::test]
    async fn private_destinations_are_refused_without_resolving() {
        let open = settings(&[]);
        for (url, why) in [
            ("http://10.0.0.1/", "a private network address"),
            (
                "http://169.254.169.254/latest/meta-data",
                "a cloud metadata address",
            ),
            ("http://[::1]/", "a loopback address"),
            ("http://[::ffff:10.0.0.1]/", "a private network address"),
            ("http://0x7f.1:8080/", "a loopback address"),
            ("http://[fd00:ec2::254]/", "a cloud metadata address"),
            (
                "http://metadata.google.internal/computeMetadata/v1/",
                "metadata",
            ),
            ("http://localhost:8080/", "the local machine"),
            ("ftp://example.com/file", "only http and https"),
            ("file:///etc/passwd", "only http and https"),
            ("http://user:pw@example.com/", "user names or passwords"),
        ] {
            let err = check(&open, url).await.err().unwrap_or_default();
            assert!(
                err.starts_with("refused:") && err.contains(why),
                "{url}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn the_allowlist_limits_hosts_and_explicit_entries_lift_the_checks() {
        let listed = settings(&["127.0.0.1:8080", "*", "*.internal.test"]);
        assert_eq!(
            check(&listed, "http://127.0.0.1:8080/page").await,
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], 8080))])
        );
        // Another port of the same host is only covered by `*`, which lifts nothing.
        let err = check(&listed, "http://127.0.0.1:8081/").await.err();
        assert!(err.is_some_and(|e| e.contains("loopback")));
        let err = check(&listed, "http://10.1.1.1/").await.err();
        assert!(err.is_some_and(|e| e.contains("private")));

        let only = settings(&["docs.example.com"]);
        let err = check(&only, "https://example.com/").await.err();
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("not on the operator's web_fetch_allow list")),
            "{err:?}"
        );
        let err = check(&only, "http://10.0.0.1/").await.err();
        assert!(err.is_some_and(|e| e.contains("web_fetch_allow")));
    }

    #[test]
    fn content_types_decide_how_a_page_is_read() {
        assert_eq!(kind_of("text/html; charset=utf-8"), Some(Kind::Html));
        assert_eq!(kind_of("application/xhtml+xml"), Some(Kind::Html));
        assert_eq!(kind_of("text/plain"), Some(Kind::Text));
        assert_eq!(kind_of("text/markdown"), Some(Kind::Text));
        assert_eq!(kind_of("application/json"), Some(Kind::Text));
        assert_eq!(kind_of("application/ld+json"), Some(Kind::Text));
        assert_eq!(kind_of(""), Some(Kind::Unknown));
        assert_eq!(kind_of("image/png"), None);
        assert_eq!(kind_of("application/octet-stream"), None);
        assert_eq!(sniff(b"  <!DOCTYPE html><p>x"), Some(Kind::Html));
        assert_eq!(sniff(b"plain words"), Some(Kind::Text));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0"), None);
    }
}
