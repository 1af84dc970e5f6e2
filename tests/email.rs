//! The email bridge against a real Postfix + Dovecot (tests/peers/mail.sh)
//! with real mail clients (smtplib, imaplib), through the real binary.
#![cfg(all(feature = "webhook", feature = "email"))]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use causeway_core::conformance;
use common::mail::{LIST, MailPeer, MailServer};
use common::{Daemon, Hook, Mode, WebhookPeer, post};
use mail_parser::{HeaderValue, MessageParser};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn config(mail: &MailServer, hook: &str, lists: &str) -> String {
    format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}" }}
outbox: {{ retry_initial: 100ms, retry_max: 2s }}
bridges:
  hooks:
    type: webhook
    endpoints:
      w: {{ inbound: {{ token: tw }}, outbound: {{ url: "{hook}" }} }}
  mail: {bridge}
portals:
  - id: ops
    links: [{{ bridge: hooks, room: w }}, {{ bridge: mail, room: "{LIST}" }}]
people:
  - id: alice
    name: Alice Liddell
    accounts: {{ mail: alice@mail.test }}
  - id: dave
    name: Dave Bowman
    accounts: {{ hooks: dave }}
"#,
        bridge = mail.bridge_config(lists)
    )
}

const LIST_NOW: &str = r#""bridge+ops@mail.test": { name: Ops, subscribers: [alice, bob@mail.test] }"#;

async fn start(mail: &MailServer, hook: &Hook, lists: &str) -> Daemon {
    start_config(mail, &config(mail, &hook.url(), lists)).await
}

async fn start_config(mail: &MailServer, config: &str) -> Daemon {
    let d = Daemon::start(config).await;
    d.wait_up(&["mail"], T).await.unwrap_or_else(|e| panic!("email bridge not reading mail: {e}\n{}", mail.log()));
    d
}

fn text_of(h: &HeaderValue) -> Option<String> {
    match h {
        HeaderValue::Text(t) => Some(t.to_string()),
        HeaderValue::TextList(l) => l.first().map(|t| t.to_string()),
        _ => None,
    }
}

/// A subscriber's mail reaches the room cleaned, with its sender and its
/// attachment; the answer comes back as list mail threaded under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_reaches_the_room_and_the_answer_threads_under_it() {
    let mail = MailServer::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    // Each edit a mail of its own (the default gathers them: tests/security.rs).
    let each = config(&mail, &hook.url(), LIST_NOW)
        .replace("policy: { allow: [partner.example] }", "policy: { allow: [partner.example] }, changes: each");
    assert!(each.contains("changes: each"));
    let d = start_config(&mail, &each).await;
    let mut alice = MailPeer::new(&mail, "alice", "Alice L.");
    let pdf = b"%PDF-1.4 quarterly numbers".to_vec();
    let body = "db-1 is at 91%, see the report.\n\nOn Mon, Bob wrote:\n> how is db-1?\n\n-- \nAlice\nOps on call";
    let original = alice.mail("Disk full on db-1", body, None, Some(("report.pdf", "application/pdf", &pdf)));

    let got = loop {
        let got = hook.next(T).await;
        if got.json["type"] == "message" {
            break got;
        }
    };
    let j = &got.json;
    assert_eq!(j["sender"]["name"], "Alice Liddell", "the directory's name: {j}");
    assert_eq!(j["sender"]["person"], "alice");
    assert_eq!(j["text"], "Disk full on db-1\n\ndb-1 is at 91%, see the report.", "subject first, quote and signature gone");
    assert!(j["html"].as_str().unwrap().contains("<details>"), "the quote kept, collapsed: {j}");
    let link = j["attachments"][0]["url"].as_str().unwrap();
    assert_eq!(common::fetch(link).await.unwrap(), pdf, "the attachment, as sent");
    assert_eq!(j["attachments"][0]["name"], "report.pdf");

    // Dave answers in the room: a list mail to every subscriber, threaded.
    let answer = json!({"id": "dave-1", "sender": {"id": "dave"}, "text": "Cleaning up now.", "reply_to": got.id});
    assert_eq!(post(&reqwest::Client::new(), &d.url("/bridges/hooks/w"), "tw", &answer).await.0, 202);
    for user in ["alice", "bob"] {
        let raw = mail.wait_for(user, "INBOX", T, |m| m.body_text(0).is_some_and(|b| b.contains("Cleaning up now."))).await;
        let m = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(text_of(m.in_reply_to()).as_deref(), Some(original.as_str()), "In-Reply-To the original");
        assert!(text_of(m.references()).is_some_and(|r| r.contains(&original)));
        assert_eq!(m.subject(), Some("Re: Disk full on db-1"));
        let from = m.from().unwrap().first().unwrap();
        assert_eq!((from.name(), from.address()), (Some("Dave Bowman (via Hooks)"), Some(LIST)));
        assert_eq!(m.reply_to().unwrap().first().unwrap().address(), Some(LIST));
        let raw = String::from_utf8_lossy(&raw);
        for header in ["List-Id: Ops <bridge+ops.mail.test>", "List-Unsubscribe: <mailto:", "Auto-Submitted: auto-generated"] {
            assert!(raw.contains(header), "{header} missing:\n{raw}");
        }
    }

    // Mail cannot change a sent mail: with `changes: each` an edit becomes a
    // short follow-up, in the same thread.
    let answer_id = {
        let raw = mail.wait_for("alice", "INBOX", T, |m| m.body_text(0).is_some_and(|b| b.contains("Cleaning up now."))).await;
        MessageParser::default().parse(&raw).unwrap().message_id().unwrap().to_string()
    };
    let edit = json!({"sender": {"id": "dave"}, "type": "edit", "target": "dave-1", "text": "Cleaning up now, done by noon."});
    assert_eq!(post(&reqwest::Client::new(), &d.url("/bridges/hooks/w"), "tw", &edit).await.0, 202);
    let raw =
        mail.wait_for("alice", "INBOX", T, |m| m.body_text(0).is_some_and(|b| b.contains("(edited) Cleaning up now, done by noon."))).await;
    let m = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(text_of(m.in_reply_to()).as_deref(), Some(answer_id.as_str()), "the follow-up answers the edited mail");
}

/// Digest subscribers get one mail for many messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mode_gathers_messages_into_one_mail() {
    let mail = MailServer::start();
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let lists = r#""bridge+ops@mail.test": { name: Ops, subscribers: [alice, { address: carol@mail.test, digest: 4s }] }"#;
    let d = start(&mail, &hook, lists).await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let msg = json!({"sender": {"id": "dave"}, "text": format!("update #{i}")});
        assert_eq!(post(&client, &d.url("/bridges/hooks/w"), "tw", &msg).await.0, 202);
    }
    let raw = mail.wait_for("carol", "INBOX", T, |m| m.subject().is_some_and(|s| s.contains("Digest"))).await;
    let m = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(m.subject(), Some("[Ops] Digest: 5 messages"));
    let body = m.body_text(0).unwrap();
    for i in 0..5 {
        assert!(body.contains(&format!("update #{i}")), "{body}");
    }
    // Carol got that one mail; Alice got the five as they came.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(mail.fetch("carol", "INBOX").len(), 1);
    assert_eq!(mail.fetch("alice", "INBOX").len(), 5);
}

/// With `require_authentication`, only mail the receiving server vouches
/// for is taken. The real Postfix writes `Authentication-Results` for a
/// sender who logged in on its submission port, and removes any header
/// claiming to be its own that a stranger brings to its SMTP port: a
/// forged From, with or without a forged verdict, is quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_from_is_quarantined_when_authentication_is_required() {
    let mail = MailServer::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let strict = config(&mail, &hook.url(), LIST_NOW)
        .replace("policy: { allow: [partner.example] }", "policy: { authserv_id: smtp.mail.test, require_authentication: true }");
    let d = start_config(&mail, &strict).await;
    let mail_from = |subject: &str, extra: &str| {
        format!(
            "From: Alice <alice@mail.test>\nTo: {LIST}\nSubject: {subject}\nMessage-ID: <{subject}@mail.test>\n{extra}\n{subject} body\n"
        )
    };
    mail.submit("alice", "alice@mail.test", &[LIST], &mail_from("signed-in", ""));
    // A stranger on the SMTP port, with a verdict of its own making.
    mail.send(
        "alice@mail.test",
        &[LIST],
        &mail_from("forged-verdict", "Authentication-Results: smtp.mail.test; auth=pass smtp.auth=alice@mail.test\n"),
    );
    mail.send("alice@mail.test", &[LIST], &mail_from("no-verdict", ""));
    // Bob is logged in, but not as alice.
    mail.submit("bob", "bob@mail.test", &[LIST], &mail_from("bob-as-alice", ""));
    mail.submit("alice", "alice@mail.test", &[LIST], &mail_from("signed-in-again", ""));
    let mut texts = Vec::new();
    while !texts.iter().any(|t: &String| t.contains("signed-in-again")) {
        let got = hook.next(T).await;
        if got.json["type"] == "message" {
            texts.push(got.json["text"].as_str().unwrap_or_default().to_string());
        }
    }
    texts.extend(
        hook.drain(Duration::from_secs(2))
            .await
            .into_iter()
            .filter(|r| r.json["type"] == "message")
            .map(|r| r.json["text"].as_str().unwrap_or_default().to_string()),
    );
    assert_eq!(texts.len(), 2, "only what alice sent logged in: {texts:?}");
    assert!(texts[0].contains("signed-in body"), "{texts:?}");
    let quarantined: Vec<String> =
        mail.fetch("bridge", "Quarantine").into_iter().map(|(_, m)| String::from_utf8_lossy(&m).to_string()).collect();
    assert_eq!(quarantined.len(), 3, "{quarantined:?}");
    for subject in ["forged-verdict", "no-verdict", "bob-as-alice"] {
        assert!(quarantined.iter().any(|m| m.contains(&format!("Subject: {subject}"))), "{subject} is kept aside");
    }
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="mail",reason="policy""#).await, 3.0, "{}", d.log());
}

/// A mail nested fifty thousand levels deep (messages in messages), put
/// into the bridge's mailbox past the SMTP server (which refuses more than
/// 100 levels), is quarantined without being parsed; the next mail is
/// taken as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_nested_fifty_thousand_levels_deep_is_quarantined() {
    let mail = MailServer::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let d = start(&mail, &hook, LIST_NOW).await;
    let deep = format!(
        "From: alice@mail.test\r\nTo: {LIST}\r\nSubject: deep\r\nMessage-ID: <deep@mail.test>\r\nMIME-Version: 1.0\r\n{}Content-Type: text/plain\r\n\r\nat the bottom\r\n",
        "Content-Type: message/rfc822\r\n\r\n".repeat(50_000)
    );
    mail.append("bridge", "INBOX", deep.as_bytes());
    mail.send(
        "alice@mail.test",
        &[LIST],
        &format!("From: alice@mail.test\nTo: {LIST}\nSubject: after\nMessage-ID: <after@mail.test>\n\nstill here\n"),
    );
    let got = loop {
        let got = hook.next(T).await;
        if got.json["type"] == "message" {
            break got;
        }
    };
    assert!(got.json["text"].as_str().unwrap_or_default().contains("still here"), "{}\n{}", got.json, d.log());
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="mail",reason="too_deep""#).await, 1.0, "{}", d.log());
    let quarantined = mail.fetch("bridge", "Quarantine");
    assert_eq!(quarantined.len(), 1);
    assert!(String::from_utf8_lossy(&quarantined[0].1).contains("Subject: deep"));
}

/// Auto-replies and bounces are never taken (no loops); a sender outside
/// the policy is refused, counted and kept in the quarantine folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_replies_bounces_and_strangers_are_not_taken() {
    let mail = MailServer::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let d = start(&mail, &hook, LIST_NOW).await;
    // An out-of-office answer to the list, and a bounce.
    mail.send("alice@mail.test", &[LIST], "From: Alice <alice@mail.test>\nTo: bridge+ops@mail.test\nSubject: Out of office\nAuto-Submitted: auto-replied\nMessage-ID: <ooo@mail.test>\n\nI am away.\n");
    mail.send(
        "",
        &[LIST],
        "From: Mail Delivery System <MAILER-DAEMON@mail.test>\nTo: bridge+ops@mail.test\nSubject: Undelivered Mail\nMessage-ID: <b1@mail.test>\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=R\n\n--R\nContent-Type: text/plain\n\nbounced\n--R--\n",
    );
    // A stranger, and someone from an allowed domain.
    mail.send(
        "eve@mail.test",
        &[LIST],
        "From: Eve <eve@evil.example>\nTo: bridge+ops@mail.test\nSubject: cheap pills\nMessage-ID: <eve@evil.example>\n\nbuy\n",
    );
    mail.send(
        "bob@mail.test",
        &[LIST],
        "From: Pat <pat@partner.example>\nTo: bridge+ops@mail.test\nSubject: hello\nMessage-ID: <pat@partner.example>\n\nfrom a partner\n",
    );
    let got = loop {
        let got = hook.next(T).await;
        if got.json["type"] == "message" {
            break got;
        }
    };
    assert!(got.json["text"].as_str().unwrap().contains("from a partner"), "only the partner's mail: {}", got.json);
    let rest: Vec<_> = hook.drain(Duration::from_secs(2)).await.into_iter().filter(|r| r.json["type"] == "message").collect();
    assert!(rest.is_empty(), "{:?}", rest.iter().map(|r| &r.json).collect::<Vec<_>>());
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="mail",reason="auto_reply""#).await, 1.0);
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="mail",reason="bounce""#).await, 1.0);
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="mail",reason="policy""#).await, 1.0);
    let quarantined = mail.fetch("bridge", "Quarantine");
    assert_eq!(quarantined.len(), 1, "the stranger's mail is kept aside");
    assert!(String::from_utf8_lossy(&quarantined[0].1).contains("cheap pills"));
    // Nothing went out in answer to any of them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let to_alice: Vec<_> = mail.fetch("alice", "INBOX").into_iter().map(|(_, r)| String::from_utf8_lossy(&r).to_string()).collect();
    assert!(to_alice.iter().all(|m| m.contains("from a partner")), "{to_alice:?}");
}

/// Causeway killed and Dovecot stopped in the middle of 200 mails: each
/// mail enters the portal exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_of_causeway_and_dovecot_mid_stream_take_each_mail_once() {
    const N: usize = 200;
    let mail = MailServer::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = start(&mail, &hook, LIST_NOW).await;
    let smtp = mail.smtp;
    let dir = mail.dir.path().to_path_buf();
    let sender = std::thread::spawn(move || {
        let _ = dir;
        for i in 0..N {
            let raw = format!("From: alice@mail.test\nTo: {LIST}\nSubject: m {i}\nMessage-ID: <stream-{i}@mail.test>\n\nmail #{i}\n")
                .replace('\n', "\r\n");
            let mut child = std::process::Command::new("python3")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/mail_client.py"))
                .args(["send", &smtp.to_string(), "alice@mail.test", LIST])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(raw.as_bytes()).unwrap();
            assert!(child.wait().unwrap().success());
        }
    });
    let mut keys: HashMap<usize, HashSet<String>> = HashMap::new();
    let record = |got: common::Received, keys: &mut HashMap<usize, HashSet<String>>| {
        if let Some(n) = got.json["text"].as_str().and_then(|t| t.rsplit("mail #").next()).and_then(|n| n.trim().parse().ok()) {
            keys.entry(n).or_default().insert(got.key);
        }
    };
    while keys.len() < 40 {
        record(hook.next(T).await, &mut keys);
    }
    d.kill();
    let after_kill = keys.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    d.restart().await;
    while keys.len() < after_kill + 40 {
        record(hook.next(T).await, &mut keys);
    }
    mail.stop_dovecot();
    tokio::time::sleep(Duration::from_secs(3)).await;
    mail.start_dovecot();
    sender.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while keys.len() < N {
        if Instant::now() >= deadline {
            let missing: Vec<usize> = (0..N).filter(|i| !keys.contains_key(i)).collect();
            // Where each was lost: never taken from the mailbox, or taken
            // (archived) and not delivered.
            let archived = common::archived_texts(&d, "ops").await;
            let taken: Vec<usize> =
                missing.iter().copied().filter(|i| archived.iter().any(|t| t.trim_end().ends_with(&format!("mail #{i}")))).collect();
            let in_box = mail.fetch("bridge", "INBOX").len();
            let traces: Vec<String> = missing.iter().map(|i| mail.trace(&format!("stream-{i}@mail.test"))).collect();
            panic!(
                "{} of {N} mails arrived; missing {missing:?} (archived, so taken and not delivered: {taken:?}; {in_box} mails in the bridge's box)\n{}\n{}\n{}",
                keys.len(),
                d.log(),
                mail.log(),
                traces.join("\n")
            );
        }
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_secs(5), hook.rx.recv()).await {
            record(got, &mut keys);
        }
    }
    for got in hook.drain(Duration::from_secs(3)).await {
        record(got, &mut keys);
    }
    let doubled: Vec<_> = keys.iter().filter(|(_, k)| k.len() > 1).collect();
    assert!(doubled.is_empty(), "taken twice: {doubled:?}");
    assert_eq!(keys.len(), N);
    assert_eq!(common::archived_texts(&d, "ops").await.len(), N, "each mail archived once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_conformance_with_a_webhook() {
    let mail = MailServer::start();
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = start(&mail, &hook, LIST_NOW).await;
    let mut alice = MailPeer::new(&mail, "alice", "Alice L.");
    let mut web = WebhookPeer::new("w", d.url("/bridges/hooks/w"), "tw", hook);
    let file = common::serve_file().await;
    let opts = conformance::Options { timeout: T, file: Some(file), ..Default::default() };
    let mut causeway = common::Restarts { daemon: &mut d, bridges: &["mail", "hooks"] };
    let result = conformance::run(&mut web, &mut alice, &mut causeway, &opts).await;
    let report = result.unwrap_or_else(|e| panic!("{e}\n--- causeway ---\n{}\n{}", d.log(), mail.log()));
    // Text, reply, file and what a bridge must not do (hostile text, doubles,
    // echoes; foreign changes from the webhook) both ways; what mail cannot
    // show is skipped.
    assert_eq!(report.passed.len(), 16, "{report}");
    assert_eq!(report.skipped.len(), 19, "{report}");
}

/// A subscriber the mail server refuses for good holds up nobody else, and
/// a retry does not send the others a second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscriber_holds_up_nobody() {
    let mail = MailServer::start();
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let lists = r#""bridge+ops@mail.test": { name: Ops, subscribers: [nobody@mail.test, alice, bob@mail.test] }"#;
    let d = start(&mail, &hook, lists).await;
    let msg = json!({"sender": {"id": "dave"}, "text": "to everyone who can have it"});
    assert_eq!(post(&reqwest::Client::new(), &d.url("/bridges/hooks/w"), "tw", &msg).await.0, 202);
    for user in ["alice", "bob"] {
        mail.wait_for(user, "INBOX", T, |m| m.body_text(0).is_some_and(|b| b.contains("to everyone"))).await;
    }
    let deadline = Instant::now() + T;
    while d.metric("causeway_inbound_rejected_total", r#"bridge="mail",reason="subscriber_refused""#).await != 1.0 {
        assert!(Instant::now() < deadline, "{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A dead letter of that subscriber alone, which the sender's room hears of.
    assert_eq!(d.metric("causeway_dead_letters_total", r#"bridge="mail""#).await, 1.0);
    let dead: serde_json::Value = serde_json::from_slice(&d.cli(&["outbox", "--json", "dead"]).stdout).unwrap();
    let rows = dead.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{dead}");
    assert_eq!(rows[0]["recipient"], "nobody@mail.test", "{dead}");
    let mut hook = hook;
    let notice = hook.next(T).await;
    assert!(notice.json["text"].as_str().unwrap_or_default().contains("(nobody@mail.test)"), "{}", notice.json);
    // Retried: for that subscriber only (refused again), nobody else gets a second copy.
    let out = d.cli(&["outbox", "retry", rows[0]["delivery_id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + T;
    while d.metric("causeway_delivery_failures_total", r#"bridge="mail",reason="permanent""#).await < 1.0 {
        assert!(Instant::now() < deadline, "the retry was not tried:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mail.fetch("alice", "INBOX").len(), 1, "one copy");
    assert_eq!(mail.fetch("bob", "INBOX").len(), 1, "one copy");
    let dead: serde_json::Value = serde_json::from_slice(&d.cli(&["outbox", "--json", "dead"]).stdout).unwrap();
    assert_eq!(dead.as_array().unwrap().len(), 1, "dead again, once: {dead}");
}
