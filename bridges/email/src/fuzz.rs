//! Entry point for the fuzz target (`fuzz/`): a mail in the mailbox, read
//! as the bridge reads it. Not an API.

use std::sync::LazyLock;

use crate::config::EmailOptions;

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

/// The container count, the MIME parser, the policy
/// (Authentication-Results), the text, HTML and attachments.
pub fn mail(data: &[u8]) {
    let _ = crate::read::mime_containers(data);
    let _ = crate::read::read(data, &OPTIONS, &|_| vec!["alice@mail.test".to_string()]);
}
