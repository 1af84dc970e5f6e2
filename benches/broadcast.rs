//! A broadcast to many people: how long until every one has it, and what
//! it costs Causeway.
//!
//! Runs the real `causeway` binary (release build) with a directory of
//! `BENCH_PEOPLE` people (default 10,000), each with an account on a
//! webhook bridge whose direct endpoint POSTs to a real HTTP receiver in
//! this process, on 127.0.0.1. Two phases:
//!
//! 1. unpaced (`broadcast.rate` far above what the lane can do): the time
//!    from `causeway broadcast --to all` until the receiver has one message
//!    for each person, split into planning (the command returns once the
//!    broadcast and its deliveries are committed) and delivering; Causeway's
//!    CPU time and peak RSS;
//! 2. paced: `BENCH_PACED` people (default 500) at `BENCH_PACE` a second
//!    (default 50, the webhook default): the rate the receiver sees.
//!
//! Each person must get it exactly once; a loss or a double fails the run.
//! `cargo bench --bench broadcast` (see BENCHMARKS.md). Bounded in count and
//! time; stops by itself.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Daemon, Hook, Mode, Received};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(people: usize, hook: &str, rate: f64) -> String {
    let mut c = format!(
        "http: {{ listen: \"127.0.0.1:{{port}}\" }}\nstore: {{ path: \"{{db}}\" }}\n\
         bridges:\n  hooks:\n    type: webhook\n    endpoints:\n\
         \x20     room: {{ inbound: {{ token: t }}, outbound: {{ url: \"{hook}\" }} }}\n\
         \x20     dm: {{ direct: true, inbound: {{ token: t }}, outbound: {{ url: \"{hook}\" }} }}\n\
         portals:\n  - id: ops\n    links: [{{ bridge: hooks, room: room }}]\n\
         broadcast:\n  rate: {{ webhook: {rate} }}\n  max_recipients: {people}\npeople:\n"
    );
    for i in 0..people {
        c.push_str(&format!("  - {{ id: p{i}, name: Person {i}, accounts: {{ hooks: u{i} }} }}\n"));
    }
    c
}

/// The person a direct delivery is for.
fn recipient(r: &Received) -> Option<String> {
    r.json["direct"]["to"].as_str().map(str::to_string)
}

/// Wait for one delivery per person (or the deadline); a second one for
/// anybody is counted.
async fn collect(hook: &mut Hook, people: usize, deadline: Instant) -> (HashMap<String, u32>, Option<Instant>, Option<Instant>) {
    let mut seen: HashMap<String, u32> = HashMap::with_capacity(people);
    let (mut first, mut last) = (None, None);
    while seen.len() < people && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), hook.rx.recv()).await {
            Ok(Some(r)) => {
                if let Some(who) = recipient(&r) {
                    *seen.entry(who).or_default() += 1;
                    first.get_or_insert(r.at);
                    last = Some(r.at);
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    // Anything more that comes soon after is a double.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(100), hook.rx.recv()).await
            && let Some(who) = recipient(&r)
        {
            *seen.entry(who).or_default() += 1;
        }
    }
    (seen, first, last)
}

fn broadcast(d: &Daemon, text: &str) -> (String, Duration) {
    let start = Instant::now();
    let out = d.cli(&["broadcast", "--to", "all", "--text", text, "--from", "Bench"]);
    let planned = start.elapsed();
    assert!(out.status.success(), "causeway broadcast: {}\n{}", String::from_utf8_lossy(&out.stderr), d.log());
    (String::from_utf8_lossy(&out.stdout).trim().to_string(), planned)
}

fn check_once(seen: &HashMap<String, u32>, people: usize, what: &str) {
    let doubled = seen.values().filter(|n| **n > 1).count();
    assert_eq!(seen.len(), people, "{what}: {} of {people} people reached", seen.len());
    assert_eq!(doubled, 0, "{what}: {doubled} people got it more than once");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let people = env("BENCH_PEOPLE", 10_000) as usize;
    let paced = env("BENCH_PACED", 500) as usize;
    let pace = env("BENCH_PACE", 50) as f64;

    // Phase 1: unpaced.
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let d = Daemon::start(&config(people, &hook.url(), 1e6)).await;
    d.wait_up(&["hooks"], Duration::from_secs(30)).await.unwrap();
    let rss_before = d.peak_rss_kib();
    let cpu0 = d.cpu_time();
    let start = Instant::now();
    let (id, planned) = broadcast(&d, "Fire drill at 15:00");
    let (seen, _, last) = collect(&mut hook, people, start + Duration::from_secs(600)).await;
    let cpu1 = d.cpu_time();
    check_once(&seen, people, "unpaced");
    let all = last.expect("something arrived") - start;
    let status = d.cli(&["broadcast", "status", &id, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    println!("| phase | recipients | planned (command returned) | all delivered | rate | Causeway CPU | peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| unpaced | {people} | {:.2} s | {:.2} s | {:.0}/s | {:.0} µs/recipient | {:.1} MiB (before: {:.1} MiB) |",
        planned.as_secs_f64(),
        all.as_secs_f64(),
        people as f64 / (all - planned).as_secs_f64(),
        (cpu1 - cpu0).as_secs_f64() * 1e6 / people as f64,
        d.peak_rss_kib() as f64 / 1024.0,
        rss_before as f64 / 1024.0,
    );
    assert_eq!(status["state"], "done", "{status}");
    drop(d);

    // Phase 2: paced.
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let d = Daemon::start(&config(paced, &hook.url(), pace)).await;
    d.wait_up(&["hooks"], Duration::from_secs(30)).await.unwrap();
    let start = Instant::now();
    let (_, planned) = broadcast(&d, "Paced");
    let budget = Duration::from_secs_f64(paced as f64 / pace * 2.0 + 60.0);
    let (seen, first, last) = collect(&mut hook, paced, start + budget).await;
    check_once(&seen, paced, "paced");
    let spread = last.unwrap() - first.unwrap();
    println!(
        "| paced at {pace}/s | {paced} | {:.2} s | {:.2} s | {:.1}/s | | {:.1} MiB |",
        planned.as_secs_f64(),
        (last.unwrap() - start).as_secs_f64(),
        (paced - 1) as f64 / spread.as_secs_f64(),
        d.peak_rss_kib() as f64 / 1024.0,
    );
}
