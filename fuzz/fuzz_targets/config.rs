//! The config file: YAML, `${VAR}` and `*_file` references, validation.
#![no_main]
use std::path::Path;

struct Nothing;

impl causeway::config::Source for Nothing {
    fn var(&self, name: &str) -> Option<String> {
        (name == "SET").then(|| "value".to_string())
    }
    fn read(&self, _path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no files here"))
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = causeway::config::parse(text, &Nothing);
    }
});
