//! The one way Causeway fetches a link that someone on another network
//! chose (a file, an avatar): guarded so that such a link cannot reach
//! inside.
//!
//! The fetcher resolves names itself and connects only to the addresses it
//! checked (no DNS rebinding between check and connect); it refuses
//! loopback, private, link-local, unique-local, CGNAT, multicast,
//! unspecified and reserved addresses, IPv4 and IPv6 alike (IPv4-mapped,
//! NAT64 and 6to4 forms by the IPv4 address inside), unless the bridge's
//! `fetch.allow` names them; it follows at most [`MAX_REDIRECTS`]
//! redirects, checking each like the first link; it uses no proxy from the
//! environment; and it bounds the time and the size of what it reads. A
//! refusal is counted (`causeway_fetch_refused_total{bridge,reason}`) and
//! the bridge sends the plain link instead.
//!
//! Causeway's own links (a Matrix file's `<public_url>/media/…`, a mail
//! attachment's `…/files/…`) are fetched as they are: they were made by
//! this process ([`trust_own_links`]), and their signature is checked by the
//! route that serves them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock, OnceLock, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::{Deserialize, Serialize};

use crate::secret::link_for_log;
use crate::{BridgeContext, OptionError};

/// Redirects followed at most, each checked like the first link.
pub const MAX_REDIRECTS: usize = 3;

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not to be fetched, or the link's server refused it (4xx), or it is
    /// larger or slower than allowed: asking again will not help; send the
    /// link instead.
    #[error("{0}")]
    Refused(Refusal),
    /// Network trouble or a 5xx: worth another try later.
    #[error("{0}")]
    Unavailable(String),
}

/// A refused fetch: the metric's `reason` and what to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// `loopback`, `private`, `link_local`, `unique_local`, `cgnat`,
    /// `multicast`, `unspecified`, `reserved` (where the link leads);
    /// `scheme`, `bad_url`, `unresolved`, `redirects`, `too_large`,
    /// `too_slow`, `status` (what came of it).
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Refusal { reason, message: message.into() }
    }
}

/// A fetched file.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// `fetch:` in a bridge's options.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FetchOptions {
    /// Where links may lead although it is not public (an operator's own
    /// file server): a network in CIDR form (`10.1.0.0/16`, `fd00::/8`), one
    /// address, or `host:port` (`files.corp.example:443`).
    #[serde(default)]
    pub allow: Vec<String>,
}

impl FetchOptions {
    /// Every entry of `allow` that does not parse, at `<at>.allow[i]`.
    pub fn check(&self, at: &str) -> Vec<OptionError> {
        self.allow
            .iter()
            .enumerate()
            .filter_map(|(i, a)| Allow::parse(a).err().map(|e| OptionError::new(format!("{at}.allow[{i}]"), e)))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Allow {
    Net(IpNet),
    HostPort(String, u16),
}

impl Allow {
    fn parse(s: &str) -> Result<Allow, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Allow::Net(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Allow::Net(IpNet::from(ip)));
        }
        let bad = || format!("{s:?} is neither a network (10.0.0.0/8, fd00::/8), an address nor host:port");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if host.is_empty() || port == 0 || host.contains('/') {
            return Err(bad());
        }
        Ok(Allow::HostPort(host, port))
    }
}

/// The list a fetcher checks against.
#[derive(Debug, Default)]
struct Allowed(Vec<Allow>);

impl Allowed {
    fn ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|a| matches!(a, Allow::Net(n) if n.contains(&ip)))
    }

    fn host_port(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.0.iter().any(|a| matches!(a, Allow::HostPort(h, p) if *p == port && h.eq_ignore_ascii_case(host)))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why a link may not lead to `ip` (`None`: a public address).
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "unspecified",
        (127, ..) => "loopback",
        (10, ..) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link_local",
        (100, 64..=127, _) => "cgnat",
        (224..=239, ..) => "multicast",
        // 240/4 and the broadcast address; 192.0.0/24 (protocol
        // assignments), 198.18/15 (benchmarking), the documentation nets.
        (240..=255, ..) | (192, 0, 0) | (198, 18..=19, _) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "reserved",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // The IPv4 address inside: NAT64 (64:ff9b::/96), the deprecated
    // IPv4-compatible form (::/96), 6to4 (2002::/16).
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return forbidden_v4(embedded(s[6], s[7]));
    }
    if s[0..6] == [0; 6] {
        return forbidden_v4(embedded(s[6], s[7])).or(Some("reserved"));
    }
    if s[0] == 0x2002 {
        return forbidden_v4(embedded(s[1], s[2]));
    }
    Some(match s[0] {
        0xfc00..=0xfdff => "unique_local",
        0xfe80..=0xfebf => "link_local",
        // Site-local (deprecated, still routed inside some networks).
        0xfec0..=0xfeff => "private",
        0xff00..=0xffff => "multicast",
        // Documentation (2001:db8::/32) and discard-only (100::/64).
        0x2001 if s[1] == 0x0db8 => "reserved",
        0x0100 if s[1..4] == [0; 3] => "reserved",
        _ => return None,
    })
}

/// Prefixes of the links this process made itself.
static OWN_LINKS: LazyLock<RwLock<Vec<String>>> = LazyLock::new(Default::default);

/// Links under `prefix` (normalized as a URL, ending in `/`) are this
/// process's own: they are fetched wherever they point.
pub fn trust_own_links(prefix: &str) {
    let Ok(u) = Url::parse(prefix) else { return };
    let mut p = u.to_string();
    if !p.ends_with('/') {
        p.push('/');
    }
    let mut own = OWN_LINKS.write().unwrap_or_else(|e| e.into_inner());
    if !own.contains(&p) {
        own.push(p);
    }
}

fn own_link(url: &Url) -> bool {
    let own = OWN_LINKS.read().unwrap_or_else(|e| e.into_inner());
    own.iter().any(|p| url.as_str().starts_with(p.as_str()))
}

/// The resolver of guarded requests: a name resolves to its addresses that
/// may be reached; none left is an error the fetcher reads back.
struct Guard(Arc<Allowed>);

impl Resolve for Guard {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(Refusal::new("unresolved", format!("{host}: {e}"))) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            let mut why = None;
            let ok: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match forbidden(a.ip()) {
                    Some(kind) if !allowed.ip(a.ip()) => {
                        why = Some(kind);
                        false
                    }
                    _ => true,
                })
                .collect();
            if ok.is_empty() {
                let reason = why.unwrap_or("unresolved");
                return Err(Box::new(Refusal::new(reason, format!("{host} leads to a {} address", reason.replace('_', "-")))) as _);
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// Fetches links someone else chose, one per bridge (its `fetch.allow`,
/// its timeouts, its metric label).
pub struct Fetcher {
    /// Names resolved by [`Guard`].
    guarded: reqwest::Client,
    /// For addresses already checked, allowed `host:port`s and own links.
    direct: reqwest::Client,
    allowed: Arc<Allowed>,
    total: Duration,
    ctx: OnceLock<BridgeContext>,
}

impl Fetcher {
    /// `connect` bounds each connection, `total` a whole fetch (redirects
    /// included).
    pub fn new(options: &FetchOptions, connect: Duration, total: Duration) -> Result<Fetcher, String> {
        let allowed = Arc::new(Allowed(options.allow.iter().map(|a| Allow::parse(a)).collect::<Result<_, _>>()?));
        let base = || {
            reqwest::Client::builder()
                .user_agent(concat!("causeway/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(connect)
                .timeout(total)
        };
        let guarded = base().dns_resolver(Arc::new(Guard(allowed.clone()))).build().map_err(|e| e.to_string())?;
        let direct = base().build().map_err(|e| e.to_string())?;
        Ok(Fetcher { guarded, direct, allowed, total, ctx: OnceLock::new() })
    }

    /// Count refusals under this bridge from now on.
    pub fn attach(&self, ctx: &BridgeContext) {
        let _ = self.ctx.set(ctx.clone());
    }

    /// GET `url` (following checked redirects) and read at most `max`
    /// bytes of it; more is refused without reading it all.
    ///
    /// A link that takes longer than the total timeout (a tarpit that sends
    /// a byte now and then) is refused, not retried: the delivery goes on
    /// with the link, and nothing behind it waits for that server.
    pub async fn fetch(&self, url: &str, max: u64) -> Result<Fetched, FetchError> {
        let result = match tokio::time::timeout(self.total, self.follow(url, max)).await {
            Ok(r) => r,
            Err(_) => {
                Err(FetchError::Refused(Refusal::new("too_slow", format!("GET {}: not done in {:?}", link_for_log(url), self.total))))
            }
        };
        if let Err(FetchError::Refused(r)) = &result {
            tracing::info!(url = %link_for_log(url), reason = r.reason, "link not fetched: {}", r.message);
            if let Some(ctx) = self.ctx.get() {
                ctx.count_fetch_refused(r.reason);
            }
        }
        result
    }

    /// Fetch a file from another network to copy it onto this one, the
    /// way every bridge does: `Some` — its bytes; `None` — send its link
    /// instead (refused: not to be fetched, too large, too slow, a 4xx;
    /// logged and counted by [`Fetcher::fetch`]); `Err` — the link's server
    /// is not answering (network, 5xx): the delivery is tried again later.
    pub async fn fetch_to_copy(&self, url: &str, max: u64) -> Result<Option<Fetched>, crate::DeliveryError> {
        match self.fetch(url, max).await {
            Ok(f) => Ok(Some(f)),
            Err(FetchError::Refused(_)) => Ok(None),
            Err(FetchError::Unavailable(e)) => Err(crate::DeliveryError::transient(format!("cannot fetch a file to copy: {e}"))),
        }
    }

    async fn follow(&self, url: &str, max: u64) -> Result<Fetched, FetchError> {
        let refused = |reason, m: String| FetchError::Refused(Refusal::new(reason, m));
        let mut url = Url::parse(url).map_err(|e| refused("bad_url", format!("{:?}: {e}", link_for_log(url))))?;
        for _ in 0..=MAX_REDIRECTS {
            let client = self.client_for(&url).map_err(FetchError::Refused)?;
            let resp = client.get(url.clone()).send().await.map_err(|e| failed(&url, e))?;
            let status = resp.status();
            if status.is_redirection() {
                let Some(to) = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()) else {
                    return Err(refused("status", format!("GET {}: {status} without a location", link_for_log(url.as_str()))));
                };
                url = url
                    .join(to)
                    .map_err(|e| refused("bad_url", format!("{} redirects to a bad location: {e}", link_for_log(url.as_str()))))?;
                continue;
            }
            return read(&url, resp, max).await;
        }
        Err(refused("redirects", format!("more than {MAX_REDIRECTS} redirects (the last to {})", link_for_log(url.as_str()))))
    }

    /// The client that may fetch `url`, or why none may.
    fn client_for(&self, url: &Url) -> Result<&reqwest::Client, Refusal> {
        let shown = link_for_log(url.as_str());
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::new("scheme", format!("{shown}: only http and https links are fetched")));
        }
        if own_link(url) {
            return Ok(&self.direct);
        }
        let port = url.port_or_known_default().unwrap_or(0);
        let host = url.host().ok_or_else(|| Refusal::new("bad_url", format!("{shown} names no host")))?;
        let ip = match host {
            url::Host::Ipv4(v4) => IpAddr::V4(v4),
            url::Host::Ipv6(v6) => IpAddr::V6(v6),
            url::Host::Domain(name) => {
                return Ok(if self.allowed.host_port(name, port) { &self.direct } else { &self.guarded });
            }
        };
        if self.allowed.host_port(&ip.to_string(), port) || self.allowed.ip(ip) {
            return Ok(&self.direct);
        }
        match forbidden(ip) {
            Some(kind) => Err(Refusal::new(kind, format!("{shown} leads to a {} address", kind.replace('_', "-")))),
            None => Ok(&self.direct),
        }
    }
}

/// A request's error: a refusal the resolver made or a timeout is final;
/// the rest is network trouble.
fn failed(url: &Url, e: reqwest::Error) -> FetchError {
    let shown = link_for_log(url.as_str());
    let e = e.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refusal>() {
            return FetchError::Refused(r.clone());
        }
        source = s.source();
    }
    if e.is_timeout() {
        FetchError::Refused(Refusal::new("too_slow", format!("GET {shown}: too slow ({e})")))
    } else {
        FetchError::Unavailable(format!("GET {shown}: {e}"))
    }
}

async fn read(url: &Url, resp: reqwest::Response, max: u64) -> Result<Fetched, FetchError> {
    let shown = link_for_log(url.as_str());
    let status = resp.status();
    if status.is_server_error() {
        return Err(FetchError::Unavailable(format!("GET {shown}: {status}")));
    }
    if !status.is_success() {
        return Err(FetchError::Refused(Refusal::new("status", format!("GET {shown}: {status}"))));
    }
    let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    // A declared length over `max` is refused before any byte is read.
    let bytes = crate::http::read_bounded(resp, max).await.map_err(|e| match e {
        crate::http::BodyError::TooLarge(_) => {
            FetchError::Refused(Refusal::new("too_large", format!("{shown} is larger than {max} bytes")))
        }
        crate::http::BodyError::Failed(e) => failed(url, e),
    })?;
    Ok(Fetched { bytes, content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(s: &str) -> Option<&'static str> {
        forbidden(s.parse().unwrap())
    }

    #[test]
    fn inside_addresses_are_named_and_public_ones_pass() {
        for (ip, kind) in [
            ("127.0.0.2", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.31.255.1", "private"),
            ("192.168.0.1", "private"),
            ("169.254.169.254", "link_local"),
            ("100.100.1.1", "cgnat"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link_local"),
            ("64:ff9b::a9fe:a9fe", "link_local"),
            ("::127.0.0.1", "loopback"),
            ("2002:7f00:1::", "loopback"),
            ("fd12:3456::1", "unique_local"),
            ("fe80::1", "link_local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "reserved"),
        ] {
            assert_eq!(why(ip), Some(kind), "{ip}");
        }
        for ip in ["93.184.216.34", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::"]
        {
            assert_eq!(why(ip), None, "{ip}");
        }
    }

    #[test]
    fn allow_entries_parse_or_are_named() {
        assert_eq!(Allow::parse("10.1.0.0/16"), Ok(Allow::Net("10.1.0.0/16".parse().unwrap())));
        assert_eq!(Allow::parse("10.1.2.3/16"), Ok(Allow::Net("10.1.0.0/16".parse().unwrap())));
        assert_eq!(Allow::parse("fd00::1"), Ok(Allow::Net("fd00::1/128".parse().unwrap())));
        assert_eq!(Allow::parse("Files.Corp:8443"), Ok(Allow::HostPort("files.corp".into(), 8443)));
        assert_eq!(Allow::parse("[::1]:80"), Ok(Allow::HostPort("::1".into(), 80)));
        for bad in ["", "files.corp", "10.0.0.0/33", "host:0", "host:99999", ":80", "a/b:80"] {
            assert!(Allow::parse(bad).is_err(), "{bad:?}");
        }
        let opts = FetchOptions { allow: vec!["10.0.0.0/8".into(), "nope".into()] };
        let errs = opts.check("bridges.x.fetch");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "bridges.x.fetch.allow[1]");
    }

    #[test]
    fn allowed_networks_and_hosts_are_matched_exactly() {
        let a = Allowed(["10.1.0.0/16", "files.corp:443", "127.0.0.1:9000"].iter().map(|s| Allow::parse(s).unwrap()).collect());
        assert!(a.ip("10.1.200.3".parse().unwrap()));
        assert!(a.ip("::ffff:10.1.0.9".parse().unwrap()), "the mapped form is the same address");
        assert!(!a.ip("10.2.0.1".parse().unwrap()));
        assert!(a.host_port("FILES.corp", 443) && !a.host_port("files.corp", 80) && !a.host_port("evil.files.corp", 443));
        assert!(a.host_port("127.0.0.1", 9000) && !a.host_port("127.0.0.1", 9001));
    }

    fn fetcher(allow: &[&str]) -> Fetcher {
        let opts = FetchOptions { allow: allow.iter().map(|s| s.to_string()).collect() };
        Fetcher::new(&opts, Duration::from_secs(2), Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn which_client_may_fetch_a_link() {
        let f = fetcher(&["127.0.0.1:9000"]);
        let reason = |u: &str| f.client_for(&Url::parse(u).unwrap()).err().map(|r| r.reason);
        assert_eq!(reason("http://127.0.0.1:9001/x"), Some("loopback"));
        assert_eq!(reason("http://127.0.0.1:9000/x"), None);
        assert_eq!(reason("http://[::ffff:7f00:1]/x"), Some("loopback"));
        assert_eq!(reason("http://2130706433/x"), Some("loopback"), "a decimal IPv4 host is an address");
        assert_eq!(reason("http://0x7f.1/x"), Some("loopback"));
        assert_eq!(reason("http://169.254.169.254/latest/meta-data/"), Some("link_local"));
        assert_eq!(reason("file:///etc/passwd"), Some("scheme"));
        assert_eq!(reason("gopher://example.org/"), Some("scheme"));
        assert_eq!(reason("https://example.org/x"), None, "names are checked when resolved");
        trust_own_links("http://127.0.0.1:8080/bridges/matrix/media");
        assert_eq!(reason("http://127.0.0.1:8080/bridges/matrix/media/s/m?sig=1"), None);
        assert_eq!(reason("http://127.0.0.1:8080/bridges/matrix/media/../../admin"), Some("loopback"), "dot segments are resolved first");
        assert_eq!(reason("http://127.0.0.1:8080/bridges/matrix/mediaX/s"), Some("loopback"));
    }

    #[tokio::test]
    async fn names_that_lead_inside_are_refused_when_resolved() {
        let f = fetcher(&[]);
        match f.fetch("http://localhost:1/x", 10).await {
            Err(FetchError::Refused(r)) => assert_eq!(r.reason, "loopback", "{r}"),
            other => panic!("{other:?}"),
        }
    }
}
