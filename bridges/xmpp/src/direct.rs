//! Direct conversations: someone on XMPP writes to a ghost's JID, or
//! someone elsewhere writes to an XMPP account, and the two talk one to one.
//!
//! A direct conversation's room is `direct:<account>|<ghost>`: the XMPP
//! account's bare JID and the ghost's. Messages are `chat` messages between
//! the two. The router keeps the conversation as a portal of its own.

use causeway_core::{Body, DirectError, Incoming, RemoteSender, Sender};
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::{Id, Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::convert;
use crate::ghost;
use crate::ns::{NS_MUC_USER, NS_NICK, NS_SID};
use crate::{BOT_NODE, Inner, RESOURCE};

const PREFIX: &str = "direct:";

/// The room of a direct conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectRoom {
    /// The XMPP account.
    pub account: BareJid,
    /// The ghost of the person on the other network.
    pub ghost: BareJid,
}

/// Why a `direct:` room name is not valid.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadDirectRoom {
    #[error("expected direct:<account>|<ghost>")]
    Shape,
    #[error("{0} {1:?}: {2}")]
    NotAJid(&'static str, String, tokio_xmpp::jid::Error),
    #[error("{account} is not an XMPP account outside {domain}")]
    NotOutside { account: BareJid, domain: String },
    #[error("{ghost} is not a ghost of {domain}")]
    NotAGhost { ghost: BareJid, domain: String },
}

impl DirectRoom {
    /// `None` when `room` is not a direct conversation's; an error when it
    /// looks like one but is not valid on `domain`.
    pub fn parse(room: &str, domain: &str) -> Option<Result<DirectRoom, BadDirectRoom>> {
        let rest = room.strip_prefix(PREFIX)?;
        let parse = || {
            let (account, ghost) = rest.split_once('|').ok_or(BadDirectRoom::Shape)?;
            let account: BareJid = account.parse().map_err(|e| BadDirectRoom::NotAJid("account", account.to_string(), e))?;
            let ghost: BareJid = ghost.parse().map_err(|e| BadDirectRoom::NotAJid("ghost", ghost.to_string(), e))?;
            if account.node().is_none() || account.domain().as_str() == domain {
                return Err(BadDirectRoom::NotOutside { account, domain: domain.to_string() });
            }
            if ghost.domain().as_str() != domain || ghost.node().is_none_or(|n| n.as_str() == BOT_NODE) {
                return Err(BadDirectRoom::NotAGhost { ghost, domain: domain.to_string() });
            }
            Ok(DirectRoom { account, ghost })
        };
        Some(parse())
    }

    pub fn name(&self) -> String {
        format!("{PREFIX}{}|{}", self.account, self.ghost)
    }
}

/// Whether `m` is a one-to-one message from an account to one of our ghosts.
pub(crate) fn is_direct(inner: &Inner, m: &Message) -> bool {
    !inner.client_mode()
        && matches!(m.type_, MessageType::Chat | MessageType::Normal)
        && m.to.as_ref().is_some_and(|to| to.domain().as_str() == inner.domain() && to.node().is_some_and(|n| n.as_str() != BOT_NODE))
}

/// A one-to-one message to a ghost, as an event in the conversation's room
/// (which may not be open yet). Malformed or unwanted ones give `None`.
pub(crate) fn inbound(inner: &Inner, m: Message) -> Option<(Incoming, BareJid, Jid, Jid)> {
    let from = m.from.clone()?;
    let to = m.to.clone()?;
    let ghost = to.to_bare();
    if from.node().is_none() || from.domain().as_str() == inner.domain() {
        tracing::debug!(from = %from, "ignoring a direct message that no account sent");
        return None;
    }
    // A private message through a group chat (or an invitation) comes from
    // the room, not from an account.
    let from_room = m.payloads.iter().any(|e| e.is("x", NS_MUC_USER)) || inner.state().rooms.joined.contains(&from.to_bare().to_string());
    if from_room {
        tracing::debug!(from = %from, "ignoring a private message through a group chat");
        return None;
    }
    let room = DirectRoom { account: from.to_bare(), ghost: ghost.clone() }.name();
    let body_text = m.get_best_body_cloned(vec![]).map(|(_, b)| b);
    if body_text.as_ref().map_or(0, String::len) > inner.options.max_stanza_bytes {
        tracing::warn!(from = %from, "dropping an oversized direct message");
        return None;
    }
    let name = m
        .payloads
        .iter()
        .find(|e| e.is("nick", NS_NICK))
        .map(Element::text)
        .filter(|n| !n.trim().is_empty() && n.len() <= 256)
        .or_else(|| from.node().map(|n| n.to_string()));
    let sender = RemoteSender { id: from.to_bare().to_string(), name, avatar: None };
    // The sender's origin-id (XEP-0359) where it gives one: unique, where a
    // plain `id` need only be unique within one session.
    let origin_id = m.payloads.iter().find(|e| e.is("origin-id", NS_SID)).and_then(|e| e.attr("id")).map(str::to_string);
    let id = origin_id.or_else(|| m.id.as_ref().map(|i| i.0.clone())).filter(|i| !i.is_empty() && i.len() <= 256);
    match convert::parse_message(&room, sender, None, id, body_text, m) {
        Ok(Some(incoming)) if matches!(incoming.body, Body::Read { .. }) && !inner.options.read_markers.shown(true) => None,
        Ok(Some(incoming)) => Some((incoming, ghost, from, to)),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(from = %from, "dropping a malformed direct message: {e}");
            None
        }
    }
}

/// Tell the account why its message went nowhere: to the client that wrote
/// (`from`; errors to a bare JID are dropped by servers), from the address
/// it wrote to (`to`).
pub(crate) fn refuse(inner: &Inner, incoming: &Incoming, from: &Jid, to: &Jid, error: &DirectError) {
    let (kind, condition) = match error {
        DirectError::Unknown(_) => (ErrorType::Cancel, DefinedCondition::ItemNotFound),
        DirectError::Unsupported(_) => (ErrorType::Cancel, DefinedCondition::ServiceUnavailable),
        DirectError::Unavailable(_) => (ErrorType::Wait, DefinedCondition::InternalServerError),
        DirectError::NotAllowed(_) => (ErrorType::Cancel, DefinedCondition::NotAllowed),
        DirectError::Limited(_) => (ErrorType::Wait, DefinedCondition::ResourceConstraint),
    };
    let mut m = Message::new_with_type(MessageType::Error, Some(from.clone()));
    m.from = Some(to.clone());
    m.id = incoming.remote_id.clone().map(Id);
    m.payloads.push(StanzaError::new(kind, condition, "en", error.to_string()).into());
    inner.send(m);
}

/// The direct conversation of `account` with `peer` (from `peer_bridge`).
pub(crate) async fn open(inner: &Inner, account: &str, peer: &Sender, peer_bridge: &str) -> Result<String, DirectError> {
    let account: BareJid = account.parse().map_err(|e| DirectError::Unknown(format!("{account:?} is not a JID: {e}")))?;
    let ghost = ghost::jid_of(&inner.options, inner.domain(), peer, peer_bridge).map_err(|e| DirectError::Unknown(e.to_string()))?;
    let room = DirectRoom { account, ghost: ghost.clone() };
    // Validates the account as the room would be validated after a restart.
    if let Err(e) = DirectRoom::parse(&room.name(), inner.domain()).expect("a direct room") {
        return Err(DirectError::Unknown(e.to_string()));
    }
    ghost::remember(inner, &ghost, peer, peer_bridge).await;
    Ok(room.name())
}

/// Answer an account's presence subscription to a ghost (so ghosts can sit
/// in rosters). Returns whether `p` was such a request.
pub(crate) fn subscription(inner: &Inner, p: &Presence) -> bool {
    let (Some(from), Some(to)) = (&p.from, &p.to) else { return false };
    if to.domain().as_str() != inner.domain() || to.node().is_none_or(|n| n.as_str() == BOT_NODE) || to.resource().is_some() {
        return false;
    }
    let answer = match p.type_ {
        PresenceType::Subscribe => vec![PresenceType::Subscribed, PresenceType::None],
        PresenceType::Probe => vec![PresenceType::None],
        PresenceType::Unsubscribe => vec![PresenceType::Unsubscribed],
        _ => return false,
    };
    let ghost = to.to_bare();
    for t in answer {
        let available = t == PresenceType::None;
        let mut reply = Presence::new(t).with_to(from.to_bare());
        reply.from = Some(if available {
            FullJid::new(&format!("{ghost}/{RESOURCE}")).map(Jid::from).unwrap_or_else(|_| ghost.clone().into())
        } else {
            ghost.clone().into()
        });
        inner.send(reply);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_read_back_and_refuse_what_is_not_one() {
        let r = DirectRoom { account: "alice@xmpp.test".parse().unwrap(), ghost: "dave@bridge.xmpp.test".parse().unwrap() };
        assert_eq!(r.name(), "direct:alice@xmpp.test|dave@bridge.xmpp.test");
        assert_eq!(DirectRoom::parse(&r.name(), "bridge.xmpp.test").unwrap().unwrap(), r);
        assert!(DirectRoom::parse("ops@conference.xmpp.test", "bridge.xmpp.test").is_none());
        for (bad, why) in [
            ("direct:alice@xmpp.test", "Shape"),
            ("direct:alice@xmpp.test|dave@elsewhere.test", "NotAGhost"),
            ("direct:xmpp.test|dave@bridge.xmpp.test", "NotOutside"),
            ("direct:alice@xmpp.test|causeway@bridge.xmpp.test", "NotAGhost"),
            ("direct:x@bridge.xmpp.test|dave@bridge.xmpp.test", "NotOutside"),
            ("direct:a@b@c|dave@bridge.xmpp.test", "NotAJid"),
        ] {
            let e = DirectRoom::parse(bad, "bridge.xmpp.test").unwrap().unwrap_err();
            assert!(format!("{e:?}").starts_with(why), "{bad}: {e:?}");
        }
    }
}
