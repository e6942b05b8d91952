//! A static page server for `web_fetch` tests: pages, redirects and stalls at fixed paths,
//! with every requested path recorded.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION};
use hyper::Request;

use super::lock;
use super::server::{respond, Server};

/// What the page server answers at a path.
#[derive(Clone, Debug)]
pub enum Page {
    /// 200 `text/html; charset=utf-8`.
    Html(String),
    /// 200 with this content type.
    Typed { content_type: String, body: Vec<u8> },
    /// 302 to this URL.
    Redirect(String),
    /// Never answer.
    Stall,
}

/// A static page server.
pub struct PageServer {
    server: Server,
    hits: Arc<Mutex<Vec<String>>>,
}

impl PageServer {
    /// Serve `pages` (path → page); other paths are 404.
    pub async fn start(pages: Vec<(&str, Page)>) -> Self {
        let pages: Arc<Vec<(String, Page)>> =
            Arc::new(pages.into_iter().map(|(p, v)| (p.to_string(), v)).collect());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        let server = Server::start(move |request: Request<Incoming>| {
            let (pages, seen) = (pages.clone(), seen.clone());
            async move {
                let path = request.uri().path().to_string();
                lock(&seen).push(path.clone());
                match pages.iter().find(|(p, _)| *p == path).map(|(_, page)| page) {
                    Some(Page::Html(html)) => {
                        respond(200, "text/html; charset=utf-8", html.clone().into_bytes())
                    }
                    Some(Page::Typed { content_type, body }) => {
                        respond(200, content_type, body.clone())
                    }
                    Some(Page::Redirect(to)) => {
                        let mut response = respond(302, "text/plain", b"moved".to_vec());
                        if let Ok(to) = HeaderValue::from_str(to) {
                            response.headers_mut().insert(LOCATION, to);
                        }
                        response
                    }
                    Some(Page::Stall) => std::future::pending().await,
                    None => respond(404, "text/plain", b"not found".to_vec()),
                }
            }
        })
        .await;
        Self { server, hits }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    /// `127.0.0.1:PORT`, as an allowlist entry.
    pub fn host_port(&self) -> String {
        self.server.addr.to_string()
    }

    /// The paths requested so far.
    pub fn hits(&self) -> Vec<String> {
        lock(&self.hits).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections.load(Ordering::SeqCst)
    }
}
