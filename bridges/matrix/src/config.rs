//! The Matrix bridge's options (`bridges.<name>` with `type: matrix`).

use std::time::Duration;

use causeway_core::{BridgeOptions, OptionError, Secret};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixOptions {
    /// The homeserver's client-server API, e.g. `https://matrix.example.org`.
    pub homeserver: String,
    /// The homeserver's name: the part after `:` in user ids (`example.org`).
    pub server_name: String,
    /// Where the homeserver reaches Causeway: Causeway's HTTP address and
    /// `/bridges/<bridge name>`, e.g. `http://127.0.0.1:8080/bridges/matrix`.
    /// Written into the registration file.
    pub url: String,
    /// Where people on other networks reach the same routes (the base of
    /// links to Matrix files, `<public_url>/media/…`); default: `url`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The application service's id in the registration.
    #[serde(default = "default_id")]
    pub id: String,
    /// Causeway → homeserver.
    pub as_token: Secret,
    /// Homeserver → Causeway (checked on every transaction).
    pub hs_token: Secret,
    /// The bridge's own user (`@<sender_localpart>:<server_name>`), which
    /// creates portal rooms and is invited into existing ones.
    #[serde(default = "default_sender")]
    pub sender_localpart: String,
    /// Every ghost's localpart starts with this (the registration claims
    /// `@<prefix>.*` exclusively).
    #[serde(default = "default_ghost_prefix")]
    pub ghost_prefix: String,
    /// Portal rooms Causeway creates get aliases starting with this (the
    /// registration claims `#<prefix>.*` exclusively).
    #[serde(default = "default_alias_prefix")]
    pub alias_prefix: String,
    /// Largest file copied into the homeserver's media repository; larger
    /// ones are sent as a link.
    #[serde(default = "default_media_max")]
    pub media_max_bytes: u64,
    /// Files of the media repository passed on to other networks at once
    /// (`/media/…` links); more wait for a free place or get 503.
    #[serde(default = "default_media_concurrency")]
    pub media_concurrency: usize,
    /// Double puppeting: the token of a second registration
    /// (`causeway matrix registration --double-puppet`) whose non-exclusive
    /// namespace covers the homeserver's own users. With it, a person whose
    /// Matrix account (on `server_name`) is in the directory speaks in
    /// Matrix as that account, not as a ghost.
    #[serde(default)]
    pub double_puppet_token: Option<Secret>,
    /// The bridges whose senders may be double-puppeted: only networks
    /// that authenticate who speaks (XMPP, another Matrix) — a webhook or an
    /// unauthenticated mail says whatever sender it likes.
    #[serde(default)]
    pub double_puppet_from: Vec<String>,
    /// Timeout of each request to the homeserver.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Ask the homeserver for typing notifications, read receipts and
    /// presence (`receive_ephemeral` in the registration). Without them
    /// only those stop crossing from Matrix; Synapse then spends about a
    /// fifth less CPU per bridged message (BENCHMARKS.md).
    #[serde(default = "default_true")]
    pub receive_ephemeral: bool,
    /// A text larger than one Matrix event may be (64 KiB): `split` into
    /// numbered messages (the default), or `file`: the first lines as the
    /// message and the whole text as `message.txt` in the media repository.
    #[serde(default)]
    pub oversize: causeway_core::text::Oversize,
    /// Where read receipts cross (`m.read`): `direct` conversations only
    /// (the default), `all` rooms, or `off`.
    #[serde(default)]
    pub read_markers: causeway_core::ReadMarkers,
    /// Also take the homeserver's token as `?access_token=` (homeservers
    /// before the v1.4 spec; Synapse sends it so only with
    /// `use_appservice_legacy_authorization`). Off: a token in a URL is
    /// written to access logs.
    #[serde(default)]
    pub hs_token_in_query: bool,
    /// Where links from other networks (files, avatars) may lead although
    /// it is not public (`allow: [CIDR, address or host:port, …]`).
    #[serde(default)]
    pub fetch: causeway_core::fetch::FetchOptions,
}

fn default_id() -> String {
    "causeway".into()
}
fn default_sender() -> String {
    "causeway".into()
}
fn default_ghost_prefix() -> String {
    "causeway_".into()
}
fn default_alias_prefix() -> String {
    "causeway_".into()
}
fn default_media_concurrency() -> usize {
    16
}

fn default_media_max() -> u64 {
    50 * 1024 * 1024
}
fn default_true() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Characters of a Matrix localpart (historical user ids are laxer; new
/// ones are these).
fn localpart_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-/+".contains(c))
}

impl BridgeOptions for MatrixOptions {
    fn check(&self) -> Vec<OptionError> {
        let mut errors = self.fetch.check("fetch");
        for (field, value) in
            [("homeserver", &self.homeserver), ("url", &self.url)].into_iter().chain(self.public_url.as_ref().map(|u| ("public_url", u)))
        {
            match reqwest::Url::parse(value) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => errors.push(OptionError::new(field, format!("{value:?} is not an http(s) URL"))),
            }
        }
        if ruma::ServerName::parse(&self.server_name).is_err() {
            errors.push(OptionError::new("server_name", format!("{:?} is not a server name", self.server_name)));
        }
        for (field, secret) in [("as_token", &self.as_token), ("hs_token", &self.hs_token)] {
            if secret.is_empty() {
                errors.push(OptionError::new(field, "must not be empty"));
            }
        }
        if !self.as_token.is_empty() && self.as_token.expose() == self.hs_token.expose() {
            errors.push(OptionError::new("hs_token", "must differ from as_token"));
        }
        if self.double_puppet_token.is_some() && self.double_puppet_from.is_empty() {
            errors.push(OptionError::new(
                "double_puppet_from",
                "name the bridges whose senders may speak as their own Matrix accounts (networks that authenticate them, e.g. [xmpp])",
            ));
        }
        if self.double_puppet_token.is_none() && !self.double_puppet_from.is_empty() {
            errors.push(OptionError::new("double_puppet_token", "double_puppet_from needs double_puppet_token"));
        }
        if let Some(t) = &self.double_puppet_token {
            if t.is_empty() {
                errors.push(OptionError::new("double_puppet_token", "must not be empty"));
            } else if t.expose() == self.as_token.expose() || t.expose() == self.hs_token.expose() {
                errors.push(OptionError::new(
                    "double_puppet_token",
                    "must differ from as_token and hs_token (it belongs to a second registration)",
                ));
            }
        }
        if self.id.trim().is_empty() {
            errors.push(OptionError::new("id", "must not be empty"));
        }
        for (field, value) in
            [("sender_localpart", &self.sender_localpart), ("ghost_prefix", &self.ghost_prefix), ("alias_prefix", &self.alias_prefix)]
        {
            if !localpart_ok(value) {
                errors.push(OptionError::new(field, format!("{value:?}: use lowercase letters, digits and ._=-/+")));
            }
        }
        if self.sender_localpart.starts_with(&self.ghost_prefix) {
            errors.push(OptionError::new("sender_localpart", "must not start with ghost_prefix (the bot is not a ghost)"));
        }
        if self.request_timeout.is_zero() {
            errors.push(OptionError::new("request_timeout", "must be longer than zero"));
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
        json!({"homeserver": "http://127.0.0.1:8008", "server_name": "matrix.test", "url": "http://127.0.0.1:8080/bridges/matrix",
               "as_token": "a", "hs_token": "h"})
    }

    #[test]
    fn defaults_and_mistakes() {
        let o: MatrixOptions = parse_options(good()).unwrap();
        assert_eq!((o.sender_localpart.as_str(), o.ghost_prefix.as_str()), ("causeway", "causeway_"));
        let mut bad = good();
        let m = bad.as_object_mut().unwrap();
        m.insert("homeserver".into(), json!("ftp://x"));
        m.insert("server_name".into(), json!("not a name"));
        m.insert("hs_token".into(), json!("a"));
        m.insert("ghost_prefix".into(), json!("Big_"));
        m.insert("sender_localpart".into(), json!("causeway_bot"));
        let errors = parse_options::<MatrixOptions>(bad).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["homeserver", "server_name", "hs_token", "ghost_prefix"], "{errors:?}");
        let mut bad = good();
        bad.as_object_mut().unwrap().insert("sender_localpart".into(), json!("causeway_bot"));
        let errors = parse_options::<MatrixOptions>(bad).unwrap_err();
        assert_eq!(errors[0].path, "sender_localpart");
    }

    #[test]
    fn double_puppeting_needs_its_own_token_and_trusted_bridges() {
        let with = |extra: serde_json::Value| {
            let mut o = good();
            o.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            parse_options::<MatrixOptions>(o)
                .map(drop)
                .map_err(|e| e.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>())
        };
        assert!(with(json!({"double_puppet_token": "d", "double_puppet_from": ["xmpp"]})).is_ok());
        let e = with(json!({"double_puppet_token": "d"})).unwrap_err();
        assert!(e[0].starts_with("double_puppet_from: name the bridges"), "{e:?}");
        let e = with(json!({"double_puppet_from": ["xmpp"]})).unwrap_err();
        assert!(e[0].starts_with("double_puppet_token:"), "{e:?}");
        let e = with(json!({"double_puppet_token": "a", "double_puppet_from": ["xmpp"]})).unwrap_err();
        assert!(e[0].contains("must differ"), "{e:?}");
    }

    #[test]
    fn the_example_documents_every_option() {
        let mut all = good();
        all["double_puppet_token"] = json!("d");
        all["double_puppet_from"] = json!(["xmpp"]);
        all["public_url"] = json!("https://chat.example.org/bridges/matrix");
        let o: MatrixOptions = parse_options(all).unwrap();
        let missing = causeway_core::testing::undocumented(causeway_core::testing::EXAMPLE, "matrix", &o);
        assert!(missing.is_empty(), "config.example.yaml does not document {missing:?}");
    }
}
