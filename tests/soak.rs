//! Restarts while all four networks talk: real clients on XMPP, Matrix,
//! mail and a webhook each send a steady stream into one portal while
//! Causeway is SIGKILLed and started again, several times and at random
//! points (also while it is still starting). Every message must reach every
//! other network exactly once and in order.
//!
//! `SOAK_CYCLES` and `SOAK_MESSAGES` make it the long soak of BENCHMARKS.md
//! (`SOAK_CYCLES=20 SOAK_MESSAGES=1000 cargo test --test soak -- --nocapture`);
//! `SOAK_LOG=FILE` keeps Causeway's log of every run there.
#![cfg(all(feature = "webhook", feature = "xmpp", feature = "matrix", feature = "email"))]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use causeway_core::Body;
use causeway_core::conformance::{Action, Peer};
use common::mail::MailPeer;
use common::matrix::MatrixPeer;
use common::world::{ALIAS, MUC, World};
use common::xmpp::XmppPeer;
use serde_json::json;

const NETWORKS: [&str; 4] = ["xmpp", "matrix", "mail", "hooks"];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small random number source (xorshift), seeded and printed so a run can
/// be repeated.
struct Dice(u64);

impl Dice {
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

/// `(network, n)` from a text like `matrix #12` (anywhere in it: mail adds
/// a line or two).
fn numbered(text: &str) -> Option<(&'static str, u64)> {
    NETWORKS.iter().find_map(|net| {
        let at = text.find(&format!("{net} #"))?;
        let digits: String = text[at + net.len() + 2..].chars().take_while(char::is_ascii_digit).collect();
        Some((*net, digits.parse().ok()?))
    })
}

/// What one network's watcher saw: per origin network, each number with the
/// delivery keys it came under, and the order of first arrivals.
#[derive(Default)]
struct Seen {
    keys: HashMap<(&'static str, u64), HashSet<String>>,
    /// Texts shown more than once (where the network has no idempotency key).
    shown_twice: Vec<(&'static str, u64)>,
    /// First arrivals per origin: (the network's own sort key, number).
    order: BTreeMap<&'static str, Vec<(i64, u64)>>,
    /// When each message first arrived here.
    arrived: HashMap<(&'static str, u64), Instant>,
}

impl Seen {
    /// `key` is the network's idempotency key, where it has one that its
    /// clients use (mail's Message-ID, the webhook's Idempotency-Key);
    /// `None` where a second copy is a second message people see.
    /// `at`: where a network does not keep the order of arrival (SMTP
    /// delivers a list's mails in parallel), the order its clients show:
    /// mail's `Date` (seconds; within one second, any order).
    fn record(&mut self, here: &str, text: &str, key: Option<String>, at: Option<i64>) {
        let Some((from, n)) = numbered(text) else { return };
        if from == here {
            // Said on this network: not through Causeway.
            return;
        }
        let keys = self.keys.entry((from, n)).or_default();
        if keys.is_empty() {
            self.arrived.insert((from, n), Instant::now());
            let seq = self.order.get(from).map_or(0, Vec::len) as i64;
            self.order.entry(from).or_default().push((at.unwrap_or(seq), n));
        } else if key.is_none() {
            self.shown_twice.push((from, n));
        }
        keys.insert(key.unwrap_or_default());
    }

    fn count(&self) -> usize {
        self.keys.len()
    }
}

/// How long after each restart everything sent before it had arrived
/// everywhere: per restart, the latest arrival of a message sent before it,
/// counted from the restart (zero when nothing was waiting), with the path
/// (`from → here`) of that latest arrival.
fn catch_up_times(
    restarts: &[Instant],
    sent: &HashMap<(&'static str, u64), Instant>,
    seen: &HashMap<&str, std::sync::Mutex<Seen>>,
) -> Vec<(Duration, String)> {
    restarts
        .iter()
        .map(|&up| {
            let mut latest = (Duration::ZERO, String::new());
            for (here, s) in seen {
                let s = s.lock().unwrap();
                for (msg, at) in &s.arrived {
                    let late = at.saturating_duration_since(up);
                    if sent.get(msg).is_some_and(|t| *t < up) && late > latest.0 {
                        latest = (late, format!("{} → {here}", msg.0));
                    }
                }
            }
            latest
        })
        .collect()
}

fn text_of(body: &Body<String>) -> Option<&str> {
    match body {
        Body::Message { text, .. } => Some(&text.plain),
        _ => None,
    }
}

/// Until `stop`, what `peer` sees goes into `seen` (`keyed`: its ids are
/// idempotency keys).
async fn watch(here: &'static str, peer: &mut dyn Peer, keyed: bool, seen: &std::sync::Mutex<Seen>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        if let Ok(s) = peer.next(Duration::from_millis(500)).await
            && let Some(t) = text_of(&s.body)
        {
            seen.lock().unwrap().record(here, t, keyed.then(|| s.id.clone()), None);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_while_all_four_networks_talk_loses_doubles_and_reorders_nothing() {
    let cycles = env_or("SOAK_CYCLES", 5);
    let n = env_or("SOAK_MESSAGES", 60);
    let interval = Duration::from_millis(env_or("SOAK_INTERVAL_MS", 250));
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("soak: {cycles} cycles, {n} messages from each network every {interval:?}, seed {seed}");
    let mut dice = Dice(seed);

    let World { prosody, synapse, mail, hook, mut daemon } = World::start_with("", common::world::without_send_limit, &[]).await;
    let mut hook = hook.unwrap();
    synapse.register("erin");
    // Who speaks on each network, and who watches there.
    let mut alice = XmppPeer::join(&prosody, "alice", MUC, "Alice", 0).await;
    let mut xmpp_watch = XmppPeer::join(&prosody, "bob", MUC, "Watcher", 0).await;
    let mut bob = MatrixPeer::join(&synapse.url(), "bob", ALIAS).await;
    let mut matrix_watch = MatrixPeer::join(&synapse.url(), "erin", ALIAS).await;
    let hook_url = daemon.url("/bridges/hooks/w");

    let seen: HashMap<&str, std::sync::Mutex<Seen>> = NETWORKS.iter().map(|n| (*n, Default::default())).collect();
    let stop = AtomicBool::new(false);
    // When each message was sent (taken by its server, or by Causeway for webhooks).
    let sent = std::sync::Mutex::new(HashMap::new());
    let sent_now = |net: &'static str, i: u64| {
        sent.lock().unwrap().insert((net, i), Instant::now());
    };
    let sending_done = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    // Kills spread over the whole stream.
    let stream_time = interval * n as u32;
    let gap_ms = (stream_time.as_millis() as u64 / cycles.max(1)).max(1500);

    let ((during_start, restarts), sent_in, caught_up) = tokio::task::block_in_place(|| {
        std::thread::scope(|threads| {
            // Mail clients block (smtplib, imaplib): threads of their own.
            threads.spawn(|| {
                let mut carol = MailPeer::new(&mail, "carol", "Carol D.");
                for i in 0..n {
                    let at = Instant::now();
                    carol.mail("soak", &format!("mail #{i}"), None, None);
                    sent_now("mail", i);
                    std::thread::sleep(interval.saturating_sub(at.elapsed()));
                }
                sending_done.fetch_add(1, Ordering::AcqRel);
            });
            threads.spawn(|| {
                let mut uids = HashSet::new();
                while !stop.load(Ordering::Acquire) {
                    for (uid, raw) in mail.fetch("carol", "INBOX") {
                        if !uids.insert(uid) {
                            continue;
                        }
                        let Some(m) = mail_parser::MessageParser::default().parse(&raw) else { continue };
                        let text = m.body_text(0).map(|t| t.to_string()).unwrap_or_default();
                        let date = m.date().map(|d| d.to_timestamp()).unwrap_or(i64::MAX);
                        seen["mail"].lock().unwrap().record(
                            "mail",
                            &text,
                            Some(m.message_id().unwrap_or_default().to_string()),
                            Some(date),
                        );
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
            tokio::runtime::Handle::current().block_on(async {
                let every = async |peer: &mut dyn Peer, net: &'static str| {
                    for i in 0..n {
                        let at = Instant::now();
                        // The servers take these whether Causeway runs or not.
                        peer.act(Action::Text { text: format!("{net} #{i}"), reply_to: None })
                            .await
                            .unwrap_or_else(|e| panic!("{net} #{i} not sent: {e}"));
                        sent_now(net, i);
                        tokio::time::sleep(interval.saturating_sub(at.elapsed())).await;
                    }
                    sending_done.fetch_add(1, Ordering::AcqRel);
                };
                let web = async {
                    let http = reqwest::Client::new();
                    for i in 0..n {
                        let at = Instant::now();
                        // A webhook sender resends until Causeway has taken it.
                        let body =
                            json!({"id": format!("hooks-{i}"), "sender": {"id": "w", "name": "Dave"}, "text": format!("hooks #{i}")});
                        loop {
                            match http.post(&hook_url).bearer_auth("tw").json(&body).timeout(Duration::from_secs(5)).send().await {
                                Ok(r) if r.status().is_success() => {
                                    sent_now("hooks", i);
                                    break;
                                }
                                _ => tokio::time::sleep(Duration::from_millis(200)).await,
                            }
                        }
                        tokio::time::sleep(interval.saturating_sub(at.elapsed())).await;
                    }
                    sending_done.fetch_add(1, Ordering::AcqRel);
                };
                let kills = async {
                    let mut during_start = 0;
                    let mut restarts = Vec::new();
                    for cycle in 0..cycles {
                        tokio::time::sleep(dice.ms(gap_ms / 2, gap_ms * 3 / 2)).await;
                        daemon.kill();
                        tokio::time::sleep(dice.ms(200, 1500)).await;
                        daemon.spawn();
                        // Every other cycle, once more while it starts.
                        if cycle % 2 == 1 {
                            tokio::time::sleep(dice.ms(20, 600)).await;
                            daemon.kill();
                            during_start += 1;
                            tokio::time::sleep(dice.ms(100, 800)).await;
                            daemon.spawn();
                        }
                        restarts.push(Instant::now());
                    }
                    (during_start, restarts)
                };
                let watchers = async {
                    tokio::join!(
                        watch("xmpp", &mut xmpp_watch, false, &seen["xmpp"], &stop),
                        watch("matrix", &mut matrix_watch, false, &seen["matrix"], &stop),
                        async {
                            while !stop.load(Ordering::Acquire) {
                                if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(500), hook.rx.recv()).await
                                    && let Some(t) = got.json["text"].as_str()
                                {
                                    seen["hooks"].lock().unwrap().record("hooks", t, Some(got.key.clone()), None);
                                }
                            }
                        },
                    )
                };
                let want = (3 * n) as usize;
                let judge = async {
                    while sending_done.load(Ordering::Acquire) < 4 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let sent_in = start.elapsed();
                    // Every message at every other network, then a little more for doubles.
                    let deadline = Instant::now() + Duration::from_secs(240);
                    while NETWORKS.iter().any(|net| seen[net].lock().unwrap().count() < want) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    let caught_up = start.elapsed() - sent_in;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    stop.store(true, Ordering::Release);
                    (sent_in, caught_up)
                };
                let (_, _, _, (during_start, restarts), _, (sent_in, caught_up)) =
                    tokio::join!(every(&mut alice, "xmpp"), every(&mut bob, "matrix"), web, kills, watchers, judge);
                ((during_start, restarts), sent_in, caught_up)
            })
        })
    });
    daemon.kill();
    daemon.restart().await;
    let reconciled = daemon.metric("causeway_reconciled_total", r#"bridge="matrix""#).await;

    if let Ok(path) = std::env::var("SOAK_LOG") {
        std::fs::write(&path, daemon.log()).expect("SOAK_LOG");
    }
    let mut problems = Vec::new();
    for here in NETWORKS {
        let s = seen[here].lock().unwrap();
        for from in NETWORKS.iter().filter(|f| **f != here) {
            let missing: Vec<u64> = (0..n).filter(|i| !s.keys.contains_key(&(*from, *i))).collect();
            if !missing.is_empty() {
                problems.push(format!("{from} → {here}: missing {missing:?}"));
            }
            let doubled: Vec<u64> = (0..n).filter(|i| s.keys.get(&(*from, *i)).is_some_and(|k| k.len() > 1)).collect();
            if !doubled.is_empty() {
                problems.push(format!("{from} → {here}: under several keys {doubled:?}"));
            }
            let mut order = s.order.get(from).cloned().unwrap_or_default();
            order.sort();
            let order: Vec<u64> = order.into_iter().map(|(_, n)| n).collect();
            if order.windows(2).any(|w| w[0] > w[1]) {
                problems.push(format!("{from} → {here}: out of order {order:?}"));
            }
        }
        if !s.shown_twice.is_empty() {
            problems.push(format!("shown twice on {here}: {:?}", s.shown_twice));
        }
    }
    if std::env::var("SOAK_DETAIL").is_ok() {
        let sent = sent.lock().unwrap();
        for (k, &up) in restarts.iter().enumerate() {
            let mut paths: BTreeMap<String, (Duration, usize)> = BTreeMap::new();
            for (here, s) in &seen {
                let s = s.lock().unwrap();
                for (msg, at) in &s.arrived {
                    if sent.get(msg).is_some_and(|t| *t < up) && *at > up {
                        let e = paths.entry(format!("{} → {here}", msg.0)).or_default();
                        e.0 = e.0.max(at.saturating_duration_since(up));
                        e.1 += 1;
                    }
                }
            }
            eprintln!(
                "soak: restart {k}: {:?}",
                paths.iter().map(|(p, (d, n))| format!("{p} {n} msgs, last {:.1}s", d.as_secs_f64())).collect::<Vec<_>>()
            );
        }
    }
    let mut catch_up = catch_up_times(&restarts, &sent.lock().unwrap(), &seen);
    eprintln!(
        "soak: caught up after each restart in {:?}",
        catch_up.iter().map(|(d, path)| format!("{:.1}s ({path})", d.as_secs_f64())).collect::<Vec<_>>()
    );
    catch_up.sort();
    if let (Some(median), Some(max)) = (catch_up.get(catch_up.len() / 2), catch_up.last()) {
        eprintln!("soak: catch-up after a restart: median {:.1?}, longest {:.1?}", median.0, max.0);
    }
    eprintln!(
        "soak: {cycles} cycles ({during_start} kills while starting), {} messages, sent in {sent_in:?}, all through {caught_up:?} later; \
         Matrix reconciliation found {reconciled}",
        4 * n
    );
    assert!(problems.is_empty(), "seed {seed}:\n{}\n--- causeway ---\n{}", problems.join("\n"), daemon.log());
}

#[test]
fn numbers_are_read_from_texts() {
    assert_eq!(numbered("matrix #12"), Some(("matrix", 12)));
    assert_eq!(numbered("Carol D.: mail #3\r\n"), Some(("mail", 3)));
    assert_eq!(numbered("hello"), None);
    assert_eq!(numbered("xmpp #"), None);
}
