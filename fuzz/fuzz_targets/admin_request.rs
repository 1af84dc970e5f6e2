//! What a client sends the console: a Cookie header (the first line) and a
//! request body (the rest), read as every kind of body the API takes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    causeway::admin::fuzz_request(data);
});
