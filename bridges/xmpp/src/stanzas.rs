//! Small typed elements that xmpp-parsers does not have: message retraction
//! (XEP-0424), replies (XEP-0461) and fallback indication (XEP-0428), each
//! with a parser that refuses malformed input and a builder.

use crate::ns::{NS_FALLBACK, NS_FASTEN, NS_MODERATE, NS_MODERATE_0, NS_RELAY, NS_REPLY, NS_RETRACT, NS_RETRACT_0};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;

/// The mark.
pub fn relay_mark() -> Element {
    Element::builder("relayed", NS_RELAY).build()
}

/// Whether a message carries the mark.
pub fn relayed(payloads: &[Element]) -> bool {
    payloads.iter().any(|e| e.is("relayed", NS_RELAY))
}

/// Name in the mark the id the message had where it came from
/// (`origin='…'`), so another Causeway standing by on the same rooms
/// knows which of its deliveries this copy is.
pub fn mark_origin(payloads: &mut [Element], origin: &str, sig: &str) {
    if origin.is_empty() || origin.len() > MAX_ID {
        return;
    }
    for e in payloads.iter_mut().filter(|e| e.is("relayed", NS_RELAY)) {
        *e = Element::builder("relayed", NS_RELAY)
            .attr(tokio_xmpp::minidom::rxml::xml_ncname!("origin").into(), origin)
            .attr(tokio_xmpp::minidom::rxml::xml_ncname!("sig").into(), sig)
            .build();
    }
}

/// The origin and signature a mark names, if it names both.
pub fn marked_origin(payloads: &[Element]) -> Option<(&str, &str)> {
    let mark = payloads.iter().find(|e| e.is("relayed", NS_RELAY))?;
    let origin = mark.attr("origin").filter(|o| !o.is_empty() && o.len() <= MAX_ID)?;
    let sig = mark.attr("sig").filter(|s| !s.is_empty() && s.len() <= 128)?;
    Some((origin, sig))
}

const MAX_ID: usize = 256;

/// Why an element from the network is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{element}: `{attr}` is missing")]
    Missing { element: &'static str, attr: &'static str },
    #[error("{element}: `id` is empty or longer than {MAX_ID} bytes")]
    BadId { element: &'static str },
    #[error("{element}: bad `{attr}` {value:?}")]
    BadValue { element: &'static str, attr: &'static str, value: String },
    #[error("fallback: `start` and `end` must come together, start ≤ end")]
    BadRange,
    /// An element xmpp-parsers has a type for, and refused.
    #[error("{element} that does not parse: {reason}")]
    Refused { element: &'static str, reason: String },
    /// An element without what gives it a meaning.
    #[error("{0}")]
    Incomplete(&'static str),
}

fn id_attr(e: &Element, element: &'static str) -> Result<String, Malformed> {
    match e.attr("id") {
        Some(id) if !id.is_empty() && id.len() <= MAX_ID => Ok(id.to_string()),
        Some(_) => Err(Malformed::BadId { element }),
        None => Err(Malformed::Missing { element, attr: "id" }),
    }
}

/// `<retract xmlns='urn:xmpp:message-retract:1' id='…'/>`: take back the
/// message with that id (in a group chat, the room's stanza-id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retract {
    pub id: String,
}

impl Retract {
    /// `None` when `e` is not a retraction at all.
    pub fn parse(e: &Element) -> Option<Result<Self, Malformed>> {
        e.is("retract", NS_RETRACT).then(|| Ok(Retract { id: id_attr(e, "retract")? }))
    }
    pub fn to_element(&self) -> Element {
        Element::builder("retract", NS_RETRACT).attr(xml_ncname!("id").into(), self.id.as_str()).build()
    }
}

/// `<reply xmlns='urn:xmpp:reply:0' to='…' id='…'/>`: this message answers
/// the message with that id (in a group chat, the room's stanza-id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub id: String,
    pub to: Option<String>,
}

impl Reply {
    pub fn parse(e: &Element) -> Option<Result<Self, Malformed>> {
        e.is("reply", NS_REPLY).then(|| Ok(Reply { id: id_attr(e, "reply")?, to: e.attr("to").map(str::to_string) }))
    }
    pub fn to_element(&self) -> Element {
        let mut b = Element::builder("reply", NS_REPLY).attr(xml_ncname!("id").into(), self.id.as_str());
        if let Some(to) = &self.to {
            b = b.attr(xml_ncname!("to").into(), to.as_str());
        }
        b.build()
    }
}

/// `<fallback xmlns='urn:xmpp:fallback:0' for='…'><body start='…' end='…'/></fallback>`:
/// the part of the body (in characters) that only clients without `for`
/// need, such as the quote of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    pub for_ns: String,
    /// Character ranges of the body; `None` means the whole body.
    pub ranges: Vec<Option<(usize, usize)>>,
}

impl Fallback {
    pub fn parse(e: &Element) -> Option<Result<Self, Malformed>> {
        if !e.is("fallback", NS_FALLBACK) {
            return None;
        }
        let parse = || {
            let for_ns = e.attr("for").ok_or(Malformed::Missing { element: "fallback", attr: "for" })?.to_string();
            let mut ranges = Vec::new();
            for b in e.children().filter(|c| c.is("body", NS_FALLBACK)) {
                let num = |attr: &'static str| -> Result<Option<usize>, Malformed> {
                    b.attr(attr)
                        .map(|v| v.parse::<usize>().map_err(|_| Malformed::BadValue { element: "fallback", attr, value: v.to_string() }))
                        .transpose()
                };
                match (num("start")?, num("end")?) {
                    (Some(s), Some(e)) if s <= e => ranges.push(Some((s, e))),
                    (None, None) => ranges.push(None),
                    _ => return Err(Malformed::BadRange),
                }
            }
            Ok(Fallback { for_ns, ranges })
        };
        Some(parse())
    }

    pub fn to_element(&self) -> Element {
        let mut b = Element::builder("fallback", NS_FALLBACK).attr(xml_ncname!("for").into(), self.for_ns.as_str());
        for r in &self.ranges {
            let mut body = Element::builder("body", NS_FALLBACK);
            if let Some((s, e)) = r {
                body = body.attr(xml_ncname!("start").into(), s.to_string()).attr(xml_ncname!("end").into(), e.to_string());
            }
            b = b.append(body.build());
        }
        b.build()
    }

    /// `body` without the fallback parts (ranges out of bounds are ignored).
    pub fn strip(&self, body: &str) -> String {
        let chars: Vec<char> = body.chars().collect();
        let mut keep = vec![true; chars.len()];
        for r in &self.ranges {
            let (s, e) = r.unwrap_or((0, chars.len()));
            if e <= chars.len() {
                keep[s..e].iter_mut().for_each(|k| *k = false);
            }
        }
        chars.iter().zip(keep).filter(|(_, k)| *k).map(|(c, _)| c).collect()
    }
}

/// A moderator took a message back (XEP-0425): which one, and who did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moderated {
    /// The room's stanza-id of the message.
    pub id: String,
    /// The moderator's occupant JID (`room/nick`).
    pub by: Option<String>,
}

impl Moderated {
    /// Read a room's moderation announcement from its payloads, in either
    /// protocol version. `None` when there is none.
    pub fn find(payloads: &[Element]) -> Option<Result<Self, Malformed>> {
        if let Some(r) = payloads.iter().find(|e| e.is("retract", NS_RETRACT))
            && let Some(m) = r.get_child("moderated", NS_MODERATE)
        {
            return Some(id_attr(r, "moderated retract").map(|id| Moderated { id, by: m.attr("by").map(str::to_string) }));
        }
        let apply = payloads.iter().find(|e| e.is("apply-to", NS_FASTEN))?;
        let m = apply.get_child("moderated", NS_MODERATE_0)?;
        m.get_child("retract", NS_RETRACT_0)?;
        Some(id_attr(apply, "apply-to").map(|id| Moderated { id, by: m.attr("by").map(str::to_string) }))
    }

    /// The moderation request for `id`, in the current protocol or the earlier one.
    pub fn request(id: &str, reason: &str, earlier: bool) -> Element {
        let reason = Element::builder("reason", if earlier { NS_MODERATE_0 } else { NS_MODERATE }).append(reason).build();
        if earlier {
            let moderate = Element::builder("moderate", NS_MODERATE_0)
                .append(Element::builder("retract", NS_RETRACT_0).build())
                .append(reason)
                .build();
            Element::builder("apply-to", NS_FASTEN).attr(xml_ncname!("id").into(), id).append(moderate).build()
        } else {
            Element::builder("moderate", NS_MODERATE)
                .attr(xml_ncname!("id").into(), id)
                .append(Element::builder("retract", NS_RETRACT).build())
                .append(reason)
                .build()
        }
    }
}

/// The first payload for which `parse` recognises its element.
pub fn find<T>(payloads: &[Element], parse: fn(&Element) -> Option<Result<T, Malformed>>) -> Option<Result<T, Malformed>> {
    payloads.iter().find_map(parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn a_mark_names_its_origin_and_signature_or_nothing() {
        let mut payloads = vec![relay_mark()];
        assert_eq!(marked_origin(&payloads), None, "a plain mark names nothing");
        mark_origin(&mut payloads, "$event:matrix", "abcd");
        assert!(relayed(&payloads));
        assert_eq!(marked_origin(&payloads), Some(("$event:matrix", "abcd")));
        let mut too_long = vec![relay_mark()];
        mark_origin(&mut too_long, &"x".repeat(300), "abcd");
        assert_eq!(marked_origin(&too_long), None);
        let forged: Element = "<relayed xmlns='urn:causeway:relay:0' origin='o' sig=''/>".parse().unwrap();
        assert_eq!(marked_origin(&[forged]), None, "an empty signature");
    }

    #[test]
    fn round_trips() {
        let r = Retract { id: "abc".into() };
        assert_eq!(Retract::parse(&r.to_element()).unwrap().unwrap(), r);
        let r = Reply { id: "s1".into(), to: Some("room@muc/nick".into()) };
        assert_eq!(Reply::parse(&r.to_element()).unwrap().unwrap(), r);
        let f = Fallback { for_ns: NS_REPLY.into(), ranges: vec![Some((0, 5)), None] };
        assert_eq!(Fallback::parse(&f.to_element()).unwrap().unwrap(), f);
    }

    #[test]
    fn other_elements_are_not_ours() {
        assert!(Retract::parse(&el("<retract xmlns='urn:xmpp:message-retract:0' id='x'/>")).is_none());
        assert!(Reply::parse(&el("<x xmlns='urn:xmpp:reply:0' id='x'/>")).is_none());
    }

    #[test]
    fn malformed_elements_are_refused() {
        for xml in [
            "<retract xmlns='urn:xmpp:message-retract:1'/>",
            "<retract xmlns='urn:xmpp:message-retract:1' id=''/>",
            "<reply xmlns='urn:xmpp:reply:0' to='x'/>",
        ] {
            let e = el(xml);
            let got = Retract::parse(&e).or_else(|| Reply::parse(&e).map(|r| r.map(|_| Retract { id: String::new() })));
            assert!(got.unwrap().is_err(), "{xml}");
        }
        let long = format!("<retract xmlns='urn:xmpp:message-retract:1' id='{}'/>", "x".repeat(300));
        assert!(Retract::parse(&el(&long)).unwrap().is_err());
        for xml in [
            "<fallback xmlns='urn:xmpp:fallback:0'><body/></fallback>",
            "<fallback xmlns='urn:xmpp:fallback:0' for='x'><body start='5'/></fallback>",
            "<fallback xmlns='urn:xmpp:fallback:0' for='x'><body start='5' end='2'/></fallback>",
            "<fallback xmlns='urn:xmpp:fallback:0' for='x'><body start='-1' end='2'/></fallback>",
        ] {
            assert!(Fallback::parse(&el(xml)).unwrap().is_err(), "{xml}");
        }
    }

    #[test]
    fn moderation_in_both_versions() {
        let v1 = el(
            "<m xmlns='jabber:client'><retract xmlns='urn:xmpp:message-retract:1' id='s1'><moderated xmlns='urn:xmpp:message-moderate:1' by='r@m/mod'/></retract></m>",
        );
        let v0 = el(
            "<m xmlns='jabber:client'><apply-to xmlns='urn:xmpp:fasten:0' id='s1'><moderated xmlns='urn:xmpp:message-moderate:0' by='r@m/mod'><retract xmlns='urn:xmpp:message-retract:0'/></moderated></apply-to></m>",
        );
        for m in [v1, v0] {
            let payloads: Vec<Element> = m.children().cloned().collect();
            assert_eq!(Moderated::find(&payloads).unwrap().unwrap(), Moderated { id: "s1".into(), by: Some("r@m/mod".into()) });
        }
        // A self-retraction is not a moderation; an apply-to without moderation neither.
        let plain: Vec<Element> = vec![Retract { id: "s1".into() }.to_element()];
        assert!(Moderated::find(&plain).is_none());
        let other = vec![el("<apply-to xmlns='urn:xmpp:fasten:0' id='s1'><x xmlns='urn:example'/></apply-to>")];
        assert!(Moderated::find(&other).is_none());
        let no_id = vec![el(
            "<apply-to xmlns='urn:xmpp:fasten:0'><moderated xmlns='urn:xmpp:message-moderate:0'><retract xmlns='urn:xmpp:message-retract:0'/></moderated></apply-to>",
        )];
        assert!(Moderated::find(&no_id).unwrap().is_err());
        assert!(Moderated::request("s1", "why", true).is("apply-to", NS_FASTEN));
        assert!(Moderated::request("s1", "why", false).is("moderate", NS_MODERATE));
    }

    #[test]
    fn fallback_strips_by_characters() {
        let f = Fallback { for_ns: NS_REPLY.into(), ranges: vec![Some((0, 8))] };
        assert_eq!(f.strip("> héllo\nanswer"), "answer");
        let beyond = Fallback { for_ns: NS_REPLY.into(), ranges: vec![Some((0, 99))] };
        assert_eq!(beyond.strip("short"), "short");
        let all = Fallback { for_ns: NS_REPLY.into(), ranges: vec![None] };
        assert_eq!(all.strip("gone"), "");
    }
}
