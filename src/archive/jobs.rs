//! The archive's background work: the keeper of files that crossed
//! ([`Keeper`], see [`super::files`]) and retention ([`Pruner`], see
//! [`super::retention`]). They take the files' lock ([`Lock`]) so that a
//! content is never deleted while it is being kept again.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use causeway_core::fetch::{FetchError, Fetcher};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::files::{Kept, Lock, MAX_TRIES, Outcome, Waiting, path, write};
use super::retention::{BATCH, Report, Retention};
use crate::config::{Config, FilesMode};
use crate::metrics::{FormatLabel, Metrics, ResultLabel};
use crate::store::Store;
use anyhow::Context;

/// Files taken from the store at a time.
const FILES_AT_ONCE: u32 = 32;

/// Fetches and keeps the archive's files.
pub struct Keeper {
    store: Arc<dyn Store>,
    fetcher: Fetcher,
    dir: PathBuf,
    modes: HashMap<String, FilesMode>,
    default: FilesMode,
    max_bytes: u64,
    quota: u64,
    lock: Lock,
    metrics: Arc<Metrics>,
}

/// A fetched file, not yet kept.
struct Got {
    kept: Kept,
    bytes: Vec<u8>,
}

impl Keeper {
    pub fn new(config: &Config, store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Result<Keeper, String> {
        let fetcher = Fetcher::new(&config.archive.fetch, Duration::from_secs(10), Duration::from_secs(120))?;
        let modes = config.portals.iter().map(|p| (p.id.clone(), config.files_of(&p.id))).collect();
        Ok(Keeper {
            store,
            fetcher,
            dir: config.files_dir(),
            modes,
            default: config.archive.files,
            max_bytes: config.archive.max_file_bytes,
            quota: config.archive.files_quota_bytes,
            lock: Lock::new(&config.files_dir()),
            metrics,
        })
    }

    /// Keep files until `stop`.
    pub async fn run(self: std::sync::Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let waiting = match self.store.files_waiting(causeway_core::now_ms(), FILES_AT_ONCE).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!("archive files: {e}");
                    Vec::new()
                }
            };
            if waiting.is_empty() {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            for w in waiting {
                let got = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    g = self.fetch(&w) => g,
                };
                // The lock is held until what became of the file is noted.
                let (outcome, wrote, _lock) = match got {
                    Ok(got) => match self.lock.hold().await {
                        Ok(lock) => {
                            let (outcome, wrote) = self.write(got).await;
                            (outcome, wrote, Some(lock))
                        }
                        Err(e) => {
                            let reason = format!("cannot lock {}: {e}", self.dir.display());
                            (Outcome::Retry { next_ms: causeway_core::now_ms() + 60_000, reason }, None, None)
                        }
                    },
                    Err(outcome) => (outcome, None, None),
                };
                let new = match self.store.note_file(w.seq, w.n, &outcome).await {
                    Ok(new) => new,
                    Err(e) => {
                        // Waits as it was: taken again at the next round.
                        tracing::warn!(seq = w.seq, "archive files: cannot note what became of a file: {e}");
                        false
                    }
                };
                if let (Some(path), false) = (wrote, new) {
                    // Its message is gone (retention) or the note failed.
                    let _ = std::fs::remove_file(path);
                }
                let result = match &outcome {
                    Outcome::Kept(_) if new => "kept",
                    Outcome::Kept(_) => "duplicate",
                    Outcome::Link => "link",
                    Outcome::Refused(why) => {
                        tracing::info!(seq = w.seq, "archive files: not kept: {why}");
                        "refused"
                    }
                    Outcome::Failed(why) => {
                        tracing::warn!(seq = w.seq, "archive files: given up: {why}");
                        "failed"
                    }
                    Outcome::Retry { .. } => continue,
                };
                self.metrics.archive_files.get_or_create(&ResultLabel { result: result.into() }).inc();
                if let Ok(bytes) = self.store.file_bytes().await {
                    self.metrics.archive_file_bytes.set(bytes as i64);
                }
            }
        }
    }

    /// Fetch one file, or what becomes of it instead.
    async fn fetch(&self, w: &Waiting) -> Result<Got, Outcome> {
        if self.modes.get(&w.portal).copied().unwrap_or(self.default) == FilesMode::Link {
            return Err(Outcome::Link);
        }
        if w.attachment.size.is_some_and(|s| s > self.max_bytes) {
            return Err(Outcome::Refused(format!("larger than archive.max_file_bytes ({} bytes)", self.max_bytes)));
        }
        let fetched = match self.fetcher.fetch(&w.attachment.url, self.max_bytes).await {
            Ok(f) => f,
            Err(FetchError::Refused(r)) => return Err(Outcome::Refused(format!("{}: {}", r.reason, r.message))),
            Err(FetchError::Unavailable(e)) if w.tries + 1 >= MAX_TRIES => return Err(Outcome::Failed(e)),
            Err(FetchError::Unavailable(e)) => {
                let wait = Duration::from_secs(30).saturating_mul(1 << w.tries.clamp(0, 7)).min(Duration::from_secs(3600));
                return Err(Outcome::Retry { next_ms: causeway_core::now_ms() + wait.as_millis() as i64, reason: e });
            }
        };
        let sha256 = hex::encode(Sha256::digest(&fetched.bytes));
        let size = fetched.bytes.len() as u64;
        let mime = w.attachment.mime.clone().or(fetched.content_type);
        Ok(Got { kept: Kept { sha256, size, mime }, bytes: fetched.bytes })
    }

    /// Write a fetched file unless its content is kept already or the
    /// quota is full (under the lock); what became of it, and the file
    /// written.
    async fn write(&self, got: Got) -> (Outcome, Option<PathBuf>) {
        let retry = |reason: String| Outcome::Retry { next_ms: causeway_core::now_ms() + 60_000, reason };
        let Got { kept, bytes } = got;
        match self.store.blob_known(&kept.sha256).await {
            Ok(true) => return (Outcome::Kept(kept), None),
            Ok(false) => {}
            Err(e) => return (retry(e.to_string()), None),
        }
        match self.store.file_bytes().await {
            Ok(b) if b.saturating_add(kept.size) > self.quota => {
                return (Outcome::Refused(format!("over archive.files_quota_bytes ({} bytes)", self.quota)), None);
            }
            Ok(_) => {}
            Err(e) => return (retry(e.to_string()), None),
        }
        let (dir, sha) = (self.dir.clone(), kept.sha256.clone());
        match tokio::task::spawn_blocking(move || write(&dir, &sha, &bytes)).await {
            Ok(Ok(())) => {
                let at = path(&self.dir, &kept.sha256);
                (Outcome::Kept(kept), at)
            }
            Ok(Err(e)) => {
                tracing::error!(dir = %self.dir.display(), "archive files: cannot write a file: {e}");
                (retry(format!("cannot write: {e}")), None)
            }
            Err(e) => (retry(e.to_string()), None),
        }
    }
}

/// Applies retention, now and then.
pub struct Pruner {
    store: Arc<dyn Store>,
    own: HashMap<String, Retention>,
    default: Retention,
    /// The longest any portal of a bridge keeps (its per-message state
    /// goes after that).
    bridges: BTreeMap<String, Retention>,
    every: Duration,
    files_dir: PathBuf,
    files_lock: Lock,
    metrics: Option<Arc<Metrics>>,
    /// Exports by format counted so far (the log is the truth).
    exports_seen: std::sync::Mutex<HashMap<String, u64>>,
}

impl Pruner {
    pub fn new(config: &Config, store: Arc<dyn Store>, metrics: Option<Arc<Metrics>>) -> Pruner {
        let default = config.archive.retention;
        let own: HashMap<String, Retention> = config.portals.iter().map(|p| (p.id.clone(), config.retention_of(&p.id))).collect();
        let mut bridges: BTreeMap<String, Retention> = config.bridges.keys().map(|b| (b.clone(), default)).collect();
        for p in &config.portals {
            for l in &p.links {
                let r = bridges.entry(l.bridge.clone()).or_insert(default);
                *r = (*r).max(own[&p.id]);
            }
        }
        Pruner {
            store,
            own,
            default,
            bridges,
            every: config.archive.retention_every,
            files_dir: config.files_dir(),
            files_lock: Lock::new(&config.files_dir()),
            metrics,
            exports_seen: Default::default(),
        }
    }

    fn retention_of(&self, portal: &str) -> Retention {
        self.own.get(portal).copied().unwrap_or(self.default)
    }

    /// One pass: every portal with a retention, then the bridges' state.
    pub async fn once(&self, mut progress: impl FnMut(&str, u64)) -> anyhow::Result<Report> {
        let now = causeway_core::now_ms();
        let before = |r: Retention| match r {
            Retention::For(d) => Some(now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
            Retention::Forever => None,
        };
        let mut report = Report::default();
        for portal in self.store.archived_portals(None).await? {
            let Some(before_ms) = before(self.retention_of(&portal)) else { continue };
            let mut deleted = 0;
            loop {
                let pruned = {
                    let _files = self.files_lock.hold().await.with_context(|| format!("cannot lock {}", self.files_dir.display()))?;
                    let pruned = self.store.prune(&portal, before_ms, BATCH).await?;
                    report.files += self.delete_files(&pruned.blobs).await;
                    pruned
                };
                deleted += pruned.events;
                if let Some(m) = &self.metrics {
                    m.archive_pruned.inc_by(pruned.events);
                }
                if pruned.events > 0 {
                    progress(&portal, deleted);
                }
                if pruned.events < u64::from(BATCH) {
                    break;
                }
            }
            if deleted > 0 {
                tracing::info!(portal, events = deleted, retention = %self.retention_of(&portal), "retention: deleted from the archive");
                report.portals.insert(portal, deleted);
            }
        }
        for (bridge, r) in &self.bridges {
            if let Some(before_ms) = before(*r) {
                report.message_state += self.store.prune_message_state(bridge, before_ms).await?;
            }
        }
        Ok(report)
    }

    /// Delete the files of contents no longer kept; how many.
    async fn delete_files(&self, blobs: &[String]) -> u64 {
        let mut n = 0;
        for sha in blobs {
            let Some(path) = path(&self.files_dir, sha) else { continue };
            match tokio::fs::remove_file(&path).await {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), "retention: a file not deleted: {e}"),
            }
        }
        n
    }

    /// The archive's numbers as metrics.
    async fn measure(&self) {
        let Some(m) = &self.metrics else { return };
        match self.store.archive_stats().await {
            Ok(s) => {
                m.archive_events.set(s.events as i64);
                m.archive_bytes.set(s.bytes as i64);
                m.archive_holds.set(s.holds as i64);
                m.archive_file_bytes.set(s.file_bytes as i64);
                let mut seen = self.exports_seen.lock().unwrap_or_else(|e| e.into_inner());
                for (format, n) in s.exports {
                    let was = seen.insert(format.clone(), n).unwrap_or(0);
                    m.archive_exports.get_or_create(&FormatLabel { format }).inc_by(n.saturating_sub(was));
                }
            }
            Err(e) => tracing::warn!("archive: cannot read its size: {e}"),
        }
    }

    /// Apply retention every `archive.retention_every` (the first time at
    /// once), and measure the archive every minute, until `stop`.
    pub async fn run(self: std::sync::Arc<Self>, mut stop: watch::Receiver<bool>) {
        let measure_every = Duration::from_secs(60).min(self.every);
        let mut next_prune = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_prune {
                if let Err(e) = self.once(|_, _| {}).await {
                    tracing::warn!("retention: {e:#}");
                }
                next_prune = tokio::time::Instant::now() + self.every;
            }
            self.measure().await;
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(measure_every) => {}
            }
        }
    }
}
