//! What someone types into an archive search: the FTS5 query made of it
//! (quoted terms only, whatever came in), PostgreSQL's tsquery and
//! tsvector made of that (quoted words and operators only), and the times
//! it may give.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        causeway::archive::fuzz_query(text);
        causeway::store::postgres::fuzz_search(text);
    }
});
