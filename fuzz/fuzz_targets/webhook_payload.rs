//! A webhook body: the native JSON (with `to` for direct endpoints) and
//! Slack's; the first byte chooses.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    if which % 2 == 0 {
        let _ = causeway_webhook::payload::parse_native_to("w", body, Some("id".into()));
    } else {
        let _ = causeway_webhook::payload::parse_slack("w", body, None);
    }
});
