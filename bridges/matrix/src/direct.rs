//! Direct conversations with Matrix users.
//!
//! A direct conversation's room is linked as `direct:<room id>` (never
//! configured; the bridge's own user is not in it, so it is not set up
//! like a portal room):
//! - a Matrix user invites a ghost with `is_direct`: the ghost joins, and
//!   the room is a conversation with whom the ghost stands for;
//! - someone on another network writes to a Matrix user's ghost: the ghost
//!   of the writer creates a room, invites the user with `is_direct`, and
//!   marks it direct in its `m.direct` account data.

use causeway_core::{BridgeContext, DirectError, RemoteSender, Sender};
use ruma::events::{AnyStateEvent, AnyTimelineEvent, room::member::MembershipState};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::json;

use crate::{Inner, ghost};

/// How a direct conversation's room is linked.
pub(crate) const PREFIX: &str = "direct:";

/// The link of a direct conversation's room.
pub(crate) fn link(room: &RoomId) -> String {
    format!("{PREFIX}{room}")
}

/// The room of a direct conversation's link.
pub(crate) fn room_of(link: &str) -> Option<OwnedRoomId> {
    OwnedRoomId::try_from(link.strip_prefix(PREFIX)?).ok()
}

/// An invitation of one of our ghosts into a direct conversation: the
/// ghost and who invited it.
pub(crate) fn invitation(inner: &Inner, event: &AnyTimelineEvent) -> Option<(OwnedUserId, OwnedUserId)> {
    let AnyTimelineEvent::State(AnyStateEvent::RoomMember(m)) = event else { return None };
    let m = m.as_original()?;
    let ghost = OwnedUserId::try_from(m.state_key.as_str()).ok()?;
    let ours = ghost.server_name().as_str() == inner.options.server_name && ghost::recipient(&inner.options.ghost_prefix, &ghost).is_some();
    (ours && m.content.membership == MembershipState::Invite && m.content.is_direct == Some(true) && !inner.is_ours(m.sender.as_str()))
        .then(|| (ghost, m.sender.clone()))
}

/// Take `ghost`'s invitation by `inviter` into `room`: join it and open
/// the conversation with whom the ghost stands for (`true` when opened:
/// what was said before the ghost joined is then to be read back). Where
/// that cannot be, say why in the room and leave it.
pub(crate) async fn accept(inner: &Inner, ctx: &BridgeContext, room: &RoomId, ghost: &UserId, inviter: &UserId) -> bool {
    let Some(with) = ghost::recipient(&inner.options.ghost_prefix, ghost) else { return false };
    if let Err(e) = inner.client.register(ghost.localpart()).await {
        tracing::warn!(bridge = ctx.name(), ghost = %ghost, "cannot register the ghost invited to a direct conversation: {e}");
        return false;
    }
    if let Err(e) = inner.client.join(room.as_str(), Some(ghost)).await {
        tracing::warn!(bridge = ctx.name(), ghost = %ghost, room = %room, "cannot join a direct conversation: {e}");
        return false;
    }
    let link = link(room);
    inner.remember_room(ctx, &link, room, ghost).await;
    let initiator = RemoteSender { id: inviter.to_string(), name: None, avatar: None };
    match ctx.open_direct(&link, &with, initiator).await {
        Ok(portal) => {
            tracing::info!(bridge = ctx.name(), room = %room, with = %with, portal, "a Matrix user opened a direct conversation");
            true
        }
        Err(e) => {
            tracing::info!(bridge = ctx.name(), room = %room, from = %inviter, with = %with, "direct conversation refused: {e}");
            let txn = format!("refused-{}", causeway_core::new_id());
            let notice = json!({"msgtype": "m.notice", "body": format!("This conversation cannot be bridged: {e}")});
            let _ = inner.client.send(room.as_str(), "m.room.message", &txn, &notice, ghost).await;
            let _ = inner.client.leave(room.as_str(), ghost).await;
            inner.forget_room(&link, room);
            false
        }
    }
}

/// Open a direct conversation with the Matrix user `account` for `peer`
/// (from `peer_bridge`): the room their ghost creates and invites them to.
pub(crate) async fn open(inner: &Inner, account: &str, peer: &Sender, peer_bridge: &str) -> Result<String, DirectError> {
    let user = UserId::parse(account).map_err(|e| DirectError::Unknown(format!("{account:?} is not a Matrix user: {e}")))?;
    if inner.is_ours(user.as_str()) {
        return Err(DirectError::Unsupported(format!("{user} is Causeway's own user")));
    }
    let ghost = ghost::user_id(&inner.options.ghost_prefix, &inner.options.server_name, peer, peer_bridge).map_err(DirectError::Unknown)?;
    let unavailable = |e: &dyn std::fmt::Display| DirectError::Unavailable(e.to_string());
    inner.ensure_ghost(&ghost, peer).await.map_err(|e| unavailable(&e))?;
    let body = json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [user.as_str()]});
    let room = inner.client.create_room(&body, Some(&ghost)).await.map_err(|e| unavailable(&e))?;
    // Marked direct for the ghost too, as clients do for the rooms they open.
    let mut direct = inner.client.account_data(&ghost, "m.direct").await.map_err(|e| unavailable(&e))?.unwrap_or_else(|| json!({}));
    if !direct.is_object() {
        direct = json!({});
    }
    let rooms = direct[user.as_str()].as_array().cloned().unwrap_or_default();
    direct[user.as_str()] = json!(rooms.into_iter().chain([json!(room.as_str())]).collect::<Vec<_>>());
    if let Err(e) = inner.client.set_account_data(&ghost, "m.direct", &direct).await {
        tracing::warn!(ghost = %ghost, room = %room, "the direct conversation is not marked direct for the ghost: {e}");
    }
    let link = link(&room);
    if let Some(ctx) = inner.ctx.get() {
        inner.remember_room(ctx, &link, &room, &ghost).await;
    }
    tracing::info!(room = %room, with = %user, ghost = %ghost, "opened a direct conversation on Matrix");
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_links_read_back() {
        let room = RoomId::parse("!abc:m.test").unwrap();
        assert_eq!(room_of(&link(&room)).as_deref(), Some(&*room));
        assert_eq!(room_of("!abc:m.test"), None, "a portal room is no direct conversation");
        assert_eq!(room_of("direct:not a room"), None);
    }
}
