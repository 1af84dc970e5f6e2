//! A mail in the bridge's mailbox: the container count, the MIME parser,
//! the policy (Authentication-Results), the text, HTML and attachments.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_email::fuzz::mail(data));
