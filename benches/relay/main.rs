//! Relay benchmark on real servers: Causeway between real Prosody, Synapse
//! and Postfix/Dovecot, driven by real clients, beside the servers' own
//! ceilings (the same clients without any bridge).
//!
//! For each path, `BENCH_RUNS` runs of `BENCH_MESSAGES` messages sent at
//! `BENCH_RATE` per second by one client and read by another on the other
//! side; a warm-up first. Reports delivered, duplicates, order violations,
//! latency p50/p95/p99/max, sustained throughput, Causeway's CPU per
//! delivered message and peak RSS (from /proc), and each server's CPU per
//! message. The `scale` path starts Causeway with 10,000 people and 1,000
//! portals and reports startup time and memory.
//!
//! `cargo bench --bench relay` (BENCHMARKS.md). Everything on 127.0.0.1;
//! bounded in count and time; stops by itself.

mod clients;
#[path = "../../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
mod scale;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use clients::{Arrivals, Matrix, Smtp, Xmpp};
use common::Daemon;
use common::mail::MailServer;
use common::matrix::Synapse;
use common::xmpp::Prosody;
use serde_json::json;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const PATHS: &[&str] =
    &["xmpp-matrix", "matrix-xmpp", "xmpp-xmpp", "webhook-xmpp", "mail-matrix", "prosody-alone", "synapse-alone", "scale"];

/// CPU time (user + system) of a process so far, from /proc (USER_HZ = 100).
pub fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11..13).map(|f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The PID a tests/peers script wrote (`PID START_TIME`).
fn pid_file(path: &Path) -> u32 {
    std::fs::read_to_string(path).unwrap_or_default().split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0)
}

/// One side that sends.
enum Sender {
    Xmpp(Xmpp, String),
    Matrix(Matrix),
    Webhook(reqwest::Client, String),
    Mail(Smtp),
}

impl Sender {
    async fn send(&mut self, text: &str) {
        match self {
            Sender::Xmpp(x, room) => x.say(room, text).await,
            Sender::Matrix(m) => m.say(text).await,
            Sender::Webhook(c, url) => {
                let r = c.post(url.as_str()).bearer_auth("tw").json(&json!({"sender": {"id": "dave"}, "text": text})).send().await.unwrap();
                assert_eq!(r.status(), 202);
            }
            Sender::Mail(s) => s.send("carol@mail.test", "bridge+ops@mail.test", "bench", text).await,
        }
    }
}

/// What one setup keeps alive for its runs.
struct Setup {
    sender: Sender,
    arrivals: Arrivals,
    daemon: Option<Daemon>,
    /// Servers whose CPU is measured: (name, pid).
    servers: Vec<(&'static str, u32)>,
    _keep: Vec<Box<dyn std::any::Any>>,
}

/// One run's numbers.
#[derive(Clone, Debug, Default)]
struct Run {
    sent: usize,
    delivered: usize,
    duplicates: usize,
    out_of_order: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    throughput: f64,
    causeway_cpu_us: Option<f64>,
    causeway_rss_mib: Option<f64>,
    server_cpu_us: Vec<(&'static str, f64)>,
}

fn config(bridges: &str, links: &str, extra: &str) -> String {
    // Each person's accounts on the bridges this setup has.
    let people = [
        ("alice", "Alice Liddell", &[("xmpp", "alice@xmpp.test"), ("matrix", "\"@alice:matrix.test\"")][..]),
        ("bob", "Bob Builder", &[("xmpp", "bob@xmpp.test"), ("matrix", "\"@bob:matrix.test\"")][..]),
        ("carol", "Carol Danvers", &[("mail", "carol@mail.test")][..]),
        ("dave", "Dave Bowman", &[("hooks", "dave")][..]),
    ];
    let mut list = String::new();
    for (id, name, accounts) in people {
        let here: Vec<String> =
            accounts.iter().filter(|(b, _)| bridges.contains(&format!("  {b}: "))).map(|(b, a)| format!("{b}: {a}")).collect();
        list += &format!("  - {{ id: {id}, name: {name}, accounts: {{ {} }} }}\n", here.join(", "));
    }
    let sync = std::env::var("BENCH_SYNC").unwrap_or_else(|_| "full".into());
    format!(
        "http: {{ listen: \"127.0.0.1:{{port}}\" }}\nstore: {{ path: \"{{db}}\", sync: {sync} }}\noutbox: {{ retry_initial: 100ms, retry_max: 2s }}\n\
         bridges:\n{bridges}portals:\n  - id: ops\n    links: [{links}]\npeople:\n{list}{extra}"
    )
}

const MUC: &str = "ops@conference.xmpp.test";
const MUC2: &str = "ops2@conference.xmpp.test";
const ALIAS: &str = "#causeway_ops:matrix.test";
const HOOKS: &str = "  hooks: { type: webhook, endpoints: { w: { inbound: { token: tw } } } }\n";

async fn start_daemon(config: &str, synapse_port: Option<u16>) -> (Daemon, Option<Synapse>) {
    let mut d = Daemon::prepare(config, &[]);
    let synapse = match synapse_port {
        Some(port) => {
            let registration = d.dir.path().join("registration.yaml");
            let out = d.cli(&["matrix", "registration", "--output", registration.to_str().unwrap()]);
            assert!(out.status.success(), "registration: {}", String::from_utf8_lossy(&out.stderr));
            let s = Synapse::start_with(&registration, port, None);
            s.register("alice");
            s.register("bob");
            Some(s)
        }
        None => None,
    };
    d.restart().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for bridge in ["xmpp", "matrix", "mail"] {
        if !config.contains(&format!("  {bridge}: {{ type: ")) && !config.contains(&format!("  {bridge}: {{type: ")) {
            continue;
        }
        while d.metric("causeway_bridge_up", &format!(r#"bridge="{bridge}""#)).await != 1.0 {
            assert!(Instant::now() < deadline, "{bridge} not up:\n{}", d.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if synapse.is_some() {
        while !d.log().contains("every Matrix room is set up") {
            assert!(Instant::now() < deadline, "Matrix room not set up:\n{}", d.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (d, synapse)
}

fn xmpp_bridge(p: &Prosody) -> String {
    format!("  xmpp: {}\n", p.bridge_config())
}

fn matrix_bridge(port: u16) -> String {
    // BENCH_EPHEMERAL=false: the registration without typing, receipts and presence.
    let ephemeral = std::env::var("BENCH_EPHEMERAL").unwrap_or_else(|_| "true".into());
    let c = common::matrix::bridge_config(port);
    let c = c.strip_suffix('}').unwrap_or(&c).trim_end();
    format!("  matrix: {c}, receive_ephemeral: {ephemeral} }}\n")
}

/// Alice says in MUC, Bob reads in `bob_room` (the same room without a
/// bridge, another one bridged by `daemon`).
async fn xmpp_pair(prosody: Prosody, bob_room: &str, daemon: Option<Daemon>) -> Setup {
    let mut alice = Xmpp::login(prosody.c2s, "alice").await;
    alice.join(MUC, "Alice").await;
    let mut bob = Xmpp::login(prosody.c2s, "bob").await;
    bob.join(bob_room, "Bob").await;
    clients::discard(alice.arrivals.take().unwrap());
    let arrivals = bob.arrivals.take().unwrap();
    let servers = vec![("prosody", pid_file(&prosody.dir.path().join("prosody.pid")))];
    Setup { sender: Sender::Xmpp(alice, MUC.into()), arrivals, daemon, servers, _keep: vec![Box::new(prosody), Box::new(bob)] }
}

async fn setup(path: &str) -> Setup {
    match path {
        "xmpp-matrix" | "matrix-xmpp" => {
            let prosody = Prosody::start();
            let port = common::free_port();
            let c = config(
                &format!("{}{}", xmpp_bridge(&prosody), matrix_bridge(port)),
                &format!("{{ bridge: xmpp, room: \"{MUC}\" }}, {{ bridge: matrix, room: \"{ALIAS}\" }}"),
                "",
            );
            let (d, synapse) = start_daemon(&c, Some(port)).await;
            let synapse = synapse.unwrap();
            let mut xmpp = Xmpp::login(prosody.c2s, if path == "xmpp-matrix" { "alice" } else { "bob" }).await;
            xmpp.join(MUC, if path == "xmpp-matrix" { "Alice" } else { "Bob" }).await;
            let mut matrix = Matrix::login(&synapse.url(), if path == "xmpp-matrix" { "bob" } else { "alice" }).await;
            matrix.join(ALIAS).await;
            let servers = vec![
                ("prosody", pid_file(&prosody.dir.path().join("prosody.pid"))),
                ("synapse", pid_file(&synapse.dir.path().join("synapse.pid"))),
            ];
            let keep: Vec<Box<dyn std::any::Any>> = vec![Box::new(prosody), Box::new(synapse)];
            if path == "xmpp-matrix" {
                let arrivals = matrix.arrivals().await;
                clients::discard(xmpp.arrivals.take().unwrap());
                Setup { sender: Sender::Xmpp(xmpp, MUC.into()), arrivals, daemon: Some(d), servers, _keep: keep }
            } else {
                let arrivals = xmpp.arrivals.take().unwrap();
                let mut keep = keep;
                keep.push(Box::new(xmpp));
                Setup { sender: Sender::Matrix(matrix), arrivals, daemon: Some(d), servers, _keep: keep }
            }
        }
        "xmpp-xmpp" => {
            let prosody = Prosody::start();
            let c =
                config(&xmpp_bridge(&prosody), &format!("{{ bridge: xmpp, room: \"{MUC}\" }}, {{ bridge: xmpp, room: \"{MUC2}\" }}"), "");
            let (d, _) = start_daemon(&c, None).await;
            xmpp_pair(prosody, MUC2, Some(d)).await
        }
        "webhook-xmpp" => {
            let prosody = Prosody::start();
            let c = config(
                &format!("{HOOKS}{}", xmpp_bridge(&prosody)),
                &format!("{{ bridge: hooks, room: w }}, {{ bridge: xmpp, room: \"{MUC}\" }}"),
                "",
            );
            let (d, _) = start_daemon(&c, None).await;
            let mut bob = Xmpp::login(prosody.c2s, "bob").await;
            bob.join(MUC, "Bob").await;
            let arrivals = bob.arrivals.take().unwrap();
            let servers = vec![("prosody", pid_file(&prosody.dir.path().join("prosody.pid")))];
            let url = d.url("/bridges/hooks/w");
            Setup {
                sender: Sender::Webhook(reqwest::Client::new(), url),
                arrivals,
                daemon: Some(d),
                servers,
                _keep: vec![Box::new(prosody), Box::new(bob)],
            }
        }
        "mail-matrix" => {
            let mail = MailServer::start();
            let port = common::free_port();
            let lists = r#""bridge+ops@mail.test": { name: Ops, subscribers: [carol] }"#;
            let c = config(
                &format!("  mail: {}\n{}", mail.bridge_config(lists), matrix_bridge(port)),
                &format!("{{ bridge: mail, room: \"bridge+ops@mail.test\" }}, {{ bridge: matrix, room: \"{ALIAS}\" }}"),
                "",
            );
            let (d, synapse) = start_daemon(&c, Some(port)).await;
            let synapse = synapse.unwrap();
            let mut bob = Matrix::login(&synapse.url(), "bob").await;
            bob.join(ALIAS).await;
            let arrivals = bob.arrivals().await;
            let smtp = Smtp::connect(mail.smtp).await;
            let servers = vec![("synapse", pid_file(&synapse.dir.path().join("synapse.pid")))];
            Setup { sender: Sender::Mail(smtp), arrivals, daemon: Some(d), servers, _keep: vec![Box::new(mail), Box::new(synapse)] }
        }
        "prosody-alone" => xmpp_pair(Prosody::start(), MUC, None).await,
        "synapse-alone" => {
            // A registration nobody serves: Synapse needs no bridge here.
            let dir = tempfile::tempdir().unwrap();
            let c = config(&matrix_bridge(1), "{ bridge: matrix, room: \"#x:matrix.test\" }", "");
            let d = Daemon::prepare(&c, &[]);
            let registration = dir.path().join("registration.yaml");
            let out = d.cli(&["matrix", "registration", "--output", registration.to_str().unwrap()]);
            assert!(out.status.success());
            let synapse = Synapse::start(&registration);
            synapse.register("alice");
            synapse.register("bob");
            let mut alice = Matrix::login(&synapse.url(), "alice").await;
            alice.create_room("bench").await;
            let mut bob = Matrix::login(&synapse.url(), "bob").await;
            bob.join("#bench:matrix.test").await;
            let arrivals = bob.arrivals().await;
            let servers = vec![("synapse", pid_file(&synapse.dir.path().join("synapse.pid")))];
            Setup { sender: Sender::Matrix(alice), arrivals, daemon: None, servers, _keep: vec![Box::new(synapse), Box::new(dir)] }
        }
        other => panic!("unknown path {other:?} (known: {})", PATHS.join(", ")),
    }
}

/// The sequence number in `text` of a message of run `tag`.
fn seq_of(text: &str, tag: &str) -> Option<usize> {
    let marker = format!("bench-{tag}-");
    let rest = &text[text.find(&marker)? + marker.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Send `n` messages at `rate` per second and read them on the other side.
async fn run(s: &mut Setup, tag: &str, n: usize, rate: f64) -> Run {
    while s.arrivals.try_recv().is_ok() {}
    let cpu0 = s.daemon.as_ref().map(Daemon::cpu_time);
    let servers0: Vec<Duration> = s.servers.iter().map(|(_, pid)| cpu_of(*pid)).collect();
    let start = Instant::now() + Duration::from_millis(100);
    let mut sent_at = Vec::with_capacity(n);
    let mut tally = clients::Tally::default();
    let take = |tally: &mut clients::Tally, text: &str, at: Instant| {
        if let Some(i) = seq_of(text, tag) {
            tally.take(i, at);
        }
    };
    for i in 0..n {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        sent_at.push(Instant::now());
        s.sender.send(&format!("bench-{tag}-{i} hello from the benchmark")).await;
        while let Ok((text, at)) = s.arrivals.try_recv() {
            take(&mut tally, &text, at);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while tally.got.len() < n && Instant::now() < deadline {
        if let Ok(Some((text, at))) = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), s.arrivals.recv()).await {
            take(&mut tally, &text, at);
        }
    }
    let last = tally.got.values().max().copied().unwrap_or(start);
    // Anything more is a duplicate.
    let linger = Instant::now() + Duration::from_secs(2);
    while let Ok(Some((text, at))) = tokio::time::timeout(linger.saturating_duration_since(Instant::now()), s.arrivals.recv()).await {
        take(&mut tally, &text, at);
    }
    let mut lat: Vec<f64> =
        tally.got.iter().filter_map(|(i, at)| sent_at.get(*i).map(|s| at.saturating_duration_since(*s).as_secs_f64() * 1e3)).collect();
    lat.sort_by(f64::total_cmp);
    let delivered = tally.got.len();
    let per_msg = |d: Duration| d.as_secs_f64() * 1e6 / delivered.max(1) as f64;
    Run {
        sent: n,
        delivered,
        duplicates: tally.duplicates,
        out_of_order: tally.out_of_order,
        p50: percentile(&lat, 0.50),
        p95: percentile(&lat, 0.95),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or(f64::NAN),
        throughput: delivered as f64 / last.saturating_duration_since(sent_at[0]).as_secs_f64().max(1e-9),
        causeway_cpu_us: s.daemon.as_ref().zip(cpu0).map(|(d, c)| per_msg(d.cpu_time() - c)),
        causeway_rss_mib: s.daemon.as_ref().map(|d| d.peak_rss_kib() as f64 / 1024.0),
        server_cpu_us: s.servers.iter().zip(servers0).map(|((name, pid), c)| (*name, per_msg(cpu_of(*pid) - c))).collect(),
    }
}

/// `median [min–max]` of one number over the runs.
pub fn spread(values: &[f64], digits: usize) -> String {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "–".into();
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    if v.len() == 1 { format!("{median:.digits$}") } else { format!("{median:.digits$} [{:.digits$}–{:.digits$}]", v[0], v[v.len() - 1]) }
}

fn row(path: &str, runs: &[Run]) -> String {
    let col = |f: &dyn Fn(&Run) -> f64, d| spread(&runs.iter().map(f).collect::<Vec<_>>(), d);
    let sum = |f: &dyn Fn(&Run) -> usize| runs.iter().map(f).sum::<usize>();
    let servers: Vec<String> = runs[0]
        .server_cpu_us
        .iter()
        .enumerate()
        .map(|(k, (name, _))| format!("{name} {}", col(&|r: &Run| r.server_cpu_us[k].1, 0)))
        .collect();
    format!(
        "| {path} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        sum(&|r| r.delivered),
        sum(&|r| r.sent),
        sum(&|r| r.duplicates),
        sum(&|r| r.out_of_order),
        col(&|r| r.p50, 1),
        col(&|r| r.p95, 1),
        col(&|r| r.p99, 1),
        col(&|r| r.max, 1),
        col(&|r| r.throughput, 1),
        col(&|r| r.causeway_cpu_us.unwrap_or(f64::NAN), 0),
        col(&|r| r.causeway_rss_mib.unwrap_or(f64::NAN), 1),
        servers.join(", "),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let paths: Vec<String> = std::env::var("BENCH_PATHS")
        .map(|p| p.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_else(|_| PATHS.iter().map(|s| s.to_string()).collect());
    let n = env_u64("BENCH_MESSAGES", 1000) as usize;
    let rate = env_u64("BENCH_RATE", 20) as f64;
    let runs = env_u64("BENCH_RUNS", 3) as usize;
    eprintln!("relay benchmark: {} × {n} messages at {rate}/s per path; paths: {}", runs, paths.join(", "));
    let mut rows = Vec::new();
    let mut scale_report = None;
    for path in &paths {
        if path == "scale" {
            scale_report = Some(scale::run(runs).await);
            continue;
        }
        eprintln!("{path}: setting up");
        let mut s = setup(path).await;
        // Warm-up: ghosts created and joined, connections open.
        let warm = run(&mut s, &format!("warm{}", std::process::id()), 10, rate).await;
        assert_eq!(warm.delivered, 10, "{path}: the warm-up did not get through");
        let mut results = Vec::new();
        for r in 0..runs {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let tag = format!("{}x{r}", std::process::id());
            let result = run(&mut s, &tag, n, rate).await;
            eprintln!("{path} run {}: {result:?}", r + 1);
            results.push(result);
        }
        if let Some(d) = &s.daemon {
            let log = d.log();
            let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).take(5).collect();
            if !errors.is_empty() {
                eprintln!("{path}: Causeway logged errors:\n{}", errors.join("\n"));
            }
        }
        rows.push(row(path, &results));
        drop(s);
    }
    let seen: HashSet<&str> = paths.iter().map(String::as_str).collect();
    if seen.iter().any(|p| *p != "scale") {
        println!(
            "\n{runs} runs of {n} messages at {rate}/s each; median [min–max] over the runs; latency in ms; CPU in µs per delivered message.\n"
        );
        println!(
            "| path | delivered | duplicates | out of order | p50 | p95 | p99 | max | msg/s | Causeway CPU | Causeway peak RSS (MiB) | server CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!("{r}");
        }
    }
    if let Some(report) = scale_report {
        println!("\n{report}");
    }
}
