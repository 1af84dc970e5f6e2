//! A stanza from the XMPP server: depth guard, XML parser, stanza types,
//! the bridge's reading of messages and presence.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_xmpp::fuzz::stanza(data));
