//! The archive at scale: an archive of `BENCH_ARCHIVE_EVENTS` (1,000,000)
//! events is filled through the store's own commit (the daemon's write
//! path: archive, message map, search index and files waiting, in one
//! transaction per batch), then
//!
//! 1. searched: each kind of query `BENCH_SEARCHES` (50) times, p50/p99;
//! 2. exported by the release `causeway archive export` in every format:
//!    events per second and the process's peak RSS (`VmHWM`);
//! 3. measured: database bytes per event.
//!
//! `cargo bench --bench archive` (see BENCHMARKS.md). Bounded in count;
//! stops by itself; everything in a temporary folder.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use causeway::archive::SearchParams;
use causeway::store::sqlite::SqliteStore;
use causeway::store::{NewEvent, RemoteKey, Store};
use causeway_core::{Attachment, Body, Event, Membership, MessageKind, Origin, Sender, Text};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
}

const POLISH: &[&str] = &[
    "zażółć",
    "gęślą",
    "jaźń",
    "spotkanie",
    "wydanie",
    "przegląd",
    "łódź",
    "żółw",
    "źródło",
    "dziękuję",
    "jutro",
    "plan",
    "budżet",
    "przesyłka",
    "serwer",
    "kopia",
    "zapasowa",
];
const HINDI: &[&str] = &["नमस्ते", "दुनिया", "बैठक", "आज", "कल", "योजना", "धन्यवाद", "सर्वर", "रिपोर्ट"];
const ENGLISH: &[&str] = &[
    "the", "release", "plan", "is", "ready", "meeting", "tomorrow", "budget", "deploy", "server", "backup", "review", "please", "thanks",
    "incident", "customer", "invoice", "quarter", "roadmap", "ticket",
];
const EMOJI: &[&str] = &["🎉", "👍", "🚀", "✅", "🔥", "😂"];
const BRIDGES: &[&str] = &["xmpp", "matrix", "mail", "hooks"];
const PORTALS: u64 = 20;
const PEOPLE: u64 = 500;

fn text(rng: &mut Rng) -> String {
    let words = 4 + rng.below(16);
    let lang = match rng.below(10) {
        0..=3 => POLISH,
        4..=5 => HINDI,
        _ => ENGLISH,
    };
    let mut t: Vec<&str> = (0..words).map(|_| rng.pick(lang)).collect();
    if rng.below(5) == 0 {
        t.push(rng.pick(EMOJI));
    }
    t.join(" ")
}

/// Event `n` of the archive: mostly messages (some replies, some with a
/// file), edits and reactions of recent messages, joins.
fn event(n: u64, rng: &mut Rng, recent: &mut [Vec<String>], start_ms: i64, step_ms: i64) -> NewEvent {
    let portal = rng.below(PORTALS);
    let who = rng.below(PEOPLE);
    let bridge = BRIDGES[(who % BRIDGES.len() as u64) as usize];
    let id = format!("e{n:08}");
    let last = &mut recent[portal as usize];
    let target = (!last.is_empty()).then(|| last[rng.below(last.len() as u64) as usize].clone());
    let body = match (rng.below(100), target) {
        (0..=3, Some(t)) => Body::Edit { target: t, text: Text::plain(text(rng)) },
        (4..=7, Some(t)) => Body::Reaction { target: t, key: rng.pick(EMOJI).into(), removed: false },
        (8, _) => Body::Membership(Membership::Join),
        (roll, target) => {
            let attachments = if roll == 9 {
                vec![Attachment {
                    url: format!("https://files.example/{id}.pdf"),
                    name: Some(format!("report-{n}.pdf")),
                    mime: Some("application/pdf".into()),
                    size: Some(100_000),
                }]
            } else {
                Vec::new()
            };
            let reply_to = if (10..=12).contains(&roll) { target } else { None };
            Body::Message {
                text: Text::plain(text(rng)),
                kind: MessageKind::Text,
                attachments,
                reply_to,
                thread: None,
                mentions: Vec::new(),
            }
        }
    };
    if matches!(body, Body::Message { .. }) {
        if last.len() >= 50 {
            last.remove(0);
        }
        last.push(id.clone());
    }
    let account = format!("user{who}@{bridge}.example");
    NewEvent {
        event: Event {
            id: id.clone(),
            portal: format!("room-{portal}"),
            origin: Origin { bridge: bridge.into(), room: format!("room-{portal}@{bridge}"), remote_id: Some(format!("r-{id}")) },
            sender: Sender { id: account, person: Some(format!("person{who}")), name: format!("Person {who}"), avatar: None },
            at_ms: start_ms + n as i64 * step_ms,
            body,
        },
        origin_key: RemoteKey { bridge: bridge.into(), room: format!("room-{portal}@{bridge}"), remote_id: format!("r-{id}") },
        aliases: Vec::new(),
        deliveries: Vec::new(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Bytes of the database and its write-ahead log.
fn db_bytes(db: &Path) -> u64 {
    ["", "-wal"].iter().filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok()).map(|m| m.len()).sum()
}

/// Run `causeway archive export` and watch it: (wall time, peak RSS in KiB).
fn run_export(config: &Path, args: &[&str]) -> (Duration, u64) {
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["archive", "export", "-c"])
        .arg(config)
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("causeway");
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status)
            && let Some(kb) =
                s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            peak = kb;
        }
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(st.success(), "export {args:?}: {err}");
            return (t.elapsed(), peak);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = env("BENCH_ARCHIVE_EVENTS", 1_000_000);
    let searches = env("BENCH_SEARCHES", 50) as usize;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("archive.db");
    let store = SqliteStore::open(&db, false).await.unwrap();

    // Fill: a year of conversation in 20 portals by 500 people.
    let now = causeway_core::now_ms();
    let year_ms = 365 * 86_400_000i64;
    let step = (year_ms / total.max(1) as i64).max(1);
    let start = now - step * total as i64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut recent = vec![Vec::new(); PORTALS as usize];
    let t = Instant::now();
    let mut n = 0;
    while n < total {
        let batch: Vec<NewEvent> = (n..(n + 1000).min(total)).map(|i| event(i, &mut rng, &mut recent, start, step)).collect();
        store.commit(&batch).await.unwrap();
        n += batch.len() as u64;
        if n % 100_000 == 0 {
            eprintln!("filled {n} of {total} events ({:.0} events/s)", n as f64 / t.elapsed().as_secs_f64());
        }
    }
    let fill = t.elapsed();
    drop(store);
    let store = SqliteStore::open(&db, false).await.unwrap();
    let bytes = db_bytes(&db);

    println!("## Archive of {total} events\n");
    println!("Filled in {:.0} s ({:.0} events/s, batches of 1,000).", fill.as_secs_f64(), total as f64 / fill.as_secs_f64());
    println!("Database: {:.0} MiB, **{:.0} bytes per event**.\n", bytes as f64 / 1_048_576.0, bytes as f64 / total as f64);

    // Search: each kind of query, `searches` times.
    let queries: &[(&str, SearchParams)] = &[
        ("a common word", SearchParams { q: "release".into(), ..Default::default() }),
        ("a rarer word, no diacritics", SearchParams { q: "zolw zrodlo".into(), ..Default::default() }),
        ("Devanagari", SearchParams { q: "नमस्ते बैठक".into(), ..Default::default() }),
        ("prefix", SearchParams { q: "przes*".into(), ..Default::default() }),
        ("phrase", SearchParams { q: "\"backup server\"".into(), ..Default::default() }),
        ("word + person", SearchParams { q: "budget".into(), person: Some("person42".into()), ..Default::default() }),
        (
            "word + portal + last 30 days",
            SearchParams { q: "plan".into(), portal: Some("room-3".into()), since: Some("30d".into()), ..Default::default() },
        ),
        ("files", SearchParams { q: "report*".into(), kind: Some(causeway::archive::SearchKind::File), ..Default::default() }),
    ];
    println!("| search (20 results, 2 of context) | hits | p50 | p99 |\n|---|---|---|---|");
    for (name, params) in queries {
        let q = params.query(now).unwrap();
        let hits = store.search(&q).await.unwrap().len();
        let mut took = Vec::with_capacity(searches);
        for _ in 0..searches {
            let t = Instant::now();
            store.search(&q).await.unwrap();
            took.push(t.elapsed());
        }
        took.sort();
        println!("| {name} | {hits} | {} | {} |", ms(percentile(&took, 0.5)), ms(percentile(&took, 0.99)));
    }
    drop(store);

    if env("BENCH_ARCHIVE_EXPORTS", 1) == 0 {
        return;
    }
    // Export: the release binary, as an operator runs it.
    let config = dir.path().join("causeway.yaml");
    std::fs::write(&config, format!("store: {{ path: \"{}\", sync: normal }}\n", db.display())).unwrap();
    println!("\n| export | events | time | events/s | peak RSS | output |\n|---|---|---|---|---|---|");
    for format in ["json", "slack", "mbox", "html"] {
        let out = dir.path().join(format!("all.{format}"));
        let (took, peak) = run_export(&config, &["--format", format, "-o", out.to_str().unwrap()]);
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&out);
        println!(
            "| {format}, every portal | {total} | {:.1} s | {:.0} | {:.0} MiB | {:.0} MiB |",
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64(),
            peak as f64 / 1024.0,
            size as f64 / 1_048_576.0
        );
    }
    // PDF through Chromium: one portal's last week (a printable size).
    if Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = dir.path().join("week.pdf");
        let week = (7 * 86_400_000 / step) as u64 / PORTALS;
        let (took, peak) = run_export(&config, &["--format", "pdf", "--portal", "room-0", "--since", "7d", "-o", out.to_str().unwrap()]);
        println!(
            "| pdf, one portal's last 7 days | ≈{week} | {:.1} s | {:.0} | {:.0} MiB (causeway; Chromium apart) | {:.1} MiB |",
            took.as_secs_f64(),
            week as f64 / took.as_secs_f64(),
            peak as f64 / 1024.0,
            std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) as f64 / 1_048_576.0
        );
    }
}
