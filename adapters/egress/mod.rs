//! How the bridge's HTTP clients reach the outside: through the operator's forward proxy
//! when one is set, trusting extra CA certificates beside the built-in web PKI roots.
//!
//! Every outbound client (model providers and web fetches in the tunnel, Telegram and
//! Discord REST here) builds on [`Egress::apply`], and the Discord gateway's websocket on
//! [`Egress::connect`], so a deployment behind an intercepting proxy (a Docker
//! Sandboxes micro-VM: deny-by-default network, `HTTPS_PROXY`, its own CA) is configured
//! once, by the variables every tool reads:
//!
//! - `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY` (and lower-case spellings):
//!   read by the HTTP client itself when it is built.
//! - `SSL_CERT_FILE` (a PEM bundle) and `SSL_CERT_DIR` (directories, `:`-separated, of
//!   `.pem`/`.crt` files): added to the built-in roots, never replacing them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

mod stream;

pub use stream::{Io, Stream};

/// Where a client's proxy comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyChoice {
    /// The process environment (`HTTPS_PROXY`, `NO_PROXY`, ...), as the client reads it.
    Environment,
    /// This proxy for every request (tests, and operators who name it in code).
    Url(String),
    /// No proxy: connect directly.
    Direct,
}

/// How outbound clients connect. Cheap to clone.
#[derive(Clone)]
pub struct Egress {
    proxy: ProxyChoice,
    /// Extra trusted roots, parsed once (a client is built per web-fetch hop).
    roots: Arc<Vec<reqwest::Certificate>>,
    /// The same roots as DER, for the TLS of raw connections ([`Egress::connect`]).
    ders: Arc<Vec<CertificateDer<'static>>>,
    /// Where the extra roots came from, for `clawpen doctor`.
    sources: Vec<String>,
    /// What could not be read or parsed, worded for the operator.
    problems: Vec<String>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("proxy", &self.proxy)
            .field("extra_roots", &self.roots.len())
            .field("sources", &self.sources)
            .field("problems", &self.problems)
            .finish()
    }
}

impl Default for Egress {
    /// The environment's proxy and the built-in roots only.
    fn default() -> Self {
        Self {
            proxy: ProxyChoice::Environment,
            roots: Arc::default(),
            ders: Arc::default(),
            sources: Vec::new(),
            problems: Vec::new(),
        }
    }
}

/// The `.pem` and `.crt` files of a directory, sorted (hash-named links such as
/// `5ad8a5d6.0` point at the same certificates and are left out).
fn certificate_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("SSL_CERT_DIR {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "pem" || ext == "crt")
        })
        .collect();
    files.sort();
    Ok(files)
}

impl Egress {
    /// The process environment's proxy and extra roots (`SSL_CERT_FILE`, `SSL_CERT_DIR`).
    /// Files that cannot be read are listed in [`Egress::problems`]; the rest is used.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut egress = Self::default();
        if let Some(file) = var("SSL_CERT_FILE") {
            egress.add_file(Path::new(&file), "SSL_CERT_FILE");
        }
        if let Some(dirs) = var("SSL_CERT_DIR") {
            for dir in dirs.split(':').filter(|d| !d.is_empty()) {
                match certificate_files(Path::new(dir)) {
                    Ok(files) => {
                        for file in files {
                            egress.add_file(&file, "SSL_CERT_DIR");
                        }
                    }
                    Err(problem) => egress.problems.push(problem),
                }
            }
        }
        egress
    }

    fn add_file(&mut self, path: &Path, variable: &str) {
        match std::fs::read(path) {
            Ok(pem) => {
                if let Err(problem) = self.add_pem(&pem, &format!("{variable} {}", path.display()))
                {
                    self.problems.push(problem);
                }
            }
            Err(e) => self
                .problems
                .push(format!("{variable} {}: {e}", path.display())),
        }
    }

    /// Trusts the certificates of a PEM bundle too; `source` names it in messages.
    pub fn add_pem(&mut self, pem: &[u8], source: &str) -> Result<(), String> {
        let ders = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{source}: not a PEM certificate bundle: {e}"))?;
        if ders.is_empty() {
            return Err(format!("{source}: no certificate in it"));
        }
        let found = ders
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{source}: not a certificate: {e}"))?;
        Arc::make_mut(&mut self.roots).extend(found);
        Arc::make_mut(&mut self.ders).extend(ders);
        self.sources.push(source.to_string());
        Ok(())
    }

    /// The same, with every request through `proxy` (`http://host:port`).
    pub fn with_proxy(mut self, proxy: impl Into<String>) -> Self {
        self.proxy = ProxyChoice::Url(proxy.into());
        self
    }

    /// The same, connecting directly whatever the environment says.
    pub fn direct(mut self) -> Self {
        self.proxy = ProxyChoice::Direct;
        self
    }

    /// Where the proxy comes from.
    pub fn proxy(&self) -> &ProxyChoice {
        &self.proxy
    }

    /// How many extra roots are trusted, and from where.
    pub fn extra_roots(&self) -> (usize, &[String]) {
        (self.roots.len(), &self.sources)
    }

    /// What could not be loaded.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Adds the extra roots to a client's builder, and its proxy unless it stays
    /// `Environment` (which the client reads itself).
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let builder = self.apply_roots(builder);
        match &self.proxy {
            ProxyChoice::Environment => builder,
            ProxyChoice::Direct => builder.no_proxy(),
            ProxyChoice::Url(url) => match reqwest::Proxy::all(url) {
                Ok(proxy) => builder.proxy(proxy),
                Err(e) => {
                    tracing::error!(proxy = %url, error = %e, "not a proxy URL; connecting directly");
                    builder.no_proxy()
                }
            },
        }
    }

    /// The proxy a request to `url` goes through, if any: the one set, or the environment's
    /// for its scheme (`HTTPS_PROXY` for https and wss, `HTTP_PROXY` for http and ws, then
    /// `ALL_PROXY`; lower case too) unless
    /// `NO_PROXY` names its host. For clients that must know, such as web fetches, which
    /// check destinations themselves.
    pub fn proxy_for(&self, url: &reqwest::Url) -> Option<String> {
        match &self.proxy {
            ProxyChoice::Direct => None,
            ProxyChoice::Url(proxy) => Some(proxy.clone()),
            ProxyChoice::Environment => env_proxy_for(url, |name| {
                std::env::var(name).ok().filter(|v| !v.trim().is_empty())
            }),
        }
    }

    /// Adds the extra roots only (for a client that must connect directly).
    pub fn apply_roots(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        self.roots
            .iter()
            .cloned()
            .fold(builder, |builder, root| builder.add_root_certificate(root))
    }
}

/// [`Egress::proxy_for`] with the environment read through `var`.
fn env_proxy_for(url: &reqwest::Url, var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let either = |upper: &str| var(upper).or_else(|| var(&upper.to_ascii_lowercase()));
    let proxy = match url.scheme() {
        "https" | "wss" => either("HTTPS_PROXY"),
        "http" | "ws" => either("HTTP_PROXY"),
        _ => None,
    }
    .or_else(|| either("ALL_PROXY"))?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let bypassed = either("NO_PROXY").is_some_and(|list| {
        list.split(',').map(str::trim).any(|entry| {
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            let entry = entry
                .split(':')
                .next()
                .unwrap_or(entry)
                .to_ascii_lowercase();
            entry == "*"
                || (!entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}"))))
        })
    });
    (!bypassed).then_some(proxy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_of_a_url_follows_its_scheme_and_no_proxy() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let url = |u: &str| reqwest::Url::parse(u).unwrap_or_else(|e| panic!("{e}"));
        let vars = env(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("http_proxy", "http://plain:3128"),
            (
                "NO_PROXY",
                "localhost, .internal.example,api.example.com:443",
            ),
        ]);
        let proxy_of = |u: &str| env_proxy_for(&url(u), vars);
        assert_eq!(
            proxy_of("https://example.org/").as_deref(),
            Some("http://proxy:3128")
        );
        assert_eq!(
            proxy_of("http://example.org/").as_deref(),
            Some("http://plain:3128")
        );
        assert_eq!(
            proxy_of("wss://gateway.example.org/?v=10").as_deref(),
            Some("http://proxy:3128")
        );
        assert_eq!(
            proxy_of("ws://example.org/").as_deref(),
            Some("http://plain:3128")
        );
        assert_eq!(proxy_of("https://localhost:8080/"), None);
        assert_eq!(proxy_of("https://a.internal.example/"), None);
        assert_eq!(proxy_of("https://api.example.com/"), None);
        assert_eq!(
            proxy_of("https://notapi.example.com/").as_deref(),
            Some("http://proxy:3128")
        );
        let all = env(&[("ALL_PROXY", "http://all:1"), ("no_proxy", "*")]);
        assert_eq!(env_proxy_for(&url("https://x.org/"), all), None);
        let none = env(&[]);
        assert_eq!(env_proxy_for(&url("https://x.org/"), none), None);
        let direct = Egress::default().direct();
        assert_eq!(direct.proxy_for(&url("https://x.org/")), None);
        let set = Egress::default().with_proxy("http://set:1");
        assert_eq!(
            set.proxy_for(&url("https://x.org/")).as_deref(),
            Some("http://set:1")
        );
    }

    #[test]
    fn garbage_and_empty_bundles_are_named_and_nothing_is_added() {
        let mut egress = Egress::default();
        let err = egress.add_pem(b"not a certificate", "SSL_CERT_FILE /x");
        assert!(err.is_err_and(|e| e.starts_with("SSL_CERT_FILE /x")));
        assert_eq!(egress.extra_roots().0, 0);
        assert_eq!(egress.proxy(), &ProxyChoice::Environment);
        assert_eq!(egress.direct().proxy(), &ProxyChoice::Direct);
    }

    #[test]
    fn only_pem_and_crt_files_of_a_directory_are_read() {
        let dir = std::env::temp_dir().join(format!("clawpen-egress-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        for name in ["b.pem", "a.crt", "5ad8a5d6.0", "README"] {
            let _ = std::fs::write(dir.join(name), "x");
        }
        let files = certificate_files(&dir).unwrap_or_default();
        let names: Vec<_> = files
            .iter()
            .filter_map(|f| f.file_name()?.to_str().map(str::to_owned))
            .collect();
        assert_eq!(names, ["a.crt", "b.pem"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
