//! The records the protocol creates and the rules for using them.
//! Hashes are SHA-256 of the secret value; the secret itself never reaches these types.

use serde::{Deserialize, Serialize};

use crate::pkce::CodeChallenge;
use crate::{OAuthError, ScopeSet, UnixTime};

pub type Hash = [u8; 32];

/// The tenant every store has: users and tokens are isolated per tenant.
pub const DEFAULT_TENANT: &str = "default";

/// Authorization codes live 300 s unless configured otherwise (contract §4).
pub const DEFAULT_CODE_TTL: i64 = 300;
/// Refresh tokens live 30 days unless the client sets `--refresh-token-ttl`, and never
/// less than the client's access-token lifetime.
pub const DEFAULT_REFRESH_TTL: i64 = 30 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub created_at: UnixTime,
}

/// Tenant ids appear in callbacks and `Tenant` headers, so they are short slugs.
pub fn validate_tenant_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tenant name {id:?}: use 1-64 lowercase letters, digits, '-' or '_'"
        ))
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub tenant: String,
    pub username: String,
    pub email: Option<String>,
    pub name: Option<String>,
    #[serde(skip)]
    pub password_hash: String,
    pub created_at: UnixTime,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// An SSO session; the cookie holds the secret, the store its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub hash: Hash,
    /// Public session id, the `sid` claim of ID tokens (OIDC Front-Channel Logout §3).
    pub sid: String,
    pub user_id: String,
    pub tenant: String,
    pub auth_time: UnixTime,
    pub expires_at: UnixTime,
}

/// Scopes a user granted a client, remembered so that consent is asked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub user_id: String,
    pub client_id: String,
    pub scope: ScopeSet,
    pub granted_at: UnixTime,
}

impl Consent {
    pub fn covers(&self, requested: &ScopeSet) -> bool {
        requested.is_subset(&self.scope)
    }
}

/// One authorization: everything issued from one code (or one client_credentials
/// request) shares its grant id, which is what "revoke the whole chain" revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub tenant: Option<String>,
    /// The scope the resource owner granted; refreshes may narrow, never widen it.
    pub scope: ScopeSet,
    pub audiences: Vec<String>,
    pub auth_time: Option<UnixTime>,
    /// The SSO session the user authorized in, for the ID token's `sid`.
    pub sid: Option<String>,
    pub created_at: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCode {
    pub hash: Hash,
    pub grant: Grant,
    pub redirect_uri: String,
    /// Whether the authorization request carried `redirect_uri` (RFC 6749 §4.1.3).
    pub redirect_uri_sent: bool,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub expires_at: UnixTime,
    pub used: bool,
}

impl AuthorizationCode {
    /// RFC 6749 §4.1.3 and RFC 7636 §4.6, in that order. Whether the code was already
    /// used is the caller's concern: that needs an atomic store operation.
    pub fn check_redemption(
        &self,
        client_id: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
        now: UnixTime,
    ) -> Result<(), OAuthError> {
        let invalid = || OAuthError::invalid_grant("authorization code is invalid or expired");
        if self.grant.client_id != client_id {
            return Err(invalid());
        }
        if now >= self.expires_at {
            return Err(invalid());
        }
        match (self.redirect_uri_sent, redirect_uri) {
            (true, None) => {
                return Err(OAuthError::invalid_grant(
                    "redirect_uri is required: it was sent with the authorization request",
                ))
            }
            (_, Some(sent)) if sent != self.redirect_uri => {
                return Err(OAuthError::invalid_grant(
                    "redirect_uri differs from the one in the authorization request",
                ))
            }
            _ => {}
        }
        match (&self.code_challenge, code_verifier) {
            (Some(challenge), Some(verifier)) => {
                CodeChallenge::from_stored(challenge.clone()).verify(verifier)
            }
            (Some(_), None) => Err(OAuthError::invalid_grant("code_verifier is required")),
            // RFC 9700 §4.8.2: a verifier for a code issued without a challenge is a
            // downgrade attempt.
            (None, Some(_)) => Err(OAuthError::invalid_grant(
                "code_verifier sent, but the authorization request had no code_challenge",
            )),
            (None, None) => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Active,
    /// A refresh token that was exchanged for its successor.
    Rotated,
    Revoked,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Rotated => "rotated",
            TokenState::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<TokenState> {
        match s {
            "active" => Some(TokenState::Active),
            "rotated" => Some(TokenState::Rotated),
            "revoked" => Some(TokenState::Revoked),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub hash: Hash,
    pub grant_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub tenant: Option<String>,
    pub scope: ScopeSet,
    pub audiences: Vec<String>,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    /// Revoked itself, or its grant was revoked.
    pub revoked: bool,
}

impl AccessToken {
    pub fn is_active(&self, now: UnixTime) -> bool {
        !self.revoked && now < self.expires_at
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub hash: Hash,
    pub grant: Grant,
    /// The access token issued together with this refresh token; rotating this refresh
    /// token revokes it (contract §4: "the access tokens issued with it stop working").
    pub access_token_hash: Option<Hash>,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    pub state: TokenState,
    /// The grant was revoked (family revocation, client deletion, consent revoked).
    pub grant_revoked: bool,
    /// Set when this token was exchanged for its successor.
    pub rotation: Option<Rotation>,
}

/// A refresh token's rotation: when, and into which successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub at: UnixTime,
    pub successor: Hash,
    /// The successor's plaintext sealed under a server key, kept only while the opt-in
    /// retry window needs it (see [`RefreshToken::check_use`]).
    pub sealed_successor: Option<Vec<u8>>,
}

/// What presenting a refresh token means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Rotate it.
    Valid,
    /// RFC 9700 §4.14.2: an already-rotated token was presented; the whole family must be
    /// revoked and the request refused.
    Reuse,
    /// The token was rotated less than the retry window ago: the client most likely lost
    /// the response, so it gets the same successor again (with a fresh access token),
    /// provided the successor itself is still unused — the store checks that atomically.
    Retry { successor: Hash, sealed: Vec<u8> },
}

impl RefreshToken {
    pub fn is_active(&self, now: UnixTime) -> bool {
        self.state == TokenState::Active && !self.grant_revoked && now < self.expires_at
    }

    /// Checks a refresh request by the authenticated `client_id`. A token of another
    /// client is refused without touching its family: the presenter is not its owner,
    /// and letting strangers revoke chains would be a denial of service.
    /// `retry_window` is in seconds; 0 (the default) turns retries off, so any rotated
    /// token presented again is reuse.
    pub fn check_use(
        &self,
        client_id: &str,
        now: UnixTime,
        retry_window: i64,
    ) -> Result<RefreshUse, OAuthError> {
        let invalid = || OAuthError::invalid_grant("refresh token is invalid, expired or revoked");
        if self.grant.client_id != client_id {
            return Err(invalid());
        }
        if self.grant_revoked || self.state == TokenState::Revoked || now >= self.expires_at {
            return Err(invalid());
        }
        if self.state == TokenState::Rotated {
            return Ok(match &self.rotation {
                Some(Rotation {
                    at,
                    successor,
                    sealed_successor: Some(sealed),
                }) if retry_window > 0 && now < at.saturating_add(retry_window) => {
                    RefreshUse::Retry {
                        successor: *successor,
                        sealed: sealed.clone(),
                    }
                }
                _ => RefreshUse::Reuse,
            });
        }
        Ok(RefreshUse::Valid)
    }
}

/// The scope of a refreshed access token (RFC 6749 §6): the original grant unless a
/// narrower `scope` is requested; widening is `invalid_scope`.
pub fn refreshed_scope(
    granted: &ScopeSet,
    requested: Option<&ScopeSet>,
) -> Result<ScopeSet, OAuthError> {
    match requested {
        None => Ok(granted.clone()),
        Some(r) if r.is_empty() => Ok(granted.clone()),
        Some(r) if r.is_subset(granted) => Ok(r.clone()),
        Some(r) => Err(OAuthError::invalid_scope(format!(
            "scope exceeds the original grant: {}",
            r.not_in(granted).join(" ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> AuthorizationCode {
        AuthorizationCode {
            hash: [0; 32],
            grant: Grant {
                id: "g".into(),
                client_id: "c".into(),
                user_id: Some("u".into()),
                tenant: Some("default".into()),
                scope: ScopeSet::empty(),
                audiences: vec![],
                auth_time: Some(0),
                sid: None,
                created_at: 0,
            },
            redirect_uri: "https://a/cb".into(),
            redirect_uri_sent: true,
            nonce: None,
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
            expires_at: 300,
            used: false,
        }
    }
    const V: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    #[test]
    fn code_bound_to_client_redirect_pkce_and_time() {
        let c = code();
        assert!(c
            .check_redemption("c", Some("https://a/cb"), Some(V), 10)
            .is_ok());
        assert!(c
            .check_redemption("other", Some("https://a/cb"), Some(V), 10)
            .is_err());
        assert!(c.check_redemption("c", None, Some(V), 10).is_err());
        assert!(c
            .check_redemption("c", Some("https://a/cb/"), Some(V), 10)
            .is_err());
        assert!(c
            .check_redemption("c", Some("https://a/cb"), None, 10)
            .is_err());
        assert!(c
            .check_redemption("c", Some("https://a/cb"), Some(V), 300)
            .is_err());
    }

    #[test]
    fn verifier_without_challenge_is_downgrade() {
        let mut c = code();
        c.code_challenge = None;
        assert!(c
            .check_redemption("c", Some("https://a/cb"), Some(V), 1)
            .is_err());
        assert!(c
            .check_redemption("c", Some("https://a/cb"), None, 1)
            .is_ok());
    }

    fn rotated_refresh(at: UnixTime, sealed: Option<Vec<u8>>) -> RefreshToken {
        RefreshToken {
            hash: [1; 32],
            grant: code().grant,
            access_token_hash: None,
            issued_at: 0,
            expires_at: 10_000,
            state: TokenState::Rotated,
            grant_revoked: false,
            rotation: Some(Rotation {
                at,
                successor: [2; 32],
                sealed_successor: sealed,
            }),
        }
    }

    #[test]
    fn a_rotated_token_is_reuse_unless_inside_an_open_retry_window() {
        let sealed = Some(b"s".to_vec());
        let t = rotated_refresh(100, sealed.clone());
        let retry = RefreshUse::Retry {
            successor: [2; 32],
            sealed: b"s".to_vec(),
        };
        // Window off (the default): strict reuse detection.
        assert_eq!(t.check_use("c", 100, 0).unwrap(), RefreshUse::Reuse);
        // Inside the window.
        assert_eq!(t.check_use("c", 100, 10).unwrap(), retry);
        assert_eq!(t.check_use("c", 109, 10).unwrap(), retry);
        // At and after its end.
        assert_eq!(t.check_use("c", 110, 10).unwrap(), RefreshUse::Reuse);
        // No sealed successor kept (it was used): reuse.
        let used = rotated_refresh(100, None);
        assert_eq!(used.check_use("c", 101, 10).unwrap(), RefreshUse::Reuse);
        // Another client's token never retries nor revokes.
        assert!(t.check_use("other", 101, 10).is_err());
        // A revoked family stays dead.
        let mut dead = rotated_refresh(100, sealed);
        dead.grant_revoked = true;
        assert!(dead.check_use("c", 101, 10).is_err());
    }

    #[test]
    fn refresh_scope_narrows_never_widens() {
        let g = ScopeSet::parse("a b").unwrap();
        let a = ScopeSet::parse("a").unwrap();
        let c = ScopeSet::parse("c").unwrap();
        assert_eq!(refreshed_scope(&g, Some(&a)).unwrap(), a);
        assert_eq!(refreshed_scope(&g, None).unwrap(), g);
        assert!(refreshed_scope(&g, Some(&c)).is_err());
    }
}

/// One entry of the append-only audit trail. Never carries a secret: ids, names and
/// addresses only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: UnixTime,
    /// What happened, e.g. `sign_in.failed`, `token.issued`, `refresh.reuse_detected`.
    pub kind: String,
    pub tenant: Option<String>,
    /// Who acted: a user id, a client id, or `cli`.
    pub actor: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    /// Free-form, secret-free details (grant type, grant id, reason).
    pub detail: Option<String>,
}

/// What the janitor removed in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub codes: u64,
    pub access_tokens: u64,
    pub refresh_tokens: u64,
    pub grants: u64,
    pub sessions: u64,
    /// Audit events older than the retention period.
    pub audit_events: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.codes
            + self.access_tokens
            + self.refresh_tokens
            + self.grants
            + self.sessions
            + self.audit_events
    }
}
