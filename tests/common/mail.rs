//! A real Postfix + Dovecot (tests/peers/mail.sh) and real mail clients
//! (Python's smtplib and imaplib, tests/peers/mail_client.py).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use causeway_core::conformance::{Action, Peer, Seen};
use causeway_core::{Attachment, Body, Capabilities, Text};
use mail_parser::{MessageParser, MimeHeaders};

use super::free_port;

pub const LIST: &str = "bridge+ops@mail.test";

fn peers(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(file)
}

/// Postfix and Dovecot on loopback, stopped when dropped.
pub struct MailServer {
    pub dir: tempfile::TempDir,
    pub smtp: u16,
    pub imap: u16,
    lmtp: u16,
    auth: u16,
    /// Submission: SMTP AUTH required, `Authentication-Results` written.
    pub submit: u16,
}

impl MailServer {
    pub fn start() -> MailServer {
        let m = MailServer {
            dir: tempfile::tempdir().unwrap(),
            smtp: free_port(),
            imap: free_port(),
            lmtp: free_port(),
            auth: free_port(),
            submit: free_port(),
        };
        let out = Command::new("bash")
            .arg(peers("mail.sh"))
            .arg("start")
            .arg(m.dir.path())
            .args([m.smtp, m.imap, m.lmtp, m.auth, m.submit].map(|p| p.to_string()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mail servers did not start:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        m
    }

    pub fn stop_dovecot(&self) {
        let out = Command::new("bash").arg(peers("mail.sh")).arg("stop-dovecot").arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn start_dovecot(&self) {
        let out = Command::new("bash").arg(peers("mail.sh")).arg("start-dovecot").arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// The `bridges.<name>` section for Causeway's email bridge against these servers.
    pub fn bridge_config(&self, lists: &str) -> String {
        format!(
            "{{ type: email, url: \"http://127.0.0.1:{{port}}/bridges/mail\", attachments_dir: \"{{dir}}/attachments\",
               imap: {{ server: \"127.0.0.1:{}\", tls: none, username: bridge, password: pw, poll_interval: 5s }},
               smtp: {{ server: \"127.0.0.1:{}\", tls: none }},
               policy: {{ allow: [partner.example] }}, {},
               lists: {{ {lists} }} }}",
            self.imap,
            self.smtp,
            super::FETCH_ALLOW
        )
    }

    /// Send a raw mail from `from` to `to` (smtplib).
    pub fn send(&self, from: &str, to: &[&str], raw: &str) {
        self.send_with(&["send", &self.smtp.to_string()], from, to, raw)
    }

    /// Send a raw mail on the submission port, logged in as `user`.
    pub fn submit(&self, user: &str, from: &str, to: &[&str], raw: &str) {
        self.send_with(&["submit", &self.submit.to_string(), user], from, to, raw)
    }

    /// Put a raw mail straight into `user`'s `mailbox` (IMAP APPEND), as
    /// anyone with access to the mailbox can, past the SMTP server's checks.
    pub fn append(&self, user: &str, mailbox: &str, raw: &[u8]) {
        let mut child = Command::new(python())
            .arg(peers("mail_client.py"))
            .args(["append", &self.imap.to_string(), user, mailbox])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(raw).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "imaplib: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn send_with(&self, how: &[&str], from: &str, to: &[&str], raw: &str) {
        let python = python();
        let mut child = Command::new(python)
            .arg(peers("mail_client.py"))
            .args(how)
            .args([from, &to.join(",")])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(raw.replace('\n', "\r\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "smtplib: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Every mail in `user`'s `mailbox` (imaplib), as (uid, raw bytes).
    pub fn fetch(&self, user: &str, mailbox: &str) -> Vec<(u32, Vec<u8>)> {
        fetch_mailbox(self.imap, user, mailbox)
    }

    /// Wait until `user`'s `mailbox` holds mail `want` accepts; returns it.
    pub async fn wait_for(&self, user: &str, mailbox: &str, timeout: Duration, want: impl Fn(&mail_parser::Message) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            for (_, raw) in self.fetch(user, mailbox) {
                if MessageParser::default().parse(&raw).is_some_and(|m| want(&m)) {
                    return raw;
                }
            }
            if Instant::now() >= deadline {
                let held: Vec<String> = self
                    .fetch(user, mailbox)
                    .iter()
                    .filter_map(|(_, raw)| MessageParser::default().parse(raw))
                    .map(|m| format!("{:?}: {:?}", m.subject().unwrap_or_default(), m.body_text(0).unwrap_or_default()))
                    .collect();
                panic!("no such mail for {user} in {mailbox} within {timeout:?}; it holds {held:?}\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub fn log(&self) -> String {
        let p = std::fs::read_to_string(self.dir.path().join("postfix.log")).unwrap_or_default();
        let d = std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default();
        let tail = |s: &str| s.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        format!("--- postfix ---\n{}\n--- dovecot ---\n{}", tail(&p), tail(&d))
    }
}

impl MailServer {
    /// Every line Postfix and Dovecot logged about the mail with
    /// `message_id` (Postfix's by its queue ids), and their warnings and errors.
    pub fn trace(&self, message_id: &str) -> String {
        let p = std::fs::read_to_string(self.dir.path().join("postfix.log")).unwrap_or_default();
        let d = std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default();
        let needle = format!("<{message_id}>");
        let queue_ids: Vec<&str> =
            p.lines().filter(|l| l.contains(&needle)).filter_map(|l| l.split("]: ").nth(1).and_then(|r| r.split(':').next())).collect();
        let bad = |l: &str| ["warning", "error", "fatal", "panic", "Error", "Warning", "Fatal"].iter().any(|w| l.contains(w));
        let lines: Vec<&str> = p
            .lines()
            .filter(|l| l.contains(&needle) || queue_ids.iter().any(|q| l.contains(&format!("{q}:"))) || bad(l))
            .chain(d.lines().filter(|l| l.contains(&needle) || bad(l)))
            .collect();
        format!(
            "--- what Postfix and Dovecot said of <{message_id}> (queue ids {queue_ids:?}), and their warnings ---\n{}",
            lines.join("\n")
        )
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(peers("mail.sh")).arg("stop").arg(self.dir.path()).output();
    }
}

/// Every mail in `user`'s `mailbox` on the IMAP server at `port` (imaplib).
pub fn fetch_mailbox(port: u16, user: &str, mailbox: &str) -> Vec<(u32, Vec<u8>)> {
    let out = Command::new(python()).arg(peers("mail_client.py")).args(["fetch", &port.to_string(), user, mailbox]).output().unwrap();
    assert!(out.status.success(), "imaplib: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| (v["uid"].as_u64().unwrap_or(0) as u32, BASE64.decode(v["raw"].as_str().unwrap_or("")).unwrap_or_default()))
        .collect()
}

fn python() -> String {
    // Python's standard library is all the mail clients need.
    "python3".into()
}

/// A person with a mail client: writes to the list, reads their INBOX.
pub struct MailPeer<'a> {
    pub server: &'a MailServer,
    pub user: &'static str,
    pub name: &'static str,
    seen: HashSet<u32>,
    /// Attachment link (cid:…) → bytes, for `fetch`.
    files: HashMap<String, Vec<u8>>,
    /// The Message-IDs shown so far.
    ids: HashSet<String>,
    /// What was sent, by Message-ID (for redelivery).
    sent: HashMap<String, String>,
    n: u32,
}

impl<'a> MailPeer<'a> {
    pub fn new(server: &'a MailServer, user: &'static str, name: &'static str) -> Self {
        MailPeer { server, user, name, seen: HashSet::new(), files: HashMap::new(), ids: HashSet::new(), sent: HashMap::new(), n: 0 }
    }

    fn address(&self) -> String {
        format!("{}@mail.test", self.user)
    }

    fn next_id(&mut self) -> String {
        self.n += 1;
        format!("{}-{}-{}@mail.test", self.user, self.n, causeway_core::new_id())
    }

    /// Send a mail to the list; returns its Message-ID.
    pub fn mail(&mut self, subject: &str, body: &str, in_reply_to: Option<&str>, file: Option<(&str, &str, &[u8])>) -> String {
        let id = self.next_id();
        let mut headers =
            format!("From: {} <{}>\nTo: {LIST}\nSubject: {subject}\nMessage-ID: <{id}>\nMIME-Version: 1.0\n", self.name, self.address());
        if let Some(r) = in_reply_to {
            headers.push_str(&format!("In-Reply-To: <{r}>\nReferences: <{r}>\n"));
        }
        let raw = match file {
            None => format!("{headers}Content-Type: text/plain; charset=utf-8\n\n{body}\n"),
            Some((name, mime, bytes)) => {
                let b64 = BASE64.encode(bytes);
                format!(
                    "{headers}Content-Type: multipart/mixed; boundary=BOUNDARY\n\n--BOUNDARY\nContent-Type: text/plain; charset=utf-8\n\n{body}\n--BOUNDARY\nContent-Type: {mime}\nContent-Disposition: attachment; filename=\"{name}\"\nContent-Transfer-Encoding: base64\n\n{b64}\n--BOUNDARY--\n"
                )
            }
        };
        self.server.send(&self.address(), &[LIST], &raw);
        self.sent.insert(id.clone(), raw);
        id
    }
}

/// The email bridge with the tests' list, for what it declares.
fn bridge() -> std::sync::Arc<dyn causeway_core::Bridge> {
    super::declared(serde_json::json!({"type": "email", "url": "http://127.0.0.1:9/bridges/mail",
        "imap": {"server": "127.0.0.1:143", "tls": "none", "username": "u", "password": "p"},
        "smtp": {"server": "127.0.0.1:25", "tls": "none"}, "lists": {LIST: {}}}))
}

#[async_trait]
impl Peer for MailPeer<'_> {
    fn label(&self) -> String {
        format!("mail {}", self.user)
    }
    fn capabilities(&self) -> Capabilities {
        bridge().capabilities(LIST)
    }
    /// Mail pings nobody; it names them as `@Name` (the name the other
    /// side knows: this mailbox's, or the directory's, both starting with
    /// the first name).
    fn pinged(&self, seen: &Seen) -> bool {
        let first = self.name.split_whitespace().next().unwrap_or(self.name);
        matches!(&seen.body, Body::Message { text, .. } if text.plain.contains(&format!("@{first}")))
    }
    /// Whether the email bridge leaves reactions out (`reactions: drop`, its default).
    fn reaction_notices(&self) -> bool {
        bridge().degrade_for(LIST, "reaction", causeway_core::Degrade::Notice) != causeway_core::Degrade::Drop
    }
    async fn act(&mut self, action: Action) -> Result<String, String> {
        match action {
            Action::Text { text, reply_to } => Ok(self.mail("conformance", &text, reply_to.as_deref(), None)),
            Action::File { attachment, caption } => {
                let bytes = super::fetch(&attachment.url).await?;
                let mime = attachment.mime.clone().unwrap_or_else(|| "application/octet-stream".into());
                let name = attachment.name.clone().unwrap_or_else(|| "file".into());
                Ok(self.mail("a file", &caption, None, Some((&name, &mime, &bytes))))
            }
            other => Err(format!("mail cannot {other:?}")),
        }
    }
    async fn next(&mut self, timeout: Duration) -> Result<Seen, String> {
        let deadline = Instant::now() + timeout;
        loop {
            for (uid, raw) in self.server.fetch(self.user, "INBOX") {
                if !self.seen.insert(uid) {
                    continue;
                }
                let Some(m) = MessageParser::default().parse(&raw) else { continue };
                let id = m.message_id().unwrap_or_default().to_string();
                // A mail sent again after a crash has the same Message-ID:
                // the same message, shown once (as mail clients that drop
                // duplicates, and Sieve's `duplicate`, do).
                if !id.is_empty() && !self.ids.insert(id.clone()) {
                    continue;
                }
                let from = m.from().and_then(|f| f.first());
                let sender_name = from.and_then(|a| a.name()).unwrap_or_default().to_string();
                let reply_to = match m.in_reply_to() {
                    mail_parser::HeaderValue::Text(t) => Some(t.to_string()),
                    mail_parser::HeaderValue::TextList(l) => l.first().map(|t| t.to_string()),
                    _ => None,
                };
                let mut attachments = Vec::new();
                for (i, a) in m.attachments().enumerate() {
                    let url = format!("cid:{uid}-{i}");
                    self.files.insert(url.clone(), a.contents().to_vec());
                    attachments.push(Attachment { url, name: a.attachment_name().map(str::to_string), mime: None, size: None });
                }
                let text = m.body_text(0).map(|t| t.to_string()).unwrap_or_default();
                return Ok(Seen {
                    id,
                    sender_name,
                    body: Body::Message {
                        text: Text::plain(text),
                        kind: Default::default(),
                        attachments,
                        reply_to,
                        thread: None,
                        mentions: vec![],
                    },
                });
            }
            if Instant::now() > deadline {
                return Err("timed out".into());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    async fn fetch(&mut self, url: &str) -> Result<Vec<u8>, String> {
        self.files.get(url).cloned().ok_or_else(|| format!("no attachment {url}"))
    }
    /// The same mail delivered again (as mail systems do after a lost answer).
    async fn redeliver(&mut self, id: &str) -> Result<bool, String> {
        let raw = self.sent.get(id).cloned().ok_or_else(|| format!("no mail {id} was sent"))?;
        self.server.send(&self.address(), &[LIST], &raw);
        Ok(true)
    }
}
