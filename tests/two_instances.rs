//! Two bridges on the same pair of rooms: two Causeway instances, each
//! linking the same MUC (as two components of a real Prosody) and the same
//! Matrix room (as two application services of a real Synapse). Nothing may
//! ping-pong: what one relays carries Causeway's mark, and the other never
//! relays it again; their ghosts are ignored by name (`router.ignore`).
#![cfg(all(feature = "xmpp", feature = "matrix"))]

mod common;

use std::time::{Duration, Instant};

use causeway_core::Body;
use causeway_core::conformance::{Action, Peer};
use common::Daemon;
use common::matrix::{MatrixPeer, Synapse, bridge_config};
use common::xmpp::{Prosody, XmppPeer};

const MUC: &str = "ops@conference.xmpp.test";
const ALIAS: &str = "#causeway_ops:matrix.test";

fn config(xmpp: &str, matrix: &str, ignore: &str) -> String {
    format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}" }}
outbox: {{ retry_initial: 100ms, retry_max: 2s }}
router: {{ ignore: {ignore} }}
bridges:
  xmpp: {xmpp}
  matrix: {matrix}
portals:
  - id: ops
    links: [{{ bridge: xmpp, room: "{MUC}" }}, {{ bridge: matrix, room: "{ALIAS}" }}]
"#
    )
}

async fn wait_for(d: &Daemon, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log().contains(what) {
        assert!(Instant::now() < deadline, "no {what:?}:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every copy of `text` `peer` sees within `wait`, by sender name.
async fn copies(peer: &mut dyn Peer, text: &str, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(s) = peer.next(deadline.saturating_duration_since(Instant::now())).await
            && let Body::Message { text: t, .. } = &s.body
            && t.plain == text
        {
            seen.push(s.sender_name);
        }
    }
    seen
}

/// Two Causeways (A, then B) on the same MUC and Matrix room, their servers
/// and the two people who talk there. `router_extra_b`/`_a` are added to
/// each one's `router` section.
struct Two {
    prosody: Prosody,
    synapse: Synapse,
    a: Daemon,
    b: Daemon,
}

async fn start_two(router_a: &str, router_b: &str) -> Two {
    let prosody = Prosody::start();
    let synapse_port = common::free_port();
    let xmpp_a = prosody.bridge_config();
    // B's own component, and its own nick in the room (two bots cannot
    // both sit there as "Causeway").
    let xmpp_b = xmpp_a.replace("bridge.xmpp.test", "bridge2.xmpp.test").replace("type: xmpp,", "type: xmpp, bot_nick: Causeway2,");
    let matrix_a = bridge_config(synapse_port);
    let matrix_b = matrix_a.replace("as-secret-token", "as2-secret-token").replace("hs-secret-token", "hs2-secret-token").replace(
        "type: matrix,",
        "type: matrix, id: causeway2, sender_localpart: causeway2, ghost_prefix: causeway2_, alias_prefix: causeway2_,",
    );
    let ignore_b = format!(r#"{{ matrix: ["@causeway2:matrix.test", "@causeway2_*:matrix.test"] }}{router_a}"#);
    let ignore_a = format!(r#"{{ matrix: ["@causeway:matrix.test", "@causeway_*:matrix.test"] }}{router_b}"#);
    let mut a = Daemon::prepare(&config(&xmpp_a, &matrix_a, &ignore_b), &[]);
    let mut b = Daemon::prepare(&config(&xmpp_b, &matrix_b, &ignore_a), &[]);
    let registration = |d: &Daemon| {
        let path = d.dir.path().join("registration.yaml");
        let out = d.cli(&["matrix", "registration", "--output", path.to_str().unwrap()]);
        assert!(out.status.success(), "registration: {}", String::from_utf8_lossy(&out.stderr));
        path
    };
    let (reg_a, reg_b) = (registration(&a), registration(&b));
    let synapse = Synapse::start_on_with_extra(&reg_a, synapse_port, &[&reg_b]);
    synapse.register("erin");
    // A first: it creates the Matrix room; B joins it by its alias.
    a.restart().await;
    wait_for(&a, "every Matrix room is set up").await;
    b.restart().await;
    wait_for(&b, "every Matrix room is set up").await;
    for d in [&a, &b] {
        d.wait_up(&["xmpp"], Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e}"));
    }
    Two { prosody, synapse, a, b }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_causeways_on_the_same_rooms_never_relay_each_other() {
    let Two { prosody, synapse, a, b } = start_two("", "").await;
    let mut alice = XmppPeer::join(&prosody, "alice", MUC, "Alice", 0).await;
    let mut erin = MatrixPeer::join(&synapse.url(), "erin", ALIAS).await;
    // Both bridges seated in the room and the ghosts' joins settled.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // From XMPP: at most one copy per bridge on Matrix, and nothing back.
    alice.act(Action::Text { text: "hello from xmpp".into(), reply_to: None }).await.unwrap();
    let on_matrix = copies(&mut erin, "hello from xmpp", Duration::from_secs(8)).await;
    let back = copies(&mut alice, "hello from xmpp", Duration::from_secs(2)).await;
    assert!(!on_matrix.is_empty() && on_matrix.len() <= 2, "on Matrix: {on_matrix:?}\n{}\n{}", a.log(), b.log());
    assert!(back.iter().all(|n| n == "Alice"), "came back to XMPP: {back:?}");

    // From Matrix: the same the other way.
    erin.act(Action::Text { text: "hello from matrix".into(), reply_to: None }).await.unwrap();
    let on_xmpp = copies(&mut alice, "hello from matrix", Duration::from_secs(8)).await;
    let back = copies(&mut erin, "hello from matrix", Duration::from_secs(2)).await;
    assert!(!on_xmpp.is_empty() && on_xmpp.len() <= 2, "on XMPP: {on_xmpp:?}\n{}\n{}", a.log(), b.log());
    assert!(back.len() <= 1, "came back to Matrix: {back:?}");

    // What each bridge did not relay again, because the other had.
    let mut stopped = 0.0;
    for d in [&a, &b] {
        for bridge in ["xmpp", "matrix"] {
            stopped +=
                d.metric("causeway_inbound_rejected_total", &format!(r#"bridge="{bridge}",reason="relayed_by_another_bridge""#)).await;
        }
    }
    assert!(stopped >= 2.0, "the marks stopped nothing ({stopped}): the test did not meet a loop\n{}\n{}", a.log(), b.log());
    eprintln!("on Matrix {on_matrix:?}, on XMPP {on_xmpp:?}; {stopped} relays stopped by the mark");
}

/// With `router.peer` (a shared secret) and B standing by (`standby`): one
/// message from a real client arrives exactly once on the other side — B
/// sees A's signed copy and does not deliver its own — and nothing comes
/// back; with A gone, B delivers it (after its wait), still once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_standing_by_gives_exactly_one_copy_and_takes_over_when_the_other_is_gone() {
    let peer = r#", peer: { secret: "shared-by-both-causeways" }"#;
    let standby = r#", peer: { secret: "shared-by-both-causeways", standby: 6s }"#;
    let Two { prosody, synapse, mut a, b } = start_two(peer, standby).await;
    let mut alice = XmppPeer::join(&prosody, "alice", MUC, "Alice", 0).await;
    let mut erin = MatrixPeer::join(&synapse.url(), "erin", ALIAS).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    for n in 0..2 {
        let text = format!("once from xmpp {n}");
        alice.act(Action::Text { text: text.clone(), reply_to: None }).await.unwrap();
        let on_matrix = copies(&mut erin, &text, Duration::from_secs(9)).await;
        assert_eq!(on_matrix.len(), 1, "{text} on Matrix: {on_matrix:?}\n{}\n{}", a.log(), b.log());
        let text = format!("once from matrix {n}");
        erin.act(Action::Text { text: text.clone(), reply_to: None }).await.unwrap();
        let on_xmpp = copies(&mut alice, &text, Duration::from_secs(9)).await;
        assert_eq!(on_xmpp.len(), 1, "{text} on XMPP: {on_xmpp:?}\n{}\n{}", a.log(), b.log());
    }
    let skipped = b.metric("causeway_deliveries_skipped_total", r#"bridge="matrix""#).await
        + b.metric("causeway_deliveries_skipped_total", r#"bridge="xmpp""#).await;
    assert!(skipped >= 4.0, "B did not stand down for A's copies ({skipped})\n{}", b.log());

    // A is gone: B delivers, once, after its wait.
    a.kill();
    let sent = Instant::now();
    alice.act(Action::Text { text: "while A is down".into(), reply_to: None }).await.unwrap();
    let on_matrix = copies(&mut erin, "while A is down", Duration::from_secs(14)).await;
    assert_eq!(on_matrix.len(), 1, "on Matrix while A is down: {on_matrix:?}\n{}", b.log());
    assert!(sent.elapsed() >= Duration::from_secs(6), "B did not wait for its peer");
    erin.act(Action::Text { text: "to xmpp while A is down".into(), reply_to: None }).await.unwrap();
    let on_xmpp = copies(&mut alice, "to xmpp while A is down", Duration::from_secs(14)).await;
    assert_eq!(on_xmpp.len(), 1, "on XMPP while A is down: {on_xmpp:?}\n{}", b.log());
}
