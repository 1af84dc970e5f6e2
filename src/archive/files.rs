//! Files kept in the archive (docs/archive.md): each attachment of an
//! archived message is fetched (through the guarded fetcher, as every link
//! someone else chose) and written once per content under its SHA-256, so
//! that exports still have it after the network it came from deleted it.
//!
//! The store notes every attachment as waiting in the transaction that
//! archives its message; the [`Keeper`] takes them in order, one at a
//! time, and writes down what became of each: kept, a link only (the
//! portal keeps links), refused (too large, over the quota, where the link
//! leads), or given up after failures of its server.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use causeway_core::Attachment;
use causeway_core::fetch::{FetchError, Fetcher};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, watch};

use crate::config::{Config, FilesMode};
use crate::metrics::{Metrics, ResultLabel};
use crate::store::Store;

/// Tries of a file whose server does not answer before it is given up.
pub const MAX_TRIES: i64 = 8;
/// Files taken from the store at a time.
const BATCH: u32 = 32;

/// An attachment waiting to be fetched.
#[derive(Clone, Debug)]
pub struct Waiting {
    pub seq: i64,
    pub n: i64,
    pub tries: i64,
    pub portal: String,
    pub attachment: Attachment,
}

/// A file the archive keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub sha256: String,
    pub size: u64,
    pub mime: Option<String>,
}

/// What became of a waiting file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Kept(Kept),
    /// The portal keeps links only.
    Link,
    /// Not to be kept: why.
    Refused(String),
    /// Its server did not answer: tried again at `next_ms`.
    Retry {
        next_ms: i64,
        reason: String,
    },
    /// Its server did not answer [`MAX_TRIES`] times.
    Failed(String),
}

/// Where the file of `sha256` is under `dir`: `ab/abcdef…`.
pub fn path(dir: &Path, sha256: &str) -> Option<PathBuf> {
    let hex = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    hex.then(|| dir.join(&sha256[..2]).join(sha256))
}

/// The bytes of a kept file.
pub fn read(dir: &Path, sha256: &str) -> std::io::Result<Vec<u8>> {
    let p = path(dir, sha256).ok_or_else(|| std::io::Error::other(format!("{sha256:?} is not a SHA-256")))?;
    std::fs::read(p)
}

/// Write `bytes` as the file of `sha256`, whole or not at all.
fn write(dir: &Path, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
    let to = path(dir, sha256).ok_or_else(|| std::io::Error::other("not a SHA-256"))?;
    let folder = to.parent().unwrap_or(dir);
    std::fs::create_dir_all(folder)?;
    let mut tmp = tempfile::NamedTempFile::new_in(folder)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&to).map_err(|e| e.error)?;
    Ok(())
}

/// Fetches and keeps the archive's files.
pub struct Keeper {
    store: Arc<dyn Store>,
    fetcher: Fetcher,
    dir: PathBuf,
    modes: HashMap<String, FilesMode>,
    default: FilesMode,
    max_bytes: u64,
    quota: u64,
    /// Held from looking a content up to noting it kept, and by retention
    /// while it deletes: a content is never deleted as it is kept again.
    lock: Arc<Mutex<()>>,
    metrics: Arc<Metrics>,
}

/// A fetched file, not yet kept.
struct Got {
    kept: Kept,
    bytes: Vec<u8>,
}

impl Keeper {
    pub fn new(config: &Config, store: Arc<dyn Store>, lock: Arc<Mutex<()>>, metrics: Arc<Metrics>) -> Result<Keeper, String> {
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
            lock,
            metrics,
        })
    }

    /// Keep files until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let waiting = match self.store.files_waiting(causeway_core::now_ms(), BATCH).await {
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
                let _lock = self.lock.lock().await;
                let (outcome, wrote) = match got {
                    Ok(got) => self.write(got).await,
                    Err(outcome) => (outcome, None),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sha256_names_a_file_and_it_stays_inside_the_folder() {
        let dir = Path::new("/var/lib/causeway/archive-files");
        let sha = hex::encode(Sha256::digest(b"x"));
        assert_eq!(path(dir, &sha).unwrap(), dir.join(&sha[..2]).join(&sha));
        for bad in ["", "../../etc/passwd", &sha.to_uppercase(), &format!("{}/..", &sha[..61]), &sha[..63]] {
            assert!(path(dir, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_file_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let sha = hex::encode(Sha256::digest(b"hello"));
        write(dir.path(), &sha, b"hello").unwrap();
        assert_eq!(read(dir.path(), &sha).unwrap(), b"hello");
        let left: Vec<_> = std::fs::read_dir(dir.path().join(&sha[..2])).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }
}
