//! The XMPP bridge's options (`bridges.<name>` with `type: xmpp`).

use std::time::Duration;

use causeway_core::{BridgeOptions, OptionError, Secret};
use serde::{Deserialize, Serialize};

/// `mode:` as the config writes it; [`Connect`] is the mode with its options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// An external component (XEP-0114): ghosts under its own domain.
    #[default]
    Component,
    /// One client account (STARTTLS, SASL SCRAM) that relays everyone's
    /// messages with their name, for servers that allow no components.
    Client,
}

/// How the bridge connects to the server, with the options only that way
/// takes (read from the section by [`XmppOptions::connect`]).
#[derive(Clone, Debug)]
pub enum Connect {
    /// An external component (XEP-0114) for `domain`, at `server`.
    Component { domain: String, secret: Secret, server: std::net::SocketAddr },
    /// One client account relaying everyone's messages with `relay_prefix`;
    /// `server` is `host:port`, or `None`: the JID's domain by DNS SRV.
    Client { jid: tokio_xmpp::jid::BareJid, password: Secret, relay_prefix: String, server: Option<String> },
}

impl Connect {
    /// Where it connects, for the log.
    pub fn server(&self) -> String {
        match self {
            Connect::Component { server, .. } => server.to_string(),
            Connect::Client { server: Some(s), .. } => s.clone(),
            Connect::Client { jid, server: None, .. } => format!("{} (by DNS)", jid.domain()),
        }
    }
}

/// The options as the config section writes them. The ones of one mode
/// only (`mode`, `server`, `domain`, `secret`, `jid`, `password`,
/// `relay_prefix`) are read through [`XmppOptions::connect`] alone.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XmppOptions {
    #[serde(default)]
    mode: Mode,
    /// `host:port` to connect to. Component: the component port (plaintext:
    /// keep it on loopback; default `127.0.0.1:5347`). Client: the client
    /// port (default: the JID's domain, by DNS SRV, else port 5222).
    #[serde(default)]
    server: Option<String>,
    /// Component: its domain, as configured on the server (`bridge.example.org`).
    #[serde(default)]
    domain: String,
    /// Component: the secret shared with the server.
    #[serde(default)]
    secret: Option<Secret>,
    /// Client: the bridge's account (`causeway@example.org`).
    #[serde(default)]
    jid: Option<String>,
    /// Client: the account's password.
    #[serde(default)]
    password: Option<Secret>,
    /// Client: what precedes each relayed message; `{name}` is the sender's name.
    #[serde(default = "default_relay_prefix")]
    relay_prefix: String,
    /// The nick under which the bridge itself sits in each linked room (it
    /// reads the room for the other networks).
    #[serde(default = "default_bot_nick")]
    pub bot_nick: String,
    /// The localpart of a directory person's ghost; `{person}` is their id.
    #[serde(default = "default_person_localpart")]
    pub person_localpart: String,
    /// The localpart of the ghost of a sender the directory does not know;
    /// `{bridge}` is the bridge they speak from, `{id}` their id there. Its
    /// literal text must hold a character no person's ghost can have (the
    /// default's `=`), so the two kinds of ghost never meet.
    #[serde(default = "default_ghost_localpart")]
    pub ghost_localpart: String,
    /// Shown after a ghost's name when the name is already taken in a room.
    #[serde(default = "default_nick_suffix")]
    pub nick_suffix: String,
    /// First reconnect delay; doubles per failed attempt.
    #[serde(default = "default_reconnect_initial", with = "humantime_serde")]
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// How long a delivery waits for the room to reflect the message (which
    /// confirms it and carries the room's stanza-id).
    #[serde(default = "default_confirm_timeout", with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// After this long without a word from the server the bridge pings it;
    /// no answer within half of it, and the connection is made again.
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive: Duration,
    /// Largest stanza taken in, in bytes of its text content; larger ones are dropped.
    #[serde(default = "default_max_stanza")]
    pub max_stanza_bytes: usize,
    /// The server's HTTP File Upload service (XEP-0363), e.g.
    /// `upload.example.org`. When set, files from other networks are copied
    /// there and XMPP clients get the server's link; otherwise they get the
    /// original link.
    #[serde(default)]
    pub upload_service: Option<String>,
    /// Largest file copied to the upload service; larger ones keep their link.
    #[serde(default = "default_upload_max")]
    pub upload_max_bytes: u64,
    /// A text larger than one message may be (60 KiB): `split` into
    /// numbered messages (the default), or `file`: the first lines as the
    /// message and the whole text as `message.txt` on `upload_service`
    /// (split where there is none).
    #[serde(default)]
    pub oversize: causeway_core::text::Oversize,
    /// Where links from other networks (files copied to the upload
    /// service) may lead although it is not public (`allow: [CIDR,
    /// address or host:port, …]`).
    #[serde(default)]
    pub fetch: causeway_core::fetch::FetchOptions,
    /// Longest time one HTTP request of the bridge may take as a whole
    /// (fetching a file from another network, putting it to the upload
    /// service), from connecting to the last byte of the answer.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub http_timeout: Duration,
    /// Longest time to open the connection of one HTTP request.
    #[serde(default = "default_http_connect_timeout", with = "humantime_serde")]
    pub http_connect_timeout: Duration,
    /// After an absence longer than this (the room was unlinked meanwhile,
    /// or Causeway long gone) a room starts afresh instead of replaying what
    /// was said. Prosody keeps a room's archive a week by default.
    #[serde(default = "default_catch_up_max_age", with = "humantime_serde")]
    pub catch_up_max_age: Duration,
    /// Per room, who is behind a nick where the room hides real JIDs from
    /// the bridge: `{ "ops@conference.example.org": { alice: alice } }`
    /// (nick → person id; the person's account on this bridge is their
    /// JID). Only for rooms whose nicks are reserved to their owners (a
    /// members-only room with registered nicks): anyone who takes the nick
    /// is taken for the person.
    #[serde(default)]
    pub nicks: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// Where read markers (XEP-0333 `displayed`) cross: `direct`
    /// conversations only (the default), `all` rooms, or `off`.
    #[serde(default)]
    pub read_markers: causeway_core::ReadMarkers,
}

fn default_catch_up_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_http_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_upload_max() -> u64 {
    10 * 1024 * 1024
}

fn default_person_localpart() -> String {
    "{person}".into()
}
fn default_ghost_localpart() -> String {
    "{bridge}={id}".into()
}

fn default_relay_prefix() -> String {
    "<{name}> ".into()
}
fn default_bot_nick() -> String {
    "Causeway".into()
}
fn default_nick_suffix() -> String {
    " (bridge)".into()
}
fn default_reconnect_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_confirm_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_keepalive() -> Duration {
    Duration::from_secs(60)
}
fn default_max_stanza() -> usize {
    256 * 1024
}

impl XmppOptions {
    /// The mode with its options; every mistake in them, at its path.
    pub fn connect(&self) -> Result<Connect, Vec<OptionError>> {
        let mut errors = Vec::new();
        let given = |s: &Option<Secret>| s.clone().filter(|s| !s.is_empty());
        let connect = match self.mode {
            Mode::Component => {
                if self.domain.parse::<tokio_xmpp::jid::BareJid>().map(|j| j.node().is_some()).unwrap_or(true) {
                    errors.push(OptionError::new(
                        "domain",
                        format!("{:?} is not a domain name (the component's, e.g. bridge.example.org)", self.domain),
                    ));
                }
                let secret = given(&self.secret);
                if secret.is_none() {
                    errors.push(OptionError::new("secret", "the component secret is required and must not be empty"));
                }
                for (field, given) in [("jid", self.jid.is_some()), ("password", self.password.is_some())] {
                    if given {
                        errors.push(OptionError::new(field, "is for `mode: client`"));
                    }
                }
                let server = self.server.as_deref().unwrap_or("127.0.0.1:5347");
                let address = server.parse::<std::net::SocketAddr>();
                if address.is_err() {
                    errors.push(OptionError::new("server", format!("{server:?} is not an address like 127.0.0.1:5347")));
                }
                match (secret, address) {
                    (Some(secret), Ok(server)) => Some(Connect::Component { domain: self.domain.clone(), secret, server }),
                    _ => None,
                }
            }
            Mode::Client => {
                let jid = match self.jid.as_deref().map(str::parse::<tokio_xmpp::jid::BareJid>) {
                    Some(Ok(j)) if j.node().is_some() => Some(j),
                    Some(_) => {
                        errors.push(OptionError::new(
                            "jid",
                            format!("{:?} is not an account JID like causeway@example.org", self.jid.as_deref().unwrap_or("")),
                        ));
                        None
                    }
                    None => {
                        errors.push(OptionError::new("jid", "the bridge's account is required in client mode"));
                        None
                    }
                };
                let password = given(&self.password);
                if password.is_none() {
                    errors.push(OptionError::new("password", "is required in client mode and must not be empty"));
                }
                for (field, given) in [("domain", !self.domain.is_empty()), ("secret", self.secret.is_some())] {
                    if given {
                        errors.push(OptionError::new(field, "is for `mode: component`"));
                    }
                }
                if let Some(s) = &self.server
                    && !s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                {
                    errors.push(OptionError::new("server", format!("{s:?} is not host:port")));
                }
                if !self.relay_prefix.contains("{name}") {
                    errors.push(OptionError::new("relay_prefix", "must contain {name}"));
                }
                match (jid, password) {
                    (Some(jid), Some(password)) => {
                        Some(Connect::Client { jid, password, relay_prefix: self.relay_prefix.clone(), server: self.server.clone() })
                    }
                    _ => None,
                }
            }
        };
        match connect {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(errors),
        }
    }
}

impl BridgeOptions for XmppOptions {
    fn check(&self) -> Vec<OptionError> {
        let mut errors = self.fetch.check("fetch");
        if let Err(e) = self.connect() {
            errors.extend(e);
        }
        if self.bot_nick.trim().is_empty() {
            errors.push(OptionError::new("bot_nick", "must not be empty"));
        }
        if let Some(e) = crate::jid::check_template(&self.person_localpart, &["person"], &["person"]) {
            errors.push(OptionError::new("person_localpart", e));
        }
        if let Some(e) = crate::jid::check_template(&self.ghost_localpart, &["id"], &["bridge", "id"]) {
            errors.push(OptionError::new("ghost_localpart", e));
        } else if !crate::jid::apart(&self.person_localpart, &self.ghost_localpart) {
            errors.push(OptionError::new(
                "ghost_localpart",
                "could make the same address as person_localpart: give it a character that person ids and person_localpart never hold, such as `=`",
            ));
        }
        if let Some(u) = &self.upload_service
            && u.parse::<tokio_xmpp::jid::BareJid>().is_err()
        {
            errors.push(OptionError::new("upload_service", format!("{u:?} is not a JID")));
        }
        if self.keepalive < Duration::from_secs(1) {
            errors.push(OptionError::new("keepalive", "must be at least 1s"));
        }
        if self.http_timeout.is_zero() {
            errors.push(OptionError::new("http_timeout", "must be longer than zero"));
        }
        if self.http_connect_timeout.is_zero() || self.http_connect_timeout > self.http_timeout {
            errors.push(OptionError::new("http_connect_timeout", "must be longer than zero and at most http_timeout"));
        }
        for (room, nicks) in &self.nicks {
            if room.parse::<tokio_xmpp::jid::BareJid>().is_err() || room.contains('/') {
                errors.push(OptionError::new(format!("nicks.{room}"), "is not a room's JID"));
            }
            for (nick, person) in nicks {
                if nick.trim().is_empty() || person.trim().is_empty() {
                    errors.push(OptionError::new(format!("nicks.{room}"), "a nick and a person id must not be empty"));
                }
            }
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            errors.push(OptionError::new("reconnect_max", "must be at least reconnect_initial, which must be above zero"));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_core::parse_options;
    use serde_json::json;

    fn paths(options: serde_json::Value) -> Vec<String> {
        match parse_options::<XmppOptions>(options) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.path).collect(),
        }
    }

    #[test]
    fn each_mode_needs_its_own_options() {
        assert!(paths(json!({"domain": "bridge.example.org", "secret": "s"})).is_empty());
        assert!(paths(json!({"mode": "client", "jid": "causeway@example.org", "password": "p"})).is_empty());
        assert!(
            paths(json!({"mode": "client", "jid": "causeway@example.org", "password": "p", "server": "xmpp.example.org:5222"})).is_empty()
        );
        assert_eq!(paths(json!({"domain": "bridge.example.org"})), ["secret"]);
        assert_eq!(paths(json!({"secret": "s"})), ["domain"]);
        assert_eq!(paths(json!({"domain": "bridge.example.org", "secret": "s", "jid": "a@b", "password": "p"})), ["jid", "password"]);
        assert_eq!(paths(json!({"mode": "client"})), ["jid", "password"]);
        assert_eq!(
            paths(
                json!({"mode": "client", "jid": "example.org", "password": "", "domain": "b.example.org", "secret": "s", "server": "nope", "relay_prefix": "> "})
            ),
            ["jid", "password", "domain", "secret", "server", "relay_prefix"]
        );
        assert_eq!(paths(json!({"mode": "peer"})), ["mode"]);
        assert_eq!(paths(json!({"domain": "b.example.org", "secret": "s", "server": "localhost"})), ["server"]);
    }

    #[test]
    fn http_timeouts_have_defaults_and_are_checked() {
        let o: XmppOptions = parse_options(json!({"domain": "bridge.example.org", "secret": "s"})).unwrap();
        assert_eq!((o.http_timeout, o.http_connect_timeout), (Duration::from_secs(30), Duration::from_secs(10)));
        let o: XmppOptions =
            parse_options(json!({"domain": "bridge.example.org", "secret": "s", "http_timeout": "2m", "http_connect_timeout": "5s"}))
                .unwrap();
        assert_eq!((o.http_timeout, o.http_connect_timeout), (Duration::from_secs(120), Duration::from_secs(5)));
        let base = || json!({"domain": "bridge.example.org", "secret": "s"});
        let with = |k: &str, v: &str| {
            let mut j = base();
            j[k] = json!(v);
            paths(j)
        };
        assert_eq!(with("http_timeout", "0s"), ["http_timeout", "http_connect_timeout"]);
        assert_eq!(with("http_connect_timeout", "0s"), ["http_connect_timeout"]);
        assert_eq!(with("http_connect_timeout", "31s"), ["http_connect_timeout"]);
    }

    #[test]
    fn a_nick_map_names_rooms_and_people() {
        let with = |nicks: serde_json::Value| paths(json!({"domain": "bridge.example.org", "secret": "s", "nicks": nicks}));
        assert!(with(json!({"ops@conference.example.org": {"alice": "alice"}})).is_empty());
        assert_eq!(with(json!({"not a jid@@": {"alice": "alice"}})), ["nicks.not a jid@@"]);
        assert_eq!(with(json!({"ops@conference.example.org/nick": {}})), ["nicks.ops@conference.example.org/nick"]);
        assert_eq!(with(json!({"ops@conference.example.org": {" ": "alice"}})), ["nicks.ops@conference.example.org"]);
        assert_eq!(with(json!({"ops@conference.example.org": {"alice": ""}})), ["nicks.ops@conference.example.org"]);
        assert_eq!(with(json!({"ops@conference.example.org": ["alice"]})), ["nicks.ops@conference.example.org"]);
    }

    #[test]
    fn the_example_documents_every_option() {
        let o: XmppOptions =
            parse_options(json!({"domain": "bridge.example.org", "secret": "s", "upload_service": "upload.example.org"})).unwrap();
        let missing = causeway_core::testing::undocumented(causeway_core::testing::EXAMPLE, "xmpp", &o);
        assert!(missing.is_empty(), "config.example.yaml does not document {missing:?}");
    }
}
