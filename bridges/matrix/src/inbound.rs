//! The homeserver → Causeway side: the application service endpoints.
//!
//! `PUT /_matrix/app/v1/transactions/{txn}` carries room events (and, with
//! `receive_ephemeral`, typing and presence). Each event is parsed with
//! ruma's types; one that does not parse is logged and dropped, the rest of
//! the transaction goes on. The answer is `200` only once every event is
//! committed: otherwise the homeserver sends the transaction again, and the
//! router recognises what it already has by event id.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use causeway_core::text::{html_to_plain, sanitize_html};
use causeway_core::{
    Accepted, Attachment, Body, BridgeContext, Incoming, Membership, Mention, MessageKind, RemoteSender, Show, SubmitError, Text,
};
use ruma::api::appservice::event::push_events::v1::EphemeralData;
use ruma::events::room::MediaSource;
use ruma::events::room::member::MembershipState;
use ruma::events::room::message::{MessageType, Relation, RoomMessageEventContent};
use ruma::events::{AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent};
use ruma::presence::PresenceState;
use ruma::serde::Raw;
use ruma::{OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::json;

use crate::Inner;

/// Largest transaction body taken.
const MAX_TRANSACTION: usize = 16 * 1024 * 1024;

pub(crate) fn routes(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/_matrix/app/v1/transactions/{txn}", put(transaction))
        .route("/_matrix/app/v1/users/{user}", get(query))
        .route("/_matrix/app/v1/rooms/{alias}", get(query))
        .route("/_matrix/app/v1/ping", post(ping))
        .route("/media/{server}/{media}", get(media))
        .layer(DefaultBodyLimit::max(MAX_TRANSACTION))
        .with_state(inner)
}

fn matrix_error(status: StatusCode, errcode: &str, error: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({"errcode": errcode, "error": error.to_string()}))).into_response()
}

#[derive(Deserialize)]
struct AuthQuery {
    access_token: Option<String>,
    sig: Option<String>,
}

/// The homeserver's token: `Authorization: Bearer`, or `?access_token=` as
/// older homeservers send it — only with `hs_token_in_query: true` (a token
/// in a URL ends up in proxies' and servers' access logs). Compared in
/// constant time.
#[expect(clippy::result_large_err, reason = "the refusal is the handler's answer as it is, once per request")]
fn authorize(inner: &Inner, headers: &HeaderMap, q: &AuthQuery) -> Result<(), Response> {
    let bearer = causeway_core::http::bearer(headers);
    let count = |reason| {
        if let Some(ctx) = inner.ctx.get() {
            ctx.count_rejected(reason);
        }
    };
    let in_query = q.access_token.as_deref().filter(|_| inner.options.hs_token_in_query);
    if bearer.is_none() && in_query.is_none() && q.access_token.is_some() {
        count("token_in_query");
        return Err(matrix_error(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "send the token as Authorization: Bearer (or set hs_token_in_query for a homeserver that cannot)",
        ));
    }
    match bearer.or(in_query.map(str::as_bytes)) {
        None => {
            count("unauthorized");
            Err(matrix_error(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", "no token"))
        }
        Some(t) if inner.options.hs_token.matches(t) => Ok(()),
        Some(_) => {
            count("unauthorized");
            Err(matrix_error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "wrong token"))
        }
    }
}

/// A transaction's body (`push_events`), each event kept raw until it is
/// parsed on its own.
#[derive(Deserialize)]
struct Transaction {
    #[serde(default)]
    events: Vec<Raw<AnyTimelineEvent>>,
    #[serde(default)]
    ephemeral: Vec<Raw<EphemeralData>>,
    /// The same under its unstable name (older Synapse; newer sends both).
    #[serde(default, rename = "de.sorunome.msc2409.ephemeral")]
    unstable_ephemeral: Vec<Raw<EphemeralData>>,
}

/// Transactions remembered as done (only to skip work: a resent event is
/// recognised by its event id anyway).
const RECENT_TXNS: usize = 1024;

async fn transaction(
    State(inner): State<Arc<Inner>>,
    Path(txn): Path<String>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&inner, &headers, &q) {
        return r;
    }
    let Some(ctx) = inner.ctx.get() else {
        return matrix_error(StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN", "starting");
    };
    let t: Transaction = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            ctx.count_rejected("malformed");
            return matrix_error(StatusCode::BAD_REQUEST, "M_BAD_JSON", e);
        }
    };
    // One transaction or reconciliation pass at a time (the homeserver
    // sends one at a time anyway).
    let _intake = inner.intake.lock().await;
    if inner.state().txns.contains(&txn) {
        return (StatusCode::OK, axum::Json(json!({}))).into_response();
    }
    let last = inner.state().last_txn;
    if crate::reconcile::skips(last, &txn) {
        // The homeserver left out a transaction (or Causeway did not take
        // it before it stopped): its events come first.
        tracing::info!(bridge = ctx.name(), last = ?last, txn = %txn, "a transaction was skipped; reconciling the rooms");
        if let Err(e) = reconcile_rooms(&inner, ctx).await {
            return matrix_error(StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN", e);
        }
    }
    for raw in t.events {
        if let Err(e) = timeline_event(&inner, ctx, raw).await {
            // Nothing after this event is taken; the homeserver sends the
            // whole transaction again, and what was taken is recognised.
            return matrix_error(StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN", e);
        }
    }
    let data = if t.ephemeral.is_empty() { t.unstable_ephemeral } else { t.ephemeral };
    for raw in data {
        if let Err(e) = ephemeral(&inner, ctx, raw).await {
            return matrix_error(StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN", e);
        }
    }
    let save = {
        let mut st = inner.state();
        if st.txns.len() >= RECENT_TXNS {
            st.txns.pop_front();
        }
        if let Ok(n) = txn.parse::<u64>() {
            // A lower number: the homeserver counts anew (a reset database).
            st.last_txn =
                Some(if st.last_txn.is_some_and(|l| l > n + RECENT_TXNS as u64) { n } else { st.last_txn.map_or(n, |l| l.max(n)) });
        }
        st.txns.push_back(txn);
        // Stored now and then: one behind only costs a reconciliation at start.
        let due = st.last_txn_saved.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(2));
        if due {
            st.last_txn_saved = Some(std::time::Instant::now());
        }
        st.last_txn.filter(|_| due)
    };
    if let Some(n) = save
        && let Err(e) = ctx.save_state(crate::reconcile::TXN_KEY, &n.to_string()).await
    {
        tracing::debug!(bridge = ctx.name(), "cannot store the last transaction's number: {e}");
    }
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}

/// Users and aliases are created by Causeway itself, never on query.
async fn query(State(inner): State<Arc<Inner>>, Query(q): Query<AuthQuery>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&inner, &headers, &q) {
        return r;
    }
    matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "created by Causeway when needed")
}

async fn ping(State(inner): State<Arc<Inner>>, Query(q): Query<AuthQuery>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&inner, &headers, &q) {
        return r;
    }
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}

/// The key media links are signed with: derived from the hs_token, so the
/// token itself signs nothing anyone sees.
fn media_key(inner: &Inner) -> Vec<u8> {
    causeway_core::sign::sign(inner.options.hs_token.expose().as_bytes(), b"causeway media links").into_bytes()
}

/// The signature of a media link: only links Causeway handed out work.
pub(crate) fn media_sig(inner: &Inner, server: &str, media: &str) -> String {
    causeway_core::sign::sign_hex(&media_key(inner), format!("{server}/{media}").as_bytes())
}

/// The link another network gets for a file in the media repository.
pub(crate) fn media_url(inner: &Inner, server: &str, media: &str) -> String {
    let sig = media_sig(inner, server, media);
    let base = inner.options.public_url.as_deref().unwrap_or(&inner.options.url);
    format!("{}/media/{server}/{media}?sig={sig}", base.trim_end_matches('/'))
}

/// Content types shown in place; everything else is a download, so that no
/// file from the homeserver runs as a page on Causeway's address.
const INLINE_TYPES: &[&str] =
    &["image/png", "image/jpeg", "image/gif", "image/webp", "audio/ogg", "audio/mpeg", "video/mp4", "video/webm", "text/plain"];

/// How long a request for a file waits for a free place.
const MEDIA_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A file of the media repository, for networks that fetch links.
async fn media(State(inner): State<Arc<Inner>>, Path((server, media)): Path<(String, String)>, Query(q): Query<AuthQuery>) -> Response {
    let signed =
        q.sig.as_deref().is_some_and(|s| causeway_core::sign::verify_hex(&media_key(&inner), format!("{server}/{media}").as_bytes(), s));
    if !signed {
        return matrix_error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "not a link Causeway handed out");
    }
    // A place among the files passed on at once, kept until the whole file
    // has gone out (or the reader is gone): a burst of requests for large
    // files cannot hold more than that many answers open.
    let Ok(place) = tokio::time::timeout(MEDIA_WAIT, inner.media_places.clone().acquire_owned()).await.map(|p| p.expect("never closed"))
    else {
        tracing::info!(server, media, "media not served: every place is taken (media_concurrency)");
        let mut r = matrix_error(StatusCode::SERVICE_UNAVAILABLE, "M_LIMIT_EXCEEDED", "too many files at once; try again shortly");
        r.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return r;
    };
    match inner.client.download(&server, &media, inner.options.media_max_bytes).await {
        Ok(m) => {
            let ct = m.content_type.clone().unwrap_or_default();
            let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            let (ct, disposition) = if INLINE_TYPES.contains(&essence.as_str()) {
                (essence, "inline")
            } else {
                ("application/octet-stream".to_string(), "attachment")
            };
            let body = futures_util::StreamExt::map(m.chunks(), move |c| {
                let _held = &place;
                c
            });
            (
                [
                    (header::CONTENT_TYPE, ct),
                    (header::CONTENT_DISPOSITION, disposition.to_string()),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
                    (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_string()),
                ],
                axum::body::Body::from_stream(body),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(server, media, "media not served: {e}");
            matrix_error(StatusCode::BAD_GATEWAY, "M_UNKNOWN", "the homeserver did not give the file")
        }
    }
}

/// The name people see for `user` in `room`.
fn display_name(inner: &Inner, room: &RoomId, user: &UserId) -> RemoteSender {
    let name = inner.state().members.get(room).and_then(|m| m.get(user)).cloned().flatten();
    RemoteSender { id: user.to_string(), name: Some(name.unwrap_or_else(|| user.localpart().to_string())), avatar: None }
}

/// Submit an event of a room the bridge has linked; `Ok(true)` when it is
/// new (stored). The router not knowing the link is not an answer to give
/// the homeserver: the bridge's links come from the router's, so the two
/// agree again in a moment, and the event is tried again then.
async fn submit(ctx: &BridgeContext, incoming: Incoming) -> Result<bool, NotTaken> {
    Ok(matches!(ctx.submit(incoming).await?, Accepted::Stored { .. }))
}

/// Why an event was not taken: the homeserver is answered 503 and sends
/// the transaction again (what was taken of it is recognised then).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotTaken {
    /// The store did not commit it, or the router does not know the
    /// room's link yet.
    #[error(transparent)]
    Store(#[from] SubmitError),
    /// A linked room the bridge has not finished setting up.
    #[error("room {0} is not set up yet")]
    NotSetUp(ruma::OwnedRoomId),
}

/// One room event. `Err` only when it could not be committed (try again);
/// `Ok(true)` when it was new.
///
/// One piece (over 80 lines): one arm per room event type, after the checks
/// they share (sender, echo, room).
pub(crate) async fn timeline_event(inner: &Inner, ctx: &BridgeContext, raw: Raw<AnyTimelineEvent>) -> Result<bool, NotTaken> {
    let marks = marks(&raw);
    if inner.puppet.is_some() && puppeted(inner, &raw, &marks) {
        // Causeway said it as the person's own account: it came from elsewhere.
        return Ok(false);
    }
    let event = match raw.deserialize() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(bridge = ctx.name(), "dropping an event that does not parse: {e}");
            ctx.count_rejected("malformed_event");
            return Ok(false);
        }
    };
    let room = event.room_id().to_owned();
    let sender = event.sender().to_owned();
    let Some(link) = inner.link_of(&room).await else {
        if !inner.set_up_done.load(Ordering::Acquire) {
            // A linked room not set up yet: have the homeserver try later.
            return Err(NotTaken::NotSetUp(room));
        }
        if let Some(change) = member_change(&event)
            && change.user == inner.bot
            && change.invited
        {
            inner.invited.notify_one();
        }
        if let Some((ghost, inviter)) = crate::direct::invitation(inner, &event)
            && crate::direct::accept(inner, ctx, &room, &ghost, &inviter).await
        {
            said_before_the_ghost(inner, ctx, &room, &ghost).await;
        }
        return Ok(false);
    };
    let at_ms = Some(i64::from(event.origin_server_ts().get()));
    let event_id = event.event_id().to_string();
    inner.note_pushed(ctx, &room, &event_id).await;
    if let Some(change) = member_change(&event) {
        let mut new = false;
        // About the member (`state_key`), whoever sent it (a kick, an invite).
        let user = change.user.clone();
        if user == inner.bot && change.invited {
            inner.invited.notify_one();
        }
        if let Some(m) = change.membership.clone().filter(|_| !inner.is_ours(user.as_str())) {
            let name = change.name.clone().or_else(|| display_name(inner, &room, &user).name);
            let who = RemoteSender { id: user.to_string(), name, avatar: None };
            new = submit(
                ctx,
                Incoming { room: link, sender: who, remote_id: Some(event_id), aliases: Vec::new(), at_ms, body: Body::Membership(m) },
            )
            .await?;
        }
        // The member list changes once the change is taken.
        let mut st = inner.state();
        if change.joined {
            st.members.entry(room).or_default().insert(user, change.name);
        } else if change.left {
            if let Some(m) = st.members.get_mut(&room) {
                m.remove(&user);
            }
            st.joined.remove(&(room, user));
        }
        return Ok(new);
    }
    if inner.is_ours(sender.as_str()) {
        return Ok(false);
    }
    if marks.relayed.as_ref().is_some_and(|v| v != &serde_json::Value::Bool(false) && !v.is_null()) {
        // Relayed here by another Causeway (or another instance): not again.
        ctx.count_rejected("relayed_by_another_bridge");
        if let Some(v) = &marks.relayed
            && let (Some(origin), Some(sig)) = (v["origin"].as_str(), v["sig"].as_str())
        {
            ctx.relayed_by_peer(&link, origin, sig, Some(&event_id));
        }
        return Ok(false);
    }
    let who = display_name(inner, &room, &sender);
    let Some(mut body) = body(inner, event) else { return Ok(false) };
    if let Body::Message { mentions, .. } = &mut body
        && mentions.iter().any(Mention::is_room)
    {
        // `@room` only from those the room lets ping everyone. Unknown counts as no.
        let may = match inner.client.may_ping_room(room.as_str(), &sender).await {
            Ok(may) => may,
            Err(e) => {
                tracing::warn!(room = %room, sender = %sender, "cannot read the room's power levels; @room is not passed on: {e}");
                false
            }
        };
        if !may {
            mentions.retain(|m| !m.is_room());
        }
    }
    if let Body::Retract { moderated, .. } = &mut body {
        // Someone else's message may be taken back by those the room lets
        // redact (the router checks every other retraction against its
        // sender). Unknown counts as no.
        *moderated = match inner.client.may_redact(room.as_str(), &sender).await {
            Ok(may) => may,
            Err(e) => {
                tracing::warn!(room = %room, sender = %sender, "cannot read the room's power levels; the redaction counts as its sender's alone: {e}");
                false
            }
        };
    }
    submit(ctx, Incoming { room: link, sender: who, remote_id: Some(event_id), aliases: Vec::new(), at_ms, body }).await
}

/// How much of a new direct conversation is read back once its ghost has joined.
const SAID_BEFORE: u32 = 20;

/// Take what was said in a new direct conversation before its ghost joined
/// (pushed to nobody), read as the ghost; what was taken already is
/// recognised by event id.
async fn said_before_the_ghost(inner: &Inner, ctx: &BridgeContext, room: &ruma::RoomId, ghost: &ruma::UserId) {
    match inner.client.messages_back(room.as_str(), None, SAID_BEFORE, Some(ghost)).await {
        Ok((page, _)) => {
            for raw in page.into_iter().rev() {
                if let Err(e) = Box::pin(timeline_event(inner, ctx, raw)).await {
                    tracing::warn!(bridge = ctx.name(), room = %room, "a message of a new direct conversation not taken: {e}");
                }
            }
        }
        Err(e) => tracing::warn!(bridge = ctx.name(), room = %room, "cannot read what was said before the ghost joined: {e}"),
    }
}

/// Take what the homeserver has in every linked room with a mark but did
/// not push ([`crate::reconcile`]); `Err` only when an event found could
/// not be committed (try again later). Returns how many were new.
pub(crate) async fn reconcile_rooms(inner: &Inner, ctx: &BridgeContext) -> Result<u64, NotTaken> {
    let rooms: Vec<ruma::OwnedRoomId> = inner.state().marks.keys().cloned().collect();
    let mut found = 0;
    for room in rooms {
        let Some((events, newest)) = crate::reconcile::unseen(inner, ctx, &room).await else { continue };
        let mut new = 0;
        for raw in events {
            if timeline_event(inner, ctx, raw).await? {
                new += 1;
            }
        }
        inner.set_mark(ctx, &room, &newest).await;
        if new > 0 {
            ctx.count_reconciled(new);
            tracing::warn!(bridge = ctx.name(), room = %room, events = new, "took events the homeserver had not pushed");
        }
        found += new;
    }
    Ok(found)
}

/// A round of reconciliation passes (after start, after the homeserver
/// answers again), each under the intake lock so that nothing pushed
/// meanwhile overtakes what it finds.
pub(crate) async fn reconcile_passes(inner: Arc<Inner>, ctx: BridgeContext) {
    let start = tokio::time::Instant::now();
    for at in crate::reconcile::PASSES {
        tokio::time::sleep_until(start + at).await;
        let _intake = inner.intake.lock().await;
        if let Err(e) = reconcile_rooms(&inner, &ctx).await {
            tracing::warn!(bridge = ctx.name(), "reconciliation not finished: {e}");
        }
    }
}

/// Whether Causeway sent this event as a person's own account (double
/// puppeting): the mark in the content, and an event Causeway sent (or is
/// sending) as that account in that room. The mark alone proves nothing:
/// anyone can write it, and clients copy it when forwarding.
fn puppeted(inner: &Inner, raw: &Raw<AnyTimelineEvent>, marks: &Marks) -> bool {
    if marks.puppet != Some(serde_json::Value::Bool(true)) {
        return false;
    }
    let field = |name: &str| raw.get_field::<String>(name).ok().flatten();
    let (Some(sender), Some(room), Some(event_id)) = (field("sender"), field("room_id"), field("event_id")) else { return false };
    let (Ok(sender), Ok(room)) = (OwnedUserId::try_from(sender), ruma::OwnedRoomId::try_from(room)) else { return false };
    inner.sent_as_puppet(&room, &sender, &event_id)
}

/// Causeway's marks in an event's content (`outbound::PUPPET_MARK`,
/// `outbound::RELAY_MARK`), read without keeping the rest of it.
#[derive(Default, Deserialize)]
struct Marks {
    #[serde(default, rename = "net.causeway.puppet")]
    puppet: Option<serde_json::Value>,
    #[serde(default, rename = "net.causeway.relayed")]
    relayed: Option<serde_json::Value>,
}

fn marks(raw: &Raw<AnyTimelineEvent>) -> Marks {
    #[derive(Deserialize)]
    struct WithContent {
        #[serde(default)]
        content: Marks,
    }
    serde_json::from_str::<WithContent>(raw.json().get()).map(|e| e.content).unwrap_or_default()
}

/// A membership event, read from the event itself (its content and the
/// previous content the homeserver sends along), not from what Causeway
/// remembers: a resent transaction gives the same answer.
struct MemberChange {
    user: OwnedUserId,
    /// The change to bridge, if any.
    membership: Option<Membership>,
    /// The member's display name now.
    name: Option<String>,
    joined: bool,
    left: bool,
    invited: bool,
}

fn member_change(event: &AnyTimelineEvent) -> Option<MemberChange> {
    let AnyTimelineEvent::State(AnyStateEvent::RoomMember(m)) = event else { return None };
    let m = m.as_original()?;
    let user = OwnedUserId::try_from(m.state_key.as_str()).ok()?;
    let clean = |n: &Option<String>| n.clone().filter(|n| !n.trim().is_empty() && n.len() <= 256);
    let name = clean(&m.content.displayname);
    let prev = m.unsigned.prev_content.as_ref();
    let was_joined = prev.is_some_and(|p| p.membership == MembershipState::Join);
    let prev_name = prev.and_then(|p| clean(&p.displayname));
    let now = &m.content.membership;
    let membership = match now {
        MembershipState::Join if !was_joined => Some(Membership::Join),
        MembershipState::Join => match &name {
            Some(n) if prev_name.as_ref() != Some(n) => Some(Membership::Nick { name: n.clone() }),
            _ => None,
        },
        MembershipState::Leave | MembershipState::Ban if was_joined => Some(Membership::Leave),
        _ => None,
    };
    Some(MemberChange {
        user,
        membership,
        name: name.or(prev_name),
        joined: *now == MembershipState::Join,
        left: matches!(now, MembershipState::Leave | MembershipState::Ban),
        invited: *now == MembershipState::Invite,
    })
}

/// The content of a message, reaction, redaction or topic as an event body.
/// What the fuzz target reaches: a transaction read as [`transaction`] and
/// [`timeline_event`] read it, without a router to submit to.
pub(crate) fn fuzz_transaction(inner: &Inner, data: &[u8]) {
    let Ok(t) = serde_json::from_slice::<Transaction>(data) else { return };
    for raw in t.events {
        let _ = marks(&raw);
        let Ok(event) = raw.deserialize() else { continue };
        let _ = member_change(&event);
        let _ = body(inner, event);
    }
    for raw in t.ephemeral {
        let _ = raw.deserialize();
    }
}

fn body(inner: &Inner, event: AnyTimelineEvent) -> Option<Body<String>> {
    match event {
        AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(m)) => message(inner, m.as_original()?.content.clone()),
        AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::Reaction(r)) => {
            let a = &r.as_original()?.content.relates_to;
            (!a.key.is_empty() && a.key.len() <= 64).then(|| Body::Reaction {
                target: a.event_id.to_string(),
                key: a.key.clone(),
                removed: false,
            })
        }
        AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomRedaction(r)) => {
            let r = r.as_original()?;
            let target = r.content.redacts.clone().or_else(|| r.redacts.clone())?;
            Some(Body::Retract { target: target.to_string(), moderated: false })
        }
        AnyTimelineEvent::State(AnyStateEvent::RoomTopic(t)) => Some(Body::Topic { text: t.as_original()?.content.topic.clone() }),
        _ => None,
    }
}

/// Text with its HTML (sanitized, without a reply fallback), and the plain
/// text without the `> ` quote of a reply fallback.
fn text(body: &str, formatted: Option<&ruma::events::room::message::FormattedBody>, is_reply: bool) -> Text {
    let html = formatted.filter(|f| f.format.as_str() == "org.matrix.custom.html").map(|f| {
        let without_fallback = match (f.body.find("<mx-reply>"), f.body.find("</mx-reply>")) {
            (Some(a), Some(b)) if a < b => format!("{}{}", &f.body[..a], &f.body[b + "</mx-reply>".len()..]),
            _ => f.body.clone(),
        };
        sanitize_html(&without_fallback)
    });
    let mut plain = body.to_string();
    if is_reply && plain.starts_with("> ") {
        let lines: Vec<&str> = plain.lines().collect();
        let quoted = lines.iter().take_while(|l| l.starts_with('>')).count();
        plain = lines[quoted..].iter().skip_while(|l| l.is_empty()).copied().collect::<Vec<_>>().join("\n");
    }
    if plain.trim().is_empty()
        && let Some(h) = &html
    {
        plain = html_to_plain(h);
    }
    Text { plain, html: html.filter(|h| !h.trim().is_empty()) }
}

fn message(inner: &Inner, content: RoomMessageEventContent) -> Option<Body<String>> {
    let (mut reply_to, mut thread) = (None, None);
    match &content.relates_to {
        Some(Relation::Replacement(r)) => {
            let new = &r.new_content.msgtype;
            let t = match new {
                MessageType::Text(c) => text(&c.body, c.formatted.as_ref(), false),
                MessageType::Notice(c) => text(&c.body, c.formatted.as_ref(), false),
                MessageType::Emote(c) => text(&c.body, c.formatted.as_ref(), false),
                other => Text::plain(other.body()),
            };
            return Some(Body::Edit { target: r.event_id.to_string(), text: t });
        }
        Some(Relation::Reply(r)) => reply_to = Some(r.in_reply_to.event_id.to_string()),
        Some(Relation::Thread(t)) => {
            thread = Some(t.event_id.to_string());
            if !t.is_falling_back {
                reply_to = t.in_reply_to.as_ref().map(|r| r.event_id.to_string());
            }
        }
        _ => {}
    }
    let is_reply = reply_to.is_some();
    let file = |source: &MediaSource,
                name: &str,
                filename: Option<&String>,
                caption: Option<(&str, Option<&ruma::events::room::message::FormattedBody>)>,
                mime: Option<String>,
                size: Option<u64>| {
        let MediaSource::Plain(mxc) = source else { return None };
        let (server, media) = mxc.parts().ok()?;
        let url = media_url(inner, server.as_str(), media);
        // With a filename, the body is a caption (Matrix 1.10).
        let caption = caption.filter(|_| filename.is_some_and(|f| f != name)).map(|(b, f)| text(b, f, is_reply)).unwrap_or_default();
        let name = filename.cloned().unwrap_or_else(|| name.to_string());
        Some((caption, Attachment { url, name: Some(name), mime, size }))
    };
    macro_rules! file_arm {
        ($c:expr) => {{
            let c = $c;
            let info = c.info.as_ref();
            let (t, a) = file(
                &c.source,
                &c.body,
                c.filename.as_ref(),
                Some((&c.body, c.formatted.as_ref())),
                info.and_then(|i| i.mimetype.clone()),
                info.and_then(|i| i.size).map(u64::from),
            )?;
            (MessageKind::Text, t, vec![a])
        }};
    }
    let (kind, text, attachments) = match &content.msgtype {
        MessageType::Text(c) => (MessageKind::Text, text(&c.body, c.formatted.as_ref(), is_reply), vec![]),
        MessageType::Notice(c) => (MessageKind::Notice, text(&c.body, c.formatted.as_ref(), is_reply), vec![]),
        MessageType::Emote(c) => (MessageKind::Emote, text(&c.body, c.formatted.as_ref(), is_reply), vec![]),
        // The same fields in each kind of file; only their types differ.
        MessageType::Image(c) => file_arm!(c),
        MessageType::File(c) => file_arm!(c),
        MessageType::Video(c) => file_arm!(c),
        MessageType::Audio(c) => file_arm!(c),
        // Locations, polls and the like: what their body says.
        other => (MessageKind::Text, Text::plain(other.body()), vec![]),
    };
    if text.plain.trim().is_empty() && attachments.is_empty() {
        return None;
    }
    let mentions = content.mentions.as_ref().map(|m| mentions(inner, m, text.html.as_deref())).unwrap_or_default();
    Some(Body::Message { text, kind, attachments, reply_to, thread, mentions })
}

/// Who `m.mentions` names, each with the text of its pill in `html`: a
/// ghost as whom it stands for, anyone else as their account on this
/// bridge; `@room` as [`Mention::ROOM`] (kept only where the sender may
/// ping the room, see [`event`]). The bridge's own user is nobody.
fn mentions(inner: &Inner, m: &ruma::events::Mentions, html: Option<&str>) -> Vec<Mention> {
    let bridge = inner.ctx.get().map_or("matrix", |c| c.name());
    let mut out: Vec<Mention> = m
        .user_ids
        .iter()
        .filter(|u| **u != inner.bot)
        .take(MAX_MENTIONS)
        .map(|u| {
            let who = match crate::ghost::recipient(&inner.options.ghost_prefix, u) {
                Some(r) => r.to_string(),
                None => format!("{bridge}:{u}"),
            };
            Mention::new(who, html.and_then(|h| pill_text(h, u.as_str())))
        })
        .collect();
    if m.room {
        out.push(Mention::new(Mention::ROOM, html.and_then(|h| h.contains("@room").then(|| "@room".to_string()))));
    }
    out
}

/// Most mentions taken from one message.
const MAX_MENTIONS: usize = 50;
/// Most events, and readers of each, taken from one receipt.
const MAX_RECEIPTS: usize = 50;

/// The text of the first pill (`<a href="https://matrix.to/#/<user>">text</a>`)
/// for `user` in sanitized `html`, as plain text.
pub(crate) fn pill_text(html: &str, user: &str) -> Option<String> {
    const LINK: &str = "href=\"https://matrix.to/#/";
    let mut rest = html;
    while let Some(at) = rest.find(LINK) {
        rest = &rest[at + LINK.len()..];
        let href = &rest[..rest.find('"')?];
        let target = href.split(['?', '/']).next().unwrap_or_default();
        let decoded = target.replace("%40", "@").replace("%3A", ":").replace("%3a", ":");
        let after = &rest[rest.find('>')? + 1..];
        let inner = &after[..after.find("</a>")?];
        if decoded == user {
            let text = causeway_core::text::html_to_plain(inner);
            let text = text.trim();
            return (!text.is_empty() && text.len() <= 256).then(|| text.to_string());
        }
    }
    None
}

/// Typing and presence.
async fn ephemeral(inner: &Inner, ctx: &BridgeContext, raw: Raw<EphemeralData>) -> Result<(), NotTaken> {
    let data = match raw.deserialize() {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(bridge = ctx.name(), "ignoring ephemeral data that does not parse: {e}");
            return Ok(());
        }
    };
    let mut events = Vec::new();
    match data {
        EphemeralData::Typing(t) => {
            let room = t.room_id.clone();
            let Some(link) = inner.state().links.get(&room).cloned() else { return Ok(()) };
            let now: HashSet<OwnedUserId> = t.content.user_ids.into_iter().filter(|u| !inner.is_ours(u.as_str())).collect();
            let before = inner.state().typing.insert(room.clone(), now.clone()).unwrap_or_default();
            for (user, active) in now.difference(&before).map(|u| (u, true)).chain(before.difference(&now).map(|u| (u, false))) {
                events.push(Incoming {
                    room: link.clone(),
                    sender: display_name(inner, &room, user),
                    remote_id: None,
                    aliases: Vec::new(),
                    at_ms: None,
                    body: Body::Typing { active },
                });
            }
        }
        EphemeralData::Receipt(r) => {
            let room = r.room_id.clone();
            let Some(link) = inner.state().links.get(&room).cloned() else { return Ok(()) };
            if !inner.options.read_markers.shown(crate::direct::room_of(&link).is_some()) {
                return Ok(());
            }
            for (event, receipts) in r.content.0.iter().take(MAX_RECEIPTS) {
                let Some(users) = receipts.get(&ruma::events::receipt::ReceiptType::Read) else { continue };
                for user in users.keys().filter(|u| !inner.is_ours(u.as_str())).take(MAX_RECEIPTS) {
                    events.push(Incoming {
                        room: link.clone(),
                        sender: display_name(inner, &room, user),
                        remote_id: None,
                        aliases: Vec::new(),
                        at_ms: None,
                        body: Body::Read { target: event.to_string() },
                    });
                }
            }
        }
        EphemeralData::Presence(p) => {
            if inner.is_ours(p.sender.as_str()) {
                return Ok(());
            }
            let show = match p.content.presence {
                PresenceState::Online => Show::Online,
                PresenceState::Unavailable => Show::Away,
                _ => Show::Offline,
            };
            let status = p.content.status_msg.clone().filter(|s| s.len() <= 1024);
            let rooms: Vec<(ruma::OwnedRoomId, String)> = {
                let st = inner.state();
                st.links
                    .iter()
                    .filter(|(r, _)| st.members.get(*r).is_some_and(|m| m.contains_key(&p.sender)))
                    .map(|(r, l)| (r.clone(), l.clone()))
                    .collect()
            };
            for (room, link) in rooms {
                let body = Body::Presence { show, status: status.clone() };
                events.push(Incoming {
                    room: link,
                    sender: display_name(inner, &room, &p.sender),
                    remote_id: None,
                    aliases: Vec::new(),
                    at_ms: None,
                    body,
                });
            }
        }
        _ => {}
    }
    for e in events {
        submit(ctx, e).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ruma::events::room::message::FormattedBody;

    #[test]
    fn marks_are_read_under_the_names_outbound_writes() {
        let raw = |content: serde_json::Value| {
            Raw::<AnyTimelineEvent>::from_json(
                serde_json::value::to_raw_value(&json!({"type": "m.room.message", "content": content})).unwrap(),
            )
        };
        let m = marks(&raw(json!({"body": "x", crate::outbound::PUPPET_MARK: true, crate::outbound::RELAY_MARK: true})));
        assert_eq!((m.puppet, m.relayed), (Some(json!(true)), Some(json!(true))));
        let none = marks(&raw(json!({"body": "x"})));
        assert_eq!((none.puppet, none.relayed), (None, None));
        // Content that is no object (hostile): no marks, no panic.
        let odd = marks(&raw(json!("text")));
        assert_eq!((odd.puppet, odd.relayed), (None, None));
    }

    #[test]
    fn reply_fallbacks_are_stripped_and_html_sanitized() {
        let f = FormattedBody::html("<mx-reply><blockquote>old</blockquote></mx-reply><b>new</b><script>x()</script>");
        let t = text("> <@a:b> old\n> more\n\nnew", Some(&f), true);
        assert_eq!(t.plain, "new");
        assert_eq!(t.html.as_deref(), Some("<b>new</b>"));
        // Not a reply: a quote is the message itself.
        assert_eq!(text("> quoted", None, false).plain, "> quoted");
        // Only HTML: the plain text comes from it.
        assert_eq!(text("", Some(&FormattedBody::html("<p>hi</p>")), false).plain.trim(), "hi");
    }

    #[test]
    fn a_pill_gives_the_words_naming_whom_it_mentions() {
        let html =
            r#"<a href="https://matrix.to/#/@bob:m.test">Bob</a>, <a href="https://matrix.to/#/%40alice%3Am.test">Alice &amp; co</a>: hi"#;
        assert_eq!(pill_text(html, "@alice:m.test").as_deref(), Some("Alice & co"), "percent-encoded, entities decoded");
        assert_eq!(pill_text(html, "@bob:m.test").as_deref(), Some("Bob"));
        assert_eq!(pill_text(html, "@carol:m.test"), None);
        // Hostile or broken: unterminated, empty, too long.
        for broken in [
            r#"<a href="https://matrix.to/#/@bob:m.test"#,
            r#"<a href="https://matrix.to/#/@bob:m.test">Bob"#,
            r#"<a href="https://matrix.to/#/@bob:m.test"> </a>"#,
        ] {
            assert_eq!(pill_text(broken, "@bob:m.test"), None, "{broken}");
        }
        let long = format!(r#"<a href="https://matrix.to/#/@bob:m.test">{}</a>"#, "b".repeat(300));
        assert_eq!(pill_text(&long, "@bob:m.test"), None);
    }

    proptest! {
        #[test]
        fn pills_in_any_html_never_panic(html in ".{0,200}", user in "@[a-z]{1,5}:[a-z.]{1,8}") {
            let _ = pill_text(&html, &user);
            let _ = pill_text(&format!(r#"<a href="https://matrix.to/#/{user}">{html}"#), &user);
        }

        #[test]
        fn any_text_and_html_is_taken_without_panic(body in ".{0,200}", html in ".{0,200}", reply in any::<bool>()) {
            let f = FormattedBody::html(html);
            let _ = text(&body, Some(&f), reply);
        }

        #[test]
        fn marker_soup_never_panics(parts in prop::collection::vec(prop_oneof![Just("<mx-reply>"), Just("</mx-reply>"), Just("> "), Just("\n"), Just("é"), Just("x")], 0..30)) {
            let s: String = parts.concat();
            let _ = text(&s, Some(&FormattedBody::html(s.clone())), true);
        }
    }
}
