//! The fuzz targets' inputs (`fuzz/seeds/`, and `fuzz/regressions/`: every
//! input that once crashed a target) run through the same entry points as
//! the targets, in the test suite: a crash found by fuzzing stays fixed.
//! Fuzzing itself is `bash fuzz/run.sh` (docs/fuzzing.md).
#![cfg(all(feature = "webhook", feature = "xmpp", feature = "matrix", feature = "email"))]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for e in entries.flatten() {
            found.push((e.path(), std::fs::read(e.path()).unwrap()));
        }
    }
    found.sort();
    found
}

/// Each input on a thread with a 2 MiB stack, as the runtime's workers have.
fn each(target: &str, run: fn(&[u8])) {
    let all = inputs(target);
    assert!(!all.is_empty(), "no seeds for {target}");
    for (path, data) in all {
        let ok = std::thread::Builder::new().stack_size(2 << 20).spawn(move || run(&data)).unwrap().join();
        assert!(ok.is_ok(), "{} crashed {target}", path.display());
    }
}

#[test]
fn xmpp_stanza() {
    each("xmpp_stanza", causeway_xmpp::fuzz::stanza);
}

#[test]
fn xmpp_styling() {
    each("xmpp_styling", causeway_xmpp::fuzz::styling);
}

#[test]
fn matrix_transaction() {
    each("matrix_transaction", causeway_matrix::fuzz::transaction);
}

static EMAIL: LazyLock<causeway_email::config::EmailOptions> = LazyLock::new(|| {
    let o = serde_json::json!({
        "imap": {"server": "127.0.0.1:143", "tls": "none", "username": "bridge", "password": "pw"},
        "smtp": {"server": "127.0.0.1:25", "tls": "none"},
        "url": "http://127.0.0.1:8080/bridges/email",
        "lists": {"bridge+ops@mail.test": {"subscribers": ["alice@mail.test"]}},
        "policy": {"allow": ["partner.example"], "authserv_id": "mx.mail.test"}
    });
    causeway_core::parse_options(o).expect("valid options")
});

#[test]
fn email_mime() {
    each("email_mime", |data| {
        let _ = causeway_email::read::mime_containers(data);
        let _ = causeway_email::read::read(data, &EMAIL, &|_| vec!["alice@mail.test".to_string()]);
    });
}

#[test]
fn webhook_payload() {
    each("webhook_payload", |data| {
        let Some((&which, body)) = data.split_first() else { return };
        if which % 2 == 0 {
            let _ = causeway_webhook::payload::parse_native_to("w", body, Some("id".into()));
        } else {
            let _ = causeway_webhook::payload::parse_slack("w", body, None);
        }
    });
}

struct Nothing;

impl causeway::config::Source for Nothing {
    fn var(&self, name: &str) -> Option<String> {
        (name == "SET").then(|| "value".to_string())
    }
    fn read(&self, _path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no files here"))
    }
}

#[test]
fn config() {
    each("config", |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = causeway::config::parse(text, &Nothing);
        }
    });
}

#[test]
fn html() {
    each("html", |data| {
        if let Ok(html) = std::str::from_utf8(data) {
            let clean = causeway_core::text::sanitize_html(html);
            let _ = causeway_core::text::html_to_plain(&clean);
            let _ = causeway_core::text::html_to_plain(html);
        }
    });
}
