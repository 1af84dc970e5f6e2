//! XMPP, Matrix, email and webhooks in one portal, each against its real
//! server with a real client, through the real binary.
#![cfg(all(feature = "webhook", feature = "xmpp", feature = "matrix", feature = "email"))]

mod common;

use std::time::{Duration, Instant};

use causeway_core::conformance::{self, Peer};
use common::WebhookPeer;
use common::mail::{LIST, MailPeer};
use common::matrix::MatrixPeer;
use common::world::{ALIAS, MUC, World};
use common::xmpp::XmppPeer;

const T: Duration = Duration::from_secs(30);

/// From each network: a message, a reply to another network's message, an
/// edit, a reaction, a message in one thread and a mention of the next
/// network's person; every other network shows each, referencing its own
/// ids, or the notice where it cannot show an edit or a reaction, or a
/// reply to the thread's root where it shows no threads; the one mentioned
/// is pinged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_network_conformance() {
    // Mail shows edits as notices, gathered (every 2 s here).
    let mut w = World::start_with("", common::world::gathered_quickly, &[]).await;
    let report = conformance_of_all_four(&mut w).await;
    eprintln!("{report}");
    // Texts, replies and a thread from all four (mail continues the thread
    // by answering in it); edits, reactions and mentions from the three
    // that make them.
    assert_eq!(report.passed.len(), 4 + 4 + 3 + 3 + 4 + 3, "{report}");
}

/// The conformance suite between Alice on XMPP, Bob on Matrix, Carol by
/// mail and the webhook endpoint, all in the world's portal.
async fn conformance_of_all_four(w: &mut World) -> conformance::Report {
    let mut web = WebhookPeer::new("w", w.daemon.url("/bridges/hooks/w"), "tw", w.hook.take().unwrap());
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let mut carol = MailPeer::new(&w.mail, "carol", "Carol D.");
    let opts = conformance::Options { timeout: T, ..Default::default() };
    let mut peers: Vec<&mut dyn Peer> = vec![&mut web, &mut alice, &mut bob, &mut carol];
    conformance::run_all(&mut peers, &opts).await.unwrap_or_else(|e| panic!("{e}\n--- causeway ---\n{}\n{}", w.daemon.log(), w.mail.log()))
}

/// Presence set on XMPP shows on the person's Matrix ghost within two
/// seconds, and presence set on Matrix on the XMPP ghost; the HTTP API says
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_within_two_seconds() {
    let w = World::start("").await;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    // Let joins and first presences settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Webhook readers follow presence on the portal's event stream.
    let mut sse = reqwest::Client::new().get(w.daemon.url("/bridges/hooks/w/events")).bearer_auth("te").send().await.unwrap();
    assert_eq!(sse.status(), 200);

    alice.set_presence(Some("away"), Some("lunch")).await;
    let start = Instant::now();
    loop {
        let p = bob.presence_of("@causeway_alice:matrix.test").await.unwrap();
        if p["presence"] == "unavailable" && p["status_msg"] == "lunch" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "not on the Matrix ghost within 2 s: {p}\n{}", w.daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let xmpp_to_matrix = start.elapsed();
    let api: serde_json::Value = reqwest::get(w.daemon.url("/api/people/alice/presence")).await.unwrap().json().await.unwrap();
    assert_eq!((api["show"].as_str(), api["status"].as_str()), (Some("away"), Some("lunch")), "{api}");
    assert_eq!(api["accounts"]["xmpp"]["show"], "away");
    let mut text = String::new();
    while !text.lines().any(|l| {
        l.starts_with("data:") && l.contains(r#""type":"presence""#) && l.contains(r#""show":"away""#) && l.contains("Alice Liddell")
    }) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), sse.chunk())
            .await
            .expect("no presence on the event stream")
            .unwrap()
            .expect("stream ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(sse);

    bob.set_presence("unavailable", Some("in a meeting")).await.unwrap();
    let start = Instant::now();
    loop {
        let left = Duration::from_secs(2).saturating_sub(start.elapsed());
        let s = alice.seen(left).await.unwrap_or_else(|e| panic!("not on the XMPP ghost within 2 s: {e}\n{}", w.daemon.log()));
        if s.sender_name == "Bob Builder"
            && let causeway_core::Body::Presence { show: causeway_core::Show::Away, status } = &s.body
        {
            assert_eq!(status.as_deref(), Some("in a meeting"));
            break;
        }
    }
    let matrix_to_xmpp = start.elapsed();
    eprintln!("presence: XMPP→Matrix {xmpp_to_matrix:?}, Matrix→XMPP {matrix_to_xmpp:?}");
    let unknown = reqwest::get(w.daemon.url("/api/people/nobody/presence")).await.unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}

/// Someone quiet for `idle_after` shows as away ("idle") elsewhere, and
/// online again once they speak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_people_show_away_until_they_speak() {
    let w = World::start("router: { presence: { idle_after: 3s } }").await;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    bob.set_presence("online", None).await.unwrap();
    bob.send("m.room.message", serde_json::json!({"msgtype": "m.text", "body": "back in a bit"})).await.unwrap();
    let wait_for = async |alice: &mut XmppPeer, want: causeway_core::Show, status: Option<&str>| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = alice.seen(deadline.saturating_duration_since(Instant::now())).await.unwrap_or_else(|e| panic!("no {want:?}: {e}"));
            if s.sender_name == "Bob Builder"
                && let causeway_core::Body::Presence { show, status: st } = &s.body
                && *show == want
                && st.as_deref() == status
            {
                return;
            }
        }
    };
    wait_for(&mut alice, causeway_core::Show::Away, Some("idle")).await;
    let api: serde_json::Value = reqwest::get(w.daemon.url("/api/people/bob/presence")).await.unwrap().json().await.unwrap();
    assert_eq!((api["show"].as_str(), api["idle"].as_bool()), (Some("away"), Some(true)), "{api}");
    bob.send("m.room.message", serde_json::json!({"msgtype": "m.text", "body": "I am back"})).await.unwrap();
    wait_for(&mut alice, causeway_core::Show::Online, None).await;
}

/// A real Prometheus scrapes Causeway while the four networks talk: every
/// query of the Grafana dashboard and every metric of the alert rules has
/// data, the rules pass `promtool check rules`, and the dashboard is a
/// well-formed Grafana dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_what_the_dashboard_and_alerts_use() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("prometheus/alerts.yml");
    let check = std::process::Command::new("promtool").arg("check").arg("rules").arg(&rules).output().unwrap();
    assert!(check.status.success(), "promtool: {}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));

    let mut w = World::start_with("", common::world::gathered_quickly, &[]).await;
    let prom = common::Prometheus::start(&format!("127.0.0.1:{}", w.daemon.port), &rules);
    // Traffic on every bridge: the conformance run, and a refused request.
    conformance_of_all_four(&mut w).await;
    let refused = reqwest::Client::new()
        .post(w.daemon.url("/bridges/hooks/w"))
        .bearer_auth("wrong")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    // A few scrapes after it all.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("grafana/dashboards/causeway.json")).unwrap()).unwrap();
    common::check_grafana_dashboard(&dashboard);
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m");
            let result = prom.query(&expr).await;
            assert!(!result.is_empty(), "panel {:?}: no data for {expr}", panel["title"]);
            checked += 1;
        }
    }
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let mut metrics: Vec<String> = rules_text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("causeway_"))
        .map(str::to_string)
        .collect();
    metrics.sort();
    metrics.dedup();
    for m in &metrics {
        // A histogram is named by its buckets in the rules.
        let result = prom.query(&format!("count({m})")).await;
        assert!(!result.is_empty(), "alert rules use {m}, which Prometheus has no data for");
    }
    // Every bridge is there, connected.
    let up = prom.query("causeway_bridge_up == 1").await;
    assert_eq!(up.len(), 4, "{up:?}");
    eprintln!("{checked} dashboard queries and {} alert metrics have data", metrics.len());
}

/// Direct conversations between people of the directory on XMPP and
/// Matrix, opened from either side: from Matrix by inviting a ghost into a
/// room marked direct, from XMPP by writing to a ghost, which opens a room
/// on Matrix and invites the person there. Each message lands on the other
/// person's own account, and the answer comes back referring to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_conversations_between_xmpp_and_matrix_people() {
    let w = World::start_with("", |c| c, &[]).await;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let opts = conformance::Options { timeout: T, ..Default::default() };
    let done = conformance::direct_conversation(&mut bob, &mut alice, &opts).await;
    assert_eq!(done, Ok(true), "opened on Matrix\n{}", w.daemon.log());
    let opts = conformance::Options { timeout: T, ..Default::default() };
    let done = conformance::direct_conversation(&mut alice, &mut bob, &opts).await;
    assert_eq!(done, Ok(true), "opened on XMPP\n{}", w.daemon.log());
    assert!(w.daemon.log().matches("opened a direct conversation").count() >= 2, "{}", w.daemon.log());
}

/// The people of the test directory, and who of them a broadcast reaches
/// where: erin is offline on XMPP while it is sent, dave has no account on
/// a network that takes broadcasts.
const BROADCAST_PEOPLE: &str = r#"
  - id: erin
    name: Erin Hunt
    accounts: { xmpp: erin@xmpp.test }
broadcast:
  senders:
    - people: [alice]
      to: [all, portals]
  rate: { xmpp: 20, matrix: 5, email: 5 }
"#;

/// A broadcast to everyone in the directory, asked for by a person with
/// `!broadcast` in a room: each person gets it once, on their own network,
/// from the bridge's account (erin, offline while it is sent, when she is
/// back); `causeway broadcast status` tells each recipient's state. Then a
/// broadcast from the command line reaches every room as a notice, and
/// someone not allowed to broadcast is told so and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_everyone_once_on_their_own_network() {
    let w = World::start_with(
        "",
        |c| {
            let c = c.replace(
                "policy: { allow: [partner.example] }",
                "policy: { allow: [partner.example] }, broadcast_from: announce@mail.test",
            );
            // The extra person and the broadcast section go with the people.
            c.replace("    accounts: { hooks: w }\n", &format!("    accounts: {{ hooks: w }}{BROADCAST_PEOPLE}"))
        },
        &[],
    )
    .await;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let said = alice.say(vec![xmpp_body("!broadcast Fire drill at 15:00, meet in the car park")]).await.unwrap();
    assert!(!said.is_empty());
    // The answer in the room says it is on its way.
    let answer = alice
        .next_matching(T, |s| s.name() == "message" && text_of(s).contains("is on its way"))
        .await
        .unwrap_or_else(|e| panic!("no answer to the command: {e}\n{}", w.daemon.log()));
    let answer = text_of(&answer);
    assert!(answer.contains("to 5 recipients (1 cannot be reached)"), "{answer}");
    let id = answer.split_whitespace().find(|w| w.starts_with("b-")).expect("the broadcast's id").to_string();

    // Alice, online on XMPP: a chat message from the bridge.
    let dm = alice.next_chat(T).await.unwrap_or_else(|e| panic!("alice: {e}\n{}", w.daemon.log()));
    assert_eq!(dm.attr("from").map(|f| f.split('/').next().unwrap()), Some("causeway@bridge.xmpp.test"), "{dm:?}");
    assert!(text_of(&dm).contains("Announcement from Alice Liddell") && text_of(&dm).contains("Fire drill"), "{dm:?}");
    // Bob on Matrix: a room of the bridge's user with him, and the notice in it.
    let (room, notice) =
        bob.next_direct_matching(T, |e| e["type"] == "m.room.message").await.unwrap_or_else(|e| panic!("bob: {e}\n{}", w.daemon.log()));
    assert_eq!(notice["sender"], "@causeway:matrix.test", "{notice}");
    assert_eq!(notice["content"]["msgtype"], "m.notice", "{notice}");
    assert!(notice["content"]["body"].as_str().unwrap().contains("Fire drill"), "{notice}");
    // Carol by mail, from the broadcast address.
    let mail = w.mail.wait_for("carol", "INBOX", T, |m| m.subject().is_some_and(|s| s.starts_with("Announcement from Alice"))).await;
    let mail = mail_parser::MessageParser::default().parse(&mail).unwrap();
    assert!(mail.body_text(0).unwrap().contains("Fire drill"));
    assert_eq!(mail.from().and_then(|f| f.first()).and_then(|a| a.address()), Some("announce@mail.test"));

    // Every reachable recipient delivered, erin included while offline;
    // dave cannot be reached.
    let status = wait_broadcast_done(&w, &id).await;
    let states: Vec<(String, String)> = status["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["person"].as_str().unwrap_or("").to_string(), r["state"].as_str().unwrap().to_string()))
        .collect();
    let want: Vec<(String, String)> =
        [("alice", "delivered"), ("bob", "delivered"), ("carol", "delivered"), ("dave", "unreachable"), ("erin", "delivered")]
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .to_vec();
    let mut sorted = states.clone();
    sorted.sort();
    assert_eq!(sorted, want, "{status}");
    // Erin comes back: her server kept it for her.
    let mut erin = XmppPeer::login(&w.prosody, "erin", MUC, "Erin").await;
    let kept = erin.next_chat(T).await.unwrap_or_else(|e| panic!("erin: {e}\n{}", w.prosody.log()));
    assert!(text_of(&kept).contains("Fire drill"), "{kept:?}");

    // Once each: nothing more comes to anyone.
    let quiet = Duration::from_secs(3);
    assert!(erin.next_chat(quiet).await.is_err(), "erin got it twice");
    assert!(alice.next_chat(quiet).await.is_err(), "alice got it twice");
    assert!(bob.next_direct_matching(quiet, |e| e["type"] == "m.room.message").await.is_err(), "bob got it twice");
    let announced = |raw: &Vec<u8>| {
        mail_parser::MessageParser::default().parse(raw).is_some_and(|m| m.subject().is_some_and(|s| s.starts_with("Announcement from")))
    };
    assert_eq!(w.mail.fetch("carol", "INBOX").iter().filter(|(_, raw)| announced(raw)).count(), 1);
    assert!(!room.is_empty());

    // From the command line, to every room: a notice in each.
    let out = w.daemon.cli(&["broadcast", "--to", "portals", "--text", "The canteen is closed today", "--from", "Facilities", "--wait"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), w.daemon.log());
    let seen = alice.next_matching(T, |s| s.name() == "message" && text_of(s).contains("canteen is closed")).await;
    assert!(seen.is_ok(), "not in the MUC: {seen:?}");
    let seen = bob.next_matching(T, |e| e["content"]["body"].as_str().is_some_and(|b| b.contains("canteen is closed"))).await;
    assert_eq!(seen.map(|e| e["content"]["msgtype"].clone()), Ok(serde_json::json!("m.notice")));
    w.mail.wait_for("carol", "INBOX", T, |m| m.body_text(0).is_some_and(|b| b.contains("canteen is closed"))).await;
    let cli_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = w.daemon.cli(&["broadcast", "status", &cli_id]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("(done)") && table.contains("4 recipients: 4 delivered"), "{table}");

    // Bob may not broadcast: told so in his room, and nothing is sent.
    bob.send("m.room.message", serde_json::json!({"msgtype": "m.text", "body": "!broadcast free pizza"})).await.unwrap();
    let refused = bob.next_matching(T, |e| e["content"]["body"].as_str().is_some_and(|b| b.contains("may not broadcast"))).await;
    assert!(refused.is_ok(), "{refused:?}\n{}", w.daemon.log());
    let out = w.daemon.cli(&["broadcast", "list", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    assert!(alice.next_matching(Duration::from_secs(2), |s| text_of(s).contains("free pizza")).await.is_err(), "the command was relayed");
}

/// `causeway broadcast status ID --json` once nothing is pending.
async fn wait_broadcast_done(w: &World, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + T;
    loop {
        let out = w.daemon.cli(&["broadcast", "status", id, "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["state"] == "done" {
            return v;
        }
        assert!(Instant::now() < deadline, "broadcast not done: {v}\n{}", w.daemon.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn xmpp_body(text: &str) -> tokio_xmpp::minidom::Element {
    tokio_xmpp::minidom::Element::builder("body", "jabber:client").append(text).build()
}

fn text_of(e: &tokio_xmpp::minidom::Element) -> String {
    e.get_child("body", "jabber:client").map(|b| b.text()).unwrap_or_default()
}

/// An invitation in Outlook's shape: METHOD, a Windows time zone, the
/// event inline (`text/calendar`) and attached again (`application/ics`).
fn invitation_mail(id: &str, from: &str, method: &str, sequence: u32, start: &str, end: &str, partstat: &str) -> String {
    use base64::Engine;
    let ics = format!(
        "BEGIN:VCALENDAR\r\nPRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN\r\nVERSION:2.0\r\nMETHOD:{method}\r\n\
         BEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\nBEGIN:STANDARD\r\nDTSTART:16011028T030000\r\n\
         RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n\
         BEGIN:DAYLIGHT\r\nDTSTART:16010325T020000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\nTZOFFSETFROM:+0100\r\n\
         TZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:review-2026-q4@mail.test\r\n\
         SEQUENCE:{sequence}\r\nDTSTAMP:20261201T09000{sequence}Z\r\nSUMMARY:Quarterly review\r\n\
         DTSTART;TZID=W. Europe Standard Time:{start}\r\nDTEND;TZID=W. Europe Standard Time:{end}\r\n\
         LOCATION:Room 4.12\r\nORGANIZER;CN=Carol Danvers:mailto:carol@mail.test\r\n\
         ATTENDEE;CN=Pat;PARTSTAT={partstat};RSVP=TRUE:mailto:pat@partner.example\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    );
    let attached = base64::engine::general_purpose::STANDARD.encode(&ics);
    format!(
        "From: {from}\nTo: {LIST}\nSubject: Invitation: Quarterly review\nMessage-ID: <{id}>\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: multipart/alternative; boundary=a\n\n\
         --a\nContent-Type: text/plain; charset=utf-8\n\nWhen: see the invitation\n\
         --a\nContent-Type: text/calendar; method={method}; charset=utf-8\nContent-Transfer-Encoding: base64\n\n{attached}\n--a--\n\
         --m\nContent-Type: application/ics; name=invite.ics\nContent-Disposition: attachment; filename=invite.ics\n\
         Content-Transfer-Encoding: base64\n\n{attached}\n--m--\n"
    )
}

/// A mail with an invitation becomes one card in the XMPP MUC and the
/// Matrix room, its times in the portal's zone; a later SEQUENCE edits the
/// card (an XMPP correction, a Matrix `m.replace`), an older copy changes
/// nothing, an attendee's reply is a line under it, and the cancellation
/// marks the card cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_by_mail_is_one_card_updated_then_cancelled() {
    let w = World::start_with(
        "",
        |c| {
            assert!(c.contains("  - id: ops\n    links:"));
            c.replacen("  - id: ops\n    links:", "  - id: ops\n    time_zone: Europe/Berlin\n    links:", 1)
        },
        &[],
    )
    .await;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let carol = "Carol Danvers <carol@mail.test>";
    let card = |t: &str| t.contains("Quarterly review");

    // 10:00 Berlin in December; the card shows it in the portal's zone.
    let first = invitation_mail("inv-0@mail.test", carol, "REQUEST", 0, "20261215T100000", "20261215T113000", "NEEDS-ACTION");
    w.mail.send("carol@mail.test", &[LIST], &first);
    let shown = alice
        .next_matching(T, |s| s.name() == "message" && card(&text_of(s)))
        .await
        .unwrap_or_else(|e| panic!("no card on XMPP: {e}\n{}\n{}", w.daemon.log(), w.mail.log()));
    let text = text_of(&shown);
    for part in [
        "📅 Invitation: Quarterly review",
        "When: Tue 15 Dec 2026, 10:00–11:30 (Europe/Berlin)",
        "Where: Room 4.12",
        "Organiser: Carol Danvers <carol@mail.test>",
        "Attendees: Pat (invited)",
    ] {
        assert!(text.contains(part), "{part:?} not in {text:?}");
    }
    assert!(!text.contains("see the invitation"), "the mail's own text is not the card: {text}");
    let xmpp_id = shown.attr("id").expect("the card's id").to_string();
    let on_matrix = bob.next_matching(T, |e| e["content"]["body"].as_str().is_some_and(card)).await.unwrap();
    let matrix_id = on_matrix["event_id"].as_str().unwrap().to_string();
    assert!(on_matrix["content"]["formatted_body"].as_str().unwrap().contains("<strong>📅 Invitation: Quarterly review</strong>"));

    // Moved an hour later (SEQUENCE 1): the card is edited.
    let moved = invitation_mail("inv-1@mail.test", carol, "REQUEST", 1, "20261215T110000", "20261215T123000", "NEEDS-ACTION");
    w.mail.send("carol@mail.test", &[LIST], &moved);
    let corrected = |s: &tokio_xmpp::minidom::Element, want: &str| {
        s.get_child("replace", "urn:xmpp:message-correct:0").and_then(|r| r.attr("id")) == Some(xmpp_id.as_str())
            && text_of(s).contains(want)
    };
    let edit = alice.next_matching(T, |s| corrected(s, "11:00–12:30")).await;
    assert!(edit.is_ok(), "no correction on XMPP: {edit:?}\n{}", w.daemon.log());
    let replaced = |e: &serde_json::Value, want: &str| {
        e["content"]["m.relates_to"]["rel_type"] == "m.replace"
            && e["content"]["m.relates_to"]["event_id"] == matrix_id.as_str()
            && e["content"]["m.new_content"]["body"].as_str().is_some_and(|b| b.contains(want))
    };
    assert!(bob.next_matching(T, |e| replaced(e, "11:00–12:30")).await.is_ok());

    // The first invitation again, as a new mail: older than the card shown.
    let again = invitation_mail("inv-0-again@mail.test", carol, "REQUEST", 0, "20261215T100000", "20261215T113000", "NEEDS-ACTION");
    w.mail.send("carol@mail.test", &[LIST], &again);
    // Pat answers from the partner's domain: a line under the card.
    let reply =
        invitation_mail("inv-r@partner.example", "Pat <pat@partner.example>", "REPLY", 1, "20261215T110000", "20261215T123000", "ACCEPTED");
    w.mail.send("pat@partner.example", &[LIST], &reply.replace("Subject: Invitation:", "Subject: Accepted:"));
    let answer = alice.next_matching(T, |s| s.name() == "message" && text_of(s).contains("accepted the invitation")).await;
    let answer = answer.unwrap_or_else(|e| panic!("no answer: {e}\n{}", w.daemon.log()));
    assert!(text_of(&answer).contains("“Quarterly review”"), "{answer:?}");

    // Cancelled (SEQUENCE 2): the card says so.
    let cancel = invitation_mail("inv-2@mail.test", carol, "CANCEL", 2, "20261215T110000", "20261215T123000", "NEEDS-ACTION");
    w.mail.send("carol@mail.test", &[LIST], &cancel);
    // (On XMPP the struck-through title is styled: `~Quarterly review~`.)
    let gone = alice.next_matching(T, |s| corrected(s, "❌ Cancelled: ~Quarterly review~")).await;
    assert!(gone.is_ok(), "no cancellation on XMPP: {gone:?}\n{}", w.daemon.log());
    let gone = bob.next_matching(T, |e| replaced(e, "❌ Cancelled: Quarterly review")).await.unwrap();
    assert!(gone["content"]["m.new_content"]["formatted_body"].as_str().unwrap().contains("<del>Quarterly review</del>"), "{gone}");

    // One card in all: nothing else about the event came to the room (the
    // older copy was not shown).
    let more = alice.next_matching(Duration::from_secs(3), |s| s.name() == "message" && card(&text_of(s))).await;
    assert!(more.is_err(), "more than one card: {more:?}");
    let archived = common::archived_texts(&w.daemon, "ops").await;
    assert_eq!(archived.iter().filter(|t| t.starts_with("📅 Invitation") || t.starts_with("❌ Cancelled")).count(), 1, "{archived:?}");
    assert!(w.daemon.metric("causeway_inbound_rejected_total", r#"bridge="mail",reason="stale_invitation""#).await >= 1.0);
}
