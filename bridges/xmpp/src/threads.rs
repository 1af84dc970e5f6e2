//! Threads in group chats (XEP-0201 `<thread>`), as Causeway's threads: a
//! message in the thread of a root message.
//!
//! A thread has one id on XMPP for all its messages. Where Causeway opens
//! the thread on XMPP (its root came from anywhere, the first message in
//! the thread from another network), the id is the room's id of the root,
//! so a client that continues the thread names the root by it. Where an
//! XMPP client opens it, its id is the client's choice; Causeway remembers
//! which message it stands for and sends later messages of the thread
//! under the same id:
//! - a first message with a new thread id answering a message (XEP-0461)
//!   opens the thread on that message;
//! - a first message with a new thread id answering nothing is the root.
//!
//! Clients that show no threads see each message of a thread as a reply
//! to the root. One-to-one chats are not threaded: older clients put one
//! `<thread>` on a whole conversation.

use causeway_core::{Body, BridgeContext, Incoming};
use tokio_xmpp::parsers::message::Message;

use crate::Inner;

/// Longest thread id taken.
const MAX_ID_BYTES: usize = 256;

/// Under this state key (`thread:<room> <root's id>`): the thread id an
/// XMPP client gave the thread of that root.
const ID_KEY: &str = "thread:";
/// Under this one (`thread-root:<room> <thread id>`): the root of a thread
/// an XMPP client opened on an earlier message.
const ROOT_KEY: &str = "thread-root:";

/// The thread id a message carries, where it is one Causeway takes.
pub(crate) fn read(m: &Message) -> Option<String> {
    let id = m.thread.as_ref()?.id.trim();
    (!id.is_empty() && id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control)).then(|| id.to_string())
}

/// The id to send the messages of the thread of `root` under in `room`.
pub(crate) async fn id_for(inner: &Inner, room: &str, root: &str) -> String {
    let Some(ctx) = inner.ctx.get() else { return root.to_string() };
    match ctx.load_state(&format!("{ID_KEY}{room} {root}")).await {
        Ok(Some(id)) => id,
        Ok(None) => root.to_string(),
        Err(e) => {
            tracing::warn!(bridge = ctx.name(), room, "thread id of a root not read, using the root's id: {e}");
            root.to_string()
        }
    }
}

/// Turn the thread id an incoming group chat message carries into its
/// root (an id the router knows), or make the message the root of a new
/// thread. A reply to the root alone is how a client says it is in the
/// thread, so it is no reply of its own.
pub(crate) async fn resolve(ctx: &BridgeContext, incoming: &mut Incoming) {
    let Incoming { room, remote_id, aliases, body, .. } = incoming;
    let Body::Message { reply_to, thread, .. } = body else { return };
    let Some(id) = thread.clone() else { return };
    if remote_id.as_deref() == Some(id.as_str()) || aliases.contains(&id) {
        // The thread is named after this very message: it is the root.
        *thread = None;
        if let Some(own) = remote_id.as_deref().filter(|own| **own != id) {
            remember(ctx, room, own, &id).await;
        }
        return;
    }
    let root_ids: Vec<String> = match ctx.ids_of(room, &id).await {
        Ok(ids) if !ids.is_empty() => ids.into_iter().map(|(i, _)| i).collect(),
        Ok(_) => match ctx.load_state(&format!("{ROOT_KEY}{room} {id}")).await {
            Ok(Some(root)) => {
                *thread = Some(root.clone());
                vec![root]
            }
            Ok(None) => {
                match reply_to.take() {
                    // Opened on the message it answers.
                    Some(root) => {
                        remember(ctx, room, &root, &id).await;
                        *thread = Some(root);
                    }
                    // Opened by this message: later ones find it by the thread id.
                    None => {
                        *thread = None;
                        if let Some(own) = remote_id.as_deref() {
                            remember(ctx, room, own, &id).await;
                        }
                        aliases.push(id);
                    }
                }
                return;
            }
            Err(e) => {
                tracing::warn!(bridge = ctx.name(), room = %room, "thread of a message not looked up: {e}");
                *thread = None;
                return;
            }
        },
        // The router drops a reference it cannot translate.
        Err(_) => return,
    };
    if reply_to.as_ref().is_some_and(|r| root_ids.contains(r)) {
        *reply_to = None;
    }
}

/// The thread opened by an XMPP client on `root` has the id `id`.
async fn remember(ctx: &BridgeContext, room: &str, root: &str, id: &str) {
    let saved = async {
        ctx.save_message_state(&format!("{ID_KEY}{room} {root}"), id).await?;
        ctx.save_message_state(&format!("{ROOT_KEY}{room} {id}"), root).await
    };
    if let Err(e) = saved.await {
        tracing::warn!(bridge = ctx.name(), room, "a thread's id not stored: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_ids_are_taken_only_when_sane() {
        let with = |id: &str| {
            let mut m = Message::new_with_type(tokio_xmpp::parsers::message::MessageType::Groupchat, None);
            m.thread = Some(tokio_xmpp::parsers::message::Thread { parent: None, id: id.to_string() });
            m
        };
        assert_eq!(read(&with("t-1")).as_deref(), Some("t-1"));
        assert_eq!(read(&with(" t-2 ")).as_deref(), Some("t-2"));
        assert_eq!(read(&Message::new_with_type(tokio_xmpp::parsers::message::MessageType::Groupchat, None)), None);
        assert_eq!(read(&with("")), None);
        assert_eq!(read(&with("   ")), None);
        assert_eq!(read(&with(&"t".repeat(MAX_ID_BYTES + 1))), None);
        assert_eq!(read(&with("a\u{1b}b")), None);
    }
}
