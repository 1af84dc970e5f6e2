//! Ghost addresses: XEP-0106 escaping of ids into JID localparts.

/// Escape `s` for use as a JID localpart (XEP-0106), lowercased so the
/// server's case-folding cannot make two ghosts one. Where nodeprep refuses
/// a character (emoji, unassigned code points), non-ASCII characters are
/// written as `_x<hex>_` instead.
pub fn escape_node(s: &str) -> String {
    let escaped = escape_chars(s, false);
    if format!("{escaped}@x.invalid").parse::<tokio_xmpp::jid::BareJid>().is_ok() {
        escaped
    } else {
        escape_chars(s, true)
    }
}

fn escape_chars(s: &str, ascii_only: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let trimmed = s.trim();
    for c in trimmed.chars().flat_map(char::to_lowercase) {
        match c {
            ' ' => out.push_str("\\20"),
            '"' => out.push_str("\\22"),
            '&' => out.push_str("\\26"),
            '\'' => out.push_str("\\27"),
            '/' => out.push_str("\\2f"),
            ':' => out.push_str("\\3a"),
            '<' => out.push_str("\\3c"),
            '>' => out.push_str("\\3e"),
            '@' => out.push_str("\\40"),
            '\\' => out.push_str("\\5c"),
            c if c.is_control() || c.is_whitespace() => {}
            c if ascii_only && !c.is_ascii() => out.push_str(&format!("_x{:x}_", u32::from(c))),
            c => out.push(c),
        }
    }
    // Localparts are at most 1023 bytes.
    while out.len() > 1023 {
        out.pop();
    }
    out
}

/// Reverse [`escape_node`]'s escapes (for showing a ghost's id).
pub fn unescape_node(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).unwrap_or("");
        let c = match code {
            "20" => Some(' '),
            "22" => Some('"'),
            "26" => Some('&'),
            "27" => Some('\''),
            "2f" => Some('/'),
            "3a" => Some(':'),
            "3c" => Some('<'),
            "3e" => Some('>'),
            "40" => Some('@'),
            "5c" => Some('\\'),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_per_xep_0106() {
        assert_eq!(escape_node("alice"), "alice");
        assert_eq!(escape_node("Alice@Corp/x"), "alice\\40corp\\2fx");
        assert_eq!(escape_node("d'artagnan & co"), "d\\27artagnan\\20\\26\\20co");
        assert_eq!(escape_node("a\\b:c<d>\"e"), "a\\5cb\\3ac\\3cd\\3e\\22e");
        assert_eq!(escape_node(" tab\there\n"), "tabhere");
        assert_eq!(unescape_node(&escape_node("x@y z/w:\\")), "x@y z/w:\\");
        assert_eq!(unescape_node("odd\\zz"), "odd\\zz");
        assert_eq!(escape_node(&"é".repeat(600)).len(), 1022);
        assert_eq!(escape_node("💬 Chat"), "_x1f4ac_\\20chat");
    }

    #[test]
    fn escaped_nodes_are_valid_jids() {
        for id in ["@alice:matrix.org", "Bob O'Neil", "x/y@z", "💬 chat", "\\5c"] {
            let node = escape_node(id);
            let jid = format!("{node}@bridge.example.org");
            assert!(jid.parse::<tokio_xmpp::jid::BareJid>().is_ok(), "{id:?} → {jid:?}");
        }
    }
}
