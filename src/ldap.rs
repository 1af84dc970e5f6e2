//! People from an LDAP directory (OpenLDAP, Active Directory, …).
//!
//! One search under `base` with `filter`, in pages; each entry becomes a
//! person through templates over its attributes (`{uid}`,
//! `{displayName|cn}`, `@{uid:lower}:corp.example`). An entry that gives no
//! valid person is skipped with its reason; an account that cannot be made
//! is left out of that person. Nothing of the entry is trusted beyond that:
//! values with control characters or longer than [`MAX_VALUE`] are refused.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use causeway_core::Secret;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use serde::{Deserialize, Serialize};

use crate::person::PersonConfig;

/// Longest value taken from an entry (ids, names, accounts, avatars).
pub const MAX_VALUE: usize = 512;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// PEM certificates to trust instead of the system's (`ca_file: PATH`).
    #[serde(default)]
    pub ca: Option<String>,
    /// Bind as this DN (with `password`); unset: anonymous.
    #[serde(default)]
    pub bind_dn: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Where people are searched (subtree).
    pub base: String,
    #[serde(default = "default_filter")]
    pub filter: String,
    /// The person id.
    #[serde(default = "default_id")]
    pub id: Template,
    /// The display name, the same on every network.
    #[serde(default = "default_name")]
    pub name: Template,
    /// An avatar URL.
    #[serde(default)]
    pub avatar: Option<Template>,
    /// Bridge name → the person's account on that bridge's network.
    #[serde(default)]
    pub accounts: BTreeMap<String, Template>,
    /// The attribute whose values name the person's groups (`memberOf`, or
    /// any attribute with several values; a DN counts as its first RDN's
    /// value).
    #[serde(default)]
    pub groups: Option<String>,
    /// Import again this often.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh: Duration,
    /// Longest wait for connecting, binding and the whole search.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Entries per page of the search (RFC 2696 paged results); at most
    /// what the server allows (OpenLDAP `size.pr`, Active Directory
    /// `MaxPageSize`, 1000 by default).
    #[serde(default = "default_page_size")]
    pub page_size: u16,
    /// More entries than this is an error (a filter that matches too much).
    #[serde(default = "default_max_people")]
    pub max_people: usize,
}

fn default_filter() -> String {
    "(objectClass=inetOrgPerson)".into()
}
fn default_id() -> Template {
    Template::parse("{uid}").expect("valid")
}
fn default_name() -> Template {
    Template::parse("{displayName|cn}").expect("valid")
}
fn default_refresh() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_page_size() -> u16 {
    500
}
fn default_max_people() -> usize {
    100_000
}

impl LdapConfig {
    /// What is wrong with these options, as (option, message).
    pub fn check(&self, bridges: &dyn Fn(&str) -> bool) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut err = |path: &str, m: String| errors.push((path.to_string(), m));
        let (tls, host) = match self.url.split_once("://") {
            Some(("ldaps", rest)) => (true, rest),
            Some(("ldap", rest)) => (self.starttls, rest),
            _ => {
                err("url", format!("{:?} is not an ldap:// or ldaps:// URL", self.url));
                (true, "")
            }
        };
        if self.starttls && self.url.starts_with("ldaps://") {
            err("starttls", "ldaps:// is TLS already; starttls is for ldap://".into());
        }
        let host = host.split('/').next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !tls && !loopback {
            let what = if self.password.is_some() { "the password and the directory" } else { "the directory" };
            err("url", format!("{what} would cross the network in the clear, open to tampering: use ldaps:// or starttls: true"));
        }
        if self.password.is_some() != self.bind_dn.is_some() {
            err("bind_dn", "give bind_dn and password together (or neither, to bind anonymously)".into());
        }
        if let Some(ca) = &self.ca
            && let Err(e) = roots(ca)
        {
            err("ca", e.to_string());
        }
        if self.base.trim().is_empty() {
            err("base", "must not be empty".into());
        }
        if !(self.filter.starts_with('(') && self.filter.ends_with(')')) {
            err("filter", format!("{:?} is not an LDAP filter (it is written in parentheses)", self.filter));
        }
        for bridge in self.accounts.keys() {
            if !bridges(bridge) {
                err(&format!("accounts.{bridge}"), format!("no bridge named {bridge:?}"));
            }
        }
        if self.refresh < Duration::from_secs(1) {
            err("refresh", "must be at least 1s".into());
        }
        if self.timeout.is_zero() {
            err("timeout", "must be longer than zero".into());
        }
        if self.page_size == 0 {
            err("page_size", "must be at least 1".into());
        }
        if self.max_people == 0 {
            err("max_people", "must be at least 1".into());
        }
        errors
    }

    /// Every attribute the templates read.
    fn attributes(&self) -> Vec<String> {
        let mut all: Vec<String> = [&self.id, &self.name]
            .into_iter()
            .chain(self.avatar.as_ref())
            .chain(self.accounts.values())
            .flat_map(|t| t.attributes())
            .chain(self.groups.iter().cloned())
            .collect();
        all.sort_by_key(|a| a.to_ascii_lowercase());
        all.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        all
    }
}

/// The trust roots in PEM text.
fn roots(pem: &str) -> Result<rustls::RootCertStore, RootsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        store.add(cert.map_err(RootsError::NotPem)?).map_err(RootsError::Unusable)?;
    }
    if store.is_empty() {
        return Err(RootsError::Empty);
    }
    Ok(store)
}

/// Why `ca` gives no trust roots.
#[derive(Debug, thiserror::Error)]
enum RootsError {
    #[error("not PEM certificates: {0}")]
    NotPem(rustls::pki_types::pem::Error),
    #[error("a certificate cannot be used: {0}")]
    Unusable(rustls::Error),
    #[error("holds no certificate")]
    Empty,
}

/// Why a template's text is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unopened `}}` in {0:?}")]
    Unopened(String),
    #[error("unclosed `{{` in {0:?}")]
    Unclosed(String),
    #[error("unknown filter `:{filter}` in {text:?} (there is `:lower`)")]
    Filter { filter: String, text: String },
    #[error("{name:?} is not an attribute name in {text:?}")]
    Attribute { name: String, text: String },
    #[error("{0:?} names no attribute: write one as {{uid}}")]
    NoAttribute(String),
}

/// Why an entry gives no value for a template.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("no {}", .0.join(" or "))]
    Missing(Vec<String>),
    #[error("{} holds control characters", .0.join("|"))]
    Control(Vec<String>),
    #[error("longer than {MAX_VALUE} bytes")]
    TooLong,
}

/// Text with `{attribute}` places; `{a|b}` takes the first attribute the
/// entry has; `{a:lower}` lowercases.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Template(Vec<Piece>);

/// Written back as the text it was read from.
impl Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text: String = self
            .0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Value { attributes, lower } => format!("{{{}{}}}", attributes.join("|"), if *lower { ":lower" } else { "" }),
            })
            .collect();
        s.serialize_str(&text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value { attributes: Vec<String>, lower: bool },
}

impl TryFrom<String> for Template {
    type Error = TemplateError;
    fn try_from(s: String) -> Result<Self, TemplateError> {
        Template::parse(&s)
    }
}

impl Template {
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(i) if rest.as_bytes()[i] == b'}' => return Err(TemplateError::Unopened(s.to_string())),
                Some(i) => {
                    if i > 0 {
                        pieces.push(Piece::Text(rest[..i].to_string()));
                    }
                    let inner = &rest[i + 1..];
                    let end = inner.find('}').ok_or_else(|| TemplateError::Unclosed(s.to_string()))?;
                    let (names, filter) = match inner[..end].split_once(':') {
                        Some((n, f)) => (n, Some(f)),
                        None => (&inner[..end], None),
                    };
                    let lower = match filter {
                        None => false,
                        Some("lower") => true,
                        Some(f) => return Err(TemplateError::Filter { filter: f.to_string(), text: s.to_string() }),
                    };
                    let attributes: Vec<String> = names.split('|').map(|a| a.trim().to_string()).collect();
                    if let Some(bad) = attributes.iter().find(|a| !valid_attribute(a)) {
                        return Err(TemplateError::Attribute { name: bad.clone(), text: s.to_string() });
                    }
                    pieces.push(Piece::Value { attributes, lower });
                    rest = &inner[end + 1..];
                }
                None => {
                    pieces.push(Piece::Text(rest.to_string()));
                    rest = "";
                }
            }
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Value { .. })) {
            return Err(TemplateError::NoAttribute(s.to_string()));
        }
        Ok(Template(pieces))
    }

    fn attributes(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().flat_map(|p| match p {
            Piece::Value { attributes, .. } => attributes.clone(),
            Piece::Text(_) => Vec::new(),
        })
    }

    /// The text for an entry; an error names what is missing or refused.
    pub fn render(&self, attrs: &dyn Fn(&str) -> Option<String>) -> Result<String, RenderError> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Value { attributes, lower } => {
                    let value = attributes
                        .iter()
                        .find_map(|a| attrs(a).filter(|v| !v.trim().is_empty()))
                        .ok_or_else(|| RenderError::Missing(attributes.clone()))?;
                    if value.chars().any(char::is_control) {
                        return Err(RenderError::Control(attributes.clone()));
                    }
                    if *lower { out.push_str(&value.to_lowercase()) } else { out.push_str(value.trim()) }
                }
            }
            if out.len() > MAX_VALUE {
                return Err(RenderError::TooLong);
            }
        }
        Ok(out)
    }
}

fn valid_attribute(a: &str) -> bool {
    // RFC 4512 descriptors (and numeric OIDs).
    !a.is_empty() && a.len() <= 128 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// The result of one import.
#[derive(Debug, Default)]
pub struct Imported {
    pub people: Vec<PersonConfig>,
    /// (entry DN, why it gave no person) and (DN, an account left out).
    pub skipped: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot reach the LDAP server {url}: {message}")]
    Connect { url: String, message: String },
    #[error("the LDAP server refused the bind as {dn}: {message}")]
    Bind { dn: String, message: String },
    #[error("the LDAP search under {base} failed: {message}")]
    Search { base: String, message: String },
    #[error("the LDAP search matched more than max_people ({0}) entries; narrow the filter or raise max_people")]
    TooMany(usize),
    #[error("the LDAP import took longer than {0:?}")]
    Timeout(Duration),
    #[error(
        "the LDAP search found nobody, where the last import found {0} people: kept those (does the service account still have read rights?)"
    )]
    Emptied(usize),
}

/// Read the people of the directory.
pub async fn import(config: &LdapConfig) -> Result<Imported, ImportError> {
    tokio::time::timeout(config.timeout, import_inner(config)).await.map_err(|_| ImportError::Timeout(config.timeout))?
}

async fn import_inner(config: &LdapConfig) -> Result<Imported, ImportError> {
    let connect = |message: String| ImportError::Connect { url: config.url.clone(), message };
    let mut settings = LdapConnSettings::new().set_conn_timeout(config.timeout).set_starttls(config.starttls);
    if let Some(ca) = &config.ca {
        let tls =
            rustls::ClientConfig::builder().with_root_certificates(roots(ca).map_err(|e| connect(e.to_string()))?).with_no_client_auth();
        settings = settings.set_config(Arc::new(tls));
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &config.url).await.map_err(|e| connect(e.to_string()))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!("LDAP connection ended: {e}");
        }
    });
    let result = search(config, &mut ldap).await;
    let _ = ldap.unbind().await;
    driver.abort();
    result
}

async fn search(config: &LdapConfig, ldap: &mut ldap3::Ldap) -> Result<Imported, ImportError> {
    if let (Some(dn), Some(pw)) = (&config.bind_dn, &config.password) {
        let bind = |message: String| ImportError::Bind { dn: dn.clone(), message };
        ldap.simple_bind(dn, pw.expose()).await.map_err(|e| bind(e.to_string()))?.success().map_err(|e| bind(e.to_string()))?;
    }
    let failed = |message: String| ImportError::Search { base: config.base.clone(), message };
    let attrs = config.attributes();
    let adapters: Vec<Box<dyn Adapter<_, _>>> =
        vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(i32::from(config.page_size)))];
    let mut stream = ldap
        .streaming_search_with(adapters, &config.base, Scope::Subtree, &config.filter, attrs)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut out = Imported::default();
    let mut entries = 0usize;
    while let Some(entry) = stream.next().await.map_err(|e| failed(e.to_string()))? {
        entries += 1;
        if entries > config.max_people {
            let _ = stream.finish().await;
            return Err(ImportError::TooMany(config.max_people));
        }
        // The library panics on an entry it cannot decode; one bad entry
        // must not stop the import (nor the daemon).
        let Ok(entry) = std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(entry))) else {
            out.skipped.push((String::new(), "an entry the server sent could not be decoded".into()));
            continue;
        };
        match person(config, &entry) {
            Ok((p, dropped)) => {
                out.skipped.extend(dropped.into_iter().map(|m| (entry.dn.clone(), m)));
                out.people.push(p);
            }
            Err(m) => out.skipped.push((entry.dn, m)),
        }
    }
    stream.finish().await.success().map_err(|e| failed(e.to_string()))?;
    Ok(out)
}

/// The person of one entry, and the accounts left out of it (with why).
pub fn person(config: &LdapConfig, entry: &SearchEntry) -> Result<(PersonConfig, Vec<String>), String> {
    let attrs = |name: &str| entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.first().cloned());
    let id = config.id.render(&attrs).map_err(|m| format!("no person id: {m}"))?;
    if !crate::person::valid_person_id(&id) || id.is_empty() {
        return Err(format!("person id {id:?} is not usable (letters, digits, `-`, `_` and `.`, at most 64)"));
    }
    let name = config.name.render(&attrs).map_err(|m| format!("{id}: no name: {m}"))?;
    let avatar = match &config.avatar {
        Some(t) => t.render(&attrs).ok().filter(|u| u.starts_with("https://") || u.starts_with("http://") || u.starts_with("mxc://")),
        None => None,
    };
    let mut accounts = BTreeMap::new();
    let mut dropped = Vec::new();
    for (bridge, t) in &config.accounts {
        match t.render(&attrs) {
            Ok(a) if a.chars().any(char::is_whitespace) => dropped.push(format!("{id}: no {bridge} account: {a:?} holds spaces")),
            Ok(a) => {
                accounts.insert(bridge.clone(), a);
            }
            Err(m) => dropped.push(format!("{id}: no {bridge} account: {m}")),
        }
    }
    let groups = match &config.groups {
        Some(attribute) => group_names(entry.attrs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(attribute)).flat_map(|(_, v)| v)),
        None => Vec::new(),
    };
    Ok((PersonConfig { id, name, avatar, accounts, groups, broadcast_via: Vec::new() }, dropped))
}

/// The group names of an entry's group attribute: a DN (`memberOf`) names
/// the group by its first RDN's value (`cn=it,ou=groups,…` is `it`); a
/// value that is too long or holds control characters is left out.
fn group_names<'a>(values: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let v = v.trim();
        let first = v.split(',').next().unwrap_or(v);
        let name = match first.split_once('=') {
            Some((attr, value)) if v.contains(',') || valid_attribute(attr.trim()) => value.trim(),
            _ => v,
        };
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            continue;
        }
        if !out.iter().any(|g| g.eq_ignore_ascii_case(name)) {
            out.push(name.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entry(attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: "uid=x,dc=test".into(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect(),
            bin_attrs: HashMap::new(),
        }
    }

    fn config(accounts: &[(&str, &str)]) -> LdapConfig {
        let yaml = format!(
            "url: ldap://127.0.0.1\nbase: dc=test\naccounts: {{{}}}\n",
            accounts.iter().map(|(b, t)| format!("{b}: {t:?}")).collect::<Vec<_>>().join(", ")
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    #[test]
    fn groups_come_from_an_attribute_of_many_values_and_dns_name_them_by_their_first_rdn() {
        let mut c = config(&[]);
        c.groups = Some("memberOf".into());
        let e = entry(&[
            ("uid", &["alice"]),
            ("cn", &["Alice"]),
            ("memberof", &["cn=IT,ou=groups,dc=test", "CN=it,ou=other,dc=test", "comms", "", "bad\u{7}name", "ou=Sales"]),
        ]);
        let (p, _) = person(&c, &e).expect("a person");
        assert_eq!(p.groups, ["IT", "comms", "Sales"]);
        assert!(p.in_group("it") && p.in_group("COMMS") && !p.in_group("ops"));
        assert!(c.attributes().iter().any(|a| a == "memberOf"));
        // Without the option, no groups.
        let (p, _) = person(&config(&[]), &e).expect("a person");
        assert!(p.groups.is_empty());
    }

    #[test]
    fn templates_parse_or_say_why_not() {
        let t = Template::parse("@{uid:lower}:corp").unwrap();
        assert_eq!(t.attributes().collect::<Vec<_>>(), ["uid"]);
        let a = |n: &str| (n == "uid").then(|| "Alice".to_string());
        assert_eq!(t.render(&a).unwrap(), "@alice:corp");
        for (bad, why) in [
            ("{uid", "unclosed"),
            ("uid}", "unopened"),
            ("plain", "names no attribute"),
            ("{}", "not an attribute name"),
            ("{u id}", "not an attribute name"),
            ("{uid:upper}", "unknown filter"),
            ("{a||b}", "not an attribute name"),
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn entries_become_people_and_bad_values_are_refused() {
        let c = config(&[("mail", "{mail:lower}"), ("xmpp", "{uid}@xmpp.test"), ("matrix", "@{uid:lower}:m.test")]);
        let e = entry(&[("uid", &["alice"]), ("cn", &["Alice L"]), ("displayName", &["Alice Liddell"]), ("mail", &["Alice@Corp.Test"])]);
        let (p, dropped) = person(&c, &e).unwrap();
        assert_eq!(p.id, "alice");
        assert_eq!(p.name, "Alice Liddell");
        assert_eq!(p.accounts["mail"], "alice@corp.test");
        assert_eq!(p.accounts["matrix"], "@alice:m.test");
        assert!(dropped.is_empty());

        // No displayName: cn. No mail: the account is left out, the person stays.
        let (p, dropped) = person(&c, &entry(&[("UID", &["bob"]), ("cn", &["Bob"])])).unwrap();
        assert_eq!((p.name.as_str(), p.accounts.len()), ("Bob", 2));
        assert!(dropped[0].contains("no mail account: no mail"), "{dropped:?}");

        for (attrs, why) in [
            (entry(&[("cn", &["No Uid"])]), "no person id"),
            (entry(&[("uid", &["a:b"]), ("cn", &["x"])]), "not usable"),
            (entry(&[("uid", &["../../etc"]), ("cn", &["x"])]), "not usable"),
            (entry(&[("uid", &[&"a".repeat(65)]), ("cn", &["x"])]), "not usable"),
            (entry(&[("uid", &["al\nice"]), ("cn", &["x"])]), "control characters"),
            (entry(&[("uid", &["x"])]), "no name"),
            (entry(&[("uid", &["x"]), ("cn", &["  "])]), "no name"),
            (entry(&[("uid", &["x"]), ("cn", &[&"n".repeat(MAX_VALUE + 1)])]), "longer than"),
            (entry(&[("uid", &["x"]), ("cn", &["evil\u{7}bell"])]), "control characters"),
        ] {
            let e = person(&c, &attrs).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
        let (_, dropped) = person(&c, &entry(&[("uid", &["x"]), ("cn", &["X"]), ("mail", &["a b@c"])])).unwrap();
        assert!(dropped[0].contains("holds spaces"), "{dropped:?}");
    }

    #[test]
    fn options_are_checked() {
        let mut c = config(&[("nope", "{uid}")]);
        c.url = "http://x".into();
        c.filter = "uid=*".into();
        c.bind_dn = Some("cn=x".into());
        c.ca = Some("not pem".into());
        let errors: Vec<String> = c.check(&|b| b != "nope").into_iter().map(|(p, m)| format!("{p}: {m}")).collect();
        for want in [
            "url: \"http://x\" is not",
            "filter:",
            "accounts.nope: no bridge",
            "bind_dn: give bind_dn and password",
            "ca: holds no certificate",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(want)), "{want} in {errors:?}");
        }
        let mut c = config(&[]);
        c.url = "ldap://ldap.corp.example".into();
        c.bind_dn = Some("cn=x".into());
        c.password = Some(Secret::new("pw"));
        assert!(c.check(&|_| true).iter().any(|(p, m)| p == "url" && m.contains("in the clear")));
        c.starttls = true;
        assert!(c.check(&|_| true).is_empty());
        c.url = "ldap://[::1]:389".into();
        c.starttls = false;
        assert!(c.check(&|_| true).is_empty());
        // Anonymous, but still open to tampering on the way.
        c.url = "ldap://ldap.corp.example".into();
        c.bind_dn = None;
        c.password = None;
        assert!(c.check(&|_| true).iter().any(|(p, m)| p == "url" && m.starts_with("the directory would cross")));
    }
}
