//! The email bridge's options (`bridges.<name>` with `type: email`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use causeway_core::{BridgeOptions, OptionError, Secret};
use serde::{Deserialize, Serialize};

/// How a connection to a mail server is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tls {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Tls,
    /// Plain, then STARTTLS before anything else (IMAP 143, submission 587).
    Starttls,
    /// No TLS: only for a server on the same machine (loopback).
    None,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImapOptions {
    /// `host:port`.
    pub server: String,
    pub tls: Tls,
    pub username: String,
    pub password: Secret,
    /// Where list mail arrives.
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    /// Where mail that cannot be taken (malformed, too large, refused by the
    /// policy) is moved: kept, never lost.
    #[serde(default = "default_quarantine")]
    pub quarantine: String,
    /// Where taken mail is moved once committed; unset: it stays, flagged `\Seen`.
    #[serde(default)]
    pub processed: Option<String>,
    /// Check for new mail this often when the server has no IDLE, and as a
    /// safety net when it has.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpOptions {
    /// `host:port`.
    pub server: String,
    pub tls: Tls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// A subscriber: an address, or a directory person (their `accounts` entry
/// for this bridge), optionally getting a digest instead of every message.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Subscriber {
    Plain(String),
    Detailed {
        /// An address, or a person id.
        address: String,
        /// Gather the list's messages into one mail this often.
        #[serde(default, with = "humantime_serde")]
        digest: Option<Duration>,
    },
}

impl Subscriber {
    pub fn target(&self) -> &str {
        match self {
            Subscriber::Plain(a) | Subscriber::Detailed { address: a, .. } => a,
        }
    }
    pub fn digest(&self) -> Option<Duration> {
        match self {
            Subscriber::Plain(_) => None,
            Subscriber::Detailed { digest, .. } => *digest,
        }
    }
}

/// What the subject of a mail that starts a conversation becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectAs {
    /// The message starts with it, in bold.
    #[default]
    Prefix,
    /// It becomes the portal's topic, and the message is the body alone.
    Topic,
    /// Left out.
    None,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListOptions {
    /// Shown in subjects (`[Ops] …`) and in `List-Id`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub subscribers: Vec<Subscriber>,
    #[serde(default)]
    pub subject: SubjectAs,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOptions {
    /// Senders taken besides subscribers: addresses (`a@example.org`) or
    /// domains (`example.org`, also matching subdomains).
    #[serde(default)]
    pub allow: Vec<String>,
    /// The receiving server's `authserv-id` in `Authentication-Results`
    /// (RFC 8601) whose SPF/DKIM/DMARC verdicts count; other servers'
    /// headers are ignored (anyone can write one).
    #[serde(default)]
    pub authserv_id: Option<String>,
    /// Refuse mail without a passing DMARC (or, without DMARC, DKIM or SPF)
    /// verdict from `authserv_id`. Mail with a failing verdict is always refused.
    #[serde(default)]
    pub require_authentication: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailOptions {
    pub imap: ImapOptions,
    pub smtp: SmtpOptions,
    /// List address → the list. The address is the room to link in a portal.
    pub lists: BTreeMap<String, ListOptions>,
    #[serde(default)]
    pub policy: PolicyOptions,
    /// Where Causeway's HTTP is reached, with `/bridges/<bridge name>`:
    /// attachments of incoming mail are served below it to other networks.
    pub url: String,
    /// Where attachments of incoming mail are kept.
    #[serde(default = "default_attachments")]
    pub attachments_dir: PathBuf,
    /// Mail larger than this is quarantined.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: u64,
    /// Files from other networks larger than this are sent as links.
    #[serde(default = "default_max_attachment")]
    pub max_attachment_bytes: u64,
    /// Reactions from other networks: `drop` (the default: a reaction is
    /// not worth a mail to every subscriber), `batch` or `each`
    /// (`notice`: "reacted 👍", a mail each).
    #[serde(default = "default_reactions")]
    pub reactions: Changes,
    /// Edits, retractions and topic changes from other networks: `batch`
    /// (the default: short notices gathered into one mail per
    /// `batch_every`), `each` (a mail each) or `drop`.
    #[serde(default = "default_changes")]
    pub changes: Changes,
    /// How often gathered notices, and messages held back by `send_limit`,
    /// go out as one mail to the list.
    #[serde(default = "default_batch_every", with = "humantime_serde")]
    pub batch_every: Duration,
    /// How many mails a list sends its subscribers, and how many of them
    /// one sender may cause, per window; what comes beyond is held back and
    /// sent gathered (`batch_every`), never lost.
    #[serde(default)]
    pub send_limit: SendLimit,
    /// Where links from other networks (files attached to mail) may lead
    /// although it is not public (`allow: [CIDR, address or host:port, …]`).
    #[serde(default)]
    pub fetch: causeway_core::fetch::FetchOptions,
    /// Where `List-Unsubscribe` points (a person who manages the lists);
    /// default: the list address itself.
    #[serde(default)]
    pub owner: Option<String>,
    /// The address broadcasts to people come from (docs/broadcast.md);
    /// without it, this bridge reaches no people one by one.
    #[serde(default)]
    pub broadcast_from: Option<String>,
}

fn default_reactions() -> Changes {
    Changes::Drop
}

fn default_changes() -> Changes {
    Changes::Batch
}

fn default_batch_every() -> Duration {
    Duration::from_secs(10 * 60)
}

/// What becomes of a change that another network shows in place (an edit,
/// a retraction, a topic, a reaction) and mail can only tell as a notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Changes {
    /// A short notice, a mail of its own to every subscriber.
    #[serde(alias = "notice")]
    Each,
    /// Short notices gathered into one mail per `batch_every`.
    Batch,
    /// Nothing.
    Drop,
}

/// Mails a list sends per `per`: at most `per_list`, at most `per_sender`
/// of them for one sender.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SendLimit {
    #[serde(default = "default_per_list")]
    pub per_list: u32,
    #[serde(default = "default_per_sender")]
    pub per_sender: u32,
    #[serde(default = "default_limit_window", with = "humantime_serde")]
    pub per: Duration,
}

impl Default for SendLimit {
    fn default() -> Self {
        SendLimit { per_list: default_per_list(), per_sender: default_per_sender(), per: default_limit_window() }
    }
}

fn default_per_list() -> u32 {
    120
}

fn default_per_sender() -> u32 {
    30
}

fn default_limit_window() -> Duration {
    Duration::from_secs(60 * 60)
}

fn default_mailbox() -> String {
    "INBOX".into()
}
fn default_quarantine() -> String {
    "Quarantine".into()
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_attachments() -> PathBuf {
    PathBuf::from("var/email-attachments")
}
fn default_max_message() -> u64 {
    25 * 1024 * 1024
}
fn default_max_attachment() -> u64 {
    10 * 1024 * 1024
}

/// A plain check that `s` looks like `local@domain`.
pub fn is_address(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
        }
        None => false,
    }
}

fn is_loopback(server: &str) -> bool {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h).trim_matches(|c| c == '[' || c == ']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn host_port_ok(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

impl BridgeOptions for EmailOptions {
    fn check(&self) -> Vec<OptionError> {
        let mut errors = self.fetch.check("fetch");
        for (path, server, tls) in [("imap", &self.imap.server, self.imap.tls), ("smtp", &self.smtp.server, self.smtp.tls)] {
            if !host_port_ok(server) {
                errors.push(OptionError::new(format!("{path}.server"), format!("{server:?} is not host:port")));
            } else if tls == Tls::None && !is_loopback(server) {
                errors.push(OptionError::new(
                    format!("{path}.tls"),
                    "`none` sends passwords and mail in the clear: only for a server on this machine (127.0.0.1, ::1, localhost)",
                ));
            }
        }
        if self.imap.password.is_empty() {
            errors.push(OptionError::new("imap.password", "must not be empty"));
        }
        if self.smtp.username.is_some() != self.smtp.password.is_some() {
            errors.push(OptionError::new("smtp", "give both `username` and `password`, or neither"));
        }
        if let Some(a) = &self.broadcast_from
            && !crate::compose::plausible_address(a)
        {
            errors.push(OptionError::new("broadcast_from", format!("{a:?} is not a mail address")));
        }
        if self.batch_every < Duration::from_secs(1) {
            errors.push(OptionError::new("batch_every", "must be at least 1s"));
        }
        if self.send_limit.per < Duration::from_secs(1) || self.send_limit.per_list == 0 || self.send_limit.per_sender == 0 {
            errors.push(OptionError::new("send_limit", "`per` is at least 1s, `per_list` and `per_sender` at least 1"));
        }
        if self.imap.poll_interval < Duration::from_secs(1) {
            errors.push(OptionError::new("imap.poll_interval", "must be at least 1s"));
        }
        if self.imap.quarantine == self.imap.mailbox || self.imap.processed.as_ref() == Some(&self.imap.mailbox) {
            errors.push(OptionError::new("imap.quarantine", "quarantine and processed mail go to folders other than `mailbox`"));
        }
        match reqwest::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => errors.push(OptionError::new("url", format!("{:?} is not an http(s) URL", self.url))),
        }
        if self.lists.is_empty() {
            errors.push(OptionError::new("lists", "give at least one list address"));
        }
        for (address, list) in &self.lists {
            if !is_address(address) {
                errors.push(OptionError::new(format!("lists.{address}"), "is not an email address"));
            }
            for (i, s) in list.subscribers.iter().enumerate() {
                if s.target().trim().is_empty() {
                    errors.push(OptionError::new(format!("lists.{address}.subscribers[{i}]"), "is empty"));
                }
                if s.digest().is_some_and(|d| d < Duration::from_secs(1)) {
                    errors.push(OptionError::new(format!("lists.{address}.subscribers[{i}].digest"), "must be at least 1s"));
                }
            }
        }
        if let Some(o) = &self.owner
            && !is_address(o)
        {
            errors.push(OptionError::new("owner", "is not an email address"));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_core::parse_options;
    use serde_json::json;

    fn good() -> serde_json::Value {
        json!({
            "imap": {"server": "127.0.0.1:143", "tls": "none", "username": "bridge", "password": "pw"},
            "smtp": {"server": "127.0.0.1:25", "tls": "none"},
            "url": "http://127.0.0.1:8080/bridges/email",
            "lists": {"bridge+ops@mail.test": {"name": "Ops", "subscribers": ["alice", "bob@mail.test", {"address": "carol@mail.test", "digest": "5m"}]}}
        })
    }

    #[test]
    fn a_list_with_subscribers_and_a_digest() {
        let o: EmailOptions = parse_options(good()).unwrap();
        let list = &o.lists["bridge+ops@mail.test"];
        assert_eq!(list.subscribers[2].digest(), Some(Duration::from_secs(300)));
        assert_eq!(list.subscribers[0].target(), "alice");
        assert_eq!(o.imap.mailbox, "INBOX");
    }

    #[test]
    fn mistakes_are_named() {
        let mut bad = good();
        bad["imap"]["server"] = json!("nowhere");
        bad["smtp"]["username"] = json!("u");
        bad["lists"] = json!({"not-an-address": {}});
        bad["url"] = json!("ftp://x");
        let errors = parse_options::<EmailOptions>(bad).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["imap.server", "smtp", "url", "lists.not-an-address"], "{errors:?}");
        let mut bad = good();
        bad["imap"]["tls"] = json!("maybe");
        assert_eq!(parse_options::<EmailOptions>(bad).unwrap_err()[0].path, "imap.tls");
        let mut bad = good();
        bad["smtp"]["server"] = json!("mail.example.org:25");
        assert_eq!(parse_options::<EmailOptions>(bad).unwrap_err()[0].path, "smtp.tls", "no TLS to another machine");
    }

    #[test]
    fn addresses() {
        for ok in ["a@b.c", "bridge+ops@mail.test"] {
            assert!(is_address(ok), "{ok}");
        }
        for bad in ["", "a", "@b.c", "a@b", "a b@c.d", "a@.c", "<a@b.c>"] {
            assert!(!is_address(bad), "{bad}");
        }
    }

    #[test]
    fn the_example_documents_every_option() {
        let mut all = good();
        all["lists"] = json!({"lists+ops@mail.test": {"name": "Ops", "subject": "prefix",
            "subscribers": ["alice", {"address": "boss@mail.test", "digest": "1h"}]}});
        all["smtp"]["username"] = json!("lists");
        all["smtp"]["password"] = json!("pw");
        all["owner"] = json!("postmaster@mail.test");
        all["imap"]["processed"] = json!("Bridged");
        all["policy"] = json!({"allow": ["mail.test"], "authserv_id": "mx.mail.test"});
        let o: EmailOptions = parse_options(all).unwrap();
        let missing = causeway_core::testing::undocumented(causeway_core::testing::EXAMPLE, "email", &o);
        assert!(missing.is_empty(), "config.example.yaml does not document {missing:?}");
    }
}
