//! The webhook bridge's options (`bridges.<name>` with `type: webhook`).

use std::collections::BTreeMap;
use std::time::Duration;

use causeway_core::{BridgeOptions, OptionError, Secret};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookOptions {
    /// Endpoint name → its settings. The name is the room to link in a portal.
    pub endpoints: BTreeMap<String, EndpointOptions>,
    /// Largest inbound request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_max_body() -> usize {
    256 * 1024
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointOptions {
    /// Accept events POSTed to `/bridges/<bridge>/<endpoint>`.
    #[serde(default)]
    pub inbound: Option<InboundOptions>,
    /// POST every event of the portal to a URL.
    #[serde(default)]
    pub outbound: Option<OutboundOptions>,
    /// Serve the portal's events as server-sent events at `/bridges/<bridge>/<endpoint>/events`.
    #[serde(default)]
    pub events: Option<EventsOptions>,
    /// Carry direct conversations instead of a portal's room: inbound
    /// payloads name their recipient (`to`), outbound ones say whose
    /// conversation they belong to (`direct`). Not linked in portals.
    #[serde(default)]
    pub direct: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Causeway's own JSON (the same shape in both directions).
    #[default]
    Native,
    /// Slack-compatible `{text, username, icon_url}` (also Mattermost, Rocket.Chat).
    Slack,
}

/// How an inbound endpoint's requests are signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    #[default]
    Causeway,
    Slack,
    Github,
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundOptions {
    #[serde(default)]
    pub format: Format,
    /// Accept `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Accept only requests signed with this secret (a token alone is then
    /// not enough), in the scheme `signature` names.
    #[serde(default)]
    pub hmac_secret: Option<Secret>,
    /// `causeway`: `X-Causeway-Timestamp: <Unix seconds>` and
    /// `X-Causeway-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`;
    /// `slack`: Slack's `X-Slack-Request-Timestamp` and `X-Slack-Signature`;
    /// `github`: `X-Hub-Signature-256` over the body alone (no time in it: a
    /// replay is refused for 24 hours only).
    #[serde(default)]
    pub signature: SignatureScheme,
    /// How far a signature's timestamp may be from now (either way).
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    pub signature_tolerance: Duration,
    /// Accept requests with neither; must be said explicitly.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Senders here may take back other people's messages (a retraction
    /// with `"moderated": true`): for an operator's own moderation tool.
    /// Without it, only a message's sender takes it back.
    #[serde(default)]
    pub may_moderate: bool,
    /// Senders here may ping everyone in a room (a mention of `"@room"`).
    /// Without it, such a mention is left out.
    #[serde(default)]
    pub may_mention_room: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundOptions {
    pub url: String,
    #[serde(default)]
    pub format: Format,
    /// Sign each request: `X-Causeway-Timestamp: <Unix seconds>` and
    /// `X-Causeway-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
    #[serde(default)]
    pub hmac_secret: Option<Secret>,
    /// Sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest text of one request; a longer one is posted as numbered
    /// parts. Default: none for `native`, 16,000 for `slack` (Mattermost
    /// takes 16,383 characters, Slack 40,000). Whatever the limit, a
    /// receiver that answers `413` gets the text in smaller parts.
    #[serde(default)]
    pub max_text_bytes: Option<usize>,
}

impl OutboundOptions {
    /// `max_text_bytes`, or the format's default.
    pub fn max_text_bytes(&self) -> Option<usize> {
        self.max_text_bytes.or(match self.format {
            Format::Native => None,
            Format::Slack => Some(16_000),
        })
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsOptions {
    /// Readers send `Authorization: Bearer <token>`.
    pub token: Secret,
}

impl BridgeOptions for WebhookOptions {
    fn check(&self) -> Vec<OptionError> {
        let mut errors = Vec::new();
        if self.max_body_bytes < 64 {
            errors.push(OptionError::new("max_body_bytes", "must be at least 64"));
        }
        for (name, ep) in &self.endpoints {
            let path = format!("endpoints.{name}");
            if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                errors.push(OptionError::new(&path, "endpoint names use letters, digits, `-`, `_` and `.` (at most 64)"));
            }
            if ep.inbound.is_none() && ep.outbound.is_none() && ep.events.is_none() {
                errors.push(OptionError::new(&path, "give at least one of `inbound`, `outbound`, `events`"));
            }
            if ep.direct {
                if ep.events.is_some() {
                    errors.push(OptionError::new(format!("{path}.events"), "a direct endpoint has no single portal to stream"));
                }
                if ep.inbound.as_ref().is_some_and(|i| i.format != Format::Native) {
                    errors.push(OptionError::new(
                        format!("{path}.inbound.format"),
                        "a direct endpoint takes the native format (it needs `to`)",
                    ));
                }
            }
            if let Some(i) = &ep.inbound {
                let empty = |s: &Option<Secret>| s.as_ref().is_some_and(Secret::is_empty);
                if empty(&i.token) {
                    errors.push(OptionError::new(format!("{path}.inbound.token"), "must not be empty"));
                }
                if empty(&i.hmac_secret) {
                    errors.push(OptionError::new(format!("{path}.inbound.hmac_secret"), "must not be empty"));
                }
                if i.signature_tolerance.is_zero() || i.signature_tolerance > Duration::from_secs(3600) {
                    errors.push(OptionError::new(format!("{path}.inbound.signature_tolerance"), "must be between 1s and 1h"));
                }
                if i.signature != SignatureScheme::Causeway && i.hmac_secret.is_none() {
                    errors.push(OptionError::new(format!("{path}.inbound.signature"), "needs hmac_secret"));
                }
                if i.token.is_none() && i.hmac_secret.is_none() && !i.allow_unauthenticated {
                    errors.push(OptionError::new(
                        format!("{path}.inbound"),
                        "give `token` or `hmac_secret` (or set `allow_unauthenticated: true`)",
                    ));
                }
            }
            if let Some(o) = &ep.outbound {
                match reqwest::Url::parse(&o.url) {
                    Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                    Ok(u) => errors
                        .push(OptionError::new(format!("{path}.outbound.url"), format!("scheme {:?} is not http or https", u.scheme()))),
                    Err(e) => errors.push(OptionError::new(format!("{path}.outbound.url"), format!("invalid URL: {e}"))),
                }
                if o.max_text_bytes.is_some_and(|m| m < 1024) {
                    errors.push(OptionError::new(format!("{path}.outbound.max_text_bytes"), "must be at least 1024"));
                }
                if o.timeout.is_zero() {
                    errors.push(OptionError::new(format!("{path}.outbound.timeout"), "must be longer than zero"));
                }
            }
            if let Some(e) = &ep.events
                && e.token.is_empty()
            {
                errors.push(OptionError::new(format!("{path}.events.token"), "must not be empty"));
            }
        }
        errors
    }
}
