//! Words for PostgreSQL's full-text search, made as SQLite's FTS5
//! tokenizer makes them (`unicode61 remove_diacritics 2` with letters,
//! numbers, private use and marks as word characters, migrations/sqlite
//! 0005), so that both stores find the same: case and the diacritics of
//! Latin letters do not count, and the Latin letters Unicode gives no
//! decomposition are spelled plain ([`crate::archive::folded`]).
//! PostgreSQL's parser never reads a message or a query: their words go
//! in as `tsvector` and `tsquery` literals, every word quoted, so nothing
//! anyone types is syntax.

use std::collections::BTreeMap;
use std::ops::Range;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// Longest word PostgreSQL indexes or looks for, in bytes.
const MAX_WORD: usize = 2046;
/// Highest position a `tsvector` keeps (later words share it).
const MAX_POS: usize = 16383;
/// Positions a `tsvector` keeps of one word.
const MAX_POSITIONS: usize = 256;
/// Bytes of distinct words kept of a message's text, and of its file
/// names: together under the 1 MiB a `tsvector` holds.
pub(super) const TEXT_WORDS: usize = 640 * 1024;
pub(super) const FILE_WORDS: usize = 128 * 1024;
/// Where the file names' words start: a position after the text's, so
/// that no phrase spans the two (`tsv = text || files_tsv`).
pub(super) const FILES_FROM: usize = 2;
/// Words a snippet shows, as `snippet(…, 16)` in SQLite.
const SNIPPET_WORDS: usize = 16;

/// Whether `c` is part of a word: FTS5's categories `L* N* Co M*`
/// (of ASCII, letters and digits).
fn in_word(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    matches!(c.general_category_group(), GeneralCategoryGroup::Letter | GeneralCategoryGroup::Number | GeneralCategoryGroup::Mark)
        || c.general_category() == GeneralCategory::PrivateUse
}

/// Where each word of `text` is.
fn spans(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        let (start, _) = chars.by_ref().find(|(_, c)| in_word(*c))?;
        let mut end = text.len();
        while let Some(&(i, c)) = chars.peek() {
            if !in_word(c) {
                end = i;
                break;
            }
            chars.next();
        }
        Some(start..end)
    })
}

/// The words of `text`, each with where it is, as the index keeps them.
pub(super) fn words(text: &str) -> impl Iterator<Item = (Range<usize>, String)> + '_ {
    spans(text).map(move |r| {
        let w = word(&text[r.clone()]);
        (r, w)
    })
}

/// One word as the index keeps it: in lower case, a Latin letter without
/// its diacritics (`Ż` → `z`), one Unicode does not decompose spelled
/// plain (`ł` → `l`, `ß` → `ss`).
fn word(token: &str) -> String {
    let lower = token.to_lowercase();
    let decomposed: String = lower.as_str().nfd().collect();
    let plain = crate::archive::folded(&decomposed).unwrap_or(decomposed);
    let mut out = String::with_capacity(plain.len());
    // Combining diacritics (U+0300 to U+036F) go after an ASCII letter only.
    let mut latin = false;
    for c in plain.chars() {
        if ('\u{300}'..='\u{36f}').contains(&c) {
            if latin {
                continue;
            }
        } else {
            latin = c.is_ascii_alphabetic();
        }
        out.push(c);
    }
    let mut w: String = out.as_str().nfc().collect();
    if w.len() > MAX_WORD {
        let mut end = MAX_WORD;
        while !w.is_char_boundary(end) {
            end -= 1;
        }
        w.truncate(end);
    }
    w
}

/// `w` quoted for a `tsvector` or `tsquery` literal.
fn quote(out: &mut String, w: &str) {
    out.push('\'');
    for c in w.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
}

/// The words of `text` as a `tsvector` literal, from position `first`:
/// each word once with its positions, at most `budget` bytes of words.
pub(super) fn vector(text: &str, first: usize, budget: usize) -> String {
    let mut at: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut bytes = 0;
    for (n, (_, w)) in words(text).enumerate() {
        let pos = (first + n).min(MAX_POS);
        match at.get_mut(&w) {
            Some(p) if p.len() < MAX_POSITIONS && p.last() != Some(&pos) => p.push(pos),
            Some(_) => {}
            None if !w.is_empty() && bytes + w.len() <= budget => {
                bytes += w.len();
                at.insert(w, vec![pos]);
            }
            None => {}
        }
    }
    let mut out = String::with_capacity(bytes + 8 * at.len());
    for (w, positions) in &at {
        if !out.is_empty() {
            out.push(' ');
        }
        quote(&mut out, w);
        for (i, p) in positions.iter().enumerate() {
            out.push(if i == 0 { ':' } else { ',' });
            out.push_str(&p.to_string());
        }
    }
    out
}

/// A term of a query: words one after the other (one word, or a
/// phrase), the last a prefix where asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Term {
    pub(super) words: Vec<String>,
    pub(super) prefix: bool,
}

/// The terms of an FTS5 query as [`crate::archive::fts_query`] makes it
/// (`"word"`, `"a phrase"`, `"prefix" *`, quotes inside doubled). A term
/// with no word is left out, as FTS5 leaves it out. Anything else in the
/// query is read as words, never as syntax.
pub(super) fn terms(fts: &str) -> Vec<Term> {
    let mut raw: Vec<(String, bool)> = Vec::new();
    let mut rest = fts;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('*') {
            if let Some(last) = raw.last_mut() {
                last.1 = true;
            }
            rest = after;
            continue;
        }
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut text = String::new();
            let mut end = quoted.len();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if quoted[i + 1..].starts_with('"') {
                        text.push('"');
                        chars.next();
                        continue;
                    }
                    end = i + 1;
                    break;
                }
                text.push(c);
            }
            raw.push((text, false));
            rest = &quoted[end..];
            continue;
        }
        if rest.is_empty() {
            break;
        }
        let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == '*').unwrap_or(rest.len());
        raw.push((rest[..end].to_string(), false));
        rest = &rest[end..];
    }
    raw.into_iter()
        .filter_map(|(text, prefix)| {
            let words: Vec<String> = words(&text).map(|(_, w)| w).filter(|w| !w.is_empty()).collect();
            (!words.is_empty()).then_some(Term { words, prefix })
        })
        .collect()
}

/// The terms as a `tsquery` literal: all of them (`&`), each word of a
/// phrase right after the one before (`<->`); none without a term.
pub(super) fn tsquery(terms: &[Term]) -> Option<String> {
    if terms.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (i, t) in terms.iter().enumerate() {
        if i > 0 {
            out.push_str(" & ");
        }
        let phrase = t.words.len() > 1;
        if phrase {
            out.push('(');
        }
        for (j, w) in t.words.iter().enumerate() {
            if j > 0 {
                out.push_str(" <-> ");
            }
            quote(&mut out, w);
        }
        if t.prefix {
            out.push_str(":*");
        }
        if phrase {
            out.push(')');
        }
    }
    Some(out)
}

/// What search shows of a hit, as FTS5's `snippet()` with 16 words: the
/// text where the query's words are in it, else the file names where
/// they are there, else the text; the matches marked `[…]`, `…` where
/// words were left out.
pub(super) fn snippet(text: &str, files: &str, terms: &[Term]) -> String {
    match fragment(text, terms) {
        (s, true) => s,
        (plain, false) => match fragment(files, terms) {
            (s, true) => s,
            _ => plain,
        },
    }
}

/// The best [`SNIPPET_WORDS`] words of `s` with the matches marked, and
/// whether anything matched: chosen as FTS5 chooses them.
fn fragment(s: &str, terms: &[Term]) -> (String, bool) {
    let words: Vec<(Range<usize>, String)> = words(s).collect();
    let n = words.len();
    // Each match: its term, its first and its last word.
    let mut found: Vec<(usize, usize, usize)> = Vec::new();
    for (t, term) in terms.iter().enumerate() {
        let len = term.words.len();
        for i in 0..(n + 1).saturating_sub(len) {
            let fits = term.words.iter().enumerate().all(|(k, w)| {
                let have = words[i + k].1.as_str();
                if term.prefix && k + 1 == len { have.starts_with(w.as_str()) } else { have == w }
            });
            if fits {
                found.push((t, i, i + len - 1));
            }
        }
    }
    found.sort_by_key(|&(_, first, last)| (first, last));
    let width = SNIPPET_WORDS;
    // The words from `from` on: 1000 for each term they have, 1 for each
    // match more; and where its matches end.
    let score = |from: usize| {
        let mut seen = vec![false; terms.len()];
        let (mut points, mut end) = (0, from);
        for &(t, _, b) in found.iter().filter(|&&(_, a, _)| a >= from && a < from + width) {
            points += if seen[t] { 1 } else { 1000 };
            seen[t] = true;
            end = b + 1;
        }
        (points, end)
    };
    let mut start = 0;
    if n > width {
        // Words that begin a sentence (after `.` or `:` and a space): a
        // fragment from one of them is worth 100 more (the first, 120).
        let sentences: Vec<usize> = (0..n)
            .filter(|&i| {
                i == 0 || {
                    let before = s[..words[i].0.start].trim_end_matches([' ', '\t', '\n', '\r']);
                    before.len() < words[i].0.start && (before.ends_with('.') || before.ends_with(':'))
                }
            })
            .collect();
        let mut best = 0;
        for &(_, first, _) in &found {
            // Centred on its matches, within the text.
            let (points, end) = score(first);
            if points > best {
                best = points;
                let adj = first as i64 - (width as i64 - (end - first) as i64) / 2;
                start = adj.min((n - width) as i64).max(0) as usize;
            }
            if let Some(&from) = sentences.iter().rev().find(|&&f| f <= first).filter(|&&f| f < first) {
                let points = score(from).0 + if from == 0 { 120 } else { 100 };
                if points > best {
                    best = points;
                    start = from;
                }
            }
        }
    }
    let end = (start + width).min(n);
    // Overlapping matches are marked as one; one that starts before the
    // fragment is not marked.
    let mut marks: Vec<(usize, usize)> = Vec::new();
    for &(_, a, b) in &found {
        if let Some(last) = marks.last_mut()
            && a <= last.1
        {
            last.1 = last.1.max(b);
        } else {
            marks.push((a, b));
        }
    }
    let from = if start == 0 { 0 } else { words[start].0.start };
    let to = if end == n { s.len() } else { words[end - 1].0.end };
    let mut out = String::with_capacity(to - from + 8);
    if start > 0 {
        out.push('…');
    }
    let mut at = from;
    for &(a, b) in marks.iter().filter(|&&(a, _)| a >= start && a < end) {
        let b = b.min(end - 1);
        out.push_str(&s[at..words[a].0.start]);
        out.push('[');
        out.push_str(&s[words[a].0.start..words[b].0.end]);
        out.push(']');
        at = words[b].0.end;
    }
    out.push_str(&s[at..to]);
    if end < n {
        out.push('…');
    }
    (out, !found.is_empty())
}

/// Read `input` as a search (the query [`crate::archive::fts_query`]
/// makes of it) into terms and a `tsquery`, and as a message's text into
/// a `tsvector`, as the fuzz target `archive_query` does: every word is
/// quoted, and outside the quotes there are only the operators this
/// module writes.
pub fn fuzz(input: &str) {
    let fts = crate::archive::fts_query(input).unwrap_or_default();
    let fts = fts.as_str();
    let terms = terms(fts);
    assert!(terms.iter().all(|t| !t.words.is_empty() && t.words.iter().all(|w| !w.is_empty())), "{fts:?}");
    if let Some(q) = tsquery(&terms) {
        let outside = unquoted(&q);
        assert!(outside.chars().all(|c| " &<->():*".contains(c)), "{q:?} has {outside:?} outside its quotes");
    }
    let v = vector(input, 1, TEXT_WORDS);
    let outside = unquoted(&v);
    assert!(outside.chars().all(|c| c == ' ' || c == ':' || c == ',' || c.is_ascii_digit()), "{v:?} has {outside:?} outside its quotes");
}

/// What is outside the `'…'` lexemes of a literal (`''` and `\\` inside).
fn unquoted(literal: &str) -> String {
    let (mut out, mut inside, mut chars) = (String::new(), false, literal.chars().peekable());
    while let Some(c) = chars.next() {
        match (inside, c) {
            (false, '\'') => inside = true,
            (false, c) => out.push(c),
            (true, '\\') => assert!(chars.next().is_some(), "{literal:?} ends in an escape"),
            (true, '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
            }
            (true, '\'') => inside = false,
            (true, _) => {}
        }
    }
    assert!(!inside, "{literal:?} leaves a quote open");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_searches_and_texts_are_only_quoted_words_and_operators() {
        for typed in ["a", "\"a b\" c*", "it's", "o'' \\' \\", "a & b | !c <-> (d):*", "x\u{0}y", "'; DROP TABLE archive; --", "नमस्ते *", ""]
        {
            fuzz(typed);
        }
    }

    fn q(typed: &str) -> Vec<Term> {
        terms(&crate::archive::fts_query(typed).unwrap())
    }

    fn all(text: &str) -> Vec<String> {
        words(text).map(|(_, w)| w).collect()
    }

    #[test]
    fn words_are_folded_as_fts5_folds_them() {
        assert_eq!(all("Zażółć gęślą jaźń, Łódź; Straße ÆON naïve"), ["zazolc", "gesla", "jazn", "lodz", "strasse", "aeon", "naive"]);
        assert_eq!(all("नमस्ते दुनिया, आज की बैठक"), ["नमस्ते", "दुनिया", "आज", "की", "बैठक"], "vowel signs and viramas are in the word");
        assert_eq!(all("🎉 release_party-tonight budget-2027.xlsx"), ["release", "party", "tonight", "budget", "2027", "xlsx"]);
        assert_eq!(all("Привет, МИР"), ["привет", "мир"]);
        assert_eq!(all("x\u{0}y\u{feff}z"), ["x", "y", "z"]);
        assert_eq!(all(&"ż".repeat(2000)).pop().unwrap(), "z".repeat(2000), "folded first");
        assert_eq!(all(&"ж".repeat(2000)).pop().unwrap().len(), 2046, "then cut to what PostgreSQL takes");
    }

    #[test]
    fn a_vector_has_each_word_once_with_its_places() {
        assert_eq!(vector("Zażółć zażółć it's", 1, TEXT_WORDS), "'it':3 's':4 'zazolc':1,2");
        assert_eq!(vector("budget-2027.xlsx", FILES_FROM, FILE_WORDS), "'2027':3 'budget':2 'xlsx':4");
        assert_eq!(vector("🎉", 1, TEXT_WORDS), "");
        assert_eq!(vector("a b c", 1, 2), "'a':1 'b':2", "no more words than the budget");
        let many = vector(&"w ".repeat(20_000), 1, TEXT_WORDS);
        assert_eq!(many.matches(',').count(), MAX_POSITIONS - 1, "positions as PostgreSQL keeps them");
    }

    #[test]
    fn a_query_is_quoted_words_whatever_was_typed() {
        let tsq = |typed: &str| tsquery(&q(typed));
        assert_eq!(tsq("Zażółć gęślą").unwrap(), "'zazolc' & 'gesla'");
        assert_eq!(tsq("\"release plan\"").unwrap(), "('release' <-> 'plan')");
        assert_eq!(tsq("relea*").unwrap(), "'relea':*");
        assert_eq!(tsq("\"release pl\"*").unwrap(), "('release' <-> 'pl':*)");
        assert_eq!(tsq("a:b").unwrap(), "('a' <-> 'b')");
        assert_eq!(tsq("'; DROP TABLE archive; --").unwrap(), "'drop' & 'table' & 'archive'");
        assert_eq!(tsquery(&terms("\"\" \"!!!\" * \"a\"\"b\"")).unwrap(), "('a' <-> 'b')", "a term without words is no prefix");
        assert_eq!(tsquery(&terms("\"ⓐ\"")), None, "a letter symbol is no word, as in FTS5");
        assert_eq!(tsquery(&terms("bare \"unterminated")).unwrap(), "'bare' & 'unterminated'");
        let typed = [
            "NEAR(a b)",
            "a OR",
            "AND",
            "\"",
            "a:b",
            "text:release",
            "-release",
            "^release",
            "*release",
            "(release",
            "release)",
            "{text}: x",
            "a + b",
            "x\u{0}y",
            "\u{feff}release",
            "ж*",
            "a\"b",
            "it's",
            "back\\slash",
            "a & b | !c <-> d:*",
        ];
        for t in typed {
            let Ok(fts) = crate::archive::fts_query(t) else { continue };
            let Some(tsq) = tsquery(&terms(&fts)) else { continue };
            // Outside the quoted words: only operators.
            let outside: String = tsq.split('\'').step_by(2).collect();
            assert!(outside.chars().all(|c| " &<->:*()".contains(c)), "{t:?}: {tsq}");
        }
    }

    #[test]
    fn a_snippet_marks_what_matched_in_the_text_else_in_the_file_names() {
        assert_eq!(snippet("Zażółć poprawione znowu", "", &q("znowu")), "Zażółć poprawione [znowu]");
        assert_eq!(snippet("Zażółć gęślą jaźń", "", &q("zazolc")), "[Zażółć] gęślą jaźń");
        assert_eq!(snippet("the release plan is ready", "", &q("plan release")), "the [release] [plan] is ready");
        assert_eq!(
            snippet("the release plan is ready", "", &q("\"release plan\" plan")),
            "the [release plan] is ready",
            "overlapping: one"
        );
        assert_eq!(snippet("🎉 release party tonight", "", &q("relea*")), "🎉 [release] party tonight");
        assert_eq!(snippet("the numbers", "budget-2027.xlsx", &q("budget")), "[budget]-2027.xlsx");
        assert_eq!(snippet("the numbers", "", &q("budget")), "the numbers");
        let long: Vec<String> = (1..=40).map(|n| format!("w{n}")).collect();
        let shown = long[12..28].join(" ").replace("w20", "[w20]");
        assert_eq!(snippet(&long.join(" "), "", &q("w20")), format!("…{shown}…"));
        assert_eq!(snippet(&long.join(" "), "", &q("w1")), format!("[w1] {}…", long[1..16].join(" ")));
        let sentences = "one two three. Four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen \
                         target nineteen twenty";
        assert_eq!(
            snippet(sentences, "", &q("target")),
            "…Four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen [target]…",
            "from the start of its sentence"
        );
    }
}
