//! Proof Key for Code Exchange (RFC 7636), S256 only (RFC 9700 §2.1.1, OAuth 2.1 §4.1.1).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::OAuthError;

/// A code challenge as sent to the authorization endpoint; only `S256` is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// RFC 7636 §4.3. An absent method means `plain` (§4.3), which we refuse, as we do
    /// `plain` itself: it offers no protection once the challenge leaks.
    pub fn parse(challenge: &str, method: Option<&str>) -> Result<CodeChallenge, OAuthError> {
        match method {
            Some("S256") => {}
            Some("plain") | None => {
                return Err(OAuthError::invalid_request(
                    "code_challenge_method must be S256; plain is not supported",
                ))
            }
            Some(_) => {
                return Err(OAuthError::invalid_request(
                    "unsupported code_challenge_method; use S256",
                ))
            }
        }
        // base64url(SHA-256) is always 43 characters.
        let well_formed = challenge.len() == 43
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(OAuthError::invalid_request(
                "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
            ));
        }
        Ok(CodeChallenge(challenge.to_owned()))
    }

    /// Restores a challenge already validated at the authorization endpoint.
    pub fn from_stored(challenge: String) -> CodeChallenge {
        CodeChallenge(challenge)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RFC 7636 §4.6, compared in constant time.
    pub fn verify(&self, verifier: &str) -> Result<(), OAuthError> {
        // §4.1: 43..128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
        let well_formed = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !well_formed {
            return Err(OAuthError::invalid_grant("code_verifier is malformed"));
        }
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if bool::from(computed.as_bytes().ct_eq(self.0.as_bytes())) {
            Ok(())
        } else {
            Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b() {
        let c = CodeChallenge::parse(CHALLENGE, Some("S256")).unwrap();
        assert!(c.verify(VERIFIER).is_ok());
        assert!(c.verify(&VERIFIER.replace('d', "e")).is_err());
    }

    #[test]
    fn plain_and_missing_method_refused() {
        assert!(CodeChallenge::parse(CHALLENGE, Some("plain")).is_err());
        assert!(CodeChallenge::parse(CHALLENGE, None).is_err());
        assert!(CodeChallenge::parse("short", Some("S256")).is_err());
    }

    #[test]
    fn malformed_verifier_refused() {
        let c = CodeChallenge::parse(CHALLENGE, Some("S256")).unwrap();
        assert!(c.verify("too-short").is_err());
        assert!(c.verify(&"a".repeat(129)).is_err());
    }
}
