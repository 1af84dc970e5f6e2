//! Small typed elements that xmpp-parsers does not have: message retraction
//! (XEP-0424), replies (XEP-0461) and fallback indication (XEP-0428), each
//! with a parser that refuses malformed input and a builder.

use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;

pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
pub const NS_REPLY: &str = "urn:xmpp:reply:0";
pub const NS_FALLBACK: &str = "urn:xmpp:fallback:0";
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_DELAY: &str = "urn:xmpp:delay";

const MAX_ID: usize = 256;

fn id_attr(e: &Element, what: &str) -> Result<String, String> {
    match e.attr("id") {
        Some(id) if !id.is_empty() && id.len() <= MAX_ID => Ok(id.to_string()),
        Some(_) => Err(format!("{what}: `id` is empty or longer than {MAX_ID} bytes")),
        None => Err(format!("{what}: `id` is missing")),
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
    pub fn parse(e: &Element) -> Option<Result<Self, String>> {
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
    pub fn parse(e: &Element) -> Option<Result<Self, String>> {
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
    pub fn parse(e: &Element) -> Option<Result<Self, String>> {
        if !e.is("fallback", NS_FALLBACK) {
            return None;
        }
        let parse = || {
            let for_ns = e.attr("for").ok_or("fallback: `for` is missing")?.to_string();
            let mut ranges = Vec::new();
            for b in e.children().filter(|c| c.is("body", NS_FALLBACK)) {
                let num = |name: &str| -> Result<Option<usize>, String> {
                    b.attr(name).map(|v| v.parse::<usize>().map_err(|_| format!("fallback: bad `{name}` {v:?}"))).transpose()
                };
                match (num("start")?, num("end")?) {
                    (Some(s), Some(e)) if s <= e => ranges.push(Some((s, e))),
                    (None, None) => ranges.push(None),
                    _ => return Err("fallback: `start` and `end` must come together, start ≤ end".to_string()),
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

/// The first payload for which `parse` recognises its element.
pub fn find<T>(payloads: &[Element], parse: fn(&Element) -> Option<Result<T, String>>) -> Option<Result<T, String>> {
    payloads.iter().find_map(parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
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
    fn fallback_strips_by_characters() {
        let f = Fallback { for_ns: NS_REPLY.into(), ranges: vec![Some((0, 8))] };
        assert_eq!(f.strip("> héllo\nanswer"), "answer");
        let beyond = Fallback { for_ns: NS_REPLY.into(), ranges: vec![Some((0, 99))] };
        assert_eq!(beyond.strip("short"), "short");
        let all = Fallback { for_ns: NS_REPLY.into(), ranges: vec![None] };
        assert_eq!(all.strip("gone"), "");
    }
}
