//! Attachments of incoming mail, kept on disk and served to the other
//! networks by signed links (`<url>/files/<sha256>/<name>?sig=…`).

use std::path::{Path, PathBuf};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Content types shown in place; everything else is a download, so that no
/// attachment runs as a page on Causeway's address.
const INLINE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp", "audio/ogg", "audio/mpeg", "video/mp4", "video/webm", "text/plain"];

pub struct Files {
    dir: PathBuf,
    base: String,
    key: Vec<u8>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    mime: String,
}

impl Files {
    pub fn new(dir: &Path, base: &str, key: Vec<u8>) -> std::io::Result<Files> {
        std::fs::create_dir_all(dir)?;
        Ok(Files { dir: dir.to_path_buf(), base: base.trim_end_matches('/').to_string(), key })
    }

    fn sig(&self, hash: &str) -> String {
        causeway_core::sign::sign_hex(&self.key, hash.as_bytes())
    }

    /// Keep a file (named by its content, so the same file is kept once)
    /// and return its link.
    pub fn store(&self, name: &str, mime: &str, bytes: &[u8]) -> std::io::Result<String> {
        let hash = hex::encode(Sha256::digest(bytes));
        let path = self.dir.join(&hash);
        if !path.exists() {
            let tmp = self.dir.join(format!("{hash}.tmp"));
            std::fs::write(&tmp, bytes)?;
            std::fs::write(self.dir.join(format!("{hash}.json")), serde_json::to_vec(&Meta { mime: mime.to_string() })?)?;
            std::fs::rename(tmp, &path)?;
        }
        let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
        Ok(format!("{}/files/{hash}/{name}?sig={}", self.base, self.sig(&hash)))
    }

    /// Serve a kept file to whoever has its signed link.
    pub fn serve(&self, hash: &str, sig: Option<&str>) -> Response {
        let signed = sig.is_some_and(|s| causeway_core::sign::verify_hex(&self.key, hash.as_bytes(), s));
        if !signed || hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return (StatusCode::FORBIDDEN, "not a link Causeway handed out").into_response();
        }
        let Ok(bytes) = std::fs::read(self.dir.join(hash)) else {
            return (StatusCode::NOT_FOUND, "no such file").into_response();
        };
        let mime = std::fs::read(self.dir.join(format!("{hash}.json")))
            .ok()
            .and_then(|m| serde_json::from_slice::<Meta>(&m).ok())
            .map(|m| m.mime)
            .unwrap_or_default();
        let (ct, disposition) = if INLINE_TYPES.contains(&mime.as_str()) { (mime, "inline") } else { ("application/octet-stream".to_string(), "attachment") };
        (
            [
                (header::CONTENT_TYPE, ct),
                (header::CONTENT_DISPOSITION, disposition.to_string()),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
                (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_string()),
            ],
            bytes,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_kept_once_and_served_only_by_signed_link() {
        let dir = tempfile_dir();
        let f = Files::new(&dir, "http://127.0.0.1:8080/bridges/email/", b"k".to_vec()).unwrap();
        let a = f.store("report (final).pdf", "application/pdf", b"%PDF").unwrap();
        let b = f.store("again.pdf", "application/pdf", b"%PDF").unwrap();
        assert!(a.starts_with("http://127.0.0.1:8080/bridges/email/files/"), "{a}");
        assert!(a.contains("/report__final_.pdf?sig="), "{a}");
        let hash = a.split('/').nth(6).unwrap();
        assert_eq!(b.split('/').nth(6).unwrap(), hash, "same content, same file");
        let sig = a.split("sig=").nth(1).unwrap();
        assert_eq!(f.serve(hash, Some(sig)).status(), StatusCode::OK);
        assert_eq!(f.serve(hash, Some("00")).status(), StatusCode::FORBIDDEN);
        assert_eq!(f.serve(hash, None).status(), StatusCode::FORBIDDEN);
        assert_eq!(f.serve("../../etc/passwd", Some(sig)).status(), StatusCode::FORBIDDEN);
        let r = f.serve(hash, Some(sig));
        assert_eq!(r.headers()[header::CONTENT_DISPOSITION], "attachment", "a PDF is a download");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("causeway-files-{}", causeway_core::new_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
