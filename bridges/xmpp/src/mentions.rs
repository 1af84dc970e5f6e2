//! Mentions in group chats. XMPP clients ping someone whose nick a message
//! names (most at its start, `nick: …`); XEP-0372 references name an
//! occupant by its address. Coming in, both become mentions of whom the
//! nick stands for (a ghost: the one it stands for; an occupant: their
//! account). Going out, a mention becomes the person's nick in that room,
//! where the text names them or else at its start, and Matrix pills become
//! their text (no link).

use causeway_core::{Body, Mention, Recipient, Sender, Text};
use tokio_xmpp::minidom::Element;

use crate::Inner;

const NS_REFERENCE: &str = "urn:xmpp:reference:0";
/// Most mentions taken from one message.
const MAX: usize = 50;

/// The nicks XEP-0372 mention references in `payloads` point at in `room`.
pub(crate) fn referenced(payloads: &[Element], room: &str) -> Vec<String> {
    payloads
        .iter()
        .filter(|e| e.is("reference", NS_REFERENCE) && e.attr("type") == Some("mention"))
        .filter_map(|e| e.attr("uri")?.strip_prefix("xmpp:")?.strip_prefix(room)?.strip_prefix('/').map(str::to_string))
        .filter(|n| !n.is_empty() && n.len() <= 256)
        .take(MAX)
        .collect()
}

/// Add to a message from `from_nick` in `room` the mentions its text starts
/// with (`nick:`/`nick,`) and those `referenced` names, of nicks in the room.
pub(crate) fn read(inner: &Inner, room: &str, from_nick: &str, referenced: &[String], body: &mut Body<String>) {
    let Body::Message { text, mentions, .. } = body else { return };
    let bridge = inner.ctx.get().map_or("xmpp", |c| c.name()).to_string();
    let st = inner.state();
    let ghosts: Vec<(&str, &str)> =
        st.ghost.seats.iter().filter(|((r, _), _)| r == room).map(|((_, jid), seat)| (seat.nick.as_str(), jid.as_str())).collect();
    let occupants = st.rooms.occupants.get(room);
    let known = |nick: &str| nick != from_nick && nick != inner.options.bot_nick;
    let who = |nick: &str| -> Option<String> {
        if let Some((_, jid)) = ghosts.iter().find(|(n, _)| *n == nick) {
            return st.ghost.ghosts.get(*jid).cloned();
        }
        let real = occupants?.get(nick)?.clone();
        Some(format!("{bridge}:{}", inner.occupant_id(room, nick, real)))
    };
    let mut nicks: Vec<String> = Vec::new();
    // The longest nick the text starts with, followed by `:` or `,`.
    let all = ghosts.iter().map(|(n, _)| *n).chain(occupants.into_iter().flat_map(|o| o.keys().map(String::as_str)));
    if let Some(n) = all
        .filter(|n| known(n))
        .filter(|n| text.plain.strip_prefix(*n).is_some_and(|rest| rest.starts_with(':') || rest.starts_with(',')))
        .max_by_key(|n| n.len())
    {
        nicks.push(n.to_string());
    }
    nicks.extend(referenced.iter().filter(|n| known(n)).cloned());
    for nick in nicks {
        if mentions.len() >= MAX || mentions.iter().any(|m| m.text.as_deref() == Some(nick.as_str())) {
            continue;
        }
        if let Some(w) = who(&nick) {
            mentions.push(Mention::new(w, Some(nick)));
        }
    }
}

/// The nick someone a mention names has in `room`: an occupant by their
/// real JID (or the room's `nicks` map, or their occupant JID), a ghost by
/// its seat there.
fn nick_of(inner: &Inner, room: &str, m: &Mention) -> Option<String> {
    let ctx = inner.ctx.get()?;
    let recipient = m.recipient()?;
    let st = inner.state();
    let occupants = st.rooms.occupants.get(room);
    let by_jid = |jid: &str| occupants?.iter().find(|(_, real)| real.as_deref() == Some(jid)).map(|(n, _)| n.clone());
    let mapped = |person: &str| inner.options.nicks.get(room)?.iter().find(|(_, p)| *p == person).map(|(n, _)| n.clone());
    let seat = |sender: &Sender, bridge: &str| {
        let jid = crate::ghost::jid_of(&inner.options, inner.domain(), sender, bridge).ok()?;
        st.ghost.seats.get(&(room.to_string(), jid.to_string())).map(|s| s.nick.clone())
    };
    let someone = |id: &str, person: Option<&str>| Sender {
        id: id.to_string(),
        person: person.map(str::to_string),
        name: String::new(),
        avatar: None,
    };
    match recipient {
        Recipient::Account { bridge, id } if bridge == ctx.name() => {
            by_jid(&id).or_else(|| id.strip_prefix(room).and_then(|r| r.strip_prefix('/')).map(str::to_string))
        }
        Recipient::Person(p) => {
            ctx.account_of(&p).and_then(|jid| by_jid(&jid)).or_else(|| mapped(&p)).or_else(|| seat(&someone("", Some(&p)), ""))
        }
        Recipient::Account { bridge, id } => seat(&someone(&id, None), &bridge),
    }
}

/// `body` as it is said in `room`: where it mentions someone, with their
/// nick there (where its text names them, else before it) and pills as
/// their text; unchanged when it mentions nobody.
pub(crate) fn write(inner: &Inner, room: &str, body: &Body<String>) -> Option<Body<String>> {
    let Body::Message { text, kind, attachments, reply_to, thread, mentions } = body else { return None };
    if mentions.iter().all(Mention::is_room) {
        return None;
    }
    let plain = match &text.html {
        Some(html) => crate::styling::from_html(&causeway_core::text::unpill(html)),
        None => text.plain.clone(),
    };
    let (renamed, _) = causeway_core::event::rename_mentions(&plain, mentions, |m| nick_of(inner, room, m).or_else(|| m.text.clone()));
    Some(Body::Message {
        text: Text::plain(renamed),
        kind: *kind,
        attachments: attachments.clone(),
        reply_to: reply_to.clone(),
        thread: thread.clone(),
        mentions: mentions.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_occupants_of_this_room_only() {
        let r = |xml: &str| -> Element { xml.parse().unwrap() };
        let room = "ops@conference.x";
        let p = vec![
            r("<reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:ops@conference.x/Bob Builder' begin='0' end='11'/>"),
            r("<reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:other@conference.x/Eve'/>"),
            r("<reference xmlns='urn:xmpp:reference:0' type='data' uri='xmpp:ops@conference.x/Carol'/>"),
            r("<reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:ops@conference.x/'/>"),
            r("<reference xmlns='urn:xmpp:reference:0' type='mention'/>"),
            r("<reference xmlns='urn:example' type='mention' uri='xmpp:ops@conference.x/Dan'/>"),
        ];
        assert_eq!(referenced(&p, room), ["Bob Builder"]);
    }
}
