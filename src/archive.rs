//! The archive as people use it: full-text search (`causeway archive
//! search`, `GET /api/archive/search`) and exports (`export`). The store keeps the search index
//! (SQLite FTS5, see docs/archive.md) in the same transaction as the
//! archive; this module turns what someone typed into a query that cannot
//! fail, and reads the times they give.

use causeway_core::{Attachment, EventId};
use serde::{Deserialize, Serialize};

pub mod export;
pub mod exporter;
pub mod files;
pub mod jobs;
pub mod retention;
pub mod slack;

/// Most results one search returns.
pub const MAX_LIMIT: u32 = 200;
/// Most messages of context on each side of a result.
pub const MAX_CONTEXT: u32 = 10;
/// Longest query taken (in bytes).
pub const MAX_QUERY: usize = 1000;
/// Most terms of one query.
const MAX_TERMS: usize = 32;

/// What to look for, and where.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// The FTS5 query made of the words (see [`fts_query`]).
    pub fts: String,
    pub portal: Option<String>,
    /// A person of the directory, or an account as `bridge:id`.
    pub person: Option<String>,
    /// The bridge the message came from.
    pub network: Option<String>,
    /// Since (inclusive) and until (exclusive), in ms since the epoch.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub kind: Option<SearchKind>,
    /// Show messages that were taken back too.
    pub retracted: bool,
    pub limit: u32,
    /// Messages of the portal shown before and after each result.
    pub context: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SearchKind {
    /// Any message.
    Message,
    /// Messages with files.
    File,
}

/// An archived message as search shows it: its latest text.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Found {
    pub seq: i64,
    pub event_id: EventId,
    pub portal: String,
    pub at_ms: i64,
    /// The bridge it came from, and its room there.
    pub network: String,
    pub room: String,
    pub sender: FoundSender,
    pub text: String,
    /// Changed since it was said (`text` is the latest).
    pub edited: bool,
    pub retracted: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<EventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<EventId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FoundSender {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

/// One result: the message, how well it matched (higher is better), the
/// words that matched marked `[…]`, and the messages around it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    pub message: Found,
    pub score: f64,
    pub snippet: String,
    pub before: Vec<Found>,
    pub after: Vec<Found>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("nothing to search for: give a word")]
    Empty,
    #[error("the query is longer than {MAX_QUERY} bytes")]
    TooLong,
    #[error("{0}")]
    Time(String),
}

/// Latin letters Unicode gives no decomposition, spelled plain: the
/// tokenizer removes the diacritics of the others (`ż` → `z`) itself.
const PLAIN: &[(char, &str)] = &[
    ('ł', "l"),
    ('Ł', "L"),
    ('đ', "d"),
    ('Đ', "D"),
    ('ø', "o"),
    ('Ø', "O"),
    ('ħ', "h"),
    ('Ħ', "H"),
    ('ŧ', "t"),
    ('Ŧ', "T"),
    ('ı', "i"),
    ('ß', "ss"),
    ('ẞ', "SS"),
    ('æ', "ae"),
    ('Æ', "AE"),
    ('œ', "oe"),
    ('Œ', "OE"),
    ('þ', "th"),
    ('Þ', "TH"),
    ('ð', "d"),
    ('Ð', "D"),
    ('ŀ', "l"),
    ('Ŀ', "L"),
    ('ĸ', "k"),
];

/// `text` with those letters spelled plain, where it has any: what the
/// index keeps beside the text so that `lodz` finds `Łódź`.
pub fn folded(text: &str) -> Option<String> {
    let plain = |c: char| PLAIN.iter().find(|(l, _)| *l == c).map(|(_, p)| *p);
    if !text.chars().any(|c| plain(c).is_some()) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match plain(c) {
            Some(p) => out.push_str(p),
            None => out.push(c),
        }
    }
    Some(out)
}

/// What someone typed as an FTS5 query that cannot fail: every word
/// quoted (nothing they type is FTS5 syntax), `"several words"` a phrase,
/// a trailing `*` a prefix; all terms must match. Terms without a letter
/// or a digit are left out.
pub fn fts_query(words: &str) -> Result<String, QueryError> {
    if words.len() > MAX_QUERY {
        return Err(QueryError::TooLong);
    }
    // Control characters (a NUL ends an FTS5 query) separate words.
    let words: String = words.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut terms = Vec::new();
    let mut rest = words.as_str();
    while terms.len() < MAX_TERMS {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (term, after) = match rest.strip_prefix('"') {
            Some(quoted) => match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            },
            None => rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len())),
        };
        rest = after;
        // A `*` right after the term (or a quoted phrase) asks for a prefix.
        let (term, prefix) = match term.strip_suffix('*') {
            Some(t) => (t, true),
            None => match rest.strip_prefix('*') {
                Some(r) => {
                    rest = r;
                    (term, true)
                }
                None => (term, false),
            },
        };
        if !term.chars().any(char::is_alphanumeric) {
            continue;
        }
        let quoted = format!("\"{}\"", term.replace('"', "\"\""));
        terms.push(if prefix { format!("{quoted} *") } else { quoted });
    }
    if terms.is_empty() { Err(QueryError::Empty) } else { Ok(terms.join(" ")) }
}

/// A time someone gave: RFC 3339 (`2026-12-01T09:30:00Z`), a day
/// (`2026-12-01`, its start in UTC), or a while ago (`90m`, `12h`, `7d`,
/// counted back from `now_ms`); in ms since the epoch.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, QueryError> {
    let s = s.trim();
    let bad = || QueryError::Time(format!("{s:?} is not a time: give 2026-12-01, 2026-12-01T09:30:00Z or 7d (ago)"));
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad());
    }
    if let Ok(d) = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    if s.len() > 1 && s.is_ascii() {
        let (n, unit) = s.split_at(s.len() - 1);
        let per: i64 = match unit {
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        let n: i64 = n.parse().map_err(|_| bad())?;
        return n.checked_mul(per).and_then(|ago| now_ms.checked_sub(ago)).filter(|_| n >= 0).ok_or_else(bad);
    }
    Err(bad())
}

/// Read `input` as a search query and as a time, as the fuzz target does
/// (`fuzz/`), and check that the query is quoted terms only. Not an API.
#[doc(hidden)]
pub fn fuzz_query(input: &str) {
    if let Ok(fts) = fts_query(input) {
        // `"…"` strings (quotes inside doubled), each maybe followed by ` *`.
        let mut rest = fts.as_str();
        while !rest.is_empty() {
            let mut chars = rest.strip_prefix('"').expect("a term opens with a quote").char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) if rest[i + 2..].starts_with('"') => {
                        chars.next();
                    }
                    Some((i, '"')) => break i + 2,
                    Some(_) => {}
                    None => panic!("an unclosed term in {fts:?}"),
                }
            };
            rest = rest[end..].strip_prefix(" *").unwrap_or(&rest[end..]);
            rest = rest.strip_prefix(' ').unwrap_or(rest);
        }
    }
    let _ = parse_time(input, 1_800_000_000_000);
}

/// The parts of a search as they come from a command line or a URL.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SearchParams {
    pub q: String,
    pub portal: Option<String>,
    pub person: Option<String>,
    pub network: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub kind: Option<SearchKind>,
    #[serde(default)]
    pub retracted: bool,
    pub limit: Option<u32>,
    pub context: Option<u32>,
}

impl SearchParams {
    /// Checked, with the defaults (20 results, 2 messages of context).
    pub fn query(&self, now_ms: i64) -> Result<SearchQuery, QueryError> {
        let time = |t: &Option<String>| t.as_deref().map(|t| parse_time(t, now_ms)).transpose();
        let nonempty = |s: &Option<String>| s.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        Ok(SearchQuery {
            fts: fts_query(&self.q)?,
            portal: nonempty(&self.portal),
            person: nonempty(&self.person),
            network: nonempty(&self.network),
            since_ms: time(&self.since)?,
            until_ms: time(&self.until)?,
            kind: self.kind,
            retracted: self.retracted,
            limit: self.limit.unwrap_or(20).clamp(1, MAX_LIMIT),
            context: self.context.unwrap_or(2).min(MAX_CONTEXT),
        })
    }
}

/// Results as a person reads them on a terminal.
pub fn render_text(hits: &[Hit]) -> String {
    use std::fmt::Write;
    let line = |out: &mut String, f: &Found, mark: &str| {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(f.at_ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]")).ok())
            .unwrap_or_default();
        let flags = match (f.edited, f.retracted) {
            (_, true) => " (taken back)",
            (true, _) => " (edited)",
            _ => "",
        };
        let text = f.text.replace('\n', " ");
        let _ = writeln!(out, "{mark} {at} {} [{}] {}{flags}", f.sender.name, f.network, text);
    };
    let mut out = String::new();
    for (i, h) in hits.iter().enumerate() {
        let _ = writeln!(out, "── {} in {} ({})", i + 1, h.message.portal, h.message.event_id);
        for f in &h.before {
            line(&mut out, f, " ");
        }
        line(&mut out, &h.message, ">");
        for f in &h.after {
            line(&mut out, f, " ");
        }
    }
    if hits.is_empty() {
        out.push_str("nothing found\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_phrases_kept_and_prefixes_marked() {
        assert_eq!(fts_query("hello world").unwrap(), r#""hello" "world""#);
        assert_eq!(fts_query(r#""release plan" zaz*"#).unwrap(), r#""release plan" "zaz" *"#);
        assert_eq!(fts_query(r#""open phrase"#).unwrap(), r#""open phrase""#);
        assert_eq!(fts_query(r#""quoted"* x"#).unwrap(), r#""quoted" * "x""#);
        // FTS5 syntax is text like any other.
        assert_eq!(fts_query("NEAR(a b) OR c:d -e ^f").unwrap(), r#""NEAR(a" "b)" "OR" "c:d" "-e" "^f""#);
        assert_eq!(fts_query(r#"say "hi"""#).unwrap(), r#""say" "hi""#);
        assert_eq!(fts_query("a\"b").unwrap(), r#""a""b""#);
        assert_eq!(fts_query("नमस्ते 🎉 ok").unwrap(), r#""नमस्ते" "ok""#, "an emoji alone is no word");
    }

    #[test]
    fn letters_without_a_decomposition_are_spelled_plain() {
        assert_eq!(folded("Zażółć gęślą jaźń").as_deref(), Some("Zażólć gęślą jaźń"));
        assert_eq!(folded("Łódź, Straße, Ærø").as_deref(), Some("Lódź, Strasse, AEro"));
        assert_eq!(folded("Zurich नमस्ते 🎉"), None, "nothing to change");
        assert_eq!(fts_query("x\u{0}y\u{7}z").unwrap(), r#""x" "y" "z""#);
    }

    #[test]
    fn a_query_of_nothing_or_too_much_says_so() {
        for nothing in ["", "   ", "*", "\"\"", "!!! ??? ***", "🎉"] {
            assert_eq!(fts_query(nothing), Err(QueryError::Empty), "{nothing:?}");
        }
        assert_eq!(fts_query(&"a ".repeat(600)), Err(QueryError::TooLong));
        assert_eq!(fts_query(&"w ".repeat(100)).unwrap().matches('"').count(), 2 * MAX_TERMS);
    }

    #[test]
    fn the_fuzz_check_takes_what_fts_query_makes() {
        for words in ["a", "\"a b\" c*", "a\"\"b \"q\"\"\" z", "नमस्ते *", "x\u{0}y"] {
            fuzz_query(words);
        }
    }

    #[test]
    fn times_are_days_instants_or_a_while_ago() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("2026-12-01", now), Ok(1_796_083_200_000));
        assert_eq!(parse_time("2026-12-01T01:00:00+01:00", now), Ok(1_796_083_200_000));
        assert_eq!(parse_time("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_time("90m", now), Ok(now - 90 * 60_000));
        for bad in ["", "yesterday", "7", "d", "-3d", "99999999999999999d", "2026-13-01", "7ð"] {
            assert!(matches!(parse_time(bad, now), Err(QueryError::Time(_))), "{bad:?}");
        }
    }

    #[test]
    fn limits_have_defaults_and_bounds() {
        let p = SearchParams { q: "x".into(), limit: Some(100_000), context: Some(99), portal: Some("  ".into()), ..Default::default() };
        let q = p.query(0).unwrap();
        assert_eq!((q.limit, q.context, q.portal), (MAX_LIMIT, MAX_CONTEXT, None));
        let q = SearchParams { q: "x".into(), ..Default::default() }.query(0).unwrap();
        assert_eq!((q.limit, q.context), (20, 2));
    }
}
