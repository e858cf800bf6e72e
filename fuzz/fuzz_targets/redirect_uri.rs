#![no_main]
//! Redirect-URI registration and comparison: never panics; matching is byte equality.
use libfuzzer_sys::fuzz_target;
use tessera_core::redirect::{find_exact, validate_registration};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (registered, requested) = text.split_once('\n').unwrap_or((text, text));
    if let Ok(valid) = validate_registration(registered) {
        assert!(!valid.contains('#'));
        let list = vec![valid.clone()];
        assert_eq!(find_exact(&list, requested).is_some(), valid == requested);
    }
});
