//! XMPP, Matrix, email and webhooks in one portal, each against its real
//! server with a real client, through the real binary.
#![cfg(all(feature = "webhook", feature = "xmpp", feature = "matrix", feature = "email"))]

mod common;

use std::time::Duration;

use causeway_core::Capabilities;
use causeway_core::conformance::{self, Peer};
use common::WebhookPeer;
use common::mail::MailPeer;
use common::matrix::MatrixPeer;
use common::world::{ALIAS, MUC, World};
use common::xmpp::XmppPeer;

const T: Duration = Duration::from_secs(30);

/// From each network: a message, a reply to another network's message, an
/// edit and a reaction; every other network shows each, referencing its own
/// ids, or the notice where it cannot show an edit or a reaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_network_conformance() {
    let mut w = World::start("").await;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let mut carol = MailPeer::new(&w.mail, "carol", "Carol D.");
    let mut web = WebhookPeer::new("w", w.daemon.url("/bridges/hooks/w"), "tw", w.hook.take().unwrap());
    // What each room can show through Causeway.
    alice.caps = Capabilities { threads: false, ..Capabilities::ALL };
    let opts = conformance::Options { timeout: T, ..Default::default() };
    let mut peers: Vec<&mut dyn Peer> = vec![&mut web, &mut alice, &mut bob, &mut carol];
    let report = conformance::run_all(&mut peers, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- causeway ---\n{}\n{}", w.daemon.log(), w.mail.log()));
    eprintln!("{report}");
    // Texts and replies from all four; edits and reactions from the three that make them.
    assert_eq!(report.passed.len(), 4 + 4 + 3 + 3, "{report}");
}
