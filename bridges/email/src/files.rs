//! Attachments of incoming mail, kept on disk and served to the other
//! networks by signed links (`<url>/files/<sha256>/<name>?sig=…`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Content types shown in place; everything else is a download, so that no
/// attachment runs as a page on Causeway's address.
const INLINE_TYPES: &[&str] =
    &["image/png", "image/jpeg", "image/gif", "image/webp", "audio/ogg", "audio/mpeg", "video/mp4", "video/webm", "text/plain"];

pub struct Files {
    dir: PathBuf,
    base: String,
    key: Vec<u8>,
    /// Places for files served at once; kept until the whole file is out.
    places: Arc<tokio::sync::Semaphore>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    mime: String,
}

/// Files served at once; more wait up to [`WAIT`] for a place, then get 503.
pub const CONCURRENCY: usize = 16;
const WAIT: Duration = Duration::from_secs(2);
/// Read and sent this much at a time.
const CHUNK: usize = 64 * 1024;

impl Files {
    pub fn new(dir: &Path, base: &str, key: Vec<u8>, concurrency: usize) -> std::io::Result<Files> {
        std::fs::create_dir_all(dir)?;
        let places = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        Ok(Files { dir: dir.to_path_buf(), base: base.trim_end_matches('/').to_string(), key, places })
    }

    fn sig(&self, hash: &str) -> String {
        causeway_core::sign::sign_hex(&self.key, hash.as_bytes())
    }

    /// Keep a file (named by its content, so the same file is kept once)
    /// and return its link.
    pub async fn store(&self, name: &str, mime: &str, bytes: &[u8]) -> std::io::Result<String> {
        let hash = hex::encode(Sha256::digest(bytes));
        let path = self.dir.join(&hash);
        if !tokio::fs::try_exists(&path).await? {
            let tmp = self.dir.join(format!("{hash}.tmp"));
            tokio::fs::write(&tmp, bytes).await?;
            tokio::fs::write(self.dir.join(format!("{hash}.json")), serde_json::to_vec(&Meta { mime: mime.to_string() })?).await?;
            tokio::fs::rename(tmp, &path).await?;
        }
        let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
        Ok(format!("{}/files/{hash}/{name}?sig={}", self.base, self.sig(&hash)))
    }

    /// Serve a kept file to whoever has its signed link, read from disk a
    /// chunk at a time as the reader takes it.
    pub async fn serve(&self, hash: &str, sig: Option<&str>) -> Response {
        let signed = sig.is_some_and(|s| causeway_core::sign::verify_hex(&self.key, hash.as_bytes(), s));
        if !signed || hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return (StatusCode::FORBIDDEN, "not a link Causeway handed out").into_response();
        }
        let Ok(Ok(place)) = tokio::time::timeout(WAIT, self.places.clone().acquire_owned()).await else {
            let mut r = (StatusCode::SERVICE_UNAVAILABLE, "too many files at once; try again shortly").into_response();
            r.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
            return r;
        };
        let Ok(file) = tokio::fs::File::open(self.dir.join(hash)).await else {
            return (StatusCode::NOT_FOUND, "no such file").into_response();
        };
        let len = file.metadata().await.map(|m| m.len()).ok();
        let mime = tokio::fs::read(self.dir.join(format!("{hash}.json")))
            .await
            .ok()
            .and_then(|m| serde_json::from_slice::<Meta>(&m).ok())
            .map(|m| m.mime)
            .unwrap_or_default();
        let (ct, disposition) =
            if INLINE_TYPES.contains(&mime.as_str()) { (mime, "inline") } else { ("application/octet-stream".to_string(), "attachment") };
        let chunks = futures_util::stream::try_unfold((file, place), |(mut file, place)| async move {
            let mut buf = bytes::BytesMut::with_capacity(CHUNK);
            match tokio::io::AsyncReadExt::read_buf(&mut file, &mut buf).await? {
                0 => Ok::<_, std::io::Error>(None),
                _ => Ok(Some((buf.freeze(), (file, place)))),
            }
        });
        let mut r = (
            [
                (header::CONTENT_TYPE, ct),
                (header::CONTENT_DISPOSITION, disposition.to_string()),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
                (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_string()),
            ],
            axum::body::Body::from_stream(chunks),
        )
            .into_response();
        if let Some(len) = len {
            r.headers_mut().insert(header::CONTENT_LENGTH, axum::http::HeaderValue::from(len));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_kept_once_and_served_only_by_signed_link() {
        let dir = tempfile_dir();
        let f = Files::new(&dir, "http://127.0.0.1:8080/bridges/email/", b"k".to_vec(), 1).unwrap();
        let a = f.store("report (final).pdf", "application/pdf", b"%PDF").await.unwrap();
        let b = f.store("again.pdf", "application/pdf", b"%PDF").await.unwrap();
        assert!(a.starts_with("http://127.0.0.1:8080/bridges/email/files/"), "{a}");
        assert!(a.contains("/report__final_.pdf?sig="), "{a}");
        let hash = a.split('/').nth(6).unwrap();
        assert_eq!(b.split('/').nth(6).unwrap(), hash, "same content, same file");
        let sig = a.split("sig=").nth(1).unwrap();
        assert_eq!(f.serve(hash, Some(sig)).await.status(), StatusCode::OK);
        assert_eq!(f.serve(hash, Some("00")).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(f.serve(hash, None).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(f.serve("../../etc/passwd", Some(sig)).await.status(), StatusCode::FORBIDDEN);
        let r = f.serve(hash, Some(sig)).await;
        assert_eq!(r.headers()[header::CONTENT_DISPOSITION], "attachment", "a PDF is a download");
        // One place (concurrency 1): while that answer is open, the next waits, then gets 503.
        assert_eq!(f.serve(hash, Some(sig)).await.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"%PDF");
        assert_eq!(f.serve(hash, Some(sig)).await.status(), StatusCode::OK, "the place is free once the file is out");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("causeway-files-{}", causeway_core::new_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
