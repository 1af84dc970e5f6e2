//! XMPP stanzas → events. Everything here takes outside data: a malformed
//! or unexpected stanza is logged and dropped, never a panic.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use causeway_core::{
    Accepted, Body, BridgeContext, DeliveryError, DirectError, IdKind, Incoming, Membership, RemoteSender, Show, SubmitError,
};
use tokio::sync::mpsc;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::delay::Delay;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::muc::user::Status;
use tokio_xmpp::parsers::presence::{Presence, Show as XShow, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::convert::{self, child, parse_message};
use crate::ns::{NS_DELAY, NS_PING};
use crate::stanzas::{self};
use crate::{Inner, direct, ghost};

/// What the connection hands on to the router, in order.
pub(crate) enum Inbound {
    Event(Incoming),
    /// Said live in a room, under the room's stanza-id `sid`: once taken,
    /// the room's next catch-up from its archive starts after it.
    Said {
        incoming: Incoming,
        sid: String,
    },
    /// A one-to-one message to a ghost: its conversation may need opening first.
    /// `from`: the client that wrote; `to`: the address it wrote to.
    Direct {
        incoming: Incoming,
        ghost: BareJid,
        from: Jid,
        to: Jid,
    },
    /// Said in a room while the bridge was away (from its history): taken
    /// unless `id` shows it is a delivery of Causeway's own.
    CatchUp {
        incoming: Incoming,
        id: Option<String>,
    },
    /// Everything before this in `room` is taken: the bridge has looked at
    /// the room up to `last` (first looked at it at `first`).
    Looked {
        room: String,
        first: i64,
        last: i64,
    },
    /// `room` is being caught up from its archive: its live stanzas from
    /// here on wait until the matching [`Inbound::ArchiveEnd`] (archive
    /// results, [`Inbound::CatchUp`], do not).
    ArchiveStart {
        room: String,
        token: u64,
    },
    /// The catch-up of `room` is over; `complete`: all of it was read.
    ArchiveEnd {
        room: String,
        token: u64,
        complete: bool,
    },
    /// The connection is gone: whatever is held is taken now.
    Reset,
    /// The bridge stops: whatever is held is taken now, then the answer,
    /// and nothing after.
    Stop(tokio::sync::oneshot::Sender<()>),
}

impl Inbound {
    /// The room whose live stanzas a catch-up holds back, for those it holds.
    fn held_room(&self) -> Option<&str> {
        match self {
            Inbound::Event(i) | Inbound::Said { incoming: i, .. } => Some(&i.room),
            Inbound::Looked { room, .. } => Some(room),
            _ => None,
        }
    }
}

/// Live stanzas of one room waiting for its catch-up.
struct Held {
    token: u64,
    items: std::collections::VecDeque<Inbound>,
    /// Too many piled up: let through, out of order rather than lost.
    released: bool,
}

/// Live stanzas held per room while it is caught up, at most: beyond that
/// they are let through (the archive results still follow, and what comes
/// twice is dropped as a duplicate by the router).
const MAX_HELD: usize = 10_000;

/// Submit events one at a time, in the order the server sent them. What
/// the store refuses for now is tried again (see [`crate::retry`]) and
/// everything after it waits; while it waits, the queue to here fills and
/// the connection is not read.
pub(crate) async fn submit_in_order(inner: Arc<Inner>, ctx: BridgeContext, mut rx: mpsc::Receiver<Inbound>) {
    let mut held: HashMap<String, Held> = HashMap::new();
    // Rooms whose last catch-up from the archive did not finish: their mark
    // is not moved on, so the next join reads from where it stopped.
    let mut frozen: HashSet<String> = HashSet::new();
    while let Some(item) = rx.recv().await {
        match item {
            Inbound::ArchiveStart { room, token } => {
                if let Some(h) = held.remove(&room) {
                    for i in h.items {
                        take(&inner, &ctx, i, false, &frozen).await;
                    }
                }
                held.insert(room, Held { token, items: Default::default(), released: false });
            }
            Inbound::ArchiveEnd { room, token, complete } => {
                if held.get(&room).is_none_or(|h| h.token != token) {
                    continue; // of a connection before
                }
                if complete {
                    frozen.remove(&room);
                } else {
                    frozen.insert(room.clone());
                }
                if let Some(h) = held.remove(&room) {
                    for i in h.items {
                        take(&inner, &ctx, i, false, &frozen).await;
                    }
                }
            }
            Inbound::Reset | Inbound::Stop(_) => {
                // Their catch-up did not finish: the next join reads on from the mark.
                frozen.extend(held.keys().cloned());
                for (_, h) in held.drain() {
                    for i in h.items {
                        take(&inner, &ctx, i, false, &frozen).await;
                    }
                }
                if let Inbound::Stop(done) = item {
                    let _ = done.send(());
                    return;
                }
            }
            item => {
                let room = item.held_room().map(str::to_string);
                if let Some(h) = room.as_ref().and_then(|r| held.get_mut(r)) {
                    if !h.released {
                        h.items.push_back(item);
                        if h.items.len() >= MAX_HELD {
                            tracing::warn!(bridge = ctx.name(), room = ?room, "{MAX_HELD} live stanzas wait for the room's catch-up; letting them through before it is done");
                            h.released = true;
                            let items = std::mem::take(&mut h.items);
                            for i in items {
                                take(&inner, &ctx, i, true, &frozen).await;
                            }
                        }
                        continue;
                    }
                    take(&inner, &ctx, item, true, &frozen).await;
                    continue;
                }
                take(&inner, &ctx, item, false, &frozen).await;
            }
        }
    }
}

/// Take one item: submit it (held and tried again while the store refuses),
/// and move the room's mark on. `catching`: its room is being caught up
/// now, so only archive results move the mark.
///
/// One piece (over 80 lines): one arm per kind of item taken, each moving the
/// room's mark in its own way.
async fn take(inner: &Inner, ctx: &BridgeContext, item: Inbound, catching: bool, frozen: &HashSet<String>) {
    let unavailable = |e: &SubmitError| matches!(e, SubmitError::Unavailable(_));
    let (mut incoming, sid, archived) = match item {
        Inbound::Event(incoming) => (incoming, None, false),
        Inbound::Said { incoming, sid } => (incoming, Some(sid).filter(|_| !catching), false),
        Inbound::Looked { room, first, last } => {
            if frozen.contains(&room) {
                return;
            }
            save_mark(inner, ctx, room, first, last).await;
            return;
        }
        Inbound::CatchUp { incoming, id } => {
            // A delivery whose reflection was lost (Causeway stopped in
            // between) comes back in the history under our own id.
            let ours = match &id {
                Some(id) => causeway_core::retry::until_taken(
                    ctx.name(),
                    "a look-up of a message from the room's past",
                    causeway_core::retry::INITIAL,
                    causeway_core::retry::MAX,
                    unavailable,
                    || ctx.ids_of(&incoming.room, id),
                )
                .await
                .map(|ids| ids.iter().any(|(_, k)| *k == IdKind::DeliveryKey)),
                None => Ok(false),
            };
            match ours {
                Ok(false) => {}
                Ok(true) => return,
                Err(e) => {
                    tracing::debug!(bridge = ctx.name(), room = %incoming.room, "a message from the room's past not taken: {e}");
                    return;
                }
            }
            let sid = incoming.remote_id.clone();
            (incoming, sid, true)
        }
        Inbound::Direct { incoming, ghost, from, to } => {
            if ctx.portal_of(&incoming.room).is_none() {
                // Only something said opens a conversation (not a chat state).
                if !matches!(incoming.body, Body::Message { .. }) {
                    return;
                }
                let opened = causeway_core::retry::until_taken(
                    ctx.name(),
                    "a direct conversation to open",
                    causeway_core::retry::INITIAL,
                    causeway_core::retry::MAX,
                    |e: &DirectError| matches!(e, DirectError::Unavailable(_)),
                    || {
                        let (ghost, incoming) = (&ghost, &incoming);
                        async move {
                            match ghost::recipient_of(inner, ghost).await {
                                Ok(Some(with)) => ctx.open_direct(&incoming.room, &with, incoming.sender.clone()).await,
                                Ok(None) => Err(DirectError::Unknown(format!("{ghost} stands for nobody Causeway knows"))),
                                Err(e) => Err(e),
                            }
                        }
                    },
                )
                .await;
                if let Err(e) = opened {
                    tracing::info!(bridge = ctx.name(), from = %incoming.sender.id, to = %ghost, "direct message refused: {e}");
                    direct::refuse(inner, &incoming, &from, &to, &e);
                    return;
                }
            }
            (incoming, None, false)
        }
        Inbound::ArchiveStart { .. } | Inbound::ArchiveEnd { .. } | Inbound::Reset | Inbound::Stop(_) => return,
    };
    crate::threads::resolve(ctx, &mut incoming).await;
    let room = incoming.room.clone();
    let what = if archived { "an event from the room's archive" } else { "an event" };
    let taken =
        causeway_core::retry::until_taken(ctx.name(), what, causeway_core::retry::INITIAL, causeway_core::retry::MAX, unavailable, || {
            ctx.submit(incoming.clone())
        })
        .await;
    match taken {
        Ok(accepted) => {
            if archived && matches!(accepted, Accepted::Stored { .. }) {
                ctx.count_reconciled(1);
            }
            if let Some(sid) = sid
                && !frozen.contains(&room)
            {
                inner.state().history.last_sid.insert(room, sid);
            }
        }
        Err(e @ SubmitError::NotLinked(_)) => tracing::debug!(bridge = ctx.name(), room = %room, "event not taken: {e}"),
        Err(e) => tracing::warn!(bridge = ctx.name(), room = %room, "event not taken: {e}"),
    }
}

/// The defined condition of an error stanza (`conflict`, `forbidden`, …).
/// A message's events, for tests and callers that do not care how they are taken.
#[cfg(test)]
pub(crate) fn message(inner: &Inner, m: Message) -> Vec<Incoming> {
    message_inbound(inner, m)
        .into_iter()
        .filter_map(|i| match i {
            Inbound::Event(e) | Inbound::Said { incoming: e, .. } | Inbound::CatchUp { incoming: e, .. } => Some(e),
            _ => None,
        })
        .collect()
}

pub(crate) fn message_inbound(inner: &Inner, m: Message) -> Vec<Inbound> {
    if let Some(c) = catch_up(inner, &m) {
        return vec![c];
    }
    // The room's first subject ends its history replay: after what it
    // brought, the room is looked at.
    let room = m.from.as_ref().map(|f| f.to_bare().to_string());
    let replay_ends = m.type_ == MessageType::Groupchat
        && m.bodies.is_empty()
        && !m.subjects.is_empty()
        && room.as_ref().is_some_and(|r| inner.state().rooms.joined.contains(r) && !inner.state().rooms.subject_seen.contains(r));
    // The room's own id of what was said, where the next catch-up starts.
    let sid = match &room {
        Some(r) if m.type_ == MessageType::Groupchat => convert::stanza_id(&m.payloads, Some(r)),
        _ => None,
    };
    let mut out: Vec<Inbound> = message_events(inner, m)
        .into_iter()
        .map(|incoming| own_ids(inner, incoming))
        .map(|incoming| match &sid {
            Some(sid) if incoming.remote_id.as_ref() == Some(sid) => Inbound::Said { incoming, sid: sid.clone() },
            _ => Inbound::Event(incoming),
        })
        .collect();
    if replay_ends && let Some(room) = room {
        out.push(looked_at(inner, &room));
    }
    out
}

/// Our deliveries as the rooms reflected them: (room, the room's stanza-id)
/// → the delivery id, the latest [`Reflected::MAX`]. A delivery's
/// stanza-id reaches the message map only once the outbox has recorded the
/// delivery, which someone who answers at once can beat; its delivery id
/// has been in the map since it was committed.
#[derive(Default)]
pub(crate) struct Reflected {
    ids: HashMap<(String, String), String>,
    order: std::collections::VecDeque<(String, String)>,
}

impl Reflected {
    const MAX: usize = 4096;

    /// The room reflected the message sent as `sent_as` (a delivery id,
    /// or `<delivery id>.p<n>` for a part of a split one) under `sid`.
    pub(crate) fn insert(&mut self, room: &str, sid: &str, sent_as: &str) {
        let delivery = match sent_as.rsplit_once(".p") {
            Some((d, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => d,
            _ => sent_as,
        };
        let key = (room.to_string(), sid.to_string());
        if self.ids.insert(key.clone(), delivery.to_string()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > Self::MAX {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    pub(crate) fn get(&self, room: &str, sid: &str) -> Option<&str> {
        self.ids.get(&(room.to_string(), sid.to_string())).map(String::as_str)
    }
}

/// `incoming` with its references to our own deliveries, where the room
/// named them by stanza-id, as their delivery ids (see [`Reflected`]).
fn own_ids(inner: &Inner, incoming: Incoming) -> Incoming {
    if incoming.body.refs().is_empty() {
        return incoming;
    }
    let st = inner.state();
    let room = incoming.room.clone();
    let body =
        incoming.body.map_refs(|r| Some(st.sent.reflected.get(&room, &r).map_or(r, str::to_string))).expect("every reference is Some");
    Incoming { body, ..incoming }
}

/// A message of a room's history replay that was said while the bridge was
/// away (newer than its last look at the room), from someone not its own.
fn catch_up(inner: &Inner, m: &Message) -> Option<Inbound> {
    if m.type_ != MessageType::Groupchat {
        return None;
    }
    let from = m.from.as_ref()?;
    let room = from.to_bare().to_string();
    let nick = from.resource()?.as_str().to_string();
    // The room's own delay (a sender may add one of their own).
    let delay = m
        .payloads
        .iter()
        .filter(|e| e.is("delay", NS_DELAY))
        .filter_map(|e| Delay::try_from(e.clone()).ok())
        .find(|d| d.from.as_ref().is_some_and(|f| f.to_string().eq_ignore_ascii_case(&room)))?;
    let after = inner.state().history.catch_up.get(&room).copied()?;
    let at_ms = delay.stamp.0.timestamp_millis().min(causeway_core::now_ms());
    if at_ms <= after {
        return None;
    }
    let id = m.id.as_ref().map(|i| i.0.clone());
    {
        let st = inner.state();
        let ours = nick == inner.options.bot_nick || st.ghost.ghost_nicks.get(&room).is_some_and(|n| n.contains(&nick));
        if !st.rooms.joined.contains(&room) || ours || id.as_ref().is_some_and(|id| st.sent.in_doubt.contains(id)) {
            return None;
        }
    }
    // Without the room's own id it could not be recognised if seen again.
    let stanza_id = convert::stanza_id(&m.payloads, Some(&room))?;
    let body_text = m.get_best_body_cloned(vec![]).map(|(_, b)| b);
    if body_text.as_ref().map_or(0, String::len) > inner.options.max_stanza_bytes {
        return None;
    }
    said_while_away(&room, &nick, stanza_id, id, body_text, m.clone(), at_ms, "the history")
}

/// A message said in `room` by `nick` while the bridge was away (from the
/// room's history or its archive, `source`), as what to take: named by the
/// nick (who holds it now may not be who said it then), under the room's
/// id `sid`, at the time it was said.
#[allow(clippy::too_many_arguments)]
pub(crate) fn said_while_away(
    room: &str,
    nick: &str,
    sid: String,
    id: Option<String>,
    body_text: Option<String>,
    m: Message,
    at_ms: i64,
    source: &str,
) -> Option<Inbound> {
    let who = RemoteSender { id: format!("{room}/{nick}"), name: Some(nick.to_string()), avatar: None };
    match parse_message(room, who, Some(sid), id.clone(), body_text, m) {
        // Chat states and read markers from the past are no news.
        Ok(Some(mut incoming)) if !matches!(incoming.body, Body::Typing { .. } | Body::Read { .. }) => {
            incoming.at_ms = Some(at_ms);
            Some(Inbound::CatchUp { incoming, id })
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(room = %room, nick = %nick, "dropping a malformed message from {source}: {e}");
            None
        }
    }
}

/// The bridge sees `room` live from now on: the mark to store once what
/// came before it is taken.
/// Store when `room` was first and last seen, with the last stanza-id
/// taken from it: where the next start catches up from.
pub(crate) async fn save_mark(inner: &Inner, ctx: &BridgeContext, room: String, first: i64, last: i64) {
    let sid = inner.state().history.last_sid.get(&room).cloned();
    let mark = match &sid {
        Some(sid) => format!("{first} {last} {sid}"),
        None => format!("{first} {last}"),
    };
    match ctx.save_state(&format!("{}{room}", crate::SEEN_KEY), &mark).await {
        Ok(()) => {
            if let Some(sid) = sid {
                inner.state().history.saved_sid.insert(room, sid);
            }
        }
        Err(e) => tracing::warn!(bridge = ctx.name(), room = %room, "cannot store when the room was last seen: {e}"),
    }
}

pub(crate) fn looked_at(inner: &Inner, room: &str) -> Inbound {
    let now = causeway_core::now_ms();
    let mut st = inner.state();
    st.history.catch_up.remove(room);
    let first = st.history.seen.get(room).map_or(now, |(f, _)| *f);
    st.history.seen.insert(room.to_string(), (first, now));
    Inbound::Looked { room: room.to_string(), first, last: now }
}

fn message_events(inner: &Inner, m: Message) -> Vec<Incoming> {
    let (Some(from), Some(to)) = (m.from.clone(), m.to.clone()) else {
        return Vec::new();
    };
    let id = m.id.as_ref().map(|i| i.0.clone());
    let room = from.to_bare().to_string();
    if m.type_ == MessageType::Error {
        if let Some(id) = &id
            && let Some(waiter) = inner.state().sent.confirms.remove(id)
        {
            let condition = convert::condition(&m.payloads);
            let reason = format!("{room} refused the message: {}", convert::condition_name(&condition));
            let temporary = matches!(
                condition,
                DefinedCondition::ResourceConstraint | DefinedCondition::RemoteServerTimeout | DefinedCondition::InternalServerError
            );
            let _ = waiter.send(Err(if temporary { DeliveryError::transient(reason) } else { DeliveryError::permanent(reason) }));
        }
        return Vec::new();
    }
    if m.type_ != MessageType::Groupchat {
        // One-to-one messages to ghosts are handled in `direct`; the rest
        // (to the bridge itself, headlines, private messages in rooms) are not bridged.
        tracing::debug!(from = %from, to = %to, "ignoring a {:?} message", m.type_);
        return Vec::new();
    }
    // Our own delivery reflected by the room: it is confirmed, and its
    // stanza-id is how the room refers to it.
    if let Some(id) = &id {
        let mut st = inner.state();
        let sid = || convert::stanza_id(&m.payloads, Some(&room));
        if let Some(waiter) = st.sent.confirms.remove(id) {
            let sid = sid();
            if let Some(sid) = &sid {
                st.sent.reflected.insert(&room, sid, id);
            }
            let _ = waiter.send(Ok(sid));
            return Vec::new();
        }
        if st.sent.in_doubt.contains(id) && child(&m.payloads, "delay", NS_DELAY).is_none() {
            let found = sid();
            st.sent.found.insert(id.clone(), found);
            return Vec::new();
        }
    }
    if !inner.is_bot(&to) {
        return Vec::new(); // every ghost gets a copy; the bridge's own copy counts
    }
    if crate::stanzas::relayed(&m.payloads) {
        // Relayed here by another Causeway (or another instance): not again.
        if let Some(ctx) = inner.ctx.get() {
            ctx.count_rejected("relayed_by_another_bridge");
            let signed = crate::stanzas::marked_origin(&m.payloads);
            tracing::debug!(bridge = ctx.name(), room = %room, signed = signed.is_some(), "a message another bridge relayed");
            if let Some((origin, sig)) = signed
                && inner.state().rooms.joined.contains(&room)
            {
                let copy = convert::stanza_id(&m.payloads, Some(&room));
                ctx.relayed_by_peer(&room, origin, sig, copy.as_deref());
            }
        }
        return Vec::new();
    }
    if !inner.state().rooms.joined.contains(&room) {
        // Only rooms the bridge sits in send group chat to it: anything else
        // claims a `from` it cannot have.
        tracing::warn!(from = %from, "dropping a group chat message from a room the bridge is not in");
        return Vec::new();
    }
    let nick = from.resource().map(|r| r.as_str().to_string());
    if m.bodies.is_empty() && !m.subjects.is_empty() {
        // The first subject after joining is the room's current one (and
        // ends the history replay); later ones are changes.
        let first = inner.state().rooms.subject_seen.insert(room.clone());
        if first {
            inner.settled.notify_one();
        }
        let Some(nick) = nick.filter(|_| !first && child(&m.payloads, "delay", NS_DELAY).is_none()) else {
            return Vec::new();
        };
        if nick == inner.options.bot_nick || inner.state().ghost.ghost_nicks.get(&room).is_some_and(|n| n.contains(&nick)) {
            return Vec::new();
        }
        let text = m.subjects.values().next().cloned().unwrap_or_default();
        let body = Body::Topic { text };
        let sender = sender(inner, &room, &nick);
        return vec![Incoming { room, sender, remote_id: None, aliases: Vec::new(), at_ms: None, body }];
    }
    let Some(nick) = nick else {
        // The room speaking for itself: a moderator took a message back, or
        // a status message (not bridged).
        return match stanzas::Moderated::find(&m.payloads) {
            // Replayed from history on (re)join: bridged when it happened.
            Some(Ok(_)) if child(&m.payloads, "delay", NS_DELAY).is_some() => Vec::new(),
            Some(Ok(moderated)) => moderation(inner, &room, moderated, &m),
            Some(Err(e)) => {
                tracing::warn!(room = %room, "dropping a malformed moderation: {e}");
                Vec::new()
            }
            None => Vec::new(),
        };
    };
    if child(&m.payloads, "delay", NS_DELAY).is_some() {
        // History replayed on join: not new, but it may show that a delivery
        // in doubt did reach the room.
        if let Some(id) = &id {
            let mut st = inner.state();
            if st.sent.in_doubt.contains(id) {
                let sid = convert::stanza_id(&m.payloads, Some(&room));
                st.sent.found.insert(id.clone(), sid);
            }
        }
        return Vec::new();
    }
    {
        let st = inner.state();
        if nick == inner.options.bot_nick || st.ghost.ghost_nicks.get(&room).is_some_and(|n| n.contains(&nick)) {
            return Vec::new(); // our own echo
        }
    }
    let body_text = m.get_best_body_cloned(vec![]).map(|(_, b)| b);
    let size = body_text.as_ref().map_or(0, String::len) + m.subjects.values().map(String::len).sum::<usize>();
    if size > inner.options.max_stanza_bytes {
        tracing::warn!(room = %room, nick = %nick, size, "dropping an oversized message");
        return Vec::new();
    }
    let stanza_id = convert::stanza_id(&m.payloads, Some(&room));
    let referenced = crate::mentions::referenced(&m.payloads, &room);
    match parse_message(&room, sender(inner, &room, &nick), stanza_id, id, body_text, m) {
        // Read markers in group chats only where the operator wants them.
        Ok(Some(incoming)) if matches!(incoming.body, Body::Read { .. }) && !inner.options.read_markers.shown(false) => Vec::new(),
        Ok(Some(mut incoming)) => {
            crate::mentions::read(inner, &room, &nick, &referenced, &mut incoming.body);
            vec![incoming]
        }
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!(room = %room, nick = %nick, "dropping a malformed message: {e}");
            Vec::new()
        }
    }
}

/// A moderator's retraction, as the moderator's retraction event.
pub(crate) fn moderation(inner: &Inner, room: &str, moderated: stanzas::Moderated, m: &Message) -> Vec<Incoming> {
    let nick = moderated.by.as_deref().and_then(|b| b.split_once('/')).map(|(_, n)| n.to_string()).unwrap_or_default();
    let ours = inner.state().rooms.moderated.remove(&moderated.id);
    if ours || nick == inner.options.bot_nick || inner.state().ghost.ghost_nicks.get(room).is_some_and(|n| n.contains(&nick)) {
        return Vec::new(); // our own moderation, announced back
    }
    let remote_id = convert::stanza_id(&m.payloads, Some(room)).or_else(|| m.id.as_ref().map(|i| i.0.clone()));
    let sender = if nick.is_empty() {
        RemoteSender { id: room.to_string(), name: Some("moderator".into()), avatar: None }
    } else {
        sender(inner, room, &nick)
    };
    vec![Incoming {
        room: room.to_string(),
        sender,
        remote_id,
        aliases: Vec::new(),
        at_ms: None,
        body: Body::Retract { target: moderated.id, moderated: true },
    }]
}

fn sender(inner: &Inner, room: &str, nick: &str) -> RemoteSender {
    let real = inner.state().rooms.occupants.get(room).and_then(|o| o.get(nick)).cloned().flatten();
    RemoteSender { id: inner.occupant_id(room, nick, real), name: Some(nick.to_string()), avatar: None }
}

/// Tell the operator, once per room, when a room hides its occupants' real
/// JIDs from the bridge: its people are then occupant ghosts elsewhere.
/// A room shows them when it is non-anonymous (status 100, or 172 when it
/// became so) or when the bridge is a moderator there (an admin or owner).
fn note_anonymity(inner: &Inner, room: &str, muc: Option<&tokio_xmpp::parsers::muc::MucUser>) {
    use tokio_xmpp::parsers::muc::user::Role;
    let Some(muc) = muc else { return };
    let open = muc.status.iter().any(|s| matches!(s, Status::NonAnonymousRoom | Status::ConfigRoomNonAnonymous));
    let moderator = muc.items.iter().any(|i| i.role == Role::Moderator);
    let mapped = inner.options.nicks.contains_key(room);
    let mut st = inner.state();
    if open || moderator {
        if st.rooms.hiding.remove(room) {
            tracing::info!(room, "the room now shows real JIDs to the bridge");
        }
    } else if st.rooms.hiding.insert(room.to_string()) {
        tracing::warn!(
            room,
            nick_map = mapped,
            "the room hides real JIDs from the bridge: its people cannot be told from their nicks, so they show up elsewhere as \
             occupant ghosts{}. Make it non-anonymous (muc#roomconfig_whois: anyone), or make the bridge's JID an admin of the room, \
             or name its people in `nicks`",
            if mapped { " (except those its `nicks` map names)" } else { "" }
        );
    }
}

fn show(p: &Presence) -> Show {
    match p.show {
        None | Some(XShow::Chat) => Show::Online,
        Some(XShow::Away) => Show::Away,
        Some(XShow::Xa) => Show::Xa,
        Some(XShow::Dnd) => Show::Dnd,
    }
}

pub(crate) fn presence(inner: &Inner, p: Presence) -> Vec<Incoming> {
    let (Some(from), Some(to)) = (p.from.clone(), p.to.clone()) else {
        return Vec::new();
    };
    if direct::subscription(inner, &p) {
        return Vec::new();
    }
    let room = from.to_bare().to_string();
    let Some(nick) = from.resource().map(|r| r.as_str().to_string()) else {
        return Vec::new();
    };
    let muc = convert::muc_user(&p.payloads);
    let said = |s: Status| muc.as_ref().is_some_and(|m| m.status.contains(&s));
    let item = muc.as_ref().and_then(|m| m.items.first());
    let mine = said(Status::SelfPresence);
    if !inner.is_bot(&to) {
        // A ghost's join being answered.
        let key = (room.clone(), to.to_bare().to_string());
        let answer = match p.type_ {
            PresenceType::Error => Some(Err(convert::JoinError::of(&p.payloads))),
            PresenceType::None if mine => Some(Ok(())),
            _ => None,
        };
        if let Some(answer) = answer
            && let Some(w) = inner.state().joins.remove(&key)
        {
            let _ = w.send(answer);
        }
        return Vec::new();
    }
    if !inner.links_room(&room) {
        // Anyone can send the bridge presence, with any status codes: only
        // the rooms it sits in are noted (no state for strangers' JIDs).
        return Vec::new();
    }
    if p.type_ == PresenceType::Error {
        tracing::error!(room = %room, "cannot join the room: {}", convert::condition_name(&convert::condition(&p.payloads)));
        inner.state().rooms.refused.insert(room);
        inner.settled.notify_one();
        return Vec::new();
    }
    if mine && p.type_ == PresenceType::None {
        note_anonymity(inner, &room, muc.as_ref());
    }
    let mut st = inner.state();
    if mine {
        if p.type_ == PresenceType::None {
            st.rooms.subject_seen.remove(&room);
            st.rooms.joined.insert(room);
        }
        return Vec::new();
    }
    if st.ghost.ghost_nicks.get(&room).is_some_and(|n| n.contains(&nick)) {
        return Vec::new();
    }
    let joined = st.rooms.joined.contains(&room);
    let real = item.and_then(|i| i.jid.as_ref()).map(|j| j.to_bare().to_string());
    let occupants = st.rooms.occupants.entry(room.clone()).or_default();
    let who = RemoteSender { id: inner.occupant_id(&room, &nick, real.clone()), name: Some(nick.clone()), avatar: None };
    let event = |body| Incoming { room: room.clone(), sender: who.clone(), remote_id: None, aliases: Vec::new(), at_ms: None, body };
    let mut events = Vec::new();
    match p.type_ {
        PresenceType::Unavailable => {
            occupants.remove(&nick);
            if said(Status::NewNick) {
                if let Some(new) = item.and_then(|i| i.nick.as_deref()).filter(|n| !n.is_empty() && n.len() <= 256) {
                    occupants.insert(new.to_string(), real);
                    events.push(event(Body::Membership(Membership::Nick { name: new.to_string() })));
                }
            } else if joined {
                events.push(event(Body::Membership(Membership::Leave)));
            }
        }
        PresenceType::None => {
            let new = occupants.insert(nick.clone(), real).is_none();
            if joined {
                if new {
                    events.push(event(Body::Membership(Membership::Join)));
                }
                let status = p.statuses.values().next().cloned().filter(|s| s.len() <= 1024);
                events.push(event(Body::Presence { show: show(&p), status }));
            }
        }
        _ => {}
    }
    events
}

/// Answer pings; refuse other requests politely.
pub(crate) fn iq(iq: Iq) -> Option<Stanza> {
    let (from, id, payload) = match &iq {
        Iq::Get { from, id, payload, .. } | Iq::Set { from, id, payload, .. } => (from.clone()?, id.clone(), payload),
        _ => return None,
    };
    let me = iq_to(&iq);
    let reply = if payload.is("ping", NS_PING) {
        Iq::empty_result(from, id)
    } else {
        let error = StanzaError::new(ErrorType::Cancel, DefinedCondition::ServiceUnavailable, "en", "not supported by this bridge");
        Iq::from_error(id, error).with_to(from)
    };
    Some(Stanza::Iq(match me {
        Some(me) => reply.with_from(me),
        None => reply,
    }))
}

fn iq_to(iq: &Iq) -> Option<Jid> {
    match iq {
        Iq::Get { to, .. } | Iq::Set { to, .. } | Iq::Result { to, .. } | Iq::Error { to, .. } => to.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::XmppBridge;
    use proptest::prelude::*;
    use tokio_xmpp::minidom::Element;

    const ROOM: &str = "ops@conference.example.org";

    fn bridge() -> XmppBridge {
        let options = serde_json::json!({"domain": "bridge.example.org", "secret": "s", "max_stanza_bytes": 1000});
        let b = XmppBridge::from_options(options).unwrap();
        b.inner.state().ghost.ghost_nicks.entry(ROOM.into()).or_default().insert("Ghost".into());
        b.inner.state().rooms.joined.insert(ROOM.into());
        b
    }

    /// A group chat message to the bridge's occupant from `nick`, with `inner` XML inside.
    fn msg(nick: &str, inner: &str) -> Message {
        let xml = format!(
            "<message xmlns='jabber:component:accept' from='{ROOM}/{nick}' to='causeway@bridge.example.org/causeway' type='groupchat' id='m1'>{inner}<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='s1'/></message>"
        );
        Message::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn one(b: &XmppBridge, m: Message) -> Option<Incoming> {
        let mut v = message(&b.inner, m);
        assert!(v.len() <= 1);
        v.pop()
    }

    /// The cause of a reply that lost its target: someone answered our
    /// message before its confirmation (with the room's stanza-id) was in
    /// the store. The reflection comes first on the stream, so the answer
    /// names the delivery id the store has had since the commit.
    #[test]
    fn an_answer_to_our_message_names_the_delivery_even_before_it_is_recorded() {
        let b = bridge();
        let (tx, mut confirmed) = tokio::sync::oneshot::channel();
        b.inner.state().sent.confirms.insert("d-1".into(), tx);
        let reflection = format!(
            "<message xmlns='jabber:component:accept' from='{ROOM}/Ghost' to='ghost@bridge.example.org/causeway' type='groupchat' id='d-1'><body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='room-7'/></message>"
        );
        assert!(message(&b.inner, Message::try_from(reflection.parse::<Element>().unwrap()).unwrap()).is_empty());
        assert_eq!(confirmed.try_recv().unwrap().unwrap().as_deref(), Some("room-7"));

        let reply = one(&b, msg("Alice", "<body>yes</body><reply xmlns='urn:xmpp:reply:0' id='room-7'/>")).unwrap();
        assert!(matches!(reply.body, Body::Message { reply_to: Some(ref r), .. } if r == "d-1"), "{:?}", reply.body);
        let reaction = "<reactions xmlns='urn:xmpp:reactions:0' id='room-7'><reaction>👍</reaction></reactions>";
        assert!(matches!(one(&b, msg("Alice", reaction)).unwrap().body, Body::Reaction { ref target, .. } if target == "d-1"));
        // Someone else's message keeps the room's id; a part names its message.
        let other = one(&b, msg("Alice", "<body>no</body><reply xmlns='urn:xmpp:reply:0' id='room-1'/>")).unwrap();
        assert!(matches!(other.body, Body::Message { reply_to: Some(ref r), .. } if r == "room-1"));
        let mut r = Reflected::default();
        r.insert(ROOM, "room-8", "d-2.p2");
        r.insert(ROOM, "room-9", "d.pending");
        assert_eq!((r.get(ROOM, "room-8"), r.get(ROOM, "room-9")), (Some("d-2"), Some("d.pending")));
        for i in 0..=Reflected::MAX {
            r.insert(ROOM, &format!("s{i}"), "d");
        }
        assert_eq!(r.get(ROOM, "room-8"), None, "the oldest are forgotten");
        assert_eq!(r.ids.len(), Reflected::MAX);
    }

    #[test]
    fn history_is_taken_only_when_newer_than_the_last_look_and_not_ours() {
        let b = bridge();
        let delayed = |nick: &str, stamp: &str| {
            catch_up(&b.inner, &msg(nick, &format!("<body>hi</body><delay xmlns='urn:xmpp:delay' from='{ROOM}' stamp='{stamp}'/>")))
        };
        // Not replaying (no catch-up for the room): nothing.
        assert!(delayed("Alice", "2025-01-01T00:00:00Z").is_none());
        b.inner.state().history.catch_up.insert(ROOM.into(), 1_700_000_000_000);
        match delayed("Alice", "2025-01-01T00:00:00.5Z") {
            Some(Inbound::CatchUp { incoming, id }) => {
                assert_eq!((incoming.remote_id.as_deref(), id.as_deref()), (Some("s1"), Some("m1")));
                assert_eq!(incoming.at_ms, Some(1_735_689_600_500));
            }
            _ => panic!("a message said while away is taken"),
        }
        for (nick, stamp) in [
            ("Alice", "2020-01-01T00:00:00Z"),    // older than the last look
            ("Ghost", "2025-01-01T00:00:00Z"),    // our own ghost
            ("Causeway", "2025-01-01T00:00:00Z"), // the bridge itself
            ("Alice", "yesterday"),
            ("Alice", ""),
            ("Alice", "2030-13-45T99:00:00Z"),
        ] {
            assert!(delayed(nick, stamp).is_none(), "{nick} {stamp}");
        }
        // A delay the sender wrote (not the room's) proves nothing.
        let own = msg("Alice", "<body>hi</body><delay xmlns='urn:xmpp:delay' from='alice@example.org' stamp='2025-01-01T00:00:00Z'/>");
        assert!(catch_up(&b.inner, &own).is_none());
        // A stamp in the future is now.
        match delayed("Alice", "2999-01-01T00:00:00Z") {
            Some(Inbound::CatchUp { incoming, .. }) => assert!(incoming.at_ms.unwrap() <= causeway_core::now_ms()),
            _ => panic!("taken, at most now"),
        }
        // Without the room's stanza-id it could not be recognised later.
        let bare = "<message xmlns='jabber:component:accept' from='ops@conference.example.org/Alice' to='causeway@bridge.example.org/causeway' type='groupchat' id='m2'><body>x</body><delay xmlns='urn:xmpp:delay' from='ops@conference.example.org' stamp='2025-01-01T00:00:00Z'/></message>";
        assert!(catch_up(&b.inner, &Message::try_from(bare.parse::<Element>().unwrap()).unwrap()).is_none());
        // A room the bridge is not in.
        b.inner.state().rooms.joined.clear();
        assert!(delayed("Alice", "2025-01-01T00:00:00Z").is_none());
    }

    #[test]
    fn a_message_with_everything() {
        let b = bridge();
        let i = one(
            &b,
            msg(
                "Alice",
                "<body>&gt; quoted\n*hi* there</body><reply xmlns='urn:xmpp:reply:0' id='s0'/>\
                 <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='9'/></fallback>\
                 <unknown xmlns='urn:example:whatever'><deep/></unknown>",
            ),
        )
        .unwrap();
        assert_eq!((i.remote_id.as_deref(), i.aliases.as_slice()), (Some("s1"), &["m1".to_string()][..]));
        assert_eq!(i.sender.id, format!("{ROOM}/Alice"));
        match i.body {
            Body::Message { text, reply_to, .. } => {
                assert_eq!(text.plain, "*hi* there");
                assert_eq!(text.html.as_deref(), Some("<strong>hi</strong> there"));
                assert_eq!(reply_to.as_deref(), Some("s0"));
            }
            b => panic!("{b:?}"),
        }
    }

    #[test]
    fn corrections_retractions_reactions_states() {
        let b = bridge();
        let kinds: Vec<&str> = [
            "<body>fixed</body><replace xmlns='urn:xmpp:message-correct:0' id='m0'/>",
            "<retract xmlns='urn:xmpp:message-retract:1' id='s0'/><body>fallback</body>",
            "<reactions xmlns='urn:xmpp:reactions:0' id='s0'><reaction>👍</reaction></reactions>",
            "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
            "<body>/me waves</body>",
        ]
        .iter()
        .map(|x| one(&b, msg("Alice", x)).unwrap().body.kind())
        .collect();
        assert_eq!(kinds, ["edit", "retract", "reaction", "typing", "message"]);
    }

    #[test]
    fn hostile_or_irrelevant_stanzas_are_dropped() {
        let b = bridge();
        let big = format!("<body>{}</body>", "x".repeat(2000));
        for (nick, inner) in [
            ("Ghost", "<body>our own ghost's echo</body>"),
            ("Causeway", "<body>the bridge itself</body>"),
            ("Alice", "<body>old</body><delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:00Z'/>"),
            ("Alice", big.as_str()),
            ("Alice", "<retract xmlns='urn:xmpp:message-retract:1'/>"),
            ("Alice", "<reply xmlns='urn:xmpp:reply:0'/><body>x</body>"),
            (
                "Alice",
                "<body>x</body><reply xmlns='urn:xmpp:reply:0' id='s0'/><fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='9' end='1'/></fallback>",
            ),
            ("Alice", "<reactions xmlns='urn:xmpp:reactions:0'><reaction>x</reaction></reactions>"),
            ("Alice", "<replace xmlns='urn:xmpp:message-correct:0' id='m0'/>"),
            ("Alice", "<unknown xmlns='urn:example:x'/>"),
            ("Alice", "<body>   </body>"),
        ] {
            assert!(one(&b, msg(nick, inner)).is_none(), "{nick}: {inner:.80}");
        }
        // Not for the bridge's occupant: one of the ghosts' copies.
        let copy = "<message xmlns='jabber:component:accept' from='ops@conference.example.org/Alice' to='ghost@bridge.example.org/causeway' type='groupchat'><body>x</body></message>";
        assert!(message(&b.inner, Message::try_from(copy.parse::<Element>().unwrap()).unwrap()).is_empty());
        // A room the bridge is not in (a forged `from`).
        let forged = "<message xmlns='jabber:component:accept' from='other@conference.evil.example/Alice' to='causeway@bridge.example.org/causeway' type='groupchat' id='f1'><body>x</body></message>";
        assert!(message(&b.inner, Message::try_from(forged.parse::<Element>().unwrap()).unwrap()).is_empty());
        // A direct message is not bridged (yet), whoever claims to send it.
        let dm = "<message xmlns='jabber:component:accept' from='mallory@evil.example/x' to='causeway@bridge.example.org/causeway' type='chat'><body>x</body></message>";
        assert!(message(&b.inner, Message::try_from(dm.parse::<Element>().unwrap()).unwrap()).is_empty());
    }

    #[test]
    fn a_moderators_retraction_is_a_retraction() {
        let b = bridge();
        let announce = |by: &str| {
            let xml = format!(
                "<message xmlns='jabber:component:accept' from='{ROOM}' to='causeway@bridge.example.org/causeway' type='groupchat' id='a1'>\
                 <apply-to xmlns='urn:xmpp:fasten:0' id='s9'><moderated xmlns='urn:xmpp:message-moderate:0' by='{ROOM}/{by}'>\
                 <retract xmlns='urn:xmpp:message-retract:0'/></moderated></apply-to></message>"
            );
            Message::try_from(xml.parse::<Element>().unwrap()).unwrap()
        };
        let i = one(&b, announce("Mod")).unwrap();
        assert_eq!(i.body, Body::Retract { target: "s9".into(), moderated: true });
        assert_eq!(i.sender.name.as_deref(), Some("Mod"));
        assert!(one(&b, announce("Causeway")).is_none(), "our own moderation comes back");
    }

    #[test]
    fn occupants_join_change_and_leave() {
        let b = bridge();
        let presence = |inner: &str, ty: &str| {
            let xml = format!(
                "<presence xmlns='jabber:component:accept' from='{ROOM}/Bob' to='causeway@bridge.example.org/causeway'{ty}>{inner}<x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant' jid='bob@example.org/phone'/></x></presence>"
            );
            Presence::try_from(xml.parse::<Element>().unwrap()).unwrap()
        };
        let events = super::presence(&b.inner, presence("<show>dnd</show><status>busy</status>", ""));
        let kinds: Vec<&str> = events.iter().map(|e| e.body.kind()).collect();
        assert_eq!(kinds, ["membership", "presence"]);
        assert_eq!(events[1].sender.id, "bob@example.org");
        assert_eq!(events[1].body, Body::Presence { show: Show::Dnd, status: Some("busy".into()) });
        let events = super::presence(&b.inner, presence("", " type='unavailable'"));
        assert_eq!(events[0].body, Body::Membership(Membership::Leave));
    }

    /// Presence from ten thousand JIDs that are not a room of ours — with
    /// the "this is you" status 110, errors, occupants — leaves nothing
    /// behind: no joined room, no refusal, no occupant list.
    #[test]
    fn strangers_presence_leaves_no_state() {
        let b = bridge();
        for i in 0..10_000 {
            let (from, ty, codes) = match i % 3 {
                0 => (format!("room{i}@conference.evil.example/Causeway"), "", "<status code='110'/>"),
                1 => (format!("room{i}@conference.evil.example/Causeway"), " type='error'", ""),
                _ => (format!("mallory{i}@evil.example/r{i}"), "", ""),
            };
            let xml = format!(
                "<presence xmlns='jabber:component:accept' from='{from}' to='causeway@bridge.example.org/causeway'{ty}><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator' jid='m{i}@evil.example'/>{codes}</x></presence>"
            );
            let events = super::presence(&b.inner, Presence::try_from(xml.parse::<Element>().unwrap()).unwrap());
            assert!(events.is_empty());
        }
        let st = b.inner.state();
        assert_eq!(st.rooms.joined.len(), 1, "only our own room");
        assert!(st.rooms.refused.is_empty() && st.rooms.occupants.is_empty() && st.rooms.subject_seen.is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(
            name in "[a-z]{1,8}", ns in "(urn:xmpp:[a-z:-]{0,20})|(jabber:x:oob)|(urn:xmpp:reactions:0)",
            attr in "[a-zA-Z0-9 ]{0,12}", text in "[^<>&]{0,40}"
        ) {
            let b = bridge();
            let inner = format!("<{name} xmlns='{ns}' id='{attr}' start='{attr}' end='{attr}'>{text}<url>{text}</url></{name}><body>{text}</body>");
            let xml = format!(
                "<message xmlns='jabber:component:accept' from='{ROOM}/Alice' to='causeway@bridge.example.org/causeway' type='groupchat' id='m1'>{inner}</message>"
            );
            // What is not XML, or not a message, never gets past the stream parser.
            let parsed = xml.parse::<Element>().ok().and_then(|e| Message::try_from(e).ok());
            prop_assume!(parsed.is_some());
            let _ = message(&b.inner, parsed.unwrap());
        }
    }
}
