//! Webhook payloads. The native format is one JSON shape for both
//! directions, so what Causeway POSTs can be POSTed back (and is then
//! recognised as an echo by its `id`).

use causeway_core::text::{html_to_plain, sanitize_html};
use causeway_core::{Attachment, Body, Event, Incoming, Membership, Mention, MessageKind, RemoteSender, Show, Text};
use serde::{Deserialize, Serialize};

const MAX_ID: usize = 256;
const MAX_NAME: usize = 256;
const MAX_ATTACHMENTS: usize = 32;
const MAX_KEY: usize = 64;

/// Why a payload is not an event; becomes a 400 (`syntax`) or 422.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not valid UTF-8 (at byte {0})")]
    Utf8(usize),
    #[error("body is not valid JSON for this endpoint: {0}")]
    Syntax(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeSender {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// Outbound only: the directory's person id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    /// Outbound only: the bridge the event came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Causeway's native webhook JSON. Unknown fields are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Native {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub sender: Option<NativeSender>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// `text` (default), `notice` or `emote`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_kind: Option<MessageKind>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// Who the message mentions: `{"who": person id or "bridge:id", "text":
    /// the words naming them}` (or only the `who` string), `"@room"` for
    /// everyone (taken only where the endpoint says `may_mention_room`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<Mention>,
    /// Edit, retraction, reaction: the message acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Reaction: the emoji or key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// Retraction: taken back as a moderator, not as its sender (only where
    /// the endpoint says `may_moderate`; see docs/security.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moderated: bool,
    /// Presence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show: Option<Show>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Typing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Membership: `join`, `leave` or `nick` (with `nick`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nick: Option<String>,
    /// Topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// RFC 3339; outbound always, inbound optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Inbound on a direct endpoint: who the message is for, a person id
    /// or `bridge:id` (what `direct.with` of a delivery says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Outbound on a direct endpoint: whose conversation this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct: Option<Direct>,
    /// Outbound only: the Causeway event id and portal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
}

/// The two sides of a direct conversation, as a delivery names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Direct {
    /// The account on this endpoint's side the message is for.
    pub to: String,
    /// The other side: a person id or `bridge:id`. Answer with `"to": <this>`.
    pub with: String,
}

/// Slack-compatible incoming-webhook JSON.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Slack {
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
}

/// The body as text, if it is UTF-8 holding a JSON object (serde would also
/// read a struct from an array, which no sender means).
fn json_object(body: &[u8]) -> Result<&str, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|e| PayloadError::Utf8(e.valid_up_to()))?;
    if !text.trim_start().starts_with('{') {
        return Err(PayloadError::Syntax("expected a JSON object".into()));
    }
    Ok(text)
}

fn invalid(msg: impl Into<String>) -> PayloadError {
    PayloadError::Invalid(msg.into())
}

fn bounded(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, PayloadError> {
    match value {
        Some(v) if v.len() > max => Err(invalid(format!("`{field}` is longer than {max} bytes"))),
        Some(v) if v.chars().any(char::is_control) => Err(invalid(format!("`{field}` contains control characters"))),
        v => Ok(v),
    }
}

fn required(field: &str, value: Option<String>, max: usize) -> Result<String, PayloadError> {
    match bounded(field, value, max)? {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(invalid(format!("`{field}` is required"))),
    }
}

fn parse_at(at: Option<String>) -> Result<Option<i64>, PayloadError> {
    let Some(at) = at else { return Ok(None) };
    let t = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
        .map_err(|e| invalid(format!("`at` is not an RFC 3339 time: {e}")))?;
    Ok(Some(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)))
}

/// Most mentions one message may carry.
const MAX_MENTIONS: usize = 50;

/// Mentions as a payload may carry them: a handful, each naming someone
/// as a recipient is named (or the room), with short text.
fn check_mentions(mentions: Vec<Mention>) -> Result<Vec<Mention>, PayloadError> {
    if mentions.len() > MAX_MENTIONS {
        return Err(invalid(format!("at most {MAX_MENTIONS} `mentions`")));
    }
    for m in &mentions {
        if !m.is_room() && (m.recipient().is_none() || m.who.len() > MAX_ID) {
            return Err(invalid("a mention's `who` is a person id or `bridge:id`"));
        }
        if m.text.as_ref().is_some_and(|t| t.len() > 256) {
            return Err(invalid("a mention's `text` is at most 256 bytes"));
        }
    }
    Ok(mentions)
}

fn check_attachments(list: &[Attachment]) -> Result<(), PayloadError> {
    if list.len() > MAX_ATTACHMENTS {
        return Err(invalid(format!("more than {MAX_ATTACHMENTS} attachments")));
    }
    for (i, a) in list.iter().enumerate() {
        let ok = reqwest::Url::parse(&a.url).is_ok_and(|u| u.scheme() == "http" || u.scheme() == "https");
        if !ok {
            return Err(invalid(format!("`attachments[{i}].url` is not an http(s) URL")));
        }
    }
    Ok(())
}

/// Parse a native payload into an event. `header_id` is the request's
/// `Idempotency-Key`, used when the payload has no `id`.
pub fn parse_native(room: &str, body: &[u8], header_id: Option<String>) -> Result<Incoming, PayloadError> {
    parse_native_to(room, body, header_id).map(|(incoming, _)| incoming)
}

/// [`parse_native`], also returning the `to` field (checked for length and
/// control characters, not yet read as a recipient).
pub fn parse_native_to(room: &str, body: &[u8], header_id: Option<String>) -> Result<(Incoming, Option<String>), PayloadError> {
    let n: Native = serde_json::from_str(json_object(body)?).map_err(|e| PayloadError::Syntax(e.to_string()))?;
    let to = bounded("to", n.to, 2 * MAX_ID)?.filter(|t| !t.trim().is_empty());
    let sender = n.sender.unwrap_or_default();
    let sender = RemoteSender {
        id: required("sender.id", Some(sender.id), MAX_ID)?,
        name: bounded("sender.name", sender.name, MAX_NAME)?,
        avatar: bounded("sender.avatar_url", sender.avatar_url, 2048)?,
    };
    let remote_id = bounded("id", n.id.or(header_id), MAX_ID)?.filter(|s| !s.is_empty());
    let reference = |f: &str, v: Option<String>| bounded(f, v, MAX_ID);
    let body = match n.kind.as_deref().unwrap_or("message") {
        "message" => {
            check_attachments(&n.attachments)?;
            let html = n.html.filter(|h| !h.trim().is_empty()).map(|h| sanitize_html(&h));
            let plain = match (n.text, &html) {
                (Some(t), _) if !t.is_empty() => t,
                (_, Some(h)) => html_to_plain(h),
                _ => String::new(),
            };
            if plain.trim().is_empty() && n.attachments.is_empty() {
                return Err(invalid("a message needs `text`, `html` or `attachments`"));
            }
            Body::Message {
                text: Text { plain, html },
                kind: n.message_kind.unwrap_or_default(),
                attachments: n.attachments,
                reply_to: reference("reply_to", n.reply_to)?,
                thread: reference("thread", n.thread)?,
                mentions: check_mentions(n.mentions)?,
            }
        }
        "edit" => {
            let html = n.html.filter(|h| !h.trim().is_empty()).map(|h| sanitize_html(&h));
            let plain = n.text.filter(|t| !t.is_empty()).or_else(|| html.as_deref().map(html_to_plain));
            Body::Edit {
                target: required("target", n.target, MAX_ID)?,
                text: Text { plain: plain.ok_or_else(|| invalid("an edit needs `text` or `html`"))?, html },
            }
        }
        "retract" => Body::Retract { target: required("target", n.target, MAX_ID)?, moderated: n.moderated },
        "reaction" => {
            Body::Reaction { target: required("target", n.target, MAX_ID)?, key: required("key", n.key, MAX_KEY)?, removed: n.removed }
        }
        "presence" => Body::Presence {
            show: n.show.ok_or_else(|| invalid("presence needs `show` (online, away, xa, dnd, offline)"))?,
            status: bounded("status", n.status, 1024)?,
        },
        "typing" => Body::Typing { active: n.active.ok_or_else(|| invalid("typing needs `active`"))? },
        "membership" => Body::Membership(match n.membership.as_deref() {
            Some("join") => Membership::Join,
            Some("leave") => Membership::Leave,
            Some("nick") => Membership::Nick { name: required("nick", n.nick, MAX_NAME)? },
            _ => return Err(invalid("membership needs `membership`: join, leave or nick")),
        }),
        "topic" => Body::Topic { text: n.topic.ok_or_else(|| invalid("a topic event needs `topic`"))? },
        other => {
            return Err(invalid(format!(
                "unknown `type` {other:?} (message, edit, retract, reaction, presence, typing, membership, topic)"
            )));
        }
    };
    let incoming = Incoming { room: room.to_string(), sender, remote_id, aliases: Vec::new(), at_ms: parse_at(n.at)?, body };
    Ok((incoming, to))
}

/// Parse a Slack-compatible payload into a message event.
pub fn parse_slack(room: &str, body: &[u8], header_id: Option<String>) -> Result<Incoming, PayloadError> {
    let s: Slack = serde_json::from_str(json_object(body)?).map_err(|e| PayloadError::Syntax(e.to_string()))?;
    if s.text.trim().is_empty() {
        return Err(invalid("`text` is required"));
    }
    let name = bounded("username", s.username, MAX_NAME)?.filter(|n| !n.is_empty());
    Ok(Incoming {
        room: room.to_string(),
        sender: RemoteSender {
            id: name.clone().unwrap_or_else(|| "webhook".to_string()),
            name,
            avatar: bounded("icon_url", s.icon_url, 2048)?,
        },
        remote_id: bounded("Idempotency-Key", header_id, MAX_ID)?,
        aliases: Vec::new(),
        at_ms: None,
        body: Body::text(s.text),
    })
}

fn rfc3339(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

/// Render an event in the native format; `id` is the delivery id (outbound)
/// or `None` (server-sent events, where the SSE id is the archive position).
pub fn render_native<R: Clone + Into<String>>(event: &Event<R>, id: Option<&str>) -> Native {
    let mut n = Native {
        id: id.map(str::to_string),
        kind: Some(event.body.kind().to_string()),
        sender: Some(NativeSender {
            id: event.sender.id.clone(),
            name: Some(event.sender.name.clone()),
            avatar_url: event.sender.avatar.clone(),
            person: event.sender.person.clone(),
            network: Some(event.origin.bridge.clone()),
        }),
        at: rfc3339(event.at_ms),
        event_id: Some(event.id.clone()),
        portal: Some(event.portal.clone()),
        ..Native::default()
    };
    let r = |x: &R| x.clone().into();
    match &event.body {
        Body::Message { text, kind, attachments, reply_to, thread, mentions } => {
            n.text = Some(text.plain.clone());
            n.html = text.html.clone();
            n.message_kind = (*kind != MessageKind::Text).then_some(*kind);
            n.attachments = attachments.clone();
            n.reply_to = reply_to.as_ref().map(r);
            n.thread = thread.as_ref().map(r);
            n.mentions = mentions.clone();
        }
        Body::Edit { target, text } => {
            n.target = Some(r(target));
            n.text = Some(text.plain.clone());
            n.html = text.html.clone();
        }
        Body::Retract { target, moderated } => {
            n.target = Some(r(target));
            n.moderated = *moderated;
        }
        Body::Reaction { target, key, removed } => {
            n.target = Some(r(target));
            n.key = Some(key.clone());
            n.removed = *removed;
        }
        Body::Presence { show, status } => {
            n.show = Some(*show);
            n.status = status.clone();
        }
        Body::Typing { active } => n.active = Some(*active),
        Body::Membership(m) => match m {
            Membership::Join => n.membership = Some("join".into()),
            Membership::Leave => n.membership = Some("leave".into()),
            Membership::Nick { name } => {
                n.membership = Some("nick".into());
                n.nick = Some(name.clone());
            }
        },
        Body::Topic { text } => n.topic = Some(text.clone()),
        Body::Read { target } => n.target = Some(r(target)),
    }
    n
}

/// Text as Slack's formatting shows it literally: `&`, `<` and `>` escaped.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Render a (degraded) message in the Slack-compatible format.
pub fn render_slack(event: &Event<String>) -> Option<Slack> {
    let Body::Message { text, kind, .. } = &event.body else {
        return None;
    };
    // Slack (and Mattermost, Rocket.Chat) read `<…>` as a control
    // sequence: `<!channel>` pings everyone, `<url|text>` hides a link
    // behind any text. What someone said on another network stays text.
    let plain = slack_escape(&text.plain);
    let text = match kind {
        MessageKind::Emote => format!("_{plain}_"),
        _ => plain,
    };
    Some(Slack { text, username: Some(event.sender.name.clone()), icon_url: event.sender.avatar.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_core::{Origin, Sender};
    use proptest::prelude::*;

    fn native(json: &str) -> Result<Incoming, PayloadError> {
        parse_native("ep", json.as_bytes(), None)
    }

    #[test]
    fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
        for depth in [1_000, 100_000] {
            let (open, close) = ("[".repeat(depth), "]".repeat(depth));
            // Where a value is expected, it is refused at once.
            assert!(native(&format!(r#"{{"sender":{{"id":"a"}},"text":{open}{close}}}"#)).is_err(), "{depth} levels");
            assert!(native(&format!("{open}{close}")).is_err());
            // Where it is not, it is passed over (without recursion) or refused.
            let extra = format!(r#"{{"sender":{{"id":"a"}},"text":"x","extra":{open}{close}}}"#);
            if let Ok(i) = native(&extra) {
                assert!(matches!(i.body, Body::Message { ref text, .. } if text.plain == "x"));
            }
            let objects = format!(r#"{{"sender":{{"id":"a"}},"text":"x","extra":{}1{}}}"#, r#"{"a":"#.repeat(depth), "}".repeat(depth));
            let _ = native(&objects);
            let _ = parse_slack("ep", extra.as_bytes(), None);
        }
    }

    #[test]
    fn a_message_with_everything() {
        let i = native(
            r#"{"id":"m1","sender":{"id":"alice","name":"Alice"},"text":"hi","html":"<b>hi</b><script>x</script>",
                "reply_to":"m0","attachments":[{"url":"https://f/x.png","name":"x.png"}],"at":"2026-01-02T03:04:05Z","extra":1}"#,
        )
        .unwrap();
        assert_eq!(i.remote_id.as_deref(), Some("m1"));
        assert_eq!(i.sender.name.as_deref(), Some("Alice"));
        assert_eq!(i.at_ms, Some(1_767_323_045_000));
        match i.body {
            Body::Message { text, reply_to, attachments, .. } => {
                assert_eq!(text.html.as_deref(), Some("<b>hi</b>"));
                assert_eq!(reply_to.as_deref(), Some("m0"));
                assert_eq!(attachments.len(), 1);
            }
            b => panic!("{b:?}"),
        }
    }

    #[test]
    fn every_kind_parses() {
        let s = r#""sender":{"id":"a"}"#;
        for (json, kind) in [
            (format!(r#"{{{s},"type":"edit","target":"m","text":"x"}}"#), "edit"),
            (format!(r#"{{{s},"type":"retract","target":"m"}}"#), "retract"),
            (format!(r#"{{{s},"type":"reaction","target":"m","key":"👍"}}"#), "reaction"),
            (format!(r#"{{{s},"type":"presence","show":"away","status":"lunch"}}"#), "presence"),
            (format!(r#"{{{s},"type":"typing","active":true}}"#), "typing"),
            (format!(r#"{{{s},"type":"membership","membership":"nick","nick":"Al"}}"#), "membership"),
            (format!(r#"{{{s},"type":"topic","topic":"t"}}"#), "topic"),
            (format!(r#"{{{s},"html":"<p>only html</p>"}}"#), "message"),
        ] {
            assert_eq!(native(&json).unwrap().body.kind(), kind, "{json}");
        }
    }

    #[test]
    fn header_id_is_the_fallback_remote_id() {
        let i = parse_native("ep", br#"{"sender":{"id":"a"},"text":"x"}"#, Some("key-1".into())).unwrap();
        assert_eq!(i.remote_id.as_deref(), Some("key-1"));
    }

    #[test]
    fn hostile_payloads_are_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "not valid JSON"),
            (b"{", "not valid JSON"),
            (b"[]", "not valid JSON"),
            (b"null", "not valid JSON"),
            (b"\xff\xfe{}", "not valid UTF-8"),
            (b"{\"sender\":{\"id\":\"a\"},\"text\":\"\xc3\x28\"}", "not valid UTF-8 (at byte 29)"),
            (br#"{"text":"no sender"}"#, "`sender.id` is required"),
            (br#"{"sender":{"id":5},"text":"x"}"#, "not valid JSON"),
            (br#"{"sender":{"id":"a"}}"#, "needs `text`, `html` or `attachments`"),
            (br#"{"sender":{"id":"a"},"html":"<script>only</script>"}"#, "needs `text`"),
            (br#"{"sender":{"id":"a"},"type":"edit","text":"x"}"#, "`target` is required"),
            (br#"{"sender":{"id":"a"},"type":"reaction","target":"m"}"#, "`key` is required"),
            (br#"{"sender":{"id":"a"},"type":"presence","show":"sleepy"}"#, "not valid JSON"),
            (br#"{"sender":{"id":"a"},"type":"explode"}"#, "unknown `type`"),
            (br#"{"sender":{"id":"a\u0000b"},"text":"x"}"#, "control characters"),
            (br#"{"sender":{"id":"a"},"text":"x","at":"yesterday"}"#, "RFC 3339"),
            (br#"{"sender":{"id":"a"},"attachments":[{"url":"javascript:alert(1)"}]}"#, "not an http(s) URL"),
            (br#"{"sender":{"id":"a"},"text":"x","text":"y"}"#, "duplicate field"),
        ];
        for (body, want) in cases {
            let err = parse_native("ep", body, None).unwrap_err().to_string();
            assert!(err.contains(want), "{:?}: wanted {want:?}, got {err:?}", String::from_utf8_lossy(body));
        }
        let long = format!(r#"{{"sender":{{"id":"{}"}},"text":"x"}}"#, "a".repeat(300));
        assert!(native(&long).unwrap_err().to_string().contains("longer than 256"));
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        // Deep nesting in an ignored field is skipped without a stack overflow.
        assert!(native(&deep).unwrap_err().to_string().contains("`sender.id` is required"));
        let deep = format!("{{\"mentions\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(native(&deep).unwrap_err().to_string().contains("not valid JSON"));
    }

    #[test]
    fn slack_payloads() {
        let i =
            parse_slack("ep", br##"{"text":"deploy done","username":"CI","icon_url":"https://i/x.png","channel":"#x"}"##, None).unwrap();
        assert_eq!(i.sender.id, "CI");
        assert_eq!(i.body, Body::text("deploy done"));
        assert!(parse_slack("ep", br#"{"username":"CI"}"#, None).unwrap_err().to_string().contains("`text`"));
        assert!(parse_slack("ep", br#"{"text":1}"#, None).is_err());
    }

    #[test]
    fn slack_output_cannot_ping_everyone_or_hide_a_link() {
        let event: Event<String> = Event {
            id: "e1".into(),
            portal: "ops".into(),
            origin: Origin { bridge: "xmpp".into(), room: "r".into(), remote_id: None },
            sender: Sender { id: "m@x".into(), person: None, name: "Mallory".into(), avatar: None },
            at_ms: 1,
            body: Body::text("<!channel> log in at <https://evil.example|https://bank.example> & <@U123>"),
        };
        let s = render_slack(&event).unwrap();
        assert_eq!(s.text, "&lt;!channel&gt; log in at &lt;https://evil.example|https://bank.example&gt; &amp; &lt;@U123&gt;");
    }

    #[test]
    fn native_output_parses_back_as_the_same_event() {
        let event: Event<String> = Event {
            id: "e1".into(),
            portal: "ops".into(),
            origin: Origin { bridge: "xmpp".into(), room: "r".into(), remote_id: None },
            sender: Sender { id: "alice@corp".into(), person: Some("alice".into()), name: "Alice".into(), avatar: None },
            at_ms: 1_767_323_045_000,
            body: Body::Reaction { target: "t1".into(), key: "🎉".into(), removed: true },
        };
        let json = serde_json::to_vec(&render_native(&event, Some("d1"))).unwrap();
        let back = parse_native("ep", &json, None).unwrap();
        assert_eq!(back.remote_id.as_deref(), Some("d1"));
        assert_eq!(back.sender.id, "alice@corp");
        assert_eq!(back.at_ms, Some(event.at_ms));
        assert_eq!(back.body, event.body);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_native("ep", &body, None);
            let _ = parse_slack("ep", &body, None);
        }

        #[test]
        fn arbitrary_json_strings_never_panic(kind in "[a-z]{0,10}", text in "\\PC{0,64}", target in "\\PC{0,8}") {
            let json = serde_json::json!({"type": kind, "sender": {"id": text}, "text": text, "target": target, "key": text});
            let _ = parse_native("ep", json.to_string().as_bytes(), None);
        }
    }
}
