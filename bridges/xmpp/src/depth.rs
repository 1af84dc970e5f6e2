//! A guard on the bytes the XMPP server sends: elements nested deeper than
//! any stanza needs are cut out before the XML parser sees them.
//!
//! The parser behind tokio-xmpp builds each element by handing every event
//! down the chain of open elements, one call per level: a stanza nested a
//! few thousand levels deep (well within a server's stanza size limit)
//! overflows the stack and ends the process. Cutting such elements out of
//! the byte stream keeps every stanza well-formed and the rest of it intact.
//!
//! XMPP streams carry no comments, processing instructions (but the XML
//! declaration), DTDs or CDATA sections (RFC 6120 §11.1), and `<` appears
//! in no text or attribute value unescaped: start tags, end tags and empty
//! elements are all there is to count.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where the reader is in the markup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Text,
    /// Just after `<`: what follows tells a start from an end tag.
    Lt,
    /// In a start tag; `slash`: the last character was `/` (so `>` ends
    /// an empty element).
    Start {
        slash: bool,
    },
    /// In an attribute value quoted by this byte.
    Quoted(u8),
    End,
    /// `<?…?>` or `<!…>` (only the XML declaration is expected).
    Other {
        question: bool,
    },
}

/// Counts depth over the bytes read and leaves out every element that
/// would open deeper than `max` (the stream's own element is level 1).
#[derive(Debug)]
pub(crate) struct Filter {
    max: usize,
    depth: usize,
    at: At,
    /// Leaving out what lies below this depth (the depth before the element
    /// that was too deep opened).
    skipping_to: Option<usize>,
    /// Elements left out so far.
    pub cut: Arc<AtomicU64>,
}

impl Filter {
    pub(crate) fn new(max: usize) -> Self {
        Filter { max, depth: 0, at: At::Text, skipping_to: None, cut: Arc::default() }
    }

    /// Filter `input`, appending what is kept to `out`.
    pub(crate) fn run(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            // A `<` is held back until the next byte says what it opens.
            let mut emit_lt = false;
            let mut emit = self.skipping_to.is_none();
            self.at = match (self.at, b) {
                (At::Text, b'<') => {
                    emit = false;
                    At::Lt
                }
                (At::Text, _) => At::Text,
                (At::Lt, b'/') => {
                    emit_lt = self.skipping_to.is_none();
                    At::End
                }
                (At::Lt, b'?') | (At::Lt, b'!') => {
                    emit_lt = self.skipping_to.is_none();
                    At::Other { question: false }
                }
                (At::Lt, _) => {
                    if self.skipping_to.is_none() && self.depth >= self.max {
                        self.skipping_to = Some(self.depth);
                        self.cut.fetch_add(1, Ordering::Relaxed);
                    }
                    emit = self.skipping_to.is_none();
                    emit_lt = emit;
                    At::Start { slash: b == b'/' }
                }
                (At::Start { .. }, b'"' | b'\'') => At::Quoted(b),
                (At::Start { slash }, b'>') => {
                    if !slash {
                        self.depth += 1;
                    } else if self.skipping_to == Some(self.depth) {
                        // An empty element was the one left out.
                        self.skipping_to = None;
                    }
                    At::Text
                }
                (At::Start { .. }, b'/') => At::Start { slash: true },
                (At::Start { .. }, _) => At::Start { slash: false },
                (At::Quoted(q), b) if b == q => At::Start { slash: false },
                (At::Quoted(q), _) => At::Quoted(q),
                (At::End, b'>') => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.skipping_to == Some(self.depth) {
                        // The left-out element closed: this `>` is its last byte.
                        self.skipping_to = None;
                        emit = false;
                    }
                    At::Text
                }
                (At::End, _) => At::End,
                (At::Other { question: true }, b'>') => At::Text,
                (At::Other { .. }, b'?') => At::Other { question: true },
                (At::Other { .. }, b'>') => At::Text,
                (At::Other { .. }, _) => At::Other { question: false },
            };
            if emit_lt {
                out.push(b'<');
            }
            if emit && !matches!(self.at, At::Lt) {
                out.push(b);
            }
        }
    }
}

/// A connection whose reads pass through a [`Filter`].
pub(crate) struct Guarded<T> {
    inner: T,
    filter: Filter,
    /// Read and filtered, not yet handed on.
    ready: Vec<u8>,
    ready_from: usize,
    scratch: Vec<u8>,
}

impl<T> Guarded<T> {
    pub(crate) fn new(inner: T, max: usize) -> Self {
        Guarded { inner, filter: Filter::new(max), ready: Vec::new(), ready_from: 0, scratch: vec![0; 16 * 1024] }
    }

    /// The count of elements left out, to watch from elsewhere.
    pub(crate) fn cut(&self) -> Arc<AtomicU64> {
        self.filter.cut.clone()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_from < this.ready.len() {
                let n = (this.ready.len() - this.ready_from).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_from..this.ready_from + n]);
                this.ready_from += n;
                return Poll::Ready(Ok(()));
            }
            this.ready.clear();
            this.ready_from = 0;
            let mut raw = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut raw) {
                Poll::Ready(Ok(())) => {
                    let got = raw.filled().len();
                    if got == 0 {
                        return Poll::Ready(Ok(())); // the end of the stream
                    }
                    this.filter.run(&this.scratch[..got], &mut this.ready);
                    // All of it left out: read on (handing on nothing would
                    // mean the end of the stream).
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(max: usize, input: &str, chunk: usize) -> (String, u64) {
        let mut f = Filter::new(max);
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(chunk.max(1)) {
            f.run(piece, &mut out);
        }
        (String::from_utf8(out).unwrap(), f.cut.load(Ordering::Relaxed))
    }

    const STREAM: &str =
        "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='x'>";

    #[test]
    fn shallow_streams_pass_unchanged_in_any_chunks() {
        let s = format!(
            "{STREAM}<message to='a@b' a=\"x>y\" b='/>'><body>1 &lt; 2 > 0</body><x xmlns='u'/><y/></message><presence/></stream:stream>"
        );
        for chunk in [1, 2, 3, 7, 1000] {
            assert_eq!(filtered(8, &s, chunk), (s.clone(), 0), "chunks of {chunk}");
        }
    }

    #[test]
    fn what_is_too_deep_is_cut_and_the_rest_kept() {
        // Level 1 the stream, 2 the message, 3 the body and <a>, 4 <b> …
        let s = format!("{STREAM}<message><body>hi</body><a><b><c>deep<d/></c></b><e/></a></message><message><body>next</body></message>");
        let want = format!("{STREAM}<message><body>hi</body><a><b></b><e/></a></message><message><body>next</body></message>");
        for chunk in [1, 2, 5, 1000] {
            assert_eq!(filtered(4, &s, chunk), (want.clone(), 1), "chunks of {chunk}");
        }
        // An empty element at the cut.
        let s = format!("{STREAM}<message><a><b><c/></b></a></message>");
        assert_eq!(filtered(4, &s, 1), (format!("{STREAM}<message><a><b></b></a></message>"), 1));
    }

    #[test]
    fn a_hundred_thousand_levels_are_cut_to_the_limit() {
        let depth = 100_000;
        let s = format!(
            "{STREAM}<message><body>deep</body>{}{}</message><message><body>after</body></message>",
            "<x>".repeat(depth),
            "</x>".repeat(depth)
        );
        let (out, cut) = filtered(128, &s, 4096);
        assert_eq!(cut, 1);
        assert!(out.len() < 2000, "{} bytes kept", out.len());
        assert!(out.ends_with("</message><message><body>after</body></message>"), "{}", &out[out.len() - 80..]);
        // Levels 3 to 128 are kept: the stream is 1, the message 2.
        assert_eq!(out.matches("<x>").count(), 126);
        assert_eq!(out.matches("</x>").count(), 126);
    }
}
