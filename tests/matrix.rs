//! The Matrix bridge against a real Synapse (tests/peers/synapse.sh) with a
//! real Matrix client, through the real `causeway` binary.
#![cfg(all(feature = "webhook", feature = "matrix"))]

mod common;

use std::time::{Duration, Instant};

use causeway_core::conformance;
use common::matrix::{MatrixPeer, Synapse, bridge_config, promote};
use common::{Daemon, Hook, Mode, WebhookPeer, post};
use serde_json::json;

const ALIAS: &str = "#causeway_ops:matrix.test";
const T: Duration = Duration::from_secs(20);

fn config(synapse_port: u16, hook: &str) -> String {
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
      dm: {{ direct: true, inbound: {{ token: tdm }}, outbound: {{ url: "{hook}" }} }}
  matrix: {bridge}
portals:
  - id: ops
    links: [{{ bridge: hooks, room: w }}, {{ bridge: matrix, room: "{ALIAS}" }}]
people:
  - id: dave
    name: Dave Bowman
    accounts: {{ hooks: dave }}
"#,
        bridge = bridge_config(synapse_port)
    )
}

/// Causeway's config and registration, a Synapse that knows it, and Causeway
/// running with its portal room set up.
async fn start(hook: &Hook) -> (Synapse, Daemon) {
    start_with(hook, None, "").await
}

/// As [`start`], with Synapse limiting the bridge to `rc_message`, and
/// `options` added to the Matrix bridge's (`, key: value`).
async fn start_with(hook: &Hook, rc_message: Option<&str>, options: &str) -> (Synapse, Daemon) {
    // Synapse's port is needed in the config before Synapse starts.
    let synapse_port = common::free_port();
    let config = config(synapse_port, &hook.url()).replace("request_timeout: 10s", &format!("request_timeout: 10s{options}"));
    let mut d = Daemon::prepare(&config, &[]);
    let registration = d.dir.path().join("registration.yaml");
    let out = d.cli(&["matrix", "registration", "--output", registration.to_str().unwrap()]);
    assert!(out.status.success(), "registration: {}", String::from_utf8_lossy(&out.stderr));
    let synapse = Synapse::start_with(&registration, synapse_port, rc_message);
    d.restart().await;
    wait_set_up(&d, &synapse).await;
    (synapse, d)
}

async fn wait_set_up(d: &Daemon, synapse: &Synapse) {
    let deadline = Instant::now() + T;
    while !d.log().contains("every Matrix room is set up") {
        assert!(Instant::now() < deadline, "Matrix rooms not set up:\n{}\n{}", d.log(), synapse.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PUT a transaction to Causeway as the homeserver would, with `token`.
async fn push(d: &Daemon, txn: &str, token: Option<&str>, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().put(d.url(&format!("/bridges/matrix/_matrix/app/v1/transactions/{txn}"))).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// A message event of `sender` in `room`, as the homeserver sends it.
fn event(id: &str, room: &str, sender: &str, text: &str) -> serde_json::Value {
    json!({"type": "m.room.message", "event_id": id, "room_id": room, "sender": sender, "origin_server_ts": 1_700_000_000_000u64,
           "content": {"msgtype": "m.text", "body": text}})
}

/// Only the homeserver's token opens the transaction endpoint; a transaction
/// sent twice (or an event in two transactions) is taken once; events that
/// do not parse are dropped and the rest of the transaction is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_authenticated_deduplicated_and_hostile_events_dropped() {
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, d) = start(&hook).await;
    synapse.register("alice");
    let alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
    let room = alice.room_id.clone();
    let forged = json!({"events": [event("$forged", &room, "@alice:matrix.test", "forged")]});
    assert_eq!(push(&d, "f1", None, &forged).await.0, 401);
    assert_eq!(push(&d, "f2", Some("as-secret-token"), &forged).await.0, 403, "the as_token is not the hs_token");
    assert_eq!(push(&d, "f3", Some("hs-secret-tokeN"), &forged).await.0, 403);
    // A token in the URL is not taken, not even the right one (it would sit
    // in access logs); `hs_token_in_query` is for homeservers that need it.
    for (txn, token) in [("f4", "wrong"), ("f5", "hs-secret-token")] {
        let r = reqwest::Client::new()
            .put(d.url(&format!("/bridges/matrix/_matrix/app/v1/transactions/{txn}?access_token={token}")))
            .json(&forged)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{token}");
    }
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="matrix",reason="unauthorized""#).await, 3.0);
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="matrix",reason="token_in_query""#).await, 2.0);

    // A real transaction, with hostile events around one good one.
    let hostile = json!({"events": [
        {"type": "m.room.message", "room_id": room},
        {"type": "m.room.message", "event_id": "$bad1", "room_id": room, "sender": "not a user", "origin_server_ts": 1, "content": {}},
        {"type": "m.room.message", "event_id": "$bad2", "room_id": room, "sender": "@alice:matrix.test", "origin_server_ts": "soon", "content": {"body": 5}},
        {"type": "m.reaction", "event_id": "$bad3", "room_id": room, "sender": "@alice:matrix.test", "origin_server_ts": 1, "content": {"m.relates_to": {"key": "x"}}},
        event("$good", &room, "@alice:matrix.test", "the one good event"),
        {"type": "m.room.message", "event_id": "$big", "room_id": room, "sender": "@alice:matrix.test", "origin_server_ts": 1,
         "content": {"msgtype": "m.text", "body": "", "format": "org.matrix.custom.html", "formatted_body": "<script>alert(1)</script>"}},
        event("$ghost", &room, "@causeway_someone:matrix.test", "a ghost's echo"),
    ], "ephemeral": [{"type": "m.typing", "content": "nonsense"}]});
    assert_eq!(push(&d, "h1", Some("hs-secret-token"), &hostile).await.0, 200);
    let got = loop {
        let got = hook.next(T).await;
        if got.json["type"] == "message" {
            break got;
        }
    };
    assert_eq!(got.json["text"], "the one good event", "{}", got.json);
    // Again as the same transaction, and the good event in a new one: nothing new.
    assert_eq!(push(&d, "h1", Some("hs-secret-token"), &hostile).await.0, 200);
    assert_eq!(
        push(&d, "h2", Some("hs-secret-token"), &json!({"events": [event("$good", &room, "@alice:matrix.test", "the one good event")]}))
            .await
            .0,
        200
    );
    // Not JSON at all.
    let r = reqwest::Client::new()
        .put(d.url("/bridges/matrix/_matrix/app/v1/transactions/h3"))
        .bearer_auth("hs-secret-token")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let extra: Vec<_> = hook.drain(Duration::from_millis(800)).await.into_iter().filter(|r| r.json["type"] == "message").collect();
    assert!(extra.is_empty(), "taken again: {:?}", extra.iter().map(|r| &r.json).collect::<Vec<_>>());
    assert_eq!(common::archived_texts(&d, "ops").await, ["the one good event"], "only the good event is archived");
}

/// Ghosts carry the person's name (and follow it when it changes) and their presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghost_names_and_presence_follow_the_person() {
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, d) = start(&hook).await;
    synapse.register("alice");
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
    let client = reqwest::Client::new();
    let url = d.url("/bridges/hooks/w");
    let say = |id: &str, name: &str, text: &str| json!({"sender": {"id": id, "name": name}, "text": text});

    // A directory person: the directory's name, whatever the webhook says.
    assert_eq!(post(&client, &url, "tw", &say("dave", "dave-bot", "hello")).await.0, 202);
    let m = alice.next_matching(T, |e| e["content"]["body"] == "hello").await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let dave = m["sender"].as_str().unwrap().to_string();
    assert_eq!(dave, "@causeway_dave:matrix.test");
    assert_eq!(alice.profile(&dave).await.unwrap()["displayname"], "Dave Bowman");

    // Someone the directory does not know: their name and picture, and a new name.
    let (avatar, png) = common::serve_file().await;
    let hi = json!({"sender": {"id": "bob", "name": "Bob", "avatar_url": avatar}, "text": "hi"});
    assert_eq!(post(&client, &url, "tw", &hi).await.0, 202);
    let m = alice.next_matching(T, |e| e["content"]["body"] == "hi").await.unwrap();
    let bob = m["sender"].as_str().unwrap().to_string();
    let profile = alice.profile(&bob).await.unwrap();
    assert_eq!(profile["displayname"], "Bob");
    let mxc = profile["avatar_url"].as_str().unwrap_or_else(|| panic!("no avatar: {profile}\n{}", d.log())).to_string();
    use causeway_core::conformance::Peer;
    assert_eq!(alice.fetch(&mxc).await.unwrap(), png, "the picture is the person's");
    assert_eq!(post(&client, &url, "tw", &say("bob", "Robert", "call me Robert")).await.0, 202);
    alice.next_matching(T, |e| e["content"]["body"] == "call me Robert").await.unwrap();
    assert_eq!(alice.profile(&bob).await.unwrap()["displayname"], "Robert");

    // Presence: set on the webhook side, seen on Matrix, both ways round.
    let away = json!({"type": "presence", "sender": {"id": "dave"}, "show": "dnd", "status": "in a meeting"});
    assert_eq!(post(&client, &url, "tw", &away).await.0, 202);
    let deadline = Instant::now() + T;
    loop {
        let p = alice.presence_of(&dave).await.unwrap();
        if p["presence"] == "unavailable" && p["status_msg"] == "in a meeting" {
            break;
        }
        assert!(Instant::now() < deadline, "ghost presence not set: {p}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back = json!({"type": "presence", "sender": {"id": "dave"}, "show": "online"});
    assert_eq!(post(&client, &url, "tw", &back).await.0, 202);
    loop {
        let p = alice.presence_of(&dave).await.unwrap();
        if p["presence"] == "online" {
            break;
        }
        assert!(Instant::now() < deadline, "ghost presence not back: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Synapse limits the bridge's messages: every one still arrives, in
/// order, after waiting as told (M_LIMIT_EXCEEDED with retry_after_ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out_and_nothing_is_dropped() {
    const N: usize = 12;
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, d) = start_with(&hook, Some("{ per_second: 2, burst_count: 3 }"), "").await;
    synapse.register("alice");
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
    let client = reqwest::Client::new();
    for i in 0..N {
        let msg = json!({"sender": {"id": "dave"}, "text": format!("limited #{i}")});
        assert_eq!(post(&client, &d.url("/bridges/hooks/w"), "tw", &msg).await.0, 202);
    }
    for i in 0..N {
        let want = format!("limited #{i}");
        let m = alice
            .next_matching(Duration::from_secs(60), |e| e["content"]["body"].as_str().is_some_and(|b| b.starts_with("limited #")))
            .await
            .unwrap_or_else(|e| panic!("{e} waiting for {want}\n{}", d.log()));
        assert_eq!(m["content"]["body"], want.as_str(), "out of order");
    }
    assert!(d.metric("causeway_delivery_retries_total", r#"bridge="matrix""#).await > 0.0, "the limit was never hit:\n{}", d.log());
    assert_eq!(d.metric("causeway_dead_letters_total", r#"bridge="matrix""#).await, 0.0);
}

/// SIGKILL while Synapse pushes 500 messages: after the restart each one
/// reaches the webhook exactly once (one idempotency key per message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_synapse_pushes_500_messages_loses_and_doubles_nothing() {
    const N: usize = 500;
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, mut d) = start(&hook).await;
    synapse.register("alice");
    let base = synapse.url();
    let sender = tokio::spawn(async move {
        let mut alice = MatrixPeer::join(&base, "alice", ALIAS).await;
        for i in 0..N {
            alice.send("m.room.message", json!({"msgtype": "m.text", "body": format!("m #{i}")})).await.unwrap();
        }
    });
    let mut keys: std::collections::HashMap<usize, std::collections::HashSet<String>> = Default::default();
    let record = |got: common::Received, keys: &mut std::collections::HashMap<usize, std::collections::HashSet<String>>| {
        if let Some(n) = got.json["text"].as_str().and_then(|t| t.strip_prefix("m #")).and_then(|n| n.parse().ok()) {
            keys.entry(n).or_default().insert(got.key);
        }
    };
    while keys.len() < 100 {
        let got = hook.next(Duration::from_secs(60)).await;
        record(got, &mut keys);
    }
    d.kill();
    let at_kill = keys.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.restart().await;
    sender.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    while keys.len() < N {
        if Instant::now() >= deadline {
            let missing: Vec<usize> = (0..N).filter(|i| !keys.contains_key(i)).collect();
            panic!("{} of {N} arrived; missing {missing:?}\n{}", keys.len(), d.log());
        }
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_secs(5), hook.rx.recv()).await {
            record(got, &mut keys);
        }
    }
    for got in hook.drain(Duration::from_secs(3)).await {
        record(got, &mut keys);
    }
    let doubled: Vec<_> = keys.iter().filter(|(_, k)| k.len() > 1).collect();
    assert!(doubled.is_empty(), "delivered under several keys: {doubled:?}");
    assert_eq!(keys.len(), N);
    eprintln!("{N} messages, {at_kill} before the kill, all delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_conformance_with_a_webhook() {
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, mut d) = start(&hook).await;
    synapse.register("alice");
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await.with_appservice(d.url("/bridges/matrix"));
    // The bridge created the room; it lets alice change the topic (but not
    // moderate: her redaction of someone else's message is hers alone).
    common::matrix::open_topic(&synapse, &alice.room_id).await;
    let mut web = WebhookPeer::new("w", d.url("/bridges/hooks/w"), "tw", hook).with_direct("hooks", d.url("/bridges/hooks/dm"), "tdm");
    let file = common::serve_file().await;
    let opts = conformance::Options { timeout: T, file: Some(file), ..Default::default() };
    let mut causeway = common::Restarts { daemon: &mut d, bridges: &["matrix", "hooks"] };
    let result = conformance::run(&mut web, &mut alice, &mut causeway, &opts).await;
    let report = result.unwrap_or_else(|e| panic!("{e}\n--- causeway ---\n{}\n--- synapse ---\n{}", d.log(), synapse.log()));
    // Everything both ways, and a direct conversation.
    assert_eq!(report.passed.len(), 35, "{report}");
    assert!(report.skipped.is_empty(), "{report}");
}

/// Typing, the topic and comings and goings cross both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_topic_and_membership_cross_both_ways() {
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, d) = start(&hook).await;
    synapse.register("alice");
    synapse.register("bob");
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
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

    // Matrix → webhook.
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", alice.room_id, alice.user_id);
    let r = reqwest::Client::new()
        .put(format!("{}{typing}", synapse.url()).replace('!', "%21").replace("@alice:", "%40alice%3A"))
        .bearer_auth(alice_token(&synapse).await)
        .json(&json!({"typing": true, "timeout": 10000}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    from_hook(&mut hook, "typing", &|j| j["type"] == "typing" && j["active"] == true).await;
    // The bridge created the room; it lets alice change the topic.
    promote(&synapse, &alice.room_id, &alice.user_id).await;
    alice.send_state("m.room.topic", json!({"topic": "launch day"})).await.unwrap();
    from_hook(&mut hook, "topic", &|j| j["type"] == "topic" && j["topic"] == "launch day").await;
    let bob = MatrixPeer::join(&synapse.url(), "bob", ALIAS).await;
    from_hook(&mut hook, "join", &|j| j["type"] == "membership" && j["membership"] == "join" && j["sender"]["id"] == "@bob:matrix.test")
        .await;
    // Alice (a moderator now) removes Bob: it is Bob who leaves, not Alice.
    let kick = format!("{}/_matrix/client/v3/rooms/{}/kick", synapse.url(), alice.room_id.replace('!', "%21").replace(':', "%3A"));
    let r = reqwest::Client::new()
        .post(kick)
        .bearer_auth(alice_token(&synapse).await)
        .json(&json!({"user_id": "@bob:matrix.test"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    from_hook(&mut hook, "leave", &|j| j["type"] == "membership" && j["membership"] == "leave" && j["sender"]["id"] == "@bob:matrix.test")
        .await;
    drop(bob);

    // Webhook → Matrix.
    let client = reqwest::Client::new();
    let url = d.url("/bridges/hooks/w");
    let dave = |extra: serde_json::Value| {
        let mut j = json!({"sender": {"id": "dave"}});
        j.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        j
    };
    assert_eq!(post(&client, &url, "tw", &dave(json!({"type": "typing", "active": true}))).await.0, 202);
    alice
        .next_matching(T, |e| {
            e["type"] == "m.typing"
                && e["content"]["user_ids"].as_array().is_some_and(|u| u.iter().any(|u| u == "@causeway_dave:matrix.test"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(post(&client, &url, "tw", &dave(json!({"type": "topic", "topic": "launch moved"}))).await.0, 202);
    alice.next_matching(T, |e| e["type"] == "m.room.topic" && e["content"]["topic"] == "launch moved").await.unwrap();
    assert_eq!(post(&client, &url, "tw", &dave(json!({"type": "membership", "membership": "leave"}))).await.0, 202);
    alice
        .next_matching(T, |e| {
            e["type"] == "m.room.member" && e["state_key"] == "@causeway_dave:matrix.test" && e["content"]["membership"] == "leave"
        })
        .await
        .unwrap_or_else(|e| panic!("the ghost did not leave: {e}\n{}", d.log()));
}

/// A login token for alice (a second session).
async fn alice_token(synapse: &Synapse) -> String {
    let login = common::matrix::login(&reqwest::Client::new(), &synapse.url(), "alice").await;
    login["access_token"].as_str().unwrap().to_string()
}

/// SIGKILL while Causeway sends 200 messages into Matrix: after the restart
/// the room has each exactly once (the delivery id is the transaction id,
/// so a delivery repeated after the crash is not a second message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_sending_to_matrix_doubles_nothing() {
    const N: usize = 200;
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, mut d) = start(&hook).await;
    synapse.register("alice");
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
    let client = reqwest::Client::new();
    for i in 0..N {
        let msg = json!({"id": format!("w{i}"), "sender": {"id": "dave"}, "text": format!("w #{i}")});
        assert_eq!(post(&client, &d.url("/bridges/hooks/w"), "tw", &msg).await.0, 202);
    }
    let mut seen: std::collections::HashMap<usize, usize> = Default::default();
    let count = |e: &serde_json::Value, seen: &mut std::collections::HashMap<usize, usize>| {
        if let Some(n) = e["content"]["body"].as_str().and_then(|b| b.strip_prefix("w #")).and_then(|n| n.parse().ok()) {
            *seen.entry(n).or_default() += 1;
        }
    };
    while seen.len() < 40 {
        let e = alice.next_matching(T, |e| e["type"] == "m.room.message").await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
        count(&e, &mut seen);
    }
    d.kill();
    d.restart().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < N {
        if Instant::now() > deadline {
            let pending = d.cli(&["outbox", "pending"]);
            let dead = d.cli(&["outbox", "dead"]);
            let missing: Vec<usize> = (0..N).filter(|i| !seen.contains_key(i)).collect();
            panic!(
                "{} of {N} arrived, missing {missing:?}\n{}\n{}\n{}",
                seen.len(),
                String::from_utf8_lossy(&pending.stdout),
                String::from_utf8_lossy(&dead.stdout),
                d.log()
            );
        }
        if let Ok(e) = alice.next_matching(Duration::from_secs(5), |e| e["type"] == "m.room.message").await {
            count(&e, &mut seen);
        }
    }
    // Anything repeated would come right behind.
    while let Ok(e) = alice.next_matching(Duration::from_secs(3), |e| e["type"] == "m.room.message").await {
        count(&e, &mut seen);
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(doubled.is_empty(), "doubled: {doubled:?}");
    assert_eq!(seen.len(), N);
}

/// A room linked by id: the bridge's user is invited by a member and joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_linked_by_id_is_joined_once_the_bridge_is_invited() {
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    // Causeway's config names the room, which alice creates once Synapse
    // (which needs the registration from that config) runs.
    const PLACEHOLDER: &str = "!to-be-created";
    let synapse_port = common::free_port();
    let mut d = Daemon::prepare(&config(synapse_port, &hook.url()).replace(ALIAS, PLACEHOLDER), &[]);
    let registration = d.dir.path().join("registration.yaml");
    assert!(d.cli(&["matrix", "registration", "--output", registration.to_str().unwrap()]).status.success());
    let synapse = Synapse::start_with(&registration, synapse_port, None);
    synapse.register("alice");
    let token = alice_token(&synapse).await;
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/createRoom", synapse.url()))
        .bearer_auth(&token)
        .json(&json!({"preset": "private_chat", "name": "alice's room"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room = created["room_id"].as_str().unwrap().to_string();
    // Causeway linked to it by id, not invited yet: it says what to do.
    let text = std::fs::read_to_string(d.config_path()).unwrap().replace(PLACEHOLDER, &room);
    std::fs::write(d.config_path(), text).unwrap();
    d.restart().await;
    let deadline = Instant::now() + T;
    while !d.log().contains("invite @causeway:matrix.test") {
        assert!(Instant::now() < deadline, "no hint to invite:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Alice invites the bridge; it joins and bridges her room.
    let r = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/rooms/{}/invite", synapse.url(), room.replace('!', "%21").replace(':', "%3A")))
        .bearer_auth(&token)
        .json(&json!({"user_id": "@causeway:matrix.test"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_set_up(&d, &synapse).await;
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", &room).await;
    alice.send("m.room.message", json!({"msgtype": "m.text", "body": "in my own room"})).await.unwrap();
    let deadline = Instant::now() + T;
    loop {
        let got = tokio::time::timeout_at(deadline.into(), hook.rx.recv()).await;
        let got = got.unwrap_or_else(|_| panic!("nothing from alice's room:\n{}\n{}", d.log(), synapse.log())).unwrap();
        if got.json["text"] == "in my own room" {
            break;
        }
    }
}

/// Double puppeting: a person whose own Matrix account is in the directory
/// and in the room speaks in Matrix as that account (through the second
/// registration) when the network they spoke on is trusted for it; nothing
/// Causeway says as them comes back as theirs, while what they write
/// themselves does (even with the mark copied in). Others keep their ghost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_puppeting_speaks_as_the_persons_own_account() {
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let config = config(0, &hook.url())
        .replace("request_timeout: 10s }", "request_timeout: 10s, double_puppet_token: dp-secret-token, double_puppet_from: [hooks] }")
        .replace(
            "people:\n",
            "people:\n  - id: bob\n    name: Bob Builder\n    accounts: { hooks: bob, matrix: \"@bob:matrix.test\" }\n  - id: erin\n    name: Erin Example\n    accounts: { hooks: erin, matrix: \"@erin:matrix.test\" }\n",
        );
    let mut d = Daemon::prepare(&config, &[]);
    let main = d.dir.path().join("registration.yaml");
    let puppet = d.dir.path().join("double-puppet.yaml");
    let out = d.cli(&["matrix", "registration", "--output", main.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = d.cli(&["matrix", "registration", "--double-puppet", "--output", puppet.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let synapse = Synapse::start_with_extra(&main, &[&puppet]);
    // The homeserver's port is known now: point the config at it.
    let text = std::fs::read_to_string(d.config_path()).unwrap().replace("http://127.0.0.1:0\"", &format!("{}\"", synapse.url()));
    std::fs::write(d.config_path(), text).unwrap();
    for user in ["alice", "bob", "erin"] {
        synapse.register(user);
    }
    d.restart().await;
    wait_set_up(&d, &synapse).await;
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
    let mut bob = MatrixPeer::join(&synapse.url(), "bob", ALIAS).await;
    let client = reqwest::Client::new();
    let url = d.url("/bridges/hooks/w");
    // The joins reach the webhook; from here on only what is said counts.
    let deadline = Instant::now() + T;
    let mut joined = 0;
    while joined < 2 {
        assert!(Instant::now() < deadline, "the joins did not arrive");
        if hook.next(T).await.json["type"] == "membership" {
            joined += 1;
        }
    }

    // Bob speaks on the webhook: Matrix shows his own account.
    let say = json!({"id": "w-1", "sender": {"id": "bob"}, "text": "bob via the webhook"});
    assert_eq!(post(&client, &url, "tw", &say).await.0, 202);
    let m = alice.next_matching(T, |e| e["content"]["body"] == "bob via the webhook").await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(m["sender"], "@bob:matrix.test", "{m}");
    let bobs_event = m["event_id"].as_str().unwrap().to_string();
    // Dave has no Matrix account, Erin's is not in the room: their ghosts
    // (Causeway never moves a person's own account into a room).
    for (who, ghost) in [("dave", "@causeway_dave:matrix.test"), ("erin", "@causeway_erin:matrix.test")] {
        let text = format!("{who} via the webhook");
        assert_eq!(post(&client, &url, "tw", &json!({"sender": {"id": who}, "text": text})).await.0, 202);
        let m = alice.next_matching(T, |e| e["content"]["body"] == text.as_str()).await.unwrap();
        assert_eq!(m["sender"], ghost);
    }

    // An edit and a reaction of Bob's are his own account's too.
    let edit = json!({"type": "edit", "sender": {"id": "bob"}, "target": "w-1", "text": "bob, edited"});
    let (status, body) = post(&client, &url, "tw", &edit).await;
    assert_eq!(status, 202, "{body}");
    let m = alice
        .next_matching(T, |e| e["content"]["m.new_content"]["body"] == "bob, edited")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(m["sender"], "@bob:matrix.test");
    assert_eq!(m["content"]["m.relates_to"]["event_id"], bobs_event.as_str());
    let react = json!({"type": "reaction", "sender": {"id": "bob"}, "target": "w-1", "key": "👍"});
    assert_eq!(post(&client, &url, "tw", &react).await.0, 202);
    let m = alice.next_matching(T, |e| e["type"] == "m.reaction").await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(
        (m["sender"].as_str(), m["content"]["m.relates_to"]["event_id"].as_str()),
        (Some("@bob:matrix.test"), Some(bobs_event.as_str()))
    );

    // Bob writing in his own Matrix client reaches the webhook as Bob, also
    // with the mark copied into it; what Causeway said as him never does.
    bob.send("m.room.message", json!({"msgtype": "m.text", "body": "typed by bob"})).await.unwrap();
    bob.send("m.room.message", json!({"msgtype": "m.text", "body": "forwarded by bob", "net.causeway.puppet": true})).await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + T;
    while !seen.iter().any(|r: &common::Received| r.json["text"] == "forwarded by bob") {
        assert!(Instant::now() < deadline, "Bob's own messages did not arrive: {seen:?}\n{}", d.log());
        seen.push(hook.next(T).await);
    }
    seen.extend(hook.drain(Duration::from_secs(2)).await);
    let said: Vec<String> =
        seen.iter().filter(|r| r.json["type"] == "message").map(|r| format!("{} {}", r.json["sender"]["person"], r.json["text"])).collect();
    assert_eq!(
        said,
        [r#""bob" "typed by bob""#, r#""bob" "forwarded by bob""#],
        "{:?}",
        seen.iter().map(|r| r.json.to_string()).collect::<Vec<_>>()
    );
    assert!(
        seen.iter().all(|r| r.json["type"] != "edit" && r.json["type"] != "reaction"),
        "echoes: {:?}",
        seen.iter().map(|r| r.json.to_string()).collect::<Vec<_>>()
    );
    // Recognised at the door, not left to the router's loop check (which
    // depends on the send's answer being stored first).
    assert_eq!(d.metric("causeway_events_dropped_total", r#"bridge="matrix",reason="loop""#).await, 0.0);
    assert!(!d.log().contains("ERROR"), "{}", d.log());
}

/// A file server (where the tests' bridges may fetch) that answers every
/// request with headers and then a byte a second, forever (a tarpit): its URL.
async fn tarpit() -> String {
    let listener = tokio::net::TcpListener::bind((common::FILES_HOST, 0)).await.unwrap();
    let url = format!("http://{}/slow.bin", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ =
                    sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n").await;
                // Bounded: a minute at most, then the connection closes.
                for _ in 0..60 {
                    if sock.write_all(b"x").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    });
    url
}

/// A file link whose server drips a byte a second holds nothing up: the
/// message goes on with the link once the fetch times out, and the next
/// message follows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tarpit_attachment_does_not_hold_the_room() {
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, d) = start(&hook).await;
    synapse.register("alice");
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
    let slow = tarpit().await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let with_file = json!({"sender": {"id": "dave"}, "text": "see the file", "attachments": [{"url": slow, "name": "slow.bin"}]});
    assert_eq!(post(&http, &d.url("/bridges/hooks/w"), "tw", &with_file).await.0, 202);
    assert_eq!(post(&http, &d.url("/bridges/hooks/w"), "tw", &json!({"sender": {"id": "dave"}, "text": "after the file"})).await.0, 202);
    let body = |e: &serde_json::Value| e["content"]["body"].as_str().unwrap_or_default().to_string();
    let first = alice
        .next_matching(Duration::from_secs(60), |e| body(e).contains("see the file"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert!(body(&first).contains(&slow), "the link instead of the file: {first}");
    alice.next_matching(Duration::from_secs(30), |e| body(e) == "after the file").await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    // request_timeout is 10 s in these tests; the tarpit would drip for a minute.
    assert!(started.elapsed() < Duration::from_secs(40), "took {:?}", started.elapsed());
    assert_eq!(d.metric("causeway_dead_letters_total", r#"bridge="matrix""#).await, 0.0);
}

/// A 139 kB message (more than a Matrix event may hold) arrives whole, as
/// numbered parts in order, and is no dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_a_matrix_event_arrives_in_numbered_parts() {
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, d) = start(&hook).await;
    synapse.register("alice");
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
    let lines: Vec<String> = (0..3000).map(|i| format!("line {i:05} of a long report, with some words in it")).collect();
    let text = lines.join("\n");
    assert!(text.len() > 139_000, "{}", text.len());
    let http = reqwest::Client::new();
    let (status, answer) = post(&http, &d.url("/bridges/hooks/w"), "tw", &json!({"sender": {"id": "dave"}, "text": text})).await;
    assert_eq!(status, 202, "{answer}");
    let mut got = String::new();
    let mut parts = 0;
    while !got.contains("line 02999") {
        let e = alice
            .next_matching(Duration::from_secs(30), |e| {
                e["content"]["body"].as_str().is_some_and(|b| b.starts_with('(') && b.contains("line "))
            })
            .await
            .unwrap_or_else(|e| panic!("after {parts} parts: {e}\n{}", d.log()));
        let b = e["content"]["body"].as_str().unwrap();
        parts += 1;
        assert!(b.starts_with(&format!("({parts}/")), "part {parts} out of order: {}", &b[..20]);
        got.push_str(b.split_once(") ").unwrap().1);
        got.push('\n');
    }
    assert!(parts >= 3, "{parts}");
    for l in &lines {
        assert!(got.contains(l.as_str()), "{l} lost");
    }
    assert_eq!(d.metric("causeway_dead_letters_total", r#"bridge="matrix""#).await, 0.0);
}

/// With `oversize: file`, the same message is its first lines in the room
/// and the whole text as `message.txt` in the media repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_oversize_file_a_long_message_is_its_first_lines_and_a_text_file() {
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, d) = start_with(&hook, None, ", oversize: file").await;
    synapse.register("alice");
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
    let text: String = (0..3000).map(|i| format!("line {i:05} of a long report, with some words in it\n")).collect();
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &d.url("/bridges/hooks/w"), "tw", &json!({"sender": {"id": "dave"}, "text": text})).await.0, 202);
    let body = |e: &serde_json::Value| e["content"]["body"].as_str().unwrap_or_default().to_string();
    let first = alice
        .next_matching(Duration::from_secs(30), |e| body(e).starts_with("line 00000"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert!(body(&first).len() < 3000 && body(&first).ends_with("in all: message.txt)"), "{}", body(&first));
    let file = alice
        .next_matching(Duration::from_secs(30), |e| e["content"]["msgtype"] == "m.file")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(file["content"]["body"], "message.txt", "{file}");
    let mxc = file["content"]["url"].as_str().unwrap();
    assert_eq!(causeway_core::conformance::Peer::fetch(&mut alice, mxc).await.unwrap(), text.as_bytes(), "the file is the whole text");
    assert_eq!(d.metric("causeway_dead_letters_total", r#"bridge="matrix""#).await, 0.0);
}

/// Between Synapse and Causeway: passes every request on, except that it
/// answers the first transaction holding `swallow` with `200` itself and
/// never passes it on — what Causeway sees when the homeserver strands a
/// transaction (the number of one is missing). The real Synapse's events
/// stay in the room; only their push is lost.
async fn stranding_proxy(to: String, swallow: &'static str) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use axum::body::Bytes;
    use axum::extract::{Request, State};
    use axum::response::IntoResponse;
    use std::sync::atomic::{AtomicBool, Ordering};
    let swallowed = std::sync::Arc::new(AtomicBool::new(false));
    let state = (to, swallowed.clone(), reqwest::Client::new());
    async fn pass(
        State((to, swallowed, http)): State<(String, std::sync::Arc<AtomicBool>, reqwest::Client)>,
        req: Request,
    ) -> axum::response::Response {
        let (parts, body) = req.into_parts();
        let body: Bytes = axum::body::to_bytes(body, 32 * 1024 * 1024).await.unwrap_or_default();
        let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
        if path.contains("/transactions/")
            && String::from_utf8_lossy(&body).contains(SWALLOW.get().unwrap().as_str())
            && !swallowed.swap(true, Ordering::AcqRel)
        {
            return (axum::http::StatusCode::OK, axum::Json(json!({}))).into_response();
        }
        let mut out = http.request(parts.method.clone(), format!("{to}{path}")).body(body.to_vec());
        if let Some(auth) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            out = out.header(axum::http::header::AUTHORIZATION, auth.clone());
        }
        if let Some(ct) = parts.headers.get(axum::http::header::CONTENT_TYPE) {
            out = out.header(axum::http::header::CONTENT_TYPE, ct.clone());
        }
        match out.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let bytes = r.bytes().await.unwrap_or_default();
                (axum::http::StatusCode::from_u16(status).unwrap(), bytes).into_response()
            }
            Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
        }
    }
    static SWALLOW: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let _ = SWALLOW.set(swallow.to_string());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(pass).with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, swallowed)
}

/// A transaction the homeserver never delivers (as Synapse strands one
/// while its recoverer finishes): the next transaction's number skips one,
/// Causeway reads the room's timeline first, and every message arrives once
/// and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranded_transaction_is_found_in_the_room_and_delivered_in_order() {
    const N: usize = 12;
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let synapse_port = common::free_port();
    let mut d = Daemon::prepare(&config(synapse_port, &hook.url()), &[]);
    let registration = d.dir.path().join("registration.yaml");
    let out = d.cli(&["matrix", "registration", "--output", registration.to_str().unwrap()]);
    assert!(out.status.success(), "registration: {}", String::from_utf8_lossy(&out.stderr));
    // Synapse reaches Causeway through the proxy.
    let causeway = format!("http://127.0.0.1:{}/bridges/matrix", d.port);
    let (proxy, swallowed) = stranding_proxy(causeway.clone(), "stranded #5").await;
    let yaml = std::fs::read_to_string(&registration).unwrap();
    assert!(yaml.contains(&causeway), "{yaml}");
    std::fs::write(&registration, yaml.replace(&causeway, &proxy)).unwrap();
    let synapse = Synapse::start_with(&registration, synapse_port, None);
    d.restart().await;
    wait_set_up(&d, &synapse).await;
    synapse.register("alice");
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
    for i in 0..N {
        alice.send("m.room.message", json!({"msgtype": "m.text", "body": format!("stranded #{i}")})).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < N && Instant::now() < deadline {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(1), hook.rx.recv()).await
            && let Some(n) = r.json["text"].as_str().and_then(|t| t.strip_prefix("stranded #")).and_then(|n| n.parse::<usize>().ok())
        {
            got.push(n);
        }
    }
    for r in hook.drain(Duration::from_secs(2)).await {
        if let Some(n) = r.json["text"].as_str().and_then(|t| t.strip_prefix("stranded #")).and_then(|n| n.parse::<usize>().ok()) {
            got.push(n);
        }
    }
    assert!(swallowed.load(std::sync::atomic::Ordering::Acquire), "the proxy never met the transaction");
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "once each, in order\n{}", d.log());
    assert!(d.metric("causeway_reconciled_total", r#"bridge="matrix""#).await >= 1.0, "{}", d.log());
}

/// Files from Matrix reach other networks through Causeway's media links,
/// passed on as they come from the homeserver and no more than
/// `media_concurrency` at once: a reader that has not taken a 20 MB file
/// yet holds the one place, the next request waits and gets 503 (not
/// another copy of the file in memory), and once the file is out the place
/// is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_proxy_passes_files_on_as_they_come_and_so_many_at_once() {
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, _d) = start_with(&hook, None, ", media_concurrency: 1").await;
    synapse.register("alice");
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
    let big: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mxc = alice.upload(big.clone(), "application/octet-stream").await.unwrap();
    let content = json!({"msgtype": "m.file", "body": "the big one", "filename": "big.bin", "url": mxc, "info": {"size": big.len()}});
    alice.send("m.room.message", content).await.unwrap();
    let got = loop {
        let got = hook.next(T).await;
        if got.json["attachments"][0]["url"].is_string() {
            break got;
        }
    };
    let link = got.json["attachments"][0]["url"].as_str().unwrap().to_string();
    assert!(link.contains("/bridges/matrix/media/"), "{link}");
    let http = reqwest::Client::new();
    // The first reader takes the answer's head and nothing of its body.
    let slow = http.get(&link).send().await.unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.headers()["content-disposition"], "attachment");
    let refused = http.get(&link).send().await.unwrap();
    assert_eq!(refused.status(), 503, "one place, taken");
    assert!(refused.headers().contains_key("retry-after"));
    // Taken whole, byte for byte; then the place is free.
    let body = slow.bytes().await.unwrap();
    assert!(body == big, "{} bytes came", body.len());
    let again = http.get(&link).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.bytes().await.unwrap().len(), big.len());
}
