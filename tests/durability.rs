//! Nothing lost, nothing doubled, order kept: the real binary killed with
//! SIGKILL mid-stream, and a target that is down for a while.
#![cfg(feature = "webhook")]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, Hook, Mode, Received, free_port, post};
use serde_json::json;

const PER_PORTAL: usize = 1000;

fn two_portals(out1: &str, out2: &str) -> String {
    format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}", sync: full }}
outbox: {{ retry_initial: 50ms, retry_max: 500ms }}
bridges:
  hooks:
    type: webhook
    endpoints:
      in1: {{ inbound: {{ token: t }} }}
      in2: {{ inbound: {{ token: t }} }}
      out1: {{ outbound: {{ url: "{out1}" }} }}
      out2: {{ outbound: {{ url: "{out2}" }} }}
portals:
  - id: p1
    links: [{{ bridge: hooks, room: in1 }}, {{ bridge: hooks, room: out1 }}]
  - id: p2
    links: [{{ bridge: hooks, room: in2 }}, {{ bridge: hooks, room: out2 }}]
"#
    )
}

/// Send `range` of portal `p` sequentially; returns the numbers the daemon
/// accepted (202 or duplicate) and stops at the first failure.
async fn send(url: String, p: usize, range: std::ops::Range<usize>, accepted_total: Arc<AtomicUsize>) -> Vec<usize> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut accepted = Vec::new();
    for i in range {
        let body = json!({"id": format!("p{p}-{i}"), "sender": {"id": "load"}, "text": format!("p{p} #{i}")});
        match client.post(&url).bearer_auth("t").json(&body).send().await {
            Ok(r) if r.status().as_u16() == 202 || r.status().as_u16() == 200 => {
                accepted.push(i);
                accepted_total.fetch_add(1, Ordering::Relaxed);
            }
            _ => break,
        }
    }
    accepted
}

/// Sequence numbers of a portal's deliveries, in arrival order, and the
/// idempotency keys seen per number.
fn tally(received: &[Received]) -> (Vec<usize>, HashMap<usize, HashSet<String>>) {
    let mut order = Vec::new();
    let mut keys: HashMap<usize, HashSet<String>> = HashMap::new();
    for r in received {
        let text = r.json["text"].as_str().unwrap();
        let n: usize = text.rsplit('#').next().unwrap().parse().unwrap();
        if keys.entry(n).or_default().insert(r.key.clone()) && keys[&n].len() == 1 {
            order.push(n);
        }
    }
    (order, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_and_doubles_nothing() {
    let mut out1 = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut out2 = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = Daemon::start(&two_portals(&out1.url(), &out2.url())).await;

    // Two senders, one per portal, until the daemon dies under them.
    let total = Arc::new(AtomicUsize::new(0));
    let s1 = tokio::spawn(send(d.url("/bridges/hooks/in1"), 1, 0..PER_PORTAL, total.clone()));
    let s2 = tokio::spawn(send(d.url("/bridges/hooks/in2"), 2, 0..PER_PORTAL, total.clone()));
    let deadline = Instant::now() + Duration::from_secs(120);
    while total.load(Ordering::Relaxed) < PER_PORTAL {
        assert!(Instant::now() < deadline, "senders stalled:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    d.kill();
    let (acc1, acc2) = (s1.await.unwrap(), s2.await.unwrap());
    let accepted_before = acc1.len() + acc2.len();
    assert!((PER_PORTAL..2 * PER_PORTAL).contains(&accepted_before), "kill came too late: {accepted_before}");

    // Restart; the senders resend what was not acknowledged (same ids), and
    // a few acknowledged ones again, as a sender unsure of its last request would.
    d.restart().await;
    let rest1 = tokio::spawn(send(d.url("/bridges/hooks/in1"), 1, acc1.len().saturating_sub(5)..PER_PORTAL, total.clone()));
    let rest2 = tokio::spawn(send(d.url("/bridges/hooks/in2"), 2, acc2.len().saturating_sub(5)..PER_PORTAL, total.clone()));
    let (r1, r2) = (rest1.await.unwrap(), rest2.await.unwrap());
    assert_eq!(r1.last(), Some(&(PER_PORTAL - 1)));
    assert_eq!(r2.last(), Some(&(PER_PORTAL - 1)));

    for (p, hook) in [(1, &mut out1), (2, &mut out2)] {
        let mut received = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            received.extend(hook.drain(Duration::from_millis(200)).await);
            let (order, _) = tally(&received);
            if order.len() >= PER_PORTAL {
                break;
            }
            assert!(Instant::now() < deadline, "portal p{p}: {} of {PER_PORTAL} delivered:\n{}", order.len(), d.log());
        }
        received.extend(hook.drain(Duration::from_millis(500)).await);
        let (order, keys) = tally(&received);
        // Every event delivered, under exactly one idempotency key.
        assert_eq!(order.len(), PER_PORTAL, "p{p}");
        let doubled: Vec<_> = keys.iter().filter(|(_, k)| k.len() != 1).collect();
        assert!(doubled.is_empty(), "p{p}: events delivered under several keys: {doubled:?}");
        // In order: first arrivals are 0, 1, 2, …
        let out_of_order: Vec<_> = order.windows(2).filter(|w| w[0] + 1 != w[1]).take(5).collect();
        assert!(out_of_order.is_empty(), "p{p}: order broken at {out_of_order:?}");
        let repeats = received.len() - PER_PORTAL;
        eprintln!("p{p}: {PER_PORTAL} delivered once by key; {repeats} redeliveries of unconfirmed rows after the kill");
    }
    let out = d.cli(&["outbox", "--json"]);
    let depths: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(depths["hooks"]["pending"].as_u64().unwrap_or(0), 0, "{depths}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_down_gets_everything_when_it_returns() {
    // The receiver's port is known but nothing listens there yet: connections are refused.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let other = Hook::start(Mode::Accept { own_ids: None }).await;
    let d = Daemon::start(&two_portals(&url, &other.url())).await;
    let client = reqwest::Client::new();
    // More than a lane holds in memory while it is busy: the rest it reads
    // back from the store.
    const N: usize = 300;
    for i in 0..N {
        let body = json!({"sender": {"id": "x"}, "text": format!("down #{i}")});
        assert_eq!(post(&client, &d.url("/bridges/hooks/in1"), "t", &body).await.0, 202);
    }
    // Retries pile up while it is down; the outbox holds all of them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.metric("causeway_delivery_retries_total", r#"bridge="hooks""#).await < 3.0 {
        assert!(Instant::now() < deadline, "no retries:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.metric("causeway_outbox_depth", r#"bridge="hooks""#).await, N as f64);
    assert!(d.metric("causeway_delivery_failures_total", r#"bridge="hooks",reason="transient""#).await >= 3.0);
    let pending = d.cli(&["outbox", "--json", "pending", "--limit", "1"]);
    let pending: serde_json::Value = serde_json::from_slice(&pending.stdout).unwrap();
    assert!(pending[0]["last_error"].as_str().unwrap().contains("failed: error sending request"), "{pending}");
    assert!(pending[0]["attempts"].as_u64().unwrap() >= 3, "{pending}");

    // It comes back: everything arrives, in order, once.
    let mut hook = Hook::start_on(port, Mode::Accept { own_ids: None }).await;
    let mut got = Vec::new();
    while got.len() < N {
        got.push(hook.next(Duration::from_secs(10)).await);
    }
    got.extend(hook.drain(Duration::from_millis(500)).await);
    let texts: Vec<String> = got.iter().map(|r| r.json["text"].as_str().unwrap().to_string()).collect();
    let want: Vec<String> = (0..N).map(|i| format!("down #{i}")).collect();
    assert_eq!(texts, want);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.metric("causeway_outbox_depth", r#"bridge="hooks""#).await != 0.0 {
        assert!(Instant::now() < deadline, "outbox depth did not return to 0");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.metric("causeway_dead_letters_total", r#"bridge="hooks""#).await, 0.0);
}
