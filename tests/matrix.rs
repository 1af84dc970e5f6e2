//! The Matrix bridge against a real Synapse (tests/peers/synapse.sh) with a
//! real Matrix client, through the real `causeway` binary.
#![cfg(all(feature = "webhook", feature = "matrix"))]

mod common;

use std::time::{Duration, Instant};

use causeway_core::conformance;
use common::matrix::{MatrixPeer, Synapse, bridge_config};
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
    // Synapse's port is needed in the config before Synapse starts.
    let synapse_port = common::free_port();
    let mut d = Daemon::prepare(&config(synapse_port, &hook.url()), &[]);
    let registration = d.dir.path().join("registration.yaml");
    let out = d.cli(&["matrix", "registration", "--output", registration.to_str().unwrap()]);
    assert!(out.status.success(), "registration: {}", String::from_utf8_lossy(&out.stderr));
    let synapse = Synapse::start_on(&registration, synapse_port);
    d.restart().await;
    let deadline = Instant::now() + T;
    while !d.log().contains("every Matrix room is set up") {
        assert!(Instant::now() < deadline, "Matrix rooms not set up:\n{}\n{}", d.log(), synapse.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (synapse, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_conformance_with_a_webhook() {
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let (synapse, d) = start(&hook).await;
    synapse.register("alice");
    let mut alice = MatrixPeer::join(&synapse.url(), "alice", ALIAS).await;
    let mut web = WebhookPeer::new("w", d.url("/bridges/hooks/w"), "tw", hook);
    let file = common::serve_file().await;
    let opts = conformance::Options { timeout: T, file: Some(file), ..Default::default() };
    let report = conformance::run(&mut web, &mut alice, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- causeway ---\n{}\n--- synapse ---\n{}", d.log(), synapse.log()));
    eprintln!("REPORT {report}");
    assert_eq!(report.passed.len(), 16, "{report}");
    let _ = post;
    let _ = json!({});
}
