//! Configuration: YAML, with `${ENV}` substitution and `*_file` secrets,
//! validated into errors that name the option path and what is wrong.
//!
//! Loading goes YAML → a JSON-like tree → secrets and environment resolved
//! → typed structs (with the failing path on error) → cross-checks (links
//! name existing bridges and rooms, people's accounts, one portal per room).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use causeway_core::{Configured, Degrade};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::person::PersonConfig;
use crate::person::valid_person_id;

/// One thing wrong in a config, at an option path like `portals[0].links[1].bridge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Everything wrong in a config, one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub router: RouterConfig,
    /// Bridge name → `{type: …, …options of that type}`; checked by the bridge.
    #[serde(default)]
    pub bridges: BTreeMap<String, Value>,
    #[serde(default)]
    pub portals: Vec<PortalConfig>,
    #[serde(default)]
    pub people: Vec<PersonConfig>,
    /// Where more people come from.
    #[serde(default)]
    pub directory: DirectoryConfig,
    /// What the archive keeps besides the events (docs/archive.md).
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// The IT console and its API (docs/console.md); off when absent.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Who may broadcast, and how people are reached (docs/broadcast.md).
    #[serde(default)]
    pub broadcast: crate::broadcast::BroadcastConfig,
    /// Several instances on one PostgreSQL store (docs/scale-out.md); one
    /// instance alone when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// `cluster:`: this instance among others that share the store. Each
/// bridge's connection is held by one of them at a time, under a lease.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This instance's name, unique among them (logs, metrics, the lease table).
    pub instance: String,
    /// How long a lease holds without renewal: an instance that dies is
    /// replaced within about this time. Renewed every sixth of it (at most every second).
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// A NATS server with JetStream (`nats://host:4222`, `tls://…`; several
    /// comma-separated): hints between the instances, so they act at once
    /// (new rows, leases let go of) and see who is up. Only hints: without
    /// NATS they look for themselves, every couple of seconds.
    #[serde(default)]
    pub nats: Option<causeway_core::Secret>,
}

fn default_lease() -> Duration {
    Duration::from_secs(6)
}

/// `admin:`: the console's own listener and who may use it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The console's listener, apart from `http.listen` (which the
    /// networks reach): nothing of the console is served there.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Who may log in: each token's SHA-256 (`causeway admin token` makes
    /// one), never the token itself.
    pub tokens: Vec<AdminToken>,
    /// How long a login lasts.
    #[serde(default = "default_session_for", with = "humantime_serde")]
    pub session_for: Duration,
    /// Failed logins allowed per client address per minute; more are refused.
    #[serde(default = "default_login_failures")]
    pub login_failures_per_minute: u32,
    /// Mark the session cookie `Secure` (set when a TLS proxy is in front).
    #[serde(default)]
    pub secure_cookie: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who the token is, as the audit log names them.
    pub name: String,
    /// SHA-256 of the token, hex (or `sha256_file:` naming a file with it).
    pub sha256: String,
    /// Sees everything, changes nothing.
    #[serde(default)]
    pub read_only: bool,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}
fn default_session_for() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_login_failures() -> u32 {
    5
}

/// Whether a portal's files are kept in the archive or only their links.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilesMode {
    /// Fetched (through the guarded fetcher) and kept, deduplicated.
    #[default]
    Keep,
    /// Only the link is archived.
    Link,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Every portal's files, unless the portal says otherwise.
    #[serde(default)]
    pub files: FilesMode,
    /// Where kept files are written: `archive-files` beside the store by default.
    #[serde(default)]
    pub files_dir: Option<PathBuf>,
    /// A larger file is not kept (its link is).
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Kept files take at most this much together; beyond it new files
    /// are links only.
    #[serde(default = "default_files_quota")]
    pub files_quota_bytes: u64,
    /// Where files may be fetched from although it is not public.
    #[serde(default)]
    pub fetch: causeway_core::fetch::FetchOptions,
    /// How long events are kept (`forever`, or `365d`); portals may say otherwise.
    #[serde(default)]
    pub retention: crate::archive::retention::Retention,
    /// How often retention is applied.
    #[serde(default = "default_retention_every", with = "humantime_serde")]
    pub retention_every: Duration,
}

fn default_retention_every() -> Duration {
    Duration::from_secs(3600)
}

fn default_max_file_bytes() -> u64 {
    25 << 20
}
fn default_files_quota() -> u64 {
    10 << 30
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            files: FilesMode::default(),
            files_dir: None,
            max_file_bytes: default_max_file_bytes(),
            files_quota_bytes: default_files_quota(),
            fetch: Default::default(),
            retention: Default::default(),
            retention_every: default_retention_every(),
        }
    }
}

impl Config {
    /// Where the archive keeps files.
    pub fn files_dir(&self) -> PathBuf {
        self.archive.files_dir.clone().unwrap_or_else(|| self.store.path.with_file_name("archive-files"))
    }

    /// A configured portal's own archive settings.
    fn portal_archive(&self, portal: &str) -> Option<&PortalArchive> {
        self.portals.iter().find(|p| p.id == portal).and_then(|p| p.archive.as_ref())
    }

    /// How long `portal`'s events are kept.
    pub fn retention_of(&self, portal: &str) -> crate::archive::retention::Retention {
        self.portal_archive(portal).and_then(|a| a.retention).unwrap_or(self.archive.retention)
    }

    /// Whether `portal`'s files are kept.
    pub fn files_of(&self, portal: &str) -> FilesMode {
        self.portal_archive(portal).and_then(|a| a.files).unwrap_or(self.archive.files)
    }
}

/// A portal's own archive settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortalArchive {
    #[serde(default)]
    pub files: Option<FilesMode>,
    #[serde(default)]
    pub retention: Option<crate::archive::retention::Retention>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// People imported from LDAP, in addition to `people` (which win when
    /// both name the same person id or account).
    #[serde(default)]
    pub ldap: Option<crate::ldap::LdapConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where `/metrics`, `/healthz`, `/readyz`, `/api/…` and the bridges'
    /// inbound routes listen.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `/api/…` wants `Authorization: Bearer <api_token>`; unset: open to
    /// whoever reaches `listen` (keep it on loopback then).
    #[serde(default)]
    pub api_token: Option<causeway_core::Secret>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: default_listen(), api_token: None }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sync {
    /// Every commit is on disk before the network is acknowledged (survives power loss).
    #[default]
    Full,
    /// Commits survive a crash of Causeway but not of the machine.
    Normal,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database (the default store).
    #[serde(default = "default_db")]
    pub path: PathBuf,
    /// A PostgreSQL database instead (`postgres://user:pass@host/db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<causeway_core::Secret>,
    #[serde(default)]
    pub sync: Sync,
    /// Most events committed in one transaction (group commit).
    #[serde(default = "default_batch")]
    pub max_batch: usize,
}

fn default_db() -> PathBuf {
    PathBuf::from("causeway.db")
}
fn default_batch() -> usize {
    1024
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: default_db(), url: None, sync: Sync::default(), max_batch: default_batch() }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// First retry delay; doubles per attempt, with jitter.
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// A delivery still failing this long after its first failure becomes a dead letter.
    #[serde(default = "default_give_up", with = "humantime_serde")]
    pub give_up_after: Duration,
    /// One delivery attempt taking longer than this is abandoned and
    /// retried (a network that stops answering never holds a room's lane).
    #[serde(default = "default_delivery_timeout", with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// A dead letter posts a short notice into the room the message came
    /// from ("Not delivered to …: why").
    #[serde(default = "default_true")]
    pub notify_dead_letters: bool,
}

fn default_retry_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}
fn default_true() -> bool {
    true
}
fn default_delivery_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_give_up() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            give_up_after: default_give_up(),
            delivery_timeout: default_delivery_timeout(),
            notify_dead_letters: true,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// What to do with an edit, retraction, reaction or topic a target cannot show.
    #[serde(default)]
    pub degrade: Degrade,
    #[serde(default)]
    pub presence: PresenceConfig,
    /// Senders never taken in, per bridge: another bridge's users in the
    /// same rooms (its bot and ghosts), so the two do not relay each
    /// other. Each entry is a sender id as the bridge names it, `*` for any
    /// run of characters (`"@telegram_*:example.org"`).
    #[serde(default)]
    pub ignore: std::collections::BTreeMap<String, Vec<String>>,
    /// Another Causeway linking the same rooms (docs/architecture.md, "Two
    /// bridges on the same rooms").
    #[serde(default)]
    pub peer: Option<PeerConfig>,
    /// Who may open direct conversations, and how many.
    #[serde(default)]
    pub direct: DirectConfig,
}

/// Direct conversations opened by strangers (accounts that are no person
/// of the directory): each is a portal, stored, with a room on another
/// network, so their number is bounded. People of the directory are not
/// limited.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectConfig {
    /// Per bridge, the strangers who may open one: sender ids as the bridge
    /// names them, `*` for any run of characters (`"*@partner.example"`).
    /// A bridge not named here: any stranger may.
    #[serde(default)]
    pub strangers: std::collections::BTreeMap<String, Vec<String>>,
    /// Strangers open no new one while this many direct conversations are open.
    #[serde(default = "default_direct_max_open")]
    pub max_open: usize,
    /// New direct conversations strangers may open per hour, all together.
    #[serde(default = "default_direct_per_hour")]
    pub strangers_per_hour: u32,
}

impl Default for DirectConfig {
    fn default() -> Self {
        DirectConfig { strangers: Default::default(), max_open: default_direct_max_open(), strangers_per_hour: default_direct_per_hour() }
    }
}

fn default_direct_max_open() -> usize {
    10_000
}

fn default_direct_per_hour() -> u32 {
    200
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Shared by both: what each relays carries a mark signed with it
    /// (naming the id the message had where it came from), so that the
    /// other can trust the mark.
    pub secret: causeway_core::Secret,
    /// This one stands by: every message waits this long before it is
    /// delivered, and is not delivered to a room where the peer's signed
    /// copy came meanwhile. Each message then arrives once while the peer
    /// runs, and still arrives (this much later) while it does not. Unset
    /// (the active one): deliver at once.
    #[serde(default, with = "humantime_serde")]
    pub standby: Option<std::time::Duration>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    /// A person who has said nothing for this long shows as away (status
    /// "idle") until they speak again; unset: never.
    #[serde(default, with = "humantime_serde::option")]
    pub idle_after: Option<Duration>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub links: Vec<LinkConfig>,
    /// Overrides `router.degrade` for this portal.
    #[serde(default)]
    pub degrade: Option<Degrade>,
    /// Overrides `archive.files` for this portal.
    #[serde(default)]
    pub archive: Option<PortalArchive>,
    /// The time zone times are shown in here (an IANA name such as
    /// `Europe/Berlin`, or a Windows one); UTC when absent.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Calendars announced here (docs/calendars.md).
    #[serde(default)]
    pub calendars: Vec<crate::calendar::CalendarConfig>,
    /// The local time of the daily agenda of those calendars ("08:00").
    #[serde(default)]
    pub agenda: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub bridge: String,
    pub room: String,
}

/// A config with its bridges' options read and checked (nothing built:
/// [`crate::bridges::build`] makes the bridges when the daemon starts).
pub struct Loaded {
    pub config: Config,
    pub bridges: BTreeMap<String, Box<dyn Configured>>,
}

/// Where the config reads environment variables and files (tests give their own).
pub trait Source {
    fn var(&self, name: &str) -> Option<String>;
    fn read(&self, path: &Path) -> std::io::Result<String>;
}

/// The real environment and file system; relative `*_file` paths are
/// relative to the config file's directory.
pub struct System {
    pub base: PathBuf,
}

impl Source for System {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.base.join(path))
    }
}

/// Read, parse and validate the config file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::new("", format!("cannot read config file {}: {e}", path.display())))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &System { base })
}

/// Parse `text` with no environment but `SET=value` and no files, as the
/// fuzz target does (`fuzz/`). Not an API.
#[doc(hidden)]
pub fn fuzz_parse(text: &str) {
    struct Nothing;
    impl Source for Nothing {
        fn var(&self, name: &str) -> Option<String> {
            (name == "SET").then(|| "value".to_string())
        }
        fn read(&self, _path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no files here"))
        }
    }
    let _ = parse(text, &Nothing);
}

/// Parse and validate config text.
pub fn parse(text: &str, source: &dyn Source) -> Result<Loaded, ConfigErrors> {
    let mut tree: Value = serde_saphyr::from_str(text).map_err(|e| ConfigError::new("", format!("invalid YAML: {e}")))?;
    match tree {
        Value::Object(_) => {}
        Value::Null => return Err(ConfigError::new("", "the config is empty").into()),
        _ => return Err(ConfigError::new("", "the config must be a mapping of options").into()),
    }
    let mut errors = Vec::new();
    resolve(&mut tree, "", source, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::new(if path == "." { String::new() } else { path }, e.into_inner().to_string())
    })?;
    let bridges = validate(&config)?;
    Ok(Loaded { config, bridges })
}

/// Expand `${VAR}` / `${VAR:-default}` in every string and replace every
/// `<name>_file: PATH` by `<name>: <contents of PATH>`; drop empty keys.
fn resolve(v: &mut Value, path: &str, source: &dyn Source, errors: &mut Vec<ConfigError>) {
    match v {
        Value::String(s) => match expand(s, source) {
            Ok(x) => *s = x,
            Err(m) => errors.push(ConfigError::new(path, m)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve(item, &format!("{path}[{i}]"), source, errors);
            }
        }
        Value::Object(map) => {
            // `key:` with nothing after it (its options commented out) is
            // the same as leaving the key out.
            map.retain(|_, v| !v.is_null());
            let file_keys: Vec<String> = map.keys().filter(|k| k.ends_with("_file") && k.len() > 5).cloned().collect();
            for key in file_keys {
                let target = key.trim_end_matches("_file").to_string();
                let here = join(path, &key);
                if map.contains_key(&target) {
                    errors.push(ConfigError::new(here, format!("give either `{target}` or `{key}`, not both")));
                    continue;
                }
                let Some(Value::String(file)) = map.remove(&key) else {
                    errors.push(ConfigError::new(here, "expected a file path"));
                    continue;
                };
                let file = match expand(&file, source) {
                    Ok(f) => f,
                    Err(m) => {
                        errors.push(ConfigError::new(here, m));
                        continue;
                    }
                };
                match source.read(Path::new(&file)) {
                    Ok(contents) => {
                        let contents = contents.strip_suffix('\n').unwrap_or(&contents);
                        let contents = contents.strip_suffix('\r').unwrap_or(contents);
                        map.insert(target, Value::String(contents.to_string()));
                    }
                    Err(e) => errors.push(ConfigError::new(here, format!("cannot read {file}: {e}"))),
                }
            }
            for (k, item) in map.iter_mut() {
                resolve(item, &join(path, k), source, errors);
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// `${NAME}` is the variable (an error if unset), `${NAME:-default}` falls
/// back to `default`, `$$` is a literal `$`.
fn expand(s: &str, source: &dyn Source) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| format!("unclosed `${{` in {s:?}"))?;
            let expr = &inner[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{expr}}}` is not a valid environment variable reference"));
            }
            match (source.var(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Everything wrong with `config`, each at its path, all at once; else
/// each bridge's options, read and checked by its network.
fn validate(config: &Config) -> Result<BTreeMap<String, Box<dyn Configured>>, ConfigErrors> {
    let mut errors = Vec::new();
    check_limits(config, &mut errors);
    let bridges = configure_bridges(config, &mut errors);
    check_portals(config, &bridges, &mut errors);
    check_people(config, &mut errors);
    check_router_and_directory(config, &mut errors);
    let names: Vec<String> = config.bridges.keys().cloned().collect();
    errors.extend(config.broadcast.check(&names).into_iter().map(|(path, message)| ConfigError::new(path, message)));
    if errors.is_empty() { Ok(bridges) } else { Err(ConfigErrors(errors)) }
}

/// The store's and the outbox's numbers.
fn check_limits(config: &Config, errors: &mut Vec<ConfigError>) {
    if config.store.max_batch == 0 {
        errors.push(ConfigError::new("store.max_batch", "must be at least 1"));
    }
    if let Some(url) = &config.store.url
        && !["postgres://", "postgresql://"].iter().any(|s| url.expose().starts_with(s))
    {
        errors.push(ConfigError::new("store.url", "must be a PostgreSQL URL (postgres://user@host:port/database)"));
    }
    if let Some(cluster) = &config.cluster {
        if config.store.url.is_none() {
            errors.push(ConfigError::new("cluster", "needs a PostgreSQL store (store.url) that every instance shares"));
        }
        let name = &cluster.instance;
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            errors.push(ConfigError::new("cluster.instance", "must be 1 to 64 letters, digits, '-', '_' or '.'"));
        }
        if cluster.lease < Duration::from_secs(3) || cluster.lease > Duration::from_secs(600) {
            errors.push(ConfigError::new("cluster.lease", "must be between 3 s and 10 min"));
        }
        if let Some(nats) = &cluster.nats
            && !nats.expose().split(',').all(|u| ["nats://", "tls://"].iter().any(|s| u.trim().starts_with(s)))
        {
            errors.push(ConfigError::new("cluster.nats", "must be NATS URLs (nats://host:4222 or tls://host:4222, comma-separated)"));
        }
    }
    if config.outbox.retry_initial.is_zero() {
        errors.push(ConfigError::new("outbox.retry_initial", "must be longer than zero"));
    }
    if config.outbox.retry_max < config.outbox.retry_initial {
        errors.push(ConfigError::new("outbox.retry_max", "must not be shorter than outbox.retry_initial"));
    }
}

/// Each bridge section, read and checked by its network (nothing built).
fn configure_bridges(config: &Config, errors: &mut Vec<ConfigError>) -> BTreeMap<String, Box<dyn Configured>> {
    let mut bridges: BTreeMap<String, Box<dyn Configured>> = BTreeMap::new();
    for (name, options) in &config.bridges {
        let path = format!("bridges.{name}");
        if !valid_name(name) {
            errors.push(ConfigError::new(&path, "bridge names use letters, digits, `-` and `_` (at most 64)"));
            continue;
        }
        match crate::bridges::configure(options) {
            Ok(b) => {
                bridges.insert(name.clone(), b);
            }
            Err(errs) => errors.extend(
                errs.into_iter()
                    .map(|e| ConfigError::new(if e.path.is_empty() { path.clone() } else { format!("{path}.{}", e.path) }, e.message)),
            ),
        }
    }
    bridges
}

/// Portal ids, their links' bridges and rooms, and no room linked twice.
fn check_portals(config: &Config, bridges: &BTreeMap<String, Box<dyn Configured>>, errors: &mut Vec<ConfigError>) {
    let mut portal_ids = HashMap::new();
    let mut linked: HashMap<&LinkConfig, String> = HashMap::new();
    for (i, p) in config.portals.iter().enumerate() {
        let path = format!("portals[{i}]");
        if !valid_name(&p.id) {
            errors.push(ConfigError::new(format!("{path}.id"), "portal ids use letters, digits, `-` and `_` (at most 64)"));
        } else if let Some(j) = portal_ids.insert(p.id.as_str(), i) {
            errors.push(ConfigError::new(format!("{path}.id"), format!("{:?} is already the id of portals[{j}]", p.id)));
        }
        if p.links.is_empty() {
            errors.push(ConfigError::new(format!("{path}.links"), "a portal needs at least one link"));
        }
        if let Some(tz) = &p.time_zone
            && causeway_core::time_zone::zone(tz).is_none()
        {
            errors.push(ConfigError::new(format!("{path}.time_zone"), format!("{tz:?} is not a time zone (e.g. Europe/Berlin)")));
        }
        let mut names = HashMap::new();
        for (k, c) in p.calendars.iter().enumerate() {
            let cpath = format!("{path}.calendars[{k}]");
            for (at, why) in c.check(&cpath) {
                errors.push(ConfigError::new(at, why));
            }
            if let Some(j) = names.insert(c.name.as_str(), k) {
                errors.push(ConfigError::new(format!("{cpath}.name"), format!("{:?} is already the name of calendars[{j}]", c.name)));
            }
        }
        if let Some(a) = &p.agenda
            && crate::calendar::agenda_time(a).is_none()
        {
            errors.push(ConfigError::new(format!("{path}.agenda"), format!("{a:?} is not a time of day such as 08:00")));
        }
        for (k, link) in p.links.iter().enumerate() {
            let lpath = format!("{path}.links[{k}]");
            match bridges.get(&link.bridge) {
                None if !config.bridges.contains_key(&link.bridge) => {
                    let known: Vec<&str> = config.bridges.keys().map(String::as_str).collect();
                    errors.push(ConfigError::new(
                        format!("{lpath}.bridge"),
                        format!("no bridge named {:?} (configured: {})", link.bridge, known.join(", ")),
                    ));
                }
                None => {} // the bridge itself is broken; reported above
                Some(b) => {
                    if let Err(m) = b.check_room(&link.room) {
                        errors.push(ConfigError::new(format!("{lpath}.room"), m));
                    }
                }
            }
            if let Some(other) = linked.insert(link, lpath.clone()) {
                errors.push(ConfigError::new(lpath, format!("bridge {:?} room {:?} is already linked at {other}", link.bridge, link.room)));
            }
        }
    }
}

/// Person ids and names, and no account claimed twice.
fn check_people(config: &Config, errors: &mut Vec<ConfigError>) {
    // Case-folded: ghost addresses ignore case.
    let mut person_ids = HashMap::new();
    let mut accounts: HashMap<(&str, &str), String> = HashMap::new();
    for (i, person) in config.people.iter().enumerate() {
        let path = format!("people[{i}]");
        if person.id.is_empty() {
            errors.push(ConfigError::new(format!("{path}.id"), "must not be empty"));
        } else if !valid_person_id(&person.id) {
            // No `:`, so a person id and a `bridge:account` never look alike.
            errors.push(ConfigError::new(format!("{path}.id"), "person ids use letters, digits, `-`, `_` and `.` (at most 64)"));
        } else if let Some(j) = person_ids.insert(person.id.to_ascii_lowercase(), i) {
            errors.push(ConfigError::new(format!("{path}.id"), format!("{:?} is already the id of people[{j}]", person.id)));
        }
        if person.name.trim().is_empty() {
            errors.push(ConfigError::new(format!("{path}.name"), "must not be empty"));
        }
        for (bridge, id) in &person.accounts {
            let apath = format!("{path}.accounts.{bridge}");
            if !config.bridges.contains_key(bridge) {
                errors.push(ConfigError::new(&apath, format!("no bridge named {bridge:?}")));
            }
            if let Some(other) = accounts.insert((bridge.as_str(), id.as_str()), apath.clone()) {
                errors.push(ConfigError::new(apath, format!("{id:?} on {bridge:?} already belongs to {other}")));
            }
        }
    }
}

/// `router.ignore`, `router.peer` and `directory.ldap`.
fn check_router_and_directory(config: &Config, errors: &mut Vec<ConfigError>) {
    for (bridge, patterns) in &config.router.ignore {
        let path = format!("router.ignore.{bridge}");
        if !config.bridges.contains_key(bridge) {
            errors.push(ConfigError::new(&path, format!("no bridge named {bridge:?}")));
        }
        for (i, p) in patterns.iter().enumerate() {
            if p.trim().is_empty() || p.chars().all(|c| c == '*') {
                errors.push(ConfigError::new(format!("{path}[{i}]"), "would ignore everyone on the bridge; name the other bridge's users"));
            }
        }
    }

    if let Some(peer) = &config.router.peer {
        if peer.secret.expose().len() < 16 {
            errors.push(ConfigError::new("router.peer.secret", "must be at least 16 characters (shared by both Causeways)"));
        }
        if peer.standby.is_some_and(|s| s.is_zero() || s > std::time::Duration::from_secs(600)) {
            errors.push(ConfigError::new("router.peer.standby", "must be between 1ms and 10m"));
        }
    }

    for e in config.archive.fetch.check("archive.fetch") {
        errors.push(ConfigError::new(e.path, e.message));
    }
    if config.archive.retention_every < Duration::from_secs(1) {
        errors.push(ConfigError::new("archive.retention_every", "must be at least 1s"));
    }
    if config.archive.max_file_bytes == 0 {
        errors.push(ConfigError::new("archive.max_file_bytes", "must be at least 1 (archive.files: link keeps no files)"));
    }

    if let Some(ldap) = &config.directory.ldap {
        for (path, message) in ldap.check(&|b| config.bridges.contains_key(b)) {
            errors.push(ConfigError::new(format!("directory.ldap.{path}"), message));
        }
    }
    if let Some(admin) = &config.admin {
        check_admin(config, admin, errors);
    }
}

fn check_admin(config: &Config, admin: &AdminConfig, errors: &mut Vec<ConfigError>) {
    if admin.listen == config.http.listen {
        errors.push(ConfigError::new("admin.listen", "must differ from http.listen: the networks must not reach the console"));
    }
    if admin.tokens.is_empty() {
        errors.push(ConfigError::new("admin.tokens", "name at least one token (causeway admin token makes one)"));
    }
    let mut names = HashSet::new();
    for (i, t) in admin.tokens.iter().enumerate() {
        if !valid_name(&t.name) {
            errors.push(ConfigError::new(format!("admin.tokens[{i}].name"), "letters, digits, - and _, at most 64"));
        } else if !names.insert(t.name.as_str()) {
            errors.push(ConfigError::new(format!("admin.tokens[{i}].name"), format!("{:?} is named twice", t.name)));
        }
        if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            errors.push(ConfigError::new(
                format!("admin.tokens[{i}].sha256"),
                "must be the token's SHA-256 as 64 hex digits (causeway admin token prints it), not the token",
            ));
        }
    }
    if admin.session_for < Duration::from_secs(60) || admin.session_for > Duration::from_secs(30 * 86400) {
        errors.push(ConfigError::new("admin.session_for", "must be between 1m and 30d"));
    }
    if admin.login_failures_per_minute == 0 {
        errors.push(ConfigError::new("admin.login_failures_per_minute", "must be at least 1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Fake(HashMap<&'static str, &'static str>);

    impl Source for Fake {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
        fn read(&self, path: &Path) -> std::io::Result<String> {
            self.0
                .get(path.to_str().unwrap_or(""))
                .map(|s| s.to_string())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
        }
    }

    fn env() -> Fake {
        Fake(HashMap::from([("TOKEN", "t0k"), ("/run/secret", "s3cret\n")]))
    }

    fn errors(yaml: &str) -> Vec<String> {
        match parse(yaml, &env()) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    const GOOD: &str = r#"
bridges:
  hooks:
    type: webhook
    endpoints:
      a:
        inbound: { token: "${TOKEN}" }
      b:
        outbound: { url: "http://127.0.0.1:9/x", hmac_secret_file: /run/secret }
portals:
  - id: ops
    links:
      - { bridge: hooks, room: a }
      - { bridge: hooks, room: b }
people:
  - id: alice
    name: Alice
    accounts: { hooks: alice }
"#;

    #[test]
    fn a_good_config_loads_with_defaults() {
        let loaded = parse(GOOD, &env()).unwrap();
        assert_eq!(loaded.config.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(loaded.config.store.sync, Sync::Full);
        assert_eq!(loaded.config.portals[0].links.len(), 2);
        assert_eq!(loaded.bridges["hooks"].kind(), "webhook");
    }

    #[test]
    fn admin_tokens_are_hashes_with_names_of_their_own() {
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let ok = format!(
            "{GOOD}admin:\n  tokens:\n    - {{ name: it, sha256: {hash} }}\n    - {{ name: audit, sha256_file: /run/hash, read_only: true }}\n"
        );
        let f = Fake(HashMap::from([("TOKEN", "t0k"), ("/run/secret", "s"), ("/run/hash", hash)]));
        let admin = parse(&ok, &f).unwrap_or_else(|e| panic!("{e}")).config.admin.unwrap();
        assert_eq!(admin.listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!((admin.tokens[1].sha256.as_str(), admin.tokens[1].read_only), (hash, true));
        assert_eq!(admin.session_for, Duration::from_secs(8 * 3600));

        let bad = format!(
            "{GOOD}http: {{ listen: 127.0.0.1:8081 }}\nadmin:\n  session_for: 1s\n  login_failures_per_minute: 0\n  tokens:\n    - {{ name: it, sha256: s3cret-token }}\n    - {{ name: it, sha256: {hash} }}\n    - {{ name: \"a b\", sha256: {hash} }}\n"
        );
        let found = errors(&bad);
        for want in [
            "admin.listen: must differ from http.listen",
            "admin.tokens[0].sha256: must be the token's SHA-256",
            "admin.tokens[1].name: \"it\" is named twice",
            "admin.tokens[2].name: letters, digits",
            "admin.session_for: must be between 1m and 30d",
            "admin.login_failures_per_minute: must be at least 1",
        ] {
            assert!(found.iter().any(|e| e.starts_with(want)), "{want:?} not in {found:?}");
        }
        assert!(errors(&format!("{GOOD}admin: {{ tokens: [] }}\n")).iter().any(|e| e.starts_with("admin.tokens: name at least one")));
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../config.example.yaml");
        struct Env;
        impl Source for Env {
            fn var(&self, _: &str) -> Option<String> {
                None
            }
            fn read(&self, p: &Path) -> std::io::Result<String> {
                Err(std::io::Error::new(std::io::ErrorKind::NotFound, p.display().to_string()))
            }
        }
        if let Err(e) = parse(text, &Env) {
            panic!("config.example.yaml: {e}");
        }
    }

    #[test]
    fn the_example_documents_every_option() {
        // The example as it is, with the commented LDAP directory in use
        // (so that its options are seen too). Bridges' options are each
        // bridge crate's to check.
        let text = include_str!("../config.example.yaml");
        let ldap = "directory:\n  ldap:\n    url: ldap://127.0.0.1\n    base: dc=example\n    avatar: \"{labeledURI}\"\n    accounts: { hooks: \"{uid}\" }\n";
        let admin = format!("admin:\n  tokens: [{{ name: it, sha256: \"{}\" }}]\n", "0".repeat(64));
        let ldap = format!("{ldap}{admin}");
        let f = Fake(HashMap::new());
        let loaded = parse(&format!("{text}\n{ldap}"), &f).unwrap_or_else(|e| panic!("{e}"));
        let mut all = serde_json::to_value(&loaded.config).unwrap();
        all.as_object_mut().unwrap().remove("bridges");
        let missing = causeway_core::testing::unnamed(&all, &causeway_core::testing::uncommented(text));
        assert!(missing.is_empty(), "config.example.yaml does not document {missing:?}");
    }

    #[test]
    fn a_portal_keeps_its_files_unless_it_or_the_archive_says_links() {
        let text = GOOD
            .replace("  - id: ops\n", "  - id: ops\n    archive: { files: link }\n")
            .replace("      - { bridge: hooks, room: b }\n", "")
            .replace("people:", "  - id: other\n    links: [{ bridge: hooks, room: b }]\npeople:");
        let loaded = parse(&text, &env()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.config.files_of("ops"), FilesMode::Link);
        assert_eq!(loaded.config.files_of("other"), FilesMode::Keep);
        assert_eq!(loaded.config.files_of("a-direct-conversation"), FilesMode::Keep);
        let links = parse(&format!("{text}archive: {{ files: link }}\n"), &env()).unwrap();
        assert_eq!(links.config.files_of("other"), FilesMode::Link);
        assert_eq!(loaded.config.files_dir(), PathBuf::from("archive-files"));
    }

    #[test]
    fn a_key_with_nothing_under_it_takes_the_defaults() {
        let text = format!("{GOOD}router:\n  presence:\n    # idle_after: 15m\noutbox:\n");
        let loaded = parse(&text, &env()).unwrap();
        assert_eq!(loaded.config.router.presence.idle_after, None);
        assert_eq!(loaded.config.outbox.retry_initial, default_retry_initial());
    }

    #[test]
    fn environment_and_files() {
        let f = env();
        assert_eq!(expand("a${TOKEN}b", &f).unwrap(), "at0kb");
        assert_eq!(expand("${NOPE:-dflt}", &f).unwrap(), "dflt");
        assert_eq!(expand("cost $$5 and $x", &f).unwrap(), "cost $5 and $x");
        assert_eq!(expand("${NOPE}", &f).unwrap_err(), "environment variable NOPE is not set");
        assert!(expand("${OPEN", &f).unwrap_err().contains("unclosed"));
        assert!(expand("${a b}", &f).unwrap_err().contains("not a valid"));
    }

    #[test]
    fn mistakes_name_their_option() {
        let cases: &[(&str, &str)] = &[
            ("", "the config is empty"),
            ("- a\n- b\n", "must be a mapping"),
            ("bridges: [unclosed", "invalid YAML"),
            ("htttp: {}\n", "unknown field `htttp`"),
            ("http: { listen: nowhere }\n", "http.listen: invalid socket address"),
            ("outbox: { retry_initial: soon }\n", "outbox.retry_initial"),
            ("store: { max_batch: 0 }\n", "store.max_batch: must be at least 1"),
            ("store: { url: \"mysql://x/y\" }\n", "store.url: must be a PostgreSQL URL"),
            ("cluster: { instance: a }\n", "cluster: needs a PostgreSQL store"),
            ("store: { url: \"postgres://h/d\" }\ncluster: { instance: \"a b\" }\n", "cluster.instance: must be 1 to 64"),
            ("store: { url: \"postgres://h/d\" }\ncluster: { instance: a, lease: 1s }\n", "cluster.lease: must be between"),
            ("store: { url: \"postgres://h/d\" }\ncluster: { instance: a, nats: \"http://h:4222\" }\n", "cluster.nats: must be NATS URLs"),
            ("archive: { max_file_bytes: 0 }\n", "archive.max_file_bytes: must be at least 1"),
            ("archive: { fetch: { allow: [nowhere] } }\n", "archive.fetch.allow[0]"),
            ("archive: { files: copy }\n", "archive.files"),
            ("archive: { retention: never }\n", "archive.retention: \"never\" is neither `forever` nor a duration"),
            ("archive: { retention: 0d }\n", "archive.retention: must be longer than zero"),
            ("archive: { retention_every: 10ms }\n", "archive.retention_every: must be at least 1s"),
            ("portals: [{ id: p, links: [{ bridge: nope, room: r }] }]\n", "portals[0].links[0].bridge: no bridge named \"nope\""),
            ("portals: [{ id: p, links: [] }]\n", "portals[0].links: a portal needs at least one link"),
            ("router: { ignore: { nope: [\"@x:y\"] } }\n", "router.ignore.nope: no bridge named \"nope\""),
            ("portals: [{ id: 'a b', links: [] }]\n", "portals[0].id"),
            ("bridges: { x: { type: carrier-pigeon } }\n", "bridges.x.type: unknown bridge type \"carrier-pigeon\""),
            ("bridges: { x: { endpoints: {} } }\n", "bridges.x: missing `type`"),
            ("bridges: { x: { type: webhook, token: \"${MISSING}\" } }\n", "bridges.x.token: environment variable MISSING is not set"),
            ("bridges: { x: { type: webhook, a: 1, a_file: /run/secret } }\n", "bridges.x.a_file: give either `a` or `a_file`"),
            ("bridges: { x: { type: webhook, k_file: /nope } }\n", "bridges.x.k_file: cannot read /nope"),
            ("people: [{ id: a, name: A, accounts: { ghost: a } }]\n", "people[0].accounts.ghost: no bridge named \"ghost\""),
            ("people: [{ id: 'xmpp:a', name: A }]\n", "people[0].id: person ids use"),
            ("people: [{ id: Bob, name: B }, { id: bob, name: b }]\n", "people[1].id: \"bob\" is already the id of people[0]"),
        ];
        for (yaml, want) in cases {
            let got = errors(yaml);
            assert!(got.iter().any(|e| e.contains(want)), "config {yaml:?}: wanted {want:?}, got {got:?}");
        }
    }

    #[test]
    fn duplicates_are_reported_all_at_once() {
        let yaml = format!("{GOOD}  - id: alice\n    name: ''\n    accounts: {{ hooks: alice }}\n  - id: bob\n    name: Bob\n");
        let got = errors(&yaml);
        for want in [
            "people[1].id: \"alice\" is already the id of people[0]",
            "people[1].name: must not be empty",
            "people[1].accounts.hooks: \"alice\" on \"hooks\" already belongs to people[0].accounts.hooks",
        ] {
            assert!(got.iter().any(|e| e.contains(want)), "wanted {want:?}, got {got:?}");
        }
        let twice = GOOD.replace("      - { bridge: hooks, room: b }", "      - { bridge: hooks, room: a }");
        assert!(errors(&twice).iter().any(|e| e.contains("portals[0].links[1]: bridge \"hooks\" room \"a\" is already linked")));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = parse(&text, &env());
        }

        #[test]
        fn arbitrary_yaml_structure_never_panics(
            key in "[a-z_]{1,12}", value in "[ -~]{0,40}", nested in prop::bool::ANY
        ) {
            let yaml = if nested {
                format!("bridges:\n  b:\n    type: webhook\n    {key}: {value:?}\nportals:\n  - id: p\n    links: [{{bridge: b, room: {value:?}}}]\n")
            } else {
                format!("{key}: {value:?}\n")
            };
            let _ = parse(&yaml, &env());
        }
    }
}
