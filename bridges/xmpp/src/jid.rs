//! Ghost addresses: XEP-0106 escaping of ids into JID localparts, and the
//! templates that name ghosts.

/// Escape `s` for use as a JID localpart (XEP-0106), lowercased so the
/// server's case-folding cannot make two ghosts one. Where nodeprep refuses
/// a character (emoji, unassigned code points), non-ASCII characters are
/// written as `_x<hex>_` instead.
pub fn escape_node(s: &str) -> String {
    let escaped = escape_chars(s, false);
    if format!("{escaped}@x.invalid").parse::<tokio_xmpp::jid::BareJid>().is_ok() { escaped } else { escape_chars(s, true) }
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

/// Fill a localpart template: every `{name}` becomes the XEP-0106-escaped
/// value of that name. Other text is kept as written.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), &escape_node(value));
    }
    out
}

/// What is wrong with a localpart template that must use `required` and
/// may use `allowed` placeholders, if anything.
pub fn check_template(template: &str, required: &[&str], allowed: &[&str]) -> Option<String> {
    for r in required {
        if !template.contains(&format!("{{{r}}}")) {
            return Some(format!("must contain {{{r}}}"));
        }
    }
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        let Some(end) = rest[i..].find('}') else { return Some("has a `{` without `}`".into()) };
        let name = &rest[i + 1..i + end];
        if !allowed.contains(&name) {
            return Some(format!(
                "unknown placeholder {{{name}}} (use {})",
                allowed.iter().map(|a| format!("{{{a}}}")).collect::<Vec<_>>().join(", ")
            ));
        }
        rest = &rest[i + end + 1..];
    }
    let sample: Vec<(&str, &str)> = allowed.iter().map(|a| (*a, "x")).collect();
    let jid = format!("{}@example.org", fill(template, &sample));
    match jid.parse::<tokio_xmpp::jid::BareJid>() {
        Ok(_) => None,
        Err(e) => Some(format!("does not make a valid JID localpart: {e}")),
    }
}

/// Whether no localpart of `person_template` (person ids are letters,
/// digits, `-`, `_` and `.`, lowercased) can equal one of `ghost_template`:
/// the latter's literal text holds a character the former's never can.
pub fn apart(person_template: &str, ghost_template: &str) -> bool {
    let literal = |t: &str| t.replace("{person}", "").replace("{bridge}", "").replace("{id}", "");
    let person_chars = literal(person_template);
    literal(ghost_template)
        .chars()
        .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c) || person_chars.contains(c)))
}

/// The value of the single placeholder `{name}` in a localpart made from
/// `template`, unescaped; `None` when `node` was not made from it.
pub fn parse_single(template: &str, name: &str, node: &str) -> Option<String> {
    let (prefix, suffix) = template.split_once(&format!("{{{name}}}"))?;
    if suffix.contains('{') || prefix.contains('{') {
        return None;
    }
    let inner = node.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!inner.is_empty()).then(|| unescape_node(inner))
}

/// The bridge and id of a localpart made from a ghost `template` of the
/// form `…{bridge}<text>{id}…` (the default `{bridge}={id}`), unescaped:
/// the bridge is what comes before the first `<text>` (bridge names never
/// hold it once escaped). `None` when `node` was not made from it.
pub fn parse_pair(template: &str, node: &str) -> Option<(String, String)> {
    let (prefix, rest) = template.split_once("{bridge}")?;
    let (between, suffix) = rest.split_once("{id}")?;
    if between.is_empty() || [prefix, between, suffix].iter().any(|t| t.contains('{')) {
        return None;
    }
    let inner = node.strip_prefix(prefix)?.strip_suffix(suffix)?;
    let (bridge, id) = inner.split_once(between)?;
    (!bridge.is_empty() && !id.is_empty()).then(|| (unescape_node(bridge), unescape_node(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ghost_of_an_account_reads_back_as_its_bridge_and_id() {
        let node = fill("{bridge}={id}", &[("bridge", "matrix"), ("id", "@bob:matrix.test")]);
        assert_eq!(parse_pair("{bridge}={id}", &node), Some(("matrix".into(), "@bob:matrix.test".into())));
        let node = fill("g.{bridge}={id}.x", &[("bridge", "hooks"), ("id", "a=b")]);
        assert_eq!(parse_pair("g.{bridge}={id}.x", &node), Some(("hooks".into(), "a=b".into())));
        assert_eq!(parse_pair("{bridge}={id}", "alice"), None, "not a ghost of an account");
        assert_eq!(parse_pair("{bridge}={id}", "=x"), None);
        assert_eq!(parse_pair("{bridge}={id}", "x="), None);
        assert_eq!(parse_pair("{bridge}{id}", "xy"), None, "nothing tells them apart");
        assert_eq!(parse_pair("{id}", "xy"), None);
    }

    #[test]
    fn templates_are_filled_checked_and_read_back() {
        assert_eq!(fill("{bridge}.{id}", &[("bridge", "matrix"), ("id", "@bob:m.org")]), "matrix.\\40bob\\3am.org");
        assert_eq!(fill("p-{person}", &[("person", "Ann Lee")]), "p-ann\\20lee");
        assert_eq!(check_template("{bridge}.{id}", &["id"], &["bridge", "id"]), None);
        assert!(check_template("{bridge}", &["id"], &["bridge", "id"]).unwrap().contains("{id}"));
        assert!(check_template("{id}{nick}", &["id"], &["bridge", "id"]).unwrap().contains("{nick}"));
        assert!(check_template("{id", &[], &["id"]).is_some());
        assert!(check_template("a@{id}", &["id"], &["id"]).unwrap().contains("JID"));
        assert_eq!(parse_single("p-{person}", "person", "p-ann\\20lee").as_deref(), Some("ann lee"));
        assert!(apart("{person}", "{bridge}={id}"));
        assert!(!apart("{person}", "{bridge}.{id}"), "person hooks.bob and webhook sender bob would meet");
        assert!(!apart("p={person}", "{bridge}={id}"));
        assert!(apart("p.{person}", "{bridge}~{id}"));
        assert_eq!(parse_single("p-{person}", "person", "q-ann"), None);
        assert_eq!(parse_single("{person}", "person", ""), None);
    }

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
