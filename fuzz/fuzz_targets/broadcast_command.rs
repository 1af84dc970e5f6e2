//! What someone writes in a room that may be `!broadcast …`: the command
//! read from it, its targets, and the request made of it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        causeway::broadcast::fuzz_command(text);
    }
});
