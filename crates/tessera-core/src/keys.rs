//! Signing-key lifecycle, derived from times so that every node agrees without
//! coordination: a key is *pending* (published, not yet signing) until `activates_at`,
//! *active* until `retires_at`, then *retired* (still published, so tokens it signed keep
//! verifying) until `publish_until`, after which it leaves the JWKS.

use crate::UnixTime;

#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// JWS algorithm name (`EdDSA`, `ES256`, `RS256`).
    pub alg: String,
    /// The PKCS#8 private key sealed with AES-256-GCM under the master key.
    pub sealed: Vec<u8>,
    pub created_at: UnixTime,
    pub activates_at: UnixTime,
    pub retires_at: Option<UnixTime>,
    pub publish_until: Option<UnixTime>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("activates_at", &self.activates_at)
            .field("retires_at", &self.retires_at)
            .field("publish_until", &self.publish_until)
            .finish_non_exhaustive()
    }
}

/// A key's retirement, decided at rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRetirement {
    pub kid: String,
    pub retires_at: UnixTime,
    pub publish_until: UnixTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Pending,
    Active,
    Retired,
    Expired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Expired => "expired",
        }
    }
}

impl SigningKeyRecord {
    pub fn state(&self, now: UnixTime) -> KeyState {
        if self.publish_until.is_some_and(|p| now >= p) {
            KeyState::Expired
        } else if self.retires_at.is_some_and(|r| now >= r) {
            KeyState::Retired
        } else if now < self.activates_at {
            KeyState::Pending
        } else {
            KeyState::Active
        }
    }

    pub fn is_published(&self, now: UnixTime) -> bool {
        self.state(now) != KeyState::Expired
    }
}

/// The key that signs for `alg` at `now`: the most recently activated active key.
pub fn signing_key<'a>(
    keys: &'a [SigningKeyRecord],
    alg: &str,
    now: UnixTime,
) -> Option<&'a SigningKeyRecord> {
    keys.iter()
        .filter(|k| k.alg == alg && k.state(now) == KeyState::Active)
        .max_by_key(|k| (k.activates_at, k.created_at))
}

/// Retirements for a rotation of `alg` whose new key activates at `activates_at`: every
/// key of that algorithm not yet retired stops signing then, and stays published for
/// `max_token_ttl` more seconds, the longest any token it signed can live.
pub fn retirements(
    keys: &[SigningKeyRecord],
    alg: &str,
    activates_at: UnixTime,
    max_token_ttl: i64,
) -> Vec<KeyRetirement> {
    keys.iter()
        .filter(|k| k.alg == alg && k.retires_at.is_none_or(|r| r > activates_at))
        .map(|k| KeyRetirement {
            kid: k.kid.clone(),
            retires_at: activates_at,
            publish_until: activates_at + max_token_ttl,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, activates_at: i64) -> SigningKeyRecord {
        SigningKeyRecord {
            kid: kid.into(),
            alg: "ES256".into(),
            sealed: vec![],
            created_at: activates_at,
            activates_at,
            retires_at: None,
            publish_until: None,
        }
    }

    #[test]
    fn lifecycle_follows_time() {
        let mut old = key("old", 0);
        let new = key("new", 100);
        let r = retirements(std::slice::from_ref(&old), "ES256", 100, 3600);
        assert_eq!(r.len(), 1);
        old.retires_at = Some(r[0].retires_at);
        old.publish_until = Some(r[0].publish_until);
        let keys = vec![old.clone(), new.clone()];
        // Before activation the old key signs, the new one is published but pending.
        assert_eq!(
            signing_key(&keys, "ES256", 50).map(|k| k.kid.as_str()),
            Some("old")
        );
        assert_eq!(new.state(50), KeyState::Pending);
        assert!(new.is_published(50));
        // After: the new key signs; the old one is still published until its tokens expire.
        assert_eq!(
            signing_key(&keys, "ES256", 100).map(|k| k.kid.as_str()),
            Some("new")
        );
        assert_eq!(old.state(100), KeyState::Retired);
        assert!(old.is_published(3699));
        assert!(!old.is_published(3700));
        assert_eq!(signing_key(&keys, "RS256", 100), None);
    }
}
