//! The normalized event model: what every bridge turns its network's data into,
//! what the router stores in the archive, and what every bridge renders again.
//!
//! References to other messages (reply, thread root, edit/retraction/reaction
//! target) are generic: a bridge hands the router ids *of its own network*, the
//! archive stores Causeway event ids, and a delivery carries the ids *of the
//! target network*. [`Body::map_refs`] is the one place where they are swapped.

use serde::{Deserialize, Serialize};

/// A Causeway event id (a UUIDv7, so ids sort by creation time).
pub type EventId = String;

/// Make a fresh event or delivery id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Rich text: a plain rendering is always present; `html`, when present, is
/// sanitized (see [`crate::text::sanitize_html`]) before it is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub plain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

impl Text {
    pub fn plain(s: impl Into<String>) -> Self {
        Text { plain: s.into(), html: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    #[default]
    Text,
    /// An automatic or bot message (Matrix `m.notice`); never answered by bots.
    Notice,
    /// "/me does something" (Matrix `m.emote`, XMPP `/me`).
    Emote,
}

impl MessageKind {
    fn is_text(&self) -> bool {
        *self == MessageKind::Text
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Show {
    /// Ordered from most to least available, so `min` over a person's
    /// accounts is their aggregated presence.
    Online,
    Dnd,
    Away,
    Xa,
    Offline,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Membership {
    Join,
    Leave,
    Nick { name: String },
}

/// Someone a message mentions, so that their client tells them.
///
/// `who` names them as [`crate::Recipient`] does: a person of the directory
/// by id, or an account as `bridge:id` (a bridge hands its own ghosts in as
/// whom they stand for, and the router turns an account of a person into
/// the person); or [`Mention::ROOM`], everyone in the room, which bridges
/// take only from a sender the network lets ping the room. `text` is the
/// words of the message's text that name them (a pill's text, a nick), so
/// that each network can put its own name for them there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "MentionForm")]
pub struct Mention {
    pub who: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Mention {
    /// Everyone in the room (Matrix `@room`).
    pub const ROOM: &'static str = "@room";

    pub fn new(who: impl Into<String>, text: Option<String>) -> Self {
        Mention { who: who.into(), text }
    }

    /// Whether this mentions the whole room.
    pub fn is_room(&self) -> bool {
        self.who == Self::ROOM
    }

    /// Who, as a recipient (`None` for the room, or a malformed name).
    pub fn recipient(&self) -> Option<crate::Recipient> {
        if self.is_room() { None } else { crate::Recipient::parse(&self.who) }
    }
}

impl From<&str> for Mention {
    fn from(who: &str) -> Self {
        Mention::new(who, None)
    }
}

/// A mention as written: an object, or only who (as webhooks write them).
#[derive(Deserialize)]
#[serde(untagged)]
enum MentionForm {
    Who(String),
    Full {
        who: String,
        #[serde(default)]
        text: Option<String>,
    },
}

impl From<MentionForm> for Mention {
    fn from(f: MentionForm) -> Self {
        match f {
            MentionForm::Who(who) => Mention { who, text: None },
            MentionForm::Full { who, text } => Mention { who, text },
        }
    }
}

/// Put each network's name for the people `mentions` names into `plain`:
/// where the text names someone as the sender wrote it, `name_for` gives
/// what to write instead (a nick, `@Name`); someone the text does not name
/// is put before it (`name: …`). Returns the text and, for each mention
/// given a name, the byte range it has in the text.
pub fn rename_mentions(
    plain: &str,
    mentions: &[Mention],
    mut name_for: impl FnMut(&Mention) -> Option<String>,
) -> (String, Vec<(std::ops::Range<usize>, Mention)>) {
    let mut text = plain.to_string();
    let mut placed: Vec<(std::ops::Range<usize>, Mention)> = Vec::new();
    let mut prefix = Vec::new();
    for m in mentions.iter().filter(|m| !m.is_room()) {
        let Some(name) = name_for(m).filter(|n| !n.is_empty()) else { continue };
        let written = m.text.as_deref().filter(|w| !w.is_empty());
        // The first place the text names them, as a word of its own, that
        // is not someone else's already.
        let at = written.and_then(|w| {
            text.match_indices(w).map(|(i, _)| i).find(|&i| {
                let apart = !text[..i].chars().next_back().is_some_and(char::is_alphanumeric)
                    && !text[i + w.len()..].chars().next().is_some_and(char::is_alphanumeric);
                apart && !placed.iter().any(|(r, _)| r.contains(&i) || (i..i + w.len()).contains(&r.start))
            })
        });
        match (at, written) {
            (Some(i), Some(w)) => {
                text.replace_range(i..i + w.len(), &name);
                let grow = name.len() as isize - w.len() as isize;
                for (r, _) in placed.iter_mut().filter(|(r, _)| r.start > i) {
                    *r = (r.start as isize + grow) as usize..(r.end as isize + grow) as usize;
                }
                placed.push((i..i + name.len(), m.clone()));
            }
            _ if text.contains(&name) => {
                let i = text.find(&name).unwrap_or(0);
                if !placed.iter().any(|(r, _)| r.contains(&i)) {
                    placed.push((i..i + name.len(), m.clone()));
                }
            }
            _ => prefix.push((name, m.clone())),
        }
    }
    if !prefix.is_empty() {
        let head = prefix.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ") + ": ";
        for (r, _) in placed.iter_mut() {
            *r = r.start + head.len()..r.end + head.len();
        }
        let mut at = 0;
        for (n, m) in prefix {
            placed.push((at..at + n.len(), m));
            at += n.len() + 2;
        }
        text.insert_str(0, &head);
    }
    placed.sort_by_key(|(r, _)| r.start);
    (text, placed)
}

/// What happened. `R` is the type of a reference to another message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body<R = EventId> {
    Message {
        text: Text,
        #[serde(default, skip_serializing_if = "MessageKind::is_text")]
        kind: MessageKind,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<Attachment>,
        #[serde(default = "none", skip_serializing_if = "Option::is_none")]
        reply_to: Option<R>,
        /// The root message of the thread this message belongs to.
        #[serde(default = "none", skip_serializing_if = "Option::is_none")]
        thread: Option<R>,
        /// Who the message mentions (pings).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<Mention>,
    },
    Edit {
        target: R,
        text: Text,
    },
    Retract {
        target: R,
        /// Taken back by someone the network itself says may moderate
        /// (a MUC moderator's XEP-0425 retraction, a Matrix redaction by a
        /// user with the room's `redact` power): not only its sender's.
        /// Set by bridges only, never read from a payload.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        moderated: bool,
    },
    Reaction {
        target: R,
        key: String,
        #[serde(default)]
        removed: bool,
    },
    Presence {
        show: Show,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    Typing {
        active: bool,
    },
    Membership(Membership),
    Topic {
        text: String,
    },
    /// The sender has seen everything up to `target` (a read receipt, a
    /// displayed marker).
    Read {
        target: R,
    },
}

fn none<R>() -> Option<R> {
    None
}

impl<R> Body<R> {
    /// What follows `word` when this is a command: a message (not a
    /// notice, which bots write) whose text starts with `word` (`!agenda`)
    /// followed by a space or nothing.
    pub fn command(&self, word: &str) -> Option<&str> {
        let Body::Message { text, kind, .. } = self else { return None };
        if *kind == MessageKind::Notice {
            return None;
        }
        let rest = text.plain.trim_start().strip_prefix(word)?;
        (rest.is_empty() || rest.starts_with(char::is_whitespace)).then_some(rest)
    }

    /// A plain text message with no references.
    pub fn text(plain: impl Into<String>) -> Self {
        Body::text_replying(plain, None)
    }

    /// A plain text message answering `reply_to`, if given.
    pub fn text_replying(plain: impl Into<String>, reply_to: Option<R>) -> Self {
        Body::Message {
            text: Text::plain(plain),
            kind: MessageKind::Text,
            attachments: Vec::new(),
            reply_to,
            thread: None,
            mentions: Vec::new(),
        }
    }

    /// A message of `kind` with no files and no references.
    pub fn message(text: Text, kind: MessageKind) -> Self {
        Body::Message { text, kind, attachments: Vec::new(), reply_to: None, thread: None, mentions: Vec::new() }
    }

    /// The name of the variant, as used in metrics, logs and the archive.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Message { .. } => "message",
            Body::Edit { .. } => "edit",
            Body::Retract { .. } => "retract",
            Body::Reaction { .. } => "reaction",
            Body::Presence { .. } => "presence",
            Body::Typing { .. } => "typing",
            Body::Membership(_) => "membership",
            Body::Topic { .. } => "topic",
            Body::Read { .. } => "read",
        }
    }

    /// Every reference this body carries, in a fixed order.
    /// Something said, or a change of it (message, edit, retraction,
    /// reaction): not presence, typing, membership or topic.
    pub fn is_said(&self) -> bool {
        matches!(self, Body::Message { .. } | Body::Edit { .. } | Body::Retract { .. } | Body::Reaction { .. })
    }

    pub fn refs(&self) -> Vec<&R> {
        match self {
            Body::Message { reply_to, thread, .. } => reply_to.iter().chain(thread.iter()).collect(),
            Body::Edit { target, .. } | Body::Retract { target, .. } | Body::Reaction { target, .. } | Body::Read { target } => {
                vec![target]
            }
            _ => Vec::new(),
        }
    }

    /// Translate every reference. Returns `None` when a *required* reference
    /// (the target of an edit, retraction, reaction or read marker) cannot be translated;
    /// an optional one (reply, thread) that cannot be translated is dropped.
    pub fn map_refs<S>(self, mut f: impl FnMut(R) -> Option<S>) -> Option<Body<S>> {
        Some(match self {
            Body::Message { text, kind, attachments, reply_to, thread, mentions } => {
                Body::Message { text, kind, attachments, reply_to: reply_to.and_then(&mut f), thread: thread.and_then(&mut f), mentions }
            }
            Body::Edit { target, text } => Body::Edit { target: f(target)?, text },
            Body::Retract { target, moderated } => Body::Retract { target: f(target)?, moderated },
            Body::Reaction { target, key, removed } => Body::Reaction { target: f(target)?, key, removed },
            Body::Presence { show, status } => Body::Presence { show, status },
            Body::Typing { active } => Body::Typing { active },
            Body::Membership(m) => Body::Membership(m),
            Body::Topic { text } => Body::Topic { text },
            Body::Read { target } => Body::Read { target: f(target)? },
        })
    }

    /// Ephemeral events are not worth a retry after a long outage: a typing
    /// notification from an hour ago is noise.
    pub fn is_ephemeral(&self) -> bool {
        matches!(self, Body::Typing { .. })
    }
}

/// Someone on a network, as that network names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSender {
    /// The network-native id (`alice@corp`, `@alice:corp`, an email address).
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

/// The sender of a stored event, resolved against the people directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// The network-native id on the origin bridge.
    pub id: String,
    /// The directory's person id, when the sender is a known person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    /// The display name every network shows.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

/// Where an event came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The bridge (the configured name, not the type).
    pub bridge: String,
    pub room: String,
    /// The origin network's id of the message, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
}

/// One normalized event, as archived (`R` = [`EventId`]) or as delivered to a
/// bridge (`R` = the target network's message id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event<R = EventId> {
    pub id: EventId,
    pub portal: String,
    pub origin: Origin,
    pub sender: Sender,
    /// When it happened on its network, in milliseconds since the epoch.
    pub at_ms: i64,
    pub body: Body<R>,
}

/// What a bridge hands the router: an event in its own network's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The bridge's room (MUC JID, Matrix room id, list address, endpoint name).
    pub room: String,
    pub sender: RemoteSender,
    /// The network's id for this message: the dedupe key, and what later
    /// replies and edits from this network refer to.
    pub remote_id: Option<String>,
    /// Other ids the network uses for the same message (XMPP: the sender's
    /// stanza id beside the group chat's stanza-id). Mapped like `remote_id`.
    pub aliases: Vec<String>,
    pub at_ms: Option<i64>,
    /// References are ids of the same network and room.
    pub body: Body<String>,
}

impl Body<String> {
    /// A message whose text is longer than `max_bytes` as numbered
    /// plain-text messages (`(1/3) …`, cut at paragraph or line breaks)
    /// with their part ids: `<id>`, `<id>.p2`, … The first keeps the files,
    /// the reply and the mentions; every part stays in the thread. Anything
    /// else, or a text that fits, is itself under `id`.
    pub fn in_parts(&self, id: &str, max_bytes: usize) -> Vec<(String, Body<String>)> {
        let Body::Message { text, kind, attachments, reply_to, thread, mentions } = self else {
            return vec![(id.to_string(), self.clone())];
        };
        if text.plain.len() <= max_bytes {
            return vec![(id.to_string(), self.clone())];
        }
        crate::text::numbered_parts(&text.plain, max_bytes)
            .into_iter()
            .enumerate()
            .map(|(i, plain)| {
                let first = i == 0;
                let part = Body::Message {
                    text: Text::plain(plain),
                    kind: *kind,
                    attachments: if first { attachments.clone() } else { Vec::new() },
                    reply_to: reply_to.clone().filter(|_| first),
                    thread: thread.clone(),
                    mentions: if first { mentions.clone() } else { Vec::new() },
                };
                (if first { id.to_string() } else { format!("{id}.p{}", i + 1) }, part)
            })
            .collect()
    }

    /// The same message without its HTML (what is split is the plain text).
    pub fn plain_only(&self) -> Body<String> {
        match self {
            Body::Message { text, kind, attachments, reply_to, thread, mentions } => Body::Message {
                text: Text::plain(text.plain.clone()),
                kind: *kind,
                attachments: attachments.clone(),
                reply_to: reply_to.clone(),
                thread: thread.clone(),
                mentions: mentions.clone(),
            },
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_message_in_parts_keeps_its_files_and_reply_on_the_first() {
        let long: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let body: Body = Body::Message {
            text: Text { plain: long.clone(), html: Some("<p>x</p>".into()) },
            kind: MessageKind::Text,
            attachments: vec![Attachment { url: "https://f/a".into(), name: None, mime: None, size: None }],
            reply_to: Some("r".into()),
            thread: Some("t".into()),
            mentions: vec!["m".into()],
        };
        assert_eq!(body.in_parts("d", 10_000).len(), 1);
        let parts = body.plain_only().in_parts("d", 300);
        assert!(parts.len() > 3);
        assert_eq!(parts[0].0, "d");
        assert_eq!(parts[1].0, "d.p2");
        let Body::Message { attachments, reply_to, thread, .. } = &parts[0].1 else { panic!() };
        assert_eq!((attachments.len(), reply_to.as_deref(), thread.as_deref()), (1, Some("r"), Some("t")));
        let Body::Message { attachments, reply_to, thread, text, .. } = &parts[1].1 else { panic!() };
        assert_eq!((attachments.len(), reply_to.as_deref(), thread.as_deref(), text.html.as_deref()), (0, None, Some("t"), None));
        let joined: String = parts
            .iter()
            .map(|(_, b)| match b {
                Body::Message { text, .. } => text.plain.split_once(") ").unwrap().1.trim_end().to_string() + "\n",
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(joined, long);
        assert_eq!(Body::<String>::Typing { active: true }.in_parts("d", 1).len(), 1);
    }

    use super::*;

    #[test]
    fn body_round_trips_through_json() {
        let body: Body = Body::Message {
            text: Text { plain: "hi".into(), html: Some("<b>hi</b>".into()) },
            kind: MessageKind::Emote,
            attachments: vec![Attachment { url: "https://x/y.png".into(), name: None, mime: None, size: Some(3) }],
            reply_to: Some("e1".into()),
            thread: None,
            mentions: vec!["alice".into()],
        };
        let json = serde_json::to_string(&body).unwrap();
        assert!(json.contains(r#""type":"message""#), "{json}");
        let back: Body = serde_json::from_str(&json).unwrap();
        assert_eq!(back, body);
        let m: Body = Body::Membership(Membership::Nick { name: "Al".into() });
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Body>(&json).unwrap(), m);
    }

    #[test]
    fn map_refs_drops_optional_and_rejects_required() {
        let reply: Body<String> = Body::Message {
            text: Text::plain("x"),
            kind: MessageKind::Text,
            attachments: vec![],
            reply_to: Some("unknown".into()),
            thread: Some("root".into()),
            mentions: vec![],
        };
        let mapped = reply.map_refs(|r| (r == "root").then(|| "ROOT".to_string())).unwrap();
        assert_eq!(mapped.refs(), vec![&"ROOT".to_string()]);
        let edit: Body<String> = Body::Edit { target: "unknown".into(), text: Text::plain("y") };
        assert!(edit.map_refs(|_| None::<String>).is_none());
    }

    #[test]
    fn presence_orders_by_availability() {
        assert!(Show::Online < Show::Away);
        assert_eq!([Show::Xa, Show::Dnd, Show::Offline].into_iter().min(), Some(Show::Dnd));
    }
}

#[cfg(test)]
mod mention_tests {
    use super::*;

    #[test]
    fn mentions_read_as_objects_or_as_who_alone() {
        let ms: Vec<Mention> =
            serde_json::from_str(r#"["alice", {"who": "matrix:@bob:m.test", "text": "Bob"}, {"who": "@room"}]"#).unwrap();
        assert_eq!(ms[0], Mention::new("alice", None));
        assert_eq!(ms[1], Mention::new("matrix:@bob:m.test", Some("Bob".into())));
        assert!(ms[2].is_room() && ms[2].recipient().is_none());
        assert_eq!(ms[1].recipient(), Some(crate::Recipient::Account { bridge: "matrix".into(), id: "@bob:m.test".into() }));
        assert_eq!(serde_json::to_string(&ms[0]).unwrap(), r#"{"who":"alice"}"#);
        for hostile in [r#"[1]"#, r#"[{"text": "x"}]"#, r#"[null]"#, r#"[["a"]]"#] {
            assert!(serde_json::from_str::<Vec<Mention>>(hostile).is_err(), "{hostile}");
        }
    }

    #[test]
    fn each_network_puts_its_own_name_where_the_text_names_someone() {
        let alice = Mention::new("alice", Some("Alice Liddell".into()));
        let bob = Mention::new("bob", Some("Bob".into()));
        let nick = |m: &Mention| Some(if m.who == "alice" { "al".to_string() } else { "bobby".to_string() });
        let (text, at) = rename_mentions("Alice Liddell: look, Bob", &[alice.clone(), bob.clone()], nick);
        assert_eq!(text, "al: look, bobby");
        assert_eq!(at.iter().map(|(r, m)| (&text[r.clone()], m.who.as_str())).collect::<Vec<_>>(), [("al", "alice"), ("bobby", "bob")]);
        // Not named in the text: put before it.
        let (text, at) = rename_mentions("look at this", &[Mention::new("alice", None), bob.clone()], nick);
        assert_eq!(text, "al, bobby: look at this");
        assert_eq!(at.iter().map(|(r, _)| &text[r.clone()]).collect::<Vec<_>>(), ["al", "bobby"]);
        // Named already as this network names them; nobody without a name; the room is no one.
        let (text, at) = rename_mentions("al: hi", &[Mention::new("alice", None)], nick);
        assert_eq!((text.as_str(), at.len()), ("al: hi", 1));
        let (text, at) = rename_mentions("hi", &[alice.clone(), Mention::new(Mention::ROOM, None)], |_| None);
        assert_eq!((text.as_str(), at.len()), ("hi", 0));
        // Names that hold each other or repeat are each placed once.
        let (text, _) = rename_mentions("Bob and Bob", &[bob.clone(), bob], nick);
        assert_eq!(text, "bobby and bobby");
        let long = Mention::new("x", Some("é".into()));
        let (text, at) = rename_mentions("café é", &[long], |_| Some("Ünïcode".into()));
        assert_eq!(text, "café Ünïcode", "only where it is a word of its own");
        assert_eq!(&text[at[0].0.clone()], "Ünïcode");
    }
}
