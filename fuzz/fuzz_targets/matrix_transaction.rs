//! A transaction the homeserver pushes, its events read as the bridge reads them.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_matrix::fuzz::transaction(data));
