//! Test harness: the real `causeway` binary as a child process, and real
//! HTTP listeners standing in for webhook receivers.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use causeway_core::Capabilities;
use causeway_core::conformance::{Account, Action, Peer, Seen};
use causeway_webhook::payload::parse_native;
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[cfg(feature = "email")]
pub mod mail;
#[cfg(feature = "matrix")]
pub mod matrix;
#[cfg(all(feature = "xmpp", feature = "matrix", feature = "email"))]
pub mod world;
#[cfg(feature = "xmpp")]
pub mod xmpp;

/// Where the tests' file servers listen: standing for an operator's own
/// file server, the one inside address the bridges' configs here allow
/// (`fetch.allow`); every other inside address is refused.
pub const FILES_HOST: &str = "127.0.0.3";
/// `fetch.allow` of the bridges' configs here.
pub const FETCH_ALLOW: &str = "fetch: { allow: [127.0.0.3/32] }";

/// The bridge a config section (`type` included) makes, as the daemon
/// builds it: peers take their capabilities from it, never restating them.
pub fn declared(section: Value) -> Arc<dyn causeway_core::Bridge> {
    causeway::bridges::configure(&section).and_then(|c| c.build()).unwrap_or_else(|e| panic!("{section}: {e:?}"))
}

/// A port for a server a test starts on 127.0.0.1.
///
/// Below the kernel's ephemeral range (`ip_local_port_range`), so that no
/// outgoing connection takes it between this call and the server's bind.
/// (A port from `127.0.0.1:0` is in that range: once in a while a
/// connection of another test got it meanwhile as its local port, and a
/// mail server could not bind it.) Each port is handed out once per
/// process, counting on from an offset of the process id, and only while
/// nothing holds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low = ephemeral_low.saturating_sub(12_000).max(1024);
    let span = ephemeral_low.saturating_sub(low).max(1);
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let port = (low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {low} and {}", low + span)
}

/// What a receiver does with a delivery.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200, optionally naming its own id for the message (`{"id": "<prefix><n>"}`).
    Accept { own_ids: Option<String> },
    /// Answer this status.
    Fail(u16),
    /// 413 to a body over this many bytes, else as `Accept` without ids.
    Limit(usize),
    /// POST the delivery back to Causeway (as a misconfigured peer would),
    /// then answer 200.
    Echo { url: String, token: String, keep_id: bool },
}

/// One received delivery.
#[derive(Clone, Debug)]
pub struct Received {
    /// The `Idempotency-Key` header.
    pub key: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
    /// The id this receiver gave it (when it named one), else the key.
    pub id: String,
    /// When it arrived.
    pub at: Instant,
}

struct HookState {
    mode: Mutex<Mode>,
    tx: mpsc::UnboundedSender<Received>,
    counter: Mutex<u64>,
    /// Idempotency key → the id given (with `own_ids`).
    given: Mutex<HashMap<String, String>>,
    client: reqwest::Client,
}

/// A webhook receiver listening on 127.0.0.1.
pub struct Hook {
    pub addr: SocketAddr,
    pub rx: mpsc::UnboundedReceiver<Received>,
    state: Arc<HookState>,
    server: tokio::task::JoinHandle<()>,
}

async fn receive(State(s): State<Arc<HookState>>, headers: HeaderMap, body: Bytes) -> Response {
    let mode = s.mode.lock().unwrap().clone();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match mode {
        Mode::Fail(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Mode::Limit(max) if body.len() > max => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        Mode::Limit(_) => {
            let _ = s.tx.send(Received { key: key.clone(), headers, body, json, id: key, at: Instant::now() });
            StatusCode::NO_CONTENT.into_response()
        }
        Mode::Accept { own_ids } => {
            let id = match &own_ids {
                // A receiver that names its own ids answers a retry (the
                // same key) with the id it gave the first time.
                Some(prefix) => {
                    let mut given = s.given.lock().unwrap();
                    match given.get(&key).filter(|_| !key.is_empty()) {
                        Some(id) => id.clone(),
                        None => {
                            let mut c = s.counter.lock().unwrap();
                            *c += 1;
                            let id = format!("{prefix}{c}");
                            given.insert(key.clone(), id.clone());
                            id
                        }
                    }
                }
                None => key.clone(),
            };
            let _ = s.tx.send(Received { key, headers, body, json, id: id.clone(), at: Instant::now() });
            match own_ids {
                Some(_) => axum::Json(serde_json::json!({"id": id})).into_response(),
                None => StatusCode::NO_CONTENT.into_response(),
            }
        }
        Mode::Echo { url, token, keep_id } => {
            let mut echo = json.clone();
            if !keep_id && let Some(o) = echo.as_object_mut() {
                o.remove("id");
            }
            let resp = s.client.post(&url).bearer_auth(&token).header("idempotency-key", &key).json(&echo).send().await.expect("echo POST");
            let status = resp.status().as_u16();
            let answer: Value = resp.json().await.unwrap_or(Value::Null);
            let mut headers = headers;
            headers.insert("x-echo-status", status.to_string().parse().unwrap());
            headers.insert("x-echo-answer", answer.to_string().parse().unwrap());
            let _ = s.tx.send(Received { key: key.clone(), headers, body, json, id: key, at: Instant::now() });
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

impl Hook {
    pub async fn start(mode: Mode) -> Hook {
        Self::start_on(0, mode).await
    }

    pub async fn start_on(port: u16, mode: Mode) -> Hook {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(HookState {
            mode: Mutex::new(mode),
            tx,
            counter: Mutex::new(0),
            given: Mutex::new(HashMap::new()),
            client: reqwest::Client::new(),
        });
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hook { addr, rx, state, server }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// The next delivery, or panic after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Received {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no delivery at {} within {timeout:?}", self.addr))
            .expect("receiver closed")
    }

    /// Whatever arrives within `wait`.
    pub async fn drain(&mut self, wait: Duration) -> Vec<Received> {
        let mut out = Vec::new();
        let deadline = Instant::now() + wait;
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
            out.push(r);
        }
        out
    }

    pub fn stop(self) -> mpsc::UnboundedReceiver<Received> {
        self.server.abort();
        self.rx
    }
}

/// The real daemon, run from its binary with a config in a temporary directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The PostgreSQL database of this daemon, when the suite runs on
    /// PostgreSQL (`CAUSEWAY_TEST_STORE=postgres`, see [`postgres_database`]).
    pub store_url: Option<String>,
    child: Option<Child>,
    /// Extra environment for the process.
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Write `config` (with `{port}` and `{db}` filled in) and start.
    pub async fn start(config: &str) -> Daemon {
        Self::start_with_env(config, &[]).await
    }

    /// Start with extra environment variables.
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        let mut d = Self::prepare(config, env);
        d.restart().await;
        d
    }

    /// Write the config (`{port}` and `{db}` filled in) without starting:
    /// for what must be made from it first (`causeway matrix registration`).
    pub fn prepare(config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // On PostgreSQL, each daemon's SQLite store becomes a database of its own.
        let store_url = on_postgres().then(postgres_database);
        let config = match &store_url {
            Some(url) => config.replace("path: \"{db}\"", &format!("url: \"{url}\", path: \"{{db}}\"")),
            None => config.to_string(),
        };
        let config = config
            .replace("{port}", &port.to_string())
            .replace("{db}", &dir.path().join("causeway.db").display().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        std::fs::write(dir.path().join("causeway.yaml"), config).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Daemon { dir, port, store_url, child: None, env }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("causeway.yaml")
    }

    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// Start the process without waiting for it to be ready (to kill it
    /// while it starts).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("causeway.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_causeway"))
            .args(["run", "--config"])
            .arg(self.config_path())
            .env("CAUSEWAY_LOG", std::env::var("CAUSEWAY_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start causeway");
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("causeway exited with {status} while starting:\n{}", self.log());
            }
            if let Ok(r) = client.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "causeway not ready in 20 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("causeway.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for the exit (at most 15 s, then SIGKILL and panic).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("causeway did not stop within 15 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of one sample of `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap();
        metric_value(&text, name, labels)
    }

    /// Until each of `bridges` is up (`causeway_bridge_up` 1), all within
    /// `within`; the error names the first that is not, with the log.
    pub async fn wait_up(&self, bridges: &[&str], within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        for bridge in bridges {
            while self.metric("causeway_bridge_up", &format!(r#"bridge="{bridge}""#)).await != 1.0 {
                if Instant::now() > deadline {
                    return Err(format!("the {bridge} bridge is not up within {within:?}:\n{}", self.log()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Run the CLI against this daemon's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_causeway")).args(args).arg("--config").arg(self.config_path()).output().unwrap()
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// CPU time (user + system) the daemon has used so far, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let pid = self.child.as_ref().expect("running").id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are 14th and 15th.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let ticks: u64 = fields.get(11..13).map(|f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum()).unwrap_or(0);
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// Peak resident memory (VmHWM) of the daemon, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("causeway.db")
    }

    /// The daemon's store, opened beside it (for checking what was stored).
    pub async fn store(&self) -> Box<dyn causeway::store::Store> {
        match &self.store_url {
            Some(url) => Box::new(causeway::store::postgres::PostgresStore::open(url).await.unwrap()),
            None => Box::new(causeway::store::sqlite::SqliteStore::open(&self.db(), false).await.unwrap()),
        }
    }

    /// Every byte the store holds: the SQLite files, or a dump of the
    /// PostgreSQL database.
    pub fn store_bytes(&self) -> Vec<u8> {
        match &self.store_url {
            Some(url) => {
                let out = Command::new("pg_dump").args(["--data-only", url]).output().expect("pg_dump");
                assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
                out.stdout
            }
            None => {
                ["causeway.db", "causeway.db-wal"].iter().flat_map(|f| std::fs::read(self.dir.path().join(f)).unwrap_or_default()).collect()
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn metric_value(text: &str, name: &str, labels: &str) -> f64 {
    let want = if labels.is_empty() { name.to_string() } else { format!("{name}{{{labels}}}") };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == want).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// A real NATS server with JetStream (tests/peers/nats.sh), stopped when dropped.
pub struct Nats {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Nats {
    pub fn start() -> Nats {
        let n = Nats { dir: tempfile::tempdir().unwrap(), port: free_port() };
        n.run(&["start", &n.port.to_string()]);
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// It stops answering (SIGSTOP): as the instances see it, a partition.
    pub fn pause(&self) {
        self.run(&["pause"]);
    }

    pub fn resume(&self) {
        self.run(&["resume"]);
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/nats.sh"))
            .arg(args[0])
            .arg(self.dir.path())
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "nats.sh {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/nats.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// A real Prometheus (tests/peers/prometheus.sh), stopped when dropped.
pub struct Prometheus {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Prometheus {
    /// Scrape `target` (host:port) every second, with the rule file `rules`.
    pub fn start(target: &str, rules: &Path) -> Prometheus {
        let p = Prometheus { dir: tempfile::tempdir().unwrap(), port: free_port() };
        let out = Command::new("bash")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/prometheus.sh"))
            .arg("start")
            .arg(p.dir.path())
            .arg(p.port.to_string())
            .arg(target)
            .arg(rules)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "prometheus did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        p
    }

    /// An instant query's result vector; panics when the query is refused.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let url = reqwest::Url::parse_with_params(&format!("http://127.0.0.1:{}/api/v1/query", self.port), &[("query", expr)]).unwrap();
        let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/prometheus.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// The shape Grafana's dashboard model needs (schema v39): what a
/// dashboard that loads must have, panel by panel.
pub fn check_grafana_dashboard(d: &Value) {
    for field in ["uid", "title"] {
        assert!(d[field].as_str().is_some_and(|s| !s.is_empty()), "dashboard {field}");
    }
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    assert!(d["time"]["from"].is_string() && d["time"]["to"].is_string(), "time range");
    let vars: Vec<&str> = d["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = std::collections::HashSet::new();
    let mut cells = std::collections::HashSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "panel ids are unique: {title}");
        assert!(
            ["timeseries", "stat", "gauge", "table", "bargauge", "state-timeline"].contains(&p["type"].as_str().unwrap_or("")),
            "{title}: panel type"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (g["x"].as_u64().unwrap(), g["y"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: grid position {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel at {cx},{cy}");
            }
        }
        let ds = p["datasource"]["uid"].as_str().unwrap_or("");
        assert!(ds.strip_prefix("${").and_then(|v| v.strip_suffix('}')).is_some_and(|v| vars.contains(&v)), "{title}: datasource {ds}");
        let targets = p["targets"].as_array().expect("targets");
        let refs: std::collections::HashSet<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap()).collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds are unique");
        assert!(targets.iter().all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty())), "{title}: every target has a query");
    }
}

/// A file served on 127.0.0.1 (a small PNG): its URL and bytes.
pub async fn serve_file() -> (String, Vec<u8>) {
    // A 1×1 PNG.
    let png: Vec<u8> = vec![
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63,
        0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
        0xae, 0x42, 0x60, 0x82,
    ];
    let listener = tokio::net::TcpListener::bind((FILES_HOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = png.clone();
    let app = axum::Router::new().route("/pixel.png", axum::routing::get(move || async move { ([("content-type", "image/png")], body) }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/pixel.png"), png)
}

/// GET a link's bytes (200 only).
pub async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let r = reqwest::get(url).await.map_err(|e| format!("{url}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("{url}: {}", r.status()));
    }
    Ok(r.bytes().await.map_err(|e| e.to_string())?.to_vec())
}

/// POST JSON to a Causeway endpoint with a bearer token.
pub async fn post(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> (u16, Value) {
    let r = client.post(url).bearer_auth(token).json(body).send().await.expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Whether the suite runs on PostgreSQL (`CAUSEWAY_TEST_STORE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("CAUSEWAY_TEST_STORE").is_ok_and(|s| s == "postgres")
}

/// A new, empty database on the suite's PostgreSQL server
/// (`CAUSEWAY_TEST_POSTGRES`, which tests/run.sh starts): its URL.
pub fn postgres_database() -> String {
    let server = std::env::var("CAUSEWAY_TEST_POSTGRES")
        .expect("CAUSEWAY_TEST_STORE=postgres needs CAUSEWAY_TEST_POSTGRES (a server URL; tests/run.sh starts one)");
    let name = format!("t{}", uuid::Uuid::now_v7().simple());
    let out = Command::new("psql")
        .args(["-qX", "-v", "ON_ERROR_STOP=1", &server, "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql");
    assert!(out.status.success(), "cannot create a database: {}", String::from_utf8_lossy(&out.stderr));
    let (base, _) = server.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}

/// How many events of `portal` the daemon's store archived.
pub async fn archive_len(d: &Daemon, portal: &str) -> usize {
    d.store().await.history(portal, 0, 100_000).await.unwrap().len()
}

/// The portals opened at run time that the store holds (direct conversations).
pub async fn stored_portals(d: &Daemon) -> usize {
    d.store().await.load_portals().await.unwrap().len()
}

/// The texts of a portal's archived messages, oldest first.
pub async fn archived_texts(d: &Daemon, portal: &str) -> Vec<String> {
    d.store()
        .await
        .history(portal, 0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| match c.event.body {
            causeway_core::Body::Message { text, .. } => Some(text.plain),
            _ => None,
        })
        .collect()
}

/// A webhook endpoint seen from outside: what it POSTs in, what it receives.
pub struct WebhookPeer {
    label: &'static str,
    url: String,
    token: &'static str,
    /// Sign each request with this secret (an endpoint with `hmac_secret`).
    secret: Option<&'static [u8]>,
    hook: Hook,
    n: u32,
    /// What was posted, by id (for redelivery).
    posted: HashMap<String, Value>,
    /// A direct endpoint (`direct: true`) on the same bridge: the bridge's
    /// name, the endpoint's URL and token.
    direct: Option<(&'static str, String, &'static str)>,
    /// Deliveries waiting for the other reader (room or direct).
    held: VecDeque<Received>,
    /// The idempotency keys taken: a retry of one is dropped, as the
    /// webhook contract asks of a receiver.
    keys: HashSet<String>,
    /// Id of what was seen → who sent it (a person id or `network:id`)
    /// and their name.
    authors: HashMap<String, (String, String)>,
}

impl WebhookPeer {
    pub fn new(label: &'static str, url: String, token: &'static str, hook: Hook) -> Self {
        WebhookPeer {
            label,
            url,
            token,
            secret: None,
            hook,
            n: 0,
            posted: HashMap::new(),
            direct: None,
            held: VecDeque::new(),
            keys: HashSet::new(),
            authors: HashMap::new(),
        }
    }

    /// Sign requests (`X-Causeway-Timestamp`, `X-Causeway-Signature`).
    pub fn signed(mut self, secret: &'static [u8]) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Hold direct conversations through the endpoint at `url` of the
    /// webhook bridge named `bridge` (its outbound URL is this peer's hook).
    pub fn with_direct(mut self, bridge: &'static str, url: String, token: &'static str) -> Self {
        self.direct = Some((bridge, url, token));
        self
    }

    /// POST `body` to `url` (signed where the peer signs); the status.
    async fn send(&self, url: &str, token: &str, body: &Value) -> Result<u16, String> {
        let (status, answer) = match self.secret {
            Some(secret) => {
                let raw = serde_json::to_vec(body).unwrap();
                let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
                let r = reqwest::Client::new()
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-causeway-timestamp", ts.to_string())
                    .header("x-causeway-signature", causeway_core::sign::sign_at(secret, ts, &raw))
                    .body(raw)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            None => post(&reqwest::Client::new(), url, token, body).await,
        };
        if !(200..300).contains(&status) {
            return Err(format!("POST answered {status}: {answer}"));
        }
        Ok(status)
    }

    /// The next delivery that is direct (`direct`) or not, holding the others.
    async fn delivery(&mut self, direct: bool, timeout: Duration) -> Result<Received, String> {
        if let Some(i) = self.held.iter().position(|r| r.json.get("direct").is_some() == direct) {
            return Ok(self.held.remove(i).unwrap());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = tokio::time::timeout_at(deadline, self.hook.rx.recv()).await.map_err(|_| "timed out".to_string())?;
            let got = got.ok_or("receiver closed")?;
            if !got.key.is_empty() && !self.keys.insert(got.key.clone()) {
                continue;
            }
            if got.json.get("direct").is_some() == direct {
                return Ok(got);
            }
            self.held.push_back(got);
        }
    }

    fn seen(&mut self, got: Received) -> Result<Seen, String> {
        let incoming = parse_native("x", &got.body, None).map_err(|e| e.to_string())?;
        let s = &got.json["sender"];
        let who = match (s["person"].as_str(), s["network"].as_str(), s["id"].as_str()) {
            (Some(p), _, _) => Some(p.to_string()),
            (None, Some(net), Some(id)) => Some(format!("{net}:{id}")),
            _ => None,
        };
        let name = incoming.sender.name.unwrap_or_default();
        if let Some(who) = who {
            self.authors.insert(got.id.clone(), (who, name.clone()));
        }
        Ok(Seen { id: got.id, sender_name: name, body: incoming.body })
    }
}

#[async_trait]
impl Peer for WebhookPeer {
    fn label(&self) -> String {
        self.label.to_string()
    }
    /// A mention of this endpoint's sender (`<bridge>:<label>`).
    fn pinged(&self, seen: &Seen) -> bool {
        let me = |who: &str| who.split_once(':').is_some_and(|(_, id)| id == self.label);
        matches!(&seen.body, causeway_core::Body::Message { mentions, .. } if mentions.iter().any(|m| me(&m.who)))
    }
    fn capabilities(&self) -> Capabilities {
        // An endpoint with native JSON both ways, as the tests configure it.
        declared(json!({"type": "webhook", "endpoints": {"w": {"inbound": {"token": "t"}, "outbound": {"url": "http://127.0.0.1:9/", "format": "native"}}}}))
            .capabilities("w")
    }
    async fn act(&mut self, action: Action) -> Result<String, String> {
        self.n += 1;
        let id = format!("{}-{}", self.label, self.n);
        let sender = json!({"id": self.label, "name": self.label});
        let body = match action {
            Action::Text { text, reply_to } => json!({"id": id, "sender": sender, "text": text, "reply_to": reply_to}),
            Action::InThread { text, root } => json!({"id": id, "sender": sender, "text": text, "thread": root}),
            Action::Mention { text, of } => {
                let (who, name) = self.authors.get(&of).cloned().ok_or_else(|| format!("nobody known to have sent {of}"))?;
                json!({"id": id, "sender": sender, "text": format!("{name}: {text}"), "mentions": [{"who": who, "text": name}]})
            }
            Action::Edit { target, text } => json!({"id": id, "sender": sender, "type": "edit", "target": target, "text": text}),
            Action::Retract { target } => json!({"id": id, "sender": sender, "type": "retract", "target": target}),
            Action::React { target, key } => json!({"id": id, "sender": sender, "type": "reaction", "target": target, "key": key}),
            Action::File { attachment, caption } => json!({"id": id, "sender": sender, "text": caption, "attachments": [attachment]}),
            Action::Presence { show, status } => json!({"id": id, "sender": sender, "type": "presence", "show": show, "status": status}),
            Action::Typing { active } => json!({"id": id, "sender": sender, "type": "typing", "active": active}),
            Action::Topic { text } => json!({"id": id, "sender": sender, "type": "topic", "topic": text}),
            Action::Leave => json!({"id": id, "sender": sender, "type": "membership", "membership": "leave"}),
            Action::Join => json!({"id": id, "sender": sender, "type": "membership", "membership": "join"}),
        };
        let status = self.send(&self.url, self.token, &body).await?;
        if status != 202 {
            return Err(format!("POST answered {status}, not 202"));
        }
        self.posted.insert(id.clone(), body);
        Ok(id)
    }
    /// The same POST again, as a sender retrying after a lost answer does.
    async fn redeliver(&mut self, id: &str) -> Result<bool, String> {
        let body = self.posted.get(id).cloned().ok_or_else(|| format!("nothing was posted as {id}"))?;
        self.send(&self.url, self.token, &body).await?;
        Ok(true)
    }
    fn account(&self) -> Option<Account> {
        self.direct.as_ref().map(|(bridge, _, _)| Account { bridge: bridge.to_string(), id: self.label.to_string() })
    }
    async fn direct(&mut self, to: &Account, text: &str, reply_to: Option<String>) -> Result<String, String> {
        let (_, url, token) = self.direct.clone().ok_or("no direct endpoint")?;
        self.n += 1;
        let id = format!("{}-{}", self.label, self.n);
        let body = json!({"id": id, "sender": {"id": self.label, "name": self.label}, "to": format!("{}:{}", to.bridge, to.id),
                          "text": text, "reply_to": reply_to});
        self.send(&url, token, &body).await?;
        Ok(id)
    }
    async fn next_direct(&mut self, timeout: Duration) -> Result<Seen, String> {
        let got = self.delivery(true, timeout).await?;
        self.seen(got)
    }
    async fn next(&mut self, timeout: Duration) -> Result<Seen, String> {
        let got = self.delivery(false, timeout).await?;
        self.seen(got)
    }

    async fn fetch(&mut self, url: &str) -> Result<Vec<u8>, String> {
        fetch(url).await
    }
}

/// Causeway as the conformance suite restarts it: killed (SIGKILL), started
/// again on the same store, and back once each of `bridges` is up.
pub struct Restarts<'a> {
    pub daemon: &'a mut Daemon,
    pub bridges: &'static [&'static str],
}

#[async_trait]
impl causeway_core::conformance::Causeway for Restarts<'_> {
    async fn restart(&mut self) -> Result<(), String> {
        self.daemon.kill();
        self.daemon.restart().await;
        self.daemon.wait_up(self.bridges, Duration::from_secs(30)).await.map_err(|e| format!("after a restart: {e}"))
    }
}
