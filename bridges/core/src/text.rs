//! Rich text helpers shared by every bridge.

use std::collections::HashSet;
use std::sync::LazyLock;

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let tags: HashSet<&str> = [
        "a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li",
        "ol", "p", "pre", "s", "span", "strike", "strong", "sub", "sup", "u", "ul",
    ]
    .into_iter()
    .collect();
    let mut b = ammonia::Builder::default();
    b.tags(tags)
        .url_schemes(["http", "https", "mailto", "xmpp", "matrix"].into_iter().collect())
        .link_rel(Some("noopener noreferrer"));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
