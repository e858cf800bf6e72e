//! Secrets and their hashes: random tokens, keyed and unkeyed digests, Argon2id passwords.
//!
//! Everything that compares a secret does so in constant time (`subtle`), and nothing here
//! logs or formats a secret: token types redact themselves in `Debug`.

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub mod jose;

/// Bytes of entropy in every token, code and client secret (RFC 9700 §2.1, > 128 bits).
pub const TOKEN_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the operating system random source failed: {0}")]
    Random(String),
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    #[error("key error: {0}")]
    Key(String),
    #[error("malformed master key: {0}")]
    MasterKey(&'static str),
}

/// Fills `buf` from AWS-LC's CSPRNG: a per-thread CTR-DRBG seeded and periodically
/// reseeded from the operating system. Reading the OS source directly cost two
/// `getrandom` system calls per token response.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| CryptoError::Random("AWS-LC's DRBG failed".into()))
}

/// A fresh secret that is checked against one stored digest and never looked up by it
/// (client secrets): `prefix`, then 256 random bits in base64url. Prefixes (`tcs_`, `tat_`,
/// …) let secret scanners and our own revocation endpoint tell secrets apart without a
/// lookup; they carry no entropy of their own.
pub fn random_secret(prefix: &str) -> Result<String, CryptoError> {
    mint_secret(prefix, None)
}

/// A fresh secret stored under its key (tokens, codes, sessions): `prefix`, the issue time,
/// then 256 random bits in base64url. The issue time (milliseconds, 12 hex digits) is not
/// secret: it makes the storage key (see [`SecretHash::of`]) sort by time, so a commit of
/// many new tokens appends to the right edge of the key index instead of dirtying one
/// random page per token.
pub fn random_token(prefix: &str, now_millis: u64) -> Result<String, CryptoError> {
    mint_secret(prefix, Some(now_millis))
}

fn mint_secret(prefix: &str, issue_time: Option<u64>) -> Result<String, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    fill_random(bytes.as_mut())?;
    let mut out = String::with_capacity(prefix.len() + ISSUE_TIME_DIGITS + 43);
    out.push_str(prefix);
    if let Some(millis) = issue_time {
        write_issue_time(&mut out, millis);
    }
    URL_SAFE_NO_PAD.encode_string(bytes.as_ref(), &mut out);
    Ok(out)
}

/// Hex digits of the millisecond times in minted secrets and sortable ids (48 bits: until
/// the year 10889).
const ISSUE_TIME_DIGITS: usize = 12;

fn write_issue_time(out: &mut String, millis: u64) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(out, "{:012x}", millis & 0xffff_ffff_ffff);
}

/// The issue time a minted secret carries: after the prefix (up to its first `_`), exactly
/// 12 lowercase hex digits followed by the 43 characters of 256 random bits. Secrets minted
/// before issue times existed (prefix + 43 characters) and foreign strings have none.
fn issue_time_of(secret: &str) -> Option<[u8; 6]> {
    let (_, rest) = secret.split_once('_')?;
    if rest.len() != ISSUE_TIME_DIGITS + 43 {
        return None;
    }
    let digits = rest.get(..ISSUE_TIME_DIGITS)?;
    if !digits
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let millis = u64::from_str_radix(digits, 16).ok()?;
    let mut time = [0u8; 6];
    time.copy_from_slice(&millis.to_be_bytes()[2..]);
    Some(time)
}

/// A non-secret identifier that sorts by creation time: the milliseconds since the epoch
/// in fixed-width hex, then 80 random bits in base64url. Rows keyed by it are appended at
/// the right edge of their B-tree indexes instead of at random pages, so a commit of many
/// new rows dirties (and writes) a few pages rather than one page per row.
pub fn sortable_id(now_millis: u64) -> Result<String, CryptoError> {
    let mut random = [0u8; 10];
    fill_random(&mut random)?;
    let mut out = String::with_capacity(ISSUE_TIME_DIGITS + 14);
    write_issue_time(&mut out, now_millis);
    URL_SAFE_NO_PAD.encode_string(random, &mut out);
    Ok(out)
}

/// A non-secret random identifier (client ids, grant ids, session ids' public part).
pub fn random_id(bytes: usize) -> Result<String, CryptoError> {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// SHA-256 digest under which a high-entropy secret (token, code, client secret) is stored.
/// Secrets we generate carry 256 bits of entropy, so a fast unkeyed hash cannot be brute
/// forced; a slow password hash here would only slow the token endpoint (Hydra's lesson).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// The storage key of `secret`. For a secret carrying its issue time (as minted by
    /// [`random_token`]) that is the 48-bit time followed by the first 208 bits of SHA-256,
    /// so keys of new rows sort by time; otherwise (older secrets, client-chosen strings)
    /// the whole SHA-256. Both are deterministic, so a lookup finds what was stored, and
    /// 208 bits keep preimages and collisions out of reach.
    pub fn of(secret: &str) -> Self {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        match issue_time_of(secret) {
            Some(time) => {
                let mut key = [0u8; 32];
                key[..6].copy_from_slice(&time);
                key[6..].copy_from_slice(&digest[..26]);
                SecretHash(key)
            }
            None => SecretHash(digest),
        }
    }

    /// The plain SHA-256 of `secret`: what a client secret is checked against (it is
    /// never a lookup key, so it gains nothing from sorting).
    pub fn digest(secret: &str) -> Self {
        SecretHash(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(SecretHash)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality: whether `secret` hashes to this value.
    pub fn matches(&self, secret: &str) -> bool {
        constant_time_eq(&Self::of(secret).0, &self.0)
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// Constant-time comparison of two byte strings (length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// HMAC-SHA-256, used for CSRF tokens and signed page state.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0u8; 32],
    };
    for part in parts {
        // Length-prefix each part so that ("ab","c") and ("a","bc") differ.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The server's master key: 32 bytes from which purpose-bound subkeys are derived.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        fill_random(key.as_mut())?;
        Ok(MasterKey(key))
    }

    /// Parses the textual form (base64url of 32 bytes, as written to the key file).
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(text.trim())
                .map_err(|_| CryptoError::MasterKey("not base64url"))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::MasterKey("must decode to exactly 32 bytes"))?;
        Ok(MasterKey(Zeroizing::new(key)))
    }

    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(URL_SAFE_NO_PAD.encode(self.0.as_ref()))
    }

    /// A subkey bound to `purpose`, so that a CSRF token can never double as signed state.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        hmac_sha256(self.0.as_ref(), &[b"tessera-subkey-v1", purpose.as_bytes()])
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// base64url without padding, the encoding of every token and signed blob.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Argon2id password hashing with m=7 MiB, t=5, p=1: one of the configurations OWASP's
/// Password Storage Cheat Sheet lists as equivalent to its m=19 MiB, t=2 minimum (same
/// work, less memory), chosen so that a node's memory stays small under sign-ins. Slow on
/// purpose: call it off the async threads. Hashes stored with other parameters (older
/// releases used m=19 MiB, t=2) verify with their own.
#[derive(Clone)]
pub struct Passwords {
    argon: Argon2<'static>,
    dummy_hash: String,
    /// Argon2 working memories, reused: allocating them afresh on whichever blocking
    /// thread runs the check left glibc holding an arena per thread, over 1 GiB of RSS
    /// under steady sign-ins. One per core is kept; how many checks run at once is the
    /// server's `password_concurrency`.
    memory: std::sync::Arc<std::sync::Mutex<Vec<Vec<argon2::Block>>>>,
}

/// Argon2 memory cost in KiB, iterations and lanes (see [`Passwords`]).
const ARGON2_M_KIB: u32 = 7 * 1024;
const ARGON2_T: u32 = 5;

impl Passwords {
    pub fn new() -> Result<Self, CryptoError> {
        let params = Params::new(ARGON2_M_KIB, ARGON2_T, 1, None)
            .map_err(|e| CryptoError::PasswordHash(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = hash_with(&argon, "tessera-dummy-password")?;
        Ok(Passwords {
            argon,
            dummy_hash,
            memory: Default::default(),
        })
    }

    pub fn hash(&self, password: &str) -> Result<String, CryptoError> {
        hash_with(&self.argon, password)
    }

    /// Verifies `password` against a PHC string. An unparsable stored hash never matches.
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        // The stored hash's own algorithm and parameters, as `verify_password` would use.
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
            return false;
        };
        let version = match parsed.version.map(Version::try_from).transpose() {
            Ok(v) => v.unwrap_or_default(),
            Err(_) => return false,
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let mut memory = self.take_memory(params.block_count());
        let argon = Argon2::new(algorithm, version, params);
        let mut computed = Zeroizing::new(vec![0u8; expected.len()]);
        let hashed = argon.hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut computed,
            &mut memory[..],
        );
        self.return_memory(memory);
        hashed.is_ok() && bool::from(computed.ct_eq(expected.as_bytes()))
    }

    fn take_memory(&self, blocks: usize) -> Vec<argon2::Block> {
        let kept = self.memory.lock().ok().and_then(|mut pool| pool.pop());
        match kept {
            Some(memory) if memory.len() >= blocks => memory,
            _ => vec![argon2::Block::default(); blocks],
        }
    }

    fn return_memory(&self, mut memory: Vec<argon2::Block>) {
        // Nothing derived from a password stays behind.
        memory.fill(argon2::Block::default());
        let kept = std::thread::available_parallelism().map_or(2, |n| n.get());
        if let Ok(mut pool) = self.memory.lock() {
            if pool.len() < kept {
                pool.push(memory);
            }
        }
    }

    /// Spends the same time as a real verification, for unknown users, so that response
    /// timing does not reveal which usernames exist.
    pub fn verify_dummy(&self, password: &str) {
        let _ = self.verify(password, &self.dummy_hash);
    }
}

fn hash_with(argon: &Argon2<'static>, password: &str) -> Result<String, CryptoError> {
    let mut salt_bytes = [0u8; 16];
    fill_random(&mut salt_bytes)?;
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| CryptoError::PasswordHash(e.to_string()))?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CryptoError::PasswordHash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_ids_sort_by_time_and_differ_within_a_millisecond() {
        let early = sortable_id(1_700_000_000_000).unwrap();
        let late = sortable_id(1_700_000_000_001).unwrap();
        let same = sortable_id(1_700_000_000_001).unwrap();
        assert!(early < late, "{early} < {late}");
        assert_ne!(late, same);
        assert_eq!(late.len(), 12 + 14);
        assert!(late.starts_with("018bcfe56801"), "{late}");
    }

    #[test]
    fn secrets_are_prefixed_256_bit_and_distinct() {
        let a = random_secret("tcs_").unwrap();
        let b = random_secret("tcs_").unwrap();
        assert!(a.starts_with("tcs_"));
        assert_eq!(b64url_decode(&a[4..]).unwrap().len(), 32);
        assert_ne!(a, b);
        assert_eq!(SecretHash::digest(&a).0, Sha256::digest(a.as_bytes())[..]);
    }

    #[test]
    fn tokens_are_prefixed_timed_256_bit_and_distinct() {
        let a = random_token("tat_", 1_700_000_000_001).unwrap();
        let b = random_token("tat_", 1_700_000_000_001).unwrap();
        assert!(a.starts_with("tat_018bcfe56801"), "{a}");
        assert_eq!(b64url_decode(&a[16..]).unwrap().len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn keys_of_minted_secrets_sort_by_issue_time() {
        let early = random_token("trt_", 1_700_000_000_000).unwrap();
        let late = random_token("trt_", 1_700_000_000_001).unwrap();
        let (k_early, k_late) = (SecretHash::of(&early), SecretHash::of(&late));
        assert!(k_early.0 < k_late.0);
        assert_eq!(k_late.0[..6], [0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x01]);
        assert_eq!(k_late.0[6..], Sha256::digest(late.as_bytes())[..26]);
        assert!(k_late.matches(&late));
        // The random part still decides the key: same millisecond, different secrets.
        let same_ms = random_token("trt_", 1_700_000_000_001).unwrap();
        assert_ne!(SecretHash::of(&same_ms), k_late);
    }

    #[test]
    fn secrets_without_an_issue_time_keep_their_plain_digest() {
        // A token minted before issue times existed (prefix + 43 characters), client-chosen
        // strings, and near misses of the timed form.
        let legacy = format!("tat_018bcfe56801{}", "A".repeat(43 - 12));
        let upper = format!("tat_018BCFE56801{}", "A".repeat(43));
        let long = format!("tat_018bcfe56801{}", "A".repeat(44));
        for secret in ["s3cret", "", "_", &legacy, &upper, &long] {
            let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
            assert_eq!(SecretHash::of(secret).0, digest, "{secret}");
        }
    }

    #[test]
    fn secret_hash_matches_only_its_secret() {
        let h = SecretHash::of("s3cret");
        assert!(h.matches("s3cret"));
        assert!(!h.matches("s3cret "));
        assert_eq!(format!("{h:?}"), "SecretHash(..)");
    }

    #[test]
    fn passwords_verify_and_reject() {
        let p = Passwords::new().unwrap();
        let h = p.hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(p.verify("correct horse", &h));
        assert!(!p.verify("correct horsE", &h));
        assert!(!p.verify("x", "not a phc string"));
    }

    #[test]
    fn passwords_verify_with_the_stored_hash_parameters() {
        let p = Passwords::new().unwrap();
        // A hash made with other (smaller) parameters than the current ones.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        );
        let h = hash_with(&small, "old password").unwrap();
        assert!(p.verify("old password", &h));
        assert!(!p.verify("old passwore", &h));
        // Memory reused after a larger check still works for both.
        let big = p.hash("new password").unwrap();
        assert!(p.verify("new password", &big));
        assert!(p.verify("old password", &h));
        assert!(!p.verify("new password", &h));
    }

    #[test]
    fn more_concurrent_checks_than_cores_all_complete_and_keep_one_memory_per_core() {
        let p = Passwords::new().unwrap();
        let h = p.hash("pw").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{h}");
        // The 19 MiB parameters of earlier releases still verify.
        let old = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(19 * 1024, 2, 1, None).unwrap(),
        );
        let old_hash = hash_with(&old, "pw").unwrap();
        let checks: Vec<_> = (0..6)
            .map(|i| {
                let (p, h, old_hash) = (p.clone(), h.clone(), old_hash.clone());
                std::thread::spawn(move || {
                    if i % 2 == 0 {
                        p.verify("pw", &h) && !p.verify("px", &h)
                    } else {
                        p.verify("pw", &old_hash)
                    }
                })
            })
            .collect();
        for c in checks {
            assert!(c.join().unwrap());
        }
        let kept = p.memory.lock().unwrap().len();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert!(
            (1..=cores).contains(&kept),
            "{kept} memories kept for {cores} cores"
        );
    }

    #[test]
    fn master_key_round_trips_and_derives_distinct_subkeys() {
        let k = MasterKey::generate().unwrap();
        let k2 = MasterKey::parse(&k.to_text()).unwrap();
        assert_eq!(k.derive("csrf"), k2.derive("csrf"));
        assert_ne!(k.derive("csrf"), k.derive("state"));
        assert!(MasterKey::parse("short").is_err());
    }

    #[test]
    fn hmac_parts_are_length_delimited() {
        assert_ne!(
            hmac_sha256(b"k", &[b"ab", b"c"]),
            hmac_sha256(b"k", &[b"a", b"bc"])
        );
    }
}
