#![no_main]
//! JWT parsing (`id_token_hint`): never panics, never accepts a token it did not sign.
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera_crypto::jose::{verify_jwt, SigningAlg, SigningKey, Verifier};

fn verifiers() -> &'static Vec<Verifier> {
    static KEYS: OnceLock<Vec<Verifier>> = OnceLock::new();
    KEYS.get_or_init(|| {
        SigningAlg::ALL
            .iter()
            .filter_map(|a| SigningKey::generate(*a, a.as_str().to_lowercase()).ok())
            .map(|k| k.verifier())
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    assert!(verify_jwt(text, verifiers()).is_none());
});
