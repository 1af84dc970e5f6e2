//! The store refuses commits (its disk is full) while real clients keep
//! sending: nothing is dropped; everything arrives once there is room again.
//!
//! The store lives on a small tmpfs of its own, filled up with a file while
//! the clients send and emptied again. Mounting needs root (as the suite
//! runs in CI); elsewhere the test says so and fails.
#![cfg(all(feature = "webhook", feature = "xmpp"))]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use causeway_core::conformance::{Action, Peer};
use common::xmpp::{Prosody, XmppPeer};
use common::{Daemon, Hook, Mode};
use serde_json::json;

const ROOM: &str = "ops@conference.xmpp.test";

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output().unwrap();
        assert!(out.status.success(), "cannot mount a tmpfs (this test needs root): {}", String::from_utf8_lossy(&out.stderr));
        SmallDisk(dir.to_path_buf())
    }

    /// Write a file until the disk is full.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        // The last bytes, block or not.
        while f.write_all(&[0]).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn config(prosody: &Prosody, hook: &str) -> String {
    format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{dir}}/disk/causeway.db" }}
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_messages_back_and_loses_none() {
    const N: usize = 40;
    let prosody = Prosody::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = Daemon::prepare(&config(&prosody, &hook.url()), &[]);
    // Declared after the daemon: dropped (unmounted) before it is killed
    // would fail, so the daemon is killed explicitly at the end.
    let disk = SmallDisk::mount(&d.dir.path().join("disk"), "16m");
    d.restart().await;
    d.wait_up(&["xmpp"], Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e}"));
    let mut alice = XmppPeer::join(&prosody, "alice", ROOM, "Alice", 0).await;
    let mut watcher = XmppPeer::join(&prosody, "bob", ROOM, "Watcher", 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let http = reqwest::Client::new();
    let post = async |i: usize| {
        let body = json!({"id": format!("w-{i}"), "sender": {"id": "dave"}, "text": format!("hooks #{i}")});
        http.post(d.url("/bridges/hooks/w")).bearer_auth("tw").json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    };

    let mut refused = 0;
    for i in 0..N {
        if i == 10 {
            disk.fill();
        }
        if i == 30 {
            disk.free();
        }
        alice.act(Action::Text { text: format!("xmpp #{i}"), reply_to: None }).await.unwrap();
        // A webhook sender resends what was not taken (503 while the disk is full).
        loop {
            match post(i).await {
                202 => break,
                503 => {
                    refused += 1;
                    if i >= 30 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    break;
                }
                other => panic!("webhook answered {other}\n{}", d.log()),
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // What was refused is sent again now that there is room.
    for i in 10..30 {
        while post(i).await != 202 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(refused > 0, "the full disk refused nothing: the test did not test anything\n{}", d.log());

    // Every XMPP message at the webhook once, in order.
    let mut from_xmpp = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while from_xmpp.len() < N && Instant::now() < deadline {
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_secs(1), hook.rx.recv()).await
            && let Some(n) = got.json["text"].as_str().and_then(|t| t.strip_prefix("xmpp #")).and_then(|n| n.parse::<usize>().ok())
        {
            from_xmpp.push(n);
        }
    }
    assert_eq!(from_xmpp, (0..N).collect::<Vec<_>>(), "XMPP → webhook\n{}", d.log());
    // Every webhook message in the room once.
    let mut from_hooks = BTreeSet::new();
    let mut twice = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while from_hooks.len() < N && Instant::now() < deadline {
        if let Ok(s) = watcher.next(Duration::from_secs(1)).await
            && let causeway_core::Body::Message { text, .. } = &s.body
            && let Some(n) = text.plain.strip_prefix("hooks #").and_then(|n| n.parse::<usize>().ok())
            && !from_hooks.insert(n)
        {
            twice.push(n);
        }
    }
    assert_eq!(from_hooks.len(), N, "webhook → XMPP: {from_hooks:?}\n{}", d.log());
    assert!(twice.is_empty(), "shown twice: {twice:?}");
    eprintln!("{N} messages each way; {refused} webhook posts refused while the disk was full");
    d.kill();
    drop(disk);
}
