//! A mail in the bridge's mailbox: the container count, the MIME parser,
//! the policy (Authentication-Results), the text, HTML and attachments.
#![no_main]
use std::sync::LazyLock;

use causeway_email::config::EmailOptions;

static OPTIONS: LazyLock<EmailOptions> = LazyLock::new(|| {
    let o = serde_json::json!({
        "imap": {"server": "127.0.0.1:143", "tls": "none", "username": "bridge", "password": "pw"},
        "smtp": {"server": "127.0.0.1:25", "tls": "none"},
        "url": "http://127.0.0.1:8080/bridges/email",
        "lists": {"bridge+ops@mail.test": {"subscribers": ["alice@mail.test"]}},
        "policy": {"allow": ["partner.example"], "authserv_id": "mx.mail.test"}
    });
    causeway_core::parse_options(o).expect("valid options")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = causeway_email::read::mime_containers(data);
    let _ = causeway_email::read::read(data, &OPTIONS, &|_| vec!["alice@mail.test".to_string()]);
});
