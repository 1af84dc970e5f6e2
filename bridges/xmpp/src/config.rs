//! The XMPP bridge's options (`bridges.<name>` with `type: xmpp`).

use std::time::Duration;

use causeway_core::{BridgeOptions, OptionError, Secret};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppOptions {
    /// The server's component port (XEP-0114), `host:port`. Components
    /// connect in plaintext: keep this on loopback next to the server.
    #[serde(default = "default_server")]
    pub server: String,
    /// The component's domain, as configured on the server (`bridge.example.org`).
    pub domain: String,
    /// The component secret shared with the server.
    pub secret: Secret,
    /// The nick under which the bridge itself sits in each linked room (it
    /// reads the room for the other networks).
    #[serde(default = "default_bot_nick")]
    pub bot_nick: String,
    /// The localpart of a directory person's ghost; `{person}` is their id.
    #[serde(default = "default_person_localpart")]
    pub person_localpart: String,
    /// The localpart of the ghost of a sender the directory does not know;
    /// `{bridge}` is the bridge they speak from, `{id}` their id there.
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
}

fn default_upload_max() -> u64 {
    10 * 1024 * 1024
}

fn default_person_localpart() -> String {
    "{person}".into()
}
fn default_ghost_localpart() -> String {
    "{bridge}.{id}".into()
}

fn default_server() -> String {
    "127.0.0.1:5347".into()
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
fn default_max_stanza() -> usize {
    256 * 1024
}

impl BridgeOptions for XmppOptions {
    fn check(&self) -> Vec<OptionError> {
        let mut errors = Vec::new();
        if self.server.parse::<std::net::SocketAddr>().is_err() {
            errors.push(OptionError::new("server", format!("{:?} is not an address like 127.0.0.1:5347", self.server)));
        }
        if self.domain.parse::<tokio_xmpp::jid::BareJid>().map(|j| j.node().is_some()).unwrap_or(true) {
            errors.push(OptionError::new("domain", format!("{:?} is not a domain name", self.domain)));
        }
        if self.secret.is_empty() {
            errors.push(OptionError::new("secret", "must not be empty"));
        }
        if self.bot_nick.trim().is_empty() {
            errors.push(OptionError::new("bot_nick", "must not be empty"));
        }
        if let Some(e) = crate::jid::check_template(&self.person_localpart, &["person"], &["person"]) {
            errors.push(OptionError::new("person_localpart", e));
        }
        if let Some(e) = crate::jid::check_template(&self.ghost_localpart, &["id"], &["bridge", "id"]) {
            errors.push(OptionError::new("ghost_localpart", e));
        }
        if let Some(u) = &self.upload_service
            && u.parse::<tokio_xmpp::jid::BareJid>().is_err()
        {
            errors.push(OptionError::new("upload_service", format!("{u:?} is not a JID")));
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            errors.push(OptionError::new("reconnect_max", "must be at least reconnect_initial, which must be above zero"));
        }
        errors
    }
}
