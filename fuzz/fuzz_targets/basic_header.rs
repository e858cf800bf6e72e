#![no_main]
//! HTTP Basic client credentials: never panics; a decoded id is never empty.
use libfuzzer_sys::fuzz_target;
use tessera_core::client::parse_basic;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((id, _secret)) = parse_basic(text) {
        assert!(!id.is_empty());
    }
});
