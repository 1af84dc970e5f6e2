//! Webhook → router → webhook: throughput and latency with durable storage.
//!
//! Runs the real `causeway` binary (release build) and real HTTP senders and
//! receivers on 127.0.0.1, all on this machine. Two phases:
//!
//! 1. throughput: `BENCH_EVENTS` events as fast as `BENCH_CONCURRENCY`
//!    senders can push them, over `BENCH_PORTALS` portals;
//! 2. latency: `BENCH_RATE` events/s for `BENCH_SECONDS` seconds, p50/p99/max
//!    from the sender's POST to the receiver's arrival.
//!
//! `cargo bench --bench webhook_relay` (see BENCHMARKS.md). Bounded in count
//! and time; stops by itself.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Daemon, Hook, Mode, Received};
use serde_json::json;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(portals: usize, hooks: &[String], sync: &str) -> String {
    let mut endpoints = String::new();
    let mut links = String::new();
    for (p, url) in hooks.iter().enumerate().take(portals) {
        endpoints.push_str(&format!("      in{p}: {{ inbound: {{ token: t }} }}\n      out{p}: {{ outbound: {{ url: \"{url}\" }} }}\n"));
        links.push_str(&format!("  - id: p{p}\n    links: [{{ bridge: hooks, room: in{p} }}, {{ bridge: hooks, room: out{p} }}]\n"));
    }
    format!(
        "http: {{ listen: \"127.0.0.1:{{port}}\" }}\nstore: {{ path: \"{{db}}\", sync: {sync} }}\n\
         bridges:\n  hooks:\n    type: webhook\n    endpoints:\n{endpoints}portals:\n{links}"
    )
}

/// `p50 … | p99 … | max …` of the deliveries' latencies.
fn latencies(got: &[Received], sent: &Sent) -> String {
    let mut lat: Vec<Duration> = got.iter().filter_map(|r| sent.latency(r)).collect();
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50 {:.1} ms | p99 {:.1} ms | max {:.1} ms",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Sent {
    base: Instant,
}

impl Sent {
    fn stamp(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }
    fn latency(&self, r: &Received) -> Option<Duration> {
        let sent: u64 = r.json["text"].as_str()?.rsplit(' ').next()?.parse().ok()?;
        Some((r.at - self.base).saturating_sub(Duration::from_micros(sent)))
    }
}

/// Collect `n` deliveries from all hooks (or stop at `deadline`).
async fn collect(hooks: &mut [Hook], n: usize, deadline: Instant) -> Vec<Received> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n && Instant::now() < deadline {
        for h in hooks.iter_mut() {
            while let Ok(r) = h.rx.try_recv() {
                got.push(r);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    got
}

async fn run(sync: &str) {
    let events = env("BENCH_EVENTS", 20_000) as usize;
    let portals = env("BENCH_PORTALS", 8) as usize;
    let concurrency = env("BENCH_CONCURRENCY", 64) as usize;
    let rate = env("BENCH_RATE", 5_000);
    let seconds = env("BENCH_SECONDS", 10);

    let mut hooks = Vec::new();
    for _ in 0..portals {
        hooks.push(Hook::start(Mode::Accept { own_ids: None }).await);
    }
    let urls: Vec<String> = hooks.iter().map(Hook::url).collect();
    let d = Daemon::start(&config(portals, &urls, sync)).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let sent = Arc::new(Sent { base: Instant::now() });

    // Phase 1: throughput.
    let cpu0 = d.cpu_time();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (client, sent, port) = (client.clone(), sent.clone(), d.port);
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            for i in (c..events).step_by(concurrency) {
                let p = i % portals;
                let url = format!("http://127.0.0.1:{port}/bridges/hooks/in{p}");
                let body = json!({"id": format!("t{i}"), "sender": {"id": "bench"}, "text": format!("#{i} {}", sent.stamp())});
                let r = client.post(&url).bearer_auth("t").json(&body).send().await;
                if !r.is_ok_and(|r| r.status().as_u16() == 202) {
                    refused += 1;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    let accepted_in = start.elapsed();
    let got = collect(&mut hooks, events, Instant::now() + Duration::from_secs(300)).await;
    let delivered_in = start.elapsed();
    let cpu1 = d.cpu_time();
    println!(
        "| {sync} | throughput | {events} events, {portals} portals, {concurrency} senders | accepted {:.0}/s | delivered {} ({:.0}/s) | {} | refused {refused}; causeway CPU {:.0} µs/event ({:.0}% of a core) |",
        events as f64 / accepted_in.as_secs_f64(),
        got.len(),
        got.len() as f64 / delivered_in.as_secs_f64(),
        latencies(&got, &sent),
        (cpu1 - cpu0).as_secs_f64() * 1e6 / events as f64,
        (cpu1 - cpu0).as_secs_f64() * 100.0 / delivered_in.as_secs_f64(),
    );

    // Phase 2: latency at a fixed rate.
    let total = (rate * seconds) as usize;
    let senders = concurrency.min(total.max(1));
    let period = Duration::from_secs_f64(senders as f64 / rate as f64);
    let mut tasks = Vec::new();
    for c in 0..senders {
        let (client, sent, port) = (client.clone(), sent.clone(), d.port);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for i in (c..total).step_by(senders) {
                tick.tick().await;
                let p = i % portals;
                let url = format!("http://127.0.0.1:{port}/bridges/hooks/in{p}");
                let body = json!({"id": format!("r{i}"), "sender": {"id": "bench"}, "text": format!("#{i} {}", sent.stamp())});
                let _ = client.post(&url).bearer_auth("t").json(&body).send().await;
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let sending = start.elapsed();
    let got = collect(&mut hooks, total, Instant::now() + Duration::from_secs(120)).await;
    let cpu2 = d.cpu_time();
    println!(
        "| {sync} | latency | {rate}/s for {seconds} s (offered {:.0}/s) | delivered {} of {total} | {} | causeway CPU {:.0} µs/event; peak RSS {:.1} MiB |",
        total as f64 / sending.as_secs_f64(),
        got.len(),
        latencies(&got, &sent),
        (cpu2 - cpu1).as_secs_f64() * 1e6 / total as f64,
        d.peak_rss_kib() as f64 / 1024.0,
    );
    let batch_sum = d.metric("causeway_store_commit_batch_events_sum", "").await;
    let batch_count = d.metric("causeway_store_commit_batch_events_count", "").await;
    println!("|   | mean events per store transaction: {:.1} |", batch_sum / batch_count.max(1.0));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let sync = std::env::var("BENCH_SYNC").unwrap_or_else(|_| "full,normal".into());
    println!("| sync | phase | load | ingest | delivered | p50 | p99 | max | |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for s in sync.split(',') {
        run(s.trim()).await;
    }
}
