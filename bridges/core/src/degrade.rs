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
            Some(Body::Message {
                text,
                kind,
                attachments,
                reply_to: reply_to.flatten().filter(|_| caps.replies),
                thread: thread.flatten().filter(|_| caps.threads),
                mentions,
            })
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
    fn inbound_only_rooms_get_nothing() {
        assert_eq!(degrade(Body::text("x"), &Capabilities::NONE, Degrade::Notice), None);
    }
}
