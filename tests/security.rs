//! Nobody in: what someone on a linked network can make Causeway do, tried
//! with real clients against the real servers (docs/security.md).
#![cfg(all(feature = "webhook", feature = "xmpp", feature = "matrix", feature = "email"))]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use causeway_core::conformance::{Action, Peer};
use causeway_core::{Attachment, Body};
use common::matrix::MatrixPeer;
use common::world::{ALIAS, MUC, World};
use common::xmpp::XmppPeer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);

/// A listener standing for an intranet service or a cloud metadata
/// endpoint, on 127.0.0.2: counts every connection made to it.
async fn inside() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.expect("bind 127.0.0.2");
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 6\r\n\r\nsecret").await;
        }
    });
    (addr, hits)
}

/// An ordinary-looking file server (where the tests' bridges may fetch,
/// `common::FETCH_ALLOW`) that answers every request with a redirect to `to`.
async fn redirector(to: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((common::FILES_HOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || {
        let to = to.clone();
        async move { axum::response::Redirect::temporary(&to) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// An XMPP occupant's out-of-band link to an inside address, straight or
/// through a server that redirects there: no bridge fetches it (the
/// listener gets no connection), Matrix and mail get the plain link, and
/// each refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_to_inside_addresses_are_never_fetched_and_arrive_as_links() {
    let (secret, hits) = inside().await;
    let redirect = redirector(format!("http://{secret}/latest/meta-data/iam")).await;
    let w = World::start("").await;
    let d = &w.daemon;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    for (n, url) in [("straight", format!("http://{secret}/secret.png")), ("redirected", format!("http://{redirect}/photo.png"))] {
        let attachment = Attachment { url: url.clone(), name: Some("photo.png".into()), mime: Some("image/png".into()), size: None };
        alice.act(Action::File { attachment, caption: format!("look {n}") }).await.unwrap();
        let body = |e: &serde_json::Value| e["content"]["body"].as_str().unwrap_or_default().to_string();
        let e = bob.next_matching(T, |e| body(e).contains(&format!("look {n}"))).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
        assert_eq!(e["content"]["msgtype"], "m.text", "{e}");
        assert!(body(&e).contains(&url), "{e}");
        let raw = w.mail.wait_for("carol", "INBOX", T, |m| m.body_text(0).is_some_and(|t| t.contains(&format!("look {n}")))).await;
        let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(m.attachment_count(), 0, "a file was attached: {}", String::from_utf8_lossy(&raw));
        assert!(m.body_text(0).unwrap().contains(&url));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the inside listener was reached");
    for bridge in ["matrix", "mail"] {
        let refused = d.metric("causeway_fetch_refused_total", &format!(r#"bridge="{bridge}",reason="loopback""#)).await;
        assert_eq!(refused, 2.0, "{bridge}: {refused}\n{}", d.log());
    }
}

/// Every edit or retraction `peer` sees until `sentinel` arrives, as
/// `(who, what)`; panics if the sentinel does not come.
async fn changes_until(peer: &mut dyn Peer, sentinel: &str) -> Vec<(String, String)> {
    let mut changes = Vec::new();
    loop {
        let s = peer.next(T).await.unwrap_or_else(|e| panic!("{}: no {sentinel:?}: {e}", peer.label()));
        match &s.body {
            Body::Message { text, .. } if text.plain.contains(sentinel) => return changes,
            Body::Edit { text, .. } => changes.push((s.sender_name, format!("edit to {:?}", text.plain))),
            Body::Retract { target, .. } => changes.push((s.sender_name, format!("retraction of {target}"))),
            _ => {}
        }
    }
}

/// The id `peer` sees `text` under.
async fn id_of(peer: &mut dyn Peer, text: &str) -> String {
    loop {
        let s = peer.next(T).await.unwrap_or_else(|e| panic!("{}: no {text:?}: {e}", peer.label()));
        if matches!(&s.body, Body::Message { text: t, .. } if t.plain.contains(text)) {
            return s.id;
        }
    }
}

/// Nobody rewrites or takes back someone else's words across a bridge: an
/// XMPP occupant's corrections and retractions of a Matrix person's and of
/// another occupant's messages, a Matrix user's edits of an XMPP person's
/// message, a webhook sender's edits and retractions of others' messages —
/// none reaches another network (they are dropped as `forged_reference`).
/// Their authors' own edits do, and so does a redaction by a Matrix user the
/// room lets redact (a moderator), as a moderation on XMPP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_changes_someone_elses_message_on_another_network() {
    let mut w = World::start("").await;
    w.synapse.register("erin");
    let d = &w.daemon;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut mallory = XmppPeer::join(&w.prosody, "bob", MUC, "Mallory", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let mut erin = MatrixPeer::join(&w.synapse.url(), "erin", ALIAS).await;
    let mut hook = w.hook.take().unwrap();
    let http = reqwest::Client::new();
    let hook_url = d.url("/bridges/hooks/w");
    let post = async |body: serde_json::Value| {
        let r = http.post(&hook_url).bearer_auth("tw").json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    };

    // Something said on each network, and its id on each other one.
    let from_alice = alice.act(Action::Text { text: "alice's words".into(), reply_to: None }).await.unwrap();
    let from_bob = bob.act(Action::Text { text: "bob's words".into(), reply_to: None }).await.unwrap();
    post(json!({"id": "dave-1", "sender": {"id": "w", "name": "Dave"}, "text": "dave's words"})).await;
    let alice_on_matrix = id_of(&mut erin, "alice's words").await;
    let bob_on_xmpp = id_of(&mut mallory, "bob's words").await;
    let mut on_hook = std::collections::HashMap::new();
    while on_hook.len() < 2 {
        let got = hook.next(T).await;
        if let Some(t) = got.json["text"].as_str() {
            on_hook.insert(t.to_string(), got.json["id"].as_str().unwrap_or(&got.key).to_string());
        }
    }
    let alice_on_hook = on_hook["alice's words"].clone();
    let bob_on_hook = on_hook["bob's words"].clone();
    for peer in [&mut alice as &mut dyn Peer, &mut bob] {
        id_of(peer, "dave's words").await;
    }

    // The forgeries.
    for target in [&bob_on_xmpp, &from_alice] {
        mallory.act(Action::Edit { target: target.clone(), text: "forged by mallory".into() }).await.unwrap();
        mallory.act(Action::Retract { target: target.clone() }).await.unwrap();
    }
    erin.act(Action::Edit { target: alice_on_matrix.clone(), text: "forged by erin".into() }).await.unwrap();
    erin.act(Action::Edit { target: from_bob.clone(), text: "forged by erin".into() }).await.unwrap();
    // Synapse refuses erin's redaction of others' events herself (no power).
    let _ = erin.act(Action::Retract { target: alice_on_matrix.clone() }).await;
    for (target, kind) in [("dave-1", "edit"), (alice_on_hook.as_str(), "edit"), (bob_on_hook.as_str(), "retract")] {
        post(json!({"sender": {"id": "mallory", "name": "Mallory"}, "type": kind, "target": target, "text": "forged by a webhook"})).await;
    }

    // Nothing crossed: each network saw none of it before what comes next.
    alice.act(Action::Text { text: "xmpp sentinel".into(), reply_to: None }).await.unwrap();
    bob.act(Action::Text { text: "matrix sentinel".into(), reply_to: None }).await.unwrap();
    let on_xmpp: Vec<_> = changes_until(&mut alice, "matrix sentinel").await;
    assert!(on_xmpp.iter().all(|(who, _)| who == "Mallory"), "crossed to XMPP: {on_xmpp:?}\n{}", d.log());
    let on_matrix = changes_until(&mut bob, "xmpp sentinel").await;
    assert!(on_matrix.iter().all(|(who, _)| who.contains("erin")), "crossed to Matrix: {on_matrix:?}\n{}", d.log());
    let mut sentinels = 0;
    while sentinels < 2 {
        let got = hook.next(T).await;
        assert!(!matches!(got.json["type"].as_str(), Some("edit" | "retract")), "crossed to the webhook: {}", got.json);
        if got.json["text"].as_str().is_some_and(|t| t.contains(" sentinel")) {
            sentinels += 1;
        }
    }
    for sentinel in ["xmpp sentinel", "matrix sentinel"] {
        w.mail.wait_for("carol", "INBOX", T, |m| m.body_text(0).is_some_and(|t| t.contains(sentinel))).await;
    }
    let mail = w.mail.fetch("carol", "INBOX");
    let forged: Vec<String> = mail
        .iter()
        .map(|(_, raw)| String::from_utf8_lossy(raw).to_string())
        .filter(|m| m.contains("forged") || m.contains("deleted a message"))
        .collect();
    assert!(forged.is_empty(), "crossed to mail: {forged:?}");
    let mut dropped = 0.0;
    for bridge in ["xmpp", "matrix", "hooks"] {
        dropped += d.metric("causeway_events_dropped_total", &format!(r#"bridge="{bridge}",reason="forged_reference""#)).await;
    }
    // Mallory's two edits and two retractions, erin's two edits, the webhook's three.
    assert!(dropped >= 9.0, "only {dropped} forgeries dropped\n{}", d.log());

    // Their own: alice's correction of her words crosses.
    alice.act(Action::Edit { target: from_alice.clone(), text: "alice's better words".into() }).await.unwrap();
    let edit = loop {
        let s = bob.next(T).await.unwrap_or_else(|e| panic!("alice's own edit did not cross: {e}\n{}", d.log()));
        if let Body::Edit { text, .. } = s.body {
            break text.plain;
        }
    };
    assert_eq!(edit, "alice's better words");
    // A Matrix moderator's redaction of alice's message: a moderation on XMPP.
    common::matrix::promote(&w.synapse, &erin.room_id, &erin.user_id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    erin.act(Action::Retract { target: alice_on_matrix.clone() }).await.unwrap();
    let taken_back = loop {
        let s = alice.next(T).await.unwrap_or_else(|e| panic!("the moderator's redaction did not cross: {e}\n{}", d.log()));
        if let Body::Retract { target, .. } = s.body {
            break target;
        }
    };
    assert_eq!(taken_back, from_alice, "the moderation takes back alice's message");
}

/// No secret reaches the log, even at trace level, or the store: not the
/// XMPP component's secret, the IMAP password, the Matrix tokens (not even
/// one sent in a URL), nor a webhook URL's secret path or its bearer token,
/// while a delivery to that URL fails over and over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_the_log_and_the_store_at_trace_level() {
    let leaky = "http://127.0.0.1:9/services/T0SECRETPATH/B0SECRETPATH/hook?key=QUERYSECRET";
    let w = World::start_with(
        "",
        |c| {
            c.replace(
                "      w: {",
                &format!("      leak: {{ outbound: {{ url: \"{leaky}\", token: BEARERSECRET, hmac_secret: HMACSECRET }} }}\n      w: {{"),
            )
            .replace("      - { bridge: hooks, room: w }", "      - { bridge: hooks, room: w }\n      - { bridge: hooks, room: leak }")
        },
        &[("CAUSEWAY_LOG", "trace")],
    )
    .await;
    let d = &w.daemon;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    alice.act(Action::Text { text: "from xmpp".into(), reply_to: None }).await.unwrap();
    bob.act(Action::Text { text: "from matrix".into(), reply_to: None }).await.unwrap();
    let mut carol = common::mail::MailPeer::new(&w.mail, "carol", "Carol D.");
    carol.mail("secrets", "from mail", None, None);
    id_of(&mut bob, "from mail").await;
    // A homeserver (or anyone) putting the token in the URL.
    let r = reqwest::Client::new()
        .put(d.url("/bridges/matrix/_matrix/app/v1/transactions/t1?access_token=hs-secret-token"))
        .json(&json!({"events": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // The failing delivery has been tried a few times.
    let deadline = std::time::Instant::now() + T;
    while d.metric("causeway_delivery_failures_total", r#"bridge="hooks",reason="transient""#).await < 3.0 {
        assert!(std::time::Instant::now() < deadline, "no failed delivery to the leaky URL\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = d.log();
    let verbose = log.matches("DEBUG").count() + log.matches("TRACE").count();
    assert!(verbose > 50, "not a trace-level log ({verbose} debug and trace lines, {} bytes)", log.len());
    let store = d.store_bytes();
    let store = String::from_utf8_lossy(&store);
    assert!(store.contains("127.0.0.1:9"), "the failure is not in the store: the test saw nothing");
    for secret in [
        common::xmpp::SECRET,
        "as-secret-token",
        "hs-secret-token",
        "SECRETPATH",
        "QUERYSECRET",
        "BEARERSECRET",
        "HMACSECRET",
        "LOGIN bridge",
        "LOGIN \"bridge\"",
        "AUTH PLAIN",
    ] {
        let at = log.find(secret).map(|i| &log[i.saturating_sub(200)..(i + 200).min(log.len())]);
        assert!(at.is_none(), "{secret:?} in the log: …{}…", at.unwrap_or_default());
        assert!(!store.contains(secret), "{secret:?} in the store");
    }
}

/// No amplification through mail: a hundred reactions on Matrix to one
/// message make no mail to the list's subscribers (`reactions: drop`, the
/// default), while XMPP shows them as reactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reactions_make_no_mail() {
    let w = World::start("").await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let target = bob.act(Action::Text { text: "react to this".into(), reply_to: None }).await.unwrap();
    w.mail.wait_for("carol", "INBOX", T, |m| m.body_text(0).is_some_and(|t| t.contains("react to this"))).await;
    for i in 0..100 {
        bob.act(Action::React { target: target.clone(), key: format!("k{i}") }).await.unwrap();
    }
    bob.act(Action::Text { text: "after the reactions".into(), reply_to: None }).await.unwrap();
    w.mail.wait_for("carol", "INBOX", T, |m| m.body_text(0).is_some_and(|t| t.contains("after the reactions"))).await;
    let mails = w.mail.fetch("carol", "INBOX");
    assert_eq!(
        mails.len(),
        2,
        "{} mails: {:?}",
        mails.len(),
        mails.iter().map(|(_, m)| String::from_utf8_lossy(m).lines().last().unwrap_or_default().to_string()).collect::<Vec<_>>()
    );
    // The other networks got them.
    let mut reactions = 0;
    loop {
        let s = alice.next(T).await.unwrap_or_else(|e| panic!("XMPP: {e}\n{}", w.daemon.log()));
        match s.body {
            Body::Reaction { .. } => reactions += 1,
            Body::Message { text, .. } if text.plain.contains("after the reactions") => break,
            _ => {}
        }
    }
    assert!(reactions >= 1, "no reaction reached XMPP");
}

/// No sender can make a list send more than its send limit: beyond it,
/// messages wait and go out gathered, as edits and retractions always do
/// (never a mail to every subscriber each). Nothing is lost, and XMPP
/// gets everything as it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_and_its_edits_reach_the_list_gathered_not_a_mail_each() {
    let w = World::start_with(
        "",
        |c| {
            c.replace(
                "policy: { allow: [partner.example] }",
                "policy: { allow: [partner.example] }, send_limit: { per_sender: 3 }, batch_every: 3s",
            )
        },
        &[],
    )
    .await;
    let d = &w.daemon;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(bob.act(Action::Text { text: format!("flood {i}"), reply_to: None }).await.unwrap());
    }
    for i in 0..5 {
        bob.act(Action::Edit { target: ids[0].clone(), text: format!("flood 0, take {i}") }).await.unwrap();
    }
    bob.act(Action::Retract { target: ids[1].clone() }).await.unwrap();
    // Everything reaches carol.
    let parsed = |raw: &[u8]| {
        let m = mail_parser::MessageParser::default().parse(raw).expect("a mail");
        (m.subject().unwrap_or_default().to_string(), m.body_text(0).unwrap_or_default().to_string())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mails = loop {
        let mails: Vec<(String, String)> = w.mail.fetch("carol", "INBOX").iter().map(|(_, raw)| parsed(raw)).collect();
        let all: String = mails.iter().map(|(_, b)| b.as_str()).collect();
        if (0..8).all(|i| all.contains(&format!("flood {i}"))) && all.contains("take 4") && all.contains("(deleted a message)") {
            break mails;
        }
        assert!(std::time::Instant::now() < deadline, "carol has {mails:?}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (gathered, single): (Vec<_>, Vec<_>) = mails.iter().partition(|(s, _)| s.contains("Gathered"));
    assert_eq!(single.len(), 3, "the send limit: {single:?}");
    assert!(single.iter().all(|(_, b)| !b.contains("take") && !b.contains("deleted")), "no change makes a mail of its own: {single:?}");
    assert!(!gathered.is_empty() && gathered.len() <= 3, "what came beyond, gathered (3s apart at most): {gathered:?}");
    assert_eq!(d.metric("causeway_held_back_total", r#"bridge="mail",reason="send_limit""#).await, 5.0, "{}", d.log());
    assert_eq!(d.metric("causeway_held_back_total", r#"bridge="mail",reason="batched""#).await, 6.0, "{}", d.log());
    // XMPP is not held back.
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 8 {
        let s = alice.next(T).await.unwrap_or_else(|e| panic!("XMPP: {e}\n{}", d.log()));
        if let Body::Message { text, .. } = s.body
            && let Some(n) = text.plain.strip_prefix("flood ").and_then(|n| n.parse::<u32>().ok())
        {
            seen.insert(n);
        }
    }
}

/// Hostile structure: a stanza nested tens of thousands of levels deep,
/// sent to the bridge through the real server, does not bring Causeway
/// down (a thousand levels overflowed the stack before: the XML parser
/// recurses once per level); it is dropped and counted, and what is said
/// next still crosses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_stanza_does_not_bring_causeway_down() {
    let w = World::start("").await;
    let d = &w.daemon;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    for depth in [1_000, 30_000] {
        let deep = format!(
            "<message xmlns='jabber:client' to='causeway@bridge.xmpp.test' type='chat' id='deep{depth}'><body>deep</body>{}{}</message>",
            // Short tags: 30,000 levels stay under Prosody's 256 KiB stanza limit.
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        );
        alice.send_xml(&deep).await;
        let text = format!("still here after {depth} levels");
        alice.act(Action::Text { text: text.clone(), reply_to: None }).await.unwrap_or_else(|e| panic!("{e}\n{}", w.prosody.log()));
        bob.next_matching(T, |e| e["content"]["body"].as_str().is_some_and(|b| b.contains(&text)))
            .await
            .unwrap_or_else(|e| panic!("{e}\n--- causeway ---\n{}\n--- prosody ---\n{}", d.log(), w.prosody.log()));
    }
    assert!(d.metric("causeway_bridge_up", r#"bridge="xmpp""#).await == 1.0, "{}", d.log());
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="xmpp",reason="too_deep""#).await, 2.0, "{}", d.log());
}
