//! Fitting an event to what a target room can show.

use crate::bridge::{Capabilities, Degrade};
use crate::event::{Body, MessageKind, Text};

/// Fit `body` to `caps`. References are already translated to the target
/// network; `None` means the referenced message never reached that room.
/// Returns `None` when nothing should be delivered.
pub fn degrade(body: Body<Option<String>>, caps: &Capabilities, policy: Degrade) -> Option<Body<String>> {
    if !caps.outbound {
        return None;
    }
    let notice = |plain: String, reply_to: Option<String>| {
        (policy == Degrade::Notice).then(|| Body::Message {
            text: Text::plain(plain),
            kind: MessageKind::Notice,
            attachments: Vec::new(),
            reply_to: reply_to.filter(|_| caps.replies),
            thread: None,
            mentions: Vec::new(),
        })
    };
    match body {
        Body::Message { mut text, kind, mut attachments, reply_to, thread, mentions } => {
            if !caps.html {
                text.html = None;
            }
            if !caps.files && !attachments.is_empty() {
                for a in attachments.drain(..) {
                    let line = match &a.name {
                        Some(name) => format!("{name}: {}", a.url),
                        None => a.url.clone(),
                    };
                    if !text.plain.is_empty() {
                        text.plain.push('\n');
                    }
                    text.plain.push_str(&line);
                }
            }
            // A room without threads shows a message of a thread as a reply
            // to the thread's root (unless it answers a message of its own).
            let (reply_to, thread) = match (reply_to.flatten(), thread.flatten()) {
                (reply_to, thread) if caps.threads => (reply_to, thread),
                (reply_to, root) => (reply_to.or(root), None),
            };
            Some(Body::Message { text, kind, attachments, reply_to: reply_to.filter(|_| caps.replies), thread, mentions })
        }
        Body::Edit { target: Some(target), text } if caps.edits => Some(Body::Edit { target, text }),
        Body::Edit { target, text } => notice(format!("(edited) {}", text.plain), target),
        Body::Retract { target: Some(target), moderated } if caps.retractions => Some(Body::Retract { target, moderated }),
        Body::Retract { target: Some(target), .. } => notice("(deleted a message)".into(), Some(target)),
        // Never shown there, so nothing to take back.
        Body::Retract { target: None, .. } => None,
        Body::Reaction { target: Some(target), key, removed } if caps.reactions => Some(Body::Reaction { target, key, removed }),
        Body::Reaction { target: Some(target), key, removed: false } => notice(format!("reacted {key}"), Some(target)),
        Body::Reaction { .. } => None,
        Body::Presence { show, status } => caps.presence.then_some(Body::Presence { show, status }),
        Body::Typing { active } => caps.typing.then_some(Body::Typing { active }),
        Body::Membership(m) => caps.membership.then_some(Body::Membership(m)),
        Body::Read { target: Some(target) } if caps.read_markers => Some(Body::Read { target }),
        // Never shown as a notice: it would be noise.
        Body::Read { .. } => None,
        Body::Topic { text } if caps.topic => Some(Body::Topic { text }),
        Body::Topic { text } => notice(format!("changed the topic to: {text}"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Attachment;

    fn some(s: &str) -> Option<Option<String>> {
        Some(Some(s.to_string()))
    }

    #[test]
    fn full_capabilities_pass_everything_through() {
        let edit = Body::Edit { target: Some("r1".to_string()), text: Text::plain("new") };
        assert_eq!(degrade(edit, &Capabilities::ALL, Degrade::Notice), Some(Body::Edit { target: "r1".into(), text: Text::plain("new") }));
    }

    #[test]
    fn text_only_gets_notices_or_nothing() {
        let caps = Capabilities::TEXT_ONLY;
        let reaction = Body::Reaction { target: Some("r1".to_string()), key: "👍".into(), removed: false };
        match degrade(reaction.clone(), &caps, Degrade::Notice) {
            Some(Body::Message { text, kind: MessageKind::Notice, reply_to: None, .. }) => {
                assert_eq!(text.plain, "reacted 👍")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(degrade(reaction, &caps, Degrade::Drop), None);
        assert_eq!(degrade(Body::Typing { active: true }, &caps, Degrade::Notice), None);
        assert_eq!(degrade(Body::Retract { target: None, moderated: false }, &Capabilities::ALL, Degrade::Notice), None);
    }

    #[test]
    fn attachments_become_links_and_html_is_dropped() {
        let msg: Body<Option<String>> = Body::Message {
            text: Text { plain: "see".into(), html: Some("<b>see</b>".into()) },
            kind: MessageKind::Text,
            attachments: vec![Attachment { url: "https://f/x.png".into(), name: Some("x.png".into()), mime: None, size: None }],
            reply_to: some("r0"),
            thread: None,
            mentions: vec![],
        };
        match degrade(msg, &Capabilities::TEXT_ONLY, Degrade::Notice) {
            Some(Body::Message { text, attachments, reply_to, .. }) => {
                assert_eq!(text.plain, "see\nx.png: https://f/x.png");
                assert_eq!(text.html, None);
                assert!(attachments.is_empty());
                assert_eq!(reply_to, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_room_without_threads_sees_a_reply_to_the_root() {
        let in_thread = |reply_to: Option<Option<String>>| Body::Message {
            text: Text::plain("in the thread"),
            kind: MessageKind::Text,
            attachments: vec![],
            reply_to,
            thread: some("root"),
            mentions: vec![],
        };
        let refs = |b: Option<Body<String>>| match b {
            Some(Body::Message { reply_to, thread, .. }) => (reply_to, thread),
            other => panic!("unexpected {other:?}"),
        };
        let s = |x: &str| Some(x.to_string());
        assert_eq!(refs(degrade(in_thread(None), &Capabilities::ALL, Degrade::Notice)), (None, s("root")));
        let replies_only = Capabilities { threads: false, ..Capabilities::ALL };
        assert_eq!(refs(degrade(in_thread(None), &replies_only, Degrade::Notice)), (s("root"), None));
        assert_eq!(refs(degrade(in_thread(some("m")), &replies_only, Degrade::Notice)), (s("m"), None), "its own reply first");
        // A root that never reached the room is no reply either.
        assert_eq!(
            refs(degrade(in_thread(None).map_refs(|_| Some(None::<String>)).unwrap(), &replies_only, Degrade::Notice)),
            (None, None)
        );
        assert_eq!(refs(degrade(in_thread(None), &Capabilities::TEXT_ONLY, Degrade::Notice)), (None, None));
    }

    #[test]
    fn inbound_only_rooms_get_nothing() {
        assert_eq!(degrade(Body::text("x"), &Capabilities::NONE, Degrade::Notice), None);
    }
}
