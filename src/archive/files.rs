//! Files kept in the archive (docs/archive.md): each attachment of an
//! archived message is fetched (through the guarded fetcher, as every link
//! someone else chose) and written once per content under its SHA-256, so
//! that exports still have it after the network it came from deleted it.
//!
//! The store notes every attachment as waiting in the transaction that
//! archives its message; the keeper ([`super::jobs::Keeper`]) takes them
//! in order, one at a time, and writes down what became of each: kept, a
//! link only (the portal keeps links), refused (too large, over the quota,
//! where the link leads), or given up after failures of its server. This
//! module holds what they are and where they lie.

use std::io::Write;
use std::path::{Path, PathBuf};

use causeway_core::Attachment;

/// Tries of a file whose server does not answer before it is given up.
pub const MAX_TRIES: i64 = 8;

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

/// Held while the archive's files are written or deleted: by the keeper
/// from looking a content up to noting it kept, by retention while it
/// deletes, so that a content is never deleted as it is kept again. A lock
/// on `files_dir/.lock`, so that `causeway archive prune` beside a running
/// daemon waits for it too.
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    pub fn new(dir: &Path) -> Lock {
        Lock { path: dir.join(".lock") }
    }

    /// Wait for the lock; held until the file returned is dropped.
    pub async fn hold(&self) -> std::io::Result<std::fs::File> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
            f.lock()?;
            Ok(f)
        })
        .await
        .map_err(std::io::Error::other)?
    }
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
pub fn write(dir: &Path, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
    let to = path(dir, sha256).ok_or_else(|| std::io::Error::other("not a SHA-256"))?;
    let folder = to.parent().unwrap_or(dir);
    std::fs::create_dir_all(folder)?;
    let mut tmp = tempfile::NamedTempFile::new_in(folder)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&to).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn only_a_sha256_names_a_file_and_it_stays_inside_the_folder() {
        let dir = Path::new("/var/lib/causeway/archive-files");
        let sha = hex::encode(Sha256::digest(b"x"));
        assert_eq!(path(dir, &sha).unwrap(), dir.join(&sha[..2]).join(&sha));
        for bad in ["", "../../etc/passwd", &sha.to_uppercase(), &format!("{}/..", &sha[..61]), &sha[..63]] {
            assert!(path(dir, bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn one_holds_the_lock_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let lock = Lock::new(&dir.path().join("files"));
        let held = lock.hold().await.unwrap();
        let again = tokio::spawn(async move { lock.hold().await.map(|_| ()) });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!again.is_finished(), "a second holder waits");
        drop(held);
        again.await.unwrap().unwrap();
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
