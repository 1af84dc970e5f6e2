//! The XMPP bridge against a real Prosody (tests/peers/prosody.sh) with
//! real XMPP clients, through the real `causeway` binary.
#![cfg(all(feature = "webhook", feature = "xmpp"))]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use causeway_core::conformance::{self, Peer};
use common::xmpp::{Prosody, XmppPeer, declared_by};
use common::{Daemon, Hook, Mode, WebhookPeer, post};
use serde_json::json;
use tokio_xmpp::minidom::Element;

const ROOM: &str = "ops@conference.xmpp.test";
const T: Duration = Duration::from_secs(15);

fn config(prosody: &Prosody, hook: &str) -> String {
    format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}" }}
outbox: {{ retry_initial: 100ms, retry_max: 1s }}
bridges:
  hooks:
    type: webhook
    endpoints:
      w: {{ inbound: {{ token: tw }}, outbound: {{ url: "{hook}" }} }}
  xmpp: {bridge}
portals:
  - id: ops
    links: [{{ bridge: hooks, room: w }}, {{ bridge: xmpp, room: "{ROOM}" }}]
people:
  - id: dave
    name: Dave Bowman
    accounts: {{ hooks: dave }}
"#,
        bridge = prosody.bridge_config()
    )
}

/// Start Causeway and wait until it is connected and sits in the room.
async fn start(prosody: &Prosody, hook: &Hook) -> Daemon {
    start_with(prosody, &config(prosody, &hook.url())).await
}

async fn start_with(prosody: &Prosody, config: &str) -> Daemon {
    let d = Daemon::start(config).await;
    wait_connected(&d, prosody).await;
    d
}

/// A Prosody, a webhook receiver, Causeway linking them, and Alice in the room.
async fn alice_in_a_bridged_room() -> (Prosody, Hook, Daemon, XmppPeer) {
    let prosody = Prosody::start();
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let d = start(&prosody, &hook).await;
    let alice = join_after_bridge(&prosody, "alice", "Alice").await;
    (prosody, hook, d, alice)
}

/// Wait until the XMPP bridge is connected.
async fn wait_connected(d: &Daemon, prosody: &Prosody) {
    d.wait_up(&["xmpp"], T).await.unwrap_or_else(|e| panic!("{e}\n{}", prosody.log()));
}

/// `cfg` with a direct endpoint `dm` (token `tdm`) delivering to `hook`.
fn with_direct_endpoint(cfg: &str, hook: &str) -> String {
    let cfg = cfg.replace(
        "      w: {",
        &format!("      dm: {{ direct: true, inbound: {{ token: tdm }}, outbound: {{ url: \"{hook}\" }} }}\n      w: {{"),
    );
    assert!(cfg.contains("direct: true"));
    cfg
}

/// The conformance suite between the webhook endpoint `w` and `alice`
/// (one to one too, where `cfg` has the direct endpoint `dm`).
async fn conformance_with_webhook(
    d: &mut Daemon,
    prosody: &Prosody,
    hook: Hook,
    alice: &mut XmppPeer,
    direct: bool,
) -> conformance::Report {
    let mut web = WebhookPeer::new("w", d.url("/bridges/hooks/w"), "tw", hook);
    if direct {
        web = web.with_direct("hooks", d.url("/bridges/hooks/dm"), "tdm");
    }
    let opts = conformance::Options { timeout: T, ..Default::default() };
    let mut causeway = common::Restarts { daemon: d, bridges: &["xmpp", "hooks"] };
    let result = conformance::run(&mut web, alice, &mut causeway, &opts).await;
    result.unwrap_or_else(|e| panic!("{e}\n--- causeway ---\n{}\n--- prosody ---\n{}", d.log(), prosody.log()))
}

/// Join as `user` once the bridge sits in the room (so it hears us).
async fn join_after_bridge(prosody: &Prosody, user: &str, nick: &str) -> XmppPeer {
    join_room_after_bridge(prosody, user, ROOM, nick).await
}

async fn join_room_after_bridge(prosody: &Prosody, user: &str, room: &str, nick: &str) -> XmppPeer {
    let deadline = Instant::now() + T;
    loop {
        let mut peer = XmppPeer::join(prosody, user, room, nick, 0).await;
        if peer.occupants(Duration::from_millis(300)).await.contains(&"Causeway".to_string()) {
            return peer;
        }
        assert!(Instant::now() < deadline, "the bridge never joined {room}:\n{}", prosody.log());
        drop(peer);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A thread an XMPP client opens with an id of its own: its first message
/// is the root, the next ones are in its thread on the other side, and
/// what comes back in the thread carries the client's id (and a reply to
/// the root for clients that show no threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_opened_on_xmpp_keeps_its_id_both_ways() {
    let (prosody, hook, mut d, mut alice) = alice_in_a_bridged_room().await;
    let mut web = WebhookPeer::new("w", d.url("/bridges/hooks/w"), "tw", hook);
    let thread = |id: &str| Element::builder("thread", "jabber:client").append(id).build();
    let body = |text: &str| Element::builder("body", "jabber:client").append(text).build();
    let root_sid = alice.say(vec![body("opening a thread"), thread("our-thread-1")]).await.unwrap();
    let said = |text: &'static str| {
        move |s: &conformance::Seen| match &s.body {
            causeway_core::Body::Message { text: t, thread, reply_to, .. } if t.plain.contains(text) => {
                Some((s.id.clone(), thread.clone(), reply_to.clone()))
            }
            _ => None,
        }
    };
    let (root, thread_of_root, _) = conformance::expect(&mut web, T, "the root", said("opening a thread")).await.unwrap();
    assert_eq!(thread_of_root, None, "the first message of a thread is its root");
    alice.say(vec![body("second in the thread"), thread("our-thread-1")]).await.unwrap();
    let (_, in_thread, _) = conformance::expect(&mut web, T, "the thread's next", said("second in the thread")).await.unwrap();
    assert_eq!(in_thread.as_ref(), Some(&root), "{}", d.log());
    // Answered in the thread from the other side.
    web.act(conformance::Action::InThread { text: "an answer in the thread".into(), root: root.clone() }).await.unwrap();
    let m = alice
        .next_matching(T, |e| e.get_child("body", "jabber:client").is_some_and(|b| b.text().contains("an answer in the thread")))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", d.log(), prosody.log()));
    assert_eq!(m.get_child("thread", "jabber:client").map(|t| t.text()).as_deref(), Some("our-thread-1"));
    assert_eq!(m.get_child("reply", "urn:xmpp:reply:0").and_then(|r| r.attr("id")), Some(root_sid.as_str()), "a reply to the root");
    // And the id survives a restart (it is stored, not remembered).
    assert!(d.terminate().success());
    d.restart().await;
    wait_connected(&d, &prosody).await;
    web.act(conformance::Action::InThread { text: "after a restart".into(), root }).await.unwrap();
    let m = alice
        .next_matching(T, |e| e.get_child("body", "jabber:client").is_some_and(|b| b.text().contains("after a restart")))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(m.get_child("thread", "jabber:client").map(|t| t.text()).as_deref(), Some("our-thread-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmpp_conformance_with_a_webhook() {
    let prosody = Prosody::start();
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = start_with(&prosody, &with_direct_endpoint(&config(&prosody, &hook.url()), &hook.url())).await;
    let mut alice = join_after_bridge(&prosody, "alice", "Alice").await;
    let report = conformance_with_webhook(&mut d, &prosody, hook, &mut alice, true).await;
    // All but redelivery from XMPP (a client cannot make the room deliver
    // again; the restart case covers the archive catch-up).
    assert_eq!(report.passed.len(), 34, "{report}");
    assert_eq!(report.skipped, ["b→a redelivery"], "{report}");
    assert_eq!(alice.label(), "xmpp Alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghosts_take_free_nicks_and_follow_presence() {
    let (prosody, mut hook, d, mut alice) = alice_in_a_bridged_room().await;
    // Somebody on XMPP already uses Dave's name.
    let _carol = XmppPeer::join(&prosody, "carol", ROOM, "Dave Bowman", 0).await;
    let client = reqwest::Client::new();
    let url = d.url("/bridges/hooks/w");
    let msg = json!({"sender": {"id": "dave", "name": "dave"}, "text": "open the pod bay doors"});
    assert_eq!(post(&client, &url, "tw", &msg).await.0, 202);
    let seen = loop {
        let s = alice.seen(T).await.unwrap();
        if matches!(s.body, causeway_core::Body::Message { .. }) {
            break s;
        }
    };
    assert_eq!(seen.sender_name, "Dave Bowman (bridge)", "{seen:?}");
    // Dave goes away on the webhook side: his ghost goes away in the room.
    let away = json!({"type": "presence", "sender": {"id": "dave"}, "show": "dnd", "status": "in the pod"});
    assert_eq!(post(&client, &url, "tw", &away).await.0, 202);
    let deadline = Instant::now() + T;
    loop {
        let s = alice.seen(deadline.saturating_duration_since(Instant::now())).await.unwrap();
        if s.sender_name == "Dave Bowman (bridge)"
            && let causeway_core::Body::Presence { show: causeway_core::Show::Dnd, status } = &s.body
        {
            assert_eq!(status.as_deref(), Some("in the pod"));
            break;
        }
    }
    // XMPP presence comes the other way as an event.
    alice.set_presence(Some("away"), Some("lunch")).await;
    loop {
        let got = hook.next(T).await;
        // Her join said "online" first; the change follows.
        if got.json["type"] == "presence" && got.json["sender"]["name"] == "Alice" && got.json["show"] == "away" {
            assert_eq!(got.json["status"], "lunch", "{}", got.json);
            assert_eq!(got.json["sender"]["id"], "alice@xmpp.test", "the room shows real JIDs to the bridge");
            break;
        }
    }
}

/// Prosody goes away for `CAUSEWAY_TEST_OUTAGE_SECS` (30) in the middle of
/// 500 messages: afterwards the room has every one of them exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prosody_outage_mid_stream_loses_and_doubles_nothing() {
    const N: usize = 500;
    let outage = Duration::from_secs(std::env::var("CAUSEWAY_TEST_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30));
    let prosody = Prosody::start();
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let d = start(&prosody, &hook).await;
    // The stream: 500 messages at about 50 a second, still going while the server is away.
    let url = d.url("/bridges/hooks/w");
    let sender = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..N {
            tick.tick().await;
            let msg = json!({"id": format!("m{i}"), "sender": {"id": "dave"}, "text": format!("m #{i}")});
            assert_eq!(post(&client, &url, "tw", &msg).await.0, 202);
        }
    });
    // Pull the plug once part of the stream has gone through.
    let deadline = Instant::now() + T;
    while d.metric("causeway_events_delivered_total", r#"bridge="xmpp""#).await < 50.0 {
        assert!(Instant::now() < deadline, "nothing delivered:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    prosody.down();
    let at_kill = d.metric("causeway_events_delivered_total", r#"bridge="xmpp""#).await;
    assert!((at_kill as usize) < N, "the outage came after the stream");
    tokio::time::sleep(outage).await;
    assert_eq!(d.metric("causeway_bridge_up", r#"bridge="xmpp""#).await, 0.0);
    prosody.up();
    sender.await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(120);
    while d.metric("causeway_outbox_depth", r#"bridge="xmpp""#).await > 0.0 {
        assert!(Instant::now() < deadline, "outbox not drained:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A fresh client reads the room's history: each message exactly once.
    let mut bob = XmppPeer::join(&prosody, "bob", ROOM, "Bob", 1000).await;
    let history = bob.history(Duration::from_secs(2)).await;
    let mut count: HashMap<usize, usize> = HashMap::new();
    for (nick, body) in &history {
        if nick.starts_with("Dave Bowman")
            && let Some(n) = body.strip_prefix("m #").and_then(|n| n.parse().ok())
        {
            *count.entry(n).or_default() += 1;
        }
    }
    let missing: Vec<usize> = (0..N).filter(|i| !count.contains_key(i)).collect();
    let doubled: Vec<(&usize, &usize)> = count.iter().filter(|(_, c)| **c > 1).collect();
    assert!(missing.is_empty(), "missing {} messages, first {:?}\n{}", missing.len(), &missing[..missing.len().min(10)], d.log());
    assert!(doubled.is_empty(), "doubled: {doubled:?}");
    eprintln!("{N} messages, {at_kill} delivered before the outage, all present once after it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_copied_to_the_servers_upload_service() {
    let prosody = Prosody::start();
    // Where the file lives on the other network.
    let listener = tokio::net::TcpListener::bind((common::FILES_HOST, 0)).await.unwrap();
    let files = listener.local_addr().unwrap();
    let app =
        axum::Router::new().route("/report.txt", axum::routing::get(|| async { ([("content-type", "text/plain")], "quarterly numbers") }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let cfg = config(&prosody, &hook.url()).replace("reconnect_max: 2s }", "reconnect_max: 2s, upload_service: upload.xmpp.test }");
    assert!(cfg.contains("upload_service"));
    let d = start_with(&prosody, &cfg).await;
    let mut alice = join_after_bridge(&prosody, "alice", "Alice").await;
    let msg = json!({"sender": {"id": "dave"}, "text": "see attached",
                     "attachments": [{"url": format!("http://{files}/report.txt"), "name": "report.txt", "mime": "text/plain"}]});
    assert_eq!(post(&reqwest::Client::new(), &d.url("/bridges/hooks/w"), "tw", &msg).await.0, 202);
    let seen = loop {
        let s = alice.seen(T).await.unwrap();
        if let causeway_core::Body::Message { attachments, text, .. } = s.body {
            break (attachments, text);
        }
    };
    let (attachments, text) = seen;
    let url = &attachments[0].url;
    assert!(url.starts_with(&format!("http://127.0.0.1:{}/file_share/", prosody.http)), "{url}\n{}", d.log());
    assert!(text.plain.starts_with("see attached\n"), "{}", text.plain);
    let body = reqwest::get(url).await.unwrap().text().await.unwrap();
    assert_eq!(body, "quarterly numbers");
}

/// Retractions of someone else's message need a moderator (XEP-0425): a
/// moderating retraction from a webhook endpoint trusted to moderate
/// (`may_moderate`) of an XMPP person's message is done by the bridge as the
/// room's moderator, and an XMPP moderator taking back a ghost's message
/// reaches the webhook side as a retraction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_crosses_both_ways() {
    let prosody = Prosody::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let cfg = config(&prosody, &hook.url()).replace("inbound: { token: tw }", "inbound: { token: tw, may_moderate: true }");
    assert!(cfg.contains("may_moderate"));
    let d = start_with(&prosody, &cfg).await;
    let mut alice = join_after_bridge(&prosody, "alice", "Alice").await;
    // carol is a server admin, so a moderator in every room.
    let mut carol = XmppPeer::join(&prosody, "carol", ROOM, "Carol", 0).await;
    let client = reqwest::Client::new();
    let url = d.url("/bridges/hooks/w");

    // Alice's message, taken back from the webhook side: the bridge moderates it.
    let sid = alice.say(vec![Element::builder("body", common::xmpp::NS_CLIENT).append("buy cheap pills").build()]).await.unwrap();
    let delivered = loop {
        let got = hook.next(T).await;
        if got.json["type"] == "message" && got.json["text"] == "buy cheap pills" {
            break got;
        }
    };
    // As dave alone it is not his to take back; as a moderator it is.
    let retract = json!({"sender": {"id": "dave"}, "type": "retract", "target": delivered.id});
    let (status, answer) = post(&client, &url, "tw", &retract).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")), "{answer}");
    let retract = json!({"sender": {"id": "dave"}, "type": "retract", "target": delivered.id, "moderated": true});
    assert_eq!(post(&client, &url, "tw", &retract).await.0, 202);
    let deadline = Instant::now() + T;
    loop {
        let s = carol.seen(deadline.saturating_duration_since(Instant::now())).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
        if let causeway_core::Body::Retract { target, .. } = &s.body {
            assert_eq!(target, &sid, "the moderation names Alice's message");
            assert_eq!(s.sender_name, "Causeway", "the bridge moderated it");
            break;
        }
    }

    // A ghost's message, taken back by an XMPP moderator: the webhook side hears of it.
    let msg = json!({"id": "spam-1", "sender": {"id": "dave"}, "text": "a ghost's mistake"});
    assert_eq!(post(&client, &url, "tw", &msg).await.0, 202);
    let ghost_sid = loop {
        let s = carol.seen(T).await.unwrap();
        if matches!(&s.body, causeway_core::Body::Message { text, .. } if text.plain == "a ghost's mistake") {
            break s.id;
        }
    };
    carol.moderate(&ghost_sid).await;
    loop {
        let got = hook.next(T).await;
        if got.json["type"] == "retract" {
            assert_eq!(got.json["target"], "spam-1", "{}", got.json);
            assert_eq!(got.json["sender"]["name"], "Carol");
            break;
        }
    }
}

/// A direct message to a ghost's JID reaches the person on their network
/// (here a webhook's direct endpoint), the answer comes back one to one,
/// references cross, the conversation outlives a restart, and a message to
/// a ghost that stands for nobody is refused to the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_to_ghosts_reach_the_person() {
    let prosody = Prosody::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let cfg = with_direct_endpoint(&config(&prosody, &hook.url()), &hook.url());
    let mut d = start_with(&prosody, &cfg).await;
    let client = reqwest::Client::new();
    let dm_url = d.url("/bridges/hooks/dm");
    let body = |text: &str| Element::builder("body", common::xmpp::NS_CLIENT).append(text).build();

    // Alice writes to Dave's ghost; Dave's webhook gets it, one to one.
    let mut alice = XmppPeer::login(&prosody, "alice", ROOM, "Alice").await;
    let alice_id = alice.chat("dave@bridge.xmpp.test", vec![body("hi Dave, got a minute?")]).await;
    let got = hook.next(T).await;
    assert_eq!(got.json["text"], "hi Dave, got a minute?", "{}\n{}", got.json, d.log());
    assert_eq!(got.json["direct"], json!({"to": "dave", "with": "xmpp:alice@xmpp.test"}));
    assert_eq!(got.json["sender"]["name"], "alice");
    let portal = got.json["portal"].as_str().unwrap().to_string();
    assert!(portal.starts_with("dm-"), "{portal}");

    // Dave answers, as a reply: it reaches Alice from his ghost, pointing at her message.
    let answer = json!({"id": "dave-1", "sender": {"id": "dave"}, "to": "xmpp:alice@xmpp.test", "text": "sure", "reply_to": got.id});
    assert_eq!(post(&client, &dm_url, "tdm", &answer).await.0, 202);
    let m = alice.next_chat(T).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(m.attr("from"), Some("dave@bridge.xmpp.test/causeway"));
    assert_eq!(m.get_child("body", common::xmpp::NS_CLIENT).map(|b| b.text()).as_deref(), Some("sure"));
    let reply = m.get_child("reply", "urn:xmpp:reply:0").expect("a reply element");
    assert_eq!(reply.attr("id"), Some(alice_id.as_str()));
    let dave_msg_id = m.attr("id").unwrap().to_string();

    // Alice reacts to it: Dave's side sees a reaction to his own message.
    let reaction = Element::builder("reactions", "urn:xmpp:reactions:0")
        .attr(tokio_xmpp::minidom::rxml::xml_ncname!("id").into(), dave_msg_id.as_str())
        .append(Element::builder("reaction", "urn:xmpp:reactions:0").append("👍").build())
        .build();
    alice.chat("dave@bridge.xmpp.test", vec![reaction]).await;
    let got = hook.next(T).await;
    assert_eq!((got.json["type"].as_str(), got.json["target"].as_str()), (Some("reaction"), Some("dave-1")), "{}", got.json);

    // After a restart the conversation is the same portal.
    d.terminate();
    d.restart().await;
    wait_connected(&d, &prosody).await;
    alice.chat("dave@bridge.xmpp.test", vec![body("still there?")]).await;
    let got = hook.next(T).await;
    assert_eq!((got.json["text"].as_str(), got.json["portal"].as_str()), (Some("still there?"), Some(portal.as_str())));

    // Dave starts a conversation with Bob, who has never written to him.
    let mut bob = XmppPeer::login(&prosody, "bob", ROOM, "Bob").await;
    let start = json!({"sender": {"id": "dave", "name": "dave"}, "to": "xmpp:bob@xmpp.test", "text": "Bob, a word?"});
    assert_eq!(post(&client, &dm_url, "tdm", &start).await.0, 202);
    let m = bob.next_chat(T).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(m.attr("from"), Some("dave@bridge.xmpp.test/causeway"), "the same ghost for the same person");
    assert_eq!(m.get_child("body", common::xmpp::NS_CLIENT).map(|b| b.text()).as_deref(), Some("Bob, a word?"));

    // A ghost that stands for nobody: the sender hears why.
    alice.chat("nobody@bridge.xmpp.test", vec![body("hello?")]).await;
    let m = alice.next_chat(T).await.unwrap();
    assert_eq!(m.attr("type"), Some("error"));
    assert_eq!(m.attr("from"), Some("nobody@bridge.xmpp.test"), "from the address written to");
    let error = m.get_child("error", common::xmpp::NS_CLIENT).expect("an error element");
    assert!(error.children().any(|c| c.name() == "item-not-found"), "{error:?}");

    // Hostile or mistaken posts to the direct endpoint: clear errors, nothing opened.
    for (payload, status) in [
        (json!({"sender": {"id": "dave"}, "text": "to whom?"}), 422),
        (json!({"sender": {"id": "dave"}, "to": "nobody", "text": "x"}), 404),
        (json!({"sender": {"id": "dave"}, "to": "ghost:x", "text": "x"}), 404),
        (json!({"sender": {"id": "da/ve"}, "to": "xmpp:bob@xmpp.test", "text": "x"}), 422),
        (json!({"sender": {"id": "dave"}, "to": "hooks:someone", "text": "x"}), 422),
        (json!({"sender": {"id": "dave"}, "to": "xmpp:not a jid", "text": "x"}), 404),
    ] {
        let (got, answer) = post(&client, &dm_url, "tdm", &payload).await;
        assert_eq!(got, status, "{payload} → {answer}");
    }
    // Since the restart: Bob's conversation only (Alice's was stored, the refused ones never opened).
    assert_eq!(d.metric("causeway_direct_conversations_opened_total", r#"bridge="hooks""#).await, 1.0);
    assert_eq!(d.metric("causeway_direct_conversations_opened_total", r#"bridge="xmpp""#).await, 0.0);
    let _ = hook.drain(Duration::from_millis(300)).await;
}

/// Strangers cannot grow the portals without bound: two thousand webhook
/// senders nobody knows write to someone one to one; only
/// `router.direct.max_open` conversations are opened, the rest are told to
/// wait (429) and counted, a person of the directory still gets through,
/// and a stranger the allow-list leaves out is refused, on the webhook and
/// on XMPP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_strangers_open_no_more_direct_conversations_than_allowed() {
    let prosody = Prosody::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let cfg = with_direct_endpoint(&config(&prosody, &hook.url()), &hook.url())
        + "router: { direct: { max_open: 20, strangers: { hooks: [\"s*\"], xmpp: [\"alice@*\"] } } }\n";
    let d = start_with(&prosody, &cfg).await;
    let client = reqwest::Client::new();
    let dm_url = d.url("/bridges/hooks/dm");
    let mut bob = XmppPeer::login(&prosody, "bob", ROOM, "Bob").await;
    let mut answers: HashMap<u16, usize> = HashMap::new();
    for i in 0..2000 {
        let m = json!({"sender": {"id": format!("s{i}")}, "to": "xmpp:bob@xmpp.test", "text": format!("hello from s{i}")});
        *answers.entry(post(&client, &dm_url, "tdm", &m).await.0).or_default() += 1;
    }
    assert_eq!(answers, HashMap::from([(202, 20), (429, 1980)]), "{}", d.log());
    // A person of the directory is no stranger; one the allow-list leaves out is refused.
    let dave = json!({"sender": {"id": "dave"}, "to": "xmpp:bob@xmpp.test", "text": "from dave"});
    assert_eq!(post(&client, &dm_url, "tdm", &dave).await.0, 202);
    let mallory = json!({"sender": {"id": "mallory"}, "to": "xmpp:bob@xmpp.test", "text": "let me in"});
    assert_eq!(post(&client, &dm_url, "tdm", &mallory).await.0, 403);
    // Bob got the twenty and Dave's, nothing more.
    let mut got = HashSet::new();
    while got.len() < 21 {
        let m = bob.next_chat(T).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
        got.insert(m.get_child("body", common::xmpp::NS_CLIENT).map(|b| b.text()).unwrap_or_default());
    }
    assert!(got.contains("from dave") && got.iter().all(|t| !t.contains("let me in")), "{got:?}");
    // On XMPP: Carol is not allowed to open one, Alice is but must wait.
    let body = |text: &str| Element::builder("body", common::xmpp::NS_CLIENT).append(text).build();
    let mut carol = XmppPeer::login(&prosody, "carol", ROOM, "Carol").await;
    carol.chat("dave@bridge.xmpp.test", vec![body("carol to dave")]).await;
    let mut alice = XmppPeer::login(&prosody, "alice", ROOM, "Alice").await;
    alice.chat("dave@bridge.xmpp.test", vec![body("alice to dave")]).await;
    for (who, condition) in [(&mut carol, "not-allowed"), (&mut alice, "resource-constraint")] {
        let m = loop {
            let m = who.next_chat(T).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
            if m.attr("type") == Some("error") {
                break m;
            }
        };
        let error = m.get_child("error", common::xmpp::NS_CLIENT).expect("an error element");
        assert!(error.children().any(|c| c.name() == condition), "{condition}: {error:?}");
    }
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="hooks",reason="direct_limit""#).await, 1980.0);
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="hooks",reason="direct_not_allowed""#).await, 1.0);
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="xmpp",reason="direct_not_allowed""#).await, 1.0);
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="xmpp",reason="direct_limit""#).await, 1.0);
    assert_eq!(common::stored_portals(&d).await, 21, "the store holds the conversations opened, no more");
    let _ = hook.drain(Duration::from_millis(300)).await;
}

/// Client mode, for servers that allow no component: one account logs in
/// with STARTTLS (the server's certificate checked against its CA) and SCRAM,
/// relays everyone's messages with their name, and passes the conformance
/// suite for what one account can show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_relays_over_starttls_and_passes_conformance() {
    let prosody = Prosody::start();
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let cfg = config(&prosody, &hook.url()).replace(&prosody.bridge_config(), &prosody.client_bridge_config("pw"));
    assert!(cfg.contains("mode: client"));
    let ca = prosody.ca_file().display().to_string();
    let mut d = Daemon::start_with_env(&cfg, &[("SSL_CERT_FILE", &ca)]).await;
    wait_connected(&d, &prosody).await;
    // The server saw an encrypted session log in (SCRAM: the test server offers nothing else).
    let log = prosody.log();
    let session = log
        .lines()
        .find(|l| l.contains("Authenticated as causeway@xmpp.test"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or_else(|| panic!("no login in:\n{log}"));
    assert!(log.lines().any(|l| l.contains(session) && l.contains("Stream encrypted")), "{log}");
    let mut alice = join_after_bridge(&prosody, "alice", "Alice").await;
    alice.caps = declared_by(json!({"type": "xmpp", "mode": "client", "jid": "causeway@xmpp.test", "password": "p"}), ROOM);

    // The relay names the sender.
    let client = reqwest::Client::new();
    let msg = json!({"sender": {"id": "dave"}, "text": "relayed hello"});
    assert_eq!(post(&client, &d.url("/bridges/hooks/w"), "tw", &msg).await.0, 202);
    let seen = loop {
        let s = alice.seen(T).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
        if matches!(s.body, causeway_core::Body::Message { .. }) {
            break s;
        }
    };
    assert_eq!(seen.sender_name, "Causeway", "one account speaks for everyone");
    match &seen.body {
        causeway_core::Body::Message { text, .. } => assert_eq!(text.plain, "<Dave Bowman> relayed hello"),
        b => panic!("{b:?}"),
    }

    let report = conformance_with_webhook(&mut d, &prosody, hook, &mut alice, false).await;
    // Text, reply, edit, retraction, thread, file, topic and what a bridge
    // must not do (hostile text, foreign changes, doubles, echoes) both
    // ways, and mentions of XMPP people; reactions, presence, typing,
    // comings and goings and mentions from XMPP (a relayed name is nobody
    // in the room) are not shown by one account, and one account has no
    // ghosts to write to one to one: skipped.
    assert_eq!(report.passed.len(), 24, "{report}");
    assert_eq!(report.skipped.len(), 11, "{report}");
}

/// Client mode too: a stanza nested 30,000 levels deep, sent to the
/// bridge's account and relayed by the server over TLS, is cut out by the depth guard between TLS and the XML
/// parser (which recursed once per level and overflowed the stack),
/// dropped and counted; what is said next still crosses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_survives_a_deeply_nested_stanza() {
    let prosody = Prosody::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let cfg = config(&prosody, &hook.url()).replace(&prosody.bridge_config(), &prosody.client_bridge_config("pw"));
    let ca = prosody.ca_file().display().to_string();
    let d = Daemon::start_with_env(&cfg, &[("SSL_CERT_FILE", &ca)]).await;
    wait_connected(&d, &prosody).await;
    let mut alice = join_after_bridge(&prosody, "alice", "Alice").await;
    let deep = format!(
        "<message xmlns='jabber:client' to='causeway@xmpp.test/causeway' type='chat' id='deep'><body>deep</body>{}{}</message>",
        "<a>".repeat(30_000),
        "</a>".repeat(30_000)
    );
    alice.send_xml(&deep).await;
    alice.act(conformance::Action::Text { text: "still here over TLS".into(), reply_to: None }).await.unwrap();
    loop {
        let got = hook.next(T).await;
        if got.json["text"].as_str().is_some_and(|t| t.contains("still here over TLS")) {
            break;
        }
        assert!(!got.json["text"].as_str().is_some_and(|t| t.contains("deep")), "the deep stanza was taken: {}", got.json);
    }
    assert_eq!(d.metric("causeway_bridge_up", r#"bridge="xmpp""#).await, 1.0, "{}", d.log());
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="xmpp",reason="too_deep""#).await, 1.0, "{}", d.log());
}

/// A wrong password is said plainly and retried with backoff; the bridge
/// counts as down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_with_a_wrong_password_says_so() {
    let prosody = Prosody::start();
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let cfg = config(&prosody, &hook.url()).replace(&prosody.bridge_config(), &prosody.client_bridge_config("not-the-password"));
    let ca = prosody.ca_file().display().to_string();
    let d = Daemon::start_with_env(&cfg, &[("SSL_CERT_FILE", &ca)]).await;
    let deadline = Instant::now() + T;
    while !d.log().contains("check `password`") {
        assert!(Instant::now() < deadline, "no clear error:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.metric("causeway_bridge_up", r#"bridge="xmpp""#).await, 0.0);
    // Without the test CA the server's certificate is not trusted: no login at all.
    drop(d);
    let cfg = config(&prosody, &hook.url()).replace(&prosody.bridge_config(), &prosody.client_bridge_config("pw"));
    let d = Daemon::start_with_env(&cfg, &[("SSL_CERT_FILE", "/dev/null")]).await;
    let deadline = Instant::now() + T;
    while !d.log().contains("cannot connect") {
        assert!(Instant::now() < deadline, "no TLS error:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.log().to_lowercase().contains("certificate"), "{}", d.log());
    assert_eq!(d.metric("causeway_bridge_up", r#"bridge="xmpp""#).await, 0.0);
}

/// A stanza the parser refuses (here a message with two threads) is
/// logged and dropped: the connection stays, and what follows
/// is bridged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stanza_that_does_not_parse_is_dropped_not_fatal() {
    let (_prosody, mut hook, d, mut alice) = alice_in_a_bridged_room().await;
    let body = |t: &str| Element::builder("body", common::xmpp::NS_CLIENT).append(t).build();
    // No reflection check: the room may refuse it or pass it on as is.
    let thread = |t: &str| Element::builder("thread", common::xmpp::NS_CLIENT).append(t).build();
    let _ = alice.say(vec![body("one"), thread("a"), thread("b")]).await;
    alice.say(vec![body("after the bad one")]).await.unwrap();
    loop {
        let got = hook.next(T).await;
        if got.json["text"] == "after the bad one" {
            break;
        }
        assert_ne!(got.json["text"], "one", "the malformed message was bridged: {}", got.json);
    }
    let log = d.log();
    assert!(log.contains("dropping a stanza that does not parse"), "the bad stanza never reached the bridge:\n{log}");
    assert!(!log.contains("disconnected from the XMPP server"), "{log}");
}

/// Typing, the subject and comings and goings cross both ways through the
/// real server: chat states (XEP-0085), subject changes, occupants joining
/// and leaving, and a ghost leaving when its person leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_topic_and_membership_cross_both_ways() {
    use tokio_xmpp::minidom::rxml::xml_ncname;
    const NS: &str = common::xmpp::NS_CLIENT;
    let (prosody, mut hook, d, mut alice) = alice_in_a_bridged_room().await;
    let client = reqwest::Client::new();
    let url = d.url("/bridges/hooks/w");
    let from_hook = async |hook: &mut Hook, what: &str, want: &dyn Fn(&serde_json::Value) -> bool| {
        let mut seen = Vec::new();
        let deadline = Instant::now() + T;
        while let Ok(Some(got)) = tokio::time::timeout_at(deadline.into(), hook.rx.recv()).await {
            if want(&got.json) {
                return got.json;
            }
            seen.push(got.json);
        }
        panic!("no {what} on the webhook side; got {seen:?}");
    };

    // XMPP → webhook: typing, a subject change, someone joining and leaving.
    let groupchat = |payload: Element| {
        Element::builder("message", NS)
            .attr(xml_ncname!("to").into(), ROOM)
            .attr(xml_ncname!("type").into(), "groupchat")
            .append(payload)
            .build()
    };
    alice.send_raw(&groupchat(Element::builder("composing", "http://jabber.org/protocol/chatstates").build())).await;
    from_hook(&mut hook, "typing", &|j| j["type"] == "typing" && j["active"] == true && j["sender"]["name"] == "Alice").await;
    alice.send_raw(&groupchat(Element::builder("subject", NS).append("release day").build())).await;
    from_hook(&mut hook, "topic", &|j| j["type"] == "topic" && j["topic"] == "release day").await;
    let bob = XmppPeer::join(&prosody, "bob", ROOM, "Bob", 0).await;
    from_hook(&mut hook, "membership", &|j| j["type"] == "membership" && j["membership"] == "join" && j["sender"]["name"] == "Bob").await;
    bob.quit().await;
    from_hook(&mut hook, "membership", &|j| j["type"] == "membership" && j["membership"] == "leave" && j["sender"]["name"] == "Bob").await;

    // Webhook → XMPP: Dave types, changes the subject, then leaves.
    let dave = |extra: serde_json::Value| {
        let mut j = json!({"sender": {"id": "dave"}});
        j.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        j
    };
    assert_eq!(post(&client, &url, "tw", &dave(json!({"type": "typing", "active": true}))).await.0, 202);
    let s = alice
        .next_matching(T, |s| {
            s.name() == "message"
                && s.get_child("composing", "http://jabber.org/protocol/chatstates").is_some()
                && s.attr("from") != Some(&format!("{ROOM}/Alice"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(s.attr("from"), Some(format!("{ROOM}/Dave Bowman").as_str()));
    assert_eq!(post(&client, &url, "tw", &dave(json!({"type": "topic", "topic": "release moved"}))).await.0, 202);
    let s = alice.next_matching(T, |s| s.get_child("subject", NS).is_some_and(|t| t.text() == "release moved")).await.unwrap();
    assert_eq!(s.attr("from"), Some(format!("{ROOM}/Dave Bowman").as_str()));
    assert_eq!(post(&client, &url, "tw", &dave(json!({"type": "membership", "membership": "leave"}))).await.0, 202);
    alice
        .next_matching(T, |s| {
            s.name() == "presence"
                && s.attr("type") == Some("unavailable")
                && s.attr("from") == Some(format!("{ROOM}/Dave Bowman").as_str())
        })
        .await
        .unwrap_or_else(|e| panic!("the ghost did not leave: {e}\n{}", d.log()));
}

/// A quiet connection is kept: after `keepalive` without a word the bridge
/// pings, the server answers, and nothing disconnects, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_connections_are_kept_alive() {
    for client_mode in [false, true] {
        let prosody = Prosody::start();
        let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
        let section = if client_mode { prosody.client_bridge_config("pw") } else { prosody.bridge_config() };
        let section = section.replace("reconnect_max: 2s", "reconnect_max: 2s, keepalive: 1s");
        let cfg = config(&prosody, &hook.url()).replace(&prosody.bridge_config(), &section);
        let ca = prosody.ca_file().display().to_string();
        let d = Daemon::start_with_env(&cfg, &[("SSL_CERT_FILE", &ca)]).await;
        wait_connected(&d, &prosody).await;
        let mut alice = join_after_bridge(&prosody, "alice", "Alice").await;
        // Several keepalive periods of silence from the bridge's side.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!d.log().contains("disconnected from the XMPP server"), "{section}:\n{}", d.log());
        alice.say(vec![Element::builder("body", common::xmpp::NS_CLIENT).append("still here").build()]).await.unwrap();
        loop {
            let got = hook.next(T).await;
            if got.json["text"] == "still here" {
                break;
            }
        }
        alice.quit().await;
    }
}

/// What people say in the group chat while Causeway is stopped is taken
/// when it is back (from the room's history), once, in order; what it said
/// itself before does not come back, and nothing from before it first sat
/// in the room is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_said_while_causeway_is_away_is_taken_when_it_is_back() {
    let body = |t: &str| Element::builder("body", common::xmpp::NS_CLIENT).append(t).build();
    let prosody = Prosody::start();
    // Said before Causeway ever sat in the room: not for the portal.
    let mut early = XmppPeer::join(&prosody, "bob", ROOM, "Bob", 0).await;
    early.say(vec![body("before the bridge")]).await.unwrap();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = start(&prosody, &hook).await;
    let mut alice = join_after_bridge(&prosody, "alice", "Alice").await;
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &d.url("/bridges/hooks/w"), "tw", &json!({"sender": {"id": "dave"}, "text": "from dave"})).await.0, 202);
    alice.next_matching(T, |e| e.children().any(|c| c.name() == "body" && c.text() == "from dave")).await.unwrap();
    alice.say(vec![body("live")]).await.unwrap();
    loop {
        let r = hook.next(T).await;
        if r.json["type"] == "message" {
            assert_eq!(r.json["text"], "live", "{}", r.json);
            break;
        }
    }

    d.terminate();
    for i in 0..3 {
        alice.say(vec![body(&format!("while away {i}"))]).await.unwrap();
    }
    d.restart().await;
    wait_connected(&d, &prosody).await;
    let mut texts = Vec::new();
    let deadline = Instant::now() + T;
    while texts.len() < 3 && Instant::now() < deadline {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), hook.rx.recv()).await
            && r.json["type"] == "message"
            && let Some(t) = r.json["text"].as_str()
        {
            texts.push(t.to_string());
        }
    }
    texts.extend(
        hook.drain(Duration::from_secs(2))
            .await
            .iter()
            .filter(|r| r.json["type"] == "message")
            .filter_map(|r| r.json["text"].as_str().map(str::to_string)),
    );
    assert_eq!(texts, ["while away 0", "while away 1", "while away 2"], "{}", d.log());

    // Once more: a second restart takes nothing again.
    d.terminate();
    d.restart().await;
    wait_connected(&d, &prosody).await;
    let again = hook.drain(Duration::from_secs(3)).await;
    assert!(again.iter().all(|r| r.json["type"] != "message"), "{:?}", again.iter().map(|r| r.json.to_string()).collect::<Vec<_>>());
    let _ = early;
}

/// Many rooms: the bridge joins them a few at a time, so a delivery is not
/// queued behind every join; every room is joined all the same and relays
/// both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rooms_are_joined_a_few_at_a_time_and_all_relay() {
    const ROOMS: usize = 30;
    let prosody = Prosody::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut config = format!(
        "http: {{ listen: \"127.0.0.1:{{port}}\" }}\nstore: {{ path: \"{{db}}\" }}\n\
         outbox: {{ retry_initial: 100ms, retry_max: 1s }}\nbridges:\n  xmpp: {}\n  hooks:\n    type: webhook\n    endpoints:\n",
        prosody.bridge_config()
    );
    for i in 0..ROOMS {
        config += &format!("      w{i}: {{ inbound: {{ token: tw }}, outbound: {{ url: \"{}\" }} }}\n", hook.url());
    }
    config += "portals:\n";
    for i in 0..ROOMS {
        config += &format!(
            "  - {{ id: p{i}, links: [{{ bridge: hooks, room: w{i} }}, {{ bridge: xmpp, room: \"r{i}@conference.xmpp.test\" }}] }}\n"
        );
    }
    config += "people:\n  - { id: dave, name: Dave Bowman, accounts: { hooks: dave } }\n";
    let d = start_with(&prosody, &config).await;
    let last = format!("r{}@conference.xmpp.test", ROOMS - 1);
    let mut alice = join_room_after_bridge(&prosody, "alice", &last, "Alice").await;

    // Into the last room joined, and out of it.
    let client = reqwest::Client::new();
    let url = d.url(&format!("/bridges/hooks/w{}", ROOMS - 1));
    assert_eq!(post(&client, &url, "tw", &json!({"sender": {"id": "dave"}, "text": "to the last room"})).await.0, 202);
    alice.next_matching(T, |e| e.children().any(|c| c.name() == "body" && c.text() == "to the last room")).await.unwrap();
    let body = Element::builder("body", common::xmpp::NS_CLIENT).append("from the last room").build();
    alice.say(vec![body]).await.unwrap();
    let deadline = Instant::now() + T;
    loop {
        let r = hook.next(T).await;
        if r.json["type"] == "message" {
            assert_eq!(r.json["text"], "from the last room", "{}", r.json);
            assert_eq!(r.json["portal"].as_str(), Some(format!("p{}", ROOMS - 1).as_str()), "{}", r.json);
            break;
        }
        assert!(Instant::now() < deadline, "nothing from the last room:\n{}", d.log());
    }
    assert!(!d.log().contains("cannot join the room"), "{}", d.log());
}

/// Far more than the room's history holds is said while Causeway is
/// stopped (cleanly, then killed): when it is back it reads the room's
/// archive (XEP-0313), and every message reaches the other side once, in
/// order, before what is said live after its return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_absence_is_caught_up_from_the_rooms_archive() {
    use tokio_xmpp::minidom::rxml::xml_ncname;
    const N: usize = 300;
    const HISTORY: usize = 20;
    const NS: &str = common::xmpp::NS_CLIENT;
    let body = |t: &str| Element::builder("body", NS).append(t).build();
    let prosody = Prosody::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = start(&prosody, &hook).await;
    let mut alice = join_after_bridge(&prosody, "alice", "Alice").await;

    // The room replays only HISTORY messages on joining it (carol owns every room).
    let mut carol = XmppPeer::login(&prosody, "carol", ROOM, "Carol").await;
    let field = |var: &str, value: &str| {
        Element::builder("field", "jabber:x:data")
            .attr(xml_ncname!("var").into(), var)
            .append(Element::builder("value", "jabber:x:data").append(value).build())
            .build()
    };
    let form = Element::builder("x", "jabber:x:data")
        .attr(xml_ncname!("type").into(), "submit")
        .append(field("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"))
        .append(field("muc#roomconfig_historylength", &HISTORY.to_string()))
        .build();
    let configure = Element::builder("iq", NS)
        .attr(xml_ncname!("type").into(), "set")
        .attr(xml_ncname!("id").into(), "history-length")
        .attr(xml_ncname!("to").into(), ROOM)
        .append(Element::builder("query", "http://jabber.org/protocol/muc#owner").append(form).build())
        .build();
    carol.send_raw(&configure).await;
    // The test client passes on no iq answers: the room tells its occupants (status 104).
    alice
        .next_matching(T, |s| {
            s.name() == "message"
                && s.attr("from") == Some(ROOM)
                && s.children().any(|x| x.name() == "x" && x.children().any(|c| c.name() == "status" && c.attr("code") == Some("104")))
        })
        .await
        .unwrap_or_else(|e| panic!("the room's configuration did not change: {e}\n{}", prosody.log()));

    // Before the absence: one of Causeway's own deliveries (it must not come
    // back from the archive as someone else's) and something said live.
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &d.url("/bridges/hooks/w"), "tw", &json!({"sender": {"id": "dave"}, "text": "from dave"})).await.0, 202);
    alice
        .next_matching(T, |e| e.children().any(|c| c.name() == "body" && c.text() == "from dave"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", d.log(), prosody.log()));
    alice.say(vec![body("before")]).await.unwrap();
    loop {
        let r = hook.next(T).await;
        if r.json["type"] == "message" {
            assert_eq!(r.json["text"], "before", "{}", r.json);
            break;
        }
    }

    for (round, kill) in [(0, false), (1, true)] {
        if kill {
            d.kill();
        } else {
            d.terminate();
        }
        for i in 0..N {
            alice.say(vec![body(&format!("r{round} #{i}"))]).await.unwrap();
        }
        if round == 0 {
            // Indeed more than the history holds.
            let mut bob = XmppPeer::join(&prosody, "bob", ROOM, "Bob", 1000).await;
            let replayed = bob.history(Duration::from_secs(1)).await;
            assert!(replayed.len() <= HISTORY, "the room replays {} messages", replayed.len());
            bob.quit().await;
        }
        d.restart().await;
        wait_connected(&d, &prosody).await;
        // Said as soon as the bridge is back in the room: after everything from the archive.
        let causeway = format!("{ROOM}/Causeway");
        alice
            .next_matching(T, |s| s.name() == "presence" && s.attr("from") == Some(causeway.as_str()) && s.attr("type").is_none())
            .await
            .unwrap_or_else(|e| panic!("the bridge did not rejoin: {e}\n{}", d.log()));
        alice.say(vec![body(&format!("r{round} live"))]).await.unwrap();

        let mut want: Vec<String> = (0..N).map(|i| format!("r{round} #{i}")).collect();
        want.push(format!("r{round} live"));
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while got.len() < want.len() && Instant::now() < deadline {
            if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), hook.rx.recv()).await
                && r.json["type"] == "message"
            {
                got.push(r.json["text"].as_str().unwrap_or_default().to_string());
            }
        }
        // Nothing more comes (no doubles, nothing of Causeway's own).
        got.extend(
            hook.drain(Duration::from_secs(2))
                .await
                .iter()
                .filter(|r| r.json["type"] == "message")
                .map(|r| r.json["text"].as_str().unwrap_or_default().to_string()),
        );
        if got != want {
            let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).collect();
            let extra: Vec<&String> = got.iter().filter(|g| !want.contains(g)).collect();
            let first_diff = got.iter().zip(&want).position(|(g, w)| g != w);
            panic!(
                "round {round}: {} of {} arrived; missing {:?}…; not wanted {:?}…; first out of place at {first_diff:?}\n{}",
                got.len(),
                want.len(),
                &missing[..missing.len().min(5)],
                &extra[..extra.len().min(5)],
                d.log()
            );
        }
        assert!(d.log().contains("caught up from the room's archive"), "{}", d.log());
    }
}

/// A message larger than a stanza may be (Prosody closes a stream over
/// 256 KiB; 200 kB here) arrives whole as numbered parts, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_a_stanza_arrives_in_numbered_parts() {
    let (_prosody, _hook, d, mut alice) = alice_in_a_bridged_room().await;
    let lines: Vec<String> = (0..4000).map(|i| format!("line {i:05} of a long report, with words")).collect();
    let text = lines.join("\n");
    assert!(text.len() > 150_000);
    let (status, answer) =
        post(&reqwest::Client::new(), &d.url("/bridges/hooks/w"), "tw", &json!({"sender": {"id": "dave"}, "text": text})).await;
    assert_eq!(status, 202, "{answer}");
    let (mut got, mut parts) = (String::new(), 0);
    while !got.contains("line 03999") {
        let s = alice.seen(T).await.unwrap_or_else(|e| panic!("after {parts} parts: {e}\n{}", d.log()));
        let causeway_core::Body::Message { text, .. } = &s.body else { continue };
        parts += 1;
        assert!(text.plain.starts_with(&format!("({parts}/")), "part {parts} out of order: {}", &text.plain[..20.min(text.plain.len())]);
        got.push_str(text.plain.split_once(") ").unwrap().1);
        got.push('\n');
    }
    assert!(parts >= 3, "{parts}");
    for l in &lines {
        assert!(got.contains(l.as_str()), "{l} lost");
    }
    assert_eq!(d.metric("causeway_dead_letters_total", r#"bridge="xmpp""#).await, 0.0);
}

/// With `oversize: file` and an upload service, the same message is its
/// first lines and a link (with XEP-0066) to the whole text put there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_oversize_file_a_long_message_is_its_first_lines_and_an_uploaded_text() {
    let prosody = Prosody::start();
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let cfg = config(&prosody, &hook.url())
        .replace("reconnect_max: 2s }", "reconnect_max: 2s, upload_service: upload.xmpp.test, oversize: file }");
    let d = start_with(&prosody, &cfg).await;
    let mut alice = join_after_bridge(&prosody, "alice", "Alice").await;
    let text: String = (0..4000).map(|i| format!("line {i:05} of a long report, with words\n")).collect();
    let (status, answer) =
        post(&reqwest::Client::new(), &d.url("/bridges/hooks/w"), "tw", &json!({"sender": {"id": "dave"}, "text": text})).await;
    assert_eq!(status, 202, "{answer}");
    let (shown, attachments) = loop {
        let s = alice.seen(T).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
        if let causeway_core::Body::Message { text, attachments, .. } = s.body {
            break (text.plain, attachments);
        }
    };
    assert!(shown.starts_with("line 00000") && shown.len() < 4000, "{}", &shown[..shown.len().min(200)]);
    let url = &attachments.first().unwrap_or_else(|| panic!("no link to the text: {shown}")).url;
    assert!(url.starts_with(&format!("http://127.0.0.1:{}/file_share/", prosody.http)) && shown.contains(url.as_str()), "{url}\n{shown}");
    assert_eq!(reqwest::get(url).await.unwrap().text().await.unwrap(), text, "the uploaded file is the whole text");
    assert!(alice.seen(Duration::from_secs(2)).await.is_err(), "more than one message");
    assert_eq!(d.metric("causeway_dead_letters_total", r#"bridge="xmpp""#).await, 0.0);
}

/// Where a room shows the bridge real JIDs (non-anonymous), a person of the
/// directory is recognised by theirs and speaks elsewhere as the person;
/// where it hides them (semi-anonymous, the bridge no moderator), they are
/// an occupant ghost, and the operator is told, unless the room's `nicks`
/// map names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_recognised_where_the_room_shows_real_jids_and_the_operator_told_where_not() {
    const OPEN: &str = "open@conference.xmpp.test";
    const SEMI: &str = "semi@conference.xmpp.test";
    const MAPPED: &str = "mapped@conference.xmpp.test";
    let prosody = Prosody::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    // Alice makes the rooms before the bridge comes (so it is no owner
    // there): semi-anonymous, as Prosody makes them, and one opened to all.
    let mut alice_open = XmppPeer::join(&prosody, "alice", OPEN, "Alice", 0).await;
    let form = "<iq xmlns='jabber:client' type='set' id='test-cfg-1' to='open@conference.xmpp.test'>\
        <query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>\
        <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
        <field var='muc#roomconfig_whois'><value>anyone</value></field></x></query></iq>";
    alice_open.send_xml(form).await;
    let answer = alice_open.next_matching(T, |e| e.name() == "iq" && e.attr("id") == Some("test-cfg-1")).await.unwrap();
    assert_eq!(answer.attr("type"), Some("result"), "the room took its new configuration: {answer:?}");
    let mut alice_semi = XmppPeer::join(&prosody, "alice", SEMI, "Alice", 0).await;
    let mut bob_mapped = XmppPeer::join(&prosody, "bob", MAPPED, "Bobby", 0).await;
    let url = hook.url();
    let cfg = format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}" }}
bridges:
  hooks:
    type: webhook
    endpoints:
      open: {{ inbound: {{ token: t1 }}, outbound: {{ url: "{url}" }} }}
      semi: {{ inbound: {{ token: t2 }}, outbound: {{ url: "{url}" }} }}
      mapped: {{ inbound: {{ token: t3 }}, outbound: {{ url: "{url}" }} }}
  xmpp: {bridge}
portals:
  - {{ id: open, links: [{{ bridge: hooks, room: open }}, {{ bridge: xmpp, room: "{OPEN}" }}] }}
  - {{ id: semi, links: [{{ bridge: hooks, room: semi }}, {{ bridge: xmpp, room: "{SEMI}" }}] }}
  - {{ id: mapped, links: [{{ bridge: hooks, room: mapped }}, {{ bridge: xmpp, room: "{MAPPED}" }}] }}
people:
  - {{ id: alice, name: Alice Liddell, accounts: {{ xmpp: alice@xmpp.test }} }}
  - {{ id: bob, name: Bob Builder, accounts: {{ xmpp: bob@xmpp.test }} }}
"#,
        bridge = prosody.bridge_config().trim_end().trim_end_matches('}').to_string()
            + &format!(r#", nicks: {{ "{MAPPED}": {{ Bobby: bob }} }} }}"#)
    );
    let d = start_with(&prosody, &cfg).await;
    for (peer, room) in [(&mut alice_open, OPEN), (&mut alice_semi, SEMI), (&mut bob_mapped, MAPPED)] {
        let deadline = Instant::now() + T;
        while !peer.occupants(Duration::from_millis(300)).await.contains(&"Causeway".to_string()) {
            assert!(Instant::now() < deadline, "the bridge never joined {room}:\n{}", d.log());
        }
    }
    // Who each message came from, as the webhook is told.
    let mut from = async |peer: &mut XmppPeer, text: &str| {
        peer.say(vec![Element::builder("body", "jabber:client").append(text).build()]).await.unwrap();
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let got =
                tokio::time::timeout(left, hook.rx.recv()).await.unwrap_or_else(|_| panic!("{text:?} never came\n{}", d.log())).unwrap();
            if got.json["text"].as_str().is_some_and(|t| t.contains(text)) {
                let s = &got.json["sender"];
                return (s["person"].as_str().map(str::to_string), s["name"].as_str().unwrap_or_default().to_string());
            }
        }
    };
    let (person, name) = from(&mut alice_open, "said in the open room").await;
    assert_eq!((person.as_deref(), name.as_str()), (Some("alice"), "Alice Liddell"), "her real JID names her");
    let (person, name) = from(&mut alice_semi, "said in the semi-anonymous room").await;
    assert_eq!((person, name.as_str()), (None, "Alice"), "an occupant ghost where the room hides her JID");
    let (person, name) = from(&mut bob_mapped, "said under a mapped nick").await;
    assert_eq!((person.as_deref(), name.as_str()), (Some("bob"), "Bob Builder"), "the room's nick map names him");
    let log = d.log();
    let told: Vec<&str> = log.lines().filter(|l| l.contains("hides real JIDs")).collect();
    assert!(told.iter().any(|l| l.contains(SEMI)), "the operator is told:\n{log}");
    assert!(told.iter().any(|l| l.contains(MAPPED) && l.contains("except those its `nicks` map names")), "{log}");
    assert!(!told.iter().any(|l| l.contains(OPEN)), "not where the room shows them:\n{log}");
}

/// The config read again (`SIGHUP`) with `text`; waits until the reload is
/// the `n`th.
async fn reload_with(d: &common::Daemon, text: &str, n: usize) {
    std::fs::write(d.config_path(), text).unwrap();
    assert!(std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + T;
    while d.log().matches("config reloaded").count() < n {
        assert!(Instant::now() < deadline, "reload {n} not done:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reload adds the XMPP bridge (it connects and joins its portal's MUC),
/// changes it while messages stream into the room (every one arrives once,
/// in order; the new instance sits in the room under its new nick and the
/// old one has left), and removes it (it leaves the room; down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_changes_and_removes_the_xmpp_bridge() {
    let body = |t: &str| Element::builder("body", common::xmpp::NS_CLIENT).append(t).build();
    let said = |e: &Element| -> Option<String> {
        (e.name() == "message").then(|| e.children().find(|c| c.name() == "body").map(|c| c.text())).flatten()
    };
    let prosody = Prosody::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let full = config(&prosody, &hook.url());
    let xmpp_line = format!("  xmpp: {}\n", prosody.bridge_config());
    let ops = full[full.find("  - id: ops").unwrap()..full.find("people:").unwrap()].to_string();
    let without = full.replace(&xmpp_line, "").replace(&format!("portals:\n{ops}"), "portals: []\n");
    assert!(!without.contains("type: xmpp") && without.contains("portals: []"), "{without}");
    let d = Daemon::start(&without).await;
    let base = std::fs::read_to_string(d.config_path()).unwrap();
    let client = reqwest::Client::new();
    let w = d.url("/bridges/hooks/w");

    // Added: connected, in the room, both ways.
    let added = base.replace("portals: []\n", &format!("{xmpp_line}portals:\n{ops}"));
    reload_with(&d, &added, 1).await;
    wait_connected(&d, &prosody).await;
    let mut alice = join_after_bridge(&prosody, "alice", "Alice").await;
    let (status, answer) = post(&client, &w, "tw", &json!({"sender": {"id": "dave"}, "text": "from the new bridge"})).await;
    assert_eq!(status, 202, "{answer}\n{}", d.log());
    alice.next_matching(T, |e| said(e).as_deref() == Some("from the new bridge")).await.unwrap();
    alice.say(vec![body("to the new bridge")]).await.unwrap();
    loop {
        let r = hook.next(T).await;
        if r.json["type"] == "message" {
            assert_eq!(r.json["text"], "to the new bridge");
            break;
        }
    }

    // Changed while a stream goes into the room.
    let stream = {
        let (client, w) = (client.clone(), w.clone());
        tokio::spawn(async move {
            for n in 0..100 {
                let (status, _) = post(&client, &w, "tw", &json!({"sender": {"id": "dave"}, "text": format!("n{n}")})).await;
                assert_eq!(status, 202);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let renamed = prosody.bridge_config().replace("type: xmpp,", "type: xmpp, bot_nick: Relay,");
    let changed = added.replace(&prosody.bridge_config(), &renamed);
    assert_ne!(changed, added);
    reload_with(&d, &changed, 2).await;
    stream.await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 100 {
        if Instant::now() > deadline {
            let pending = String::from_utf8_lossy(&d.cli(&["outbox", "pending"]).stdout).to_string();
            let dead = String::from_utf8_lossy(&d.cli(&["outbox", "dead"]).stdout).to_string();
            let archived = common::archived_texts(&d, "ops").await;
            panic!("{} of 100 arrived: {got:?}\npending: {pending}\ndead: {dead}\narchived: {archived:?}\n{}", got.len(), d.log());
        }
        match alice.next_matching(Duration::from_secs(1), |e| said(e).is_some_and(|t| t.starts_with('n'))).await {
            Ok(e) => got.push(said(&e).unwrap()),
            Err(e) if e == "timed out" => {}
            Err(e) => panic!("{e}"),
        }
    }
    let want: Vec<String> = (0..100).map(|n| format!("n{n}")).collect();
    assert_eq!(got, want, "every message once, in order");
    assert!(alice.next_matching(Duration::from_secs(1), |e| said(e).is_some_and(|t| t.starts_with('n'))).await.is_err(), "nothing twice");
    assert!(!d.log().contains("reconnecting"), "the old connection ended, the new one was not pushed out:\n{}", d.log());
    let mut bob = XmppPeer::join(&prosody, "bob", ROOM, "Bob", 0).await;
    let present = bob.occupants(Duration::from_secs(1)).await;
    assert!(present.contains(&"Relay".to_string()) && !present.contains(&"Causeway".to_string()), "{present:?}");
    alice.say(vec![body("to the changed bridge")]).await.unwrap();
    let mut taken = 0;
    for r in hook.drain(Duration::from_secs(3)).await {
        if r.json["type"] == "message" {
            assert_eq!(r.json["text"], "to the changed bridge");
            taken += 1;
        }
    }
    assert_eq!(taken, 1, "taken in once, by the new instance alone");

    // Removed: it leaves the room, is down, and its portal is gone.
    reload_with(&d, &base, 3).await;
    let gone = format!("{ROOM}/Relay");
    bob.next_matching(T, |e| e.name() == "presence" && e.attr("type") == Some("unavailable") && e.attr("from") == Some(gone.as_str()))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", d.log(), prosody.log()));
    assert_eq!(d.metric("causeway_bridge_up", r#"bridge="xmpp""#).await, 0.0);
    assert_eq!(post(&client, &w, "tw", &json!({"sender": {"id": "dave"}, "text": "nowhere"})).await.0, 404);
}
