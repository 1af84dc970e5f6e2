//! Events → mail: one mail per message (or a digest), as a mailing list
//! sends it, so that mail clients thread and filter it and auto-responders
//! leave it alone.

use causeway_core::text::html_to_plain;
use causeway_core::{MessageKind, Text};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;

/// A list, as its mail shows it.
#[derive(Clone, Debug)]
pub struct List {
    pub address: String,
    pub name: String,
    /// Where `List-Unsubscribe` points.
    pub owner: String,
}

impl List {
    /// The domain part, for Message-IDs.
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map_or("localhost", |(_, d)| d)
    }

    /// `List-Id` (RFC 2919): a dot-atom made from the address.
    pub fn list_id(&self) -> String {
        self.address.replace('@', ".")
    }
}

/// A file to attach.
pub struct File {
    pub name: String,
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// One mail, ready for SMTP.
pub struct Mail {
    pub bytes: Vec<u8>,
    /// Its Message-ID, without angle brackets.
    pub message_id: String,
}

/// How a sender from another network is named: `Alice (via Matrix)`.
pub fn display_name(name: &str, network: &str) -> String {
    let mut n = network.chars();
    let network: String = n.next().map(|c| c.to_uppercase().chain(n).collect()).unwrap_or_default();
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    format!("{} (via {network})", name.trim())
}

/// A header value made safe: one line, no control characters (a CR or LF
/// from another network must not start a header of its own).
pub fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_string()
}

/// A MIME type as given, if it is one (`type/subtype`); else a safe default.
pub fn mime_type(m: &str) -> String {
    let ok = m.split_once('/').is_some_and(|(t, s)| {
        let part = |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c));
        part(t) && part(s)
    });
    if ok { m.to_ascii_lowercase() } else { "application/octet-stream".into() }
}

/// A subject from the first line of a text: `[Ops] the first line…`.
pub fn subject_for(list: &List, plain: &str) -> String {
    let first = plain.split(['\n', '\r']).map(str::trim).find(|l| !l.is_empty()).unwrap_or("(no text)");
    let first = one_line(first);
    let mut s: String = first.chars().take(72).collect();
    if first.chars().count() > 72 {
        s.push('…');
    }
    format!("[{}] {s}", one_line(&list.name))
}

/// `Re: <subject>`, once.
pub fn reply_subject(original: &str) -> String {
    let original = one_line(original);
    if original.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("re:")) { original } else { format!("Re: {original}") }
}

fn list_headers<'x>(mut b: MessageBuilder<'x>, list: &'x List) -> MessageBuilder<'x> {
    b = b
        .header("List-Id", Raw::new(format!("{} <{}>", list.name, list.list_id())))
        .header("List-Post", Raw::new(format!("<mailto:{}>", list.address)))
        .header("List-Unsubscribe", Raw::new(format!("<mailto:{}?subject=unsubscribe%20{}>", list.owner, list.address)))
        // Auto-responders must not answer list mail (RFC 3834).
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .header("Precedence", Raw::new("list"));
    b
}

/// `text` with the people it mentions as `@Name` (the words naming them,
/// or before the text where it does not), and Matrix pills as their text.
pub fn with_mentions(text: &Text, mentions: &[causeway_core::Mention]) -> Text {
    if mentions.iter().all(causeway_core::Mention::is_room) {
        return text.clone();
    }
    let at = |m: &causeway_core::Mention| m.text.as_ref().map(|w| if w.starts_with('@') { w.clone() } else { format!("@{w}") });
    let (plain, _) = causeway_core::event::rename_mentions(&text.plain, mentions, at);
    let html = text.html.as_ref().map(|h| {
        let mut h = causeway_core::text::unpill(h);
        for m in mentions {
            if let (Some(w), Some(named)) = (&m.text, at(m)) {
                let w = causeway_core::text::escape_html(w);
                if !h.contains(&causeway_core::text::escape_html(&named))
                    && let Some(i) = h.find(&w)
                {
                    h.replace_range(i..i + w.len(), &causeway_core::text::escape_html(&named));
                }
            }
        }
        h
    });
    Text { plain, html }
}

/// One message from `sender` (already a display name) to the list.
#[allow(clippy::too_many_arguments)]
pub fn message(
    list: &List,
    delivery_id: &str,
    sender: &str,
    text: &Text,
    kind: MessageKind,
    subject: &str,
    in_reply_to: Option<&str>,
    references: &[String],
    files: Vec<File>,
    links: &[String],
    event_id: &str,
) -> std::io::Result<Mail> {
    let message_id = format!("{delivery_id}@{}", list.domain());
    let mut plain = plain_of(text);
    if kind == MessageKind::Emote {
        plain = format!("* {plain}");
    }
    let mut b = MessageBuilder::new()
        .from(Address::new_address(Some(one_line(sender)), list.address.clone()))
        .reply_to(list.address.clone())
        .to(Address::new_address(Some(one_line(&list.name)), list.address.clone()))
        .subject(one_line(subject))
        .message_id(message_id.clone())
        .header("X-Causeway-Event", Raw::new(event_id.to_string()));
    if let Some(r) = in_reply_to {
        b = b.in_reply_to(r.to_string());
        let mut refs: Vec<String> = references.to_vec();
        if !refs.iter().any(|x| x == r) {
            refs.push(r.to_string());
        }
        b = b.references(refs);
    }
    Ok(Mail { bytes: with_body(list_headers(b, list), plain, text, files, links)?, message_id })
}

/// The text of a message as plain text (from its HTML when it has only that).
fn plain_of(text: &Text) -> String {
    match &text.html {
        Some(h) if text.plain.trim().is_empty() => html_to_plain(h),
        _ => text.plain.clone(),
    }
}

/// The mail `b` with its body: `plain` and `text`'s HTML, each with the
/// `links` (files not attached) after it, and the `files` attached.
fn with_body(mut b: MessageBuilder<'_>, mut plain: String, text: &Text, files: Vec<File>, links: &[String]) -> std::io::Result<Vec<u8>> {
    for l in links {
        plain.push_str(&format!("\n{l}"));
    }
    b = b.text_body(plain);
    if let Some(html) = &text.html {
        let mut html = html.clone();
        for l in links {
            let l = causeway_core::text::escape_html(l);
            html.push_str(&format!("<br><a href=\"{l}\">{l}</a>"));
        }
        b = b.html_body(html);
    }
    for f in files {
        b = b.attachment(mime_type(&f.mime), one_line(&f.name), f.bytes);
    }
    b.write_to_vec()
}

/// Whether `a` looks like `local@domain`: one `@`, no spaces, no angle
/// brackets or control characters.
pub fn plausible_address(a: &str) -> bool {
    let ok = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c));
    matches!(a.split_once('@'), Some((l, d)) if ok(l) && ok(d) && !d.contains('@'))
}

/// A broadcast to one person: from `from` (named for who sent it) to `to`,
/// a mail of its own that no auto-responder answers.
#[allow(clippy::too_many_arguments)]
pub fn announcement(
    from: &str,
    sender: &str,
    to: &str,
    delivery_id: &str,
    text: &Text,
    files: Vec<File>,
    links: &[String],
    event_id: &str,
) -> std::io::Result<Mail> {
    let domain = from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let message_id = format!("{delivery_id}@{domain}");
    let sender = one_line(sender);
    let plain = plain_of(text);
    let first: String =
        plain.lines().chain(links.iter().map(String::as_str)).find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(60).collect();
    let b = MessageBuilder::new()
        .from(Address::new_address(Some(sender.clone()), from.to_string()))
        .to(to.to_string())
        .subject(one_line(&format!("Announcement from {sender}: {first}")))
        .message_id(message_id.clone())
        .header("X-Causeway-Event", Raw::new(event_id.to_string()))
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .header("Precedence", Raw::new("bulk"));
    Ok(Mail { bytes: with_body(b, plain, text, files, links)?, message_id })
}

/// One entry of a digest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DigestEntry {
    pub at_ms: i64,
    pub from: String,
    pub text: String,
    pub delivery_id: String,
}

/// The digest of `entries` for one subscriber.
pub fn digest(list: &List, entries: &[DigestEntry]) -> std::io::Result<Mail> {
    let n = entries.len();
    gathered(list, entries, "digest", &format!("Digest: {n} message{}", if n == 1 { "" } else { "s" }))
}

/// One mail of what was held back from a list's subscribers: notices of
/// changes (edits, retractions, topics) and messages beyond the send limit.
pub fn held(list: &List, entries: &[DigestEntry]) -> std::io::Result<Mail> {
    let n = entries.len();
    gathered(list, entries, "held", &format!("Gathered: {n} message{}", if n == 1 { "" } else { "s" }))
}

fn gathered(list: &List, entries: &[DigestEntry], what: &str, title: &str) -> std::io::Result<Mail> {
    let first = entries.first().map(|e| e.delivery_id.as_str()).unwrap_or("empty");
    let message_id = format!("{what}-{first}@{}", list.domain());
    let mut body = format!("{} message{} in {}:\n", entries.len(), if entries.len() == 1 { "" } else { "s" }, list.name);
    for e in entries {
        let at = time::OffsetDateTime::from_unix_timestamp(e.at_ms / 1000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc2822).ok())
            .unwrap_or_default();
        body.push_str(&format!("\n--- {} — {at}\n{}\n", e.from, e.text.trim_end()));
    }
    let b = MessageBuilder::new()
        .from(Address::new_address(Some(list.name.clone()), list.address.clone()))
        .reply_to(list.address.clone())
        .to(Address::new_address(Some(list.name.clone()), list.address.clone()))
        .subject(format!("[{}] {title}", list.name))
        .message_id(message_id.clone());
    let b = list_headers(b, list).text_body(body);
    Ok(Mail { bytes: b.write_to_vec()?, message_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> List {
        List { address: "bridge+ops@mail.test".into(), name: "Ops".into(), owner: "owner@mail.test".into() }
    }

    #[test]
    fn mentions_are_written_at_their_name() {
        use causeway_core::Mention;
        let pill = r#"<a href="https://matrix.to/#/@_causeway_alice:m.test">Alice Liddell</a>: look"#;
        let text = Text { plain: "Alice Liddell: look".into(), html: Some(pill.into()) };
        let m = [Mention::new("alice", Some("Alice Liddell".into()))];
        let out = with_mentions(&text, &m);
        assert_eq!(out.plain, "@Alice Liddell: look");
        assert_eq!(out.html.as_deref(), Some("@Alice Liddell: look"), "the pill is a name, not a link");
        let out = with_mentions(&Text::plain("look"), &[Mention::new("bob", Some("Bob".into()))]);
        assert_eq!(out.plain, "@Bob: look", "named before a text that does not name them");
        let out = with_mentions(&Text::plain("all of you"), &[Mention::new(Mention::ROOM, None), Mention::new("x", None)]);
        assert_eq!(out.plain, "all of you", "nobody named, nothing written");
    }

    #[test]
    fn a_list_mail_threads_and_keeps_machines_quiet() {
        let text = Text { plain: "hello *all*".into(), html: Some("hello <b>all</b>".into()) };
        let m = message(
            &list(),
            "d-1",
            &display_name("Alice", "matrix"),
            &text,
            MessageKind::Text,
            "Re: [Ops] plans",
            Some("orig@mail.test"),
            &["root@mail.test".into()],
            vec![],
            &["https://x/y.pdf".into()],
            "e-1",
        )
        .unwrap();
        let raw = String::from_utf8(m.bytes).unwrap();
        assert_eq!(m.message_id, "d-1@mail.test");
        for want in [
            "Message-ID: <d-1@mail.test>",
            "In-Reply-To: <orig@mail.test>",
            "References: <root@mail.test> <orig@mail.test>",
            "List-Id: Ops <bridge+ops.mail.test>",
            "List-Unsubscribe: <mailto:owner@mail.test?subject=unsubscribe%20bridge+ops@mail.test>",
            "Auto-Submitted: auto-generated",
            "Reply-To: <bridge+ops@mail.test>",
            "From: \"Alice (via Matrix)\" <bridge+ops@mail.test>",
            "multipart/alternative",
        ] {
            assert!(raw.contains(want), "missing {want:?} in\n{raw}");
        }
        // Read back by a MIME parser: both parts, the link in both.
        let parsed = mail_parser::MessageParser::default().parse(raw.as_bytes()).unwrap();
        assert!(parsed.body_text(0).unwrap().contains("https://x/y.pdf"));
        assert!(parsed.body_html(0).unwrap().contains("<b>all</b>"));
    }

    #[test]
    fn subjects_and_names() {
        assert_eq!(subject_for(&list(), "\n  first line\nsecond"), "[Ops] first line");
        assert_eq!(subject_for(&list(), &"x".repeat(100)).chars().count(), "[Ops] ".len() + 73);
        assert_eq!(reply_subject("Re: x"), "Re: x");
        assert_eq!(reply_subject("x"), "Re: x");
        assert_eq!(reply_subject("Привет"), "Re: Привет", "cut by characters, not bytes");
        assert_eq!(reply_subject("é"), "Re: é");
        assert_eq!(reply_subject("a\r\nBcc: x"), "Re: a  Bcc: x", "no header of its own");
        assert_eq!(subject_for(&list(), "one\rBcc: x"), "[Ops] one");
        assert_eq!(mime_type("image/PNG"), "image/png");
        assert_eq!(mime_type("text/html\r\nX: y"), "application/octet-stream");
        assert_eq!(display_name("Bob\r\nBcc: x", "xmpp"), "BobBcc: x (via Xmpp)");
    }

    #[test]
    fn digests_list_every_message() {
        let e = |n: i64| DigestEntry {
            at_ms: 1_700_000_000_000 + n,
            from: format!("P{n}"),
            text: format!("t{n}"),
            delivery_id: format!("d{n}"),
        };
        let m = digest(&list(), &[e(1), e(2), e(3)]).unwrap();
        let raw = String::from_utf8(m.bytes).unwrap();
        assert!(raw.contains("Subject: [Ops] Digest: 3 messages"), "{raw}");
        for n in 1..=3 {
            assert!(raw.contains(&format!("--- P{n}")), "{raw}");
        }
        assert_eq!(m.message_id, "digest-d1@mail.test");
    }
}
