//! The config file: YAML, `${VAR}` and `*_file` references, validation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        causeway::config::fuzz_parse(text);
    }
});
