//! Pure conversions between stanzas and events, with no connection and no
//! state: a message's payloads as an event, and the stanzas an event goes
//! out as. Everything here is tested against hand-made and hostile stanzas.

use causeway_core::{Attachment, Body, DeliveryError, Incoming, MessageKind, RemoteSender, Text};
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;
use tokio_xmpp::parsers::message::{Id, Lang, Message, MessageType, Thread};

use crate::ns::{NS_CHATSTATES, NS_CORRECT, NS_MARKERS, NS_MUC_USER, NS_OOB, NS_REACTIONS, NS_REPLY, NS_RETRACT, NS_SID, NS_STANZAS};
use crate::stanzas::{self, Fallback, Malformed, Reply, Retract};
use crate::styling;
use tokio_xmpp::parsers::chatstates::ChatState;
use tokio_xmpp::parsers::displayed_markers::{Displayed, Markable};
use tokio_xmpp::parsers::message_correct::Replace;
use tokio_xmpp::parsers::muc::user::MucUser;
use tokio_xmpp::parsers::oob::Oob;
use tokio_xmpp::parsers::reactions::{Reaction, Reactions};
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::parsers::stanza_id::StanzaId;

// Stanza → event.

pub(crate) fn child<'a>(payloads: &'a [Element], name: &str, ns: &str) -> Option<&'a Element> {
    payloads.iter().find(|e| e.is(name, ns))
}

/// The id a room (or server) `by` gave the message (XEP-0359 `<stanza-id/>`,
/// typed by xmpp-parsers); with `by` `None`, the first one's. Ids that are
/// empty or longer than 256 bytes are not ids.
pub(crate) fn stanza_id(payloads: &[Element], by: Option<&str>) -> Option<String> {
    payloads
        .iter()
        .filter(|e| e.is("stanza-id", NS_SID))
        .filter_map(|e| StanzaId::try_from(e.clone()).ok())
        .find(|s| by.is_none_or(|b| s.by.as_str() == b))
        .map(|s| s.id)
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// The muc#user part of a room's presence (XEP-0045 §17.2.3), typed by
/// xmpp-parsers. A child it cannot read (a status code defined after it, an
/// item without its affiliation) is left out, not a reason to lose the
/// statuses and items that are fine; `None` when there is no such part.
pub(crate) fn muc_user(payloads: &[Element]) -> Option<MucUser> {
    let x = child(payloads, "x", NS_MUC_USER)?;
    if let Ok(user) = MucUser::try_from(x.clone()) {
        return Some(user);
    }
    let alone = |c: &Element| Element::builder("x", NS_MUC_USER).append(c.clone()).build();
    let readable = x.children().filter(|c| MucUser::try_from(alone(c)).is_ok()).cloned();
    let mut kept = Element::builder("x", NS_MUC_USER).build();
    for c in readable {
        kept.append_child(c);
    }
    MucUser::try_from(kept).ok()
}

/// The defined condition (RFC 6120 §8.3.3) of the `<error/>` among
/// `payloads`, typed by xmpp-parsers; `undefined-condition` where there is
/// none or it does not parse.
pub(crate) fn condition(payloads: &[Element]) -> DefinedCondition {
    payloads
        .iter()
        .filter(|e| e.name() == "error")
        .flat_map(|e| e.children())
        .filter(|c| c.ns() == NS_STANZAS && c.name() != "text")
        .find_map(|c| DefinedCondition::try_from(c.clone()).ok())
        .unwrap_or(DefinedCondition::UndefinedCondition)
}

/// A condition's name on the wire (`conflict`, `forbidden`, …).
pub(crate) fn condition_name(c: &DefinedCondition) -> String {
    Element::from(c).name().to_string()
}

/// Why a ghost could not join a room.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub(crate) enum JoinError {
    /// The nick is taken in the room: try another.
    #[error("the nick is taken")]
    Conflict,
    /// The connection went before the room answered: try again later.
    #[error("disconnected from the XMPP server")]
    Disconnected,
    /// The room refused (`forbidden`, `registration-required`, …).
    #[error("the room refused: {}", condition_name(.0))]
    Refused(DefinedCondition),
}

impl JoinError {
    /// The answer of a room to a join that came back as an error presence.
    pub(crate) fn of(payloads: &[Element]) -> JoinError {
        match condition(payloads) {
            DefinedCondition::Conflict => JoinError::Conflict,
            other => JoinError::Refused(other),
        }
    }
}

pub(crate) fn styled(plain: String) -> Text {
    let html = styling::to_html(&plain);
    Text { plain, html }
}

/// A message's payloads as an event of `sender` in `room`. Its id there is
/// `stanza_id` (a group chat's) when given, else the sender's own `id`.
pub(crate) fn parse_message(
    room: &str,
    sender: RemoteSender,
    stanza_id: Option<String>,
    id: Option<String>,
    body_text: Option<String>,
    m: Message,
) -> Result<Option<Incoming>, Malformed> {
    let p = &m.payloads;
    // Threads in group chats only (see `threads`).
    let thread = if m.type_ == MessageType::Groupchat { crate::threads::read(&m) } else { None };
    let said = body_text.as_deref().is_some_and(|b| !b.trim().is_empty());
    // A marker alone (one that came with a message leaves the message whole).
    let body = if let Some(d) = child(p, "displayed", NS_MARKERS).filter(|_| !said) {
        let d = Displayed::try_from(d.clone()).map_err(|e| refused("a displayed marker", e))?;
        let target =
            Some(d.id.0).filter(|t| !t.is_empty() && t.len() <= 256).ok_or(Malformed::Incomplete("a displayed marker without an id"))?;
        Body::Read { target }
    } else if let Some(r) = stanzas::find(p, Retract::parse) {
        Body::Retract { target: r?.id, moderated: false }
    } else if let Some(reactions) = child(p, "reactions", NS_REACTIONS) {
        let reactions = Reactions::try_from(reactions.clone()).map_err(|e| refused("reactions", e))?;
        let target = Some(reactions.id).filter(|t| !t.is_empty()).ok_or(Malformed::Incomplete("reactions without an id"))?;
        let keys = reactions.reactions.into_iter().map(|r| r.emoji).filter(|k| !k.is_empty() && k.len() <= 64);
        match keys.into_iter().next() {
            Some(key) => Body::Reaction { target, key, removed: false },
            // An empty set takes this person's reactions back; we do not know which.
            None => return Ok(None),
        }
    } else if let Some(replace) = child(p, "replace", NS_CORRECT) {
        let replace = Replace::try_from(replace.clone()).map_err(|e| refused("a correction", e))?;
        let text = body_text.ok_or(Malformed::Incomplete("a correction without a body"))?;
        Body::Edit { target: replace.id.0, text: styled(text) }
    } else if let Some(text) = body_text {
        let reply = stanzas::find(p, Reply::parse).transpose()?;
        let mut text = text;
        if reply.is_some() {
            for f in p.iter().filter_map(Fallback::parse) {
                let f = f?;
                if f.for_ns == NS_REPLY {
                    text = f.strip(&text);
                }
            }
        }
        let mut attachments = Vec::new();
        // Links that do not parse as XEP-0066 are not files (the text keeps them).
        for Oob { url, desc } in p.iter().filter(|e| e.is("x", NS_OOB)).filter_map(|x| Oob::try_from(x.clone()).ok()) {
            if url.starts_with("https://") || url.starts_with("http://") {
                let name = desc.filter(|d| !d.is_empty());
                if text.trim() == url {
                    text.clear();
                }
                attachments.push(Attachment { url, name, mime: None, size: None });
            }
        }
        let (kind, text) = match text.strip_prefix("/me ") {
            Some(rest) => (MessageKind::Emote, rest.to_string()),
            None => (MessageKind::Text, text),
        };
        if text.trim().is_empty() && attachments.is_empty() {
            return Ok(None);
        }
        Body::Message { text: styled(text), kind, attachments, reply_to: reply.map(|r| r.id), thread, mentions: Vec::new() }
    } else if let Some(state) = p.iter().filter(|e| e.ns() == NS_CHATSTATES).find_map(|e| ChatState::try_from(e.clone()).ok()) {
        Body::Typing { active: state == ChatState::Composing }
    } else {
        return Ok(None);
    };
    let remote_id = stanza_id.clone().or_else(|| id.clone());
    let aliases = match (&stanza_id, id) {
        (Some(_), Some(id)) => vec![id],
        _ => Vec::new(),
    };
    Ok(Some(Incoming { room: room.to_string(), sender, remote_id, aliases, at_ms: None, body }))
}

fn refused(element: &'static str, e: impl std::fmt::Display) -> Malformed {
    Malformed::Refused { element, reason: e.to_string() }
}

// Event → stanza.

/// A chat message (one to one) from a ghost.
pub(crate) fn chat(from: &FullJid, to: &BareJid, id: &str) -> Message {
    let mut m = Message::new_with_type(MessageType::Chat, Some(to.clone().into()));
    m.from = Some(from.clone().into());
    m.id = Some(Id(id.to_string()));
    m
}

pub(crate) fn groupchat(from: &FullJid, room: &str, id: &str) -> Result<Message, DeliveryError> {
    let to = Jid::new(room).map_err(|e| DeliveryError::permanent(format!("room {room:?}: {e}")))?;
    let mut m = Message::new_with_type(MessageType::Groupchat, Some(to));
    m.from = Some(from.clone().into());
    m.id = Some(Id(id.to_string()));
    Ok(m)
}

pub(crate) fn with_body(mut m: Message, body: String) -> Message {
    m.bodies.insert(Lang::new(), body);
    m
}

/// An out-of-band link (XEP-0066) to a file.
pub(crate) fn oob(url: &str, name: Option<&str>) -> Element {
    Element::from(Oob { url: url.to_string(), desc: name.map(str::to_string) })
}

/// `m` carrying `body`, as delivery `id` (its origin-id, with Causeway's
/// relay mark): `urls` are where the body's attachments are, in their
/// order (copied to the upload service, or the links themselves), and
/// `correction` the id a correction refers to (the sender's own stanza id;
/// the target itself when not given), and `thread` the id of the thread a
/// message in a thread goes under (its root's id when not given).
pub(crate) fn fill(
    mut m: Message,
    id: &str,
    body: &Body<String>,
    urls: &[String],
    correction: Option<String>,
    thread: Option<String>,
) -> Result<Message, DeliveryError> {
    m.payloads.push(Element::builder("origin-id", NS_SID).attr(xml_ncname!("id").into(), id).build());
    m.payloads.push(crate::stanzas::relay_mark());
    Ok(match body {
        Body::Message { text, kind, attachments, reply_to, thread: root, .. } => {
            let mut plain = match &text.html {
                Some(html) => styling::from_html(html),
                None => text.plain.clone(),
            };
            if *kind == MessageKind::Emote {
                plain = format!("/me {plain}");
            }
            for (a, url) in attachments.iter().zip(urls) {
                m.payloads.push(oob(url, a.name.as_deref()));
                if !plain.is_empty() {
                    plain.push('\n');
                }
                plain.push_str(url);
            }
            // In a thread: its id, and for clients that show no threads a
            // reply to the root where the message answers nothing else.
            if let Some(target) = reply_to.as_ref().or(root.as_ref()) {
                m.payloads.push(Reply { id: target.clone(), to: None }.to_element());
            }
            if let Some(root) = root {
                m.thread = Some(Thread { parent: None, id: thread.unwrap_or_else(|| root.clone()) });
            }
            if m.type_ == MessageType::Chat {
                // So that the person's client says when they have seen it.
                m.payloads.push(Markable.into());
            }
            with_body(m, plain)
        }
        Body::Edit { target, text } => {
            let plain = match &text.html {
                Some(html) => styling::from_html(html),
                None => text.plain.clone(),
            };
            let original = correction.unwrap_or_else(|| target.clone());
            m.payloads.push(Replace { id: Id(original) }.into());
            with_body(m, plain)
        }
        Body::Retract { target, .. } => {
            m.payloads.push(Retract { id: target.clone() }.to_element());
            let notice = "This person took back a previous message; your client does not show retractions.";
            m.payloads.push(Fallback { for_ns: NS_RETRACT.into(), ranges: vec![None] }.to_element());
            with_body(m, notice.into())
        }
        Body::Reaction { target, key, removed } => {
            let reactions = if *removed { Vec::new() } else { vec![Reaction { emoji: key.clone() }] };
            m.payloads.push(Reactions { id: target.clone(), reactions }.into());
            // Reactions carry no body; a store hint keeps them in the room's archive.
            m.payloads.push(Element::builder("store", "urn:xmpp:hints").build());
            m
        }
        Body::Read { target } => {
            m.payloads.push(Displayed { id: Id(target.clone()) }.into());
            m
        }
        other => return Err(DeliveryError::permanent(format!("{} is not sent as a message", other.kind()))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muc_user_parts_are_typed_and_what_cannot_be_read_is_left_out() {
        use tokio_xmpp::parsers::muc::user::Status;
        let x = |inner: &str| -> Vec<Element> {
            vec![format!("<x xmlns='http://jabber.org/protocol/muc#user'>{inner}</x>").parse::<Element>().unwrap()]
        };
        let u = muc_user(&x(
            "<item affiliation='member' role='participant' jid='alice@x.test/phone' nick='al'/><status code='110'/><status code='303'/>",
        ))
        .unwrap();
        assert_eq!(u.status, [Status::SelfPresence, Status::NewNick]);
        assert_eq!(u.items[0].jid.as_ref().map(|j| j.to_string()).as_deref(), Some("alice@x.test/phone"));
        assert_eq!(u.items[0].nick.as_deref(), Some("al"));
        assert_eq!(muc_user(&[Element::from(u.clone())]), Some(u), "round trip");

        let u = muc_user(&x("<status code='999'/><status code='110'/>")).unwrap();
        assert_eq!(u.status, [Status::SelfPresence], "a code defined later does not hide the others");
        let u = muc_user(&x("<item role='participant' jid='mallory@x.test/a'/><status code='110'/>")).unwrap();
        assert!(u.items.is_empty(), "an item without its affiliation is no item");
        assert_eq!(u.status, [Status::SelfPresence]);
        let u = muc_user(&x("<item affiliation='none' role='participant' jid='not a jid@@'/>")).unwrap();
        assert!(u.items.is_empty(), "nor one naming no JID");
        assert_eq!(muc_user(&x("")), Some(MucUser::default()));
        assert_eq!(muc_user(&[]), None);
        let elsewhere: Vec<Element> = vec!["<x xmlns='jabber:x:other'><status code='110'/></x>".parse().unwrap()];
        assert_eq!(muc_user(&elsewhere), None, "only muc#user says who is who");
    }

    #[test]
    fn stanza_ids_are_read_from_whoever_gave_them() {
        let sid = |by: &str, id: &str| -> Element { format!("<stanza-id xmlns='urn:xmpp:sid:0' by='{by}' id='{id}'/>").parse().unwrap() };
        let forged = sid("ops@conference.evil.test", "forged");
        let real = sid("ops@conference.x.test", "s-1");
        let p = vec![forged.clone(), real.clone()];
        assert_eq!(stanza_id(&p, Some("ops@conference.x.test")).as_deref(), Some("s-1"), "the room's, not a sender's");
        assert_eq!(stanza_id(&p, Some("other@conference.x.test")), None);
        assert_eq!(stanza_id(&p, None).as_deref(), Some("forged"), "without a `by`, the first");
        let without_by: Element = "<stanza-id xmlns='urn:xmpp:sid:0' id='x'/>".parse().unwrap();
        assert_eq!(stanza_id(&[without_by, real.clone()], None).as_deref(), Some("s-1"), "one without `by` is no stanza-id");
        assert_eq!(stanza_id(&[sid("ops@conference.x.test", "")], None), None);
        assert_eq!(stanza_id(&[sid("ops@conference.x.test", &"a".repeat(257))], None), None);
    }

    #[test]
    fn a_join_refusal_is_typed_from_the_error_condition() {
        let error = |inner: &str| -> Vec<Element> {
            vec![format!("<error xmlns='jabber:client' type='cancel'>{inner}</error>").parse::<Element>().unwrap()]
        };
        let stanzas = "urn:ietf:params:xml:ns:xmpp-stanzas";
        assert_eq!(JoinError::of(&error(&format!("<conflict xmlns='{stanzas}'/>"))), JoinError::Conflict);
        let refused = JoinError::of(&error(&format!("<text xmlns='{stanzas}'>go away</text><forbidden xmlns='{stanzas}'/>")));
        assert_eq!(refused, JoinError::Refused(DefinedCondition::Forbidden));
        assert_eq!(refused.to_string(), "the room refused: forbidden");
        // Hostile or broken: no condition, an unknown one, the wrong namespace, no error at all.
        for inner in ["", "<made-up xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>", "<conflict xmlns='urn:example'/>"] {
            assert_eq!(JoinError::of(&error(inner)), JoinError::Refused(DefinedCondition::UndefinedCondition), "{inner:?}");
        }
        assert_eq!(condition(&[]), DefinedCondition::UndefinedCondition);
        assert_eq!(condition_name(&DefinedCondition::RemoteServerTimeout), "remote-server-timeout");
    }
    use causeway_core::Text;

    fn from() -> FullJid {
        "ghost@bridge.x/causeway".parse().unwrap()
    }

    fn to() -> BareJid {
        "alice@x".parse().unwrap()
    }

    fn someone() -> RemoteSender {
        RemoteSender { id: "alice@x".into(), name: Some("Alice".into()), avatar: None }
    }

    /// An incoming message with `payloads` and, where given, a body.
    fn stanza(body: Option<&str>, payloads: Vec<Element>) -> Message {
        let mut m = chat(&from(), &to(), "m-1");
        if let Some(b) = body {
            m = with_body(m, b.to_string());
        }
        m.payloads = payloads;
        m
    }

    fn parse(m: Message) -> Result<Option<Incoming>, Malformed> {
        let text = m.get_best_body_cloned(vec![]).map(|(_, b)| b);
        parse_message("room", someone(), None, Some("m-1".into()), text, m)
    }

    /// What an event goes out as, read back as it would come in.
    fn round_trip(body: Body<String>, urls: &[&str]) -> Option<Body> {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        let m = fill(chat(&from(), &to(), "d-1"), "d-1", &body, &urls, None, None).unwrap();
        assert!(m.payloads.iter().any(|e| e.is("origin-id", NS_SID) && e.attr("id") == Some("d-1")));
        assert!(m.payloads.contains(&stanzas::relay_mark()), "marked as relayed");
        parse(m).unwrap().map(|i| i.body)
    }

    fn said(text: &str, kind: MessageKind, reply_to: Option<&str>, attachments: Vec<Attachment>) -> Body<String> {
        let text = Text::plain(text);
        Body::Message { text, kind, attachments, reply_to: reply_to.map(str::to_string), thread: None, mentions: Vec::new() }
    }

    fn plain_of(body: &Body) -> &str {
        match body {
            Body::Message { text, .. } | Body::Edit { text, .. } => &text.plain,
            other => panic!("no text: {other:?}"),
        }
    }

    #[test]
    fn what_goes_out_comes_back_as_it_went() {
        let back = round_trip(Body::text("hello *world*"), &[]).unwrap();
        assert_eq!(plain_of(&back), "hello *world*");
        let Body::Message { text, .. } = &back else { unreachable!() };
        assert!(text.html.as_deref().is_some_and(|h| h.contains("<strong>world</strong>")), "styling read as emphasis");

        let emote = said("waves", MessageKind::Emote, None, Vec::new());
        assert!(matches!(round_trip(emote, &[]), Some(Body::Message { kind: MessageKind::Emote, ref text, .. }) if text.plain == "waves"));

        let reply = said("yes", MessageKind::Text, Some("e-0"), Vec::new());
        assert!(matches!(round_trip(reply, &[]), Some(Body::Message { reply_to: Some(ref r), .. }) if r == "e-0"));

        let file = Attachment { url: "https://files.x/cat.png".into(), name: Some("cat.png".into()), mime: None, size: None };
        let with_file = said("", MessageKind::Text, None, vec![file]);
        let Some(Body::Message { attachments, text, .. }) = round_trip(with_file, &["https://upload.x/cat.png"]) else { panic!() };
        assert_eq!(attachments.len(), 1);
        assert_eq!(attachments[0].url, "https://upload.x/cat.png", "where it was copied to");
        assert_eq!(attachments[0].name.as_deref(), Some("cat.png"));
        assert_eq!(text.plain, "", "the link is the file, not a text");

        let edit = Body::Edit { target: "e-1".to_string(), text: Text::plain("fixed") };
        assert!(matches!(round_trip(edit, &[]), Some(Body::Edit { ref target, .. }) if target == "e-1"));

        let reaction = Body::Reaction { target: "e-1".to_string(), key: "👍".into(), removed: false };
        assert_eq!(round_trip(reaction, &[]), Some(Body::Reaction { target: "e-1".into(), key: "👍".into(), removed: false }));
        let removed = Body::Reaction { target: "e-1".to_string(), key: "👍".into(), removed: true };
        assert_eq!(round_trip(removed, &[]), None, "an empty set: which reaction went is not known");

        let retract = Body::Retract { target: "e-1".to_string(), moderated: false };
        assert_eq!(round_trip(retract, &[]), Some(Body::Retract { target: "e-1".into(), moderated: false }));

        let typing = Body::Typing { active: true };
        assert!(fill(chat(&from(), &to(), "d"), "d", &typing, &[], None, None).is_err(), "typing is not a message");

        let read = Body::Read { target: "e-1".to_string() };
        assert_eq!(round_trip(read, &[]), Some(Body::Read { target: "e-1".into() }));
    }

    #[test]
    fn messages_to_people_are_markable_and_markers_are_read_only_alone() {
        let m = fill(chat(&from(), &to(), "d"), "d", &Body::text("hi"), &[], None, None).unwrap();
        assert!(m.payloads.iter().any(|e| e.is("markable", NS_MARKERS)), "a chat message asks to be marked");
        let mut g = chat(&from(), &to(), "d");
        g.type_ = MessageType::Groupchat;
        let g = fill(g, "d", &Body::text("hi"), &[], None, None).unwrap();
        assert!(!g.payloads.iter().any(|e| e.is("markable", NS_MARKERS)), "not in a group chat");

        let displayed = |id: Option<&str>| {
            let mut d = Element::builder("displayed", NS_MARKERS);
            if let Some(id) = id {
                d = d.attr(xml_ncname!("id").into(), id);
            }
            d.build()
        };
        assert!(matches!(parse(stanza(None, vec![displayed(None)])), Err(Malformed::Refused { .. })), "a marker of no message");
        assert_eq!(parse(stanza(None, vec![displayed(Some(""))])), Err(Malformed::Incomplete("a displayed marker without an id")));
        let long = "x".repeat(257);
        assert_eq!(parse(stanza(None, vec![displayed(Some(&long))])), Err(Malformed::Incomplete("a displayed marker without an id")));
        // A message that also marks another: the message is what counts.
        let both = parse(stanza(Some("and also"), vec![displayed(Some("e-1"))])).unwrap().unwrap();
        assert_eq!(plain_of(&both.body), "and also");
    }

    #[test]
    fn a_message_in_a_thread_carries_its_id_and_a_reply_to_the_root() {
        let in_thread = |reply_to: Option<&str>| Body::Message {
            text: Text::plain("in the thread"),
            kind: MessageKind::Text,
            attachments: vec![],
            reply_to: reply_to.map(str::to_string),
            thread: Some("root-sid".into()),
            mentions: vec![],
        };
        let out = |body: &Body<String>, id: Option<&str>| {
            groupchat(&from(), "ops@conference.x", "d").and_then(|m| fill(m, "d", body, &[], None, id.map(str::to_string))).unwrap()
        };
        let reply_of = |m: &Message| m.payloads.iter().find_map(Reply::parse).map(|r| r.unwrap().id);
        let m = out(&in_thread(None), None);
        assert_eq!(m.thread.as_ref().map(|t| t.id.as_str()), Some("root-sid"), "named after its root");
        assert_eq!(reply_of(&m).as_deref(), Some("root-sid"), "a reply to the root for clients without threads");
        let m = out(&in_thread(Some("other")), Some("client-thread"));
        assert_eq!(m.thread.as_ref().map(|t| t.id.as_str()), Some("client-thread"), "the id its opener gave it");
        assert_eq!(reply_of(&m).as_deref(), Some("other"), "its own reply first");
        // Read back in the room: the thread id; in a chat: none.
        let text = m.get_best_body_cloned(vec![]).map(|(_, b)| b);
        let back = parse_message("ops@conference.x", someone(), Some("s-2".into()), None, text.clone(), m.clone()).unwrap().unwrap();
        assert!(matches!(back.body, Body::Message { thread: Some(ref t), .. } if t == "client-thread"));
        let mut chat_msg = m;
        chat_msg.type_ = MessageType::Chat;
        let back = parse_message("ops@conference.x", someone(), None, Some("d".into()), text, chat_msg).unwrap().unwrap();
        assert!(matches!(back.body, Body::Message { thread: None, .. }), "one-to-one chats are not threaded");
        let plain = out(&said("no thread", MessageKind::Text, None, vec![]), None);
        assert!(plain.thread.is_none() && reply_of(&plain).is_none());
    }

    #[test]
    fn a_correction_names_the_id_it_was_given() {
        let edit = Body::Edit { target: "stanza-id".to_string(), text: Text::plain("fixed") };
        let m = fill(chat(&from(), &to(), "d"), "d", &edit, &[], Some("origin-id".into()), None).unwrap();
        assert!(m.payloads.iter().any(|e| e.is("replace", NS_CORRECT) && e.attr("id") == Some("origin-id")));
    }

    #[test]
    fn malformed_and_hostile_messages_are_refused_or_dropped() {
        let reactions = |id: Option<&str>, key: &str| {
            let mut r = Element::builder("reactions", NS_REACTIONS);
            if let Some(id) = id {
                r = r.attr(xml_ncname!("id").into(), id);
            }
            r.append(Element::builder("reaction", NS_REACTIONS).append(key).build()).build()
        };
        let refused = |m: Message, element: &str| match parse(m) {
            Err(Malformed::Refused { element: e, .. }) => assert_eq!(e, element),
            other => panic!("{element}: {other:?}"),
        };
        refused(stanza(None, vec![reactions(None, "👍")]), "reactions");
        assert_eq!(parse(stanza(None, vec![reactions(Some(""), "👍")])), Err(Malformed::Incomplete("reactions without an id")));
        assert_eq!(parse(stanza(None, vec![reactions(Some("e"), &"x".repeat(65))])).unwrap(), None, "no key that long");

        let replace = Element::builder("replace", NS_CORRECT).attr(xml_ncname!("id").into(), "e").build();
        assert_eq!(parse(stanza(None, vec![replace])), Err(Malformed::Incomplete("a correction without a body")));

        let link = |url: &str| Element::builder("x", NS_OOB).append(Element::builder("url", NS_OOB).append(url).build()).build();
        let m = parse(stanza(Some("javascript:alert(1)"), vec![link("javascript:alert(1)")])).unwrap().unwrap();
        let Body::Message { attachments, text, .. } = m.body else { panic!() };
        assert!(attachments.is_empty(), "only http(s) links are files");
        assert_eq!(text.plain, "javascript:alert(1)", "and the text stays text");

        assert_eq!(parse(stanza(Some("  \n "), vec![])).unwrap(), None, "nothing said");
        assert_eq!(parse(stanza(None, vec![])).unwrap(), None);
        let bad_reply = Element::builder("reply", NS_REPLY).build();
        assert_eq!(
            parse(stanza(Some("hi"), vec![bad_reply])),
            Err(Malformed::Missing { element: "reply", attr: "id" }),
            "a reply to no id"
        );

        // Typed by xmpp-parsers: what does not parse as its XEP is refused, not guessed at.
        let reactions_without_id = Element::builder("reactions", NS_REACTIONS).build();
        refused(stanza(None, vec![reactions_without_id]), "reactions");
        let replace_without_id = Element::builder("replace", NS_CORRECT).build();
        refused(stanza(Some("fixed"), vec![replace_without_id]), "a correction");
        let oob_without_url = Element::builder("x", NS_OOB).build();
        let m = parse(stanza(Some("see"), vec![oob_without_url])).unwrap().unwrap();
        assert!(matches!(m.body, Body::Message { ref attachments, .. } if attachments.is_empty()), "a link to nothing is no file");
        let made_up_state = Element::builder("shouting", NS_CHATSTATES).build();
        assert_eq!(parse(stanza(None, vec![made_up_state])).unwrap(), None, "an unknown chat state is nothing");
    }

    #[test]
    fn replies_lose_their_quoted_fallback_and_ids_name_the_room_s_copy() {
        let quote = "> Bob: earlier\n";
        let fallback = Fallback { for_ns: NS_REPLY.into(), ranges: vec![Some((0, quote.chars().count()))] };
        let reply = Reply { id: "e-0".into(), to: None };
        let m = stanza(Some(&format!("{quote}yes")), vec![reply.to_element(), fallback.to_element()]);
        let i = parse(m).unwrap().unwrap();
        assert_eq!(plain_of(&i.body), "yes");

        let typing = Element::builder("composing", NS_CHATSTATES).build();
        let m = stanza(None, vec![typing]);
        let text = m.get_best_body_cloned(vec![]).map(|(_, b)| b);
        let i = parse_message("room", someone(), Some("sid-1".into()), Some("m-1".into()), text, m).unwrap().unwrap();
        assert_eq!(i.body, Body::Typing { active: true });
        assert_eq!((i.remote_id.as_deref(), i.aliases.as_slice()), (Some("sid-1"), ["m-1".to_string()].as_slice()), "the room's id first");
    }
}
