//! Exports of the archive: JSON, mbox, a printable HTML page and PDF
//! (docs/archive.md). The archive is read a page at a time and each event
//! written as it comes, so an export of a million events holds a page.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use causeway_core::{Body, Event, EventId, Membership, MessageKind};
use serde::Serialize;

/// Events read from the store at a time.
pub const PAGE: u32 = 1000;

/// What an export reads of each portal: events in [since, until) and none
/// archived after `upto_seq`, so that two passes over a live archive read
/// the same events.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Range {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub upto_seq: Option<i64>,
}
/// Messages remembered for showing what a reply answers (HTML).
const REMEMBERED: usize = 50_000;

/// One archived event as an export shows it: a message with its latest
/// text, whether it was taken back, and its reactions.
#[derive(Clone, Debug, PartialEq)]
pub struct Exported {
    pub seq: i64,
    pub event: Event,
    /// The latest text of a message (an edit changes it).
    pub text: Option<String>,
    pub retracted: bool,
    pub reactions: Vec<Reactions>,
    /// Its attachments the archive keeps, by their place among them.
    pub kept: std::collections::BTreeMap<usize, super::files::Kept>,
}

/// One emoji on a message, and who gave it (names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reactions {
    pub key: String,
    pub by: Vec<String>,
    /// Who gave it, as [`who`] names them (in the order of `by`).
    #[serde(skip)]
    pub who: Vec<String>,
}

/// Who said an event: the directory's person, else `bridge:account`
/// (as a recipient is named).
pub fn who(e: &Event) -> String {
    causeway_core::Recipient::key_of(&e.sender, &e.origin.bridge)
}

impl Exported {
    pub fn edited(&self) -> bool {
        match (&self.event.body, &self.text) {
            (Body::Message { text, .. }, Some(now)) => text.plain != *now,
            _ => false,
        }
    }

    pub fn text(&self) -> &str {
        match (&self.text, &self.event.body) {
            (Some(t), _) => t,
            (None, Body::Message { text, .. }) => &text.plain,
            _ => "",
        }
    }
}

/// Reactions of messages, from reaction events in the archive's order:
/// the last word of each sender on each emoji counts.
pub fn tally_reactions(events: &[Event]) -> HashMap<EventId, Vec<Reactions>> {
    let mut last: BTreeMap<(EventId, String, String), (i64, String, bool)> = BTreeMap::new();
    for (n, e) in events.iter().enumerate() {
        if let Body::Reaction { target, key, removed } = &e.body {
            last.insert((target.clone(), key.clone(), who(e)), (n as i64, e.sender.name.clone(), *removed));
        }
    }
    // Each message's emoji, each with who gave it: (when, name, who).
    type Givers = Vec<(i64, String, String)>;
    let mut of: HashMap<EventId, BTreeMap<String, Givers>> = HashMap::new();
    for ((target, key, who), (n, name, removed)) in last {
        if !removed {
            of.entry(target).or_default().entry(key).or_default().push((n, name, who));
        }
    }
    of.into_iter()
        .map(|(target, keys)| {
            // Most given first; among as many, the one standing longer.
            let mut r: Vec<(i64, Reactions)> = keys
                .into_iter()
                .map(|(key, mut by)| {
                    by.sort();
                    let first = by[0].0;
                    let (by, who) = by.into_iter().map(|(_, name, who)| (name, who)).unzip();
                    (first, Reactions { key, by, who })
                })
                .collect();
            r.sort_by_key(|(first, r)| (std::cmp::Reverse(r.by.len()), *first));
            (target, r.into_iter().map(|(_, r)| r).collect())
        })
        .collect()
}

/// A format, written event by event.
pub trait Sink {
    /// The events of `portal` come next.
    fn portal(&mut self, portal: &str) -> io::Result<()>;
    fn event(&mut self, e: &Exported) -> io::Result<()>;
    /// Everything was written.
    fn finish(&mut self) -> io::Result<()>;
}

/// The JSON export: `{"causeway_export": 1, …, "events": [...]}`, each event
/// as archived with `seq`, and for messages `current_text`, `edited`,
/// `retracted` and `reactions`.
pub struct Json<W: Write> {
    out: W,
    first: bool,
}

impl<W: Write> Json<W> {
    pub fn new(mut out: W, about: &serde_json::Value) -> io::Result<Self> {
        let mut head = serde_json::to_string(&serde_json::json!({"causeway_export": 1, "about": about}))?;
        head.pop();
        write!(out, "{head},\"events\":[")?;
        Ok(Json { out, first: true })
    }
}

impl<W: Write> Sink for Json<W> {
    fn portal(&mut self, _portal: &str) -> io::Result<()> {
        Ok(())
    }

    fn event(&mut self, e: &Exported) -> io::Result<()> {
        let mut v = serde_json::to_value(&e.event)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("seq".into(), e.seq.into());
            if matches!(e.event.body, Body::Message { .. }) {
                o.insert("current_text".into(), e.text().into());
                o.insert("edited".into(), e.edited().into());
                o.insert("retracted".into(), e.retracted.into());
                o.insert("reactions".into(), serde_json::to_value(&e.reactions)?);
            }
            if let Some(files) = o.get_mut("body").and_then(|b| b.get_mut("attachments")).and_then(|a| a.as_array_mut()) {
                for (n, k) in &e.kept {
                    if let Some(a) = files.get_mut(*n).and_then(|a| a.as_object_mut()) {
                        a.insert("kept".into(), serde_json::json!({"sha256": k.sha256, "size": k.size, "mime": k.mime}));
                    }
                }
            }
        }
        self.out.write_all(if self.first { b"\n" } else { b",\n" })?;
        self.first = false;
        serde_json::to_writer(&mut self.out, &v)?;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()
    }
}

/// The mbox export (mboxrd): one mail per message, its `Message-ID` made of
/// the event id, `In-Reply-To` and `References` naming what it answers and
/// its thread's root, so mail clients thread it as the chat did.
pub struct Mbox<W: Write> {
    out: W,
    /// Where the archive keeps files: those kept are attached.
    files: Option<std::path::PathBuf>,
}

impl<W: Write> Mbox<W> {
    pub fn new(out: W, files: Option<std::path::PathBuf>) -> Self {
        Mbox { out, files }
    }

    /// The bytes of attachment `n` where the archive keeps it.
    fn kept<'e>(&self, e: &'e Exported, n: usize) -> Option<(&'e super::files::Kept, Vec<u8>)> {
        let k = e.kept.get(&n)?;
        match super::files::read(self.files.as_deref()?, &k.sha256) {
            Ok(bytes) => Some((k, bytes)),
            Err(err) => {
                tracing::warn!(sha256 = %k.sha256, "a kept file is not readable: {err}");
                None
            }
        }
    }
}

/// A media type as a mail header takes it (`type/subtype`, RFC 2045 token
/// characters, parameters left out), or none.
fn media_type(m: &str) -> Option<String> {
    let m = m.split(';').next()?.trim();
    let (t, sub) = m.split_once('/')?;
    let token = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    (token(t) && token(sub)).then(|| m.to_ascii_lowercase())
}

/// An event's `Message-ID` (without the angle brackets).
pub fn message_id(event: &str) -> String {
    format!("{}@archive.causeway", event.chars().filter(|c| c.is_ascii_alphanumeric() || "-._".contains(*c)).collect::<String>())
}

/// A local part or domain of a made-up address: what is safe there.
fn atom(s: &str) -> String {
    let a: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    let a = a.trim_matches(|c| c == '.' || c == '-').to_string();
    if a.is_empty() { "x".into() } else { a.chars().take(64).collect() }
}

/// The sender as a mail address: their own where it is one, else one made
/// of their id on the network (`.invalid`: nobody can write to it).
fn address(e: &Event) -> String {
    let id = &e.sender.id;
    match id.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !id.contains(':') && !domain.contains('/') && !domain.is_empty() => {
            format!("{}@{}", atom(local), atom(domain))
        }
        _ => format!("{}@{}.invalid", atom(id), atom(&e.origin.bridge)),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl<W: Write> Sink for Mbox<W> {
    fn portal(&mut self, _portal: &str) -> io::Result<()> {
        Ok(())
    }

    fn event(&mut self, e: &Exported) -> io::Result<()> {
        use mail_builder::MessageBuilder;
        use mail_builder::headers::address::Address;
        use mail_builder::headers::raw::Raw;
        let ev = &e.event;
        let Body::Message { attachments, reply_to, thread, kind, .. } = &ev.body else { return Ok(()) };
        let mut body = e.text().to_string();
        if *kind == MessageKind::Emote {
            body = format!("* {} {body}", ev.sender.name);
        }
        let mut parts = Vec::new();
        for (n, a) in attachments.iter().enumerate() {
            let name = a.name.as_deref().unwrap_or("file");
            body.push_str(&format!("\n[file] {name}: {}", a.url));
            if let Some((k, bytes)) = self.kept(e, n) {
                let mime = [&k.mime, &a.mime].into_iter().flatten().find_map(|m| media_type(m));
                parts.push((mime.unwrap_or_else(|| "application/octet-stream".into()), one_line(name), bytes));
            }
        }
        if !e.reactions.is_empty() {
            let r: Vec<String> = e.reactions.iter().map(|r| format!("{} {}", r.key, r.by.join(", "))).collect();
            body.push_str(&format!("\n\nReactions: {}", r.join("; ")));
        }
        let first: String = one_line(e.text()).chars().take(60).collect();
        let portal = atom(&ev.portal);
        let mut b = MessageBuilder::new()
            .from(Address::new_address(Some(one_line(&ev.sender.name)), address(ev)))
            .to(Address::new_address(Some(ev.portal.clone()), format!("{portal}@archive.causeway")))
            .subject(format!("[{}] {first}", ev.portal))
            .date(ev.at_ms.div_euclid(1000))
            .message_id(message_id(&ev.id))
            .header("X-Causeway-Portal", Raw::new(one_line(&ev.portal)))
            .header("X-Causeway-Network", Raw::new(one_line(&ev.origin.bridge)))
            .header("X-Causeway-Sender", Raw::new(one_line(&ev.sender.id)));
        if let Some(p) = &ev.sender.person {
            b = b.header("X-Causeway-Person", Raw::new(one_line(p)));
        }
        if e.edited() {
            b = b.header("X-Causeway-Edited", Raw::new("yes"));
        }
        if e.retracted {
            b = b.header("X-Causeway-Retracted", Raw::new("yes"));
        }
        // What it answers; else, in a thread, the root.
        if let Some(parent) = reply_to.as_ref().or(thread.as_ref()) {
            b = b.in_reply_to(message_id(parent));
            let mut refs: Vec<String> = thread.iter().map(|t| message_id(t)).collect();
            if !refs.contains(&message_id(parent)) {
                refs.push(message_id(parent));
            }
            b = b.references(refs);
        }
        b = b.text_body(body);
        for (mime, name, bytes) in parts {
            b = b.attachment(mime, name, bytes);
        }
        let mail = b.write_to_vec()?;
        let at = time::OffsetDateTime::from_unix_timestamp(ev.at_ms.div_euclid(1000)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let asctime = at
            .format(time::macros::format_description!(
                "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
            ))
            .unwrap_or_default();
        writeln!(self.out, "From {} {asctime}", address(ev))?;
        let text = String::from_utf8_lossy(&mail);
        for line in text.split("\r\n").collect::<Vec<_>>().iter().rev().skip_while(|l| l.is_empty()).collect::<Vec<_>>().iter().rev() {
            // mboxrd: a line that reads as a separator gets one more `>`.
            if line.trim_start_matches('>').starts_with("From ") {
                self.out.write_all(b">")?;
            }
            writeln!(self.out, "{line}")?;
        }
        writeln!(self.out)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The printable page: one self-contained HTML file, a section per portal,
/// each day starting a printed page, times in `tz`; replies show what
/// they answer, messages of a thread are indented, reactions and edits
/// shown.
pub struct Html<W: Write> {
    out: W,
    tz: jiff::tz::TimeZone,
    tz_name: String,
    day: Option<jiff::civil::Date>,
    said: HashMap<EventId, (String, String)>,
    opened: bool,
}

const CSS: &str = "\
body{font:11pt/1.4 'Noto Sans','DejaVu Sans',sans-serif;margin:2em;color:#111}\
h1{font-size:16pt;margin:0 0 .2em}h2.day{font-size:12pt;border-bottom:1px solid #999;margin:1.2em 0 .4em}\
section+section{break-before:page}h2.day:not(:first-of-type){break-before:page}\
.about{color:#555;font-size:9pt}.msg{margin:.25em 0;break-inside:avoid}.time{color:#555;font-size:9pt;margin-right:.5em}\
.who{font-weight:bold}.net{color:#777;font-size:8pt;margin-left:.3em}.text{white-space:pre-wrap}\
.thread{margin-left:2em;border-left:2px solid #ccc;padding-left:.5em}.quote{color:#555;font-size:9pt;margin-left:1em}\
.flag{color:#777;font-size:8pt;margin-left:.4em}.retracted .text{text-decoration:line-through;color:#777}\
.notice{color:#666;font-style:italic}.reactions{font-size:9pt;color:#444;margin-left:1em}.files a{font-size:9pt}\
@media print{body{margin:0}a{color:#111}}";

impl<W: Write> Html<W> {
    pub fn new(mut out: W, title: &str, tz_name: &str, tz: jiff::tz::TimeZone, about: &str) -> io::Result<Self> {
        let head = maud::html! {
            (maud::DOCTYPE)
            html {
                head {
                    meta charset="utf-8";
                    title { (title) }
                    style { (maud::PreEscaped(CSS)) }
                }
                body {
                    p.about { (about) " · times in " (tz_name) }
                }
            }
        }
        .into_string();
        // The body stays open for the sections that follow.
        let open = head.trim_end_matches("</body></html>");
        out.write_all(open.as_bytes())?;
        Ok(Html { out, tz, tz_name: tz_name.to_string(), day: None, said: HashMap::new(), opened: false })
    }

    fn local(&self, at_ms: i64) -> Option<jiff::ZonedDateTime> {
        jiff::Timestamp::from_millisecond(at_ms).ok().map(|t| t.to_zoned_datetime(self.tz.clone()))
    }
}

impl<W: Write> Sink for Html<W> {
    fn portal(&mut self, portal: &str) -> io::Result<()> {
        if self.opened {
            self.out.write_all(b"</section>")?;
        }
        self.opened = true;
        self.day = None;
        let h = maud::html! { h1 { (portal) } };
        write!(self.out, "<section>{}", h.into_string())
    }

    fn event(&mut self, e: &Exported) -> io::Result<()> {
        let ev = &e.event;
        let notice = match &ev.body {
            Body::Message { .. } => None,
            Body::Topic { text } => Some(format!("{} changed the topic to: {text}", ev.sender.name)),
            Body::Membership(Membership::Join) => Some(format!("{} joined", ev.sender.name)),
            Body::Membership(Membership::Leave) => Some(format!("{} left", ev.sender.name)),
            Body::Membership(Membership::Nick { name }) => Some(format!("{} is now {name}", ev.sender.name)),
            _ => return Ok(()),
        };
        let Some(at) = self.local(ev.at_ms) else { return Ok(()) };
        if self.day != Some(at.date()) {
            self.day = Some(at.date());
            let h = maud::html! { h2.day { (at.strftime("%A, %-d %B %Y")) } };
            self.out.write_all(h.into_string().as_bytes())?;
        }
        let time = at.strftime("%H:%M").to_string();
        let html = match (&ev.body, notice) {
            (_, Some(n)) => maud::html! { div.msg.notice { span.time { (time) } (n) } },
            (Body::Message { attachments, reply_to, thread, kind, .. }, None) => {
                let answered = reply_to.as_ref().and_then(|r| self.said.get(r));
                let class = match (thread.is_some(), e.retracted) {
                    (true, true) => "msg thread retracted",
                    (true, false) => "msg thread",
                    (false, true) => "msg retracted",
                    (false, false) => "msg",
                };
                let text = if *kind == MessageKind::Emote { format!("* {} {}", ev.sender.name, e.text()) } else { e.text().to_string() };
                maud::html! {
                    div class=(class) {
                        @if let Some((who, what)) = answered {
                            div.quote { "↪ " (who) ": " (what) }
                        }
                        span.time { (time) }
                        span.who { (ev.sender.name) }
                        span.net { (ev.origin.bridge) }
                        @if e.edited() { span.flag { "(edited)" } }
                        @if e.retracted { span.flag { "(taken back)" } }
                        div.text { (text) }
                        @if !attachments.is_empty() {
                            div.files {
                                @for a in attachments {
                                    a href=(a.url) { (a.name.as_deref().unwrap_or("file")) } " "
                                }
                            }
                        }
                        @if !e.reactions.is_empty() {
                            div.reactions {
                                @for r in &e.reactions {
                                    span title=(r.by.join(", ")) { (r.key) " " (r.by.len()) } " "
                                }
                            }
                        }
                    }
                }
            }
            _ => return Ok(()),
        };
        if matches!(ev.body, Body::Message { .. }) {
            if self.said.len() >= REMEMBERED {
                self.said.clear();
            }
            let excerpt: String = one_line(e.text()).chars().take(80).collect();
            self.said.insert(ev.id.clone(), (ev.sender.name.clone(), excerpt));
        }
        self.out.write_all(html.into_string().as_bytes())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.opened {
            self.out.write_all(b"</section>")?;
        }
        let _ = &self.tz_name;
        self.out.write_all(b"</body></html>\n")?;
        self.out.flush()
    }
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Json,
    Mbox,
    Html,
    Pdf,
    /// A Slack export archive (zip), for Slack-export viewers and importers.
    Slack,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Mbox => "mbox",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Slack => "slack",
        }
    }
}

/// An export made, as the export log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportLog {
    pub at_ms: i64,
    /// Who ran it.
    pub by: String,
    pub format: String,
    pub portals: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
    pub events: u64,
    /// Where it was written (`-`: standard output).
    pub output: String,
}

/// Print an HTML file to PDF with a headless Chromium.
pub fn print_pdf(chromium: &std::path::Path, html: &std::path::Path, pdf: &std::path::Path) -> Result<(), String> {
    let url = format!("file://{}", html.canonicalize().map_err(|e| format!("{}: {e}", html.display()))?.display());
    let mut cmd = std::process::Command::new(chromium);
    cmd.args([
        "--headless",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-pdf-header-footer",
    ]);
    if running_as_root() {
        // Chromium's sandbox refuses root.
        cmd.arg("--no-sandbox");
    }
    let profile = std::env::temp_dir().join(format!("causeway-chromium-{}", std::process::id()));
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    cmd.arg(format!("--print-to-pdf={}", pdf.display())).arg(url);
    let out = cmd.output().map_err(|e| format!("cannot run {}: {e}", chromium.display()))?;
    let _ = std::fs::remove_dir_all(&profile);
    if !out.status.success() || !pdf.exists() {
        return Err(format!("{} could not print the page: {}", chromium.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

fn running_as_root() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
    }
    #[cfg(not(unix))]
    false
}

/// The Chromium to print with: the one named, else the first of the usual
/// names on `PATH`.
pub fn find_chromium(named: Option<&std::path::Path>) -> Result<std::path::PathBuf, String> {
    if let Some(p) = named {
        return Ok(p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err("a PDF needs Chromium: install it (Debian: apt install chromium) or name it with --chromium PATH".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_core::{Origin, Sender, Text};

    fn said(id: &str, who: &str, body: Body) -> Event {
        Event {
            id: id.into(),
            portal: "ops".into(),
            origin: Origin { bridge: "xmpp".into(), room: "r".into(), remote_id: None },
            sender: Sender { id: format!("{who}@x"), person: None, name: who.into(), avatar: None },
            at_ms: 1_796_083_200_000,
            body,
        }
    }

    fn react(id: &str, who: &str, key: &str, removed: bool) -> Event {
        said(id, who, Body::Reaction { target: "m".into(), key: key.into(), removed })
    }

    #[test]
    fn reactions_count_each_senders_last_word() {
        let events = [
            react("1", "alice", "👍", false),
            react("2", "bob", "👍", false),
            react("3", "bob", "🎉", false),
            react("4", "bob", "👍", true),
            react("5", "alice", "👍", false),
        ];
        let r = &tally_reactions(&events)["m"];
        // Bob took his 👍 back; alice gave hers again after bob's 🎉.
        let named = |key: &str, name: &str| Reactions { key: key.into(), by: vec![name.into()], who: vec![format!("xmpp:{name}@x")] };
        assert_eq!(r, &[named("🎉", "bob"), named("👍", "alice")]);
    }

    #[test]
    fn mbox_lines_that_look_like_separators_are_quoted_and_threads_named() {
        let mut out = Vec::new();
        let mut m = Mbox::new(&mut out, None);
        let body = Body::Message {
            text: Text::plain("From here on\n>From there"),
            kind: MessageKind::Text,
            attachments: Vec::new(),
            reply_to: Some("parent-1".into()),
            thread: Some("root-1".into()),
            mentions: Vec::new(),
        };
        m.event(&Exported {
            seq: 1,
            event: said("e-1", "alice", body),
            text: None,
            retracted: false,
            reactions: Vec::new(),
            kept: Default::default(),
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("From alice@x "), "{text}");
        assert!(text.contains("\n>From here on\n>>From there"), "{text}");
        assert!(text.contains("In-Reply-To: <parent-1@archive.causeway>"), "{text}");
        assert!(text.contains("References: <root-1@archive.causeway> <parent-1@archive.causeway>"), "{text}");
        assert!(!text.contains('\r'));
    }

    #[test]
    fn made_up_addresses_hold_nothing_a_header_could_break_on() {
        let mut e = said("e", "x", Body::text("hi"));
        for (id, want) in [
            ("alice@example.org", "alice@example.org"),
            ("@bob:matrix.test", "bob-matrix.test@xmpp.invalid"),
            ("ops@conference.x/Nick Name", "ops-conference.x-Nick-Name@xmpp.invalid"),
            ("\r\nBcc: evil@x", "Bcc--evil-x@xmpp.invalid"),
            ("", "x@xmpp.invalid"),
        ] {
            e.sender.id = id.into();
            assert_eq!(address(&e), want, "{id:?}");
        }
        assert_eq!(message_id("01a2-<>\r\n"), "01a2-@archive.causeway");
    }

    #[test]
    fn the_page_escapes_what_people_wrote() {
        let mut out = Vec::new();
        let mut h = Html::new(&mut out, "ops", "UTC", jiff::tz::TimeZone::UTC, "Causeway").unwrap();
        h.portal("ops").unwrap();
        let e = Exported {
            seq: 1,
            event: said("e", "<b>mallory</b>", Body::text("<script>alert(1)</script>")),
            text: None,
            retracted: false,
            reactions: Vec::new(),
            kept: Default::default(),
        };
        h.event(&e).unwrap();
        h.finish().unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(!page.contains("<script>") && page.contains("&lt;script&gt;"), "{page}");
        assert!(!page.contains("<b>mallory"));
        assert!(page.contains("Tuesday, 1 December 2026"), "{page}");
        assert!(page.ends_with("</section></body></html>\n"));
    }

    #[test]
    fn only_a_plain_media_type_reaches_a_mail_header() {
        assert_eq!(media_type("image/PNG; name=x").as_deref(), Some("image/png"));
        assert_eq!(media_type("application/vnd.oasis.opendocument.text").as_deref(), Some("application/vnd.oasis.opendocument.text"));
        for bad in ["text/html\r\nBcc: victim@example.org", "image", "/png", "image/", "a b/c", "x/\"y\"", "a/b/c", ""] {
            assert_eq!(media_type(bad), None, "{bad:?}");
        }
    }
}
