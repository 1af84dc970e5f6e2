//! Ghost user ids: everyone from another network is an application-service
//! user `@<ghost_prefix><escaped id>:<server_name>`.

use causeway_core::{Recipient, Sender};
use ruma::{OwnedUserId, UserId};

/// Escape `s` into localpart characters, reversibly: lowercase letters,
/// digits, `.` and `-` stay; `_` becomes `__`; an uppercase letter becomes
/// `_` and the letter in lowercase; any other byte becomes `=xx` (hex).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            'a'..='z' | '0'..='9' | '.' | '-' => out.push(c),
            '_' => out.push_str("__"),
            'A'..='Z' => {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            }
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("={b:02x}"));
                }
            }
        }
    }
    out
}

/// Reverse [`escape`]; `None` for what `escape` never writes.
pub fn unescape(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '_' => match chars.next()? {
                '_' => bytes.push(b'_'),
                l @ 'a'..='z' => bytes.push(l.to_ascii_uppercase() as u8),
                _ => return None,
            },
            '=' => {
                let hex: String = [chars.next()?, chars.next()?].iter().collect();
                bytes.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            'a'..='z' | '0'..='9' | '.' | '-' => bytes.push(c as u8),
            _ => return None,
        }
    }
    String::from_utf8(bytes).ok()
}

/// The ghost of a sender from `bridge`: per person when the directory knows
/// them (one ghost whatever network they speak from), else per account.
pub fn user_id(prefix: &str, server_name: &str, sender: &Sender, bridge: &str) -> Result<OwnedUserId, String> {
    user_id_of(prefix, server_name, &Recipient::key_of(sender, bridge))
}

/// The ghost of whoever `key` names (a [`Recipient`] key: a person id or
/// `bridge:id`).
pub fn user_id_of(prefix: &str, server_name: &str, key: &str) -> Result<OwnedUserId, String> {
    let id = format!("@{prefix}{}:{server_name}", escape(key));
    UserId::parse(&id).map_err(|e| format!("no ghost id for {key:?}: {e}"))
}

/// Who a ghost stands for (the inverse of [`user_id`]); `None` when the user
/// is not a ghost of this prefix.
pub fn recipient(prefix: &str, user: &UserId) -> Option<Recipient> {
    let escaped = user.localpart().strip_prefix(prefix)?;
    Recipient::parse(&unescape(escaped)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ghosts_are_per_person_or_per_account() {
        let mut s = Sender { id: "alice@xmpp.test".into(), person: None, name: "Alice".into(), avatar: None };
        let u = user_id("causeway_", "matrix.test", &s, "xmpp").unwrap();
        assert_eq!(u.as_str(), "@causeway_xmpp=3aalice=40xmpp.test:matrix.test");
        assert_eq!(recipient("causeway_", &u), Some(Recipient::Account { bridge: "xmpp".into(), id: "alice@xmpp.test".into() }));
        s.person = Some("Alice_L".into());
        let u = user_id("causeway_", "matrix.test", &s, "xmpp").unwrap();
        assert_eq!(u.as_str(), "@causeway__alice___l:matrix.test");
        assert_eq!(recipient("causeway_", &u), Some(Recipient::Person("Alice_L".into())));
        assert_eq!(recipient("other_", &u), None);
        assert_eq!(escape("💬"), "=f0=9f=92=ac");
    }

    proptest! {
        #[test]
        fn escaping_round_trips_into_valid_localparts(s in ".{0,40}") {
            let e = escape(&s);
            prop_assert!(e.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-".contains(c)));
            prop_assert_eq!(unescape(&e), Some(s));
        }

        #[test]
        fn unescaping_garbage_never_panics(s in "[a-z0-9_=.A-Z-]{0,20}") {
            let _ = unescape(&s);
        }
    }
}
