//! The Slack export archive (docs/archive.md): a zip with `users.json`,
//! `channels.json` and a folder per portal holding one JSON file of
//! messages per day, as Slack's own workspace export lays it out, so that
//! Slack-export viewers and importers read it.
//!
//! Slack names a message by its `ts` and lists a thread's replies on its
//! first message, which comes before them. So the archive is read twice:
//! [`Census`] learns the people, the channels, the threads and the edits
//! (only those: a million plain messages cost it nothing), then [`Slack`]
//! writes the messages a page at a time. Both stamp the same events with the
//! same [`Clock`], in the same order, so they agree on every `ts`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Seek, Write};

use causeway_core::{Body, Event, EventId, Membership, MessageKind};
use serde_json::{Value, json};

use super::export::{Exported, Sink, who};

/// Gives each event that becomes a Slack message its `ts`: its time in
/// microseconds, moved on by one where two would be equal, so that `ts`
/// names one message of a channel.
#[derive(Default)]
struct Clock {
    last: i64,
}

impl Clock {
    fn stamp(&mut self, at_ms: i64) -> i64 {
        let us = at_ms.saturating_mul(1000).max(self.last + 1);
        self.last = us;
        us
    }
}

fn ts(us: i64) -> String {
    format!("{}.{:06}", us.div_euclid(1_000_000), us.rem_euclid(1_000_000))
}

/// Whether an archived event is a message of the Slack export: messages
/// (not taken back: Slack exports hold no deleted messages), joins, leaves
/// and topic changes.
fn listed(e: &Exported) -> bool {
    match &e.event.body {
        Body::Message { .. } => !e.retracted,
        Body::Membership(Membership::Join | Membership::Leave) | Body::Topic { .. } => true,
        _ => false,
    }
}

/// The thread a message is in: its thread's root, else what it answers
/// (Slack has no replies outside threads), followed to that one's root.
fn root_of(e: &Event, roots: &HashMap<EventId, EventId>) -> Option<EventId> {
    let Body::Message { thread, reply_to, .. } = &e.body else { return None };
    let r = thread.as_ref().or(reply_to.as_ref())?;
    Some(roots.get(r).unwrap_or(r).clone())
}

/// A person or account, as users.json lists them.
struct User {
    id: String,
    name: String,
    accounts: BTreeSet<String>,
}

struct Channel {
    id: String,
    /// The folder and channel name: lower case, `a-z 0-9 - _`, unique.
    name: String,
    created_s: i64,
    creator: Option<String>,
    members: BTreeSet<String>,
    topic: Option<(String, String, i64)>,
}

/// The first pass: who spoke, where, which messages have replies and which
/// were edited when.
#[derive(Default)]
pub struct Census {
    users: BTreeMap<String, User>,
    channels: Vec<(String, Channel)>,
    names: BTreeSet<String>,
    clock: Clock,
    /// Each reply's thread root.
    roots: HashMap<EventId, EventId>,
    /// Each root's replies: (user, ts).
    replies: HashMap<EventId, Vec<(String, String)>>,
    /// Edits (their id → the message), and each edited message's last edit: (user, ts).
    edits: HashMap<EventId, EventId>,
    edited: HashMap<EventId, (String, String)>,
}

impl Census {
    pub fn new() -> Self {
        Census::default()
    }

    /// The Slack id of a person or account (`U…`), given on first sight.
    fn user(&mut self, key: &str, name: &str, account: Option<String>) -> String {
        let n = self.users.len();
        let u = self.users.entry(key.to_string()).or_insert_with(|| User {
            id: format!("U{:08}", n + 1),
            name: name.to_string(),
            accounts: BTreeSet::new(),
        });
        u.accounts.extend(account);
        u.id.clone()
    }

    fn user_of(&mut self, e: &Event) -> String {
        let account = format!("{}:{}", e.origin.bridge, e.sender.id);
        self.user(&who(e), &e.sender.name, Some(account))
    }
}

/// A channel name Slack would accept made of a portal id, and unique among
/// those already given.
fn channel_name(portal: &str, taken: &BTreeSet<String>) -> String {
    let mut base: String = portal
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .take(72)
        .collect();
    if base.trim_matches('-').is_empty() {
        base = "portal".into();
    }
    let mut name = base.clone();
    let mut n = 1;
    while taken.contains(&name) {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

impl Sink for Census {
    fn portal(&mut self, portal: &str) -> io::Result<()> {
        let name = channel_name(portal, &self.names);
        self.names.insert(name.clone());
        let id = format!("C{:08}", self.channels.len() + 1);
        self.channels.push((portal.to_string(), Channel { id, name, created_s: 0, creator: None, members: BTreeSet::new(), topic: None }));
        self.clock = Clock::default();
        Ok(())
    }

    fn event(&mut self, e: &Exported) -> io::Result<()> {
        let ev = &e.event;
        if let Body::Edit { target, .. } = &ev.body {
            let message = self.edits.get(target).unwrap_or(target).clone();
            self.edits.insert(ev.id.clone(), message.clone());
            let user = self.user_of(ev);
            let at = ts(ev.at_ms.saturating_mul(1000));
            self.edited.insert(message, (user, at));
            return Ok(());
        }
        if !listed(e) {
            return Ok(());
        }
        let stamp = ts(self.clock.stamp(ev.at_ms));
        let user = self.user_of(ev);
        for r in &e.reactions {
            for (key, name) in r.who.iter().zip(&r.by) {
                self.user(key, name, None);
            }
        }
        if let Some(root) = root_of(ev, &self.roots) {
            self.roots.insert(ev.id.clone(), root.clone());
            self.replies.entry(root).or_default().push((user.clone(), stamp.clone()));
        }
        let Some((_, ch)) = self.channels.last_mut() else { return Ok(()) };
        if ch.creator.is_none() {
            ch.created_s = ev.at_ms.div_euclid(1000);
            ch.creator = Some(user.clone());
        }
        match &ev.body {
            Body::Topic { text } => ch.topic = Some((text.clone(), user.clone(), ev.at_ms.div_euclid(1000))),
            Body::Membership(Membership::Leave) => {}
            _ => {
                ch.members.insert(user);
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Slack's escaping of message text: `&`, `<` and `>` only.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A reaction's Slack name: the emoji's short code (`thumbsup`), else the
/// key itself without the colons that delimit names.
fn reaction_name(key: &str) -> String {
    match emojis::get(key).and_then(|e| e.shortcode()) {
        Some(code) => code.to_string(),
        None => key.replace(':', ""),
    }
}

/// The second pass: the zip itself.
pub struct Slack<W: Write + Seek> {
    /// Taken when finished.
    zip: Option<zip::ZipWriter<W>>,
    census: Census,
    tz: jiff::tz::TimeZone,
    clock: Clock,
    channel: usize,
    /// The day whose file is open, and whether it has a message yet.
    day: Option<jiff::civil::Date>,
    first: bool,
    /// The ts of the roots written so far that have replies.
    root_ts: HashMap<EventId, String>,
}

fn zip_error(e: zip::result::ZipError) -> io::Error {
    io::Error::other(e)
}

impl<W: Write + Seek> Slack<W> {
    /// Days are cut in `tz`.
    pub fn new(out: W, census: Census, tz: jiff::tz::TimeZone) -> Self {
        Slack {
            zip: Some(zip::ZipWriter::new(out)),
            census,
            tz,
            clock: Clock::default(),
            channel: 0,
            day: None,
            first: true,
            root_ts: HashMap::new(),
        }
    }

    fn z(&mut self) -> io::Result<&mut zip::ZipWriter<W>> {
        self.zip.as_mut().ok_or_else(|| io::Error::other("the export was finished"))
    }

    fn options() -> zip::write::SimpleFileOptions {
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)
    }

    fn close_day(&mut self) -> io::Result<()> {
        if self.day.take().is_some() {
            self.z()?.write_all(b"\n]\n")?;
        }
        Ok(())
    }

    fn user_id(&self, e: &Event) -> String {
        self.census.users.get(&who(e)).map(|u| u.id.clone()).unwrap_or_default()
    }

    fn message(&mut self, e: &Exported, us: i64) -> Value {
        let ev = &e.event;
        let user = self.user_id(ev);
        let stamp = ts(us);
        let profile = json!({"real_name": ev.sender.name, "display_name": ev.sender.name, "name": ev.sender.name});
        let mut m = json!({"type": "message", "user": user, "ts": stamp, "user_profile": profile});
        let text = match &ev.body {
            Body::Membership(Membership::Join) => {
                m["subtype"] = "channel_join".into();
                format!("<@{user}> has joined the channel")
            }
            Body::Membership(_) => {
                m["subtype"] = "channel_leave".into();
                format!("<@{user}> has left the channel")
            }
            Body::Topic { text } => {
                m["subtype"] = "channel_topic".into();
                m["topic"] = text.as_str().into();
                format!("<@{user}> set the channel topic: {}", escape(text))
            }
            Body::Message { kind, attachments, .. } => {
                if *kind == MessageKind::Emote {
                    m["subtype"] = "me_message".into();
                }
                if !attachments.is_empty() {
                    let files: Vec<Value> = attachments
                        .iter()
                        .enumerate()
                        .map(|(n, a)| {
                            let name = a.name.clone().unwrap_or_else(|| "file".into());
                            json!({
                                "id": format!("F{}{n}", ev.id.chars().filter(char::is_ascii_alphanumeric).take(16).collect::<String>()),
                                "name": name, "title": name,
                                "mimetype": a.mime.clone().unwrap_or_else(|| "application/octet-stream".into()),
                                "size": a.size, "mode": "external",
                                "url_private": a.url, "permalink": a.url,
                            })
                        })
                        .collect();
                    m["files"] = files.into();
                }
                if let Some((by, at)) = self.census.edited.get(&ev.id) {
                    m["edited"] = json!({"user": by, "ts": at});
                }
                if !e.reactions.is_empty() {
                    let users = &self.census.users;
                    let rs: Vec<Value> = e
                        .reactions
                        .iter()
                        .map(|r| {
                            let ids: Vec<&str> = r.who.iter().filter_map(|k| users.get(k)).map(|u| u.id.as_str()).collect();
                            json!({"name": reaction_name(&r.key), "users": ids, "count": ids.len()})
                        })
                        .collect();
                    m["reactions"] = rs.into();
                }
                if let Some(replies) = self.census.replies.get(&ev.id) {
                    self.root_ts.insert(ev.id.clone(), stamp.clone());
                    let list: Vec<Value> = replies.iter().map(|(u, t)| json!({"user": u, "ts": t})).collect();
                    let people: BTreeSet<&str> = replies.iter().map(|(u, _)| u.as_str()).collect();
                    m["thread_ts"] = stamp.clone().into();
                    m["reply_count"] = replies.len().into();
                    m["reply_users_count"] = people.len().into();
                    m["reply_users"] = people.into_iter().collect::<Vec<_>>().into();
                    m["replies"] = list.into();
                    if let Some((_, last)) = replies.last() {
                        m["latest_reply"] = last.as_str().into();
                    }
                }
                if let Some(root) = self.census.roots.get(&ev.id)
                    && let Some(root_ts) = self.root_ts.get(root)
                {
                    m["thread_ts"] = root_ts.as_str().into();
                }
                escape(e.text())
            }
            _ => String::new(),
        };
        m["text"] = text.into();
        m
    }
}

impl<W: Write + Seek> Sink for Slack<W> {
    fn portal(&mut self, portal: &str) -> io::Result<()> {
        self.close_day()?;
        let Some(n) = self.census.channels.iter().position(|(p, _)| p == portal) else {
            return Err(io::Error::other(format!("portal {portal} was not counted before it was written")));
        };
        self.channel = n;
        self.clock = Clock::default();
        Ok(())
    }

    fn event(&mut self, e: &Exported) -> io::Result<()> {
        if !listed(e) {
            return Ok(());
        }
        let us = self.clock.stamp(e.event.at_ms);
        let Ok(at) = jiff::Timestamp::from_millisecond(e.event.at_ms) else { return Ok(()) };
        let date = at.to_zoned_datetime(self.tz.clone()).date();
        // A day's file is written at once; an event dated before the open
        // day (clocks of two networks) goes in the open one.
        if self.day.is_none_or(|d| date > d) {
            self.close_day()?;
            let folder = self.census.channels[self.channel].1.name.clone();
            self.z()?.start_file(format!("{folder}/{date}.json"), Self::options()).map_err(zip_error)?;
            self.z()?.write_all(b"[")?;
            self.day = Some(date);
            self.first = true;
        }
        let m = self.message(e, us);
        let sep: &[u8] = if self.first { b"\n" } else { b",\n" };
        self.z()?.write_all(sep)?;
        self.first = false;
        serde_json::to_writer(self.z()?, &m)?;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.close_day()?;
        let users: Vec<Value> = self
            .census
            .users
            .iter()
            .map(|(key, u)| {
                json!({
                    "id": u.id, "name": key, "real_name": u.name, "deleted": false, "is_bot": false,
                    "profile": {"real_name": u.name, "display_name": u.name},
                    "causeway": {"who": key, "accounts": u.accounts},
                })
            })
            .collect();
        self.z()?.start_file("users.json", Self::options()).map_err(zip_error)?;
        serde_json::to_writer_pretty(self.z()?, &users)?;
        let channels: Vec<Value> = self
            .census
            .channels
            .iter()
            .map(|(portal, c)| {
                let (topic, by, at) = c.topic.clone().unwrap_or_default();
                json!({
                    "id": c.id, "name": c.name, "created": c.created_s, "creator": c.creator.clone().unwrap_or_default(),
                    "is_archived": false, "is_general": false, "members": c.members,
                    "topic": {"value": topic, "creator": by, "last_set": at},
                    "purpose": {"value": format!("Causeway portal {portal}"), "creator": "", "last_set": 0},
                })
            })
            .collect();
        self.z()?.start_file("channels.json", Self::options()).map_err(zip_error)?;
        serde_json::to_writer_pretty(self.z()?, &channels)?;
        // An empty list of each other kind, as Slack writes them.
        for other in ["groups.json", "dms.json", "mpims.json"] {
            self.z()?.start_file(other, Self::options()).map_err(zip_error)?;
            self.z()?.write_all(b"[]\n")?;
        }
        let Some(zip) = self.zip.take() else { return Ok(()) };
        let mut out = zip.finish().map_err(zip_error)?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_core::{Origin, Sender, Text};
    use std::io::Read;

    fn message(id: &str, who: &str, at_ms: i64, text: &str, thread: Option<&str>) -> Exported {
        let event = Event {
            id: id.into(),
            portal: "ops".into(),
            origin: Origin { bridge: "xmpp".into(), room: "r".into(), remote_id: None },
            sender: Sender { id: format!("{who}@x"), person: None, name: who.into(), avatar: None },
            at_ms,
            body: Body::Message {
                text: Text::plain(text),
                kind: MessageKind::Text,
                attachments: Vec::new(),
                reply_to: None,
                thread: thread.map(Into::into),
                mentions: Vec::new(),
            },
        };
        Exported { seq: 0, event, text: None, retracted: false, reactions: Vec::new(), kept: Default::default() }
    }

    /// Both passes over `portals`, and the zip's files by name.
    fn export(portals: &[(&str, Vec<Exported>)]) -> BTreeMap<String, Value> {
        let mut census = Census::new();
        for (p, events) in portals {
            census.portal(p).unwrap();
            for e in events {
                census.event(e).unwrap();
            }
        }
        let mut out = io::Cursor::new(Vec::new());
        let mut s = Slack::new(&mut out, census, jiff::tz::TimeZone::UTC);
        for (p, events) in portals {
            s.portal(p).unwrap();
            for e in events {
                s.event(e).unwrap();
            }
        }
        s.finish().unwrap();
        drop(s);
        let mut zip = zip::ZipArchive::new(io::Cursor::new(out.into_inner())).unwrap();
        let mut files = BTreeMap::new();
        for n in 0..zip.len() {
            let mut f = zip.by_index(n).unwrap();
            let name = f.name().unwrap().to_string();
            let mut text = String::new();
            f.read_to_string(&mut text).unwrap();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
            files.insert(name, json);
        }
        files
    }

    const DAY: i64 = 86_400_000;
    const T: i64 = 1_796_083_200_000; // 2026-12-01T00:00:00Z

    #[test]
    fn a_threads_replies_are_listed_on_its_first_message_with_their_ts() {
        let files = export(&[(
            "ops",
            vec![
                message("root", "alice", T, "first", None),
                message("r1", "bob", T, "same millisecond", Some("root")),
                message("r2", "alice", T + DAY, "next day", Some("r1")),
            ],
        )]);
        let day1 = files["ops/2026-12-01.json"].as_array().unwrap();
        let day2 = files["ops/2026-12-02.json"].as_array().unwrap();
        let root = &day1[0];
        assert_eq!(root["ts"], "1796083200.000000");
        assert_eq!(day1[1]["ts"], "1796083200.000001", "two in one millisecond get two ts");
        assert_eq!(root["reply_count"], 2);
        assert_eq!(root["replies"][0]["ts"], day1[1]["ts"]);
        assert_eq!(root["replies"][1]["ts"], day2[0]["ts"], "a reply to a reply is in the root's thread");
        assert_eq!(day2[0]["thread_ts"], root["ts"]);
        assert_eq!(root["thread_ts"], root["ts"]);
        let users = files["users.json"].as_array().unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.iter().any(|u| u["id"] == root["user"] && u["real_name"] == "alice"));
        assert_eq!(files["channels.json"][0]["members"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn hostile_text_and_portal_names_stay_text_and_inside_the_archive() {
        let mut gone = message("gone", "mallory", T, "taken back", None);
        gone.retracted = true;
        let files = export(&[
            ("../../etc", vec![message("x", "mallory", T, "<!channel> <@U00000001> & <script>", None), gone]),
            ("Ops", vec![message("y", "a", T, "1", None)]),
            ("ops", vec![message("z", "a", T, "2", None)]),
            ("", vec![]),
        ]);
        let names: Vec<&str> = files["channels.json"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["------etc", "ops", "ops-2", "portal"]);
        let m = files["------etc/2026-12-01.json"].as_array().unwrap();
        assert_eq!(m.len(), 1, "a message taken back is not exported");
        assert_eq!(m[0]["text"], "&lt;!channel&gt; &lt;@U00000001&gt; &amp; &lt;script&gt;");
        assert!(files.keys().all(|k| !k.starts_with('.') && !k.contains("..")), "{:?}", files.keys());
    }

    #[test]
    fn reactions_have_slack_names_and_edits_their_time() {
        let mut m = message("m", "alice", T, "hi", None);
        m.text = Some("hi again".into());
        m.reactions = vec![
            super::super::export::Reactions { key: "👍".into(), by: vec!["bob".into()], who: vec!["xmpp:bob@x".into()] },
            super::super::export::Reactions { key: "a:b".into(), by: vec!["bob".into()], who: vec!["xmpp:bob@x".into()] },
        ];
        let mut edit = message("e", "alice", T + 5000, "", None);
        edit.event.body = Body::Edit { target: "m".into(), text: Text::plain("hi again") };
        let files = export(&[("ops", vec![m, edit])]);
        let m = &files["ops/2026-12-01.json"][0];
        assert_eq!(m["text"], "hi again");
        assert_eq!(m["edited"]["ts"], "1796083205.000000");
        assert_eq!(m["reactions"][0]["name"], "+1");
        assert_eq!(m["reactions"][1]["name"], "ab");
        assert_eq!(m["reactions"][0]["users"][0], files["users.json"][1]["id"], "{files:?}");
    }
}
