//! Events → XMPP stanzas, spoken by ghosts in the room.

use causeway_core::text::Oversize;
use causeway_core::{Body, Delivered, Delivery, DeliveryError, IdKind, Membership, MessageKind, Show, Text};
use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;
use tokio_xmpp::parsers::chatstates::ChatState;
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::parsers::presence::{Presence, Show as XShow, Type as PresenceType};

use crate::convert::{self, chat, groupchat, oob};
use crate::direct::DirectRoom;
use crate::ns::{NS_MUC, NS_PING};
use crate::stanzas::Moderated;
use crate::{Inner, RESOURCE, RequestError, Seat, ghost, occupant, styling};
use tokio_xmpp::parsers::stanza_error::DefinedCondition as Condition;

fn show(s: Show) -> Option<XShow> {
    match s {
        Show::Online | Show::Offline => None,
        Show::Away => Some(XShow::Away),
        Show::Xa => Some(XShow::Xa),
        Show::Dnd => Some(XShow::Dnd),
    }
}

/// The presence that joins `room` as `nick`, asking for up to `history`
/// old messages (of those since `since_ms`, when given).
pub fn join(
    from: &FullJid,
    room: &str,
    nick: &str,
    presence: Option<(Option<Show>, Option<String>)>,
    history: u32,
    since_ms: Option<i64>,
) -> Presence {
    let mut history = Element::builder("history", NS_MUC).attr(xml_ncname!("maxstanzas").into(), history.to_string());
    if let Some(since) = since_ms.and_then(|ms| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()) {
        let since = since.replace_nanosecond(0).unwrap_or(since);
        if let Ok(s) = since.format(&time::format_description::well_known::Rfc3339) {
            history = history.attr(xml_ncname!("since").into(), s);
        }
    }
    let history = history.build();
    let mut p = Presence::new(PresenceType::None).with_from(from.clone());
    if let Some(to) = occupant(room, nick) {
        p = p.with_to(to);
    }
    p.payloads.push(Element::builder("x", NS_MUC).append(history).build());
    p.payloads.push(crate::stanzas::relay_mark());
    if let Some((s, status)) = presence {
        p.show = s.and_then(show);
        if let Some(status) = status {
            p.statuses.insert(Lang::new(), status);
        }
    }
    p
}

/// The id to correct: corrections refer to the sender's own stanza id, not
/// the room's stanza-id that other references use.
async fn correction_target(inner: &Inner, room: &str, target: &str) -> String {
    let Some(ctx) = inner.ctx.get() else { return target.to_string() };
    let ids = ctx.ids_of(room, target).await.unwrap_or_default();
    ids.iter()
        .find(|(_, k)| *k == IdKind::Alias || *k == IdKind::DeliveryKey)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| target.to_string())
}

/// Whether the message `target` came into the portal from this room (so it
/// is a person's message there, not one of our ghosts').
async fn came_from_xmpp(inner: &Inner, room: &str, target: &str) -> bool {
    let Some(ctx) = inner.ctx.get() else { return false };
    let ids = ctx.ids_of(room, target).await.unwrap_or_default();
    ids.iter().any(|(_, k)| *k == IdKind::Origin || *k == IdKind::Alias)
}

/// Retract someone's message as the room's moderator (XEP-0425), in the
/// current protocol, or the earlier one where the room only knows that.
async fn moderate(inner: &Inner, room: &str, target: &str, by: &str) -> Result<(), DeliveryError> {
    let reason = format!("taken back by {by} on another network");
    let bot = inner.bot_jid();
    let mut last = String::new();
    for earlier in [false, true] {
        // Marked before asking: the announcement may come before the answer.
        inner.state().rooms.moderated.insert(target.to_string());
        let answer = inner.request(&bot, room, true, Moderated::request(target, &reason, earlier)).await;
        if answer.is_err() {
            inner.state().rooms.moderated.remove(target);
        }
        match answer {
            Ok(_) => return Ok(()),
            Err(RequestError::Refused(c @ (Condition::ServiceUnavailable | Condition::FeatureNotImplemented | Condition::BadRequest))) => {
                last = format!("{c:?}");
            }
            Err(RequestError::Refused(c)) => {
                return Err(DeliveryError::permanent(format!("cannot moderate in {room}: {c:?} (is the bridge a moderator there?)")));
            }
            Err(e @ RequestError::Lost(_)) => return Err(DeliveryError::transient(format!("moderation in {room}: {e}"))),
        }
    }
    Err(DeliveryError::permanent(format!("{room} does not support moderation (XEP-0425): {last}")))
}

/// One piece (over 80 lines): the ghost's seat and one arm per event kind
/// (message, edit, retraction, reaction, presence, typing, topic) that share
/// it.
pub(crate) async fn deliver(inner: &Inner, d: &Delivery) -> Result<Delivered, DeliveryError> {
    let room = d.room.as_str();
    let ghost = ghost::jid_of(&inner.options, inner.domain(), &d.event.sender, &d.event.origin.bridge)?;
    ghost::remember(inner, &ghost, &d.event.sender, &d.event.origin.bridge).await;
    let from = FullJid::new(&format!("{ghost}/{RESOURCE}")).map_err(|e| DeliveryError::permanent(e.to_string()))?;
    let name = &d.event.sender.name;
    match &d.event.body {
        Body::Presence { show: s, status } => {
            let key = (room.to_string(), ghost.to_string());
            if *s == Show::Offline {
                let seat = inner.state().ghost.seats.remove(&key);
                if let Some(seat) = seat {
                    inner.state().ghost.ghost_nicks.entry(room.to_string()).or_default().remove(&seat.nick);
                    let mut p = Presence::new(PresenceType::Unavailable).with_from(from.clone());
                    p.payloads.push(crate::stanzas::relay_mark());
                    if let Some(to) = occupant(room, &seat.nick) {
                        p = p.with_to(to);
                    }
                    inner.send(p);
                }
                return Ok(Delivered::default());
            }
            let nick = inner.seat(room, &ghost, name).await?;
            let presence = (Some(*s), status.clone());
            inner.send(join(&from, room, &nick, Some(presence.clone()), 0, None));
            if let Some(seat) = inner.state().ghost.seats.get_mut(&key) {
                seat.presence = Some(presence);
            }
            Ok(Delivered::default())
        }
        Body::Membership(Membership::Leave) => {
            let seat = inner.state().ghost.seats.remove(&(room.to_string(), ghost.to_string()));
            if let Some(Seat { nick, .. }) = seat {
                let mut p = Presence::new(PresenceType::Unavailable).with_from(from.clone());
                p.payloads.push(crate::stanzas::relay_mark());
                if let Some(to) = occupant(room, &nick) {
                    p = p.with_to(to);
                }
                inner.send(p);
            }
            Ok(Delivered::default())
        }
        Body::Membership(_) => {
            inner.seat(room, &ghost, name).await?;
            Ok(Delivered::default())
        }
        Body::Typing { active } => {
            inner.seat(room, &ghost, name).await?;
            let state = if *active { ChatState::Composing } else { ChatState::Active };
            let mut m = groupchat(&from, room, &d.id)?;
            m.payloads.push(state.into());
            inner.send(m);
            Ok(Delivered::default())
        }
        Body::Topic { text } => {
            inner.seat(room, &ghost, name).await?;
            let mut m = groupchat(&from, room, &d.id)?;
            m.subjects.insert(Lang::new(), text.clone());
            inner.send(m);
            Ok(Delivered::default())
        }
        Body::Read { .. } => {
            inner.seat(room, &ghost, name).await?;
            inner.send(message(inner, groupchat(&from, room, &d.id)?, &from, room, &d.id, &d.event.body).await?);
            Ok(Delivered::default())
        }
        Body::Retract { target, .. } if came_from_xmpp(inner, room, target).await => {
            // Not a ghost's message: only a moderator can take it back.
            moderate(inner, room, target, &d.event.sender.name).await?;
            Ok(Delivered::default())
        }
        body => {
            if let Some(sid) = inner.already_delivered(room, &d.id).await {
                return Ok(Delivered { remote_id: sid });
            }
            if d.maybe_sent
                && let Some(sid) = crate::archive::sent_before(inner, room, &d.id).await
            {
                return Ok(Delivered { remote_id: Some(sid) });
            }
            inner.seat(room, &ghost, name).await?;
            let (body, file) = match long_text_file(inner, &from, body).await {
                Some((short, url)) => (short, Some(url)),
                None => (body.clone(), None),
            };
            let mut first = None;
            for (pid, part) in parts(&d.id, &body) {
                // A part the room has already (a retry after a later part failed).
                let done = inner.state().sent.parts_sent.get(&pid).cloned();
                let earlier = match done {
                    Some(sid) => Some(sid),
                    None if pid != d.id && d.maybe_sent => crate::archive::sent_before(inner, room, &pid).await.map(Some),
                    None => None,
                };
                if let Some(sid) = earlier {
                    first.get_or_insert(sid);
                    continue;
                }
                let mut m = message(inner, groupchat(&from, room, &pid)?, &from, room, &pid, &part).await?;
                if let (Some(origin), Some(ctx)) = (&d.event.origin.remote_id, inner.ctx.get())
                    && let Some(sig) = ctx.sign_mark(room, origin)
                {
                    crate::stanzas::mark_origin(&mut m.payloads, origin, &sig);
                }
                if let Some(url) = &file {
                    m.payloads.push(oob(url, Some(LONG_TEXT_FILE)));
                }
                let sid = inner.send_confirmed(&pid, m).await?;
                inner.state().sent.parts_sent.insert(pid, sid.clone());
                first.get_or_insert(sid);
            }
            let mut st = inner.state();
            st.sent.parts_sent.retain(|k, _| k != &d.id && !k.starts_with(&format!("{}.p", d.id)));
            Ok(Delivered { remote_id: first.flatten() })
        }
    }
}

/// Largest text of one message: servers close a stream that sends a
/// stanza over their limit (Prosody 256 KiB, and many set less).
const MAX_TEXT_BYTES: usize = 60 * 1024;

/// With `oversize: file`: how much of a long text is shown in the room, and
/// the name of the file that holds all of it.
const PREVIEW_BYTES: usize = 2 * 1024;
const LONG_TEXT_FILE: &str = "message.txt";

/// With `oversize: file` and an upload service, a message whose text is too
/// long for one message as its first lines and a link to the whole text put
/// on the upload service. `None`: send it as it is (or in parts).
async fn long_text_file(inner: &Inner, from: &FullJid, body: &Body<String>) -> Option<(Body<String>, String)> {
    let Body::Message { text, kind, attachments, reply_to, thread, mentions } = body else { return None };
    let service = inner.options.upload_service.as_ref().filter(|_| inner.options.oversize == Oversize::File)?;
    // What would go as one message anyway (a plain text that fits).
    if text.plain.len() <= MAX_TEXT_BYTES {
        return None;
    }
    let plain = match &text.html {
        Some(html) => styling::from_html(html),
        None => text.plain.clone(),
    };
    let url = match crate::upload::put(
        inner,
        service,
        from,
        LONG_TEXT_FILE.into(),
        Some("text/plain; charset=utf-8".into()),
        plain.clone().into_bytes(),
    )
    .await
    {
        Ok(url) => url,
        Err(e) => {
            tracing::warn!("long text not put on the upload service, sending it in parts: {e}");
            return None;
        }
    };
    let short = Body::Message {
        text: Text::plain(causeway_core::text::preview(&plain, PREVIEW_BYTES, &url)),
        kind: *kind,
        attachments: attachments.clone(),
        reply_to: reply_to.clone(),
        thread: thread.clone(),
        mentions: mentions.clone(),
    };
    Some((short, url))
}

/// A message as the messages to send, with their ids: itself under the
/// delivery id, or, when its text is larger than one message may be,
/// numbered parts (`(1/3) …`) under `<id>`, `<id>.p2`, … — the first
/// with its files, reply and thread. Size is never a reason not to deliver.
fn parts(id: &str, body: &Body<String>) -> Vec<(String, Body<String>)> {
    match body {
        Body::Message { text, .. } if !fits_one_message(text) => body.plain_only().in_parts(id, MAX_TEXT_BYTES),
        _ => vec![(id.to_string(), body.clone())],
    }
}

/// Whether a text, as it would be sent (plain, or its HTML as styling),
/// fits in one message.
fn fits_one_message(text: &Text) -> bool {
    text.plain.len().max(text.html.as_ref().map_or(0, |h| styling::from_html(h).len())) <= MAX_TEXT_BYTES
}

/// Deliver into a direct conversation: the room's ghost writes to the account.
pub(crate) async fn deliver_direct(inner: &Inner, room: &DirectRoom, d: &Delivery) -> Result<Delivered, DeliveryError> {
    let from = FullJid::new(&format!("{}/{RESOURCE}", room.ghost)).map_err(|e| DeliveryError::permanent(e.to_string()))?;
    let m = match &d.event.body {
        Body::Typing { active } => {
            let mut m = chat(&from, &room.account, &d.id);
            m.payloads.push((if *active { ChatState::Composing } else { ChatState::Active }).into());
            inner.send(m);
            return Ok(Delivered::default());
        }
        Body::Read { .. } => {
            // Nothing to confirm: a marker that is lost is overtaken by the next.
            inner.send(message(inner, chat(&from, &room.account, &d.id), &from, &d.room, &d.id, &d.event.body).await?);
            return Ok(Delivered::default());
        }
        body @ (Body::Message { .. } | Body::Edit { .. } | Body::Retract { .. } | Body::Reaction { .. }) => {
            message(inner, chat(&from, &room.account, &d.id), &from, &d.room, &d.id, body).await?
        }
        // Presence, membership and topic are not part of a one-to-one chat.
        _ => return Ok(Delivered::default()),
    };
    // An error bounce of the message (by its id) fails the delivery.
    let (tx, mut bounce) = tokio::sync::oneshot::channel();
    inner.state().sent.confirms.insert(d.id.clone(), tx);
    inner.send(m);
    // The server handles a connection's stanzas in order: once it answers a
    // ping sent after the message, it has routed (or stored) the message,
    // or bounced it.
    let ping = inner.request(&from, room.account.domain().as_str(), false, Element::builder("ping", NS_PING).build()).await;
    inner.state().sent.confirms.remove(&d.id);
    if let Ok(Err(e)) = bounce.try_recv() {
        return Err(e);
    }
    match ping {
        Err(RequestError::Refused(c @ (Condition::RemoteServerNotFound | Condition::RemoteServerTimeout))) => {
            Err(DeliveryError::transient(format!("direct message to {}: {c:?}", room.account)))
        }
        // Any other answer means the server took the message.
        Ok(_) | Err(RequestError::Refused(_)) => Ok(Delivered::default()),
        Err(e @ RequestError::Lost(_)) => Err(DeliveryError::transient(format!("direct message to {}: {e}", room.account))),
    }
}

/// Deliver a broadcast to one person ([`causeway_core::PEOPLE_ROOM`]): a
/// `chat` message from the bridge's own address to their account, which
/// their server keeps for them while they are offline (XEP-0160).
pub(crate) async fn deliver_to_person(inner: &Inner, d: &Delivery) -> Result<Delivered, DeliveryError> {
    let account = d.recipient.as_deref().ok_or_else(|| DeliveryError::permanent("a delivery to people names nobody"))?;
    let account: BareJid = account.parse().map_err(|e| DeliveryError::permanent(format!("{account:?} is not an XMPP address: {e}")))?;
    if account.node().is_none() {
        return Err(DeliveryError::permanent(format!("{account} is a server, not an account")));
    }
    let bot = inner.bot_jid();
    let room = DirectRoom { account, ghost: bot.to_bare() };
    // Only the message: the people room has no typing, markers or edits.
    let Body::Message { text, .. } = &d.event.body else { return Ok(Delivered::default()) };
    let mut d = d.clone();
    if let Body::Message { text: said, .. } = &mut d.event.body {
        *said = causeway_core::text::announced_by(text, &d.event.sender.name);
    }
    deliver_direct(inner, &room, &d).await.map(|_| Delivered::default())
}

/// Deliver as the bridge's one account (client mode): everyone's messages
/// come from the bridge, each after `relay_prefix` with the sender's name.
pub(crate) async fn relay(inner: &Inner, d: &Delivery) -> Result<Delivered, DeliveryError> {
    let room = d.room.as_str();
    let bot = inner.bot_jid();
    let name = &d.event.sender.name;
    let prefix = inner.relay_prefix().replace("{name}", name);
    let plain = |text: &Text| match &text.html {
        Some(html) => styling::from_html(html),
        None => text.plain.clone(),
    };
    let body = match &d.event.body {
        Body::Topic { text } => {
            let mut m = groupchat(&bot, room, &d.id)?;
            m.subjects.insert(Lang::new(), text.clone());
            inner.send(m);
            return Ok(Delivered::default());
        }
        Body::Retract { target, .. } if came_from_xmpp(inner, room, target).await => {
            moderate(inner, room, target, name).await?;
            return Ok(Delivered::default());
        }
        Body::Message { text, kind, attachments, reply_to, thread, mentions } => {
            let said = match kind {
                MessageKind::Emote => format!("* {name} {}", plain(text)),
                _ => format!("{prefix}{}", plain(text)),
            };
            Body::Message {
                text: Text::plain(said),
                kind: MessageKind::Text,
                attachments: attachments.clone(),
                reply_to: reply_to.clone(),
                thread: thread.clone(),
                mentions: mentions.clone(),
            }
        }
        Body::Edit { target, text } => Body::Edit { target: target.clone(), text: Text::plain(format!("{prefix}{}", plain(text))) },
        body @ (Body::Retract { .. } | Body::Reaction { .. }) => body.clone(),
        // Presence, typing and membership are not shown by one account.
        _ => return Ok(Delivered::default()),
    };
    if let Some(sid) = inner.already_delivered(room, &d.id).await {
        return Ok(Delivered { remote_id: sid });
    }
    if d.maybe_sent
        && let Some(sid) = crate::archive::sent_before(inner, room, &d.id).await
    {
        return Ok(Delivered { remote_id: Some(sid) });
    }
    let m = message(inner, groupchat(&bot, room, &d.id)?, &bot, room, &d.id, &body).await?;
    let sid = inner.send_confirmed(&d.id, m).await?;
    Ok(Delivered { remote_id: sid })
}

/// `body` as a message from `from` built on `m` (a group chat message to
/// `room`, or a chat message in a direct conversation), with id `id`.
pub(crate) async fn message(
    inner: &Inner,
    m: Message,
    from: &FullJid,
    room: &str,
    id: &str,
    body: &Body<String>,
) -> Result<Message, DeliveryError> {
    let mentioned = crate::mentions::write(inner, room, body);
    let body = mentioned.as_ref().unwrap_or(body);
    let mut urls = Vec::new();
    let mut correction = None;
    let mut thread = None;
    match body {
        Body::Message { attachments, thread: root, .. } => {
            if let Some(root) = root {
                thread = Some(crate::threads::id_for(inner, room, root).await);
            }
            for a in attachments {
                urls.push(match &inner.options.upload_service {
                    Some(service) => crate::upload::copy(inner, service, from, a).await?.unwrap_or_else(|| a.url.clone()),
                    None => a.url.clone(),
                });
            }
        }
        Body::Edit { target, .. } => correction = Some(correction_target(inner, room, target).await),
        _ => {}
    }
    convert::fill(m, id, body, &urls, correction, thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_larger_than_a_stanza_may_be_goes_as_numbered_parts() {
        let small = Body::Message {
            text: Text::plain("hi"),
            kind: MessageKind::Text,
            attachments: vec![],
            reply_to: Some("r".into()),
            thread: None,
            mentions: vec![],
        };
        assert_eq!(parts("d", &small).len(), 1);
        let big = "a line of a long report\n".repeat(8000);
        let body = Body::Message {
            text: Text { plain: big.clone(), html: None },
            kind: MessageKind::Text,
            attachments: vec![],
            reply_to: Some("r".into()),
            thread: None,
            mentions: vec![],
        };
        let p = parts("d", &body);
        assert!(p.len() >= 3, "{}", p.len());
        assert_eq!((p[0].0.as_str(), p[1].0.as_str()), ("d", "d.p2"));
        let mut lines = 0;
        for (i, (_, b)) in p.iter().enumerate() {
            let Body::Message { text, reply_to, .. } = b else { panic!() };
            assert!(text.plain.len() <= MAX_TEXT_BYTES && text.plain.starts_with(&format!("({}/{}) ", i + 1, p.len())));
            assert_eq!(reply_to.is_some(), i == 0, "only the first replies");
            lines += text.plain.matches("a line of").count();
        }
        assert_eq!(lines, 8000);
    }
}
