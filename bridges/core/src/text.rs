//! Rich text helpers shared by every bridge.

use std::collections::HashSet;
use std::sync::LazyLock;

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let tags: HashSet<&str> = [
        "a",
        "b",
        "blockquote",
        "br",
        "code",
        "del",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "span",
        "strike",
        "strong",
        "sub",
        "sup",
        "u",
        "ul",
    ]
    .into_iter()
    .collect();
    let mut b = ammonia::Builder::default();
    b.tags(tags).url_schemes(["http", "https", "mailto", "xmpp", "matrix"].into_iter().collect()).link_rel(Some("noopener noreferrer"));
    b
});

/// Keep only harmless formatting: no scripts, styles, event handlers, images
/// that phone home, or links with dangerous schemes.
pub fn sanitize_html(html: &str) -> String {
    SANITIZER.clean(html).to_string()
}

/// A plain-text rendering of an HTML fragment (tags removed, entities decoded,
/// line breaks kept for `<br>` and block ends).
pub fn html_to_plain(html: &str) -> String {
    let mut spaced = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        spaced.push_str(&rest[..i]);
        let tag = rest[i..].get(..4).unwrap_or("").to_ascii_lowercase();
        if tag.starts_with("<br") || tag.starts_with("</p") || tag.starts_with("</li") || tag.starts_with("</h") {
            spaced.push('\n');
        }
        spaced.push('<');
        rest = &rest[i + 1..];
    }
    spaced.push_str(rest);
    let stripped = ammonia::Builder::empty().clean(&spaced).to_string();
    let decoded = stripped
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    decoded.trim().to_string()
}

/// Sanitized `html` with each Matrix pill (a link to a user,
/// `https://matrix.to/#/@…`) replaced by its text, for networks that name
/// people by name instead of by link.
pub fn unpill(html: &str) -> String {
    const OPEN: &str = "<a href=\"https://matrix.to/#/@";
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find(OPEN) {
        let Some(text_at) = rest[at..].find('>').map(|i| at + i + 1) else { break };
        let Some(end) = rest[text_at..].find("</a>").map(|i| text_at + i) else { break };
        out.push_str(&rest[..at]);
        out.push_str(&rest[text_at..end]);
        rest = &rest[end + "</a>".len()..];
    }
    out.push_str(rest);
    out
}

/// A broadcast as one person reads it from the bridge's own account: a
/// first line says whom it is from.
pub fn announced_by(text: &crate::Text, name: &str) -> crate::Text {
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    crate::Text {
        plain: format!("📢 Announcement from {name}\n\n{}", text.plain),
        html: text.html.as_ref().map(|h| format!("<p><strong>📢 Announcement from {}</strong></p>{h}", escape_html(&name))),
    }
}

/// Escape text for inclusion in HTML.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut into pieces of at most `max_bytes` each, at the last paragraph
/// break, else line break, else space that fits, else a character boundary.
/// The pieces put together are `text` again (each break stays at the end of
/// the piece before it).
pub fn split_text(text: &str, max_bytes: usize) -> Vec<&str> {
    let max = max_bytes.max(4);
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut end = max;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let window = &rest[..end];
        let cut =
            ["\n\n", "\n", " "].iter().find_map(|sep| window.rfind(sep).map(|i| i + sep.len()).filter(|&i| i > max / 4)).unwrap_or(end);
        parts.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest);
    }
    parts
}

/// A text too long for one message as numbered messages (`(1/3) …`), each
/// at most `max_bytes`; a text that fits stays one, unnumbered.
pub fn numbered_parts(text: &str, max_bytes: usize) -> Vec<String> {
    if text.len() <= max_bytes {
        return vec![text.to_string()];
    }
    // Room for "(9999/9999) ".
    let parts = split_text(text, max_bytes.saturating_sub(12).max(4));
    let n = parts.len();
    parts.iter().enumerate().map(|(i, p)| format!("({}/{n}) {}", i + 1, p.trim_end())).collect()
}

/// What a bridge does with a text larger than one message of its network
/// may be (`oversize` in a bridge's options). Either way it arrives: size
/// is never a reason for a dead letter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// Numbered messages (`(1/3) …`), cut at paragraph or line breaks.
    #[default]
    Split,
    /// The first lines as the message, the whole text as a `.txt` file
    /// attached to it (where the network can carry files; else `split`).
    File,
}

/// The first lines of a long `text`, at most `max_bytes` and cut at a line
/// break where there is one, followed by a line saying where the rest is.
pub fn preview(text: &str, max_bytes: usize, rest_in: &str) -> String {
    let head = split_text(text, max_bytes)[0].trim_end();
    let lines = text.lines().count();
    format!("{head}\n… ({lines} lines, {} KiB in all: {rest_in})", text.len().div_ceil(1024))
}

/// `s` as one line: control characters become spaces, runs of white space
/// one space, and at most `most` characters are read (for text from outside
/// shown in a single line: a title, a name, an id).
pub fn one_line(s: &str, most: usize) -> String {
    let one: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(most).collect();
    one.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pills_become_their_text_and_other_links_stay() {
        let html = r#"<a href="https://matrix.to/#/@alice:m.test">Alice</a>: see <a href="https://example.org">this</a>"#;
        assert_eq!(unpill(html), r#"Alice: see <a href="https://example.org">this</a>"#);
        assert_eq!(
            unpill(r#"<a href="https://matrix.to/#/#room:m.test">room</a>"#),
            r#"<a href="https://matrix.to/#/#room:m.test">room</a>"#
        );
        for broken in [r#"<a href="https://matrix.to/#/@x"#, r#"<a href="https://matrix.to/#/@x">open"#, ""] {
            assert_eq!(unpill(broken), broken);
        }
    }

    #[test]
    fn previews_keep_the_first_lines_and_say_where_the_rest_is() {
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let p = preview(&text, 100, "message.txt");
        assert!(p.starts_with("line 0\nline 1\n"), "{p}");
        assert!(p.lines().count() < 20 && p.ends_with("(1000 lines, 9 KiB in all: message.txt)"), "{p}");
        let odd = "ż".repeat(500);
        assert!(preview(&odd, 101, "x").starts_with(&"ż".repeat(50)));
    }

    #[test]
    fn sanitizer_removes_active_content() {
        let dirty = r#"<b onclick="x()">hi</b><script>alert(1)</script><a href="javascript:alert(1)">l</a><img src="https://t/p.gif"><style>*{}</style>"#;
        let clean = sanitize_html(dirty);
        assert_eq!(clean, r#"<b>hi</b><a rel="noopener noreferrer">l</a>"#);
        assert_eq!(sanitize_html("<a href=\"https://ok\">ok</a>"), r#"<a href="https://ok" rel="noopener noreferrer">ok</a>"#);
    }

    #[test]
    fn plain_rendering_of_html() {
        assert_eq!(html_to_plain("<p>a &amp; b</p><p>c&lt;d</p>"), "a & b\nc<d");
        assert_eq!(html_to_plain("x<br>y<script>z</script>"), "x\ny");
        assert_eq!(html_to_plain("unclosed <b"), "unclosed");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_html("<a href='x'>&</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;");
    }

    #[test]
    fn long_texts_are_cut_at_paragraphs_then_lines_then_words() {
        let t = "first paragraph\n\nsecond line one\nsecond line two";
        assert_eq!(split_text(t, 30), vec!["first paragraph\n\n", "second line one\n", "second line two"]);
        assert_eq!(split_text("aaaa bbbb cccc", 10), vec!["aaaa bbbb ", "cccc"]);
        // No break at all: at a character boundary, never inside one.
        assert_eq!(split_text("ééééé", 4), vec!["éé", "éé", "é"]);
        assert_eq!(split_text("", 10), vec![""]);
        let parts = numbered_parts(&"word ".repeat(100), 120);
        assert!(parts.len() > 1 && parts.iter().all(|p| p.len() <= 120), "{parts:?}");
        assert!(parts[0].starts_with(&format!("(1/{}) ", parts.len())));
        assert_eq!(numbered_parts("short", 120), vec!["short"]);
    }

    proptest::proptest! {
        #[test]
        fn pieces_fit_and_make_the_text_again(t in "(\\PC|\n| ){0,400}", max in 1usize..64) {
            let parts = split_text(&t, max);
            proptest::prop_assert_eq!(parts.concat(), t.clone());
            for p in &parts {
                proptest::prop_assert!(p.len() <= max.max(4), "{:?} longer than {}", p, max);
            }
        }
    }
}
