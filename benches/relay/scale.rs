//! Causeway with 10,000 people and 1,000 portals (each a webhook endpoint
//! and a group chat on a real Prosody): memory once every person has spoken
//! (so every one has an XMPP ghost), and startup — to answering, and to
//! relaying — with messages sent on both sides while it starts, none of
//! which may be lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::clients::Xmpp;
use crate::common::xmpp::Prosody;
use crate::common::{Daemon, Hook, Mode};
use crate::{env_u64, spread};

fn config(prosody: &Prosody, portals: usize, people: usize, hook: &str) -> String {
    let mut c = String::from(
        "http: { listen: \"127.0.0.1:{port}\" }\nstore: { path: \"{db}\" }\noutbox: { retry_initial: 100ms, retry_max: 2s }\nbridges:\n",
    );
    c += &format!("  xmpp: {}\n  hooks:\n    type: webhook\n    endpoints:\n", prosody.bridge_config());
    c += &format!("      e0: {{ inbound: {{ token: t }}, outbound: {{ url: \"{hook}\" }} }}\n");
    for i in 1..portals {
        c += &format!("      e{i}: {{ inbound: {{ token: t }} }}\n");
    }
    c += "portals:\n";
    for i in 0..portals {
        c += &format!(
            "  - {{ id: p{i}, links: [{{ bridge: hooks, room: e{i} }}, {{ bridge: xmpp, room: \"p{i}@conference.xmpp.test\" }}] }}\n"
        );
    }
    c += "people:\n";
    for k in 0..people {
        c += &format!("  - {{ id: u{k}, name: \"Person {k}\", accounts: {{ hooks: u{k} }} }}\n");
    }
    c
}

/// VmRSS and VmHWM of a process, in MiB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub async fn run(runs: usize) -> String {
    let portals = env_u64("BENCH_PORTALS", 1000) as usize;
    let people = env_u64("BENCH_PEOPLE", 10_000) as usize;
    eprintln!("scale: {people} people, {portals} portals");
    let prosody = Prosody::start();
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = Daemon::prepare(&config(&prosody, portals, people, &hook.url()), &[]);
    let t = Instant::now();
    d.restart().await;
    let cold = t.elapsed();
    let pid = d_pid(&d);
    let (rss_idle, _) = rss(pid);

    // Every person speaks once: one ghost each, in the group chat of their portal.
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, next, base) = (client.clone(), next.clone(), d.url("/bridges/hooks"));
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= people {
                    return;
                }
                let body = json!({"sender": {"id": format!("u{k}")}, "text": format!("hello from person {k}")});
                let r = client.post(format!("{base}/e{}", k % portals)).bearer_auth("t").json(&body).send().await.unwrap();
                assert_eq!(r.status(), 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    while d.metric("causeway_events_delivered_total", r#"bridge="xmpp""#).await < people as f64 {
        assert!(Instant::now() < deadline, "not every person's message reached XMPP:\n{}", tail(&d.log()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let spoke = started.elapsed();
    let ghosts = d.metric("causeway_ghosts", r#"bridge="xmpp""#).await;
    let (rss_ghosts, hwm_ghosts) = rss(pid);

    // Restarts: how soon it answers and relays, and whether anything said
    // meanwhile is lost.
    let mut alice = Xmpp::login(prosody.c2s, "alice").await;
    alice.join("p0@conference.xmpp.test", "Alice").await;
    let mut bob = Xmpp::login(prosody.c2s, "bob").await;
    bob.join("p0@conference.xmpp.test", "Bob").await;
    let mut bob_sees = bob.arrivals.take().unwrap();
    crate::clients::discard(alice.arrivals.take().unwrap());
    let (mut to_ready, mut to_relay, mut rss_restart, mut lost_http, mut lost_xmpp) = (Vec::new(), Vec::new(), Vec::new(), 0usize, 0usize);
    for r in 0..runs {
        d.terminate();
        while hook.rx.try_recv().is_ok() {}
        while bob_sees.try_recv().is_ok() {}
        // While it is down and starting: a person says things in the group
        // chat, and a webhook sender posts until it is accepted and beyond.
        for i in 0..5 {
            alice.say("p0@conference.xmpp.test", &format!("startup-{r}-x{i}")).await;
        }
        let spawned = Instant::now();
        let accepted = Arc::new(std::sync::Mutex::new(Vec::<(usize, Instant)>::new()));
        let poster = {
            let (client, url, accepted) = (client.clone(), d.url("/bridges/hooks/e0"), accepted.clone());
            tokio::spawn(async move {
                let mut i = 0;
                let stop = Instant::now() + Duration::from_secs(20);
                while Instant::now() < stop && accepted.lock().unwrap().len() < 20 {
                    let body = json!({"sender": {"id": "u0"}, "text": format!("startup-{r}-h{i}")});
                    if let Ok(resp) = client.post(url.as_str()).bearer_auth("t").json(&body).send().await
                        && resp.status() == 202
                    {
                        accepted.lock().unwrap().push((i, Instant::now()));
                        i += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        d.restart().await;
        to_ready.push(spawned.elapsed().as_secs_f64() * 1e3);
        rss_restart.push(rss(d_pid(&d)).0);
        poster.await.unwrap();
        let accepted = accepted.lock().unwrap().clone();
        // The first accepted post reaching the group chat: relaying.
        let mut seen_http = std::collections::HashSet::new();
        let mut first = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen_http.len() < accepted.len() && Instant::now() < deadline {
            if let Ok(Some((text, at))) = tokio::time::timeout(Duration::from_millis(500), bob_sees.recv()).await
                && let Some(i) = text.strip_prefix(&format!("startup-{r}-h")).and_then(|s| s.parse::<usize>().ok())
            {
                first.get_or_insert(at);
                seen_http.insert(i);
            }
        }
        to_relay.push(first.map_or(f64::NAN, |f| f.saturating_duration_since(spawned).as_secs_f64() * 1e3));
        lost_http += accepted.len() - seen_http.len();
        // What was said in the group chat meanwhile reaches the webhook.
        let mut seen_xmpp = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while seen_xmpp.len() < 5 && Instant::now() < deadline {
            if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(500), hook.rx.recv()).await
                && let Some(text) = got.json["text"].as_str()
                && text.starts_with(&format!("startup-{r}-x"))
            {
                seen_xmpp.insert(text.to_string());
            }
        }
        lost_xmpp += 5 - seen_xmpp.len();
    }
    d.terminate();
    format!(
        "Scale: {people} people, {portals} portals (each a webhook endpoint and a group chat), real Prosody.\n\n\
         | measure | value |\n|---|---|\n\
         | first start (empty store) to answering | {:.0} ms |\n\
         | RSS after start, nobody has spoken | {rss_idle:.1} MiB |\n\
         | every person speaks once (webhook → group chat) | {} messages in {:.1} s, {ghosts} XMPP ghosts |\n\
         | RSS with every ghost, now / peak | {rss_ghosts:.1} / {hwm_ghosts:.1} MiB |\n\
         | restart to answering | {} ms |\n\
         | restart to relaying (first accepted post in the group chat) | {} ms |\n\
         | RSS just after restart | {} MiB |\n\
         | posts accepted during startup and lost | {lost_http} |\n\
         | group chat messages sent while down or starting, lost | {lost_xmpp} of {} |\n",
        cold.as_secs_f64() * 1e3,
        people,
        spoke.as_secs_f64(),
        spread(&to_ready, 0),
        spread(&to_relay, 0),
        spread(&rss_restart, 1),
        5 * runs,
    )
}

fn d_pid(d: &Daemon) -> u32 {
    d.pid()
}

fn tail(log: &str) -> String {
    log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}
