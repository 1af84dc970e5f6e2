//! What a calendar server sends: a WebDAV multistatus, or an iCalendar
//! object expanded into a week of occurrences, and the texts made of them.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway::calendar::fuzz(data));
