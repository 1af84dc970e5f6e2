//! Incoming mail → what to do with it: take it into a list's portal, leave it
//! alone (auto-replies, bounces, our own mail), or quarantine it (malformed,
//! too large, refused by the policy). Everything here reads outside data:
//! nothing panics, nothing is lost (a mail not taken is kept in a folder).

use causeway_core::text::{escape_html, html_to_plain, sanitize_html};
use mail_parser::{HeaderValue, Message, MessageParser, MimeHeaders};

use crate::config::{EmailOptions, PolicyOptions};

/// A mail to take into a list's portal.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken {
    /// The list address (the room).
    pub list: String,
    pub from: String,
    pub name: Option<String>,
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    /// The subject when the mail starts a conversation (not a reply).
    pub new_subject: Option<String>,
    /// The text without quoted replies and signature.
    pub plain: String,
    /// Sanitized HTML; the quote and signature, when cut, in a collapsed part.
    pub html: Option<String>,
    pub files: Vec<File>,
    pub at_ms: Option<i64>,
    /// The invitation the mail carries (its calendar parts, read; they are
    /// not among `files`).
    pub invitation: Option<crate::invite::Invitation>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// What to do with one mail.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Take(Box<Taken>),
    /// Not for a portal and never answered (auto-replies, bounces, our own
    /// mail, mail to no list): marked as read, counted under `reason`.
    Ignore {
        reason: &'static str,
        detail: String,
    },
    /// Kept aside in the quarantine folder, counted under `reason`.
    Quarantine {
        reason: &'static str,
        detail: String,
    },
}

fn ignore(reason: &'static str, detail: impl Into<String>) -> Verdict {
    Verdict::Ignore { reason, detail: detail.into() }
}

fn quarantine(reason: &'static str, detail: impl Into<String>) -> Verdict {
    Verdict::Quarantine { reason, detail: detail.into() }
}

/// A header's text, however the parser holds it.
fn header_text(v: Option<&HeaderValue>) -> String {
    match v {
        Some(HeaderValue::Text(t)) => t.to_string(),
        Some(HeaderValue::TextList(l)) => l.join(" "),
        _ => String::new(),
    }
}

/// Message ids of a header, without angle brackets.
fn ids(v: &HeaderValue) -> Vec<String> {
    let list: Vec<String> = match v {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    };
    list.into_iter()
        .flat_map(|s| s.split_whitespace().map(|x| x.trim_matches(|c| c == '<' || c == '>').to_string()).collect::<Vec<_>>())
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .collect()
}

/// Mail that machines send on their own: answering or forwarding it makes loops.
fn automatic(m: &Message) -> Option<(&'static str, String)> {
    let auto = header_text(m.header("Auto-Submitted")).to_ascii_lowercase();
    if !auto.is_empty() && !auto.starts_with("no") {
        return Some(("auto_reply", format!("Auto-Submitted: {auto}")));
    }
    // Not `list`: mail from a mailing list the bridge's mailbox is on is
    // exactly what a portal may want.
    let precedence = header_text(m.header("Precedence")).to_ascii_lowercase();
    if ["bulk", "junk", "auto_reply"].contains(&precedence.trim()) {
        return Some(("auto_reply", format!("Precedence: {precedence}")));
    }
    for h in ["X-Autoreply", "X-Autorespond"] {
        if m.header(h).is_some() {
            return Some(("auto_reply", format!("{h} present")));
        }
    }
    let ctype = m.content_type();
    if ctype.is_some_and(|c| c.ctype().eq_ignore_ascii_case("multipart") && c.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report"))) {
        return Some(("bounce", "a delivery or read report".into()));
    }
    if m.header_raw("Return-Path").is_some_and(|r| matches!(r.trim(), "" | "<>")) {
        return Some(("bounce", "null return path".into()));
    }
    let from = m.from().and_then(|f| f.first()).and_then(|a| a.address()).unwrap_or("").to_ascii_lowercase();
    if from.starts_with("mailer-daemon@") || from.starts_with("postmaster@") {
        return Some(("bounce", format!("from {from}")));
    }
    None
}

/// The list this copy of the mail was delivered for: the envelope
/// recipient the server recorded (each list gets its own copy), else the
/// first list named in To or Cc.
fn list_of<'a>(m: &Message, options: &'a EmailOptions) -> Option<&'a String> {
    let find = |candidates: &[String]| options.lists.keys().find(|l| candidates.iter().any(|c| c.eq_ignore_ascii_case(l)));
    let mut envelope: Vec<String> = Vec::new();
    for h in ["Delivered-To", "X-Original-To", "Envelope-To"] {
        envelope
            .extend(m.header_values(h).map(|v| header_text(Some(v)).trim().trim_matches(|c| c == '<' || c == '>').to_ascii_lowercase()));
    }
    if let Some(l) = find(&envelope) {
        return Some(l);
    }
    let mut named: Vec<String> = Vec::new();
    for a in m.to().into_iter().chain(m.cc()) {
        named.extend(a.iter().filter_map(|x| x.address()).map(str::to_ascii_lowercase));
    }
    find(&named)
}

/// Whether the policy takes mail from `sender` (lowercase) for a list whose
/// subscribers' addresses are `subscribers`.
fn allowed(policy: &PolicyOptions, sender: &str, subscribers: &[String]) -> bool {
    if subscribers.iter().any(|s| s.eq_ignore_ascii_case(sender)) {
        return true;
    }
    let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    policy.allow.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        if a.contains('@') { a == sender } else { domain == a || domain.ends_with(&format!(".{a}")) }
    })
}

/// Whether `domain` is `from_domain` or one of its parent domains'
/// subdomains the other way round (relaxed alignment, RFC 7489).
fn aligned(domain: &str, from_domain: &str) -> bool {
    let (d, f) = (domain.trim().to_ascii_lowercase(), from_domain.to_ascii_lowercase());
    !d.is_empty() && (d == f || f.ends_with(&format!(".{d}")) || d.ends_with(&format!(".{f}")))
}

/// The receiving server's verdicts, each "pass", "fail", … or "".
#[derive(Debug, Default)]
struct Verdicts {
    dmarc: String,
    dkim: String,
    spf: String,
    /// SMTP AUTH (RFC 8601 §2.7.4): the sender logged in to the receiving
    /// server itself.
    auth: String,
}

/// The receiving server's verdicts. DKIM and SPF count as "pass" only when
/// the domain they vouch for (`header.d`, `smtp.mailfrom`) is the From
/// address's; SMTP AUTH only when the login (`smtp.auth`) is the From
/// address itself.
fn verdicts(m: &Message, authserv_id: &str, from: &str) -> Option<Verdicts> {
    let from_domain = from.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    // The topmost header is the receiving server's own (RFC 8601 §5).
    let header = m.header_values("Authentication-Results").map(|v| header_text(Some(v))).next()?;
    // Comments may hold anything, `;` included: leave them out.
    let mut plain = String::with_capacity(header.len());
    let mut depth = 0usize;
    for c in header.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '"' => {}
            c if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let mut parts = plain.split(';');
    let id = parts.next()?.split_whitespace().next()?.to_ascii_lowercase();
    if id != authserv_id.to_ascii_lowercase() {
        return None;
    }
    let mut v = Verdicts::default();
    for part in parts {
        let mut words = part.split_whitespace();
        let Some((method, result)) = words.next().and_then(|w| w.split_once('=')) else { continue };
        let result = result.to_ascii_lowercase();
        let props: Vec<(String, &str)> = words.filter_map(|w| w.split_once('=')).map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        let vouches = |key: &str| props.iter().any(|(k, v)| k == key && aligned(v.rsplit('@').next().unwrap_or(v), from_domain));
        let logged_in_as_from = props.iter().any(|(k, v)| k == "smtp.auth" && v.eq_ignore_ascii_case(from));
        match method.to_ascii_lowercase().as_str() {
            "dmarc" if v.dmarc.is_empty() => v.dmarc = result,
            // One aligned good signature is enough.
            "dkim" if v.dkim != "pass" => v.dkim = if result == "pass" && !vouches("header.d") { "unaligned".into() } else { result },
            "spf" if v.spf.is_empty() => v.spf = if result == "pass" && !vouches("smtp.mailfrom") { "unaligned".into() } else { result },
            "auth" if v.auth.is_empty() => v.auth = if result == "pass" && !logged_in_as_from { "someone_else".into() } else { result },
            _ => {}
        }
    }
    Some(v)
}

/// Why the authentication verdict refuses this mail, if it does.
fn authentication_refusal(m: &Message, policy: &PolicyOptions, sender: &str) -> Option<String> {
    let id = policy.authserv_id.as_deref()?;
    match verdicts(m, id, sender) {
        Some(v) => {
            if v.dmarc == "fail" {
                return Some("DMARC failed".into());
            }
            // Logged in as the From address: the receiving server vouches for it.
            let passed = v.dmarc == "pass" || v.dkim == "pass" || v.spf == "pass" || v.auth == "pass";
            if v.dmarc.is_empty() && v.dkim != "pass" && v.spf == "fail" && v.auth != "pass" {
                return Some("SPF failed and no valid DKIM signature".into());
            }
            if v.auth == "someone_else" && !passed {
                return Some("logged in to the receiving server as someone other than the From address".into());
            }
            (policy.require_authentication && !passed).then(|| "no passing DMARC, DKIM, SPF or SMTP AUTH verdict".into())
        }
        None => policy.require_authentication.then(|| format!("no Authentication-Results from {id}")),
    }
}

/// Split the text into what the sender wrote and what they quoted or signed
/// with (a trailing quote with its "On … wrote:" line, a forwarded original,
/// a `-- ` signature). Quotes inside the text (inline answers) stay.
pub fn clean(text: &str) -> (String, String) {
    let lines: Vec<&str> = text.lines().collect();
    let mut cut = lines.len();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_end();
        if t == "-- "
            || t == "--"
            || t.starts_with("-----Original Message-----")
            || t.starts_with("-------- Original Message")
            || t.starts_with("---------- Forwarded message")
        {
            cut = i;
            break;
        }
        // Outlook: a rule, then "From: …".
        if t.starts_with("________________________________") && lines.get(i + 1).is_some_and(|n| n.starts_with("From:")) {
            cut = i;
            break;
        }
    }
    // A trailing quote (with blank lines around it) …
    let mut end = cut;
    while end > 0 && (lines[end - 1].trim().is_empty() || lines[end - 1].starts_with('>')) {
        end -= 1;
    }
    if lines[end..cut].iter().any(|l| l.starts_with('>')) {
        cut = end;
        // … and its attribution line, which may wrap over two lines.
        for back in 1..=2 {
            if cut >= back {
                let l = lines[cut - back].trim();
                if l.ends_with("wrote:") || l.ends_with("a écrit :") || l.ends_with("schrieb:") || l.ends_with("escribió:") {
                    cut -= back;
                    break;
                }
            }
        }
    }
    let kept = lines[..cut].join("\n").trim_end().to_string();
    let rest = lines[cut..].join("\n").trim().to_string();
    (kept, rest)
}

/// Read one mail. `subscribers` gives a list's subscribers' addresses.
/// More multiparts and nested messages than any mail a person sends holds
/// (a forward of a forward with attachments has a handful).
pub const MAX_MIME_CONTAINERS: usize = 64;

/// How many parts of `raw` are containers (`multipart/…`, `message/…`):
/// counted on the bytes, before any parsing, over every `Content-Type`
/// header at the start of a line (folded values included), wherever it is.
pub fn mime_containers(raw: &[u8]) -> usize {
    let mut n = 0;
    let mut lines = raw.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        if !line[..colon].trim_ascii_end().eq_ignore_ascii_case(b"content-type") {
            continue;
        }
        let mut value = line[colon + 1..].trim_ascii().to_vec();
        // A folded value goes on in lines that start with white space.
        while value.is_empty() && lines.peek().is_some_and(|l| l.first().is_some_and(|&b| b == b' ' || b == b'\t')) {
            value = lines.next().unwrap_or_default().trim_ascii().to_vec();
        }
        let value = value.to_ascii_lowercase();
        if value.starts_with(b"multipart/") || value.starts_with(b"message/") {
            n += 1;
        }
    }
    n
}

/// One piece (over 80 lines): the checks a mail passes in order (size, loops
/// and auto-replies, sender policy, authentication, list) before it becomes an
/// event; each ends the reading with its verdict.
pub fn read(raw: &[u8], options: &EmailOptions, subscribers: &dyn Fn(&str) -> Vec<String>) -> Verdict {
    if raw.len() as u64 > options.max_message_bytes {
        return quarantine("too_large", format!("{} bytes, more than max_message_bytes", raw.len()));
    }
    let containers = mime_containers(raw);
    if containers > MAX_MIME_CONTAINERS {
        // Not parsed at all: the parser recurses into nested messages.
        return quarantine("too_deep", format!("{containers} MIME multiparts or nested messages, more than {MAX_MIME_CONTAINERS}"));
    }
    let Some(m) = MessageParser::default().parse(raw) else {
        return quarantine("malformed", "not a MIME message");
    };
    let Some(from) = m.from().and_then(|f| f.first()) else {
        return quarantine("malformed", "no From address");
    };
    let Some(sender) = from.address().map(str::to_ascii_lowercase).filter(|a| crate::config::is_address(a)) else {
        return quarantine("malformed", "the From address is not an address");
    };
    if let Some((reason, detail)) = automatic(&m) {
        return ignore(reason, detail);
    }
    if options.lists.keys().any(|l| l.eq_ignore_ascii_case(&sender)) {
        return ignore("loop", "sent from a list address (Causeway's own mail)");
    }
    let Some(list) = list_of(&m, options) else {
        return ignore("no_list", "not addressed to a configured list");
    };
    if !allowed(&options.policy, &sender, &subscribers(list)) {
        return quarantine("policy", format!("{sender} is neither a subscriber nor allowed by policy.allow"));
    }
    if let Some(why) = authentication_refusal(&m, &options.policy, &sender) {
        return quarantine("policy", format!("{sender}: {why}"));
    }
    let in_reply_to = ids(m.in_reply_to()).into_iter().next().or_else(|| ids(m.references()).pop());
    let new_subject =
        m.subject().map(crate::compose::one_line).filter(|s| !s.is_empty() && in_reply_to.is_none()).map(|s| s.chars().take(300).collect());
    let html_body =
        m.body_html(0).filter(|_| m.html_body_count() > 0 && m.html_bodies().any(|p| p.is_text_html())).map(|h| sanitize_html(&h));
    let invitation = crate::invite::of_mail(&m);
    let plain_body = match m.text_bodies().find(|p| !p.is_text_html() && !crate::invite::is_calendar_part(p)) {
        Some(p) => p.text_contents().unwrap_or("").to_string(),
        None => html_body.as_deref().map(html_to_plain).unwrap_or_default(),
    };
    let plain_body = plain_body.replace("\r\n", "\n");
    let (plain, quoted) = clean(&plain_body);
    let html = if quoted.is_empty() {
        html_body.filter(|h| !h.trim().is_empty())
    } else {
        let main = escape_html(&plain).replace('\n', "<br>");
        Some(format!(
            "{main}<details><summary>quoted text</summary><blockquote>{}</blockquote></details>",
            escape_html(&quoted).replace('\n', "<br>")
        ))
    };
    let mut files = Vec::new();
    for (i, part) in m.attachments().enumerate() {
        let bytes = part.contents().to_vec();
        if bytes.is_empty() || (invitation.is_some() && crate::invite::is_calendar_part(part)) {
            continue;
        }
        let mime = part.content_type().map(|c| match c.subtype() {
            Some(s) => format!("{}/{}", c.ctype(), s),
            None => c.ctype().to_string(),
        });
        let name =
            part.attachment_name().map(|n| n.chars().filter(|c| !c.is_control() && *c != '/' && *c != '\\').take(200).collect::<String>());
        files.push(File {
            name: name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| format!("attachment-{}", i + 1)),
            mime: crate::compose::mime_type(&mime.unwrap_or_default()),
            bytes,
        });
    }
    if plain.trim().is_empty() && files.is_empty() && new_subject.is_none() && invitation.is_none() {
        return quarantine("malformed", "no text and no attachment");
    }
    let at_ms = m.date().map(|d| d.to_timestamp() * 1000);
    Verdict::Take(Box::new(Taken {
        list: list.clone(),
        from: sender,
        name: from.name().map(str::trim).filter(|n| !n.is_empty()).map(|n| n.chars().take(256).collect()),
        message_id: m.message_id().map(str::to_string).filter(|i| !i.is_empty() && i.len() <= 256),
        in_reply_to,
        new_subject,
        plain,
        html,
        files,
        at_ms,
        invitation,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn options(extra: serde_json::Value) -> EmailOptions {
        let mut o = serde_json::json!({
            "imap": {"server": "127.0.0.1:143", "tls": "none", "username": "bridge", "password": "pw"},
            "smtp": {"server": "127.0.0.1:25", "tls": "none"},
            "url": "http://127.0.0.1:8080/bridges/email",
            "lists": {"bridge+ops@mail.test": {"subscribers": ["alice@mail.test"]}},
            "policy": {"allow": ["partner.example"], "authserv_id": "mx.mail.test"}
        });
        o.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        causeway_core::parse_options(o).unwrap()
    }

    fn subs(_: &str) -> Vec<String> {
        vec!["alice@mail.test".into()]
    }

    fn mail(headers: &str, body: &str) -> Vec<u8> {
        format!("{headers}\r\n\r\n{body}").replace("\n", "\r\n").replace("\r\r\n", "\r\n").into_bytes()
    }

    const BASIC: &str = "From: Alice Liddell <alice@mail.test>\nTo: bridge+ops@mail.test\nSubject: Disk full\nMessage-ID: <a1@mail.test>\nDate: Tue, 24 Nov 2026 10:00:00 +0000";

    /// MIME nested tens of thousands of levels deep (multiparts in
    /// multiparts, messages in messages) is quarantined without being
    /// parsed (the parser recurses into nested messages: a thousand levels
    /// overflowed a small stack); a forward of a forward is still taken.
    #[test]
    fn deeply_nested_mime_is_quarantined_without_overflowing_the_stack() {
        let nested = |depth: usize, rfc822: bool| {
            let mut s = String::new();
            for i in 0..depth {
                if rfc822 {
                    s.push_str("Content-Type: message/rfc822\n\n");
                } else {
                    s.push_str(&format!("Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"));
                }
            }
            s.push_str("Content-Type: text/plain\n\nat the bottom\n");
            if !rfc822 {
                for i in (0..depth).rev() {
                    s.push_str(&format!("--b{i}--\n"));
                }
            }
            // The outermost part's Content-Type is the mail's own.
            format!("{BASIC}\nMIME-Version: 1.0\n{s}").replace('\n', "\r\n").into_bytes()
        };
        for (depth, rfc822) in [(1_000, true), (50_000, true), (50_000, false), (65, false)] {
            let raw = nested(depth, rfc822);
            let verdict = std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || matches!(read(&raw, &options(serde_json::json!({})), &subs), Verdict::Quarantine { reason: "too_deep", .. }))
                .unwrap()
                .join();
            assert_eq!(
                verdict.ok(),
                Some(true),
                "{depth} levels ({}): quarantined, the stack intact",
                if rfc822 { "message/rfc822" } else { "multipart" }
            );
        }
        let Verdict::Take(t) = read(&nested(3, false), &options(serde_json::json!({})), &subs) else { panic!("three levels are a mail") };
        assert_eq!(t.plain.trim(), "at the bottom");
        assert!(matches!(read(&nested(3, true), &options(serde_json::json!({})), &subs), Verdict::Take(_)), "a forward of a forward");
        // Folded, oddly cased, or with space before the colon: still counted.
        assert_eq!(
            mime_containers(
                b"CONTENT-TYPE:\r\n   Multipart/Mixed; boundary=x\r\ncontent-type : message/rfc822\r\nContent-Type: text/plain\r\n"
            ),
            2
        );
    }

    #[test]
    fn mail_from_other_lists_is_taken() {
        // Mailman and Google Groups say `Precedence: list`: people wrote it.
        let h = format!("{BASIC}\nPrecedence: list\nX-Auto-Response-Suppress: OOF");
        assert!(matches!(read(&mail(&h, "x"), &options(serde_json::json!({})), &subs), Verdict::Take(_)));
    }

    #[test]
    fn each_copy_goes_to_the_list_it_was_delivered_for() {
        let o = options(serde_json::json!({"lists": {"bridge+ops@mail.test": {}, "bridge+dev@mail.test": {}}}));
        let h = "From: alice@mail.test\nTo: bridge+ops@mail.test\nCc: bridge+dev@mail.test\nDelivered-To: bridge+ops@mail.test";
        let Verdict::Take(t) = read(&mail(h, "x"), &o, &subs) else { panic!() };
        assert_eq!(t.list, "bridge+ops@mail.test");
        let h = "From: alice@mail.test\nTo: bridge+ops@mail.test\nCc: bridge+dev@mail.test\nDelivered-To: bridge+dev@mail.test";
        let Verdict::Take(t) = read(&mail(h, "x"), &o, &subs) else { panic!() };
        assert_eq!(t.list, "bridge+dev@mail.test");
    }

    #[test]
    fn a_plain_mail_from_a_subscriber_is_taken() {
        let v = read(&mail(BASIC, "db-1 is at 91%.\n\n-- \nAlice\nOps team"), &options(serde_json::json!({})), &subs);
        let Verdict::Take(t) = v else { panic!("{v:?}") };
        assert_eq!(
            (t.list.as_str(), t.from.as_str(), t.name.as_deref()),
            ("bridge+ops@mail.test", "alice@mail.test", Some("Alice Liddell"))
        );
        assert_eq!(t.plain, "db-1 is at 91%.");
        assert_eq!(t.message_id.as_deref(), Some("a1@mail.test"));
        assert_eq!(t.new_subject.as_deref(), Some("Disk full"));
        assert!(t.html.unwrap().contains("<details>"), "the signature is kept, collapsed");
        assert_eq!(t.at_ms, Some(1_795_514_400_000));
    }

    #[test]
    fn replies_lose_their_quote_and_point_at_the_original() {
        let headers = "From: alice@mail.test\nTo: bridge+ops@mail.test\nSubject: Re: Disk full\nIn-Reply-To: <d-1@mail.test>\nReferences: <root@x> <d-1@mail.test>";
        let body = "Cleaned it up.\n\nOn Tue, 24 Nov 2026, Bob wrote:\n> it is full\n> again\n";
        let Verdict::Take(t) = read(&mail(headers, body), &options(serde_json::json!({})), &subs) else { panic!() };
        assert_eq!(t.plain, "Cleaned it up.");
        assert_eq!(t.in_reply_to.as_deref(), Some("d-1@mail.test"));
        assert_eq!(t.new_subject, None);
    }

    #[test]
    fn inline_answers_keep_their_quotes() {
        let (kept, rest) = clean("> question one\nanswer one\n> question two\nanswer two");
        assert_eq!(kept, "> question one\nanswer one\n> question two\nanswer two");
        assert_eq!(rest, "");
        let (kept, rest) = clean("Sure.\n\n-----Original Message-----\nFrom: Bob\nold text");
        assert_eq!((kept.as_str(), rest.starts_with("-----Original")), ("Sure.", true));
    }

    #[test]
    fn machines_and_loops_are_left_alone() {
        let o = options(serde_json::json!({}));
        for (headers, reason) in [
            ("From: alice@mail.test\nTo: bridge+ops@mail.test\nAuto-Submitted: auto-replied\nSubject: Out of office", "auto_reply"),
            ("From: alice@mail.test\nTo: bridge+ops@mail.test\nPrecedence: bulk", "auto_reply"),
            ("From: alice@mail.test\nTo: bridge+ops@mail.test\nPrecedence: junk", "auto_reply"),
            ("From: alice@mail.test\nTo: bridge+ops@mail.test\nX-Autoreply: yes", "auto_reply"),
            ("From: MAILER-DAEMON@mail.test\nTo: bridge+ops@mail.test\nSubject: Undelivered", "bounce"),
            (
                "From: alice@mail.test\nTo: bridge+ops@mail.test\nContent-Type: multipart/report; report-type=delivery-status; boundary=x",
                "bounce",
            ),
            ("From: alice@mail.test\nReturn-Path: <>\nTo: bridge+ops@mail.test", "bounce"),
            ("From: \"Dave (via xmpp)\" <bridge+ops@mail.test>\nTo: bridge+ops@mail.test", "loop"),
            ("From: alice@mail.test\nTo: someone-else@mail.test", "no_list"),
        ] {
            match read(&mail(headers, "text"), &o, &subs) {
                Verdict::Ignore { reason: r, .. } => assert_eq!(r, reason, "{headers}"),
                v => panic!("{headers}: {v:?}"),
            }
        }
    }

    #[test]
    fn the_policy_decides_who_may_post() {
        let o = options(serde_json::json!({}));
        let from = |who: &str, auth: &str| format!("From: {who}\nTo: bridge+ops@mail.test\n{auth}Subject: s");
        let take = |h: String| matches!(read(&mail(&h, "x"), &o, &subs), Verdict::Take(_));
        assert!(take(from("eve@partner.example", "")), "an allowed domain");
        assert!(take(from("eve@sub.partner.example", "")), "and its subdomains");
        assert!(!take(from("mallory@evil.example", "")), "anyone else");
        assert!(!take(from("alice@mail.test", "Authentication-Results: mx.mail.test; dmarc=fail header.from=mail.test\n")));
        assert!(!take(from("alice@mail.test", "Authentication-Results: mx.mail.test; spf=fail smtp.mailfrom=x; dkim=none\n")));
        assert!(take(from("alice@mail.test", "Authentication-Results: mx.mail.test; spf=fail; dkim=pass header.d=mail.test\n")));
        // A signature by another domain vouches for nothing about alice.
        assert!(!take(from("alice@mail.test", "Authentication-Results: mx.mail.test; spf=fail; dkim=pass header.d=evil.example\n")));
        // A comment cannot smuggle in a verdict.
        assert!(!take(from(
            "alice@mail.test",
            "Authentication-Results: mx.mail.test; spf=fail smtp.mailfrom=x (; dmarc=pass); dkim=none\n"
        )));
        // A verdict from another server is anyone's words.
        assert!(take(from("alice@mail.test", "Authentication-Results: forged.example; dmarc=fail\n")));
        let strict = options(serde_json::json!({"policy": {"authserv_id": "mx.mail.test", "require_authentication": true}}));
        let take_strict = |h: String| matches!(read(&mail(&h, "x"), &strict, &subs), Verdict::Take(_));
        assert!(!take_strict(from("alice@mail.test", "")));
        assert!(take_strict(from("alice@mail.test", "Authentication-Results: mx.mail.test; dmarc=pass\n")));
        assert!(take_strict(from("alice@mail.test", "Authentication-Results: mx.mail.test; spf=pass smtp.mailfrom=alice@sub.mail.test\n")));
        assert!(!take_strict(from(
            "alice@mail.test",
            "Authentication-Results: mx.mail.test; spf=pass smtp.mailfrom=bounce@other.example\n"
        )));
        // SMTP AUTH vouches for the login alone, not for its domain.
        assert!(take_strict(from("alice@mail.test", "Authentication-Results: mx.mail.test; auth=pass smtp.auth=Alice@mail.test\n")));
        assert!(!take_strict(from("alice@mail.test", "Authentication-Results: mx.mail.test; auth=pass smtp.auth=bob@mail.test\n")));
        assert!(
            !take(from("alice@mail.test", "Authentication-Results: mx.mail.test; auth=pass smtp.auth=bob@mail.test\n")),
            "someone else's login is refused even without require_authentication"
        );
        assert!(!take_strict(from("alice@mail.test", "Authentication-Results: mx.mail.test; auth=fail smtp.auth=alice@mail.test\n")));
        assert!(!take_strict(from("alice@mail.test", "Authentication-Results: mx.mail.test; none\n")));
        // The topmost header is the receiving server's; one below it is the sender's own.
        assert!(!take_strict(from(
            "alice@mail.test",
            "Authentication-Results: mx.mail.test; auth=pass smtp.auth=bob@mail.test\nAuthentication-Results: mx.mail.test; auth=pass smtp.auth=alice@mail.test\n"
        )));
    }

    #[test]
    fn attachments_and_html_only_mail() {
        let headers = "From: alice@mail.test\nTo: bridge+ops@mail.test\nSubject: report\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b";
        let body = "--b\nContent-Type: text/html\n\n<p>See <b>attached</b><script>x()</script></p>\n--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=\"../report.pdf\"\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n--b--\n";
        let Verdict::Take(t) = read(&mail(headers, body), &options(serde_json::json!({})), &subs) else { panic!() };
        assert_eq!(t.plain.trim(), "See attached");
        assert_eq!(t.html.as_deref(), Some("<p>See <b>attached</b></p>"));
        assert_eq!(t.files, vec![File { name: "..report.pdf".into(), mime: "application/pdf".into(), bytes: b"%PDF-".to_vec() }]);
    }

    #[test]
    fn broken_or_oversized_mail_is_quarantined() {
        let o = options(serde_json::json!({"max_message_bytes": 100}));
        assert!(matches!(read(&mail(BASIC, &"x".repeat(200)), &o, &subs), Verdict::Quarantine { reason: "too_large", .. }));
        let o = options(serde_json::json!({}));
        for raw in [
            &b""[..],
            b"no headers at all",
            b"To: bridge+ops@mail.test\r\n\r\nno from",
            b"From: not an address\r\nTo: bridge+ops@mail.test\r\n\r\nx",
        ] {
            assert!(matches!(read(raw, &o, &subs), Verdict::Quarantine { reason: "malformed", .. }), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    proptest! {
        #[test]
        fn any_bytes_get_a_verdict(raw in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = read(&raw, &options(serde_json::json!({})), &subs);
        }

        #[test]
        fn any_headers_get_a_verdict(h in "[A-Za-z-]{1,12}", v in "[^\r\n]{0,60}", body in ".{0,100}") {
            let raw = mail(&format!("{BASIC}\n{h}: {v}"), &body);
            let _ = read(&raw, &options(serde_json::json!({})), &subs);
        }

        #[test]
        fn cleaning_never_panics_and_keeps_a_prefix(text in "(.{0,30}\n){0,12}") {
            let (kept, _) = clean(&text);
            let text = text.replace("\r\n", "\n");
            prop_assert!(text.starts_with(kept.trim_end()) || kept.is_empty());
        }
    }
}
