//! XEP-0393 message styling to HTML and back.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_xmpp::fuzz::styling(data));
