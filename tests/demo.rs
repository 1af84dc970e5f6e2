//! The README's first command, `bash demo/run.sh`, as a user runs it: it
//! brings up the four networks, a message typed in a real XMPP client
//! reaches a real Matrix client, a mailbox and a webhook listener, and
//! Ctrl-C stops everything.
#![cfg(all(feature = "webhook", feature = "xmpp", feature = "matrix", feature = "email"))]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::matrix::MatrixPeer;
use common::xmpp::{Prosody, XmppPeer};
use common::{Hook, Mode, free_port};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_xmpp::minidom::Element;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_joins_four_networks_and_ctrl_c_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let ports: Vec<(&str, u16)> =
        ["DEMO_HTTP", "DEMO_XMPP", "DEMO_COMPONENT", "DEMO_MATRIX", "DEMO_SMTP", "DEMO_IMAP", "DEMO_LMTP", "DEMO_AUTH"]
            .into_iter()
            .map(|k| (k, free_port()))
            .collect();
    let port = |k: &str| ports.iter().find(|(n, _)| *n == k).unwrap().1;
    let mut demo = tokio::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/run.sh"))
        .env("DEMO_DIR", dir.path())
        .env("CAUSEWAY_BIN", env!("CARGO_BIN_EXE_causeway"))
        .env("DEMO_HOOK_URL", hook.url())
        .envs(ports.iter().map(|(k, v)| (*k, v.to_string())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("the demo never got ready")
            .unwrap()
            .expect("the demo ended");
        printed.push_str(&line);
        printed.push('\n');
        if line == "demo ready" {
            break;
        }
    }
    // It says how to join from each kind of client.
    for hint in ["ops@conference.xmpp.test", "#causeway_ops:matrix.test", "bridge+ops@mail.test", "/bridges/hooks/web"] {
        assert!(printed.contains(hint), "{hint} missing from:\n{printed}");
    }
    let log = || std::fs::read_to_string(dir.path().join("causeway.log")).unwrap_or_default();

    // A real Matrix client in the room, then a real XMPP client says something.
    let mut bob = MatrixPeer::join(&format!("http://127.0.0.1:{}", port("DEMO_MATRIX")), "bob", "#causeway_ops:matrix.test").await;
    let prosody = Prosody { dir: tempfile::tempdir().unwrap(), c2s: port("DEMO_XMPP"), component: port("DEMO_COMPONENT"), http: 0 };
    let mut alice = XmppPeer::join(&prosody, "alice", "ops@conference.xmpp.test", "Alice", 0).await;
    let text = "hello from a real XMPP client";
    alice.say(vec![Element::builder("body", common::xmpp::NS_CLIENT).append(text).build()]).await.unwrap();

    let m = bob
        .next_matching(Duration::from_secs(30), |e| e["content"]["body"] == text)
        .await
        .unwrap_or_else(|e| panic!("not on Matrix: {e}\n{}", log()));
    assert_eq!(m["sender"], "@causeway_alice:matrix.test");
    loop {
        let got = hook.next(Duration::from_secs(30)).await;
        if got.json["text"] == text {
            assert_eq!(got.json["sender"]["name"], "Alice Liddell");
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mails = common::mail::fetch_mailbox(port("DEMO_IMAP"), "carol", "INBOX");
        if mails.iter().any(|(_, raw)| String::from_utf8_lossy(raw).contains(text)) {
            break;
        }
        assert!(Instant::now() < deadline, "not in carol's mailbox:\n{}", log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Ctrl-C: everything the demo started stops.
    drop(alice);
    let pid = demo.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(60), demo.wait()).await.expect("the demo did not stop").unwrap();
    assert!(status.code().is_some(), "{status:?}");
    for k in ["DEMO_HTTP", "DEMO_XMPP", "DEMO_MATRIX", "DEMO_SMTP", "DEMO_IMAP"] {
        let open = std::net::TcpStream::connect(("127.0.0.1", port(k))).is_ok();
        assert!(!open, "{k} ({}) still answers after Ctrl-C", port(k));
    }
}
