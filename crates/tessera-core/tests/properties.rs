//! Property tests: the parsers that face untrusted input never panic and keep their
//! invariants on arbitrary input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use tessera_core::client::parse_basic;
use tessera_core::params::Params;
use tessera_core::pkce::CodeChallenge;
use tessera_core::redirect::{find_exact, validate_registration};
use tessera_core::ScopeSet;

proptest! {
    #[test]
    fn params_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(p) = Params::parse(&bytes) {
            // A parameter is either single, repeated (error), or absent; never a panic.
            let _ = p.single("client_id");
            let _ = p.multi("resource");
        }
    }

    #[test]
    fn repeated_names_are_always_refused(name in "[a-z_]{1,12}", a in "[a-zA-Z0-9]{1,8}", b in "[a-zA-Z0-9]{1,8}") {
        let p = Params::parse(format!("{name}={a}&{name}={b}").as_bytes()).unwrap();
        prop_assume!(name != "resource" && name != "audience");
        prop_assert!(p.single(&name).is_err());
    }

    #[test]
    fn redirect_matching_is_string_equality(registered in "\\PC{0,60}", requested in "\\PC{0,60}") {
        let list = vec![registered.clone()];
        prop_assert_eq!(find_exact(&list, &requested).is_some(), registered == requested);
        let _ = validate_registration(&registered);
    }

    #[test]
    fn registered_redirects_have_no_fragment(uri in "(https|http|com\\.app)://[a-z0-9.:@#/?%-]{0,40}") {
        if let Ok(ok) = validate_registration(&uri) {
            prop_assert!(!ok.contains('#'));
            prop_assert_eq!(ok, uri);
        }
    }

    #[test]
    fn basic_header_never_panics(header in "\\PC{0,200}") {
        let _ = parse_basic(&header);
        let _ = parse_basic(&format!("Basic {header}"));
    }

    #[test]
    fn scope_round_trips(tokens in proptest::collection::vec("[!#-\\[\\]-~]{1,10}", 0..6)) {
        let text = tokens.join(" ");
        let set = ScopeSet::parse(&text).unwrap();
        prop_assert_eq!(ScopeSet::parse(&set.to_string()).unwrap(), set);
    }

    #[test]
    fn pkce_never_panics(challenge in "\\PC{0,80}", verifier in "\\PC{0,200}") {
        if let Ok(c) = CodeChallenge::parse(&challenge, Some("S256")) {
            let _ = c.verify(&verifier);
        }
    }
}
