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
/// (Authentication-Results), the text, HTML and attachments; the
/// invitation it carries (also when the policy would refuse the mail), its
/// card and what an update of it would do.
pub fn mail(data: &[u8]) {
    let containers = crate::read::mime_containers(data);
    let _ = crate::read::read(data, &OPTIONS, &|_| vec!["alice@mail.test".to_string()]);
    if containers <= 64
        && let Some(inv) = crate::invite::of_raw(data)
    {
        let card = crate::invite::card(&inv, calcard::common::timezone::Tz::UTC, "UTC");
        assert!(card.plain.len() < 16 * 1024, "a card of {} bytes", card.plain.len());
        assert!(!inv.summary.chars().any(char::is_control));
        let _ = crate::invite::decide(Some(&inv), &inv, "alice@mail.test");
    }
}
