#![no_main]
//! Form/query decoding: never panics; a parsed parameter is single, repeated or absent.
use libfuzzer_sys::fuzz_target;
use tessera_core::params::Params;
use tessera_core::token::TokenRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Params::parse(data) {
        let _ = p.single("client_id");
        let _ = p.multi("resource");
        let _ = TokenRequest::parse(&p);
    }
});
