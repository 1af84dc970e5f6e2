//! One Causeway on SQLite, one on PostgreSQL, three on PostgreSQL with NATS:
//! the same paths side by side in one run, and the cluster's failover.
//!
//! For each store (`BENCH_STORES`, default `sqlite,postgres,cluster`):
//!
//! 1. webhook → webhook at full speed: `BENCH_EVENTS` (5,000) events from
//!    `BENCH_CONCURRENCY` (32) senders over `BENCH_PORTALS` (8) portals,
//!    each event posted to the next instance in turn;
//! 2. webhook → webhook at `BENCH_RATE` (500) events/s for `BENCH_SECONDS`
//!    (10) s: latency from the sender's POST to the receiver's arrival;
//! 3. XMPP → Matrix: a real XMPP client in a Prosody MUC says
//!    `BENCH_MESSAGES` (300) messages at 20/s, a real Matrix client reads
//!    them on Synapse.
//!
//! Then, for the cluster: webhook events at 200/s for 30 s over the three,
//! the holder SIGKILLed after 5 s and the next holder stopped (SIGTERM)
//! after 18 s; how long until another holds the bridge, the longest pause
//! between deliveries, and whether every event came once, in order.
//!
//! PostgreSQL and NATS are started by the project's scripts
//! (tests/peers/postgres.sh, tests/peers/nats.sh), everything on 127.0.0.1.
//! `cargo bench --bench scale_out` (BENCHMARKS.md). Bounded in count and
//! time; stops by itself.

#[allow(dead_code)]
#[path = "../relay/clients.rs"]
mod clients;
#[path = "../../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::matrix::Synapse;
use common::xmpp::Prosody;
use common::{Daemon, Hook, Mode, Nats, Received};
use serde_json::json;

const MUC: &str = "ops@conference.xmpp.test";
const ALIAS: &str = "#causeway_ops:matrix.test";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn peers(script: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(script)
}

/// The suite's PostgreSQL, started for the benchmark; stopped when dropped.
struct Postgres {
    dir: tempfile::TempDir,
}

impl Postgres {
    fn start() -> (Postgres, String) {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port().to_string();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("bash").arg(peers("postgres.sh")).args(args).output().unwrap();
            assert!(out.status.success(), "postgres.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        run(&["install"]);
        let path = dir.path().display().to_string();
        run(&["start", &path, &port]);
        let url = run(&["url", &path, &port]).trim().to_string();
        (Postgres { dir }, url)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash").arg(peers("postgres.sh")).arg("stop").arg(self.dir.path()).output();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Store {
    Sqlite,
    Postgres,
    Cluster,
}

impl Store {
    fn parse(s: &str) -> Store {
        match s {
            "sqlite" => Store::Sqlite,
            "postgres" => Store::Postgres,
            "cluster" => Store::Cluster,
            other => panic!("BENCH_STORES: unknown store {other:?} (sqlite, postgres, cluster)"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Store::Sqlite => "1 × SQLite",
            Store::Postgres => "1 × PostgreSQL",
            Store::Cluster => "3 × PostgreSQL + NATS",
        }
    }
}

/// The instances' configs: `body` (bridges, portals, people) on `store`.
fn configs(store: Store, nats: Option<&str>, body: &str) -> Vec<String> {
    let head = "http: { listen: \"127.0.0.1:{port}\" }\noutbox: { retry_initial: 100ms, retry_max: 2s }\n";
    match store {
        Store::Sqlite => vec![format!("{head}store: {{ path: \"{{db}}\", sync: full }}\n{body}")],
        Store::Postgres => vec![format!("{head}store: {{ url: \"{}\" }}\n{body}", common::postgres_database())],
        Store::Cluster => {
            let url = common::postgres_database();
            let lease = std::env::var("BENCH_LEASE").unwrap_or_else(|_| "6s".into());
            let nats = nats.expect("NATS for the cluster");
            ["a", "b", "c"]
                .iter()
                .map(|n| {
                    format!("{head}store: {{ url: \"{url}\" }}\ncluster: {{ instance: {n}, lease: {lease}, nats: \"{nats}\" }}\n{body}")
                })
                .collect()
        }
    }
}

/// Start the prepared instances, the first alone until it holds `lease`.
async fn launch(d: &mut [Daemon], lease: &str) {
    d[0].restart().await;
    if d.len() > 1 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while d[0].metric("causeway_cluster_owned", &format!(r#"connection="{lease}""#)).await != 1.0 {
            assert!(Instant::now() < deadline, "the first instance did not take {lease}:\n{}", d[0].log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for i in d.iter_mut().skip(1) {
        i.restart().await;
    }
}

fn cpu(d: &[Daemon]) -> Duration {
    d.iter().map(Daemon::cpu_time).sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// When each event was posted, by its number; arrivals carry the number.
struct Clock {
    base: Instant,
}

impl Clock {
    fn text(&self, i: usize) -> String {
        format!("#{i} {}", self.base.elapsed().as_micros())
    }
    /// (number, latency) of an arrival.
    fn read(&self, r: &Received) -> Option<(usize, Duration)> {
        let t = r.json["text"].as_str()?;
        let (n, sent) = t.strip_prefix('#')?.split_once(' ')?;
        let sent = Duration::from_micros(sent.parse().ok()?);
        Some((n.parse().ok()?, (r.at - self.base).saturating_sub(sent)))
    }
}

/// Post event `i` to portal `i % portals`, at the next instance in turn
/// that takes it (one that does not answer is passed over, the same id to
/// the next); false when none took it.
async fn post(client: &reqwest::Client, ports: &[u16], dead: &[AtomicBool], portals: usize, i: usize, text: String) -> bool {
    let body = json!({"id": format!("e{i}"), "sender": {"id": "bench"}, "text": text});
    for k in 0..ports.len() * 3 {
        let at = (i + k) % ports.len();
        if dead[at].load(Ordering::Relaxed) {
            continue;
        }
        let url = format!("http://127.0.0.1:{}/bridges/hooks/in{}", ports[at], i % portals);
        if client.post(&url).bearer_auth("t").json(&body).send().await.is_ok_and(|r| r.status().as_u16() == 202) {
            return true;
        }
    }
    false
}

/// Take arrivals until `n` distinct events came (or `deadline`).
async fn collect(hook: &mut Hook, clock: &Clock, n: usize, deadline: Instant) -> Vec<Received> {
    let mut got = Vec::new();
    let mut seen = HashSet::new();
    while seen.len() < n && Instant::now() < deadline {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(100), hook.rx.recv()).await {
            if let Some((i, _)) = clock.read(&r) {
                seen.insert(i);
            }
            got.push(r);
        }
    }
    got
}

/// Once each, by idempotency key; how many arrived twice; latencies sorted.
fn tally(got: &[Received], clock: &Clock) -> (usize, usize, Vec<Duration>) {
    let mut first: HashMap<usize, Duration> = HashMap::new();
    let mut keys: HashSet<&str> = HashSet::new();
    let mut again = 0;
    for r in got {
        let Some((i, lat)) = clock.read(r) else { continue };
        if !keys.insert(&r.key) || first.contains_key(&i) {
            again += 1;
            continue;
        }
        first.insert(i, lat);
    }
    let mut lat: Vec<Duration> = first.values().copied().collect();
    lat.sort();
    (first.len(), again, lat)
}

struct WebhookResult {
    full_rate: f64,
    full_p50: Duration,
    full_p99: Duration,
    full_cpu_us: f64,
    fixed_delivered: String,
    fixed_p50: Duration,
    fixed_p99: Duration,
    again: usize,
}

fn hooks_body(portals: usize, target: &str) -> String {
    let mut endpoints = String::new();
    let mut links = String::new();
    for p in 0..portals {
        endpoints.push_str(&format!("      in{p}: {{ inbound: {{ token: t }} }}\n      out{p}: {{ outbound: {{ url: \"{target}\" }} }}\n"));
        links.push_str(&format!("  - id: p{p}\n    links: [{{ bridge: hooks, room: in{p} }}, {{ bridge: hooks, room: out{p} }}]\n"));
    }
    format!("bridges:\n  hooks:\n    type: webhook\n    endpoints:\n{endpoints}portals:\n{links}")
}

async fn webhook(store: Store, nats: Option<&str>) -> WebhookResult {
    let events = env("BENCH_EVENTS", 5_000) as usize;
    let concurrency = env("BENCH_CONCURRENCY", 32) as usize;
    let portals = env("BENCH_PORTALS", 8) as usize;
    let rate = env("BENCH_RATE", 500) as usize;
    let seconds = env("BENCH_SECONDS", 10) as usize;
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d: Vec<Daemon> = configs(store, nats, &hooks_body(portals, &hook.url())).iter().map(|c| Daemon::prepare(c, &[])).collect();
    launch(&mut d, "bridge:hooks").await;
    let ports: Arc<Vec<u16>> = Arc::new(d.iter().map(|d| d.port).collect());
    let dead: Arc<Vec<AtomicBool>> = Arc::new(d.iter().map(|_| AtomicBool::new(false)).collect());
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let clock = Arc::new(Clock { base: Instant::now() });
    // Warm-up: connections open, lanes running.
    for i in 0..50 {
        assert!(post(&client, &ports, &dead, portals, 1_000_000 + i, clock.text(1_000_000 + i)).await);
    }
    collect(&mut hook, &clock, 50, Instant::now() + Duration::from_secs(30)).await;

    // Full speed.
    let cpu0 = cpu(&d);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (client, ports, dead, clock) = (client.clone(), ports.clone(), dead.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            for i in (c..events).step_by(concurrency) {
                assert!(post(&client, &ports, &dead, portals, i, clock.text(i)).await, "event {i} refused");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = collect(&mut hook, &clock, events, Instant::now() + Duration::from_secs(300)).await;
    let took = start.elapsed();
    let cpu1 = cpu(&d);
    let (full, again_full, lat) = tally(&got, &clock);
    assert_eq!(full, events, "{}: {full} of {events} delivered at full speed", store.label());

    // A fixed rate.
    let total = rate * seconds;
    let senders = concurrency.min(total);
    let period = Duration::from_secs_f64(senders as f64 / rate as f64);
    let mut tasks = Vec::new();
    for c in 0..senders {
        let (client, ports, dead, clock) = (client.clone(), ports.clone(), dead.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for i in (events + c..events + total).step_by(senders) {
                tick.tick().await;
                post(&client, &ports, &dead, portals, i, clock.text(i)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = collect(&mut hook, &clock, total, Instant::now() + Duration::from_secs(120)).await;
    let (fixed, again_fixed, fixed_lat) = tally(&got, &clock);
    for i in d.iter_mut() {
        i.terminate();
    }
    WebhookResult {
        full_rate: full as f64 / took.as_secs_f64(),
        full_p50: percentile(&lat, 0.5),
        full_p99: percentile(&lat, 0.99),
        full_cpu_us: (cpu1 - cpu0).as_secs_f64() * 1e6 / events as f64,
        fixed_delivered: format!("{fixed}/{total}"),
        fixed_p50: percentile(&fixed_lat, 0.5),
        fixed_p99: percentile(&fixed_lat, 0.99),
        again: again_full + again_fixed,
    }
}

struct RelayResult {
    delivered: String,
    duplicates: usize,
    out_of_order: usize,
    p50: Duration,
    p99: Duration,
    cpu_us: f64,
}

async fn xmpp_matrix(store: Store, nats: Option<&str>) -> RelayResult {
    let n = env("BENCH_MESSAGES", 300) as usize;
    let prosody = Prosody::start();
    let synapse_port = common::free_port();
    let body = format!(
        "bridges:\n  xmpp: {}\n  matrix: {}\nportals:\n  - id: ops\n    links: [{{ bridge: xmpp, room: \"{MUC}\" }}, {{ bridge: matrix, room: \"{ALIAS}\" }}]\n\
         people:\n  - {{ id: alice, name: Alice Liddell, accounts: {{ xmpp: alice@xmpp.test }} }}\n  - {{ id: bob, name: Bob Builder, accounts: {{ matrix: \"@bob:matrix.test\" }} }}\n",
        prosody.bridge_config(),
        common::matrix::bridge_config(synapse_port)
    );
    let mut d: Vec<Daemon> = configs(store, nats, &body).iter().map(|c| Daemon::prepare(c, &[])).collect();
    let registration = d[0].dir.path().join("registration.yaml");
    let out = d[0].cli(&["matrix", "registration", "--output", registration.to_str().unwrap()]);
    assert!(out.status.success(), "registration: {}", String::from_utf8_lossy(&out.stderr));
    let synapse = Synapse::start_with(&registration, synapse_port, None);
    synapse.register("alice");
    synapse.register("bob");
    launch(&mut d, "bridge:xmpp").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while d[0].metric("causeway_bridge_up", r#"bridge="xmpp""#).await != 1.0 || !d[0].log().contains("every Matrix room is set up") {
        assert!(Instant::now() < deadline, "not up:\n{}", d[0].log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut alice = clients::Xmpp::login(prosody.c2s, "alice").await;
    alice.join(MUC, "Alice").await;
    clients::discard(alice.arrivals.take().unwrap());
    let mut bob = clients::Matrix::login(&synapse.url(), "bob").await;
    bob.join(ALIAS).await;
    let mut arrivals = bob.arrivals().await;

    let tag = format!("x{}", std::process::id());
    let number = |text: &str, tag: &str| -> Option<usize> {
        let rest = &text[text.find(&format!("bench-{tag}-"))? + tag.len() + 7..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    // Warm-up: ghosts made and joined.
    for i in 0..10 {
        alice.say(MUC, &format!("bench-warm{tag}-{i}")).await;
    }
    let mut warm = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while warm < 10 && Instant::now() < deadline {
        if let Ok(Some((t, _))) = tokio::time::timeout(Duration::from_millis(200), arrivals.recv()).await
            && t.contains(&format!("bench-warm{tag}-"))
        {
            warm += 1;
        }
    }
    assert_eq!(warm, 10, "the warm-up did not get through");

    let cpu0 = cpu(&d);
    let start = Instant::now() + Duration::from_millis(100);
    let mut sent_at = Vec::with_capacity(n);
    let mut tally = clients::Tally::default();
    let take = |tally: &mut clients::Tally, text: &str, at: Instant| {
        if let Some(i) = number(text, &tag) {
            tally.take(i, at);
        }
    };
    for i in 0..n {
        tokio::time::sleep_until((start + Duration::from_millis(50) * i as u32).into()).await;
        sent_at.push(Instant::now());
        alice.say(MUC, &format!("bench-{tag}-{i} hello from the benchmark")).await;
        while let Ok((t, at)) = arrivals.try_recv() {
            take(&mut tally, &t, at);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while tally.got.len() < n && Instant::now() < deadline {
        if let Ok(Some((t, at))) = tokio::time::timeout(Duration::from_millis(200), arrivals.recv()).await {
            take(&mut tally, &t, at);
        }
    }
    let linger = Instant::now() + Duration::from_secs(2);
    while let Ok(Some((t, at))) = tokio::time::timeout(linger.saturating_duration_since(Instant::now()), arrivals.recv()).await {
        take(&mut tally, &t, at);
    }
    let cpu_us = (cpu(&d) - cpu0).as_secs_f64() * 1e6 / tally.got.len().max(1) as f64;
    let mut lat: Vec<Duration> = tally.got.iter().filter_map(|(i, at)| sent_at.get(*i).map(|s| at.saturating_duration_since(*s))).collect();
    lat.sort();
    for i in d.iter_mut() {
        i.terminate();
    }
    RelayResult {
        delivered: format!("{}/{n}", tally.got.len()),
        duplicates: tally.duplicates,
        out_of_order: tally.out_of_order,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        cpu_us,
    }
}

/// The cluster's failover under a steady stream.
async fn failover(nats: &str) -> String {
    let rate = 200;
    let seconds = 30;
    let portals = 4;
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d: Vec<Daemon> =
        configs(Store::Cluster, Some(nats), &hooks_body(portals, &hook.url())).iter().map(|c| Daemon::prepare(c, &[])).collect();
    launch(&mut d, "bridge:hooks").await;
    let ports: Arc<Vec<u16>> = Arc::new(d.iter().map(|d| d.port).collect());
    let dead: Arc<Vec<AtomicBool>> = Arc::new(d.iter().map(|_| AtomicBool::new(false)).collect());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let clock = Arc::new(Clock { base: Instant::now() });
    let total = rate * seconds;
    let sender = {
        let (client, ports, dead, clock) = (client.clone(), ports.clone(), dead.clone(), clock.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            for i in 0..total {
                tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate as f64)).into()).await;
                assert!(post(&client, &ports, &dead, portals, i, clock.text(i)).await, "event {i} refused by every instance");
            }
        })
    };
    let holder = async |d: &[Daemon], dead: &[AtomicBool]| {
        for (n, i) in d.iter().enumerate() {
            if !dead[n].load(Ordering::Relaxed) && i.metric("causeway_cluster_owned", r#"connection="bridge:hooks""#).await == 1.0 {
                return Some(n);
            }
        }
        None
    };
    let until_held = async |d: &[Daemon], dead: &[AtomicBool], since: Instant| {
        loop {
            if holder(d, dead).await.is_some() {
                return since.elapsed();
            }
            assert!(since.elapsed() < Duration::from_secs(60), "nobody took over");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let first = holder(&d, &dead).await.expect("a holder");
    dead[first].store(true, Ordering::Relaxed);
    d[first].kill();
    let killed = Instant::now();
    let kill_took = until_held(&d, &dead, killed).await;
    tokio::time::sleep_until((killed + Duration::from_secs(13)).into()).await;
    let second = holder(&d, &dead).await.expect("a holder");
    dead[second].store(true, Ordering::Relaxed);
    let stopping = Instant::now();
    d[second].terminate();
    let stop_took = until_held(&d, &dead, stopping).await;
    sender.await.unwrap();
    let got = collect(&mut hook, &clock, total, Instant::now() + Duration::from_secs(120)).await;
    let (once, again, lat) = tally(&got, &clock);
    // Order per portal, by first arrival.
    let mut last: HashMap<usize, usize> = HashMap::new();
    let mut out_of_order = 0;
    let mut firsts: HashSet<usize> = HashSet::new();
    let mut arrivals: Vec<Instant> = Vec::new();
    for r in &got {
        let Some((i, _)) = clock.read(r) else { continue };
        if !firsts.insert(i) {
            continue;
        }
        arrivals.push(r.at);
        if last.get(&(i % portals)).is_some_and(|&l| l > i) {
            out_of_order += 1;
        }
        last.insert(i % portals, i);
    }
    arrivals.sort();
    let gap = |from: Instant| {
        arrivals.windows(2).filter(|w| w[1] > from && w[0] < from + Duration::from_secs(20)).map(|w| w[1] - w[0]).max().unwrap_or_default()
    };
    let kill_gap = arrivals.windows(2).filter(|w| w[1] >= killed && w[0] < stopping).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let stop_gap = gap(stopping);
    for (n, i) in d.iter_mut().enumerate() {
        if !dead[n].load(Ordering::Relaxed) {
            i.terminate();
        }
    }
    format!(
        "| holder SIGKILLed | {:.2} s | {:.2} s |\n| holder stopped (SIGTERM) | {:.2} s | {:.2} s |\n\n\
         {total} events at {rate}/s over {portals} portals: {once} delivered once each, {out_of_order} out of order, \
         {again} sent again under the same key; latency p50 {} ms, p99 {} ms, max {} ms.",
        kill_took.as_secs_f64(),
        kill_gap.as_secs_f64(),
        stop_took.as_secs_f64(),
        stop_gap.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
    )
}

fn main() {
    // The database server first, its URL for every instance's database
    // (before any thread runs: the environment is set here).
    let (pg, url) = Postgres::start();
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("CAUSEWAY_TEST_POSTGRES", &url) };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let stores: Vec<Store> = std::env::var("BENCH_STORES")
            .unwrap_or_else(|_| "sqlite,postgres,cluster".into())
            .split(',')
            .map(|s| Store::parse(s.trim()))
            .collect();
        let nats = stores.contains(&Store::Cluster).then(|| {
            let out = std::process::Command::new("bash").arg(peers("nats.sh")).arg("install").output().unwrap();
            assert!(out.status.success(), "nats.sh install: {}", String::from_utf8_lossy(&out.stderr));
            Nats::start()
        });
        let nats_url = nats.as_ref().map(Nats::url);
        let mut rows = Vec::new();
        for &store in &stores {
            eprintln!("{}: webhook → webhook", store.label());
            let w = webhook(store, nats_url.as_deref()).await;
            eprintln!("{}: XMPP → Matrix", store.label());
            let x = xmpp_matrix(store, nats_url.as_deref()).await;
            rows.push(format!(
                "| {} | {:.0} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {:.0} |",
                store.label(),
                w.full_rate,
                ms(w.full_p50),
                ms(w.full_p99),
                w.full_cpu_us,
                w.fixed_delivered,
                ms(w.fixed_p50),
                ms(w.fixed_p99),
                w.again,
                x.delivered,
                x.duplicates,
                x.out_of_order,
                ms(x.p50),
                ms(x.p99),
                x.cpu_us,
            ));
        }
        println!(
            "\n| store | webhook→webhook full speed (delivered/s) | p50 ms | p99 ms | Causeway CPU µs/event | at {}/s: delivered | p50 ms | p99 ms | sent again | XMPP→Matrix at 20/s: delivered | dup. / out of order | p50 ms | p99 ms | Causeway CPU µs/msg |",
            env("BENCH_RATE", 500)
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!("{r}");
        }
        if let Some(url) = &nats_url {
            eprintln!("3 × PostgreSQL + NATS: failover");
            let f = failover(url).await;
            println!("\n| failover (lease {}) | until another holds the bridge | longest pause in deliveries |", std::env::var("BENCH_LEASE").unwrap_or_else(|_| "6s".into()));
            println!("|---|---|---|");
            println!("{f}");
        }
    });
    drop(runtime);
    drop(pg);
}
