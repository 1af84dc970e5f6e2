//! Three instances on one PostgreSQL store (docs/scale-out.md): each
//! bridge's connection is held by one of them under a lease; when that one
//! is killed, another takes over, and nothing is lost, doubled or reordered.
//!
//! These tests need `CAUSEWAY_TEST_POSTGRES` (tests/run.sh starts the
//! server) and run in the suite's first pass; the second pass, which puts
//! every other test on PostgreSQL, leaves them out (they are on it already).
#![cfg(feature = "webhook")]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{Daemon, Hook, Mode, Received};
use serde_json::json;

const N: usize = 600;

/// Whether to run here; see the module's comment.
fn here() -> bool {
    if common::on_postgres() {
        eprintln!("scale-out tests ran in the suite's first pass, on PostgreSQL already");
        return false;
    }
    if std::env::var("CAUSEWAY_TEST_POSTGRES").is_err() {
        assert!(std::env::var("CI").is_err(), "CI must run the scale-out tests: CAUSEWAY_TEST_POSTGRES is not set");
        eprintln!("no CAUSEWAY_TEST_POSTGRES: scale-out tests skipped (tests/run.sh starts a server)");
        return false;
    }
    true
}

/// Instance `name`'s config, on the shared database `url`.
fn config(name: &str, url: &str, lease: &str, body: &str) -> String {
    format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ url: "{url}" }}
cluster: {{ instance: {name}, lease: {lease} }}
outbox: {{ retry_initial: 50ms, retry_max: 500ms }}
{body}"#
    )
}

/// Start instances a, b and c in that order; a holds everything once it
/// is up, as the first.
async fn three(lease: &str, body: &str, first_holds: &str) -> Vec<Daemon> {
    let url = common::postgres_database();
    let mut all = Vec::new();
    for name in ["a", "b", "c"] {
        let d = Daemon::start(&config(name, &url, lease, body)).await;
        if name == "a" {
            wait_for(|| holds(&d, first_holds), Duration::from_secs(20), "a to take the lease").await;
        }
        all.push(d);
    }
    all
}

async fn holds(d: &Daemon, connection: &str) -> bool {
    d.metric("causeway_cluster_owned", &format!(r#"connection="{connection}""#)).await == 1.0
}

async fn wait_for<F: AsyncFn() -> bool>(f: F, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// First arrivals by number, and the idempotency keys seen per number.
fn tally(received: &[Received]) -> (Vec<usize>, HashMap<usize, HashSet<String>>) {
    let mut order = Vec::new();
    let mut keys: HashMap<usize, HashSet<String>> = HashMap::new();
    for r in received {
        let n: usize = r.json["text"].as_str().unwrap().rsplit('#').next().unwrap().parse().unwrap();
        let k = keys.entry(n).or_default();
        if k.is_empty() {
            order.push(n);
        }
        k.insert(r.key.clone());
    }
    (order, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_killed_mid_stream_loses_doubles_and_reorders_nothing() {
    if !here() {
        return;
    }
    let mut out = Hook::start(Mode::Accept { own_ids: None }).await;
    let body = format!(
        r#"
bridges:
  hooks:
    type: webhook
    endpoints:
      in: {{ inbound: {{ token: t }} }}
      out: {{ outbound: {{ url: "{}" }} }}
portals:
  - id: p
    links: [{{ bridge: hooks, room: in }}, {{ bridge: hooks, room: out }}]
"#,
        out.url()
    );
    let mut d = three("3s", &body, "bridge:hooks").await;
    assert!(!holds(&d[1], "bridge:hooks").await && !holds(&d[2], "bridge:hooks").await, "the lease is held twice");

    // One sender, each message to the next instance in turn (what a load
    // balancer does); one that does not answer is passed over, and what it
    // did not acknowledge goes to the next with the same id.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let urls: Vec<String> = d.iter().map(|d| d.url("/bridges/hooks/in")).collect();
    let mut dead = [false; 3];
    let mut killed_at = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    for i in 0..N {
        let body = json!({"id": format!("m{i}"), "sender": {"id": "load"}, "text": format!("#{i}")});
        let mut at = i % 3;
        loop {
            assert!(Instant::now() < deadline, "sending stalled at #{i}");
            if !dead[at] {
                match client.post(&urls[at]).bearer_auth("t").json(&body).send().await {
                    Ok(r) if r.status().is_success() => break,
                    _ => {}
                }
            }
            at = (at + 1) % 3;
        }
        if i == N / 3 {
            // Mid-stream: the holder dies with deliveries in flight.
            d[0].kill();
            dead[0] = true;
            killed_at = Some(Instant::now());
        }
    }
    let killed_at = killed_at.unwrap();

    // Another instance holds the bridge within the lease and a bit.
    let mut took_over = None;
    let deadline = killed_at + Duration::from_secs(15);
    while took_over.is_none() {
        for (n, i) in [(1, &d[1]), (2, &d[2])] {
            if holds(i, "bridge:hooks").await {
                took_over = Some((n, killed_at.elapsed()));
            }
        }
        assert!(Instant::now() < deadline, "nobody took over within 15 s:\n{}\n{}", d[1].log(), d[2].log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (holder, after) = took_over.unwrap();
    assert!(after <= Duration::from_secs(10), "takeover took {after:?}");
    let other = 3 - holder;
    assert!(!holds(&d[other], "bridge:hooks").await, "the lease is held twice");

    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        received.extend(out.drain(Duration::from_millis(200)).await);
        if tally(&received).0.len() >= N {
            break;
        }
        assert!(Instant::now() < deadline, "{} of {N} delivered:\n{}", tally(&received).0.len(), d[holder].log());
    }
    received.extend(out.drain(Duration::from_millis(500)).await);
    let (order, keys) = tally(&received);
    assert_eq!(order.len(), N, "every message delivered");
    let doubled: Vec<_> = keys.iter().filter(|(_, k)| k.len() != 1).collect();
    assert!(doubled.is_empty(), "delivered under several keys: {doubled:?}");
    let out_of_order: Vec<_> = order.windows(2).filter(|w| w[0] + 1 != w[1]).take(5).collect();
    assert!(out_of_order.is_empty(), "order broken at {out_of_order:?}");
    eprintln!(
        "{N} delivered once each, in order; instance {} took over {:?} after the kill; {} redeliveries under the same key",
        ["a", "b", "c"][holder],
        after,
        received.len() - N
    );
    assert_eq!(d[holder].metric("causeway_cluster_takeovers_total", r#"connection="bridge:hooks""#).await, 1.0);
    assert!(d[holder].metric("causeway_cluster_lease_renewals_total", "").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_stops_lets_go_at_once() {
    if !here() {
        return;
    }
    let out = Hook::start(Mode::Accept { own_ids: None }).await;
    let body = format!(
        r#"
bridges:
  hooks:
    type: webhook
    endpoints:
      in: {{ inbound: {{ token: t }} }}
      out: {{ outbound: {{ url: "{}" }} }}
portals:
  - id: p
    links: [{{ bridge: hooks, room: in }}, {{ bridge: hooks, room: out }}]
"#,
        out.url()
    );
    // Long enough that running out cannot be what hands them over.
    let mut d = three("30s", &body, "jobs").await;
    // The jobs (broadcasts, calendars, files, retention) run on one alone.
    let mut holding = 0;
    for i in &d {
        holding += holds(i, "jobs").await as usize;
    }
    assert_eq!(holding, 1, "the jobs run on one instance");
    // A stop (SIGTERM) lets go of the leases: another takes them at its
    // next try, well before they would run out.
    let stopped = Instant::now();
    assert!(d[0].terminate().success());
    assert!(d[0].log().contains("let go of the leases"), "{}", d[0].log());
    wait_for(
        async || holds(&d[1], "jobs").await || holds(&d[2], "jobs").await,
        Duration::from_secs(3),
        "another instance to take the jobs' lease",
    )
    .await;
    eprintln!("taken over {:?} after the stop", stopped.elapsed());
}
