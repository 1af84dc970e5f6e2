//! Message styling (XEP-0393) ↔ HTML. XMPP bodies are plain text with
//! `*strong*`, `_emphasis_`, `~strike~`, `` `code` ``, ```` ``` ```` blocks and
//! `> ` quotes; other networks carry HTML.

use causeway_core::text::escape_html;

/// HTML for a styled body, or `None` when the body uses no styling.
pub fn to_html(body: &str) -> Option<String> {
    let mut out = String::new();
    let mut styled = false;
    let mut lines = body.split('\n').peekable();
    let mut first = true;
    while let Some(line) = lines.next() {
        if !first {
            out.push_str("<br>");
        }
        first = false;
        if line.starts_with("```") {
            // A preformatted block runs to a line of ``` or the end.
            let mut block = Vec::new();
            for l in lines.by_ref() {
                if l == "```" {
                    break;
                }
                block.push(l);
            }
            out.push_str("<pre><code>");
            out.push_str(&escape_html(&block.join("\n")));
            out.push_str("</code></pre>");
            styled = true;
            first = true;
            continue;
        }
        if let Some(quoted) = line.strip_prefix('>') {
            out.push_str("<blockquote>");
            out.push_str(&spans(quoted.strip_prefix(' ').unwrap_or(quoted), &mut styled));
            out.push_str("</blockquote>");
            styled = true;
            first = true;
            continue;
        }
        out.push_str(&spans(line, &mut styled));
    }
    styled.then_some(out)
}

/// Inline spans of one line.
fn spans(line: &str, styled: &mut bool) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let tag = match c {
            '*' => Some("strong"),
            '_' => Some("em"),
            '~' => Some("del"),
            '`' => Some("code"),
            _ => None,
        };
        // An opening directive starts a word and is followed by a non-space;
        // the closing one is preceded by a non-space, on the same line.
        let opens =
            tag.is_some() && (i == 0 || chars[i - 1].is_whitespace()) && chars.get(i + 1).is_some_and(|n| !n.is_whitespace() && *n != c);
        if let (true, Some(tag)) = (opens, tag)
            && let Some(len) = chars[i + 1..].iter().position(|&x| x == c)
            && !chars[i + len].is_whitespace()
        {
            let inner: String = chars[i + 1..i + 1 + len].iter().collect();
            let inner = if tag == "code" { escape_html(&inner) } else { spans(&inner, styled) };
            out.push_str(&format!("<{tag}>{inner}</{tag}>"));
            *styled = true;
            i += len + 2;
            continue;
        }
        out.push_str(&escape_html(&c.to_string()));
        i += 1;
    }
    out
}

/// A styled plain-text body for (sanitized) HTML.
pub fn from_html(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    let mut in_pre = false;
    let mut quote_depth = 0usize;
    let mut link: Option<String> = None;
    let mut link_text_start = 0;
    while !rest.is_empty() {
        if let Some(stripped) = rest.strip_prefix('<') {
            let Some(end) = stripped.find('>') else {
                break;
            };
            let tag = &stripped[..end];
            rest = &stripped[end + 1..];
            let closing = tag.starts_with('/');
            let name: String =
                tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
            match (name.as_str(), closing) {
                ("strong" | "b", _) => out.push('*'),
                ("em" | "i", _) => out.push('_'),
                ("del" | "s" | "strike", _) => out.push('~'),
                ("code", _) if !in_pre => out.push('`'),
                ("pre", false) => {
                    in_pre = true;
                    newline(&mut out);
                    out.push_str("```\n");
                }
                ("pre", true) => {
                    in_pre = false;
                    newline(&mut out);
                    out.push_str("```\n");
                }
                ("br", _) => out.push('\n'),
                ("p" | "li" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol", true) => newline(&mut out),
                ("li", false) => out.push_str("• "),
                ("blockquote", false) => {
                    newline(&mut out);
                    quote_depth += 1;
                }
                ("blockquote", true) => {
                    quote_depth = quote_depth.saturating_sub(1);
                    newline(&mut out);
                }
                ("a", false) => {
                    link = attr(tag, "href");
                    link_text_start = out.len();
                }
                ("a", true) => {
                    if let Some(href) = link.take()
                        && out.get(link_text_start..) != Some(href.as_str())
                    {
                        out.push_str(&format!(" <{href}>"));
                    }
                }
                _ => {}
            }
            continue;
        }
        let next = rest.find('<').unwrap_or(rest.len());
        let text = decode(&rest[..next]);
        for (k, part) in text.split('\n').enumerate() {
            if k > 0 {
                out.push('\n');
            }
            if quote_depth > 0 && (out.is_empty() || out.ends_with('\n')) && !part.is_empty() {
                out.push_str(&"> ".repeat(quote_depth));
            }
            out.push_str(part);
        }
        rest = &rest[next..];
    }
    out.trim_end().to_string()
}

fn newline(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let i = tag.find(&format!("{name}=\""))?;
    let v = &tag[i + name.len() + 2..];
    Some(decode(&v[..v.find('"')?]))
}

fn decode(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&nbsp;", " ").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styling_becomes_html() {
        assert_eq!(to_html("plain text, 2*3*4"), None);
        assert_eq!(
            to_html("a *bold* _it_ ~gone~ `x<y`").unwrap(),
            "a <strong>bold</strong> <em>it</em> <del>gone</del> <code>x&lt;y</code>"
        );
        assert_eq!(to_html("> quoted\nanswer *yes*").unwrap(), "<blockquote>quoted</blockquote>answer <strong>yes</strong>");
        assert_eq!(to_html("```\nfn *x*()\n```\nafter").unwrap(), "<pre><code>fn *x*()</code></pre>after");
        assert_eq!(to_html("not * bold* and *open"), None);
        assert_eq!(to_html("<b>literal</b> *b*").unwrap(), "&lt;b&gt;literal&lt;/b&gt; <strong>b</strong>");
    }

    #[test]
    fn html_becomes_styling() {
        assert_eq!(from_html("<p>a <strong>b</strong> <em>c</em> <del>d</del> <code>e</code></p>"), "a *b* _c_ ~d~ `e`");
        assert_eq!(from_html("<blockquote>q1<br>q2</blockquote><p>reply &amp; more</p>"), "> q1\n> q2\nreply & more");
        assert_eq!(from_html("<pre><code>x &lt; y</code></pre>"), "```\nx < y\n```");
        assert_eq!(from_html("<ul><li>one</li><li>two</li></ul>"), "• one\n• two");
        assert_eq!(
            from_html(r#"<a href="https://x.org/">site</a> <a href="https://y.org">https://y.org</a>"#),
            "site <https://x.org/> https://y.org"
        );
        assert_eq!(from_html("unclosed <b"), "unclosed");
    }

    #[test]
    fn round_trip_of_simple_styling() {
        for s in ["*bold* and _em_", "> quote\ntext ~x~"] {
            assert_eq!(from_html(&to_html(s).unwrap()), s);
        }
    }
}
