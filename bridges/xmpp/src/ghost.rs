//! Ghosts: how a sender from another network appears on XMPP (a JID under
//! the component's domain, a nick in a room), and who a ghost stands for
//! when someone writes to it one to one.

use causeway_core::{DeliveryError, DirectError, Recipient, Sender};
use tokio_xmpp::jid::BareJid;

use crate::config::XmppOptions;
use crate::{BOT_NODE, Inner, jid};

/// Where a ghost's record (who it stands for) is kept in the bridge's state.
const GHOST_KEY: &str = "ghost:";

/// A nick from a display name: one line, no control characters, not empty.
pub fn nick(name: &str) -> String {
    let n: String = name.chars().filter(|c| !c.is_control()).collect::<String>().trim().chars().take(64).collect();
    if n.is_empty() { "someone".to_string() } else { n }
}

/// The ghost JID of a sender from another network: from the person's id
/// when the directory knows them (one ghost per person, whatever network
/// they speak from), else from the origin bridge and the sender's id there.
pub fn jid_of(options: &XmppOptions, domain: &str, sender: &Sender, origin_bridge: &str) -> Result<BareJid, DeliveryError> {
    let mut node = match &sender.person {
        Some(person) => jid::fill(&options.person_localpart, &[("person", person)]),
        None => jid::fill(&options.ghost_localpart, &[("bridge", origin_bridge), ("id", &sender.id)]),
    };
    if node == BOT_NODE {
        node.push('_'); // the bridge's own address is not anyone's ghost
    }
    BareJid::new(&format!("{node}@{domain}")).map_err(|e| DeliveryError::permanent(format!("no ghost JID for {:?}: {e}", sender.id)))
}

/// Remember who `ghost` stands for, so a direct message to it finds them.
pub(crate) async fn remember(inner: &Inner, ghost: &BareJid, sender: &Sender, bridge: &str) {
    let key = Recipient::key_of(sender, bridge);
    let jid = ghost.to_string();
    if inner.state().ghost.ghosts.get(&jid) == Some(&key) {
        return;
    }
    if let Some(ctx) = inner.ctx.get()
        && let Err(e) = ctx.save_state(&format!("{GHOST_KEY}{jid}"), &key).await
    {
        // Not fatal: the next delivery tries again.
        tracing::warn!(ghost = %jid, "cannot remember the ghost: {e}");
        return;
    }
    inner.state().ghost.ghosts.insert(jid, key);
}

/// Who a ghost stands for: as remembered, or a directory person by the
/// ghost's name.
pub(crate) async fn recipient_of(inner: &Inner, ghost: &BareJid) -> Result<Option<Recipient>, DirectError> {
    let jid = ghost.to_string();
    let known = inner.state().ghost.ghosts.get(&jid).cloned();
    let known = match (known, inner.ctx.get()) {
        (Some(k), _) => Some(k),
        (None, Some(ctx)) => ctx.load_state(&format!("{GHOST_KEY}{jid}")).await.map_err(|e| DirectError::Unavailable(e.to_string()))?,
        (None, None) => None,
    };
    if let Some(key) = known {
        inner.state().ghost.ghosts.insert(jid, key.clone());
        return Ok(Recipient::parse(&key));
    }
    let Some(node) = ghost.node() else { return Ok(None) };
    // An account's ghost by its name (`{bridge}={id}`): someone writing to
    // a Matrix user by the address of their ghost before it ever spoke.
    if let Some((bridge, id)) = jid::parse_pair(&inner.options.ghost_localpart, node.as_str()) {
        return Ok(Some(Recipient::Account { bridge, id }));
    }
    Ok(jid::parse_single(&inner.options.person_localpart, "person", node.as_str()).map(Recipient::Person))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicks_are_one_clean_line() {
        assert_eq!(nick("  Alice\nLiddell\u{7} "), "AliceLiddell");
        assert_eq!(nick("\n\t"), "someone");
        assert_eq!(nick(&"x".repeat(100)).len(), 64);
    }

    fn options(extra: serde_json::Value) -> XmppOptions {
        let mut o = serde_json::json!({"domain": "bridge.x", "secret": "s"});
        o.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        causeway_core::parse_options(o).unwrap()
    }

    #[test]
    fn ghosts_are_per_person_or_per_origin_sender() {
        let o = options(serde_json::json!({}));
        let mut s = Sender { id: "@bob:matrix.test".into(), person: None, name: "Bob".into(), avatar: None };
        assert_eq!(jid_of(&o, "bridge.x", &s, "matrix").unwrap().to_string(), "matrix=\\40bob\\3amatrix.test@bridge.x");
        s.person = Some("bob".into());
        assert_eq!(jid_of(&o, "bridge.x", &s, "matrix").unwrap().to_string(), "bob@bridge.x");
        s.person = Some("causeway".into());
        assert_eq!(jid_of(&o, "bridge.x", &s, "matrix").unwrap().to_string(), "causeway_@bridge.x", "not the bridge's own JID");
        let o = options(serde_json::json!({"person_localpart": "p.{person}", "ghost_localpart": "{id}+{bridge}"}));
        assert_eq!(jid_of(&o, "bridge.x", &s, "matrix").unwrap().to_string(), "p.causeway@bridge.x");
        s.person = None;
        assert_eq!(jid_of(&o, "bridge.x", &s, "matrix").unwrap().to_string(), "\\40bob\\3amatrix.test+matrix@bridge.x");
    }

    #[test]
    fn bad_templates_are_named() {
        let o = serde_json::json!({"domain": "bridge.x", "secret": "s", "ghost_localpart": "{bridge}", "person_localpart": "{who}"});
        let errors = causeway_core::parse_options::<XmppOptions>(o).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["person_localpart", "ghost_localpart"], "{errors:?}");
    }
}
