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

/// Instance `name`'s config, on the shared database `url`; `cluster` is
/// the rest of its `cluster` section.
fn config(name: &str, url: &str, cluster: &str, body: &str) -> String {
    format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ url: "{url}" }}
cluster: {{ instance: {name}, {cluster} }}
outbox: {{ retry_initial: 50ms, retry_max: 500ms }}
{body}"#
    )
}

/// One webhook bridge: what is posted to `in` goes to `out` at `target`.
fn hooks(target: &str) -> String {
    format!(
        r#"
bridges:
  hooks:
    type: webhook
    endpoints:
      in: {{ inbound: {{ token: t }} }}
      out: {{ outbound: {{ url: "{target}" }} }}
portals:
  - id: p
    links: [{{ bridge: hooks, room: in }}, {{ bridge: hooks, room: out }}]
"#
    )
}

/// Start instances a, b and c in that order; a holds everything once it
/// is up, as the first.
async fn three(cluster: &str, body: &str, first_holds: &str) -> Vec<Daemon> {
    let url = common::postgres_database();
    let mut all = Vec::new();
    for name in ["a", "b", "c"] {
        let d = Daemon::start(&config(name, &url, cluster, body)).await;
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

/// One sender, each message to the next instance in turn (what a load
/// balancer does); one that does not answer is passed over, and what it
/// did not acknowledge goes to the next with the same id.
struct Sender {
    client: reqwest::Client,
    urls: Vec<String>,
}

impl Sender {
    fn new(d: &[Daemon]) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        Sender { client, urls: d.iter().map(|d| d.url("/bridges/hooks/in")).collect() }
    }

    /// Message `#i`, until an instance that is not `dead` takes it.
    async fn send(&self, i: usize, dead: &[bool]) {
        let body = json!({"id": format!("m{i}"), "sender": {"id": "load"}, "text": format!("#{i}")});
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut at = i % self.urls.len();
        loop {
            assert!(Instant::now() < deadline, "sending stalled at #{i}");
            if !dead[at] {
                match self.client.post(&self.urls[at]).bearer_auth("t").json(&body).send().await {
                    Ok(r) if r.status().is_success() => return,
                    _ => {}
                }
            }
            at = (at + 1) % self.urls.len();
        }
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
    let body = hooks(&out.url());
    let mut d = three("lease: 3s", &body, "bridge:hooks").await;
    assert!(!holds(&d[1], "bridge:hooks").await && !holds(&d[2], "bridge:hooks").await, "the lease is held twice");

    let sender = Sender::new(&d);
    let mut dead = [false; 3];
    let mut killed_at = None;
    for i in 0..N {
        sender.send(i, &dead).await;
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
    let body = hooks(&out.url());
    // Long enough that running out cannot be what hands them over.
    let mut d = three("lease: 30s", &body, "jobs").await;
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

/// Three instances with NATS for their hints: NATS stops answering for
/// 30 s (SIGSTOP, what a partition looks like to its clients) while a
/// stream goes on, and the holder is killed half way through. Deliveries
/// go on without NATS, another instance takes over by the leases alone,
/// and no message is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_for_30_s_lets_nothing_be_delivered_twice() {
    if !here() {
        return;
    }
    let nats = common::Nats::start();
    let mut out = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = three(&format!("lease: 3s, nats: \"{}\"", nats.url()), &hooks(&out.url()), "bridge:hooks").await;
    for i in &d {
        wait_for(async || i.metric("causeway_cluster_instances", "").await == 3.0, Duration::from_secs(20), "three heartbeats in NATS")
            .await;
        assert_eq!(i.metric("causeway_cluster_nats_up", "").await, 1.0);
    }
    let sender = Sender::new(&d);
    let mut dead = [false; 3];
    let mut received = Vec::new();
    let delivered = |received: &[Received]| tally(received).0.len();

    // With NATS: two of three messages come in at an instance that does
    // not hold the bridge, and the holder hears of them there.
    for i in 0..100 {
        sender.send(i, &dead).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered(&received) < 100 {
        assert!(Instant::now() < deadline, "{} of 100 delivered with NATS up", delivered(&received));
        received.extend(out.drain(Duration::from_millis(100)).await);
    }
    let hints = d[0].metric("causeway_cluster_hints_total", "").await;
    assert!(hints > 0.0, "the holder heard no hints over NATS");

    // NATS stops answering for 30 s; ten messages a second meanwhile, the
    // holder killed half way.
    nats.pause();
    let paused = Instant::now();
    let mut before_kill = 0;
    for i in 100..400 {
        sender.send(i, &dead).await;
        if i == 250 {
            received.extend(out.drain(Duration::from_millis(1)).await);
            before_kill = received.len();
            d[0].kill();
            dead[0] = true;
        }
        tokio::time::sleep_until((paused + Duration::from_millis(100) * (i as u32 - 99)).into()).await;
        received.extend(out.drain(Duration::from_millis(1)).await);
    }
    let mut holding = Vec::new();
    for n in [1, 2] {
        if holds(&d[n], "bridge:hooks").await {
            holding.push(n);
        }
    }
    assert_eq!(holding.len(), 1, "the bridge is held by {holding:?} of the two left");
    let mut seen_away = false;
    for n in [1, 2] {
        seen_away |= d[n].metric("causeway_cluster_nats_up", "").await == 0.0;
    }
    assert!(seen_away, "no instance noticed that NATS stopped answering");
    let during = delivered(&received);
    assert!(during > 300, "only {during} of 400 delivered while NATS was away:\n{}", d[holding[0]].log());
    nats.resume();

    for i in 400..500 {
        sender.send(i, &dead).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered(&received) < 500 {
        assert!(Instant::now() < deadline, "{} of 500 delivered:\n{}", delivered(&received), d[holding[0]].log());
        received.extend(out.drain(Duration::from_millis(100)).await);
    }
    received.extend(out.drain(Duration::from_millis(500)).await);
    let (order, keys) = tally(&received);
    assert_eq!(order, (0..500).collect::<Vec<_>>(), "every message once, in order");
    let doubled: Vec<_> = keys.iter().filter(|(_, k)| k.len() != 1).collect();
    assert!(doubled.is_empty(), "delivered under several keys: {doubled:?}");
    // Before the kill nothing was even sent twice; after it, only what the
    // killed one may have sent, again under the same key.
    assert_eq!(tally(&received[..before_kill]).0.len(), before_kill, "sent twice while NATS was away");
    for n in [1, 2] {
        wait_for(async || d[n].metric("causeway_cluster_nats_up", "").await == 1.0, Duration::from_secs(20), "NATS again").await;
    }
    eprintln!(
        "500 delivered once each, in order, through 30 s without NATS and a kill; {} hints heard with NATS; {} sent again under the same key after the kill",
        hints,
        received.len() - 500
    );
}

/// Real clients on three networks, and three instances linking them:
/// first the instance holding the XMPP component is SIGKILLed while they
/// talk, then (the first back) the one holding the mailbox. Each person
/// gets everyone else's messages once each, in the order said (mail in
/// the order the mailbox has it: mail servers do not keep the order of
/// sending), and so does a webhook receiver on the same portal.
#[cfg(all(feature = "xmpp", feature = "matrix", feature = "email"))]
mod real_clients {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use causeway_core::Body;
    use causeway_core::conformance::{Action, Peer};

    use super::common::mail::{LIST, MailPeer, MailServer};
    use super::common::matrix::{MatrixPeer, Synapse};
    use super::common::world::{self, ALIAS, MUC};
    use super::common::xmpp::{Prosody, XmppPeer};
    use super::common::{Daemon, Hook, Mode, Received};
    use super::{here, holds, wait_for};

    /// Messages per person per round.
    const N: usize = 30;
    /// Who says what: a message of `x` is `x#n`.
    const XMPP: char = 'x';
    const MATRIX: char = 'm';
    const MAIL: char = 'e';

    /// A load balancer in front of the instances, as an operator puts one
    /// before their HTTP ports: each new connection goes to the next
    /// instance in turn that takes it.
    fn balance(listener: tokio::net::TcpListener, ports: Vec<u16>) {
        tokio::spawn(async move {
            let mut turn = 0;
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                turn += 1;
                let ports = ports.clone();
                tokio::spawn(async move {
                    for k in 0..ports.len() {
                        let port = ports[(turn + k) % ports.len()];
                        if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                            return;
                        }
                    }
                });
            }
        });
    }

    /// The numbered messages in `text`, by who said them.
    fn said(text: &str) -> Vec<(char, usize)> {
        text.split(|c: char| c.is_whitespace() || c == ':' || c == '>')
            .filter_map(|w| {
                let (who, n) = w.split_once('#')?;
                let who = match who {
                    "x" => XMPP,
                    "m" => MATRIX,
                    "e" => MAIL,
                    _ => return None,
                };
                Some((who, n.parse().ok()?))
            })
            .collect()
    }

    /// What one side received: by who said it, the numbers in the order
    /// they came.
    #[derive(Default)]
    struct Got(HashMap<char, Vec<usize>>);

    impl Got {
        fn take(&mut self, own: Option<char>, text: &str) {
            for (who, n) in said(text) {
                if Some(who) != own {
                    self.0.entry(who).or_default().push(n);
                }
            }
        }

        fn has(&self, who: char, upto: usize) -> bool {
            let seen: std::collections::HashSet<_> = self.0.get(&who).into_iter().flatten().collect();
            (0..upto).all(|n| seen.contains(&n))
        }
    }

    async fn pull(peer: &mut dyn Peer, own: char, got: &mut Got) {
        while let Ok(s) = peer.next(Duration::from_millis(100)).await {
            if let Body::Message { text, .. } = &s.body {
                got.take(Some(own), &text.plain);
            }
        }
    }

    fn instance(name: &str, url: &str, config: &str) -> String {
        assert!(config.contains(r#"store: { path: "{db}" }"#), "the four networks' config changed");
        config.replace(r#"store: { path: "{db}" }"#, &format!("store: {{ url: \"{url}\" }}\ncluster: {{ instance: {name}, lease: 3s }}"))
    }

    /// The instance holding `connection`, if one does (and only one).
    async fn holder(d: &[Daemon], alive: &[bool], connection: &str) -> Option<usize> {
        let mut found = None;
        for (i, d) in d.iter().enumerate() {
            if alive[i] && holds(d, connection).await {
                assert!(found.is_none(), "{connection} is held twice");
                found = Some(i);
            }
        }
        found
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_xmpp_and_the_mailbox_holders_killed_while_people_talk() {
        if !here() {
            return;
        }
        let prosody = Prosody::start();
        let mail = MailServer::start();
        let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
        let synapse_port = super::common::free_port();
        let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let lb_port = lb.local_addr().unwrap().port();
        // Synapse pushes to the balancer, which passes each connection on
        // to any instance that is up.
        let four = world::without_send_limit(world::config(&prosody, synapse_port, &mail, &hook.url(), ""))
            .replace("url: \"http://127.0.0.1:{port}/bridges/matrix\"", &format!("url: \"http://127.0.0.1:{lb_port}/bridges/matrix\""));
        assert!(four.contains(&format!("{lb_port}/bridges/matrix")), "the Matrix bridge's config changed");
        let url = super::common::postgres_database();
        let mut d: Vec<Daemon> = ["a", "b", "c"].iter().map(|n| Daemon::prepare(&instance(n, &url, &four), &[])).collect();
        balance(lb, d.iter().map(|d| d.port).collect());
        let registration = d[0].dir.path().join("registration.yaml");
        let out = d[0].cli(&["matrix", "registration", "--output", registration.to_str().unwrap()]);
        assert!(out.status.success(), "registration: {}", String::from_utf8_lossy(&out.stderr));
        let synapse = Synapse::start_with(&registration, synapse_port, None);
        synapse.register("bob");

        // a first: it holds every connection and sets up the Matrix room.
        d[0].restart().await;
        d[0].wait_up(&["xmpp", "matrix", "mail"], Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("{e}"));
        wait_for(async || d[0].log().contains("every Matrix room is set up"), Duration::from_secs(30), "the Matrix room").await;
        d[1].restart().await;
        d[2].restart().await;
        let mut alive = [true; 3];
        assert_eq!(holder(&d, &alive, "bridge:xmpp").await, Some(0));

        let mut alice = XmppPeer::join(&prosody, "alice", MUC, "Alice", 0).await;
        let mut bob = MatrixPeer::join(&synapse.url(), "bob", ALIAS).await;
        let mut carol = MailPeer::new(&mail, "carol", "Carol Danvers");
        let (mut to_alice, mut to_bob, mut to_carol, mut to_hook) = (Got::default(), Got::default(), Got::default(), Got::default());
        let mut hooked: Vec<Received> = Vec::new();

        for (round, connection) in [(0, "bridge:xmpp"), (1, "bridge:mail")] {
            let victim = holder(&d, &alive, connection).await.expect("someone holds it");
            let mut killed_at = None;
            for i in round * N..(round + 1) * N {
                let text = |who: char| Action::Text { text: format!("{who}#{i}"), reply_to: None };
                alice.act(text(XMPP)).await.unwrap();
                bob.act(text(MATRIX)).await.unwrap();
                carol.act(text(MAIL)).await.unwrap();
                if i == round * N + N / 3 {
                    d[victim].kill();
                    alive[victim] = false;
                    killed_at = Some(Instant::now());
                }
                // Reading as they go, as people do.
                hooked.extend(hook.drain(Duration::from_millis(1)).await);
            }
            // Another instance takes over.
            let killed_at = killed_at.unwrap();
            let deadline = killed_at + Duration::from_secs(15);
            let new = loop {
                if let Some(h) = holder(&d, &alive, connection).await {
                    break h;
                }
                assert!(Instant::now() < deadline, "nobody took {connection} over within 15 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let after = killed_at.elapsed();
            assert!(after <= Duration::from_secs(10), "{connection} taken over after {after:?}");

            // Everyone gets everything of this round.
            let upto = (round + 1) * N;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                pull(&mut alice, XMPP, &mut to_alice).await;
                pull(&mut bob, MATRIX, &mut to_bob).await;
                pull(&mut carol, MAIL, &mut to_carol).await;
                hooked.extend(hook.drain(Duration::from_millis(100)).await);
                let complete = to_alice.has(MATRIX, upto)
                    && to_alice.has(MAIL, upto)
                    && to_bob.has(XMPP, upto)
                    && to_bob.has(MAIL, upto)
                    && to_carol.has(XMPP, upto)
                    && to_carol.has(MATRIX, upto)
                    && [XMPP, MATRIX, MAIL].iter().all(|w| {
                        let mut g = Got::default();
                        for r in &hooked {
                            g.take(None, r.json["text"].as_str().unwrap_or_default());
                        }
                        g.has(*w, upto)
                    });
                if complete {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: not everything arrived within 120 s; alice {:?}, bob {:?}, carol {:?}\n{}",
                    to_alice.0,
                    to_bob.0,
                    to_carol.0,
                    d[new].log()
                );
            }
            eprintln!("round {round}: {connection} taken over by {} {after:?} after the kill", ["a", "b", "c"][new]);
            if round == 0 {
                // Back, as an operator brings a failed machine back.
                d[victim].restart().await;
                alive[victim] = true;
            }
        }
        // Anything doubled would come now.
        tokio::time::sleep(Duration::from_secs(3)).await;
        pull(&mut alice, XMPP, &mut to_alice).await;
        pull(&mut bob, MATRIX, &mut to_bob).await;
        pull(&mut carol, MAIL, &mut to_carol).await;
        hooked.extend(hook.drain(Duration::from_millis(500)).await);

        // Mail in the order the mailbox holds it.
        let mut mailbox = Vec::new();
        for (_, raw) in mail.fetch("bridge", "INBOX") {
            let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
            if m.to().and_then(|t| t.first()).and_then(|a| a.address()) == Some(LIST) {
                mailbox.extend(said(&m.body_text(0).unwrap_or_default()).into_iter().filter(|(w, _)| *w == MAIL).map(|(_, n)| n));
            }
        }
        let total = 2 * N;
        assert_eq!(mailbox.len(), total, "the mailbox holds {mailbox:?}");
        let said_order = |who: char| if who == MAIL { mailbox.clone() } else { (0..total).collect::<Vec<_>>() };
        // The hook: once each by key as well.
        let mut keys: HashMap<String, usize> = HashMap::new();
        let mut to_hook_once = Vec::new();
        for r in &hooked {
            *keys.entry(r.key.clone()).or_default() += 1;
            if keys[&r.key] == 1 {
                to_hook_once.push(r.json["text"].as_str().unwrap_or_default().to_string());
            }
        }
        for t in &to_hook_once {
            to_hook.take(None, t);
        }
        for (side, got, from) in [
            ("alice (XMPP)", &to_alice, &[MATRIX, MAIL][..]),
            ("bob (Matrix)", &to_bob, &[XMPP, MAIL]),
            ("carol (mail)", &to_carol, &[XMPP, MATRIX]),
            ("the hook", &to_hook, &[XMPP, MATRIX, MAIL]),
        ] {
            for &who in from {
                assert_eq!(got.0.get(&who), Some(&said_order(who)), "{side}: what {who} said, lost, doubled or out of order");
            }
        }
        eprintln!("{total} messages each from XMPP, Matrix and mail, through two kills: each received once, in order, on every side");
    }
}
