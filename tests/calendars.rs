//! Calendars announced into a portal, against a real CalDAV server
//! (Radicale, tests/peers/radicale.sh) and a real XMPP MUC and Matrix room:
//! the daily agenda, a reminder at the right minute for a recurring event
//! in the portal's zone, a new event and its deletion announced, `!agenda`
//! answered on every network, and an unchanged calendar costing one request
//! (CalDAV by its change tag; an ICS file on a web server by its ETag).
#![cfg(all(feature = "webhook", feature = "xmpp", feature = "matrix", feature = "email"))]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::TimeZone;
use common::matrix::MatrixPeer;
use common::world::{ALIAS, MUC, World};
use common::xmpp::XmppPeer;

const T: Duration = Duration::from_secs(30);
const USER: &str = "alice";
const PASS: &str = "s3cret";

/// Radicale on a port of its own, stopped when dropped.
struct Radicale {
    dir: tempfile::TempDir,
    port: u16,
    http: reqwest::Client,
}

impl Radicale {
    fn start() -> Radicale {
        let r = Radicale { dir: tempfile::tempdir().unwrap(), port: common::free_port(), http: reqwest::Client::new() };
        let out = Command::new("bash")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/radicale.sh"))
            .args(["start", r.dir.path().to_str().unwrap(), &r.port.to_string(), USER, PASS])
            .output()
            .unwrap();
        assert!(out.status.success(), "radicale: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        r
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn send(&self, method: &str, path: &str, body: Option<String>) -> u16 {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(method, self.url(path)).basic_auth(USER, Some(PASS));
        if let Some(b) = body {
            r = r.header("Content-Type", "text/calendar; charset=utf-8").body(b);
        }
        r.send().await.unwrap().status().as_u16()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("radicale.log")).unwrap_or_default()
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/radicale.sh"))
            .args(["stop", self.dir.path().to_str().unwrap()])
            .output();
    }
}

const BERLIN: &str = "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n\
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nTZNAME:CET\r\nEND:STANDARD\r\n\
BEGIN:DAYLIGHT\r\nDTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n\
TZNAME:CEST\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n";

fn event(uid: &str, summary: &str, start: &str, end: &str, rrule: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Causeway tests//EN\r\n{BERLIN}BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261201T000000Z\r\n\
         DTSTART;TZID=Europe/Berlin:{start}\r\nDTEND;TZID=Europe/Berlin:{end}\r\n{rrule}SUMMARY:{summary}\r\nLOCATION:Room 4.12\r\n\
         END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

/// An iCalendar file on a plain web server (as nginx would serve one): its
/// ETag, `304` when it is what the client has; counts both answers.
struct IcsFile {
    url: String,
    full: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
}

impl IcsFile {
    async fn serve(body: String) -> IcsFile {
        use axum::http::{HeaderMap, StatusCode, header};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/lunch.ics", listener.local_addr().unwrap());
        let (full, not_modified) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (f, n) = (full.clone(), not_modified.clone());
        let etag = "\"lunch-1\"";
        let app = axum::Router::new().route(
            "/lunch.ics",
            axum::routing::get(move |headers: HeaderMap| {
                let (body, f, n) = (body.clone(), f.clone(), n.clone());
                async move {
                    use axum::response::IntoResponse;
                    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == etag) {
                        n.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::NOT_MODIFIED.into_response();
                    }
                    f.fetch_add(1, Ordering::SeqCst);
                    ([(header::ETAG, etag), (header::CONTENT_TYPE, "text/calendar")], body).into_response()
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        IcsFile { url, full, not_modified }
    }
}

fn text_of(e: &tokio_xmpp::minidom::Element) -> String {
    e.get_child("body", "jabber:client").map(|b| b.text()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caldav_calendar_is_announced_into_the_portal_at_the_right_minute() {
    let tz = causeway_core::time_zone::zone("Europe/Berlin").unwrap();
    let berlin = |t: i64| tz.timestamp_opt(t, 0).single().unwrap();
    let dav = Radicale::start();
    assert_eq!(dav.send("MKCALENDAR", "/alice/team/", None).await, 201, "{}", dav.log());
    // All of today, in Berlin: in the daily agenda, made at start (its time
    // is this minute).
    let now = causeway_core::now_ms() / 1000;
    let today = berlin(now).date_naive();
    let offsite =
        event("offsite", "Offsite", &format!("{}T000000", today.format("%Y%m%d")), &format!("{}T235900", today.format("%Y%m%d")), "");
    assert_eq!(dav.send("PUT", "/alice/team/offsite.ics", Some(offsite)).await, 201);
    // Tomorrow's lunch, in an ICS file on a web server.
    let tomorrow = berlin(now + 86_400).date_naive().format("%Y%m%d").to_string();
    let lunch = IcsFile::serve(event("lunch", "Team lunch", &format!("{tomorrow}T120000"), &format!("{tomorrow}T130000"), "")).await;
    let calendars = format!(
        "  - id: ops\n    time_zone: Europe/Berlin\n    agenda: \"{}\"\n    calendars:\n      - {{ name: Team, caldav: \"{}\", username: {USER}, password: {PASS}, every: 2s, remind: 1m }}\n      - {{ name: Lunches, ics: \"{}\", every: 2s, remind: 0s }}\n    links:",
        berlin(now).format("%H:%M"),
        dav.url("/alice/team/"),
        lunch.url
    );
    let w = World::start_with(
        "",
        |c| {
            assert!(c.contains("  - id: ops\n    links:"));
            c.replacen("  - id: ops\n    links:", &calendars, 1)
        },
        &[],
    )
    .await;
    // With the room's recent history: the agenda may come before she is in.
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 20).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let says = |s: &tokio_xmpp::minidom::Element, what: &str| s.name() == "message" && text_of(s).contains(what);

    // The agenda of today.
    let agenda = alice.next_matching(T, |s| says(s, "📅 Today,")).await.unwrap_or_else(|e| panic!("no agenda: {e}\n{}", w.daemon.log()));
    assert!(text_of(&agenda).contains("00:00–23:59 Offsite — Room 4.12 (Team)"), "{}", text_of(&agenda));

    // A daily stand-up that began yesterday, at the minute 75 s from now
    // (Berlin time): today's occurrence is reminded of 1 minute before it.
    let start = causeway_core::now_ms() / 1000 + 75;
    let (s, e) = (berlin(start - 86_400), berlin(start - 86_400 + 1800));
    let standup = event(
        "standup",
        "Stand-up",
        &s.format("%Y%m%dT%H%M%S").to_string(),
        &e.format("%Y%m%dT%H%M%S").to_string(),
        "RRULE:FREQ=DAILY;COUNT=5\r\n",
    );
    assert_eq!(dav.send("PUT", "/alice/team/standup.ics", Some(standup)).await, 201);
    let due = start - 60;
    let reminded = alice
        .next_matching(Duration::from_secs(120), |s| says(s, "⏰") && text_of(s).contains("Stand-up"))
        .await
        .unwrap_or_else(|e| panic!("no reminder: {e}\n{}", w.daemon.log()));
    let at = causeway_core::now_ms() as f64 / 1000.0;
    assert!(at >= due as f64 - 1.0 && at <= due as f64 + 6.0, "the reminder came at {at}, due at {due}");
    let local = berlin(start).format("%H:%M").to_string();
    let text = text_of(&reminded);
    assert!(text.contains(&format!("In 1 minute: Stand-up, {local}–")) && text.contains("(Europe/Berlin) — Room 4.12"), "{text}");
    let on_matrix =
        bob.next_matching(T, |e| e["content"]["body"].as_str().is_some_and(|b| b.starts_with("⏰") && b.contains("Stand-up"))).await;
    assert_eq!(on_matrix.map(|e| e["content"]["msgtype"].clone()), Ok(serde_json::json!("m.notice")));

    // A new event, then its deletion, announced.
    let retro = event("retro", "Retro", &format!("{tomorrow}T150000"), &format!("{tomorrow}T160000"), "");
    assert_eq!(dav.send("PUT", "/alice/team/retro.ics", Some(retro)).await, 201);
    let new = alice.next_matching(T, |s| says(s, "📅 New in Team: Retro")).await;
    assert!(new.as_ref().is_ok_and(|n| text_of(n).contains("15:00–16:00 (Europe/Berlin)")), "{new:?}\n{}", w.daemon.log());

    // Asked in the Matrix room, answered on XMPP too: tomorrow's stand-up
    // (the daily rule expanded) and the retro.
    bob.send("m.room.message", serde_json::json!({"msgtype": "m.text", "body": "!agenda tomorrow"})).await.unwrap();
    let answer = alice.next_matching(T, |s| says(s, "📅 Tomorrow,")).await.unwrap_or_else(|e| panic!("no answer: {e}\n{}", w.daemon.log()));
    let answer = text_of(&answer);
    assert!(
        answer.contains(&format!("{local}–")) && answer.contains("Stand-up — Room 4.12 (Team)") && answer.contains("15:00–16:00 Retro"),
        "{answer}"
    );
    assert!(answer.contains("12:00–13:00 Team lunch — Room 4.12 (Lunches)"), "{answer}");
    assert!(bob.next_matching(T, |e| e["content"]["body"].as_str().is_some_and(|b| b.starts_with("📅 Tomorrow,"))).await.is_ok());

    assert_eq!(dav.send("DELETE", "/alice/team/retro.ics", None).await, 200);
    let gone = alice.next_matching(T, |s| says(s, "❌ Cancelled in Team: Retro")).await;
    assert!(gone.is_ok(), "{gone:?}\n{}", w.daemon.log());

    // Once each: no second reminder, and unchanged polls cost one request.
    let again = alice.next_matching(Duration::from_secs(4), |s| says(s, "⏰")).await;
    assert!(again.is_err(), "reminded twice: {again:?}");
    let unchanged = w.daemon.metric("causeway_calendar_polls_total", r#"calendar="ops/Team",result="unchanged""#).await;
    assert!(unchanged >= 3.0, "{unchanged}");
    // The file was fetched once; after that the server said `304`.
    assert_eq!(lunch.full.load(Ordering::SeqCst), 1);
    assert!(lunch.not_modified.load(Ordering::SeqCst) >= 3);
    let unchanged = w.daemon.metric("causeway_calendar_polls_total", r#"calendar="ops/Lunches",result="unchanged""#).await;
    assert!(unchanged >= 3.0, "{unchanged}");
    let reminders = w.daemon.metric("causeway_calendar_announcements_total", r#"kind="reminder""#).await;
    assert_eq!(reminders, 1.0);
}
