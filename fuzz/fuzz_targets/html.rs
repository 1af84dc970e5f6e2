//! HTML from another network: sanitized, and made plain text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(html) = std::str::from_utf8(data) {
        let clean = causeway_core::text::sanitize_html(html);
        let _ = causeway_core::text::html_to_plain(&clean);
        let _ = causeway_core::text::html_to_plain(html);
    }
});
