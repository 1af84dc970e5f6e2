//! The benchmark's real clients: an XMPP client (slixmpp, through
//! tests/peers/xmpp_client.py), a Matrix client (client-server API), a raw
//! SMTP sender and a webhook sender. Each receiver hands over what it sees
//! as (text, when it arrived).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio_xmpp::minidom::Element;

use crate::common::matrix::enc;

pub type Arrivals = mpsc::UnboundedReceiver<(String, Instant)>;

/// The numbered messages seen on the far side: when each first came, how
/// many came again, how many came after a higher number.
#[derive(Default)]
pub struct Tally {
    pub got: std::collections::HashMap<usize, Instant>,
    pub duplicates: usize,
    pub out_of_order: usize,
    highest: Option<usize>,
}

impl Tally {
    pub fn take(&mut self, i: usize, at: Instant) {
        if self.got.insert(i, at).is_some() {
            self.duplicates += 1;
            return;
        }
        if self.highest.is_some_and(|h| i < h) {
            self.out_of_order += 1;
        }
        self.highest = Some(self.highest.map_or(i, |h| h.max(i)));
    }
}

fn peers(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(file)
}

/// One XMPP session: stanzas written as lines, group chat bodies read back.
pub struct Xmpp {
    _child: Child,
    stdin: ChildStdin,
    /// Bodies of live group chat messages, as they arrive.
    pub arrivals: Option<Arrivals>,
    joined: mpsc::UnboundedReceiver<String>,
    n: u64,
}

impl Xmpp {
    pub async fn login(c2s: u16, user: &str) -> Xmpp {
        let python = std::process::Command::new("bash").arg(peers("python.sh")).arg("path").output().unwrap().stdout;
        let mut child = tokio::process::Command::new(String::from_utf8(python).unwrap().trim())
            .arg(peers("xmpp_client.py"))
            .arg(format!("{user}@xmpp.test"))
            .arg("pw")
            .arg("127.0.0.1")
            .arg(c2s.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the XMPP client (bash tests/peers/python.sh install)");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
            Ok(Ok(Some(l))) if l.contains("\"online\"") => {}
            other => panic!("{user} could not log in: {other:?}"),
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (joined_tx, joined) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let at = Instant::now();
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                let Some(Ok(e)) = v["stanza"].as_str().map(|x| x.parse::<Element>()) else { continue };
                if e.name() == "presence" {
                    // Our own occupant presence (status 110) means joined.
                    let me = e
                        .children()
                        .any(|x| x.name() == "x" && x.children().any(|s| s.name() == "status" && s.attr("code") == Some("110")));
                    if me {
                        let _ = joined_tx.send(e.attr("from").unwrap_or_default().to_string());
                    }
                    continue;
                }
                let live = e.name() == "message" && e.attr("type") == Some("groupchat") && !e.children().any(|c| c.name() == "delay");
                if let Some(body) = e.children().find(|c| c.name() == "body").filter(|_| live) {
                    let _ = tx.send((body.text(), at));
                }
            }
        });
        let mut x = Xmpp { _child: child, stdin, arrivals: Some(rx), joined, n: 0 };
        x.line(json!({"send": "<presence xmlns='jabber:client'/>"})).await;
        x
    }

    async fn line(&mut self, v: Value) {
        let mut l = v.to_string();
        l.push('\n');
        self.stdin.write_all(l.as_bytes()).await.unwrap();
    }

    /// Join `room` as `nick`, without history.
    pub async fn join(&mut self, room: &str, nick: &str) {
        let p = format!(
            "<presence xmlns='jabber:client' to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>"
        );
        self.line(json!({"send": p})).await;
        let want = format!("{room}/{nick}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.joined.recv()).await {
                Ok(Some(j)) if j == want => return,
                Ok(Some(_)) => {}
                _ => panic!("could not join {room} as {nick}"),
            }
        }
    }

    pub async fn say(&mut self, room: &str, text: &str) {
        self.n += 1;
        let m = format!(
            "<message xmlns='jabber:client' to='{room}' type='groupchat' id='b{}'><body>{}</body></message>",
            self.n,
            causeway_core::text::escape_html(text)
        );
        self.line(json!({"send": m})).await;
    }
}

/// One Matrix user: sends with the client-server API, reads with /sync.
pub struct Matrix {
    http: reqwest::Client,
    base: String,
    token: String,
    pub room: String,
    n: u64,
}

impl Matrix {
    pub async fn login(base: &str, user: &str) -> Matrix {
        let http = reqwest::Client::new();
        let token = crate::common::matrix::login(&http, base, user).await["access_token"].as_str().unwrap().to_string();
        Matrix { http, base: base.to_string(), token, room: String::new(), n: 0 }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    /// Create a public room with this alias (local part).
    pub async fn create_room(&mut self, alias: &str) {
        let v = self
            .call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(json!({"room_alias_name": alias, "preset": "public_chat"})))
            .await;
        self.room = v["room_id"].as_str().unwrap().to_string();
    }

    pub async fn join(&mut self, room: &str) {
        let v = self.call(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{}", enc(room)), Some(json!({}))).await;
        self.room = v["room_id"].as_str().unwrap().to_string();
    }

    pub async fn say(&mut self, text: &str) {
        self.n += 1;
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/b{}-{}", enc(&self.room), self.n, causeway_core::new_id());
        self.call(reqwest::Method::PUT, &path, Some(json!({"msgtype": "m.text", "body": text}))).await;
    }

    /// Read the room's messages from now on, as they come (a lazy-loading
    /// filter, as clients use, and long polls).
    pub async fn arrivals(&self) -> Arrivals {
        let (tx, rx) = mpsc::unbounded_channel();
        let filter = enc(r#"{"room":{"timeline":{"limit":1000},"state":{"lazy_load_members":true}},"presence":{"not_types":["*"]}}"#);
        let first = self.call(reqwest::Method::GET, &format!("/_matrix/client/v3/sync?timeout=0&filter={filter}"), None).await;
        let mut since = first["next_batch"].as_str().unwrap().to_string();
        let (http, base, token, room) = (self.http.clone(), self.base.clone(), self.token.clone(), self.room.clone());
        tokio::spawn(async move {
            loop {
                let url = format!("{base}/_matrix/client/v3/sync?timeout=30000&filter={filter}&since={}", enc(&since));
                let Ok(resp) = http.get(url).bearer_auth(&token).send().await else { return };
                let Ok(v) = resp.json::<Value>().await else { return };
                let at = Instant::now();
                let Some(next) = v["next_batch"].as_str() else { return };
                since = next.to_string();
                for e in v["rooms"]["join"][&room]["timeline"]["events"].as_array().into_iter().flatten() {
                    if e["type"] == "m.room.message"
                        && let Some(body) = e["content"]["body"].as_str()
                        && tx.send((body.to_string(), at)).is_err()
                    {
                        return;
                    }
                }
            }
        });
        rx
    }
}

/// An SMTP session that stays open, one mail after another.
pub struct Smtp {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Smtp {
    pub async fn connect(port: u16) -> Smtp {
        let (r, w) = TcpStream::connect(("127.0.0.1", port)).await.unwrap().into_split();
        let mut s = Smtp { reader: BufReader::new(r), writer: w };
        s.expect("220").await;
        s.command("EHLO bench.mail.test", "250").await;
        s
    }

    async fn expect(&mut self, code: &str) {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.unwrap();
            assert!(line.starts_with(code), "SMTP: wanted {code}, got {line:?}");
            // `250-…` continues, `250 …` ends.
            if line.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    }

    async fn command(&mut self, c: &str, code: &str) {
        self.writer.write_all(format!("{c}\r\n").as_bytes()).await.unwrap();
        self.expect(code).await;
    }

    pub async fn send(&mut self, from: &str, to: &str, subject: &str, text: &str) {
        self.command(&format!("MAIL FROM:<{from}>"), "250").await;
        self.command(&format!("RCPT TO:<{to}>"), "250").await;
        self.command("DATA", "354").await;
        let id = causeway_core::new_id();
        let mail = format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{id}@mail.test>\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n.\r\n",
            httpdate()
        );
        self.writer.write_all(mail.as_bytes()).await.unwrap();
        self.expect("250").await;
    }
}

fn httpdate() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc2822).unwrap()
}

/// Drain a reader so a pipe never fills (for senders whose echoes are not
/// wanted).
pub fn discard(mut arrivals: Arrivals) {
    tokio::spawn(async move { while arrivals.recv().await.is_some() {} });
}
