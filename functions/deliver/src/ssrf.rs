//! SSRF guard: destinations may not reach loopback, private, link-local or otherwise internal addresses unless the
//! host is in `delivery.allow_private_hosts`.
//!
//! Two checks, both needed: [`Guard::check_url`] before a request (IP-literal hosts never reach a resolver), and
//! [`GuardedResolver`] at connect time for names, so the address checked is the address connected to (no DNS
//! rebinding window). Documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20)
//! are refused too: nothing legitimate lives there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Whether `ip` is an address no destination may reach without being allow-listed.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", incl. unspecified
        || a == 10
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || a == 127
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224 // multicast 224/4, reserved 240/4, broadcast
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // Forms that reach an IPv4 address are judged by it.
    if s[..5] == [0; 5] && (s[5] == 0 || s[5] == 0xffff) {
        // ::a.b.c.d (compatible; also :: and ::1) and ::ffff:a.b.c.d (mapped)
        return forbidden_v4(embedded(s[6], s[7]));
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        // ::ffff:0:a.b.c.d (SIIT translated)
        return forbidden_v4(embedded(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded(s[6], s[7])); // NAT64 well-known prefix
    }
    if s[0] == 0x2002 {
        return forbidden_v4(embedded(s[1], s[2])); // 6to4
    }
    // Only global unicast 2000::/3 may be reached: this excludes ::/8 leftovers, 64:ff9b:1::/48 (local NAT64),
    // 100::/64 discard, fc00::/7 unique-local, fe80::/10 link-local, fec0::/10 site-local and ff00::/8 multicast.
    if s[0] & 0xe000 != 0x2000 {
        return true;
    }
    (s[0] == 0x2001 && s[1] == 0) // Teredo (tunnels to an obfuscated IPv4)
        || (s[0] == 0x2001 && s[1] == 2 && s[2] == 0) // benchmarking 2001:2::/48
        || (s[0] == 0x2001 && (s[1] & 0xffe0) == 0x0020) // ORCHIDv2 2001:20::/28
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID 2001:10::/28
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] & 0xfff0) == 0x3ff0 // documentation 3fff::/20
}

/// The refusal the resolver returns; the sender finds it in a request error's source chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ssrf_refused")]
pub struct SsrfRefused;

/// Whether `err` or anything in its source chain is an [`SsrfRefused`].
pub fn is_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<SsrfRefused>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The allow-list and the URL check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Normalized: lower case, no brackets, no trailing dot; IP literals in canonical form.
    allow: Vec<String>,
}

fn normalize_host(host: &str) -> String {
    let h = host.trim();
    let h = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    let h = h.strip_suffix('.').unwrap_or(h);
    match h.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => h.to_ascii_lowercase(),
    }
}

impl Guard {
    /// `allow_private_hosts`: host names or IP literals (IPv6 with or without brackets).
    pub fn new(allow_private_hosts: &[String]) -> Guard {
        Guard { allow: allow_private_hosts.iter().map(|h| normalize_host(h)).filter(|h| !h.is_empty()).collect() }
    }

    /// Whether `host` (a name or an IP literal, bracketed or not) is allow-listed.
    pub fn allows(&self, host: &str) -> bool {
        if self.allow.is_empty() {
            return false;
        }
        let host = normalize_host(host);
        self.allow.contains(&host)
    }

    /// Checks a destination URL before sending. Errors are stable codes (never the URL): `unsupported_scheme`,
    /// `credentials_in_url`, `invalid_url`, `ssrf_refused`, `insecure_scheme`.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err("unsupported_scheme".into()),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials_in_url".into());
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h,
            _ => return Err("invalid_url".into()),
        };
        // `Url` has already turned every IPv4 spelling (decimal, hex, short) into dotted form.
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let ip = bare.parse::<IpAddr>().ok();
        let allowed = self.allows(bare);
        if !allowed && ip.is_some_and(forbidden) {
            return Err("ssrf_refused".into());
        }
        // Events must not cross the internet in clear text; plain http is for allow-listed (internal) hosts.
        if !https && !allowed {
            return Err("insecure_scheme".into());
        }
        Ok(())
    }
}

/// A client builder behind `guard`: names resolve through [`GuardedResolver`], redirects are not followed (a
/// redirect would reach a URL the guard never checked) and no proxy is used (a proxy would resolve and connect on
/// our behalf, past the resolver). Callers add their timeouts, pool and user agent.
pub fn guarded_client_builder(guard: &Arc<Guard>) -> reqwest::ClientBuilder {
    let builder = match lambda_tls_config() {
        Some(tls) => reqwest::Client::builder().tls_backend_preconfigured(tls),
        None => reqwest::Client::builder(),
    };
    builder
        .dns_resolver(GuardedResolver::new(Arc::clone(guard)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(5))
}

/// In a Lambda execution environment, TLS that trusts the Mozilla roots compiled into the binary (`webpki-roots`,
/// already parsed) instead of reqwest's default, the platform verifier, which reads and parses the system's whole
/// bundle and certificate directory when each client is built: ~40 % of the deliver and DSR worker functions' init
/// CPU (crates/bench `cold-start` under perf). Amazon Linux's bundle comes from the same Mozilla list. `None` (the
/// system's roots) outside Lambda, and where `SSL_CERT_FILE` or `SSL_CERT_DIR` names a trust store, e.g. for a
/// destination behind a private CA.
fn lambda_tls_config() -> Option<rustls::ClientConfig> {
    tributary_core::lambda::built_in_tls_roots().then(built_in_roots_config)?
}

/// Rustls on aws-lc (reqwest's own provider) with the built-in roots; HTTP/1.1, as this reqwest build speaks no h2.
fn built_in_roots_config() -> Option<rustls::ClientConfig> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(config)
}

/// A reqwest resolver that drops forbidden addresses of names that are not allow-listed.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Arc<Guard>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<Guard>) -> GuardedResolver {
        GuardedResolver { guard }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let allowed = guard.allows(&host);
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() {
                return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses").into());
            }
            let kept: Vec<SocketAddr> = found.into_iter().filter(|a| allowed || !forbidden(a.ip())).collect();
            if kept.is_empty() {
                return Err(SsrfRefused.into());
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_tls_trusts_the_public_web_roots_and_reqwest_takes_it() {
        let config = built_in_roots_config().expect("aws-lc supports the default protocol versions");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let roots = &webpki_roots::TLS_SERVER_ROOTS;
        assert!(roots.len() > 100, "{} roots", roots.len());
        // ISRG Root X1 (Let's Encrypt), behind most webhook endpoints; its subject holds the common name.
        let isrg = roots.iter().any(|a| a.subject.as_ref().windows(12).any(|w| w == b"ISRG Root X1"));
        assert!(isrg, "ISRG Root X1 is among the built-in roots");
        // A rustls version other than reqwest's would make the builder fail ("unknown TLS backend").
        let client = reqwest::Client::builder().tls_backend_preconfigured(config).build();
        assert!(client.is_ok(), "{:?}", client.err());
    }

    #[test]
    fn forbidden_addresses() {
        let cases: &[(&str, bool)] = &[
            // IPv4
            ("0.0.0.0", true),
            ("0.1.2.3", true),
            ("10.1.2.3", true),
            ("100.64.0.1", true),
            ("100.127.255.255", true),
            ("100.128.0.1", false),
            ("127.0.0.1", true),
            ("127.255.0.9", true),
            ("169.254.169.254", true),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.1", false),
            ("192.0.0.8", true),
            ("192.0.2.10", true),
            ("192.88.99.1", true),
            ("192.168.1.1", true),
            ("198.18.0.1", true),
            ("198.19.255.1", true),
            ("198.20.0.1", false),
            ("198.51.100.7", true),
            ("203.0.113.7", true),
            ("224.0.0.1", true),
            ("240.0.0.1", true),
            ("255.255.255.255", true),
            ("8.8.8.8", false),
            ("1.1.1.1", false),
            ("93.184.216.34", false),
            // IPv6
            ("::", true),
            ("::1", true),
            ("fe80::1", true),
            ("febf::1", true),
            ("fec0::1", true),
            ("fc00::1", true),
            ("fd12:3456::1", true),
            ("ff02::1", true),
            ("100::1", true),
            ("2001:db8::1", true),
            ("3fff::1", true),
            ("2001::1", true),
            ("2001:4860:4860::8888", false),
            ("2606:4700:4700::1111", false),
            ("2a00:1450:4001::200e", false),
            // Embedded IPv4: mapped, compatible, translated, NAT64, 6to4.
            ("::ffff:127.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("::ffff:8.8.8.8", false),
            ("::127.0.0.1", true),
            ("::8.8.8.8", false),
            ("::ffff:0:10.0.0.1", true),
            ("::ffff:0:8.8.8.8", false),
            ("64:ff9b::7f00:1", true),
            ("64:ff9b::a9fe:a9fe", true),
            ("64:ff9b::808:808", false),
            ("64:ff9b:1::808:808", true),
            ("2002:7f00:1::1", true),
            ("2002:c0a8:101::1", true),
            ("2002:808:808::1", false),
        ];
        for (ip, expected) in cases {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(forbidden(parsed), *expected, "{ip}");
        }
    }

    fn check(guard: &Guard, url: &str) -> Result<(), String> {
        guard.check_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn urls_are_checked() {
        let closed = Guard::new(&[]);
        let ok: [&str; 3] = ["https://hooks.example.com/in", "https://8.8.8.8/x", "https://[2001:4860::1]:8443/"];
        for url in ok {
            assert_eq!(check(&closed, url), Ok(()), "{url}");
        }
        let refused: [(&str, &str); 13] = [
            ("http://hooks.example.com/in", "insecure_scheme"),
            ("http://8.8.8.8/", "insecure_scheme"),
            ("https://127.0.0.1/", "ssrf_refused"),
            ("http://127.0.0.1:8080/", "ssrf_refused"),
            ("https://2130706433/", "ssrf_refused"),
            ("https://0x7f.1/", "ssrf_refused"),
            ("https://169.254.169.254/latest/meta-data", "ssrf_refused"),
            ("https://[::1]/", "ssrf_refused"),
            ("https://[::ffff:10.0.0.1]/", "ssrf_refused"),
            ("https://user:pw@hooks.example.com/", "credentials_in_url"),
            ("https://user@hooks.example.com/", "credentials_in_url"),
            ("ftp://hooks.example.com/", "unsupported_scheme"),
            ("file:///etc/passwd", "unsupported_scheme"),
        ];
        for (url, code) in refused {
            assert_eq!(check(&closed, url), Err(code.to_string()), "{url}");
        }
        assert_eq!(closed.check_url(&Url::parse("unix:/run/x").unwrap()), Err("unsupported_scheme".into()));

        let open = Guard::new(&["Internal.Example.".into(), "127.0.0.1".into(), "[::1]".into(), "0:0::2".into()]);
        for url in [
            "http://internal.example/in",
            "http://INTERNAL.example./in",
            "http://127.0.0.1:9000/",
            "http://[::1]:9000/",
            "http://[::2]/",
        ] {
            assert_eq!(check(&open, url), Ok(()), "{url}");
        }
        assert_eq!(check(&open, "http://127.0.0.2/"), Err("ssrf_refused".into()));
        assert_eq!(check(&open, "http://other.example/"), Err("insecure_scheme".into()));
        assert_eq!(check(&open, "http://u:p@internal.example/"), Err("credentials_in_url".into()));
        // Errors never echo the URL.
        assert_eq!(check(&open, "http://secret-token@other.example/").unwrap_err(), "credentials_in_url");
    }

    #[test]
    fn allow_list_matching() {
        let g = Guard::new(&["LocalHost".into(), "[::1]".into(), " ".into()]);
        assert!(g.allows("localhost") && g.allows("LOCALHOST") && g.allows("localhost."));
        assert!(g.allows("::1") && g.allows("[::1]") && g.allows("0::1"));
        assert!(!g.allows("127.0.0.1") && !g.allows("") && !g.allows("localhost.example"));
        assert!(!Guard::new(&[]).allows("localhost"));
    }

    async fn resolve(guard: Guard, name: &str) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let resolver = GuardedResolver::new(Arc::new(guard));
        let name: Name = name.parse().map_err(|_| "bad name")?;
        Ok(resolver.resolve(name).await?.collect())
    }

    #[tokio::test]
    async fn the_resolver_refuses_internal_names_unless_allow_listed() {
        let refused = resolve(Guard::new(&[]), "localhost").await.unwrap_err();
        assert!(is_refusal(refused.as_ref()), "{refused}");
        let addrs = resolve(Guard::new(&["localhost".into()]), "localhost").await.unwrap();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        // Allowing another host does not allow this one.
        let refused = resolve(Guard::new(&["127.0.0.1".into()]), "localhost").await.unwrap_err();
        assert!(is_refusal(refused.as_ref()));
        // Other failures are not refusals (no lookup here: tests stay offline and fast).
        let io: Box<dyn std::error::Error + Send + Sync> = std::io::Error::other("no addresses").into();
        assert!(!is_refusal(io.as_ref()));
    }
}
