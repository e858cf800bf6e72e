//! Signing keys, JWKS and compact JWS for ID tokens and JWT access tokens.
//!
//! The cryptography is aws-lc-rs; the compact-JWS framing (RFC 7515 §7.1) is small enough
//! to write out, and keeping it here means the algorithm is always taken from our own key,
//! never from a token's header (no `alg: none`, no algorithm confusion).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey,
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use crate::{b64url, b64url_decode, CryptoError};

/// JWS algorithms Tessera signs with (RFC 7518 §3.1, RFC 8037 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SigningAlg {
    EdDSA,
    ES256,
    RS256,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 3] = [SigningAlg::RS256, SigningAlg::ES256, SigningAlg::EdDSA];

    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::EdDSA => "EdDSA",
            SigningAlg::ES256 => "ES256",
            SigningAlg::RS256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<SigningAlg> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The left half of the token's hash, base64url: OIDC Core §3.1.3.6 `at_hash`. The
    /// hash is the one of the JWS algorithm: SHA-256 for RS256/ES256, SHA-512 for Ed25519.
    pub fn half_hash(self, value: &str) -> String {
        match self {
            SigningAlg::RS256 | SigningAlg::ES256 => {
                let d = Sha256::digest(value.as_bytes());
                b64url(&d[..16])
            }
            SigningAlg::EdDSA => {
                let d = Sha512::digest(value.as_bytes());
                b64url(&d[..32])
            }
        }
    }
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private signing key with its key id.
pub struct SigningKey {
    pub kid: String,
    pub alg: SigningAlg,
    pkcs8: Zeroizing<Vec<u8>>,
    pair: Pair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn unspecified(what: &str) -> CryptoError {
    CryptoError::Key(what.to_owned())
}

impl SigningKey {
    /// A fresh key for `alg` (RSA: 2048 bits).
    pub fn generate(alg: SigningAlg, kid: String) -> Result<SigningKey, CryptoError> {
        let pkcs8: Vec<u8> = match alg {
            SigningAlg::EdDSA => Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| unspecified("Ed25519 generation failed"))?
                .as_ref()
                .to_vec(),
            SigningAlg::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(|_| unspecified("P-256 generation failed"))?
                    .as_ref()
                    .to_vec()
            }
            SigningAlg::RS256 => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map_err(|_| unspecified("RSA generation failed"))?
                .as_ref()
                .to_vec(),
        };
        Self::from_pkcs8(alg, kid, &pkcs8)
    }

    pub fn from_pkcs8(
        alg: SigningAlg,
        kid: String,
        pkcs8: &[u8],
    ) -> Result<SigningKey, CryptoError> {
        let bad = |_| unspecified("stored key does not parse");
        let pair = match alg {
            SigningAlg::EdDSA => Pair::Ed(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(bad)?),
            SigningAlg::ES256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map_err(bad)?,
            ),
            SigningAlg::RS256 => Pair::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(bad)?),
        };
        Ok(SigningKey {
            kid,
            alg,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            pair,
        })
    }

    /// The PKCS#8 private key, for sealing before it is stored.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public JWK (RFC 7517) with `kid`, `use` and `alg`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = match &self.pair {
            Pair::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(k.public_key().as_ref())})
            }
            Pair::Ec(k) => {
                // Uncompressed SEC1 point: 0x04 || X || Y.
                let p = k.public_key().as_ref();
                let (x, y) = (p.get(1..33).unwrap_or(&[]), p.get(33..65).unwrap_or(&[]));
                json!({"kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y)})
            }
            Pair::Rsa(k) => {
                let c = PublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty": "RSA", "n": b64url(&c.n), "e": b64url(&c.e)})
            }
        };
        if let Some(o) = jwk.as_object_mut() {
            o.insert("kid".into(), json!(self.kid));
            o.insert("use".into(), json!("sig"));
            o.insert("alg".into(), json!(self.alg.as_str()));
        }
        jwk
    }

    /// The verification half of this key.
    pub fn verifier(&self) -> Verifier {
        let public = match &self.pair {
            Pair::Ed(k) => k.public_key().as_ref().to_vec(),
            Pair::Ec(k) => k.public_key().as_ref().to_vec(),
            Pair::Rsa(k) => k.public_key().as_ref().to_vec(),
        };
        Verifier {
            kid: self.kid.clone(),
            alg: self.alg,
            public,
        }
    }

    /// Signs `claims` as a compact JWS with header `{alg, kid, typ}`.
    pub fn sign_jwt(&self, typ: &str, claims: &Value) -> Result<String, CryptoError> {
        // Both serialized straight to bytes: `Value`'s `Display` (`to_string`) writes
        // through `fmt::Write` a piece at a time, and was 2 % of a refresh's instructions.
        let header = JwsHeader {
            alg: self.alg.as_str(),
            kid: &self.kid,
            typ,
        };
        let header =
            serde_json::to_vec(&header).map_err(|_| unspecified("JWS header serialization"))?;
        let claims =
            serde_json::to_vec(claims).map_err(|_| unspecified("JWT claims serialization"))?;
        let mut out = String::with_capacity((header.len() + claims.len()) * 4 / 3 + 400);
        URL_SAFE_NO_PAD.encode_string(&header, &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut out);
        let sig = match &self.pair {
            Pair::Ed(k) => k.sign(out.as_bytes()).as_ref().to_vec(),
            Pair::Ec(k) => k
                .sign(&SystemRandom::new(), out.as_bytes())
                .map_err(|_| unspecified("ECDSA signing failed"))?
                .as_ref()
                .to_vec(),
            Pair::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    out.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| unspecified("RSA signing failed"))?;
                sig
            }
        };
        out.push('.');
        out.push_str(&b64url(&sig));
        Ok(out)
    }
}

/// The protected header of every JWS we sign. Its members are in the order `json!` gave
/// them (alphabetical), so the serialized header is what it was.
#[derive(serde::Serialize)]
struct JwsHeader<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'a str,
}

/// A public key that verifies JWS made by the matching [`SigningKey`].
#[derive(Debug, Clone)]
pub struct Verifier {
    pub kid: String,
    pub alg: SigningAlg,
    public: Vec<u8>,
}

/// Verifies a compact JWS made by one of `keys` (chosen by `kid`, algorithm taken from the
/// key) and returns its claims. Expiry and audience are the caller's business.
pub fn verify_jwt(token: &str, keys: &[Verifier]) -> Option<Value> {
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&b64url_decode(h)?).ok()?;
    let kid = header.get("kid")?.as_str()?;
    let key = keys.iter().find(|k| k.kid == kid)?;
    if header.get("alg")?.as_str()? != key.alg.as_str() {
        return None;
    }
    let sig = b64url_decode(s)?;
    let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
    let alg: &dyn signature::VerificationAlgorithm = match key.alg {
        SigningAlg::EdDSA => &signature::ED25519,
        SigningAlg::ES256 => &ECDSA_P256_SHA256_FIXED,
        SigningAlg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
    };
    UnparsedPublicKey::new(alg, &key.public)
        .verify(signed, &sig)
        .ok()?;
    serde_json::from_slice(&b64url_decode(p)?).ok()
}

/// AES-256-GCM sealing of key material at rest, under a subkey of the master key.
pub struct Sealer {
    key: aws_lc_rs::aead::LessSafeKey,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Result<Sealer, CryptoError> {
        let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key)
            .map_err(|_| unspecified("AEAD key"))?;
        Ok(Sealer {
            key: aws_lc_rs::aead::LessSafeKey::new(unbound),
        })
    }

    /// `nonce || ciphertext || tag`, bound to `aad` (the key id), so a sealed key cannot be
    /// swapped onto another record.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; 12];
        crate::fill_random(&mut nonce)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                aws_lc_rs::aead::Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| unspecified("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (nonce, ct) = sealed
            .split_at_checked(12)
            .ok_or_else(|| unspecified("sealed key too short"))?;
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| unspecified("nonce"))?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let plain = self
            .key
            .open_in_place(
                aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                aws_lc_rs::aead::Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| {
                unspecified("sealed key does not open: wrong master key or tampered record")
            })?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_signs_and_verifies() {
        for alg in SigningAlg::ALL {
            let key = SigningKey::generate(alg, format!("k-{}", alg.as_str())).unwrap();
            let token = key.sign_jwt("JWT", &json!({"sub": "u1"})).unwrap();
            let claims = verify_jwt(&token, &[key.verifier()]).unwrap();
            assert_eq!(claims["sub"], "u1");
            // Tampering breaks the signature.
            let mut bad = token.clone();
            bad.insert(token.find('.').unwrap() + 2, 'A');
            assert!(verify_jwt(&bad, &[key.verifier()]).is_none());
            // Round trip through PKCS#8 keeps the key.
            let again = SigningKey::from_pkcs8(alg, key.kid.clone(), key.pkcs8()).unwrap();
            assert_eq!(again.public_jwk(), key.public_jwk());
        }
    }

    #[test]
    fn the_header_and_claims_are_their_compact_json() {
        let key = SigningKey::generate(SigningAlg::EdDSA, "k-1".into()).unwrap();
        let claims = json!({"sub": "u\"1", "aud": ["a", "b"], "exp": 1});
        let token = key.sign_jwt("at+jwt", &claims).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = b64url_decode(parts[0]).unwrap();
        assert_eq!(header, br#"{"alg":"EdDSA","kid":"k-1","typ":"at+jwt"}"#);
        let payload = b64url_decode(parts[1]).unwrap();
        assert_eq!(payload, br#"{"aud":["a","b"],"exp":1,"sub":"u\"1"}"#);
        assert_eq!(verify_jwt(&token, &[key.verifier()]), Some(claims));
    }

    #[test]
    fn header_alg_must_match_the_key() {
        let key = SigningKey::generate(SigningAlg::ES256, "k".into()).unwrap();
        let token = key.sign_jwt("JWT", &json!({})).unwrap();
        let forged_header = b64url(br#"{"alg":"none","kid":"k"}"#);
        let rest = &token[token.find('.').unwrap()..];
        assert!(verify_jwt(&format!("{forged_header}{rest}"), &[key.verifier()]).is_none());
    }

    #[test]
    fn sealing_round_trips_and_binds_aad() {
        let s = Sealer::new(&[7u8; 32]).unwrap();
        let sealed = s.seal(b"secret key", b"kid-1").unwrap();
        assert_eq!(&*s.open(&sealed, b"kid-1").unwrap(), b"secret key");
        assert!(s.open(&sealed, b"kid-2").is_err());
        assert!(Sealer::new(&[8u8; 32])
            .unwrap()
            .open(&sealed, b"kid-1")
            .is_err());
    }
}
