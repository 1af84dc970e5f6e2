//! Events → Matrix events, sent by ghosts with the delivery id as the
//! transaction id (so a retry is the same event, never a second one).

use causeway_core::{Attachment, Body, Delivered, Delivery, DeliveryError, Membership, Mention, MessageKind, Recipient, Show, Text};
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use crate::client::{Client, ErrCode};
use crate::{Inner, ghost};
use causeway_core::text::{Oversize, escape_html, preview};

/// `m.room.message` content for a text.
fn text_content(text: &Text, kind: MessageKind) -> Value {
    let msgtype = match kind {
        MessageKind::Text => "m.text",
        MessageKind::Notice => "m.notice",
        MessageKind::Emote => "m.emote",
    };
    let mut c = json!({"msgtype": msgtype, "body": text.plain});
    if let Some(html) = &text.html {
        c["format"] = json!("org.matrix.custom.html");
        c["formatted_body"] = json!(html);
    }
    c
}

/// Largest content of one text event. Homeservers refuse events over
/// 64 KiB (`M_TOO_LARGE`), envelope and signatures included.
const MAX_CONTENT_BYTES: usize = 60 * 1024;

/// With `oversize: file`: how much of a long text is shown in the room, and
/// the name of the file that holds all of it.
const PREVIEW_BYTES: usize = 2 * 1024;
const LONG_TEXT_FILE: &str = "message.txt";

/// A text as one event, or, when it is larger than one event may be, as
/// numbered plain-text events (`<id>`, `<id>.p2`, `<id>.p3` … as
/// transaction ids): size is never a reason not to deliver.
fn text_contents(id: &str, text: &Text, kind: MessageKind) -> Vec<(String, Value)> {
    let whole = text_content(text, kind);
    if whole.to_string().len() <= MAX_CONTENT_BYTES {
        return vec![(id.to_string(), whole)];
    }
    let plain_only = Text::plain(text.plain.clone());
    let plain = text_content(&plain_only, kind);
    if plain.to_string().len() <= MAX_CONTENT_BYTES {
        return vec![(id.to_string(), plain)];
    }
    // JSON escaping can make a text longer (up to six bytes for one):
    // smaller pieces until each fits.
    let mut budget = MAX_CONTENT_BYTES - 256;
    loop {
        let parts: Vec<Value> =
            causeway_core::text::numbered_parts(&text.plain, budget).iter().map(|p| text_content(&Text::plain(p.clone()), kind)).collect();
        if budget <= 1024 || parts.iter().all(|c| c.to_string().len() <= MAX_CONTENT_BYTES) {
            return parts
                .into_iter()
                .enumerate()
                .map(|(i, c)| (if i == 0 { id.to_string() } else { format!("{id}.p{}", i + 1) }, c))
                .collect();
        }
        budget /= 2;
    }
}

/// The `msgtype` for a file of this MIME type.
fn file_msgtype(mime: &str) -> &'static str {
    match mime.split('/').next() {
        Some("image") => "m.image",
        Some("video") => "m.video",
        Some("audio") => "m.audio",
        _ => "m.file",
    }
}

/// The relation of a message: a thread (with its reply or fallback), or a reply.
fn relation(reply_to: Option<&String>, thread: Option<&String>) -> Option<Value> {
    match (thread, reply_to) {
        (Some(root), reply) => Some(json!({
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": reply.is_none(),
            "m.in_reply_to": {"event_id": reply.unwrap_or(root)},
        })),
        (None, Some(reply)) => Some(json!({"m.in_reply_to": {"event_id": reply}})),
        (None, None) => None,
    }
}

fn presence_state(show: Show) -> &'static str {
    match show {
        Show::Online => "online",
        Show::Away | Show::Xa | Show::Dnd => "unavailable",
        Show::Offline => "offline",
    }
}

/// Where the ghost's reaction (target, key) is remembered, to take it back.
fn reaction_key(room: &RoomId, ghost: &UserId, target: &str, key: &str) -> String {
    format!("reaction:{room}:{ghost}:{target}:{key}")
}

/// The content key that marks what Causeway sent as a person's own account
/// (double puppeting), so it is not taken back in as theirs.
pub(crate) const PUPPET_MARK: &str = "net.causeway.puppet";
/// Causeway's mark on every event it sends: an event carrying it was
/// relayed by a Causeway (this one or another) and is never relayed again,
/// so two bridges on the same pair of rooms do not ping-pong.
pub(crate) const RELAY_MARK: &str = "net.causeway.relayed";

/// Who says a delivery in Matrix: the sender's ghost, or the person's own
/// account (double puppeting).
struct Actor<'a> {
    user: OwnedUserId,
    client: &'a Client,
    puppet: bool,
    /// Causeway's mark: `true`, or, with a peer configured, the id the
    /// message had where it came from and the mark's signature.
    relay: Value,
}

impl Actor<'_> {
    fn mark(&self, mut content: Value) -> Value {
        if self.puppet {
            content[PUPPET_MARK] = json!(true);
        }
        content[RELAY_MARK] = self.relay.clone();
        content
    }
}

/// One piece (over 80 lines): who speaks (ghost or the person's own account),
/// the relay mark, and one arm per event kind that share them; split, each arm
/// would take all of them again.
pub(crate) async fn deliver(inner: &Inner, d: &Delivery) -> Result<Delivered, DeliveryError> {
    let room = inner.room_id(&d.room)?;
    let sender = &d.event.sender;
    // In a direct conversation, the ghost in its room says it all.
    let ghost_id = match inner.direct_ghost(&d.room) {
        Some(g) => g,
        None => ghost::user_id(&inner.options.ghost_prefix, &inner.options.server_name, sender, &d.event.origin.bridge)
            .map_err(DeliveryError::permanent)?,
    };
    let mut puppet = inner.puppet_of(sender, &d.event.origin.bridge, &room);
    // An edit or a redaction comes from whoever sent what it changes: a
    // message the ghost sent (before the person's account was in the room)
    // stays the ghost's.
    if puppet.is_some()
        && let Body::Edit { target, .. } | Body::Retract { target, .. } = &d.event.body
        && let Ok(Some(by)) = inner.client.event_sender(room.as_str(), target).await
        && by == ghost_id
    {
        puppet = None;
    }
    let relay = match (&d.event.origin.remote_id, inner.ctx.get()) {
        (Some(origin), Some(ctx)) => match ctx.sign_mark(&d.room, origin) {
            Some(sig) => json!({"origin": origin, "sig": sig}),
            None => json!(true),
        },
        _ => json!(true),
    };
    let actor = match (puppet, &inner.puppet) {
        (Some(user), Some(client)) => Actor { user, client, puppet: true, relay },
        _ => {
            inner.ensure_ghost(&ghost_id, sender).await?;
            Actor { user: ghost_id.clone(), client: &inner.client, puppet: false, relay }
        }
    };
    let ghost = &actor.user;
    let r = room.as_str();
    match &d.event.body {
        // A person's own account: their own clients say where they are and
        // whether they type, and Causeway does not move them in or out.
        Body::Presence { .. } | Body::Typing { .. } | Body::Membership(_) if actor.puppet => return Ok(Delivered::default()),
        Body::Presence { show, status } => {
            let status = status.clone().or_else(|| (*show == Show::Dnd).then(|| "do not disturb".to_string()));
            inner.client.presence(ghost, presence_state(*show), status.as_deref()).await?;
            return Ok(Delivered::default());
        }
        Body::Membership(Membership::Leave) => {
            inner.state().joined.remove(&(room.clone(), ghost.clone()));
            match inner.client.leave(r, ghost).await {
                // Not in the room (any more): nothing to leave.
                Err(e) if e.is(ErrCode::Forbidden) || e.is(ErrCode::NotFound) => {}
                other => other?,
            }
            return Ok(Delivered::default());
        }
        _ => {}
    }
    if !actor.puppet {
        inner.ensure_joined(&room, ghost).await?;
    }
    // Events sent as the person's account are recognised when the
    // homeserver passes them back.
    let _in_flight = actor.puppet.then(|| InFlight::new(inner, &room, ghost));
    let id = &d.id;
    let sent = match &d.event.body {
        // Presence was sent above; joining is what ensure_joined did.
        Body::Membership(_) | Body::Presence { .. } => return Ok(Delivered::default()),
        Body::Typing { active } => {
            inner.client.typing(r, ghost, *active).await?;
            return Ok(Delivered::default());
        }
        Body::Read { target } => {
            actor.client.read_receipt(r, target, ghost).await?;
            return Ok(Delivered::default());
        }
        Body::Topic { text } => {
            let content = actor.mark(json!({"topic": text}));
            match actor.client.set_state(r, "m.room.topic", "", &content, ghost).await {
                Err(e) if e.is(ErrCode::Forbidden) => inner.client.set_state(r, "m.room.topic", "", &content, &inner.bot).await?,
                other => other?,
            }
        }
        Body::Retract { target, .. } => {
            let content = actor.mark(json!({"reason": format!("taken back by {} on another network", sender.name)}));
            match actor.client.redact(r, target, id, &content, ghost).await {
                // Someone else's message: the bridge's user redacts it as moderator.
                Err(e) if e.is(ErrCode::Forbidden) => inner.client.redact(r, target, id, &content, &inner.bot).await.map_err(|e| {
                    DeliveryError::permanent(format!("cannot redact in {}: {e} (give {} moderator rights there)", d.room, inner.bot))
                })?,
                other => other?,
            }
        }
        Body::Reaction { target, key, removed: false } => {
            let content = actor.mark(json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}));
            let event = actor.client.send(r, "m.reaction", id, &content, ghost).await?;
            if let Some(ctx) = inner.ctx.get() {
                // Needed to take the reaction back; the retry sends the same event.
                ctx.save_message_state(&reaction_key(&room, ghost, target, key), event.as_str())
                    .await
                    .map_err(|e| DeliveryError::transient(e.to_string()))?;
            }
            event
        }
        Body::Reaction { target, key, removed: true } => {
            let Some(ctx) = inner.ctx.get() else { return Ok(Delivered::default()) };
            let load = async |user: &UserId| {
                ctx.load_state(&reaction_key(&room, user, target, key)).await.map_err(|e| DeliveryError::transient(e.to_string()))
            };
            let mut stored = load(ghost).await?.map(|e| (e, &actor.user, actor.client, actor.puppet));
            if stored.is_none() && actor.puppet {
                // Reacted before as the ghost: taken back as the ghost.
                stored = load(&ghost_id).await?.map(|e| (e, &ghost_id, &inner.client, false));
            }
            match stored {
                Some((event, user, client, puppet)) => {
                    let content = if puppet { actor.mark(json!({})) } else { json!({}) };
                    let redaction = client.redact(r, &event, id, &content, user).await?;
                    let _ = ctx.delete_state(&reaction_key(&room, user, target, key)).await;
                    redaction
                }
                // Nothing of ours to take back.
                None => return Ok(Delivered::default()),
            }
        }
        Body::Edit { target, text } => {
            let new = text_content(text, MessageKind::Text);
            let mut content = text_content(
                &Text { plain: format!("* {}", text.plain), html: text.html.as_ref().map(|h| format!("* {h}")) },
                MessageKind::Text,
            );
            content["m.new_content"] = new;
            content["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": target});
            send(inner, &room, &actor, id, &actor.mark(content)).await?
        }
        Body::Message { text, kind, attachments, reply_to, thread, mentions } => {
            return send_message(inner, &room, &actor, id, text, *kind, attachments, reply_to.as_ref(), thread.as_ref(), mentions).await;
        }
    };
    if actor.puppet {
        inner.sent_as(&sent);
    }
    Ok(Delivered { remote_id: Some(sent.to_string()) })
}

/// A send as a person's own account under way, from before it is sent
/// until it is answered.
struct InFlight<'a> {
    inner: &'a Inner,
    key: (ruma::OwnedRoomId, OwnedUserId),
}

impl<'a> InFlight<'a> {
    fn new(inner: &'a Inner, room: &RoomId, user: &UserId) -> Self {
        let key = (room.to_owned(), user.to_owned());
        *inner.state().puppet_inflight.entry(key.clone()).or_default() += 1;
        InFlight { inner, key }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.state();
        if let Some(n) = st.puppet_inflight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.puppet_inflight.remove(&self.key);
            }
        }
    }
}

/// Where the bridge's own user keeps the direct room of a person it
/// delivers broadcasts to (`bridge_state`, by their user id).
const PERSON_ROOM_KEY: &str = "person-room:";

/// Deliver a broadcast to one person ([`causeway_core::PEOPLE_ROOM`]): the
/// bridge's own user writes in its direct room with them, made (and
/// they invited) the first time; they read it when they are back.
pub(crate) async fn deliver_to_person(inner: &Inner, d: &Delivery) -> Result<Delivered, DeliveryError> {
    let account = d.recipient.as_deref().ok_or_else(|| DeliveryError::permanent("a delivery to people names nobody"))?;
    let user = UserId::parse(account).map_err(|e| DeliveryError::permanent(format!("{account:?} is not a Matrix user: {e}")))?;
    if inner.is_ours(user.as_str()) {
        return Err(DeliveryError::permanent(format!("{user} is Causeway's own user")));
    }
    let Body::Message { text, kind, attachments, .. } = &d.event.body else { return Ok(Delivered::default()) };
    let ctx = inner.ctx.get().ok_or_else(|| DeliveryError::transient("starting"))?;
    let key = format!("{PERSON_ROOM_KEY}{user}");
    let known = ctx.load_state(&key).await.map_err(|e| DeliveryError::transient(e.to_string()))?;
    let mut room = known.and_then(|r| ruma::OwnedRoomId::try_from(r).ok());
    if let Some(r) = &room {
        // A room they left (or were never let into) reaches nobody: a new one.
        let membership = inner.client.membership(r.as_str(), &user, None).await?;
        if !matches!(membership.as_deref(), Some("join" | "invite")) {
            room = None;
        }
    }
    let room = match room {
        Some(r) => r,
        None => {
            let body = json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [user.as_str()], "name": "Announcements"});
            let r = inner.client.create_room(&body, None).await?;
            ctx.save_state(&key, r.as_str()).await.map_err(|e| DeliveryError::transient(e.to_string()))?;
            tracing::info!(room = %r, with = %user, "opened the room that brings broadcasts to a Matrix user");
            r
        }
    };
    let actor = Actor { user: inner.bot.clone(), client: &inner.client, puppet: false, relay: json!(true) };
    let text = causeway_core::text::announced_by(text, &d.event.sender.name);
    send_message(inner, &room, &actor, &d.id, &text, *kind, attachments, None, None, &[]).await?;
    // Nothing refers to it later: no id to keep.
    Ok(Delivered::default())
}

/// Send a message event as the actor; if the homeserver says they are not
/// in the room (removed meanwhile), join again and retry once.
async fn send(inner: &Inner, room: &RoomId, actor: &Actor<'_>, txn: &str, content: &Value) -> Result<ruma::OwnedEventId, DeliveryError> {
    let sent = match actor.client.send(room.as_str(), "m.room.message", txn, content, &actor.user).await {
        // The ghost was removed meanwhile: in again. (A person's own account
        // is never moved: the delivery fails and is retried, as the ghost
        // if they have left.)
        Err(e) if e.is(ErrCode::Forbidden) && !actor.puppet => {
            inner.state().joined.remove(&(room.to_owned(), actor.user.clone()));
            inner.ensure_joined(room, &actor.user).await?;
            actor.client.send(room.as_str(), "m.room.message", txn, content, &actor.user).await?
        }
        other => other?,
    };
    if actor.puppet {
        inner.sent_as(&sent);
    }
    Ok(sent)
}

/// A message: its text, then each file as its own event (`<id>.<n>` as
/// transaction ids). The first event is the message's id on Matrix.
///
/// One piece (over 80 lines): the text event and then each file, which share
/// the ids, the sender and the fallback to links.
#[allow(clippy::too_many_arguments)]
async fn send_message(
    inner: &Inner,
    room: &RoomId,
    actor: &Actor<'_>,
    id: &str,
    text: &Text,
    kind: MessageKind,
    attachments: &[Attachment],
    reply_to: Option<&String>,
    thread: Option<&String>,
    mentions: &[Mention],
) -> Result<Delivered, DeliveryError> {
    let rel = relation(reply_to, thread);
    let (text, mentioned) = &with_pills(inner, text, mentions);
    let everyone = mentions.iter().any(Mention::is_room);
    let mut files = Vec::new();
    let mut links = Vec::new();
    for (i, a) in attachments.iter().enumerate() {
        match inner.copy_media(&a.url, a.name.as_deref()).await? {
            Ok((mxc, mime, size)) => {
                let name = a.name.clone().unwrap_or_else(|| a.url.rsplit('/').next().unwrap_or("file").to_string());
                let mime = a.mime.clone().unwrap_or(mime);
                // The transaction id follows the file, not its place among
                // those copied this time.
                files.push((
                    format!("{id}.f{i}"),
                    json!({
                        "msgtype": file_msgtype(&mime),
                        "body": name,
                        "filename": name,
                        "url": mxc,
                        "info": {"mimetype": mime, "size": size},
                        "external_url": a.url,
                    }),
                ));
            }
            Err(e) => {
                tracing::warn!(url = %causeway_core::secret::link_for_log(&a.url), "not copied to the media repository, sending the link: {e}");
                links.push(a.url.clone());
            }
        }
    }
    let mut text = text.clone();
    if !links.is_empty() {
        let joined = links.join("\n");
        text.plain = if text.plain.is_empty() { joined.clone() } else { format!("{}\n{joined}", text.plain) };
        let anchors: Vec<String> = links
            .iter()
            .map(|l| {
                let l = escape_html(l);
                format!("<a href=\"{l}\">{l}</a>")
            })
            .collect();
        text.html = text.html.map(|h| format!("{h}<br>{}", anchors.join("<br>")));
    }
    let mut contents = Vec::new();
    if !text.plain.trim().is_empty() {
        let long = text_contents(id, &text, kind);
        if long.len() > 1 && inner.options.oversize == Oversize::File {
            // The first lines in the room, the whole text beside them.
            let bytes = text.plain.clone().into_bytes();
            let size = bytes.len();
            let mxc = inner.client.upload(bytes, "text/plain; charset=utf-8", Some(LONG_TEXT_FILE)).await?;
            contents.push((id.to_string(), text_content(&Text::plain(preview(&text.plain, PREVIEW_BYTES, LONG_TEXT_FILE)), kind)));
            contents.push((
                format!("{id}.txt"),
                json!({
                    "msgtype": "m.file",
                    "body": LONG_TEXT_FILE,
                    "filename": LONG_TEXT_FILE,
                    "url": mxc,
                    "info": {"mimetype": "text/plain", "size": size},
                }),
            ));
        } else {
            contents.extend(long);
        }
    }
    contents.extend(files);
    let mut first = None;
    for (txn, mut content) in contents {
        if let Some(rel) = &rel {
            content["m.relates_to"] = rel.clone();
        }
        content["m.mentions"] = if everyone { json!({"user_ids": mentioned, "room": true}) } else { json!({"user_ids": mentioned}) };
        let event = send(inner, room, actor, &txn, &actor.mark(content)).await?;
        first.get_or_insert(event);
    }
    Ok(Delivered { remote_id: first.map(|e| e.to_string()) })
}

/// The Matrix user a mention names: an account here as itself, a person
/// as their account here or else their ghost, an account elsewhere as its
/// ghost.
fn mentioned_user(inner: &Inner, m: &Mention) -> Option<OwnedUserId> {
    let ctx = inner.ctx.get()?;
    let (prefix, server) = (&inner.options.ghost_prefix, &inner.options.server_name);
    match m.recipient()? {
        Recipient::Account { bridge, id } if bridge == ctx.name() => UserId::parse(&id).ok(),
        Recipient::Person(p) => match ctx.account_of(&p) {
            Some(id) => UserId::parse(&id).ok(),
            None => ghost::user_id_of(prefix, server, &p).ok(),
        },
        r @ Recipient::Account { .. } => ghost::user_id_of(prefix, server, &r.to_string()).ok(),
    }
}

/// `text` with a pill (`<a href="https://matrix.to/#/…">`) where it names
/// someone it mentions, and the users it mentions (for `m.mentions`).
fn with_pills(inner: &Inner, text: &Text, mentions: &[Mention]) -> (Text, Vec<String>) {
    let users: Vec<(Mention, OwnedUserId)> = mentions.iter().filter_map(|m| mentioned_user(inner, m).map(|u| (m.clone(), u))).collect();
    let ids: Vec<String> = users.iter().map(|(_, u)| u.to_string()).collect();
    let named: Vec<Mention> = users.iter().map(|(m, _)| m.clone()).collect();
    let (_, placed) = causeway_core::event::rename_mentions(&text.plain, &named, |m| m.text.clone());
    if placed.is_empty() {
        return (text.clone(), ids);
    }
    let pill = |m: &Mention, shown: &str| {
        let user = users.iter().find(|(x, _)| x == m).map(|(_, u)| u.to_string()).unwrap_or_default();
        format!("<a href=\"https://matrix.to/#/{}\">{}</a>", escape_html(&user), escape_html(shown))
    };
    let html = match &text.html {
        // Where the HTML names them as the text does, there.
        Some(h) => {
            let mut h = h.clone();
            for (_, m) in &placed {
                if let Some(w) = &m.text
                    && let Some(at) = h.find(&escape_html(w))
                {
                    h.replace_range(at..at + escape_html(w).len(), &pill(m, w));
                }
            }
            h
        }
        None => {
            let mut h = String::new();
            let mut at = 0;
            for (r, m) in &placed {
                h.push_str(&escape_html(&text.plain[at..r.start]));
                h.push_str(&pill(m, &text.plain[r.clone()]));
                at = r.end;
            }
            h.push_str(&escape_html(&text.plain[at..]));
            h.replace('\n', "<br>")
        }
    };
    (Text { plain: text.plain.clone(), html: Some(html) }, ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_for_replies_and_threads() {
        let (root, reply) = ("$root".to_string(), "$r".to_string());
        assert_eq!(relation(Some(&reply), None).unwrap(), json!({"m.in_reply_to": {"event_id": "$r"}}));
        let t = relation(None, Some(&root)).unwrap();
        assert_eq!((t["rel_type"].as_str(), t["is_falling_back"].as_bool()), (Some("m.thread"), Some(true)));
        let t = relation(Some(&reply), Some(&root)).unwrap();
        assert_eq!((t["m.in_reply_to"]["event_id"].as_str(), t["is_falling_back"].as_bool()), (Some("$r"), Some(false)));
        assert!(relation(None, None).is_none());
    }

    #[test]
    fn texts_larger_than_an_event_become_numbered_events() {
        let small = text_contents("d1", &Text { plain: "hi".into(), html: Some("<b>hi</b>".into()) }, MessageKind::Text);
        assert_eq!(small.len(), 1);
        assert_eq!(small[0].1["formatted_body"], "<b>hi</b>");
        // 139 kB as from XMPP: parts of at most 60 KiB, the first under the delivery id.
        let big = "a line of text that goes on\n".repeat(5000);
        let parts = text_contents("d2", &Text { plain: big.clone(), html: Some(format!("<p>{big}</p>")) }, MessageKind::Text);
        assert!(parts.len() >= 3, "{}", parts.len());
        assert_eq!(parts[0].0, "d2");
        assert_eq!(parts[1].0, "d2.p2");
        assert!(parts.iter().all(|(_, c)| c.to_string().len() <= MAX_CONTENT_BYTES && c.get("formatted_body").is_none()));
        assert!(parts[0].1["body"].as_str().unwrap().starts_with(&format!("(1/{}) ", parts.len())));
        let said: usize = parts.iter().map(|(_, c)| c["body"].as_str().unwrap().matches("a line of text").count()).sum();
        assert_eq!(said, 5000, "nothing lost between the parts");
        // Characters JSON escapes six times over still fit.
        let escaped = text_contents("d3", &Text::plain("\u{1}".repeat(40_000)), MessageKind::Notice);
        assert!(escaped.iter().all(|(_, c)| c.to_string().len() <= MAX_CONTENT_BYTES), "{}", escaped.len());
    }

    #[test]
    fn contents_carry_html_and_kinds() {
        let c = text_content(&Text { plain: "hi".into(), html: Some("<b>hi</b>".into()) }, MessageKind::Emote);
        assert_eq!(c["msgtype"], "m.emote");
        assert_eq!(c["formatted_body"], "<b>hi</b>");
        assert_eq!(file_msgtype("image/png"), "m.image");
        assert_eq!(file_msgtype("text/plain"), "m.file");
        assert_eq!(presence_state(Show::Dnd), "unavailable");
    }
}
