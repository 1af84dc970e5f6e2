//! Entry points for the fuzz targets (`fuzz/`): what the server sends, read
//! as the bridge reads it. Not an API.

use std::sync::LazyLock;

use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::presence::Presence;

use crate::XmppBridge;

const ROOM: &str = "ops@conference.example.org";

static BRIDGE: LazyLock<XmppBridge> = LazyLock::new(|| {
    let options = serde_json::json!({"domain": "bridge.example.org", "secret": "s", "max_stanza_bytes": 65536});
    let b = XmppBridge::from_options(options).expect("valid options");
    b.inner.state().rooms.joined.insert(ROOM.into());
    b.inner.state().ghost.ghost_nicks.entry(ROOM.into()).or_default().insert("Ghost".into());
    b
});

/// Bytes of one stanza as the server sends them: through the depth guard,
/// the XML parser, the stanza types, and the bridge's reading of messages
/// (group chat, direct, archive results, moderation) and presence.
pub fn stanza(data: &[u8]) {
    let mut guard = crate::depth::Filter::new(crate::connection::MAX_DEPTH);
    let mut out = Vec::with_capacity(data.len());
    guard.run(data, &mut out);
    let Ok(text) = std::str::from_utf8(&out) else { return };
    let Ok(e) = text.parse::<Element>() else { return };
    if crate::connection::too_deep(&e, crate::connection::MAX_DEPTH) {
        return;
    }
    let inner = &BRIDGE.inner;
    match e.name() {
        "message" => {
            if let Ok(m) = Message::try_from(e) {
                if crate::archive::is_result(&m) {
                    let _ = crate::archive::take_result(inner, m);
                } else if crate::direct::is_direct(inner, &m) {
                    let _ = crate::direct::inbound(inner, m);
                } else {
                    let _ = crate::inbound::message_inbound(inner, m);
                }
            }
        }
        "presence" => {
            if let Ok(p) = Presence::try_from(e) {
                let _ = crate::stanzas::relayed(&p.payloads);
                let _ = crate::inbound::presence(inner, p);
            }
        }
        _ => {}
    }
}

/// XEP-0393 message styling both ways.
pub fn styling(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(html) = crate::styling::to_html(text) {
        let _ = crate::styling::from_html(&html);
    }
    let _ = crate::styling::from_html(text);
}
