//! JWT parsing faces untrusted input (`id_token_hint`): it never panics and never accepts
//! a token it did not sign.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use tessera_crypto::jose::{verify_jwt, SigningAlg, SigningKey};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn arbitrary_tokens_are_refused_without_panic(token in "\\PC{0,300}", dots in "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}") {
        let key = SigningKey::generate(SigningAlg::EdDSA, "k".into()).unwrap();
        prop_assert!(verify_jwt(&token, &[key.verifier()]).is_none());
        prop_assert!(verify_jwt(&dots, &[key.verifier()]).is_none());
    }
}
