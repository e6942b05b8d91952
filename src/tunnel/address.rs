//! Which destinations `web_fetch` may reach: address classes and the operator's allowlist.
//!
//! A box has no network, so the bridge's fetches are its only way out; they must not become
//! a way into the bridge's own network (loopback services, the LAN, cloud metadata with its
//! credentials). Every address a name resolves to is classified here before any connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names of cloud metadata services, refused before they are even resolved.
const METADATA_HOSTS: &[&str] = &["metadata.google.internal", "metadata.goog", "metadata"];

/// Why an address is not fetched, as words for the agent; `None` for a public address.
pub(crate) fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_refusal(v4),
        IpAddr::V6(v6) => v6_refusal(v6),
    }
}

fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "a cloud metadata address",
        _ if ip.is_broadcast() => "the broadcast address",
        (0, _) => "an unspecified (\"this network\") address",
        (127, _) => "a loopback address",
        (10, _) | (172, 16..=31) | (192, 168) => "a private network address",
        (169, 254) => "a link-local address",
        (100, 64..=127) => "a shared (CGNAT) address",
        (224..=239, _) => "a multicast address",
        (240..=255, _) => "a reserved address",
        (192, 0) if c == 0 => "a reserved (IETF protocol) address",
        (198, 18..=19) => "a reserved (benchmarking) address",
        (192, 0) if c == 2 => "a documentation address",
        (198, 51) if c == 100 => "a documentation address",
        (203, 0) if c == 113 => "a documentation address",
        _ => return None,
    })
}

fn v6_refusal(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return v4_refusal(v4);
    }
    let segments = ip.segments();
    let first = segments[0];
    Some(match first {
        _ if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) => {
            "a cloud metadata address"
        }
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        0xfe80..=0xfebf => "a link-local address",
        0xfec0..=0xfeff => "a site-local address",
        0xfc00..=0xfdff => "a unique local (private) address",
        0xff00..=0xffff => "a multicast address",
        0x2001 if segments[1] == 0x0db8 => "a documentation address",
        // The rest of ::/8 (other than the forms handled above) is reserved.
        0x0000..=0x00ff => "a reserved address",
        _ => return None,
    })
}

/// The IPv4 address inside an IPv6 one that carries it: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`).
/// Each of these reaches the embedded IPv4 host, so it is judged as that host.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low()),
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(low()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low()),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// Whether `host` names a metadata service or the local machine, before resolving it.
pub(crate) fn refused_name(host: &str) -> Option<&'static str> {
    let host = normalize(host);
    if METADATA_HOSTS.contains(&host.as_str()) {
        Some("a cloud metadata service")
    } else if host == "localhost" || host.ends_with(".localhost") {
        Some("the local machine")
    } else {
        None
    }
}

/// One entry of `web_fetch_allow`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowRule {
    /// `*`: any host, still subject to the address checks.
    Any,
    /// `*.example.org`: any subdomain (not the domain itself), still subject to the checks.
    Subdomains(String),
    /// `example.com` or `127.0.0.1:8080`: this host (on this port, if given). Named
    /// explicitly by the operator, so it may be fetched even when it is private or loopback.
    Host {
        /// The host, lower case, IPv6 without brackets.
        host: String,
        /// Only this port, if given.
        port: Option<u16>,
    },
}

impl AllowRule {
    /// Parse one entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let bad = |why: &str| Err(format!("`{entry}` {why}"));
        if entry == "*" {
            return Ok(Self::Any);
        }
        if entry.contains("://") || entry.contains('/') {
            return bad("must be a host or host:port, not a URL");
        }
        if let Some(domain) = entry.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') || domain.contains(':') {
                return bad("must be `*.domain`");
            }
            return Ok(Self::Subdomains(normalize(domain)));
        }
        if entry.contains('*') {
            return bad("may use `*` only as `*` or as a leading `*.`");
        }
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            // [v6] or [v6]:port
            let Some((host, after)) = rest.split_once(']') else {
                return bad("has an unclosed `[`");
            };
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':').map(str::parse::<u16>) {
                    Some(Ok(port)) => (host, Some(port)),
                    _ => return bad("has an invalid port"),
                },
            }
        } else if entry.parse::<Ipv6Addr>().is_ok() {
            (entry, None)
        } else {
            match entry.rsplit_once(':') {
                Some((host, port)) => match port.parse::<u16>() {
                    Ok(port) => (host, Some(port)),
                    Err(_) => return bad("has an invalid port"),
                },
                None => (entry, None),
            }
        };
        if host.is_empty() {
            return bad("has no host");
        }
        Ok(Self::Host {
            host: normalize(host),
            port,
        })
    }

    /// Whether the rule lets `host:port` be fetched at all.
    pub(crate) fn permits(&self, host: &str, port: u16) -> bool {
        let host = normalize(host);
        match self {
            Self::Any => true,
            Self::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
            Self::Host { .. } => self.names(&host, port),
        }
    }

    /// Whether the rule names `host:port` explicitly, which lifts the address checks.
    pub(crate) fn names(&self, host: &str, port: u16) -> bool {
        match self {
            Self::Host { host: h, port: p } => *h == normalize(host) && p.is_none_or(|p| p == port),
            Self::Any | Self::Subdomains(_) => false,
        }
    }
}

/// Lower case, no brackets, no trailing dot.
fn normalize(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> Option<&'static str> {
        refusal(ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.0.7",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::254",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(refused(ip).is_some(), "{ip} must be refused");
        }
        assert_eq!(refused("169.254.169.254"), Some("a cloud metadata address"));
        assert_eq!(refused("fd00:ec2::254"), Some("a cloud metadata address"));
        assert_eq!(refused("10.0.0.1"), Some("a private network address"));
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:93.184.216.34",
            "2002:5db8:d822::1",
        ] {
            assert_eq!(refused(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_hosts_are_judged_as_those_hosts() {
        assert_eq!(refused("::ffff:127.0.0.1"), Some("a loopback address"));
        assert_eq!(
            refused("::ffff:10.1.2.3"),
            Some("a private network address")
        );
        assert_eq!(
            refused("::ffff:169.254.169.254"),
            Some("a cloud metadata address")
        );
        assert_eq!(
            refused("::ffff:a9fe:a9fe"),
            Some("a cloud metadata address")
        );
        assert_eq!(refused("::127.0.0.1"), Some("a loopback address"));
        assert_eq!(
            refused("64:ff9b::10.0.0.1"),
            Some("a private network address")
        );
        assert_eq!(
            refused("2002:c0a8:0101::1"),
            Some("a private network address")
        );
        assert_eq!(
            refused("::ffff:0.0.0.0"),
            Some("an unspecified (\"this network\") address")
        );
    }

    #[test]
    fn local_and_metadata_names_are_refused_unresolved() {
        assert!(refused_name("metadata.google.internal").is_some());
        assert!(refused_name("Metadata.Google.Internal.").is_some());
        assert!(refused_name("localhost").is_some());
        assert!(refused_name("api.localhost").is_some());
        assert_eq!(refused_name("example.com"), None);
        assert_eq!(refused_name("notlocalhost"), None);
    }

    #[test]
    fn allow_rules_parse_and_match() {
        let rule = |s| AllowRule::parse(s).unwrap_or(AllowRule::Any);
        assert_eq!(
            rule("Example.COM"),
            AllowRule::Host {
                host: "example.com".into(),
                port: None
            }
        );
        assert_eq!(
            rule("127.0.0.1:8080"),
            AllowRule::Host {
                host: "127.0.0.1".into(),
                port: Some(8080)
            }
        );
        assert_eq!(
            rule("[::1]:81"),
            AllowRule::Host {
                host: "::1".into(),
                port: Some(81)
            }
        );
        assert_eq!(
            rule("::1"),
            AllowRule::Host {
                host: "::1".into(),
                port: None
            }
        );

        let sub = rule("*.example.org");
        assert!(sub.permits("docs.example.org", 443));
        assert!(sub.permits("a.b.example.org", 80));
        assert!(!sub.permits("example.org", 443));
        assert!(!sub.permits("badexample.org", 443));
        assert!(!sub.names("docs.example.org", 443));

        let exact = rule("127.0.0.1:8080");
        assert!(exact.permits("127.0.0.1", 8080) && exact.names("127.0.0.1", 8080));
        assert!(!exact.permits("127.0.0.1", 8081));
        let any_port = rule("example.com");
        assert!(any_port.names("EXAMPLE.com.", 8443));
        assert!(rule("[::1]:81").names("[::1]", 81));
        assert!(AllowRule::Any.permits("anything.net", 1) && !AllowRule::Any.names("x", 1));

        for bad in [
            "http://example.com",
            "example.com/path",
            "*.",
            "a*.b",
            "host:port",
            "host:99999",
            "[::1",
            ":80",
        ] {
            assert!(AllowRule::parse(bad).is_err(), "{bad} must not parse");
        }
    }
}
