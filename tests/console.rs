//! The console in a real browser (Debian's Chromium, driven by
//! playwright-core: tests/console/drive.cjs) against the real daemon with a
//! real Prosody and Synapse: log in, make a portal linking a MUC and a
//! Matrix room and see a real client's message cross, retry a dead letter,
//! search the archive and download an export of it, read the audit log,
//! log out.
//!
//! The screenshots go to a temporary directory; with
//! `CAUSEWAY_CONSOLE_SHOTS=docs/console` they are the ones docs/console.md
//! shows.
#![cfg(all(feature = "webhook", feature = "xmpp", feature = "matrix"))]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::matrix::{MatrixPeer, Synapse, bridge_config as matrix_bridge};
use common::xmpp::{NS_CLIENT, Prosody, XmppPeer};
use common::{Daemon, Hook, Mode, free_port, post};
use serde_json::json;
use tokio_xmpp::minidom::Element;

const T: Duration = Duration::from_secs(30);
const MUC: &str = "sales@conference.xmpp.test";
const ALIAS: &str = "#causeway_sales:matrix.test";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Browser {
    modules: PathBuf,
    console: String,
    state: PathBuf,
    shots: PathBuf,
    token: String,
}

impl Browser {
    /// One step of tests/console/drive.cjs; panics with what it said.
    fn step(&self, args: &[&str], daemon: &Daemon) {
        let out = std::process::Command::new("node")
            .arg(root().join("tests/console/drive.cjs"))
            .args(args)
            .env("PLAYWRIGHT", self.modules.join("playwright-core"))
            .env("CONSOLE", &self.console)
            .env("STATE", &self.state)
            .env("SHOTS", &self.shots)
            .env("TOKEN", &self.token)
            .output()
            .expect("node");
        assert!(
            out.status.success(),
            "browser step {args:?} failed:\n{}\n{}\n--- causeway ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
    }
}

fn node_modules() -> PathBuf {
    let out = std::process::Command::new("bash").arg(root().join("tests/peers/node.sh")).arg("modules").output().unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn body(text: &str) -> Element {
    Element::builder("body", NS_CLIENT).append(text).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_links_rooms_retries_a_dead_letter_and_searches_in_the_browser() {
    let prosody = Prosody::start();
    let mut hook_b = Hook::start(Mode::Fail(400)).await;
    let hook_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let synapse_port = free_port();
    let admin_port = free_port();
    let (token, hash) = causeway::admin::auth::new_token();
    let config = format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}" }}
outbox: {{ retry_initial: 100ms, retry_max: 1s }}
admin:
  listen: "127.0.0.1:{admin_port}"
  tokens: [{{ name: it-ops, sha256: "{hash}" }}]
bridges:
  hooks:
    type: webhook
    endpoints:
      a: {{ inbound: {{ token: "token-a" }}, outbound: {{ url: "{a}" }} }}
      b: {{ inbound: {{ token: "token-b" }}, outbound: {{ url: "{b}" }} }}
  xmpp: {xmpp}
  matrix: {matrix}
portals:
  - id: alerts
    links:
      - {{ bridge: hooks, room: a }}
      - {{ bridge: hooks, room: b }}
people:
  - {{ id: alice, name: Alice Liddell, accounts: {{ xmpp: alice@xmpp.test }} }}
  - {{ id: bob, name: Bob Builder, accounts: {{ matrix: "@bob:matrix.test" }} }}
"#,
        a = hook_a.url(),
        b = hook_b.url(),
        xmpp = prosody.bridge_config(),
        matrix = matrix_bridge(synapse_port),
    );
    let mut d = Daemon::prepare(&config, &[]);
    let registration = d.dir.path().join("registration.yaml");
    let out = d.cli(&["matrix", "registration", "--output", registration.to_str().unwrap()]);
    assert!(out.status.success(), "registration: {}", String::from_utf8_lossy(&out.stderr));
    let synapse = Synapse::start_with(&registration, synapse_port, None);
    synapse.register("bob");
    d.restart().await;
    d.wait_up(&["xmpp", "matrix"], T).await.unwrap_or_else(|e| panic!("{e}"));

    let shots = match std::env::var("CAUSEWAY_CONSOLE_SHOTS") {
        Ok(dir) => root().join(dir),
        Err(_) => d.dir.path().join("shots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let browser = Browser {
        modules: node_modules(),
        console: format!("http://127.0.0.1:{admin_port}"),
        state: d.dir.path().join("browser-state.json"),
        shots: shots.clone(),
        token,
    };

    // Something to show on the overview: a message between the webhooks.
    let http = reqwest::Client::new();
    let said = |text: &str| json!({"sender": {"id": "ops-bot", "name": "Ops bot"}, "text": text});
    assert_eq!(post(&http, &d.url("/bridges/hooks/a"), "token-a", &said("disk 91% on db-2")).await.0, 202);

    browser.step(&["login"], &d);
    browser.step(&["portal", "sales", MUC, ALIAS], &d);

    // Real clients in the rooms the console linked: a message crosses.
    let mut alice = XmppPeer::join(&prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&synapse.url(), "bob", ALIAS).await;
    alice.say(vec![body("the quarterly numbers are in")]).await.unwrap();
    bob.next_matching(T, |e| e["content"]["body"].as_str().is_some_and(|b| b.contains("the quarterly numbers are in")))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    bob.send("m.room.message", json!({"msgtype": "m.text", "body": "thanks, reading them"})).await.unwrap();
    alice
        .next_matching(T, |e| e.get_child("body", NS_CLIENT).is_some_and(|b| b.text().contains("thanks, reading them")))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    browser.step(&["delivered", "sales"], &d);

    // A broadcast from the console to the portal's rooms: a notice in each.
    browser.step(&["broadcast", "sales", "The office closes at 16:00 today"], &d);
    let notice =
        alice.next_matching(T, |e| e.get_child("body", NS_CLIENT).is_some_and(|b| b.text().contains("The office closes at 16:00"))).await;
    assert!(notice.is_ok(), "not in the MUC: {notice:?}\n{}", d.log());
    let notice = bob.next_matching(T, |e| e["content"]["body"].as_str().is_some_and(|b| b.contains("The office closes at 16:00"))).await;
    assert_eq!(notice.map(|e| e["content"]["msgtype"].clone()), Ok(json!("m.notice")));

    // A dead letter: `b` refused the first message; retried once it takes it.
    wait_dead(&d, 1).await;
    hook_b.set_mode(Mode::Accept { own_ids: None });
    browser.step(&["retry", "b"], &d);
    let got = hook_b.next(T).await;
    assert_eq!(got.json["text"], "disk 91% on db-2");

    browser.step(&["search", "quarterly", "the quarterly numbers are in", "sales"], &d);
    browser.step(&["audit"], &d);
    browser.step(&["logout"], &d);

    for name in [
        "login",
        "overview",
        "overview-phone",
        "portal-errors",
        "portal",
        "portals",
        "portal-delivered",
        "outbox",
        "archive",
        "audit",
        "people",
        "broadcast",
        "broadcasts",
    ] {
        let png = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{name}.png is a PNG");
    }
    alice.quit().await;
    assert!(d.terminate().success(), "{}", d.log());
}

/// Until the outbox holds `n` dead letters (read from the store).
async fn wait_dead(d: &Daemon, n: usize) {
    let deadline = Instant::now() + T;
    loop {
        let out = d.cli(&["outbox", "--json", "dead"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if rows.as_array().is_some_and(|r| r.len() >= n) {
            return;
        }
        assert!(Instant::now() < deadline, "no {n} dead letters:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
