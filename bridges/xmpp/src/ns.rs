//! Every XML namespace the XMPP bridge speaks, in one place.
/// RFC 6120 resource binding.
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// XEP-0085 chat states.
pub const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// RFC 6120 client streams.
pub const NS_CLIENT: &str = "jabber:client";
/// Chat markers (XEP-0333): read markers.
pub const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";
/// XEP-0114 component streams.
pub const NS_COMPONENT: &str = "jabber:component:accept";
/// XEP-0308 last message correction.
pub const NS_CORRECT: &str = "urn:xmpp:message-correct:0";
/// XEP-0203 delayed delivery.
pub const NS_DELAY: &str = "urn:xmpp:delay";
/// XEP-0428 fallback indication.
pub const NS_FALLBACK: &str = "urn:xmpp:fallback:0";
/// XEP-0422 message fastening.
pub const NS_FASTEN: &str = "urn:xmpp:fasten:0";
/// XEP-0297 stanza forwarding.
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0313 message archive management.
pub const NS_MAM: &str = "urn:xmpp:mam:2";
/// XEP-0425 message moderation.
pub const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";
/// The earlier moderation protocol (XEP-0425 0.2, with fastening), still
/// what Prosody 0.12's module speaks.
pub const NS_MODERATE_0: &str = "urn:xmpp:message-moderate:0";
/// XEP-0045 multi-user chat.
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// XEP-0045 occupant information.
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0172 user nickname.
pub const NS_NICK: &str = "http://jabber.org/protocol/nick";
/// XEP-0066 out-of-band data.
pub const NS_OOB: &str = "jabber:x:oob";
/// XEP-0199 ping.
pub const NS_PING: &str = "urn:xmpp:ping";
/// XEP-0444 reactions.
pub const NS_REACTIONS: &str = "urn:xmpp:reactions:0";
/// Causeway's mark on every message it sends: a message carrying it was
/// relayed by a Causeway (this one or another) and is never relayed again,
/// so two bridges on the same pair of rooms do not ping-pong.
pub const NS_RELAY: &str = "urn:causeway:relay:0";
/// XEP-0461 message replies.
pub const NS_REPLY: &str = "urn:xmpp:reply:0";
/// XEP-0424 message retraction.
pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0424 message retraction, 0.x.
pub const NS_RETRACT_0: &str = "urn:xmpp:message-retract:0";
/// XEP-0359 unique and stable stanza ids.
pub const NS_SID: &str = "urn:xmpp:sid:0";
/// RFC 6120 stream elements.
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// XEP-0363 HTTP file upload.
pub const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
/// Stanza error conditions (RFC 6120 §8.3).
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
