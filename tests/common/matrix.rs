//! A real Synapse (started by tests/peers/synapse.sh) and a real Matrix
//! client speaking the client-server API.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use causeway_core::conformance::{Account, Action, Peer, Seen};
use causeway_core::{Attachment, Body, Capabilities, Membership, MessageKind, Show, Text};
use serde_json::{Value, json};

use super::free_port;

pub const SERVER_NAME: &str = "matrix.test";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/synapse.sh")
}

/// One Synapse on loopback, stopped when dropped.
pub struct Synapse {
    pub dir: tempfile::TempDir,
    pub port: u16,
    registration: PathBuf,
    /// More registrations (double puppeting).
    extra: Vec<PathBuf>,
    rc_message: Option<String>,
}

impl Synapse {
    /// Start with the application service `registration` file.
    pub fn start(registration: &Path) -> Synapse {
        Self::start_with(registration, free_port(), None)
    }

    /// Start on a given port (one the config already names).
    pub fn start_on(registration: &Path, port: u16) -> Synapse {
        Self::start_with(registration, port, None)
    }

    /// Start with a message rate limit (`{ per_second: …, burst_count: … }`)
    /// that applies to the application service too.
    pub fn start_with(registration: &Path, port: u16, rc_message: Option<&str>) -> Synapse {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("registration.yaml");
        let mut text = std::fs::read_to_string(registration).unwrap();
        if rc_message.is_some() {
            text = text.replace("rate_limited: false", "rate_limited: true");
        }
        std::fs::write(&kept, text).unwrap();
        let s = Synapse { dir, port, registration: kept, extra: Vec::new(), rc_message: rc_message.map(str::to_string) };
        s.up();
        s
    }

    /// Start with the application service registration and more (the
    /// double puppeting one).
    pub fn start_with_extra(registration: &Path, extra: &[&Path]) -> Synapse {
        Self::start_on_with_extra(registration, free_port(), extra)
    }

    /// As [`Synapse::start_with_extra`], on `port`.
    pub fn start_on_with_extra(registration: &Path, port: u16, extra: &[&Path]) -> Synapse {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("registration.yaml");
        std::fs::copy(registration, &kept).unwrap();
        let extra = extra
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let k = dir.path().join(format!("registration-{i}.yaml"));
                std::fs::copy(p, &k).unwrap();
                k
            })
            .collect();
        let s = Synapse { dir, port, registration: kept, extra, rc_message: None };
        s.up();
        s
    }

    pub fn up(&self) {
        let out = Command::new("bash")
            .envs(self.rc_message.iter().map(|r| ("SYNAPSE_RC_MESSAGE", r)))
            .arg(script())
            .arg("start")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .arg(&self.registration)
            .args(&self.extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "synapse did not start:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn down(&self) {
        let out = Command::new("bash").arg(script()).arg("stop").arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "synapse did not stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Create a user with password `pw`; returns the user id.
    pub fn register(&self, user: &str) -> String {
        let out = Command::new("bash").arg(script()).arg("register").arg(self.dir.path()).arg(user).arg("pw").output().unwrap();
        assert!(out.status.success(), "cannot register {user}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("homeserver.log")).unwrap_or_default()
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg("stop").arg(self.dir.path()).output();
    }
}

/// The `bridges.<name>` section for Causeway's Matrix bridge against this
/// server (`{port}` is Causeway's HTTP port, filled in by the harness).
pub fn bridge_config(synapse_port: u16) -> String {
    format!(
        "{{ type: matrix, homeserver: \"http://127.0.0.1:{synapse_port}\", server_name: {SERVER_NAME}, \
         url: \"http://127.0.0.1:{{port}}/bridges/matrix\", as_token: as-secret-token, hs_token: hs-secret-token, {}, request_timeout: 10s }}",
        super::FETCH_ALLOW
    )
}

/// Log in as `user` (password `pw`): the answer, with `access_token` and `user_id`.
pub async fn login(http: &reqwest::Client, base: &str, user: &str) -> Value {
    let login: Value = http
        .post(format!("{base}/_matrix/client/v3/login"))
        .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": "pw"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(login["access_token"].is_string(), "login failed: {login}");
    login
}

/// A person with a real Matrix client (raw client-server API).
pub struct MatrixPeer {
    http: reqwest::Client,
    base: String,
    token: String,
    pub user_id: String,
    pub room_id: String,
    since: Option<String>,
    buffered: VecDeque<Value>,
    /// Presence events seen (they are not in a room's timeline).
    presence: VecDeque<Value>,
    /// The ids of the timeline events taken so far.
    timeline: HashSet<String>,
    /// Event id → its sender, for everything synced.
    names: HashMap<String, String>,
    /// Direct conversations: the other side's user → the room.
    dms: HashMap<String, String>,
    /// Events of direct conversations' rooms, not yet taken.
    direct: VecDeque<Value>,
    /// Event id → the direct conversation's room it was said in.
    direct_rooms: HashMap<String, String>,
    n: u32,
    pub caps: Capabilities,
    /// Causeway's appservice URL (`…/bridges/matrix`), to push to as the
    /// homeserver does, for redelivery.
    appservice: Option<String>,
}

impl MatrixPeer {
    /// Log in as `user` (password `pw`) and join `room` (an id or alias).
    pub async fn join(base: &str, user: &str, room: &str) -> MatrixPeer {
        let http = reqwest::Client::new();
        let login = login(&http, base, user).await;
        let token = login["access_token"].as_str().unwrap().to_string();
        let mut p = MatrixPeer {
            http,
            base: base.to_string(),
            token,
            user_id: login["user_id"].as_str().unwrap().to_string(),
            room_id: String::new(),
            since: None,
            buffered: VecDeque::new(),
            presence: VecDeque::new(),
            names: HashMap::new(),
            dms: HashMap::new(),
            direct: VecDeque::new(),
            direct_rooms: HashMap::new(),
            timeline: HashSet::new(),
            n: 0,
            appservice: None,
            caps: super::declared(json!({"type": "matrix", "homeserver": "http://127.0.0.1:9", "server_name": "matrix.test",
                "url": "http://127.0.0.1:9/bridges/matrix", "as_token": "a", "hs_token": "h"}))
            .capabilities(room),
        };
        let joined = p.call(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{}", enc(room)), Some(json!({}))).await.unwrap();
        p.room_id = joined["room_id"].as_str().unwrap().to_string();
        // Start reading from now on.
        let first = p.call(reqwest::Method::GET, "/_matrix/client/v3/sync?timeout=0", None).await.unwrap();
        p.since = first["next_batch"].as_str().map(str::to_string);
        p
    }

    /// Redeliver through Causeway's appservice endpoint at `url`
    /// (`http://…/bridges/matrix`), with the homeserver's token of the tests.
    pub fn with_appservice(mut self, url: String) -> Self {
        self.appservice = Some(url);
        self
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() { Ok(v) } else { Err(format!("{path}: {status} {v}")) }
    }

    /// Send an event to the room; returns its event id.
    pub async fn send(&mut self, event_type: &str, content: Value) -> Result<String, String> {
        self.n += 1;
        let txn = format!("t{}-{}", self.n, causeway_core::new_id());
        let path = format!("/_matrix/client/v3/rooms/{}/send/{event_type}/{txn}", enc(&self.room_id));
        let v = self.call(reqwest::Method::PUT, &path, Some(content)).await?;
        Ok(v["event_id"].as_str().unwrap_or_default().to_string())
    }

    pub async fn redact(&mut self, event_id: &str) -> Result<String, String> {
        self.n += 1;
        let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r{}", enc(&self.room_id), enc(event_id), self.n);
        let v = self.call(reqwest::Method::PUT, &path, Some(json!({}))).await?;
        Ok(v["event_id"].as_str().unwrap_or_default().to_string())
    }

    pub async fn set_presence(&mut self, presence: &str, status: Option<&str>) -> Result<(), String> {
        let path = format!("/_matrix/client/v3/presence/{}/status", enc(&self.user_id));
        let mut body = json!({"presence": presence});
        if let Some(s) = status {
            body["status_msg"] = json!(s);
        }
        self.call(reqwest::Method::PUT, &path, Some(body)).await.map(drop)
    }

    pub async fn upload(&mut self, bytes: Vec<u8>, mime: &str) -> Result<String, String> {
        let resp = self
            .http
            .post(format!("{}/_matrix/media/v3/upload", self.base))
            .bearer_auth(&self.token)
            .header("content-type", mime)
            .body(bytes)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        v["content_uri"].as_str().map(str::to_string).ok_or_else(|| format!("upload: {v}"))
    }

    /// Set a state event of the room (key "").
    pub async fn send_state(&mut self, event_type: &str, content: Value) -> Result<String, String> {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{event_type}/", enc(&self.room_id));
        let v = self.call(reqwest::Method::PUT, &path, Some(content)).await?;
        Ok(v["event_id"].as_str().unwrap_or_default().to_string())
    }

    pub async fn leave(&self) -> Result<(), String> {
        self.call(reqwest::Method::POST, &format!("/_matrix/client/v3/rooms/{}/leave", enc(&self.room_id)), Some(json!({}))).await.map(drop)
    }

    /// Fetch the room's state event (`type`, key "").
    pub async fn state(&mut self, event_type: &str) -> Result<Value, String> {
        self.call(reqwest::Method::GET, &format!("/_matrix/client/v3/rooms/{}/state/{event_type}/", enc(&self.room_id)), None).await
    }

    /// A user's display name and avatar.
    pub async fn profile(&mut self, user: &str) -> Result<Value, String> {
        self.call(reqwest::Method::GET, &format!("/_matrix/client/v3/profile/{}", enc(user)), None).await
    }

    /// A user's presence, as the server tells it.
    pub async fn presence_of(&mut self, user: &str) -> Result<Value, String> {
        self.call(reqwest::Method::GET, &format!("/_matrix/client/v3/presence/{}/status", enc(user)), None).await
    }

    /// One /sync round: new timeline events of the room (and presence).
    async fn sync(&mut self, timeout: Duration) -> Result<(), String> {
        // Without a filter a busy room's timeline is cut to its last 10 events.
        let filter = enc(r#"{"room":{"timeline":{"limit":1000}}}"#);
        let mut path = format!("/_matrix/client/v3/sync?timeout={}&filter={filter}", timeout.as_millis());
        if let Some(s) = &self.since {
            path.push_str(&format!("&since={}", enc(s)));
        }
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        self.since = v["next_batch"].as_str().map(str::to_string);
        if let Some(events) = v["rooms"]["join"][&self.room_id]["timeline"]["events"].as_array() {
            // After leaving and coming back the timeline starts again with
            // history: a client shows each event once.
            for e in events {
                if let (Some(id), Some(sender)) = (e["event_id"].as_str(), e["sender"].as_str()) {
                    self.names.insert(id.to_string(), sender.to_string());
                }
                if e["event_id"].as_str().is_none_or(|id| self.timeline.insert(id.to_string())) {
                    self.buffered.push_back(e.clone());
                }
            }
        }
        if let Some(events) = v["rooms"]["join"][&self.room_id]["ephemeral"]["events"].as_array() {
            self.buffered.extend(events.iter().cloned());
        }
        // Invitations into direct conversations are taken, as clients do.
        if let Some(invites) = v["rooms"]["invite"].as_object() {
            for (room, state) in invites {
                let direct = state["invite_state"]["events"].as_array().is_some_and(|es| {
                    es.iter().any(|e| {
                        e["type"] == "m.room.member" && e["state_key"] == self.user_id.as_str() && e["content"]["is_direct"] == true
                    })
                });
                let inviter = state["invite_state"]["events"]
                    .as_array()
                    .and_then(|es| es.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == self.user_id.as_str()))
                    .and_then(|e| e["sender"].as_str())
                    .map(str::to_string);
                if direct && let Some(inviter) = inviter {
                    self.call(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{}", enc(room)), Some(json!({}))).await?;
                    self.dms.insert(inviter, room.clone());
                }
            }
        }
        let direct_rooms: HashSet<String> = self.dms.values().cloned().collect();
        for room in &direct_rooms {
            if let Some(events) = v["rooms"]["join"][room]["ephemeral"]["events"].as_array() {
                self.direct.extend(events.iter().filter(|e| e["type"] == "m.receipt").cloned());
            }
        }
        for room in direct_rooms {
            if let Some(events) = v["rooms"]["join"][&room]["timeline"]["events"].as_array() {
                for e in events {
                    if let Some(id) = e["event_id"].as_str() {
                        self.direct_rooms.insert(id.to_string(), room.clone());
                    }
                    if e["event_id"].as_str().is_none_or(|id| self.timeline.insert(id.to_string())) {
                        self.direct.push_back(e.clone());
                    }
                }
            }
        }
        if let Some(events) = v["presence"]["events"].as_array() {
            self.presence.extend(events.iter().cloned());
        }
        Ok(())
    }

    /// The next raw event of the room (timeline or ephemeral) `want` accepts.
    pub async fn next_matching(&mut self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Result<Value, String> {
        self.next_in(false, timeout, want).await
    }

    /// The next presence event `want` accepts.
    pub async fn next_presence(&mut self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Result<Value, String> {
        self.next_in(true, timeout, want).await
    }

    /// The next event `want` accepts from the room's events, or from the
    /// presence events; syncing until the deadline.
    async fn next_in(&mut self, presence: bool, timeout: Duration, want: impl Fn(&Value) -> bool) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(e) = if presence { self.presence.pop_front() } else { self.buffered.pop_front() } {
                if want(&e) {
                    return Ok(e);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            self.sync(left.min(Duration::from_secs(5))).await?;
        }
    }

    /// The next event of a direct conversation's room (the invitations
    /// into them are taken) that `want` accepts, with its room.
    pub async fn next_direct_matching(&mut self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Result<(String, Value), String> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(e) = self.direct.pop_front() {
                if want(&e) {
                    let room = e["event_id"].as_str().and_then(|id| self.direct_rooms.get(id)).cloned().unwrap_or_default();
                    return Ok((room, e));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            self.sync(left.min(Duration::from_secs(5))).await?;
        }
    }

    /// A room event as the conformance suite sees it; `None` for the rest.
    fn seen(&self, e: &Value) -> Option<Seen> {
        if e["type"] == "m.typing" {
            // Who types now, besides this client: a ghost typing.
            let users: Vec<&str> =
                e["content"]["user_ids"].as_array()?.iter().filter_map(Value::as_str).filter(|u| *u != self.user_id).collect();
            let sender_name = users.first().map(|u| u.to_string()).unwrap_or_default();
            return Some(Seen { id: String::new(), sender_name, body: Body::Typing { active: !users.is_empty() } });
        }
        let sender = e["sender"].as_str()?;
        if sender == self.user_id {
            return None;
        }
        let id = e["event_id"].as_str().unwrap_or_default().to_string();
        let c = &e["content"];
        let body = match e["type"].as_str()? {
            "m.room.message" => {
                let rel = &c["m.relates_to"];
                if rel["rel_type"] == "m.replace" {
                    let new = &c["m.new_content"];
                    Body::Edit { target: rel["event_id"].as_str()?.to_string(), text: Text::plain(new["body"].as_str()?) }
                } else {
                    let thread = (rel["rel_type"] == "m.thread").then(|| rel["event_id"].as_str().map(str::to_string)).flatten();
                    let falling_back = rel["is_falling_back"].as_bool().unwrap_or(false);
                    let reply_to =
                        if thread.is_some() && falling_back { None } else { rel["m.in_reply_to"]["event_id"].as_str().map(str::to_string) };
                    let msgtype = c["msgtype"].as_str().unwrap_or("m.text");
                    let attachments = match msgtype {
                        "m.image" | "m.file" | "m.video" | "m.audio" => vec![Attachment {
                            url: c["url"].as_str().unwrap_or_default().to_string(),
                            name: c["filename"].as_str().or(c["body"].as_str()).map(str::to_string),
                            mime: c["info"]["mimetype"].as_str().map(str::to_string),
                            size: c["info"]["size"].as_u64(),
                        }],
                        _ => vec![],
                    };
                    let text = if attachments.is_empty() { c["body"].as_str().unwrap_or_default().to_string() } else { String::new() };
                    let kind = if msgtype == "m.emote" { MessageKind::Emote } else { MessageKind::Text };
                    let mentions = c["m.mentions"]["user_ids"]
                        .as_array()
                        .map(|us| us.iter().filter_map(Value::as_str).map(causeway_core::Mention::from).collect())
                        .unwrap_or_default();
                    Body::Message { text: Text::plain(text), kind, attachments, reply_to, thread, mentions }
                }
            }
            "m.reaction" => {
                let rel = &c["m.relates_to"];
                Body::Reaction { target: rel["event_id"].as_str()?.to_string(), key: rel["key"].as_str()?.to_string(), removed: false }
            }
            "m.room.redaction" => Body::Retract { target: c["redacts"].as_str().or(e["redacts"].as_str())?.to_string(), moderated: false },
            "m.room.topic" => Body::Topic { text: c["topic"].as_str()?.to_string() },
            "m.room.member" => match c["membership"].as_str()? {
                "join" => Body::Membership(Membership::Join),
                "leave" => Body::Membership(Membership::Leave),
                _ => return None,
            },
            _ => return None,
        };
        Some(Seen { id, sender_name: sender.to_string(), body })
    }
}

/// Percent-encode one path segment.
/// Percent-encoding of a path segment or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[async_trait]
impl Peer for MatrixPeer {
    fn label(&self) -> String {
        format!("matrix {}", self.user_id)
    }
    fn capabilities(&self) -> Capabilities {
        self.caps
    }
    fn account(&self) -> Option<Account> {
        Some(Account { bridge: "matrix".into(), id: self.user_id.clone() })
    }
    /// In a room of its own with the ghost the bridge gives `to` (as its
    /// own code names it), invited with `is_direct`, as clients start one.
    async fn direct(&mut self, to: &Account, text: &str, reply_to: Option<String>) -> Result<String, String> {
        let key = causeway_core::Recipient::Account { bridge: to.bridge.clone(), id: to.id.clone() }.to_string();
        let ghost = causeway_matrix::ghost::user_id_of("causeway_", SERVER_NAME, &key)?.to_string();
        // An answer goes to the room of what it answers.
        let known = reply_to.as_ref().and_then(|r| self.direct_rooms.get(r)).or_else(|| self.dms.get(&ghost)).cloned();
        let room = match known {
            Some(r) => r,
            None => {
                let body = json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [ghost]});
                let created = self.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(body)).await?;
                let r = created["room_id"].as_str().ok_or("createRoom without room_id")?.to_string();
                self.dms.insert(ghost.clone(), r.clone());
                r
            }
        };
        let mut c = json!({"msgtype": "m.text", "body": text});
        if let Some(r) = reply_to {
            c["m.relates_to"] = json!({"m.in_reply_to": {"event_id": r}});
        }
        self.n += 1;
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/dm-{}-{}", enc(&room), self.n, causeway_core::new_id());
        let sent = self.call(reqwest::Method::PUT, &path, Some(c)).await?;
        sent["event_id"].as_str().map(str::to_string).ok_or_else(|| format!("no event id: {sent}"))
    }
    fn read_markers(&self) -> bool {
        true
    }
    /// A read receipt (`m.read`) for the event, in its conversation's room.
    async fn mark_read(&mut self, id: &str) -> Result<(), String> {
        let room = self.direct_rooms.get(id).cloned().ok_or_else(|| format!("no direct message {id} seen"))?;
        let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(id));
        self.call(reqwest::Method::POST, &path, Some(json!({}))).await.map(|_| ())
    }
    async fn next_direct(&mut self, timeout: Duration) -> Result<Seen, String> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(e) = self.direct.pop_front() {
                if e["type"] == "m.receipt" {
                    // {event id: {"m.read": {user: …}}}, by someone else.
                    let read = e["content"].as_object().and_then(|c| {
                        c.iter()
                            .find(|(_, r)| r["m.read"].as_object().is_some_and(|u| u.keys().any(|k| *k != self.user_id)))
                            .map(|(ev, _)| ev.clone())
                    });
                    if let Some(target) = read {
                        return Ok(Seen { id: String::new(), sender_name: String::new(), body: Body::Read { target } });
                    }
                    continue;
                }
                if let Some(s) = self.seen(&e)
                    && matches!(s.body, Body::Message { .. })
                {
                    return Ok(s);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            self.sync(left.min(Duration::from_secs(5))).await?;
        }
    }
    /// Matrix clients tell their user of a message whose `m.mentions` names them.
    fn pinged(&self, seen: &Seen) -> bool {
        matches!(&seen.body, Body::Message { mentions, .. } if mentions.iter().any(|m| m.who == self.user_id))
    }
    async fn act(&mut self, action: Action) -> Result<String, String> {
        match action {
            Action::Mention { text, of } => {
                // A pill with the display name, and `m.mentions`.
                let user = self.names.get(&of).cloned().ok_or_else(|| format!("nobody known to have sent {of}"))?;
                let shown = self
                    .profile(&user)
                    .await
                    .ok()
                    .and_then(|v| v["displayname"].as_str().map(str::to_string))
                    .unwrap_or_else(|| user.clone());
                let c = json!({"msgtype": "m.text", "body": format!("{shown}: {text}"), "format": "org.matrix.custom.html",
                               "formatted_body": format!("<a href=\"https://matrix.to/#/{user}\">{shown}</a>: {text}"),
                               "m.mentions": {"user_ids": [user]}});
                self.send("m.room.message", c).await
            }
            Action::Text { text, reply_to } => {
                let mut c = json!({"msgtype": "m.text", "body": text});
                if let Some(r) = reply_to {
                    c["m.relates_to"] = json!({"m.in_reply_to": {"event_id": r}});
                }
                self.send("m.room.message", c).await
            }
            Action::InThread { text, root } => {
                let c = json!({"msgtype": "m.text", "body": text,
                               "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": {"event_id": root}}});
                self.send("m.room.message", c).await
            }
            Action::Edit { target, text } => {
                let c = json!({"msgtype": "m.text", "body": format!("* {text}"),
                               "m.new_content": {"msgtype": "m.text", "body": text},
                               "m.relates_to": {"rel_type": "m.replace", "event_id": target}});
                self.send("m.room.message", c).await
            }
            Action::Retract { target } => self.redact(&target).await,
            Action::React { target, key } => {
                self.send("m.reaction", json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}})).await
            }
            Action::File { attachment, caption } => {
                let bytes = super::fetch(&attachment.url).await?;
                let mime = attachment.mime.clone().unwrap_or_else(|| "application/octet-stream".into());
                let mxc = self.upload(bytes.clone(), &mime).await?;
                let msgtype = if mime.starts_with("image/") { "m.image" } else { "m.file" };
                let c = json!({"msgtype": msgtype, "body": caption, "filename": attachment.name.unwrap_or_else(|| "file".into()),
                               "url": mxc, "info": {"mimetype": mime, "size": bytes.len()}});
                self.send("m.room.message", c).await
            }
            Action::Presence { show, status } => {
                let p = match show {
                    Show::Online => "online",
                    Show::Offline => "offline",
                    _ => "unavailable",
                };
                self.set_presence(p, status.as_deref()).await?;
                Ok(String::new())
            }
            Action::Typing { active } => {
                let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&self.room_id), enc(&self.user_id));
                self.call(reqwest::Method::PUT, &path, Some(json!({"typing": active, "timeout": 30000}))).await?;
                Ok(String::new())
            }
            Action::Topic { text } => {
                let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&self.room_id));
                let v = self.call(reqwest::Method::PUT, &path, Some(json!({"topic": text}))).await?;
                Ok(v["event_id"].as_str().unwrap_or_default().to_string())
            }
            Action::Leave => self.leave().await.map(|()| String::new()),
            Action::Join => {
                self.call(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{}", enc(&self.room_id)), Some(json!({}))).await?;
                Ok(String::new())
            }
        }
    }
    /// The event as the homeserver has it, pushed again in a new
    /// transaction (a homeserver retrying after a lost answer).
    async fn redeliver(&mut self, id: &str) -> Result<bool, String> {
        let Some(url) = self.appservice.clone() else { return Ok(false) };
        let mut event =
            self.call(reqwest::Method::GET, &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&self.room_id), enc(id)), None).await?;
        event["room_id"] = json!(self.room_id);
        let txn = format!("again-{}", causeway_core::new_id());
        let r = self
            .http
            .put(format!("{url}/_matrix/app/v1/transactions/{txn}"))
            .bearer_auth("hs-secret-token")
            .json(&json!({"events": [event]}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("the transaction was answered {}", r.status()));
        }
        Ok(true)
    }
    async fn next(&mut self, timeout: Duration) -> Result<Seen, String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Presence first: it comes outside the timeline.
            if let Some(p) = self.presence.pop_front() {
                let user = p["sender"].as_str().unwrap_or_default();
                if user != self.user_id {
                    let show = match p["content"]["presence"].as_str() {
                        Some("online") => Show::Online,
                        Some("unavailable") => Show::Away,
                        _ => Show::Offline,
                    };
                    let status = p["content"]["status_msg"].as_str().map(str::to_string);
                    return Ok(Seen { id: String::new(), sender_name: user.to_string(), body: Body::Presence { show, status } });
                }
                continue;
            }
            if let Some(e) = self.buffered.pop_front() {
                if let Some(s) = self.seen(&e) {
                    return Ok(s);
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            self.sync(left.min(Duration::from_secs(5))).await?;
        }
    }
    async fn fetch(&mut self, url: &str) -> Result<Vec<u8>, String> {
        let path = url.strip_prefix("mxc://").ok_or_else(|| format!("{url} is not an mxc URI"))?;
        let resp = self
            .http
            .get(format!("{}/_matrix/client/v1/media/download/{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        Ok(resp.bytes().await.map_err(|e| e.to_string())?.to_vec())
    }
}

/// Make `user` a moderator of `room` (done as the bridge's own user, the
/// room's creator).
pub async fn promote(synapse: &Synapse, room: &str, user: &str) {
    change_power_levels(synapse, room, |levels| levels["users"][user] = json!(50)).await;
}

/// Let everyone in `room` set its topic (without making them moderators).
pub async fn open_topic(synapse: &Synapse, room: &str) {
    change_power_levels(synapse, room, |levels| levels["events"]["m.room.topic"] = json!(0)).await;
}

/// Change `room`'s `m.room.power_levels` with `change`, as the bridge's
/// own user (the room's creator).
async fn change_power_levels(synapse: &Synapse, room: &str, change: impl FnOnce(&mut Value)) {
    let url =
        format!("{}/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", synapse.url(), room.replace('!', "%21").replace(':', "%3A"));
    let client = reqwest::Client::new();
    let mut levels: Value = client.get(&url).bearer_auth("as-secret-token").send().await.unwrap().json().await.unwrap();
    change(&mut levels);
    let r = client.put(&url).bearer_auth("as-secret-token").json(&levels).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}
