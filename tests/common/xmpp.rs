//! A real Prosody (started by tests/peers/prosody.sh) and a real XMPP client.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use causeway_core::conformance::{Account, Action, Peer, Seen};
use causeway_core::{Attachment, Body, Capabilities, Membership, Show, Text};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;

use super::free_port;

pub const DOMAIN: &str = "xmpp.test";
pub const COMPONENT: &str = "bridge.xmpp.test";
pub const SECRET: &str = "component-secret";

fn peers(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(file)
}

fn script() -> PathBuf {
    peers("prosody.sh")
}

/// One Prosody on loopback, stopped when dropped.
pub struct Prosody {
    pub dir: tempfile::TempDir,
    pub c2s: u16,
    pub component: u16,
    /// HTTP File Upload (upload.xmpp.test) serves files here.
    pub http: u16,
}

impl Prosody {
    pub fn start() -> Prosody {
        let p = Prosody { dir: tempfile::tempdir().unwrap(), c2s: free_port(), component: free_port(), http: free_port() };
        p.up();
        p
    }

    /// Start (again) in the same directory, on the same ports.
    pub fn up(&self) {
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(self.dir.path())
            .arg(self.c2s.to_string())
            .arg(self.component.to_string())
            .arg(self.http.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "prosody did not start:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn down(&self) {
        let out = Command::new("bash").arg(script()).arg("stop").arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "prosody did not stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The `bridges.<name>` section for Causeway's XMPP bridge against this server.
    pub fn bridge_config(&self) -> String {
        format!(
            "{{ type: xmpp, server: \"127.0.0.1:{}\", domain: {COMPONENT}, secret: {SECRET}, {}, reconnect_initial: 200ms, reconnect_max: 2s }}",
            self.component,
            super::FETCH_ALLOW
        )
    }

    /// The bridge section for client mode: one account, STARTTLS.
    pub fn client_bridge_config(&self, password: &str) -> String {
        format!(
            "{{ type: xmpp, mode: client, jid: causeway@{DOMAIN}, password: {password}, server: \"127.0.0.1:{}\", reconnect_initial: 200ms, reconnect_max: 2s }}",
            self.c2s
        )
    }

    /// The test CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default()
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg("stop").arg(self.dir.path()).output();
    }
}

pub const NS_CLIENT: &str = "jabber:client";
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_SID: &str = "urn:xmpp:sid:0";
const NS_DELAY: &str = "urn:xmpp:delay";
const NS_FASTEN: &str = "urn:xmpp:fasten:0";
const NS_MODERATE_0: &str = "urn:xmpp:message-moderate:0";

fn child<'a>(e: &'a Element, name: &str, ns: &str) -> Option<&'a Element> {
    e.children().find(|c| c.is(name, ns))
}

fn nick_of(e: &Element) -> Option<String> {
    e.attr("from").and_then(|f| f.split_once('/')).map(|(_, n)| n.to_string())
}

fn el(name: &str, ns: &str, id: &str) -> Element {
    Element::builder(name, ns).attr(xml_ncname!("id").into(), id).build()
}

fn text_el(name: &str, ns: &str, text: &str) -> Element {
    Element::builder(name, ns).append(text).build()
}

/// A person in a group chat, with a real XMPP client (slixmpp, driven
/// through tests/peers/xmpp_client.py).
pub struct XmppPeer {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pub room: String,
    pub nick: String,
    /// Message id → the room's stanza-id, for everything seen.
    ids: HashMap<String, String>,
    buffered: VecDeque<Element>,
    n: u32,
    /// What the room can show through the bridge (the bridge's declared capabilities).
    pub caps: Capabilities,
    /// The account's bare JID.
    jid: String,
    /// Nicks in the room now, as presences told (for joins and leaves).
    present: HashSet<String>,
    /// Threads this client opened: thread id → the root's stanza-id.
    threads: HashMap<String, String>,
    /// Stanza-id → the nick that said it, for everything seen.
    authors: HashMap<String, String>,
    /// Direct message id → who wrote it (an answer goes back there).
    direct_from: HashMap<String, String>,
}

impl XmppPeer {
    /// Log in as `user` (password `pw`) and join `room` as `nick`, asking
    /// for up to `history` old messages.
    pub async fn join(prosody: &Prosody, user: &str, room: &str, nick: &str, history: u32) -> XmppPeer {
        let mut peer = Self::login(prosody, user, room, nick).await;
        peer.enter(history).await;
        peer
    }

    /// Log in as `user` without joining a room (yet).
    pub async fn login(prosody: &Prosody, user: &str, room: &str, nick: &str) -> XmppPeer {
        let python = String::from_utf8(Command::new("bash").arg(peers("python.sh")).arg("path").output().unwrap().stdout).unwrap();
        let mut process = tokio::process::Command::new(python.trim())
            .arg(peers("xmpp_client.py"))
            .arg(format!("{user}@{DOMAIN}"))
            .arg("pw")
            .arg("127.0.0.1")
            .arg(prosody.c2s.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the XMPP client (bash tests/peers/python.sh install)");
        let stdin = process.stdin.take().unwrap();
        let lines = BufReader::new(process.stdout.take().unwrap()).lines();
        let mut peer = XmppPeer {
            child: process,
            stdin,
            lines,
            room: room.to_string(),
            nick: nick.to_string(),
            ids: HashMap::new(),
            buffered: VecDeque::new(),
            n: 0,
            caps: declared_by(serde_json::json!({"type": "xmpp", "domain": "bridge.xmpp.test", "secret": "s"}), room),
            jid: format!("{user}@{DOMAIN}"),
            present: HashSet::new(),
            threads: HashMap::new(),
            authors: HashMap::new(),
            direct_from: HashMap::new(),
        };
        match tokio::time::timeout(Duration::from_secs(10), peer.lines.next_line()).await {
            Ok(Ok(Some(l))) if l.contains("\"online\"") => {}
            other => panic!("{user} could not log in: {other:?}"),
        }
        // Available, so one-to-one messages to the bare JID come here
        // rather than to offline storage.
        peer.send(&Element::builder("presence", NS_CLIENT).build()).await;
        peer
    }

    /// Join the peer's room, asking for up to `history` old messages.
    pub async fn enter(&mut self, history: u32) {
        let (room, nick) = (self.room.clone(), self.nick.clone());
        let peer = self;
        let hist = Element::builder("history", NS_MUC).attr(xml_ncname!("maxstanzas").into(), history.to_string()).build();
        let join = Element::builder("presence", NS_CLIENT)
            .attr(xml_ncname!("to").into(), format!("{room}/{nick}"))
            .append(Element::builder("x", NS_MUC).append(hist).build())
            .build();
        peer.send(&join).await;
        // Until our own presence comes back (status 110), we are not in.
        loop {
            let s = peer.stanza_live(Duration::from_secs(10)).await.expect("no answer to joining");
            if s.name() == "presence" && s.attr("from") == Some(&format!("{room}/{nick}")) {
                assert_ne!(s.attr("type"), Some("error"), "join refused: {s:?}");
                let x = child(&s, "x", NS_MUC_USER);
                if x.is_some_and(|x| x.children().any(|c| c.name() == "status" && c.attr("code") == Some("110"))) {
                    break;
                }
            }
            peer.buffered.push_back(s);
        }
    }

    /// Send a one-to-one chat message to `to` with `payloads`; returns its id.
    pub async fn chat(&mut self, to: &str, payloads: Vec<Element>) -> String {
        self.n += 1;
        let id = format!("{}-chat-{}-{}", self.nick.replace(' ', "_"), self.n, causeway_core::new_id());
        let mut m = Element::builder("message", NS_CLIENT)
            .attr(xml_ncname!("to").into(), to)
            .attr(xml_ncname!("type").into(), "chat")
            .attr(xml_ncname!("id").into(), id.as_str());
        for p in payloads {
            m = m.append(p);
        }
        self.send(&m.build()).await;
        id
    }

    /// The next stanza `want` accepts, raw (others are kept for later reads).
    pub async fn next_matching(&mut self, timeout: Duration, want: impl Fn(&Element) -> bool) -> Result<Element, String> {
        let deadline = Instant::now() + timeout;
        let mut keep = Vec::new();
        let found = loop {
            match self.stanza(deadline.saturating_duration_since(Instant::now())).await {
                Ok(s) if want(&s) => break Ok(s),
                Ok(s) => keep.push(s),
                Err(e) => break Err(e),
            }
        };
        self.buffered.extend(keep);
        found
    }

    /// Send any stanza as is.
    pub async fn send_raw(&mut self, e: &Element) {
        self.send(e).await;
    }

    /// The next one-to-one message (chat or error) from anyone, raw.
    pub async fn next_chat(&mut self, timeout: Duration) -> Result<Element, String> {
        self.next_matching(timeout, |s| s.name() == "message" && matches!(s.attr("type"), Some("chat") | Some("error"))).await
    }

    /// Send raw XML as it is (for stanzas no library would build).
    pub async fn send_xml(&mut self, xml: &str) {
        let line = serde_json::json!({"send": xml}).to_string() + "\n";
        self.stdin.write_all(line.as_bytes()).await.expect("XMPP client gone");
    }

    async fn send(&mut self, e: &Element) {
        let mut xml = Vec::new();
        e.write_to(&mut xml).unwrap();
        let line = serde_json::json!({"send": String::from_utf8(xml).unwrap()}).to_string() + "\n";
        self.stdin.write_all(line.as_bytes()).await.expect("XMPP client gone");
    }

    async fn stanza(&mut self, timeout: Duration) -> Result<Element, String> {
        if let Some(s) = self.buffered.pop_front() {
            return Ok(s);
        }
        self.stanza_live(timeout).await
    }

    /// The next stanza from the server (not the buffer).
    async fn stanza_live(&mut self, timeout: Duration) -> Result<Element, String> {
        let line = tokio::time::timeout(timeout, self.lines.next_line()).await.map_err(|_| "timed out".to_string())?;
        let line = line.map_err(|e| e.to_string())?.ok_or("the XMPP client ended")?;
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        match v["stanza"].as_str() {
            Some(xml) => xml.parse::<Element>().map_err(|e| format!("{e}: {xml}")),
            None => Err(format!("client says: {line}")),
        }
    }

    /// Send a group chat message; returns the room's stanza-id for it.
    pub async fn say(&mut self, payloads: Vec<Element>) -> Result<String, String> {
        self.n += 1;
        let id = format!("{}-{}-{}", self.nick.replace(' ', "_"), self.n, causeway_core::new_id());
        let mut m = Element::builder("message", NS_CLIENT)
            .attr(xml_ncname!("to").into(), self.room.as_str())
            .attr(xml_ncname!("type").into(), "groupchat")
            .attr(xml_ncname!("id").into(), id.as_str());
        for p in payloads {
            m = m.append(p);
        }
        let m = m.build();
        if std::env::var("XMPP_DEBUG").is_ok() {
            let mut b = Vec::new();
            m.write_to(&mut b).unwrap();
            eprintln!("SEND {}", String::from_utf8_lossy(&b));
        }
        self.send(&m).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut held = Vec::new();
        let result = loop {
            let s = match self.stanza_live(deadline.saturating_duration_since(Instant::now())).await {
                Ok(s) => s,
                Err(e) => break Err(format!("no reflection of our message: {e}")),
            };
            if std::env::var("XMPP_DEBUG").is_ok() {
                let mut b = Vec::new();
                s.write_to(&mut b).unwrap();
                eprintln!("GOT {}", String::from_utf8_lossy(&b));
            }
            if s.name() == "message" && s.attr("id") == Some(id.as_str()) {
                let sid = child(&s, "stanza-id", NS_SID).and_then(|e| e.attr("id")).map(str::to_string).unwrap_or_else(|| id.clone());
                self.ids.insert(id.clone(), sid.clone());
                break Ok(sid);
            }
            held.push(s);
        };
        self.buffered.extend(held);
        result
    }

    /// A group chat message of `payload` alone, not waiting for the room's copy.
    async fn send_unconfirmed(&mut self, payload: Element) {
        let m = Element::builder("message", NS_CLIENT)
            .attr(xml_ncname!("to").into(), self.room.as_str())
            .attr(xml_ncname!("type").into(), "groupchat")
            .append(payload)
            .build();
        self.send(&m).await;
    }

    pub async fn set_presence(&mut self, show: Option<&str>, status: Option<&str>) {
        let mut p = Element::builder("presence", NS_CLIENT).attr(xml_ncname!("to").into(), format!("{}/{}", self.room, self.nick));
        if let Some(show) = show {
            p = p.append(text_el("show", NS_CLIENT, show));
        }
        if let Some(status) = status {
            p = p.append(text_el("status", NS_CLIENT, status));
        }
        self.send(&p.build()).await;
    }

    /// Nicks present in the room, from presences seen so far and within `wait`.
    pub async fn occupants(&mut self, wait: Duration) -> Vec<String> {
        let mut nicks = Vec::new();
        let mut keep = Vec::new();
        let deadline = Instant::now() + wait;
        while let Ok(s) = self.stanza(deadline.saturating_duration_since(Instant::now())).await {
            if s.name() == "presence" && s.attr("type").is_none() {
                nicks.extend(nick_of(&s));
            } else {
                keep.push(s);
            }
        }
        self.buffered.extend(keep);
        nicks
    }

    /// Group chat messages replayed on join, as (nick, body).
    pub async fn history(&mut self, quiet: Duration) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Ok(s) = self.stanza(quiet).await {
            if s.name() == "message"
                && child(&s, "delay", NS_DELAY).is_some()
                && let Some(body) = child(&s, "body", NS_CLIENT)
            {
                out.push((nick_of(&s).unwrap_or_default(), body.text()));
            }
        }
        out
    }

    /// The next live message or presence from someone else, as the suite sees it.
    pub async fn seen(&mut self, timeout: Duration) -> Result<Seen, String> {
        self.seen_with(timeout, false).await
    }

    /// [`XmppPeer::seen`], and with `states` also typing (chat states) and
    /// subject changes, which the conformance suite checks.
    pub async fn seen_with(&mut self, timeout: Duration, states: bool) -> Result<Seen, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            let s = self.stanza(left).await?;
            let Some(nick) = nick_of(&s) else {
                // The room itself speaks: a moderator took a message back.
                if let Some(apply) = child(&s, "apply-to", NS_FASTEN)
                    && let Some(m) = child(apply, "moderated", NS_MODERATE_0)
                    && child(&s, "delay", NS_DELAY).is_none()
                {
                    let by = m.attr("by").and_then(|b| b.split_once('/')).map(|(_, n)| n.to_string()).unwrap_or_default();
                    return Ok(Seen {
                        id: String::new(),
                        sender_name: by,
                        body: Body::Retract { target: apply.attr("id").unwrap_or("").to_string(), moderated: true },
                    });
                }
                continue;
            };
            if s.name() == "message" && s.attr("type") == Some("groupchat") {
                let id = s.attr("id").unwrap_or("").to_string();
                let sid = child(&s, "stanza-id", NS_SID).and_then(|e| e.attr("id")).map(str::to_string).unwrap_or_else(|| id.clone());
                self.ids.insert(id.clone(), sid.clone());
                self.authors.insert(sid.clone(), nick.clone());
                if nick == self.nick || child(&s, "delay", NS_DELAY).is_some() {
                    continue;
                }
                let body_text = child(&s, "body", NS_CLIENT).map(|b| b.text()).unwrap_or_default();
                if states && body_text.is_empty() {
                    if let Some(subject) = child(&s, "subject", NS_CLIENT) {
                        return Ok(Seen { id: sid, sender_name: nick, body: Body::Topic { text: subject.text() } });
                    }
                    const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
                    if let Some(state) = s.children().find(|c| c.ns() == NS_CHATSTATES) {
                        return Ok(Seen { id: sid, sender_name: nick, body: Body::Typing { active: state.name() == "composing" } });
                    }
                }
                let body = if let Some(r) = child(&s, "retract", "urn:xmpp:message-retract:1") {
                    Body::Retract { target: r.attr("id").unwrap_or("").to_string(), moderated: false }
                } else if let Some(r) = child(&s, "reactions", "urn:xmpp:reactions:0") {
                    let key = r.children().next().map(|c| c.text()).unwrap_or_default();
                    Body::Reaction { target: r.attr("id").unwrap_or("").to_string(), key, removed: false }
                } else if let Some(r) = child(&s, "replace", "urn:xmpp:message-correct:0") {
                    let original = r.attr("id").unwrap_or("").to_string();
                    let target = self.ids.get(&original).cloned().unwrap_or(original);
                    Body::Edit { target, text: Text::plain(body_text) }
                } else if !body_text.is_empty() {
                    let reply_to = child(&s, "reply", "urn:xmpp:reply:0").and_then(|r| r.attr("id")).map(str::to_string);
                    // A thread opened here is known by its root; one opened
                    // elsewhere is named after its root.
                    let thread = child(&s, "thread", NS_CLIENT).map(|t| t.text()).map(|t| self.threads.get(&t).cloned().unwrap_or(t));
                    let attachments = s
                        .children()
                        .filter(|e| e.is("x", "jabber:x:oob"))
                        .filter_map(|x| {
                            x.get_child("url", "jabber:x:oob").map(|u| Attachment { url: u.text(), name: None, mime: None, size: None })
                        })
                        .collect();
                    Body::Message {
                        text: Text::plain(body_text),
                        kind: Default::default(),
                        attachments,
                        reply_to,
                        thread,
                        mentions: vec![],
                    }
                } else {
                    continue;
                };
                return Ok(Seen { id: sid, sender_name: nick, body });
            }
            if s.name() == "presence" && s.attr("type") == Some("unavailable") && nick != self.nick {
                self.present.remove(&nick);
                return Ok(Seen { id: String::new(), sender_name: nick, body: Body::Membership(Membership::Leave) });
            }
            if s.name() == "presence" && s.attr("type").is_none() && nick != self.nick {
                if self.present.insert(nick.clone()) {
                    return Ok(Seen { id: String::new(), sender_name: nick, body: Body::Membership(Membership::Join) });
                }
                let show = match child(&s, "show", NS_CLIENT).map(|e| e.text()).as_deref() {
                    Some("away") => Show::Away,
                    Some("xa") => Show::Xa,
                    Some("dnd") => Show::Dnd,
                    _ => Show::Online,
                };
                let status = child(&s, "status", NS_CLIENT).map(|e| e.text());
                return Ok(Seen { id: String::new(), sender_name: nick, body: Body::Presence { show, status } });
            }
        }
    }

    /// As a moderator, take back the message with the room's stanza-id
    /// `id` (XEP-0425 as Prosody's mod_muc_moderation speaks it).
    pub async fn moderate(&mut self, id: &str) {
        let moderate = Element::builder("moderate", NS_MODERATE_0)
            .append(Element::builder("retract", "urn:xmpp:message-retract:0").build())
            .append(text_el("reason", NS_MODERATE_0, "spam"))
            .build();
        let iq = Element::builder("iq", NS_CLIENT)
            .attr(xml_ncname!("type").into(), "set")
            .attr(xml_ncname!("id").into(), causeway_core::new_id())
            .attr(xml_ncname!("to").into(), self.room.as_str())
            .append(Element::builder("apply-to", NS_FASTEN).attr(xml_ncname!("id").into(), id).append(moderate).build())
            .build();
        self.send(&iq).await;
    }

    /// Stop the client.
    pub async fn quit(mut self) {
        let _ = self.child.kill().await;
    }
}

#[async_trait]
impl Peer for XmppPeer {
    fn label(&self) -> String {
        format!("xmpp {}", self.nick)
    }
    fn capabilities(&self) -> Capabilities {
        self.caps
    }
    /// XMPP clients tell their user of a message naming their nick.
    fn pinged(&self, seen: &Seen) -> bool {
        matches!(&seen.body, Body::Message { text, .. } if text.plain.contains(&self.nick))
    }
    async fn act(&mut self, action: Action) -> Result<String, String> {
        let payloads = match action {
            Action::InThread { text, root } => {
                // As a client opens a thread on a message: a new thread id,
                // and a reply to the message.
                let thread = format!("thread-{}", causeway_core::new_id());
                self.threads.insert(thread.clone(), root.clone());
                vec![text_el("body", NS_CLIENT, &text), text_el("thread", NS_CLIENT, &thread), el("reply", "urn:xmpp:reply:0", &root)]
            }
            Action::Text { text, reply_to } => {
                let mut p = vec![text_el("body", NS_CLIENT, &text)];
                p.extend(reply_to.map(|r| el("reply", "urn:xmpp:reply:0", &r)));
                p
            }
            Action::Mention { text, of } => {
                // As most clients do: the nick, then the text.
                let nick = self.authors.get(&of).cloned().ok_or_else(|| format!("nobody known to have said {of}"))?;
                vec![text_el("body", NS_CLIENT, &format!("{nick}: {text}"))]
            }
            Action::Edit { target, text } => {
                let original = self.ids.iter().find(|(_, sid)| **sid == target).map(|(id, _)| id.clone()).unwrap_or(target);
                vec![text_el("body", NS_CLIENT, &text), el("replace", "urn:xmpp:message-correct:0", &original)]
            }
            Action::Retract { target } => {
                vec![text_el("body", NS_CLIENT, "retracted"), el("retract", "urn:xmpp:message-retract:1", &target)]
            }
            Action::React { target, key } => {
                let r = Element::builder("reactions", "urn:xmpp:reactions:0")
                    .attr(xml_ncname!("id").into(), target.as_str())
                    .append(text_el("reaction", "urn:xmpp:reactions:0", &key))
                    .build();
                vec![r, Element::builder("store", "urn:xmpp:hints").build()]
            }
            Action::File { attachment, caption } => {
                let x = Element::builder("x", "jabber:x:oob").append(text_el("url", "jabber:x:oob", &attachment.url)).build();
                vec![text_el("body", NS_CLIENT, &format!("{caption}\n{}", attachment.url)), x]
            }
            Action::Presence { show, status } => {
                let s = match show {
                    Show::Away => Some("away"),
                    Show::Xa => Some("xa"),
                    Show::Dnd => Some("dnd"),
                    _ => None,
                };
                self.set_presence(s, status.as_deref()).await;
                return Ok(String::new());
            }
            // Neither is reflected with its id (a chat state is not even
            // stored): sent without waiting for the room's copy.
            Action::Typing { active } => {
                let state = Element::builder(if active { "composing" } else { "active" }, "http://jabber.org/protocol/chatstates").build();
                self.send_unconfirmed(state).await;
                return Ok(String::new());
            }
            Action::Topic { text } => {
                self.send_unconfirmed(text_el("subject", NS_CLIENT, &text)).await;
                return Ok(String::new());
            }
            Action::Leave => {
                let leave = Element::builder("presence", NS_CLIENT)
                    .attr(xml_ncname!("to").into(), format!("{}/{}", self.room, self.nick))
                    .attr(xml_ncname!("type").into(), "unavailable")
                    .build();
                self.send(&leave).await;
                return Ok(String::new());
            }
            Action::Join => {
                self.enter(0).await;
                return Ok(String::new());
            }
        };
        self.say(payloads).await
    }
    fn account(&self) -> Option<Account> {
        Some(Account { bridge: "xmpp".into(), id: self.jid.clone() })
    }
    /// To the ghost JID the bridge gives `to` (as its own code names it).
    async fn direct(&mut self, to: &Account, text: &str, reply_to: Option<String>) -> Result<String, String> {
        let section = serde_json::json!({"type": "xmpp", "domain": "bridge.xmpp.test", "secret": "s"});
        let configured = causeway::bridges::configure(&section).map_err(|e| format!("{e:?}"))?;
        let options = causeway_core::network::options_of::<causeway_xmpp::config::XmppOptions>(&*configured)?;
        let sender = causeway_core::Sender { id: to.id.clone(), person: None, name: to.id.clone(), avatar: None };
        let ghost = causeway_xmpp::ghost::jid_of(options, COMPONENT, &sender, &to.bridge).map_err(|e| e.to_string())?.to_string();
        // An answer goes to whoever wrote what it answers, as a chat window does.
        let to_jid = reply_to.as_ref().and_then(|r| self.direct_from.get(r)).cloned().unwrap_or(ghost);
        let mut payloads = vec![text_el("body", NS_CLIENT, text)];
        payloads.extend(reply_to.map(|r| el("reply", "urn:xmpp:reply:0", &r)));
        Ok(self.chat(&to_jid, payloads).await)
    }
    fn read_markers(&self) -> bool {
        true
    }
    /// A displayed marker (XEP-0333) to whoever wrote it.
    async fn mark_read(&mut self, id: &str) -> Result<(), String> {
        let to = self.direct_from.get(id).cloned().ok_or_else(|| format!("no direct message {id} seen"))?;
        let marker = Element::builder("displayed", "urn:xmpp:chat-markers:0").attr(xml_ncname!("id").into(), id).build();
        self.chat(&to, vec![marker]).await;
        Ok(())
    }
    async fn next_direct(&mut self, timeout: Duration) -> Result<Seen, String> {
        let m = self.next_chat(timeout).await?;
        if m.attr("type") == Some("error") {
            return Err(format!("an error came back: {m:?}"));
        }
        if let Some(d) = child(&m, "displayed", "urn:xmpp:chat-markers:0") {
            let target = d.attr("id").unwrap_or_default().to_string();
            return Ok(Seen {
                id: String::new(),
                sender_name: m.attr("from").unwrap_or_default().to_string(),
                body: Body::Read { target },
            });
        }
        let text = child(&m, "body", NS_CLIENT).map(|b| b.text()).unwrap_or_default();
        let reply_to = child(&m, "reply", "urn:xmpp:reply:0").and_then(|r| r.attr("id")).map(str::to_string);
        let sender_name = m.attr("from").unwrap_or_default().to_string();
        let id = m.attr("id").unwrap_or_default().to_string();
        let bare = sender_name.split('/').next().unwrap_or_default().to_string();
        self.direct_from.insert(id.clone(), bare);
        Ok(Seen { id, sender_name, body: Body::text_replying(text, reply_to) })
    }
    async fn next(&mut self, timeout: Duration) -> Result<Seen, String> {
        self.seen_with(timeout, true).await
    }

    async fn fetch(&mut self, url: &str) -> Result<Vec<u8>, String> {
        super::fetch(url).await
    }
}

/// What `room` can show through the XMPP bridge of `section` (component
/// mode, or client mode), as the bridge itself declares it.
pub fn declared_by(section: serde_json::Value, room: &str) -> Capabilities {
    super::declared(section).capabilities(room)
}
