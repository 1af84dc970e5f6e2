//! The fuzz targets' inputs (`fuzz/seeds/`, and `fuzz/regressions/`: every
//! input that once crashed a target) run through the same entry points as
//! the targets, in the test suite: a crash found by fuzzing stays fixed.
//! Fuzzing itself is `bash fuzz/run.sh` (docs/fuzzing.md).
#![cfg(all(feature = "webhook", feature = "xmpp", feature = "matrix", feature = "email"))]

use std::path::{Path, PathBuf};

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
fn archive_query() {
    each("archive_query", |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            causeway::archive::fuzz_query(text);
            causeway::store::postgres::fuzz_search(text);
        }
    });
}

#[test]
fn broadcast_command() {
    each("broadcast_command", |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            causeway::broadcast::fuzz_command(text);
        }
    });
}

#[test]
fn calendar() {
    each("calendar", causeway::calendar::fuzz);
}

#[test]
fn admin_request() {
    each("admin_request", causeway::admin::fuzz_request);
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

#[test]
fn email_mime() {
    each("email_mime", causeway_email::fuzz::mail);
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

#[test]
fn config() {
    each("config", |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            causeway::config::fuzz_parse(text);
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
